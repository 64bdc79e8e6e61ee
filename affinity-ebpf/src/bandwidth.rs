//! CFS bandwidth control seen from the kernel's own throttle path
//! (kernel/sched/fair.c; Documentation/scheduler/sched-bwc.rst), for the one
//! cgroup whose quota binds the targets (`BW_CONFIG.cgroup_id`).
//!
//! Functions (fentry, or kprobe where fentry cannot attach; userspace picks
//! what the running kernel's BTF and kallsyms have):
//! - `sched_cfs_period_timer(timer)`: a period begins (quota refilled); a
//!   new record in the `BW_PERIODS` ring.
//! - `throttle_cfs_rq(cfs_rq)`: one CPU's cfs_rq of the group ran out. The
//!   first one in a period is when the quota ran out; then the group's
//!   running and queued tasks are counted over every CPU's cfs_rq.
//! - `unthrottle_cfs_rq(cfs_rq)`: that cfs_rq runs again; its throttled time
//!   is added to the period it was throttled in.
//! - task-based throttling (6.18+): `throttle_cfs_rq_work` (exit; the task
//!   itself, on its way back to user space) takes a task off the run queue
//!   onto its cfs_rq's `throttled_limbo_list` and sets `p->throttled`;
//!   `tg_unthrottle_up(tg, rq)` (entry, when the level's throttle_count is
//!   about to reach 0) puts the limbo list back. The time between is the
//!   thread's throttled time, kept per tid in `BW_THREADS`.
//!
//! - the agent (`serve`, [`BW_MODE_GROUPS`]): the sched_switch path below,
//!   for every traced cgroup at once: per cgroup, a histogram of the
//!   threads on a CPU when the quota ran out (`BW_GROUPS`).
//!
//! These run per period and CPU, not per switch: all reads go through
//! `bpf_probe_read_kernel`, with offsets from the `BW_CONFIG` map (no CO-RE
//! in Rust BPF), and one program serves fentry and kprobe alike.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use affinity_common::{
    BW_LIMBO_MAX, BW_MODE_GROUPS, BW_MODE_PROBES, BW_MODE_TRACEPOINT, BW_PERIODS,
    BW_RUNNING_BUCKETS, BwConfig, BwCpu, BwGroup, BwPeriod, BwState, BwThread, FLAG_HELD,
    FLAG_HELD_PENDING, ThreadStats,
};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_loop,
        bpf_probe_read_kernel,
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, HashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::{Access, have_run_delay, is_target};

/// `task_struct.throttled` (task-based CFS bandwidth throttling, 6.18+);
/// 0: the sched_switch path below is off (a frozen `.rodata` constant: the
/// verifier drops it, so a trace without a quota pays nothing for it).
#[unsafe(no_mangle)]
static THROTTLED_OFF: u32 = 0;

/// The sched_switch path is loaded (a quota binds the targets).
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a frozen .rodata constant.
    unsafe { core::ptr::read_volatile(&THROTTLED_OFF) != 0 }
}

/// The switch-out of target thread `prev` (sched_switch): true when it
/// leaves held by throttling (`task->throttled`; it is then neither
/// runnable nor asleep until the refill).
#[inline(always)]
pub fn switch_out<A: Access>(
    prev: *const u8,
    ids: (u32, u32),
    cpu: u32,
    prev_state: u64,
    st: &mut ThreadStats,
    now: u64,
) -> bool {
    // SAFETY: a frozen .rodata constant.
    let off = unsafe { core::ptr::read_volatile(&THROTTLED_OFF) };
    if off == 0 || prev_state != 0 || A::u8_at(prev, off) == 0 {
        return false;
    }
    let Some(c) = BW_CONFIG.get(0) else {
        return false;
    };
    if c.mode == BW_MODE_GROUPS {
        held_group(c, prev as u64, cpu);
        return false;
    }
    held_out(prev as u64, ids.0, ids.1, cpu, st, now);
    st.flags & FLAG_HELD != 0
}

/// Offsets and the cgroup id; written by userspace before attaching.
#[map]
static BW_CONFIG: Array<BwConfig> = Array::with_max_entries(1, 0);

/// The period count and a few loss counters.
#[map]
static BW_STATE: Array<BwState> = Array::with_max_entries(1, 0);

/// One record per period, by `seq % BW_PERIODS`; read each interval.
#[map]
static BW_PERIODS_RING: Array<BwPeriod> = Array::with_max_entries(BW_PERIODS, 0);

/// Per CPU: when its cfs_rq of the group was throttled. Sized to possible CPUs.
#[map]
static BW_CPU: Array<BwCpu> = Array::with_max_entries(1024, 0);

/// Per target thread: time held by throttling. Sized to `--max-threads`.
#[map]
static BW_THREADS: HashMap<u32, BwThread> = HashMap::with_max_entries(16_384, 0);

/// The agent's traced cgroups (`BW_MODE_GROUPS`): threads running when
/// the quota ran out, per period. Entries are made and deleted by
/// userspace with the traced set; sized to it (`CGROUP_TARGETS`).
#[map]
static BW_GROUPS: HashMap<u64, BwGroup> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
fn rd_u64(base: u64, off: u32) -> u64 {
    // SAFETY: bpf_probe_read_kernel tolerates bad addresses (returns an error).
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn rd_u32(base: u64, off: u32) -> u32 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u32) }.unwrap_or(0)
}

#[inline(always)]
fn rd_u8(base: u64, off: u32) -> u8 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const u8) }.unwrap_or(0)
}

/// The config when the fentry/kprobe programs record.
#[inline(always)]
fn config() -> Option<&'static BwConfig> {
    let c = BW_CONFIG.get(0)?;
    (c.cgroup_id != 0 && c.mode == BW_MODE_PROBES).then_some(c)
}

/// The config when sched_switch records (no fentry, no kprobes).
#[inline(always)]
fn tp_config() -> Option<&'static BwConfig> {
    let c = BW_CONFIG.get(0)?;
    (c.cgroup_id != 0 && c.mode == BW_MODE_TRACEPOINT).then_some(c)
}

/// `tg->css.cgroup->kn->id`: the cgroup directory's inode number.
#[inline(always)]
fn group_id(c: &BwConfig, tg: u64) -> u64 {
    if tg == 0 {
        return 0;
    }
    let cg = rd_u64(tg, c.tg_cgroup);
    if cg == 0 {
        return 0;
    }
    let kn = rd_u64(cg, c.cgroup_kn);
    if kn == 0 {
        return 0;
    }
    rd_u64(kn, c.kn_id)
}

/// The task group of `cfs_rq` if it is the watched one.
#[inline(always)]
fn watched_tg(c: &BwConfig, cfs_rq: u64) -> Option<u64> {
    let tg = rd_u64(cfs_rq, c.cfs_rq_tg);
    (group_id(c, tg) == c.cgroup_id).then_some(tg)
}

#[inline(always)]
fn cpu_of(c: &BwConfig, cfs_rq: u64) -> u32 {
    rd_u32(rd_u64(cfs_rq, c.cfs_rq_rq), c.rq_cpu)
}

#[inline(always)]
fn add64(p: *mut u64, v: u64) {
    // SAFETY: an aligned u64 in a live map value; atomic, as several CPUs
    // throttle and unthrottle the group's cfs_rqs at once.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) };
}

#[inline(always)]
fn add32(p: *mut u32, v: u32) {
    // SAFETY: as above.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(p, v) };
}

/// The record of period `seq`, if it still holds that period.
#[inline(always)]
fn period(seq: u64) -> Option<*mut BwPeriod> {
    let p = BW_PERIODS_RING.get_ptr_mut((seq % u64::from(BW_PERIODS)) as u32)?;
    // SAFETY: a live map value.
    (unsafe { (*p).seq } == seq).then_some(p)
}

fn on_period_timer(timer: u64) {
    let Some(c) = config() else { return };
    // timer is &tg->cfs_bandwidth.period_timer (container_of twice).
    let tg = timer.wrapping_sub(u64::from(c.tg_period_timer));
    if group_id(c, tg) != c.cgroup_id {
        return;
    }
    let Some(st) = BW_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a live map value. One hrtimer per group: its callbacks never
    // run at once, so a plain increment is enough.
    let seq = unsafe {
        (*st).seq += 1;
        (*st).seq
    };
    if let Some(p) = BW_PERIODS_RING.get_ptr_mut((seq % u64::from(BW_PERIODS)) as u32) {
        // SAFETY: a live map value; `seq` last, so that a reader that sees
        // it sees a cleared record (readers check `seq` first).
        unsafe {
            *p = BwPeriod {
                seq: 0,
                start_ns: bpf_ktime_get_ns(),
                ..BwPeriod::default()
            };
            core::ptr::write_volatile(&mut (*p).seq, seq);
        }
    }
}

/// The state of one [`count_group`] walk, on the caller's stack.
#[repr(C)]
struct CountWalk {
    /// `tg->cfs_rq`: the group's per-CPU cfs_rq pointers.
    arr: u64,
    /// `cfs_rq.curr`, `cfs_rq.h_nr_queued`, `sched_entity.on_rq`.
    off_curr: u32,
    off_queued: u32,
    off_on_rq: u32,
    /// A CPU whose running task is counted already (u32::MAX: none).
    skip: u32,
    running: u32,
    queued: u32,
}

/// One CPU of the walk (a `bpf_loop` callback).
#[inline(never)]
extern "C" fn count_cpu(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the CountWalk that count_group passed to bpf_loop.
    let w = unsafe { &mut *(ctx as *mut CountWalk) };
    let i = i as u32;
    let rq = rd_u64(w.arr, i.wrapping_mul(8));
    if rq != 0 {
        let curr = if i == w.skip {
            0
        } else {
            rd_u64(rq, w.off_curr)
        };
        if curr != 0 {
            w.running += 1;
            // Off the run queue but still on the CPU: its throttle work
            // dequeued it microseconds ago (h_nr_queued no longer has it)
            // and it has not switched out yet. It was running: queued too.
            if rd_u8(curr, w.off_on_rq) == 0 {
                w.queued += 1;
            }
        }
        w.queued += rd_u32(rq, w.off_queued);
    }
    0
}

/// Running CPUs and queued tasks of the group over every CPU's cfs_rq,
/// starting from `base` (the CPU `skip` counted already). `bpf_loop`: the
/// verifier checks the callback once, whatever the CPU count (an unrolled
/// loop over 16 CPUs inside sched_switch cost ~3 s of load time).
#[inline(always)]
fn count_group(c: &BwConfig, tg: u64, skip: u32, base: (u32, u32)) -> (u32, u32) {
    let arr = rd_u64(tg, c.tg_cfs_rq);
    if arr == 0 {
        return base;
    }
    let mut w = CountWalk {
        arr,
        off_curr: c.cfs_rq_curr,
        off_queued: c.cfs_rq_h_nr_queued,
        off_on_rq: c.se_on_rq,
        skip,
        running: base.0,
        queued: base.1,
    };
    // SAFETY: a callback of the helper's signature and a context on this
    // stack; bpf_loop caps the count at 1 << 23.
    unsafe {
        bpf_loop(
            c.nr_cpus.min(1024),
            count_cpu as *const () as *mut c_void,
            &mut w as *mut CountWalk as *mut c_void,
            0,
        )
    };
    (w.running, w.queued)
}

fn on_throttle(cfs_rq: u64) {
    let Some(c) = config() else { return };
    let Some(tg) = watched_tg(c, cfs_rq) else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(st) = BW_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a live map value.
    let seq = unsafe { core::ptr::read_volatile(&(*st).seq) };
    let cpu = cpu_of(c, cfs_rq);
    if let Some(pc) = BW_CPU.get_ptr_mut(cpu) {
        // SAFETY: a live map value; this CPU's cfs_rq is throttled under its
        // rq lock, so one writer at a time.
        unsafe {
            *pc = BwCpu {
                throttled_ns: now,
                seq,
            }
        };
    }
    if seq == 0 {
        // SAFETY: a live map value.
        add64(unsafe { &mut (*st).early_throttles }, 1);
        return;
    }
    let Some(p) = period(seq) else { return };
    // SAFETY: a live map value.
    unsafe {
        add32(&mut (*p).throttles, 1);
        let (_, first) = atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &mut (*p).first_throttle_ns,
            0,
            now,
        );
        if first {
            let (running, queued) = count_group(c, tg, u32::MAX, (0, 0));
            (*p).running_at = running;
            (*p).queued_at = queued;
        }
    }
}

fn on_unthrottle(cfs_rq: u64) {
    let Some(c) = config() else { return };
    if watched_tg(c, cfs_rq).is_none() {
        return;
    }
    let cpu = cpu_of(c, cfs_rq);
    let Some(pc) = BW_CPU.get_ptr_mut(cpu) else {
        return;
    };
    // SAFETY: a live map value, under the rq lock of that CPU.
    let (since, seq) = unsafe { ((*pc).throttled_ns, (*pc).seq) };
    if since == 0 {
        return;
    }
    unsafe { (*pc).throttled_ns = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(p) = period(seq) {
        // SAFETY: a live map value.
        unsafe {
            add64(&mut (*p).throttled_sum_ns, now.saturating_sub(since));
            if (*p).last_unthrottle_ns < now {
                (*p).last_unthrottle_ns = now;
            }
        }
    }
}

/// After `throttle_cfs_rq_work`: the current task is held if it set
/// `p->throttled` (it returns early when the hierarchy was unthrottled).
fn on_throttle_work_done() {
    let Some(c) = config() else { return };
    let id = bpf_get_current_pid_tgid();
    let (tid, tgid) = (id as u32, (id >> 32) as u32);
    if !is_target(tgid) {
        return;
    }
    let task = unsafe { bpf_get_current_task() };
    if rd_u8(task, c.task_throttled) == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(t) = BW_THREADS.get_ptr_mut(&tid) {
        // SAFETY: a live map value, written by this thread (held now) or by
        // the unthrottle that releases it, never both at once.
        unsafe {
            (*t).since_ns = now;
            (*t).holds += 1;
        }
        return;
    }
    let v = BwThread {
        since_ns: now,
        until_ns: 0,
        held_ns: 0,
        holds: 1,
        tgid,
        last_hold_ns: 0,
    };
    if BW_THREADS.insert(&tid, &v, u64::from(BPF_NOEXIST)).is_err()
        && let Some(st) = BW_STATE.get_ptr_mut(0)
    {
        // SAFETY: a live map value.
        add64(unsafe { &mut (*st).threads_full }, 1);
    }
}

/// Before `tg_unthrottle_up(tg, rq)`: when this level's throttle_count is
/// about to reach 0, its limbo list goes back on the run queue; end the
/// holds of the target threads on it.
fn on_unthrottle_up(tg: u64, rq: u64) {
    let Some(c) = config() else { return };
    if c.cfs_rq_limbo == 0 {
        return;
    }
    let cpu = rd_u32(rq, c.rq_cpu);
    let arr = rd_u64(tg, c.tg_cfs_rq);
    if arr == 0 {
        return;
    }
    let cfs_rq = rd_u64(arr, cpu.wrapping_mul(8));
    if cfs_rq == 0 || rd_u32(cfs_rq, c.cfs_rq_throttle_count) != 1 {
        return;
    }
    let head = cfs_rq + u64::from(c.cfs_rq_limbo);
    let mut node = rd_u64(head, 0);
    if node == head || node == 0 {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    for _ in 0..BW_LIMBO_MAX {
        if node == head || node == 0 {
            return;
        }
        let task = node.wrapping_sub(u64::from(c.task_throttle_node));
        let ids = rd_u64(task, c.task_pid);
        let (tid, tgid) = (ids as u32, (ids >> 32) as u32);
        if is_target(tgid)
            && let Some(t) = BW_THREADS.get_ptr_mut(&tid)
        {
            // SAFETY: a live map value (see on_throttle_work_done).
            unsafe {
                let since = (*t).since_ns;
                if since != 0 {
                    (*t).held_ns += now.saturating_sub(since);
                    (*t).since_ns = 0;
                }
            }
        }
        node = rd_u64(node, 0);
    }
    if node != head
        && let Some(st) = BW_STATE.get_ptr_mut(0)
    {
        // SAFETY: a live map value.
        add64(unsafe { &mut (*st).limbo_cut }, 1);
    }
}

// ---- fentry / fexit entries ------------------------------------------------

#[fentry(function = "sched_cfs_period_timer")]
pub fn bw_fentry_period_timer(ctx: FEntryContext) -> i32 {
    on_period_timer(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "throttle_cfs_rq")]
pub fn bw_fentry_throttle(ctx: FEntryContext) -> i32 {
    on_throttle(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "unthrottle_cfs_rq")]
pub fn bw_fentry_unthrottle(ctx: FEntryContext) -> i32 {
    on_unthrottle(ctx.arg::<u64>(0));
    0
}

#[fexit(function = "throttle_cfs_rq_work")]
pub fn bw_fexit_throttle_work(_ctx: FExitContext) -> i32 {
    on_throttle_work_done();
    0
}

#[fentry(function = "tg_unthrottle_up")]
pub fn bw_fentry_unthrottle_up(ctx: FEntryContext) -> i32 {
    on_unthrottle_up(ctx.arg::<u64>(0), ctx.arg::<u64>(1));
    0
}

// ---- kprobe entries (fallback) ---------------------------------------------

#[kprobe]
pub fn bw_kprobe_period_timer(ctx: ProbeContext) -> u32 {
    on_period_timer(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kprobe]
pub fn bw_kprobe_throttle(ctx: ProbeContext) -> u32 {
    on_throttle(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kprobe]
pub fn bw_kprobe_unthrottle(ctx: ProbeContext) -> u32 {
    on_unthrottle(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn bw_kretprobe_throttle_work(_ctx: RetProbeContext) -> u32 {
    on_throttle_work_done();
    0
}

#[kprobe]
pub fn bw_kprobe_unthrottle_up(ctx: ProbeContext) -> u32 {
    on_unthrottle_up(
        ctx.arg::<u64>(0).unwrap_or(0),
        ctx.arg::<u64>(1).unwrap_or(0),
    );
    0
}

// ---- the sched_switch path (where fentry and kprobes are not available) ----
//
// With task-based throttling (6.18+) a throttled task takes itself off the
// run queue in throttle_cfs_rq_work on its way back to user space, sets
// `p->throttled` and switches out still TASK_RUNNING: sched_switch sees it
// leave with `throttled` set, microseconds after its cfs_rq ran out. The
// first such switch of the group in a period is when the quota ran out.
// The hold ends at the refill that unthrottles the group, the period
// timer's expiry (`cfs_bandwidth.period_timer`) read at the hold, or at the
// task's next switch-in if that comes first (an early unthrottle by the
// slack timer). Costs the hot path one load of `throttled` per preempted
// switch-out of a target thread, and one flag test per switch-in.

/// The watched task group of `task`: its cfs_rq's group or an ancestor.
#[inline(always)]
fn watched_group_of(c: &BwConfig, task: u64) -> Option<u64> {
    let cfs_rq = rd_u64(task, c.task_cfs_rq);
    let mut tg = rd_u64(cfs_rq, c.cfs_rq_tg);
    for _ in 0..4 {
        if tg == 0 {
            return None;
        }
        if group_id(c, tg) == c.cgroup_id {
            return Some(tg);
        }
        tg = rd_u64(tg, c.tg_parent);
    }
    None
}

/// The agent (`BW_MODE_GROUPS`): a traced thread switched out held by
/// throttling. The first such switch-out of its cgroup (the nearest
/// ancestor task group with a `BW_GROUPS` entry) in a period counts the
/// group's threads on a CPU then, as the one-shot path does for its one
/// cgroup, into that entry's histogram. No per-thread hold is kept: the
/// agent's throttled time comes from cpu.stat, and the thread's wait is
/// accounted as it is without this path.
#[inline(always)]
fn held_group(c: &BwConfig, task: u64, cpu: u32) {
    let cfs_rq = rd_u64(task, c.task_cfs_rq);
    let mut tg = rd_u64(cfs_rq, c.cfs_rq_tg);
    for _ in 0..4 {
        if tg == 0 {
            return;
        }
        if let Some(g) = BW_GROUPS.get_ptr_mut(group_id(c, tg)) {
            // The refill ending this period: the same on every CPU.
            let end = rd_u64(tg, c.tg_period_timer + c.hrtimer_expires);
            if end == 0 {
                return;
            }
            // SAFETY: a live map value; racing CPUs agree by compare-and-swap
            // on which of them counts the period.
            unsafe {
                let cur = core::ptr::read_volatile(&(*g).cur_end_ns);
                if cur == end {
                    return;
                }
                let (_, won) = atomic_cxchg::<
                    u64,
                    { AtomicOrdering::SeqCst },
                    { AtomicOrdering::SeqCst },
                >(&mut (*g).cur_end_ns, cur, end);
                if !won {
                    return;
                }
                // This CPU ran the held thread, no longer counted in curr.
                let (running, _) = count_group(c, tg, cpu, (1, 1));
                let b = (running as usize).min(BW_RUNNING_BUCKETS - 1);
                if let Some(n) = (*g).running.get_mut(b) {
                    add32(n, 1);
                }
            }
            return;
        }
        tg = rd_u64(tg, c.tg_parent);
    }
}

/// A target thread switched out held by throttling (`task->throttled`).
#[inline(always)]
fn held_out(task: u64, tid: u32, tgid: u32, cpu: u32, st: &mut ThreadStats, now: u64) {
    let Some(c) = tp_config() else { return };
    let Some(tg) = watched_group_of(c, task) else {
        return;
    };
    let end = rd_u64(tg, c.tg_period_timer + c.hrtimer_expires);
    let period_ns = rd_u64(tg, c.tg_period);
    if end == 0 || period_ns == 0 {
        return;
    }
    let until = if end > now { end } else { now };
    let Some(state) = BW_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: live map values; racing CPUs agree on `end` by compare-and-swap.
    unsafe {
        let cur = core::ptr::read_volatile(&(*state).cur_end_ns);
        let seq = if cur != end {
            let (_, won) = atomic_cxchg::<
                u64,
                { AtomicOrdering::SeqCst },
                { AtomicOrdering::SeqCst },
            >(&mut (*state).cur_end_ns, cur, end);
            if won {
                let seq =
                    atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&mut (*state).seq, 1) + 1;
                if let Some(p) = BW_PERIODS_RING.get_ptr_mut((seq % u64::from(BW_PERIODS)) as u32) {
                    // This CPU ran the held thread, no longer in h_nr_queued.
                    let (running, queued) = count_group(c, tg, cpu, (1, 1));
                    *p = BwPeriod {
                        seq: 0,
                        start_ns: end.saturating_sub(period_ns),
                        first_throttle_ns: now,
                        last_unthrottle_ns: end,
                        throttled_sum_ns: 0,
                        throttles: 0,
                        running_at: running,
                        queued_at: queued,
                        _pad: 0,
                    };
                    core::ptr::write_volatile(&mut (*p).seq, seq);
                }
                seq
            } else {
                core::ptr::read_volatile(&(*state).seq)
            }
        } else {
            core::ptr::read_volatile(&(*state).seq)
        };
        // This CPU's first hold in the period: its cfs_rq ran out about now
        // and stays throttled until the refill (cpu.stat counts it so).
        if let Some(pc) = BW_CPU.get_ptr_mut(cpu)
            && (*pc).seq != seq
        {
            (*pc).seq = seq;
            if let Some(p) = period(seq) {
                add32(&mut (*p).throttles, 1);
                add64(&mut (*p).throttled_sum_ns, until - now);
            }
        }
    }
    if let Some(t) = BW_THREADS.get_ptr_mut(&tid) {
        // SAFETY: a live map value, written only by the thread's own switches.
        unsafe {
            (*t).since_ns = now;
            (*t).until_ns = until;
            (*t).holds += 1;
        }
    } else {
        let v = BwThread {
            since_ns: now,
            until_ns: until,
            held_ns: 0,
            holds: 1,
            tgid,
            last_hold_ns: 0,
        };
        if BW_THREADS.insert(&tid, &v, u64::from(BPF_NOEXIST)).is_err() {
            // SAFETY: a live map value.
            add64(unsafe { &mut (*state).threads_full }, 1);
            return;
        }
    }
    st.flags |= FLAG_HELD;
}

/// A held target thread switched back in: its hold ended at the refill,
/// or now if that is earlier.
#[inline(always)]
pub fn held_in(tid: u32, st: &mut ThreadStats, now: u64) {
    st.flags &= !FLAG_HELD;
    if let Some(t) = BW_THREADS.get_ptr_mut(&tid) {
        // SAFETY: a live map value, written only by the thread's own switches.
        unsafe {
            let since = (*t).since_ns;
            if since != 0 {
                let end = if (*t).until_ns < now {
                    (*t).until_ns
                } else {
                    now
                };
                let held = end.saturating_sub(since);
                (*t).held_ns += held;
                (*t).last_hold_ns = held;
                (*t).since_ns = 0;
                if have_run_delay() {
                    // The wait is read from run_delay at the next
                    // switch-out, which clears the flag (main.rs).
                    st.flags |= FLAG_HELD_PENDING;
                }
            }
        }
    }
}
