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
