//! The lab: base images, per-VM overlays and seeds, domain XML, lab state.

pub mod cpio;
pub mod image;
pub mod image_build;
pub mod image_fetch;
pub mod kmod;
