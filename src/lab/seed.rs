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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_has_the_shape_the_guest_parses() {
        assert_eq!(
            user_data("vm-1", "ssh-ed25519 AAAA vmlab\n"),
            "#cloud-config\nhostname: vm-1\ndisable_root: false\nssh_authorized_keys:\n  - ssh-ed25519 AAAA vmlab\n"
        );
        assert_eq!(
            meta_data("abc", "vm-1"),
            "instance-id: abc\nlocal-hostname: vm-1\n"
        );
    }

    #[test]
    fn iso_is_labelled_cidata() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("seed.iso");
        write(&iso, "id-1", "vm-1", "ssh-ed25519 AAAA vmlab").unwrap();
        let bytes = std::fs::read(&iso).unwrap();
        // ISO9660 primary volume descriptor at 32 KiB: "CD001", volume id at offset 40.
        assert_eq!(&bytes[0x8001..0x8006], b"CD001");
        assert_eq!(&bytes[0x8028..0x802e], b"cidata");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("local-hostname: vm-1"));
        assert!(!iso.with_extension("d").exists(), "staging dir left behind");
    }
}
