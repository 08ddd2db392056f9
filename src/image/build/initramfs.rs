//! The initramfs: busybox and the virtio modules the guest needs to reach
//! its root disk and network, and an `/init` that loads them, mounts
//! `/dev/vda` and `switch_root`s to it. Modules needed only once sshd runs
//! (the balloon) go into the root file system instead, off the boot path.

use std::fs;
use std::io::BufWriter;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::BUSYBOX;
use super::kernel::{LATE_MODULES, MODULES, module_order};
use super::rootfs::put_file;
use crate::host;
use crate::image::cpio::CpioWriter;
use crate::image::kmod;

const LATE_MODULES_DIR: &str = "lib/modules/vmlab";
const INITRAMFS_INIT: &str = include_str!("../../../templates/guest/initramfs-init.sh");

/// Applets the initramfs `/init` uses (symlinks to busybox).
const INITRAMFS_APPLETS: &[&str] = &[
    "sh",
    "mount",
    "umount",
    "insmod",
    "cat",
    "echo",
    "usleep",
    "switch_root",
    "setsid",
    "cttyhack",
];

/// The late modules not already in the initramfs, into the root file system.
pub(super) fn add_late_modules(rootfs: &Path, modules_dir: &Path) -> Result<()> {
    let early = module_order(modules_dir, MODULES)?;
    for rel in module_order(modules_dir, LATE_MODULES)? {
        if early.contains(&rel) {
            continue;
        }
        let name = format!("{}.ko", kmod::module_name(&rel));
        let data = read_module(&modules_dir.join(&rel))?;
        put_file(
            rootfs,
            &Path::new(LATE_MODULES_DIR).join(name),
            &data,
            0o644,
        )?;
    }
    Ok(())
}

pub(super) fn write(modules_dir: &Path, out: &Path) -> Result<()> {
    let order = module_order(modules_dir, MODULES)?;

    let busybox = fs::canonicalize(BUSYBOX)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for d in ["dev", "proc", "sys", "newroot", "lib/modules"] {
        cpio.dir(d, 0o755)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.char_dev("dev/null", 0o666, 1, 3)?;
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
    for applet in INITRAMFS_APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    let mut names = Vec::new();
    for rel in &order {
        let data = read_module(&modules_dir.join(rel))?;
        let name = format!("{}.ko", kmod::module_name(rel));
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data)?;
        names.push(name);
    }
    let init = INITRAMFS_INIT.replace("@MODULES@", &names.join(" "));
    cpio.file("init", 0o755, init.as_bytes())?;
    cpio.finish()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// A module file, decompressed if it is `.ko.xz` (busybox insmod takes plain `.ko`).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {name}"));
    }
    if name.ends_with(".ko.xz") {
        return Ok(host::run(Command::new("xz").arg("-dc").arg(path))?.stdout);
    }
    bail!("kernel module {name}: only .ko and .ko.xz are supported")
}
