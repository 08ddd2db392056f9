//! One row of `results/<run>/metrics.csv`: one VM at one sample, guest and host
//! figures side by side, units in the column names.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::reporter::GuestSample;

/// Columns before the per-pCPU ones, in file order (the field names of [`MetricsRow`]).
const LEADING_COLUMNS: [&str; 16] = [
    "time",
    "t_s",
    "vm",
    "cpu_pct",
    "mem_total_mib",
    "mem_used_mib",
    "mem_available_mib",
    "disk_read_kib_s",
    "disk_write_kib_s",
    "net_rx_bytes",
    "net_tx_bytes",
    "balloon_actual_mib",
    "balloon_unused_mib",
    "vcpus",
    "pins",
    "domain_cpu_s",
];

/// Columns after the per-pCPU ones.
const TRAILING_COLUMNS: [&str; 4] = ["mem_floor_mib", "mem_high_pct", "mem_low_pct", "decisions"];

/// One VM at one sample. `None` is an empty cell: a marked gap (no reporter
/// line this sample, no balloon stats, no manager running), never a zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Host wall time of the sample, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Seconds since the run started.
    pub t_s: f64,
    pub vm: String,
    /// Guest reporter: busy share of all guest CPUs, 0–100.
    pub cpu_pct: Option<f64>,
    pub mem_total_mib: Option<f64>,
    /// `MemTotal - MemAvailable` in the guest.
    pub mem_used_mib: Option<f64>,
    pub mem_available_mib: Option<f64>,
    pub disk_read_kib_s: Option<f64>,
    pub disk_write_kib_s: Option<f64>,
    /// Counter since guest boot.
    pub net_rx_bytes: Option<u64>,
    /// Counter since guest boot.
    pub net_tx_bytes: Option<u64>,
    /// libvirt: memory the balloon leaves the guest.
    pub balloon_actual_mib: Option<f64>,
    pub balloon_unused_mib: Option<f64>,
    pub vcpus: Option<u32>,
    /// `vcpu:cpuset` pairs joined by `;` (`0:1;1:0-1`); empty when unpinned.
    pub pins: String,
    /// Cumulative CPU time of the domain.
    pub domain_cpu_s: Option<f64>,
    /// Host pCPU utilisation, one `pcpuN_pct` column each; the same in every
    /// VM row of a sample. Read back from the header by [`MetricsRow::from_record`].
    #[serde(skip_deserializing)]
    pub pcpu_pct: Vec<Option<f64>>,
    /// Manager: the least memory it leaves this VM.
    pub mem_floor_mib: Option<f64>,
    /// Manager: grows the VM when used memory is above this % of its allocation.
    pub mem_high_pct: Option<f64>,
    /// Manager: shrinks the VM when used memory is below this % of its allocation.
    pub mem_low_pct: Option<f64>,
    /// Manager decisions about this VM since the previous sample, `; `-separated.
    pub decisions: String,
}

impl MetricsRow {
    /// A row with the time columns and the VM name set, everything else empty.
    pub fn new(time: SystemTime, run_start: SystemTime, vm: &str) -> Self {
        let t_s = time
            .duration_since(run_start)
            .map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        Self {
            time: humantime::format_rfc3339_millis(time).to_string(),
            t_s,
            vm: vm.to_string(),
            ..Self::default()
        }
    }

    /// Fills the guest columns from a reporter sample.
    pub fn set_guest(&mut self, sample: &GuestSample) {
        self.cpu_pct = Some(sample.cpu_pct);
        self.mem_total_mib = Some(kib_to_mib(sample.mem_total_kib));
        self.mem_used_mib = Some(kib_to_mib(sample.mem_used_kib));
        self.mem_available_mib = Some(kib_to_mib(sample.mem_available_kib));
        self.disk_read_kib_s = Some(sample.disk_read_kib_s);
        self.disk_write_kib_s = Some(sample.disk_write_kib_s);
        self.net_rx_bytes = Some(sample.net_rx_bytes);
        self.net_tx_bytes = Some(sample.net_tx_bytes);
    }

    /// Empties the cells whose number is not finite (a damaged file can hold
    /// `inf` or `NaN`, which parse), returning each one's column and value.
    pub fn clear_non_finite(&mut self) -> Vec<(String, f64)> {
        let mut cleared = Vec::new();
        let cells = [
            ("cpu_pct", &mut self.cpu_pct),
            ("mem_total_mib", &mut self.mem_total_mib),
            ("mem_used_mib", &mut self.mem_used_mib),
            ("mem_available_mib", &mut self.mem_available_mib),
            ("disk_read_kib_s", &mut self.disk_read_kib_s),
            ("disk_write_kib_s", &mut self.disk_write_kib_s),
            ("balloon_actual_mib", &mut self.balloon_actual_mib),
            ("balloon_unused_mib", &mut self.balloon_unused_mib),
            ("domain_cpu_s", &mut self.domain_cpu_s),
            ("mem_floor_mib", &mut self.mem_floor_mib),
            ("mem_high_pct", &mut self.mem_high_pct),
            ("mem_low_pct", &mut self.mem_low_pct),
        ];
        for (column, cell) in cells {
            if let Some(v) = cell.take_if(|v| !v.is_finite()) {
                cleared.push((column.to_string(), v));
            }
        }
        for (pcpu, cell) in self.pcpu_pct.iter_mut().enumerate() {
            if let Some(v) = cell.take_if(|v| !v.is_finite()) {
                cleared.push((pcpu_column(pcpu), v));
            }
        }
        cleared
    }

    /// Reads a row back; `headers` is the file's first record (it says how many pCPUs).
    pub fn from_record(headers: &csv::StringRecord, record: &csv::StringRecord) -> Result<Self> {
        let mut row: MetricsRow = record
            .deserialize(Some(headers))
            .context("not a metrics.csv row")?;
        row.pcpu_pct = pcpu_column_indexes(headers)
            .into_iter()
            .map(|i| {
                let cell = record.get(i).unwrap_or("");
                match cell {
                    "" => Ok(None),
                    text => text
                        .parse()
                        .map(Some)
                        .with_context(|| format!("column {} is `{text}`", &headers[i])),
                }
            })
            .collect::<Result<_>>()?;
        Ok(row)
    }
}

/// KiB to MiB with two decimals (what a chart or a reader needs).
pub fn kib_to_mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 100.0).round() / 100.0
}

/// The `pins` column for libvirt's `vcpu → cpuset` pairs.
pub fn pins_column(pins: &[(u32, String)]) -> String {
    let pairs: Vec<String> = pins.iter().map(|(v, set)| format!("{v}:{set}")).collect();
    pairs.join(";")
}

pub fn pcpu_column(pcpu: usize) -> String {
    format!("pcpu{pcpu}_pct")
}

/// The header of a run on a host with `pcpus` CPUs.
pub fn header(pcpus: usize) -> Vec<String> {
    let leading = LEADING_COLUMNS.iter().map(|c| c.to_string());
    let trailing = TRAILING_COLUMNS.iter().map(|c| c.to_string());
    leading
        .chain((0..pcpus).map(pcpu_column))
        .chain(trailing)
        .collect()
}

/// Positions of `pcpu0_pct, pcpu1_pct, …` in a header, in pCPU order.
pub fn pcpu_column_indexes(headers: &csv::StringRecord) -> Vec<usize> {
    (0..)
        .map_while(|pcpu| {
            let name = pcpu_column(pcpu);
            headers.iter().position(|h| h == name)
        })
        .collect()
}

/// Writes `metrics.csv`: the header once, then one flushed batch per sample, so
/// a crash of vmlab loses at most the sample being written.
#[derive(Debug)]
pub struct MetricsWriter<W: Write> {
    csv: csv::Writer<W>,
    pcpus: usize,
}

impl MetricsWriter<File> {
    /// Creates `path`; an existing file is refused rather than overwritten.
    pub fn create(path: &Path, pcpus: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create `{}` (a run keeps its metrics: start a new run with another --run ID)",
                    path.display()
                )
            })?;
        Self::new(file, pcpus)
    }
}

impl<W: Write> MetricsWriter<W> {
    pub fn new(out: W, pcpus: usize) -> Result<Self> {
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(out);
        csv.write_record(header(pcpus))?;
        csv.flush()?;
        Ok(Self { csv, pcpus })
    }

    /// Writes the rows of one sample (one per VM) and flushes them.
    pub fn write_sample(&mut self, rows: &[MetricsRow]) -> Result<()> {
        for row in rows {
            ensure!(
                row.pcpu_pct.len() == self.pcpus,
                "row of `{}` has {} pCPU values, the header has {}",
                row.vm,
                row.pcpu_pct.len(),
                self.pcpus
            );
            self.csv.serialize(row)?;
        }
        self.csv.flush().context("cannot write metrics.csv")?;
        Ok(())
    }

    pub fn into_inner(self) -> Result<W> {
        match self.csv.into_inner() {
            Ok(out) => Ok(out),
            Err(e) => bail!("cannot flush metrics.csv: {}", e.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample_rows() -> Vec<MetricsRow> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut full = MetricsRow::new(start + Duration::from_millis(2_500), start, "vm-1");
        full.set_guest(&GuestSample {
            uptime_ms: 10_000,
            cpu_pct: 12.5,
            mem_total_kib: 500_000,
            mem_used_kib: 100_000,
            mem_available_kib: 400_000,
            disk_read_kib_s: 1.5,
            disk_write_kib_s: 0.0,
            net_rx_bytes: 1_000,
            net_tx_bytes: 2_000,
        });
        full.balloon_actual_mib = Some(512.0);
        full.balloon_unused_mib = Some(300.25);
        full.vcpus = Some(2);
        full.pins = pins_column(&[(0, "1".into()), (1, "0-1".into())]);
        full.domain_cpu_s = Some(3.25);
        full.pcpu_pct = vec![Some(50.0), Some(7.5)];
        full.mem_floor_mib = Some(256.0);
        full.mem_high_pct = Some(80.0);
        full.mem_low_pct = Some(40.0);
        full.decisions = "memory 512->640 mib: used above high, \"fast\"".into();
        // A VM without a reporter line, balloon stats or manager: gaps.
        let mut gaps = MetricsRow::new(start + Duration::from_millis(2_500), start, "vm-2");
        gaps.pcpu_pct = vec![Some(50.0), None];
        vec![full, gaps]
    }

    #[test]
    fn header_lists_units_and_one_column_per_pcpu() {
        let header = header(2).join(",");
        assert_eq!(
            header,
            "time,t_s,vm,cpu_pct,mem_total_mib,mem_used_mib,mem_available_mib,\
             disk_read_kib_s,disk_write_kib_s,net_rx_bytes,net_tx_bytes,\
             balloon_actual_mib,balloon_unused_mib,vcpus,pins,domain_cpu_s,\
             pcpu0_pct,pcpu1_pct,mem_floor_mib,mem_high_pct,mem_low_pct,decisions"
        );
    }

    #[test]
    fn the_readme_documents_every_column() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## metrics.csv").expect("README section")..];
        for column in header(1) {
            assert!(
                section.contains(&format!("`{column}`")),
                "README's metrics.csv section lacks `{column}`"
            );
        }
    }

    #[test]
    fn writes_rows_with_gaps_as_empty_cells() {
        let mut writer = MetricsWriter::new(Vec::new(), 2).unwrap();
        writer.write_sample(&sample_rows()).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "2023-11-14T22:13:22.500Z,2.5,vm-1,12.5,488.28,97.66,390.63,1.5,0.0,1000,2000,\
             512.0,300.25,2,0:1;1:0-1,3.25,50.0,7.5,256.0,80.0,40.0,\
             \"memory 512->640 mib: used above high, \"\"fast\"\"\""
        );
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:22.500Z,2.5,vm-2,,,,,,,,,,,,,,50.0,,,,,"
        );
    }

    #[test]
    fn rows_read_back_as_written() {
        let mut writer = MetricsWriter::new(Vec::new(), 2).unwrap();
        writer.write_sample(&sample_rows()).unwrap();
        let bytes = writer.into_inner().unwrap();
        let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
        let headers = reader.headers().unwrap().clone();
        let rows: Vec<MetricsRow> = reader
            .records()
            .map(|r| MetricsRow::from_record(&headers, &r.unwrap()).unwrap())
            .collect();
        assert_eq!(rows, sample_rows());
    }

    #[test]
    fn a_row_with_the_wrong_pcpu_count_is_refused() {
        let mut writer = MetricsWriter::new(Vec::new(), 3).unwrap();
        let err = writer.write_sample(&sample_rows()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row of `vm-1` has 2 pCPU values, the header has 3"
        );
    }

    #[test]
    fn create_refuses_to_overwrite_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        MetricsWriter::create(&path, 1).unwrap();
        let err = MetricsWriter::create(&path, 1).unwrap_err();
        assert!(format!("{err:#}").contains("start a new run with another --run ID"));
        assert_eq!(
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
            header(1).join(",")
        );
    }
}
