//! The root file system in a directory: a busybox-static system (when no
//! tarball is given), root unlocked for key logins, Debian's dropbear with
//! its glibc libraries, and vmlab's guest init. Every write goes through
//! [`guest_path`], which never follows a symlink out of the directory.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::{BUSYBOX, DROPBEAR};
use crate::host;

const GUEST_INIT: &str = include_str!("../../../templates/guest/init.sh");
const GUEST_INITTAB: &str = include_str!("../../../templates/guest/inittab");
const GUEST_CPU_ONLINE: &str = include_str!("../../../templates/guest/cpu-online.sh");
const GUEST_UDHCPC: &str = include_str!("../../../templates/guest/udhcpc.script");

/// A minimal system: the host's static busybox, its applets as symlinks, and
/// the account files.
pub(super) fn busybox(rootfs: &Path) -> Result<()> {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "tmp", "var/log",
        "mnt", "lib", "root",
    ] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(rootfs.join("root"), fs::Permissions::from_mode(0o700))?;
    symlink("../run", rootfs.join("var/run"))?;
    // /bin/busybox may be a symlink (chain): copy the real file.
    let real = fs::canonicalize(BUSYBOX).with_context(|| format!("resolving {BUSYBOX}"))?;
    copy_into(&real, rootfs, Path::new("bin/busybox"), 0o755)?;
    let out = host::run(Command::new(&real).arg("--list-full"))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || !applet.contains('/') || applet.ends_with("/busybox") {
            continue;
        }
        let link = rootfs.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", &link).with_context(|| format!("linking {}", link.display()))?;
    }
    let files: [(&str, &str, u32); 7] = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o600),
        ("etc/group", "root:x:0:root\ntty:x:5:\n", 0o644),
        ("etc/shells", "/bin/sh\n/bin/ash\n", 0o644),
        ("etc/hosts", "127.0.0.1\tlocalhost\n", 0o644),
        ("etc/hostname", "vmlab\n", 0o644),
        (
            "etc/os-release",
            "NAME=\"vmlab busybox\"\nID=busybox\nPRETTY_NAME=\"vmlab busybox-static guest\"\n",
            0o644,
        ),
    ];
    for (path, text, mode) in files {
        put_file(rootfs, Path::new(path), text.as_bytes(), mode)?;
    }
    Ok(())
}

/// dropbear refuses key logins for an account whose shadow password starts
/// with `!` (locked): make root's `*` (no password login, keys allowed).
pub(super) fn unlock_root(rootfs: &Path) -> Result<()> {
    let path = rootfs.join("etc/shadow");
    let Ok(text) = fs::read_to_string(&path) else {
        bail!("the root file system has no /etc/shadow");
    };
    let fixed = unlock_root_shadow(&text);
    if fixed != text {
        let mode = path.metadata()?.permissions().mode();
        put_file(
            rootfs,
            Path::new("etc/shadow"),
            fixed.as_bytes(),
            mode & 0o7777,
        )?;
    }
    Ok(())
}

/// Root's shadow entry with a leading `!` (locked) replaced by `*`.
fn unlock_root_shadow(shadow: &str) -> String {
    let mut out = String::with_capacity(shadow.len());
    for line in shadow.split_inclusive('\n') {
        match line.strip_prefix("root:") {
            Some(rest) if rest.starts_with('!') => {
                let rest = rest.trim_start_matches('!');
                let (_, after) = rest.split_once(':').unwrap_or(("", "\n"));
                out.push_str("root:*:");
                out.push_str(after);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// Debian's dropbear and everything `ldd` says it loads, at the same paths.
pub(super) fn add_dropbear(rootfs: &Path) -> Result<()> {
    let out = host::run(Command::new("ldd").arg(DROPBEAR))?;
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    ensure!(!libs.is_empty(), "ldd {DROPBEAR} listed no libraries");
    copy_into(Path::new(DROPBEAR), rootfs, Path::new(DROPBEAR), 0o755)?;
    for lib in libs {
        copy_into(&lib, rootfs, &lib, 0o755)?;
    }
    fs::create_dir_all(rootfs.join("etc/dropbear"))?;
    Ok(())
}

/// The files in `ldd` output (`libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)`
/// and `/lib64/ld-linux-x86-64.so.2 (0x...)`); the vDSO has no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path
            && p.starts_with('/')
        {
            libs.push(PathBuf::from(p));
        }
    }
    libs
}

pub(super) fn add_guest_files(rootfs: &Path) -> Result<()> {
    let files: [(&str, &str, u32); 4] = [
        ("etc/inittab", GUEST_INITTAB, 0o644),
        ("etc/vmlab/init", GUEST_INIT, 0o755),
        ("etc/vmlab/cpu-online", GUEST_CPU_ONLINE, 0o755),
        ("etc/vmlab/udhcpc.script", GUEST_UDHCPC, 0o755),
    ];
    for (path, text, mode) in files {
        put_file(rootfs, Path::new(path), text.as_bytes(), mode)?;
    }
    let root = rootfs.join("root");
    fs::create_dir_all(&root)?;
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
    ensure!(
        rootfs.join("sbin/init").symlink_metadata().is_ok(),
        "the root file system has no /sbin/init"
    );
    Ok(())
}

/// `rootfs/rel` for a path inside the guest, creating its parent directories.
/// Refuses to go through a symlink: an absolute link in the guest would point
/// into the host's file system.
fn guest_path(rootfs: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    let comps: Vec<_> = rel
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(part) = c else {
            bail!("invalid guest path {}", rel.display());
        };
        cur.push(part);
        let last = i + 1 == comps.len();
        match cur.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                if last {
                    fs::remove_file(&cur)?;
                } else {
                    bail!(
                        "/{} is a symlink in the root file system; vmlab will not write through it",
                        cur.strip_prefix(rootfs).unwrap_or(&cur).display()
                    );
                }
            }
            Ok(m) if !last && !m.is_dir() => {
                bail!(
                    "/{} is not a directory in the root file system",
                    rel.display()
                )
            }
            Ok(_) => {}
            Err(_) if !last => fs::create_dir(&cur)?,
            Err(_) => {}
        }
    }
    Ok(cur)
}

pub(super) fn put_file(rootfs: &Path, rel: &Path, data: &[u8], mode: u32) -> Result<()> {
    let path = guest_path(rootfs, rel)?;
    fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies the host file `src` (following symlinks) to `rel` in the guest.
fn copy_into(src: &Path, rootfs: &Path, rel: &Path, mode: u32) -> Result<()> {
    let path = guest_path(rootfs, rel)?;
    fs::copy(src, &path)
        .with_context(|| format!("copying {} to {}", src.display(), path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_files() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f8e)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8e)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f8e)
";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn locked_root_is_unlocked_for_keys() {
        let shadow = "root:!::0:::::\nbin:!::0:::::\n";
        assert_eq!(
            unlock_root_shadow(shadow),
            "root:*::0:::::\nbin:!::0:::::\n"
        );
        let hashed = "root:!$6$abc$def:19000:0:99999:7:::\n";
        assert_eq!(unlock_root_shadow(hashed), "root:*:19000:0:99999:7:::\n");
        let fine = "root:*::0:::::\n";
        assert_eq!(unlock_root_shadow(fine), fine);
    }

    #[test]
    fn guest_paths_never_follow_symlinks_out() {
        let root = tempfile::tempdir().unwrap();
        symlink("/etc", root.path().join("etc")).unwrap();
        let err = put_file(root.path(), Path::new("/etc/x"), b"", 0o644).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // a symlink as the last component is replaced, not written through
        fs::create_dir(root.path().join("d")).unwrap();
        symlink("/etc/hostname", root.path().join("d/f")).unwrap();
        put_file(root.path(), Path::new("d/f"), b"x", 0o644).unwrap();
        assert!(
            !root
                .path()
                .join("d/f")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
        put_file(root.path(), Path::new("a/b/c"), b"y", 0o600).unwrap();
        assert_eq!(fs::read(root.path().join("a/b/c")).unwrap(), b"y");
    }
}
