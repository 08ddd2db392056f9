//! Running host programs (qemu-img, genisoimage, ssh-keygen) with errors that
//! say which program failed, what it printed, and how to get it.

pub mod accel;
pub mod child;
pub mod facts;
pub mod signals;

use std::process::{Command, Output};

use anyhow::{Result, anyhow, bail};

/// The one remedy for a missing host program.
pub const INSTALL_HINT: &str = "install the host packages with scripts/setup";

/// Where `program` is: on PATH, or in the sbin directories a normal user's
/// PATH lacks on Debian (`mkfs.ext4`, `debugfs`).
pub fn program(program: &str) -> Result<std::path::PathBuf> {
    let sbin = std::env::var_os("PATH").map(|path| {
        let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
        dirs.extend(["/usr/sbin", "/sbin"].map(std::path::PathBuf::from));
        std::env::join_paths(dirs).expect("paths from PATH join again")
    });
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    which::which_in(program, sbin, cwd)
        .map_err(|_| anyhow!("`{program}` is not installed; {INSTALL_HINT}"))
}

/// Runs `cmd` to completion; a non-zero exit is an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    tracing::debug!(
        "running {program} {}",
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("`{program}` is not installed; {INSTALL_HINT}"),
        _ => anyhow!("cannot run `{program}`: {e}"),
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        bail!("`{program}` failed ({}): {last}", out.status);
    }
    Ok(out)
}

/// Effective user and group: QEMU runs as them so it can read the lab's files.
pub fn uid_gid() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_fix() {
        let err = run(&mut Command::new("vmlab-no-such-program"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("`vmlab-no-such-program` is not installed; {INSTALL_HINT}")
        );
    }

    #[test]
    fn failure_carries_stderr() {
        let err =
            run(Command::new("sh").args(["-c", "echo first >&2; echo 'real reason' >&2; exit 3"]))
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("`sh` failed (exit status: 3): real reason"),
            "{err}"
        );
        assert_eq!(
            run(Command::new("sh").args(["-c", "echo hi"]))
                .unwrap()
                .stdout,
            b"hi\n"
        );
    }
}
