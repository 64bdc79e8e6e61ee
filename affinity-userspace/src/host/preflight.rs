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
        "missing privileges: {missing}; run as root (sudo affin-trace ...) or grant them: sudo setcap cap_bpf,cap_perfmon,cap_sys_nice+ep $(command -v affin-trace)"
    )]
    Privileges {
        /// Comma-separated capability names.
        missing: String,
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
    /// The kernel does not publish BTF.
    #[error(
        "{0} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF=y), which affin-trace needs to locate task_struct fields; use a distribution kernel built with BTF"
    )]
    NoBtf(String),
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
    fn privilege_error_says_how_to_fix_it() {
        let e = PreflightError::Privileges {
            missing: "CAP_BPF".into(),
        };
        assert!(e.to_string().contains("sudo"));
    }
}
