//! Applying a matrix cell to a running VM, live: vCPUs and the balloon
//! target, then reading back what the VM really has, from libvirt and from
//! the guest.
//!
//! vCPUs are only ever plugged, never unplugged: a live unplug under TCG
//! outlasts libvirt's 5 s wait, after which libvirt 9.0 keeps a stale count
//! for good (measured here: the guest and QEMU had 1 vCPU, libvirt said 2,
//! and the next plug crashed QEMU). For fewer CPUs the guest takes the
//! surplus ones offline instead: halted, they cost the host nothing, and the
//! benchmark sees exactly the CPUs the cell asks for.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::matrix::Cell;
use crate::guest::ssh::Guest;
use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::state::VmRecord;
use crate::units::{Kib, Mib};

/// What a VM had while a cell ran, read back after applying the cell (not
/// `manage::execute::Applied`, the outcome of a manager action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellApplied {
    /// libvirt's live vCPU count.
    pub vcpus: u32,
    /// CPUs the guest's kernel has online.
    pub guest_cpus: u32,
    /// The balloon's actual size.
    pub memory_mib: u64,
    /// `MemTotal` in the guest.
    pub guest_memtotal_mib: u64,
}

/// The balloon counts as there within this share of the target.
const MEMORY_TOLERANCE: f64 = 0.02;

/// Sets what `cell` asks for and waits (up to `timeout`) until libvirt and
/// the guest both show it.
pub fn apply(
    hv: &dyn Hypervisor,
    act: &dyn Actuator,
    guest: &Guest,
    vm: &str,
    cell: &Cell,
    timeout: Duration,
) -> Result<CellApplied> {
    if let Some(n) = cell.vcpus {
        if hv.resources(vm)?.vcpus_current < n {
            act.set_vcpus(vm, n)?;
        }
        set_online_cpus(guest, n)?;
    }
    if let Some(m) = cell.memory {
        act.set_memory(vm, m.kib())?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        let now = read_back(hv, guest, vm)?;
        let vcpus_ok = cell.vcpus.is_none_or(|n| {
            if now.guest_cpus < n && now.vcpus >= n {
                // Plugged CPUs arrive offline; bring them up as they appear.
                let _ = set_online_cpus(guest, n);
            }
            now.vcpus >= n && now.guest_cpus == n
        });
        let memory_ok = cell.memory.is_none_or(|m| {
            (now.memory_mib as f64 - m.0 as f64).abs() <= m.0 as f64 * MEMORY_TOLERANCE
        });
        if vcpus_ok && memory_ok {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!(
                "{vm} did not reach {cell} within {} s: libvirt shows {} vCPUs and {} MiB, the guest {} CPUs",
                timeout.as_secs(),
                now.vcpus,
                now.memory_mib,
                now.guest_cpus
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Puts the memory and the CPUs the guest uses back as the VM was created
/// (vCPUs plugged for the benchmark stay plugged, offline).
pub fn restore(act: &dyn Actuator, guest: &Guest, vm: &VmRecord) -> Result<()> {
    act.set_memory(&vm.name, vm.memory.kib())?;
    set_online_cpus(guest, vm.vcpus)
}

/// CPUs `0..n` online in the guest, the others offline.
fn set_online_cpus(guest: &Guest, n: u32) -> Result<()> {
    let script = format!(
        "for d in /sys/devices/system/cpu/cpu[0-9]*; do [ -e \"$d/online\" ] || continue; i=${{d##*cpu}}; if [ \"$i\" -lt {n} ]; then echo 1 > \"$d/online\"; else echo 0 > \"$d/online\"; fi; done"
    );
    let out = guest.exec(&script)?;
    if !out.exit.success() {
        bail!(
            "{}: setting {n} CPUs online failed: {}",
            guest.vm(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn read_back(hv: &dyn Hypervisor, guest: &Guest, vm: &str) -> Result<CellApplied> {
    let r = hv.resources(vm)?;
    let out = guest.exec("grep -c ^processor /proc/cpuinfo; grep ^MemTotal: /proc/meminfo")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (cpus, memtotal) = parse_guest(&text).ok_or_else(|| {
        anyhow::anyhow!(
            "{vm} answered oddly about its CPUs and memory: `{}`",
            text.trim().escape_debug()
        )
    })?;
    Ok(CellApplied {
        vcpus: r.vcpus_current,
        guest_cpus: cpus,
        memory_mib: r.memory_actual.mib().0,
        guest_memtotal_mib: memtotal.mib().0,
    })
}

/// `2\nMemTotal:  1012340 kB\n` → (2, 1012340 KiB).
fn parse_guest(text: &str) -> Option<(u32, Kib)> {
    let mut lines = text.lines();
    let cpus = lines.next()?.trim().parse().ok()?;
    let kib = lines
        .next()?
        .strip_prefix("MemTotal:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((cpus, Kib(kib)))
}

impl std::fmt::Display for CellApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} vCPUs ({} online in the guest), {} (guest MemTotal {})",
            self.vcpus,
            self.guest_cpus,
            Mib(self.memory_mib),
            Mib(self.guest_memtotal_mib)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_answer_parses() {
        assert_eq!(
            parse_guest("2\nMemTotal:        1012340 kB\n"),
            Some((2, Kib(1012340)))
        );
        assert_eq!(parse_guest("2\n"), None);
        assert_eq!(parse_guest("x\nMemTotal: 1 kB"), None);
    }
}
