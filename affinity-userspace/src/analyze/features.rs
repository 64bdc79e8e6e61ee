//! Workload features, per process and per thread, from a [`Trace`]: the
//! seed's figures (avg/max/variance of CPU %, memory %, migrations, cache
//! "miss" ratio) computed from exact kernel data, plus run-queue latency,
//! voluntary-switch ratio and effective parallelism.
//!
//! Units follow the seed: CPU figures are % of one CPU per interval sample,
//! `cpu_variance` is the population variance of those samples (numpy's
//! `np.var`). Samples are weighted by each interval's wall time, so a short
//! final interval counts for what it lasted; with equal intervals this is
//! exactly the seed's mean and variance.

use serde::{Deserialize, Serialize};

use crate::model::{MigrationsByClass, ThreadTrace, Trace, saturating_sum};

/// Where `cache_miss_ratio` comes from: no hardware cache counters are read;
/// the ratio is the share of migrations that left the last-level cache
/// group (cross-LLC or cross-NUMA), each of which starts on a cold cache.
pub const CACHE_MISS_SOURCE: &str = "llc_leaving_migration_share";

/// Features of one process or one thread.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Mean CPU use, % of one CPU (wall-time weighted over the intervals).
    pub avg_cpu_usage: f64,
    /// Highest interval's CPU use, % of one CPU.
    pub max_cpu_usage: f64,
    /// Population variance of the interval CPU % samples (%^2).
    pub cpu_variance: f64,
    /// Mean resident set size, % of MemTotal (process-wide, also for threads:
    /// threads share the address space).
    pub avg_memory_usage: f64,
    /// Migrations in the window.
    pub total_migrations: u64,
    /// Migrations per second of the window.
    pub migration_rate: f64,
    /// Share of migrations that left the last-level cache group (0 without
    /// migrations); see [`CACHE_MISS_SOURCE`].
    pub cache_miss_ratio: f64,
    /// Names the source of `cache_miss_ratio`.
    pub cache_miss_source: String,
    /// Migrations by distance class.
    pub migrations_by_class: MigrationsByClass,
    /// Median wakeup-to-run latency (ns); `None` without wakeups.
    pub runq_p50_ns: Option<u64>,
    /// 99th-percentile wakeup-to-run latency (ns).
    pub runq_p99_ns: Option<u64>,
    /// Voluntary share of context switches (1.0: always blocks, never
    /// preempted); `None` without switches.
    pub voluntary_ratio: Option<f64>,
    /// On-CPU time / wall time: how many CPUs it kept busy on average.
    pub effective_parallelism: f64,
    /// On-CPU time in the window (ns).
    pub cpu_time_ns: u64,
    /// Wall-clock length of the window (ns).
    pub window_ns: u64,
    /// Number of interval samples behind the CPU figures.
    pub samples: usize,
    /// Time waiting runnable for a CPU in the window (ns).
    #[serde(default)]
    pub runnable_ns: u64,
    /// Voluntary off-CPU time in the window (ns).
    #[serde(default)]
    pub sleep_ns: u64,
    /// Traced lifetime (summed over threads; ns): running (`cpu_time_ns`)
    /// + runnable + sleeping. 0 in traces recorded before the wait split.
    #[serde(default)]
    pub lifetime_ns: u64,
    /// CPU demand (ns): running + runnable, what it would have used had a
    /// CPU been free whenever it was ready to run.
    #[serde(default)]
    pub cpu_demand_ns: u64,
    /// CPU demand as % of one CPU over the window (usage's counterpart:
    /// `avg_cpu_usage` counts only what it got).
    #[serde(default)]
    pub avg_cpu_demand: f64,
    /// CPU demand / wall time: how many CPUs it would have kept busy.
    #[serde(default)]
    pub demand_parallelism: f64,
    /// Threads counted.
    pub threads: usize,
    /// The seed's key: the class these features were given (set once
    /// classified; null before).
    #[serde(default)]
    pub workload_type: Option<crate::analyze::classify::Class>,
}

/// One thread's features.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadFeatures {
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Its features.
    pub features: Features,
}

/// Features of the process and of each selected thread.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceFeatures {
    /// The target as a whole (selected threads).
    pub process: Features,
    /// Each selected thread, by tid.
    pub threads: Vec<ThreadFeatures>,
}

/// One CPU-use sample: on-CPU ns over an interval of `wall_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// On-CPU time in the interval (ns).
    pub cpu_ns: u64,
    /// Interval length (ns).
    pub wall_ns: u64,
}

impl Sample {
    /// CPU use in % of one CPU.
    pub fn pct(&self) -> f64 {
        if self.wall_ns == 0 {
            0.0
        } else {
            self.cpu_ns as f64 * 100.0 / self.wall_ns as f64
        }
    }
}

/// Mean, max and population variance of samples, weighted by wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuStats {
    /// Wall-weighted mean %.
    pub mean: f64,
    /// Highest sample %.
    pub max: f64,
    /// Wall-weighted population variance (%^2).
    pub variance: f64,
}

/// Wall-weighted statistics of CPU % samples (all zero without samples).
pub fn cpu_stats(samples: &[Sample]) -> CpuStats {
    let wall = saturating_sum(samples.iter().map(|s| &s.wall_ns));
    if wall == 0 {
        return CpuStats::default();
    }
    let cpu = saturating_sum(samples.iter().map(|s| &s.cpu_ns));
    // cpu*100/wall keeps exact integers exact (800 ms of 1 s is 80.0, not
    // 80.00000000000001), which matters at the thresholds.
    let mean = cpu as f64 * 100.0 / wall as f64;
    let max = samples.iter().map(Sample::pct).fold(0.0, f64::max);
    let sq: f64 = samples
        .iter()
        .map(|s| s.wall_ns as f64 * (s.pct() - mean).powi(2))
        .sum();
    CpuStats {
        mean,
        max,
        variance: sq / wall as f64,
    }
}

/// Features of the whole target (the selected threads) and of each thread.
/// `mem_total_bytes` is MemTotal from /proc/meminfo (0: memory % reads 0).
pub fn extract(trace: &Trace, mem_total_bytes: u64) -> TraceFeatures {
    TraceFeatures {
        process: process(trace, mem_total_bytes),
        threads: trace
            .selected_threads()
            .map(|t| ThreadFeatures {
                tid: t.tid,
                comm: t.comm.clone(),
                features: thread(trace, t, mem_total_bytes),
            })
            .collect(),
    }
}

/// Features of the target as a whole.
pub fn process(trace: &Trace, mem_total_bytes: u64) -> Features {
    let totals = trace.totals();
    let samples = process_samples(trace);
    Features {
        threads: totals.threads,
        ..common(
            trace,
            &samples,
            Counts {
                cpu_time_ns: totals.cpu_time_ns,
                migrations: totals.migrations,
                voluntary: totals.voluntary_switches,
                involuntary: totals.involuntary_switches,
                runq: &totals.runq,
                // Held by a quota, a thread still wants a CPU.
                runnable_ns: totals.runnable_ns.saturating_add(totals.throttled_ns),
                sleep_ns: totals.sleep_ns,
                lifetime_ns: totals.lifetime_ns,
                span_ns: trace
                    .selected_threads()
                    .map(|t| t.lifetime_ns)
                    .max()
                    .unwrap_or(0),
            },
            mem_total_bytes,
        )
    }
}

/// Features of one thread, from its own per-interval CPU time.
pub fn thread(trace: &Trace, t: &ThreadTrace, mem_total_bytes: u64) -> Features {
    let samples = thread_samples(trace, t);
    Features {
        threads: 1,
        ..common(
            trace,
            &samples,
            Counts {
                cpu_time_ns: t.cpu_time_ns,
                migrations: t.migrations,
                voluntary: t.voluntary_switches,
                involuntary: t.involuntary_switches,
                runq: &t.runq,
                runnable_ns: t.runnable_ns.saturating_add(t.throttled_ns),
                sleep_ns: t.sleep_ns,
                lifetime_ns: t.lifetime_ns,
                span_ns: t.lifetime_ns,
            },
            mem_total_bytes,
        )
    }
}

/// Whole-window counters of a process or a thread.
struct Counts<'a> {
    cpu_time_ns: u64,
    migrations: MigrationsByClass,
    voluntary: u64,
    involuntary: u64,
    runq: &'a crate::model::RunqLatency,
    runnable_ns: u64,
    sleep_ns: u64,
    lifetime_ns: u64,
    /// The longest thread lifetime: a command's threads start before the
    /// window's clock does, so demand is taken over whichever is longer
    /// (one thread never demands more than one CPU).
    span_ns: u64,
}

fn common(trace: &Trace, samples: &[Sample], c: Counts, mem_total_bytes: u64) -> Features {
    let window_ns = window_ns(trace);
    let stats = cpu_stats(samples);
    let secs = window_ns as f64 / 1e9;
    let total = c.migrations.total();
    let switches = c.voluntary.saturating_add(c.involuntary);
    let demand_ns = c.cpu_time_ns.saturating_add(c.runnable_ns);
    Features {
        avg_cpu_usage: stats.mean,
        max_cpu_usage: stats.max,
        cpu_variance: stats.variance,
        avg_memory_usage: avg_memory_pct(trace, mem_total_bytes),
        total_migrations: total,
        migration_rate: ratio(total as f64, secs),
        cache_miss_ratio: ratio(c.migrations.leaving_llc() as f64, total as f64),
        cache_miss_source: CACHE_MISS_SOURCE.to_string(),
        migrations_by_class: c.migrations,
        runq_p50_ns: c.runq.quantile(0.5),
        runq_p99_ns: c.runq.quantile(0.99),
        voluntary_ratio: (switches > 0).then(|| c.voluntary as f64 / switches as f64),
        effective_parallelism: ratio(c.cpu_time_ns as f64, window_ns as f64),
        cpu_time_ns: c.cpu_time_ns,
        window_ns,
        samples: samples.len(),
        threads: 0,
        runnable_ns: c.runnable_ns,
        sleep_ns: c.sleep_ns,
        lifetime_ns: c.lifetime_ns,
        cpu_demand_ns: demand_ns,
        // ns*100/wall keeps exact integers exact, as in cpu_stats.
        avg_cpu_demand: ratio(demand_ns as f64 * 100.0, window_ns.max(c.span_ns) as f64),
        demand_parallelism: ratio(demand_ns as f64, window_ns.max(c.span_ns) as f64),
        workload_type: None,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The trace's wall-clock window: its duration, else the intervals' sum.
pub fn window_ns(trace: &Trace) -> u64 {
    if trace.duration_ns > 0 {
        trace.duration_ns
    } else {
        saturating_sum(trace.intervals.iter().map(|i| &i.wall_ns))
    }
}

/// Per-interval samples of the target. With all threads selected these are
/// the collector's interval totals; with `--tid` they are the sum of the
/// selected threads' own interval times. Without intervals, one sample over
/// the whole window.
pub fn process_samples(trace: &Trace) -> Vec<Sample> {
    if trace.intervals.is_empty() {
        let cpu = saturating_sum(trace.selected_threads().map(|t| &t.cpu_time_ns));
        return whole_window(trace, cpu);
    }
    if trace.tids.is_empty() {
        return trace
            .intervals
            .iter()
            .map(|i| Sample {
                cpu_ns: i.cpu_ns,
                wall_ns: i.wall_ns,
            })
            .collect();
    }
    let mut samples = interval_walls(trace, 0);
    for t in trace.selected_threads() {
        for (s, ns) in samples.iter_mut().zip(&t.cpu_ns_per_interval) {
            s.cpu_ns = s.cpu_ns.saturating_add(*ns);
        }
    }
    samples
}

/// Per-interval samples of one thread. Intervals before it appeared count
/// as 0 (the model fills them so), as do those after it exited.
pub fn thread_samples(trace: &Trace, t: &ThreadTrace) -> Vec<Sample> {
    if trace.intervals.is_empty() && t.cpu_ns_per_interval.is_empty() {
        return whole_window(trace, t.cpu_time_ns);
    }
    let mut samples = interval_walls(trace, t.cpu_ns_per_interval.len());
    for (s, &ns) in samples.iter_mut().zip(&t.cpu_ns_per_interval) {
        s.cpu_ns = ns;
    }
    samples
}

/// Zeroed samples with each interval's wall time; at least `len` of them
/// (extra ones, beyond the recorded intervals, last `interval_ns`).
fn interval_walls(trace: &Trace, len: usize) -> Vec<Sample> {
    let n = trace.intervals.len().max(len);
    (0..n)
        .map(|i| Sample {
            cpu_ns: 0,
            wall_ns: trace
                .intervals
                .get(i)
                .map_or(trace.interval_ns, |iv| iv.wall_ns),
        })
        .collect()
}

fn whole_window(trace: &Trace, cpu_ns: u64) -> Vec<Sample> {
    match window_ns(trace) {
        0 => Vec::new(),
        wall_ns => vec![Sample { cpu_ns, wall_ns }],
    }
}

/// Wall-weighted mean of RSS as % of MemTotal.
fn avg_memory_pct(trace: &Trace, mem_total_bytes: u64) -> f64 {
    let wall = saturating_sum(trace.intervals.iter().map(|i| &i.wall_ns));
    if mem_total_bytes == 0 || wall == 0 {
        return 0.0;
    }
    let weighted: f64 = trace
        .intervals
        .iter()
        .map(|i| i.wall_ns as f64 * i.rss_bytes as f64)
        .sum();
    weighted / wall as f64 * 100.0 / mem_total_bytes as f64
}

/// Builders for synthetic traces, shared by the tests of the later steps.
#[cfg(test)]
pub(crate) mod testutil {
    use std::collections::BTreeMap;

    use crate::model::{Interval, MigrationsByClass, ThreadTrace, Trace};

    /// 1 s intervals.
    pub const SEC: u64 = 1_000_000_000;

    /// A thread whose CPU use per 1 s interval is `pcts` (% of one CPU),
    /// spread over `cpus` evenly.
    pub fn mk_thread(tid: u32, pcts: &[f64], cpus: &[u32]) -> ThreadTrace {
        let per: Vec<u64> = pcts
            .iter()
            .map(|p| (p * SEC as f64 / 100.0) as u64)
            .collect();
        let total: u64 = per.iter().sum();
        let per_cpu_ns: BTreeMap<u32, u64> = cpus
            .iter()
            .map(|&c| (c, total / cpus.len().max(1) as u64))
            .collect();
        ThreadTrace {
            tid,
            tgid: 100,
            comm: format!("t{tid}"),
            cpu_time_ns: total,
            per_cpu_ns,
            cpu_ns_per_interval: per,
            ..Default::default()
        }
    }

    /// A trace of these threads over 1 s intervals (as many as the longest
    /// thread has), with interval totals summed from the threads.
    pub fn mk_trace(threads: Vec<ThreadTrace>) -> Trace {
        let n = threads
            .iter()
            .map(|t| t.cpu_ns_per_interval.len())
            .max()
            .unwrap_or(0);
        let intervals = (0..n)
            .map(|i| Interval {
                wall_ns: SEC,
                cpu_ns: threads
                    .iter()
                    .filter_map(|t| t.cpu_ns_per_interval.get(i))
                    .sum(),
                ..Interval::default()
            })
            .collect();
        Trace {
            pids: vec![100],
            duration_ns: n as u64 * SEC,
            interval_ns: SEC,
            threads,
            intervals,
            ..Default::default()
        }
    }

    /// Sets a thread's migrations ([smt, llc, cross_llc, cross_numa]).
    pub fn with_migrations(mut t: ThreadTrace, m: [u64; 4]) -> ThreadTrace {
        t.migrations = MigrationsByClass::from_array(m);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::model::{Interval, RUNQ_BUCKETS, RunqLatency};

    #[test]
    fn seed_units_match_numpy_on_equal_intervals() {
        // np.mean([90, 110, 100, 100]) = 100, np.var(...) = 50.
        let t = mk_trace(vec![mk_thread(1, &[90.0, 110.0, 100.0, 100.0], &[0, 1])]);
        let f = process(&t, 0);
        assert_eq!(f.avg_cpu_usage, 100.0);
        assert_eq!(f.max_cpu_usage, 110.0);
        assert_eq!(f.cpu_variance, 50.0);
        assert_eq!(f.samples, 4);
        assert_eq!(f.effective_parallelism, 1.0);
    }

    /// Found by `cargo xtask fuzz` (trace_features): counters near
    /// u64::MAX in a recorded trace overflowed the switch sum, the process
    /// totals and the run-queue quantile (a panic in debug builds, wrapped
    /// figures in release). Now they saturate and every feature is finite.
    #[test]
    fn counters_near_u64_max_saturate() {
        let mut a = mk_thread(1, &[50.0], &[0]);
        let mut b = mk_thread(2, &[50.0], &[1]);
        for t in [&mut a, &mut b] {
            t.cpu_time_ns = u64::MAX - 1;
            t.voluntary_switches = u64::MAX;
            t.involuntary_switches = u64::MAX;
            t.migrations = MigrationsByClass::from_array([u64::MAX; 4]);
            t.per_cpu_ns.insert(0, u64::MAX);
            t.runq = RunqLatency {
                // More buckets than a u64 has bits: 2^70 ns is past u64.
                hist: [vec![0; 70], vec![u64::MAX]].concat(),
                count: u64::MAX,
                total_ns: u64::MAX,
                max_ns: u64::MAX,
            };
        }
        let mut t = mk_trace(vec![a, b]);
        // Two intervals whose wall and CPU times sum past u64::MAX, and no
        // duration, so the window is their sum.
        t.duration_ns = 0;
        t.intervals = vec![
            Interval {
                wall_ns: u64::MAX - 1,
                cpu_ns: u64::MAX - 1,
                ..Default::default()
            };
            2
        ];
        assert_eq!(window_ns(&t), u64::MAX);
        // With threads selected (--tid), samples are the threads' sums.
        t.threads[0].cpu_ns_per_interval = vec![u64::MAX; 2];
        t.threads[1].cpu_ns_per_interval = vec![u64::MAX; 2];
        t.tids = vec![1, 2];
        assert!(process_samples(&t).iter().all(|s| s.cpu_ns == u64::MAX));
        t.tids.clear();
        let totals = t.totals();
        assert_eq!(totals.voluntary_switches, u64::MAX);
        assert_eq!(totals.migrations.total(), u64::MAX);
        assert_eq!(totals.per_cpu_ns[&0], u64::MAX);
        let f = process(&t, 0);
        assert_eq!(f.total_migrations, u64::MAX);
        assert_eq!(f.voluntary_ratio, Some(1.0));
        assert_eq!(f.runq_p99_ns, Some(u64::MAX));
        assert!(f.migration_rate.is_finite() && f.effective_parallelism.is_finite());
    }

    #[test]
    fn exact_eighty_percent_stays_exact() {
        let t = mk_trace(vec![mk_thread(1, &[80.0, 80.0], &[0])]);
        assert_eq!(process(&t, 0).avg_cpu_usage, 80.0);
    }

    #[test]
    fn partial_last_interval_is_weighted_by_its_wall_time() {
        // 1 s at 100% then 0.5 s at 50% (250 ms on CPU).
        let mut t = mk_trace(vec![]);
        t.intervals = vec![
            Interval {
                wall_ns: SEC,
                cpu_ns: SEC,
                ..Default::default()
            },
            Interval {
                wall_ns: SEC / 2,
                cpu_ns: SEC / 4,
                ..Default::default()
            },
        ];
        t.duration_ns = SEC + SEC / 2;
        let f = process(&t, 0);
        // 1.25 s on CPU / 1.5 s wall.
        assert!((f.avg_cpu_usage - 250.0 / 3.0).abs() < 1e-9);
        assert_eq!(f.max_cpu_usage, 100.0);
        // Weights 2:1 around the mean 83.33: (2*16.67^2 + 33.33^2)/3.
        let m = 250.0 / 3.0;
        let v = (2.0 * (100.0 - m) * (100.0 - m) + (50.0 - m) * (50.0 - m)) / 3.0;
        assert!((f.cpu_variance - v).abs() < 1e-9);
    }

    #[test]
    fn migrations_rate_and_cache_miss_share() {
        let th = with_migrations(mk_thread(1, &[50.0; 4], &[0]), [2, 4, 3, 1]);
        let f = process(&mk_trace(vec![th]), 0);
        assert_eq!(f.total_migrations, 10);
        assert_eq!(f.migration_rate, 2.5);
        assert_eq!(f.cache_miss_ratio, 0.4);
        assert_eq!(f.cache_miss_source, "llc_leaving_migration_share");
        assert_eq!(f.migrations_by_class.cross_llc, 3);
    }

    #[test]
    fn no_migrations_means_zero_cache_miss_ratio() {
        let f = process(&mk_trace(vec![mk_thread(1, &[10.0], &[0])]), 0);
        assert_eq!(f.cache_miss_ratio, 0.0);
        assert_eq!(f.migration_rate, 0.0);
    }

    #[test]
    fn memory_is_percent_of_mem_total() {
        let mut t = mk_trace(vec![mk_thread(1, &[10.0, 10.0], &[0])]);
        t.intervals[0].rss_bytes = 100;
        t.intervals[1].rss_bytes = 300;
        assert_eq!(process(&t, 1000).avg_memory_usage, 20.0);
        assert_eq!(process(&t, 0).avg_memory_usage, 0.0);
    }

    #[test]
    fn switches_and_runq_quantiles() {
        let mut th = mk_thread(1, &[10.0], &[0]);
        th.voluntary_switches = 3;
        th.involuntary_switches = 1;
        th.runq = RunqLatency {
            hist: vec![0; RUNQ_BUCKETS],
            ..Default::default()
        };
        th.runq.hist[10] = 100;
        th.runq.count = 100;
        th.runq.max_ns = u64::MAX;
        let f = process(&mk_trace(vec![th]), 0);
        assert_eq!(f.voluntary_ratio, Some(0.75));
        assert_eq!(f.runq_p50_ns, Some(1536));
        assert_eq!(f.runq_p99_ns, Some(2037));
        let idle = process(&mk_trace(vec![mk_thread(2, &[0.0], &[0])]), 0);
        assert_eq!(idle.voluntary_ratio, None);
        assert_eq!(idle.runq_p50_ns, None);
    }

    #[test]
    fn threads_use_their_own_intervals() {
        let busy = mk_thread(1, &[100.0, 100.0], &[0]);
        let late = mk_thread(2, &[0.0, 40.0], &[1]);
        let tf = extract(&mk_trace(vec![busy, late]), 0);
        assert_eq!(tf.process.avg_cpu_usage, 120.0);
        assert_eq!(tf.process.effective_parallelism, 1.2);
        assert_eq!(tf.process.threads, 2);
        assert_eq!(tf.threads[0].features.avg_cpu_usage, 100.0);
        assert_eq!(tf.threads[0].features.cpu_variance, 0.0);
        assert_eq!(tf.threads[1].features.avg_cpu_usage, 20.0);
        assert_eq!(tf.threads[1].features.cpu_variance, 400.0);
        assert_eq!(tf.threads[1].features.threads, 1);
    }

    #[test]
    fn short_thread_vectors_are_padded_with_zeros() {
        let mut t = mk_trace(vec![mk_thread(1, &[50.0, 50.0], &[0])]);
        t.threads.push(mk_thread(2, &[100.0], &[1]));
        let f = thread(&t, &t.threads[1], 0);
        assert_eq!(f.samples, 2);
        assert_eq!(f.avg_cpu_usage, 50.0);
    }

    #[test]
    fn tid_selection_recomputes_process_samples() {
        let mut t = mk_trace(vec![
            mk_thread(1, &[100.0], &[0]),
            mk_thread(2, &[30.0], &[1]),
        ]);
        t.tids = vec![2];
        let f = process(&t, 0);
        assert_eq!(f.avg_cpu_usage, 30.0);
        assert_eq!(f.threads, 1);
    }

    #[test]
    fn a_trace_without_intervals_is_one_sample() {
        let mut t = mk_trace(vec![mk_thread(1, &[60.0], &[0])]);
        t.intervals.clear();
        let f = process(&t, 0);
        assert_eq!(f.samples, 1);
        assert_eq!(f.avg_cpu_usage, 60.0);
        assert_eq!(f.cpu_variance, 0.0);
        assert_eq!(process(&Trace::default(), 0).samples, 0);
    }

    #[test]
    fn serialized_keys_keep_the_seed_names() {
        let v =
            serde_json::to_value(process(&mk_trace(vec![mk_thread(1, &[1.0], &[0])]), 0)).unwrap();
        for k in [
            "avg_cpu_usage",
            "max_cpu_usage",
            "cpu_variance",
            "avg_memory_usage",
            "total_migrations",
            "migration_rate",
            "cache_miss_ratio",
            "cache_miss_source",
            "migrations_by_class",
            "runq_p50_ns",
            "runq_p99_ns",
            "voluntary_ratio",
            "effective_parallelism",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
    }
}
