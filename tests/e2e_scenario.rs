//! Your own manager under `vmlab scenario run`: test doubles written here
//! stand for a student's vCPU scheduler and memory coordinator. They are
//! started once the loads run, logged, stopped and judged; a crash and a
//! program that ignores SIGINT are handled; running domains that are not
//! the lab's block the start; pins and balloons come back afterwards. Run
//! with `cargo test --test e2e_scenario -- --ignored --test-threads=1`
//! (`just test` does).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde_json::Value;

use common::lab::*;

const VMS: [&str; 4] = ["e2c-1", "e2c-2", "e2c-3", "e2c-4"];

/// An executable script in the test home.
fn script(name: &str, body: &str) -> PathBuf {
    let dir = home().join("doubles");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Each VM's vCPU pins, as virsh reports them.
fn pins() -> Vec<String> {
    VMS.iter()
        .map(|vm| format!("{vm}: {}", virsh(&["vcpupin", vm]).trim()))
        .collect()
}

/// The balloons go back to the size `up` gave them (256 MiB here); each
/// guest gets there within seconds.
fn balloons_put_back(lab: &TestLab) {
    wait_until(
        "the balloons to be put back as up made them",
        std::time::Duration::from_secs(60),
        || {
            let mib: Vec<u64> = (lab.status().iter())
                .map(|v| v["memory_actual_mib"].as_u64().unwrap())
                .collect();
            (mib == [256; 4]).then_some(())
        },
    );
}

fn scorecard(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("scorecard in "))
        .unwrap_or_else(|| panic!("no scorecard in {stdout}"));
    let dir = home().join(line.trim());
    assert!(dir.join("scorecard.md").is_file());
    serde_json::from_str(&std::fs::read_to_string(dir.join("scorecard.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn your_manager_is_started_logged_stopped_judged_and_the_lab_put_back() {
    let lab = TestLab::new("e2e-scen");
    lab.ok(&[
        "up",
        "4",
        "--prefix",
        "e2c",
        "--memory",
        "256M",
        "--max-memory",
        "512M",
    ]);
    let quiet = script(
        "quiet",
        "echo \"started with $*\"; trap 'echo stopping; exit 0' INT\nwhile :; do echo tick; sleep 1; done",
    );
    let q = quiet.to_str().unwrap();

    // Refused before anything is played: the wrong lab for a memory case
    // (with the command that makes the right one), a missing program.
    lab.refused(
        &["scenario", "run", "course-mem-1", "--manager", q, "2"],
        "error: scenario `course-mem-1` needs 4 VMs of 1 vCPU and 512 MiB up to 2048 MiB; e2c-1 has 1 vCPU(s) and 256 MiB up to 512 MiB: run `vmlab down`, then `vmlab up 4 --vcpus 1 --memory 512M --max-memory 2048M`",
    );
    lab.refused(
        &[
            "scenario",
            "run",
            "course-cpu-1",
            "--manager",
            "./no-such-scheduler",
            "2",
        ],
        "error: `./no-such-scheduler` (--manager) not found",
    );
    // A running domain that is not the lab's: the program would act on it.
    let xml = "<domain type='qemu'><name>e2x-foreign</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>";
    let file = home().join("foreign-running.xml");
    std::fs::write(&file, xml).unwrap();
    virsh(&["create", file.to_str().unwrap()]);
    let refused = lab.vmlab(&["scenario", "run", "course-cpu-1", "--manager", q, "2"]);
    virsh(&["destroy", "e2x-foreign"]);
    assert_eq!(refused.code, 125, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("`e2x-foreign`") && refused.stderr.contains("--allow-foreign"),
        "{}",
        refused.stderr
    );

    // A manager that leaves the balanced placement alone and stops on
    // SIGINT: played, logged, judged a pass. Other labs on a shared
    // machine would refuse it, as above, so the start is allowed here.
    let before = pins();
    let good = run(lab
        .cmd(&[
            "scenario",
            "run",
            "course-cpu-1",
            "--allow-foreign",
            "--manager",
            q,
            "2",
        ])
        .timeout(std::time::Duration::from_secs(600)));
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    let card = scorecard(&good.stdout);
    let line = &card["lines"][0];
    assert_eq!(
        (line["scenario"].as_str(), line["manager"].as_str()),
        (Some("course-cpu-1"), Some("yours"))
    );
    assert_eq!(line["verdict"]["pass"], true, "{card}");
    let program = &line["programs"][0];
    assert_eq!(program["status"], "exited 0", "{card}");
    assert_eq!(
        (
            program["exited_early_s"].is_null(),
            program["ignored_sigint"].as_bool()
        ),
        (true, Some(false))
    );
    let run_dir = PathBuf::from(line["run_dir"].as_str().unwrap());
    let log = std::fs::read_to_string(home().join(&run_dir).join("manager.stdout.log")).unwrap();
    assert!(
        log.starts_with("started with 2\ntick\n") && log.ends_with("stopping\n"),
        "{log}"
    );
    assert!(home().join(&run_dir).join("scenario.json").is_file());
    assert_eq!(pins(), before, "the scenario's pins were not put back");
    balloons_put_back(&lab);

    // A scheduler that piles every vCPU on pCPU 0 and ignores SIGINT, and
    // a coordinator that crashes at once: both handled, the run judged (a
    // fail: the placement was balanced), the lab put back.
    let pile: Vec<String> = VMS
        .iter()
        .map(|vm| format!("virsh -c qemu:///system vcpupin {vm} 0 0 >/dev/null"))
        .collect();
    let piler = script(
        "piler",
        &format!(
            "trap '' INT\n{}\nwhile :; do sleep 1; done",
            pile.join("\n")
        ),
    );
    let crasher = script("crasher", "echo 'segfault soon' >&2; exit 3");
    let bad = run(lab
        .cmd(&[
            "scenario",
            "run",
            "course-cpu-1",
            "--allow-foreign",
            "--cpu-manager",
            piler.to_str().unwrap(),
            "--memory-manager",
            crasher.to_str().unwrap(),
        ])
        .timeout(std::time::Duration::from_secs(600)));
    assert_eq!(
        bad.code, 1,
        "a failed verdict: {}\n{}",
        bad.stdout, bad.stderr
    );
    let card = scorecard(&bad.stdout);
    let line = &card["lines"][0];
    assert_eq!(line["verdict"]["pass"], false, "{card}");
    assert!(
        line["verdict"]["failed"][0]
            .as_str()
            .unwrap()
            .contains("pin changes on a placement that was balanced"),
        "{card}"
    );
    let programs = line["programs"].as_array().unwrap();
    let (cpu, memory) = (&programs[0], &programs[1]);
    assert_eq!(
        (
            cpu["role"].as_str(),
            cpu["ignored_sigint"].as_bool(),
            cpu["status"].as_str()
        ),
        (Some("cpu-manager"), Some(true), Some("killed by SIGKILL")),
        "{card}"
    );
    assert_eq!(
        (memory["role"].as_str(), memory["status"].as_str()),
        (Some("memory-manager"), Some("exited 3")),
        "{card}"
    );
    assert!(memory["exited_early_s"].is_number(), "{card}");
    assert!(
        bad.stdout.contains("ignored SIGINT, killed after 5 s"),
        "{}",
        bad.stdout
    );
    let run_dir = home().join(line["run_dir"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(run_dir.join("memory-manager.stderr.log")).unwrap(),
        "segfault soon\n"
    );
    assert_eq!(pins(), before, "the scheduler's pins were not put back");
    balloons_put_back(&lab);
}
