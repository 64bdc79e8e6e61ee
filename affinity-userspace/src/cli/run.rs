//! The binary's flows, from parsed arguments to an exit code: trace and
//! report (with --apply / --verify), revert, topology, the benchmark floor.
//! Errors are printed here, once, as one line each.

use std::{
    io::Write as _,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    analyze::classify::Thresholds,
    analyze::decision::{self, Analysis},
    analyze::verify::{self, Figures},
    apply::state::STATE_DIR,
    cli::actions::{self, ActionError},
    cli::{EXIT_FAILURE, EXIT_USAGE, Format, TraceArgs},
    collect::session::{self, Outcome},
    host::Root,
    model::topology::Topology,
    report::perfetto::{self, Format as TimelineFormat},
    report::{PerfettoCounts, Report, TimelineJson},
};

fn fail(msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("affin-trace: {msg}");
    code
}

/// Traces, reports, and applies/verifies when asked.
pub fn trace(args: &TraceArgs) -> i32 {
    // Everything the user can get wrong is checked before anything runs:
    // the output path, the thresholds, and how an apply will be confirmed.
    let mut files = match Outputs::open(args) {
        Ok(f) => f,
        Err(msg) => return fail(msg, EXIT_USAGE),
    };
    let thresholds = match args.thresholds() {
        Ok(t) => t,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    if args.apply && !args.yes && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return fail(ActionError::NeedYes, EXIT_USAGE);
    }
    let format = (args.timeline.as_deref()).map(|p| TimelineFormat::pick(args.timeline_format, p));
    // Perfetto's file is written as the events are drained: memory stays
    // bounded. Chrome JSON is built at the end (its slices and arrows need
    // the whole window).
    // Set by a second SIGINT/SIGTERM/SIGHUP, once the window (which the
    // first one ends) is over: the timeline's writing stops there.
    let stop = Arc::new(AtomicBool::new(false));
    let mut stream = match format {
        Some(TimelineFormat::Perfetto) => (files.timeline.take()).map(|(_, f)| {
            let w = Interruptible::new(f, &stop);
            perfetto::Writer::new(std::io::BufWriter::new(w))
        }),
        _ => None,
    };
    let outcome = match observe(args, &thresholds, sink(&mut stream)) {
        Ok(o) => o,
        Err(code) => return code,
    };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // Without it a second signal is ignored until the file is written.
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    if let Some((path, file)) = &mut files.svg {
        write_svg(&outcome, path, file);
    }
    let timeline = match (stream.take(), &args.timeline, &outcome.timeline) {
        (Some(w), Some(path), Some(cap)) => finish_perfetto(w, path, cap, &outcome),
        _ => match (&mut files.timeline, &outcome.timeline) {
            (Some((path, file)), Some(cap)) => {
                Some(write_timeline(&outcome, cap, path, file, &stop))
            }
            _ => None,
        },
    };
    let analysis = analyze(&outcome, &thresholds);
    let mut report = Report::new(&outcome.trace, &args.command, outcome.exit_status)
        .with_analysis(&outcome.topology, &analysis)
        .with_throttling(crate::analyze::throttle::analyze(
            &outcome.trace,
            outcome.cgroup_limit.as_ref(),
            outcome.cgroup_window.as_ref(),
        ));
    report.timeline = timeline;
    let mut code = outcome.exit_status.unwrap_or(0);
    if args.apply {
        match apply_and_verify(args, &thresholds, &outcome, &analysis, &mut report) {
            Ok(()) => {}
            Err(e) => code = fail(&e, e.exit_code()),
        }
    }
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json() + "\n",
    };
    let out = &mut files.report;
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        return fail(format!("writing the report: {e}"), EXIT_FAILURE);
    }
    code
}

/// The files a trace writes, all opened before anything runs.
struct Outputs<'a> {
    /// `--output`, or stdout.
    report: Box<dyn std::io::Write>,
    /// `--plot`.
    svg: Option<(&'a Path, std::fs::File)>,
    /// `--timeline`.
    timeline: Option<(&'a Path, std::fs::File)>,
}

impl<'a> Outputs<'a> {
    fn open(args: &'a TraceArgs) -> Result<Self, String> {
        let report: Box<dyn std::io::Write> = match create(args.output.as_deref(), "--output")? {
            Some((_, f)) => Box::new(f),
            None => Box::new(std::io::stdout()),
        };
        Ok(Self {
            report,
            svg: create(args.plot.as_deref(), "--plot")?,
            timeline: create(args.timeline.as_deref(), "--timeline")?,
        })
    }
}

/// Runs the session, with the live view under `--watch`; an error is printed
/// and becomes the exit code.
fn observe(
    args: &TraceArgs,
    thresholds: &Thresholds,
    sink: Option<&mut dyn perfetto::EventSink>,
) -> Result<Outcome, i32> {
    // The live view is dropped at the end of this block, so the terminal
    // is back to normal before an error or the report is printed.
    let result = if args.watch {
        let mut watch = match crate::report::watch::Watch::new(*thresholds) {
            Ok(w) => w,
            Err(e) => return Err(fail(e, EXIT_USAGE)),
        };
        session::run_streamed(args, Some(&mut watch), sink)
    } else {
        session::run_streamed(args, None, sink)
    };
    result.map_err(|e| fail(&e, e.exit_code()))
}

/// Draws the SVG; a picture that cannot be drawn is reported and the report
/// still follows.
fn write_svg(outcome: &Outcome, path: &Path, file: &mut std::fs::File) {
    let drawn = crate::report::plot::render_svg(&outcome.trace, &outcome.topology)
        .map_err(|e| e.to_string())
        .and_then(|s| file.write_all(s.as_bytes()).map_err(|e| e.to_string()));
    if let Err(e) = drawn {
        fail(
            format!("writing the SVG to {}: {e}", path.display()),
            EXIT_FAILURE,
        );
    }
}

/// Builds and writes the timeline; returns its summary for the report (a
/// write error is reported, the report still follows).
fn write_timeline(
    outcome: &Outcome,
    cap: &crate::report::timeline::Capture,
    path: &Path,
    file: &mut std::fs::File,
    stop: &Arc<AtomicBool>,
) -> TimelineJson {
    let chrome = crate::report::timeline::build(cap, &outcome.trace, &outcome.topology);
    if let Err(e) = chrome.write(&mut Interruptible::new(file, stop)) {
        timeline_failed(path, &e);
    }
    let mut latency = crate::report::latency::Latencies::default();
    latency.push(&cap.events);
    let tgids = tgids(outcome);
    let s = chrome.summary;
    TimelineJson {
        file: path.display().to_string(),
        events: s.events,
        lost_events: s.lost_events,
        ring_buffer_bytes: cap.ring_buffer_bytes,
        migration_flows: s.migration_flows,
        cpu_slices: s.cpu_slices,
        format: "chrome",
        perfetto: None,
        latency: Some(latency.report(|tid| tgids.get(&tid).copied())),
    }
}

/// A write that a second signal stops.
struct Interruptible<W> {
    w: W,
    stop: Arc<AtomicBool>,
}

impl<W> Interruptible<W> {
    fn new(w: W, stop: &Arc<AtomicBool>) -> Interruptible<W> {
        Interruptible {
            w,
            stop: Arc::clone(stop),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Interruptible<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            // Not `Interrupted`: write_all would retry that.
            return Err(std::io::Error::other(SECOND_SIGNAL));
        }
        self.w.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

const SECOND_SIGNAL: &str = "stopped by a second signal";

/// Says why the timeline is not there; a file cut short by a second
/// signal is removed rather than left half-written.
fn timeline_failed(path: &Path, e: &std::io::Error) {
    if e.to_string() == SECOND_SIGNAL {
        let _ = std::fs::remove_file(path);
        fail(
            format!(
                "the timeline was {SECOND_SIGNAL}: {} removed",
                path.display()
            ),
            EXIT_FAILURE,
        );
    } else {
        fail(
            format!("writing the timeline to {}: {e}", path.display()),
            EXIT_FAILURE,
        );
    }
}

/// The process of each traced thread.
fn tgids(outcome: &Outcome) -> std::collections::HashMap<u32, u32> {
    (outcome.trace.threads.iter())
        .map(|t| (t.tid, t.tgid))
        .collect()
}

/// The streaming writer as the session's sink.
fn sink<W: std::io::Write>(
    w: &mut Option<perfetto::Writer<W>>,
) -> Option<&mut dyn perfetto::EventSink> {
    w.as_mut().map(|w| w as &mut dyn perfetto::EventSink)
}

/// Ends the Perfetto file: descriptors, throttling, the lost-event marker.
fn finish_perfetto<W: std::io::Write>(
    w: perfetto::Writer<W>,
    path: &Path,
    cap: &crate::report::timeline::Capture,
    outcome: &Outcome,
) -> Option<TimelineJson> {
    let threads = (outcome.trace.threads.iter())
        .map(|t| perfetto::ThreadName {
            tid: t.tid,
            tgid: t.tgid,
            comm: t.comm.clone(),
        })
        .collect();
    let end = perfetto::Ending {
        threads,
        start_ns: cap.start_ns,
        end_ns: cap.end_ns,
        lost_events: cap.lost_events,
        throttled: cap.throttled.clone(),
        quota: cap.quota.clone(),
    };
    let (n, latency) = match w.finish(&end) {
        Ok(n) => n,
        Err(e) => {
            timeline_failed(path, &e);
            return None;
        }
    };
    Some(TimelineJson {
        file: path.display().to_string(),
        events: n.events,
        lost_events: n.lost_events,
        ring_buffer_bytes: cap.ring_buffer_bytes,
        migration_flows: 0,
        cpu_slices: 0,
        format: "perfetto",
        perfetto: Some(PerfettoCounts {
            sched_switch: n.switches,
            sched_wakeup: n.wakeups,
            sched_migrate_task: n.migrations,
            sched_process_exit: n.exits,
            bytes: n.bytes,
        }),
        latency: Some({
            let tgids = tgids(outcome);
            latency.report(|tid| tgids.get(&tid).copied())
        }),
    })
}

/// Creates an output file named by `flag` before anything runs, so that a
/// bad path fails at once rather than after the trace.
fn create<'a>(
    path: Option<&'a Path>,
    flag: &str,
) -> Result<Option<(&'a Path, std::fs::File)>, String> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::File::create(path) {
        Ok(f) => Ok(Some((path, f))),
        Err(e) => Err(format!(
            "cannot write {}: {e}; choose a writable {flag} path",
            path.display()
        )),
    }
}

fn analyze(outcome: &Outcome, thresholds: &Thresholds) -> Analysis {
    decision::analyze(
        &outcome.trace,
        &outcome.topology,
        thresholds,
        &outcome.facts,
    )
}

fn apply_and_verify(
    args: &TraceArgs,
    thresholds: &Thresholds,
    outcome: &Outcome,
    analysis: &Analysis,
    report: &mut Report,
) -> Result<(), ActionError> {
    let dir = Path::new(STATE_DIR);
    let cpus = actions::chosen_cpus(args.cpus.as_ref(), analysis);
    let plan = actions::plan(&args.root, outcome, &cpus, args.force)?;
    let _locks = actions::lock_all(dir, &outcome.trace.pids)?;
    let threads: usize = outcome.trace.threads.iter().filter(|t| !t.exited).count();
    actions::confirm(
        args.yes,
        &format!(
            "affin-trace: set CPUs {} on the {threads} thread(s) of pid {:?}?",
            crate::model::cpulist::format(&cpus),
            outcome.trace.pids
        ),
    )?;
    let mut applied = actions::apply_cpus(dir, &plan)?;
    report.applied = Some(applied.clone());
    if !args.verify {
        return Ok(());
    }
    // The same window again, now with the new CPUs (no second timeline:
    // the file shows the window that was analysed).
    let again = TraceArgs {
        timeline: None,
        ..args.clone()
    };
    let after = session::run(&again).map_err(|e| ActionError::Verify(e.to_string()))?;
    let after_analysis = analyze(&after, thresholds);
    let class = analysis.classification.process.class;
    let v = verify::judge(
        class,
        Figures::new(&analysis.features.process, class),
        Figures::new(
            &after_analysis.features.process,
            after_analysis.classification.process.class,
        ),
        args.keep,
    );
    if !v.kept {
        for &pid in &outcome.trace.pids {
            actions::revert(&args.root, dir, pid)?;
        }
        applied.active = false;
        report.applied = Some(applied);
    }
    report.verification = Some(v);
    Ok(())
}

/// `affin-trace revert --pid P`.
pub fn revert(pid: u32) -> i32 {
    let root = Root::host();
    if let Err(e) = crate::host::preflight::check_apply(&root) {
        return fail(e, EXIT_FAILURE);
    }
    let dir = Path::new(STATE_DIR);
    let _lock = match actions::lock_all(dir, &[pid]) {
        Ok(l) => l,
        Err(e) => return fail(&e, e.exit_code()),
    };
    match actions::revert(&root, dir, pid) {
        Ok(n) => {
            println!("affin-trace: restored the previous CPU masks of {n} thread(s) of pid {pid}");
            0
        }
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// `affin-trace topology`.
pub fn topology(format: Format) -> i32 {
    match Topology::read(&Root::host()) {
        Ok(t) => {
            match format {
                Format::Text => print!("{}", crate::model::topology::render_text(&t)),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default())
                }
            }
            0
        }
        Err(e) => fail(format!("reading the CPU topology: {e}"), EXIT_FAILURE),
    }
}

/// `affin-trace bench-floor`: the empty program, attached until a signal.
pub fn bench_floor(seconds: f64) -> i32 {
    if let Err(e) = crate::host::preflight::check(&Root::host(), false) {
        return fail(e, EXIT_FAILURE);
    }
    let mut waiter = match crate::collect::wake::Waiter::new() {
        Ok(w) => w,
        Err(e) => return fail(e, EXIT_FAILURE),
    };
    let _floor = match crate::kernel::probe::attach_floor() {
        Ok(f) => f,
        Err(e) => return fail(e, EXIT_FAILURE),
    };
    eprintln!("affin-trace: floor attached");
    let _ = waiter.wait(std::time::Duration::from_secs_f64(seconds));
    0
}
