//! `/metrics`: the agent's figures in the OpenMetrics text format, through
//! prometheus-client's [`Collector`] (encoded at each scrape from the last
//! interval's [`Snapshot`], so a cgroup that went away leaves no series).
//!
//! Per cgroup, never per thread. Labels: `cgroup` (its path in the cpu
//! controller's hierarchy) and, when known, `namespace`, `pod`,
//! `container`, `pod_uid`, `container_id`. A metric is only written when
//! something feeds it: `affin_trace_cgroup_running_threads` needs the
//! kernel's per-period throttle events (task-based throttling, 6.18+:
//! [`CgroupRow::running_threads`] stays `None` without them), and the
//! pressure and quota series are written only for cgroups that have them.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Metric names (as exposed; counters gain `_total` from the encoder).
pub mod names {
    pub const QUOTA_CORES: &str = "affin_trace_cgroup_cpu_quota_cores";
    pub const PERIODS: &str = "affin_trace_cgroup_periods";
    pub const THROTTLED_PERIODS: &str = "affin_trace_cgroup_throttled_periods";
    pub const THROTTLED_SECONDS: &str = "affin_trace_cgroup_throttled_seconds";
    pub const RUNNING_THREADS: &str = "affin_trace_cgroup_running_threads";
    pub const RECOMMENDED_THREADS: &str = "affin_trace_cgroup_recommended_threads";
    pub const CPU_SECONDS: &str = "affin_trace_cgroup_cpu_seconds";
    pub const RUNNABLE_SECONDS: &str = "affin_trace_cgroup_runnable_seconds";
    pub const MIGRATIONS: &str = "affin_trace_cgroup_migrations";
    pub const RUNQ_LATENCY: &str = "affin_trace_cgroup_runqueue_latency_seconds";
    pub const PRESSURE_SOME: &str = "affin_trace_cgroup_pressure_some_seconds";
    pub const EVENTS: &str = "affin_trace_agent_events";
    pub const DROPPED: &str = "affin_trace_agent_dropped_events";
    pub const TRACKED_THREADS: &str = "affin_trace_agent_tracked_threads";
    pub const TRACKED_CGROUPS: &str = "affin_trace_agent_tracked_cgroups";
    pub const LEFT_OUT: &str = "affin_trace_agent_cgroups_left_out";
    pub const AGENT_CPU: &str = "affin_trace_agent_cpu_seconds";
    pub const RESIDENT: &str = "affin_trace_agent_resident_bytes";
    pub const BPF_RUN: &str = "affin_trace_agent_bpf_run_seconds";
}

/// Migration distance label values, in `MIG_*` order.
pub const DISTANCES: [&str; 4] = ["smt", "llc", "cross_llc", "cross_numa"];

/// A histogram as exposed: per-bucket counts (not cumulative) by upper
/// bound, the last bound `f64::MAX` (+Inf).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets {
    pub sum: f64,
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// One cgroup's row.
#[derive(Clone, Debug, Default)]
pub struct CgroupRow {
    pub labels: Vec<(&'static str, String)>,
    pub quota_cores: Option<f64>,
    /// `cpu.stat` as the kernel counts it (since the cgroup was made).
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    /// Threads running at once when the quota ran out, per throttled
    /// period ([`running_buckets`]); `None` without the kernel's throttle
    /// events.
    pub running_threads: Option<Buckets>,
    pub recommended_threads: u32,
    pub cpu_seconds: f64,
    pub runnable_seconds: f64,
    pub migrations: [u64; 4],
    pub runq: Buckets,
    /// PSI `some` total where the cgroup has `cpu.pressure`.
    pub pressure_some_seconds: Option<f64>,
}

/// The agent's own row.
#[derive(Clone, Debug, Default)]
pub struct AgentRow {
    pub events: u64,
    pub dropped: u64,
    pub tracked_threads: u64,
    pub tracked_cgroups: u64,
    pub left_out: u64,
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    /// Per program, while `kernel.bpf_stats_enabled` is 1.
    pub bpf_run_seconds: Option<Vec<(String, f64)>>,
}

/// Everything `/metrics` shows, as of the last interval.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub cgroups: Vec<CgroupRow>,
    pub agent: AgentRow,
}

/// The snapshot shared between the interval loop and the HTTP handlers.
#[derive(Clone, Debug, Default)]
pub struct Shared(pub Arc<Mutex<Snapshot>>);

impl Shared {
    pub fn set(&self, s: Snapshot) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut reg = Registry::default();
        reg.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

type Res = Result<(), std::fmt::Error>;

/// One family over the cgroups that have a value for it.
fn family<T>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: &[CgroupRow],
    value: impl Fn(&CgroupRow) -> Option<T>,
    write: impl Fn(&mut prometheus_client::encoding::MetricEncoder, &T) -> Res,
) -> Res {
    let vals: Vec<(&CgroupRow, T)> = rows
        .iter()
        .filter_map(|r| value(r).map(|v| (r, v)))
        .collect();
    if vals.is_empty() {
        return Ok(()); // nothing feeds it: not exposed
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (r, v) in &vals {
        let mut f = m.encode_family(&r.labels)?;
        write(&mut f, v)?;
    }
    Ok(())
}

fn counter_u(f: &mut prometheus_client::encoding::MetricEncoder, v: &u64) -> Res {
    f.encode_counter::<NoLabelSet, _, u64>(v, None)
}
fn counter_f(f: &mut prometheus_client::encoding::MetricEncoder, v: &f64) -> Res {
    f.encode_counter::<NoLabelSet, _, f64>(v, None)
}
fn gauge_f(f: &mut prometheus_client::encoding::MetricEncoder, v: &f64) -> Res {
    f.encode_gauge(v)
}
fn hist(f: &mut prometheus_client::encoding::MetricEncoder, b: &Buckets) -> Res {
    f.encode_histogram::<NoLabelSet>(b.sum, b.count, &b.buckets, None)
}

impl Collector for Shared {
    fn encode(&self, mut enc: DescriptorEncoder) -> Res {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        cgroup_families(&mut enc, &s.cgroups)?;
        agent_families(&mut enc, &s.agent)
    }
}

/// The per-cgroup families, each over the cgroups that feed it.
fn cgroup_families(enc: &mut DescriptorEncoder, rows: &[CgroupRow]) -> Res {
    quota_families(enc, rows)?;
    thread_families(enc, rows)
}

/// The quota and what it did: cpu.stat, the kernel's count at exhaustion,
/// the advice.
fn quota_families(enc: &mut DescriptorEncoder, rows: &[CgroupRow]) -> Res {
    use MetricType::{Counter, Gauge, Histogram};
    use names::*;
    family(
        enc,
        QUOTA_CORES,
        "CPU quota of the cgroup, in CPUs (quota / period)",
        Gauge,
        rows,
        |r| r.quota_cores,
        gauge_f,
    )?;
    family(
        enc,
        PERIODS,
        "CFS bandwidth enforcement periods (cpu.stat nr_periods)",
        Counter,
        rows,
        |r| r.periods,
        counter_u,
    )?;
    family(
        enc,
        THROTTLED_PERIODS,
        "Periods in which the cgroup was throttled (cpu.stat nr_throttled)",
        Counter,
        rows,
        |r| r.throttled_periods,
        counter_u,
    )?;
    family(
        enc,
        THROTTLED_SECONDS,
        "Time the cgroup's runnable tasks were throttled (cpu.stat throttled_time / throttled_usec)",
        Counter,
        rows,
        |r| r.throttled_seconds,
        counter_f,
    )?;
    family(
        enc,
        RUNNING_THREADS,
        "Threads running at once when the quota ran out, per throttled period",
        Histogram,
        rows,
        |r| r.running_threads.clone(),
        hist,
    )?;
    family(
        enc,
        RECOMMENDED_THREADS,
        "Threads to run to fit the quota when the cgroup is throttled and over-threaded; 0: nothing to change",
        Gauge,
        rows,
        |r| Some(f64::from(r.recommended_threads)),
        gauge_f,
    )
}

/// What the cgroup's threads did, from sched_switch, and PSI.
fn thread_families(enc: &mut DescriptorEncoder, rows: &[CgroupRow]) -> Res {
    use MetricType::{Counter, Histogram};
    use names::*;
    family(
        enc,
        CPU_SECONDS,
        "On-CPU time of the cgroup's traced threads (sched_switch, sum_exec_runtime deltas)",
        Counter,
        rows,
        |r| Some(r.cpu_seconds),
        counter_f,
    )?;
    family(
        enc,
        RUNNABLE_SECONDS,
        "Time the cgroup's threads were runnable but not running (wakeup-to-run and preempted waits)",
        Counter,
        rows,
        |r| Some(r.runnable_seconds),
        counter_f,
    )?;
    {
        let mut m = enc.encode_descriptor(
            MIGRATIONS,
            "Migrations of the cgroup's threads by distance",
            None,
            Counter,
        )?;
        for r in rows {
            for (d, v) in DISTANCES.iter().zip(r.migrations) {
                let mut labels = r.labels.clone();
                labels.push(("distance", (*d).to_string()));
                let mut f = m.encode_family(&labels)?;
                counter_u(&mut f, &v)?;
            }
        }
    }
    family(
        enc,
        RUNQ_LATENCY,
        "Wakeup-to-run latency of the cgroup's threads",
        Histogram,
        rows,
        |r| Some(r.runq.clone()),
        hist,
    )?;
    family(
        enc,
        PRESSURE_SOME,
        "PSI cpu some total of the cgroup (cpu.pressure), where the kernel has it",
        Counter,
        rows,
        |r| r.pressure_some_seconds,
        counter_f,
    )?;
    Ok(())
}

/// The agent's own families.
fn agent_families(enc: &mut DescriptorEncoder, a: &AgentRow) -> Res {
    use MetricType::{Counter, Gauge};
    use names::*;
    let mut one = |name: &str, help: &str, ty: MetricType, v: f64| -> Res {
        let mut m = enc.encode_descriptor(name, help, None, ty)?;
        match ty {
            MetricType::Counter => m.encode_counter::<NoLabelSet, _, f64>(&v, None),
            _ => m.encode_gauge(&v),
        }
    };
    one(
        EVENTS,
        "Scheduler events of traced threads counted in the kernel (switches, migrations, wakeup-to-run waits)",
        Counter,
        a.events as f64,
    )?;
    one(
        DROPPED,
        "Events the programs could not record (maps full, failed reads)",
        Counter,
        a.dropped as f64,
    )?;
    one(
        TRACKED_THREADS,
        "Threads the agent follows now",
        Gauge,
        a.tracked_threads as f64,
    )?;
    one(
        TRACKED_CGROUPS,
        "Cgroups the agent traces now",
        Gauge,
        a.tracked_cgroups as f64,
    )?;
    one(
        LEFT_OUT,
        "Cgroups with a quota left out by --max-cgroups",
        Gauge,
        a.left_out as f64,
    )?;
    one(
        AGENT_CPU,
        "CPU time of the agent's process (user + system)",
        Counter,
        a.cpu_seconds,
    )?;
    one(
        RESIDENT,
        "Resident memory of the agent's process",
        Gauge,
        a.resident_bytes as f64,
    )?;
    if let Some(progs) = &a.bpf_run_seconds {
        let mut m = enc.encode_descriptor(
            BPF_RUN,
            "Run time of each BPF program (kernel.bpf_stats_enabled)",
            None,
            Counter,
        )?;
        for (p, v) in progs {
            let labels = [("program", p.as_str())];
            let mut f = m.encode_family(&labels)?;
            counter_f(&mut f, v)?;
        }
    }
    Ok(())
}

/// The run-queue histogram's buckets from log2 counts (`[2^b, 2^(b+1))`
/// ns in entry `b`): upper bounds 2^(b+1) ns from 1 us to 2.1 s, the
/// shorter waits in the first, the longer in +Inf (the kernel's last
/// bucket holds every wait from 2^31 ns up).
pub fn runq_buckets(log2: &[u64], sum_ns: u64) -> Buckets {
    const FIRST: usize = 9; // le 1.024 us
    const LAST: usize = 30; // le 2.15 s
    let mut buckets = Vec::with_capacity(LAST - FIRST + 2);
    let mut acc = 0;
    for (b, &n) in log2.iter().enumerate() {
        acc += n;
        if (FIRST..=LAST).contains(&b) {
            buckets.push(((1u64 << (b + 1)) as f64 / 1e9, acc));
            acc = 0;
        }
    }
    buckets.push((f64::MAX, acc));
    Buckets {
        sum: sum_ns as f64 / 1e9,
        count: log2.iter().sum(),
        buckets,
    }
}

/// The running-threads histogram from the kernel's exact counts (entry
/// `n`: periods in which `n` threads ran when the quota ran out; the last
/// entry also holds larger counts): one bucket per count from 1 to the
/// CPUs, which is as many as can run at once, then +Inf. Counts are whole
/// numbers, so each bucket holds exactly the periods of its count (0 goes
/// with 1: the thread that ran out was on a CPU).
pub fn running_buckets(counts: &[u32], cpus: usize) -> Buckets {
    let top = cpus.clamp(1, counts.len().saturating_sub(2).max(1));
    let mut buckets: Vec<(f64, u64)> = (1..=top).map(|n| (n as f64, 0)).collect();
    let mut inf = 0;
    let mut sum = 0.0;
    for (n, &c) in counts.iter().enumerate() {
        let c = u64::from(c);
        sum += n as f64 * c as f64;
        match buckets.get_mut(n.max(1) - 1) {
            Some(b) => b.1 += c,
            None => inf += c,
        }
    }
    buckets.push((f64::MAX, inf));
    Buckets {
        sum,
        count: counts.iter().map(|&c| u64::from(c)).sum(),
        buckets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> CgroupRow {
        CgroupRow {
            labels: vec![
                ("cgroup", "/kubepods/burstable/podab/cd".into()),
                ("namespace", "shop".into()),
                ("pod", "encoder-0".into()),
            ],
            quota_cores: Some(0.5),
            periods: Some(100),
            throttled_periods: Some(40),
            throttled_seconds: Some(1.5),
            recommended_threads: 1,
            cpu_seconds: 2.0,
            runq: runq_buckets(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3], 4_000),
            ..CgroupRow::default()
        }
    }

    #[test]
    fn the_exposition_has_the_issue_names_and_only_fed_metrics() {
        let s = Shared::default();
        s.set(Snapshot {
            cgroups: vec![row()],
            agent: AgentRow {
                events: 5,
                ..AgentRow::default()
            },
        });
        let text = s.encode();
        for want in [
            "affin_trace_cgroup_cpu_quota_cores{cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 0.5",
            "affin_trace_cgroup_periods_total{",
            "affin_trace_cgroup_throttled_periods_total{",
            "affin_trace_cgroup_throttled_seconds_total{",
            "affin_trace_cgroup_recommended_threads{",
            "affin_trace_cgroup_cpu_seconds_total{",
            "affin_trace_cgroup_runnable_seconds_total{",
            "affin_trace_cgroup_migrations_total{cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\",distance=\"llc\"} 0",
            "affin_trace_cgroup_runqueue_latency_seconds_bucket{",
            "affin_trace_cgroup_runqueue_latency_seconds_count{cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 3",
            "affin_trace_agent_events_total 5",
            "affin_trace_agent_resident_bytes 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        for absent in [
            "affin_trace_cgroup_running_threads",
            "affin_trace_cgroup_pressure_some",
            "affin_trace_agent_bpf_run_seconds",
        ] {
            assert!(!text.contains(absent), "{absent} is not fed:\n{text}");
        }
    }

    #[test]
    fn running_threads_buckets_run_from_one_to_the_cpus() {
        let mut counts = [0u32; affinity_common::BW_RUNNING_BUCKETS];
        counts[1] = 3;
        counts[2] = 5;
        counts[7] = 1; // more than the CPUs: only +Inf holds it
        let b = running_buckets(&counts, 2);
        assert_eq!(b.buckets, vec![(1.0, 3), (2.0, 5), (f64::MAX, 1)]);
        assert_eq!((b.count, b.sum), (9, 20.0));
        let empty = running_buckets(&counts.map(|_| 0), 4);
        assert_eq!(empty.buckets.len(), 5);
        assert_eq!((empty.count, empty.sum), (0, 0.0));

        let s = Shared::default();
        s.set(Snapshot {
            cgroups: vec![CgroupRow {
                running_threads: Some(b),
                ..row()
            }],
            agent: AgentRow::default(),
        });
        let text = s.encode();
        for want in [
            "affin_trace_cgroup_running_threads_bucket{le=\"1.0\",cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 3",
            "affin_trace_cgroup_running_threads_bucket{le=\"2.0\",cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 8",
            "affin_trace_cgroup_running_threads_bucket{le=\"+Inf\",cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 9",
            "affin_trace_cgroup_running_threads_count{cgroup=\"/kubepods/burstable/podab/cd\",namespace=\"shop\",pod=\"encoder-0\"} 9",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn runq_buckets_at_powers_of_two_are_exact() {
        let mut log2 = vec![0u64; 32];
        log2[3] = 2; // 8-15 ns: below the first bound
        log2[10] = 3; // 1.0-2.0 us
        log2[31] = 1; // >= 2.1 s: the kernel's catch-all
        let b = runq_buckets(&log2, 9);
        assert_eq!(b.count, 6);
        assert_eq!(b.buckets[0], (1024.0 / 1e9, 2));
        assert_eq!(b.buckets[1], (2048.0 / 1e9, 3));
        assert_eq!(b.buckets.last().unwrap(), &(f64::MAX, 1));
        assert_eq!(b.buckets.iter().map(|x| x.1).sum::<u64>(), 6);
    }
}
