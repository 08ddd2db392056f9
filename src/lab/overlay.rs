//! Per-VM copy-on-write disks on top of the base image.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::host;

/// `qemu-img create -f qcow2 -F qcow2 -b BASE OVERLAY`: the base stays untouched.
pub fn create(base: &Path, overlay: &Path) -> Result<()> {
    host::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(overlay),
    )?;
    Ok(())
}
