//! `plot` on the recorded run: every figure as a non-empty PNG and SVG, and
//! the SVG's lines carry exactly the run's samples. The figures are kept in
//! `target/artifacts/plots/`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use vmlab::plot::plot;

/// Points of the SVG's polylines, summed per stroke colour; black ones are axes.
fn points_by_colour(svg: &str) -> BTreeMap<String, usize> {
    let mut by_colour = BTreeMap::new();
    for polyline in svg.split("<polyline").skip(1) {
        let attr = |name: &str| {
            let start = polyline.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            let len = polyline[start..].find('"').unwrap();
            polyline[start..start + len].to_string()
        };
        if attr("stroke") != "#000000" {
            *by_colour.entry(attr("stroke")).or_default() +=
                attr("points").split_whitespace().count();
        }
    }
    by_colour
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn figures_of_the_recorded_run() {
    // Kept as artifacts, to be looked at.
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../artifacts/plots");
    let _ = std::fs::remove_dir_all(&out);
    let written = plot(&common::fixture_dir(), &out).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "memory.png",
            "memory.svg",
            "cpu.png",
            "cpu.svg",
            "pcpu.png",
            "pcpu.svg",
            "bench-hpcg-gflops.png",
            "bench-hpcg-gflops.svg",
        ]
    );
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.len() > 5_000,
            "{} is only {} bytes",
            path.display(),
            bytes.len()
        );
        if path.extension().unwrap() == "png" {
            assert!(
                bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
                "{}",
                path.display()
            );
        }
    }

    // One line per VM, one point per sample of that VM (30 each).
    let cpu = points_by_colour(&read(&out.join("cpu.svg")));
    assert_eq!(
        cpu.values().copied().collect::<Vec<_>>(),
        [30, 30, 30],
        "{cpu:?}"
    );

    // Used memory: 30 points for each of the 3 VMs; balloon allocation only for
    // vm-1 and vm-2 (vm-3 has no balloon stats: a gap, not zeros).
    let memory_svg = read(&out.join("memory.svg"));
    let memory = points_by_colour(&memory_svg);
    assert_eq!(memory["#D12771"], 90, "{memory:?}");
    assert_eq!(memory["#2364D2"], 60, "{memory:?}");
    assert!(memory_svg.contains("vm-3 (no balloon stats)"));

    // pCPU: one line per pCPU, one point per sample; both pin changes labelled.
    let pcpu_svg = read(&out.join("pcpu.svg"));
    let pcpu = points_by_colour(&pcpu_svg);
    assert_eq!((pcpu["#2364D2"], pcpu["#D12771"]), (30, 30), "{pcpu:?}");
    assert!(pcpu_svg.contains("vm-3 0:0 → 0:1"));
    assert!(pcpu_svg.contains("vm-1 0:0 → 0:0;1:0"));

    let bench = read(&out.join("bench-hpcg-gflops.svg"));
    for label in [
        "1 vCPU, 512 MiB (n=3)",
        "2 vCPU, 512 MiB (n=3)",
        "2 vCPU, 1024 MiB (n=2)",
        "(1 invalid not shown)",
    ] {
        assert!(bench.contains(label), "{label} missing");
    }
}

#[test]
fn clear_errors_for_missing_empty_and_dataless_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = plot(&dir.path().join("missing"), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = plot(dir.path(), &out).unwrap_err().to_string();
    assert!(err.contains("is it a run directory?"), "{err}");
    std::fs::write(dir.path().join("metrics.csv"), "time,t_s,vm\n").unwrap();
    let err = plot(dir.path(), &out).unwrap_err().to_string();
    assert!(err.contains("nothing to plot"), "{err}");
    assert!(!out.exists(), "no output directory for nothing");
}

#[test]
fn values_that_are_not_finite_are_skipped_with_a_warning_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    // Records 2–22: samples 1 to 7 of vm-1, vm-2, vm-3.
    common::write_run(dir.path(), 7);
    let metrics = dir.path().join("metrics.csv");
    for (record, column, text) in [
        (17, "cpu_pct", "inf"),
        (18, "mem_used_mib", "-inf"),
        (18, "pcpu0_pct", "NaN"),
        (19, "t_s", "inf"),
        (20, "cpu_pct", "1e308"),
        (20, "mem_used_mib", "1e308"),
        (21, "t_s", "1e308"),
        (22, "t_s", "-inf"),
        (22, "balloon_actual_mib", "1e400"),
    ] {
        common::set_cell(&metrics, record, column, text);
    }
    let bench = dir.path().join("bench.csv");
    common::set_cell(&bench, 2, "value", "-1e308");
    common::set_cell(&bench, 3, "value", "inf");
    let out_dir = dir.path().join("plots");
    let out = assert_cmd::Command::cargo_bin("vmlab")
        .unwrap()
        .arg("plot")
        .arg(dir.path())
        .arg("--out")
        .arg(&out_dir)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "vmlab plot failed, or hung and was killed: {stderr}"
    );
    let file = metrics.display().to_string();
    for (record, column) in [
        (17, "cpu_pct"),
        (18, "mem_used_mib"),
        (18, "pcpu0_pct"),
        (19, "t_s"),
        (21, "t_s"),
        (22, "t_s"),
    ] {
        let named = stderr.lines().any(|l| {
            l.starts_with("warning: ")
                && l.contains(&format!("{file} record {record}"))
                && l.contains(&format!("`{column}`"))
        });
        assert!(
            named,
            "no warning names record {record}'s {column}: {stderr}"
        );
    }
    let bench_noted = format!("{} record 3: `value` is `inf`", bench.display());
    assert!(stderr.contains(&bench_noted), "{stderr}");
    // vm-1: 7 samples, the `inf` one a gap; vm-2: its 7th row has no time;
    // vm-3: its 6th and 7th rows have none.
    let cpu = points_by_colour(&read(&out_dir.join("cpu.svg")));
    let want = [("#2364D2", 6), ("#D12771", 6), ("#198038", 5)];
    assert_eq!(cpu, want.map(|(c, n)| (c.to_string(), n)).into(), "{cpu:?}");
}
