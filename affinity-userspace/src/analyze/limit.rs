//! The whole limit around a throttled target: the burst its quota allows
//! and what of it was used, CPU pressure some and full, whether the node
//! itself was full, the CPUs the cgroup may use, and which of three causes
//! held the target back: its quota, a neighbour, or a full node. Pure:
//! reads the [`Trace`] (wait split, neighbours charged with the waits,
//! /proc/stat busy time per CPU), the [`CgroupLimit`] and its
//! [`CpuStatDelta`] over the window.
//!
//! The cause compares the time the target's threads were held by
//! throttling against the rest of their wait for a CPU: the quota when
//! throttling held them at least as long; otherwise a full node when
//! every CPU was busy (moving work between CPUs would not help), else a
//! neighbour when processes the waits were charged to account for most
//! of that wait (analyze::contention names them), else the quota (the
//! target's own threads outnumber what it may run).

use serde::Serialize;

use crate::model::Trace;
use crate::model::cgroup::{CgroupLimit, CpuStatDelta};

/// Busy share of every CPU at or above which the node counts as full.
pub const NODE_FULL: f64 = 0.95;

/// What held a throttled target back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Its CPU quota.
    Quota,
    /// Other processes on its CPUs.
    Neighbour,
    /// Every CPU of the machine was busy.
    Node,
}

/// The limit's facts beyond the quota (JSON: flattened into `throttling`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LimitFacts {
    /// Burst of the binding cgroup (us); `None` where the kernel has none.
    pub burst_us: Option<u64>,
    /// Run time taken from burst in the window (us).
    pub burst_used_us: Option<u64>,
    /// Periods that ran on burst in the window.
    pub nr_bursts: Option<u64>,
    /// Share of the window in which every runnable task of the target's
    /// cgroup waited for a CPU (PSI `cpu.pressure` full).
    pub pressure_full_ratio: Option<f64>,
    /// CPUs the cgroup may run on (its effective cpuset, else the online
    /// CPUs): the ceiling of `raise_limit_to_cores`.
    pub cpus_allowed: Option<u32>,
    /// Busy share of the node's CPUs over the window (/proc/stat, all
    /// processes, the target's included).
    pub node_busy_ratio: Option<f64>,
    /// Every CPU was busy ([`NODE_FULL`]).
    pub node_saturated: Option<bool>,
    /// The machine's CPU pressure some over the window (/proc/pressure/cpu).
    pub node_pressure_some_ratio: Option<f64>,
    /// The target's threads held by throttling, summed (ns): measured by
    /// the kernel events, else the cpu.stat estimate.
    pub held_ns: Option<u64>,
    /// Their other wait for a CPU, summed (ns).
    pub other_wait_ns: Option<u64>,
    /// Of which charged to neighbours (ns).
    pub neighbour_wait_ns: Option<u64>,
    /// Which it is: "quota", "neighbour" or "node"; `None` when the quota
    /// did not throttle.
    pub cause: Option<Cause>,
    /// The cause in a sentence, for the text report.
    pub cause_text: Option<String>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The CPUs the cgroup may use: its cpuset, else the trace's online CPUs.
pub fn cpus_allowed(trace: &Trace, limit: &CgroupLimit) -> Option<u32> {
    match &limit.cpuset_cpus {
        Some(c) if !c.is_empty() => Some(c.len() as u32),
        _ => (trace.nr_cpus > 0).then_some(trace.nr_cpus),
    }
}

/// Busy share of the node over `wall_ns`: every CPU's busy time from
/// /proc/stat over CPUs x wall; `None` without the per-CPU figures.
pub fn node_busy(trace: &Trace, wall_ns: u64) -> Option<f64> {
    let n = (trace.system_busy_ns.len() as u64).max(u64::from(trace.nr_cpus));
    if trace.system_busy_ns.is_empty() || n == 0 {
        return None;
    }
    let busy: u64 = trace.system_busy_ns.values().sum();
    ratio(busy, n.saturating_mul(wall_ns)).map(|r| r.min(1.0))
}

/// The cause, from the held time, the other wait and who it went to.
pub fn cause(held_ns: u64, other_wait_ns: u64, neighbour_wait_ns: u64, node_full: bool) -> Cause {
    if held_ns >= other_wait_ns {
        Cause::Quota
    } else if node_full {
        Cause::Node
    } else if neighbour_wait_ns.saturating_mul(2) >= other_wait_ns {
        Cause::Neighbour
    } else {
        Cause::Quota
    }
}

fn secs(ns: u64) -> String {
    format!("{:.2} s", ns as f64 / 1e9)
}

/// The facts of the limit for a trace whose threads were held `held_ns`
/// (measured, or the estimate's sum; `measured`: the wait split already
/// counts it apart from the runnable wait).
pub fn facts(
    trace: &Trace,
    limit: &CgroupLimit,
    window: Option<&CpuStatDelta>,
    wall_ns: u64,
    held_ns: Option<u64>,
    measured: bool,
) -> LimitFacts {
    let totals = trace.totals();
    let busy = node_busy(trace, wall_ns);
    let saturated = busy.map(|b| b >= NODE_FULL);
    let mut f = LimitFacts {
        burst_us: limit.burst_us,
        burst_used_us: window.and_then(|w| w.burst_ns).map(|ns| ns / 1000),
        nr_bursts: window.and_then(|w| w.nr_bursts),
        pressure_full_ratio: window
            .and_then(|w| w.pressure_full_ns)
            .and_then(|p| ratio(p, wall_ns)),
        cpus_allowed: cpus_allowed(trace, limit),
        node_busy_ratio: busy,
        node_saturated: saturated,
        node_pressure_some_ratio: trace
            .pressure_host
            .and_then(|p| ratio(p.some_us.saturating_mul(1000), wall_ns)),
        ..LimitFacts::default()
    };
    let Some(held) = held_ns.filter(|&h| h > 0) else {
        return f;
    };
    // Without the kernel events the held time is inside runnable.
    let other = if measured {
        totals.runnable_ns
    } else {
        totals.runnable_ns.saturating_sub(held)
    };
    let neighbours: u64 = trace.neighbours.iter().map(|n| n.wait_ns).sum();
    let neighbours = neighbours.min(other);
    let c = cause(held, other, neighbours, saturated == Some(true));
    let text = match c {
        Cause::Quota => format!(
            "the quota: throttling held the threads {} against {} of other waiting for a CPU",
            secs(held),
            secs(other)
        ),
        Cause::Node => format!(
            "a full node: its CPUs were {:.0}% busy; the threads waited {} for a CPU, more than \
             the {} throttling held them",
            busy.unwrap_or(0.0) * 100.0,
            secs(other),
            secs(held)
        ),
        Cause::Neighbour => {
            let top = trace
                .neighbours
                .iter()
                .max_by_key(|n| n.wait_ns)
                .map(|n| format!(" (most: {} pid {})", n.comm, n.tgid))
                .unwrap_or_default();
            format!(
                "a neighbour: other processes held the CPUs {}{top}, more than the {} \
                 throttling held the threads",
                secs(neighbours),
                secs(held)
            )
        }
    };
    f.held_ns = Some(held);
    f.other_wait_ns = Some(other);
    f.neighbour_wait_ns = Some(neighbours);
    f.cause = Some(c);
    f.cause_text = Some(text);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cgroup::{CgroupVersion, CpuQuota};
    use crate::model::{NeighbourTrace, PressureDelta, ThreadTrace};

    const SEC: u64 = 1_000_000_000;

    fn limit(cpuset: Option<Vec<u32>>) -> CgroupLimit {
        CgroupLimit {
            version: CgroupVersion::V1,
            cgroup: "/t".into(),
            dir: "/sys/fs/cgroup/cpu/t".into(),
            quota: CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            },
            target_cgroup: "/t".into(),
            target_dir: "/sys/fs/cgroup/cpu/t".into(),
            pressure_dir: None,
            burst_us: Some(20_000),
            cpuset_cpus: cpuset,
        }
    }

    /// Two threads over 10 s, each runnable `runnable` s; the machine's
    /// two CPUs `busy` busy.
    fn trace(runnable: u64, busy: f64, neighbour: u64) -> Trace {
        let th = |tid| ThreadTrace {
            tid,
            tgid: 1,
            cpu_time_ns: 2 * SEC,
            runnable_ns: runnable * SEC,
            lifetime_ns: 10 * SEC,
            ..ThreadTrace::default()
        };
        Trace {
            duration_ns: 10 * SEC,
            nr_cpus: 2,
            threads: vec![th(1), th(2)],
            system_busy_ns: (0..2)
                .map(|c| (c, (busy * 10.0 * SEC as f64) as u64))
                .collect(),
            neighbours: vec![NeighbourTrace {
                tgid: 77,
                comm: "make".into(),
                wait_ns: neighbour * SEC,
                ..NeighbourTrace::default()
            }],
            pressure_host: Some(PressureDelta {
                some_us: 3_000_000,
                full_us: None,
            }),
            ..Trace::default()
        }
    }

    #[test]
    fn held_longer_than_the_other_wait_is_the_quota() {
        let w = CpuStatDelta {
            burst_ns: Some(40_000_000),
            nr_bursts: Some(4),
            pressure_full_ns: Some(5 * SEC),
            ..CpuStatDelta::default()
        };
        let f = facts(
            &trace(1, 0.6, 1),
            &limit(None),
            Some(&w),
            10 * SEC,
            Some(8 * SEC),
            true,
        );
        assert_eq!(f.cause, Some(Cause::Quota));
        assert_eq!((f.held_ns, f.other_wait_ns), (Some(8 * SEC), Some(2 * SEC)));
        assert_eq!(f.burst_us, Some(20_000));
        assert_eq!(f.burst_used_us, Some(40_000));
        assert_eq!(f.nr_bursts, Some(4));
        assert_eq!(f.pressure_full_ratio, Some(0.5));
        assert_eq!(f.node_pressure_some_ratio, Some(0.3));
        assert_eq!(f.node_saturated, Some(false));
        assert!((f.node_busy_ratio.unwrap() - 0.6).abs() < 1e-9);
        let v = serde_json::to_value(&f).expect("json");
        assert!(
            f.cause_text
                .unwrap()
                .starts_with("the quota: throttling held")
        );
        assert_eq!(v["cause"], "quota");
    }

    #[test]
    fn more_wait_on_a_full_node_is_the_node() {
        let f = facts(
            &trace(5, 0.99, 9),
            &limit(None),
            None,
            10 * SEC,
            Some(2 * SEC),
            true,
        );
        assert_eq!(f.cause, Some(Cause::Node));
        assert_eq!(f.node_saturated, Some(true));
        assert!(
            f.cause_text
                .unwrap()
                .starts_with("a full node: its CPUs were 99% busy")
        );
    }

    #[test]
    fn more_wait_charged_to_neighbours_on_a_free_node_is_a_neighbour() {
        let f = facts(
            &trace(5, 0.7, 8),
            &limit(None),
            None,
            10 * SEC,
            Some(2 * SEC),
            true,
        );
        assert_eq!(f.cause, Some(Cause::Neighbour));
        assert_eq!(f.neighbour_wait_ns, Some(8 * SEC));
        let text = f.cause_text.unwrap();
        assert!(text.contains("(most: make pid 77)"), "{text}");
        // The wait nobody else took is the target's own: the quota still.
        let f = facts(
            &trace(5, 0.7, 1),
            &limit(None),
            None,
            10 * SEC,
            Some(2 * SEC),
            true,
        );
        assert_eq!(f.cause, Some(Cause::Quota));
    }

    #[test]
    fn the_estimate_takes_the_held_time_out_of_runnable() {
        // Runnable 10 s of which 6 s estimated held: 4 s other wait.
        let f = facts(
            &trace(5, 0.99, 4),
            &limit(None),
            None,
            10 * SEC,
            Some(6 * SEC),
            false,
        );
        assert_eq!(f.other_wait_ns, Some(4 * SEC));
        assert_eq!(f.cause, Some(Cause::Quota));
        let quiet = facts(
            &trace(5, 0.99, 4),
            &limit(None),
            None,
            10 * SEC,
            Some(0),
            false,
        );
        assert_eq!(quiet.cause, None);
    }

    #[test]
    fn cpus_allowed_is_the_cpuset_else_the_online_cpus() {
        let t = trace(1, 0.5, 0);
        assert_eq!(cpus_allowed(&t, &limit(Some(vec![1]))), Some(1));
        assert_eq!(cpus_allowed(&t, &limit(None)), Some(2));
        assert_eq!(cpus_allowed(&Trace::default(), &limit(None)), None);
        assert_eq!(node_busy(&Trace::default(), SEC), None);
    }
}
