//! `vmlab monitor`'s collector. Each guest runs the reporter script over an
//! SSH channel (nothing listens on a port); a thread per guest reads its
//! lines and keeps the latest sample, restarting the reporter when it dies.
//! Every interval the collector samples libvirt and writes one row per VM:
//! the guest's figures, the host's (balloon, vCPUs, pins, CPU time, per-pCPU
//! use) and, when `vmlab manage` writes into the same run directory, its
//! thresholds and the decisions since the previous row.
//!
//! A VM that stops or vanishes mid-run keeps its rows, with empty cells of
//! its own, and the others go on; when it runs again its reporter is
//! restarted at once.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use super::cpu::CpuUse;
use super::reporter::{GuestSample, LineStats, REPORTER_SH};
use super::row::{MetricsRow, MetricsWriter, kib_to_mib};
use super::run::{CsvTail, DECISIONS_CSV, DecisionRecord, METRICS_CSV};
use crate::guest::GUEST_ROOT;
use crate::guest::shell::quote;
use crate::guest::ssh::{Cancel, Guest, Io, SshTarget};
use crate::hypervisor::sample::{Sampler, Snapshot, VmSample};
use crate::rundir::ManageJson;
use crate::units::CpuSet;

/// What to collect, where to, for how long.
pub struct Plan {
    pub targets: Vec<SshTarget>,
    pub interval_s: u64,
    pub duration: Option<Duration>,
    pub run_dir: PathBuf,
}

/// How the collection went, per VM.
#[derive(Debug, Clone)]
pub struct FeedReport {
    pub vm: String,
    pub lines: String,
    pub restarts: u32,
}

/// Collects until the end or Ctrl-C (`cancel`); `show` gets each sample's rows.
pub fn collect(
    sampler: &dyn Sampler,
    plan: &Plan,
    cancel: &AtomicBool,
    show: &mut dyn FnMut(&[MetricsRow]),
) -> Result<Vec<FeedReport>> {
    std::fs::create_dir_all(&plan.run_dir)
        .with_context(|| format!("creating {}", plan.run_dir.display()))?;
    let names: Vec<String> = plan.targets.iter().map(|t| t.vm.clone()).collect();
    let first = sampler.sample(&names)?;
    // The header is fixed now: every row gets this many pCPU cells.
    let pcpus = first.host.pcpus as usize;
    let mut writer = MetricsWriter::create(&plan.run_dir.join(METRICS_CSV), pcpus)?;
    let mut running: Vec<bool> = names.iter().map(|vm| is_running(&first, vm)).collect();
    for (vm, run) in names.iter().zip(&running) {
        if !run {
            tracing::warn!("{}", not_running(vm));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeds: Vec<Feed> = plan
        .targets
        .iter()
        .map(|t| Feed::spawn(t.clone(), plan.interval_s, stop.clone()))
        .collect();
    let mut decisions = CsvTail::<DecisionRecord>::new(plan.run_dir.join(DECISIONS_CSV));
    let run_start = SystemTime::now();
    let began = Instant::now();
    let mut prev = first;
    let mut seen_uptime: Vec<Option<u64>> = vec![None; feeds.len()];
    let result = (|| -> Result<()> {
        loop {
            let next = began
                + Duration::from_secs(
                    plan.interval_s * (began.elapsed().as_secs() / plan.interval_s + 1),
                );
            if crate::wait::cut_short(next, &|| cancel.load(Ordering::SeqCst)) {
                return Ok(());
            }
            if plan.duration.is_some_and(|d| began.elapsed() > d) {
                return Ok(());
            }
            let snap = sampler.sample(&names)?;
            for ((feed, was), vm) in feeds.iter().zip(&mut running).zip(&names) {
                let now = is_running(&snap, vm);
                if *was && !now {
                    tracing::warn!("{}", not_running(vm));
                } else if !*was && now {
                    tracing::info!("{vm} runs again; its reporter restarts");
                    feed.retry_now();
                }
                *was = now;
            }
            let pcpu_pct = pcpu_cells(&prev, &snap, pcpus);
            let manager = ManageJson::read(&plan.run_dir);
            let new_decisions = decisions.read_new().unwrap_or_default();
            for note in decisions.notes.drain(..) {
                tracing::warn!("{note}");
            }
            let rows: Vec<MetricsRow> = feeds
                .iter()
                .enumerate()
                .map(|(i, feed)| {
                    let mut row = MetricsRow::new(SystemTime::now(), run_start, &feed.vm);
                    if let Some(sample) = feed.latest() {
                        // A line already used is not repeated: a stalled guest is a gap.
                        if seen_uptime[i] != Some(sample.uptime_ms) {
                            seen_uptime[i] = Some(sample.uptime_ms);
                            row.set_guest(&sample);
                        }
                    }
                    row.pcpu_pct = pcpu_pct.clone();
                    set_host(&mut row, &snap, &feed.vm);
                    set_manager(&mut row, manager.as_ref(), &new_decisions);
                    row
                })
                .collect();
            writer.write_sample(&rows)?;
            show(&rows);
            prev = snap;
        }
    })();
    stop.store(true, Ordering::SeqCst);
    let reports = feeds.into_iter().map(Feed::finish).collect();
    result.map(|()| reports)
}

fn is_running(snap: &Snapshot, vm: &str) -> bool {
    snap.vms.iter().any(|v| v.name == vm)
}

fn not_running(vm: &str) -> String {
    format!(
        "{vm} is not running (stopped or gone): its rows stay empty until it runs again \
         (`vmlab up` starts it); the other VMs go on"
    )
}

/// The host's per-pCPU use between two libvirt samples, one cell for each
/// of the header's `pcpus` columns; empty cells when it cannot be told yet.
fn pcpu_cells(prev: &Snapshot, now: &Snapshot, pcpus: usize) -> Vec<Option<f64>> {
    let mut cells = vec![None; pcpus];
    if let Some(cpu) = CpuUse::between(prev, now) {
        for (cell, pct) in cells.iter_mut().zip(cpu.pcpu_pct(now)) {
            *cell = Some(pct);
        }
    }
    cells
}

/// A VM's own libvirt columns; they stay empty when it is not running.
fn set_host(row: &mut MetricsRow, now: &Snapshot, vm: &str) {
    let Some(sample) = now.vms.iter().find(|v| v.name == vm) else {
        return;
    };
    if let Some(b) = &sample.balloon {
        row.balloon_actual_mib = Some(kib_to_mib(b.actual_kib));
        if b.last_update_s > 0 {
            row.balloon_unused_mib = Some(kib_to_mib(b.unused_kib));
        }
    }
    row.vcpus = Some(sample.vcpus_current);
    row.pins = pins(sample, now.host.pcpus);
    row.domain_cpu_s = Some(sample.vcpus.iter().map(|v| v.cpu_time_ns).sum::<u64>() as f64 / 1e9);
}

/// `0:1;1:0-1`; empty when no vCPU is pinned (each may run anywhere).
fn pins(vm: &VmSample, pcpus: u32) -> String {
    if vm.vcpus.iter().all(|v| v.affinity.len() as u32 >= pcpus) {
        return String::new();
    }
    let pinned: Vec<String> = vm
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{i}:{}", CpuSet::new(v.affinity.iter().copied())))
        .collect();
    pinned.join(";")
}

/// The manager's floor or thresholds (from the run's `manage.json`, when a
/// manager writes into the same run) and its decisions about this VM.
fn set_manager(row: &mut MetricsRow, manager: Option<&ManageJson>, decisions: &[DecisionRecord]) {
    if let Some(m) = manager {
        match m.memory_policy.as_str() {
            "balloon" => row.mem_floor_mib = Some(m.mem_floor_mib as f64),
            "threshold" => {
                row.mem_high_pct = Some(m.mem_high_pct);
                row.mem_low_pct = Some(m.mem_low_pct);
            }
            _ => {}
        }
    }
    let mine: Vec<String> = decisions
        .iter()
        .filter(|d| d.vm == row.vm)
        .map(|d| format!("{} {}->{} {}", d.kind, d.before, d.after, d.unit))
        .collect();
    row.decisions = mine.join("; ");
}

/// One guest's reporter, read on a thread of its own.
struct Feed {
    vm: String,
    latest: Arc<Mutex<Option<GuestSample>>>,
    stats: Arc<Mutex<LineStats>>,
    restarts: Arc<AtomicU32>,
    /// Set when the VM runs again: the next attempt comes at once.
    retry: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// Waits between attempts to start a reporter double from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(30);

impl Feed {
    fn spawn(target: SshTarget, interval_s: u64, stop: Arc<AtomicBool>) -> Feed {
        let latest = Arc::new(Mutex::new(None));
        let stats = Arc::new(Mutex::new(LineStats::default()));
        let restarts = Arc::new(AtomicU32::new(0));
        let retry = Arc::new(AtomicBool::new(false));
        let vm = target.vm.clone();
        let thread = {
            let (latest, stats, restarts, retry) = (
                latest.clone(),
                stats.clone(),
                restarts.clone(),
                retry.clone(),
            );
            std::thread::spawn(move || {
                let mut backoff = crate::wait::Backoff::new(RETRY_FIRST, RETRY_LAST);
                // Said once per outage: until the reporter works again, attempts stay quiet.
                let mut warned = false;
                loop {
                    let good_before = stats.lock().unwrap().good;
                    let ended = report(&target, interval_s, &stop, &latest, &stats);
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    restarts.fetch_add(1, Ordering::SeqCst);
                    if stats.lock().unwrap().good > good_before {
                        warned = false;
                        backoff.reset();
                    }
                    let why = ended.map_or_else(|e| format!("{e:#}"), |()| "it ended".into());
                    if warned {
                        tracing::debug!("{}: reporter: {why}", target.vm);
                    } else {
                        tracing::warn!(
                            "{}: the guest reporter stopped ({why}); restarting it until it runs",
                            target.vm
                        );
                        warned = true;
                    }
                    let woken = sleep_unless(backoff.wait(), &stop, &retry);
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if woken {
                        backoff.reset();
                    }
                }
            })
        };
        Feed {
            vm,
            latest,
            stats,
            restarts,
            retry,
            thread,
        }
    }

    fn latest(&self) -> Option<GuestSample> {
        self.latest.lock().unwrap().clone()
    }

    /// Ends the wait before the next attempt (the VM runs again).
    fn retry_now(&self) {
        self.retry.store(true, Ordering::SeqCst);
    }

    fn finish(self) -> FeedReport {
        let _ = self.thread.join();
        FeedReport {
            vm: self.vm,
            lines: self.stats.lock().unwrap().to_string(),
            restarts: self.restarts.load(Ordering::SeqCst),
        }
    }
}

/// Sleeps `wait` unless `stop` or `retry` (which it clears) goes up first;
/// returns whether one did.
fn sleep_unless(wait: Duration, stop: &AtomicBool, retry: &AtomicBool) -> bool {
    crate::wait::cut_short(Instant::now() + wait, &|| {
        stop.load(Ordering::SeqCst) || retry.swap(false, Ordering::SeqCst)
    })
}

/// Runs the reporter in the guest until it ends or `stop` goes up.
fn report(
    target: &SshTarget,
    interval_s: u64,
    stop: &AtomicBool,
    latest: &Mutex<Option<GuestSample>>,
    stats: &Mutex<LineStats>,
) -> Result<()> {
    let guest = Guest::connect(target, Duration::from_secs(10))?;
    let script = format!("{GUEST_ROOT}/bin/reporter.sh");
    guest.push_bytes(REPORTER_SH.as_bytes(), &script)?;
    let pid_file = format!("{GUEST_ROOT}/reporter.{}.pid", std::process::id());
    let command = format!(
        "echo $$ > {pid} && exec sh {script} {interval_s}",
        pid = quote(&pid_file),
        script = quote(&script)
    );
    let mut lines = Lines {
        pending: Vec::new(),
        on_line: &mut |line: &str| {
            if let Some(sample) = stats.lock().unwrap().parse(line) {
                *latest.lock().unwrap() = Some(sample);
            }
        },
    };
    guest.exec_io(
        &command,
        Io {
            stdin: None,
            stdout: &mut lines,
            stderr: &mut std::io::sink(),
            cancel: Some(Cancel {
                flag: stop,
                stop: format!("kill $(cat {}) 2>/dev/null; rm -f {0}", quote(&pid_file)),
            }),
        },
        None,
    )?;
    Ok(())
}

/// Hands over each complete line (with its newline) as it arrives.
struct Lines<'a> {
    pending: Vec<u8>,
    on_line: &'a mut dyn FnMut(&str),
}

impl Write for Lines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            (self.on_line)(&String::from_utf8_lossy(&line));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::sample::VcpuSample;

    fn vm(affinities: &[&[u32]]) -> VmSample {
        VmSample {
            name: "vm-1".into(),
            vcpus: affinities
                .iter()
                .map(|a| VcpuSample {
                    cpu_time_ns: 0,
                    pcpu: a[0],
                    affinity: a.to_vec(),
                })
                .collect(),
            vcpus_current: affinities.len() as u32,
            vcpus_max: 2,
            memory_max_kib: 0,
            memory_current_kib: 0,
            balloon: None,
        }
    }

    #[test]
    fn a_vm_that_is_gone_gets_empty_cells_of_its_own_and_the_hosts_pcpu_figures() {
        use crate::hypervisor::sample::HostSample;
        let named = |name: &str, cpu_s: f64| {
            let mut sample = vm(&[&[0]]);
            sample.name = name.into();
            sample.vcpus[0].cpu_time_ns = (cpu_s * 1e9) as u64;
            sample
        };
        let at = |at_s, vms| Snapshot {
            at_s,
            host: HostSample {
                pcpus: 2,
                free_kib: 0,
                total_kib: 0,
                pcpu_busy_ns: Vec::new(),
            },
            vms,
        };
        let prev = at(1.0, vec![named("pr-1", 1.0), named("pr-2", 1.0)]);
        let now = at(2.0, vec![named("pr-1", 1.5)]);
        let pcpu = pcpu_cells(&prev, &now, 2);
        assert_eq!(pcpu, [Some(50.0), Some(0.0)]);
        assert_eq!(pcpu_cells(&now, &now, 2), [None, None], "no time passed");

        let rows: Vec<MetricsRow> = ["pr-1", "pr-2"]
            .iter()
            .map(|vm| {
                let mut row = MetricsRow::new(SystemTime::UNIX_EPOCH, SystemTime::UNIX_EPOCH, vm);
                row.pcpu_pct = pcpu.clone();
                set_host(&mut row, &now, vm);
                row
            })
            .collect();
        assert_eq!(rows[0].vcpus, Some(1));
        assert_eq!((rows[1].vcpus, rows[1].domain_cpu_s), (None, None));
        let mut writer = MetricsWriter::new(Vec::new(), 2).unwrap();
        writer.write_sample(&rows).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(
            text.lines().nth(2).unwrap(),
            "1970-01-01T00:00:00.000Z,0.0,pr-2,,,,,,,,,,,,,,50.0,0.0,,,,"
        );
    }

    #[test]
    fn pins_are_written_only_when_some_vcpu_is_pinned() {
        assert_eq!(pins(&vm(&[&[0, 1], &[0, 1]]), 2), "");
        assert_eq!(pins(&vm(&[&[1], &[0, 1]]), 2), "0:1;1:0-1");
    }

    #[test]
    fn the_manager_adds_its_floor_thresholds_and_this_vms_decisions() {
        let decision = |vm: &str| DecisionRecord {
            time: String::new(),
            t_s: 1.0,
            vm: vm.into(),
            kind: "memory".into(),
            before: "512".into(),
            after: "600".into(),
            unit: "mib".into(),
            reason: String::new(),
            inputs: String::new(),
        };
        let mut row = MetricsRow::new(SystemTime::now(), SystemTime::now(), "vm-1");
        let settings = |memory_policy: &str| ManageJson {
            memory_policy: memory_policy.into(),
            mem_floor_mib: 100,
            mem_high_pct: 80.0,
            mem_low_pct: 20.0,
            ..Default::default()
        };
        let balloon = settings("balloon");
        set_manager(
            &mut row,
            Some(&balloon),
            &[decision("vm-1"), decision("vm-2")],
        );
        assert_eq!(row.mem_floor_mib, Some(100.0));
        assert_eq!(
            row.mem_high_pct, None,
            "thresholds belong to the threshold policy"
        );
        assert_eq!(row.decisions, "memory 512->600 mib");
        let threshold = settings("threshold");
        set_manager(&mut row, Some(&threshold), &[]);
        assert_eq!(
            (row.mem_high_pct, row.mem_low_pct),
            (Some(80.0), Some(20.0))
        );
        assert_eq!(row.decisions, "");
        let mut row = MetricsRow::new(SystemTime::now(), SystemTime::now(), "vm-1");
        let off = settings("off");
        set_manager(&mut row, Some(&off), &[]);
        assert_eq!(row.mem_floor_mib, None, "no memory policy, no floor");
    }

    #[test]
    fn lines_are_handed_over_whole() {
        let mut got = Vec::new();
        {
            let mut lines = Lines {
                pending: Vec::new(),
                on_line: &mut |l: &str| got.push(l.to_string()),
            };
            lines.write_all(b"vmlab-r1 1 2").unwrap();
            lines.write_all(b" 3\nsecond\nthi").unwrap();
        }
        assert_eq!(got, ["vmlab-r1 1 2 3\n", "second\n"]);
    }
}
