//! The binary's flows, from parsed arguments to an exit code: trace and
//! report (with --apply / --verify), revert, topology, the benchmark floor.
//! Errors are printed here, once, as one line each.

use std::{io::Write as _, path::Path};

use crate::{
    analyze::classify::Thresholds,
    analyze::decision::{self, Analysis},
    analyze::verify::{self, Figures},
    apply::state::STATE_DIR,
    cli::actions::{self, ActionError},
    cli::cancel::SecondSignal,
    cli::output::Output,
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
    // CPUs and cgroup paths, the output path, the thresholds, and how an
    // apply will be confirmed.
    let args = &match crate::cli::check::early(args) {
        Ok(a) => a,
        Err(e) => return fail(e, EXIT_USAGE),
    };
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
    // From here until the apply starts, Ctrl-C, SIGTERM or SIGHUP cancel it.
    let cancel = if args.apply {
        match crate::cli::cancel::Cancel::new() {
            Ok(c) => Some(c),
            Err(e) => return fail(format!("installing signal handlers: {e}"), EXIT_FAILURE),
        }
    } else {
        None
    };
    // A signal after the one that ends the window stops the timeline's
    // writing (the file is then removed, not left cut short).
    let stop = match SecondSignal::new() {
        Ok(s) => s,
        Err(e) => return fail(format!("installing signal handlers: {e}"), EXIT_FAILURE),
    };
    // Perfetto's file is written as the events are drained: memory stays
    // bounded. Chrome JSON is built at the end (its slices and arrows need
    // the whole window).
    let format = (args.timeline.as_deref()).map(|p| TimelineFormat::pick(args.timeline_format, p));
    let mut stream = match format {
        Some(TimelineFormat::Perfetto) => files.timeline.take().map(|f| {
            let w = Interruptible::new(f, &stop);
            let root = args.root.clone();
            perfetto::Writer::new(std::io::BufWriter::with_capacity(1 << 20, w))
                .naming(move |tgid| crate::host::procs::comm(&root, tgid))
        }),
        _ => None,
    };
    let outcome = match observe(args, &thresholds, sink(&mut stream)) {
        Ok(o) => o,
        Err(code) => return code,
    };
    stop.window_over();
    // An output that could not be written makes the exit non-zero; the
    // report still follows.
    let mut write_failed = false;
    if let Some(file) = files.svg.take() {
        write_failed |= !write_svg(&outcome, file);
    }
    let written = match (stream.take(), files.timeline.take(), &outcome.timeline) {
        (Some(w), _, Some(cap)) => finish_perfetto(w, cap, &outcome),
        (None, Some(file), Some(cap)) => write_timeline(&outcome, cap, file, &stop),
        _ => None,
    };
    let timeline = written.map(|(json, ok)| {
        write_failed |= !ok;
        json
    });
    let analysis = analyze(&outcome, &thresholds);
    let mut report = Report::new(&outcome.trace, &args.command, outcome.exit_status)
        .with_analysis(&outcome.topology, &analysis)
        .with_throttling(crate::analyze::throttle::analyze_with(
            &outcome.trace,
            outcome.cgroup_limit.as_ref(),
            outcome.cgroup_window.as_ref(),
            outcome.bandwidth.as_ref(),
            outcome.runtime.as_ref(),
        ));
    report.timeline = timeline;
    let mut code = outcome.exit_status.unwrap_or(0);
    if write_failed && code == 0 {
        code = EXIT_FAILURE;
    }
    if args.verify_fix {
        verify_fix(args, &mut report);
    }
    if let Some(cancel) = &cancel {
        match apply_and_verify(args, &thresholds, &outcome, &analysis, &mut report, cancel) {
            Ok(()) => {}
            Err(e) => code = fail(&e, e.exit_code()),
        }
    }
    match write_report(args, &report, files.report.take()) {
        Ok(()) => code,
        Err(e) => fail(format!("writing the report: {e}"), EXIT_FAILURE),
    }
}

/// The report in `--format`, to `--output` (replaced only once whole) or
/// to stdout.
fn write_report(args: &TraceArgs, report: &Report, file: Option<Output>) -> std::io::Result<()> {
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json() + "\n",
    };
    match file {
        Some(mut f) => f.write_all(text.as_bytes()).and_then(|()| f.commit()),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
        }
    }
}

/// `--verify-fix`: runs the command again with the throttling fix, in the
/// same cgroup (ours: a command runs in it), traced the same way, and
/// puts the measured figures next to the prediction. Whatever happens
/// here, the exit status stays the first run's; a rerun that cannot be
/// made is said in one line.
fn verify_fix(args: &TraceArgs, report: &mut Report) {
    let Some(t) = report.throttling.as_mut() else {
        return;
    };
    let why_not = if !t.limited {
        Some("no CPU quota on the cgroup path, nothing to fix".to_string())
    } else if t.prediction.is_none() {
        Some("no throttled work was recorded to predict from".to_string())
    } else {
        None
    };
    let rerun = t.fix.as_ref().and_then(|f| f.rerun(&args.command));
    let (Some(rerun), None) = (rerun, &why_not) else {
        let why = why_not.unwrap_or_else(|| {
            let how = t.fix.as_ref().map_or(String::new(), |f| f.how.clone());
            format!("the fix ({how}) is not an option or variable it can set")
        });
        eprintln!("affin-trace: --verify-fix: not rerun: {why}");
        return;
    };
    let again = TraceArgs {
        command: rerun.argv.clone(),
        command_env: rerun.env.clone(),
        timeline: None,
        plot: None,
        watch: false,
        ..args.clone()
    };
    if args.verbose {
        eprintln!("affin-trace: --verify-fix: running {}", rerun.display());
    }
    let after = match session::run(&again) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("affin-trace: --verify-fix: the rerun failed: {e}");
            return;
        }
    };
    let second = crate::analyze::throttle::analyze_with(
        &after.trace,
        after.cgroup_limit.as_ref(),
        after.cgroup_window.as_ref(),
        after.bandwidth.as_ref(),
        after.runtime.as_ref(),
    );
    let held = after
        .bandwidth
        .as_ref()
        .map(|b| b.periods.iter().map(|p| p.throttled_wall_ns).sum());
    if let Some(p) = t.prediction.as_mut() {
        p.verify(
            rerun.display(),
            after.exit_status,
            // Threads running at once when the quota ran out (Go's Ms take
            // turns at one P: two busy threads, one at a time).
            second
                .periods
                .as_ref()
                .and_then(|p| p.running_threads_at_exhaustion_p50)
                .unwrap_or(second.busy_threads),
            second.wall_ns,
            held,
        );
    }
}

/// The files a trace writes, all opened before anything runs. Nothing is
/// truncated here: each regular file is written aside and renamed over its
/// path only once complete (cli::output); dropped, it leaves the path as it
/// was.
struct Outputs {
    /// `--output` (None: stdout).
    report: Option<Output>,
    /// `--plot`.
    svg: Option<Output>,
    /// `--timeline`.
    timeline: Option<Output>,
}

impl Outputs {
    fn open(args: &TraceArgs) -> Result<Self, String> {
        Ok(Self {
            report: create(args.output.as_deref(), "--output")?,
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

/// Draws the SVG; a picture that cannot be drawn is reported (false) and
/// the report still follows.
fn write_svg(outcome: &Outcome, mut file: Output) -> bool {
    let path = file.path().to_path_buf();
    let typical = match (&outcome.bandwidth, &outcome.cgroup_limit) {
        (Some(b), Some(l)) => crate::analyze::periods::typical(
            b,
            l.quota.period_us.saturating_mul(1000),
            l.quota.quota_us.saturating_mul(1000),
            crate::analyze::periods::TYPICAL,
        ),
        _ => Vec::new(),
    };
    let drawn = crate::report::plot::render_svg_with(&outcome.trace, &outcome.topology, &typical)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            file.write_all(s.as_bytes())
                .and_then(|()| file.commit())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = &drawn {
        fail(
            format!("writing the SVG to {}: {e}", path.display()),
            EXIT_FAILURE,
        );
    }
    drawn.is_ok()
}

/// Builds and writes the Chrome JSON timeline; returns its summary for the
/// report and whether it was written (an error is reported, the report
/// still follows).
fn write_timeline(
    outcome: &Outcome,
    cap: &crate::report::timeline::Capture,
    file: Output,
    stop: &SecondSignal,
) -> Option<(TimelineJson, bool)> {
    let path = file.path().to_path_buf();
    let chrome =
        crate::report::timeline::build_unless(cap, &outcome.trace, &outcome.topology, || {
            stop.stopped()
        });
    let Some(chrome) = chrome else {
        // The build takes seconds for a million events: given up.
        timeline_failed(&path, &std::io::Error::other(SECOND_SIGNAL));
        let json = TimelineJson {
            file: path.display().to_string(),
            events: cap.drained,
            lost_events: cap.lost_events,
            ring_buffer_bytes: cap.ring_buffer_bytes,
            truncated_events: cap.truncated_events,
            migration_flows: 0,
            cpu_slices: 0,
            neighbour_tracks: 0,
            format: "chrome",
            perfetto: None,
            latency: None,
        };
        return Some((json, false));
    };
    let mut w = Interruptible::new(file, stop);
    let written = chrome.write(&mut w).and_then(|()| w.into_inner().commit());
    if let Err(e) = &written {
        timeline_failed(&path, e);
    }
    let mut latency = crate::report::latency::Latencies::default();
    latency.push(&cap.events);
    let tgids = tgids(outcome);
    let s = chrome.summary;
    let json = TimelineJson {
        file: path.display().to_string(),
        events: s.events,
        lost_events: s.lost_events,
        ring_buffer_bytes: cap.ring_buffer_bytes,
        truncated_events: s.truncated_events,
        migration_flows: s.migration_flows,
        cpu_slices: s.cpu_slices,
        neighbour_tracks: s.neighbour_tracks,
        format: "chrome",
        perfetto: None,
        latency: Some(latency.report(|tid| tgids.get(&tid).copied())),
    };
    Some((json, written.is_ok()))
}

/// A write that a [`SecondSignal`] stops.
struct Interruptible<W> {
    w: W,
    stop: SecondSignal,
}

impl<W> Interruptible<W> {
    fn new(w: W, stop: &SecondSignal) -> Interruptible<W> {
        Interruptible {
            w,
            stop: stop.clone(),
        }
    }

    fn into_inner(self) -> W {
        self.w
    }
}

impl<W: std::io::Write> std::io::Write for Interruptible<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.stop.stopped() {
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

/// Says why the timeline is not there. Its file was written aside
/// (cli::output) and is only renamed over the path once complete, so a
/// write cut short by a second signal leaves no half-written file.
fn timeline_failed(path: &Path, e: &std::io::Error) {
    if e.to_string() == SECOND_SIGNAL {
        fail(
            format!(
                "the timeline was {SECOND_SIGNAL}: {} not written",
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

/// The streamed Perfetto file's output.
type Stream = std::io::BufWriter<Interruptible<Output>>;

/// Ends the Perfetto file (descriptors, throttling, the lost-event marker)
/// and renames it over its path; its summary for the report and whether it
/// was written.
fn finish_perfetto(
    w: perfetto::Writer<Stream>,
    cap: &crate::report::timeline::Capture,
    outcome: &Outcome,
) -> Option<(TimelineJson, bool)> {
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
        periods: cap.periods.clone(),
    };
    let path = w.get_ref().get_ref().w.path().to_path_buf();
    let so_far = w.written();
    let (n, latency, committed) = match w.finish(&end) {
        Ok((n, latency, out)) => {
            let committed = out
                .into_inner()
                .map_err(|e| e.into_error())
                .and_then(|w| w.into_inner().commit());
            (n, Some(latency), committed)
        }
        // The file went with the writer: a temporary file is removed.
        Err(e) => (so_far, None, Err(e)),
    };
    if let Err(e) = &committed {
        timeline_failed(&path, e);
    }
    let tgids = tgids(outcome);
    let json = TimelineJson {
        file: path.display().to_string(),
        events: n.events,
        lost_events: cap.lost_events,
        ring_buffer_bytes: cap.ring_buffer_bytes,
        truncated_events: 0,
        migration_flows: 0,
        cpu_slices: 0,
        neighbour_tracks: n.neighbour_tracks,
        format: "perfetto",
        perfetto: Some(PerfettoCounts {
            sched_switch: n.switches,
            sched_wakeup: n.wakeups,
            sched_migrate_task: n.migrations,
            sched_process_exit: n.exits,
            bytes: n.bytes,
        }),
        latency: latency.map(|l| l.report(|tid| tgids.get(&tid).copied())),
    };
    Some((json, committed.is_ok()))
}

/// Creates an output file named by `flag` before anything runs, so that a
/// bad path fails at once rather than after the trace.
fn create(path: Option<&Path>, flag: &str) -> Result<Option<Output>, String> {
    let Some(path) = path else { return Ok(None) };
    crate::cli::output::open(path)
        .map(Some)
        .map_err(|e| format!("{e}; choose a writable {flag} path"))
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
    cancel: &crate::cli::cancel::Cancel,
) -> Result<(), ActionError> {
    let dir = Path::new(STATE_DIR);
    let cpus = actions::chosen_cpus(args.cpus.as_ref(), analysis);
    // A signal during the window: its report stands, the apply does not
    // (it would rest on a truncated window).
    if let Some(sig) = cancel.signal() {
        report.not_applied = Some(actions::NotApplied::cancelled(
            &cpus,
            crate::cli::cancel::name(sig),
        ));
        return Err(ActionError::Cancelled(sig));
    }
    let plan = actions::plan(&args.root, outcome, &cpus, args.force)?;
    if let Some(n) = crate::apply::already_set(&crate::apply::System, &outcome.trace.pids, &cpus) {
        report.not_applied = Some(actions::NotApplied::nothing_to_change(&cpus, n));
        return Ok(());
    }
    let _locks = actions::lock_all(dir, &outcome.trace.pids)?;
    let threads: usize = outcome.trace.threads.iter().filter(|t| !t.exited).count();
    if let Err(e) = actions::confirm(
        args.yes,
        &format!(
            "affin-trace: set CPUs {} on the {threads} thread(s) of pid {:?}?",
            crate::model::cpulist::format(&cpus),
            outcome.trace.pids
        ),
        cancel,
    ) {
        if let ActionError::Cancelled(sig) = e {
            report.not_applied = Some(actions::NotApplied::cancelled(
                &cpus,
                crate::cli::cancel::name(sig),
            ));
        }
        return Err(e);
    }
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
    let after =
        session::run_again(&again, outcome).map_err(|e| ActionError::Verify(e.to_string()))?;
    let after_analysis = analyze(&after, thresholds);
    let class = analysis.classification.process.class;
    let figure = verify::target_figure(class);
    let v = verify::judge_with_samples(
        class,
        Figures::new(&analysis.features.process, class),
        Figures::new(
            &after_analysis.features.process,
            after_analysis.classification.process.class,
        ),
        &verify::samples(&outcome.trace, figure),
        &verify::samples(&after.trace, figure),
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

/// What `affin-trace revert` was asked to restore.
#[derive(Clone, Debug, Default)]
pub struct RevertTargets {
    /// `--pid`: each must have a record.
    pub pids: Vec<u32>,
    /// `--comm`: the processes of these names that have a record.
    pub comms: Vec<String>,
    /// `--cgroup`: the processes in it that have a record.
    pub cgroup: Option<std::path::PathBuf>,
    /// `--all`: every live process with a record.
    pub all: bool,
}

/// `affin-trace revert --pid P[,P] | --comm NAME | --cgroup PATH | --all`.
pub fn revert(t: &RevertTargets) -> i32 {
    let root = Root::host();
    if let Err(e) = crate::host::preflight::check_apply(&root) {
        return fail(e, EXIT_FAILURE);
    }
    let dir = Path::new(STATE_DIR);
    let pids = match actions::revert_selection(&root, dir, t) {
        Ok(p) => p,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    let _lock = match actions::lock_all(dir, &pids) {
        Ok(l) => l,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let mut code = 0;
    for pid in pids {
        match actions::revert(&root, dir, pid) {
            Ok(n) => println!(
                "affin-trace: restored the previous CPU masks of {n} thread(s) of pid {pid}"
            ),
            Err(e) => {
                let c = fail(&e, e.exit_code());
                if code == 0 {
                    code = c;
                }
            }
        }
    }
    code
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
#[cfg(feature = "bench-hooks")]
pub fn bench_floor(seconds: f64) -> i32 {
    if let Err(e) = crate::host::preflight::check(&Root::host(), false) {
        return fail(e, EXIT_FAILURE);
    }
    let sleeper = match crate::collect::wake::Sleeper::new() {
        Ok(w) => w,
        Err(e) => return fail(e, EXIT_FAILURE),
    };
    let _floor = match crate::kernel::probe::attach_floor() {
        Ok(f) => f,
        Err(e) => return fail(e, EXIT_FAILURE),
    };
    eprintln!("affin-trace: floor attached");
    sleeper.sleep(std::time::Duration::from_secs_f64(seconds));
    0
}
