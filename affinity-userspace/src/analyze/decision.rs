//! From a finished trace to a decision: features -> classification ->
//! recommendation, for the process and each thread. Pure: everything it needs
//! from the system (topology, allowed CPUs, NUMA memory) is passed in.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    analyze::classify::{self, Thresholds, TraceClassification},
    analyze::contention::{self, Contention},
    analyze::features::{self, TraceFeatures},
    analyze::recommend::{self, Recommendation},
    model::Trace,
    model::topology::Topology,
};

/// Facts about the target read at the end of the window (kernel-touching,
/// gathered by the session).
#[derive(Clone, Debug, Default)]
pub struct TargetFacts {
    /// CPUs the process may be given: its cgroup cpuset, else all online.
    /// (Its current affinity is not a bound: applying a recommendation is
    /// exactly what changes it.)
    pub allowed: Option<Vec<u32>>,
    /// Bytes of its memory per NUMA node (/proc/<pid>/numa_maps).
    pub numa_memory: Option<BTreeMap<u32, u64>>,
}

/// The decision and what it rests on.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// Features, process and per thread.
    pub features: TraceFeatures,
    /// Classes with their reasons.
    pub classification: TraceClassification,
    /// Recommended CPUs for the process.
    pub recommendation: Recommendation,
    /// What the targets waited for and who held the CPUs.
    pub contention: Contention,
}

/// Runs the pure pipeline on `trace`.
pub fn analyze(
    trace: &Trace,
    topology: &Topology,
    thresholds: &Thresholds,
    facts: &TargetFacts,
) -> Analysis {
    let mut features = features::extract(trace, trace.mem_total_bytes);
    let classification = classify::classify_trace(&features, thresholds);
    // The seed reports the class among the features (`workload_type`).
    features.process.workload_type = Some(classification.process.class);
    for (f, c) in features.threads.iter_mut().zip(&classification.threads) {
        f.features.workload_type = Some(c.classification.class);
    }
    let mut recommendation = recommend::recommend(&recommend::Request {
        pids: &trace.pids,
        class: classification.process.class,
        features: &features.process,
        trace,
        topology,
        allowed: facts.allowed.as_deref(),
        numa_memory: facts.numa_memory.as_ref(),
    });
    let contention = contention::assess(trace, &recommendation.cpus, &topology.online());
    // The cause of the waiting, not the target's size, is what to change.
    recommendation
        .rationale
        .extend(contention.advice.iter().map(|a| format!("contention: {a}")));
    Analysis {
        features,
        classification,
        recommendation,
        contention,
    }
}
