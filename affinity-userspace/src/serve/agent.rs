//! The agent's interval: refresh the traced cgroups, read the kernel's
//! per-thread counters, each cgroup's `cpu.stat` and its kernel
//! running-threads histogram, fold them into the per-cgroup counters, recompute the findings, and publish a
//! [`Snapshot`] and the `/findings` document.
//!
//! Order inside one interval, chosen so that no process is unmarked while
//! it may still be in a traced cgroup: the processes the programs marked
//! (`JOINED`) are read first, then every traced cgroup's `cgroup.procs`,
//! then the thread entries; only then are processes that neither scan nor
//! the programs place in a traced cgroup unmarked.

use std::collections::{BTreeMap, HashMap};

use affinity_common::ThreadStats;
use serde::Serialize;

use crate::analyze::classify::Thresholds;
use crate::host::cgroup::{CpuStat, read_pressure, read_stat_at};
use crate::host::procs;
use crate::host::root::Root;
use crate::kernel::probe::{Probe, monotonic_ns};
use crate::model::cgroup::CgroupVersion;
use crate::serve::aggregate::{Aggregator, CgroupKey};
use crate::serve::findings::{self, CgroupFindings, CgroupInfo, Sample, Window};
use crate::serve::metrics::{AgentRow, CgroupRow, Snapshot, running_buckets, runq_buckets};
use crate::serve::targets::Targets;

/// One cgroup in `/findings`.
#[derive(Clone, Debug, Serialize)]
pub struct CgroupReport {
    pub cgroup: String,
    pub labels: BTreeMap<&'static str, String>,
    #[serde(flatten)]
    pub findings: CgroupFindings,
}

/// The `/findings` document.
#[derive(Clone, Debug, Serialize)]
pub struct FindingsDoc {
    pub schema_version: u32,
    pub interval_s: f64,
    /// Cgroups with a quota left out by `--max-cgroups`.
    pub left_out_cgroups: usize,
    /// Cgroups with at least one finding first, then by path.
    pub cgroups: Vec<CgroupReport>,
}

/// Everything the interval loop keeps.
pub struct Agent {
    pub probe: Probe,
    pub targets: Targets,
    agg: Aggregator,
    windows: HashMap<CgroupKey, Window>,
    last_stat: HashMap<CgroupKey, CpuStat>,
    window_len: usize,
    interval_s: f64,
    version: CgroupVersion,
    thresholds: Thresholds,
    last_ns: u64,
    entries: Vec<(u32, ThreadStats)>,
    joined: Vec<(u32, u64)>,
    /// Online CPUs: the running-threads histogram's last finite bucket.
    cpus: usize,
    pub ticks: u64,
}

impl Agent {
    pub fn new(
        probe: Probe,
        targets: Targets,
        version: CgroupVersion,
        interval_s: f64,
        window_s: f64,
        cpus: usize,
    ) -> Self {
        Self {
            probe,
            targets,
            agg: Aggregator::default(),
            windows: HashMap::new(),
            last_stat: HashMap::new(),
            window_len: (window_s / interval_s).ceil().max(1.0) as usize,
            interval_s,
            version,
            thresholds: Thresholds::default(),
            last_ns: monotonic_ns(),
            entries: Vec::new(),
            joined: Vec::new(),
            cpus,
            ticks: 0,
        }
    }

    /// One interval; returns what `/metrics` and `/findings` show now.
    pub fn tick(&mut self) -> (Snapshot, FindingsDoc) {
        let now = monotonic_ns();
        let wall = now.saturating_sub(self.last_ns);
        self.last_ns = now;
        self.ticks += 1;
        let mut threads = self.read_threads();
        let mut rows = Vec::new();
        let mut reports = Vec::new();
        for (key, t) in &self.targets.tracked {
            let stat = read_stat_at(&t.dir).ok();
            let delta = match (self.last_stat.get(key), &stat) {
                (Some(a), Some(b)) => Some(CpuStat::delta(a, b)),
                _ => None,
            };
            let w = self
                .windows
                .entry(*key)
                .or_insert_with(|| Window::new(self.window_len));
            // The first interval of a cgroup has no cpu.stat growth yet.
            if self.last_stat.contains_key(key) {
                w.push(Sample {
                    wall_ns: wall,
                    stat: delta,
                    threads: threads.remove(key).unwrap_or_default(),
                });
            }
            if let Some(s) = &stat {
                self.last_stat.insert(*key, *s);
            }
            let info = CgroupInfo {
                cgroup: t.cgroup.clone(),
                dir: t.dir.clone(),
                version: self.version,
                quota: t.quota,
            };
            let f = findings::analyze(&info, w, &self.thresholds);
            rows.push(self.row(*key, t, stat.as_ref(), &f));
            reports.push(CgroupReport {
                cgroup: t.cgroup.clone(),
                labels: t.labels().into_iter().collect(),
                findings: f,
            });
        }
        reports.sort_by(|a, b| {
            (a.findings.findings.is_empty(), &a.cgroup)
                .cmp(&(b.findings.findings.is_empty(), &b.cgroup))
        });
        let snapshot = Snapshot {
            cgroups: rows,
            agent: self.agent_row(),
        };
        let doc = FindingsDoc {
            schema_version: 1,
            interval_s: self.interval_s,
            left_out_cgroups: self.targets.left_out,
            cgroups: reports,
        };
        (snapshot, doc)
    }

    /// Follows the traced set (cgroups come and go), reads every traced
    /// thread once and frees the kernel slots of exited ones; returns this
    /// interval's threads by cgroup.
    fn read_threads(&mut self) -> BTreeMap<CgroupKey, Vec<crate::serve::aggregate::ThreadDelta>> {
        self.probe.joined(&mut self.joined);
        let ch = self.targets.refresh(&mut self.probe);
        for k in &ch.removed {
            self.agg.untrack(*k);
            self.windows.remove(k);
            self.last_stat.remove(k);
        }
        for k in &ch.added {
            self.agg.track(*k);
        }
        self.probe.threads(&mut self.entries);
        let procs = &self.targets.procs;
        let joined: HashMap<u32, u64> = self.joined.iter().copied().collect();
        let read = self.agg.read(&self.entries, |tgid| {
            procs
                .get(&tgid)
                .copied()
                .or_else(|| joined.get(&tgid).copied())
        });
        if !read.forget.is_empty() {
            let mut cpus: Vec<(affinity_common::ThreadCpuKey, u64)> = Vec::new();
            self.probe.thread_cpu(&mut cpus);
            let mut by_tid: HashMap<u32, Vec<u32>> = HashMap::new();
            for (k, _) in &cpus {
                by_tid.entry(k.tid).or_default().push(k.cpu);
            }
            for tid in &read.forget {
                let c = by_tid.remove(tid).unwrap_or_default();
                self.probe.forget_thread(*tid, c.into_iter());
            }
        }
        self.targets.unmark_stale(&mut self.probe, &self.joined);
        read.threads
    }

    /// One cgroup's `/metrics` row: its cpu.stat `stat`, the kernel's
    /// counters of its threads, its finding `f`.
    fn row(
        &self,
        key: CgroupKey,
        t: &crate::serve::targets::Tracked,
        stat: Option<&CpuStat>,
        f: &CgroupFindings,
    ) -> CgroupRow {
        let c = self.agg.counters(key);
        CgroupRow {
            labels: t.labels(),
            quota_cores: t.quota.as_ref().map(|q| q.cores()),
            periods: stat.map(|s| s.nr_periods),
            throttled_periods: stat.map(|s| s.nr_throttled),
            throttled_seconds: stat.map(|s| s.throttled_ns as f64 / 1e9),
            // The kernel's count per throttled period, cumulative.
            running_threads: self
                .probe
                .bandwidth_group(key)
                .map(|g| running_buckets(&g.running, self.cpus)),
            recommended_threads: f.recommended_threads,
            cpu_seconds: c.map_or(0.0, |c| c.cpu_ns as f64 / 1e9),
            runnable_seconds: c.map_or(0.0, |c| c.runnable_ns as f64 / 1e9),
            migrations: c.map_or([0; 4], |c| c.migrations),
            runq: c.map_or_else(
                || runq_buckets(&[], 0),
                |c| runq_buckets(&c.runq_log2(), c.runq_sum_ns),
            ),
            pressure_some_seconds: t
                .pressure
                .as_deref()
                .and_then(read_pressure)
                .map(|p| p.some_total_us as f64 / 1e6),
        }
    }

    fn agent_row(&self) -> AgentRow {
        let root = Root::host();
        let me = std::process::id();
        let cpu = procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .map(|s| (s.utime + s.stime) as f64 / procfs::ticks_per_second() as f64)
            .unwrap_or(0.0);
        let stats_on = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
            .is_ok_and(|s| s.trim() == "1");
        AgentRow {
            events: self.agg.events(),
            dropped: self.probe.dropped(),
            tracked_threads: self.agg.tracked_threads() as u64,
            tracked_cgroups: self.targets.tracked.len() as u64,
            left_out: self.targets.left_out as u64,
            cpu_seconds: cpu,
            resident_bytes: procs::rss_bytes(&root, me),
            bpf_run_seconds: stats_on.then(|| {
                self.probe
                    .program_run_ns()
                    .into_iter()
                    .map(|(n, ns)| (n, ns as f64 / 1e9))
                    .collect()
            }),
        }
    }
}
