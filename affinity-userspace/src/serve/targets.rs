//! Which cgroups the agent traces, refreshed at every interval as
//! containers come and go, and which processes they hold.
//!
//! By default every cgroup with a CPU quota of its own in the cpu
//! controller's hierarchy ([`crate::host::quotas::with_quota`]); with
//! `--cgroup`, those directories only. At most `--max-cgroups`, by path
//! order; the rest are counted. A new cgroup costs a map update
//! ([`Probe::add_cgroup`], keyed by its directory's inode, the kernfs id
//! the programs read from `task->cgroups`), no new attach; its processes,
//! read from `cgroup.procs`, are marked at once, and the programs mark the
//! ones that join or are forked there later. Labels come from the path
//! ([`crate::model::kube::parse`]) and the runtime's OCI bundle
//! ([`crate::host::oci::Bundles`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::host::cgroup::{CgroupVersion, CpuQuota, quota_at};
use crate::host::oci::Bundles;
use crate::host::procs;
use crate::host::quotas::{hierarchy_path, with_quota};
use crate::kernel::probe::Probe;
use crate::model::kube::{self, KubeNames};
use crate::serve::aggregate::CgroupKey;

/// One traced cgroup.
#[derive(Clone, Debug)]
pub struct Tracked {
    pub key: CgroupKey,
    pub dir: PathBuf,
    /// Its path in the hierarchy.
    pub cgroup: String,
    pub quota: Option<CpuQuota>,
    /// Where its `cpu.pressure` is (the dir itself on v2; the same path in
    /// the unified tree on a hybrid host, when it exists there).
    pub pressure: Option<PathBuf>,
    pub identity: Option<kube::KubeIdentity>,
    pub names: Option<KubeNames>,
}

impl Tracked {
    /// The series labels: `cgroup`, then what is known of the pod.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut l = vec![("cgroup", self.cgroup.clone())];
        let n = self.names.as_ref();
        if let Some(v) = n.and_then(|n| n.namespace.clone()) {
            l.push(("namespace", v));
        }
        if let Some(v) = n.and_then(|n| n.pod.clone()) {
            l.push(("pod", v));
        }
        if let Some(v) = n.and_then(|n| n.container.clone()) {
            l.push(("container", v));
        }
        if let Some(id) = &self.identity {
            l.push(("pod_uid", id.pod_uid.clone()));
            if let Some(c) = &id.container_id {
                l.push(("container_id", c.clone()));
            }
        }
        l
    }
}

/// What changed at a refresh.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Vec<CgroupKey>,
    pub removed: Vec<CgroupKey>,
}

/// The traced set.
pub struct Targets {
    version: CgroupVersion,
    mount: PathBuf,
    unified: Option<PathBuf>,
    /// `--cgroup` directories (empty: every cgroup with a quota).
    only: Vec<PathBuf>,
    max: usize,
    bundles: Bundles,
    pub tracked: BTreeMap<CgroupKey, Tracked>,
    /// Cgroups with a quota left out by `max` at the last refresh.
    pub left_out: usize,
    /// tgid -> cgroup, from the last scan of `cgroup.procs`.
    pub procs: HashMap<u32, CgroupKey>,
    /// tgids marked in the kernel's target set.
    marked: HashSet<u32>,
}

impl Targets {
    pub fn new(
        version: CgroupVersion,
        mount: PathBuf,
        unified: Option<PathBuf>,
        only: Vec<PathBuf>,
        max: usize,
        bundles: Bundles,
    ) -> Self {
        Self {
            version,
            mount,
            unified,
            only,
            max,
            bundles,
            tracked: BTreeMap::new(),
            left_out: 0,
            procs: HashMap::new(),
            marked: HashSet::new(),
        }
    }

    /// The cgroups to trace now: (dir, path, quota).
    fn wanted(&self) -> Vec<(PathBuf, String, Option<CpuQuota>)> {
        if self.only.is_empty() {
            with_quota(self.version, &self.mount)
                .into_iter()
                .map(|q| (q.dir, q.cgroup, Some(q.quota)))
                .collect()
        } else {
            self.only
                .iter()
                .filter(|d| d.join("cgroup.procs").is_file())
                .map(|d| {
                    let quota = quota_at(self.version, d).ok().flatten();
                    (d.clone(), hierarchy_path(&self.mount, d), quota)
                })
                .collect()
        }
    }

    fn pressure_of(&self, dir: &Path, cgroup: &str) -> Option<PathBuf> {
        let own = dir.join("cpu.pressure");
        if own.is_file() {
            return Some(own);
        }
        let u = self.unified.as_ref()?.join(cgroup.trim_start_matches('/'));
        let f = u.join("cpu.pressure");
        f.is_file().then_some(f)
    }

    /// Finds the cgroups again, updates the programs' cgroup set, and
    /// rescans every traced cgroup's processes (marking new ones).
    pub fn refresh(&mut self, probe: &mut Probe) -> Changes {
        let mut wanted = self.wanted();
        self.left_out = wanted.len().saturating_sub(self.max);
        wanted.truncate(self.max);
        let mut now: BTreeMap<CgroupKey, (PathBuf, String, Option<CpuQuota>)> = BTreeMap::new();
        for (dir, cgroup, quota) in wanted {
            let key = procs::dir_inode(&dir);
            if key != 0 {
                now.insert(key, (dir, cgroup, quota));
            }
        }
        let mut ch = Changes::default();
        let gone: Vec<CgroupKey> = self
            .tracked
            .keys()
            .filter(|k| !now.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            probe.remove_cgroup(k);
            self.tracked.remove(&k);
            ch.removed.push(k);
        }
        for (key, (dir, cgroup, quota)) in now {
            if let Some(t) = self.tracked.get_mut(&key) {
                t.quota = quota; // a quota can change in place
                if t.names.is_none()
                    && let Some(id) = t.identity.as_ref().and_then(|i| i.container_id.as_deref())
                {
                    t.names = self.bundles.names(id); // the bundle may come later
                }
                continue;
            }
            if probe.add_cgroup(key).is_err() {
                self.left_out += 1; // the kernel's set is full
                continue;
            }
            let identity = kube::parse(&cgroup);
            let names = identity
                .as_ref()
                .and_then(|i| i.container_id.as_deref())
                .and_then(|id| self.bundles.names(id));
            let pressure = self.pressure_of(&dir, &cgroup);
            self.tracked.insert(
                key,
                Tracked {
                    key,
                    dir,
                    cgroup,
                    quota,
                    pressure,
                    identity,
                    names,
                },
            );
            ch.added.push(key);
        }
        self.scan(probe);
        ch
    }

    /// Reads every traced cgroup's `cgroup.procs`, marks the processes not
    /// marked yet, and keeps who is where.
    fn scan(&mut self, probe: &mut Probe) {
        self.procs.clear();
        for (key, t) in &self.tracked {
            for pid in procs::pids_in_cgroup(&t.dir).unwrap_or_default() {
                self.procs.insert(pid, *key);
                if self.marked.insert(pid) && !probe.is_target(pid) {
                    let _ = probe.add_target(pid);
                }
            }
        }
    }

    /// Unmarks the processes no traced cgroup holds any more (exited or
    /// moved), after their last values were read; `joined` are the ones
    /// the programs marked.
    pub fn unmark_stale(&mut self, probe: &mut Probe, joined: &[(u32, u64)]) {
        self.marked.extend(joined.iter().map(|j| j.0));
        let stale: Vec<u32> = self
            .marked
            .iter()
            .filter(|p| !self.procs.contains_key(p))
            .copied()
            .collect();
        for pid in stale {
            let _ = probe.remove_target(pid);
            self.marked.remove(&pid);
        }
    }
}
