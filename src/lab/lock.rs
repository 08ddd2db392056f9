//! The locks of one lab.
//!
//! `up` and `down` change the lab: they take `lock` exclusively and never
//! interleave. Every command that talks to the lab's guests or domains for
//! longer than a moment (`run`, `bench`, `monitor`, `manage`, `scenario`,
//! `dashboard`) holds `use.lock` shared; changes never wait for them and
//! they never wait for changes. They stay out of each other's way by rule
//! instead: a reader re-lists the lab's domains every round and drops a
//! domain that vanished, and `down` leaves the lab directory (its SSH key)
//! in place while a reader holds `use.lock`.
//!
//! One manager acts on a domain at a time: `manage` and `scenario run` hold
//! the lab's `manage.lock`, or for a domain no lab of this home owns
//! (`manage --domains`), a lock of that domain's own.

use anyhow::{Result, anyhow};

use super::Lab;
use crate::files::{FileLock, create_dir_traversable};
use crate::hypervisor::Hypervisor;
use crate::paths::{Home, LabPaths};

/// For `up` and `down`: waits for another change of the same lab to finish.
pub fn change(paths: &LabPaths) -> Result<FileLock> {
    create_lab_dir(paths)?;
    FileLock::exclusive(
        &paths.lock(),
        "another `vmlab up` or `vmlab down` on this lab",
    )
}

/// For long-running readers; never waits.
pub fn reader(paths: &LabPaths) -> Result<FileLock> {
    create_lab_dir(paths)?;
    FileLock::shared(
        &paths.use_lock(),
        "`vmlab down` to check this lab's readers",
    )
}

/// What one manager holds while it acts: released on drop.
#[derive(Debug)]
pub struct ManagerClaim {
    _locks: Vec<FileLock>,
}

/// Claims a lab for one manager: its reader lock and its one-manager lock.
pub fn claim_lab(lab: &Lab) -> Result<ManagerClaim> {
    let reader = reader(&lab.paths)?;
    let manager = one_manager(&lab.paths.manage_lock(), &format!("lab `{}`", lab.name))?;
    Ok(ManagerClaim {
        _locks: vec![reader, manager],
    })
}

/// Claims the domains named with `manage --domains`: each must exist; a
/// domain of one of this home's labs claims that lab (so a lab manager and
/// a `--domains` manager never act on the same VM), any other domain a lock
/// of its own.
pub fn claim_domains(hv: &dyn Hypervisor, home: &Home, names: &[String]) -> Result<ManagerClaim> {
    let domains = hv.domains()?;
    let mut locks = Vec::new();
    let mut labs = Vec::new();
    for name in names {
        let domain = domains.iter().find(|d| &d.name == name).ok_or_else(|| {
            anyhow!("no domain `{name}` on this connection; `virsh list --all` lists them")
        })?;
        match domain.mark.as_ref().filter(|m| home.is(&m.home)) {
            Some(mark) if !labs.contains(&mark.lab) => {
                labs.push(mark.lab.clone());
                let lab = Lab::new(hv, home, &mark.lab);
                locks.extend(claim_lab(&lab)?._locks);
            }
            Some(_) => {}
            None => {
                let path = home.domain_manager_lock(name);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                locks.push(one_manager(&path, &format!("domain `{name}`"))?);
            }
        }
    }
    Ok(ManagerClaim { _locks: locks })
}

fn one_manager(path: &std::path::Path, what: &str) -> Result<FileLock> {
    FileLock::try_exclusive(path)?.ok_or_else(|| {
        anyhow!(
            "another `vmlab manage` (or `vmlab scenario run`) already manages {what}; stop it first (Ctrl-C)"
        )
    })
}

/// `labs/` and `labs/<lab>/`, traversable for QEMU's user even when an
/// older vmlab made them private.
fn create_lab_dir(paths: &LabPaths) -> Result<()> {
    if let Some(labs) = paths.dir.parent() {
        create_dir_traversable(labs)?;
    }
    create_dir_traversable(&paths.dir)
}

/// Whether some long-running reader holds the lab.
pub fn readers_present(paths: &LabPaths) -> Result<bool> {
    if !paths.use_lock().exists() {
        return Ok(false);
    }
    Ok(FileLock::try_exclusive(&paths.use_lock())?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Home;

    #[test]
    fn readers_never_block_changes_and_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Home::new(dir.path()).lab("t");
        assert!(!readers_present(&paths).unwrap());
        let r1 = reader(&paths).unwrap();
        let r2 = reader(&paths).unwrap();
        let c = change(&paths).expect("a change does not wait for readers");
        assert!(readers_present(&paths).unwrap());
        drop((r1, r2));
        assert!(!readers_present(&paths).unwrap());
        assert!(
            FileLock::try_exclusive(&paths.lock()).unwrap().is_none(),
            "changes exclude each other"
        );
        drop(c);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o711);
    }
}
