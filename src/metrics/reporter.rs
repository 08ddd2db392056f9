//! The guest reporter's lines (`templates/guest/reporter.sh`), parsed.
//!
//! A line comes from a shell script in a guest over an SSH channel, so it can
//! be cut short, garbled or from another version of the script: every such line
//! is a typed [`LineError`], counted by [`LineStats`], and never a panic.

use std::fmt;

/// The script pushed into each guest; its first argument is the interval in seconds.
pub const REPORTER_SH: &str = include_str!("../../templates/guest/reporter.sh");

/// First field of every line of the current format.
pub const LINE_TAG: &str = "vmlab-r1";

/// Fields of a line, the tag included.
const FIELDS: usize = 10;

/// One sample of a guest, as its reporter measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestSample {
    /// Guest monotonic clock (`/proc/uptime`); the host stamps wall time on receipt.
    pub uptime_ms: u64,
    /// Busy share of all guest CPUs since the previous line, 0–100.
    pub cpu_pct: f64,
    pub mem_total_kib: u64,
    /// `MemTotal - MemAvailable`.
    pub mem_used_kib: u64,
    pub mem_available_kib: u64,
    pub disk_read_kib_s: f64,
    pub disk_write_kib_s: f64,
    /// Counter since guest boot, not a rate.
    pub net_rx_bytes: u64,
    /// Counter since guest boot, not a rate.
    pub net_tx_bytes: u64,
}

/// Why a line was not a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    Empty,
    /// No newline at the end: the channel closed in the middle of a line.
    Unterminated,
    /// The first field is not [`LINE_TAG`]: another version of the script, or noise.
    UnknownFormat {
        tag: String,
    },
    /// Truncated (or extended) line.
    FieldCount {
        found: usize,
    },
    /// A field that does not hold the number it should.
    BadField {
        field: &'static str,
        text: String,
        problem: &'static str,
    },
    /// Numbers that cannot all be true together (used + available > total).
    Inconsistent {
        detail: String,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Empty => write!(f, "empty line"),
            LineError::Unterminated => write!(f, "line cut short (no newline)"),
            LineError::UnknownFormat { tag } => {
                write!(f, "line starts with `{tag}`, expected `{LINE_TAG}`")
            }
            LineError::FieldCount { found } => {
                write!(f, "line has {found} fields, expected {FIELDS}")
            }
            LineError::BadField {
                field,
                text,
                problem,
            } => write!(f, "field {field} is `{text}`: {problem}"),
            LineError::Inconsistent { detail } => write!(f, "inconsistent line: {detail}"),
        }
    }
}

impl std::error::Error for LineError {}

/// Parses one reporter line as `BufRead::read_line` gives it, newline included:
/// only the newline tells a whole line from one cut inside its last number.
pub fn parse_line(line: &str) -> Result<GuestSample, LineError> {
    let Some(body) = line.strip_suffix('\n') else {
        return Err(LineError::Unterminated);
    };
    let fields: Vec<&str> = body.split_ascii_whitespace().collect();
    match fields.first() {
        None => return Err(LineError::Empty),
        Some(tag) if *tag != LINE_TAG => {
            return Err(LineError::UnknownFormat {
                tag: tag.chars().take(32).collect(),
            });
        }
        Some(_) if fields.len() != FIELDS => {
            return Err(LineError::FieldCount {
                found: fields.len(),
            });
        }
        Some(_) => {}
    }
    let sample = GuestSample {
        uptime_ms: count("uptime_ms", fields[1])?,
        cpu_pct: rate("cpu_pct", fields[2])?,
        mem_total_kib: count("mem_total_kib", fields[3])?,
        mem_used_kib: count("mem_used_kib", fields[4])?,
        mem_available_kib: count("mem_available_kib", fields[5])?,
        disk_read_kib_s: rate("disk_read_kib_s", fields[6])?,
        disk_write_kib_s: rate("disk_write_kib_s", fields[7])?,
        net_rx_bytes: count("net_rx_bytes", fields[8])?,
        net_tx_bytes: count("net_tx_bytes", fields[9])?,
    };
    if sample.cpu_pct > 100.0 {
        return Err(LineError::BadField {
            field: "cpu_pct",
            text: fields[2].to_string(),
            problem: "above 100",
        });
    }
    let accounted = sample.mem_used_kib.checked_add(sample.mem_available_kib);
    if accounted != Some(sample.mem_total_kib) {
        return Err(LineError::Inconsistent {
            detail: format!(
                "mem_used_kib {} + mem_available_kib {} != mem_total_kib {}",
                sample.mem_used_kib, sample.mem_available_kib, sample.mem_total_kib
            ),
        });
    }
    Ok(sample)
}

fn count(field: &'static str, text: &str) -> Result<u64, LineError> {
    text.parse::<u64>().map_err(|e| {
        let problem = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "too large",
            _ if text.starts_with('-') => "negative",
            _ => "not a whole number",
        };
        bad(field, text, problem)
    })
}

fn rate(field: &'static str, text: &str) -> Result<f64, LineError> {
    // Only plain decimals: Rust would also accept `inf`, `NaN` and `1e3`.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let problem = if text.starts_with('-') {
            "negative"
        } else {
            "not a decimal number"
        };
        return Err(bad(field, text, problem));
    }
    text.parse::<f64>()
        .map_err(|_| bad(field, text, "not a decimal number"))
}

fn bad(field: &'static str, text: &str, problem: &'static str) -> LineError {
    LineError::BadField {
        field,
        text: text.chars().take(32).collect(),
        problem,
    }
}

/// Good and malformed lines of one reporter, for the collector's status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineStats {
    pub good: u64,
    pub malformed: u64,
    pub last_error: Option<LineError>,
}

impl LineStats {
    /// Parses `line`, counts it, and returns the sample when it is one.
    pub fn parse(&mut self, line: &str) -> Option<GuestSample> {
        match parse_line(line) {
            Ok(sample) => {
                self.good += 1;
                Some(sample)
            }
            Err(e) => {
                self.malformed += 1;
                self.last_error = Some(e);
                None
            }
        }
    }
}

impl fmt::Display for LineStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} good, {} malformed", self.good, self.malformed)?;
        if let Some(e) = &self.last_error {
            write!(f, " (last: {e})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `reporter.sh 1` on Alpine 3.20's busybox (chroot of the minirootfs).
    const CAPTURED: &str = "\
vmlab-r1 2333520 0.0 24683656 740280 23943376 0.0 0.0 341027830 882628
vmlab-r1 2334530 1.0 24683656 733944 23949712 0.0 0.0 341027830 882628
vmlab-r1 2335520 6.1 24683656 740244 23943412 4775.8 15171.7 341027830 882628
vmlab-r1 2336520 0.0 24683656 740216 23943440 0.0 0.0 341027830 882628
";

    fn captured() -> Vec<&'static str> {
        CAPTURED.split_inclusive('\n').collect()
    }

    /// `body` as a whole line.
    fn parse(body: &str) -> Result<GuestSample, LineError> {
        parse_line(&format!("{body}\n"))
    }

    #[test]
    fn parses_captured_lines() {
        let samples: Vec<GuestSample> = captured().iter().map(|l| parse_line(l).unwrap()).collect();
        assert_eq!(samples.len(), 4);
        assert_eq!(
            samples[2],
            GuestSample {
                uptime_ms: 2_335_520,
                cpu_pct: 6.1,
                mem_total_kib: 24_683_656,
                mem_used_kib: 740_244,
                mem_available_kib: 23_943_412,
                disk_read_kib_s: 4775.8,
                disk_write_kib_s: 15171.7,
                net_rx_bytes: 341_027_830,
                net_tx_bytes: 882_628,
            }
        );
        assert!(samples.windows(2).all(|w| w[0].uptime_ms < w[1].uptime_ms));
    }

    #[test]
    fn accepts_a_carriage_return() {
        let line = captured()[0].replace('\n', "\r\n");
        assert!(parse_line(&line).is_ok());
    }

    #[test]
    fn every_cut_of_a_line_is_an_error() {
        let line = captured()[2];
        for cut in 0..line.len() {
            assert!(parse_line(&line[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_line(&line[..line.len() - 3]).unwrap_err(),
            LineError::Unterminated
        );
        assert_eq!(
            parse("vmlab-r1 2333520 0.0").unwrap_err(),
            LineError::FieldCount { found: 3 }
        );
    }

    #[test]
    fn garbage_and_other_versions_are_unknown_formats() {
        for body in [
            "sh: awk: not found",
            "vmlab-r2 1 0.0 3 1 2 0.0 0.0 0 0",
            "\u{1b}[0m\u{fffd}\u{fffd}",
            "Vmlab-r1 1 0.0 3 1 2 0.0 0.0 0 0",
        ] {
            assert!(
                matches!(parse(body), Err(LineError::UnknownFormat { .. })),
                "{body:?}"
            );
        }
        assert_eq!(parse("").unwrap_err(), LineError::Empty);
        assert_eq!(parse("  ").unwrap_err(), LineError::Empty);
        assert_eq!(
            parse("vmlab-r1 1 0.0 3 1 2 0.0 0.0 0 0 extra").unwrap_err(),
            LineError::FieldCount { found: 11 }
        );
    }

    #[test]
    fn bad_numbers_name_their_field() {
        let cases = [
            ("vmlab-r1 -5 0.0 3 1 2 0.0 0.0 0 0", "uptime_ms", "negative"),
            ("vmlab-r1 5 -1.0 3 1 2 0.0 0.0 0 0", "cpu_pct", "negative"),
            ("vmlab-r1 5 100.1 3 1 2 0.0 0.0 0 0", "cpu_pct", "above 100"),
            (
                "vmlab-r1 5 NaN 3 1 2 0.0 0.0 0 0",
                "cpu_pct",
                "not a decimal number",
            ),
            (
                "vmlab-r1 5 1e3 3 1 2 0.0 0.0 0 0",
                "cpu_pct",
                "not a decimal number",
            ),
            (
                "vmlab-r1 5 1.2.3 3 1 2 0.0 0.0 0 0",
                "cpu_pct",
                "not a decimal number",
            ),
            (
                "vmlab-r1 5 0.0 3 1 2 inf 0.0 0 0",
                "disk_read_kib_s",
                "not a decimal number",
            ),
            (
                "vmlab-r1 5 0.0 3 1 2 0.0 0.0 99999999999999999999999 0",
                "net_rx_bytes",
                "too large",
            ),
            (
                "vmlab-r1 5 0.0 3 1 2 0.0 0.0 0 12x",
                "net_tx_bytes",
                "not a whole number",
            ),
            (
                "vmlab-r1 5 0.0 3.5 1 2 0.0 0.0 0 0",
                "mem_total_kib",
                "not a whole number",
            ),
        ];
        for (body, want_field, want_problem) in cases {
            match parse(body) {
                Err(LineError::BadField { field, problem, .. }) => {
                    assert_eq!((field, problem), (want_field, want_problem), "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn memory_must_add_up_without_overflow() {
        let err = parse("vmlab-r1 5 0.0 100 60 50 0.0 0.0 0 0").unwrap_err();
        assert!(matches!(err, LineError::Inconsistent { .. }), "{err}");
        let max = u64::MAX;
        let body = format!("vmlab-r1 5 0.0 {max} {max} {max} 0.0 0.0 0 0");
        assert!(matches!(parse(&body), Err(LineError::Inconsistent { .. })));
    }

    #[test]
    fn stats_count_good_and_malformed_lines() {
        let mut stats = LineStats::default();
        let lines = captured()
            .into_iter()
            .chain(["garbage\n", "vmlab-r1 1 2\n"]);
        let samples = lines.filter_map(|line| stats.parse(line)).count();
        assert_eq!(samples, 4);
        assert_eq!((stats.good, stats.malformed), (4, 2));
        assert_eq!(
            stats.to_string(),
            "4 good, 2 malformed (last: line has 3 fields, expected 10)"
        );
    }

    /// Runs the real script for three lines with `shell` (when installed here).
    fn lines_from_script(shell: &[&str]) -> Option<Vec<String>> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;

        which::which(shell[0]).ok()?;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("reporter.sh");
        std::fs::write(&script, REPORTER_SH).unwrap();
        let mut child = std::process::Command::new(shell[0])
            .args(&shell[1..])
            .arg(&script)
            .arg("0.2")
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let group = child.id() as i32;
        // SAFETY (both kills): kill(2) on the process group this test started,
        // while its leader is still unwaited, so the group id is still ours.
        let kill = move |signal| unsafe { libc::kill(-group, signal) };
        // A script that prints nothing must not hang the test.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timeout = std::time::Duration::from_secs(20);
            if finished.recv_timeout(timeout) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                kill(libc::SIGKILL);
            }
        });
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines: Vec<String> = (0..3)
            .map(|_| {
                let mut line = String::new();
                out.read_line(&mut line).unwrap();
                line
            })
            .collect();
        drop(done);
        watchdog.join().unwrap();
        kill(libc::SIGTERM);
        child.wait().unwrap();
        Some(lines)
    }

    #[test]
    fn the_script_prints_lines_this_parser_reads() {
        // busybox sh + awk is what an Alpine guest runs; bash + the host's awk
        // shows the script is not tied to it.
        for shell in [&["busybox", "sh"][..], &["bash"]] {
            let Some(lines) = lines_from_script(shell) else {
                continue;
            };
            let samples: Vec<GuestSample> = lines
                .iter()
                .map(|l| parse_line(l).unwrap_or_else(|e| panic!("{shell:?}: {l:?}: {e}")))
                .collect();
            let steps: Vec<u64> = samples
                .windows(2)
                .map(|w| w[1].uptime_ms - w[0].uptime_ms)
                .collect();
            // Paced by its interval, never a burst; a busy host only makes
            // lines later.
            assert!(
                steps.iter().all(|ms| *ms >= 150),
                "{shell:?}: 0.2 s apart: {steps:?}"
            );
        }
    }

    #[test]
    fn the_script_documents_the_format_it_prints() {
        assert!(REPORTER_SH.contains(&format!("Line format `{LINE_TAG}`")));
        assert!(REPORTER_SH.contains(&format!("printf \"{LINE_TAG} ")));
    }
}
