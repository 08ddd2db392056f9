//! An Alpine minirootfs tarball: extracted by the host's `tar` (modes kept,
//! owners dropped: building needs no root), and its listing read with the
//! `tar` crate for the owners that are not root, which `set_owners` puts
//! into the image. Reading the archive itself, not `tar -tv` text, leaves
//! no column layout, locale or odd file name to get wrong.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use flate2::read::GzDecoder;

use crate::host;

/// Extracts with modes but without owners (a user cannot own files as
/// root); `set_owners` puts the owners into the file system image.
pub(super) fn extract(tarball: &Path, rootfs: &Path) -> Result<()> {
    host::run(
        Command::new("tar")
            .args(["--no-same-owner", "-xpf"])
            .arg(tarball)
            .arg("-C")
            .arg(rootfs),
    )
    .with_context(|| format!("extracting {}", tarball.display()))?;
    ensure!(
        rootfs.join("bin/busybox").exists() || rootfs.join("sbin/init").exists(),
        "{} does not look like a root file system (no /bin/busybox, no /sbin/init)",
        tarball.display()
    );
    Ok(())
}

/// `path in the guest` → `(uid, gid)` for the tarball's entries not owned by
/// root (Alpine: `/etc/shadow` is group `shadow`). Reads a `.tar` or a
/// `.tar.gz` (Alpine's minirootfs is one); an entry whose path climbs out
/// with `..` has no place in the guest and is left out.
pub fn owners(tarball: &Path) -> Result<BTreeMap<PathBuf, (u32, u32)>> {
    let file = File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf()?.starts_with(&GZIP_MAGIC);
    let stream: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    owners_in(stream).with_context(|| {
        format!(
            "reading the listing of {}; give a .tar or .tar.gz root file system",
            tarball.display()
        )
    })
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn owners_in(stream: impl Read) -> Result<BTreeMap<PathBuf, (u32, u32)>> {
    let mut owners = BTreeMap::new();
    for entry in tar::Archive::new(stream).entries()? {
        let entry = entry?;
        let header = entry.header();
        let ids = (u32::try_from(header.uid()?)?, u32::try_from(header.gid()?)?);
        if ids == (0, 0) {
            continue;
        }
        let path = entry.path()?;
        if path.components().any(|c| c == Component::ParentDir) {
            continue;
        }
        // `./etc/shadow` and `etc/shadow/` are both `etc/shadow` in the guest.
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if !rel.as_os_str().is_empty() {
            owners.insert(rel, ids);
        }
    }
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small root file system as the `tar` crate writes it (ustar headers,
    /// GNU long names for what does not fit).
    fn archive(gzip: bool) -> Vec<u8> {
        let entries: [(&str, tar::EntryType, (u64, u64)); 7] = [
            ("./", tar::EntryType::Directory, (0, 0)),
            ("./etc/shadow", tar::EntryType::Regular, (0, 42)),
            ("./bin/ps", tar::EntryType::Symlink, (0, 0)),
            ("./home/a file", tar::EntryType::Regular, (1000, 1000)),
            ("./var/lib/x/", tar::EntryType::Directory, (101, 102)),
            ("../escape", tar::EntryType::Regular, (5, 5)),
            (&LONG, tar::EntryType::Regular, (7, 8)),
        ];
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, (uid, gid)) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_mode(0o644);
            header.set_size(0);
            if kind == tar::EntryType::Symlink {
                header.set_link_name("/bin/busybox").unwrap();
            }
            // `append_data` would refuse `..`: write the name by hand.
            if path.starts_with("..") {
                header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                header.set_cksum();
                builder.append(&header, std::io::empty()).unwrap();
            } else {
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .unwrap();
            }
        }
        let tar = builder.into_inner().unwrap();
        if !gzip {
            return tar;
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    /// Longer than the 100 bytes of a ustar name.
    static LONG: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("./usr/share/{}/f", "d".repeat(120)));

    #[test]
    fn owners_that_are_not_root_come_from_tar_and_tar_gz() {
        let dir = tempfile::tempdir().unwrap();
        for (name, gzip) in [("root.tar", false), ("root.tar.gz", true)] {
            let path = dir.path().join(name);
            std::fs::write(&path, archive(gzip)).unwrap();
            assert_eq!(
                owners(&path).unwrap().into_iter().collect::<Vec<_>>(),
                [
                    (PathBuf::from("etc/shadow"), (0, 42)),
                    (PathBuf::from("home/a file"), (1000, 1000)),
                    (PathBuf::from(&LONG[2..]), (7, 8)),
                    (PathBuf::from("var/lib/x"), (101, 102)),
                ],
                "{name}"
            );
        }
    }

    #[test]
    fn what_is_not_a_tarball_is_one_line_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rootfs.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[b'x'; 2000]).unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let err = format!("{:#}", owners(&path).unwrap_err());
        assert!(
            err.starts_with(&format!(
                "reading the listing of {}; give a .tar or .tar.gz root file system: ",
                path.display()
            )),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
