//! The `--timeline` file in Perfetto's own protobuf format (a
//! `.perfetto-trace`), written as the events are drained from the ring:
//! memory stays bounded whatever the window length. Pure: events in, bytes
//! out to a `Write` the CLI gives it.
//!
//! What it holds, in the layout a `perfetto`/ftrace capture of the kernel
//! has (protos/perfetto/trace/ftrace/{ftrace_event_bundle,sched}.proto), so
//! Perfetto's CPU scheduling tracks and thread-state bars show as they do
//! for one:
//! - per CPU, `FtraceEventBundle`s: `sched_switch` in the compact encoding
//!   (`CompactSched`: delta-encoded timestamps, interned comms; a switch
//!   whose previous task is not the one the CPU's last switch brought in,
//!   such as each CPU's first, is written in full, since the compact form
//!   leaves it implied),
//!   `sched_wakeup` / `sched_wakeup_new` (in the bundle of the CPU it fired
//!   on, under the thread running there, the waker: the wakee's chain),
//!   `sched_migrate_task` and `sched_process_exit` (a target's last switch);
//! - as they come, one counter track per preempting neighbour (a process
//!   not traced that took a CPU from a runnable target thread): how many
//!   target threads it holds back over time (`report::heldback`), named
//!   with the neighbour's comm when the CLI can read it;
//! - at the end, one `ProcessTree` with a descriptor for every target
//!   process and thread (names win over the switches' comms there), a
//!   "CPU quota throttling" track with the throttled intervals, and, when
//!   events were lost, an instant on an "affin-trace" track naming the
//!   count at the start, so a gap is never silent.
//!
//! Only target threads are recorded: a switch to or from another task
//! writes pid 0 on that side, so the CPU track shows the other tasks as
//! idle. Priorities are not recorded and are written as 120 (nice 0); a
//! thread that blocked is written as `S` (sleeping), the kernel's `D` is not
//! told apart. Timestamps are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); the
//! file leaves the clock unspecified, which Perfetto reads as BOOTTIME: the
//! two differ only by time suspended.
//!
//! The messages are declared here with prost from the published schema
//! (field numbers as in Perfetto's protos), only the fields written: a
//! generated crate for the whole schema (perfetto_protos) takes ~10 min and
//! a 430 MB rlib to build on this project's machines.

use std::{collections::HashMap, io::Write};

use affinity_common::{
    EV_MIGRATE, EV_SWITCH, EV_WAKEUP, EVF_DEAD, EVF_NEW, EVF_PREEMPTED, TimelineEvent,
};
use prost::Message;

use super::{
    heldback::{self, Change, HeldBack, OTHER_NEIGHBOURS},
    latency::Latencies,
    timeline::ThrottledSpan,
};

/// Where drained timeline events go: the session calls [`EventSink::push`]
/// each time it empties the ring. A write error is kept by the sink and
/// returned when it is finished, so the drain never stops the window.
pub trait EventSink {
    /// One batch of events, as drained (per CPU in time order).
    fn push(&mut self, events: &[TimelineEvent]);
}

/// The subset of Perfetto's trace schema written here (proto2).
pub mod pb {
    /// `TracePacket` (trace_packet.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TracePacket {
        #[prost(uint64, optional, tag = "8")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "10")]
        pub trusted_packet_sequence_id: Option<u32>,
        #[prost(uint32, optional, tag = "13")]
        pub sequence_flags: Option<u32>,
        #[prost(message, optional, tag = "1")]
        pub ftrace_events: Option<FtraceEventBundle>,
        #[prost(message, optional, tag = "2")]
        pub process_tree: Option<ProcessTree>,
        #[prost(message, optional, tag = "11")]
        pub track_event: Option<TrackEvent>,
        #[prost(message, optional, tag = "60")]
        pub track_descriptor: Option<TrackDescriptor>,
    }

    /// `Trace` (trace.proto): the file is one of these.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Trace {
        #[prost(message, repeated, tag = "1")]
        pub packet: Vec<TracePacket>,
    }

    /// `FtraceEventBundle` (ftrace_event_bundle.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FtraceEventBundle {
        #[prost(uint32, optional, tag = "1")]
        pub cpu: Option<u32>,
        #[prost(message, repeated, tag = "2")]
        pub event: Vec<FtraceEvent>,
        #[prost(bool, optional, tag = "3")]
        pub lost_events: Option<bool>,
        #[prost(message, optional, tag = "4")]
        pub compact_sched: Option<CompactSched>,
    }

    /// `FtraceEventBundle.CompactSched`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CompactSched {
        #[prost(string, repeated, tag = "5")]
        pub intern_table: Vec<String>,
        #[prost(uint64, repeated, packed = "true", tag = "1")]
        pub switch_timestamp: Vec<u64>,
        #[prost(int64, repeated, packed = "true", tag = "2")]
        pub switch_prev_state: Vec<i64>,
        #[prost(int32, repeated, packed = "true", tag = "3")]
        pub switch_next_pid: Vec<i32>,
        #[prost(int32, repeated, packed = "true", tag = "4")]
        pub switch_next_prio: Vec<i32>,
        #[prost(uint32, repeated, packed = "true", tag = "6")]
        pub switch_next_comm_index: Vec<u32>,
    }

    /// `FtraceEvent` (ftrace_event.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FtraceEvent {
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "2")]
        pub pid: Option<u32>,
        #[prost(oneof = "Event", tags = "4, 17, 114, 238, 491")]
        pub event: Option<Event>,
    }

    /// `FtraceEvent.event`, the kinds written.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Event {
        #[prost(message, tag = "4")]
        SchedSwitch(SchedSwitch),
        #[prost(message, tag = "17")]
        SchedWakeup(SchedWakeup),
        #[prost(message, tag = "114")]
        SchedWakeupNew(SchedWakeup),
        #[prost(message, tag = "238")]
        SchedProcessExit(SchedProcessExit),
        #[prost(message, tag = "491")]
        SchedMigrateTask(SchedMigrateTask),
    }

    /// `SchedSwitchFtraceEvent` (sched.proto): written where the compact
    /// encoding's implied previous task would be wrong (see `Writer::add`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchedSwitch {
        #[prost(string, optional, tag = "1")]
        pub prev_comm: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub prev_pid: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub prev_prio: Option<i32>,
        #[prost(int64, optional, tag = "4")]
        pub prev_state: Option<i64>,
        #[prost(string, optional, tag = "5")]
        pub next_comm: Option<String>,
        #[prost(int32, optional, tag = "6")]
        pub next_pid: Option<i32>,
        #[prost(int32, optional, tag = "7")]
        pub next_prio: Option<i32>,
    }

    /// `SchedWakeupFtraceEvent` / `SchedWakeupNewFtraceEvent` (same fields).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchedWakeup {
        #[prost(string, optional, tag = "1")]
        pub comm: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub prio: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub success: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub target_cpu: Option<i32>,
    }

    /// `SchedProcessExitFtraceEvent`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchedProcessExit {
        #[prost(string, optional, tag = "1")]
        pub comm: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub prio: Option<i32>,
    }

    /// `SchedMigrateTaskFtraceEvent`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SchedMigrateTask {
        #[prost(string, optional, tag = "1")]
        pub comm: Option<String>,
        #[prost(int32, optional, tag = "2")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "3")]
        pub prio: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub orig_cpu: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub dest_cpu: Option<i32>,
    }

    /// `ProcessTree` (ps/process_tree.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProcessTree {
        #[prost(message, repeated, tag = "1")]
        pub processes: Vec<Process>,
        #[prost(message, repeated, tag = "2")]
        pub threads: Vec<Thread>,
    }

    /// `ProcessTree.Process`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Process {
        #[prost(int32, optional, tag = "1")]
        pub pid: Option<i32>,
        #[prost(int32, optional, tag = "2")]
        pub ppid: Option<i32>,
        #[prost(string, repeated, tag = "3")]
        pub cmdline: Vec<String>,
        #[prost(bool, optional, tag = "9")]
        pub cmdline_is_comm: Option<bool>,
    }

    /// `ProcessTree.Thread`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Thread {
        #[prost(int32, optional, tag = "1")]
        pub tid: Option<i32>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        #[prost(int32, optional, tag = "3")]
        pub tgid: Option<i32>,
    }

    /// `TrackDescriptor` (track_event/track_descriptor.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackDescriptor {
        #[prost(uint64, optional, tag = "1")]
        pub uuid: Option<u64>,
        #[prost(string, optional, tag = "2")]
        pub name: Option<String>,
        /// Present (empty) on a counter track.
        #[prost(message, optional, tag = "8")]
        pub counter: Option<CounterDescriptor>,
    }

    /// `CounterDescriptor` (track_event/counter_descriptor.proto): none of
    /// its fields are needed (plain values, no unit).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CounterDescriptor {}

    /// `TrackEvent` (track_event/track_event.proto).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackEvent {
        #[prost(int32, optional, tag = "9")]
        pub r#type: Option<i32>,
        #[prost(uint64, optional, tag = "11")]
        pub track_uuid: Option<u64>,
        #[prost(string, optional, tag = "23")]
        pub name: Option<String>,
        #[prost(int64, optional, tag = "30")]
        pub counter_value: Option<i64>,
    }

    /// `TrackEvent.Type`.
    pub const TYPE_SLICE_BEGIN: i32 = 1;
    /// `TrackEvent.Type`.
    pub const TYPE_SLICE_END: i32 = 2;
    /// `TrackEvent.Type`.
    pub const TYPE_INSTANT: i32 = 3;
    /// `TrackEvent.Type`.
    pub const TYPE_COUNTER: i32 = 4;
}

/// `prev_state` as the sched_switch tracepoint reports it
/// (include/trace/events/sched.h `__trace_sched_switch_state`): preempted is
/// `TASK_REPORT_MAX` ("R+"), a task leaving to sleep `TASK_INTERRUPTIBLE`
/// ("S"), a dead one `EXIT_DEAD` ("X").
pub const STATE_PREEMPTED: i64 = 0x100;
/// See [`STATE_PREEMPTED`].
pub const STATE_SLEEPING: i64 = 0x1;
/// See [`STATE_PREEMPTED`].
pub const STATE_DEAD: i64 = 0x10;
/// Priority written for every task (not recorded): nice 0.
const PRIO: i32 = 120;
/// Trusted sequence of the track events (descriptors, markers).
const SEQ: u32 = 1;
/// `TracePacket.SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
const SEQ_CLEARED: u32 = 1;
/// Track of the lost-event marker.
const LOST_TRACK: u64 = 1;
/// Track of the throttled intervals.
const THROTTLE_TRACK: u64 = 2;
/// Track of the throttled periods (quota used, then throttled).
const PERIOD_TRACK: u64 = 3;
/// Tracks of the preempting neighbours: this plus the neighbour's tgid.
const NEIGHBOUR_TRACKS: u64 = 1 << 32;
/// Events held before a flush: bounds the writer's memory.
const FLUSH_EVENTS: usize = 8192;

/// One target thread for the descriptors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadName {
    /// Thread id.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// Its name (comm).
    pub comm: String,
}

/// What is known at the end of the window.
#[derive(Clone, Debug, Default)]
pub struct Ending {
    /// The target threads.
    pub threads: Vec<ThreadName>,
    /// CLOCK_MONOTONIC ns when tracing began.
    pub start_ns: u64,
    /// CLOCK_MONOTONIC ns when the window ended.
    pub end_ns: u64,
    /// Events lost in the kernel (ring full), and any not read.
    pub lost_events: u64,
    /// Per-interval throttling, with a CPU quota.
    pub throttled: Vec<ThrottledSpan>,
    /// The quota in force, if any.
    pub quota: Option<String>,
    /// Throttled periods from the kernel's throttle path, where it ran.
    pub periods: Vec<super::timeline::PeriodSlice>,
}

/// Counts of what was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Events received.
    pub events: u64,
    /// `sched_switch` records.
    pub switches: u64,
    /// `sched_wakeup(_new)` records.
    pub wakeups: u64,
    /// `sched_migrate_task` records.
    pub migrations: u64,
    /// `sched_process_exit` records.
    pub exits: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Events lost (from the [`Ending`]).
    pub lost_events: u64,
    /// Counter tracks of preempting neighbours.
    pub neighbour_tracks: u64,
}

/// One CPU's events waiting for the next bundle.
#[derive(Default)]
struct Pending {
    switches: Vec<(u64, i64, i32)>,
    events: Vec<pb::FtraceEvent>,
}

/// Streams a Perfetto trace to `W`.
pub struct Writer<W: Write> {
    w: W,
    cpus: HashMap<u32, Pending>,
    /// Per CPU, the task the last switch written put there (0: not a
    /// target): the previous task a compact switch implies.
    on_cpu: HashMap<u32, u32>,
    held: usize,
    written: Written,
    error: Option<std::io::Error>,
    buf: Vec<u8>,
    latency: Latencies,
    /// The preempting neighbours, and their changes of one drain.
    neighbours: HeldBack,
    changes: Vec<Change>,
    /// A neighbour's name (comm) for its track, asked once when it
    /// first appears: a counter track's descriptor must precede its values.
    name_of: Box<dyn FnMut(u32) -> Option<String>>,
    /// Whether a packet of the track-event sequence was written (the first
    /// clears its incremental state).
    sequence_started: bool,
}

impl<W: Write> Writer<W> {
    /// A writer onto `w` (buffer it: packets are written one by one).
    pub fn new(w: W) -> Writer<W> {
        Writer {
            w,
            cpus: HashMap::new(),
            on_cpu: HashMap::new(),
            held: 0,
            written: Written::default(),
            error: None,
            buf: Vec::with_capacity(64 << 10),
            latency: Latencies::default(),
            neighbours: HeldBack::default(),
            changes: Vec::new(),
            name_of: Box::new(|_| None),
            sequence_started: false,
        }
    }

    /// Names neighbour tracks with `name_of(tgid)` (the CLI reads the comm;
    /// without it a track shows only the pid).
    pub fn naming(mut self, name_of: impl FnMut(u32) -> Option<String> + 'static) -> Self {
        self.name_of = Box::new(name_of);
        self
    }

    /// A track's descriptor, on the track-event sequence.
    fn track(&mut self, uuid: u64, name: String, counter: bool) {
        let flags = (!std::mem::replace(&mut self.sequence_started, true)).then_some(SEQ_CLEARED);
        self.packet(&pb::TracePacket {
            trusted_packet_sequence_id: Some(SEQ),
            sequence_flags: flags,
            track_descriptor: Some(pb::TrackDescriptor {
                uuid: Some(uuid),
                name: Some(name),
                counter: counter.then_some(pb::CounterDescriptor {}),
            }),
            ..pb::TracePacket::default()
        });
    }

    /// Writes the neighbour counters changed in the last drain, each
    /// track's descriptor before its first value.
    fn write_neighbours(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        for c in &changes {
            let uuid = NEIGHBOUR_TRACKS + u64::from(c.neighbour);
            if c.first {
                let comm = (c.neighbour != OTHER_NEIGHBOURS)
                    .then(|| (self.name_of)(c.neighbour))
                    .flatten();
                self.track(
                    uuid,
                    heldback::track_name(c.neighbour, comm.as_deref()),
                    true,
                );
                self.written.neighbour_tracks += 1;
            }
            let mut p = track_event(c.at, uuid, pb::TYPE_COUNTER, None);
            if let Some(ev) = p.track_event.as_mut() {
                ev.counter_value = Some(i64::from(c.held));
            }
            self.packet(&p);
        }
        self.changes = changes;
        self.changes.clear();
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.w
    }

    /// Counts so far (bytes: flushed bundles).
    pub fn written(&self) -> Written {
        self.written
    }

    /// Files one event under its CPU.
    fn add(&mut self, e: &TimelineEvent) {
        let ftrace = |pid: u32, event: pb::Event| pb::FtraceEvent {
            timestamp: Some(e.ts_ns),
            pid: Some(pid),
            event: Some(event),
        };
        let comm = || Some(String::new());
        match e.kind {
            EV_SWITCH => {
                let state = if e.a == 0 {
                    // Another task left: its state is not recorded.
                    0
                } else if e.flags & EVF_DEAD != 0 {
                    STATE_DEAD
                } else if e.flags & EVF_PREEMPTED != 0 {
                    STATE_PREEMPTED
                } else {
                    STATE_SLEEPING
                };
                let p = self.cpus.entry(e.cpu).or_default();
                // A compact switch names no previous task: readers take the
                // one the CPU's last switch put there. Where that is not
                // `a` (the CPU's first switch, a thread marked while it
                // ran), the switch is written in full.
                if self.on_cpu.insert(e.cpu, e.b) == Some(e.a) {
                    p.switches.push((e.ts_ns, state, e.b as i32));
                } else {
                    let full = pb::SchedSwitch {
                        prev_comm: comm(),
                        prev_pid: Some(e.a as i32),
                        prev_prio: Some(PRIO),
                        prev_state: Some(state),
                        next_comm: comm(),
                        next_pid: Some(e.b as i32),
                        next_prio: Some(PRIO),
                    };
                    p.events.push(ftrace(e.a, pb::Event::SchedSwitch(full)));
                }
                self.written.switches += 1;
                if e.a != 0 && e.flags & EVF_DEAD != 0 {
                    let exit = pb::SchedProcessExit {
                        comm: comm(),
                        pid: Some(e.a as i32),
                        prio: Some(PRIO),
                    };
                    p.events
                        .push(ftrace(e.a, pb::Event::SchedProcessExit(exit)));
                    self.written.exits += 1;
                }
            }
            EV_WAKEUP => {
                let w = pb::SchedWakeup {
                    comm: comm(),
                    pid: Some(e.a as i32),
                    prio: Some(PRIO),
                    success: Some(1),
                    target_cpu: Some(e.cpu as i32),
                };
                let ev = if e.flags & EVF_NEW != 0 {
                    pb::Event::SchedWakeupNew(w)
                } else {
                    pb::Event::SchedWakeup(w)
                };
                // Filed where it fired, under the thread running there
                // (ftrace's common_pid): Perfetto's "woken by".
                (self.cpus.entry(e.b).or_default().events).push(ftrace(e.peer, ev));
                self.written.wakeups += 1;
            }
            EV_MIGRATE => {
                let m = pb::SchedMigrateTask {
                    comm: comm(),
                    pid: Some(e.a as i32),
                    prio: Some(PRIO),
                    orig_cpu: Some(e.cpu as i32),
                    dest_cpu: Some(e.b as i32),
                };
                let ev = ftrace(0, pb::Event::SchedMigrateTask(m));
                self.cpus.entry(e.cpu).or_default().events.push(ev);
                self.written.migrations += 1;
            }
            _ => return,
        }
        self.held += 1;
    }

    /// Writes one packet as field 1 of `Trace` (what a file of packets is).
    fn packet(&mut self, p: &pb::TracePacket) {
        if self.error.is_some() {
            return;
        }
        self.buf.clear();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        prost::encoding::encode_varint(p.encoded_len() as u64, &mut self.buf);
        if let Err(e) = p.encode(&mut self.buf) {
            self.error = Some(std::io::Error::other(e));
            return;
        }
        match self.w.write_all(&self.buf) {
            Ok(()) => self.written.bytes += self.buf.len() as u64,
            Err(e) => self.error = Some(e),
        }
    }

    /// Writes one bundle per CPU with what is held.
    fn flush_bundles(&mut self) {
        let mut cpus: Vec<(u32, Pending)> = self.cpus.drain().collect();
        cpus.sort_by_key(|(c, _)| *c);
        for (cpu, mut p) in cpus {
            // Delta encoding needs time order; one CPU's events nearly are.
            p.switches.sort_by_key(|s| s.0);
            p.events.sort_by_key(|e| e.timestamp);
            let mut cs = pb::CompactSched {
                intern_table: vec![String::new()],
                ..pb::CompactSched::default()
            };
            let mut last = 0;
            for (ts, state, next) in p.switches {
                cs.switch_timestamp.push(ts - last);
                last = ts;
                cs.switch_prev_state.push(state);
                cs.switch_next_pid.push(next);
                cs.switch_next_prio.push(PRIO);
                cs.switch_next_comm_index.push(0);
            }
            let bundle = pb::FtraceEventBundle {
                cpu: Some(cpu),
                event: p.events,
                lost_events: None,
                compact_sched: Some(cs),
            };
            self.packet(&pb::TracePacket {
                ftrace_events: Some(bundle),
                ..pb::TracePacket::default()
            });
        }
        self.held = 0;
    }

    /// Writes what is held, the descriptors, the throttling track and the
    /// lost-event marker, and flushes: the file is complete. Returns the
    /// counts, the waits seen and the output, or the first write error.
    pub fn finish(mut self, end: &Ending) -> std::io::Result<(Written, Latencies, W)> {
        self.flush_bundles();
        self.written.lost_events = end.lost_events;
        self.packet(&process_tree(&end.threads, end.end_ns));
        if end.lost_events > 0 {
            self.track(LOST_TRACK, "affin-trace".into(), false);
            let name = format!(
                "{} events LOST (ring buffer full): this timeline has gaps",
                end.lost_events
            );
            self.packet(&track_event(
                end.start_ns,
                LOST_TRACK,
                pb::TYPE_INSTANT,
                Some(name),
            ));
        }
        let marked: Vec<&ThrottledSpan> = (end.throttled.iter())
            .filter(|s| s.nr_throttled != 0 || s.throttled_ns != 0)
            .collect();
        if let (Some(quota), false) = (&end.quota, marked.is_empty()) {
            self.track(
                THROTTLE_TRACK,
                format!("CPU quota throttling ({quota})"),
                false,
            );
            for s in marked {
                let name = format!(
                    "throttled: {} of {} periods, {:.1} ms",
                    s.nr_throttled,
                    s.nr_periods,
                    s.throttled_ns as f64 / 1e6
                );
                let b = track_event(s.start_ns, THROTTLE_TRACK, pb::TYPE_SLICE_BEGIN, Some(name));
                self.packet(&b);
                let e = track_event(s.end_ns, THROTTLE_TRACK, pb::TYPE_SLICE_END, None);
                self.packet(&e);
            }
        }
        if let (Some(quota), false) = (&end.quota, end.periods.is_empty()) {
            self.track(
                PERIOD_TRACK,
                format!("CPU quota periods ({quota}): quota used, then throttled"),
                false,
            );
            for p in &end.periods {
                for (at, len, name) in super::timeline::period_parts(p) {
                    let b = track_event(at, PERIOD_TRACK, pb::TYPE_SLICE_BEGIN, Some(name));
                    self.packet(&b);
                    let e = track_event(at + len, PERIOD_TRACK, pb::TYPE_SLICE_END, None);
                    self.packet(&e);
                }
            }
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.w.flush()?;
        Ok((self.written, self.latency, self.w))
    }
}

impl<W: Write> EventSink for Writer<W> {
    fn push(&mut self, events: &[TimelineEvent]) {
        self.written.events += events.len() as u64;
        self.latency.push(events);
        for e in events {
            self.add(e);
            if self.held >= FLUSH_EVENTS {
                self.flush_bundles();
            }
        }
        // In time order: the ring's order across CPUs is that of their
        // reservations, which can differ from their timestamps'.
        let mut switches: Vec<&TimelineEvent> =
            events.iter().filter(|e| e.kind == EV_SWITCH).collect();
        switches.sort_by_key(|e| e.ts_ns);
        for e in switches {
            self.neighbours.event(e, &mut self.changes);
        }
        self.write_neighbours();
        // One bundle per CPU per drain keeps the file's order close to
        // time order and the memory held to one drain's worth.
        self.flush_bundles();
    }
}

/// A descriptor per target process and thread.
fn process_tree(threads: &[ThreadName], at: u64) -> pb::TracePacket {
    let mut tree = pb::ProcessTree::default();
    let mut pids: Vec<u32> = threads.iter().map(|t| t.tgid).collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        let main = threads.iter().find(|t| t.tid == pid);
        tree.processes.push(pb::Process {
            pid: Some(pid as i32),
            ppid: None,
            cmdline: main.map(|t| t.comm.clone()).into_iter().collect(),
            cmdline_is_comm: Some(true),
        });
    }
    for t in threads {
        tree.threads.push(pb::Thread {
            tid: Some(t.tid as i32),
            name: Some(t.comm.clone()),
            tgid: Some(t.tgid as i32),
        });
    }
    pb::TracePacket {
        timestamp: Some(at),
        process_tree: Some(tree),
        ..pb::TracePacket::default()
    }
}

fn track_event(at: u64, track: u64, kind: i32, name: Option<String>) -> pb::TracePacket {
    pb::TracePacket {
        timestamp: Some(at),
        trusted_packet_sequence_id: Some(SEQ),
        track_event: Some(pb::TrackEvent {
            r#type: Some(kind),
            track_uuid: Some(track),
            name,
            counter_value: None,
        }),
        ..pb::TracePacket::default()
    }
}

/// Decodes a whole file written by [`Writer`] (for tests and tools).
pub fn decode(file: &[u8]) -> Result<pb::Trace, prost::DecodeError> {
    pb::Trace::decode(file)
}

/// Which format `--timeline FILE` is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Perfetto's protobuf trace (streamed).
    Perfetto,
    /// Chrome JSON ("Trace Event Format"), built at the end.
    Chrome,
}

impl Format {
    /// `chosen`, else by the file name: `.json` is Chrome JSON, anything
    /// else Perfetto.
    pub fn pick(chosen: Option<Format>, file: &std::path::Path) -> Format {
        chosen.unwrap_or_else(|| {
            let json = (file.extension()).is_some_and(|e| e.eq_ignore_ascii_case("json"));
            if json {
                Format::Chrome
            } else {
                Format::Perfetto
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, kind: u32, cpu: u32, a: u32, b: u32, flags: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: ts,
            kind,
            cpu,
            a,
            b,
            flags,
            peer: 0,
            sum_exec_ns: 0,
        }
    }

    /// Writes `batches` and decodes the file back.
    fn roundtrip(batches: &[Vec<TimelineEvent>], end: &Ending) -> (pb::Trace, Written) {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        for b in batches {
            w.push(b);
        }
        let (n, _, _) = w.finish(end).unwrap();
        assert_eq!(n.bytes, buf.len() as u64);
        (pb::Trace::decode(buf.as_slice()).unwrap(), n)
    }

    fn ending() -> Ending {
        Ending {
            threads: vec![
                ThreadName {
                    tid: 100,
                    tgid: 100,
                    comm: "main".into(),
                },
                ThreadName {
                    tid: 101,
                    tgid: 100,
                    comm: "worker".into(),
                },
            ],
            start_ns: 1_000,
            end_ns: 9_000_000,
            ..Ending::default()
        }
    }

    /// Switches per CPU, decoded: (cpu, ts, prev_state, next_pid).
    fn switches(t: &pb::Trace) -> Vec<(u32, u64, i64, i32)> {
        let mut out = Vec::new();
        for p in &t.packet {
            let Some(b) = &p.ftrace_events else { continue };
            for e in &b.event {
                if let Some(pb::Event::SchedSwitch(s)) = &e.event {
                    out.push((
                        b.cpu.unwrap(),
                        e.timestamp.unwrap(),
                        s.prev_state.unwrap(),
                        s.next_pid.unwrap(),
                    ));
                }
            }
            let cs = b.compact_sched.clone().unwrap_or_default();
            let mut ts = 0;
            for i in 0..cs.switch_timestamp.len() {
                ts += cs.switch_timestamp[i];
                let comm = cs.switch_next_comm_index[i] as usize;
                assert!(comm < cs.intern_table.len());
                out.push((
                    b.cpu.unwrap(),
                    ts,
                    cs.switch_prev_state[i],
                    cs.switch_next_pid[i],
                ));
            }
        }
        out
    }

    #[test]
    fn switches_are_compact_per_cpu_in_time_order_with_kernel_states() {
        let (t, n) = roundtrip(
            &[
                vec![
                    ev(2_000, EV_SWITCH, 0, 0, 101, 0),
                    ev(1_500, EV_SWITCH, 1, 0, 100, 0),
                    ev(5_000, EV_SWITCH, 0, 101, 0, EVF_PREEMPTED),
                ],
                vec![
                    ev(6_000, EV_SWITCH, 1, 100, 0, 0),
                    ev(7_000, EV_SWITCH, 0, 0, 101, 0),
                    ev(8_000, EV_SWITCH, 0, 101, 0, EVF_DEAD),
                ],
            ],
            &ending(),
        );
        assert_eq!((n.events, n.switches, n.exits), (6, 6, 1));
        let mut s = switches(&t);
        s.sort();
        assert_eq!(
            s,
            vec![
                (0, 2_000, 0, 101),
                (0, 5_000, STATE_PREEMPTED, 0),
                (0, 7_000, 0, 101),
                (0, 8_000, STATE_DEAD, 0),
                (1, 1_500, 0, 100),
                (1, 6_000, STATE_SLEEPING, 0),
            ]
        );
        let exits: Vec<_> = (t.packet.iter())
            .filter_map(|p| p.ftrace_events.as_ref())
            .flat_map(|b| &b.event)
            .filter_map(|e| match &e.event {
                Some(pb::Event::SchedProcessExit(x)) => Some((e.timestamp, x.pid)),
                _ => None,
            })
            .collect();
        assert_eq!(exits, vec![(Some(8_000), Some(101))]);
    }

    #[test]
    fn a_switch_whose_previous_task_is_not_implied_is_written_in_full() {
        let (t, _) = roundtrip(
            &[vec![
                ev(1_000, EV_SWITCH, 0, 0, 101, 0),
                ev(2_000, EV_SWITCH, 0, 101, 0, 0),
                // 100 was marked while it ran: the CPU's last switch put 0.
                ev(3_000, EV_SWITCH, 0, 100, 101, EVF_PREEMPTED),
                ev(4_000, EV_SWITCH, 0, 101, 0, 0),
            ]],
            &ending(),
        );
        let mut full = Vec::new();
        let mut compact = 0;
        for b in t.packet.iter().filter_map(|p| p.ftrace_events.as_ref()) {
            compact += b
                .compact_sched
                .as_ref()
                .map_or(0, |c| c.switch_next_pid.len());
            for e in &b.event {
                if let Some(pb::Event::SchedSwitch(s)) = &e.event {
                    full.push((e.timestamp, s.prev_pid, s.next_pid));
                }
            }
        }
        full.sort();
        assert_eq!(
            full,
            vec![
                (Some(1_000), Some(0), Some(101)),
                (Some(3_000), Some(100), Some(101)),
            ]
        );
        assert_eq!(compact, 2);
    }

    #[test]
    fn wakeups_and_migrations_keep_the_kernel_fields() {
        let (t, n) = roundtrip(
            &[vec![
                TimelineEvent {
                    peer: 555,
                    ..ev(1_000, EV_WAKEUP, 1, 101, 0, 0)
                },
                ev(1_100, EV_WAKEUP, 0, 102, 1, EVF_NEW),
                ev(2_000, EV_MIGRATE, 0, 101, 1, 0),
            ]],
            &ending(),
        );
        assert_eq!((n.wakeups, n.migrations), (2, 1));
        let mut seen = Vec::new();
        for p in &t.packet {
            let Some(b) = &p.ftrace_events else { continue };
            for e in &b.event {
                match &e.event {
                    Some(pb::Event::SchedWakeup(w)) => seen.push((
                        "wakeup",
                        b.cpu,
                        w.pid,
                        w.target_cpu,
                        e.pid.map(|p| p as i32),
                    )),
                    Some(pb::Event::SchedWakeupNew(w)) => {
                        seen.push(("new", b.cpu, w.pid, w.target_cpu, e.pid.map(|p| p as i32)))
                    }
                    Some(pb::Event::SchedMigrateTask(m)) => {
                        seen.push(("migrate", b.cpu, m.pid, m.orig_cpu, m.dest_cpu))
                    }
                    _ => {}
                }
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("migrate", Some(0), Some(101), Some(0), Some(1)),
                // Woken from CPU 1 by an idle CPU's wake list, from CPU 0 by 555.
                ("new", Some(1), Some(102), Some(0), Some(0)),
                ("wakeup", Some(0), Some(101), Some(1), Some(555)),
            ]
        );
    }

    #[test]
    fn every_target_thread_has_a_descriptor_and_lost_events_a_marker() {
        let mut end = ending();
        end.lost_events = 7;
        end.quota = Some("0.50 CPUs".into());
        end.throttled = vec![
            ThrottledSpan {
                start_ns: 10,
                end_ns: 20,
                nr_periods: 5,
                nr_throttled: 2,
                throttled_ns: 1_000,
            },
            ThrottledSpan::default(),
        ];
        let (t, n) = roundtrip(&[], &end);
        assert_eq!(n.lost_events, 7);
        let tree = t
            .packet
            .iter()
            .find_map(|p| p.process_tree.clone())
            .unwrap();
        let tids: Vec<_> = tree.threads.iter().map(|t| (t.tid, t.tgid)).collect();
        assert_eq!(tids, vec![(Some(100), Some(100)), (Some(101), Some(100))]);
        assert_eq!(tree.processes.len(), 1);
        assert_eq!(tree.processes[0].cmdline, vec!["main".to_string()]);
        let names: Vec<_> = (t.packet.iter())
            .filter_map(|p| p.track_event.as_ref())
            .map(|e| (e.r#type, e.name.clone()))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].1.as_deref().unwrap().starts_with("7 events LOST"));
        assert_eq!(names[1].0, Some(pb::TYPE_SLICE_BEGIN));
        assert_eq!(names[2].0, Some(pb::TYPE_SLICE_END));
    }

    #[test]
    fn throttled_periods_are_slices_on_their_own_track() {
        let mut end = ending();
        end.quota = Some("1.00 CPUs".into());
        end.periods = vec![super::super::timeline::PeriodSlice {
            start_ns: 1_000,
            ran_ns: 250,
            held_ns: 750,
            running: 4,
            queued: 4,
        }];
        let (t, _) = roundtrip(&[], &end);
        let tracks: Vec<_> = (t.packet.iter())
            .filter_map(|p| p.track_descriptor.as_ref())
            .filter_map(|d| Some((d.uuid?, d.name.clone()?)))
            .collect();
        assert!(tracks.iter().any(|(u, n)| *u == PERIOD_TRACK
            && n == "CPU quota periods (1.00 CPUs): quota used, then throttled"));
        let slices: Vec<_> = (t.packet.iter())
            .filter_map(|p| Some((p.timestamp?, p.track_event.clone()?)))
            .filter(|(_, e)| e.track_uuid == Some(PERIOD_TRACK))
            .map(|(at, e)| (at, e.r#type, e.name))
            .collect();
        let (b, e) = (Some(pb::TYPE_SLICE_BEGIN), Some(pb::TYPE_SLICE_END));
        assert_eq!(
            slices,
            vec![
                (1_000, b, Some("quota used: 4 threads ran 0.0 ms".into())),
                (1_250, e, None),
                (1_250, b, Some("throttled 0.0 ms".into())),
                (2_000, e, None),
            ]
        );
    }

    #[test]
    fn memory_held_is_one_flush_whatever_the_window() {
        let mut w = Writer::new(std::io::sink());
        for i in 0..50_000u64 {
            w.push(&[ev(i * 10, EV_SWITCH, (i % 2) as u32, 0, 101, 0)]);
            assert!(w.held == 0 && w.cpus.is_empty());
        }
        assert_eq!(w.written().switches, 50_000);
    }

    #[test]
    fn the_file_name_picks_the_format_unless_told() {
        let p = std::path::Path::new;
        assert_eq!(Format::pick(None, p("t.json")), Format::Chrome);
        assert_eq!(Format::pick(None, p("t.JSON")), Format::Chrome);
        assert_eq!(Format::pick(None, p("t.perfetto-trace")), Format::Perfetto);
        assert_eq!(Format::pick(None, p("t")), Format::Perfetto);
        assert_eq!(
            Format::pick(Some(Format::Perfetto), p("t.json")),
            Format::Perfetto
        );
        assert_eq!(
            Format::pick(Some(Format::Chrome), p("t.pftrace")),
            Format::Chrome
        );
    }
}
