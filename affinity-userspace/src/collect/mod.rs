//! One trace window, start to finish: the session sequences preflight,
//! load and attach, target marking and the per-interval map reads
//! ([`session`]); the collector turns those reads into a whole
//! [`crate::model::Trace`] ([`collector`]); [`wake`] sleeps until the next
//! interval, a target's exit or a signal.

pub mod bandwidth;
pub mod collector;
pub mod session;
pub mod wake;
