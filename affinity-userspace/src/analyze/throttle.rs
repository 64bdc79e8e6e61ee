//! CPU-quota throttling of a traced process: how many threads it ran
//! against how many CPUs its cgroup grants, and what that cost. Pure: takes
//! the [`Trace`], the [`CgroupLimit`] from [`crate::host::cgroup::resolve`] and the
//! [`CpuStatDelta`] of the quota's cgroup over the trace window.
//!
//! Uses from the trace: per-thread `cpu_time_ns`, `preempted_wait_ns`
//! (runnable after preemption, which includes waiting out a throttled
//! period), `runq.total_ns`, `cpu_ns_per_interval`, and `duration_ns` (or the
//! intervals' `wall_ns`).
//!
//! Produces a [`Throttling`] (serializable, for the JSON report) with the
//! effective parallelism (CPU time / wall time), the runnable threads per
//! interval, throttled periods and time, a per-thread estimate of the
//! throttled time, and a finding with a fix: the case of a program that
//! sizes its thread pool by the host's CPUs inside a small quota, whose
//! threads burn each period's quota in a few ms and then all wait the rest
//! of the period out (Documentation/scheduler/sched-bwc.rst).

use std::fmt::Write as _;

use serde::Serialize;

use crate::analyze::fix::{Fix, fix_for};
use crate::model::bandwidth::BandwidthTrace;
use crate::model::cgroup::{CgroupLimit, CgroupVersion, CpuStatDelta};
use crate::model::runtime::RuntimeFacts;
use crate::model::{ThreadTrace, Trace};

/// How [`ThreadThrottling::throttled_share_ns`] is computed.
pub const METHOD: &str =
    "estimate: throttled_time split by each thread's preempted-wait share (sched_switch)";

/// The finding when no quota applies.
pub const NO_LIMIT: &str = "no CPU quota on the cgroup path";

/// One thread's runnable-but-not-running time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadThrottling {
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Runnable but not running (ns): preempted wait + wakeup-to-run wait.
    pub runnable_wait_ns: u64,
    /// Of which runnable after preemption (ns).
    pub preempted_wait_ns: u64,
    /// Estimated share of the cgroup's throttled time (ns): `throttled_ns`
    /// times this thread's share of all preempted wait, capped at its own
    /// preempted wait; `None` without throttling counters. See [`METHOD`].
    pub throttled_share_ns: Option<u64>,
    /// Time held off the run queue by throttling (ns), measured by the
    /// kernel events (`throttle_cfs_rq_work` to `tg_unthrottle_up`); `None`
    /// where they did not run.
    pub throttled_ns: Option<u64>,
    /// Times it was held.
    pub throttle_holds: Option<u32>,
}

/// The enforcement periods of the limiting cgroup, from the kernel's
/// throttle path (nearest-rank percentiles over the throttled periods).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeriodSummary {
    /// How the programs were attached ("fentry" or "kprobe").
    pub attach: String,
    /// Complete periods seen.
    pub periods: u64,
    /// Of which throttled.
    pub throttled_periods: u64,
    /// Periods lost before they were read.
    pub lost_periods: u64,
    /// When the quota ran out, ms into the period (first throttle of the
    /// group on any CPU), p50.
    pub quota_exhausted_at_ms_p50: Option<f64>,
    /// The same, p90.
    pub quota_exhausted_at_ms_p90: Option<f64>,
    /// Wall time throttled per throttled period (first throttle to last
    /// unthrottle), ms, p50.
    pub throttled_ms_p50: Option<f64>,
    /// Throttled time summed over CPUs per throttled period, ms, p50.
    pub throttled_cpu_ms_p50: Option<f64>,
    /// CPUs running a task of the group when the quota ran out, p50.
    pub running_threads_at_exhaustion_p50: Option<u32>,
    /// Tasks of the group queued (running or runnable) then, p50.
    pub queued_threads_at_exhaustion_p50: Option<u32>,
    /// A few throttled periods whose quota ran out nearest the p50, in
    /// time order: the strips of the text report (`analyze::periods`).
    pub typical: Vec<crate::analyze::periods::TypicalPeriod>,
}

/// Throttling of the traced threads under their cgroup's CPU quota.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Throttling {
    /// A quota applies on the target's cgroup path.
    pub limited: bool,
    /// The cgroup whose quota binds.
    pub cgroup: Option<String>,
    /// Its hierarchy version ("v1"/"v2").
    pub version: Option<CgroupVersion>,
    /// The quota in CPUs (quota / period).
    pub quota_cores: Option<f64>,
    /// CPU time per period (us).
    pub quota_us: Option<u64>,
    /// Period length (us).
    pub period_us: Option<u64>,
    /// Periods in the trace window.
    pub nr_periods: Option<u64>,
    /// Throttled periods in the trace window.
    pub nr_throttled: Option<u64>,
    /// Throttled time in the window, summed over CPUs (ns).
    pub throttled_ns: Option<u64>,
    /// `nr_throttled / nr_periods` over the window (0..=1).
    pub throttled_ratio: Option<f64>,
    /// `throttled_ns / wall`: seconds of run-queue time held back per
    /// second (summed over CPUs, so it can exceed 1).
    pub throttled_per_second: Option<f64>,
    /// Share of the window in which some task of the target's cgroup waited
    /// for a CPU (v2 PSI `cpu.pressure` some).
    pub pressure_some_ratio: Option<f64>,
    /// Wall-clock length of the window (ns).
    pub wall_ns: u64,
    /// On-CPU time of the selected threads (ns).
    pub cpu_time_ns: u64,
    /// CPU time / wall time: the CPUs the process actually used.
    pub effective_parallelism: f64,
    /// (CPU time + preempted wait) / wall time: the CPUs it would have used.
    pub demand_cores: f64,
    /// Selected threads that ran at all in the window.
    pub threads_ran: u32,
    /// Median over the trace's intervals of the number of selected threads
    /// with on-CPU time > 0 in the interval (nearest rank: the lower middle
    /// for an even count of intervals). A thread runnable all interval that
    /// never got a CPU is not counted: the trace keeps waits per window,
    /// not per interval. With no per-interval data: `threads_ran`.
    pub runnable_threads_p50: u32,
    /// Threads that fit the quota: max(1, floor(quota_cores)).
    pub recommended_threads: Option<u32>,
    /// The quota that would have met the demand: min(ceil(demand_cores),
    /// threads_ran), and at least floor(quota_cores) + 1.
    pub raise_limit_to_cores: Option<u32>,
    /// How per-thread throttled time is attributed.
    pub method: String,
    /// One sentence with the numbers and the fix.
    pub finding: String,
    /// Per-period figures from the kernel events; `None` where they did
    /// not run (the cpu.stat estimate stands alone).
    pub periods: Option<PeriodSummary>,
    /// Threads that are demand: on a CPU or waiting for one for at least
    /// 5% of the window (a runtime's idle monitor thread is not).
    pub busy_threads: u32,
    /// The knob that sizes the program's threads, and its value
    /// (`recommended_threads`); with a quota only.
    pub fix: Option<Fix>,
    /// The fix's predicted effect (`analyze::predict`), with the kernel
    /// events' throttled time where they ran; with a quota only.
    pub prediction: Option<crate::analyze::predict::Prediction>,
    /// Per selected thread, in trace order (by tid).
    pub threads: Vec<ThreadThrottling>,
    /// Burst, pressure full, the node and the cause (`analyze::limit`);
    /// its keys sit in `throttling` itself.
    #[serde(flatten)]
    pub limit: crate::analyze::limit::LimitFacts,
}

impl Throttling {
    /// Nothing for the text report to say: no quota, or the quota never
    /// throttled during the window.
    pub fn is_quiet(&self) -> bool {
        !self.limited || self.nr_throttled == Some(0)
    }
}

/// Wall-clock length of the trace: its duration, else the intervals' sum.
fn wall_ns(trace: &Trace) -> u64 {
    if trace.duration_ns > 0 {
        trace.duration_ns
    } else {
        trace.intervals.iter().map(|i| i.wall_ns).sum()
    }
}

/// See [`Throttling::runnable_threads_p50`].
fn runnable_threads_p50(threads: &[&ThreadTrace], n_intervals: usize, ran: u32) -> u32 {
    let n = threads
        .iter()
        .map(|t| t.cpu_ns_per_interval.len())
        .max()
        .unwrap_or(0)
        .max(n_intervals);
    if n == 0 {
        return ran;
    }
    // A thread with under 5% of the busiest one's CPU time in the interval
    // did not run for the program (a runtime's monitor thread waking).
    let mut counts: Vec<u32> = (0..n)
        .map(|i| {
            let at = |t: &&&ThreadTrace| t.cpu_ns_per_interval.get(i).copied().unwrap_or(0);
            let top = threads.iter().map(|t| at(&t)).max().unwrap_or(0);
            threads
                .iter()
                .filter(|t| at(t) > 0 && at(t) * 20 >= top)
                .count() as u32
        })
        .collect();
    counts.sort_unstable();
    counts[(n - 1) / 2]
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// `a * b / c` without overflow, `c > 0`.
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

/// How throttling is measured when the kernel events ran, `attach` being
/// "fentry" or "kprobe".
pub fn kernel_method(attach: &str, per_thread: bool) -> String {
    if attach == "sched_switch" {
        return "kernel events (sched_switch): a target thread leaving its CPU with \
                task->throttled set (task-based throttling) starts its hold and, first in a \
                period, marks the quota running out; the hold ends at the refill \
                (cfs_bandwidth.period_timer expiry) or its next switch-in"
            .to_string();
    }
    if per_thread {
        format!(
            "kernel events ({attach}): periods from sched_cfs_period_timer, throttle_cfs_rq and \
             unthrottle_cfs_rq; per-thread throttled_ns from throttle_cfs_rq_work to \
             tg_unthrottle_up"
        )
    } else {
        format!(
            "kernel events ({attach}) per period; per thread: {METHOD} (no task-based throttling \
             on this kernel)"
        )
    }
}

/// Nearest-rank percentile `q` (0..=1) of `v` (sorted here).
fn percentile<T: Copy + Ord>(v: &mut [T], q: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// [`PeriodSummary`] of the recorded periods.
pub fn summarize_periods(bw: &BandwidthTrace) -> PeriodSummary {
    let throttled: Vec<_> = bw
        .periods
        .iter()
        .filter(|p| p.exhausted_after_ns.is_some())
        .collect();
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut at: Vec<u64> = throttled
        .iter()
        .filter_map(|p| p.exhausted_after_ns)
        .collect();
    let mut wall: Vec<u64> = throttled.iter().map(|p| p.throttled_wall_ns).collect();
    let mut cpu: Vec<u64> = throttled.iter().map(|p| p.throttled_cpu_ns).collect();
    let mut running: Vec<u32> = throttled.iter().map(|p| p.running_at_exhaustion).collect();
    let mut queued: Vec<u32> = throttled.iter().map(|p| p.queued_at_exhaustion).collect();
    PeriodSummary {
        attach: bw.attach.clone(),
        periods: bw.periods.len() as u64,
        throttled_periods: throttled.len() as u64,
        lost_periods: bw.lost_periods,
        quota_exhausted_at_ms_p50: percentile(&mut at, 0.5).map(ms),
        quota_exhausted_at_ms_p90: percentile(&mut at, 0.9).map(ms),
        throttled_ms_p50: percentile(&mut wall, 0.5).map(ms),
        throttled_cpu_ms_p50: percentile(&mut cpu, 0.5).map(ms),
        running_threads_at_exhaustion_p50: percentile(&mut running, 0.5),
        queued_threads_at_exhaustion_p50: percentile(&mut queued, 0.5),
        typical: Vec::new(),
    }
}

/// Analyzes throttling of `trace`'s selected threads under `limit`, with
/// the counters of `window` (the delta over the trace window, if read).
/// A window without a limit is ignored: with no quota nothing throttles.
pub fn analyze(
    trace: &Trace,
    limit: Option<&CgroupLimit>,
    window: Option<&CpuStatDelta>,
) -> Throttling {
    analyze_with(trace, limit, window, None, None)
}

/// [`analyze`], with the kernel's own throttle events `bw` where they ran:
/// per-period figures and measured per-thread throttled time.
pub fn analyze_with(
    trace: &Trace,
    limit: Option<&CgroupLimit>,
    window: Option<&CpuStatDelta>,
    bw: Option<&BandwidthTrace>,
    runtime: Option<&RuntimeFacts>,
) -> Throttling {
    let (bw, window) = (limit.and(bw), limit.and(window));
    let threads: Vec<&ThreadTrace> = trace.selected_threads().collect();
    let mut out = measured(trace, &threads, limit, window, bw);
    if let Some(limit) = limit {
        advise(&mut out, trace, &threads, limit, runtime, bw);
        whole_limit(&mut out, trace, limit, window, bw);
    }
    out
}

/// What was measured of `threads` under `limit`: the demand, the cpu.stat
/// counters of `window`, the kernel's periods, one row per thread; the
/// advice is not set yet (the finding says there is no limit).
fn measured(
    trace: &Trace,
    threads: &[&ThreadTrace],
    limit: Option<&CgroupLimit>,
    window: Option<&CpuStatDelta>,
    bw: Option<&BandwidthTrace>,
) -> Throttling {
    let wall = wall_ns(trace);
    let cpu: u64 = threads.iter().map(|t| t.cpu_time_ns).sum();
    let preempted: u64 = threads.iter().map(|t| t.preempted_wait_ns).sum();
    let ran = threads.iter().filter(|t| t.cpu_time_ns > 0).count() as u32;
    // Busy: on or waiting for a CPU for 5% of the window, and on it for
    // at least a tenth of what the busiest thread ran. Not a runtime's
    // monitor thread, nor a parent that mostly waits for its workers: a
    // stress-ng parent ran 22 ms of a 3 s window and was once held 75 ms
    // by a throttle it woke into, so the wait alone made it "busy".
    let top = threads.iter().map(|t| t.cpu_time_ns).max().unwrap_or(0);
    let busy = threads
        .iter()
        .filter(|t| {
            t.cpu_time_ns > 0
                && t.cpu_time_ns * 10 >= top
                && t.cpu_time_ns.saturating_add(t.preempted_wait_ns) * 20 >= wall
        })
        .count() as u32;
    let throttled_ns = window.map(|w| w.throttled_ns);
    Throttling {
        limited: limit.is_some(),
        cgroup: limit.map(|l| l.cgroup.clone()),
        version: limit.map(|l| l.version),
        quota_cores: limit.map(CgroupLimit::quota_cores),
        quota_us: limit.map(|l| l.quota.quota_us),
        period_us: limit.map(|l| l.quota.period_us),
        nr_periods: window.map(|w| w.nr_periods),
        nr_throttled: window.map(|w| w.nr_throttled),
        throttled_ns,
        throttled_ratio: window.and_then(CpuStatDelta::throttled_ratio),
        throttled_per_second: throttled_ns.filter(|_| wall > 0).map(|t| ratio(t, wall)),
        pressure_some_ratio: window
            .and_then(|w| w.pressure_some_ns)
            .filter(|_| wall > 0)
            .map(|p| ratio(p, wall)),
        wall_ns: wall,
        cpu_time_ns: cpu,
        effective_parallelism: ratio(cpu, wall),
        demand_cores: ratio(cpu.saturating_add(preempted), wall),
        threads_ran: ran,
        runnable_threads_p50: runnable_threads_p50(threads, trace.intervals.len(), ran),
        recommended_threads: None,
        raise_limit_to_cores: None,
        method: match bw {
            Some(b) => kernel_method(&b.attach, b.per_thread),
            None => METHOD.to_string(),
        },
        finding: NO_LIMIT.to_string(),
        periods: bw.map(summarize_periods),
        busy_threads: busy,
        fix: None,
        prediction: None,
        threads: thread_rows(threads, throttled_ns, preempted, bw),
        limit: Default::default(),
    }
}

/// One row per thread: its waits, its share of cpu.stat's `throttled_ns`
/// (by preempted wait, the estimate), and its held time from the kernel
/// events where they measured it.
fn thread_rows(
    threads: &[&ThreadTrace],
    throttled_ns: Option<u64>,
    preempted: u64,
    bw: Option<&BandwidthTrace>,
) -> Vec<ThreadThrottling> {
    let held = |tid: u32| {
        bw.filter(|b| b.per_thread).map(|b| {
            b.threads
                .iter()
                .find(|h| h.tid == tid)
                .map_or((0, 0), |h| (h.held_ns, h.holds))
        })
    };
    threads
        .iter()
        .map(|t| ThreadThrottling {
            tid: t.tid,
            comm: t.comm.clone(),
            runnable_wait_ns: t.preempted_wait_ns.saturating_add(t.runq.total_ns),
            preempted_wait_ns: t.preempted_wait_ns,
            throttled_share_ns: throttled_ns.map(|th| {
                if preempted == 0 {
                    0
                } else {
                    mul_div(th, t.preempted_wait_ns, preempted).min(t.preempted_wait_ns)
                }
            }),
            throttled_ns: held(t.tid).map(|h| h.0),
            throttle_holds: held(t.tid).map(|h| h.1),
        })
        .collect()
}

/// The advice under a quota: the threads that fit it, the limit that
/// would fit the demand (never above the CPUs the target may use), the
/// fix for the program's runtime, the finding and the predicted effect.
fn advise(
    out: &mut Throttling,
    trace: &Trace,
    threads: &[&ThreadTrace],
    limit: &CgroupLimit,
    runtime: Option<&RuntimeFacts>,
    bw: Option<&BandwidthTrace>,
) {
    let q = limit.quota;
    // Integer floor: 200000/100000 is exactly 2, whatever f64 says.
    let whole = u32::try_from(q.quota_us / q.period_us.max(1)).unwrap_or(u32::MAX);
    let fit = whole.max(1);
    // Idle threads (a runtime's monitor) are not demand: the cap is the
    // busy threads where some are busy. Never more than the node has.
    let cap = if out.busy_threads > 0 {
        out.busy_threads
    } else {
        out.threads_ran
    };
    let mut raise = (out.demand_cores.ceil() as u32)
        .min(cap)
        .max(1)
        .max(whole.saturating_add(1));
    // The CPUs the target may use bound it too (its cgroup's cpuset, its
    // own affinity within it): a limit above them cannot be used.
    let cpus = runtime
        .and_then(|r| r.allowed_cpus)
        .into_iter()
        .chain(crate::analyze::limit::cpus_allowed(trace, limit))
        .min();
    if let Some(c) = cpus {
        raise = raise.min(c);
    }
    out.recommended_threads = Some(fit);
    out.raise_limit_to_cores = Some(raise);
    out.fix = Some(fix_for(runtime, &main_comm(trace), fit));
    let how = match runtime {
        Some(_) => out.fix.as_ref().map(|f| format!("e.g. {}", f.how)),
        None => None,
    };
    out.finding = finding(out, trace, fit, raise, how);
    out.prediction = crate::analyze::predict::predict(&crate::analyze::predict::Input {
        cpu_ns: &threads.iter().map(|t| t.cpu_time_ns).collect::<Vec<_>>(),
        quota_us: q.quota_us,
        period_us: q.period_us,
        cpus: cpus.unwrap_or(fit),
        wall_ns: out.wall_ns,
        throttled_wall_ns: bw.map(|b| b.periods.iter().map(|p| p.throttled_wall_ns).sum()),
        threads: fit,
        limit_cores: raise,
    });
}

/// The limit beyond the quota ([`crate::analyze::limit`]) and the typical
/// periods ([`crate::analyze::periods`]).
fn whole_limit(
    out: &mut Throttling,
    trace: &Trace,
    limit: &CgroupLimit,
    window: Option<&CpuStatDelta>,
    bw: Option<&BandwidthTrace>,
) {
    let measured = bw.is_some_and(|b| b.per_thread);
    let held: Option<u64> = if measured {
        out.threads.iter().map(|t| t.throttled_ns).sum()
    } else {
        out.threads.iter().map(|t| t.throttled_share_ns).sum()
    };
    let held = held.filter(|_| out.nr_throttled != Some(0));
    out.limit = crate::analyze::limit::facts(trace, limit, window, out.wall_ns, held, measured);
    if let (Some(p), Some(b)) = (out.periods.as_mut(), bw) {
        let period_ns = limit.quota.period_us.saturating_mul(1000);
        let quota_ns = limit.quota.quota_us.saturating_mul(1000);
        p.typical = crate::analyze::periods::typical(
            b,
            period_ns,
            quota_ns,
            crate::analyze::periods::TYPICAL,
        );
    }
}

/// "0.5", "2", "1.25".
fn cores(c: f64) -> String {
    let s = format!("{c:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn cpus(c: f64) -> &'static str {
    if c <= 1.0 { "CPU" } else { "CPUs" }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// How to set the thread count of the traced program, judged by the name
/// of its main thread.
fn main_comm(trace: &Trace) -> String {
    trace
        .threads
        .iter()
        .find(|t| t.tid == t.tgid)
        .or_else(|| trace.selected_threads().next())
        .map(|t| t.comm.clone())
        .unwrap_or_default()
}

fn knob(trace: &Trace, n: u32) -> String {
    match main_comm(trace).as_str() {
        "ffmpeg" | "ffprobe" => format!("e.g. ffmpeg -threads {n}"),
        "java" => format!("e.g. java -XX:ActiveProcessorCount={n}"),
        "x264" | "x265" => format!("e.g. --threads {n}"),
        "make" => format!("e.g. make -j{n}"),
        _ => format!("e.g. -threads {n}, OMP_NUM_THREADS={n} or GOMAXPROCS={n}"),
    }
}

fn finding(t: &Throttling, trace: &Trace, fit: u32, raise: u32, how: Option<String>) -> String {
    let qc = t.quota_cores.unwrap_or(0.0);
    let quota = format!("quota {} {}", cores(qc), cpus(qc));
    let ran = format!(
        "{} thread{} ran per interval",
        t.runnable_threads_p50,
        plural(t.runnable_threads_p50)
    );
    let fix = if t.runnable_threads_p50 > fit {
        format!(
            "run it with {fit} thread{} ({}) or raise the limit to {raise} CPU{}",
            plural(fit),
            how.unwrap_or_else(|| knob(trace, fit)),
            plural(raise)
        )
    } else {
        format!("raise the limit to {raise} CPU{}", plural(raise))
    };
    match (t.nr_periods, t.nr_throttled) {
        (Some(periods), Some(0)) => {
            format!("{quota}, {ran}, not throttled during the trace (0 of {periods} periods)")
        }
        (Some(_), Some(_)) => format!(
            "{quota}, {ran}, throttled in {:.0}% of periods, {:.2} s lost per second: {fix}",
            t.throttled_ratio.unwrap_or(0.0) * 100.0,
            t.throttled_per_second.unwrap_or(0.0),
        ),
        _ if f64::from(t.runnable_threads_p50) > qc => format!(
            "{quota}, {ran}, more than the quota can run (throttling counters not read): {fix}"
        ),
        _ => format!("{quota}, {ran} (throttling counters not read)"),
    }
}

fn secs(ns: u64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

/// A few lines for the text report.
pub fn render_text(t: &Throttling) -> String {
    let mut s = String::new();
    if !t.limited {
        let _ = writeln!(s, "CPU quota: none ({NO_LIMIT})");
        return s;
    }
    let qc = t.quota_cores.unwrap_or(0.0);
    let _ = writeln!(
        s,
        "CPU quota: {} {} ({} us per {} us period) on {} (cgroup {})",
        cores(qc),
        cpus(qc),
        t.quota_us.unwrap_or(0),
        t.period_us.unwrap_or(0),
        t.cgroup.as_deref().unwrap_or("?"),
        t.version.map(|v| v.to_string()).unwrap_or_default(),
    );
    match (t.nr_periods, t.nr_throttled, t.throttled_ns) {
        (Some(p), Some(n), Some(ns)) => {
            let _ = write!(
                s,
                "  throttled in {n} of {p} periods ({:.0}%), {} throttled ({:.2} s per second, \
                 summed over CPUs)",
                t.throttled_ratio.unwrap_or(0.0) * 100.0,
                secs(ns),
                t.throttled_per_second.unwrap_or(0.0)
            );
            if let Some(p) = t.pressure_some_ratio {
                let _ = write!(s, "; cpu.pressure some {:.0}%", p * 100.0);
            }
            if let Some(p) = t.limit.pressure_full_ratio {
                let _ = write!(s, ", full {:.0}%", p * 100.0);
            }
            let _ = writeln!(s);
        }
        _ => {
            let _ = writeln!(s, "  throttling counters not read");
        }
    }
    let _ = writeln!(
        s,
        "  effective parallelism {:.2} CPUs, demand {:.2} CPUs, {} threads ran per interval (p50)",
        t.effective_parallelism, t.demand_cores, t.runnable_threads_p50
    );
    let mut top: Vec<&ThreadThrottling> = t
        .threads
        .iter()
        .filter(|th| th.runnable_wait_ns > 0)
        .collect();
    top.sort_by_key(|th| std::cmp::Reverse(th.runnable_wait_ns));
    if !top.is_empty() {
        let list: Vec<String> = top
            .iter()
            .take(3)
            .map(|th| {
                let share = th
                    .throttled_share_ns
                    .map(|ns| format!(", ~{} throttled", secs(ns)))
                    .unwrap_or_default();
                format!(
                    "{} {} {} waiting{share}",
                    th.tid,
                    th.comm,
                    secs(th.runnable_wait_ns)
                )
            })
            .collect();
        let _ = writeln!(s, "  most held back: {} ({METHOD})", list.join("; "));
    }
    let _ = writeln!(s, "  finding: {}", t.finding);
    s.push_str(&limit_text(t));
    s
}

/// The burst, the periods' strips and the cause, under the finding.
fn limit_text(t: &Throttling) -> String {
    let mut s = String::new();
    let l = &t.limit;
    if let Some(b) = l.burst_us.filter(|&b| b > 0) {
        let _ = writeln!(
            s,
            "  burst {b} us allowed, {} us used in {} periods",
            l.burst_used_us.unwrap_or(0),
            l.nr_bursts.unwrap_or(0)
        );
    }
    if let Some(p) = &t.periods {
        s.push_str(&crate::analyze::periods::render_text(&p.typical));
    }
    if let Some(c) = &l.cause_text {
        let _ = writeln!(s, "  cause: {c}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cgroup::CpuQuota;
    use crate::model::{Interval, RunqLatency};
    use std::path::PathBuf;

    const SEC: u64 = 1_000_000_000;

    fn limit(quota_us: u64) -> CgroupLimit {
        CgroupLimit {
            version: CgroupVersion::V2,
            cgroup: "/kubepods.slice/pod".into(),
            dir: PathBuf::from("/sys/fs/cgroup/kubepods.slice/pod"),
            quota: CpuQuota {
                quota_us,
                period_us: 100_000,
            },
            target_cgroup: "/kubepods.slice/pod/ctr".into(),
            target_dir: PathBuf::from("/sys/fs/cgroup/kubepods.slice/pod/ctr"),
            pressure_dir: None,
            burst_us: None,
            cpuset_cpus: None,
        }
    }

    /// ffmpeg under a 0.5-CPU quota on a 20-CPU host: 20 threads, 10
    /// intervals of 1 s; 17 threads run in every interval, 3 only in the
    /// first two; together they get 0.5 CPU and wait out the rest.
    fn ffmpeg() -> Trace {
        let threads = (0..20u32)
            .map(|i| {
                let busy = i < 17;
                let per: Vec<u64> = (0..10)
                    .map(|k| match (busy, k) {
                        (true, _) => 25_000_000,
                        (false, 0 | 1) => 10_000_000,
                        _ => 0,
                    })
                    .collect();
                ThreadTrace {
                    tid: 1000 + i,
                    tgid: 1000,
                    comm: "ffmpeg".into(),
                    cpu_time_ns: per.iter().sum(),
                    preempted_wait_ns: if busy { 9 * SEC } else { SEC },
                    runq: RunqLatency {
                        total_ns: 100_000_000,
                        ..Default::default()
                    },
                    cpu_ns_per_interval: per,
                    ..Default::default()
                }
            })
            .collect();
        Trace {
            pids: vec![1000],
            duration_ns: 10 * SEC,
            interval_ns: SEC,
            threads,
            intervals: vec![
                Interval {
                    wall_ns: SEC,
                    ..Default::default()
                };
                10
            ],
            nr_cpus: 20,
            ..Default::default()
        }
    }

    fn window(nr_periods: u64, nr_throttled: u64, throttled_ns: u64) -> CpuStatDelta {
        CpuStatDelta {
            nr_periods,
            nr_throttled,
            throttled_ns,
            ..Default::default()
        }
    }

    #[test]
    fn ffmpeg_under_half_a_cpu_gets_the_full_finding() {
        let trace = ffmpeg();
        let w = window(100, 92, 7_400_000_000);
        let t = analyze(&trace, Some(&limit(50_000)), Some(&w));
        assert!(t.limited);
        assert!(!t.is_quiet());
        assert_eq!(t.quota_cores, Some(0.5));
        assert_eq!(t.runnable_threads_p50, 17);
        assert_eq!(t.threads_ran, 20);
        assert_eq!(t.recommended_threads, Some(1));
        // cpu = 17 * 0.25 s + 3 * 0.02 s = 4.31 s over 10 s.
        assert!((t.effective_parallelism - 0.431).abs() < 1e-9);
        // demand = (4.31 + 17 * 9 + 3 * 1) / 10 = 16.031 -> 17 CPUs.
        assert_eq!(t.raise_limit_to_cores, Some(17));
        assert_eq!(t.throttled_ratio, Some(0.92));
        assert_eq!(
            t.finding,
            "quota 0.5 CPU, 17 threads ran per interval, throttled in 92% of periods, \
             0.74 s lost per second: run it with 1 thread (e.g. ffmpeg -threads 1) or raise \
             the limit to 17 CPUs"
        );
        assert_eq!(t.method, METHOD);
    }

    #[test]
    fn a_parent_that_waits_for_its_workers_is_not_busy() {
        // As a stress-ng run read: two workers ran 0.72 s each of a 3 s
        // window; the parent ran 22 ms and was held once for 127 ms.
        let t = |tid, cpu, wait| ThreadTrace {
            tid,
            tgid: tid,
            comm: "stress-ng".into(),
            cpu_time_ns: cpu,
            preempted_wait_ns: wait,
            ..Default::default()
        };
        let trace = Trace {
            pids: vec![1],
            duration_ns: 3 * SEC,
            interval_ns: SEC,
            threads: vec![
                t(1, 22_000_000, 128_000_000),
                t(2, 720_000_000, 2_100_000_000),
                t(3, 700_000_000, 2_200_000_000),
            ],
            nr_cpus: 2,
            ..Default::default()
        };
        let w = window(30, 29, 4_300_000_000);
        let out = analyze(&trace, Some(&limit(50_000)), Some(&w));
        assert_eq!(out.threads_ran, 3);
        assert_eq!(out.busy_threads, 2);
    }

    #[test]
    fn throttled_time_is_split_by_preempted_wait_share() {
        let trace = ffmpeg();
        let w = window(100, 92, 7_800_000_000);
        let t = analyze(&trace, Some(&limit(50_000)), Some(&w));
        // Total preempted wait 156 s: a busy thread holds 9/156 of it.
        let busy = &t.threads[0];
        assert_eq!(busy.runnable_wait_ns, 9 * SEC + 100_000_000);
        assert_eq!(busy.throttled_share_ns, Some(450_000_000));
        assert_eq!(t.threads[19].throttled_share_ns, Some(50_000_000));
        let sum: u64 = t.threads.iter().filter_map(|x| x.throttled_share_ns).sum();
        assert_eq!(sum, 7_800_000_000);
    }

    #[test]
    fn share_is_capped_at_the_threads_own_wait() {
        // Other processes in the cgroup: more throttled time than our wait.
        let trace = ffmpeg();
        let w = window(100, 92, 1_000 * SEC);
        let t = analyze(&trace, Some(&limit(50_000)), Some(&w));
        assert!(
            t.threads
                .iter()
                .all(|x| x.throttled_share_ns == Some(x.preempted_wait_ns))
        );
    }

    #[test]
    fn json_has_the_documented_keys() {
        let trace = ffmpeg();
        let w = window(100, 92, 7_400_000_000);
        for t in [
            analyze(&trace, Some(&limit(50_000)), Some(&w)),
            analyze(&trace, None, None),
        ] {
            let v = serde_json::to_value(&t).expect("serialize");
            for k in [
                "cgroup",
                "version",
                "quota_cores",
                "period_us",
                "nr_periods",
                "nr_throttled",
                "throttled_ns",
                "throttled_ratio",
                "runnable_threads_p50",
                "recommended_threads",
                "method",
                "finding",
                "threads",
                "limited",
            ] {
                assert!(v.get(k).is_some(), "missing {k}");
            }
            for k in ["tid", "comm", "runnable_wait_ns", "throttled_share_ns"] {
                assert!(v["threads"][0].get(k).is_some(), "missing threads[].{k}");
            }
        }
        let v = serde_json::to_value(analyze(&trace, Some(&limit(50_000)), Some(&w)))
            .expect("serialize");
        assert_eq!(v["version"], "v2");
        assert_eq!(v["quota_cores"], 0.5);
    }

    #[test]
    fn no_limit_is_quiet_and_says_so() {
        let t = analyze(&ffmpeg(), None, Some(&window(100, 92, SEC)));
        assert!(!t.limited);
        assert!(t.is_quiet());
        assert_eq!(t.finding, NO_LIMIT);
        assert_eq!(t.nr_throttled, None, "a window without a limit is ignored");
        assert_eq!(t.recommended_threads, None);
        assert!(t.threads.iter().all(|x| x.throttled_share_ns.is_none()));
        assert_eq!(render_text(&t).lines().count(), 1);
    }

    #[test]
    fn a_quota_that_never_throttled_is_quiet() {
        let t = analyze(&ffmpeg(), Some(&limit(2_000_000)), Some(&window(100, 0, 0)));
        assert!(t.limited);
        assert!(t.is_quiet());
        assert_eq!(
            t.finding,
            "quota 20 CPUs, 17 threads ran per interval, not throttled during the trace \
             (0 of 100 periods)"
        );
    }

    #[test]
    fn without_counters_the_finding_still_compares_threads_to_quota() {
        let t = analyze(&ffmpeg(), Some(&limit(150_000)), None);
        assert!(!t.is_quiet());
        assert_eq!(t.recommended_threads, Some(1));
        assert_eq!(t.throttled_share_ns_sum(), None);
        assert!(
            t.finding
                .starts_with("quota 1.5 CPUs, 17 threads ran per interval, more than the quota"),
            "{}",
            t.finding
        );
        assert!(t.finding.contains("counters not read"));
    }

    #[test]
    fn a_single_thread_is_told_to_raise_the_limit_only() {
        let mut trace = ffmpeg();
        trace.threads.truncate(1);
        let t = analyze(&trace, Some(&limit(50_000)), Some(&window(100, 50, SEC)));
        assert_eq!(t.runnable_threads_p50, 1);
        // Demand (0.25 + 9) / 10 rounds up to 1 CPU, capped by 1 thread.
        assert_eq!(t.raise_limit_to_cores, Some(1));
        assert!(
            t.finding.ends_with(": raise the limit to 1 CPU"),
            "{}",
            t.finding
        );
    }

    #[test]
    fn raise_figure_is_never_at_or_below_the_quota() {
        let mut trace = ffmpeg();
        trace.threads.truncate(2);
        // Demand ~1.9 CPUs against a 2-CPU quota that still throttled.
        let t = analyze(&trace, Some(&limit(200_000)), Some(&window(100, 5, SEC)));
        assert_eq!(t.raise_limit_to_cores, Some(3));
        assert_eq!(t.recommended_threads, Some(2));
    }

    #[test]
    fn raise_never_exceeds_the_cpus_the_cgroup_may_use() {
        // Demand of 17 CPUs: capped at the cgroup's cpuset of 4, else at
        // the 20 online CPUs, and on a 2-CPU node at 2.
        let w = window(100, 92, 7_400_000_000);
        let mut l = limit(50_000);
        l.cpuset_cpus = Some(vec![0, 1, 2, 3]);
        let t = analyze(&ffmpeg(), Some(&l), Some(&w));
        assert_eq!(t.raise_limit_to_cores, Some(4));
        assert_eq!(t.limit.cpus_allowed, Some(4));
        assert!(
            t.finding.ends_with("raise the limit to 4 CPUs"),
            "{}",
            t.finding
        );
        let t = analyze(&ffmpeg(), Some(&limit(50_000)), Some(&w));
        assert_eq!(t.raise_limit_to_cores, Some(17));
        let mut two = ffmpeg();
        two.nr_cpus = 2;
        let t = analyze(&two, Some(&limit(50_000)), Some(&w));
        assert_eq!(t.raise_limit_to_cores, Some(2));
    }

    #[test]
    fn p50_counts_threads_with_cpu_time_per_interval() {
        let th = |per: Vec<u64>| ThreadTrace {
            cpu_time_ns: per.iter().sum(),
            cpu_ns_per_interval: per,
            ..Default::default()
        };
        let a = th(vec![1, 1, 1, 1]);
        let b = th(vec![1, 0, 1, 0]);
        let c = th(vec![0, 0, 1]);
        let all = [&a, &b, &c];
        // Counts per interval: 2, 1, 3, 1 -> sorted 1, 1, 2, 3 -> lower middle 1.
        assert_eq!(runnable_threads_p50(&all, 4, 3), 1);
        // 2, 1, 2, 1 -> lower middle 1.
        assert_eq!(runnable_threads_p50(&[&a, &b], 0, 2), 1);
        assert_eq!(runnable_threads_p50(&[], 0, 0), 0);
        let none = th(vec![]);
        assert_eq!(runnable_threads_p50(&[&none], 0, 7), 7);
    }

    #[test]
    fn render_text_names_quota_throttling_and_finding() {
        let w = CpuStatDelta {
            pressure_some_ns: Some(8 * SEC),
            ..window(100, 92, 7_400_000_000)
        };
        let t = analyze(&ffmpeg(), Some(&limit(50_000)), Some(&w));
        let s = render_text(&t);
        assert!(s.starts_with(
            "CPU quota: 0.5 CPU (50000 us per 100000 us period) on /kubepods.slice/pod (cgroup v2)"
        ));
        assert!(
            s.contains("throttled in 92 of 100 periods (92%), 7.40 s throttled"),
            "{s}"
        );
        assert!(s.contains("cpu.pressure some 80%"), "{s}");
        assert!(s.contains("17 threads ran per interval (p50)"), "{s}");
        assert!(
            s.contains("most held back: 1000 ffmpeg 9.10 s waiting"),
            "{s}"
        );
        assert!(s.contains("finding: quota 0.5 CPU"), "{s}");
        assert!(s.lines().count() <= 6, "{s}");
    }

    #[test]
    fn empty_trace_does_not_divide_by_zero() {
        let t = analyze(
            &Trace::default(),
            Some(&limit(50_000)),
            Some(&window(0, 0, 0)),
        );
        assert_eq!(t.effective_parallelism, 0.0);
        assert_eq!(t.throttled_ratio, None);
        assert_eq!(t.throttled_per_second, None);
        assert!(t.is_quiet());
    }

    impl Throttling {
        fn throttled_share_ns_sum(&self) -> Option<u64> {
            self.threads.iter().map(|x| x.throttled_share_ns).sum()
        }
    }
}
