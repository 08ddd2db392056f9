//! Benchmarks: runs over VMs, matrix cells and repeats; result files.
//!
//! `bench` sits above `workload`: it runs what `workload` built and reads
//! the output with `workload::parse`; `workload` never imports `bench`.

pub mod compare;
pub mod configure;
pub mod gate;
pub mod matrix;
pub mod record;
pub mod reference;
pub mod repeat;
pub mod report;
pub mod run;
pub mod runs;
pub mod summary;
