//! What `--apply`, `--verify` and `affin-trace revert` do, step by step:
//! read the targets and check everything first (the plan: CPUs, pid reuse,
//! kernel threads; then the lock), record the previous masks in the state
//! file, apply as one transaction, and undo from the state file when asked
//! or when verification says it hurt.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;
use thiserror::Error;

use crate::{
    analyze::decision::Analysis,
    apply::plan::{self, Plan, PlanError},
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
    /// A check before the apply refused it.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The target of a revert is gone.
    #[error("pid {0} exited before the apply; nothing was changed")]
    Gone(u32),
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
            ActionError::Plan(_) | ActionError::NeedYes | ActionError::Gone(_) => {
                crate::cli::EXIT_USAGE
            }
            ActionError::State(StateError::Missing(_)) => crate::cli::EXIT_USAGE,
            ActionError::Declined => crate::cli::EXIT_FAILURE,
            _ => crate::cli::EXIT_FAILURE,
        }
    }
}

/// Reads each target of `outcome` as it is now and checks that `cpus` can
/// be given to it ([`plan::check`]).
pub fn plan(
    root: &Root,
    outcome: &Outcome,
    cpus: &[u32],
    force: bool,
) -> Result<Plan, ActionError> {
    let targets: Vec<plan::Target> = (outcome.trace.pids.iter())
        .map(|&pid| plan::Target {
            pid,
            traced_start: outcome.start_times.get(&pid).copied(),
            start_now: procs::start_time(root, pid)
                .ok()
                .filter(|_| procs::alive(root, pid)),
            kernel_thread: procs::is_kernel_thread(root, pid),
            cpuset: crate::host::topology::allowed_cpus(root, pid)
                .ok()
                .and_then(|a| a.cpuset),
        })
        .collect();
    Ok(plan::check(
        cpus,
        &outcome.topology.online(),
        &targets,
        force,
    )?)
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

/// Applies the plan's CPUs to every thread of its targets, writing the
/// revert state of each target before any of its threads changes.
pub fn apply_cpus(dir: &Path, plan: &Plan) -> Result<AppliedJson, ActionError> {
    let (pids, cpus, start_times) = (&plan.pids, &plan.cpus, &plan.start_times);
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
    let applied = apply::apply(&mut System, pids, cpus, &mut persist)?;
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
    fn refused_plans_are_usage_errors() {
        let e = ActionError::from(plan::same_process(7, Some(100), Some(250)).unwrap_err());
        assert!(matches!(e, ActionError::Plan(PlanError::PidReused(7))));
        assert!(e.to_string().contains("reused"));
        assert_eq!(e.exit_code(), 2);
        assert_eq!(ActionError::Gone(7).exit_code(), 2);
    }
}
