//! memory `threshold`: the original project's rules, kept for comparison.
//! Above 80 % used, grow by 100 MiB; below 20 % used, shrink by 500 MiB.
//! Fixed steps lose the race against a fast allocator; that is the point of
//! keeping it: the bench shows what `balloon` does better.

use serde::{Deserialize, Serialize};

use super::Round;
use crate::manage::action::{Action, Decision};
use crate::manage::snapshot::fresh_balloon;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    pub grow_above_pct: f64,
    pub grow_mib: u64,
    pub shrink_below_pct: f64,
    pub shrink_mib: u64,
    /// Never shrink below this.
    pub min_mib: u64,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig {
            grow_above_pct: 80.0,
            grow_mib: 100,
            shrink_below_pct: 20.0,
            shrink_mib: 500,
            min_mib: 256,
        }
    }
}

pub fn plan(round: &Round, cfg: &ThresholdConfig) -> Vec<Decision> {
    let mut out = Vec::new();
    for (_, vm, prev) in round.vms() {
        let Some((now, _)) = fresh_balloon(prev, vm) else {
            continue;
        };
        let actual_mib = now.actual_kib / 1024;
        let used_pct = now.used_kib() as f64 / now.actual_kib.max(1) as f64 * 100.0;
        let max_mib = vm.memory_max_kib / 1024;
        let (target_mib, reason) = if used_pct > cfg.grow_above_pct {
            let to = (actual_mib + cfg.grow_mib).min(max_mib);
            (
                to,
                format!(
                    "used above {} %: grow by {} MiB",
                    cfg.grow_above_pct, cfg.grow_mib
                ),
            )
        } else if used_pct < cfg.shrink_below_pct {
            let to = actual_mib.saturating_sub(cfg.shrink_mib).max(cfg.min_mib);
            (
                to,
                format!(
                    "used below {} %: shrink by {} MiB",
                    cfg.shrink_below_pct, cfg.shrink_mib
                ),
            )
        } else {
            continue;
        };
        if target_mib == actual_mib {
            continue;
        }
        let action = Action::SetMemory {
            vm: vm.name.clone(),
            target_kib: target_mib * 1024,
        };
        out.push(
            Decision::new(action, reason)
                .input("used_pct", used_pct)
                .input("actual_mib", actual_mib),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{MIB, balloon, mem_vm, snapshot};

    fn plan_one(actual_mib: u64, unused_mib: u64, max_mib: u64) -> Option<u64> {
        let before = snapshot(
            0.0,
            1,
            vec![mem_vm("a", balloon(actual_mib, unused_mib, 100), max_mib)],
        );
        let now = snapshot(
            2.0,
            1,
            vec![mem_vm("a", balloon(actual_mib, unused_mib, 102), max_mib)],
        );
        let out = plan(
            &Round::new(Some(&before), &now),
            &ThresholdConfig::default(),
        );
        out.first().map(|d| match d.action {
            Action::SetMemory { target_kib, .. } => target_kib / MIB,
            ref other => panic!("threshold planned {other:?}"),
        })
    }

    #[test]
    fn fixed_steps_at_the_original_thresholds() {
        assert_eq!(plan_one(1000, 150, 2048), Some(1100), "85 % used");
        assert_eq!(plan_one(2000, 1700, 2048), Some(1500), "15 % used");
        assert_eq!(plan_one(1000, 500, 2048), None, "50 % used");
        assert_eq!(plan_one(2000, 100, 2048), Some(2048), "capped at max");
        assert_eq!(plan_one(600, 550, 2048), Some(256), "not below min_mib");
    }
}
