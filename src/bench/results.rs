//! Result directories: `results/<run-id>/` with `run.json`, CSV files and
//! `raw/`. Run ids sort by time and name what ran.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// `20261122-051230-hpcg`: UTC time, then what ran.
pub fn run_id(what: &str, at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}-{what}", &digits[..8], &digits[8..14])
}

/// RFC 3339 UTC with milliseconds, for CSV rows.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Creates `root/<run_id>/`; refuses to reuse an existing one.
pub fn create_run_dir(root: &Path, run_id: &str) -> Result<PathBuf> {
    let dir = root.join(run_id);
    if dir.exists() {
        bail!(
            "{} exists already; wait a second or pick another --results",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
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
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_millis(1500)),
            "1970-01-01T00:00:01.500Z"
        );
    }
}
