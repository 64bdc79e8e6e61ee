//! Developer tasks for affin-trace, run as `cargo xtask <command>`
//! (`cargo xtask --help` lists them): setup, build, run, test,
//! install, docs, bench, fuzz. Most start with `setup`, which installs,
//! idempotently, what a fresh Debian bookworm machine lacks.
//!
//! A new command is a new `Cmd` variant plus a file of the library
//! (src/lib.rs) holding its `run`. The bench is a program of its own
//! (bench/, `affinity-bench`): `bench` builds it and hands over to it.

use clap::{Parser, Subcommand};
use xtask::{binary, fuzz, setup, test, util};

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
    /// Measure overhead, start-up and scale as root; writes BENCHMARKS.md
    /// (`cargo xtask bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for the bench (bench/), e.g. `--only pipe,bpf-stats`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every cargo-fuzz target in fuzz/ for a bounded time (default 30 s each).
    Fuzz(fuzz::Args),
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
        Cmd::Bench { args } => bench(args),
        Cmd::Fuzz(args) => fuzz::run(args),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

/// Builds the bench (bench/, release) and runs it in this process's place,
/// so that a Ctrl-C reaches it alone and it cleans up as it documents.
fn bench(args: Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    util::run_checked(
        util::cargo().args(["build", "--release", "-p", "affinity-bench"]),
        "cargo build -p affinity-bench",
        "see the compiler output above",
    )?;
    let bin = util::release_dir().join("affinity-bench");
    let err = std::process::Command::new(&bin).args(args).exec();
    anyhow::bail!("could not start {}: {err}", bin.display())
}
