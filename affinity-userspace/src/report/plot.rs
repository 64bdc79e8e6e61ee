//! An SVG picture of a recorded [`Trace`]: where each thread ran and how far
//! it moved. Pure: it takes a trace and a topology and returns SVG text.
//!
//! Three panels (four with a throttled quota), one under the other, each a
//! matrix:
//! - (a) thread x CPU heatmap of on-CPU time (`ThreadTrace::per_cpu_ns`).
//!   Columns are the CPUs grouped by NUMA node, then last-level cache, then
//!   physical core ([`Topology`]), with separators and group labels. A cell's
//!   colour is the share of that thread's on-CPU time spent on that CPU; it
//!   shows the milliseconds when the number fits.
//! - (b) thread x migration-class matrix (`ThreadTrace::migrations`).
//! - (c) source x destination CPU migration matrix
//!   (`Trace::migration_pairs`, over every thread of the targets): rows are
//!   the CPUs moved from, columns the CPUs moved to, both grouped by node,
//!   L3 and core as in (a), with the same separators; only CPUs that appear
//!   in a pair are drawn, so a 1024-CPU machine gives a matrix of the CPUs
//!   the process really moved between. Traces recorded before pair counts
//!   existed say so instead.
//! - (d) with a CPU quota whose throttle events ran, a few typical periods
//!   (`analyze::periods`), one row each: the cells of the quota used, then
//!   throttled, and how many threads ran at once.
//!
//! Drawn with plotters' SVG backend and no font feature: plotters then uses
//! its built-in text-width estimate and the backend writes plain `<text>`
//! elements, so nothing here reads system fonts (the viewer picks one). The
//! layout is computed here rather than by `ChartBuilder`: a heatmap with
//! grouped categorical axes is rectangles and labels at known places.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use thiserror::Error;

use crate::analyze::periods::{self, TypicalPeriod};
use crate::model::topology::Topology;
use crate::model::{MigrationPair, ThreadTrace, Trace};

/// Most thread rows drawn; past it the threads with the most on-CPU time are
/// kept and the panel says how many were left out.
pub const MAX_ROWS: usize = 64;

/// Why a trace could not be drawn.
#[derive(Debug, Error)]
pub enum PlotError {
    /// No thread of the targets was recorded.
    #[error(
        "the trace holds no threads, so there is nothing to plot; check that the \
         targets ran during the window, or trace for longer"
    )]
    NoThreads,
    /// The SVG backend refused a drawing call (a bug: it writes to a string).
    #[error("drawing the SVG failed: {0}")]
    Draw(String),
}

const PAD: i32 = 16;
const HEADER_ROW: i32 = 17;
const NOTE_STEP: i32 = 17;
const CELL_H: i32 = 20;
const ROW_STEP: i32 = CELL_H + 2;
/// Column gaps: inside a core, between cores, between L3 groups, between nodes.
const GAP_CPU: i32 = 2;
const GAP_CORE: i32 = 5;
const GAP_LLC: i32 = 9;
const GAP_NODE: i32 = 14;
/// Width of a migration-class cell in panel (b).
const CLASS_W: i32 = 96;
const PANEL_GAP: i32 = 34;
/// Legend: a gap under the grid, then swatches and their marks.
const LEGEND_H: i32 = 10 + 12 + 16;

/// Cell fill for zero: grey, so "never" differs from "a little".
const ZERO: RGBColor = RGBColor(0xec, 0xec, 0xec);
const DARK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GREY: RGBColor = RGBColor(0x66, 0x66, 0x66);
/// ColorBrewer "Blues" without its near-white first stop.
const BLUES: [RGBColor; 8] = [
    RGBColor(0xde, 0xeb, 0xf7),
    RGBColor(0xc6, 0xdb, 0xef),
    RGBColor(0x9e, 0xca, 0xe1),
    RGBColor(0x6b, 0xae, 0xd6),
    RGBColor(0x42, 0x92, 0xc6),
    RGBColor(0x21, 0x71, 0xb5),
    RGBColor(0x08, 0x51, 0x9c),
    RGBColor(0x08, 0x30, 0x6b),
];
/// ColorBrewer "Oranges" without its near-white first stop.
const ORANGES: [RGBColor; 8] = [
    RGBColor(0xfe, 0xe6, 0xce),
    RGBColor(0xfd, 0xd0, 0xa2),
    RGBColor(0xfd, 0xae, 0x6b),
    RGBColor(0xfd, 0x8d, 0x3c),
    RGBColor(0xf1, 0x69, 0x13),
    RGBColor(0xd9, 0x48, 0x01),
    RGBColor(0xa6, 0x36, 0x03),
    RGBColor(0x7f, 0x27, 0x04),
];

/// The SVG of `trace`, heatmap columns laid out by `topology`.
pub fn render_svg(trace: &Trace, topology: &Topology) -> Result<String, PlotError> {
    render_svg_with(trace, topology, &[])
}

/// [`render_svg`] with panel (d), the quota's typical periods (quota used,
/// then throttled), when there are any.
pub fn render_svg_with(
    trace: &Trace,
    topology: &Topology,
    periods: &[TypicalPeriod],
) -> Result<String, PlotError> {
    let (threads, selected) = rows(trace);
    if threads.is_empty() {
        return Err(PlotError::NoThreads);
    }
    let label_w = threads
        .iter()
        .map(|t| text_w(&row_label(t), Ink::Label.px()))
        .max()
        .unwrap_or(0)
        .max(text_w("NUMA node", Ink::Muted.px()))
        + 10;
    let heat = heatmap(trace, topology, &threads, selected);
    let mig = migrations(trace, &threads);
    let pairs = pair_matrix(trace, topology);
    let label_w = (pairs.rows.iter())
        .map(|r| text_w(&r.label, Ink::Label.px()) + 10)
        .fold(label_w, i32::max);
    let a = heat.geometry(PAD, label_w);
    let b = mig.geometry(a.bottom + PANEL_GAP, label_w);
    let c = pairs.geometry(b.bottom + PANEL_GAP, label_w);
    let quota = (!periods.is_empty()).then(|| period_matrix(trace, periods));
    let d = quota
        .as_ref()
        .map(|m| m.geometry(c.bottom + PANEL_GAP, label_w));
    let right = a.right.max(b.right).max(c.right);
    let size = match &d {
        Some(d) => (right.max(d.right) + PAD, d.bottom + PAD),
        None => (right + PAD, c.bottom + PAD),
    };
    let mut svg = String::new();
    {
        let area =
            SVGBackend::with_string(&mut svg, (size.0 as u32, size.1 as u32)).into_drawing_area();
        area.fill(&WHITE).map_err(draw_err)?;
        let pc = c;
        let mut c = Canvas { area: &area };
        heat.draw(&mut c, &a)?;
        mig.draw(&mut c, &b)?;
        pairs.draw(&mut c, &pc)?;
        if let (Some(m), Some(g)) = (&quota, &d) {
            m.draw(&mut c, g)?;
        }
        area.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The threads drawn (sorted by tid) and how many were selected in all.
fn rows(trace: &Trace) -> (Vec<&ThreadTrace>, usize) {
    let mut rows: Vec<&ThreadTrace> = trace.selected_threads().collect();
    let selected = rows.len();
    if selected > MAX_ROWS {
        rows.sort_by_key(|t| std::cmp::Reverse(t.cpu_time_ns));
        rows.truncate(MAX_ROWS);
    }
    rows.sort_by_key(|t| t.tid);
    (rows, selected)
}

fn row_label(t: &ThreadTrace) -> String {
    let exited = if t.exited { " (exited)" } else { "" };
    // Control characters are not allowed in XML, even as references.
    format!("{} {}{exited}", t.tid, crate::report::escape::text(&t.comm))
}

/// "pid 4242", "pids 1, 2, 3, 4 and 2 more", plus a `--tid` selection.
fn targets(trace: &Trace) -> String {
    let list = |ids: &[u32]| {
        let shown: Vec<String> = ids.iter().take(4).map(u32::to_string).collect();
        match ids.len().saturating_sub(4) {
            0 => shown.join(", "),
            more => format!("{} and {more} more", shown.join(", ")),
        }
    };
    let mut s = match trace.pids.as_slice() {
        [] => "no pid".to_string(),
        [pid] => format!("pid {pid}"),
        pids => format!("pids {}", list(pids)),
    };
    if !trace.tids.is_empty() {
        s += &format!(" (tid {})", list(&trace.tids));
    }
    s
}

fn title(trace: &Trace, what: &str) -> String {
    let secs = trace.duration_ns as f64 / 1e9;
    format!("{what}, {}, {secs:.2} s window", targets(trace))
}

/// Milliseconds as short as the value allows: "2900", "4.0", "0.40", "<0.01".
pub fn ms_text(ns: u64) -> String {
    let ms = ns as f64 / 1e6;
    if ms >= 9.95 {
        format!("{ms:.0}")
    } else if ms >= 0.995 {
        format!("{ms:.1}")
    } else if ms >= 0.005 {
        format!("{ms:.2}")
    } else {
        "<0.01".to_string()
    }
}

/// Width of `s` at `px`, generous for common sans-serif faces (DejaVu Sans
/// digits are 0.64 em), so what is judged to fit does fit.
fn text_w(s: &str, px: i32) -> i32 {
    (s.chars().count() as f64 * px as f64 * 0.64).ceil() as i32
}

/// `t` in 0..=1 along a colour scale.
fn scale(stops: &[RGBColor], t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Text roles: size, weight and colour in one place.
#[derive(Clone, Copy)]
enum Ink {
    Title,
    Note,
    Label,
    Head,
    SmallHead,
    Group,
    Muted,
    Mark,
    /// A cell value, readable on this fill.
    On(RGBColor),
}

impl Ink {
    fn px(self) -> i32 {
        match self {
            Ink::Title => 15,
            Ink::Label | Ink::Head => 12,
            Ink::Note | Ink::Group | Ink::Muted | Ink::On(_) => 11,
            Ink::SmallHead | Ink::Mark => 10,
        }
    }

    fn bold(self) -> bool {
        matches!(self, Ink::Title | Ink::Head | Ink::SmallHead)
    }

    fn color(self) -> RGBColor {
        match self {
            Ink::Note | Ink::Muted | Ink::Mark => GREY,
            // Rec. 601 luma: white text on dark fills.
            Ink::On(RGBColor(r, g, b))
                if 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b) < 140.0 =>
            {
                WHITE
            }
            _ => DARK,
        }
    }
}

/// The drawing calls used here, on plotters' drawing area.
struct Canvas<'a, 'b> {
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
}

impl Canvas<'_, '_> {
    fn rect(
        &mut self,
        (x, y): (i32, i32),
        (w, h): (i32, i32),
        fill: RGBColor,
    ) -> Result<(), PlotError> {
        let r = Rectangle::new([(x, y), (x + w, y + h)], fill.filled());
        self.area.draw(&r).map_err(draw_err)
    }

    fn line(
        &mut self,
        from: (i32, i32),
        to: (i32, i32),
        color: RGBColor,
        width: u32,
    ) -> Result<(), PlotError> {
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: false,
            stroke_width: width,
        };
        self.area
            .draw(&PathElement::new(vec![from, to], style))
            .map_err(draw_err)
    }

    /// `s` anchored at `at` by `h`, centred vertically.
    fn text(&mut self, s: &str, at: (i32, i32), ink: Ink, h: HPos) -> Result<(), PlotError> {
        // The SVG backend writes font-size = size / 1.24: scale up so the
        // file says `px`.
        let font = ("sans-serif", f64::from(ink.px()) * 1.24).into_font();
        let font = if ink.bold() {
            font.style(FontStyle::Bold)
        } else {
            font
        };
        let color = ink.color();
        let style = TextStyle::from(font)
            .color(&color)
            .pos(Pos::new(h, VPos::Center));
        self.area
            .draw(&Text::new(s.to_string(), at, style))
            .map_err(draw_err)
    }
}

/// One panel: a titled matrix with a row per thread.
struct Matrix {
    title: String,
    notes: Vec<String>,
    headers: Vec<Header>,
    /// Space before each column (the first one's is ignored).
    gaps: Vec<i32>,
    cell_w: i32,
    rows: Vec<Row>,
    /// Heading of the text column right of the grid.
    total_head: &'static str,
    separators: Vec<Separator>,
    /// Space before each row (empty: none; the first one's is ignored).
    row_gaps: Vec<i32>,
    /// Horizontal lines before rows (`from` unused).
    row_separators: Vec<Separator>,
    /// `None`: the notes say what the colours mean.
    legend: Option<Legend>,
}

/// A row of labels over the columns.
struct Header {
    /// Shown left of the row, in the label column.
    name: &'static str,
    ink: Ink,
    /// Underline each span (group labels).
    bracket: bool,
    spans: Vec<Span>,
}

/// Columns `first..=last` under one label: the first candidate that fits
/// is drawn (longest first), none when none fits.
struct Span {
    first: usize,
    last: usize,
    labels: Vec<String>,
}

struct Row {
    label: String,
    cells: Vec<Cell>,
    total: String,
}

/// A cell and its number, drawn only when it fits.
struct Cell {
    fill: RGBColor,
    text: Option<String>,
}

/// A count cell: grey and blank at 0, else orange on `log`'s 0..1 scale
/// with the count written in.
fn count_cell(n: u64, log: impl Fn(u64) -> f64) -> Cell {
    match n {
        0 => Cell {
            fill: ZERO,
            text: None,
        },
        n => Cell {
            fill: scale(&ORANGES, log(n)),
            text: Some(n.to_string()),
        },
    }
}

/// A vertical line before column `before`, from header row `from` down.
struct Separator {
    before: usize,
    from: usize,
    color: RGBColor,
    width: u32,
}

struct Legend {
    caption: &'static str,
    stops: &'static [RGBColor],
    /// Under the scale's start, middle and end.
    marks: [String; 3],
}

/// Where a [`Matrix`] lands.
struct Geometry {
    top: i32,
    header_y: i32,
    col_x: Vec<i32>,
    row_y: Vec<i32>,
    label_w: i32,
    right: i32,
    bottom: i32,
}

impl Matrix {
    fn geometry(&self, top: i32, label_w: i32) -> Geometry {
        let header_y = top + 26 + self.notes.len() as i32 * NOTE_STEP;
        let grid_y = header_y + self.headers.len() as i32 * HEADER_ROW + 4;
        let mut x = PAD + label_w - self.cell_w;
        let col_x: Vec<i32> = (self.gaps.iter().enumerate())
            .map(|(i, gap)| {
                x += self.cell_w + if i == 0 { 0 } else { *gap };
                x
            })
            .collect();
        let mut y = grid_y - ROW_STEP;
        let row_y: Vec<i32> = (0..self.rows.len())
            .map(|i| {
                let gap = if i == 0 {
                    0
                } else {
                    self.row_gaps.get(i).copied().unwrap_or(0)
                };
                y += ROW_STEP + gap;
                y
            })
            .collect();
        let totals = self.rows.iter().map(|r| text_w(&r.total, Ink::Label.px()));
        let texts = (self
            .notes
            .iter()
            .map(|n| text_w(n, Ink::Note.px()) * 9 / 10))
        .chain([text_w(&self.title, Ink::Title.px())]);
        Geometry {
            top,
            header_y,
            label_w,
            right: (x + self.cell_w + 8 + totals.max().unwrap_or(0))
                .max(x + self.cell_w + 8 + text_w(self.total_head, Ink::Muted.px()))
                .max(PAD + texts.max().unwrap_or(0)),
            bottom: row_y.last().map_or(grid_y, |y| y + ROW_STEP + LEGEND_H),
            col_x,
            row_y,
        }
    }

    fn draw(&self, c: &mut Canvas, g: &Geometry) -> Result<(), PlotError> {
        c.text(&self.title, (PAD, g.top + 8), Ink::Title, HPos::Left)?;
        for (i, n) in self.notes.iter().enumerate() {
            c.text(
                n,
                (PAD, g.top + 28 + i as i32 * NOTE_STEP),
                Ink::Note,
                HPos::Left,
            )?;
        }
        let name_x = PAD + g.label_w - 8;
        if self.rows.is_empty() {
            return Ok(()); // the notes say why
        }
        // No columns only with an empty topology and no per-CPU data.
        let grid_right = g.col_x.last().map_or(PAD + g.label_w, |x| x + self.cell_w);
        for (i, h) in self.headers.iter().enumerate() {
            let y = g.header_y + i as i32 * HEADER_ROW;
            if !h.name.is_empty() {
                c.text(
                    h.name,
                    (name_x, y + HEADER_ROW / 2),
                    Ink::Muted,
                    HPos::Right,
                )?;
            }
            for s in &h.spans {
                let (x0, x1) = (g.col_x[s.first], g.col_x[s.last] + self.cell_w);
                let fits = s
                    .labels
                    .iter()
                    .find(|l| text_w(l, h.ink.px()) <= x1 - x0 - 2);
                if let Some(label) = fits {
                    c.text(
                        label,
                        ((x0 + x1) / 2, y + HEADER_ROW / 2 - 1),
                        h.ink,
                        HPos::Center,
                    )?;
                }
                if h.bracket {
                    c.line(
                        (x0 + 1, y + HEADER_ROW - 2),
                        (x1 - 1, y + HEADER_ROW - 2),
                        GREY,
                        1,
                    )?;
                }
            }
        }
        let last_header = g.header_y + (self.headers.len() as i32 - 1) * HEADER_ROW;
        c.text(
            self.total_head,
            (grid_right + 8, last_header + HEADER_ROW / 2),
            Ink::Muted,
            HPos::Left,
        )?;
        for (row, &y) in self.rows.iter().zip(&g.row_y) {
            let mid = y + CELL_H / 2;
            c.text(&row.label, (name_x, mid), Ink::Label, HPos::Right)?;
            for (cell, &x) in row.cells.iter().zip(&g.col_x) {
                c.rect((x, y), (self.cell_w, CELL_H), cell.fill)?;
                let ink = Ink::On(cell.fill);
                if let Some(t) = cell
                    .text
                    .as_ref()
                    .filter(|t| text_w(t, ink.px()) <= self.cell_w - 4)
                {
                    c.text(t, (x + self.cell_w / 2, mid), ink, HPos::Center)?;
                }
            }
            c.text(&row.total, (grid_right + 8, mid), Ink::Label, HPos::Left)?;
        }
        let grid_bottom = g.row_y[g.row_y.len() - 1] + ROW_STEP;
        for s in &self.separators {
            let x = (g.col_x[s.before - 1] + self.cell_w + g.col_x[s.before]) / 2;
            let y0 = g.header_y + s.from as i32 * HEADER_ROW;
            c.line((x, y0), (x, grid_bottom), s.color, s.width)?;
        }
        for s in &self.row_separators {
            let y = (g.row_y[s.before - 1] + CELL_H + g.row_y[s.before]) / 2;
            c.line((PAD, y), (grid_right, y), s.color, s.width)?;
        }
        match &self.legend {
            Some(l) => Self::draw_legend(l, c, (PAD + g.label_w, grid_bottom + 8)),
            None => Ok(()),
        }
    }

    /// 11 swatches from the scale's start to its end, then grey for zero.
    fn draw_legend(l: &Legend, c: &mut Canvas, (x, y): (i32, i32)) -> Result<(), PlotError> {
        const SW: i32 = 16;
        c.text(l.caption, (x - 8, y + 6), Ink::Muted, HPos::Right)?;
        for i in 0..=10 {
            c.rect(
                (x + i * SW, y),
                (SW, 12),
                scale(l.stops, f64::from(i) / 10.0),
            )?;
        }
        for (i, mark) in [0, 5, 10].into_iter().zip(&l.marks) {
            c.text(mark, (x + i * SW + SW / 2, y + 22), Ink::Mark, HPos::Center)?;
        }
        let gx = x + 11 * SW + 14;
        c.rect((gx, y), (SW, 12), ZERO)?;
        c.text("none", (gx + SW + 6, y + 6), Ink::Mark, HPos::Left)
    }
}

/// One heatmap column: a CPU and its groups (`None`: the trace used the CPU
/// but the topology does not list it as online).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Column {
    cpu: u32,
    node: Option<u32>,
    llc: Option<u32>,
    core: Option<u32>,
}

/// The topology's CPUs, plus any CPU the threads used that it lacks, ordered
/// by node, L3 group, core, CPU; unknown CPUs last.
fn columns(threads: &[&ThreadTrace], topo: &Topology) -> Vec<Column> {
    let mut cols: Vec<Column> = (topo.cpus.iter())
        .map(|c| Column {
            cpu: c.id,
            node: Some(c.node),
            llc: Some(c.llc),
            core: Some(c.core),
        })
        .collect();
    for &cpu in threads.iter().flat_map(|t| t.per_cpu_ns.keys()) {
        if !cols.iter().any(|c| c.cpu == cpu) {
            let (node, llc, core) = (None, None, None);
            cols.push(Column {
                cpu,
                node,
                llc,
                core,
            });
        }
    }
    cols.sort_by_key(|c| (c.node.is_none(), c.node, c.llc, c.core, c.cpu));
    cols
}

/// Runs of consecutive columns with the same key, labelled by `labels`.
fn spans<K: PartialEq + Copy>(
    cols: &[Column],
    key: impl Fn(&Column) -> K,
    labels: impl Fn(K) -> Vec<String>,
) -> Vec<Span> {
    let mut runs: Vec<(usize, usize, K)> = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        match runs.last_mut() {
            Some((_, last, k)) if *k == key(c) => *last = i,
            _ => runs.push((i, i, key(c))),
        }
    }
    let span = |(first, last, k)| Span {
        first,
        last,
        labels: labels(k),
    };
    runs.into_iter().map(span).collect()
}

/// Panel (a): thread x CPU on-CPU time.
fn heatmap(trace: &Trace, topo: &Topology, threads: &[&ThreadTrace], selected: usize) -> Matrix {
    let cols = columns(threads, topo);
    let mut notes = vec![
        "Colour: share of the thread's own on-CPU time spent on that CPU; number: ms on \
         that CPU. Grey: never ran there."
            .to_string(),
        "Columns: CPUs grouped by NUMA node, then L3 cache, then physical core.".to_string(),
    ];
    if threads.len() < selected {
        notes.push(format!(
            "Showing the {} of {selected} threads with the most on-CPU time.",
            threads.len()
        ));
    }
    let axis = cpu_axis(&cols, topo);
    let rows = threads
        .iter()
        .map(|t| {
            // Shares of the per-CPU sum, so a row adds up to 100% even when
            // the per-CPU map dropped entries.
            let sum: u64 = t.per_cpu_ns.values().sum();
            let cells = cols
                .iter()
                .map(|c| match t.per_cpu_ns.get(&c.cpu).copied().unwrap_or(0) {
                    0 => Cell {
                        fill: ZERO,
                        text: None,
                    },
                    ns => Cell {
                        fill: scale(&BLUES, ns as f64 / sum as f64),
                        text: Some(ms_text(ns)),
                    },
                })
                .collect();
            let total = format!("{} ms", ms_text(t.cpu_time_ns));
            Row {
                label: row_label(t),
                cells,
                total,
            }
        })
        .collect();
    Matrix {
        title: title(trace, "(a) On-CPU time per thread and CPU (ms)"),
        notes,
        headers: axis.headers,
        gaps: axis.gaps,
        cell_w: axis.cell_w,
        rows,
        total_head: "total",
        separators: axis.separators,
        row_gaps: vec![],
        row_separators: vec![],
        legend: Some(Legend {
            caption: "share of the thread's time",
            stops: &BLUES,
            marks: ["0%".into(), "50%".into(), "100%".into()],
        }),
    }
}

/// Column headers, gaps and separators for CPUs grouped by NUMA node, L3
/// and core (panels (a) and (c)).
struct Axis {
    headers: Vec<Header>,
    gaps: Vec<i32>,
    separators: Vec<Separator>,
    cell_w: i32,
}

/// The heatmap's column axis: header rows from NUMA node down to CPU, and
/// the gaps and lines between groups.
fn cpu_axis(cols: &[Column], topo: &Topology) -> Axis {
    let cell_w = if cols.len() <= 32 { 40 } else { 24 };
    let mut headers = vec![node_header(cols), llc_header(cols, topo)];
    headers.extend(core_header(cols));
    headers.push(cpu_header(cols, cell_w));
    let (gaps, separators) = group_gaps(cols);
    Axis {
        headers,
        gaps,
        separators,
        cell_w,
    }
}

fn node_header(cols: &[Column]) -> Header {
    Header {
        name: "NUMA node",
        ink: Ink::Group,
        bracket: true,
        spans: spans(
            cols,
            |c| c.node,
            |n| match n {
                Some(n) => vec![format!("node {n}"), format!("N{n}")],
                None => vec!["not online".into(), "?".into()],
            },
        ),
    }
}

fn llc_header(cols: &[Column], topo: &Topology) -> Header {
    let level = |id: u32| {
        topo.llc_groups()
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.level)
    };
    Header {
        name: "L3 cache",
        ink: Ink::Group,
        bracket: true,
        // Level 0: sysfs had no cache data and the package stands in.
        spans: spans(
            cols,
            |c| c.llc,
            |l| match l.map(|id| (id, level(id))) {
                Some((id, Some(0))) => vec![format!("package {id}"), format!("#{id}")],
                Some((id, Some(lv))) => vec![format!("L{lv} {id}"), format!("#{id}")],
                Some((id, None)) => vec![format!("LLC {id}"), format!("#{id}")],
                None => vec![],
            },
        ),
    }
}

/// A core row only says something when cores have several CPUs (SMT).
fn core_header(cols: &[Column]) -> Option<Header> {
    let cores = spans(
        cols,
        |c| c.core,
        |c| match c {
            Some(id) => vec![format!("core {id}"), format!("c{id}"), id.to_string()],
            None => vec![],
        },
    );
    cores.iter().any(|s| s.last > s.first).then_some(Header {
        name: "core",
        ink: Ink::Group,
        bracket: true,
        spans: cores,
    })
}

fn cpu_header(cols: &[Column], cell_w: i32) -> Header {
    Header {
        name: "CPU",
        ink: if cell_w < 30 {
            Ink::SmallHead
        } else {
            Ink::Head
        },
        bracket: false,
        spans: (cols.iter().enumerate())
            .map(|(i, c)| Span {
                first: i,
                last: i,
                labels: vec![c.cpu.to_string()],
            })
            .collect(),
    }
}

/// The gap before each column, wider where a larger group changes, and a
/// line where the node or the L3 changes.
fn group_gaps(cols: &[Column]) -> (Vec<i32>, Vec<Separator>) {
    let mut gaps = Vec::with_capacity(cols.len());
    let mut separators = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let p = cols[i.saturating_sub(1)];
        let (gap, sep) = if p.node != c.node {
            (GAP_NODE, Some((0, DARK, 2)))
        } else if p.llc != c.llc {
            (GAP_LLC, Some((1, GREY, 1)))
        } else if p.core != c.core {
            (GAP_CORE, None)
        } else {
            (GAP_CPU, None)
        };
        gaps.push(gap);
        if let Some((from, color, width)) = sep {
            separators.push(Separator {
                before: i,
                from,
                color,
                width,
            });
        }
    }
    (gaps, separators)
}

/// Panel (c): source x destination CPU migration counts.
fn pair_matrix(trace: &Trace, topo: &Topology) -> Matrix {
    let pairs = &trace.migration_pairs;
    let title = title(
        trace,
        "(c) Migrations by source and destination CPU (count)",
    );
    if pairs.is_empty() {
        return no_pairs(trace, title);
    }
    let cols = pair_columns(pairs, topo);
    let mut axis = cpu_axis(&cols, topo);
    if let Some(h) = axis.headers.last_mut() {
        h.name = "to CPU";
    }
    let max = pairs.iter().map(|p| p.count).max().unwrap_or(1).max(1);
    let rows = pair_rows(pairs, &cols, max);
    // Rows follow the columns' groups: the same gaps, and a line where the
    // node or the L3 changes.
    let row_separators = (axis.separators.iter())
        .map(|s| Separator {
            before: s.before,
            from: 0,
            color: s.color,
            width: s.width,
        })
        .collect();
    let total: u64 = pairs.iter().map(|p| p.count).sum();
    Matrix {
        title,
        notes: vec![
            format!(
                "{total} migrations of every thread of the targets; row: the CPU moved from, \
                 column: the CPU moved to."
            ),
            "Colour: count on a log scale. Grey: none. CPUs grouped by NUMA node, L3 cache \
             and core, rows as columns."
                .to_string(),
        ],
        headers: axis.headers,
        row_gaps: axis.gaps.clone(),
        gaps: axis.gaps,
        cell_w: axis.cell_w,
        rows,
        total_head: "total",
        separators: axis.separators,
        row_separators,
        legend: Some(pair_legend(max)),
    }
}

fn pair_legend(max: u64) -> Legend {
    Legend {
        caption: "count, log scale",
        stops: &ORANGES,
        marks: [
            "1".into(),
            ((max as f64).ln_1p() / 2.0).exp_m1().round().to_string(),
            max.to_string(),
        ],
    }
}

/// Panel (c) without pair counts: a note saying why.
fn no_pairs(trace: &Trace, title: String) -> Matrix {
    let why = if trace.threads.iter().any(|t| t.migrations.total() > 0) {
        "This trace has no CPU pair counts (recorded before affin-trace kept them)."
    } else {
        "No migrations in this window."
    };
    Matrix {
        title,
        notes: vec![why.to_string()],
        headers: vec![],
        gaps: vec![],
        cell_w: 40,
        rows: vec![],
        total_head: "",
        separators: vec![],
        row_gaps: vec![],
        row_separators: vec![],
        legend: Some(pair_legend(1)),
    }
}

/// The CPUs in a pair, ordered and grouped as the heatmap's columns.
fn pair_columns(pairs: &[MigrationPair], topo: &Topology) -> Vec<Column> {
    let used: std::collections::BTreeSet<u32> = pairs.iter().flat_map(|p| [p.from, p.to]).collect();
    let mut cols: Vec<Column> = (used.iter())
        .map(|&cpu| match topo.cpus.iter().find(|c| c.id == cpu) {
            Some(c) => Column {
                cpu,
                node: Some(c.node),
                llc: Some(c.llc),
                core: Some(c.core),
            },
            None => Column {
                cpu,
                node: None,
                llc: None,
                core: None,
            },
        })
        .collect();
    cols.sort_by_key(|c| (c.node.is_none(), c.node, c.llc, c.core, c.cpu));
    cols
}

/// One row per source CPU: a log-scaled cell per destination and the total out.
fn pair_rows(pairs: &[MigrationPair], cols: &[Column], max: u64) -> Vec<Row> {
    let count = |from: u32, to: u32| {
        pairs
            .iter()
            .find(|p| p.from == from && p.to == to)
            .map_or(0, |p| p.count)
    };
    let log = |n: u64| (n as f64).ln_1p() / (max as f64).ln_1p();
    let group = |c: &Column| match (c.node, c.llc, c.core) {
        (Some(n), Some(l), Some(k)) => format!(" (core {k}, L3 {l}, node {n})"),
        _ => " (not online)".to_string(),
    };
    (cols.iter())
        .map(|from| {
            let cells = (cols.iter())
                .map(|to| count_cell(count(from.cpu, to.cpu), log))
                .collect();
            let out: u64 = (pairs.iter())
                .filter(|p| p.from == from.cpu)
                .map(|p| p.count)
                .sum();
            Row {
                label: format!("from CPU {}{}", from.cpu, group(from)),
                cells,
                total: format!("{out} out"),
            }
        })
        .collect()
}

/// Panel (b): thread x migration distance class.
fn migrations(trace: &Trace, threads: &[&ThreadTrace]) -> Matrix {
    const CLASSES: [(&str, &str); 4] = [
        ("SMT sibling", "same core"),
        ("same L3", "other core"),
        ("cross-L3", "same node"),
        ("cross-NUMA", "other node"),
    ];
    let counts = |t: &ThreadTrace| {
        let m = &t.migrations;
        [m.smt, m.llc, m.cross_llc, m.cross_numa]
    };
    let max = threads
        .iter()
        .flat_map(|t| counts(t))
        .max()
        .unwrap_or(0)
        .max(1);
    let log = |n: u64| (n as f64).ln_1p() / (max as f64).ln_1p();
    let secs = trace.duration_ns as f64 / 1e9;
    let rows = threads
        .iter()
        .map(|t| {
            let cells = counts(t).into_iter().map(|n| count_cell(n, log)).collect();
            let total = t.migrations.total();
            let rate = if secs > 0.0 { total as f64 / secs } else { 0.0 };
            Row {
                label: row_label(t),
                cells,
                total: format!("{total} ({rate:.1}/s)"),
            }
        })
        .collect();
    let header = |name, ink, pick: fn((&'static str, &'static str)) -> &'static str| Header {
        name,
        ink,
        bracket: false,
        spans: (CLASSES.iter().enumerate())
            .map(|(i, c)| Span {
                first: i,
                last: i,
                labels: vec![pick(*c).to_string()],
            })
            .collect(),
    };
    // The scale's middle, in counts: log scale, so the geometric middle.
    let mid = ((max as f64).ln_1p() / 2.0).exp_m1().round();
    Matrix {
        title: title(trace, "(b) Migrations per thread by distance (count)"),
        notes: vec![
            "Colour: count on a log scale. Grey: none. Which CPUs they moved between: \
             panel (c)."
                .to_string(),
        ],
        headers: vec![
            header("", Ink::Head, |c| c.0),
            header("", Ink::Muted, |c| c.1),
        ],
        gaps: vec![GAP_CORE; CLASSES.len()],
        cell_w: CLASS_W,
        rows,
        total_head: "total (per s)",
        separators: vec![],
        row_gaps: vec![],
        row_separators: vec![],
        legend: Some(Legend {
            caption: "count, log scale",
            stops: &ORANGES,
            marks: ["1".into(), mid.to_string(), max.to_string()],
        }),
    }
}

/// Width of a period cell in panel (d).
const PERIOD_CELL_W: i32 = 10;
/// Fills of panel (d): quota used, throttled, after the unthrottle.
const RAN_FILL: RGBColor = BLUES[5];
const HELD_FILL: RGBColor = ORANGES[4];

/// Panel (d): one row per typical period, its cells as the text
/// report's strip ([`periods::strip`]).
fn period_matrix(trace: &Trace, typical: &[TypicalPeriod]) -> Matrix {
    let period_ms = typical.first().map_or(0.0, |p| p.period_ms);
    let cell_ms = period_ms / periods::CELLS as f64;
    let rows = (typical.iter().enumerate())
        .map(|(i, p)| Row {
            label: format!("period {}", i + 1),
            cells: p
                .strip
                .chars()
                .map(|ch| Cell {
                    fill: match ch {
                        periods::RAN => RAN_FILL,
                        periods::HELD => HELD_FILL,
                        _ => ZERO,
                    },
                    text: None,
                })
                .collect(),
            total: periods::caption(p),
        })
        .collect();
    // A label every 10 cells: the ms into the period there.
    let spans = (0..periods::CELLS / 10)
        .map(|k| Span {
            first: k * 10,
            last: k * 10,
            labels: vec![format!("{:.0}", k as f64 * 10.0 * cell_ms)],
        })
        .collect();
    Matrix {
        title: title(
            trace,
            "(d) CPU quota periods: the threads ran, then were throttled",
        ),
        notes: vec![format!(
            "Typical periods (quota ran out nearest the median), {period_ms:.0} ms each, \
             {cell_ms:.0} ms a cell: blue = quota used, orange = throttled, grey = after the \
             unthrottle."
        )],
        headers: vec![Header {
            name: "ms",
            ink: Ink::Muted,
            bracket: false,
            spans,
        }],
        gaps: vec![0; periods::CELLS],
        cell_w: PERIOD_CELL_W,
        rows,
        total_head: "threads at once",
        separators: vec![],
        row_gaps: vec![],
        row_separators: vec![],
        legend: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded 4-thread trace of pid 4242 on the 2-socket machine.
    fn trace() -> Trace {
        serde_json::from_str(include_str!(
            "../../../tests/fixtures/traces/server-2s-smt.json"
        ))
        .unwrap_or_else(|e| panic!("traces/server-2s-smt.json: {e}"))
    }

    fn topology(name: &str) -> Topology {
        crate::model::topology::fixtures::machine(name)
    }

    #[derive(Debug)]
    struct Rect {
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        fill: String,
    }

    #[derive(Debug)]
    struct Label {
        x: i32,
        y: i32,
        text: String,
        bold: bool,
    }

    /// The rectangles and texts of an SVG, parsed as XML.
    fn parse(svg: &str) -> (Vec<Rect>, Vec<Label>) {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        let num = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap().parse::<i32>().unwrap();
        let rects = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .map(|n| Rect {
                x: num(&n, "x"),
                y: num(&n, "y"),
                w: num(&n, "width"),
                h: num(&n, "height"),
                fill: n.attribute("fill").unwrap().to_string(),
            })
            .collect();
        let labels = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| Label {
                x: num(&n, "x"),
                y: num(&n, "y"),
                text: n.text().unwrap_or("").trim().to_string(),
                bold: n.attribute("font-weight") == Some("bold"),
            })
            .collect();
        (rects, labels)
    }

    /// Heatmap cells: the rectangles of a cell's size.
    fn cells(rects: &[Rect], w: i32) -> Vec<&Rect> {
        rects.iter().filter(|r| r.w == w && r.h == CELL_H).collect()
    }

    /// What lies in panel `tag` ("(a)", "(b)", "(c)"): below its title,
    /// above the next panel's.
    fn panel(svg: &str, tag: &str) -> (Vec<Rect>, Vec<Label>) {
        let (rects, labels) = parse(svg);
        let mut tops: Vec<(i32, bool)> = labels
            .iter()
            .filter(|l| l.bold && l.text.starts_with('('))
            .map(|l| (l.y, l.text.starts_with(tag)))
            .collect();
        tops.sort_unstable();
        let i = tops
            .iter()
            .position(|t| t.1)
            .unwrap_or_else(|| panic!("no panel {tag}"));
        let (top, bottom) = (tops[i].0, tops.get(i + 1).map_or(i32::MAX, |t| t.0));
        let inside = |y: i32| top < y && y < bottom;
        (
            rects.into_iter().filter(|r| inside(r.y)).collect(),
            labels.into_iter().filter(|l| inside(l.y)).collect(),
        )
    }

    fn distinct(v: impl Iterator<Item = i32>) -> Vec<i32> {
        let mut v: Vec<i32> = v.collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// CPU header labels (bold numbers), left to right.
    fn cpu_labels(labels: &[Label]) -> Vec<u32> {
        let mut cpus: Vec<(i32, u32)> = labels
            .iter()
            .filter(|l| l.bold)
            .filter_map(|l| l.text.parse().ok().map(|c| (l.x, c)))
            .collect();
        cpus.sort_unstable();
        cpus.into_iter().map(|(_, c)| c).collect()
    }

    #[test]
    fn periods_panel_draws_each_strip_and_its_threads() {
        let ms = 1_000_000;
        let bw = crate::model::bandwidth::BandwidthTrace {
            periods: vec![crate::model::bandwidth::PeriodRecord {
                start_ns: 0,
                exhausted_after_ns: Some(25 * ms),
                throttled_wall_ns: 75 * ms,
                running_at_exhaustion: 4,
                queued_at_exhaustion: 4,
                ..Default::default()
            }],
            ..Default::default()
        };
        let typical = periods::typical(&bw, 100 * ms, 100 * ms, periods::TYPICAL);
        let svg = render_svg_with(&trace(), &topology("server-2s-smt"), &typical).unwrap();
        let (rects, labels) = panel(&svg, "(d)");
        let strip = cells(&rects, PERIOD_CELL_W);
        assert_eq!(strip.len(), periods::CELLS);
        let fill = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        let n = |c: RGBColor| strip.iter().filter(|r| r.fill == fill(c)).count();
        assert_eq!((n(RAN_FILL), n(HELD_FILL)), (13, 37));
        assert_eq!(
            find(&labels, "4 threads ran 25 ms, then held 75 ms").len(),
            1
        );
        assert_eq!(find(&labels, "period 1").len(), 1);
        // Without periods there is no panel (d).
        let plain = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        assert!(!plain.contains("(d) CPU quota periods"));
    }

    fn find<'a>(labels: &'a [Label], text: &str) -> Vec<&'a Label> {
        labels.iter().filter(|l| l.text == text).collect()
    }

    #[test]
    fn heatmap_has_one_cell_per_thread_and_cpu() {
        let svg = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        let (rects, _) = panel(&svg, "(a)");
        let heat = cells(&rects, 40);
        assert_eq!(heat.len(), 4 * 20);
        // A full grid: 20 column positions x 4 row positions.
        assert_eq!(distinct(heat.iter().map(|r| r.x)).len(), 20);
        assert_eq!(distinct(heat.iter().map(|r| r.y)).len(), 4);
        // The migration matrix: 4 threads x 4 classes.
        let (rects, _) = panel(&svg, "(b)");
        assert_eq!(cells(&rects, CLASS_W).len(), 4 * 4);
    }

    #[test]
    fn every_thread_and_cpu_is_labelled_in_topology_order() {
        let svg = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        let (_, labels) = parse(&svg);
        for t in [
            "4242 server",
            "4243 steady",
            "4244 hopper",
            "4245 Web Content (exited)",
        ] {
            // Once per panel.
            assert_eq!(find(&labels, t).len(), 2, "{t}");
        }
        // Intel numbering: SMT siblings are N and N+10, sockets 0-4 / 5-9;
        // columns go node, L3, core, so siblings sit side by side.
        let expect: Vec<u32> = (0..10).flat_map(|c| [c, c + 10]).collect();
        let (_, labels) = panel(&svg, "(a)");
        assert_eq!(cpu_labels(&labels), expect);
        for group in ["node 0", "node 1", "L3 0", "L3 1", "core 0", "core 9"] {
            assert_eq!(find(&labels, group).len(), 1, "{group}");
        }
    }

    #[test]
    fn a_known_cell_shows_its_milliseconds_and_colour() {
        let svg = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        let (rects, labels) = panel(&svg, "(a)");
        let row_y = find(&labels, "4243 steady")[0].y;
        let cpu_x = |cpu: &str| {
            labels
                .iter()
                .find(|l| l.bold && l.text == cpu)
                .unwrap_or_else(|| panic!("no CPU label {cpu}"))
                .x
        };
        let cell = |cpu: &str| {
            let x = cpu_x(cpu);
            cells(&rects, 40)
                .into_iter()
                .find(|r| (r.x..r.x + r.w).contains(&x) && (r.y..r.y + r.h).contains(&row_y))
                .unwrap_or_else(|| panic!("no cell for steady on CPU {cpu}"))
        };
        let inside = |r: &Rect, l: &Label| {
            (r.x..r.x + r.w).contains(&l.x) && (r.y..r.y + r.h).contains(&l.y)
        };
        // steady: 2900 of its 2950 ms on CPU 3: the darkest end of the scale.
        let hot = cell("3");
        assert!(
            find(&labels, "2900").iter().any(|l| inside(hot, l)),
            "{hot:?}"
        );
        let RGBColor(r, g, b) = scale(&BLUES, 2900.0 / 2950.0);
        assert_eq!(hot.fill, format!("#{r:02X}{g:02X}{b:02X}"));
        // Never on CPU 5: grey and empty.
        let cold = cell("5");
        assert_eq!(cold.fill, "#ECECEC");
        assert!(!labels.iter().any(|l| inside(cold, l)));
        // The row total and the migration count of hopper leaving its node.
        assert_eq!(find(&labels, "2950 ms").len(), 1);
        let (_, labels) = panel(&svg, "(b)");
        assert_eq!(find(&labels, "47 (15.7/s)").len(), 1);
    }

    #[test]
    fn titles_name_the_pid_window_and_units() {
        let svg = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        let (_, labels) = parse(&svg);
        let a = "(a) On-CPU time per thread and CPU (ms), pid 4242, 3.00 s window";
        let b = "(b) Migrations per thread by distance (count), pid 4242, 3.00 s window";
        let c = "(c) Migrations by source and destination CPU (count), pid 4242, 3.00 s window";
        for title in [a, b, c] {
            assert_eq!(find(&labels, title).len(), 1, "{title}");
        }
        assert!(
            !labels
                .iter()
                .any(|l| l.text.contains("Not a source x destination")),
            "the pair matrix exists now"
        );
        for class in ["SMT sibling", "same L3", "cross-L3", "cross-NUMA"] {
            assert_eq!(find(&labels, class).len(), 1, "{class}");
        }
    }

    #[test]
    fn narrow_cells_keep_only_the_numbers_that_fit() {
        // 128 CPUs: 24 px cells, too narrow for "2900" but not for "60".
        let svg = render_svg(&trace(), &topology("epyc-64c")).unwrap();
        let (rects, labels) = panel(&svg, "(a)");
        assert_eq!(cells(&rects, 24).len(), 4 * 128);
        assert!(find(&labels, "2900").is_empty());
        let values = |t: &str| find(&labels, t).into_iter().filter(|l| !l.bold).count();
        assert_eq!(values("60"), 2);
        assert_eq!(cpu_labels(&labels).len(), 128);
    }

    #[test]
    fn cpus_missing_from_the_topology_get_their_own_columns() {
        // Recorded on 20 CPUs, drawn against a 2-CPU topology: CPUs 2-19
        // still appear, after the known ones, under "not online".
        let svg = render_svg(&trace(), &topology("vm-2cpu")).unwrap();
        let (rects, labels) = panel(&svg, "(a)");
        let cpus = cpu_labels(&labels);
        assert_eq!(cpus[..2], [0, 1]);
        // The trace used 13 distinct CPUs, 11 of them unknown to this topology.
        assert_eq!(cpus.len(), 2 + 11);
        assert_eq!(cells(&rects, 40).len(), 4 * 13);
        assert_eq!(find(&labels, "not online").len(), 1);
    }

    #[test]
    fn many_threads_are_cut_to_the_busiest_and_said_so() {
        let mut t = trace();
        let model = t.threads[1].clone();
        t.threads = (0..70u32)
            .map(|i| ThreadTrace {
                tid: 5000 + i,
                cpu_time_ns: u64::from(i) * 1_000_000,
                ..model.clone()
            })
            .collect();
        let svg = render_svg(&t, &topology("server-2s-smt")).unwrap();
        let (rects, _) = panel(&svg, "(a)");
        let (_, labels) = parse(&svg);
        assert_eq!(cells(&rects, 40).len(), MAX_ROWS * 20);
        assert_eq!(
            find(
                &labels,
                "Showing the 64 of 70 threads with the most on-CPU time."
            )
            .len(),
            1
        );
        // The six idlest (tids 5000-5005) are the ones left out.
        assert!(find(&labels, "5005 steady").is_empty());
        assert_eq!(find(&labels, "5006 steady").len(), 2);
    }

    #[test]
    fn no_cpu_known_anywhere_still_draws_the_threads() {
        let mut t = trace();
        t.threads.iter_mut().for_each(|th| th.per_cpu_ns.clear());
        let svg = render_svg(&t, &Topology::default()).unwrap();
        let (_, labels) = parse(&svg);
        assert!(cells(&panel(&svg, "(a)").0, 40).is_empty());
        assert_eq!(cells(&panel(&svg, "(b)").0, CLASS_W).len(), 4 * 4);
        assert_eq!(find(&labels, "2950 ms").len(), 1);
    }

    /// The pair matrix's cell for `from` -> `to`: the rectangle in the row
    /// labelled "from CPU <from> ..." and the column headed `to`.
    fn pair_cell<'a>(rects: &'a [Rect], labels: &[Label], from: u32, to: u32) -> &'a Rect {
        let row_y = labels
            .iter()
            .find(|l| l.text.starts_with(&format!("from CPU {from} ")))
            .unwrap_or_else(|| panic!("no row for CPU {from}"))
            .y;
        let col_x = labels
            .iter()
            .find(|l| l.bold && l.text == to.to_string())
            .unwrap_or_else(|| panic!("no column for CPU {to}"))
            .x;
        cells(rects, 40)
            .into_iter()
            .find(|r| (r.x..r.x + r.w).contains(&col_x) && (r.y..r.y + r.h).contains(&row_y))
            .unwrap_or_else(|| panic!("no cell {from} -> {to}"))
    }

    fn text_in<'a>(labels: &'a [Label], r: &Rect) -> Vec<&'a str> {
        labels
            .iter()
            .filter(|l| (r.x..r.x + r.w).contains(&l.x) && (r.y..r.y + r.h).contains(&l.y))
            .map(|l| l.text.as_str())
            .collect()
    }

    #[test]
    fn the_pair_matrix_has_a_cell_per_cpu_pair_with_its_count() {
        let svg = render_svg(&trace(), &topology("server-2s-smt")).unwrap();
        let (rects, labels) = panel(&svg, "(c)");
        // 13 CPUs appear in a pair: a 13 x 13 grid, grouped like (a).
        assert_eq!(cells(&rects, 40).len(), 13 * 13);
        assert_eq!(
            cpu_labels(&labels),
            vec![0, 10, 1, 11, 2, 3, 13, 4, 14, 6, 16, 7, 9]
        );
        for group in ["node 0", "node 1", "L3 0", "L3 1"] {
            assert_eq!(find(&labels, group).len(), 1, "{group}");
        }
        assert!(find(&labels, "to CPU").len() == 1);
        // The busiest pair, 4 -> 14 (100), is the darkest; 2 -> 6 says 6.
        let hot = pair_cell(&rects, &labels, 4, 14);
        assert_eq!(text_in(&labels, hot), ["100"]);
        let RGBColor(r, g, b) = scale(&ORANGES, 1.0);
        assert_eq!(hot.fill, format!("#{r:02X}{g:02X}{b:02X}"));
        assert_eq!(text_in(&labels, pair_cell(&rects, &labels, 2, 6)), ["6"]);
        // Never from 9 to 0: grey, empty. A CPU to itself is never a move.
        for (from, to) in [(9, 0), (3, 3)] {
            let cold = pair_cell(&rects, &labels, from, to);
            assert_eq!(cold.fill, "#ECECEC");
            assert!(text_in(&labels, cold).is_empty());
        }
        // Row totals: migrations out of each CPU; all 259 in the note.
        assert_eq!(find(&labels, "105 out").len(), 1, "CPU 4: 100 + 5");
        assert!(labels.iter().any(|l| l.text.starts_with("259 migrations")));
        let row = find(&labels, "from CPU 6 (core 6, L3 1, node 1)");
        assert_eq!(row.len(), 1);
    }

    #[test]
    fn a_trace_without_pair_counts_says_so() {
        let mut t = trace();
        t.migration_pairs.clear();
        let svg = render_svg(&t, &topology("server-2s-smt")).unwrap();
        let (rects, labels) = panel(&svg, "(c)");
        assert!(cells(&rects, 40).is_empty());
        assert!(
            labels
                .iter()
                .any(|l| l.text.starts_with("This trace has no CPU pair counts"))
        );
    }

    #[test]
    fn an_empty_trace_is_an_error() {
        let t = Trace::default();
        let e = render_svg(&t, &topology("vm-2cpu")).unwrap_err();
        assert!(matches!(e, PlotError::NoThreads));
    }

    #[test]
    fn comm_is_escaped() {
        let mut t = trace();
        t.threads[0].comm = "a<b&c>\"d'".into();
        let svg = render_svg(&t, &topology("vm-2cpu")).unwrap();
        let (_, labels) = parse(&svg);
        assert_eq!(find(&labels, "4242 a<b&c>\"d'").len(), 2);
    }

    #[test]
    fn milliseconds_are_short() {
        assert_eq!(ms_text(2_900_000_000), "2900");
        assert_eq!(ms_text(12_000_000), "12");
        assert_eq!(ms_text(4_000_000), "4.0");
        assert_eq!(ms_text(400_000), "0.40");
        assert_eq!(ms_text(1_000), "<0.01");
    }

    /// Every fixture machine renders a well-formed SVG with one heatmap
    /// column per CPU (the tests crate's plot_examples writes them to
    /// target/plot-examples/ for a person to look at).
    #[test]
    fn every_fixture_machine_renders() {
        for topo in ["server-2s-smt", "epyc-64c", "hybrid-laptop", "vm-2cpu"] {
            let svg = render_svg(&trace(), &topology(topo)).unwrap();
            roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{topo}: {e}"));
        }
    }
}
