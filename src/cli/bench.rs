use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::bars::Bars;
use super::workload_args::{WorkloadArgs, interrupt_flag, ready};
use super::{Global, exit};
use crate::bench::gate::{Baseline, Outcome};
use crate::bench::matrix::Matrix;
use crate::bench::record::{RecordedRun, RunRecord, Start};
use crate::bench::repeat::Repeat;
use crate::bench::report::Report;
use crate::bench::run::{Plan, bench};
use crate::bench::summary::{self, summarize};
use crate::guest::ssh::Guest;
use crate::lab::inventory::select;
use crate::lab::lock;
use crate::rundir::RunDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    w: WorkloadArgs,
    /// Runs per VM and cell: a count, or `auto[:MAX]` (until the main
    /// metric's CV is at most 3 % in every VM, at most MAX runs, default 10)
    #[arg(long, default_value = "1", value_name = "K|auto[:MAX]")]
    repeat: Repeat,
    /// VM configurations to run under, applied live: `vcpus=1,2 memory=512M,1G`
    #[arg(long, num_args = 1.., value_name = "KEY=V1,V2")]
    matrix: Vec<String>,
    /// Where results go: DIR/<run-id>/
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Judge the run against references: an earlier run directory or a
    /// references.toml (`vmlab results reference RUN`); a regression exits 3
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
    /// With --baseline: a metric without a reference fails the run (exit 4)
    #[arg(long, requires = "baseline")]
    require_reference: bool,
    /// A report for CI: junit=FILE (replaced) or markdown=FILE (appended,
    /// e.g. markdown=$GITHUB_STEP_SUMMARY); repeatable
    #[arg(long = "report", value_name = "KIND=FILE")]
    reports: Vec<Report>,
}

/// Exit 0 when every run gave results (and passed the gate), 1 when some
/// VM failed, 3 on a regression, 4 on a required reference missing, 130 on Ctrl-C.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let cancel = interrupt_flag()?;
    let matrix = Matrix::parse(&args.matrix)?;
    let opened = args.w.open(global)?;
    args.repeat.check(&opened.checked.workload)?;
    let baseline = args
        .baseline
        .as_deref()
        .map(|path| Baseline::open(path, args.require_reference, &opened.checked.workload))
        .transpose()?;
    for report in &args.reports {
        report.check()?;
    }
    let (home, hv) = (&opened.home, &opened.hv);
    let lab = opened.lab();
    let vms = select(&lab, &args.w.on)?;
    let _reader = lock::reader(&lab.paths)?;
    for vm in &vms {
        matrix.check(vm)?;
    }
    let ready = ready(opened.checked.clone(), &opened.request, home)?;
    let guests = vms
        .iter()
        .map(|vm| Guest::connect(&lab.ssh_target(vm), Duration::from_secs(10)))
        .collect::<Result<Vec<_>>>()?;
    let now = SystemTime::now();
    let mut record = RunRecord::start(
        hv,
        Start {
            lab: &lab.name,
            ready: &ready,
            vms: &vms,
            matrix: &matrix,
            repeat: args.repeat,
            at: now,
        },
    )?;
    // Every check passed: only now does the run get a directory.
    let run = RunDir::create(&args.results, &ready.workload.name, now)?;
    record.run_id = run.id.clone();
    let run_dir = run.path;
    let bars = Bars::new(true);
    let plan = Plan {
        ready: &ready,
        vms: &vms,
        guests: &guests,
        cells: matrix.cells(),
        repeat: args.repeat,
        run_dir: run_dir.clone(),
        record,
    };
    let cells = plan.cells.clone();
    let mut report = bench(hv, hv, plan, &cancel, &|vm, what| {
        bars.show(vm, what, false)
    })?;
    bars.clear();
    print!("{}", summary::table(&summarize(&report.rows), &cells));
    let record = &report.record;
    print!(
        "{}",
        summary::repeats(
            record.repeat_auto,
            record.main_metric.as_deref(),
            &record.cells
        )
    );
    let gate = baseline
        .map(|b| b.judge_run(&run_dir, &mut report.record, &report.rows))
        .transpose()?;
    if let Some(gate) = &gate {
        print!("{}", gate.table());
        println!("against {}: {}", gate.baseline, gate.counts());
    }
    if !args.reports.is_empty() {
        let recorded = RecordedRun::read(&run_dir)?;
        for wanted in &args.reports {
            wanted.write(&recorded, &report.rows)?;
        }
    }
    for f in &report.failures {
        eprintln!("failed: {f}");
    }
    println!("results in {}", run_dir.display());
    Ok(if report.interrupted {
        exit::interrupted()
    } else if !report.failures.is_empty() {
        exit::CHECK_FAILED
    } else {
        match gate.map(|g| g.outcome()) {
            Some(Outcome::Regression) => exit::REGRESSION,
            Some(Outcome::MissingReference) => exit::NO_REFERENCE,
            Some(Outcome::Pass) | None => exit::SUCCESS,
        }
    })
}
