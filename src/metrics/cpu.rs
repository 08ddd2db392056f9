//! Per-pCPU accounting, the course's measure: CPU use between two samples
//! over the time that really passed, each vCPU's use booked to the pCPU it
//! ran on last, and the standard deviation across pCPUs. The monitor, the
//! manager's policies and its judge all measure with it.

use crate::hypervisor::sample::{Snapshot, by_name};

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
    use crate::hypervisor::sample::{HostSample, VcpuSample, VmSample};

    fn snapshot(at_s: f64, pcpus: u32, vms: Vec<VmSample>) -> Snapshot {
        Snapshot {
            at_s,
            host: HostSample {
                pcpus,
                free_kib: 0,
                total_kib: 0,
                pcpu_busy_ns: Vec::new(),
            },
            vms,
        }
    }

    fn vm(name: &str, vcpus: Vec<VcpuSample>) -> VmSample {
        VmSample {
            name: name.into(),
            vcpus_current: vcpus.len() as u32,
            vcpus_max: vcpus.len() as u32,
            vcpus,
            memory_max_kib: 0,
            memory_current_kib: 0,
            balloon: None,
        }
    }

    /// Ran `cpu_s` in all, pinned to `pin` or free on `pcpus`, last on `pin` or 0.
    fn vcpu(pin: Option<u32>, pcpus: u32, cpu_s: f64) -> VcpuSample {
        VcpuSample {
            cpu_time_ns: (cpu_s * 1e9) as u64,
            pcpu: pin.unwrap_or(0),
            affinity: pin.map_or_else(|| (0..pcpus).collect(), |p| vec![p]),
        }
    }

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
    fn std_dev_is_the_population_one() {
        assert_eq!(std_dev(&[100.0, 0.0]), 50.0);
        assert_eq!(std_dev(&[]), 0.0);
    }
}
