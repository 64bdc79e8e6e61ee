//! The trace window's one event loop, on a current-thread tokio runtime:
//! it sleeps until the next interval's map read, a target's exit (pidfds),
//! a termination signal, a key in the live view, a readable ring buffer
//! (the timeline's, the kernel log's) or the timeline's drain tick,
//! whichever comes first, and handles it on this thread.
//!
//! The timeline ring is drained every [`DRAIN_EVERY`], not woken per
//! event: its fd is level-triggered (readable while it holds data), and
//! the programs submit with `BPF_RB_NO_WAKEUP`, since waking the reader on
//! every event (the kernel's default) costs the traced CPUs an interrupt
//! and a switch to affin-trace per event. The ring's `AsyncFd` therefore
//! fires only when the programs force a wakeup, which they do once as the
//! ring crosses half full (affinity-ebpf `emit`): a burst that would
//! overflow it before the next tick is drained at once instead.

use std::{
    collections::BTreeMap,
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

use crate::{
    collect::{
        collector::Collector,
        observer::{Observer, Snapshot},
        quota::QuotaWatch,
        targets,
        wake::{self, Exits, Signals},
    },
    host::{Root, procs},
    kernel::probe::Probe,
    model::topology::Topology,
    report::{perfetto::EventSink, timeline::Capture},
};

/// How often the timeline ring buffer is drained: the buffer must hold
/// this long's events (plus any delay in scheduling affin-trace).
pub const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// CLOCK_MONOTONIC now (ns): the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Empties the timeline ring: into `sink` when the timeline is streamed
/// (the capture keeps only the count, so memory stays bounded whatever the
/// window's length), else into the capture.
pub fn drain_ring(probe: &mut Probe, tl: &mut Capture, sink: Option<&mut (dyn EventSink + '_)>) {
    tl.drained += probe.drain_timeline(&mut tl.events) as u64;
    if let Some(sink) = sink {
        sink.push(&tl.events);
        tl.events.clear();
    } else {
        tl.hold_to_cap();
    }
}

/// Why a window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// `--duration` passed.
    Deadline,
    /// Every target exited.
    Exited,
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
    /// The live view was closed (q, or its terminal hung up).
    Quit,
}

impl End {
    /// The user stopped the window early (a command still running is
    /// asked to stop too).
    pub fn stopped(self) -> bool {
        matches!(self, End::Signal | End::Quit)
    }
}

/// What the loop waits on.
pub struct Sources {
    signals: Signals,
    exits: Exits,
    /// The live view's terminal.
    input: Option<AsyncFd<OwnedFd>>,
    /// The timeline ring (see the module doc) and its drain tick.
    ring: Option<AsyncFd<OwnedFd>>,
    drain: Option<tokio::time::Interval>,
    /// The kernel side's log ring (rare records: drained when readable).
    log: Option<AsyncFd<OwnedFd>>,
}

impl Sources {
    /// Inside the runtime's context: the targets' exits, the probe's rings
    /// and the live view's input. A source that cannot be registered is
    /// left out (its data is still read at each interval and at the end).
    pub fn new(
        signals: Signals,
        tgids: &[u32],
        probe: &Probe,
        observer: Option<&dyn Observer>,
    ) -> Sources {
        let drain = probe.timeline_fd().map(|_| {
            let mut i = tokio::time::interval(DRAIN_EVERY);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Sources {
            signals,
            exits: Exits::watch(tgids),
            input: observer
                .and_then(|o| o.input_fd())
                .and_then(|fd| wake::readable(fd).ok()),
            ring: probe.timeline_fd().and_then(|fd| wake::readable(fd).ok()),
            drain,
            log: probe.log_fd().and_then(|fd| wake::readable(fd).ok()),
        }
    }
}

/// Waits for `fd` if there is one, else never.
async fn readable(fd: Option<&AsyncFd<OwnedFd>>) {
    match fd {
        Some(fd) => wake::wait_readable(fd).await,
        None => std::future::pending().await,
    }
}

async fn tick(i: Option<&mut tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// One window's state between the reads.
pub struct Window<'a, 'o> {
    pub(crate) probe: &'a mut Probe,
    pub(crate) collector: Collector,
    pub(crate) timeline: Option<Capture>,
    pub(crate) quota: Option<QuotaWatch>,
    observer: Option<&'a mut (dyn Observer + 'o)>,
    /// With a streamed timeline: where drained events go instead of the
    /// capture.
    sink: Option<&'a mut (dyn EventSink + 'o)>,
    topology: &'a Topology,
    root: &'a Root,
    tgids: &'a [u32],
    interval: Duration,
    start: Instant,
    deadline: Option<Instant>,
    last: Instant,
    /// /proc/stat busy ns per CPU at the previous read, for the live view.
    busy_prev: BTreeMap<u32, u64>,
    bar: Option<indicatif::ProgressBar>,
    /// `--comm` names looked up again after each read (new processes of
    /// that name become targets).
    comms: &'a [String],
    /// How many processes those lookups added.
    pub(crate) rescanned: u64,
}

/// The timing of a window.
pub struct Timing {
    /// Between map reads.
    pub interval: Duration,
    /// Window length, `None`: until the targets exit.
    pub duration: Option<Duration>,
}

impl<'a, 'o> Window<'a, 'o> {
    /// A window starting now.
    #[expect(clippy::too_many_arguments, reason = "the parts of one window, named")]
    pub fn new(
        probe: &'a mut Probe,
        collector: Collector,
        timeline: Option<Capture>,
        quota: Option<QuotaWatch>,
        observer: Option<&'a mut (dyn Observer + 'o)>,
        topology: &'a Topology,
        root: &'a Root,
        tgids: &'a [u32],
        timing: Timing,
        bar: Option<indicatif::ProgressBar>,
    ) -> Window<'a, 'o> {
        let start = Instant::now();
        Window {
            probe,
            collector,
            timeline,
            quota,
            busy_prev: if observer.is_some() {
                procs::cpu_busy_ns(root)
            } else {
                BTreeMap::new()
            },
            observer,
            sink: None,
            topology,
            root,
            tgids,
            interval: timing.interval,
            start,
            deadline: timing.duration.map(|d| start + d),
            last: start,
            bar,
            comms: &[],
            rescanned: 0,
        }
    }

    /// Looks `comms` up again after each read.
    pub fn rescanning(mut self, comms: &'a [String]) -> Self {
        self.comms = comms;
        self
    }

    /// Hands drained timeline events to `sink` as they come.
    pub fn streaming(mut self, sink: Option<&'a mut (dyn EventSink + 'o)>) -> Self {
        self.sink = sink;
        self
    }

    /// When the window started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Runs the window to its end: a read at every interval, and a last
    /// one when it ends.
    pub async fn run(&mut self, src: &mut Sources) -> End {
        loop {
            let next = self.last + self.interval;
            let next = self.deadline.map_or(next, |d| d.min(next));
            let woke = self.wait_until(src, next).await;
            let now = Instant::now();
            let quit = self.read_interval(now);
            let ended = woke.or(quit.then_some(End::Quit)).or_else(|| {
                self.deadline
                    .is_some_and(|d| now >= d)
                    .then_some(End::Deadline)
            });
            if let Some(end) = ended {
                return end;
            }
        }
    }

    /// Sleeps until `next`, handling what comes first; `Some` when the
    /// window must end.
    async fn wait_until(&mut self, src: &mut Sources, next: Instant) -> Option<End> {
        let sleep = tokio::time::sleep_until(next.into());
        tokio::pin!(sleep);
        loop {
            if src.exits.all_exited() {
                return Some(End::Exited);
            }
            tokio::select! {
                biased;
                () = src.signals.recv() => return Some(End::Signal),
                () = src.exits.all() => return Some(End::Exited),
                () = &mut sleep => return None,
                () = readable(src.input.as_ref()) => {
                    if let Some(o) = self.observer.as_mut()
                        && !o.on_input()
                    {
                        return Some(End::Quit);
                    }
                }
                () = readable(src.ring.as_ref()) => self.drain_timeline(),
                () = tick(src.drain.as_mut()) => self.drain_timeline(),
                () = readable(src.log.as_ref()) => self.probe.drain_log(),
            }
        }
    }

    fn drain_timeline(&mut self) {
        if let Some(tl) = self.timeline.as_mut() {
            drain_ring(self.probe, tl, self.sink.as_deref_mut());
        }
    }

    /// The interval's read: the maps, the timeline, the quota, then the
    /// live view; true when the view ends the window.
    fn read_interval(&mut self, now: Instant) -> bool {
        let rss = self
            .tgids
            .iter()
            .map(|&p| procs::rss_bytes(self.root, p))
            .sum();
        let wall_ns = (now - self.last).as_nanos() as u64;
        self.collector.sample(self.probe, wall_ns, rss);
        self.rescanned += targets::rescan_comms(self.root, self.probe, self.comms);
        self.last = now;
        self.drain_timeline();
        let mono = monotonic_ns();
        let span = self.quota.as_mut().and_then(|q| q.read(mono));
        if let Some(q) = self.quota.as_mut() {
            q.read_events(self.probe, self.tgids);
        }
        if let (Some(tl), Some(span)) = (self.timeline.as_mut(), span) {
            tl.throttled.push(span);
        }
        let quit = self.show(now, wall_ns);
        if let Some(b) = &self.bar {
            b.set_position((now - self.start).as_millis() as u64);
            b.set_message(format!("{} threads", self.collector.thread_count()));
        }
        quit
    }

    /// Shows the interval to the live view; true when it ends the window.
    fn show(&mut self, now: Instant, wall_ns: u64) -> bool {
        let Some(o) = self.observer.as_mut() else {
            return false;
        };
        let busy_now = procs::cpu_busy_ns(self.root);
        let interval_busy = procs::busy_delta(&self.busy_prev, &busy_now);
        self.busy_prev = busy_now;
        let snap = Snapshot {
            trace: self
                .collector
                .snapshot((now - self.start).as_nanos() as u64),
            interval_busy_ns: &interval_busy,
            interval_ns: wall_ns,
            topology: self.topology,
            cgroup_limit: self.quota.as_ref().map(|q| q.limit()),
            cgroup_window: self.quota.as_ref().and_then(|q| q.window()),
        };
        !o.on_interval(&snap)
    }

    /// The timeline's last events, and what was lost (at the window's end,
    /// `window_end`, once a command run has exited).
    pub fn last_drain(&mut self, window_end: u64) {
        let Some(tl) = self.timeline.as_mut() else {
            return;
        };
        // The targets' last switches (an exiting thread's final one comes
        // after its pidfd woke us) are in the ring by now. Events written
        // (counted before this last drain) but not received would be a bug
        // in the reader: counted as lost rather than let pass.
        let written = self.probe.timeline_written();
        drain_ring(self.probe, tl, self.sink.as_deref_mut());
        tl.end_ns = window_end;
        let unread = written.saturating_sub(tl.drained);
        tl.lost_events = self.probe.timeline_lost() + unread;
    }

    /// Takes down the progress bar.
    pub fn clear_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
