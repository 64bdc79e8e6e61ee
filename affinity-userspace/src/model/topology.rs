//! The machine's CPU topology as plain values: per-CPU package, die, global
//! core index, SMT siblings, L2 and last-level-cache groups, NUMA node, max
//! frequency and capacity, plus cores, cache groups, nodes with distances
//! and isolated CPUs; and the CPUs one process may use ([`AllowedCpus`]).
//!
//! `host::topology` reads sysfs into a [`RawTopology`]; [`Topology::from_raw`]
//! derives the global indices from it here, without touching the system, so
//! tests can build one from values. Missing optional parts (caches, nodes,
//! cpufreq) degrade with a note.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::cpulist;

/// A CPU whose performance (capacity or max frequency) is below this share
/// of the fastest CPU's counts as an efficiency CPU. Intel "favoured cores"
/// differ by a few percent in max frequency; P/E and big/LITTLE differ by
/// 25% or more.
const EFFICIENCY_SHARE: f64 = 0.9;

/// One logical CPU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Node number.
    pub id: u32,
    /// Online CPUs on the node.
    pub cpus: Vec<u32>,
    /// Distance to each online node (10 = local), from `distance`.
    pub distances: BTreeMap<u32, u32>,
}

/// The machine's CPU topology.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// One cache as sysfs describes it for one CPU.
pub(crate) struct RawCache {
    pub(crate) level: u8,
    pub(crate) size_kib: Option<u64>,
    pub(crate) cpus: Vec<u32>,
}

/// One CPU as read, before global indices are assigned.
pub(crate) struct RawCpu {
    pub(crate) id: u32,
    pub(crate) package: u32,
    pub(crate) die: u32,
    pub(crate) core_id: u32,
    pub(crate) siblings: Vec<u32>,
    pub(crate) caches: Vec<RawCache>,
    pub(crate) max_freq_khz: Option<u64>,
    pub(crate) capacity: Option<u32>,
}

/// What sysfs says, before the global indices are derived.
pub(crate) struct RawTopology {
    /// Online CPUs (not empty).
    pub(crate) online: Vec<u32>,
    pub(crate) possible: Option<Vec<u32>>,
    pub(crate) present: Option<Vec<u32>>,
    pub(crate) isolated: Vec<u32>,
    /// One per online CPU.
    pub(crate) cpus: Vec<RawCpu>,
    /// The nodes with their (all, not only online) CPUs and distances;
    /// `None` on a kernel without NUMA (no node directory).
    pub(crate) nodes: Option<Vec<Node>>,
}

impl Topology {
    /// Derives the topology from what was read: global core, cache-group
    /// and node indices.
    pub(crate) fn from_raw(raw: RawTopology) -> Topology {
        let mut topo = Topology {
            possible: raw.possible,
            present: raw.present,
            isolated: raw.isolated,
            ..Default::default()
        };
        topo.build_cpus(&raw.cpus);
        topo.place_nodes(raw.nodes, &raw.online);
        topo
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

    /// Keeps each node's online CPUs and sets each CPU's node. Without node
    /// data (kernel without NUMA) everything is node 0.
    fn place_nodes(&mut self, nodes: Option<Vec<Node>>, online: &[u32]) {
        let Some(nodes) = nodes else {
            self.notes
                .push("no NUMA information in sysfs; all CPUs are in node 0".to_string());
            self.nodes = vec![Node {
                id: 0,
                cpus: online.to_vec(),
                distances: BTreeMap::from([(0, 10)]),
            }];
            return;
        };
        for mut node in nodes {
            node.cpus.retain(|c| online.contains(c));
            for cpu in self.cpus.iter_mut().filter(|c| node.cpus.contains(&c.id)) {
                cpu.node = node.id;
            }
            self.nodes.push(node);
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

/// The fixture machines as values, for tests that read no files. The JSON
/// is what `host::topology` reads from tests/fixtures/sysfs/<name> (its
/// tests keep the two equal).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::Topology;

    /// The JSON of one fixture machine.
    pub(crate) fn machine_json(name: &str) -> &'static str {
        match name {
            "vm-2cpu" => include_str!("../../../tests/fixtures/topology/vm-2cpu.json"),
            "server-2s-smt" => include_str!("../../../tests/fixtures/topology/server-2s-smt.json"),
            "epyc-64c" => include_str!("../../../tests/fixtures/topology/epyc-64c.json"),
            "hybrid-laptop" => include_str!("../../../tests/fixtures/topology/hybrid-laptop.json"),
            _ => panic!("no fixture machine {name:?}"),
        }
    }

    /// One fixture machine.
    pub(crate) fn machine(name: &str) -> Topology {
        serde_json::from_str(machine_json(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}
