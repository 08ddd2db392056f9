//! vmlab's exit codes, in one place; README.md ("Exit codes") documents them.
//!
//! `vmlab ssh` and `vmlab run` pass the guest command's own status through,
//! so vmlab's own failures use a code commands rarely use (125, as container
//! runtimes do), and a command killed by a signal gives 255, as OpenSSH does.

use crate::guest::ssh::Exit;

pub const SUCCESS: i32 = 0;
/// `doctor`: a check failed. `bench`: a benchmark failed in some VM.
pub const CHECK_FAILED: i32 = 1;
/// `bench --baseline`: a metric regressed beyond its tolerance.
pub const REGRESSION: i32 = 3;
/// `bench --baseline --require-reference`: a metric had no reference.
pub const NO_REFERENCE: i32 = 4;
/// Invalid arguments (clap's own code).
pub const USAGE: i32 = 2;
/// vmlab could not do what was asked: libvirt unreachable, unknown VM,
/// refused `up`, SSH failure, …
pub const VMLAB_FAILED: i32 = 125;
/// Stopped by a signal (after stopping what it ran in the guests): 130
/// for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP.
pub fn interrupted() -> i32 {
    crate::host::signals::exit_code()
}
/// The guest command was killed by a signal.
pub const KILLED_BY_SIGNAL: i32 = 255;

/// The exit code for a guest command's end.
pub fn of_guest(exit: &Exit) -> i32 {
    match exit {
        Exit::Code(c) => *c,
        Exit::Signal(_) => KILLED_BY_SIGNAL,
    }
}
