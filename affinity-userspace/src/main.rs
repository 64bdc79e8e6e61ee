//! The `affin-trace` binary: parse, dispatch to [`affinity::cli::run`], exit with
//! its code.

use std::process::ExitCode;

use affinity::{
    cli::demo,
    cli::run,
    cli::{Cli, Command, EXIT_FAILURE, EXIT_USAGE},
};
use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // Usage errors: one line with the fix, exit 2 (clap's own text runs
        // to several lines); --help and --version print as usual.
        Err(e) if e.use_stderr() => {
            let argv: Vec<String> = std::env::args().collect();
            let first = affinity::cli::usage_message(&e, &argv);
            eprintln!("affin-trace: {first} (see affin-trace --help)");
            return ExitCode::from(EXIT_USAGE as u8);
        }
        Err(e) => e.exit(),
    };
    let code = match cli.command {
        Some(Command::DemoWorker { seconds }) => {
            demo::run_worker(seconds);
            0
        }
        Some(Command::Topology { format }) => run::topology(format),
        Some(Command::Serve(args)) => affinity::serve::run(&args),
        #[cfg(feature = "bench-hooks")]
        Some(Command::BenchFloor { seconds }) => run::bench_floor(seconds),
        Some(Command::Revert {
            pid,
            comm,
            cgroup,
            all,
        }) => run::revert(&run::RevertTargets {
            pids: pid,
            comms: comm,
            cgroup,
            all,
        }),
        Some(Command::Docs {
            man,
            completions,
            out,
        }) => {
            let mut stdout = std::io::stdout().lock();
            match affinity::cli::docs::emit(man, completions, out.as_deref(), &mut stdout) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("affin-trace: writing the docs: {e}");
                    EXIT_FAILURE
                }
            }
        }
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
            run::trace(&trace)
        }
        None => run::trace(&cli.trace),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
