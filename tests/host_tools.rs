//! Tests that need host programs (qemu-img, genisoimage, ssh-keygen) or the
//! Debian cloud kernel. Each one says when it skips because a tool is
//! missing; `scripts/setup` installs them all.

use std::path::Path;
use std::process::Command;

use vmlab::image::build::guest_kernel;
use vmlab::image::store::backing_file;
use vmlab::lab::{keys, overlay, seed};
use vmlab::paths::Home;

/// `false` (and a line on stderr) when `program` is not installed.
fn have(program: &str) -> bool {
    let found = which::which(program).is_ok();
    if !found {
        eprintln!("skipped: `{program}` is not installed (scripts/setup installs it)");
    }
    found
}

#[test]
fn overlay_points_at_its_base() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("64M")
        .status()
        .unwrap();
    assert!(made.success());
    let overlay = dir.path().join("overlay.qcow2");
    overlay::create(&base, &overlay).unwrap();
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["backing-filename"], base.to_str().unwrap());
    assert_eq!(info["virtual-size"], 64 << 20);
    // vmlab's own header reader agrees with qemu-img.
    assert_eq!(backing_file(&overlay).unwrap().as_deref(), base.to_str());
    let err = overlay::create(
        &dir.path().join("missing.qcow2"),
        &dir.path().join("o2.qcow2"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("`qemu-img` failed"), "{err}");
}

#[test]
fn seed_iso_is_labelled_cidata() {
    if !have("genisoimage") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("seed.iso");
    seed::write(&iso, "id-1", "vm-1", "ssh-ed25519 AAAA vmlab").unwrap();
    let bytes = std::fs::read(&iso).unwrap();
    // ISO9660 primary volume descriptor at 32 KiB: "CD001", volume id at offset 40.
    assert_eq!(&bytes[0x8001..0x8006], b"CD001");
    assert_eq!(&bytes[0x8028..0x802e], b"cidata");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("local-hostname: vm-1"));
    assert!(text.contains("  - ssh-ed25519 AAAA vmlab"));
    assert!(!iso.with_extension("d").exists(), "staging dir left behind");
}

#[test]
fn lab_key_is_private_and_stable() {
    if !have("ssh-keygen") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let paths = Home::new(dir.path()).lab("t");
    std::fs::create_dir_all(&paths.dir).unwrap();
    let first = keys::ensure(&paths, "t").unwrap();
    assert!(
        first.starts_with("ssh-ed25519 ") && first.trim_end().ends_with("vmlab-t"),
        "{first}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(paths.ssh_key())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(keys::ensure(&paths, "t").unwrap(), first);
}

#[test]
fn the_cloud_kernel_has_every_module_the_guest_loads() {
    let has_kernel = std::fs::read_dir("/boot")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("-cloud-amd64"));
    if !has_kernel {
        eprintln!(
            "skipped: no /boot/vmlinuz-*-cloud-amd64 (scripts/setup installs linux-image-cloud-amd64)"
        );
        return;
    }
    let kernel = guest_kernel(None).unwrap();
    assert!(
        kernel.version.ends_with("-cloud-amd64"),
        "{}",
        kernel.version
    );
    assert!(Path::new(&kernel.modules_dir).is_dir());
    for needed in ["virtio_pci", "virtio_blk", "virtio_net"] {
        assert!(
            kernel.early_modules.iter().any(|m| m == needed),
            "{needed} missing from {:?}",
            kernel.early_modules
        );
    }
    // Dependencies load before what needs them.
    let at = |m: &str| kernel.early_modules.iter().position(|x| x == m);
    assert!(
        at("virtio_ring") < at("virtio_net"),
        "{:?}",
        kernel.early_modules
    );
    assert_eq!(
        kernel.late_modules.last().map(String::as_str),
        Some("virtio_balloon")
    );
}
