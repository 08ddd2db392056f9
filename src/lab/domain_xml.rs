//! Domain XML rendered from `templates/domain.xml.j2`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::config::Network;
use crate::hypervisor::{DomainType, owner};
use crate::units::Kib;

const TEMPLATE: &str = include_str!("../../templates/domain.xml.j2");

/// Everything the template needs; built by the provisioner, rendered here.
#[derive(Debug, Clone, Serialize)]
pub struct DomainSpec {
    pub name: String,
    /// Kept across redefinitions: libvirt refuses a same-named domain with a new UUID.
    pub uuid: Option<String>,
    pub domain_type: DomainType,
    pub lab: String,
    pub home: String,
    /// The rest of vmlab's mark: the VM's settings (see `VmRecord::mark_attrs`).
    pub mark: BTreeMap<String, String>,
    pub memory: Kib,
    pub max_memory: Kib,
    pub vcpus: u32,
    pub max_vcpus: u32,
    /// Direct boot; `None` boots the disk's own boot loader.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub overlay: PathBuf,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    pub network: Network,
    /// Host port forwarded from 127.0.0.1 to the guest's SSH (user network only).
    pub ssh_port: u16,
    /// The balloon deflates when the guest is about to OOM-kill.
    pub autodeflate: bool,
    /// Templates and their clones: a unix socket on the guest's second serial
    /// port, where a restored clone is told who it is.
    pub clone_channel: Option<PathBuf>,
}

pub fn render(spec: &DomainSpec) -> Result<String> {
    let mut env = Environment::new();
    // Every value is XML-escaped: names and paths cannot break out of the markup.
    env.set_formatter(|out, _state, value| {
        out.write_str(&xml_escape(&value.to_string()))
            .map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
    });
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("domain.xml", TEMPLATE)
        .context("domain template is invalid")?;
    let ctx = minijinja::context! { owner_ns => owner::NAMESPACE, ..minijinja::Value::from(minijinja::value::Serde(spec)) };
    env.get_template("domain.xml")?
        .render(ctx)
        .context("rendering domain XML")
}

/// The five XML special characters as entities (as libvirt writes them too).
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: Network) -> DomainSpec {
        DomainSpec {
            name: "vm-1".into(),
            uuid: None,
            domain_type: DomainType::Qemu,
            lab: "default".into(),
            home: "/home/u/.local/share/vmlab".into(),
            mark: BTreeMap::from([
                ("image".into(), "vmlab-alpine".into()),
                ("ssh_port".into(), "40022".into()),
            ]),
            memory: Kib(512 * 1024),
            max_memory: Kib(2048 * 1024),
            vcpus: 1,
            max_vcpus: 2,
            kernel: Some("/img/vmlinuz".into()),
            initrd: Some("/img/initrd.img".into()),
            cmdline: Some("console=ttyS0 root=/dev/vda rw quiet vmlab.net=user".into()),
            overlay: "/lab/vms/vm-1/overlay.qcow2".into(),
            seed: "/lab/vms/vm-1/seed.iso".into(),
            console_log: "/lab/vms/vm-1/console.log".into(),
            network,
            ssh_port: 40022,
            autodeflate: false,
            clone_channel: None,
        }
    }

    #[test]
    fn user_network_domain() {
        insta::assert_snapshot!(render(&spec(Network::User)).unwrap());
    }

    #[test]
    fn nat_network_domain_booting_from_disk() {
        let mut s = spec(Network::Nat);
        s.kernel = None;
        s.initrd = None;
        s.cmdline = None;
        s.uuid = Some("9b1c3c41-5ab3-4c7e-9f0e-4d1cfa0e7c11".into());
        s.domain_type = DomainType::Kvm;
        insta::assert_snapshot!(render(&s).unwrap());
    }

    #[test]
    fn clone_domain_has_the_clone_channel() {
        let mut s = spec(Network::User);
        s.name = "cl-1".into();
        s.uuid = Some("9b1c3c41-5ab3-4c7e-9f0e-4d1cfa0e7c11".into());
        s.clone_channel = Some("/h/run/0123456789abcdef.sock".into());
        insta::assert_snapshot!(render(&s).unwrap());
    }

    #[test]
    fn names_and_paths_are_escaped() {
        let mut s = spec(Network::User);
        s.home = "/tmp/a'b<c>&d".into();
        let xml = render(&s).unwrap();
        let doc = roxmltree::Document::parse(&xml).expect("rendered XML parses");
        let owner = doc.descendants().find(|n| n.has_tag_name("owner")).unwrap();
        assert_eq!(owner.attribute("home"), Some("/tmp/a'b<c>&d"));
    }

    #[test]
    fn autodeflate_is_asked_for_only_when_chosen() {
        let mut s = spec(Network::User);
        assert!(render(&s).unwrap().contains("<memballoon model='virtio'>"));
        s.autodeflate = true;
        assert!(
            render(&s)
                .unwrap()
                .contains("<memballoon model='virtio' autodeflate='on'>")
        );
    }

    #[test]
    fn qemu_runs_as_libvirts_own_user() {
        // No static DAC label: libvirt's default (its unprivileged user, with
        // relabelling) applies, so QEMU never runs as the caller, even root.
        let xml = render(&spec(Network::User)).unwrap();
        assert!(!xml.contains("seclabel"), "{xml}");
    }
}
