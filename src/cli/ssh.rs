use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Global;
use crate::config::Settings;
use crate::guest::ssh::Guest;
use crate::hypervisor::Hypervisor;
use crate::lab::Lab;
use crate::lab::state::LabState;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// Command line run by the guest's shell, as with `ssh host CMD`
    #[arg(last = true)]
    command: Vec<String>,
}

/// Exits with the guest command's status.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(Settings::default())?;
    let home = global.home()?;
    let hv = global.connect(&spec)?;
    let lab = Lab::new(&hv, &home, &spec.lab);
    let state = LabState::load(&lab.paths)?;
    let Some(record) = state.get(&args.vm) else {
        bail!(
            "lab `{}` has no VM `{}`; `vmlab status` lists them",
            lab.name,
            args.vm
        );
    };
    match hv.domain(&args.vm)? {
        Some(d) if d.state.is_active() => {}
        Some(d) => bail!("`{}` is {}; start it with `vmlab up`", args.vm, d.state),
        None => bail!(
            "`{}` has no domain any more; recreate it with `vmlab up`",
            args.vm
        ),
    }
    let target = lab.ssh_target(record);
    // Also pins the host key on first contact, for the system client below.
    let guest = Guest::connect(&target, Duration::from_secs(10))?;
    if args.command.is_empty() {
        // An interactive shell needs a real terminal client; same key, same pinned host key.
        let status = std::process::Command::new("ssh")
            .arg("-i")
            .arg(&target.key)
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                target.known_hosts.display()
            ))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-p",
            ])
            .arg(target.addr.port().to_string())
            .arg(format!("{}@{}", target.user, target.addr.ip()))
            .status()
            .context("running the system `ssh` client for an interactive shell")?;
        return Ok(status.code().unwrap_or(255));
    }
    let code = guest.exec_to(
        &args.command.join(" "),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    Ok(code)
}
