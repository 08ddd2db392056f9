//! One progress line per VM on a terminal; plain stage lines otherwise (CI logs).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    started: Instant,
    lines: bool,
}

impl Bars {
    /// `lines`: print stage lines when stderr is not a terminal. Under `-q`
    /// there are neither lines nor bars.
    pub fn new(lines: bool) -> Self {
        let lines = lines && super::logging::chatty();
        let multi = (lines && std::io::stderr().is_terminal()).then(MultiProgress::new);
        Self {
            multi,
            bars: Mutex::new(HashMap::new()),
            started: Instant::now(),
            lines,
        }
    }

    /// What `vm` is doing now; `done` ends its line.
    pub fn show(&self, vm: &str, what: &str, done: bool) {
        let Some(multi) = &self.multi else {
            if self.lines {
                eprintln!(
                    "[{:>5.1}s] {vm}: {what}",
                    self.started.elapsed().as_secs_f64()
                );
            }
            return;
        };
        let mut bars = self.bars.lock().unwrap();
        let bar = bars.entry(vm.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:<10} {msg} ({elapsed})")
                    .expect("valid template"),
            );
            bar.set_prefix(vm.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(what.to_string());
        if done {
            bar.finish();
        }
    }

    pub fn clear(&self) {
        if let Some(multi) = &self.multi {
            multi.clear().ok();
        }
    }
}
