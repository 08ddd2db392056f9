//! An Alpine minirootfs tarball: extracted by the host's `tar` (modes kept,
//! owners dropped: building needs no root), and its listing read for the
//! owners that are not root, which `set_owners` puts into the image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

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
/// root (Alpine: `/etc/shadow` is group `shadow`).
pub(super) fn owners(tarball: &Path) -> Result<BTreeMap<PathBuf, (u32, u32)>> {
    let out = host::run(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(tarball),
    )?;
    Ok(parse_tar_owners(&String::from_utf8_lossy(&out.stdout)))
}

/// Lines of `tar -tv --numeric-owner`: `MODE UID/GID SIZE DATE TIME PATH[ -> TARGET]`.
fn parse_tar_owners(listing: &str) -> BTreeMap<PathBuf, (u32, u32)> {
    let mut owners = BTreeMap::new();
    for line in listing.lines() {
        // Five words, then the path (which may hold spaces).
        let mut words = Vec::new();
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim_start();
        let path = path.split(" -> ").next().unwrap_or(path);
        let ids = words[1].split_once('/');
        let Some((Ok(uid), Ok(gid))) = ids.map(|(u, g)| (u.parse::<u32>(), g.parse::<u32>()))
        else {
            continue;
        };
        if (uid, gid) != (0, 0) && !path.is_empty() {
            let rel = path.trim_start_matches("./").trim_end_matches('/');
            owners.insert(PathBuf::from(rel), (uid, gid));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_listing_gives_the_owners_that_are_not_root() {
        let listing = "\
drwxr-xr-x 0/0               0 2024-09-06 14:04 ./
-rw-r----- 0/42            446 2024-09-06 14:04 ./etc/shadow
lrwxrwxrwx 0/0               0 2024-09-06 11:34 ./bin/ps -> /bin/busybox
-rw-r--r-- 1000/1000         5 2024-09-06 11:34 ./home/a file -> x
drwxr-x--- 101/102           0 2024-09-06 11:34 ./var/lib/x/
garbage line
";
        let owners = parse_tar_owners(listing);
        assert_eq!(
            owners.into_iter().collect::<Vec<_>>(),
            [
                (PathBuf::from("etc/shadow"), (0, 42)),
                (PathBuf::from("home/a file"), (1000, 1000)),
                (PathBuf::from("var/lib/x"), (101, 102)),
            ]
        );
    }
}
