//! The `affin-trace` binary: parse, run, report, exit with a meaningful code.

use std::{io::Write as _, process::ExitCode};

use affinity::{
    analysis,
    cli::{Cli, Command, EXIT_FAILURE, EXIT_USAGE, Format, TraceArgs},
    demo,
    report::Report,
    session,
    topology::Topology,
};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Command::DemoWorker { seconds }) => {
            demo::run_worker(seconds);
            0
        }
        Some(Command::Topology { format }) => topology(format),
        Some(Command::BenchFloor { seconds }) => bench_floor(seconds),
        Some(Command::Demo { trace }) => {
            let mut trace = *trace;
            let secs = trace.duration.take().unwrap_or(5.0);
            trace.command = match std::env::current_exe() {
                Ok(exe) => vec![
                    exe.display().to_string(),
                    "demo-worker".into(),
                    "--seconds".into(),
                    secs.to_string(),
                ],
                Err(e) => {
                    eprintln!("affin-trace: cannot find its own executable: {e}");
                    return ExitCode::from(EXIT_FAILURE as u8);
                }
            };
            trace_and_report(&trace)
        }
        None => trace_and_report(&cli.trace),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn bench_floor(seconds: f64) -> i32 {
    if let Err(e) = affinity::preflight::check(false) {
        eprintln!("affin-trace: {e}");
        return EXIT_FAILURE;
    }
    let mut waiter = match affinity::wake::Waiter::new() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("affin-trace: {e}");
            return EXIT_FAILURE;
        }
    };
    let _floor = match affinity::probe::attach_floor() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("affin-trace: {e}");
            return EXIT_FAILURE;
        }
    };
    eprintln!("affin-trace: floor attached");
    let _ = waiter.wait(std::time::Duration::from_secs_f64(seconds));
    0
}

fn topology(format: Format) -> i32 {
    match Topology::read(std::path::Path::new("/")) {
        Ok(t) => {
            match format {
                Format::Text => print!("{}", affinity::topology::render_text(&t)),
                Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default())
                }
            }
            0
        }
        Err(e) => {
            eprintln!("affin-trace: reading the CPU topology: {e}");
            EXIT_FAILURE
        }
    }
}

fn trace_and_report(args: &TraceArgs) -> i32 {
    // Open the output first: an unwritable path fails before anything runs.
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!(
                    "affin-trace: cannot write {}: {e}; choose a writable --output path",
                    path.display()
                );
                return EXIT_USAGE;
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let thresholds = match args.thresholds() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("affin-trace: {e}");
            return EXIT_USAGE;
        }
    };
    let outcome = match session::run(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("affin-trace: {e}");
            return e.exit_code();
        }
    };
    let analysis = analysis::analyze(
        &outcome.trace,
        &outcome.topology,
        &thresholds,
        &outcome.facts,
    );
    let report = Report::new(&outcome.trace, &args.command, outcome.exit_status)
        .with_analysis(&outcome.topology, &analysis)
        .with_throttling(affinity::throttle::analyze(
            &outcome.trace,
            outcome.cgroup_limit.as_ref(),
            outcome.cgroup_window.as_ref(),
        ));
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json() + "\n",
    };
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        eprintln!("affin-trace: writing the report: {e}");
        return EXIT_FAILURE;
    }
    outcome.exit_status.unwrap_or(0)
}
