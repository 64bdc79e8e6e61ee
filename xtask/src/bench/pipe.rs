//! Phases 1-3: `perf bench sched pipe` under configurations (a)-(e),
//! interleaved over rounds, and once more each of (b)-(d) with
//! `kernel.bpf_stats_enabled` for the per-program run time.

use super::parse::{MapInfo, Prog, TraceReport, parse_usecs_per_op, read_report};
use super::process::{Proc, Sysctl};
use super::programs::{StatsPoller, foreign_programs, programs_of, wait_no_foreign};
use super::results::{Results, check};
use super::sys::INTERRUPTED;
use super::{ATTACH_TIMEOUT, Ctx, RUN_TIMEOUT};
use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;

/// `affinity::kernel::probe::FLOOR_CLOCK_ENV` (xtask does not link the library).
const FLOOR_CLOCK_ENV: &str = "AFFIN_TRACE_FLOOR_CLOCK";

/// The equivalent of (d) in bpftrace: on-CPU time per thread of the target
/// (start times keyed by tid, deltas summed for tids of the target process)
/// and migrations per thread. Threads are learned when they first switch
/// out, as bpftrace's sched_switch args carry no tgid for `next`.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sched:sched_switch
{
  if (pid == cpid) {
    @target[tid] = 1;
    $start = @start[tid];
    if ($start) {
      @oncpu_ns[tid] = sum(nsecs - $start);
      delete(@start[tid]);
    }
  }
  if (@target[args->next_pid]) {
    @start[args->next_pid] = nsecs;
  }
}
tracepoint:sched:sched_migrate_task
{
  if (@target[args->pid]) {
    @migrations[args->pid] = count();
  }
}
END { clear(@start); clear(@target); }
"#;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cfg {
    A,
    B,
    C,
    D,
    E,
}

pub const CFGS: [Cfg; 5] = [Cfg::A, Cfg::B, Cfg::C, Cfg::D, Cfg::E];

impl Cfg {
    pub fn tag(self) -> &'static str {
        match self {
            Cfg::A => "(a)",
            Cfg::B => "(b)",
            Cfg::C => "(c)",
            Cfg::D => "(d)",
            Cfg::E => "(e)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Cfg::A => "nothing attached",
            Cfg::B => "empty tp_btf program (bench-floor)",
            Cfg::C => "affin-trace, unrelated pid",
            Cfg::D => "affin-trace tracing the bench",
            Cfg::E => "bpftrace tracing the bench",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// One perf run with nothing else started: us/op.
pub fn run_perf(ctx: &Ctx, loops: u64) -> Result<f64> {
    let cmd = ctx.pipe_cmd(loops);
    let mut p = Proc::spawn("perf bench sched pipe", Path::new(&cmd[0]), &cmd[1..])?;
    let status = p.wait(RUN_TIMEOUT)?;
    p.ok(status)?;
    parse_usecs_per_op(&p.stdout)
        .with_context(|| format!("no usecs/op in perf's output: {}", p.output_tail()))
}

/// A result of one configuration run.
struct Sample {
    us: f64,
    report: Option<TraceReport>,
    progs: Vec<Prog>,
    /// The tracer's peak RSS (KiB), where it was stopped by the bench.
    maxrss_kib: Option<u64>,
    /// affin-trace programs of another process seen right after the run.
    foreign: Vec<String>,
    /// The maps the tracer's programs use ((c) with `stats`).
    maps: Vec<MapInfo>,
}

/// Runs one configuration once; with `stats`, also reads bpf_stats.
fn run_cfg(ctx: &Ctx, cfg: Cfg, stats: bool) -> Result<Sample> {
    let bin = &ctx.bin;
    wait_no_foreign(&ctx.bpftool)?;
    let mut sample = Sample {
        us: 0.0,
        report: None,
        progs: Vec::new(),
        maxrss_kib: None,
        foreign: Vec::new(),
        maps: Vec::new(),
    };
    match cfg {
        Cfg::A => {
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
        }
        Cfg::B => {
            // With the stats on, also the empty program + one clock read
            // (probe::FLOOR_CLOCK_ENV): what a bpf_ktime_get_ns() costs.
            let env: &[(&str, &str)] = if stats {
                &[(FLOOR_CLOCK_ENV, "1")]
            } else {
                &[]
            };
            let mut t = Proc::spawn_env(
                "affin-trace bench-floor",
                bin,
                &["bench-floor", "--seconds", "600"],
                env,
            )?;
            t.wait_line(true, "floor attached", ATTACH_TIMEOUT)?;
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, Some(t.pid()))?;
            if stats {
                sample.progs = programs_of(&ctx.bpftool, t.pid())?;
            }
            let (status, ru) = t.stop_rusage()?;
            t.ok(status)?;
            sample.maxrss_kib = Some(ru.ru_maxrss.max(0) as u64);
        }
        Cfg::C => {
            let out = ctx.file("c.json");
            let pid = ctx.unrelated.to_string();
            let args = [
                "--verbose",
                "--pid",
                &pid,
                "--duration",
                "600",
                "--format",
                "json",
                "--output",
                &out.display().to_string(),
            ]
            .map(String::from);
            let mut t = Proc::spawn("affin-trace --pid <sleep>", bin, &args)?;
            t.wait_line(true, "tracing at", ATTACH_TIMEOUT)?;
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, Some(t.pid()))?;
            if stats {
                sample.progs = programs_of(&ctx.bpftool, t.pid())?;
                let ids: Vec<u64> = sample
                    .progs
                    .iter()
                    .flat_map(|p| p.map_ids.clone())
                    .collect();
                sample.maps = ctx.bpftool.maps()?;
                sample.maps.retain(|m| ids.contains(&m.id));
                sample.maps.sort_by_key(|m| std::cmp::Reverse(m.bytes));
            }
            let (status, ru) = t.stop_rusage()?;
            t.ok(status)?;
            sample.maxrss_kib = Some(ru.ru_maxrss.max(0) as u64);
            sample.report = Some(read_report(&out)?);
        }
        Cfg::D => {
            let out = ctx.file("d.json");
            let mut args: Vec<String> = [
                "--verbose",
                "--format",
                "json",
                "--output",
                &out.display().to_string(),
                "--",
            ]
            .map(String::from)
            .to_vec();
            args.extend(ctx.pipe_cmd(ctx.loops));
            let mut t = Proc::spawn("affin-trace -- perf bench", bin, &args)?;
            let poller = stats.then(|| StatsPoller::start(&ctx.bpftool, t.pid()));
            let status = t.wait(RUN_TIMEOUT)?;
            if let Some(p) = poller {
                sample.progs = p.finish();
            }
            // Ours are gone with the tracer: any held now are someone else's.
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
            t.ok(status)?;
            sample.us = parse_usecs_per_op(&t.stdout)
                .with_context(|| format!("no usecs/op in the output: {}", t.output_tail()))?;
            sample.report = Some(read_report(&out)?);
        }
        Cfg::E => {
            let bpftrace = ctx.bpftrace.as_ref().context("bpftrace is not available")?;
            let cmd = ctx.pipe_cmd(ctx.loops).join(" ");
            let args = ["-c", &cmd, "-e", BPFTRACE_SCRIPT];
            let mut t = Proc::spawn("bpftrace -c perf bench", bpftrace, &args)?;
            let status = t.wait(RUN_TIMEOUT)?;
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
            t.ok(status)?;
            if !t.stdout.iter().any(|l| l.starts_with("Attaching")) {
                bail!("bpftrace did not attach: {}", t.output_tail());
            }
            let threads = t
                .stdout
                .iter()
                .filter(|l| l.starts_with("@oncpu_ns["))
                .count();
            if threads < 2 {
                bail!(
                    "bpftrace saw {threads} threads of the bench (expected >= 2): {}",
                    t.output_tail()
                );
            }
            sample.us = parse_usecs_per_op(&t.stdout)
                .with_context(|| format!("no usecs/op in the output: {}", t.output_tail()))?;
        }
    }
    Ok(sample)
}

/// Phase 1: the interleaved rounds, then the checks on what (c) and (d)
/// recorded, and `perf stat`'s count of switches for comparison.
pub fn phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    r.perf_stat_switches_per_op = perf_stat_switches(ctx).ok();
    let mut cfgs: Vec<Cfg> = CFGS
        .into_iter()
        .filter(|c| *c != Cfg::E || ctx.bpftrace.is_some())
        .collect();
    for round in 1..=r.rounds {
        let mut line = format!("bench: round {round}/{}:", r.rounds);
        for cfg in cfgs.clone() {
            let mut attempt = 0;
            let run = loop {
                attempt += 1;
                match run_cfg(ctx, cfg, false) {
                    // Another affin-trace appeared during the run: redo it.
                    Ok(s) if !s.foreign.is_empty() && attempt < 3 => {
                        println!(
                            "bench: {} redone: another affin-trace ran meanwhile: {}",
                            cfg.tag(),
                            s.foreign.join("; ")
                        );
                        r.redone += 1;
                    }
                    other => break other,
                }
            };
            let s = match run {
                Ok(s) => s,
                // bpftrace is only a comparison: when it fails, go on without it.
                Err(e) if cfg == Cfg::E && !INTERRUPTED.load(Ordering::SeqCst) => {
                    println!("bench: (e) failed, skipping it from now on: {e:#}");
                    r.e_skipped = Some(format!("bpftrace failed: {e:#}"));
                    r.samples[Cfg::E.index()].clear();
                    cfgs.retain(|c| *c != Cfg::E);
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("config {}", cfg.tag())),
            };
            r.samples[cfg.index()].push(s.us);
            if !s.foreign.is_empty() {
                r.contaminated
                    .push(format!("{}: {}", cfg.tag(), s.foreign.join("; ")));
            }
            match cfg {
                Cfg::B => r.floor_rss.extend(s.maxrss_kib),
                Cfg::C => {
                    r.c_reports.extend(s.report);
                    r.c_rss.extend(s.maxrss_kib);
                }
                Cfg::D => r.d_reports.extend(s.report),
                _ => {}
            }
            let _ = write!(line, " {} {:.3}", cfg.tag(), s.us);
        }
        println!("{line} us/op");
    }
    phase1_checks(r, ctx.unrelated);
    Ok(())
}

/// What phase 3 measured.
pub struct Stats {
    /// Each run's programs with their run time and count.
    pub progs: Vec<(Cfg, Prog)>,
    /// (d)'s report in that run.
    pub d_report: Option<TraceReport>,
    /// The maps of (c)'s tracer, largest first.
    pub maps: Vec<MapInfo>,
}

/// Phase 3: one run each of (b), (c) and (d) with bpf_stats on; the caller
/// restores the sysctl on every path.
pub fn stats_phase(ctx: &Ctx, stats_sysctl: &mut Sysctl) -> Result<Stats> {
    stats_sysctl.set("1")?;
    let mut all = Stats {
        progs: Vec::new(),
        d_report: None,
        maps: Vec::new(),
    };
    for cfg in [Cfg::B, Cfg::C, Cfg::D] {
        let s = run_cfg(ctx, cfg, true).with_context(|| format!("{} with bpf_stats", cfg.tag()))?;
        if s.progs.is_empty() {
            bail!(
                "{}: bpftool showed none of affin-trace's programs",
                cfg.tag()
            );
        }
        match cfg {
            Cfg::C => all.maps = s.maps,
            Cfg::D => all.d_report = s.report,
            _ => {}
        }
        all.progs.extend(s.progs.into_iter().map(|p| (cfg, p)));
    }
    Ok(all)
}

/// Checks that the runs of phase 1 measured what they claim to.
fn phase1_checks(r: &mut Results, unrelated: u32) {
    let n = r.contaminated.len();
    check(
        r,
        format!(
            "no other affin-trace held programs at the end of a kept run ({n} kept with one; \
             {} runs redone because of one)",
            r.redone
        ),
        n == 0,
    );
    let min_threads = r.d_reports.iter().map(|d| d.threads).min().unwrap_or(0);
    check(
        r,
        format!("(d) traced >= 2 threads of the bench in every run (fewest: {min_threads})"),
        min_threads >= 2,
    );
    if let Some(spo) = r.switches_per_op() {
        check(
            r,
            format!("(d) counted ~2 context switches per round trip (median {spo:.3})"),
            (1.8..=2.2).contains(&spo),
        );
    }
    let tp_btf = r.d_reports.iter().all(|d| d.attach_mode == "tp_btf");
    let modes: Vec<String> = r.d_reports.iter().map(|d| d.attach_mode.clone()).collect();
    check(
        r,
        format!("(d) attached with tp_btf ({})", modes.join(", ")),
        tp_btf && !modes.is_empty(),
    );
    let dropped: u64 = r.d_reports.iter().map(|d| d.dropped).sum();
    check(
        r,
        format!("(d) dropped no events (total {dropped})"),
        dropped == 0,
    );
    let c_ok = r
        .c_reports
        .iter()
        .all(|c| c.pids == [unrelated as u64] && c.threads <= 1);
    check(
        r,
        format!("(c) traced only the unrelated sleep (pid {unrelated})"),
        c_ok && !r.c_reports.is_empty(),
    );
}

/// `perf stat -e context-switches` of one bench run: switches per op.
fn perf_stat_switches(ctx: &Ctx) -> Result<f64> {
    let mut args: Vec<String> = ["stat", "-x", ",", "-e", "context-switches", "--"]
        .map(String::from)
        .to_vec();
    args.extend(ctx.pipe_cmd(ctx.loops));
    let mut p = Proc::spawn("perf stat", &ctx.perf, &args)?;
    let status = p.wait(RUN_TIMEOUT)?;
    p.ok(status)?;
    let n: f64 = p
        .stderr
        .iter()
        .find(|l| l.contains("context-switches"))
        .and_then(|l| l.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no context-switches count: {}", p.output_tail()))?;
    let spo = n / ctx.loops as f64;
    println!("bench: perf stat: {n} context switches, {spo:.3} per round trip");
    Ok(spo)
}
