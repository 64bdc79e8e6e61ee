//! What an apply did, or why it changed nothing: the report's `applied`
//! and `not_applied` sections (values; `cli::actions` fills them).

use serde::Serialize;

/// What the apply did (JSON `applied`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AppliedJson {
    /// CPUs set on every thread.
    pub cpus: Vec<u32>,
    /// Same, as a list string.
    pub cpulist: String,
    /// Threads changed.
    pub threads_changed: usize,
    /// The state file of the first target (revert reads it).
    pub state_file: String,
    /// State files of all targets.
    pub state_files: Vec<String>,
    /// Still applied after verification (false: reverted).
    pub active: bool,
}

/// Why an apply changed nothing although it was asked for (JSON
/// `not_applied`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NotApplied {
    /// "nothing_to_change" (every thread already had the CPUs) or
    /// "cancelled" (a signal came before the apply started).
    pub reason: &'static str,
    /// The CPUs that would have been set.
    pub cpulist: String,
    /// Threads looked at (nothing_to_change).
    pub threads: usize,
    /// The signal's name (cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// One line saying what happened.
    pub message: String,
}

impl NotApplied {
    /// Every thread already runs on `cpus`.
    pub fn nothing_to_change(cpus: &[u32], threads: usize) -> Self {
        let cpulist = crate::model::cpulist::format(cpus);
        Self {
            reason: "nothing_to_change",
            message: format!(
                "nothing to change: all {threads} thread(s) already run on CPUs {cpulist}; nothing was applied (nothing to revert)"
            ),
            cpulist,
            threads,
            signal: None,
        }
    }

    /// The signal named `name` came before the apply started.
    pub fn cancelled(cpus: &[u32], name: String) -> Self {
        Self {
            reason: "cancelled",
            message: format!(
                "apply cancelled by {name} before it started: the report above is of the window so far; nothing was changed"
            ),
            cpulist: crate::model::cpulist::format(cpus),
            threads: 0,
            signal: Some(name),
        }
    }
}
