//! `vmlab doctor`: can this host run a lab? Each failed check says how to fix it.

use std::path::Path;

use crate::config::{Accel, LabSpec};
use crate::host::{self, accel};
use crate::hypervisor::Hypervisor;
use crate::hypervisor::libvirt::{Libvirt, START_LIBVIRT};
use crate::image::store as image;
use crate::lab::up::HOST_RESERVE;
use crate::paths::Home;

/// Free disk below this makes a lab of overlays and logs fragile.
const MIN_FREE_DISK_MIB: u64 = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: &'static str, detail: String) -> Check {
        Check {
            name,
            ok: true,
            detail,
            fix: None,
        }
    }

    pub fn fail(name: &'static str, detail: String, fix: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            detail,
            fix: Some(fix.into()),
        }
    }
}

pub fn checks(home: &Home, spec: &LabSpec) -> Vec<Check> {
    let mut out = Vec::new();
    match Libvirt::connect(&spec.connect) {
        Ok(hv) => {
            out.push(Check::pass(
                "libvirt",
                format!("reachable at {}", spec.connect),
            ));
            out.push(memory_check(&hv, spec));
        }
        Err(e) => out.push(Check::fail("libvirt", format!("{e:#}"), START_LIBVIRT)),
    }
    if spec.connect == "qemu:///system" && !Path::new("/run/libvirt/virtlogd-sock").exists() {
        out.push(Check::fail(
            "virtlogd",
            "not running: domains will fail to start".into(),
            "sudo virtlogd -d",
        ));
    }
    for program in ["qemu-img", "genisoimage", "ssh-keygen"] {
        out.push(match which::which(program) {
            Ok(path) => Check::pass(program, path.display().to_string()),
            Err(_) => Check::fail(program, "not found".into(), host::INSTALL_HINT),
        });
    }
    out.push(match (spec.accel, accel::kvm_unusable_reason()) {
        (_, None) => Check::pass("acceleration", "KVM usable".into()),
        (Accel::Kvm, Some(why)) => Check::fail(
            "acceleration",
            format!("KVM requested but {why}"),
            "use --accel tcg or auto",
        ),
        (_, Some(why)) => Check::pass("acceleration", format!("TCG (software emulation): {why}")),
    });
    out.push(disk_check(home));
    if spec.connect == "qemu:///system" {
        out.push(match home.closed_ancestor() {
            None => Check::pass(
                "home",
                format!("{} reachable by QEMU's user", home.root().display()),
            ),
            Some(dir) => Check::fail(
                "home",
                format!("QEMU's user cannot enter {}", dir.display()),
                crate::paths::REACH_HOME,
            ),
        });
    }
    out.push(match image::current_version(home, &spec.image) {
        None => Check::fail(
            "image",
            format!("`{}` is not installed", spec.image),
            image::GET_IMAGE,
        ),
        Some(_) => match image::load(home, &spec.image) {
            Ok(img) => Check::pass("image", format!("`{}` at {}", img.id(), img.dir.display())),
            Err(e) => Check::fail("image", format!("{e:#}"), "build or fetch it again"),
        },
    });
    out
}

fn memory_check(hv: &Libvirt, spec: &LabSpec) -> Check {
    match hv.node() {
        Ok(node) => {
            let free_mib = node.free.mib().0;
            let need = spec.memory.0 + HOST_RESERVE.0;
            if free_mib >= need {
                Check::pass(
                    "memory",
                    format!(
                        "{free_mib} MiB free, room for {} VMs of {}",
                        (free_mib - HOST_RESERVE.0) / spec.memory.0,
                        spec.memory
                    ),
                )
            } else {
                Check::fail(
                    "memory",
                    format!("{free_mib} MiB free, one VM needs {need} MiB with the reserve"),
                    "free memory or use a smaller --memory",
                )
            }
        }
        Err(e) => Check::fail("memory", format!("{e:#}"), "check libvirtd"),
    }
}

fn disk_check(home: &Home) -> Check {
    let mut dir = home.root().to_path_buf();
    while !dir.exists() {
        if !dir.pop() {
            break;
        }
    }
    match free_disk_mib(&dir) {
        Some(free) if free >= MIN_FREE_DISK_MIB => {
            Check::pass("disk", format!("{free} MiB free at {}", dir.display()))
        }
        Some(free) => Check::fail(
            "disk",
            format!("{free} MiB free at {}", dir.display()),
            format!("free at least {MIN_FREE_DISK_MIB} MiB or set VMLAB_HOME elsewhere"),
        ),
        None => Check::fail(
            "disk",
            format!("cannot read free space at {}", dir.display()),
            "set VMLAB_HOME to a writable directory",
        ),
    }
}

fn free_disk_mib(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` is written by statvfs on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail * stat.f_frsize / (1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn missing_image_and_dead_libvirt_say_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("home"));
        let spec = Settings {
            connect: Some("test:///nonexistent/node.xml".into()),
            ..Default::default()
        }
        .over(Settings::default())
        .resolve()
        .unwrap();
        let checks = checks(&home, &spec);
        let by_name = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        let libvirt = by_name("libvirt");
        assert!(!libvirt.ok);
        assert_eq!(libvirt.fix.unwrap(), START_LIBVIRT);
        let image = by_name("image");
        assert!(!image.ok);
        assert!(
            image
                .fix
                .unwrap()
                .starts_with("build it with `vmlab image build")
        );
        assert!(by_name("disk").ok, "a temp dir has room");
    }
}
