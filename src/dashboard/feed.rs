//! What the dashboard knows about the run: the recent rows and decisions, the
//! latest row per VM, and whether the source had trouble. One source thread
//! fills it (tailing a live run, or replaying a finished one at its recorded
//! pace); each page connection waits on it for what is new.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::metrics::row::{MetricsRow, pcpu_column_indexes};
use crate::metrics::run::{CsvTail, DECISIONS_CSV, DecisionRecord, METRICS_CSV, Run};

/// Rows kept for a page that connects late (about an hour of 5 VMs at 1 s).
const HISTORY_ROWS: usize = 20_000;
const HISTORY_DECISIONS: usize = 2_000;
/// How often a live run's files are read for new lines.
const TAIL_INTERVAL: Duration = Duration::from_millis(500);

/// Everything the page is sent, in one place.
#[derive(Debug, Default)]
pub struct State {
    /// The run directory's name.
    pub run: String,
    pub mode: &'static str,
    pub pcpus: usize,
    rows: VecDeque<MetricsRow>,
    decisions: VecDeque<DecisionRecord>,
    /// Rows and decisions ever added: a page's position in the stream.
    rows_added: u64,
    decisions_added: u64,
    /// Bumped by every change, errors and the end of a replay included.
    version: u64,
    pub latest: BTreeMap<String, MetricsRow>,
    /// A replay reached the end of the run.
    pub finished: bool,
    /// The source's latest trouble (a malformed line, an unreadable file).
    pub error: Option<String>,
}

/// A page's position: how many rows and decisions it has been sent, and the
/// version of the state it saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Position {
    rows: u64,
    decisions: u64,
    version: u64,
}

/// One message to a page: everything since its position.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    pub run: &'a str,
    pub mode: &'static str,
    pub pcpus: usize,
    pub rows: Vec<&'a MetricsRow>,
    pub decisions: Vec<&'a DecisionRecord>,
    pub finished: bool,
    pub error: Option<&'a str>,
}

impl State {
    fn add(&mut self, rows: Vec<MetricsRow>, decisions: Vec<DecisionRecord>) {
        for row in rows {
            self.latest.insert(row.vm.clone(), row.clone());
            push_capped(&mut self.rows, row, HISTORY_ROWS);
            self.rows_added += 1;
        }
        for decision in decisions {
            push_capped(&mut self.decisions, decision, HISTORY_DECISIONS);
            self.decisions_added += 1;
        }
    }

    pub fn position(&self) -> Position {
        Position {
            rows: self.rows_added,
            decisions: self.decisions_added,
            version: self.version,
        }
    }

    pub fn rows_added(&self) -> u64 {
        self.rows_added
    }

    /// What a page at `since` has not been sent yet (what is still kept of it).
    pub fn message_since(&self, since: Position) -> Message<'_> {
        Message {
            run: &self.run,
            mode: self.mode,
            pcpus: self.pcpus,
            rows: tail(&self.rows, self.rows_added - since.rows),
            decisions: tail(&self.decisions, self.decisions_added - since.decisions),
            finished: self.finished,
            error: self.error.as_deref(),
        }
    }
}

fn push_capped<T>(queue: &mut VecDeque<T>, item: T, cap: usize) {
    if queue.len() == cap {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn tail<T>(queue: &VecDeque<T>, count: u64) -> Vec<&T> {
    let count = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(queue.len());
    queue.range(queue.len() - count..).collect()
}

/// The state, and a condition variable that wakes the pages when it changes.
#[derive(Debug, Default)]
pub struct Feed {
    state: Mutex<State>,
    changed: Condvar,
}

impl Feed {
    pub fn new(run: &str, mode: &'static str) -> Self {
        Self {
            state: Mutex::new(State {
                run: run.to_string(),
                mode,
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        state.version += 1;
        drop(state);
        self.changed.notify_all();
    }

    /// Waits until the state moves past `since`, `timeout` passes or `stop` is set.
    pub fn wait_past(
        &self,
        since: Position,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> MutexGuard<'_, State> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        // Short waits, so a stop is seen within a fraction of a second.
        while state.position() == since && !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let slice = (deadline - now).min(Duration::from_millis(200));
            state = self
                .changed
                .wait_timeout(state, slice)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        state
    }
}

/// Sleeps `duration` unless `stop` is set first; returns whether to go on. A
/// duration beyond what the clock can count waits for `stop`.
fn pause(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now().checked_add(duration);
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    false
}

/// Runs a source (`tail_run`, `replay_run`) and, should it panic, says so in
/// the state: `/healthz` must never report a dead source as one at work.
pub fn guard_source(feed: &Feed, source: impl FnOnce() + std::panic::UnwindSafe) {
    if let Err(panic) = std::panic::catch_unwind(source) {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        feed.update(|state| {
            state.error = Some(format!(
                "the dashboard's {} source stopped ({why}); restart the dashboard, and \
                 please report this as a vmlab bug",
                state.mode
            ));
            state.finished = true;
        });
    }
}

/// Follows a run that another part of vmlab is writing, until `stop`.
pub fn tail_run(feed: &Feed, run_dir: &Path, stop: &AtomicBool) {
    let mut metrics = CsvTail::<MetricsRow>::new(run_dir.join(METRICS_CSV));
    let mut decisions = CsvTail::<DecisionRecord>::new(run_dir.join(DECISIONS_CSV));
    loop {
        let mut errors = Vec::new();
        let new_rows = or_report(metrics.read_new(), &mut errors);
        let new_decisions = or_report(decisions.read_new(), &mut errors);
        errors.extend(metrics.last_error.take());
        errors.extend(decisions.last_error.take());
        errors.append(&mut metrics.notes);
        errors.append(&mut decisions.notes);
        let pcpus = metrics.headers().map(|h| pcpu_column_indexes(h).len());
        if !new_rows.is_empty() || !new_decisions.is_empty() || !errors.is_empty() {
            feed.update(|state| {
                state.pcpus = pcpus.unwrap_or(state.pcpus);
                state.error = errors.pop().or(state.error.take());
                state.add(new_rows, new_decisions);
            });
        }
        if !pause(TAIL_INTERVAL, stop) {
            return;
        }
    }
}

/// The records, or none with the error noted: a live page keeps going.
fn or_report<T>(result: Result<Vec<T>>, errors: &mut Vec<String>) -> Vec<T> {
    result.unwrap_or_else(|e| {
        errors.push(format!("{e:#}"));
        Vec::new()
    })
}

/// Plays a finished run at its recorded pace times `speed`, then marks it
/// finished. What `read_run` left out of the run is the state's error.
pub fn replay_run(feed: &Feed, run: Run, speed: f64, stop: &AtomicBool) {
    feed.update(|state| {
        state.pcpus = run.pcpus;
        state.error = match &run.notes[..] {
            [] => None,
            [note] => Some(note.clone()),
            [.., last] => Some(format!(
                "{} values or records of the run are left out; the last: {last}",
                run.notes.len()
            )),
        };
    });
    let first_t_s = run
        .metrics
        .iter()
        .map(|r| r.t_s)
        .chain(run.decisions.iter().map(|d| d.t_s))
        .min_by(f64::total_cmp)
        .unwrap_or(0.0);
    let mut rows = run.metrics.into_iter().peekable();
    let mut decisions = run.decisions.into_iter().peekable();
    let start = Instant::now();
    loop {
        let next_t_s = [rows.peek().map(|r| r.t_s), decisions.peek().map(|d| d.t_s)]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp);
        let Some(t_s) = next_t_s else { break };
        // Beyond what a Duration holds (a tiny speed): due when the clock ends.
        let due = Duration::try_from_secs_f64(((t_s - first_t_s) / speed).max(0.0))
            .unwrap_or(Duration::MAX);
        if !pause(due.saturating_sub(start.elapsed()), stop) {
            return;
        }
        let due_rows: Vec<MetricsRow> =
            std::iter::from_fn(|| rows.next_if(|r| r.t_s <= t_s)).collect();
        let due_decisions: Vec<DecisionRecord> =
            std::iter::from_fn(|| decisions.next_if(|d| d.t_s <= t_s)).collect();
        feed.update(|state| state.add(due_rows, due_decisions));
    }
    feed.update(|state| state.finished = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vm: &str, t_s: f64) -> MetricsRow {
        MetricsRow {
            vm: vm.into(),
            t_s,
            ..MetricsRow::default()
        }
    }

    #[test]
    fn a_page_gets_what_it_has_not_seen() {
        let mut state = State::default();
        state.add(vec![row("vm-1", 1.0), row("vm-2", 1.0)], vec![]);
        let seen = state.position();
        state.add(vec![row("vm-1", 2.0)], vec![]);
        let message = state.message_since(seen);
        assert_eq!(message.rows, [&row("vm-1", 2.0)]);
        assert_eq!(state.message_since(Position::default()).rows.len(), 3);
        assert_eq!(state.latest["vm-1"].t_s, 2.0);
    }

    #[test]
    fn history_is_capped() {
        let mut state = State::default();
        state.add(
            (0..HISTORY_ROWS + 5)
                .map(|i| row("vm-1", i as f64))
                .collect(),
            vec![],
        );
        let all = state.message_since(Position::default()).rows;
        assert_eq!(all.len(), HISTORY_ROWS);
        assert_eq!(all[0].t_s, 5.0);
    }

    #[test]
    fn a_panicking_source_is_reported_and_marked_finished() {
        let feed = Feed::new("test", "replay");
        guard_source(&feed, || panic!("a bug in a source"));
        let state = feed.lock();
        assert!(state.finished);
        let error = state.error.as_deref().unwrap();
        assert!(
            error.starts_with("the dashboard's replay source stopped (a bug in a source)"),
            "{error}"
        );
    }

    #[test]
    fn a_row_due_beyond_the_clock_waits_for_stop_instead_of_panicking() {
        let run = Run {
            metrics: vec![row("vm-1", 0.0), row("vm-1", 1e9)],
            ..Run::default()
        };
        let (feed, stop) = (Feed::new("test", "replay"), AtomicBool::new(false));
        std::thread::scope(|scope| {
            // 1e9 s at this speed is far beyond what a Duration holds.
            let replay = scope.spawn(|| replay_run(&feed, run, 1e-12, &stop));
            let deadline = Instant::now() + Duration::from_secs(10);
            while feed.lock().rows_added() == 0 {
                assert!(Instant::now() < deadline, "the first row never came");
                std::thread::sleep(Duration::from_millis(10));
            }
            stop.store(true, Ordering::Relaxed);
            replay.join().expect("the replay panicked");
        });
        assert_eq!(feed.lock().rows_added(), 1);
    }

    #[test]
    fn replay_keeps_the_recorded_pace() {
        let run = Run {
            metrics: vec![row("vm-1", 10.0), row("vm-1", 10.5), row("vm-1", 11.0)],
            ..Run::default()
        };
        let feed = Feed::new("test", "replay");
        let start = Instant::now();
        replay_run(&feed, run, 4.0, &AtomicBool::new(false));
        // 1 s of run at 4x: a quarter of a second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
        let state = feed.lock();
        assert!(state.finished);
        assert_eq!(state.rows_added(), 3);
    }
}
