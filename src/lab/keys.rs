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
