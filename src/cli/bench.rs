use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::bars::Bars;
use super::workload_args::{WorkloadArgs, interrupt_flag, ready};
use super::{Global, exit};
use crate::bench::matrix::Matrix;
use crate::bench::results::timestamp;
use crate::bench::run::{Plan, RunRecord, SourceRecord, bench};
use crate::bench::summary::{self, summarize};
use crate::guest::ssh::Guest;
use crate::hypervisor::Hypervisor;
use crate::lab::inventory::select;
use crate::lab::lock;
use crate::rundir::RunDir;
use crate::workload::manifest::Source;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    w: WorkloadArgs,
    /// Runs per VM and cell
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// VM configurations to run under, applied live: `vcpus=1,2 memory=512M,1G`
    #[arg(long, num_args = 1.., value_name = "KEY=V1,V2")]
    matrix: Vec<String>,
    /// Where results go: DIR/<run-id>/
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

/// Exit 0 when every run gave results, 1 when some VM failed, 130 on Ctrl-C.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let cancel = interrupt_flag()?;
    let matrix = Matrix::parse(&args.matrix)?;
    let opened = args.w.open(global)?;
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
    let node = hv.node()?;
    let accel = vms
        .iter()
        .map(|vm| Ok((vm.name.clone(), hv.resources(&vm.name)?.domain_type)))
        .collect::<Result<Vec<_>>>()?;
    let now = SystemTime::now();
    let (url, sha256) = match &ready.workload.source {
        Source::Upstream { url, sha256, .. } => (Some(url.clone()), Some(sha256.clone())),
        Source::Files(_) => (None, None),
    };
    let record = RunRecord {
        schema: 1,
        run_id: String::new(),
        started: timestamp(now),
        finished: None,
        interrupted: false,
        lab: lab.name.clone(),
        benchmark: ready.workload.name.clone(),
        params: ready
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        matrix: matrix.clone(),
        repeat: args.repeat,
        vms: vms.iter().map(|v| v.name.clone()).collect(),
        source: SourceRecord {
            url,
            sha256,
            origin: ready.source.origin,
        },
        binary_sha256: ready.built.sha256.clone(),
        run_files: ready.program().run_file_digests()?,
        host: crate::host::facts::read(node.cpus, node.memory.mib().0),
        versions: hv.versions()?,
        accel,
        cells: Vec::new(),
        runs: Vec::new(),
    };
    // Every check passed: only now does the run get a directory.
    let run = RunDir::create(&args.results, &ready.workload.name, now)?;
    let record = RunRecord {
        run_id: run.id.clone(),
        ..record
    };
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
    let report = bench(hv, hv, plan, &cancel, &|vm, what| {
        bars.show(vm, what, false)
    })?;
    bars.clear();
    print!("{}", summary::table(&summarize(&report.rows), &cells));
    for f in &report.failures {
        eprintln!("failed: {f}");
    }
    println!("results in {}", run_dir.display());
    Ok(if report.interrupted {
        exit::interrupted()
    } else if report.failures.is_empty() {
        exit::SUCCESS
    } else {
        exit::CHECK_FAILED
    })
}
