use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::logging::say;
use super::workload_args::{WorkloadArgs, interrupt_flag, ready};
use super::{Global, exit};
use crate::guest::GUEST_ROOT;
use crate::guest::ssh::Guest;
use crate::lab::inventory::select;
use crate::lab::state::VmRecord;
use crate::lab::{Lab, lock};
use crate::rundir::{RAW_DIR, RunDir};
use crate::workload::Ready;
use crate::workload::run::{Prefixed, Program, keep_raw};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    w: WorkloadArgs,
    /// Leave it running in the background; `vmlab stop WORKLOAD` ends it
    #[arg(long)]
    detach: bool,
    /// Where result files go: DIR/<run-id>/raw/<vm>/
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Arguments for the program itself, appended to its command line
    #[arg(last = true)]
    extra: Vec<String>,
}

/// Exits with the worst status of the VMs: 125 if vmlab could not run it
/// somewhere, else the highest status a guest returned, 130 on Ctrl-C.
pub fn run(global: &Global, args: Args) -> Result<i32> {
    let cancel = interrupt_flag()?;
    let opened = args.w.open(global)?;
    let lab = opened.lab();
    let vms = select(&lab, &args.w.on)?;
    let _reader = lock::reader(&lab.paths)?;
    let ready = ready(opened.checked.clone(), &opened.request, &opened.home)?;
    let program = Program {
        extra: &args.extra,
        ..ready.program()
    };
    // The run's id names its directories in the guests and under results/;
    // the host one stays only if some VM left files in it.
    let run = RunDir::create(&args.results, &ready.workload.name, SystemTime::now())?;
    let id = run.id.clone();
    let codes: Vec<i32> = std::thread::scope(|scope| {
        let handles: Vec<_> = vms
            .iter()
            .map(|vm| {
                let (lab, program, ready, id, cancel) = (&lab, &program, &ready, &id, &cancel);
                let results = &args.results;
                scope.spawn(move || {
                    one_vm(lab, vm, program, ready, id, args.detach, results, cancel)
                        .unwrap_or_else(|e| {
                            eprintln!("error: {}: {e:#}", vm.name);
                            exit::VMLAB_FAILED
                        })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a VM's thread panicked"))
            .collect()
    });
    let _ = std::fs::remove_dir(&run.path);
    if cancel.load(Ordering::SeqCst) {
        eprintln!("interrupted: the program was stopped in every VM");
        return Ok(exit::interrupted());
    }
    Ok(codes.into_iter().max().unwrap_or(exit::SUCCESS))
}

#[allow(clippy::too_many_arguments)]
fn one_vm(
    lab: &Lab,
    vm: &VmRecord,
    program: &Program,
    ready: &Ready,
    id: &str,
    detach: bool,
    results: &std::path::Path,
    cancel: &AtomicBool,
) -> Result<i32> {
    let guest = Guest::connect(&lab.ssh_target(vm), Duration::from_secs(10))?;
    let name = &ready.workload.name;
    if detach {
        let dir = program.start_detached(&guest, id)?;
        println!(
            "{}: `{name}` runs in the background (output in {dir}); `vmlab stop {name}` ends it",
            vm.name
        );
        return Ok(exit::SUCCESS);
    }
    let prefix = format!("{} | ", vm.name);
    let outcome = program.run(
        &guest,
        &format!("{GUEST_ROOT}/runs/{id}"),
        &mut Prefixed::new(prefix.clone(), std::io::stdout()),
        &mut Prefixed::new(prefix, std::io::stderr()),
        Some(cancel),
    )?;
    if !outcome.files.is_empty() {
        let raw = results.join(id).join(RAW_DIR).join(&vm.name);
        keep_raw(&raw, &outcome)?;
        say!("{}: result files in {}", vm.name, raw.display());
    }
    say!("{}: {} after {:.1} s", vm.name, outcome.exit, outcome.run_s);
    Ok(exit::of_guest(&outcome.exit))
}
