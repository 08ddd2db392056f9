//! Real guests: the offline Alpine image booted by a real libvirtd + QEMU
//! (TCG), reached over SSH on 127.0.0.1 forwards. Run with
//! `cargo test --test e2e -- --ignored --test-threads=1` (`just test` does):
//! they need libvirtd and root, and they load the host.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::lab::*;

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn lab_lifecycle_up_ssh_idempotent_grow_down() {
    let lab = TestLab::new("e2e");
    let args = ["--prefix", "e2e"];
    let out = lab.ok(&["up", "2", args[0], args[1]]);
    assert!(
        out.contains("e2e-1") && out.contains("e2e-2") && out.contains("2 VMs ready"),
        "{out}"
    );

    let meminfo = lab.ok(&["ssh", "e2e-1", "--", "cat", "/proc/meminfo"]);
    assert!(meminfo.starts_with("MemTotal:"), "{meminfo}");
    assert_eq!(lab.ok(&["ssh", "e2e-2", "--", "hostname"]).trim(), "e2e-2");
    let os = lab.ok(&["ssh", "e2e-1", "--", "cat /etc/os-release"]);
    assert!(os.contains("Alpine Linux"), "{os}");
    for vm in ["e2e-1", "e2e-2"] {
        assert_ne!(qemu_uid(vm), 0, "QEMU of {vm} runs as root");
    }
    let failing = lab.vmlab(&["ssh", "e2e-1", "--", "echo out; echo err >&2; exit 7"]);
    assert_eq!(
        (
            failing.code,
            failing.stdout.as_str(),
            failing.stderr.as_str()
        ),
        (7, "out\n", "err\n")
    );

    let before = lab.status();
    assert!(before.iter().all(|v| v["state"] == "running"));
    let uuids = virsh(&["domuuid", "e2e-1"]);
    // -q: the result on stdout, nothing (no stage lines) on stderr.
    let again = lab.vmlab(&["-q", "up", "2", args[0], args[1]]);
    assert_eq!((again.code, again.stderr.as_str()), (0, ""));
    assert_eq!(
        again.stdout.matches("already running").count(),
        2,
        "{}",
        again.stdout
    );
    assert_eq!(
        virsh(&["domuuid", "e2e-1"]),
        uuids,
        "second up redefined e2e-1"
    );
    assert_eq!(
        lab.ports(),
        before
            .iter()
            .map(|v| v["ssh_port"].as_u64().unwrap() as u16)
            .collect::<Vec<_>>()
    );

    let grown = lab.ok(&["up", "3", args[0], args[1]]);
    assert!(
        grown.contains("e2e-3") && grown.contains("created"),
        "{grown}"
    );
    assert_eq!(domains_named("e2e-"), ["e2e-1", "e2e-2", "e2e-3"]);
    let ports = lab.ports();
    assert!(ports.iter().all(|p| listening(*p)));

    let removed = lab.ok(&["down"]);
    assert!(
        removed.starts_with("removed e2e-1, e2e-2, e2e-3"),
        "{removed}"
    );
    assert!(domains_named("e2e-").is_empty(), "domains left behind");
    assert!(
        !home().join("labs/e2e").exists(),
        "overlays, seeds or state left behind"
    );
    assert!(
        home()
            .join("images/vmlab-alpine/current/disk.qcow2")
            .exists(),
        "down must keep the base image"
    );
    for p in ports {
        assert!(!listening(p), "port {p} still listening after down");
    }
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn stopped_vm_comes_back_and_unreachable_vm_is_retried() {
    let lab = TestLab::new("e2e-retry");
    let args = ["--prefix", "e2r"];
    // 1 s is too short for any guest here: both fail, named, with console lines.
    let run = lab.vmlab(&["up", "2", args[0], args[1], "--ssh-timeout", "1"]);
    assert_eq!(run.code, 125, "{}", run.stdout);
    assert!(
        run.stderr.contains("\nerror: 2 of 2 VMs failed:\n"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("e2r-1: e2r-1 did not answer SSH on 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("run `vmlab up` again to retry"),
        "{}",
        run.stderr
    );
    assert!(
        lab.status().iter().all(|v| v["state"] == "running"),
        "unreachable VMs must stay up"
    );

    let retried = lab.ok(&["up", "2", args[0], args[1]]);
    assert_eq!(retried.matches("already running").count(), 2, "{retried}");
    assert_eq!(lab.ok(&["ssh", "e2r-1", "--", "echo", "hi"]), "hi\n");

    virsh(&["destroy", "e2r-2"]);
    let restarted = lab.ok(&["up", "2", args[0], args[1]]);
    assert!(
        restarted.contains("e2r-2") && restarted.contains("started"),
        "{restarted}"
    );
    assert_eq!(lab.ok(&["ssh", "e2r-2", "--", "echo", "back"]), "back\n");
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn foreign_domain_is_never_touched() {
    let lab = TestLab::new("e2e-foreign");
    let xml = "<domain type='qemu'><name>e2f-2</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>";
    let file = home().join("foreign.xml");
    std::fs::write(&file, xml).unwrap();
    virsh(&["define", file.to_str().unwrap()]);
    let refused = lab.vmlab(&["up", "2", "--prefix", "e2f"]);
    let stillthere = domains_named("e2f-");
    virsh(&["undefine", "e2f-2"]);
    assert_eq!(refused.code, 125);
    assert_eq!(
        refused.stderr,
        "error: domain name(s) `e2f-2` already taken by VMs vmlab did not create; choose another prefix with --prefix\n"
    );
    assert_eq!(
        stillthere,
        ["e2f-2"],
        "up touched the foreign domain or created e2f-1"
    );
    assert!(
        !home().join("labs/e2e-foreign").exists(),
        "refused up left files"
    );
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn guest_reports_balloon_stats_and_onlines_hotplugged_vcpus() {
    let lab = TestLab::new("e2e-res");
    lab.ok(&[
        "up",
        "1",
        "--prefix",
        "e2h",
        "--vcpus",
        "1",
        "--max-vcpus",
        "2",
        "--memory",
        "256M",
        "--max-memory",
        "512M",
    ]);
    // The guest loads virtio_balloon after sshd: wait until the balloon has
    // inflated from the 512M maximum to the 256M boot memory and the guest's
    // stats (every second) show what is left inside it.
    let vm = wait_until(
        "the balloon at 256 MiB, guest stats within it",
        Duration::from_secs(30),
        || {
            let s = lab.status().remove(0);
            let actual = s["memory_actual_mib"].as_u64();
            let settled = actual == Some(256);
            let unused = s["memory_unused_mib"].as_u64();
            // While the balloon settles, a report from before it moved is
            // shown as settling, never as more unused than the guest has.
            assert!(
                unused.is_none_or(|u| Some(u) <= actual),
                "unused beyond actual: {s}"
            );
            (settled && unused.is_some_and(|u| u > 0 && u < 256)).then_some(s)
        },
    );
    assert_eq!(
        (vm["vcpus_current"].as_u64(), vm["vcpus_max"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(vm["memory_max_mib"].as_u64(), Some(512));
    assert_eq!(
        lab.ok(&["ssh", "e2h-1", "--", "grep -c ^processor /proc/cpuinfo"])
            .trim(),
        "1"
    );

    virsh(&["setvcpus", "e2h-1", "2", "--live"]);
    wait_until(
        "the hot-plugged vCPU online in the guest",
        Duration::from_secs(30),
        || {
            (lab.ok(&["ssh", "e2h-1", "--", "cat /sys/devices/system/cpu/online"])
                .trim()
                == "0-1")
                .then_some(())
        },
    );
    let s = lab.status().remove(0);
    assert_eq!(s["vcpus_current"].as_u64(), Some(2));
}

#[test]
#[ignore = "needs libvirtd (just test)"]
fn overcommit_and_missing_image_are_refused_on_the_real_host() {
    let lab = TestLab::new("e2e-refuse");
    lab.refused(
        &[
            "up",
            "200",
            "--prefix",
            "e2o",
            "--memory",
            "8G",
            "--max-memory",
            "8G",
        ],
        "error: 200 × 8192 MiB = 1638400 MiB does not fit: the host has ",
    );
    // A ceiling QEMU would only reject at boot is refused before anything exists.
    lab.refused(
        &["up", "1", "--prefix", "e2o", "--max-memory", "1T"],
        "error: max memory 1024.0 GiB is more than this host has (",
    );
    lab.refused(
        &["up", "1", "--prefix", "e2o", "--image", "no-such-image"],
        "error: image `no-such-image` is not installed",
    );
    assert!(domains_named("e2o-").is_empty());
    assert!(
        !home().join("labs/e2e-refuse").exists(),
        "refused up left files"
    );
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn ssh_forwards_stdin_passes_exit_status_and_needs_no_libvirt() {
    let lab = TestLab::new("e2e-ssh");
    lab.ok(&["up", "1", "--prefix", "e2s"]);
    let piped = run(lab
        .cmd(&["ssh", "e2s-1", "--", "cat"])
        .write_stdin("hi\nthere\n"));
    assert_eq!((piped.code, piped.stdout.as_str()), (0, "hi\nthere\n"));
    // stdin is /dev/null here (assert_cmd's default): EOF at once, so the
    // command returns instead of waiting for input forever.
    let closed = run(lab
        .cmd(&["ssh", "e2s-1", "--", "cat; echo done"])
        .timeout(Duration::from_secs(30)));
    assert_eq!((closed.code, closed.stdout.as_str()), (0, "done\n"));
    let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let counted = run(lab.cmd(&["ssh", "e2s-1", "--", "wc -l"]).write_stdin(big));
    assert_eq!(counted.stdout.trim(), "20000");

    let killed = lab.vmlab(&["ssh", "e2s-1", "--", "kill -9 $$"]);
    assert_eq!(killed.code, 255, "a signal is a failure, as with OpenSSH");
    assert_eq!(
        killed.stderr,
        "vmlab: the command in e2s-1 was killed by signal KILL\n"
    );
    let unknown = lab.vmlab(&["ssh", "e2s-9", "--", "true"]);
    assert_eq!(unknown.code, 125, "vmlab's own failure has its own code");
    assert_eq!(
        unknown.stderr,
        "error: lab `e2e-ssh` has no VM `e2s-9`; `vmlab status` lists them\n"
    );
    // libvirtd unreachable: the guest still answers, so ssh still works.
    let no_libvirt = run(lab.cmd(&["ssh", "e2s-1", "--", "hostname"]).env(
        "VMLAB_CONNECT",
        "qemu+unix:///system?socket=/nonexistent/sock",
    ));
    assert_eq!(
        (no_libvirt.code, no_libvirt.stdout.as_str()),
        (0, "e2s-1\n")
    );

    // One session, a command cut short by its deadline, then the next
    // command: it runs (it failed with "would block" when the failed one
    // left the session non-blocking, as `scenario run` met on a slow guest).
    use vmlab::guest::ssh::{Guest, SshTarget};
    let port = lab.ports()[0];
    let paths = vmlab::paths::Home::new(home()).lab("e2e-ssh");
    let target = SshTarget {
        vm: "e2s-1".into(),
        addr: ([127, 0, 0, 1], port).into(),
        user: "root".into(),
        key: paths.ssh_key(),
        known_hosts: paths.vm("e2s-1").host_key(),
    };
    let guest = Guest::connect(&target, Duration::from_secs(30)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let cut = guest.exec_until("sleep 5", Some(deadline));
    assert!(cut.is_err(), "the deadline passed");
    let next = guest.exec("echo again").unwrap();
    assert_eq!(String::from_utf8_lossy(&next.stdout), "again\n");
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn a_frozen_guest_or_a_changed_host_key_fails_instead_of_hanging() {
    let lab = TestLab::new("e2e-frozen");
    lab.ok(&["up", "1", "--prefix", "e2z"]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", home())
        .env("VMLAB_LAB", "e2e-frozen")
        .env("VMLAB_CONNECT", CONNECT)
        .args(["ssh", "e2z-1", "--", "echo started; sleep 600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "started\n");
    virsh(&["suspend", "e2z-1"]);
    let frozen_at = Instant::now();
    let status = wait_until("vmlab ssh to give up", Duration::from_secs(90), || {
        child.try_wait().unwrap()
    });
    let waited = frozen_at.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(
        stderr.starts_with("error: e2z-1 stopped answering SSH"),
        "{stderr}"
    );
    eprintln!(
        "gave up {:.1} s after the guest froze",
        waited.as_secs_f64()
    );
    let paused = lab.vmlab(&["ssh", "e2z-1", "--", "true"]);
    assert_eq!(paused.code, 125);
    assert!(
        paused
            .stderr
            .starts_with("error: `e2z-1` is paused; resume it with"),
        "{}",
        paused.stderr
    );
    virsh(&["resume", "e2z-1"]);
    assert_eq!(lab.ok(&["ssh", "e2z-1", "--", "echo", "back"]), "back\n");

    // A changed host key is named as such, at once, by up and by ssh.
    let pinned = home().join("labs/e2e-frozen/vms/e2z-1/host_key");
    let good = std::fs::read_to_string(&pinned).unwrap();
    std::fs::write(&pinned, good.replace("AAAA", "BBBB")).unwrap();
    // With an SSH timeout longer than the harness's own limit, only an up
    // that names the changed key at once can return 125.
    let up = lab.vmlab(&["up", "1", "--prefix", "e2z", "--ssh-timeout", "3600"]);
    assert_eq!(up.code, 125, "{}", up.stderr);
    assert!(
        up.stderr
            .contains("e2z-1: host key of e2z-1 changed since first contact"),
        "{}",
        up.stderr
    );
    let ssh = lab.vmlab(&["ssh", "e2z-1", "--", "true"]);
    assert!(
        ssh.stderr.starts_with("error: host key of e2z-1 changed"),
        "{}",
        ssh.stderr
    );
    std::fs::write(&pinned, good).unwrap();
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn a_stopped_vm_whose_port_was_taken_starts_on_a_new_one() {
    let lab = TestLab::new("e2e-port");
    lab.ok(&["up", "1", "--prefix", "e2p"]);
    let old = lab.ports()[0];
    virsh(&["destroy", "e2p-1"]);
    let thief = std::net::TcpListener::bind(("127.0.0.1", old)).unwrap();
    let again = lab.vmlab(&["up", "1", "--prefix", "e2p"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let new = lab.ports()[0];
    assert_ne!(new, old);
    assert!(
        again.stderr.contains(&format!(
            "warning: e2p-1: SSH port {old} is taken by another program; moved to {new}"
        )),
        "{}",
        again.stderr
    );
    assert_eq!(lab.ok(&["ssh", "e2p-1", "--", "echo", "ok"]), "ok\n");
    drop(thief);
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn rebuilding_the_image_never_touches_running_vms() {
    let lab = TestLab::new("e2e-image");
    lab.ok(&["up", "1", "--prefix", "e2i"]);
    let list = || -> Vec<Value> {
        let doc: Value = serde_json::from_str(&lab.ok(&["image", "list", "--json"])).unwrap();
        doc["images"].as_array().unwrap().clone()
    };
    let before = list();
    let old = before.iter().find(|i| i["current"] == true).unwrap()["version"].clone();
    lab.ok(&["image", "build", "--rootfs", rootfs().to_str().unwrap()]);
    let after = list();
    let new = after.iter().find(|i| i["current"] == true).unwrap()["version"].clone();
    assert_ne!(old, new, "a rebuild is a new version");
    let old_row = after.iter().find(|i| i["version"] == old).unwrap();
    assert!(
        old_row["used_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "e2e-image/e2i-1"),
        "{old_row}"
    );
    // The running guest reads its whole disk (base included) without error.
    let read = lab.vmlab(&[
        "ssh",
        "e2i-1",
        "--",
        "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=1M 2>&1 | tail -1",
    ]);
    assert_eq!(read.code, 0, "{}", read.stderr);
    let old_id = format!("vmlab-alpine@{}", old.as_str().unwrap());
    let refused = lab.vmlab(&["image", "rm", &old_id]);
    assert_eq!(refused.code, 125);
    assert!(
        refused.stderr.contains("is used by e2e-image/e2i-1"),
        "{}",
        refused.stderr
    );
    lab.ok(&["down"]);
    let pruned = lab.ok(&["image", "prune"]);
    assert!(pruned.contains(&old_id), "{pruned}");
}
