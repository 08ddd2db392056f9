//! Kernel modules for the initramfs: which `.ko` files to load, in which order,
//! from a kernel's `modules.dep` and `modules.builtin`. Pure functions.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

/// The module name of a path in `modules.dep` (`kernel/drivers/char/hw_random/virtio-rng.ko.xz`
/// -> `virtio_rng`): the file name without `.ko*`, with `-` read as `_` like modprobe does.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = match file.find(".ko") {
        Some(i) => &file[..i],
        None => file,
    };
    stem.replace('-', "_")
}

/// `modules.dep`: module name -> (its path, its dependencies' paths as listed).
fn parse_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let path = path.trim();
        if path.is_empty() {
            continue;
        }
        let deps = deps.split_whitespace().map(str::to_string).collect();
        map.insert(module_name(path), (path.to_string(), deps));
    }
    map
}

/// The module files (paths relative to `/lib/modules/<version>`) to `insmod`, in
/// load order, so that every module in `wanted` is available. Dependencies come
/// before the modules that need them, each file once; modules built into the
/// kernel (`modules.builtin`) are skipped. A wanted module that is neither built
/// in nor in `modules.dep` is an error.
pub fn resolve(modules_dep: &str, modules_builtin: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let deps = parse_dep(modules_dep);
    let builtin: BTreeSet<String> = modules_builtin
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for want in wanted {
        let name = module_name(want);
        if builtin.contains(&name) {
            continue;
        }
        if !deps.contains_key(&name) {
            bail!("kernel module `{name}` is neither built in nor listed in modules.dep");
        }
        visit(
            &name,
            &deps,
            &builtin,
            &mut seen,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if seen.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        bail!(
            "dependency cycle in modules.dep: {} -> {name}",
            stack.join(" -> ")
        );
    }
    let Some((path, needs)) = deps.get(name) else {
        bail!(
            "kernel module `{name}` (needed by `{}`) is missing from modules.dep",
            stack.last().map(String::as_str).unwrap_or("?")
        );
    };
    stack.push(name.to_string());
    // modules.dep lists a module's dependencies so that the last one loads
    // first (modprobe loads them from the end): visit them in that order.
    for dep in needs.iter().rev() {
        visit(&module_name(dep), deps, builtin, seen, stack, order)?;
    }
    stack.pop();
    seen.insert(name.to_string());
    order.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/isofs/isofs.ko: kernel/drivers/cdrom/cdrom.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_balloon.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/cdrom/cdrom.ko:
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";
    const BUILTIN: &str = "kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n";

    fn names(paths: &[String]) -> Vec<String> {
        paths.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn names_follow_modprobe() {
        assert_eq!(module_name("kernel/a/virtio-rng.ko.xz"), "virtio_rng");
        assert_eq!(module_name("kernel/fs/isofs/isofs.ko"), "isofs");
        assert_eq!(module_name("virtio-pci"), "virtio_pci");
    }

    #[test]
    fn vmlab_modules_load_in_the_order_seen_by_hand() {
        let wanted = [
            "ext4",
            "virtio_pci",
            "virtio_blk",
            "virtio_net",
            "virtio_balloon",
            "isofs",
        ];
        let order = resolve(DEP, BUILTIN, &wanted).unwrap();
        assert_eq!(
            names(&order),
            [
                "virtio_ring",
                "virtio",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio_pci",
                "virtio_blk",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_balloon",
                "cdrom",
                "isofs"
            ]
        );
        assert_eq!(order[0], "kernel/drivers/virtio/virtio_ring.ko");
    }

    #[test]
    fn every_dependency_comes_first_and_once() {
        let order = resolve(DEP, BUILTIN, &["virtio_net", "virtio-rng", "virtio_net"]).unwrap();
        let n = names(&order);
        let pos = |m: &str| n.iter().position(|x| x == m).unwrap();
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert!(pos("virtio_ring") < pos("virtio"));
        assert!(pos("virtio") < pos("virtio_rng"));
        assert_eq!(n.len(), 6);
        assert_eq!(
            order.last().unwrap(),
            "kernel/drivers/char/hw_random/virtio-rng.ko.xz"
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        assert!(resolve(DEP, BUILTIN, &["ext4"]).unwrap().is_empty());
        // a dependency that is built in is not loaded either
        let builtin = "kernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio.ko\n";
        let order = resolve(DEP, builtin, &["virtio_blk"]).unwrap();
        assert_eq!(names(&order), ["virtio_blk"]);
    }

    #[test]
    fn unknown_and_broken_modules_are_errors() {
        let err = resolve(DEP, BUILTIN, &["nosuch"]).unwrap_err().to_string();
        assert!(err.contains("nosuch"), "{err}");
        let broken = "kernel/a.ko: kernel/missing.ko\n";
        let err = resolve(broken, "", &["a"]).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        let cycle = "kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n";
        let err = resolve(cycle, "", &["a"]).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
    }
}
