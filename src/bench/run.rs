//! `vmlab bench`: a workload on several VMs at once, for every matrix cell
//! and repeat. Each VM of a cell is reconfigured live first; every result
//! becomes CSV rows written (and flushed) as soon as it is parsed, so an
//! interrupted run keeps what finished; a VM that fails is recorded as
//! failed and the others go on.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::configure::{self, CellApplied};
use super::matrix::Cell;
use super::record::{CellRecord, RunEntry, RunRecord, Shape};
use super::repeat::Repeat;
use crate::files::write_atomic;
use crate::guest::GUEST_ROOT;
use crate::guest::ssh::Guest;
use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::state::VmRecord;
use crate::rundir::timestamp;
use crate::rundir::{self, BENCH_CSV, RAW_DIR, RUN_JSON};
use crate::stats::cv_pct;
use crate::workload::Ready;
use crate::workload::parse::parse;
use crate::workload::run::{Outcome, keep_raw};

/// How long a VM may take to show a cell's vCPUs and memory.
const APPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// One row of `bench.csv`: one metric of one VM in one cell and repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub run_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub vm: String,
    pub cell: usize,
    /// libvirt's live count, and the CPUs the guest has online.
    pub vcpus: u32,
    pub guest_cpus: u32,
    /// The balloon's actual size, and the guest's MemTotal.
    pub memory_mib: u64,
    pub guest_memtotal_mib: u64,
    pub benchmark: String,
    /// `key=value;key=value`.
    pub params: String,
    pub repeat: u32,
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    pub valid: Option<bool>,
    /// Wall time of the benchmark program.
    pub duration_s: f64,
    /// Why this VM has no result here (empty when it has).
    pub error: String,
}

/// Everything a benchmark run needs, checked before it starts.
pub struct Plan<'a> {
    pub ready: &'a Ready,
    pub vms: &'a [VmRecord],
    /// One SSH session per VM, in the order of `vms`.
    pub guests: &'a [Guest],
    pub cells: Vec<Cell>,
    pub repeat: Repeat,
    pub run_dir: PathBuf,
    pub record: RunRecord,
}

/// What the caller prints and exits with.
#[derive(Debug)]
pub struct Report {
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
    pub interrupted: bool,
    /// `run.json` as saved at the end.
    pub record: RunRecord,
}

/// A run's `bench.csv`, every row; a damaged file is an error naming it.
pub fn read_rows(run_dir: &Path) -> Result<Vec<Row>> {
    let path = run_dir.join(BENCH_CSV);
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .deserialize()
        .map(|row| {
            row.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                anyhow::anyhow!(
                    "{}:{line}: {e}; it is not a bench.csv vmlab wrote",
                    path.display()
                )
            })
        })
        .collect()
}

/// Runs the plan; `progress` hears (VM, what it is doing).
pub fn bench(
    hv: &dyn Hypervisor,
    act: &dyn Actuator,
    mut plan: Plan,
    cancel: &AtomicBool,
    progress: &(dyn Fn(&str, &str) + Sync),
) -> Result<Report> {
    let file = rundir::create_new(&plan.run_dir.join(BENCH_CSV), &plan.record.run_id)?;
    let csv = Mutex::new(csv::Writer::from_writer(file));
    let rows = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::new());
    save_record(&plan.run_dir, &plan.record)?;
    let params: String = plan
        .ready
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");

    'cells: for cell in plan.cells.clone() {
        let applied: Vec<Result<CellApplied>> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .vms
                .iter()
                .zip(plan.guests)
                .map(|(vm, guest)| {
                    scope.spawn(move || {
                        progress(&vm.name, &format!("cell {}: {cell}", cell.index));
                        configure::apply(hv, act, guest, &vm.name, &cell, APPLY_TIMEOUT)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a VM's thread panicked"))
                .collect()
        });
        let mut record = CellRecord {
            cell,
            applied: Vec::new(),
            errors: Vec::new(),
            repeats: 0,
            main_cv_pct: Vec::new(),
            shapes: plan
                .vms
                .iter()
                .map(|vm| (vm.name.clone(), Shape::of(&cell, vm)))
                .collect(),
        };
        for (vm, a) in plan.vms.iter().zip(&applied) {
            match a {
                Ok(a) => record.applied.push((vm.name.clone(), *a)),
                Err(e) => record.errors.push((vm.name.clone(), format!("{e:#}"))),
            }
        }
        let main_metric = plan.record.main_metric.clone();
        plan.record.cells.push(record);
        let mut done = 0;
        while !plan
            .repeat
            .finished(done, &main_values(&rows, plan.vms, &cell, &main_metric))
        {
            if cancel.load(Ordering::SeqCst) {
                break 'cells;
            }
            done += 1;
            let repeat = done;
            let entries: Vec<RunEntry> = std::thread::scope(|scope| {
                let handles: Vec<_> = plan
                    .vms
                    .iter()
                    .zip(plan.guests)
                    .zip(&applied)
                    .map(|((vm, guest), applied)| {
                        let (plan, csv, rows, failures, params) =
                            (&plan, &csv, &rows, &failures, &params);
                        scope.spawn(move || {
                            let one = One {
                                plan,
                                vm,
                                guest,
                                cell,
                                repeat,
                                params,
                            };
                            one.run(applied, cancel, progress, csv, rows, failures)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a VM's thread panicked"))
                    .collect()
            });
            plan.record.runs.extend(entries);
            let per_vm = main_values(&rows, plan.vms, &cell, &main_metric);
            let last = plan.record.cells.last_mut().expect("pushed above");
            last.repeats = done;
            last.main_cv_pct = plan
                .vms
                .iter()
                .zip(&per_vm)
                .map(|(vm, values)| (vm.name.clone(), cv_pct(values)))
                .collect();
            save_record(&plan.run_dir, &plan.record)?;
        }
    }
    for (vm, guest) in plan.vms.iter().zip(plan.guests) {
        if let Err(e) = configure::restore(act, guest, vm) {
            tracing::warn!("{}: could not restore its vCPUs and memory: {e:#}", vm.name);
        }
    }
    let interrupted = cancel.load(Ordering::SeqCst);
    plan.record.interrupted = interrupted;
    plan.record.finished = Some(timestamp(SystemTime::now()));
    save_record(&plan.run_dir, &plan.record)?;
    Ok(Report {
        rows: rows.into_inner().unwrap(),
        failures: failures.into_inner().unwrap(),
        interrupted,
        record: plan.record,
    })
}

/// The main metric's values in `cell` so far, per VM (in the order of `vms`).
fn main_values(
    rows: &Mutex<Vec<Row>>,
    vms: &[VmRecord],
    cell: &Cell,
    main_metric: &Option<String>,
) -> Vec<Vec<f64>> {
    let rows = rows.lock().unwrap();
    vms.iter()
        .map(|vm| {
            rows.iter()
                .filter(|r| r.cell == cell.index && r.vm == vm.name)
                .filter(|r| Some(&r.metric) == main_metric.as_ref())
                .filter_map(|r| r.value)
                .collect()
        })
        .collect()
}

/// One VM, one cell, one repeat.
struct One<'a> {
    plan: &'a Plan<'a>,
    vm: &'a VmRecord,
    guest: &'a Guest,
    cell: Cell,
    repeat: u32,
    params: &'a str,
}

impl One<'_> {
    fn run(
        &self,
        applied: &Result<CellApplied>,
        cancel: &AtomicBool,
        progress: &(dyn Fn(&str, &str) + Sync),
        csv: &Mutex<csv::Writer<std::fs::File>>,
        rows: &Mutex<Vec<Row>>,
        failures: &Mutex<Vec<String>>,
    ) -> RunEntry {
        let mut entry = RunEntry {
            vm: self.vm.name.clone(),
            cell: self.cell.index,
            repeat: self.repeat,
            exit: None,
            run_s: None,
            overhead_s: None,
            pushed: None,
            error: None,
        };
        let result = applied
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .and_then(|applied| {
                progress(
                    &self.vm.name,
                    &format!("cell {} repeat {}: running", self.cell.index, self.repeat),
                );
                let outcome = self.execute(cancel)?;
                entry.exit = Some(outcome.exit.to_string());
                entry.run_s = Some(outcome.run_s);
                entry.pushed = Some(outcome.pushed);
                let parsed_at = std::time::Instant::now();
                let new_rows = self.rows(applied, &outcome)?;
                entry.overhead_s = Some(outcome.overhead_s + parsed_at.elapsed().as_secs_f64());
                Ok(new_rows)
            });
        let new_rows = match result {
            Ok(rows) => rows,
            Err(e) => {
                let error = format!("{e:#}");
                failures.lock().unwrap().push(format!(
                    "{} cell {} repeat {}: {error}",
                    self.vm.name, self.cell.index, self.repeat
                ));
                entry.error = Some(error.clone());
                let applied = applied.as_ref().ok().copied();
                vec![self.row(
                    applied,
                    "error",
                    None,
                    "",
                    Some(false),
                    entry.run_s.unwrap_or(0.0),
                    &error,
                )]
            }
        };
        let mut csv = csv.lock().unwrap();
        for row in &new_rows {
            if let Err(e) = csv
                .serialize(row)
                .and_then(|()| csv.flush().map_err(Into::into))
            {
                tracing::error!("writing bench.csv: {e}");
            }
        }
        rows.lock().unwrap().extend(new_rows);
        progress(
            &self.vm.name,
            &format!("cell {} repeat {}: done", self.cell.index, self.repeat),
        );
        entry
    }

    fn execute(&self, cancel: &AtomicBool) -> Result<Outcome> {
        let label = format!("c{}-r{}", self.cell.index, self.repeat);
        let workdir = format!("{GUEST_ROOT}/runs/{}/{label}", self.plan.record.run_id);
        let outcome = self.plan.ready.program().run(
            self.guest,
            &workdir,
            &mut std::io::sink(),
            &mut std::io::sink(),
            Some(cancel),
        )?;
        keep_raw(&self.raw_dir(), &outcome)?;
        Ok(outcome)
    }

    fn raw_dir(&self) -> PathBuf {
        raw_dir(
            &self.plan.run_dir,
            self.cell.index,
            &self.vm.name,
            self.repeat,
        )
    }

    /// The metrics of one finished run, as rows.
    fn rows(&self, applied: &CellApplied, outcome: &Outcome) -> Result<Vec<Row>> {
        let workload = &self.plan.ready.workload;
        if !outcome.finished(workload) {
            let tail = String::from_utf8_lossy(&outcome.stderr);
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            anyhow::bail!(
                "`{}` ended with {} ({last}); raw output in {}",
                workload.name,
                outcome.exit,
                self.raw_dir().display()
            );
        }
        let files: Vec<(String, String)> = outcome
            .files
            .iter()
            .map(|(n, c)| (n.clone(), String::from_utf8_lossy(c).into_owned()))
            .collect();
        let parsed = parse(
            &workload.output.parser,
            &String::from_utf8_lossy(&outcome.stdout),
            &files,
        )
        .with_context(|| format!("parsing the output in {}", self.raw_dir().display()))?;
        Ok(parsed
            .metrics
            .iter()
            .map(|m| {
                self.row(
                    Some(*applied),
                    &m.name,
                    Some(m.value),
                    &m.unit,
                    parsed.valid,
                    outcome.run_s,
                    "",
                )
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &self,
        applied: Option<CellApplied>,
        metric: &str,
        value: Option<f64>,
        unit: &str,
        valid: Option<bool>,
        duration_s: f64,
        error: &str,
    ) -> Row {
        let a = applied.unwrap_or(CellApplied {
            vcpus: 0,
            guest_cpus: 0,
            memory_mib: 0,
            guest_memtotal_mib: 0,
        });
        Row {
            run_id: self.plan.record.run_id.clone(),
            time: timestamp(SystemTime::now()),
            vm: self.vm.name.clone(),
            cell: self.cell.index,
            vcpus: a.vcpus,
            guest_cpus: a.guest_cpus,
            memory_mib: a.memory_mib,
            guest_memtotal_mib: a.guest_memtotal_mib,
            benchmark: self.plan.ready.workload.name.clone(),
            params: self.params.to_string(),
            repeat: self.repeat,
            metric: metric.to_string(),
            value,
            unit: unit.to_string(),
            valid,
            duration_s,
            error: error.to_string(),
        }
    }
}

/// `raw/c<cell>/<vm>/r<repeat>/`.
pub fn raw_dir(run_dir: &Path, cell: usize, vm: &str, repeat: u32) -> PathBuf {
    run_dir
        .join(RAW_DIR)
        .join(format!("c{cell}"))
        .join(vm)
        .join(format!("r{repeat}"))
}

/// Writes `run.json` (atomically: a reader never sees half of it).
pub fn save_record(run_dir: &Path, record: &RunRecord) -> Result<()> {
    write_atomic(
        &run_dir.join(RUN_JSON),
        (serde_json::to_string_pretty(record)? + "\n").as_bytes(),
    )
}

/// A row of `vm-1` with 1 vCPU and 512 MiB, for tests.
#[cfg(test)]
pub(crate) fn test_row(cell: usize, metric: &str, value: Option<f64>) -> Row {
    Row {
        run_id: "r".into(),
        time: "t".into(),
        vm: "vm-1".into(),
        cell,
        vcpus: 1,
        guest_cpus: 1,
        memory_mib: 512,
        guest_memtotal_mib: 480,
        benchmark: "b".into(),
        params: String::new(),
        repeat: 1,
        metric: metric.into(),
        value,
        unit: "u".into(),
        valid: None,
        duration_s: 1.0,
        error: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_have_the_documented_columns() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(test_row(1, "a", Some(2.5))).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        let header = text.lines().next().unwrap();
        assert_eq!(
            header,
            "run_id,time,vm,cell,vcpus,guest_cpus,memory_mib,guest_memtotal_mib,benchmark,params,repeat,metric,value,unit,valid,duration_s,error"
        );
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "r,t,vm-1,1,1,1,512,480,b,,1,a,2.5,u,,1.0,"
        );
    }
}
