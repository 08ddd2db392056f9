//! `vmlab image build`: an offline guest image made from local files only.
//!
//! The root file system is an Alpine minirootfs tarball (`--rootfs`) or, without
//! one, a busybox-static system. Debian's dropbear (with the glibc libraries it
//! links, which live beside musl without conflict) is the SSH server, vmlab's
//! guest init (`templates/guest/`) applies the NoCloud seed and the network
//! settings. The image boots directly: the host's Debian cloud kernel plus an
//! initramfs written here (busybox + the virtio modules) that mounts `/dev/vda`
//! and `switch_root`s to it. No mounting or loop devices on the host:
//! `mkfs.ext4 -d` fills the file system from a directory.
//!
//! The stages live in their own files: `rootfs` (busybox or the extracted
//! tarball, dropbear, the guest's init), `tarball` (extracting a minirootfs
//! and reading its owners), `kernel` (which host kernel and which of its
//! modules), `initramfs` (the early boot archive). This file runs them in
//! order and makes the disk.

mod initramfs;
mod kernel;
mod rootfs;
pub mod tarball;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

pub use kernel::{GuestKernel, guest_kernel};

use crate::host;
use crate::image::store::{self as image, Image, Manifest};
use crate::paths::Home;

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Image name (directory under `images/`).
    pub name: String,
    /// An Alpine minirootfs tarball; `None` builds a busybox-static root file system.
    pub rootfs: Option<PathBuf>,
    /// Kernel to boot; `None` takes the newest `/boot/vmlinuz-*-cloud-amd64`.
    pub kernel: Option<PathBuf>,
}

/// Kernel command line stored in the manifest (vmlab adds `vmlab.net=...`).
/// `cryptomgr.notests` skips the kernel's crypto self-tests (~0.5 s under TCG).
pub const CMDLINE: &str = "console=ttyS0 root=/dev/vda rw quiet cryptomgr.notests";
/// Size of the root file system (a sparse file; the qcow2 holds only what is used).
const DISK_SIZE: u64 = 2 << 30;
const BUSYBOX: &str = "/bin/busybox";
const DROPBEAR: &str = "/usr/sbin/dropbear";

/// Builds and installs a new version of an offline image (existing
/// versions, and the VMs on them, are untouched). `stage` is called with a short stage
/// name ("rootfs", "dropbear", "initramfs", "disk", ...) for progress output.
pub fn build(home: &Home, req: &BuildRequest, stage: &mut dyn FnMut(&str)) -> Result<Image> {
    crate::config::check_name("image", &req.name)?;
    if let Some(tarball) = &req.rootfs {
        ensure!(
            tarball.is_file(),
            "rootfs tarball {} does not exist",
            tarball.display()
        );
    }
    let GuestKernel {
        path: kernel,
        modules_dir,
        ..
    } = guest_kernel(req.kernel.as_deref())?;
    for tool in ["mkfs.ext4", "debugfs", "qemu-img", "tar", "ldd"] {
        host::program(tool)?;
    }
    ensure!(
        Path::new(DROPBEAR).is_file(),
        "{DROPBEAR} not found; apt-get install dropbear-bin"
    );
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} not found; apt-get install busybox-static"
    );

    let staging = image::stage(home, &req.name)?;
    let dir = staging.dir();
    let scratch = Scratch::new(dir.join("scratch"))?;
    let rootfs = scratch.0.join("rootfs");
    fs::create_dir(&rootfs)?;

    stage("rootfs");
    let (source, owners) = match &req.rootfs {
        Some(tarball) => {
            tarball::extract(tarball, &rootfs)?;
            let file = tarball.file_name().unwrap_or(OsStr::new("?"));
            (
                format!("alpine minirootfs {}", file.to_string_lossy()),
                tarball::owners(tarball)?,
            )
        }
        None => {
            rootfs::busybox(&rootfs)?;
            ("busybox-static".to_string(), BTreeMap::new())
        }
    };
    rootfs::unlock_root(&rootfs)?;

    stage("dropbear");
    rootfs::add_dropbear(&rootfs)?;

    stage("guest-init");
    rootfs::add_guest_files(&rootfs)?;
    initramfs::add_late_modules(&rootfs, &modules_dir)?;

    stage("disk");
    let raw = scratch.0.join("root.raw");
    make_ext4(&rootfs, &raw)?;
    set_owners(&rootfs, &raw, &owners)?;
    host::run(
        Command::new("qemu-img")
            .args(["convert", "-q", "-O", "qcow2"])
            .arg(&raw)
            .arg(dir.join("disk.qcow2")),
    )?;

    stage("kernel");
    fs::copy(&kernel, dir.join("vmlinuz"))
        .with_context(|| format!("copying the kernel {}", kernel.display()))?;

    stage("initramfs");
    initramfs::write(&modules_dir, &dir.join("initrd.img"))?;

    stage("install");
    drop(scratch);
    staging.install(&Manifest {
        name: req.name.clone(),
        disk: "disk.qcow2".into(),
        kernel: Some("vmlinuz".into()),
        initrd: Some("initrd.img".into()),
        cmdline: Some(CMDLINE.into()),
        source,
        ssh_user: "root".into(),
    })
}

/// A directory removed when dropped (on success and on error).
struct Scratch(PathBuf);

impl Scratch {
    fn new(path: PathBuf) -> Result<Self> {
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sets the owner of every inode of the file system image `raw`: `owners`
/// where listed, root otherwise. Done with `debugfs` on the image, so
/// building needs no root on the host.
fn set_owners(rootfs: &Path, raw: &Path, owners: &BTreeMap<PathBuf, (u32, u32)>) -> Result<()> {
    let mut commands = String::new();
    let mut paths = vec![PathBuf::new()];
    while let Some(rel) = paths.pop() {
        let host = rootfs.join(&rel);
        let meta = host.symlink_metadata()?;
        if meta.is_dir() {
            for entry in fs::read_dir(&host)? {
                paths.push(rel.join(entry?.file_name()));
            }
        }
        let name = format!("/{}", rel.display());
        ensure!(
            !name.contains(['"', '\n']),
            "{name}: a path with a quote or newline cannot be owned in the image"
        );
        let (uid, gid) = owners.get(&rel).copied().unwrap_or((0, 0));
        commands.push_str(&format!(
            "sif \"{name}\" uid {uid}\nsif \"{name}\" gid {gid}\n"
        ));
    }
    let script = raw.with_extension("owners");
    fs::write(&script, commands)?;
    let out = host::run(
        Command::new(host::program("debugfs")?)
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(raw),
    )
    .context("setting file owners in the root file system")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(err) = stderr
        .lines()
        .find(|l| l.contains(": ") && !l.starts_with("debugfs "))
    {
        bail!("setting file owners in the root file system: {err}");
    }
    Ok(())
}

fn make_ext4(rootfs: &Path, raw: &Path) -> Result<()> {
    let file = fs::File::create(raw).with_context(|| format!("creating {}", raw.display()))?;
    file.set_len(DISK_SIZE)?; // sparse
    drop(file);
    host::run(
        Command::new(host::program("mkfs.ext4")?)
            .args([
                "-q",
                "-F",
                "-m",
                "0",
                "-L",
                "vmlab-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(rootfs)
            .arg(raw),
    )
    .context("making the ext4 root file system")?;
    Ok(())
}
