//! References: what a benchmark's judged metrics should measure on a given
//! VM shape, as ReFrame keeps per-system references. A reference is keyed
//! by benchmark, parameters, VM shape (vCPUs, memory) and accel, and gives
//! a value, a tolerance in % and which way is better. They live in a
//! `references.toml` (written by `vmlab results reference RUN`) or come
//! from an earlier run directory directly (`--baseline results/<run-id>`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::record::{RecordedRun, Shape};
use super::run::{Row, read_rows};
use crate::stats::{Spread, cv_pct};
use crate::workload::manifest::{Better, MetricSpec};

/// `references.toml`'s own version.
pub const SCHEMA: u32 = 1;
/// The narrowest tolerance `results reference` writes: a run's own spread
/// says little about the next run's with few repeats.
pub const MIN_TOLERANCE_PCT: f64 = 5.0;
/// `results reference` writes this many CVs of the run as the tolerance
/// (when that is wider than [`MIN_TOLERANCE_PCT`]).
pub const TOLERANCE_CVS: f64 = 3.0;

/// Where a reference applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub benchmark: String,
    pub params: BTreeMap<String, String>,
    /// The VM's shape in the cell ([`Shape`]): the cell's vCPUs and
    /// memory, or the VM's own.
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `kvm` or `tcg`.
    pub accel: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) on {} vCPU, {} MiB, {}",
            self.benchmark,
            join_params(&self.params),
            self.vcpus,
            self.memory_mib,
            self.accel
        )
    }
}

/// `k=v;k=v`, as bench.csv writes parameters.
pub fn join_params(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// One metric's reference: where it applies (the fields of a [`Key`]),
/// then the metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub benchmark: String,
    pub params: BTreeMap<String, String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub accel: String,
    pub metric: String,
    pub unit: String,
    pub value: f64,
    pub tolerance_pct: f64,
    pub better: Better,
}

impl Reference {
    pub fn key(&self) -> Key {
        Key {
            benchmark: self.benchmark.clone(),
            params: self.params.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            accel: self.accel.clone(),
        }
    }
}

/// A `references.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct References {
    pub schema: u32,
    #[serde(default, rename = "reference")]
    pub references: Vec<Reference>,
}

/// One judged metric of one VM in one cell, over the cell's repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub vm: String,
    pub cell: usize,
    pub key: Key,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub values: Vec<f64>,
}

/// The judged metrics (`metrics` of `run.json`) of every VM and cell that
/// gave values, in the order of the rows.
pub fn samples(run: &RecordedRun, rows: &[Row]) -> Vec<Sample> {
    let params: BTreeMap<String, String> = run.params.iter().cloned().collect();
    let mut out: Vec<Sample> = Vec::new();
    for row in rows {
        let (Some(value), Some(spec)) = (row.value, run.metrics.get(&row.metric)) else {
            continue;
        };
        // The shape the cell asked for; runs that predate it: what the VM had.
        let shape = run.shape_of(row.cell, &row.vm).unwrap_or(Shape {
            vcpus: row.vcpus,
            memory_mib: row.memory_mib,
        });
        let key = Key {
            benchmark: run.benchmark.clone(),
            params: params.clone(),
            vcpus: shape.vcpus,
            memory_mib: shape.memory_mib,
            accel: run.accel_of(&row.vm).to_owned(),
        };
        match out.iter_mut().find(|s| {
            s.vm == row.vm && s.cell == row.cell && s.metric == row.metric && s.key == key
        }) {
            Some(s) => s.values.push(value),
            None => out.push(Sample {
                vm: row.vm.clone(),
                cell: row.cell,
                key,
                metric: row.metric.clone(),
                unit: row.unit.clone(),
                better: spec.better,
                values: vec![value],
            }),
        }
    }
    out
}

impl References {
    /// References from a good run: per key and metric, the median over
    /// its VMs and repeats, and a tolerance of [`TOLERANCE_CVS`] times the
    /// values' CV, at least [`MIN_TOLERANCE_PCT`] (rounded up to 0.1 %).
    pub fn from_run(run: &RecordedRun, rows: &[Row]) -> References {
        let mut pooled: BTreeMap<(Key, String), (String, Better, Vec<f64>)> = BTreeMap::new();
        for s in samples(run, rows) {
            pooled
                .entry((s.key, s.metric))
                .or_insert_with(|| (s.unit, s.better, Vec::new()))
                .2
                .extend(s.values);
        }
        let references = pooled
            .into_iter()
            .filter_map(|((key, metric), (unit, better, values))| {
                let median = Spread::of(&values)?.median;
                let spread = cv_pct(&values).unwrap_or(0.0) * TOLERANCE_CVS;
                Some(Reference {
                    benchmark: key.benchmark,
                    params: key.params,
                    vcpus: key.vcpus,
                    memory_mib: key.memory_mib,
                    accel: key.accel,
                    metric,
                    unit,
                    value: median,
                    tolerance_pct: (spread.max(MIN_TOLERANCE_PCT) * 10.0).ceil() / 10.0,
                    better,
                })
            })
            .collect();
        References {
            schema: SCHEMA,
            references,
        }
    }

    /// A run directory (its references, as [`References::from_run`]) or a
    /// `references.toml`; anything else is an error naming the path.
    pub fn load(path: &Path) -> Result<References> {
        if path.is_dir() {
            let run = RecordedRun::read(path)?;
            let rows = read_rows(path)?;
            return Ok(Self::from_run(&run, &rows));
        }
        if !path.exists() {
            bail!(
                "baseline `{}` does not exist; give a run directory (results/<run-id>) or a references file (`vmlab results reference RUN > references.toml`)",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading baseline `{}`", path.display()))?;
        let refs: References = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
            anyhow::anyhow!(
                "baseline `{}`:{line}: {}; it is not a references file (`vmlab results reference RUN` writes one)",
                path.display(),
                e.message()
            )
        })?;
        if refs.schema != SCHEMA {
            bail!(
                "baseline `{}` has schema {}, this vmlab reads {SCHEMA}; write it again with `vmlab results reference RUN`",
                path.display(),
                refs.schema
            );
        }
        Ok(refs)
    }

    /// Whether these references can judge `benchmark`, whose judged
    /// metrics are `metrics`: some are for it, each names one of its
    /// metrics, in its unit.
    pub fn check_for(
        &self,
        baseline: &Path,
        benchmark: &str,
        metrics: &BTreeMap<String, MetricSpec>,
    ) -> Result<()> {
        let mine: Vec<&Reference> = self
            .references
            .iter()
            .filter(|r| r.benchmark == benchmark)
            .collect();
        if mine.is_empty() {
            let mut others: Vec<&str> = self
                .references
                .iter()
                .map(|r| r.benchmark.as_str())
                .collect();
            others.sort_unstable();
            others.dedup();
            bail!(
                "baseline `{}` has no reference for `{benchmark}` (it has: {}); give the baseline of a `{benchmark}` run",
                baseline.display(),
                if others.is_empty() {
                    "none".to_owned()
                } else {
                    others.join(", ")
                }
            );
        }
        for r in mine {
            match metrics.get(&r.metric) {
                None => bail!(
                    "baseline `{}`: `{benchmark}` has no judged metric `{}`; its judged metrics: {}",
                    baseline.display(),
                    r.metric,
                    metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(spec) if spec.unit != r.unit => bail!(
                    "baseline `{}`: `{benchmark}` `{}` is in {} there, vmlab measures it in {}; write the baseline again with `vmlab results reference RUN`",
                    baseline.display(),
                    r.metric,
                    r.unit,
                    spec.unit
                ),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The reference for this key and metric.
    pub fn find(&self, key: &Key, metric: &str) -> Option<&Reference> {
        self.references
            .iter()
            .find(|r| r.metric == metric && &r.key() == key)
    }

    /// As `references.toml`, with a header saying where it came from.
    pub fn to_toml(&self, from: &str) -> Result<String> {
        Ok(format!(
            "# vmlab references, from run {from} (`vmlab results reference`).\n\
             # Keyed by benchmark, params, vcpus, memory_mib and accel; a metric is a\n\
             # regression when it is worse than `value` by more than `tolerance_pct`.\n\n{}",
            toml::to_string(self)?
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::PathBuf;

    use super::*;

    pub(crate) fn fixture(run: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/results")
            .join(run)
    }

    pub(crate) fn recorded(run: &str) -> (RecordedRun, Vec<Row>) {
        let dir = fixture(run);
        (RecordedRun::read(&dir).unwrap(), read_rows(&dir).unwrap())
    }

    #[test]
    fn references_of_a_run_pool_its_vms_per_shape_and_round_the_tolerance_up() {
        let (run, rows) = recorded("20261207-220332-stream");
        let refs = References::from_run(&run, &rows);
        // Four judged metrics, one shape (both VMs: 1 vCPU, 512 MiB, TCG).
        assert_eq!(refs.references.len(), 4);
        let triad = refs
            .references
            .iter()
            .find(|r| r.metric == "triad_mb_per_s")
            .unwrap();
        // triad: 1862.1, 1993.3, 1959.2, 1962.2 → median 1960.7, CV 2.9 % → 3 CVs 8.8 %.
        assert_eq!(triad.value, 1960.7);
        assert_eq!(triad.tolerance_pct, 8.8);
        assert_eq!(
            (triad.vcpus, triad.memory_mib, triad.accel.as_str()),
            (1, 512, "tcg")
        );
        assert_eq!(triad.better, Better::Higher);
        // Written and read back, the same references.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("references.toml");
        std::fs::write(&file, refs.to_toml(&run.run_id).unwrap()).unwrap();
        assert_eq!(References::load(&file).unwrap(), refs);
        // A run directory as a baseline gives the same.
        assert_eq!(
            References::load(&fixture("20261207-220332-stream")).unwrap(),
            refs
        );
    }

    /// A reference follows the shape the cell asked for, not the balloon's
    /// size of the moment (a balloon still settling after a boot).
    #[test]
    fn the_recorded_shape_keys_a_reference() {
        let (mut run, rows) = recorded("20261207-220332-stream");
        let before = samples(&run, &rows);
        assert_eq!(
            (before[0].key.vcpus, before[0].key.memory_mib),
            (1, 512),
            "from the rows"
        );
        for vm in ["e2b-1", "e2b-2"] {
            let shape = Shape {
                vcpus: 2,
                memory_mib: 1024,
            };
            run.cells[0].shapes.push((vm.to_owned(), shape));
        }
        let after = samples(&run, &rows);
        assert!(
            after
                .iter()
                .all(|s| (s.key.vcpus, s.key.memory_mib) == (2, 1024))
        );
    }

    #[test]
    fn the_references_file_is_readable() {
        let (run, rows) = recorded("20261207-224129-hpcg");
        let refs = References::from_run(&run, &rows);
        let text = refs.to_toml(&run.run_id).unwrap();
        let rating = text
            .split("[[reference]]")
            .find(|r| r.contains("rating_gflop_per_s"))
            .unwrap();
        insta::assert_snapshot!(rating.trim(), @r#"
        benchmark = "hpcg"
        vcpus = 1
        memory_mib = 512
        accel = "tcg"
        metric = "rating_gflop_per_s"
        unit = "GFLOP/s"
        value = 0.0382561
        tolerance_pct = 5.0
        better = "higher"

        [reference.params]
        arch = "Linux_Serial"
        nx = "16"
        ny = "16"
        nz = "16"
        rt_s = "1"
        "#);
    }

    #[test]
    fn bad_baselines_are_one_line_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = |path: &Path| format!("{:#}", References::load(path).unwrap_err());
        let missing = dir.path().join("nope.toml");
        assert_eq!(
            err(&missing),
            format!(
                "baseline `{}` does not exist; give a run directory (results/<run-id>) or a references file (`vmlab results reference RUN > references.toml`)",
                missing.display()
            )
        );
        let corrupt = dir.path().join("corrupt.toml");
        std::fs::write(&corrupt, "schema = 1\n[[reference]]\nbenchmark = 3\n").unwrap();
        let e = err(&corrupt);
        assert!(
            e.starts_with(&format!("baseline `{}`:3: ", corrupt.display()))
                && e.ends_with(
                    "; it is not a references file (`vmlab results reference RUN` writes one)"
                )
                && !e.contains('\n'),
            "{e}"
        );
        let empty_run = dir.path().join("run");
        std::fs::create_dir(&empty_run).unwrap();
        assert!(
            err(&empty_run).starts_with("reading "),
            "{}",
            err(&empty_run)
        );

        let hpcg = References::load(&fixture("20261207-224129-hpcg")).unwrap();
        let (stream, _) = recorded("20261207-220332-stream");
        let at = Path::new("references.toml");
        assert_eq!(
            format!(
                "{:#}",
                hpcg.check_for(at, "stream", &stream.metrics).unwrap_err()
            ),
            "baseline `references.toml` has no reference for `stream` (it has: hpcg); give the baseline of a `stream` run"
        );
        let (hpcg_run, _) = recorded("20261207-224129-hpcg");
        assert!(hpcg.check_for(at, "hpcg", &hpcg_run.metrics).is_ok());
        let mut other_units = hpcg.clone();
        other_units.references[0].unit = "MFLOP/s".into();
        let metric = other_units.references[0].metric.clone();
        assert_eq!(
            format!(
                "{:#}",
                other_units
                    .check_for(at, "hpcg", &hpcg_run.metrics)
                    .unwrap_err()
            ),
            format!(
                "baseline `references.toml`: `hpcg` `{metric}` is in MFLOP/s there, vmlab measures it in GFLOP/s; write the baseline again with `vmlab results reference RUN`"
            )
        );
    }
}
