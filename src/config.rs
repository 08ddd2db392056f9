//! Settings: flags over `vmlab.toml` over defaults, then validation.
//!
//! Each setting is declared once, in [`Settings`]: clap reads it from a flag
//! and serde from the file, and both check its value as they parse it, so an
//! error names the flag or points at the file's line. Commands that only
//! need to find the lab (`status`, `down`, `ssh`, …) read just `lab` and
//! `connect` from the file ([`Global`]), so a bad unrelated key never locks
//! a user out of their VMs.

use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroU64};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::units::Mib;

pub const DEFAULT_CONNECT: &str = "qemu:///system";
/// The image `vmlab image build` makes and `up` uses unless told otherwise.
pub const DEFAULT_IMAGE: &str = "vmlab-alpine";
pub const CONFIG_FILE: &str = "vmlab.toml";
pub const DEFAULT_LAB: &str = "default";
pub const DEFAULT_PREFIX: &str = "vm";
const MAX_VCPUS: u32 = 64;

/// How guests reach the network and how the host reaches their SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// QEMU user-mode network; SSH forwarded from 127.0.0.1:PORT.
    User,
    /// libvirt's `default` NAT network.
    Nat,
}

/// CPU acceleration. `auto` picks KVM only when it really works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// The settings of a lab's VMs: `vmlab up` flags and `vmlab.toml` keys.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Set with the global `--lab`.
    #[arg(skip)]
    pub lab: Option<String>,
    /// Set with the global `--connect`.
    #[arg(skip)]
    pub connect: Option<String>,
    /// VM name prefix; the lab remembers it [default: vm]
    #[arg(long)]
    pub prefix: Option<String>,
    /// Memory at boot, e.g. 512M [default: 512M]
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<Mib>,
    /// Ceiling for ballooning, e.g. 2G [default: max(memory, 1G)]
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<Mib>,
    /// vCPUs at boot [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_VCPUS as i64))]
    pub vcpus: Option<u32>,
    /// Ceiling for vCPU hot-plug [default: max(vcpus, 2)]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_VCPUS as i64))]
    pub max_vcpus: Option<u32>,
    /// Base image name (`vmlab image list`) [default: vmlab-alpine]
    #[arg(long)]
    pub image: Option<String>,
    /// user: SSH forwarded from 127.0.0.1; nat: libvirt's default network [default: user]
    #[arg(long, value_enum)]
    pub network: Option<Network>,
    /// CPU acceleration [default: auto]
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// Seconds to wait for each VM's SSH [default: 90]
    #[arg(long = "ssh-timeout", value_name = "SECONDS")]
    pub ssh_timeout_s: Option<NonZeroU64>,
    /// VMs provisioned at most at once [default: the host's cores, and the
    /// last round takes all the rest so no core idles at the end]
    #[arg(long)]
    pub jobs: Option<NonZeroU32>,
    /// The guest takes memory back from its balloon instead of OOM-killing
    /// (then MemTotal no longer shrinks with the balloon) [default: off]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub balloon_autodeflate: Option<bool>,
    /// New VMs are clones restored from a saved template VM (made once per
    /// image version and shape) instead of booted [default: off]
    #[arg(long = "from-snapshot", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub snapshot: Option<bool>,
    /// Workload folders (`VMLAB_WORKLOADS`) [default: ./workloads, else built in].
    #[arg(skip)]
    pub workloads_dir: Option<PathBuf>,
    /// A directory of upstream source archives (`VMLAB_SOURCES`).
    #[arg(skip)]
    pub sources_dir: Option<PathBuf>,
    /// A base URL serving them instead of upstream (`VMLAB_SOURCES_URL`).
    #[arg(skip)]
    pub sources_url: Option<String>,
    /// `[manage]`: the manager's policies, thresholds and floors, read by
    /// the manager itself (`ManageConfig::resolve`); here only so the key is
    /// known.
    #[arg(skip)]
    pub manage: Option<toml::Table>,
}

/// Settings in effect, and which keys came from the file (for error messages).
#[derive(Debug, Clone)]
pub struct Merged {
    pub settings: Settings,
    from_file: BTreeSet<String>,
}

impl Settings {
    /// `self` (flags) wins over `file`, key by key. Done through serde so a
    /// new setting needs no code here.
    pub fn over(self, file: Settings) -> Merged {
        let to_map = |s: &Settings| match serde_json::to_value(s).expect("settings serialize") {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("settings are a struct"),
        };
        let mut merged = to_map(&file);
        let mut from_file: BTreeSet<String> = merged
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        for (key, value) in to_map(&self) {
            if !value.is_null() {
                from_file.remove(&key);
                merged.insert(key, value);
            }
        }
        let settings = serde_json::from_value(serde_json::Value::Object(merged))
            .expect("merged settings deserialize");
        Merged {
            settings,
            from_file,
        }
    }
}

impl Merged {
    /// How the user wrote `key`: `--max-memory`, or `max_memory in vmlab.toml`.
    fn name(&self, key: &str) -> String {
        if self.from_file.contains(key) {
            format!("`{key}` in {CONFIG_FILE}")
        } else {
            format!("--{}", key.trim_end_matches("_s").replace('_', "-"))
        }
    }

    /// Fills defaults and checks the settings against each other.
    pub fn resolve(self) -> Result<LabSpec> {
        let s = &self.settings;
        let lab = s.lab.clone().unwrap_or_else(|| DEFAULT_LAB.into());
        check_name("lab", &lab)?;
        if let Some(prefix) = &s.prefix {
            check_name("prefix", prefix)?;
        }
        let memory = s.memory.unwrap_or(Mib(512));
        if memory < Mib(128) {
            bail!(
                "{} ({memory}) is too small for a guest; use at least 128M",
                self.name("memory")
            );
        }
        let max_memory = s.max_memory.unwrap_or(memory.max(Mib(1024)));
        if max_memory < memory {
            bail!(
                "{} ({max_memory}) is below {} ({memory}); raise {}",
                self.name("max_memory"),
                self.name("memory"),
                self.name("max_memory")
            );
        }
        let vcpus = s.vcpus.unwrap_or(1);
        let max_vcpus = s.max_vcpus.unwrap_or(vcpus.max(2));
        if !(1..=MAX_VCPUS).contains(&vcpus) || !(vcpus..=MAX_VCPUS).contains(&max_vcpus) {
            bail!(
                "{} ({max_vcpus}) must be between {} ({vcpus}) and {MAX_VCPUS}, and {} at least 1",
                self.name("max_vcpus"),
                self.name("vcpus"),
                self.name("vcpus")
            );
        }
        let image = s.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
        check_name("image", &image)?;
        let jobs = s.jobs.map_or_else(
            || Jobs::Auto {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            |j| Jobs::Fixed(j.get() as usize),
        );
        Ok(LabSpec {
            lab,
            connect: s.connect.clone().unwrap_or_else(|| DEFAULT_CONNECT.into()),
            prefix: s.prefix.clone(),
            memory,
            max_memory,
            vcpus,
            max_vcpus,
            image,
            network: s.network.unwrap_or(Network::User),
            accel: s.accel.unwrap_or(Accel::Auto),
            ssh_timeout_s: s.ssh_timeout_s.map_or(90, NonZeroU64::get),
            jobs,
            balloon_autodeflate: s.balloon_autodeflate.unwrap_or(false),
            snapshot: s.snapshot.unwrap_or(false),
            given: self.settings,
        })
    }
}

/// How many VMs `up` provisions at once. TCG boots are CPU-bound: as many
/// as the host has cores keeps every core busy, but a last round smaller
/// than the cores leaves one idle while the last VM boots alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// `--jobs J`: at most J at once.
    Fixed(usize),
    /// As many as `cores`; once the VMs left would not fill two rounds,
    /// all of them start, so they share every core to the end.
    Auto { cores: usize },
}

impl Jobs {
    /// For `count` clones being restored: `--jobs` as given, else all at
    /// once. A restore is libvirt loading the saved memory and a little
    /// guest work, not a boot's seconds of CPU: here (2 cores, TCG) 8 clones
    /// all at once were SSH-ready in 5.7 s against 8.6 s two at a time, and
    /// their reset took 8.0 s against 15.1 s.
    pub fn for_restores(self, count: usize) -> Jobs {
        match self {
            Jobs::Fixed(_) => self,
            Jobs::Auto { .. } => Jobs::Fixed(count.max(1)),
        }
    }

    /// Whether one more VM may start, with `running` provisioning and
    /// `waiting` (this one included) not started yet.
    pub fn may_start(self, running: usize, waiting: usize) -> bool {
        match self {
            Jobs::Fixed(j) => running < j.max(1),
            Jobs::Auto { cores } => {
                let cores = cores.max(1);
                running < cores || running + waiting < 2 * cores
            }
        }
    }
}

/// Validated settings of a lab.
#[derive(Debug, Clone, PartialEq)]
pub struct LabSpec {
    pub lab: String,
    pub connect: String,
    /// As given; the lab's remembered prefix applies otherwise.
    pub prefix: Option<String>,
    pub memory: Mib,
    pub max_memory: Mib,
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub image: String,
    pub network: Network,
    pub accel: Accel,
    pub ssh_timeout_s: u64,
    pub jobs: Jobs,
    pub balloon_autodeflate: bool,
    /// New VMs are clones of a template (`--from-snapshot`).
    pub snapshot: bool,
    /// What the user set explicitly (flags or file), before defaults.
    pub given: Settings,
}

/// Where the lab lives: all that commands which only look at a lab need.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Global {
    pub lab: Option<String>,
    pub connect: Option<String>,
}

/// The text of a settings file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
}

impl ConfigFile {
    /// An explicit `--config FILE` must exist; the implicit `./vmlab.toml` may be absent.
    pub fn load(explicit: Option<&Path>) -> Result<Option<ConfigFile>> {
        let path = explicit.unwrap_or(Path::new(CONFIG_FILE));
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(ConfigFile {
                path: path.to_path_buf(),
                text,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "settings file {} does not exist; check the path given to --config",
                path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Every key checked, unknown ones too.
    pub fn settings(&self) -> Result<Settings> {
        self.parse()
    }

    /// Only `lab` and `connect`; the other keys are not looked at.
    pub fn global(&self) -> Result<Global> {
        self.parse()
    }

    /// The whole file as `T` (a module's view of its own section), with the
    /// file's line and column in errors.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        toml::from_str(&self.text).map_err(|e| {
            let at = e
                .span()
                .map(|span| {
                    let before = &self.text[..span.start.min(self.text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            anyhow!(
                "{}{at}: {}",
                self.path.display(),
                e.message().trim_end_matches('\n').replace('\n', "; ")
            )
        })
    }
}

/// Names end up in domain names, paths and guest hostnames: keep them plain.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!(
            "{what} `{name}` is not allowed; use letters, digits, `-`, `_` or `.` (start with a letter or digit, at most 40)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up` of `n` equal CPU-bound boots (one unit of work each) on `cores`,
    /// cores shared evenly: the time it takes, and the most run at once.
    fn makespan(jobs: Jobs, n: usize, cores: usize) -> (f64, usize) {
        let (mut t, mut started, mut left, mut most) = (0.0, 0, Vec::<f64>::new(), 0);
        loop {
            while started < n && jobs.may_start(left.len(), n - started) {
                left.push(1.0);
                started += 1;
            }
            most = most.max(left.len());
            if left.is_empty() {
                return (t, most);
            }
            let speed = (cores as f64 / left.len() as f64).min(1.0);
            let (i, first) = left
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            t += first / speed;
            left.iter_mut().for_each(|w| *w -= first);
            left.remove(i);
        }
    }

    #[test]
    fn restores_all_start_at_once_unless_jobs_was_given() {
        let auto = Jobs::Auto { cores: 2 }.for_restores(8);
        assert!((0..8).all(|running| auto.may_start(running, 8 - running)));
        assert!(!Jobs::Fixed(3).for_restores(8).may_start(3, 5));
        assert!(Jobs::Auto { cores: 2 }.for_restores(0).may_start(0, 1));
    }

    #[test]
    fn up_keeps_every_core_busy_to_the_end() {
        for cores in 1..=4 {
            for n in 1..=16 {
                let best = (n as f64 / cores as f64).max(1.0);
                let (auto, most) = makespan(Jobs::Auto { cores }, n, cores);
                assert!(
                    (auto - best).abs() < 1e-9,
                    "{n} VMs on {cores} cores: {auto} instead of {best}"
                );
                assert!(most < 2 * cores, "{n} VMs on {cores} cores: {most} at once");
            }
        }
        // A fixed --jobs equal to the cores leaves the last boot alone.
        assert_eq!(makespan(Jobs::Fixed(2), 3, 2).0, 2.0);
        assert_eq!(makespan(Jobs::Auto { cores: 2 }, 3, 2), (1.5, 3));
        assert_eq!(makespan(Jobs::Auto { cores: 2 }, 8, 2), (4.0, 3));
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile {
            path: PathBuf::from(CONFIG_FILE),
            text: text.into(),
        }
    }

    fn resolve(flags: Settings, file_text: &str) -> Result<LabSpec> {
        flags.over(file(file_text).settings()?).resolve()
    }

    #[test]
    fn defaults_are_a_small_lab() {
        let spec = resolve(Settings::default(), "").unwrap();
        assert_eq!(spec.lab, "default");
        assert_eq!(spec.connect, DEFAULT_CONNECT);
        assert_eq!((spec.memory, spec.max_memory), (Mib(512), Mib(1024)));
        assert_eq!((spec.vcpus, spec.max_vcpus), (1, 2));
        assert_eq!((spec.network, spec.ssh_timeout_s), (Network::User, 90));
        assert_eq!(spec.given, Settings::default());
    }

    #[test]
    fn flags_win_over_file_key_by_key() {
        let flags = Settings {
            memory: Some(Mib(768)),
            ..Settings::default()
        };
        let spec = resolve(
            flags,
            "memory = \"1G\"\nmax_memory = \"4G\"\nprefix = \"lab\"\nnetwork = \"nat\"\nvcpus = 2\n",
        )
        .unwrap();
        assert_eq!(spec.memory, Mib(768));
        assert_eq!(spec.max_memory, Mib(4096));
        assert_eq!(spec.prefix.as_deref(), Some("lab"));
        assert_eq!(spec.network, Network::Nat);
        assert_eq!((spec.vcpus, spec.max_vcpus), (2, 2));
    }

    #[test]
    fn file_errors_point_at_line_and_column() {
        let err = file("lab = \"x\"\nmemroy = \"1G\"\n")
            .settings()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("vmlab.toml:2:1: unknown field `memroy`"),
            "{err}"
        );
        let err = file("ssh_timeout_s = 0\n")
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("vmlab.toml:1:17: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let err = file("memory = \"lots\"\n")
            .settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`lots` is not a size"), "{err}");
        let err = file("memory = [\n").global().unwrap_err().to_string();
        assert!(err.starts_with("vmlab.toml:"), "{err}");
    }

    #[test]
    fn lab_lookups_ignore_unrelated_keys() {
        let f = file("lab = \"l\"\nmemory = \"lots\"\nmemroy = 1\n");
        assert!(f.settings().is_err());
        let g = f.global().unwrap();
        assert_eq!(g.lab.as_deref(), Some("l"));
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let err = ConfigFile::load(Some(&missing)).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "settings file {} does not exist; check the path given to --config",
                missing.display()
            )
        );
    }

    #[test]
    fn names_stay_plain() {
        check_name("image", "vmlab-alpine_3.20").unwrap();
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "-x",
            "a b",
            "x'y",
            &"n".repeat(41),
        ] {
            assert!(check_name("image", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_name_the_flag_or_the_file_key_the_value_came_from() {
        let from_flags = Settings {
            memory: Some(Mib(1024)),
            max_memory: Some(Mib(512)),
            ..Default::default()
        };
        let err = resolve(from_flags, "").unwrap_err().to_string();
        assert_eq!(
            err,
            "--max-memory (512 MiB) is below --memory (1024 MiB); raise --max-memory"
        );
        let err = resolve(
            Settings::default(),
            "memory = \"1G\"\nmax_memory = \"512M\"\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "`max_memory` in vmlab.toml (512 MiB) is below `memory` in vmlab.toml (1024 MiB); raise `max_memory` in vmlab.toml"
        );
        let cases = [
            ("vcpus = 4\nmax_vcpus = 2\n", "must be between"),
            ("memory = \"64M\"\n", "too small"),
            (
                "prefix = \"vm;rm -rf\"\n",
                "prefix `vm;rm -rf` is not allowed",
            ),
            ("lab = \"../x\"\n", "lab `../x` is not allowed"),
        ];
        for (text, expected) in cases {
            let err = resolve(Settings::default(), text).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }
}
