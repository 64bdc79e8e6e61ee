//! affin-trace's BPF programs: per-thread scheduler counters, aggregated in the
//! kernel, for the thread groups marked in `TARGETS`.
//!
//! Tracepoints (include/trace/events/sched.h):
//! - `sched_switch(preempt, prev, next, prev_state)`: on-CPU time per CPU,
//!   voluntary / involuntary switches, run-queue waits, which thread runs
//!   on which CPU.
//! - `sched_migrate_task(p, dest_cpu)`: migrations by distance class, and
//!   by (source, destination) CPU pair.
//! - `sched_wakeup(p)`, `sched_wakeup_new(p)`: start of run-queue waits.
//! - `sched_process_exit(p)`: the entry becomes final.
//! - `sched_process_fork(parent, child)`: with `FOLLOW`, a new process of a
//!   target is a target before its first instruction.
//! - `cgroup_attach_task(dst, path, task, threadgroup)`: a process moved
//!   into the `JOIN_CGROUP` directory becomes a target.
//!
//! # Wait split and neighbours (target threads only)
//!
//! A target thread's lifetime (`first_ns` to `last_ns` or now) splits into
//! running (`cpu_time_ns`), runnable (wakeup waits + preempted waits) and
//! sleeping (`sleep_ns`: a voluntary switch-out, one clock read, to the
//! wakeup, which reads the clock already). `WAITQ[cpu]` counts the target
//! threads waiting runnable on each CPU (wakeup or preemption to switch-in,
//! moved by migrations, as `added - ended`); every switch reads it (the
//! one cost this adds to the untargeted path), and while it is not 0 the
//! slice that ends is
//! charged, times the number waiting, to the process that ran it, in
//! `NEIGHBOURS` (a clock read and a hash lookup, only then, and only for
//! a slice of an untargeted process: target threads waiting behind each
//! other cost no clock read).
//!
//! Each tracepoint has a `tp_btf` entry (preferred: cheapest, no tracefs) and a
//! `raw_tp` entry (fallback where tp_btf cannot attach). Both receive the same
//! `u64 args[]` array, so one handler, generic over how task fields are read
//! ([`Access`]), serves both; userspace loads one set.
//!
//! Rust BPF has no CO-RE: the few `task_struct` fields read here use offsets
//! that userspace resolves from the running kernel's BTF (`OFFSETS`).
//!
//! # The cost of a switch
//!
//! sched_switch runs on every context switch of the machine, so the common
//! paths use no map lookup the verifier does not inline (array lookups are
//! inlined, hash lookups are helper calls) and no helper call but the clock
//! read that ends a wakeup-to-run wait:
//! - untargeted task: two field loads and one bit of `TARGETS`;
//! - targeted task switching out: its slot from `SLOTS` (indexed by tid),
//!   its counters in `STATS` (indexed by slot); on-CPU time per CPU adds to
//!   the counters' `cpu_acc` while the thread stays on one CPU and reaches
//!   the `THREAD_CPU` hash only when it changes CPU;
//! - targeted task switching in: its tid in `CURRENT[cpu]` (which thread
//!   runs where is kept per CPU, so that userspace and the wakeup handler
//!   need no per-thread flag), and its entry only to end a wakeup wait;
//! - task fields: in tp_btf, plain loads through the typed `task_struct`
//!   pointers the tracepoint passes (the verifier knows the frozen `.rodata`
//!   offsets as constants, checks the field against the kernel BTF and
//!   guards the load with an exception-table fixup); in raw_tp, where the
//!   arguments are untyped, `bpf_probe_read_kernel`;
//! - one clock read per wakeup-to-run wait, none for preemptions: a
//!   `bpf_ktime_get_ns()` costs ~47 ns on the development VM (as much as
//!   the whole empty program), so only what needs it reads it. A wait after
//!   a wakeup is timed from `sched_wakeup` to switch-in with the clock: the
//!   kernel's own account of it (`sched_info.run_delay`) misses the
//!   wakeup-to-switch latency whenever the scheduler skips its back-to-back
//!   clock update (kernel/sched/core.c: wakeup_preempt()), the common case
//!   of a wakeup onto an idle CPU. A wait after a preemption (which ends
//!   in a switch-out with the task runnable, including CFS bandwidth
//!   throttling) is read from the task's `sched_info.run_delay` at its next
//!   switch-out, where the kernel has added it (sched_info_arrive() runs
//!   after the tracepoint): no clock read in sched_switch for it. Kernels
//!   without `sched_info` (`OFFSETS.run_delay == 0`, a constant the
//!   verifier prunes on) time those with the clock too, once per event.
//!
//! # Map sizes (set by userspace at load time)
//! - `TARGETS`: pid_max / 64 words of 8 bytes (4 KiB at pid_max 32768,
//!   512 KiB at 4194304).
//! - `SLOTS`: 4 bytes per possible tid (128 KiB at pid_max 32768, 16 MiB at
//!   4194304).
//! - `STATS`: `--max-threads` + 1 entries of 328 bytes (5.1 MiB at the
//!   default 16384).
//! - `NEIGHBOURS`: 1024 entries of 40 bytes plus per-element overhead.
//! - `FREE_SLOTS`: 4 bytes per `--max-threads`.
//! - `THREAD_CPU`: `--max-threads` x min(possible CPUs, 16) entries of 16
//!   bytes plus the kernel's per-element overhead (preallocated).
//! - `CPU_TOPO`: 16 bytes per possible CPU (16 KiB at 1024 CPUs); `CURRENT`:
//!   8 (8 KiB).
//!
//! - `MIGRATION_PAIRS`: min(possible CPUs squared, 16384) entries of 16
//!   bytes plus the per-element overhead (preallocated); a full map is
//!   counted in `DROPS`.
//! - `TIMELINE`: `--timeline-buffer` MiB with `--timeline`, one page
//!   without it.
//!
//! None of them grows with the number of CPUs beyond `CPU_TOPO` and the
//! 16-CPU cap of `THREAD_CPU` (a thread that ran on more CPUs than that
//! shares the map with threads that ran on fewer; a full map is counted in
//! `DROPS`).
//!
//! # The timeline (`--timeline`)
//!
//! With `TIMELINE_ON` set, the handlers also write one [`TimelineEvent`]
//! per switch, migration and wakeup of a target thread into the `TIMELINE`
//! ring buffer; an event that does not fit is counted in `TIMELINE_LOST`.
//! `TIMELINE_ON` is a `.rodata` constant: with it 0 the verifier removes
//! that code, so the programs without `--timeline` are the ones above.
//! Events are submitted without waking the reader (userspace drains the
//! ring on a timer): a wakeup per event would cost the target's CPUs an
//! inter-processor interrupt and a switch to affin-trace each time. The
//! one exception is the event that takes the ring past half full
//! (`TIMELINE_WAKE_BYTES`): a burst is drained then, not lost.
//!
//! # CFS bandwidth (`bandwidth.rs`)
//!
//! When a quota binds the targets, userspace also attaches the programs of
//! [`bandwidth`] to the kernel's throttle path: per-period records of when
//! the quota ran out, and per-thread time held by throttling.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics: the BPF target spec declares no atomic CAS, though the \
              instructions exist with alu32 (see build.rs)"
)]

mod bandwidth;

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd};

use affinity_common::{
    CPU_ACC_NS_MASK, CPU_ACC_SHIFT, CpuPair, CpuTopo, DROP_NEIGHBOURS_FULL, DROP_PAIRS_FULL,
    DROP_READ_FAILED, DROP_THREAD_CPU_FULL, DROP_THREADS_FULL, EV_MIGRATE, EV_SWITCH, EV_WAKEUP,
    EVF_DEAD, EVF_NEW, EVF_PREEMPTED, FLAG_EXITING, FLAG_HELD, FLAG_HELD_PENDING, FLAG_SEEDED,
    FORK_FOLLOWED, FORK_JOINED, FORK_MISSED, MIG_CROSS_LLC, MIG_CROSS_NUMA, MIG_LLC, MIG_SMT,
    Neighbour, RUN_DELAY_UNKNOWN, RUNNABLE_NONE, RUNNABLE_PREEMPTED, RUNNABLE_WAKEUP, RUNQ_BUCKETS,
    TaskOffsets, ThreadCpuKey, ThreadStats, TimelineEvent,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_ANY, BPF_F_MMAPABLE, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP,
        BPF_RB_NO_WAKEUP,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, Queue, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use aya_log_ebpf::warn;

/// Bitmap of target thread-group ids: bit `tgid % 64` of word `tgid / 64`.
/// An array lookup is inlined by the verifier, so an untargeted task costs one
/// load and a mask. Sized by userspace from /proc/sys/kernel/pid_max.
#[map]
static TARGETS: Array<u64> = Array::with_max_entries(65_536, 0);

/// tid -> slot in `STATS` (0: none): tid `t` is lane `t % 2` of entry
/// `t / 2` (the kernel stores array values 8 bytes apart, so two 4-byte
/// lanes per entry halve the map; userspace, which mmaps it, sees a plain
/// `u32` array indexed by tid). Sized by userspace to pid_max.
#[map]
static SLOTS: Array<[u32; 2]> = Array::with_max_entries(2_097_152, BPF_F_MMAPABLE);

/// Per-thread counters by slot; slot 0 is never used. Userspace mmaps it and
/// reads it in place each interval. Sized by userspace (`--max-threads` + 1).
#[map]
static STATS: Array<ThreadStats> = Array::with_max_entries(16_385, BPF_F_MMAPABLE);

/// Untargeted processes that held a CPU while target threads waited for it,
/// by tgid (see [`Neighbour`]). Touched only when a target thread gets a
/// CPU back after a run-queue wait.
#[map]
static NEIGHBOURS: HashMap<u32, Neighbour> = HashMap::with_max_entries(1024, 0);

/// New processes of the targets: followed, missed, joined (`FORK_*`).
#[map]
static FORKS: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// `ALLOC[0]`: the highest slot ever handed out; a new thread takes the next
/// one when `FREE_SLOTS` is empty. Userspace (mmapped) allocates from it too,
/// with the same atomic add, to seed threads that existed before tracing.
#[map]
static ALLOC: Array<u32> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The target thread on each CPU now (its tid; 0: none), by CPU number:
/// set at switch-in, cleared at switch-out. Userspace (mmapped) adds the
/// running slice of these threads, which their counters do not hold yet;
/// the wakeup handler tells from it whether the woken thread still runs.
/// Kept per CPU rather than as a flag in `STATS`, so that a switch-in writes
/// its thread's entry only when it ends a wakeup wait (and a switch-out
/// clears one word it just used). Sized to possible CPUs.
#[map]
static CURRENT: Array<u32> = Array::with_max_entries(1024, BPF_F_MMAPABLE);

/// Slots userspace freed (threads that exited and were read), for reuse.
#[map]
static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(16_384, 0);

/// On-CPU ns per (tid, cpu), besides what is still in `ThreadStats::cpu_acc`.
#[map]
static THREAD_CPU: HashMap<ThreadCpuKey, u64> = HashMap::with_max_entries(65_536, 0);

/// CPU -> (core, LLC, node), for migration distance. Sized to possible CPUs.
#[map]
static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(1024, 0);

/// Events that could not be recorded, by `DROP_*` reason.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// Migrations of target threads per (source, destination) CPU. A hash, so
/// that memory follows the pairs used rather than CPUs squared; sized by
/// userspace (min(possible CPUs squared, 16384)).
#[map]
static MIGRATION_PAIRS: HashMap<CpuPair, u64> = HashMap::with_max_entries(16_384, 0);

/// Timeline events (`--timeline`); sized by userspace, one page when off.
#[map]
static TIMELINE: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Timeline events that found `TIMELINE` full (index 0) and events
/// written (index 1): userspace checks that it received every one written.
#[map]
static TIMELINE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Where the floor programs store what they read (bench only), so that the
/// reads are not optimised away.
#[cfg(feature = "floor")]
#[map]
static CLOCK_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `task_struct` field offsets from the running kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: TaskOffsets = TaskOffsets {
    pid: 0,
    tgid: 0,
    sum_exec_runtime: 0,
    cpu: 0,
    comm: 0,
    run_delay: 0,
    cgroups: 0,
    css_cpu: 0,
    css_cgroup: 0,
    cgroup_kn: 0,
    kn_id: 0,
    _pad: 0,
};

/// 1: a process a target starts becomes a target (command mode, `--follow`,
/// `--cgroup`, `--comm`). A frozen `.rodata` constant.
#[unsafe(no_mangle)]
static FOLLOW: u32 = 0;

/// kernfs id of the `--cgroup` directory (0: none): a process that joins
/// it becomes a target. A frozen `.rodata` constant.
#[unsafe(no_mangle)]
static JOIN_CGROUP: u64 = 0;

/// 1: write timeline events (`--timeline`). A frozen `.rodata` constant:
/// with 0 the verifier drops every branch that tests it.
#[unsafe(no_mangle)]
static TIMELINE_ON: u32 = 0;

/// 1 (the default): neighbour accounting (`WAITQ`, `NEIGHBOURS`). A frozen
/// `.rodata` constant; only the bench sets it 0 (the verifier then drops
/// that code), to measure what it costs per event in the same run.
#[unsafe(no_mangle)]
static NEIGHBOURS_ON: u32 = 1;

/// `TASK_DEAD` in `prev_state` (include/linux/sched.h): the final switch.
const TASK_DEAD: u64 = 0x80;

/// One field of `OFFSETS`, e.g. `offset!(pid)`. Volatile so that the
/// compiler does not fold the zero initialiser that userspace overrides at
/// load time; field by field so that only the field used is loaded.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a plain read of a static.
        unsafe { core::ptr::read_volatile(&OFFSETS.$field) }
    };
}

/// Whether timeline events are written (a constant to the verifier).
#[inline(always)]
fn timeline_on() -> bool {
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    unsafe { core::ptr::read_volatile(&TIMELINE_ON) != 0 }
}

/// Whether neighbour accounting runs (a constant to the verifier).
#[inline(always)]
fn neighbours_on() -> bool {
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    unsafe { core::ptr::read_volatile(&NEIGHBOURS_ON) != 0 }
}

/// Bytes of `TIMELINE` data past which the reader is woken (half the
/// ring; set by userspace at load time).
#[unsafe(no_mangle)]
static TIMELINE_WAKE_BYTES: u64 = u64::MAX;

/// Writes one timeline event, or counts it lost when the ring is full.
///
/// Without waking the reader (it drains on a timer), except the once the
/// ring crosses half full: a burst is drained then, before it overflows.
#[inline(always)]
fn emit(ev: TimelineEvent) {
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    let wake_at = unsafe { core::ptr::read_volatile(&TIMELINE_WAKE_BYTES) };
    let held = TIMELINE.query(BPF_RB_AVAIL_DATA as u64);
    let crossing = held < wake_at && held + 2 * size_of::<TimelineEvent>() as u64 >= wake_at;
    let flags = if crossing {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match TIMELINE.reserve::<TimelineEvent>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(flags as u64);
            if let Some(p) = TIMELINE_LOST.get_ptr_mut(1) {
                // SAFETY: per-CPU slot, no other writer on this CPU.
                unsafe { *p += 1 };
            }
        }
        None => {
            if let Some(p) = TIMELINE_LOST.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, no other writer on this CPU.
                unsafe { *p += 1 };
            }
        }
    }
}

/// Counts a dropped event; returns this CPU's count of that kind so far
/// (a log record is written at the first only: drops repeat per event).
#[inline(always)]
fn drop_event(kind: u32) -> u64 {
    match DROPS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    }
}

// ---- the log (aya-log) ----------------------------------------------------------
//
// Rare conditions only, each behind the branch that detects it, so the
// per-event paths are unchanged: the records go to aya-log's `AYA_LOGS`
// ring, which userspace drains when it is readable. aya-log-ebpf 0.2 does
// not use the context argument; `&()` stands for it where none is at hand.
// Each record is a few hundred instructions (aya-log writes its header's
// module and file names field by field), so each message is one short
// function, not inlined: one copy per program, called from the cold branch
// (a BPF-to-BPF call), and as few fields as will say it; userspace adds
// the explanation (affinity-userspace kernel/log.rs).

#[inline(never)]
fn warn_threads_full(tid: u32) {
    warn!(&(), "threads full: tid {}", tid);
}

#[inline(never)]
fn warn_read_failed() {
    warn!(&(), "task read failed");
}

#[inline(never)]
fn warn_unmatched_switch_in(tid: u32) {
    warn!(&(), "no switch-out: tid {}", tid);
}

/// Whether `tgid` is traced. The idle tasks (pid and tgid 0) never are:
/// userspace does not mark 0.
#[inline(always)]
fn is_target(tgid: u32) -> bool {
    match TARGETS.get(tgid >> 6) {
        Some(word) => *word & (1 << (tgid & 63)) != 0,
        None => false,
    }
}

// ---- reading task_struct ----------------------------------------------------

/// How the programs read `task_struct` fields.
trait Access {
    /// `(task->pid, task->tgid)`, thread id and thread-group id, when the
    /// thread group is a target; `None` otherwise (the common case: read
    /// no more than needed to tell).
    fn target(task: *const u8) -> Option<(u32, u32)>;
    /// [`Access::target`] of `prev` in sched_switch, the current task.
    fn current_target(prev: *const u8) -> Option<(u32, u32)>;
    /// A `u64` field.
    fn u64_at(task: *const u8, off: u32) -> u64;
    /// A `u32` field.
    fn u32_at(task: *const u8, off: u32) -> u32;
    /// A `u8` (bool) field.
    fn u8_at(task: *const u8, off: u32) -> u8;
    /// `task->comm`.
    fn comm(task: *const u8) -> [u8; 16];
}

/// tp_btf: the arguments are typed `struct task_struct *` (PTR_TO_BTF_ID),
/// so fields are read with plain loads. The verifier turns them into
/// PROBE_MEM loads (a fault yields 0 instead of an oops) after checking
/// against the kernel BTF that the constant offset names a field of that
/// size: pid and tgid are read with two 4-byte loads, not one 8-byte load
/// across both fields, which it would refuse.
struct Btf;

/// raw_tp: the arguments are plain integers; fields are read with
/// `bpf_probe_read_kernel`.
struct Raw;

impl Access for Btf {
    #[inline(always)]
    fn target(task: *const u8) -> Option<(u32, u32)> {
        // tgid first: an untargeted task costs one load and one bit.
        let tgid = Self::u32_at(task, offset!(tgid));
        if !is_target(tgid) {
            return None;
        }
        Some((Self::u32_at(task, offset!(pid)), tgid))
    }

    #[inline(always)]
    fn current_target(prev: *const u8) -> Option<(u32, u32)> {
        // Loads are cheaper than the bpf_get_current_pid_tgid() call.
        Self::target(prev)
    }

    #[inline(always)]
    fn u64_at(task: *const u8, off: u32) -> u64 {
        // SAFETY: the verifier checks the access (see the type's doc).
        unsafe { core::ptr::read_volatile(task.wrapping_add(off as usize) as *const u64) }
    }

    #[inline(always)]
    fn u32_at(task: *const u8, off: u32) -> u32 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(task.wrapping_add(off as usize) as *const u32) }
    }

    #[inline(always)]
    fn u8_at(task: *const u8, off: u32) -> u8 {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(task.wrapping_add(off as usize)) }
    }

    #[inline(always)]
    fn comm(task: *const u8) -> [u8; 16] {
        let off = offset!(comm);
        let (a, b) = (Self::u64_at(task, off), Self::u64_at(task, off + 8));
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&a.to_ne_bytes());
        c[8..].copy_from_slice(&b.to_ne_bytes());
        c
    }
}

impl Access for Raw {
    /// One 8-byte read of pid and tgid (userspace checks that tgid follows
    /// pid): a probe read costs more than the few bytes it copies.
    #[inline(always)]
    fn target(task: *const u8) -> Option<(u32, u32)> {
        let off = offset!(pid) as usize;
        // SAFETY: bpf_probe_read_kernel tolerates bad addresses (returns an error).
        match unsafe { bpf_probe_read_kernel(task.wrapping_add(off) as *const u64) } {
            Ok(v) => {
                let (pid, tgid) = (v as u32, (v >> 32) as u32);
                is_target(tgid).then_some((pid, tgid))
            }
            Err(_) => {
                if drop_event(DROP_READ_FAILED) == 1 {
                    warn_read_failed();
                }
                None
            }
        }
    }

    #[inline(always)]
    fn current_target(_prev: *const u8) -> Option<(u32, u32)> {
        let id = bpf_get_current_pid_tgid();
        let (pid, tgid) = (id as u32, (id >> 32) as u32);
        is_target(tgid).then_some((pid, tgid))
    }

    #[inline(always)]
    fn u64_at(task: *const u8, off: u32) -> u64 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel(task.wrapping_add(off as usize) as *const u64) }.unwrap_or(0)
    }

    #[inline(always)]
    fn u32_at(task: *const u8, off: u32) -> u32 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel(task.wrapping_add(off as usize) as *const u32) }.unwrap_or(0)
    }

    #[inline(always)]
    fn u8_at(task: *const u8, off: u32) -> u8 {
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel(task.wrapping_add(off as usize)) }.unwrap_or(0)
    }

    #[inline(always)]
    fn comm(task: *const u8) -> [u8; 16] {
        let off = offset!(comm) as usize;
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel(task.wrapping_add(off) as *const [u8; 16]) }
            .unwrap_or([0; 16])
    }
}

// ---- per-thread entries -------------------------------------------------------

/// `tid`'s lane in `SLOTS`.
#[inline(always)]
fn slot_cell(tid: u32) -> Option<*mut u32> {
    let entry = SLOTS.get_ptr_mut(tid >> 1)?;
    // SAFETY: lane 0 or 1 of a live `[u32; 2]` map value.
    Some(unsafe { (entry as *mut u32).add((tid & 1) as usize) })
}

/// Records which target thread runs on `cpu` (0: none); returns the one
/// recorded before.
#[inline(always)]
fn set_current(cpu: u32, tid: u32) -> u32 {
    match CURRENT.get_ptr_mut(cpu) {
        // SAFETY: a live map value; only this CPU writes its entry.
        Some(p) => unsafe { core::ptr::replace(p, tid) },
        None => 0,
    }
}

/// Whether target thread `tid` (`task`) is on a CPU now.
#[inline(always)]
fn is_running<A: Access>(task: *const u8, tid: u32) -> bool {
    let cpu = A::u32_at(task, offset!(cpu));
    CURRENT.get(cpu).is_some_and(|&t| t == tid)
}

/// The thread's entry, if it has one.
#[inline(always)]
fn lookup(tid: u32) -> Option<*mut ThreadStats> {
    // SAFETY: an aligned 4-byte load of a live map value.
    let slot = unsafe { *slot_cell(tid)? };
    if slot == 0 {
        return None;
    }
    let st = STATS.get_ptr_mut(slot)?;
    // A slot being freed or lost in a creation race names another tid (0).
    // SAFETY: a live map value.
    if unsafe { (*st).tid } != tid {
        return None;
    }
    Some(st)
}

/// Creates the thread's entry with `base` as the `sum_exec_runtime` base.
///
/// Lock-free: take a slot (a freed one, else the next never used one), fill
/// it, then publish it in `SLOTS` with a compare-and-swap from 0. A loser
/// (another CPU, or userspace seeding the same thread) clears its slot,
/// gives it back, and uses the winner's.
#[inline(always)]
fn create<A: Access>(task: *const u8, tid: u32, tgid: u32, base: u64) -> Option<*mut ThreadStats> {
    let cell = slot_cell(tid)?;
    let slot = match FREE_SLOTS.pop() {
        Ok(Some(s)) => s,
        _ => {
            let alloc = ALLOC.get_ptr_mut(0)?;
            // SAFETY: an aligned u32 in a live map value; atomic, as every CPU
            // and userspace take slots from it. SeqCst, not Relaxed: for a
            // relaxed fetch-add bpf-linker (LLVM 22, cpu "generic" + alu32)
            // emits the non-fetching `lock add` and then uses its operand as
            // the old value; SeqCst gives `atomic_fetch_add`.
            let last = unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(alloc, 1) };
            last + 1
        }
    };
    let Some(st) = STATS.get_ptr_mut(slot) else {
        if drop_event(DROP_THREADS_FULL) == 1 {
            warn_threads_full(tid);
        }
        return None;
    };
    // SAFETY: a live map value nobody else uses: the slot is unpublished.
    unsafe {
        core::ptr::write_bytes(st, 0, 1);
        (*st).tid = tid;
        (*st).tgid = tgid;
        (*st).comm = A::comm(task);
        (*st).last_sum_exec_ns = base;
        (*st).run_delay_seen_ns = run_delay::<A>(task);
        (*st).first_ns = bpf_ktime_get_ns();
    }
    // SAFETY: an aligned u32 in a live map value.
    let (cur, won) = unsafe {
        atomic_cxchg::<u32, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(cell, 0, slot)
    };
    if won {
        return Some(st);
    }
    // SAFETY: still ours.
    unsafe { (*st).tid = 0 };
    let _ = FREE_SLOTS.push(slot, 0);
    let other = STATS.get_ptr_mut(cur)?;
    // SAFETY: a live map value.
    (unsafe { (*other).tid } == tid).then_some(other)
}

/// The thread's entry, created if missing.
#[inline(always)]
fn entry<A: Access>(
    task: *const u8,
    tid: u32,
    tgid: u32,
    base: impl FnOnce() -> u64,
) -> Option<*mut ThreadStats> {
    match lookup(tid) {
        Some(st) => Some(st),
        None => create::<A>(task, tid, tgid, base()),
    }
}

#[inline(always)]
fn log2_bucket(v: u64) -> usize {
    if v == 0 {
        return 0;
    }
    let b = 63 - v.leading_zeros() as usize;
    if b >= RUNQ_BUCKETS {
        RUNQ_BUCKETS - 1
    } else {
        b
    }
}

/// Whether this kernel has `sched_info.run_delay` (a constant to the
/// verifier, which drops the other branch).
#[inline(always)]
fn have_run_delay() -> bool {
    offset!(run_delay) != 0
}

/// `task->sched_info.run_delay`, or [`RUN_DELAY_UNKNOWN`] without it.
#[inline(always)]
fn run_delay<A: Access>(task: *const u8) -> u64 {
    if have_run_delay() {
        A::u64_at(task, offset!(run_delay))
    } else {
        RUN_DELAY_UNKNOWN
    }
}

/// Adds one run-queue wait of `kind` (`RUNNABLE_*`) to the counters.
#[inline(always)]
fn record_wait(st: &mut ThreadStats, kind: u32, wait: u64) {
    if kind == RUNNABLE_WAKEUP {
        st.runq_wait_ns += wait;
        st.runq_waits += 1;
        if wait > st.runq_max_ns {
            st.runq_max_ns = wait;
        }
        let b = log2_bucket(wait);
        if let Some(slot) = st.runq_hist.get_mut(b) {
            *slot += 1;
        }
    } else if kind == RUNNABLE_PREEMPTED {
        st.preempted_wait_ns += wait;
    }
}

/// `bpf_ktime_get_ns()`, read at most once per event.
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

/// Adds `ns` of on-CPU time on `cpu` to the thread's per-CPU time.
#[inline(always)]
fn add_cpu_time(st: &mut ThreadStats, tid: u32, cpu: u32, ns: u64) {
    let acc = st.cpu_acc;
    let tag = u64::from(cpu + 1) << CPU_ACC_SHIFT;
    let held = acc & CPU_ACC_NS_MASK;
    if acc & !CPU_ACC_NS_MASK == tag && held + ns <= CPU_ACC_NS_MASK {
        // Same CPU as last time: no map lookup. One 8-byte store.
        st.cpu_acc = acc + ns;
        return;
    }
    if held != 0 {
        let key = ThreadCpuKey {
            tid,
            cpu: ((acc >> CPU_ACC_SHIFT) as u32).wrapping_sub(1),
        };
        match THREAD_CPU.get_ptr_mut(key) {
            // SAFETY: only the CPU running `tid` updates its keys.
            Some(p) => unsafe { *p += held },
            None => {
                if THREAD_CPU.insert(key, held, BPF_ANY as u64).is_err() {
                    drop_event(DROP_THREAD_CPU_FULL);
                }
            }
        }
    }
    st.cpu_acc = tag | (ns & CPU_ACC_NS_MASK);
}

// ---- handlers -----------------------------------------------------------------

/// One side of a switch as [`Access::target`] found it: `(tid, tgid)`,
/// tgid 0 for a task that is not a target. Plain integers, not an
/// `Option`: a `None` passed on leaves its payload undefined, and a spill
/// of that is an uninitialised read the verifier refuses.
#[derive(Clone, Copy)]
struct Side(u32, u32);

impl Side {
    #[inline(always)]
    fn of(t: Option<(u32, u32)>) -> Self {
        match t {
            Some((tid, tgid)) => Side(tid, tgid),
            None => Side(0, 0),
        }
    }

    #[inline(always)]
    fn is_target(self) -> bool {
        self.1 != 0
    }

    #[inline(always)]
    fn target(self) -> Option<(u32, u32)> {
        self.is_target().then_some((self.0, self.1))
    }
}

/// Charges `prev`'s slice and classifies the switch.
#[inline(always)]
fn switch_out<A: Access>(
    prev: *const u8,
    side: Side,
    preempt: bool,
    prev_state: u64,
    cpu: u32,
    clock: &mut Clock,
) {
    let Some((tid, tgid)) = side.target() else {
        return;
    };
    let _ = set_current(cpu, 0);
    let sum = A::u64_at(prev, offset!(sum_exec_runtime));
    let st = match lookup(tid) {
        Some(p) => p,
        // Do not resurrect an entry userspace already collected and freed.
        None if prev_state & TASK_DEAD != 0 => return,
        None => match create::<A>(prev, tid, tgid, sum) {
            Some(p) => p,
            None => return,
        },
    };
    // SAFETY: a live map value; only this CPU writes these fields while the
    // thread runs here (it runs on one CPU at a time).
    let st = unsafe { &mut *st };
    let delta = sum.saturating_sub(st.last_sum_exec_ns);
    st.last_sum_exec_ns = sum;
    if delta > 0 {
        st.cpu_time_ns += delta;
        add_cpu_time(st, tid, cpu, delta);
    }
    // The kernel counts nvcsw only for a non-preempted switch from a sleeping
    // state (kernel/sched/core.c: __schedule), everything else is nivcsw.
    // Non-short-circuit `|`: one flag, no branch.
    let preempted = preempt | (prev_state == 0);
    if preempted {
        st.involuntary += 1;
    } else {
        st.voluntary += 1;
    }
    // Held by CFS bandwidth throttling (bandwidth.rs; gone without a quota).
    let held = bandwidth::on()
        && bandwidth::switch_out::<A>(prev, (tid, tgid), cpu, prev_state, st, clock.now());
    if have_run_delay() {
        // run_delay grew by the wait that preceded this slice (added at its
        // switch-in, after that tracepoint: sched_info_arrive()). If that
        // wait followed a preemption, it is counted here; after a wakeup,
        // switch-in timed it already and left RUNNABLE_NONE.
        let rd = A::u64_at(prev, offset!(run_delay));
        let seen = st.run_delay_seen_ns;
        if seen != RUN_DELAY_UNKNOWN && st.runnable_kind == RUNNABLE_PREEMPTED {
            st.preempted_wait_ns += rd.saturating_sub(seen);
        }
        st.run_delay_seen_ns = rd;
        st.runnable_since_ns = 0;
        st.runnable_kind = if preempted {
            RUNNABLE_PREEMPTED
        } else {
            RUNNABLE_NONE
        };
    } else if preempted {
        st.runnable_since_ns = clock.now();
        st.runnable_kind = RUNNABLE_PREEMPTED;
    } else {
        // A wakeup seen while it was still running is stale now.
        st.runnable_since_ns = 0;
        st.runnable_kind = RUNNABLE_NONE;
    }
    // It ran: a wait still counted (its switch-in was not seen) is over.
    wait_end(st, cpu);
    if !preempted {
        begin_sleep(st, prev_state, clock);
    } else if !held {
        wait_begin(st, cpu, clock);
    }
    // It ran since it was seeded; run_delay holds its last hold now.
    st.flags &= !(FLAG_SEEDED | FLAG_HELD_PENDING);
}

/// Marks `next` as running and ends a wakeup-to-run wait (with
/// `sched_info`, a wait after a preemption is read at switch-out).
#[inline(always)]
fn switch_in<A: Access>(next: *const u8, side: Side, cpu: u32, clock: &mut Clock) {
    let Some((tid, tgid)) = side.target() else {
        return;
    };
    let was = set_current(cpu, tid);
    if was != 0 {
        // A target thread was still marked on this CPU: its switch-out was
        // not seen (its task read failed), so its slice is uncounted.
        warn_unmatched_switch_in(was);
    }
    let st = if have_run_delay() {
        // No entry yet: it gets one where it first needs one (threads that
        // existed before tracing are seeded by userspace, new ones at
        // sched_wakeup_new).
        match lookup(tid) {
            Some(p) => p,
            None => return,
        }
    } else {
        // First sight of a thread about to run: its sum_exec_runtime now is
        // an exact base for the slice that starts here.
        match entry::<A>(next, tid, tgid, || {
            A::u64_at(next, offset!(sum_exec_runtime))
        }) {
            Some(p) => p,
            None => return,
        }
    };
    // SAFETY: a live map value; see switch_out.
    let st = unsafe { &mut *st };
    if bandwidth::on() && st.flags & FLAG_HELD != 0 {
        bandwidth::held_in(tid, st, clock.now());
    }
    if st.flags & FLAG_SEEDED != 0 {
        seeded_switch_in(st);
    }
    wait_end(st, cpu);
    let kind = st.runnable_kind;
    if st.sleep_since_ns != 0 {
        end_sleep(st, clock.now()); // back on a CPU with no wakeup seen
    }
    if have_run_delay() && kind != RUNNABLE_WAKEUP {
        return; // a wait after a preemption: read at switch-out
    }
    let since = st.runnable_since_ns;
    if since == 0 {
        return;
    }
    record_wait(st, kind, clock.now().saturating_sub(since));
    st.runnable_since_ns = 0;
    st.runnable_kind = RUNNABLE_NONE;
}

#[inline(always)]
fn on_switch<A: Access>(args: *const u64) {
    // SAFETY: sched_switch has four arguments on kernels >= 5.18.
    let (preempt, prev, next, prev_state) =
        unsafe { (*args != 0, *args.add(1), *args.add(2), *args.add(3)) };
    // Inlined by the verifier on x86-64 and arm64.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let mut clock = Clock(0);
    let (prev, next) = (prev as *const u8, next as *const u8);
    // Each side's target test once, for the three steps below.
    let (prev_t, next_t) = (Side::of(A::current_target(prev)), Side::of(A::target(next)));
    // Before switch_out/switch_in: prev's slice is charged with the count
    // of target threads that waited on this CPU during it.
    neighbour_switch::<A>(
        prev,
        next,
        prev_t.is_target(),
        next_t.is_target(),
        cpu,
        &mut clock,
    );
    switch_out::<A>(
        prev,
        prev_t,
        preempt,
        prev_state & 0xffff_ffff,
        cpu,
        &mut clock,
    );
    switch_in::<A>(next, next_t, cpu, &mut clock);
    if timeline_on() {
        timeline_switch::<A>(
            prev,
            next,
            preempt,
            prev_state & 0xffff_ffff,
            cpu,
            &mut clock,
        );
    }
}

/// The switch as a timeline event, when a target thread is on either side.
/// Looks the two tasks up again rather than passing results out of
/// `switch_out`/`switch_in`, so that the path without the timeline is
/// exactly the one above.
#[inline(always)]
fn timeline_switch<A: Access>(
    prev: *const u8,
    next: *const u8,
    preempt: bool,
    prev_state: u64,
    cpu: u32,
    clock: &mut Clock,
) {
    let out = A::current_target(prev).map_or(0, |(tid, _)| tid);
    let inn = A::target(next).map_or(0, |(tid, _)| tid);
    if out == 0 && inn == 0 {
        return;
    }
    let mut flags = 0;
    // The other side's process, when it is not a target: the neighbour
    // that took the CPU, or left it (0: the idle task).
    let peer = if out == 0 {
        A::u32_at(prev, offset!(tgid))
    } else if inn == 0 {
        A::u32_at(next, offset!(tgid))
    } else {
        0
    };
    // The task leaving's on-CPU time so far, else the arriving one's (the
    // base of its slice's CPU time).
    let sum_exec_ns = if out == 0 {
        A::u64_at(next, offset!(sum_exec_runtime))
    } else {
        if preempt | (prev_state == 0) {
            flags |= EVF_PREEMPTED;
        }
        if prev_state & TASK_DEAD != 0 {
            flags |= EVF_DEAD;
        }
        A::u64_at(prev, offset!(sum_exec_runtime))
    };
    emit(TimelineEvent {
        ts_ns: clock.now(),
        kind: EV_SWITCH,
        cpu,
        a: out,
        b: inn,
        flags,
        peer,
        sum_exec_ns,
    });
}

#[inline(always)]
fn on_wakeup<A: Access>(args: *const u64, new_task: bool) {
    let p = unsafe { *args } as *const u8;
    let Some((tid, tgid)) = A::target(p) else {
        return;
    };
    if timeline_on() {
        // The waker, where it runs: the wakee's chain for the trace.
        emit(TimelineEvent {
            ts_ns: unsafe { bpf_ktime_get_ns() },
            kind: EV_WAKEUP,
            cpu: A::u32_at(p, offset!(cpu)),
            a: tid,
            b: unsafe { bpf_get_smp_processor_id() },
            flags: if new_task { EVF_NEW } else { 0 },
            peer: bpf_get_current_pid_tgid() as u32,
            sum_exec_ns: 0,
        });
    }
    let Some(st) = entry::<A>(p, tid, tgid, || {
        if new_task {
            0
        } else {
            A::u64_at(p, offset!(sum_exec_runtime))
        }
    }) else {
        return;
    };
    // SAFETY: a live map value. Racing a switch-in on another CPU can at
    // worst lose one wait sample.
    let st = unsafe { &mut *st };
    // Woken while still on a CPU: no run-queue wait follows. Woken while
    // runnable after a preemption (preempted on its way to sleep): it has
    // waited since the preemption, a preempted wait.
    if is_running::<A>(p, tid) || st.runnable_kind == RUNNABLE_PREEMPTED {
        return;
    }
    if st.run_delay_seen_ns == RUN_DELAY_UNKNOWN {
        st.run_delay_seen_ns = run_delay::<A>(p);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if st.flags & FLAG_SEEDED != 0 {
        // Seeded, and first seen woken: it slept since it was seeded.
        st.flags &= !FLAG_SEEDED;
        if st.sleep_since_ns == 0 {
            st.sleep_since_ns = st.first_ns;
        }
    }
    if st.sleep_since_ns != 0 {
        end_sleep(st, now);
    }
    st.runnable_since_ns = now;
    st.runnable_kind = RUNNABLE_WAKEUP;
    wait_begin(st, A::u32_at(p, offset!(cpu)), &mut Clock(now));
}

#[inline(always)]
fn migration_class(from: u32, to: u32) -> usize {
    match (CPU_TOPO.get(from), CPU_TOPO.get(to)) {
        (Some(a), Some(b)) if a.valid != 0 && b.valid != 0 => {
            if a.node != b.node {
                MIG_CROSS_NUMA
            } else if a.llc != b.llc {
                MIG_CROSS_LLC
            } else if a.core != b.core {
                MIG_LLC
            } else {
                MIG_SMT
            }
        }
        // Unknown CPUs: count as the farthest, never silently drop.
        _ => MIG_CROSS_NUMA,
    }
}

/// Adds one migration from `from` to `to` to `MIGRATION_PAIRS`.
#[inline(always)]
fn count_pair(from: u32, to: u32) {
    let key = CpuPair { from, to };
    let add = |p: *mut u64| {
        // SAFETY: a live map value; atomic, as migrations of different
        // threads between the same CPUs run on different CPUs at once.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) };
    };
    if let Some(p) = MIGRATION_PAIRS.get_ptr_mut(key) {
        add(p);
        return;
    }
    if MIGRATION_PAIRS.insert(key, 1, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Another CPU inserted the pair first, or the map is full.
    match MIGRATION_PAIRS.get_ptr_mut(key) {
        Some(p) => add(p),
        None => {
            drop_event(DROP_PAIRS_FULL);
        }
    }
}

#[inline(always)]
fn on_migrate<A: Access>(args: *const u64) {
    let (p, dest) = unsafe { (*args as *const u8, *args.add(1) as u32) };
    let Some((tid, tgid)) = A::target(p) else {
        return;
    };
    let orig = A::u32_at(p, offset!(cpu));
    count_pair(orig, dest);
    if timeline_on() {
        emit(TimelineEvent {
            ts_ns: unsafe { bpf_ktime_get_ns() },
            kind: EV_MIGRATE,
            cpu: orig,
            a: tid,
            b: dest,
            flags: 0,
            peer: 0,
            sum_exec_ns: 0,
        });
    }
    let Some(st) = entry::<A>(p, tid, tgid, || A::u64_at(p, offset!(sum_exec_runtime))) else {
        return;
    };
    // SAFETY: a live map value; a runnable task's migration holds its
    // run-queue locks (set_task_cpu()), so its switch-in does not race.
    wait_move(unsafe { &mut *st }, dest);
    let class = migration_class(orig, dest);
    // SAFETY: a live map value. A plain add is enough: set_task_cpu() runs
    // with the task's pi_lock or rq lock held (kernel/sched/core.c), so two
    // migrations of one task never race, and nothing else writes this field.
    unsafe {
        if let Some(slot) = (*st).migrations.get_mut(class) {
            *slot += 1;
        }
    }
}

#[inline(always)]
fn on_exit() {
    let id = bpf_get_current_pid_tgid();
    let (tid, tgid) = (id as u32, (id >> 32) as u32);
    if !is_target(tgid) {
        return;
    }
    if let Some(st) = lookup(tid) {
        // SAFETY: a live map value, written by the exiting thread itself.
        let st = unsafe { &mut *st };
        st.flags |= FLAG_EXITING;
        if let Ok(comm) = bpf_get_current_comm() {
            st.comm = comm; // the final name (threads often rename themselves)
        }
    }
}

// ---- wait split, neighbours, followed processes ------------------------------
//
// Kept apart from the handlers above: these run only for target threads
// (or forks and cgroup moves, which are rare), so the untargeted path of
// sched_switch is unchanged.

/// A voluntary switch-out (`prev_state` not runnable): the thread sleeps
/// from now until its wakeup; its final switch-out ends its lifetime.
/// One clock read per voluntary switch of a target thread.
#[inline(always)]
fn begin_sleep(st: &mut ThreadStats, prev_state: u64, clock: &mut Clock) {
    if prev_state & TASK_DEAD != 0 {
        st.last_ns = clock.now();
    } else {
        st.sleep_since_ns = clock.now();
    }
}

/// A seeded thread first seen switching in: it waited runnable since it
/// was seeded (a preempted wait: userspace seeded `run_delay_seen_ns` from
/// /proc/<tid>/schedstat; without `sched_info`, timed from `first_ns`).
#[inline(always)]
fn seeded_switch_in(st: &mut ThreadStats) {
    st.flags &= !FLAG_SEEDED;
    if st.runnable_kind == RUNNABLE_NONE {
        st.runnable_kind = RUNNABLE_PREEMPTED;
        if !have_run_delay() {
            st.runnable_since_ns = st.first_ns;
        }
    }
}

/// Ends the sleep in progress at `now`.
#[inline(always)]
fn end_sleep(st: &mut ThreadStats, now: u64) {
    st.sleep_ns += now.saturating_sub(st.sleep_since_ns);
    st.sleep_since_ns = 0;
}

/// Target threads waiting runnable on one CPU, and since when the task on
/// it now has held it as far as neighbour accounting goes. The count is
/// `added - ended`: a wait begins on any CPU (a wakeup or migration lands
/// the thread here), so `added` is atomic, but nearly every wait ends with
/// the thread's switch-in here, and `ended` is written only by programs on
/// this CPU (the sched tracepoints run with interrupts off), so its
/// increment needs no atomic. A wait that ends elsewhere (a migration)
/// takes one back from `added`.
#[repr(C)]
struct WaitQ {
    /// Waits begun on this CPU (less those ended elsewhere).
    added: u32,
    /// Waits ended on this CPU, by this CPU.
    ended: u32,
    /// `bpf_ktime_get_ns()` at the last switch on this CPU while a target
    /// thread waited (or when the first one began waiting).
    since_ns: u64,
}

/// Per CPU (index: CPU number), see [`WaitQ`]. Sized to possible CPUs.
#[map]
static WAITQ: Array<WaitQ> = Array::with_max_entries(1024, 0);

/// Counts the thread as waiting on `cpu` (once: `wait_cpu` holds it).
#[inline(always)]
fn wait_begin(st: &mut ThreadStats, cpu: u32, clock: &mut Clock) {
    if st.wait_cpu != 0 || !neighbours_on() {
        return;
    }
    if let Some(q) = WAITQ.get_ptr_mut(cpu) {
        // SAFETY: a live map value; atomic, as wakeups on other CPUs
        // count waiters here too.
        let before = unsafe {
            atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(&raw mut (*q).added, 1)
                .wrapping_sub((*q).ended)
        };
        if before == 0 {
            // SAFETY: as above; a racing switch on that CPU at worst
            // moves the start of the first charged slice.
            unsafe { (*q).since_ns = clock.now() };
        }
        st.wait_cpu = cpu + 1;
    }
}

/// Stops counting the thread as waiting; `cpu` is the CPU this runs on.
#[inline(always)]
fn wait_end(st: &mut ThreadStats, cpu: u32) {
    let c = st.wait_cpu;
    if c == 0 {
        return;
    }
    st.wait_cpu = 0;
    if let Some(q) = WAITQ.get_ptr_mut(c - 1) {
        if c - 1 == cpu {
            // SAFETY: a live map value; only this CPU writes `ended`.
            unsafe { (*q).ended = (*q).ended.wrapping_add(1) };
        } else {
            // SAFETY: as above; atomic (see wait_begin). Adding u32::MAX
            // is subtracting one.
            unsafe {
                atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(&raw mut (*q).added, u32::MAX)
            };
        }
    }
}

/// A waiting thread moved to `dest` (load balancing): it waits there now.
#[inline(always)]
fn wait_move(st: &mut ThreadStats, dest: u32) {
    if st.wait_cpu == 0 {
        return;
    }
    // SAFETY: a helper without preconditions.
    wait_end(st, unsafe { bpf_get_smp_processor_id() });
    wait_begin(st, dest, &mut Clock(0));
}

/// On every switch, the one untargeted-path cost of neighbour accounting:
/// one load of this CPU's waiting count. Only while target threads wait
/// here: the slice that ends now (since the switch that began it, or the
/// first wait) times the number waiting is charged to `prev`'s process,
/// unless `prev` is the idle task or a target thread. The clock is read
/// only where such a chargeable slice ends or begins: a slice of a target
/// thread or of the idle task starts with `since_ns` 0 (never charged),
/// so a switch between target threads (the traced workload's own, the
/// common case) adds no clock read. Whether each side is a target comes
/// from the caller's one test of it (no second `TARGETS` lookup here).
#[inline(always)]
fn neighbour_switch<A: Access>(
    prev: *const u8,
    next: *const u8,
    prev_target: bool,
    next_target: bool,
    cpu: u32,
    clock: &mut Clock,
) {
    if !neighbours_on() {
        return;
    }
    let Some(q) = WAITQ.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: a live map value; `added` volatile, as other CPUs change it.
    let waiting =
        unsafe { core::ptr::read_volatile(&raw const (*q).added).wrapping_sub((*q).ended) };
    if waiting == 0 {
        return;
    }
    // SAFETY: a live map value; only switches on this CPU (and the first
    // waiter) write it.
    let since = unsafe { (*q).since_ns };
    if since != 0 && !prev_target {
        let tgid = A::u32_at(prev, offset!(tgid));
        if tgid != 0 {
            let now = clock.now();
            charge_neighbour::<A>(prev, tgid, now.saturating_sub(since) * u64::from(waiting));
        }
    }
    // Not the idle task (tgid 0), not a target.
    let start = if !next_target && A::u32_at(next, offset!(tgid)) != 0 {
        clock.now()
    } else {
        0
    };
    // SAFETY: as above.
    unsafe { (*q).since_ns = start };
}

/// Adds `ns` of target wait to `tgid`'s `NEIGHBOURS` entry, made on first
/// sight with the comm and cpu-controller cgroup of `task`.
#[inline(always)]
fn charge_neighbour<A: Access>(task: *const u8, tgid: u32, ns: u64) {
    let p = match NEIGHBOURS.get_ptr_mut(tgid) {
        Some(p) => p,
        None => {
            let n = Neighbour {
                wait_ns: 0,
                waits: 0,
                cgroup_id: cgroup_id(task),
                comm: A::comm(task),
            };
            // Another CPU may have inserted it first: the lookup finds it.
            let _ = NEIGHBOURS.insert(tgid, n, BPF_NOEXIST as u64);
            match NEIGHBOURS.get_ptr_mut(tgid) {
                Some(p) => p,
                None => {
                    drop_event(DROP_NEIGHBOURS_FULL);
                    return;
                }
            }
        }
    };
    // SAFETY: a live map value; atomic, as several CPUs charge one process.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*p).wait_ns, ns);
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*p).waits, 1);
    }
}

/// Reads a kernel pointer at `base + off` (0 on failure).
#[inline(always)]
fn read_ptr(base: *const u8, off: u32) -> *const u8 {
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const u64) }.unwrap_or(0)
        as *const u8
}

/// `task->cgroups->subsys[cpu_cgrp_id]->cgroup->kn->id`: the task's cgroup
/// in the cpu controller's hierarchy (v1 or v2, wherever it is mounted),
/// as the inode number of its directory; 0 when unknown. Probe reads in
/// both program sets: it runs once per neighbour.
#[inline(always)]
fn cgroup_id(task: *const u8) -> u64 {
    if offset!(cgroups) == 0 {
        return 0;
    }
    let cset = read_ptr(task, offset!(cgroups));
    if cset.is_null() {
        return 0;
    }
    let css = read_ptr(cset, offset!(css_cpu));
    if css.is_null() {
        return 0;
    }
    let cgrp = read_ptr(css, offset!(css_cgroup));
    if cgrp.is_null() {
        return 0;
    }
    kn_id(cgrp)
}

/// `cgrp->kn->id`, 0 when unreadable.
#[inline(always)]
fn kn_id(cgrp: *const u8) -> u64 {
    let kn = read_ptr(cgrp, offset!(cgroup_kn));
    if kn.is_null() {
        return 0;
    }
    read_ptr(kn, offset!(kn_id)) as u64
}

#[inline(always)]
fn count_fork(kind: u32) {
    if let Some(p) = FORKS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Marks `tgid` as a target; false when it is above the bitmap.
#[inline(always)]
fn mark_target(tgid: u32) -> bool {
    match TARGETS.get_ptr_mut(tgid >> 6) {
        Some(word) => {
            // SAFETY: a live map value; atomic, as forks on other CPUs and
            // userspace set bits of the same word.
            unsafe {
                atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(word, 1 << (tgid & 63));
            }
            true
        }
        None => false,
    }
}

/// `sched_process_fork(parent, child)`: a new process of a target process
/// is a target before it runs (the tracepoint fires before
/// `wake_up_new_task`, whose `sched_wakeup_new` then makes its entry with a
/// zero base: traced from its first instruction). New threads share their
/// parent's tgid and need nothing.
#[inline(always)]
fn on_fork<A: Access>(args: *const u64) {
    let (parent, child) = unsafe { (*args as *const u8, *args.add(1) as *const u8) };
    let Some((_, ptgid)) = A::target(parent) else {
        let _ = cgroup_set_fork::<A>(child);
        return;
    };
    let ctgid = A::u32_at(child, offset!(tgid));
    if ctgid == ptgid || ctgid == 0 {
        return;
    }
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    let follow = unsafe { core::ptr::read_volatile(&FOLLOW) } != 0;
    if follow && mark_target(ctgid) {
        count_fork(FORK_FOLLOWED);
    } else if !cgroup_set_fork::<A>(child) {
        count_fork(FORK_MISSED);
    }
}

/// `cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: a task moved
/// into the `--cgroup` directory makes its process a target, with an entry
/// whose base is its CPU time now.
#[inline(always)]
fn on_cgroup_attach<A: Access>(args: *const u64) {
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    let want = unsafe { core::ptr::read_volatile(&JOIN_CGROUP) };
    if want == 0 {
        cgroup_set_attach::<A>(args);
        return;
    }
    let (cgrp, task) = unsafe { (*args as *const u8, *args.add(2) as *const u8) };
    if kn_id(cgrp) != want {
        return;
    }
    let tgid = A::u32_at(task, offset!(tgid));
    if tgid == 0 {
        return;
    }
    if !is_target(tgid) {
        if !mark_target(tgid) {
            return;
        }
        count_fork(FORK_JOINED);
    }
    let tid = A::u32_at(task, offset!(pid));
    let _ = entry::<A>(task, tid, tgid, || {
        A::u64_at(task, offset!(sum_exec_runtime))
    });
}

// ---- the cgroup set (`affin-trace serve`) ------------------------------------
//
// The agent traces every process of a set of cgroups that changes as
// containers come and go: userspace adds and removes cgroups in
// `CGROUP_TARGETS` (a map update, no new attach), and a process that joins
// one, or is forked inside one, becomes a target before it runs. The key is
// the kernfs id of the cgroup's directory in the cpu controller's
// hierarchy (on a hybrid host the v1 cpu mount, not the default
// hierarchy's `bpf_get_current_cgroup_id()`). Only with `CGROUP_SET` set
// (a frozen `.rodata` constant, 0 in one-shot runs, where the verifier
// drops these paths); they run on forks and cgroup moves only, never on a
// switch.

/// 1: `CGROUP_TARGETS` is in use (`serve`). A frozen `.rodata` constant.
#[unsafe(no_mangle)]
static CGROUP_SET: u32 = 0;

/// Traced cgroups: kernfs id of the cpu-controller directory -> 1.
#[map]
static CGROUP_TARGETS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// tgid -> the `CGROUP_TARGETS` key it was marked for: userspace charges
/// the threads of a process that came and went between two of its reads.
#[map]
static JOINED: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn cgroup_set_on() -> bool {
    // SAFETY: a plain read of a static; volatile, as for `offset!`.
    unsafe { core::ptr::read_volatile(&CGROUP_SET) != 0 }
}

/// Marks `tgid` (of `task`) for cgroup `id` and gives `task` an entry.
#[inline(always)]
fn cgroup_set_mark<A: Access>(task: *const u8, tgid: u32, id: u64) {
    if !is_target(tgid) {
        if !mark_target(tgid) {
            return;
        }
        count_fork(FORK_JOINED);
    }
    let _ = JOINED.insert(tgid, id, BPF_ANY as u64);
    let tid = A::u32_at(task, offset!(pid));
    let _ = entry::<A>(task, tid, tgid, || {
        A::u64_at(task, offset!(sum_exec_runtime))
    });
}

/// A new process (or a thread of an untargeted one): a target when its
/// cpu cgroup (inherited, set before `sched_process_fork` fires) is in the
/// set, whoever its parent is (the agent does not follow children out of
/// their cgroup). Returns whether it was marked.
#[inline(always)]
fn cgroup_set_fork<A: Access>(child: *const u8) -> bool {
    if !cgroup_set_on() {
        return false;
    }
    let id = cgroup_id(child);
    if id == 0 || CGROUP_TARGETS.get_ptr(id).is_none() {
        return false;
    }
    let tgid = A::u32_at(child, offset!(tgid));
    if tgid == 0 {
        return false;
    }
    cgroup_set_mark::<A>(child, tgid, id);
    true
}

/// `cgroup_attach_task`: a task moved into a cgroup of the set. Fires once
/// per hierarchy; only the cpu hierarchy's directories are in the set.
#[inline(always)]
fn cgroup_set_attach<A: Access>(args: *const u64) {
    if !cgroup_set_on() {
        return;
    }
    let (cgrp, task) = unsafe { (*args as *const u8, *args.add(2) as *const u8) };
    let id = kn_id(cgrp);
    if id == 0 || CGROUP_TARGETS.get_ptr(id).is_none() {
        return;
    }
    let tgid = A::u32_at(task, offset!(tgid));
    if tgid != 0 {
        cgroup_set_mark::<A>(task, tgid, id);
    }
}

// ---- tp_btf entries -------------------------------------------------------

#[btf_tracepoint(function = "sched_switch")]
pub fn btf_sched_switch(ctx: BtfTracePointContext) -> i32 {
    on_switch::<Btf>(ctx.as_ptr() as *const u64);
    0
}

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn btf_sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    on_migrate::<Btf>(ctx.as_ptr() as *const u64);
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn btf_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    on_wakeup::<Btf>(ctx.as_ptr() as *const u64, false);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn btf_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    on_wakeup::<Btf>(ctx.as_ptr() as *const u64, true);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn btf_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    on_exit();
    0
}

/// An empty sched_switch program: the floor any tracer pays per switch, for
/// `cargo xtask bench`. Never attached by a trace run.
#[cfg(feature = "floor")]
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// The empty program plus one `bpf_ktime_get_ns()`: what one clock read
/// costs, for `cargo xtask bench`. Never attached by a trace run.
#[cfg(feature = "floor")]
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_clock_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    let t = unsafe { bpf_ktime_get_ns() };
    // Stored, so that the read is not optimised away.
    if let Some(p) = CLOCK_SINK.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { *p = t };
    }
    0
}

/// The empty program plus what any per-thread accounting pays before its
/// logic, done as btf_sched_switch does it: whether `prev` and `next` are
/// targets (their tgid against `TARGETS`), and for a target its `STATS`
/// entry (slot lookup) and the `task_struct` fields it reads
/// (`sum_exec_runtime`, `sched_info.run_delay`). `cargo xtask bench`
/// attaches it in (d) beside btf_sched_switch (probe::FLOOR_LADDER_ENV):
/// the rest of btf_sched_switch's time is its own logic. Never attached by
/// a trace run.
#[cfg(feature = "floor")]
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_lookup_sched_switch(ctx: BtfTracePointContext) -> i32 {
    let args = ctx.as_ptr() as *const u64;
    // SAFETY: sched_switch has four arguments on kernels >= 5.18.
    let (prev, next) = unsafe { (*args.add(1) as *const u8, *args.add(2) as *const u8) };
    let mut acc = 0u64;
    if let Some((tid, _)) = Btf::current_target(prev) {
        acc = acc.wrapping_add(Btf::u64_at(prev, offset!(sum_exec_runtime)));
        if have_run_delay() {
            acc = acc.wrapping_add(Btf::u64_at(prev, offset!(run_delay)));
        }
        if let Some(st) = lookup(tid) {
            // SAFETY: a live map value; read only.
            acc = acc.wrapping_add(unsafe { (*st).cpu_time_ns });
        }
    }
    if let Some((tid, _)) = Btf::target(next)
        && let Some(st) = lookup(tid)
    {
        // SAFETY: as above.
        acc = acc.wrapping_add(u64::from(unsafe { (*st).flags }));
    }
    if let Some(p) = CLOCK_SINK.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { *p = acc };
    }
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn btf_sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    on_fork::<Btf>(ctx.as_ptr() as *const u64);
    0
}

#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn btf_cgroup_attach_task(ctx: BtfTracePointContext) -> i32 {
    on_cgroup_attach::<Btf>(ctx.as_ptr() as *const u64);
    0
}

// ---- raw_tp entries (fallback) ---------------------------------------------

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn raw_sched_switch(ctx: RawTracePointContext) -> i32 {
    on_switch::<Raw>(ctx.as_ptr() as *const u64);
    0
}

#[raw_tracepoint(tracepoint = "sched_migrate_task")]
pub fn raw_sched_migrate_task(ctx: RawTracePointContext) -> i32 {
    on_migrate::<Raw>(ctx.as_ptr() as *const u64);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn raw_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    on_wakeup::<Raw>(ctx.as_ptr() as *const u64, false);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn raw_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    on_wakeup::<Raw>(ctx.as_ptr() as *const u64, true);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn raw_sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    on_exit();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn raw_sched_process_fork(ctx: RawTracePointContext) -> i32 {
    on_fork::<Raw>(ctx.as_ptr() as *const u64);
    0
}

#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn raw_cgroup_attach_task(ctx: RawTracePointContext) -> i32 {
    on_cgroup_attach::<Raw>(ctx.as_ptr() as *const u64);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
