use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Result, anyhow, bail};

use super::logging::say;
use super::workload_args::interrupt_flag;
use super::{Global, connect, exit};
use crate::guest::ssh::Guest;
use crate::hypervisor::Hypervisor;
use crate::lab::Lab;
use crate::lab::inventory::{On, select};
use crate::manage::judge::Figures;
use crate::manage::policy::{CpuPolicy, ManageConfig, MemoryPolicy, Overrides};
use crate::manage::scenario::{self, Play, play};
use crate::manage::sim;
use crate::manage::sim::scenario::{Scale, Scenario, library};
use crate::rundir::RunDir;
use crate::workload::source::Offered;
use crate::workload::{Preset, Request, check};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The scenarios, at the lab's scale (its VMs on this host's pCPUs)
    List,
    /// Play a scenario on the lab (or in the simulator) under the manager, and judge it
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    name: String,
    /// In the simulator instead of the lab
    #[arg(long)]
    sim: bool,
    /// vCPU policy [default: pin]
    #[arg(long, value_enum)]
    cpu_policy: Option<CpuPolicy>,
    /// Memory policy [default: balloon]
    #[arg(long, value_enum)]
    memory_policy: Option<MemoryPolicy>,
    /// Seconds between the manager's rounds [default: 2]
    #[arg(long, value_name = "SECONDS", value_parser = crate::units::parse_interval_s)]
    interval: Option<f64>,
    /// Where the run's files go: DIR/<run-id>/
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

pub fn run(global: &Global, cmd: Command) -> Result<i32> {
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let lab = Lab::new(&hv, &home, &place.lab);
    let vms = select(&lab, &On::All).unwrap_or_default();
    let scale = Scale {
        pcpus: hv.node()?.cpus,
        vms: if vms.is_empty() {
            Scale::default().vms
        } else {
            vms.len() as u32
        },
    };
    let scenarios = library(scale);
    let args = match cmd {
        Command::List => {
            println!("at {} pCPUs and {} VMs:", scale.pcpus, scale.vms);
            for s in &scenarios {
                println!("  {:<22} {:>4.0} s  {}", s.name, s.duration_s, s.about);
            }
            return Ok(exit::SUCCESS);
        }
        Command::Run(args) => args,
    };
    let scenario = find(scenarios, &args.name)?;
    let config = ManageConfig::resolve(
        global.file()?.as_ref(),
        Overrides {
            interval_s: args.interval,
            // The hot-plug scenario is about hot-plug.
            cpu: args
                .cpu_policy
                .or((scenario.name == "hotplug").then_some(CpuPolicy::PinHotplug)),
            memory: args.memory_policy,
        },
    )?;
    let report = if args.sim {
        sim::run(&scenario, &config).report
    } else {
        if vms.is_empty() {
            bail!(
                "lab `{}` has no running VMs; start some with `vmlab up {}`",
                place.lab,
                scale.vms
            );
        }
        real(
            global,
            &place.connect,
            &home,
            &lab,
            &vms,
            &scenario,
            &config,
            &args.results,
        )?
    };
    println!("{:<22} {}", "scenario", Figures::header());
    println!("{:<22} {}", scenario.name, report.figures());
    Ok(exit::SUCCESS)
}

fn find(scenarios: Vec<Scenario>, name: &str) -> Result<Scenario> {
    let names: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    let known = names.join(", ");
    scenarios
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("no scenario `{name}`; there are {known}"))
}

#[allow(clippy::too_many_arguments)]
fn real(
    global: &Global,
    uri: &str,
    home: &crate::paths::Home,
    lab: &Lab,
    vms: &[crate::lab::state::VmRecord],
    scenario: &Scenario,
    config: &ManageConfig,
    results: &std::path::Path,
) -> Result<crate::manage::judge::Report> {
    let _claim = crate::lab::lock::claim_lab(lab)?;
    let guests = vms
        .iter()
        .map(|vm| Guest::connect(&lab.ssh_target(vm), Duration::from_secs(10)))
        .collect::<Result<Vec<_>>>()?;
    let file = global.spec(Default::default())?.given;
    let template = Request {
        name: String::new(),
        given: Vec::new(),
        preset: Preset::Default,
        offered: Offered::default(),
        workloads_dir: crate::workload::catalog::configured(file.workloads_dir),
    };
    let prepare = |req: &Request| check(home, req)?.ready(home, &req.offered, &mut |_| {});
    let sampler = connect(uri)?;
    let connect_again = || connect(uri);
    let run = RunDir::create(
        results,
        &format!("scenario-{}", scenario.name),
        SystemTime::now(),
    )?;
    let run_dir = run.path.clone();
    say!(
        "playing `{}` ({} s) on {}; manager files in {}",
        scenario.name,
        scenario.duration_s,
        vms.iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        run_dir.display()
    );
    let cancel = interrupt_flag()?;
    let report = play(
        &scenario::Stage {
            vms,
            guests: &guests,
            hv: &sampler,
            connect: &connect_again,
        },
        Play {
            scenario,
            config,
            run,
            prepare: &prepare,
            template: &template,
        },
        &cancel,
        &|line| println!("{line}"),
    )?;
    println!("results in {}", run_dir.display());
    Ok(report)
}
