//! Content-addressed download cache: `cache/sha256/<hex>`, plus `cache/index.json`
//! mapping each download URL to the SHA-256 and SHA-512 of its content.
//!
//! Content is streamed into a temporary file inside `cache/sha256/` while both
//! digests are computed, and only renamed to its final name once the expected
//! digest (if any) matched, so a half-written or corrupt download is never
//! visible under a digest name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::paths::Home;

/// Digests of one cached file, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub sha256: String,
    pub sha512: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    /// URL -> digests of its content.
    entries: BTreeMap<String, Entry>,
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
        self.dir.join(sha256)
    }

    /// The digests recorded for a URL, if any.
    pub fn lookup(&self, url: &str) -> Result<Option<Entry>> {
        Ok(self.read_index()?.entries.get(url).cloned())
    }

    /// Any recorded entry with this SHA-512 (the same content from another mirror).
    pub fn find_sha512(&self, sha512: &str) -> Result<Option<Entry>> {
        Ok(self
            .read_index()?
            .entries
            .into_values()
            .find(|e| e.sha512 == sha512))
    }

    /// Records that `url` serves the content described by `entry`.
    pub fn record(&self, url: &str, entry: &Entry) -> Result<()> {
        let mut index = self.read_index()?;
        index.entries.insert(url.to_owned(), entry.clone());
        let tmp = self.index.with_extension(format!("json.{}.tmp", unique()));
        std::fs::write(&tmp, serde_json::to_string_pretty(&index)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.index).with_context(|| {
            let _ = std::fs::remove_file(&tmp);
            format!("updating {}", self.index.display())
        })
    }

    /// True if the cached file for `entry` exists and both its digests still match.
    pub fn verify(&self, entry: &Entry) -> Result<bool> {
        let path = self.path(&entry.sha256);
        if !path.is_file() {
            return Ok(false);
        }
        let actual = hash_file(&path)?;
        Ok(actual == *entry)
    }

    /// Streams `reader` into the cache, computing both digests on the way.
    ///
    /// If `expected_sha512` is given and does not match, the partial file is
    /// removed and nothing is cached. `source` names the content in errors;
    /// `progress` gets the number of bytes read so far.
    pub fn store(
        &self,
        reader: &mut dyn Read,
        source: &str,
        expected_sha512: Option<&str>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Entry> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating cache directory {}", self.dir.display()))?;
        let partial = Partial(self.dir.join(format!(".partial-{}", unique())));
        let mut file = File::create(&partial.0)
            .with_context(|| format!("creating {}", partial.0.display()))?;

        let mut sha256 = Sha256::new();
        let mut sha512 = Sha512::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => bail!(
                    "download of {source} failed after {total} bytes: {e}; check your network and try again"
                ),
            };
            let chunk = &buf[..n];
            sha256.update(chunk);
            sha512.update(chunk);
            file.write_all(chunk).with_context(|| {
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

        let entry = Entry {
            sha256: hex(&sha256.finalize()),
            sha512: hex(&sha512.finalize()),
        };
        if let Some(expected) = expected_sha512
            && !expected.eq_ignore_ascii_case(&entry.sha512)
        {
            bail!(
                "checksum mismatch for {source}: expected sha512 {expected}, got {}; nothing was cached, try again or pass --url with another mirror",
                entry.sha512
            );
        }
        let dest = self.path(&entry.sha256);
        std::fs::rename(&partial.0, &dest)
            .with_context(|| format!("moving download into cache at {}", dest.display()))?;
        std::mem::forget(partial);
        Ok(entry)
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

/// SHA-256 and SHA-512 of a file's content.
pub fn hash_file(path: &Path) -> Result<Entry> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha512.update(&buf[..n]);
    }
    Ok(Entry {
        sha256: hex(&sha256.finalize()),
        sha512: hex(&sha512.finalize()),
    })
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A temporary file removed on drop unless forgotten.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A name part unique within this host for this process's lifetime.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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
    fn hex_of_known_digests() {
        // Well-known digests of "abc".
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&Sha512::digest(b"abc")),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(hex(&[0x00, 0x0f, 0xff]), "000fff");
    }

    #[test]
    fn store_names_file_by_sha256_and_reports_progress() {
        let (_dir, cache) = cache();
        let mut seen = Vec::new();
        let entry = cache
            .store(&mut &b"abc"[..], "test", None, &mut |n| seen.push(n))
            .unwrap();
        assert_eq!(
            entry.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(std::fs::read(cache.path(&entry.sha256)).unwrap(), b"abc");
        assert_eq!(seen.last(), Some(&3));
        assert_eq!(files_in(&cache.dir), vec![entry.sha256.clone()]);
        assert!(cache.verify(&entry).unwrap());
    }

    #[test]
    fn store_with_wrong_digest_leaves_nothing() {
        let (_dir, cache) = cache();
        let wrong = "0".repeat(128);
        let err = cache
            .store(&mut &b"abc"[..], "the-url", Some(&wrong), &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch for the-url"), "{err}");
        assert!(err.contains(&wrong), "{err}");
        assert!(err.contains(&hex(&Sha512::digest(b"abc"))), "{err}");
        assert_eq!(files_in(&cache.dir), Vec::<String>::new());
    }

    #[test]
    fn index_round_trip_and_verify_detects_tampering() {
        let (_dir, cache) = cache();
        assert_eq!(cache.lookup("http://x/a").unwrap(), None);
        let entry = cache
            .store(&mut &b"hello"[..], "test", None, &mut |_| {})
            .unwrap();
        cache.record("http://x/a", &entry).unwrap();
        assert_eq!(cache.lookup("http://x/a").unwrap(), Some(entry.clone()));
        assert_eq!(cache.lookup("http://x/b").unwrap(), None);
        assert_eq!(
            cache.find_sha512(&entry.sha512).unwrap(),
            Some(entry.clone())
        );

        std::fs::write(cache.path(&entry.sha256), b"hellO").unwrap();
        assert!(!cache.verify(&entry).unwrap());
        std::fs::remove_file(cache.path(&entry.sha256)).unwrap();
        assert!(!cache.verify(&entry).unwrap());
    }
}
