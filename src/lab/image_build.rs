//! `vmlab image build`: an offline guest image (placeholder, being written).
use std::path::PathBuf;

pub struct BuildRequest {
    pub name: String,
    pub rootfs: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
}

pub fn build(
    home: &crate::paths::Home,
    req: &BuildRequest,
    stage: &mut dyn FnMut(&str),
) -> anyhow::Result<crate::lab::image::Image> {
    let _ = (home, req, stage);
    anyhow::bail!("not yet")
}
