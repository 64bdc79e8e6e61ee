//! Reads the CPU topology from sysfs, under a [`Root`] so fixture trees stand
//! in for the machine, into the plain values of [`crate::model::topology`].
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

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::host::root::Root;
use crate::model::cpulist::{self, CpuListError};
pub use crate::model::topology::{AllowedCpus, Topology};
use crate::model::topology::{Node, RawCache, RawCpu, RawTopology};

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
/// File access under the root seam.
struct Fs<'a> {
    root: &'a Root,
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
const CPU: &str = "sys/devices/system/cpu";
const NODE: &str = "sys/devices/system/node";

impl Topology {
    /// Reads `<root>/sys/devices/system/{cpu,node}` (`Root::host()` for this
    /// machine).
    pub fn read(root: &Root) -> Result<Topology, TopologyError> {
        let fs = Fs { root };
        let online = fs.list(&format!("{CPU}/online"))?;
        if online.is_empty() {
            return Err(TopologyError::NoCpus {
                path: fs.path(&format!("{CPU}/online")),
            });
        }
        let cpus = online
            .iter()
            .map(|&id| read_cpu(&fs, id, &online))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topology::from_raw(RawTopology {
            possible: fs.list_opt(&format!("{CPU}/possible"))?,
            present: fs.list_opt(&format!("{CPU}/present"))?,
            isolated: fs.list_opt(&format!("{CPU}/isolated"))?.unwrap_or_default(),
            nodes: read_nodes(&fs)?,
            cpus,
            online,
        }))
    }
}

/// Nodes with their CPU lists and distances; `None` without a node
/// directory (kernel without NUMA).
fn read_nodes(fs: &Fs) -> Result<Option<Vec<Node>>, TopologyError> {
    let Some(ids) = fs.list_opt(&format!("{NODE}/online"))? else {
        return Ok(None);
    };
    let mut nodes = Vec::new();
    for &id in &ids {
        nodes.push(Node {
            id,
            cpus: fs.list(&format!("{NODE}/node{id}/cpulist"))?,
            distances: read_distances(fs, id, &ids)?,
        });
    }
    Ok(Some(nodes))
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
pub fn allowed_cpus(root: &Root, pid: u32) -> Result<AllowedCpus, TopologyError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::topology::render_text;

    fn fixture(name: &str) -> Root {
        Root::new(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/sysfs")
                .join(name),
        )
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
        let t = Topology::read(&Root::new(dir.path())).unwrap();
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
        let t = Topology::read(&Root::new(dir.path())).unwrap();
        assert_eq!(t.cpus[0].package, 0, "-1 (unknown) reads as 0");
        assert_eq!(t.llc_groups()[0].level, 0);
        assert!(t.notes().iter().any(|n| n.contains("cache")));
    }

    #[test]
    fn missing_sysfs_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Topology::read(&Root::new(dir.path())).unwrap_err();
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

    /// The fixture machines as values, for the pure folders' tests (which
    /// read no files): tests/fixtures/topology/<name>.json must be what the
    /// sysfs tree reads as. `cargo test -p affinity-userspace
    /// write_topology_json -- --ignored` writes them again.
    const MACHINES: [&str; 4] = ["vm-2cpu", "server-2s-smt", "epyc-64c", "hybrid-laptop"];

    fn json_fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/topology")
            .join(format!("{name}.json"))
    }

    #[test]
    fn topology_json_fixtures_match_the_sysfs_trees() {
        for name in MACHINES {
            let path = json_fixture(name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value: Topology =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                value,
                read(name),
                "{} is stale: run `cargo test -p affinity-userspace write_topology_json -- --ignored`",
                path.display()
            );
        }
    }

    #[test]
    #[ignore = "writes tests/fixtures/topology/*.json"]
    fn write_topology_json() {
        for name in MACHINES {
            let path = json_fixture(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let text = serde_json::to_string_pretty(&read(name)).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
    }
}
