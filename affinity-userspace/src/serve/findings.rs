//! The agent's findings per cgroup, over a sliding window of its last
//! intervals, in the one-shot report's shapes.
//!
//! Each interval leaves, per traced cgroup, its wall time, the growth of
//! its `cpu.stat` counters and the [`ThreadDelta`]s of its threads. Over
//! the window (the last [`Window::len`] intervals) these become a small
//! [`Trace`] and a [`CpuStatDelta`], and [`crate::analyze::throttle`] does
//! what it does for a one-shot trace: threads run per interval against the
//! quota, throttled periods, and the fix. A cgroup is *throttled and
//! over-threaded* when it was throttled in the window and ran more threads
//! per interval than its quota fits; its recommended thread count is what
//! the fix says (the quota's whole CPUs), and 0 for every other cgroup (no
//! change to make). Two more kinds are reported without a fix of their
//! own, pointing at the one-shot trace that has one: *CPU-starved*
//! (runnable more than it ran, not throttled; the neighbours are not
//! attributed per cgroup here) and *migration-heavy* (more than the
//! classifier's migration rate per running thread).
//!
//! Pure: values in, values out.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::analyze::classify::Thresholds;
use crate::analyze::throttle::{self, Throttling};
use crate::model::cgroup::{CgroupLimit, CgroupVersion, CpuQuota, CpuStatDelta};
use crate::model::{ThreadTrace, Trace};
use crate::serve::aggregate::ThreadDelta;

/// One cgroup's interval.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub wall_ns: u64,
    /// Growth of `cpu.stat` (None: not read).
    pub stat: Option<CpuStatDelta>,
    pub threads: Vec<ThreadDelta>,
}

/// The last intervals of one cgroup.
#[derive(Clone, Debug, Default)]
pub struct Window {
    samples: VecDeque<Sample>,
    cap: usize,
}

impl Window {
    /// A window of `cap` intervals (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The window as a trace of the cgroup's threads (one entry per tid,
    /// `cpu_ns_per_interval` aligned on the window's intervals).
    pub fn trace(&self) -> Trace {
        let n = self.samples.len();
        let mut threads: BTreeMap<u32, ThreadTrace> = BTreeMap::new();
        for (i, s) in self.samples.iter().enumerate() {
            for d in &s.threads {
                let t = threads.entry(d.tid).or_insert_with(|| ThreadTrace {
                    tid: d.tid,
                    tgid: d.tgid,
                    comm: d.comm.clone(),
                    cpu_ns_per_interval: vec![0; n],
                    ..ThreadTrace::default()
                });
                t.cpu_time_ns += d.cpu_ns;
                t.preempted_wait_ns += d.preempted_ns;
                t.runq.total_ns += d.runq_ns;
                t.migrations.llc += d.migrations; // distance is in the metrics
                t.cpu_ns_per_interval[i] += d.cpu_ns;
            }
        }
        Trace {
            duration_ns: self.samples.iter().map(|s| s.wall_ns).sum(),
            threads: threads.into_values().collect(),
            ..Trace::default()
        }
    }

    /// The window's `cpu.stat` growth, when every interval read it.
    pub fn stat(&self) -> Option<CpuStatDelta> {
        let mut sum = CpuStatDelta::default();
        for s in &self.samples {
            let d = s.stat.as_ref()?;
            sum.nr_periods += d.nr_periods;
            sum.nr_throttled += d.nr_throttled;
            sum.throttled_ns += d.throttled_ns;
            sum.counters_reset |= d.counters_reset;
        }
        Some(sum)
    }
}

/// What is known of a cgroup besides its window.
#[derive(Clone, Debug)]
pub struct CgroupInfo {
    pub cgroup: String,
    pub dir: std::path::PathBuf,
    pub version: CgroupVersion,
    pub quota: Option<CpuQuota>,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `throttled_over_threaded`, `throttled`, `cpu_starved` or `migration_heavy`.
    pub kind: &'static str,
    /// One line, with the fix where there is one.
    pub finding: String,
}

/// A cgroup's findings over its window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupFindings {
    pub findings: Vec<Finding>,
    /// Threads to run (the fix), 0 when there is nothing to change.
    pub recommended_threads: u32,
    /// The throttling analysis, as the report's `throttling` key has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
    /// Runnable time over on-CPU plus runnable time in the window.
    pub runnable_share: f64,
    /// Migrations per second per thread that ran.
    pub migrations_per_thread_s: f64,
    /// Seconds the window covers.
    pub window_s: f64,
}

/// Runnable share above which a cgroup that was not throttled is starved.
pub const STARVED_SHARE: f64 = 0.5;

/// The findings of one cgroup.
pub fn analyze(info: &CgroupInfo, w: &Window, th: &Thresholds) -> CgroupFindings {
    let trace = w.trace();
    let wall = trace.duration_ns;
    let cpu: u64 = trace.threads.iter().map(|t| t.cpu_time_ns).sum();
    let runnable: u64 = trace
        .threads
        .iter()
        .map(|t| t.preempted_wait_ns + t.runq.total_ns)
        .sum();
    let ran = trace.threads.iter().filter(|t| t.cpu_time_ns > 0).count();
    let migs: u64 = trace.threads.iter().map(|t| t.migrations.llc).sum();
    let share = if cpu + runnable == 0 {
        0.0
    } else {
        runnable as f64 / (cpu + runnable) as f64
    };
    let mig_rate = if wall == 0 || ran == 0 {
        0.0
    } else {
        migs as f64 / (wall as f64 / 1e9) / ran as f64
    };
    let mut out = CgroupFindings {
        findings: Vec::new(),
        recommended_threads: 0,
        throttling: None,
        runnable_share: share,
        migrations_per_thread_s: mig_rate,
        window_s: wall as f64 / 1e9,
    };
    let stat = w.stat();
    let throttled = stat.as_ref().is_some_and(|s| s.nr_throttled > 0);
    if let Some(quota) = &info.quota {
        let limit = CgroupLimit {
            version: info.version,
            cgroup: info.cgroup.clone(),
            dir: info.dir.clone(),
            quota: *quota,
            target_cgroup: info.cgroup.clone(),
            target_dir: info.dir.clone(),
            pressure_dir: None,
            burst_us: None,
            cpuset_cpus: None,
        };
        let t = throttle::analyze(&trace, Some(&limit), stat.as_ref());
        let fit = t.recommended_threads.unwrap_or(0);
        if throttled && t.runnable_threads_p50 > fit {
            out.recommended_threads = fit;
            out.findings.push(Finding {
                kind: "throttled_over_threaded",
                finding: t.finding.clone(),
            });
        } else if throttled {
            out.findings.push(Finding {
                kind: "throttled",
                finding: t.finding.clone(),
            });
        }
        out.throttling = Some(t);
    }
    if !throttled && share > STARVED_SHARE && runnable > wall / 10 {
        out.findings.push(Finding {
            kind: "cpu_starved",
            finding: format!(
                "runnable {:.0}% of the time it wanted a CPU, not throttled: other work \
                 holds its CPUs; `affin-trace --cgroup {}` names the neighbours",
                share * 100.0,
                info.cgroup
            ),
        });
    }
    if mig_rate > th.migration_rate {
        out.findings.push(Finding {
            kind: "migration_heavy",
            finding: format!(
                "{mig_rate:.1} migrations/s per running thread (> {}): trace it with \
                 `affin-trace --cgroup {}` for a CPU set",
                th.migration_rate, info.cgroup
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(tid: u32, ms: u64) -> ThreadDelta {
        ThreadDelta {
            tid,
            tgid: 100,
            comm: "spin".into(),
            cpu_ns: ms * 1_000_000,
            preempted_ns: 800_000_000,
            ..ThreadDelta::default()
        }
    }

    fn info(quota_us: u64) -> CgroupInfo {
        CgroupInfo {
            cgroup: "/kubepods/burstable/podab/cd".into(),
            dir: "/sys/fs/cgroup/cpu/kubepods/burstable/podab/cd".into(),
            version: CgroupVersion::V1,
            quota: Some(CpuQuota {
                quota_us,
                period_us: 100_000,
            }),
        }
    }

    #[test]
    fn four_spinners_in_one_cpu_are_over_threaded_with_a_fix_of_one_thread() {
        let mut w = Window::new(3);
        for _ in 0..4 {
            w.push(Sample {
                wall_ns: 1_000_000_000,
                stat: Some(CpuStatDelta {
                    nr_periods: 10,
                    nr_throttled: 10,
                    throttled_ns: 3_000_000_000,
                    ..CpuStatDelta::default()
                }),
                threads: (1..=4).map(|t| spin(t, 250)).collect(),
            });
        }
        assert_eq!(w.len(), 3, "the window keeps its last intervals");
        let f = analyze(&info(100_000), &w, &Thresholds::default());
        assert_eq!(f.recommended_threads, 1);
        assert_eq!(f.findings[0].kind, "throttled_over_threaded");
        assert!(
            f.findings[0].finding.contains("run it with 1 thread"),
            "{:?}",
            f.findings
        );
        let t = f.throttling.as_ref().unwrap();
        assert_eq!(t.nr_throttled, Some(30));
        assert_eq!(t.runnable_threads_p50, 4);
    }

    #[test]
    fn an_idle_cgroup_has_nothing_to_change() {
        let mut w = Window::new(3);
        w.push(Sample {
            wall_ns: 1_000_000_000,
            stat: Some(CpuStatDelta {
                nr_periods: 0,
                ..CpuStatDelta::default()
            }),
            threads: Vec::new(),
        });
        let f = analyze(&info(50_000), &w, &Thresholds::default());
        assert_eq!(f.recommended_threads, 0);
        assert!(f.findings.is_empty(), "{:?}", f.findings);
    }
}
