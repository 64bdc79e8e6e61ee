//! The hook a live view (`--watch`) plugs into the window's event loop:
//! its terminal is one of the loop's sources, and it sees each interval's
//! read as a [`Snapshot`] that borrows the trace so far (no copy of its
//! threads).

use std::os::fd::BorrowedFd;

pub use crate::model::snapshot::Snapshot;

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
