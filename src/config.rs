//! Lab settings: `vmlab.toml` → command-line flags → defaults → validation.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::image::store::DEFAULT_IMAGE;
use crate::units::parse_size_mib;

pub const DEFAULT_CONNECT: &str = "qemu:///system";
pub const CONFIG_FILE: &str = "vmlab.toml";

/// How guests reach the network and how the host reaches their SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// QEMU user-mode network; SSH forwarded from 127.0.0.1:PORT.
    User,
    /// libvirt's `default` NAT network.
    Nat,
}

/// CPU acceleration. `auto` picks KVM only when it really works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// Settings as written in `vmlab.toml` or given as flags; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub lab: Option<String>,
    pub connect: Option<String>,
    pub prefix: Option<String>,
    pub memory: Option<String>,
    pub max_memory: Option<String>,
    pub vcpus: Option<u32>,
    pub max_vcpus: Option<u32>,
    pub image: Option<String>,
    pub network: Option<Network>,
    pub accel: Option<Accel>,
    pub ssh_timeout_s: Option<u64>,
}

impl Settings {
    /// Reads `path`; a missing file is no settings at all.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        toml::from_str(&text).map_err(|e| {
            let msg = e.message().to_string();
            anyhow::anyhow!("{} is invalid: {msg}", path.display())
        })
    }

    /// `self` (flags) wins over `file`.
    pub fn over(self, file: Settings) -> Settings {
        Settings {
            lab: self.lab.or(file.lab),
            connect: self.connect.or(file.connect),
            prefix: self.prefix.or(file.prefix),
            memory: self.memory.or(file.memory),
            max_memory: self.max_memory.or(file.max_memory),
            vcpus: self.vcpus.or(file.vcpus),
            max_vcpus: self.max_vcpus.or(file.max_vcpus),
            image: self.image.or(file.image),
            network: self.network.or(file.network),
            accel: self.accel.or(file.accel),
            ssh_timeout_s: self.ssh_timeout_s.or(file.ssh_timeout_s),
        }
    }

    /// Fills defaults and validates.
    pub fn resolve(self) -> Result<LabSpec> {
        let lab = self.lab.unwrap_or_else(|| "default".into());
        check_name("lab", &lab)?;
        let prefix = self.prefix.unwrap_or_else(|| "vm".into());
        check_name("prefix", &prefix)?;
        let memory_mib =
            parse_size_mib(self.memory.as_deref().unwrap_or("512M")).context("--memory")?;
        let max_memory_mib = match &self.max_memory {
            Some(m) => parse_size_mib(m).context("--max-memory")?,
            None => memory_mib.max(1024),
        };
        if memory_mib < 128 {
            bail!("--memory {memory_mib} MiB is too small for a guest; use at least 128M");
        }
        if max_memory_mib < memory_mib {
            bail!(
                "--max-memory ({max_memory_mib} MiB) is below --memory ({memory_mib} MiB); raise --max-memory"
            );
        }
        let vcpus = self.vcpus.unwrap_or(1);
        let max_vcpus = self.max_vcpus.unwrap_or(vcpus.max(2));
        if vcpus == 0 {
            bail!("--vcpus must be at least 1");
        }
        if max_vcpus < vcpus || max_vcpus > 64 {
            bail!("--max-vcpus ({max_vcpus}) must be between --vcpus ({vcpus}) and 64");
        }
        let image = self.image.unwrap_or_else(|| DEFAULT_IMAGE.into());
        check_name("image", &image)?;
        let ssh_timeout_s = self.ssh_timeout_s.unwrap_or(90);
        if ssh_timeout_s == 0 {
            bail!("ssh_timeout_s must be at least 1");
        }
        Ok(LabSpec {
            lab,
            connect: self.connect.unwrap_or_else(|| DEFAULT_CONNECT.into()),
            prefix,
            memory_mib,
            max_memory_mib,
            vcpus,
            max_vcpus,
            image,
            network: self.network.unwrap_or(Network::User),
            accel: self.accel.unwrap_or(Accel::Auto),
            ssh_timeout_s,
        })
    }
}

/// Validated settings of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    pub lab: String,
    pub connect: String,
    pub prefix: String,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub image: String,
    pub network: Network,
    pub accel: Accel,
    pub ssh_timeout_s: u64,
}

impl LabSpec {
    /// `vm-3` for index 3.
    pub fn vm_name(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix)
    }
}

/// Names end up in domain names, paths and guest hostnames: keep them plain.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!(
            "{what} `{name}` is not allowed; use letters, digits, `-`, `_` or `.` (start with a letter or digit, at most 40)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_small_lab() {
        let spec = Settings::default().resolve().unwrap();
        assert_eq!(spec.lab, "default");
        assert_eq!(spec.connect, DEFAULT_CONNECT);
        assert_eq!((spec.memory_mib, spec.max_memory_mib), (512, 1024));
        assert_eq!((spec.vcpus, spec.max_vcpus), (1, 2));
        assert_eq!(spec.network, Network::User);
        assert_eq!(spec.vm_name(2), "vm-2");
    }

    #[test]
    fn flags_win_over_file() {
        let file: Settings = toml::from_str(
            "memory = \"1G\"\nmax_memory = \"4G\"\nprefix = \"lab\"\nnetwork = \"nat\"\nvcpus = 2\n",
        )
        .unwrap();
        let flags = Settings {
            memory: Some("768M".into()),
            ..Settings::default()
        };
        let spec = flags.over(file).resolve().unwrap();
        assert_eq!(spec.memory_mib, 768);
        assert_eq!(spec.max_memory_mib, 4096);
        assert_eq!(spec.prefix, "lab");
        assert_eq!(spec.network, Network::Nat);
        assert_eq!((spec.vcpus, spec.max_vcpus), (2, 2));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "memroy = \"1G\"\n").unwrap();
        let err = Settings::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `memroy`"), "{err}");
        assert!(
            Settings::load(&dir.path().join("absent.toml"))
                .unwrap()
                .memory
                .is_none()
        );
    }

    #[test]
    fn names_stay_plain() {
        check_name("image", "vmlab-alpine_3.20").unwrap();
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "x'y",
            &"n".repeat(41),
        ] {
            assert!(check_name("image", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn invalid_settings_say_what_to_fix() {
        let cases = [
            (
                Settings {
                    memory: Some("1G".into()),
                    max_memory: Some("512M".into()),
                    ..Default::default()
                },
                "below --memory",
            ),
            (
                Settings {
                    vcpus: Some(0),
                    ..Default::default()
                },
                "at least 1",
            ),
            (
                Settings {
                    vcpus: Some(4),
                    max_vcpus: Some(2),
                    ..Default::default()
                },
                "must be between",
            ),
            (
                Settings {
                    memory: Some("64M".into()),
                    ..Default::default()
                },
                "too small",
            ),
            (
                Settings {
                    prefix: Some("vm;rm -rf".into()),
                    ..Default::default()
                },
                "prefix `vm;rm -rf` is not allowed",
            ),
            (
                Settings {
                    lab: Some("../x".into()),
                    ..Default::default()
                },
                "lab `../x` is not allowed",
            ),
        ];
        for (settings, expected) in cases {
            let err = format!("{:#}", settings.resolve().unwrap_err());
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }
}
