//! The CPU quota on the target's cgroup path, watched over the window:
//! `cpu.stat` is read once at the start and once per interval; each read
//! gives both the interval's throttling (for the timeline) and the
//! window's so far (for the live view, and at the end for the report), so
//! the window's delta is computed once, from the last read.

use crate::{
    collect::bandwidth::BandwidthCollector,
    host::Root,
    host::cgroup::{self, CgroupLimit, CpuStat, CpuStatDelta},
    kernel::probe::Probe,
    model::{bandwidth::BandwidthTrace, runtime::RuntimeFacts},
    report::timeline::ThrottledSpan,
};

/// A quota and its counters since the window started.
pub struct QuotaWatch {
    limit: CgroupLimit,
    /// cpu.stat at the start, and at the previous read.
    before: Option<CpuStat>,
    prev: Option<CpuStat>,
    /// CLOCK_MONOTONIC ns of the previous read.
    mono_prev: u64,
    /// From `before` to the last read.
    window: Option<CpuStatDelta>,
    /// The quota's own events (kernel's throttle path), when they attached.
    events: Option<BandwidthCollector>,
    /// What sizes the target's threads, read once it runs its own image.
    runtime: Option<RuntimeFacts>,
    /// The executable `runtime` was read from: a target that execs
    /// another program (a shell's `exec`) is read again.
    runtime_exe: Option<std::path::PathBuf>,
}

impl QuotaWatch {
    /// The quota in force on `pid`'s cgroup path, if any, with its counters
    /// from now on; `mono_now` is CLOCK_MONOTONIC now.
    pub fn start(root: &Root, pid: u32, mono_now: u64) -> Option<QuotaWatch> {
        let limit = match cgroup::resolve(root, pid) {
            Ok(cg) => cg.limit().cloned()?,
            Err(e) => {
                eprintln!("affin-trace: {e}; continuing without the cgroup quota check");
                return None;
            }
        };
        let before = cgroup::read_stat(&limit).ok();
        Some(QuotaWatch {
            limit,
            prev: before,
            before,
            mono_prev: mono_now,
            window: None,
            events: None,
            runtime: None,
            runtime_exe: None,
        })
    }

    /// Attaches the bandwidth programs for this quota's cgroup (the
    /// cpu.stat estimate stays when they cannot attach).
    pub fn with_events(mut self, probe: &mut Probe) -> Self {
        self.events = BandwidthCollector::start(probe, Some(&self.limit));
        self
    }

    /// An interval's read of the kernel events, and of the first target's
    /// runtime until it is known.
    pub fn read_events(&mut self, probe: &Probe, tgids: &[u32]) {
        if let Some(b) = self.events.as_mut() {
            b.sample(probe);
        }
        let Some(&pid) = tgids.first() else {
            return;
        };
        let exe = crate::host::runtime::exe(pid);
        if exe.is_some()
            && (self.runtime.is_none() || exe != self.runtime_exe)
            && let Some(r) = crate::host::runtime::read(pid)
        {
            self.runtime = Some(r);
            self.runtime_exe = exe;
        }
    }

    /// The last read of the kernel events, before the programs detach:
    /// the watch, the events' trace and the runtime.
    pub fn finish_events(
        mut self,
        probe: &Probe,
        now_ns: u64,
    ) -> (Self, Option<BandwidthTrace>, Option<RuntimeFacts>) {
        let b = self.events.take().map(|b| b.finish(probe, now_ns));
        let r = self.runtime.take();
        (self, b, r)
    }

    /// The quota.
    pub fn limit(&self) -> &CgroupLimit {
        &self.limit
    }

    /// One-line description of the quota, for the timeline.
    pub fn describe(&self) -> String {
        let l = &self.limit;
        format!(
            "{:.2} CPUs ({}/{} us) on {}",
            l.quota_cores(),
            l.quota.quota_us,
            l.quota.period_us,
            l.cgroup
        )
    }

    /// Reads cpu.stat at an interval's end (`mono_now`): returns the
    /// interval's throttling, and keeps the window's so far.
    pub fn read(&mut self, mono_now: u64) -> Option<ThrottledSpan> {
        let stat = cgroup::read_stat(&self.limit).ok();
        let span = self.span(stat.as_ref(), mono_now);
        if let (Some(before), Some(now)) = (&self.before, &stat) {
            self.window = Some(CpuStat::delta(before, now));
        }
        if stat.is_some() {
            self.prev = stat;
        }
        self.mono_prev = mono_now;
        span
    }

    fn span(&self, stat: Option<&CpuStat>, mono_now: u64) -> Option<ThrottledSpan> {
        let d = CpuStat::delta(self.prev.as_ref()?, stat?);
        Some(ThrottledSpan {
            start_ns: self.mono_prev,
            end_ns: mono_now,
            nr_periods: d.nr_periods,
            nr_throttled: d.nr_throttled,
            throttled_ns: d.throttled_ns,
        })
    }

    /// The window's counters up to the last read.
    pub fn window(&self) -> Option<&CpuStatDelta> {
        self.window.as_ref()
    }

    /// The quota and the window's counters, at the end.
    pub fn into_parts(self) -> (CgroupLimit, Option<CpuStatDelta>) {
        (self.limit, self.window)
    }
}
