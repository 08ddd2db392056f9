//! Building a workload's static binary on the host, once per set of inputs.
//!
//! The source (the workload's files, or the verified upstream archive) is
//! unpacked into a scratch directory, the manifest's argv commands run there
//! through the host runner, and the result must be a static ELF: guests run
//! Alpine's musl or a bare busybox, where a glibc-linked binary cannot start.
//!
//! Cache layout, keyed by the SHA-256 of what went into the build (source
//! digest, rendered commands, binary path, compiler version line):
//!
//! ```text
//! <cache_dir>/<key>/<binary>      the static binary
//! <cache_dir>/<key>/build.json    the inputs and the binary's SHA-256
//! <cache_dir>/<key>/build.log     everything the commands printed
//! ```
//!
//! An entry is made complete in the scratch directory and renamed into place
//! in one step, so readers never see half of one, and two concurrent builds of
//! the same key both succeed: the second rename fails on the existing entry,
//! and that build uses it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{Params, Source, Workload};
use crate::download::digest::{self, hex};
use crate::host;
use crate::lab::last_lines;

const RECORD: &str = "build.json";
const LOG: &str = "build.log";
/// Lines of a failed command's output quoted in the error.
const TAIL_LINES: usize = 20;

/// A built binary in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub binary: PathBuf,
    pub sha256: String,
    /// True when nothing was built: the cache had this exact build.
    pub cache_hit: bool,
}

/// Everything that decides what a build makes; its digest is the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub source_sha256: String,
    pub commands: Vec<Vec<String>>,
    /// Path of the binary in the source directory.
    pub binary: String,
    /// First line of `gcc --version` (or `g++`).
    pub compiler: String,
}

impl Inputs {
    /// SHA-256 (hex) of the inputs written as JSON: arguments stay separate,
    /// so `["a b"]` and `["a", "b"]` are different builds.
    pub fn cache_key(&self) -> String {
        let json = serde_json::to_vec(self).expect("plain strings always serialize");
        digest::sha256(&json)
    }
}

/// `build.json` of a cache entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    workload: String,
    inputs: Inputs,
    binary_sha256: String,
}

/// Builds `workload` from `source` (the verified upstream archive, or the
/// workload's folder for `files` sources) with the build parameters of
/// `params`, or finds the same build in `cache_dir`.
pub fn build(
    workload: &Workload,
    source: &Path,
    params: &Params,
    cache_dir: &Path,
) -> Result<Built> {
    let inputs = Inputs {
        source_sha256: source_sha256(workload, source)?,
        commands: workload.build_commands(params)?,
        binary: workload.build.binary.clone(),
        compiler: compiler_version(workload.build.compiler.program())?,
    };
    let entry = cache_dir.join(inputs.cache_key());
    if let Some(built) = cached(&entry)? {
        return Ok(built);
    }

    fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating the build cache {}", cache_dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache_dir)
        .with_context(|| format!("creating a build directory in {}", cache_dir.display()))?;
    let out = scratch.path().join("out");
    fs::create_dir(&out)?;
    let src = unpack(workload, source, &scratch.path().join("src"))?;
    for command in &inputs.commands {
        run_logged(&workload.name, command, &src, &out.join(LOG))?;
    }

    let made = src.join(&workload.build.binary);
    let bytes = fs::read(&made).with_context(|| {
        format!(
            "`{}`: the build commands made no `{}`; check `build.binary` in {}",
            workload.name,
            workload.build.binary,
            workload.manifest_path().display()
        )
    })?;
    check_static_elf(&bytes)
        .with_context(|| format!("`{}`: the built `{}`", workload.name, workload.build.binary))?;
    let installed = out.join(file_name(&inputs.binary)?);
    fs::write(&installed, &bytes)?;
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o755))?;
    let record = Record {
        workload: workload.name.clone(),
        inputs,
        binary_sha256: digest::sha256(&bytes),
    };
    fs::write(
        out.join(RECORD),
        serde_json::to_string_pretty(&record)? + "\n",
    )?;

    if let Err(e) = fs::rename(&out, &entry) {
        // A concurrent build of the same inputs got there first: use its entry.
        if !entry.join(RECORD).is_file() {
            return Err(e).with_context(|| {
                format!(
                    "installing the build at {}; if it exists, delete it to build again",
                    entry.display()
                )
            });
        }
    }
    let built = cached(&entry)?
        .ok_or_else(|| anyhow!("{} vanished right after it was installed", entry.display()))?;
    Ok(Built {
        cache_hit: false,
        ..built
    })
}

/// The cache entry at `entry`, if there is one; a binary that no longer
/// matches its record is an error, not a rebuild (something changed the cache).
fn cached(entry: &Path) -> Result<Option<Built>> {
    let record_path = entry.join(RECORD);
    let text = match fs::read_to_string(&record_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", record_path.display())),
    };
    let corrupt = || format!("{} is corrupt; delete it to build again", entry.display());
    let record: Record = serde_json::from_str(&text).with_context(corrupt)?;
    let binary = entry.join(file_name(&record.inputs.binary)?);
    let sha256 = digest::of_file(&binary).with_context(corrupt)?.sha256;
    ensure!(sha256 == record.binary_sha256, corrupt());
    Ok(Some(Built {
        binary,
        sha256,
        cache_hit: true,
    }))
}

fn file_name(binary: &str) -> Result<&str> {
    Path::new(binary)
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("`{binary}` has no file name"))
}

/// The digest that stands for the source: the archive's own SHA-256 (checked
/// against the manifest), or one over the names and contents of the files.
fn source_sha256(workload: &Workload, source: &Path) -> Result<String> {
    match &workload.source {
        Source::Upstream { url, sha256, .. } => {
            let actual = digest::of_file(source)
                .with_context(|| format!("reading the source of `{}`", workload.name))?
                .sha256;
            ensure!(
                actual == *sha256,
                "`{}`: {} has SHA-256 {actual}, but the manifest pins {sha256}; download {url} again",
                workload.name,
                source.display()
            );
            Ok(actual)
        }
        Source::Files(files) => {
            let mut digest = Sha256::new();
            for name in files {
                let path = source.join(name);
                let bytes = fs::read(&path).with_context(|| {
                    format!("reading {} (source of `{}`)", path.display(), workload.name)
                })?;
                digest.update(name.as_bytes());
                digest.update([0]);
                digest.update((bytes.len() as u64).to_le_bytes());
                digest.update(&bytes);
            }
            Ok(hex(&digest.finalize()))
        }
    }
}

/// The first line of `<compiler> --version`, e.g. `gcc (Debian 12.2.0-14) 12.2.0`.
fn compiler_version(compiler: &str) -> Result<String> {
    let out = host::run(Command::new(compiler).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").trim();
    ensure!(!line.is_empty(), "`{compiler} --version` printed nothing");
    Ok(line.to_owned())
}

/// Puts the source into `into`; returns the directory to build in.
fn unpack(workload: &Workload, source: &Path, into: &Path) -> Result<PathBuf> {
    fs::create_dir(into)?;
    match &workload.source {
        Source::Files(files) => {
            for name in files {
                fs::copy(source.join(name), into.join(name))
                    .with_context(|| format!("copying {name} of `{}`", workload.name))?;
            }
            Ok(into.to_path_buf())
        }
        Source::Upstream { top_dir, .. } => {
            host::run(
                Command::new("tar")
                    .arg("-xzf")
                    .arg(source)
                    .arg("--no-same-owner")
                    .arg("-C")
                    .arg(into),
            )
            .with_context(|| format!("unpacking {}", source.display()))?;
            let top = into.join(top_dir);
            ensure!(
                top.is_dir(),
                "`{}`: {} does not unpack to `{top_dir}/`; fix `source.top_dir` in {}",
                workload.name,
                source.display(),
                workload.manifest_path().display()
            );
            Ok(top)
        }
    }
}

/// Runs one build command in `dir`, its stdout and stderr appended to `log`.
fn run_logged(workload: &str, argv: &[String], dir: &Path, log: &Path) -> Result<()> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow!("`{workload}` has an empty build command"))?;
    let mut file = OpenOptions::new().create(true).append(true).open(log)?;
    writeln!(file, "$ {}", shown(argv))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    host::run(&mut cmd).map(drop).map_err(|e| {
        let output = fs::read_to_string(log).unwrap_or_default();
        anyhow!(
            "building `{workload}`: `{}` failed ({e}; its output went to the build log); the log ends with:\n{}",
            shown(argv),
            last_lines(&output, Some(TAIL_LINES))
        )
    })
}

/// An argv as one line, arguments with spaces in quotes.
fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// --- ELF ------------------------------------------------------------------------

const PT_INTERP: u32 = 3;

/// Checks that `bytes` are an x86-64 ELF executable without a program
/// interpreter (PT_INTERP), that is, statically linked (static-pie included).
pub fn check_static_elf(bytes: &[u8]) -> Result<()> {
    ensure!(bytes.starts_with(b"\x7fELF"), "not an ELF file");
    ensure!(
        bytes.get(4) == Some(&2) && bytes.get(5) == Some(&1),
        "not a 64-bit little-endian ELF file"
    );
    let e_type = u16_at(bytes, 16)?;
    ensure!(
        e_type == 2 || e_type == 3,
        "ELF type {e_type} is not an executable"
    );
    let machine = u16_at(bytes, 18)?;
    ensure!(machine == 62, "built for ELF machine {machine}, not x86-64");
    let phoff = usize::try_from(u64_at(bytes, 0x20)?)?;
    let phentsize = usize::from(u16_at(bytes, 0x36)?);
    let phnum = usize::from(u16_at(bytes, 0x38)?);
    ensure!(phnum > 0, "no program headers: not an executable");
    ensure!(
        phentsize >= 56,
        "program header size {phentsize} is too small"
    );
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| anyhow!("program header table out of bounds"))?;
        if u32_at(bytes, at)? == PT_INTERP {
            let start = usize::try_from(u64_at(bytes, at.saturating_add(8))?)?;
            let len = usize::try_from(u64_at(bytes, at.saturating_add(32))?)?;
            let interp = start
                .checked_add(len)
                .and_then(|end| bytes.get(start..end))
                .map(|b| String::from_utf8_lossy(b).trim_end_matches('\0').to_owned())
                .unwrap_or_else(|| "?".into());
            bail!("dynamically linked (needs {interp}); add -static to its link command");
        }
    }
    Ok(())
}

fn bytes_at<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("truncated ELF file ({} bytes)", bytes.len()))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(bytes_at(bytes, at)?))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(bytes_at(bytes, at)?))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64> {
    Ok(u64::from_le_bytes(bytes_at(bytes, at)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first KiB of real binaries (tests/fixtures/elf): headers and
    /// program headers, which is all the check reads.
    fn elf_head(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/elf")
            .join(name);
        fs::read(path).unwrap()
    }

    #[test]
    fn static_binaries_pass_the_elf_check() {
        check_static_elf(&elf_head("static-head.bin")).unwrap();
        check_static_elf(&elf_head("static-pie-head.bin")).unwrap();
    }

    #[test]
    fn a_dynamic_binary_names_its_interpreter() {
        let err = check_static_elf(&elf_head("dynamic-head.bin")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dynamically linked (needs /lib64/ld-linux-x86-64.so.2); add -static to its link command"
        );
    }

    #[test]
    fn non_elf_and_cut_files_are_refused() {
        let head = elf_head("static-head.bin");
        let mut arm = head.clone();
        arm[18] = 183; // EM_AARCH64
        let mut object = head.clone();
        object[16] = 1; // ET_REL
        let cases: [(&[u8], &str); 6] = [
            (b"", "not an ELF file"),
            (b"#!/bin/sh\necho hi\n", "not an ELF file"),
            (&head[..40], "truncated ELF file (40 bytes)"),
            (&head[..100], "truncated ELF file (100 bytes)"),
            (&arm, "built for ELF machine 183, not x86-64"),
            (&object, "ELF type 1 is not an executable"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(check_static_elf(bytes).unwrap_err().to_string(), expected);
        }
    }

    fn inputs() -> Inputs {
        Inputs {
            source_sha256: "ab".repeat(32),
            commands: vec![vec!["gcc".into(), "-DN=1".into(), "a.c".into()]],
            binary: "a.out".into(),
            compiler: "gcc (Debian 12.2.0-14) 12.2.0".into(),
        }
    }

    #[test]
    fn the_cache_key_changes_with_every_input() {
        let base = inputs().cache_key();
        assert_eq!(base.len(), 64);
        assert_eq!(inputs().cache_key(), base, "stable");
        let changes: [fn(&mut Inputs); 5] = [
            |i| i.source_sha256 = "cd".repeat(32),
            |i| i.commands[0][1] = "-DN=2".into(),
            |i| i.binary = "b.out".into(),
            |i| i.compiler = "gcc (Debian 13.1.0-1) 13.1.0".into(),
            // The same words, split into arguments differently.
            |i| i.commands[0] = vec!["gcc -DN=1".into(), "a.c".into()],
        ];
        for change in changes {
            let mut other = inputs();
            change(&mut other);
            assert_ne!(other.cache_key(), base, "{other:?}");
        }
    }

    #[test]
    fn files_sources_are_hashed_by_name_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let workload_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let w = crate::workload::load(&workload_dir, "cpu_hog").unwrap();
        let Source::Files(files) = &w.source else {
            panic!("cpu_hog is built from its own files")
        };
        let write = |text: &str| {
            for f in files {
                fs::write(dir.path().join(f), text).unwrap();
            }
            source_sha256(&w, dir.path()).unwrap()
        };
        let a = write("int main(void) { return 0; }\n");
        assert_eq!(write("int main(void) { return 0; }\n"), a);
        assert_ne!(write("int main(void) { return 1; }\n"), a);
        fs::remove_file(dir.path().join(&files[0])).unwrap();
        let err = format!("{:#}", source_sha256(&w, dir.path()).unwrap_err());
        assert!(err.contains("(source of `cpu_hog`)"), "{err}");
    }

    #[test]
    fn an_archive_must_match_its_pin() {
        let dir = tempfile::tempdir().unwrap();
        let workload_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let w = crate::workload::load(&workload_dir, "stream").unwrap();
        let fake = dir.path().join("stream.tar.gz");
        fs::write(&fake, b"not the release").unwrap();
        let err = source_sha256(&w, &fake).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("`stream`: {} has SHA-256 ", fake.display()))
                && err.contains("but the manifest pins 977651ff")
                && err.ends_with("download https://github.com/jeffhammond/STREAM/archive/6703f7504a38a8da96b353cadafa64d3c2d7a2d3.tar.gz again"),
            "{err}"
        );
    }
}
