//! `vmlab scenario run`: a simulated scenario played on the real lab. The
//! starting state is set (balloons, online CPUs, pins), the manager runs,
//! the scenario's loads start on time as real load generators, and the run
//! is judged from outside, as the course's monitor does: one sample a
//! second, per-pCPU use from vCPU time deltas, pins, balloons, the host's
//! free memory, and OOM kills from the guests' kernel logs.

pub mod loads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use serde::{Deserialize, Serialize};

use super::judge::{Figures, JudgeConfig, Report, judge};
use super::policy::ManageConfig;
use super::run::{Hooks, Options, Scope, Wall, list_domains, run as manage};
use super::sim::scenario::Scenario;
use super::snapshot::Snapshot;
use crate::bench::configure;
use crate::bench::matrix::Cell;
use crate::guest::ssh::Guest;
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::sample::Sampler;
use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::state::VmRecord;
use crate::rundir::{OBSERVED_JSONL, RunDir, SCENARIO_JSON};
use crate::units::{CpuSet, Mib};
use crate::workload::run::stop_detached;
use crate::workload::{Ready, Request};
use loads::{Start, schedule};

/// What a scenario is played on: the lab's running VMs, an SSH session to
/// each, and libvirt.
pub struct Stage<'a> {
    pub vms: &'a [VmRecord],
    pub guests: &'a [Guest],
    /// A connection for the sampler; the manager makes its own with `connect`.
    pub hv: &'a Libvirt,
    pub connect: &'a (dyn Fn() -> Result<Libvirt> + Sync),
}

/// Gets `cpu_hog`/`memory_hog` built with the given parameters.
pub type Prepare<'a> = &'a dyn Fn(&Request) -> Result<Ready>;

/// What to play, under which manager settings.
pub struct Play<'a> {
    pub scenario: &'a Scenario,
    pub config: &'a ManageConfig,
    /// Where the manager's files go.
    pub run: RunDir,
    pub prepare: Prepare<'a>,
    /// The request the load generators are made from.
    pub template: &'a Request,
}

/// Plays the scenario on the lab and judges it.
pub fn play(
    lab: &Stage,
    play: Play,
    cancel: &AtomicBool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Report> {
    let Play {
        scenario,
        config,
        run,
        prepare,
        template,
    } = play;
    let run_dir = run.clone();
    if lab.vms.len() != scenario.vms.len() {
        bail!(
            "scenario `{}` is for {} VMs; the lab runs {}",
            scenario.name,
            scenario.vms.len(),
            lab.vms.len()
        );
    }
    let pcpus = lab.hv.node()?.cpus;
    let scale = memory_scale(lab.vms, scenario);
    let starts = schedule(scenario, scale);
    let programs = prepare_loads(&starts, prepare, template)?;
    set_up(lab, scenario, scale, pcpus)?;
    let oom_before = oom_kills(lab.guests)?;
    let names: Vec<String> = lab.vms.iter().map(|v| v.name.clone()).collect();
    let opts = Options {
        config: config.clone(),
        dry_run: false,
        once: false,
        run: Some(run),
    };
    let scope = Scope::Named(names.clone());
    let snapshots = std::thread::scope(|threads| -> Result<_> {
        let manager = threads.spawn(|| {
            manage(
                lab.connect,
                &|hv| list_domains(hv, &scope),
                &opts,
                &Wall::new(cancel, Some(Duration::from_secs_f64(scenario.duration_s))),
                Hooks {
                    say,
                    decided: &mut |_, _, _| {},
                },
            )
        });
        let sampled = observe(
            lab,
            &names,
            &starts,
            &programs,
            scenario.duration_s,
            cancel,
            say,
        );
        for guest in lab.guests {
            for load in ["cpu_hog", "memory_hog"] {
                stop_detached(guest, load).ok();
            }
        }
        let summary = manager.join().expect("the manager's thread panicked")?;
        say(&format!("manager: {summary}"));
        sampled
    })?;
    let oom = oom_kills(lab.guests)?.saturating_sub(oom_before);
    let record = Record {
        schema: 1,
        scenario: scenario.name.to_string(),
        phases_s: scenario.phases_s.clone(),
        oom_kills: oom,
        floor_unused_mib: config.balloon.floor_unused_mib,
        figures: None,
    };
    let report = record.judge(&snapshots);
    record.save(&run_dir, &snapshots, &report)?;
    Ok(report)
}

/// `scenario.json`: what the judge was given besides the samples (which go
/// to `observed.jsonl`) and what it found. A recorded run replays through
/// [`Record::judge`] to the same figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub scenario: String,
    pub phases_s: Vec<f64>,
    pub oom_kills: u32,
    pub floor_unused_mib: u64,
    pub figures: Option<Figures>,
}

impl Record {
    pub fn judge(&self, observed: &[Snapshot]) -> Report {
        let cfg = JudgeConfig {
            floor_unused_mib: self.floor_unused_mib,
            ..JudgeConfig::default()
        };
        judge(observed, &self.phases_s, self.oom_kills, &cfg)
    }

    fn save(&self, run: &RunDir, observed: &[Snapshot], report: &Report) -> Result<()> {
        let mut lines = String::new();
        for snap in observed {
            lines += &(serde_json::to_string(snap)? + "\n");
        }
        std::io::Write::write_all(&mut run.create_file(OBSERVED_JSONL)?, lines.as_bytes())
            .with_context(|| format!("writing {}", run.file(OBSERVED_JSONL).display()))?;
        let doc = serde_json::json!({
            "record": Record {
                figures: Some(report.figures()),
                ..self.clone()
            },
            "t_s": report.t_s,
            "sd_pct": report.sd_pct,
            "pcpu_pct": report.pcpu_pct,
        });
        std::io::Write::write_all(
            &mut run.create_file(SCENARIO_JSON)?,
            (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
        )
        .with_context(|| format!("writing {}", run.file(SCENARIO_JSON).display()))
    }

    /// A recorded run: its record and what the judge saw.
    pub fn load(dir: &std::path::Path) -> Result<(Record, Vec<Snapshot>)> {
        let path = dir.join(SCENARIO_JSON);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_json::Value = serde_json::from_str(&text)?;
        let record: Record = serde_json::from_value(doc["record"].clone())
            .with_context(|| format!("{}: no scenario record", path.display()))?;
        let path = dir.join(OBSERVED_JSONL);
        let observed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Snapshot>, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        Ok((record, observed))
    }
}

/// The lab's VMs may be smaller than the scenario's: sizes scale by their
/// maxima.
fn memory_scale(vms: &[VmRecord], scenario: &Scenario) -> f64 {
    let lab_max = vms.iter().map(|v| v.max_memory.0).min().unwrap_or(0) as f64;
    let spec_max = scenario.vms.iter().map(|v| v.max_mib).max().unwrap_or(1) as f64;
    (lab_max / spec_max).min(1.0)
}

/// One ready program per distinct load.
fn prepare_loads(starts: &[Start], prepare: Prepare, template: &Request) -> Result<Vec<Ready>> {
    starts
        .iter()
        .map(|s| {
            let (name, given) = s.load.workload();
            prepare(&Request {
                name: name.into(),
                given,
                ..template.clone()
            })
        })
        .collect()
}

/// Balloons, online CPUs and pins as the scenario starts them.
fn set_up(lab: &Stage, scenario: &Scenario, scale: f64, pcpus: u32) -> Result<()> {
    let all = CpuSet::new(0..pcpus);
    for ((vm, guest), spec) in lab.vms.iter().zip(lab.guests).zip(&scenario.vms) {
        let memory = Mib(((spec.memory_mib as f64) * scale) as u64)
            .max(Mib(256))
            .min(vm.max_memory);
        let cell = Cell {
            index: 0,
            vcpus: Some(spec.vcpus.min(vm.max_vcpus)),
            memory: Some(memory),
        };
        configure::apply(
            lab.hv,
            lab.hv,
            guest,
            &vm.name,
            &cell,
            Duration::from_secs(90),
        )
        .with_context(|| format!("setting up {} for `{}`", vm.name, scenario.name))?;
        for vcpu in 0..lab.hv.resources(&vm.name)?.vcpus_current {
            let pin = spec.pins.get(vcpu as usize).copied().flatten();
            let set = pin.map_or(all.clone(), |p| CpuSet::new([p % pcpus]));
            lab.hv.pin_vcpu(&vm.name, vcpu, &set)?;
        }
    }
    Ok(())
}

/// Samples once a second until the end while each VM's loads start on
/// time, from a thread of its own (a start is an SSH round trip to a busy
/// guest, seconds under TCG: it must not delay the samples).
fn observe(
    lab: &Stage,
    names: &[String],
    starts: &[Start],
    programs: &[Ready],
    duration_s: f64,
    cancel: &AtomicBool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<crate::hypervisor::sample::Snapshot>> {
    let began = Instant::now();
    let failed = std::sync::Mutex::new(Vec::new());
    let snapshots = std::thread::scope(|scope| {
        for (vm, guest) in lab.guests.iter().enumerate() {
            let (failed, began) = (&failed, began);
            scope.spawn(move || {
                for (i, start) in starts.iter().enumerate().filter(|(_, s)| s.vm == vm) {
                    let due = began + Duration::from_secs_f64(start.at_s);
                    if crate::wait::cut_short(due, &|| cancel.load(Ordering::SeqCst)) {
                        return;
                    }
                    let (name, given) = start.load.workload();
                    let params: Vec<String> =
                        given.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    match programs[i]
                        .program()
                        .start_detached(guest, &format!("scenario-{i}"))
                    {
                        Ok(_) => say(&format!(
                            "{:>7.1}s {:<10} start  {name} {}",
                            began.elapsed().as_secs_f64(),
                            guest.vm(),
                            params.join(" ")
                        )),
                        Err(e) => failed
                            .lock()
                            .unwrap()
                            .push(format!("{}: {e:#}", guest.vm())),
                    }
                }
            });
        }
        let mut snapshots = Vec::new();
        while began.elapsed().as_secs_f64() <= duration_s && !cancel.load(Ordering::SeqCst) {
            snapshots.push(lab.hv.sample(names)?);
            // The next whole second; after a stall (a saturated host starves
            // the sampler too) missed seconds are skipped, not replayed: a
            // burst of samples a few ms apart would measure only noise.
            let next = began + Duration::from_secs(began.elapsed().as_secs() + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok::<_, anyhow::Error>(snapshots)
    })?;
    let failed = failed.into_inner().unwrap();
    if !failed.is_empty() {
        bail!("loads did not start: {}", failed.join("; "));
    }
    Ok(snapshots)
}

/// OOM kills each guest's kernel has logged so far.
fn oom_kills(guests: &[Guest]) -> Result<u32> {
    let mut total = 0;
    for guest in guests {
        let out = guest.exec("dmesg | grep -ci 'killed process' || true")?;
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
    }
    Ok(total)
}
