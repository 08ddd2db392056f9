//! `--repeat K` or `--repeat auto[:MAX]`: how often each cell runs. `auto`
//! repeats a cell until the main metric is steady in every VM, as the
//! Phoronix Test Suite does with its standard deviation: at least
//! [`AUTO_MIN`] runs, then stop once the coefficient of variation of the
//! workload's main metric is at most [`AUTO_CV_TARGET_PCT`] % in every VM
//! that has results, or after MAX runs (default [`AUTO_MAX_DEFAULT`]).

use std::str::FromStr;

use anyhow::{Result, bail};

use super::record::AutoRepeat;
use crate::stats::cv_pct;
use crate::workload::manifest::Workload;

/// The CV a cell must reach under `--repeat auto`.
pub const AUTO_CV_TARGET_PCT: f64 = 3.0;
/// Runs before a CV counts (two values say little about a spread).
pub const AUTO_MIN: u32 = 3;
/// `--repeat auto` without `:MAX`.
pub const AUTO_MAX_DEFAULT: u32 = 10;
/// The most runs per cell either way.
const MAX: u32 = 1000;

/// How often each cell runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Times(u32),
    Auto { max: u32 },
}

impl Repeat {
    /// The most runs a cell may take.
    pub fn max(self) -> u32 {
        match self {
            Self::Times(n) | Self::Auto { max: n } => n,
        }
    }

    pub fn auto(self) -> Option<AutoRepeat> {
        match self {
            Self::Times(_) => None,
            Self::Auto { max } => Some(AutoRepeat {
                cv_target_pct: AUTO_CV_TARGET_PCT,
                min: AUTO_MIN.min(max),
                max,
            }),
        }
    }

    /// `auto` needs the metric it watches: the workload's `[output] main`.
    pub fn check(self, workload: &Workload) -> Result<()> {
        if self.auto().is_some() && workload.output.main.is_none() {
            bail!(
                "`{}` declares no main metric (`main` under `[output]` in its workload.toml), so `--repeat {self}` has nothing to watch; give a count, e.g. `--repeat 5`",
                workload.name
            );
        }
        Ok(())
    }

    /// Whether a cell that has run `done` times is finished, given the main
    /// metric's values of each VM so far (VMs whose runs all failed have
    /// none and do not hold the others up).
    pub fn finished(self, done: u32, per_vm: &[Vec<f64>]) -> bool {
        match self.auto() {
            None => done >= self.max(),
            Some(auto) => {
                done >= auto.max
                    || (done >= auto.min
                        && per_vm.iter().filter(|v| !v.is_empty()).all(|values| {
                            cv_pct(values).is_some_and(|cv| cv <= auto.cv_target_pct)
                        }))
            }
        }
    }
}

impl FromStr for Repeat {
    type Err = String;

    /// `3`, `auto`, `auto:20`.
    fn from_str(text: &str) -> Result<Self, String> {
        let count = |n: &str| match n.parse::<u32>() {
            Ok(n) if (1..=MAX).contains(&n) => Ok(n),
            _ => Err(format!(
                "`{text}` is not a repeat count; give 1 to {MAX}, `auto` or `auto:MAX` (e.g. auto:10)"
            )),
        };
        match text.strip_prefix("auto") {
            Some("") => Ok(Self::Auto {
                max: AUTO_MAX_DEFAULT,
            }),
            Some(rest) => match rest.strip_prefix(':') {
                Some(max) => Ok(Self::Auto { max: count(max)? }),
                None => count(text).map(Self::Times),
            },
            None => count(text).map(Self::Times),
        }
    }
}

impl std::fmt::Display for Repeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Times(n) => write!(f, "{n}"),
            Self::Auto { max } => write!(f, "auto:{max}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_auto_parse_and_bad_ones_say_what_to_give() {
        assert_eq!("3".parse(), Ok(Repeat::Times(3)));
        assert_eq!("auto".parse(), Ok(Repeat::Auto { max: 10 }));
        assert_eq!("auto:25".parse(), Ok(Repeat::Auto { max: 25 }));
        for bad in ["0", "auto:0", "auto:", "auto10", "auto:x", "1001", "-1", ""] {
            assert_eq!(
                bad.parse::<Repeat>(),
                Err(format!(
                    "`{bad}` is not a repeat count; give 1 to 1000, `auto` or `auto:MAX` (e.g. auto:10)"
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn auto_stops_when_every_vm_is_steady_or_at_max() {
        let auto = Repeat::Auto { max: 10 };
        let steady = vec![100.0, 101.0, 99.0]; // CV 1 %
        let noisy = vec![100.0, 120.0, 80.0]; // CV 20 %
        assert!(
            !auto.finished(2, &[vec![100.0, 100.0]]),
            "fewer than 3 runs"
        );
        assert!(auto.finished(3, &[steady.clone(), steady.clone()]));
        assert!(!auto.finished(3, &[steady.clone(), noisy.clone()]));
        assert!(
            auto.finished(10, std::slice::from_ref(&noisy)),
            "MAX reached"
        );
        // A VM whose runs all failed does not hold the cell; one result is no spread.
        assert!(auto.finished(3, &[steady.clone(), vec![]]));
        assert!(!auto.finished(3, &[steady, vec![100.0]]));
        // auto:2 stops at 2 whatever the spread.
        assert!(Repeat::Auto { max: 2 }.finished(2, &[noisy]));
        assert!(Repeat::Times(3).finished(3, &[]));
        assert!(!Repeat::Times(3).finished(2, &[]));
    }

    #[test]
    fn auto_is_refused_for_a_workload_without_a_main_metric() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut stream = crate::workload::manifest::load(&dir, "stream").unwrap();
        assert!(Repeat::Auto { max: 10 }.check(&stream).is_ok());
        stream.output.main = None;
        assert!(Repeat::Times(3).check(&stream).is_ok());
        assert_eq!(
            Repeat::Auto { max: 5 }
                .check(&stream)
                .unwrap_err()
                .to_string(),
            "`stream` declares no main metric (`main` under `[output]` in its workload.toml), so `--repeat auto:5` has nothing to watch; give a count, e.g. `--repeat 5`"
        );
    }
}
