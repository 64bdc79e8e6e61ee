//! `--timeline` in Perfetto's protobuf (issue 16): the file decoded twice,
//! with the official schema (PyPI `perfetto`'s compiled `perfetto_trace_pb2`,
//! in the venv `cargo xtask setup` makes) and with the writer's own prost
//! messages, and checked against the same run's counters. Root only; one
//! at a time.

use std::{collections::BTreeSet, process::Command};

use affinity::report::perfetto::{self, STATE_PREEMPTED, pb};
use affinity_tests::*;
use serde_json::Value;

/// Where `cargo xtask setup` puts the Perfetto schema.
const VENV_PYTHON: &str = "/opt/affin-trace-venv/bin/python";

/// Counts of one file, through the official schema: switches into each
/// tid, migrations and wakeups per tid, the descriptors' tids.
const COUNT_PY: &str = r#"
import collections, json, sys
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
t = pb.Trace()
t.ParseFromString(open(sys.argv[1], "rb").read())
switch_in = collections.Counter(); mig = collections.Counter(); wake = collections.Counter()
tids = []
for p in t.packet:
    if p.HasField("ftrace_events"):
        b = p.ftrace_events
        for pid in b.compact_sched.switch_next_pid:
            switch_in[pid] += 1
        for e in b.event:
            k = e.WhichOneof("event")
            if k == "sched_migrate_task":
                mig[e.sched_migrate_task.pid] += 1
            elif k in ("sched_wakeup", "sched_wakeup_new"):
                wake[getattr(e, k).pid] += 1
    if p.HasField("process_tree"):
        tids += [th.tid for th in p.process_tree.threads]
print(json.dumps({"switch_in": switch_in, "migrations": mig, "wakeups": wake, "tids": tids}))
"#;

/// The file through the official schema.
fn official_counts(file: &std::path::Path) -> Value {
    let out = Command::new(VENV_PYTHON)
        .args(["-c", COUNT_PY])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{VENV_PYTHON}: {e}; run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "the official schema did not read the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("counts as JSON")
}

/// What the writer's own messages read back, per target thread.
#[derive(Default, Debug)]
struct Decoded {
    switch_in: u64,
    preempted_out: u64,
    migrations: u64,
    wakeups: u64,
    tids: BTreeSet<u64>,
}

fn decoded(trace: &pb::Trace, targets: &BTreeSet<u64>) -> Decoded {
    let mut d = Decoded::default();
    for p in &trace.packet {
        if let Some(b) = &p.ftrace_events {
            let cs = b.compact_sched.clone().unwrap_or_default();
            for (i, next) in cs.switch_next_pid.iter().enumerate() {
                d.switch_in += u64::from(targets.contains(&(*next as u64)));
                d.preempted_out += u64::from(cs.switch_prev_state[i] == STATE_PREEMPTED);
            }
            for e in &b.event {
                match &e.event {
                    Some(pb::Event::SchedMigrateTask(m)) => {
                        d.migrations += u64::from(targets.contains(&(m.pid.unwrap() as u64)))
                    }
                    Some(pb::Event::SchedWakeup(w) | pb::Event::SchedWakeupNew(w)) => {
                        d.wakeups += u64::from(targets.contains(&(w.pid.unwrap() as u64)))
                    }
                    _ => {}
                }
            }
        }
        if let Some(tree) = &p.process_tree {
            d.tids
                .extend(tree.threads.iter().map(|t| t.tid.unwrap() as u64));
        }
    }
    d
}

fn sum_of(v: &Value, tids: &BTreeSet<u64>) -> u64 {
    (v.as_object().expect("a count map").iter())
        .filter(|(k, _)| tids.contains(&k.parse::<u64>().unwrap()))
        .map(|(_, n)| u(n))
        .sum()
}

/// 200 forced pins alternating CPUs 0 and 1, streamed to a Perfetto file:
/// migrate records equal the report's migrations (exact), switch-ins of the
/// target equal its switches within the window's edges, every target
/// thread has a descriptor, and both decoders agree.
#[test]
fn perfetto_timeline_of_hop_matches_the_reports_counters() {
    require_root();
    const N: u64 = 200;
    let file = scratch("timeline.perfetto-trace");
    let mut w = Gated::start(&["hop", &N.to_string(), "2"]);
    let tracer = Tracer::start(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "120",
        "--interval",
        "0.5",
        "--timeline",
        file.to_str().unwrap(),
    ]);
    w.go();
    w.finish();
    let (code, json) = tracer.finish();
    assert_eq!(code, 0, "{json}");
    let bytes = std::fs::read(&file).expect("the timeline file");
    let official = official_counts(&file);
    let _ = std::fs::remove_file(&file);
    let trace = perfetto::decode(&bytes).expect("the file decodes as a Trace");

    let tl = &json["timeline"];
    assert_eq!(tl["format"], "perfetto", "{tl:#}");
    assert_eq!(u(&tl["lost_events"]), 0, "{tl:#}");
    assert_eq!(u(&tl["perfetto"]["bytes"]), bytes.len() as u64);
    let targets: BTreeSet<u64> = (json["threads"].as_array().unwrap().iter())
        .map(|t| u(&t["tid"]))
        .collect();
    let d = decoded(&trace, &targets);
    let p = &json["process"];
    assert_eq!(u(&p["migrations"]), N, "{p:#}");
    assert_eq!(d.migrations, N, "migrate records vs the migration count");
    assert_eq!(sum_of(&official["migrations"], &targets), N);
    let switches = u(&p["voluntary_switches"]) + u(&p["involuntary_switches"]);
    // Each switch-out has its switch-in in the window, but for a thread
    // already running at the start (one per thread).
    let edge = targets.len() as u64;
    assert!(
        d.switch_in <= switches + edge && switches <= d.switch_in + edge,
        "{} switch-ins in the file vs {switches} switches counted",
        d.switch_in
    );
    assert_eq!(sum_of(&official["switch_in"], &targets), d.switch_in);
    // Every run-queue wait after a wakeup had its sched_wakeup.
    let waits = u(&p["runq_latency_ns"]["count"]);
    assert!(d.wakeups >= waits, "{} wakeups, {waits} waits", d.wakeups);
    assert_eq!(sum_of(&official["wakeups"], &targets), d.wakeups);
    for tid in &targets {
        assert!(d.tids.contains(tid), "no descriptor for thread {tid}");
    }
    let official_tids: BTreeSet<u64> = (official["tids"].as_array().unwrap().iter())
        .map(u)
        .collect();
    assert_eq!(official_tids, d.tids);
    println!(
        "hop {N}: {} bytes, {} events ({:.1} bytes/event), {} switch-ins vs {switches} switches, \
         {} migrations, {} wakeups vs {waits} waits, {} preempted switch-outs",
        bytes.len(),
        u(&tl["events"]),
        bytes.len() as f64 / u(&tl["events"]).max(1) as f64,
        d.switch_in,
        d.migrations,
        d.wakeups,
        d.preempted_out
    );
}
