//! A run directory, `results/<run-id>/`: the one contract between the
//! commands that write a run (`bench`, `run`, `monitor`, `manage`,
//! `scenario`, `dashboard`) and those that read it (`plot`, `dashboard
//! --run`). Every file name of a run lives here.
//!
//! A run is never overwritten: a new run gets a directory of its own (made
//! exclusively, with a suffix when another run took the id in the same
//! second), and every file of a run is created exclusively, so a command
//! pointed at an existing run (`--run ID`) refuses rather than truncates.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// `vmlab bench`: one row per VM, cell, repeat and metric.
pub const BENCH_CSV: &str = "bench.csv";
/// `vmlab bench`: what ran, where, with what (JSON).
pub const RUN_JSON: &str = "run.json";
/// `bench` and `run`: the files each program wrote, per VM.
pub const RAW_DIR: &str = "raw";
/// `vmlab monitor` and the dashboard: guest and host figures per VM and second.
pub const METRICS_CSV: &str = "metrics.csv";
/// `vmlab manage`: every decision with its inputs.
pub const DECISIONS_CSV: &str = "decisions.csv";
/// `vmlab manage`: the managed domains as sampled every round.
pub const MANAGE_CSV: &str = "manage.csv";
/// `vmlab manage`: its policies and thresholds (JSON).
pub const MANAGE_JSON: &str = "manage.json";
/// `vmlab scenario run`: the judge's inputs and figures (JSON).
pub const SCENARIO_JSON: &str = "scenario.json";
/// `vmlab scenario run`: what the judge saw, one libvirt sample a second
/// (one JSON snapshot a line): a recorded run replays through the judge.
pub const OBSERVED_JSONL: &str = "observed.jsonl";
/// `vmlab scenario run`'s scorecard, as JSON and as Markdown.
pub const SCORECARD_JSON: &str = "scorecard.json";
pub const SCORECARD_MD: &str = "scorecard.md";

/// `manage.json`: what a manager ran with. The manager writes it, the
/// monitor reads it to draw the manager's floor and thresholds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManageJson {
    pub schema: u32,
    pub interval_s: f64,
    /// As the flag is spelled: `pin`, `pin+hotplug`, `balloon`, …
    pub cpu_policy: String,
    pub memory_policy: String,
    pub dry_run: bool,
    pub mem_floor_mib: u64,
    pub host_min_free_mib: u64,
    pub mem_high_pct: f64,
    pub mem_low_pct: f64,
    pub cpu_high_pct: f64,
    pub cpu_low_pct: f64,
}

impl ManageJson {
    /// The run's `manage.json`, once a manager has written it.
    pub fn read(run_dir: &Path) -> Option<ManageJson> {
        let text = std::fs::read_to_string(run_dir.join(MANAGE_JSON)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// The remedy when a file of a run exists already.
const PICK_ANOTHER: &str =
    "pick another `--run ID`, or leave `--run` out for a new run; runs are never overwritten";

/// `20261122-051230-hpcg`: UTC time, then what ran.
pub fn run_id(what: &str, at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}-{what}", &digits[..8], &digits[8..14])
}

/// RFC 3339 UTC with milliseconds (`2024-05-01T12:00:00.250Z`): the `time`
/// column of every CSV file of a run.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// One run's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
}

impl RunDir {
    /// A new run of `what` under `root`: `root/<time>-<what>`, or with `-2`,
    /// `-3`… when another run took that id (two commands in one second).
    pub fn create(root: &Path, what: &str, at: SystemTime) -> Result<RunDir> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("creating the results directory {}", root.display()))?;
        let base = run_id(what, at);
        for n in 1u32.. {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let path = root.join(&id);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(RunDir { id, path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        unreachable!("some suffix is free")
    }

    /// The run the user named (`--run ID`), made if missing: `monitor` and
    /// `manage` may share one. Its files are still created exclusively.
    pub fn named(root: &Path, id: &str) -> Result<RunDir> {
        crate::config::check_name("run id", id)?;
        let path = root.join(id);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir {
            id: id.to_string(),
            path,
        })
    }

    /// `named` with `id`, else `create`.
    pub fn named_or_new(root: &Path, id: Option<&str>, what: &str) -> Result<RunDir> {
        match id {
            Some(id) => RunDir::named(root, id),
            None => RunDir::create(root, what, SystemTime::now()),
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Checks before anything starts that none of `names` exists yet.
    pub fn check_free(&self, names: &[&str]) -> Result<()> {
        for name in names {
            let path = self.file(name);
            if path.exists() {
                bail!(
                    "run `{}` already has {name} ({}); {PICK_ANOTHER}",
                    self.id,
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Creates one of the run's files; refuses when it exists (never truncates).
    pub fn create_file(&self, name: &str) -> Result<File> {
        create_new(&self.file(name), &self.id)
    }
}

/// Creates `path` exclusively, naming the run when it exists already.
pub fn create_new(path: &Path, run_id: &str) -> Result<File> {
    match File::options().write(true).create_new(true).open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            bail!(
                "run `{run_id}` already has {name} ({}); {PICK_ANOTHER}",
                path.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn run_ids_name_the_utc_time_and_sort_by_it() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000); // 2026-11-18 11:06:40 UTC
        assert_eq!(run_id("hpcg", at), "20261118-110640-hpcg");
        assert!(run_id("hpcg", at) < run_id("hpcg", at + Duration::from_secs(1)));
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds_across_a_leap_day() {
        let at = |s: u64, ms: u64| timestamp(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1, 500), "1970-01-01T00:00:01.500Z");
        assert_eq!(at(1_709_164_799, 999), "2024-02-28T23:59:59.999Z");
        assert_eq!(at(1_709_164_800, 7), "2024-02-29T00:00:00.007Z");
    }

    #[test]
    fn runs_started_in_the_same_second_get_directories_of_their_own() {
        let root = tempfile::tempdir().unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let ids: Vec<String> = (0..3)
            .map(|_| RunDir::create(root.path(), "manage", at).unwrap().id)
            .collect();
        assert_eq!(
            ids,
            [
                "20261118-110640-manage",
                "20261118-110640-manage-2",
                "20261118-110640-manage-3"
            ]
        );
        assert!(ids.iter().all(|id| root.path().join(id).is_dir()));
    }

    #[test]
    fn files_of_a_run_are_never_truncated() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::named(root.path(), "mine").unwrap();
        std::fs::write(run.file(DECISIONS_CSV), "kept\n").unwrap();
        let err = run.create_file(DECISIONS_CSV).unwrap_err().to_string();
        assert!(
            err.starts_with("run `mine` already has decisions.csv (") && err.contains("--run"),
            "{err}"
        );
        let err = run.check_free(&[MANAGE_CSV, DECISIONS_CSV]).unwrap_err();
        assert!(err.to_string().contains("decisions.csv"), "{err}");
        assert_eq!(
            std::fs::read_to_string(run.file(DECISIONS_CSV)).unwrap(),
            "kept\n"
        );
        assert!(run.create_file(MANAGE_CSV).is_ok());
        assert!(RunDir::named(root.path(), "../x").is_err());
    }
}
