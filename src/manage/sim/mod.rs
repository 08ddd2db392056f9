//! A simulated host that drives the same policy code as the real loop.
//!
//! [`run`] steps the [`host::Host`] model, samples it once a second for the
//! judge, plans every `interval_s` with [`policy::plan`] and applies the
//! decisions as libvirt would. Scenarios are data ([`scenario::library`]).

pub mod host;
pub mod scenario;
pub mod trace;

use super::action::Decision;
use super::judge::{JudgeConfig, Report, judge};
use super::policy::{self, ManageConfig, State};
use super::snapshot::Snapshot;
use host::{Host, TICK_S};
use scenario::Scenario;

/// Everything a simulated run produced.
#[derive(Debug)]
pub struct Run {
    /// One a second, as the course's monitor samples.
    pub snapshots: Vec<Snapshot>,
    /// With the time of the round that made them.
    pub decisions: Vec<(f64, Decision)>,
    /// Actions the model refused, as libvirt would have (a policy bug).
    pub refused: Vec<String>,
    pub report: Report,
}

/// Runs `scenario` under `config`'s policies, judged against the course's
/// bars (balance sd 5, floor 100 MiB).
pub fn run(scenario: &Scenario, config: &ManageConfig) -> Run {
    let mut host = Host::new(scenario);
    let mut state = State::default();
    let ticks_per_s = (1.0 / TICK_S).round() as u64;
    let ticks_per_round = ((config.interval_s / TICK_S).round() as u64).max(1);
    let ticks = (scenario.duration_s / TICK_S).round() as u64;
    let (mut snapshots, mut decisions, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for tick in 0..=ticks {
        if tick % ticks_per_s == 0 {
            snapshots.push(host.snapshot());
        }
        if tick % ticks_per_round == 0 {
            for decision in policy::plan(&host.snapshot(), &mut state, config) {
                if let Err(e) = host.apply(&decision.action) {
                    refused.push(format!("{:?}: {e}", decision.action));
                }
                decisions.push((host.t_s(), decision));
            }
        }
        host.step();
    }
    let report = judge(
        &snapshots,
        &scenario.phases_s,
        host.oom_kills(),
        &JudgeConfig::default(),
    );
    Run {
        snapshots,
        decisions,
        refused,
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::policy::CpuPolicy;
    use crate::manage::sim::scenario::{Scale, library};

    fn runs() -> Vec<(&'static str, Run)> {
        let config = ManageConfig {
            cpu: CpuPolicy::PinHotplug,
            ..ManageConfig::default()
        };
        library(Scale::default())
            .iter()
            .map(|s| (s.name, run(s, &config)))
            .collect()
    }

    /// The goals on this host's scale, as the judge measures them.
    #[test]
    fn the_library_meets_the_goals() {
        for (name, run) in runs() {
            let r = &run.report;
            assert!(run.refused.is_empty(), "{name}: refused {:?}", run.refused);
            assert_eq!(r.oom_kills, 0, "{name}");
            assert!(r.host_min_free_mib > 200.0, "{name}");
            if name == "hotplug" {
                assert_eq!(r.vcpu_changes, 2, "one vCPU added, then removed");
                continue;
            }
            for p in &r.phases {
                let balanced = p.balanced_after_s.unwrap_or(f64::INFINITY);
                assert!(
                    balanced <= 6.0,
                    "{name}: phase at {} s balanced after {balanced} s",
                    p.start_s
                );
                assert_eq!(
                    p.repins_after_balance, 0,
                    "{name}: phase at {} s",
                    p.start_s
                );
            }
        }
    }

    /// Growth that starts from rest eats into the floor for one round at
    /// most; when it is slow enough, not at all. Excess goes back.
    #[test]
    fn floors_hold_under_slow_growth_and_excess_goes_back() {
        for (name, run) in runs() {
            let under: f64 = run
                .report
                .memory
                .iter()
                .map(|m| m.seconds_under_floor)
                .sum();
            match name {
                "consume-slow" | "all-consume" => assert_eq!(under, 0.0, "{name}"),
                "consume-fast" | "release-while-consume" => {
                    assert!(under <= 2.0, "{name}: {under} s")
                }
                _ => {}
            }
            for vm in &run.snapshots.last().expect("a run samples").vms {
                let unused_mib = vm.balloon.expect("stats").unused_kib / 1024;
                assert!(
                    unused_mib <= 200,
                    "{name}: {} kept {unused_mib} MiB unused",
                    vm.name
                );
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::manage::policy::{CpuPolicy, MemoryPolicy};
    use crate::manage::sim::scenario::{HostSpec, VmSpec};
    use crate::manage::sim::trace::Trace;
    use crate::metrics::cpu::std_dev;

    /// Single-vCPU VMs with steady loads `(use %, starting pin)`.
    fn steady(pcpus: u32, vms: &[(f64, Option<u32>)]) -> Scenario {
        Scenario {
            name: "steady",
            about: "random steady loads",
            duration_s: 60.0,
            phases_s: vec![0.0],
            host: HostSpec {
                pcpus,
                total_mib: 65536,
                base_mib: 1024,
                cpu_noise_pct: 2.0,
            },
            vms: vms
                .iter()
                .enumerate()
                .map(|(i, &(load, pin))| VmSpec {
                    name: format!("vm-{i}"),
                    vcpus: 1,
                    vcpus_max: 1,
                    pins: vec![pin.map(|p| p % pcpus)],
                    memory_mib: 1024,
                    max_mib: 2048,
                    base_mib: 150,
                    cpu_pct: Trace::flat(load),
                    memory_mib_demand: Trace::flat(50.0),
                })
                .collect(),
        }
    }

    /// Per-pCPU utilisation of a placement, as measured: at most 100 %.
    fn served(pcpus: usize, loads: &[f64], placement: impl Fn(usize) -> usize) -> Vec<f64> {
        let mut pct = vec![0.0f64; pcpus];
        for (i, l) in loads.iter().enumerate() {
            pct[placement(i)] += l;
        }
        pct.iter().map(|x| x.min(100.0)).collect()
    }

    /// The lowest standard deviation of any placement of these loads that
    /// serves as much of them as any placement can (stacking two busy vCPUs
    /// on one pCPU lowers the deviation on an idle host, but starves them).
    fn best_sd(pcpus: u32, loads: &[f64]) -> f64 {
        let p = pcpus as usize;
        let placements: Vec<(f64, f64)> = (0..p.pow(loads.len() as u32))
            .map(|code| {
                let pct = served(p, loads, |i| code / p.pow(i as u32) % p);
                (pct.iter().sum::<f64>(), std_dev(&pct))
            })
            .collect();
        let most = placements.iter().map(|x| x.0).fold(0.0, f64::max);
        placements
            .iter()
            .filter(|x| x.0 >= most - 1.0)
            .map(|x| x.1)
            .fold(f64::INFINITY, f64::min)
    }

    /// The standard deviation of the classic greedy placement of the true
    /// loads (largest first onto the least-loaded pCPU).
    fn greedy_sd(pcpus: u32, loads: &[f64]) -> f64 {
        let bins = crate::manage::policy::lpt(loads, pcpus as usize);
        std_dev(&served(pcpus as usize, loads, |i| bins[i]))
    }

    fn vms() -> impl Strategy<Value = (u32, Vec<(f64, Option<u32>)>)> {
        (2u32..=4).prop_flat_map(|pcpus| {
            (
                Just(pcpus),
                prop::collection::vec((0.0f64..100.0, prop::option::of(0u32..4)), 2..=8),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn from_any_start_it_settles_balanced_and_then_stays((pcpus, vms) in vms()) {
            let config = ManageConfig { cpu: CpuPolicy::Pin, memory: MemoryPolicy::Off, ..ManageConfig::default() };
            let run = run(&steady(pcpus, &vms), &config);
            let late: Vec<f64> = run.decisions.iter().map(|(t, _)| *t).filter(|t| *t >= 30.0).collect();
            prop_assert!(late.is_empty(), "re-pinned at {late:?} under steady load");
            let r = &run.report;
            let tail: Vec<f64> = r.t_s.iter().zip(&r.sd_pct).filter(|(t, _)| **t > 40.0).map(|(_, sd)| *sd).collect();
            let settled = tail.iter().sum::<f64>() / tail.len() as f64;
            let loads: Vec<f64> = vms.iter().map(|v| v.0).collect();
            // Optimal placement is NP-hard; the policy must reach the
            // course's bar where that is easy, and otherwise do no worse
            // than the classic greedy placement knowing the true loads.
            // Both within 3 points: a noisy reading can freeze a plan one
            // small move short.
            let (best, greedy) = (best_sd(pcpus, &loads), greedy_sd(pcpus, &loads));
            prop_assert!(
                settled <= best.max(2.0).max(greedy) + 3.0,
                "settled sd {settled:.1}, best {best:.1}, greedy {greedy:.1}"
            );
        }
    }
}
