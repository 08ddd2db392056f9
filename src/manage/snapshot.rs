//! What the manager sees each round: one libvirt sample of the host and its VMs.
//!
//! Everything here is a raw reading (cumulative CPU time, balloon counters);
//! rates come from comparing two snapshots over the time that really passed
//! between them ([`crate::metrics::cpu::CpuUse::between`]), never from the
//! nominal interval.

pub use crate::hypervisor::sample::{
    BalloonSample, HostSample, Snapshot, VcpuSample, VmSample, by_name,
};

/// Balloon stats that are new since `prev`: they exist (`last_update` > 0)
/// and the guest refreshed them. The first sight of a VM is not fresh: there
/// is nothing yet to tell new stats from a report stuck since boot.
pub fn fresh_balloon<'a>(
    prev: Option<&VmSample>,
    cur: &'a VmSample,
) -> Option<(&'a BalloonSample, BalloonSample)> {
    let now = cur.balloon.as_ref()?;
    let before = prev?.balloon?;
    (now.last_update_s > 0 && now.last_update_s > before.last_update_s).then_some((now, before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{balloon, mem_vm};

    #[test]
    fn balloon_stats_are_fresh_only_when_the_guest_refreshed_them() {
        let at = |last_update_s| mem_vm("a", balloon(1024, 300, last_update_s), 2048);
        let (seen, same, newer, none_yet) = (at(100), at(100), at(101), at(0));
        assert!(fresh_balloon(None, &newer).is_none(), "first sight");
        assert!(fresh_balloon(Some(&seen), &same).is_none(), "not advancing");
        assert!(
            fresh_balloon(Some(&none_yet), &none_yet).is_none(),
            "no stats yet"
        );
        let (now, before) = fresh_balloon(Some(&seen), &newer).unwrap();
        assert_eq!((now.last_update_s, before.last_update_s), (101, 100));
        assert_eq!(now.used_kib(), 724 * 1024);
    }
}
