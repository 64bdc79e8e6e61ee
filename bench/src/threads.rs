//! Phases 5 and 6: affin-trace tracing a helper process of many sleeping
//! threads (`affinity-bench bench-threads`, hidden): its own CPU time and peak RSS
//! (`wait4` rusage, /proc/<pid>/stat and status samples), what it saw, and
//! its per-interval map read time.

use super::Ctx;
use super::parse::{TraceReport, read_report, read_times, verbose_ms};
use super::process::{Proc, Sysctl, check_interrupted, cpu_s, maxrss_kib};
use anyhow::{Context as _, Result, bail};
use procfs::Current as _;
use procfs::{LoadAverage, process::Process};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};
use xtask::util::words;

const THREADS_MAX: &str = "/proc/sys/kernel/threads-max";
/// `affinity::collect::collector::READ_TIMES_ENV` (the bench does not link the library).
const READ_TIMES_ENV: &str = "AFFIN_TRACE_READ_TIMES";
const PID_MAX: &str = "/proc/sys/kernel/pid_max";
pub const SMALL_THREADS: usize = 1_000;
/// affin-trace's default window for `--pid` (session::DEFAULT_DURATION_S):
/// the one-time start-up cost is spread as in a default run.
const SMALL_SECS: f64 = 30.0;
pub const LARGE_THREADS: usize = 10_000;
const LARGE_SECS: f64 = 5.0;
/// Sleep per loop of each helper thread: 10 ms for 1,000 threads (100k
/// wakeups/s); 10,000 threads at 10 ms would ask for 1M wakeups/s, which
/// a small machine cannot serve (tried on 2 CPUs: the helper never even
/// reported ready within 60 s), so they sleep 100 ms: the same 100k/s.
pub const SMALL_PERIOD_MS: u64 = 10;
const LARGE_PERIOD_MS: u64 = 100;

/// Phase 5: 1,000 threads.
pub fn small(ctx: &Ctx) -> Result<ThreadsRun> {
    threads_phase(ctx, SMALL_THREADS, SMALL_SECS, SMALL_PERIOD_MS)
}

/// Phase 6: 10,000 threads.
pub fn large(ctx: &Ctx) -> Result<ThreadsRun> {
    threads_phase(ctx, LARGE_THREADS, LARGE_SECS, LARGE_PERIOD_MS)
}

/// One traced helper run, as the report shows it.
#[derive(Serialize, Deserialize)]
pub struct ThreadsRun {
    pub n: usize,
    pub secs: f64,
    pub period_ms: u64,
    pub helper_tasks: usize,
    /// affin-trace's `tracing at` (ms), where it printed one.
    pub tracing_ms: Option<f64>,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub steady_pct: Option<f64>,
    pub maxrss_kib: u64,
    pub vmhwm_kib: Option<u64>,
    /// Last VmRSS sample before the exit.
    pub vmrss_kib: Option<u64>,
    /// CPU time used until `tracing at` (start-up), s.
    pub startup_cpu_s: Option<f64>,
    pub report: TraceReport,
    pub limits: String,
    /// Each interval's map read time (ms), wall and CPU, as affin-trace
    /// printed it.
    pub read_ms: Vec<f64>,
    pub read_cpu_ms: Vec<f64>,
}

/// Traces a helper process of `n` threads (each sleeping `period_ms` in a
/// loop) for `secs` with the default interval; the tracer's CPU time and RSS.
fn threads_phase(ctx: &Ctx, n: usize, secs: f64, period_ms: u64) -> Result<ThreadsRun> {
    // Room for the helper's threads: raise the limits when short.
    let mut raised = Vec::new();
    let mut guards = Vec::new();
    let tasks = LoadAverage::current().map_or(0, |l| l.max as u64);
    let need = tasks + n as u64 + 1_000;
    for path in [THREADS_MAX, PID_MAX] {
        let mut s = Sysctl::new(path)?;
        let cur: u64 = s.original.parse().unwrap_or(u64::MAX);
        if cur < need {
            s.set(&need.to_string())?;
            raised.push(format!("{path} raised from {cur} to {need} for the run"));
        }
        guards.push(s);
    }
    let limits = if raised.is_empty() {
        let (threads_max, pid_max) = (&guards[0].original, &guards[1].original);
        format!(
            "no limit raised (threads-max {threads_max}, pid_max {pid_max}, {need} tasks needed)"
        )
    } else {
        raised.join("; ")
    };
    let helper_args = words(&format!("bench-threads {n} {} {period_ms}", secs + 60.0));
    let mut helper = Proc::spawn("bench-threads", &ctx.helper, &helper_args, &[])?;
    helper.wait_line(false, "threads running", Duration::from_secs(120))?;
    let helper_tasks =
        std::fs::read_dir(format!("/proc/{}/task", helper.pid())).map_or(0, |d| d.count());

    let out = ctx.file(&format!("threads-{n}.json"));
    let args = words(&format!("--pid {} --duration {secs}", helper.pid()));
    // READ_TIMES_ENV: affin-trace prints each interval's map read time.
    let name = format!("affin-trace --pid <{n} threads>");
    let mut t = ctx.tracer(&name, &out, args, &[(READ_TIMES_ENV, "1")])?;
    let pid = t.pid();
    // CPU time (and when) at `tracing at`, and at the last sample.
    let mut at_tracing: Option<(Instant, f64)> = None;
    let mut last = None;
    let (mut vmhwm, mut vmrss) = (None, None);
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 120.0);
    loop {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("affin-trace did not finish {secs} s of tracing in time");
        }
        match t.lines.recv_timeout(Duration::from_millis(100)) {
            Ok((is_err, line)) => {
                if is_err && line.contains("tracing at") {
                    at_tracing = cpu_s(pid).ok().map(|c| (Instant::now(), c));
                }
                t.push((is_err, line));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Ok(status) = Process::new(pid as i32).and_then(|p| p.status()) {
            vmhwm = status.vmhwm.or(vmhwm);
            vmrss = status.vmrss.or(vmrss);
        }
        if let Ok(c) = cpu_s(pid) {
            last = Some((Instant::now(), c));
        }
    }
    let ru = t.wait_ok(Duration::from_secs(60))?;
    let wall_s = t.started.elapsed().as_secs_f64();
    helper.stop()?;
    let tv = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    let cpu_s = tv(ru.ru_utime) + tv(ru.ru_stime);
    let steady_pct = match (at_tracing, last) {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
            Some((c1 - c0) / (t1 - t0).as_secs_f64() * 100.0)
        }
        _ => None,
    };
    let reads = read_times(&t.stderr);
    let run = ThreadsRun {
        n,
        secs,
        period_ms,
        helper_tasks,
        tracing_ms: verbose_ms(&t.stderr, "tracing at"),
        wall_s,
        cpu_s,
        steady_pct,
        maxrss_kib: maxrss_kib(&ru),
        vmhwm_kib: vmhwm,
        vmrss_kib: vmrss,
        startup_cpu_s: at_tracing.map(|(_, c)| c),
        report: read_report(&out)?,
        limits,
        read_ms: reads.iter().map(|r| r.0).collect(),
        read_cpu_ms: reads
            .iter()
            .map(|r| r.1)
            .filter(|c| c.is_finite())
            .collect(),
    };
    println!(
        "bench: {n} threads: {:.2}% of one CPU ({cpu_s:.3} s over {wall_s:.2} s), peak RSS \
         {:.1} MiB, {} threads seen, {} dropped events",
        cpu_s / wall_s * 100.0,
        run.maxrss_kib as f64 / 1024.0,
        run.report.threads,
        run.report.dropped
    );
    for mut g in guards {
        g.restore()?;
    }
    Ok(run)
}

/// `affinity-bench bench-threads N SECS [PERIOD_MS]`: N threads sleeping
/// PERIOD_MS (default 10) in a loop for SECS seconds (the workload of phases
/// 5 and 6). The threads start their loops together once all exist, with
/// staggered first sleeps, so that spawning is not slowed by the load.
pub fn threads_helper(n: usize, secs: f64, period_ms: u64) -> Result<()> {
    let period = Duration::from_millis(period_ms.max(1));
    let go = Arc::new(std::sync::Barrier::new(n + 1));
    for i in 0..n {
        let go = go.clone();
        let offset = period * (i % 16) as u32 / 16;
        std::thread::Builder::new()
            .name(format!("sleeper-{i}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                go.wait();
                std::thread::sleep(offset);
                loop {
                    std::thread::sleep(period);
                }
            })
            .with_context(|| format!("starting thread {} of {n}", i + 1))?;
    }
    go.wait();
    println!("bench-threads: {n} threads running");
    std::thread::sleep(Duration::from_secs_f64(secs));
    std::process::exit(0);
}
