//! Clones on real guests: `up --from-snapshot` makes a template once (one
//! boot, saved), then restores every VM from it; `reset` takes them back.
//! Run with `cargo test --test e2e_clone -- --ignored --test-threads=1`
//! (`just test` does): they need libvirtd and root, and they load the host.
//! This file has its own vmlab home (its templates are its own) and labs.
//! Behaviour only: the timings are `scripts/bench-up --snapshot`'s.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use common::lab::{Run, domains_named, print_consoles, raw, rootfs, run, virsh, wait_until};

/// This file's vmlab home, with the offline image built once per run; one
/// path per machine, whatever the checkout (`VMLAB_E2E_CLONE_HOME` moves
/// it), as `common::lab::home`'s, so clones a killed run left behind are
/// the next run's own to remove.
fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = std::env::var_os("VMLAB_E2E_CLONE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/vmlab-e2e-clone-home"));
        std::fs::create_dir_all(&dir).unwrap();
        let built = run(&mut raw(
            &dir,
            "clt",
            &["image", "build", "--rootfs", rootfs().to_str().unwrap()],
        ));
        assert_eq!(built.code, 0, "image build failed: {}", built.stderr);
        dir
    })
}

/// A lab in this file's home; `down` on drop, consoles shown on failure.
struct CloneLab {
    lab: &'static str,
}

impl CloneLab {
    fn new(lab: &'static str) -> Self {
        let l = CloneLab { lab };
        l.vmlab(&["down"]);
        l
    }

    fn vmlab(&self, args: &[&str]) -> Run {
        run(&mut raw(home(), self.lab, args))
    }

    fn ok(&self, args: &[&str]) -> Run {
        let out = self.vmlab(args);
        assert_eq!(
            out.code, 0,
            "vmlab {args:?} failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        out
    }

    fn ssh(&self, vm: &str, command: &str) -> String {
        self.ok(&["ssh", vm, "--", command]).stdout
    }

    fn status(&self) -> Vec<Value> {
        let doc: Value = serde_json::from_str(&self.ok(&["status", "--json"]).stdout).unwrap();
        doc["vms"].as_array().unwrap().clone()
    }

    fn vm_file(&self, vm: &str, file: &str) -> PathBuf {
        home()
            .join("labs")
            .join(self.lab)
            .join("vms")
            .join(vm)
            .join(file)
    }
}

impl Drop for CloneLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_consoles(home(), self.lab);
        }
        self.vmlab(&["down"]);
    }
}

/// The directory of the one template of the current image version.
fn template_dir() -> PathBuf {
    let templates = home().join("images/vmlab-alpine/current/templates");
    let dirs: Vec<PathBuf> = std::fs::read_dir(&templates)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn uuids(lab: &CloneLab, vm: &str) -> Vec<String> {
    let out = lab.ssh(
        vm,
        "for i in 1 2 3 4; do cat /proc/sys/kernel/random/uuid; done",
    );
    out.lines().map(String::from).collect()
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn clones_are_their_own_machines_and_reset_takes_them_back() {
    let lab = CloneLab::new("clt-own");
    let args = ["--prefix", "clt", "--from-snapshot"];
    let up = lab.ok(&["up", "2", args[0], args[1], args[2]]);
    assert_eq!(up.stdout.matches("cloned  ").count(), 2, "{}", up.stdout);
    assert!(!up.stderr.contains("booted normally"), "{}", up.stderr);
    assert_eq!(domains_named("clt-"), ["clt-1", "clt-2"]);

    // Each one its own machine: name, host key, random numbers, clock.
    assert_eq!(lab.ssh("clt-1", "hostname").trim(), "clt-1");
    assert_eq!(lab.ssh("clt-2", "cat /etc/hostname").trim(), "clt-2");
    let key = |vm: &str| {
        let pin = std::fs::read_to_string(lab.vm_file(vm, "host_key")).unwrap();
        pin.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    };
    let template_key = std::fs::read_to_string(template_dir().join("host_key")).unwrap();
    assert_ne!(key("clt-1"), key("clt-2"));
    for vm in ["clt-1", "clt-2"] {
        assert!(
            !template_key.contains(&key(vm)),
            "{vm} serves the template's key"
        );
        // The key the guest serves, asked from outside, is the one pinned.
        let port = lab.status().into_iter().find(|v| v["name"] == vm).unwrap()["ssh_port"]
            .as_u64()
            .unwrap()
            .to_string();
        let scan = std::process::Command::new("ssh-keyscan")
            .args(["-T", "30", "-t", "ed25519", "-p", &port, "127.0.0.1"])
            .output()
            .unwrap();
        let served = String::from_utf8_lossy(&scan.stdout);
        assert!(served.contains(&key(vm)), "{vm}: {served}");
    }
    let one: BTreeSet<String> = uuids(&lab, "clt-1").into_iter().collect();
    let two: BTreeSet<String> = uuids(&lab, "clt-2").into_iter().collect();
    assert_eq!(one.len(), 4);
    assert!(one.is_disjoint(&two), "{one:?} {two:?}");
    let guest_s: i64 = lab.ssh("clt-1", "date +%s").trim().parse().unwrap();
    let host_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host_s - guest_s).abs() <= 5,
        "guest {guest_s}, host {host_s}"
    );

    // Like any VM of the lab: status, the mark, its own console log.
    let status = lab.status();
    for vm in &status {
        assert_eq!(vm["state"], "running");
        assert_eq!(vm["template"], "qemu-512m-1024m-1c-2c");
    }
    let mark = virsh(&[
        "metadata",
        "clt-2",
        "--uri",
        "https://vmlab.dev/xmlns/owner/1",
    ]);
    assert!(mark.contains("lab=\"clt-own\""), "{mark}");
    assert!(lab.vm_file("clt-2", "console.log").exists());

    // Ballooning and vCPU hot-plug act on the restored guest.
    virsh(&["setmem", "clt-1", "400M", "--live"]);
    virsh(&["setvcpus", "clt-1", "2", "--live"]);
    wait_until(
        "clt-1 to see its second vCPU",
        Duration::from_secs(30),
        || (lab.ssh("clt-1", "nproc").trim() == "2").then_some(()),
    );
    wait_until(
        "clt-1's balloon at 400 MiB",
        Duration::from_secs(30),
        || {
            let vm = lab.status().into_iter().find(|v| v["name"] == "clt-1")?;
            (vm["memory_actual_mib"] == 400).then_some(())
        },
    );

    // The manager and a benchmark work on clones.
    lab.ok(&["manage", "--once"]);
    let bench = lab.ok(&["bench", "stream", "--ci"]);
    assert!(bench.stdout.contains("stream"), "{}", bench.stdout);

    // reset: the disk and memory of just after the restore, its name kept,
    // a new host key pinned.
    lab.ssh("clt-1", "echo before-reset > /root/marker && sync");
    let before = key("clt-1");
    let reset = lab.ok(&["reset"]);
    assert_eq!(
        reset.stdout.matches("reset  ").count(),
        2,
        "{}",
        reset.stdout
    );
    assert_eq!(
        lab.ssh("clt-1", "test -e /root/marker && echo kept || hostname")
            .trim(),
        "clt-1"
    );
    assert_eq!(lab.ssh("clt-1", "nproc").trim(), "1");
    assert_ne!(key("clt-1"), before);
    let after: BTreeSet<String> = uuids(&lab, "clt-1").into_iter().collect();
    assert!(
        after.is_disjoint(&one),
        "the same random numbers after reset"
    );
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn when_a_clone_cannot_be_restored_it_boots_and_says_why() {
    let lab = CloneLab::new("clt-fall");
    let args = ["--prefix", "clf", "--from-snapshot"];
    lab.ok(&["up", "1", args[0], args[1], args[2]]);

    // A damaged template that a clone still uses cannot be made again.
    let memory = template_dir().join("memory.save");
    let saved = std::fs::read(&memory).unwrap();
    let restore_template = Restore {
        path: memory.clone(),
        bytes: saved.clone(),
    };
    let mut damaged = saved;
    damaged[..16].copy_from_slice(b"NotAVirtSaveFile");
    std::fs::write(&memory, &damaged).unwrap();
    let up = lab.ok(&["up", "2", args[0], args[1], args[2]]);
    assert!(
        up.stderr
            .contains("clf-2: booted normally: template `vmlab-alpine@"),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("not a libvirt QEMU save image"),
        "{}",
        up.stderr
    );
    assert!(up.stdout.contains("created"), "{}", up.stdout);
    assert_eq!(lab.ssh("clf-2", "hostname").trim(), "clf-2");
    let booted = lab
        .status()
        .into_iter()
        .find(|v| v["name"] == "clf-2")
        .unwrap();
    assert_eq!(booted["template"], Value::Null);
    drop(restore_template);

    // Only clones go back to a saved state; nothing is touched otherwise.
    let refused = lab.vmlab(&["reset", "clf-1", "clf-2"]);
    assert_eq!(refused.code, 125, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .starts_with("error: `clf-2` was booted, not cloned"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);

    // A killed clone comes back with `up` (booted from its own disk, same host key).
    virsh(&["destroy", "clf-1"]);
    let again = lab.ok(&["up", "2", "--prefix", "clf"]);
    assert!(again.stdout.contains("started"), "{}", again.stdout);
    assert_eq!(lab.ssh("clf-1", "hostname").trim(), "clf-1");

    // A lost state file: the clone is still known as one (from its mark).
    std::fs::remove_file(home().join("labs/clt-fall/state.json")).unwrap();
    let status = lab.status();
    let clone = status.iter().find(|v| v["name"] == "clf-1").unwrap();
    assert_eq!(clone["template"], "qemu-512m-1024m-1c-2c");

    // A template deleted behind vmlab's back: reset boots instead, and says why.
    let template = template_dir();
    std::fs::remove_dir_all(&template).unwrap();
    let reset = lab.ok(&["reset", "clf-1"]);
    assert!(
        reset.stderr.contains("clf-1: booted normally: template `")
            && reset.stderr.contains("does not exist"),
        "{}",
        reset.stderr
    );
    assert!(reset.stdout.contains("booted afresh"), "{}", reset.stdout);
    assert_eq!(lab.ssh("clf-1", "hostname").trim(), "clf-1");
}

/// Puts a file's bytes back when dropped (also when the test fails).
struct Restore {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if self.path.exists() {
            std::fs::write(&self.path, &self.bytes).ok();
        }
    }
}
