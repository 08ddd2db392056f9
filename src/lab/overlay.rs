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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_points_at_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        host::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&base)
                .arg("64M"),
        )
        .unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        create(&base, &overlay).unwrap();
        let info = host::run(
            Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&overlay),
        )
        .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["backing-filename"], base.to_str().unwrap());
        assert_eq!(info["virtual-size"], 64 << 20);
        let err = create(
            &dir.path().join("missing.qcow2"),
            &dir.path().join("o2.qcow2"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("`qemu-img` failed"), "{err}");
    }
}
