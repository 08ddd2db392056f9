//! Downloads: HTTP, checksums and the content-addressed cache shared by
//! images and benchmark sources.

pub mod cache;
pub mod digest;
pub mod http;
