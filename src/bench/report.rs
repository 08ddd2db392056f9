//! Reports CI systems read, written from a finished run (its `run.json` as
//! saved, gate included, and its rows): `--report junit=FILE`, one
//! testcase per VM × cell of the benchmark, failed by a failed run, a
//! regression, or a missing reference under `--require-reference`; and
//! `--report markdown=FILE`, a summary table (appended, as GitHub's
//! `$GITHUB_STEP_SUMMARY` expects).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use super::gate::{Judged, Verdict};
use super::record::RecordedRun;
use super::run::Row;
use super::summary::{self, summarize};

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Junit,
    Markdown,
}

/// `--report KIND=FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: Kind,
    pub path: PathBuf,
}

impl FromStr for Report {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a report; write junit=FILE or markdown=FILE");
        let (kind, path) = text.split_once('=').ok_or_else(bad)?;
        let kind = match kind {
            "junit" => Kind::Junit,
            "markdown" => Kind::Markdown,
            _ => return Err(bad()),
        };
        if path.is_empty() {
            return Err(bad());
        }
        Ok(Report {
            kind,
            path: path.into(),
        })
    }
}

impl Report {
    /// Whether the file can be written, checked before a run starts (and
    /// without creating or changing it): its folder exists, and the file,
    /// when it exists, opens for writing.
    pub fn check(&self) -> Result<()> {
        let path = &self.path;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            bail!(
                "report `{}` cannot be written: folder `{}` does not exist",
                path.display(),
                parent.display()
            );
        }
        if path.is_dir() {
            bail!(
                "report `{}` cannot be written: it is a folder",
                path.display()
            );
        }
        if path.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("report `{}` cannot be written", path.display()))?;
        } else {
            let probe = tempfile::NamedTempFile::new_in(parent).with_context(|| {
                format!(
                    "report `{}` cannot be written: folder `{}` refuses new files",
                    path.display(),
                    parent.display()
                )
            })?;
            drop(probe);
        }
        Ok(())
    }

    /// Writes the report of a finished run: JUnit replaces the file,
    /// Markdown appends to it.
    pub fn write(&self, run: &RecordedRun, rows: &[Row]) -> Result<()> {
        let context = || format!("writing report `{}`", self.path.display());
        match self.kind {
            Kind::Junit => std::fs::write(&self.path, junit(run)).with_context(context),
            Kind::Markdown => std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .and_then(|mut f| f.write_all(markdown(run, rows).as_bytes()))
                .with_context(context),
        }
    }
}

/// One testcase: a VM in a cell.
struct Case {
    name: String,
    time_s: f64,
    /// Why it failed, one line each; empty when it passed.
    failures: Vec<String>,
    /// Its verdicts, one line each.
    out: Vec<String>,
}

fn cases(run: &RecordedRun) -> Vec<Case> {
    let verdicts: &[Judged] = run.gate.as_ref().map_or(&[], |g| &g.verdicts);
    let require = run.gate.as_ref().is_some_and(|g| g.require_reference);
    let mut out = Vec::new();
    for cell in &run.cells {
        let index = cell.cell.index;
        for vm in &run.vms {
            let mut failures: Vec<String> = cell
                .errors
                .iter()
                .filter(|(v, _)| v == vm)
                .map(|(_, e)| format!("cell not applied: {e}"))
                .collect();
            let entries = run.runs.iter().filter(|e| &e.vm == vm && e.cell == index);
            let mut time_s = 0.0;
            for e in entries {
                time_s += e.run_s.unwrap_or(0.0);
                if let Some(error) = &e.error {
                    failures.push(format!("repeat {} failed: {error}", e.repeat));
                }
            }
            let mine: Vec<&Judged> = verdicts
                .iter()
                .filter(|j| &j.vm == vm && j.cell == index)
                .collect();
            for j in &mine {
                let failed = j.verdict == Verdict::Regression
                    || (require && j.verdict == Verdict::NoReference);
                if failed {
                    failures.push(verdict_line(j));
                }
            }
            out.push(Case {
                name: format!("{vm} cell {index} ({})", cell.cell),
                time_s,
                failures,
                out: mine.iter().map(|j| verdict_line(j)).collect(),
            });
        }
    }
    out
}

/// `regression: triad_mb_per_s 1700.0000 MB/s, reference 1960.7000 (-13.3 %, tolerance 8.8 %)`.
fn verdict_line(j: &Judged) -> String {
    match (j.reference, j.change_pct, j.tolerance_pct) {
        (Some(r), Some(c), Some(t)) => format!(
            "{}: {} {:.4} {}, reference {r:.4} ({c:+.1} %, tolerance {t:.1} %)",
            j.verdict, j.metric, j.value, j.unit
        ),
        _ => format!("{}: {} {:.4} {}", j.verdict, j.metric, j.value, j.unit),
    }
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one testsuite for the run, one testcase per VM × cell.
pub fn junit(run: &RecordedRun) -> String {
    let cases = cases(run);
    let failures = cases.iter().filter(|c| !c.failures.is_empty()).count();
    let time_s: f64 = cases.iter().map(|c| c.time_s).sum();
    let suite = xml_escape(&format!("vmlab bench {} {}", run.benchmark, run.run_id));
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"vmlab\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" time=\"{time_s:.3}\">\n  \
         <testsuite name=\"{suite}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time_s:.3}\" timestamp=\"{}\">\n",
        xml_escape(&run.started),
        n = cases.len(),
    );
    let classname = xml_escape(&format!("vmlab.{}", run.benchmark));
    for c in &cases {
        xml += &format!(
            "    <testcase classname=\"{classname}\" name=\"{}\" time=\"{:.3}\">\n",
            xml_escape(&c.name),
            c.time_s
        );
        if let Some(first) = c.failures.first() {
            let kind = if first.starts_with("regression") {
                "regression"
            } else if first.starts_with("no-reference") {
                "no-reference"
            } else {
                "run-failed"
            };
            xml += &format!(
                "      <failure type=\"{kind}\" message=\"{}\">{}</failure>\n",
                xml_escape(&c.failures.join("; ")),
                xml_escape(&c.failures.join("\n"))
            );
        }
        if !c.out.is_empty() {
            xml += &format!(
                "      <system-out>{}</system-out>\n",
                xml_escape(&c.out.join("\n"))
            );
        }
        xml += "    </testcase>\n";
    }
    xml + "  </testsuite>\n</testsuites>\n"
}

/// A Markdown summary: the outcome, the verdicts (or, without a gate, the
/// medians) and what failed.
pub fn markdown(run: &RecordedRun, rows: &[Row]) -> String {
    let cases = cases(run);
    let failed: Vec<&Case> = cases.iter().filter(|c| !c.failures.is_empty()).collect();
    let mut out = format!(
        "### vmlab bench `{}`: {}\n\n",
        run.benchmark,
        if failed.is_empty() {
            "passed"
        } else {
            "FAILED"
        }
    );
    out += &format!(
        "Run `{}`, {} VM(s), {} cell(s), host {} ({} cores)",
        run.run_id,
        run.vms.len(),
        run.cells.len(),
        run.host.cpu_model,
        run.host.cores
    );
    match &run.gate {
        Some(gate) => {
            out += &format!(", against `{}`: {}.\n\n", gate.baseline, gate.counts());
            out += &gate.table().markdown();
        }
        None => {
            out += ".\n\n";
            let cells: Vec<_> = run.cells.iter().map(|c| c.cell).collect();
            out += &summary::table(&summarize(rows), &cells).markdown();
        }
    }
    for c in failed {
        out += &format!("\n**{}**: {}\n", c.name, c.failures.join("; "));
    }
    out + "\n"
}

#[cfg(test)]
mod tests {
    use super::super::gate::{GateRecord, judge};
    use super::super::reference::References;
    use super::super::reference::tests::recorded;
    use super::*;

    /// The recorded HPCG run, its rating 10 % below a reference with 5 %
    /// tolerance; the others judged against themselves.
    fn gated_hpcg() -> (RecordedRun, Vec<Row>) {
        let (mut run, rows) = recorded("20261207-224129-hpcg");
        let mut refs = References::from_run(&run, &rows);
        for r in refs
            .references
            .iter_mut()
            .filter(|r| r.metric == "rating_gflop_per_s")
        {
            r.value /= 0.9;
        }
        run.gate = Some(GateRecord {
            baseline: "references.toml".into(),
            require_reference: false,
            verdicts: judge(&run, &rows, &refs),
        });
        (run, rows)
    }

    #[test]
    fn report_flags_parse_and_bad_ones_say_what_to_write() {
        assert_eq!(
            "junit=out/junit.xml".parse(),
            Ok(Report {
                kind: Kind::Junit,
                path: "out/junit.xml".into()
            })
        );
        for bad in ["junit", "html=x", "markdown="] {
            assert_eq!(
                bad.parse::<Report>(),
                Err(format!(
                    "`{bad}` is not a report; write junit=FILE or markdown=FILE"
                ))
            );
        }
    }

    #[test]
    fn unwritable_report_paths_are_refused_without_creating_anything() {
        let dir = tempfile::tempdir().unwrap();
        let nowhere = dir.path().join("no/such/junit.xml");
        let report = Report {
            kind: Kind::Junit,
            path: nowhere.clone(),
        };
        assert_eq!(
            report.check().unwrap_err().to_string(),
            format!(
                "report `{}` cannot be written: folder `{}` does not exist",
                nowhere.display(),
                dir.path().join("no/such").display()
            )
        );
        let folder = Report {
            kind: Kind::Markdown,
            path: dir.path().to_owned(),
        };
        assert!(
            folder
                .check()
                .unwrap_err()
                .to_string()
                .ends_with(": it is a folder")
        );
        let fine = Report {
            kind: Kind::Junit,
            path: dir.path().join("junit.xml"),
        };
        fine.check().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "check created a file"
        );
    }

    /// Read back by a JUnit-reading library (the `junit-parser` crate):
    /// one testcase per VM × cell, the regression a failure with its numbers.
    #[test]
    fn junit_is_read_by_a_junit_parser() {
        let (run, _) = gated_hpcg();
        let xml = junit(&run);
        let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).unwrap();
        assert_eq!((suites.tests, suites.failures), (1, 1));
        let case = &suites.suites[0].cases[0];
        assert_eq!(case.original_name, "e2b-1 cell 1 (as is)");
        assert_eq!(case.classname.as_deref(), Some("vmlab.hpcg"));
        let failure = match &case.status {
            junit_parser::TestStatus::Failure(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(failure.failure_type, "regression");
        assert_eq!(
            failure.message,
            "regression: rating_gflop_per_s 0.0383 GFLOP/s, reference 0.0425 (-10.0 %, tolerance 5.0 %)"
        );
        assert_eq!(case.system_out.as_deref().unwrap().lines().count(), 6);

        // Without a gate, a run that gave results passes.
        let (plain, _) = recorded("20261207-220332-stream");
        let suites =
            junit_parser::from_reader(std::io::Cursor::new(junit(&plain).into_bytes())).unwrap();
        assert_eq!((suites.tests, suites.failures), (2, 0));
    }

    #[test]
    fn a_failed_run_is_a_failure() {
        let (mut run, _) = recorded("20261207-220332-stream");
        run.runs[1].error = Some("guest stopped answering <ssh>".into());
        let vm = run.runs[1].vm.clone();
        let suites =
            junit_parser::from_reader(std::io::Cursor::new(junit(&run).into_bytes())).unwrap();
        let failed: Vec<_> = suites.suites[0]
            .cases
            .iter()
            .filter(|c| c.status.is_failure())
            .collect();
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].original_name.starts_with(&vm),
            "{}",
            failed[0].original_name
        );
        assert!(
            failed[0]
                .status
                .failure_as_ref()
                .message
                .ends_with("failed: guest stopped answering <ssh>"),
            "{:?}",
            failed[0].status
        );
    }

    #[test]
    fn markdown_summary() {
        let (run, rows) = gated_hpcg();
        insta::assert_snapshot!(markdown(&run, &rows));
        let (plain, rows) = recorded("20261207-224129-hpcg");
        insta::assert_snapshot!(markdown(&plain, &rows));
    }
}
