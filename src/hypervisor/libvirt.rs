//! [`Hypervisor`] on libvirt through the `virt` crate.

use anyhow::{Context, Result, anyhow};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

use super::sample::{
    BalloonSample, HostSample, Sampler, Snapshot, VcpuSample, VmSample, monotonic_s,
};
use super::{
    Actuator, DomainInfo, DomainResources, Hypervisor, Mark, NodeInfo, PowerState, Vanished,
    Versions, owner,
};
use crate::units::{CpuSet, Kib};

/// How to get a local libvirtd answering.
pub const START_LIBVIRT: &str =
    "start the daemons with `sudo virtlogd -d && sudo libvirtd -d` (or run scripts/setup)";

pub struct Libvirt {
    conn: Connect,
}

impl Libvirt {
    /// Connects to `uri`; the error says how to start libvirtd.
    pub fn connect(uri: &str) -> Result<Self> {
        // libvirt prints every error to stderr otherwise; ours carry the message.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| {
            anyhow!(
                "cannot connect to libvirt at `{uri}`: {}; {START_LIBVIRT}, or pick another URI with --connect",
                e.message()
            )
        })?;
        tracing::debug!("connected to libvirt at {uri}");
        Ok(Self { conn })
    }

    fn lookup(&self, name: &str) -> Result<Option<Domain>> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code().to_raw() == sys::VIR_ERR_NO_DOMAIN => Ok(None),
            Err(e) => Err(anyhow!("looking up domain `{name}`: {}", e.message())),
        }
    }

    fn get(&self, name: &str) -> Result<Domain> {
        self.lookup(name)?
            .ok_or_else(|| Vanished(name.to_string()).into())
    }

    fn info_of(dom: &Domain) -> Result<DomainInfo> {
        let name = dom
            .name()
            .map_err(|e| anyhow!("reading a domain's name: {}", e.message()))?;
        let (state, _) = dom
            .state()
            .map_err(|e| anyhow!("reading the state of `{name}`: {}", e.message()))?;
        let mark = dom
            .metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(owner::NAMESPACE),
                0,
            )
            .ok()
            .and_then(|xml| Mark::parse(&xml));
        Ok(DomainInfo {
            uuid: dom
                .uuid_string()
                .map_err(|e| anyhow!("reading the UUID of `{name}`: {}", e.message()))?,
            state: power_state(state.to_raw()),
            mark,
            name,
        })
    }
}

fn power_state(state: sys::virDomainState) -> PowerState {
    match state {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => PowerState::Running,
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => PowerState::Paused,
        sys::VIR_DOMAIN_SHUTOFF | sys::VIR_DOMAIN_SHUTDOWN => PowerState::Shutoff,
        sys::VIR_DOMAIN_CRASHED => PowerState::Crashed,
        _ => PowerState::Other,
    }
}

/// `<vcpupin vcpu='0' cpuset='1'/>` elements of a domain's live XML.
pub fn parse_pins(xml: &str) -> Result<Vec<(u32, String)>> {
    let doc = roxmltree::Document::parse(xml).context("libvirt returned unparsable domain XML")?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name("vcpupin"))
        .filter_map(|n| {
            Some((
                n.attribute("vcpu")?.parse().ok()?,
                n.attribute("cpuset")?.to_string(),
            ))
        })
        .collect())
}

impl Hypervisor for Libvirt {
    fn node(&self) -> Result<NodeInfo> {
        let info = self
            .conn
            .node_info()
            .map_err(|e| anyhow!("reading host info: {}", e.message()))?;
        let stats = super::sys::node_memory_stats(&self.conn);
        let available = stats.as_deref().and_then(super::sys::available_kib);
        // virNodeGetInfo's memory can disagree with the kernel's (seen here:
        // 11.2 GiB of 23.5); the node memory stats' total is MemTotal.
        let total_kib = stats
            .as_deref()
            .and_then(|s| s.iter().find(|(k, _)| k == "total").map(|(_, v)| *v))
            .unwrap_or(info.memory);
        let free_kib = match (available, self.conn.free_memory()) {
            (Some(kib), _) => kib,
            (None, Ok(bytes)) => bytes / 1024,
            // Some drivers (test:///) cannot tell: estimate as total minus what running domains hold.
            (None, Err(_)) => {
                let running = self
                    .conn
                    .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                    .map_err(|e| anyhow!("listing domains: {}", e.message()))?;
                let held: u64 = running
                    .iter()
                    .filter_map(|d| d.info().ok())
                    .map(|i| i.memory)
                    .sum();
                info.memory.saturating_sub(held)
            }
        };
        Ok(NodeInfo {
            cpus: info.cpus,
            memory: Kib(total_kib),
            free: Kib(free_kib),
        })
    }

    fn versions(&self) -> Result<Versions> {
        let dotted = |v: u32| format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000);
        let libvirt = self
            .conn
            .lib_version()
            .map_err(|e| anyhow!("reading libvirt's version: {}", e.message()))?;
        let hypervisor = self
            .conn
            .hyp_version()
            .map_err(|e| anyhow!("reading the hypervisor's version: {}", e.message()))?;
        Ok(Versions {
            libvirt: dotted(libvirt),
            hypervisor: dotted(hypervisor),
        })
    }

    fn domains(&self) -> Result<Vec<DomainInfo>> {
        let doms = self
            .conn
            .list_all_domains(0)
            .map_err(|e| anyhow!("listing domains: {}", e.message()))?;
        let mut infos = doms.iter().map(Self::info_of).collect::<Result<Vec<_>>>()?;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }

    fn domain(&self, name: &str) -> Result<Option<DomainInfo>> {
        self.lookup(name)?.as_ref().map(Self::info_of).transpose()
    }

    fn resources(&self, name: &str) -> Result<DomainResources> {
        let dom = self.get(name)?;
        let err = |what: &str, e: virt::error::Error| {
            anyhow!("reading {what} of `{name}`: {}", e.message())
        };
        let info = dom.info().map_err(|e| err("info", e))?;
        let active = dom.is_active().map_err(|e| err("state", e))?;
        let live = if active {
            sys::VIR_DOMAIN_AFFECT_LIVE
        } else {
            sys::VIR_DOMAIN_AFFECT_CONFIG
        };
        let vcpus_current = dom.vcpus_flags(live).map_err(|e| err("vCPUs", e))?;
        let vcpus_max = dom
            .vcpus_flags(live | sys::VIR_DOMAIN_VCPU_MAXIMUM)
            .map_err(|e| err("max vCPUs", e))?;
        let xml = dom.xml_desc(0).map_err(|e| err("XML", e))?;
        let mut unused = None;
        let mut actual = info.memory;
        if active && let Ok(stats) = dom.memory_stats(0) {
            for s in stats {
                match s.tag {
                    sys::VIR_DOMAIN_MEMORY_STAT_UNUSED => unused = Some(s.val),
                    sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON => actual = s.val,
                    _ => {}
                }
            }
        }
        let domain_type = roxmltree::Document::parse(&xml)
            .ok()
            .and_then(|d| d.root_element().attribute("type").map(str::to_string))
            .unwrap_or_default();
        Ok(DomainResources {
            domain_type,
            vcpus_current,
            vcpus_max,
            pins: parse_pins(&xml)?,
            memory_actual: Kib(actual),
            memory_max: Kib(info.max_mem),
            memory_unused: unused.map(Kib),
        })
    }

    fn define(&self, xml: &str) -> Result<String> {
        let dom = self
            .conn
            .define_domain_xml(xml)
            .map_err(|e| anyhow!("defining domain: {}", e.message()))?;
        dom.uuid_string()
            .map_err(|e| anyhow!("reading the new domain's UUID: {}", e.message()))
    }

    fn start(&self, name: &str) -> Result<()> {
        tracing::debug!("libvirt: start {name}");
        self.get(name)?
            .create()
            .map_err(|e| anyhow!("starting `{name}`: {}", e.message()))?;
        Ok(())
    }

    fn destroy(&self, name: &str) -> Result<()> {
        tracing::debug!("libvirt: destroy {name}");
        let dom = self.get(name)?;
        if dom.is_active().unwrap_or(false) {
            dom.destroy()
                .map_err(|e| anyhow!("stopping `{name}`: {}", e.message()))?;
        }
        Ok(())
    }

    fn undefine(&self, name: &str) -> Result<()> {
        tracing::debug!("libvirt: undefine {name}");
        self.get(name)?
            .undefine()
            .map_err(|e| anyhow!("undefining `{name}`: {}", e.message()))
    }

    fn save(&self, name: &str, path: &std::path::Path) -> Result<()> {
        tracing::debug!("libvirt: save {name} {}", path.display());
        let dom = self.get(name)?;
        let to = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .context("a save path with a NUL byte")?;
        // Not wrapped by `virt`. SAFETY: a live domain handle, a NUL-terminated
        // path, no replacement XML (NULL), plain flags.
        let rc = unsafe {
            sys::virDomainSaveFlags(
                dom.as_ptr(),
                to.as_ptr(),
                std::ptr::null(),
                sys::VIR_DOMAIN_SAVE_RUNNING,
            )
        };
        if rc < 0 {
            let e = virt::error::Error::last_error();
            return Err(anyhow!(
                "saving `{name}` to {}: {}",
                path.display(),
                e.message()
            ));
        }
        Ok(())
    }

    fn restore(&self, path: &std::path::Path) -> Result<()> {
        tracing::debug!("libvirt: restore {}", path.display());
        let from = path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        self.conn
            .restore_domain_flags(from, None, sys::VIR_DOMAIN_SAVE_RUNNING)
            .map_err(|e| anyhow!("restoring {}: {}", path.display(), e.message()))
    }
}

impl Sampler for Libvirt {
    fn is_alive(&self) -> bool {
        self.conn.is_alive().unwrap_or(false)
    }

    fn sample(&self, domains: &[String]) -> Result<Snapshot> {
        let node = self.node()?;
        let doms: Vec<Domain> = domains
            .iter()
            .filter_map(|name| self.lookup(name).ok().flatten())
            .filter(|d| d.is_active().unwrap_or(false))
            .collect();
        let refs: Vec<&Domain> = doms.iter().collect();
        let bulk = super::sys::bulk_stats(
            &refs,
            virt::sys::VIR_DOMAIN_STATS_BALLOON | virt::sys::VIR_DOMAIN_STATS_VCPU,
        );
        let at_s = monotonic_s();
        let mut vms = Vec::with_capacity(doms.len());
        for dom in &doms {
            let Ok(name) = dom.name() else { continue };
            let fields = bulk
                .as_ref()
                .and_then(|b| b.iter().find(|(n, _)| *n == name))
                .map(|(_, f)| f.as_slice());
            if let Some(vm) = self.vm_sample(dom, name, fields, node.cpus) {
                vms.push(vm);
            }
        }
        Ok(Snapshot {
            at_s,
            host: HostSample {
                pcpus: node.cpus,
                free_kib: node.free.0,
                total_kib: node.memory.0,
                pcpu_busy_ns: super::sys::node_cpu_busy_ns(&self.conn, node.cpus)
                    .unwrap_or_default(),
            },
            vms,
        })
    }
}

impl Libvirt {
    /// One running domain; `None` when it stopped meanwhile. `bulk` holds its
    /// fields from virDomainListGetStats, when the driver has them.
    fn vm_sample(
        &self,
        dom: &Domain,
        name: String,
        bulk: Option<&[(String, f64)]>,
        host_cpus: u32,
    ) -> Option<VmSample> {
        let field = |key: &str| bulk?.iter().find(|(k, _)| k == key).map(|(_, v)| *v as u64);
        let live = sys::VIR_DOMAIN_AFFECT_LIVE;
        let vcpus_current = field("vcpu.current")
            .map(|v| v as u32)
            .or_else(|| dom.vcpus_flags(live).ok())?;
        let vcpus_max = field("vcpu.maximum")
            .map(|v| v as u32)
            .or_else(|| dom.vcpus_flags(live | sys::VIR_DOMAIN_VCPU_MAXIMUM).ok())?;
        let readings = super::sys::domain_vcpus(dom, vcpus_max, host_cpus)?;
        let info = dom.info().ok()?;
        let balloon = match bulk {
            Some(_) => balloon_sample(&|key| field(&format!("balloon.{key}"))),
            None => {
                let stats = dom.memory_stats(0).unwrap_or_default();
                let tag = |key: &str| match key {
                    "current" => Some(sys::VIR_DOMAIN_MEMORY_STAT_ACTUAL_BALLOON),
                    "unused" => Some(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED),
                    "available" => Some(sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE),
                    "usable" => Some(sys::VIR_DOMAIN_MEMORY_STAT_USABLE),
                    "rss" => Some(sys::VIR_DOMAIN_MEMORY_STAT_RSS),
                    "last-update" => Some(sys::VIR_DOMAIN_MEMORY_STAT_LAST_UPDATE),
                    _ => None,
                };
                balloon_sample(&|key| {
                    let t = tag(key)?;
                    stats.iter().find(|s| s.tag == t).map(|s| s.val)
                })
            }
        };
        Some(VmSample {
            name,
            vcpus: readings
                .into_iter()
                .filter(|r| r.cpu >= 0)
                .map(|r| VcpuSample {
                    cpu_time_ns: r.cpu_time_ns,
                    pcpu: r.cpu as u32,
                    affinity: r.affinity,
                })
                .collect(),
            vcpus_current,
            vcpus_max,
            memory_max_kib: info.max_mem,
            memory_current_kib: info.memory,
            balloon,
        })
    }
}

/// The balloon's report from fields named as in libvirt's bulk stats
/// (`current`, `unused`, …); `None` when the guest reports nothing.
fn balloon_sample(get: &dyn Fn(&str) -> Option<u64>) -> Option<BalloonSample> {
    Some(BalloonSample {
        actual_kib: get("current")?,
        unused_kib: get("unused")?,
        available_kib: get("available")?,
        usable_kib: get("usable"),
        rss_kib: get("rss"),
        last_update_s: get("last-update").unwrap_or(0),
    })
}

impl Actuator for Libvirt {
    fn set_vcpus(&self, name: &str, count: u32) -> Result<()> {
        tracing::debug!("libvirt: setvcpus {name} {count}");
        self.get(name)?
            .set_vcpus_flags(count, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| anyhow!("setting `{name}` to {count} vCPUs: {}", e.message()))
    }

    fn set_memory(&self, name: &str, target: Kib) -> Result<()> {
        tracing::debug!("libvirt: setmem {name} {} KiB", target.0);
        // Not `set_memory`: it drops libvirt's error.
        self.get(name)?
            .set_memory_flags(target.0, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| {
                anyhow!(
                    "setting `{name}`'s memory to {}: {}",
                    target.mib(),
                    e.message()
                )
            })
    }

    fn rearm_balloon_stats(&self, name: &str) -> Result<()> {
        tracing::debug!("libvirt: dommemstat {name} --period 1 --live");
        self.get(name)?
            .set_memory_stats_period(1, sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| anyhow!("re-arming `{name}`'s balloon stats: {}", e.message()))
    }

    fn pin_vcpu(&self, name: &str, vcpu: u32, pcpus: &CpuSet) -> Result<()> {
        tracing::debug!("libvirt: vcpupin {name} {vcpu} {pcpus}");
        let host_cpus = self
            .conn
            .node_info()
            .map_err(|e| anyhow!("reading host info: {}", e.message()))?
            .cpus;
        let map = cpu_bitmap(pcpus, host_cpus);
        self.get(name)?.pin_vcpu(vcpu, &map).map_err(|e| {
            anyhow!(
                "pinning vCPU {vcpu} of `{name}` to {pcpus}: {}",
                e.message()
            )
        })
    }
}

/// libvirt's CPU map: bit `c % 8` of byte `c / 8` is CPU `c`.
fn cpu_bitmap(set: &CpuSet, host_cpus: u32) -> Vec<u8> {
    let mut map = vec![0u8; host_cpus.div_ceil(8) as usize];
    for (cpu, on) in set.to_map(host_cpus).into_iter().enumerate() {
        if on {
            map[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_bitmaps_are_little_endian_bits() {
        let set: CpuSet = "0,2,9".parse().unwrap();
        assert_eq!(cpu_bitmap(&set, 10), [0b0000_0101, 0b0000_0010]);
        assert_eq!(cpu_bitmap(&set, 3), [0b0000_0101]);
    }

    #[test]
    fn pins_come_from_cputune() {
        let xml = "<domain><cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='0-1'/></cputune></domain>";
        assert_eq!(
            parse_pins(xml).unwrap(),
            vec![(0, "1".into()), (1, "0-1".into())]
        );
        assert!(parse_pins("<domain/>").unwrap().is_empty());
    }
}
