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

use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use affinity_common::{
    CpuPair, FLAG_EXITING, FLAG_HELD_PENDING, FLAG_SEEDED, Neighbour, RUNNABLE_WAKEUP,
    ThreadCpuKey, ThreadStats,
};

use crate::{
    host::procs,
    model::{
        Followed, Interval, MigrationPair, MigrationsByClass, NeighbourTrace, RunqLatency,
        ThreadTrace, Trace,
    },
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
    /// CLOCK_MONOTONIC now (the programs' clock), to close the sleeps and
    /// waits in progress; 0: unknown (they are left open).
    fn now_ns(&self) -> u64 {
        0
    }
    /// Processes charged with the targets' waits, into `out` (cleared).
    fn neighbours(&mut self, out: &mut Vec<(u32, Neighbour)>) {
        out.clear();
    }
    /// New processes of the targets: (followed, missed, joined).
    fn forks(&self) -> (u64, u64, u64) {
        (0, 0, 0)
    }
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
    fn now_ns(&self) -> u64 {
        crate::kernel::probe::monotonic_ns()
    }
    fn neighbours(&mut self, out: &mut Vec<(u32, Neighbour)>) {
        crate::kernel::probe::Probe::neighbours(self, out)
    }
    fn forks(&self) -> (u64, u64, u64) {
        crate::kernel::probe::Probe::forks(self)
    }
}

/// Where a thread is in its life, as the collector sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Life {
    /// No `FLAG_EXITING` seen yet.
    #[default]
    Live,
    /// `FLAG_EXITING` first seen in interval `since`: its last switch-out
    /// may still come, so its entries are kept one more interval.
    Exiting { since: usize },
    /// Entries deleted from the maps: the values are final.
    Gone,
}

/// What the collector keeps per thread beside its [`ThreadTrace`].
#[derive(Debug, Default)]
struct ThreadAcc {
    /// Cumulative on-CPU ns at the previous interval.
    prev_cpu_ns: u64,
    /// Migrations at the previous interval.
    prev_migrations: u64,
    /// Context switches at the previous interval.
    prev_switches: u64,
    /// Runnable wait (preempted + wakeup) at the previous interval (ns).
    prev_runnable_ns: u64,
    /// The kernel's comm bytes behind the trace's `comm` (converted on
    /// change only).
    comm: [u8; 16],
    life: Life,
}

/// The window's facts known when it starts, for the [`Trace`].
#[derive(Clone, Debug, Default)]
pub struct WindowInfo {
    /// Target processes (tgids).
    pub pids: Vec<u32>,
    /// Requested threads (`--tid`; empty: all).
    pub tids: Vec<u32>,
    /// Interval between map reads (ns).
    pub interval_ns: u64,
    /// How the programs were attached.
    pub attach_mode: crate::model::AttachMode,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// MemTotal (bytes).
    pub mem_total_bytes: u64,
}

/// The window's facts known when it ends.
#[derive(Clone, Debug, Default)]
pub struct WindowEnd {
    /// Wall-clock length of the window (ns).
    pub duration_ns: u64,
    /// System-wide busy ns per CPU over the window.
    pub system_busy_ns: std::collections::BTreeMap<u32, u64>,
    /// System-wide hypervisor steal ns per CPU over the window.
    pub system_steal_ns: std::collections::BTreeMap<u32, u64>,
    /// Targets that exited before the window ended.
    pub exited_pids: Vec<u32>,
}

/// Accumulates interval samples into a [`Trace`].
#[derive(Debug, Default)]
pub struct Collector {
    /// The trace so far: its threads in order of first sight (sorted by
    /// tid before anyone sees it, see [`Collector::snapshot`]); `accs` runs
    /// parallel to `trace.threads`, and `index` finds a thread by tid. (A
    /// BTreeMap of the ~300-byte accumulators moved them around on every
    /// insert: 18 ms for the first read of 10,000 threads.)
    trace: Trace,
    accs: Vec<ThreadAcc>,
    index: HashMap<u32, usize>,
    pair_buf: Vec<(CpuPair, u64)>,
    /// Buffers reused by every [`Collector::sample`].
    thread_buf: Vec<(u32, ThreadStats)>,
    cpu_buf: Vec<(ThreadCpuKey, u64)>,
    forget_buf: Vec<(u32, Vec<u32>)>,
    neighbour_buf: Vec<(u32, Neighbour)>,
    /// Every thread's on-CPU ns per CPU at the previous interval, summed:
    /// the CPUs whose sum grew are the interval's CPUs.
    prev_per_cpu: BTreeMap<u32, u64>,
    /// Print each interval's read time on stderr (`AFFIN_TRACE_READ_TIMES`
    /// set; for `cargo xtask bench`).
    log_reads: bool,
}

/// Environment variable that makes the collector print each interval's map
/// read time on stderr: "affin-trace: interval N read in X ms, Y ms of CPU
/// (T threads)". Read only with the `bench-hooks` feature.
#[cfg(feature = "bench-hooks")]
pub const READ_TIMES_ENV: &str = "AFFIN_TRACE_READ_TIMES";

/// Whether the bench asked for per-read timings ([`READ_TIMES_ENV`]).
#[cfg(feature = "bench-hooks")]
fn read_times_hook() -> bool {
    std::env::var_os(READ_TIMES_ENV).is_some()
}

/// Without the `bench-hooks` feature nothing asks for them.
#[cfg(not(feature = "bench-hooks"))]
fn read_times_hook() -> bool {
    false
}

impl Collector {
    /// An empty collector for the window `info` describes.
    pub fn new(info: WindowInfo) -> Self {
        Self {
            trace: Trace {
                pids: info.pids,
                tids: info.tids,
                interval_ns: info.interval_ns,
                attach_mode: info.attach_mode,
                nr_cpus: info.nr_cpus,
                mem_total_bytes: info.mem_total_bytes,
                ..Trace::default()
            },
            log_reads: read_times_hook(),
            ..Self::default()
        }
    }

    /// Reads one interval of `wall_ns` from `src`; `rss_bytes` is the
    /// targets' resident memory now.
    pub fn sample(&mut self, src: &mut dyn Source, wall_ns: u64, rss_bytes: u64) {
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let n = self.trace.intervals.len();
        let mut cpu_buf = std::mem::take(&mut self.cpu_buf);
        let mut thread_buf = std::mem::take(&mut self.thread_buf);
        read_maps(src, &mut cpu_buf, &mut thread_buf);
        let now = src.now_ns();
        let mut interval = Interval {
            wall_ns,
            rss_bytes,
            ..Interval::default()
        };
        self.forget_buf.clear();
        self.reserve_new(thread_buf.len());
        for (tid, st) in &thread_buf {
            let i = self.slot_of(*tid, n);
            if self.accs[i].life == Life::Gone {
                continue; // a stale entry recreated after deletion: ignore
            }
            let from = cpu_buf.partition_point(|(k, _)| k.tid < *tid);
            let cpu_rows = cpu_buf[from..].iter().take_while(|(k, _)| k.tid == *tid);
            let running = running_slice(src, *tid, st);
            let d = self.update_thread(i, st, cpu_rows, running, now, n);
            interval.cpu_ns += d.cpu_ns;
            interval.migrations += d.migrations;
            interval.switches += d.switches;
            interval.runnable_ns += d.runnable_ns;
        }
        for (tid, cpus) in &self.forget_buf {
            src.forget(*tid, cpus);
        }
        // Threads deleted earlier contribute a zero sample.
        for t in &mut self.trace.threads {
            t.cpu_ns_per_interval.resize(n + 1, 0);
        }
        interval.cpus = self.cpus_used();
        self.read_totals(src);
        interval.read_ns = started.elapsed().as_nanos() as u64;
        interval.read_cpu_ns = thread_cpu_ns().saturating_sub(cpu_started);
        if self.log_reads {
            log_read(n, &interval, thread_buf.len());
        }
        self.trace.intervals.push(interval);
        self.cpu_buf = cpu_buf;
        self.thread_buf = thread_buf;
    }

    /// Room for every thread not seen yet, at once (no growth moves).
    fn reserve_new(&mut self, seen: usize) {
        let new = seen.saturating_sub(self.accs.len());
        self.trace.threads.reserve(new);
        self.accs.reserve(new);
        self.index.reserve(new);
    }

    /// The index of `tid`'s thread, created (with `n` zero samples) at
    /// first sight.
    fn slot_of(&mut self, tid: u32, n: usize) -> usize {
        *self.index.entry(tid).or_insert_with(|| {
            self.trace.threads.push(ThreadTrace {
                tid,
                cpu_ns_per_interval: vec![0; n],
                ..ThreadTrace::default()
            });
            self.accs.push(ThreadAcc::default());
            self.accs.len() - 1
        })
    }

    /// Sets thread `i` from its entry `st`, its `THREAD_CPU` rows and its
    /// running slice, at `now` (CLOCK_MONOTONIC ns); returns its deltas
    /// over the interval.
    fn update_thread<'a>(
        &mut self,
        i: usize,
        st: &ThreadStats,
        cpu_rows: impl Iterator<Item = &'a (ThreadCpuKey, u64)>,
        running: Option<(u32, u64)>,
        now: u64,
        n: usize,
    ) -> Deltas {
        let (acc, t) = (&mut self.accs[i], &mut self.trace.threads[i]);
        t.tgid = st.tgid;
        if st.comm != acc.comm && st.comm[0] != 0 {
            acc.comm = st.comm;
            t.comm = procs::comm_str(&st.comm);
            t.comm_bytes = procs::comm_hex(&st.comm);
        }
        set_per_cpu(t, st, cpu_rows, running);
        let pending = running.map_or(0, |(_, ns)| ns);
        t.cpu_time_ns = (st.cpu_time_ns + pending).max(t.cpu_time_ns);
        t.voluntary_switches = st.voluntary;
        t.involuntary_switches = st.involuntary;
        t.migrations = MigrationsByClass::from_array(st.migrations);
        set_runq(&mut t.runq, st);
        t.preempted_wait_ns = st.preempted_wait_ns;
        set_wait_split(t, st, now);
        t.held_pending = st.flags & FLAG_HELD_PENDING != 0;
        let migs = t.migrations.total();
        let switches = t.voluntary_switches.saturating_add(t.involuntary_switches);
        let runnable = t.preempted_wait_ns.saturating_add(t.runq.total_ns);
        let d = Deltas {
            cpu_ns: t.cpu_time_ns.saturating_sub(acc.prev_cpu_ns),
            migrations: migs.saturating_sub(acc.prev_migrations),
            switches: switches.saturating_sub(acc.prev_switches),
            runnable_ns: runnable.saturating_sub(acc.prev_runnable_ns),
        };
        acc.prev_cpu_ns = t.cpu_time_ns;
        acc.prev_migrations = migs;
        acc.prev_switches = switches;
        acc.prev_runnable_ns = runnable;
        t.cpu_ns_per_interval.resize(n, 0);
        t.cpu_ns_per_interval.push(d.cpu_ns);
        if st.flags & FLAG_EXITING != 0 {
            t.exited = true;
            acc.life = match acc.life {
                Life::Live => Life::Exiting { since: n },
                Life::Exiting { .. } | Life::Gone => {
                    self.forget_buf
                        .push((t.tid, t.per_cpu_ns.keys().copied().collect()));
                    Life::Gone
                }
            };
        }
        d
    }

    /// The CPUs the threads ran on in the interval: those whose summed
    /// on-CPU time grew.
    fn cpus_used(&mut self) -> Vec<u32> {
        let mut per_cpu: BTreeMap<u32, u64> = BTreeMap::new();
        for t in &self.trace.threads {
            for (&c, &ns) in &t.per_cpu_ns {
                *per_cpu.entry(c).or_default() += ns;
            }
        }
        let cpus = per_cpu
            .iter()
            .filter(|&(c, &ns)| ns > self.prev_per_cpu.get(c).copied().unwrap_or(0))
            .map(|(&c, _)| c)
            .collect();
        self.prev_per_cpu = per_cpu;
        cpus
    }

    /// The counters that are cumulative over all threads: the latest read
    /// is the window's.
    fn read_totals(&mut self, src: &mut dyn Source) {
        self.trace.dropped_events = src.dropped();
        src.migration_pairs(&mut self.pair_buf);
        let pairs = &mut self.trace.migration_pairs;
        pairs.clear();
        pairs.extend(self.pair_buf.iter().map(|(k, n)| MigrationPair {
            from: k.from,
            to: k.to,
            count: *n,
        }));
        pairs.sort_unstable();
        src.neighbours(&mut self.neighbour_buf);
        let neighbours = &mut self.trace.neighbours;
        neighbours.clear();
        neighbours.extend(
            self.neighbour_buf
                .iter()
                .filter(|(_, n)| n.wait_ns > 0)
                .map(|(tgid, n)| NeighbourTrace {
                    tgid: *tgid,
                    comm: procs::comm_str(&n.comm),
                    cgroup: String::new(),
                    wait_ns: n.wait_ns,
                    waits: n.waits,
                }),
        );
        neighbours.sort_unstable_by_key(|n| (std::cmp::Reverse(n.wait_ns), n.tgid));
        let (followed, missed, joined) = src.forks();
        self.trace.followed = Followed {
            followed,
            missed,
            joined,
            ..std::mem::take(&mut self.trace.followed)
        };
    }

    /// Number of intervals read so far.
    pub fn intervals(&self) -> usize {
        self.trace.intervals.len()
    }

    /// Number of threads seen so far.
    pub fn thread_count(&self) -> usize {
        self.trace.threads.len()
    }

    /// How long each interval's read took (ns), in order.
    pub fn read_ns(&self) -> impl Iterator<Item = u64> + '_ {
        self.trace.intervals.iter().map(|i| i.read_ns)
    }

    /// The trace so far, `duration_ns` long, without a copy: a live view
    /// reads it each interval. Threads are sorted by tid (a pass that
    /// finds them sorted, the usual case, costs one comparison each).
    pub fn snapshot(&mut self, duration_ns: u64) -> &Trace {
        self.sort_by_tid();
        self.trace.duration_ns = duration_ns;
        &self.trace
    }

    /// `(tgid, cgroup id)` of each neighbour charged so far.
    pub fn neighbour_cgroups(&self) -> Vec<(u32, u64)> {
        self.neighbour_buf
            .iter()
            .map(|(t, n)| (*t, n.cgroup_id))
            .collect()
    }

    /// The whole trace.
    pub fn finish(mut self, end: WindowEnd) -> Trace {
        self.sort_by_tid();
        self.trace.duration_ns = end.duration_ns;
        self.trace.system_busy_ns = end.system_busy_ns;
        self.trace.system_steal_ns = end.system_steal_ns;
        self.trace.exited_pids = end.exited_pids;
        self.trace
    }

    /// Sorts the threads (and their accumulators) by tid, as the trace
    /// promises; new threads mostly come with higher tids, so this is
    /// rarely more than the check.
    fn sort_by_tid(&mut self) {
        if self.trace.threads.is_sorted_by_key(|t| t.tid) {
            return;
        }
        let mut order: Vec<usize> = (0..self.accs.len()).collect();
        order.sort_unstable_by_key(|&i| self.trace.threads[i].tid);
        let mut threads: Vec<Option<ThreadTrace>> =
            self.trace.threads.drain(..).map(Some).collect();
        let mut accs: Vec<Option<ThreadAcc>> = self.accs.drain(..).map(Some).collect();
        for &i in &order {
            self.trace.threads.extend(threads[i].take());
            self.accs.extend(accs[i].take());
        }
        self.index.clear();
        self.index.extend(
            self.trace
                .threads
                .iter()
                .enumerate()
                .map(|(i, t)| (t.tid, i)),
        );
    }
}

/// THREAD_CPU first, STATS second: a thread that changes CPU between the
/// two reads moves time from its cpu_acc into THREAD_CPU, which this order
/// misses for one interval rather than counting twice.
fn read_maps(
    src: &mut dyn Source,
    cpu_buf: &mut Vec<(ThreadCpuKey, u64)>,
    thread_buf: &mut Vec<(u32, ThreadStats)>,
) {
    src.thread_cpu(cpu_buf);
    cpu_buf.sort_unstable_by_key(|(k, _)| (k.tid, k.cpu));
    src.threads(thread_buf);
}

/// A thread on a CPU now: its current slice is not in the map yet. Returns
/// (CPU, ns of the slice so far).
fn running_slice(src: &dyn Source, tid: u32, st: &ThreadStats) -> Option<(u32, u64)> {
    if st.running_on == 0 {
        return None;
    }
    let now = src.running_sum_exec(st.tgid, tid)?;
    Some((st.running_on - 1, now.saturating_sub(st.last_sum_exec_ns)))
}

/// Per-CPU time: THREAD_CPU + cpu_acc + the running slice, set afresh each
/// interval (the values are cumulative); the map's nodes are kept, so
/// known CPUs cost no allocation.
fn set_per_cpu<'a>(
    t: &mut ThreadTrace,
    st: &ThreadStats,
    cpu_rows: impl Iterator<Item = &'a (ThreadCpuKey, u64)>,
    running: Option<(u32, u64)>,
) {
    for v in t.per_cpu_ns.values_mut() {
        *v = 0;
    }
    for (k, ns) in cpu_rows {
        *t.per_cpu_ns.entry(k.cpu).or_default() += ns;
    }
    if let Some((cpu, ns)) = st.cpu_acc() {
        *t.per_cpu_ns.entry(cpu).or_default() += ns;
    }
    if let Some((cpu, ns)) = running {
        *t.per_cpu_ns.entry(cpu).or_default() += ns;
    }
    t.per_cpu_ns.retain(|_, v| *v > 0);
}

fn log_read(n: usize, interval: &Interval, threads: usize) {
    eprintln!(
        "affin-trace: interval {n} read in {:.3} ms, {:.3} ms of CPU ({threads} threads)",
        interval.read_ns as f64 / 1e6,
        interval.read_cpu_ns as f64 / 1e6,
    );
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

/// One thread's counts over one interval.
struct Deltas {
    cpu_ns: u64,
    migrations: u64,
    switches: u64,
    runnable_ns: u64,
}

/// Splits the thread's traced lifetime into running (`cpu_time_ns`, set
/// already), runnable and sleeping, each from the kernel's events; what is
/// in progress at `now` (CLOCK_MONOTONIC, 0: unknown) is closed at `now`.
/// A preempted wait in progress is not (the kernel adds it to `run_delay`
/// when it ends): at most one wait, a scheduler slice, short.
fn set_wait_split(t: &mut ThreadTrace, st: &ThreadStats, now: u64) {
    let dead = st.last_ns != 0;
    let end = if dead { st.last_ns } else { now };
    let open = |since: u64| {
        if since != 0 && !dead && now > since {
            now - since
        } else {
            0
        }
    };
    let mut runnable = st.runq_wait_ns.saturating_add(st.preempted_wait_ns);
    if st.runnable_kind == RUNNABLE_WAKEUP && st.running_on == 0 {
        runnable = runnable.saturating_add(open(st.runnable_since_ns));
    }
    let mut sleep = st.sleep_ns.saturating_add(open(st.sleep_since_ns));
    if st.flags & FLAG_SEEDED != 0 {
        // No event since it was seeded: asleep all along (a runnable or
        // running thread has a switch within a scheduler tick or two).
        sleep = sleep.saturating_add(open(st.first_ns));
    }
    t.runnable_ns = runnable;
    t.sleep_ns = sleep;
    t.lifetime_ns = if st.first_ns != 0 && end > st.first_ns {
        end - st.first_ns
    } else {
        0
    };
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
        let mut c = Collector::new(WindowInfo::default());
        src.threads.insert(101, stats(300));
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 0 }, 100);
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 200);
        c.sample(&mut src, 1_000, 0);
        src.threads.insert(101, stats(1000));
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 900);
        c.sample(&mut src, 1_000, 0);
        let t = c.finish(WindowEnd::default());
        let th = &t.threads[0];
        assert_eq!(th.comm, "worker");
        assert_eq!(th.cpu_time_ns, 1000);
        assert_eq!(th.cpu_ns_per_interval, vec![300, 700]);
        assert_eq!(th.per_cpu_ns, BTreeMap::from([(0, 100), (1, 900)]));
        assert_eq!(t.intervals[1].cpu_ns, 700);
        assert_eq!(t.dropped_events, 3);
    }

    #[test]
    fn intervals_count_switches_runnable_wait_and_the_cpus_used() {
        let mut src = Fake::default();
        let mut c = Collector::new(WindowInfo::default());
        let mut st = stats(300);
        st.voluntary = 4;
        st.involuntary = 1;
        st.preempted_wait_ns = 50;
        src.threads.insert(101, st);
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 0 }, 100);
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 200);
        c.sample(&mut src, 1_000, 0);
        st.cpu_time_ns = 1_000;
        st.voluntary = 10;
        st.involuntary = 2;
        st.preempted_wait_ns = 80;
        src.threads.insert(101, st);
        src.cpu.insert(ThreadCpuKey { tid: 101, cpu: 1 }, 900);
        c.sample(&mut src, 1_000, 0);
        let t = c.finish(WindowEnd::default());
        assert_eq!(t.intervals[0].switches, 5);
        assert_eq!(t.intervals[1].switches, 7);
        assert_eq!(t.intervals[0].cpus, vec![0, 1]);
        assert_eq!(t.intervals[1].cpus, vec![1], "only CPU 1 grew");
        let wake = t.threads[0].runq.total_ns;
        assert_eq!(t.intervals[0].runnable_ns, 50 + wake);
        assert_eq!(t.intervals[1].runnable_ns, 30);
    }

    #[test]
    fn per_cpu_time_adds_what_is_still_in_the_accumulator() {
        use affinity_common::CPU_ACC_SHIFT;
        let mut src = Fake::default();
        let mut c = Collector::new(WindowInfo::default());
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
        let t = c.finish(WindowEnd::default());
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
        let mut c = Collector::new(WindowInfo::default());
        c.sample(&mut src, 1_000, 0);
        let th = &c.finish(WindowEnd::default()).threads[0];
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
        let mut c = Collector::new(WindowInfo::default());
        c.sample(&mut src, 1, 0);
        assert!(
            src.forgotten.is_empty(),
            "deleted before its last switch-out"
        );
        c.sample(&mut src, 1, 0);
        assert_eq!(src.forgotten, vec![9]);
        c.sample(&mut src, 1, 0);
        let t = c.finish(WindowEnd::default());
        let th = t.threads.iter().find(|t| t.tid == 9).unwrap();
        assert!(th.exited);
        assert_eq!(th.cpu_time_ns, 50);
        assert_eq!(th.cpu_ns_per_interval, vec![50, 0, 0]);
    }

    #[test]
    fn migration_pairs_are_the_latest_cumulative_read_sorted() {
        let mut src = Fake::default();
        let mut c = Collector::new(WindowInfo::default());
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
            c.finish(WindowEnd::default()).migration_pairs,
            vec![pair(0, 1, 8), pair(1, 0, 7)]
        );
    }

    #[test]
    fn a_thread_appearing_late_has_zero_early_samples() {
        let mut src = Fake::default();
        src.threads.insert(1, stats(10));
        let mut c = Collector::new(WindowInfo::default());
        c.sample(&mut src, 1, 0);
        src.threads.insert(2, stats(20));
        c.sample(&mut src, 1, 0);
        let t = c.finish(WindowEnd::default());
        assert_eq!(t.threads[1].cpu_ns_per_interval, vec![0, 20]);
        assert_eq!(t.threads[0].cpu_ns_per_interval, vec![10, 0]);
    }

    #[test]
    fn the_snapshot_is_sorted_by_tid_and_the_trace_whole() {
        let mut src = Fake::default();
        let mut c = Collector::new(WindowInfo {
            pids: vec![100],
            interval_ns: 1_000,
            nr_cpus: 2,
            ..WindowInfo::default()
        });
        src.threads.insert(30, stats(10));
        c.sample(&mut src, 1_000, 0);
        // A lower tid seen later (a recycled pid, a seed order).
        src.threads.insert(4, stats(20));
        c.sample(&mut src, 1_000, 0);
        let snap = c.snapshot(2_000);
        assert_eq!(
            snap.threads.iter().map(|t| t.tid).collect::<Vec<_>>(),
            [4, 30]
        );
        assert_eq!(snap.duration_ns, 2_000);
        assert_eq!(snap.pids, [100]);
        // Still one thread per tid after the reorder.
        src.threads.insert(30, stats(50));
        c.sample(&mut src, 1_000, 0);
        let t = c.finish(WindowEnd {
            duration_ns: 3_000,
            exited_pids: vec![100],
            ..WindowEnd::default()
        });
        assert_eq!(t.threads.len(), 2);
        assert_eq!(t.threads[1].cpu_ns_per_interval, vec![10, 0, 40]);
        assert_eq!(t.threads[0].cpu_ns_per_interval, vec![0, 20, 0]);
        assert_eq!((t.duration_ns, t.interval_ns, t.nr_cpus), (3_000, 1_000, 2));
        assert_eq!(t.exited_pids, [100]);
    }
}
