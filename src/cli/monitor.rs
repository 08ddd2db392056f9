use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;

use super::logging::say;
use super::workload_args::interrupt_flag;
use super::{Global, connect, exit};
use crate::lab::inventory::{On, select};
use crate::lab::{Lab, lock};
use crate::metrics::collect::{Plan, collect};
use crate::metrics::row::MetricsRow;
use crate::rundir::{METRICS_CSV, RunDir};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds between samples
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Stop after this long, e.g. 10s or 5m [default: until Ctrl-C]
    #[arg(long, value_parser = crate::duration::parse)]
    duration: Option<Duration>,
    /// VMs to watch: `all` or names separated by commas
    #[arg(long, default_value = "all")]
    on: On,
    /// Write into results/ID (shared with `vmlab manage --run ID` or a bench)
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Where runs go
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let lab = Lab::new(&hv, &home, &place.lab);
    let vms = select(&lab, &args.on)?;
    let _reader = lock::reader(&lab.paths)?;
    let run = RunDir::named_or_new(&args.results, args.run.as_deref(), "monitor")?;
    run.check_free(&[METRICS_CSV])?;
    let run_dir = run.path;
    say!(
        "monitoring {} every {} s into {}",
        vms.iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.interval,
        run_dir.join(METRICS_CSV).display()
    );
    let plan = Plan {
        targets: vms.iter().map(|vm| lab.ssh_target(vm)).collect(),
        interval_s: args.interval,
        duration: args.duration,
        run_dir: run_dir.clone(),
    };
    let cancel = interrupt_flag()?;
    let mut table = Table::new();
    let feeds = collect(&hv, &plan, &cancel, &mut |rows| table.show(rows))?;
    for f in feeds {
        say!(
            "{}: reporter lines {}, restarted {} times",
            f.vm,
            f.lines,
            f.restarts
        );
    }
    println!("metrics in {}", run_dir.join(METRICS_CSV).display());
    Ok(exit::SUCCESS)
}

/// The latest sample of each VM; redrawn in place on a terminal.
struct Table {
    redraw: bool,
    drawn: usize,
}

impl Table {
    fn new() -> Self {
        Table {
            redraw: std::io::stdout().is_terminal(),
            drawn: 0,
        }
    }

    fn show(&mut self, rows: &[MetricsRow]) {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        let mut text = format!(
            "{:<8} {:>9} {:<11} {:<13} {:>5} {:<10} {:>6} {:>6} {:>9} {:>9}  {}\n",
            "t_s",
            "VM",
            "CPU%",
            "MEM used/tot",
            "VCPUS",
            "PINS",
            "DISK r",
            "DISK w",
            "NET rx",
            "NET tx",
            "BALLOON act/unused"
        );
        for r in rows {
            text += &format!(
                "{:<8.0} {:>9} {:<11} {:<13} {:>5} {:<10} {:>6} {:>6} {:>9} {:>9}  {}/{}\n",
                r.t_s,
                r.vm,
                r.cpu_pct.map_or("-".into(), |v| format!("{v:.1}")),
                format!("{}/{}", opt(r.mem_used_mib), opt(r.mem_total_mib)),
                r.vcpus.map_or("-".into(), |v| v.to_string()),
                if r.pins.is_empty() { "-" } else { &r.pins },
                opt(r.disk_read_kib_s),
                opt(r.disk_write_kib_s),
                r.net_rx_bytes
                    .map_or("-".into(), |v| format!("{}K", v / 1024)),
                r.net_tx_bytes
                    .map_or("-".into(), |v| format!("{}K", v / 1024)),
                opt(r.balloon_actual_mib),
                opt(r.balloon_unused_mib),
            );
        }
        let mut out = std::io::stdout().lock();
        if self.redraw && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = text.lines().count();
    }
}

/// Collects on a thread of its own while something else (the dashboard)
/// serves the run: returns when `cancel` goes up.
pub fn collect_in_background(
    hv: &crate::hypervisor::libvirt::Libvirt,
    plan: &Plan,
    cancel: &AtomicBool,
) -> Result<()> {
    collect(hv, plan, cancel, &mut |_| {}).map(|_| ())
}
