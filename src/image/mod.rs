//! Base images: immutable, versioned disks (+ kernel and initrd for direct
//! boot) that VM overlays are backed by. Built offline or fetched.

pub mod build;
pub mod cpio;
pub mod fetch;
pub mod kmod;
pub mod store;
