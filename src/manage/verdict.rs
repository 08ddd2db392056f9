//! Pass or fail: a scenario's judged run against what the scenario asks
//! ([`Expect`]). The rules are written here once (and in the README's "What
//! passes"); they are the same for vmlab's own policies and for any program
//! run with `--manager`.
//!
//! - **Leave alone** (a balanced start): no pin changes at all.
//! - **Even placement**: every load class spread evenly over the pCPUs (the
//!   counts per pCPU differ by at most one, for each class and in all), in
//!   [`PLACE_WITHIN_S`] at most, and then no pin changes. Judged by
//!   placement, as the course states its cases: on a busy host the
//!   per-second balance of vCPU time is the host's noise more than the
//!   placement (see tests/replay.rs).
//! - **Balanced**: balanced by the course's measure (its sd bar), and no pin
//!   changes after.
//! - **Memory rules**: no OOM kill in a guest; never under the floor of
//!   unused memory; no VM under [`MIN_VM_MIB`]; a release never gives more
//!   than [`MAX_RELEASE_SHARE`] of a VM's spare memory (above the floor) at
//!   once; no VM grows while the host is at its floor; and once loads end,
//!   at least three quarters of what the lab grew comes back.

use serde::{Deserialize, Serialize};

use super::judge::{Figures, Report};
use super::sim::scenario::{Expect, Scenario};
use super::snapshot::Snapshot;

/// An even placement must come within this of the start.
pub const PLACE_WITHIN_S: f64 = 10.0;
/// No VM may be ballooned below this.
pub const MIN_VM_MIB: f64 = 200.0;
/// A release gives back at most this share of a VM's spare memory at once.
pub const MAX_RELEASE_SHARE: f64 = 0.5;

/// The scorecard's line for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    /// The rules it broke, each with its figure.
    pub failed: Vec<String>,
    /// Even placement: seconds until it was reached and kept; `None`:
    /// never, or not an even-placement case.
    pub placed_s: Option<f64>,
    pub repins_after_placed: u32,
    /// Memory: seconds from the end of the loads until three quarters of
    /// what the lab grew was back; `None`: never, or nothing grew.
    #[serde(default)]
    pub memory_back_s: Option<f64>,
}

/// Judges `observed` (the judge's samples, VMs named as in the lab, in the
/// scenario's order `names`) against what `scenario` asks.
pub fn verdict(
    scenario: &Scenario,
    names: &[String],
    observed: &[Snapshot],
    report: &Report,
) -> Verdict {
    let f = report.figures();
    let mut failed = Vec::new();
    let (mut placed_s, mut repins_after_placed) = (None, 0);
    match scenario.expect {
        Expect::LeaveAlone => {
            let moved = f.first_pins + f.repins;
            if moved > 0 {
                failed.push(format!(
                    "{moved} pin changes on a placement that was balanced"
                ));
            }
        }
        Expect::EvenPlacement => {
            let placement = placement(scenario, names, observed);
            placed_s = placement.placed_s;
            repins_after_placed = placement.changes_after;
            match placed_s {
                None => failed.push("never reached an even placement and kept it".into()),
                Some(s) if s > PLACE_WITHIN_S => failed.push(format!(
                    "an even placement only after {s:.0} s (at most {PLACE_WITHIN_S:.0})"
                )),
                Some(_) => {}
            }
            if placement.changes_after > 0 {
                failed.push(format!(
                    "{} pin changes after the placement was even",
                    placement.changes_after
                ));
            }
        }
        Expect::Balanced => {
            if f.balance_s.is_none() {
                failed.push(format!(
                    "never balanced (settled sd {:.1})",
                    f.settled_sd_pct
                ));
            }
            if f.repins_after_balance > 0 {
                failed.push(format!("{} re-pins after balance", f.repins_after_balance));
            }
        }
        Expect::MemoryRules => failed.extend(memory_rules(&f)),
    }
    let memory_back_s = match scenario.expect {
        Expect::MemoryRules => memory_back_s(scenario, observed, &f),
        _ => None,
    };
    Verdict {
        pass: failed.is_empty(),
        failed,
        placed_s,
        repins_after_placed,
        memory_back_s,
    }
}

/// Seconds from the end of the last memory load until the lab holds at
/// most a quarter of what it grew: the memory rule's own "grown", from the
/// judge's figures, and its measure (each VM's current memory).
fn memory_back_s(scenario: &Scenario, observed: &[Snapshot], f: &Figures) -> Option<f64> {
    let first = observed.first()?;
    let grown = f.peak_actual_mib - f.start_actual_mib;
    if grown <= 0.0 {
        return None;
    }
    let total_mib = |s: &Snapshot| -> f64 {
        s.vms
            .iter()
            .map(|v| v.memory_current_kib as f64 / 1024.0)
            .sum()
    };
    let loads_end_s = scenario
        .vms
        .iter()
        .filter_map(|v| v.memory_mib_demand.points().last().map(|p| p.0))
        .fold(0.0, f64::max);
    observed
        .iter()
        .map(|s| (s.at_s - first.at_s, total_mib(s)))
        .find(|(t, mib)| *t >= loads_end_s && mib - f.start_actual_mib <= grown / 4.0)
        .map(|(t, _)| t - loads_end_s)
}

fn memory_rules(f: &Figures) -> Vec<String> {
    let mut failed = Vec::new();
    if f.oom_kills > 0 {
        failed.push(format!("{} OOM kills in the guests", f.oom_kills));
    }
    if f.seconds_under_floor > 0.0 {
        failed.push(format!(
            "{:.0} s under the floor of unused memory (least: {:.0} MiB)",
            f.seconds_under_floor, f.min_unused_mib
        ));
    }
    if f.min_actual_mib < MIN_VM_MIB {
        failed.push(format!(
            "a VM down to {:.0} MiB (at least {MIN_VM_MIB:.0})",
            f.min_actual_mib
        ));
    }
    if f.max_release_share > MAX_RELEASE_SHARE {
        failed.push(format!(
            "released {:.0} % of a VM's spare memory at once (at most {:.0} %)",
            100.0 * f.max_release_share,
            100.0 * MAX_RELEASE_SHARE
        ));
    }
    if f.grown_on_a_short_host > 0 {
        failed.push(format!(
            "{} times a VM grew while the host was at its floor",
            f.grown_on_a_short_host
        ));
    }
    let grown = f.peak_actual_mib - f.start_actual_mib;
    let kept = f.end_actual_mib - f.start_actual_mib;
    if grown > 0.0 && kept > grown / 4.0 {
        failed.push(format!(
            "{kept:.0} of the {grown:.0} MiB grown still held at the end"
        ));
    }
    failed
}

/// When the placement became even for good (the worst phase, from its
/// start), and the pin changes after, in all phases.
struct Placement {
    placed_s: Option<f64>,
    changes_after: u32,
}

fn placement(scenario: &Scenario, names: &[String], observed: &[Snapshot]) -> Placement {
    let Some(first) = observed.first() else {
        return Placement {
            placed_s: None,
            changes_after: 0,
        };
    };
    let pins = |s: &Snapshot| -> Vec<Option<Vec<u32>>> {
        names
            .iter()
            .map(|n| {
                let vm = s.vms.iter().find(|v| &v.name == n)?;
                Some(vm.vcpus.iter().flat_map(|v| v.affinity.clone()).collect())
            })
            .collect()
    };
    let t = |s: &Snapshot| s.at_s - first.at_s;
    let (mut placed_s, mut changes_after) = (Some(0.0_f64), 0);
    for (i, &start_s) in scenario.phases_s.iter().enumerate() {
        let end_s = scenario
            .phases_s
            .get(i + 1)
            .copied()
            .unwrap_or(f64::INFINITY);
        let phase: Vec<&Snapshot> = observed
            .iter()
            .filter(|s| (start_s..end_s).contains(&t(s)))
            .collect();
        // The last sample that is not even; placed from the one after it.
        let last_odd = phase.iter().rposition(|s| !even(scenario, names, s, t(s)));
        let from = last_odd.map_or(0, |i| i + 1);
        let Some(placed) = phase.get(from) else {
            placed_s = None;
            continue;
        };
        placed_s = placed_s.map(|worst| worst.max(t(placed) - start_s));
        changes_after += phase[from..]
            .windows(2)
            .filter(|w| pins(w[0]) != pins(w[1]))
            .count() as u32;
    }
    Placement {
        placed_s,
        changes_after,
    }
}

/// Whether every load class (VMs of the same demand at `t_s`) is spread
/// evenly over the pCPUs, and all vCPUs too: counts differ by at most one.
fn even(scenario: &Scenario, names: &[String], snap: &Snapshot, t_s: f64) -> bool {
    let pcpus = snap.host.pcpus as usize;
    let mut classes: Vec<(i64, Vec<u32>)> = Vec::new();
    let mut all = vec![0u32; pcpus];
    for (spec, name) in scenario.vms.iter().zip(names) {
        let Some(vm) = snap.vms.iter().find(|v| &v.name == name) else {
            return false;
        };
        let class = spec.cpu_pct.at(t_s).round() as i64;
        let counts = match classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, counts)) => counts,
            None => {
                classes.push((class, vec![0; pcpus]));
                &mut classes.last_mut().expect("just pushed").1
            }
        };
        for v in &vm.vcpus {
            let Some(p) = v.pinned_to(pcpus as u32) else {
                return false;
            };
            counts[p as usize] += 1;
            all[p as usize] += 1;
        }
    }
    let spread = |c: &[u32]| c.iter().max().unwrap_or(&0) - c.iter().min().unwrap_or(&0);
    spread(&all) <= 1 && classes.iter().all(|(_, c)| spread(c) <= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::judge::{JudgeConfig, judge};
    use crate::manage::sim::scenario::named;
    use crate::manage::testkit::{snapshot, vcpu, vm};

    fn case(name: &str) -> Scenario {
        named(name)
    }

    /// `pins[t]`: the pCPU of vm-1..vm-4 at second t; each VM busy 50 %.
    fn run(pins: &[[u32; 4]]) -> Vec<Snapshot> {
        pins.iter()
            .enumerate()
            .map(|(t, p)| {
                let vms = (0..4)
                    .map(|i| {
                        vm(
                            &format!("vm-{}", i + 1),
                            vec![vcpu(Some(p[i]), 2, t as f64 * 0.5)],
                        )
                    })
                    .collect();
                snapshot(t as f64, 2, vms)
            })
            .collect()
    }

    fn judged(name: &str, pins: &[[u32; 4]]) -> Verdict {
        let s = case(name);
        let names: Vec<String> = (1..=4).map(|i| format!("vm-{i}")).collect();
        let observed = run(pins);
        let report = judge(&observed, &s.phases_s, 0, &JudgeConfig::default());
        verdict(&s, &names, &observed, &report)
    }

    #[test]
    fn two_per_pcpu_then_nothing_passes_course_case_2() {
        let v = judged(
            "course-cpu-2",
            &[
                [0, 0, 0, 0],
                [0, 0, 0, 0],
                [1, 0, 1, 0],
                [1, 0, 1, 0],
                [1, 0, 1, 0],
            ],
        );
        assert_eq!((v.pass, v.placed_s), (true, Some(2.0)), "{v:?}");
        // Swapping two VMs later keeps it even but is churn.
        let v = judged(
            "course-cpu-2",
            &[
                [0, 0, 0, 0],
                [1, 0, 1, 0],
                [1, 0, 1, 0],
                [0, 1, 1, 0],
                [0, 1, 1, 0],
            ],
        );
        assert!(!v.pass);
        assert_eq!(v.failed, ["1 pin changes after the placement was even"]);
        // Three on one pCPU at the end: never even for good.
        let v = judged("course-cpu-2", &[[0, 0, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]);
        assert_eq!(v.failed, ["never reached an even placement and kept it"]);
    }

    #[test]
    fn course_case_3_wants_one_heavy_and_one_light_per_pcpu() {
        // vm-1 and vm-3 are heavy, vm-2 and vm-4 light; they start with the
        // heavy ones on pCPU 0.
        let start = [0, 1, 0, 1];
        let v = judged("course-cpu-3", &[start, [0, 1, 1, 0], [0, 1, 1, 0]]);
        assert!(v.pass, "{v:?}");
        let v = judged("course-cpu-3", &[start, start, start]);
        assert!(!v.pass, "two per pCPU but both heavy on one: {v:?}");
    }

    #[test]
    fn course_case_1_fails_on_any_pin_change() {
        let v = judged("course-cpu-1", &[[0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]]);
        assert_eq!(v.failed, ["2 pin changes on a placement that was balanced"]);
        assert!(judged("course-cpu-1", &[[0, 1, 0, 1], [0, 1, 0, 1]]).pass);
    }

    #[test]
    fn memory_rules_name_each_broken_rule() {
        let good = Figures {
            balance_s: Some(0.0),
            first_pins: 0,
            repins: 0,
            repins_after_balance: 0,
            settled_sd_pct: 0.0,
            min_unused_mib: 120.0,
            seconds_under_floor: 0.0,
            oom_kills: 0,
            host_min_free_mib: 9000.0,
            peak_actual_mib: 3000.0,
            end_actual_mib: 2200.0,
            vcpu_changes: 0,
            start_actual_mib: 2048.0,
            min_actual_mib: 300.0,
            max_release_share: 0.25,
            grown_on_a_short_host: 0,
        };
        assert!(memory_rules(&good).is_empty());
        let bad = Figures {
            oom_kills: 1,
            seconds_under_floor: 3.0,
            min_unused_mib: 40.0,
            min_actual_mib: 150.0,
            max_release_share: 0.67,
            grown_on_a_short_host: 2,
            end_actual_mib: 2900.0,
            ..good
        };
        assert_eq!(
            memory_rules(&bad),
            [
                "1 OOM kills in the guests",
                "3 s under the floor of unused memory (least: 40 MiB)",
                "a VM down to 150 MiB (at least 200)",
                "released 67 % of a VM's spare memory at once (at most 50 %)",
                "2 times a VM grew while the host was at its floor",
                "852 of the 952 MiB grown still held at the end",
            ]
        );
    }
}
