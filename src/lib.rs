//! vmlab: a virtualization lab on one host with QEMU + libvirt.

pub mod accel;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod guest;
pub mod host;
pub mod hypervisor;
pub mod lab;
pub mod manage;
pub mod paths;
#[cfg(test)]
mod testutil;
pub mod units;
