//! The manager's two CSV files, ready for pandas.
//!
//! `decisions.csv`, one row per decision:
//! `time,t_s,vm,kind,before,after,unit,reason,inputs` where `kind` is
//! `pin|memory|vcpus`, `unit` is `pcpus|mib|vcpus`, a pin's before/after is
//! `vcpu:cpuset` (`1:0-1`), and `inputs` is `key=value;key=value`. What
//! happened to a VM itself is a row of kind `event` with an empty unit:
//! `running -> gone`, `gone -> running`, `fresh -> stale` (balloon stats),
//! `stale -> fresh`, `-> no-stats`.
//!
//! `manage.csv`, one row per VM per sample: the VM's vCPUs, pins
//! (`vcpu:cpuset;…`, e.g. `0:1;1:0`), CPU use, balloon figures in MiB and
//! whether they are fresh, then one column per host pCPU, `pcpu0_pct` …
//! `pcpu{N-1}_pct`: that pCPU's utilisation as the course measures it, the
//! same on every row of a sample. Wide columns keep one file and make
//! `df.drop_duplicates("t_s")[[c for c in df if c.startswith("pcpu")]]` the
//! per-pCPU series. Times: `time` is RFC 3339 UTC with milliseconds, `t_s`
//! seconds since the run started.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::action::{Action, Decision};
use super::health::Event;
use super::snapshot::{Snapshot, VmSample, by_name, fresh_balloon};
use crate::metrics::cpu::CpuUse;
use crate::rundir::timestamp;

pub const DECISION_COLUMNS: [&str; 9] = [
    "time", "t_s", "vm", "kind", "before", "after", "unit", "reason", "inputs",
];

/// `manage.csv` columns before the per-pCPU ones.
pub const MANAGE_COLUMNS: [&str; 13] = [
    "time",
    "t_s",
    "vm",
    "vcpus",
    "vcpus_max",
    "pins",
    "cpu_pct",
    "actual_mib",
    "unused_mib",
    "available_mib",
    "stats_fresh",
    "max_mib",
    "host_free_mib",
];

/// Maps snapshot time (monotonic seconds) to wall-clock time and run time.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start_wall: SystemTime,
    start_s: f64,
}

impl RunClock {
    /// `start_s` (snapshot seconds) happened at `start_wall`.
    pub fn new(start_wall: SystemTime, start_s: f64) -> RunClock {
        RunClock {
            start_wall,
            start_s,
        }
    }

    fn t_s(&self, at_s: f64) -> f64 {
        ((at_s - self.start_s) * 1000.0).round() / 1000.0
    }

    fn time(&self, at_s: f64) -> String {
        timestamp(self.start_wall + Duration::from_secs_f64((at_s - self.start_s).max(0.0)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRow {
    pub time: String,
    pub t_s: f64,
    pub vm: String,
    pub kind: &'static str,
    pub before: String,
    pub after: String,
    pub unit: &'static str,
    pub reason: String,
    pub inputs: String,
}

impl DecisionRow {
    /// `before` comes from `snap`, the snapshot the decision was planned on.
    pub fn new(d: &Decision, snap: &Snapshot, clock: &RunClock) -> DecisionRow {
        let vm = snap.vms.iter().find(|v| v.name == d.action.vm());
        let (kind, before, after, unit) = match &d.action {
            Action::Pin { vcpu, pcpus, .. } => {
                let was = vm.and_then(|v| v.vcpus.get(*vcpu as usize));
                let before =
                    was.map_or(String::new(), |v| format!("{vcpu}:{}", cpuset(&v.affinity)));
                ("pin", before, format!("{vcpu}:{}", cpuset(pcpus)), "pcpus")
            }
            Action::SetMemory { target_kib, .. } => {
                let before =
                    vm.map_or(String::new(), |v| (v.memory_current_kib / 1024).to_string());
                ("memory", before, (target_kib / 1024).to_string(), "mib")
            }
            Action::SetVcpus { count, .. } => {
                let before = vm.map_or(String::new(), |v| v.vcpus_current.to_string());
                ("vcpus", before, count.to_string(), "vcpus")
            }
        };
        let inputs: Vec<String> = d.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        DecisionRow {
            time: clock.time(snap.at_s),
            t_s: clock.t_s(snap.at_s),
            vm: d.action.vm().to_string(),
            kind,
            before,
            after,
            unit,
            reason: d.reason.clone(),
            inputs: inputs.join(";"),
        }
    }
}

impl DecisionRow {
    /// What happened to `vm` itself, as of `snap`.
    pub fn event(vm: &str, event: &Event, snap: &Snapshot, clock: &RunClock) -> DecisionRow {
        let (before, after) = event.states();
        DecisionRow {
            time: clock.time(snap.at_s),
            t_s: clock.t_s(snap.at_s),
            vm: vm.to_string(),
            kind: "event",
            before: before.to_string(),
            after: after.to_string(),
            unit: "",
            reason: event.reason(),
            inputs: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManageRow {
    pub time: String,
    pub t_s: f64,
    pub vm: String,
    pub vcpus: u32,
    pub vcpus_max: u32,
    pub pins: String,
    pub cpu_pct: Option<f64>,
    pub actual_mib: Option<f64>,
    pub unused_mib: Option<f64>,
    pub available_mib: Option<f64>,
    pub stats_fresh: bool,
    pub max_mib: u64,
    pub host_free_mib: u64,
    /// Written as the `pcpu{i}_pct` columns.
    pub pcpu_pct: Vec<Option<f64>>,
}

impl ManageRow {
    /// One row per VM of `now`; CPU figures need `prev`.
    pub fn all(prev: Option<&Snapshot>, now: &Snapshot, clock: &RunClock) -> Vec<ManageRow> {
        let cpu = prev.and_then(|p| CpuUse::between(p, now));
        let pcpu_pct: Vec<Option<f64>> = match &cpu {
            Some(c) => c
                .pcpu_pct(now)
                .into_iter()
                .map(|p| Some(round1(p)))
                .collect(),
            None => vec![None; now.host.pcpus as usize],
        };
        let before = prev.map(by_name).unwrap_or_default();
        let mib = |kib: u64| round1(kib as f64 / 1024.0);
        now.vms
            .iter()
            .enumerate()
            .map(|(i, vm)| {
                let b = vm.balloon.as_ref();
                ManageRow {
                    time: clock.time(now.at_s),
                    t_s: clock.t_s(now.at_s),
                    vm: vm.name.clone(),
                    vcpus: vm.vcpus_current,
                    vcpus_max: vm.vcpus_max,
                    pins: pins(vm),
                    cpu_pct: cpu.as_ref().and_then(|c| c.vm_pct(i)).map(round1),
                    actual_mib: b.map(|b| mib(b.actual_kib)),
                    unused_mib: b.map(|b| mib(b.unused_kib)),
                    available_mib: b.map(|b| mib(b.available_kib)),
                    stats_fresh: fresh_balloon(before.get(vm.name.as_str()).copied(), vm).is_some(),
                    max_mib: vm.memory_max_kib / 1024,
                    host_free_mib: now.host.free_kib / 1024,
                    pcpu_pct: pcpu_pct.clone(),
                }
            })
            .collect()
    }
}

/// `decisions.csv`; the header is written at once, so a run without
/// decisions still leaves a readable file.
pub struct DecisionCsv<W: Write> {
    out: csv::Writer<W>,
}

impl<W: Write> DecisionCsv<W> {
    pub fn new(out: W) -> Result<Self> {
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        out.write_record(DECISION_COLUMNS)
            .context("writing the decisions.csv header")?;
        Ok(DecisionCsv { out })
    }

    pub fn write(&mut self, row: &DecisionRow) -> Result<()> {
        self.out
            .serialize(row)
            .context("writing to decisions.csv")?;
        self.out.flush().context("writing to decisions.csv")
    }
}

/// `manage.csv` for a host with `pcpus` pCPUs.
pub struct ManageCsv<W: Write> {
    out: csv::Writer<W>,
}

impl<W: Write> ManageCsv<W> {
    pub fn new(out: W, pcpus: u32) -> Result<Self> {
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        let mut header: Vec<String> = MANAGE_COLUMNS.iter().map(|c| c.to_string()).collect();
        header.extend((0..pcpus).map(|p| format!("pcpu{p}_pct")));
        out.write_record(&header)
            .context("writing the manage.csv header")?;
        Ok(ManageCsv { out })
    }

    pub fn write(&mut self, rows: &[ManageRow]) -> Result<()> {
        for row in rows {
            self.out.serialize(row).context("writing to manage.csv")?;
        }
        self.out.flush().context("writing to manage.csv")
    }
}

/// `0:1;1:0-1`: each vCPU with the pCPUs it may run on.
fn pins(vm: &VmSample) -> String {
    let each: Vec<String> = vm
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{i}:{}", cpuset(&v.affinity)))
        .collect();
    each.join(";")
}

/// libvirt's cpuset syntax: `0-3,6`.
fn cpuset(pcpus: &[u32]) -> String {
    let mut sorted = pcpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{MIB, balloon, mem_vm, snapshot, vcpu, vm};

    fn clock() -> RunClock {
        RunClock::new(
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            10.0,
        )
    }

    /// Each record of `csv` as column → value.
    fn read(csv: &[u8]) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
        let mut r = csv::Reader::from_reader(csv);
        let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
        let rows = r
            .records()
            .map(|rec| {
                header
                    .iter()
                    .cloned()
                    .zip(rec.unwrap().iter().map(str::to_string))
                    .collect()
            })
            .collect();
        (header, rows)
    }

    #[test]
    fn decisions_csv_has_the_agreed_columns_and_units() {
        let mut a = mem_vm("a", balloon(1000, 50, 100), 2048);
        a.vcpus = vec![vcpu(None, 2, 0.0)];
        let snap = snapshot(12.5, 2, vec![a]);
        let grow = Decision::new(
            Action::SetMemory {
                vm: "a".into(),
                target_kib: 1100 * MIB,
            },
            "grow, with a comma",
        )
        .input("actual_mib", 1000u64)
        .input("rate_mib_s", 12.5);
        let pin = Decision::new(
            Action::Pin {
                vm: "a".into(),
                vcpu: 0,
                pcpus: vec![1],
            },
            "rebalance",
        );
        let mut out = DecisionCsv::new(Vec::new()).unwrap();
        for d in [&grow, &pin] {
            out.write(&DecisionRow::new(d, &snap, &clock())).unwrap();
        }
        let (header, rows) = read(out.out.get_ref());
        assert_eq!(header, DECISION_COLUMNS);
        let m = &rows[0];
        assert_eq!(m["time"], "2023-11-14T22:13:22.500Z");
        assert_eq!(
            (m["t_s"].as_str(), m["vm"].as_str(), m["kind"].as_str()),
            ("2.5", "a", "memory")
        );
        assert_eq!(
            (
                m["before"].as_str(),
                m["after"].as_str(),
                m["unit"].as_str()
            ),
            ("1000", "1100", "mib")
        );
        assert_eq!(
            (m["reason"].as_str(), m["inputs"].as_str()),
            ("grow, with a comma", "actual_mib=1000;rate_mib_s=12.5")
        );
        let p = &rows[1];
        assert_eq!(
            (
                p["kind"].as_str(),
                p["before"].as_str(),
                p["after"].as_str(),
                p["unit"].as_str()
            ),
            ("pin", "0:0-1", "0:1", "pcpus")
        );
    }

    #[test]
    fn an_empty_decision_log_still_has_its_header() {
        let out = DecisionCsv::new(Vec::new()).unwrap();
        assert_eq!(
            String::from_utf8(out.out.into_inner().unwrap()).unwrap(),
            format!("{}\n", DECISION_COLUMNS.join(","))
        );
    }

    #[test]
    fn manage_csv_rows_line_up_with_their_pcpu_columns() {
        let at = |t: f64, ran_s: f64, last_update_s: u64| {
            let mut a = mem_vm("a", balloon(1024, 300, last_update_s), 2048);
            a.vcpus = vec![vcpu(Some(1), 2, ran_s), vcpu(None, 2, ran_s / 2.0)];
            a.vcpus_current = 2;
            snapshot(t, 2, vec![a, vm("b", vec![vcpu(Some(0), 2, 0.0)])])
        };
        let (before, now) = (at(10.0, 4.0, 100), at(12.0, 5.0, 102));
        let mut out = ManageCsv::new(Vec::new(), 2).unwrap();
        out.write(&ManageRow::all(None, &before, &clock())).unwrap();
        out.write(&ManageRow::all(Some(&before), &now, &clock()))
            .unwrap();
        let (header, rows) = read(out.out.get_ref());
        assert_eq!(header[..MANAGE_COLUMNS.len()], MANAGE_COLUMNS);
        assert_eq!(header[MANAGE_COLUMNS.len()..], ["pcpu0_pct", "pcpu1_pct"]);
        let first = &rows[0];
        assert_eq!(
            (
                first["cpu_pct"].as_str(),
                first["pcpu0_pct"].as_str(),
                first["stats_fresh"].as_str()
            ),
            ("", "", "false")
        );
        let a = &rows[2];
        assert_eq!(
            (a["t_s"].as_str(), a["vm"].as_str(), a["pins"].as_str()),
            ("2.0", "a", "0:1;1:0-1")
        );
        assert_eq!(
            (
                a["cpu_pct"].as_str(),
                a["pcpu0_pct"].as_str(),
                a["pcpu1_pct"].as_str()
            ),
            ("75.0", "25.0", "50.0")
        );
        assert_eq!(
            (
                a["actual_mib"].as_str(),
                a["unused_mib"].as_str(),
                a["stats_fresh"].as_str()
            ),
            ("1024.0", "300.0", "true")
        );
        assert_eq!(
            (a["max_mib"].as_str(), a["host_free_mib"].as_str()),
            ("2048", "16384")
        );
        let b = &rows[3];
        assert_eq!(
            (
                b["vm"].as_str(),
                b["actual_mib"].as_str(),
                b["pcpu1_pct"].as_str()
            ),
            ("b", "", "50.0")
        );
    }

    #[test]
    fn cpusets_in_libvirt_syntax() {
        assert_eq!(cpuset(&[8, 0, 1, 2, 5, 7]), "0-2,5,7-8");
        assert_eq!(cpuset(&[3]), "3");
    }
}
