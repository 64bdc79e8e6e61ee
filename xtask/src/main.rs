//! Developer tasks for affin-trace, run as `cargo xtask <command>`
//! (`cargo xtask --help` lists them): setup, build, run, test,
//! install, docs, bench, fuzz. Most start with `setup`, which installs,
//! idempotently, what a fresh Debian bookworm machine lacks.
//!
//! A new command is a new `Cmd` variant plus a file holding its `run`.

mod bench;
mod binary;
mod fuzz;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "affin-trace developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks to build and test (idempotent).
    Setup,
    /// Build affin-trace (and its eBPF object).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Build in release mode and run affin-trace (default argument: demo).
    Run {
        /// Arguments for affin-trace, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run unit tests, then root integration tests, and summarize.
    Test(test::Args),
    /// Build in release mode and copy affin-trace to /usr/local/bin.
    Install,
    /// Build in release mode, then write man pages and shell completions to target/docs.
    Docs,
    /// Measure overhead, start-up and scale as root; writes BENCHMARKS.md.
    Bench(bench::Args),
    /// Run every cargo-fuzz target in fuzz/ for a bounded time (default 30 s each).
    Fuzz(fuzz::Args),
    /// The benchmark's workload: N threads sleeping PERIOD_MS in a loop for SECS.
    #[command(hide = true)]
    BenchThreads {
        /// Number of threads.
        threads: usize,
        /// How long to run, in seconds.
        secs: f64,
        /// Sleep of each thread per loop, in milliseconds.
        #[arg(default_value_t = 10)]
        period_ms: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => binary::build(release),
        Cmd::Run { args } => binary::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Install => binary::install(),
        Cmd::Docs => binary::docs(),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::BenchThreads {
            threads,
            secs,
            period_ms,
        } => bench::threads_helper(threads, secs, period_ms),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
