//! Loading and attaching the BPF programs, and the maps they fill.
//!
//! Tracepoints: sched_switch, sched_migrate_task, sched_wakeup,
//! sched_wakeup_new, sched_process_exit, sched_process_fork,
//! cgroup_attach_task (see affinity-ebpf). The tp_btf set is
//! preferred; the raw_tp set is the fallback where tp_btf cannot attach.
//!
//! Per-thread counters live in `STATS`, an array of slots; `SLOTS` maps a
//! tid to its slot and `ALLOC` counts the slots handed out. All three are
//! mmapped here, so a map read is a walk over memory, not a system call per
//! thread; slots of exited threads go back to the kernel side through the
//! `FREE_SLOTS` queue. Per-CPU time that left `ThreadStats::cpu_acc` is in the
//! `THREAD_CPU` hash, read with `BPF_MAP_LOOKUP_BATCH`. Migrations per
//! (source, destination) CPU are in the small `MIGRATION_PAIRS` hash.
//!
//! With a timeline (`--timeline`), the programs also write events into the
//! `TIMELINE` ring buffer, which [`Probe::drain_timeline`] empties; without
//! it the ring is one page and the programs' `TIMELINE_ON` constant is 0,
//! so the verifier removes the code that writes to it.
//!
//! Nothing is pinned: the programs live as long as the [`Probe`] (its `Drop`
//! closes the link fds and unmaps the maps), and the kernel detaches them
//! when this process ends by any path, a panic or SIGKILL included.

use std::{
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use affinity_common::{
    CpuPair, CpuTopo, DROP_KINDS, FLAG_SEEDED, FORK_FOLLOWED, FORK_JOINED, FORK_MISSED, Neighbour,
    RUN_DELAY_UNKNOWN, TaskOffsets, ThreadCpuKey, ThreadStats, TimelineEvent,
};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, Queue, RingBuf},
    programs::{BtfTracePoint, RawTracePoint},
};
use thiserror::Error;

use crate::{kernel::btf, kernel::log::KernelLog, model::AttachMode, model::topology::Topology};

/// The BPF object, built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/affinity"));

/// Number of tracepoints.
pub const NR_TRACEPOINTS: usize = 7;

/// The tracepoints, in attach order.
pub const TRACEPOINTS: [&str; NR_TRACEPOINTS] = [
    "sched_switch",
    "sched_migrate_task",
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_process_exit",
    "sched_process_fork",
    "cgroup_attach_task",
];

/// What to attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachChoice {
    /// tp_btf, falling back to raw_tp.
    Auto,
    /// tp_btf only.
    TpBtf,
    /// raw_tp only.
    RawTp,
}

/// Sizes and choices for [`Probe::load`].
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Capacity of the per-thread map; threads past it are counted as drops.
    pub max_threads: u32,
    /// Program set to attach.
    pub attach: AttachChoice,
    /// Kernel offsets (from [`crate::kernel::btf::task_offsets`]).
    pub offsets: TaskOffsets,
    /// /proc/sys/kernel/pid_max: sizes the target bitmap and `SLOTS`.
    pub pid_max: u32,
    /// Bytes of the timeline ring buffer (a power of two, at least a page),
    /// `None` without a timeline.
    pub timeline_bytes: Option<u32>,
    /// A CPU quota binds the targets: load the sched_switch path of the
    /// CFS bandwidth programs (it costs the verifier ~3 s here, so only
    /// when it can be of use).
    pub bandwidth: bool,
    /// Print the programs' log records on stderr (`--verbose`); they are
    /// counted either way.
    pub log_to_stderr: bool,
    /// New processes of a target become targets (command mode, `--follow`,
    /// `--cgroup`, `--comm`).
    pub follow: bool,
    /// Inode number of the `--cgroup` directory: processes that join it
    /// become targets (0: none).
    pub join_cgroup: u64,
    /// `serve`: trace the processes of the cgroups in `CGROUP_TARGETS`
    /// ([`Probe::add_cgroup`]), joined or forked there.
    pub cgroup_set: bool,
}

/// Most entries of `MIGRATION_PAIRS`: every pair of up to 128 CPUs; past
/// that, pairs a process really uses are far fewer than CPUs squared, and
/// a full map is counted as dropped events.
pub const MAX_PAIRS: u32 = 16_384;

/// A load or attach failure.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// The object or a map could not be loaded.
    #[error("loading the BPF programs failed: {0}")]
    Load(String),
    /// A program could not be attached.
    #[error("attaching {kind} program to {tracepoint} failed: {reason}")]
    Attach {
        /// tp_btf or raw_tp.
        kind: &'static str,
        /// Tracepoint name.
        tracepoint: &'static str,
        /// The kernel's or aya's words.
        reason: String,
    },
    /// A map operation failed.
    #[error("BPF map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What went wrong.
        reason: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        reason: e.to_string(),
    }
}

/// A shared, writable mapping of a `BPF_F_MMAPABLE` array map.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through
// atomics or volatile reads and writes.
unsafe impl Send for Mmap {}

impl Mmap {
    /// Maps an array of `entries` values of `value_size` bytes (the kernel
    /// stores them `value_size` rounded up to 8 apart, from a page boundary).
    fn new(
        name: &'static str,
        fd: BorrowedFd<'_>,
        entries: u32,
        value_size: usize,
    ) -> Result<Mmap, ProbeError> {
        let page = procfs::page_size() as usize;
        let len = (entries as usize * value_size.next_multiple_of(8)).next_multiple_of(page);
        // SAFETY: a fresh mapping of a map fd, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ProbeError::Map {
                map: name,
                reason: format!("mmap: {}", std::io::Error::last_os_error()),
            });
        }
        Ok(Mmap {
            ptr: NonNull::new(ptr.cast()).ok_or(ProbeError::Map {
                map: name,
                reason: "mmap returned NULL".into(),
            })?,
            len,
        })
    }

    /// The `u32` at byte offset `at` (in bounds, 4-aligned).
    fn u32(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= self.len && at.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked), and the mapping outlives
        // the reference.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(at).cast()) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `STATS`, `SLOTS`, `ALLOC` and `CURRENT`, mapped.
struct Slots {
    stats: Mmap,
    slots: Mmap,
    alloc: Mmap,
    current: Mmap,
    /// `CURRENT` has one entry per possible CPU.
    nr_cpus: u32,
    /// Slots `1..=max_threads` exist.
    max_threads: u32,
    /// `SLOTS` holds tids `0..pid_max`.
    pid_max: u32,
}

impl Slots {
    const STATS_SIZE: usize = size_of::<ThreadStats>();

    /// `SLOTS[tid]` (userspace sees the `[u32; 2]` entries as one u32 array).
    fn cell(&self, tid: u32) -> Option<&AtomicU32> {
        (tid < self.pid_max).then(|| self.slots.u32(tid as usize * 4))
    }

    fn stats_ptr(&self, slot: u32) -> *mut ThreadStats {
        assert!((1..=self.max_threads).contains(&slot));
        // SAFETY: in bounds (checked; STATS has max_threads + 1 entries).
        unsafe {
            self.stats
                .ptr
                .as_ptr()
                .add(slot as usize * Self::STATS_SIZE)
                .cast()
        }
    }

    /// A copy of a slot's counters (fields may be mid-update: each is read
    /// once, whole; a torn read of one counter is impossible, as all are
    /// naturally aligned).
    fn read(&self, slot: u32) -> ThreadStats {
        // SAFETY: in bounds, aligned, the kernel writes it concurrently.
        unsafe { self.stats_ptr(slot).read_volatile() }
    }

    fn write(&self, slot: u32, v: ThreadStats) {
        // SAFETY: as above; the slot is unpublished or being freed.
        unsafe { self.stats_ptr(slot).write_volatile(v) }
    }

    /// The highest slot ever handed out.
    fn high_water(&self) -> u32 {
        self.alloc
            .u32(0)
            .load(Ordering::Acquire)
            .min(self.max_threads)
    }
}

/// Reusable buffers for `BPF_MAP_LOOKUP_BATCH` of `THREAD_CPU`.
#[derive(Default)]
struct Batch {
    keys: Vec<ThreadCpuKey>,
    values: Vec<u64>,
    /// The kernel refused batch lookups (before 5.6): iterate instead.
    unsupported: bool,
}

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per batch call: bounds the buffers, and far above the
/// entries one hash bucket holds (a bucket that does not fit is ENOSPC).
const BATCH: usize = 4096;

/// Loaded and attached programs plus their maps.
pub struct Probe {
    // The maps are unmapped before `ebpf` closes its fds (field order).
    slots: Slots,
    targets: Array<MapData, u64>,
    free_slots: Queue<MapData, u32>,
    thread_cpu: HashMap<MapData, ThreadCpuKey, u64>,
    thread_cpu_fd: i32,
    drops: PerCpuArray<MapData, u64>,
    pairs: HashMap<MapData, CpuPair, u64>,
    timeline: Option<RingBuf<MapData>>,
    timeline_lost: PerCpuArray<MapData, u64>,
    neighbours: HashMap<MapData, u32, Neighbour>,
    forks: PerCpuArray<MapData, u64>,
    cgroup_targets: HashMap<MapData, u64, u32>,
    joined: HashMap<MapData, u32, u64>,
    timeline_bytes: u32,
    batch: Batch,
    log: Option<KernelLog>,
    ebpf: Ebpf,
    mode: AttachMode,
    max_threads: u32,
    /// Loaded with the sched_switch path of the bandwidth programs.
    bandwidth_ready: bool,
    /// The agent's per-cgroup throttle histograms are on.
    bandwidth_groups: bool,
}

impl Probe {
    /// Loads the object, fills the topology table and attaches the programs.
    /// No process is traced until [`Probe::add_target`].
    pub fn load(cfg: &ProbeConfig, topo: &Topology) -> Result<Probe, ProbeError> {
        // The typedef ids tp_btf attaches by, cached per kernel build with
        // the offsets (resolved on a miss, which is when the offsets were
        // resolved too).
        let ids = btf::kernel_btf_cached(Path::new(btf::VMLINUX_BTF), Path::new(btf::CACHE_DIR))
            .map(|k| k.tracepoint_ids)
            .map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")));
        match cfg.attach {
            AttachChoice::TpBtf => Self::load_mode(cfg, topo, &ids?, AttachMode::TpBtf),
            AttachChoice::RawTp => {
                Self::load_mode(cfg, topo, &[0; NR_TRACEPOINTS], AttachMode::RawTp)
            }
            AttachChoice::Auto => ids
                .and_then(|ids| Self::load_mode(cfg, topo, &ids, AttachMode::TpBtf))
                .or_else(|e| {
                    eprintln!("affin-trace: {e}; continuing with raw tracepoints");
                    Self::load_mode(cfg, topo, &[0; NR_TRACEPOINTS], AttachMode::RawTp)
                }),
        }
    }

    fn load_mode(
        cfg: &ProbeConfig,
        topo: &Topology,
        ids: &[u32; NR_TRACEPOINTS],
        mode: AttachMode,
    ) -> Result<Probe, ProbeError> {
        let sz = Sizes::new(cfg)?;
        let kernel_btf = attach_btf(ids)?;
        // The sched_switch path of the bandwidth programs (kernel/bandwidth.rs).
        let throttled_off = if cfg.bandwidth {
            crate::kernel::bandwidth::throttled_offset()
        } else {
            0
        };
        let mut ebpf = load_object(cfg, &kernel_btf, &sz, throttled_off)?;
        write_cpu_topo(&mut ebpf, topo, sz.nr_possible)?;
        let slots = Slots {
            stats: mmap(&ebpf, "STATS", sz.max_threads + 1, Slots::STATS_SIZE)?,
            slots: mmap(&ebpf, "SLOTS", sz.pid_max.div_ceil(2), 8)?,
            alloc: mmap(&ebpf, "ALLOC", 1, 4)?,
            current: mmap(&ebpf, "CURRENT", sz.nr_possible, 4)?,
            nr_cpus: sz.nr_possible,
            max_threads: sz.max_threads,
            pid_max: sz.pid_max,
        };
        let thread_cpu_fd = match ebpf.map("THREAD_CPU") {
            Some(Map::HashMap(m)) => m.fd().as_fd().as_raw_fd(),
            _ => {
                return Err(ProbeError::Map {
                    map: "THREAD_CPU",
                    reason: "not a hash map in the object".into(),
                });
            }
        };
        for (tp, &id) in TRACEPOINTS.iter().zip(ids) {
            match mode {
                AttachMode::TpBtf => attach_tp_btf(&mut ebpf, &kernel_btf, tp, id)?,
                AttachMode::RawTp => attach_raw(&mut ebpf, tp)?,
            }
        }
        #[cfg(feature = "bench-hooks")]
        if mode == AttachMode::TpBtf && std::env::var_os(FLOOR_LADDER_ENV).is_some() {
            attach_floors(&mut ebpf, &kernel_btf, &FLOOR_LADDER)?;
        }
        let log = KernelLog::init(&mut ebpf, cfg.log_to_stderr);
        Ok(Probe {
            log,
            slots,
            targets: take(&mut ebpf, "TARGETS")?,
            free_slots: take(&mut ebpf, "FREE_SLOTS")?,
            thread_cpu: take(&mut ebpf, "THREAD_CPU")?,
            thread_cpu_fd,
            drops: take(&mut ebpf, "DROPS")?,
            pairs: take(&mut ebpf, "MIGRATION_PAIRS")?,
            timeline: if cfg.timeline_bytes.is_some() {
                Some(take(&mut ebpf, "TIMELINE")?)
            } else {
                None
            },
            timeline_lost: take(&mut ebpf, "TIMELINE_LOST")?,
            neighbours: take(&mut ebpf, "NEIGHBOURS")?,
            forks: take(&mut ebpf, "FORKS")?,
            cgroup_targets: take(&mut ebpf, "CGROUP_TARGETS")?,
            joined: take(&mut ebpf, "JOINED")?,
            timeline_bytes: sz.timeline_bytes,
            batch: Batch::default(),
            ebpf,
            mode,
            max_threads: sz.max_threads,
            bandwidth_ready: throttled_off != 0,
            bandwidth_groups: false,
        })
    }

    /// The attached program set.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Capacity of the per-thread map.
    pub fn max_threads(&self) -> u32 {
        self.max_threads
    }

    /// Starts tracing every thread of `tgid`, present and future.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), ProbeError> {
        if tgid == 0 {
            // The programs rely on it: pid 0 is every CPU's idle task.
            return Err(ProbeError::Map {
                map: "TARGETS",
                reason: "pid 0 is the idle task, not a process".into(),
            });
        }
        let word = tgid / 64;
        if word >= self.targets.len() {
            return Err(ProbeError::Map {
                map: "TARGETS",
                reason: format!("pid {tgid} is above pid_max"),
            });
        }
        let cur = self.targets.get(&word, 0).map_err(map_err("TARGETS"))?;
        self.targets
            .set(word, cur | (1 << (tgid % 64)), 0)
            .map_err(map_err("TARGETS"))
    }

    /// Gives an existing thread its `sum_exec_runtime` base, unless the
    /// programs already created its entry (they have the exact one then).
    ///
    /// Same protocol as the programs' `create`: take a slot from `ALLOC`,
    /// fill it, publish it in `SLOTS` with a compare-and-swap from 0; the
    /// loser of a race gives its slot back.
    pub fn seed_thread(&mut self, tid: u32, tgid: u32, comm: [u8; 16], sum_exec_ns: u64) {
        self.seed_thread_at(tid, tgid, comm, sum_exec_ns, RUN_DELAY_UNKNOWN);
    }

    /// [`Probe::seed_thread`] with the thread's `run_delay` now (from
    /// /proc/<tid>/schedstat), so that a wait in progress is counted.
    pub fn seed_thread_at(
        &mut self,
        tid: u32,
        tgid: u32,
        comm: [u8; 16],
        sum_exec_ns: u64,
        run_delay_ns: u64,
    ) {
        let now_ns = monotonic_ns();
        let s = &self.slots;
        let Some(cell) = s.cell(tid) else { return };
        if cell.load(Ordering::Acquire) != 0 {
            return;
        }
        let slot = s.alloc.u32(0).fetch_add(1, Ordering::SeqCst) + 1;
        if slot > s.max_threads {
            return; // full: the programs count the thread's events as drops
        }
        s.write(
            slot,
            ThreadStats {
                tid,
                tgid,
                comm,
                last_sum_exec_ns: sum_exec_ns,
                // Unknown: read by the programs at the thread's next event.
                run_delay_seen_ns: run_delay_ns,
                // Its traced lifetime starts now (CLOCK_MONOTONIC is
                // bpf_ktime_get_ns's clock); its first event tells what
                // it did since.
                first_ns: now_ns,
                flags: FLAG_SEEDED,
                ..ThreadStats::default()
            },
        );
        if cell
            .compare_exchange(0, slot, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            s.write(slot, ThreadStats::default());
            let _ = self.free_slots.push(slot, 0);
        }
    }

    /// All per-thread entries, into `out` (cleared first), with
    /// `running_on` set from `CURRENT` (the programs keep which thread runs
    /// where per CPU, not in the entries).
    pub fn threads(&self, out: &mut Vec<(u32, ThreadStats)>) {
        out.clear();
        let s = &self.slots;
        out.reserve(s.high_water() as usize);
        // (tid, cpu + 1) of the target threads on a CPU now; few (<= CPUs).
        let mut running: Vec<(u32, u32)> = (0..s.nr_cpus)
            .filter_map(|cpu| {
                let tid = s.current.u32(cpu as usize * 8).load(Ordering::Acquire);
                (tid != 0).then_some((tid, cpu + 1))
            })
            .collect();
        running.sort_unstable();
        for slot in 1..=s.high_water() {
            let mut st = s.read(slot);
            // Only published slots: a slot being filled, given back after a
            // lost race or freed names no tid, or is not its tid's slot.
            if st.tid != 0
                && s.cell(st.tid)
                    .is_some_and(|c| c.load(Ordering::Acquire) == slot)
            {
                st.running_on = running
                    .binary_search_by_key(&st.tid, |r| r.0)
                    .map_or(0, |i| running[i].1);
                out.push((st.tid, st));
            }
        }
    }

    /// All per-(thread, CPU) on-CPU times in `THREAD_CPU`, into `out`
    /// (cleared first): batch lookups, a few system calls in all.
    pub fn thread_cpu(&mut self, out: &mut Vec<(ThreadCpuKey, u64)>) {
        out.clear();
        if !self.batch.unsupported {
            match lookup_batch(self.thread_cpu_fd, &mut self.batch, out) {
                Ok(()) => return,
                // 524: ENOTSUPP, the kernel's own "not supported".
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | 524)
                    ) =>
                {
                    self.batch.unsupported = true;
                    out.clear();
                }
                Err(_) => out.clear(),
            }
        }
        out.extend(self.thread_cpu.iter().filter_map(Result::ok));
    }

    /// Forgets a thread that exited and whose final values were read: its
    /// slot goes back to the programs, its `THREAD_CPU` entries are deleted.
    pub fn forget_thread(&mut self, tid: u32, cpus: impl Iterator<Item = u32>) {
        let s = &self.slots;
        if let Some(cell) = s.cell(tid) {
            let slot = cell.swap(0, Ordering::SeqCst);
            if (1..=s.max_threads).contains(&slot) {
                s.write(slot, ThreadStats::default());
                let _ = self.free_slots.push(slot, 0);
            }
        }
        for cpu in cpus {
            let _ = self.thread_cpu.remove(&ThreadCpuKey { tid, cpu });
        }
    }

    /// Events dropped so far, all reasons, all CPUs.
    pub fn dropped(&self) -> u64 {
        (0..DROP_KINDS)
            .filter_map(|k| self.drops.get(&k, 0).ok())
            .map(|v| v.iter().sum::<u64>())
            .sum()
    }

    /// Untargeted processes charged with target threads' run-queue waits
    /// so far, into `out` (cleared first): (tgid, what they were charged).
    pub fn neighbours(&self, out: &mut Vec<(u32, Neighbour)>) {
        out.clear();
        out.extend(self.neighbours.iter().filter_map(Result::ok));
    }

    /// New processes of the targets so far: (followed, missed, joined).
    pub fn forks(&self) -> (u64, u64, u64) {
        let sum = |k: u32| {
            self.forks
                .get(&k, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        (sum(FORK_FOLLOWED), sum(FORK_MISSED), sum(FORK_JOINED))
    }

    /// Whether `tgid` is marked as a target (by userspace or by the
    /// programs, which mark the processes they follow).
    pub fn is_target(&self, tgid: u32) -> bool {
        self.targets
            .get(&(tgid / 64), 0)
            .is_ok_and(|w| w & (1 << (tgid % 64)) != 0)
    }

    /// Migrations per (source, destination) CPU so far, into `out` (cleared
    /// first). The map holds a few entries (pairs really used).
    pub fn migration_pairs(&self, out: &mut Vec<(CpuPair, u64)>) {
        out.clear();
        out.extend(self.pairs.iter().filter_map(Result::ok));
    }

    /// Appends the timeline events waiting in the ring buffer to `out`;
    /// returns how many. Nothing without a timeline.
    pub fn drain_timeline(&mut self, out: &mut Vec<TimelineEvent>) -> usize {
        let Some(ring) = self.timeline.as_mut() else {
            return 0;
        };
        let before = out.len();
        while let Some(item) = ring.next() {
            if item.len() >= size_of::<TimelineEvent>() {
                // SAFETY: the programs write whole `TimelineEvent`s (POD);
                // the ring's records are 8-byte aligned, but read unaligned
                // anyway rather than rely on it.
                out.push(unsafe { item.as_ptr().cast::<TimelineEvent>().read_unaligned() });
            }
        }
        out.len() - before
    }

    /// The timeline ring's fd (readable while events wait), with a
    /// timeline.
    pub fn timeline_fd(&self) -> Option<BorrowedFd<'_>> {
        self.timeline.as_ref().map(|r| r.as_fd())
    }

    /// The programs' log ring's fd (readable while records wait).
    pub fn log_fd(&self) -> Option<BorrowedFd<'_>> {
        self.log.as_ref().map(KernelLog::fd)
    }

    /// Reads the programs' waiting log records (counted, and printed under
    /// `--verbose`).
    pub fn drain_log(&mut self) {
        if let Some(l) = self.log.as_mut() {
            l.drain();
        }
    }

    /// Log records the programs wrote and were read so far.
    pub fn kernel_warnings(&self) -> u64 {
        self.log.as_ref().map_or(0, KernelLog::count)
    }

    /// Timeline events the programs could not write (ring full), all CPUs.
    pub fn timeline_lost(&self) -> u64 {
        self.timeline_lost
            .get(&0, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Timeline events the programs wrote, all CPUs.
    pub fn timeline_written(&self) -> u64 {
        self.timeline_lost
            .get(&1, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Bytes of the timeline ring buffer as created (one page without a
    /// timeline).
    pub fn timeline_bytes(&self) -> u32 {
        self.timeline_bytes
    }

    /// Names of the attached programs (for diagnostics).
    pub fn program_names(&self) -> Vec<String> {
        self.ebpf.programs().map(|(n, _)| n.to_string()).collect()
    }

    // ---- CFS bandwidth (kernel/bandwidth.rs) ----

    /// Attaches the CFS bandwidth programs for the cgroup with kernfs id
    /// `cgroup_id` (its directory's inode number): the kind attached, and
    /// whether per-thread held time is measured.
    pub fn attach_bandwidth(
        &mut self,
        cgroup_id: u64,
    ) -> Result<(crate::kernel::bandwidth::BwAttach, bool), ProbeError> {
        let nr = aya::util::nr_cpus().map_or(1, |n| n as u32);
        let ready = self.bandwidth_ready;
        crate::kernel::bandwidth::attach(&mut self.ebpf, cgroup_id, nr, ready)
    }

    /// The agent: counts, per traced cgroup, the threads running when its
    /// quota ran out (see [`crate::kernel::bandwidth::attach_groups`]).
    /// Cgroups added before this call are not counted.
    pub fn attach_bandwidth_groups(&mut self) -> Result<(), ProbeError> {
        let nr = aya::util::nr_cpus().map_or(1, |n| n as u32);
        crate::kernel::bandwidth::attach_groups(&mut self.ebpf, nr, self.bandwidth_ready)?;
        self.bandwidth_groups = true;
        Ok(())
    }

    /// Whether [`Probe::attach_bandwidth_groups`] succeeded.
    pub fn bandwidth_groups(&self) -> bool {
        self.bandwidth_groups
    }

    /// A traced cgroup's periods by threads running at exhaustion so far.
    pub fn bandwidth_group(&self, id: u64) -> Option<affinity_common::BwGroup> {
        if !self.bandwidth_groups {
            return None;
        }
        crate::kernel::bandwidth::read_group(&self.ebpf, id)
    }

    /// Periods completed since `*last` (see [`crate::kernel::bandwidth::read_periods`]).
    pub fn bandwidth_periods(&self, last: &mut u64) -> crate::kernel::bandwidth::BwRead {
        crate::kernel::bandwidth::read_periods(&self.ebpf, last)
    }

    /// Per-thread held time, open holds counted to `now_ns` (CLOCK_MONOTONIC).
    pub fn bandwidth_threads(&self, now_ns: u64) -> crate::kernel::bandwidth::BwThreads {
        crate::kernel::bandwidth::read_threads(&self.ebpf, now_ns)
    }

    /// Stops tracing `tgid` (the agent, for a process that left its
    /// cgroups or exited, so a reused pid is not traced).
    pub fn remove_target(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let word = tgid / 64;
        if tgid == 0 || word >= self.targets.len() {
            return Ok(());
        }
        let cur = self.targets.get(&word, 0).map_err(map_err("TARGETS"))?;
        self.targets
            .set(word, cur & !(1 << (tgid % 64)), 0)
            .map_err(map_err("TARGETS"))?;
        let _ = self.joined.remove(&tgid);
        Ok(())
    }

    /// Adds a cgroup (the kernfs id of its cpu-controller directory, its
    /// inode number) to the traced set: processes that join it or are
    /// forked in it become targets in the kernel (needs `cgroup_set`).
    pub fn add_cgroup(&mut self, id: u64) -> Result<(), ProbeError> {
        if self.bandwidth_groups {
            crate::kernel::bandwidth::add_group(&mut self.ebpf, id)?;
        }
        self.cgroup_targets
            .insert(id, 1, 0)
            .map_err(map_err("CGROUP_TARGETS"))
    }

    /// Removes a cgroup from the traced set.
    pub fn remove_cgroup(&mut self, id: u64) {
        let _ = self.cgroup_targets.remove(&id);
        if self.bandwidth_groups {
            crate::kernel::bandwidth::remove_group(&mut self.ebpf, id);
        }
    }

    /// The processes the programs marked for a cgroup of the set, into
    /// `out` (cleared first): (tgid, cgroup id).
    pub fn joined(&self, out: &mut Vec<(u32, u64)>) {
        out.clear();
        out.extend(self.joined.iter().filter_map(Result::ok));
    }

    /// Run time of each attached program so far (ns), while
    /// `kernel.bpf_stats_enabled` is 1 (else the kernel counts nothing).
    pub fn program_run_ns(&self) -> Vec<(String, u64)> {
        self.ebpf
            .programs()
            .filter_map(|(n, p)| {
                let info = p.info().ok()?;
                Some((n.to_string(), info.run_time().as_nanos() as u64))
            })
            .collect()
    }
}

/// CLOCK_MONOTONIC now (ns): the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Fills `out` from the hash map `fd` with `BPF_MAP_LOOKUP_BATCH` calls.
fn lookup_batch(
    fd: i32,
    buf: &mut Batch,
    out: &mut Vec<(ThreadCpuKey, u64)>,
) -> std::io::Result<()> {
    buf.keys.resize(BATCH, ThreadCpuKey::default());
    buf.values.resize(BATCH, 0);
    // For hash maps the batch token is a bucket index (u32); 8 bytes leave room.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw mut token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: buf.keys.as_mut_ptr() as u64,
            values: buf.values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values and at
        // two 8-byte tokens, all live for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(BATCH);
        out.extend(
            buf.keys[..n]
                .iter()
                .copied()
                .zip(buf.values[..n].iter().copied()),
        );
        match err {
            None => {}
            // ENOENT: the walk is done (the last entries came with it).
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        first = false;
        token_in = token_out;
    }
}

/// An aya loader whose kernel BTF is `btf`.
///
/// `EbpfLoader::new()` parses /sys/kernel/btf/vmlinux itself (aya 0.14 has
/// no way around that: ~25 ms and ~18 MiB at its peak here). `.btf()` drops
/// that copy at once, so it never coexists with anything else this large;
/// `btf` is the small one [`attach_btf`] builds. The object has no CO-RE
/// relocations, the only other use aya has for the kernel BTF; if it ever
/// had some, they would fail loudly against the small BTF, not silently.
/// The maps' sizes for one load.
struct Sizes {
    nr_possible: u32,
    max_threads: u32,
    pid_max: u32,
    /// A thread uses one (tid, cpu) entry per CPU it ran on; most use few.
    thread_cpu_entries: u32,
    timeline_bytes: u32,
    pairs: u32,
}

impl Sizes {
    fn new(cfg: &ProbeConfig) -> Result<Sizes, ProbeError> {
        let nr_possible =
            aya::util::nr_cpus().map_err(|(p, e)| ProbeError::Load(format!("{p}: {e}")))? as u32;
        let max_threads = cfg.max_threads.max(1);
        let page = procfs::page_size() as u32;
        Ok(Sizes {
            nr_possible,
            max_threads,
            pid_max: cfg.pid_max.max(2),
            thread_cpu_entries: max_threads
                .saturating_mul(nr_possible.clamp(1, 16))
                .min(1 << 22),
            timeline_bytes: cfg.timeline_bytes.unwrap_or(page).max(page),
            pairs: nr_possible.saturating_mul(nr_possible),
        })
    }
}

/// Loads the object with this run's constants and map sizes.
fn load_object(
    cfg: &ProbeConfig,
    kernel_btf: &Btf,
    sz: &Sizes,
    throttled_off: u32,
) -> Result<Ebpf, ProbeError> {
    let timeline_on = u32::from(cfg.timeline_bytes.is_some());
    // The programs wake the reader once as the ring crosses half full.
    let wake_bytes = u64::from(sz.timeline_bytes / 2);
    let nr = sz.nr_possible;
    #[cfg(not(feature = "bench-hooks"))]
    let neighbours_on = 1u32;
    #[cfg(feature = "bench-hooks")]
    let neighbours_on = u32::from(std::env::var_os(NO_NEIGHBOURS_ENV).is_none());
    loader(kernel_btf)
        .override_global("OFFSETS", &cfg.offsets, true)
        .override_global("TIMELINE_ON", &timeline_on, true)
        .override_global("NEIGHBOURS_ON", &neighbours_on, true)
        .override_global("THROTTLED_OFF", &throttled_off, true)
        .override_global("TIMELINE_WAKE_BYTES", &wake_bytes, true)
        .override_global("FOLLOW", &u32::from(cfg.follow), true)
        .override_global("JOIN_CGROUP", &cfg.join_cgroup, true)
        .override_global("CGROUP_SET", &u32::from(cfg.cgroup_set), true)
        .map_max_entries("TIMELINE", sz.timeline_bytes)
        .map_max_entries("MIGRATION_PAIRS", sz.pairs.clamp(1, MAX_PAIRS))
        .map_max_entries("TARGETS", sz.pid_max.div_ceil(64))
        .map_max_entries("SLOTS", sz.pid_max.div_ceil(2))
        .map_max_entries("STATS", sz.max_threads + 1)
        .map_max_entries("FREE_SLOTS", sz.max_threads)
        .map_max_entries("THREAD_CPU", sz.thread_cpu_entries)
        .map_max_entries("CPU_TOPO", nr)
        .map_max_entries("CURRENT", nr)
        .map_max_entries("WAITQ", nr)
        .map_max_entries("DROPS", DROP_KINDS)
        .map_max_entries("BW_CPU", nr)
        .map_max_entries("BW_THREADS", sz.max_threads)
        // The agent's per-cgroup histograms, one entry per traced cgroup.
        .map_max_entries("BW_GROUPS", if cfg.cgroup_set { 4096 } else { 1 })
        .load(OBJECT)
        .map_err(|e| ProbeError::Load(e.to_string()))
}

/// Each possible CPU's core, LLC and node, for the migration classes. The
/// map stays in `ebpf` (borrowed, not taken): the programs are loaded at
/// attach, after this, and a map taken out and dropped would be closed.
fn write_cpu_topo(ebpf: &mut Ebpf, topo: &Topology, nr_possible: u32) -> Result<(), ProbeError> {
    let map = ebpf.map_mut("CPU_TOPO").ok_or(ProbeError::Map {
        map: "CPU_TOPO",
        reason: "not in the object".into(),
    })?;
    let mut cpu_topo: Array<&mut MapData, CpuTopo> =
        Array::try_from(map).map_err(map_err("CPU_TOPO"))?;
    for c in topo.cpus.iter().filter(|c| c.id < nr_possible) {
        let v = CpuTopo {
            core: c.core,
            llc: c.llc,
            node: c.node,
            valid: 1,
        };
        cpu_topo.set(c.id, v, 0).map_err(map_err("CPU_TOPO"))?;
    }
    Ok(())
}

fn loader(btf: &Btf) -> EbpfLoader<'_> {
    let mut l = EbpfLoader::new();
    l.btf(Some(btf));
    l
}

/// A BTF holding only the `btf_trace_<tp>` typedefs, at the type ids the
/// running kernel gives them (`ids`, 0 for none), and placeholder records
/// below them.
///
/// A tp_btf program needs from the kernel's BTF only the id of the typedef
/// of its tracepoint (`attach_btf_id`; the kernel resolves the rest from
/// its own BTF), and aya looks that id up by name in the [`Btf`] it is
/// given. Parsing the whole vmlinux BTF for it cost ~25 ms and kept ~13 MiB
/// of parsed types alive while the programs loaded, on top of the copy
/// `EbpfLoader::new()` makes; this BTF is as large as the highest id
/// (about 10,000 placeholders on 6.18: ~0.8 MiB parsed).
fn attach_btf(ids: &[u32; NR_TRACEPOINTS]) -> Result<Btf, ProbeError> {
    const KIND_PTR: u32 = 2;
    const KIND_TYPEDEF: u32 = 8;
    let mut strings = vec![0u8];
    let mut names = [0u32; NR_TRACEPOINTS];
    for (i, tp) in TRACEPOINTS.iter().enumerate() {
        names[i] = strings.len() as u32;
        strings.extend_from_slice(format!("btf_trace_{tp}").as_bytes());
        strings.push(0);
    }
    let max = ids.iter().copied().max().unwrap_or(0);
    let mut types = Vec::with_capacity(max as usize * 12);
    for id in 1..=max {
        let (name, kind) = match ids.iter().position(|&x| x == id) {
            Some(i) => (names[i], KIND_TYPEDEF),
            None => (0, KIND_PTR),
        };
        for v in [name, kind << 24, 0] {
            types.extend_from_slice(&v.to_le_bytes());
        }
    }
    let blob = crate::kernel::btf::raw_blob(&types, &strings);
    Btf::parse(&blob, aya::Endianness::Little)
        .map_err(|e| ProbeError::Load(format!("building the attach BTF: {e}")))
}

/// Environment variable: [`attach_floor`] also attaches
/// `floor_clock_sched_switch` (the empty program plus one clock read), so
/// that `cargo xtask bench` measures what a clock read costs.
#[cfg(feature = "bench-hooks")]
pub const FLOOR_CLOCK_ENV: &str = "AFFIN_TRACE_FLOOR_CLOCK";

/// Environment variable: a trace (tp_btf) also attaches [`FLOOR_LADDER`]
/// beside its own programs, so that `cargo xtask bench` measures, in the
/// same run and on the same events, what btf_sched_switch's time is made
/// of: the call, a clock read, the target filter with the slot lookups and
/// task reads, and (the rest) its logic.
#[cfg(feature = "bench-hooks")]
pub const FLOOR_LADDER_ENV: &str = "AFFIN_TRACE_FLOOR_LADDER";

/// Environment variable: load the programs with neighbour accounting off
/// (`NEIGHBOURS_ON` 0, so the verifier drops that code), so that `cargo
/// xtask bench` measures its per-event cost against the same programs with
/// it, in the same run. The report's neighbours are then empty.
#[cfg(feature = "bench-hooks")]
pub const NO_NEIGHBOURS_ENV: &str = "AFFIN_TRACE_NO_NEIGHBOURS";

/// The floor programs, each one step more of btf_sched_switch's work.
#[cfg(feature = "bench-hooks")]
const FLOOR_LADDER: [&str; 3] = [
    "floor_sched_switch",
    "floor_clock_sched_switch",
    "floor_lookup_sched_switch",
];

/// Attaches only the empty sched_switch program (`floor_sched_switch`) and
/// returns the object that keeps it attached: the baseline cost of any
/// sched_switch tracer, for benchmarks. With [`FLOOR_CLOCK_ENV`] set, also
/// `floor_clock_sched_switch`. Only with the `bench-hooks` feature.
#[cfg(feature = "bench-hooks")]
pub fn attach_floor() -> Result<Ebpf, ProbeError> {
    let k = btf::kernel_btf_cached(Path::new(btf::VMLINUX_BTF), Path::new(btf::CACHE_DIR))
        .map_err(|e| ProbeError::Load(format!("kernel BTF: {e}")))?;
    let kernel_btf = attach_btf(&k.tracepoint_ids)?;
    let mut ebpf = loader(&kernel_btf)
        .load(OBJECT)
        .map_err(|e| ProbeError::Load(e.to_string()))?;
    let clock = std::env::var_os(FLOOR_CLOCK_ENV).is_some();
    attach_floors(
        &mut ebpf,
        &kernel_btf,
        &FLOOR_LADDER[..1 + usize::from(clock)],
    )?;
    Ok(ebpf)
}

/// Loads and attaches the floor programs `names` (tp_btf sched_switch).
#[cfg(feature = "bench-hooks")]
fn attach_floors(ebpf: &mut Ebpf, kernel_btf: &Btf, names: &[&str]) -> Result<(), ProbeError> {
    for &name in names {
        let err = |reason: String| ProbeError::Attach {
            kind: "tp_btf",
            tracepoint: "sched_switch",
            reason: format!("{name}: {reason}"),
        };
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| err("not in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
        prog.load("sched_switch", kernel_btf)
            .map_err(|e| err(e.to_string()))?;
        prog.attach().map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::Map {
        map: name,
        reason: "not in the object".into(),
    })?;
    T::try_from(map).map_err(map_err(name))
}

fn mmap(
    ebpf: &Ebpf,
    name: &'static str,
    entries: u32,
    value_size: usize,
) -> Result<Mmap, ProbeError> {
    match ebpf.map(name) {
        Some(Map::Array(m)) => Mmap::new(name, m.fd().as_fd(), entries, value_size),
        _ => Err(ProbeError::Map {
            map: name,
            reason: "not an array in the object".into(),
        }),
    }
}

fn attach_tp_btf(ebpf: &mut Ebpf, btf: &Btf, tp: &'static str, id: u32) -> Result<(), ProbeError> {
    let err = |reason: String| ProbeError::Attach {
        kind: "tp_btf",
        tracepoint: tp,
        reason,
    };
    if id == 0 {
        return Err(err(format!("the kernel BTF has no btf_trace_{tp}")));
    }
    let name = format!("btf_{tp}");
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
    prog.load(tp, btf).map_err(|e| err(e.to_string()))?;
    prog.attach().map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn attach_raw(ebpf: &mut Ebpf, tp: &'static str) -> Result<(), ProbeError> {
    let err = |reason: String| ProbeError::Attach {
        kind: "raw_tp",
        tracepoint: tp,
        reason,
    };
    let name = format!("raw_{tp}");
    let prog: &mut RawTracePoint = ebpf
        .program_mut(&name)
        .ok_or_else(|| err("not in the object".into()))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
    prog.load().map_err(|e| err(e.to_string()))?;
    prog.attach(tp).map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attach_btf_names_each_typedef_at_its_id() {
        let ids = [7, 3, 9, 0, 1, 11, 12];
        let btf = attach_btf(&ids).unwrap();
        for (tp, id) in TRACEPOINTS.iter().zip(ids) {
            let found = btf
                .id_by_type_name_kind(&format!("btf_trace_{tp}"), aya_obj::btf::BtfKind::Typedef);
            if id == 0 {
                assert!(found.is_err(), "{tp}");
            } else {
                assert_eq!(found.unwrap(), id, "{tp}");
            }
        }
    }

    #[test]
    fn the_attach_btf_agrees_with_the_running_kernel() {
        let data = std::fs::read(btf::VMLINUX_BTF).unwrap();
        let ids = btf::tracepoint_type_ids(&data, &TRACEPOINTS).unwrap();
        let small = attach_btf(&ids).unwrap();
        let full = Btf::parse(&data, aya::Endianness::Little).unwrap();
        for tp in TRACEPOINTS {
            let name = format!("btf_trace_{tp}");
            let kind = aya_obj::btf::BtfKind::Typedef;
            assert_eq!(
                small.id_by_type_name_kind(&name, kind).unwrap(),
                full.id_by_type_name_kind(&name, kind).unwrap(),
                "{tp}"
            );
        }
    }
}
