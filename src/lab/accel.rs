//! KVM or TCG for the lab's domains: what the user asked (`--accel`) against
//! what the host can do ([`crate::host::accel`]).

use anyhow::{Result, bail};

use crate::config::Accel;
use crate::host::accel::kvm_unusable_reason;
use crate::hypervisor::DomainType;

/// libvirt's domain type for the requested acceleration.
pub fn domain_type(accel: Accel) -> Result<DomainType> {
    choose(accel, kvm_unusable_reason())
}

fn choose(accel: Accel, kvm_unusable: Option<String>) -> Result<DomainType> {
    match (accel, kvm_unusable) {
        (Accel::Tcg, _) | (Accel::Auto, Some(_)) => Ok(DomainType::Qemu),
        (Accel::Kvm | Accel::Auto, None) => Ok(DomainType::Kvm),
        (Accel::Kvm, Some(why)) => {
            bail!("KVM is not usable here: {why}; use --accel tcg (slower, always works)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_tcg_and_kvm_is_refused_with_the_reason() {
        let why = || Some("the CPU has no vmx/svm flag".to_string());
        assert_eq!(choose(Accel::Auto, why()).unwrap(), DomainType::Qemu);
        assert_eq!(choose(Accel::Auto, None).unwrap(), DomainType::Kvm);
        assert_eq!(choose(Accel::Tcg, None).unwrap(), DomainType::Qemu);
        let err = choose(Accel::Kvm, why()).unwrap_err().to_string();
        assert_eq!(
            err,
            "KVM is not usable here: the CPU has no vmx/svm flag; use --accel tcg (slower, always works)"
        );
    }
}
