//! The host model the simulator steps, every 0.1 s.
//!
//! - CPU: each VM's workload wants `cpu_pct` (plus up to `cpu_noise_pct`
//!   points of noise that changes every second), spread evenly over its online vCPUs, at most
//!   100 % each. A pCPU shares itself fairly (water-filling, like CFS): who
//!   wants less than an equal share gets it all, the rest split what is left.
//! - Unpinned vCPUs float like under Linux: now and then (0.2/s) a vCPU
//!   wakes on a random allowed pCPU, and the load balancer pulls it to the
//!   least-loaded allowed pCPU only when its own pCPU is busier than that
//!   one by 10 points even without it, so vCPUs stick but do drift.
//! - Memory: the balloon moves 500 MiB/s towards its target and cannot take
//!   memory in use. The guest uses `base_mib` plus the workload's demand;
//!   when that exceeds `actual`, the guest, having touched all its memory,
//!   OOM-kills the workload (its memory is freed and it grows again only as
//!   its trace grows further). The host
//!   holds what each guest ever touched, up to `actual` (no free page
//!   reporting, as in the course), so host free memory falls as guests touch
//!   memory and rises only when balloons take memory back. No autodeflate.
//! - Balloon stats refresh once a second at half past, so a sample is up to
//!   a second old, as with `<stats period='1'/>`.
//! - Hot-plug: a vCPU comes online 1 s after it is asked for; an unplug takes
//!   4 s (longer than a round, as under TCG), so it is seen as pending.

use super::scenario::{Scenario, VmSpec};
use crate::manage::action::Action;
use crate::manage::snapshot::{BalloonSample, HostSample, Snapshot, VcpuSample, VmSample};

pub const TICK_S: f64 = 0.1;
const HOP_PER_S: f64 = 0.2;
const STICKY_PCT: f64 = 10.0;
const BALLOON_KIB_S: f64 = 500.0 * 1024.0;
const STATS_PHASE_S: f64 = 0.5;
const PLUG_S: f64 = 1.0;
const UNPLUG_S: f64 = 4.0;
/// Guest wall-clock seconds at the start, for `last_update`.
const GUEST_EPOCH_S: u64 = 1_700_000_000;

pub struct Host {
    t_s: f64,
    pcpus: u32,
    total_kib: f64,
    base_kib: f64,
    noise_pct: f64,
    vms: Vec<Vm>,
    rng: u64,
}

struct Vm {
    spec: VmSpec,
    vcpus: Vec<Vcpu>,
    /// vCPU count asked for and when it takes effect.
    pending: Option<(u32, f64)>,
    actual_kib: f64,
    target_kib: f64,
    touched_kib: f64,
    /// Demand freed by OOM kills, until the trace falls below it.
    killed_mib: f64,
    oom_kills: u32,
    noise_pct: f64,
    stats: Option<BalloonSample>,
}

struct Vcpu {
    cpu_time_ns: f64,
    on: u32,
    affinity: Vec<u32>,
}

impl Host {
    pub fn new(scenario: &Scenario) -> Host {
        let pcpus = scenario.host.pcpus;
        let vms = scenario
            .vms
            .iter()
            .map(|spec| {
                let vcpus = (0..spec.vcpus as usize)
                    .map(|i| match spec.pins.get(i).copied().flatten() {
                        Some(p) => Vcpu::new(p, vec![p]),
                        None => Vcpu::new(i as u32 % pcpus, (0..pcpus).collect()),
                    })
                    .collect();
                let kib = spec.memory_mib as f64 * 1024.0;
                Vm {
                    spec: spec.clone(),
                    vcpus,
                    pending: None,
                    actual_kib: kib,
                    target_kib: kib,
                    touched_kib: spec.base_mib as f64 * 1024.0,
                    killed_mib: 0.0,
                    oom_kills: 0,
                    noise_pct: 0.0,
                    stats: None,
                }
            })
            .collect();
        Host {
            t_s: 0.0,
            pcpus,
            total_kib: scenario.host.total_mib as f64 * 1024.0,
            base_kib: scenario.host.base_mib as f64 * 1024.0,
            noise_pct: scenario.host.cpu_noise_pct,
            vms,
            rng: 0x5eed,
        }
    }

    pub fn t_s(&self) -> f64 {
        self.t_s
    }

    pub fn has_vm(&self, name: &str) -> bool {
        self.vms.iter().any(|vm| vm.spec.name == name)
    }

    pub fn oom_kills(&self) -> u32 {
        self.vms.iter().map(|vm| vm.oom_kills).sum()
    }

    pub fn step(&mut self) {
        let second_before = self.t_s.floor();
        self.t_s += TICK_S;
        let t = self.t_s;
        if t.floor() > second_before {
            for vm in &mut self.vms {
                vm.noise_pct = (random(&mut self.rng) * 2.0 - 1.0) * self.noise_pct;
            }
        }
        for vm in &mut self.vms {
            vm.hotplug(t, self.pcpus);
        }
        let demand: Vec<Vec<f64>> = self.vms.iter().map(|vm| vm.vcpu_demand(t)).collect();
        self.float(&demand);
        self.share_pcpus(&demand);
        for vm in &mut self.vms {
            vm.memory(t);
        }
    }

    /// What libvirt would report now.
    pub fn snapshot(&self) -> Snapshot {
        let touched: f64 = self.vms.iter().map(|vm| vm.touched_kib).sum();
        let free_kib = (self.total_kib - self.base_kib - touched).max(0.0);
        Snapshot {
            at_s: self.t_s,
            host: HostSample {
                pcpus: self.pcpus,
                free_kib: free_kib as u64,
                total_kib: self.total_kib as u64,
                pcpu_busy_ns: Vec::new(),
            },
            vms: self.vms.iter().map(Vm::sample).collect(),
        }
    }

    /// Applies an action as libvirt would, refusing what libvirt refuses.
    pub fn apply(&mut self, action: &Action) -> Result<(), String> {
        let t = self.t_s;
        let pcpus = self.pcpus;
        let vm = self
            .vms
            .iter_mut()
            .find(|vm| vm.spec.name == action.vm())
            .ok_or_else(|| format!("no VM `{}`", action.vm()))?;
        match action {
            Action::Pin {
                vcpu, pcpus: set, ..
            } => {
                let v = vm
                    .vcpus
                    .get_mut(*vcpu as usize)
                    .ok_or(format!("no vCPU {vcpu}"))?;
                if set.is_empty() || set.iter().any(|p| *p >= pcpus) {
                    return Err(format!("bad cpuset {set:?}"));
                }
                v.affinity = set.clone();
                if !set.contains(&v.on) {
                    v.on = set[0];
                }
            }
            Action::SetMemory { target_kib, .. } => {
                if *target_kib as f64 > vm.spec.max_mib as f64 * 1024.0 {
                    return Err(format!("{target_kib} KiB is above the maximum"));
                }
                vm.target_kib = *target_kib as f64;
            }
            Action::SetVcpus { count, .. } => {
                if *count == 0 || *count > vm.spec.vcpus_max {
                    return Err(format!("{count} vCPUs is out of range"));
                }
                let delay = if *count as usize > vm.vcpus.len() {
                    PLUG_S
                } else {
                    UNPLUG_S
                };
                vm.pending = Some((*count, t + delay));
            }
        }
        Ok(())
    }

    /// Unpinned vCPUs drift and get pulled back (see the module notes).
    fn float(&mut self, demand: &[Vec<f64>]) {
        let mut load = vec![0.0; self.pcpus as usize];
        for (vm, d) in self.vms.iter().zip(demand) {
            for (v, d) in vm.vcpus.iter().zip(d) {
                load[v.on as usize] += d;
            }
        }
        for (vm, d) in self.vms.iter_mut().zip(demand) {
            for (v, &d) in vm.vcpus.iter_mut().zip(d) {
                if v.affinity.len() < 2 {
                    continue;
                }
                let hop = random(&mut self.rng) < HOP_PER_S * TICK_S;
                let pick = random(&mut self.rng);
                load[v.on as usize] -= d;
                if hop {
                    v.on = v.affinity[(pick * v.affinity.len() as f64) as usize];
                }
                let best = *v
                    .affinity
                    .iter()
                    .min_by(|a, b| load[**a as usize].total_cmp(&load[**b as usize]))
                    .expect("affinity is not empty");
                if load[v.on as usize] > load[best as usize] + STICKY_PCT {
                    v.on = best;
                }
                load[v.on as usize] += d;
            }
        }
    }

    /// Each pCPU shared fairly among the vCPUs on it this tick.
    fn share_pcpus(&mut self, demand: &[Vec<f64>]) {
        let mut queues: Vec<Vec<(usize, usize, f64)>> = vec![Vec::new(); self.pcpus as usize];
        for (i, vm) in self.vms.iter().enumerate() {
            for (j, v) in vm.vcpus.iter().enumerate() {
                queues[v.on as usize].push((i, j, demand[i][j]));
            }
        }
        for mut queue in queues {
            queue.sort_by(|a, b| a.2.total_cmp(&b.2));
            let mut left = 100.0;
            let mut waiting = queue.len() as f64;
            for (i, j, want) in queue {
                let got = want.min(left / waiting);
                left -= got;
                waiting -= 1.0;
                self.vms[i].vcpus[j].cpu_time_ns += got / 100.0 * TICK_S * 1e9;
            }
        }
    }
}

/// splitmix64 in [0, 1): deterministic runs.
fn random(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

impl Vcpu {
    fn new(on: u32, affinity: Vec<u32>) -> Vcpu {
        Vcpu {
            cpu_time_ns: 0.0,
            on,
            affinity,
        }
    }
}

impl Vm {
    fn vcpu_demand(&self, t: f64) -> Vec<f64> {
        let total = (self.spec.cpu_pct.at(t) + self.noise_pct).max(0.0);
        let each = (total / self.vcpus.len() as f64).min(100.0);
        vec![each; self.vcpus.len()]
    }

    fn hotplug(&mut self, t: f64, pcpus: u32) {
        let Some((count, due_s)) = self.pending else {
            return;
        };
        if t < due_s {
            return;
        }
        self.pending = None;
        let count = count as usize;
        self.vcpus.truncate(count);
        while self.vcpus.len() < count {
            self.vcpus.push(Vcpu::new(0, (0..pcpus).collect()));
        }
    }

    fn memory(&mut self, t: f64) {
        let wanted_mib = self.spec.memory_mib_demand.at(t);
        self.killed_mib = self.killed_mib.min(wanted_mib);
        let base = self.spec.base_mib as f64 * 1024.0;
        let mut in_use = base + (wanted_mib - self.killed_mib) * 1024.0;
        let travel = BALLOON_KIB_S * TICK_S;
        self.actual_kib = if self.target_kib >= self.actual_kib {
            self.target_kib.min(self.actual_kib + travel)
        } else {
            self.target_kib
                .max(self.actual_kib - travel)
                .max(in_use.min(self.actual_kib))
        };
        if in_use > self.actual_kib {
            self.oom_kills += 1;
            self.killed_mib = wanted_mib;
            self.touched_kib = self.actual_kib;
            in_use = base;
        }
        self.touched_kib = self.actual_kib.min(self.touched_kib.max(in_use));
        let second = (t - STATS_PHASE_S).floor();
        let last_update_s = GUEST_EPOCH_S + second as u64;
        if second >= 0.0 && self.stats.is_none_or(|s| s.last_update_s < last_update_s) {
            let unused = self.actual_kib - in_use;
            self.stats = Some(BalloonSample {
                actual_kib: self.actual_kib as u64,
                unused_kib: unused as u64,
                available_kib: self.actual_kib as u64,
                usable_kib: Some(unused as u64),
                rss_kib: Some(self.touched_kib as u64),
                last_update_s,
            });
        }
    }

    fn sample(&self) -> VmSample {
        VmSample {
            name: self.spec.name.clone(),
            vcpus: self
                .vcpus
                .iter()
                .map(|v| VcpuSample {
                    cpu_time_ns: v.cpu_time_ns as u64,
                    pcpu: v.on,
                    affinity: v.affinity.clone(),
                })
                .collect(),
            vcpus_current: self.vcpus.len() as u32,
            vcpus_max: self.spec.vcpus_max,
            memory_max_kib: self.spec.max_mib * 1024,
            memory_current_kib: self.actual_kib as u64,
            balloon: self.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::sim::scenario::Expect;
    use crate::manage::sim::scenario::HostSpec;
    use crate::manage::sim::trace::Trace;
    use crate::metrics::cpu::CpuUse;

    fn spec(name: &str, pin: Option<u32>, cpu_pct: f64, memory: Trace) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            vcpus: 1,
            vcpus_max: 2,
            pins: vec![pin],
            memory_mib: 1024,
            max_mib: 2048,
            base_mib: 150,
            cpu_pct: Trace::flat(cpu_pct),
            memory_mib_demand: memory,
        }
    }

    fn host(vms: Vec<VmSpec>) -> Host {
        Host::new(&Scenario {
            name: "test",
            about: "",
            duration_s: 10.0,
            phases_s: vec![0.0],
            host: HostSpec {
                pcpus: 2,
                total_mib: 8192,
                base_mib: 1024,
                cpu_noise_pct: 0.0,
            },
            vms,
            expect: Expect::Balanced,
        })
    }

    fn steps(h: &mut Host, seconds: f64) {
        for _ in 0..(seconds / TICK_S).round() as u32 {
            h.step();
        }
    }

    fn vm<'a>(s: &'a Snapshot, name: &str) -> &'a VmSample {
        s.vms.iter().find(|v| v.name == name).unwrap()
    }

    #[test]
    fn a_pcpu_is_shared_fairly() {
        let idle = || Trace::flat(0.0);
        let mut h = host(vec![
            spec("a", Some(0), 100.0, idle()),
            spec("b", Some(0), 100.0, idle()),
            spec("c", Some(0), 20.0, idle()),
        ]);
        let before = h.snapshot();
        steps(&mut h, 1.0);
        let cpu = CpuUse::between(&before, &h.snapshot()).unwrap();
        let pct: Vec<f64> = cpu.vcpu_pct.iter().map(|v| v[0].unwrap().round()).collect();
        assert_eq!(pct, [40.0, 40.0, 20.0]);
    }

    #[test]
    fn unpinned_vcpus_spread_over_allowed_pcpus() {
        let mut h = host(vec![
            spec("a", None, 100.0, Trace::flat(0.0)),
            spec("b", None, 100.0, Trace::flat(0.0)),
        ]);
        steps(&mut h, 1.0);
        let s = h.snapshot();
        assert_ne!(vm(&s, "a").vcpus[0].pcpu, vm(&s, "b").vcpus[0].pcpu);
    }

    #[test]
    fn the_balloon_moves_at_its_speed_and_cannot_take_memory_in_use() {
        let mut h = host(vec![spec("a", Some(0), 0.0, Trace::flat(700.0))]);
        h.apply(&Action::SetMemory {
            vm: "a".into(),
            target_kib: 2048 * 1024,
        })
        .unwrap();
        steps(&mut h, 1.0);
        assert_eq!(h.snapshot().vms[0].memory_current_kib, 1524 * 1024);
        h.apply(&Action::SetMemory {
            vm: "a".into(),
            target_kib: 512 * 1024,
        })
        .unwrap();
        steps(&mut h, 5.0);
        assert_eq!(
            h.snapshot().vms[0].memory_current_kib,
            850 * 1024,
            "base 150 + demand 700"
        );
        assert_eq!(h.oom_kills(), 0);
    }

    #[test]
    fn demand_beyond_the_guests_memory_is_oom_killed_and_freed() {
        let hog = Trace::steps(&[(0.0, 0.0), (0.5, 1000.0)]);
        let mut h = host(vec![spec("a", Some(0), 0.0, hog)]);
        steps(&mut h, 1.0);
        assert_eq!(h.oom_kills(), 1);
        steps(&mut h, 1.0);
        let stats = h.snapshot().vms[0].balloon.unwrap();
        assert_eq!(
            stats.unused_kib,
            (1024 - 150) * 1024,
            "the killed workload's memory is free"
        );
        assert_eq!(
            h.snapshot().host.free_kib,
            (8192 - 1024 - 1024) * 1024,
            "touched memory stays on the host"
        );
    }

    #[test]
    fn stats_refresh_once_a_second() {
        let mut h = host(vec![spec("a", Some(0), 0.0, Trace::flat(0.0))]);
        assert_eq!(h.snapshot().vms[0].balloon, None);
        steps(&mut h, 1.0);
        let first = h.snapshot().vms[0].balloon.unwrap().last_update_s;
        steps(&mut h, 0.4);
        assert_eq!(h.snapshot().vms[0].balloon.unwrap().last_update_s, first);
        steps(&mut h, 0.2);
        assert_eq!(
            h.snapshot().vms[0].balloon.unwrap().last_update_s,
            first + 1
        );
    }

    #[test]
    fn a_plug_takes_a_second_and_an_unplug_four() {
        let mut h = host(vec![spec("a", Some(0), 0.0, Trace::flat(0.0))]);
        let count = |h: &Host| h.snapshot().vms[0].vcpus_current;
        h.apply(&Action::SetVcpus {
            vm: "a".into(),
            count: 2,
        })
        .unwrap();
        steps(&mut h, 0.9);
        assert_eq!(count(&h), 1);
        steps(&mut h, 0.2);
        assert_eq!(count(&h), 2);
        assert_eq!(
            h.snapshot().vms[0].vcpus[1].affinity,
            [0, 1],
            "a new vCPU is unpinned"
        );
        h.apply(&Action::SetVcpus {
            vm: "a".into(),
            count: 1,
        })
        .unwrap();
        steps(&mut h, 3.9);
        assert_eq!(count(&h), 2);
        steps(&mut h, 0.2);
        assert_eq!(count(&h), 1);
    }

    #[test]
    fn refuses_what_libvirt_refuses() {
        let mut h = host(vec![spec("a", Some(0), 0.0, Trace::flat(0.0))]);
        for bad in [
            Action::Pin {
                vm: "a".into(),
                vcpu: 0,
                pcpus: vec![2],
            },
            Action::Pin {
                vm: "a".into(),
                vcpu: 1,
                pcpus: vec![0],
            },
            Action::Pin {
                vm: "a".into(),
                vcpu: 0,
                pcpus: vec![],
            },
            Action::SetMemory {
                vm: "a".into(),
                target_kib: 4096 * 1024,
            },
            Action::SetVcpus {
                vm: "a".into(),
                count: 3,
            },
            Action::SetVcpus {
                vm: "zz".into(),
                count: 1,
            },
        ] {
            assert!(h.apply(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
