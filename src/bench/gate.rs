//! The gate of `vmlab bench --baseline`: each judged metric of each VM and
//! cell, its median over the cell's repeats, against its reference. A
//! value worse than the reference by more than the tolerance is a
//! regression; better by more than the tolerance, an improvement; within
//! it, ok. A metric without a reference is `no-reference`, never a silent
//! pass: it is listed, and `--require-reference` fails the run on it.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::record::{RecordedRun, RunRecord};
use super::reference::{References, samples};
use super::run::{Row, save_record};
use crate::stats::Spread;
use crate::table::{Align, Table};
use crate::workload::manifest::{Better, Workload};

/// `--baseline PATH [--require-reference]`, loaded and checked before a run.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub path: PathBuf,
    pub refs: References,
    pub require_reference: bool,
}

impl Baseline {
    /// Loads the baseline and checks it can judge `workload`.
    pub fn open(path: &Path, require_reference: bool, workload: &Workload) -> Result<Baseline> {
        let refs = References::load(path)?;
        refs.check_for(path, &workload.name, &workload.output.metrics)?;
        Ok(Baseline {
            path: path.to_owned(),
            refs,
            require_reference,
        })
    }

    /// Judges the finished run in `run_dir` (its `run.json` as written,
    /// and `rows`) and records the verdicts in `run.json`.
    pub fn judge_run(
        &self,
        run_dir: &Path,
        record: &mut RunRecord,
        rows: &[Row],
    ) -> Result<GateRecord> {
        let run = RecordedRun::read(run_dir)?;
        let gate = GateRecord {
            baseline: self.path.display().to_string(),
            require_reference: self.require_reference,
            verdicts: judge(&run, rows, &self.refs),
        };
        record.gate = Some(gate.clone());
        save_record(run_dir, record)?;
        Ok(gate)
    }
}

/// A gated run (`--baseline`): the baseline, and a verdict per VM, cell
/// and judged metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// As given to `--baseline`.
    pub baseline: String,
    pub require_reference: bool,
    pub verdicts: Vec<Judged>,
}

/// One metric of one VM in one cell against its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub vm: String,
    pub cell: usize,
    pub metric: String,
    pub unit: String,
    /// The median over the cell's repeats.
    pub value: f64,
    pub repeats: usize,
    pub reference: Option<f64>,
    pub tolerance_pct: Option<f64>,
    /// (value − reference) / reference, in %.
    pub change_pct: Option<f64>,
    pub verdict: Verdict,
}

/// A metric's verdict against its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Within the tolerance.
    Ok,
    /// Worse than the reference by more than the tolerance.
    Regression,
    /// Better than the reference by more than the tolerance.
    Improvement,
    /// No reference for this benchmark, parameters, VM shape, accel and metric.
    NoReference,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Regression => "regression",
            Self::Improvement => "improvement",
            Self::NoReference => "no-reference",
        })
    }
}

/// What a gated run comes to, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Some metric regressed.
    Regression,
    /// `--require-reference` and some metric had none.
    MissingReference,
    Pass,
}

/// `value` against `reference` within `tolerance_pct`: the verdict and the
/// change in % of the reference.
pub fn verdict(value: f64, reference: f64, tolerance_pct: f64, better: Better) -> (Verdict, f64) {
    let change_pct = (value - reference) / reference.abs() * 100.0;
    let gain_pct = match better {
        Better::Higher => change_pct,
        Better::Lower => -change_pct,
    };
    let verdict = if gain_pct < -tolerance_pct {
        Verdict::Regression
    } else if gain_pct > tolerance_pct {
        Verdict::Improvement
    } else {
        Verdict::Ok
    };
    (verdict, change_pct)
}

/// Every judged metric of the run against `refs`.
pub fn judge(run: &RecordedRun, rows: &[Row], refs: &References) -> Vec<Judged> {
    samples(run, rows)
        .into_iter()
        .filter_map(|s| {
            let value = Spread::of(&s.values)?.median;
            let found = refs.find(&s.key, &s.metric);
            let (verdict, change_pct) = match found {
                Some(r) => {
                    let (v, c) = verdict(value, r.value, r.tolerance_pct, s.better);
                    (v, Some(c))
                }
                None => (Verdict::NoReference, None),
            };
            Some(Judged {
                vm: s.vm,
                cell: s.cell,
                metric: s.metric,
                unit: s.unit,
                value,
                repeats: s.values.len(),
                reference: found.map(|r| r.value),
                tolerance_pct: found.map(|r| r.tolerance_pct),
                change_pct,
                verdict,
            })
        })
        .collect()
}

impl GateRecord {
    pub fn outcome(&self) -> Outcome {
        let any = |v: Verdict| self.verdicts.iter().any(|j| j.verdict == v);
        if any(Verdict::Regression) {
            Outcome::Regression
        } else if self.require_reference && any(Verdict::NoReference) {
            Outcome::MissingReference
        } else {
            Outcome::Pass
        }
    }

    /// One line per VM, cell and metric.
    pub fn table(&self) -> Table {
        use Align::{Left, Right};
        let mut table = Table::new(&[
            ("VM", Left),
            ("CELL", Right),
            ("METRIC", Left),
            ("VALUE", Right),
            ("REFERENCE", Right),
            ("CHANGE", Right),
            ("TOLERANCE", Right),
            ("UNIT", Left),
            ("VERDICT", Left),
        ]);
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        for j in &self.verdicts {
            table.row([
                j.vm.clone(),
                j.cell.to_string(),
                j.metric.clone(),
                format!("{:.4}", j.value),
                or_dash(j.reference.map(|r| format!("{r:.4}"))),
                or_dash(j.change_pct.map(|c| format!("{c:+.1} %"))),
                or_dash(j.tolerance_pct.map(|t| format!("{t:.1} %"))),
                j.unit.clone(),
                j.verdict.to_string(),
            ]);
        }
        table
    }

    /// The verdicts counted: `2 ok, 1 regression, …`.
    pub fn counts(&self) -> String {
        [
            Verdict::Ok,
            Verdict::Regression,
            Verdict::Improvement,
            Verdict::NoReference,
        ]
        .iter()
        .filter_map(|v| {
            let n = self.verdicts.iter().filter(|j| j.verdict == *v).count();
            (n > 0).then(|| format!("{n} {v}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference::tests::recorded;
    use super::*;

    fn gate(verdicts: Vec<Judged>, require_reference: bool) -> GateRecord {
        GateRecord {
            baseline: "references.toml".into(),
            require_reference,
            verdicts,
        }
    }

    #[test]
    fn verdicts_follow_the_direction_and_the_tolerance() {
        use Better::{Higher, Lower};
        assert_eq!(verdict(90.0, 100.0, 5.0, Higher).0, Verdict::Regression);
        assert_eq!(verdict(96.0, 100.0, 5.0, Higher).0, Verdict::Ok);
        assert_eq!(
            verdict(95.0, 100.0, 5.0, Higher).0,
            Verdict::Ok,
            "at the edge"
        );
        assert_eq!(verdict(110.0, 100.0, 5.0, Higher).0, Verdict::Improvement);
        assert_eq!(verdict(110.0, 100.0, 5.0, Lower).0, Verdict::Regression);
        assert_eq!(verdict(90.0, 100.0, 5.0, Lower).0, Verdict::Improvement);
        assert_eq!(verdict(90.0, 100.0, 5.0, Higher).1, -10.0);
    }

    /// The recorded HPCG run against references from itself: all ok; 10 %
    /// slower, a regression at 5 %; 3 % slower, within it.
    #[test]
    fn a_ten_percent_slower_hpcg_is_a_regression_at_five_percent() {
        let (run, rows) = recorded("20261207-224129-hpcg");
        let mut refs = References::from_run(&run, &rows);
        for r in &mut refs.references {
            r.tolerance_pct = 5.0;
        }
        let slower = |factor: f64| -> Vec<Row> {
            rows.iter()
                .cloned()
                .map(|mut r| {
                    if r.metric.ends_with("_gflop_per_s") {
                        r.value = r.value.map(|v| v * factor);
                    }
                    r
                })
                .collect()
        };
        let same = judge(&run, &rows, &refs);
        assert_eq!(same.len(), 6, "hpcg's six judged metrics");
        assert!(same.iter().all(|j| j.verdict == Verdict::Ok), "{same:?}");

        let g = gate(judge(&run, &slower(0.9), &refs), false);
        let rating = g
            .verdicts
            .iter()
            .find(|j| j.metric == "rating_gflop_per_s")
            .unwrap();
        assert_eq!(rating.verdict, Verdict::Regression);
        assert!((rating.change_pct.unwrap() + 10.0).abs() < 1e-9);
        assert_eq!(g.outcome(), Outcome::Regression);
        assert_eq!(g.counts(), "6 regression");

        let g = gate(judge(&run, &slower(0.97), &refs), false);
        assert_eq!(g.outcome(), Outcome::Pass);
        assert_eq!(g.counts(), "6 ok");
    }

    #[test]
    fn a_missing_reference_is_listed_and_fails_only_when_required() {
        let (run, rows) = recorded("20261207-224129-hpcg");
        let mut refs = References::from_run(&run, &rows);
        // Another VM shape: nothing matches.
        for r in &mut refs.references {
            r.memory_mib = 1024;
        }
        let verdicts = judge(&run, &rows, &refs);
        assert!(verdicts.iter().all(|j| j.verdict == Verdict::NoReference));
        assert_eq!(gate(verdicts.clone(), false).outcome(), Outcome::Pass);
        assert_eq!(
            gate(verdicts.clone(), true).outcome(),
            Outcome::MissingReference
        );
        let table = gate(verdicts[..1].to_vec(), true).table().to_string();
        insta::assert_snapshot!(table, @r"
        VM     CELL  METRIC               VALUE  REFERENCE  CHANGE  TOLERANCE  UNIT     VERDICT
        e2b-1     1  rating_gflop_per_s  0.0383          -       -          -  GFLOP/s  no-reference
        ");
    }
}
