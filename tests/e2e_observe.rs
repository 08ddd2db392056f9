//! Observation on real guests: the reporter over SSH, libvirt's figures,
//! metrics.csv, plots and the dashboard's /metrics. Run with
//! `cargo test --test e2e_observe -- --ignored --test-threads=1` (`just test`
//! does): they need libvirtd and root, and they load the host.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::*;

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn number(row: &std::collections::HashMap<String, String>, key: &str) -> Option<f64> {
    row.get(key).and_then(|v| v.parse().ok())
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn monitor_rows_are_plausible_plots_are_drawn_and_the_dashboard_serves_them() {
    let lab = TestLab::new("e2e-obs");
    let _ = std::fs::remove_dir_all(home().join("results/e2e-observe"));
    lab.ok(&["up", "2", "--prefix", "e2v"]);
    // The guests load their balloon driver after sshd: until then they see
    // their maximum (1 GiB) while libvirt already says 512 MiB.
    for vm in ["e2v-1", "e2v-2"] {
        wait_until("the balloon to settle", Duration::from_secs(60), || {
            let meminfo = lab.ok(&["ssh", vm, "--", "cat /proc/meminfo"]);
            let total_kib: u64 = meminfo
                .lines()
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (total_kib < 600 * 1024).then_some(())
        });
    }
    // A monitor for 14 s; cpu_hog runs on e2v-1 in the middle of it.
    let monitor = std::thread::spawn(|| {
        run(raw(
            home(),
            "e2e-obs",
            &["monitor", "--duration", "14s", "--run", "e2e-observe"],
        )
        .timeout(Duration::from_secs(120)))
    });
    std::thread::sleep(Duration::from_secs(5));
    lab.ok(&["run", "cpu_hog", "--on", "e2v-1", "--param", "duration_s=5"]);
    let out = monitor.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("e2v-1: reporter lines"),
        "{}",
        out.stderr
    );

    let dir = home().join("results/e2e-observe");
    let rows = csv_rows(&dir.join("metrics.csv"));
    for vm in ["e2v-1", "e2v-2"] {
        let mine: Vec<_> = rows.iter().filter(|r| r["vm"] == vm).collect();
        // A busy host may skip a second or two (a gap, never a stale
        // repeat): what matters is that both sources fill the rows.
        assert!(mine.len() >= 5, "{vm}: {} rows in 14 s", mine.len());
        let sampled: Vec<_> = mine
            .iter()
            .filter(|r| number(r, "mem_total_mib").is_some())
            .collect();
        assert!(
            sampled.len() >= 3,
            "{vm}: the guest reported {} times",
            sampled.len()
        );
        for r in &sampled {
            let (total, balloon) = (
                number(r, "mem_total_mib").unwrap(),
                number(r, "balloon_actual_mib").unwrap(),
            );
            // MemTotal is the balloon's size less what the kernel keeps for itself.
            assert!(
                total <= balloon && total + 150.0 >= balloon,
                "{vm}: MemTotal {total} vs balloon {balloon}"
            );
            assert_eq!(number(r, "vcpus"), Some(1.0));
        }
        // Per-pCPU use needs two libvirt samples: every row has it but the first.
        let with_pcpus = mine
            .iter()
            .filter(|r| number(r, "pcpu0_pct").is_some() && number(r, "pcpu1_pct").is_some());
        assert!(
            with_pcpus.count() + 1 >= mine.len(),
            "{vm}: pCPU columns missing"
        );
    }
    let cpu = |vm: &str| -> Vec<f64> {
        rows.iter()
            .filter(|r| r["vm"] == vm)
            .filter_map(|r| number(r, "cpu_pct"))
            .collect()
    };
    let (busy, quiet) = (cpu("e2v-1"), cpu("e2v-2"));
    let peak = busy.iter().cloned().fold(0.0, f64::max);
    let quiet_peak = quiet.iter().cloned().fold(0.0, f64::max);
    eprintln!("e2v-1 CPU % {busy:?}\ne2v-2 CPU % {quiet:?}");
    assert!(peak >= 80.0, "cpu_hog never showed: {busy:?}");
    assert!(quiet_peak < 50.0, "the idle VM looked busy: {quiet:?}");

    // Figures of the run, both formats.
    let plotted = lab.ok(&["plot", dir.to_str().unwrap()]);
    for name in [
        "memory.png",
        "memory.svg",
        "cpu.png",
        "cpu.svg",
        "pcpu.png",
        "pcpu.svg",
    ] {
        let path = dir.join("plots").join(name);
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{name}: {plotted}"
        );
    }

    // The dashboard serves the run on loopback, /metrics included.
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", home())
        .env("VMLAB_LAB", "e2e-obs")
        .env("VMLAB_CONNECT", CONNECT)
        .current_dir(home())
        .args(["dashboard", "--run", "e2e-observe", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{line}");
    let page = get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // libvirt's figures are in every row; the guest's may be a gap in the
    // last one (a busy host can stall the reporter for a second).
    let metrics = wait_until("e2v-1 in /metrics", Duration::from_secs(20), || {
        let m = get(&addr, "/metrics");
        m.contains("vmlab_vm_vcpus{lab=\"e2e-obs\",vm=\"e2v-1\"}")
            .then_some(m)
    });
    assert!(
        metrics.contains("vmlab_pcpu_utilisation_percent"),
        "{metrics}"
    );

    // The same address again: refused, one line.
    let busy = run(&mut raw(
        home(),
        "e2e-obs",
        &["dashboard", "--run", "e2e-observe", "--bind", &addr],
    ));
    assert_eq!(busy.code, 125);
    assert!(busy.stderr.contains(&addr), "{}", busy.stderr);
    child.kill().unwrap();
    child.wait().unwrap();

    // A run that does not exist.
    lab.refused(
        &["plot", "results/no-such-run"],
        "error: run directory `results/no-such-run` does not exist",
    );
}

/// A child process killed on drop, so a failed test leaves no monitor behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn monitor_goes_on_when_a_vm_is_destroyed_and_picks_it_up_when_it_is_back() {
    use vmlab::metrics::row::MetricsRow;
    use vmlab::metrics::run::CsvTail;

    let lab = TestLab::new("e2e-gone");
    let dir = home().join("results/e2e-observe-gone");
    let _ = std::fs::remove_dir_all(&dir);
    lab.ok(&["up", "2", "--prefix", "e2g"]);
    let stderr_path = home().join("e2e-observe-gone.stderr");
    // Until Ctrl-C: the test says when it has seen enough.
    let mut monitor = KillOnDrop(
        Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
            .env("VMLAB_HOME", home())
            .env("VMLAB_LAB", "e2e-gone")
            .env("VMLAB_CONNECT", CONNECT)
            .current_dir(home())
            .args(["monitor", "--run", "e2e-observe-gone"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The whole lines written so far (the monitor may be in the middle of one).
    let rows = || -> Vec<MetricsRow> {
        CsvTail::new(dir.join("metrics.csv"))
            .read_new()
            .unwrap_or_default()
    };
    let reported = |r: &MetricsRow, vm: &str| r.vm == vm && r.mem_total_mib.is_some();
    let stopped = |r: &MetricsRow| r.vm == "e2g-2" && r.vcpus.is_none();
    wait_until("both guests report", Duration::from_secs(120), || {
        let rows = rows();
        ["e2g-1", "e2g-2"]
            .iter()
            .all(|vm| rows.iter().filter(|r| reported(r, vm)).count() >= 2)
            .then_some(())
    });

    virsh(&["destroy", "e2g-2"]);
    wait_until(
        "e2g-2's rows go empty while e2g-1 keeps reporting",
        Duration::from_secs(120),
        || {
            let rows = rows();
            let gone = rows.iter().position(stopped)?;
            let after = &rows[gone..];
            let empty = after.iter().filter(|r| stopped(r)).count();
            let others = after.iter().filter(|r| reported(r, "e2g-1")).count();
            (empty >= 3 && others >= 3).then_some(())
        },
    );

    lab.ok(&["up", "2"]);
    wait_until("e2g-2 reports again", Duration::from_secs(180), || {
        let rows = rows();
        let back = rows.iter().rposition(stopped)?;
        let again = rows[back..].iter().filter(|r| reported(r, "e2g-2")).count();
        (again >= 2).then_some(())
    });

    // Ctrl-C: the monitor ends as it would for a user.
    // SAFETY: kill(2) on the pid of our own child process.
    assert_eq!(
        unsafe { libc::kill(monitor.0.id() as i32, libc::SIGINT) },
        0
    );
    let status = wait_until("the monitor ends", Duration::from_secs(60), || {
        monitor.0.try_wait().unwrap()
    });
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        stderr.matches("warning: e2g-2 is not running").count(),
        1,
        "warned once, not every second: {stderr}"
    );
    assert!(!stderr.contains("e2g-1 is not running"), "{stderr}");
}
