//! The runs under a results directory, as `vmlab results` names them: a
//! run id (`20261207-220332-stream`) under `--results DIR`, or the path of
//! a run directory.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::record::RecordedRun;
use super::run::{Row, read_rows};
use crate::rundir::RUN_JSON;

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
