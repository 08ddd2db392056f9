//! What vmlab needs from a hypervisor, and nothing more.
//!
//! One implementation, [`libvirt::Libvirt`], on the `virt` crate; tests use it
//! with libvirt's own `test:///` driver rather than a hand-written fake.

pub mod libvirt;
pub mod owner;
pub mod sample;
mod sys;

use anyhow::Result;

pub use owner::Mark;

use crate::units::Kib;

/// Host resources as libvirt sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    pub cpus: u32,
    pub memory: Kib,
    /// What new guests can get: free plus reclaimable page cache.
    pub free: Kib,
}

/// libvirt's domain type: KVM, or QEMU's software emulation (TCG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    Kvm,
    Qemu,
}

/// The domain is gone (undefined, or never existed): callers that follow a
/// lab over time treat it as "drop it", not as a failure.
#[derive(Debug)]
pub struct Vanished(pub String);

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "domain `{}` does not exist; `vmlab status` lists the lab's VMs",
            self.0
        )
    }
}

impl std::error::Error for Vanished {}

/// A domain's state; `shutoff` style names in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Running,
    Paused,
    Shutoff,
    Crashed,
    Other,
}

impl PowerState {
    pub fn is_active(self) -> bool {
        matches!(self, PowerState::Running | PowerState::Paused)
    }
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Shutoff => "shutoff",
            PowerState::Crashed => "crashed",
            PowerState::Other => "other",
        };
        f.write_str(s)
    }
}

/// One domain, ours or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub state: PowerState,
    /// vmlab's mark, `None` for domains vmlab did not create.
    pub mark: Option<Mark>,
}

/// Live resources of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainResources {
    /// `kvm`, `qemu` (TCG) or another driver's type (`test`).
    pub domain_type: String,
    pub vcpus_current: u32,
    pub vcpus_max: u32,
    /// `vcpu → cpuset` as libvirt reports pins (`<vcpupin>`); empty when unpinned.
    pub pins: Vec<(u32, String)>,
    pub memory_actual: Kib,
    pub memory_max: Kib,
    /// From the balloon driver's stats; `None` until the guest reports them.
    pub memory_unused: Option<Kib>,
}

/// Versions of the virtualization stack, for result files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Versions {
    pub libvirt: String,
    pub hypervisor: String,
}

/// Live changes to a running domain. Contracts: each takes effect on the
/// running guest only (a restart returns to the domain's definition); a
/// vanished domain is [`Vanished`].
pub trait Actuator: Send + Sync {
    /// Plugs or unplugs vCPUs up to the domain's maximum. An unplug may stay
    /// pending under TCG ("vcpu unplug request timed out"): read the count back.
    fn set_vcpus(&self, name: &str, count: u32) -> Result<()>;
    /// The balloon target; the guest reaches it within about a second.
    fn set_memory(&self, name: &str, target: Kib) -> Result<()>;
    /// Asks the guest for balloon stats every second again: after a guest
    /// reset or a driver reload they may stop until the period is set anew.
    fn rearm_balloon_stats(&self, name: &str) -> Result<()>;
    /// Where vCPU `vcpu` may run.
    fn pin_vcpu(&self, name: &str, vcpu: u32, pcpus: &crate::units::CpuSet) -> Result<()>;
}

/// The hypervisor operations vmlab uses. Contracts:
/// - `domain` returns `Ok(None)` when no domain has that name;
/// - operations on a named domain that does not exist fail with [`Vanished`];
/// - `destroy` on a domain that is not running succeeds and does nothing;
/// - `define` of a name that exists with the same UUID replaces its
///   configuration (the running instance keeps its own until restarted);
/// - `define` returns the domain's UUID.
pub trait Hypervisor: Send + Sync {
    fn node(&self) -> Result<NodeInfo>;
    fn versions(&self) -> Result<Versions>;
    fn domains(&self) -> Result<Vec<DomainInfo>>;
    fn domain(&self, name: &str) -> Result<Option<DomainInfo>>;
    fn resources(&self, name: &str) -> Result<DomainResources>;
    fn define(&self, xml: &str) -> Result<String>;
    fn start(&self, name: &str) -> Result<()>;
    fn destroy(&self, name: &str) -> Result<()>;
    fn undefine(&self, name: &str) -> Result<()>;
    /// Writes a running domain's memory and device state to `path` (a
    /// libvirt save image) and stops it; the domain stays defined.
    fn save(&self, name: &str, path: &std::path::Path) -> Result<()>;
    /// Runs the domain a save image describes from its saved state. A
    /// defined domain of that name and UUID takes it as its live state and
    /// keeps its own definition.
    fn restore(&self, path: &std::path::Path) -> Result<()>;
}
