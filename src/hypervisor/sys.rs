//! libvirt calls the `virt` crate does not wrap, through `virt::sys`.
//! Keep this module small: every function here is reviewed `unsafe`.

use std::ffi::CStr;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::sys;

/// `virNodeGetMemoryStats` for all cells: `(field, KiB)` pairs such as
/// `total`, `free`, `buffers`, `cached`. `None` when the driver cannot tell.
pub fn node_memory_stats(conn: &Connect) -> Option<Vec<(String, u64)>> {
    let cells = sys::VIR_NODE_MEMORY_STATS_ALL_CELLS;
    let mut n: std::os::raw::c_int = 0;
    // SAFETY: a null params array with nparams 0 asks libvirt for the count only.
    let rc = unsafe {
        sys::virNodeGetMemoryStats(conn.as_ptr(), cells, std::ptr::null_mut(), &mut n, 0)
    };
    if rc < 0 || n <= 0 {
        return None;
    }
    let mut params = vec![
        sys::_virNodeMemoryStats {
            field: [0; 80],
            value: 0
        };
        n as usize
    ];
    // SAFETY: `params` holds `n` elements, as libvirt was told.
    let rc =
        unsafe { sys::virNodeGetMemoryStats(conn.as_ptr(), cells, params.as_mut_ptr(), &mut n, 0) };
    if rc < 0 {
        return None;
    }
    let stats = params
        .iter()
        .take(n.max(0) as usize)
        .map(|p| {
            // SAFETY: libvirt writes a NUL-terminated name into the 80-byte field.
            let name = unsafe { CStr::from_ptr(p.field.as_ptr()) };
            (name.to_string_lossy().into_owned(), p.value)
        })
        .collect();
    Some(stats)
}

/// `virNodeGetCPUStats` of each host CPU: nanoseconds busy (user + kernel)
/// since boot, by anything: guests, their emulator threads, other programs.
/// `None` when the driver cannot tell.
pub fn node_cpu_busy_ns(conn: &Connect, cpus: u32) -> Option<Vec<u64>> {
    (0..cpus as i32)
        .map(|cpu| {
            let mut n: std::os::raw::c_int = 0;
            // SAFETY: a null params array with nparams 0 asks for the count only.
            let rc = unsafe {
                sys::virNodeGetCPUStats(conn.as_ptr(), cpu, std::ptr::null_mut(), &mut n, 0)
            };
            if rc < 0 || n <= 0 {
                return None;
            }
            let mut params = vec![
                sys::_virNodeCPUStats {
                    field: [0; 80],
                    value: 0
                };
                n as usize
            ];
            // SAFETY: `params` holds `n` elements, as libvirt was told.
            let rc = unsafe {
                sys::virNodeGetCPUStats(conn.as_ptr(), cpu, params.as_mut_ptr(), &mut n, 0)
            };
            if rc < 0 {
                return None;
            }
            let busy = params
                .iter()
                .take(n.max(0) as usize)
                .filter(|p| {
                    // SAFETY: libvirt writes a NUL-terminated name into the 80-byte field.
                    let name = unsafe { CStr::from_ptr(p.field.as_ptr()) };
                    matches!(name.to_bytes(), b"user" | b"kernel")
                })
                .map(|p| p.value)
                .sum();
            Some(busy)
        })
        .collect()
}

/// What the host can give new guests without swapping: free plus reclaimable
/// page cache and buffers (`MemAvailable`-like; plain `free` ignores the cache).
pub fn available_kib(stats: &[(String, u64)]) -> Option<u64> {
    let get = |k: &str| stats.iter().find(|(f, _)| f == k).map(|(_, v)| *v);
    Some(get("free")? + get("buffers").unwrap_or(0) + get("cached").unwrap_or(0))
}

/// One vCPU as virDomainGetVcpus reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuReading {
    pub number: u32,
    pub running: bool,
    pub cpu_time_ns: u64,
    /// The host CPU it ran on last (negative: offline or unknown).
    pub cpu: i32,
    /// Host CPUs it may run on.
    pub affinity: Vec<u32>,
}

/// `virDomainGetVcpus`: time, last pCPU and affinity of each online vCPU.
/// `None` when libvirt cannot tell (the domain is not running).
pub fn domain_vcpus(dom: &Domain, max_vcpus: u32, host_cpus: u32) -> Option<Vec<VcpuReading>> {
    let maplen = host_cpus.div_ceil(8).max(1) as usize;
    let mut info = vec![
        sys::_virVcpuInfo {
            number: 0,
            state: 0,
            cpuTime: 0,
            cpu: 0,
        };
        max_vcpus.max(1) as usize
    ];
    let mut maps = vec![0u8; maplen * info.len()];
    // SAFETY: `info` holds `info.len()` entries and `maps` that many maps of
    // `maplen` bytes, as libvirt is told.
    let n = unsafe {
        sys::virDomainGetVcpus(
            dom.as_ptr(),
            info.as_mut_ptr(),
            info.len() as i32,
            maps.as_mut_ptr(),
            maplen as i32,
        )
    };
    if n < 0 {
        return None;
    }
    Some(
        info.iter()
            .take(n as usize)
            .enumerate()
            .map(|(i, v)| VcpuReading {
                number: v.number,
                running: v.state == sys::VIR_VCPU_RUNNING as i32,
                cpu_time_ns: v.cpuTime,
                cpu: v.cpu,
                affinity: cpus_in_map(&maps[i * maplen..(i + 1) * maplen], host_cpus),
            })
            .collect(),
    )
}

/// The CPUs set in a libvirt CPU map (bit `c % 8` of byte `c / 8`).
fn cpus_in_map(map: &[u8], host_cpus: u32) -> Vec<u32> {
    (0..host_cpus)
        .filter(|c| {
            map.get(*c as usize / 8)
                .is_some_and(|b| b & (1 << (c % 8)) != 0)
        })
        .collect()
}

/// A typed parameter's value, as a number (strings are left out).
fn param_value(p: &sys::_virTypedParameter) -> Option<f64> {
    // SAFETY: the union member read is the one `type_` names.
    unsafe {
        Some(match p.type_ as u32 {
            sys::VIR_TYPED_PARAM_INT => p.value.i as f64,
            sys::VIR_TYPED_PARAM_UINT => p.value.ui as f64,
            sys::VIR_TYPED_PARAM_LLONG => p.value.l as f64,
            sys::VIR_TYPED_PARAM_ULLONG => p.value.ul as f64,
            sys::VIR_TYPED_PARAM_DOUBLE => p.value.d,
            sys::VIR_TYPED_PARAM_BOOLEAN => p.value.b as f64,
            _ => return None,
        })
    }
}

/// One domain's bulk stats: its name and numeric fields.
pub type DomainStats = (String, Vec<(String, f64)>);

/// `virDomainListGetStats` for `doms` in one call: per domain (in the order
/// libvirt answers), its name and numeric fields such as `balloon.unused` or
/// `vcpu.0.time`. The records are freed before returning. `None` when the
/// driver has no bulk stats (test:///).
pub fn bulk_stats(doms: &[&Domain], stats: u32) -> Option<Vec<DomainStats>> {
    if doms.is_empty() {
        return Some(Vec::new());
    }
    // SAFETY: borrowing the raw pointers; `doms` outlives the call.
    let mut ptrs: Vec<sys::virDomainPtr> = doms.iter().map(|d| unsafe { d.as_ptr() }).collect();
    ptrs.push(std::ptr::null_mut());
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `ptrs` is a NULL-terminated array of live domain pointers.
    let n = unsafe { sys::virDomainListGetStats(ptrs.as_mut_ptr(), stats, &mut records, 0) };
    if n < 0 || records.is_null() {
        return None;
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: libvirt returned `n` records; each holds `nparams` params.
        let record = unsafe { &**records.add(i) };
        // SAFETY: the record's domain stays valid until the list is freed.
        let name_ptr = unsafe { sys::virDomainGetName(record.dom) };
        if name_ptr.is_null() {
            continue;
        }
        // SAFETY: libvirt returns a NUL-terminated name it owns.
        let name = unsafe { CStr::from_ptr(name_ptr) }
            .to_string_lossy()
            .into_owned();
        let params = (0..record.nparams.max(0) as usize)
            .filter_map(|j| {
                // SAFETY: j < nparams.
                let p = unsafe { &*record.params.add(j) };
                // SAFETY: libvirt writes a NUL-terminated name into the 80-byte field.
                let field = unsafe { CStr::from_ptr(p.field.as_ptr()) };
                Some((field.to_string_lossy().into_owned(), param_value(p)?))
            })
            .collect();
        out.push((name, params));
    }
    // SAFETY: frees the list libvirt allocated, records and domains included.
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_maps_list_their_cpus() {
        assert_eq!(cpus_in_map(&[0b0000_0101, 0b0000_0010], 10), [0, 2, 9]);
        assert_eq!(cpus_in_map(&[0xff], 3), [0, 1, 2]);
    }

    #[test]
    fn available_counts_the_page_cache() {
        let stats = [("total", 100), ("free", 10), ("buffers", 5), ("cached", 40)]
            .map(|(k, v)| (k.to_string(), v));
        assert_eq!(available_kib(&stats), Some(55));
        assert_eq!(available_kib(&stats[..1]), None);
    }
}
