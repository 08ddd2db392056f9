//! Hand-made snapshots for the manager's unit tests.

use super::snapshot::{BalloonSample, HostSample, Snapshot, VcpuSample, VmSample};

pub const MIB: u64 = 1024;

pub fn snapshot(at_s: f64, pcpus: u32, vms: Vec<VmSample>) -> Snapshot {
    Snapshot {
        at_s,
        host: HostSample {
            pcpus,
            free_kib: 16 * 1024 * MIB,
            total_kib: 24 * 1024 * MIB,
            pcpu_busy_ns: Vec::new(),
        },
        vms,
    }
}

/// A VM with these vCPUs, 1 GiB of 2 GiB, no balloon stats.
pub fn vm(name: &str, vcpus: Vec<VcpuSample>) -> VmSample {
    let n = vcpus.len() as u32;
    VmSample {
        name: name.to_string(),
        vcpus,
        vcpus_current: n,
        vcpus_max: n,
        memory_max_kib: 2048 * MIB,
        memory_current_kib: 1024 * MIB,
        balloon: None,
    }
}

/// A vCPU that ran `cpu_s` seconds in total, pinned to `pin` (or to every
/// pCPU of `pcpus` when `None`), last on `pin` or pCPU 0.
pub fn vcpu(pin: Option<u32>, pcpus: u32, cpu_s: f64) -> VcpuSample {
    VcpuSample {
        cpu_time_ns: (cpu_s * 1e9) as u64,
        pcpu: pin.unwrap_or(0),
        affinity: pin.map_or_else(|| (0..pcpus).collect(), |p| vec![p]),
    }
}

/// Two snapshots `elapsed_s` apart with one single-vCPU VM per entry
/// (`vm-1`, `vm-2`, …): `(pin, use_pct)` over that time.
pub fn cpu_pair(pcpus: u32, vcpus: &[(Option<u32>, f64)], elapsed_s: f64) -> (Snapshot, Snapshot) {
    let at = |t: f64, used: bool| {
        let vms = vcpus
            .iter()
            .enumerate()
            .map(|(i, &(pin, pct))| {
                let ran_s = if used {
                    100.0 + pct / 100.0 * elapsed_s
                } else {
                    100.0
                };
                vm(&format!("vm-{}", i + 1), vec![vcpu(pin, pcpus, ran_s)])
            })
            .collect();
        snapshot(t, pcpus, vms)
    };
    (at(10.0, false), at(10.0 + elapsed_s, true))
}

/// Balloon stats in MiB as of guest second `last_update_s`.
pub fn balloon(actual_mib: u64, unused_mib: u64, last_update_s: u64) -> BalloonSample {
    BalloonSample {
        actual_kib: actual_mib * MIB,
        unused_kib: unused_mib * MIB,
        available_kib: actual_mib * MIB,
        usable_kib: Some(unused_mib * MIB),
        rss_kib: None,
        last_update_s,
    }
}

/// A one-vCPU VM holding `stats`, with `max_mib`.
pub fn mem_vm(name: &str, stats: BalloonSample, max_mib: u64) -> VmSample {
    VmSample {
        memory_max_kib: max_mib * MIB,
        memory_current_kib: stats.actual_kib,
        balloon: Some(stats),
        ..vm(name, vec![vcpu(Some(0), 1, 0.0)])
    }
}
