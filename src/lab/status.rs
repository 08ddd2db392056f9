//! `vmlab status`: what each VM of the lab is doing, as a table or JSON.

use anyhow::Result;
use serde::Serialize;

use super::Lab;
use super::inventory;
use crate::config::Network;
use crate::hypervisor::PowerState;

/// Version of the `status --json` document; bumped when a field changes meaning.
pub const STATUS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub vcpu: u32,
    pub cpuset: String,
}

/// libvirt's state of the VM's domain, or `missing` when it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Other,
    Missing,
}

impl From<PowerState> for VmState {
    fn from(s: PowerState) -> Self {
        match s {
            PowerState::Running => VmState::Running,
            PowerState::Paused => VmState::Paused,
            PowerState::Shutoff => VmState::Shutoff,
            PowerState::Crashed => VmState::Crashed,
            PowerState::Other => VmState::Other,
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_value(self).expect("a plain enum");
        f.write_str(json.as_str().expect("serialized as a string"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    pub vcpus_current: Option<u32>,
    pub vcpus_max: Option<u32>,
    pub pins: Vec<Pin>,
    pub memory_actual_mib: Option<u64>,
    pub memory_max_mib: Option<u64>,
    /// Reported by the guest's balloon driver; absent until it reports, and
    /// while the balloon settles.
    pub memory_unused_mib: Option<u64>,
    /// The balloon is still moving to its target (just after a boot): the
    /// guest's last report predates it, so its figures do not add up yet.
    pub balloon_settling: bool,
    pub network: Network,
    /// SSH forwarded from `127.0.0.1` on the user network.
    pub ssh_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub image: String,
    pub image_version: String,
    /// A clone: the template of its image version it was restored from.
    pub template: Option<String>,
}

/// The `status --json` document.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub schema: u32,
    pub lab: String,
    pub vms: Vec<VmStatus>,
    /// What had to be recovered to answer (a lost state file…).
    pub notes: Vec<String>,
}

/// What each VM of the lab is doing. Reads, never writes: a lost state file
/// is rebuilt in memory from libvirt's marks.
pub fn status(lab: &Lab) -> Result<LabStatus> {
    let inv = inventory::take(lab)?;
    let mut vms = Vec::new();
    for vm in &inv.state.vms {
        let domain = inv.domain(lab, &vm.name);
        let user_net = vm.network == Network::User;
        let mut s = VmStatus {
            name: vm.name.clone(),
            state: domain.map_or(VmState::Missing, |d| d.state.into()),
            vcpus_current: None,
            vcpus_max: None,
            pins: Vec::new(),
            memory_actual_mib: None,
            memory_max_mib: None,
            memory_unused_mib: None,
            balloon_settling: false,
            network: vm.network,
            ssh_host: user_net.then(|| "127.0.0.1".to_string()),
            ssh_port: user_net.then_some(vm.ssh_port),
            image: vm.image.clone(),
            image_version: vm.image_version.clone(),
            template: vm.template.clone(),
        };
        if domain.is_some() {
            let r = lab.hv.resources(&vm.name)?;
            s.vcpus_current = Some(r.vcpus_current);
            s.vcpus_max = Some(r.vcpus_max);
            s.pins = r
                .pins
                .into_iter()
                .map(|(vcpu, cpuset)| Pin { vcpu, cpuset })
                .collect();
            s.memory_actual_mib = Some(r.memory_actual.mib().0);
            s.memory_max_mib = Some(r.memory_max.mib().0);
            s.balloon_settling = settling(r.memory_actual, r.memory_unused);
            s.memory_unused_mib = r
                .memory_unused
                .filter(|_| !s.balloon_settling)
                .map(|k| k.mib().0);
        }
        vms.push(s);
    }
    Ok(LabStatus {
        schema: STATUS_SCHEMA,
        lab: lab.name.clone(),
        vms,
        notes: inv.notes,
    })
}

/// More memory unused than the guest has: the report is from before the
/// balloon moved (at boot it shrinks from the maximum to the target).
fn settling(actual: crate::units::Kib, unused: Option<crate::units::Kib>) -> bool {
    unused.is_some_and(|u| u > actual)
}

/// A fixed-width table for people.
pub fn table(vms: &[VmStatus]) -> String {
    use crate::table::{Align::Left, Table};
    let dash = || "-".to_string();
    let opt = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let mut t = Table::new(&[
        ("NAME", Left),
        ("STATE", Left),
        ("VCPUS", Left),
        ("PINS", Left),
        ("MEM MiB", Left),
        ("UNUSED MiB", Left),
        ("SSH", Left),
    ]);
    for s in vms {
        let vcpus = match (s.vcpus_current, s.vcpus_max) {
            (Some(c), Some(m)) => format!("{c}/{m}"),
            _ => dash(),
        };
        let pins = if s.pins.is_empty() {
            dash()
        } else {
            s.pins
                .iter()
                .map(|p| format!("{}:{}", p.vcpu, p.cpuset))
                .collect::<Vec<_>>()
                .join(",")
        };
        let memory = match (s.memory_actual_mib, s.memory_max_mib) {
            (Some(a), Some(m)) => format!("{a}/{m}"),
            _ => dash(),
        };
        let unused = if s.balloon_settling {
            "settling".into()
        } else {
            opt(s.memory_unused_mib)
        };
        let ssh = match (&s.ssh_host, s.ssh_port) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => dash(),
        };
        t.row([
            s.name.clone(),
            s.state.to_string(),
            vcpus,
            pins,
            memory,
            unused,
            ssh,
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let running = VmStatus {
            name: "vm-1".into(),
            state: VmState::Running,
            vcpus_current: Some(1),
            vcpus_max: Some(2),
            pins: vec![Pin {
                vcpu: 0,
                cpuset: "1".into(),
            }],
            memory_actual_mib: Some(512),
            memory_max_mib: Some(1024),
            memory_unused_mib: Some(401),
            balloon_settling: false,
            network: Network::User,
            ssh_host: Some("127.0.0.1".into()),
            ssh_port: Some(40022),
            image: "vmlab-alpine".into(),
            image_version: "3f2a9c1b0d4e".into(),
            template: None,
        };
        let missing = VmStatus {
            name: "vm-10".into(),
            state: VmState::Missing,
            vcpus_current: None,
            vcpus_max: None,
            pins: vec![],
            memory_actual_mib: None,
            memory_max_mib: None,
            memory_unused_mib: None,
            balloon_settling: false,
            network: Network::Nat,
            ssh_host: None,
            ssh_port: None,
            image: "vmlab-alpine".into(),
            image_version: "3f2a9c1b0d4e".into(),
            template: None,
        };
        let booting = VmStatus {
            name: "vm-2".into(),
            memory_actual_mib: Some(909),
            memory_unused_mib: None,
            balloon_settling: true,
            ..running.clone()
        };
        insta::assert_snapshot!(table(&[running, booting, missing]), @r"
        NAME   STATE    VCPUS  PINS  MEM MiB   UNUSED MiB  SSH
        vm-1   running  1/2    0:1   512/1024  401         127.0.0.1:40022
        vm-2   running  1/2    0:1   909/1024  settling    127.0.0.1:40022
        vm-10  missing  -      -     -         -           -
        ");
    }

    #[test]
    fn unused_beyond_actual_is_a_balloon_still_settling() {
        use crate::units::Kib;
        assert!(settling(Kib(909 * 1024), Some(Kib(935 * 1024))));
        assert!(!settling(Kib(512 * 1024), Some(Kib(426 * 1024))));
        assert!(!settling(Kib(512 * 1024), None), "no report yet");
    }
}
