//! What a live view sees of a running window: the [`Snapshot`] after each
//! interval's read, and [`TaskNow`], what /proc says about a live thread
//! now. Plain values: the session fills them, `report::watch` draws them.

use std::collections::BTreeMap;

use crate::model::Trace;
use crate::model::cgroup::{CgroupLimit, CpuStatDelta};
use crate::model::topology::Topology;

/// What a live view sees after each interval's read.
pub struct Snapshot<'a> {
    /// The trace so far (`duration_ns`: time since tracing started).
    pub trace: &'a Trace,
    /// System-wide busy ns per CPU in the last interval (/proc/stat).
    pub interval_busy_ns: &'a BTreeMap<u32, u64>,
    /// Wall ns of the last interval.
    pub interval_ns: u64,
    /// The machine.
    pub topology: &'a Topology,
    /// The quota in force on the target's cgroup path, if any.
    pub cgroup_limit: Option<&'a CgroupLimit>,
    /// Its cpu.stat since tracing started.
    pub cgroup_window: Option<&'a CpuStatDelta>,
}

/// What /proc says about a live thread now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNow {
    /// The CPU it last ran on.
    pub cpu: u32,
    /// Its current name.
    pub comm: String,
}
