//! A simulated host under the manager's own loop.
//!
//! [`run`] puts the [`host::Host`] model behind the hypervisor traits the
//! real loop uses (it samples and acts as libvirt does), and behind its
//! clock: while the loop waits for its next round, the model runs, and is
//! sampled once a second for the judge. So a simulated run goes through the
//! same loop, executor (pending and vanished VMs included) and decision
//! log as `vmlab manage`. Scenarios are data ([`scenario::library`]).

pub mod host;
pub mod scenario;
pub mod trace;

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Result, anyhow};

use super::action::{Action, Decision};
use super::execute::Applied;
use super::judge::{JudgeConfig, Report, judge};
use super::policy::ManageConfig;
use super::run::{self as manager, Clock, Hooks, Options};
use super::snapshot::Snapshot;
use crate::hypervisor::sample::Sampler;
use crate::hypervisor::{Actuator, Vanished};
use crate::units::{CpuSet, Kib};
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
    let sim = Sim::new(scenario);
    let names: Vec<String> = scenario.vms.iter().map(|v| v.name.clone()).collect();
    let (mut decisions, mut refused) = (Vec::new(), Vec::new());
    let opts = Options {
        config: config.clone(),
        dry_run: false,
        once: false,
        run: None,
    };
    manager::run(
        &|| Ok(sim.clone()),
        &|_| Ok(names.clone()),
        &opts,
        &sim,
        Hooks {
            say: &|_| {},
            decided: &mut |t_s, decision: &Decision, applied: &Applied| {
                match applied {
                    Applied::Failed(e) => refused.push(format!("{:?}: {e}", decision.action)),
                    Applied::Vanished => refused.push(format!("{:?}: vanished", decision.action)),
                    _ => {}
                }
                decisions.push((t_s, decision.clone()));
            },
        },
    )
    .expect("the model never fails a round");
    let model = sim.model();
    let report = judge(
        &model.judged,
        &scenario.phases_s,
        model.host.oom_kills(),
        &JudgeConfig::default(),
    );
    Run {
        snapshots: model.judged.clone(),
        decisions,
        refused,
        report,
    }
}

/// The model as the loop sees it: a connection (cloned by `connect`), an
/// actuator and the clock.
#[derive(Clone)]
struct Sim(Arc<Mutex<Model>>);

struct Model {
    host: Host,
    tick: u64,
    last_tick: u64,
    /// The judge's samples: at the start and every second.
    judged: Vec<Snapshot>,
}

const TICKS_PER_S: u64 = 10;

impl Sim {
    fn new(scenario: &Scenario) -> Sim {
        let host = Host::new(scenario);
        let judged = vec![host.snapshot()];
        Sim(Arc::new(Mutex::new(Model {
            host,
            tick: 0,
            last_tick: (scenario.duration_s / TICK_S).round() as u64,
            judged,
        })))
    }

    fn model(&self) -> MutexGuard<'_, Model> {
        self.0.lock().expect("the model's lock")
    }

    /// Applies an action as libvirt would: a VM the model lacks is gone.
    fn act(&self, action: Action) -> Result<()> {
        let mut model = self.model();
        if !model.host.has_vm(action.vm()) {
            return Err(Vanished(action.vm().to_string()).into());
        }
        model.host.apply(&action).map_err(|e| anyhow!(e))
    }
}

impl Sampler for Sim {
    fn sample(&self, domains: &[String]) -> Result<Snapshot> {
        let mut snap = self.model().host.snapshot();
        snap.vms.retain(|vm| domains.contains(&vm.name));
        Ok(snap)
    }
}

impl Actuator for Sim {
    fn set_vcpus(&self, name: &str, count: u32) -> Result<()> {
        self.act(Action::SetVcpus {
            vm: name.into(),
            count,
        })
    }

    fn set_memory(&self, name: &str, target: Kib) -> Result<()> {
        self.act(Action::SetMemory {
            vm: name.into(),
            target_kib: target.0,
        })
    }

    fn rearm_balloon_stats(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn pin_vcpu(&self, name: &str, vcpu: u32, pcpus: &CpuSet) -> Result<()> {
        self.act(Action::Pin {
            vm: name.into(),
            vcpu,
            pcpus: pcpus.cpus().to_vec(),
        })
    }
}

impl Clock for Sim {
    /// Runs the model for `seconds` (a sample for the judge every second);
    /// `false` once the scenario is over.
    fn pause(&self, seconds: f64) -> bool {
        let mut model = self.model();
        let wanted = model.tick + (seconds / TICK_S).round().max(1.0) as u64;
        let until = wanted.min(model.last_tick);
        while model.tick < until {
            model.host.step();
            model.tick += 1;
            if model.tick.is_multiple_of(TICKS_PER_S) {
                let snap = model.host.snapshot();
                model.judged.push(snap);
            }
        }
        wanted <= model.last_tick
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
            expect: super::scenario::Expect::Balanced,
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

#[cfg(test)]
mod course {
    use super::*;
    use crate::manage::sim::scenario::{Scale, library};
    use crate::manage::verdict::verdict;

    /// Every course case but the third CPU one, which the own pin policy
    /// fails today: once both pCPUs are full, a busy VM alone beside a busy
    /// one with the light ones looks balanced to it (the scorecard says so;
    /// when this changes, this test says so too).
    #[test]
    fn the_own_policies_pass_the_course_cases_but_cpu_3_in_the_simulator() {
        for pcpus in [2, 4] {
            let scenarios = library(Scale { pcpus, vms: 4 });
            for s in scenarios.iter().filter(|s| s.name.starts_with("course-")) {
                let run = run(s, &ManageConfig::default());
                let names: Vec<String> = s.vms.iter().map(|v| v.name.clone()).collect();
                let v = verdict(s, &names, &run.snapshots, &run.report);
                let known_fail = s.name == "course-cpu-3";
                assert_eq!(
                    v.pass, !known_fail,
                    "{} at {pcpus} pCPUs: {:?}",
                    s.name, v.failed
                );
                assert!(run.refused.is_empty(), "{:?}", run.refused);
            }
        }
    }
}
