//! What `--apply`, `--verify` and `affin-trace revert` do, step by step:
//! read the targets and check everything first (the plan: CPUs, pid reuse,
//! kernel threads; then the lock), record the previous masks in the state
//! file, apply as one transaction, and undo from the state file when asked
//! or when verification says it hurt.

use std::{collections::BTreeMap, path::Path};

use thiserror::Error;

pub use crate::report::applied::{AppliedJson, NotApplied};
use crate::{
    analyze::decision::Analysis,
    apply::plan::{self, Plan, PlanError},
    apply::state::{self, ApplyState, StateError},
    apply::{self, ApplyError, System},
    collect::session::Outcome,
    host::{Root, procs},
};

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
    /// Revert of a pid that names no process now.
    #[error(
        "no such process: {0}; nothing to revert (a process that exited took its CPU masks with it)"
    )]
    NoProcess(u32),
    /// The user said no.
    #[error("not applied (answered no)")]
    Declined,
    /// A termination signal came before the apply started.
    #[error("apply cancelled by {}: nothing was changed", crate::cli::cancel::name(*.0))]
    Cancelled(i32),
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
            ActionError::Plan(_)
            | ActionError::NeedYes
            | ActionError::Gone(_)
            | ActionError::NoProcess(_) => crate::cli::EXIT_USAGE,
            ActionError::State(StateError::Missing(_)) => crate::cli::EXIT_USAGE,
            ActionError::Declined => crate::cli::EXIT_FAILURE,
            ActionError::Cancelled(sig) => crate::cli::cancel::exit_code(*sig),
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

/// Asks on the terminal unless `yes`; off a terminal `yes` is required. A
/// termination signal, before or during the question, cancels.
pub fn confirm(
    yes: bool,
    question: &str,
    cancel: &crate::cli::cancel::Cancel,
) -> Result<(), ActionError> {
    use std::io::IsTerminal as _;
    if let Some(sig) = cancel.signal() {
        return Err(ActionError::Cancelled(sig));
    }
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(ActionError::NeedYes);
    }
    match cancel.ask(question) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ActionError::Declined),
        Err(sig) => Err(ActionError::Cancelled(sig)),
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
                boot_id: None,
            };
            let f = state::save_merged(dir, &st).map_err(|e| e.to_string())?;
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
    let start = procs::start_time(root, pid).map_err(|_| ActionError::NoProcess(pid))?;
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

/// The processes that have a record in `dir` now: `<pid>-<start>.json`
/// files whose pid still runs the process that was applied to (same start
/// time). A record of an exited process cannot be reverted (its threads are
/// gone) and is left alone.
pub fn recorded(root: &Root, dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| record_name(e.file_name().to_str()?))
        .filter(|&(pid, start)| procs::start_time(root, pid).ok() == Some(start))
        .map(|(pid, _)| pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// "<pid>-<start>.json" -> (pid, start).
pub fn record_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_suffix(".json")?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Why `revert` found nothing to do.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    /// No process has that name.
    #[error("no process named {0:?} (comm, as in pgrep -x); nothing to revert")]
    NoSuchComm(String),
    /// The cgroup is not there.
    #[error(transparent)]
    Cgroup(#[from] crate::cli::check::CheckError),
    /// The processes named have no record.
    #[error(
        "nothing to revert: no applied affinity recorded for {0} (affin-trace --apply was not run on them since boot)"
    )]
    NoneRecorded(String),
}

/// The pids `revert` restores, sorted: every `--pid` as given (each must
/// have a record; a missing one is reported by the per-pid revert), and the
/// processes named by `--comm`, `--cgroup` or `--all` that have a record.
pub fn revert_selection(
    root: &Root,
    dir: &Path,
    t: &crate::cli::run::RevertTargets,
) -> Result<Vec<u32>, SelectError> {
    let mut named = Vec::new();
    let mut what = Vec::new();
    for name in &t.comms {
        let found = procs::pids_by_comm(root, name);
        if found.is_empty() {
            return Err(SelectError::NoSuchComm(name.clone()));
        }
        what.push(format!("--comm {name} (pid {})", list(&found)));
        named.extend(found);
    }
    if let Some(given) = &t.cgroup {
        let cg = crate::cli::check::cgroup_dir(root, given)?;
        let found = procs::pids_in_cgroup(&cg).unwrap_or_default();
        what.push(format!("cgroup {}", given.display()));
        named.extend(found);
    }
    if t.all {
        what.push(format!("any process (in {})", dir.display()));
    }
    select(&t.pids, &named, t.all, &recorded(root, dir))
        .ok_or_else(|| SelectError::NoneRecorded(what.join(", ")))
}

/// The pure part of [`revert_selection`]: `None` when nothing is selected.
pub fn select(explicit: &[u32], named: &[u32], all: bool, recorded: &[u32]) -> Option<Vec<u32>> {
    let mut out: Vec<u32> = explicit.to_vec();
    out.extend(
        recorded
            .iter()
            .copied()
            .filter(|p| all || named.contains(p)),
    );
    out.sort_unstable();
    out.dedup();
    (!out.is_empty()).then_some(out)
}

fn list(pids: &[u32]) -> String {
    pids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
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
    fn revert_selects_given_pids_and_recorded_named_ones() {
        // --pid is kept as given (a missing record is the revert's error).
        assert_eq!(select(&[5], &[], false, &[]), Some(vec![5]));
        // --comm/--cgroup: only the named processes that have a record.
        assert_eq!(
            select(&[], &[7, 8, 9], false, &[8, 9, 20]),
            Some(vec![8, 9])
        );
        assert_eq!(select(&[], &[7], false, &[8]), None);
        // --all: every record.
        assert_eq!(select(&[], &[], true, &[3, 1]), Some(vec![1, 3]));
        assert_eq!(select(&[], &[], true, &[]), None);
        assert_eq!(select(&[4], &[4], false, &[4]), Some(vec![4]));
    }

    #[test]
    fn record_names_are_pid_dash_start_time() {
        assert_eq!(record_name("8503-393222.json"), Some((8503, 393222)));
        assert_eq!(record_name("8503.lock"), None);
        assert_eq!(record_name(".8503-1.tmp"), None);
        assert_eq!(record_name("x-1.json"), None);
    }

    #[test]
    fn refused_plans_are_usage_errors() {
        let e = ActionError::from(plan::same_process(7, Some(100), Some(250)).unwrap_err());
        assert!(matches!(e, ActionError::Plan(PlanError::PidReused(7))));
        assert!(e.to_string().contains("reused"));
        assert_eq!(e.exit_code(), 2);
        assert_eq!(ActionError::Gone(7).exit_code(), 2);
    }
}
