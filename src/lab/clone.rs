//! Clones: VMs restored from a template's saved memory instead of booted.
//!
//! libvirt refuses a new UUID in `virsh restore --xml` and
//! `save-image-define` (its ABI check compares UUIDs), so each clone
//! restores from its own copy of the template's save image, whose XML is
//! edited in place at the same length: name, UUID, vmlab's mark, disk, seed,
//! console log, clone channel and SSH port forward. The copy is restored
//! through libvirt, which then labels its files for QEMU and manages it like
//! any domain. Then the clone is told who it is over its clone channel (see
//! `templates/guest/clone.sh`) before anything reaches it over the network.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use super::domain_xml::xml_escape;
use super::save_image::{self, Edit};
use super::template::{Manifest, Template};
use crate::hypervisor::{Hypervisor, owner};

/// What a clone's copy of the save image says instead of the template's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneValues {
    pub name: String,
    pub uuid: String,
    /// The clone's whole `<vmlab:owner …/>` element.
    pub mark: String,
    pub overlay: String,
    pub seed: String,
    pub console_log: String,
    pub channel: String,
    pub ssh_port: u16,
}

/// The `-netdev` value of the user network, as `templates/domain.xml.j2` renders it.
fn netdev(ssh_port: u16) -> String {
    format!("user,id=vmlabnet0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22")
}

/// The same-length edits that turn the template's saved XML into the clone's.
pub fn edits(xml: &str, template: &Manifest, clone: &CloneValues) -> Result<Vec<Edit>> {
    let doc = roxmltree::Document::parse(xml).context("the template's saved XML does not parse")?;
    let root = doc.root_element();
    let mut edits = Vec::new();
    for (tag, old, new) in [
        ("name", &template.domain, &clone.name),
        ("uuid", &template.uuid, &clone.uuid),
    ] {
        let node = root
            .children()
            .find(|n| n.has_tag_name(tag) && n.text() == Some(old.as_str()))
            .with_context(|| format!("the template's saved XML has no <{tag}>{old}</{tag}>"))?;
        edits.push(Edit {
            span: node.range(),
            text: format!("<{tag}>{}</{tag}>", xml_escape(new)),
            what: format!("the {tag} `{new}`"),
        });
    }
    let mark = doc
        .descendants()
        .find(|n| {
            n.tag_name().namespace() == Some(owner::NAMESPACE) && n.tag_name().name() == "owner"
        })
        .context("the template's saved XML has no vmlab mark")?;
    edits.push(Edit {
        span: mark.range(),
        text: clone.mark.clone(),
        what: "vmlab's mark".into(),
    });
    let attributes = [
        ("file", &template.overlay, &clone.overlay, "disk"),
        ("file", &template.seed, &clone.seed, "seed"),
        (
            "file",
            &template.console_log,
            &clone.console_log,
            "console log",
        ),
        ("path", &template.channel, &clone.channel, "clone channel"),
        (
            "value",
            &netdev(template.ssh_port),
            &netdev(clone.ssh_port),
            "SSH port forward",
        ),
    ];
    for (attribute, old, new, what) in attributes {
        let nodes: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute(attribute) == Some(old.as_str()))
            .collect();
        if nodes.is_empty() {
            bail!("the template's saved XML does not name its {what} ({attribute}='{old}')");
        }
        for node in nodes {
            let text = &xml[node.range()];
            let (from, to) = (xml_escape(old), xml_escape(new));
            if !text.contains(&from) {
                bail!("the template's saved XML writes its {what} unexpectedly: {text}");
            }
            edits.push(Edit {
                span: node.range(),
                text: text.replacen(&from, &to, 1),
                what: format!("the {what} `{new}`"),
            });
        }
    }
    Ok(edits)
}

/// The `<vmlab:owner …/>` element of a domain XML vmlab rendered.
pub fn mark_element(domain_xml: &str) -> Result<String> {
    let doc = roxmltree::Document::parse(domain_xml).context("the domain XML does not parse")?;
    let mark = doc
        .descendants()
        .find(|n| {
            n.tag_name().namespace() == Some(owner::NAMESPACE) && n.tag_name().name() == "owner"
        })
        .context("the domain XML has no vmlab mark")?;
    Ok(domain_xml[mark.range()].to_string())
}

/// Restores the clone from `copy`, the template's save image with the
/// clone's values; the copy is removed afterwards (it holds a memory image).
pub fn restore(
    hv: &dyn Hypervisor,
    template: &Template,
    clone: &CloneValues,
    copy: &Path,
) -> Result<()> {
    save_image::write_edited_copy(&template.files.memory(), copy, |xml| {
        save_image::edit_same_length(xml, edits(xml, &template.manifest, clone)?)
    })?;
    let restored = hv.restore(copy);
    std::fs::remove_file(copy).ok();
    restored
}

/// The one line the clone script reads: its hostname, the host's time,
/// bytes for its RNG, its host key file (as `printf` escapes), the lab's key.
fn introduction(
    hostname: &str,
    epoch_s: u64,
    seed: &[u8],
    host_key: &[u8],
    authorized_key: &str,
) -> String {
    let escaped: String = host_key.iter().map(|b| format!("\\{b:03o}")).collect();
    format!(
        "vmlab-clone {hostname} {epoch_s} {} {escaped} {}\n",
        crate::download::digest::hex(seed),
        authorized_key.trim()
    )
}

/// Checks the clone script's answer.
fn check_answer(answer: &str) -> Result<()> {
    let words: Vec<&str> = answer.split_whitespace().collect();
    match words.as_slice() {
        ["vmlab-clone-ok", "0", "0"] => Ok(()),
        ["vmlab-clone-ok", "0", sshd] => {
            bail!("the clone's SSH server did not start again (status {sshd})")
        }
        ["vmlab-clone-ok", reseed, _] => {
            bail!("the clone could not reseed its random number generator (errno {reseed})")
        }
        _ => bail!("the clone answered {:?} on its channel", answer.trim()),
    }
}

/// Tells a just-restored clone who it is, over its channel (the guest runs
/// `templates/guest/clone.sh`); returns the public key of the host key it
/// now serves (`ssh-ed25519 AAAA…`), made here.
pub fn introduce(
    channel: &Path,
    hostname: &str,
    authorized_key: &str,
    deadline: Instant,
) -> Result<String> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading the host's /dev/urandom")?;
    let host_key = super::keys::new_host_key()?;
    let epoch_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        .round() as u64;
    let line = introduction(hostname, epoch_s, &seed, &host_key.dropbear, authorized_key);
    let mut stream = UnixStream::connect(channel)
        .with_context(|| format!("connecting to the clone channel {}", channel.display()))?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(std::time::Duration::from_millis(100));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))?;
    stream
        .write_all(line.as_bytes())
        .context("writing to the clone channel")?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| anyhow!("the clone did not answer on its channel ({e})"))?;
    check_answer(&answer)?;
    Ok(host_key.public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::domain_xml::{DomainSpec, render};

    /// libvirt's save XML, trimmed to what the edits look at, as libvirt
    /// formats it (double-quoted mark attributes, the log twice).
    fn saved_xml() -> String {
        r#"<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>vmlab-template-0123456789abcdef0123456789abcdef</name>
  <uuid>c527962f-15d5-4295-b50b-a332f739c828</uuid>
  <metadata>
    <vmlab:owner xmlns:vmlab="https://vmlab.dev/xmlns/owner/1" lab="" home="/h" room="................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................" template="img@v/q"/>
  </metadata>
  <devices>
    <disk type='file' device='disk'>
      <source file='/h/images/img/v/templates/q//////////////overlay.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/h/images/img/v/templates/q/////////////////seed.iso'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <serial type='pty'>
      <log file='/h/images/img/v/templates/q//////////////console.log' append='off'/>
      <target type='isa-serial' port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='/h/run/0123456789abcdef.sock'/>
      <target type='isa-serial' port='1'/>
    </serial>
    <console type='pty'>
      <log file='/h/images/img/v/templates/q//////////////console.log' append='off'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=vmlabnet0,hostfwd=tcp:127.0.0.1:41099-:22'/>
  </qemu:commandline>
</domain>"#
            .to_string()
    }

    fn manifest() -> Manifest {
        Manifest {
            format: 1,
            vmlab: "0.1.0".into(),
            guest_files: String::new(),
            qemu: "7.2.0".into(),
            libvirt: "9.0.0".into(),
            domain: "vmlab-template-0123456789abcdef0123456789abcdef".into(),
            uuid: "c527962f-15d5-4295-b50b-a332f739c828".into(),
            ssh_port: 41099,
            overlay: "/h/images/img/v/templates/q//////////////overlay.qcow2".into(),
            seed: "/h/images/img/v/templates/q/////////////////seed.iso".into(),
            console_log: "/h/images/img/v/templates/q//////////////console.log".into(),
            channel: "/h/run/0123456789abcdef.sock".into(),
            created: String::new(),
            made_in_s: 0.0,
        }
    }

    fn clone_values() -> CloneValues {
        CloneValues {
            name: "cl-2".into(),
            uuid: "9b1c3c41-5ab3-4c7e-9f0e-4d1cfa0e7c11".into(),
            mark: "<vmlab:owner xmlns:vmlab='https://vmlab.dev/xmlns/owner/1' lab='cl' home='/h' ssh_port='5022' template='q'/>".into(),
            overlay: "/h/labs/cl/vms/cl-2/overlay.qcow2".into(),
            seed: "/h/labs/cl/vms/cl-2/seed.iso".into(),
            console_log: "/h/labs/cl/vms/cl-2/console.log".into(),
            channel: "/h/run/fedcba9876543210.sock".into(),
            ssh_port: 5022,
        }
    }

    #[test]
    fn a_clones_xml_has_its_own_values_at_the_templates_length() {
        let xml = saved_xml();
        let edited =
            save_image::edit_same_length(&xml, edits(&xml, &manifest(), &clone_values()).unwrap())
                .unwrap();
        assert_eq!(edited.len(), xml.len());
        insta::assert_snapshot!(edited);
        let doc = roxmltree::Document::parse(&edited).unwrap();
        let mark = crate::hypervisor::Mark::parse(&mark_element(&edited).unwrap()).unwrap();
        assert_eq!((mark.lab.as_str(), mark.home.as_str()), ("cl", "/h"));
        let files: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("file"))
            .collect();
        assert_eq!(
            files,
            [
                "/h/labs/cl/vms/cl-2/overlay.qcow2",
                "/h/labs/cl/vms/cl-2/seed.iso",
                "/h/labs/cl/vms/cl-2/console.log",
                "/h/labs/cl/vms/cl-2/console.log"
            ]
        );
    }

    #[test]
    fn a_value_longer_than_the_templates_is_refused() {
        let xml = saved_xml();
        let long = CloneValues {
            overlay: format!("/h/labs/{}/vms/cl-2/overlay.qcow2", "l".repeat(40)),
            ..clone_values()
        };
        let err = save_image::edit_same_length(&xml, edits(&xml, &manifest(), &long).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the disk `/h/labs/llll"), "{err}");
        assert!(err.contains("does not fit in the saved XML"), "{err}");
        let missing = Manifest {
            seed: "/elsewhere/seed.iso".into(),
            ..manifest()
        };
        let err = edits(&xml, &missing, &clone_values())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the template's saved XML does not name its seed (file='/elsewhere/seed.iso')"
        );
    }

    #[test]
    fn the_port_forward_is_the_one_vmlab_renders() {
        let spec = DomainSpec {
            name: "vm-1".into(),
            uuid: None,
            domain_type: crate::hypervisor::DomainType::Qemu,
            lab: "l".into(),
            home: "/h".into(),
            mark: Default::default(),
            memory: crate::units::Kib(524288),
            max_memory: crate::units::Kib(1048576),
            vcpus: 1,
            max_vcpus: 2,
            kernel: None,
            initrd: None,
            cmdline: None,
            overlay: "/o".into(),
            seed: "/s".into(),
            console_log: "/c".into(),
            network: crate::config::Network::User,
            ssh_port: 40022,
            autodeflate: false,
            clone_channel: Some("/h/run/x.sock".into()),
        };
        let xml = render(&spec).unwrap();
        assert!(xml.contains(&format!("value='{}'", netdev(40022))), "{xml}");
        assert_eq!(
            mark_element(&xml).unwrap(),
            "<vmlab:owner xmlns:vmlab='https://vmlab.dev/xmlns/owner/1' lab='l' home='/h'/>"
        );
    }

    #[test]
    fn the_clone_script_reads_one_line_and_answers() {
        let line = introduction(
            "cl-2",
            1_700_000_000,
            &[0xab; 4],
            &[0, 11, 255],
            "ssh-ed25519 AAAA lab\n",
        );
        assert_eq!(
            line,
            "vmlab-clone cl-2 1700000000 abababab \\000\\013\\377 ssh-ed25519 AAAA lab\n"
        );
        // What the guest's `printf` makes of the escapes.
        let escaped = line.split(' ').nth(4).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf '{escaped}'")])
            .output()
            .unwrap();
        assert_eq!(out.stdout, [0, 11, 255]);
        check_answer("vmlab-clone-ok 0 0\n").unwrap();
        let cases = [
            ("vmlab-clone-ok 1 0", "could not reseed"),
            ("vmlab-clone-ok 0 1", "did not start again"),
            ("vmlab-clone-error unexpected line", "answered"),
            ("", "answered"),
        ];
        for (answer, expected) in cases {
            let err = check_answer(answer).unwrap_err().to_string();
            assert!(err.contains(expected), "{answer}: {err}");
        }
    }
}
