//! Installed base images: a directory per image with a manifest.
//!
//! An image is either *direct boot* (root disk + kernel + initrd, booted with a
//! kernel command line, like the offline image from `vmlab image build`) or a
//! *disk* image that boots by itself (the official Alpine nocloud qcow2).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::paths::Home;

const MANIFEST: &str = "image.json";

/// `images/<name>/image.json`. File names are relative to the image directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    /// qcow2 root disk.
    pub disk: String,
    /// Kernel and initrd for direct boot; `None` boots the disk itself.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    /// Kernel command line for direct boot (without vmlab's own `vmlab.*` options).
    pub cmdline: Option<String>,
    /// Where it came from, for `vmlab image list`.
    pub source: String,
    /// The user the seed's SSH key logs in as (Alpine's cloud images: `alpine`).
    #[serde(default = "root")]
    pub ssh_user: String,
}

pub fn root() -> String {
    "root".into()
}

/// An installed image with absolute paths resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }

    pub fn kernel(&self) -> Option<PathBuf> {
        self.manifest.kernel.as_ref().map(|k| self.dir.join(k))
    }

    pub fn initrd(&self) -> Option<PathBuf> {
        self.manifest.initrd.as_ref().map(|k| self.dir.join(k))
    }
}

/// The image used when none is named: the offline one `vmlab image build` makes.
pub const DEFAULT_IMAGE: &str = "vmlab-alpine";

/// How to get an image that is missing.
pub const GET_IMAGE: &str = "build it with `vmlab image build --rootfs ALPINE_MINIROOTFS.tar.gz` or fetch one with `vmlab image fetch alpine`";

/// An image counts as installed once its manifest is written (last).
pub fn is_installed(home: &Home, name: &str) -> bool {
    home.image_dir(name).join(MANIFEST).exists()
}

/// Loads an installed image, or says how to get it.
pub fn load(home: &Home, name: &str) -> Result<Image> {
    let dir = home.image_dir(name);
    let path = dir.join(MANIFEST);
    if !is_installed(home, name) {
        bail!(
            "image `{name}` is not installed in {}; {GET_IMAGE}",
            home.images_dir().display()
        );
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is corrupt; rebuild the image", path.display()))?;
    let image = Image { manifest, dir };
    if !image.disk().exists() {
        bail!(
            "image `{name}` has no disk at {}; rebuild or fetch it again",
            image.disk().display()
        );
    }
    Ok(image)
}

/// Writes the manifest last, so an image is only visible once complete.
pub fn install(home: &Home, manifest: &Manifest) -> Result<Image> {
    let dir = home.image_dir(&manifest.name);
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(manifest)? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(MANIFEST))
        .with_context(|| format!("installing image in {}", dir.display()))?;
    load(home, &manifest.name)
}

/// All installed images, sorted by name.
pub fn list(home: &Home) -> Result<Vec<Image>> {
    let dir = home.images_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_installed(home, &name) {
            images.push(load(home, &name)?);
        }
    }
    images.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(images)
}
