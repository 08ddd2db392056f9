//! The summary `vmlab bench` prints: median, min and max of each metric in
//! each cell, over VMs and repeats, as a table.

use serde::Serialize;

use super::matrix::Cell;
use super::record::{AutoRepeat, CellRecord};
use super::run::Row;
use crate::stats::Spread;
use crate::table::{Align, Table};

/// Median, min and max of one metric in one cell, over VMs and repeats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub cell: usize,
    pub metric: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// One line per (cell, metric), in the order the metrics first appear.
pub fn summarize(rows: &[Row]) -> Vec<Summary> {
    let mut keys: Vec<(usize, String, String)> = Vec::new();
    for r in rows.iter().filter(|r| r.value.is_some()) {
        let key = (r.cell, r.metric.clone(), r.unit.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .filter_map(|(cell, metric, unit)| {
            let values: Vec<f64> = rows
                .iter()
                .filter(|r| r.cell == cell && r.metric == metric && r.unit == unit)
                .filter_map(|r| r.value)
                .collect();
            // A key comes from a row with a value: never empty.
            let Spread { min, median, max } = Spread::of(&values)?;
            Some(Summary {
                cell,
                metric,
                unit,
                median,
                min,
                max,
                n: values.len(),
            })
        })
        .collect()
}

/// The summary as printed: a cell is `index: what it applied`, numbers to
/// four decimals.
pub fn table(summary: &[Summary], cells: &[Cell]) -> Table {
    use Align::{Left, Right};
    let mut table = Table::new(&[
        ("CELL", Left),
        ("METRIC", Left),
        ("MEDIAN", Right),
        ("MIN", Right),
        ("MAX", Right),
        ("UNIT", Left),
        ("N", Right),
    ]);
    for s in summary {
        let cell = cells
            .iter()
            .find(|c| c.index == s.cell)
            .map(|c| format!("{}: {c}", c.index))
            .unwrap_or_default();
        table.row([
            cell,
            s.metric.clone(),
            format!("{:.4}", s.median),
            format!("{:.4}", s.min),
            format!("{:.4}", s.max),
            s.unit.clone(),
            s.n.to_string(),
        ]);
    }
    table
}

/// Under `--repeat auto`, one line per cell: how often it ran and the CV
/// of the main metric each VM reached; nothing otherwise.
pub fn repeats(auto: Option<AutoRepeat>, main: Option<&str>, cells: &[CellRecord]) -> String {
    let (Some(auto), Some(main)) = (auto, main) else {
        return String::new();
    };
    let mut out = String::new();
    for cell in cells {
        let cvs: Vec<String> = cell
            .main_cv_pct
            .iter()
            .map(|(vm, cv)| match cv {
                Some(cv) => format!("{vm} {cv:.1} %"),
                None => format!("{vm} -"),
            })
            .collect();
        let steady = cell
            .main_cv_pct
            .iter()
            .all(|(_, cv)| cv.is_some_and(|cv| cv <= auto.cv_target_pct));
        out += &format!(
            "cell {}: {} runs, CV of {main}: {}{}\n",
            cell.cell.index,
            cell.repeats,
            cvs.join(", "),
            if steady {
                String::new()
            } else {
                format!(" (still above {} %)", auto.cv_target_pct)
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::run::test_row;
    use super::*;

    #[test]
    fn summary_is_per_cell_and_metric_and_skips_failures() {
        let rows = [
            test_row(1, "a", Some(3.0)),
            test_row(1, "a", Some(1.0)),
            test_row(1, "a", Some(2.0)),
            test_row(1, "error", None),
            test_row(2, "a", Some(10.0)),
            test_row(2, "a", Some(20.0)),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].cell, s[0].median, s[0].min, s[0].max, s[0].n),
            (1, 2.0, 1.0, 3.0, 3)
        );
        assert_eq!((s[1].cell, s[1].median, s[1].n), (2, 15.0, 2));
    }

    #[test]
    fn auto_repeats_say_how_often_each_cell_ran_and_the_cv_it_reached() {
        let cells: Vec<CellRecord> = serde_json::from_str(
            r#"[{"cell": {"index": 1, "vcpus": 1, "memory_mib": null}, "applied": [], "errors": [],
                 "repeats": 4, "main_cv_pct": [["vm-1", 1.25], ["vm-2", 2.5]]},
                {"cell": {"index": 2, "vcpus": 2, "memory_mib": null}, "applied": [], "errors": [],
                 "repeats": 10, "main_cv_pct": [["vm-1", 7.0], ["vm-2", null]]}]"#,
        )
        .unwrap();
        let auto = crate::bench::repeat::Repeat::Auto { max: 10 }.auto();
        insta::assert_snapshot!(repeats(auto, Some("triad_mb_per_s"), &cells), @r"
        cell 1: 4 runs, CV of triad_mb_per_s: vm-1 1.2 %, vm-2 2.5 %
        cell 2: 10 runs, CV of triad_mb_per_s: vm-1 7.0 %, vm-2 - (still above 3 %)
        ");
        assert_eq!(
            repeats(None, Some("triad_mb_per_s"), &cells),
            "",
            "a count: nothing to say"
        );
    }

    #[test]
    fn the_table_names_cells_and_aligns_numbers() {
        let cells = crate::bench::matrix::Matrix::parse(&["vcpus=1,2".to_owned()])
            .unwrap()
            .cells();
        let mut rows = vec![
            test_row(1, "triad_mb_per_s", Some(13736.25)),
            test_row(1, "triad_mb_per_s", Some(9000.0)),
            test_row(2, "triad_mb_per_s", Some(20500.5)),
            test_row(2, "error", None),
        ];
        for row in &mut rows {
            row.unit = "MB/s".into();
        }
        insta::assert_snapshot!(table(&summarize(&rows), &cells).to_string(), @r"
        CELL        METRIC              MEDIAN         MIN         MAX  UNIT  N
        1: vcpus=1  triad_mb_per_s  11368.1250   9000.0000  13736.2500  MB/s  2
        2: vcpus=2  triad_mb_per_s  20500.5000  20500.5000  20500.5000  MB/s  1
        ");
    }
}
