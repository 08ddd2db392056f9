use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};

use super::monitor::collect_in_background;
use super::{Global, connect, exit};
use crate::dashboard::{Dashboard, Mode};
use crate::lab::inventory::{On, select};
use crate::lab::{Lab, lock};
use crate::metrics::collect::Plan;
use crate::rundir::RunDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to serve; loopback unless you say otherwise
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Serve results/ID (live while a `vmlab monitor --run ID` writes it);
    /// without it the dashboard monitors the lab itself
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Play a finished run back at its recorded pace
    #[arg(long, requires = "run")]
    replay: bool,
    /// Replay speed (2 = twice as fast)
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Seconds between samples when the dashboard monitors the lab itself
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
    /// Where runs are
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

pub fn run(global: &Global, args: Args) -> Result<i32> {
    let place = global.place()?;
    if !args.bind.ip().is_loopback() {
        tracing::warn!(
            "serving on {}: other hosts can reach the dashboard and /metrics",
            args.bind
        );
    }
    let stop = super::workload_args::interrupt_flag()?;
    let mode = if args.replay {
        if !(args.speed > 0.0 && args.speed.is_finite()) {
            bail!("--speed {} must be above 0", args.speed);
        }
        Mode::Replay { speed: args.speed }
    } else {
        Mode::Live
    };
    if let Some(id) = &args.run {
        crate::config::check_name("run id", id)?;
        let dir = args.results.join(id);
        let dashboard = Dashboard::bind(args.bind, &dir, mode, &place.lab)?;
        announce(&dashboard, &dir);
        dashboard.run(&stop)?;
        return Ok(exit::SUCCESS);
    }
    // No run named: monitor the lab into a new run and serve it live.
    let home = global.home()?;
    let hv = connect(&place.connect)?;
    let lab = Lab::new(&hv, &home, &place.lab);
    let vms = select(&lab, &On::All)?;
    let _reader = lock::reader(&lab.paths)?;
    let dir = RunDir::create(&args.results, "monitor", std::time::SystemTime::now())?.path;
    let dashboard = Dashboard::bind(args.bind, &dir, Mode::Live, &place.lab)?;
    announce(&dashboard, &dir);
    let plan = Plan {
        targets: vms.iter().map(|vm| lab.ssh_target(vm)).collect(),
        interval_s: args.interval,
        duration: None,
        run_dir: dir,
    };
    std::thread::scope(|scope| {
        let collector = scope.spawn(|| {
            let done = collect_in_background(&hv, &plan, &stop);
            stop.store(true, Ordering::SeqCst);
            done
        });
        let served = dashboard.run(&stop);
        stop.store(true, Ordering::SeqCst);
        collector.join().expect("the collector's thread panicked")?;
        served
    })?;
    Ok(exit::SUCCESS)
}

fn announce(dashboard: &Dashboard, dir: &std::path::Path) {
    println!(
        "dashboard of {} on http://{}/ (Prometheus: /metrics); Ctrl-C stops it",
        dir.display(),
        dashboard.local_addr()
    );
}
