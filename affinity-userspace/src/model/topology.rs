//! CPU topology from sysfs, read through a root-path seam so fixture trees
//! stand in for the machine.
//!
//! Reads, under `<root>/sys/devices/system/`:
//! - `cpu/{online,possible,present,isolated}`;
//! - `cpu/cpuN/topology/{physical_package_id,die_id,core_id,thread_siblings_list}`;
//! - `cpu/cpuN/cache/index*/{level,type,shared_cpu_list,size,id}`, grouped by
//!   *level*, never by index number (Documentation/ABI/testing/sysfs-devices-system-cpu);
//! - `cpu/cpuN/cpufreq/cpuinfo_max_freq` and `cpu/cpuN/cpu_capacity` (hybrid parts);
//! - `node/online`, `node/nodeN/{cpulist,distance}`.
//!
//! and for one process ([`allowed_cpus`]) `<root>/proc/<pid>/{status,cgroup}` and
//! the cpuset file of its cgroup (v1 `cpuset.effective_cpus`, v2
//! `cpuset.cpus.effective`).
//!
//! Produces a [`Topology`]: per-CPU package, die, global core index, SMT
//! siblings, L2 and last-level-cache groups, NUMA node, max frequency and
//! capacity, plus cores, cache groups, nodes with distances and isolated CPUs.
//! Missing optional parts (caches, nodes, cpufreq) degrade with a note.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::model::cpulist::{self, CpuListError};

/// A CPU whose performance (capacity or max frequency) is below this share
/// of the fastest CPU's counts as an efficiency CPU. Intel "favoured cores"
/// differ by a few percent in max frequency; P/E and big/LITTLE differ by
/// 25% or more.
const EFFICIENCY_SHARE: f64 = 0.9;

/// Why the topology (or a process's allowed CPUs) could not be read.
#[derive(Debug, Error)]
pub enum TopologyError {
    /// A file that must exist could not be read.
    #[error(
        "cannot read {path}: {source}; the topology needs sysfs: check that /sys is \
         mounted, or that the --root tree is complete"
    )]
    Read { path: PathBuf, source: io::Error },
    /// A file did not hold what sysfs writes.
    #[error("{path}: expected {what}, found {text:?}; is this really a sysfs tree?")]
    Parse {
        path: PathBuf,
        what: &'static str,
        text: String,
    },
    /// A CPU list file did not parse.
    #[error("{path}: {source}")]
    List { path: PathBuf, source: CpuListError },
    /// The online list is empty.
    #[error("{path} lists no online CPUs; the sysfs tree is incomplete")]
    NoCpus { path: PathBuf },
    /// A /proc file of the target could not be read or parsed.
    #[error("cannot read {path}: {source}; is process {pid} still running, and is /proc readable?")]
    Proc {
        path: PathBuf,
        pid: u32,
        source: procfs::ProcError,
    },
    /// The status file lacks the allowed-CPU list.
    #[error("{path} has no Cpus_allowed_list line (needs Linux 2.6.26 or later)")]
    NoAllowedList { path: PathBuf },
}

/// One logical CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cpu {
    /// Logical CPU number.
    pub id: u32,
    /// Physical package (socket), `physical_package_id`.
    pub package: u32,
    /// Die within the package, `die_id` (0 when the kernel has none).
    pub die: u32,
    /// Global physical-core index, unique across packages (index into
    /// [`Topology::cores`]).
    pub core: u32,
    /// Raw sysfs `core_id`: unique only within a package, and not dense.
    pub core_id: u32,
    /// SMT siblings, this CPU included, online only.
    pub siblings: Vec<u32>,
    /// Global L2 group index (index into [`Topology::l2_groups`]), if sysfs
    /// lists an L2 for this CPU.
    pub l2: Option<u32>,
    /// Global last-level-cache group index (index into [`Topology::llc_groups`]).
    pub llc: u32,
    /// NUMA node.
    pub node: u32,
    /// `cpufreq/cpuinfo_max_freq` (kHz): the hardware maximum, not the current
    /// frequency.
    pub max_freq_khz: Option<u64>,
    /// `cpu_capacity` (1024 = the biggest CPU), on kernels that expose it.
    pub capacity: Option<u32>,
}

/// One physical core: a group of SMT siblings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Core {
    /// Global core index.
    pub id: u32,
    /// Package.
    pub package: u32,
    /// Die.
    pub die: u32,
    /// Raw sysfs `core_id` (of the first CPU).
    pub core_id: u32,
    /// Logical CPUs on this core.
    pub cpus: Vec<u32>,
}

/// CPUs sharing one cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheGroup {
    /// Global group index.
    pub id: u32,
    /// Cache level (2, 3, ...); 0 when sysfs had no cache data and the
    /// package stands in for the last-level cache.
    pub level: u8,
    /// Size in KiB, from `size`.
    pub size_kib: Option<u64>,
    /// CPUs sharing it (online only).
    pub cpus: Vec<u32>,
}

/// One NUMA node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Node number.
    pub id: u32,
    /// Online CPUs on the node.
    pub cpus: Vec<u32>,
    /// Distance to each online node (10 = local), from `distance`.
    pub distances: BTreeMap<u32, u32>,
}

/// The machine's CPU topology.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Topology {
    /// Online CPUs, sorted by id.
    pub cpus: Vec<Cpu>,
    possible: Option<Vec<u32>>,
    present: Option<Vec<u32>>,
    isolated: Vec<u32>,
    cores: Vec<Core>,
    l2_groups: Vec<CacheGroup>,
    llc_groups: Vec<CacheGroup>,
    nodes: Vec<Node>,
    /// What was missing and how it was worked around.
    notes: Vec<String>,
}

/// The CPUs a process may run on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AllowedCpus {
    /// Current affinity, `Cpus_allowed_list` in `/proc/<pid>/status`.
    pub affinity: Vec<u32>,
    /// The cgroup cpuset's effective CPUs, where found: the hard bound that
    /// `sched_setaffinity` cannot leave.
    pub cpuset: Option<Vec<u32>>,
    /// The cpuset file read (under the root).
    pub cpuset_file: Option<PathBuf>,
    /// Affinity and cpuset intersected: the conservative allowed set.
    pub cpus: Vec<u32>,
    /// Why the cpuset could not be read, if it could not.
    pub notes: Vec<String>,
}

/// File access under the root seam.
struct Fs<'a> {
    root: &'a Path,
}

impl Fs<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Result<String, TopologyError> {
        let path = self.path(rel);
        std::fs::read_to_string(&path).map_err(|source| TopologyError::Read { path, source })
    }

    /// `None` when the file does not exist; other I/O errors are errors.
    fn read_opt(&self, rel: &str) -> Result<Option<String>, TopologyError> {
        let path = self.path(rel);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TopologyError::Read { path, source }),
        }
    }

    fn list(&self, rel: &str) -> Result<Vec<u32>, TopologyError> {
        let text = self.read(rel)?;
        self.parse_list(rel, &text)
    }

    fn list_opt(&self, rel: &str) -> Result<Option<Vec<u32>>, TopologyError> {
        self.read_opt(rel)?
            .map(|t| self.parse_list(rel, &t))
            .transpose()
    }

    fn parse_list(&self, rel: &str, text: &str) -> Result<Vec<u32>, TopologyError> {
        cpulist::parse(text).map_err(|source| TopologyError::List {
            path: self.path(rel),
            source,
        })
    }

    /// A signed id such as `physical_package_id`; -1 ("unknown") reads as 0.
    fn id(&self, rel: &str) -> Result<u32, TopologyError> {
        let text = self.read(rel)?;
        self.parse_id(rel, &text)
    }

    fn id_opt(&self, rel: &str) -> Result<Option<u32>, TopologyError> {
        self.read_opt(rel)?
            .map(|t| self.parse_id(rel, &t))
            .transpose()
    }

    fn parse_id(&self, rel: &str, text: &str) -> Result<u32, TopologyError> {
        let v: i64 = text
            .trim()
            .parse()
            .map_err(|_| self.bad(rel, "an integer", text))?;
        u32::try_from(v.max(0)).map_err(|_| self.bad(rel, "a 32-bit id", text))
    }

    fn u64_opt(&self, rel: &str) -> Result<Option<u64>, TopologyError> {
        match self.read_opt(rel)? {
            None => Ok(None),
            Some(t) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.bad(rel, "an unsigned integer", &t)),
        }
    }

    fn bad(&self, rel: &str, what: &'static str, text: &str) -> TopologyError {
        TopologyError::Parse {
            path: self.path(rel),
            what,
            text: text.trim().to_string(),
        }
    }
}

/// One cache as sysfs describes it for one CPU.
struct RawCache {
    level: u8,
    size_kib: Option<u64>,
    cpus: Vec<u32>,
}

/// One CPU as read, before global indices are assigned.
struct RawCpu {
    id: u32,
    package: u32,
    die: u32,
    core_id: u32,
    siblings: Vec<u32>,
    caches: Vec<RawCache>,
    max_freq_khz: Option<u64>,
    capacity: Option<u32>,
}

const CPU: &str = "sys/devices/system/cpu";
const NODE: &str = "sys/devices/system/node";

impl Topology {
    /// Reads `<root>/sys/devices/system/{cpu,node}` (root "/" for this machine).
    pub fn read(root: &Path) -> Result<Topology, TopologyError> {
        let fs = Fs { root };
        let online = fs.list(&format!("{CPU}/online"))?;
        if online.is_empty() {
            return Err(TopologyError::NoCpus {
                path: fs.path(&format!("{CPU}/online")),
            });
        }
        let raw = online
            .iter()
            .map(|&id| read_cpu(&fs, id, &online))
            .collect::<Result<Vec<_>, _>>()?;
        let mut topo = Topology {
            possible: fs.list_opt(&format!("{CPU}/possible"))?,
            present: fs.list_opt(&format!("{CPU}/present"))?,
            isolated: fs.list_opt(&format!("{CPU}/isolated"))?.unwrap_or_default(),
            ..Default::default()
        };
        topo.build_cpus(&raw);
        topo.build_nodes(&fs, &online)?;
        Ok(topo)
    }

    /// Assigns global core, L2 and LLC indices in order of each group's
    /// lowest CPU.
    fn build_cpus(&mut self, raw: &[RawCpu]) {
        let mut core_ix: BTreeMap<Vec<u32>, u32> = BTreeMap::new();
        let mut l2_ix: BTreeMap<(u8, Vec<u32>), u32> = BTreeMap::new();
        let mut llc_ix: BTreeMap<(u8, Vec<u32>), u32> = BTreeMap::new();
        let mut no_cache = Vec::new();
        for r in raw {
            let core = *core_ix.entry(r.siblings.clone()).or_insert_with(|| {
                self.cores.push(Core {
                    id: self.cores.len() as u32,
                    package: r.package,
                    die: r.die,
                    core_id: r.core_id,
                    cpus: r.siblings.clone(),
                });
                self.cores.len() as u32 - 1
            });
            let (llc_cache, fallback) = llc_of(r, raw);
            if fallback {
                no_cache.push(r.id);
            }
            let llc = group_index(&mut llc_ix, &mut self.llc_groups, &llc_cache);
            let l2 = r
                .caches
                .iter()
                .find(|c| c.level == 2)
                .map(|c| group_index(&mut l2_ix, &mut self.l2_groups, c));
            self.cpus.push(Cpu {
                id: r.id,
                package: r.package,
                die: r.die,
                core,
                core_id: r.core_id,
                siblings: r.siblings.clone(),
                l2,
                llc,
                node: 0,
                max_freq_khz: r.max_freq_khz,
                capacity: r.capacity,
            });
        }
        if !no_cache.is_empty() {
            self.notes.push(format!(
                "no cache data in sysfs for CPUs {}: their package stands in for the \
                 last-level cache",
                cpulist::format(&no_cache)
            ));
        }
    }

    /// Reads nodes and distances and sets each CPU's node. Without a node
    /// directory (kernel without NUMA) everything is node 0.
    fn build_nodes(&mut self, fs: &Fs, online: &[u32]) -> Result<(), TopologyError> {
        let Some(ids) = fs.list_opt(&format!("{NODE}/online"))? else {
            self.notes
                .push("no NUMA information in sysfs; all CPUs are in node 0".to_string());
            self.nodes = vec![Node {
                id: 0,
                cpus: online.to_vec(),
                distances: BTreeMap::from([(0, 10)]),
            }];
            return Ok(());
        };
        for &id in &ids {
            let cpus: Vec<u32> = fs
                .list(&format!("{NODE}/node{id}/cpulist"))?
                .into_iter()
                .filter(|c| online.contains(c))
                .collect();
            let distances = read_distances(fs, id, &ids)?;
            for cpu in self.cpus.iter_mut().filter(|c| cpus.contains(&c.id)) {
                cpu.node = id;
            }
            self.nodes.push(Node {
                id,
                cpus,
                distances,
            });
        }
        let homeless: Vec<u32> = online
            .iter()
            .copied()
            .filter(|c| !self.nodes.iter().any(|n| n.cpus.contains(c)))
            .collect();
        if !homeless.is_empty() {
            let first = self.nodes.first().map_or(0, |n| n.id);
            self.notes.push(format!(
                "CPUs {} are in no node's cpulist; counted in node {first}",
                cpulist::format(&homeless)
            ));
        }
        Ok(())
    }

    /// The CPU with this id, if online.
    pub fn cpu(&self, id: u32) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// Online CPU ids.
    pub fn online(&self) -> Vec<u32> {
        self.cpus.iter().map(|c| c.id).collect()
    }

    /// `possible` CPUs, if sysfs has the file.
    pub fn possible(&self) -> Option<&[u32]> {
        self.possible.as_deref()
    }

    /// `present` CPUs, if sysfs has the file.
    pub fn present(&self) -> Option<&[u32]> {
        self.present.as_deref()
    }

    /// CPUs isolated from the scheduler's load balancing (`isolcpus=`).
    pub fn isolated(&self) -> &[u32] {
        &self.isolated
    }

    /// Physical cores (groups of SMT siblings), by global index.
    pub fn cores(&self) -> &[Core] {
        &self.cores
    }

    /// L2 sharing groups, by global index.
    pub fn l2_groups(&self) -> &[CacheGroup] {
        &self.l2_groups
    }

    /// Last-level-cache sharing groups, by global index.
    pub fn llc_groups(&self) -> &[CacheGroup] {
        &self.llc_groups
    }

    /// NUMA nodes, by id.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node with this id.
    pub fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Distance between two nodes (10 = local).
    pub fn distance(&self, from: u32, to: u32) -> Option<u32> {
        self.node(from)?.distances.get(&to).copied()
    }

    /// Distinct packages, sorted.
    pub fn packages(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self.cpus.iter().map(|c| c.package).collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// Most logical CPUs on one core (1: no SMT).
    pub fn smt_width(&self) -> usize {
        self.cores.iter().map(|c| c.cpus.len()).max().unwrap_or(1)
    }

    /// What was missing from sysfs and how it was worked around.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// A CPU's performance figure: `cpu_capacity` where the kernel gives
    /// differing capacities, else `cpuinfo_max_freq`; `None` when neither
    /// tells CPUs apart.
    pub fn performance(&self, id: u32) -> Option<u64> {
        let cpu = self.cpu(id)?;
        if self.capacities_differ() {
            cpu.capacity.map(u64::from)
        } else {
            cpu.max_freq_khz
        }
    }

    fn capacities_differ(&self) -> bool {
        let caps: Vec<Option<u32>> = self.cpus.iter().map(|c| c.capacity).collect();
        caps.iter().all(Option::is_some) && caps.windows(2).any(|w| w[0] != w[1])
    }

    /// Efficiency CPUs of a hybrid part (performance below 90% of the
    /// fastest CPU's); empty on uniform machines.
    pub fn efficiency_cpus(&self) -> Vec<u32> {
        let perf: Vec<(u32, u64)> = self
            .cpus
            .iter()
            .filter_map(|c| self.performance(c.id).map(|p| (c.id, p)))
            .collect();
        let Some(max) = perf.iter().map(|p| p.1).max() else {
            return Vec::new();
        };
        perf.into_iter()
            .filter(|&(_, p)| (p as f64) < max as f64 * EFFICIENCY_SHARE)
            .map(|(id, _)| id)
            .collect()
    }

    /// True on hybrid parts (some CPUs markedly slower than others).
    pub fn is_hybrid(&self) -> bool {
        !self.efficiency_cpus().is_empty()
    }
}

fn read_cpu(fs: &Fs, id: u32, online: &[u32]) -> Result<RawCpu, TopologyError> {
    let d = format!("{CPU}/cpu{id}");
    let mut siblings = fs
        .list_opt(&format!("{d}/topology/thread_siblings_list"))?
        .unwrap_or_default();
    siblings.retain(|c| online.contains(c));
    if !siblings.contains(&id) {
        siblings.push(id);
        siblings.sort_unstable();
    }
    Ok(RawCpu {
        id,
        package: fs.id(&format!("{d}/topology/physical_package_id"))?,
        die: fs.id_opt(&format!("{d}/topology/die_id"))?.unwrap_or(0),
        core_id: fs.id(&format!("{d}/topology/core_id"))?,
        siblings,
        caches: read_caches(fs, &d, id, online)?,
        max_freq_khz: fs.u64_opt(&format!("{d}/cpufreq/cpuinfo_max_freq"))?,
        capacity: fs
            .u64_opt(&format!("{d}/cpu_capacity"))?
            .and_then(|c| u32::try_from(c).ok()),
    })
}

/// Data and unified caches of one CPU, in the order of their index numbers
/// (which say nothing about the level).
fn read_caches(
    fs: &Fs,
    dir: &str,
    id: u32,
    online: &[u32],
) -> Result<Vec<RawCache>, TopologyError> {
    let cache_dir = fs.path(&format!("{dir}/cache"));
    let entries = match std::fs::read_dir(&cache_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Read {
                path: cache_dir,
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("index"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let e = format!("{dir}/cache/{name}");
        let kind = fs.read_opt(&format!("{e}/type"))?.unwrap_or_default();
        if kind.trim() == "Instruction" {
            continue;
        }
        let level = fs.id(&format!("{e}/level"))?;
        let mut cpus = fs.list(&format!("{e}/shared_cpu_list"))?;
        cpus.retain(|c| online.contains(c));
        if !cpus.contains(&id) {
            cpus.push(id);
            cpus.sort_unstable();
        }
        let size = fs.read_opt(&format!("{e}/size"))?;
        out.push(RawCache {
            level: u8::try_from(level).unwrap_or(u8::MAX),
            size_kib: size.as_deref().and_then(parse_size_kib),
            cpus,
        });
    }
    Ok(out)
}

/// "48K", "32768K", "1M" -> KiB.
fn parse_size_kib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K') => (&s[..i], 1),
        (i, 'M') => (&s[..i], 1024),
        (i, 'G') => (&s[..i], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

/// The CPU's highest-level data/unified cache, or (flagged `true`) its
/// package's CPUs when sysfs has no caches for it.
fn llc_of(r: &RawCpu, all: &[RawCpu]) -> (RawCache, bool) {
    match r.caches.iter().max_by_key(|c| c.level) {
        Some(c) => (
            RawCache {
                level: c.level,
                size_kib: c.size_kib,
                cpus: c.cpus.clone(),
            },
            false,
        ),
        None => (
            RawCache {
                level: 0,
                size_kib: None,
                cpus: all
                    .iter()
                    .filter(|o| o.package == r.package)
                    .map(|o| o.id)
                    .collect(),
            },
            true,
        ),
    }
}

fn group_index(
    index: &mut BTreeMap<(u8, Vec<u32>), u32>,
    groups: &mut Vec<CacheGroup>,
    c: &RawCache,
) -> u32 {
    *index.entry((c.level, c.cpus.clone())).or_insert_with(|| {
        groups.push(CacheGroup {
            id: groups.len() as u32,
            level: c.level,
            size_kib: c.size_kib,
            cpus: c.cpus.clone(),
        });
        groups.len() as u32 - 1
    })
}

/// `nodeN/distance` lists distances to the online nodes in order
/// (`node_read_distance()` in drivers/base/node.c).
fn read_distances(fs: &Fs, id: u32, ids: &[u32]) -> Result<BTreeMap<u32, u32>, TopologyError> {
    let rel = format!("{NODE}/node{id}/distance");
    let Some(text) = fs.read_opt(&rel)? else {
        return Ok(BTreeMap::from([(id, 10)]));
    };
    let values = text
        .split_whitespace()
        .map(|v| v.parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fs.bad(&rel, "space-separated distances", &text))?;
    Ok(ids.iter().copied().zip(values).collect())
}

/// The CPUs process `pid` may use: its affinity (`Cpus_allowed_list`) and,
/// where it can be found, its cgroup cpuset's effective CPUs.
pub fn allowed_cpus(root: &Path, pid: u32) -> Result<AllowedCpus, TopologyError> {
    use procfs::FromRead as _;
    let fs = Fs { root };
    let status_path = fs.path(&format!("proc/{pid}/status"));
    let status =
        procfs::process::Status::from_file(&status_path).map_err(|source| TopologyError::Proc {
            path: status_path.clone(),
            pid,
            source,
        })?;
    let ranges = status
        .cpus_allowed_list
        .ok_or(TopologyError::NoAllowedList { path: status_path })?;
    let affinity: Vec<u32> = ranges.into_iter().flat_map(|(a, b)| a..=b).collect();
    let mut out = AllowedCpus {
        cpus: affinity.clone(),
        affinity,
        ..Default::default()
    };
    match cpuset_of(&fs, pid) {
        Ok((file, cpus)) => {
            out.cpus.retain(|c| cpus.contains(c));
            out.cpuset = Some(cpus);
            out.cpuset_file = Some(file);
        }
        Err(why) => out.notes.push(format!(
            "cpuset of process {pid} not read ({why}); using its affinity alone"
        )),
    }
    Ok(out)
}

/// Finds the cpuset file for the process's cgroup: the v1 cpuset hierarchy
/// when the process is in one, else the v2 hierarchy. A cgroup without the
/// file (v2: cpuset not enabled there) inherits its parent's CPUs, so the
/// search walks up to the nearest ancestor that has one.
fn cpuset_of(fs: &Fs, pid: u32) -> Result<(PathBuf, Vec<u32>), String> {
    use procfs::FromRead as _;
    let cg_path = fs.path(&format!("proc/{pid}/cgroup"));
    let groups = procfs::ProcessCGroups::from_file(&cg_path)
        .map_err(|e| format!("{}: {e}", cg_path.display()))?;
    let v1 = groups
        .0
        .iter()
        .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == "cpuset"));
    let (base, file, cgroup) = match v1 {
        Some(g) => ("sys/fs/cgroup/cpuset", "cpuset.effective_cpus", &g.pathname),
        None => {
            let g = groups
                .0
                .iter()
                .find(|g| g.hierarchy == 0)
                .ok_or_else(|| format!("{}: no cpuset or v2 cgroup line", cg_path.display()))?;
            ("sys/fs/cgroup", "cpuset.cpus.effective", &g.pathname)
        }
    };
    let mut dir = PathBuf::from(cgroup.trim_start_matches('/'));
    loop {
        let rel = Path::new(base).join(&dir).join(file);
        let rel = rel.to_string_lossy();
        match fs.list_opt(&rel) {
            Ok(Some(cpus)) => return Ok((fs.path(&rel), cpus)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if !dir.pop() {
            return Err(format!(
                "no {file} under {} for cgroup {cgroup}",
                fs.path(base).display()
            ));
        }
    }
}

/// Human-readable topology for `affin-trace topology`.
pub fn render_text(t: &Topology) -> String {
    let mut s = String::new();
    summary(&mut s, t);
    let _ = writeln!(s, "\nNUMA nodes:");
    for n in t.nodes() {
        let d: Vec<String> = n.distances.values().map(u32::to_string).collect();
        let _ = writeln!(
            s,
            "  node {:<3} cpus {:<24} distances {}",
            n.id,
            cpulist::format(&n.cpus),
            d.join(" ")
        );
    }
    let _ = writeln!(s, "\nLast-level caches:");
    for g in t.llc_groups() {
        let _ = writeln!(s, "  llc {:<4} {}", g.id, describe_cache(g));
    }
    if !t.l2_groups().is_empty() {
        let _ = writeln!(s, "\nL2 caches shared by more than one core:");
        let mut any = false;
        for g in t.l2_groups().iter().filter(|g| spans_cores(t, g)) {
            any = true;
            let _ = writeln!(s, "  l2 {:<5} {}", g.id, describe_cache(g));
        }
        if !any {
            let _ = writeln!(s, "  none (one L2 per core)");
        }
    }
    let _ = writeln!(s, "\nCores:");
    for c in t.cores() {
        core_line(&mut s, t, c);
    }
    for n in t.notes() {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

fn summary(s: &mut String, t: &Topology) {
    let online = t.online();
    let iso = if t.isolated().is_empty() {
        "none".to_string()
    } else {
        cpulist::format(t.isolated())
    };
    let _ = write!(
        s,
        "{} CPUs online ({})",
        online.len(),
        cpulist::format(&online)
    );
    if let Some(p) = t.possible().filter(|p| p.len() != online.len()) {
        let _ = write!(s, " of {} possible", p.len());
    }
    let _ = writeln!(s, ", isolated: {iso}");
    let hybrid = match t.efficiency_cpus() {
        e if e.is_empty() => String::new(),
        e => format!(", hybrid (efficiency CPUs: {})", cpulist::format(&e)),
    };
    let _ = writeln!(
        s,
        "{} package(s), {} physical cores, SMT x{}, {} last-level cache group(s), \
         {} NUMA node(s){hybrid}",
        t.packages().len(),
        t.cores().len(),
        t.smt_width(),
        t.llc_groups().len(),
        t.nodes().len(),
    );
}

fn describe_cache(g: &CacheGroup) -> String {
    let level = match g.level {
        0 => "package (no cache data)".to_string(),
        l => format!("L{l}"),
    };
    let size = g.size_kib.map_or(String::new(), |k| format!(" {k}K"));
    format!("{level}{size}, cpus {}", cpulist::format(&g.cpus))
}

fn spans_cores(t: &Topology, g: &CacheGroup) -> bool {
    let mut cores: Vec<u32> = g
        .cpus
        .iter()
        .filter_map(|&c| t.cpu(c).map(|c| c.core))
        .collect();
    cores.sort_unstable();
    cores.dedup();
    cores.len() > 1
}

fn core_line(s: &mut String, t: &Topology, c: &Core) {
    let first = c.cpus.first().and_then(|&id| t.cpu(id));
    let (llc, node, l2) = first.map_or((0, 0, None), |f| (f.llc, f.node, f.l2));
    let mut extra = String::new();
    if let Some(f) = first.and_then(|f| f.max_freq_khz) {
        let _ = write!(extra, " max {:.2} GHz", f as f64 / 1e6);
    }
    if let Some(cap) = first.and_then(|f| f.capacity) {
        let _ = write!(extra, " capacity {cap}");
    }
    let l2 = l2.map_or("-".to_string(), |g| g.to_string());
    let _ = writeln!(
        s,
        "  core {:<4} pkg {} die {} core_id {:<4} cpus {:<8} l2 {:<4} llc {:<3} node {}{}",
        c.id,
        c.package,
        c.die,
        c.core_id,
        cpulist::format(&c.cpus),
        l2,
        llc,
        node,
        extra
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/sysfs")
            .join(name)
    }

    fn read(name: &str) -> Topology {
        Topology::read(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn vm_fixture_is_two_cores_one_llc_one_node() {
        let t = read("vm-2cpu");
        assert_eq!(t.online(), vec![0, 1]);
        assert_eq!(t.cores().len(), 2);
        assert_eq!(t.smt_width(), 1);
        assert_eq!(t.llc_groups().len(), 1);
        assert_eq!(t.llc_groups()[0].level, 3);
        assert_eq!(t.llc_groups()[0].cpus, vec![0, 1]);
        assert_eq!(t.nodes().len(), 1);
        assert_eq!(t.distance(0, 0), Some(10));
        assert!(t.isolated().is_empty());
        assert_eq!(t.cpus[1].capacity, Some(1024));
        assert!(!t.is_hybrid());
        assert!(t.notes().is_empty(), "{:?}", t.notes());
    }

    #[test]
    fn server_cores_are_global_and_siblings_follow_intel_numbering() {
        let t = read("server-2s-smt");
        assert_eq!(t.cpus.len(), 20);
        assert_eq!(t.packages(), vec![0, 1]);
        assert_eq!(t.cores().len(), 10);
        assert_eq!(t.smt_width(), 2);
        // cpu0 and cpu5 have the same raw core_id on different sockets.
        let (c0, c5) = (t.cpu(0).unwrap(), t.cpu(5).unwrap());
        assert_eq!(c0.core_id, c5.core_id);
        assert_ne!(c0.core, c5.core);
        assert_eq!(c0.siblings, vec![0, 10]);
        assert_eq!(t.cpu(10).unwrap().core, c0.core);
        assert_eq!(t.cpu(17).unwrap().package, 1);
    }

    #[test]
    fn server_has_one_llc_per_socket_and_two_nodes() {
        let t = read("server-2s-smt");
        assert_eq!(t.llc_groups().len(), 2);
        assert_eq!(t.llc_groups()[0].cpus, cpulist::parse("0-4,10-14").unwrap());
        assert_eq!(t.llc_groups()[1].cpus, cpulist::parse("5-9,15-19").unwrap());
        assert_eq!(t.llc_groups()[0].size_kib, Some(15360));
        assert_eq!(t.l2_groups().len(), 10);
        assert_eq!(t.cpu(15).unwrap().node, 1);
        assert_eq!(t.cpu(14).unwrap().node, 0);
        assert_eq!(t.distance(0, 1), Some(21));
        assert_eq!(t.distance(1, 1), Some(10));
    }

    #[test]
    fn epyc_has_eight_ccds_in_two_nodes() {
        let t = read("epyc-64c");
        assert_eq!(t.cpus.len(), 128);
        assert_eq!(t.cores().len(), 64);
        assert_eq!(t.cpu(3).unwrap().siblings, vec![3, 67]);
        assert_eq!(t.llc_groups().len(), 8);
        for g in t.llc_groups() {
            assert_eq!(g.cpus.len(), 16, "8 cores x 2 threads");
            let nodes: Vec<u32> = g.cpus.iter().map(|&c| t.cpu(c).unwrap().node).collect();
            assert!(nodes.iter().all(|&n| n == nodes[0]), "L3 within one node");
        }
        assert_eq!(t.node(1).unwrap().cpus.len(), 64);
        assert_eq!(t.distance(1, 0), Some(12));
    }

    #[test]
    fn hybrid_laptop_has_efficiency_cores_and_shared_l2() {
        let t = read("hybrid-laptop");
        assert_eq!(t.cpus.len(), 20);
        assert_eq!(t.cores().len(), 14, "6 P-cores + 8 E-cores");
        assert!(t.is_hybrid());
        assert_eq!(t.efficiency_cpus(), (12..20).collect::<Vec<u32>>());
        assert_eq!(t.cpu(0).unwrap().max_freq_khz, Some(4_700_000));
        assert_eq!(t.cpu(1).unwrap().siblings, vec![0, 1]);
        let l2 = t.cpu(13).unwrap().l2.unwrap();
        assert_eq!(t.l2_groups()[l2 as usize].cpus, vec![12, 13, 14, 15]);
        assert_ne!(t.cpu(16).unwrap().l2, Some(l2));
        assert_eq!(t.llc_groups().len(), 1);
    }

    #[test]
    fn cache_levels_come_from_level_files_not_index_numbers() {
        // index0 is the L3 here, index1 the L1d and index2 the L2.
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("sys/devices/system/cpu/online", "0-1\n");
        for c in 0..2 {
            let d = format!("sys/devices/system/cpu/cpu{c}");
            w(&format!("{d}/topology/physical_package_id"), "0");
            w(&format!("{d}/topology/core_id"), &c.to_string());
            w(
                &format!("{d}/topology/thread_siblings_list"),
                &c.to_string(),
            );
            for (k, level, shared) in [(0, "3", "0-1"), (1, "1", ""), (2, "2", "")] {
                let shared = if shared.is_empty() {
                    c.to_string()
                } else {
                    shared.to_string()
                };
                w(&format!("{d}/cache/index{k}/level"), level);
                w(&format!("{d}/cache/index{k}/type"), "Unified");
                w(&format!("{d}/cache/index{k}/shared_cpu_list"), &shared);
            }
        }
        let t = Topology::read(dir.path()).unwrap();
        assert_eq!(t.llc_groups().len(), 1);
        assert_eq!(t.llc_groups()[0].level, 3);
        assert_eq!(t.l2_groups().len(), 2);
        // No node directory: one node, with a note.
        assert_eq!(t.nodes().len(), 1);
        assert!(t.notes().iter().any(|n| n.contains("NUMA")));
    }

    #[test]
    fn missing_caches_fall_back_to_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("sys/devices/system/cpu");
        std::fs::create_dir_all(base.join("cpu0/topology")).unwrap();
        std::fs::write(base.join("online"), "0\n").unwrap();
        std::fs::write(base.join("cpu0/topology/physical_package_id"), "-1\n").unwrap();
        std::fs::write(base.join("cpu0/topology/core_id"), "0\n").unwrap();
        let t = Topology::read(dir.path()).unwrap();
        assert_eq!(t.cpus[0].package, 0, "-1 (unknown) reads as 0");
        assert_eq!(t.llc_groups()[0].level, 0);
        assert!(t.notes().iter().any(|n| n.contains("cache")));
    }

    #[test]
    fn missing_sysfs_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Topology::read(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sys/devices/system/cpu/online"), "{msg}");
        assert!(msg.contains("mounted"), "{msg}");
    }

    #[test]
    fn size_strings_parse_to_kib() {
        assert_eq!(parse_size_kib("48K\n"), Some(48));
        assert_eq!(parse_size_kib("1M"), Some(1024));
        assert_eq!(parse_size_kib("512"), Some(512));
        assert_eq!(parse_size_kib("x"), None);
    }

    #[test]
    fn allowed_cpus_v2_walks_up_to_the_nearest_cpuset() {
        let a = allowed_cpus(&fixture("server-2s-smt"), 4242).unwrap();
        assert_eq!(a.affinity, vec![5, 6, 7]);
        assert_eq!(a.cpuset, Some(cpulist::parse("5-9,15-19").unwrap()));
        assert!(
            a.cpuset_file
                .unwrap()
                .ends_with("system.slice/cpuset.cpus.effective")
        );
        assert_eq!(a.cpus, vec![5, 6, 7]);
    }

    #[test]
    fn allowed_cpus_v1_uses_the_cpuset_hierarchy() {
        let a = allowed_cpus(&fixture("epyc-64c"), 4242).unwrap();
        assert_eq!(a.cpus, cpulist::parse("0-7,64-71").unwrap());
        assert!(
            a.cpuset_file
                .unwrap()
                .ends_with("cpuset/docker/abc/cpuset.effective_cpus")
        );
        let vm = allowed_cpus(&fixture("vm-2cpu"), 4242).unwrap();
        assert_eq!(vm.cpus, vec![0, 1]);
        assert!(vm.notes.is_empty(), "{:?}", vm.notes);
    }

    #[test]
    fn allowed_cpus_of_a_missing_process_names_the_file() {
        let e = allowed_cpus(&fixture("vm-2cpu"), 1).unwrap_err();
        assert!(e.to_string().contains("proc/1/status"), "{e}");
        assert!(e.to_string().contains("still running"), "{e}");
    }

    #[test]
    fn render_text_shows_groups_and_cores() {
        let text = render_text(&read("hybrid-laptop"));
        assert!(
            text.starts_with("20 CPUs online (0-19), isolated: none"),
            "{text}"
        );
        assert!(text.contains("hybrid (efficiency CPUs: 12-19)"), "{text}");
        assert!(text.contains("cpus 12-15"), "{text}");
        assert!(text.contains("max 4.70 GHz"), "{text}");
        let server = render_text(&read("server-2s-smt"));
        assert!(
            server.contains("2 package(s), 10 physical cores, SMT x2"),
            "{server}"
        );
        assert!(server.contains("distances 10 21"), "{server}");
        assert!(server.contains("none (one L2 per core)"), "{server}");
    }

    #[test]
    fn topology_serializes_to_json() {
        let v = serde_json::to_value(read("server-2s-smt")).unwrap();
        assert_eq!(v["cpus"].as_array().unwrap().len(), 20);
        assert_eq!(v["llc_groups"].as_array().unwrap().len(), 2);
        assert_eq!(v["nodes"][0]["distances"]["1"], 21);
    }
}
