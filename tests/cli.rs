//! The real binary: argument errors and refusals, each one line on stderr,
//! exit code 2 (usage) or 125 (vmlab could not do it), nothing created.

use assert_cmd::Command;

fn vmlab(home: &std::path::Path) -> Command {
    let mut cmd = Command::cargo_bin("vmlab").unwrap();
    cmd.env("VMLAB_HOME", home)
        .env_remove("VMLAB_CONNECT")
        .env_remove("VMLAB_LAB")
        .env_remove("VMLAB_CONFIG")
        .env_remove("VMLAB_WORKLOADS")
        .current_dir(home.parent().unwrap());
    cmd
}

fn stderr_of(cmd: &mut Command, code: i32) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn count_must_be_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let err = stderr_of(vmlab(&home).args(["up", "0"]), 2);
    assert!(
        err.starts_with(
            "error: invalid value '0' for '<COUNT>': the VM count must be at least 1\n"
        ),
        "{err}"
    );
    let err = stderr_of(vmlab(&home).args(["up", "three"]), 2);
    assert!(err.starts_with("error: invalid value 'three' for '<COUNT>': `three` is not a number of VMs; e.g. `vmlab up 3`\n"), "{err}");
    assert!(!home.exists(), "argument errors created {}", home.display());
}

#[test]
fn bad_sizes_and_names_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["up", "1", "--memory", "1G", "--max-memory", "512M"],
            125,
            "error: --max-memory (512 MiB) is below --memory (1024 MiB); raise --max-memory\n",
        ),
        (
            &["up", "1", "--memory", "lots"],
            2,
            "error: invalid value 'lots' for '--memory <SIZE>': `lots` is not a size; write it like 512M, 2G or 1536MiB\n",
        ),
        (
            &["up", "1", "--prefix", "a;b"],
            125,
            "error: prefix `a;b` is not allowed; use letters, digits, `-`, `_` or `.` (start with a letter or digit, at most 40)\n",
        ),
        (
            &["--lab", "../x", "status"],
            125,
            "error: lab `../x` is not allowed; use letters, digits, `-`, `_` or `.` (start with a letter or digit, at most 40)\n",
        ),
        (
            &["up", "1", "--ssh-timeout", "0"],
            2,
            "error: invalid value '0' for '--ssh-timeout <SECONDS>': number would be zero for non-zero type\n",
        ),
    ];
    for (args, code, expected) in cases {
        let err = stderr_of(vmlab(&home).args(args), code);
        assert!(err.starts_with(expected), "{args:?}: {err}");
    }
    assert!(!home.exists());
}

#[test]
fn manager_intervals_are_finite_and_at_least_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for bad in ["inf", "1e20", "1e-9", "0", "NaN"] {
        let err = stderr_of(vmlab(&home).args(["manage", "--interval", bad]), 2);
        assert!(
            err.starts_with(&format!(
                "error: invalid value '{bad}' for '--interval <SECONDS>': an interval of "
            )) && err.contains("s is out of range; it must be between 1 and 3600 seconds\n"),
            "{bad}: {err}"
        );
        let err = stderr_of(
            vmlab(&home).args(["scenario", "run", "idle", "--sim", "--interval", bad]),
            2,
        );
        assert!(err.contains("between 1 and 3600 seconds"), "{bad}: {err}");
    }
    let config = dir.path().join("vmlab.toml");
    std::fs::write(&config, "[manage]\ninterval_s = 1e20\n").unwrap();
    let err = stderr_of(
        vmlab(&home).arg("--config").arg(&config).args(["manage"]),
        125,
    );
    assert_eq!(
        err,
        "error: manage `interval_s` (or --interval): an interval of 100000000000000000000 s is out of range; it must be between 1 and 3600 seconds\n"
    );
    assert!(!home.exists() && !dir.path().join("results").exists());
}

#[test]
fn stopped_libvirt_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let err = stderr_of(
        vmlab(&home).args([
            "--connect",
            "qemu+unix:///system?socket=/nonexistent/sock",
            "status",
        ]),
        125,
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "error: cannot connect to libvirt at `qemu+unix:///system?socket=/nonexistent/sock`: "
        ),
        "{err}"
    );
    assert!(err.trim_end().ends_with("start the daemons with `sudo virtlogd -d && sudo libvirtd -d` (or run scripts/setup), or pick another URI with --connect"), "{err}");
}

#[test]
fn missing_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node><memory>8388608</memory></node>").unwrap();
    let connect = format!("test://{}", node.display());
    let err = stderr_of(
        vmlab(&home).args(["--connect", &connect, "up", "2", "--image", "nope"]),
        125,
    );
    assert_eq!(
        err,
        format!(
            "error: image `nope` is not installed in {}/images; build it with `vmlab image build --rootfs ALPINE_MINIROOTFS.tar.gz` or fetch one with `vmlab image fetch alpine`\n",
            home.display()
        )
    );
    assert!(!home.join("labs").exists());
}

#[test]
fn config_file_is_read_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let config = dir.path().join("vmlab.toml");
    std::fs::write(&config, "memory = \"2G\"\nmax_memory = \"1G\"\n").unwrap();
    let err = stderr_of(vmlab(&home).args(["up", "1"]), 125);
    assert_eq!(
        err,
        "error: `max_memory` in vmlab.toml (1024 MiB) is below `memory` in vmlab.toml (2048 MiB); raise `max_memory` in vmlab.toml\n"
    );
    // Flags win over the file.
    let err = stderr_of(
        vmlab(&home).args([
            "up",
            "1",
            "--max-memory",
            "4G",
            "--image",
            "nope",
            "--connect",
            "test:///default",
        ]),
        125,
    );
    assert!(
        err.starts_with("error: image `nope` is not installed"),
        "{err}"
    );
    // Errors in the file point at their line and column.
    std::fs::write(&config, "lab = \"x\"\nmemroy = \"2G\"\n").unwrap();
    let err = stderr_of(vmlab(&home).args(["up", "1"]), 125);
    assert!(
        err.starts_with("error: vmlab.toml:2:1: unknown field `memroy`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::write(&config, "ssh_timeout_s = 0\n").unwrap();
    let err = stderr_of(vmlab(&home).args(["up", "1"]), 125);
    assert!(err.starts_with("error: vmlab.toml:1:17: "), "{err}");
}

#[test]
fn a_bad_unrelated_key_does_not_lock_the_user_out() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::write(
        dir.path().join("vmlab.toml"),
        "lab = \"mine\"\nmemory = \"lots\"\nmemroy = 1\n",
    )
    .unwrap();
    for args in [&["status"][..], &["down"]] {
        let out = vmlab(&home)
            .args(["--connect", "test:///default"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("lab `mine` has no VMs"),
            "{args:?}: the file's lab must still apply"
        );
    }
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let missing = dir.path().join("nope.toml");
    let err = stderr_of(
        vmlab(&home).args(["--config", missing.to_str().unwrap(), "status"]),
        125,
    );
    assert_eq!(
        err,
        format!(
            "error: settings file {} does not exist; check the path given to --config\n",
            missing.display()
        )
    );
}

#[test]
fn down_and_console_of_unknown_vms() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let err = stderr_of(
        vmlab(&home).args(["--connect", "test:///default", "down", "vm-7"]),
        125,
    );
    assert_eq!(
        err,
        "error: lab `default` has no VMs; `vmlab status` lists them\n"
    );
    let out = vmlab(&home)
        .args(["--connect", "test:///default", "down"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "lab `default` has no VMs\n"
    );
    let err = stderr_of(vmlab(&home).args(["console", "vm-1"]), 125);
    assert!(
        err.starts_with("error: no console log for `vm-1` at "),
        "{err}"
    );
}

#[test]
fn bad_workload_requests_are_one_line_errors_and_leave_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let cases: [(&[&str], i32, &str); 8] = [
        (
            &["bench", "nope"],
            125,
            "error: unknown workload `nope`; known: cohmm, cpu_hog, hpccg, hpcg, memory_hog",
        ),
        (
            &["bench", "stream", "--param", "bogus=1"],
            125,
            "error: `stream` has no parameter `bogus`; its parameters: ",
        ),
        (
            &["bench", "stream", "--param", "array_size=12"],
            125,
            "error: `stream` parameter `array_size`: ",
        ),
        (
            &["bench", "stream", "--param", "nokey"],
            2,
            "error: invalid value 'nokey' for '--param <KEY=VALUE>': `nokey` is not KEY=VALUE",
        ),
        (
            &["bench", "stream", "--matrix", "vcpus=x"],
            125,
            "error: matrix value `vcpus=x` is not a vCPU count",
        ),
        (
            &["bench", "stream", "--repeat", "auto:0"],
            2,
            "error: invalid value 'auto:0' for '--repeat <K|auto[:MAX]>': `auto:0` is not a repeat count; give 1 to 1000, `auto` or `auto:MAX` (e.g. auto:10)\n",
        ),
        (
            &["bench", "stream", "--on", "a/b"],
            2,
            "error: invalid value 'a/b' for '--on <ON>': VM `a/b` is not allowed",
        ),
        // Everything the request says is fine: the lab is what is missing.
        (
            &["run", "stream", "--ci"],
            125,
            "error: lab `default` has no VMs; create some with `vmlab up 2`",
        ),
    ];
    for (args, code, expected) in cases {
        let err = stderr_of(
            vmlab(&home)
                .args(["--connect", "test:///default"])
                .args(args),
            code,
        );
        assert!(err.starts_with(expected), "{args:?}: {err}");
        if code == 125 {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    assert!(
        !dir.path().join("results").exists(),
        "a refused request created a results directory"
    );
}

#[test]
fn durations_read_the_same_in_flags_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for verb in ["manage", "monitor"] {
        let err = stderr_of(vmlab(&home).args([verb, "--duration", "soon"]), 2);
        assert!(
            err.starts_with("error: invalid value 'soon' for '--duration <DURATION>': `soon` is not a duration (write it like 90, 90s, 2m or 1h30m)\n"),
            "{verb}: {err}"
        );
        // A plain number is seconds: the flag is accepted, libvirt is what is missing.
        for good in ["90", "1h30m"] {
            let err = stderr_of(
                vmlab(&home).args([
                    "--connect",
                    "qemu+unix:///system?socket=/nonexistent/sock",
                    verb,
                    "--duration",
                    good,
                ]),
                125,
            );
            assert!(
                err.starts_with("error: cannot connect to libvirt"),
                "{verb} {good}: {err}"
            );
        }
    }
    let err = stderr_of(
        vmlab(&home).args([
            "--connect",
            "test:///default",
            "run",
            "cpu_hog",
            "--param",
            "duration_s=1h30",
        ]),
        125,
    );
    assert_eq!(
        err,
        "error: `cpu_hog` parameter `duration_s`: `1h30` is not a duration (write it like 90, 90s, 2m or 1h30m); give 1..=86400 s\n"
    );
}

/// `dir/<name>/`: a copy of the repository's workload `name`.
fn copy_workload(dir: &std::path::Path, name: &str) {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workloads")
        .join(name);
    std::fs::create_dir_all(dir.join(name)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(name).join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn every_command_finds_workloads_in_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (from_file, from_env) = (dir.path().join("mine"), dir.path().join("env"));
    copy_workload(&from_file, "cpu_hog");
    copy_workload(&from_env, "memory_hog");
    std::fs::write(
        dir.path().join("vmlab.toml"),
        format!("workloads_dir = {:?}\n", from_file.to_str().unwrap()),
    )
    .unwrap();
    let listed = |env: Option<&std::path::Path>| {
        let mut cmd = vmlab(&home);
        if let Some(env) = env {
            cmd.env("VMLAB_WORKLOADS", env);
        }
        let out = cmd.args(["workloads", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let unknown = |env: Option<&std::path::Path>| {
        let mut cmd = vmlab(&home);
        if let Some(env) = env {
            cmd.env("VMLAB_WORKLOADS", env);
        }
        stderr_of(
            cmd.args(["--connect", "test:///default", "run", "nope"]),
            125,
        )
    };
    assert_eq!(listed(None), ["cpu_hog"], "vmlab.toml's workloads_dir");
    assert_eq!(
        listed(Some(&from_env)),
        ["memory_hog"],
        "VMLAB_WORKLOADS wins"
    );
    assert_eq!(
        listed(Some("".as_ref())),
        ["cpu_hog"],
        "an empty VMLAB_WORKLOADS is unset"
    );
    assert_eq!(
        unknown(None),
        format!(
            "error: unknown workload `nope`; known: cpu_hog (in {})\n",
            from_file.display()
        )
    );
    assert_eq!(
        unknown(Some(&from_env)),
        format!(
            "error: unknown workload `nope`; known: memory_hog (in {})\n",
            from_env.display()
        )
    );
}

#[test]
fn scenario_run_refuses_bad_managers_and_names_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let on_test = |args: &[&str]| {
        let mut cmd = vmlab(&home);
        cmd.args(["--connect", "test:///default", "scenario", "run"])
            .args(args);
        cmd
    };
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["course-cpu-1", "--manager", "./no-such-scheduler", "2"],
            125,
            "error: `./no-such-scheduler` (--manager) not found\n",
        ),
        (
            &["course-cpu-1", "--memory-manager", "no-such-coordinator"],
            125,
            "error: `no-such-coordinator` (--memory-manager) is not on PATH; give its path, e.g. `./no-such-coordinator`\n",
        ),
        (
            &["no-such-case"],
            125,
            "error: no scenario `no-such-case`; there are all-on-one, ",
        ),
        (
            &[],
            2,
            "error: the following required arguments were not provided",
        ),
        (
            &["course-cpu-1", "--sim", "--manager", "sh"],
            2,
            "error: the argument '--sim' cannot be used with '--manager <PROGRAM>...'",
        ),
    ];
    for (args, code, expected) in cases {
        let err = stderr_of(&mut on_test(args), code);
        assert!(err.starts_with(expected), "{args:?}: {err}");
        if code == 125 {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    // A program that exists, on a lab with nothing running: the command
    // that starts one.
    let err = stderr_of(&mut on_test(&["course-cpu-1", "--manager", "sh"]), 125);
    assert!(
        err.starts_with("error: lab `default` has no running VMs; start some with `vmlab up"),
        "{err}"
    );
    assert!(!dir.path().join("results").exists());
}

fn fixture_run(id: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/results")
        .join(id)
}

#[test]
fn bad_baselines_are_one_line_errors_and_leave_no_results() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let corrupt = dir.path().join("corrupt.toml");
    std::fs::write(&corrupt, "schema = 1\nreference = 3\n").unwrap();
    let hpcg = fixture_run("20261207-224129-hpcg");
    let mut other_units = String::from_utf8(
        vmlab(&home)
            .args(["results", "reference"])
            .arg(fixture_run("20261207-220332-stream"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(other_units.contains("unit = \"MB/s\""), "{other_units}");
    other_units = other_units.replace("unit = \"MB/s\"", "unit = \"GB/s\"");
    let units = dir.path().join("units.toml");
    std::fs::write(&units, other_units).unwrap();
    let cases = [
        (
            "nope.toml".to_owned(),
            "error: baseline `nope.toml` does not exist; give a run directory (results/<run-id>) or a references file (`vmlab results reference RUN > references.toml`)\n".to_owned(),
        ),
        (
            corrupt.display().to_string(),
            format!(
                "error: baseline `{}`:2: invalid type: integer `3`, expected a sequence; it is not a references file (`vmlab results reference RUN` writes one)\n",
                corrupt.display()
            ),
        ),
        (
            hpcg.display().to_string(),
            format!(
                "error: baseline `{}` has no reference for `stream` (it has: hpcg); give the baseline of a `stream` run\n",
                hpcg.display()
            ),
        ),
        (
            units.display().to_string(),
            format!(
                "error: baseline `{}`: `stream` `add_mb_per_s` is in GB/s there, vmlab measures it in MB/s; write the baseline again with `vmlab results reference RUN`\n",
                units.display()
            ),
        ),
    ];
    for (baseline, expected) in cases {
        let err = stderr_of(
            vmlab(&home).args([
                "--connect",
                "test:///default",
                "bench",
                "stream",
                "--ci",
                "--baseline",
                &baseline,
            ]),
            125,
        );
        assert_eq!(err, expected);
    }
    let err = stderr_of(
        vmlab(&home).args(["bench", "stream", "--require-reference"]),
        2,
    );
    assert!(
        err.starts_with(
            "error: the following required arguments were not provided:\n  --baseline <PATH>\n"
        ),
        "{err}"
    );
    assert!(
        !dir.path().join("results").exists(),
        "a refused baseline created a results directory"
    );
}

#[test]
fn results_reference_writes_a_references_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let out = vmlab(&home)
        .args(["results", "reference"])
        .arg(fixture_run("20261207-224129-hpcg"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("[[reference]]").count(), 6, "{text}");
    let err = stderr_of(
        vmlab(&home).args(["results", "reference", "20990101-000000-x"]),
        125,
    );
    assert_eq!(
        err,
        "error: no benchmark run `20990101-000000-x` in results; `vmlab results list` lists them\n"
    );
}

#[test]
fn results_list_show_and_compare_read_recorded_runs() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let results = dir.path().join("results");
    for id in ["20261207-220332-stream", "20261207-224117-stream"] {
        std::fs::create_dir_all(results.join(id)).unwrap();
        for file in ["run.json", "bench.csv"] {
            std::fs::copy(fixture_run(id).join(file), results.join(id).join(file)).unwrap();
        }
    }
    // B ran under KVM.
    let b_json = results.join("20261207-224117-stream/run.json");
    let text = std::fs::read_to_string(&b_json).unwrap();
    std::fs::write(&b_json, text.replace("\"qemu\"", "\"kvm\"")).unwrap();

    let out = vmlab(&home).args(["results", "list"]).output().unwrap();
    assert!(out.status.success());
    let list = String::from_utf8(out.stdout).unwrap();
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.lines()
            .nth(1)
            .unwrap()
            .starts_with("20261207-220332-stream  stream"),
        "{list}"
    );

    let out = vmlab(&home)
        .args(["results", "show", "20261207-224117-stream"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(show.contains("VMs: e2b-1 kvm, e2b-2 kvm\n"), "{show}");

    let out = vmlab(&home)
        .args([
            "results",
            "compare",
            "20261207-220332-stream",
            "20261207-224117-stream",
            "--format",
            "markdown",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "warning: accels differ: tcg vs kvm\n"
    );
    let markdown = String::from_utf8(out.stdout).unwrap();
    assert!(
        markdown.contains("> **warning**: accels differ: tcg vs kvm\n"),
        "{markdown}"
    );
    assert!(
        markdown.contains(
            "| 1 | triad_mb_per_s | 1960.7000 | 1936.4500 | -1.2 % | MB/s | 4/4 | no (ranges) |\n"
        ),
        "{markdown}"
    );

    for args in [
        &["results", "show", "nope"][..],
        &["results", "compare", "20261207-220332-stream", "nope"],
    ] {
        let err = stderr_of(vmlab(&home).args(args), 125);
        assert_eq!(
            err,
            "error: no benchmark run `nope` in results; `vmlab results list` lists them\n"
        );
    }
    let err = stderr_of(
        vmlab(&home).args(["results", "compare", "a", "b", "--format", "xml"]),
        2,
    );
    assert!(
        err.starts_with("error: invalid value 'xml' for '--format <FORMAT>'"),
        "{err}"
    );
}

#[test]
fn unwritable_reports_are_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let missing = dir.path().join("no/junit.xml");
    let err = stderr_of(
        vmlab(&home)
            .args([
                "--connect",
                "test:///default",
                "bench",
                "stream",
                "--ci",
                "--report",
            ])
            .arg(format!("junit={}", missing.display())),
        125,
    );
    assert_eq!(
        err,
        format!(
            "error: report `{}` cannot be written: folder `{}` does not exist\n",
            missing.display(),
            dir.path().join("no").display()
        )
    );
    let err = stderr_of(
        vmlab(&home).args(["bench", "stream", "--report", "html=x.html"]),
        2,
    );
    assert!(
        err.starts_with("error: invalid value 'html=x.html' for '--report <KIND=FILE>': `html=x.html` is not a report; write junit=FILE or markdown=FILE\n"),
        "{err}"
    );
    assert!(!dir.path().join("results").exists());
    assert!(!dir.path().join("no").exists());
}
