//! What a trace produced, as plain values: the collector builds a [`Trace`],
//! every later step (features, classification, recommendation, report) reads
//! it. Nothing here touches the kernel, so recorded traces (JSON) serve as
//! test fixtures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Number of log2 run-queue latency buckets (same as the kernel side).
pub const RUNQ_BUCKETS: usize = affinity_common::RUNQ_BUCKETS;

/// Sum of counters that saturates at u64::MAX instead of overflowing: the
/// kernel's counters never get there, but a recorded trace read back may
/// hold anything (found by `cargo xtask fuzz`).
pub fn saturating_sum<'a>(values: impl IntoIterator<Item = &'a u64>) -> u64 {
    values.into_iter().fold(0, |a, &b| a.saturating_add(b))
}

/// Migrations split by how far the thread moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationsByClass {
    /// To the SMT sibling (same physical core).
    pub smt: u64,
    /// To another core sharing the last-level cache.
    pub llc: u64,
    /// To another last-level cache on the same NUMA node.
    pub cross_llc: u64,
    /// To another NUMA node.
    pub cross_numa: u64,
}

impl MigrationsByClass {
    /// From the kernel's `[smt, llc, cross_llc, cross_numa]` counters.
    pub fn from_array(a: [u64; 4]) -> Self {
        Self {
            smt: a[0],
            llc: a[1],
            cross_llc: a[2],
            cross_numa: a[3],
        }
    }

    /// All migrations.
    pub fn total(&self) -> u64 {
        self.smt
            .saturating_add(self.llc)
            .saturating_add(self.leaving_llc())
    }

    /// Migrations that left the last-level cache group.
    pub fn leaving_llc(&self) -> u64 {
        self.cross_llc.saturating_add(self.cross_numa)
    }

    /// Element-wise sum.
    pub fn add(&mut self, o: &Self) {
        self.smt = self.smt.saturating_add(o.smt);
        self.llc = self.llc.saturating_add(o.llc);
        self.cross_llc = self.cross_llc.saturating_add(o.cross_llc);
        self.cross_numa = self.cross_numa.saturating_add(o.cross_numa);
    }
}

/// Migrations from one CPU to another, over all the targets' threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MigrationPair {
    /// Source CPU.
    pub from: u32,
    /// Destination CPU.
    pub to: u32,
    /// Number of migrations.
    pub count: u64,
}

/// Wakeup-to-run latency: a log2 histogram plus exact count, sum and max.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunqLatency {
    /// Bucket `i` counts waits in `[2^i, 2^(i+1))` ns (last bucket: longer).
    pub hist: Vec<u64>,
    /// Number of waits.
    pub count: u64,
    /// Sum of waits (ns).
    pub total_ns: u64,
    /// Longest wait (ns).
    pub max_ns: u64,
}

impl RunqLatency {
    /// Adds another histogram (bucket by bucket).
    pub fn merge(&mut self, o: &Self) {
        if self.hist.len() < o.hist.len() {
            self.hist.resize(o.hist.len(), 0);
        }
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(o.count);
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// The `q` quantile (0..=1) in ns, interpolated linearly inside its log2
    /// bucket and clamped to the exact maximum; `None` with no samples.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = saturating_sum(&self.hist);
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen.saturating_add(c) >= rank {
                // Bucket i holds [2^i, 2^(i+1)) (bucket 0 also 0); in f64,
                // as a recorded histogram may have more than 64 buckets.
                let lo = if i == 0 { 0.0 } else { 2f64.powi(i as i32) };
                let hi = 2f64.powi(i as i32 + 1);
                let frac = (rank - seen) as f64 / c as f64;
                // `as u64` saturates.
                let v = (lo + frac * (hi - lo)) as u64;
                return Some(v.min(self.max_ns.max(lo as u64)));
            }
            seen = seen.saturating_add(c);
        }
        Some(self.max_ns)
    }
}

/// One thread over the whole trace window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadTrace {
    /// Thread id.
    pub tid: u32,
    /// Process (thread group) id.
    pub tgid: u32,
    /// Thread name (U+FFFD where the kernel's bytes are not UTF-8).
    pub comm: String,
    /// The name's raw bytes as hex, only when they are not valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_bytes: Option<String>,
    /// On-CPU time in the window (ns).
    pub cpu_time_ns: u64,
    /// On-CPU time per CPU (ns), keyed by CPU number.
    pub per_cpu_ns: BTreeMap<u32, u64>,
    /// Voluntary context switches (blocked: sleep, I/O, lock).
    pub voluntary_switches: u64,
    /// Involuntary context switches (preempted while runnable).
    pub involuntary_switches: u64,
    /// Migrations by distance class.
    pub migrations: MigrationsByClass,
    /// Wakeup-to-run latency.
    pub runq: RunqLatency,
    /// Time runnable after preemption, waiting for a CPU (ns): includes CFS
    /// bandwidth throttling.
    pub preempted_wait_ns: u64,
    /// The thread exited during the window.
    pub exited: bool,
    /// Time runnable and waiting for a CPU (ns): wakeup-to-run waits plus
    /// preempted waits, including the wait in progress at the end. With
    /// `cpu_time_ns` (running) and `sleep_ns`, the thread's traced lifetime.
    #[serde(default)]
    pub runnable_ns: u64,
    /// Voluntary off-CPU time (ns): from each switch-out in a sleeping
    /// state to its wakeup, including the sleep in progress at the end.
    #[serde(default)]
    pub sleep_ns: u64,
    /// The thread's traced lifetime in the window (ns): from its entry (the
    /// window's start, or its creation) to its exit or the window's end.
    /// 0 in traces recorded before the wait split.
    #[serde(default)]
    pub lifetime_ns: u64,
    /// Held by CFS bandwidth throttling (ns), from the kernel's events: off
    /// the run queue until the refill, so not in `runnable_ns`. 0 without
    /// a quota or without the events.
    #[serde(default)]
    pub throttled_ns: u64,
    /// The thread's last hold is not in `runnable_ns` yet (the kernel adds
    /// that wait to `run_delay` at its next switch-out): the join in
    /// `model::bandwidth` takes it out only once it is.
    #[serde(skip)]
    pub held_pending: bool,
    /// On-CPU ns in each interval of the window (index = interval number;
    /// intervals before the thread appeared are 0).
    pub cpu_ns_per_interval: Vec<u64>,
}

/// An untargeted process that held a CPU while target threads waited for
/// it (charged by the kernel when a target thread got the CPU back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourTrace {
    /// Its process id.
    pub tgid: u32,
    /// Its thread's name.
    pub comm: String,
    /// Its cgroup in the cpu controller's hierarchy, relative to that
    /// hierarchy's mount ("/system.slice/x"); empty when unknown.
    pub cgroup: String,
    /// Target wait charged to it (ns).
    pub wait_ns: u64,
    /// Waits charged to it.
    pub waits: u64,
}

/// Processes the targets started or that joined the target during the
/// window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Followed {
    /// Whether new processes of the targets were followed.
    pub enabled: bool,
    /// New processes traced from their first instruction.
    pub followed: u64,
    /// New processes of the targets not traced (no `--follow`).
    pub missed: u64,
    /// Processes that joined the `--cgroup` target, traced from then on.
    pub joined: u64,
    /// Processes found by the per-interval rescan (`--comm`), traced from
    /// the interval they were found in: their earlier time is not counted.
    pub rescanned: u64,
}

/// CPU pressure stall time over the window (PSI, µs), from a `cpu.pressure`
/// file: "some" (at least one task waited for a CPU) and "full".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressureDelta {
    /// `some total=` growth (µs).
    pub some_us: u64,
    /// `full total=` growth (µs), where the kernel reports it.
    pub full_us: Option<u64>,
}

/// One process-wide sample per interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Length of this interval (ns, wall clock).
    pub wall_ns: u64,
    /// On-CPU time of all target threads in this interval (ns).
    pub cpu_ns: u64,
    /// Migrations of all target threads in this interval.
    pub migrations: u64,
    /// Resident set size of the targets at the end of the interval (bytes).
    pub rss_bytes: u64,
    /// Context switches (voluntary + involuntary) of all target threads in
    /// this interval.
    #[serde(default)]
    pub switches: u64,
    /// Time target threads waited runnable in this interval (ns): preempted
    /// wait plus wakeup-to-run wait.
    #[serde(default)]
    pub runnable_ns: u64,
    /// CPUs the target threads ran on in this interval, sorted.
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// How long affin-trace took to read this interval's values from the
    /// kernel maps and /proc (ns): its own cost, not the targets'.
    #[serde(default)]
    pub read_ns: u64,
    /// CPU time affin-trace's thread spent on that read (ns): `read_ns`
    /// without the time other processes held the CPU.
    #[serde(default)]
    pub read_cpu_ns: u64,
}

/// How the programs were attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// BTF-typed tracepoints (preferred).
    #[default]
    TpBtf,
    /// Raw tracepoints (fallback).
    RawTp,
}

/// Everything one trace window produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Target processes (tgids).
    pub pids: Vec<u32>,
    /// Requested threads, when the target was given as `--tid` (empty: all).
    pub tids: Vec<u32>,
    /// Wall-clock length of the window (ns).
    pub duration_ns: u64,
    /// Interval between map reads (ns).
    pub interval_ns: u64,
    /// Per-thread results, sorted by tid.
    pub threads: Vec<ThreadTrace>,
    /// Per-interval process samples.
    pub intervals: Vec<Interval>,
    /// System-wide busy (non-idle) ns per CPU over the window, from
    /// /proc/stat: which CPUs the rest of the machine used.
    pub system_busy_ns: BTreeMap<u32, u64>,
    /// Hypervisor steal ns per CPU over the window, from /proc/stat (10 ms
    /// ticks): on a VM, time the host gave this machine's CPUs to others.
    /// A thread's `sum_exec_runtime` leaves out the steal of its slices.
    #[serde(default)]
    pub system_steal_ns: BTreeMap<u32, u64>,
    /// Migrations per (source, destination) CPU, over every thread of the
    /// targets (also with `--tid`), sorted by (from, to). Empty in traces
    /// recorded before the pair counts existed.
    #[serde(default)]
    pub migration_pairs: Vec<MigrationPair>,
    /// Events the kernel side could not record (maps full, failed reads).
    pub dropped_events: u64,
    /// Rare conditions the kernel side reported through its log (thread
    /// table full, a failed task_struct read, a switch-in without its
    /// switch-out). 0 in traces recorded before the log existed.
    #[serde(default)]
    pub kernel_warnings: u64,
    /// Targets that exited before the window ended.
    pub exited_pids: Vec<u32>,
    /// How the programs were attached.
    pub attach_mode: AttachMode,
    /// Number of online CPUs during the trace.
    pub nr_cpus: u32,
    /// MemTotal (bytes), for RSS percentages.
    #[serde(default)]
    pub mem_total_bytes: u64,
    /// Who held the CPUs while the targets waited, most wait first.
    #[serde(default)]
    pub neighbours: Vec<NeighbourTrace>,
    /// New processes of the targets.
    #[serde(default)]
    pub followed: Followed,
    /// The machine's CPU pressure over the window (/proc/pressure/cpu).
    #[serde(default)]
    pub pressure_host: Option<PressureDelta>,
    /// The target cgroup's own `cpu.pressure` (v2 only; `None` on v1).
    #[serde(default)]
    pub pressure_cgroup: Option<PressureDelta>,
}

impl Trace {
    /// Threads selected for the report: all, or those named with `--tid`.
    pub fn selected_threads(&self) -> impl Iterator<Item = &ThreadTrace> {
        self.threads
            .iter()
            .filter(|t| self.tids.is_empty() || self.tids.contains(&t.tid))
    }

    /// Process totals over the selected threads.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for th in self.selected_threads() {
            t.cpu_time_ns = t.cpu_time_ns.saturating_add(th.cpu_time_ns);
            t.voluntary_switches = t.voluntary_switches.saturating_add(th.voluntary_switches);
            t.involuntary_switches = t
                .involuntary_switches
                .saturating_add(th.involuntary_switches);
            t.migrations.add(&th.migrations);
            t.runq.merge(&th.runq);
            t.preempted_wait_ns = t.preempted_wait_ns.saturating_add(th.preempted_wait_ns);
            t.runnable_ns = t.runnable_ns.saturating_add(th.runnable_ns);
            t.sleep_ns = t.sleep_ns.saturating_add(th.sleep_ns);
            t.lifetime_ns = t.lifetime_ns.saturating_add(th.lifetime_ns);
            t.throttled_ns = t.throttled_ns.saturating_add(th.throttled_ns);
            for (cpu, ns) in &th.per_cpu_ns {
                let sum = t.per_cpu_ns.entry(*cpu).or_default();
                *sum = sum.saturating_add(*ns);
            }
            t.threads += 1;
        }
        t
    }
}

/// Sums over the selected threads of a trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Number of threads.
    pub threads: usize,
    /// On-CPU ns.
    pub cpu_time_ns: u64,
    /// On-CPU ns per CPU.
    pub per_cpu_ns: BTreeMap<u32, u64>,
    /// Voluntary switches.
    pub voluntary_switches: u64,
    /// Involuntary switches.
    pub involuntary_switches: u64,
    /// Migrations by class.
    pub migrations: MigrationsByClass,
    /// Merged wakeup-to-run latency.
    pub runq: RunqLatency,
    /// Preempted-wait ns.
    pub preempted_wait_ns: u64,
    /// Runnable (waiting for a CPU) ns.
    pub runnable_ns: u64,
    /// Sleeping ns.
    pub sleep_ns: u64,
    /// Traced lifetime ns (summed over threads).
    pub lifetime_ns: u64,
    /// Held by throttling ns.
    pub throttled_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> RunqLatency {
        let mut h = RunqLatency {
            hist: vec![0; RUNQ_BUCKETS],
            ..Default::default()
        };
        for &(b, c) in pairs {
            h.hist[b] = c;
            h.count += c;
        }
        h.max_ns = u64::MAX;
        h
    }

    #[test]
    fn quantile_of_empty_histogram_is_none() {
        assert_eq!(RunqLatency::default().quantile(0.5), None);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 100 samples all in [1024, 2048): p50 is the bucket's middle.
        let h = hist(&[(10, 100)]);
        assert_eq!(h.quantile(0.5), Some(1536));
        assert_eq!(h.quantile(1.0), Some(2048));
    }

    #[test]
    fn quantile_walks_buckets_in_order() {
        // 90 fast (bucket 3: 8..16 ns), 10 slow (bucket 20: ~1 ms).
        let h = hist(&[(3, 90), (20, 10)]);
        let p50 = h.quantile(0.5).unwrap();
        assert!((8..16).contains(&p50), "p50 {p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(((1 << 20)..(1 << 21)).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn quantile_is_clamped_to_the_exact_max() {
        let mut h = hist(&[(10, 4)]);
        h.max_ns = 1100;
        assert_eq!(h.quantile(1.0), Some(1100));
    }

    #[test]
    fn migrations_classes_add_up() {
        let mut m = MigrationsByClass::from_array([1, 2, 3, 4]);
        assert_eq!(m.total(), 10);
        assert_eq!(m.leaving_llc(), 7);
        m.add(&MigrationsByClass::from_array([1, 1, 1, 1]));
        assert_eq!(m.total(), 14);
    }
}
