//! Talking to guests over SSH.

pub mod ssh;
