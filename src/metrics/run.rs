//! The CSV files of a run directory (`results/<run-id>/`), read whole or
//! tailed while another part of vmlab appends to them.
//!
//! `decisions.csv` (written by the manager) and `bench.csv` (by `vmlab bench`)
//! are read with small structs of their own that ignore extra columns.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::row::{MetricsRow, pcpu_column_indexes};

pub use crate::rundir::{BENCH_CSV, DECISIONS_CSV, METRICS_CSV};

/// One line of `decisions.csv`: `time,t_s,vm,kind,before,after,unit,reason,inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub time: String,
    pub t_s: f64,
    pub vm: String,
    /// `pin`, `memory` or `vcpus`.
    pub kind: String,
    pub before: String,
    pub after: String,
    /// `pcpus`, `mib` or `vcpus`.
    pub unit: String,
    pub reason: String,
    /// `key=value;key=value`.
    pub inputs: String,
}

/// One line of `bench.csv`; `value` is empty when the run produced none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub run_id: String,
    pub time: String,
    pub vm: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub benchmark: String,
    pub params: String,
    pub metric: String,
    pub value: Option<f64>,
    pub unit: String,
    pub valid: bool,
    pub duration_s: Option<f64>,
}

/// A run lasts less than this (about 31 years): a `t_s` beyond it is damage,
/// and no chart or replay can wait for it.
pub const MAX_RUN_S: f64 = 1e9;

/// Whether `t_s` can be a time of a run: finite and within [`MAX_RUN_S`] of its start.
pub fn usable_t_s(t_s: f64) -> bool {
    t_s.is_finite() && t_s.abs() <= MAX_RUN_S
}

/// A typed record of one of the run's CSV files.
pub trait CsvRecord: Sized {
    fn from_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Self>;
    /// Empties the cells whose number is not finite (`inf`, `NaN`, `1e400`),
    /// returning each one's column and value: no chart can place them.
    fn clear_non_finite(&mut self) -> Vec<(String, f64)>;
    /// Seconds since the run started, for records that have a time.
    fn t_s(&self) -> Option<f64>;
}

impl CsvRecord for MetricsRow {
    fn from_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Self> {
        MetricsRow::from_record(headers, record)
    }

    fn clear_non_finite(&mut self) -> Vec<(String, f64)> {
        MetricsRow::clear_non_finite(self)
    }

    fn t_s(&self) -> Option<f64> {
        Some(self.t_s)
    }
}

fn deserialize<T: DeserializeOwned>(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Result<T> {
    Ok(record.deserialize(Some(headers))?)
}

impl CsvRecord for DecisionRecord {
    fn from_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Self> {
        deserialize(headers, record)
    }

    fn clear_non_finite(&mut self) -> Vec<(String, f64)> {
        Vec::new()
    }

    fn t_s(&self) -> Option<f64> {
        Some(self.t_s)
    }
}

impl CsvRecord for BenchResult {
    fn from_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Self> {
        deserialize(headers, record)
    }

    fn clear_non_finite(&mut self) -> Vec<(String, f64)> {
        let mut cleared = Vec::new();
        for (column, cell) in [
            ("value", &mut self.value),
            ("duration_s", &mut self.duration_s),
        ] {
            if let Some(v) = cell.take_if(|v| !v.is_finite()) {
                cleared.push((column.to_string(), v));
            }
        }
        cleared
    }

    fn t_s(&self) -> Option<f64> {
        None
    }
}

/// Reads the complete records appended to a CSV file since the previous call.
/// A missing file has no records yet; a last line without its newline is left
/// for the next call (the writer is in the middle of it). A record that does not
/// parse is skipped and counted, so a live reader never stops on one bad line.
/// Numbers that are not finite are left out and noted (see [`CsvTail::notes`]).
pub struct CsvTail<T> {
    path: PathBuf,
    offset: u64,
    headers: Option<csv::StringRecord>,
    records_read: u64,
    /// Records skipped because they did not parse.
    pub skipped: u64,
    pub last_error: Option<String>,
    /// What was left out of records that parsed, one line each naming the
    /// file, the record (1 is the header) and the column; the reader takes them.
    pub notes: Vec<String>,
    _record: std::marker::PhantomData<T>,
}

/// A whole CSV file of a run.
#[derive(Debug)]
pub struct CsvFile<T> {
    pub headers: Option<csv::StringRecord>,
    pub records: Vec<T>,
    /// What was left out, as in [`CsvTail::notes`].
    pub notes: Vec<String>,
}

impl<T: CsvRecord> CsvTail<T> {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            headers: None,
            records_read: 0,
            skipped: 0,
            last_error: None,
            notes: Vec::new(),
            _record: std::marker::PhantomData,
        }
    }

    /// The file's header, once it has been read.
    pub fn headers(&self) -> Option<&csv::StringRecord> {
        self.headers.as_ref()
    }

    pub fn read_new(&mut self) -> Result<Vec<T>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open `{}`", self.path.display()));
            }
        };
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .with_context(|| format!("cannot read `{}`", self.path.display()))?;
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete = &bytes[..=end];
        self.offset += complete.len() as u64;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(complete);
        let mut records = Vec::new();
        for result in reader.records() {
            self.records_read += 1;
            let parsed =
                result
                    .map_err(anyhow::Error::from)
                    .and_then(|record| match &self.headers {
                        None => {
                            self.headers = Some(record);
                            Ok(None)
                        }
                        Some(headers) => T::from_record(headers, &record).map(Some),
                    });
            match parsed {
                Ok(Some(mut record)) => {
                    if self.usable(&mut record) {
                        records.push(record);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.skipped += 1;
                    self.last_error = Some(format!(
                        "{} record {}: {e:#}",
                        self.path.display(),
                        self.records_read
                    ));
                }
            }
        }
        Ok(records)
    }

    /// Clears the record's numbers that are not finite; false when its time
    /// is unusable and the whole record must go. Each is noted.
    fn usable(&mut self, record: &mut T) -> bool {
        let cleared = record.clear_non_finite();
        let bad_time = record.t_s().filter(|t_s| !usable_t_s(*t_s));
        if cleared.is_empty() && bad_time.is_none() {
            return true;
        }
        let at = format!("{} record {}", self.path.display(), self.records_read);
        for (column, value) in cleared {
            self.notes.push(format!(
                "{at}: `{column}` is `{value}`, not a finite number; left out"
            ));
        }
        if let Some(t_s) = bad_time {
            self.notes.push(format!(
                "{at}: `t_s` is `{t_s:e}`, not a time within {MAX_RUN_S:e} s of the run's start; \
                 the record is left out"
            ));
        }
        bad_time.is_none()
    }

    /// Everything in the file, refusing it when any record is malformed.
    pub fn read_all(mut self) -> Result<CsvFile<T>> {
        let records = self.read_new()?;
        if let Some(e) = &self.last_error {
            bail!(
                "{} malformed record(s) in `{}`; the last: {e}",
                self.skipped,
                self.path.display()
            );
        }
        Ok(CsvFile {
            headers: self.headers,
            records,
            notes: self.notes,
        })
    }
}

/// Everything recorded in a finished run directory.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub dir: PathBuf,
    /// Host CPUs of the run, from the `pcpuN_pct` columns.
    pub pcpus: usize,
    pub metrics: Vec<MetricsRow>,
    pub decisions: Vec<DecisionRecord>,
    pub bench: Vec<BenchResult>,
    /// What was left out of the files (numbers that are not finite, records
    /// without a usable time), one line each naming the file and record.
    pub notes: Vec<String>,
}

/// Checks that `dir` is a directory, with an error that says where runs live.
pub fn check_run_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "run directory `{}` does not exist; runs are the folders under results/ \
             (`ls results/`), made by `vmlab monitor` or `vmlab bench`",
            dir.display()
        );
    }
    Ok(())
}

/// Reads a run directory; each file is optional, but one of them must be there.
pub fn read_run(dir: &Path) -> Result<Run> {
    check_run_dir(dir)?;
    if [METRICS_CSV, DECISIONS_CSV, BENCH_CSV]
        .iter()
        .all(|f| !dir.join(f).exists())
    {
        bail!(
            "`{}` has no {METRICS_CSV}, {DECISIONS_CSV} or {BENCH_CSV}: is it a run directory?",
            dir.display()
        );
    }
    let metrics = CsvTail::<MetricsRow>::new(dir.join(METRICS_CSV)).read_all()?;
    let decisions = CsvTail::<DecisionRecord>::new(dir.join(DECISIONS_CSV)).read_all()?;
    let bench = CsvTail::<BenchResult>::new(dir.join(BENCH_CSV)).read_all()?;
    Ok(Run {
        dir: dir.to_path_buf(),
        pcpus: metrics.headers.map_or(0, |h| pcpu_column_indexes(&h).len()),
        notes: [metrics.notes, decisions.notes, bench.notes].concat(),
        metrics: metrics.records,
        decisions: decisions.records,
        bench: bench.records,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const DECISIONS: &str = "time,t_s,vm,kind,before,after,unit,reason,inputs,extra\n\
        2024-01-01T00:00:01.000Z,1.0,vm-1,pin,0,1,pcpus,\"balance, spread\",util0=90;util1=10,x\n";

    #[test]
    fn tail_returns_only_complete_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DECISIONS_CSV);
        let mut tail = CsvTail::<DecisionRecord>::new(&path);
        assert!(
            tail.read_new().unwrap().is_empty(),
            "missing file: no records yet"
        );

        let mut file = File::create(&path).unwrap();
        let (first, second) = DECISIONS.split_at(DECISIONS.len() - 20);
        file.write_all(first.as_bytes()).unwrap();
        assert!(tail.read_new().unwrap().is_empty(), "half a record waits");
        file.write_all(second.as_bytes()).unwrap();
        let got = tail.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].reason, "balance, spread");
        assert_eq!(got[0].inputs, "util0=90;util1=10");
        assert!(tail.read_new().unwrap().is_empty());

        file.write_all(
            b"garbage\n2024-01-01T00:00:02.000Z,2.0,vm-2,memory,512,640,mib,grow,used=500,\n",
        )
        .unwrap();
        let got = tail.read_new().unwrap();
        assert_eq!(got.len(), 1, "the bad record is skipped, the next one read");
        assert_eq!(got[0].after, "640");
        assert_eq!(tail.skipped, 1);
        assert!(tail.last_error.as_ref().unwrap().contains("record 3"));
    }

    #[test]
    fn numbers_that_are_not_finite_and_unusable_times_are_left_out_and_noted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_CSV);
        let mut writer = super::super::row::MetricsWriter::create(&path, 1).unwrap();
        let row = |t_s: f64, vm: &str| MetricsRow {
            t_s,
            vm: vm.into(),
            cpu_pct: Some(5.0),
            pcpu_pct: vec![Some(50.0)],
            ..MetricsRow::default()
        };
        let mut damaged = row(2.0, "vm-1");
        damaged.cpu_pct = Some(f64::NAN);
        damaged.pcpu_pct = vec![Some(f64::NEG_INFINITY)];
        writer
            .write_sample(&[
                row(1.0, "vm-1"),
                damaged,
                row(1e30, "vm-1"),
                row(3.0, "vm-1"),
            ])
            .unwrap();
        let file = CsvTail::<MetricsRow>::new(&path).read_all().unwrap();
        let kept: Vec<(f64, Option<f64>, Option<f64>)> = file
            .records
            .iter()
            .map(|r| (r.t_s, r.cpu_pct, r.pcpu_pct[0]))
            .collect();
        assert_eq!(
            kept,
            [
                (1.0, Some(5.0), Some(50.0)),
                (2.0, None, None),
                (3.0, Some(5.0), Some(50.0))
            ]
        );
        let at = path.display();
        assert_eq!(
            file.notes,
            [
                format!("{at} record 3: `cpu_pct` is `NaN`, not a finite number; left out"),
                format!("{at} record 3: `pcpu0_pct` is `-inf`, not a finite number; left out"),
                format!(
                    "{at} record 4: `t_s` is `1e30`, not a time within 1e9 s of the run's start; \
                     the record is left out"
                ),
            ]
        );
    }

    #[test]
    fn read_all_refuses_malformed_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BENCH_CSV);
        std::fs::write(
            &path,
            "run_id,time,vm,vcpus,memory_mib,benchmark,params,metric,value,unit,valid,duration_s\n\
             r1,t,vm-1,two,512,hpcg,nx=16,gflops,1.5,GFLOP/s,true,30\n",
        )
        .unwrap();
        let err = CsvTail::<BenchResult>::new(&path).read_all().unwrap_err();
        assert!(err.to_string().contains("1 malformed record(s)"), "{err}");
    }

    #[test]
    fn missing_or_empty_run_dirs_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = read_run(&missing).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("ls results/"),
            "{err}"
        );
        let err = read_run(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is it a run directory?"), "{err}");
    }
}
