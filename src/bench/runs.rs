//! The runs under a results directory, as `vmlab results` names them: a
//! run id (`20261207-220332-stream`) under `--results DIR`, or the path of
//! a run directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::record::RecordedRun;
use super::run::{Row, read_rows};
use super::summary::{self, summarize};
use crate::rundir::RUN_JSON;
use crate::table::{Align, Table};

/// The directory of `run`: a path to a run directory, or an id under `results`.
pub fn resolve(results: &Path, run: &str) -> Result<PathBuf> {
    let given = Path::new(run);
    let dir = if given.join(RUN_JSON).is_file() {
        given.to_owned()
    } else {
        results.join(run)
    };
    if !dir.join(RUN_JSON).is_file() {
        bail!(
            "no benchmark run `{run}` in {}; `vmlab results list` lists them",
            results.display()
        );
    }
    Ok(dir)
}

/// A run read back: its `run.json` and `bench.csv`.
pub fn open(results: &Path, run: &str) -> Result<(PathBuf, RecordedRun, Vec<Row>)> {
    let dir = resolve(results, run)?;
    let recorded = RecordedRun::read(&dir)?;
    let rows = read_rows(&dir)?;
    Ok((dir, recorded, rows))
}

/// Every benchmark run under `results` (directories with a `run.json`),
/// oldest first: its benchmark, cells, VMs, start and host; a `run.json`
/// vmlab cannot read is listed as damaged rather than hidden.
pub fn list(results: &Path) -> Result<Table> {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("RUN", Left),
        ("BENCHMARK", Left),
        ("CELLS", Right),
        ("VMS", Right),
        ("REPEAT", Left),
        ("STARTED", Left),
        ("HOST", Left),
        ("GATE", Left),
    ]);
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(results) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", results.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {}", results.display())),
    };
    dirs.retain(|d| d.join(RUN_JSON).is_file());
    dirs.sort();
    for dir in dirs {
        let id = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match RecordedRun::read(&dir) {
            Ok(r) => table.row([
                id,
                r.benchmark.clone(),
                r.cells.len().to_string(),
                r.vms.len().to_string(),
                repeat(&r),
                r.started.clone(),
                format!("{}, {} cores", r.host.cpu_model, r.host.cores),
                r.gate.as_ref().map_or("-".to_owned(), |g| g.counts()),
            ]),
            Err(_) => table.row([
                id,
                "(damaged run.json)".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]),
        }
    }
    Ok(table)
}

fn repeat(r: &RecordedRun) -> String {
    match r.repeat_auto {
        Some(auto) => format!("auto:{}", auto.max),
        None => r.repeat.to_string(),
    }
}

/// `vmlab results show`: what ran where, the summary, the CV reached under
/// `--repeat auto`, and the gate's verdicts.
pub fn show(r: &RecordedRun, rows: &[Row]) -> String {
    let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let accel: Vec<String> = r
        .vms
        .iter()
        .map(|vm| format!("{vm} {}", r.accel_of(vm)))
        .collect();
    let mut out = format!(
        "run        {}\nbenchmark  {} ({})\nlab        {}, VMs: {}\nrepeat     {}\nstarted    {}\nfinished   {}{}\nhost       {}, {} cores, {} MiB, kernel {}\nversions   libvirt {}, QEMU {}\n\n",
        r.run_id,
        r.benchmark,
        params.join(" "),
        r.lab,
        accel.join(", "),
        repeat(r),
        r.started,
        r.finished.as_deref().unwrap_or("-"),
        if r.interrupted { " (interrupted)" } else { "" },
        r.host.cpu_model,
        r.host.cores,
        r.host.memory_mib,
        r.host.kernel,
        r.versions.libvirt,
        r.versions.hypervisor,
    );
    let cells: Vec<_> = r.cells.iter().map(|c| c.cell).collect();
    out += &summary::table(&summarize(rows), &cells).to_string();
    out += &summary::repeats(r.repeat_auto, r.main_metric.as_deref(), &r.cells);
    if let Some(gate) = &r.gate {
        out += &format!("\nagainst {}: {}\n", gate.baseline, gate.counts());
        out += &gate.table().to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::reference::tests::{fixture, recorded};
    use super::*;

    #[test]
    fn list_shows_every_run_and_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        for id in ["20261207-224129-hpcg", "20261207-220332-stream"] {
            let to = dir.path().join(id);
            std::fs::create_dir(&to).unwrap();
            std::fs::copy(fixture(id).join(RUN_JSON), to.join(RUN_JSON)).unwrap();
        }
        let damaged = dir.path().join("20261207-230000-stream");
        std::fs::create_dir(&damaged).unwrap();
        std::fs::write(damaged.join(RUN_JSON), "{").unwrap();
        std::fs::create_dir(dir.path().join("20261207-230000-monitor")).unwrap();
        insta::assert_snapshot!(list(dir.path()).unwrap().to_string(), @r"
        RUN                     BENCHMARK           CELLS  VMS  REPEAT  STARTED                   HOST               GATE
        20261207-220332-stream  stream                  1    2  2       2026-12-07T22:03:32.687Z  AMD EPYC, 2 cores  -
        20261207-224129-hpcg    hpcg                    1    1  1       2026-12-07T22:41:29.105Z  AMD EPYC, 2 cores  -
        20261207-230000-stream  (damaged run.json)
        ");
        assert_eq!(
            list(&dir.path().join("none"))
                .unwrap()
                .to_string()
                .lines()
                .count(),
            1,
            "no results directory: the header alone"
        );
    }

    #[test]
    fn show_tells_what_ran_where() {
        let (run, rows) = recorded("20261207-220332-stream");
        insta::assert_snapshot!(show(&run, &rows), @r"
        run        20261207-220332-stream
        benchmark  stream (array_size=100000 ntimes=10)
        lab        e2w-bench, VMs: e2b-1 tcg, e2b-2 tcg
        repeat     2
        started    2026-12-07T22:03:32.687Z
        finished   2026-12-07T22:03:34.854Z
        host       AMD EPYC, 2 cores, 24105 MiB, kernel 6.18.44-fc-v1300
        versions   libvirt 9.0.0, QEMU 7.2.22

        CELL      METRIC             MEDIAN        MIN        MAX  UNIT  N
        1: as is  copy_mb_per_s   3889.4000  3782.9000  3913.1000  MB/s  4
        1: as is  scale_mb_per_s  2382.7000  2142.0000  2395.0000  MB/s  4
        1: as is  add_mb_per_s    3151.6500  3045.8000  3356.6000  MB/s  4
        1: as is  triad_mb_per_s  1960.7000  1862.1000  1993.3000  MB/s  4
        ");
    }

    #[test]
    fn a_run_is_an_id_or_a_path() {
        let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results");
        let by_id = resolve(&results, "20261207-220332-stream").unwrap();
        assert_eq!(by_id, results.join("20261207-220332-stream"));
        let path = fixture("20261207-220332-stream");
        assert_eq!(
            resolve(Path::new("elsewhere"), path.to_str().unwrap()).unwrap(),
            path
        );
        assert_eq!(
            resolve(Path::new("results"), "20990101-000000-x")
                .unwrap_err()
                .to_string(),
            "no benchmark run `20990101-000000-x` in results; `vmlab results list` lists them"
        );
    }
}
