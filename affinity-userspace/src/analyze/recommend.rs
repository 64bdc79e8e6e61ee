//! CPU-affinity recommendation: a class, the process's features, its trace
//! and the machine's [`Topology`] in; a CPU set, a `taskset` command and the
//! rationale out.
//!
//! The set is sized from measured demand (effective parallelism rounded up,
//! at least 1; bursty work: its peak interval) and shaped by class:
//! - cpu_intensive_steady: one logical CPU per physical core, SMT sibling
//!   left idle, on the cores the rest of the machine used least
//!   (`Trace::system_busy_ns` minus the target's own time);
//! - cpu_intensive_bursty: whole cores with their SMT siblings;
//! - migration_heavy, cache_sensitive: inside one last-level-cache group and
//!   one NUMA node, the group where the threads ran most;
//! - io_bound: few CPUs, efficiency cores on hybrid parts;
//! - balanced: one NUMA node, the one holding most of the process's memory
//!   ([`parse_numa_maps`]), else where it ran most.
//!
//! The result never leaves the allowed set; when the ideal set does not fit
//! in it, the rationale says so. Isolated CPUs (`isolcpus=`) are avoided:
//! the scheduler does not balance threads across them.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::analyze::classify::Class;
use crate::analyze::features::Features;
use crate::model::cpulist;
use crate::model::topology::Topology;
use crate::model::{Trace, saturating_sum};

/// Parallelism just above a whole number (2.004) is measurement slack
/// (the window and the CPU-time reads are not taken at the same instant),
/// not demand for another CPU.
const DEMAND_SLACK: f64 = 0.01;

/// What to recommend for.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The processes the command applies to: every one of the target, so
    /// the advice is one decision for all of them.
    pub pids: &'a [u32],
    /// Its class (process-wide).
    pub class: Class,
    /// Its process-wide features.
    pub features: &'a Features,
    /// The trace (per-CPU run time, system-wide busy time).
    pub trace: &'a Trace,
    /// The machine.
    pub topology: &'a Topology,
    /// CPUs the process may use (cpuset and affinity); `None`: all online.
    pub allowed: Option<&'a [u32]>,
    /// Bytes of the process's memory per NUMA node ([`parse_numa_maps`]).
    pub numa_memory: Option<&'a BTreeMap<u32, u64>>,
}

/// The recommended placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// The class it was made for.
    pub class: Class,
    /// Recommended CPUs, sorted.
    pub cpus: Vec<u32>,
    /// The same as a kernel CPU list ("0-3,8").
    pub cpulist: String,
    /// The NUMA node it binds to, for node-level placements (balanced).
    pub numa_node: Option<u32>,
    /// Applies it to every thread of the running process; `None` when no CPU
    /// could be recommended.
    pub command: Option<String>,
    /// Why these CPUs, one statement per line.
    pub rationale: Vec<String>,
}

/// Bytes of memory per NUMA node from `/proc/<pid>/numa_maps`: each
/// `N<node>=<pages>` count times the mapping's `kernelpagesize_kB` (4 KiB
/// when absent), so huge pages weigh what they hold. Unreadable tokens are
/// skipped.
pub fn parse_numa_maps(text: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let page_kib = line
            .split_whitespace()
            .find_map(|t| t.strip_prefix("kernelpagesize_kB="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(4);
        for (node, pages) in line.split_whitespace().filter_map(node_count) {
            let bytes = pages.saturating_mul(page_kib.saturating_mul(1024));
            let sum = out.entry(node).or_insert(0u64);
            *sum = sum.saturating_add(bytes);
        }
    }
    out
}

/// "N1=250" -> (1, 250).
fn node_count(token: &str) -> Option<(u32, u64)> {
    let (node, pages) = token.strip_prefix('N')?.split_once('=')?;
    Some((node.parse().ok()?, pages.parse().ok()?))
}

/// CPUs the measured demand calls for: CPU demand (running + runnable)
/// per wall second rounded up, at least 1. Usage (effective parallelism)
/// where there is no wait split: a target other processes kept off the
/// CPU is sized for what it asked for, not shrunk to what it got.
pub fn demand(f: &Features) -> usize {
    ceil_cpus(demand_cores(f))
}

/// CPUs' worth of demand: the larger of demand and usage.
pub fn demand_cores(f: &Features) -> f64 {
    f.demand_parallelism.max(f.effective_parallelism)
}

fn ceil_cpus(x: f64) -> usize {
    if x.is_finite() {
        (x - DEMAND_SLACK).ceil().max(1.0) as usize
    } else {
        1
    }
}

/// Recommends CPUs for the request's class.
pub fn recommend(req: &Request) -> Recommendation {
    let mut rationale = vec![strategy(req.class, req.topology.llc_groups().len())];
    let (want, why) = sized(req);
    rationale.push(why);
    let online = req.topology.online();
    let ideal = Ctx::new(req, online.clone()).choose(req.class, want);
    let pick = match req.allowed {
        None => ideal,
        Some(allowed) => {
            let allowed_online: Vec<u32> = allowed
                .iter()
                .copied()
                .filter(|c| online.contains(c))
                .collect();
            if allowed_online.is_empty() {
                rationale.push(format!(
                    "none of the allowed CPUs ({}) is online: nothing to recommend",
                    cpulist::format(allowed)
                ));
                return finish(req, Pick::default(), rationale);
            }
            let pick = Ctx::new(req, allowed_online.clone()).choose(req.class, want);
            if ideal.cpus.iter().any(|c| !allowed_online.contains(c)) {
                rationale.push(format!(
                    "the ideal set {} is not inside the allowed CPUs {} (cpuset/affinity); \
                     chose {} within them instead",
                    cpulist::format(&ideal.cpus),
                    cpulist::format(&allowed_online),
                    cpulist::format(&pick.cpus)
                ));
            }
            pick
        }
    };
    finish(req, pick, rationale)
}

/// What the class's placement aims at, said only as far as it is true on
/// this machine: with one L3 every migration already stays inside it, so
/// no "cache-local" promise is made there.
fn strategy(class: Class, llc_groups: usize) -> String {
    match (class, llc_groups) {
        (Class::MigrationHeavy, 0 | 1) => {
            return "migration_heavy: as few CPUs as its demand needs, so its threads have \
                    fewer CPUs to move between (this machine has one L3: its migrations \
                    already stay inside it)"
                .into();
        }
        (Class::CacheSensitive, 0 | 1) => {
            return "cache_sensitive: the CPUs where its threads ran most (this machine has \
                    one L3: there is no other cache to keep it away from)"
                .into();
        }
        _ => {}
    }
    match class {
        Class::CpuIntensiveSteady => {
            "cpu_intensive_steady: one logical CPU per physical core, SMT siblings left idle, \
             on the least busy cores"
        }
        Class::CpuIntensiveBursty => {
            "cpu_intensive_bursty: whole physical cores with their SMT siblings, room for bursts"
        }
        Class::MigrationHeavy => {
            "migration_heavy: CPUs inside one last-level cache and one NUMA node, so migrations \
             stay cache-local"
        }
        Class::CacheSensitive => {
            "cache_sensitive: CPUs inside one last-level cache and one NUMA node, where its \
             threads ran most (warm cache)"
        }
        Class::IoBound => "io_bound: few CPUs, efficiency cores on hybrid parts",
        Class::Balanced => "balanced: one NUMA node, the one holding most of its memory",
    }
    .into()
}

/// CPUs wanted and a line saying why.
fn sized(req: &Request) -> (usize, String) {
    let f = req.features;
    let avg = demand(f);
    if req.class == Class::CpuIntensiveBursty {
        let peak = ceil_cpus(f.max_cpu_usage / 100.0).max(avg);
        return (
            peak,
            format!(
                "demand: peak interval {:.1}% of one CPU -> {peak} CPU(s) (average {:.2} -> {avg})",
                f.max_cpu_usage,
                demand_cores(f)
            ),
        );
    }
    if f.demand_parallelism > f.effective_parallelism + DEMAND_SLACK {
        return (
            avg,
            format!(
                "demand: running {:.2} + runnable {:.2} = {:.2} CPUs -> {avg} CPU(s) (usage {:.2}: \
                 it waited for CPUs it did not get)",
                f.effective_parallelism,
                f.demand_parallelism - f.effective_parallelism,
                f.demand_parallelism,
                f.effective_parallelism
            ),
        );
    }
    (
        avg,
        format!(
            "demand: effective parallelism {:.2} -> {avg} CPU(s)",
            f.effective_parallelism
        ),
    )
}

/// The shell command that sets `list` on every thread of every pid:
/// `taskset -p` takes one pid, so several get a loop.
pub fn taskset(list: &str, pids: &[u32]) -> String {
    match pids {
        [] => format!("taskset -a -c -p {list} 0"),
        [pid] => format!("taskset -a -c -p {list} {pid}"),
        _ => format!(
            "for p in {}; do taskset -a -c -p {list} $p; done",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn finish(req: &Request, pick: Pick, mut rationale: Vec<String>) -> Recommendation {
    rationale.extend(pick.notes);
    let mut cpus = pick.cpus;
    cpus.sort_unstable();
    let list = cpulist::format(&cpus);
    let command = (!cpus.is_empty()).then(|| taskset(&list, req.pids));
    if let Some(c) = &command {
        rationale.push(format!("apply to all threads: {c}"));
    }
    Recommendation {
        class: req.class,
        cpus,
        cpulist: list,
        numa_node: pick.node,
        command,
        rationale,
    }
}

/// A chosen set and what to say about it.
#[derive(Clone, Debug, Default)]
struct Pick {
    cpus: Vec<u32>,
    node: Option<u32>,
    notes: Vec<String>,
}

/// One physical core's usable CPUs.
#[derive(Clone, Debug)]
struct Slot {
    core: u32,
    node: u32,
    /// Usable CPUs, best first.
    cpus: Vec<u32>,
    /// Others' busy ns over all of the core's CPUs (a busy sibling slows it).
    busy: u64,
    efficiency: bool,
}

/// The figures a choice is made from, over one candidate set.
struct Ctx<'a> {
    topo: &'a Topology,
    /// Candidate CPUs, sorted.
    usable: Vec<u32>,
    /// The target's on-CPU ns per CPU.
    ran: BTreeMap<u32, u64>,
    /// Everyone else's busy ns per CPU.
    busy: BTreeMap<u32, u64>,
    memory: Option<&'a BTreeMap<u32, u64>>,
    efficiency: Vec<u32>,
    notes: Vec<String>,
}

impl<'a> Ctx<'a> {
    /// Candidates minus isolated CPUs (unless nothing else is left).
    fn new(req: &Request<'a>, mut usable: Vec<u32>) -> Self {
        let topo = req.topology;
        let mut notes = Vec::new();
        let isolated: Vec<u32> = usable
            .iter()
            .copied()
            .filter(|c| topo.isolated().contains(c))
            .collect();
        if !isolated.is_empty() && isolated.len() < usable.len() {
            usable.retain(|c| !isolated.contains(c));
            notes.push(format!(
                "left out isolated CPUs {} (no load balancing there)",
                cpulist::format(&isolated)
            ));
        } else if !isolated.is_empty() {
            notes.push(format!(
                "all candidate CPUs are isolated ({}): threads will not be balanced between them",
                cpulist::format(&isolated)
            ));
        }
        usable.sort_unstable();
        let ran = req.trace.totals().per_cpu_ns;
        let busy = req
            .trace
            .system_busy_ns
            .iter()
            .map(|(&c, &ns)| (c, ns.saturating_sub(ran.get(&c).copied().unwrap_or(0))))
            .collect();
        Ctx {
            topo,
            usable,
            ran,
            busy,
            memory: req.numa_memory,
            efficiency: topo.efficiency_cpus(),
            notes,
        }
    }

    fn choose(mut self, class: Class, want: usize) -> Pick {
        let mut pick = match class {
            Class::CpuIntensiveSteady => self.pick_cores(want, false),
            Class::CpuIntensiveBursty => self.pick_cores(want, true),
            Class::MigrationHeavy | Class::CacheSensitive => self.pick_llc(want),
            Class::IoBound => self.pick_io(want),
            Class::Balanced => self.pick_node(want),
        };
        self.notes.append(&mut pick.notes);
        pick.notes = self.notes;
        pick
    }

    fn ran(&self, cpus: &[u32]) -> u64 {
        saturating_sum(cpus.iter().filter_map(|c| self.ran.get(c)))
    }

    fn busy(&self, cpus: &[u32]) -> u64 {
        saturating_sum(cpus.iter().filter_map(|c| self.busy.get(c)))
    }

    fn node_of(&self, cpu: u32) -> u32 {
        self.topo.cpu(cpu).map_or(0, |c| c.node)
    }

    fn usable_in(&self, cpus: &[u32]) -> Vec<u32> {
        cpus.iter()
            .copied()
            .filter(|c| self.usable.contains(c))
            .collect()
    }

    /// Nodes with candidate CPUs, best first: most of the process's memory,
    /// then most of its run time, then least busy, then lowest id.
    fn node_order(&self) -> Vec<u32> {
        let mut nodes: Vec<(u32, Vec<u32>)> = self
            .topo
            .nodes()
            .iter()
            .map(|n| (n.id, self.usable_in(&n.cpus)))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let mem = |id: u32| self.memory.and_then(|m| m.get(&id)).copied().unwrap_or(0);
        nodes.sort_by_key(|(id, c)| (Reverse(mem(*id)), Reverse(self.ran(c)), self.busy(c), *id));
        nodes.into_iter().map(|(id, _)| id).collect()
    }

    /// Why the first node of [`Ctx::node_order`] came first.
    fn node_reason(&self, node: u32) -> String {
        let mem = self.memory.and_then(|m| m.get(&node)).copied().unwrap_or(0);
        let total_mem = self.memory.map_or(0, |m| saturating_sum(m.values()));
        let cpus = self.topo.node(node).map_or(Vec::new(), |n| n.cpus.clone());
        let total_ran = saturating_sum(self.ran.values());
        if mem > 0 {
            format!(
                "node {node} holds {:.0}% of its memory ({} MiB, numa_maps)",
                100.0 * mem as f64 / total_mem as f64,
                mem >> 20
            )
        } else if total_ran > 0 && self.ran(&cpus) > 0 {
            format!(
                "node {node} is where its threads ran most ({:.0}% of their CPU time)",
                100.0 * self.ran(&cpus) as f64 / total_ran as f64
            )
        } else {
            format!("node {node}: no memory or run-time data to prefer another node")
        }
    }

    /// Candidate cores, each with its usable CPUs (least busy first).
    fn slots(&self) -> Vec<Slot> {
        self.topo
            .cores()
            .iter()
            .filter_map(|core| {
                let mut cpus = self.usable_in(&core.cpus);
                let first = *cpus.first()?;
                cpus.sort_by_key(|&c| (self.busy(&[c]), c));
                Some(Slot {
                    core: core.id,
                    node: self.node_of(first),
                    busy: self.busy(&core.cpus),
                    efficiency: cpus.iter().all(|c| self.efficiency.contains(c)),
                    cpus,
                })
            })
            .collect()
    }

    /// Whole cores for `want` CPUs: one CPU per core (`siblings` false) or
    /// every usable sibling (`siblings` true), performance cores first, then
    /// least busy, inside the best node that fits.
    fn pick_cores(&self, want: usize, siblings: bool) -> Pick {
        let mut slots = self.slots();
        slots.sort_by_key(|s| (s.efficiency, s.busy, s.core));
        let room = |s: &Slot| if siblings { s.cpus.len() } else { 1 };
        let mut notes = Vec::new();
        let order = self.node_order();
        let fits = |n: u32| {
            slots
                .iter()
                .filter(|s| s.node == n)
                .map(room)
                .sum::<usize>()
                >= want
        };
        let chosen: Vec<Slot> = match order.iter().copied().find(|&n| fits(n)) {
            Some(node) => {
                notes.push(self.node_reason(node));
                slots.into_iter().filter(|s| s.node == node).collect()
            }
            None => {
                notes.push(format!(
                    "no single NUMA node has room for {want} CPU(s) on separate cores: \
                     spanning nodes"
                ));
                let rank = |n: u32| order.iter().position(|&o| o == n).unwrap_or(usize::MAX);
                slots.sort_by_key(|s| (rank(s.node), s.efficiency, s.busy, s.core));
                slots
            }
        };
        let mut cpus = Vec::new();
        let mut used = Vec::new();
        for s in &chosen {
            if cpus.len() >= want {
                break;
            }
            used.push(s);
            if siblings {
                cpus.extend(&s.cpus);
            } else {
                cpus.push(s.cpus[0]);
            }
        }
        if !siblings && cpus.len() < want {
            let extra: Vec<u32> = used.iter().flat_map(|s| s.cpus[1..].to_vec()).collect();
            let add = want - cpus.len();
            cpus.extend(extra.iter().take(add));
            notes.push(format!(
                "only {} physical core(s) available for {want} busy threads: SMT siblings used too",
                used.len()
            ));
        }
        if cpus.len() < want {
            notes.push(format!(
                "only {} CPU(s) available for a demand of {want}: threads will share them",
                cpus.len()
            ));
        }
        notes.push(self.cores_line(&used));
        if used.iter().any(|s| s.efficiency) && !self.efficiency.is_empty() {
            notes.push("not enough performance cores: efficiency cores used too".to_string());
        }
        Pick {
            cpus,
            node: None,
            notes,
        }
    }

    fn cores_line(&self, used: &[&Slot]) -> String {
        let busy: Vec<String> = used
            .iter()
            .map(|s| format!("core {} {:.2}s", s.core, s.busy as f64 / 1e9))
            .collect();
        if self.busy.is_empty() {
            "no system-wide busy data: cores taken in order".to_string()
        } else {
            format!("others' busy time on the chosen cores: {}", busy.join(", "))
        }
    }

    /// `want` CPUs inside the last-level cache group (within one node) where
    /// the threads ran most; more groups of the same node, then of other
    /// nodes, only when one is too small.
    fn pick_llc(&self, want: usize) -> Pick {
        let mut units = self.llc_units();
        units.sort_by_key(|u| {
            (
                u.cpus.len() < want,
                Reverse(self.ran(&u.cpus)),
                self.busy(&u.cpus),
                u.llc,
            )
        });
        let Some(first) = units.first().cloned() else {
            return Pick::default();
        };
        let mut notes = vec![self.llc_reason(&first)];
        let mut chosen = vec![first.clone()];
        let mut have = first.cpus.len();
        // Too small: the other groups of the same node first.
        let rest = units[1..].iter().filter(|u| u.node == first.node);
        let rest = rest.chain(units[1..].iter().filter(|u| u.node != first.node));
        for u in rest {
            if have >= want {
                break;
            }
            notes.push(format!(
                "LLC group {} has room for {have} of {want} CPU(s): adding LLC group {} (node {})",
                first.llc, u.llc, u.node
            ));
            have += u.cpus.len();
            chosen.push(u.clone());
        }
        let cpus: Vec<u32> = chosen
            .iter()
            .flat_map(|u| self.spread(&u.cpus))
            .take(want)
            .collect();
        Pick {
            cpus,
            node: None,
            notes,
        }
    }

    fn llc_reason(&self, u: &LlcUnit) -> String {
        let total = saturating_sum(self.ran.values());
        let ran = self.ran(&u.cpus);
        if ran > 0 {
            format!(
                "LLC group {} (CPUs {}, node {}) is where its threads ran most ({:.0}% of their \
                 CPU time)",
                u.llc,
                cpulist::format(&u.cpus),
                u.node,
                100.0 * ran as f64 / total as f64
            )
        } else {
            format!(
                "LLC group {} (CPUs {}, node {}): no run time recorded in any candidate group; \
                 took the least busy",
                u.llc,
                cpulist::format(&u.cpus),
                u.node
            )
        }
    }

    /// Candidate CPUs by (LLC group, node): an LLC spanning nodes (rare)
    /// splits, so a unit never crosses a node.
    fn llc_units(&self) -> Vec<LlcUnit> {
        let mut units: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for &c in &self.usable {
            if let Some(cpu) = self.topo.cpu(c) {
                units.entry((cpu.llc, cpu.node)).or_default().push(c);
            }
        }
        units
            .into_iter()
            .map(|((llc, node), cpus)| LlcUnit { llc, node, cpus })
            .collect()
    }

    /// CPUs ordered so separate cores come before SMT siblings; within a
    /// round, where the threads ran most (warm caches), then least busy.
    fn spread(&self, cpus: &[u32]) -> Vec<u32> {
        let key = |c: u32| (Reverse(self.ran(&[c])), self.busy(&[c]), c);
        let mut by_core: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &c in cpus {
            let core = self.topo.cpu(c).map_or(c, |x| x.core);
            by_core.entry(core).or_default().push(c);
        }
        let mut ranked: Vec<(usize, u32)> = Vec::new();
        for list in by_core.values_mut() {
            list.sort_by_key(|&c| key(c));
            ranked.extend(list.iter().enumerate().map(|(rank, &c)| (rank, c)));
        }
        ranked.sort_by_key(|&(rank, c)| (rank, key(c)));
        ranked.into_iter().map(|(_, c)| c).collect()
    }

    /// Few CPUs for mostly-waiting threads: efficiency CPUs on hybrid parts,
    /// in the best node.
    fn pick_io(&self, want: usize) -> Pick {
        let mut notes = Vec::new();
        let e: Vec<u32> = self.usable_in(&self.efficiency);
        let candidates = if !e.is_empty() {
            notes.push(format!(
                "hybrid part: efficiency CPUs {} (lowest max frequency/capacity)",
                cpulist::format(&e)
            ));
            e
        } else {
            if !self.efficiency.is_empty() {
                notes.push("no efficiency CPU is allowed: using performance CPUs".to_string());
            }
            self.usable.clone()
        };
        let node = self
            .node_order()
            .into_iter()
            .find(|&n| candidates.iter().any(|&c| self.node_of(c) == n));
        let in_node: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&c| Some(self.node_of(c)) == node)
            .collect();
        if let Some(n) = node.filter(|_| self.topo.nodes().len() > 1) {
            notes.push(self.node_reason(n));
        }
        Pick {
            cpus: self.spread(&in_node).into_iter().take(want).collect(),
            node: None,
            notes,
        }
    }

    /// Every candidate CPU of the node holding most of the memory.
    fn pick_node(&self, want: usize) -> Pick {
        let Some(node) = self.node_order().first().copied() else {
            return Pick::default();
        };
        let cpus = self.usable_in(&self.topo.node(node).map_or(Vec::new(), |n| n.cpus.clone()));
        let mut notes = vec![self.node_reason(node)];
        if self.topo.nodes().len() == 1 {
            notes
                .push("single NUMA node: binding to it only restates the allowed CPUs".to_string());
        }
        if cpus.len() < want {
            notes.push(format!(
                "node {node} has {} candidate CPU(s) for a demand of {want}: threads will share \
                 them, but memory stays local",
                cpus.len()
            ));
        }
        notes.push(format!(
            "to start it bound to the node instead: numactl --cpunodebind={node} --membind={node} \
             <command>"
        ));
        Pick {
            cpus,
            node: Some(node),
            notes,
        }
    }
}

/// Candidate CPUs of one LLC group on one node.
#[derive(Clone, Debug)]
struct LlcUnit {
    llc: u32,
    node: u32,
    cpus: Vec<u32>,
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::analyze::features::testutil::{mk_thread, mk_trace};
    use crate::analyze::features::{self, Features};

    fn topo(name: &str) -> Topology {
        crate::model::topology::fixtures::machine(name)
    }

    /// A trace of `threads` threads, each at `pct`% (4 intervals), running
    /// on `ran` CPUs.
    fn workload(threads: u32, pcts: &[f64], ran: &[u32]) -> Trace {
        mk_trace((0..threads).map(|i| mk_thread(i + 1, pcts, ran)).collect())
    }

    struct Case<'a> {
        topo: &'a Topology,
        trace: Trace,
        class: Class,
        allowed: Option<Vec<u32>>,
        memory: Option<BTreeMap<u32, u64>>,
    }

    impl Case<'_> {
        fn run(&self) -> Recommendation {
            let f: Features = features::process(&self.trace, 0);
            recommend(&Request {
                pids: &[4242],
                class: self.class,
                features: &f,
                trace: &self.trace,
                topology: self.topo,
                allowed: self.allowed.as_deref(),
                numa_memory: self.memory.as_ref(),
            })
        }
    }

    fn case(t: &Topology, trace: Trace, class: Class) -> Case<'_> {
        Case {
            topo: t,
            trace,
            class,
            allowed: None,
            memory: None,
        }
    }

    fn cores_of(t: &Topology, cpus: &[u32]) -> Vec<u32> {
        let mut c: Vec<u32> = cpus.iter().map(|&id| t.cpu(id).unwrap().core).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    fn one<T: PartialEq + std::fmt::Debug>(v: impl Iterator<Item = T>) -> T {
        let all: Vec<T> = v.collect();
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "not all equal: {all:?}"
        );
        all.into_iter().next().unwrap()
    }

    #[test]
    fn one_l3_gets_no_cache_local_claim() {
        let vm = topo("vm-2cpu");
        assert_eq!(vm.llc_groups().len(), 1);
        for class in [Class::MigrationHeavy, Class::CacheSensitive] {
            let r = case(&vm, workload(1, &[40.0], &[0, 1]), class).run();
            assert!(
                !r.rationale[0].contains("cache-local") && r.rationale[0].contains("one L3"),
                "{:?}",
                r.rationale
            );
        }
        let epyc = topo("epyc-64c");
        assert!(epyc.llc_groups().len() > 1);
        let r = case(&epyc, workload(1, &[40.0], &[0, 1]), Class::MigrationHeavy).run();
        assert!(r.rationale[0].contains("cache-local"), "{:?}", r.rationale);
    }

    #[test]
    fn the_command_names_every_pid_of_the_target() {
        assert_eq!(taskset("1", &[42]), "taskset -a -c -p 1 42");
        assert_eq!(
            taskset("0-1", &[42, 43]),
            "for p in 42 43; do taskset -a -c -p 0-1 $p; done"
        );
    }

    #[test]
    fn numa_maps_counts_bytes_per_node_with_page_sizes() {
        let text = "\
7f0000000000 default anon=3 dirty=3 N0=2 N1=1 kernelpagesize_kB=4
7f0000200000 default file=/lib/x.so mapped=2 N1=2 kernelpagesize_kB=4
7f0000400000 default huge anon=1 dirty=1 N1=1 kernelpagesize_kB=2048
7f0000600000 default N2=x Nbad=1 N0=1
";
        let m = parse_numa_maps(text);
        assert_eq!(m[&0], 3 * 4096);
        assert_eq!(m[&1], 3 * 4096 + 2048 * 1024);
        assert!(!m.contains_key(&2));
    }

    /// Found by `cargo xtask fuzz` (numa_maps): counts the kernel would
    /// never print overflowed the per-node sum and the page size product
    /// (a panic in debug builds, a wrong wrapped figure in release).
    #[test]
    fn numa_maps_with_absurd_counts_saturates() {
        let m = parse_numa_maps(
            "55d0 default N0=9223372036854775807 kernelpagesize_kB=4\n\
             55d1 default N0=9223372036854775807 kernelpagesize_kB=4\n\
             55d2 default N1=1 kernelpagesize_kB=18446744073709551615\n",
        );
        assert_eq!(m[&0], u64::MAX);
        assert_eq!(m[&1], u64::MAX);
    }

    #[test]
    fn demand_rounds_up_with_a_little_slack() {
        let f = |p: f64| Features {
            effective_parallelism: p,
            ..Default::default()
        };
        assert_eq!(demand(&f(0.0)), 1);
        assert_eq!(demand(&f(0.3)), 1);
        assert_eq!(demand(&f(1.5)), 2);
        assert_eq!(demand(&f(2.004)), 2);
        assert_eq!(demand(&f(2.02)), 3);
        assert_eq!(demand(&f(f64::NAN)), 1);
        // Starved: 0.24 CPUs used, 1.24 asked for -> 2 CPUs, not 1.
        let starved = Features {
            effective_parallelism: 0.24,
            demand_parallelism: 1.24,
            ..Features::default()
        };
        assert_eq!(demand(&starved), 2);
    }

    #[test]
    fn server_steady_two_threads_get_two_separate_cores_of_one_socket() {
        let t = topo("server-2s-smt");
        let r = case(
            &t,
            workload(2, &[100.0; 4], &[0]),
            Class::CpuIntensiveSteady,
        )
        .run();
        assert_eq!(r.cpus.len(), 2, "{r:?}");
        assert_eq!(cores_of(&t, &r.cpus).len(), 2, "never two siblings: {r:?}");
        one(r.cpus.iter().map(|&c| t.cpu(c).unwrap().package));
        assert_eq!(r.command.as_deref(), Some("taskset -a -c -p 0-1 4242"));
    }

    #[test]
    fn server_steady_avoids_cores_busy_with_other_work() {
        let t = topo("server-2s-smt");
        let mut trace = workload(2, &[100.0; 4], &[0]);
        // Others kept CPUs 1 and 12 (the sibling of 2) busy; the target's own
        // time on CPU 0 does not count against it.
        trace.system_busy_ns = (0..20).map(|c| (c, 0)).collect();
        trace
            .system_busy_ns
            .insert(0, trace.totals().per_cpu_ns[&0]);
        trace.system_busy_ns.insert(1, 3_000_000_000);
        trace.system_busy_ns.insert(12, 3_000_000_000);
        let r = case(&t, trace, Class::CpuIntensiveSteady).run();
        assert_eq!(r.cpus, vec![0, 3], "{:#?}", r.rationale);
        assert!(r.rationale.iter().any(|l| l.contains("others' busy time")));
    }

    #[test]
    fn server_steady_prefers_the_node_holding_its_memory() {
        let t = topo("server-2s-smt");
        let mut c = case(&t, workload(2, &[100.0; 4], &[]), Class::CpuIntensiveSteady);
        c.memory = Some(BTreeMap::from([(0, 1 << 20), (1, 512 << 20)]));
        let r = c.run();
        assert!(r.cpus.iter().all(|&x| t.cpu(x).unwrap().node == 1), "{r:?}");
        assert_eq!(cores_of(&t, &r.cpus).len(), 2);
        assert!(
            r.rationale.iter().any(|l| l.contains("node 1 holds")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn steady_with_more_threads_than_cores_uses_siblings_and_says_so() {
        let t = topo("vm-2cpu");
        let r = case(
            &t,
            workload(3, &[100.0; 4], &[0, 1]),
            Class::CpuIntensiveSteady,
        )
        .run();
        assert_eq!(r.cpus, vec![0, 1]);
        assert!(
            r.rationale.iter().any(|l| l.contains("threads will share")),
            "{:#?}",
            r.rationale
        );
        let s = topo("server-2s-smt");
        let mut c = case(&s, workload(3, &[100.0; 4], &[]), Class::CpuIntensiveSteady);
        c.allowed = Some(vec![0, 1, 10, 11]);
        let r = c.run();
        assert_eq!(r.cpus.len(), 3);
        assert!(
            r.rationale
                .iter()
                .any(|l| l.contains("SMT siblings used too"))
        );
    }

    #[test]
    fn bursty_takes_whole_cores_with_siblings_sized_for_the_peak() {
        let t = topo("server-2s-smt");
        // Average 1.5 CPUs, peak 3 CPUs (two threads at 100/50 and 200/...).
        let trace = mk_trace(vec![
            mk_thread(1, &[100.0, 100.0, 100.0, 100.0], &[0]),
            mk_thread(2, &[200.0, 0.0, 0.0, 0.0], &[1]),
        ]);
        let r = case(&t, trace, Class::CpuIntensiveBursty).run();
        assert_eq!(r.cpus, vec![0, 1, 10, 11], "{:#?}", r.rationale);
        assert!(
            r.rationale[1].contains("peak interval 300.0%"),
            "{}",
            r.rationale[1]
        );
        for &c in &r.cpus {
            for s in &t.cpu(c).unwrap().siblings {
                assert!(r.cpus.contains(s), "sibling {s} of {c} missing");
            }
        }
    }

    #[test]
    fn epyc_migration_heavy_stays_in_one_l3_where_it_ran() {
        let t = topo("epyc-64c");
        // 4 threads, ran on CCD 3 (cores 24-31) mostly, a little on CCD 0.
        let mut trace = workload(4, &[90.0; 4], &[24, 25, 26, 27, 28, 29, 30, 31]);
        trace.threads[0].per_cpu_ns.insert(0, 1);
        let r = case(&t, trace, Class::MigrationHeavy).run();
        assert_eq!(r.cpus.len(), 4);
        let llc = one(r.cpus.iter().map(|&c| t.cpu(c).unwrap().llc));
        assert_eq!(llc, t.cpu(24).unwrap().llc);
        one(r.cpus.iter().map(|&c| t.cpu(c).unwrap().node));
        assert_eq!(
            cores_of(&t, &r.cpus).len(),
            4,
            "separate cores before siblings"
        );
        assert!(
            r.rationale.iter().any(|l| l.contains("ran most")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn epyc_cache_sensitive_larger_than_one_l3_spans_groups_of_the_same_node() {
        let t = topo("epyc-64c");
        let r = case(&t, workload(20, &[100.0; 4], &[40]), Class::CacheSensitive).run();
        assert_eq!(r.cpus.len(), 20);
        one(r.cpus.iter().map(|&c| t.cpu(c).unwrap().node));
        assert!(r.cpus.contains(&40));
        assert!(
            r.rationale.iter().any(|l| l.contains("adding LLC group")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn epyc_allowed_set_excluding_the_ideal_group_is_respected_and_explained() {
        let t = topo("epyc-64c");
        let mut c = case(
            &t,
            workload(2, &[90.0; 4], &[24, 25]),
            Class::MigrationHeavy,
        );
        c.allowed = Some((0..8).collect());
        let r = c.run();
        assert_eq!(r.cpus.len(), 2);
        assert!(r.cpus.iter().all(|x| (0..8).contains(x)), "{r:?}");
        let line = r
            .rationale
            .iter()
            .find(|l| l.contains("not inside the allowed CPUs"));
        assert!(
            line.is_some_and(|l| l.contains("0-7")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn server_allowed_set_on_the_other_socket() {
        let t = topo("server-2s-smt");
        let mut c = case(
            &t,
            workload(2, &[100.0; 4], &[0, 1]),
            Class::CpuIntensiveSteady,
        );
        c.allowed = Some(cpulist::parse("5-9,15-19").unwrap());
        let r = c.run();
        assert_eq!(r.cpus, vec![5, 6]);
        assert!(
            r.rationale.iter().any(|l| l.contains("ideal set 0-1")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn hybrid_io_bound_gets_efficiency_cores() {
        let t = topo("hybrid-laptop");
        let r = case(&t, workload(3, &[3.0; 4], &[0, 1]), Class::IoBound).run();
        assert_eq!(r.cpus, vec![12]);
        assert!(
            r.rationale
                .iter()
                .any(|l| l.contains("efficiency CPUs 12-19"))
        );
    }

    #[test]
    fn hybrid_io_bound_without_allowed_e_cores_falls_back_and_says_so() {
        let t = topo("hybrid-laptop");
        let mut c = case(&t, workload(1, &[3.0; 4], &[4]), Class::IoBound);
        c.allowed = Some((0..12).collect());
        let r = c.run();
        assert_eq!(r.cpus, vec![4], "where it ran (warm cache)");
        assert!(
            r.rationale
                .iter()
                .any(|l| l.contains("no efficiency CPU is allowed"))
        );
        assert!(
            r.rationale
                .iter()
                .any(|l| l.contains("not inside the allowed"))
        );
    }

    #[test]
    fn hybrid_steady_prefers_performance_cores() {
        let t = topo("hybrid-laptop");
        let mut trace = workload(2, &[100.0; 4], &[12, 13]);
        // E-cores idle, P-cores a little busy: P-cores still win.
        trace.system_busy_ns = (0..20)
            .map(|c| (c, if c < 12 { 1_000_000 } else { 0 }))
            .collect();
        let r = case(&t, trace, Class::CpuIntensiveSteady).run();
        assert!(r.cpus.iter().all(|&c| c < 12), "{r:?}");
        assert_eq!(cores_of(&t, &r.cpus).len(), 2);
    }

    #[test]
    fn server_balanced_binds_to_the_memory_node_with_numactl_hint() {
        let t = topo("server-2s-smt");
        let mut c = case(&t, workload(4, &[40.0; 4], &[0, 1, 2]), Class::Balanced);
        c.memory = Some(parse_numa_maps(
            "7f00 default N0=10 N1=5000 kernelpagesize_kB=4\n",
        ));
        let r = c.run();
        assert_eq!(r.numa_node, Some(1));
        assert_eq!(r.cpulist, "5-9,15-19");
        assert!(
            r.rationale
                .iter()
                .any(|l| l.contains("numactl --cpunodebind=1 --membind=1")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn balanced_falls_back_to_where_it_ran() {
        let t = topo("server-2s-smt");
        let r = case(&t, workload(2, &[40.0; 4], &[7, 8]), Class::Balanced).run();
        assert_eq!(r.numa_node, Some(1));
        assert!(
            r.rationale.iter().any(|l| l.contains("ran most")),
            "{:#?}",
            r.rationale
        );
    }

    #[test]
    fn vm_every_class_gives_a_valid_set() {
        let t = topo("vm-2cpu");
        for class in Class::ALL {
            let r = case(&t, workload(1, &[50.0; 4], &[1]), class).run();
            assert!(!r.cpus.is_empty(), "{class}");
            assert!(r.cpus.iter().all(|c| [0, 1].contains(c)), "{class}: {r:?}");
            assert_eq!(r.rationale[0].split(':').next(), Some(class.as_str()));
            assert!(
                r.command
                    .as_deref()
                    .unwrap()
                    .starts_with("taskset -a -c -p ")
            );
        }
    }

    #[test]
    fn isolated_cpus_are_left_out() {
        // The VM with cpu0 isolated.
        let mut v: serde_json::Value =
            serde_json::from_str(crate::model::topology::fixtures::machine_json("vm-2cpu"))
                .unwrap();
        v["isolated"] = serde_json::json!([0]);
        let t: Topology = serde_json::from_value(v).unwrap();
        assert_eq!(t.isolated(), &[0]);
        let r = case(&t, workload(1, &[3.0; 4], &[0]), Class::IoBound).run();
        assert_eq!(r.cpus, vec![1]);
        assert!(r.rationale.iter().any(|l| l.contains("isolated")));
    }

    #[test]
    fn nothing_allowed_online_gives_no_command() {
        let t = topo("vm-2cpu");
        let mut c = case(&t, workload(1, &[50.0; 4], &[0]), Class::Balanced);
        c.allowed = Some(vec![7]);
        let r = c.run();
        assert!(r.cpus.is_empty());
        assert_eq!(r.command, None);
        assert!(r.rationale.iter().any(|l| l.contains("is online")));
    }
}
