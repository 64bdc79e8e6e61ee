//! Phases 1-3: `perf bench sched pipe` under configurations (a)-(e),
//! interleaved over rounds, and once more each of (b)-(d) with
//! `kernel.bpf_stats_enabled` for the per-program run time.

use super::parse::{MapInfo, Prog, TraceReport, parse_usecs_per_op, read_report};
use super::process::{Proc, Sysctl, interrupted, maxrss_kib};
use super::programs::{foreign_programs, poll_stats, programs_of, wait_no_foreign};
use super::results::{Results, check};
use super::{ATTACH_TIMEOUT, Ctx, RUN_TIMEOUT};
use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use xtask::util::words;

/// `affinity::kernel::probe::FLOOR_CLOCK_ENV` (the bench does not link the library).
const FLOOR_CLOCK_ENV: &str = "AFFIN_TRACE_FLOOR_CLOCK";
/// `affinity::kernel::probe::FLOOR_LADDER_ENV`.
const FLOOR_LADDER_ENV: &str = "AFFIN_TRACE_FLOOR_LADDER";
/// `affinity::kernel::probe::NO_NEIGHBOURS_ENV`.
const NO_NEIGHBOURS_ENV: &str = "AFFIN_TRACE_NO_NEIGHBOURS";
/// Interleaved pairs of runs (neighbour accounting on, off) per tracer.
const NEIGHBOUR_PAIRS: usize = 5;

/// (e): the equivalent of (d) in bpftrace (what it counts is said in the file).
const BPFTRACE_SCRIPT: &str = include_str!("../templates/bench.bt");

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Cfg {
    A,
    B,
    C,
    D,
    E,
}

pub const CFGS: [Cfg; 5] = [Cfg::A, Cfg::B, Cfg::C, Cfg::D, Cfg::E];

impl Cfg {
    /// "(a)" to "(e)".
    pub fn tag(self) -> String {
        format!("({})", (b'a' + self as u8) as char)
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
    let mut p = Proc::spawn("perf bench sched pipe", cmd[0].as_ref(), &cmd[1..], &[])?;
    p.wait_ok(RUN_TIMEOUT)?;
    usecs_per_op(&p)
}

fn usecs_per_op(p: &Proc) -> Result<f64> {
    parse_usecs_per_op(&p.stdout)
        .with_context(|| format!("no usecs/op in {}'s output: {}", p.name, p.output_tail()))
}

/// A result of one configuration run.
#[derive(Default)]
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

/// How a configuration runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Section 1: bpf_stats off.
    Plain,
    /// Section 3: bpf_stats on, with the floor programs beside ((b)-(d)).
    Stats,
    /// bpf_stats on, no floor programs; neighbour accounting on (true) or
    /// dropped by the verifier (false): its per-event cost ((c), (d)).
    Neighbours(bool),
}

/// Runs one configuration once; with the stats on, also reads bpf_stats.
fn run_cfg(ctx: &Ctx, cfg: Cfg, mode: Mode) -> Result<Sample> {
    wait_no_foreign(&ctx.bpftool)?;
    let stats = mode != Mode::Plain;
    // The tracer's hooks, all here: in the Stats runs, bench-floor also
    // attaches the empty program + one clock read (what a
    // bpf_ktime_get_ns() costs) and a trace the floor programs beside its
    // own; in the neighbour cost's off runs, that accounting is dropped.
    let hooks: &[_] = match (mode, cfg) {
        (Mode::Stats, Cfg::B) => &[(FLOOR_CLOCK_ENV, "1")],
        (Mode::Stats, _) => &[(FLOOR_LADDER_ENV, "1")],
        (Mode::Neighbours(false), _) => &[(NO_NEIGHBOURS_ENV, "1")],
        _ => &[],
    };
    let mut s = Sample::default();
    match cfg {
        Cfg::A => {
            s.us = run_perf(ctx, ctx.loops)?;
            s.foreign = foreign_programs(&ctx.bpftool, None)?;
        }
        Cfg::B | Cfg::C => {
            let out = ctx.file("c.json");
            let mut t = if cfg == Cfg::B {
                let args = ["bench-floor", "--seconds", "600"];
                let mut t = Proc::spawn("affin-trace bench-floor", &ctx.bin, &args, hooks)?;
                t.wait_line(true, "floor attached", ATTACH_TIMEOUT)?;
                t
            } else {
                let args = words(&format!("--pid {} --duration 600", ctx.unrelated));
                // The floor ladder on the filter path too (see (d)).
                let mut t = ctx.tracer("affin-trace --pid <sleep>", &out, args, hooks)?;
                t.wait_line(true, "tracing at", ATTACH_TIMEOUT)?;
                t
            };
            s.us = run_perf(ctx, ctx.loops)?;
            s.foreign = foreign_programs(&ctx.bpftool, Some(t.pid()))?;
            if stats {
                s.progs = programs_of(&ctx.bpftool, t.pid())?;
            }
            if mode == Mode::Stats && cfg == Cfg::C {
                let ids: Vec<u64> = s.progs.iter().flat_map(|p| p.map_ids.clone()).collect();
                s.maps = ctx.bpftool.maps()?;
                s.maps.retain(|m| ids.contains(&m.id));
                s.maps.sort_by_key(|m| std::cmp::Reverse(m.bytes));
            }
            s.maxrss_kib = Some(maxrss_kib(&t.stop_ok()?));
            if cfg == Cfg::C {
                s.report = Some(read_report(&out)?);
            }
        }
        Cfg::D => {
            let out = ctx.file("d.json");
            let mut args = vec!["--".to_string()];
            args.extend(ctx.pipe_cmd(ctx.loops));
            // With the stats, the floor programs run beside btf_sched_switch
            // on the same events (probe::FLOOR_LADDER_ENV): what its time is
            // made of.
            let mut t = ctx.tracer("affin-trace -- perf bench", &out, args, hooks)?;
            // With the stats: read them while it runs (its programs go with it).
            let (stop, pid) = (AtomicBool::new(!stats), t.pid());
            let result = std::thread::scope(|scope| {
                let poller = scope.spawn(|| poll_stats(&ctx.bpftool, pid, &stop));
                let result = t.wait_ok(RUN_TIMEOUT);
                stop.store(true, Ordering::SeqCst);
                s.progs = poller.join().unwrap_or_default();
                result
            });
            // Ours are gone with the tracer: any held now are someone else's.
            s.foreign = foreign_programs(&ctx.bpftool, None)?;
            result?;
            s.us = usecs_per_op(&t)?;
            s.report = Some(read_report(&out)?);
        }
        Cfg::E => {
            let bpftrace = ctx.bpftrace.as_ref().context("bpftrace is not available")?;
            let cmd = ctx.pipe_cmd(ctx.loops).join(" ");
            let args = ["-c", &cmd, "-e", BPFTRACE_SCRIPT];
            let mut t = Proc::spawn("bpftrace -c perf bench", bpftrace, &args, &[])?;
            let result = t.wait_ok(RUN_TIMEOUT);
            s.foreign = foreign_programs(&ctx.bpftool, None)?;
            result?;
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
            s.us = usecs_per_op(&t)?;
        }
    }
    Ok(s)
}

/// One configuration's run, redone (up to 3 tries) while another
/// affin-trace appeared during it.
fn run_clean(ctx: &Ctx, cfg: Cfg, r: &mut Results) -> Result<Sample> {
    for _ in 1..3 {
        let s = run_cfg(ctx, cfg, Mode::Plain)?;
        if s.foreign.is_empty() {
            return Ok(s);
        }
        let foreign = s.foreign.join("; ");
        println!(
            "bench: {} redone: another affin-trace ran meanwhile: {foreign}",
            cfg.tag()
        );
        r.redone += 1;
    }
    run_cfg(ctx, cfg, Mode::Plain)
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
            let s = match run_clean(ctx, cfg, r) {
                Ok(s) => s,
                // bpftrace is only a comparison: when it fails, go on without it.
                Err(e) if cfg == Cfg::E && !interrupted() => {
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
#[derive(Default, Serialize, Deserialize)]
pub struct Stats {
    /// Each run's programs with their run time and count.
    pub progs: Vec<(Cfg, Prog)>,
    /// (d)'s report in that run.
    pub d_report: Option<TraceReport>,
    /// The maps of (c)'s tracer, largest first.
    pub maps: Vec<MapInfo>,
    /// The agent's programs on the same benchmark (serve::agent_on_pipe).
    #[serde(default)]
    pub agent: Vec<Prog>,
    /// btf_sched_switch in the interleaved runs of (c) and (d) with the
    /// neighbour accounting on (true) and off (false), no floor programs.
    #[serde(default)]
    pub neighbours: Vec<(Cfg, bool, Prog)>,
}

/// Phase 3: one run each of (b), (c) and (d) with bpf_stats on; the caller
/// restores the sysctl on every path.
pub fn stats_phase(ctx: &Ctx, stats_sysctl: &mut Sysctl) -> Result<Stats> {
    stats_sysctl.set("1")?;
    let mut all = Stats::default();
    for cfg in [Cfg::B, Cfg::C, Cfg::D] {
        let s = run_cfg(ctx, cfg, Mode::Stats)
            .with_context(|| format!("{} with bpf_stats", cfg.tag()))?;
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
    all.neighbours = neighbour_runs(ctx)?;
    all.agent = super::serve::agent_on_pipe(ctx).context("the agent on the benchmark")?;
    Ok(all)
}

/// What the neighbour accounting costs per event: (c) and (d) with it on
/// and off (`NEIGHBOURS_ON` 0: the verifier drops its code), interleaved
/// over [`NEIGHBOUR_PAIRS`] rounds, bpf_stats on, no floor programs.
fn neighbour_runs(ctx: &Ctx) -> Result<Vec<(Cfg, bool, Prog)>> {
    let mut out = Vec::new();
    for round in 1..=NEIGHBOUR_PAIRS {
        let mut line = format!("bench: neighbour cost {round}/{NEIGHBOUR_PAIRS}:");
        for cfg in [Cfg::C, Cfg::D] {
            for on in [true, false] {
                let s = run_cfg(ctx, cfg, Mode::Neighbours(on)).with_context(|| {
                    format!("{} with neighbour accounting {}", cfg.tag(), on_off(on))
                })?;
                let p = (s.progs.into_iter())
                    .find(|p| p.name == "btf_sched_switch")
                    .with_context(|| format!("{}: no btf_sched_switch", cfg.tag()))?;
                let ns = p.ns_per_event().unwrap_or(f64::NAN);
                let _ = write!(line, " {} {} {ns:.1}", cfg.tag(), on_off(on));
                out.push((cfg, on, p));
            }
        }
        println!("{line} ns/event");
    }
    Ok(out)
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Checks that the runs of phase 1 measured what they claim to.
fn phase1_checks(r: &mut Results, unrelated: u32) {
    let n = r.contaminated.len();
    let what = format!(
        "no other affin-trace held programs at the end of a kept run ({n} kept with one; {} \
         runs redone because of one)",
        r.redone
    );
    check(r, what, n == 0);
    let min_threads = r.d_reports.iter().map(|d| d.threads).min().unwrap_or(0);
    let what = format!("(d) traced >= 2 threads of the bench in every run (fewest: {min_threads})");
    check(r, what, min_threads >= 2);
    if let Some(spo) = r.switches_per_op() {
        let what = format!("(d) counted ~2 context switches per round trip (median {spo:.3})");
        check(r, what, (1.8..=2.2).contains(&spo));
    }
    let modes: Vec<&str> = r.d_reports.iter().map(|d| d.attach_mode.as_str()).collect();
    let tp_btf = !modes.is_empty() && modes.iter().all(|m| *m == "tp_btf");
    let what = format!("(d) attached with tp_btf ({})", modes.join(", "));
    check(r, what, tp_btf);
    let dropped: u64 = r.d_reports.iter().map(|d| d.dropped).sum();
    let what = format!("(d) dropped no events (total {dropped})");
    check(r, what, dropped == 0);
    let c_ok = (r.c_reports.iter()).all(|c| c.pids == [unrelated as u64] && c.threads <= 1);
    let what = format!("(c) traced only the unrelated sleep (pid {unrelated})");
    check(r, what, c_ok && !r.c_reports.is_empty());
}

/// `perf stat -e context-switches` of one bench run: switches per op.
fn perf_stat_switches(ctx: &Ctx) -> Result<f64> {
    let mut args = words("stat -x , -e context-switches --");
    args.extend(ctx.pipe_cmd(ctx.loops));
    let mut p = Proc::spawn("perf stat", &ctx.perf, &args, &[])?;
    p.wait_ok(RUN_TIMEOUT)?;
    let n: f64 = (p.stderr.iter())
        .find(|l| l.contains("context-switches"))
        .and_then(|l| l.split(',').next()?.trim().parse().ok())
        .with_context(|| format!("no context-switches count: {}", p.output_tail()))?;
    let spo = n / ctx.loops as f64;
    println!("bench: perf stat: {n} context switches, {spo:.3} per round trip");
    Ok(spo)
}
