//! Wire types shared by the BPF programs (`affinity-ebpf`) and userspace.
//!
//! Everything here is `#[repr(C)]`, has no padding the compiler could fill
//! differently on the two sides, and carries a size assertion: a layout change
//! that is not made on both sides fails the build instead of corrupting maps.
#![no_std]

/// Number of log2 buckets in a run-queue latency histogram. Bucket `i` counts
/// waits in `[2^i, 2^(i+1))` ns; the last bucket also takes everything longer
/// (2^31 ns is about 2.1 s).
pub const RUNQ_BUCKETS: usize = 32;

/// Migration distance classes, the index into [`ThreadStats::migrations`].
pub const MIG_SMT: usize = 0;
/// Another core that shares the last-level cache.
pub const MIG_LLC: usize = 1;
/// Another last-level cache on the same NUMA node.
pub const MIG_CROSS_LLC: usize = 2;
/// Another NUMA node.
pub const MIG_CROSS_NUMA: usize = 3;
/// Number of migration classes.
pub const MIG_CLASSES: usize = 4;

/// [`ThreadStats::flags`]: the thread passed `sched_process_exit`; its entry is
/// final after its last switch-out and userspace frees its slot after reading.
pub const FLAG_EXITING: u32 = 1;
/// [`ThreadStats::flags`]: seeded by userspace and not seen by the programs
/// since: its first event tells what it did from `first_ns` on (a wakeup:
/// it slept; a switch-in: it waited runnable; a switch-out: it ran).
pub const FLAG_SEEDED: u32 = 2;

/// [`ThreadStats::flags`]: the thread is held by CFS bandwidth throttling
/// (it switched out with `task_struct.throttled` set); its next switch-in
/// ends the hold (`BW_THREADS`).
pub const FLAG_HELD: u32 = 4;
/// [`ThreadStats::flags`]: the thread's last hold ended at its switch-in
/// and the run-queue wait that contains it (`sched_info.run_delay`) is read
/// at its next switch-out: userspace does not take that hold out of the
/// runnable time yet ([`BwThread::last_hold_ns`]).
pub const FLAG_HELD_PENDING: u32 = 8;

/// [`ThreadStats::runnable_kind`]: not waiting for a CPU.
pub const RUNNABLE_NONE: u32 = 0;
/// Waiting for a CPU since a wakeup (`sched_wakeup`, `sched_wakeup_new`).
pub const RUNNABLE_WAKEUP: u32 = 1;
/// Waiting for a CPU since it was preempted (switched out while runnable).
pub const RUNNABLE_PREEMPTED: u32 = 2;

/// Indexes into the `DROPS` per-CPU array: events that could not be recorded.
/// No free slot in `STATS` for a new thread (`--max-threads`).
pub const DROP_THREADS_FULL: u32 = 0;
/// The per-thread per-CPU time map was full.
pub const DROP_THREAD_CPU_FULL: u32 = 1;
/// A `bpf_probe_read_kernel` of a task field failed.
pub const DROP_READ_FAILED: u32 = 2;
/// The (source, destination) CPU pair map was full: a migration is in the
/// per-thread counters but not in the pair matrix.
pub const DROP_PAIRS_FULL: u32 = 3;
/// The neighbour map was full: a wait is in the thread's counters but not
/// charged to whoever held the CPU.
pub const DROP_NEIGHBOURS_FULL: u32 = 4;
/// Number of drop counters.
pub const DROP_KINDS: u32 = 5;

/// Indexes into the `FORKS` per-CPU array: new processes started by a
/// target process, traced from their first instruction (`--follow`).
pub const FORK_FOLLOWED: u32 = 0;
/// New processes started by a target process and not traced (no
/// `--follow`, or the child's pid is above the bitmap).
pub const FORK_MISSED: u32 = 1;
/// Processes that joined the `--cgroup` target during the window (via
/// `cgroup_attach_task`), traced from that moment.
pub const FORK_JOINED: u32 = 2;
/// Number of fork counters.
pub const FORK_KINDS: u32 = 3;

/// Value of the `NEIGHBOURS` hash (key: tgid): target wait time while this
/// untargeted process held the CPU: each of its slices on a CPU where
/// target threads waited runnable, times the number waiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbour {
    /// Target run-queue wait charged to this process (ns).
    pub wait_ns: u64,
    /// Number of its slices charged.
    pub waits: u64,
    /// kernfs id (the directory's inode number) of its cgroup in the
    /// cpu controller's hierarchy, 0 when unknown.
    pub cgroup_id: u64,
    /// `comm` of the task seen (the thread that ran), NUL padded.
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Neighbour>() == 40);

/// Per-thread counters, the value of the `STATS` array (index: the thread's
/// slot, from `SLOTS`; slot 0 is never used).
///
/// Written by the BPF programs (and by userspace when it seeds a thread that
/// existed before tracing); userspace reads the array in place each interval
/// (it is mmapped) and frees the slots of exited threads. Counters are
/// cumulative since the entry was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// Thread id; 0 marks a free slot.
    pub tid: u32,
    /// Thread group (process) id.
    pub tgid: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// CPU number + 1 while the thread is on a CPU, 0 otherwise: userspace
    /// adds the running slice (from /proc/<tid>/schedstat) for these. Filled
    /// by userspace from the programs' per-CPU `CURRENT` map when it reads
    /// the entries; the programs leave it 0.
    pub running_on: u32,
    /// `comm` of the thread, NUL padded; refreshed at exit.
    pub comm: [u8; 16],
    /// The task's `se.sum_exec_runtime` at its last switch-out: the base from
    /// which the next slice's on-CPU time is measured.
    pub last_sum_exec_ns: u64,
    /// On-CPU time (ns) seen while traced, from `se.sum_exec_runtime`
    /// deltas, which exclude hypervisor steal and match /proc/<tid>/schedstat.
    pub cpu_time_ns: u64,
    /// On-CPU time on the CPU the thread last switched out on, not yet added
    /// to `THREAD_CPU`: `(cpu + 1) << CPU_ACC_SHIFT | ns` (see
    /// [`ThreadStats::cpu_acc`]). A thread usually switches out where it
    /// switched out last time, so most switches add here, with no map
    /// lookup; the sum moves to `THREAD_CPU` when the CPU changes. One
    /// 8-byte word, so that a reader never sees the CPU of one slice with
    /// the time of another.
    pub cpu_acc: u64,
    /// Switches out in a sleeping state (the kernel's `nvcsw`).
    pub voluntary: u64,
    /// Switches out while runnable: preemption (the kernel's `nivcsw`).
    pub involuntary: u64,
    /// Migrations by distance class (`MIG_*`), from `sched_migrate_task`.
    pub migrations: [u64; MIG_CLASSES],
    /// Without `sched_info` (see [`TaskOffsets::run_delay`]):
    /// `bpf_ktime_get_ns()` when the thread last became runnable, or 0.
    pub runnable_since_ns: u64,
    /// With `sched_info`: the task's `sched_info.run_delay` when last read,
    /// [`RUN_DELAY_UNKNOWN`] before the first read.
    pub run_delay_seen_ns: u64,
    /// `RUNNABLE_*`: why it waits (or, while it runs, why it waited before
    /// this slice).
    pub runnable_kind: u32,
    /// Padding (explicit, so that both sides agree on it).
    pub _pad: u32,
    /// Sum of wakeup-to-run waits (ns).
    pub runq_wait_ns: u64,
    /// Number of wakeup-to-run waits measured.
    pub runq_waits: u64,
    /// Longest wakeup-to-run wait (ns).
    pub runq_max_ns: u64,
    /// Time spent runnable after being preempted, waiting to run again (ns).
    /// Includes time the task's cgroup was throttled by CFS bandwidth control.
    pub preempted_wait_ns: u64,
    /// log2 histogram of wakeup-to-run waits (ns).
    pub runq_hist: [u32; RUNQ_BUCKETS],
    /// Voluntary off-CPU time (ns): from a switch-out in a sleeping state
    /// to the `sched_wakeup` that ends it, both clock reads.
    pub sleep_ns: u64,
    /// `bpf_ktime_get_ns()` at the switch-out that began the sleep in
    /// progress, 0 when not asleep (or asleep since before its entry).
    pub sleep_since_ns: u64,
    /// `bpf_ktime_get_ns()` when the entry was made: where the thread's
    /// traced lifetime starts (userspace sets it for the threads it seeds).
    pub first_ns: u64,
    /// `bpf_ktime_get_ns()` at the thread's final switch-out (`TASK_DEAD`),
    /// 0 while it lives: where its traced lifetime ends.
    pub last_ns: u64,
    /// CPU + 1 whose waiting count (`WAITQ`) holds this thread while it
    /// waits runnable, 0 when not counted.
    pub wait_cpu: u32,
    /// Padding (explicit, so that both sides agree on it).
    pub _pad2: u32,
}

const _: () = assert!(core::mem::size_of::<ThreadStats>() == 328);

/// [`ThreadStats::run_delay_seen_ns`] before the programs first read it
/// (entries userspace seeds).
pub const RUN_DELAY_UNKNOWN: u64 = u64::MAX;

/// [`ThreadStats::cpu_acc`]: the CPU (+ 1) sits above this bit, the ns
/// below it. 48 bits of ns are 78 hours on one CPU; the programs move the
/// sum to `THREAD_CPU` before it would overflow. 16 bits of CPU are 65,534
/// CPUs.
pub const CPU_ACC_SHIFT: u32 = 48;
/// [`ThreadStats::cpu_acc`]: the ns part.
pub const CPU_ACC_NS_MASK: u64 = (1 << CPU_ACC_SHIFT) - 1;

impl ThreadStats {
    /// The on-CPU time held in [`ThreadStats::cpu_acc`]: `(cpu, ns)`.
    pub fn cpu_acc(&self) -> Option<(u32, u64)> {
        let cpu = (self.cpu_acc >> CPU_ACC_SHIFT) as u32;
        let ns = self.cpu_acc & CPU_ACC_NS_MASK;
        (cpu != 0 && ns != 0).then(|| (cpu - 1, ns))
    }
}

/// Key of the `THREAD_CPU` hash map: on-CPU time of one thread on one CPU
/// (besides the part still in [`ThreadStats::cpu_acc`]). Keyed by pair
/// rather than holding an array per thread, so memory grows with the CPUs a
/// thread really used, not with the machine (up to 1024+ CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadCpuKey {
    /// Thread id.
    pub tid: u32,
    /// CPU number.
    pub cpu: u32,
}

const _: () = assert!(core::mem::size_of::<ThreadCpuKey>() == 8);

/// Value of the `CPU_TOPO` array (index: CPU number): global ids that decide a
/// migration's distance class. Written by userspace from sysfs before attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTopo {
    /// Global physical core id (unique across packages).
    pub core: u32,
    /// Global last-level-cache group id.
    pub llc: u32,
    /// NUMA node.
    pub node: u32,
    /// 1 when the CPU is present in the table.
    pub valid: u32,
}

const _: () = assert!(core::mem::size_of::<CpuTopo>() == 16);

/// Kernel structure offsets the programs need, resolved by userspace from the
/// running kernel's BTF and written into the `.rodata` global `OFFSETS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.pid` (tgid is assumed to follow at +4 and is checked).
    pub pid: u32,
    /// `task_struct.tgid`.
    pub tgid: u32,
    /// `task_struct.se.sum_exec_runtime`.
    pub sum_exec_runtime: u32,
    /// `task_struct.thread_info.cpu` (or `task_struct.cpu` on kernels that
    /// keep it there): `task_cpu()`, the source CPU of a migration.
    pub cpu: u32,
    /// `task_struct.comm`.
    pub comm: u32,
    /// `task_struct.sched_info.run_delay` (CONFIG_SCHED_INFO), or 0 where the
    /// kernel has none. The kernel's own sum of the task's run-queue waits:
    /// with it the programs time waits without reading a clock (a
    /// `bpf_ktime_get_ns()` costs more than the rest of sched_switch's work
    /// on a VM).
    pub run_delay: u32,
    /// `task_struct.cgroups` (the task's `css_set`), 0 without cgroups.
    pub cgroups: u32,
    /// `css_set.subsys[cpu_cgrp_id]`: the cpu controller's state, whose
    /// hierarchy is v1 or v2 as the host mounts it.
    pub css_cpu: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the cgroup directory's inode number).
    pub kn_id: u32,
    /// Padding (explicit, so that both sides agree on it).
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<TaskOffsets>() == 48);

/// Key of the `MIGRATION_PAIRS` hash map: migrations of the targets'
/// threads from one CPU to another (value: count). A hash keyed by the pair
/// rather than an `N x N` array, so memory follows the pairs really used,
/// whatever the number of CPUs (1024+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuPair {
    /// Source CPU (`task_cpu()` before the move).
    pub from: u32,
    /// Destination CPU.
    pub to: u32,
}

const _: () = assert!(core::mem::size_of::<CpuPair>() == 8);

/// [`TimelineEvent::kind`]: a context switch on `cpu` with a target thread
/// on either side.
pub const EV_SWITCH: u32 = 1;
/// [`TimelineEvent::kind`]: a target thread moved from `cpu` to `b`.
pub const EV_MIGRATE: u32 = 2;
/// [`TimelineEvent::kind`]: a target thread woken (or created, with
/// [`EVF_NEW`]) to run on `cpu`.
pub const EV_WAKEUP: u32 = 3;

/// [`TimelineEvent::flags`] of a switch: `a` left the CPU runnable
/// (preempted; the kernel's involuntary switch).
pub const EVF_PREEMPTED: u32 = 1;
/// [`TimelineEvent::flags`] of a switch: `a` left the CPU for good (exit).
pub const EVF_DEAD: u32 = 2;
/// [`TimelineEvent::flags`] of a wakeup: a new thread's first wakeup.
pub const EVF_NEW: u32 = 4;

/// One record of the `TIMELINE` ring buffer (`--timeline`): what happened,
/// where and when, for the targets' threads only.
///
/// | kind | `cpu` | `a` | `b` |
/// |---|---|---|---|
/// | [`EV_SWITCH`] | the CPU | tid switched out (0: not a target) | tid switched in (0: not a target) |
/// | [`EV_MIGRATE`] | source CPU | tid | destination CPU |
/// | [`EV_WAKEUP`] | CPU it will run on | tid | CPU the waker runs on |
///
/// `peer`: of a wakeup, the thread running where `sched_wakeup` fired (as
/// ftrace's `common_pid`), 0 for the idle task: a wakeup queued to an idle
/// CPU's wake list fires there, after the waker has moved on. Of a switch
/// with a target on one side only, the process (tgid) of the other side: the
/// neighbour that took the CPU from a preempted target, or the one that
/// left it to a target; 0 for the idle task and when both are targets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimelineEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// `EV_*`.
    pub kind: u32,
    /// See the table.
    pub cpu: u32,
    /// See the table.
    pub a: u32,
    /// See the table.
    pub b: u32,
    /// `EVF_*` bits.
    pub flags: u32,
    /// [`EV_WAKEUP`]: the waker's tid; [`EV_SWITCH`]: the other side's
    /// tgid (see above); 0 for [`EV_MIGRATE`].
    pub peer: u32,
    /// [`EV_SWITCH`]: `se.sum_exec_runtime` (on-CPU time, without steal
    /// and interrupts) of `a` as it leaves the CPU, or without `a`, of `b`
    /// as it arrives. The difference from the thread's previous value is
    /// the slice's CPU time, and dates the slice's start when its switch-in
    /// was not seen: the kernel now and then resumes a preempted task with
    /// no `sched_switch` naming it as `next` (seen on 6.18 with bpftrace
    /// too). 0 for other kinds.
    pub sum_exec_ns: u64,
}

const _: () = assert!(core::mem::size_of::<TimelineEvent>() == 40);

// ---- CFS bandwidth (throttling from the kernel's own events) ----------------

/// Entries of the `BW_PERIODS` ring: enforcement periods kept between two
/// reads (512 periods of 100 ms: 51 s; userspace reads each interval).
pub const BW_PERIODS: u32 = 512;

/// Most tasks walked on one `throttled_limbo_list` at unthrottle: a bound
/// the verifier needs; tasks past it are counted in `BwState::limbo_cut`.
pub const BW_LIMBO_MAX: u32 = 256;

/// What the bandwidth programs need to know, written by userspace before
/// it attaches them (the value of `BW_CONFIG[0]`): the limiting cgroup and
/// the kernel's field offsets, resolved from its BTF at load time. Read
/// with `bpf_probe_read_kernel`, so the offsets need not be constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BwConfig {
    /// kernfs id (the directory's inode number) of the cgroup whose quota
    /// binds; 0: the programs do nothing.
    pub cgroup_id: u64,
    /// CPUs walked to count running / queued tasks at exhaustion.
    pub nr_cpus: u32,
    /// `cfs_rq.tg`.
    pub cfs_rq_tg: u32,
    /// `cfs_rq.rq`.
    pub cfs_rq_rq: u32,
    /// `cfs_rq.curr`.
    pub cfs_rq_curr: u32,
    /// `cfs_rq.h_nr_queued` (`h_nr_running` before 6.14).
    pub cfs_rq_h_nr_queued: u32,
    /// `cfs_rq.throttle_count`.
    pub cfs_rq_throttle_count: u32,
    /// `cfs_rq.throttled_limbo_list` (0: no task-based throttling).
    pub cfs_rq_limbo: u32,
    /// `task_group.cfs_rq` (the per-CPU `cfs_rq *` array).
    pub tg_cfs_rq: u32,
    /// `task_group.cfs_bandwidth` + `cfs_bandwidth.period_timer`.
    pub tg_period_timer: u32,
    /// `task_group.css` + `cgroup_subsys_state.cgroup`.
    pub tg_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kn_id: u32,
    /// `rq.cpu`.
    pub rq_cpu: u32,
    /// `task_struct.throttle_node` (0: no task-based throttling).
    pub task_throttle_node: u32,
    /// `task_struct.throttled`.
    pub task_throttled: u32,
    /// `task_struct.pid` (tgid follows it).
    pub task_pid: u32,
    /// Which path records: [`BW_MODE_PROBES`], [`BW_MODE_TRACEPOINT`] or
    /// [`BW_MODE_GROUPS`] (0: none), so that no two of them both count.
    pub mode: u32,
    /// `task_struct.se` + `sched_entity.cfs_rq`.
    pub task_cfs_rq: u32,
    /// `task_group.parent`.
    pub tg_parent: u32,
    /// `task_group.cfs_bandwidth` + `cfs_bandwidth.period` (ktime ns).
    pub tg_period: u32,
    /// `hrtimer.node` + `timerqueue_node.expires`.
    pub hrtimer_expires: u32,
    /// `sched_entity.on_rq`: a CPU's `cfs_rq.curr` that is no longer on
    /// the run queue (its throttle work took it off, it has not switched
    /// out yet) is counted queued by hand, as `h_nr_queued` lost it.
    pub se_on_rq: u32,
}

const _: () = assert!(core::mem::size_of::<BwConfig>() == 96);

/// [`BwConfig::mode`]: the fentry/kprobe programs on the throttle path record.
pub const BW_MODE_PROBES: u32 = 1;
/// [`BwConfig::mode`]: sched_switch records, from `task_struct.throttled`
/// (where fentry and kprobes are not available).
pub const BW_MODE_TRACEPOINT: u32 = 2;

/// [`BwConfig::mode`]: the agent (`serve`): sched_switch records, per
/// traced cgroup, how many of its threads ran when its quota ran out
/// ([`BwGroup`], in `BW_GROUPS`); no per-period ring, no per-thread holds.
pub const BW_MODE_GROUPS: u32 = 3;

/// Buckets of [`BwGroup::running`]: entry `n` counts periods in which `n`
/// of the group's threads ran when the quota ran out; the last one also
/// holds every larger count.
pub const BW_RUNNING_BUCKETS: usize = 64;

/// Per traced cgroup of the agent (`BW_GROUPS`, by the kernfs id of its
/// cpu-controller directory): made by userspace when it starts tracing the
/// cgroup, deleted when it stops, so the map holds no more than the set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BwGroup {
    /// The period-timer expiry of the last period counted (each period is
    /// counted once, by the first held switch-out in it).
    pub cur_end_ns: u64,
    /// Throttled periods by threads running when the quota ran out.
    pub running: [u32; BW_RUNNING_BUCKETS],
}

impl Default for BwGroup {
    fn default() -> Self {
        Self {
            cur_end_ns: 0,
            running: [0; BW_RUNNING_BUCKETS],
        }
    }
}

const _: () = assert!(core::mem::size_of::<BwGroup>() == 8 + 4 * BW_RUNNING_BUCKETS);

/// `BW_STATE[0]`: the period count of the limiting cgroup since attach.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BwState {
    /// Periods begun (period-timer runs); the current one's record is
    /// `BW_PERIODS[seq % BW_PERIODS]`. 0: none yet.
    pub seq: u64,
    /// Throttles seen before the first period began (not in any record).
    pub early_throttles: u64,
    /// Limbo-list walks cut at [`BW_LIMBO_MAX`].
    pub limbo_cut: u64,
    /// Per-thread entries that found `BW_THREADS` full.
    pub threads_full: u64,
    /// Tracepoint mode: the end (period-timer expiry) of the period whose
    /// record is current.
    pub cur_end_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BwState>() == 40);

/// One enforcement period of the limiting cgroup (`BW_PERIODS` value).
/// Times are `bpf_ktime_get_ns()` (CLOCK_MONOTONIC); 0: did not happen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BwPeriod {
    /// Period number (`BwState::seq` when it began); a record whose `seq`
    /// is not the one expected was overwritten.
    pub seq: u64,
    /// The period timer ran (quota refilled).
    pub start_ns: u64,
    /// First `throttle_cfs_rq` of the group in this period, on any CPU:
    /// when the quota ran out.
    pub first_throttle_ns: u64,
    /// Last unthrottle of a cfs_rq throttled in this period.
    pub last_unthrottle_ns: u64,
    /// Throttled time summed over CPUs (each cfs_rq, throttle to
    /// unthrottle), as cpu.stat `throttled_usec` counts it.
    pub throttled_sum_ns: u64,
    /// cfs_rq throttles in this period (one per CPU that ran out).
    pub throttles: u32,
    /// CPUs on which the group had a task on the CPU at exhaustion.
    pub running_at: u32,
    /// Tasks queued in the group (running or runnable, `h_nr_queued`
    /// summed over CPUs) at exhaustion.
    pub queued_at: u32,
    /// Padding.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<BwPeriod>() == 56);

/// Per-CPU throttle state (`BW_CPU`, by CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BwCpu {
    /// When this CPU's cfs_rq of the group was throttled; 0: it is not.
    pub throttled_ns: u64,
    /// The period it was throttled in.
    pub seq: u64,
}

const _: () = assert!(core::mem::size_of::<BwCpu>() == 16);

/// One thread's time held by throttling (`BW_THREADS`, by tid): from
/// `throttle_cfs_rq_work` taking it off the run queue to `tg_unthrottle_up`
/// putting it back (task-based throttling, kernel 6.18+).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BwThread {
    /// Held since (0: not held now).
    pub since_ns: u64,
    /// Tracepoint mode: the hold ends by then at the latest (the period
    /// timer's expiry when it began: the refill unthrottles).
    pub until_ns: u64,
    /// Held in total (ns), ended holds only.
    pub held_ns: u64,
    /// Holds begun.
    pub holds: u32,
    /// Thread group id.
    pub tgid: u32,
    /// Length of the last ended hold (ns).
    pub last_hold_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BwThread>() == 40);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of them are #[repr(C)], contain only integers, and have no
    // implicit padding (checked by the size assertions above).
    unsafe impl aya::Pod for super::ThreadStats {}
    unsafe impl aya::Pod for super::ThreadCpuKey {}
    unsafe impl aya::Pod for super::CpuTopo {}
    unsafe impl aya::Pod for super::TaskOffsets {}
    unsafe impl aya::Pod for super::CpuPair {}
    unsafe impl aya::Pod for super::TimelineEvent {}
    unsafe impl aya::Pod for super::BwConfig {}
    unsafe impl aya::Pod for super::BwState {}
    unsafe impl aya::Pod for super::BwPeriod {}
    unsafe impl aya::Pod for super::BwCpu {}
    unsafe impl aya::Pod for super::BwThread {}
    unsafe impl aya::Pod for super::BwGroup {}
    unsafe impl aya::Pod for super::Neighbour {}
}
