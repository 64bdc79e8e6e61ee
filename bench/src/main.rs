//! `affinity-bench`, run as `cargo xtask bench` (issue #6; xtask builds it
//! and hands over): affin-trace's overhead, start-up time and
//! scale, measured on this machine and written to BENCHMARKS.md, whose
//! text (templates/BENCHMARKS.md.j2) says what each phase does. The phases
//! ([`Phase`], all as root, about 3 minutes; `--only` picks some):
//! `perf bench sched pipe` on CPU 0 under (a) nothing, (b) `affin-trace
//! bench-floor`, (c) affin-trace tracing an unrelated `sleep`, (d)
//! affin-trace tracing the benchmark, (e) bpftrace (skipped, with the
//! reason, without it), interleaved over rounds, loops calibrated to ~1 s a
//! run; bpf_stats in separate runs of (b)-(d); start-up cold then warm;
//! 1,000 and 10,000 traced threads (`bench-threads`, hidden, is their
//! workload); the criterion benches of affinity-userspace/benches/; the
//! node agent (`affin-trace serve`) over 100 containers of 2,000 threads
//! coming and going, for `--serve-secs` (600 s: the soak).
//!
//! The run holds the root tests' machine-wide lock, so that neither
//! distorts the other. Every path stops the processes it started, restores
//! the sysctls it changed, and the end checks that no affin-trace program
//! stays loaded. What a run gathered is saved in target/bench-run.json;
//! `--render` writes the report from it again (no root, nothing measured).
//!
//! Files by role: `process` (children, sysctls, signals), `parse` (the
//! tools' output), `programs` (which BPF programs are loaded, by whom),
//! `pipe`, `startup`, `threads`, `criterion`, `serve` (the phases), `results` (what a
//! run gathered), `render` (the figures the template shows).

mod criterion;
mod parse;
mod pipe;
mod process;
mod programs;
mod render;
mod results;
mod serve;
mod startup;
mod threads;

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask::binary;
use xtask::util::{is_root, release_bin, words, workspace_root};

use clap::Parser as _;
use process::{Proc, Sysctl, TempDir, check_interrupted};
use programs::{Bpftool, leftover_check, wait_no_foreign};
use results::{Results, Run, environment, find_bpftrace, tool};

/// `cargo xtask bench [OPTIONS]`, or the hidden helper workload.
#[derive(clap::Parser)]
#[command(
    name = "affinity-bench",
    bin_name = "cargo xtask bench",
    about = "Measure affin-trace's overhead, start-up and scale as root; writes BENCHMARKS.md",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(flatten)]
    args: Args,
    #[command(subcommand)]
    helper: Option<Helper>,
}

#[derive(clap::Subcommand)]
enum Helper {
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
    let result = match cli.helper {
        Some(Helper::BenchThreads {
            threads,
            secs,
            period_ms,
        }) => threads::threads_helper(threads, secs, period_ms),
        None => run(cli.args),
    };
    if let Err(err) = result {
        eprintln!("bench: error: {err:#}");
        std::process::exit(1);
    }
}

/// A part of the bench that `--only` can select.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, Serialize, Deserialize)]
pub enum Phase {
    /// Sections 1 and 2: the interleaved pipe benchmark (a)-(e).
    Pipe,
    /// Section 3: per-program run time with kernel.bpf_stats_enabled.
    BpfStats,
    /// Section 4: start-up time and its peak RSS.
    Startup,
    /// Section 5: CPU, RSS and map read time tracing 1,000 threads.
    Threads,
    /// Section 6: 10,000 threads.
    Scale,
    /// Section 7: the criterion benches of the pure hot paths.
    Criterion,
    /// Section 8: the node agent over 100 containers coming and going.
    Serve,
}

#[derive(clap::Args)]
pub struct Args {
    /// Interleaved rounds of the pipe benchmark (each runs every configuration).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(7..=100))]
    rounds: u32,
    /// Pipe round trips per perf run [default: calibrated to ~1 s per run].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..))]
    loops: Option<u64>,
    /// Run only these phases (comma-separated). The report then goes to
    /// target/bench-partial.md; only a full run rewrites BENCHMARKS.md.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Measure nothing: write the report again from a run saved by an
    /// earlier bench (target/bench-run.json), e.g. after a template change.
    #[arg(long, value_name = "RUN_JSON", conflicts_with_all = ["rounds", "loops", "only", "serve_secs"])]
    render: Option<PathBuf>,
    /// Length of the serve phase's measured part, after its 30 s warm-up
    /// (the soak is 10 minutes).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(15..))]
    serve_secs: u64,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// Wanted duration of one perf run.
const RUN_TARGET_S: f64 = 1.0;
const CALIBRATION_LOOPS: u64 = 100_000;
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Targets of issue #6.
const T_ADDED_RATIO: f64 = 1.5;
const T_SWITCH_NS: f64 = 100.0;
/// Issue #13: what its neighbour accounting may add to the per-event cost.
const T_NEIGHBOUR_RISE_PCT: f64 = 10.0;
const T_START_MS: f64 = 150.0;
const T_CPU_PCT: f64 = 1.0;
const T_RSS_MIB: f64 = 30.0;
const T_READ_MS: f64 = 50.0;
/// Targets of issue #15 for the agent.
const T_SERVE_CPU_PCT: f64 = 1.0;
const T_SERVE_RSS_MB: f64 = 40.0;
/// Resident growth over the soak counted as none.
const T_SERVE_GROWTH_PCT: f64 = 5.0;

/// What every phase needs: the tools, the binaries, the scratch directory.
struct Ctx {
    bin: PathBuf,
    helper: PathBuf,
    taskset: PathBuf,
    perf: PathBuf,
    bpftrace: Option<PathBuf>,
    bpftool: Bpftool,
    tmp: PathBuf,
    loops: u64,
    unrelated: u32,
}

impl Ctx {
    /// `taskset -c 0 perf bench sched pipe -T -l LOOPS`.
    fn pipe_cmd(&self, loops: u64) -> Vec<String> {
        let (taskset, perf) = (self.taskset.display(), self.perf.display());
        words(&format!(
            "{taskset} -c 0 {perf} bench sched pipe -T -l {loops}"
        ))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    /// `affin-trace --verbose --format json --output OUT ARGS`, started.
    fn tracer(
        &self,
        name: &str,
        out: &Path,
        args: Vec<String>,
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        let mut all = words("--verbose --format json --output");
        all.push(out.display().to_string());
        all.extend(args);
        Proc::spawn(name, &self.bin, &all, env)
    }
}

fn run(args: Args) -> Result<()> {
    if let Some(saved) = &args.render {
        let text = std::fs::read_to_string(saved)
            .with_context(|| format!("reading {}; a bench run writes it", saved.display()))?;
        let run: Run =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", saved.display()))?;
        return write_report(&run);
    }
    if !is_root() {
        bail!("the benchmark loads eBPF programs and changes sysctls: run it as root");
    }
    process::on_stop_signals()?;
    xtask::setup::run()?;
    // Kernel state and CPU time are machine-wide: wait for a root test run
    // (any checkout) to end, and keep it out until this one is done.
    let _lock = xtask::test::machine_lock()?;
    binary::cargo_build(true, binary::Hooks::On)?;
    mount_tracefs();
    let bpftool = tool("bpftool", "bpftool")?;
    let result = bench(&args, &bpftool);
    // Programs are freed a moment after their last fd closes: allow that.
    if let Err(e) = leftover_check(&Bpftool {
        argv: vec![bpftool],
    }) {
        eprintln!("bench: ERROR: {e:#}");
        return Err(e);
    }
    result
}

/// bpftrace (config (e)) attaches classic tracepoints, found through
/// tracefs; a machine that boots without it mounted gets it mounted here
/// (the bench changes sysctls already; a failure only skips (e)).
fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").is_dir() {
        return;
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    let state = if ok {
        "mounted"
    } else {
        "could not mount; (e) may be skipped"
    };
    println!("bench: tracefs at {}: {state}", dir.display());
}

fn bench(args: &Args, bpftool_path: &Path) -> Result<()> {
    let t_start = Instant::now();
    let phases: Vec<Phase> = (Phase::value_variants().iter().copied())
        .filter(|p| args.only.is_empty() || args.only.contains(p))
        .collect();
    let wants = |p: Phase| phases.contains(&p);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = tool("taskset", "util-linux")?;
    let perf = tool("perf", "linux-perf")?;
    let mut argv = vec![bpftool_path.to_path_buf()];
    if ncpu > 1 {
        // Away from CPU 0, the benchmark's.
        argv.splice(0..0, [taskset.clone(), "-c".into(), "1".into()]);
    }
    let bpftool = Bpftool { argv };
    wait_no_foreign(&bpftool)?;
    let bpftrace = if wants(Phase::Pipe) {
        find_bpftrace()
    } else {
        Err("not run (--only)".into())
    };
    if let Err(why) = &bpftrace {
        println!("bench: skipping (e): {why}");
    }

    let tmp =
        TempDir(std::env::temp_dir().join(format!("affin-trace-bench.{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
    // bpf_stats stay off while the overhead is measured, on only in phase 3.
    let mut stats_sysctl = Sysctl::new(BPF_STATS)?;
    if stats_sysctl.original != "0" {
        stats_sysctl.set("0")?;
    }
    let mut sleeper = Proc::spawn("sleep 1000", Path::new("sleep"), &["1000"], &[])?;
    let mut ctx = Ctx {
        bin: release_bin(),
        helper: std::env::current_exe().context("finding the bench's own executable")?,
        taskset,
        perf,
        bpftrace: bpftrace.as_ref().ok().cloned(),
        bpftool,
        tmp: tmp.0.clone(),
        loops: args.loops.unwrap_or(CALIBRATION_LOOPS),
        unrelated: sleeper.pid(),
    };
    let env = environment(&ctx);
    let mut r = Results {
        phases: phases.clone(),
        rounds: args.rounds as usize,
        e_skipped: bpftrace.err(),
        ..Results::default()
    };

    // Phases 1-3 run perf with the calibrated number of loops.
    if (wants(Phase::Pipe) || wants(Phase::BpfStats)) && args.loops.is_none() {
        let us = pipe::run_perf(&ctx, CALIBRATION_LOOPS)?;
        let loops = (RUN_TARGET_S * 1e6 / us / 10_000.0).round().max(5.0) * 10_000.0;
        ctx.loops = (loops as u64).min(2_000_000);
        r.calibration_us = Some(us);
        println!(
            "bench: calibration: {us:.3} us/op at {CALIBRATION_LOOPS} loops -> {} loops per run",
            ctx.loops
        );
    }
    r.loops = ctx.loops;
    if wants(Phase::Pipe) {
        pipe::phase(&ctx, &mut r)?;
        println!(
            "bench: phase 1 done in {:.0} s",
            t_start.elapsed().as_secs_f64()
        );
    }
    if wants(Phase::BpfStats) {
        let stats = pipe::stats_phase(&ctx, &mut stats_sysctl);
        stats_sysctl.restore()?;
        r.stats = Some(phase_result("bpf_stats", stats)?);
    }
    if wants(Phase::Startup) {
        r.startup = Some(phase_result("start-up", startup::phase(&ctx))?);
    }
    if wants(Phase::Threads) {
        r.small = Some(phase_result("1,000 threads", threads::small(&ctx))?);
    }
    if wants(Phase::Scale) {
        r.large = Some(phase_result("10,000 threads", threads::large(&ctx))?);
    }
    if wants(Phase::Criterion) {
        r.criterion = Some(phase_result("criterion", criterion::phase())?);
    }
    if wants(Phase::Serve) {
        r.serve = Some(phase_result("serve", serve::phase(&ctx, args.serve_secs))?);
    }

    // Stop everything started before writing anything.
    sleeper.stop()?;
    drop(sleeper);
    stats_sysctl.restore()?;

    let run = Run {
        env,
        took_s: t_start.elapsed().as_secs_f64(),
        results: r,
    };
    let saved = workspace_root().join("target/bench-run.json");
    std::fs::write(&saved, serde_json::to_string_pretty(&run)?)
        .with_context(|| format!("writing {}", saved.display()))?;
    write_report(&run)?;
    let r = &run.results;
    let failed: Vec<&str> = (r.failures().into_iter())
        .filter_map(|(name, _, e)| e.map(|_| name))
        .chain(r.checks.iter().filter(|c| !c.1).map(|c| c.0.as_str()))
        .collect();
    if !failed.is_empty() {
        bail!("some measurements failed: {}", failed.join("; "));
    }
    Ok(())
}

/// BENCHMARKS.md for a full run, target/bench-partial.md for `--only`.
fn write_report(run: &Run) -> Result<()> {
    let md = render::render(&run.env, &run.results, Duration::from_secs_f64(run.took_s));
    println!("\n{md}");
    let full = run.results.phases.len() == Phase::value_variants().len();
    let path = workspace_root().join(if full {
        "BENCHMARKS.md"
    } else {
        "target/bench-partial.md"
    });
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "bench: wrote {} (the run took {:.0} s)",
        path.display(),
        run.took_s
    );
    Ok(())
}

/// A phase's error is kept for the report, unless the run was interrupted.
fn phase_result<T>(name: &str, r: Result<T>) -> Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            check_interrupted()?;
            eprintln!("bench: {name} FAILED: {e:#}");
            Ok(Err(format!("{e:#}")))
        }
    }
}
