//! The lab: base images, per-VM overlays and seeds, domain XML, lab state.

pub mod cache;
pub mod domain_xml;
pub mod image;
pub mod image_build;
pub mod image_fetch;
pub mod keys;
pub mod overlay;
pub mod seed;
pub mod state;
