//! Workloads as data (`workloads/<name>/workload.toml`): where the source
//! comes from, how the host builds a static binary, how a guest runs it.

pub mod build;
pub mod catalog;
pub mod manifest;
pub mod run;
pub mod source;

use std::path::PathBuf;

use anyhow::Result;

pub use build::{Built, build};
pub use manifest::{Kind, Params, Preset, Stage, Workload, load, load_all};

use crate::paths::Home;
use source::{Located, Offered};

/// What to get ready.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    /// `--param KEY=VALUE` pairs, in order.
    pub given: Vec<(String, String)>,
    pub preset: Preset,
    pub offered: Offered,
    /// The folder `VMLAB_WORKLOADS`/`workloads_dir` names, if any.
    pub workloads_dir: Option<PathBuf>,
}

/// A workload found, its parameters checked, its source located and its
/// binary built (or found in the build cache).
#[derive(Debug, Clone)]
pub struct Ready {
    pub workload: Workload,
    pub params: Params,
    pub source: Located,
    pub built: Built,
}

impl Ready {
    pub fn program(&self) -> run::Program<'_> {
        run::Program {
            workload: &self.workload,
            built: &self.built,
            params: &self.params,
            extra: &[],
        }
    }
}

/// Gets a workload ready; `stage` hears "source" and "build" as they start.
/// Everything the user gave is checked before anything is downloaded or built.
pub fn ready(home: &Home, req: &Request, stage: &mut dyn FnMut(&str)) -> Result<Ready> {
    let dir = catalog::dir(home, req.workloads_dir.as_deref())?;
    let workload = load(&dir, &req.name)?;
    let params = workload.resolve_preset(req.preset, &req.given)?;
    stage("source");
    let source = source::locate(home, &workload, &req.offered, &mut |_, _| {})?;
    stage("build");
    let built = build(&workload, &source.path, &params, &home.build_cache_dir())?;
    Ok(Ready {
        workload,
        params,
        source,
        built,
    })
}

/// `KEY=VALUE` from the command line.
pub fn parse_param(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE, e.g. --param nx=16")),
    }
}
