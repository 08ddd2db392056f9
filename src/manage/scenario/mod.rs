//! `vmlab scenario run`: a simulated scenario played on the real lab. The
//! starting state is set (balloons, online CPUs, pins), the manager runs,
//! the scenario's loads start on time as real load generators, and the run
//! is judged from outside, as the course's monitor does: one sample a
//! second, per-pCPU use from vCPU time deltas, pins, balloons, the host's
//! free memory, and OOM kills from the guests' kernel logs.
//!
//! The manager is vmlab's own loop or the user's own programs (their vCPU
//! scheduler, their memory coordinator), judged exactly alike. Whatever it
//! did to pins and balloons is put back at the end.

pub mod loads;
pub mod restore;

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
use crate::host::child::{Child, Outcome};
use crate::hypervisor::libvirt::Libvirt;
use crate::hypervisor::sample::Sampler;
use crate::hypervisor::{Actuator, Hypervisor};
use crate::lab::state::VmRecord;
use crate::rundir::{OBSERVED_JSONL, RunDir, SCENARIO_JSON};
use crate::units::{CpuSet, Mib};
use crate::workload::run::stop_detached;
use crate::workload::{Ready, Request};
use loads::{Start, schedule};
use restore::Saved;

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

/// A program the user named to manage the lab instead of vmlab's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// `manager`, `cpu-manager` or `memory-manager`: its option, and its
    /// logs' names in the run directory.
    pub role: String,
    pub argv: Vec<String>,
}

/// What a played scenario gives: the judge's report and, for programs the
/// user named, how each ended.
pub struct Played {
    pub report: Report,
    pub programs: Vec<Outcome>,
}

/// What to play, under which manager settings.
pub struct Play<'a> {
    pub scenario: &'a Scenario,
    /// vmlab's policies, unless `external` names programs; the judge's
    /// floor either way.
    pub config: &'a ManageConfig,
    pub external: &'a [External],
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
) -> Result<Played> {
    let saved = Saved::capture(lab.hv, lab.vms)?;
    let played = play_from(lab, play, cancel, say);
    let restored = saved.apply(lab.hv, lab.hv);
    let played = played?;
    restored?;
    Ok(played)
}

fn play_from(
    lab: &Stage,
    play: Play,
    cancel: &AtomicBool,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Played> {
    let Play {
        scenario,
        config,
        external,
        run,
        prepare,
        template,
    } = play;
    let run_dir = run.clone();
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
    let mut programs_ended = Vec::new();
    // The set-up as it was before any manager ran: a change in its first
    // moment is a change too.
    let set_up_sample = lab.hv.sample(&names)?;
    let mut snapshots = std::thread::scope(|threads| -> Result<_> {
        let manager = threads.spawn(|| {
            if !external.is_empty() {
                return Ok(None);
            }
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
            .map(Some)
        });
        let children = Watched::start(external, &run_dir.path)?;
        for e in external {
            say(&format!("started {} ({})", e.role, e.argv.join(" ")));
        }
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
        programs_ended = children.stop();
        for ended in &programs_ended {
            say(&ended.summary());
        }
        if let Some(summary) = manager.join().expect("the manager's thread panicked")? {
            say(&format!("manager: {summary}"));
        }
        sampled
    })?;
    snapshots.insert(0, set_up_sample);
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
    Ok(Played {
        report,
        programs: programs_ended,
    })
}

/// The user's programs while they run, each checked now and then so one
/// that ends by itself is noted with the time it ended.
struct Watched {
    children: std::sync::Arc<std::sync::Mutex<Vec<Child>>>,
    done: std::sync::Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn start(external: &[External], dir: &std::path::Path) -> Result<Watched> {
        let mut children = Vec::new();
        for e in external {
            children.push(Child::start(&e.role, &e.argv, dir)?);
        }
        let children = std::sync::Arc::new(std::sync::Mutex::new(children));
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let watcher = (!external.is_empty()).then(|| {
            let (children, done) = (children.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    children.lock().unwrap().iter_mut().for_each(Child::poll);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        });
        Ok(Watched {
            children,
            done,
            watcher,
        })
    }

    fn stop(mut self) -> Vec<Outcome> {
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            w.join().ok();
        }
        let children = std::mem::take(&mut *self.children.lock().unwrap());
        children.into_iter().map(Child::stop).collect()
    }
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

/// Why the lab cannot play `scenario`, with the commands that make one that
/// can. The course's cases need its shape: one vCPU per VM for the CPU
/// cases, 512 MiB that may grow to 2048 MiB for the memory cases; other
/// scenarios scale to the lab.
pub fn shape_error(scenario: &Scenario, lab: &str, vms: &[VmRecord]) -> Option<String> {
    let n = scenario.vms.len();
    let course = scenario.name.starts_with("course-");
    let memory = scenario.expect == super::sim::scenario::Expect::MemoryRules;
    let fits = |vm: &VmRecord| {
        let spec = &scenario.vms[0];
        !course
            || if memory {
                vm.memory.0 == spec.memory_mib && vm.max_memory.0 == spec.max_mib
            } else {
                vm.vcpus == spec.vcpus
            }
    };
    let misfit = vms.iter().find(|vm| !fits(vm));
    if vms.len() == n && misfit.is_none() {
        return None;
    }
    let (memory_mib, max_mib) = super::sim::scenario::COURSE_VM_MIB;
    let up = if course {
        format!("vmlab up {n} --vcpus 1 --memory {memory_mib}M --max-memory {max_mib}M")
    } else {
        format!("vmlab up {n}")
    };
    let has = match misfit {
        Some(vm) => format!(
            "{} has {} vCPU(s) and {} MiB up to {} MiB",
            vm.name, vm.vcpus, vm.memory.0, vm.max_memory.0
        ),
        None => format!("lab `{lab}` runs {}", vms.len()),
    };
    let needs = if course {
        format!("{n} VMs of 1 vCPU and {memory_mib} MiB up to {max_mib} MiB")
    } else {
        format!("{n} VMs")
    };
    let remedy = if misfit.is_some() || vms.len() > n {
        format!("`vmlab down`, then `{up}`")
    } else {
        format!("`{up}`")
    };
    Some(format!(
        "scenario `{}` needs {needs}; {has}: run {remedy}",
        scenario.name
    ))
}

/// Running domains of the connection that are not the lab's: a program the
/// user names acts on every running domain, so they must not be there.
pub fn foreign_running(
    domains: &[crate::hypervisor::DomainInfo],
    owns: impl Fn(&crate::hypervisor::DomainInfo) -> bool,
) -> Vec<String> {
    domains
        .iter()
        .filter(|d| d.state.is_active() && !owns(d))
        .map(|d| d.name.clone())
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{DomainInfo, PowerState};
    use crate::manage::sim::scenario::named;
    use crate::testutil::vm_record;

    fn case(name: &str) -> Scenario {
        named(name)
    }

    fn lab(n: usize, memory_mib: u64, max_mib: u64, vcpus: u32) -> Vec<VmRecord> {
        (1..=n)
            .map(|i| {
                let mut vm = vm_record(&format!("vm-{i}"));
                (vm.memory, vm.max_memory, vm.vcpus) = (Mib(memory_mib), Mib(max_mib), vcpus);
                vm
            })
            .collect()
    }

    #[test]
    fn a_lab_of_the_wrong_shape_is_refused_with_the_up_that_fits() {
        // The course's shape plays every course case on 2 pCPUs.
        let fits = lab(4, 512, 2048, 1);
        for name in [
            "course-cpu-1",
            "course-cpu-3",
            "course-mem-1",
            "course-mem-3",
        ] {
            assert_eq!(shape_error(&case(name), "lab", &fits), None, "{name}");
        }
        // The default VM size plays the CPU cases, not the memory ones.
        assert_eq!(
            shape_error(&case("course-cpu-2"), "lab", &lab(4, 512, 1024, 1)),
            None
        );
        assert_eq!(
            shape_error(&case("course-mem-1"), "lab", &lab(4, 512, 1024, 1)).unwrap(),
            "scenario `course-mem-1` needs 4 VMs of 1 vCPU and 512 MiB up to 2048 MiB; vm-1 has 1 vCPU(s) and 512 MiB up to 1024 MiB: run `vmlab down`, then `vmlab up 4 --vcpus 1 --memory 512M --max-memory 2048M`"
        );
        assert_eq!(
            shape_error(&case("course-cpu-1"), "lab", &lab(4, 512, 2048, 2)).unwrap(),
            "scenario `course-cpu-1` needs 4 VMs of 1 vCPU and 512 MiB up to 2048 MiB; vm-1 has 2 vCPU(s) and 512 MiB up to 2048 MiB: run `vmlab down`, then `vmlab up 4 --vcpus 1 --memory 512M --max-memory 2048M`"
        );
        // Too few grow with `up`; too many must go first.
        assert_eq!(
            shape_error(&case("course-cpu-1"), "lab", &lab(3, 512, 2048, 1)).unwrap(),
            "scenario `course-cpu-1` needs 4 VMs of 1 vCPU and 512 MiB up to 2048 MiB; lab `lab` runs 3: run `vmlab up 4 --vcpus 1 --memory 512M --max-memory 2048M`"
        );
        assert!(
            shape_error(&case("course-cpu-1"), "lab", &lab(5, 512, 2048, 1))
                .unwrap()
                .ends_with("lab `lab` runs 5: run `vmlab down`, then `vmlab up 4 --vcpus 1 --memory 512M --max-memory 2048M`")
        );
    }

    #[test]
    fn only_running_domains_that_are_not_the_labs_are_foreign() {
        let domain = |name: &str, state| DomainInfo {
            name: name.into(),
            uuid: String::new(),
            state,
            mark: None,
        };
        let domains = [
            domain("vm-1", PowerState::Running),
            domain("theirs", PowerState::Running),
            domain("paused", PowerState::Paused),
            domain("off", PowerState::Shutoff),
        ];
        let foreign = foreign_running(&domains, |d| d.name.starts_with("vm-"));
        assert_eq!(foreign, ["theirs", "paused"]);
    }
}
