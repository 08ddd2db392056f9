use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::logging::say;
use super::workload_args::interrupt_flag;
use super::{Global, connect, exit};
use crate::lab::inventory::{On, select};
use crate::lab::{Lab, lock};
use crate::manage::policy::{CpuPolicy, ManageConfig, MemoryPolicy, Overrides};
use crate::manage::run::{
    Hooks, MANAGE_FILES, Options, Scope, Wall, list_domains, run as run_loop,
};
use crate::rundir::{DECISIONS_CSV, RunDir};
use crate::units::parse_interval_s;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between rounds [default: 2, or `interval_s` under [manage] in vmlab.toml]
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval_s)]
    interval: Option<f64>,
    /// vCPU policy [default: pin]
    #[arg(long, value_enum)]
    cpu_policy: Option<CpuPolicy>,
    /// Memory policy [default: balloon]
    #[arg(long, value_enum)]
    memory_policy: Option<MemoryPolicy>,
    /// Decide and log, change nothing
    #[arg(long)]
    dry_run: bool,
    /// One decision round (after a baseline sample), then stop
    #[arg(long)]
    once: bool,
    /// Stop after this long, e.g. 90s or 5m
    #[arg(long, value_parser = crate::duration::parse)]
    duration: Option<Duration>,
    /// Manage these domains (any domain, named explicitly) instead of the lab's
    #[arg(long, value_delimiter = ',')]
    domains: Vec<String>,
    /// Where the run's files go: DIR/<run-id>/
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Use results/ID (shared with `vmlab monitor --run ID`)
    #[arg(long, value_name = "ID")]
    run: Option<String>,
}

pub fn run_cli(global: &Global, args: Args) -> Result<i32> {
    let config = ManageConfig::resolve(
        global.file()?.as_ref(),
        Overrides {
            interval_s: args.interval,
            cpu: args.cpu_policy,
            memory: args.memory_policy,
        },
    )?;
    for name in &args.domains {
        crate::config::check_name("domain", name)?;
    }
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    // One manager per domain; readers never block `up`/`down`.
    let (_claim, scope) = if args.domains.is_empty() {
        let lab = Lab::new(&hv, &home, &place.lab);
        select(&lab, &On::All)?;
        let claim = lock::claim_lab(&lab)?;
        let scope = Scope::Lab {
            home: home.clone(),
            lab: place.lab.clone(),
        };
        (claim, scope)
    } else {
        let claim = lock::claim_domains(&hv, &home, &args.domains)?;
        (claim, Scope::Named(args.domains.clone()))
    };
    let run = RunDir::named_or_new(&args.results, args.run.as_deref(), "manage")?;
    run.check_free(&MANAGE_FILES)?;
    let cancel = interrupt_flag()?;
    let uri = place.connect.clone();
    say!(
        "managing {} every {} s (cpu: {}, memory: {}{}); decisions in {}",
        match &scope {
            Scope::Lab { lab, .. } => format!("lab `{lab}`"),
            Scope::Named(names) => names.join(", "),
        },
        config.interval_s,
        config.cpu,
        config.memory,
        if args.dry_run { ", dry run" } else { "" },
        run.file(DECISIONS_CSV).display()
    );
    let summary = run_loop(
        &|| connect(&uri),
        &|hv| list_domains(hv, &scope),
        &Options {
            config,
            dry_run: args.dry_run,
            once: args.once,
            run: Some(run),
        },
        &Wall::new(&cancel, args.duration),
        Hooks {
            say: &|line| println!("{line}"),
            decided: &mut |_, _, _| {},
        },
    )?;
    println!("{summary}");
    Ok(exit::SUCCESS)
}
