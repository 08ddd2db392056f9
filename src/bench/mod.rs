//! Benchmark results: parsers that read a run's raw output into metrics.

pub mod parse;
pub mod results;
