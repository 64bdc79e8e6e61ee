//! Checks made once, up front, before anything touches the system: privileges
//! and kernel support. Each failure says what is missing and how to fix it.

use crate::host::root::Root;

use thiserror::Error;

/// Linux capability numbers (include/uapi/linux/capability.h).
pub mod cap {
    /// CAP_SYS_ADMIN: implies everything BPF needs on older kernels.
    pub const SYS_ADMIN: u32 = 21;
    /// CAP_SYS_NICE: set another process's CPU affinity.
    pub const SYS_NICE: u32 = 23;
    /// CAP_PERFMON: attach tracing programs, read kernel memory.
    pub const PERFMON: u32 = 38;
    /// CAP_BPF: load programs, create maps.
    pub const BPF: u32 = 39;
}

/// A preflight failure.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// Missing privileges, with the list and the fix.
    #[error(
        "missing privileges: {missing}; run as root (sudo affin-trace ...), or, to trace without root, grant them: sudo setcap cap_bpf,cap_perfmon+ep $(command -v affin-trace) (then every user who can run that file can trace any process, pid 1 and root's included: keep it root-owned, mode 0750, executable only by a trusted group)"
    )]
    Privileges {
        /// Comma-separated capability names.
        missing: String,
    },
    /// --apply or revert without root.
    #[error(
        "changing CPU masks (--apply, revert) needs root, not only CAP_SYS_NICE: the revert records live in {dir}, which root owns and keeps closed to other users; run it with sudo (tracing alone works with CAP_BPF and CAP_PERFMON)"
    )]
    ApplyNeedsRoot {
        /// The state directory.
        dir: String,
    },
    /// Running setuid: refused, since the invoking user could steer root's writes.
    #[error(
        "refusing to run setuid (uid {uid}, euid {euid}): run it with sudo or file capabilities instead"
    )]
    Setuid {
        /// Real uid.
        uid: u32,
        /// Effective uid.
        euid: u32,
    },
    /// Running in a pid namespace below the kernel's initial one.
    #[error(
        "affin-trace is running in pid namespace {ns}, not the host's: the kernel reports host pids, so the pids given and shown here would name other tasks (pid 2 here is the host's kthreadd) and the figures would be wrong; run it in the host pid namespace (docker run --pid=host, Kubernetes hostPID: true, not under unshare --pid)"
    )]
    PidNamespace {
        /// `pid:[inode]`, as /proc/self/ns/pid reads.
        ns: String,
    },
    /// The kernel does not publish BTF.
    #[error(
        "{0} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y), which affin-trace needs to locate task_struct fields; use a distribution kernel built with BTF"
    )]
    NoBtf(String),
}

/// Inode of the kernel's initial pid namespace, PROC_PID_INIT_INO
/// (include/linux/proc_ns.h, fixed since Linux 3.8): whatever /proc this
/// process sees, /proc/self/ns/pid names its own namespace by this number.
pub const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// The pid namespace this process runs in, if it is not the initial one.
///
/// The BPF programs see host pids (`bpf_get_current_pid_tgid`, task_struct
/// `pid`), while /proc, the targets given and sched_setaffinity speak the
/// caller's namespace. Comparing /proc/self/ns/pid with /proc/1/ns/pid says
/// nothing inside a namespace (pid 1 is the namespace's own init); the
/// namespace inode does, and NSpid with more than one entry (seen when
/// /proc is the host's) confirms it.
pub fn foreign_pid_namespace(root: &Root) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(root.join("proc/self/ns/pid"))
        .ok()
        .map(|m| m.ino());
    let status = std::fs::read(root.join("proc/self/status")).unwrap_or_default();
    pid_namespace_of(ino, &String::from_utf8_lossy(&status))
}

/// [`foreign_pid_namespace`] on given values: `ino` of /proc/self/ns/pid,
/// the text of /proc/self/status.
pub fn pid_namespace_of(ino: Option<u64>, status: &str) -> Option<String> {
    let nested = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|v| v.split_whitespace().count() > 1);
    match ino {
        Some(i) if i != INIT_PID_NS_INO => Some(format!("pid:[{i}]")),
        _ if nested => Some(format!("pid:[{}]", ino.unwrap_or(0))),
        _ => None,
    }
}

/// Effective capability set of this process, from /proc/self/status `CapEff`.
pub fn effective_caps(root: &Root) -> u64 {
    std::fs::read_to_string(root.join("proc/self/status"))
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

/// Parses the `CapEff:` hex mask out of a /proc/<pid>/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Names of the capabilities needed to trace (and, with `apply`, to set
/// affinity) that `caps` lacks. CAP_SYS_ADMIN stands in for BPF and PERFMON.
pub fn missing_caps(caps: u64, apply: bool) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(cap::SYS_ADMIN) {
        if !has(cap::BPF) {
            missing.push("CAP_BPF");
        }
        if !has(cap::PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if apply && !has(cap::SYS_NICE) {
        missing.push("CAP_SYS_NICE");
    }
    missing
}

/// Privileges for changing CPU masks only (revert): CAP_SYS_NICE.
pub fn check_apply(root: &Root) -> Result<(), PreflightError> {
    let (uid, euid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::geteuid().as_raw(),
    );
    if uid != euid {
        return Err(PreflightError::Setuid { uid, euid });
    }
    if effective_caps(root) & (1u64 << cap::SYS_NICE) == 0 {
        return Err(PreflightError::Privileges {
            missing: "CAP_SYS_NICE".into(),
        });
    }
    apply_as_root(euid)
}

/// The capability model of apply: root only. Capabilities let a user
/// trace; changing masks also writes revert records that a later `revert`
/// (another user, another invocation) trusts, so they live in a directory
/// only root owns, and a capability-only user could neither create it nor
/// be trusted to have written it.
fn apply_as_root(euid: u32) -> Result<(), PreflightError> {
    if euid != 0 {
        return Err(PreflightError::ApplyNeedsRoot {
            // apply::state::STATE_DIR (host/ does not reach into apply/).
            dir: "/run/affin-trace".into(),
        });
    }
    Ok(())
}

/// Everything checked before tracing. `apply` adds the affinity privilege.
pub fn check(root: &Root, apply: bool) -> Result<(), PreflightError> {
    let (uid, euid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::geteuid().as_raw(),
    );
    if uid != euid {
        return Err(PreflightError::Setuid { uid, euid });
    }
    let missing = missing_caps(effective_caps(root), apply);
    if !missing.is_empty() {
        return Err(PreflightError::Privileges {
            missing: missing.join(", "),
        });
    }
    if apply {
        apply_as_root(euid)?;
    }
    if let Some(ns) = foreign_pid_namespace(root) {
        return Err(PreflightError::PidNamespace { ns });
    }
    if !root.join(crate::kernel::btf::VMLINUX_BTF).exists() {
        return Err(PreflightError::NoBtf(
            crate::kernel::btf::VMLINUX_BTF.into(),
        ));
    }
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raising it is
    // harmless where memcg accounting is used instead.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(s), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn root_lacks_nothing() {
        assert!(missing_caps(u64::MAX, true).is_empty());
    }

    #[test]
    fn unprivileged_lacks_everything_listed_at_once() {
        assert_eq!(
            missing_caps(0, true),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_SYS_NICE"]
        );
        assert_eq!(missing_caps(0, false), vec!["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn bpf_and_perfmon_are_enough_to_trace() {
        let caps = (1 << cap::BPF) | (1 << cap::PERFMON);
        assert!(missing_caps(caps, false).is_empty());
        assert_eq!(missing_caps(caps, true), vec!["CAP_SYS_NICE"]);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        assert!(missing_caps(1 << cap::SYS_ADMIN, false).is_empty());
    }

    #[test]
    fn a_pid_namespace_is_seen_by_its_inode_or_by_nspid() {
        let host = "Name:\tx\nNSpid:\t4242\n";
        assert_eq!(pid_namespace_of(Some(INIT_PID_NS_INO), host), None);
        assert_eq!(pid_namespace_of(None, host), None);
        // Inside `unshare --pid --mount-proc`: its own /proc shows one pid.
        assert_eq!(
            pid_namespace_of(Some(4026532281), "NSpid:\t1\n").as_deref(),
            Some("pid:[4026532281]")
        );
        // The host's /proc, a nested task: two pids.
        assert!(pid_namespace_of(None, "NSpid:\t4242\t1\n").is_some());
        let e = PreflightError::PidNamespace {
            ns: "pid:[4026532281]".into(),
        };
        assert!(e.to_string().contains("--pid=host"), "{e}");
    }

    #[test]
    fn apply_needs_root_and_says_so_rather_than_blame_the_directory() {
        assert!(apply_as_root(0).is_ok());
        let e = apply_as_root(1000).unwrap_err().to_string();
        assert!(e.contains("needs root") && e.contains("sudo"), "{e}");
        assert!(!e.contains("remove"), "{e}");
        let p = PreflightError::Privileges {
            missing: "CAP_BPF".into(),
        }
        .to_string();
        assert!(p.contains("pid 1") && p.contains("0750"), "{p}");
    }

    #[test]
    fn privilege_error_says_how_to_fix_it() {
        let e = PreflightError::Privileges {
            missing: "CAP_BPF".into(),
        };
        assert!(e.to_string().contains("sudo"));
    }
}
