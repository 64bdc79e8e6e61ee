//! `cargo xtask bench` (issue #6): affin-trace's overhead, start-up time and
//! scale, measured on this machine and written to BENCHMARKS.md.
//!
//! Phases (all as root; about 3 minutes), each selectable with `--only`:
//! 1. `pipe`: `taskset -c 0 perf bench sched pipe -T -l LOOPS` under five
//!    configurations, interleaved (a b c d e a b c d e ..., 15 rounds by
//!    default), median and min-max of each: (a) nothing attached, (b)
//!    `affin-trace bench-floor` (an empty tp_btf program), (c) affin-trace
//!    tracing an unrelated `sleep`, (d) affin-trace tracing the benchmark
//!    itself, (e) an equivalent bpftrace script (skipped, with the reason,
//!    without bpftrace). LOOPS is calibrated so that one run takes ~1 s.
//! 2. (with `pipe`) Added cost per context switch, with switches per op
//!    measured by (d)'s report (and cross-checked with `perf stat -e
//!    context-switches`).
//! 3. `bpf-stats`: per-program run time from `kernel.bpf_stats_enabled`, in
//!    separate runs of (b), (c) and (d) so that the stats do not distort
//!    phase 1.
//! 4. `startup`: one cold run (offsets cache deleted), then 10 warm runs.
//! 5. `threads`: affin-trace's own CPU time, peak RSS and per-interval map
//!    read time while tracing 1,000 threads.
//! 6. `scale`: 10,000 threads for 5 s: dropped events, threads seen, map
//!    read time.
//! 7. `criterion`: the criterion benches of the pure hot paths
//!    (affinity-userspace/benches/, no root needed on their own), their
//!    figures read back into the same report.
//!
//! The run holds the root tests' machine-wide lock, so that neither
//! distorts the other. Every path stops the processes it started, restores
//! the sysctls it changed, and the end checks that no affin-trace program
//! stays loaded.
//! `bench-threads N SECS [PERIOD_MS]` (hidden) is the workload of 5 and 6.
//!
//! Files by role: `sys` (libc calls, the interrupt flag), `process` (child
//! processes, sysctls, the temp dir), `parse` (reading the tools'
//! output), `programs` (which BPF programs are loaded and by whom), `pipe`,
//! `startup`, `threads` and `criterion` (the phases), `results` (what a run gathered),
//! `render` (BENCHMARKS.md).

mod criterion;
mod parse;
mod pipe;
mod process;
mod programs;
mod render;
mod results;
mod startup;
mod sys;
mod threads;

use crate::binary;
use crate::util::{is_root, release_bin, workspace_root};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use process::{Proc, Sysctl, TempDir};
use programs::{Bpftool, leftover_check, wait_no_foreign};
use results::{Results, environment, find_bpftrace, tool};
use sys::{check_interrupted, on_signal};

pub use threads::threads_helper;

/// A part of the bench that `--only` can select.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
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
}

const ALL_PHASES: [Phase; 6] = [
    Phase::Pipe,
    Phase::BpfStats,
    Phase::Startup,
    Phase::Threads,
    Phase::Scale,
    Phase::Criterion,
];

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
const T_START_MS: f64 = 150.0;
const T_CPU_PCT: f64 = 1.0;
const T_RSS_MIB: f64 = 30.0;
const T_READ_MS: f64 = 50.0;

/// What every phase needs: the tools, the binaries, the scratch directory.
struct Ctx {
    bin: PathBuf,
    xtask: PathBuf,
    taskset: PathBuf,
    perf: PathBuf,
    bpftrace: Option<PathBuf>,
    bpftool: Bpftool,
    tmp: PathBuf,
    loops: u64,
    unrelated: u32,
}

impl Ctx {
    fn pipe_cmd(&self, loops: u64) -> Vec<String> {
        vec![
            self.taskset.display().to_string(),
            "-c".into(),
            "0".into(),
            self.perf.display().to_string(),
            "bench".into(),
            "sched".into(),
            "pipe".into(),
            "-T".into(),
            "-l".into(),
            loops.to_string(),
        ]
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
}

pub fn run(args: Args) -> Result<()> {
    if !is_root() {
        bail!("the benchmark loads eBPF programs and changes sysctls: run it as root");
    }
    sys::on_stop_signals(on_signal);
    crate::setup::run()?;
    // Kernel state and CPU time are machine-wide: wait for a root test run
    // (any checkout) to end, and keep it out until this one is done.
    let _lock = crate::test::machine_lock()?;
    binary::cargo_build(true, binary::Hooks::On)?;
    let bpftool = tool("bpftool", "bpftool")?;
    let result = bench(&args, &bpftool);
    // Programs are freed a moment after their last fd closes: allow that.
    let bpftool = Bpftool {
        argv: vec![bpftool],
    };
    if let Err(e) = leftover_check(&bpftool) {
        eprintln!("bench: ERROR: {e:#}");
        return Err(e);
    }
    result
}

fn bench(args: &Args, bpftool_path: &Path) -> Result<()> {
    let t_start = Instant::now();
    let phases: Vec<Phase> = if args.only.is_empty() {
        ALL_PHASES.to_vec()
    } else {
        ALL_PHASES
            .into_iter()
            .filter(|p| args.only.contains(p))
            .collect()
    };
    let wants = |p: Phase| phases.contains(&p);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = tool("taskset", "util-linux")?;
    let perf = tool("perf", "linux-perf")?;
    let bpftool = Bpftool {
        argv: if ncpu > 1 {
            vec![
                taskset.clone(),
                "-c".into(),
                "1".into(),
                bpftool_path.into(),
            ]
        } else {
            vec![bpftool_path.into()]
        },
    };
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
    let mut sleeper = Proc::spawn("sleep 1000", Path::new("sleep"), &["1000"])?;
    let mut ctx = Ctx {
        bin: release_bin(),
        xtask: std::env::current_exe().context("finding xtask's own executable")?,
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

    // Stop everything started before writing anything.
    sleeper.stop()?;
    drop(sleeper);
    stats_sysctl.restore()?;

    let md = render::render(&env, &r, t_start.elapsed());
    println!("\n{md}");
    let path = if phases.len() == ALL_PHASES.len() {
        workspace_root().join("BENCHMARKS.md")
    } else {
        workspace_root().join("target/bench-partial.md")
    };
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "bench: wrote {} ({:.0} s in all)",
        path.display(),
        t_start.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = [
        ("bpf_stats", r.stats.as_ref().is_some_and(|x| x.is_err())),
        ("start-up", r.startup.as_ref().is_some_and(|x| x.is_err())),
        (
            "1,000 threads",
            r.small.as_ref().is_some_and(|x| x.is_err()),
        ),
        (
            "10,000 threads",
            r.large.as_ref().is_some_and(|x| x.is_err()),
        ),
        (
            "criterion",
            r.criterion.as_ref().is_some_and(|x| x.is_err()),
        ),
    ]
    .into_iter()
    .filter_map(|(n, f)| f.then_some(n))
    .chain(r.checks.iter().filter(|c| !c.1).map(|c| c.0.as_str()))
    .collect();
    if !failed.is_empty() {
        bail!("some measurements failed: {}", failed.join("; "));
    }
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
