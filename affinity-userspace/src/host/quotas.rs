//! Every cgroup with a CPU quota in the cpu controller's hierarchy: what
//! `affin-trace serve` traces by default, found again at each refresh as
//! containers come and go.
//!
//! Reads, under the hierarchy's mount: each directory's `cpu.cfs_quota_us`
//! and `cpu.cfs_period_us` (v1) or `cpu.max` (v2), through
//! [`crate::host::cgroup::quota_at`]. Symlinks are not followed; the walk is
//! bounded in depth (a kubepods container is 4 levels down with the
//! systemd driver) and in directories visited.

use std::path::{Path, PathBuf};

use crate::host::cgroup::{CgroupVersion, CpuQuota, quota_at};

/// Deepest level walked below the mount.
pub const MAX_DEPTH: usize = 12;

/// Most directories visited in one walk: a node with thousands of cgroups
/// is walked in part rather than stall the agent.
pub const MAX_DIRS: usize = 100_000;

/// One cgroup with a quota of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaCgroup {
    /// Its directory under the mount.
    pub dir: PathBuf,
    /// Its path in the hierarchy ("/kubepods/burstable/pod.../...").
    pub cgroup: String,
    pub quota: CpuQuota,
}

/// Every directory under `mount` (the hierarchy's top, not itself) whose
/// own quota is set, sorted by path.
pub fn with_quota(version: CgroupVersion, mount: &Path) -> Vec<QuotaCgroup> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, usize)> = vec![(mount.to_path_buf(), 0)];
    let mut visited = 0;
    while let Some((dir, depth)) = stack.pop() {
        visited += 1;
        if visited > MAX_DIRS {
            break;
        }
        if depth > 0
            && let Ok(Some(quota)) = quota_at(version, &dir)
        {
            out.push(QuotaCgroup {
                cgroup: hierarchy_path(mount, &dir),
                dir: dir.clone(),
                quota,
            });
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
    out
}

/// `dir`'s path in the hierarchy mounted at `mount` ("/" for the top).
pub fn hierarchy_path(mount: &Path, dir: &Path) -> String {
    match dir.strip_prefix(mount) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => dir.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::put;

    #[test]
    fn v1_and_v2_trees_give_the_cgroups_with_a_quota_of_their_own() {
        let d = tempfile::tempdir().unwrap();
        let v1 = d.path().join("cpu");
        put(&v1, "cpu.cfs_quota_us", "-1\n");
        put(&v1, "cpu.cfs_period_us", "100000\n");
        put(&v1, "kubepods/cpu.cfs_quota_us", "-1\n");
        put(
            &v1,
            "kubepods/burstable/podab12cd34/cpu.cfs_quota_us",
            "50000\n",
        );
        put(
            &v1,
            "kubepods/burstable/podab12cd34/cpu.cfs_period_us",
            "100000\n",
        );
        put(
            &v1,
            "kubepods/burstable/podab12cd34/0123abcd/cpu.cfs_quota_us",
            "50000\n",
        );
        put(
            &v1,
            "kubepods/burstable/podab12cd34/0123abcd/cpu.cfs_period_us",
            "100000\n",
        );
        let got = with_quota(CgroupVersion::V1, &v1);
        let names: Vec<&str> = got.iter().map(|q| q.cgroup.as_str()).collect();
        assert_eq!(
            names,
            [
                "/kubepods/burstable/podab12cd34",
                "/kubepods/burstable/podab12cd34/0123abcd"
            ]
        );
        assert_eq!(got[1].quota.cores(), 0.5);

        let v2 = d.path().join("unified");
        put(&v2, "kubepods.slice/cpu.max", "max 100000\n");
        put(
            &v2,
            "kubepods.slice/kubepods-podab12.slice/cpu.max",
            "200000 100000\n",
        );
        let got = with_quota(CgroupVersion::V2, &v2);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cgroup, "/kubepods.slice/kubepods-podab12.slice");
        assert_eq!(got[0].quota.cores(), 2.0);
    }
}
