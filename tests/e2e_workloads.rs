//! Workloads and benchmarks in real guests: the offline Alpine image under
//! libvirt + QEMU (TCG), sources from `../shared/benchmarks` (as a mirror
//! directory, or served over HTTP on 127.0.0.1). Run with
//! `cargo test --test e2e_workloads -- --ignored --test-threads=1` (`just test`
//! does): they need libvirtd and root, and they load the host.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::lab::*;

/// A number from `/proc/meminfo` in the guest, in MiB.
fn meminfo_mib(lab: &TestLab, vm: &str, field: &str) -> u64 {
    let text = lab.ok(&["ssh", vm, "--", "cat /proc/meminfo"]);
    let line = text.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// The domain's CPU time so far, in seconds, from libvirt.
fn cpu_time_s(domain: &str) -> f64 {
    let stats = virsh(&["domstats", "--cpu-total", domain]);
    let ns: f64 = stats
        .lines()
        .find_map(|l| l.trim().strip_prefix("cpu.time="))
        .unwrap()
        .parse()
        .unwrap();
    ns / 1e9
}

fn programs_running(lab: &TestLab, vm: &str) -> String {
    lab.ok(&[
        "ssh",
        vm,
        "--",
        "ps -o args | grep -c '^/var/lib/vmlab/bin' || true",
    ])
    .trim()
    .to_string()
}

fn run_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn memory_hog_takes_and_gives_back_guest_memory_and_stop_leaves_nothing() {
    let lab = TestLab::new("e2w-mem");
    lab.ok(&[
        "up",
        "1",
        "--prefix",
        "e2m",
        "--memory",
        "512M",
        "--max-memory",
        "1G",
    ]);
    // The balloon settles at 512 MiB once the guest loads its driver.
    let unused = || lab.status()[0]["memory_unused_mib"].as_u64();
    let base_unused = wait_until("balloon stats", Duration::from_secs(60), || {
        let s = lab.status().remove(0);
        (s["memory_actual_mib"] == 512).then_some(())?;
        unused()
    });
    let base_avail = meminfo_mib(&lab, "e2m-1", "MemAvailable:");

    let started = lab.ok(&[
        "run",
        "memory_hog",
        "--detach",
        "--ci",
        "--param",
        "size_mib=200",
        "--param",
        "hold_s=300",
    ]);
    assert!(started.contains("runs in the background"), "{started}");
    wait_until(
        "the guest to hold 200 MiB more",
        Duration::from_secs(60),
        || (meminfo_mib(&lab, "e2m-1", "MemAvailable:") + 150 <= base_avail).then_some(()),
    );
    wait_until(
        "libvirt's balloon stats to see it",
        Duration::from_secs(60),
        || (unused()? + 150 <= base_unused).then_some(()),
    );
    assert_eq!(programs_running(&lab, "e2m-1"), "1");

    let stopped = lab.ok(&["stop", "memory_hog"]);
    assert_eq!(stopped, "e2m-1: stopped 1 run(s) of `memory_hog`\n");
    assert_eq!(programs_running(&lab, "e2m-1"), "0", "stop left a process");
    wait_until(
        "the memory back in the guest",
        Duration::from_secs(60),
        || (meminfo_mib(&lab, "e2m-1", "MemAvailable:") + 40 >= base_avail).then_some(()),
    );

    // In the foreground, with its report: holds, then releases in steps.
    let out = lab.ok(&["run", "memory_hog", "--ci", "--param", "size_mib=120"]);
    // A slow guest may still be growing at its first report.
    assert!(
        out.lines()
            .any(|l| l.starts_with("e2m-1 | ") && l.contains("phase=hold held_mib=120")),
        "{out}"
    );
    assert!(out.contains("phase=release"), "{out}");
    assert!(out.contains("peak_held_mib=120"), "{out}");
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn cpu_hog_raises_the_vms_cpu_time_and_ctrl_c_stops_it() {
    let lab = TestLab::new("e2w-cpu");
    lab.ok(&["up", "1", "--prefix", "e2c"]);
    let busy_start = cpu_time_s("e2c-1");
    let out = lab.ok(&["run", "cpu_hog", "--ci", "--param", "duration_s=3"]);
    let busy = cpu_time_s("e2c-1") - busy_start;
    // Idle measured after it: right after `up` the balloon is still inflating.
    let idle_start = cpu_time_s("e2c-1");
    std::thread::sleep(Duration::from_secs(3));
    let idle = cpu_time_s("e2c-1") - idle_start;
    assert!(
        out.contains("e2c-1 | total threads=1 duty_pct=100"),
        "{out}"
    );
    eprintln!("3 s idle: {idle:.2} s of CPU; cpu_hog 3 s: {busy:.2} s of CPU");
    assert!(
        busy >= idle + 1.5,
        "cpu_hog used {busy:.2} s of CPU, idle {idle:.2} s"
    );

    // Ctrl-C: the guest's program is stopped, vmlab exits 130.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
        .env("VMLAB_HOME", home())
        .env("VMLAB_LAB", "e2w-cpu")
        .env("VMLAB_CONNECT", CONNECT)
        .args(["run", "cpu_hog", "--param", "duration_s=300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("cpu_hog to start", Duration::from_secs(60), || {
        (programs_running(&lab, "e2c-1") == "1").then_some(())
    });
    // SAFETY: a signal to our own child, which is still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_until("vmlab to stop", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        programs_running(&lab, "e2c-1"),
        "0",
        "Ctrl-C left the program running"
    );

    // SIGTERM (timeout, systemd, CI runners) is Ctrl-C too: the program is
    // stopped, the run's files are finished, vmlab exits 143.
    let bench_in_background = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("vmlab"))
            .env("VMLAB_HOME", home())
            .env("VMLAB_LAB", "e2w-cpu")
            .env("VMLAB_CONNECT", CONNECT)
            .env("VMLAB_SOURCES", benchmarks())
            .current_dir(home())
            .args(["bench", "cpu_hog", "--param", "duration_s=300"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = bench_in_background();
    wait_until("cpu_hog to start", Duration::from_secs(60), || {
        (programs_running(&lab, "e2c-1") == "1").then_some(())
    });
    // SAFETY: a signal to our own child, which is still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(143),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        programs_running(&lab, "e2c-1"),
        "0",
        "SIGTERM left it running"
    );
    let dir = printed_run_dir(home(), &stdout);
    let record = run_json(&dir);
    assert_eq!(record["interrupted"], true, "{record}");
    assert!(record["finished"].is_string(), "{record}");
    let rows = csv_rows(&dir.join("bench.csv"));
    assert!(
        rows.iter()
            .any(|r| r["vm"] == "e2c-1" && r["metric"] == "error"),
        "the stopped run has no row: {rows:?}"
    );

    // `down` while a bench runs: the VM goes, the lab's key stays until the
    // bench has let go of the lab.
    let child = bench_in_background();
    wait_until("cpu_hog to start", Duration::from_secs(60), || {
        (programs_running(&lab, "e2c-1") == "1").then_some(())
    });
    let down = lab.ok(&["down"]);
    assert!(down.contains("removed e2c-1"), "{down}");
    assert!(
        home().join("labs/e2w-cpu/id_ed25519").is_file(),
        "down deleted the SSH key of a lab in use"
    );
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "the bench lost its VM");
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn benchmarks_write_rows_for_every_vm_repeat_and_cell() {
    let lab = TestLab::new("e2w-bench");
    lab.ok(&["up", "2", "--prefix", "e2b"]);

    // STREAM twice on both VMs.
    let out = lab.ok(&["bench", "stream", "--ci", "--repeat", "2"]);
    let dir = printed_run_dir(home(), &out);
    let rows = csv_rows(&dir.join("bench.csv"));
    for vm in ["e2b-1", "e2b-2"] {
        for repeat in ["1", "2"] {
            let row = rows
                .iter()
                .find(|r| r["vm"] == vm && r["repeat"] == repeat && r["metric"] == "copy_mb_per_s")
                .unwrap_or_else(|| panic!("no Copy row for {vm} repeat {repeat}"));
            assert!(row["value"].parse::<f64>().unwrap() > 0.0, "{row:?}");
            assert_eq!(row["unit"], "MB/s");
        }
    }
    let record = run_json(&dir);
    assert_eq!(record["benchmark"], "stream");
    assert_eq!(record["host"]["cores"].as_u64(), Some(num_cpus()));
    assert_eq!(record["accel"][0][1], "qemu");
    assert!(dir.join("raw/c1/e2b-2/r2/stdout.txt").is_file());

    // HPCG with a small grid: a valid GFLOP/s rating and its official file.
    let out = lab.ok(&["bench", "hpcg", "--ci", "--on", "e2b-1"]);
    let dir = printed_run_dir(home(), &out);
    let rows = csv_rows(&dir.join("bench.csv"));
    let rating = rows
        .iter()
        .find(|r| r["metric"] == "rating_gflop_per_s")
        .unwrap();
    assert!(rating["value"].parse::<f64>().unwrap() > 0.0, "{rating:?}");
    assert_eq!(
        (rating["valid"].as_str(), rating["unit"].as_str()),
        ("true", "GFLOP/s")
    );
    let raw: Vec<String> = std::fs::read_dir(dir.join("raw/c1/e2b-1/r1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        raw.iter().any(|f| f.starts_with("HPCG-Benchmark_3.1_")),
        "{raw:?}"
    );

    // A matrix of vCPUs, applied live and read back from the guest.
    let out = lab.ok(&[
        "bench",
        "cpu_hog",
        "--ci",
        "--on",
        "e2b-2",
        "--matrix",
        "vcpus=1,2",
        "--param",
        "threads=2",
        "--param",
        "duration_s=1",
    ]);
    let dir = printed_run_dir(home(), &out);
    let cells = run_json(&dir)["cells"].clone();
    let applied: Vec<(u64, u64)> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cell"]["vcpus"].as_u64().unwrap(),
                c["applied"][0][1]["guest_cpus"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(applied, [(1, 1), (2, 2)]);
    let rows = csv_rows(&dir.join("bench.csv"));
    for (cell, cpus) in [("1", "1"), ("2", "2")] {
        assert!(
            rows.iter().any(|r| r["cell"] == cell
                && r["guest_cpus"] == cpus
                && r["metric"] == "ops_per_s"),
            "cell {cell}: {rows:?}"
        );
    }
    // Put back as created: one CPU online, 512 MiB.
    let cpus = lab.ok(&["ssh", "e2b-2", "--", "grep -c ^processor /proc/cpuinfo"]);
    assert_eq!(cpus.trim(), "1");

    // Beyond the VM's maximum: refused before anything runs or is written.
    let before = std::fs::read_dir(home().join("results")).unwrap().count();
    lab.refused(
        &["bench", "stream", "--ci", "--matrix", "vcpus=1,8"],
        "error: matrix cell vcpus=8 is beyond e2b-1's maximum of 2 vCPUs",
    );
    assert_eq!(
        std::fs::read_dir(home().join("results")).unwrap().count(),
        before
    );
}

fn num_cpus() -> u64 {
    std::thread::available_parallelism().unwrap().get() as u64
}

/// Each proxy app at its CI size on one VM, its figure of merit read back
/// from bench.csv. SimpleMOC and CoHMM also prove their input decks reached
/// the guest: without them SimpleMOC crashes and CoHMM prints no counts.
#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn the_ecp_proxy_apps_run_once_each() {
    let lab = TestLab::new("e2w-proxy");
    lab.ok(&["up", "1", "--prefix", "e2x"]);
    for (bench, metric, unit) in [
        ("hpccg", "total_mflop_per_s", "MFLOP/s"),
        ("minife", "total_cg_mflop_per_s", "MFLOP/s"),
        ("xsbench", "lookups_per_s", "lookups/s"),
        ("rsbench", "lookups_per_s", "lookups/s"),
        ("simplemoc", "time_per_intersection_ns", "ns"),
        ("cohmm", "comd_calls", "calls"),
        ("miniqmc", "total_s", "s"),
    ] {
        let out = lab.ok(&["bench", bench, "--ci"]);
        let dir = printed_run_dir(home(), &out);
        let rows = csv_rows(&dir.join("bench.csv"));
        let row = rows
            .iter()
            .find(|r| r["metric"] == metric)
            .unwrap_or_else(|| panic!("{bench}: no {metric} in {rows:?}"));
        assert!(row["value"].parse::<f64>().unwrap() > 0.0, "{row:?}");
        assert_eq!(row["unit"], unit);
        // run.json names every input deck of the manifest.
        let workloads = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let manifest = vmlab::workload::load(&workloads, bench).unwrap();
        let recorded: Vec<String> = run_json(&dir)["run_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f[0].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recorded, manifest.run.files, "{bench}");
    }
}

#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn sources_are_downloaded_verified_cached_and_a_wrong_one_refused() {
    // A home of its own, so the source cache starts empty.
    let fresh = home().join("fresh-sources");
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh).unwrap();
    let vmlab = |server: &FileServer, args: &[&str]| {
        let mut cmd = raw(&fresh, "e2w-src", args);
        cmd.env_remove("VMLAB_SOURCES")
            .env("VMLAB_SOURCES_URL", server.base());
        run(&mut cmd)
    };
    let mirror = FileServer::start(benchmarks(), false);
    let built = vmlab(
        &mirror,
        &["image", "build", "--rootfs", rootfs().to_str().unwrap()],
    );
    assert_eq!(built.code, 0, "{}", built.stderr);
    let up = vmlab(&mirror, &["up", "1", "--prefix", "e2d"]);
    assert_eq!(up.code, 0, "{}", up.stderr);

    let first = vmlab(&mirror, &["bench", "stream", "--ci"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let record = run_json(&printed_run_dir(&fresh, &first.stdout));
    assert_eq!(record["source"]["origin"], "downloaded");
    let archive = "STREAM-6703f7504a38a8da96b353cadafa64d3c2d7a2d3.tar.gz";
    assert!(mirror.requests.lock().unwrap().iter().any(|r| r == archive));
    let second = vmlab(&mirror, &["bench", "stream", "--ci"]);
    assert_eq!(
        run_json(&printed_run_dir(&fresh, &second.stdout))["source"]["origin"],
        "cache"
    );

    // The same names with other bytes: refused, nothing cached, no results.
    let evil = FileServer::start(benchmarks(), true);
    let results_before = std::fs::read_dir(fresh.join("results")).unwrap().count();
    let cached_before = std::fs::read_dir(fresh.join("cache/sha256"))
        .unwrap()
        .count();
    let refused = vmlab(&evil, &["bench", "hpccg", "--ci"]);
    assert_eq!(refused.code, 125, "{}", refused.stdout);
    assert!(
        refused.stderr.starts_with(
            "error: `hpccg` needs its source: checksum mismatch for http://127.0.0.1:"
        ),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_dir(fresh.join("results")).unwrap().count(),
        results_before
    );
    assert_eq!(
        std::fs::read_dir(fresh.join("cache/sha256"))
            .unwrap()
            .count(),
        cached_before
    );
    assert_eq!(vmlab(&mirror, &["down"]).code, 0);
}

/// The CI job of `examples/ci/` as it is (`scripts/ci-bench run`) on one
/// guest: ungated, it passes and writes a references file; with that file
/// made deliberately wrong (every value 10× what the guest does, and STREAM's
/// metrics are higher-is-better), it fails with the regression exit code,
/// and its JUnit and Markdown reports say so. The lab is gone after each run.
#[test]
#[ignore = "boots real VMs: needs libvirtd + QEMU (just test)"]
fn the_ci_script_gates_on_references_and_always_tears_down() {
    let lab = TestLab::new("ci-a"); // consoles on failure, `down` on drop
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("results");
    let references = out.path().join("references.toml");
    let script = || {
        let mut cmd = assert_cmd::Command::new("bash");
        cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ci-bench"))
            .arg("run")
            .env("VMLAB", env!("CARGO_BIN_EXE_vmlab"))
            .env("VMLAB_HOME", home())
            .env("VMLAB_CONNECT", CONNECT)
            .env("VMLAB_SOURCES", benchmarks())
            .env_remove("VMLAB_CONFIG")
            .env_remove("VMLAB_SOURCES_URL")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env("VMLAB_CI_LAB", lab.lab)
            .env("VMLAB_CI_PREFIX", "ci")
            .env("VMLAB_CI_VMS", "1")
            .env("VMLAB_CI_BENCH", "stream")
            .env("VMLAB_CI_REFERENCES", &references)
            .env("VMLAB_CI_RESULTS", &results)
            .current_dir(out.path())
            .timeout(Duration::from_secs(600));
        cmd
    };
    let first = run(&mut script());
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(domains_named("ci-").is_empty(), "the lab outlived the job");
    let written = std::fs::read_to_string(results.join("references.toml")).unwrap();
    let wrong: String = written
        .lines()
        .map(|line| match line.strip_prefix("value = ") {
            Some(v) => format!("value = {}\n", v.parse::<f64>().unwrap() * 10.0),
            None => format!("{line}\n"),
        })
        .collect();
    assert_eq!(wrong.matches("value = ").count(), 4, "{written}");
    std::fs::write(&references, wrong).unwrap();

    let second = run(&mut script());
    assert_eq!(second.code, 3, "{}\n{}", second.stdout, second.stderr);
    assert!(domains_named("ci-").is_empty(), "the lab outlived the job");
    let xml = std::fs::read(results.join("junit.xml")).unwrap();
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml)).unwrap();
    assert_eq!((suites.tests, suites.failures), (1, 1));
    let case = &suites.suites[0].cases[0];
    assert_eq!(case.status.failure_as_ref().failure_type, "regression");
    let summary = std::fs::read_to_string(results.join("summary.md")).unwrap();
    assert!(
        summary.contains("### vmlab bench `stream`: FAILED"),
        "{summary}"
    );
}
