//! `--timeline` (issue 7, "See it"): the Chrome JSON trace read back and
//! checked against the same run's counters, and loss that is reported, not
//! silent. Root only; one at a time.

use affinity::report::timeline::{CPU_PID, CPU_TID_BASE};
use affinity_tests::*;
use serde_json::Value;

/// The trace file, parsed.
fn read_trace(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no timeline at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the timeline is valid JSON")
}

fn events<'a>(trace: &'a Value, ph: &str, cat: &str) -> Vec<&'a Value> {
    trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["ph"] == ph && e["cat"] == cat)
        .collect()
}

/// Traces the gated workload `w` by pid (up to `duration` s, 0.5 s
/// intervals) with `--timeline file`, lets it run to its end, and returns
/// the JSON report (exit code 0 asserted) and the trace file, parsed and
/// removed.
fn traced_with_timeline(w: Gated, duration: &str, file: &std::path::Path) -> (Value, Value) {
    let json = trace_gated_with_timeline(w, duration, file);
    let trace = read_trace(file);
    let _ = std::fs::remove_file(file);
    (json, trace)
}

/// The CPU whose track an event is on.
fn cpu_of(e: &Value) -> u64 {
    assert_eq!(e["pid"], CPU_PID, "not on a CPU track: {e}");
    u(&e["tid"]) - u64::from(CPU_TID_BASE)
}

/// 200 forced pins alternating CPUs 0 and 1: 200 arrows, 100 each way,
/// the same as the run's migration count and CPU pair counts; no loss;
/// the thread's slices on both CPUs add up to its on-CPU time.
#[test]
fn timeline_of_hop_has_one_arrow_per_migration_and_slices_matching_on_cpu_time() {
    require_root();
    const N: u64 = 200;
    let file = scratch("timeline.json");
    let w = Gated::start(&["hop", &N.to_string(), "2"]);
    let pid = w.pid();
    let (json, trace) = traced_with_timeline(w, "120", &file);

    // The counters.
    assert_eq!(
        u(&json["process"]["migrations"]),
        N,
        "{:#}",
        json["process"]
    );
    let (pairs, pair) = migration_pairs(&json);
    assert_eq!(pair(0, 1) + pair(1, 0), N, "{pairs:?}");
    assert_eq!((pair(0, 1), pair(1, 0)), (N / 2, N / 2), "{pairs:?}");

    // Nothing lost, and the report and the file agree on it.
    let tl = &json["timeline"];
    assert_eq!(u(&tl["lost_events"]), 0, "{tl:#}");
    assert_eq!(u(&trace["otherData"]["lost_events"]), 0);
    assert_eq!(u(&trace["otherData"]["events"]), u(&tl["events"]));
    assert!(events(&trace, "i", "lost").is_empty());

    // One arrow per migration, from the source CPU's track to the
    // destination's.
    let starts = events(&trace, "s", "migration");
    let finishes = events(&trace, "f", "migration");
    assert_eq!(starts.len() as u64, N, "arrows vs the migration count");
    assert_eq!(finishes.len() as u64, N);
    assert_eq!(u(&tl["migration_flows"]), N);
    let mut each_way = [0u64; 2];
    for s in &starts {
        let f = finishes
            .iter()
            .find(|f| f["id"] == s["id"])
            .unwrap_or_else(|| panic!("arrow {} has no end", s["id"]));
        assert_eq!(f["bp"], "e");
        let (from, to) = (cpu_of(s), cpu_of(f));
        assert_ne!(from, to, "{s} -> {f}");
        each_way[from as usize] += 1;
    }
    assert_eq!(each_way, [N / 2, N / 2]);

    // Slices of the hopping thread on both CPU tracks. Their on-CPU time
    // (args.cpu_ns, the task's clock, as the report's) adds up to the
    // report's. Their length (printed, not checked) also holds steal and
    // interrupts, and on an idle VM can fall a few us per slice short of
    // the task clock, which the kernel advances at slightly other points.
    let slices: Vec<&Value> = events(&trace, "X", "on_cpu")
        .into_iter()
        .filter(|e| e["pid"] == CPU_PID && e["args"]["tid"] == pid)
        .collect();
    for cpu in [0, 1] {
        assert!(
            slices.iter().any(|e| cpu_of(e) == cpu),
            "no slice on CPU {cpu}"
        );
    }
    assert_eq!(u(&trace["otherData"]["incomplete_slices"]), 0);
    let slice_ns: u64 = slices.iter().map(|e| u(&e["args"]["cpu_ns"])).sum();
    let wall_ns: f64 = slices
        .iter()
        .map(|e| e["dur"].as_f64().unwrap() * 1e3)
        .sum();
    let report_ns = u(&thread_by_tid(&json, u64::from(pid))["cpu_time_ns"]);
    let diff = slice_ns.abs_diff(report_ns);
    assert!(
        diff * 200 <= report_ns,
        "slices {:.3} ms vs on-CPU {:.3} ms",
        slice_ns as f64 / 1e6,
        report_ns as f64 / 1e6
    );
    println!(
        "hop {N}: {} arrows, {} events, 0 lost; slices {:.3} ms of CPU ({:.3} ms wall, {} inferred starts) vs on-CPU {:.3} ms",
        starts.len(),
        u(&tl["events"]),
        slice_ns as f64 / 1e6,
        wall_ns / 1e6,
        trace["otherData"]["inferred_starts"],
        report_ns as f64 / 1e6
    );
}

/// A 4 KiB ring (85 events) under a yield storm (a switch every few
/// microseconds): events are lost, and the report and the file say how
/// many instead of dropping them silently.
#[test]
fn timeline_with_a_too_small_ring_buffer_reports_lost_events() {
    require_root();
    let file = scratch("timeline-small.json");
    let w = workload();
    // The reader wakes at half full, so on an idle CPU it can keep up with
    // a storm (CI once saw 88,031 events and none lost): run the storm
    // again, up to 4 times, until the ring overflows; the accounting is
    // then checked exactly.
    let mut tries = 0;
    let (run, trace) = loop {
        tries += 1;
        let run = trace_command(
            &[
                "--timeline",
                file.to_str().unwrap(),
                "--timeline-buffer",
                "4K",
            ],
            &[w.to_str().unwrap(), "yield", "2", "300"],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        let trace = read_trace(&file);
        let _ = std::fs::remove_file(&file);
        if u(&run.json["timeline"]["lost_events"]) > 0 || tries == 4 {
            break (run, trace);
        }
    };
    let tl = &run.json["timeline"];
    assert_eq!(u(&tl["ring_buffer_bytes"]), 4096, "{tl:#}");
    let lost = u(&tl["lost_events"]);
    assert!(
        lost > 0,
        "a 4 KiB ring under a yield storm lost nothing: {tl:#}"
    );
    assert_eq!(u(&trace["otherData"]["lost_events"]), lost);
    let marker = events(&trace, "i", "lost");
    assert_eq!(marker.len(), 1, "no LOST marker in the file");
    assert!(
        marker[0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("{lost} events LOST"))),
        "{}",
        marker[0]
    );
    // The counters do not depend on the ring: every switch is counted.
    let switches = u(&run.json["process"]["voluntary_switches"])
        + u(&run.json["process"]["involuntary_switches"]);
    assert!(
        switches > u(&tl["events"]),
        "{switches} switches, {} events",
        tl["events"]
    );
    println!(
        "4 KiB ring: {} events kept, {lost} lost, {switches} switches counted ({tries} tries)",
        tl["events"]
    );
}

/// 4 spinners in half a CPU: the intervals marked throttled in the file
/// add up to the report's throttled periods over the window.
#[test]
fn timeline_marks_throttled_intervals_adding_up_to_the_reports_count() {
    require_root();
    let name = format!("affin-timeline-{}", std::process::id());
    let cg = affinity_tests::cgroup::TestCgroup::create_v1_cpu(&name, 50_000, 100_000)
        .expect("create test cgroup");
    let file = scratch("timeline-throttled.json");
    let w = Gated::start(&["spinners", "4", "1500"]);
    cg.add(w.pid()).expect("add to cgroup");
    let (json, trace) = traced_with_timeline(w, "60", &file);
    let reported = u(&json["throttling"]["nr_throttled"]);
    assert!(reported > 0, "{:#}", json["throttling"]);
    let marks = events(&trace, "X", "throttling");
    assert!(!marks.is_empty(), "no throttled interval marked");
    let marked: u64 = marks.iter().map(|m| u(&m["args"]["nr_throttled"])).sum();
    assert_eq!(marked, reported, "marked intervals vs the report's count");
    assert!(
        trace["otherData"]["cpu_quota"]
            .as_str()
            .is_some_and(|q| q.starts_with("0.50 CPUs")),
        "{}",
        trace["otherData"]
    );
}
