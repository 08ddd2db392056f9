//! A program the user names (their own vCPU scheduler or memory
//! coordinator), run as an argv, never through a shell, in a process group
//! of its own, with its output saved to capped files. It is stopped as a
//! terminal would: SIGINT to the group, then SIGKILL after a grace period.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Each of a program's two logs keeps at most this much; the rest is read
/// and dropped, so a program that floods its output neither blocks nor fills
/// the disk.
pub const LOG_CAP_BYTES: u64 = 8 << 20;
/// How long a program has to exit after SIGINT before SIGKILL.
pub const GRACE_S: u64 = 5;

/// A running program.
pub struct Child {
    role: String,
    argv: Vec<String>,
    child: std::process::Child,
    started: Instant,
    logs: Vec<JoinHandle<u64>>,
    early: Option<(std::process::ExitStatus, f64)>,
}

/// How a program ended, for the scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub role: String,
    pub argv: Vec<String>,
    /// `exited 0`, `exited 3`, `killed by SIGSEGV`.
    pub status: String,
    /// Seconds after its start when it ended by itself, before it was asked
    /// to stop; `None` when it ran until the end.
    pub exited_early_s: Option<f64>,
    /// It outlived SIGINT by the grace period and was killed.
    pub ignored_sigint: bool,
    /// Bytes of output dropped over the cap.
    pub log_dropped_bytes: u64,
}

impl Outcome {
    /// Whether it behaved: ran to the end and left on SIGINT.
    pub fn clean(&self) -> bool {
        self.exited_early_s.is_none() && !self.ignored_sigint
    }

    /// One line for the scorecard: what happened and where its log is.
    pub fn summary(&self) -> String {
        let mut s = format!("{} ({}): ", self.role, self.argv.join(" "));
        match (self.exited_early_s, self.ignored_sigint) {
            (Some(at_s), _) => s += &format!("ended by itself after {at_s:.1} s, {}", self.status),
            (None, true) => s += &format!("ignored SIGINT, killed after {GRACE_S} s"),
            (None, false) => s += &format!("stopped on SIGINT, {}", self.status),
        }
        if self.log_dropped_bytes > 0 {
            s += &format!(
                "; output over {} MiB dropped ({} bytes)",
                LOG_CAP_BYTES >> 20,
                self.log_dropped_bytes
            );
        }
        s
    }
}

/// The log files of the program playing `role` in `dir`.
pub fn log_paths(dir: &Path, role: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{role}.stdout.log")),
        dir.join(format!("{role}.stderr.log")),
    )
}

/// Checks that `argv[0]` can be run: one line naming the program otherwise.
pub fn check(role: &str, argv: &[String]) -> Result<PathBuf> {
    let Some(program) = argv.first() else {
        bail!("--{role} needs a program, e.g. `--{role} ./vcpu_scheduler 2`");
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let path = which::which_in(program, std::env::var_os("PATH"), &cwd).or_else(|_| {
        let p = cwd.join(program);
        if p.is_file() {
            bail!("`{program}` (--{role}) is not executable; `chmod +x {program}`")
        }
        if program.contains('/') {
            bail!("`{program}` (--{role}) not found")
        }
        bail!("`{program}` (--{role}) is not on PATH; give its path, e.g. `./{program}`")
    })?;
    Ok(path)
}

impl Child {
    /// Starts `argv` with its stdout and stderr going to capped files in `dir`.
    pub fn start(role: &str, argv: &[String], dir: &Path) -> Result<Child> {
        let program = check(role, argv)?;
        let (out_path, err_path) = log_paths(dir, role);
        let mut child = Command::new(&program)
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting `{}` (--{role})", argv[0]))?;
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let logs = vec![
            copy_capped(out, create(&out_path)?),
            copy_capped(err, create(&err_path)?),
        ];
        Ok(Child {
            role: role.to_string(),
            argv: argv.to_vec(),
            child,
            started: Instant::now(),
            logs,
            early: None,
        })
    }

    /// Notes whether it ended by itself (call it now and then while it runs).
    pub fn poll(&mut self) {
        if self.early.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.early = Some((status, self.started.elapsed().as_secs_f64()));
        }
    }

    /// Stops it (SIGINT to its group, SIGKILL after [`GRACE_S`]) and says
    /// how it ended. Whatever else is left in its group is killed too.
    pub fn stop(mut self) -> Outcome {
        self.poll();
        let group = -(self.child.id() as i32);
        let mut ignored_sigint = false;
        let status = match self.early {
            Some((status, _)) => status,
            None => {
                signal(group, libc::SIGINT);
                let deadline = Instant::now() + Duration::from_secs(GRACE_S);
                loop {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        break status;
                    }
                    if Instant::now() >= deadline {
                        ignored_sigint = true;
                        signal(group, libc::SIGKILL);
                        break self.child.wait().expect("waiting for a child we started");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        signal(group, libc::SIGKILL);
        let log_dropped_bytes = self.logs.drain(..).map(|h| h.join().unwrap_or(0)).sum();
        Outcome {
            role: self.role.clone(),
            argv: self.argv.clone(),
            status: describe(status),
            exited_early_s: self.early.map(|(_, at_s)| at_s),
            ignored_sigint,
            log_dropped_bytes,
        }
    }
}

impl Drop for Child {
    /// A panic or an early return never leaves the program running.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            signal(-(self.child.id() as i32), libc::SIGKILL);
            self.child.wait().ok();
        }
    }
}

fn signal(target: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; ESRCH (gone) is fine.
    unsafe {
        libc::kill(target, sig);
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited {code}"),
        (None, Some(sig)) => format!("killed by {}", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> String {
    let known = [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
    ];
    known
        .iter()
        .find(|(n, _)| *n == sig)
        .map_or(format!("signal {sig}"), |(_, name)| name.to_string())
}

fn create(path: &Path) -> Result<File> {
    File::create_new(path).with_context(|| format!("creating {}", path.display()))
}

/// Copies `from` into `to` up to [`LOG_CAP_BYTES`], then reads and drops the
/// rest; returns the bytes dropped.
fn copy_capped(mut from: impl Read + Send + 'static, mut to: File) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let (mut kept, mut dropped) = (0u64, 0u64);
        let mut buf = [0u8; 8192];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let room = LOG_CAP_BYTES.saturating_sub(kept).min(n as u64) as usize;
            if room > 0 && to.write_all(&buf[..room]).is_err() {
                break;
            }
            kept += room as u64;
            dropped += (n - room) as u64;
        }
        if dropped > 0 {
            writeln!(
                to,
                "\n[vmlab: log capped at {LOG_CAP_BYTES} bytes; {dropped} dropped]"
            )
            .ok();
        }
        dropped
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_program_that_leaves_on_sigint_is_stopped_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Child::start(
            "manager",
            &argv(&[
                "sh",
                "-c",
                "echo started $1; trap 'echo bye; exit 0' INT; while :; do sleep 0.1; done",
                "sh",
                "2",
            ]),
            dir.path(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        child.poll();
        let out = child.stop();
        assert!(out.clean(), "{out:?}");
        assert_eq!(out.status, "exited 0");
        let log = std::fs::read_to_string(dir.path().join("manager.stdout.log")).unwrap();
        assert_eq!(log, "started 2\nbye\n");
    }

    #[test]
    fn a_crash_is_reported_with_its_signal_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Child::start(
            "cpu-manager",
            &argv(&["sh", "-c", "kill -SEGV $$"]),
            dir.path(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        child.poll();
        let out = child.stop();
        assert_eq!(out.status, "killed by SIGSEGV");
        assert!(out.exited_early_s.is_some() && !out.clean());
        assert!(
            out.summary().contains("ended by itself"),
            "{}",
            out.summary()
        );
    }

    #[test]
    fn sigint_ignored_means_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let script = format!(
            "trap '' INT; sleep 600 & echo $! > {}; while :; do sleep 0.1; done",
            pidfile.display()
        );
        let child =
            Child::start("memory-manager", &argv(&["sh", "-c", &script]), dir.path()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let out = child.stop();
        assert!(out.ignored_sigint, "{out:?}");
        assert_eq!(out.status, "killed by SIGKILL");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Dead or a zombie waiting for its new parent to reap it.
        std::thread::sleep(Duration::from_millis(200));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.trim().chars().next());
        assert!(
            matches!(state, None | Some('Z')),
            "the program's own child outlived it: {stat}"
        );
    }

    #[test]
    fn a_flood_is_capped_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let child = Child::start(
            "manager",
            &argv(&["sh", "-c", "head -c 20000000 /dev/zero; sleep 600"]),
            dir.path(),
        )
        .unwrap();
        // The flood is drained while it runs: stop finds it asleep, not
        // blocked on a full pipe.
        std::thread::sleep(Duration::from_millis(1500));
        let out = child.stop();
        assert_eq!(out.log_dropped_bytes, 20_000_000 - LOG_CAP_BYTES);
        let len = std::fs::metadata(dir.path().join("manager.stdout.log"))
            .unwrap()
            .len();
        assert!(len < LOG_CAP_BYTES + 200, "{len}");
    }

    #[test]
    fn missing_and_unexecutable_programs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = check("manager", &argv(&["./no-such-scheduler", "2"])).unwrap_err();
        assert_eq!(e.to_string(), "`./no-such-scheduler` (--manager) not found");
        let file = dir.path().join("sched");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let e = check("manager", &argv(&[file.to_str().unwrap()])).unwrap_err();
        assert!(
            e.to_string().contains("is not executable; `chmod +x"),
            "{e}"
        );
        let e = check("manager", &argv(&["no-such-scheduler"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`no-such-scheduler` (--manager) is not on PATH; give its path, e.g. `./no-such-scheduler`"
        );
    }
}
