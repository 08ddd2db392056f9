//! Talking to guests over SSH.

pub mod files;
pub mod shell;
pub mod ssh;
