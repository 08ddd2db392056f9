//! vmlab: a virtualization lab on one host with QEMU + libvirt.

pub mod bench;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod doctor;
pub mod download;
pub mod duration;
pub mod files;
pub mod guest;
pub mod host;
pub mod hypervisor;
pub mod image;
pub mod lab;
pub mod manage;
pub mod metrics;
pub mod paths;
pub mod plot;
pub mod rundir;
pub mod stats;
pub mod table;
#[cfg(test)]
mod testutil;
pub mod units;
pub mod wait;
pub mod workload;
