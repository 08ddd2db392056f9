//! `vmlab reset [VM…]`: clones back to their just-restored state. Each one's
//! domain stops, its overlay is discarded and made afresh on its template's
//! disk, its memory is restored from the template and it is told who it is
//! again (a new host key, pinned like the first). All of them at once
//! unless `jobs` is set in `vmlab.toml` (see [`Jobs::for_restores`]).
//!
//! [`Jobs::for_restores`]: crate::config::Jobs::for_restores

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, bail};

use super::provision::Provisioner;
use super::up::{Ctx, Progress, Step, UpReport, check_memory};
use super::{Lab, accel, inventory, keys, lock};
use crate::config::{Accel, Jobs};
use crate::image::store as image;

#[derive(Debug, Clone)]
pub struct ResetRequest {
    /// The VMs to reset; all of the lab's when empty.
    pub names: Vec<String>,
    pub ssh_timeout: Duration,
    pub jobs: Jobs,
    /// For a VM that has to be booted instead (its template is gone).
    pub accel: Accel,
}

/// Resets the named clones (every VM of the lab when none is named). Every
/// name is checked before anything is touched: each must be one of the
/// lab's clones, defined in libvirt.
pub fn reset(lab: &Lab, req: &ResetRequest, progress: Progress) -> Result<UpReport> {
    let domain_type = accel::domain_type(req.accel)?;
    if !lab.paths.dir.exists() {
        bail!("lab `{}` has no VMs; `vmlab status` lists them", lab.name);
    }
    let _change = lock::change(&lab.paths)?;
    let inv = inventory::take(lab)?;
    let names: Vec<String> = if req.names.is_empty() {
        inv.state.vms.iter().map(|v| v.name.clone()).collect()
    } else {
        req.names.clone()
    };
    if names.is_empty() {
        bail!("lab `{}` has no VMs; `vmlab status` lists them", lab.name);
    }
    let mut stopped = Vec::new();
    let mut images = Vec::new();
    for name in &names {
        if inv.foreign(lab, name).is_some() {
            bail!("`{name}` was not created by this lab; vmlab leaves it alone");
        }
        let Some(record) = inv.state.get(name) else {
            bail!(
                "lab `{}` has no VM `{name}`; `vmlab status` lists them",
                lab.name
            );
        };
        let Some(domain) = inv.domain(lab, name) else {
            bail!("`{name}` has no domain; bring it back with `vmlab up` first");
        };
        if record.template.is_none() {
            bail!(
                "`{name}` was booted, not cloned: only clones go back to a saved state (`vmlab up N --from-snapshot` makes clones)"
            );
        }
        if !domain.state.is_active() {
            stopped.push(record.memory);
        }
        if !images.contains(&record.image) {
            images.push(record.image.clone());
        }
    }
    check_memory(&stopped, lab.hv.node()?.free.mib())?;
    let _images_in_use = images
        .iter()
        .map(|name| image::use_lock(lab.home, name))
        .collect::<Result<Vec<_>>>()?;
    let pubkey = keys::ensure(&lab.paths, &lab.name)?;
    let prefix = inv.state.prefix.clone().unwrap_or_default();
    for name in &names {
        progress(name, super::up::Stage::Queued);
    }
    let ctx = Ctx {
        prov: Provisioner {
            lab,
            domain_type,
            prefix: &prefix,
            pubkey: &pubkey,
            ssh_timeout: req.ssh_timeout,
        },
        state: Mutex::new(inv.state),
        notes: Mutex::new(inv.notes),
        wait_ssh: true,
        progress,
    };
    let steps: Vec<(String, Step)> = names.into_iter().map(|n| (n, Step::Reset)).collect();
    let outcomes = ctx.run_all(&steps, req.jobs.for_restores(steps.len()));
    Ok(UpReport {
        prefix: prefix.clone(),
        outcomes,
        template: None,
        notes: ctx.notes.into_inner().unwrap(),
    })
}
