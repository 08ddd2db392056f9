//! What a sampler reads from the hypervisor: the host and its running VMs,
//! raw (cumulative CPU times, balloon counters). The manager and the monitor
//! turn two of them into rates over the time that really passed.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// One sample of the host and every managed VM, taken at `at_s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic seconds (any origin); only differences matter.
    pub at_s: f64,
    pub host: HostSample,
    pub vms: Vec<VmSample>,
}

/// virNodeGetInfo + node memory stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSample {
    pub pcpus: u32,
    /// What the host can hand out without swapping: free plus buffers and
    /// page cache.
    pub free_kib: u64,
    pub total_kib: u64,
    /// Per pCPU, nanoseconds busy since boot (user + kernel) by anything:
    /// the only way to see load that is not a vCPU (other programs, QEMU's
    /// own threads). Empty when the driver cannot tell.
    #[serde(default)]
    pub pcpu_busy_ns: Vec<u64>,
}

/// One running domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSample {
    pub name: String,
    /// The online vCPUs, index = vCPU number (virDomainGetVcpus + pin info).
    pub vcpus: Vec<VcpuSample>,
    pub vcpus_current: u32,
    pub vcpus_max: u32,
    pub memory_max_kib: u64,
    /// libvirt's current memory (the balloon's size as libvirt last saw it).
    pub memory_current_kib: u64,
    /// virDomainMemoryStats; `None` when the guest has no balloon driver.
    pub balloon: Option<BalloonSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuSample {
    /// Cumulative CPU time of this vCPU's thread.
    pub cpu_time_ns: u64,
    /// The pCPU it ran on last (where the course's monitor books its time).
    pub pcpu: u32,
    /// pCPUs it may run on; every pCPU means unpinned.
    pub affinity: Vec<u32>,
}

/// The balloon driver's report, as of the guest's `last_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonSample {
    /// Memory the guest has now (balloon size).
    pub actual_kib: u64,
    /// Free memory in the guest (MemFree).
    pub unused_kib: u64,
    /// Memory the guest kernel can use (MemTotal).
    pub available_kib: u64,
    /// Memory the guest could use without swapping (MemAvailable).
    pub usable_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    /// Guest time of the stats in seconds; 0 means no stats yet.
    pub last_update_s: u64,
}

impl BalloonSample {
    /// The part of the guest's memory that is not free: what demand (and the
    /// guest's page cache) occupies. The floor is on free memory, as the
    /// course measures it.
    pub fn used_kib(&self) -> u64 {
        self.actual_kib.saturating_sub(self.unused_kib)
    }
}

impl VcpuSample {
    /// The single pCPU this vCPU is pinned to, if it is pinned to exactly one
    /// that exists.
    pub fn pinned_to(&self, pcpus: u32) -> Option<u32> {
        match self.affinity[..] {
            [p] if p < pcpus => Some(p),
            _ => None,
        }
    }
}

/// Reads the host and running domains. Contract: a named domain that is
/// gone or not running is left out of the snapshot (not an error); `at_s`
/// is monotonic.
pub trait Sampler: Send + Sync {
    fn sample(&self, domains: &[String]) -> Result<Snapshot>;
    /// Whether the connection still answers: a failed round on a dead one
    /// means reconnecting, on a live one only that round failed.
    fn is_alive(&self) -> bool {
        true
    }
}

/// Monotonic seconds since this process first asked.
pub fn monotonic_s() -> f64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

/// Each VM of `snap` by name, to match VMs across snapshots.
pub fn by_name(snap: &Snapshot) -> HashMap<&str, &VmSample> {
    snap.vms.iter().map(|vm| (vm.name.as_str(), vm)).collect()
}
