//! Recorded real runs, replayed (no VM runs here). Each folder under
//! `tests/fixtures/scenarios/` is one `vmlab scenario run` on this 2-core
//! TCG host: what the judge saw (`observed.jsonl`, one libvirt sample a
//! second), its inputs and figures (`scenario.json`), and the manager's
//! decisions. The `-busy` ones were recorded with builds and other labs
//! running beside (load 8 to 9); the `course-` ones under test doubles of a
//! user's own manager (tests/e2e_scenario.rs), with its logs.
//!
//! - Through the judge: every recording must give exactly the figures it
//!   was judged with, so a change to a judge rule shows here, and comes
//!   with the recording that justifies it. Rules with a recorded case of
//!   their own are pinned by name below.
//! - Through the policies: the snapshots of a recorded run, replayed as the
//!   manager would have seen them, must keep the policies' promises.

use std::path::{Path, PathBuf};

use vmlab::manage::action::Action;
use vmlab::manage::policy::{ManageConfig, MemoryPolicy, State, plan};
use vmlab::manage::scenario::Record;
use vmlab::manage::snapshot::Snapshot;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    dirs
}

fn recording(name: &str) -> (Record, Vec<Snapshot>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scenarios")
        .join(name);
    Record::load(&dir).unwrap()
}

#[test]
fn every_recorded_run_replays_to_the_figures_it_was_judged_with() {
    let dirs = fixtures();
    assert!(dirs.len() >= 4, "{dirs:?}");
    for dir in dirs {
        let (record, observed) = Record::load(&dir).unwrap();
        let figures = record.judge(&observed).figures();
        assert_eq!(
            Some(&figures),
            record.figures.as_ref(),
            "{}: the judge now scores this recorded run differently",
            dir.display()
        );
    }
}

#[test]
fn a_lone_second_over_the_bar_with_pins_unchanged_is_noise() {
    // consume-slow, recorded beside builds: balanced from 72 s on, although
    // at 90 s and 93 s single seconds read sd 15 and 19 with no pin moved
    // (the whole run moved none). Without the noise rule the phase would
    // count as balanced only after the last of them.
    let (record, observed) = recording("consume-slow-busy");
    let report = record.judge(&observed);
    let phase = &report.phases[0];
    assert_eq!(phase.repins, 0);
    let balanced_s = phase.balanced_after_s.expect("balanced");
    let spikes: Vec<f64> = (report.t_s.iter().zip(&report.sd_pct))
        .filter(|(_, sd)| **sd > 5.0)
        .map(|(t, _)| *t)
        .filter(|t| *t > balanced_s)
        .collect();
    assert!(
        !spikes.is_empty(),
        "the recording has seconds over the bar after balance"
    );
}

#[test]
fn on_a_busy_host_the_placement_settles_long_before_the_measure_does() {
    // all-on-one beside builds: the manager moved two vCPUs in its first
    // rounds and nothing after, yet per-second balance of vCPU time came
    // only at 49 s. This is why e2e_manage judges this case by placement.
    let (record, observed) = recording("all-on-one-busy");
    let report = record.judge(&observed);
    let figures = report.figures();
    assert_eq!((figures.repins, figures.repins_after_balance), (2, 0));
    let last_move = observed[last_pin_change(&observed)].at_s - observed[0].at_s;
    assert!(last_move < 10.0, "last move at {last_move} s");
    assert!(figures.balance_s.unwrap() > 40.0, "{figures:?}");
}

/// The first sample after the last one in which some pin changed.
fn last_pin_change(observed: &[Snapshot]) -> usize {
    1 + observed
        .windows(2)
        .rposition(|w| {
            w[0].vms
                .iter()
                .zip(&w[1].vms)
                .any(|(a, b)| a.vcpus[0].affinity != b.vcpus[0].affinity)
        })
        .expect("the manager moved something")
}

/// The recorded snapshots every `every_s` seconds, as the manager samples.
fn rounds(observed: &[Snapshot], every_s: f64) -> Vec<&Snapshot> {
    let mut out: Vec<&Snapshot> = Vec::new();
    for snap in observed {
        if out
            .last()
            .is_none_or(|last| snap.at_s - last.at_s >= every_s - 0.25)
        {
            out.push(snap);
        }
    }
    out
}

#[test]
fn the_pin_policy_leaves_a_settled_placement_alone_through_a_busy_hosts_noise() {
    // From the recorded manager's last move (two per pCPU; one busy and one
    // light per pCPU) to the end of the all-on-one and mixed runs (builds
    // beside, per-second sd of 0 to 31), the pin policy plans no move.
    for name in ["all-on-one-busy", "mixed-busy"] {
        let (_, observed) = recording(name);
        let settled = last_pin_change(&observed);
        assert!(settled < observed.len() / 4, "{name}: settled late");
        let config = ManageConfig {
            memory: MemoryPolicy::Off,
            ..ManageConfig::default()
        };
        let mut state = State::default();
        let mut moves = Vec::new();
        for snap in rounds(&observed[settled..], config.interval_s) {
            for d in plan(snap, &mut state, &config) {
                moves.push((snap.at_s - observed[0].at_s, d.action, d.reason));
            }
        }
        assert!(moves.is_empty(), "{name}: {moves:?}");
    }
}

#[test]
fn the_balloon_policy_never_plans_a_vm_below_its_floor_on_a_recorded_run() {
    // consume-slow: one VM allocates 20 MiB/s to 1200 MiB, then frees it.
    let (_, observed) = recording("consume-slow-busy");
    let config = ManageConfig::default();
    let floor_kib = config.balloon.floor_unused_mib * 1024;
    let mut state = State::default();
    let (mut grown, mut released) = (0, 0);
    for snap in rounds(&observed, config.interval_s) {
        for d in plan(snap, &mut state, &config) {
            let Action::SetMemory { vm, target_kib } = &d.action else {
                continue;
            };
            let now = snap.vms.iter().find(|v| &v.name == vm).unwrap();
            let b = now.balloon.unwrap();
            let used_kib = b.actual_kib.saturating_sub(b.unused_kib);
            assert!(
                *target_kib + 1024 >= used_kib + floor_kib,
                "{vm} at {:.0} s: target {target_kib} KiB under used {used_kib} + floor",
                snap.at_s - observed[0].at_s
            );
            if *target_kib > now.memory_current_kib {
                grown += 1;
            } else {
                released += 1;
            }
        }
    }
    assert!(
        grown > 0 && released > 0,
        "grown {grown}, released {released}"
    );
}

#[test]
fn the_course_recordings_under_a_users_manager_get_their_verdicts() {
    // course-cpu-1 (balanced from the start) under test doubles of a
    // student's scheduler: one that leaves the pins alone (a pass), one that
    // piles every vCPU on pCPU 0 in its first moment (a fail, although the
    // samples after that show no change: the set-up sample holds it).
    use vmlab::manage::sim::scenario::{Scale, library};
    use vmlab::manage::verdict::verdict;
    for (name, pass) in [("course-cpu-1-quiet", true), ("course-cpu-1-piler", false)] {
        let (record, observed) = recording(name);
        let first = &observed[0];
        let scale = Scale {
            pcpus: first.host.pcpus,
            vms: first.vms.len() as u32,
        };
        let scenario = library(scale)
            .into_iter()
            .find(|s| s.name == record.scenario)
            .unwrap();
        let names: Vec<String> = first.vms.iter().map(|v| v.name.clone()).collect();
        let v = verdict(&scenario, &names, &observed, &record.judge(&observed));
        assert_eq!(v.pass, pass, "{name}: {v:?}");
    }
}
