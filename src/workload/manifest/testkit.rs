//! A demo manifest and helpers the manifest tests share.

use std::path::{Path, PathBuf};

use super::{MANIFEST, Workload, load};

/// A valid manifest using every parameter type; tests change one thing at a time.
pub(super) const DEMO: &str = r#"
name = "demo"
description = "a test workload"
kind = "load"

[source]
files = ["demo.c"]

[build]
compiler = "gcc"
commands = [["gcc", "-DSIZE={size}", "-o", "demo", "demo.c"], ["strip", "demo"]]
binary = "demo"

[run]
argv = ["{binary}", "--mem={mem_mib}", "--for={time_s}", "--mode", "{mode}"]

[params.size]
type = "int"
unit = "elements"
default = 1000
ci = 16
min = 8
max = 4096
multiple_of = 8
stage = "build"
description = "elements"

[params.mem_mib]
type = "size"
default = "1G"
ci = "16M"
min = 1
max = 4096
stage = "run"
description = "memory"

[params.time_s]
type = "duration"
default = "2m"
min = 1
max = 3600
stage = "run"
description = "time"

[params.mode]
type = "choice"
choices = ["fast", "slow"]
default = "fast"
stage = "run"
description = "mode"

[output]
parser = "memory_hog"
files = ["result-*.txt"]
"#;

pub(super) fn repo_workloads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads")
}

/// A workloads folder holding `demo` with this manifest text.
pub(super) fn demo_dir(manifest: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(MANIFEST), manifest).unwrap();
    std::fs::write(dir.join("demo.c"), "int main(void) { return 0; }\n").unwrap();
    root
}

pub(super) fn demo() -> (tempfile::TempDir, Workload) {
    let root = demo_dir(DEMO);
    let workload = load(root.path(), "demo").unwrap();
    (root, workload)
}

/// The one-line error for DEMO with `from` replaced by `to`.
pub(super) fn invalid(from: &str, to: &str) -> String {
    assert!(DEMO.contains(from), "{from:?} is not in DEMO");
    let root = demo_dir(&DEMO.replacen(from, to, 1));
    let err = format!("{:#}", load(root.path(), "demo").unwrap_err());
    let path = root.path().join("demo").join(MANIFEST);
    assert!(!err.contains('\n'), "not one line: {err}");
    err.strip_prefix(&format!("{}", path.display()))
        .unwrap_or_else(|| panic!("does not name the file: {err}"))
        .to_owned()
}

pub(super) fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}
