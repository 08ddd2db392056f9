//! Benchmarks: runs over VMs, matrix cells and repeats; parsers that read
//! raw output into metrics; result files.

pub mod configure;
pub mod matrix;
pub mod parse;
pub mod results;
pub mod run;
