//! Lab state (`state.json`): a cache of what the domains' marks say, plus
//! what a lab remembers between commands (its prefix).

use std::collections::BTreeMap;
use std::io::ErrorKind;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::Network;
use crate::files::write_atomic;
use crate::paths::LabPaths;
use crate::units::Mib;

/// The state file format this vmlab writes.
pub const STATE_VERSION: u32 = 1;

/// What vmlab knows about one VM of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub name: String,
    /// Set once the domain is defined; reused when it is defined again.
    pub uuid: Option<String>,
    pub image: String,
    /// The image version the overlay is backed by.
    pub image_version: String,
    pub network: Network,
    /// 127.0.0.1 port forwarded to the guest's SSH (user network).
    pub ssh_port: u16,
    #[serde(rename = "memory_mib")]
    pub memory: Mib,
    #[serde(rename = "max_memory_mib")]
    pub max_memory: Mib,
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// Who the lab key logs in as (from the image).
    pub ssh_user: String,
    /// The balloon deflates on OOM (`--balloon-autodeflate`).
    #[serde(default)]
    pub autodeflate: bool,
    /// A clone: the template (of its image version) its disk and memory
    /// come from, by its shape (`qemu-512m-1024m-1c-2c`). `None`: booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl VmRecord {
    /// The settings a domain's mark carries, so the record can be rebuilt
    /// from libvirt when the state file is lost.
    pub fn mark_attrs(&self) -> BTreeMap<String, String> {
        let network = match self.network {
            Network::User => "user",
            Network::Nat => "nat",
        };
        let template = self.template.clone().map(|t| ("template", t));
        [
            ("image", self.image.clone()),
            ("image_version", self.image_version.clone()),
            ("network", network.into()),
            ("ssh_port", self.ssh_port.to_string()),
            ("ssh_user", self.ssh_user.clone()),
            ("memory_mib", self.memory.0.to_string()),
            ("max_memory_mib", self.max_memory.0.to_string()),
            ("vcpus", self.vcpus.to_string()),
            ("max_vcpus", self.max_vcpus.to_string()),
            (
                "autodeflate",
                if self.autodeflate { "on" } else { "off" }.into(),
            ),
        ]
        .into_iter()
        .chain(template)
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The record a mark describes; `None` when the mark lacks a setting.
    pub fn from_mark(name: &str, uuid: &str, attrs: &BTreeMap<String, String>) -> Option<Self> {
        let get = |k: &str| attrs.get(k).cloned();
        let num = |k: &str| attrs.get(k)?.parse::<u64>().ok();
        Some(VmRecord {
            name: name.to_string(),
            uuid: Some(uuid.to_string()),
            image: get("image")?,
            image_version: get("image_version")?,
            network: match get("network")?.as_str() {
                "user" => Network::User,
                "nat" => Network::Nat,
                _ => return None,
            },
            ssh_port: u16::try_from(num("ssh_port")?).ok()?,
            ssh_user: get("ssh_user")?,
            memory: Mib(num("memory_mib")?),
            max_memory: Mib(num("max_memory_mib")?),
            vcpus: u32::try_from(num("vcpus")?).ok()?,
            max_vcpus: u32::try_from(num("max_vcpus")?).ok()?,
            autodeflate: get("autodeflate").as_deref() == Some("on"),
            template: get("template"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabState {
    pub version: u32,
    /// The prefix of the lab's VM names, fixed by its first `up`.
    pub prefix: Option<String>,
    pub vms: Vec<VmRecord>,
}

impl Default for LabState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            prefix: None,
            vms: Vec::new(),
        }
    }
}

/// Why a state file could not be used.
#[derive(Debug)]
pub struct Unreadable(pub String);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreadable {}

impl LabState {
    /// The saved state; an empty one when there is none. A corrupt file is an
    /// [`Unreadable`] error: callers rebuild the state from libvirt.
    pub fn load(paths: &LabPaths) -> Result<Self> {
        let path = paths.state();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: LabState = serde_json::from_str(&text)
            .map_err(|e| Unreadable(format!("{} is corrupt ({e})", path.display())))?;
        if state.version > STATE_VERSION {
            bail!(
                "{} was written by a newer vmlab (state version {}); upgrade vmlab",
                path.display(),
                state.version
            );
        }
        Ok(state)
    }

    /// Atomic: a crash never leaves a half-written state file.
    pub fn save(&self, paths: &LabPaths) -> Result<()> {
        write_atomic(
            &paths.state(),
            (serde_json::to_string_pretty(self)? + "\n").as_bytes(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&VmRecord> {
        self.vms.iter().find(|v| v.name == name)
    }

    /// Inserts or replaces by name; keeps `vm-2` before `vm-10`.
    pub fn put(&mut self, record: VmRecord) {
        self.remove(&record.name);
        self.vms.push(record);
        self.vms.sort_by_key(|v| natural_key(&v.name));
    }

    pub fn remove(&mut self, name: &str) {
        self.vms.retain(|v| v.name != name);
    }
}

/// `vm-10` → (`vm-`, 10): trailing numbers compare as numbers.
pub fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;

    use crate::testutil::vm_record as record;

    #[test]
    fn state_round_trips_and_replaces_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Home::new(dir.path()).lab("t");
        std::fs::create_dir_all(&paths.dir).unwrap();
        assert_eq!(LabState::load(&paths).unwrap(), LabState::default());
        let mut state = LabState::default();
        state.put(record("vm-10"));
        state.put(record("vm-2"));
        state.put(record("vm-1"));
        let mut again = record("vm-1");
        again.uuid = Some("u".into());
        state.put(again);
        state.save(&paths).unwrap();
        let loaded = LabState::load(&paths).unwrap();
        assert_eq!(loaded, state);
        let names: Vec<&str> = loaded.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["vm-1", "vm-2", "vm-10"]);
        assert_eq!(loaded.get("vm-1").unwrap().uuid.as_deref(), Some("u"));
    }

    #[test]
    fn corrupt_and_future_states_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Home::new(dir.path()).lab("t");
        std::fs::create_dir_all(&paths.dir).unwrap();
        std::fs::write(paths.state(), "{ not json").unwrap();
        let err = LabState::load(&paths).unwrap_err();
        assert!(err.downcast_ref::<Unreadable>().is_some(), "{err}");
        std::fs::write(
            paths.state(),
            r#"{"version": 9, "prefix": null, "vms": []}"#,
        )
        .unwrap();
        let err = LabState::load(&paths).unwrap_err();
        assert!(err.downcast_ref::<Unreadable>().is_none());
        assert!(err.to_string().contains("newer vmlab"), "{err}");
    }

    #[test]
    fn a_record_survives_the_trip_through_a_mark() {
        let mut r = record("vm-3");
        r.uuid = Some("9b1c".into());
        r.network = Network::Nat;
        assert_eq!(
            VmRecord::from_mark("vm-3", "9b1c", &r.mark_attrs()),
            Some(r.clone())
        );
        r.template = Some("qemu-512m-1024m-1c-2c".into());
        assert_eq!(
            VmRecord::from_mark("vm-3", "9b1c", &r.mark_attrs()),
            Some(r.clone())
        );
        let mut partial = r.mark_attrs();
        partial.remove("image_version");
        assert_eq!(VmRecord::from_mark("vm-3", "9b1c", &partial), None);
    }
}
