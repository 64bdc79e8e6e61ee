//! The hook a live view (`--watch`) plugs into the window's event loop:
//! its terminal is one of the loop's sources, and it sees each interval's
//! read as a [`Snapshot`] that borrows the trace so far (no copy of its
//! threads).

use std::{collections::BTreeMap, os::fd::BorrowedFd};

use crate::model::{
    Trace,
    cgroup::{CgroupLimit, CpuStatDelta},
    topology::Topology,
};

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

/// A live view of a running window (`--watch`).
pub trait Observer {
    /// An fd to wake up on between intervals (the terminal, for keys).
    fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// The input fd is readable; false ends the window.
    fn on_input(&mut self) -> bool {
        true
    }
    /// An interval was read; false ends the window.
    fn on_interval(&mut self, snap: &Snapshot<'_>) -> bool;
}
