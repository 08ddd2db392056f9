//! Guest and host metrics: the guest reporter's lines, the rows of
//! `results/<run>/metrics.csv`, the run's other CSV files, and Prometheus text.

pub mod collect;
pub mod cpu;
pub mod prometheus;
pub mod reporter;
pub mod row;
pub mod run;
