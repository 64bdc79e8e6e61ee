//! Drawing a [`WatchState`]: a header, per-CPU busy bars (target and whole
//! machine), a row per thread, the class with its reasons and the
//! throttling finding, and a footer with the keys. Pure: draws into any
//! ratatui backend, so tests use `TestBackend`.

use ratatui::{
    Frame, Terminal,
    backend::Backend,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Paragraph, Row, Table, Wrap},
};

use super::state::{CpuBusy, SortKey, ThreadRow, WatchState};
use crate::report::fmt_ns;

/// Draws `state` on `terminal` (one frame).
pub fn draw_to<B: Backend>(terminal: &mut Terminal<B>, state: &WatchState) -> Result<(), B::Error> {
    terminal.draw(|f| render(f, state)).map(|_| ())
}

/// Lays out and draws one frame.
pub fn render(frame: &mut Frame<'_>, s: &WatchState) {
    let area = frame.area();
    let verdict = verdict_lines(s);
    let verdict_h = wrapped_height(&verdict, area.width.saturating_sub(2)) + 2;
    // The CPU panel takes at most a third of the screen; the threads get
    // what is left after the verdict.
    let max_cpu_rows = (area.height / 3).saturating_sub(2).max(1);
    let cpu_grid = CpuGrid::new(s.cpus.len(), area.width.saturating_sub(2), max_cpu_rows);
    let [header, cpus, threads, verdict_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(cpu_grid.height() + 2),
        Constraint::Min(4),
        Constraint::Length(verdict_h),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(s)), header);
    render_cpus(frame, cpus, &s.cpus, &cpu_grid);
    render_threads(frame, threads, s);
    frame.render_widget(
        Paragraph::new(verdict)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" verdict so far ")),
        verdict_area,
    );
    frame.render_widget(Paragraph::new(footer_line(s.sort)), footer);
}

fn bold() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

fn header_line(s: &WatchState) -> Line<'static> {
    let pids: Vec<String> = s.pids.iter().map(u32::to_string).collect();
    let mut spans = vec![
        Span::styled("affin-trace --watch", bold()),
        Span::raw(format!("  pid {}", pids.join(","))),
    ];
    if s.intervals == 0 {
        spans.push(Span::raw("  waiting for the first interval"));
    } else {
        spans.push(Span::raw(format!(
            "  {} threads  {:.1} s ({:.2} s interval)  process {:.2} CPUs, {:.0} migr/s",
            s.rows.len(),
            s.elapsed_ns as f64 / 1e9,
            s.interval_ns as f64 / 1e9,
            s.process_cpus,
            s.process_migrations_per_s,
        )));
    }
    Line::from(spans)
}

fn footer_line(sort: SortKey) -> Line<'static> {
    let key = |k: &'static str| Span::styled(k, Style::new().add_modifier(Modifier::REVERSED));
    Line::from(vec![
        key("q"),
        Span::raw(" quit  sort: "),
        key("c"),
        Span::raw(" on-CPU "),
        key("m"),
        Span::raw(" migr/s "),
        key("r"),
        Span::raw(" runq p99 "),
        key("t"),
        Span::raw(" tid  "),
        key("^L"),
        Span::raw(" redraw  "),
        Span::styled(format!("sorted by {}", sort.label()), bold()),
    ])
}

/// How the CPU entries are laid out: in columns, CPU numbers running down
/// each column; cut (with a note) when there are more rows than room.
struct CpuGrid {
    n: usize,
    cols: usize,
    /// Rows of entries drawn.
    rows: usize,
    /// CPUs left out for lack of room.
    hidden: usize,
    col_w: usize,
    bar_w: usize,
}

/// Between two columns of CPU entries.
const GAP: usize = 3;

/// Width of an entry without its two bars: the "cpu N" label and two
/// " 100%" figures with a " | " between.
fn fixed_w(n: usize) -> usize {
    label_w(n) + 2 * 5 + 3
}

/// "cpu " and the widest CPU number, plus a space.
fn label_w(n: usize) -> usize {
    4 + n.saturating_sub(1).max(1).to_string().len() + 1
}

impl CpuGrid {
    fn new(n: usize, width: u16, max_rows: u16) -> Self {
        let width = usize::from(width);
        let min_col = fixed_w(n) + 2 * 6;
        let fit = ((width + GAP) / (min_col + GAP)).max(1);
        let mut rows = n.div_ceil(fit).max(1);
        let cols = n.div_ceil(rows).max(1);
        let max_rows = usize::from(max_rows).max(1);
        let mut hidden = 0;
        if rows > max_rows {
            // One row goes to the note.
            rows = (max_rows - 1).max(1);
            hidden = n.saturating_sub(rows * cols);
        }
        let col_w = ((width + GAP) / cols).saturating_sub(GAP);
        let bar_w = (col_w.saturating_sub(fixed_w(n)) / 2).clamp(1, 30);
        Self {
            n,
            cols,
            rows,
            hidden,
            col_w,
            bar_w,
        }
    }

    fn height(&self) -> u16 {
        (self.rows + usize::from(self.hidden > 0)) as u16
    }
}

/// A horizontal bar of `w` cells filled to `pct` (0..=100), in eighths.
fn bar(pct: f64, w: usize) -> (String, String) {
    const PARTIAL: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let eighths = ((pct.clamp(0.0, 100.0) / 100.0) * (w * 8) as f64).round() as usize;
    let full = eighths / 8;
    let mut filled = "█".repeat(full);
    filled.push_str(PARTIAL[eighths % 8]);
    let used = full + usize::from(!eighths.is_multiple_of(8));
    (filled, "·".repeat(w.saturating_sub(used)))
}

fn pct_text(p: f64) -> String {
    format!("{:>4}", format!("{:.0}%", p.clamp(0.0, 100.0)))
}

fn cpu_entry(c: &CpuBusy, g: &CpuGrid) -> Vec<Span<'static>> {
    let dim = Style::new().fg(Color::DarkGray);
    let (t_on, t_off) = bar(c.target_pct, g.bar_w);
    let (m_on, m_off) = bar(c.machine_pct, g.bar_w);
    let label = format!("cpu {:<w$}", c.cpu, w = label_w(g.n) - 4);
    let mut spans = vec![
        Span::styled(label, bold()),
        Span::styled(t_on, Style::new().fg(Color::Green)),
        Span::styled(t_off, dim),
        Span::raw(format!(" {} | ", pct_text(c.target_pct))),
        Span::styled(m_on, Style::new().fg(Color::Blue)),
        Span::styled(m_off, dim),
        Span::raw(format!(" {}", pct_text(c.machine_pct))),
    ];
    let used = fixed_w(g.n) + 2 * g.bar_w;
    spans.push(Span::raw(" ".repeat(g.col_w.saturating_sub(used))));
    spans
}

fn render_cpus(frame: &mut Frame<'_>, area: Rect, cpus: &[CpuBusy], g: &CpuGrid) {
    let mut lines: Vec<Line<'static>> = (0..g.rows)
        .map(|r| {
            let mut spans = Vec::new();
            // Column-major: CPU numbers run down each column.
            for c in cpus.iter().skip(r).step_by(g.rows).take(g.cols) {
                if !spans.is_empty() {
                    spans.push(Span::raw(" ".repeat(GAP)));
                }
                spans.extend(cpu_entry(c, g));
            }
            Line::from(spans)
        })
        .collect();
    if g.hidden > 0 {
        lines.push(Line::styled(
            format!("+{} more CPUs: make the terminal taller", g.hidden),
            Style::new().fg(Color::DarkGray),
        ));
    }
    if cpus.is_empty() {
        lines.push(Line::raw("waiting for the first interval"));
    }
    let title = Line::from(vec![
        Span::raw(" CPU busy, last interval: "),
        Span::styled("target", Style::new().fg(Color::Green)),
        Span::raw(" | "),
        Span::styled("whole machine", Style::new().fg(Color::Blue)),
        Span::raw(" "),
    ]);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn thread_row(r: &ThreadRow) -> Row<'static> {
    let right = |s: String| Cell::from(Line::from(s).right_aligned());
    let migr = if r.migrations_per_s < 10.0 {
        format!("{:.1}", r.migrations_per_s)
    } else {
        format!("{:.0}", r.migrations_per_s)
    };
    let row = Row::new(vec![
        right(r.tid.to_string()),
        Cell::from(crate::report::escape::text(&r.comm).into_owned()),
        right(r.cpu_now.map_or_else(|| "-".to_string(), |c| c.to_string())),
        right(format!("{:.1}%", r.on_cpu_pct)),
        right(migr),
        right(fmt_ns(r.runq_p99_ns)),
        Cell::from(if r.exited { "(exited)" } else { "" }),
    ]);
    if r.exited {
        row.style(Style::new().fg(Color::DarkGray))
    } else {
        row
    }
}

fn render_threads(frame: &mut Frame<'_>, area: Rect, s: &WatchState) {
    let mark = |k: SortKey, name: &str| {
        let arrow = match (s.sort == k, k) {
            (false, _) => "",
            (true, SortKey::Tid) => "▲",
            (true, _) => "▼",
        };
        Cell::from(Line::from(format!("{name}{arrow}")).right_aligned())
    };
    let header = Row::new(vec![
        mark(SortKey::Tid, "TID"),
        Cell::from("COMM"),
        Cell::from(Line::from("CPU").right_aligned()),
        mark(SortKey::OnCpu, "ON-CPU"),
        mark(SortKey::Migrations, "MIGR/S"),
        mark(SortKey::Runq, "RUNQ p99"),
        Cell::from(""),
    ])
    .style(bold());
    let visible = usize::from(area.height.saturating_sub(3));
    let shown = if s.rows.len() > visible {
        format!("{} of {} shown", visible, s.rows.len())
    } else {
        s.rows.len().to_string()
    };
    let title = format!(
        " threads ({shown}): on-CPU and migrations in the last interval, run-queue p99 since start "
    );
    let widths = [
        Constraint::Length(8),
        Constraint::Length(16),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(8),
    ];
    let table = Table::new(s.rows.iter().take(visible).map(thread_row), widths)
        .header(header)
        .block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

fn verdict_lines(s: &WatchState) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match &s.class {
        Some(c) => lines.push(Line::from(vec![
            Span::styled("class: ", bold()),
            Span::styled(c.class.to_string(), bold().fg(Color::Cyan)),
            Span::raw(format!(" ({})", c.summary())),
        ])),
        None => lines.push(Line::from("class: waiting for the first interval")),
    }
    if let Some(f) = &s.throttling {
        lines.push(Line::from(vec![
            Span::styled("throttling: ", bold().fg(Color::Red)),
            Span::raw(f.clone()),
        ]));
    }
    lines
}

/// Rows `lines` take when wrapped at `width` (an estimate by characters:
/// word wrapping can take a row more, which only hides the last one).
fn wrapped_height(lines: &[Line<'_>], width: u16) -> u16 {
    let w = usize::from(width.max(1));
    lines
        .iter()
        .map(|l| l.width().div_ceil(w).max(1) as u16)
        .sum()
}

#[cfg(test)]
mod tests {
    use ratatui::{
        backend::TestBackend,
        crossterm::event::{KeyCode, KeyEvent, KeyModifiers},
    };

    use super::*;
    use crate::{
        analyze::classify::Thresholds,
        model::cgroup::{CgroupLimit, CgroupVersion, CpuQuota, CpuStatDelta},
        report::watch::state::tests::{SEC, busy, demo_trace, now, snap, vm_2cpu},
    };

    fn screen(s: &WatchState, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        draw_to(&mut t, s).expect("draw");
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
            .collect()
    }

    /// The demo fixture's second interval.
    fn state() -> WatchState {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&demo_trace(1), &busy, &topo));
        s.update(&snap(&demo_trace(2), &busy, &topo));
        s.fill_now(10, |_, tid| now(tid % 2));
        s
    }

    fn line_with<'a>(screen: &'a [String], needle: &str) -> &'a str {
        screen
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{}", screen.join("\n")))
    }

    #[test]
    fn shows_a_row_per_thread_with_its_figures() {
        let sc = screen(&state(), 110, 30);
        let hopper = line_with(&sc, "hopper");
        assert!(hopper.contains("103"), "{hopper}");
        assert!(hopper.contains("50.0%"), "{hopper}");
        assert!(hopper.contains(" 200 "), "{hopper}");
        assert!(hopper.contains(" 1 "), "CPU now: {hopper}");
        for comm in ["main", "steady", "sleeper"] {
            line_with(&sc, comm);
        }
        let header = line_with(&sc, "COMM");
        assert!(header.contains("ON-CPU▼"), "{header}");
        assert!(line_with(&sc, "affin-trace --watch").contains("pid 100"));
        assert!(line_with(&sc, "quit").contains("sorted by on-CPU"));
    }

    #[test]
    fn a_hostile_name_is_shown_escaped() {
        let mut s = state();
        s.rows[0].comm = "\u{202e}evil\x1b[2J".into();
        let sc = screen(&s, 110, 30);
        // The column is 16 wide: the escaped name is cut there.
        let row = line_with(&sc, "evil");
        assert!(row.contains("\\u{202e}evil\\x1b"), "{row}");
        assert!(
            !sc.iter()
                .any(|l| l.contains('\u{202e}') || l.contains('\x1b'))
        );
    }

    #[test]
    fn shows_the_class_with_a_reason() {
        let s = state();
        let class = s.class.clone().expect("classified");
        let sc = screen(&s, 110, 30);
        let line = line_with(&sc, "class: ");
        assert!(line.contains(class.class.as_str()), "{line}");
        let first_reason: String = class.reasons[0].chars().take(12).collect();
        assert!(line.contains(&first_reason), "{line} vs {first_reason}");
        assert!(!sc.iter().any(|l| l.contains("throttling:")));
    }

    #[test]
    fn labels_per_cpu_bars_with_cpu_numbers() {
        let sc = screen(&state(), 110, 30);
        let cpu0 = line_with(&sc, "cpu 0");
        // Target 96%, machine 99% (state's fixture); both CPUs fit one row.
        assert!(cpu0.contains("96%") && cpu0.contains("99%"), "{cpu0}");
        assert!(cpu0.contains('█'), "{cpu0}");
        assert!(cpu0.contains("cpu 1"), "two columns: {cpu0}");
        let narrow = screen(&state(), 60, 30);
        assert!(line_with(&narrow, "cpu 1").contains("40%"));
        assert!(!line_with(&narrow, "cpu 0").contains("cpu 1"));
    }

    #[test]
    fn a_key_reorders_the_rows_on_screen() {
        let mut s = state();
        let order = |sc: &[String]| {
            ["steady", "hopper", "sleeper"].map(|c| sc.iter().position(|l| l.contains(c)))
        };
        let before = order(&screen(&s, 110, 30));
        assert!(before[0] < before[1] && before[1] < before[2], "{before:?}");
        s.handle_key(KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE));
        let sc = screen(&s, 110, 30);
        let after = order(&sc);
        assert!(after[1] < after[2] && after[2] < after[0], "{after:?}");
        assert!(line_with(&sc, "COMM").contains("MIGR/S▼"));
        assert!(line_with(&sc, "quit").contains("sorted by migrations/s"));
    }

    #[test]
    fn shows_the_throttling_finding_under_a_quota() {
        // The pod's 0.5 CPU quota (as host::cgroup resolves the
        // v2-kubepods fixture).
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c.slice";
        let ctr = format!("{pod}/cri-containerd-9a1b.scope");
        let limit = CgroupLimit {
            version: CgroupVersion::V2,
            cgroup: pod.to_string(),
            dir: format!("/sys/fs/cgroup{pod}").into(),
            quota: CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            },
            target_cgroup: ctr.clone(),
            target_dir: format!("/sys/fs/cgroup{ctr}").into(),
            pressure_dir: Some(format!("/sys/fs/cgroup{ctr}").into()),
            burst_us: None,
            cpuset_cpus: None,
        };
        let window = CpuStatDelta {
            nr_periods: 20,
            nr_throttled: 18,
            throttled_ns: 3 * SEC,
            ..Default::default()
        };
        let (topo, busy, trace) = (vm_2cpu(), busy(), demo_trace(2));
        let mut sn = snap(&trace, &busy, &topo);
        sn.cgroup_limit = Some(&limit);
        sn.cgroup_window = Some(&window);
        let mut s = WatchState::new(Thresholds::default());
        s.update(&sn);
        let sc = screen(&s, 140, 30);
        let line = line_with(&sc, "throttling: ");
        assert!(line.contains("quota 0.5 CPU"), "{line}");
        assert!(line.contains("throttled in 90% of periods"), "{line}");
        // A quota that never throttled says nothing.
        let quiet = CpuStatDelta {
            nr_periods: 20,
            ..Default::default()
        };
        sn.cgroup_window = Some(&quiet);
        s.update(&sn);
        assert!(
            !screen(&s, 140, 30)
                .iter()
                .any(|l| l.contains("throttling:"))
        );
    }

    #[test]
    fn an_exited_thread_shows_a_dash_for_its_cpu() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut trace = demo_trace(2);
        trace.threads[3].exited = true; // hopper
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&trace, &busy, &topo));
        s.fill_now(10, |_, _| now(1));
        let sc = screen(&s, 110, 30);
        let hopper = line_with(&sc, "hopper");
        assert!(hopper.contains("(exited)"), "{hopper}");
        let cpu_col: String = hopper
            .split("hopper")
            .nth(1)
            .unwrap_or_default()
            .chars()
            .take(20)
            .collect();
        assert_eq!(cpu_col.split_whitespace().next(), Some("-"), "{hopper}");
    }

    #[test]
    fn before_the_first_interval_it_says_it_is_waiting() {
        let sc = screen(&WatchState::new(Thresholds::default()), 80, 20);
        assert!(line_with(&sc, "affin-trace --watch").contains("waiting for the first interval"));
        line_with(&sc, "class: waiting");
    }

    #[test]
    fn many_cpus_are_laid_out_in_columns_and_cut_with_a_note() {
        let mut s = state();
        s.cpus = (0..64)
            .map(|cpu| CpuBusy {
                cpu,
                target_pct: 50.0,
                machine_pct: 100.0,
            })
            .collect();
        let tall = screen(&s, 200, 80);
        // 5 columns of 13 rows: 0, 13, 26, 39, 52 on the first row.
        assert!(line_with(&tall, "cpu 0 ").contains("cpu 52"), "5 columns");
        assert!(line_with(&tall, "cpu 63").contains("cpu 50"));
        // 5 rows of 5 columns and a note: 0..=24 shown, contiguous.
        let short = screen(&s, 200, 24);
        assert!(line_with(&short, "cpu 0 ").contains("cpu 20"));
        assert!(line_with(&short, "more CPUs").starts_with("│+39 more CPUs"));
        line_with(&short, "hopper");
        line_with(&short, "class: ");
    }

    #[test]
    fn a_tiny_terminal_does_not_panic() {
        for (w, h) in [(1, 1), (10, 3), (30, 8)] {
            screen(&state(), w, h);
        }
    }

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(0.0, 4), (String::new(), "····".into()));
        assert_eq!(bar(100.0, 4), ("████".into(), String::new()));
        assert_eq!(bar(50.0, 3), ("█▌".into(), "·".into()));
        assert_eq!(bar(250.0, 2).0, "██", "clamped");
    }
}
