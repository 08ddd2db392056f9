//! memory `balloon`: every VM keeps its floor of unused memory plus headroom
//! for one more round of its own demand growth; excess goes back gradually;
//! the host keeps its reserve even if every VM touches all it was given.
//!
//! Growth follows each VM's observed rate (from the guest's own stats
//! timestamps), held at its recent peak and fading, so a VM that allocates
//! tens of MiB per second gets that much more per second of the time until
//! the next round can act; the floor, not a fixed step, sizes the growth.
//! Release takes a fixed share of the excess per round, so it is gradual.
//! When the host cannot cover every plan, memory comes first from the VMs
//! with the most excess, then from growth headroom, and only last from
//! growth towards floors; a VM is never shrunk below its own floor to feed
//! another. Stats that did not advance since the last round are not used.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Round;
use crate::manage::action::{Action, Decision};
use crate::manage::snapshot::{VmSample, fresh_balloon};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalloonConfig {
    /// Every VM keeps at least this much unused.
    pub floor_unused_mib: u64,
    /// The host is never planned down to this much free or less.
    pub host_min_free_mib: u64,
    /// Planned on top of `host_min_free_mib` for what moves between rounds.
    pub host_margin_mib: u64,
    /// Seconds of demand growth kept beyond the time to the next round:
    /// the stats' age and the balloon's travel.
    pub lead_s: f64,
    /// Share of a VM's excess given back per round.
    pub release_fraction: f64,
    /// Memory up to this much above the need is left alone (no churn);
    /// growth aims at the middle of this band.
    pub band_mib: u64,
    /// Per round the growth-rate estimate keeps this share of its last value
    /// (a peak hold that fades).
    pub rate_memory: f64,
    /// Memory is only given back once the growth estimate is below this…
    pub release_below_mib_s: f64,
    /// …and this many fresh reports came in since the VM was last grown.
    /// Seen on a real guest: a report that lags the balloon makes demand
    /// look as if it fell; inflating then, while the guest still
    /// allocates, stalled its kernel's balloon worker for a minute.
    pub release_after_reports: u32,
}

impl Default for BalloonConfig {
    fn default() -> Self {
        BalloonConfig {
            floor_unused_mib: 100,
            host_min_free_mib: 200,
            host_margin_mib: 100,
            lead_s: 1.0,
            release_fraction: 0.25,
            band_mib: 64,
            rate_memory: 0.5,
            release_below_mib_s: 1.0,
            release_after_reports: 3,
        }
    }
}

#[derive(Debug, Default)]
pub struct BalloonState {
    /// Demand growth estimate per VM.
    rate_kib_s: HashMap<String, f64>,
    /// Fresh reports since each VM was last grown.
    since_growth: HashMap<String, u32>,
}

const KIB_PER_MIB: f64 = 1024.0;

/// One VM's plan, in KiB.
#[derive(Debug, Clone)]
struct VmPlan<'a> {
    vm: &'a VmSample,
    actual: f64,
    unused: f64,
    /// What the VM holds on the host now (never counted above `actual`).
    resident: f64,
    rate_kib_s: f64,
    /// Actual that just keeps the floor.
    floor_need: f64,
    /// Actual that keeps the floor until the next round acts.
    need: f64,
    /// Where growth aims: the need plus half the band, a buffer for growth
    /// that starts between rounds.
    keep: f64,
    target: f64,
    /// Lowered to fit the host.
    cut: bool,
}

pub fn plan(round: &Round, state: &mut BalloonState, cfg: &BalloonConfig) -> Vec<Decision> {
    let host = &round.now.host;
    let floor = cfg.floor_unused_mib as f64 * KIB_PER_MIB;
    let band = cfg.band_mib as f64 * KIB_PER_MIB;
    let horizon_s = round.elapsed_s().unwrap_or(0.0) + cfg.lead_s;
    round.forget_gone(&mut state.rate_kib_s);
    round.forget_gone(&mut state.since_growth);

    let mut plans = Vec::new();
    // What VMs without fresh stats may still take: all they were given.
    let mut held = 0.0;
    for (_, vm, prev) in round.vms() {
        let Some((now, before)) = fresh_balloon(prev, vm) else {
            held += untouched(
                vm.memory_current_kib as f64,
                vm.balloon.and_then(|b| b.rss_kib),
            );
            continue;
        };
        // Stamps are whole seconds: the reports may be up to a second
        // closer than they say. The fastest growth they allow is the one to
        // provide for (seen on real guests: 13.6 and 26.5 MiB/s in turn for
        // a steady 19.5).
        let dt_s = (now.last_update_s - before.last_update_s)
            .saturating_sub(1)
            .max(1) as f64;
        let rate_now = (now.used_kib() as f64 - before.used_kib() as f64) / dt_s;
        let rate = state.rate_kib_s.entry(vm.name.clone()).or_default();
        *rate = rate_now.max(*rate * cfg.rate_memory).max(0.0);

        let (actual, used, max) = (
            now.actual_kib as f64,
            now.used_kib() as f64,
            vm.memory_max_kib as f64,
        );
        let floor_need = (used + floor).min(max);
        let need = (floor_need + *rate * horizon_s).min(max);
        let keep = (need + band / 2.0).min(max);
        let reports = state
            .since_growth
            .entry(vm.name.clone())
            .or_insert(u32::MAX);
        *reports = reports.saturating_add(1);
        let settled =
            *reports >= cfg.release_after_reports && *rate < cfg.release_below_mib_s * KIB_PER_MIB;
        let target = if actual < need {
            *reports = 0;
            keep
        } else if actual > need + band && settled {
            // Down to the band's top, not into it: an idle VM keeps the
            // whole band as a buffer for growth that starts between rounds.
            (actual - (actual - need) * cfg.release_fraction).max(need + band)
        } else {
            actual
        };
        plans.push(VmPlan {
            vm,
            actual,
            unused: now.unused_kib as f64,
            resident: now.rss_kib.map_or(actual, |r| (r as f64).min(actual)),
            rate_kib_s: *rate,
            floor_need,
            need,
            keep,
            target,
            cut: false,
        });
    }

    // Worst case every VM touches all it is given: that must leave the reserve.
    let budget =
        host.free_kib as f64 - (cfg.host_min_free_mib + cfg.host_margin_mib) as f64 * KIB_PER_MIB;
    let asked: f64 = plans.iter().map(|p| p.target - p.resident).sum::<f64>() + held;
    fit(&mut plans, asked - budget);

    plans
        .iter()
        .filter_map(|p| decide(p, cfg, budget, horizon_s))
        .collect()
}

/// Memory a VM was given but does not hold on the host yet.
fn untouched(actual: f64, rss_kib: Option<u64>) -> f64 {
    rss_kib.map_or(0.0, |r| (actual - r as f64).max(0.0))
}

/// Lowers targets by `over` KiB: first the excess above `keep`, most excess
/// first; then buffers and growth headroom, then growth towards floors,
/// proportionally.
fn fit(plans: &mut [VmPlan], mut over: f64) {
    if over <= 0.0 {
        return;
    }
    let mut order: Vec<usize> = (0..plans.len()).collect();
    order.sort_by(|&a, &b| {
        (plans[b].target - plans[b].keep).total_cmp(&(plans[a].target - plans[a].keep))
    });
    for i in order {
        let p = &mut plans[i];
        let take = (p.target - p.keep).clamp(0.0, over);
        lower(p, take);
        over -= take;
    }
    over = lower_proportionally(plans, over, |p| p.floor_need);
    lower_proportionally(plans, over, |p| p.actual.min(p.floor_need));
}

/// Lowers each target towards `bound`, in proportion to how far above it is,
/// by `over` KiB in total at most; returns what is still missing.
fn lower_proportionally(plans: &mut [VmPlan], over: f64, bound: impl Fn(&VmPlan) -> f64) -> f64 {
    let room: f64 = plans.iter().map(|p| (p.target - bound(p)).max(0.0)).sum();
    if over <= 0.0 || room <= 0.0 {
        return over.max(0.0);
    }
    let share = (over / room).min(1.0);
    for p in plans.iter_mut() {
        let take = (p.target - bound(p)).max(0.0) * share;
        lower(p, take);
    }
    over - room * share
}

fn lower(p: &mut VmPlan, kib: f64) {
    if kib > 0.0 {
        p.target -= kib;
        p.cut = true;
    }
}

fn decide(p: &VmPlan, cfg: &BalloonConfig, budget: f64, horizon_s: f64) -> Option<Decision> {
    let target_mib = if p.target > p.actual {
        (p.target / KIB_PER_MIB).ceil()
    } else {
        (p.target / KIB_PER_MIB).floor()
    };
    let actual_mib = p.actual / KIB_PER_MIB;
    if (target_mib - actual_mib).abs() < 1.0 {
        return None;
    }
    let mib = |kib: f64| kib / KIB_PER_MIB;
    let reason = match (target_mib > actual_mib, p.cut) {
        (true, false) => format!(
            "grow: keep {} MiB unused plus {:.0} MiB for {:.1} MiB/s of growth over {horizon_s:.1} s",
            cfg.floor_unused_mib,
            mib(p.need - p.floor_need),
            mib(p.rate_kib_s)
        ),
        (true, true) => "grow, limited by the host's free memory".to_string(),
        (false, false) => format!(
            "release {:.0} % of the excess above the need",
            cfg.release_fraction * 100.0
        ),
        (false, true) => "host short: reclaim from the VMs with the most excess".to_string(),
    };
    let action = Action::SetMemory {
        vm: p.vm.name.clone(),
        target_kib: target_mib as u64 * 1024,
    };
    Some(
        Decision::new(action, reason)
            .input("actual_mib", mib(p.actual))
            .input("unused_mib", mib(p.unused))
            .input("rate_mib_s", mib(p.rate_kib_s))
            .input("need_mib", mib(p.need))
            .input("max_mib", p.vm.memory_max_kib / 1024)
            .input("host_budget_mib", mib(budget)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::snapshot::{BalloonSample, Snapshot};
    use crate::manage::testkit::{MIB, balloon, mem_vm, snapshot};

    /// VMs as `(name, before, now, max_mib)`, two seconds apart, on a host
    /// with `free_mib` free.
    fn plan_mib(
        vms: &[(&str, BalloonSample, BalloonSample, u64)],
        free_mib: u64,
    ) -> Vec<(String, u64, String)> {
        let at = |t: f64, now: bool| {
            let list = vms
                .iter()
                .map(|(name, b, n, max)| mem_vm(name, if now { *n } else { *b }, *max))
                .collect();
            let mut s = snapshot(t, 2, list);
            s.host.free_kib = free_mib * MIB;
            s
        };
        let (before, now): (Snapshot, Snapshot) = (at(10.0, false), at(12.0, true));
        plan(
            &Round::new(Some(&before), &now),
            &mut BalloonState::default(),
            &BalloonConfig::default(),
        )
        .into_iter()
        .map(|d| match d.action {
            Action::SetMemory { vm, target_kib } => (vm, target_kib / MIB, d.reason),
            other => panic!("memory planned {other:?}"),
        })
        .collect()
    }

    fn targets(planned: &[(String, u64, String)]) -> Vec<(&str, u64)> {
        planned.iter().map(|(vm, t, _)| (vm.as_str(), *t)).collect()
    }

    #[test]
    fn growth_covers_the_floor_plus_the_observed_rate_until_the_next_round() {
        // Used 724 → 824 MiB between reports stamped 3 s apart, so at least
        // 2 s apart: at most 50 MiB/s. Need 824 + 100 + 50·(2 + 1) = 1074,
        // aiming 32 MiB (half the band) above.
        let vms = [("a", balloon(1024, 300, 100), balloon(1024, 200, 103), 2048)];
        assert_eq!(targets(&plan_mib(&vms, 16384)), [("a", 1106)]);
        // Stamped 2 s apart they may be 1 s apart: 100 MiB/s, need 1224.
        let vms = [("a", balloon(1024, 300, 100), balloon(1024, 200, 102), 2048)];
        assert_eq!(targets(&plan_mib(&vms, 16384)), [("a", 1256)]);
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        let vms = [("a", balloon(1024, 300, 100), balloon(1024, 200, 102), 1050)];
        assert_eq!(targets(&plan_mib(&vms, 16384)), [("a", 1050)]);
    }

    #[test]
    fn stale_or_missing_stats_are_never_acted_on() {
        let starving = balloon(1024, 10, 100);
        let stale = [("a", starving, starving, 2048)];
        assert!(plan_mib(&stale, 16384).is_empty());
        let none_yet = [("a", balloon(1024, 10, 0), balloon(1024, 10, 0), 2048)];
        assert!(plan_mib(&none_yet, 16384).is_empty());
    }

    #[test]
    fn excess_goes_back_a_quarter_at_a_time() {
        // Used 248 MiB, need 348: excess 1700, a quarter is 425.
        let vms = [(
            "a",
            balloon(2048, 1800, 100),
            balloon(2048, 1800, 102),
            2048,
        )];
        assert_eq!(targets(&plan_mib(&vms, 16384)), [("a", 1623)]);
        // Within the band above the need: left alone.
        let settled = [("a", balloon(400, 100, 100), balloon(400, 100, 102), 2048)];
        assert!(plan_mib(&settled, 16384).is_empty());
        // Just above it: down to the band's top (need 348 + 64), no further.
        let above = [("a", balloon(420, 172, 100), balloon(420, 172, 102), 2048)];
        assert_eq!(targets(&plan_mib(&above, 16384)), [("a", 412)]);
    }

    #[test]
    fn a_short_host_takes_first_from_the_vm_with_the_most_excess() {
        // g grows 200 MiB/s: need 550 + 100 + 600 = 1250, aims at 1282 (+682).
        // d1 and d2 release 300 and 175 on their own; the host has nothing
        // above its reserve, so the 207 still missing come from d1, which
        // has the most excess.
        let vms = [
            ("g", balloon(600, 450, 100), balloon(600, 50, 103), 2048),
            (
                "d1",
                balloon(1500, 1300, 100),
                balloon(1500, 1300, 102),
                2048,
            ),
            ("d2", balloon(1000, 800, 100), balloon(1000, 800, 102), 2048),
        ];
        let planned = plan_mib(&vms, 300);
        assert_eq!(targets(&planned), [("g", 1282), ("d1", 993), ("d2", 825)]);
        assert!(planned[1].2.starts_with("host short"), "{}", planned[1].2);
    }

    #[test]
    fn a_short_host_cuts_growth_headroom_before_floors() {
        // g grows 25 MiB/s: 650 keeps its floor, 757 aims above its need of
        // 725. The host has 100 MiB above its reserve: 700, floor kept.
        let vms = [("g", balloon(600, 100, 100), balloon(600, 50, 103), 2048)];
        let planned = plan_mib(&vms, 400);
        assert_eq!(targets(&planned), [("g", 700)]);
        assert_eq!(planned[0].2, "grow, limited by the host's free memory");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::manage::snapshot::BalloonSample;
    use crate::manage::testkit::{MIB, mem_vm, snapshot};

    /// A VM as fractions: (max MiB, actual, used before, used now, rss, fresh).
    type Raw = (u64, f64, f64, f64, Option<f64>, bool);

    struct Case {
        max: u64,
        actual: u64,
        used: u64,
        resident: u64,
        fresh: bool,
        target: u64,
    }

    /// Plans one round; everything in KiB.
    fn cases(raw: &[Raw], free_mib: u64) -> (Vec<Case>, f64) {
        let stats = |actual: u64, used: u64, rss: Option<u64>, last_update_s| BalloonSample {
            actual_kib: actual,
            unused_kib: actual - used,
            available_kib: actual,
            usable_kib: None,
            rss_kib: rss,
            last_update_s,
        };
        let mut before = snapshot(10.0, 2, Vec::new());
        let mut now = snapshot(12.0, 2, Vec::new());
        let mut cases = Vec::new();
        for (i, &(max_mib, a, u0, u1, rss, fresh)) in raw.iter().enumerate() {
            let (max, min) = (max_mib * MIB, 256 * MIB);
            let actual = min + ((max - min) as f64 * a) as u64;
            let used_at = |f: f64| 50 * MIB + ((actual - 50 * MIB) as f64 * f) as u64;
            let rss = rss.map(|r| (actual as f64 * r) as u64);
            let name = format!("vm-{i}");
            before
                .vms
                .push(mem_vm(&name, stats(actual, used_at(u0), rss, 100), max_mib));
            now.vms.push(mem_vm(
                &name,
                stats(actual, used_at(u1), rss, if fresh { 102 } else { 100 }),
                max_mib,
            ));
            let resident = rss.map_or(actual, |r| r.min(actual));
            cases.push(Case {
                max,
                actual,
                used: used_at(u1),
                resident,
                fresh,
                target: actual,
            });
        }
        now.host.free_kib = free_mib * MIB;
        for d in plan(
            &Round::new(Some(&before), &now),
            &mut BalloonState::default(),
            &BalloonConfig::default(),
        ) {
            let Action::SetMemory { vm, target_kib } = d.action else {
                panic!("not memory")
            };
            let i: usize = vm["vm-".len()..].parse().unwrap();
            cases[i].target = target_kib;
        }
        let budget = free_mib as f64 * KIB_PER_MIB - 300.0 * KIB_PER_MIB;
        (cases, budget)
    }

    fn floor_need(c: &Case) -> u64 {
        (c.used + 100 * MIB).min(c.max)
    }

    fn vms() -> impl Strategy<Value = Vec<Raw>> {
        let vm = (
            512u64..4096,
            0.0f64..1.0,
            0.0f64..1.0,
            0.0f64..1.0,
            prop::option::of(0.0f64..1.2),
            prop::bool::weighted(0.8),
        );
        prop::collection::vec(vm, 1..8)
    }

    proptest! {
        #[test]
        fn floors_hold_whenever_the_host_can_afford_them(raw in vms(), free_mib in 0u64..12_000) {
            let (cases, budget) = cases(&raw, free_mib);
            // What the host must cover if every fresh VM sat at its floor and
            // every other VM touched all it has.
            let at_floors: f64 = cases
                .iter()
                .map(|c| if c.fresh { floor_need(c) as f64 - c.resident as f64 } else { (c.actual - c.resident) as f64 })
                .sum();
            for c in &cases {
                prop_assert!(c.target <= c.max && c.target > 0);
                if c.fresh && at_floors <= budget {
                    prop_assert!(c.target + MIB >= floor_need(c), "floor lost: target {} < {}", c.target, floor_need(c));
                }
            }
        }

        #[test]
        fn the_host_keeps_its_reserve_unless_even_floors_do_not_fit(raw in vms(), free_mib in 0u64..12_000) {
            let (cases, budget) = cases(&raw, free_mib);
            let committed: f64 = cases.iter().map(|c| c.target as f64 - c.resident as f64).sum();
            let least: f64 = cases
                .iter()
                .map(|c| if c.fresh { c.actual.min(floor_need(c)) } else { c.actual } as f64 - c.resident as f64)
                .sum();
            let slack = cases.len() as f64 * KIB_PER_MIB;
            prop_assert!(committed <= budget.max(least) + slack, "committed {committed} budget {budget} least {least}");
        }

        #[test]
        fn release_is_gradual_and_keeps_the_floor(raw in vms()) {
            let (cases, _) = cases(&raw, 1 << 30);
            for c in cases.iter().filter(|c| c.target < c.actual) {
                let unused = (c.actual - c.used) as f64;
                let step = (c.actual - c.target) as f64;
                prop_assert!(step <= 0.25 * (unused - 100.0 * KIB_PER_MIB) + KIB_PER_MIB, "step {step} of {unused} unused");
                prop_assert!(c.target + MIB >= c.used + 100 * MIB);
            }
        }
    }
}
