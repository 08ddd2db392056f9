use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use super::logging::say;
use super::workload_args::interrupt_flag;
use super::{Global, connect, exit};
use crate::guest::ssh::Guest;
use crate::hypervisor::Hypervisor;
use crate::lab::Lab;
use crate::lab::inventory::{On, select};
use crate::manage::policy::{CpuPolicy, ManageConfig, MemoryPolicy, Overrides};
use crate::manage::scenario::{
    self, External, Play, Played, Record, foreign_running, play, shape_error,
};
use crate::manage::scorecard::{Line, Scorecard};
use crate::manage::sim;
use crate::manage::sim::scenario::{Scale, Scenario, library};
use crate::manage::verdict::verdict;
use crate::rundir::{RunDir, SCORECARD_JSON, SCORECARD_MD};
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
    /// Scenarios to play, in order (`vmlab scenario list` names them)
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    names: Vec<String>,
    /// Every course case: course-cpu-1..3, then course-mem-1..3
    #[arg(long)]
    all: bool,
    /// Your own manager instead of vmlab's policies: PROGRAM [ARGS]..., run
    /// without a shell (e.g. `--manager ./vcpu_scheduler 2`)
    #[arg(long, num_args = 1.., value_name = "PROGRAM", conflicts_with_all = ["cpu_manager", "memory_manager"])]
    manager: Option<Vec<String>>,
    /// Your vCPU scheduler, beside --memory-manager
    #[arg(long, num_args = 1.., value_name = "PROGRAM")]
    cpu_manager: Option<Vec<String>>,
    /// Your memory coordinator, beside --cpu-manager
    #[arg(long, num_args = 1.., value_name = "PROGRAM")]
    memory_manager: Option<Vec<String>>,
    /// Start your manager although other running domains, which it would
    /// act on too, are not this lab's
    #[arg(long)]
    allow_foreign: bool,
    /// Also play each scenario under vmlab's own policies and the
    /// course-style baseline (greedy re-pinning, fixed-step ballooning),
    /// side by side
    #[arg(long)]
    compare: bool,
    /// In the simulator instead of the lab (vmlab's policies only)
    #[arg(long, conflicts_with_all = ["manager", "cpu_manager", "memory_manager"])]
    sim: bool,
    /// First take the lab's clones back to their just-restored state, as
    /// `vmlab reset` does, so that the scenario starts from a clean lab
    #[arg(long, conflicts_with = "sim")]
    reset: bool,
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

impl RunArgs {
    fn external(&self) -> Vec<External> {
        [
            ("manager", &self.manager),
            ("cpu-manager", &self.cpu_manager),
            ("memory-manager", &self.memory_manager),
        ]
        .into_iter()
        .filter_map(|(role, argv)| {
            argv.as_ref().map(|argv| External {
                role: role.to_string(),
                argv: argv.clone(),
            })
        })
        .collect()
    }
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
    let chosen = if args.all {
        scenarios
            .iter()
            .filter(|s| s.name.starts_with("course-"))
            .cloned()
            .collect()
    } else {
        args.names
            .iter()
            .map(|n| find(&scenarios, n))
            .collect::<Result<Vec<_>>>()?
    };
    let external = args.external();
    for e in &external {
        crate::host::child::check(&e.role, &e.argv)?;
    }
    let managers = managers(&external, args.compare);
    let mut lines = Vec::new();
    if args.sim {
        for scenario in &chosen {
            for manager in &managers {
                let config = config(global, &args, scenario, manager)?;
                let run = sim::run(scenario, &config);
                let names: Vec<String> = scenario.vms.iter().map(|v| v.name.clone()).collect();
                lines.push(line(
                    scenario,
                    manager,
                    &names,
                    &run.snapshots,
                    &run.report,
                    Vec::new(),
                    "",
                ));
            }
        }
    } else {
        if vms.is_empty() {
            bail!(
                "lab `{}` has no running VMs; start some with `vmlab up {}`",
                place.lab,
                scale.vms
            );
        }
        for scenario in &chosen {
            if let Some(why) = shape_error(scenario, &place.lab, &vms) {
                bail!(why);
            }
        }
        if !external.is_empty() && !args.allow_foreign {
            let foreign = foreign_running(&hv.domains()?, |d| lab.owns(d));
            if !foreign.is_empty() {
                bail!(
                    "your manager acts on every running domain, and {} not lab `{}`'s: stop them, or pass --allow-foreign to go ahead",
                    foreign
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if foreign.len() == 1 { " is" } else { " are" },
                    place.lab
                );
            }
        }
        let _claim = crate::lab::lock::claim_lab(&lab)?;
        let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
        let mut vms = vms;
        let mut first = true;
        for scenario in &chosen {
            for manager in &managers {
                // --reset: every play starts from the clones' saved state; a
                // lab that cannot be reset is refused before the first play.
                if args.reset {
                    match reset_all(global, &lab) {
                        Ok(fresh) => vms = fresh,
                        Err(e) if first => return Err(e),
                        Err(e) => {
                            say!("{} ({manager:?}) could not be played: {e:#}", scenario.name);
                            lines.push(Line::not_played(
                                scenario.name,
                                &format!("{manager:?}").to_lowercase(),
                                scenario.expect,
                                &format!("{e:#}"),
                            ));
                            continue;
                        }
                    }
                }
                first = false;
                let config = config(global, &args, scenario, manager)?;
                let ext: &[External] = match manager {
                    Manager::Yours => &external,
                    _ => &[],
                };
                let played = real(
                    global,
                    &place.connect,
                    &home,
                    &lab,
                    &vms,
                    scenario,
                    &config,
                    ext,
                    &args.results,
                )
                .and_then(|(played, dir)| Ok((Record::load(&dir)?.1, played, dir)));
                // One scenario that could not be played fails its line; the
                // rest of the suite still plays.
                lines.push(match played {
                    Ok((observed, played, dir)) => line(
                        scenario,
                        manager,
                        &names,
                        &observed,
                        &played.report,
                        played.programs,
                        &dir.display().to_string(),
                    ),
                    Err(e) => {
                        say!("{} ({manager:?}) could not be played: {e:#}", scenario.name);
                        Line::not_played(
                            scenario.name,
                            &format!("{manager:?}").to_lowercase(),
                            scenario.expect,
                            &format!("{e:#}"),
                        )
                    }
                });
                if crate::host::signals::stopping() {
                    break;
                }
            }
            if crate::host::signals::stopping() {
                break;
            }
        }
    }
    let card = Scorecard::new(lines);
    print!("{}", card.text());
    if !args.sim {
        let dir = RunDir::create(&args.results, "scorecard", SystemTime::now())?;
        write(
            &dir,
            SCORECARD_JSON,
            &(serde_json::to_string_pretty(&card)? + "\n"),
        )?;
        write(&dir, SCORECARD_MD, &card.markdown())?;
        println!("scorecard in {}", dir.path.display());
    }
    if crate::host::signals::stopping() {
        return Ok(crate::host::signals::exit_code());
    }
    Ok(if card.pass {
        exit::SUCCESS
    } else {
        exit::CHECK_FAILED
    })
}

/// Who manages each scenario: the programs named (else vmlab), then with
/// `--compare` the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Yours,
    Vmlab,
    Greedy,
}

fn managers(external: &[External], compare: bool) -> Vec<Manager> {
    let first = if external.is_empty() {
        Manager::Vmlab
    } else {
        Manager::Yours
    };
    let mut all = vec![first];
    if compare {
        all.extend(
            [Manager::Vmlab, Manager::Greedy]
                .into_iter()
                .filter(|m| *m != first),
        );
    }
    all
}

fn config(
    global: &Global,
    args: &RunArgs,
    scenario: &Scenario,
    manager: &Manager,
) -> Result<ManageConfig> {
    // The course-style baseline: greedy re-pinning, fixed-step ballooning.
    let (cpu, memory) = match manager {
        Manager::Greedy => (Some(CpuPolicy::Greedy), Some(MemoryPolicy::Threshold)),
        // The hot-plug scenario is about hot-plug.
        _ => (
            args.cpu_policy
                .or((scenario.name == "hotplug").then_some(CpuPolicy::PinHotplug)),
            args.memory_policy,
        ),
    };
    ManageConfig::resolve(
        global.file()?.as_ref(),
        Overrides {
            interval_s: args.interval,
            cpu,
            memory,
        },
    )
}

fn line(
    scenario: &Scenario,
    manager: &Manager,
    names: &[String],
    observed: &[crate::manage::snapshot::Snapshot],
    report: &crate::manage::judge::Report,
    programs: Vec<crate::host::child::Outcome>,
    run_dir: &str,
) -> Line {
    Line {
        scenario: scenario.name.to_string(),
        manager: format!("{manager:?}").to_lowercase(),
        expect: scenario.expect,
        verdict: verdict(scenario, names, observed, report),
        figures: report.figures(),
        programs,
        run_dir: run_dir.to_string(),
    }
}

fn write(dir: &RunDir, name: &str, text: &str) -> Result<()> {
    std::io::Write::write_all(&mut dir.create_file(name)?, text.as_bytes())
        .with_context(|| format!("writing {}", dir.file(name).display()))
}

/// `vmlab reset` of all the lab's clones, its lines printed; the lab's VMs
/// after it.
fn reset_all(global: &Global, lab: &Lab) -> Result<Vec<crate::lab::state::VmRecord>> {
    let started = std::time::Instant::now();
    let report = super::reset::reset_lab(global, lab, Vec::new(), true)?;
    super::up::finish(&lab.name, &report, false, started, "reset")?;
    select(lab, &On::All)
}

fn find(scenarios: &[Scenario], name: &str) -> Result<Scenario> {
    let known: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
    scenarios
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| anyhow!("no scenario `{name}`; there are {}", known.join(", ")))
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
    external: &[External],
    results: &std::path::Path,
) -> Result<(Played, PathBuf)> {
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
            external,
            run,
            prepare: &prepare,
            template: &template,
        },
        &cancel,
        &|line| println!("{line}"),
    )?;
    println!("results in {}", run_dir.display());
    Ok((report, run_dir))
}
