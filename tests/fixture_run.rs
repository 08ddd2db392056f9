//! `tests/fixtures/run/` is what the generator in `tests/common` writes through
//! vmlab's own writers. `VMLAB_BLESS=1 cargo test --test fixture_run` rewrites it.

mod common;

use vmlab::metrics::run::{BENCH_CSV, DECISIONS_CSV, METRICS_CSV, read_run};

#[test]
fn recorded_run_matches_its_generator() {
    let fresh = tempfile::tempdir().unwrap();
    common::write_run(fresh.path(), common::SAMPLES);
    let fixture = common::fixture_dir();
    for file in [METRICS_CSV, DECISIONS_CSV, BENCH_CSV] {
        let generated = std::fs::read_to_string(fresh.path().join(file)).unwrap();
        if std::env::var_os("VMLAB_BLESS").is_some() {
            std::fs::create_dir_all(&fixture).unwrap();
            std::fs::write(fixture.join(file), &generated).unwrap();
        }
        let recorded = std::fs::read_to_string(fixture.join(file)).unwrap_or_default();
        assert!(
            recorded == generated,
            "{file} differs from its generator; rerun with VMLAB_BLESS=1"
        );
    }
}

#[test]
fn recorded_run_reads_back() {
    let run = read_run(&common::fixture_dir()).unwrap();
    assert_eq!(run.pcpus, common::PCPUS);
    assert_eq!(run.metrics.len(), common::SAMPLES * common::VMS.len());
    assert_eq!(run.decisions.len(), 9);
    assert_eq!(run.bench.len(), 9);
    let vm3 = run.metrics.iter().filter(|r| r.vm == "vm-3");
    assert!(
        vm3.clone().all(|r| r.balloon_actual_mib.is_none()),
        "vm-3 has no balloon stats"
    );
    assert!(vm3.clone().any(|r| r.pins == "0:1"));
}
