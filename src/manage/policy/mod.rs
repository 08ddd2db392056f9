//! Policies: pure functions from this round's snapshot (and what each policy
//! kept from earlier rounds) to decisions. No I/O here; the loop samples and
//! the executor acts.

pub mod greedy;
pub mod hotplug;
pub mod memory;
pub mod pin;
pub mod threshold;

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::action::{Action, Decision};
use super::snapshot::{Snapshot, VcpuSample, VmSample, by_name};
use crate::metrics::cpu::CpuUse;

/// `[manage]` in `vmlab.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManageConfig {
    /// Seconds between rounds (the loop's cadence; rates use the real time).
    pub interval_s: f64,
    pub cpu: CpuPolicy,
    pub memory: MemoryPolicy,
    pub pin: pin::PinConfig,
    pub hotplug: hotplug::HotplugConfig,
    pub balloon: memory::BalloonConfig,
    pub threshold: threshold::ThresholdConfig,
}

impl Default for ManageConfig {
    fn default() -> Self {
        ManageConfig {
            interval_s: 2.0,
            cpu: CpuPolicy::Pin,
            memory: MemoryPolicy::Balloon,
            pin: Default::default(),
            hotplug: Default::default(),
            balloon: Default::default(),
            threshold: Default::default(),
        }
    }
}

/// What the command line may set over `[manage]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overrides {
    pub interval_s: Option<f64>,
    pub cpu: Option<CpuPolicy>,
    pub memory: Option<MemoryPolicy>,
}

/// `vmlab.toml` as the manager reads it: its own section, nothing else.
#[derive(Deserialize)]
struct ManageFile {
    manage: Option<ManageConfig>,
}

impl ManageConfig {
    /// The manager's settings: defaults, then `[manage]` of the settings
    /// file (errors point at its line), then the flags; validated.
    pub fn resolve(file: Option<&crate::config::ConfigFile>, flags: Overrides) -> Result<Self> {
        let mut config = match file {
            Some(f) => f.parse::<ManageFile>()?.manage.unwrap_or_default(),
            None => ManageConfig::default(),
        };
        if let Some(i) = flags.interval_s {
            config.interval_s = i;
        }
        if let Some(p) = flags.cpu {
            config.cpu = p;
        }
        if let Some(p) = flags.memory {
            config.memory = p;
        }
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings no policy can work with, naming the key to fix.
    pub fn validate(&self) -> Result<()> {
        crate::units::check_interval_s(self.interval_s)
            .context("manage `interval_s` (or --interval)")?;
        let h = &self.hotplug;
        let ordered = 0.0 <= h.low_pct && h.low_pct < h.high_pct && h.high_pct <= 100.0;
        if !ordered {
            bail!(
                "manage.hotplug needs 0 <= `low_pct` < `high_pct` <= 100, got {} and {}",
                h.low_pct,
                h.high_pct
            );
        }
        let f = self.balloon.release_fraction;
        let gradual = f > 0.0 && f <= 0.5;
        if !gradual {
            bail!(
                "manage.balloon `release_fraction` is {f}; it must be in (0, 0.5]: release stays gradual"
            );
        }
        Ok(())
    }
}

/// Which vCPU policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CpuPolicy {
    /// Pin every vCPU to one pCPU and keep the pCPUs balanced.
    Pin,
    /// Add or remove vCPUs by sustained use.
    Hotplug,
    /// Both: hot-plug changes the count, pinning places the vCPUs.
    #[serde(rename = "pin+hotplug")]
    #[value(name = "pin+hotplug")]
    PinHotplug,
    /// Course-style baseline: re-pin everything greedily every round.
    Greedy,
    Off,
}

/// Which memory policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryPolicy {
    /// Floors, demand-rate headroom, gradual release, host reserve.
    Balloon,
    /// The original project's fixed-step rules, kept for comparison.
    Threshold,
    Off,
}

/// As the flag and `vmlab.toml` spell it (`pin+hotplug`), for users and files.
fn value_name(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .expect("every policy has a name")
        .get_name()
        .to_string()
}

impl std::fmt::Display for CpuPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

impl std::fmt::Display for MemoryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&value_name(self))
    }
}

/// What the policies keep between rounds.
#[derive(Debug, Default)]
pub struct State {
    prev: Option<Snapshot>,
    pin: pin::PinState,
    hotplug: hotplug::HotplugState,
    memory: memory::BalloonState,
}

/// This round's facts as every policy needs them: the snapshot, the one
/// before it, and the CPU use in between.
pub struct Round<'a> {
    pub now: &'a Snapshot,
    pub prev: Option<&'a Snapshot>,
    /// `None` on the first round.
    pub cpu: Option<CpuUse>,
}

impl<'a> Round<'a> {
    pub fn new(prev: Option<&'a Snapshot>, now: &'a Snapshot) -> Round<'a> {
        let cpu = prev.and_then(|p| CpuUse::between(p, now));
        Round { now, prev, cpu }
    }

    /// Seconds since the previous round, as measured.
    pub fn elapsed_s(&self) -> Option<f64> {
        self.cpu.as_ref().map(|c| c.elapsed_s)
    }

    /// Drops what a policy kept about VMs that are gone.
    pub fn forget_gone<V>(&self, kept: &mut HashMap<String, V>) {
        let present: HashSet<&str> = self.now.vms.iter().map(|vm| vm.name.as_str()).collect();
        kept.retain(|name, _| present.contains(name.as_str()));
    }

    /// Each VM with its counterpart in the previous round, if any.
    pub fn vms(&self) -> impl Iterator<Item = (usize, &'a VmSample, Option<&'a VmSample>)> {
        let before = self.prev.map(by_name).unwrap_or_default();
        self.now
            .vms
            .iter()
            .enumerate()
            .map(move |(i, vm)| (i, vm, before.get(vm.name.as_str()).copied()))
    }
}

/// One planning round of the configured policies.
pub fn plan(now: &Snapshot, state: &mut State, config: &ManageConfig) -> Vec<Decision> {
    let prev = state.prev.take();
    let round = Round::new(prev.as_ref(), now);
    let mut out = Vec::new();
    if matches!(config.cpu, CpuPolicy::Hotplug | CpuPolicy::PinHotplug) {
        out.extend(hotplug::plan(&round, &mut state.hotplug, &config.hotplug));
    }
    if matches!(config.cpu, CpuPolicy::Pin | CpuPolicy::PinHotplug) {
        out.extend(pin::plan(&round, &mut state.pin, &config.pin));
    }
    if config.cpu == CpuPolicy::Greedy {
        out.extend(greedy::plan(&round));
    }
    match config.memory {
        MemoryPolicy::Balloon => {
            out.extend(memory::plan(&round, &mut state.memory, &config.balloon))
        }
        MemoryPolicy::Threshold => out.extend(threshold::plan(&round, &config.threshold)),
        MemoryPolicy::Off => {}
    }
    state.prev = Some(now.clone());
    out
}

/// One vCPU as the CPU policies see it.
#[derive(Debug, Clone, Copy)]
struct Vcpu<'a> {
    vm: &'a VmSample,
    index: usize,
    sample: &'a VcpuSample,
    /// Measured use since the last round; `None` when just added.
    use_pct: Option<f64>,
}

/// What the CPU policies plan from: every vCPU of the round with its use.
struct CpuRound<'a> {
    pcpus: u32,
    /// Per pCPU, as the course's monitor measures it: its vCPUs' use.
    pcpu_pct: Vec<f64>,
    /// Per pCPU, how busy it was with anything, where the host tells; else
    /// the vCPUs' use. A pCPU busy with other work (a build, QEMU's own
    /// threads) hides its vCPUs' demand as surely as its vCPUs do. A pCPU busy with other work (a build, QEMU's
    /// own threads) hides its vCPUs' demand as surely as its vCPUs do.
    busy_pct: Vec<f64>,
    vcpus: Vec<Vcpu<'a>>,
    /// Per vCPU; 0 when it has no reading yet.
    use_pct: Vec<f64>,
}

impl<'a> CpuRound<'a> {
    /// `None` on the first round and on a host without pCPUs.
    fn of(round: &'a Round<'a>) -> Option<CpuRound<'a>> {
        let cpu = round.cpu.as_ref()?;
        let pcpus = round.now.host.pcpus;
        if pcpus == 0 {
            return None;
        }
        let vcpus: Vec<Vcpu> = round
            .now
            .vms
            .iter()
            .zip(&cpu.vcpu_pct)
            .flat_map(|(vm, pct)| {
                vm.vcpus
                    .iter()
                    .zip(pct)
                    .enumerate()
                    .map(move |(index, (sample, use_pct))| Vcpu {
                        vm,
                        index,
                        sample,
                        use_pct: *use_pct,
                    })
            })
            .collect();
        let use_pct = vcpus.iter().map(|v| v.use_pct.unwrap_or(0.0)).collect();
        let pcpu_pct = cpu.pcpu_pct(round.now);
        let busy_pct = match &cpu.busy_pct {
            Some(busy) if busy.len() == pcpu_pct.len() => {
                busy.iter().zip(&pcpu_pct).map(|(b, v)| b.max(*v)).collect()
            }
            _ => pcpu_pct.clone(),
        };
        Some(CpuRound {
            pcpus,
            pcpu_pct,
            busy_pct,
            vcpus,
            use_pct,
        })
    }
}

/// Longest processing time first: each load, largest first (ties in
/// order), onto the least-loaded of `bins`. The bin of each load.
pub(crate) fn lpt(loads: &[f64], bins: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    order.sort_by(|&a, &b| loads[b].total_cmp(&loads[a]));
    let mut total = vec![0.0; bins];
    let mut bin = vec![0; loads.len()];
    for i in order {
        let b = least_loaded(&total);
        total[b] += loads[i];
        bin[i] = b;
    }
    bin
}

/// The least-loaded pCPU, the first on ties.
fn least_loaded(loads: &[f64]) -> usize {
    let mut best = 0;
    for (p, l) in loads.iter().enumerate() {
        if *l < loads[best] {
            best = p;
        }
    }
    best
}

fn pin_to(v: &Vcpu, pcpu: usize, reason: String) -> Decision {
    let action = Action::Pin {
        vm: v.vm.name.clone(),
        vcpu: v.index as u32,
        pcpus: vec![pcpu as u32],
    };
    Decision::new(action, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manage_section_of_vmlab_toml() {
        let text = r#"
            interval_s = 1.5
            cpu = "pin+hotplug"
            memory = "threshold"
            [balloon]
            floor_unused_mib = 250
            [hotplug]
            high_pct = 85
        "#;
        let cfg: ManageConfig = toml::from_str(text).unwrap();
        assert_eq!(
            (cfg.interval_s, cfg.cpu, cfg.memory),
            (1.5, CpuPolicy::PinHotplug, MemoryPolicy::Threshold)
        );
        assert_eq!(
            (cfg.balloon.floor_unused_mib, cfg.balloon.host_min_free_mib),
            (250, 200)
        );
        assert_eq!((cfg.hotplug.high_pct, cfg.hotplug.low_pct), (85.0, 30.0));
        cfg.validate().unwrap();
        let typo = toml::from_str::<ManageConfig>("[balloon]\nfloor_mib = 1").unwrap_err();
        assert!(typo.to_string().contains("floor_mib"), "{typo}");
    }

    #[test]
    fn settings_no_policy_can_use_are_refused() {
        let bad = |edit: fn(&mut ManageConfig)| {
            let mut cfg = ManageConfig::default();
            edit(&mut cfg);
            cfg.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.interval_s = 0.0).contains("`interval_s`"));
        assert!(bad(|c| c.hotplug.low_pct = 95.0).contains("`low_pct` < `high_pct`"));
        assert!(bad(|c| c.balloon.release_fraction = 0.9).contains("gradual"));
    }
}
