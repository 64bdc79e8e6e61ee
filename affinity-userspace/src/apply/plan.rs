//! The checks before an apply, on values: the CPUs asked for, the CPUs
//! online, and each target as it is now next to how it was traced (start
//! time, kernel thread or not, the CPUs its cpuset allows). The caller reads
//! those from the system just before the apply; nothing here touches it, so
//! every refusal is tested without root. A [`Plan`] that passed is what the
//! transaction is given.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::model::cpulist;

/// Why an apply was refused before anything changed.
#[derive(Debug, Error)]
pub enum PlanError {
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
}

/// One explicit target, as traced and as it is now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    /// The process.
    pub pid: u32,
    /// Its start time when the trace began (None: not read then).
    pub traced_start: Option<u64>,
    /// Its start time now; None when it is gone (a zombie counts as gone:
    /// nothing of it runs any more).
    pub start_now: Option<u64>,
    /// A kernel thread (no user affinity to manage).
    pub kernel_thread: bool,
    /// The CPUs its cpuset allows now; None: no cpuset read, all online.
    pub cpuset: Option<Vec<u32>>,
}

/// An apply that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The targets, in the order given.
    pub pids: Vec<u32>,
    /// The CPUs every thread of them gets.
    pub cpus: Vec<u32>,
    /// Each target's start time (the state file records it so revert can
    /// tell a recycled pid).
    pub start_times: BTreeMap<u32, u64>,
}

/// Checks that `cpus` can be given to every target and that every target is
/// still the process that was traced.
pub fn check(
    cpus: &[u32],
    online: &[u32],
    targets: &[Target],
    force: bool,
) -> Result<Plan, PlanError> {
    if cpus.is_empty() {
        return Err(PlanError::NoCpus);
    }
    if targets.iter().any(|t| t.pid == 1) && !force {
        return Err(PlanError::Init);
    }
    for t in targets {
        same_process(t.pid, t.traced_start, t.start_now)?;
        if t.kernel_thread {
            return Err(PlanError::KernelThread(t.pid));
        }
        usable(t.pid, cpus, online, t.cpuset.as_deref())?;
    }
    Ok(Plan {
        pids: targets.iter().map(|t| t.pid).collect(),
        cpus: cpus.to_vec(),
        start_times: targets
            .iter()
            .filter_map(|t| t.traced_start.map(|s| (t.pid, s)))
            .collect(),
    })
}

/// The process now at `pid` is the one traced: same start time (a pid is
/// recycled only after its process is gone, and the new one starts later).
pub fn same_process(pid: u32, then: Option<u64>, now: Option<u64>) -> Result<(), PlanError> {
    match (then, now) {
        (_, None) => Err(PlanError::Gone(pid)),
        (Some(t), Some(n)) if t != n => Err(PlanError::PidReused(pid)),
        _ => Ok(()),
    }
}

/// Every CPU asked for is online and inside the target's cpuset.
fn usable(pid: u32, cpus: &[u32], online: &[u32], cpuset: Option<&[u32]>) -> Result<(), PlanError> {
    let allowed: Vec<u32> = cpuset
        .unwrap_or(online)
        .iter()
        .copied()
        .filter(|c| online.contains(c))
        .collect();
    let bad: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| !allowed.contains(c))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(PlanError::BadCpus {
        pid,
        bad: cpulist::format(&bad),
        allowed: cpulist::format(&allowed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: u32) -> Target {
        Target {
            pid,
            traced_start: Some(100),
            start_now: Some(100),
            kernel_thread: false,
            cpuset: None,
        }
    }

    const ONLINE: [u32; 4] = [0, 1, 2, 3];

    #[test]
    fn a_sound_apply_becomes_a_plan() {
        let mut b = target(8);
        b.traced_start = None;
        let plan = check(&[1, 2], &ONLINE, &[target(7), b], false).unwrap();
        assert_eq!(plan.pids, vec![7, 8]);
        assert_eq!(plan.cpus, vec![1, 2]);
        assert_eq!(plan.start_times, BTreeMap::from([(7, 100)]));
    }

    #[test]
    fn no_cpus_is_refused_first() {
        let mut gone = target(7);
        gone.start_now = None;
        assert!(matches!(
            check(&[], &ONLINE, &[gone], false),
            Err(PlanError::NoCpus)
        ));
    }

    #[test]
    fn init_needs_force() {
        let e = check(&[1], &ONLINE, &[target(1)], false).unwrap_err();
        assert!(matches!(e, PlanError::Init));
        assert!(e.to_string().contains("--force"));
        assert!(check(&[1], &ONLINE, &[target(1)], true).is_ok());
    }

    #[test]
    fn a_recycled_pid_is_refused_and_a_gone_one_too() {
        assert!(same_process(7, Some(100), Some(100)).is_ok());
        let e = same_process(7, Some(100), Some(250)).unwrap_err();
        assert!(matches!(e, PlanError::PidReused(7)));
        assert!(e.to_string().contains("reused"));
        assert!(matches!(
            same_process(7, Some(100), None),
            Err(PlanError::Gone(7))
        ));
        // Not read at trace time: only "still there" can be checked.
        assert!(same_process(7, None, Some(250)).is_ok());
        let mut t = target(9);
        t.start_now = Some(300);
        assert!(matches!(
            check(&[1], &ONLINE, &[target(7), t], false),
            Err(PlanError::PidReused(9))
        ));
    }

    #[test]
    fn kernel_threads_are_refused() {
        let mut k = target(2);
        k.kernel_thread = true;
        assert!(matches!(
            check(&[1], &ONLINE, &[k], true),
            Err(PlanError::KernelThread(2))
        ));
    }

    #[test]
    fn cpus_outside_the_cpuset_or_offline_are_named() {
        let mut t = target(7);
        t.cpuset = Some(vec![0, 1, 5]);
        let e = check(&[1, 2, 5], &ONLINE, &[t], false).unwrap_err();
        match &e {
            PlanError::BadCpus { pid, bad, allowed } => {
                assert_eq!((*pid, bad.as_str(), allowed.as_str()), (7, "2,5", "0-1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains("choose CPUs from 0-1"), "{e}");
        let e = check(&[4], &ONLINE, &[target(7)], false).unwrap_err();
        assert!(
            matches!(&e, PlanError::BadCpus { bad, allowed, .. } if bad == "4" && allowed == "0-3"),
            "{e:?}"
        );
    }
}
