//! Whether this host can run KVM guests. `/dev/kvm` alone proves nothing (a
//! paravirtual module can provide it on a CPU without vmx/svm, and guests
//! then hang), so KVM is "usable" only with the device *and* the CPU flag.

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
}
