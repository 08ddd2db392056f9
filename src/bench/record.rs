//! `run.json`: what a benchmark run measured and on what, so a result can
//! be told apart from another and reproduced. [`RunRecord::start`] gathers
//! everything known before the first cell (source, binary, host, libvirt
//! and QEMU versions, accel per VM); the run adds cells and runs as they
//! finish, and a gated run its verdicts. [`RecordedRun`] reads it back.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::configure::CellApplied;
use super::gate::GateRecord;
use super::matrix::{Cell, Matrix};
use super::repeat::Repeat;
use crate::host::facts::HostFacts;
use crate::hypervisor::{Hypervisor, Versions};
use crate::lab::state::VmRecord;
use crate::rundir::{RUN_JSON, timestamp};
use crate::workload::Ready;
use crate::workload::manifest::{MetricSpec, Source};
use crate::workload::source::Origin;

/// What ran where, for `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEntry {
    pub vm: String,
    pub cell: usize,
    pub repeat: u32,
    pub exit: Option<String>,
    pub run_s: Option<f64>,
    /// vmlab's own time around the program: push, setup, fetch, cleanup, parse.
    pub overhead_s: Option<f64>,
    pub pushed: Option<bool>,
    pub error: Option<String>,
}

/// `run.json`: everything needed to tell what was measured, and on what.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub schema: u32,
    pub run_id: String,
    pub started: String,
    pub finished: Option<String>,
    pub interrupted: bool,
    pub lab: String,
    pub benchmark: String,
    pub params: Vec<(String, String)>,
    pub matrix: Matrix,
    /// Repeats per cell; with `repeat_auto`, the most.
    pub repeat: u32,
    /// `--repeat auto`: repeats stopped once the main metric's spread was small.
    pub repeat_auto: Option<AutoRepeat>,
    /// The workload's main metric (`[output] main`), if it declares one.
    pub main_metric: Option<String>,
    /// The metrics a run is judged on (`[output.metrics]`): unit and direction.
    pub metrics: BTreeMap<String, MetricSpec>,
    pub vms: Vec<String>,
    pub source: SourceRecord,
    pub binary_sha256: String,
    /// The input files the program read (`[run] files`): (path, SHA-256).
    pub run_files: Vec<(String, String)>,
    pub host: HostFacts,
    pub versions: Versions,
    /// `kvm` or `qemu` (TCG), per VM.
    pub accel: Vec<(String, String)>,
    pub cells: Vec<CellRecord>,
    pub runs: Vec<RunEntry>,
    /// `--baseline`: what the run was judged against, and the verdicts.
    pub gate: Option<GateRecord>,
}

/// `--repeat auto[:MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AutoRepeat {
    /// A cell stops repeating once the main metric's CV is at most this in every VM…
    pub cv_target_pct: f64,
    /// …and it has run at least this often, or when it has run `max` times.
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRecord {
    pub url: Option<String>,
    pub sha256: Option<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell: Cell,
    /// What each VM really had.
    pub applied: Vec<(String, CellApplied)>,
    pub errors: Vec<(String, String)>,
    /// How often the cell ran.
    #[serde(default)]
    pub repeats: u32,
    /// Per VM, the coefficient of variation (%) of the main metric over
    /// the cell's repeats; `None` with fewer than two results.
    #[serde(default)]
    pub main_cv_pct: Vec<(String, Option<f64>)>,
    /// Per VM, the shape the cell asks of it: what references are keyed by.
    #[serde(default)]
    pub shapes: Vec<(String, Shape)>,
}

/// A VM's shape in a cell: the cell's vCPUs and memory, or the VM's own
/// where the cell leaves them as they are. Unlike [`CellApplied`] it does
/// not move with a balloon still settling after a boot or a manager's
/// changes, so two runs of one lab have the same shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl Shape {
    pub fn of(cell: &Cell, vm: &VmRecord) -> Shape {
        Shape {
            vcpus: cell.vcpus.unwrap_or(vm.vcpus),
            memory_mib: cell.memory.unwrap_or(vm.memory).0,
        }
    }
}

/// The host as `run.json` records it ([`HostFacts`], read back).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostRecord {
    pub cpu_model: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub kernel: String,
}

/// libvirt's and the hypervisor's versions ([`Versions`], read back).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionsRecord {
    pub libvirt: String,
    pub hypervisor: String,
}

/// `run.json` read back: what `vmlab results` uses of it.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordedRun {
    pub schema: u32,
    pub run_id: String,
    pub started: String,
    pub finished: Option<String>,
    pub interrupted: bool,
    pub lab: String,
    pub benchmark: String,
    pub params: Vec<(String, String)>,
    pub repeat: u32,
    #[serde(default)]
    pub repeat_auto: Option<AutoRepeat>,
    #[serde(default)]
    pub main_metric: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSpec>,
    pub vms: Vec<String>,
    pub host: HostRecord,
    pub versions: VersionsRecord,
    pub accel: Vec<(String, String)>,
    pub cells: Vec<CellRecord>,
    pub runs: Vec<RunEntry>,
    #[serde(default)]
    pub gate: Option<GateRecord>,
}

impl RecordedRun {
    /// `DIR/run.json`; a missing or damaged file is an error naming it.
    pub fn read(run_dir: &Path) -> Result<RecordedRun> {
        let path = run_dir.join(RUN_JSON);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: {e}; it is not a run.json vmlab wrote",
                path.display(),
                e.line()
            )
        })
    }

    /// The shape of `vm` in cell `index`, as recorded (runs before vmlab
    /// recorded shapes: `None`).
    pub fn shape_of(&self, index: usize, vm: &str) -> Option<Shape> {
        let cell = self.cells.iter().find(|c| c.cell.index == index)?;
        cell.shapes.iter().find(|(v, _)| v == vm).map(|(_, s)| *s)
    }

    /// The accel of a VM as people say it: `kvm`, or `tcg` for libvirt's `qemu`.
    pub fn accel_of(&self, vm: &str) -> &str {
        match self.accel.iter().find(|(name, _)| name == vm) {
            Some((_, t)) if t == "qemu" => "tcg",
            Some((_, t)) => t,
            None => "unknown",
        }
    }
}

/// What a run is about to do, where; `run_id` is left empty until the run
/// has its directory.
pub struct Start<'a> {
    pub lab: &'a str,
    pub ready: &'a Ready,
    pub vms: &'a [VmRecord],
    pub matrix: &'a Matrix,
    pub repeat: Repeat,
    pub at: SystemTime,
}

impl RunRecord {
    /// The record of a run about to start, read from the workload and from
    /// libvirt (node, versions, each VM's domain type); writes nothing.
    pub fn start(hv: &dyn Hypervisor, start: Start) -> Result<Self> {
        let Start {
            lab,
            ready,
            vms,
            matrix,
            repeat,
            at,
        } = start;
        let node = hv.node()?;
        let accel = vms
            .iter()
            .map(|vm| Ok((vm.name.clone(), hv.resources(&vm.name)?.domain_type)))
            .collect::<Result<Vec<_>>>()?;
        let (url, sha256) = match &ready.workload.source {
            Source::Upstream { url, sha256, .. } => (Some(url.clone()), Some(sha256.clone())),
            Source::Files(_) => (None, None),
        };
        Ok(Self {
            schema: 1,
            run_id: String::new(),
            started: timestamp(at),
            finished: None,
            interrupted: false,
            lab: lab.to_owned(),
            benchmark: ready.workload.name.clone(),
            params: ready
                .params
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            matrix: matrix.clone(),
            repeat: repeat.max(),
            repeat_auto: repeat.auto(),
            main_metric: ready.workload.output.main.clone(),
            metrics: ready.workload.output.metrics.clone(),
            vms: vms.iter().map(|v| v.name.clone()).collect(),
            source: SourceRecord {
                url,
                sha256,
                origin: ready.source.origin,
            },
            binary_sha256: ready.built.sha256.clone(),
            run_files: ready.program().run_file_digests()?,
            host: crate::host::facts::read(node.cpus, node.memory.mib().0),
            versions: hv.versions()?,
            accel,
            cells: Vec::new(),
            runs: Vec::new(),
            gate: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::download::digest;
    use crate::hypervisor::libvirt::Libvirt;
    use crate::workload::source::Located;
    use crate::workload::{Built, Preset};

    /// SimpleMOC as if fetched from a mirror and built: an upstream source
    /// and input decks of its own folder.
    fn simplemoc() -> Ready {
        let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let workload = crate::workload::load(&workloads, "simplemoc").unwrap();
        let params = workload.resolve_preset(Preset::Ci, &[]).unwrap();
        Ready {
            workload,
            params,
            source: Located {
                path: "/nowhere/v4.tar.gz".into(),
                origin: Origin::Mirror,
            },
            built: Built {
                binary: "/nowhere/SimpleMOC".into(),
                sha256: "ab".repeat(32),
                cache_hit: true,
            },
        }
    }

    /// On libvirt's test driver, whose one domain `test` runs as type `test`.
    #[test]
    fn the_record_holds_source_binary_inputs_host_and_accel() {
        let hv = Libvirt::connect("test:///default").unwrap();
        let ready = simplemoc();
        let matrix = Matrix::parse(&["vcpus=1,2".to_owned()]).unwrap();
        let start = |vms: &[VmRecord]| {
            RunRecord::start(
                &hv,
                Start {
                    lab: "default",
                    ready: &ready,
                    vms,
                    matrix: &matrix,
                    repeat: Repeat::Auto { max: 3 },
                    at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                },
            )
        };
        let record = start(&[crate::testutil::vm_record("test")]).unwrap();
        assert_eq!(
            (
                record.started.as_str(),
                record.run_id.as_str(),
                record.repeat
            ),
            ("2023-11-14T22:13:20.000Z", "", 3)
        );
        assert_eq!(record.vms, ["test"]);
        assert_eq!(record.accel, [("test".to_owned(), "test".to_owned())]);
        assert!(
            record
                .params
                .contains(&("input".to_owned(), "tiny".to_owned()))
        );
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json["repeat_auto"],
            serde_json::json!({"cv_target_pct": 3.0, "min": 3, "max": 3})
        );
        assert_eq!(json["main_metric"], "time_per_intersection_ns");
        assert_eq!(
            json["metrics"]["time_per_intersection_ns"],
            serde_json::json!({"unit": "ns", "better": "lower"})
        );
        assert_eq!(
            json["source"],
            serde_json::json!({
                "url": "https://github.com/ANL-CESAR/SimpleMOC/archive/v4.tar.gz",
                "sha256": "a39906014fdb234c43bf26e1919bdc8a13097788812e0b353a492b8e568816a6",
                "origin": "mirror",
            })
        );
        assert_eq!(record.binary_sha256, "ab".repeat(32));
        let decks: Vec<(String, String)> = ["tiny.in", "medium.in"]
            .iter()
            .map(|f| {
                let path = ready.workload.dir.join(f);
                ((*f).to_owned(), digest::of_file(&path).unwrap().sha256)
            })
            .collect();
        assert_eq!(record.run_files, decks);
        assert_eq!(record.host.cores, hv.node().unwrap().cpus);
        assert_eq!(record.versions, hv.versions().unwrap());

        let gone = start(&[crate::testutil::vm_record("vanished")]).unwrap_err();
        assert!(format!("{gone:#}").contains("vanished"), "{gone:#}");
    }
}
