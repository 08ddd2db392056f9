//! SHA-256 and SHA-512 of streams and files, as lowercase hex.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// Both digests of some content. SHA-256 names cache entries; SHA-512 is
/// what Alpine publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    pub sha256: String,
    pub sha512: String,
}

/// Feeds both hashes as data streams past.
#[derive(Default)]
pub struct Hasher {
    sha256: Sha256,
    sha512: Sha512,
}

impl Hasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.sha256.update(chunk);
        self.sha512.update(chunk);
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha256: hex(&self.sha256.finalize()),
            sha512: hex(&self.sha512.finalize()),
        }
    }
}

/// Digests of everything `reader` yields.
pub fn of_reader(reader: &mut dyn Read, what: &str) -> Result<Digests> {
    let mut hasher = Hasher::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {what}"))?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Digests of a file's content.
pub fn of_file(path: &Path) -> Result<Digests> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    of_reader(&mut file, &path.display().to_string())
}

/// SHA-256 of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Published test vectors for "abc" (FIPS 180-2).
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_SHA512: &str = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";

    #[test]
    fn known_vectors_streamed_in_pieces() {
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(
            h.finish(),
            Digests {
                sha256: ABC_SHA256.into(),
                sha512: ABC_SHA512.into()
            }
        );
        assert_eq!(sha256(b"abc"), ABC_SHA256);
        assert_eq!(of_reader(&mut &b"abc"[..], "x").unwrap().sha512, ABC_SHA512);
        assert_eq!(hex(&[0x00, 0x0f, 0xff]), "000fff");
    }
}
