//! `vmlab up N`: check everything, plan, then create/start the VMs in
//! parallel and wait until each answers SSH with the lab key.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::state::{LabLock, LabState, VmRecord};
use super::{Lab, domain_xml, keys, overlay, seed};
use crate::config::{LabSpec, Network};
use crate::guest::ssh::Guest;
use crate::host::{self, accel};
use crate::hypervisor::{DomainInfo, Owner};
use crate::image::store::{self as image, Image};
use crate::units::mib_to_kib;

/// Memory vmlab leaves to the host beyond what its VMs get.
pub const HOST_RESERVE_MIB: u64 = 1024;

#[derive(Debug, Clone)]
pub struct UpRequest {
    pub spec: LabSpec,
    pub count: u32,
    /// Wait until every VM answers SSH (`--no-wait` turns it off).
    pub wait_ssh: bool,
}

/// What `up` does to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Start,
    /// Already running: only check it answers.
    Check,
}

/// The result for one VM; `up` goes on with the others when one fails.
#[derive(Debug)]
pub struct VmOutcome {
    pub name: String,
    pub step: Step,
    pub ssh_port: Option<u16>,
    pub elapsed: Duration,
    pub result: Result<()>,
}

/// Called with (VM name, stage) as each VM advances.
pub type Progress<'a> = &'a (dyn Fn(&str, &str) + Sync);

/// Decides what to do with `vm-1..vm-N`; refuses names held by foreign domains.
pub fn plan(
    spec: &LabSpec,
    count: u32,
    state: &LabState,
    domains: &[DomainInfo],
    me: &Owner,
) -> Result<Vec<(String, Step)>> {
    if count == 0 {
        bail!("the VM count must be at least 1, e.g. `vmlab up 3`");
    }
    let mut steps = Vec::new();
    let mut foreign = Vec::new();
    for i in 1..=count {
        let name = spec.vm_name(i);
        let domain = domains.iter().find(|d| d.name == name);
        let step = match (state.get(&name), domain) {
            (_, Some(d)) if d.owner.as_ref() != Some(me) => {
                foreign.push(name.clone());
                continue;
            }
            (Some(_), Some(d)) if d.state.is_active() => Step::Check,
            (Some(_), Some(_)) => Step::Start,
            (None, Some(_)) => bail!(
                "domain `{name}` belongs to this lab but its state is lost; remove it with `vmlab down {name}`, then run `vmlab up` again"
            ),
            (_, None) => Step::Create,
        };
        steps.push((name, step));
    }
    if !foreign.is_empty() {
        bail!(
            "domain name(s) {} already taken by VMs vmlab did not create; choose another prefix with --prefix",
            foreign
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(steps)
}

/// Refuses when the VMs to start (each with its own memory) would leave the
/// host under its reserve.
pub fn check_memory(memories_mib: &[u64], free_mib: u64) -> Result<()> {
    let need: u64 = memories_mib.iter().sum();
    if memories_mib.is_empty() || need + HOST_RESERVE_MIB <= free_mib {
        return Ok(());
    }
    let sizes = match memories_mib {
        [first, rest @ ..] if rest.iter().all(|m| m == first) => {
            format!("{} × {first} MiB", memories_mib.len())
        }
        _ => {
            let each: Vec<String> = memories_mib.iter().map(u64::to_string).collect();
            format!("{} MiB", each.join(" + "))
        }
    };
    bail!(
        "{sizes} = {need} MiB does not fit: the host has {free_mib} MiB free and vmlab keeps {HOST_RESERVE_MIB} MiB for it; start fewer VMs or use a smaller --memory"
    )
}

pub fn up(lab: &Lab, req: &UpRequest, progress: Progress) -> Result<Vec<VmOutcome>> {
    let spec = &req.spec;
    // Checks that need nothing on disk come first: a refused `up` changes nothing.
    let image = image::load(lab.home, &spec.image)?;
    let domain_type = accel::domain_type(spec.accel)?;
    let lab_existed = lab.paths.dir.exists();
    let lock = LabLock::acquire(&lab.paths)?;
    let prepared = prepare(lab, req, &image);
    let Prepared {
        steps,
        state,
        pubkey,
    } = match prepared {
        Ok(p) => p,
        Err(e) => {
            if !lab_existed {
                std::fs::remove_dir_all(&lab.paths.dir).ok();
            }
            return Err(e);
        }
    };
    let state = Mutex::new(state);
    let ctx = Ctx {
        lab,
        spec,
        image: &image,
        domain_type,
        pubkey: &pubkey,
        state: &state,
        wait_ssh: req.wait_ssh,
    };
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = steps
            .iter()
            .map(|(name, step)| {
                let ctx = &ctx;
                scope.spawn(move || {
                    let started = Instant::now();
                    let result = ctx.run(name, *step, progress);
                    progress(
                        name,
                        if result.is_err() {
                            "failed"
                        } else if ctx.wait_ssh {
                            "ready"
                        } else {
                            "started"
                        },
                    );
                    let ssh_port = ctx.state.lock().unwrap().get(name).map(|r| r.ssh_port);
                    VmOutcome {
                        name: name.clone(),
                        step: *step,
                        ssh_port,
                        elapsed: started.elapsed(),
                        result,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("provisioning thread panicked"))
            .collect()
    });
    drop(lock);
    Ok(outcomes)
}

/// What `prepare` settled before any VM is touched.
struct Prepared {
    steps: Vec<(String, Step)>,
    state: LabState,
    pubkey: String,
}

/// Under the lock: plan, check memory, make the lab key, reserve ports,
/// record the new VMs.
fn prepare(lab: &Lab, req: &UpRequest, image: &Image) -> Result<Prepared> {
    let spec = &req.spec;
    let mut state = LabState::load(&lab.paths)?;
    let domains = lab.hv.domains()?;
    let steps = plan(spec, req.count, &state, &domains, &lab.owner())?;
    // A stopped VM comes back with the memory it was created with.
    let booting: Vec<u64> = steps
        .iter()
        .filter_map(|(name, step)| match step {
            Step::Create => Some(spec.memory_mib),
            Step::Start => state.get(name).map(|r| r.memory_mib),
            Step::Check => None,
        })
        .collect();
    check_memory(&booting, lab.hv.node()?.free_kib / 1024)?;
    let creating: Vec<&String> = steps
        .iter()
        .filter(|(_, s)| *s == Step::Create)
        .map(|(n, _)| n)
        .collect();
    // Only the user network forwards a host port to the guest's SSH.
    let ports = match spec.network {
        Network::User => free_ports(creating.len())?,
        Network::Nat => vec![0; creating.len()],
    };
    for (name, ssh_port) in creating.into_iter().zip(ports) {
        state.put(VmRecord {
            name: name.clone(),
            uuid: state.get(name).and_then(|r| r.uuid.clone()),
            image: spec.image.clone(),
            network: spec.network,
            ssh_port,
            memory_mib: spec.memory_mib,
            max_memory_mib: spec.max_memory_mib,
            vcpus: spec.vcpus,
            max_vcpus: spec.max_vcpus,
            ssh_user: image.manifest.ssh_user.clone(),
        });
    }
    let pubkey = keys::ensure(&lab.paths, &lab.name)?;
    state.save(&lab.paths)?;
    Ok(Prepared {
        steps,
        state,
        pubkey,
    })
}

/// Distinct free ports on 127.0.0.1, all held until every one is chosen.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port on 127.0.0.1")
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// What every provisioning thread shares.
struct Ctx<'a> {
    lab: &'a Lab<'a>,
    spec: &'a LabSpec,
    image: &'a Image,
    domain_type: &'static str,
    pubkey: &'a str,
    state: &'a Mutex<LabState>,
    wait_ssh: bool,
}

impl Ctx<'_> {
    fn run(&self, name: &str, step: Step, progress: Progress) -> Result<()> {
        let record = self
            .state
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("{name} vanished from the lab state"))?;
        match step {
            Step::Create => {
                if let Err(e) = self.create(&record, progress) {
                    self.discard(name);
                    return Err(e);
                }
            }
            Step::Start => {
                progress(name, "boot");
                self.lab.hv.start(name)?;
            }
            Step::Check => {}
        }
        if self.wait_ssh && record.network == Network::User {
            progress(name, "ssh");
            self.wait_for_ssh(&record)?;
        }
        Ok(())
    }

    fn create(&self, record: &VmRecord, progress: Progress) -> Result<()> {
        let name = &record.name;
        let vm = self.lab.paths.vm(name);
        std::fs::create_dir_all(&vm.dir)
            .with_context(|| format!("creating {}", vm.dir.display()))?;
        progress(name, "overlay");
        overlay::create(&self.image.disk(), &vm.overlay())?;
        progress(name, "seed");
        seed::write(
            &vm.seed(),
            &format!("vmlab-{}-{name}", self.lab.name),
            name,
            self.pubkey,
        )?;
        let net = match record.network {
            Network::User => "vmlab.net=user",
            Network::Nat => "vmlab.net=dhcp",
        };
        let (uid, gid) = host::uid_gid();
        let xml = domain_xml::render(&domain_xml::DomainSpec {
            name: name.clone(),
            uuid: record.uuid.clone(),
            domain_type: self.domain_type,
            lab: self.lab.name.clone(),
            home: self.lab.home.root().display().to_string(),
            memory_kib: mib_to_kib(record.memory_mib),
            max_memory_kib: mib_to_kib(record.max_memory_mib),
            vcpus: record.vcpus,
            max_vcpus: record.max_vcpus,
            kernel: self.image.kernel(),
            initrd: self.image.initrd(),
            cmdline: self
                .image
                .manifest
                .cmdline
                .as_ref()
                .map(|c| format!("{c} {net}")),
            overlay: vm.overlay(),
            seed: vm.seed(),
            console_log: vm.console(),
            network: record.network,
            ssh_port: record.ssh_port,
            uid,
            gid,
        })?;
        std::fs::write(vm.domain_xml(), &xml)?;
        progress(name, "define");
        let uuid = self
            .lab
            .hv
            .define(&xml)
            .with_context(|| format!("defining {name}"))?;
        self.update(name, |r| r.uuid = Some(uuid))?;
        progress(name, "boot");
        self.lab
            .hv
            .start(name)
            .with_context(|| format!("starting {name}"))
    }

    /// Undoes a failed creation: the domain (only if ours), its files, its record.
    fn discard(&self, name: &str) {
        if let Ok(Some(d)) = self.lab.hv.domain(name)
            && d.owner == Some(self.lab.owner())
        {
            self.lab.hv.destroy(name).ok();
            self.lab.hv.undefine(name).ok();
        }
        std::fs::remove_dir_all(self.lab.paths.vm(name).dir).ok();
        let mut state = self.state.lock().unwrap();
        state.remove(name);
        state.save(&self.lab.paths).ok();
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut VmRecord)) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        let mut record = state
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("{name} vanished from the lab state"))?;
        change(&mut record);
        state.put(record);
        state.save(&self.lab.paths)
    }

    fn wait_for_ssh(&self, record: &VmRecord) -> Result<()> {
        let target = self.lab.ssh_target(record);
        let deadline = Instant::now() + Duration::from_secs(self.spec.ssh_timeout_s);
        let guest = Guest::wait_ready(&target, deadline).map_err(|e| {
            anyhow!(
                "{} did not answer SSH on {} within {} s ({e:#}); last console lines:\n{}\nrun `vmlab up` again to retry, or see `vmlab console {}`",
                record.name,
                target.addr,
                self.spec.ssh_timeout_s,
                self.lab.console_tail(&record.name, 10),
                record.name
            )
        })?;
        let out = guest.exec("true")?;
        if out.status != 0 {
            bail!(
                "{} answers SSH but cannot run commands (exit {})",
                record.name,
                out.status
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::hypervisor::PowerState;

    fn me() -> Owner {
        Owner {
            lab: "default".into(),
            home: "/h".into(),
        }
    }

    fn dom(name: &str, state: PowerState, owner: Option<Owner>) -> DomainInfo {
        DomainInfo {
            name: name.into(),
            uuid: "u".into(),
            state,
            owner,
        }
    }

    use crate::testutil::vm_record as record;

    #[test]
    fn plan_creates_missing_starts_stopped_checks_running() {
        let spec = Settings::default().resolve().unwrap();
        let mut state = LabState::default();
        state.put(record("vm-1"));
        state.put(record("vm-2"));
        let domains = [
            dom("vm-1", PowerState::Running, Some(me())),
            dom("vm-2", PowerState::Shutoff, Some(me())),
        ];
        let steps = plan(&spec, 4, &state, &domains, &me()).unwrap();
        let expected = [
            ("vm-1", Step::Check),
            ("vm-2", Step::Start),
            ("vm-3", Step::Create),
            ("vm-4", Step::Create),
        ];
        assert_eq!(steps, expected.map(|(n, s)| (n.to_string(), s)));
    }

    #[test]
    fn plan_refuses_foreign_and_other_labs_domains() {
        let spec = Settings::default().resolve().unwrap();
        let other_lab = Owner {
            lab: "other".into(),
            ..me()
        };
        let domains = [
            dom("vm-2", PowerState::Running, None),
            dom("vm-3", PowerState::Shutoff, Some(other_lab)),
        ];
        let err = plan(&spec, 3, &LabState::default(), &domains, &me())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("domain name(s) `vm-2`, `vm-3` already taken"),
            "{err}"
        );
        assert!(plan(&spec, 0, &LabState::default(), &[], &me()).is_err());
    }

    #[test]
    fn memory_check_keeps_the_reserve() {
        check_memory(&[512; 3], 3 * 512 + HOST_RESERVE_MIB).unwrap();
        let err = check_memory(&[512; 3], 3 * 512 + HOST_RESERVE_MIB - 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("3 × 512 MiB = 1536 MiB does not fit"),
            "{err}"
        );
        let err = check_memory(&[4096, 512], 4000).unwrap_err().to_string();
        assert!(
            err.starts_with("4096 + 512 MiB = 4608 MiB does not fit: the host has 4000 MiB free"),
            "{err}"
        );
        check_memory(&[], 0).unwrap();
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5).unwrap();
        let unique: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 5);
    }
}
