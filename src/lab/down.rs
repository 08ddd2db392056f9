//! `vmlab down [VM…]`: destroy and undefine the lab's domains and delete
//! their files. Only domains carrying this lab's mark are touched.

use anyhow::{Result, bail};

use super::Lab;
use super::state::{LabLock, LabState};

/// Removes the named VMs (all of the lab's when `names` is empty); returns
/// the removed names. The base image stays.
pub fn down(lab: &Lab, names: &[String]) -> Result<Vec<String>> {
    if !lab.paths.dir.exists() {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        bail!("lab `{}` has no VMs; `vmlab status` lists them", lab.name);
    }
    let lock = LabLock::acquire(&lab.paths)?;
    let mut state = LabState::load(&lab.paths)?;
    let me = lab.owner();
    let domains = lab.hv.domains()?;
    // Ours: in the state file, or marked as this lab's (a crash between define and save).
    let mut ours: Vec<String> = state.vms.iter().map(|v| v.name.clone()).collect();
    for d in &domains {
        if d.owner.as_ref() == Some(&me) && !ours.contains(&d.name) {
            ours.push(d.name.clone());
        }
    }
    let targets: Vec<String> = if names.is_empty() {
        ours.clone()
    } else {
        names.to_vec()
    };
    // Every name is checked before anything is destroyed.
    for name in &targets {
        let domain = domains.iter().find(|d| &d.name == name);
        if let Some(d) = domain
            && d.owner.as_ref() != Some(&me)
        {
            bail!("`{name}` was not created by this lab; vmlab leaves it alone");
        }
        if !ours.contains(name) {
            bail!(
                "lab `{}` has no VM `{name}`; `vmlab status` lists them",
                lab.name
            );
        }
    }
    // Stopping a domain waits for QEMU to exit: do all of them at once.
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|name| {
                let defined = domains.iter().any(|d| &d.name == name);
                scope.spawn(move || remove_vm(lab, name, defined))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("teardown thread panicked"))
            .collect()
    });
    let mut errors = Vec::new();
    for (name, result) in targets.iter().zip(results) {
        match result {
            Ok(()) => state.remove(name),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    state.save(&lab.paths)?;
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    if state.vms.is_empty() {
        drop(lock);
        std::fs::remove_dir_all(&lab.paths.dir)
            .map_err(|e| anyhow::anyhow!("deleting {}: {e}", lab.paths.dir.display()))?;
    }
    Ok(targets)
}

fn remove_vm(lab: &Lab, name: &str, defined: bool) -> Result<()> {
    if defined {
        lab.hv.destroy(name)?;
        lab.hv.undefine(name)?;
    }
    let dir = lab.paths.vm(name).dir;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("deleting {}: {e}", dir.display()))?;
    }
    Ok(())
}
