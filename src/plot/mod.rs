//! `vmlab plot`: the figures a report needs from a run directory, each as PNG
//! and SVG: memory per VM (used, balloon allocation and target, the manager's
//! floor and thresholds), CPU per VM, pCPU utilisation with pin changes
//! marked, and bench results per cell with their spread.
//!
//! Text is drawn with DejaVu Sans compiled into the binary (plotters'
//! `ab_glyph` backend), so the host's fontconfig is never asked. An empty cell
//! of `metrics.csv` is a gap in its line, never a zero; so is a number that is
//! not finite (a warning names its row), and a value beyond a chart's axis is
//! drawn at its edge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::metrics::row::MetricsRow;
use crate::metrics::run::{BenchResult, DecisionRecord, Run, read_run};

const FONT: &str = "sans-serif";
const WIDTH: u32 = 960;
/// One colour per series, in order (VMs, pCPUs).
const PALETTE: [RGBColor; 6] = [
    RGBColor(35, 100, 210),
    RGBColor(209, 39, 113),
    RGBColor(25, 128, 56),
    RGBColor(178, 134, 0),
    RGBColor(138, 63, 252),
    RGBColor(0, 125, 121),
];
const GREY: RGBColor = RGBColor(120, 128, 140);
/// Warnings about left-out values shown one by one; the rest are counted.
const NOTES_SHOWN: usize = 10;

/// Writes every figure the run has data for into `out_dir` (created if
/// needed); returns the files written, PNG and SVG of each figure.
pub fn plot(run_dir: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let run = read_run(run_dir)?;
    for note in run.notes.iter().take(NOTES_SHOWN) {
        tracing::warn!("{note}");
    }
    if run.notes.len() > NOTES_SHOWN {
        tracing::warn!(
            "{} more values or records of `{}` are left out for the same reasons",
            run.notes.len() - NOTES_SHOWN,
            run_dir.display()
        );
    }
    let mut figures = Vec::new();
    if !run.metrics.is_empty() {
        figures.extend([Figure::Memory, Figure::Cpu]);
        if run.pcpus > 0 {
            figures.push(Figure::Pcpu);
        }
    }
    let groups = bench_groups(&run.bench);
    figures.extend(groups.iter().map(Figure::Bench));
    if figures.is_empty() {
        bail!(
            "nothing to plot in `{}`: its metrics.csv and bench.csv have no rows",
            run_dir.display()
        );
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create `{}`", out_dir.display()))?;
    register_font();
    let mut written = Vec::new();
    for figure in figures {
        written.extend(figure.save(&run, out_dir)?);
    }
    Ok(written)
}

fn register_font() {
    static FONT_ONCE: Once = Once::new();
    FONT_ONCE.call_once(|| {
        let bytes = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

/// The valid results of one benchmark metric, by cell (vCPUs, MiB).
struct BenchGroup {
    benchmark: String,
    metric: String,
    unit: String,
    cells: BTreeMap<(u32, u64), Vec<f64>>,
    invalid: usize,
}

fn bench_groups(results: &[BenchResult]) -> Vec<BenchGroup> {
    let mut groups: BTreeMap<(String, String), BenchGroup> = BTreeMap::new();
    for r in results {
        let group = groups
            .entry((r.benchmark.clone(), r.metric.clone()))
            .or_insert_with(|| BenchGroup {
                benchmark: r.benchmark.clone(),
                metric: r.metric.clone(),
                unit: r.unit.clone(),
                cells: BTreeMap::new(),
                invalid: 0,
            });
        match r.value.filter(|_| r.valid) {
            Some(value) => group
                .cells
                .entry((r.vcpus, r.memory_mib))
                .or_default()
                .push(value),
            None => group.invalid += 1,
        }
    }
    groups
        .into_values()
        .filter(|g| !g.cells.is_empty())
        .collect()
}

enum Figure<'a> {
    Memory,
    Cpu,
    Pcpu,
    Bench(&'a BenchGroup),
}

impl Figure<'_> {
    fn name(&self) -> String {
        match self {
            Figure::Memory => "memory".into(),
            Figure::Cpu => "cpu".into(),
            Figure::Pcpu => "pcpu".into(),
            Figure::Bench(g) => {
                format!("bench-{}-{}", file_safe(&g.benchmark), file_safe(&g.metric))
            }
        }
    }

    fn size(&self, run: &Run) -> (u32, u32) {
        match self {
            Figure::Memory => (WIDTH, 40 + 250 * vms(&run.metrics).len() as u32),
            _ => (WIDTH, 440),
        }
    }

    /// Draws the figure twice, as PNG and as SVG.
    fn save(&self, run: &Run, out_dir: &Path) -> Result<[PathBuf; 2]> {
        let (name, size) = (self.name(), self.size(run));
        let png = out_dir.join(format!("{name}.png"));
        let svg = out_dir.join(format!("{name}.svg"));
        let failed = |path: &Path| format!("cannot draw `{}`", path.display());
        self.draw(&BitMapBackend::new(&png, size).into_drawing_area(), run)
            .with_context(|| failed(&png))?;
        self.draw(&SVGBackend::new(&svg, size).into_drawing_area(), run)
            .with_context(|| failed(&svg))?;
        Ok([png, svg])
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>, run: &Run) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        match self {
            Figure::Memory => draw_memory(root, run)?,
            Figure::Cpu => draw_cpu(root, run)?,
            Figure::Pcpu => draw_pcpu(root, run)?,
            Figure::Bench(group) => draw_bench(root, group)?,
        }
        root.present()?;
        Ok(())
    }
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// VM names in order of first appearance.
fn vms(rows: &[MetricsRow]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for row in rows {
        if !names.contains(&row.vm.as_str()) {
            names.push(&row.vm);
        }
    }
    names
}

type Points = Vec<(f64, Option<f64>)>;

fn series(rows: &[MetricsRow], vm: &str, value: impl Fn(&MetricsRow) -> Option<f64>) -> Points {
    rows.iter()
        .filter(|r| r.vm == vm)
        .map(|r| (r.t_s, value(r)))
        .collect()
}

/// Runs of consecutive values: an empty cell ends a line, it does not drop to 0.
fn segments(points: &Points) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (t, value) in points {
        match value {
            Some(v) => runs.last_mut().expect("never empty").push((*t, *v)),
            None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

fn x_range(rows: &[MetricsRow]) -> std::ops::Range<f64> {
    let (first, last) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(r.t_s), b.max(r.t_s))
    });
    first..last.max(first + 1.0)
}

/// One series of a time chart.
struct Line {
    label: String,
    points: Points,
    color: RGBColor,
    /// References (targets, thresholds) are thin and dashed; measurements solid.
    dashed: bool,
}

impl Line {
    fn solid(label: &str, points: Points, color: RGBColor) -> Self {
        let label = label.to_string();
        Self {
            label,
            points,
            color,
            dashed: false,
        }
    }

    fn dashed(label: &str, points: Points, color: RGBColor) -> Self {
        Self {
            dashed: true,
            ..Self::solid(label, points, color)
        }
    }

    fn is_empty(&self) -> bool {
        self.points.iter().all(|(_, v)| v.is_none())
    }
}

/// `max` with `factor` of room above it, and never beyond the largest f64.
fn headroom(max: f64, factor: f64) -> f64 {
    (max * factor).min(f64::MAX)
}

/// Room on the right of a time chart for its legend.
const LEGEND_WIDTH: u32 = 190;

/// A time chart of `lines` (x: seconds since the run started) with its legend
/// beside it; `y_top` None scales to the data. Every polyline of its SVG is data.
fn time_chart<'a, DB: DrawingBackend + 'a>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    x: std::ops::Range<f64>,
    y_top: Option<f64>,
    lines: &[Line],
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>>
where
    DB::ErrorType: 'static,
{
    let (plot_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND_WIDTH);
    let data_max = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0f64, f64::max);
    let top = y_top.unwrap_or(if data_max > 0.0 {
        headroom(data_max, 1.1)
    } else {
        1.0
    });
    // Only points inside the axes: plotters cannot place one millions of
    // chart heights away (its pixel arithmetic overflows).
    let inside = |(t, v): (f64, f64)| (t.clamp(x.start, x.end), v.clamp(0.0, top));
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(caption, (FONT, 17))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x.clone(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("time since run start (s)")
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .bold_line_style(RGBColor(226, 229, 234))
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (legend_row, line) in lines.iter().filter(|l| !l.is_empty()).enumerate() {
        let style = line.color.stroke_width(if line.dashed { 1 } else { 2 });
        for run in segments(&line.points) {
            let run = run.into_iter().map(inside);
            if line.dashed {
                chart.draw_series(DashedLineSeries::new(run, 6, 4, style))?;
            } else {
                chart.draw_series(LineSeries::new(run, style))?;
            }
        }
        // A box for a measurement, a thin bar for a reference line.
        let y = 44 + 20 * legend_row as i32;
        let half_height = if line.dashed { 1 } else { 5 };
        legend_area.draw(&Rectangle::new(
            [(8, y - half_height), (24, y + half_height)],
            line.color.filled(),
        ))?;
        legend_area.draw(&Text::new(
            line.label.clone(),
            (32, y - 7),
            (FONT, 13).into_font().color(&BLACK),
        ))?;
    }
    Ok(chart)
}

fn draw_memory<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &Run) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let root = root.titled("Memory per VM", (FONT, 22))?;
    let m = &run.metrics;
    let names = vms(m);
    for (area, vm) in root.split_evenly((names.len(), 1)).iter().zip(&names) {
        let allocated = |r: &MetricsRow| r.balloon_actual_mib;
        let share = |pct: Option<f64>, r: &MetricsRow| Some(pct? * allocated(r)? / 100.0);
        let lines = [
            Line::solid("used", series(m, vm, |r| r.mem_used_mib), PALETTE[1]),
            Line::solid("allocated (balloon)", series(m, vm, allocated), PALETTE[0]),
            Line::dashed(
                "balloon target",
                balloon_target(&run.decisions, vm, x_range(m).end),
                PALETTE[4],
            ),
            Line::dashed("floor", series(m, vm, |r| r.mem_floor_mib), PALETTE[2]),
            Line::dashed(
                "high threshold",
                series(m, vm, |r| share(r.mem_high_pct, r)),
                PALETTE[3],
            ),
            Line::dashed(
                "low threshold",
                series(m, vm, |r| share(r.mem_low_pct, r)),
                PALETTE[5],
            ),
        ];
        let caption = if lines[1].is_empty() {
            format!("{vm} (no balloon stats)")
        } else {
            vm.to_string()
        };
        time_chart(area, &caption, "MiB", x_range(m), None, &lines)?;
    }
    Ok(())
}

/// The manager's memory targets for `vm` as steps: each decision's `after`
/// from its time on, the first decision's `before` until then.
fn balloon_target(decisions: &[DecisionRecord], vm: &str, end_t_s: f64) -> Points {
    let mut steps = Points::new();
    for d in decisions
        .iter()
        .filter(|d| d.vm == vm && d.kind == "memory")
    {
        let (Ok(before), Ok(after)) = (d.before.parse::<f64>(), d.after.parse::<f64>()) else {
            continue;
        };
        if !(before.is_finite() && after.is_finite()) {
            continue;
        }
        let previous = steps.last().and_then(|(_, v)| *v).unwrap_or(before);
        steps.extend([(d.t_s, Some(previous)), (d.t_s, Some(after))]);
    }
    if let Some(&(_, last)) = steps.last() {
        steps.push((end_t_s, last));
    }
    steps
}

fn draw_cpu<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &Run) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let m = &run.metrics;
    let lines: Vec<Line> = vms(m)
        .iter()
        .enumerate()
        .map(|(i, vm)| Line::solid(vm, series(m, vm, |r| r.cpu_pct), PALETTE[i % PALETTE.len()]))
        .collect();
    time_chart(
        root,
        "CPU per VM (guest)",
        "CPU %",
        x_range(m),
        Some(105.0),
        &lines,
    )?;
    Ok(())
}

fn draw_pcpu<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, run: &Run) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let m = &run.metrics;
    // Every VM row of a sample repeats the pCPU figures: one per sample.
    let mut samples: Vec<&MetricsRow> = Vec::new();
    for row in m {
        if samples.last().is_none_or(|s| s.t_s != row.t_s) {
            samples.push(row);
        }
    }
    let lines: Vec<Line> = (0..run.pcpus)
        .map(|pcpu| {
            let points = samples
                .iter()
                .map(|r| (r.t_s, r.pcpu_pct.get(pcpu).copied().flatten()))
                .collect();
            Line::solid(
                &format!("pCPU {pcpu}"),
                points,
                PALETTE[pcpu % PALETTE.len()],
            )
        })
        .collect();
    let caption = "pCPU utilisation, pin changes marked";
    let x = x_range(m);
    let mut chart = time_chart(
        root,
        caption,
        "utilisation %",
        x.clone(),
        Some(118.0),
        &lines,
    )?;
    let pins = run
        .decisions
        .iter()
        .filter(|d| d.kind == "pin" && (x.start..=x.end).contains(&d.t_s));
    for (i, pin) in pins.enumerate() {
        chart.draw_series(DashedLineSeries::new(
            [(pin.t_s, 0.0), (pin.t_s, 104.0)],
            4,
            4,
            GREY.stroke_width(1),
        ))?;
        // Labels alternate in height so neighbours do not overlap.
        let y = if i % 2 == 0 { 116.0 } else { 110.0 };
        chart.draw_series([Text::new(
            format!("{} {} → {}", pin.vm, pin.before, pin.after),
            (pin.t_s, y),
            (FONT, 12).into_font().color(&GREY),
        )])?;
    }
    Ok(())
}

fn draw_bench<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, group: &BenchGroup) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let cells: Vec<(&(u32, u64), &Vec<f64>)> = group.cells.iter().collect();
    let top = cells
        .iter()
        .flat_map(|(_, v)| v.iter())
        .fold(0.0f64, |a, b| a.max(*b));
    let mut caption = format!(
        "{} {}: min / median / max per cell",
        group.benchmark, group.metric
    );
    if group.invalid > 0 {
        caption.push_str(&format!(" ({} invalid not shown)", group.invalid));
    }
    let labels: Vec<String> = cells
        .iter()
        .map(|((vcpus, mib), values)| format!("{vcpus} vCPU, {mib} MiB (n={})", values.len()))
        .collect();
    let y_top = headroom(top, 1.15).max(1.0);
    // Only points inside the axis (see `time_chart`).
    let inside = |v: f64| v.clamp(0.0, y_top);
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        // Integer ranges are inclusive here: 0..n-1 is n cells.
        .build_cartesian_2d((0..cells.len() - 1).into_segmented(), 0.0..y_top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("cell (vCPUs, memory, runs)")
        .y_desc(&group.unit)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .bold_line_style(RGBColor(226, 229, 234))
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (_, values)) in cells.iter().enumerate() {
        let Some(crate::stats::Spread { min, median, max }) = crate::stats::Spread::of(values)
        else {
            continue;
        };
        let x = SegmentValue::CenterOf(i);
        chart.draw_series([ErrorBar::new_vertical(
            x.clone(),
            inside(min),
            inside(median),
            inside(max),
            PALETTE[0].stroke_width(2),
            16,
        )])?;
        chart.draw_series(
            values
                .iter()
                .map(|v| Circle::new((x.clone(), inside(*v)), 3, PALETTE[1].mix(0.6).filled())),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_cells_split_a_line() {
        let points = vec![
            (0.0, None),
            (1.0, Some(1.0)),
            (2.0, Some(2.0)),
            (3.0, None),
            (4.0, Some(4.0)),
        ];
        assert_eq!(
            segments(&points),
            [vec![(1.0, 1.0), (2.0, 2.0)], vec![(4.0, 4.0)]]
        );
        assert!(segments(&vec![(0.0, None)]).is_empty());
    }

    #[test]
    fn balloon_target_steps_through_the_memory_decisions() {
        let decision = |t_s, vm: &str, kind: &str, before: &str, after: &str| DecisionRecord {
            time: String::new(),
            t_s,
            vm: vm.into(),
            kind: kind.into(),
            before: before.into(),
            after: after.into(),
            unit: String::new(),
            reason: String::new(),
            inputs: String::new(),
        };
        let decisions = [
            decision(2.0, "vm-1", "memory", "512", "600"),
            decision(3.0, "vm-1", "pin", "0:0", "0:1"),
            decision(4.0, "vm-2", "memory", "512", "480"),
            decision(5.0, "vm-1", "memory", "600", "700"),
        ];
        let steps: Vec<(f64, f64)> = balloon_target(&decisions, "vm-1", 9.0)
            .into_iter()
            .map(|(t, v)| (t, v.unwrap()))
            .collect();
        assert_eq!(
            steps,
            [
                (2.0, 512.0),
                (2.0, 600.0),
                (5.0, 600.0),
                (5.0, 700.0),
                (9.0, 700.0)
            ]
        );
        assert!(balloon_target(&decisions, "vm-3", 9.0).is_empty());
    }
}
