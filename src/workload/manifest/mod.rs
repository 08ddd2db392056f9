//! Workload manifests: `workloads/<name>/workload.toml`, one folder per
//! workload, so adding a benchmark is a new folder (plus, at most, a parser).
//!
//! A manifest says where the source comes from (files of the folder, or an
//! upstream archive pinned by URL, SHA-256 and top directory), how the host
//! builds it (argv commands, never a shell; always a static binary, so it runs
//! on Alpine's musl and on a busybox image alike), how to run it, its
//! parameters (typed, with defaults, units and ranges) and which parser reads
//! its output. Commands are templates: `{key}` inside an argument is replaced
//! by the parameter's value, checked against its type first; an argument stays
//! one argument whatever the value.
//!
//! ```toml
//! name = "stream"
//! description = "McCalpin's STREAM: memory bandwidth"
//! kind = "benchmark"                      # or "load"
//! [source]                                # or: files = ["prog.c"]
//! url = "https://…/STREAM-….tar.gz"
//! sha256 = "9776…"
//! top_dir = "STREAM-6703f75…"
//! [build]
//! compiler = "gcc"                        # or "g++": its --version is in the cache key
//! commands = [["gcc", "-O2", "-static", "-DSTREAM_ARRAY_SIZE={array_size}", "stream.c", "-o", "stream"]]
//! binary = "stream"                       # relative to the source directory
//! [run]
//! argv = ["{binary}"]                     # {binary}: the program's path in the guest
//! exit_codes = [0]                        # statuses that still mean "finished"
//! files = ["small.in"]                    # files of this folder it reads, put in its working dir
//! [params.array_size]
//! type = "int"                            # int | size (MiB, key ends _mib) | duration (s, key ends _s) | choice
//! unit = "elements"                       # int only
//! default = 10_000_000
//! ci = 100_000                            # tiny size for CI (optional; else the default)
//! min = 1000
//! max = 1_000_000_000                     # also: multiple_of = 8; choices = ["a", "b"] for choice
//! stage = "build"                         # or "run"
//! description = "elements per array"
//! [output]
//! parser = "stream"                       # see workload::parse
//! files = []                              # result files it writes in its working dir (globs)
//! main = "triad_mb_per_s"                 # the metric that stands for a run (`--repeat auto`)
//! [output.metrics]                        # metrics judged against references: unit, which way is better
//! triad_mb_per_s = { unit = "MB/s", better = "higher" }
//! ```
//!
//! The code is split along what a manifest is used for: `param` reads and
//! checks parameter values, `template` fills them into argv, `load`
//! reads a folder and checks everything serde cannot. This file holds the
//! types themselves.

mod load;
mod param;
mod template;
#[cfg(test)]
mod testkit;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{load, load_all};
pub use param::{Literal, Param, ParamType, Params, Preset, Stage};

/// The manifest's file name inside a workload folder.
pub const MANIFEST: &str = "workload.toml";

/// The run argv placeholder for the program's path in the guest.
pub const BINARY: &str = "binary";

/// A load keeps a VM busy; a benchmark measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Load,
    Benchmark,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Load => "load",
            Self::Benchmark => "benchmark",
        })
    }
}

/// One workload, as read from its folder and validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    /// One line.
    pub description: String,
    pub kind: Kind,
    pub source: Source,
    pub build: Build,
    pub run: Run,
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    pub output: Output,
    /// The folder the manifest was read from (`workloads/<name>`).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Where the source comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SourceToml")]
pub enum Source {
    /// Files of the workload's own folder (our programs), copied to the build directory.
    Files(Vec<String>),
    /// An upstream release archive (.tar.gz) and the directory it unpacks to.
    Upstream {
        url: String,
        sha256: String,
        top_dir: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceToml {
    files: Option<Vec<String>>,
    url: Option<String>,
    sha256: Option<String>,
    top_dir: Option<String>,
}

impl TryFrom<SourceToml> for Source {
    type Error = String;

    fn try_from(s: SourceToml) -> Result<Self, String> {
        match s {
            SourceToml {
                files: Some(files),
                url: None,
                sha256: None,
                top_dir: None,
            } => Ok(Self::Files(files)),
            SourceToml {
                files: None,
                url: Some(url),
                sha256: Some(sha256),
                top_dir: Some(top_dir),
            } => Ok(Self::Upstream {
                url,
                sha256,
                top_dir,
            }),
            _ => Err("give either `files` or all three of `url`, `sha256`, `top_dir`".into()),
        }
    }
}

/// How the host builds the static binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub compiler: Compiler,
    /// argv templates, run in order in the source directory.
    pub commands: Vec<Vec<String>>,
    /// The binary the commands make, relative to the source directory.
    pub binary: String,
}

/// The compiler whose version line goes into the build cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Compiler {
    #[serde(rename = "gcc")]
    Gcc,
    #[serde(rename = "g++")]
    Gxx,
}

impl Compiler {
    pub fn program(self) -> &'static str {
        match self {
            Self::Gcc => "gcc",
            Self::Gxx => "g++",
        }
    }
}

/// How the guest runs the binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// argv template; `{binary}` is the program's path in the guest.
    pub argv: Vec<String>,
    /// Exit statuses that still mean the run finished (its output is parsed).
    #[serde(default = "success_only")]
    pub exit_codes: Vec<i32>,
    /// Files of the workload folder the program reads (input decks), put at
    /// the same relative path in its working directory before it starts.
    #[serde(default)]
    pub files: Vec<String>,
}

fn success_only() -> Vec<i32> {
    vec![0]
}

/// What the run leaves behind and who reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// A name `workload::parse::parse` knows.
    pub parser: String,
    /// Patterns (`*`, `?`, `[…]`) of result files the program writes in its working
    /// directory; kept as raw output and given to the parser.
    pub files: Vec<String>,
    /// The metric that stands for a run: `vmlab bench --repeat auto` repeats
    /// until its spread is small. One of `metrics`.
    #[serde(default)]
    pub main: Option<String>,
    /// The metrics a run is judged on against references, by name: the unit
    /// the parser gives them and which way is better. Other metrics the
    /// parser gives (sizes, counts) are recorded but never judged.
    #[serde(default)]
    pub metrics: BTreeMap<String, MetricSpec>,
}

/// A judged metric: its unit, and whether a higher or a lower value is better.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub unit: String,
    pub better: Better,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl std::fmt::Display for Better {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Higher => "higher",
            Self::Lower => "lower",
        })
    }
}

impl Workload {
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// True if a file the program left in its working directory is a result to keep.
    pub fn is_output_file(&self, file_name: &str) -> bool {
        self.output
            .files
            .iter()
            .filter_map(|pattern| glob::Pattern::new(pattern).ok())
            .any(|pattern| pattern.matches_with(file_name, FILE_NAME))
    }
}

/// Lowercase letters, digits and `_`, starting with a letter.
fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// How `output.files` patterns match (`*`, `?`, `[…]` as in a shell): file
/// names have no `/`, and case counts, as on Linux.
const FILE_NAME: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

#[cfg(test)]
mod tests {
    use super::testkit::demo;
    use super::*;

    #[test]
    fn kinds_print_as_manifests_spell_them() {
        for kind in [Kind::Load, Kind::Benchmark] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.to_string());
        }
    }

    #[test]
    fn output_files_match_their_globs() {
        let (_root, mut w) = demo();
        assert!(w.is_output_file("result-1.txt"));
        assert!(w.is_output_file("result-.txt"));
        assert!(!w.is_output_file("result-1.txt.bak"));
        assert!(!w.is_output_file("my-result-1.txt"));
        for (pattern, name, matches) in [
            (
                "HPCG-Benchmark_3.1_*.txt",
                "HPCG-Benchmark_3.1_2026-11-22_04-37-31.txt",
                true,
            ),
            ("hpcg*.txt", "HPCG-Benchmark_3.1_x.txt", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("?x", "yx", true),
            ("?x", "x", false),
            ("*", "", true),
            ("result-[0-9].txt", "result-7.txt", true),
            ("result-[0-9].txt", "result-x.txt", false),
            ("*.TXT", "a.txt", false),
        ] {
            w.output.files = vec![pattern.to_owned()];
            assert_eq!(w.is_output_file(name), matches, "{pattern} {name}");
        }
    }
}
