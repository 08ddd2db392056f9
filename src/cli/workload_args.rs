//! Arguments `run` and `bench` share: which workload, with which parameters
//! and sources, on which VMs; and Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;

use super::Global;
use super::logging::say;
use crate::lab::inventory::On;
use crate::paths::Home;
use crate::workload::source::Offered;
use crate::workload::{Checked, Preset, Ready, Request, catalog, check, parse_param};

#[derive(clap::Args, Debug)]
pub struct WorkloadArgs {
    /// A workload (`vmlab workloads` lists them)
    pub workload: String,
    /// VMs to use: `all` or names separated by commas
    #[arg(long, default_value = "all")]
    pub on: On,
    /// A parameter, KEY=VALUE (repeatable; `vmlab workloads` lists them)
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Small sizes (seconds under TCG) as the defaults, for CI and tests
    #[arg(long)]
    pub ci: bool,
    /// The upstream source archive, when vmlab cannot download it
    #[arg(long, value_name = "FILE")]
    pub source: Option<PathBuf>,
}

/// What `run` and `bench` open, in the order checks must come: the
/// workload and its parameters, then the lab and its VMs; nothing is built
/// yet.
pub struct Opened {
    pub place: super::Where,
    pub home: Home,
    pub hv: crate::hypervisor::libvirt::Libvirt,
    pub checked: Checked,
    pub request: Request,
}

impl Opened {
    pub fn lab(&self) -> crate::lab::Lab<'_> {
        crate::lab::Lab::new(&self.hv, &self.home, &self.place.lab)
    }
}

impl WorkloadArgs {
    /// Checks the workload request, then connects to the lab.
    pub fn open(&self, global: &Global) -> Result<Opened> {
        let place = global.place()?;
        let home = global.home()?;
        let (checked, request) = self.check(global, &home)?;
        let hv = super::connect(&place.connect)?;
        Ok(Opened {
            place,
            home,
            hv,
            checked,
            request,
        })
    }

    /// Finds the workload and checks its parameters (nothing downloaded or built).
    pub fn check(&self, global: &Global, home: &Home) -> Result<(Checked, Request)> {
        let file = global.spec(Default::default())?.given;
        let env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
        let request = Request {
            name: self.workload.clone(),
            given: self.params.clone(),
            preset: if self.ci { Preset::Ci } else { Preset::Default },
            offered: Offered {
                file: self.source.clone(),
                mirror: env("VMLAB_SOURCES").map(PathBuf::from).or(file.sources_dir),
                mirror_url: env("VMLAB_SOURCES_URL")
                    .map(|v| v.to_string_lossy().into_owned())
                    .or(file.sources_url),
            },
            workloads_dir: catalog::configured(file.workloads_dir),
        };
        Ok((check(home, &request)?, request))
    }
}

/// Locates the source and builds, saying what it did.
pub fn ready(checked: Checked, request: &Request, home: &Home) -> Result<Ready> {
    let started = std::time::Instant::now();
    let ready = checked.ready(home, &request.offered, &mut |stage| {
        tracing::info!("{}: {stage}", request.name)
    })?;
    say!(
        "{}: source {}, binary {} ({}, {:.1} s)",
        ready.workload.name,
        ready.source.origin,
        &ready.built.sha256[..12],
        if ready.built.cache_hit {
            "cached"
        } else {
            "built"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ready)
}

/// The flag Ctrl-C, SIGTERM or SIGHUP raises: commands stop their guest
/// processes and finish cleanly (see [`crate::host::signals`]).
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    crate::host::signals::stop_flag()
}
