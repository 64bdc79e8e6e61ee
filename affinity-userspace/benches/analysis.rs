//! The analysis of recorded traces (`analyze::decision::analyze`: features,
//! classification, recommendation) on each trace in tests/fixtures/traces,
//! on the machine it was recorded on (the `sysfs` fixture of the same
//! name). The files are read once, in the setup. Pure: no root, no kernel.
//!
//! `cargo bench -p affinity-userspace --bench analysis`

use affinity::analyze::{
    classify::Thresholds,
    decision::{self, TargetFacts},
};
use affinity::host::Root;
use affinity::model::{Trace, topology::Topology};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(root.join("traces"))
        .expect("tests/fixtures/traces")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no recorded traces to analyse");
    let thresholds = Thresholds::default();
    let facts = TargetFacts::default();
    let mut g = c.benchmark_group("analysis");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let trace: Trace =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let topo = Topology::read(&Root::new(root.join("sysfs").join(&name)))
            .unwrap_or_else(|e| panic!("the trace {name} needs the sysfs fixture {name}: {e}"));
        g.bench_function(name, |b| {
            b.iter(|| decision::analyze(&trace, &topo, &thresholds, &facts))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
