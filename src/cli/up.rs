use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;

use super::bars::Bars;
use super::{Global, connect, exit, notes};
use crate::config::Settings;
use crate::lab::Lab;
use crate::lab::up::{Stage, Step, UpReport, UpRequest, up};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many VMs the lab should have (PREFIX-1..PREFIX-N)
    #[arg(value_parser = parse_count)]
    count: u32,
    #[command(flatten)]
    settings: Settings,
    /// Define and start, but do not wait for SSH
    #[arg(long)]
    no_wait: bool,
    /// Machine-readable result on stdout
    #[arg(long)]
    json: bool,
}

fn parse_count(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err("the VM count must be at least 1".into()),
        Ok(n) if n <= 256 => Ok(n),
        Ok(_) => Err("at most 256 VMs per lab".into()),
        Err(_) => Err(format!(
            "`{text}` is not a number of VMs; e.g. `vmlab up 3`"
        )),
    }
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let spec = global.spec(args.settings)?;
    let home = global.home()?;
    let hv = connect(&spec.connect)?;
    let lab = Lab::new(&hv, &home, &spec.lab);
    let bars = Bars::new(!args.json);
    let started = Instant::now();
    let report = up(
        &lab,
        &UpRequest {
            spec,
            count: args.count,
            wait_ssh: !args.no_wait,
        },
        &|vm, stage| {
            if stage != Stage::Queued {
                bars.show(vm, &stage.to_string(), stage.is_final())
            }
        },
    )?;
    bars.clear();
    finish(&lab.name, &report, args.json, started, "ready")
}

/// Prints what `up` or `reset` did (a table, or JSON); fails when a VM failed.
pub(super) fn finish(
    lab: &str,
    report: &UpReport,
    as_json: bool,
    started: Instant,
    done: &str,
) -> Result<i32> {
    notes(&report.notes);
    let failed: Vec<String> = report
        .outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| format!("{}: {e:#}", o.name))
        })
        .collect();
    if as_json {
        let vms: Vec<_> = report
            .outcomes
            .iter()
            .map(|o| {
                json!({
                    "name": o.name,
                    "step": o.step,
                    "cloned": o.cloned,
                    "ok": o.result.is_ok(),
                    "error": o.result.as_ref().err().map(|e| format!("{e:#}")),
                    "ssh_port": o.ssh_port,
                    "elapsed_s": o.elapsed.as_secs_f64(),
                })
            })
            .collect();
        let doc = json!({
            "schema": 1,
            "lab": lab,
            "prefix": report.prefix,
            "template": report.template,
            "vms": vms,
            "notes": report.notes,
            "elapsed_s": started.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(if failed.is_empty() {
            exit::SUCCESS
        } else {
            exit::VMLAB_FAILED
        });
    }
    for o in &report.outcomes {
        let what = match (o.step, o.cloned) {
            (Step::Create, true) => "cloned",
            (Step::Create, false) => "created",
            (Step::Start, true) => "cloned afresh",
            (Step::Start, false) => "started",
            (Step::Check, _) => "already running",
            (Step::Reset, true) => "reset",
            (Step::Reset, false) => "booted afresh",
        };
        let ssh = o
            .ssh_port
            .map(|p| format!("  ssh 127.0.0.1:{p}"))
            .unwrap_or_default();
        match &o.result {
            Ok(()) => println!(
                "{:<10} {what:<16}{ssh}  ({:.1} s)",
                o.name,
                o.elapsed.as_secs_f64()
            ),
            Err(_) => println!("{:<10} FAILED", o.name),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} VMs failed:\n{}",
            failed.len(),
            report.outcomes.len(),
            failed.join("\n")
        );
    }
    if let Some(t) = &report.template {
        match t.made_in_s {
            Some(s) => println!("made template `{}` in {s:.1} s", t.id),
            None => println!("cloned from template `{}`", t.id),
        }
    }
    println!(
        "lab `{lab}`: {} VMs {done} in {:.1} s",
        report.outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(exit::SUCCESS)
}
