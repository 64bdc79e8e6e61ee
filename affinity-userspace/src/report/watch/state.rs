//! What the live view shows, as plain values derived from each
//! [`Snapshot`]: per-interval figures per thread and per CPU, the class so
//! far with its reasons, and the throttling finding. Pure apart from the
//! "CPU now" reader, which is passed in.
//!
//! The trace holds cumulative counters; the view wants the last interval.
//! On-CPU time per interval is in the trace (`cpu_ns_per_interval`); the
//! migration count and per-CPU time are cumulative, so the previous
//! snapshot's values are kept here, per tid, and subtracted.

use std::collections::{BTreeMap, HashMap};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::{
    analyze::classify::{Classification, Thresholds},
    analyze::decision::{self, TargetFacts},
    model::snapshot::Snapshot,
};

/// How the thread rows are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// On-CPU % in the last interval, highest first.
    #[default]
    OnCpu,
    /// Migrations per second in the last interval, highest first.
    Migrations,
    /// Run-queue p99 since the start, highest first.
    Runq,
    /// Thread id, lowest first.
    Tid,
}

impl SortKey {
    /// For the footer.
    pub fn label(self) -> &'static str {
        match self {
            SortKey::OnCpu => "on-CPU",
            SortKey::Migrations => "migrations/s",
            SortKey::Runq => "run-queue p99",
            SortKey::Tid => "tid",
        }
    }
}

/// One thread's row.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadRow {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub tgid: u32,
    /// Thread name: the trace's, or the current one from /proc (the
    /// kernel side records it at creation and at exit, so a thread that
    /// renamed itself shows its new name only here until it exits).
    pub comm: String,
    /// The CPU it last ran on (/proc stat field 39); `None` once exited or
    /// not read.
    pub cpu_now: Option<u32>,
    /// On-CPU time in the last interval, % of one CPU.
    pub on_cpu_pct: f64,
    /// Migrations per second in the last interval.
    pub migrations_per_s: f64,
    /// Run-queue (wakeup-to-run) p99 since tracing started (ns).
    pub runq_p99_ns: Option<u64>,
    /// Exited during the window.
    pub exited: bool,
}

pub use crate::model::snapshot::TaskNow;

/// One CPU's busy share in the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuBusy {
    /// Logical CPU number.
    pub cpu: u32,
    /// Time the target's threads ran there, % of the interval.
    pub target_pct: f64,
    /// Time anything ran there (/proc/stat), % of the interval.
    pub machine_pct: f64,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    /// End the window (q, Esc, Ctrl-C).
    Quit,
    /// The sort order changed: draw again.
    Resorted,
    /// Clear and repaint the whole screen (Ctrl-L), after other output
    /// (a traced command's) wrote over it.
    Repaint,
    /// Nothing to do.
    Ignored,
}

/// Cumulative values of one thread at the previous snapshot.
#[derive(Clone, Debug, Default)]
struct Prev {
    migrations: u64,
    per_cpu_ns: BTreeMap<u32, u64>,
}

/// Everything the view draws, plus what the next update subtracts.
#[derive(Clone, Debug)]
pub struct WatchState {
    /// Row order.
    pub sort: SortKey,
    /// One row per selected thread, in `sort` order.
    pub rows: Vec<ThreadRow>,
    /// One entry per online CPU, by number.
    pub cpus: Vec<CpuBusy>,
    /// The process's class over the window so far, with its reasons.
    pub class: Option<Classification>,
    /// The throttling finding, when the quota throttled.
    pub throttling: Option<String>,
    /// Target processes.
    pub pids: Vec<u32>,
    /// Time since tracing started (ns).
    pub elapsed_ns: u64,
    /// Wall ns of the last interval.
    pub interval_ns: u64,
    /// Intervals read so far.
    pub intervals: usize,
    /// On-CPU time of all rows in the last interval, in CPUs.
    pub process_cpus: f64,
    /// Migrations of all rows in the last interval, per second.
    pub process_migrations_per_s: f64,
    thresholds: Thresholds,
    prev: HashMap<u32, Prev>,
}

impl WatchState {
    /// An empty view ("waiting for the first interval") that will classify
    /// with `thresholds`.
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            sort: SortKey::default(),
            rows: Vec::new(),
            cpus: Vec::new(),
            class: None,
            throttling: None,
            pids: Vec::new(),
            elapsed_ns: 0,
            interval_ns: 0,
            intervals: 0,
            process_cpus: 0.0,
            process_migrations_per_s: 0.0,
            thresholds,
            prev: HashMap::new(),
        }
    }

    /// Takes in one interval's snapshot. "CPU now" is left unread: see
    /// [`WatchState::fill_now`].
    pub fn update(&mut self, snap: &Snapshot<'_>) {
        let trace = snap.trace;
        let wall = snap.interval_ns.max(1) as f64;
        let mut target_ns: BTreeMap<u32, u64> = BTreeMap::new();
        let mut prev = HashMap::with_capacity(self.prev.len());
        self.rows.clear();
        for t in trace.selected_threads() {
            let before = self.prev.remove(&t.tid).unwrap_or_default();
            let migrations = t.migrations.total();
            for (&cpu, &ns) in &t.per_cpu_ns {
                let was = before.per_cpu_ns.get(&cpu).copied().unwrap_or(0);
                *target_ns.entry(cpu).or_default() += ns.saturating_sub(was);
            }
            let last_ns = t.cpu_ns_per_interval.last().copied().unwrap_or(0);
            self.rows.push(ThreadRow {
                tid: t.tid,
                tgid: t.tgid,
                comm: t.comm.clone(),
                cpu_now: None,
                on_cpu_pct: last_ns as f64 / wall * 100.0,
                migrations_per_s: migrations.saturating_sub(before.migrations) as f64 / wall * 1e9,
                runq_p99_ns: t.runq.quantile(0.99),
                exited: t.exited,
            });
            prev.insert(
                t.tid,
                Prev {
                    migrations,
                    per_cpu_ns: t.per_cpu_ns.clone(),
                },
            );
        }
        self.prev = prev;
        self.cpus = snap
            .topology
            .cpus
            .iter()
            .map(|c| CpuBusy {
                cpu: c.id,
                target_pct: target_ns.get(&c.id).copied().unwrap_or(0) as f64 / wall * 100.0,
                machine_pct: snap.interval_busy_ns.get(&c.id).copied().unwrap_or(0) as f64 / wall
                    * 100.0,
            })
            .collect();
        self.process_cpus = self.rows.iter().map(|r| r.on_cpu_pct).sum::<f64>() / 100.0;
        self.process_migrations_per_s = self.rows.iter().map(|r| r.migrations_per_s).sum();
        // The facts the session reads at the end (cpuset, NUMA memory) only
        // shape the recommendation, which the view does not show.
        self.class = (!trace.intervals.is_empty()).then(|| {
            decision::analyze(
                trace,
                snap.topology,
                &self.thresholds,
                &TargetFacts::default(),
            )
            .classification
            .process
        });
        let throttling =
            crate::analyze::throttle::analyze(trace, snap.cgroup_limit, snap.cgroup_window);
        self.throttling = (!throttling.is_quiet()).then_some(throttling.finding);
        self.pids = trace.pids.clone();
        self.elapsed_ns = trace.duration_ns;
        self.interval_ns = snap.interval_ns;
        self.intervals = trace.intervals.len();
        self.sort_rows();
    }

    /// Reads "CPU now" and the current name for the first `n` rows (a
    /// screen's worth: with thousands of threads, reading every one each
    /// interval would cost more than the trace) with `read(tgid, tid)`;
    /// exited threads are not read.
    pub fn fill_now(&mut self, n: usize, mut read: impl FnMut(u32, u32) -> Option<TaskNow>) {
        for r in self.rows.iter_mut().take(n) {
            let now = if r.exited { None } else { read(r.tgid, r.tid) };
            r.cpu_now = now.as_ref().map(|t| t.cpu);
            if let Some(t) = now.filter(|t| !t.comm.is_empty()) {
                r.comm = t.comm;
            }
        }
    }

    /// Applies a key: sort keys reorder the rows, quit keys end the window.
    /// In raw mode Ctrl-C arrives here as a key, not as SIGINT.
    pub fn handle_key(&mut self, key: KeyEvent) -> KeyAction {
        if key.kind != KeyEventKind::Press {
            return KeyAction::Ignored;
        }
        let sort = if key.modifiers.contains(KeyModifiers::CONTROL) {
            match key.code {
                KeyCode::Char('c') => return KeyAction::Quit,
                KeyCode::Char('l') => return KeyAction::Repaint,
                _ => return KeyAction::Ignored,
            }
        } else {
            match key.code {
                KeyCode::Char('q' | 'Q') | KeyCode::Esc => return KeyAction::Quit,
                KeyCode::Char('c' | 'C') => SortKey::OnCpu,
                KeyCode::Char('m' | 'M') => SortKey::Migrations,
                KeyCode::Char('r' | 'R') => SortKey::Runq,
                KeyCode::Char('t' | 'T') => SortKey::Tid,
                _ => return KeyAction::Ignored,
            }
        };
        self.sort = sort;
        self.sort_rows();
        KeyAction::Resorted
    }

    fn sort_rows(&mut self) {
        let desc = |a: f64, b: f64| b.total_cmp(&a);
        match self.sort {
            SortKey::OnCpu => self
                .rows
                .sort_by(|a, b| desc(a.on_cpu_pct, b.on_cpu_pct).then(a.tid.cmp(&b.tid))),
            SortKey::Migrations => self.rows.sort_by(|a, b| {
                desc(a.migrations_per_s, b.migrations_per_s).then(a.tid.cmp(&b.tid))
            }),
            // None (no wakeups yet) sorts below every figure.
            SortKey::Runq => self
                .rows
                .sort_by(|a, b| b.runq_p99_ns.cmp(&a.runq_p99_ns).then(a.tid.cmp(&b.tid))),
            SortKey::Tid => self.rows.sort_by_key(|r| r.tid),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::{
        model::topology::Topology,
        model::{Interval, MigrationsByClass, RunqLatency, ThreadTrace, Trace},
    };

    pub(crate) const SEC: u64 = 1_000_000_000;

    pub(crate) fn vm_2cpu() -> Topology {
        crate::model::topology::fixtures::machine("vm-2cpu")
    }

    fn runq(bucket: usize, count: u64) -> RunqLatency {
        let mut hist = vec![0; crate::model::RUNQ_BUCKETS];
        hist[bucket] = count;
        RunqLatency {
            hist,
            count,
            total_ns: count << bucket,
            max_ns: 2 << bucket,
        }
    }

    /// The demo's threads after `n` intervals of 1 s: `steady` spins on
    /// CPU 0, `hopper` spins half the time and moves 200 times a second,
    /// `sleeper` barely runs.
    pub(crate) fn demo_trace(n: u64) -> Trace {
        let th =
            |tid: u32, comm: &str, per: u64, migr: u64, cpus: [u64; 2], q: usize| ThreadTrace {
                tid,
                tgid: 100,
                comm: comm.into(),
                cpu_time_ns: per * n,
                per_cpu_ns: [(0, cpus[0] * n), (1, cpus[1] * n)]
                    .into_iter()
                    .filter(|&(_, ns)| ns > 0)
                    .collect(),
                migrations: MigrationsByClass {
                    llc: migr * n,
                    ..Default::default()
                },
                runq: runq(q, 100 * n),
                cpu_ns_per_interval: vec![per; n as usize],
                voluntary_switches: 10 * n,
                ..Default::default()
            };
        Trace {
            pids: vec![100],
            duration_ns: n * SEC,
            interval_ns: SEC,
            threads: vec![
                th(100, "main", 0, 0, [0, 0], 10),
                th(101, "steady", 700_000_000, 2, [700_000_000, 0], 12),
                th(102, "sleeper", 20_000_000, 50, [10_000_000, 10_000_000], 22),
                th(
                    103,
                    "hopper",
                    500_000_000,
                    200,
                    [250_000_000, 250_000_000],
                    18,
                ),
            ],
            intervals: vec![
                Interval {
                    wall_ns: SEC,
                    cpu_ns: 1_220_000_000,
                    ..Default::default()
                };
                n as usize
            ],
            nr_cpus: 2,
            ..Default::default()
        }
    }

    pub(crate) fn busy() -> BTreeMap<u32, u64> {
        [(0, 990_000_000), (1, 400_000_000)].into()
    }

    pub(crate) fn snap<'a>(
        trace: &'a Trace,
        busy: &'a BTreeMap<u32, u64>,
        topology: &'a Topology,
    ) -> Snapshot<'a> {
        Snapshot {
            trace,
            interval_busy_ns: busy,
            interval_ns: SEC,
            topology,
            cgroup_limit: None,
            cgroup_window: None,
        }
    }

    fn row<'a>(s: &'a WatchState, comm: &str) -> &'a ThreadRow {
        s.rows.iter().find(|r| r.comm == comm).expect(comm)
    }

    #[test]
    fn figures_are_per_interval_from_cumulative_counters() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        let first = demo_trace(1);
        s.update(&snap(&first, &busy, &topo));
        let second = demo_trace(2);
        s.update(&snap(&second, &busy, &topo));
        // The second interval alone, not the cumulative 2 s.
        let hopper = row(&s, "hopper");
        assert!((hopper.on_cpu_pct - 50.0).abs() < 1e-9);
        assert!((hopper.migrations_per_s - 200.0).abs() < 1e-9);
        assert!(hopper.runq_p99_ns.is_some_and(|p| p >= 1 << 18));
        assert!((s.process_cpus - 1.22).abs() < 1e-9);
        assert!((s.process_migrations_per_s - 252.0).abs() < 1e-9);
        // CPU 0: steady 0.70 + sleeper 0.01 + hopper 0.25 of the interval.
        assert_eq!(s.cpus.len(), 2);
        assert!((s.cpus[0].target_pct - 96.0).abs() < 1e-9);
        assert!((s.cpus[1].target_pct - 26.0).abs() < 1e-9);
        assert!((s.cpus[0].machine_pct - 99.0).abs() < 1e-9);
        assert!((s.cpus[1].machine_pct - 40.0).abs() < 1e-9);
        assert_eq!(s.intervals, 2);
        assert_eq!(s.elapsed_ns, 2 * SEC);
    }

    #[test]
    fn a_thread_first_seen_counts_from_zero() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&demo_trace(3), &busy, &topo));
        assert!((row(&s, "hopper").migrations_per_s - 600.0).abs() < 1e-9);
    }

    #[test]
    fn class_and_throttling_follow_the_trace() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        assert!(s.class.is_none());
        s.update(&snap(&demo_trace(2), &busy, &topo));
        let class = s.class.as_ref().expect("classified");
        assert!(!class.reasons.is_empty());
        assert!(s.throttling.is_none(), "no quota: nothing to say");
    }

    #[test]
    fn rows_sort_by_the_chosen_key() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&demo_trace(1), &busy, &topo));
        let order = |s: &WatchState| s.rows.iter().map(|r| r.tid).collect::<Vec<_>>();
        assert_eq!(order(&s), [101, 103, 102, 100], "on-CPU by default");
        let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        assert_eq!(s.handle_key(key('m')), KeyAction::Resorted);
        assert_eq!(order(&s), [103, 102, 101, 100]);
        assert_eq!(s.handle_key(key('r')), KeyAction::Resorted);
        assert_eq!(order(&s), [102, 103, 101, 100]);
        assert_eq!(s.handle_key(key('t')), KeyAction::Resorted);
        assert_eq!(order(&s), [100, 101, 102, 103]);
        assert_eq!(s.sort, SortKey::Tid);
        assert_eq!(s.handle_key(key('x')), KeyAction::Ignored);
    }

    #[test]
    fn quit_keys_include_ctrl_c() {
        let mut s = WatchState::new(Thresholds::default());
        for key in [
            KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE),
            KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE),
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        ] {
            assert_eq!(s.handle_key(key), KeyAction::Quit, "{key:?}");
        }
        let ctrl_l = KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL);
        assert_eq!(s.handle_key(ctrl_l), KeyAction::Repaint);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(s.handle_key(release), KeyAction::Ignored);
    }

    pub(crate) fn now(cpu: u32) -> Option<TaskNow> {
        Some(TaskNow {
            cpu,
            comm: String::new(),
        })
    }

    #[test]
    fn cpu_now_is_read_for_visible_live_rows_only() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut trace = demo_trace(1);
        trace.threads[1].exited = true; // steady, the first row
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&trace, &busy, &topo));
        let mut asked = Vec::new();
        s.fill_now(3, |_, tid| {
            asked.push(tid);
            now(1)
        });
        assert_eq!(asked, [103, 102]);
        assert_eq!(s.rows[0].cpu_now, None);
        assert_eq!(s.rows[1].cpu_now, Some(1));
        assert_eq!(s.rows[3].cpu_now, None);
    }

    #[test]
    fn a_renamed_thread_shows_its_current_name() {
        let (topo, busy) = (vm_2cpu(), busy());
        let mut s = WatchState::new(Thresholds::default());
        s.update(&snap(&demo_trace(1), &busy, &topo));
        s.fill_now(10, |_, tid| {
            Some(TaskNow {
                cpu: 0,
                comm: if tid == 103 {
                    "hopper-2".into()
                } else {
                    String::new()
                },
            })
        });
        assert!(s.rows.iter().any(|r| r.comm == "hopper-2"));
        assert!(s.rows.iter().any(|r| r.comm == "steady"), "empty: kept");
    }
}
