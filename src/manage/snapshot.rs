//! What the manager sees each round: one libvirt sample of the host and its VMs.
//!
//! Everything here is a raw reading (cumulative CPU time, balloon counters);
//! rates come from comparing two snapshots over the time that really passed
//! between them ([`CpuUse::between`]), never from the nominal interval.

use std::collections::HashMap;

pub use crate::hypervisor::sample::{BalloonSample, HostSample, Snapshot, VcpuSample, VmSample};

/// Balloon stats that are new since `prev`: they exist (`last_update` > 0)
/// and the guest refreshed them. The first sight of a VM is not fresh: there
/// is nothing yet to tell new stats from a report stuck since boot.
pub fn fresh_balloon<'a>(
    prev: Option<&VmSample>,
    cur: &'a VmSample,
) -> Option<(&'a BalloonSample, BalloonSample)> {
    let now = cur.balloon.as_ref()?;
    let before = prev?.balloon?;
    (now.last_update_s > 0 && now.last_update_s > before.last_update_s).then_some((now, before))
}

/// Each VM of `snap` by name, to match VMs across snapshots.
pub fn by_name(snap: &Snapshot) -> HashMap<&str, &VmSample> {
    snap.vms.iter().map(|vm| (vm.name.as_str(), vm)).collect()
}

/// CPU use between two snapshots, in percent of one pCPU, over the time that
/// really elapsed.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuUse {
    pub elapsed_s: f64,
    /// Indexed like the later snapshot's `vms`, then its vCPUs; `None` where
    /// the earlier snapshot has no comparable reading (new VM, hot-added
    /// vCPU, restarted domain).
    pub vcpu_pct: Vec<Vec<Option<f64>>>,
    /// Per pCPU, how busy it was with anything (vCPUs, QEMU's own threads,
    /// other programs); `None` when the host does not tell.
    pub busy_pct: Option<Vec<f64>>,
}

impl CpuUse {
    /// `None` when no time passed between the snapshots.
    pub fn between(prev: &Snapshot, cur: &Snapshot) -> Option<CpuUse> {
        let elapsed_s = cur.at_s - prev.at_s;
        if elapsed_s <= 0.0 {
            return None;
        }
        let before = by_name(prev);
        let vcpu_pct = cur
            .vms
            .iter()
            .map(|vm| {
                let old = before.get(vm.name.as_str());
                vm.vcpus
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let was = old?.vcpus.get(i)?.cpu_time_ns;
                        let ran_ns = v.cpu_time_ns.checked_sub(was)?;
                        Some(ran_ns as f64 / 1e9 / elapsed_s * 100.0)
                    })
                    .collect()
            })
            .collect();
        let (was, now) = (&prev.host.pcpu_busy_ns, &cur.host.pcpu_busy_ns);
        let busy_pct = (!now.is_empty() && was.len() == now.len()).then(|| {
            was.iter()
                .zip(now)
                .map(|(a, b)| b.saturating_sub(*a) as f64 / 1e9 / elapsed_s * 100.0)
                .collect()
        });
        Some(CpuUse {
            elapsed_s,
            vcpu_pct,
            busy_pct,
        })
    }

    /// Per-pCPU utilisation the way the course's monitor measures it: each
    /// vCPU's use is booked to the pCPU it ran on last.
    pub fn pcpu_pct(&self, cur: &Snapshot) -> Vec<f64> {
        let mut pct = vec![0.0; cur.host.pcpus as usize];
        for (vm, use_pct) in cur.vms.iter().zip(&self.vcpu_pct) {
            for (v, u) in vm.vcpus.iter().zip(use_pct) {
                if let (Some(slot), Some(u)) = (pct.get_mut(v.pcpu as usize), u) {
                    *slot += u;
                }
            }
        }
        pct
    }

    /// A VM's use summed over its vCPUs (200 = two pCPUs' worth); `None` if
    /// no vCPU has a reading.
    pub fn vm_pct(&self, vm: usize) -> Option<f64> {
        let known: Vec<f64> = self.vcpu_pct[vm].iter().flatten().copied().collect();
        (!known.is_empty()).then(|| known.iter().sum())
    }
}

/// Population standard deviation, the course's balance measure.
pub fn std_dev(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{balloon, mem_vm, snapshot, vcpu, vm};

    #[test]
    fn use_is_over_the_real_elapsed_time_and_booked_where_the_vcpu_ran() {
        let before = snapshot(
            10.0,
            2,
            vec![vm("a", vec![vcpu(None, 2, 5.0), vcpu(Some(1), 2, 1.0)])],
        );
        let mut after = snapshot(
            12.5,
            2,
            vec![vm("a", vec![vcpu(None, 2, 6.25), vcpu(Some(1), 2, 1.5)])],
        );
        after.vms[0].vcpus[0].pcpu = 1;
        let cpu = CpuUse::between(&before, &after).unwrap();
        assert_eq!(cpu.vcpu_pct, vec![vec![Some(50.0), Some(20.0)]]);
        assert_eq!(cpu.pcpu_pct(&after), vec![0.0, 70.0]);
        assert_eq!(cpu.vm_pct(0), Some(70.0));
        assert_eq!(CpuUse::between(&after, &after), None);
    }

    #[test]
    fn new_vcpus_and_restarted_domains_have_no_reading() {
        let before = snapshot(0.0, 1, vec![vm("a", vec![vcpu(Some(0), 1, 9.0)])]);
        let restarted = vm("a", vec![vcpu(Some(0), 1, 1.0), vcpu(Some(0), 1, 0.5)]);
        let after = snapshot(
            1.0,
            1,
            vec![restarted, vm("new", vec![vcpu(Some(0), 1, 3.0)])],
        );
        let cpu = CpuUse::between(&before, &after).unwrap();
        assert_eq!(cpu.vcpu_pct, vec![vec![None, None], vec![None]]);
        assert_eq!(cpu.vm_pct(0), None);
    }

    #[test]
    fn balloon_stats_are_fresh_only_when_the_guest_refreshed_them() {
        let at = |last_update_s| mem_vm("a", balloon(1024, 300, last_update_s), 2048);
        let (seen, same, newer, none_yet) = (at(100), at(100), at(101), at(0));
        assert!(fresh_balloon(None, &newer).is_none(), "first sight");
        assert!(fresh_balloon(Some(&seen), &same).is_none(), "not advancing");
        assert!(
            fresh_balloon(Some(&none_yet), &none_yet).is_none(),
            "no stats yet"
        );
        let (now, before) = fresh_balloon(Some(&seen), &newer).unwrap();
        assert_eq!((now.last_update_s, before.last_update_s), (101, 100));
        assert_eq!(now.used_kib(), 724 * 1024);
    }

    #[test]
    fn std_dev_is_the_population_one() {
        assert_eq!(std_dev(&[100.0, 0.0]), 50.0);
        assert_eq!(std_dev(&[]), 0.0);
    }
}
