//! Collects the CFS bandwidth programs' records over a window: attaches
//! them for the cgroup whose quota binds (continuing with the cpu.stat
//! estimate if they cannot attach), drains the period ring each interval
//! and reads the per-thread held time at the end.

use std::os::unix::fs::MetadataExt as _;

use crate::kernel::probe::Probe;
use crate::model::bandwidth::{BandwidthTrace, PeriodRecord, ThreadHeld};
use crate::model::cgroup::CgroupLimit;

/// Environment variable: set to skip the kernel events (the estimate runs),
/// e.g. to compare the two.
pub const NO_EVENTS_ENV: &str = "AFFIN_TRACE_NO_BANDWIDTH_EVENTS";

/// The running collection.
pub struct BandwidthCollector {
    out: BandwidthTrace,
    last_seq: u64,
}

impl BandwidthCollector {
    /// Attaches the programs for `limit`'s cgroup; `None` (and a line on
    /// stderr) when they cannot attach or no quota applies.
    pub fn start(probe: &mut Probe, limit: Option<&CgroupLimit>) -> Option<Self> {
        let limit = limit?;
        if std::env::var_os(NO_EVENTS_ENV).is_some() {
            return None;
        }
        let id = match std::fs::metadata(&limit.dir) {
            Ok(m) => m.ino(),
            Err(e) => {
                eprintln!(
                    "affin-trace: {}: {e}; continuing with the cpu.stat estimate",
                    limit.dir.display()
                );
                return None;
            }
        };
        match probe.attach_bandwidth(id) {
            Ok((attach, per_thread)) => Some(Self {
                out: BandwidthTrace {
                    attach: attach.name().to_string(),
                    per_thread,
                    ..BandwidthTrace::default()
                },
                last_seq: 0,
            }),
            Err(e) => {
                eprintln!("affin-trace: {e}; continuing with the cpu.stat estimate");
                None
            }
        }
    }

    /// Drains the periods completed since the last call.
    pub fn sample(&mut self, probe: &Probe) {
        let r = probe.bandwidth_periods(&mut self.last_seq);
        self.out.lost_periods += r.lost_periods;
        self.out.periods.extend(r.periods.iter().map(|p| {
            let exhausted =
                (p.first_throttle_ns != 0).then(|| p.first_throttle_ns.saturating_sub(p.start_ns));
            PeriodRecord {
                start_ns: p.start_ns,
                exhausted_after_ns: exhausted,
                throttled_wall_ns: if p.first_throttle_ns != 0 && p.last_unthrottle_ns != 0 {
                    p.last_unthrottle_ns.saturating_sub(p.first_throttle_ns)
                } else {
                    0
                },
                throttled_cpu_ns: p.throttled_sum_ns,
                throttles: p.throttles,
                running_at_exhaustion: p.running_at,
                queued_at_exhaustion: p.queued_at,
            }
        }));
    }

    /// The last periods and the per-thread held time, up to `now_ns`
    /// (CLOCK_MONOTONIC), of every thread the programs held: they record
    /// target threads only, those of processes followed or joined during
    /// the window included (an earlier filter on the first targets' tgids
    /// dropped the holds of stress-ng's forked workers, and their held time
    /// stayed in `runnable_ns`). The report joins them to its threads by tid.
    pub fn finish(mut self, probe: &Probe, now_ns: u64) -> BandwidthTrace {
        self.sample(probe);
        if self.out.per_thread {
            self.out.threads = probe
                .bandwidth_threads(now_ns)
                .into_iter()
                .map(|(tid, t)| ThreadHeld {
                    tid,
                    tgid: t.tgid,
                    // read_threads left the hold in progress in since_ns.
                    held_ns: t.held_ns + t.since_ns,
                    holds: t.holds,
                    open_ns: t.since_ns,
                    last_hold_ns: t.last_hold_ns,
                })
                .collect();
        }
        self.out
    }
}
