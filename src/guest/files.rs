//! Files to and from a guest over SSH. Guests have no SFTP server (dropbear)
//! and maybe no `scp`, so content is streamed through `cat` on an exec
//! channel and checked with `sha256sum` (busybox has it) afterwards.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::shell::quote;
use super::ssh::{Guest, Io};

impl Guest {
    /// Copies `local` to `remote` (made executable) unless it is there with
    /// this SHA-256 already; returns whether it uploaded.
    pub fn push(&self, local: &Path, remote: &str, sha256: &str) -> Result<bool> {
        let file =
            std::fs::File::open(local).with_context(|| format!("opening {}", local.display()))?;
        self.push_from(Box::new(file), &local.display().to_string(), remote, sha256)
    }

    /// [`Guest::push`] of content in memory (a script built into vmlab).
    pub fn push_bytes(&self, content: &'static [u8], remote: &str) -> Result<bool> {
        let sha256 = crate::download::digest::sha256(content);
        self.push_from(Box::new(content), "vmlab's copy", remote, &sha256)
    }

    fn push_from(
        &self,
        content: Box<dyn std::io::Read + Send>,
        what: &str,
        remote: &str,
        sha256: &str,
    ) -> Result<bool> {
        if self.sha256_of(remote)?.as_deref() == Some(sha256) {
            return Ok(false);
        }
        let dir = remote.rsplit_once('/').map_or(".", |(d, _)| d);
        let part = format!("{remote}.part");
        let script = format!(
            "mkdir -p {dir} && cat > {part} && chmod 755 {part} && mv -f {part} {remote}",
            dir = quote(dir),
            part = quote(&part),
            remote = quote(remote)
        );
        let mut err = Vec::new();
        let io = Io {
            stdin: Some(content),
            stdout: &mut std::io::sink(),
            stderr: &mut err,
            cancel: None,
        };
        let exit = self.exec_io(&script, io, None)?;
        if !exit.success() {
            bail!(
                "copying {what} to {}:{remote} failed ({exit}): {}",
                self.vm(),
                String::from_utf8_lossy(&err).trim()
            );
        }
        match self.sha256_of(remote)? {
            Some(sum) if sum == sha256 => Ok(true),
            got => bail!(
                "{}:{remote} has SHA-256 {} after the copy, expected {sha256}; the guest's disk may be full",
                self.vm(),
                got.as_deref().unwrap_or("none")
            ),
        }
    }

    /// The SHA-256 of a guest file; `None` when it does not exist.
    pub fn sha256_of(&self, remote: &str) -> Result<Option<String>> {
        let out = self.exec(&format!("sha256sum {} 2>/dev/null", quote(remote)))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split_whitespace()
            .next()
            .filter(|h| h.len() == 64 && out.exit.success())
            .map(str::to_string))
    }

    /// A guest file's content.
    pub fn read(&self, remote: &str) -> Result<Vec<u8>> {
        let out = self.exec(&format!("cat {}", quote(remote)))?;
        if !out.exit.success() {
            bail!(
                "reading {}:{remote}: {}",
                self.vm(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }
}
