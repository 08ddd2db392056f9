//! What a lab has, from libvirt's marks (the truth) and the state file (a
//! cache of them). Every verb starts here, so any mix of a lost or corrupt
//! state file, stopped or vanished domains and missing disks converges.

use anyhow::Result;

use super::Lab;
use super::state::{LabState, Unreadable, VmRecord};
use crate::hypervisor::DomainInfo;

/// The lab as it is now.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The state file's records, plus one for every marked domain it lacked.
    pub state: LabState,
    /// Every domain of the connection, ours or not.
    pub domains: Vec<DomainInfo>,
    /// Domains marked as ours whose marks are too old to rebuild a record from.
    pub unrecoverable: Vec<String>,
    /// What was recovered, for the user.
    pub notes: Vec<String>,
}

impl Inventory {
    /// This lab's domain of that name; `None` if missing or not ours.
    pub fn domain<'a>(&'a self, lab: &Lab, name: &str) -> Option<&'a DomainInfo> {
        self.domains.iter().find(|d| d.name == name && lab.owns(d))
    }

    /// A domain of that name that this lab did not create.
    pub fn foreign<'a>(&'a self, lab: &Lab, name: &str) -> Option<&'a DomainInfo> {
        self.domains.iter().find(|d| d.name == name && !lab.owns(d))
    }

    /// Names of every VM the lab has in any form: records, marked domains, files.
    pub fn names(&self, lab: &Lab) -> Vec<String> {
        let mut names: Vec<String> = self.state.vms.iter().map(|v| v.name.clone()).collect();
        names.extend(self.unrecoverable.iter().cloned());
        for dir in vm_dirs(lab) {
            if !names.contains(&dir) && self.foreign(lab, &dir).is_none() {
                names.push(dir);
            }
        }
        names.sort_by_key(|n| super::state::natural_key(n));
        names
    }
}

/// Which VMs a command acts on: all of the lab's running ones, or those named.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum On {
    #[default]
    All,
    Named(Vec<String>),
}

impl std::str::FromStr for On {
    type Err = String;

    /// `all`, or names separated by commas: `vm-1,vm-2`.
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text == "all" {
            return Ok(On::All);
        }
        let names: Vec<String> = text.split(',').map(|n| n.trim().to_string()).collect();
        for name in &names {
            crate::config::check_name("VM", name).map_err(|e| e.to_string())?;
        }
        Ok(On::Named(names))
    }
}

/// The records of the VMs `on` names; each must be this lab's and running.
pub fn select(lab: &Lab, on: &On) -> Result<Vec<VmRecord>> {
    let inv = take(lab)?;
    if inv.state.vms.is_empty() {
        anyhow::bail!(
            "lab `{}` has no VMs; create some with `vmlab up 2`",
            lab.name
        );
    }
    let running = |r: &VmRecord| {
        inv.domain(lab, &r.name)
            .is_some_and(|d| d.state.is_active())
    };
    match on {
        On::All => {
            let vms: Vec<VmRecord> = inv
                .state
                .vms
                .iter()
                .filter(|r| running(r))
                .cloned()
                .collect();
            if vms.is_empty() {
                anyhow::bail!(
                    "no VM of lab `{}` is running; start them with `vmlab up`",
                    lab.name
                );
            }
            Ok(vms)
        }
        On::Named(names) => names
            .iter()
            .map(|name| {
                let record = inv.state.get(name).ok_or_else(|| {
                    let known: Vec<&str> = inv.state.vms.iter().map(|v| v.name.as_str()).collect();
                    anyhow::anyhow!(
                        "lab `{}` has no VM `{name}`; it has {}",
                        lab.name,
                        known.join(", ")
                    )
                })?;
                if !running(record) {
                    anyhow::bail!("`{name}` is not running; start it with `vmlab up`");
                }
                Ok(record.clone())
            })
            .collect(),
    }
}

/// Reads the state (rebuilding it when it is corrupt) and lists domains.
/// Nothing is written: callers holding the change lock save `state`.
pub fn take(lab: &Lab) -> Result<Inventory> {
    let mut notes = Vec::new();
    let saved = match LabState::load(&lab.paths) {
        Ok(state) => state,
        Err(e) if e.downcast_ref::<Unreadable>().is_some() => {
            notes.push(format!("{e}; rebuilding it from libvirt"));
            LabState::default()
        }
        Err(e) => return Err(e),
    };
    let domains = lab.hv.domains()?;
    let (state, unrecoverable, recovered) = reconcile(saved, &domains, |d| lab.owns(d));
    if !recovered.is_empty() {
        notes.push(format!(
            "{} recovered from libvirt (missing from {})",
            recovered.join(", "),
            lab.paths.state().display()
        ));
    }
    Ok(Inventory {
        state,
        domains,
        unrecoverable,
        notes,
    })
}

/// Adds a record for every owned domain the state lacks, rebuilt from its
/// mark, and takes the prefix from the marks when the state lost it.
/// Returns the state, the owned domains that cannot be rebuilt, and the
/// names recovered.
fn reconcile(
    mut state: LabState,
    domains: &[DomainInfo],
    owns: impl Fn(&DomainInfo) -> bool,
) -> (LabState, Vec<String>, Vec<String>) {
    let mut unrecoverable = Vec::new();
    let mut recovered = Vec::new();
    for d in domains.iter().filter(|d| owns(d)) {
        let attrs = &d.mark.as_ref().expect("owned domains are marked").attrs;
        if state.prefix.is_none() {
            state.prefix = attrs.get("prefix").cloned();
        }
        if state.get(&d.name).is_some() {
            continue;
        }
        match VmRecord::from_mark(&d.name, &d.uuid, attrs) {
            Some(record) => {
                state.put(record);
                recovered.push(d.name.clone());
            }
            None => unrecoverable.push(d.name.clone()),
        }
    }
    (state, unrecoverable, recovered)
}

/// VM directories on disk (a VM whose record and domain are both gone).
fn vm_dirs(lab: &Lab) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(lab.paths.dir.join("vms")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| crate::config::check_name("VM", n).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{Mark, PowerState};
    use crate::testutil::vm_record;

    fn marked(
        name: &str,
        lab: &str,
        attrs: std::collections::BTreeMap<String, String>,
    ) -> DomainInfo {
        DomainInfo {
            name: name.into(),
            uuid: format!("uuid-{name}"),
            state: PowerState::Running,
            mark: Some(Mark {
                lab: lab.into(),
                home: "/h".into(),
                attrs,
            }),
        }
    }

    #[test]
    fn on_takes_all_or_checked_names() {
        assert_eq!("all".parse::<On>(), Ok(On::All));
        assert_eq!(
            "vm-1, vm-2".parse::<On>(),
            Ok(On::Named(vec!["vm-1".into(), "vm-2".into()]))
        );
        let err = "vm-1,../x".parse::<On>().unwrap_err();
        assert!(err.starts_with("VM `../x` is not allowed"), "{err}");
        assert!("vm-1,".parse::<On>().is_err(), "an empty name");
    }

    #[test]
    fn marked_domains_missing_from_the_state_are_rebuilt() {
        let mut attrs = vm_record("x").mark_attrs();
        attrs.insert("prefix".into(), "e2e".into());
        let domains = [
            marked("e2e-1", "lab", attrs.clone()),
            marked("e2e-2", "lab", Default::default()),
            marked("o-1", "other", attrs),
        ];
        let mut saved = LabState::default();
        saved.put(vm_record("e2e-3"));
        let (state, unrecoverable, recovered) =
            reconcile(saved, &domains, |d| d.mark.as_ref().unwrap().lab == "lab");
        assert_eq!(state.prefix.as_deref(), Some("e2e"));
        let names: Vec<&str> = state.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["e2e-1", "e2e-3"]);
        assert_eq!(
            state.get("e2e-1").unwrap().uuid.as_deref(),
            Some("uuid-e2e-1")
        );
        assert_eq!(unrecoverable, ["e2e-2"]);
        assert_eq!(recovered, ["e2e-1"]);
    }
}
