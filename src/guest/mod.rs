//! Talking to guests over SSH.

pub mod files;
pub mod shell;
pub mod ssh;

/// Where vmlab keeps its files in a guest: workload binaries, run
/// directories, the monitor's reporter.
pub const GUEST_ROOT: &str = "/var/lib/vmlab";
