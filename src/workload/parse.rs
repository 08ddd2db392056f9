//! Parsers that turn a workload's raw output into named metrics with units.
//!
//! One parser per workload, named in its manifest (`[output] parser`). Each
//! reads the program's stdout and the result files it wrote in its working
//! directory, given as (file name, content) pairs. Output that is cut short
//! or is not what the program prints is an error naming what is missing,
//! never a panic and never a silently partial result.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail, ensure};

/// One measured value. The unit is also in the name (`copy_mb_per_s`).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub metrics: Vec<Metric>,
    /// The program's own verdict on its result; `None` when it has none.
    pub valid: Option<bool>,
}

impl Parsed {
    /// The value of a metric, if the run has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

type Parser = fn(&str, &[(String, String)]) -> Result<Parsed>;

/// Every parser, by the name manifests use.
const PARSERS: &[(&str, Parser)] = &[
    ("memory_hog", memory_hog),
    ("cpu_hog", cpu_hog),
    ("stream", stream),
    ("hpcg", hpcg),
    ("hpccg", hpccg),
    ("minife", minife),
    ("xsbench", lookups_block),
    ("rsbench", lookups_block),
    ("simplemoc", simplemoc),
    ("cohmm", cohmm),
    ("miniqmc", miniqmc),
];

/// True if `parse` knows a parser of this name.
pub fn is_known(parser: &str) -> bool {
    PARSERS.iter().any(|(name, _)| *name == parser)
}

/// The names of all parsers, for error messages.
pub fn names() -> Vec<&'static str> {
    PARSERS.iter().map(|(name, _)| *name).collect()
}

/// Parses one run's output with the named parser.
pub fn parse(parser: &str, stdout: &str, files: &[(String, String)]) -> Result<Parsed> {
    let (_, run) = PARSERS
        .iter()
        .find(|(name, _)| *name == parser)
        .ok_or_else(|| anyhow!("unknown parser `{parser}`; known: {}", names().join(", ")))?;
    run(stdout, files).with_context(|| format!("reading the output of `{parser}`"))
}

// --- our own loads: `key=value` lines -----------------------------------------

/// `done rounds=1 peak_held_mib=212 fill_mib_per_s=734.2 elapsed_s=57.1`
fn memory_hog(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let done = tagged_line(stdout, "done").ok_or_else(|| {
        anyhow!("no `done` line: the run did not finish (killed, or out of memory?)")
    })?;
    let metrics = metrics_from(
        &done,
        "the `done` line",
        &[
            ("peak_held_mib", "peak_held_mib", "MiB"),
            ("fill_mib_per_s", "fill_mib_per_s", "MiB/s"),
            ("elapsed_s", "elapsed_s", "s"),
            ("rounds", "rounds", "rounds"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

/// `thread=0 ops=… ops_per_s=… cpu_s=…` per thread, then
/// `total threads=… duty_pct=… duration_s=… ops=… ops_per_s=… cpu_s=… busy_pct=…`.
fn cpu_hog(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let total = tagged_line(stdout, "total")
        .ok_or_else(|| anyhow!("no `total` line: the run did not finish"))?;
    let mut metrics = metrics_from(
        &total,
        "the `total` line",
        &[
            ("ops_per_s", "ops_per_s", "ops/s"),
            ("ops", "ops", "ops"),
            ("busy_pct", "busy_pct", "%"),
            ("cpu_s", "cpu_s", "s"),
            ("duration_s", "duration_s", "s"),
            ("threads", "threads", "threads"),
        ],
    )?;
    let threads: Vec<_> = stdout
        .lines()
        .filter(|l| l.starts_with("thread="))
        .map(fields)
        .collect();
    let expected = number(&total, "threads", "the `total` line")?;
    if threads.len() as f64 != expected {
        bail!(
            "the `total` line counts {expected} threads but {} thread lines came before it",
            threads.len()
        );
    }
    for thread in &threads {
        let id = thread
            .get("thread")
            .filter(|id| id.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| anyhow!("a `thread=` line without a thread number"))?;
        metrics.push(Metric {
            name: format!("thread_{id}_ops_per_s"),
            value: number(thread, "ops_per_s", &format!("the line of thread {id}"))?,
            unit: "ops/s".into(),
        });
    }
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

/// The fields of the last line whose first word is `tag`.
fn tagged_line<'a>(stdout: &'a str, tag: &str) -> Option<BTreeMap<&'a str, &'a str>> {
    stdout
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(tag))
        .map(fields)
}

/// The `key=value` words of a line (words without `=` are skipped).
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

// --- STREAM ---------------------------------------------------------------------

/// `Copy:  13736.3  0.011720  0.011648  0.011835` (best MB/s, then avg/min/max
/// time) for each kernel, and a validation verdict at the end.
fn stream(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let mut metrics = Vec::new();
    for (label, name) in [
        ("Copy:", "copy_mb_per_s"),
        ("Scale:", "scale_mb_per_s"),
        ("Add:", "add_mb_per_s"),
        ("Triad:", "triad_mb_per_s"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(label))
            .ok_or_else(|| anyhow!("no `{label}` line: the output is cut short"))?;
        let best = line.split_whitespace().nth(1).unwrap_or("");
        metrics.push(Metric {
            name: name.into(),
            value: parse_number(best).with_context(|| format!("the `{label}` line"))?,
            unit: "MB/s".into(),
        });
    }
    let valid = if stdout.contains("Solution Validates") {
        true
    } else if stdout.contains("Failed Validation") {
        false
    } else {
        bail!("no validation verdict (`Solution Validates`): the output is cut short");
    };
    Ok(Parsed {
        metrics,
        valid: Some(valid),
    })
}

// --- HPCG -----------------------------------------------------------------------

const HPCG_VALID: &str = "Final Summary::HPCG result is VALID with a GFLOP/s rating of";
const HPCG_INVALID: &str = "Final Summary::HPCG result is";

/// The official result file `HPCG-Benchmark_3.1_<date>.txt`: `key=value`
/// lines with `::`-nested keys (shared/DESIGN.md §4b).
///
/// The execution time is `Benchmark Time Summary::Total`: HPCG prints the
/// same figure on the `Final Summary::Results are valid but execution time
/// (sec) is` line, which is absent from official-length and invalid runs.
fn hpcg(_stdout: &str, files: &[(String, String)]) -> Result<Parsed> {
    let (name, text) = result_file(files, "HPCG-Benchmark_3.1_", ".txt")?;
    let doc: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let mut metrics = metrics_from(
        &doc,
        name,
        &[
            ("execution_time_s", "Benchmark Time Summary::Total", "s"),
            ("nx", "Global Problem Dimensions::Global nx", "points"),
            ("ny", "Global Problem Dimensions::Global ny", "points"),
            ("nz", "Global Problem Dimensions::Global nz", "points"),
            (
                "equations",
                "Linear System Information::Number of Equations",
                "equations",
            ),
            ("ddot_gflop_per_s", "GFLOP/s Summary::Raw DDOT", "GFLOP/s"),
            (
                "waxpby_gflop_per_s",
                "GFLOP/s Summary::Raw WAXPBY",
                "GFLOP/s",
            ),
            ("spmv_gflop_per_s", "GFLOP/s Summary::Raw SpMV", "GFLOP/s"),
            ("mg_gflop_per_s", "GFLOP/s Summary::Raw MG", "GFLOP/s"),
            ("total_gflop_per_s", "GFLOP/s Summary::Raw Total", "GFLOP/s"),
        ],
    )?;
    let valid = if doc.contains_key(HPCG_VALID) {
        metrics.insert(
            0,
            Metric {
                name: "rating_gflop_per_s".into(),
                value: number(&doc, HPCG_VALID, name)?,
                unit: "GFLOP/s".into(),
            },
        );
        true
    } else if doc.get(HPCG_INVALID) == Some(&"INVALID.") {
        false
    } else {
        bail!("{name} has no final verdict (`{HPCG_INVALID}`): the file is cut short");
    };
    Ok(Parsed {
        metrics,
        valid: Some(valid),
    })
}

// --- Mantevo proxy apps: YAML result files ------------------------------------

/// `hpccg-1.0_<date>.yaml`, its `MFLOPS Summary` block. HPCCG judges nothing
/// itself: no verdict.
fn hpccg(_stdout: &str, files: &[(String, String)]) -> Result<Parsed> {
    let (name, text) = result_file(files, "hpccg-", ".yaml")?;
    let metrics = metrics_from(
        &flatten_yaml(text),
        name,
        &[
            ("total_mflop_per_s", "MFLOPS Summary::Total", "MFLOP/s"),
            ("ddot_mflop_per_s", "MFLOPS Summary::DDOT", "MFLOP/s"),
            ("waxpby_mflop_per_s", "MFLOPS Summary::WAXPBY", "MFLOP/s"),
            (
                "sparsemv_mflop_per_s",
                "MFLOPS Summary::SPARSEMV",
                "MFLOP/s",
            ),
            ("total_time_s", "Time Summary::Total", "s"),
            ("iterations", "Number of iterations", "iterations"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

/// `miniFE.<nx>x<ny>x<nz>.<date>.yaml`, its `CG solve` block. miniFE judges
/// nothing itself: no verdict.
fn minife(_stdout: &str, files: &[(String, String)]) -> Result<Parsed> {
    let (name, text) = result_file(files, "miniFE.", ".yaml")?;
    let metrics = metrics_from(
        &flatten_yaml(text),
        name,
        &[
            (
                "total_cg_mflop_per_s",
                "CG solve::Total::Total CG Mflops",
                "MFLOP/s",
            ),
            ("waxpy_mflop_per_s", "CG solve::WAXPY Mflops", "MFLOP/s"),
            ("dot_mflop_per_s", "CG solve::DOT Mflops", "MFLOP/s"),
            ("matvec_mflop_per_s", "CG solve::MATVEC Mflops", "MFLOP/s"),
            ("total_cg_time_s", "CG solve::Total::Total CG Time", "s"),
            ("total_program_time_s", "Total Program Time", "s"),
            ("iterations", "CG solve::Iterations", "iterations"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

/// The `key: value` lines of a Mantevo YAML report, keyed like HPCG's:
/// nesting (two spaces per level) joined with `::`. The first of repeated keys wins.
fn flatten_yaml(text: &str) -> BTreeMap<String, &str> {
    let mut doc = BTreeMap::new();
    let mut parents: Vec<(usize, &str)> = Vec::new();
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let line = line.trim();
        let Some((key, value)) = line
            .split_once(": ")
            .or_else(|| line.strip_suffix(':').map(|k| (k, "")))
        else {
            continue;
        };
        // HPCCG aligns its values: `Total   : 4280.49`.
        let (key, value) = (key.trim_end(), value.trim());
        doc.entry(nested_path(&mut parents, indent, key))
            .or_insert(value);
        if value.is_empty() {
            parents.push((indent, key));
        }
    }
    doc
}

/// The `::`-joined path of `key`, indented by `indent`, under the `parents`
/// (indent, key) above it; drops the parents it is not under.
fn nested_path<'a>(parents: &mut Vec<(usize, &'a str)>, indent: usize, key: &'a str) -> String {
    while parents.last().is_some_and(|(i, _)| *i >= indent) {
        parents.pop();
    }
    let path: Vec<&str> = parents.iter().map(|(_, k)| *k).chain([key]).collect();
    path.join("::")
}

// --- XSBench, RSBench -----------------------------------------------------------

/// The RESULTS block on stdout, the same in XSBench and RSBench (one author):
/// `Runtime:`, `Lookups:`, `Lookups/s:` (numbers with thousands separators),
/// then `Verification checksum: N (Valid)`.
///
/// Both know the checksum of their default problems only and call every
/// other size invalid (and exit 1), so only `(Valid)` is a verdict; the
/// warning on another size says nothing about the result (`valid` is `None`).
fn lookups_block(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let metrics = labelled_metrics(
        stdout,
        &[
            ("runtime_s", "Runtime:", "s"),
            ("lookups", "Lookups:", "lookups"),
            ("lookups_per_s", "Lookups/s:", "lookups/s"),
        ],
    )?;
    let checksum = stdout
        .lines()
        .find(|l| l.starts_with("Verification checksum:"))
        .ok_or_else(|| anyhow!("no `Verification checksum:` line: the output is cut short"))?;
    Ok(Parsed {
        metrics,
        valid: checksum.ends_with("(Valid)").then_some(true),
    })
}

// --- SimpleMOC ------------------------------------------------------------------

/// The RESULTS SUMMARY on stdout (`Transport Sweep Time:  0.06 sec   (98.0%)`,
/// seconds with two decimals) and the 3-D track count of the INPUT SUMMARY.
/// Its figure of merit is the time per intersection (per segment and energy
/// group) of the transport sweep: lower is better. SimpleMOC judges nothing
/// (its keff comes from random data): no verdict.
fn simplemoc(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let metrics = labelled_metrics(
        stdout,
        &[
            ("time_per_intersection_ns", "Time per Intersection:", "ns"),
            ("transport_sweep_s", "Transport Sweep Time:", "s"),
            ("total_s", "Total Time:", "s"),
            ("tracks_3d", "3D Tracks:", "tracks"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

// --- CoHMM ----------------------------------------------------------------------

/// The parameters CoHMM echoes (`Number of HMM grid points 400`) and its
/// closing counts of fine-scale (CoMD) calls and wall time. The wall time is
/// what CoHMM measures, whole seconds of time(2): 0 for a run under a
/// second (`duration_s` in bench.csv is vmlab's own, finer timing). No verdict.
fn cohmm(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    // It exits 0 when its input deck is missing.
    ensure!(
        !stdout.contains("Could not find an input file!"),
        "CoHMM found no input deck (`Could not find an input file!`): input/input<N>.txt must be in its working directory"
    );
    let metrics = labelled_metrics(
        stdout,
        &[
            ("wall_clock_s", "Wall clock execution time", "s"),
            // The first line of this label; the next ones add words to it.
            ("comd_calls", "Number of CoMD calls", "calls"),
            (
                "comd_calls_avoided",
                "Number of CoMD calls avoided with the adaptive mesh",
                "calls",
            ),
            (
                "coarsening_calls",
                "Number of CoMD calls from the mesh coarsening scheme",
                "calls",
            ),
            (
                "refinement_calls",
                "Number of CoMD calls from the mesh refinement scheme",
                "calls",
            ),
            ("grid_points", "Number of HMM grid points", "points"),
            ("time_steps", "Number of HMM time steps", "steps"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

// --- miniQMC --------------------------------------------------------------------

const MINIQMC_TIMERS: &str = "Stack timer profile in seconds";

/// The `key = value` lines miniQMC starts with (`OpenMP threads = 1`) and
/// its timer table: `Timer Inclusive_time Exclusive_time Calls Time_per_call`
/// rows, two spaces of indent per level, read as `::`-joined paths
/// (`Total::Diffusion`) to their inclusive seconds. miniQMC judges nothing:
/// no verdict.
fn miniqmc(stdout: &str, _files: &[(String, String)]) -> Result<Parsed> {
    let (head, table) = stdout
        .split_once(MINIQMC_TIMERS)
        .ok_or_else(|| anyhow!("no timer table (`{MINIQMC_TIMERS}`): the output is cut short"))?;
    let mut doc: BTreeMap<String, &str> = head
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim()))
        .collect();
    let mut parents: Vec<(usize, &str)> = Vec::new();
    for line in table.lines() {
        // A row ends in four numbers; the header and a row cut short do not.
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(split) = words.len().checked_sub(4).filter(|&n| n > 0) else {
            continue;
        };
        if words[split..].iter().any(|w| w.parse::<f64>().is_err()) {
            continue;
        }
        let name_end = line.find(words[split]).unwrap_or(line.len());
        let name = line[..name_end].trim();
        let indent = line.len() - line.trim_start().len();
        doc.insert(nested_path(&mut parents, indent, name), words[split]);
        parents.push((indent, name));
    }
    let metrics = metrics_from(
        &doc,
        "miniQMC's output",
        &[
            ("total_s", "Total", "s"),
            ("diffusion_s", "Total::Diffusion", "s"),
            ("pseudopotential_s", "Total::Pseudopotential", "s"),
            ("initialization_s", "Total::Initialization", "s"),
            ("electrons", "Number of electrons", "electrons"),
            ("threads", "OpenMP threads", "threads"),
        ],
    )?;
    Ok(Parsed {
        metrics,
        valid: None,
    })
}

// --- shared helpers -------------------------------------------------------------

/// Metrics from `Label: value …` lines: (metric name, label, unit) each; the
/// value is the first word after the label, thousands separators allowed.
/// The first line that starts with a label is the one read.
fn labelled_metrics(stdout: &str, wanted: &[(&str, &str, &str)]) -> Result<Vec<Metric>> {
    wanted
        .iter()
        .map(|(name, label, unit)| {
            let rest = stdout
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(label))
                .ok_or_else(|| anyhow!("no `{label}` line: the output is cut short"))?;
            let first = rest.split_whitespace().next().unwrap_or("");
            Ok(Metric {
                name: (*name).into(),
                value: parse_number(&first.replace(',', ""))
                    .with_context(|| format!("the `{label}` line"))?,
                unit: (*unit).into(),
            })
        })
        .collect()
}

/// The one result file whose name has this prefix and suffix.
fn result_file<'a>(
    files: &'a [(String, String)],
    prefix: &str,
    suffix: &str,
) -> Result<(&'a str, &'a str)> {
    let found: Vec<_> = files
        .iter()
        .filter(|(name, _)| name.starts_with(prefix) && name.ends_with(suffix))
        .collect();
    match found.as_slice() {
        [(name, text)] => Ok((name, text)),
        [] => bail!("no result file {prefix}*{suffix} among the run's files"),
        _ => bail!(
            "{} result files {prefix}*{suffix}; expected one per run (use a fresh working directory)",
            found.len()
        ),
    }
}

/// Metrics read from `doc`: (metric name, key in `doc`, unit) each.
fn metrics_from<K: std::borrow::Borrow<str> + Ord>(
    doc: &BTreeMap<K, &str>,
    source: &str,
    wanted: &[(&str, &str, &str)],
) -> Result<Vec<Metric>> {
    wanted
        .iter()
        .map(|(name, key, unit)| {
            Ok(Metric {
                name: (*name).into(),
                value: number(doc, key, source)?,
                unit: (*unit).into(),
            })
        })
        .collect()
}

/// The number under `key`; missing means the output is cut short.
fn number<K: std::borrow::Borrow<str> + Ord>(
    doc: &BTreeMap<K, &str>,
    key: &str,
    source: &str,
) -> Result<f64> {
    let text = doc
        .get(key)
        .ok_or_else(|| anyhow!("{source} has no `{key}`: the output is cut short"))?;
    parse_number(text).with_context(|| format!("`{key}` in {source}"))
}

/// A finite number. Benchmarks print `inf` (or `nan`) for a rate when a
/// kernel took less time than their timer can measure.
fn parse_number(text: &str) -> Result<f64> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| anyhow!("`{text}` is not a number"))?;
    ensure!(
        value.is_finite(),
        "`{text}` is not a finite number; a kernel faster than the timer gives this, run a larger size"
    );
    Ok(value)
}

#[cfg(test)]
mod tests {
    //! Fixtures are real outputs of the real programs, built with the
    //! manifests' commands and run at small sizes (tests/fixtures/bench/README.md).

    use super::*;

    /// stdout and result files of one recorded run.
    fn fixture(name: &str) -> (String, Vec<(String, String)>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bench")
            .join(name);
        let mut stdout = String::new();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            match file_name.as_str() {
                "stdout.txt" => stdout = text,
                n if n.starts_with("stdout-") => {} // other runs, read by their tests
                _ => files.push((file_name, text)),
            }
        }
        (stdout, files)
    }

    fn parse_fixture(name: &str) -> Parsed {
        let (stdout, files) = fixture(name);
        parse(name, &stdout, &files).unwrap()
    }

    /// (name, value, unit) of every metric, for exact comparisons.
    fn table(parsed: &Parsed) -> Vec<(&str, f64, &str)> {
        parsed
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m.value, m.unit.as_str()))
            .collect()
    }

    fn error(name: &str, stdout: &str, files: &[(String, String)]) -> String {
        format!("{:#}", parse(name, stdout, files).unwrap_err())
    }

    /// The first `fraction` of a text: what a run killed halfway leaves.
    fn cut(text: &str, fraction: f64) -> &str {
        let mut end = (text.len() as f64 * fraction) as usize;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        &text[..end]
    }

    /// Every parser on inputs that are not its program's output: errors, no panic.
    #[test]
    fn garbage_is_an_error_for_every_parser() {
        let garbage = [
            "",
            "\0\u{1}\u{2}",
            "=\n::\n: :\n",
            "Copy: NaN\nTriad: inf\ndone peak_held_mib=\ntotal threads=x\n",
        ];
        for name in names() {
            for text in garbage {
                let files = [
                    ("HPCG-Benchmark_3.1_x.txt".to_owned(), text.to_owned()),
                    ("hpccg-x.yaml".to_owned(), text.to_owned()),
                    ("miniFE.x.yaml".to_owned(), text.to_owned()),
                ];
                assert!(
                    parse(name, text, &files).is_err(),
                    "{name} accepted {text:?}"
                );
            }
        }
    }

    /// The metrics a manifest declares for judging are the ones its parser
    /// gives, in the same unit, on the program's real output.
    #[test]
    fn every_declared_metric_comes_out_of_its_parser_in_its_unit() {
        let workloads = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        for workload in crate::workload::manifest::load_all(&workloads).unwrap() {
            let name = &workload.name;
            assert!(
                workload.output.main.is_some(),
                "{name} declares no main metric"
            );
            let (stdout, files) = fixture(name);
            let parsed = parse(&workload.output.parser, &stdout, &files).unwrap();
            for (metric, spec) in &workload.output.metrics {
                let given = parsed.metrics.iter().find(|m| &m.name == metric);
                assert_eq!(
                    given.map(|m| m.unit.as_str()),
                    Some(spec.unit.as_str()),
                    "{name}: `{metric}`"
                );
            }
        }
    }

    #[test]
    fn unknown_parser_lists_the_known_ones() {
        assert_eq!(
            error("linpack", "", &[]),
            "unknown parser `linpack`; known: memory_hog, cpu_hog, stream, hpcg, hpccg, minife, xsbench, rsbench, simplemoc, cohmm, miniqmc"
        );
    }

    #[test]
    fn memory_hog_summary() {
        let parsed = parse_fixture("memory_hog");
        assert_eq!(
            table(&parsed),
            [
                ("peak_held_mib", 46.0, "MiB"),
                ("fill_mib_per_s", 1723.1, "MiB/s"),
                ("elapsed_s", 6.89, "s"),
                ("rounds", 2.0, "rounds"),
            ]
        );
        assert_eq!(parsed.valid, None);
    }

    #[test]
    fn memory_hog_killed_before_the_end() {
        let (stdout, _) = fixture("memory_hog");
        let killed = stdout.replace("done ", "");
        assert_eq!(
            error("memory_hog", &killed, &[]),
            "reading the output of `memory_hog`: no `done` line: the run did not finish (killed, or out of memory?)"
        );
        let torn = stdout.replace("fill_mib_per_s=1723.1", "fill_mib_per_s=17x");
        assert!(error("memory_hog", &torn, &[]).contains("`17x` is not a number"));
    }

    #[test]
    fn cpu_hog_total_and_threads() {
        let parsed = parse_fixture("cpu_hog");
        assert_eq!(
            table(&parsed),
            [
                ("ops_per_s", 151613.4, "ops/s"),
                ("ops", 303673.0, "ops"),
                ("busy_pct", 49.7, "%"),
                ("cpu_s", 1.99, "s"),
                ("duration_s", 2.0, "s"),
                ("threads", 2.0, "threads"),
                ("thread_0_ops_per_s", 75914.8, "ops/s"),
                ("thread_1_ops_per_s", 75913.7, "ops/s"),
            ]
        );
    }

    #[test]
    fn cpu_hog_with_a_thread_line_missing() {
        let (stdout, _) = fixture("cpu_hog");
        let lost: String = stdout
            .lines()
            .filter(|l| !l.starts_with("thread=1 "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            error("cpu_hog", &lost, &[])
                .ends_with("the `total` line counts 2 threads but 1 thread lines came before it")
        );
        assert!(error("cpu_hog", cut(&stdout, 0.5), &[]).contains("no `total` line"));
    }

    #[test]
    fn stream_best_rates_and_verdict() {
        let parsed = parse_fixture("stream");
        assert_eq!(
            table(&parsed),
            [
                ("copy_mb_per_s", 67108.9, "MB/s"),
                ("scale_mb_per_s", 48629.6, "MB/s"),
                ("add_mb_per_s", 53261.0, "MB/s"),
                ("triad_mb_per_s", 49104.0, "MB/s"),
            ]
        );
        assert_eq!(parsed.valid, Some(true));
    }

    #[test]
    fn stream_failed_validation_and_cut_output() {
        let (stdout, _) = fixture("stream");
        // Made by editing the real output: STREAM prints this instead of
        // `Solution Validates` when an array's average error is too large.
        let failed = stdout.replace(
            "Solution Validates: avg error less than 1.000000e-13 on all three arrays",
            "Failed Validation on array a[], AvgRelAbsErr > epsilon (1.000000e-13)",
        );
        assert_eq!(parse("stream", &failed, &[]).unwrap().valid, Some(false));
        let before_verdict = &stdout[..stdout.find("Solution Validates").unwrap()];
        assert!(error("stream", before_verdict, &[]).contains("no validation verdict"));
        let before_triad = &stdout[..stdout.find("Triad:").unwrap()];
        assert!(error("stream", before_triad, &[]).contains("no `Triad:` line"));
    }

    #[test]
    fn hpcg_valid_run() {
        let parsed = parse_fixture("hpcg");
        assert_eq!(parsed.valid, Some(true));
        let (_, files) = fixture("hpcg");
        let (_, text) = result_file(&files, "HPCG-Benchmark_3.1_", ".txt").unwrap();
        // The execution-time line of a short run is the benchmark's total time.
        let line = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Final Summary::Results are valid but execution time (sec) is=")
            })
            .unwrap();
        assert_eq!(parsed.get("execution_time_s"), Some(line.parse().unwrap()));
        assert_eq!(
            table(&parsed),
            [
                ("rating_gflop_per_s", 3.17332, "GFLOP/s"),
                ("execution_time_s", 0.7739, "s"),
                ("nx", 16.0, "points"),
                ("ny", 16.0, "points"),
                ("nz", 16.0, "points"),
                ("equations", 4096.0, "equations"),
                ("ddot_gflop_per_s", 3.48025, "GFLOP/s"),
                ("waxpby_gflop_per_s", 5.96413, "GFLOP/s"),
                ("spmv_gflop_per_s", 3.22925, "GFLOP/s"),
                ("mg_gflop_per_s", 3.15698, "GFLOP/s"),
                ("total_gflop_per_s", 3.19881, "GFLOP/s"),
            ]
        );
    }

    #[test]
    fn hpcg_invalid_run() {
        let (_, files) = fixture("hpcg");
        // Made by editing a copy of the real file: a run that fails
        // verification ends with these two Final Summary lines instead of the
        // rating (src/ReportResults.cpp, HPCG 3.1); the rest is written alike.
        let invalid: Vec<(String, String)> = files
            .iter()
            .map(|(name, text)| {
                let mut kept: String = text
                    .lines()
                    .take_while(|l| !l.starts_with("Final Summary::"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                kept += "Final Summary::HPCG result is=INVALID.\n";
                kept += "Final Summary::Please review the YAML file contents=You may NOT submit these results for consideration.\n";
                (name.clone(), kept)
            })
            .collect();
        let parsed = parse("hpcg", "", &invalid).unwrap();
        assert_eq!(parsed.valid, Some(false));
        assert_eq!(parsed.get("rating_gflop_per_s"), None);
        assert_eq!(parsed.get("mg_gflop_per_s"), Some(3.15698));
    }

    #[test]
    fn hpcg_cut_short_or_missing() {
        let (_, files) = fixture("hpcg");
        let result = files
            .iter()
            .find(|(n, _)| n.starts_with("HPCG-Benchmark"))
            .unwrap();
        let text = &result.1;
        let before_verdict = &text[..text.find("Final Summary::HPCG result").unwrap()];
        let cut_files = [(result.0.clone(), before_verdict.to_owned())];
        assert!(error("hpcg", "", &cut_files).ends_with(
            "has no final verdict (`Final Summary::HPCG result is`): the file is cut short"
        ));
        let half = [(result.0.clone(), cut(text, 0.5).to_owned())];
        assert!(error("hpcg", "", &half).contains(": the output is cut short"));
        assert_eq!(
            error("hpcg", "", &[]),
            "reading the output of `hpcg`: no result file HPCG-Benchmark_3.1_*.txt among the run's files"
        );
        let twice = [result.clone(), (format!("{}.txt", result.0), text.clone())];
        assert!(error("hpcg", "", &twice).contains("2 result files HPCG-Benchmark_3.1_*.txt"));
    }

    #[test]
    fn hpccg_mflops() {
        let parsed = parse_fixture("hpccg");
        assert_eq!(
            table(&parsed),
            [
                ("total_mflop_per_s", 4280.49, "MFLOP/s"),
                ("ddot_mflop_per_s", 3178.67, "MFLOP/s"),
                ("waxpby_mflop_per_s", 7014.99, "MFLOP/s"),
                ("sparsemv_mflop_per_s", 4388.92, "MFLOP/s"),
                ("total_time_s", 0.009125, "s"),
                ("iterations", 149.0, "iterations"),
            ]
        );
        assert_eq!(parsed.valid, None);
    }

    #[test]
    fn minife_cg_mflops() {
        let parsed = parse_fixture("minife");
        assert_eq!(
            table(&parsed),
            [
                ("total_cg_mflop_per_s", 2008.05, "MFLOP/s"),
                ("waxpy_mflop_per_s", 8402.83, "MFLOP/s"),
                ("dot_mflop_per_s", 396.516, "MFLOP/s"),
                ("matvec_mflop_per_s", 2462.48, "MFLOP/s"),
                ("total_cg_time_s", 0.018311, "s"),
                ("total_program_time_s", 0.0489769, "s"),
                ("iterations", 65.0, "iterations"),
            ]
        );
    }

    /// A real 10x10x10 run: WAXPY took less than the timer's resolution and
    /// miniFE printed `WAXPY Mflops: inf`.
    #[test]
    fn minife_too_small_to_time() {
        let (stdout, files) = fixture("minife-tiny");
        assert!(
            error("minife", &stdout, &files)
                .ends_with("`CG solve::WAXPY Mflops` in miniFE.10x10x10.2026:11:22-04:37:31.yaml: `inf` is not a finite number; a kernel faster than the timer gives this, run a larger size")
        );
    }

    #[test]
    fn mantevo_yaml_cut_short() {
        for (name, key) in [("hpccg", "MFLOPS Summary"), ("minife", "CG solve")] {
            let (_, files) = fixture(name);
            let (file, text) = &files[0];
            let cut_files = [(file.clone(), text[..text.find(key).unwrap()].to_owned())];
            assert!(
                error(name, "", &cut_files).contains(": the output is cut short"),
                "{name}"
            );
        }
    }

    #[test]
    fn yaml_nesting_becomes_paths() {
        let doc = flatten_yaml("a: \n  b: 1\n  c: \n    d: 2\n  e: 3\nf: 4\na: \n  b: 9\n");
        assert_eq!(doc.get("a::b"), Some(&"1"));
        assert_eq!(doc.get("a::c::d"), Some(&"2"));
        assert_eq!(doc.get("a::e"), Some(&"3"));
        assert_eq!(doc.get("f"), Some(&"4"));
    }

    #[test]
    fn xsbench_lookups_and_checksum() {
        let parsed = parse_fixture("xsbench");
        assert_eq!(
            table(&parsed),
            [
                ("runtime_s", 0.058, "s"),
                ("lookups", 68000.0, "lookups"),
                ("lookups_per_s", 1178782.0, "lookups/s"),
            ]
        );
        // A non-default size: XSBench warns that it has no checksum for it.
        assert_eq!(parsed.valid, None);
    }

    /// A real run of XSBench's default small problem, which it can check.
    #[test]
    fn xsbench_default_problem_is_valid() {
        let (stdout, _) = fixture("xsbench-default");
        let parsed = parse("xsbench", &stdout, &[]).unwrap();
        assert_eq!(parsed.valid, Some(true));
        assert_eq!(parsed.get("lookups"), Some(17_000_000.0));
        assert_eq!(parsed.get("lookups_per_s"), Some(286_606.0));
    }

    #[test]
    fn rsbench_lookups_and_checksum() {
        let parsed = parse_fixture("rsbench");
        assert_eq!(
            table(&parsed),
            [
                ("runtime_s", 0.156, "s"),
                ("lookups", 34000.0, "lookups"),
                ("lookups_per_s", 218169.0, "lookups/s"),
            ]
        );
        assert_eq!(parsed.valid, None, "no checksum for this size");
        let (stdout, _) = fixture("rsbench-default");
        let default = parse("rsbench", &stdout, &[]).unwrap();
        assert_eq!(default.valid, Some(true));
        assert_eq!(default.get("lookups"), Some(10_200_000.0));
        assert_eq!(default.get("lookups_per_s"), Some(140_263.0));
    }

    #[test]
    fn simplemoc_time_per_intersection() {
        let parsed = parse_fixture("simplemoc");
        assert_eq!(
            table(&parsed),
            [
                ("time_per_intersection_ns", 28.46, "ns"),
                ("transport_sweep_s", 0.06, "s"),
                ("total_s", 0.07, "s"),
                ("tracks_3d", 9600.0, "tracks"),
            ]
        );
        assert_eq!(parsed.valid, None);
    }

    #[test]
    fn simplemoc_cut_short() {
        let (stdout, _) = fixture("simplemoc");
        let before_results = &stdout[..stdout.find("RESULTS SUMMARY").unwrap()];
        assert_eq!(
            error("simplemoc", before_results, &[]),
            "reading the output of `simplemoc`: no `Time per Intersection:` line: the output is cut short"
        );
        // What SimpleMOC prints (src/io.c) before it crashes on an input deck
        // it cannot open.
        let no_deck = "Attempting to open FIle: gone.in\nOpened FIle: gone.in\nFIle Open FAILED\n";
        assert!(error("simplemoc", no_deck, &[]).contains("no `Time per Intersection:` line"));
    }

    #[test]
    fn cohmm_calls_and_wall_time() {
        let parsed = parse_fixture("cohmm");
        assert_eq!(
            table(&parsed),
            [
                ("wall_clock_s", 0.0, "s"),
                ("comd_calls", 184913.0, "calls"),
                ("comd_calls_avoided", 455087.0, "calls"),
                ("coarsening_calls", 44584.0, "calls"),
                ("refinement_calls", 140329.0, "calls"),
                ("grid_points", 400.0, "points"),
                ("time_steps", 400.0, "steps"),
            ]
        );
        assert_eq!(parsed.valid, None);
    }

    #[test]
    fn cohmm_without_its_deck_or_cut_short() {
        // What cohmm.c prints (and exits 0) when input/inputN.txt is missing.
        assert_eq!(
            error("cohmm", "Could not find an input file! Closing :-( \n", &[]),
            "reading the output of `cohmm`: CoHMM found no input deck (`Could not find an input file!`): input/input<N>.txt must be in its working directory"
        );
        let (stdout, _) = fixture("cohmm");
        let before_wall = &stdout[..stdout.find("Wall clock").unwrap()];
        assert!(error("cohmm", before_wall, &[]).contains("no `Wall clock execution time` line"));
        let without_refinement = stdout.replace(
            "Number of CoMD calls from the mesh refinement scheme  140329 \n",
            "",
        );
        assert!(
            error("cohmm", &without_refinement, &[])
                .contains("no `Number of CoMD calls from the mesh refinement scheme` line")
        );
    }

    #[test]
    fn miniqmc_timer_table() {
        let parsed = parse_fixture("miniqmc");
        assert_eq!(
            table(&parsed),
            [
                ("total_s", 0.0644, "s"),
                ("diffusion_s", 0.0269, "s"),
                ("pseudopotential_s", 0.0083, "s"),
                ("initialization_s", 0.0292, "s"),
                ("electrons", 384.0, "electrons"),
                ("threads", 1.0, "threads"),
            ]
        );
        assert_eq!(parsed.valid, None);
    }

    /// A row is known by its path: a deeper row of the same name as a
    /// top-level one (made here by renaming `Pseudopotential::Value`) does
    /// not stand in for it.
    #[test]
    fn miniqmc_rows_nest_by_indent() {
        let (stdout, _) = fixture("miniqmc");
        let value_row = "    Value                          0.0035";
        assert!(stdout.contains(value_row));
        let renamed = stdout.replace(value_row, "    Diffusion                      0.0035");
        let parsed = parse("miniqmc", &renamed, &[]).unwrap();
        assert_eq!(parsed.get("diffusion_s"), Some(0.0269));
        assert_eq!(parsed.get("pseudopotential_s"), Some(0.0083));
    }

    #[test]
    fn miniqmc_cut_short() {
        let (stdout, _) = fixture("miniqmc");
        let before_table = &stdout[..stdout.find(MINIQMC_TIMERS).unwrap()];
        assert_eq!(
            error("miniqmc", before_table, &[]),
            "reading the output of `miniqmc`: no timer table (`Stack timer profile in seconds`): the output is cut short"
        );
        // Cut inside the Pseudopotential row: that row is torn, not read.
        let torn = &stdout[..stdout.find("  Pseudopotential").unwrap() + 40];
        assert_eq!(
            error("miniqmc", torn, &[]),
            "reading the output of `miniqmc`: miniQMC's output has no `Total::Pseudopotential`: the output is cut short"
        );
    }

    #[test]
    fn lookup_benchmarks_cut_short() {
        for name in ["xsbench", "rsbench"] {
            let (stdout, _) = fixture(name);
            let before_checksum = &stdout[..stdout.find("Verification").unwrap()];
            assert!(
                error(name, before_checksum, &[]).contains("no `Verification checksum:` line"),
                "{name}"
            );
            let before_results = &stdout[..stdout.find("RESULTS").unwrap()];
            assert!(
                error(name, before_results, &[]).contains("no `Runtime:` line"),
                "{name}"
            );
        }
    }
}
