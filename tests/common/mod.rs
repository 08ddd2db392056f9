//! The recorded run in `tests/fixtures/run/`, and the deterministic generator
//! that made it (no VM runs in these tests): three VMs on a two-pCPU host for
//! 30 one-second samples. vm-1 runs a memory hog that the manager grows, then
//! gets a second vCPU; vm-2 idles and is shrunk step by step; vm-3 is CPU-bound,
//! has no balloon stats (a gap in its balloon columns) and is moved from pCPU 0
//! to pCPU 1 at 10 s.
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use vmlab::metrics::row::{MetricsRow, MetricsWriter};
use vmlab::metrics::run::{BENCH_CSV, BenchResult, DECISIONS_CSV, DecisionRecord, METRICS_CSV};

pub mod http;
pub mod lab;

pub const PCPUS: usize = 2;
pub const VMS: [&str; 3] = ["vm-1", "vm-2", "vm-3"];
pub const SAMPLES: usize = 30;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run")
}

/// 2024-05-01T12:00:00Z.
pub fn run_start() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_564_800)
}

/// A deterministic wobble in [-1, 1].
fn wobble(k: usize, vm: usize) -> f64 {
    let (k, vm) = (k as f64, vm as f64);
    0.7 * (1.7 * k + 2.3 * vm).sin() + 0.3 * (0.43 * k + vm).sin()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

struct Change {
    t_s: f64,
    vm: usize,
    kind: &'static str,
    before: &'static str,
    after: &'static str,
    unit: &'static str,
    reason: &'static str,
    inputs: &'static str,
}

/// The manager's decisions, each 0.4 s before the sample that shows it.
const CHANGES: [Change; 9] = [
    Change {
        t_s: 5.6,
        vm: 0,
        kind: "memory",
        before: "512",
        after: "600",
        unit: "mib",
        reason: "used above high threshold",
        inputs: "used_mib=320;actual_mib=512;rate_mib_s=60",
    },
    Change {
        t_s: 7.6,
        vm: 0,
        kind: "memory",
        before: "600",
        after: "700",
        unit: "mib",
        reason: "used above high threshold",
        inputs: "used_mib=440;actual_mib=600;rate_mib_s=60",
    },
    Change {
        t_s: 9.6,
        vm: 0,
        kind: "memory",
        before: "700",
        after: "768",
        unit: "mib",
        reason: "used above high threshold, capped at max",
        inputs: "used_mib=560;actual_mib=700;max_mib=768",
    },
    Change {
        t_s: 9.6,
        vm: 2,
        kind: "pin",
        before: "0:0",
        after: "0:1",
        unit: "pcpus",
        reason: "pCPU 0 overloaded, pCPU 1 idle",
        inputs: "pcpu0_pct=100;pcpu1_pct=0",
    },
    Change {
        t_s: 11.6,
        vm: 1,
        kind: "memory",
        before: "512",
        after: "480",
        unit: "mib",
        reason: "unused above reserve, release gradually",
        inputs: "unused_mib=420;reserve_mib=100",
    },
    Change {
        t_s: 17.6,
        vm: 1,
        kind: "memory",
        before: "480",
        after: "440",
        unit: "mib",
        reason: "unused above reserve, release gradually",
        inputs: "unused_mib=390;reserve_mib=100",
    },
    Change {
        t_s: 19.6,
        vm: 0,
        kind: "vcpus",
        before: "1",
        after: "2",
        unit: "vcpus",
        reason: "cpu above 90% for 3 intervals",
        inputs: "cpu_pct=93;intervals=3",
    },
    Change {
        t_s: 19.6,
        vm: 0,
        kind: "pin",
        before: "0:0",
        after: "0:0;1:0",
        unit: "pcpus",
        reason: "new vCPU placed on the least loaded pCPU",
        inputs: "pcpu0_pct=94;pcpu1_pct=95",
    },
    Change {
        t_s: 23.6,
        vm: 1,
        kind: "memory",
        before: "440",
        after: "400",
        unit: "mib",
        reason: "unused above reserve, release gradually",
        inputs: "unused_mib=350;reserve_mib=100",
    },
];

fn at(t_s: f64) -> SystemTime {
    run_start() + Duration::from_secs_f64(t_s)
}

/// The value a decision of `kind` for `vm` set by sample `k`, else `initial`.
fn latest<'a>(k: usize, vm: usize, kind: &str, initial: &'a str) -> &'a str {
    CHANGES
        .iter()
        .filter(|c| c.vm == vm && c.kind == kind && c.t_s < k as f64)
        .fold(initial, |_, c| c.after)
}

pub fn decisions() -> Vec<DecisionRecord> {
    CHANGES
        .iter()
        .map(|c| DecisionRecord {
            time: humantime::format_rfc3339_millis(at(c.t_s)).to_string(),
            t_s: c.t_s,
            vm: VMS[c.vm].to_string(),
            kind: c.kind.to_string(),
            before: c.before.to_string(),
            after: c.after.to_string(),
            unit: c.unit.to_string(),
            reason: c.reason.to_string(),
            inputs: c.inputs.to_string(),
        })
        .collect()
}

/// The rows of sample `k` (at `k` seconds), one per VM; any `k` works, so a
/// test can keep appending after the recorded 30.
pub fn sample_rows(k: usize) -> Vec<MetricsRow> {
    let vcpus = |vm| latest(k, vm, "vcpus", "1").parse::<u32>().unwrap();
    // Each pCPU carries the vCPUs pinned to it, at their VM's busy share.
    let mut pcpu = [0.0f64; PCPUS];
    for vm in 0..VMS.len() {
        for pair in latest(k, vm, "pin", "0:0").split(';') {
            let pcpu_index: usize = pair.split_once(':').unwrap().1.parse().unwrap();
            pcpu[pcpu_index] += cpu_pct(k, vm);
        }
    }
    let pcpu_pct: Vec<Option<f64>> = pcpu.iter().map(|p| Some(round2(p.min(100.0)))).collect();
    (0..VMS.len())
        .map(|vm| {
            let mut row = MetricsRow::new(at(k as f64), run_start(), VMS[vm]);
            let balloon: Option<f64> =
                (vm != 2).then(|| latest(k, vm, "memory", "512").parse().unwrap());
            let total = balloon.unwrap_or(512.0) - 24.0;
            let used = match vm {
                0 => 80.0 + (k.saturating_sub(1) as f64 * 60.0).min(480.0),
                1 => 60.0 + 4.0 * wobble(k, vm),
                _ => 70.0 + wobble(k, vm),
            };
            let used = round2(used.min(total - 20.0));
            row.cpu_pct = Some(cpu_pct(k, vm));
            row.mem_total_mib = Some(total);
            row.mem_used_mib = Some(used);
            row.mem_available_mib = Some(round2(total - used));
            row.disk_read_kib_s = Some(if vm == 1 {
                round2(8.0 + 4.0 * wobble(k, 5))
            } else {
                0.0
            });
            row.disk_write_kib_s = Some(if vm == 1 {
                round2(40.0 + 20.0 * wobble(k, 6))
            } else {
                0.0
            });
            row.net_rx_bytes = Some(((vm + 1) * 1_000 * k + 20_000) as u64);
            row.net_tx_bytes = Some(((vm + 1) * 600 * k + 9_000) as u64);
            row.balloon_actual_mib = balloon;
            row.balloon_unused_mib = balloon.map(|b| round2(b - 24.0 - used));
            row.vcpus = Some(vcpus(vm));
            row.pins = latest(k, vm, "pin", "0:0").to_string();
            row.domain_cpu_s = Some(round2((1..=k).map(|j| cpu_pct(j, vm)).sum::<f64>() / 100.0));
            row.pcpu_pct = pcpu_pct.clone();
            row.mem_floor_mib = Some(256.0);
            row.mem_high_pct = Some(80.0);
            row.mem_low_pct = Some(40.0);
            let since_previous: Vec<String> = CHANGES
                .iter()
                .filter(|c| c.vm == vm && c.t_s < k as f64 && c.t_s >= k as f64 - 1.0)
                .map(|c| format!("{} {}->{} {}", c.kind, c.before, c.after, c.unit))
                .collect();
            row.decisions = since_previous.join("; ");
            row
        })
        .collect()
}

/// Busy share of `vm` at sample `k`: vm-1 halves when it gets its second vCPU.
fn cpu_pct(k: usize, vm: usize) -> f64 {
    let (base, spread) = [
        (if k < 20 { 92.0 } else { 45.0 }, 3.0),
        (2.0, 1.5),
        (95.0, 3.0),
    ][vm];
    round2((base + spread * wobble(k, vm)).clamp(0.0, 100.0))
}

pub fn bench_results() -> Vec<BenchResult> {
    let cells = [(1, 512, 0.80), (2, 512, 1.48), (2, 1024, 1.55)];
    let mut results = Vec::new();
    for (cell, (vcpus, memory_mib, gflops)) in cells.into_iter().enumerate() {
        for (rep, vm) in VMS.iter().enumerate() {
            let valid = !(cell == 2 && rep == 2);
            let value = gflops * (1.0 + 0.04 * wobble(rep, cell));
            results.push(BenchResult {
                run_id: "fixture".into(),
                time: humantime::format_rfc3339_millis(at(31.0 + (cell * 3 + rep) as f64 * 40.0))
                    .to_string(),
                vm: vm.to_string(),
                vcpus,
                memory_mib,
                benchmark: "hpcg".into(),
                params: "nx=16;ny=16;nz=16;rt=30".into(),
                metric: "gflops".into(),
                value: valid.then(|| (value * 1000.0).round() / 1000.0),
                unit: "GFLOP/s".into(),
                valid,
                duration_s: Some(30.0 + rep as f64),
            });
        }
    }
    results
}

/// Writes the whole recorded run (`samples` samples) into `dir`.
pub fn write_run(dir: &Path, samples: usize) {
    let mut metrics = MetricsWriter::create(&dir.join(METRICS_CSV), PCPUS).unwrap();
    for k in 1..=samples {
        metrics.write_sample(&sample_rows(k)).unwrap();
    }
    write_csv(&dir.join(DECISIONS_CSV), &decisions());
    write_csv(&dir.join(BENCH_CSV), &bench_results());
}

fn write_csv<T: serde::Serialize>(path: &Path, records: &[T]) {
    let mut writer = csv::Writer::from_path(path).unwrap();
    for record in records {
        writer.serialize(record).unwrap();
    }
    writer.flush().unwrap();
}

/// Appends samples `ks` to the run in `dir`, as `vmlab monitor` would while a
/// dashboard follows it.
pub fn append_samples(dir: &Path, ks: std::ops::Range<usize>) {
    let mut writer = MetricsWriter::new(Vec::new(), PCPUS).unwrap();
    for k in ks {
        writer.write_sample(&sample_rows(k)).unwrap();
    }
    let bytes = writer.into_inner().unwrap();
    let header_end = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(METRICS_CSV))
        .unwrap();
    std::io::Write::write_all(&mut file, &bytes[header_end..]).unwrap();
}

/// Sets `column` of record `record` (1 is the header) of `path` to `text`.
pub fn set_cell(path: &Path, record: usize, column: &str, text: &str) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    let mut records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let index = records[0].iter().position(|h| h == column).unwrap();
    let mut cells: Vec<String> = records[record - 1].iter().map(str::to_string).collect();
    cells[index] = text.to_string();
    records[record - 1] = csv::StringRecord::from(cells);
    let mut writer = csv::Writer::from_path(path).unwrap();
    for r in &records {
        writer.write_record(r).unwrap();
    }
    writer.flush().unwrap();
}
