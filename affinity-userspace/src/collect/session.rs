//! One trace run, start to finish, as a sequence of roles: the targets
//! are checked and resolved ([`crate::collect::targets`]), the programs
//! loaded and the targets marked ([`attach`]), the window runs in one
//! event loop ([`crate::collect::window`]), and the collector's whole
//! [`Trace`] comes back in an [`Outcome`] with the facts read at the end.
//! The only module that sequences kernel-touching steps.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use thiserror::Error;

pub use crate::collect::observer::{Observer, Snapshot};
pub use crate::collect::window::{DRAIN_EVERY, monotonic_ns};
use crate::{
    analyze::decision::TargetFacts,
    cli::TraceArgs,
    collect::collector::{Collector, WindowEnd, WindowInfo},
    collect::quota::QuotaWatch,
    collect::targets::{self, Launch},
    collect::wake::{self, Signals},
    collect::window::{End, Sources, Timing, Window},
    host::Root,
    host::cgroup::{CgroupLimit, CpuStatDelta},
    host::command::{CommandError, GatedChild, spawn_gated_with_env},
    host::contention,
    host::preflight::PreflightError,
    host::procs::{self, TargetError},
    kernel::btf,
    kernel::probe::{Probe, ProbeConfig, ProbeError},
    model::topology::Topology,
    model::{PressureDelta, Trace},
    report::perfetto::EventSink,
    report::timeline::Capture,
};

/// Default window when tracing pids (a command runs until it exits).
pub const DEFAULT_DURATION_S: f64 = 30.0;

/// Why a run failed. [`SessionError::exit_code`] maps each to an exit code.
#[derive(Debug, Error)]
pub enum SessionError {
    /// --apply with a command: it is gone when the window ends.
    #[error("--apply needs a running target (--pid, --tid, --comm or --cgroup), not a command")]
    ApplyToCommand,
    /// --verify-fix without a command: only a command can be run again.
    #[error(
        "--verify-fix reruns a command: give it with -- COMMAND, not --pid/--tid/--comm/--cgroup/--pod/--container"
    )]
    VerifyFixNeedsCommand,
    /// Nothing to trace was given.
    #[error(
        "nothing to trace: give --pid PID, --tid TID, --comm NAME, --cgroup PATH, --pod NAMESPACE/NAME, --container ID or -- COMMAND (see --help)"
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
    /// A second window's target is another process now.
    #[error("process {0} exited and its pid now names another process: nothing to trace again")]
    Replaced(u32),
}

impl SessionError {
    /// Exit code: 2 for bad input, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            SessionError::NoTarget
            | SessionError::TargetAndCommand
            | SessionError::ApplyToCommand
            | SessionError::VerifyFixNeedsCommand
            | SessionError::IntervalTooLong { .. }
            | SessionError::Target(_)
            | SessionError::Replaced(_) => crate::cli::EXIT_USAGE,
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

/// Whether new processes of the targets are traced: always for a command,
/// `--cgroup` and `--comm` (what they name grows during the run), on
/// request (`--follow`) for `--pid` and `--tid`.
fn follows(args: &TraceArgs) -> bool {
    args.follow || !args.command.is_empty() || args.cgroup.is_some() || !args.comms.is_empty()
}

/// CPU pressure (PSI) at the window's start: the machine's, and the
/// `--cgroup` directory's own where it is a v2 one.
struct Pressures {
    host: Option<contention::Pressure>,
    cgroup: Option<(std::path::PathBuf, contention::Pressure)>,
}

impl Pressures {
    fn before(cgroup: Option<&std::path::Path>) -> Self {
        Self {
            host: contention::read_pressure(std::path::Path::new(contention::HOST_CPU_PRESSURE)),
            cgroup: cgroup
                .and_then(contention::cgroup_pressure_file)
                .and_then(|f| contention::read_pressure(&f).map(|p| (f, p))),
        }
    }

    /// Growth since [`Pressures::before`]: (machine, cgroup).
    fn after(&self) -> (Option<PressureDelta>, Option<PressureDelta>) {
        let delta = |f: &std::path::Path, b: &contention::Pressure| {
            contention::read_pressure(f).map(|a| contention::pressure_delta(b, &a))
        };
        (
            self.host
                .as_ref()
                .and_then(|b| delta(std::path::Path::new(contention::HOST_CPU_PRESSURE), b)),
            self.cgroup.as_ref().and_then(|(f, b)| delta(f, b)),
        )
    }
}

/// `kernel.pid_max`, sizing the per-pid maps.
pub fn pid_max(root: &Root) -> u32 {
    std::fs::read_to_string(root.join("proc/sys/kernel/pid_max"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// `--verbose`'s start-up timings.
struct Verbose {
    on: bool,
    t0: Instant,
}

impl Verbose {
    fn say(&self, what: &str) {
        if self.on {
            eprintln!(
                "affin-trace: {what} at {:.1} ms",
                self.t0.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

/// Runs one trace window.
pub fn run(args: &TraceArgs) -> Result<Outcome, SessionError> {
    run_observed(args, None)
}

/// Runs one trace window, showing each interval to `observer`.
pub fn run_observed(
    args: &TraceArgs,
    observer: Option<&mut dyn Observer>,
) -> Result<Outcome, SessionError> {
    run_streamed(args, observer, None)
}

/// Runs one trace window, showing each interval to `observer`; with a
/// `sink`, timeline events go to it as they are drained (the outcome's
/// capture then holds none of them: memory stays bounded).
pub fn run_streamed(
    args: &TraceArgs,
    observer: Option<&mut dyn Observer>,
    sink: Option<&mut dyn EventSink>,
) -> Result<Outcome, SessionError> {
    let t0 = Instant::now();
    let launch = targets::validate(args)?;
    run_launch(args, launch, observer, sink, t0)
}

/// A second window on the processes `first` traced (`--verify`), with
/// `args`' timing: the same pids, not a new `--comm` or `--cgroup` lookup.
pub fn run_again(args: &TraceArgs, first: &Outcome) -> Result<Outcome, SessionError> {
    let t0 = Instant::now();
    let launch = targets::again(
        &args.root,
        &first.trace.pids,
        &first.trace.tids,
        &first.start_times,
    )?;
    run_launch(args, launch, None, None, t0)
}

fn run_launch(
    args: &TraceArgs,
    launch: Launch,
    mut observer: Option<&mut dyn Observer>,
    sink: Option<&mut dyn EventSink>,
    t0: Instant,
) -> Result<Outcome, SessionError> {
    let verbose = Verbose {
        on: args.verbose,
        t0,
    };
    let root = &args.root;
    let start_times = targets::start_times(root, &launch);
    let rt = wake::runtime().map_err(SessionError::Signals)?;
    let _in = rt.enter();
    // Ctrl-C, kill or a closed terminal end the window; the report and the
    // programs' detachment (Probe's Drop) still happen.
    let signals = Signals::new().map_err(SessionError::Signals)?;
    let mut run = attach(args, launch, &verbose)?;
    let mut src = Sources::new(signals, &run.tgids, &run.probe, observer.as_deref());
    let timing = timing(args, &run);
    let info = window_info(root, &run, &timing);
    let bar = progress_bar(timing.duration, run.child.is_none() && observer.is_none());
    let cpu_before = procs::CpuTimes::read(root);
    let pressure = Pressures::before(args.cgroup.as_deref());
    let quota = run
        .tgids
        .first()
        .and_then(|&p| QuotaWatch::start(root, p, monotonic_ns()))
        .map(|q| q.with_events(&mut run.probe));
    let timeline = run.timeline.take().map(|mut tl| {
        tl.quota = quota.as_ref().map(QuotaWatch::describe);
        tl
    });
    let mut window = Window::new(
        &mut run.probe,
        Collector::new(info),
        timeline,
        quota,
        // Re-borrowed as the window's own (its lifetimes are not the caller's).
        observer.take().map(|o| o as &mut dyn Observer),
        &run.topology,
        root,
        &run.tgids,
        timing,
        bar,
    )
    .rescanning(&args.comms)
    .streaming(sink.map(|s| s as &mut dyn EventSink));
    let end = rt.block_on(window.run(&mut src));
    let window_end = monotonic_ns();
    window.clear_bar();
    let wall = window.started().elapsed();
    let facts = target_facts(root, run.tgids.first().copied(), &run.topology);
    let cpu = cpu_before.since(root);
    // The command may still run (the window ended first): wait for it, so
    // affin-trace exits with its status, as `time` does.
    let exit_status = run.child.as_mut().map(|c| wait_child(c, end));
    window.last_drain(window_end);
    let closed = Closed::new(window, window_end, wall, cpu, pressure);
    let (trace, quota, bandwidth, runtime, timeline) = closed.into_trace(args, &mut run);
    drop(src);
    drop(run.probe); // detach before reporting
    if let Some(line) = args
        .verbose
        .then(|| read_summary(&trace.intervals))
        .flatten()
    {
        eprintln!("affin-trace: {line}");
    }
    let (cgroup_limit, cgroup_window) = match quota.map(QuotaWatch::into_parts) {
        Some((l, w)) => (Some(l), w),
        None => (None, None),
    };
    Ok(Outcome {
        trace,
        exit_status,
        topology: run.topology,
        facts,
        cgroup_limit,
        cgroup_window,
        bandwidth,
        runtime,
        start_times,
        timeline,
    })
}

/// What an ended window left, with the machine's figures over it.
struct Closed {
    collector: Collector,
    timeline: Option<Capture>,
    quota: Option<QuotaWatch>,
    rescanned: u64,
    /// CLOCK_MONOTONIC ns at the window's end.
    window_end: u64,
    wall: Duration,
    /// /proc/stat over the window.
    cpu: procs::CpuTimes,
    pressure: Pressures,
}

/// The trace of a closed window and what goes beside it in the outcome.
type Finished = (
    Trace,
    Option<QuotaWatch>,
    Option<crate::model::bandwidth::BandwidthTrace>,
    Option<crate::model::runtime::RuntimeFacts>,
    Option<Capture>,
);

impl Closed {
    fn new(
        window: Window<'_, '_>,
        window_end: u64,
        wall: Duration,
        cpu: procs::CpuTimes,
        pressure: Pressures,
    ) -> Self {
        let Window {
            collector,
            timeline,
            quota,
            rescanned,
            ..
        } = window;
        Self {
            collector,
            timeline,
            quota,
            rescanned,
            window_end,
            wall,
            cpu,
            pressure,
        }
    }

    /// The whole trace: the collector's, the kernel's throttle events
    /// joined to the wait split, the periods drawn on the timeline, PSI,
    /// the neighbours' cgroups named.
    fn into_trace(self, args: &TraceArgs, run: &mut Attached) -> Finished {
        let root = &args.root;
        let exited_pids = exited_pids(root, run);
        let (quota, bandwidth, runtime) = match self.quota {
            Some(q) => {
                let (q, b, r) = q.finish_events(&run.probe, self.window_end);
                (Some(q), b, r)
            }
            None => (None, None, None),
        };
        let mut timeline = self.timeline;
        if let (Some(tl), Some(b), Some(q)) = (timeline.as_mut(), &bandwidth, &quota) {
            let period_ns = q.limit().quota.period_us.saturating_mul(1000);
            tl.periods = crate::report::timeline::period_slices(b, period_ns);
        }
        run.probe.drain_log();
        let cgroups = contention::neighbour_cgroups(&self.collector.neighbour_cgroups());
        let mut trace = self.collector.finish(WindowEnd {
            duration_ns: self.wall.as_nanos() as u64,
            system_busy_ns: self.cpu.busy,
            system_steal_ns: self.cpu.steal,
            exited_pids,
        });
        trace.kernel_warnings = run.probe.kernel_warnings();
        trace.followed.enabled = follows(args);
        trace.followed.rescanned = self.rescanned;
        (trace.pressure_host, trace.pressure_cgroup) = self.pressure.after();
        name_neighbour_cgroups(&mut trace, &cgroups);
        if let Some(b) = &bandwidth {
            crate::model::bandwidth::join_wait_split(&mut trace.threads, &b.threads);
        }
        (trace, quota, bandwidth, runtime, timeline)
    }
}

/// The window's timing: `--interval`, and `--duration` (a default one
/// when tracing pids; a command's window lasts until it exits).
fn timing(args: &TraceArgs, run: &Attached) -> Timing {
    Timing {
        interval: Duration::from_secs_f64(args.interval()),
        duration: args
            .duration
            .or(run.child.is_none().then_some(DEFAULT_DURATION_S))
            .map(Duration::from_secs_f64),
    }
}

/// What the collector knows of the window before it starts.
fn window_info(root: &Root, run: &Attached, timing: &Timing) -> WindowInfo {
    WindowInfo {
        pids: run.tgids.clone(),
        tids: run.tids.clone(),
        interval_ns: timing.interval.as_nanos() as u64,
        attach_mode: run.probe.mode(),
        nr_cpus: run.topology.cpus.len() as u32,
        mem_total_bytes: procs::mem_total_bytes(root),
    }
}

/// The targets that exited before the window ended (a command's, always:
/// it was waited for).
fn exited_pids(root: &Root, run: &Attached) -> Vec<u32> {
    if run.child.is_some() {
        return run.tgids.clone();
    }
    run.tgids
        .iter()
        .copied()
        .filter(|&p| !procs::alive(root, p))
        .collect()
}

/// Each neighbour's cpu-controller cgroup path, from its id.
fn name_neighbour_cgroups(trace: &mut Trace, cgroups: &std::collections::BTreeMap<u32, String>) {
    for n in &mut trace.neighbours {
        if let Some(path) = cgroups.get(&n.tgid) {
            n.cgroup = path.clone();
        }
    }
}

/// What [`attach`] set up.
struct Attached {
    probe: Probe,
    topology: Topology,
    /// The command, in command mode.
    child: Option<GatedChild>,
    /// The marked targets.
    tgids: Vec<u32>,
    tids: Vec<u32>,
    /// An empty capture, with `--timeline`.
    timeline: Option<Capture>,
}

/// Reads the machine, loads and attaches the programs, and marks the
/// targets (starting the command at its gate first, in command mode).
fn attach(args: &TraceArgs, launch: Launch, verbose: &Verbose) -> Result<Attached, SessionError> {
    let root = &args.root;
    let topology = Topology::read(root).map_err(|e| SessionError::Topology(e.to_string()))?;
    verbose.say("topology read");
    let offsets = btf::task_offsets_cached(
        std::path::Path::new(btf::VMLINUX_BTF),
        std::path::Path::new(btf::CACHE_DIR),
    )?;
    verbose.say("offsets resolved");
    let cfg = ProbeConfig {
        max_threads: args.max_threads,
        attach: args.attach,
        offsets,
        pid_max: pid_max(root),
        timeline_bytes: args.timeline.as_ref().map(|_| args.timeline_buffer),
        log_to_stderr: args.verbose,
        follow: follows(args),
        join_cgroup: args.cgroup.as_deref().map_or(0, procs::dir_inode),
        bandwidth: quota_binds(root, &launch),
        cgroup_set: false,
    };
    let mut probe = Probe::load(&cfg, &topology)?;
    verbose.say(&format!("programs attached ({:?})", probe.mode()));
    let timeline = cfg.timeline_bytes.map(|_| Capture {
        start_ns: monotonic_ns(),
        ring_buffer_bytes: u64::from(probe.timeline_bytes()),
        keep_at_most: Some(args.timeline_max_events),
        ..Capture::default()
    });
    let (child, tgids, tids) = match launch {
        Launch::Command(argv) => {
            let mut c = spawn_gated_with_env(&argv, &args.command_env)?;
            mark(root, &mut probe, c.pid())?;
            c.release()?;
            let pid = c.pid();
            (Some(c), vec![pid], Vec::new())
        }
        Launch::Running(t) => {
            for &tgid in &t.tgids {
                mark(root, &mut probe, tgid)?;
            }
            (None, t.tgids, t.tids)
        }
    };
    verbose.say("tracing");
    Ok(Attached {
        probe,
        topology,
        child,
        tgids,
        tids,
        timeline,
    })
}

/// Whether a CPU quota is in force on the first target's cgroup path (a
/// command runs in ours): the bandwidth programs' sched_switch path is
/// loaded only then.
fn quota_binds(root: &Root, launch: &Launch) -> bool {
    let pid = match launch {
        Launch::Command(_) => std::process::id(),
        Launch::Running(t) => match t.tgids.first() {
            Some(&p) => p,
            None => return false,
        },
    };
    crate::host::cgroup::resolve(root, pid).is_ok_and(|cg| cg.limit().is_some())
}

/// Traces `tgid` from now on, with its threads seeded from /proc.
fn mark(root: &Root, probe: &mut Probe, tgid: u32) -> Result<(), SessionError> {
    probe.add_target(tgid)?;
    targets::seed(root, probe, tgid);
    Ok(())
}

/// The command's exit status; stopped early by the user, it is asked to
/// stop too.
fn wait_child(c: &mut GatedChild, end: End) -> i32 {
    if end.stopped() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    c.wait()
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

fn progress_bar(duration: Option<Duration>, allowed: bool) -> Option<indicatif::ProgressBar> {
    let d = duration?.as_secs_f64();
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
