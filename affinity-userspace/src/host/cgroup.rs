//! The CFS bandwidth limit (CPU quota) in force on a process, and its
//! throttling counters, read through a root-path seam so fixture trees under
//! `tests/fixtures/cgroup/` stand in for the machine.
//!
//! Reads, all under `<root>`:
//! - `proc/<pid>/cgroup`: the process's cgroup in each hierarchy (man 7 cgroups);
//! - `proc/self/mountinfo`: where each hierarchy is mounted and which part of
//!   it the mount shows (field 4, "root"), so cgroup namespaces and
//!   containers that bind-mount their own cgroup resolve (man 5 proc);
//! - cgroup v1, cpu controller (mounted alone as `cpu` or combined as
//!   `cpu,cpuacct`): `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `cpu.stat`
//!   (`nr_periods`, `nr_throttled`, `throttled_time` in ns) and, where the
//!   kernel has it, `cpu.stat.local` (Documentation/scheduler/sched-bwc.rst);
//! - cgroup v2: `cgroup.controllers`, `cpu.max` (`max 100000` or
//!   `50000 100000`), `cpu.stat` (`nr_periods`, `nr_throttled`,
//!   `throttled_usec`, `usage_usec`), `cpu.stat.local` and `cpu.pressure`
//!   (Documentation/admin-guide/cgroup-v2.rst, Documentation/accounting/psi.rst).
//!
//! Hybrid hierarchies (v1 controllers plus a v2 tree without the cpu
//! controller, as systemd's "hybrid" mode mounts them) resolve to the v1 cpu
//! hierarchy for the quota and to the v2 tree for `cpu.pressure`.
//!
//! Produces a [`CpuCgroup`]: every cgroup from the target's up to the mount
//! root with its quota, and the tightest one as the [`CgroupLimit`] in force;
//! [`read_stat`] snapshots its counters as a [`CpuStat`], and
//! [`CpuStat::delta`] turns two snapshots into the throttling over a trace
//! window. [`cpu_hierarchy`] says where a limited cgroup can be created (the
//! tests crate's `TestCgroup` makes real ones).

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::host::root::Root;

pub use crate::model::cgroup::{
    CgroupLevel, CgroupLimit, CgroupVersion, CpuCgroup, CpuQuota, CpuStat, CpuStatDelta, Pressure,
};

/// Why the cgroup of a process, or its counters, could not be read.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// A /proc file of the target (or our mountinfo) could not be read.
    #[error(
        "cannot read {path}: {source}; is process {pid} still running, and is /proc mounted \
         (or the --root tree complete)?"
    )]
    Proc {
        path: PathBuf,
        pid: u32,
        source: procfs::ProcError,
    },
    /// Our mountinfo could not be read.
    #[error(
        "cannot read {path}: {source}; is /proc mounted (or does the --root tree have \
         proc/self/mountinfo)?"
    )]
    MountInfo {
        path: PathBuf,
        source: procfs::ProcError,
    },
    /// A cgroup file could not be read.
    #[error(
        "cannot read {path}: {source}; the process may have moved to another cgroup or exited \
         (run again), or the cgroup filesystem is not readable here"
    )]
    Read { path: PathBuf, source: io::Error },
    /// A cgroup file did not hold what the kernel writes.
    #[error("{path}: expected {what}, found {text:?}; is this really a cgroup file?")]
    Parse {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    /// The process is in neither a v1 cpu hierarchy nor the v2 one.
    #[error(
        "{path} lists neither a v1 hierarchy with the cpu controller nor a v2 (0::) line; \
         without one no CPU quota can apply to process {pid}"
    )]
    NoHierarchy { path: PathBuf, pid: u32 },
    /// The hierarchy holding the process is not mounted where we can see it.
    #[error(
        "no {fs} mount in {mountinfo} shows cgroup {cgroup:?}; mount it (e.g. `mount -t cgroup \
         -o cpu cgroup /sys/fs/cgroup/cpu`, or `mount -t cgroup2 none /sys/fs/cgroup`), or run \
         in the target's cgroup namespace"
    )]
    NoMount {
        fs: &'static str,
        cgroup: String,
        mountinfo: PathBuf,
    },
    /// Neither hierarchy offers the cpu controller (to create a cgroup in).
    #[error(
        "no cpu controller to create a test cgroup in: {0} shows neither a v1 cgroup mount with \
         the cpu controller nor a cgroup2 mount listing cpu in cgroup.controllers"
    )]
    NoCpuController(PathBuf),
}

/// One cgroup mount from mountinfo, with the octal escapes undone.
#[derive(Clone, Debug)]
struct Mount {
    /// Which part of the hierarchy the mount shows (mountinfo field 4).
    root: String,
    /// Where it is mounted, in our mount namespace.
    mount_point: PathBuf,
    /// v1 (`cgroup`) or v2 (`cgroup2`).
    version: CgroupVersion,
    /// v1 controllers (and `name=` options) from the super options.
    options: Vec<String>,
}

impl Mount {
    fn has(&self, controller: &str) -> bool {
        self.options.iter().any(|o| o == controller)
    }

    /// The mount's directory under `root` (the seam).
    fn dir(&self, root: &Root) -> PathBuf {
        root.join(&self.mount_point)
    }
}

/// Undoes the `\ooo` escapes mountinfo uses for space, tab, newline and
/// backslash (fs/proc_namespace.c, `mangle`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(v) = oct
            .and_then(|o| std::str::from_utf8(o).ok())
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts visible through `<root>/proc/self/mountinfo`.
fn cgroup_mounts(root: &Root) -> Result<(PathBuf, Vec<Mount>), CgroupError> {
    use procfs::FromRead as _;
    let path = root.join("proc/self/mountinfo");
    let infos =
        procfs::process::MountInfos::from_file(&path).map_err(|source| CgroupError::Proc {
            path: path.clone(),
            pid: std::process::id(),
            source,
        })?;
    let mounts = infos
        .into_iter()
        .filter_map(|m| {
            let version = match m.fs_type.as_str() {
                "cgroup" => CgroupVersion::V1,
                "cgroup2" => CgroupVersion::V2,
                _ => return None,
            };
            let mut options: Vec<String> = m.super_options.into_keys().collect();
            options.sort();
            Some(Mount {
                root: unescape(&m.root),
                mount_point: PathBuf::from(unescape(&m.mount_point.to_string_lossy())),
                version,
                options,
            })
        })
        .collect();
    Ok((path, mounts))
}

/// `cgroup` relative to `base` when `base` is it or one of its ancestors
/// (by whole components), e.g. ("/a/b", "/a") -> "b", ("/a", "/a") -> "".
fn relative<'a>(cgroup: &'a str, base: &str) -> Option<&'a str> {
    let base = base.trim_end_matches('/');
    let rest = cgroup.strip_prefix(base)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// The mount of `version` (with `controller`, for v1) that shows `cgroup`.
/// Several mounts may: prefer the one showing the most of the hierarchy
/// (shortest root), so the walk up sees the most ancestors.
fn mount_for<'m>(
    mounts: &'m [Mount],
    version: CgroupVersion,
    controller: Option<&str>,
    cgroup: &str,
) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| m.version == version && controller.is_none_or(|c| m.has(c)))
        .filter(|m| relative(cgroup, &m.root).is_some())
        .min_by_key(|m| m.root.len())
}

/// The cgroup directory for `given`, as a user may type it: a directory
/// that holds `cgroup.procs` as it is, or a path inside a hierarchy
/// ("/mypod", the form the report prints), looked up in each cgroup mount
/// under `root`: the v1 cpu controller's first (the hierarchy the quota and
/// the report come from), then cgroup2, then the other v1 hierarchies.
/// `None` when no mount holds it.
pub fn locate(root: &Root, given: &Path) -> Option<PathBuf> {
    if given.join("cgroup.procs").is_file() {
        return Some(given.to_path_buf());
    }
    let text = given.to_str()?;
    if !text.starts_with('/') {
        return None;
    }
    let (_, mut mounts) = cgroup_mounts(root).ok()?;
    let rank = |m: &Mount| match (m.version, m.has("cpu")) {
        (CgroupVersion::V1, true) => 0,
        (CgroupVersion::V2, _) => 1,
        _ => 2,
    };
    mounts.sort_by_key(|m| (rank(m), m.root.len()));
    mounts.iter().find_map(|m| {
        let rel = relative(text, &m.root)?;
        let dir = m.dir(root).join(rel);
        dir.join("cgroup.procs").is_file().then_some(dir)
    })
}

/// Reads a small file; `Ok(None)` when it does not exist.
fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, what: &'static str, text: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        what,
        text: text.trim().to_string(),
    }
}

/// v1 quota of one cgroup: `cpu.cfs_quota_us` is -1 when unlimited.
fn quota_v1(dir: &Path) -> Result<Option<CpuQuota>, CgroupError> {
    let qpath = dir.join("cpu.cfs_quota_us");
    let Some(qtext) = read_opt(&qpath)? else {
        return Ok(None);
    };
    let quota: i64 = qtext
        .trim()
        .parse()
        .map_err(|_| bad(&qpath, "a quota in us or -1", &qtext))?;
    if quota < 0 {
        return Ok(None);
    }
    let ppath = dir.join("cpu.cfs_period_us");
    let ptext = read(&ppath)?;
    let period_us: u64 = ptext
        .trim()
        .parse()
        .map_err(|_| bad(&ppath, "a period in us", &ptext))?;
    if period_us == 0 {
        return Err(bad(&ppath, "a non-zero period", &ptext));
    }
    Ok(Some(CpuQuota {
        quota_us: quota.unsigned_abs(),
        period_us,
    }))
}

/// v2 quota of one cgroup: `cpu.max` is "$MAX $PERIOD", `max` = unlimited;
/// no file = the cpu controller is not enabled here (or this is the root).
fn quota_v2(dir: &Path) -> Result<Option<CpuQuota>, CgroupError> {
    let path = dir.join("cpu.max");
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    let mut f = text.split_whitespace();
    let what = "\"max PERIOD\" or \"QUOTA PERIOD\"";
    let quota = f.next().ok_or_else(|| bad(&path, what, &text))?;
    if quota == "max" {
        return Ok(None);
    }
    let quota_us: u64 = quota.parse().map_err(|_| bad(&path, what, &text))?;
    let period_us: u64 = f
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|&p| p > 0)
        .ok_or_else(|| bad(&path, what, &text))?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us,
    }))
}

/// The cgroup paths from `cgroup` up to `base` (inclusive), target first.
fn ancestors(cgroup: &str, base: &str) -> Vec<String> {
    let mut out = vec![cgroup.to_string()];
    let mut cur = cgroup.to_string();
    while cur.trim_end_matches('/') != base.trim_end_matches('/') {
        match cur.rfind('/') {
            Some(0) => cur = "/".to_string(),
            Some(i) => cur.truncate(i),
            None => break,
        }
        out.push(cur.clone());
        if cur == "/" {
            break;
        }
    }
    out
}

/// Resolves the CPU quota in force on process `pid`, reading everything
/// under `root` ("/" on a live system).
///
/// The cgroup path from `/proc/<pid>/cgroup` is mapped into the mount whose
/// mountinfo root is a prefix of it (the path is relative to our cgroup
/// namespace, and so is that root). Every level from the target up to the
/// mount root is read; the kernel enforces every quota on the path
/// (sched-bwc.rst, "Hierarchical considerations"), so the tightest in CPUs
/// is the one in force. On a tie the level nearest the target wins.
pub fn resolve(root: &Root, pid: u32) -> Result<CpuCgroup, CgroupError> {
    let (cg_path, groups) = read_groups(root, pid)?;
    let (mountinfo, mounts) = cgroup_mounts(root)?;
    let v1_cpu = groups
        .0
        .iter()
        .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == "cpu"));
    let v2 = groups.0.iter().find(|g| g.hierarchy == 0);
    let v2_mount = v2.and_then(|g| {
        mount_for(&mounts, CgroupVersion::V2, None, &g.pathname).map(|m| (m, g.pathname.as_str()))
    });
    let pressure_dir = v2_mount.and_then(|(m, cg)| pressure_dir(root, m, cg));

    let mut notes = Vec::new();
    let (version, cgroup, mount) = match (v1_cpu, v2) {
        (Some(g), _) => {
            let m = mount_for(&mounts, CgroupVersion::V1, Some("cpu"), &g.pathname).ok_or_else(
                || CgroupError::NoMount {
                    fs: "cgroup (v1, cpu controller)",
                    cgroup: g.pathname.clone(),
                    mountinfo: mountinfo.clone(),
                },
            )?;
            (CgroupVersion::V1, g.pathname.clone(), m)
        }
        (None, Some(g)) => {
            let (m, _) = v2_mount.ok_or_else(|| CgroupError::NoMount {
                fs: "cgroup2",
                cgroup: g.pathname.clone(),
                mountinfo: mountinfo.clone(),
            })?;
            if !v2_has_cpu(root, m)? {
                notes.push(format!(
                    "the v2 hierarchy at {} has no cpu controller and no v1 cpu hierarchy holds \
                     process {pid}: no CPU quota can apply",
                    m.mount_point.display()
                ));
            }
            (CgroupVersion::V2, g.pathname.clone(), m)
        }
        (None, None) => return Err(CgroupError::NoHierarchy { path: cg_path, pid }),
    };

    let levels = read_levels(root, version, &cgroup, mount, &mut notes)?;
    let mut limit = tightest_limit(version, &cgroup, &levels, pressure_dir.as_ref());
    if let Some(l) = limit.as_mut() {
        l.burst_us = burst_at(version, &l.dir)?;
        l.cpuset_cpus = cpuset_cpus(root, &groups, &mounts);
    }
    Ok(CpuCgroup {
        pid,
        version,
        cgroup,
        levels,
        limit,
        pressure_dir,
        notes,
    })
}

/// `<root>/proc/<pid>/cgroup`: the process's cgroup in each hierarchy.
fn read_groups(root: &Root, pid: u32) -> Result<(PathBuf, procfs::ProcessCGroups), CgroupError> {
    use procfs::FromRead as _;
    let path = root.join(format!("proc/{pid}/cgroup"));
    let groups = procfs::ProcessCGroups::from_file(&path).map_err(|source| CgroupError::Proc {
        path: path.clone(),
        pid,
        source,
    })?;
    Ok((path, groups))
}

/// The target's v2 cgroup directory, for cpu.pressure (PSI works without
/// the cpu controller; the root's pressure is the whole machine's, so it is
/// skipped).
fn pressure_dir(root: &Root, m: &Mount, cgroup: &str) -> Option<PathBuf> {
    let dir = m.dir(root).join(relative(cgroup, &m.root)?);
    (cgroup != "/" && dir.join("cpu.pressure").is_file()).then_some(dir)
}

/// The v2 mount's root lists the cpu controller in `cgroup.controllers`.
fn v2_has_cpu(root: &Root, m: &Mount) -> Result<bool, CgroupError> {
    let controllers = read_opt(&m.dir(root).join("cgroup.controllers"))?;
    Ok(controllers.is_some_and(|c| c.split_whitespace().any(|c| c == "cpu")))
}

/// Every level from `cgroup` up to the mount's root with its own quota,
/// target first; notes when the mount shows only part of the hierarchy.
fn read_levels(
    root: &Root,
    version: CgroupVersion,
    cgroup: &str,
    mount: &Mount,
    notes: &mut Vec<String>,
) -> Result<Vec<CgroupLevel>, CgroupError> {
    let base = mount.root.as_str();
    if base != "/" {
        notes.push(format!(
            "only the part of the hierarchy under {base} is mounted here ({}): a tighter quota \
             above it would not be seen",
            mount.mount_point.display()
        ));
    }
    let mount_dir = mount.dir(root);
    let mut levels = Vec::new();
    for cg in ancestors(cgroup, base) {
        let rel = relative(&cg, base).unwrap_or_default();
        let dir = mount_dir.join(rel);
        if levels.is_empty() && !dir.is_dir() {
            return Err(CgroupError::Read {
                path: dir,
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        }
        let quota = match version {
            CgroupVersion::V1 => quota_v1(&dir)?,
            CgroupVersion::V2 => quota_v2(&dir)?,
        };
        levels.push(CgroupLevel {
            cgroup: cg,
            dir,
            quota,
        });
    }
    Ok(levels)
}

/// The tightest quota on the path is the one in force (every quota on it
/// is enforced); on a tie the level nearest the target wins.
fn tightest_limit(
    version: CgroupVersion,
    cgroup: &str,
    levels: &[CgroupLevel],
    pressure_dir: Option<&PathBuf>,
) -> Option<CgroupLimit> {
    let mut tightest: Option<&CgroupLevel> = None;
    for l in levels {
        if let Some(q) = &l.quota
            && tightest
                .and_then(|t| t.quota.as_ref())
                .is_none_or(|t| q.is_tighter_than(t))
        {
            tightest = Some(l);
        }
    }
    let l = tightest?;
    Some(CgroupLimit {
        version,
        cgroup: l.cgroup.clone(),
        dir: l.dir.clone(),
        quota: l.quota?,
        target_cgroup: cgroup.to_string(),
        target_dir: levels.first()?.dir.clone(),
        pressure_dir: pressure_dir.cloned(),
        burst_us: None,
        cpuset_cpus: None,
    })
}

/// The burst set on one cgroup directory: v2 `cpu.max.burst`, v1
/// `cpu.cfs_burst_us` (us; `None` where the kernel has no burst).
pub fn burst_at(version: CgroupVersion, dir: &Path) -> Result<Option<u64>, CgroupError> {
    let path = dir.join(match version {
        CgroupVersion::V1 => "cpu.cfs_burst_us",
        CgroupVersion::V2 => "cpu.max.burst",
    });
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| bad(&path, "a burst in us", &text))
}

/// The CPUs the process's cgroup may run on: the v1 cpuset hierarchy's
/// `cpuset.effective_cpus` where one holds it, else the v2 cgroup's
/// `cpuset.cpus.effective` (its nearest level that has the file: the
/// cpuset controller need not be enabled at the leaf). `None` when
/// neither is readable (the caller falls back to the online CPUs).
fn cpuset_cpus(root: &Root, groups: &procfs::ProcessCGroups, mounts: &[Mount]) -> Option<Vec<u32>> {
    let read = |dir: &Path, file: &str| {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        crate::model::cpulist::parse(text.trim())
            .ok()
            .filter(|c| !c.is_empty())
    };
    let v1 = groups
        .0
        .iter()
        .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == "cpuset"));
    if let Some(g) = v1
        && let Some(m) = mount_for(mounts, CgroupVersion::V1, Some("cpuset"), &g.pathname)
    {
        let dir = m.dir(root).join(relative(&g.pathname, &m.root)?);
        if let Some(c) = read(&dir, "cpuset.effective_cpus") {
            return Some(c);
        }
    }
    let g = groups.0.iter().find(|g| g.hierarchy == 0)?;
    let m = mount_for(mounts, CgroupVersion::V2, None, &g.pathname)?;
    let base = m.dir(root);
    ancestors(&g.pathname, &m.root).iter().find_map(|cg| {
        let dir = base.join(relative(cg, &m.root)?);
        read(&dir, "cpuset.cpus.effective")
    })
}

/// `key value` lines of a cpu.stat-like file.
fn parse_keyed(path: &Path, text: &str) -> Result<Vec<(String, u64)>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split_whitespace();
            match (f.next(), f.next().map(str::parse::<u64>)) {
                (Some(k), Some(Ok(v))) => Ok((k.to_string(), v)),
                _ => Err(bad(path, "\"key value\" lines", l)),
            }
        })
        .collect()
}

fn get(kv: &[(String, u64)], key: &str) -> Option<u64> {
    kv.iter().find(|(k, _)| k == key).map(|&(_, v)| v)
}

/// Throttled time from cpu.stat(.local): ns (v1) or us (v2).
fn throttled(kv: &[(String, u64)]) -> Option<u64> {
    get(kv, "throttled_time").or_else(|| get(kv, "throttled_usec").map(|u| u.saturating_mul(1000)))
}

/// Parses a `cpu.pressure` file.
pub(crate) fn parse_pressure(path: &Path, text: &str) -> Result<Pressure, CgroupError> {
    let what = "\"some avg10=.. avg60=.. avg300=.. total=..\" lines";
    let mut p = Pressure::default();
    let mut saw_some = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let kind = f.next().unwrap_or_default();
        let (mut avg10, mut total) = (None, None);
        for kv in f {
            match kv.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok(),
                Some(("total", v)) => total = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        let (Some(avg10), Some(total)) = (avg10, total) else {
            return Err(bad(path, what, line));
        };
        match kind {
            "some" => {
                p.some_avg10 = avg10;
                p.some_total_us = total;
                saw_some = true;
            }
            "full" => {
                p.full_avg10 = Some(avg10);
                p.full_total_us = Some(total);
            }
            _ => return Err(bad(path, what, line)),
        }
    }
    if !saw_some {
        return Err(bad(path, what, text));
    }
    Ok(p)
}

/// Snapshot of one cgroup directory: `cpu.stat` (must exist), and
/// `cpu.stat.local` and `cpu.pressure` where present.
pub fn read_stat_at(dir: &Path) -> Result<CpuStat, CgroupError> {
    let path = dir.join("cpu.stat");
    let kv = parse_keyed(&path, &read(&path)?)?;
    let mut stat = CpuStat {
        nr_periods: get(&kv, "nr_periods").unwrap_or(0),
        nr_throttled: get(&kv, "nr_throttled").unwrap_or(0),
        throttled_ns: throttled(&kv).unwrap_or(0),
        usage_ns: get(&kv, "usage_usec").map(|u| u.saturating_mul(1000)),
        local_throttled_ns: None,
        pressure: None,
        nr_bursts: get(&kv, "nr_bursts"),
        burst_ns: get(&kv, "burst_time")
            .or_else(|| get(&kv, "burst_usec").map(|u| u.saturating_mul(1000))),
    };
    stat.local_throttled_ns = read_local(dir)?;
    let ppath = dir.join("cpu.pressure");
    if let Some(text) = read_opt(&ppath)? {
        stat.pressure = Some(parse_pressure(&ppath, &text)?);
    }
    Ok(stat)
}

fn read_local(dir: &Path) -> Result<Option<u64>, CgroupError> {
    let path = dir.join("cpu.stat.local");
    match read_opt(&path)? {
        Some(text) => Ok(throttled(&parse_keyed(&path, &text)?)),
        None => Ok(None),
    }
}

/// Snapshot for a resolved limit: `cpu.stat` of the binding cgroup (its
/// periods and throttling), `cpu.stat.local` of the target's cgroup and
/// `cpu.pressure` of the target's v2 cgroup, where present.
pub fn read_stat(limit: &CgroupLimit) -> Result<CpuStat, CgroupError> {
    let mut stat = read_stat_at(&limit.dir)?;
    if limit.target_dir != limit.dir {
        stat.local_throttled_ns = read_local(&limit.target_dir)?;
    }
    stat.pressure = match &limit.pressure_dir {
        Some(d) => {
            let path = d.join("cpu.pressure");
            match read_opt(&path)? {
                Some(text) => Some(parse_pressure(&path, &text)?),
                None => None,
            }
        }
        None => None,
    };
    Ok(stat)
}

/// A PSI file's counters; `None` where the kernel has none (CONFIG_PSI
/// off, `psi=0`, a v1 cgroup) or the file does not parse.
pub fn read_pressure(path: &Path) -> Option<Pressure> {
    parse_pressure(path, &std::fs::read_to_string(path).ok()?).ok()
}

/// Where a cgroup with a CPU quota can be created: the top of the v1 cpu
/// hierarchy when one is mounted, else the v2 mount whose
/// `cgroup.controllers` lists cpu. Used by the tests crate's `TestCgroup`.
pub fn cpu_hierarchy(root: &Root) -> Result<(CgroupVersion, PathBuf), CgroupError> {
    let (mountinfo, mounts) = cgroup_mounts(root)?;
    let v1 = mounts
        .iter()
        .filter(|m| m.version == CgroupVersion::V1 && m.has("cpu"))
        .min_by_key(|m| m.root.len());
    let v2 = || {
        mounts
            .iter()
            .filter(|m| m.version == CgroupVersion::V2)
            .find(|m| {
                std::fs::read_to_string(m.dir(root).join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
            })
    };
    match (v1, v1.is_none().then(v2).flatten()) {
        (Some(m), _) => Ok((CgroupVersion::V1, m.dir(root))),
        (None, Some(m)) => Ok((CgroupVersion::V2, m.dir(root))),
        (None, None) => Err(CgroupError::NoCpuController(mountinfo)),
    }
}

/// The quota set on one cgroup directory itself (not its ancestors):
/// `cpu.cfs_quota_us`/`cpu.cfs_period_us` on v1, `cpu.max` on v2.
pub fn quota_at(version: CgroupVersion, dir: &Path) -> Result<Option<CpuQuota>, CgroupError> {
    match version {
        CgroupVersion::V1 => quota_v1(dir),
        CgroupVersion::V2 => quota_v2(dir),
    }
}

/// Where the unified (v2) hierarchy is mounted, whatever its controllers
/// (on a hybrid host it has none but still holds `cpu.pressure`).
pub fn unified_dir(root: &Root) -> Option<PathBuf> {
    let (_, mounts) = cgroup_mounts(root).ok()?;
    mounts
        .iter()
        .filter(|m| m.version == CgroupVersion::V2)
        .min_by_key(|m| m.root.len())
        .map(|m| m.dir(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::put;

    fn fixture(name: &str) -> Root {
        Root::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/cgroup")
                .join(name),
        )
    }

    fn resolve_fixture(name: &str) -> CpuCgroup {
        resolve(&fixture(name), 4242).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn v1_hybrid_finds_the_separate_cpu_mount_and_the_child_quota() {
        let cg = resolve_fixture("v1-hybrid");
        assert_eq!(cg.version, CgroupVersion::V1);
        assert_eq!(cg.cgroup, "/affin-test");
        assert_eq!(cg.levels.len(), 2);
        assert_eq!(cg.levels[1].cgroup, "/");
        assert_eq!(cg.levels[1].quota, None, "-1 is unlimited");
        let l = cg.limit().expect("a limit");
        assert_eq!(l.cgroup, "/affin-test");
        assert_eq!(
            l.quota,
            CpuQuota {
                quota_us: 50_000,
                period_us: 100_000
            }
        );
        assert_eq!(l.quota_cores(), 0.5);
        assert!(l.dir.ends_with("sys/fs/cgroup/cpu/affin-test"));
        // The v2 path is the root there: its pressure is the machine's.
        assert_eq!(l.pressure_dir, None);
        assert!(cg.notes.is_empty(), "{:?}", cg.notes);
    }

    #[test]
    fn v2_tightest_ancestor_wins_over_the_container_quota() {
        let cg = resolve_fixture("v2-kubepods");
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(cg.levels.len(), 5, "{:?}", cg.levels);
        let l = cg.limit().expect("a limit");
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(
            l.cgroup,
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f3c.slice"
        );
        assert_eq!(l.quota_cores(), 0.5);
        assert!(l.target_cgroup.ends_with("cri-containerd-9a1b.scope"));
        assert_eq!(
            cg.levels[0].quota,
            Some(CpuQuota {
                quota_us: 100_000,
                period_us: 100_000
            })
        );
        // "max 100000" is unlimited; the root has no cpu.max at all.
        assert_eq!(cg.levels[2].quota, None);
        assert_eq!(cg.levels[4].cgroup, "/");
        assert_eq!(cg.levels[4].quota, None);
        assert!(l.pressure_dir.as_ref().is_some_and(|d| d == &l.target_dir));
    }

    #[test]
    fn no_limit_anywhere_is_none() {
        let cg = resolve_fixture("v2-no-limit");
        assert_eq!(cg.limit(), None);
        assert_eq!(cg.levels.len(), 4);
        assert!(cg.levels.iter().all(|l| l.quota.is_none()));
        assert!(cg.pressure_dir.is_some());
        assert!(cg.notes.is_empty(), "{:?}", cg.notes);
    }

    #[test]
    fn a_cgroup_as_the_report_prints_it_is_found_under_the_cpu_mount() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let w = |rel: &str, text: &str| put(r, rel, text);
        w(
            "proc/self/mountinfo",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        w("sys/fs/cgroup/memory/pod/cgroup.procs", "1\n");
        w("sys/fs/cgroup/cpu/pod/cgroup.procs", "1\n");
        w("sys/fs/cgroup/unified/only2/cgroup.procs", "1\n");
        assert_eq!(
            locate(&Root::new(r), Path::new("/pod")),
            Some(r.join("sys/fs/cgroup/cpu/pod"))
        );
        assert_eq!(
            locate(&Root::new(r), Path::new("/only2")),
            Some(r.join("sys/fs/cgroup/unified/only2"))
        );
        let full = r.join("sys/fs/cgroup/memory/pod");
        assert_eq!(locate(&Root::new(r), &full), Some(full.clone()));
        assert_eq!(locate(&Root::new(r), Path::new("/nowhere")), None);
        assert_eq!(locate(&Root::new(r), Path::new("pod")), None);
    }

    #[test]
    fn combined_cpu_cpuacct_mount_resolves() {
        let cg = resolve_fixture("v1-cpu-cpuacct");
        assert_eq!(cg.version, CgroupVersion::V1);
        let l = cg.limit().expect("a limit");
        assert_eq!(l.cgroup, "/docker/abc");
        assert_eq!(l.quota_cores(), 2.0);
        assert!(l.dir.ends_with("sys/fs/cgroup/cpu,cpuacct/docker/abc"));
        assert_eq!(cg.levels.len(), 3);
        assert_eq!(l.pressure_dir, None, "no v2 line");
    }

    #[test]
    fn container_mount_root_is_stripped_and_noted() {
        // The mount shows /kubepods/besteffort/pod42/ctr1 at
        // /sys/fs/cgroup/cpu,cpuacct; the process is in .../ctr1/worker.
        let cg = resolve_fixture("v1-container-root");
        assert_eq!(cg.levels.len(), 2);
        assert!(
            cg.levels[0]
                .dir
                .ends_with("sys/fs/cgroup/cpu,cpuacct/worker")
        );
        let l = cg.limit().expect("a limit");
        assert_eq!(l.cgroup, "/kubepods/besteffort/pod42/ctr1");
        assert_eq!(l.quota_cores(), 1.5);
        assert!(l.dir.ends_with("sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cg.notes.len(), 1, "{:?}", cg.notes);
        assert!(cg.notes[0].contains("would not be seen"));
    }

    #[test]
    fn v2_without_cpu_controller_has_no_limit_and_says_why() {
        // Hybrid with no v1 cpu hierarchy: the v2 tree has no cpu controller.
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let w = |rel: &str, text: &str| put(r, rel, text);
        w("proc/4242/cgroup", "3:memory:/svc\n0::/svc\n");
        w(
            "proc/self/mountinfo",
            "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        w("sys/fs/cgroup/unified/cgroup.controllers", "\n");
        w(
            "sys/fs/cgroup/unified/svc/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        );
        let cg = resolve(&Root::new(r), 4242).expect("resolve");
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(cg.limit(), None);
        assert_eq!(cg.levels.len(), 2);
        assert!(cg.pressure_dir.is_some());
        assert!(cg.notes[0].contains("no cpu controller"), "{:?}", cg.notes);
    }

    /// A hybrid host as this one: v1 cpu and cpuset hierarchies, a unified
    /// tree without controllers. The parent's 0.5 CPU binds over the
    /// child's 1.5; the binding cgroup's burst and the cpuset's CPUs are
    /// read; pressure comes from the unified tree.
    #[test]
    fn hybrid_tighter_parent_binds_with_its_burst_and_the_cpuset() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let w = |rel: &str, text: &str| put(r, rel, text);
        w(
            "proc/4242/cgroup",
            "3:cpuset:/par/kid\n1:cpu:/par/kid\n0::/svc\n",
        );
        w(
            "proc/self/mountinfo",
            "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
        );
        w("sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        w("sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        w("sys/fs/cgroup/cpu/par/cpu.cfs_quota_us", "50000\n");
        w("sys/fs/cgroup/cpu/par/cpu.cfs_period_us", "100000\n");
        w("sys/fs/cgroup/cpu/par/cpu.cfs_burst_us", "20000\n");
        w(
            "sys/fs/cgroup/cpu/par/cpu.stat",
            "nr_periods 10\nnr_throttled 9\nthrottled_time 5\nnr_bursts 3\nburst_time 7000\n",
        );
        w("sys/fs/cgroup/cpu/par/kid/cpu.cfs_quota_us", "150000\n");
        w("sys/fs/cgroup/cpu/par/kid/cpu.cfs_period_us", "100000\n");
        w("sys/fs/cgroup/cpu/par/kid/cpu.cfs_burst_us", "0\n");
        w("sys/fs/cgroup/cpuset/par/kid/cpuset.effective_cpus", "1\n");
        w("sys/fs/cgroup/unified/cgroup.controllers", "\n");
        w(
            "sys/fs/cgroup/unified/svc/cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
        );
        let cg = resolve(&Root::new(r), 4242).expect("resolve");
        assert_eq!(cg.version, CgroupVersion::V1);
        assert_eq!(cg.levels.len(), 3);
        let l = cg.limit().expect("a limit");
        assert_eq!(l.cgroup, "/par", "the parent's quota is tighter");
        assert_eq!(l.quota_cores(), 0.5);
        assert_eq!(l.target_cgroup, "/par/kid");
        assert_eq!(l.burst_us, Some(20_000), "the binding cgroup's burst");
        assert_eq!(l.cpuset_cpus, Some(vec![1]));
        assert!(
            l.pressure_dir
                .as_ref()
                .is_some_and(|d| d.ends_with("unified/svc"))
        );
        let s = read_stat(l).expect("stat");
        assert_eq!((s.nr_bursts, s.burst_ns), (Some(3), Some(7000)));
        assert_eq!(s.pressure.and_then(|p| p.full_total_us), Some(3));
    }

    /// v1 alone, three levels: the middle one binds over a looser leaf
    /// and an unlimited root; without burst files the burst is unknown.
    #[test]
    fn v1_tighter_middle_ancestor_binds() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let w = |rel: &str, text: &str| put(r, rel, text);
        w("proc/4242/cgroup", "2:cpu,cpuacct:/a/b/c\n");
        w(
            "proc/self/mountinfo",
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n",
        );
        let q = |rel: &str, quota: &str, period: &str| {
            w(
                &format!("sys/fs/cgroup/cpu,cpuacct/{rel}cpu.cfs_quota_us"),
                quota,
            );
            w(
                &format!("sys/fs/cgroup/cpu,cpuacct/{rel}cpu.cfs_period_us"),
                period,
            );
        };
        q("", "-1", "100000");
        q("a/", "300000", "100000");
        // 0.75 CPU as 37500 per 50000: tighter than the leaf's 1 CPU.
        q("a/b/", "37500", "50000");
        q("a/b/c/", "100000", "100000");
        let cg = resolve(&Root::new(r), 4242).expect("resolve");
        let l = cg.limit().expect("a limit");
        assert_eq!(cg.levels.len(), 4);
        assert_eq!(l.cgroup, "/a/b");
        assert_eq!(l.quota_cores(), 0.75);
        assert_eq!(l.burst_us, None);
        assert_eq!(l.cpuset_cpus, None, "no cpuset hierarchy, no v2 line");
    }

    /// v2: a pod slice's cpu.max binds over its container's; its
    /// cpu.max.burst is read, and the cpuset comes from the nearest level
    /// that has cpuset.cpus.effective.
    #[test]
    fn v2_tighter_ancestor_binds_with_its_burst_and_the_cpuset() {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        let w = |rel: &str, text: &str| put(r, rel, text);
        w("proc/4242/cgroup", "0::/pod/ctr\n");
        w(
            "proc/self/mountinfo",
            "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n",
        );
        w("sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory\n");
        w("sys/fs/cgroup/cpuset.cpus.effective", "0-7\n");
        w("sys/fs/cgroup/pod/cpu.max", "25000 100000\n");
        w("sys/fs/cgroup/pod/cpu.max.burst", "5000\n");
        w("sys/fs/cgroup/pod/cpuset.cpus.effective", "2-3\n");
        w("sys/fs/cgroup/pod/ctr/cpu.max", "200000 100000\n");
        w("sys/fs/cgroup/pod/ctr/cpu.max.burst", "0\n");
        w(
            "sys/fs/cgroup/pod/cpu.stat",
            "usage_usec 10\nnr_periods 4\nnr_throttled 2\nthrottled_usec 3\nnr_bursts 2\nburst_usec 9\n",
        );
        let cg = resolve(&Root::new(r), 4242).expect("resolve");
        let l = cg.limit().expect("a limit");
        assert_eq!(l.version, CgroupVersion::V2);
        assert_eq!(l.cgroup, "/pod");
        assert_eq!(l.quota_cores(), 0.25);
        assert_eq!(l.burst_us, Some(5000));
        assert_eq!(l.cpuset_cpus, Some(vec![2, 3]));
        let s = read_stat(l).expect("stat");
        assert_eq!((s.nr_bursts, s.burst_ns), (Some(2), Some(9000)));
        std::fs::write(r.join("sys/fs/cgroup/pod/cpu.max.burst"), "lots\n").expect("write");
        let e = resolve(&Root::new(r), 4242).unwrap_err();
        assert!(e.to_string().contains("a burst in us"), "{e}");
    }

    #[test]
    fn missing_process_says_so() {
        let e = resolve(&fixture("v1-hybrid"), 1).unwrap_err();
        assert!(matches!(e, CgroupError::Proc { pid: 1, .. }), "{e}");
        assert!(e.to_string().contains("still running"));
    }

    #[test]
    fn stat_v1_is_in_ns() {
        let l = resolve_fixture("v1-hybrid").limit.expect("a limit");
        let s = read_stat(&l).expect("stat");
        assert_eq!(s.nr_periods, 100);
        assert_eq!(s.nr_throttled, 92);
        assert_eq!(s.throttled_ns, 7_400_000_000);
        assert_eq!(s.local_throttled_ns, Some(7_400_000_000));
        assert_eq!(s.usage_ns, None);
        assert_eq!(s.pressure, None);
    }

    #[test]
    fn stat_v2_reads_the_binding_cgroup_and_the_targets_local_and_pressure() {
        let l = resolve_fixture("v2-kubepods").limit.expect("a limit");
        let s = read_stat(&l).expect("stat");
        // The pod slice's counters (the binding cgroup), usec -> ns.
        assert_eq!(s.nr_periods, 3000);
        assert_eq!(s.nr_throttled, 2760);
        assert_eq!(s.throttled_ns, 222_000_000_000);
        assert_eq!(s.usage_ns, Some(150_000_000_000));
        // The container's own cpu.stat.local and pressure.
        assert_eq!(s.local_throttled_ns, Some(220_000_000_000));
        let p = s.pressure.expect("pressure");
        assert_eq!(p.some_avg10, 88.12);
        assert_eq!(p.some_total_us, 250_000_000);
        assert_eq!(p.full_total_us, Some(230_000_000));
    }

    #[test]
    fn delta_subtracts_and_flags_resets() {
        let before = CpuStat {
            nr_periods: 100,
            nr_throttled: 10,
            throttled_ns: 1_000,
            usage_ns: Some(5_000),
            local_throttled_ns: None,
            pressure: Some(Pressure {
                some_avg10: 1.0,
                some_total_us: 10,
                full_avg10: None,
                full_total_us: None,
            }),
            nr_bursts: Some(1),
            burst_ns: Some(10_000),
        };
        let after = CpuStat {
            nr_periods: 200,
            nr_throttled: 100,
            throttled_ns: 9_000,
            usage_ns: Some(6_000),
            local_throttled_ns: Some(4),
            pressure: Some(Pressure {
                some_avg10: 50.0,
                some_total_us: 510,
                full_avg10: Some(1.0),
                full_total_us: Some(7),
            }),
            nr_bursts: Some(4),
            burst_ns: Some(70_000),
        };
        let d = CpuStat::delta(&before, &after);
        assert_eq!(d.nr_periods, 100);
        assert_eq!(d.nr_throttled, 90);
        assert_eq!(d.throttled_ns, 8_000);
        assert_eq!(d.usage_ns, Some(1_000));
        assert_eq!(d.local_throttled_ns, None, "missing before");
        assert_eq!(d.pressure_some_ns, Some(500_000));
        assert_eq!(d.pressure_full_ns, None);
        assert_eq!(d.throttled_ratio(), Some(0.9));
        assert_eq!((d.nr_bursts, d.burst_ns), (Some(3), Some(60_000)));
        assert!(!d.counters_reset);

        let back = CpuStat::delta(&after, &before);
        assert!(back.counters_reset);
        assert_eq!(back.nr_periods, 0);
        assert_eq!(back.throttled_ratio(), None);
    }

    #[test]
    fn quota_parsing_rejects_garbage_and_reads_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cpu.max"), "max 100000\n").expect("write");
        assert_eq!(quota_v2(dir.path()).expect("max"), None);
        std::fs::write(dir.path().join("cpu.max"), "150000 100000\n").expect("write");
        let q = quota_v2(dir.path()).expect("quota").expect("limited");
        assert_eq!(q.cores(), 1.5);
        std::fs::write(dir.path().join("cpu.max"), "lots\n").expect("write");
        let e = quota_v2(dir.path()).unwrap_err();
        assert!(e.to_string().contains("QUOTA PERIOD"), "{e}");
        std::fs::write(dir.path().join("cpu.cfs_quota_us"), "x\n").expect("write");
        assert!(matches!(
            quota_v1(dir.path()),
            Err(CgroupError::Parse { .. })
        ));
    }

    #[test]
    fn tighter_compares_in_cores_not_raw_quota() {
        let a = CpuQuota {
            quota_us: 50_000,
            period_us: 100_000,
        };
        let b = CpuQuota {
            quota_us: 40_000,
            period_us: 50_000,
        };
        assert!(a.is_tighter_than(&b));
        assert!(!b.is_tighter_than(&a));
        assert!(!a.is_tighter_than(&a));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(relative("/a/b", "/"), Some("a/b"));
        assert_eq!(relative("/a/b", "/a"), Some("b"));
        assert_eq!(relative("/a", "/a"), Some(""));
        assert_eq!(relative("/ab", "/a"), None);
        assert_eq!(ancestors("/a/b", "/"), vec!["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/a/b/c", "/a"), vec!["/a/b/c", "/a/b", "/a"]);
        assert_eq!(ancestors("/", "/"), vec!["/"]);
        assert_eq!(
            unescape(r"/sys/fs/cgroup/my\040dir"),
            "/sys/fs/cgroup/my dir"
        );
        assert_eq!(unescape(r"a\\b"), r"a\\b");
    }
}
