//! affin-trace's BPF programs: per-thread scheduler counters, aggregated in the
//! kernel, for the thread groups marked in `TARGETS`.
//!
//! Tracepoints (include/trace/events/sched.h):
//! - `sched_switch(preempt, prev, next, prev_state)`: on-CPU time per CPU,
//!   voluntary / involuntary switches, end of run-queue waits.
//! - `sched_migrate_task(p, dest_cpu)`: migrations by distance class.
//! - `sched_wakeup(p)`, `sched_wakeup_new(p)`: start of run-queue waits.
//! - `sched_process_exit(p)`: the entry becomes final.
//!
//! Each tracepoint has a `tp_btf` entry (preferred: cheapest, no tracefs) and a
//! `raw_tp` entry (fallback where tp_btf cannot attach). Both receive the same
//! `u64 args[]` array, so one handler serves both; userspace loads one set.
//!
//! Rust BPF has no CO-RE: the few `task_struct` fields read here use offsets
//! that userspace resolves from the running kernel's BTF (`OFFSETS`).
#![no_std]
#![no_main]

use affinity_common::{
    CpuTopo, DROP_READ_FAILED, DROP_THREAD_CPU_FULL, DROP_THREADS_FULL, FLAG_EXITING,
    MIG_CROSS_LLC, MIG_CROSS_NUMA, MIG_LLC, MIG_SMT, RUNNABLE_NONE, RUNNABLE_PREEMPTED,
    RUNNABLE_WAKEUP, RUNQ_BUCKETS, TaskOffsets, ThreadCpuKey, ThreadStats,
};
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
};

/// Bitmap of target thread-group ids: bit `tgid % 32` of word `tgid / 32`.
/// An array lookup is inlined by the verifier, so an untargeted task costs one
/// load and a mask. Sized by userspace from /proc/sys/kernel/pid_max.
#[map]
static TARGETS: Array<u32> = Array::with_max_entries(131_072, 0);

/// Per-thread counters (key: tid). Sized by userspace (`--max-threads`).
#[map]
static THREADS: HashMap<u32, ThreadStats> = HashMap::with_max_entries(16_384, 0);

/// On-CPU ns per (tid, cpu).
#[map]
static THREAD_CPU: HashMap<ThreadCpuKey, u64> = HashMap::with_max_entries(65_536, 0);

/// CPU -> (core, LLC, node), for migration distance. Sized to possible CPUs.
#[map]
static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(1024, 0);

/// Events that could not be recorded, by `DROP_*` reason.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(4, 0);

/// `task_struct` field offsets from the running kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: TaskOffsets = TaskOffsets {
    pid: 0,
    tgid: 0,
    sum_exec_runtime: 0,
    cpu: 0,
};

/// `TASK_DEAD` in `prev_state` (include/linux/sched.h): the final switch.
const TASK_DEAD: u64 = 0x80;

#[inline(always)]
fn offsets() -> TaskOffsets {
    // SAFETY: a plain read of a static; volatile so the compiler does not
    // fold the zero initialiser that userspace overrides at load time.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
fn drop_event(kind: u32) {
    if let Some(p) = DROPS.get_ptr_mut(kind) {
        // SAFETY: per-CPU slot, no other writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn is_target(tgid: u32) -> bool {
    match TARGETS.get(tgid >> 5) {
        Some(word) => *word & (1 << (tgid & 31)) != 0,
        None => false,
    }
}

/// Reads `task->pid` and `task->tgid` in one 8-byte read (userspace checks
/// that tgid follows pid).
#[inline(always)]
fn task_ids(task: *const u8) -> Option<(u32, u32)> {
    let off = offsets().pid as usize;
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses (returns an error).
    match unsafe { bpf_probe_read_kernel(task.wrapping_add(off) as *const u64) } {
        Ok(v) => Some((v as u32, (v >> 32) as u32)),
        Err(_) => {
            drop_event(DROP_READ_FAILED);
            None
        }
    }
}

#[inline(always)]
fn task_u64(task: *const u8, off: u32) -> u64 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(off as usize) as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn task_u32(task: *const u8, off: u32) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(off as usize) as *const u32) }.unwrap_or(0)
}

/// Returns the thread's entry, creating it with `base_sum` as the
/// `sum_exec_runtime` base when it does not exist yet.
#[inline(always)]
fn entry(tid: u32, tgid: u32, base_sum: u64) -> Option<*mut ThreadStats> {
    if let Some(p) = THREADS.get_ptr_mut(tid) {
        return Some(p);
    }
    let mut fresh = ThreadStats {
        tgid,
        last_sum_exec_ns: base_sum,
        ..ThreadStats::default()
    };
    if let Ok(comm) = bpf_get_current_comm() {
        // The current task's comm: right when `tid` is current, and the
        // parent's (which a new thread inherits) in sched_wakeup_new.
        fresh.comm = comm;
    }
    // NOEXIST: another CPU may have created it meanwhile; keep theirs.
    if THREADS.insert(tid, fresh, BPF_NOEXIST as u64).is_err() && THREADS.get_ptr(tid).is_none() {
        drop_event(DROP_THREADS_FULL);
        return None;
    }
    THREADS.get_ptr_mut(tid)
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

/// Charges `prev`'s slice and classifies the switch.
#[inline(always)]
fn switch_out(prev: *const u8, preempt: bool, prev_state: u64, cpu: u32) {
    let id = bpf_get_current_pid_tgid();
    let (tid, tgid) = (id as u32, (id >> 32) as u32);
    if tid == 0 || !is_target(tgid) {
        return;
    }
    let sum = task_u64(prev, offsets().sum_exec_runtime);
    let st = if prev_state & TASK_DEAD != 0 {
        // Do not resurrect an entry userspace already collected and deleted.
        match THREADS.get_ptr_mut(tid) {
            Some(p) => p,
            None => return,
        }
    } else {
        match entry(tid, tgid, sum) {
            Some(p) => p,
            None => return,
        }
    };
    // SAFETY: a live map value; only this CPU writes these fields while the
    // thread runs here (it runs on one CPU at a time).
    let st = unsafe { &mut *st };
    let delta = sum.saturating_sub(st.last_sum_exec_ns);
    st.last_sum_exec_ns = sum;
    st.running_on = 0;
    if delta > 0 {
        st.cpu_time_ns += delta;
        let key = ThreadCpuKey { tid, cpu };
        match THREAD_CPU.get_ptr_mut(key) {
            // SAFETY: only the CPU running `tid` updates this key.
            Some(ns) => unsafe { *ns += delta },
            None => {
                if THREAD_CPU.insert(key, delta, BPF_ANY as u64).is_err() {
                    drop_event(DROP_THREAD_CPU_FULL);
                }
            }
        }
    }
    // The kernel counts nvcsw only for a non-preempted switch from a sleeping
    // state (kernel/sched/core.c: __schedule), everything else is nivcsw.
    if preempt || prev_state == 0 {
        st.involuntary += 1;
        st.runnable_since_ns = unsafe { bpf_ktime_get_ns() };
        st.runnable_kind = RUNNABLE_PREEMPTED;
    } else {
        st.voluntary += 1;
        // A wakeup seen while it was still running is stale now.
        st.runnable_since_ns = 0;
        st.runnable_kind = RUNNABLE_NONE;
    }
}

/// Ends `next`'s run-queue wait.
#[inline(always)]
fn switch_in(next: *const u8, cpu: u32) {
    let Some((tid, tgid)) = task_ids(next) else {
        return;
    };
    if tid == 0 || !is_target(tgid) {
        return;
    }
    let st = match THREADS.get_ptr_mut(tid) {
        Some(p) => p,
        // First sight of a thread about to run: its sum_exec_runtime now is
        // an exact base for the slice that starts here.
        None => match entry(tid, tgid, task_u64(next, offsets().sum_exec_runtime)) {
            Some(p) => p,
            None => return,
        },
    };
    // SAFETY: a live map value; see switch_out.
    let st = unsafe { &mut *st };
    st.running_on = cpu + 1;
    let since = st.runnable_since_ns;
    if since == 0 {
        return;
    }
    let wait = unsafe { bpf_ktime_get_ns() }.saturating_sub(since);
    if st.runnable_kind == RUNNABLE_WAKEUP {
        st.runq_wait_ns += wait;
        st.runq_waits += 1;
        if wait > st.runq_max_ns {
            st.runq_max_ns = wait;
        }
        let b = log2_bucket(wait);
        if let Some(slot) = st.runq_hist.get_mut(b) {
            *slot += 1;
        }
    } else {
        st.preempted_wait_ns += wait;
    }
    st.runnable_since_ns = 0;
    st.runnable_kind = RUNNABLE_NONE;
}

#[inline(always)]
fn on_switch(args: *const u64) {
    // SAFETY: sched_switch has four arguments on kernels >= 5.18.
    let (preempt, prev, next, prev_state) =
        unsafe { (*args != 0, *args.add(1), *args.add(2), *args.add(3)) };
    let cpu = unsafe { bpf_get_smp_processor_id() };
    switch_out(prev as *const u8, preempt, prev_state & 0xffff_ffff, cpu);
    switch_in(next as *const u8, cpu);
}

#[inline(always)]
fn on_wakeup(args: *const u64, new_task: bool) {
    let p = unsafe { *args } as *const u8;
    let Some((tid, tgid)) = task_ids(p) else {
        return;
    };
    if !is_target(tgid) {
        return;
    }
    let base = if new_task {
        0
    } else {
        task_u64(p, offsets().sum_exec_runtime)
    };
    let Some(st) = entry(tid, tgid, base) else {
        return;
    };
    // SAFETY: a live map value. Racing a switch-in on another CPU can at
    // worst lose one wait sample.
    let st = unsafe { &mut *st };
    if st.running_on != 0 {
        return; // woken while still on a CPU: no run-queue wait follows
    }
    st.runnable_since_ns = unsafe { bpf_ktime_get_ns() };
    st.runnable_kind = RUNNABLE_WAKEUP;
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

#[inline(always)]
fn on_migrate(args: *const u64) {
    let (p, dest) = unsafe { (*args as *const u8, *args.add(1) as u32) };
    let Some((tid, tgid)) = task_ids(p) else {
        return;
    };
    if !is_target(tgid) {
        return;
    }
    let orig = task_u32(p, offsets().cpu);
    let Some(st) = entry(tid, tgid, task_u64(p, offsets().sum_exec_runtime)) else {
        return;
    };
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
    if let Some(st) = THREADS.get_ptr_mut(tid) {
        // SAFETY: a live map value, written by the exiting thread itself.
        let st = unsafe { &mut *st };
        st.flags |= FLAG_EXITING;
        if let Ok(comm) = bpf_get_current_comm() {
            st.comm = comm; // the final name (threads often rename themselves)
        }
    }
}

// ---- tp_btf entries -------------------------------------------------------

#[btf_tracepoint(function = "sched_switch")]
pub fn btf_sched_switch(ctx: BtfTracePointContext) -> i32 {
    on_switch(ctx.as_ptr() as *const u64);
    0
}

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn btf_sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    on_migrate(ctx.as_ptr() as *const u64);
    0
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn btf_sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    on_wakeup(ctx.as_ptr() as *const u64, false);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn btf_sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    on_wakeup(ctx.as_ptr() as *const u64, true);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn btf_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    on_exit();
    0
}

/// An empty sched_switch program: the floor any tracer pays per switch, for
/// `cargo xtask bench`. Never attached by a trace run.
#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch(_ctx: BtfTracePointContext) -> i32 {
    0
}

// ---- raw_tp entries (fallback) ---------------------------------------------

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn raw_sched_switch(ctx: RawTracePointContext) -> i32 {
    on_switch(ctx.as_ptr() as *const u64);
    0
}

#[raw_tracepoint(tracepoint = "sched_migrate_task")]
pub fn raw_sched_migrate_task(ctx: RawTracePointContext) -> i32 {
    on_migrate(ctx.as_ptr() as *const u64);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn raw_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    on_wakeup(ctx.as_ptr() as *const u64, false);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn raw_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    on_wakeup(ctx.as_ptr() as *const u64, true);
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn raw_sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    on_exit();
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
