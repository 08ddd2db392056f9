//! libvirt calls the `virt` crate does not wrap, through `virt::sys`.
//! Keep this module small: every function here is reviewed `unsafe`.

use std::ffi::CStr;

use virt::connect::Connect;
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

/// What the host can give new guests without swapping: free plus reclaimable
/// page cache and buffers (`MemAvailable`-like; plain `free` ignores the cache).
pub fn available_kib(stats: &[(String, u64)]) -> Option<u64> {
    let get = |k: &str| stats.iter().find(|(f, _)| f == k).map(|(_, v)| *v);
    Some(get("free")? + get("buffers").unwrap_or(0) + get("cached").unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn available_counts_the_page_cache() {
        let stats = [("total", 100), ("free", 10), ("buffers", 5), ("cached", 40)]
            .map(|(k, v)| (k.to_string(), v));
        assert_eq!(available_kib(&stats), Some(55));
        assert_eq!(available_kib(&stats[..1]), None);
    }
}
