//! Tests that need host programs (qemu-img, genisoimage, ssh-keygen) or the
//! Debian cloud kernel. Each one says when it skips because a tool is
//! missing, and fails instead under `VMLAB_REQUIRE_TOOLS=1` (`just test`,
//! CI); `scripts/setup` installs them all.

mod tools;

use std::path::Path;
use std::process::Command;

use vmlab::image::build::{guest_kernel, tarball};
use vmlab::image::store::backing_file;
use vmlab::lab::{keys, overlay, seed};
use vmlab::paths::Home;

use tools::ready;

fn have(program: &str) -> bool {
    ready(tools::missing(program))
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
    if !ready((!has_kernel).then(|| {
        "no /boot/vmlinuz-*-cloud-amd64 (scripts/setup installs linux-image-cloud-amd64)".into()
    })) {
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

/// Alpine's own minirootfs (`VMLAB_ALPINE_ROOTFS`, else the copy beside the
/// repository): root owns everything but `/etc/shadow`, group `shadow`.
#[test]
fn alpine_minirootfs_owners_are_read_from_the_archive() {
    let alpine = std::env::var_os("VMLAB_ALPINE_ROOTFS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz")
        });
    let missing = !alpine.is_file();
    if !ready(missing.then(|| {
        format!(
            "no Alpine minirootfs at {} (set VMLAB_ALPINE_ROOTFS)",
            alpine.display()
        )
    })) {
        return;
    }
    let owners = tarball::owners(&alpine).unwrap();
    assert_eq!(
        owners.into_iter().collect::<Vec<_>>(),
        [(std::path::PathBuf::from("etc/shadow"), (0, 42))]
    );
}

/// Archives as GNU tar writes them, in its own format and in POSIX pax
/// (long names in extended headers), plain and gzipped.
#[test]
fn gnu_tar_archives_give_their_owners() {
    if !have("tar") || !have("gzip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let long = format!("home/{}", "d".repeat(120));
    for d in ["bin", "etc", long.as_str()] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("etc/shadow"), "root:*:::::::\n").unwrap();
    std::fs::write(root.join("home/a file"), "x").unwrap();
    std::fs::write(root.join(&long).join("f"), "y").unwrap();
    std::os::unix::fs::symlink("/bin/busybox", root.join("bin/ps")).unwrap();
    let tar = |archive: &Path, format: &str, append: bool, owner: &str, what: &str| {
        let status = Command::new("tar")
            .arg(if append { "-rf" } else { "-cf" })
            .arg(archive)
            .arg(format!("--format={format}"))
            .args(["--numeric-owner", "--no-recursion"])
            .arg(format!("--owner={}", owner.split(':').next().unwrap()))
            .arg(format!("--group={}", owner.split(':').nth(1).unwrap()))
            .arg("-C")
            .arg(&root)
            .args(what.split(','))
            .status()
            .unwrap();
        assert!(status.success(), "tar {what}");
    };
    for format in ["gnu", "pax"] {
        let archive = dir.path().join(format!("{format}.tar"));
        tar(&archive, format, false, "0:0", "./,./bin,./bin/ps,./etc");
        tar(&archive, format, true, "0:42", "./etc/shadow");
        let home = format!("./home,./home/a file,./{long},./{long}/f");
        tar(&archive, format, true, "1000:1000", &home);
        let gz = dir.path().join(format!("{format}.tar.gz"));
        let zipped = Command::new("gzip")
            .arg("-c")
            .arg(&archive)
            .output()
            .unwrap();
        std::fs::write(&gz, zipped.stdout).unwrap();
        for path in [&archive, &gz] {
            let owners: Vec<_> = tarball::owners(path).unwrap().into_iter().collect();
            let user = |p: &str| (std::path::PathBuf::from(p), (1000, 1000));
            assert_eq!(
                owners,
                [
                    (std::path::PathBuf::from("etc/shadow"), (0, 42)),
                    user("home"),
                    user("home/a file"),
                    user(&long),
                    user(&format!("{long}/f")),
                ],
                "{}",
                path.display()
            );
        }
    }
}

/// This test binary again, on one test, with PATH emptied: `qemu-img` is
/// then missing.
fn without_tools(require: bool) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "overlay_points_at_its_base", "--nocapture"])
        .env("PATH", "/nonexistent");
    if require {
        cmd.env(tools::REQUIRE, "1");
    } else {
        cmd.env_remove(tools::REQUIRE);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[test]
fn a_missing_tool_fails_the_tier_when_tools_are_required() {
    let (passed, output) = without_tools(true);
    assert!(!passed, "{output}");
    assert!(
        output.contains(
            "`qemu-img` is not installed (scripts/setup installs it); this tier needs it (VMLAB_REQUIRE_TOOLS=1)"
        ),
        "{output}"
    );
    let (passed, output) = without_tools(false);
    assert!(passed, "{output}");
    assert!(
        output.contains("skipped: `qemu-img` is not installed (scripts/setup installs it)"),
        "{output}"
    );
}
