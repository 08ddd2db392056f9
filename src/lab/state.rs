//! Lab state (`state.json`) and the lab lock.

use std::fs::File;
use std::io::ErrorKind;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Network;
use crate::paths::LabPaths;

/// What vmlab knows about one VM of a lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub name: String,
    /// Set once the domain is defined; reused when it is defined again.
    pub uuid: Option<String>,
    pub image: String,
    pub network: Network,
    /// 127.0.0.1 port forwarded to the guest's SSH (user network).
    pub ssh_port: u16,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// Who the lab key logs in as (from the image).
    #[serde(default = "crate::image::store::root")]
    pub ssh_user: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabState {
    pub vms: Vec<VmRecord>,
}

impl LabState {
    pub fn load(paths: &LabPaths) -> Result<Self> {
        let path = paths.state();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is corrupt; fix or remove it (the VMs stay defined in libvirt)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Atomic: a crash never leaves a half-written state file.
    pub fn save(&self, paths: &LabPaths) -> Result<()> {
        let path = paths.state();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
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
fn natural_key(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_string(), num.parse().unwrap_or(0))
}

/// Exclusive lock on a lab: mutating commands never interleave. Released on drop.
pub struct LabLock {
    _file: File,
}

impl LabLock {
    /// Waits for another vmlab command on the same lab to finish.
    pub fn acquire(paths: &LabPaths) -> Result<Self> {
        create_private_dir(&paths.dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(paths.lock())
            .with_context(|| format!("opening {}", paths.lock().display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!("waiting for another vmlab command on this lab to finish…");
                file.lock()
                    .with_context(|| format!("locking {}", paths.lock().display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", paths.lock().display()));
            }
        }
        Ok(Self { _file: file })
    }
}

/// A directory only its owner can enter (it holds the lab's SSH key).
pub fn create_private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", dir.display()))
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
        create_private_dir(&paths.dir).unwrap();
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
    fn lock_is_exclusive_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Home::new(dir.path()).lab("t");
        let held = LabLock::acquire(&paths).unwrap();
        let other = File::options().write(true).open(paths.lock()).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().expect("free after drop");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
