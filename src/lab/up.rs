//! `vmlab up N`: check everything, plan, then create/start the VMs, a
//! bounded number at once, and wait until each answers SSH with the lab key.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use super::inventory::{self, Inventory};
use super::provision::{self, PortTaken, Provisioner, remove_file_if_present};
use super::state::{LabState, VmRecord};
use super::template::{self, Shape, Template};
use super::{Lab, accel, keys, lock};
use crate::config::{DEFAULT_PREFIX, Jobs, LabSpec, Network, Settings};
use crate::hypervisor::{DomainInfo, DomainType};
use crate::image::store::{self as image, Image};
use crate::units::Mib;

/// Memory vmlab leaves to the host beyond what its VMs get.
pub const HOST_RESERVE: Mib = Mib(1024);

#[derive(Debug, Clone)]
pub struct UpRequest {
    pub spec: LabSpec,
    pub count: u32,
    /// Wait until every VM answers SSH (`--no-wait` turns it off).
    pub wait_ssh: bool,
}

/// What `up` does to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Create,
    Start,
    /// Already running: only check it answers.
    Check,
    /// A clone back to its just-restored state (`vmlab reset`).
    Reset,
}

/// Where one VM is in its provisioning, for progress output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Queued,
    Disk,
    Define,
    Boot,
    /// A clone restored from its template's saved memory.
    Restore,
    /// A template being made: its guest prepared for saving.
    Quiesce,
    /// A template's memory being saved.
    Save,
    Ssh,
    Ready,
    Started,
    Failed,
}

impl Stage {
    pub fn is_final(self) -> bool {
        matches!(self, Stage::Ready | Stage::Started | Stage::Failed)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Queued => "queued",
            Stage::Disk => "disk",
            Stage::Define => "define",
            Stage::Boot => "boot",
            Stage::Restore => "restore",
            Stage::Quiesce => "quiesce",
            Stage::Save => "save",
            Stage::Ssh => "ssh",
            Stage::Ready => "ready",
            Stage::Started => "started",
            Stage::Failed => "failed",
        })
    }
}

/// The result for one VM; `up` goes on with the others when one fails.
#[derive(Debug)]
pub struct VmOutcome {
    pub name: String,
    pub step: Step,
    /// Restored from a template rather than booted.
    pub cloned: bool,
    pub ssh_port: Option<u16>,
    pub elapsed: Duration,
    pub result: Result<()>,
}

/// What `up` did, and what the user should know about it.
#[derive(Debug)]
pub struct UpReport {
    pub prefix: String,
    pub outcomes: Vec<VmOutcome>,
    /// The template new VMs were cloned from (`--from-snapshot`).
    pub template: Option<TemplateUse>,
    /// Recoveries, moved ports, settings that did not apply, why VMs were
    /// booted instead of cloned.
    pub notes: Vec<String>,
}

/// The template an `up` cloned from.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateUse {
    /// `image@version/shape`.
    pub id: String,
    /// Set when this `up` made it.
    pub made_in_s: Option<f64>,
}

/// Called with (VM name, stage) as each VM advances.
pub type Progress<'a> = &'a (dyn Fn(&str, Stage) + Sync);

/// Decides what to do with `prefix-1..prefix-N`; refuses names held by
/// domains this lab does not own.
pub fn plan(
    prefix: &str,
    count: u32,
    state: &LabState,
    domains: &[DomainInfo],
    owns: impl Fn(&DomainInfo) -> bool,
) -> Result<Vec<(String, Step)>> {
    if count == 0 {
        bail!("the VM count must be at least 1, e.g. `vmlab up 3`");
    }
    let mut steps = Vec::new();
    let mut foreign = Vec::new();
    for i in 1..=count {
        let name = format!("{prefix}-{i}");
        let step = match domains.iter().find(|d| d.name == name) {
            Some(d) if !owns(d) => {
                foreign.push(format!("`{name}`"));
                continue;
            }
            Some(_) if state.get(&name).is_none() => bail!(
                "`{name}` was made by an older vmlab and its settings are lost; remove it with `vmlab down {name}`, then run `vmlab up` again"
            ),
            Some(d) if d.state.is_active() => Step::Check,
            Some(_) => Step::Start,
            None => Step::Create,
        };
        steps.push((name, step));
    }
    if !foreign.is_empty() {
        bail!(
            "domain name(s) {} already taken by VMs vmlab did not create; choose another prefix with --prefix",
            foreign.join(", ")
        );
    }
    Ok(steps)
}

/// Refuses when the VMs to start (each with its own memory) would leave the
/// host under its reserve.
pub fn check_memory(memories: &[Mib], free: Mib) -> Result<()> {
    let need: u64 = memories.iter().map(|m| m.0).sum();
    if memories.is_empty() || need + HOST_RESERVE.0 <= free.0 {
        return Ok(());
    }
    let sizes = match memories {
        [first, rest @ ..] if rest.iter().all(|m| m == first) => {
            format!("{} × {}", memories.len(), first)
        }
        _ => {
            let each: Vec<String> = memories.iter().map(|m| m.0.to_string()).collect();
            format!("{} MiB", each.join(" + "))
        }
    };
    bail!(
        "{sizes} = {need} MiB does not fit: the host has {} MiB free and vmlab keeps {} for it; start fewer VMs or use a smaller --memory",
        free.0,
        HOST_RESERVE
    )
}

/// The settings the user asked for that an existing VM does not have: they
/// only apply when a VM is created.
pub fn differences(given: &Settings, record: &VmRecord) -> Vec<String> {
    let text = |v: &dyn std::fmt::Display| v.to_string();
    let net = |n: Network| format!("{n:?}").to_lowercase();
    let table = [
        (
            "memory",
            text(&record.memory),
            given.memory.map(|v| text(&v)),
        ),
        (
            "max memory",
            text(&record.max_memory),
            given.max_memory.map(|v| text(&v)),
        ),
        ("vCPUs", text(&record.vcpus), given.vcpus.map(|v| text(&v))),
        (
            "max vCPUs",
            text(&record.max_vcpus),
            given.max_vcpus.map(|v| text(&v)),
        ),
        ("image", record.image.clone(), given.image.clone()),
        ("network", net(record.network), given.network.map(net)),
        (
            "balloon autodeflate",
            text(&record.autodeflate),
            given.balloon_autodeflate.map(|v| text(&v)),
        ),
    ];
    table
        .into_iter()
        .filter_map(|(what, has, asked)| {
            let asked = asked.filter(|a| *a != has)?;
            Some(format!("{what} {has} (asked {asked})"))
        })
        .collect()
}

pub fn up(lab: &Lab, req: &UpRequest, progress: Progress) -> Result<UpReport> {
    let spec = &req.spec;
    // Checks that need nothing on disk come first: a refused `up` changes nothing.
    let image = image::load(lab.home, &spec.image)?;
    let domain_type = accel::domain_type(spec.accel)?;
    let node = lab.hv.node()?;
    if spec.max_memory.kib() > node.memory {
        bail!(
            "max memory {} is more than this host has ({}); lower --max-memory",
            spec.max_memory.human(),
            node.memory.mib().human()
        );
    }
    let lab_existed = lab.paths.dir.exists();
    let _change = lock::change(&lab.paths)?;
    let _image_in_use = image::use_lock(lab.home, &spec.image)?;
    let mut prepared = match prepare(lab, req, &image, node.free.mib()) {
        Ok(p) => p,
        Err(e) => {
            if !lab_existed {
                std::fs::remove_dir_all(&lab.paths.dir).ok();
            }
            return Err(e);
        }
    };
    let template = if spec.snapshot && !prepared.new.is_empty() {
        choose_template(lab, spec, &image, domain_type, &mut prepared, progress)?
    } else {
        None
    };
    for (name, _) in &prepared.steps {
        progress(name, Stage::Queued);
    }
    let ctx = Ctx {
        prov: Provisioner {
            lab,
            domain_type,
            prefix: &prepared.prefix,
            pubkey: &prepared.pubkey,
            ssh_timeout: Duration::from_secs(spec.ssh_timeout_s),
        },
        state: Mutex::new(prepared.state),
        notes: Mutex::new(prepared.notes),
        wait_ssh: req.wait_ssh,
        progress,
    };
    // Clones (and VMs already running) only: restores, not boots.
    let restores = template.is_some()
        && prepared
            .steps
            .iter()
            .all(|(_, step)| matches!(step, Step::Create | Step::Check));
    let jobs = if restores {
        spec.jobs.for_restores(prepared.steps.len())
    } else {
        spec.jobs
    };
    let outcomes = ctx.run_all(&prepared.steps, jobs);
    Ok(UpReport {
        prefix: prepared.prefix.clone(),
        outcomes,
        template,
        notes: ctx.notes.into_inner().unwrap(),
    })
}

/// Lets the VMs' threads start one at a time, in order, as [`Jobs`] allows.
#[derive(Default)]
struct Gate {
    /// (next to start, running).
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl Gate {
    fn enter(&self, i: usize, total: usize, jobs: Jobs) {
        let mut state = self.state.lock().unwrap();
        while !(state.0 == i && jobs.may_start(state.1, total - i)) {
            state = self.changed.wait(state).unwrap();
        }
        *state = (i + 1, state.1 + 1);
        self.changed.notify_all();
    }

    fn leave(&self) {
        self.state.lock().unwrap().1 -= 1;
        self.changed.notify_all();
    }
}

/// What `prepare` settled before any VM is touched.
struct Prepared {
    prefix: String,
    steps: Vec<(String, Step)>,
    /// The VMs this `up` records for the first time.
    new: Vec<String>,
    state: LabState,
    pubkey: String,
    notes: Vec<String>,
}

/// Under the lock: reconcile, plan, check memory, make the lab key, choose
/// ports, record the new VMs.
fn prepare(lab: &Lab, req: &UpRequest, image: &Image, free: Mib) -> Result<Prepared> {
    let spec = &req.spec;
    let Inventory {
        mut state,
        domains,
        unrecoverable: _,
        mut notes,
    } = inventory::take(lab)?;
    let prefix = match (&state.prefix, &spec.prefix) {
        (Some(kept), Some(asked)) if kept != asked && !state.vms.is_empty() => bail!(
            "lab `{}` names its VMs `{kept}-N`; to make `{asked}-N` VMs use another lab (--lab NAME), or remove these first with `vmlab down`",
            lab.name
        ),
        (_, Some(asked)) => asked.clone(),
        (Some(kept), None) => kept.clone(),
        (None, None) => DEFAULT_PREFIX.to_string(),
    };
    let steps = plan(&prefix, req.count, &state, &domains, |d| lab.owns(d))?;
    let mut booting = Vec::new();
    for (name, step) in &steps {
        match (step, state.get(name)) {
            (Step::Create, None) => booting.push(spec.memory),
            (Step::Create | Step::Start, Some(r)) => booting.push(r.memory),
            (Step::Start, None) => {}
            (Step::Check | Step::Reset, _) => {}
        }
        if let (Step::Check | Step::Start, Some(r)) = (step, state.get(name)) {
            let diff = differences(&spec.given, r);
            if !diff.is_empty() {
                notes.push(format!(
                    "{name} keeps {}: settings apply when a VM is created; to apply them, `vmlab down {name}` and `vmlab up` again (its disk starts afresh)",
                    diff.join(", ")
                ));
            }
        }
    }
    check_memory(&booting, free)?;
    let new: Vec<String> = steps
        .iter()
        .filter(|(name, _)| state.get(name).is_none())
        .map(|(name, _)| name.clone())
        .collect();
    // Only the user network forwards a host port to the guest's SSH.
    let mut ports = match spec.network {
        Network::User => provision::free_ports(new.len())?,
        Network::Nat => vec![0; new.len()],
    }
    .into_iter();
    for name in &new {
        state.put(VmRecord {
            name: name.clone(),
            uuid: None,
            image: spec.image.clone(),
            image_version: image.version.clone(),
            network: spec.network,
            ssh_port: ports.next().expect("one port per new VM"),
            memory: spec.memory,
            max_memory: spec.max_memory,
            vcpus: spec.vcpus,
            max_vcpus: spec.max_vcpus,
            ssh_user: image.manifest.ssh_user.clone(),
            autodeflate: spec.balloon_autodeflate,
            template: None,
        });
    }
    state.prefix = Some(prefix.clone());
    let pubkey = keys::ensure(&lab.paths, &lab.name)?;
    state.save(&lab.paths)?;
    Ok(Prepared {
        prefix,
        steps,
        new,
        state,
        pubkey,
        notes,
    })
}

/// The progress line of a template being made.
const TEMPLATE_LINE: &str = "template";

/// For `--from-snapshot`: the template the new VMs are cloned from, made if
/// need be; `None`, with a note saying why, when they boot instead.
fn choose_template(
    lab: &Lab,
    spec: &LabSpec,
    image: &Image,
    domain_type: DomainType,
    prepared: &mut Prepared,
    progress: Progress,
) -> Result<Option<TemplateUse>> {
    let names = prepared.new.join(", ");
    if spec.network != Network::User {
        prepared.notes.push(format!(
            "{names}: booted normally: clones need --network user (their SSH port forward is part of the saved state)"
        ));
        return Ok(None);
    }
    let stage = |stage| progress(TEMPLATE_LINE, stage);
    let maker = template::Maker {
        hv: lab.hv,
        home: lab.home,
        image,
        shape: Shape {
            domain_type,
            memory: spec.memory,
            max_memory: spec.max_memory,
            vcpus: spec.vcpus,
            max_vcpus: spec.max_vcpus,
            autodeflate: spec.balloon_autodeflate,
        },
        ssh_timeout: Duration::from_secs(spec.ssh_timeout_s),
        progress: &stage,
    };
    let ensured = match template::ensure(&maker) {
        Ok(ensured) => ensured,
        Err(why) => {
            progress(TEMPLATE_LINE, Stage::Failed);
            prepared
                .notes
                .push(format!("{names}: booted normally: {why}"));
            return Ok(None);
        }
    };
    if ensured.made {
        progress(TEMPLATE_LINE, Stage::Ready);
    }
    let template = ensured.template;
    for name in &prepared.new {
        let mut record = prepared.state.get(name).cloned().expect("recorded");
        record.template = Some(template.key.clone());
        prepared.state.put(record);
    }
    prepared.state.save(&lab.paths)?;
    prepared.notes.extend(ensured.replaced);
    Ok(Some(TemplateUse {
        id: Template::id(image, &template.key),
        made_in_s: ensured.made.then_some(template.manifest.made_in_s),
    }))
}

/// What every provisioning worker shares (`up`, and `reset`).
pub(super) struct Ctx<'a> {
    pub(super) prov: Provisioner<'a>,
    pub(super) state: Mutex<LabState>,
    pub(super) notes: Mutex<Vec<String>>,
    pub(super) wait_ssh: bool,
    pub(super) progress: Progress<'a>,
}

impl Ctx<'_> {
    /// One thread per VM; they start in order as `jobs` allows (see
    /// [`Jobs::may_start`]); outcomes come back in that order.
    pub(super) fn run_all(&self, steps: &[(String, Step)], jobs: Jobs) -> Vec<VmOutcome> {
        let gate = Gate::default();
        std::thread::scope(|scope| {
            let handles: Vec<_> = steps
                .iter()
                .enumerate()
                .map(|(i, (name, step))| {
                    let gate = &gate;
                    scope.spawn(move || {
                        gate.enter(i, steps.len(), jobs);
                        let outcome = self.run(name, *step);
                        gate.leave();
                        outcome
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a VM's thread panicked"))
                .collect()
        })
    }

    fn run(&self, name: &str, step: Step) -> VmOutcome {
        tracing::info!("{name}: {step:?}");
        let started = Instant::now();
        let result = self.converge(name, step);
        let last = match (&result, self.wait_ssh) {
            (Err(_), _) => Stage::Failed,
            (Ok(_), true) => Stage::Ready,
            (Ok(_), false) => Stage::Started,
        };
        (self.progress)(name, last);
        VmOutcome {
            name: name.to_string(),
            step,
            cloned: *result.as_ref().unwrap_or(&false),
            ssh_port: self
                .record(name)
                .ok()
                .filter(|r| r.network == Network::User)
                .map(|r| r.ssh_port),
            elapsed: started.elapsed(),
            result: result.map(|_| ()),
        }
    }

    /// Brings one VM to running (and answering SSH), doing only what is
    /// missing; returns whether it was restored from a template.
    fn converge(&self, name: &str, step: Step) -> Result<bool> {
        let record = self.record(name)?;
        let vm = self.prov.lab.paths.vm(name);
        let mut cloned = false;
        match step {
            Step::Create => {
                let fresh = !vm.overlay().exists();
                let made = if fresh && record.template.is_some() {
                    self.clone_or_boot(name)
                } else {
                    self.create(&record).map(|()| false)
                };
                match made {
                    Ok(c) => cloned = c,
                    Err(e) => {
                        if fresh {
                            self.prov.discard(name);
                            let mut state = self.state.lock().unwrap();
                            state.remove(name);
                            state.save(&self.prov.lab.paths).ok();
                        }
                        return Err(e);
                    }
                }
            }
            Step::Start if record.template.is_some() && !vm.overlay().exists() => {
                self.note(format!(
                    "{name}: its disk was missing; restored afresh from template `{}`",
                    record.template.as_deref().unwrap_or_default()
                ));
                cloned = self.clone_or_boot(name)?;
            }
            Step::Start => {
                (self.progress)(name, Stage::Disk);
                let made = self.prov.ensure_files(&record)?;
                if !made.is_empty() {
                    self.note(format!(
                        "{name}: its {} was missing; made afresh from image `{}@{}`",
                        made.join(" and "),
                        record.image,
                        record.image_version
                    ));
                    self.prov.define(&record)?;
                }
                self.boot(name)?;
            }
            Step::Reset => {
                (self.progress)(name, Stage::Disk);
                self.prov.lab.hv.destroy(name)?;
                remove_file_if_present(&vm.overlay())?;
                cloned = self.clone_or_boot(name)?;
            }
            Step::Check => {}
        }
        let record = self.record(name)?;
        if self.wait_ssh && record.network == Network::User {
            (self.progress)(name, Stage::Ssh);
            self.prov.wait_for_ssh(&record)?;
        }
        Ok(cloned)
    }

    fn create(&self, record: &VmRecord) -> Result<()> {
        let name = &record.name;
        (self.progress)(name, Stage::Disk);
        self.prov.ensure_files(record)?;
        (self.progress)(name, Stage::Define);
        let uuid = self.prov.define(record)?;
        self.update(name, |r| r.uuid = Some(uuid))?;
        self.boot(name)
    }

    /// A clone whose disk is to be made afresh: restored from its template
    /// and told who it is; when that is impossible, booted from its image
    /// instead, with a note saying why. Returns whether it was restored.
    fn clone_or_boot(&self, name: &str) -> Result<bool> {
        match self.restore_clone(name) {
            Ok(()) => Ok(true),
            Err(why) => {
                self.note(format!(
                    "{name}: booted normally: {}",
                    format!("{why:#}").replace('\n', "; ")
                ));
                self.boot_instead(name)?;
                Ok(false)
            }
        }
    }

    fn restore_clone(&self, name: &str) -> Result<()> {
        let record = self.record(name)?;
        let image = self.prov.image_of(&record)?;
        let key = record
            .template
            .as_deref()
            .expect("only clones are restored");
        let template = template::find(self.prov.lab.hv, &image, key).map_err(|why| anyhow!(why))?;
        (self.progress)(name, Stage::Disk);
        self.prov.ensure_files(&record)?;
        (self.progress)(name, Stage::Define);
        let uuid = self.prov.define(&record)?;
        let mut record = self.update(name, |r| r.uuid = Some(uuid))?;
        (self.progress)(name, Stage::Restore);
        if !provision::port_is_free(record.ssh_port) {
            record = self.move_port(&record)?;
        }
        let started = Instant::now();
        if let Err(e) = self.prov.restore(&record, &template) {
            if e.downcast_ref::<PortTaken>().is_none() {
                return Err(e);
            }
            record = self.move_port(&record)?;
            self.prov.restore(&record, &template)?;
        }
        let restored = started.elapsed();
        self.prov.introduce(&record)?;
        tracing::info!(
            "{name}: restored in {:.2} s, introduced in {:.2} s",
            restored.as_secs_f64(),
            (started.elapsed() - restored).as_secs_f64()
        );
        Ok(())
    }

    /// Makes a clone that could not be restored a booted VM: its domain
    /// stopped, its disk made afresh on its image, its definition without
    /// the clone channel (same UUID).
    fn boot_instead(&self, name: &str) -> Result<()> {
        if self.prov.lab.hv.domain(name)?.is_some() {
            self.prov.lab.hv.destroy(name)?;
        }
        remove_file_if_present(&self.prov.lab.paths.vm(name).overlay())?;
        let record = self.update(name, |r| r.template = None)?;
        self.create(&record)
    }

    /// Starts the domain; when its SSH port turns out to be taken, moves it
    /// to a free one (domain and state) and tries once more.
    fn boot(&self, name: &str) -> Result<()> {
        (self.progress)(name, Stage::Boot);
        let record = self.record(name)?;
        let moved = if record.network == Network::User && !provision::port_is_free(record.ssh_port)
        {
            Some(self.move_port(&record)?)
        } else {
            None
        };
        match self.prov.start(&moved.unwrap_or(record)) {
            Err(e) if e.downcast_ref::<PortTaken>().is_some() => {
                let record = self.record(name)?;
                let record = self.move_port(&record)?;
                self.prov.start(&record)
            }
            other => other,
        }
    }

    fn move_port(&self, record: &VmRecord) -> Result<VmRecord> {
        let port = provision::free_ports(1)?[0];
        self.note(format!(
            "{}: SSH port {} is taken by another program; moved to {port}",
            record.name, record.ssh_port
        ));
        let record = self.update(&record.name, |r| r.ssh_port = port)?;
        self.prov.define(&record)?;
        Ok(record)
    }

    pub(super) fn record(&self, name: &str) -> Result<VmRecord> {
        self.state
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("{name} vanished from the lab state"))
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut VmRecord)) -> Result<VmRecord> {
        let mut state = self.state.lock().unwrap();
        let mut record = state
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow!("{name} vanished from the lab state"))?;
        change(&mut record);
        state.put(record.clone());
        state.save(&self.prov.lab.paths)?;
        Ok(record)
    }

    fn note(&self, note: String) {
        self.notes.lock().unwrap().push(note);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{Mark, PowerState};
    use crate::testutil::vm_record as record;

    fn dom(name: &str, state: PowerState, lab: Option<&str>) -> DomainInfo {
        DomainInfo {
            name: name.into(),
            uuid: "u".into(),
            state,
            mark: lab.map(|lab| Mark {
                lab: lab.into(),
                home: "/h".into(),
                attrs: Default::default(),
            }),
        }
    }

    fn mine(d: &DomainInfo) -> bool {
        d.mark.as_ref().is_some_and(|m| m.lab == "default")
    }

    #[test]
    fn plan_creates_missing_starts_stopped_checks_running() {
        let mut state = LabState::default();
        state.put(record("vm-1"));
        state.put(record("vm-2"));
        state.put(record("vm-3"));
        let domains = [
            dom("vm-1", PowerState::Running, Some("default")),
            dom("vm-2", PowerState::Shutoff, Some("default")),
        ];
        let steps = plan("vm", 4, &state, &domains, mine).unwrap();
        let expected = [
            ("vm-1", Step::Check),
            ("vm-2", Step::Start),
            // A record whose domain vanished is created again.
            ("vm-3", Step::Create),
            ("vm-4", Step::Create),
        ];
        assert_eq!(steps, expected.map(|(n, s)| (n.to_string(), s)));
    }

    #[test]
    fn plan_refuses_foreign_and_other_labs_domains() {
        let domains = [
            dom("vm-2", PowerState::Running, None),
            dom("vm-3", PowerState::Shutoff, Some("other")),
        ];
        let err = plan("vm", 3, &LabState::default(), &domains, mine)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "domain name(s) `vm-2`, `vm-3` already taken by VMs vmlab did not create; choose another prefix with --prefix"
        );
        assert!(plan("vm", 0, &LabState::default(), &[], mine).is_err());
    }

    #[test]
    fn memory_check_keeps_the_reserve() {
        check_memory(&[Mib(512); 3], Mib(3 * 512 + HOST_RESERVE.0)).unwrap();
        let err = check_memory(&[Mib(512); 3], Mib(3 * 512 + HOST_RESERVE.0 - 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("3 × 512 MiB = 1536 MiB does not fit"),
            "{err}"
        );
        let err = check_memory(&[Mib(4096), Mib(512)], Mib(4000))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("4096 + 512 MiB = 4608 MiB does not fit: the host has 4000 MiB free"),
            "{err}"
        );
        check_memory(&[], Mib(0)).unwrap();
    }

    #[test]
    fn only_settings_asked_for_and_different_are_reported() {
        let r = record("vm-1");
        assert!(differences(&Settings::default(), &r).is_empty());
        let same = Settings {
            memory: Some(r.memory),
            vcpus: Some(r.vcpus),
            ..Default::default()
        };
        assert!(differences(&same, &r).is_empty());
        let asked = Settings {
            memory: Some(Mib(1024)),
            max_vcpus: Some(4),
            network: Some(Network::Nat),
            ..Default::default()
        };
        assert_eq!(
            differences(&asked, &r),
            [
                "memory 512 MiB (asked 1024 MiB)",
                "max vCPUs 2 (asked 4)",
                "network user (asked nat)"
            ]
        );
    }
}
