//! Real-VM test helpers: one vmlab home per test run (the image built once),
//! a lab per test that is torn down on drop and prints its guests' consoles
//! when the test fails, libvirt through virsh, polling with deadlines.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

pub const CONNECT: &str = "qemu:///system";

/// One vmlab home for the whole run, the image built once per run. One
/// path per machine (`VMLAB_E2E_HOME` moves it), whatever the checkout: the
/// domains a killed run left behind are then this home's own, and the next
/// run's `down` removes them instead of refusing their names as foreign.
pub fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = std::env::var_os("VMLAB_E2E_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/vmlab-e2e-home"));
        std::fs::create_dir_all(&dir).unwrap();
        let out = raw(
            &dir,
            "e2e",
            &["image", "build", "--rootfs", rootfs().to_str().unwrap()],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "image build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub fn rootfs() -> PathBuf {
    std::env::var_os("VMLAB_ALPINE_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz")
        })
}

pub fn raw(home: &Path, lab: &str, args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("vmlab").unwrap();
    cmd.env("VMLAB_HOME", home)
        .env("VMLAB_LAB", lab)
        .env("VMLAB_CONNECT", CONNECT)
        .env_remove("VMLAB_CONFIG")
        .env_remove("VMLAB_SOURCES_URL")
        .env("VMLAB_SOURCES", benchmarks())
        .current_dir(home)
        .timeout(Duration::from_secs(300))
        .args(args);
    cmd
}

/// A lab of this test; `down` on drop so a failed test leaves nothing behind.
pub struct TestLab {
    pub lab: &'static str,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl TestLab {
    pub fn new(lab: &'static str) -> Self {
        let l = TestLab { lab };
        l.vmlab(&["down"]);
        l
    }

    pub fn vmlab(&self, args: &[&str]) -> Run {
        run(&mut self.cmd(args))
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        raw(home(), self.lab, args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.vmlab(args);
        assert_eq!(
            run.code, 0,
            "vmlab {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// Runs a command that must be refused: exit 125, one line on stderr.
    pub fn refused(&self, args: &[&str], starts_with: &str) {
        let run = self.vmlab(args);
        assert_eq!(run.code, 125, "{args:?}: {}", run.stdout);
        assert!(
            run.stderr.starts_with(starts_with),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }

    pub fn status(&self) -> Vec<Value> {
        let doc: Value = serde_json::from_str(&self.ok(&["status", "--json"])).unwrap();
        assert_eq!(doc["schema"], 1);
        doc["vms"].as_array().unwrap().clone()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.status()
            .iter()
            .map(|v| v["ssh_port"].as_u64().unwrap() as u16)
            .collect()
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Drop for TestLab {
    /// A failed test shows what each of its guests printed on the console.
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_consoles(home(), self.lab);
        }
        self.vmlab(&["down"]);
    }
}

/// The last lines each of `lab`'s guests printed on its console, for a
/// failed test.
pub fn print_consoles(home: &Path, lab: &str) {
    let vms = home.join("labs").join(lab).join("vms");
    for entry in std::fs::read_dir(vms).into_iter().flatten().flatten() {
        let log = std::fs::read_to_string(entry.path().join("console.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "--- console of {} (last {} lines) ---",
            entry.file_name().to_string_lossy(),
            tail.len()
        );
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
    }
}

/// The user QEMU runs as for a running domain.
pub fn qemu_uid(domain: &str) -> u32 {
    let pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{domain}.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    uid.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .arg("-c")
        .arg(CONNECT)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sorted names of all domains (running or not) starting with `prefix`.
pub fn domains_named(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect();
    names.sort();
    names
}

pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `../shared/benchmarks`: the upstream archives, byte-identical.
pub fn benchmarks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks")
}

/// The run directory `vmlab bench` printed (`results in DIR`), under `base`.
pub fn printed_run_dir(base: &Path, stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results in "))
        .unwrap_or_else(|| panic!("no `results in` line in {stdout}"));
    base.join(line.trim())
}

/// The rows of a CSV file, as column → value maps.
pub fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Serves the files of a directory on 127.0.0.1 (any port), like a source
/// mirror; `corrupt` serves different bytes under the same names.
pub struct FileServer {
    pub addr: std::net::SocketAddr,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    server: std::sync::Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start(dir: PathBuf, corrupt: bool) -> Self {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (server, requests) = (server.clone(), requests.clone());
            std::thread::spawn(move || {
                for req in server.incoming_requests() {
                    let name = req.url().trim_start_matches('/').to_string();
                    requests.lock().unwrap().push(name.clone());
                    let path = dir.join(&name);
                    let resp = match std::fs::read(&path) {
                        Ok(mut body) if !name.contains("..") => {
                            if corrupt {
                                body.truncate(body.len() / 2);
                            }
                            tiny_http::Response::from_data(body).boxed()
                        }
                        _ => tiny_http::Response::from_string("not found")
                            .with_status_code(404)
                            .boxed(),
                    };
                    let _ = req.respond(resp);
                }
            })
        };
        FileServer {
            addr,
            requests,
            server,
            thread: Some(thread),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}
