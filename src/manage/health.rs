//! What the manager must say about the VMs it manages besides its decisions:
//! a VM that went away or came back, and balloon stats that never came or
//! stopped updating (a hung guest, or a guest whose balloon driver is gone).
//! The policies decide nothing for such a VM, so without these events a
//! broken guest would be managed in silence. Pure: snapshots in, events out.

use std::collections::BTreeMap;

use super::snapshot::Snapshot;

/// Balloon stats older than this (the guest refreshes them every second)
/// mean the guest stopped reporting: a busy TCG guest still reports within
/// a few seconds.
pub const STALE_AFTER_S: f64 = 10.0;

/// Something about one VM worth telling, once, when it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// It was managed and is no longer running (stopped, destroyed, undefined).
    Gone,
    /// It runs again after it was gone.
    Back,
    /// No balloon stats since it was first seen: its memory is left alone.
    NoStats,
    /// Its balloon stats stopped updating `for_s` seconds ago.
    Stale { for_s: f64 },
    /// Its balloon stats update again.
    Fresh,
}

impl Event {
    /// The state before and after, for `decisions.csv`.
    pub fn states(&self) -> (&'static str, &'static str) {
        match self {
            Event::Gone => ("running", "gone"),
            Event::Back => ("gone", "running"),
            Event::NoStats => ("", "no-stats"),
            Event::Stale { .. } => ("fresh", "stale"),
            Event::Fresh => ("stale", "fresh"),
        }
    }

    /// One line for the terminal and the log's `reason`.
    pub fn reason(&self) -> String {
        match self {
            Event::Gone => "it is no longer running: left out until it runs again".into(),
            Event::Back => "it runs again: managed again".into(),
            Event::NoStats => {
                "it reports no balloon stats (no virtio_balloon driver yet?): its memory is left alone"
                    .into()
            }
            Event::Stale { for_s } => format!(
                "its balloon stats stopped updating {for_s:.0} s ago (guest hung, or its balloon driver gone): its memory is left alone; stats period re-armed"
            ),
            Event::Fresh => "its balloon stats update again".into(),
        }
    }
}

/// What was known about each VM at the previous round.
#[derive(Debug, Default)]
pub struct Health {
    vms: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    present: bool,
    last_update_s: u64,
    /// Snapshot time when `last_update_s` last changed (or the VM appeared).
    changed_at_s: f64,
    stale: bool,
    told_no_stats: bool,
}

impl Health {
    /// The events between the previous round and `snap`, per VM.
    pub fn observe(&mut self, snap: &Snapshot) -> Vec<(String, Event)> {
        let mut events = Vec::new();
        for (name, seen) in &mut self.vms {
            if seen.present && !snap.vms.iter().any(|v| &v.name == name) {
                seen.present = false;
                events.push((name.clone(), Event::Gone));
            }
        }
        for vm in &snap.vms {
            let last_update_s = vm.balloon.map_or(0, |b| b.last_update_s);
            let seen = self.vms.entry(vm.name.clone()).or_insert(Seen {
                present: true,
                last_update_s,
                changed_at_s: snap.at_s,
                stale: false,
                told_no_stats: false,
            });
            let mut tell = |e: Event| events.push((vm.name.clone(), e));
            if !seen.present {
                *seen = Seen {
                    present: true,
                    last_update_s,
                    changed_at_s: snap.at_s,
                    stale: false,
                    told_no_stats: seen.told_no_stats,
                };
                tell(Event::Back);
                continue;
            }
            if last_update_s != seen.last_update_s {
                seen.last_update_s = last_update_s;
                seen.changed_at_s = snap.at_s;
                if seen.stale {
                    seen.stale = false;
                    tell(Event::Fresh);
                }
                continue;
            }
            let quiet_s = snap.at_s - seen.changed_at_s;
            if quiet_s < STALE_AFTER_S {
                continue;
            }
            if last_update_s == 0 {
                if !seen.told_no_stats {
                    seen.told_no_stats = true;
                    tell(Event::NoStats);
                }
            } else if !seen.stale {
                seen.stale = true;
                tell(Event::Stale { for_s: quiet_s });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::testkit::{balloon, mem_vm, snapshot};

    fn at(t: f64, vms: &[(&str, u64)]) -> Snapshot {
        snapshot(
            t,
            1,
            vms.iter()
                .map(|(name, update)| mem_vm(name, balloon(1024, 300, *update), 2048))
                .collect(),
        )
    }

    #[test]
    fn a_vm_that_goes_and_comes_back_is_told_once_each_way() {
        let mut h = Health::default();
        assert!(h.observe(&at(0.0, &[("a", 1), ("b", 1)])).is_empty());
        assert_eq!(
            h.observe(&at(2.0, &[("a", 3)])),
            [("b".into(), Event::Gone)]
        );
        assert!(h.observe(&at(4.0, &[("a", 5)])).is_empty(), "told once");
        assert_eq!(
            h.observe(&at(6.0, &[("a", 7), ("b", 1)])),
            [("b".into(), Event::Back)]
        );
    }

    #[test]
    fn stats_that_stop_updating_are_stale_after_a_while_and_fresh_again() {
        let mut h = Health::default();
        h.observe(&at(0.0, &[("a", 100)]));
        assert!(h.observe(&at(2.0, &[("a", 102)])).is_empty());
        assert!(
            h.observe(&at(8.0, &[("a", 102)])).is_empty(),
            "6 s quiet: a busy guest, not yet stale"
        );
        let events = h.observe(&at(12.5, &[("a", 102)]));
        assert_eq!(events, [("a".into(), Event::Stale { for_s: 10.5 })]);
        assert!(h.observe(&at(20.0, &[("a", 102)])).is_empty(), "told once");
        assert_eq!(
            h.observe(&at(22.0, &[("a", 121)])),
            [("a".into(), Event::Fresh)]
        );
    }

    #[test]
    fn a_vm_without_stats_is_told_once() {
        let mut h = Health::default();
        h.observe(&at(0.0, &[("a", 0)]));
        assert!(h.observe(&at(4.0, &[("a", 0)])).is_empty());
        assert_eq!(
            h.observe(&at(11.0, &[("a", 0)])),
            [("a".into(), Event::NoStats)]
        );
        assert!(h.observe(&at(30.0, &[("a", 0)])).is_empty());
        assert!(
            h.observe(&at(31.0, &[("a", 5)])).is_empty(),
            "the first stats are no news"
        );
    }
}
