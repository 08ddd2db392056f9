//! The online resource manager's pure half: snapshots in, decisions out.
//!
//! Every round the loop samples libvirt into a [`snapshot::Snapshot`];
//! [`policy::plan`] turns it (and what the policies kept from earlier rounds)
//! into [`action::Decision`]s; the executor applies them and [`log`] writes
//! them down with their inputs. The same policies run in [`sim`], a host
//! model, and [`judge`] scores any series of snapshots the way the course's
//! monitor does, so simulated and real runs are measured alike.
//!
//! Why the policies look the way they do:
//! - Pinning is judged as the course's monitor judges it, per-pCPU use, but
//!   use hides demand on a saturated pCPU: every vCPU there gets a share.
//!   So a vCPU that got the largest share counts as wanting what it used
//!   when last seen alone enough, or a whole pCPU if never, and loads are
//!   capped at 100 %. Moves are greedy between the busiest and idlest pCPUs
//!   (each must narrow a gap), with a fresh largest-first plan when moves
//!   get stuck, and stop once the spread is small: few moves. After a round
//!   that moves nothing, pins stay until loads really change: noise never
//!   moves a vCPU.
//! - Memory is sized by each VM's own growth rate: the floor of unused
//!   memory plus headroom for the time until the next round can act. Fixed
//!   steps (the course's +100 MB) lose the race against programs that
//!   allocate tens of MB per second, and the guest then OOM-kills. Release
//!   is a fixed share of the excess per round, so it is gradual; a short
//!   host takes excess first, from the VMs with the most, never a floor.
//! - The host budget assumes every VM may touch all it was given, so the
//!   host's reserve holds however guests behave.
//! - Stats that did not advance are not fresh, and nothing is decided on them.
//! - Hot-plug needs a threshold held for several rounds, and a change is
//!   pending until the guest shows it: a slow unplug is not a failure.

pub mod action;
pub mod execute;
pub mod health;
pub mod judge;
pub mod log;
pub mod policy;
pub mod run;
pub mod scenario;
pub mod scorecard;
pub mod sim;
pub mod snapshot;
#[cfg(test)]
mod testkit;
pub mod verdict;
