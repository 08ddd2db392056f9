//! Command-line interface: clap definitions and one small function per verb
//! that turns arguments into a typed request and calls the domain modules.

mod bars;
mod bench;
mod completions;
mod console;
mod dashboard;
mod doctor;
mod down;
pub mod exit;
mod image;
mod logging;
mod manage;
mod monitor;
mod plot;
mod reset;
mod results;
mod run;
mod scenario;
mod ssh;
mod status;
mod stop;
mod up;
mod workload_args;
mod workloads;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{ConfigFile, DEFAULT_CONNECT, DEFAULT_LAB, LabSpec, Settings, check_name};
use crate::hypervisor::libvirt::Libvirt;
use crate::paths::Home;

#[derive(Parser, Debug)]
#[command(
    name = "vmlab",
    version,
    about = "A virtualization lab on one host: QEMU + libvirt VMs, provisioned, reachable over SSH, torn down cleanly",
    after_help = "Exit codes: 0 success; `ssh`: the guest command's status, 255 if it was killed by a signal; 1 a check or benchmark failed; 2 invalid arguments; 125 vmlab could not do it."
)]
pub struct Cli {
    /// libvirt URI [default: qemu:///system]
    #[arg(long, global = true, env = "VMLAB_CONNECT")]
    connect: Option<String>,
    /// Lab name: labs are independent sets of VMs [default: default]
    #[arg(long, global = true, env = "VMLAB_LAB")]
    lab: Option<String>,
    /// Settings file (same keys as the `up` flags) [default: ./vmlab.toml if present]
    #[arg(long, global = true, env = "VMLAB_CONFIG")]
    config: Option<PathBuf>,
    /// More detail on stderr (-vv for debugging)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or start VMs until the lab has N, all answering SSH
    Up(Box<up::Args>),
    /// Destroy VMs and delete their disks and state (all of the lab's without names)
    Down(down::Args),
    /// Clones back to their just-restored state: disk discarded, memory restored from the template
    Reset(reset::Args),
    /// State, vCPUs, pins, memory and SSH endpoint of each VM
    Status(status::Args),
    /// Run a command in a VM over SSH (an interactive shell without one)
    Ssh(ssh::Args),
    /// Print a VM's serial console log
    Console(console::Args),
    /// Workloads and benchmarks vmlab can run, with their parameters
    Workloads(workloads::Args),
    /// Run a workload in VMs (in parallel); exits with the worst status
    Run(run::Args),
    /// Stop a workload started with `vmlab run --detach`
    Stop(stop::Args),
    /// Benchmark VMs (matrix of vCPUs/memory, repeats) into results/<run-id>/
    Bench(bench::Args),
    /// Manage the lab's VMs online: vCPU pins or hot-plug, memory balloons
    Manage(manage::Args),
    /// Scenarios for the manager: list them, play one on the lab or in the simulator
    #[command(subcommand)]
    Scenario(scenario::Command),
    /// Guest and host metrics of the lab's VMs into results/<run-id>/metrics.csv
    Monitor(monitor::Args),
    /// A live dashboard in the browser (and /metrics for Prometheus)
    Dashboard(dashboard::Args),
    /// PNG and SVG figures of a run
    Plot(plot::Args),
    /// Benchmark runs under results/: list, show, compare, references from a run
    Results(results::Args),
    /// Build, fetch, list and remove base images
    #[command(subcommand)]
    Image(image::Command),
    /// Check that this host can run a lab, and say how to fix what is missing
    Doctor(doctor::Args),
    /// Shell completion script for bash, zsh, fish, …
    Completions(completions::Args),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.quiet);
    let global = Global {
        connect: cli.connect,
        lab: cli.lab,
        config: cli.config,
    };
    match run(&global, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            // What failed because it was stopped exits as stopped.
            if crate::host::signals::stopping() {
                exit::interrupted()
            } else {
                exit::VMLAB_FAILED
            }
        }
    }
}

fn run(global: &Global, command: Command) -> Result<i32> {
    match command {
        Command::Up(args) => up::run(global, *args),
        Command::Down(args) => down::run(global, args),
        Command::Reset(args) => reset::run(global, args),
        Command::Status(args) => status::run(global, args),
        Command::Ssh(args) => ssh::run(global, args),
        Command::Console(args) => console::run(global, args),
        Command::Workloads(args) => workloads::run(global, args),
        Command::Run(args) => run::run(global, args),
        Command::Stop(args) => stop::run(global, args),
        Command::Bench(args) => bench::run(global, args),
        Command::Manage(args) => manage::run_cli(global, args),
        Command::Scenario(cmd) => scenario::run(global, cmd),
        Command::Monitor(args) => monitor::run(global, args),
        Command::Dashboard(args) => dashboard::run(global, args),
        Command::Plot(args) => plot::run(args),
        Command::Results(args) => results::run(args),
        Command::Image(cmd) => image::run(global, cmd),
        Command::Doctor(args) => doctor::run(global, args),
        Command::Completions(args) => completions::run(args),
    }
}

/// Options every verb shares.
struct Global {
    connect: Option<String>,
    lab: Option<String>,
    config: Option<PathBuf>,
}

/// Which lab, on which libvirt.
pub(crate) struct Where {
    pub lab: String,
    pub connect: String,
}

impl Global {
    fn file(&self) -> Result<Option<ConfigFile>> {
        ConfigFile::load(self.config.as_deref())
    }

    /// Every setting, flags over file, validated: for verbs that use them.
    fn spec(&self, flags: Settings) -> Result<LabSpec> {
        let file = match self.file()? {
            Some(f) => f.settings()?,
            None => Settings::default(),
        };
        Settings {
            connect: self.connect.clone(),
            lab: self.lab.clone(),
            ..flags
        }
        .over(file)
        .resolve()
    }

    /// Only the lab and the connection, for verbs that look at a lab.
    fn place(&self) -> Result<Where> {
        let file = match self.file()? {
            Some(f) => f.global()?,
            None => Default::default(),
        };
        let lab = self
            .lab
            .clone()
            .or(file.lab)
            .unwrap_or_else(|| DEFAULT_LAB.into());
        check_name("lab", &lab)?;
        Ok(Where {
            lab,
            connect: self
                .connect
                .clone()
                .or(file.connect)
                .unwrap_or_else(|| DEFAULT_CONNECT.into()),
        })
    }

    fn home(&self) -> Result<Home> {
        Home::from_env()
    }
}

fn connect(uri: &str) -> Result<Libvirt> {
    Libvirt::connect(uri)
}

/// Prints what a verb recovered or could not apply (hidden by `-q`).
fn notes(notes: &[String]) {
    for note in notes {
        tracing::warn!("{note}");
    }
}
