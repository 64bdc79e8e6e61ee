//! `features::extract` and `classify::classify_trace` on a `model::Trace`
//! built field by field from the fuzz bytes (the JSON target, trace_json,
//! rarely gets a number past serde; here every counter is any u64, vectors
//! have any length up to 80, so histograms longer than 64 buckets and
//! per-thread interval vectors longer or shorter than the trace's occur).
//! Same checks as trace_json: no panic, every feature finite.
#![no_main]

use affinity::analyze::classify::{Thresholds, classify_trace};
use affinity::analyze::features::extract;
use affinity::model::{Interval, MigrationsByClass, RunqLatency, ThreadTrace, Trace};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fn vec_of<T>(
    u: &mut Unstructured,
    max: usize,
    f: impl Fn(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

fn thread(u: &mut Unstructured) -> Result<ThreadTrace> {
    Ok(ThreadTrace {
        tid: u.int_in_range(1..=8)?,
        tgid: 1,
        comm: String::new(),
        cpu_time_ns: u.arbitrary()?,
        per_cpu_ns: vec_of(u, 8, |u| Ok((u.int_in_range(0..=7)?, u.arbitrary()?)))?
            .into_iter()
            .collect(),
        voluntary_switches: u.arbitrary()?,
        involuntary_switches: u.arbitrary()?,
        migrations: MigrationsByClass::from_array(u.arbitrary()?),
        runq: RunqLatency {
            hist: vec_of(u, 80, |u| u.arbitrary())?,
            count: u.arbitrary()?,
            total_ns: u.arbitrary()?,
            max_ns: u.arbitrary()?,
        },
        preempted_wait_ns: u.arbitrary()?,
        exited: u.arbitrary()?,
        cpu_ns_per_interval: vec_of(u, 80, |u| u.arbitrary())?,
        // Fields added since (the wait split, names, holds) keep their
        // defaults: this crate is outside the workspace, and a literal
        // naming every field stopped building unnoticed.
        ..ThreadTrace::default()
    })
}

fn trace(u: &mut Unstructured) -> Result<Trace> {
    Ok(Trace {
        pids: vec![1],
        tids: vec_of(u, 3, |u| u.int_in_range(1..=8))?,
        duration_ns: u.arbitrary()?,
        interval_ns: u.arbitrary()?,
        threads: vec_of(u, 8, thread)?,
        intervals: vec_of(u, 80, |u| {
            Ok(Interval {
                wall_ns: u.arbitrary()?,
                cpu_ns: u.arbitrary()?,
                migrations: u.arbitrary()?,
                rss_bytes: u.arbitrary()?,
                ..Default::default()
            })
        })?,
        mem_total_bytes: u.arbitrary()?,
        ..Default::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = trace(&mut Unstructured::new(data)) else {
        return;
    };
    let f = extract(&trace, trace.mem_total_bytes);
    for feat in std::iter::once(&f.process).chain(f.threads.iter().map(|t| &t.features)) {
        affinity_fuzz::check_features(feat);
    }
    let _ = classify_trace(&f, &Thresholds::default());
});
