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
    cli::{EXIT_FAILURE, EXIT_USAGE, Format, TraceArgs},
    collect::session::{self, Outcome},
    host::Root,
    model::topology::Topology,
    report::{Report, TimelineJson},
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
    let outcome = match observe(args, &thresholds) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Some((path, file)) = &mut files.svg {
        write_svg(&outcome, path, file);
    }
    let timeline = match (&mut files.timeline, &outcome.timeline) {
        (Some((path, file)), Some(cap)) => Some(write_timeline(&outcome, cap, path, file)),
        _ => None,
    };
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
fn observe(args: &TraceArgs, thresholds: &Thresholds) -> Result<Outcome, i32> {
    // The live view is dropped at the end of this block, so the terminal
    // is back to normal before an error or the report is printed.
    let result = if args.watch {
        let mut watch = match crate::report::watch::Watch::new(*thresholds) {
            Ok(w) => w,
            Err(e) => return Err(fail(e, EXIT_USAGE)),
        };
        session::run_observed(args, Some(&mut watch))
    } else {
        session::run(args)
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
) -> TimelineJson {
    let chrome = crate::report::timeline::build(cap, &outcome.trace, &outcome.topology);
    if let Err(e) = chrome.write(file) {
        fail(
            format!("writing the timeline to {}: {e}", path.display()),
            EXIT_FAILURE,
        );
    }
    let s = chrome.summary;
    TimelineJson {
        file: path.display().to_string(),
        events: s.events,
        lost_events: s.lost_events,
        ring_buffer_bytes: cap.ring_buffer_bytes,
        migration_flows: s.migration_flows,
        cpu_slices: s.cpu_slices,
    }
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
