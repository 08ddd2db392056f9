//! Lab verbs against libvirt's own `test:///` driver: real libvirt XML
//! parsing, metadata and lifecycle, no QEMU. Each test has its own node file
//! (private state per connection).

use std::path::Path;
use std::time::{Duration, Instant};

use vmlab::config::{Network, Settings};
use vmlab::hypervisor::libvirt::Libvirt;
use vmlab::hypervisor::{Hypervisor, PowerState};
use vmlab::image::store::{self as image, Image, Manifest};
use vmlab::lab::Lab;
use vmlab::lab::down::down;
use vmlab::lab::lock;
use vmlab::lab::state::LabState;
use vmlab::lab::status::{VmState, status};
use vmlab::lab::up::{Stage, Step, UpReport, UpRequest, up};
use vmlab::metrics::row::MetricsRow;
use vmlab::metrics::run::CsvTail;
use vmlab::paths::Home;
use vmlab::units::Mib;

struct Fixture {
    dir: tempfile::TempDir,
    home: Home,
    hv: Libvirt,
}

/// A node with `memory_mib` of RAM and one running foreign domain per name.
fn fixture(memory_mib: u64, foreign: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let domains: String = foreign.iter().map(|n| foreign_domain(n)).collect();
    let node = format!(
        "<node><cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu><memory>{}</memory>{domains}</node>",
        memory_mib * 1024
    );
    let node_path = dir.path().join("node.xml");
    std::fs::write(&node_path, node).unwrap();
    let home = Home::new(dir.path().join("home"));
    install_tiny_image(&home, "64M");
    let hv = Libvirt::connect(&format!("test://{}", node_path.display())).unwrap();
    Fixture { dir, home, hv }
}

/// A running domain vmlab did not make.
fn foreign_domain(name: &str) -> String {
    format!(
        "<domain type='test'><name>{name}</name><memory>262144</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
}

/// A new version of the image `tiny` (a blank qcow2 of `size`).
fn install_tiny_image(home: &Home, size: &str) -> Image {
    let staging = image::stage(home, "tiny").unwrap();
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(staging.dir().join("disk.qcow2"))
        .arg(size)
        .status()
        .unwrap();
    assert!(status.success());
    staging
        .install(&Manifest {
            name: "tiny".into(),
            disk: "disk.qcow2".into(),
            kernel: None,
            initrd: None,
            cmdline: None,
            source: "test".into(),
            ssh_user: "alpine".into(),
        })
        .unwrap()
}

fn request(count: u32, extra: Settings) -> UpRequest {
    let spec = Settings {
        image: Some("tiny".into()),
        ..extra
    }
    .over(Settings::default())
    .resolve()
    .unwrap();
    UpRequest {
        spec,
        count,
        wait_ssh: false,
    }
}

fn no_progress(_: &str, _: Stage) {}

fn up_ok(lab: &Lab, count: u32, extra: Settings) -> UpReport {
    let report = up(lab, &request(count, extra), &no_progress).unwrap();
    for o in &report.outcomes {
        assert!(o.result.is_ok(), "{}: {:?}", o.name, o.result);
    }
    report
}

fn steps(report: &UpReport) -> Vec<Step> {
    report.outcomes.iter().map(|o| o.step).collect()
}

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
    let first = up_ok(&lab, 2, Settings::default());
    assert_eq!(steps(&first), [Step::Create, Step::Create]);
    assert_eq!(names(&f.hv), ["foreign", "vm-1", "vm-2"]);
    for vm in ["vm-1", "vm-2"] {
        let d = f.hv.domain(vm).unwrap().unwrap();
        assert_eq!(d.state, PowerState::Running);
        assert!(lab.owns(&d));
        let files = tree(&lab.paths.vm(vm).dir);
        assert_eq!(files, ["domain.xml", "overlay.qcow2", "seed.iso"]);
    }
    let state = LabState::load(&lab.paths).unwrap();
    assert_eq!(state.vms.len(), 2);
    assert!(state.vms.iter().all(|v| v.uuid.is_some()));
    assert_ne!(state.vms[0].ssh_port, state.vms[1].ssh_port);
    // The login user comes from the image (Alpine's cloud images use `alpine`).
    assert_eq!(lab.ssh_target(&state.vms[0]).user, "alpine");

    let again = up_ok(&lab, 2, Settings::default());
    assert_eq!(steps(&again), [Step::Check, Step::Check]);
    assert_eq!(
        LabState::load(&lab.paths).unwrap(),
        state,
        "second up changed the state"
    );

    let more = up_ok(&lab, 3, Settings::default());
    assert_eq!(steps(&more), [Step::Check, Step::Check, Step::Create]);
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
    up_ok(&lab, 1, extra);
    let record = LabState::load(&lab.paths).unwrap().vms.remove(0);
    assert_eq!((record.network, record.ssh_port), (Network::Nat, 0));
    let xml = std::fs::read_to_string(lab.paths.vm("vm-1").domain_xml()).unwrap();
    assert!(
        xml.contains("<source network='default'/>") && !xml.contains("hostfwd"),
        "{xml}"
    );
    assert_eq!(status(&lab).unwrap().vms[0].ssh_port, None);
}

#[test]
fn stopped_vm_is_started_again_with_its_uuid() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let uuid = f.hv.domain("vm-1").unwrap().unwrap().uuid;
    f.hv.destroy("vm-1").unwrap();
    assert_eq!(
        f.hv.domain("vm-1").unwrap().unwrap().state,
        PowerState::Shutoff
    );
    let outcome = up_ok(&lab, 1, Settings::default());
    assert_eq!(steps(&outcome), [Step::Start]);
    let d = f.hv.domain("vm-1").unwrap().unwrap();
    assert_eq!((d.state, d.uuid), (PowerState::Running, uuid));
}

#[test]
fn status_reports_vcpus_and_memory() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let extra = Settings {
        memory: Some(Mib(256)),
        max_memory: Some(Mib(768)),
        vcpus: Some(1),
        max_vcpus: Some(3),
        ..Default::default()
    };
    up_ok(&lab, 1, extra);
    let vms = status(&lab).unwrap().vms;
    assert_eq!(vms.len(), 1);
    let s = &vms[0];
    assert_eq!(s.state, VmState::Running);
    assert_eq!((s.vcpus_current, s.vcpus_max), (Some(1), Some(3)));
    assert_eq!(s.memory_max_mib, Some(768));
    assert_eq!(s.memory_actual_mib, Some(256));
    let port = LabState::load(&lab.paths).unwrap().vms[0].ssh_port;
    assert_eq!(
        (s.ssh_host.as_deref(), s.ssh_port),
        (Some("127.0.0.1"), Some(port))
    );
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
                memory: Some(Mib(512)),
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
        memory: Some(Mib(1024)),
        ..Default::default()
    };
    up_ok(&lab, 1, big);
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
        .over(Settings::default())
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
    up_ok(&lab, 2, Settings::default());
    up_ok(
        &other,
        1,
        Settings {
            prefix: Some("o".into()),
            ..Default::default()
        },
    );

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

    assert_eq!(down(&lab, &["vm-2".into()]).unwrap().removed, ["vm-2"]);
    assert_eq!(names(&f.hv), ["foreign", "o-1", "vm-1"]);
    assert!(!lab.paths.vm("vm-2").dir.exists());
    assert!(lab.paths.dir.exists(), "lab still has vm-1");

    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1"]);
    assert_eq!(names(&f.hv), ["foreign", "o-1"]);
    assert!(!lab.paths.dir.exists(), "down left the lab directory");
    assert!(
        image::load(&f.home, "tiny").unwrap().disk().exists(),
        "down must keep the base image"
    );
    assert_eq!(
        f.hv.domain("foreign").unwrap().unwrap().state,
        PowerState::Running
    );
    assert!(
        down(&lab, &[]).unwrap().removed.is_empty(),
        "down of an empty lab is a no-op"
    );
    drop(f.dir);
}

#[test]
fn down_also_finds_marked_domains_missing_from_the_state() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    // As after a crash between define and saving the state.
    let mut state = LabState::load(&lab.paths).unwrap();
    state.remove("vm-2");
    state.save(&lab.paths).unwrap();
    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1", "vm-2"]);
    assert!(names(&f.hv).is_empty());
}

#[test]
fn lost_state_never_orphans_the_rest_of_the_lab() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    std::fs::remove_file(lab.paths.state()).unwrap();

    assert_eq!(down(&lab, &["vm-1".into()]).unwrap().removed, ["vm-1"]);
    assert_eq!(names(&f.hv), ["vm-2"]);
    assert!(
        lab.paths.vm("vm-2").overlay().exists() && lab.paths.ssh_key().exists(),
        "down vm-1 deleted files vm-2 still uses"
    );
    let vms = status(&lab).unwrap().vms;
    assert_eq!(vms.len(), 1, "status lost vm-2");
    assert_eq!(vms[0].name, "vm-2");

    // No loop: up adopts vm-2 and recreates vm-1.
    assert_eq!(
        steps(&up_ok(&lab, 2, Settings::default())),
        [Step::Create, Step::Check]
    );
    assert_eq!(down(&lab, &["vm-2".into()]).unwrap().removed, ["vm-2"]);
    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1"]);
    assert!(names(&f.hv).is_empty());
    assert!(!lab.paths.dir.exists());
}

#[test]
fn any_mix_of_lost_state_stopped_vanished_and_missing_disks_converges() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 3, Settings::default());
    let uuid_2 = f.hv.domain("vm-2").unwrap().unwrap().uuid;
    f.hv.destroy("vm-1").unwrap(); // stopped
    std::fs::remove_file(lab.paths.vm("vm-1").overlay()).unwrap(); // and its disk lost
    f.hv.destroy("vm-2").unwrap();
    f.hv.undefine("vm-2").unwrap(); // vanished from libvirt, files kept
    std::fs::write(lab.paths.state(), "{ corrupt").unwrap(); // state unreadable

    // vm-2's record is gone with the state and its domain is gone: only its
    // files remain, and status/down must still see them.
    let report = up_ok(&lab, 3, Settings::default());
    assert_eq!(steps(&report), [Step::Start, Step::Create, Step::Check]);
    assert!(
        report.notes.iter().any(|n| n.contains("is corrupt")),
        "{:?}",
        report.notes
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("vm-1: its disk was missing")),
        "{:?}",
        report.notes
    );
    assert!(lab.paths.vm("vm-1").overlay().exists());
    assert_eq!(names(&f.hv), ["vm-1", "vm-2", "vm-3"]);
    assert_ne!(
        f.hv.domain("vm-2").unwrap().unwrap().uuid,
        uuid_2,
        "vm-2 is new"
    );
    let states: Vec<VmState> = status(&lab).unwrap().vms.iter().map(|v| v.state).collect();
    assert_eq!(states, [VmState::Running; 3]);
    // The state file was rewritten from libvirt: the prefix too.
    assert_eq!(
        LabState::load(&lab.paths).unwrap().prefix.as_deref(),
        Some("vm")
    );

    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1", "vm-2", "vm-3"]);
    assert!(names(&f.hv).is_empty());
    assert!(!lab.paths.dir.exists());
}

#[test]
fn files_without_record_or_domain_are_cleaned_by_down() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    f.hv.destroy("vm-2").unwrap();
    f.hv.undefine("vm-2").unwrap();
    std::fs::remove_file(lab.paths.state()).unwrap();
    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1", "vm-2"]);
    assert!(!lab.paths.dir.exists());
}

#[test]
fn every_spelling_of_the_home_finds_the_same_lab() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let root = f.home.root().display().to_string();
    std::os::unix::fs::symlink(f.home.root(), f.dir.path().join("link")).unwrap();
    for spelling in [
        format!("{root}/"),
        format!("{root}/../home"),
        f.dir.path().join("link").display().to_string(),
    ] {
        let home = Home::new(&spelling);
        let same = Lab::new(&f.hv, &home, "default");
        let vms = status(&same).unwrap().vms;
        assert_eq!(vms.len(), 1, "{spelling}");
        assert_eq!(vms[0].state, VmState::Running, "{spelling}");
    }

    // A mark written with an older, non-canonical spelling still counts as ours.
    let xml_path = lab.paths.vm("vm-1").domain_xml();
    let xml = std::fs::read_to_string(&xml_path).unwrap();
    let uuid = f.hv.domain("vm-1").unwrap().unwrap().uuid;
    let old = xml
        .replace(&format!("home='{root}'"), &format!("home='{root}/./'"))
        .replace(
            "<name>vm-1</name>",
            &format!("<name>vm-1</name><uuid>{uuid}</uuid>"),
        );
    assert_ne!(old, xml);
    f.hv.destroy("vm-1").unwrap();
    f.hv.define(&old).unwrap();
    let mark_home = f.hv.domain("vm-1").unwrap().unwrap().mark.unwrap().home;
    assert_eq!(mark_home, format!("{root}/./"));
    assert_eq!(steps(&up_ok(&lab, 1, Settings::default())), [Step::Start]);
    assert_eq!(down(&lab, &[]).unwrap().removed, ["vm-1"]);
}

#[test]
fn a_taken_ssh_port_moves_when_the_vm_starts_again() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    f.hv.destroy("vm-1").unwrap();
    let old = LabState::load(&lab.paths).unwrap().vms[0].ssh_port;
    let thief = std::net::TcpListener::bind(("127.0.0.1", old)).unwrap();

    let report = up_ok(&lab, 1, Settings::default());
    assert_eq!(steps(&report), [Step::Start]);
    let new = LabState::load(&lab.paths).unwrap().vms[0].ssh_port;
    assert_ne!(new, old);
    assert_eq!(report.outcomes[0].ssh_port, Some(new));
    assert_eq!(
        report.notes,
        [format!(
            "vm-1: SSH port {old} is taken by another program; moved to {new}"
        )]
    );
    // The domain itself was redefined with the new forward, not only the state.
    let mark = f.hv.domain("vm-1").unwrap().unwrap().mark.unwrap();
    assert_eq!(mark.attrs["ssh_port"], new.to_string());
    let xml = std::fs::read_to_string(lab.paths.vm("vm-1").domain_xml()).unwrap();
    assert!(
        xml.contains(&format!("hostfwd=tcp:127.0.0.1:{new}-:22")),
        "{xml}"
    );
    drop(thief);
}

#[test]
fn the_lab_remembers_its_prefix() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let e2e = Settings {
        prefix: Some("e2e".into()),
        ..Default::default()
    };
    up_ok(&lab, 1, e2e.clone());
    up_ok(&lab, 2, Settings::default());
    assert_eq!(names(&f.hv), ["e2e-1", "e2e-2"]);
    let other = Settings {
        prefix: Some("x".into()),
        ..Default::default()
    };
    let err = up(&lab, &request(1, other), &no_progress)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "lab `default` names its VMs `e2e-N`; to make `x-N` VMs use another lab (--lab NAME), or remove these first with `vmlab down`"
    );
    assert_eq!(names(&f.hv), ["e2e-1", "e2e-2"]);
}

#[test]
fn settings_that_differ_from_existing_vms_are_reported() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let bigger = Settings {
        memory: Some(Mib(1024)),
        vcpus: Some(2),
        ..Default::default()
    };
    let report = up_ok(&lab, 2, bigger);
    assert_eq!(
        report.notes,
        [
            "vm-1 keeps memory 512 MiB (asked 1024 MiB), vCPUs 1 (asked 2): settings apply when a VM is created; to apply them, `vmlab down vm-1` and `vmlab up` again (its disk starts afresh)"
        ]
    );
    let vms = status(&lab).unwrap().vms;
    assert_eq!(
        vms[1].memory_actual_mib,
        Some(1024),
        "vm-2 got the new settings"
    );
}

#[test]
fn max_memory_beyond_the_host_is_refused_up_front() {
    let f = fixture(2048, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    let huge = Settings {
        max_memory: Some(Mib(1 << 20)),
        ..Default::default()
    };
    let err = up(&lab, &request(1, huge), &no_progress)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "max memory 1024.0 GiB is more than this host has (2.0 GiB); lower --max-memory"
    );
    assert!(names(&f.hv).is_empty());
    assert!(!lab.paths.dir.exists());
}

#[test]
fn down_keeps_the_lab_directory_while_a_reader_holds_it() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let reader = lock::reader(&lab.paths).unwrap();
    let report = down(&lab, &[]).unwrap();
    assert_eq!(report.removed, ["vm-1"]);
    assert!(names(&f.hv).is_empty());
    assert!(lab.paths.dir.exists());
    assert!(
        report.notes[0].contains("was using this lab"),
        "{:?}",
        report.notes
    );
    drop(reader);
    assert!(down(&lab, &[]).unwrap().removed.is_empty());
    assert!(!lab.paths.dir.exists(), "the next down cleans up");
}

#[test]
fn vms_keep_their_image_version_across_a_rebuild() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let v1 = image::load(&f.home, "tiny").unwrap();
    let v2 = install_tiny_image(&f.home, "80M");
    assert_ne!(v1.version, v2.version);
    assert!(
        v1.disk().exists(),
        "a rebuild must not touch the old version"
    );
    up_ok(&lab, 2, Settings::default());
    let state = LabState::load(&lab.paths).unwrap();
    assert_eq!(state.vms[0].image_version, v1.version);
    assert_eq!(state.vms[1].image_version, v2.version);
    let backing = |vm: &str| image::backing_file(&lab.paths.vm(vm).overlay()).unwrap();
    assert_eq!(backing("vm-1"), Some(v1.disk().display().to_string()));
    assert_eq!(backing("vm-2"), Some(v2.disk().display().to_string()));

    let err = image::remove(&f.home, "tiny", Some(&v1.version))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is used by default/vm-1"), "{err}");
    assert!(image::prune(&f.home).unwrap().is_empty());
    down(&lab, &["vm-1".into()]).unwrap();
    assert_eq!(image::prune(&f.home).unwrap(), [v1.id()]);
}

#[test]
fn live_changes_are_read_back_from_libvirt() {
    use vmlab::hypervisor::{Actuator, Vanished};
    use vmlab::units::{CpuSet, Kib};
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default()); // 1 of 2 vCPUs, 512 of 1024 MiB
    f.hv.set_vcpus("vm-1", 2).unwrap();
    f.hv.set_memory("vm-1", Kib(256 * 1024)).unwrap();
    f.hv.pin_vcpu("vm-1", 1, &"0".parse::<CpuSet>().unwrap())
        .unwrap();
    let r = f.hv.resources("vm-1").unwrap();
    assert_eq!(r.vcpus_current, 2);
    assert_eq!(r.memory_actual, Kib(256 * 1024));
    assert!(r.pins.contains(&(1, "0".to_string())), "{:?}", r.pins);
    assert_eq!(r.domain_type, "qemu", "TCG, as vmlab defined it");
    let err = f.hv.set_vcpus("vm-1", 3).unwrap_err().to_string();
    assert!(err.starts_with("setting `vm-1` to 3 vCPUs: "), "{err}");
    let err = f.hv.set_memory("gone", Kib(1)).unwrap_err();
    assert!(err.downcast_ref::<Vanished>().is_some(), "{err}");
}

#[test]
fn the_sampler_reads_vcpus_pins_and_memory_through_libvirt() {
    use vmlab::hypervisor::Actuator;
    use vmlab::hypervisor::sample::Sampler;
    use vmlab::units::CpuSet;
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    f.hv.pin_vcpu("vm-2", 0, &"1".parse::<CpuSet>().unwrap())
        .unwrap();
    f.hv.destroy("vm-1").unwrap();
    let names = ["vm-1", "vm-2", "gone"].map(String::from);
    let snap = f.hv.sample(&names).unwrap();
    // vm-1 stopped and `gone` never was: both simply left out.
    assert_eq!(snap.vms.len(), 1);
    let vm = &snap.vms[0];
    assert_eq!(vm.name, "vm-2");
    assert_eq!((vm.vcpus_current, vm.vcpus_max), (1, 2));
    assert_eq!(vm.vcpus.len(), 1);
    assert_eq!(vm.vcpus[0].affinity, [1]);
    assert_eq!(vm.memory_max_kib, 1024 * 1024);
    assert_eq!(vm.memory_current_kib, 512 * 1024);
    assert_eq!(snap.host.pcpus, 2);
    assert!(snap.host.total_kib > 0);
    let later = f.hv.sample(&names).unwrap();
    assert!(later.at_s >= snap.at_s, "monotonic time");
}

#[test]
fn decisions_are_applied_through_libvirt_and_dry_runs_change_nothing() {
    use vmlab::manage::action::{Action, Decision};
    use vmlab::manage::execute::{Applied, apply};
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let pin = Decision::new(
        Action::Pin {
            vm: "vm-1".into(),
            vcpu: 0,
            pcpus: vec![1],
        },
        "test",
    );
    let grow = Decision::new(
        Action::SetMemory {
            vm: "vm-1".into(),
            target_kib: 700 * 1024,
        },
        "test",
    );
    assert_eq!(apply(&f.hv, &pin, true), Applied::DryRun);
    assert_eq!(apply(&f.hv, &grow, true), Applied::DryRun);
    let r = f.hv.resources("vm-1").unwrap();
    assert!(r.pins.iter().all(|(_, set)| set != "1"), "{:?}", r.pins);
    assert_eq!(r.memory_actual, vmlab::units::Kib(512 * 1024));

    assert_eq!(apply(&f.hv, &pin, false), Applied::Done);
    assert_eq!(apply(&f.hv, &grow, false), Applied::Done);
    let r = f.hv.resources("vm-1").unwrap();
    assert!(r.pins.contains(&(0, "1".to_string())), "{:?}", r.pins);
    assert_eq!(r.memory_actual, vmlab::units::Kib(700 * 1024));

    let lost = Decision::new(
        Action::SetMemory {
            vm: "gone".into(),
            target_kib: 1024,
        },
        "test",
    );
    assert_eq!(apply(&f.hv, &lost, false), Applied::Vanished);
    let too_many = Decision::new(
        Action::SetVcpus {
            vm: "vm-1".into(),
            count: 9,
        },
        "test",
    );
    assert!(matches!(apply(&f.hv, &too_many, false), Applied::Failed(_)));
}

/// The lab `f` holds, as a node file a `vmlab` process can open: test:///
/// keeps its state per connection, so the lab's domains (with their marks)
/// are written into the node file, where they start running.
fn node_with_lab(f: &Fixture, lab: &Lab, foreign: &[&str]) -> String {
    let mut domains: String = foreign.iter().map(|n| foreign_domain(n)).collect();
    for vm in LabState::load(&lab.paths).unwrap().vms {
        domains += &std::fs::read_to_string(lab.paths.vm(&vm.name).domain_xml()).unwrap();
    }
    let node = format!(
        "<node><cpu><mhz>2000</mhz><model>i686</model><active>2</active><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads></cpu><memory>8388608</memory>{domains}</node>"
    );
    let path = f.dir.path().join("lab-node.xml");
    std::fs::write(&path, node).unwrap();
    format!("test://{}", path.display())
}

/// `vmlab` on the fixture's home and `connect`.
fn vmlab(f: &Fixture, connect: &str) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("vmlab").unwrap();
    cmd.env("VMLAB_HOME", f.home.root())
        .env("VMLAB_CONNECT", connect)
        .env_remove("VMLAB_LAB")
        .env_remove("VMLAB_CONFIG")
        .current_dir(f.dir.path());
    cmd
}

/// Output of a finished `vmlab` process: exit code, stdout, stderr.
fn outcome(out: std::process::Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `vmlab ARGS` and returns once its stderr says `ready` (it holds
/// its locks by then).
fn spawn_until(f: &Fixture, connect: &str, args: &[&str], ready: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", f.home.root())
        .env("VMLAB_CONNECT", connect)
        .env_remove("VMLAB_LAB")
        .env_remove("VMLAB_CONFIG")
        .current_dir(f.dir.path())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    while !said.contains(ready) {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("`vmlab {args:?}` ended: {said}"));
        said += &(line.unwrap() + "\n");
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

#[test]
fn a_run_is_never_truncated_and_runs_in_the_same_second_get_their_own() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    let uri = node_with_lab(&f, &lab, &[]);
    let mine = f.dir.path().join("results/mine");
    let (code, _, err) = outcome(
        vmlab(&f, &uri)
            .args(["manage", "--once", "--interval", "1", "--run", "mine"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(0), "{err}");
    let files = ["decisions.csv", "manage.csv", "manage.json"];
    let before: Vec<Vec<u8>> = files.map(|n| std::fs::read(mine.join(n)).unwrap()).to_vec();
    assert!(before[1].len() > 100, "manage.csv has samples");
    let (code, _, err) = outcome(
        vmlab(&f, &uri)
            .args(["manage", "--once", "--interval", "1", "--run", "mine"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.starts_with("error: run `mine` already has decisions.csv ("),
        "{err}"
    );
    let after: Vec<Vec<u8>> = files.map(|n| std::fs::read(mine.join(n)).unwrap()).to_vec();
    assert_eq!(before, after, "an existing run was changed");

    // Two monitors started together: each gets a run of its own.
    let monitor = || {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"));
        cmd.env("VMLAB_HOME", f.home.root())
            .env("VMLAB_CONNECT", &uri)
            .current_dir(f.dir.path())
            .args(["-q", "monitor", "--duration", "1s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    let (mut a, mut b) = (monitor(), monitor());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let runs: Vec<String> = tree(&f.dir.path().join("results"))
        .into_iter()
        .filter(|r| r.contains("-monitor"))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in runs {
        let csv = f.dir.path().join("results").join(run).join("metrics.csv");
        let text = std::fs::read_to_string(csv).unwrap();
        assert!(text.starts_with("time,t_s,vm"), "{text}");
    }
}

#[test]
fn one_manager_per_vm_known_domains_only_and_no_empty_lab() {
    let f = fixture(8192, &["foreign"]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    let uri = node_with_lab(&f, &lab, &["foreign"]);
    let once = |args: &[&str]| {
        let mut all = vec!["manage", "--once", "--interval", "1"];
        all.extend(args);
        outcome(vmlab(&f, &uri).args(&all).output().unwrap())
    };
    let (code, _, err) = once(&["--domains", "vm-1,nope"]);
    assert_eq!(code, Some(125));
    assert_eq!(
        err,
        "error: no domain `nope` on this connection; `virsh list --all` lists them\n"
    );
    let (code, _, err) = once(&["--domains", "foreign"]);
    assert_eq!(code, Some(0), "a foreign domain named explicitly: {err}");

    let (code, _, err) = outcome(
        vmlab(&f, &uri)
            .args(["--lab", "empty", "manage", "--once"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(125));
    assert!(err.starts_with("error: lab `empty` has no VMs;"), "{err}");
    assert!(
        !f.home.lab("empty").dir.exists(),
        "the empty lab was created"
    );

    // A lab manager holds the lab's VMs, by any name.
    let mut first = spawn_until(&f, &uri, &["manage", "--duration", "60s"], "managing lab");
    let (code, _, err) = once(&["--domains", "vm-2"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("already manages lab `default`; stop it first"),
        "{err}"
    );
    let (code, _, err) = once(&["--domains", "foreign"]);
    assert_eq!(code, Some(0), "another domain is free: {err}");
    first.kill().unwrap();
    first.wait().unwrap();

    // A foreign domain has one manager too.
    let mut first = spawn_until(
        &f,
        &uri,
        &["manage", "--domains", "foreign", "--duration", "60s"],
        "managing foreign",
    );
    let (code, _, err) = once(&["--domains", "foreign"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("already manages domain `foreign`"), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn a_stop_signal_while_a_source_is_read_leaves_no_partial_file() {
    use std::io::Write;
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 1, Settings::default());
    let uri = node_with_lab(&f, &lab, &[]);
    let fifo = f.dir.path().join("source.tar.gz");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", f.home.root())
        .env("VMLAB_CONNECT", &uri)
        .env_remove("VMLAB_SOURCES")
        .current_dir(f.dir.path())
        .args(["bench", "stream", "--ci", "--source"])
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&vec![0u8; 1 << 20]).unwrap();
    let cache = f.home.root().join("cache/sha256");
    let partials = || -> Vec<String> {
        tree(&cache)
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partials().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no partial file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a plain kill(2) of the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // The reader is blocked in read(2): more data lets it see the signal.
    let _ = writer.write_all(&vec![0u8; 1 << 16]);
    let (code, _, err) = outcome(child.wait_with_output().unwrap());
    drop(writer);
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("interrupted while reading"), "{err}");
    assert!(partials().is_empty(), "{:?}", partials());
}

/// Log lines of the threads that use it, for tests that check what was said.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Sets `flag` when dropped, so a failed check cannot leave a loop running.
struct RaiseOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The rows of a metrics.csv being written, read as they come.
struct Rows {
    tail: CsvTail<MetricsRow>,
    rows: Vec<MetricsRow>,
}

impl Rows {
    /// Reads new rows until `done` holds for all rows so far (failing at a
    /// deadline); returns how many there are.
    fn wait_for(&mut self, what: &str, done: &dyn Fn(&[MetricsRow]) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.rows.extend(self.tail.read_new().unwrap());
            assert_eq!(self.tail.skipped, 0, "{:?}", self.tail.last_error);
            if done(&self.rows) {
                return self.rows.len();
            }
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn the_collector_keeps_the_other_vms_when_one_goes_away_and_picks_it_up_again() {
    use std::sync::atomic::AtomicBool;
    use vmlab::guest::ssh::SshTarget;
    use vmlab::metrics::collect::{Plan, collect};

    let f = fixture(8192, &["pr-1", "pr-2", "pr-3"]);
    // Nothing listens there: each reporter fails and retries, libvirt's figures still come.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let plan = Plan {
        targets: ["pr-1", "pr-2", "pr-3"]
            .map(|vm| SshTarget {
                vm: vm.into(),
                addr: closed,
                user: "alpine".into(),
                key: f.dir.path().join("no-key"),
                known_hosts: f.dir.path().join("no-known-hosts"),
            })
            .into(),
        interval_s: 1,
        duration: None,
        run_dir: f.dir.path().join("run"),
    };
    let cancel = AtomicBool::new(false);
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let mut metrics = Rows {
        tail: CsvTail::new(plan.run_dir.join("metrics.csv")),
        rows: Vec::new(),
    };
    let running = |r: &MetricsRow| r.vcpus.is_some();
    let collected = std::thread::scope(|scope| {
        scope.spawn(|| {
            let _end = RaiseOnDrop(&cancel);
            let with_figures = |vm: &str, rows: &[MetricsRow]| {
                rows.iter()
                    .filter(|r| r.vm == vm && running(r) && r.pcpu_pct.iter().all(Option::is_some))
                    .count()
            };
            let before = metrics.wait_for("all three have libvirt's figures", &|rows| {
                ["pr-1", "pr-2", "pr-3"]
                    .iter()
                    .all(|vm| with_figures(vm, rows) >= 1)
            });
            f.hv.destroy("pr-2").unwrap();
            f.hv.destroy("pr-3").unwrap();
            f.hv.undefine("pr-3").unwrap();
            let gone = metrics.wait_for("two samples with pr-2 and pr-3 gone", &|rows| {
                let later = &rows[before..];
                let empty = |vm| later.iter().filter(|r| r.vm == vm && !running(r)).count();
                empty("pr-2") >= 2 && empty("pr-3") >= 2
            });
            let later = &metrics.rows[before..gone];
            for r in later.iter().filter(|r| r.vm != "pr-1" && !running(r)) {
                assert_eq!(r.pcpu_pct.len(), 2, "{r:?}");
                assert_eq!(
                    (r.balloon_actual_mib, r.domain_cpu_s),
                    (None, None),
                    "{r:?}"
                );
            }
            metrics.wait_for("pr-1 goes on", &|rows| {
                with_figures("pr-1", &rows[gone..]) >= 2
            });
            f.hv.start("pr-2").unwrap();
            metrics.wait_for("pr-2 is back", &|rows| {
                with_figures("pr-2", &rows[gone..]) >= 1
            });
        });
        tracing::subscriber::with_default(subscriber, || {
            collect(&f.hv, &plan, &cancel, &mut |_| {})
        })
    });
    let reports = collected.unwrap();
    assert_eq!(reports.len(), 3);
    let log = log.text();
    for vm in ["pr-2", "pr-3"] {
        let warned = format!("WARN vmlab::metrics::collect: {vm} is not running");
        assert_eq!(log.matches(&warned).count(), 1, "{log}");
    }
    assert_eq!(log.matches("pr-2 runs again").count(), 1, "{log}");
}

#[test]
fn reset_and_scenario_run_reset_refuse_booted_vms_before_touching_anything() {
    let f = fixture(8192, &[]);
    let lab = Lab::new(&f.hv, &f.home, "default");
    up_ok(&lab, 2, Settings::default());
    let uri = node_with_lab(&f, &lab, &[]);
    let refusal = "error: `vm-1` was booted, not cloned: only clones go back to a saved state (`vmlab up N --from-snapshot` makes clones)\n";
    // The state file and every VM file, with their contents.
    let files = || {
        let mut all = vec![std::fs::read(lab.paths.state()).unwrap()];
        for vm in ["vm-1", "vm-2"] {
            let dir = lab.paths.vm(vm).dir;
            for name in tree(&dir) {
                all.push(name.clone().into_bytes());
                all.push(std::fs::read(dir.join(name)).unwrap());
            }
        }
        all
    };
    let before = files();
    for args in [&["reset"][..], &["scenario", "run", "idle", "--reset"]] {
        let (code, out, err) = outcome(vmlab(&f, &uri).args(args).output().unwrap());
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (Some(125), "", refusal),
            "{args:?}"
        );
    }
    assert!(files() == before, "the lab's files changed");
    assert!(
        !f.dir.path().join("results").exists(),
        "a scenario run began"
    );
    let (code, _, err) = outcome(
        vmlab(&f, &uri)
            .args(["scenario", "run", "idle", "--reset", "--sim"])
            .output()
            .unwrap(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("'--reset' cannot be used with '--sim'"),
        "{err}"
    );
}
