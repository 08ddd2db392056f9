//! SSH to a guest with ssh2: the lab key, the guest's host key pinned on
//! first contact (a later mismatch is refused), and commands with stdin,
//! stdout, stderr and exit status, where every wait has a deadline.
//!
//! A guest can stop answering without its TCP connection failing (QEMU's
//! user-mode network accepts for a frozen guest), so a command that has been
//! silent for a while is probed: the guest must open a channel within
//! [`PROBE_TIMEOUT`], or the command fails as unresponsive.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ssh2::{Channel, Session};

/// How long one blocking SSH step (handshake, open, close) may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which a running command's guest is probed.
const PROBE_AFTER: Duration = Duration::from_secs(15);
/// How long the probed guest has to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

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

/// How a remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by this signal (`KILL`, `TERM`, …).
    Signal(String),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Where a command's streams go.
pub struct Io<'a> {
    /// Sent to the command, then EOF; `None` sends EOF at once.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
    /// When the flag goes up (Ctrl-C), this command line is run in the guest
    /// on a second channel (it stops the first one's process); the first
    /// command's output is then read to its end.
    pub cancel: Option<Cancel<'a>>,
}

/// How to stop a running command from outside.
pub struct Cancel<'a> {
    pub flag: &'a std::sync::atomic::AtomicBool,
    pub stop: String,
}

/// Captured result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// An authenticated session; one per VM and thread (a session is one mutex).
pub struct Guest {
    session: Session,
    vm: String,
}

/// The guest's host key differs from the pinned one.
#[derive(Debug)]
pub struct HostKeyChanged(pub String);

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

fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
}

impl Guest {
    /// The VM's name, for messages.
    pub fn vm(&self) -> &str {
        &self.vm
    }

    /// One attempt: TCP, handshake, host key check, public key auth, all
    /// within `timeout`.
    pub fn connect(target: &SshTarget, timeout: Duration) -> Result<Guest> {
        let started = Instant::now();
        let tcp = TcpStream::connect_timeout(&target.addr, timeout)
            .with_context(|| format!("cannot reach {} at {}", target.vm, target.addr))?;
        let mut session = Session::new().context("creating an SSH session")?;
        let left = timeout.saturating_sub(started.elapsed());
        session.set_timeout(millis(left));
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
        session.set_timeout(millis(IO_TIMEOUT));
        Ok(Guest {
            session,
            vm: target.vm.clone(),
        })
    }

    /// Retries [`Guest::connect`] until the guest runs a command or
    /// `deadline` passes; a changed host key fails at once.
    pub fn wait_ready(target: &SshTarget, deadline: Instant) -> Result<Guest> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = Duration::from_secs(2).min(left.max(Duration::from_millis(100)));
            let ready = Guest::connect(target, attempt).and_then(|guest| {
                let out = guest.exec_until("true", Some(deadline))?;
                if !out.exit.success() {
                    bail!(
                        "{} answers SSH but cannot run commands ({})",
                        target.vm,
                        out.exit
                    );
                }
                Ok(guest)
            });
            match ready {
                Ok(guest) => return Ok(guest),
                Err(e) if e.downcast_ref::<HostKeyChanged>().is_some() => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!("{}: not ready yet: {e:#}", target.vm);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Runs `command` (a shell command line, as with `ssh host command`),
    /// streaming its output; fails if the guest stops answering, or when
    /// `deadline` passes.
    pub fn exec_io(&self, command: &str, io: Io, deadline: Option<Instant>) -> Result<Exit> {
        // A command that failed left the session non-blocking (below); the
        // next one opens its channel blocking again, within IO_TIMEOUT, or
        // fails at once with "would block" on a guest that is merely slow.
        self.session.set_blocking(true);
        let mut channel = self
            .session
            .channel_session()
            .with_context(|| format!("opening an SSH channel to {}", self.vm))?;
        channel
            .exec(command)
            .with_context(|| format!("running `{command}` in {}", self.vm))?;
        self.session.set_blocking(false);
        // On failure the session stays non-blocking: closing the channel and
        // the session politely would wait on a guest that no longer answers.
        self.pump(&mut channel, io, deadline)?;
        self.session.set_blocking(true);
        channel
            .wait_close()
            .with_context(|| format!("closing the SSH channel to {}", self.vm))?;
        if let Some(signal) = channel.exit_signal()?.exit_signal {
            return Ok(Exit::Signal(signal));
        }
        Ok(Exit::Code(channel.exit_status()?))
    }

    /// Moves data both ways until the command's output ends.
    fn pump(&self, channel: &mut Channel, io: Io, deadline: Option<Instant>) -> Result<()> {
        let Io {
            stdin,
            stdout,
            stderr,
            mut cancel,
        } = io;
        let stdin = stdin.map(spawn_reader);
        let mut pending: Vec<u8> = Vec::new();
        let mut stdin_open = stdin.is_some();
        let mut eof_sent = false;
        let mut buf = vec![0u8; 32 * 1024];
        let mut last_heard = Instant::now();
        loop {
            let mut progressed = false;
            if let Some(rx) = &stdin
                && pending.is_empty()
                && stdin_open
            {
                match rx.try_recv() {
                    Ok(Ok(chunk)) => pending = chunk,
                    Ok(Err(e)) => return Err(e).context("reading stdin"),
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => stdin_open = false,
                }
            }
            if !pending.is_empty() {
                match channel.write(&pending) {
                    Ok(n) => {
                        pending.drain(..n);
                        progressed = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // The command stopped reading (it exited): drop the rest, as ssh does.
                    Err(_) => {
                        pending.clear();
                        stdin_open = false;
                    }
                }
            }
            if !stdin_open && pending.is_empty() && !eof_sent {
                match channel.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {} // EAGAIN
                    Err(_) => eof_sent = true,
                }
            }
            let heard = copy_available(&mut channel.stream(0), stdout, &mut buf)?
                | copy_available(&mut channel.stream(1), stderr, &mut buf)?;
            if heard {
                last_heard = Instant::now();
            } else if channel.eof() {
                return Ok(());
            }
            if let Some(deadline) = deadline
                && Instant::now() >= deadline
            {
                bail!("`{}` did not finish in time", self.vm);
            }
            if let Some(c) = cancel.take_if(|c| c.flag.load(std::sync::atomic::Ordering::SeqCst)) {
                self.run_aside(&c.stop)?;
                last_heard = Instant::now();
            }
            if last_heard.elapsed() >= PROBE_AFTER {
                self.probe()?;
                last_heard = Instant::now();
            }
            if !(heard || progressed) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    /// Runs `command` on a second channel while the session is pumping another.
    fn run_aside(&self, command: &str) -> Result<()> {
        self.session.set_blocking(true);
        let ran = (|| -> Result<()> {
            let mut channel = self.session.channel_session()?;
            channel.exec(command)?;
            channel.send_eof()?;
            std::io::copy(&mut channel, &mut std::io::sink())?;
            channel.wait_close()?;
            Ok(())
        })();
        self.session.set_blocking(false);
        ran.with_context(|| format!("stopping the command in {}", self.vm))
    }

    /// The guest must open (and close) a channel within [`PROBE_TIMEOUT`].
    fn probe(&self) -> Result<()> {
        self.session.set_blocking(true);
        self.session.set_timeout(millis(PROBE_TIMEOUT));
        let answered = self.session.channel_session().map(|mut c| c.close());
        self.session.set_timeout(millis(IO_TIMEOUT));
        self.session.set_blocking(false);
        answered.map(|_| ()).map_err(|_| {
            anyhow!(
                "{} stopped answering SSH (silent for {} s, then no answer within {} s); see `vmlab status` and `vmlab console {}`",
                self.vm,
                PROBE_AFTER.as_secs(),
                PROBE_TIMEOUT.as_secs(),
                self.vm
            )
        })
    }

    /// Runs `command` with no input and captures its output.
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        self.exec_until(command, None)
    }

    /// [`Guest::exec`] with a deadline.
    pub fn exec_until(&self, command: &str, deadline: Option<Instant>) -> Result<ExecOutput> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let io = Io {
            stdin: None,
            stdout: &mut stdout,
            stderr: &mut stderr,
            cancel: None,
        };
        let exit = self.exec_io(command, io, deadline)?;
        Ok(ExecOutput {
            exit,
            stdout,
            stderr,
        })
    }
}

/// Reads `input` on its own thread (a blocking read must not stall the
/// session), handing chunks over until EOF (the sender is dropped).
fn spawn_reader(mut input: Box<dyn Read + Send>) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::sync_channel(4);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match input.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send(Ok(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// Copies what is available now; `true` when something was copied.
fn copy_available(from: &mut impl Read, to: &mut dyn Write, buf: &mut [u8]) -> Result<bool> {
    match from.read(buf) {
        Ok(0) => Ok(false),
        Ok(n) => {
            to.write_all(&buf[..n])?;
            to.flush()?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e).context("reading command output"),
    }
}

/// Pins on first contact, compares the key afterwards. The line also names
/// the address, which follows the VM when its port moves.
fn check_host_key(target: &SshTarget, blob: &[u8]) -> Result<()> {
    let line = known_hosts_line(target.addr, blob)?;
    let key = |l: &str| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    let pin = || {
        std::fs::write(&target.known_hosts, &line)
            .with_context(|| format!("pinning the host key in {}", target.known_hosts.display()))
    };
    match std::fs::read_to_string(&target.known_hosts) {
        Ok(pinned) if pinned.trim() == line.trim() => Ok(()),
        Ok(pinned) if key(&pinned) == key(&line) => pin(),
        Ok(_) => Err(HostKeyChanged(target.vm.clone()).into()),
        Err(e) if e.kind() == ErrorKind::NotFound => pin(),
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
        // The same key on a new port (the VM's port moved) is still the VM.
        let moved = SshTarget {
            addr: "127.0.0.1:40023".parse().unwrap(),
            ..target.clone()
        };
        check_host_key(&moved, &first).unwrap();
        let pinned = std::fs::read_to_string(&target.known_hosts).unwrap();
        assert!(pinned.starts_with("[127.0.0.1]:40023 "), "{pinned}");
        let err = check_host_key(&target, &blob("ssh-ed25519", b"two")).unwrap_err();
        assert!(
            err.to_string().starts_with("host key of vm-1 changed"),
            "{err}"
        );
        assert!(err.downcast_ref::<HostKeyChanged>().is_some());
    }

    #[test]
    fn a_silent_listener_is_not_a_guest() {
        // Accepts TCP but never speaks SSH, like a frozen guest behind QEMU's forward.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = SshTarget {
            vm: "vm-1".into(),
            addr: listener.local_addr().unwrap(),
            user: "root".into(),
            key: dir.path().join("key"),
            known_hosts: dir.path().join("host_key"),
        };
        let started = Instant::now();
        let err = Guest::wait_ready(&target, Instant::now() + Duration::from_millis(1500))
            .err()
            .expect("no SSH server there");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "readiness ignored its deadline: {took:?}"
        );
        assert!(format!("{err:#}").contains("handshake"), "{err:#}");
    }
}
