//! vmlab: a virtualization lab on one host with QEMU + libvirt.

pub mod lab;
pub mod paths;
