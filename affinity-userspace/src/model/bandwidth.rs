//! CFS bandwidth as the kernel's throttle path reported it (the programs
//! of affinity-ebpf/src/bandwidth.rs): one record per enforcement period of
//! the limiting cgroup, and each thread's time held by throttling. Plain
//! data: `collect::bandwidth` fills it, `analyze::throttle` reads it.

use serde::Serialize;

/// One enforcement period. Times are CLOCK_MONOTONIC ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeriodRecord {
    /// The period timer ran: quota refilled.
    pub start_ns: u64,
    /// The first cfs_rq of the group ran out, on any CPU (ns after
    /// `start_ns`); `None`: not throttled in this period.
    pub exhausted_after_ns: Option<u64>,
    /// From that first throttle to the last unthrottle of a cfs_rq
    /// throttled in this period (wall ns).
    pub throttled_wall_ns: u64,
    /// Throttled time summed over CPUs (ns).
    pub throttled_cpu_ns: u64,
    /// cfs_rq throttles (CPUs that ran out).
    pub throttles: u32,
    /// CPUs running a task of the group when the quota ran out.
    pub running_at_exhaustion: u32,
    /// Tasks queued in the group (running or runnable) then.
    pub queued_at_exhaustion: u32,
}

/// One thread's time held by throttling, measured by the kernel events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThreadHeld {
    /// Thread id.
    pub tid: u32,
    /// Its process.
    pub tgid: u32,
    /// Held off the run queue by throttling (ns), the hold in progress
    /// included.
    pub held_ns: u64,
    /// Times it was held.
    pub holds: u32,
    /// The part of `held_ns` still in progress at the window's end.
    #[serde(skip)]
    pub open_ns: u64,
    /// The last ended hold (ns).
    #[serde(skip)]
    pub last_hold_ns: u64,
}

/// Joins the measured held time to the threads' wait split: a hold is a
/// run-queue wait to `sched_info.run_delay` (the task switched out
/// TASK_RUNNING), so the held time that wait already counts moves from
/// `runnable_ns` to `throttled_ns`; running + runnable + throttled +
/// sleeping is then the lifetime. A hold the runnable time does not hold
/// yet (in progress, or ended at a switch-in whose wait is read at the
/// next switch-out: `held_pending`) is only added.
pub fn join_wait_split(threads: &mut [crate::model::trace::ThreadTrace], held: &[ThreadHeld]) {
    for t in threads {
        let Ok(i) = held.binary_search_by_key(&t.tid, |h| h.tid) else {
            continue;
        };
        let h = &held[i];
        let not_yet = h.open_ns + if t.held_pending { h.last_hold_ns } else { 0 };
        let counted = h.held_ns.saturating_sub(not_yet);
        t.runnable_ns = t.runnable_ns.saturating_sub(counted);
        t.throttled_ns = h.held_ns;
    }
}

/// What the bandwidth programs recorded over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BandwidthTrace {
    /// How they were attached: "fentry" or "kprobe".
    pub attach: String,
    /// Per-thread held time was measured (task-based throttling, 6.18+).
    pub per_thread: bool,
    /// Complete periods, oldest first.
    pub periods: Vec<PeriodRecord>,
    /// Periods lost to the ring before they were read.
    pub lost_periods: u64,
    /// Per-thread held time (with `per_thread`), by tid.
    pub threads: Vec<ThreadHeld>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trace::ThreadTrace;

    fn held(tid: u32, held_ns: u64, open_ns: u64, last_hold_ns: u64) -> ThreadHeld {
        ThreadHeld {
            tid,
            tgid: 1,
            held_ns,
            holds: 3,
            open_ns,
            last_hold_ns,
        }
    }

    /// Lifetime 1000: ran 300, waited 500 by run_delay (of which 400 held),
    /// slept 200. The held part moves out of runnable; the four add up.
    #[test]
    fn held_time_moves_from_runnable_to_throttled() {
        let mut t = vec![ThreadTrace {
            tid: 7,
            cpu_time_ns: 300,
            runnable_ns: 500,
            sleep_ns: 200,
            lifetime_ns: 1000,
            ..ThreadTrace::default()
        }];
        join_wait_split(&mut t, &[held(7, 400, 0, 150)]);
        assert_eq!((t[0].runnable_ns, t[0].throttled_ns), (100, 400));
        let sum = t[0].cpu_time_ns + t[0].runnable_ns + t[0].throttled_ns + t[0].sleep_ns;
        assert_eq!(sum, t[0].lifetime_ns);
    }

    /// A hold in progress (60) and one ended at a switch-in whose wait is
    /// not in run_delay yet (150): neither is taken out of runnable, both
    /// are throttled; the raw split lacked exactly those 210.
    #[test]
    fn holds_not_yet_in_runnable_are_only_added() {
        let mut t = vec![ThreadTrace {
            tid: 7,
            cpu_time_ns: 300,
            // 250 of the 460 held are in run_delay already, plus 40 of wait.
            runnable_ns: 290,
            sleep_ns: 200,
            lifetime_ns: 1000,
            held_pending: true,
            ..ThreadTrace::default()
        }];
        join_wait_split(&mut t, &[held(7, 460, 60, 150)]);
        assert_eq!((t[0].runnable_ns, t[0].throttled_ns), (40, 460));
        let sum = t[0].cpu_time_ns + t[0].runnable_ns + t[0].throttled_ns + t[0].sleep_ns;
        assert_eq!(sum, t[0].lifetime_ns);
    }
}
