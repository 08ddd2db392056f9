//! What a scenario changes on the lab (balloons, online vCPUs, pins) is put
//! back when it ends, whoever managed it: the next scenario, and the user's
//! own work after it, start from the lab as it was. Balloons go back to
//! the VM's own size (`up --memory`), not to a live reading: right after
//! `up` a balloon is still settling towards it.

use anyhow::{Context, Result};

use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::state::VmRecord;
use crate::units::CpuSet;

/// One VM's state before the scenario.
#[derive(Debug, Clone, PartialEq)]
struct VmState {
    name: String,
    vcpus: u32,
    memory: crate::units::Kib,
    /// Per online vCPU where it may run; unpinned means every pCPU.
    pins: Vec<CpuSet>,
}

/// The lab's state before the scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved(Vec<VmState>);

impl Saved {
    pub fn capture(hv: &dyn Hypervisor, records: &[VmRecord]) -> Result<Saved> {
        let pcpus = hv.node()?.cpus;
        let all = CpuSet::new(0..pcpus);
        let mut vms = Vec::new();
        for vm in records {
            let name = &vm.name;
            let r = hv.resources(name)?;
            let pins = (0..r.vcpus_current)
                .map(|v| match r.pins.iter().find(|(vcpu, _)| *vcpu == v) {
                    Some((_, set)) => set.parse(),
                    None => Ok(all.clone()),
                })
                .collect::<Result<Vec<_>>>()?;
            vms.push(VmState {
                name: name.clone(),
                vcpus: r.vcpus_current,
                memory: vm.memory.kib(),
                pins,
            });
        }
        Ok(Saved(vms))
    }

    /// Puts every VM back; a VM that vanished is skipped (the next `vmlab`
    /// command reconciles the lab).
    pub fn apply(&self, hv: &dyn Hypervisor, act: &dyn Actuator) -> Result<()> {
        for vm in &self.0 {
            if hv.domain(&vm.name)?.is_none_or(|d| !d.state.is_active()) {
                continue;
            }
            let restore = || -> Result<()> {
                act.set_memory(&vm.name, vm.memory)?;
                act.set_vcpus(&vm.name, vm.vcpus)?;
                for (vcpu, set) in vm.pins.iter().enumerate() {
                    act.pin_vcpu(&vm.name, vcpu as u32, set)?;
                }
                Ok(())
            };
            restore().with_context(|| format!("putting {} back as it was", vm.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::libvirt::Libvirt;

    /// libvirt's own test driver: its `test` domain has 2 vCPUs on a
    /// 16-pCPU node.
    #[test]
    fn pins_and_balloon_come_back_as_they_were() {
        let hv = Libvirt::connect("test:///default").unwrap();
        hv.pin_vcpu("test", 0, &CpuSet::new([3])).unwrap();
        let before = hv.resources("test").unwrap();
        let mut record = crate::testutil::vm_record("test");
        record.memory = crate::units::Mib(before.memory_actual.0 / 1024);
        let names = [record];
        let saved = Saved::capture(&hv, &names).unwrap();
        hv.pin_vcpu("test", 0, &CpuSet::new([0])).unwrap();
        hv.pin_vcpu("test", 1, &CpuSet::new([0])).unwrap();
        hv.set_memory("test", crate::units::Kib(before.memory_actual.0 / 2))
            .unwrap();
        assert_ne!(hv.resources("test").unwrap(), before);
        saved.apply(&hv, &hv).unwrap();
        let after = hv.resources("test").unwrap();
        assert_eq!(after.memory_actual, before.memory_actual);
        assert_eq!(Saved::capture(&hv, &names).unwrap(), saved);
    }
}
