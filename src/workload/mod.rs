//! Workloads as data: manifests read from `workloads/<name>/` and static
//! binaries built from them on the host, cached by what went into them.

pub mod build;
pub mod manifest;
pub mod source;

pub use build::{Built, build};
pub use manifest::{Kind, Params, Preset, Stage, Workload, load, load_all};
