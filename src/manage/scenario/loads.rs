//! A simulated scenario's load traces as real load generators: each CPU step
//! becomes a `cpu_hog` run for that step, each memory hump a `memory_hog`
//! run that grows at the trace's rate, holds, and gives the memory back.

use crate::manage::sim::scenario::{Scenario, VmSpec};
use crate::manage::sim::trace::Trace;

/// Below this a CPU step is the guest's own idling (the sim's idle VMs use
/// 3 %): no load is started.
const IDLE_CPU_PCT: f64 = 5.0;
/// Memory demand up to this is the idle workload of the sim, not a load.
const IDLE_MEMORY_MIB: f64 = 50.0;
/// A drop that is a step in the trace: the memory goes back at once.
const INSTANT_MIB_S: u64 = 10_000;

/// One load generator to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub at_s: f64,
    /// Index of the VM in the scenario.
    pub vm: usize,
    pub load: Load,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    Cpu {
        threads: u32,
        duty_pct: u32,
        duration_s: u64,
    },
    Memory {
        size_mib: u64,
        /// 0: all at once.
        grow_mib_per_s: u64,
        hold_s: u64,
        release_mib_per_s: u64,
    },
}

impl Load {
    /// The workload and its `--param` pairs.
    pub fn workload(&self) -> (&'static str, Vec<(String, String)>) {
        let p = |k: &str, v: u64| (k.to_string(), v.to_string());
        match *self {
            Load::Cpu {
                threads,
                duty_pct,
                duration_s,
            } => (
                "cpu_hog",
                vec![
                    p("threads", threads.into()),
                    p("duty_pct", duty_pct.into()),
                    p("duration_s", duration_s),
                ],
            ),
            Load::Memory {
                size_mib,
                grow_mib_per_s,
                hold_s,
                release_mib_per_s,
            } => (
                "memory_hog",
                vec![
                    p("size_mib", size_mib),
                    p("grow_mib_per_s", grow_mib_per_s),
                    p("hold_s", hold_s),
                    p("release_mib_per_s", release_mib_per_s),
                    p("loops", 1),
                ],
            ),
        }
    }
}

/// Every load of `scenario`, by start time. Memory sizes are multiplied by
/// `memory_scale` (the lab's VMs may be smaller than the scenario's); rates
/// are kept, since the rate is what makes growth hard.
pub fn schedule(scenario: &Scenario, memory_scale: f64) -> Vec<Start> {
    let mut out = Vec::new();
    for (vm, spec) in scenario.vms.iter().enumerate() {
        for (at_s, load) in cpu_loads(spec, scenario.duration_s) {
            out.push(Start { at_s, vm, load });
        }
        if let Some((at_s, load)) =
            memory_load(&spec.memory_mib_demand, scenario.duration_s, memory_scale)
        {
            out.push(Start { at_s, vm, load });
        }
    }
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s).then(a.vm.cmp(&b.vm)));
    out
}

/// The CPU trace's flat steps (the library's CPU traces are steps).
fn cpu_loads(spec: &VmSpec, end_s: f64) -> Vec<(f64, Load)> {
    let points = spec.cpu_pct.points();
    let mut loads = Vec::new();
    for (i, &(from_s, pct)) in points.iter().enumerate() {
        let until_s = points
            .iter()
            .skip(i + 1)
            .find(|(t, _)| *t > from_s)
            .map_or(end_s, |(t, _)| *t);
        let same_as_next = points.get(i + 1).is_some_and(|(t, _)| *t == from_s);
        if same_as_next || pct < IDLE_CPU_PCT || until_s <= from_s {
            continue;
        }
        let threads = (pct / 100.0).ceil().max(1.0) as u32;
        loads.push((
            from_s,
            Load::Cpu {
                threads,
                duty_pct: (pct / threads as f64).round().clamp(1.0, 100.0) as u32,
                duration_s: (until_s - from_s).round() as u64,
            },
        ));
    }
    loads
}

/// The memory trace's hump: where it rises (at once, or at a rate), how
/// long it holds its peak, how it comes back down.
fn memory_load(trace: &Trace, end_s: f64, scale: f64) -> Option<(f64, Load)> {
    let points = trace.points();
    let peak = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    if peak <= IDLE_MEMORY_MIB + 10.0 {
        return None;
    }
    let first_peak = points.iter().position(|p| p.1 >= peak)?;
    let last_peak = points.iter().rposition(|p| p.1 >= peak)?;
    let (peak_from_s, peak_until_s) = (points[first_peak].0, points[last_peak].0);
    let (start_s, grow) = match first_peak.checked_sub(1).map(|i| points[i]) {
        Some((t, v)) if t < peak_from_s => (t, (peak - v) / (peak_from_s - t)),
        _ => (peak_from_s, 0.0),
    };
    let (hold_until_s, release) = match points.get(last_peak + 1) {
        Some(&(t, v)) if t > peak_until_s => (peak_until_s, (peak - v) / (t - peak_until_s)),
        Some(_) => (peak_until_s, INSTANT_MIB_S as f64),
        None => (end_s, INSTANT_MIB_S as f64),
    };
    // The step up at t=0 of a trace that starts high holds until its drop.
    let hold_until_s = if first_peak == 0 && points.len() == 1 {
        end_s
    } else {
        hold_until_s
    };
    let size_mib = ((peak - IDLE_MEMORY_MIB) * scale).round() as u64;
    Some((
        start_s,
        Load::Memory {
            size_mib,
            grow_mib_per_s: grow.round() as u64,
            hold_s: (hold_until_s - peak_from_s).max(0.0).round() as u64,
            release_mib_per_s: (release.round() as u64).max(1),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::sim::scenario::named;

    fn scenario(name: &str) -> Scenario {
        named(name)
    }

    #[test]
    fn cpu_steps_become_cpu_hogs_for_their_duration() {
        let s = schedule(&scenario("changing"), 1.0);
        // vm-1 (index 0): 100 % then 100 % then 60 %, each step its own run.
        let vm0: Vec<&Start> = s.iter().filter(|x| x.vm == 0).collect();
        assert_eq!(
            vm0.iter()
                .map(|x| (x.at_s, x.load.clone()))
                .collect::<Vec<_>>(),
            [
                (
                    0.0,
                    Load::Cpu {
                        threads: 1,
                        duty_pct: 100,
                        duration_s: 40
                    }
                ),
                (
                    40.0,
                    Load::Cpu {
                        threads: 1,
                        duty_pct: 100,
                        duration_s: 40
                    }
                ),
                (
                    80.0,
                    Load::Cpu {
                        threads: 1,
                        duty_pct: 60,
                        duration_s: 40
                    }
                ),
            ]
        );
        // vm-2: light (10 %), heavy, partial: three runs too.
        let vm1: Vec<(f64, u32)> = s
            .iter()
            .filter(|x| x.vm == 1)
            .map(|x| match x.load {
                Load::Cpu { duty_pct, .. } => (x.at_s, duty_pct),
                _ => unreachable!("no memory load in `changing`"),
            })
            .collect();
        assert_eq!(vm1, [(0.0, 10), (40.0, 100), (80.0, 60)]);
        // The idle scenario starts nothing.
        assert!(schedule(&scenario("idle"), 1.0).is_empty());
    }

    #[test]
    fn a_burst_over_one_cpu_needs_two_threads() {
        let s = schedule(&scenario("hotplug"), 1.0);
        assert_eq!(
            s[0],
            Start {
                at_s: 10.0,
                vm: 0,
                load: Load::Cpu {
                    threads: 2,
                    duty_pct: 90,
                    duration_s: 40
                }
            }
        );
    }

    #[test]
    fn memory_humps_keep_rate_and_hold_and_scale_size() {
        // consume-fast: from 40 s, 60 MiB/s up to 1200 MiB, held 20 s, then gone.
        let s = schedule(&scenario("consume-fast"), 0.5);
        let memory: Vec<&Start> = s
            .iter()
            .filter(|x| matches!(x.load, Load::Memory { .. }))
            .collect();
        assert_eq!(memory.len(), 1);
        assert_eq!(
            (memory[0].at_s, memory[0].vm, memory[0].load.clone()),
            (
                40.0,
                0,
                Load::Memory {
                    size_mib: 575,
                    grow_mib_per_s: 58,
                    hold_s: 20,
                    release_mib_per_s: INSTANT_MIB_S
                }
            )
        );
        // release-while-consume: vm-1 holds 1250 MiB from the start until 50 s;
        // vm-2 climbs 40 MiB/s from 40 s and keeps it to the end.
        let s = schedule(&scenario("release-while-consume"), 1.0);
        let load = |vm| s.iter().find(|x| x.vm == vm).unwrap().clone();
        assert_eq!(
            (load(0).at_s, load(0).load),
            (
                0.0,
                Load::Memory {
                    size_mib: 1250,
                    grow_mib_per_s: 0,
                    hold_s: 50,
                    release_mib_per_s: INSTANT_MIB_S
                }
            )
        );
        assert_eq!(
            (load(1).at_s, load(1).load),
            (
                40.0,
                Load::Memory {
                    size_mib: 1400,
                    grow_mib_per_s: 40,
                    hold_s: 55,
                    release_mib_per_s: INSTANT_MIB_S
                }
            )
        );
    }
}
