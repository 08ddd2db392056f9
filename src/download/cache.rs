//! Content-addressed download cache: `cache/sha256/<hex>`, plus
//! `cache/index.json` mapping each download URL to the digests of its content.
//!
//! Content is streamed into a temporary file inside `cache/sha256/` while both
//! digests are computed, and only renamed to its final name once the expected
//! digest (if any) matched, so a half-written or corrupt download is never
//! visible under a digest name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::digest::{self, Digests, Hasher};
use crate::files::write_atomic;
use crate::paths::Home;

/// A digest the content must have, as a publisher states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Sha256(String),
    Sha512(String),
}

impl Expected {
    fn matches(&self, d: &Digests) -> bool {
        match self {
            Expected::Sha256(h) => h.eq_ignore_ascii_case(&d.sha256),
            Expected::Sha512(h) => h.eq_ignore_ascii_case(&d.sha512),
        }
    }

    fn describe(&self, d: &Digests) -> String {
        match self {
            Expected::Sha256(h) => format!("expected sha256 {h}, got {}", d.sha256),
            Expected::Sha512(h) => format!("expected sha512 {h}, got {}", d.sha512),
        }
    }
}

/// The content did not have the digest it must have (nothing was cached).
#[derive(Debug)]
pub struct Mismatch(String);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Mismatch {}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    /// URL -> digests of its content.
    entries: BTreeMap<String, Digests>,
}

/// The download cache of a vmlab home.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    index: PathBuf,
}

impl Cache {
    pub fn new(home: &Home) -> Self {
        Self {
            dir: home.cache_dir(),
            index: home.cache_index(),
        }
    }

    /// Where content with this SHA-256 lives (whether or not it is there).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256.to_ascii_lowercase())
    }

    /// The digests recorded for a URL, if any.
    pub fn lookup(&self, url: &str) -> Result<Option<Digests>> {
        Ok(self.read_index()?.entries.get(url).cloned())
    }

    /// Any recorded entry with content matching `expected` (the same content
    /// from another mirror).
    pub fn find(&self, expected: &Expected) -> Result<Option<Digests>> {
        Ok(self
            .read_index()?
            .entries
            .into_values()
            .find(|d| expected.matches(d)))
    }

    /// Records that `url` serves the content described by `digests`.
    pub fn record(&self, url: &str, digests: &Digests) -> Result<()> {
        let mut index = self.read_index()?;
        index.entries.insert(url.to_owned(), digests.clone());
        write_atomic(
            &self.index,
            (serde_json::to_string_pretty(&index)? + "\n").as_bytes(),
        )
    }

    /// True if the cached file for `digests` exists and still has them.
    pub fn verify(&self, digests: &Digests) -> Result<bool> {
        let path = self.path(&digests.sha256);
        if !path.is_file() {
            return Ok(false);
        }
        Ok(digest::of_file(&path)? == *digests)
    }

    /// Streams `reader` into the cache, computing both digests on the way.
    ///
    /// If `expected` is given and does not match, the partial file is removed
    /// and nothing is cached; `remedy` ends that error. `source` names the
    /// content in errors; `progress` gets the number of bytes read so far.
    pub fn store(
        &self,
        reader: &mut dyn Read,
        source: &str,
        expected: Option<(&Expected, &str)>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Digests> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache directory {}", self.dir.display()))?;
        remove_orphans(&self.dir);
        let partial = Partial(self.dir.join(format!(".partial-{}", unique())));
        let mut file = File::create(&partial.0)
            .with_context(|| format!("creating {}", partial.0.display()))?;
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            if crate::host::signals::stopping() {
                bail!("interrupted while reading {source}; nothing was cached");
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => bail!(
                    "reading {source} failed after {total} bytes: {e}; check your network and try again"
                ),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).with_context(|| {
                format!(
                    "writing {}; check free space in {}",
                    partial.0.display(),
                    self.dir.display()
                )
            })?;
            total += n as u64;
            progress(total);
        }
        file.sync_all()
            .with_context(|| format!("writing {}", partial.0.display()))?;
        drop(file);
        let digests = hasher.finish();
        if let Some((expected, remedy)) = expected
            && !expected.matches(&digests)
        {
            return Err(Mismatch(format!(
                "checksum mismatch for {source}: {}; nothing was cached, {remedy}",
                expected.describe(&digests)
            ))
            .into());
        }
        let dest = self.path(&digests.sha256);
        std::fs::rename(&partial.0, &dest)
            .with_context(|| format!("moving {source} into the cache at {}", dest.display()))?;
        std::mem::forget(partial);
        Ok(digests)
    }

    fn read_index(&self) -> Result<Index> {
        match std::fs::read_to_string(&self.index) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is corrupt; delete it (cached downloads will be fetched again)",
                    self.index.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.index.display())),
        }
    }
}

/// A temporary file removed on drop unless forgotten.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Removes the `.partial-<pid>-…` files of processes that are gone: a
/// process killed outright (`kill -9`, a second Ctrl-C during a blocked
/// read) could not remove its own.
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(".partial-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A name part unique within this host for this process's lifetime.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `path` holds exactly the content `expected` names.
pub fn file_matches(path: &Path, expected: &Expected) -> Result<bool> {
    Ok(expected.matches(&digest::of_file(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::files_in;

    fn cache() -> (tempfile::TempDir, Cache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&Home::new(dir.path()));
        (dir, cache)
    }

    #[test]
    fn store_names_file_by_sha256_and_reports_progress() {
        let (_dir, cache) = cache();
        let mut seen = Vec::new();
        let d = cache
            .store(&mut &b"abc"[..], "test", None, &mut |n| seen.push(n))
            .unwrap();
        assert_eq!(d, digest::of_reader(&mut &b"abc"[..], "abc").unwrap());
        assert_eq!(std::fs::read(cache.path(&d.sha256)).unwrap(), b"abc");
        assert_eq!(seen.last(), Some(&3));
        assert_eq!(files_in(&cache.dir), vec![d.sha256.clone()]);
        assert!(cache.verify(&d).unwrap());
    }

    #[test]
    fn partial_files_of_processes_that_are_gone_are_removed() {
        let (_dir, cache) = cache();
        std::fs::create_dir_all(&cache.dir).unwrap();
        // pid_max is at most 2^22: this process cannot exist.
        let orphan = cache.dir.join(".partial-4194305-0");
        let mine = cache
            .dir
            .join(format!(".partial-{}-999", std::process::id()));
        std::fs::write(&orphan, "half").unwrap();
        std::fs::write(&mine, "in progress").unwrap();
        cache
            .store(&mut &b"abc"[..], "test", None, &mut |_| {})
            .unwrap();
        assert!(!orphan.exists(), "the orphan stays");
        assert!(mine.exists(), "a live process's partial file was removed");
    }

    #[test]
    fn store_with_wrong_digest_leaves_nothing() {
        let (_dir, cache) = cache();
        for wrong in [
            Expected::Sha512("0".repeat(128)),
            Expected::Sha256("0".repeat(64)),
        ] {
            let err = cache
                .store(
                    &mut &b"abc"[..],
                    "the-url",
                    Some((&wrong, "try X")),
                    &mut |_| {},
                )
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("checksum mismatch for the-url: expected sha"),
                "{err}"
            );
            assert!(err.ends_with("nothing was cached, try X"), "{err}");
            assert_eq!(files_in(&cache.dir), Vec::<String>::new());
        }
        let right = Expected::Sha256(digest::sha256(b"abc").to_uppercase());
        cache
            .store(&mut &b"abc"[..], "u", Some((&right, "")), &mut |_| {})
            .expect("hex case does not matter");
    }

    #[test]
    fn index_round_trip_and_verify_detects_tampering() {
        let (_dir, cache) = cache();
        assert_eq!(cache.lookup("http://x/a").unwrap(), None);
        let d = cache
            .store(&mut &b"hello"[..], "test", None, &mut |_| {})
            .unwrap();
        cache.record("http://x/a", &d).unwrap();
        assert_eq!(cache.lookup("http://x/a").unwrap(), Some(d.clone()));
        assert_eq!(cache.lookup("http://x/b").unwrap(), None);
        assert_eq!(
            cache.find(&Expected::Sha512(d.sha512.clone())).unwrap(),
            Some(d.clone())
        );
        assert_eq!(cache.find(&Expected::Sha256("0".repeat(64))).unwrap(), None);

        std::fs::write(cache.path(&d.sha256), b"hellO").unwrap();
        assert!(!cache.verify(&d).unwrap());
        std::fs::remove_file(cache.path(&d.sha256)).unwrap();
        assert!(!cache.verify(&d).unwrap());
    }
}
