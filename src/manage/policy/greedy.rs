//! cpu `greedy`: the course-style baseline, kept to compare against `pin`.
//!
//! Every round it re-plans from scratch: vCPUs by last interval's use, busiest
//! first, each onto the least-loaded pCPU, and re-pins whatever landed
//! elsewhere. It reads use as demand (blind to starvation) and keeps no
//! memory, so measurement noise alone can move vCPUs.

use super::{CpuRound, Round, lpt, pin_to};
use crate::manage::action::Decision;

pub fn plan(round: &Round) -> Vec<Decision> {
    let Some(CpuRound {
        pcpus,
        vcpus,
        use_pct,
        ..
    }) = CpuRound::of(round)
    else {
        return Vec::new();
    };
    let placement = lpt(&use_pct, pcpus as usize);
    vcpus
        .iter()
        .zip(placement)
        .zip(use_pct)
        .filter(|((v, p), _)| v.sample.pinned_to(pcpus) != Some(*p as u32))
        .map(|((v, p), u)| {
            let reason = format!("greedy re-plan: busiest first onto the least-loaded pCPU {p}");
            pin_to(v, p, reason).input("use_pct", u)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::action::Action;
    use crate::manage::testkit::cpu_pair;

    fn pins(loads: &[(Option<u32>, f64)]) -> Vec<(String, u32)> {
        let (prev, now) = cpu_pair(2, loads, 2.0);
        plan(&Round::new(Some(&prev), &now))
            .into_iter()
            .map(|d| match d.action {
                Action::Pin { vm, pcpus, .. } => (vm, pcpus[0]),
                other => panic!("greedy planned {other:?}"),
            })
            .collect()
    }

    #[test]
    fn busiest_first_onto_the_least_loaded_pcpu() {
        // 50 → 0, 40 → 1, 30 → 1, 10 → 0.
        let planned = pins(&[
            (Some(0), 10.0),
            (Some(0), 50.0),
            (Some(0), 30.0),
            (Some(0), 40.0),
        ]);
        assert_eq!(planned, [("vm-3".to_string(), 1), ("vm-4".to_string(), 1)]);
    }

    #[test]
    fn noise_that_reorders_equal_loads_moves_pins() {
        // Balanced (about 100 % on each pCPU), yet re-planned from scratch:
        // 51, 50, 49, 48 alternate between the pCPUs, so vm-3 and vm-4 swap.
        let planned = pins(&[
            (Some(0), 51.0),
            (Some(1), 49.0),
            (Some(0), 50.0),
            (Some(1), 48.0),
        ]);
        assert_eq!(planned, [("vm-3".to_string(), 1), ("vm-4".to_string(), 0)]);
    }
}
