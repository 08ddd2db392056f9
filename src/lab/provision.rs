//! Making one VM real: its overlay and seed, its domain XML and definition,
//! its boot and its SSH. `up` runs these for many VMs at once; each step only
//! does what is missing, so running it again after any interruption converges.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::clone::{self, CloneValues};
use super::state::VmRecord;
use super::template::{self, Template, TemplateFiles};
use super::{Lab, domain_xml, overlay, seed};
use crate::config::Network;
use crate::guest::ssh::{Guest, HostKeyChanged};
use crate::hypervisor::DomainType;
use crate::image::store::{self as image, Image};

/// What every VM of one `up` shares.
pub struct Provisioner<'a> {
    pub lab: &'a Lab<'a>,
    pub domain_type: DomainType,
    pub prefix: &'a str,
    pub pubkey: &'a str,
    pub ssh_timeout: Duration,
}

/// QEMU could not bind the VM's SSH port (another program took it).
#[derive(Debug)]
pub struct PortTaken(pub u16);

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port 127.0.0.1:{} is taken by another program", self.0)
    }
}

impl std::error::Error for PortTaken {}

impl Provisioner<'_> {
    /// The image version the VM's overlay is backed by.
    pub fn image_of(&self, record: &VmRecord) -> Result<Image> {
        image::load_version(self.lab.home, &record.image, &record.image_version).with_context(
            || {
                format!(
                    "{} was created from image `{}@{}`, which is gone; recreate it with `vmlab down {}` and `vmlab up`",
                    record.name, record.image, record.image_version, record.name
                )
            },
        )
    }

    /// Creates the VM's overlay (on its template's disk for a clone) and
    /// seed where they are missing; returns which ones it made.
    pub fn ensure_files(&self, record: &VmRecord) -> Result<Vec<&'static str>> {
        let vm = self.lab.paths.vm(&record.name);
        crate::files::create_dir_traversable(&vm.dir)?;
        let mut made = Vec::new();
        if !vm.overlay().exists() {
            let image = self.image_of(record)?;
            let backing = match &record.template {
                Some(key) => TemplateFiles::of(&image, key).overlay(),
                None => image.disk(),
            };
            overlay::create(&backing, &vm.overlay())?;
            // A new disk is a new machine with a new host key: pinned anew.
            remove_file_if_present(&vm.host_key())?;
            made.push("disk");
        }
        if !vm.seed().exists() {
            seed::write(
                &vm.seed(),
                &format!("vmlab-{}-{}", self.lab.name, record.name),
                &record.name,
                self.pubkey,
            )?;
            made.push("seed");
        }
        Ok(made)
    }

    /// Renders and defines the domain; returns its UUID.
    pub fn define(&self, record: &VmRecord) -> Result<String> {
        let image = self.image_of(record)?;
        let vm = self.lab.paths.vm(&record.name);
        let net = match record.network {
            Network::User => "vmlab.net=user",
            Network::Nat => "vmlab.net=dhcp",
        };
        let mut mark = record.mark_attrs();
        mark.insert("prefix".into(), self.prefix.to_string());
        let xml = domain_xml::render(&domain_xml::DomainSpec {
            name: record.name.clone(),
            uuid: record.uuid.clone(),
            domain_type: self.domain_type,
            lab: self.lab.name.clone(),
            home: self.lab.home.root().display().to_string(),
            mark,
            memory: record.memory.kib(),
            max_memory: record.max_memory.kib(),
            vcpus: record.vcpus,
            max_vcpus: record.max_vcpus,
            kernel: image.kernel(),
            initrd: image.initrd(),
            cmdline: image
                .manifest
                .cmdline
                .as_ref()
                .map(|c| format!("{c} {net}")),
            overlay: vm.overlay(),
            seed: vm.seed(),
            console_log: vm.console(),
            network: record.network,
            ssh_port: record.ssh_port,
            autodeflate: record.autodeflate,
            clone_channel: record.template.as_ref().map(|_| self.channel(record)),
        })?;
        crate::files::write_atomic(&vm.domain_xml(), xml.as_bytes())?;
        self.lab
            .hv
            .define(&xml)
            .with_context(|| format!("defining {}", record.name))
    }

    /// Starts the domain; a taken SSH port is a [`PortTaken`] error.
    pub fn start(&self, record: &VmRecord) -> Result<()> {
        self.lab
            .hv
            .start(&record.name)
            .map_err(|e| qemu_start_error(e, record.ssh_port))
    }

    /// A clone's channel socket (see [`template::channel`]).
    fn channel(&self, record: &VmRecord) -> PathBuf {
        template::channel(self.lab.home, &format!("{}/{}", self.lab.name, record.name))
    }

    /// Restores a defined clone from `template`'s saved memory (its own copy,
    /// with its values); a taken SSH port is a [`PortTaken`] error.
    pub fn restore(&self, record: &VmRecord, template: &Template) -> Result<()> {
        let vm = self.lab.paths.vm(&record.name);
        let rendered = std::fs::read_to_string(vm.domain_xml())
            .with_context(|| format!("reading {}", vm.domain_xml().display()))?;
        let path = |p: PathBuf| p.display().to_string();
        let values = CloneValues {
            name: record.name.clone(),
            uuid: record
                .uuid
                .clone()
                .with_context(|| format!("{} is not defined yet", record.name))?,
            mark: clone::mark_element(&rendered)?,
            overlay: path(vm.overlay()),
            seed: path(vm.seed()),
            console_log: path(vm.console()),
            channel: path(self.channel(record)),
            ssh_port: record.ssh_port,
        };
        clone::restore(self.lab.hv, template, &values, &vm.dir.join("memory.save"))
            .map_err(|e| qemu_start_error(e, record.ssh_port))
    }

    /// Tells a restored clone who it is and pins the host key it made.
    pub fn introduce(&self, record: &VmRecord) -> Result<()> {
        let deadline = Instant::now() + self.ssh_timeout;
        let host_key = clone::introduce(&self.channel(record), &record.name, self.pubkey, deadline)
            .with_context(|| format!("introducing clone {}", record.name))?;
        let pin = self.lab.paths.vm(&record.name).host_key();
        crate::files::write_atomic(
            &pin,
            format!("[127.0.0.1]:{} {host_key}\n", record.ssh_port).as_bytes(),
        )
    }

    /// Waits until the guest runs a command over SSH, within the timeout.
    pub fn wait_for_ssh(&self, record: &VmRecord) -> Result<()> {
        let target = self.lab.ssh_target(record);
        let deadline = Instant::now() + self.ssh_timeout;
        Guest::wait_ready(&target, deadline).map(|_| ()).map_err(|e| {
            if e.downcast_ref::<HostKeyChanged>().is_some() {
                return e;
            }
            anyhow!(
                "{} did not answer SSH on {} within {} s ({e:#}); last console lines:\n{}\nrun `vmlab up` again to retry, or see `vmlab console {}`",
                record.name,
                target.addr,
                self.ssh_timeout.as_secs(),
                self.lab.console_tail(&record.name, 10),
                record.name
            )
        })
    }

    /// Undoes a failed creation: the domain (only if ours) and its files.
    pub fn discard(&self, name: &str) {
        if let Ok(Some(d)) = self.lab.hv.domain(name)
            && self.lab.owns(&d)
        {
            self.lab.hv.destroy(name).ok();
            self.lab.hv.undefine(name).ok();
        }
        std::fs::remove_dir_all(self.lab.paths.vm(name).dir).ok();
    }
}

pub(super) fn remove_file_if_present(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What a failed QEMU start (or restore) means for the user.
fn qemu_start_error(e: anyhow::Error, ssh_port: u16) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Could not set up host forwarding rule") {
        anyhow::Error::new(PortTaken(ssh_port))
    } else if text.contains("Cannot access storage file") && text.contains("Permission denied") {
        e.context(crate::paths::REACH_HOME)
    } else {
        e
    }
}

/// Distinct free ports on 127.0.0.1, all held until every one is chosen.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port on 127.0.0.1")
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Whether nothing listens on `127.0.0.1:port` now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_a_taken_one_is_seen() {
        let ports = free_ports(5).unwrap();
        let unique: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 5);
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!port_is_free(port));
        drop(held);
        assert!(port_is_free(port));
    }
}
