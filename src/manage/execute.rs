//! The one place decisions become libvirt calls.

use crate::hypervisor::{Actuator, Vanished};
use crate::units::{CpuSet, Kib};

use super::action::{Action, Decision};

/// How applying one decision went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// `--dry-run`: decided and logged, not applied.
    DryRun,
    /// Asked for, not visible yet (a vCPU unplug past libvirt's wait): the
    /// policy re-reads the count and decides again.
    Pending(String),
    /// The domain went away between sampling and acting.
    Vanished,
    Failed(String),
}

impl Applied {
    /// A short word for the terminal and the log.
    pub fn word(&self) -> &'static str {
        match self {
            Applied::Done => "done",
            Applied::DryRun => "dry-run",
            Applied::Pending(_) => "pending",
            Applied::Vanished => "vanished",
            Applied::Failed(_) => "failed",
        }
    }
}

/// Applies `decision` unless `dry_run`.
pub fn apply(act: &dyn Actuator, decision: &Decision, dry_run: bool) -> Applied {
    if dry_run {
        return Applied::DryRun;
    }
    let result = match &decision.action {
        Action::Pin { vm, vcpu, pcpus } => {
            act.pin_vcpu(vm, *vcpu, &CpuSet::new(pcpus.iter().copied()))
        }
        Action::SetMemory { vm, target_kib } => act.set_memory(vm, Kib(*target_kib)),
        Action::SetVcpus { vm, count } => act.set_vcpus(vm, *count),
    };
    match result {
        Ok(()) => Applied::Done,
        Err(e) if e.downcast_ref::<Vanished>().is_some() => Applied::Vanished,
        Err(e) => {
            let text = format!("{e:#}");
            let unplug = matches!(decision.action, Action::SetVcpus { .. });
            if unplug && (text.contains("timed out") || text.contains("cause is unknown")) {
                Applied::Pending(text)
            } else {
                Applied::Failed(text)
            }
        }
    }
}
