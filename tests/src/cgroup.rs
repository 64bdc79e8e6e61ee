//! A CPU-limited cgroup for the root integration tests, removed on drop.
//! Test code, so it lives here and not in the product: `affinity::host::
//! cgroup::cpu_hierarchy` only says where one can be made.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use affinity::host::{
    Root,
    cgroup::{CgroupVersion, CpuStat, cpu_hierarchy, read_stat_at},
};

/// A CPU-limited cgroup, removed on drop.
///
/// Created in the v1 cpu hierarchy when one is mounted, else under the v2
/// root (enabling `+cpu` in the root's `cgroup.subtree_control` if needed,
/// and disabling it again on drop).
#[derive(Debug)]
pub struct TestCgroup {
    dir: PathBuf,
    parent: PathBuf,
    version: CgroupVersion,
    enabled_cpu_in: Option<PathBuf>,
}

impl TestCgroup {
    /// Creates cgroup `name` at the top of the cpu hierarchy with a quota
    /// of `quota_us` per `period_us`. A leftover of the same name (from a
    /// crashed run) is removed first.
    pub fn create_v1_cpu(name: &str, quota_us: u64, period_us: u64) -> Result<Self, String> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "test cgroup name {name:?} must be one path component (not empty, no '/', not . or ..)"
            ));
        }
        let (version, parent) = cpu_hierarchy(&Root::host()).map_err(|e| e.to_string())?;
        let dir = parent.join(name);
        if dir.exists() {
            drop(TestCgroup {
                dir: dir.clone(),
                parent: parent.clone(),
                version,
                enabled_cpu_in: None,
            });
        }
        let mut enabled_cpu_in = None;
        if version == CgroupVersion::V2 {
            let ctl = parent.join("cgroup.subtree_control");
            let text = std::fs::read_to_string(&ctl)
                .map_err(|e| format!("cannot read {}: {e}", ctl.display()))?;
            if !text.split_whitespace().any(|c| c == "cpu") {
                write(&ctl, "+cpu")?;
                enabled_cpu_in = Some(ctl);
            }
        }
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "cannot create {}: {e}; this needs root and a writable cgroup filesystem",
                dir.display()
            )
        })?;
        // From here on, Drop cleans up if a write fails.
        let cg = TestCgroup {
            dir,
            parent,
            version,
            enabled_cpu_in,
        };
        match version {
            CgroupVersion::V1 => {
                write(&cg.dir.join("cpu.cfs_period_us"), &period_us.to_string())?;
                write(&cg.dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
            }
            CgroupVersion::V2 => {
                write(&cg.dir.join("cpu.max"), &format!("{quota_us} {period_us}"))?;
            }
        }
        Ok(cg)
    }

    /// Creates cgroup `name` inside this one with its own quota
    /// (`quota_us` per `period_us`; `None`: unlimited, -1 / `max`). On v1
    /// the kernel refuses a child quota looser than its parent's, so a
    /// parent that binds tighter than its child is one with a quota over a
    /// child without. Remove the child first (drop it before the parent).
    pub fn child(&self, name: &str, quota: Option<(u64, u64)>) -> Result<Self, String> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(format!(
                "child cgroup name {name:?} must be one path component"
            ));
        }
        let dir = self.dir.join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}; this needs root", dir.display()))?;
        let cg = TestCgroup {
            dir,
            parent: self.dir.clone(),
            version: self.version,
            enabled_cpu_in: None,
        };
        if self.version == CgroupVersion::V2 {
            // The child's cpu.max exists only with cpu enabled below us.
            write(&self.dir.join("cgroup.subtree_control"), "+cpu")?;
        }
        match (self.version, quota) {
            (CgroupVersion::V1, Some((q, p))) => {
                write(&cg.dir.join("cpu.cfs_period_us"), &p.to_string())?;
                write(&cg.dir.join("cpu.cfs_quota_us"), &q.to_string())?;
            }
            (CgroupVersion::V2, Some((q, p))) => {
                write(&cg.dir.join("cpu.max"), &format!("{q} {p}"))?;
            }
            (_, None) => {}
        }
        Ok(cg)
    }

    /// Sets the cgroup's burst (us of unused quota carried into a later
    /// period): v1 `cpu.cfs_burst_us`, v2 `cpu.max.burst`.
    pub fn set_burst(&self, burst_us: u64) -> Result<(), String> {
        let file = match self.version {
            CgroupVersion::V1 => "cpu.cfs_burst_us",
            CgroupVersion::V2 => "cpu.max.burst",
        };
        write(&self.dir.join(file), &burst_us.to_string())
    }

    /// Gives the cgroup the largest CPU weight (v1 `cpu.shares` 262144, v2
    /// `cpu.weight` 10000): against other work on the machine, at weight
    /// 1024 or 100, it then gets its CPUs about as if they were idle, so a
    /// truth by construction that assumes free CPUs holds on a busy one.
    pub fn favour(&self) -> Result<(), String> {
        match self.version {
            CgroupVersion::V1 => write(&self.dir.join("cpu.shares"), "262144"),
            CgroupVersion::V2 => write(&self.dir.join("cpu.weight"), "10000"),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Which hierarchy it was created in.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Its counters now.
    pub fn stat(&self) -> Result<CpuStat, String> {
        read_stat_at(&self.dir).map_err(|e| e.to_string())
    }
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| {
        format!(
            "cannot write {value:?} to {}: {e}; this needs root, a writable cgroup filesystem, \
             and (v1) a quota no looser than the parent's, with 1 ms <= quota and \
             1 ms <= period <= 1 s",
            path.display()
        )
    })
}

impl Drop for TestCgroup {
    /// Moves remaining processes to the parent, then removes the directory
    /// (retrying briefly: a cgroup stays busy until exiting tasks are
    /// released). Errors are ignored; nothing here panics.
    fn drop(&mut self) {
        let procs = self.dir.join("cgroup.procs");
        let to = self.parent.join("cgroup.procs");
        for _ in 0..10 {
            let Ok(text) = std::fs::read_to_string(&procs) else {
                break;
            };
            let pids: Vec<&str> = text.split_whitespace().collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = std::fs::write(&to, pid);
            }
        }
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if let Some(ctl) = &self.enabled_cpu_in {
            // Fails (harmlessly) when another child still uses the controller.
            let _ = std::fs::write(ctl, "-cpu");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_test_cgroup_names_are_refused_without_touching_anything() {
        for n in ["", "a/b", "..", "."] {
            let e = TestCgroup::create_v1_cpu(n, 50_000, 100_000).unwrap_err();
            assert!(e.contains("must be one path component"), "{e}");
        }
    }
}
