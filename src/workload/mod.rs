//! Workloads as data (`workloads/<name>/workload.toml`): where the source
//! comes from, how the host builds a static binary, how a guest runs it,
//! and the parser that reads its output (a manifest names one, so the
//! parsers live here, below `bench`, which only runs and records).

pub mod build;
pub mod catalog;
pub mod manifest;
pub mod parse;
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

/// A workload found and its parameters checked: all that can be said
/// wrong about a request without downloading or building anything.
#[derive(Debug, Clone)]
pub struct Checked {
    pub workload: Workload,
    pub params: Params,
}

/// Finds the workload and checks the parameters.
pub fn check(home: &Home, req: &Request) -> Result<Checked> {
    let dir = catalog::dir(home, req.workloads_dir.as_deref())?;
    let workload = load(&dir, &req.name)?;
    let params = workload.resolve_preset(req.preset, &req.given)?;
    Ok(Checked { workload, params })
}

impl Checked {
    /// Locates the source and builds; `stage` hears "source" and "build".
    pub fn ready(
        self,
        home: &Home,
        offered: &Offered,
        stage: &mut dyn FnMut(&str),
    ) -> Result<Ready> {
        stage("source");
        let source = source::locate(home, &self.workload, offered, &mut |_, _| {})?;
        stage("build");
        let built = build(
            &self.workload,
            &source.path,
            &self.params,
            &home.build_cache_dir(),
        )?;
        Ok(Ready {
            workload: self.workload,
            params: self.params,
            source,
            built,
        })
    }
}

/// `KEY=VALUE` from the command line.
pub fn parse_param(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE, e.g. --param nx=16")),
    }
}
