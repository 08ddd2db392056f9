//! NoCloud seeds: an ISO9660 volume labelled `cidata` with `meta-data` and
//! `user-data`, read by vmlab's offline image and by Alpine's cloud images.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::host;

/// `meta-data`: instance id and hostname.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// `user-data`: the lab's public key for root (the offline image's init parses this exact shape).
pub fn user_data(hostname: &str, authorized_key: &str) -> String {
    format!(
        "#cloud-config\nhostname: {hostname}\ndisable_root: false\nssh_authorized_keys:\n  - {}\n",
        authorized_key.trim()
    )
}

/// Writes the seed ISO to `out` (files are staged beside it, then removed).
pub fn write(out: &Path, instance_id: &str, hostname: &str, authorized_key: &str) -> Result<()> {
    let staging = out.with_extension("d");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    std::fs::write(staging.join("meta-data"), meta_data(instance_id, hostname))?;
    std::fs::write(
        staging.join("user-data"),
        user_data(hostname, authorized_key),
    )?;
    let result = host::run(
        Command::new("genisoimage")
            .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
            .arg(out)
            .arg(staging.join("user-data"))
            .arg(staging.join("meta-data")),
    );
    std::fs::remove_dir_all(&staging).ok();
    result.map(|_| ())
}
