//! The lab: per-VM overlays and seeds, domain XML, lab state, and the verbs
//! that act on them (`up`, `down`, `status`).

pub mod accel;
pub mod clone;
pub mod domain_xml;
pub mod down;
pub mod inventory;
pub mod keys;
pub mod lock;
pub mod overlay;
pub mod provision;
pub mod reseed;
pub mod reset;
pub mod save_image;
pub mod seed;
pub mod state;
pub mod status;
pub mod template;
pub mod up;

use std::net::{Ipv4Addr, SocketAddr};

use crate::guest::ssh::SshTarget;
use crate::hypervisor::{DomainInfo, Hypervisor};
use crate::paths::{Home, LabPaths};
use state::VmRecord;

/// One lab of one vmlab home, on one hypervisor connection.
pub struct Lab<'a> {
    pub hv: &'a dyn Hypervisor,
    pub home: &'a Home,
    pub name: String,
    pub paths: LabPaths,
}

impl<'a> Lab<'a> {
    pub fn new(hv: &'a dyn Hypervisor, home: &'a Home, name: &str) -> Self {
        Self {
            hv,
            home,
            name: name.to_string(),
            paths: home.lab(name),
        }
    }

    /// Whether this lab created `domain`: its mark names this lab and this
    /// home (however the home was spelled when the mark was written).
    pub fn owns(&self, domain: &DomainInfo) -> bool {
        domain
            .mark
            .as_ref()
            .is_some_and(|m| m.lab == self.name && self.home.is(&m.home))
    }

    pub fn ssh_target(&self, vm: &VmRecord) -> SshTarget {
        ssh_target(&self.paths, vm)
    }

    /// The last `n` lines of a VM's serial console.
    pub fn console_tail(&self, vm: &str, n: usize) -> String {
        let text = std::fs::read_to_string(self.paths.vm(vm).console()).unwrap_or_default();
        last_lines(&text, Some(n))
    }
}

/// How to reach a VM's SSH; needs no libvirt (`vmlab ssh` works while
/// libvirtd is down).
pub fn ssh_target(paths: &LabPaths, vm: &VmRecord) -> SshTarget {
    SshTarget {
        vm: vm.name.clone(),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, vm.ssh_port)),
        user: vm.ssh_user.clone(),
        key: paths.ssh_key(),
        known_hosts: paths.vm(&vm.name).host_key(),
    }
}

/// The last `n` lines of `text` (all of them for `None`), without a final newline.
pub fn last_lines(text: &str, n: Option<usize>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = n.map_or(0, |n| lines.len().saturating_sub(n));
    lines[skip..].join("\n")
}
