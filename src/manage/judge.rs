//! The outside observer: scores a series of snapshots the way the course's
//! monitor does, so simulated and real runs are judged alike.
//!
//! Per-pCPU utilisation each sample = Σ over vCPUs of Δ(vCPU time) / Δt,
//! booked to the pCPU the vCPU ran on last. A phase (a span in which loads
//! stay put) is balanced from the first sample after which every sample's
//! standard deviation stays within the bar until the phase ends; a short
//! run over the bar after a balanced sample, with pins unchanged, is the
//! host's noise.

use super::snapshot::Snapshot;
use crate::metrics::cpu::{CpuUse, std_dev};

#[derive(Debug, Clone, PartialEq)]
pub struct JudgeConfig {
    /// The course's balance bar.
    pub balance_sd_pct: f64,
    pub floor_unused_mib: u64,
    /// The host gives no memory when it has this much free or less.
    pub host_floor_mib: u64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            balance_sd_pct: 5.0,
            floor_unused_mib: 100,
            host_floor_mib: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// End time of each measured interval, since the first snapshot.
    pub t_s: Vec<f64>,
    /// Per interval, per pCPU.
    pub pcpu_pct: Vec<Vec<f64>>,
    pub sd_pct: Vec<f64>,
    pub phases: Vec<PhaseReport>,
    pub memory: Vec<VmMemory>,
    pub host_min_free_mib: f64,
    pub oom_kills: u32,
    /// Times a VM's vCPU count changed.
    pub vcpu_changes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PhaseReport {
    pub start_s: f64,
    pub end_s: f64,
    /// Seconds from the phase's start until it stayed balanced; `None` if it
    /// never did.
    pub balanced_after_s: Option<f64>,
    /// Unpinned vCPUs that got pinned in the phase.
    pub first_pins: u32,
    /// Pinned vCPUs moved in the phase, and moved after the first balanced
    /// interval (the one the moves that balanced it fall in).
    pub repins: u32,
    pub repins_after_balance: u32,
    /// Mean standard deviation once balanced (or over the phase's second
    /// half if it never was).
    pub settled_sd_pct: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmMemory {
    pub vm: String,
    pub min_unused_mib: f64,
    pub seconds_under_floor: f64,
    pub start_actual_mib: f64,
    pub peak_actual_mib: f64,
    pub end_actual_mib: f64,
    /// The least memory the VM had.
    pub min_actual_mib: f64,
    /// The largest share of its unused memory above the floor the VM gave
    /// back between two samples (0.5: half of it at once).
    pub max_release_share: f64,
    /// Samples after which the VM grew while the host had the judge's host
    /// floor or less free.
    pub grown_on_a_short_host: u32,
}

/// Scores `snaps` (in time order). `phases_s` are the load changes in
/// seconds since the first snapshot, starting with 0; `oom_kills` comes from
/// outside (the simulator, or the guests' kernel logs).
/// A report in one line: the figures the issue asks for per scenario.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Worst phase's seconds until it stayed balanced; `None`: never.
    pub balance_s: Option<f64>,
    pub first_pins: u32,
    pub repins: u32,
    pub repins_after_balance: u32,
    /// Worst phase's standard deviation once settled.
    pub settled_sd_pct: f64,
    pub min_unused_mib: f64,
    pub seconds_under_floor: f64,
    pub oom_kills: u32,
    pub host_min_free_mib: f64,
    /// Sum over VMs of the balloon's peak, and at the end.
    pub peak_actual_mib: f64,
    pub end_actual_mib: f64,
    pub vcpu_changes: u32,
    /// Sum over VMs of the balloon at the start.
    #[serde(default)]
    pub start_actual_mib: f64,
    /// The least memory any VM had.
    #[serde(default)]
    pub min_actual_mib: f64,
    /// The largest share of a VM's spare memory given back in one step.
    #[serde(default)]
    pub max_release_share: f64,
    /// Times a VM grew while the host was at its floor or below.
    #[serde(default)]
    pub grown_on_a_short_host: u32,
}

impl Report {
    pub fn figures(&self) -> Figures {
        Figures {
            balance_s: self
                .phases
                .iter()
                .map(|p| p.balanced_after_s)
                .try_fold(0.0f64, |acc, b| b.map(|b| acc.max(b))),
            first_pins: self.phases.iter().map(|p| p.first_pins).sum(),
            repins: self.phases.iter().map(|p| p.repins).sum(),
            repins_after_balance: self.phases.iter().map(|p| p.repins_after_balance).sum(),
            settled_sd_pct: self
                .phases
                .iter()
                .map(|p| p.settled_sd_pct)
                .fold(0.0, f64::max),
            min_unused_mib: self
                .memory
                .iter()
                .map(|m| m.min_unused_mib)
                .fold(f64::INFINITY, f64::min),
            seconds_under_floor: self.memory.iter().map(|m| m.seconds_under_floor).sum(),
            oom_kills: self.oom_kills,
            host_min_free_mib: self.host_min_free_mib,
            peak_actual_mib: self.memory.iter().map(|m| m.peak_actual_mib).sum(),
            end_actual_mib: self.memory.iter().map(|m| m.end_actual_mib).sum(),
            vcpu_changes: self.vcpu_changes,
            start_actual_mib: self.memory.iter().map(|m| m.start_actual_mib).sum(),
            min_actual_mib: self
                .memory
                .iter()
                .map(|m| m.min_actual_mib)
                .fold(f64::INFINITY, f64::min),
            max_release_share: self
                .memory
                .iter()
                .map(|m| m.max_release_share)
                .fold(0.0, f64::max),
            grown_on_a_short_host: self.memory.iter().map(|m| m.grown_on_a_short_host).sum(),
        }
    }
}

impl Figures {
    /// Column names for [`Figures`]' `Display`.
    pub fn header() -> String {
        format!(
            "{:>9} {:>5} {:>6} {:>9} {:>6} {:>8} {:>8} {:>5} {:>9} {:>13} {:>6}",
            "balance_s",
            "pins",
            "repins",
            "re_after",
            "sd",
            "min_unus",
            "s<floor",
            "oom",
            "host_min",
            "peak->end MiB",
            "vcpus±"
        )
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9} {:>5} {:>6} {:>9} {:>6.1} {:>8.0} {:>8.0} {:>5} {:>9.0} {:>13} {:>6}",
            self.balance_s
                .map_or("-".to_string(), |b| format!("{b:.0}")),
            self.first_pins,
            self.repins,
            self.repins_after_balance,
            self.settled_sd_pct,
            self.min_unused_mib,
            self.seconds_under_floor,
            self.oom_kills,
            self.host_min_free_mib,
            format!("{:.0}->{:.0}", self.peak_actual_mib, self.end_actual_mib),
            self.vcpu_changes
        )
    }
}

/// Samples closer than this are merged into the next interval: over a few
/// milliseconds the host's scheduler quantum decides who ran, not the
/// placement (a stalled sampler takes its next sample at once).
const MIN_INTERVAL_S: f64 = 0.5;
/// The longest run over the balance bar, first to last sample, that can be
/// noise: shorter than the manager's default interval, so no policy could
/// have answered it.
const NOISE_MAX_S: f64 = 2.0;

pub fn judge(snaps: &[Snapshot], phases_s: &[f64], oom_kills: u32, cfg: &JudgeConfig) -> Report {
    let t0 = snaps.first().map_or(0.0, |s| s.at_s);
    let mut report = Report {
        t_s: Vec::new(),
        pcpu_pct: Vec::new(),
        sd_pct: Vec::new(),
        phases: Vec::new(),
        memory: memory(snaps, cfg),
        host_min_free_mib: snaps
            .iter()
            .map(|s| s.host.free_kib as f64 / 1024.0)
            .fold(f64::INFINITY, f64::min),
        oom_kills,
        vcpu_changes: 0,
    };
    let mut pins_at = Vec::new();
    for (prev, now) in intervals(snaps) {
        let Some(cpu) = CpuUse::between(prev, now) else {
            continue;
        };
        let pct = cpu.pcpu_pct(now);
        report.sd_pct.push(std_dev(&pct));
        report.pcpu_pct.push(pct);
        report.t_s.push(now.at_s - t0);
        let c = changes(prev, now);
        pins_at.push(c);
        report.vcpu_changes += c.resized;
    }
    let end_s = report.t_s.last().copied().unwrap_or(0.0);
    for (k, &start_s) in phases_s.iter().enumerate() {
        let stop_s = phases_s.get(k + 1).copied().unwrap_or(end_s);
        let idx: Vec<usize> = (0..report.t_s.len())
            .filter(|&i| report.t_s[i] > start_s && report.t_s[i] <= stop_s)
            .collect();
        report
            .phases
            .push(phase(&report, &pins_at, &idx, start_s, stop_s, cfg));
    }
    report
}

/// The pairs of samples to measure between: consecutive ones, except that
/// a sample closer than [`MIN_INTERVAL_S`] to the last one kept is skipped.
fn intervals(snaps: &[Snapshot]) -> Vec<(&Snapshot, &Snapshot)> {
    let mut pairs = Vec::new();
    let Some((mut prev, rest)) = snaps.split_first() else {
        return pairs;
    };
    for now in rest {
        if now.at_s - prev.at_s >= MIN_INTERVAL_S {
            pairs.push((prev, now));
            prev = now;
        }
    }
    pairs
}

fn phase(
    r: &Report,
    pins_at: &[Changes],
    idx: &[usize],
    start_s: f64,
    end_s: f64,
    cfg: &JudgeConfig,
) -> PhaseReport {
    let bad = last_unbalanced(r, pins_at, idx, cfg);
    let settled_from = match bad {
        None => Some(0),
        Some(b) if b + 1 < idx.len() => Some(b + 1),
        Some(_) => None,
    };
    // Balanced at the start of the first good interval.
    let balanced_after_s = settled_from.map(|k| match k {
        0 => 0.0,
        k => r.t_s[idx[k - 1]] - start_s,
    });
    let tail = &idx[settled_from.unwrap_or(idx.len() / 2)..];
    let mean = |xs: &[usize]| xs.iter().map(|&i| r.sd_pct[i]).sum::<f64>() / xs.len().max(1) as f64;
    let repins = |from: usize| {
        idx[from.min(idx.len())..]
            .iter()
            .map(|&i| pins_at[i].repins)
            .sum()
    };
    PhaseReport {
        start_s,
        end_s,
        balanced_after_s,
        first_pins: idx.iter().map(|&i| pins_at[i].first_pins).sum(),
        repins: repins(0),
        // Moves in the first balanced interval are what balanced it, unless
        // the phase was balanced from its start.
        repins_after_balance: settled_from.map_or(0, |k| repins(if k == 0 { 0 } else { k + 1 })),
        settled_sd_pct: mean(tail),
    }
}

/// Position in `idx` of the last sample over the bar that is not noise. A
/// short run of samples over the bar (up to [`NOISE_MAX_S`] seconds) after
/// one within it, with no pin changed, is the host's noise (another
/// process, a late sample), not the placement: loads are steady within a
/// phase, and the placement that was balanced is still the same.
fn last_unbalanced(
    r: &Report,
    pins_at: &[Changes],
    idx: &[usize],
    cfg: &JudgeConfig,
) -> Option<usize> {
    let over = |k: usize| r.sd_pct[idx[k]] > cfg.balance_sd_pct;
    let moved = |k: usize| pins_at[idx[k]].repins + pins_at[idx[k]].first_pins > 0;
    let mut k = idx.len();
    while k > 0 {
        k -= 1;
        if !over(k) {
            continue;
        }
        let end = k;
        while k > 0 && over(k - 1) {
            k -= 1;
        }
        let short = r.t_s[idx[end]] - r.t_s[idx[k]] < NOISE_MAX_S;
        let noise = k > 0 && short && !(k..=(end + 1).min(idx.len() - 1)).any(moved);
        if !noise {
            return Some(end);
        }
    }
    None
}

/// What changed between two samples.
#[derive(Debug, Clone, Copy, Default)]
struct Changes {
    /// vCPUs that could run anywhere and now cannot.
    first_pins: u32,
    /// vCPUs already restricted whose pins changed.
    repins: u32,
    /// VMs whose vCPU count changed.
    resized: u32,
}

fn changes(prev: &Snapshot, now: &Snapshot) -> Changes {
    let before = super::snapshot::by_name(prev);
    let mut c = Changes::default();
    for vm in &now.vms {
        let Some(old) = before.get(vm.name.as_str()) else {
            continue;
        };
        c.resized += u32::from(old.vcpus_current != vm.vcpus_current);
        for (new, was) in vm.vcpus.iter().zip(&old.vcpus) {
            if new.affinity == was.affinity {
                continue;
            }
            if was.affinity.len() >= prev.host.pcpus as usize {
                c.first_pins += 1;
            } else {
                c.repins += 1;
            }
        }
    }
    c
}

fn memory(snaps: &[Snapshot], cfg: &JudgeConfig) -> Vec<VmMemory> {
    let Some(last) = snaps.last() else {
        return Vec::new();
    };
    let floor = cfg.floor_unused_mib as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    last.vms
        .iter()
        .map(|vm| {
            let mut m = VmMemory {
                vm: vm.name.clone(),
                min_unused_mib: f64::INFINITY,
                seconds_under_floor: 0.0,
                start_actual_mib: f64::NAN,
                peak_actual_mib: 0.0,
                end_actual_mib: mib(vm.memory_current_kib),
                min_actual_mib: f64::INFINITY,
                max_release_share: 0.0,
                grown_on_a_short_host: 0,
            };
            let mut prev: Option<(&Snapshot, &crate::hypervisor::sample::VmSample)> = None;
            for s in snaps {
                let Some(v) = s.vms.iter().find(|v| v.name == vm.name) else {
                    continue;
                };
                let actual = mib(v.memory_current_kib);
                if m.start_actual_mib.is_nan() {
                    m.start_actual_mib = actual;
                }
                m.peak_actual_mib = m.peak_actual_mib.max(actual);
                m.min_actual_mib = m.min_actual_mib.min(actual);
                if let Some((ps, pv)) = prev {
                    let before = mib(pv.memory_current_kib);
                    let short = mib(ps.host.free_kib) <= cfg.host_floor_mib as f64;
                    if short && actual > before + 1.0 {
                        m.grown_on_a_short_host += 1;
                    }
                    // Unused above the floor before the step: what could go.
                    if let Some(b) = pv.balloon.filter(|b| b.last_update_s > 0) {
                        let spare = mib(b.unused_kib) - floor;
                        if actual < before - 1.0 && spare > 0.0 {
                            m.max_release_share =
                                m.max_release_share.max((before - actual) / spare);
                        }
                    }
                }
                if let Some(b) = v.balloon.filter(|b| b.last_update_s > 0) {
                    let unused = mib(b.unused_kib);
                    m.min_unused_mib = m.min_unused_mib.min(unused);
                    if unused < floor
                        && let Some((ps, _)) = prev
                    {
                        m.seconds_under_floor += s.at_s - ps.at_s;
                    }
                }
                prev = Some((s, v));
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{balloon, mem_vm, snapshot, vcpu, vm};

    /// Two VMs at 50 % each, one sample a second. vm-b moves from pCPU 0 to
    /// pCPU 1 before t=2; at t=5 both swap pCPUs.
    fn series() -> Vec<Snapshot> {
        (0..=6)
            .map(|t| {
                let ran_s = t as f64 * 0.5;
                let (a, b) = match t {
                    0 | 1 => (0, 0),
                    2..=4 => (0, 1),
                    _ => (1, 0),
                };
                snapshot(
                    t as f64,
                    2,
                    vec![
                        vm("vm-a", vec![vcpu(Some(a), 2, ran_s)]),
                        vm("vm-b", vec![vcpu(Some(b), 2, ran_s)]),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn balance_time_and_repins_after_balance_per_phase() {
        let r = judge(&series(), &[0.0, 4.0], 0, &JudgeConfig::default());
        assert_eq!(r.t_s, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(r.pcpu_pct[0], [100.0, 0.0]);
        assert_eq!(r.sd_pct, [50.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let summary = |p: &PhaseReport| (p.balanced_after_s, p.repins, p.repins_after_balance);
        assert_eq!(summary(&r.phases[0]), (Some(1.0), 1, 0));
        // Balanced all along, yet two vCPUs moved: re-pins after balance.
        assert_eq!(summary(&r.phases[1]), (Some(0.0), 2, 2));
        assert_eq!(r.phases[1].settled_sd_pct, 0.0);
    }

    /// vm-a on pCPU 0 and vm-b on pCPU 1, 50 % each, sampled at `times`,
    /// except that vm-b ran only 20 % in the seconds ending at `slow`.
    fn steady(times: &[f64], slow: &[f64]) -> Vec<Snapshot> {
        let mut b_ran_s = 0.0;
        let mut last_s = 0.0;
        times
            .iter()
            .map(|&t| {
                let pct = if slow.contains(&t) { 0.2 } else { 0.5 };
                b_ran_s += (t - last_s) * pct;
                last_s = t;
                snapshot(
                    t,
                    2,
                    vec![
                        vm("vm-a", vec![vcpu(Some(0), 2, t * 0.5)]),
                        vm("vm-b", vec![vcpu(Some(1), 2, b_ran_s)]),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn a_short_noisy_run_under_unchanged_pins_does_not_unbalance_a_phase() {
        let times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let judged =
            |slow: &[f64]| judge(&steady(&times, slow), &[0.0], 0, &JudgeConfig::default());
        let r = judged(&[3.0, 4.0]);
        assert!(r.sd_pct[2] > 5.0 && r.sd_pct[3] > 5.0, "{:?}", r.sd_pct);
        assert_eq!(r.phases[0].balanced_after_s, Some(0.0));
        // Three in a row are not noise: balanced from the sample after them.
        assert_eq!(
            judged(&[3.0, 4.0, 5.0]).phases[0].balanced_after_s,
            Some(5.0)
        );
        // At the end of the phase too, the placement is the balanced one.
        assert_eq!(judged(&[6.0]).phases[0].balanced_after_s, Some(0.0));
        // Nor a run in which a pin changed: that was the placement.
        let mut snaps = steady(&times, &[3.0, 4.0]);
        for s in &mut snaps[4..] {
            s.vms[0].vcpus[0].affinity = vec![0, 1];
        }
        let r = judge(&snaps, &[0.0], 0, &JudgeConfig::default());
        assert_eq!(r.phases[0].balanced_after_s, Some(4.0));
    }

    #[test]
    fn a_sample_taken_right_after_another_is_merged_into_the_next_interval() {
        let r = judge(
            &steady(&[0.0, 1.0, 1.05, 2.0, 3.0], &[]),
            &[0.0],
            0,
            &JudgeConfig::default(),
        );
        assert_eq!(r.t_s, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_phase_that_ends_unbalanced_never_balanced() {
        let mut snaps = series();
        snaps.truncate(2);
        let r = judge(&snaps, &[0.0], 0, &JudgeConfig::default());
        assert_eq!(r.phases[0].balanced_after_s, None);
        assert_eq!(r.phases[0].settled_sd_pct, 50.0);
    }

    #[test]
    fn memory_figures_from_the_balloon_series() {
        let snaps: Vec<Snapshot> = [(1024, 300), (1024, 80), (1200, 50), (900, 200)]
            .iter()
            .enumerate()
            .map(|(t, &(actual, unused))| {
                let mut s = snapshot(
                    t as f64,
                    1,
                    vec![mem_vm("a", balloon(actual, unused, 100 + t as u64), 2048)],
                );
                s.host.free_kib = (5000 - 1000 * t as u64) * 1024;
                s
            })
            .collect();
        let r = judge(&snaps, &[0.0], 3, &JudgeConfig::default());
        let m = &r.memory[0];
        assert_eq!((m.min_unused_mib, m.seconds_under_floor), (50.0, 2.0));
        assert_eq!((m.peak_actual_mib, m.end_actual_mib), (1200.0, 900.0));
        assert_eq!((r.host_min_free_mib, r.oom_kills), (2000.0, 3));
    }
}
