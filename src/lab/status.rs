//! `vmlab status`: what each VM of the lab is doing, as a table or JSON.

use anyhow::Result;
use serde::Serialize;

use super::Lab;
use super::state::LabState;
use crate::config::Network;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pin {
    pub vcpu: u32,
    pub cpuset: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmStatus {
    pub name: String,
    /// libvirt's state, or `missing` when the domain is gone.
    pub state: String,
    pub vcpus_current: Option<u32>,
    pub vcpus_max: Option<u32>,
    pub pins: Vec<Pin>,
    pub memory_actual_mib: Option<u64>,
    pub memory_max_mib: Option<u64>,
    /// Reported by the guest's balloon driver; absent until it reports.
    pub memory_unused_mib: Option<u64>,
    /// `127.0.0.1:PORT` on the user network.
    pub ssh: Option<String>,
    pub image: String,
}

pub fn status(lab: &Lab) -> Result<Vec<VmStatus>> {
    let state = LabState::load(&lab.paths)?;
    let mut out = Vec::new();
    for vm in &state.vms {
        let domain = lab
            .hv
            .domain(&vm.name)?
            .filter(|d| d.owner == Some(lab.owner()));
        let mut s = VmStatus {
            name: vm.name.clone(),
            state: domain
                .as_ref()
                .map_or("missing".into(), |d| d.state.to_string()),
            vcpus_current: None,
            vcpus_max: None,
            pins: Vec::new(),
            memory_actual_mib: None,
            memory_max_mib: None,
            memory_unused_mib: None,
            ssh: (vm.network == Network::User).then(|| format!("127.0.0.1:{}", vm.ssh_port)),
            image: vm.image.clone(),
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
            s.memory_actual_mib = Some(r.memory_actual_kib / 1024);
            s.memory_max_mib = Some(r.memory_max_kib / 1024);
            s.memory_unused_mib = r.memory_unused_kib.map(|k| k / 1024);
        }
        out.push(s);
    }
    Ok(out)
}

/// A fixed-width table for people.
pub fn table(vms: &[VmStatus]) -> String {
    let dash = || "-".to_string();
    let opt = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let rows: Vec<[String; 6]> = vms
        .iter()
        .map(|s| {
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
            [
                s.name.clone(),
                s.state.clone(),
                vcpus,
                pins,
                memory,
                opt(s.memory_unused_mib),
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "VCPUS", "PINS", "MEM MiB", "UNUSED MiB"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String], ssh: &str| {
        let mut l: String = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}  "))
            .collect();
        l.push_str(ssh);
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from), "SSH");
    for (row, s) in rows.iter().zip(vms) {
        out.push_str(&line(row, s.ssh.as_deref().unwrap_or("-")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let running = VmStatus {
            name: "vm-1".into(),
            state: "running".into(),
            vcpus_current: Some(1),
            vcpus_max: Some(2),
            pins: vec![Pin {
                vcpu: 0,
                cpuset: "1".into(),
            }],
            memory_actual_mib: Some(512),
            memory_max_mib: Some(1024),
            memory_unused_mib: Some(401),
            ssh: Some("127.0.0.1:40022".into()),
            image: "vmlab-alpine".into(),
        };
        let missing = VmStatus {
            name: "vm-10".into(),
            state: "missing".into(),
            vcpus_current: None,
            vcpus_max: None,
            pins: vec![],
            memory_actual_mib: None,
            memory_max_mib: None,
            memory_unused_mib: None,
            ssh: None,
            image: "vmlab-alpine".into(),
        };
        insta::assert_snapshot!(table(&[running, missing]), @r"
        NAME   STATE    VCPUS  PINS  MEM MiB   UNUSED MiB  SSH
        vm-1   running  1/2    0:1   512/1024  401         127.0.0.1:40022
        vm-10  missing  -      -     -         -           -
        ");
    }
}
