//! Every on-disk location vmlab uses, in one place.
//!
//! Layout under the vmlab home (`$VMLAB_HOME`, default `~/.local/share/vmlab`):
//!
//! ```text
//! images/<name>/image.json        manifest of an installed base image
//! images/<name>/disk.qcow2        its root disk (+ vmlinuz, initrd.img for direct boot)
//! cache/sha256/<hex>              content-addressed downloads
//! cache/index.json                download URL -> digests of its cached content
//! labs/<lab>/state.json           lab state (VMs, ports, UUIDs)
//! labs/<lab>/lock                 lab lock (flock)
//! labs/<lab>/id_ed25519[.pub]     the lab's SSH key
//! labs/<lab>/vms/<vm>/            overlay.qcow2, seed.iso, console.log, host_key, domain.xml
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The root of everything vmlab stores on the host.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Made absolute: the path is recorded in domain metadata and XML.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }

    /// `$VMLAB_HOME`, else `$XDG_DATA_HOME/vmlab`, else `~/.local/share/vmlab`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os("VMLAB_HOME") {
            return Ok(Self::new(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
            return Ok(Self::new(PathBuf::from(dir).join("vmlab")));
        }
        let home = std::env::var_os("HOME").context(
            "neither VMLAB_HOME nor HOME is set; set VMLAB_HOME to a directory for vmlab's data",
        )?;
        Ok(Self::new(PathBuf::from(home).join(".local/share/vmlab")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.images_dir().join(name)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("sha256")
    }

    /// Maps a download URL to the digests of its content in `cache_dir()`.
    pub fn cache_index(&self) -> PathBuf {
        self.root.join("cache").join("index.json")
    }

    pub fn lab(&self, lab: &str) -> LabPaths {
        LabPaths {
            dir: self.root.join("labs").join(lab),
        }
    }
}

/// Files of one lab.
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub dir: PathBuf,
}

impl LabPaths {
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    pub fn ssh_pubkey(&self) -> PathBuf {
        self.dir.join("id_ed25519.pub")
    }

    pub fn vm(&self, vm: &str) -> VmPaths {
        VmPaths {
            dir: self.dir.join("vms").join(vm),
        }
    }
}

/// Files of one VM of a lab.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
}

impl VmPaths {
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("overlay.qcow2")
    }

    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }

    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    pub fn host_key(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    pub fn domain_xml(&self) -> PathBuf {
        self.dir.join("domain.xml")
    }
}
