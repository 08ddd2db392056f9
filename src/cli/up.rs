use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Global;
use crate::config::{Accel, Network, Settings};
use crate::lab::Lab;
use crate::lab::up::{Step, UpRequest, up};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How many VMs the lab should have (vm-1..vm-N)
    #[arg(value_parser = parse_count)]
    count: u32,
    /// Memory at boot, e.g. 512M [default: 512M]
    #[arg(long)]
    memory: Option<String>,
    /// Ceiling for ballooning, e.g. 2G [default: max(memory, 1G)]
    #[arg(long)]
    max_memory: Option<String>,
    /// vCPUs at boot [default: 1]
    #[arg(long)]
    vcpus: Option<u32>,
    /// Ceiling for vCPU hot-plug [default: max(vcpus, 2)]
    #[arg(long)]
    max_vcpus: Option<u32>,
    /// Base image name (`vmlab image list`) [default: vmlab-alpine]
    #[arg(long)]
    image: Option<String>,
    /// user: SSH forwarded from 127.0.0.1; nat: libvirt's default network [default: user]
    #[arg(long, value_enum)]
    network: Option<Network>,
    /// CPU acceleration [default: auto]
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    /// VM name prefix [default: vm]
    #[arg(long)]
    prefix: Option<String>,
    /// Seconds to wait for each VM's SSH [default: 90]
    #[arg(long)]
    ssh_timeout: Option<u64>,
    /// Define and start, but do not wait for SSH
    #[arg(long)]
    no_wait: bool,
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
    let spec = global.spec(Settings {
        prefix: args.prefix,
        memory: args.memory,
        max_memory: args.max_memory,
        vcpus: args.vcpus,
        max_vcpus: args.max_vcpus,
        image: args.image,
        network: args.network,
        accel: args.accel,
        ssh_timeout_s: args.ssh_timeout,
        ..Settings::default()
    })?;
    let home = global.home()?;
    let hv = global.connect(&spec)?;
    let lab = Lab::new(&hv, &home, &spec.lab);
    let bars = Bars::new();
    let started = Instant::now();
    let outcomes = up(
        &lab,
        &UpRequest {
            spec,
            count: args.count,
            wait_ssh: !args.no_wait,
        },
        &|vm, stage| bars.show(vm, stage),
    )?;
    bars.clear();
    let mut failed = Vec::new();
    for o in &outcomes {
        let what = match o.step {
            Step::Create => "created",
            Step::Start => "started",
            Step::Check => "already running",
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
            Err(e) => {
                println!("{:<10} FAILED", o.name);
                failed.push(format!("{}: {e:#}", o.name));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} VMs failed:\n{}",
            failed.len(),
            outcomes.len(),
            failed.join("\n")
        );
    }
    println!(
        "lab `{}`: {} VMs ready in {:.1} s",
        lab.name,
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// One progress line per VM on a terminal; plain stage lines otherwise (CI logs).
struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    started: Instant,
}

impl Bars {
    fn new() -> Self {
        let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
        Self {
            multi,
            bars: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    fn show(&self, vm: &str, stage: &str) {
        let Some(multi) = &self.multi else {
            eprintln!(
                "[{:>5.1}s] {vm}: {stage}",
                self.started.elapsed().as_secs_f64()
            );
            return;
        };
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(vm.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<10} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar.set_prefix(vm.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(stage.to_string());
        if matches!(stage, "ready" | "started" | "failed") {
            bar.finish();
        }
    }

    fn clear(&self) {
        if let Some(multi) = &self.multi {
            multi.clear().ok();
        }
    }
}
