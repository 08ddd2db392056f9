//! The scorecard of `vmlab scenario run`: one line per scenario and
//! manager, pass or fail and the judged figures, for the terminal, as
//! `scorecard.json` and as `scorecard.md`.

use serde::{Deserialize, Serialize};

use super::judge::Figures;
use super::sim::scenario::Expect;
use super::verdict::Verdict;
use crate::host::child::Outcome;
use crate::table::{Align, Table};

/// A host that gives memory while it has this little free breaks the rule.
pub const HOST_FLOOR_MIB: f64 = 200.0;

/// One scenario under one manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub scenario: String,
    /// `yours` (the programs named), `vmlab` (its own policies) or `greedy`
    /// (the course-style baseline).
    pub manager: String,
    /// What the scenario asks: which figures the line shows.
    pub expect: Expect,
    pub verdict: Verdict,
    pub figures: Figures,
    /// How each program the user named ended.
    pub programs: Vec<Outcome>,
    /// The scenario's run directory: the manager's log and the judge's files.
    pub run_dir: String,
}

impl Line {
    /// A scenario that could not be played to the end: a fail, with why.
    pub fn not_played(scenario: &str, manager: &str, expect: Expect, why: &str) -> Line {
        Line {
            scenario: scenario.to_string(),
            manager: manager.to_string(),
            expect,
            verdict: Verdict {
                pass: false,
                failed: vec![format!("not played to the end: {why}")],
                placed_s: None,
                repins_after_placed: 0,
                memory_back_s: None,
            },
            figures: Figures::default(),
            programs: Vec::new(),
            run_dir: String::new(),
        }
    }
}

/// Every line, and whether all passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    pub schema: u32,
    pub pass: bool,
    pub lines: Vec<Line>,
}

impl Scorecard {
    pub fn new(lines: Vec<Line>) -> Scorecard {
        Scorecard {
            schema: 1,
            pass: lines.iter().all(|l| l.verdict.pass),
            lines,
        }
    }

    /// The table, a row per line, then each failure and each program that
    /// misbehaved on a line of its own.
    pub fn text(&self) -> String {
        let mut out = self.table().to_string();
        for note in self.notes() {
            out += &format!("{note}\n");
        }
        out
    }

    /// The same as a Markdown table (for `$GITHUB_STEP_SUMMARY` and papers).
    pub fn markdown(&self) -> String {
        let mut out = self.table().markdown();
        let notes = self.notes();
        if !notes.is_empty() {
            out += "\n";
            for note in notes {
                out += &format!("- {note}\n");
            }
        }
        out
    }

    fn table(&self) -> Table {
        let mut table = Table::new(&[
            ("scenario", Align::Left),
            ("manager", Align::Left),
            ("result", Align::Left),
            ("balanced s", Align::Right),
            ("settled sd", Align::Right),
            ("re-pins after", Align::Right),
            ("min unused MiB", Align::Right),
            ("s under floor", Align::Right),
            ("host floor kept", Align::Left),
            ("OOM kills", Align::Right),
            ("memory back s", Align::Right),
        ]);
        for l in &self.lines {
            table.row(cells(l));
        }
        table
    }

    /// Each broken rule, then each program that misbehaved, per line.
    fn notes(&self) -> Vec<String> {
        self.lines
            .iter()
            .flat_map(|l| {
                let programs = l
                    .programs
                    .iter()
                    .filter(|p| !p.clean())
                    .map(Outcome::summary);
                l.verdict
                    .failed
                    .iter()
                    .cloned()
                    .chain(programs)
                    .map(move |n| format!("{} ({}): {n}", l.scenario, l.manager))
            })
            .collect()
    }
}

fn cells(l: &Line) -> Vec<String> {
    let f = &l.figures;
    let v = &l.verdict;
    let result = if v.pass { "pass" } else { "FAIL" }.to_string();
    let na = || "-".to_string();
    let secs = |s: Option<f64>| s.map_or("never".into(), |s| format!("{s:.0}"));
    let (balanced, after) = match l.expect {
        Expect::MemoryRules => {
            return vec![
                l.scenario.clone(),
                l.manager.clone(),
                result,
                na(),
                na(),
                na(),
                format!("{:.0}", f.min_unused_mib),
                format!("{:.0}", f.seconds_under_floor),
                if f.host_min_free_mib > HOST_FLOOR_MIB {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                f.oom_kills.to_string(),
                secs(v.memory_back_s),
            ];
        }
        // Balanced from the start: every pin change counts.
        Expect::LeaveAlone => (Some(0.0), f.first_pins + f.repins),
        Expect::EvenPlacement => (v.placed_s, v.repins_after_placed),
        Expect::Balanced => (f.balance_s, f.repins_after_balance),
    };
    vec![
        l.scenario.clone(),
        l.manager.clone(),
        result,
        secs(balanced),
        format!("{:.1}", f.settled_sd_pct),
        after.to_string(),
        na(),
        na(),
        na(),
        na(),
        na(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(scenario: &str, manager: &str, memory: bool, failed: &[&str]) -> Line {
        Line {
            scenario: scenario.into(),
            manager: manager.into(),
            expect: if memory {
                Expect::MemoryRules
            } else {
                Expect::EvenPlacement
            },
            verdict: Verdict {
                pass: failed.is_empty(),
                failed: failed.iter().map(|f| f.to_string()).collect(),
                placed_s: (!memory).then_some(4.0),
                repins_after_placed: 0,
                memory_back_s: memory.then_some(12.0),
            },
            figures: Figures {
                balance_s: Some(3.0),
                first_pins: 0,
                repins: 2,
                repins_after_balance: 0,
                settled_sd_pct: 1.25,
                min_unused_mib: 140.4,
                seconds_under_floor: 0.0,
                oom_kills: 0,
                host_min_free_mib: 9000.0,
                peak_actual_mib: 4000.0,
                end_actual_mib: 2100.0,
                vcpu_changes: 0,
                start_actual_mib: 2048.0,
                min_actual_mib: 300.0,
                max_release_share: 0.25,
                grown_on_a_short_host: 0,
            },
            programs: Vec::new(),
            run_dir: "results/x".into(),
        }
    }

    #[test]
    fn one_row_per_scenario_and_manager_then_each_broken_rule() {
        let card = Scorecard::new(vec![
            line("course-cpu-2", "yours", false, &[]),
            line(
                "course-mem-1",
                "yours",
                true,
                &["1 s under the floor of unused memory (least: 73 MiB)"],
            ),
        ]);
        assert!(!card.pass);
        assert_eq!(
            card.text(),
            "scenario      manager  result  balanced s  settled sd  re-pins after  min unused MiB  s under floor  host floor kept  OOM kills  memory back s\n\
             course-cpu-2  yours    pass             4         1.2              0               -              -  -                        -              -\n\
             course-mem-1  yours    FAIL             -           -              -             140              0  yes                      0             12\n\
             course-mem-1 (yours): 1 s under the floor of unused memory (least: 73 MiB)\n"
        );
        let md = card.markdown();
        assert!(md.starts_with("| scenario | manager | result |"), "{md}");
        assert!(
            md.contains("| course-mem-1 | yours | FAIL | - | - | - | 140 | 0 | yes | 0 | 12 |"),
            "{md}"
        );
        assert!(
            md.ends_with(
                "- course-mem-1 (yours): 1 s under the floor of unused memory (least: 73 MiB)\n"
            ),
            "{md}"
        );
    }
}
