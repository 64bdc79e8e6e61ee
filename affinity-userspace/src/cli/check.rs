//! Checks made before anything is loaded or traced: whatever the user can
//! get wrong that can be known up front fails at once, with the fix, rather
//! than after a whole window. (Flag values and combinations clap can see are
//! checked in [`crate::cli::args`]; this is what needs the system: online
//! CPUs, the targets' cpusets, cgroup paths.)

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::{cli::TraceArgs, host::Root, host::procs, model::cpulist};

/// Input refused before tracing. Nothing was loaded or changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CheckError {
    /// `--cpus` names CPUs that are not online.
    #[error(
        "--cpus {given}: CPUs {bad} are not usable: not online (online: {online}); choose CPUs from {online}; nothing was traced or changed"
    )]
    Offline {
        /// The list as given.
        given: String,
        /// The offending CPUs.
        bad: String,
        /// Online CPUs.
        online: String,
    },
    /// `--cpus` names CPUs outside a target's cpuset.
    #[error(
        "--cpus {given}: CPUs {bad} are not usable by pid {pid}: outside its cpuset ({allowed}); choose CPUs from {allowed}; nothing was traced or changed"
    )]
    OutsideCpuset {
        /// The list as given.
        given: String,
        /// The target.
        pid: u32,
        /// The offending CPUs.
        bad: String,
        /// Its cpuset (online part).
        allowed: String,
    },
    /// No cgroup directory by that name.
    #[error(
        "{0} is not a cgroup directory (no cgroup.procs) nor a cgroup under a mount: give its directory (e.g. /sys/fs/cgroup/cpu/NAME) or its path in the hierarchy as the report prints it (/NAME)"
    )]
    NoCgroup(String),
}

/// Runs every early check and returns the arguments with the cgroup path
/// resolved to its directory.
pub fn early(args: &TraceArgs) -> Result<TraceArgs, CheckError> {
    let mut args = args.clone();
    if let Some(given) = &args.cgroup {
        args.cgroup = Some(cgroup_dir(&args.root, given)?);
    }
    if let Some(cpus) = &args.cpus {
        let online = crate::model::topology::Topology::read(&args.root)
            .map(|t| t.online())
            .unwrap_or_default();
        // Unknown online CPUs (an unreadable sysfs) leave the check to the
        // apply, which repeats it.
        if !online.is_empty() {
            let cpusets: Vec<(u32, Vec<u32>)> = target_pids(&args)
                .into_iter()
                .filter_map(|pid| {
                    crate::host::topology::allowed_cpus(&args.root, pid)
                        .ok()
                        .and_then(|a| a.cpuset)
                        .map(|c| (pid, c))
                })
                .collect();
            usable_cpus(&cpus.0, &online, &cpusets)?;
        }
    }
    Ok(args)
}

/// `cpus` are online and inside every target's cpuset.
pub fn usable_cpus(
    cpus: &[u32],
    online: &[u32],
    cpusets: &[(u32, Vec<u32>)],
) -> Result<(), CheckError> {
    let given = cpulist::format(cpus);
    let off: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    if !off.is_empty() {
        return Err(CheckError::Offline {
            given,
            bad: cpulist::format(&off),
            online: cpulist::format(online),
        });
    }
    for (pid, set) in cpusets {
        let allowed: Vec<u32> = set.iter().copied().filter(|c| online.contains(c)).collect();
        let bad: Vec<u32> = cpus
            .iter()
            .copied()
            .filter(|c| !allowed.contains(c))
            .collect();
        if !bad.is_empty() {
            return Err(CheckError::OutsideCpuset {
                given,
                pid: *pid,
                bad: cpulist::format(&bad),
                allowed: cpulist::format(&allowed),
            });
        }
    }
    Ok(())
}

/// The cgroup directory `given` names, under `root`.
pub fn cgroup_dir(root: &Root, given: &Path) -> Result<PathBuf, CheckError> {
    crate::host::cgroup::locate(root, given)
        .ok_or_else(|| CheckError::NoCgroup(given.display().to_string()))
}

/// The processes the arguments name now (those that cannot be resolved are
/// left to the session, which reports them).
fn target_pids(args: &TraceArgs) -> Vec<u32> {
    let mut pids: Vec<u32> = args.pids.clone();
    pids.extend(
        args.tids
            .iter()
            .filter_map(|&t| procs::tgid_of(&args.root, t).ok()),
    );
    for name in &args.comms {
        pids.extend(procs::pids_by_comm(&args.root, name));
    }
    if let Some(dir) = &args.cgroup {
        pids.extend(procs::pids_in_cgroup(dir).unwrap_or_default());
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_that_are_not_online_are_refused_naming_the_online_ones() {
        let e = usable_cpus(&[7], &[0, 1], &[]).unwrap_err();
        assert_eq!(
            e,
            CheckError::Offline {
                given: "7".into(),
                bad: "7".into(),
                online: "0-1".into()
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("CPUs 7 are not usable: not online (online: 0-1)"),
            "{msg}"
        );
        assert!(msg.contains("nothing was traced"), "{msg}");
        assert!(usable_cpus(&[0, 1], &[0, 1], &[]).is_ok());
    }

    #[test]
    fn cpus_outside_a_targets_cpuset_are_refused_naming_the_pid() {
        let sets = vec![(10, vec![0, 1]), (11, vec![0])];
        let e = usable_cpus(&[1], &[0, 1], &sets).unwrap_err();
        assert!(
            matches!(&e, CheckError::OutsideCpuset { pid: 11, bad, allowed, .. }
                if bad == "1" && allowed == "0"),
            "{e:?}"
        );
        assert!(usable_cpus(&[0], &[0, 1], &sets).is_ok());
        // A cpuset naming offline CPUs allows only its online part.
        let e = usable_cpus(&[3], &[0, 1, 2], &[(5, vec![2, 3])]).unwrap_err();
        assert!(matches!(e, CheckError::Offline { .. }), "{e:?}");
    }

    #[test]
    fn an_unknown_cgroup_says_both_forms_it_accepts() {
        let t = tempfile::tempdir().unwrap();
        let e = cgroup_dir(&Root::new(t.path()), Path::new("/nope")).unwrap_err();
        assert!(
            e.to_string().contains("as the report prints it (/NAME)"),
            "{e}"
        );
        std::fs::write(t.path().join("cgroup.procs"), "1\n").unwrap();
        assert_eq!(cgroup_dir(&Root::host(), t.path()).unwrap(), t.path());
    }
}
