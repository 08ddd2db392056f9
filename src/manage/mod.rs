//! The online resource manager's pure half: snapshots in, decisions out.
//!
//! Every round the loop samples libvirt into a [`snapshot::Snapshot`]; the
//! policies turn it into [`action::Decision`]s, which the executor applies
//! and the decision log records with their inputs.

pub mod action;
pub mod snapshot;
#[cfg(test)]
mod testkit;
