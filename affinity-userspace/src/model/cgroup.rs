//! Cgroup value types: the hierarchy version, CFS quotas, the limit in
//! force on a process, and snapshots and deltas of the bandwidth counters.
//! `host::cgroup` reads them; `analyze::throttle` and the report use them.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// Which cgroup hierarchy version a path belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// A CFS bandwidth quota: `quota_us` of CPU time per `period_us` of wall
/// time, summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuQuota {
    /// CPU time granted per period (us).
    pub quota_us: u64,
    /// Period length (us).
    pub period_us: u64,
}

impl CpuQuota {
    /// The quota in CPUs (`quota / period`).
    pub fn cores(&self) -> f64 {
        if self.period_us == 0 {
            return 0.0;
        }
        self.quota_us as f64 / self.period_us as f64
    }

    /// Grants fewer CPUs than `other` (exact, by cross-multiplying).
    pub fn is_tighter_than(&self, other: &Self) -> bool {
        u128::from(self.quota_us) * u128::from(other.period_us)
            < u128::from(other.quota_us) * u128::from(self.period_us)
    }
}

/// One cgroup on the path from the target up to the mount root.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupLevel {
    /// Path inside the hierarchy, as `/proc/<pid>/cgroup` names it ("/" = root).
    pub cgroup: String,
    /// Its directory (under the root-path seam).
    pub dir: PathBuf,
    /// Its own quota; `None` when unlimited (`-1`, `max`) or when the cpu
    /// controller is not enabled there (v2: no `cpu.max`).
    pub quota: Option<CpuQuota>,
}

/// The quota in force on a process: the tightest on its cgroup path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CgroupLimit {
    /// Hierarchy version.
    pub version: CgroupVersion,
    /// The cgroup whose quota binds (the target's own or an ancestor's).
    pub cgroup: String,
    /// Its directory: `cpu.stat` there counts the throttling.
    pub dir: PathBuf,
    /// The binding quota.
    pub quota: CpuQuota,
    /// The target's own cgroup in the same hierarchy.
    pub target_cgroup: String,
    /// Its directory: `cpu.stat.local` there (Linux 6.8+) counts the time
    /// the target's cgroup was throttled, by itself or by an ancestor.
    pub target_dir: PathBuf,
    /// Directory whose `cpu.pressure` describes the target (its v2 cgroup,
    /// when that is not the hierarchy root).
    pub pressure_dir: Option<PathBuf>,
    /// Burst of the binding cgroup (us of unused quota it may carry into
    /// a later period: v2 `cpu.max.burst`, v1 `cpu.cfs_burst_us`); `None`
    /// where the kernel has no burst (before 5.14), `Some(0)` when unset.
    pub burst_us: Option<u64>,
    /// CPUs the target's cgroup may run on (`cpuset.cpus.effective`, v1
    /// `cpuset.effective_cpus`); `None` where no cpuset file was readable.
    pub cpuset_cpus: Option<Vec<u32>>,
}

impl CgroupLimit {
    /// The quota in CPUs.
    pub fn quota_cores(&self) -> f64 {
        self.quota.cores()
    }
}

/// Where a process sits in the hierarchy that carries the cpu controller.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuCgroup {
    /// The process.
    pub pid: u32,
    /// Hierarchy version (v2 also when no hierarchy has the cpu controller).
    pub version: CgroupVersion,
    /// Its cgroup path in that hierarchy.
    pub cgroup: String,
    /// From the target's cgroup up to the mount root, target first.
    pub levels: Vec<CgroupLevel>,
    /// The tightest quota on the path, if any.
    pub limit: Option<CgroupLimit>,
    /// Directory whose `cpu.pressure` describes the target, if any.
    pub pressure_dir: Option<PathBuf>,
    /// What could not be seen (ancestors above a container's mount, no cpu
    /// controller), for the report.
    pub notes: Vec<String>,
}

impl CpuCgroup {
    /// The limit in force, if any.
    pub fn limit(&self) -> Option<&CgroupLimit> {
        self.limit.as_ref()
    }
}

/// CPU pressure (PSI) of one cgroup: share of time some (or all) of its
/// runnable tasks waited for a CPU. A throttled task is runnable but not
/// running, so throttling shows here (Documentation/accounting/psi.rst).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Pressure {
    /// `some avg10` (% of the last 10 s).
    pub some_avg10: f64,
    /// `some total` (us, cumulative).
    pub some_total_us: u64,
    /// `full avg10`, when the kernel reports a full line (5.13+ for cgroups).
    pub full_avg10: Option<f64>,
    /// `full total` (us, cumulative).
    pub full_total_us: Option<u64>,
}

/// One snapshot of a cgroup's bandwidth counters (cumulative since the
/// cgroup was created). Take one before and one after a trace and use
/// [`CpuStat::delta`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuStat {
    /// Enforcement periods that elapsed with runnable tasks.
    pub nr_periods: u64,
    /// Periods in which the cgroup ran out of quota.
    pub nr_throttled: u64,
    /// Time the cgroup's per-CPU run queues spent throttled, summed over
    /// CPUs (ns; v1 `throttled_time`, v2 `throttled_usec` x 1000).
    pub throttled_ns: u64,
    /// CPU time used by the cgroup (ns, v2 `usage_usec`; v1 keeps it in
    /// cpuacct, not read).
    pub usage_ns: Option<u64>,
    /// Time the target's own cgroup was throttled, by itself or an ancestor
    /// (ns, `cpu.stat.local`, Linux 6.8+).
    pub local_throttled_ns: Option<u64>,
    /// The target's CPU pressure, where readable.
    pub pressure: Option<Pressure>,
    /// Periods in which the cgroup ran on burst (quota carried over), where
    /// the kernel counts it (`nr_bursts`, 5.14+).
    pub nr_bursts: Option<u64>,
    /// Run time taken from burst (ns; v2 `burst_usec` x 1000, v1 `burst_time`).
    pub burst_ns: Option<u64>,
}

/// Throttling over a window: the difference of two [`CpuStat`] snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuStatDelta {
    /// Periods in the window.
    pub nr_periods: u64,
    /// Throttled periods in the window.
    pub nr_throttled: u64,
    /// Throttled time in the window (ns, summed over CPUs).
    pub throttled_ns: u64,
    /// CPU time the cgroup used in the window (ns, v2).
    pub usage_ns: Option<u64>,
    /// Throttled time of the target's own cgroup in the window (ns).
    pub local_throttled_ns: Option<u64>,
    /// Time some runnable task of the target's cgroup waited for a CPU (ns, PSI).
    pub pressure_some_ns: Option<u64>,
    /// Time all of them waited (ns, PSI).
    pub pressure_full_ns: Option<u64>,
    /// Periods that ran on burst in the window.
    pub nr_bursts: Option<u64>,
    /// Run time taken from burst in the window (ns).
    pub burst_ns: Option<u64>,
    /// A counter went backwards (the cgroup was removed and recreated):
    /// that counter's delta is 0 and the window's figures are incomplete.
    pub counters_reset: bool,
}

impl CpuStatDelta {
    /// Share of the window's periods that were throttled; `None` with no
    /// periods (the cgroup had no runnable tasks, or no quota).
    pub fn throttled_ratio(&self) -> Option<f64> {
        (self.nr_periods > 0).then(|| self.nr_throttled as f64 / self.nr_periods as f64)
    }
}

impl CpuStat {
    /// Counters accumulated between `before` and `after`.
    pub fn delta(before: &CpuStat, after: &CpuStat) -> CpuStatDelta {
        let mut reset = false;
        let mut sub = |a: u64, b: u64| {
            reset |= a < b;
            a.saturating_sub(b)
        };
        let nr_periods = sub(after.nr_periods, before.nr_periods);
        let nr_throttled = sub(after.nr_throttled, before.nr_throttled);
        let throttled_ns = sub(after.throttled_ns, before.throttled_ns);
        let mut opt = |a: Option<u64>, b: Option<u64>| Some(sub(a?, b?));
        let usage_ns = opt(after.usage_ns, before.usage_ns);
        let local_throttled_ns = opt(after.local_throttled_ns, before.local_throttled_ns);
        let nr_bursts = opt(after.nr_bursts, before.nr_bursts);
        let burst_ns = opt(after.burst_ns, before.burst_ns);
        let (pa, pb) = (after.pressure, before.pressure);
        let some_us = opt(pa.map(|p| p.some_total_us), pb.map(|p| p.some_total_us));
        let full_us = opt(
            pa.and_then(|p| p.full_total_us),
            pb.and_then(|p| p.full_total_us),
        );
        CpuStatDelta {
            nr_periods,
            nr_throttled,
            throttled_ns,
            usage_ns,
            local_throttled_ns,
            pressure_some_ns: some_us.map(|u| u.saturating_mul(1000)),
            pressure_full_ns: full_us.map(|u| u.saturating_mul(1000)),
            nr_bursts,
            burst_ns,
            counters_reset: reset,
        }
    }
}
