//! `vmlab results compare A B`: per cell and metric, the medians of two
//! runs (over their VMs and repeats), the change from A to B in %, and
//! whether the change is beyond the runs' own noise:
//!
//! - with at least [`RANK_TEST_MIN`] values on each side, the two-sided
//!   Mann-Whitney rank test at p < [`RANK_TEST_ALPHA`];
//! - with fewer, the ranges (min to max) of A and B do not overlap;
//! - with a single value on a side there is no spread to judge: `-`.
//!
//! Runs from different hosts, accels, VM shapes or parameters are compared
//! all the same, with a warning naming the difference.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use serde::Serialize;

use super::record::RecordedRun;
use super::run::Row;
use crate::stats::{Spread, mann_whitney_p};
use crate::table::{Align, Table};

/// Values per side from which the rank test decides.
pub const RANK_TEST_MIN: usize = 5;
/// The rank test's significance level.
pub const RANK_TEST_ALPHA: f64 = 0.05;

/// One side of a line: median, range and count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Side {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// One cell and metric of both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub cell: usize,
    pub metric: String,
    pub unit: String,
    pub a: Side,
    pub b: Side,
    /// (B − A) / A of the medians, in %.
    pub change_pct: f64,
    /// `None` when a side has a single value.
    pub beyond_noise: Option<bool>,
    /// `rank-test p=…`, `ranges`, or `one value`.
    pub rule: String,
}

/// A comparison of run A with run B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub benchmark: String,
    /// What differs between the runs besides their numbers.
    pub warnings: Vec<String>,
    pub lines: Vec<Line>,
}

/// Compares two runs of the same benchmark.
pub fn compare(a: (&RecordedRun, &[Row]), b: (&RecordedRun, &[Row])) -> Result<Comparison> {
    let ((run_a, rows_a), (run_b, rows_b)) = (a, b);
    if run_a.benchmark != run_b.benchmark {
        bail!(
            "{} is a `{}` run and {} a `{}` run; compare runs of one benchmark",
            run_a.run_id,
            run_a.benchmark,
            run_b.run_id,
            run_b.benchmark
        );
    }
    let mut lines = Vec::new();
    for (cell, metric, unit) in keys(run_a, rows_a) {
        let values = |rows: &[Row]| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.cell == cell && r.metric == metric && r.unit == unit)
                .filter_map(|r| r.value)
                .collect()
        };
        let (va, vb) = (values(rows_a), values(rows_b));
        let (Some(sa), Some(sb)) = (Spread::of(&va), Spread::of(&vb)) else {
            continue;
        };
        let (beyond_noise, rule) = beyond_noise(&va, &vb, sa, sb);
        lines.push(Line {
            cell,
            change_pct: (sb.median - sa.median) / sa.median.abs() * 100.0,
            metric,
            unit,
            a: side(sa, va.len()),
            b: side(sb, vb.len()),
            beyond_noise,
            rule,
        });
    }
    Ok(Comparison {
        a: run_a.run_id.clone(),
        b: run_b.run_id.clone(),
        benchmark: run_a.benchmark.clone(),
        warnings: differences(run_a, run_b),
        lines,
    })
}

fn side(s: Spread, n: usize) -> Side {
    Side {
        median: s.median,
        min: s.min,
        max: s.max,
        n,
    }
}

/// The (cell, metric, unit) of A to compare: its judged metrics when it
/// declares them, else every metric with a value, in the order of its rows.
fn keys(run: &RecordedRun, rows: &[Row]) -> Vec<(usize, String, String)> {
    let mut keys = Vec::new();
    for r in rows.iter().filter(|r| r.value.is_some()) {
        if !run.metrics.is_empty() && !run.metrics.contains_key(&r.metric) {
            continue;
        }
        let key = (r.cell, r.metric.clone(), r.unit.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The noise rule of the module's doc, and which branch decided.
fn beyond_noise(a: &[f64], b: &[f64], sa: Spread, sb: Spread) -> (Option<bool>, String) {
    if a.len() < 2 || b.len() < 2 {
        return (None, "one value".to_owned());
    }
    if a.len() >= RANK_TEST_MIN && b.len() >= RANK_TEST_MIN {
        let p = mann_whitney_p(a, b);
        return (Some(p < RANK_TEST_ALPHA), format!("rank test p={p:.3}"));
    }
    (
        Some(sa.max < sb.min || sb.max < sa.min),
        "ranges".to_owned(),
    )
}

/// What differs between two runs of one benchmark: host, accel, VM shapes
/// per cell, parameters.
fn differences(a: &RecordedRun, b: &RecordedRun) -> Vec<String> {
    let mut out = Vec::new();
    let host = |r: &RecordedRun| {
        format!(
            "{}, {} cores, {} MiB",
            r.host.cpu_model, r.host.cores, r.host.memory_mib
        )
    };
    if host(a) != host(b) {
        out.push(format!("hosts differ: {} vs {}", host(a), host(b)));
    }
    let accels = |r: &RecordedRun| -> String {
        let set: BTreeSet<&str> = r.vms.iter().map(|vm| r.accel_of(vm)).collect();
        set.into_iter().collect::<Vec<_>>().join("+")
    };
    if accels(a) != accels(b) {
        out.push(format!("accels differ: {} vs {}", accels(a), accels(b)));
    }
    for cell in &a.cells {
        let index = cell.cell.index;
        let shapes = |r: &RecordedRun| -> String {
            let set: BTreeSet<String> = r
                .cells
                .iter()
                .filter(|c| c.cell.index == index)
                .flat_map(|c| &c.applied)
                .map(|(vm, applied)| {
                    let (vcpus, memory_mib) = r
                        .shape_of(index, vm)
                        .map_or((applied.vcpus, applied.memory_mib), |s| {
                            (s.vcpus, s.memory_mib)
                        });
                    format!("{vcpus} vCPU/{memory_mib} MiB")
                })
                .collect();
            set.into_iter().collect::<Vec<_>>().join(", ")
        };
        if shapes(a) != shapes(b) {
            out.push(format!(
                "cell {index}: VM shapes differ: {} vs {}",
                or_none(shapes(a)),
                or_none(shapes(b))
            ));
        }
    }
    if a.params != b.params {
        let show = |r: &RecordedRun| {
            r.params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        };
        out.push(format!("parameters differ: {} vs {}", show(a), show(b)));
    }
    out
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "none".to_owned()
    } else {
        text
    }
}

impl Comparison {
    pub fn table(&self) -> Table {
        use Align::{Left, Right};
        let mut table = Table::new(&[
            ("CELL", Right),
            ("METRIC", Left),
            ("A MEDIAN", Right),
            ("B MEDIAN", Right),
            ("CHANGE", Right),
            ("UNIT", Left),
            ("N A/B", Right),
            ("BEYOND NOISE", Left),
        ]);
        for l in &self.lines {
            table.row([
                l.cell.to_string(),
                l.metric.clone(),
                format!("{:.4}", l.a.median),
                format!("{:.4}", l.b.median),
                format!("{:+.1} %", l.change_pct),
                l.unit.clone(),
                format!("{}/{}", l.a.n, l.b.n),
                match l.beyond_noise {
                    Some(true) => format!("yes ({})", l.rule),
                    Some(false) => format!("no ({})", l.rule),
                    None => format!("- ({})", l.rule),
                },
            ]);
        }
        table
    }

    /// The warnings, one line each (`warning: …`), for stderr.
    pub fn warning_lines(&self) -> String {
        self.warnings
            .iter()
            .map(|w| format!("warning: {w}\n"))
            .collect()
    }

    /// A heading, the warnings as a quote, the table.
    pub fn markdown(&self) -> String {
        let mut out = format!("### `{}`: {} → {}\n\n", self.benchmark, self.a, self.b);
        for w in &self.warnings {
            out += &format!("> **warning**: {w}\n");
        }
        if !self.warnings.is_empty() {
            out.push('\n');
        }
        out + &self.table().markdown()
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::tests::recorded;
    use super::*;

    #[test]
    fn two_recorded_stream_runs() {
        let a = recorded("20261207-220332-stream");
        let b = recorded("20261207-224117-stream");
        let c = compare((&a.0, &a.1), (&b.0, &b.1)).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        insta::assert_snapshot!(c.table().to_string());
        insta::assert_snapshot!(c.markdown());
        insta::assert_snapshot!(serde_json::to_string_pretty(&c.lines[0]).unwrap());
    }

    #[test]
    fn differences_are_named() {
        let a = recorded("20261207-220332-stream");
        let (mut run_b, rows_b) = recorded("20261207-224117-stream");
        run_b.host.cores = 4;
        run_b.accel = vec![
            ("e2b-1".into(), "kvm".into()),
            ("e2b-2".into(), "kvm".into()),
        ];
        run_b.cells[0].applied[1].1.memory_mib = 1024;
        run_b.params[0].1 = "200000".into();
        let c = compare((&a.0, &a.1), (&run_b, &rows_b)).unwrap();
        assert_eq!(
            c.warnings,
            [
                "hosts differ: AMD EPYC, 2 cores, 24105 MiB vs AMD EPYC, 4 cores, 24105 MiB",
                "accels differ: tcg vs kvm",
                "cell 1: VM shapes differ: 1 vCPU/512 MiB vs 1 vCPU/1024 MiB, 1 vCPU/512 MiB",
                "parameters differ: array_size=100000;ntimes=10 vs array_size=200000;ntimes=10",
            ]
        );
        let hpcg = recorded("20261207-224129-hpcg");
        assert_eq!(
            compare((&a.0, &a.1), (&hpcg.0, &hpcg.1))
                .unwrap_err()
                .to_string(),
            "20261207-220332-stream is a `stream` run and 20261207-224129-hpcg a `hpcg` run; compare runs of one benchmark"
        );
    }

    #[test]
    fn the_noise_rule_by_sample_size() {
        let s = |v: &[f64]| Spread::of(v).unwrap();
        let (a, b) = ([1.0, 2.0], [3.0, 4.0]);
        assert_eq!(beyond_noise(&a, &b, s(&a), s(&b)).0, Some(true));
        let b = [1.5, 4.0];
        assert_eq!(beyond_noise(&a, &b, s(&a), s(&b)).0, Some(false));
        let b = [9.0];
        assert_eq!(beyond_noise(&a, &b, s(&a), s(&b)).0, None);
        // Five a side: the rank test. Ranges overlap by one value, yet
        // the ranks say different (U = 1: p = 2 · 2/252).
        let a = [1.0, 2.0, 3.0, 4.0, 6.0];
        let b = [5.0, 7.0, 8.0, 9.0, 10.0];
        let (beyond, rule) = beyond_noise(&a, &b, s(&a), s(&b));
        assert_eq!((beyond, rule.as_str()), (Some(true), "rank test p=0.016"));
        let b = [1.5, 2.5, 3.5, 4.5, 5.5];
        assert_eq!(beyond_noise(&a, &b, s(&a), s(&b)).0, Some(false));
    }
}
