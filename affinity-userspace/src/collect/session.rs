//! One trace run, start to finish: check the input, load and attach, mark the
//! targets, read the maps each interval until the window ends, and return
//! the [`Trace`]. The only module that sequences kernel-touching steps.
//!
//! With `--timeline`, the ring buffer is drained every [`DRAIN_EVERY`]
//! within the same poll loop, rather than woken by the ring's fd: poll(2)
//! on a ring buffer fd is level-triggered, so with events streaming in it
//! returns at once after every drain, unless every event wakes the reader
//! (the kernel's default), which costs the traced CPUs an interrupt and a
//! switch to affin-trace per event.

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::{
    analyze::decision::TargetFacts,
    cli::TraceArgs,
    collect::collector::Collector,
    collect::wake::{Waiter, Wake},
    host::cgroup::{CgroupLimit, CpuStat, CpuStatDelta},
    host::command::{CommandError, GatedChild, spawn_gated},
    host::preflight::{self, PreflightError},
    host::procs::{self, TargetError},
    host::root::Root,
    kernel::btf,
    kernel::probe::{Probe, ProbeConfig, ProbeError},
    model::Trace,
    model::topology::Topology,
    report::timeline::{Capture, ThrottledSpan},
};

/// Default window when tracing pids (a command runs until it exits).
pub const DEFAULT_DURATION_S: f64 = 30.0;

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

/// Why a run failed. [`SessionError::exit_code`] maps each to an exit code.
#[derive(Debug, Error)]
pub enum SessionError {
    /// --apply with a command: it is gone when the window ends.
    #[error("--apply needs a running target (--pid, --tid, --comm or --cgroup), not a command")]
    ApplyToCommand,
    /// Nothing to trace was given.
    #[error(
        "nothing to trace: give --pid PID, --tid TID, --comm NAME, --cgroup PATH or -- COMMAND (see --help)"
    )]
    NoTarget,
    /// A command and pids at once.
    #[error("give either --pid/--tid or -- COMMAND, not both")]
    TargetAndCommand,
    /// The interval is longer than the window.
    #[error(
        "--interval {interval} s is longer than --duration {duration} s: make the interval shorter"
    )]
    IntervalTooLong {
        /// Interval (s).
        interval: f64,
        /// Duration (s).
        duration: f64,
    },
    /// Bad target.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Missing privileges or kernel support.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// BTF offsets.
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    /// Topology.
    #[error("reading the CPU topology: {0}")]
    Topology(String),
    /// Load or attach.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    /// The command could not be started.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl SessionError {
    /// Exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SessionError::NoTarget
            | SessionError::TargetAndCommand
            | SessionError::ApplyToCommand
            | SessionError::IntervalTooLong { .. }
            | SessionError::Target(_) => crate::cli::EXIT_USAGE,
            SessionError::Command(CommandError::Exec { .. }) => 127,
            _ => crate::cli::EXIT_FAILURE,
        }
    }
}

/// What a run produced.
pub struct Outcome {
    /// The trace.
    pub trace: Trace,
    /// The command's exit status, in command mode.
    pub exit_status: Option<i32>,
    /// The topology read at start.
    pub topology: Topology,
    /// Facts about the target read at the end of the window.
    pub facts: TargetFacts,
    /// The CPU quota in force on the first target's cgroup path, if any.
    pub cgroup_limit: Option<CgroupLimit>,
    /// Its cpu.stat over the window.
    pub cgroup_window: Option<CpuStatDelta>,
    /// The quota's periods and per-thread held time from the kernel's
    /// throttle path, when its programs attached.
    pub bandwidth: Option<crate::model::bandwidth::BandwidthTrace>,
    /// What sizes the target's threads (with a quota only).
    pub runtime: Option<crate::model::runtime::RuntimeFacts>,
    /// Start time of each target when the trace began: an apply later
    /// checks it to catch a recycled pid.
    pub start_times: std::collections::BTreeMap<u32, u64>,
    /// The recorded events, with `--timeline`.
    pub timeline: Option<Capture>,
}

/// Resolved targets.
struct Targets {
    tgids: Vec<u32>,
    tids: Vec<u32>,
}

fn resolve(args: &TraceArgs) -> Result<Targets, SessionError> {
    let root = &args.root;
    let mut tgids = Vec::new();
    for name in &args.comms {
        let found = procs::pids_by_comm(root, name);
        if found.is_empty() {
            return Err(TargetError::NoSuchComm(name.clone()).into());
        }
        tgids.extend(found);
    }
    if let Some(dir) = &args.cgroup {
        let found = procs::pids_in_cgroup(dir)?;
        if found.is_empty() {
            return Err(TargetError::EmptyCgroup(dir.display().to_string()).into());
        }
        tgids.extend(found);
    }
    for &pid in &args.pids {
        tgids.push(procs::check_target(root, pid)?);
    }
    for &tid in &args.tids {
        tgids.push(procs::tgid_of(root, tid)?);
    }
    tgids.sort_unstable();
    tgids.dedup();
    Ok(Targets {
        tgids,
        tids: args.tids.clone(),
    })
}

/// Checks the arguments and the system; no side effects.
fn validate(args: &TraceArgs) -> Result<Targets, SessionError> {
    let command = !args.command.is_empty();
    let targets = !args.pids.is_empty()
        || !args.tids.is_empty()
        || !args.comms.is_empty()
        || args.cgroup.is_some();
    if command && targets {
        return Err(SessionError::TargetAndCommand);
    }
    if !command && !targets {
        return Err(SessionError::NoTarget);
    }
    if command && args.apply {
        return Err(SessionError::ApplyToCommand);
    }
    if let Some(d) = args.duration
        && args.interval() > d
    {
        return Err(SessionError::IntervalTooLong {
            interval: args.interval(),
            duration: d,
        });
    }
    let targets = resolve(args)?;
    preflight::check(&args.root, args.apply)?;
    Ok(targets)
}

fn pid_max(root: &Root) -> u32 {
    std::fs::read_to_string(root.join("proc/sys/kernel/pid_max"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

fn seed(root: &Root, probe: &mut Probe, tgid: u32) {
    for t in procs::threads(root, tgid) {
        probe.seed_thread(t.tid, tgid, t.comm, t.sum_exec_ns);
    }
}

/// What a live view sees after each interval's read.
pub struct Snapshot<'a> {
    /// The trace so far (`duration_ns`: time since tracing started).
    pub trace: &'a Trace,
    /// System-wide busy ns per CPU in the last interval (/proc/stat).
    pub interval_busy_ns: &'a BTreeMap<u32, u64>,
    /// Wall ns of the last interval.
    pub interval_ns: u64,
    /// The machine.
    pub topology: &'a Topology,
    /// The quota in force on the target's cgroup path, if any.
    pub cgroup_limit: Option<&'a CgroupLimit>,
    /// Its cpu.stat since tracing started.
    pub cgroup_window: Option<&'a CpuStatDelta>,
}

/// A live view of a running window (`--watch`).
pub trait Observer {
    /// An fd to wake up on between intervals (the terminal, for keys).
    fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// The input fd is readable; false ends the window.
    fn on_input(&mut self) -> bool {
        true
    }
    /// An interval was read; false ends the window.
    fn on_interval(&mut self, snap: &Snapshot<'_>) -> bool;
}

/// Runs one trace window.
pub fn run(args: &TraceArgs) -> Result<Outcome, SessionError> {
    run_observed(args, None)
}

/// Runs one trace window, showing each interval to `observer`.
pub fn run_observed(
    args: &TraceArgs,
    mut observer: Option<&mut dyn Observer>,
) -> Result<Outcome, SessionError> {
    let t0 = Instant::now();
    let root = &args.root;
    let targets = validate(args)?;
    let start_times = targets
        .tgids
        .iter()
        .filter_map(|&p| procs::start_time(root, p).ok().map(|t| (p, t)))
        .collect();
    let verbose = |what: &str| {
        if args.verbose {
            eprintln!(
                "affin-trace: {what} at {:.1} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    // Ctrl-C, kill or a closed terminal end the window; the report and the
    // programs' detachment (Probe's Drop) still happen.
    let mut waiter = Waiter::new().map_err(SessionError::Signals)?;
    let topology = Topology::read(root).map_err(|e| SessionError::Topology(e.to_string()))?;
    verbose("topology read");
    let offsets = btf::task_offsets_cached(
        std::path::Path::new(btf::VMLINUX_BTF),
        std::path::Path::new(btf::CACHE_DIR),
    )?;
    verbose("offsets resolved");
    let cfg = ProbeConfig {
        max_threads: args.max_threads,
        attach: args.attach,
        offsets,
        pid_max: pid_max(root),
        timeline_bytes: args.timeline.as_ref().map(|_| args.timeline_buffer),
        // A quota on the first target's path (a command runs in ours).
        bandwidth: crate::host::cgroup::resolve(
            root,
            targets
                .tgids
                .first()
                .copied()
                .unwrap_or_else(std::process::id),
        )
        .is_ok_and(|cg| cg.limit().is_some()),
    };
    let mut probe = Probe::load(&cfg, &topology)?;
    verbose(&format!("programs attached ({:?})", probe.mode()));

    let mut timeline = cfg.timeline_bytes.map(|_| Capture {
        start_ns: monotonic_ns(),
        ring_buffer_bytes: u64::from(probe.timeline_bytes()),
        ..Capture::default()
    });
    let mut child: Option<GatedChild> = None;
    let mut tgids = targets.tgids;
    if !args.command.is_empty() {
        let mut c = spawn_gated(&args.command)?;
        probe.add_target(c.pid())?;
        seed(root, &mut probe, c.pid());
        c.release()?;
        tgids = vec![c.pid()];
        child = Some(c);
    } else {
        for &tgid in &tgids {
            probe.add_target(tgid)?;
            seed(root, &mut probe, tgid);
        }
    }
    verbose("tracing");

    let duration = args.duration.or(if child.is_some() {
        None
    } else {
        Some(DEFAULT_DURATION_S)
    });
    let interval = Duration::from_secs_f64(args.interval());
    let start = Instant::now();
    let deadline = duration.map(|d| start + Duration::from_secs_f64(d));
    let bar = progress_bar(duration, child.is_none() && observer.is_none());
    let busy_before = procs::cpu_busy_ns(root);
    waiter.watch(&tgids);
    // The quota on the target's cgroup path, and its counters from now on.
    let cgroup_limit = tgids
        .first()
        .and_then(|&p| match crate::host::cgroup::resolve(root, p) {
            Ok(cg) => cg.limit().cloned(),
            Err(e) => {
                eprintln!("affin-trace: {e}; continuing without the cgroup quota check");
                None
            }
        });
    let stat_before = cgroup_limit
        .as_ref()
        .and_then(|l| crate::host::cgroup::read_stat(l).ok());
    // The quota's own events from the kernel's throttle path, when they attach.
    let mut bandwidth =
        crate::collect::bandwidth::BandwidthCollector::start(&mut probe, cgroup_limit.as_ref());
    let mut runtime = None;
    // Per-interval throttling, for the timeline only.
    let mut stat_prev = stat_before.filter(|_| timeline.is_some());
    let mut mono_prev = monotonic_ns();
    if let (Some(tl), Some(l)) = (timeline.as_mut(), cgroup_limit.as_ref()) {
        tl.quota = Some(format!(
            "{:.2} CPUs ({}/{} us) on {}",
            l.quota_cores(),
            l.quota.quota_us,
            l.quota.period_us,
            l.cgroup
        ));
    }
    let drain_every = if timeline.is_some() {
        DRAIN_EVERY
    } else {
        Duration::MAX
    };
    let mut collector = Collector::new();
    let mut busy_prev = busy_before.clone();
    let mem_total = procs::mem_total_bytes(root);
    let mut last = start;
    let mut exit_status = None;
    let mut stopped = false;
    loop {
        let next = (last + interval).min(deadline.unwrap_or(last + interval));
        let mut ended = waiter.all_exited();
        while !ended {
            let now = Instant::now();
            if now >= next {
                break;
            }
            let input = observer.as_ref().and_then(|o| o.input_fd());
            let wake = waiter.wait_with((next - now).min(drain_every), input);
            if let Some(tl) = timeline.as_mut() {
                probe.drain_timeline(&mut tl.events);
            }
            match wake {
                Wake::Input => {
                    if let Some(o) = observer.as_mut()
                        && !o.on_input()
                    {
                        stopped = true;
                        ended = true;
                    }
                }
                Wake::Timeout => {}
                Wake::Signal => {
                    stopped = true;
                    ended = true;
                }
                Wake::AllExited => ended = true,
            }
        }
        let now = Instant::now();
        let rss = tgids.iter().map(|&p| procs::rss_bytes(root, p)).sum();
        let wall_ns = (now - last).as_nanos() as u64;
        collector.sample(&mut probe, wall_ns, rss);
        if let Some(b) = bandwidth.as_mut() {
            b.sample(&probe);
        }
        // What sizes the program's threads, read once it runs its own image.
        if runtime.is_none() && cgroup_limit.is_some() {
            runtime = tgids.first().and_then(|&p| crate::host::runtime::read(p));
        }
        last = now;
        if let Some(tl) = timeline.as_mut() {
            probe.drain_timeline(&mut tl.events);
            let mono = monotonic_ns();
            if let (Some(l), Some(prev)) = (&cgroup_limit, &stat_prev)
                && let Ok(stat) = crate::host::cgroup::read_stat(l)
            {
                let d = CpuStat::delta(prev, &stat);
                tl.throttled.push(ThrottledSpan {
                    start_ns: mono_prev,
                    end_ns: mono,
                    nr_periods: d.nr_periods,
                    nr_throttled: d.nr_throttled,
                    throttled_ns: d.throttled_ns,
                });
                stat_prev = Some(stat);
            }
            mono_prev = mono;
        }
        if let Some(o) = observer.as_mut() {
            let busy_now = procs::cpu_busy_ns(root);
            let interval_busy = procs::busy_delta(&busy_prev, &busy_now);
            busy_prev = busy_now;
            let mut so_far = collector.finish();
            so_far.pids = tgids.clone();
            so_far.tids = targets.tids.clone();
            so_far.duration_ns = (now - start).as_nanos() as u64;
            so_far.interval_ns = interval.as_nanos() as u64;
            so_far.nr_cpus = topology.cpus.len() as u32;
            so_far.mem_total_bytes = mem_total;
            let window = match (&cgroup_limit, &stat_before) {
                (Some(l), Some(before)) => crate::host::cgroup::read_stat(l)
                    .ok()
                    .map(|after| CpuStat::delta(before, &after)),
                _ => None,
            };
            let snap = Snapshot {
                trace: &so_far,
                interval_busy_ns: &interval_busy,
                interval_ns: wall_ns,
                topology: &topology,
                cgroup_limit: cgroup_limit.as_ref(),
                cgroup_window: window.as_ref(),
            };
            if !o.on_interval(&snap) {
                stopped = true;
                ended = true;
            }
        }
        if let Some(b) = &bar {
            b.set_position((now - start).as_millis() as u64);
            b.set_message(format!("{} threads", collector.thread_count()));
        }
        if ended || deadline.is_some_and(|d| now >= d) {
            break;
        }
    }
    let window_end = monotonic_ns();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let facts = target_facts(root, tgids.first().copied(), &topology);
    let cgroup_window = match (&cgroup_limit, &stat_before) {
        (Some(l), Some(before)) => crate::host::cgroup::read_stat(l)
            .ok()
            .map(|after| CpuStat::delta(before, &after)),
        _ => None,
    };
    let wall = start.elapsed();
    let busy_after = procs::cpu_busy_ns(root);
    // The command may still run (the window ended first): wait for it, so
    // affin-trace exits with its status, as `time` does.
    if let Some(c) = child.as_mut()
        && exit_status.is_none()
    {
        if stopped {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.pid() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        exit_status = Some(c.wait());
    }
    let mut trace = collector.finish();
    trace.pids = tgids.clone();
    trace.tids = targets.tids;
    trace.duration_ns = wall.as_nanos() as u64;
    trace.interval_ns = interval.as_nanos() as u64;
    trace.system_busy_ns = procs::busy_delta(&busy_before, &busy_after);
    trace.exited_pids = if child.is_some() {
        tgids.clone()
    } else {
        tgids
            .iter()
            .copied()
            .filter(|&p| !procs::alive(root, p))
            .collect()
    };
    trace.attach_mode = probe.mode();
    trace.nr_cpus = topology.cpus.len() as u32;
    trace.mem_total_bytes = mem_total;
    if let Some(tl) = timeline.as_mut() {
        // The targets' last switches (an exiting thread's final one comes
        // after its pidfd woke us) are in the ring by now. Events written
        // (counted before this last drain) but not received would be a bug
        // in the reader: counted as lost rather than let pass.
        let written = probe.timeline_written();
        probe.drain_timeline(&mut tl.events);
        tl.end_ns = window_end;
        let unread = written.saturating_sub(tl.events.len() as u64);
        tl.lost_events = probe.timeline_lost() + unread;
    }
    let bandwidth = bandwidth.map(|b| b.finish(&probe, window_end, &tgids));
    drop(probe); // detach before reporting
    if let Some(line) = args
        .verbose
        .then(|| read_summary(&trace.intervals))
        .flatten()
    {
        eprintln!("affin-trace: {line}");
    }
    Ok(Outcome {
        trace,
        exit_status,
        topology,
        facts,
        cgroup_limit,
        cgroup_window,
        bandwidth,
        runtime,
        start_times,
        timeline,
    })
}

/// `--verbose`'s account of the per-interval reads (maps and /proc): wall
/// and CPU time, median and max.
fn read_summary(intervals: &[crate::model::Interval]) -> Option<String> {
    let ms = |f: fn(&crate::model::Interval) -> u64| {
        let mut v: Vec<u64> = intervals.iter().map(f).collect();
        v.sort_unstable();
        let median = v.get(v.len() / 2)?;
        Some((*median as f64 / 1e6, *v.last()? as f64 / 1e6))
    };
    let (wall, cpu) = (ms(|i| i.read_ns)?, ms(|i| i.read_cpu_ns)?);
    Some(format!(
        "{} interval reads: wall median {:.2} ms, max {:.2} ms; CPU median {:.2} ms, max {:.2} ms",
        intervals.len(),
        wall.0,
        wall.1,
        cpu.0,
        cpu.1
    ))
}

/// The target's cpuset bound and NUMA memory, read while it may still live.
fn target_facts(root: &Root, pid: Option<u32>, topology: &Topology) -> TargetFacts {
    let Some(pid) = pid else {
        return TargetFacts::default();
    };
    let allowed = crate::host::topology::allowed_cpus(root, pid)
        .ok()
        .and_then(|a| a.cpuset)
        .or_else(|| Some(topology.online()));
    let numa_memory = std::fs::read_to_string(root.join(format!("proc/{pid}/numa_maps")))
        .ok()
        .map(|t| crate::analyze::recommend::parse_numa_maps(&t))
        .filter(|m| !m.is_empty());
    TargetFacts {
        allowed,
        numa_memory,
    }
}

fn progress_bar(duration: Option<f64>, allowed: bool) -> Option<indicatif::ProgressBar> {
    let d = duration?;
    if !allowed || !std::io::stdout().is_terminal() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new((d * 1000.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("tracing {bar:30} {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interval;

    #[test]
    fn read_summary_gives_median_and_max_of_wall_and_cpu() {
        let iv = |wall_ms: u64, cpu_ms: u64| Interval {
            read_ns: wall_ms * 1_000_000,
            read_cpu_ns: cpu_ms * 1_000_000,
            ..Default::default()
        };
        assert_eq!(read_summary(&[]), None);
        assert_eq!(
            read_summary(&[iv(3, 1), iv(1, 1), iv(17, 13)]).unwrap(),
            "3 interval reads: wall median 3.00 ms, max 17.00 ms; CPU median 1.00 ms, max 13.00 ms"
        );
    }
}
