//! What a window traces: the arguments checked and the targets resolved
//! once, before anything is loaded. A verify window reuses the first
//! window's resolution ([`again`]) rather than looking `--comm` or
//! `--cgroup` up again, which could find another process.

use std::collections::BTreeMap;

use crate::{
    cli::TraceArgs,
    collect::session::SessionError,
    host::Root,
    host::kube,
    host::preflight,
    host::procs::{self, TargetError},
    kernel::probe::Probe,
};

/// Resolved running targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// Processes (tgids), sorted, no duplicates.
    pub tgids: Vec<u32>,
    /// Requested threads (`--tid`; empty: all).
    pub tids: Vec<u32>,
}

/// How the window gets its targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Launch {
    /// Start this command at a gate and trace it from its first instruction.
    Command(Vec<String>),
    /// Trace processes that already run.
    Running(Targets),
}

/// Checks the arguments and the system; no side effects.
pub fn validate(args: &TraceArgs) -> Result<Launch, SessionError> {
    let launch = check_args(args)?;
    let launch = match launch {
        Launch::Running(_) => Launch::Running(resolve(args)?),
        command => command,
    };
    preflight::check(&args.root, args.apply)?;
    Ok(launch)
}

/// The checks on the arguments alone (pure): which kind of target, and
/// the combinations that make no sense.
fn check_args(args: &TraceArgs) -> Result<Launch, SessionError> {
    let command = !args.command.is_empty();
    let targets = !args.pids.is_empty()
        || !args.tids.is_empty()
        || !args.comms.is_empty()
        || args.cgroup.is_some()
        || !args.pods.is_empty()
        || !args.containers.is_empty();
    if command && targets {
        return Err(SessionError::TargetAndCommand);
    }
    if !command && !targets {
        return Err(SessionError::NoTarget);
    }
    if command && args.apply {
        return Err(SessionError::ApplyToCommand);
    }
    if args.verify_fix && !command {
        return Err(SessionError::VerifyFixNeedsCommand);
    }
    if let Some(d) = args.duration
        && args.interval() > d
    {
        return Err(SessionError::IntervalTooLong {
            interval: args.interval(),
            duration: d,
        });
    }
    Ok(if command {
        Launch::Command(args.command.clone())
    } else {
        Launch::Running(Targets::default())
    })
}

fn resolve(args: &TraceArgs) -> Result<Targets, SessionError> {
    let root = &args.root;
    let mut tgids = Vec::new();
    for name in &args.comms {
        let found = procs::pids_by_comm(root, name);
        if found.is_empty() {
            return Err(TargetError::NoSuchComm(name.clone()).into());
        }
        tgids.extend(found);
    }
    if let Some(dir) = &args.cgroup {
        let found = procs::pids_in_cgroup(dir)?;
        if found.is_empty() {
            return Err(TargetError::EmptyCgroup(dir.display().to_string()).into());
        }
        tgids.extend(found);
    }
    if !args.pods.is_empty() || !args.containers.is_empty() {
        tgids.extend(kube_pids(root, &args.pods, &args.containers)?);
    }
    for &pid in &args.pids {
        tgids.push(procs::check_target(root, pid)?);
    }
    for &tid in &args.tids {
        tgids.push(procs::tgid_of(root, tid)?);
    }
    tgids.sort_unstable();
    tgids.dedup();
    Ok(Targets {
        tgids,
        tids: args.tids.clone(),
    })
}

/// The processes of the containers named by `--pod` and `--container`,
/// found in the cpu controller's hierarchy.
fn kube_pids(root: &Root, pods: &[String], ids: &[String]) -> Result<Vec<u32>, SessionError> {
    // No cpu hierarchy: no container is found, and the error says which.
    let all = crate::host::cgroup::cpu_hierarchy(root)
        .map(|(_, m)| kube::containers(&m, &crate::host::oci::Bundles::defaults(root)))
        .unwrap_or_default();
    let mut pids = Vec::new();
    for dir in kube::select(&all, pods, ids)? {
        pids.extend(procs::pids_in_cgroup(&dir)?);
    }
    if pids.is_empty() {
        let what = pods
            .iter()
            .chain(ids)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(TargetError::EmptyCgroup(what).into());
    }
    Ok(pids)
}

/// The targets of a window that already ran (`pids`, `tids`), for a
/// second window on the same processes: each must still be the process
/// that started at `start_times[pid]` (a recycled pid is another process).
pub fn again(
    root: &Root,
    pids: &[u32],
    tids: &[u32],
    start_times: &BTreeMap<u32, u64>,
) -> Result<Launch, SessionError> {
    for &pid in pids {
        let now = procs::start_time(root, pid)
            .ok()
            .filter(|_| procs::alive(root, pid))
            .ok_or(TargetError::NoSuchProcess(pid))?;
        check_same(pid, start_times.get(&pid).copied(), now)?;
    }
    preflight::check(root, false)?;
    Ok(Launch::Running(Targets {
        tgids: pids.to_vec(),
        tids: tids.to_vec(),
    }))
}

/// `pid` started at `then` (if known) and at `now`: the same process.
fn check_same(pid: u32, then: Option<u64>, now: u64) -> Result<(), SessionError> {
    match then {
        Some(t) if t != now => Err(SessionError::Replaced(pid)),
        _ => Ok(()),
    }
}

/// Start time of each target now: an apply later checks it to catch a
/// recycled pid.
pub fn start_times(root: &Root, launch: &Launch) -> BTreeMap<u32, u64> {
    match launch {
        Launch::Command(_) => BTreeMap::new(),
        Launch::Running(t) => t
            .tgids
            .iter()
            .filter_map(|&p| procs::start_time(root, p).ok().map(|t| (p, t)))
            .collect(),
    }
}

/// Marks and seeds the processes named by `--comm` that appeared since the
/// last look and are not traced yet (those the targets started are, by the
/// programs); returns how many. They are traced from now on: what they ran
/// before is not counted, and the report says how many there were.
pub fn rescan_comms(root: &Root, probe: &mut Probe, comms: &[String]) -> u64 {
    let mut n = 0;
    for name in comms {
        for pid in procs::pids_by_comm(root, name) {
            if !probe.is_target(pid) && probe.add_target(pid).is_ok() {
                seed(root, probe, pid);
                n += 1;
            }
        }
    }
    n
}

/// Seeds `tgid`'s threads from /proc: what they ran before the trace, so
/// the first interval's deltas start from there.
pub fn seed(root: &Root, probe: &mut Probe, tgid: u32) {
    for t in procs::threads(root, tgid) {
        probe.seed_thread_at(t.tid, tgid, t.comm, t.sum_exec_ns, t.run_delay_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_pid_is_refused_for_the_second_window() {
        assert!(check_same(7, Some(100), 100).is_ok());
        assert!(check_same(7, None, 100).is_ok());
        assert!(matches!(
            check_same(7, Some(100), 250),
            Err(SessionError::Replaced(7))
        ));
    }
}
