//! Running a workload in a guest: the static binary pushed once (the guest
//! keeps it under its digest), a working directory per run, output
//! streamed, result files fetched, the directory removed. Detached runs keep
//! a pid file so `vmlab stop` can end them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::build::Built;
use super::manifest::{Params, Workload};
use crate::download::digest;
use crate::guest::GUEST_ROOT;
use crate::guest::shell::{join, quote};
use crate::guest::ssh::{Cancel, Exit, Guest, Io};

/// A workload built with its parameters, ready to run anywhere.
pub struct Program<'a> {
    pub workload: &'a Workload,
    pub built: &'a Built,
    pub params: &'a Params,
    /// Arguments appended to the manifest's command line (`vmlab run W -- ARGS`).
    pub extra: &'a [String],
}

/// A run file of the workload folder and where the guest keeps it.
struct RunFile {
    /// Its path in the working directory, as the manifest names it.
    rel: String,
    local: PathBuf,
    guest: String,
    sha256: String,
}

/// How one run in one guest went.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Result files the program left in its working directory (name, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// Wall time of the program itself.
    pub run_s: f64,
    /// vmlab's own time around it: push, setup, fetching results, cleanup.
    pub overhead_s: f64,
    /// Whether the binary had to be uploaded.
    pub pushed: bool,
}

impl Outcome {
    /// The program ended with a status its manifest counts as finished.
    pub fn finished(&self, workload: &Workload) -> bool {
        matches!(self.exit, Exit::Code(c) if workload.run.exit_codes.contains(&c))
    }
}

impl Program<'_> {
    /// The binary's path in the guest: named by its digest, so a guest that
    /// has it never receives it twice.
    pub fn guest_binary(&self) -> String {
        let name = self
            .built
            .binary
            .file_name()
            .map_or("program".into(), |n| n.to_string_lossy().into_owned());
        format!("{GUEST_ROOT}/bin/{}/{name}", &self.built.sha256[..16])
    }

    /// The command line the guest runs.
    pub fn argv(&self) -> Result<Vec<String>> {
        let mut argv = self.workload.run_argv(self.params, &self.guest_binary())?;
        argv.extend(self.extra.iter().cloned());
        Ok(argv)
    }

    /// Uploads the binary and the run files unless the guest has them;
    /// returns whether it uploaded anything.
    pub fn push(&self, guest: &Guest) -> Result<bool> {
        let context = || format!("pushing `{}` to {}", self.workload.name, guest.vm());
        let mut pushed = guest
            .push(&self.built.binary, &self.guest_binary(), &self.built.sha256)
            .with_context(context)?;
        for file in self.run_files()? {
            pushed |= guest
                .push(&file.local, &file.guest, &file.sha256)
                .with_context(context)?;
        }
        Ok(pushed)
    }

    /// The manifest's run files. The guest keeps each under its digest, as
    /// binaries, so repeated runs upload nothing.
    fn run_files(&self) -> Result<Vec<RunFile>> {
        self.workload
            .run
            .files
            .iter()
            .map(|rel| {
                let local = self.workload.dir.join(rel);
                let sha256 = digest::of_file(&local)
                    .with_context(|| format!("reading {}", local.display()))?
                    .sha256;
                let name = rel.rsplit('/').next().unwrap_or(rel);
                Ok(RunFile {
                    guest: format!("{GUEST_ROOT}/files/{}/{name}", &sha256[..16]),
                    rel: rel.clone(),
                    local,
                    sha256,
                })
            })
            .collect()
    }

    /// (path in the working directory, SHA-256) of each run file, for the record.
    pub fn run_file_digests(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .run_files()?
            .into_iter()
            .map(|file| (file.rel, file.sha256))
            .collect())
    }

    /// Shell commands that link the run files into the current directory,
    /// each ending in `&& `; empty when there are none.
    fn link_run_files(&self) -> Result<String> {
        let mut script = String::new();
        for file in self.run_files()? {
            if let Some((dir, _)) = file.rel.rsplit_once('/') {
                script += &format!("mkdir -p {} && ", quote(dir));
            }
            script += &format!("ln -sf {} {} && ", quote(&file.guest), quote(&file.rel));
        }
        Ok(script)
    }

    /// Runs the program in `workdir` (created, then removed), teeing its
    /// output to `out`/`err`. When `cancel` goes up, the program's process
    /// group gets SIGTERM and its output is still read to the end.
    pub fn run(
        &self,
        guest: &Guest,
        workdir: &str,
        out: &mut dyn Write,
        err: &mut dyn Write,
        cancel: Option<&AtomicBool>,
    ) -> Result<Outcome> {
        let started = Instant::now();
        let pushed = self.push(guest)?;
        let dir = quote(workdir);
        let script = format!(
            "mkdir -p {dir} && cd {dir} && {}echo $$ > .pid && exec {}",
            self.link_run_files()?,
            join(&self.argv()?)
        );
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let launched = Instant::now();
        let exit = guest.exec_io(
            &script,
            Io {
                stdin: None,
                stdout: &mut Tee(&mut stdout, out),
                stderr: &mut Tee(&mut stderr, err),
                cancel: cancel.map(|flag| Cancel {
                    flag,
                    stop: stop_script(&format!("{workdir}/.pid")),
                }),
            },
            None,
        )?;
        let ended = Instant::now();
        let files = self.fetch_results(guest, workdir)?;
        let cleaned = guest.exec(&format!("rm -rf {dir}"))?;
        if !cleaned.exit.success() {
            tracing::warn!("{}: could not remove {workdir}", guest.vm());
        }
        let overhead = (launched - started) + ended.elapsed();
        Ok(Outcome {
            exit,
            stdout,
            stderr,
            files,
            run_s: (ended - launched).as_secs_f64(),
            overhead_s: overhead.as_secs_f64(),
            pushed,
        })
    }

    /// The files of `workdir` the manifest names as results.
    fn fetch_results(&self, guest: &Guest, workdir: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if self.workload.output.files.is_empty() {
            return Ok(Vec::new());
        }
        let listing = guest.exec(&format!("ls -1A {}", quote(workdir)))?;
        let mut files = Vec::new();
        for name in String::from_utf8_lossy(&listing.stdout).lines() {
            if self.workload.is_output_file(name) {
                let content = guest.read(&format!("{workdir}/{name}"))?;
                files.push((name.to_string(), content));
            }
        }
        Ok(files)
    }

    /// Starts the program in the background, where it outlives the SSH
    /// session; `vmlab stop` (see [`stop_detached`]) ends it.
    pub fn start_detached(&self, guest: &Guest, run_id: &str) -> Result<String> {
        self.push(guest)?;
        let dir = format!("{GUEST_ROOT}/detached/{}/{run_id}", self.workload.name);
        let script = format!(
            "mkdir -p {q} && cd {q} && {links}setsid sh -c 'echo $$ > pid; exec \"$@\" > stdout 2> stderr' vmlab {argv} </dev/null >/dev/null 2>&1 &",
            q = quote(&dir),
            links = self.link_run_files()?,
            argv = join(&self.argv()?)
        );
        let started = guest.exec(&script)?;
        if !started.exit.success() {
            bail!(
                "starting `{}` in {} failed: {}",
                self.workload.name,
                guest.vm(),
                String::from_utf8_lossy(&started.stderr).trim()
            );
        }
        Ok(dir)
    }
}

/// Ends every detached run of `workload` in the guest (SIGTERM to its
/// process group, SIGKILL after 5 s) and removes their directories;
/// returns how many were running.
pub fn stop_detached(guest: &Guest, workload: &str) -> Result<u32> {
    let root = quote(&format!("{GUEST_ROOT}/detached/{workload}"));
    let script = format!(
        r#"n=0; for f in {root}/*/pid; do [ -f "$f" ] || continue; p=$(cat "$f"); if kill -0 "$p" 2>/dev/null; then n=$((n+1)); {stop}; fi; rm -rf "${{f%/pid}}"; done; echo $n"#,
        stop = stop_pid("$p")
    );
    let out = guest.exec(&script)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("stopping `{workload}` in {}: {}", guest.vm(), text.trim()))
}

/// Stops the process whose pid is in `pid_file`.
fn stop_script(pid_file: &str) -> String {
    format!(
        "p=$(cat {} 2>/dev/null) && {}",
        quote(pid_file),
        stop_pid("$p")
    )
}

/// SIGTERM to the group led by `pid` (or the process alone), then SIGKILL
/// if it still runs after 5 s.
fn stop_pid(pid: &str) -> String {
    format!(
        "{{ kill -TERM -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null; i=0; while kill -0 {pid} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true; }}"
    )
}

/// Writes to both: keeps a copy while output streams on.
struct Tee<'a>(&'a mut Vec<u8>, &'a mut dyn Write);

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.1.flush()
    }
}

/// Lines of output, each prefixed (`vm-1 | `), written whole so lines of
/// several VMs never interleave mid-line.
pub struct Prefixed<W: Write> {
    prefix: String,
    pending: Vec<u8>,
    out: W,
}

impl<W: Write> Prefixed<W> {
    pub fn new(prefix: String, out: W) -> Self {
        Self {
            prefix,
            pending: Vec::new(),
            out,
        }
    }
}

impl<W: Write> Write for Prefixed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let mut whole = self.prefix.clone().into_bytes();
            whole.extend_from_slice(&line);
            self.out.write_all(&whole)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for Prefixed<W> {
    /// A last line without a newline still appears.
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let mut whole = self.prefix.clone().into_bytes();
            whole.append(&mut self.pending);
            whole.push(b'\n');
            let _ = self.out.write_all(&whole);
        }
    }
}

/// Writes results under `dir`: stdout, stderr and every result file.
pub fn keep_raw(dir: &Path, outcome: &Outcome) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut all = vec![
        ("stdout.txt".to_string(), &outcome.stdout),
        ("stderr.txt".to_string(), &outcome.stderr),
    ];
    all.extend(outcome.files.iter().map(|(n, c)| (n.clone(), c)));
    for (name, content) in all {
        std::fs::write(dir.join(&name), content)
            .with_context(|| format!("writing {}", dir.join(&name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workload folder whose program reads `top.in` and `input/deck.txt`.
    fn with_run_files() -> (tempfile::TempDir, Workload) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("w");
        std::fs::create_dir_all(dir.join("input")).unwrap();
        std::fs::write(
            dir.join("workload.toml"),
            "name = \"w\"\ndescription = \"d\"\nkind = \"load\"\n[source]\nfiles = [\"top.in\"]\n[build]\ncompiler = \"gcc\"\ncommands = [[\"true\"]]\nbinary = \"w\"\n[run]\nargv = [\"{binary}\", \"-i\", \"top.in\"]\nfiles = [\"top.in\", \"input/deck.txt\"]\n[output]\nparser = \"stream\"\nfiles = []\n",
        )
        .unwrap();
        std::fs::write(dir.join("top.in"), "1 - size\n").unwrap();
        std::fs::write(dir.join("input/deck.txt"), "it's a deck\n").unwrap();
        let workload = crate::workload::load(root.path(), "w").unwrap();
        (root, workload)
    }

    /// The link commands, run by a real shell in an empty directory, leave
    /// each run file at its path, pointing at its digest's place in the
    /// guest; the record names the same digests.
    #[test]
    fn run_files_are_linked_by_digest_into_the_working_directory() {
        let (_root, workload) = with_run_files();
        let built = Built {
            binary: workload.dir.join("w"),
            sha256: "ab".repeat(32),
            cache_hit: true,
        };
        let params = workload.resolve_params(&[]).unwrap();
        let program = Program {
            workload: &workload,
            built: &built,
            params: &params,
            extra: &[],
        };
        let workdir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}true", program.link_run_files().unwrap()))
            .current_dir(workdir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let mut recorded = Vec::new();
        for (rel, content) in [
            ("top.in", "1 - size\n"),
            ("input/deck.txt", "it's a deck\n"),
        ] {
            let target = std::fs::read_link(workdir.path().join(rel)).unwrap();
            let name = rel.rsplit('/').next().unwrap();
            let sha = digest::sha256(content.as_bytes());
            assert_eq!(
                target,
                Path::new(&format!("{GUEST_ROOT}/files/{}/{name}", &sha[..16])),
                "{rel}"
            );
            recorded.push((rel.to_owned(), sha));
        }
        assert_eq!(program.run_file_digests().unwrap(), recorded);
    }

    #[test]
    fn prefixed_lines_stay_whole() {
        let mut out = Vec::new();
        {
            let mut p = Prefixed::new("vm-1 | ".into(), &mut out);
            p.write_all(b"one\ntw").unwrap();
            p.write_all(b"o\nthree").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "vm-1 | one\nvm-1 | two\nvm-1 | three\n"
        );
    }
}
