//! Contention: the targets waited runnable for CPUs other processes held.
//!
//! Inputs are the trace's wait split (running, runnable, sleeping per
//! thread, from kernel events) and the neighbours the programs charged
//! with the targets' waits (each wait goes to the process that gave the
//! CPU back). Out comes a finding that leads the report and advice that
//! addresses the cause (move the neighbour, give the target its own
//! cores) rather than shrink the target to what it got.

use serde::Serialize;

use crate::model::{Followed, PressureDelta, Trace, cpulist};

/// Runnable share of the targets' CPU demand at or above which waiting is
/// a finding: below it the waits are ordinary scheduling latency.
pub const WAIT_SHARE_FINDING: f64 = 0.2;
/// Runnable wait, in thread-seconds per second of the window (the mean
/// number of target threads waiting), below which waiting is no finding
/// however large its share of a tiny demand: a process asleep all window
/// that waited 1 ms at its start was not starved.
pub const WAIT_LOAD_FINDING: f64 = 0.05;
/// Neighbours reported, most wait first.
pub const TOP_NEIGHBOURS: usize = 5;

/// One process that held the CPUs the targets waited for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NeighbourShare {
    /// Its process id.
    pub tgid: u32,
    /// Its thread's name.
    pub comm: String,
    /// Its cgroup in the cpu controller's hierarchy ("" when unknown).
    pub cgroup: String,
    /// Target wait charged to it (ns).
    pub wait_ns: u64,
    /// Its share of the targets' whole runnable wait (0..=1).
    pub wait_share: f64,
}

/// CPU pressure (PSI) over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PressureJson {
    /// The machine's (/proc/pressure/cpu); null where the kernel has none.
    pub host: Option<PressureDelta>,
    /// The target cgroup's own `cpu.pressure` (v2); null on v1.
    pub cgroup: Option<PressureDelta>,
}

/// What the targets waited for and who had the CPUs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Contention {
    /// Target threads' time runnable, waiting for a CPU (ns).
    pub runnable_ns: u64,
    /// Their CPU demand, running + runnable (ns).
    pub demand_ns: u64,
    /// Their traced lifetime, summed over threads (ns).
    pub lifetime_ns: u64,
    /// `runnable_ns / demand_ns`.
    pub runnable_share: f64,
    /// The top neighbours by wait charged.
    pub neighbours: Vec<NeighbourShare>,
    /// Share of the wait charged to no neighbour (the CPU was idle when the
    /// wait ended, or another target thread held it).
    pub unattributed_share: f64,
    /// CPU pressure over the window.
    pub pressure: PressureJson,
    /// Processes started by the targets or that joined them.
    pub followed: Followed,
    /// The finding, when the targets waited enough to matter.
    pub finding: Option<String>,
    /// What to do about it.
    pub advice: Vec<String>,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The contention picture of `trace`. `recommended` is the CPU set the
/// recommendation chose (the neighbours' way out is the other CPUs).
pub fn assess(trace: &Trace, recommended: &[u32], online: &[u32]) -> Contention {
    let mut c = shares(trace);
    let load = c.runnable_ns as f64 / trace.duration_ns.max(1) as f64;
    if c.runnable_share < WAIT_SHARE_FINDING || load < WAIT_LOAD_FINDING || c.runnable_ns == 0 {
        return c;
    }
    let who = target_name(trace);
    let lifetime = if c.lifetime_ns > 0 {
        c.lifetime_ns
    } else {
        trace.duration_ns
    };
    let mut f = format!(
        "{who} waited {:.1} s of {:.1} s runnable ({:.0}% of its CPU demand)",
        secs(c.runnable_ns),
        secs(lifetime),
        c.runnable_share * 100.0
    );
    let top: Vec<&NeighbourShare> = c
        .neighbours
        .iter()
        .filter(|n| n.wait_share >= 0.05)
        .take(3)
        .collect();
    let advice = if top.is_empty() {
        f.push_str("; no other process held the CPUs when it got them back (its own threads did)");
        vec![format!(
            "{who}'s threads outnumber the CPUs they may use: give it more CPUs, or run fewer \
             threads"
        )]
    } else {
        let list: Vec<String> = top
            .iter()
            .map(|n| format!("{} pid {}, {:.0}%", n.comm, n.tgid, n.wait_share * 100.0))
            .collect();
        f.push_str(&format!("; the CPUs went to {}", list.join("; ")));
        neighbour_advice(&who, &top, recommended, online)
    };
    c.advice = advice;
    c.finding = Some(f);
    c
}

/// The target's runnable wait and how it splits over the neighbours that
/// held its CPUs (the finding and advice left empty).
fn shares(trace: &Trace) -> Contention {
    let totals = trace.totals();
    let runnable = totals.runnable_ns;
    let demand = totals.cpu_time_ns.saturating_add(runnable);
    let share = |ns: u64| {
        if runnable == 0 {
            0.0
        } else {
            ns as f64 / runnable as f64
        }
    };
    let mut neighbours: Vec<NeighbourShare> = trace
        .neighbours
        .iter()
        .map(|n| NeighbourShare {
            tgid: n.tgid,
            comm: n.comm.clone(),
            cgroup: n.cgroup.clone(),
            wait_ns: n.wait_ns,
            wait_share: share(n.wait_ns).min(1.0),
        })
        .collect();
    neighbours.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.tgid.cmp(&b.tgid)));
    let charged: u64 = neighbours.iter().map(|n| n.wait_ns).sum();
    neighbours.truncate(TOP_NEIGHBOURS);
    let runnable_share = if demand == 0 {
        0.0
    } else {
        runnable as f64 / demand as f64
    };
    Contention {
        runnable_ns: runnable,
        demand_ns: demand,
        lifetime_ns: totals.lifetime_ns,
        runnable_share,
        unattributed_share: (1.0 - share(charged)).max(0.0),
        neighbours,
        pressure: PressureJson {
            host: trace.pressure_host,
            cgroup: trace.pressure_cgroup,
        },
        followed: trace.followed,
        finding: None,
        advice: Vec::new(),
    }
}

/// What to do about the neighbours in `top`: move each off the target's
/// CPUs (or off the machine, when the target needs every CPU), or give
/// the target cores of its own.
fn neighbour_advice(
    who: &str,
    top: &[&NeighbourShare],
    recommended: &[u32],
    online: &[u32],
) -> Vec<String> {
    let others: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !recommended.contains(c))
        .collect();
    let mut advice: Vec<String> = top
        .iter()
        .map(|n| {
            let cg = if n.cgroup.is_empty() {
                String::new()
            } else {
                format!(", cgroup {}", n.cgroup)
            };
            if others.is_empty() {
                format!(
                    "move {} (pid {}{cg}) to another machine or lower its share \
                     (renice, cpu.weight/cpu.shares): every CPU is needed here",
                    n.comm, n.tgid
                )
            } else {
                format!(
                    "move {} (pid {}{cg}) off the target's CPUs: taskset -a -c -p {} {}",
                    n.comm,
                    n.tgid,
                    cpulist::format(&others),
                    n.tgid
                )
            }
        })
        .collect();
    if !recommended.is_empty() {
        advice.push(format!(
            "or give {who} its own cores: CPUs {} with the neighbours kept off them \
             (a cpuset); its size follows its demand, not the CPU time it got",
            cpulist::format(recommended)
        ));
    }
    advice
}

/// The name the finding gives the targets: the commonest thread name.
fn target_name(trace: &Trace) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in trace.selected_threads() {
        *counts.entry(t.comm.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(name, n)| (n, std::cmp::Reverse(name)))
        .map_or_else(|| "the target".to_string(), |(n, _)| n.to_string())
}

/// The followed/missed line of the report, when there is anything to say.
pub fn followed_line(f: &Followed) -> Option<String> {
    if f.followed == 0 && f.missed == 0 && f.joined == 0 && f.rescanned == 0 {
        return None;
    }
    let mut parts = Vec::new();
    if f.followed > 0 {
        parts.push(format!(
            "{} started by the targets, traced from their first instruction",
            f.followed
        ));
    }
    if f.joined > 0 {
        parts.push(format!(
            "{} joined the cgroup, traced from then on",
            f.joined
        ));
    }
    if f.rescanned > 0 {
        parts.push(format!(
            "{} found by name during the window, traced from the interval they were found in",
            f.rescanned
        ));
    }
    if f.missed > 0 {
        parts.push(format!(
            "{} started by the targets and NOT traced (add --follow)",
            f.missed
        ));
    }
    Some(format!("processes: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NeighbourTrace, ThreadTrace};

    const S: u64 = 1_000_000_000;

    fn starved() -> Trace {
        Trace {
            pids: vec![10],
            duration_ns: 10 * S,
            threads: vec![ThreadTrace {
                tid: 10,
                tgid: 10,
                comm: "workers".into(),
                cpu_time_ns: 2 * S,
                runnable_ns: 8 * S,
                lifetime_ns: 10 * S,
                ..ThreadTrace::default()
            }],
            neighbours: vec![
                NeighbourTrace {
                    tgid: 4321,
                    comm: "stress-ng".into(),
                    cgroup: "/hogs".into(),
                    wait_ns: 5_680_000_000,
                    waits: 100,
                },
                NeighbourTrace {
                    tgid: 99,
                    comm: "kworker".into(),
                    cgroup: String::new(),
                    wait_ns: 100_000_000,
                    waits: 3,
                },
            ],
            ..Trace::default()
        }
    }

    #[test]
    fn a_starved_target_gets_a_finding_naming_the_neighbour() {
        let c = assess(&starved(), &[1], &[0, 1]);
        let f = c.finding.unwrap();
        assert_eq!(
            f,
            "workers waited 8.0 s of 10.0 s runnable (80% of its CPU demand); the CPUs went \
             to stress-ng pid 4321, 71%"
        );
        assert!((c.neighbours[0].wait_share - 0.71).abs() < 1e-9);
        assert_eq!(c.neighbours.len(), 2);
        assert!((c.unattributed_share - 0.2775).abs() < 1e-9);
        assert!(
            c.advice[0].contains("taskset -a -c -p 0 4321"),
            "{:?}",
            c.advice
        );
        assert!(c.advice[0].contains("cgroup /hogs"), "{:?}", c.advice);
        assert!(c.advice.last().unwrap().contains("own cores: CPUs 1"));
    }

    #[test]
    fn little_waiting_is_no_finding() {
        let mut t = starved();
        t.threads[0].runnable_ns = S / 10;
        t.threads[0].cpu_time_ns = 9 * S;
        let c = assess(&t, &[1], &[0, 1]);
        assert_eq!(c.finding, None);
        assert!(c.advice.is_empty());
    }

    #[test]
    fn a_short_wait_of_a_sleeping_target_is_no_finding() {
        // As `affin-trace -- sleep 0.5` read: 0.8 ms runnable of 2.6 ms
        // demand (31%) in a 0.5 s window, behind the tracer's own start-up.
        let mut t = starved();
        t.duration_ns = S / 2;
        t.threads[0].runnable_ns = 800_000;
        t.threads[0].cpu_time_ns = 1_800_000;
        t.threads[0].lifetime_ns = S / 2;
        let c = assess(&t, &[1], &[0, 1]);
        assert!(c.runnable_share > WAIT_SHARE_FINDING);
        assert_eq!(c.finding, None);
        assert!(c.advice.is_empty());
        // The same share at a tenth of the window waiting is one.
        t.threads[0].runnable_ns = S / 20;
        t.threads[0].cpu_time_ns = S / 10;
        assert!(assess(&t, &[1], &[0, 1]).finding.is_some());
    }

    #[test]
    fn followed_counts_are_said_never_silent() {
        assert_eq!(followed_line(&Followed::default()), None);
        let l = followed_line(&Followed {
            enabled: false,
            missed: 2,
            ..Followed::default()
        })
        .unwrap();
        assert!(l.contains("2 started by the targets and NOT traced"), "{l}");
        let l = followed_line(&Followed {
            enabled: true,
            followed: 3,
            ..Followed::default()
        })
        .unwrap();
        assert!(l.contains("3 started by the targets, traced"), "{l}");
    }
}
