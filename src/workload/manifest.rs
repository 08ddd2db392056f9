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
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};

use super::parse as parsers;
use crate::units::Mib;

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
    /// Globs (`*`, `?`) of result files the program writes in its working
    /// directory; kept as raw output and given to the parser.
    pub files: Vec<String>,
}

/// When a parameter's value is used: a build parameter makes another binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Build,
    Run,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Build => "build",
            Self::Run => "run",
        })
    }
}

/// The type of a parameter, which decides how values are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A whole number in the manifest's `unit`.
    Int,
    /// A memory size (`512M`, `2G`, bare MiB), passed on in MiB.
    Size,
    /// A time (`90`, `90s`, `2m`, `1h`), passed on in seconds.
    Duration,
    /// One of `choices`, passed on as written.
    Choice,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Int => "int",
            Self::Size => "size",
            Self::Duration => "duration",
            Self::Choice => "choice",
        })
    }
}

/// A value as written in a manifest: `default = 512` or `default = "512M"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "a whole number or a string")]
pub enum Literal {
    Int(i64),
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(v) => write!(f, "{v}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// One parameter of a workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: ParamType,
    pub default: Literal,
    /// The tiny CI size (seconds under TCG); the default when absent.
    pub ci: Option<Literal>,
    /// Required for `int`; implied for `size` (MiB) and `duration` (s).
    pub unit: Option<String>,
    /// Bounds in the parameter's unit; required except for `choice`.
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub multiple_of: Option<i64>,
    /// The allowed values of a `choice`.
    pub choices: Option<Vec<String>>,
    pub stage: Stage,
    pub description: String,
}

impl Param {
    /// The unit values are passed on in (`MiB`, `s`, the manifest's); empty for a choice.
    pub fn unit(&self) -> &str {
        match self.kind {
            ParamType::Int => self.unit.as_deref().unwrap_or(""),
            ParamType::Size => "MiB",
            ParamType::Duration => "s",
            ParamType::Choice => "",
        }
    }

    /// What may be given, for tables and errors: `16..=1024 points, a multiple of 8`,
    /// `on|off`.
    pub fn range(&self) -> String {
        if let Some(choices) = &self.choices {
            return choices.join("|");
        }
        let mut text = format!(
            "{}..={} {}",
            self.min.unwrap_or(i64::MIN),
            self.max.unwrap_or(i64::MAX),
            self.unit()
        );
        if let Some(step) = self.multiple_of {
            text += &format!(", a multiple of {step}");
        }
        text
    }

    /// The value for a preset, as written in the manifest.
    pub fn preset_value(&self, preset: Preset) -> &Literal {
        match preset {
            Preset::Ci => self.ci.as_ref().unwrap_or(&self.default),
            Preset::Default => &self.default,
        }
    }

    /// Reads a given value and returns it as it is passed on (MiB, seconds, …).
    pub fn value(&self, text: &str) -> Result<String> {
        let text = text.trim();
        let number = match self.kind {
            ParamType::Choice => {
                let choices = self.choices.as_deref().unwrap_or_default();
                ensure!(
                    choices.iter().any(|c| c == text),
                    "`{text}` is not one of {}",
                    self.range()
                );
                return Ok(text.to_owned());
            }
            ParamType::Int => text
                .parse::<i64>()
                .map_err(|_| anyhow!("`{text}` is not a whole number")),
            ParamType::Size => text
                .parse::<Mib>()
                .and_then(|mib| Ok(i64::try_from(mib.0)?)),
            ParamType::Duration => parse_duration_s(text),
        }
        .map_err(|e| anyhow!("{e}; give {}", self.range()))?;
        let in_range = self.min.is_none_or(|min| number >= min)
            && self.max.is_none_or(|max| number <= max)
            && self.multiple_of.is_none_or(|step| number % step == 0);
        ensure!(
            in_range,
            "{number} {} is out of range; give {}",
            self.unit(),
            self.range()
        );
        Ok(number.to_string())
    }
}

/// A time in whole seconds: `90`, `90s`, `2m`, `1h`.
fn parse_duration_s(text: &str) -> Result<i64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => bail!("`{text}` is not a duration (write it like 90, 90s, 2m or 1h)"),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(|| anyhow!("`{text}` is not a duration (write it like 90, 90s, 2m or 1h)"))
}

/// Which manifest value a parameter takes when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// About a minute in a TCG guest (512 MiB, 1 vCPU).
    Default,
    /// Seconds in a TCG guest: for CI and tests.
    Ci,
}

/// Resolved values of every parameter of a workload, as passed on (sizes in
/// MiB, durations in seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// (key, value) pairs in key order, for results and logs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Workload {
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The default values, overridden by `given` (key, value) pairs.
    pub fn resolve_params(&self, given: &[(String, String)]) -> Result<Params> {
        self.resolve_preset(Preset::Default, given)
    }

    /// The preset's values, overridden by `given` (key, value) pairs.
    pub fn resolve_preset(&self, preset: Preset, given: &[(String, String)]) -> Result<Params> {
        let mut values = BTreeMap::new();
        for (key, text) in given {
            let param = self.params.get(key).ok_or_else(|| {
                anyhow!(
                    "`{}` has no parameter `{key}`; its parameters: {}",
                    self.name,
                    self.param_names()
                )
            })?;
            let value = param
                .value(text)
                .with_context(|| format!("`{}` parameter `{key}`", self.name))?;
            ensure!(
                values.insert(key.clone(), value).is_none(),
                "`{}` parameter `{key}` is given twice",
                self.name
            );
        }
        for (key, param) in &self.params {
            if !values.contains_key(key) {
                let value = param
                    .value(&param.preset_value(preset).to_string())
                    .with_context(|| {
                        format!("{}: `params.{key}`", self.manifest_path().display())
                    })?;
                values.insert(key.clone(), value);
            }
        }
        Ok(Params(values))
    }

    /// The build commands with the build parameters filled in.
    pub fn build_commands(&self, params: &Params) -> Result<Vec<Vec<String>>> {
        self.build
            .commands
            .iter()
            .map(|command| render(command, |key| params.get(key)))
            .collect()
    }

    /// The run argv with the run parameters filled in and `{binary}` replaced
    /// by the program's path in the guest.
    pub fn run_argv(&self, params: &Params, binary: &str) -> Result<Vec<String>> {
        render(&self.run.argv, |key| {
            if key == BINARY {
                Some(binary)
            } else {
                params.get(key)
            }
        })
    }

    /// True if a file the program left in its working directory is a result to keep.
    pub fn is_output_file(&self, file_name: &str) -> bool {
        self.output
            .files
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), file_name.as_bytes()))
    }

    fn param_names(&self) -> String {
        if self.params.is_empty() {
            return "none".into();
        }
        self.params.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Checks everything serde cannot; errors name the key.
    fn validate(&self, dir_name: &str) -> Result<()> {
        ensure!(
            self.name == dir_name,
            "`name` is `{}` but the folder is `{dir_name}`; they must be the same",
            self.name
        );
        ensure!(
            is_identifier(&self.name),
            "`name`: `{}` must be lowercase letters, digits and _",
            self.name
        );
        ensure!(
            !self.description.trim().is_empty() && !self.description.contains('\n'),
            "`description` must be one line"
        );
        self.validate_source()?;
        for file in &self.run.files {
            self.check_folder_file("run.files", file)?;
        }
        for (key, param) in &self.params {
            validate_param(key, param).with_context(|| format!("`params.{key}`"))?;
        }
        ensure!(!self.build.commands.is_empty(), "`build.commands` is empty");
        ensure!(
            is_plain_relative(&self.build.binary),
            "`build.binary`: `{}` must be a path inside the source directory",
            self.build.binary
        );
        ensure!(
            self.run.exit_codes.contains(&0),
            "`run.exit_codes` must contain 0"
        );
        ensure!(
            self.run.argv.iter().filter(|a| **a == "{binary}").count() == 1,
            "`run.argv` must have `{{binary}}` as one whole argument"
        );
        let build_keys = self.used_keys(
            Stage::Build,
            "build.commands",
            self.build.commands.iter().flatten(),
        )?;
        let run_keys = self.used_keys(Stage::Run, "run.argv", self.run.argv.iter())?;
        for (key, param) in &self.params {
            let (used, stage) = match param.stage {
                Stage::Build => (&build_keys, "build.commands"),
                Stage::Run => (&run_keys, "run.argv"),
            };
            ensure!(
                used.contains(key.as_str()),
                "`params.{key}` is a {} parameter but `{stage}` never uses `{{{key}}}`",
                param.stage
            );
        }
        ensure!(
            parsers::is_known(&self.output.parser),
            "`output.parser`: no parser `{}`; known: {}",
            self.output.parser,
            parsers::names().join(", ")
        );
        for pattern in &self.output.files {
            ensure!(
                !pattern.is_empty() && !pattern.contains('/'),
                "`output.files`: `{pattern}` must be a file name pattern, without `/`"
            );
        }
        Ok(())
    }

    fn validate_source(&self) -> Result<()> {
        match &self.source {
            Source::Files(files) => {
                ensure!(!files.is_empty(), "`source.files` is empty");
                for file in files {
                    ensure!(
                        !file.contains('/'),
                        "`source.files`: `{file}` must be a file name in the workload folder"
                    );
                    self.check_folder_file("source.files", file)?;
                }
            }
            Source::Upstream {
                url,
                sha256,
                top_dir,
            } => {
                ensure!(
                    url.starts_with("https://"),
                    "`source.url`: `{url}` must be an https:// URL"
                );
                ensure!(
                    sha256.len() == 64
                        && sha256
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                    "`source.sha256` must be 64 lowercase hex digits"
                );
                ensure!(
                    is_plain_relative(top_dir) && !top_dir.contains('/'),
                    "`source.top_dir`: `{top_dir}` must be one directory name"
                );
            }
        }
        Ok(())
    }

    /// `file` (a path under `key`) must be a file inside the workload folder.
    fn check_folder_file(&self, key: &str, file: &str) -> Result<()> {
        ensure!(
            is_plain_relative(file),
            "`{key}`: `{file}` must be a path inside the workload folder"
        );
        ensure!(
            self.dir.join(file).is_file(),
            "`{key}`: `{file}` is not in {}",
            self.dir.display()
        );
        Ok(())
    }

    /// The placeholders used in some templates; each must name a parameter of
    /// the right stage (or `binary` in the run argv).
    fn used_keys<'a>(
        &self,
        stage: Stage,
        what: &str,
        args: impl Iterator<Item = &'a String>,
    ) -> Result<BTreeSet<&'a str>> {
        let mut used = BTreeSet::new();
        for arg in args {
            for piece in pieces(arg).with_context(|| format!("`{what}`"))? {
                let Piece::Key(key) = piece else { continue };
                if stage == Stage::Run && key == BINARY {
                    continue;
                }
                match self.params.get(key) {
                    Some(param) if param.stage == stage => {}
                    Some(_) => bail!(
                        "`{what}` uses `{{{key}}}`, which is not a {stage} parameter (see `params.{key}.stage`)"
                    ),
                    None => bail!("`{what}` uses `{{{key}}}` but there is no `params.{key}`"),
                }
                used.insert(key);
            }
        }
        Ok(used)
    }
}

fn validate_param(key: &str, p: &Param) -> Result<()> {
    ensure!(
        is_identifier(key) && key != BINARY,
        "the key must be lowercase letters, digits and _, and not `{BINARY}`"
    );
    ensure!(!p.description.trim().is_empty(), "`description` is missing");
    let bounded = p.min.is_some() && p.max.is_some();
    match p.kind {
        ParamType::Choice => {
            let choices = p.choices.as_deref().unwrap_or_default();
            ensure!(!choices.is_empty(), "a choice needs `choices`");
            ensure!(
                choices.iter().all(|c| is_safe_word(c)),
                "`choices` may hold letters, digits, `_`, `.` and `-` only"
            );
            ensure!(
                p.unit.is_none() && p.min.is_none() && p.max.is_none() && p.multiple_of.is_none(),
                "a choice takes no `unit`, `min`, `max` or `multiple_of`"
            );
        }
        ParamType::Int => {
            ensure!(p.unit.is_some(), "an int needs a `unit`");
            ensure!(bounded, "an int needs `min` and `max`");
        }
        ParamType::Size | ParamType::Duration => {
            let suffix = if p.kind == ParamType::Size {
                "_mib"
            } else {
                "_s"
            };
            ensure!(
                key.ends_with(suffix),
                "the key of a {} must end in `{suffix}` (its unit)",
                p.kind
            );
            ensure!(
                p.unit.is_none(),
                "the unit of a {} is fixed: remove `unit`",
                p.kind
            );
            ensure!(bounded, "a {} needs `min` and `max`", p.kind);
        }
    }
    if p.kind != ParamType::Choice {
        ensure!(p.choices.is_none(), "only a choice takes `choices`");
        ensure!(p.min <= p.max, "`min` is above `max`");
        ensure!(
            p.multiple_of.is_none_or(|step| step > 0),
            "`multiple_of` must be positive"
        );
    }
    p.value(&p.default.to_string()).context("`default`")?;
    if let Some(ci) = &p.ci {
        p.value(&ci.to_string()).context("`ci`")?;
    }
    Ok(())
}

/// Lowercase letters, digits and `_`, starting with a letter.
fn is_identifier(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Safe anywhere in an argv, even through a shell: no quoting needed.
fn is_safe_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A relative path that stays below its base (no `..`, not absolute).
fn is_plain_relative(s: &str) -> bool {
    !s.is_empty()
        && Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

// --- templates ------------------------------------------------------------------

/// A part of an argument template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Key(&'a str),
}

/// Splits `--nx={nx}` into `--nx=` and the key `nx`.
fn pieces(arg: &str) -> Result<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(open) = rest.find(['{', '}']) {
        ensure!(
            rest[open..].starts_with('{'),
            "`{arg}` has a `}}` without its `{{`"
        );
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| anyhow!("`{arg}` has a `{{` without its `}}`"))?
            + open;
        let key = &rest[open + 1..close];
        ensure!(
            is_identifier(key),
            "`{arg}`: `{{{key}}}` is not a parameter name"
        );
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        out.push(Piece::Key(key));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// Fills in a template, one output argument per template argument.
fn render<'v>(template: &[String], value: impl Fn(&str) -> Option<&'v str>) -> Result<Vec<String>> {
    template
        .iter()
        .map(|arg| {
            pieces(arg)?
                .into_iter()
                .map(|piece| match piece {
                    Piece::Text(text) => Ok(text),
                    Piece::Key(key) => {
                        value(key).ok_or_else(|| anyhow!("no value for `{{{key}}}` in `{arg}`"))
                    }
                })
                .collect::<Result<String>>()
        })
        .collect()
}

/// Shell-style matching of a file name: `*` any run of characters, `?` one.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and where in the name it started matching.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

// --- loading --------------------------------------------------------------------

/// Every workload under `workloads_dir`, by name. A folder without a manifest
/// is an error (a typo would otherwise hide a workload).
pub fn load_all(workloads_dir: &Path) -> Result<Vec<Workload>> {
    folders(workloads_dir)?
        .iter()
        .map(|dir| load_dir(dir))
        .collect()
}

/// The workload `name`; an unknown name lists the known ones.
pub fn load(workloads_dir: &Path, name: &str) -> Result<Workload> {
    let dir = workloads_dir.join(name);
    if !is_identifier(name) || !dir.join(MANIFEST).is_file() {
        let known: Vec<String> = folders(workloads_dir)?
            .iter()
            .filter(|d| d.join(MANIFEST).is_file())
            .filter_map(|d| Some(d.file_name()?.to_str()?.to_owned()))
            .collect();
        bail!(
            "unknown workload `{name}`; known: {} (in {})",
            known.join(", "),
            workloads_dir.display()
        );
    }
    load_dir(&dir)
}

/// The sub-folders of `workloads_dir`, sorted.
fn folders(workloads_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(workloads_dir).with_context(|| {
        format!(
            "reading workloads from {}; run vmlab from the repository root",
            workloads_dir.display()
        )
    })?;
    let mut dirs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", workloads_dir.display()))?
            .path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn load_dir(dir: &Path) -> Result<Workload> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}; every folder in workloads/ needs one",
            path.display()
        )
    })?;
    let mut workload: Workload = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map_or(0, |s| text[..s.start].matches('\n').count() + 1);
        anyhow!("{}:{line}: {}", path.display(), e.message().trim())
    })?;
    workload.dir = dir.to_path_buf();
    let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    workload
        .validate(dir_name)
        .map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    Ok(workload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid manifest using every parameter type; tests change one thing at a time.
    const DEMO: &str = r#"
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

    fn repo_workloads() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads")
    }

    /// A workloads folder holding `demo` with this manifest text.
    fn demo_dir(manifest: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("demo");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST), manifest).unwrap();
        std::fs::write(dir.join("demo.c"), "int main(void) { return 0; }\n").unwrap();
        root
    }

    fn demo() -> (tempfile::TempDir, Workload) {
        let root = demo_dir(DEMO);
        let workload = load(root.path(), "demo").unwrap();
        (root, workload)
    }

    /// The one-line error for DEMO with `from` replaced by `to`.
    fn invalid(from: &str, to: &str) -> String {
        assert!(DEMO.contains(from), "{from:?} is not in DEMO");
        let root = demo_dir(&DEMO.replacen(from, to, 1));
        let err = format!("{:#}", load(root.path(), "demo").unwrap_err());
        let path = root.path().join("demo").join(MANIFEST);
        assert!(!err.contains('\n'), "not one line: {err}");
        err.strip_prefix(&format!("{}", path.display()))
            .unwrap_or_else(|| panic!("does not name the file: {err}"))
            .to_owned()
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn every_workload_in_the_repository_loads_and_renders() {
        let all = load_all(&repo_workloads()).unwrap();
        let names: Vec<&str> = all.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cohmm",
                "cpu_hog",
                "hpccg",
                "hpcg",
                "memory_hog",
                "minife",
                "miniqmc",
                "rsbench",
                "simplemoc",
                "stream",
                "xsbench"
            ]
        );
        for w in &all {
            for preset in [Preset::Default, Preset::Ci] {
                let params = w.resolve_preset(preset, &[]).unwrap();
                assert!(!w.build_commands(&params).unwrap().is_empty());
                assert_eq!(
                    w.run_argv(&params, "/tmp/x").unwrap()[0],
                    "/tmp/x",
                    "{}",
                    w.name
                );
            }
        }
    }

    #[test]
    fn presets_and_given_values_render_into_argv() {
        let (_root, w) = demo();
        let defaults = w.resolve_params(&[]).unwrap();
        assert_eq!(
            w.build_commands(&defaults).unwrap(),
            [
                strings(&["gcc", "-DSIZE=1000", "-o", "demo", "demo.c"]),
                strings(&["strip", "demo"])
            ]
        );
        assert_eq!(
            w.run_argv(&defaults, "/root/demo").unwrap(),
            strings(&["/root/demo", "--mem=1024", "--for=120", "--mode", "fast"])
        );
        let ci = w.resolve_preset(Preset::Ci, &[]).unwrap();
        assert_eq!(ci.get("size"), Some("16"));
        assert_eq!(ci.get("mem_mib"), Some("16"));
        assert_eq!(ci.get("time_s"), Some("120"), "no ci value: the default");

        let chosen = w
            .resolve_preset(
                Preset::Ci,
                &given(&[("mem_mib", "2G"), ("time_s", "90s"), ("mode", "slow")]),
            )
            .unwrap();
        assert_eq!(
            chosen.iter().collect::<Vec<_>>(),
            [
                ("mem_mib", "2048"),
                ("mode", "slow"),
                ("size", "16"),
                ("time_s", "90")
            ]
        );
    }

    #[test]
    fn run_files_may_sit_in_sub_folders() {
        let root = demo_dir(&DEMO.replacen("[run]\n", "[run]\nfiles = [\"decks/small.in\"]\n", 1));
        let decks = root.path().join("demo/decks");
        std::fs::create_dir(&decks).unwrap();
        std::fs::write(decks.join("small.in"), "1\n").unwrap();
        let w = load(root.path(), "demo").unwrap();
        assert_eq!(w.run.files, ["decks/small.in"]);
        assert!(demo().1.run.files.is_empty(), "none unless named");
    }

    #[test]
    fn a_value_never_splits_into_arguments() {
        let (_root, w) = demo();
        let err = w
            .resolve_params(&given(&[("mode", "fast --evil")]))
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "`demo` parameter `mode`: `fast --evil` is not one of fast|slow"
        );
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let (_root, w) = demo();
        let cases = [
            (
                ("colour", "red"),
                "`demo` has no parameter `colour`; its parameters: mem_mib, mode, size, time_s",
            ),
            (
                ("size", "lots"),
                "`demo` parameter `size`: `lots` is not a whole number; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("size", "4104"),
                "`demo` parameter `size`: 4104 elements is out of range; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("size", "12"),
                "`demo` parameter `size`: 12 elements is out of range; give 8..=4096 elements, a multiple of 8",
            ),
            (
                ("mem_mib", "8G"),
                "`demo` parameter `mem_mib`: 8192 MiB is out of range; give 1..=4096 MiB",
            ),
            (
                ("mem_mib", "1.5G"),
                "`demo` parameter `mem_mib`: `1.5G` has an unknown unit; write it like 512M, 2G or 1536MiB; give 1..=4096 MiB",
            ),
            (
                ("time_s", "2d"),
                "`demo` parameter `time_s`: `2d` is not a duration (write it like 90, 90s, 2m or 1h); give 1..=3600 s",
            ),
            (
                ("time_s", "0"),
                "`demo` parameter `time_s`: 0 s is out of range; give 1..=3600 s",
            ),
        ];
        for ((key, value), expected) in cases {
            let err = w.resolve_params(&given(&[(key, value)])).unwrap_err();
            assert_eq!(format!("{err:#}"), expected);
        }
        let twice = w
            .resolve_params(&given(&[("size", "8"), ("size", "16")]))
            .unwrap_err();
        assert_eq!(twice.to_string(), "`demo` parameter `size` is given twice");
    }

    #[test]
    fn manifest_mistakes_name_the_key() {
        let cases = [
            (
                "kind = \"load\"",
                "kind = \"load\"\ncolour = 1",
                ":5: unknown field `colour`, expected one of `name`, `description`, `kind`, `source`, `build`, `run`, `params`, `output`",
            ),
            (
                "name = \"demo\"",
                "name = \"other\"",
                ": `name` is `other` but the folder is `demo`; they must be the same",
            ),
            (
                "files = [\"demo.c\"]",
                "files = [\"demo.c\"]\nurl = \"https://x\"",
                ":6: give either `files` or all three of `url`, `sha256`, `top_dir`",
            ),
            ("files = [\"demo.c\"]", "files = [\"missing.c\"]", ""),
            (
                "\"-DSIZE={size}\"",
                "\"-DSIZE={sise}\"",
                ": `build.commands` uses `{sise}` but there is no `params.sise`",
            ),
            (
                "\"--mode\", \"{mode}\"",
                "\"--mode\", \"{size}\"",
                ": `run.argv` uses `{size}`, which is not a run parameter (see `params.size.stage`)",
            ),
            (
                "\"--mode\", \"{mode}\"",
                "\"--mode\", \"fast\"",
                ": `params.mode` is a run parameter but `run.argv` never uses `{mode}`",
            ),
            (
                "\"{binary}\", ",
                "",
                ": `run.argv` must have `{binary}` as one whole argument",
            ),
            (
                "\"-DSIZE={size}\"",
                "\"-DSIZE={size\"",
                ": `build.commands`: `-DSIZE={size` has a `{` without its `}`",
            ),
            (
                "[params.mem_mib]",
                "[params.mem]",
                ": `params.mem`: the key of a size must end in `_mib` (its unit)",
            ),
            (
                "unit = \"elements\"\n",
                "",
                ": `params.size`: an int needs a `unit`",
            ),
            (
                "default = 1000",
                "default = 1001",
                ": `params.size`: `default`: 1001 elements is out of range; give 8..=4096 elements, a multiple of 8",
            ),
            (
                "ci = \"16M\"",
                "ci = 1.5",
                ":31: a whole number or a string",
            ),
            (
                "type = \"duration\"",
                "type = \"time\"",
                ":38: unknown variant `time`, expected one of `int`, `size`, `duration`, `choice`",
            ),
            (
                "choices = [\"fast\", \"slow\"]",
                "choices = [\"fast\", \"so slow\"]",
                ": `params.mode`: `choices` may hold letters, digits, `_`, `.` and `-` only",
            ),
            (
                "parser = \"memory_hog\"",
                "parser = \"linpack\"",
                ": `output.parser`: no parser `linpack`; known: memory_hog, cpu_hog, stream, hpcg, hpccg, minife, xsbench, rsbench, simplemoc, cohmm, miniqmc",
            ),
            (
                "files = [\"result-*.txt\"]",
                "files = [\"out/result-*.txt\"]",
                ": `output.files`: `out/result-*.txt` must be a file name pattern, without `/`",
            ),
            (
                "binary = \"demo\"",
                "binary = \"../demo\"",
                ": `build.binary`: `../demo` must be a path inside the source directory",
            ),
            (
                "[run]\n",
                "[run]\nfiles = [\"../demo.c\"]\n",
                ": `run.files`: `../demo.c` must be a path inside the workload folder",
            ),
            ("[run]\n", "[run]\nfiles = [\"decks/small.in\"]\n", ""),
        ];
        for (from, to, expected) in cases {
            let err = invalid(from, to);
            if from.contains("demo.c") && to.contains("missing.c") {
                assert!(
                    err.starts_with(": `source.files`: `missing.c` is not in "),
                    "{err}"
                );
            } else if to.contains("decks/small.in") {
                assert!(
                    err.starts_with(": `run.files`: `decks/small.in` is not in "),
                    "{err}"
                );
            } else {
                assert_eq!(err, expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn unknown_workload_lists_the_known_ones() {
        let err = load(&repo_workloads(), "linpack").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "unknown workload `linpack`; known: cohmm, cpu_hog, hpccg, hpcg, memory_hog, minife, miniqmc, rsbench, simplemoc, stream, xsbench (in {})",
                repo_workloads().display()
            )
        );
        assert!(load(&repo_workloads(), "../workloads/stream").is_err());
    }

    #[test]
    fn a_folder_without_manifest_is_an_error() {
        let root = demo_dir(DEMO);
        std::fs::create_dir(root.path().join("typo")).unwrap();
        let err = format!("{:#}", load_all(root.path()).unwrap_err());
        assert!(
            err.contains("typo/workload.toml; every folder in workloads/ needs one"),
            "{err}"
        );
    }

    #[test]
    fn output_files_match_their_globs() {
        let (_root, w) = demo();
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
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), name.as_bytes()),
                matches,
                "{pattern} {name}"
            );
        }
    }

    #[test]
    fn templates_split_into_text_and_keys() {
        assert_eq!(
            pieces("--nx={nx}x{ny}").unwrap(),
            [
                Piece::Text("--nx="),
                Piece::Key("nx"),
                Piece::Text("x"),
                Piece::Key("ny")
            ]
        );
        assert_eq!(pieces("plain").unwrap(), [Piece::Text("plain")]);
        for bad in ["{", "}", "a}{b}", "{Nx}", "{}", "{a b}"] {
            assert!(pieces(bad).is_err(), "{bad}");
        }
    }
}
