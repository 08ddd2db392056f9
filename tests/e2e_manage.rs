//! The online manager on real guests: 4 VMs on this host's pCPUs, scenarios
//! played with real load generators and judged from outside, one sample a
//! second, as the course's monitor does. Run with
//! `cargo test --test e2e_manage -- --ignored --test-threads=1` (`just test`
//! does): they need libvirtd and root, and they load the host.

mod common;

use std::io::BufRead;
use std::path::Path;

use serde_json::Value;

use common::lab::*;

/// Plays `name` and returns its figures. Its terminal lines, per-second
/// balance and decisions are printed: a failed assertion shows them.
fn scenario(lab: &TestLab, name: &str) -> (Value, std::path::PathBuf) {
    // Minutes of observation plus set-up: more than a command's usual limit.
    let run = run(lab
        .cmd(&["scenario", "run", name])
        .timeout(std::time::Duration::from_secs(600)));
    // 1: played and judged, and the scorecard's verdict failed; these tests
    // make their own checks of what happened below.
    assert!(matches!(run.code, 0 | 1), "{}\n{}", run.stdout, run.stderr);
    let dir = printed_run_dir(home(), &run.stdout);
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scenario.json")).unwrap()).unwrap();
    let figures = doc["record"]["figures"].clone();
    let sd: Vec<String> = (doc["t_s"].as_array().unwrap().iter())
        .zip(doc["sd_pct"].as_array().unwrap())
        .map(|(t, sd)| format!("{:.0}s:{:.1}", t.as_f64().unwrap(), sd.as_f64().unwrap()))
        .collect();
    eprintln!(
        "{}{}\nsd per second: {}\n{name}: {figures}",
        run.stderr,
        run.stdout,
        sd.join(" ")
    );
    assert!(dir.join("decisions.csv").is_file() && dir.join("manage.csv").is_file());
    (figures, dir)
}

/// Each round of the manager's `manage.csv`: its time and every VM's pins.
fn placements(dir: &Path) -> Vec<(f64, std::collections::BTreeMap<String, String>)> {
    let mut rounds: Vec<(f64, std::collections::BTreeMap<String, String>)> = Vec::new();
    for row in csv_rows(&dir.join("manage.csv")) {
        let t: f64 = row["t_s"].parse().unwrap();
        if rounds.last().is_none_or(|(last, _)| *last != t) {
            rounds.push((t, Default::default()));
        }
        let pins = row["pins"].clone();
        rounds.last_mut().unwrap().1.insert(row["vm"].clone(), pins);
    }
    rounds
}

/// Pins vCPU 0 of each of the pin test's VMs to `pcpus`.
fn pin_every_vcpu0(pcpus: &str) {
    for vm in ["e2g-1", "e2g-2", "e2g-3", "e2g-4"] {
        virsh(&["vcpupin", vm, "0", pcpus]);
    }
}

fn pins(domain: &str) -> String {
    virsh(&["vcpupin", domain])
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn vcpus_all_on_one_pcpu_are_balanced_within_a_few_intervals_and_then_left_alone() {
    let lab = TestLab::new("e2e-pin");
    lab.ok(&["up", "4", "--prefix", "e2g"]);
    let (f, dir) = scenario(&lab, "all-on-one");
    // What happened, not how fast, and judged by placement as the course's
    // case states it ("reach 2 per pCPU, then stop changing pins"): on a
    // busy host the per-second balance of vCPU time is the host's noise
    // more than the placement. `just bench-manage` prints the seconds to
    // balance and the settled sd of the measure.
    let rounds = placements(&dir);
    let even = |pins: &std::collections::BTreeMap<String, String>| {
        let on = |p: &str| {
            pins.values()
                .filter(|v| v.as_str() == format!("0:{p}"))
                .count()
        };
        on("0") == 2 && on("1") == 2
    };
    let first_even = rounds
        .iter()
        .position(|(_, pins)| even(pins))
        .unwrap_or_else(|| panic!("never two per pCPU: {rounds:?}\n{f}"));
    assert!(first_even > 0, "it started balanced: {rounds:?}");
    for (t, pins) in &rounds[first_even..] {
        assert_eq!(
            pins, &rounds[first_even].1,
            "pins moved at {t} s after two per pCPU: {rounds:?}"
        );
    }

    // A dry run decides and logs, and changes nothing.
    pin_every_vcpu0("0");
    lab.ok(&["run", "cpu_hog", "--detach", "--param", "duration_s=60"]);
    let before: Vec<String> = ["e2g-1", "e2g-2"].map(pins).to_vec();
    let events_run = format!("e2e-events-{}", std::process::id());
    let out = lab.ok(&["manage", "--once", "--dry-run", "--memory-policy", "off"]);
    assert!(out.contains("[dry-run]"), "{out}");
    assert_eq!(["e2g-1", "e2g-2"].map(pins).to_vec(), before);

    // One manager per lab.
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", home())
        .env("VMLAB_LAB", "e2e-pin")
        .env("VMLAB_CONNECT", CONNECT)
        .current_dir(home())
        .args(["manage", "--duration", "120s", "--dry-run", "--run"])
        .arg(&events_run)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // It says "managing …" once it holds the lock; asking before that
    // would race it for the lock.
    let mut said = String::new();
    let mut lines = std::io::BufReader::new(first.stderr.take().unwrap()).lines();
    while !said.contains("managing lab `e2e-pin`") {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the first manager ended: {said}"));
        said += &(line.unwrap() + "\n");
    }
    let second = lab.vmlab(&["manage", "--once"]);
    assert_eq!(second.code, 125, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("already manages lab `e2e-pin`; stop it first"),
        "{}",
        second.stderr
    );

    // A VM that goes away is told, on the terminal and in decisions.csv.
    // Once the manager has sampled it (its first round planned a move: four
    // busy VMs share pCPU 0), it goes.
    let mut out = std::io::BufReader::new(first.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    while !printed.contains("[dry-run]") {
        let line = out
            .next()
            .unwrap_or_else(|| panic!("the manager ended: {printed}"));
        printed += &(line.unwrap() + "\n");
    }
    virsh(&["destroy", "e2g-4"]);
    while !printed.contains("e2g-4      event") || !printed.contains("no longer running") {
        let line = out
            .next()
            .unwrap_or_else(|| panic!("the manager ended: {printed}"));
        printed += &(line.unwrap() + "\n");
    }
    // SIGTERM ends it like Ctrl-C: with its summary, and its files whole.
    // SAFETY: a plain kill(2) of the child we started.
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = out.map(|l| l.unwrap()).collect();
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{printed}{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains(" rounds: ")),
        "no summary after SIGTERM: {rest:?}"
    );
    let decisions = std::fs::read_to_string(
        home()
            .join("results")
            .join(&events_run)
            .join("decisions.csv"),
    )
    .unwrap();
    assert!(
        decisions
            .lines()
            .any(|l| l.contains(",e2g-4,event,running,gone,")),
        "{decisions}"
    );
    // Busy guests on one pCPU answer SSH slowly: spread them first.
    for vm in ["e2g-1", "e2g-2", "e2g-3"] {
        virsh(&["vcpupin", vm, "0", "0-1"]);
    }
    lab.ok(&["stop", "cpu_hog"]);
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn growing_demand_gets_memory_every_vm_keeps_its_floor_and_memory_comes_back() {
    let lab = TestLab::new("e2e-mem");
    lab.ok(&["up", "4", "--prefix", "e2n"]);
    let balloons_mib = |lab: &TestLab| -> Vec<u64> {
        (lab.status().iter())
            .map(|v| v["memory_actual_mib"].as_u64().unwrap())
            .collect()
    };
    let (f, _) = scenario(&lab, "consume-slow");
    assert_eq!(f["oom_kills"], 0, "{f}");
    assert!(f["min_unused_mib"].as_f64().unwrap() >= 100.0, "{f}");
    assert_eq!(f["seconds_under_floor"].as_f64(), Some(0.0), "{f}");
    let (peak, end) = (
        f["peak_actual_mib"].as_f64().unwrap(),
        f["end_actual_mib"].as_f64().unwrap(),
    );
    assert!(
        end + 500.0 <= peak,
        "memory did not come back: peak {peak} MiB, end {end} MiB"
    );
    // The figures above are libvirt's own readings, once a second: the
    // balloons really moved. Afterwards the scenario puts them back at the
    // size `up` gave them, 512 MiB (each guest gets there within seconds).
    wait_until(
        "the balloons to be put back as up made them",
        std::time::Duration::from_secs(60),
        || (balloons_mib(&lab) == [512; 4]).then_some(()),
    );
    assert!(Path::new(&home().join("results")).is_dir());
}
