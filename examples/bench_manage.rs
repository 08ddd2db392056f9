//! Runs every simulated scenario under vmlab's policies and the course-style
//! baselines, prints the judge's figures side by side, then times one
//! decision round for 1000 VMs on 128 pCPUs. Numbers only; nothing asserted.
//!
//! `just bench-manage` (or `cargo run --release --example bench_manage`).

use std::time::{Duration, Instant};

use vmlab::manage::action::Action;
use vmlab::manage::judge::Figures;
use vmlab::manage::policy::{CpuPolicy, ManageConfig, MemoryPolicy, State, plan};
use vmlab::manage::sim::host::{Host, TICK_S};
use vmlab::manage::sim::scenario::{Scale, library};
use vmlab::manage::sim::{self, Run};
use vmlab::metrics::cpu::{CpuUse, std_dev};

fn main() {
    let ours = ManageConfig {
        cpu: CpuPolicy::PinHotplug,
        ..ManageConfig::default()
    };
    let baseline = ManageConfig {
        cpu: CpuPolicy::Greedy,
        memory: MemoryPolicy::Threshold,
        ..ManageConfig::default()
    };
    println!(
        "Scenarios at 2 pCPUs, 4 VMs, interval 2 s (judge: 1 s samples, sd bar 5, floor 100 MiB)"
    );
    println!(
        "ours = pin+hotplug / balloon; course = greedy re-pin every round / threshold (+100 MiB >80 %, -500 MiB <20 %)"
    );
    println!(
        "balance_s: worst phase's seconds from a load (change) until the sd stayed <= 5 (- = never)"
    );
    println!();
    println!("{:<22} {:<6} {}", "scenario", "policy", Figures::header());
    for scenario in library(Scale::default()) {
        for (label, config) in [("ours", &ours), ("course", &baseline)] {
            let run = sim::run(&scenario, config);
            assert!(
                run.refused.is_empty(),
                "{}: refused {:?}",
                scenario.name,
                run.refused
            );
            print_row(scenario.name, label, &run);
        }
    }
    println!();
    println!(
        "Growth from rest at 60 MiB/s (consume-fast) eats into the floor before a round sees it; the knobs:"
    );
    let fast = library(Scale::default())
        .into_iter()
        .find(|s| s.name == "consume-fast")
        .expect("scenario exists");
    for (label, config) in [
        ("2s", ours.clone()),
        (
            "1s",
            ManageConfig {
                interval_s: 1.0,
                ..ours.clone()
            },
        ),
        ("fl200", {
            let mut c = ours.clone();
            c.balloon.floor_unused_mib = 200;
            c
        }),
    ] {
        print_row(fast.name, label, &sim::run(&fast, &config));
    }
    println!();
    round_time();
}

fn print_row(name: &str, label: &str, run: &Run) {
    println!("{:<22} {:<6} {}", name, label, run.report.figures());
}

/// One decision round at 1000 VMs on 128 pCPUs: steady (loads settled) and
/// the worst first round (every vCPU on pCPU 0).
fn round_time() {
    let scale = Scale {
        pcpus: 128,
        vms: 1000,
    };
    let config = ManageConfig {
        cpu: CpuPolicy::PinHotplug,
        ..ManageConfig::default()
    };
    println!("One decision round, 1000 VMs on 128 pCPUs (pin+hotplug / balloon), 20 rounds each:");
    for name in ["mixed", "all-on-one"] {
        let scenario = library(scale)
            .into_iter()
            .find(|s| s.name == name)
            .expect("scenario exists");
        let mut host = Host::new(&scenario);
        let mut state = State::default();
        let (mut policy, mut with_snapshot, mut decisions) = (Vec::new(), Vec::new(), Vec::new());
        let mut last = Vec::new();
        for round in 0..21 {
            let started = Instant::now();
            let snap = host.snapshot();
            let planned = Instant::now();
            let out = plan(&snap, &mut state, &config);
            let done = Instant::now();
            // The first round has nothing to compare with: not timed.
            if round > 0 {
                policy.push(done - planned);
                with_snapshot.push(done - started);
                decisions.push(
                    out.iter()
                        .filter(|d| matches!(d.action, Action::Pin { .. }))
                        .count(),
                );
            }
            for d in &out {
                host.apply(&d.action)
                    .expect("the model accepts the policy's actions");
            }
            last.push(snap);
            for _ in 0..(config.interval_s / TICK_S).round() as u32 {
                host.step();
            }
        }
        let [.., before, after] = &last[..] else {
            unreachable!("21 rounds")
        };
        let cpu = CpuUse::between(before, after).expect("time passed");
        println!(
            "  {name:<11} policy only: first {:.2} ms, median {:.2} ms, max {:.2} ms; with snapshot: median {:.2} ms; \
             pins first/later rounds: {}/{}; pCPU sd at the end: {:.1}",
            ms(policy[0]),
            ms(median(&policy)),
            ms(*policy.iter().max().expect("rounds ran")),
            ms(median(&with_snapshot)),
            decisions[0],
            decisions[1..].iter().sum::<usize>(),
            std_dev(&cpu.pcpu_pct(after)),
        );
    }
}

fn median(xs: &[Duration]) -> Duration {
    let mut sorted = xs.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
