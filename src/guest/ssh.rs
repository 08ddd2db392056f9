//! SSH to a guest with ssh2: the lab key, and the guest's host key pinned on
//! first contact (a later mismatch is refused).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ssh2::Session;

/// Where and how to reach one guest.
#[derive(Debug, Clone)]
pub struct SshTarget {
    pub vm: String,
    pub addr: SocketAddr,
    pub user: String,
    pub key: PathBuf,
    /// The pinned host key, as one OpenSSH known_hosts line (usable with `ssh -o UserKnownHostsFile=`).
    pub known_hosts: PathBuf,
}

/// An authenticated session; one per VM and thread (a session is one mutex).
pub struct Guest {
    session: Session,
}

/// Captured result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Guest {
    /// One attempt: TCP, handshake, host key check, public key auth.
    pub fn connect(target: &SshTarget, timeout: Duration) -> Result<Guest> {
        let tcp = TcpStream::connect_timeout(&target.addr, timeout)
            .with_context(|| format!("cannot reach {} at {}", target.vm, target.addr))?;
        let mut session = Session::new().context("creating an SSH session")?;
        session.set_timeout(timeout.as_millis().try_into().unwrap_or(u32::MAX));
        session.set_tcp_stream(tcp);
        session
            .handshake()
            .with_context(|| format!("SSH handshake with {} failed", target.vm))?;
        let (blob, _) = session
            .host_key()
            .ok_or_else(|| anyhow!("{} sent no host key", target.vm))?;
        check_host_key(target, blob)?;
        session
            .userauth_pubkey_file(&target.user, None, &target.key, None)
            .with_context(|| {
                format!("{} refused the lab key {}", target.vm, target.key.display())
            })?;
        session.set_timeout(0);
        Ok(Guest { session })
    }

    /// Retries [`Guest::connect`] until it works or `deadline` passes; a
    /// changed host key fails at once.
    pub fn wait_ready(target: &SshTarget, deadline: Instant) -> Result<Guest> {
        loop {
            let attempt = Duration::from_secs(2).min(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100)),
            );
            match Guest::connect(target, attempt) {
                Ok(guest) => return Ok(guest),
                Err(e) if e.downcast_ref::<HostKeyChanged>().is_some() => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Runs `command` (a shell command line, as with `ssh host command`),
    /// streaming its stdout and stderr; returns its exit status.
    pub fn exec_to(
        &self,
        command: &str,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32> {
        let mut channel = self
            .session
            .channel_session()
            .context("opening an SSH channel")?;
        channel
            .exec(command)
            .with_context(|| format!("running `{command}`"))?;
        // Non-blocking reads of both streams, so a full stderr never stalls stdout.
        self.session.set_blocking(false);
        let mut buf = vec![0u8; 32 * 1024];
        let result = (|| -> Result<()> {
            loop {
                let progressed = pump(&mut channel.stream(0), stdout, &mut buf)?
                    | pump(&mut channel.stream(1), stderr, &mut buf)?;
                if !progressed {
                    if channel.eof() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })();
        self.session.set_blocking(true);
        result?;
        channel.wait_close().context("closing the SSH channel")?;
        Ok(channel.exit_status()?)
    }

    /// Runs `command` and captures its output.
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.exec_to(command, &mut stdout, &mut stderr)?;
        Ok(ExecOutput {
            status,
            stdout,
            stderr,
        })
    }
}

/// Copies what is available now; `true` when something was copied.
fn pump(from: &mut impl Read, to: &mut dyn Write, buf: &mut [u8]) -> Result<bool> {
    match from.read(buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            to.write_all(&buf[..n])?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e).context("reading command output"),
    }
}

/// Marker error: the guest's host key differs from the pinned one.
#[derive(Debug)]
struct HostKeyChanged(String);

impl std::fmt::Display for HostKeyChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host key of {} changed since first contact (possible impersonation); if you recreated it, run `vmlab down {}` and `vmlab up` again",
            self.0, self.0
        )
    }
}

impl std::error::Error for HostKeyChanged {}

/// Pins on first contact, compares afterwards.
fn check_host_key(target: &SshTarget, blob: &[u8]) -> Result<()> {
    let line = known_hosts_line(target.addr, blob)?;
    match std::fs::read_to_string(&target.known_hosts) {
        Ok(pinned) if pinned.trim() == line.trim() => Ok(()),
        Ok(_) => Err(HostKeyChanged(target.vm.clone()).into()),
        Err(e) if e.kind() == ErrorKind::NotFound => std::fs::write(&target.known_hosts, line)
            .with_context(|| format!("pinning the host key in {}", target.known_hosts.display())),
        Err(e) => Err(e).with_context(|| format!("reading {}", target.known_hosts.display())),
    }
}

/// `[127.0.0.1]:40022 ssh-ed25519 AAAA…`: the key type is the blob's first SSH string.
fn known_hosts_line(addr: SocketAddr, blob: &[u8]) -> Result<String> {
    let len = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let kind = len
        .and_then(|n| blob.get(4..4 + n))
        .and_then(|t| std::str::from_utf8(t).ok());
    let Some(kind) = kind else {
        bail!("the guest sent a malformed host key")
    };
    Ok(format!(
        "[{}]:{} {kind} {}\n",
        addr.ip(),
        addr.port(),
        BASE64.encode(blob)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(kind: &str, key: &[u8]) -> Vec<u8> {
        let mut b = (kind.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind.as_bytes());
        b.extend_from_slice(key);
        b
    }

    #[test]
    fn known_hosts_line_names_type_and_port() {
        let addr: SocketAddr = "127.0.0.1:40022".parse().unwrap();
        let b = blob("ssh-ed25519", &[0, 0, 0, 1, 7]);
        assert_eq!(
            known_hosts_line(addr, &b).unwrap(),
            format!("[127.0.0.1]:40022 ssh-ed25519 {}\n", BASE64.encode(&b))
        );
        assert!(known_hosts_line(addr, &[0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn host_key_is_pinned_then_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let target = SshTarget {
            vm: "vm-1".into(),
            addr: "127.0.0.1:40022".parse().unwrap(),
            user: "root".into(),
            key: dir.path().join("key"),
            known_hosts: dir.path().join("host_key"),
        };
        let first = blob("ssh-ed25519", b"one");
        check_host_key(&target, &first).unwrap();
        check_host_key(&target, &first).unwrap();
        let err = check_host_key(&target, &blob("ssh-ed25519", b"two")).unwrap_err();
        assert!(
            err.to_string().starts_with("host key of vm-1 changed"),
            "{err}"
        );
        assert!(err.downcast_ref::<HostKeyChanged>().is_some());
    }
}
