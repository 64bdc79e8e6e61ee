//! Changing the system, safely: the plan that checks an apply on values
//! first ([`plan`]: CPUs, pid reuse, kernel threads), the transaction that
//! sets every thread's affinity or none ([`transaction`], the only caller
//! of sched_setaffinity), and the state file that lets `revert` undo it
//! ([`state`]).

pub mod plan;
pub mod state;
pub mod transaction;

pub use transaction::*;
