//! The scenario library: named starting placements and load traces, scaled
//! to a host (`Scale`, 2 pCPUs and 4 VMs by default, like this machine).

use super::trace::Trace;

/// The host a scenario runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSpec {
    pub pcpus: u32,
    pub total_mib: u64,
    /// Memory the host itself uses (kernel, libvirt, QEMU overhead).
    pub base_mib: u64,
    /// Each VM's CPU demand wanders this many points up or down, a new
    /// draw every second, as real loads do.
    pub cpu_noise_pct: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub vcpus_max: u32,
    /// Starting pin of each vCPU; `None` (or a missing entry) is unpinned.
    pub pins: Vec<Option<u32>>,
    pub memory_mib: u64,
    pub max_mib: u64,
    /// What the guest uses with no workload (kernel, services).
    pub base_mib: u64,
    /// CPU the workload wants, in percent of one pCPU summed over threads
    /// (250 = two busy threads and a half); spread evenly over online vCPUs.
    pub cpu_pct: Trace,
    /// Memory the workload wants on top of `base_mib`.
    pub memory_mib_demand: Trace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub duration_s: f64,
    /// When loads start or change; the judge scores each phase on its own.
    pub phases_s: Vec<f64>,
    pub host: HostSpec,
    pub vms: Vec<VmSpec>,
    /// What passes (the scorecard's verdict; see `manage::verdict`).
    pub expect: Expect,
}

/// What a scenario asks of a manager. The rules behind each are written
/// once, in the README ("What passes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// CPU, already balanced: no pin may change.
    LeaveAlone,
    /// CPU: every load class spread evenly over the pCPUs (one busy and one
    /// light VM per pCPU, or two busy ones), then no pin changes.
    EvenPlacement,
    /// CPU, measured: balanced by the course's measure, no pin changes after.
    Balanced,
    /// Memory: the floor, gradual release, 200 MiB at least per VM, the
    /// host's floor, no OOM kill, and memory back once loads end.
    MemoryRules,
}

/// How big the simulated lab is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub pcpus: u32,
    pub vms: u32,
}

impl Default for Scale {
    fn default() -> Self {
        Scale { pcpus: 2, vms: 4 }
    }
}

const GUEST_BASE_MIB: u64 = 150;
const VM_MIB: u64 = 1024;
const VM_MAX_MIB: u64 = 2048;
const HOST_BASE_MIB: u64 = 1024;
/// An idle guest's own CPU use.
const IDLE_PCT: f64 = 3.0;
/// An idle workload's memory.
const IDLE_MIB: f64 = 50.0;
/// Memory loads start after this, once the VMs gave back their initial
/// excess: growth that starts from a VM at rest is the hard case.
const SETTLE_S: f64 = 40.0;
/// The course cases' light load.
const COURSE_LIGHT_PCT: f64 = 30.0;
/// The course's memory cases start their loads after this (the VMs start
/// at 512 MiB: little to give back first), and watch reclaim this long after.
const COURSE_SETTLE_S: f64 = 10.0;
const COURSE_RECLAIM_S: f64 = 30.0;

/// Every scenario at this scale, in a fixed order.
pub fn library(scale: Scale) -> Vec<Scenario> {
    let s = Lab { scale };
    vec![
        s.cpu(
            "all-on-one",
            "every vCPU pinned to pCPU 0, all busy",
            Pins::AllOnZero,
            |_| Trace::flat(100.0),
        ),
        s.cpu(
            "split",
            "pinned in blocks, heavy loads in the first block",
            Pins::Blocks,
            |f| Trace::flat(90.0 - 80.0 * f),
        ),
        s.cpu(
            "balanced",
            "round-robin pins, equal loads: nothing to do",
            Pins::RoundRobin,
            |_| Trace::flat(45.0),
        ),
        s.cpu(
            "unpinned",
            "no pins, loads from 80 % down to 20 %",
            Pins::None,
            |f| Trace::flat(80.0 - 60.0 * f),
        ),
        s.cpu(
            "mixed",
            "busy and light VMs, the busy ones pinned together",
            Pins::Blocks,
            |f| Trace::flat(if f < 0.5 { 100.0 } else { 15.0 }),
        ),
        s.changing(),
        s.idle(),
        s.consume(
            "consume-slow",
            "one VM allocates 20 MiB/s up to 1200 MiB, then stops",
            20.0,
        ),
        s.consume(
            "consume-fast",
            "one VM allocates 60 MiB/s up to 1200 MiB, then stops",
            60.0,
        ),
        s.all_consume(),
        s.release_while_consume(),
        s.hotplug(),
        s.course_cpu(1),
        s.course_cpu(2),
        s.course_cpu(3),
        s.course_mem(1),
        s.course_mem(2),
        s.course_mem(3),
    ]
}

/// One scenario at the default scale, for tests.
#[cfg(test)]
pub fn named(name: &str) -> Scenario {
    library(Scale::default())
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
}

/// The course cases' VM shape, in MiB: memory, maximum.
pub const COURSE_VM_MIB: (u64, u64) = (512, 2048);

/// Starting placements.
#[derive(Clone, Copy)]
enum Pins {
    None,
    AllOnZero,
    /// VM i on pCPU i·pcpus/vms: neighbours share.
    Blocks,
    RoundRobin,
    /// The course's "random" pins, fixed so runs compare: even VMs low,
    /// odd VMs high, so the heavy ones (even) crowd the first pCPUs.
    Scattered,
}

struct Lab {
    scale: Scale,
}

impl Lab {
    fn n(&self) -> usize {
        self.scale.vms as usize
    }

    /// `i`'s place in the VM list, 0 for the first and 1 for the last.
    fn frac(&self, i: usize) -> f64 {
        if self.n() > 1 {
            i as f64 / (self.n() - 1) as f64
        } else {
            0.0
        }
    }

    fn host(&self, total_mib: u64) -> HostSpec {
        HostSpec {
            pcpus: self.scale.pcpus,
            total_mib,
            base_mib: HOST_BASE_MIB,
            cpu_noise_pct: 2.0,
        }
    }

    /// A host with room for every VM at its maximum: memory never short.
    fn roomy_host(&self) -> HostSpec {
        self.host(HOST_BASE_MIB + 2 * VM_MAX_MIB * self.scale.vms as u64)
    }

    fn vm(&self, i: usize, pins: Pins, cpu_pct: Trace, memory: Trace) -> VmSpec {
        let (p, n) = (self.scale.pcpus as usize, self.n());
        let pin = match pins {
            Pins::None => None,
            Pins::AllOnZero => Some(0),
            Pins::Blocks => Some((i * p / n) as u32),
            Pins::RoundRobin => Some((i % p) as u32),
            Pins::Scattered => Some(if i.is_multiple_of(2) {
                ((i / 2) % p.div_ceil(2)) as u32
            } else {
                (p - 1 - (i / 2) % p.div_ceil(2)) as u32
            }),
        };
        VmSpec {
            name: format!("vm-{}", i + 1),
            vcpus: 1,
            vcpus_max: 1,
            pins: vec![pin],
            memory_mib: VM_MIB,
            max_mib: VM_MAX_MIB,
            base_mib: GUEST_BASE_MIB,
            cpu_pct,
            memory_mib_demand: memory,
        }
    }

    /// A steady CPU scenario; `load` maps a VM's place (0..=1) to its trace.
    fn cpu(
        &self,
        name: &'static str,
        about: &'static str,
        pins: Pins,
        load: impl Fn(f64) -> Trace,
    ) -> Scenario {
        let vms = (0..self.n())
            .map(|i| self.vm(i, pins, load(self.frac(i)), Trace::flat(IDLE_MIB)))
            .collect();
        Scenario {
            name,
            about,
            duration_s: 60.0,
            phases_s: vec![0.0],
            host: self.roomy_host(),
            vms,
            expect: Expect::Balanced,
        }
    }

    fn changing(&self) -> Scenario {
        let phases_s = vec![0.0, 40.0, 80.0];
        let vms = (0..self.n())
            .map(|i| {
                let heavy_even = if i % 2 == 0 { 100.0 } else { 10.0 };
                let heavy_first_pairs = if (i / 2) % 2 == 0 { 100.0 } else { 10.0 };
                let partial = if self.frac(i) < 0.5 { 60.0 } else { 20.0 };
                let cpu = Trace::steps(&[
                    (0.0, heavy_even),
                    (40.0, heavy_first_pairs),
                    (80.0, partial),
                ]);
                self.vm(i, Pins::RoundRobin, cpu, Trace::flat(IDLE_MIB))
            })
            .collect();
        Scenario {
            name: "changing",
            about: "loads move between VMs at 40 s and 80 s",
            duration_s: 120.0,
            phases_s,
            host: self.roomy_host(),
            vms,
            expect: Expect::Balanced,
        }
    }

    fn idle(&self) -> Scenario {
        let vms = (0..self.n())
            .map(|i| {
                let mut vm = self.vm(i, Pins::None, Trace::flat(IDLE_PCT), Trace::flat(IDLE_MIB));
                vm.memory_mib = VM_MAX_MIB;
                vm
            })
            .collect();
        Scenario {
            name: "idle",
            about: "idle, unpinned VMs holding their maximum: memory goes back",
            duration_s: 90.0,
            phases_s: vec![0.0],
            host: self.roomy_host(),
            vms,
            expect: Expect::MemoryRules,
        }
    }

    /// Memory scenarios keep CPU quiet and balanced.
    fn quiet_vm(&self, i: usize, memory: Trace) -> VmSpec {
        self.vm(i, Pins::RoundRobin, Trace::flat(IDLE_PCT), memory)
    }

    fn consume(&self, name: &'static str, about: &'static str, rate_mib_s: f64) -> Scenario {
        let (start, peak) = (SETTLE_S, 1200.0);
        let full = start + peak / rate_mib_s;
        let end = full + 20.0;
        let hog = Trace::new(&[
            (start, IDLE_MIB),
            (full, peak),
            (end, peak),
            (end, IDLE_MIB),
        ]);
        let vms = (0..self.n())
            .map(|i| {
                self.quiet_vm(
                    i,
                    if i == 0 {
                        hog.clone()
                    } else {
                        Trace::flat(IDLE_MIB)
                    },
                )
            })
            .collect();
        Scenario {
            name,
            about,
            duration_s: end + 60.0,
            phases_s: vec![0.0],
            host: self.roomy_host(),
            vms,
            expect: Expect::MemoryRules,
        }
    }

    /// Every VM climbs at once on a host that cannot hold every maximum.
    fn all_consume(&self) -> Scenario {
        let (full, end) = (SETTLE_S + 40.0, SETTLE_S + 60.0);
        let hog = Trace::new(&[
            (SETTLE_S, IDLE_MIB),
            (full, 1200.0),
            (end, 1200.0),
            (end, IDLE_MIB),
        ]);
        let vms = (0..self.n())
            .map(|i| self.quiet_vm(i, hog.clone()))
            .collect();
        let per_vm = GUEST_BASE_MIB + 1200 + 250;
        Scenario {
            name: "all-consume",
            about: "every VM allocates 29 MiB/s up to 1200 MiB on a host with little spare",
            duration_s: end + 60.0,
            phases_s: vec![0.0],
            host: self.host(HOST_BASE_MIB + 512 + per_vm * self.scale.vms as u64),
            vms,
            expect: Expect::MemoryRules,
        }
    }

    /// One VM's load ends while another grows into the memory it frees.
    fn release_while_consume(&self) -> Scenario {
        let ends = Trace::steps(&[(0.0, 1300.0), (SETTLE_S + 10.0, IDLE_MIB)]);
        let grows = Trace::new(&[(SETTLE_S, IDLE_MIB), (SETTLE_S + 35.0, 1450.0)]);
        let vms = (0..self.n())
            .map(|i| match i {
                0 => {
                    let mut vm = self.quiet_vm(i, ends.clone());
                    vm.memory_mib = 1600;
                    vm
                }
                1 => self.quiet_vm(i, grows.clone()),
                _ => self.quiet_vm(i, Trace::flat(IDLE_MIB)),
            })
            .collect();
        // Without vm-1's memory, vm-2 can reach about 1100 MiB.
        let others = (self.scale.vms as u64).saturating_sub(2) * 400;
        Scenario {
            name: "release-while-consume",
            about: "vm-1's 1300 MiB load ends while vm-2 climbs 40 MiB/s to 1450 MiB",
            duration_s: SETTLE_S + 90.0,
            phases_s: vec![0.0],
            host: self.host(HOST_BASE_MIB + 300 + 1600 + 1100 + others),
            vms,
            expect: Expect::MemoryRules,
        }
    }

    /// The course's CPU case `k` (its harness README): similar busy loads
    /// pinned two per pCPU (1, nothing to do) or all on pCPU 0 (2), or half
    /// heavy and half light on scattered pins (3).
    fn course_cpu(&self, k: u32) -> Scenario {
        let n = 2 * self.scale.pcpus as usize;
        let lab = Lab {
            scale: Scale {
                pcpus: self.scale.pcpus,
                vms: n as u32,
            },
        };
        let (name, about, pins, heavy_light) = match k {
            1 => (
                "course-cpu-1",
                "course case 1: similar busy loads, two per pCPU already: change nothing",
                Pins::RoundRobin,
                false,
            ),
            2 => (
                "course-cpu-2",
                "course case 2: similar busy loads, all on pCPU 0: two per pCPU, then leave them",
                Pins::AllOnZero,
                false,
            ),
            _ => (
                "course-cpu-3",
                "course case 3: half heavy, half light, scattered pins: one of each per pCPU",
                Pins::Scattered,
                true,
            ),
        };
        let vms = (0..n)
            .map(|i| {
                let load = if heavy_light && i % 2 == 1 {
                    COURSE_LIGHT_PCT
                } else {
                    100.0
                };
                let mut vm = lab.vm(i, pins, Trace::flat(load), Trace::flat(IDLE_MIB));
                (vm.memory_mib, vm.max_mib) = COURSE_VM_MIB;
                vm
            })
            .collect();
        Scenario {
            name,
            about,
            duration_s: 40.0,
            phases_s: vec![0.0],
            host: lab.roomy_host(),
            vms,
            expect: if k == 1 {
                Expect::LeaveAlone
            } else {
                Expect::EvenPlacement
            },
        }
    }

    /// The course's memory case `k`: only vm-1 consumes, up to its maximum,
    /// then frees (1); all four consume at once, then stop (2); vm-1 and vm-2
    /// consume, vm-1 stops while vm-2 goes on (3).
    fn course_mem(&self, k: u32) -> Scenario {
        let lab = Lab {
            scale: Scale {
                pcpus: self.scale.pcpus,
                vms: 4,
            },
        };
        let start = COURSE_SETTLE_S;
        // Up to `peak_mib` at `rate` MiB/s, held `hold_s`, then freed.
        let hump = |rate: f64, peak_mib: f64, hold_s: f64| {
            let full = start + peak_mib / rate;
            Trace::new(&[
                (start, IDLE_MIB),
                (full, peak_mib),
                (full + hold_s, peak_mib),
                (full + hold_s, IDLE_MIB),
            ])
        };
        let (name, about, loads): (&'static str, &'static str, Vec<Trace>) = match k {
            1 => (
                "course-mem-1",
                "course case 1: vm-1 consumes up to its maximum, then frees",
                vec![hump(40.0, 1700.0, 5.0)],
            ),
            2 => (
                "course-mem-2",
                "course case 2: all four consume at once, then stop",
                (0..4).map(|_| hump(30.0, 900.0, 5.0)).collect(),
            ),
            _ => (
                "course-mem-3",
                "course case 3: vm-1 and vm-2 consume; vm-1 stops while vm-2 goes on",
                vec![hump(40.0, 900.0, 0.0), hump(40.0, 1600.0, 5.0)],
            ),
        };
        let end = loads
            .iter()
            .map(|t| t.points().last().map_or(0.0, |p| p.0))
            .fold(0.0, f64::max);
        let vms = (0..4)
            .map(|i| {
                let load = loads.get(i).cloned().unwrap_or(Trace::flat(IDLE_MIB));
                let mut vm = lab.quiet_vm(i, load);
                (vm.memory_mib, vm.max_mib) = COURSE_VM_MIB;
                vm
            })
            .collect();
        Scenario {
            name,
            about,
            duration_s: end + COURSE_RECLAIM_S,
            phases_s: vec![0.0],
            host: lab.roomy_host(),
            vms,
            expect: Expect::MemoryRules,
        }
    }

    /// A two-thread burst on a one-vCPU VM that may grow to every pCPU.
    fn hotplug(&self) -> Scenario {
        let burst = Trace::steps(&[(0.0, IDLE_PCT), (10.0, 180.0), (50.0, 10.0)]);
        let vms = (0..self.n())
            .map(|i| {
                let cpu = if i == 0 {
                    burst.clone()
                } else {
                    Trace::flat(IDLE_PCT)
                };
                let mut vm = self.vm(i, Pins::RoundRobin, cpu, Trace::flat(IDLE_MIB));
                vm.vcpus_max = self.scale.pcpus;
                vm
            })
            .collect();
        Scenario {
            name: "hotplug",
            about: "vm-1 runs two busy threads on one vCPU from 10 s to 50 s",
            duration_s: 100.0,
            phases_s: vec![0.0, 10.0, 50.0],
            host: self.roomy_host(),
            vms,
            expect: Expect::Balanced,
        }
    }
}
