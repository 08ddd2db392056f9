//! Real builds on this host through `workload::build`: gcc, g++, make, tar and
//! the upstream archives in `../shared/benchmarks` (a local mirror, found by
//! SHA-256). Each test prints `skipped: …` and returns when those are missing,
//! or fails under `VMLAB_REQUIRE_TOOLS=1` (`just test`, CI).
//! Run with `cargo test --test workload_build` (about three minutes on 2 cores).

mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use vmlab::workload::manifest::Source;
use vmlab::workload::parse::{Parsed, parse};
use vmlab::workload::{self, Built, Preset, Workload};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn mirror() -> PathBuf {
    repo().join("../shared/benchmarks")
}

/// Why these tests cannot run here, if they cannot.
fn missing_tools() -> Option<String> {
    if let Some(why) = ["gcc", "g++", "make", "tar"]
        .into_iter()
        .find_map(tools::missing)
    {
        return Some(why);
    }
    let mirror = mirror();
    (!mirror.is_dir()).then(|| format!("no benchmark mirror at {}", mirror.display()))
}

macro_rules! require_tools {
    () => {
        if !tools::ready(missing_tools()) {
            return;
        }
    };
}

fn load(name: &str) -> Workload {
    workload::load(&repo().join("workloads"), name).unwrap()
}

/// The archive of an upstream workload in the mirror, or its folder.
fn source_of(w: &Workload) -> PathBuf {
    let Source::Upstream { sha256, .. } = &w.source else {
        return w.dir.clone();
    };
    std::fs::read_dir(mirror())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| vmlab::download::digest::of_file(p).unwrap().sha256 == *sha256)
        .unwrap_or_else(|| panic!("no file with SHA-256 {sha256} in {}", mirror().display()))
}

fn build_ci(w: &Workload, cache: &Path) -> Built {
    let params = w.resolve_preset(Preset::Ci, &[]).unwrap();
    workload::build(w, &source_of(w), &params, cache).unwrap()
}

/// Runs the binary natively with the CI parameters in a fresh directory
/// holding its run files, as the guest would, and parses what it printed
/// and wrote.
fn run_ci(w: &Workload, built: &Built) -> Parsed {
    let params = w.resolve_preset(Preset::Ci, &[]).unwrap();
    let argv = w.run_argv(&params, built.binary.to_str().unwrap()).unwrap();
    let workdir = tempfile::tempdir().unwrap();
    for rel in &w.run.files {
        let to = workdir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(w.dir.join(rel), to).unwrap();
    }
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(workdir.path())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    let status = out.status.code().unwrap();
    assert!(
        w.run.exit_codes.contains(&status),
        "{} exited {status}: {}",
        w.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<(String, String)> = std::fs::read_dir(workdir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| w.is_output_file(name))
        .map(|name| {
            let text = std::fs::read_to_string(workdir.path().join(&name)).unwrap();
            (name, text)
        })
        .collect();
    let stdout = String::from_utf8(out.stdout).unwrap();
    parse(&w.output.parser, &stdout, &files).unwrap()
}

#[test]
fn our_loads_build_once_then_come_from_the_cache() {
    require_tools!();
    let cache = tempfile::tempdir().unwrap();
    for name in ["memory_hog", "cpu_hog"] {
        let w = load(name);
        let first = build_ci(&w, cache.path());
        assert!(!first.cache_hit, "{name}: a fresh cache cannot hit");
        let bytes = std::fs::read(&first.binary).unwrap();
        workload::build::check_static_elf(&bytes).unwrap();
        let second = build_ci(&w, cache.path());
        assert_eq!(
            second,
            Built {
                cache_hit: true,
                ..first.clone()
            }
        );
        let parsed = run_ci(&w, &first);
        assert!(!parsed.metrics.is_empty(), "{name}: {parsed:?}");
    }
    let memory = run_ci(
        &load("memory_hog"),
        &build_ci(&load("memory_hog"), cache.path()),
    );
    assert_eq!(memory.get("peak_held_mib"), Some(16.0), "the ci size");
}

#[test]
fn stream_builds_from_the_pinned_archive_with_its_size() {
    require_tools!();
    let cache = tempfile::tempdir().unwrap();
    let w = load("stream");
    let built = build_ci(&w, cache.path());
    assert!(!built.cache_hit);
    assert!(build_ci(&w, cache.path()).cache_hit);
    let parsed = run_ci(&w, &built);
    assert_eq!(parsed.valid, Some(true));
    assert!(parsed.get("triad_mb_per_s").unwrap() > 0.0);

    // The array size is compiled in: another size is another build.
    let params = w
        .resolve_preset(Preset::Ci, &[("array_size".into(), "200000".into())])
        .unwrap();
    let other = workload::build(&w, &source_of(&w), &params, cache.path()).unwrap();
    assert!(!other.cache_hit);
    assert_ne!(other.binary, built.binary);
    let log = std::fs::read_to_string(other.binary.with_file_name("build.log")).unwrap();
    assert!(log.contains("-DSTREAM_ARRAY_SIZE=200000"), "{log}");
}

#[test]
fn concurrent_builds_of_one_key_agree() {
    require_tools!();
    let cache = tempfile::tempdir().unwrap();
    let w = load("memory_hog");
    let results: Vec<Built> = thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| build_ci(&w, cache.path())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for built in &results[1..] {
        assert_eq!(built.binary, results[0].binary);
        assert_eq!(built.sha256, results[0].sha256);
    }
    // One entry, no scratch directories left behind.
    let entries: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
}

#[test]
fn every_upstream_benchmark_builds_runs_and_parses() {
    require_tools!();
    let cache = tempfile::tempdir().unwrap();
    for (name, metric) in [
        ("hpcg", "rating_gflop_per_s"),
        ("hpccg", "total_mflop_per_s"),
        ("minife", "total_cg_mflop_per_s"),
        ("xsbench", "lookups_per_s"),
        ("rsbench", "lookups_per_s"),
        ("simplemoc", "time_per_intersection_ns"),
        ("cohmm", "comd_calls"),
    ] {
        let w = load(name);
        let parsed = run_ci(&w, &build_ci(&w, cache.path()));
        assert!(parsed.get(metric).unwrap() > 0.0, "{name}: {parsed:?}");
        if name == "hpcg" {
            assert_eq!(parsed.valid, Some(true));
        }
    }
}

/// miniQMC also needs CMake, git and Debian's static BLAS/LAPACK with
/// gfortran's runtime (its manifest names their paths).
#[test]
fn miniqmc_builds_with_cmake_and_static_blas() {
    require_tools!();
    let needs = ["cmake", "git"].map(|t| which::which(t).is_ok());
    let libs = [
        "/usr/lib/x86_64-linux-gnu/libblas.a",
        "/usr/lib/x86_64-linux-gnu/liblapack.a",
    ];
    let missing = needs.contains(&false) || !libs.iter().all(|l| Path::new(l).is_file());
    if !tools::ready(missing.then(|| {
        format!(
            "needs cmake, git and {} (scripts/setup installs them)",
            libs.join(", ")
        )
    })) {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let w = load("miniqmc");
    let parsed = run_ci(&w, &build_ci(&w, cache.path()));
    for metric in ["total_s", "diffusion_s", "pseudopotential_s"] {
        assert!(parsed.get(metric).unwrap() > 0.0, "{metric}: {parsed:?}");
    }
    assert_eq!(parsed.get("threads"), Some(1.0), "OMP_NUM_THREADS=1");
}

#[test]
fn hpcg_builds_with_openmp() {
    require_tools!();
    let cache = tempfile::tempdir().unwrap();
    let w = load("hpcg");
    let params = w
        .resolve_preset(Preset::Ci, &[("arch".into(), "GCC_OMP".into())])
        .unwrap();
    let built = workload::build(&w, &source_of(&w), &params, cache.path()).unwrap();
    let log = std::fs::read_to_string(built.binary.with_file_name("build.log")).unwrap();
    assert!(log.contains("-fopenmp"), "{log}");
    assert_eq!(run_ci(&w, &built).valid, Some(true));
}

/// Builds `prog.c` as a workload in a temporary folder with `link_flags`
/// (TOML array items), expecting failure; returns the error. Nothing may be
/// left in the cache.
fn failed_build(code: &str, link_flags: &str) -> String {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("scratch");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("prog.c"), code).unwrap();
    let manifest = format!(
        r#"
name = "scratch"
description = "a test program"
kind = "load"
[source]
files = ["prog.c"]
[build]
compiler = "gcc"
commands = [["gcc", "-O2", {link_flags} "-o", "prog", "prog.c"]]
binary = "prog"
[run]
argv = ["{{binary}}"]
[output]
parser = "memory_hog"
files = []
"#
    );
    std::fs::write(dir.join("workload.toml"), manifest).unwrap();
    let w = workload::load(root.path(), "scratch").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let params = w.resolve_params(&[]).unwrap();
    let err = workload::build(&w, &w.dir, &params, cache.path()).unwrap_err();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    format!("{err:#}")
}

#[test]
fn a_dynamically_linked_result_is_refused_and_not_cached() {
    require_tools!();
    assert_eq!(
        failed_build("int main(void) { return 0; }\n", ""),
        "`scratch`: the built `prog`: dynamically linked (needs /lib64/ld-linux-x86-64.so.2); add -static to its link command"
    );
}

#[test]
fn a_failed_command_quotes_the_end_of_its_output() {
    require_tools!();
    let err = failed_build("int main(void) { return missing; }\n", "\"-static\",");
    assert!(
        err.starts_with("building `scratch`: `gcc -O2 -static -o prog prog.c` failed (`gcc` failed (exit status: 1)"),
        "{err}"
    );
    // gcc's own words, whatever the locale's quotes.
    assert!(
        err.contains("prog.c:1:") && err.contains("undeclared"),
        "{err}"
    );
}

#[test]
fn upstream_pins_match_the_mirror() {
    require_tools!();
    for w in workload::load_all(&repo().join("workloads")).unwrap() {
        let Source::Upstream { top_dir, .. } = &w.source else {
            continue;
        };
        let archive = source_of(&w);
        let out = Command::new("tar")
            .arg("-tzf")
            .arg(&archive)
            .output()
            .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        assert!(
            listing
                .lines()
                .all(|l| l.starts_with(&format!("{top_dir}/"))),
            "{}: not everything in {} is under {top_dir}/",
            w.name,
            archive.display()
        );
    }
}
