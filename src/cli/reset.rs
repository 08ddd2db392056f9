use std::time::Instant;

use anyhow::Result;

use super::bars::Bars;
use super::{Global, connect};
use crate::config::Settings;
use crate::lab::Lab;
use crate::lab::reset::{ResetRequest, reset};
use crate::lab::up::{Stage, UpReport};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Clones to reset [default: all of the lab's]
    vms: Vec<String>,
    /// Machine-readable result on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(Settings::default())?;
    let home = global.home()?;
    let hv = connect(&spec.connect)?;
    let lab = Lab::new(&hv, &home, &spec.lab);
    let started = Instant::now();
    let report = reset_lab(global, &lab, args.vms, !args.json)?;
    super::up::finish(&lab.name, &report, args.json, started, "reset")
}

/// `vmlab reset` of the named clones (all of the lab's when none), with
/// progress bars when `bars`; `scenario run --reset` calls it too.
pub(super) fn reset_lab(
    global: &Global,
    lab: &Lab,
    vms: Vec<String>,
    bars: bool,
) -> Result<UpReport> {
    let spec = global.spec(Settings::default())?;
    let bars = Bars::new(bars);
    let report = reset(
        lab,
        &ResetRequest {
            names: vms,
            ssh_timeout: std::time::Duration::from_secs(spec.ssh_timeout_s),
            jobs: spec.jobs,
            accel: spec.accel,
        },
        &|vm, stage| {
            if stage != Stage::Queued {
                bars.show(vm, &stage.to_string(), stage.is_final())
            }
        },
    )?;
    bars.clear();
    Ok(report)
}
