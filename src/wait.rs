//! Waiting that a stop request cuts short, and backing off after failures:
//! every loop that sleeps between rounds (the manager, the monitor and its
//! reporters, a scenario's loads) waits here.

use std::time::{Duration, Instant};

/// How often a wait looks at its stop condition: short enough that Ctrl-C
/// feels immediate, long enough to cost nothing.
const STEP: Duration = Duration::from_millis(50);

/// Sleeps until `deadline`; returns `true` as soon as `stop()` holds (the
/// wait was cut short), `false` when the deadline came.
pub fn cut_short(deadline: Instant, stop: &dyn Fn() -> bool) -> bool {
    loop {
        if stop() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(STEP));
    }
}

/// A wait that doubles after each failure, up to `max`, and starts again
/// from `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long.
    pub fn wait(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_wait_ends_at_its_deadline_or_when_stopped() {
        let started = Instant::now();
        assert!(!cut_short(started + Duration::from_millis(80), &|| false));
        assert!(started.elapsed() >= Duration::from_millis(80));
        let stop = AtomicBool::new(true);
        let started = Instant::now();
        assert!(cut_short(started + Duration::from_secs(60), &|| stop
            .load(Ordering::SeqCst)));
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn backoff_doubles_up_to_its_limit_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let waits: Vec<u64> = (0..5).map(|_| b.wait().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.wait(), Duration::from_secs(1));
    }
}
