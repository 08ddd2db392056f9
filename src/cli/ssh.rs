use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::{Global, connect, exit};
use crate::config::Network;
use crate::guest::ssh::{Exit, Guest, Io};
use crate::hypervisor::PowerState;
use crate::lab::state::{LabState, VmRecord};
use crate::lab::{Lab, inventory, ssh_target};
use crate::paths::Home;

#[derive(clap::Args, Debug)]
pub struct Args {
    vm: String,
    /// Command line run by the guest's shell, as with `ssh host CMD`; stdin
    /// is forwarded when it is not a terminal
    #[arg(last = true)]
    command: Vec<String>,
}

/// Exits with the guest command's status (255 when a signal killed it).
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    let home = global.home()?;
    let paths = home.lab(&place.lab);
    let record = find(&home, &place.lab, &place.connect, &args.vm)?;
    if record.network != Network::User {
        bail!(
            "`{}` is on the nat network, which vmlab reaches only through a 127.0.0.1 forward on the user network",
            args.vm
        );
    }
    let target = ssh_target(&paths, &record);
    // Also pins the host key on first contact, for the system client below.
    let guest = Guest::connect(&target, Duration::from_secs(10))
        .map_err(|e| explain(&home, &place.lab, &place.connect, &args.vm, e))?;
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
                "-o",
                "ServerAliveInterval=15",
                "-p",
            ])
            .arg(target.addr.port().to_string())
            .arg(format!("{}@{}", target.user, target.addr.ip()))
            .status()
            .context("running the system `ssh` client for an interactive shell")?;
        return Ok(status.code().unwrap_or(exit::KILLED_BY_SIGNAL));
    }
    let stdin = std::io::stdin();
    let forward = !stdin.is_terminal();
    let io = Io {
        stdin: forward.then(|| Box::new(stdin) as Box<dyn std::io::Read + Send>),
        stdout: &mut std::io::stdout(),
        stderr: &mut std::io::stderr(),
        cancel: None,
    };
    let end = guest.exec_io(&args.command.join(" "), io, None)?;
    if let Exit::Signal(signal) = &end {
        eprintln!(
            "vmlab: the command in {} was killed by signal {signal}",
            args.vm
        );
    }
    Ok(exit::of_guest(&end))
}

/// The VM's record from the state file, so no libvirt is needed; from
/// libvirt's marks when the state does not have it.
fn find(home: &Home, lab: &str, uri: &str, vm: &str) -> Result<VmRecord> {
    if let Ok(state) = LabState::load(&home.lab(lab))
        && let Some(record) = state.get(vm)
    {
        return Ok(record.clone());
    }
    let hv = connect(uri)?;
    let lab = Lab::new(&hv, home, lab);
    let inv = inventory::take(&lab)?;
    inv.state.get(vm).cloned().ok_or_else(|| {
        anyhow!(
            "lab `{}` has no VM `{vm}`; `vmlab status` lists them",
            lab.name
        )
    })
}

/// Why the guest did not answer, when libvirt can tell.
fn explain(home: &Home, lab: &str, uri: &str, vm: &str, e: anyhow::Error) -> anyhow::Error {
    let Ok(hv) = connect(uri) else {
        return e;
    };
    let lab = Lab::new(&hv, home, lab);
    match hv_state(&lab, vm) {
        Some(Some(PowerState::Paused)) => {
            anyhow!("`{vm}` is paused; resume it with `virsh -c {uri} resume {vm}`")
        }
        Some(Some(state)) if !state.is_active() => {
            anyhow!("`{vm}` is {state}; start it with `vmlab up`")
        }
        Some(None) => anyhow!("`{vm}` has no domain any more; recreate it with `vmlab up`"),
        _ => e,
    }
}

fn hv_state(lab: &Lab, vm: &str) -> Option<Option<PowerState>> {
    let d = lab.hv.domain(vm).ok()?;
    Some(d.filter(|d| lab.owns(d)).map(|d| d.state))
}
