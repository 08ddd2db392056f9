//! The kernel guests boot: the host's Debian cloud kernel (or `--kernel`),
//! its release read from the bzImage header, and the modules the guest
//! needs resolved against its modules.dep, in load order.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

use crate::image::kmod;

/// Modules the initramfs loads to reach SSH; their dependencies are added from
/// modules.dep. ext4 is listed so that a kernel with ext4 as a module still works.
pub(super) const MODULES: &[&str] = &["ext4", "virtio_pci", "virtio_blk", "virtio_net", "isofs"];
/// Modules the guest init loads once sshd runs, from `/lib/modules/vmlab/`:
/// loading virtio_balloon inflates the balloon from the maximum to the boot
/// memory, measured at ~1.4 s of TCG time for 2G → 512M, off the SSH path here.
pub(super) const LATE_MODULES: &[&str] = &["virtio_balloon"];

/// The host kernel guests boot, and where its modules are.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    pub path: PathBuf,
    /// What `uname -r` says in the guest.
    pub version: String,
    pub modules_dir: PathBuf,
    /// Modules in the initramfs, then those loaded once sshd runs, in load order.
    pub early_modules: Vec<String>,
    pub late_modules: Vec<String>,
}

/// `kernel`, or the newest Debian cloud kernel in /boot, with every module
/// the guest needs resolved against its modules.dep.
pub fn guest_kernel(kernel: Option<&Path>) -> Result<GuestKernel> {
    let path = match kernel {
        Some(k) => {
            ensure!(k.is_file(), "kernel {} does not exist", k.display());
            k.to_path_buf()
        }
        None => newest_cloud_kernel(Path::new("/boot"))?,
    };
    let version = kernel_version(&path)?;
    let modules_dir = Path::new("/lib/modules").join(&version);
    ensure!(
        modules_dir.join("modules.dep").is_file(),
        "no modules for kernel {version} in {}; install the matching linux-image package",
        modules_dir.display()
    );
    let name = |rel: &String| kmod::module_name(rel);
    Ok(GuestKernel {
        early_modules: module_order(&modules_dir, MODULES)?
            .iter()
            .map(name)
            .collect(),
        late_modules: module_order(&modules_dir, LATE_MODULES)?
            .iter()
            .map(name)
            .collect(),
        path,
        version,
        modules_dir,
    })
}

/// The newest `vmlinuz-*-cloud-amd64` in `boot`.
fn newest_cloud_kernel(boot: &Path) -> Result<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir(boot) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("vmlinuz-")
                && version.ends_with("-cloud-amd64")
            {
                found.push((version_key(version), entry.path()));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no Debian cloud kernel (/boot/vmlinuz-*-cloud-amd64); apt-get install linux-image-cloud-amd64, or pass --kernel"
        ),
    }
}

/// `6.1.0-56-cloud-amd64` -> [6, 1, 0, 56]: numbers compare numerically.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The release of a kernel image (what `uname -r` says), read from the bzImage
/// header, else from a `vmlinuz-VERSION` file name.
fn kernel_version(kernel: &Path) -> Result<String> {
    let data = fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    if let Some(v) = bzimage_version(&data) {
        return Ok(v);
    }
    let name = kernel.file_name().unwrap_or_default().to_string_lossy();
    match name.strip_prefix("vmlinuz-") {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => bail!(
            "cannot tell the version of kernel {} (not a bzImage, not named vmlinuz-VERSION)",
            kernel.display()
        ),
    }
}

/// x86 boot protocol: "HdrS" at 0x202, a pointer to the version string (minus
/// 0x200) at 0x20e; the string starts with the release, then a space.
fn bzimage_version(data: &[u8]) -> Option<String> {
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize + 0x200;
    let rest = data.get(ptr..)?;
    let end = rest.iter().position(|&b| b == b' ' || b == 0)?;
    let v = std::str::from_utf8(&rest[..end]).ok()?;
    (!v.is_empty()).then(|| v.to_string())
}

/// `wanted` modules with their dependencies, in load order, as paths relative
/// to `modules_dir`.
pub(super) fn module_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<String>> {
    let read = |name: &str| {
        let p = modules_dir.join(name);
        fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let dep = read("modules.dep")?;
    let builtin = read("modules.builtin").unwrap_or_default();
    kmod::resolve(&dep, &builtin, wanted)
        .with_context(|| format!("kernel modules in {}", modules_dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = [
            "6.1.0-9-cloud-amd64",
            "6.1.0-56-cloud-amd64",
            "6.10.0-1-cloud-amd64",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(v[2], "6.10.0-1-cloud-amd64");
        assert_eq!(v[1], "6.1.0-56-cloud-amd64");
    }

    #[test]
    fn bzimage_header_gives_the_release() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let s = b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1";
        img[0x300..0x300 + s.len()].copy_from_slice(s);
        assert_eq!(
            bzimage_version(&img).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(bzimage_version(&[0u8; 16]), None);
    }
}
