//! vmlab: a virtualization lab on one host with QEMU + libvirt.

pub mod config;
pub mod host;
pub mod hypervisor;
pub mod lab;
pub mod paths;
pub mod units;
