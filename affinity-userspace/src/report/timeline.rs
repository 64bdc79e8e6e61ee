//! The `--timeline` file: the targets' scheduler events as a Chrome JSON
//! trace ("Trace Event Format"), which ui.perfetto.dev and chrome://tracing
//! open. Pure: recorded events in, JSON out; the ring buffer is read by
//! [`crate::kernel::probe::Probe::drain_timeline`] and the session.
//!
//! Events (from affinity-ebpf, [`TimelineEvent`]): `sched_switch` with a
//! target thread on either side, `sched_migrate_task` and
//! `sched_wakeup`/`sched_wakeup_new` of target threads, with
//! `bpf_ktime_get_ns()` timestamps (CLOCK_MONOTONIC).
//!
//! What the file shows (timestamps in microseconds since the trace start,
//! to the nanosecond):
//! - a process "CPUs" with one track per CPU (named with its core, L3 and
//!   node, in topology order): a complete ("X") slice per stretch a target
//!   thread ran there, named `comm tid`;
//! - one track per target thread (under its process): "CPU n" slices while
//!   it ran, "runnable (woken)" / "runnable (preempted)" slices while it
//!   waited for a CPU;
//! - each migration as a flow arrow ("s" then "f", `bp: "e"`) from a short
//!   marker slice on the source CPU's track to one on the destination's,
//!   at the moment of the move (which is usually while the thread is off
//!   CPU, hence the markers);
//! - with a CPU quota, a "CPU quota throttling" track with one slice per
//!   interval in which the cgroup was throttled (the kernel counts
//!   throttling per period in cpu.stat, which affin-trace reads once per
//!   interval: the slice says the interval had throttled periods, not
//!   which milliseconds of it were throttled);
//! - lost events: `otherData.lost_events`, and a global instant event at
//!   the start naming the count, so a gap is never silent.
//!
//! Slices are rebuilt per CPU: a switch-in opens one, the switch-out of the
//! same thread on that CPU closes it. A switch-out with nothing open is a
//! thread that was already running when tracing began when it is the
//! CPU's first event (its slice starts at 0), otherwise a lost switch-in
//! (counted in `incomplete_slices`, not drawn); slices still open at the
//! end close at the end.

use std::{collections::BTreeMap, io::Write};

use affinity_common::{EV_MIGRATE, EV_SWITCH, EV_WAKEUP, EVF_DEAD, EVF_PREEMPTED, TimelineEvent};
use serde::Serialize;
use serde_json::{Value, json, value::RawValue};

use super::heldback::{self, HeldBack};
use crate::{model::Trace, model::topology::Topology};

/// Synthetic process holding the CPU tracks (above any real pid).
pub const CPU_PID: u32 = 4_000_000_000;
/// Synthetic thread ids of the CPU tracks: `CPU_TID_BASE + cpu`.
pub const CPU_TID_BASE: u32 = 4_000_000_001;
/// Synthetic thread id of the throttling track (in the "CPUs" process).
pub const THROTTLE_TID: u32 = CPU_PID;
/// Synthetic thread id of the quota's period track, next to the
/// throttling track (its slices would not nest in the interval slices).
pub const PERIOD_TID: u32 = CPU_PID - 1;
/// Longest migration marker slice (ns).
const MARK_NS: u64 = 20_000;
/// Margin kept between a marker and the edges of the slice it sits in
/// (ns): Perfetto reads microsecond floats back to integer ns, which can
/// be 1 ns off, and nesting needs the child strictly inside.
const EDGE_NS: u64 = 4;

/// One interval's CPU-quota throttling, from the cgroup's cpu.stat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottledSpan {
    /// Interval start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Interval end (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    /// Enforcement periods that elapsed.
    pub nr_periods: u64,
    /// Of which throttled.
    pub nr_throttled: u64,
    /// Throttled time, summed over CPUs (ns).
    pub throttled_ns: u64,
}

/// Most events a Chrome JSON timeline keeps by default
/// (`--timeline-max-events`): the file is built from all of them when the
/// window ends, about 1.3 KB of memory for each kept event at its peak
/// (measured: 400,000 events, 508 MB above the start; 20,000, 7 MB). The
/// default keeps that near 130 MB; a Perfetto file streams instead.
pub const CHROME_MAX_EVENTS: u64 = 100_000;

/// One throttled enforcement period, from the kernel's throttle path:
/// the quota used from `start_ns` for `ran_ns`, then throttled `held_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodSlice {
    /// The period began (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// The group ran this long before the quota ran out (ns).
    pub ran_ns: u64,
    /// Then it was held (ns), at most to the period's end.
    pub held_ns: u64,
    /// CPUs running its threads when the quota ran out.
    pub running: u32,
    /// Its threads queued then.
    pub queued: u32,
}

/// The throttled periods of `bw` as slices, `period_ns` long at most.
pub fn period_slices(
    bw: &crate::model::bandwidth::BandwidthTrace,
    period_ns: u64,
) -> Vec<PeriodSlice> {
    (bw.periods.iter())
        .filter_map(|p| {
            let ran = p.exhausted_after_ns?.min(period_ns);
            Some(PeriodSlice {
                start_ns: p.start_ns,
                ran_ns: ran,
                held_ns: p.throttled_wall_ns.min(period_ns - ran),
                running: p.running_at_exhaustion,
                queued: p.queued_at_exhaustion,
            })
        })
        .collect()
}

/// The two slices of a period: (start, length, name) each.
pub fn period_parts(p: &PeriodSlice) -> [(u64, u64, String); 2] {
    let ms = |ns: u64| ns as f64 / 1e6;
    [
        (
            p.start_ns,
            p.ran_ns,
            format!(
                "quota used: {} thread{} ran {:.1} ms",
                p.running,
                if p.running == 1 { "" } else { "s" },
                ms(p.ran_ns)
            ),
        ),
        (
            p.start_ns + p.ran_ns,
            p.held_ns,
            format!("throttled {:.1} ms", ms(p.held_ns)),
        ),
    ]
}

/// What one traced window recorded for the timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capture {
    /// Events as drained (any order); none when they were streamed.
    pub events: Vec<TimelineEvent>,
    /// Events drained from the ring, streamed or kept.
    pub drained: u64,
    /// CLOCK_MONOTONIC ns when tracing began: time 0 of the file.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when the window ended.
    pub end_ns: u64,
    /// Events the programs could not write (ring buffer full).
    pub lost_events: u64,
    /// Size of the ring buffer (bytes).
    pub ring_buffer_bytes: u64,
    /// Per-interval throttling, with a CPU quota.
    pub throttled: Vec<ThrottledSpan>,
    /// The quota in force ("0.50 CPUs (50000/100000 us) on /sys/fs/cgroup/x"),
    /// `None` without one.
    pub quota: Option<String>,
    /// Most events kept in `events` (`None`: all). Streamed events are
    /// not kept, so only a Chrome JSON timeline reaches it.
    pub keep_at_most: Option<u64>,
    /// Events drained past `keep_at_most`: counted, not kept.
    pub truncated_events: u64,
    /// CLOCK_MONOTONIC ns of the first event not kept: the timeline stops
    /// there.
    pub truncated_at_ns: Option<u64>,
    /// Throttled periods from the kernel's throttle path, where it ran.
    pub periods: Vec<PeriodSlice>,
}

impl Capture {
    /// Holds `events` to `keep_at_most` after a drain appended to it: the
    /// rest are counted, and the earliest of them marks where the
    /// timeline stops.
    pub fn hold_to_cap(&mut self) {
        let Some(max) = self.keep_at_most.map(|m| m as usize) else {
            return;
        };
        if self.events.len() <= max {
            return;
        }
        let first = self.events[max..].iter().map(|e| e.ts_ns).min();
        self.truncated_at_ns = self.truncated_at_ns.or(first);
        self.truncated_events += (self.events.len() - max) as u64;
        self.events.truncate(max);
    }
}

/// Counts of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Events read from the kernel.
    pub events: u64,
    /// Events lost in the kernel.
    pub lost_events: u64,
    /// Slices on CPU tracks.
    pub cpu_slices: u64,
    /// Migration arrows.
    pub migration_flows: u64,
    /// Switch-outs whose switch-in was lost (not drawn).
    pub incomplete_slices: u64,
    /// Slices whose switch-in was not seen, started at their end minus
    /// their on-CPU time.
    pub inferred_starts: u64,
    /// Intervals marked as throttled.
    pub throttled_intervals: u64,
    /// Events past `--timeline-max-events`: not in the file.
    pub truncated_events: u64,
    /// Throttled periods drawn (two slices each).
    pub throttled_periods: u64,
    /// Counter tracks of preempting neighbours (see `report::heldback`).
    pub neighbour_tracks: u64,
}

/// One trace event of the output, with its sort key.
#[derive(Debug, Serialize)]
struct Ev {
    #[serde(skip)]
    at_ns: u64,
    name: String,
    cat: &'static str,
    ph: &'static str,
    ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bp: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    /// Kept as its JSON text: a built `Value` map costs about 1 KB an
    /// event, and a file holds a few events for each kernel event.
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<Box<RawValue>>,
}

/// `args` as JSON text (`None` for null).
fn raw(v: Value) -> Option<Box<RawValue>> {
    (!v.is_null())
        .then(|| serde_json::value::to_raw_value(&v).ok())
        .flatten()
}

/// Nanoseconds as the format's microseconds.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn cpu_tid(cpu: u32) -> u32 {
    CPU_TID_BASE.saturating_add(cpu)
}

/// How a stretch on a CPU ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SliceEnd {
    /// Left the CPU runnable.
    Preempted,
    /// Left the CPU to sleep.
    Blocked,
    /// Left the CPU for good.
    Exited,
    /// Still running when the window ended.
    WindowEnd,
}

impl SliceEnd {
    /// How a switch-out with these `EVF_*` flags ended its slice.
    fn of_flags(flags: u32) -> SliceEnd {
        if flags & EVF_DEAD != 0 {
            SliceEnd::Exited
        } else if flags & EVF_PREEMPTED != 0 {
            SliceEnd::Preempted
        } else {
            SliceEnd::Blocked
        }
    }

    /// The `ended` arg of the file.
    fn as_str(self) -> &'static str {
        match self {
            SliceEnd::Preempted => "preempted",
            SliceEnd::Blocked => "blocked",
            SliceEnd::Exited => "exited",
            SliceEnd::WindowEnd => "window end",
        }
    }
}

/// Why a thread waited for a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitKind {
    /// Woken from sleep.
    Woken,
    /// Preempted while running.
    Preempted,
}

impl WaitKind {
    fn as_str(self) -> &'static str {
        match self {
            WaitKind::Woken => "woken",
            WaitKind::Preempted => "preempted",
        }
    }
}

/// A stretch of one thread on one CPU (ns since start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slice {
    start: u64,
    end: u64,
    tid: u32,
    how: SliceEnd,
    /// Its on-CPU time by the task's clock (`sum_exec_runtime`), when known.
    cpu_ns: Option<u64>,
    /// Its switch-in was not seen: the start is the end minus `cpu_ns`.
    inferred: bool,
}

#[derive(Clone, Copy, Debug)]
enum ThreadState {
    Running,
    Runnable { since: u64, why: WaitKind },
    Off,
}

#[derive(Clone, Copy, Debug)]
struct Migration {
    at: u64,
    tid: u32,
    from: u32,
    to: u32,
}

/// The file's events and its summary, built from a capture.
pub struct Chrome {
    events: Vec<Ev>,
    other: Value,
    /// What it holds.
    pub summary: Summary,
}

/// Thread names and processes from the trace.
struct Names<'a> {
    threads: BTreeMap<u32, (u32, &'a str)>,
}

impl<'a> Names<'a> {
    fn from_trace(trace: &'a Trace) -> Names<'a> {
        Names {
            threads: (trace.threads.iter())
                .map(|t| (t.tid, (t.tgid, t.comm.as_str())))
                .collect(),
        }
    }

    fn of(&self, tid: u32) -> (u32, String) {
        match self.threads.get(&tid) {
            Some((tgid, comm)) => (*tgid, format!("{comm} {tid}")),
            None => (tid, format!("tid {tid}")),
        }
    }
}

/// A complete ("X") slice.
fn slice_ev(
    at: u64,
    len: u64,
    name: String,
    cat: &'static str,
    track: (u32, u32),
    args: Value,
) -> Ev {
    Ev {
        at_ns: at,
        name,
        cat,
        ph: "X",
        ts: us(at),
        dur: Some(us(len)),
        pid: track.0,
        tid: track.1,
        id: None,
        bp: None,
        s: None,
        args: raw(args),
    }
}

/// Rebuilds per-CPU slices, thread waits and migrations from the events in
/// time order: the state machine of the module doc.
struct Rebuild<'n> {
    names: &'n Names<'n>,
    /// Per CPU: the open slice (tid, start).
    open: BTreeMap<u32, (u32, u64)>,
    /// Per CPU: whether any event was seen.
    seen: BTreeMap<u32, bool>,
    slices: BTreeMap<u32, Vec<Slice>>,
    state: BTreeMap<u32, ThreadState>,
    /// Per thread: sum_exec_runtime at its last switch (out, or in).
    sums: BTreeMap<u32, u64>,
    /// Per CPU: the time of its last event.
    last_at: BTreeMap<u32, u64>,
    migrations: Vec<Migration>,
    /// Runnable slices of the thread tracks.
    waits: Vec<Ev>,
    incomplete: u64,
    inferred: u64,
}

impl<'n> Rebuild<'n> {
    fn new(names: &'n Names<'n>) -> Rebuild<'n> {
        Rebuild {
            names,
            open: BTreeMap::new(),
            seen: BTreeMap::new(),
            slices: BTreeMap::new(),
            state: BTreeMap::new(),
            sums: BTreeMap::new(),
            last_at: BTreeMap::new(),
            migrations: Vec::new(),
            waits: Vec::new(),
            incomplete: 0,
            inferred: 0,
        }
    }

    /// One event at `t` (ns since start).
    fn event(&mut self, e: &TimelineEvent, t: u64) {
        match e.kind {
            EV_SWITCH => self.switch(e, t),
            EV_WAKEUP => self.wakeup(e.a, t),
            EV_MIGRATE => self.migrations.push(Migration {
                at: t,
                tid: e.a,
                from: e.cpu,
                to: e.b,
            }),
            _ => {}
        }
    }

    fn runnable(&mut self, tid: u32, since: u64, until: u64, why: WaitKind) {
        if until > since {
            let (pid, _) = self.names.of(tid);
            let name = format!("runnable ({})", why.as_str());
            (self.waits).push(slice_ev(
                since,
                until - since,
                name,
                "runnable",
                (pid, tid),
                Value::Null,
            ));
        }
    }

    fn switch(&mut self, e: &TimelineEvent, t: u64) {
        let first = !self.seen.insert(e.cpu, true).unwrap_or(false);
        let prev_at = self.last_at.insert(e.cpu, t).unwrap_or(0);
        if e.a == 0 && e.b != 0 && e.sum_exec_ns != 0 {
            self.sums.insert(e.b, e.sum_exec_ns);
        }
        if e.a != 0 {
            self.switch_out(e, t, first, prev_at);
        }
        if e.b != 0 {
            self.switch_in(e.cpu, e.b, t);
        }
    }

    fn switch_out(&mut self, e: &TimelineEvent, t: u64, first: bool, prev_at: u64) {
        let how = SliceEnd::of_flags(e.flags);
        let cpu_ns = match e.sum_exec_ns {
            0 => None,
            now => (self.sums.insert(e.a, now)).map(|before| now.saturating_sub(before)),
        };
        let start = match (self.open.get(&e.cpu), cpu_ns) {
            (Some(&(tid, s)), _) if tid == e.a => Some((s, false)),
            // Resumed with no switch-in event: it ran for cpu_ns up to
            // now, after the CPU's last event.
            (None, Some(ns)) => Some((t.saturating_sub(ns).max(prev_at), true)),
            // No earlier sight of it: running since before the trace began.
            (None, None) if first => Some((0, false)),
            _ => None,
        };
        match start {
            Some((s, inferred)) => {
                self.open.remove(&e.cpu);
                self.inferred += u64::from(inferred);
                self.slices.entry(e.cpu).or_default().push(Slice {
                    start: s,
                    end: t,
                    tid: e.a,
                    how,
                    cpu_ns,
                    inferred,
                });
            }
            None => self.incomplete += 1,
        }
        let next = match how {
            SliceEnd::Preempted => ThreadState::Runnable {
                since: t,
                why: WaitKind::Preempted,
            },
            _ => ThreadState::Off,
        };
        self.state.insert(e.a, next);
    }

    fn switch_in(&mut self, cpu: u32, tid: u32, t: u64) {
        if self.open.remove(&cpu).is_some() {
            // Its switch-out was lost: end unknown, not drawn.
            self.incomplete += 1;
        }
        // Still open elsewhere: that switch-out was lost too.
        let before = self.open.len();
        self.open.retain(|_, (open_tid, _)| *open_tid != tid);
        self.incomplete += (before - self.open.len()) as u64;
        if let Some(ThreadState::Runnable { since, why }) = self.state.get(&tid).copied() {
            self.runnable(tid, since, t, why);
        }
        self.state.insert(tid, ThreadState::Running);
        self.open.insert(cpu, (tid, t));
    }

    /// A new thread's first wakeup (EVF_NEW) reads as any other.
    fn wakeup(&mut self, tid: u32, t: u64) {
        match self.state.get(&tid) {
            // Woken while still on its CPU, or already waiting since a
            // preemption: no new wait starts.
            Some(ThreadState::Running | ThreadState::Runnable { .. }) => {}
            _ => {
                let st = ThreadState::Runnable {
                    since: t,
                    why: WaitKind::Woken,
                };
                self.state.insert(tid, st);
            }
        }
    }

    /// Closes what is still open at `end`.
    fn finish(&mut self, end: u64) {
        for (cpu, (tid, s)) in std::mem::take(&mut self.open) {
            self.slices.entry(cpu).or_default().push(Slice {
                start: s,
                end: end.max(s),
                tid,
                how: SliceEnd::WindowEnd,
                cpu_ns: None,
                inferred: false,
            });
        }
        for (tid, st) in std::mem::take(&mut self.state) {
            if let ThreadState::Runnable { since, why } = st {
                self.runnable(tid, since, end, why);
            }
        }
    }
}

/// Builds the Chrome trace of `cap`, naming threads from `trace` and CPUs
/// from `topo`.
pub fn build(cap: &Capture, trace: &Trace, topo: &Topology) -> Chrome {
    build_unless(cap, trace, topo, || false).expect("never stopped")
}

/// [`build`], given up (`None`) as soon as `stop` says so: a million events
/// take seconds, and a second signal must not wait for them. Checked every
/// few thousand events and between the steps.
pub fn build_unless(
    cap: &Capture,
    trace: &Trace,
    topo: &Topology,
    stop: impl Fn() -> bool,
) -> Option<Chrome> {
    let names = Names::from_trace(trace);
    let window = cap.end_ns.saturating_sub(cap.start_ns);
    // A truncated capture is drawn up to its first event not kept: a
    // thread on a CPU then is not drawn running to the window's end.
    let end = cap
        .truncated_at_ns
        .map_or(window, |t| t.saturating_sub(cap.start_ns).min(window));
    let rel = |ts: u64| ts.saturating_sub(cap.start_ns).min(end);
    let mut sorted: Vec<&TimelineEvent> = cap.events.iter().collect();
    sorted.sort_by_key(|e| e.ts_ns);
    let mut rb = Rebuild::new(&names);
    for (i, &e) in sorted.iter().enumerate() {
        if i % 4096 == 0 && stop() {
            return None;
        }
        rb.event(e, rel(e.ts_ns));
    }
    rb.finish(end);
    if stop() {
        return None;
    }
    let mut summary = Summary {
        events: cap.events.len() as u64,
        lost_events: cap.lost_events,
        incomplete_slices: rb.incomplete,
        inferred_starts: rb.inferred,
        truncated_events: cap.truncated_events,
        ..Summary::default()
    };
    let mut out = std::mem::take(&mut rb.waits);
    summary.cpu_slices = cpu_slice_events(&rb.slices, &names, &mut out);
    if stop() {
        return None;
    }
    summary.migration_flows = migration_events(&rb, end, &mut out);
    summary.throttled_intervals = throttle_events(cap, rel, &mut out);
    summary.throttled_periods = period_events(cap, rel, &mut out);
    summary.neighbour_tracks = neighbour_events(&sorted, trace, rel, &mut out);
    if cap.lost_events > 0 {
        out.push(lost_event(cap.lost_events));
    }
    if cap.truncated_events > 0 {
        out.push(truncated_event(cap, end));
    }
    out.sort_by_key(|e| e.at_ns);
    if stop() {
        return None;
    }
    let mut events = metadata(&rb.slices, &names, topo, cap);
    events.append(&mut out);
    Some(Chrome {
        events,
        other: other_data(cap, trace, window, &summary),
        summary,
    })
}

/// Each slice on its CPU's track and on its thread's; returns how many.
fn cpu_slice_events(
    slices: &BTreeMap<u32, Vec<Slice>>,
    names: &Names<'_>,
    out: &mut Vec<Ev>,
) -> u64 {
    let mut n = 0;
    for (cpu, list) in slices {
        for sl in list {
            let (pid, name) = names.of(sl.tid);
            let len = sl.end - sl.start;
            let args = slice_args(sl, json!({ "tid": sl.tid, "pid": pid }));
            out.push(slice_ev(
                sl.start,
                len,
                name,
                "on_cpu",
                (CPU_PID, cpu_tid(*cpu)),
                args,
            ));
            let args = slice_args(sl, json!({ "cpu": cpu }));
            out.push(slice_ev(
                sl.start,
                len,
                format!("CPU {cpu}"),
                "on_cpu",
                (pid, sl.tid),
                args,
            ));
            n += 1;
        }
    }
    n
}

/// Each migration as a marker slice on both CPUs' tracks joined by a flow
/// arrow; returns how many.
fn migration_events(rb: &Rebuild<'_>, end: u64, out: &mut Vec<Ev>) -> u64 {
    let mut marks = Markers {
        slices: &rb.slices,
        last_end: BTreeMap::new(),
        end,
    };
    for (i, m) in rb.migrations.iter().enumerate() {
        let id = i as u64 + 1;
        let (_, who) = rb.names.of(m.tid);
        let args = json!({ "tid": m.tid, "from": m.from, "to": m.to });
        let ends = [
            (m.from, format!("{who} -> CPU {}", m.to), "s", None),
            (m.to, format!("{who} <- CPU {}", m.from), "f", Some("e")),
        ];
        for (cpu, label, ph, bp) in ends {
            let (a, b) = marks.place(cpu, m.at);
            let track = (CPU_PID, cpu_tid(cpu));
            out.push(slice_ev(a, b - a, label, "migration", track, args.clone()));
            let mid = a + (b - a) / 2;
            out.push(Ev {
                at_ns: mid,
                name: "migration".into(),
                cat: "migration",
                ph,
                ts: us(mid),
                dur: None,
                pid: CPU_PID,
                tid: cpu_tid(cpu),
                id: Some(id),
                bp,
                s: None,
                args: None,
            });
        }
    }
    rb.migrations.len() as u64
}

/// The throttled intervals on the throttling track; returns how many.
fn throttle_events(cap: &Capture, rel: impl Fn(u64) -> u64, out: &mut Vec<Ev>) -> u64 {
    let mut n = 0;
    for span in &cap.throttled {
        if span.nr_throttled == 0 && span.throttled_ns == 0 {
            continue;
        }
        let (a, b) = (rel(span.start_ns), rel(span.end_ns));
        let name = format!(
            "throttled: {} of {} periods, {:.1} ms",
            span.nr_throttled,
            span.nr_periods,
            span.throttled_ns as f64 / 1e6
        );
        let args = json!({
            "nr_periods": span.nr_periods,
            "nr_throttled": span.nr_throttled,
            "throttled_ns": span.throttled_ns,
            "meaning": "this interval had throttled periods (cpu.stat); not which ms",
        });
        let track = (CPU_PID, THROTTLE_TID);
        out.push(slice_ev(
            a,
            b.saturating_sub(a),
            name,
            "throttling",
            track,
            args,
        ));
        n += 1;
    }
    n
}

/// Each throttled period as two slices on the period track, quota used
/// then throttled; returns how many periods.
fn period_events(cap: &Capture, rel: impl Fn(u64) -> u64, out: &mut Vec<Ev>) -> u64 {
    for p in &cap.periods {
        for (i, (at, len, name)) in period_parts(p).into_iter().enumerate() {
            let args = json!({
                "running_threads": p.running,
                "queued_threads": p.queued,
                "part": if i == 0 { "quota used" } else { "throttled" },
            });
            // Clipped to the window: the first period began before the
            // trace did, and its slices must still meet end to start.
            let (a, b) = (rel(at), rel(at + len));
            out.push(slice_ev(
                a,
                b - a,
                name,
                "quota_period",
                (CPU_PID, PERIOD_TID),
                args,
            ));
        }
    }
    cap.periods.len() as u64
}

/// One counter track per preempting neighbour: the target threads it
/// holds back over time (`report::heldback`); returns how many tracks.
fn neighbour_events(
    sorted: &[&TimelineEvent],
    trace: &Trace,
    rel: impl Fn(u64) -> u64,
    out: &mut Vec<Ev>,
) -> u64 {
    let mut held = HeldBack::default();
    let mut changes = Vec::new();
    for e in sorted {
        held.event(e, &mut changes);
    }
    // Each track's name, made once (a storm has a change per switch).
    let mut names: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    for c in changes {
        let at = rel(c.at);
        let name = names.entry(c.neighbour).or_insert_with(|| {
            let comm = (trace.neighbours.iter()).find(|n| n.tgid == c.neighbour);
            heldback::track_name(c.neighbour, comm.map(|n| n.comm.as_str()))
        });
        out.push(Ev {
            at_ns: at,
            name: name.clone(),
            cat: "neighbour",
            ph: "C",
            ts: us(at),
            dur: None,
            pid: CPU_PID,
            tid: CPU_PID,
            id: None,
            bp: None,
            s: None,
            args: raw(json!({ "threads": c.held })),
        });
    }
    names.len() as u64
}

/// The global instant at the start that names the lost events.
fn lost_event(lost: u64) -> Ev {
    Ev {
        at_ns: 0,
        name: format!("{lost} events LOST (ring buffer full): this timeline has gaps"),
        cat: "lost",
        ph: "i",
        ts: 0.0,
        dur: None,
        pid: CPU_PID,
        tid: CPU_PID,
        id: None,
        bp: None,
        s: Some("g"),
        args: raw(json!({ "lost_events": lost })),
    }
}

/// The global instant where a capped capture stops.
fn truncated_event(cap: &Capture, end: u64) -> Ev {
    Ev {
        at_ns: end,
        name: format!(
            "TRUNCATED: {} later events not kept (at most {} in a Chrome JSON timeline; \
             a .pftrace file streams them all)",
            cap.truncated_events,
            cap.keep_at_most.unwrap_or(0)
        ),
        cat: "truncated",
        ph: "i",
        ts: us(end),
        dur: None,
        pid: 0,
        tid: 0,
        id: None,
        bp: None,
        s: Some("g"),
        args: raw(json!({
            "truncated_events": cap.truncated_events,
            "max_events": cap.keep_at_most,
        })),
    }
}

/// The file's `otherData`: what was recorded and the counts.
fn other_data(cap: &Capture, trace: &Trace, end: u64, summary: &Summary) -> Value {
    json!({
        "tool": "affin-trace",
        "version": env!("CARGO_PKG_VERSION"),
        "clock": "CLOCK_MONOTONIC (bpf_ktime_get_ns); ts in microseconds since the trace start",
        "start_monotonic_ns": cap.start_ns,
        "duration_ns": end,
        "pids": trace.pids,
        "events": summary.events,
        "lost_events": summary.lost_events,
        "ring_buffer_bytes": cap.ring_buffer_bytes,
        "cpu_slices": summary.cpu_slices,
        "migration_flows": summary.migration_flows,
        "incomplete_slices": summary.incomplete_slices,
        "inferred_starts": summary.inferred_starts,
        "cpu_quota": cap.quota,
        "throttled_intervals": summary.throttled_intervals,
        "truncated_events": summary.truncated_events,
        "truncated_at_ns": cap.truncated_at_ns.map(|t| t.saturating_sub(cap.start_ns)),
        "throttled_periods": summary.throttled_periods,
    })
}
/// A slice's args: `base` plus how it ended, its on-CPU time by the task's
/// clock (the rest of its length is steal and interrupts) and whether its
/// start was inferred.
fn slice_args(sl: &Slice, mut base: Value) -> Value {
    base["ended"] = json!(sl.how.as_str());
    if let Some(ns) = sl.cpu_ns {
        base["cpu_ns"] = json!(ns);
    }
    if sl.inferred {
        base["start"] = json!("inferred: switch-in not seen; end minus on-CPU time");
    }
    base
}

/// Places migration marker slices so that each sits wholly inside one
/// on-CPU slice or one gap between slices, and markers on one CPU never
/// overlap: JSON slices on a track must nest.
struct Markers<'a> {
    slices: &'a BTreeMap<u32, Vec<Slice>>,
    last_end: BTreeMap<u32, u64>,
    end: u64,
}

impl Markers<'_> {
    /// `[a, b)` on `cpu`, at or soon after `at`.
    fn place(&mut self, cpu: u32, at: u64) -> (u64, u64) {
        let list = self.slices.get(&cpu).map_or(&[][..], Vec::as_slice);
        let mut t = at.max(self.last_end.get(&cpu).copied().unwrap_or(0));
        // A few regions at most: each failed one moves `t` to its end.
        for _ in 0..8 {
            // The slice holding t, or the gap it is in.
            let i = list.partition_point(|s| s.end <= t);
            let (lo, hi, inside) = match list.get(i) {
                Some(s) if s.start <= t => (s.start + EDGE_NS, s.end.saturating_sub(EDGE_NS), true),
                Some(s) => (0, s.start, false),
                None => (0, u64::MAX, false),
            };
            let a = t.max(lo);
            let b = hi.min(a + MARK_NS);
            if b >= a + 2 * EDGE_NS {
                self.last_end.insert(cpu, b);
                return (a, b);
            }
            t = if inside { hi + EDGE_NS } else { hi };
        }
        // Only slices of a few ns ahead: past the last one (never reached
        // in practice; keeps the marker valid).
        let a = t.max(list.last().map_or(0, |s| s.end)).max(self.end);
        self.last_end.insert(cpu, a + MARK_NS);
        (a, a + MARK_NS)
    }
}

/// A metadata ("M") event.
fn meta(name: &'static str, pid: u32, tid: u32, args: Value) -> Ev {
    Ev {
        at_ns: 0,
        name: name.into(),
        cat: "__metadata",
        ph: "M",
        ts: 0.0,
        dur: None,
        pid,
        tid,
        id: None,
        bp: None,
        s: None,
        args: raw(args),
    }
}

/// Process and thread names and their order.
fn metadata(
    slices: &BTreeMap<u32, Vec<Slice>>,
    names: &Names<'_>,
    topo: &Topology,
    cap: &Capture,
) -> Vec<Ev> {
    let mut v = vec![
        meta(
            "process_name",
            CPU_PID,
            CPU_PID,
            json!({ "name": "CPUs (affin-trace)" }),
        ),
        meta(
            "process_sort_index",
            CPU_PID,
            CPU_PID,
            json!({ "sort_index": -1 }),
        ),
    ];
    for (i, (cpu, name)) in cpu_tracks(topo, slices.keys().copied()).iter().enumerate() {
        let track = cpu_tid(*cpu);
        v.push(meta("thread_name", CPU_PID, track, json!({ "name": name })));
        let order = json!({ "sort_index": i as i64 + 1 });
        v.push(meta("thread_sort_index", CPU_PID, track, order));
    }
    if let Some(quota) = &cap.quota {
        let name = format!("CPU quota throttling ({quota})");
        v.push(meta(
            "thread_name",
            CPU_PID,
            THROTTLE_TID,
            json!({ "name": name }),
        ));
        let order = json!({ "sort_index": 0 });
        v.push(meta("thread_sort_index", CPU_PID, THROTTLE_TID, order));
        if !cap.periods.is_empty() {
            let name = "CPU quota periods (quota used, then throttled)";
            v.push(meta(
                "thread_name",
                CPU_PID,
                PERIOD_TID,
                json!({ "name": name }),
            ));
            let order = json!({ "sort_index": 0 });
            v.push(meta("thread_sort_index", CPU_PID, PERIOD_TID, order));
        }
    }
    thread_names(names, &mut v);
    v
}

/// Every CPU of the machine in topology order (node, L3, core), named with
/// its place, plus any CPU in `seen` that the topology lacks (offline now).
pub(crate) fn cpu_tracks(topo: &Topology, seen: impl Iterator<Item = u32>) -> Vec<(u32, String)> {
    let mut cpus: Vec<(u32, String)> = (topo.cpus.iter())
        .map(|c| {
            let name = format!(
                "CPU {} (core {}, L3 {}, node {})",
                c.id, c.core, c.llc, c.node
            );
            (c.id, name)
        })
        .collect();
    for cpu in seen {
        if !cpus.iter().any(|(c, _)| *c == cpu) {
            cpus.push((cpu, format!("CPU {cpu}")));
        }
    }
    let order: BTreeMap<u32, (u32, u32, u32)> = (topo.cpus.iter())
        .map(|c| (c.id, (c.node, c.llc, c.core)))
        .collect();
    cpus.sort_by_key(|(c, _)| (order.get(c).copied().unwrap_or((u32::MAX, 0, 0)), *c));
    cpus
}

/// A name per thread and per process (the main thread's, else "pid N").
fn thread_names(names: &Names<'_>, v: &mut Vec<Ev>) {
    let mut pids: BTreeMap<u32, String> = BTreeMap::new();
    for (tid, (tgid, comm)) in &names.threads {
        v.push(meta("thread_name", *tgid, *tid, json!({ "name": comm })));
        if tid == tgid {
            pids.insert(*tgid, format!("{comm} (pid {tgid})"));
        } else {
            pids.entry(*tgid).or_insert_with(|| format!("pid {tgid}"));
        }
    }
    for (pid, name) in pids {
        v.push(meta("process_name", pid, pid, json!({ "name": name })));
    }
}
impl Chrome {
    /// Writes the JSON object form: `traceEvents`, `displayTimeUnit` and
    /// `otherData` (the counts, lost events included).
    pub fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(w);
        w.write_all(b"{\"displayTimeUnit\":\"ns\",\"otherData\":")?;
        serde_json::to_writer(&mut w, &self.other)?;
        w.write_all(b",\"traceEvents\":[\n")?;
        for (i, e) in self.events.iter().enumerate() {
            if i > 0 {
                w.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut w, e)?;
        }
        w.write_all(b"\n]}\n")?;
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ThreadTrace;

    const T0: u64 = 1_000_000_000;

    fn switch(ts: u64, cpu: u32, out: u32, inn: u32, flags: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: T0 + ts,
            kind: EV_SWITCH,
            cpu,
            a: out,
            b: inn,
            flags,
            peer: 0,
            sum_exec_ns: 0,
        }
    }

    /// A switch carrying the task clock of the thread leaving (or arriving).
    fn switch_sum(ts: u64, cpu: u32, out: u32, inn: u32, flags: u32, sum: u64) -> TimelineEvent {
        TimelineEvent {
            sum_exec_ns: sum,
            ..switch(ts, cpu, out, inn, flags)
        }
    }

    fn migrate(ts: u64, tid: u32, from: u32, to: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: T0 + ts,
            kind: EV_MIGRATE,
            cpu: from,
            a: tid,
            b: to,
            flags: 0,
            peer: 0,
            sum_exec_ns: 0,
        }
    }

    fn wakeup(ts: u64, tid: u32, cpu: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: T0 + ts,
            kind: EV_WAKEUP,
            cpu,
            a: tid,
            b: 0,
            flags: 0,
            peer: 0,
            sum_exec_ns: 0,
        }
    }

    fn trace() -> Trace {
        let th = |tid, comm: &str| ThreadTrace {
            tid,
            tgid: 100,
            comm: comm.into(),
            ..ThreadTrace::default()
        };
        Trace {
            pids: vec![100],
            threads: vec![th(100, "main"), th(101, "worker")],
            ..Trace::default()
        }
    }

    fn topo() -> Topology {
        crate::model::topology::fixtures::machine("vm-2cpu")
    }

    fn capture(events: Vec<TimelineEvent>) -> Capture {
        Capture {
            events,
            start_ns: T0,
            end_ns: T0 + 1_000_000,
            ring_buffer_bytes: 1 << 20,
            ..Capture::default()
        }
    }

    /// The file as written, parsed back.
    fn file(cap: &Capture) -> (Value, Summary) {
        let c = build(cap, &trace(), &topo());
        let mut buf = Vec::new();
        c.write(&mut buf).unwrap();
        (serde_json::from_slice(&buf).expect("valid JSON"), c.summary)
    }

    fn events<'a>(v: &'a Value, ph: &str, cat: &str) -> Vec<&'a Value> {
        v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == ph && e["cat"] == cat)
            .collect()
    }

    fn on_cpu_track(e: &Value, cpu: u32) -> bool {
        e["pid"] == CPU_PID && e["tid"] == cpu_tid(cpu)
    }

    #[test]
    fn a_preempting_neighbour_is_a_counter_named_after_it() {
        let by = |mut e: TimelineEvent, peer| {
            e.peer = peer;
            e
        };
        let mut t = trace();
        t.neighbours.push(crate::model::NeighbourTrace {
            tgid: 900,
            comm: "hog".into(),
            ..crate::model::NeighbourTrace::default()
        });
        let cap = capture(vec![
            switch(0, 0, 0, 100, 0),
            by(switch(100, 0, 100, 0, EVF_PREEMPTED), 900),
            by(switch(300, 0, 0, 100, 0), 900),
        ]);
        let c = build(&cap, &t, &topo());
        let mut buf = Vec::new();
        c.write(&mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        let counters = events(&v, "C", "neighbour");
        let seen: Vec<(f64, u64)> = (counters.iter())
            .map(|e| {
                (
                    e["ts"].as_f64().unwrap(),
                    e["args"]["threads"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(seen, [(0.1, 1), (0.3, 0)]);
        assert!(
            counters
                .iter()
                .all(|e| e["name"] == "preempted by hog (pid 900): target threads held back"),
            "{counters:?}"
        );
        assert_eq!(c.summary.neighbour_tracks, 1);
    }

    #[test]
    fn a_build_told_to_stop_gives_up() {
        let cap = capture(vec![switch(300_000, 0, 101, 0, EVF_PREEMPTED)]);
        assert!(build_unless(&cap, &trace(), &topo(), || true).is_none());
        assert!(build_unless(&cap, &trace(), &topo(), || false).is_some());
    }

    #[test]
    fn switches_become_cpu_and_thread_slices() {
        let (v, s) = file(&capture(vec![
            // Out of order, as two CPUs' events can be in the ring.
            switch(300_000, 0, 101, 0, EVF_PREEMPTED),
            switch(100_000, 0, 0, 101, 0),
            switch(150_000, 1, 0, 100, 0),
            switch(250_000, 1, 100, 0, 0),
        ]));
        assert_eq!(s.cpu_slices, 2);
        let slices = events(&v, "X", "on_cpu");
        let cpu0: Vec<_> = slices.iter().filter(|e| on_cpu_track(e, 0)).collect();
        assert_eq!(cpu0.len(), 1);
        assert_eq!(cpu0[0]["name"], "worker 101");
        assert_eq!(cpu0[0]["ts"], 100.0);
        assert_eq!(cpu0[0]["dur"], 200.0);
        assert_eq!(cpu0[0]["args"]["ended"], "preempted");
        let thread: Vec<_> = slices.iter().filter(|e| e["tid"] == 100).collect();
        assert_eq!(thread.len(), 1);
        assert_eq!(thread[0]["name"], "CPU 1");
        assert_eq!(thread[0]["pid"], 100);
        assert_eq!(thread[0]["ts"], 150.0);
        assert_eq!(thread[0]["dur"], 100.0);
        assert_eq!(thread[0]["args"]["ended"], "blocked");
        // Preempted at 300 us and never back: runnable to the end.
        let wait = events(&v, "X", "runnable");
        assert_eq!(wait.len(), 1);
        assert_eq!(wait[0]["name"], "runnable (preempted)");
        assert_eq!(wait[0]["dur"], 700.0);
    }

    /// Past `--timeline-max-events` the capture keeps the first events,
    /// counts the rest, and the file stops where they begin: a thread on
    /// a CPU then is not drawn running to the window's end.
    #[test]
    fn a_capped_capture_stops_where_the_first_event_not_kept_is() {
        let mut cap = capture(vec![
            switch(100_000, 0, 0, 101, 0),
            switch(200_000, 1, 0, 100, 0),
        ]);
        cap.keep_at_most = Some(2);
        cap.hold_to_cap();
        assert_eq!((cap.truncated_events, cap.truncated_at_ns), (0, None));
        // A later drain, out of order as two CPUs' events can be.
        cap.events.push(switch(450_000, 0, 101, 0, 0));
        cap.events.push(switch(400_000, 1, 100, 0, 0));
        cap.hold_to_cap();
        assert_eq!(cap.events.len(), 2);
        assert_eq!(cap.truncated_events, 2);
        assert_eq!(cap.truncated_at_ns, Some(T0 + 400_000));
        cap.events.push(switch(300_000, 1, 100, 0, 0));
        cap.hold_to_cap();
        assert_eq!(cap.truncated_events, 3);
        assert_eq!(
            cap.truncated_at_ns,
            Some(T0 + 400_000),
            "the first cut stays"
        );
        let (v, s) = file(&cap);
        assert_eq!(s.truncated_events, 3);
        let mark = events(&v, "i", "truncated");
        assert_eq!(mark.len(), 1);
        assert_eq!(mark[0]["ts"], 400.0);
        assert_eq!(mark[0]["args"]["truncated_events"], 3);
        assert_eq!(v["otherData"]["truncated_events"], 3);
        assert_eq!(v["otherData"]["truncated_at_ns"], 400_000);
        assert_eq!(v["otherData"]["duration_ns"], 1_000_000);
        // Both threads were still on their CPUs at the cut: drawn to it.
        let slices = events(&v, "X", "on_cpu");
        assert!(!slices.is_empty());
        for e in slices {
            let end = e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
            assert!(end <= 400.0, "drawn past the cut: {e}");
        }
    }

    #[test]
    fn without_a_cap_every_event_is_kept() {
        let mut cap = capture(vec![switch(100_000, 0, 0, 101, 0); 5]);
        cap.hold_to_cap();
        assert_eq!((cap.events.len(), cap.truncated_events), (5, 0));
    }

    #[test]
    fn a_wakeup_starts_a_runnable_slice_until_switch_in() {
        let (v, _) = file(&capture(vec![
            wakeup(10_000, 101, 1),
            switch(12_500, 1, 0, 101, 0),
            switch(20_000, 1, 101, 0, EVF_DEAD),
            // Woken while on a CPU: no wait.
            switch(30_000, 0, 0, 100, 0),
            wakeup(31_000, 100, 0),
            switch(40_000, 0, 100, 0, 0),
        ]));
        let wait = events(&v, "X", "runnable");
        assert_eq!(wait.len(), 1, "{wait:?}");
        assert_eq!(wait[0]["tid"], 101);
        assert_eq!(wait[0]["name"], "runnable (woken)");
        assert_eq!(wait[0]["ts"], 10.0);
        assert_eq!(wait[0]["dur"], 2.5);
        let exited = events(&v, "X", "on_cpu");
        assert!(exited.iter().any(|e| e["args"]["ended"] == "exited"));
    }

    #[test]
    fn each_migration_is_one_arrow_from_source_to_destination_cpu() {
        // 101 runs on CPU 0, is moved to CPU 1 while off CPU, runs there,
        // and is moved back.
        let (v, s) = file(&capture(vec![
            switch(100_000, 0, 0, 101, 0),
            switch(200_000, 0, 101, 0, 0),
            migrate(200_500, 101, 0, 1),
            switch(201_000, 1, 0, 101, 0),
            switch(300_000, 1, 101, 0, 0),
            migrate(300_200, 101, 1, 0),
            switch(300_900, 0, 0, 101, 0),
        ]));
        assert_eq!(s.migration_flows, 2);
        let starts = events(&v, "s", "migration");
        let finishes = events(&v, "f", "migration");
        assert_eq!((starts.len(), finishes.len()), (2, 2));
        for (s, f) in starts.iter().zip(&finishes) {
            assert_eq!(s["id"], f["id"]);
            assert_eq!(f["bp"], "e");
            assert_eq!(s["name"], f["name"], "v1 flows pair by id, cat and name");
        }
        let first = starts.iter().find(|e| e["id"] == 1).unwrap();
        let last = finishes.iter().find(|e| e["id"] == 1).unwrap();
        assert!(on_cpu_track(first, 0) && on_cpu_track(last, 1));
        let back = starts.iter().find(|e| e["id"] == 2).unwrap();
        assert!(on_cpu_track(back, 1));
        // Each arrow end sits inside a marker slice on its track, which
        // sits inside a gap or a slice: the nesting Perfetto needs.
        let marks = events(&v, "X", "migration");
        assert_eq!(marks.len(), 4);
        for end in starts.iter().chain(&finishes) {
            let ts = end["ts"].as_f64().unwrap();
            assert!(
                marks.iter().any(|m| m["tid"] == end["tid"]
                    && m["ts"].as_f64().unwrap() < ts
                    && ts < m["ts"].as_f64().unwrap() + m["dur"].as_f64().unwrap()),
                "{end} is in no marker"
            );
        }
        assert_nested(&v);
    }

    /// Slices on each track nest or are disjoint (no partial overlap).
    fn assert_nested(v: &Value) {
        let mut by_track: BTreeMap<(u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
        for e in v["traceEvents"].as_array().unwrap() {
            if e["ph"] == "X" {
                let ts = e["ts"].as_f64().unwrap();
                let end = ts + e["dur"].as_f64().unwrap();
                let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
                by_track.entry(key).or_default().push((ts, end));
            }
        }
        for (track, list) in by_track {
            for (i, a) in list.iter().enumerate() {
                for b in &list[i + 1..] {
                    let disjoint = a.1 <= b.0 || b.1 <= a.0;
                    let nested = (a.0 <= b.0 && b.1 <= a.1) || (b.0 <= a.0 && a.1 <= b.1);
                    assert!(disjoint || nested, "{track:?}: {a:?} and {b:?} overlap");
                }
            }
        }
    }

    #[test]
    fn migrations_close_together_get_disjoint_markers() {
        // Three threads moved off CPU 0 within 3 us, while 100 runs there.
        let mut ev = vec![switch(1_000, 0, 0, 100, 0), switch(900_000, 0, 100, 0, 0)];
        for (i, tid) in [101u32, 102, 103].into_iter().enumerate() {
            ev.push(migrate(5_000 + i as u64 * 1_000, tid, 0, 1));
        }
        let (v, s) = file(&capture(ev));
        assert_eq!(s.migration_flows, 3);
        assert_nested(&v);
    }

    #[test]
    fn a_thread_running_at_the_start_and_at_the_end_gets_whole_slices() {
        let (v, s) = file(&capture(vec![
            switch(50_000, 0, 100, 0, EVF_PREEMPTED),
            switch(60_000, 1, 0, 101, 0),
        ]));
        assert_eq!((s.cpu_slices, s.incomplete_slices), (2, 0));
        let slices = events(&v, "X", "on_cpu");
        let cpu0 = slices.iter().find(|e| on_cpu_track(e, 0)).unwrap();
        assert_eq!(
            (cpu0["ts"].as_f64(), cpu0["dur"].as_f64()),
            (Some(0.0), Some(50.0))
        );
        let cpu1 = slices.iter().find(|e| on_cpu_track(e, 1)).unwrap();
        assert_eq!(cpu1["dur"], 940.0);
        assert_eq!(cpu1["args"]["ended"], "window end");
    }

    #[test]
    fn lost_events_are_counted_in_the_file_not_guessed_at() {
        let mut cap = capture(vec![
            switch(10_000, 0, 0, 100, 0),
            switch(20_000, 0, 100, 0, 0),
            // The switch-in of 101 on CPU 0 was lost.
            switch(40_000, 0, 101, 0, 0),
        ]);
        cap.lost_events = 5;
        let (v, s) = file(&cap);
        assert_eq!((s.cpu_slices, s.incomplete_slices), (1, 1));
        assert_eq!(v["otherData"]["lost_events"], 5);
        assert_eq!(v["otherData"]["incomplete_slices"], 1);
        let lost = events(&v, "i", "lost");
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["s"], "g");
        assert!(
            lost[0]["name"]
                .as_str()
                .unwrap()
                .starts_with("5 events LOST")
        );
    }

    #[test]
    fn slices_carry_their_cpu_time_and_a_missed_switch_in_is_dated_by_it() {
        let (v, s) = file(&capture(vec![
            // In with its clock at 1 ms, out preempted at 1.6 ms of clock
            // after 700 us of wall time (100 us of steal).
            switch_sum(100_000, 0, 0, 101, 0, 1_000_000),
            switch_sum(800_000, 0, 101, 0, EVF_PREEMPTED, 1_600_000),
            // Resumed with no switch-in event; out at 900 us after 50 us
            // more of CPU time.
            switch_sum(900_000, 0, 101, 0, 0, 1_650_000),
        ]));
        assert_eq!(
            (s.cpu_slices, s.inferred_starts, s.incomplete_slices),
            (2, 1, 0)
        );
        let cpu0: Vec<&Value> = events(&v, "X", "on_cpu")
            .into_iter()
            .filter(|e| on_cpu_track(e, 0))
            .collect();
        assert_eq!(cpu0[0]["args"]["cpu_ns"], 600_000);
        assert_eq!(cpu0[0]["dur"], 700.0);
        assert_eq!(cpu0[1]["args"]["cpu_ns"], 50_000);
        assert_eq!(
            (cpu0[1]["ts"].as_f64(), cpu0[1]["dur"].as_f64()),
            (Some(850.0), Some(50.0))
        );
        assert!(
            cpu0[1]["args"]["start"]
                .as_str()
                .unwrap()
                .starts_with("inferred")
        );
        assert_eq!(v["otherData"]["inferred_starts"], 1);
    }

    #[test]
    fn throttled_intervals_are_marked_and_quiet_ones_are_not() {
        let mut cap = capture(vec![]);
        cap.quota = Some("0.50 CPUs on /sys/fs/cgroup/t".into());
        let span = |a: u64, n: u64| ThrottledSpan {
            start_ns: T0 + a,
            end_ns: T0 + a + 100_000,
            nr_periods: 10,
            nr_throttled: n,
            throttled_ns: n * 1_000_000,
        };
        cap.throttled = vec![span(0, 0), span(100_000, 4)];
        let (v, s) = file(&cap);
        assert_eq!(s.throttled_intervals, 1);
        let marked = events(&v, "X", "throttling");
        assert_eq!(marked.len(), 1);
        assert_eq!(marked[0]["ts"], 100.0);
        assert_eq!(marked[0]["dur"], 100.0);
        assert_eq!(marked[0]["name"], "throttled: 4 of 10 periods, 4.0 ms");
        assert_eq!(marked[0]["tid"], THROTTLE_TID);
        let names = events(&v, "M", "__metadata");
        assert!(names.iter().any(|m| {
            m["tid"] == THROTTLE_TID
                && m["args"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("CPU quota throttling"))
        }));
    }

    #[test]
    fn throttled_periods_are_two_slices_each_on_their_track() {
        let mut cap = capture(vec![]);
        cap.quota = Some("1.00 CPUs on /sys/fs/cgroup/t".into());
        let bw = crate::model::bandwidth::BandwidthTrace {
            periods: vec![
                crate::model::bandwidth::PeriodRecord {
                    start_ns: T0 + 100_000,
                    exhausted_after_ns: Some(25_000),
                    throttled_wall_ns: 90_000,
                    running_at_exhaustion: 4,
                    queued_at_exhaustion: 4,
                    ..Default::default()
                },
                // Not throttled: nothing to draw.
                crate::model::bandwidth::PeriodRecord {
                    start_ns: T0 + 200_000,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        cap.periods = period_slices(&bw, 100_000);
        assert_eq!(cap.periods.len(), 1);
        assert_eq!(cap.periods[0].held_ns, 75_000, "cut at the period's end");
        let (v, s) = file(&cap);
        assert_eq!(s.throttled_periods, 1);
        assert_eq!(v["otherData"]["throttled_periods"], 1);
        let sl = events(&v, "X", "quota_period");
        assert_eq!(sl.len(), 2);
        assert_eq!(
            (sl[0]["ts"].as_f64(), sl[0]["dur"].as_f64()),
            (Some(100.0), Some(25.0))
        );
        assert_eq!(sl[0]["name"], "quota used: 4 threads ran 0.0 ms");
        assert_eq!(
            (sl[1]["ts"].as_f64(), sl[1]["dur"].as_f64()),
            (Some(125.0), Some(75.0))
        );
        assert_eq!(sl[1]["name"], "throttled 0.1 ms");
        assert!(sl.iter().all(|e| e["tid"] == PERIOD_TID));
        let names = events(&v, "M", "__metadata");
        assert!(names.iter().any(|m| m["tid"] == PERIOD_TID
            && m["args"]["name"] == "CPU quota periods (quota used, then throttled)"));
    }

    #[test]
    fn tracks_are_named_and_cpus_ordered() {
        let (v, _) = file(&capture(vec![switch(1, 0, 0, 101, 0)]));
        let names = events(&v, "M", "__metadata");
        let name_of = |pid: u32, tid: u32| {
            names
                .iter()
                .find(|m| m["name"] == "thread_name" && m["pid"] == pid && m["tid"] == tid)
                .map(|m| m["args"]["name"].as_str().unwrap().to_string())
        };
        assert_eq!(name_of(100, 101).as_deref(), Some("worker"));
        assert!(
            name_of(CPU_PID, cpu_tid(1))
                .unwrap()
                .starts_with("CPU 1 (core")
        );
        assert!(names.iter().any(|m| m["name"] == "process_name"
            && m["pid"] == 100
            && m["args"]["name"] == "main (pid 100)"));
        assert_eq!(v["displayTimeUnit"], "ns");
        assert_eq!(v["otherData"]["events"], 1);
    }
}
