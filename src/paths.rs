//! Every on-disk location vmlab uses, in one place.
//!
//! Layout under the vmlab home (`$VMLAB_HOME`; default `/var/lib/vmlab` for
//! root, `~/.local/share/vmlab` for other users):
//!
//! ```text
//! images/<name>/<version>/        an installed base image (see image::store)
//! cache/sha256/<hex>              content-addressed downloads
//! cache/index.json                download URL -> digests of its cached content
//! cache/builds/<key>/             a built workload binary (see workload::build)
//! workloads/<digest>/             the workloads built into the binary, unpacked
//! labs/<lab>/state.json           lab state: a cache of what libvirt's marks say
//! labs/<lab>/lock                 held by `up`/`down` (exclusive)
//! labs/<lab>/use.lock             held by long-running readers (shared)
//! labs/<lab>/manage.lock          held by the lab's one manager (exclusive)
//! managers/<domain>.lock          held by the one manager of a foreign domain
//! labs/<lab>/id_ed25519[.pub]     the lab's SSH key (0600)
//! labs/<lab>/vms/<vm>/            overlay.qcow2, seed.iso, console.log, host_key, domain.xml
//! ```

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

/// The one remedy when QEMU (as libvirt's own user) cannot reach the lab's disks.
pub const REACH_HOME: &str = "libvirt runs QEMU as its own user, which must be able to enter every directory above the vmlab home: `chmod o+x` them, or set VMLAB_HOME elsewhere (root's default, /var/lib/vmlab, works)";

/// The root of everything vmlab stores on the host.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Canonical: the home is the lab's identity in domain marks, which must
    /// not depend on how the path is spelled (trailing `/`, `..`, symlinks).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: canonical(&root.into()),
        }
    }

    /// `$VMLAB_HOME`, else `$XDG_DATA_HOME/vmlab`, else `/var/lib/vmlab` for
    /// root (where libvirt's unprivileged QEMU user can reach the disks;
    /// `/root` is private), else `~/.local/share/vmlab`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os("VMLAB_HOME") {
            return Ok(Self::new(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
            return Ok(Self::new(PathBuf::from(dir).join("vmlab")));
        }
        if crate::host::uid_gid().0 == 0 {
            return Ok(Self::new("/var/lib/vmlab"));
        }
        let home = std::env::var_os("HOME").context(
            "neither VMLAB_HOME nor HOME is set; set VMLAB_HOME to a directory for vmlab's data",
        )?;
        Ok(Self::new(PathBuf::from(home).join(".local/share/vmlab")))
    }

    /// Whether `spelling` (a home as some domain's mark recorded it, maybe
    /// with an older spelling) names this home.
    pub fn is(&self, spelling: &str) -> bool {
        canonical(Path::new(spelling)) == self.root
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The first existing directory from `/` down to the home that others
    /// cannot enter (QEMU's user would be stopped there), if any.
    pub fn closed_ancestor(&self) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        self.root
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .filter_map(|d| Some((d, std::fs::metadata(d).ok()?)))
            .find(|(_, m)| m.is_dir() && m.permissions().mode() & 0o001 == 0)
            .map(|(d, _)| d.to_path_buf())
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

    /// Built workload binaries, one directory per set of build inputs.
    pub fn build_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("builds")
    }

    /// Maps a download URL to the digests of its content in `cache_dir()`.
    pub fn cache_index(&self) -> PathBuf {
        self.root.join("cache").join("index.json")
    }

    /// The one-manager lock of a domain no lab of this home owns (`manage
    /// --domains`), by its name: unique on a connection, and checked by
    /// `config::check_name` before it gets here.
    pub fn domain_manager_lock(&self, domain: &str) -> PathBuf {
        self.root.join("managers").join(format!("{domain}.lock"))
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

    pub fn use_lock(&self) -> PathBuf {
        self.dir.join("use.lock")
    }

    pub fn manage_lock(&self) -> PathBuf {
        self.dir.join("manage.lock")
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

/// The absolute, symlink-free spelling of `path`. The part that exists is
/// resolved by the file system; the rest (not created yet) is normalised by
/// hand, so the answer does not change once it is created.
pub fn canonical(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = abs.components().collect();
    for split in (0..=parts.len()).rev() {
        let prefix: PathBuf = parts[..split].iter().collect();
        let Ok(mut out) = std::fs::canonicalize(&prefix) else {
            continue;
        };
        for part in &parts[split..] {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(p) => out.push(p),
                _ => {}
            }
        }
        return out;
    }
    abs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_home_is_the_same_home() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let home = real.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&home, real.join("link")).unwrap();
        let spellings = [
            format!("{}/", home.display()),
            format!("{}/../home", home.display()),
            format!("{}/./", home.display()),
            real.join("link").display().to_string(),
        ];
        for s in &spellings {
            assert_eq!(Home::new(s).root(), home, "{s}");
            assert!(Home::new(&home).is(s), "{s}");
        }
        assert!(!Home::new(&home).is(real.to_str().unwrap()));
        // Not created yet: normalised the same way it will resolve later.
        let later = format!("{}/x/../y/", home.display());
        assert_eq!(Home::new(&later).root(), home.join("y"));
    }
}
