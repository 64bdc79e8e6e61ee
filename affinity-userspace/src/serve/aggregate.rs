//! Per-thread kernel counters folded into per-cgroup totals, never kept
//! per thread longer than the thread lives.
//!
//! Each read gives every thread entry of the `STATS` map ([`ThreadStats`],
//! cumulative since the entry was made). The aggregator keeps the previous
//! values of each live thread, adds the growth to its cgroup's counters and
//! to the interval's [`ThreadDelta`]s (for the findings), and says which
//! entries to delete: threads seen exiting one read earlier (their last
//! switch-out has been counted) and threads of processes no traced cgroup
//! holds any more. Run-queue waits go into an HDR histogram per cgroup,
//! from the kernel's log2 buckets (bucket `b` holds waits in
//! `[2^b, 2^(b+1))` ns), so the exposed buckets at powers of two are exact.
//!
//! Values in, values out: no system access, unit-tested on synthetic entries.

use std::collections::{BTreeMap, HashMap};

use affinity_common::{FLAG_EXITING, MIG_CLASSES, RUNQ_BUCKETS, ThreadStats};
use hdrhistogram::Histogram;

/// A traced cgroup's key: the kernfs id (inode) of its cpu-controller
/// directory, as the programs key `CGROUP_TARGETS`.
pub type CgroupKey = u64;

/// Largest run-queue wait the histogram holds (ns); longer ones saturate.
const RUNQ_MAX_NS: u64 = 1 << 40;

/// One cgroup's counters since the agent began tracing it.
#[derive(Clone, Debug)]
pub struct CgroupCounters {
    /// On-CPU time of its threads (ns, `sum_exec_runtime` deltas).
    pub cpu_ns: u64,
    /// Runnable but not running (ns): wakeup-to-run plus preempted waits.
    pub runnable_ns: u64,
    /// Migrations by distance (`MIG_*` order: smt, llc, cross-llc, cross-numa).
    pub migrations: [u64; MIG_CLASSES],
    /// Wakeup-to-run waits (ns).
    pub runq: Histogram<u64>,
    /// Their sum (ns), exact (the histogram's values are bucket bounds).
    pub runq_sum_ns: u64,
    /// Scheduler events counted in the kernel for its threads: switches,
    /// migrations and wakeup-to-run waits.
    pub events: u64,
}

impl Default for CgroupCounters {
    fn default() -> Self {
        Self {
            cpu_ns: 0,
            runnable_ns: 0,
            migrations: [0; MIG_CLASSES],
            // 2 significant digits: a power of two is recorded within 1%,
            // far inside its own log2 bucket.
            runq: Histogram::new_with_bounds(1, RUNQ_MAX_NS, 2).expect("valid bounds"),
            runq_sum_ns: 0,
            events: 0,
        }
    }
}

impl CgroupCounters {
    /// Wakeup-to-run waits per log2 bucket (index `b`: `[2^b, 2^(b+1))` ns).
    pub fn runq_log2(&self) -> [u64; RUNQ_BUCKETS] {
        let mut out = [0u64; RUNQ_BUCKETS];
        for v in self.runq.iter_recorded() {
            let ns = self.runq.lowest_equivalent(v.value_iterated_to()).max(1);
            let b = (63 - ns.leading_zeros() as usize).min(RUNQ_BUCKETS - 1);
            out[b] += v.count_since_last_iteration();
        }
        out
    }
}

/// What one thread did in one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadDelta {
    pub tid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cpu_ns: u64,
    pub preempted_ns: u64,
    pub runq_ns: u64,
    pub migrations: u64,
}

/// The previous values of one live thread.
#[derive(Clone, Debug)]
struct Prev {
    first_ns: u64,
    cgroup: CgroupKey,
    cpu_ns: u64,
    preempted_ns: u64,
    runq_ns: u64,
    migrations: [u64; MIG_CLASSES],
    hist: [u32; RUNQ_BUCKETS],
    switches: u64,
    /// Seen with `FLAG_EXITING` in an earlier read.
    exiting: bool,
}

impl Prev {
    fn zero(first_ns: u64, cgroup: CgroupKey) -> Self {
        Self {
            first_ns,
            cgroup,
            cpu_ns: 0,
            preempted_ns: 0,
            runq_ns: 0,
            migrations: [0; MIG_CLASSES],
            hist: [0; RUNQ_BUCKETS],
            switches: 0,
            exiting: false,
        }
    }
}

/// The result of one read.
#[derive(Debug, Default)]
pub struct Read {
    /// Per cgroup, the threads that ran or waited in the interval.
    pub threads: BTreeMap<CgroupKey, Vec<ThreadDelta>>,
    /// Entries to delete from the maps (tids).
    pub forget: Vec<u32>,
}

/// Folds thread entries into cgroup counters.
#[derive(Debug, Default)]
pub struct Aggregator {
    threads: HashMap<u32, Prev>,
    cgroups: BTreeMap<CgroupKey, CgroupCounters>,
    /// Events of every cgroup ever traced (the agent's own counter: it
    /// does not drop when a cgroup goes away).
    events: u64,
}

impl Aggregator {
    /// Scheduler events counted for traced threads since the start.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Threads followed now.
    pub fn tracked_threads(&self) -> usize {
        self.threads.len()
    }

    /// A cgroup's counters (zero until its threads are read).
    pub fn counters(&self, key: CgroupKey) -> Option<&CgroupCounters> {
        self.cgroups.get(&key)
    }

    /// Starts a cgroup's counters at zero (its series appear at once).
    pub fn track(&mut self, key: CgroupKey) {
        self.cgroups.entry(key).or_default();
    }

    /// Drops a cgroup that went away: its counters go, and its threads are
    /// no longer charged anywhere.
    pub fn untrack(&mut self, key: CgroupKey) {
        self.cgroups.remove(&key);
        self.threads.retain(|_, p| p.cgroup != key);
    }

    /// One read of every entry. `cgroup_of(tgid)` says which traced cgroup
    /// holds a process now (`None`: none does; its threads are forgotten).
    pub fn read(
        &mut self,
        entries: &[(u32, ThreadStats)],
        cgroup_of: impl Fn(u32) -> Option<CgroupKey>,
    ) -> Read {
        let mut out = Read::default();
        let mut seen: Vec<u32> = Vec::with_capacity(entries.len());
        for (tid, st) in entries {
            let tid = *tid;
            seen.push(tid);
            let Some(key) = cgroup_of(st.tgid).filter(|k| self.cgroups.contains_key(k)) else {
                self.threads.remove(&tid);
                out.forget.push(tid);
                continue;
            };
            let prev = self
                .threads
                .entry(tid)
                .or_insert_with(|| Prev::zero(st.first_ns, key));
            // A reused slot or tid: a new thread, counted from zero.
            if prev.first_ns != st.first_ns || st.cpu_time_ns < prev.cpu_ns {
                *prev = Prev::zero(st.first_ns, key);
            }
            // A process that moved: its growth from now on is the new cgroup's.
            prev.cgroup = key;
            let d = delta(prev, st);
            let c = self.cgroups.entry(key).or_default();
            c.cpu_ns += d.cpu_ns;
            c.runnable_ns += d.preempted_ns + d.runq_ns;
            c.runq_sum_ns += d.runq_ns;
            let mut migs = 0;
            for (i, m) in st.migrations.iter().enumerate() {
                let g = m.saturating_sub(prev.migrations[i]);
                c.migrations[i] += g;
                migs += g;
            }
            let mut waits = 0;
            for (b, &n) in st.runq_hist.iter().enumerate() {
                let g = n.saturating_sub(prev.hist[b]);
                if g > 0 {
                    c.runq
                        .saturating_record_n((1u64 << b).min(RUNQ_MAX_NS), u64::from(g));
                    waits += u64::from(g);
                }
            }
            let switches = st.voluntary + st.involuntary;
            let ev = switches.saturating_sub(prev.switches) + migs + waits;
            c.events += ev;
            self.events += ev;
            let exiting_before = prev.exiting;
            *prev = Prev {
                first_ns: st.first_ns,
                cgroup: key,
                cpu_ns: st.cpu_time_ns,
                preempted_ns: st.preempted_wait_ns,
                runq_ns: st.runq_wait_ns,
                migrations: st.migrations,
                hist: st.runq_hist,
                switches,
                exiting: st.flags & FLAG_EXITING != 0,
            };
            if d.cpu_ns > 0 || d.preempted_ns > 0 || d.runq_ns > 0 {
                out.threads.entry(key).or_default().push(ThreadDelta {
                    migrations: migs,
                    ..d
                });
            }
            // Its last switch-out comes after the exit flag: counted by now.
            if exiting_before {
                self.threads.remove(&tid);
                out.forget.push(tid);
            }
        }
        // Entries the programs or a forget already removed.
        seen.sort_unstable();
        self.threads
            .retain(|tid, _| seen.binary_search(tid).is_ok());
        out
    }
}

fn delta(prev: &Prev, st: &ThreadStats) -> ThreadDelta {
    ThreadDelta {
        tid: st.tid,
        tgid: st.tgid,
        comm: crate::host::procs::comm_str(&st.comm),
        cpu_ns: st.cpu_time_ns.saturating_sub(prev.cpu_ns),
        preempted_ns: st.preempted_wait_ns.saturating_sub(prev.preempted_ns),
        runq_ns: st.runq_wait_ns.saturating_sub(prev.runq_ns),
        migrations: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(tid: u32, tgid: u32, cpu_ms: u64) -> ThreadStats {
        ThreadStats {
            tid,
            tgid,
            first_ns: 7,
            cpu_time_ns: cpu_ms * 1_000_000,
            ..ThreadStats::default()
        }
    }

    #[test]
    fn growth_goes_to_the_process_cgroup_and_exits_are_forgotten_a_read_later() {
        let mut a = Aggregator::default();
        a.track(1);
        a.track(2);
        let of = |tgid: u32| match tgid {
            10 => Some(1),
            20 => Some(2),
            _ => None,
        };
        let mut t = st(11, 10, 5);
        t.runq_hist[10] = 3; // three waits of 1-2 us
        t.runq_wait_ns = 4_000;
        t.migrations = [0, 2, 0, 0];
        let r = a.read(&[(11, t), (21, st(21, 20, 0)), (31, st(31, 30, 9))], of);
        assert_eq!(r.forget, [31], "a process no traced cgroup holds");
        assert_eq!(a.counters(1).unwrap().cpu_ns, 5_000_000);
        assert_eq!(a.counters(1).unwrap().migrations, [0, 2, 0, 0]);
        assert_eq!(a.counters(1).unwrap().runq_log2()[10], 3);
        assert_eq!(a.counters(1).unwrap().runq_sum_ns, 4_000);
        assert_eq!(a.counters(2).unwrap().cpu_ns, 0);
        assert_eq!(r.threads[&1][0].cpu_ns, 5_000_000);
        assert!(!r.threads.contains_key(&2), "an idle thread has no delta");

        let mut t = st(11, 10, 8);
        t.runq_hist[10] = 3;
        t.runq_wait_ns = 4_000;
        t.migrations = [0, 2, 0, 0];
        t.flags = FLAG_EXITING;
        let r = a.read(&[(11, t), (21, st(21, 20, 0))], of);
        assert!(r.forget.is_empty(), "its last switch-out may still come");
        assert_eq!(a.counters(1).unwrap().cpu_ns, 8_000_000, "only the growth");
        assert_eq!(a.counters(1).unwrap().runq_log2()[10], 3, "no double count");
        let mut t = st(11, 10, 9);
        t.flags = FLAG_EXITING;
        t.runq_hist[10] = 3;
        t.runq_wait_ns = 4_000;
        t.migrations = [0, 2, 0, 0];
        let r = a.read(&[(11, t), (21, st(21, 20, 0))], of);
        assert_eq!(r.forget, [11]);
        assert_eq!(a.counters(1).unwrap().cpu_ns, 9_000_000);
        assert_eq!(a.tracked_threads(), 1);
    }

    #[test]
    fn a_reused_tid_starts_from_zero_and_untrack_drops_the_series() {
        let mut a = Aggregator::default();
        a.track(1);
        a.read(&[(11, st(11, 10, 50))], |_| Some(1));
        let mut again = st(11, 10, 2);
        again.first_ns = 99;
        a.read(&[(11, again)], |_| Some(1));
        assert_eq!(a.counters(1).unwrap().cpu_ns, 52_000_000);
        a.untrack(1);
        assert!(a.counters(1).is_none());
        assert_eq!(a.tracked_threads(), 0);
        let r = a.read(&[(11, st(11, 10, 60))], |_| Some(1));
        assert_eq!(r.forget, [11], "an untracked cgroup's threads are let go");
    }
}
