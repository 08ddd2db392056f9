//! `vmlab down [VM…]`: destroy and undefine the lab's domains and delete
//! their files. Only domains carrying this lab's mark are touched, and the
//! lab directory (key, state) goes only once no marked domain is left.

use anyhow::{Result, bail};

use super::inventory;
use super::{Lab, lock};

/// What `down` removed, and what the user should know.
#[derive(Debug, Default)]
pub struct DownReport {
    pub removed: Vec<String>,
    pub notes: Vec<String>,
}

/// Removes the named VMs (all of the lab's when `names` is empty). The base
/// image stays.
pub fn down(lab: &Lab, names: &[String]) -> Result<DownReport> {
    let anything = lab.paths.dir.exists() || lab.hv.domains()?.iter().any(|d| lab.owns(d));
    if !anything {
        if names.is_empty() {
            return Ok(DownReport::default());
        }
        bail!("lab `{}` has no VMs; `vmlab status` lists them", lab.name);
    }
    let change = lock::change(&lab.paths)?;
    // A reader present now keeps the lab directory even if it exits while
    // its VMs go (losing them ends it): it may still use the key to clean up.
    let readers_at_start = lock::readers_present(&lab.paths)?;
    let inv = inventory::take(lab)?;
    let ours = inv.names(lab);
    let targets: Vec<String> = if names.is_empty() {
        ours.clone()
    } else {
        names.to_vec()
    };
    // Every name is checked before anything is destroyed.
    for name in &targets {
        if inv.foreign(lab, name).is_some() {
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
                let defined = inv.domain(lab, name).is_some();
                scope.spawn(move || remove_vm(lab, name, defined))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("teardown thread panicked"))
            .collect()
    });
    let mut state = inv.state;
    let mut errors = Vec::new();
    let mut report = DownReport {
        notes: inv.notes,
        ..Default::default()
    };
    for (name, result) in targets.iter().zip(results) {
        match result {
            Ok(()) => {
                state.remove(name);
                report.removed.push(name.clone());
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let marked_left = lab.hv.domains()?.iter().any(|d| lab.owns(d));
    if state.vms.is_empty() && !marked_left && errors.is_empty() {
        if readers_at_start || lock::readers_present(&lab.paths)? {
            report.notes.push(format!(
                "kept {}: a long-running vmlab command (run, bench, monitor, manage, scenario or dashboard) was using this lab; the next `vmlab down` removes it",
                lab.paths.dir.display()
            ));
            state.prefix = None;
            state.save(&lab.paths)?;
        } else {
            drop(change);
            std::fs::remove_dir_all(&lab.paths.dir)
                .map_err(|e| anyhow::anyhow!("deleting {}: {e}", lab.paths.dir.display()))?;
        }
    } else {
        state.save(&lab.paths)?;
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(report)
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
