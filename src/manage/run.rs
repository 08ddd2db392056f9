//! The manager's one loop: every interval, sample the managed domains, plan
//! with the policies, apply through the one executor, and write down both
//! the samples (`manage.csv`) and every decision with its inputs
//! (`decisions.csv`). It is generic over what it samples and acts on and
//! over its clock: `vmlab manage` and `vmlab scenario run` drive libvirt on
//! the wall clock, the simulator drives its host model on the model's time,
//! through the same code.
//!
//! Domains that appear, stop or vanish between rounds are simply in or out
//! of the next sample, and the loop says so (terminal and `decisions.csv`),
//! as it says when a VM's balloon stats stop updating. libvirtd going away
//! makes the loop reconnect with backoff. Ctrl-C (or SIGTERM, SIGHUP) ends
//! it after the current round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::action::{Action, Decision};
use super::execute::{self, Applied};
use super::health::{Event, Health};
use super::log::{DecisionCsv, DecisionRow, ManageCsv, ManageRow, RunClock};
use super::policy::{ManageConfig, State, plan};
use super::snapshot::Snapshot;
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::sample::Sampler;
use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::Lab;
use crate::paths::Home;
use crate::rundir::{DECISIONS_CSV, MANAGE_CSV, MANAGE_JSON, ManageJson, RunDir};
use crate::wait::Backoff;

/// The files a manager writes into its run; none may exist before it starts.
pub const MANAGE_FILES: [&str; 3] = [DECISIONS_CSV, MANAGE_CSV, MANAGE_JSON];

/// Which domains are managed.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The running domains marked as this lab's, re-listed every round.
    Lab { home: Home, lab: String },
    /// Named domains, vmlab's or not (`--domains a,b`).
    Named(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Options {
    pub config: ManageConfig,
    pub dry_run: bool,
    /// One decision round (after one baseline sample), then stop.
    pub once: bool,
    /// Where [`MANAGE_FILES`] go; `None`: nowhere (the simulator).
    pub run: Option<RunDir>,
}

/// What a run did, for the summary printed at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rounds: u64,
    pub repins: u64,
    pub mib_grown: u64,
    pub mib_released: u64,
    pub vcpus_added: u64,
    pub vcpus_removed: u64,
    pub pending: u64,
    pub failed: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rounds: {} re-pins, {} MiB grown, {} MiB released, {} vCPUs added, {} removed ({} pending), {} failed actions",
            self.rounds,
            self.repins,
            self.mib_grown,
            self.mib_released,
            self.vcpus_added,
            self.vcpus_removed,
            self.pending,
            self.failed
        )
    }
}

/// Where the loop's time comes from. [`Wall`] sleeps; the simulator advances
/// its host model while the loop waits.
pub trait Clock {
    /// Waits `seconds`; `false` when the run is over (Ctrl-C, its duration,
    /// the end of a simulated scenario).
    fn pause(&self, seconds: f64) -> bool;
}

/// The real clock: sleeps in small steps until Ctrl-C (`cancel`) or `ends`.
pub struct Wall<'a> {
    pub cancel: &'a AtomicBool,
    pub ends: Option<Instant>,
}

impl<'a> Wall<'a> {
    /// Until Ctrl-C, or for `duration` from now.
    pub fn new(cancel: &'a AtomicBool, duration: Option<Duration>) -> Wall<'a> {
        Wall {
            cancel,
            ends: duration.map(|d| Instant::now() + d),
        }
    }
}

impl Clock for Wall<'_> {
    fn pause(&self, seconds: f64) -> bool {
        pause(seconds, self.cancel, self.ends)
    }
}

/// What the loop tells as it goes.
pub struct Hooks<'a> {
    /// One line per action and per event worth telling.
    pub say: &'a dyn Fn(&str),
    /// Every decision with the time of its round (seconds since the first
    /// sample) and how applying it went.
    pub decided: &'a mut dyn FnMut(f64, &Decision, &Applied),
}

/// Runs the loop until `--once` or the clock says the run is over.
/// `connect` gives a connection, again after one was lost; `list` names the
/// domains to manage this round.
pub fn run<H: Sampler + Actuator>(
    connect: &dyn Fn() -> Result<H>,
    list: &dyn Fn(&H) -> Result<Vec<String>>,
    opts: &Options,
    clock: &dyn Clock,
    hooks: Hooks,
) -> Result<Summary> {
    let Hooks { say, decided } = hooks;
    let mut hv = connect()?;
    let first = hv.sample(&list(&hv)?)?;
    let files = Files::create(opts, first.host.pcpus)?;
    let mut looper = Looper {
        opts,
        files,
        clock: RunClock::new(SystemTime::now(), first.at_s),
        start_s: first.at_s,
        state: State::default(),
        prev: None,
        summary: Summary::default(),
        health: Health::default(),
        say,
        decided,
    };
    // The baseline: the policies keep it (and decide nothing without a
    // previous snapshot), so the first real round can already act.
    let none = plan(&first, &mut looper.state, &opts.config);
    debug_assert!(none.is_empty());
    looper.observe(&hv, &first, Vec::new())?;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        if !clock.pause(opts.config.interval_s) {
            break;
        }
        match looper.round(&hv, list) {
            Ok(()) => backoff.reset(),
            Err(e) if hv.is_alive() => say(&format!("round failed: {e:#}")),
            Err(e) => {
                let wait = backoff.wait();
                say(&format!(
                    "libvirt went away ({e:#}); reconnecting in {} s",
                    wait.as_secs()
                ));
                if !clock.pause(wait.as_secs_f64()) {
                    break;
                }
                match connect() {
                    Ok(new) => {
                        hv = new;
                        say("reconnected to libvirt");
                    }
                    Err(e) => say(&format!("still no libvirt: {e:#}")),
                }
                continue;
            }
        }
        if opts.once {
            break;
        }
    }
    Ok(looper.summary)
}

/// The domains of `scope` to manage this round.
pub fn list_domains(hv: &Libvirt, scope: &Scope) -> Result<Vec<String>> {
    Ok(match scope {
        Scope::Named(names) => names.clone(),
        Scope::Lab { home, lab } => {
            let lab = Lab::new(hv, home, lab);
            hv.domains()?
                .into_iter()
                .filter(|d| lab.owns(d) && d.state.is_active())
                .map(|d| d.name)
                .collect()
        }
    })
}

/// Sleeps `seconds`; `false` when Ctrl-C or the end came.
fn pause(seconds: f64, cancel: &AtomicBool, ends: Option<Instant>) -> bool {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let over = || ends.is_some_and(|e| Instant::now() >= e);
    !crate::wait::cut_short(until, &|| cancel.load(Ordering::SeqCst) || over()) && !over()
}

/// The run's files.
struct Files {
    decisions: DecisionCsv<Out>,
    samples: ManageCsv<Out>,
}

type Out = Box<dyn std::io::Write>;

impl Files {
    fn to(decisions: Out, samples: Out, pcpus: u32) -> Result<Files> {
        Ok(Files {
            decisions: DecisionCsv::new(decisions)?,
            samples: ManageCsv::new(samples, pcpus)?,
        })
    }

    /// Creates them exclusively: an existing run is never truncated.
    fn create(opts: &Options, pcpus: u32) -> Result<Files> {
        let Some(run) = &opts.run else {
            return Files::to(Box::new(std::io::sink()), Box::new(std::io::sink()), pcpus);
        };
        let c = &opts.config;
        let settings = ManageJson {
            schema: 1,
            interval_s: c.interval_s,
            cpu_policy: c.cpu.to_string(),
            memory_policy: c.memory.to_string(),
            dry_run: opts.dry_run,
            mem_floor_mib: c.balloon.floor_unused_mib,
            host_min_free_mib: c.balloon.host_min_free_mib,
            mem_high_pct: c.threshold.grow_above_pct,
            mem_low_pct: c.threshold.shrink_below_pct,
            cpu_high_pct: c.hotplug.high_pct,
            cpu_low_pct: c.hotplug.low_pct,
        };
        let files = Files::to(
            Box::new(run.create_file(DECISIONS_CSV)?),
            Box::new(run.create_file(MANAGE_CSV)?),
            pcpus,
        )?;
        let mut json = run.create_file(MANAGE_JSON)?;
        std::io::Write::write_all(
            &mut json,
            (serde_json::to_string_pretty(&settings)? + "\n").as_bytes(),
        )
        .with_context(|| format!("writing {}", run.file(MANAGE_JSON).display()))?;
        Ok(files)
    }
}

struct Looper<'a> {
    opts: &'a Options,
    files: Files,
    clock: RunClock,
    /// The first sample's time: decisions are told in seconds since.
    start_s: f64,
    state: State,
    prev: Option<Snapshot>,
    summary: Summary,
    health: Health,
    say: &'a dyn Fn(&str),
    decided: &'a mut dyn FnMut(f64, &Decision, &Applied),
}

impl Looper<'_> {
    fn round<H: Sampler + Actuator>(
        &mut self,
        hv: &H,
        list: &dyn Fn(&H) -> Result<Vec<String>>,
    ) -> Result<()> {
        let names = list(hv)?;
        let snap = hv.sample(&names)?;
        let decisions = plan(&snap, &mut self.state, &self.opts.config);
        self.summary.rounds += 1;
        let mut rows = Vec::new();
        for d in decisions {
            let applied = execute::apply(hv, &d, self.opts.dry_run);
            (self.decided)(snap.at_s - self.start_s, &d, &applied);
            let mut row = DecisionRow::new(&d, &snap, &self.clock);
            self.count(&d.action, &row, &applied);
            let detail = match &applied {
                Applied::Pending(e) | Applied::Failed(e) => format!(" ({e})"),
                _ => String::new(),
            };
            (self.say)(&format!(
                "{:>7.1}s {:<10} {:<6} {} -> {} {}: {} [{}{detail}]",
                row.t_s,
                row.vm,
                row.kind,
                row.before,
                row.after,
                row.unit,
                row.reason,
                applied.word()
            ));
            let outcome = format!("outcome={}", applied.word());
            row.inputs = if row.inputs.is_empty() {
                outcome
            } else {
                format!("{};{outcome}", row.inputs)
            };
            rows.push(row);
        }
        self.observe(hv, &snap, rows)
    }

    /// Writes the samples and decisions of a round, and tells what happened
    /// to the VMs themselves (gone, back, silent balloon stats) on the
    /// terminal and in `decisions.csv`.
    fn observe(
        &mut self,
        hv: &dyn Actuator,
        snap: &Snapshot,
        mut decisions: Vec<DecisionRow>,
    ) -> Result<()> {
        for (vm, event) in self.health.observe(snap) {
            if matches!(event, Event::Stale { .. })
                && !self.opts.dry_run
                && let Err(e) = hv.rearm_balloon_stats(&vm)
            {
                (self.say)(&format!("{vm}: {e:#}"));
            }
            let row = DecisionRow::event(&vm, &event, snap, &self.clock);
            (self.say)(&format!(
                "{:>7.1}s {:<10} {:<6} {}",
                row.t_s, row.vm, row.kind, row.reason
            ));
            decisions.push(row);
        }
        self.files
            .samples
            .write(&ManageRow::all(self.prev.as_ref(), snap, &self.clock))?;
        for row in &decisions {
            self.files.decisions.write(row)?;
        }
        self.prev = Some(snap.clone());
        Ok(())
    }

    fn count(&mut self, action: &Action, row: &DecisionRow, applied: &Applied) {
        let s = &mut self.summary;
        match applied {
            Applied::Failed(_) | Applied::Vanished => {
                s.failed += 1;
                return;
            }
            Applied::Pending(_) => s.pending += 1,
            Applied::Done | Applied::DryRun => {}
        }
        let (before, after) = (
            row.before.parse::<i64>().unwrap_or(0),
            row.after.parse::<i64>().unwrap_or(0),
        );
        match action {
            Action::Pin { .. } => s.repins += 1,
            Action::SetMemory { .. } if after >= before => s.mib_grown += (after - before) as u64,
            Action::SetMemory { .. } => s.mib_released += (before - after) as u64,
            Action::SetVcpus { .. } if after >= before => s.vcpus_added += (after - before) as u64,
            Action::SetVcpus { .. } => s.vcpus_removed += (before - after) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_ends_early_on_ctrl_c_and_at_the_end() {
        let cancel = AtomicBool::new(true);
        let started = Instant::now();
        assert!(!pause(5.0, &cancel, None));
        let cancel = AtomicBool::new(false);
        assert!(!pause(5.0, &cancel, Some(Instant::now())));
        assert!(pause(0.05, &cancel, None));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
