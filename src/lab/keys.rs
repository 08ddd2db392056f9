//! SSH key pairs vmlab makes: one per lab (and one per template), private
//! key 0600.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::host;
use crate::paths::LabPaths;

/// Creates the lab's key pair if missing; returns the public key line.
pub fn ensure(paths: &LabPaths, lab: &str) -> Result<String> {
    ensure_pair(
        &paths.ssh_key(),
        &paths.ssh_pubkey(),
        &format!("vmlab-{lab}"),
    )
}

/// Creates the key pair `key` + `pubkey` if missing; returns the public key line.
pub fn ensure_pair(key: &Path, pubkey: &Path, comment: &str) -> Result<String> {
    if !key.exists() {
        host::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(key),
        )?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("securing {}", key.display()))?;
    std::fs::read_to_string(pubkey).with_context(|| format!("reading {}", pubkey.display()))
}

/// A new ed25519 host key for a guest's dropbear: its key file (dropbear's
/// format) and its public key line (`ssh-ed25519 AAAA…`), made on the host
/// with `ssh-keygen` (from the host's RNG) and converted here.
pub struct HostKey {
    pub dropbear: Vec<u8>,
    pub public: String,
}

pub fn new_host_key() -> Result<HostKey> {
    let dir = tempfile::tempdir().context("making a directory for a host key")?;
    let key = dir.path().join("key");
    let public = ensure_pair(&key, &key.with_extension("pub"), "vmlab-clone")?;
    let private = std::fs::read_to_string(&key)?;
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    Ok(HostKey {
        dropbear: dropbear_key(&private)?,
        public: public.join(" "),
    })
}

/// OpenSSH's unencrypted ed25519 private key file → dropbear's key file:
/// the string `ssh-ed25519`, then the string of the 32-byte seed and the
/// 32-byte public key, which OpenSSH's file holds as one string too.
fn dropbear_key(openssh: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let body: String = openssh
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .context("an OpenSSH private key that is not base64")?;
    let mut r = Reader(&blob);
    if r.take(15)? != b"openssh-key-v1\0" {
        anyhow::bail!("not an OpenSSH private key");
    }
    let (cipher, _kdf, _kdf_options) = (r.string()?, r.string()?, r.string()?);
    if cipher != b"none" || r.u32()? != 1 {
        anyhow::bail!("not one unencrypted OpenSSH key");
    }
    let _public = r.string()?;
    let mut keys = Reader(r.string()?);
    let (check1, check2) = (keys.u32()?, keys.u32()?);
    let kind = keys.string()?;
    let _public = keys.string()?;
    let private = keys.string()?;
    if check1 != check2 || kind != b"ssh-ed25519" || private.len() != 64 {
        anyhow::bail!("not an ed25519 OpenSSH private key");
    }
    let mut out = Vec::new();
    for part in [kind, private] {
        out.extend((part.len() as u32).to_be_bytes());
        out.extend(part);
    }
    Ok(out)
}

/// SSH wire format: big-endian u32s and length-prefixed strings.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            anyhow::bail!("an OpenSSH private key cut short");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway key made with `ssh-keygen -t ed25519 -N '' -C test`.
    const OPENSSH: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCWaQZ0T1oM7Kf68mSSFOxSBa61FJuJgYMJzQAzLuFUWAAAAIgMxei+DMXo
vgAAAAtzc2gtZWQyNTUxOQAAACCWaQZ0T1oM7Kf68mSSFOxSBa61FJuJgYMJzQAzLuFUWA
AAAED2DHmzEfW21mNzGqGPu8SZV5Qhxn1vYXu2Ql0EVMpkNpZpBnRPWgzsp/ryZJIU7FIF
rrUUm4mBgwnNADMu4VRYAAAABHRlc3QB
-----END OPENSSH PRIVATE KEY-----
";
    /// Its public key line's blob.
    const PUBLIC: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJZpBnRPWgzsp/ryZJIU7FIFrrUUm4mBgwnNADMu4VRY";

    #[test]
    fn an_openssh_key_becomes_a_dropbear_key() {
        use base64::Engine;
        let key = dropbear_key(OPENSSH).unwrap();
        assert_eq!(key.len(), 4 + 11 + 4 + 64);
        assert_eq!(&key[..15], b"\0\0\0\x0bssh-ed25519");
        assert_eq!(&key[15..19], &64u32.to_be_bytes());
        // The seed, then the public key the public line carries.
        let public = base64::engine::general_purpose::STANDARD
            .decode(PUBLIC)
            .unwrap();
        assert_eq!(&key[51..], &public[public.len() - 32..]);
        let cut = OPENSSH.replace("rrUUm4mBgwnNADMu4VRYAAAABHRlc3QB", "");
        assert!(dropbear_key(&cut).is_err());
        assert!(dropbear_key("-----BEGIN X-----\naGVsbG8=\n-----END X-----\n").is_err());
    }
}
