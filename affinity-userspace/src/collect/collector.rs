//! Per-interval reads of the kernel maps, turned into a [`Trace`].
//!
//! Each interval the collector reads every thread's cumulative counters,
//! adds the slice of threads that are on a CPU right now (their counters only
//! move at switch-out), records the interval's deltas, and frees the map
//! entries of threads that exited once their final values were read (one
//! interval after `sched_process_exit`, after their last switch-out).
//!
//! Cost per interval, for N threads: the kernel side is read with a few
//! system calls whatever N is (`crate::kernel::probe`), /proc is read only for the
//! threads on a CPU at that moment, and the buffers are kept from one
//! interval to the next, so the work is a pass over N entries with no
//! allocation per thread once a thread is known. How long each read took is
//! recorded in [`Interval::read_ns`] (wall) and [`Interval::read_cpu_ns`]
//! (this thread's CPU time: the wall time stretches when the traced
//! workload keeps every CPU busy).
//!
//! The map access sits behind [`Source`], so this logic is tested without
//! root on recorded values.

use std::{collections::HashMap, time::Instant};

use affinity_common::{CpuPair, FLAG_EXITING, ThreadCpuKey, ThreadStats};

use crate::{
    host::procs,
    model::{Interval, MigrationPair, MigrationsByClass, RunqLatency, ThreadTrace, Trace},
};

/// Where the collector reads from: the kernel maps, or a recording.
pub trait Source {
    /// All per-thread entries, into `out` (cleared first).
    fn threads(&mut self, out: &mut Vec<(u32, ThreadStats)>);
    /// All per-(thread, CPU) on-CPU times not held in
    /// [`ThreadStats::cpu_acc`], into `out` (cleared first).
    fn thread_cpu(&mut self, out: &mut Vec<(ThreadCpuKey, u64)>);
    /// Deletes a thread's entries.
    fn forget(&mut self, tid: u32, cpus: &[u32]);
    /// Migrations per (source, destination) CPU so far, into `out`
    /// (cleared first).
    fn migration_pairs(&mut self, out: &mut Vec<(CpuPair, u64)>);
    /// Events dropped so far.
    fn dropped(&self) -> u64;
    /// `se.sum_exec_runtime` of a thread that is on a CPU now.
    fn running_sum_exec(&self, tgid: u32, tid: u32) -> Option<u64>;
}

impl Source for crate::kernel::probe::Probe {
    fn threads(&mut self, out: &mut Vec<(u32, ThreadStats)>) {
        crate::kernel::probe::Probe::threads(self, out)
    }
    fn thread_cpu(&mut self, out: &mut Vec<(ThreadCpuKey, u64)>) {
        crate::kernel::probe::Probe::thread_cpu(self, out)
    }
    fn forget(&mut self, tid: u32, cpus: &[u32]) {
        self.forget_thread(tid, cpus.iter().copied());
    }
    fn migration_pairs(&mut self, out: &mut Vec<(CpuPair, u64)>) {
        crate::kernel::probe::Probe::migration_pairs(self, out)
    }
    fn dropped(&self) -> u64 {
        crate::kernel::probe::Probe::dropped(self)
    }
    fn running_sum_exec(&self, tgid: u32, tid: u32) -> Option<u64> {
        // A live probe's threads are the live system's.
        procs::thread_sum_exec(&crate::host::Root::host(), tgid, tid)
    }
}

#[derive(Debug, Default)]
struct ThreadAcc {
    trace: ThreadTrace,
    /// Cumulative on-CPU ns at the previous interval.
    prev_cpu_ns: u64,
    /// Migrations at the previous interval.
    prev_migrations: u64,
    /// The kernel's comm bytes behind `trace.comm` (converted on change only).
    comm: [u8; 16],
    /// Interval in which FLAG_EXITING was first seen.
    exiting_since: Option<usize>,
    /// Entries deleted from the maps: values are final.
    gone: bool,
}

/// Accumulates interval samples into a [`Trace`].
#[derive(Debug, Default)]
pub struct Collector {
    /// Every thread seen, in order of first sight; `index` finds one by
    /// tid. (A BTreeMap of the ~300-byte accumulators moved them around
    /// on every insert: 18 ms for the first read of 10,000 threads.)
    threads: Vec<ThreadAcc>,
    index: HashMap<u32, usize>,
    intervals: Vec<Interval>,
    dropped: u64,
    /// The latest (cumulative) pair counts, sorted.
    pairs: Vec<MigrationPair>,
    pair_buf: Vec<(CpuPair, u64)>,
    /// Buffers reused by every [`Collector::sample`].
    thread_buf: Vec<(u32, ThreadStats)>,
    cpu_buf: Vec<(ThreadCpuKey, u64)>,
    forget_buf: Vec<(u32, Vec<u32>)>,
    /// Print each interval's read time on stderr (`AFFIN_TRACE_READ_TIMES`
    /// set; for `cargo xtask bench`).
    log_reads: bool,
}

/// Environment variable that makes the collector print each interval's map
/// read time on stderr: "affin-trace: interval N read in X ms, Y ms of CPU
/// (T threads)".
pub const READ_TIMES_ENV: &str = "AFFIN_TRACE_READ_TIMES";

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self {
            log_reads: std::env::var_os(READ_TIMES_ENV).is_some(),
            ..Self::default()
        }
    }

    /// Reads one interval of `wall_ns` from `src`; `rss_bytes` is the
    /// targets' resident memory now.
    pub fn sample(&mut self, src: &mut dyn Source, wall_ns: u64, rss_bytes: u64) {
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let n = self.intervals.len();
        // THREAD_CPU first, STATS second: a thread that changes CPU between
        // the two reads moves time from its cpu_acc into THREAD_CPU, which
        // this order misses for one interval rather than counting twice.
        let mut cpu_buf = std::mem::take(&mut self.cpu_buf);
        let mut thread_buf = std::mem::take(&mut self.thread_buf);
        let mut forget_buf = std::mem::take(&mut self.forget_buf);
        src.thread_cpu(&mut cpu_buf);
        cpu_buf.sort_unstable_by_key(|(k, _)| (k.tid, k.cpu));
        src.threads(&mut thread_buf);
        let mut interval = Interval {
            wall_ns,
            rss_bytes,
            ..Interval::default()
        };
        forget_buf.clear();
        // Room for every thread not seen yet, at once (no growth moves).
        let new = thread_buf.len().saturating_sub(self.threads.len());
        self.threads.reserve(new);
        self.index.reserve(new);
        for (tid, st) in &thread_buf {
            let (tid, st) = (*tid, st);
            let i = *self.index.entry(tid).or_insert_with(|| {
                self.threads.push(ThreadAcc {
                    trace: ThreadTrace {
                        tid,
                        cpu_ns_per_interval: vec![0; n],
                        ..ThreadTrace::default()
                    },
                    ..ThreadAcc::default()
                });
                self.threads.len() - 1
            });
            let acc = &mut self.threads[i];
            if acc.gone {
                continue; // a stale entry recreated after deletion: ignore
            }
            let t = &mut acc.trace;
            t.tgid = st.tgid;
            if st.comm != acc.comm && st.comm[0] != 0 {
                acc.comm = st.comm;
                t.comm = procs::comm_str(&st.comm);
            }
            // Per-CPU time: THREAD_CPU + cpu_acc + the running slice, set
            // afresh each interval (the values are cumulative); the map's
            // nodes are kept, so known CPUs cost no allocation.
            for v in t.per_cpu_ns.values_mut() {
                *v = 0;
            }
            let from = cpu_buf.partition_point(|(k, _)| k.tid < tid);
            for (k, ns) in cpu_buf[from..].iter().take_while(|(k, _)| k.tid == tid) {
                *t.per_cpu_ns.entry(k.cpu).or_default() += ns;
            }
            if let Some((cpu, ns)) = st.cpu_acc() {
                *t.per_cpu_ns.entry(cpu).or_default() += ns;
            }
            let mut cpu_ns = st.cpu_time_ns;
            if st.running_on != 0 {
                // On a CPU now: its current slice is not in the map yet.
                if let Some(now) = src.running_sum_exec(st.tgid, tid) {
                    let pending = now.saturating_sub(st.last_sum_exec_ns);
                    cpu_ns += pending;
                    *t.per_cpu_ns.entry(st.running_on - 1).or_default() += pending;
                }
            }
            t.per_cpu_ns.retain(|_, v| *v > 0);
            t.cpu_time_ns = cpu_ns.max(t.cpu_time_ns);
            t.voluntary_switches = st.voluntary;
            t.involuntary_switches = st.involuntary;
            t.migrations = MigrationsByClass::from_array(st.migrations);
            set_runq(&mut t.runq, st);
            t.preempted_wait_ns = st.preempted_wait_ns;
            let d_cpu = t.cpu_time_ns.saturating_sub(acc.prev_cpu_ns);
            let migs = t.migrations.total();
            let d_mig = migs.saturating_sub(acc.prev_migrations);
            acc.prev_cpu_ns = t.cpu_time_ns;
            acc.prev_migrations = migs;
            t.cpu_ns_per_interval.resize(n, 0);
            t.cpu_ns_per_interval.push(d_cpu);
            interval.cpu_ns += d_cpu;
            interval.migrations += d_mig;
            if st.flags & FLAG_EXITING != 0 {
                t.exited = true;
                match acc.exiting_since {
                    None => acc.exiting_since = Some(n),
                    Some(_) => {
                        acc.gone = true;
                        forget_buf.push((tid, t.per_cpu_ns.keys().copied().collect()));
                    }
                }
            }
        }
        for (tid, cpus) in &forget_buf {
            src.forget(*tid, cpus);
        }
        // Threads deleted earlier contribute a zero sample.
        for acc in &mut self.threads {
            acc.trace.cpu_ns_per_interval.resize(n + 1, 0);
        }
        self.dropped = src.dropped();
        // Cumulative counts: the latest read is the window's.
        src.migration_pairs(&mut self.pair_buf);
        self.pairs.clear();
        self.pairs
            .extend(self.pair_buf.iter().map(|(k, n)| MigrationPair {
                from: k.from,
                to: k.to,
                count: *n,
            }));
        self.pairs.sort_unstable();
        interval.read_ns = started.elapsed().as_nanos() as u64;
        interval.read_cpu_ns = thread_cpu_ns().saturating_sub(cpu_started);
        if self.log_reads {
            eprintln!(
                "affin-trace: interval {n} read in {:.3} ms, {:.3} ms of CPU ({} threads)",
                interval.read_ns as f64 / 1e6,
                interval.read_cpu_ns as f64 / 1e6,
                thread_buf.len()
            );
        }
        self.intervals.push(interval);
        self.cpu_buf = cpu_buf;
        self.thread_buf = thread_buf;
        self.forget_buf = forget_buf;
    }

    /// Number of intervals read so far.
    pub fn intervals(&self) -> usize {
        self.intervals.len()
    }

    /// Number of threads seen so far.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// How long each interval's read took (ns), in order.
    pub fn read_ns(&self) -> impl Iterator<Item = u64> + '_ {
        self.intervals.iter().map(|i| i.read_ns)
    }

    /// The trace so far. The caller fills in targets and window facts.
    pub fn finish(&self) -> Trace {
        Trace {
            threads: {
                let mut v: Vec<ThreadTrace> =
                    self.threads.iter().map(|a| a.trace.clone()).collect();
                v.sort_unstable_by_key(|t| t.tid);
                v
            },
            intervals: self.intervals.clone(),
            migration_pairs: self.pairs.clone(),
            dropped_events: self.dropped,
            ..Trace::default()
        }
    }
}

/// This thread's CPU time (ns), `CLOCK_THREAD_CPUTIME_ID`; 0 if unavailable.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The run-queue latency of `st`, in place (the histogram's buffer is kept).
fn set_runq(r: &mut RunqLatency, st: &ThreadStats) {
    r.hist.clear();
    r.hist.extend(st.runq_hist.iter().map(|&c| u64::from(c)));
    r.count = st.runq_waits;
    r.total_ns = st.runq_wait_ns;
    r.max_ns = st.runq_max_ns;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct Fake {
        threads: BTreeMap<u32, ThreadStats>,
        cpu: BTreeMap<ThreadCpuKey, u64>,
        running_sum: BTreeMap<u32, u64>,
        forgotten: Vec<u32>,
        pairs: Vec<(CpuPair, u64)>,
    }

    impl Source for Fake {
        fn threads(&mut self, out: &mut Vec<(u32, ThreadStats)>) {
            out.clear();
            out.extend(self.threads.iter().map(|(k, v)| (*k, *v)));
        }
        fn thread_cpu(&mut self, out: &mut Vec<(ThreadCpuKey, u64)>) {
            out.clear();
            // Unordered, as a hash map returns them.
            out.extend(self.cpu.iter().rev().map(|(k, v)| (*k, *v)));
        }
        fn forget(&mut self, tid: u32, cpus: &[u32]) {
            self.forgotten.push(tid);
            self.threads.remove(&tid);
            for &cpu in cpus {
                self.cpu.remove(&ThreadCpuKey { tid, cpu });
            }
        }
        fn migration_pairs(&mut self, out: &mut Vec<(CpuPair, u64)>) {
            out.clear();
            out.extend(self.pairs.iter().copied());
        }
        fn dropped(&self) -> u64 {
            3
        }
        fn running_sum_exec(&self, _tgid: u32, tid: u32) -> Option<u64> {
            self.running_sum.get(&tid).copied()
        }
    }

    fn stats(cpu_time: u64) -> ThreadStats {
        ThreadStats {
            tgid: 100,
            comm: procs::comm_bytes("worker"),
            cpu_time_ns: cpu_time,
            ..ThreadStats::default()
        }
    }

    #[test]
    fn interval_deltas_and_per_cpu_time() {
        let mut src = Fake::default();
        let mut c = Collector::new();
        src.threads.insert(101, stats(300));
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 0 }, 100);
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 200);
        c.sample(&mut src, 1_000, 0);
        src.threads.insert(101, stats(1000));
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 900);
        c.sample(&mut src, 1_000, 0);
        let t = c.finish();
        let th = &t.threads[0];
        assert_eq!(th.comm, "worker");
        assert_eq!(th.cpu_time_ns, 1000);
        assert_eq!(th.cpu_ns_per_interval, vec![300, 700]);
        assert_eq!(th.per_cpu_ns, BTreeMap::from([(0, 100), (1, 900)]));
        assert_eq!(t.intervals[1].cpu_ns, 700);
        assert_eq!(t.dropped_events, 3);
    }

    #[test]
    fn per_cpu_time_adds_what_is_still_in_the_accumulator() {
        use affinity_common::CPU_ACC_SHIFT;
        let mut src = Fake::default();
        let mut c = Collector::new();
        let mut st = stats(900);
        st.cpu_acc = (2 << CPU_ACC_SHIFT) | 300; // 300 ns on CPU 1, not in THREAD_CPU yet
        src.threads.insert(5, st);
        src.cpu.insert(ThreadCpuKey { tid: 5, cpu: 0 }, 400);
        src.cpu.insert(ThreadCpuKey { tid: 5, cpu: 1 }, 200);
        src.cpu.insert(ThreadCpuKey { tid: 6, cpu: 0 }, 77); // another thread's
        c.sample(&mut src, 1_000, 0);
        // It moved to CPU 0: the 300 ns went to THREAD_CPU.
        st.cpu_acc = (1 << CPU_ACC_SHIFT) | 100;
        st.cpu_time_ns = 1_000;
        src.threads.insert(5, st);
        src.cpu.insert(ThreadCpuKey { tid: 5, cpu: 1 }, 500);
        c.sample(&mut src, 1_000, 0);
        let t = c.finish();
        let th = t.threads.iter().find(|t| t.tid == 5).unwrap();
        assert_eq!(th.per_cpu_ns, BTreeMap::from([(0, 500), (1, 500)]));
        assert_eq!(th.cpu_ns_per_interval, vec![900, 100]);
        assert!(t.intervals.iter().all(|i| i.read_ns > 0));
    }

    #[test]
    fn a_running_thread_gets_its_current_slice() {
        let mut src = Fake::default();
        let mut st = stats(500);
        st.last_sum_exec_ns = 10_000;
        st.running_on = 2; // CPU 1
        src.threads.insert(7, st);
        src.running_sum.insert(7, 10_400);
        let mut c = Collector::new();
        c.sample(&mut src, 1_000, 0);
        let th = &c.finish().threads[0];
        assert_eq!(th.cpu_time_ns, 900);
        assert_eq!(th.per_cpu_ns.get(&1), Some(&400));
    }

    #[test]
    fn exited_threads_are_kept_and_deleted_one_interval_later() {
        let mut src = Fake::default();
        let mut st = stats(50);
        st.flags = FLAG_EXITING;
        src.threads.insert(9, st);
        src.threads.insert(10, stats(10));
        let mut c = Collector::new();
        c.sample(&mut src, 1, 0);
        assert!(
            src.forgotten.is_empty(),
            "deleted before its last switch-out"
        );
        c.sample(&mut src, 1, 0);
        assert_eq!(src.forgotten, vec![9]);
        c.sample(&mut src, 1, 0);
        let t = c.finish();
        let th = t.threads.iter().find(|t| t.tid == 9).unwrap();
        assert!(th.exited);
        assert_eq!(th.cpu_time_ns, 50);
        assert_eq!(th.cpu_ns_per_interval, vec![50, 0, 0]);
    }

    #[test]
    fn migration_pairs_are_the_latest_cumulative_read_sorted() {
        let mut src = Fake::default();
        let mut c = Collector::new();
        src.threads.insert(1, stats(10));
        src.pairs = vec![(CpuPair { from: 1, to: 0 }, 4)];
        c.sample(&mut src, 1, 0);
        // Unordered, as a hash map returns them; counts only grow.
        src.pairs = vec![
            (CpuPair { from: 1, to: 0 }, 7),
            (CpuPair { from: 0, to: 1 }, 8),
        ];
        c.sample(&mut src, 1, 0);
        let pair = |from, to, count| MigrationPair { from, to, count };
        assert_eq!(
            c.finish().migration_pairs,
            vec![pair(0, 1, 8), pair(1, 0, 7)]
        );
    }

    #[test]
    fn a_thread_appearing_late_has_zero_early_samples() {
        let mut src = Fake::default();
        src.threads.insert(1, stats(10));
        let mut c = Collector::new();
        c.sample(&mut src, 1, 0);
        src.threads.insert(2, stats(20));
        c.sample(&mut src, 1, 0);
        let t = c.finish();
        assert_eq!(t.threads[1].cpu_ns_per_interval, vec![0, 20]);
        assert_eq!(t.threads[0].cpu_ns_per_interval, vec![10, 0]);
    }
}
