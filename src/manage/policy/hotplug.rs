//! cpu `hotplug`: one vCPU more for a VM that stays busy, one fewer for a VM
//! that stays idle, within [1, max].
//!
//! Flapping is prevented three ways: the thresholds are far apart, a
//! threshold must hold for `sustain_rounds` rounds in a row, and a vCPU is
//! only removed if the remaining ones would stay under `high_pct` at the
//! same total use. A change is pending until the count reads as asked (a
//! live unplug under TCG often times out yet completes later); while pending
//! nothing new is asked for that VM.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Round;
use crate::manage::action::{Action, Decision};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HotplugConfig {
    /// Add a vCPU when the VM's average vCPU use stays above this.
    pub high_pct: f64,
    /// Remove one when it stays below this.
    pub low_pct: f64,
    /// Rounds in a row a threshold must hold.
    pub sustain_rounds: u32,
    /// After this long a change that never showed up counts as failed.
    pub pending_timeout_s: f64,
}

impl Default for HotplugConfig {
    fn default() -> Self {
        HotplugConfig {
            high_pct: 90.0,
            low_pct: 30.0,
            sustain_rounds: 2,
            pending_timeout_s: 30.0,
        }
    }
}

#[derive(Debug, Default)]
pub struct HotplugState {
    vms: HashMap<String, VmTrend>,
}

#[derive(Debug, Default)]
struct VmTrend {
    /// Rounds in a row above `high_pct` (positive) or below `low_pct` (negative).
    streak: i32,
    /// Count asked for and when, until the VM shows it.
    pending: Option<(u32, f64)>,
}

pub fn plan(round: &Round, state: &mut HotplugState, cfg: &HotplugConfig) -> Vec<Decision> {
    let Some(cpu) = &round.cpu else {
        return Vec::new();
    };
    let now_s = round.now.at_s;
    round.forget_gone(&mut state.vms);
    let mut out = Vec::new();
    for (i, vm) in round.now.vms.iter().enumerate() {
        let trend = state.vms.entry(vm.name.clone()).or_default();
        let current = vm.vcpus_current;
        if let Some((asked, since_s)) = trend.pending {
            if current != asked && now_s - since_s < cfg.pending_timeout_s {
                continue;
            }
            trend.pending = None;
        }
        // A vCPU added last round has no reading yet: average the others.
        let known: Vec<f64> = cpu.vcpu_pct[i].iter().flatten().copied().collect();
        if known.is_empty() {
            continue;
        }
        let avg_pct = known.iter().sum::<f64>() / known.len() as f64;
        let total_pct = avg_pct * f64::from(current);
        trend.streak = if avg_pct > cfg.high_pct {
            trend.streak.max(0) + 1
        } else if avg_pct < cfg.low_pct {
            trend.streak.min(0) - 1
        } else {
            0
        };
        let sustained = cfg.sustain_rounds as i32;
        let count = if trend.streak >= sustained && current < vm.vcpus_max {
            current + 1
        } else if trend.streak <= -sustained
            && current > 1
            && total_pct / f64::from(current - 1) < cfg.high_pct
        {
            current - 1
        } else {
            continue;
        };
        let reason = if count > current {
            format!("vCPUs busy above {} % for {sustained} rounds", cfg.high_pct)
        } else {
            format!("vCPUs idle below {} % for {sustained} rounds", cfg.low_pct)
        };
        trend.streak = 0;
        trend.pending = Some((count, now_s));
        let action = Action::SetVcpus {
            vm: vm.name.clone(),
            count,
        };
        out.push(
            Decision::new(action, reason)
                .input("avg_vcpu_pct", avg_pct)
                .input("total_pct", total_pct)
                .input("vcpus", current)
                .input("vcpus_max", vm.vcpus_max),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::snapshot::Snapshot;
    use crate::manage::testkit::{snapshot, vcpu, vm};

    /// VM `a` with `online` of `max` vCPUs, each having used `pct` % over the
    /// second before `t_s` (vCPU time is `t_s`·pct/100 from boot).
    fn at(t_s: f64, online: u32, max: u32, pct: f64) -> Snapshot {
        let vcpus = (0..online)
            .map(|_| vcpu(Some(0), 2, t_s * pct / 100.0))
            .collect();
        let mut a = vm("a", vcpus);
        a.vcpus_max = max;
        snapshot(t_s, 2, vec![a])
    }

    /// Rounds one second apart; the count each round asked for, if any.
    fn rounds(cfg: &HotplugConfig, series: &[Snapshot]) -> Vec<Option<u32>> {
        let mut state = HotplugState::default();
        series
            .windows(2)
            .map(|w| {
                let out = plan(&Round::new(Some(&w[0]), &w[1]), &mut state, cfg);
                assert!(out.len() <= 1);
                out.first().map(|d| match d.action {
                    Action::SetVcpus { count, .. } => count,
                    ref other => panic!("hotplug planned {other:?}"),
                })
            })
            .collect()
    }

    #[test]
    fn a_busy_vm_gets_one_more_vcpu_once_busy_for_two_rounds() {
        let series: Vec<Snapshot> = (0..4).map(|t| at(t as f64, 1, 2, 95.0)).collect();
        assert_eq!(
            rounds(&HotplugConfig::default(), &series),
            [None, Some(2), None]
        );
    }

    #[test]
    fn never_above_max_nor_below_one() {
        let busy: Vec<Snapshot> = (0..5).map(|t| at(t as f64, 2, 2, 99.0)).collect();
        assert_eq!(rounds(&HotplugConfig::default(), &busy), [None; 4]);
        let idle: Vec<Snapshot> = (0..5).map(|t| at(t as f64, 1, 2, 1.0)).collect();
        assert_eq!(rounds(&HotplugConfig::default(), &idle), [None; 4]);
    }

    #[test]
    fn a_slow_unplug_is_pending_not_repeated_until_it_times_out() {
        let cfg = HotplugConfig {
            pending_timeout_s: 5.0,
            ..HotplugConfig::default()
        };
        // Idle on 2 vCPUs; the unplug asked at t=2 never shows up.
        let series: Vec<Snapshot> = (0..10).map(|t| at(t as f64, 2, 2, 5.0)).collect();
        let asked = rounds(&cfg, &series);
        // Asked at t=2; pending until t=7; then idle two rounds again.
        assert_eq!(
            asked,
            [None, Some(1), None, None, None, None, None, Some(1), None]
        );
    }

    #[test]
    fn no_unplug_that_would_push_the_rest_above_high() {
        // 2 × 55 % would be 110 % on one vCPU.
        let cfg = HotplugConfig {
            low_pct: 60.0,
            ..HotplugConfig::default()
        };
        let series: Vec<Snapshot> = (0..5).map(|t| at(t as f64, 2, 2, 55.0)).collect();
        assert_eq!(rounds(&cfg, &series), [None; 4]);
        let lighter: Vec<Snapshot> = (0..5).map(|t| at(t as f64, 2, 2, 40.0)).collect();
        assert_eq!(rounds(&cfg, &lighter), [None, Some(1), None, None]);
    }
}
