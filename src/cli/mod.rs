//! Command-line interface: clap definitions and one small function per verb
//! that turns arguments into a typed request and calls the domain modules.

mod console;
mod doctor;
mod down;
mod image;
mod ssh;
mod status;
mod up;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{CONFIG_FILE, LabSpec, Settings};
use crate::hypervisor::libvirt::Libvirt;
use crate::paths::Home;

#[derive(Parser, Debug)]
#[command(
    name = "vmlab",
    version,
    about = "A virtualization lab on one host: QEMU + libvirt VMs, provisioned, reachable over SSH, torn down cleanly"
)]
pub struct Cli {
    /// libvirt URI [default: qemu:///system]
    #[arg(long, global = true, env = "VMLAB_CONNECT")]
    connect: Option<String>,
    /// Lab name: labs are independent sets of VMs [default: default]
    #[arg(long, global = true, env = "VMLAB_LAB")]
    lab: Option<String>,
    /// Settings file (same keys as the `up` flags)
    #[arg(long, global = true, default_value = CONFIG_FILE)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or start VMs until the lab has N, all answering SSH
    Up(up::Args),
    /// Destroy VMs and delete their disks and state (all of the lab's without names)
    Down(down::Args),
    /// State, vCPUs, pins, memory and SSH endpoint of each VM
    Status(status::Args),
    /// Run a command in a VM over SSH (an interactive shell without one)
    Ssh(ssh::Args),
    /// Print a VM's serial console log
    Console(console::Args),
    /// Build, fetch and list base images
    #[command(subcommand)]
    Image(image::Command),
    /// Check that this host can run a lab, and say how to fix what is missing
    Doctor(doctor::Args),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let global = Global {
        connect: cli.connect,
        lab: cli.lab,
        config: cli.config,
    };
    match cli.command {
        Command::Up(args) => up::run(&global, args),
        Command::Down(args) => down::run(&global, args),
        Command::Status(args) => status::run(&global, args),
        Command::Ssh(args) => ssh::run(&global, args),
        Command::Console(args) => console::run(&global, args),
        Command::Image(cmd) => image::run(&global, cmd),
        Command::Doctor(args) => doctor::run(&global, args),
    }
}

/// Options every verb shares.
struct Global {
    connect: Option<String>,
    lab: Option<String>,
    config: PathBuf,
}

impl Global {
    /// Settings from flags (`extra` plus the global ones) over `vmlab.toml`.
    fn spec(&self, extra: Settings) -> Result<LabSpec> {
        let flags = Settings {
            connect: self.connect.clone(),
            lab: self.lab.clone(),
            ..extra
        };
        flags.over(Settings::load(&self.config)?).resolve()
    }

    fn home(&self) -> Result<Home> {
        Home::from_env()
    }

    fn connect(&self, spec: &LabSpec) -> Result<Libvirt> {
        Libvirt::connect(&spec.connect)
    }
}
