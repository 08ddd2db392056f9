use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};

use super::logging::say;
use super::workload_args::interrupt_flag;
use super::{Global, connect, exit};
use crate::bench::results::run_id;
use crate::files::FileLock;
use crate::lab::lock;
use crate::manage::policy::{CpuPolicy, MemoryPolicy};
use crate::manage::run::{Options, Scope, run};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between rounds [default: 2, or `interval_s` under [manage] in vmlab.toml]
    #[arg(long, value_name = "SECONDS")]
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
    #[arg(long, value_parser = humantime::parse_duration)]
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
    let mut config = global
        .spec(Default::default())?
        .given
        .manage
        .unwrap_or_default();
    if let Some(i) = args.interval {
        config.interval_s = i;
    }
    if let Some(p) = args.cpu_policy {
        config.cpu = p;
    }
    if let Some(p) = args.memory_policy {
        config.memory = p;
    }
    config.validate()?;
    for name in &args.domains {
        crate::config::check_name("domain", name)?;
    }
    let place = global.place()?;
    let home = global.home()?;
    // One manager per lab; a reader that never blocks `up`/`down`.
    let (_reader, _manager, scope) = if args.domains.is_empty() {
        let paths = home.lab(&place.lab);
        let reader = lock::reader(&paths)?;
        let Some(manager) = FileLock::try_exclusive(&paths.dir.join("manage.lock"))? else {
            bail!(
                "another `vmlab manage` already manages lab `{}`; stop it first (Ctrl-C)",
                place.lab
            );
        };
        let scope = Scope::Lab {
            home: home.clone(),
            lab: place.lab.clone(),
        };
        (Some(reader), Some(manager), scope)
    } else {
        (None, None, Scope::Named(args.domains.clone()))
    };
    let id = args
        .run
        .clone()
        .unwrap_or_else(|| run_id("manage", SystemTime::now()));
    crate::config::check_name("run id", &id)?;
    let run_dir = args.results.join(&id);
    let cancel = interrupt_flag()?;
    let uri = place.connect.clone();
    say!(
        "managing {} every {} s (cpu: {:?}, memory: {:?}{}); decisions in {}",
        match &scope {
            Scope::Lab { lab, .. } => format!("lab `{lab}`"),
            Scope::Named(names) => names.join(", "),
        },
        config.interval_s,
        config.cpu,
        config.memory,
        if args.dry_run { ", dry run" } else { "" },
        run_dir.join("decisions.csv").display()
    );
    let summary = run(
        &|| connect(&uri),
        &scope,
        &Options {
            config,
            dry_run: args.dry_run,
            once: args.once,
            duration: args.duration,
            run_dir: run_dir.clone(),
        },
        &cancel,
        &|line| println!("{line}"),
    )?;
    println!("{summary}");
    Ok(exit::SUCCESS)
}
