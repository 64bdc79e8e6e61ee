//! A recorded trace (`model::Trace` JSON) through `features::extract` and
//! `classify::classify_trace`: counters up to u64::MAX, empty or mismatched
//! interval vectors and histograms of any length must not panic, and every
//! feature stays a finite number (a NaN would silently pass or fail every
//! threshold test and print as `null` in JSON reports).
#![no_main]

use affinity::analyze::classify::{Thresholds, classify_trace};
use affinity::analyze::features::extract;
use affinity::model::Trace;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = serde_json::from_slice::<Trace>(data) else {
        return;
    };
    let f = extract(&trace, trace.mem_total_bytes);
    affinity_fuzz::check_features(&f.process);
    for t in &f.threads {
        affinity_fuzz::check_features(&t.features);
    }
    let c = classify_trace(&f, &Thresholds::default());
    assert_eq!(c.threads.len(), f.threads.len());
});
