//! The lab's own SSH key pair: made once per lab, private key 0600.

use std::process::Command;

use anyhow::{Context, Result};

use crate::host;
use crate::paths::LabPaths;

/// Creates the key pair if missing; returns the public key line.
pub fn ensure(paths: &LabPaths, lab: &str) -> Result<String> {
    let key = paths.ssh_key();
    if !key.exists() {
        host::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("vmlab-{lab}"))
                .arg("-f")
                .arg(&key),
        )?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("securing {}", key.display()))?;
    std::fs::read_to_string(paths.ssh_pubkey())
        .with_context(|| format!("reading {}", paths.ssh_pubkey().display()))
}
