//! KVM or TCG. `/dev/kvm` alone proves nothing (a paravirtual module can
//! provide it on a CPU without vmx/svm, and guests then hang), so KVM is
//! "usable" only with the device *and* the CPU flag.

use anyhow::{Result, bail};

use crate::config::Accel;
use crate::hypervisor::DomainType;

/// Why KVM cannot be used here, or `None` when it can.
pub fn kvm_unusable_reason() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    kvm_unusable_reason_from(std::path::Path::new("/dev/kvm"), &cpuinfo)
}

fn kvm_unusable_reason_from(dev: &std::path::Path, cpuinfo: &str) -> Option<String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_err()
    {
        return Some(format!("{} is missing or not accessible", dev.display()));
    }
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    (!has_flag).then(|| "the CPU has no vmx/svm flag (nested virtualization is off)".to_string())
}

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
    fn kvm_needs_device_and_cpu_flag() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("kvm");
        assert!(
            kvm_unusable_reason_from(&dev, "flags : fpu vmx")
                .unwrap()
                .contains("missing")
        );
        std::fs::write(&dev, "").unwrap();
        assert!(
            kvm_unusable_reason_from(&dev, "flags : fpu sse2")
                .unwrap()
                .contains("no vmx/svm")
        );
        assert_eq!(kvm_unusable_reason_from(&dev, "flags : fpu svm sse2"), None);
    }

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
