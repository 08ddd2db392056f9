//! Reading a workloads folder: every sub-folder holds one manifest, and a
//! manifest is checked as a whole when it is read (names, paths, which
//! template uses which parameter, the parser), so a mistake is one line
//! naming the file and key, found before anything is downloaded or built.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::param::validate_param;
use super::template::{Piece, pieces};
use super::{BINARY, MANIFEST, Source, Stage, Workload, is_identifier};
use crate::workload::parse as parsers;

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

impl Workload {
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
            if let Err(e) = glob::Pattern::new(pattern) {
                bail!("`output.files`: `{pattern}` is not a pattern: {}", e.msg);
            }
        }
        for (name, metric) in &self.output.metrics {
            ensure!(
                is_identifier(name),
                "`output.metrics.{name}`: a metric name is lowercase letters, digits and _"
            );
            ensure!(
                !metric.unit.trim().is_empty(),
                "`output.metrics.{name}.unit` is empty"
            );
        }
        match &self.output.main {
            Some(main) => ensure!(
                self.output.metrics.contains_key(main),
                "`output.main`: `{main}` is not one of `output.metrics`"
            ),
            None => ensure!(
                self.output.metrics.is_empty(),
                "`output.main` is missing: name the metric of `output.metrics` that stands for a run"
            ),
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

/// A relative path that stays below its base (no `..`, not absolute).
fn is_plain_relative(s: &str) -> bool {
    !s.is_empty()
        && Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::super::Preset;
    use super::super::testkit::{DEMO, demo, demo_dir, invalid, repo_workloads};
    use super::*;

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
                "files = [\"result-*.txt\"]",
                "files = [\"result-[.txt\"]",
                ": `output.files`: `result-[.txt` is not a pattern: invalid range pattern",
            ),
            (
                "files = [\"result-*.txt\"]",
                "files = []\nmain = \"peak_held_mib\"",
                ": `output.main`: `peak_held_mib` is not one of `output.metrics`",
            ),
            (
                "files = [\"result-*.txt\"]",
                "files = []\nmetrics = { rounds = { unit = \"rounds\", better = \"higher\" } }",
                ": `output.main` is missing: name the metric of `output.metrics` that stands for a run",
            ),
            (
                "files = [\"result-*.txt\"]",
                "files = []\nmain = \"rounds\"\nmetrics = { rounds = { unit = \"rounds\", better = \"up\" } }",
                ":56: unknown variant `up`, expected `higher` or `lower`",
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
}
