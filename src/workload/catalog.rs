//! Which workloads exist: the folder `VMLAB_WORKLOADS` (or `workloads_dir`
//! in `vmlab.toml`) names, else `./workloads` when vmlab runs from its
//! repository, else the copy built into the binary (so one binary is the
//! whole tool), unpacked once into the vmlab home.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use include_dir::{Dir, include_dir};

use super::manifest::MANIFEST;
use crate::download::digest;
use crate::paths::Home;

static BUILT_IN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/workloads");

/// Names a workloads folder; wins over `workloads_dir` in `vmlab.toml`.
const ENV: &str = "VMLAB_WORKLOADS";

/// The workloads folder the user chose, if any: `VMLAB_WORKLOADS` when it is
/// set and not empty, else `workloads_dir` from `vmlab.toml`. Every command
/// that reads workloads asks this, so they all agree.
pub fn configured(from_file: Option<PathBuf>) -> Option<PathBuf> {
    chosen(std::env::var_os(ENV), from_file)
}

fn chosen(env: Option<OsString>, from_file: Option<PathBuf>) -> Option<PathBuf> {
    env.filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or(from_file)
}

/// The workloads directory to use: `configured`, else `./workloads`, else
/// the built-in copy.
pub fn dir(home: &Home, configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = configured {
        if !has_workloads(dir) {
            bail!(
                "{} holds no workloads (no */{MANIFEST}); fix VMLAB_WORKLOADS or `workloads_dir`",
                dir.display()
            );
        }
        return Ok(dir.to_path_buf());
    }
    let local = Path::new("workloads");
    if has_workloads(local) {
        return Ok(local.to_path_buf());
    }
    unpack_built_in(home)
}

fn has_workloads(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().join(MANIFEST).is_file())
        })
        .unwrap_or(false)
}

/// `home/workloads/<digest>/`: unpacked on first use, never changed after.
fn unpack_built_in(home: &Home) -> Result<PathBuf> {
    let mut files = Vec::new();
    collect(&BUILT_IN, &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let listing: String = files
        .iter()
        .map(|(path, data)| format!("{} {}\n", path.display(), digest::sha256(data)))
        .collect();
    let dir = home
        .root()
        .join("workloads")
        .join(&digest::sha256(listing.as_bytes())[..12]);
    if dir.is_dir() {
        return Ok(dir);
    }
    let staging = dir.with_extension(format!("{}.tmp", std::process::id()));
    for (path, data) in &files {
        let target = staging.join(path);
        std::fs::create_dir_all(target.parent().expect("files sit in a directory"))
            .with_context(|| format!("creating {}", staging.display()))?;
        std::fs::write(&target, data).with_context(|| format!("writing {}", target.display()))?;
    }
    // Another vmlab may have unpacked the same digest meanwhile: either copy is good.
    if std::fs::rename(&staging, &dir).is_err() {
        std::fs::remove_dir_all(&staging).ok();
    }
    Ok(dir)
}

fn collect<'a>(dir: &'a Dir<'a>, out: &mut Vec<(PathBuf, &'a [u8])>) {
    for file in dir.files() {
        out.push((file.path().to_path_buf(), file.contents()));
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file_unless_empty() {
        let file = Some(PathBuf::from("/from/file"));
        let env = |v: &str| Some(OsString::from(v));
        assert_eq!(
            chosen(env("/from/env"), file.clone()),
            Some("/from/env".into())
        );
        assert_eq!(chosen(env(""), file.clone()), file);
        assert_eq!(chosen(None, file.clone()), file);
        assert_eq!(chosen(env("/from/env"), None), Some("/from/env".into()));
        assert_eq!(chosen(None, None), None);
    }

    #[test]
    fn the_built_in_copy_unpacks_once_and_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::new(tmp.path());
        let dir = unpack_built_in(&home).unwrap();
        let again = unpack_built_in(&home).unwrap();
        assert_eq!(dir, again);
        let names: Vec<String> = crate::workload::load_all(&dir)
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        for expected in ["cpu_hog", "hpcg", "memory_hog", "stream"] {
            assert!(names.iter().any(|n| n == expected), "{names:?}");
        }
        let err = super::dir(&home, Some(tmp.path())).unwrap_err().to_string();
        assert!(err.contains("holds no workloads"), "{err}");
    }
}
