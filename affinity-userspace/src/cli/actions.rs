//! What `--apply`, `--verify` and `affin-trace revert` do, step by step:
//! check everything first (CPUs, pid reuse, kernel threads, the lock), record
//! the previous masks in the state file, apply as one transaction, and undo
//! from the state file when asked or when verification says it hurt.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;
use thiserror::Error;

use crate::{
    analyze::decision::Analysis,
    apply::state::{self, ApplyState, StateError},
    apply::{self, ApplyError, System},
    collect::session::Outcome,
    host::{Root, procs},
};

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

/// Why an apply or revert did not happen. Nothing was changed unless the
/// variant says otherwise.
#[derive(Debug, Error)]
pub enum ActionError {
    /// CPUs that cannot be given.
    #[error(
        "CPUs {bad} are not usable by pid {pid} (offline, or outside its cpuset {allowed}): choose CPUs from {allowed}; nothing was changed"
    )]
    BadCpus {
        /// Process.
        pid: u32,
        /// The offending CPUs.
        bad: String,
        /// What is allowed.
        allowed: String,
    },
    /// The recommendation is empty.
    #[error("the recommendation has no CPUs to apply; give them with --cpus; nothing was changed")]
    NoCpus,
    /// A pid now names another process.
    #[error(
        "pid {0} exited and its number was reused between the trace and the apply; nothing was changed"
    )]
    PidReused(u32),
    /// A target exited.
    #[error("pid {0} exited before the apply; nothing was changed")]
    Gone(u32),
    /// Kernel threads have no user affinity to manage.
    #[error("pid {0} is a kernel thread: affin-trace does not change kernel threads' CPUs")]
    KernelThread(u32),
    /// pid 1 without --force.
    #[error(
        "pid 1 (init) is traced but not changed without --force: its mask is inherited by everything it starts"
    )]
    Init,
    /// The user said no.
    #[error("not applied (answered no)")]
    Declined,
    /// No terminal to ask on.
    #[error("--apply without a terminal to confirm on needs --yes; nothing was changed")]
    NeedYes,
    /// State file or lock.
    #[error(transparent)]
    State(#[from] StateError),
    /// The transaction.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The verification trace failed; the new CPUs stay applied.
    #[error(
        "verification trace failed: {0}; the new CPUs stay applied (undo with `affin-trace revert`)"
    )]
    Verify(String),
    /// Revert could not restore some threads.
    #[error(
        "restoring pid {pid}: threads {failed} refused; the state file is kept, retry `affin-trace revert --pid {pid}`"
    )]
    RevertIncomplete {
        /// Process.
        pid: u32,
        /// "tid (errno)" list.
        failed: String,
    },
}

impl ActionError {
    /// Exit code: 2 for input the user can fix before anything ran.
    pub fn exit_code(&self) -> i32 {
        match self {
            ActionError::BadCpus { .. }
            | ActionError::NoCpus
            | ActionError::NeedYes
            | ActionError::KernelThread(_)
            | ActionError::Init
            | ActionError::PidReused(_)
            | ActionError::Gone(_) => crate::cli::EXIT_USAGE,
            ActionError::State(StateError::Missing(_)) => crate::cli::EXIT_USAGE,
            ActionError::Declined => crate::cli::EXIT_FAILURE,
            _ => crate::cli::EXIT_FAILURE,
        }
    }
}

/// Checks that `cpus` can be given to every target of `outcome`, and that
/// every target is still the process that was traced.
pub fn check(root: &Root, outcome: &Outcome, cpus: &[u32], force: bool) -> Result<(), ActionError> {
    if cpus.is_empty() {
        return Err(ActionError::NoCpus);
    }
    if outcome.trace.pids.contains(&1) && !force {
        return Err(ActionError::Init);
    }
    let online = outcome.topology.online();
    for &pid in &outcome.trace.pids {
        same_process(
            pid,
            outcome.start_times.get(&pid).copied(),
            // A zombie is gone too: nothing of it runs any more.
            procs::start_time(root, pid)
                .ok()
                .filter(|_| procs::alive(root, pid)),
        )?;
        if procs::is_kernel_thread(root, pid) {
            return Err(ActionError::KernelThread(pid));
        }
        let allowed: Vec<u32> = crate::host::topology::allowed_cpus(root, pid)
            .ok()
            .and_then(|a| a.cpuset)
            .unwrap_or_else(|| online.clone())
            .into_iter()
            .filter(|c| online.contains(c))
            .collect();
        let bad: Vec<u32> = cpus
            .iter()
            .copied()
            .filter(|c| !allowed.contains(c))
            .collect();
        if !bad.is_empty() {
            return Err(ActionError::BadCpus {
                pid,
                bad: crate::model::cpulist::format(&bad),
                allowed: crate::model::cpulist::format(&allowed),
            });
        }
    }
    Ok(())
}

/// The process now at `pid` is the one traced: same start time (a pid is
/// recycled only after its process is gone, and the new one starts later).
pub fn same_process(pid: u32, then: Option<u64>, now: Option<u64>) -> Result<(), ActionError> {
    match (then, now) {
        (_, None) => Err(ActionError::Gone(pid)),
        (Some(t), Some(n)) if t != n => Err(ActionError::PidReused(pid)),
        _ => Ok(()),
    }
}

/// Asks on the terminal unless `yes`; off a terminal `yes` is required.
pub fn confirm(yes: bool, question: &str) -> Result<(), ActionError> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(ActionError::NeedYes);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    match line.trim() {
        "y" | "Y" | "yes" | "Yes" => Ok(()),
        _ => Err(ActionError::Declined),
    }
}

/// Holds the per-target locks while an apply (and its verification) runs.
pub struct Locks {
    _held: Vec<state::Lock>,
}

/// Takes the lock of every target, without waiting.
pub fn lock_all(dir: &Path, pids: &[u32]) -> Result<Locks, ActionError> {
    Ok(Locks {
        _held: pids
            .iter()
            .map(|&p| state::lock(dir, p))
            .collect::<Result<_, _>>()?,
    })
}

/// Applies `cpus` to every thread of the traced targets, writing the
/// revert state of each target before any of its threads changes.
pub fn apply_cpus(dir: &Path, outcome: &Outcome, cpus: &[u32]) -> Result<AppliedJson, ActionError> {
    let pids = outcome.trace.pids.clone();
    let start_times = outcome.start_times.clone();
    let mut files: BTreeMap<u32, String> = BTreeMap::new();
    let mut persist = |a: &apply::Applied| -> Result<(), String> {
        for (&pid, threads) in &a.previous {
            let st = ApplyState {
                pid,
                start_time: start_times.get(&pid).copied().unwrap_or(0),
                applied_cpus: cpus.to_vec(),
                process_mask: threads
                    .get(&pid)
                    .or_else(|| threads.values().next())
                    .cloned()
                    .unwrap_or_default(),
                threads: threads.clone(),
            };
            let f = state::save(dir, &st).map_err(|e| e.to_string())?;
            files.insert(pid, f.display().to_string());
        }
        Ok(())
    };
    let applied = apply::apply(&mut System, &pids, cpus, &mut persist)?;
    let state_files: Vec<String> = files.into_values().collect();
    Ok(AppliedJson {
        cpus: cpus.to_vec(),
        cpulist: crate::model::cpulist::format(cpus),
        threads_changed: applied.threads_changed(),
        state_file: state_files.first().cloned().unwrap_or_default(),
        state_files,
        active: true,
    })
}

/// Restores `pid` from its state file and deletes the file. Returns the
/// number of threads restored.
pub fn revert(root: &Root, dir: &Path, pid: u32) -> Result<usize, ActionError> {
    let start = procs::start_time(root, pid).map_err(|_| ActionError::Gone(pid))?;
    let st = state::load(dir, pid, start)?;
    let (n, failed) = apply::revert(&mut System, pid, &st.threads, &st.process_mask);
    if !failed.is_empty() {
        return Err(ActionError::RevertIncomplete {
            pid,
            failed: failed
                .iter()
                .map(|(t, e)| format!("{t} ({e})"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    state::remove(dir, pid, start)?;
    Ok(n)
}

/// The CPUs to apply: `--cpus`, else the recommendation.
pub fn chosen_cpus(explicit: Option<&crate::cli::CpuList>, analysis: &Analysis) -> Vec<u32> {
    explicit
        .map(|c| c.0.clone())
        .unwrap_or_else(|| analysis.recommendation.cpus.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_pid_is_refused_and_a_gone_one_too() {
        assert!(same_process(7, Some(100), Some(100)).is_ok());
        let e = same_process(7, Some(100), Some(250)).unwrap_err();
        assert!(matches!(e, ActionError::PidReused(7)));
        assert!(e.to_string().contains("reused"));
        assert_eq!(e.exit_code(), 2);
        assert!(matches!(
            same_process(7, Some(100), None),
            Err(ActionError::Gone(7))
        ));
    }
}
