# vmlab recipes. `just lab` runs a small lab; `just test` runs every test tier.

# The official Alpine minirootfs shipped beside the repository (offline guests).
alpine := env_var_or_default("VMLAB_ALPINE_ROOTFS", justfile_directory() / "../shared/alpine/alpine-minirootfs-3.20.3-x86_64.tar.gz")
vmlab := justfile_directory() / "target/release/vmlab"

# Install host packages and start libvirt (idempotent).
setup:
    bash scripts/setup

build:
    cargo build --release --quiet

# Build the offline guest image unless it is already installed.
image: build
    #!/usr/bin/env bash
    set -euo pipefail
    if {{vmlab}} image list | grep -q '^vmlab-alpine '; then exit 0; fi
    if [ -f "{{alpine}}" ]; then
        {{vmlab}} image build --rootfs "{{alpine}}"
    else
        echo "no Alpine minirootfs at {{alpine}}: building the busybox fallback image"
        {{vmlab}} image build
    fi

# The main job: a small lab of N VMs on the offline image, then its status.
lab n="2": setup image
    {{vmlab}} up {{n}}
    {{vmlab}} status
    {{vmlab}} ssh vm-1 -- 'uname -sr; cat /etc/alpine-release 2>/dev/null; nproc; free -m | head -2'

# Every test tier: unit (no host tools), host tools, CLI + libvirt test:///, then
# real VMs (sequential: they load the host). VMLAB_REQUIRE_TOOLS=1: a tier whose
# host tool is missing fails instead of skipping.
test: setup
    cargo test --quiet --lib --bins
    VMLAB_REQUIRE_TOOLS=1 cargo test --quiet --test host_tools -- --nocapture
    cargo test --quiet --test cli --test test_driver --test fixture_run --test replay --test layers --test dashboard --test plot
    cargo test --quiet --test dashboard_browser -- --nocapture
    VMLAB_REQUIRE_TOOLS=1 cargo test --quiet --test workload_build -- --nocapture
    cargo test --test e2e --test e2e_workloads --test e2e_manage --test e2e_observe --test e2e_scenario -- --ignored --test-threads=1
    cargo test --test e2e_clone -- --ignored --test-threads=1

# A fresh machine to the CI job, each step timed (on stderr): setup, build, up 2,
# bench stream --ci gated on ci/references.toml (the first run, ungated,
# writes results/references.toml to copy there), down.
bench-ci:
    bash scripts/ci-bench install
    bash scripts/ci-bench run

# Boot timing: one guest, three in parallel, teardown (prints numbers).
bench-up runs="3": setup image
    bash scripts/bench-up {{runs}}

# Clones: the template's making, one clone to SSH-ready, up 1/3/8 booted vs
# from the snapshot, reset of each lab (SIZES="3 8" picks the sizes).
bench-clone runs="3": setup image
    bash scripts/bench-up --snapshot {{runs}}

# HPCG through vmlab bench vs. a hand run in the same guest, and vmlab's own time per run.
bench-bench runs="3": setup image
    bash scripts/bench-bench {{runs}}

# Manager benchmark: simulated scenarios (vmlab's policies vs the course-style
# baselines), one decision round at 1000 VMs, then the scenarios on a real
# 4-VM lab (`just bench-manage sim`: the simulator only). Prints numbers.
bench-manage mode="all": setup image
    bash scripts/bench-manage {{mode}}

# The course's test cases under vmlab's policies and the greedy baseline, on a
# lab of the course's shape: the scorecard and the suite's wall time.
bench-scenarios: setup image
    bash scripts/bench-scenarios

# What observing costs: collector host CPU per VM and sample, reporter CPU in the guests.
bench-monitor seconds="60": setup image
    bash scripts/bench-monitor {{seconds}}

lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
