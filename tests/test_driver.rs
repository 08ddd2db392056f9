//! Lab verbs against libvirt's own `test:///` driver: real libvirt XML
//! parsing, metadata and lifecycle, no QEMU. Each test has its own node file
//! (private state per connection).

use std::path::Path;

use vmlab::config::{Network, Settings};
use vmlab::hypervisor::libvirt::Libvirt;
use vmlab::hypervisor::{Hypervisor, PowerState};
use vmlab::image::store::{self as image, Manifest};
use vmlab::lab::Lab;
use vmlab::lab::down::down;
use vmlab::lab::state::LabState;
use vmlab::lab::status::status;
use vmlab::lab::up::{Step, UpRequest, up};
use vmlab::paths::Home;

struct Fixture {
    dir: tempfile::TempDir,
    home: Home,
    hv: Libvirt,
}

/// A node with `memory_mib` of RAM and one running foreign domain per name.
fn fixture(memory_mib: u64, foreign: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let domains: String = foreign
        .iter()
        .map(|n| format!("<domain type='test'><name>{n}</name><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"))
        .collect();
    let node = format!(
        "<node><cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu><memory>{}</memory>{domains}</node>",
        memory_mib * 1024
    );
    let node_path = dir.path().join("node.xml");
    std::fs::write(&node_path, node).unwrap();
    let home = Home::new(dir.path().join("home"));
    install_tiny_image(&home);
    let hv = Libvirt::connect(&format!("test://{}", node_path.display())).unwrap();
    Fixture { dir, home, hv }
}

fn install_tiny_image(home: &Home) {
    let dir = home.image_dir("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("disk.qcow2"))
        .arg("64M")
        .status()
        .unwrap();
    assert!(status.success());
    let manifest = Manifest {
        name: "tiny".into(),
        disk: "disk.qcow2".into(),
        kernel: None,
        initrd: None,
        cmdline: None,
        source: "test".into(),
        ssh_user: "alpine".into(),
    };
    image::install(home, &manifest).unwrap();
}

fn request(count: u32, extra: Settings) -> UpRequest {
    let spec = Settings {
        image: Some("tiny".into()),
        ..extra
    }
    .resolve()
    .unwrap();
    UpRequest {
        spec,
        count,
        wait_ssh: false,
    }
}

fn no_progress(_: &str, _: &str) {}

fn names(hv: &Libvirt) -> Vec<String> {
    hv.domains().unwrap().into_iter().map(|d| d.name).collect()
}

fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let e = e.unwrap();
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[test]
fn up_defines_marked_domains_and_is_idempotent() {
    let f = fixture(8192, &["foreign"]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let first = up(&lab, &request(2, Settings::default()), &no_progress).unwrap();
    assert_eq!(
        first.iter().map(|o| o.step).collect::<Vec<_>>(),
        [Step::Create, Step::Create]
    );
    assert!(first.iter().all(|o| o.result.is_ok()));
    assert_eq!(names(&f.hv), ["foreign", "vm-1", "vm-2"]);
    for vm in ["vm-1", "vm-2"] {
        let d = f.hv.domain(vm).unwrap().unwrap();
        assert_eq!(d.state, PowerState::Running);
        assert_eq!(d.owner, Some(lab.owner()));
        let files = tree(&lab.paths.vm(vm).dir);
        assert_eq!(files, ["domain.xml", "overlay.qcow2", "seed.iso"]);
    }
    let state = LabState::load(&lab.paths).unwrap();
    assert_eq!(state.vms.len(), 2);
    assert!(state.vms.iter().all(|v| v.uuid.is_some()));
    assert_ne!(state.vms[0].ssh_port, state.vms[1].ssh_port);
    // The login user comes from the image (Alpine's cloud images use `alpine`).
    assert_eq!(lab.ssh_target(&state.vms[0]).user, "alpine");

    let again = up(&lab, &request(2, Settings::default()), &no_progress).unwrap();
    assert_eq!(
        again.iter().map(|o| o.step).collect::<Vec<_>>(),
        [Step::Check, Step::Check]
    );
    assert_eq!(
        LabState::load(&lab.paths).unwrap(),
        state,
        "second up changed the state"
    );

    let more = up(&lab, &request(3, Settings::default()), &no_progress).unwrap();
    assert_eq!(
        more.iter().map(|o| o.step).collect::<Vec<_>>(),
        [Step::Check, Step::Check, Step::Create]
    );
    assert_eq!(names(&f.hv), ["foreign", "vm-1", "vm-2", "vm-3"]);
}

#[test]
fn nat_vms_get_the_libvirt_network_and_no_port() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let extra = Settings {
        network: Some(Network::Nat),
        ..Default::default()
    };
    up(&lab, &request(1, extra), &no_progress).unwrap();
    let record = LabState::load(&lab.paths).unwrap().vms.remove(0);
    assert_eq!((record.network, record.ssh_port), (Network::Nat, 0));
    let xml = std::fs::read_to_string(lab.paths.vm("vm-1").domain_xml()).unwrap();
    assert!(
        xml.contains("<source network='default'/>") && !xml.contains("hostfwd"),
        "{xml}"
    );
    assert_eq!(status(&lab).unwrap()[0].ssh, None);
}

#[test]
fn stopped_vm_is_started_again_with_its_uuid() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up(&lab, &request(1, Settings::default()), &no_progress).unwrap();
    let uuid = f.hv.domain("vm-1").unwrap().unwrap().uuid;
    f.hv.destroy("vm-1").unwrap();
    assert_eq!(
        f.hv.domain("vm-1").unwrap().unwrap().state,
        PowerState::Shutoff
    );
    let outcome = up(&lab, &request(1, Settings::default()), &no_progress).unwrap();
    assert_eq!(outcome[0].step, Step::Start);
    let d = f.hv.domain("vm-1").unwrap().unwrap();
    assert_eq!((d.state, d.uuid), (PowerState::Running, uuid));
}

#[test]
fn status_reports_vcpus_and_memory() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let extra = Settings {
        memory: Some("256M".into()),
        max_memory: Some("768M".into()),
        vcpus: Some(1),
        max_vcpus: Some(3),
        ..Default::default()
    };
    up(&lab, &request(1, extra), &no_progress).unwrap();
    let vms = status(&lab).unwrap();
    assert_eq!(vms.len(), 1);
    let s = &vms[0];
    assert_eq!(s.state, "running");
    assert_eq!((s.vcpus_current, s.vcpus_max), (Some(1), Some(3)));
    assert_eq!(s.memory_max_mib, Some(768));
    assert_eq!(s.memory_actual_mib, Some(256));
    let port = LabState::load(&lab.paths).unwrap().vms[0].ssh_port;
    assert_eq!(s.ssh.as_deref(), Some(format!("127.0.0.1:{port}").as_str()));
}

#[test]
fn foreign_name_is_refused_before_anything_is_created() {
    let f = fixture(8192, &["vm-2"]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let err = up(&lab, &request(3, Settings::default()), &no_progress)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "domain name(s) `vm-2` already taken by VMs vmlab did not create; choose another prefix with --prefix"
    );
    assert_eq!(names(&f.hv), ["vm-2"]);
    assert_eq!(
        f.hv.domain("vm-2").unwrap().unwrap().state,
        PowerState::Running
    );
    assert!(
        !lab.paths.dir.exists(),
        "refused up left {}",
        lab.paths.dir.display()
    );
}

#[test]
fn memory_overcommit_is_refused_before_anything_is_created() {
    let f = fixture(2048, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let err = up(
        &lab,
        &request(
            3,
            Settings {
                memory: Some("512M".into()),
                ..Default::default()
            },
        ),
        &no_progress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("3 × 512 MiB = 1536 MiB does not fit: the host has 2048 MiB free"),
        "{err}"
    );
    assert!(names(&f.hv).is_empty());
    assert!(!lab.paths.dir.exists());
}

#[test]
fn a_stopped_vm_counts_with_its_own_memory() {
    let f = fixture(2048, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let big = Settings {
        memory: Some("1G".into()),
        ..Default::default()
    };
    up(&lab, &request(1, big), &no_progress).unwrap();
    f.hv.destroy("vm-1").unwrap();
    // Restarting vm-1 (1024 MiB) and adding vm-2 (512 MiB) leaves under the reserve.
    let err = up(&lab, &request(2, Settings::default()), &no_progress)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("1024 + 512 MiB = 1536 MiB does not fit: the host has 2048 MiB free"),
        "{err}"
    );
    assert_eq!(
        f.hv.domain("vm-1").unwrap().unwrap().state,
        PowerState::Shutoff
    );
    assert_eq!(names(&f.hv), ["vm-1"]);
}

#[test]
fn missing_image_is_refused_before_anything_is_created() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let req = UpRequest {
        spec: Settings {
            image: Some("nope".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap(),
        count: 1,
        wait_ssh: false,
    };
    let err = up(&lab, &req, &no_progress).unwrap_err().to_string();
    assert!(err.starts_with("image `nope` is not installed"), "{err}");
    assert!(names(&f.hv).is_empty());
    assert!(!lab.paths.dir.exists());
}

#[test]
fn down_removes_only_this_labs_vms_and_files() {
    let f = fixture(8192, &["foreign"]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let other = Lab::new(&f.hv, &f.home, "other");
    up(&lab, &request(2, Settings::default()), &no_progress).unwrap();
    up(
        &other,
        &request(
            1,
            Settings {
                prefix: Some("o".into()),
                ..Default::default()
            },
        ),
        &no_progress,
    )
    .unwrap();

    let err = down(&lab, &["foreign".into()]).unwrap_err().to_string();
    assert_eq!(
        err,
        "`foreign` was not created by this lab; vmlab leaves it alone"
    );
    let err = down(&lab, &["o-1".into()]).unwrap_err().to_string();
    assert_eq!(
        err,
        "`o-1` was not created by this lab; vmlab leaves it alone"
    );
    let err = down(&lab, &["vm-9".into()]).unwrap_err().to_string();
    assert_eq!(
        err,
        "lab `default` has no VM `vm-9`; `vmlab status` lists them"
    );
    assert_eq!(
        names(&f.hv),
        ["foreign", "o-1", "vm-1", "vm-2"],
        "a refused down touched something"
    );

    assert_eq!(down(&lab, &["vm-2".into()]).unwrap(), ["vm-2"]);
    assert_eq!(names(&f.hv), ["foreign", "o-1", "vm-1"]);
    assert!(!lab.paths.vm("vm-2").dir.exists());
    assert!(lab.paths.dir.exists(), "lab still has vm-1");

    assert_eq!(down(&lab, &[]).unwrap(), ["vm-1"]);
    assert_eq!(names(&f.hv), ["foreign", "o-1"]);
    assert!(!lab.paths.dir.exists(), "down left the lab directory");
    assert!(
        f.home.image_dir("tiny").join("disk.qcow2").exists(),
        "down must keep the base image"
    );
    assert_eq!(
        f.hv.domain("foreign").unwrap().unwrap().state,
        PowerState::Running
    );
    assert!(
        down(&lab, &[]).unwrap().is_empty(),
        "down of an empty lab is a no-op"
    );
    drop(f.dir);
}

#[test]
fn down_also_finds_marked_domains_missing_from_the_state() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up(&lab, &request(2, Settings::default()), &no_progress).unwrap();
    // As after a crash between define and saving the state.
    let mut state = LabState::load(&lab.paths).unwrap();
    state.remove("vm-2");
    state.save(&lab.paths).unwrap();
    assert_eq!(down(&lab, &[]).unwrap(), ["vm-1", "vm-2"]);
    assert!(names(&f.hv).is_empty());
}
