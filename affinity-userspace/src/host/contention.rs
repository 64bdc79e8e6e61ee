//! What the host says about CPU contention: pressure stall information
//! (`cpu.pressure`, Documentation/accounting/psi.rst) and the cgroup paths
//! behind the kernel ids the programs record for neighbours.
//!
//! The programs read a neighbour's cgroup in the cpu controller's
//! hierarchy (`task->cgroups->subsys[cpu_cgrp_id]`): on a hybrid host the
//! cpu controller is on a v1 mount and the unified hierarchy holds no
//! controllers. The id is the cgroup directory's inode number, so the path
//! is found by walking that controller's mount.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::PressureDelta;

/// The machine's CPU pressure file.
pub const HOST_CPU_PRESSURE: &str = "/proc/pressure/cpu";

// PSI is parsed where the throttling reads it too (host::cgroup): one
// parser, one `Pressure`.
pub use crate::host::cgroup::read_pressure;
pub use crate::model::cgroup::Pressure;

/// Growth between two reads.
pub fn pressure_delta(before: &Pressure, after: &Pressure) -> PressureDelta {
    PressureDelta {
        some_us: after.some_total_us.saturating_sub(before.some_total_us),
        full_us: match (before.full_total_us, after.full_total_us) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        },
    }
}

/// The `cpu.pressure` of a cgroup directory when it is a v2 one (v1
/// directories have none).
pub fn cgroup_pressure_file(dir: &Path) -> Option<PathBuf> {
    let f = dir.join("cpu.pressure");
    f.exists().then_some(f)
}

/// Where the cpu controller's hierarchy is mounted, from mountinfo text:
/// a v1 `cgroup` mount whose options name `cpu`, else a `cgroup2` mount.
pub fn cpu_hierarchy_mount(mountinfo: &str) -> Option<PathBuf> {
    let mut v2 = None;
    for line in mountinfo.lines() {
        // "id parent maj:min root mountpoint opts ... - fstype source superopts"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (fstype, super_opts) = (r.next(), r.nth(1).unwrap_or(""));
        let Some(mountpoint) = left.split_whitespace().nth(4) else {
            continue;
        };
        match fstype {
            Some("cgroup") if super_opts.split(',').any(|o| o == "cpu") => {
                return Some(PathBuf::from(mountpoint));
            }
            Some("cgroup2") if v2.is_none() => v2 = Some(PathBuf::from(mountpoint)),
            _ => {}
        }
    }
    v2
}

/// Most directories walked when resolving cgroup ids.
const MAX_CGROUP_DIRS: usize = 20_000;

/// Paths (relative to the hierarchy's mount, "/" for its root) of the
/// cgroup directories whose inode numbers are in `ids`.
pub fn cgroup_paths(mount: &Path, ids: &[u64]) -> BTreeMap<u64, String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![mount.to_path_buf()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        seen += 1;
        if seen > MAX_CGROUP_DIRS || out.len() == ids.len() {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        if ids.contains(&meta.ino()) {
            let rel = dir.strip_prefix(mount).unwrap_or(&dir);
            out.insert(meta.ino(), format!("/{}", rel.display()));
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Resolves the neighbours' cgroup ids to paths in the cpu controller's
/// hierarchy: `(tgid, id)` in, tgid -> path out ("" where unknown).
pub fn neighbour_cgroups(ids: &[(u32, u64)]) -> BTreeMap<u32, String> {
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| cpu_hierarchy_mount(&m));
    let wanted: Vec<u64> = ids
        .iter()
        .map(|&(_, id)| id)
        .filter(|&id| id != 0)
        .collect();
    let paths = match &mount {
        Some(m) if !wanted.is_empty() => cgroup_paths(m, &wanted),
        _ => BTreeMap::new(),
    };
    ids.iter()
        .map(|&(tgid, id)| (tgid, paths.get(&id).cloned().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_totals_and_deltas() {
        let parse_pressure =
            |text: &str| crate::host::cgroup::parse_pressure(Path::new("cpu.pressure"), text).ok();
        let a = parse_pressure(
            "some avg10=1.00 avg60=0.50 avg300=0.10 total=1000\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=200\n",
        )
        .unwrap();
        assert_eq!(a.some_total_us, 1000);
        assert_eq!(a.full_total_us, Some(200));
        let b = parse_pressure("some avg10=9 avg60=9 avg300=9 total=8001000\n").unwrap();
        assert_eq!(b.full_total_us, None);
        let d = pressure_delta(&a, &b);
        assert_eq!(d.some_us, 8_000_000);
        assert_eq!(d.full_us, None);
        assert_eq!(parse_pressure("garbage"), None);
    }

    #[test]
    fn the_cpu_controller_mount_is_found_on_a_hybrid_host() {
        // This host's layout: v1 controllers, a unified hierarchy without
        // controllers.
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
            33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n";
        assert_eq!(
            cpu_hierarchy_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/cpu"))
        );
        let joint = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            cpu_hierarchy_mount(joint),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cpu_hierarchy_mount(v2),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cpu_hierarchy_mount(""), None);
    }

    #[test]
    fn cgroup_ids_resolve_to_paths_by_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        let ino = std::fs::metadata(d.path().join("a/b")).unwrap().ino();
        let root = std::fs::metadata(d.path()).unwrap().ino();
        let got = cgroup_paths(d.path(), &[ino, root, 12345678]);
        assert_eq!(got.get(&ino).map(String::as_str), Some("/a/b"));
        assert_eq!(got.get(&root).map(String::as_str), Some("/"));
        assert_eq!(got.len(), 2);
    }
}
