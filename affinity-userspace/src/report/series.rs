//! Per-interval series, as the seed's `monitor` action kept them
//! (`timestamps`, `cpu_usage`, `memory_usage`, `current_cpu`, `migrations`,
//! `context_switches`), from the kernel's per-interval counts, plus the
//! demand (on-CPU + runnable wait) usage can understate. Pure.

use serde::Serialize;

use crate::model::Trace;

/// One value per interval in each list, all of the same length.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    /// End of each interval, seconds since the window opened.
    pub timestamps: Vec<f64>,
    /// On-CPU time, % of one CPU.
    pub cpu_usage: Vec<f64>,
    /// On-CPU time plus time waiting runnable, % of one CPU: what the
    /// targets asked for.
    pub cpu_demand: Vec<f64>,
    /// Resident memory, % of MemTotal.
    pub memory_usage: Vec<f64>,
    /// Resident memory (bytes).
    pub memory_bytes: Vec<u64>,
    /// CPUs the targets ran on in the interval (the seed kept the one CPU
    /// a process was on at each sample).
    pub current_cpus: Vec<Vec<u32>>,
    /// Real migrations in the interval.
    pub migrations: Vec<u64>,
    /// Context switches (voluntary + involuntary) in the interval.
    pub context_switches: Vec<u64>,
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl From<&Trace> for Series {
    fn from(t: &Trace) -> Self {
        let mut s = Series::default();
        let mut at = 0u64;
        for i in &t.intervals {
            at = at.saturating_add(i.wall_ns);
            s.timestamps.push(at as f64 / 1e9);
            s.cpu_usage.push(pct(i.cpu_ns, i.wall_ns));
            s.cpu_demand
                .push(pct(i.cpu_ns.saturating_add(i.runnable_ns), i.wall_ns));
            s.memory_usage.push(pct(i.rss_bytes, t.mem_total_bytes));
            s.memory_bytes.push(i.rss_bytes);
            s.current_cpus.push(i.cpus.clone());
            s.migrations.push(i.migrations);
            s.context_switches.push(i.switches);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interval;

    #[test]
    fn one_entry_per_interval_in_every_list() {
        let iv = |cpu_ns, runnable_ns, cpus: &[u32], migrations, switches| Interval {
            wall_ns: 500_000_000,
            cpu_ns,
            runnable_ns,
            rss_bytes: 1 << 20,
            migrations,
            switches,
            cpus: cpus.to_vec(),
            ..Default::default()
        };
        let t = Trace {
            mem_total_bytes: 4 << 20,
            intervals: vec![
                iv(250_000_000, 250_000_000, &[0], 3, 10),
                iv(500_000_000, 0, &[0, 1], 0, 2),
            ],
            ..Default::default()
        };
        let s = Series::from(&t);
        assert_eq!(s.timestamps, vec![0.5, 1.0]);
        assert_eq!(s.cpu_usage, vec![50.0, 100.0]);
        assert_eq!(s.cpu_demand, vec![100.0, 100.0]);
        assert_eq!(s.memory_usage, vec![25.0, 25.0]);
        assert_eq!(s.current_cpus, vec![vec![0], vec![0, 1]]);
        assert_eq!(s.migrations, vec![3, 0]);
        assert_eq!(s.context_switches, vec![10, 2]);
    }
}
