//! `--timeline` in Perfetto's protobuf (issue 16): the file decoded with the
//! official schema (PyPI `perfetto`'s compiled `perfetto_trace_pb2`, in the
//! venv `cargo xtask setup` makes; no network, no trace processor) and
//! checked against the same run's counters; the writer's memory under a
//! minute-long yield storm. Root only; one at a time.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::{Duration, Instant},
};

use affinity::report::perfetto::{STATE_DEAD, STATE_PREEMPTED};
use affinity_tests::*;
use hdrhistogram::Histogram;
use serde_json::Value;

/// Where `cargo xtask setup` puts the Perfetto schema.
const VENV_PYTHON: &str = "/opt/affin-trace-venv/bin/python";

/// Every scheduling record of one file, through the official schema, as
/// JSON: switches `[cpu, ts, prev (-1: implied), prev_state, next]` (compact
/// and full), wakeups `[ts, pid]`, migrations `[ts, pid, orig, dest]`, the
/// descriptors' tids, the counter tracks `{uuid: name}` and their values
/// `[ts, uuid, value]` (a value before its track's descriptor fails).
const DECODE_PY: &str = r#"
import json, sys
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
t = pb.Trace()
t.ParseFromString(open(sys.argv[1], "rb").read())
sw, wake, mig, tids, counters, values = [], [], [], [], {}, []
for p in t.packet:
    if p.HasField("ftrace_events"):
        b = p.ftrace_events
        cs = b.compact_sched
        ts = 0
        for i in range(len(cs.switch_timestamp)):
            ts += cs.switch_timestamp[i]
            sw.append([b.cpu, ts, -1, cs.switch_prev_state[i], cs.switch_next_pid[i]])
        for e in b.event:
            k = e.WhichOneof("event")
            if k == "sched_switch":
                s = e.sched_switch
                sw.append([b.cpu, e.timestamp, s.prev_pid, s.prev_state, s.next_pid])
            elif k in ("sched_wakeup", "sched_wakeup_new"):
                wake.append([e.timestamp, getattr(e, k).pid])
            elif k == "sched_migrate_task":
                m = e.sched_migrate_task
                mig.append([e.timestamp, m.pid, m.orig_cpu, m.dest_cpu])
    if p.HasField("process_tree"):
        tids += [th.tid for th in p.process_tree.threads]
    if p.HasField("track_descriptor") and p.track_descriptor.HasField("counter"):
        counters[str(p.track_descriptor.uuid)] = p.track_descriptor.name
    if p.HasField("track_event") and p.track_event.type == pb.TrackEvent.TYPE_COUNTER:
        e = p.track_event
        if str(e.track_uuid) not in counters:
            sys.exit("a counter value before its track's descriptor")
        values.append([p.timestamp, str(e.track_uuid), e.counter_value])
print(json.dumps({"switches": sw, "wakeups": wake, "migrations": mig, "tids": tids,
                  "counters": counters, "counter_values": values}))
"#;

/// The file through the official schema.
fn official(file: &std::path::Path) -> Value {
    let out = Command::new(VENV_PYTHON)
        .args(["-c", DECODE_PY])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{VENV_PYTHON}: {e}; run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "the official schema did not read the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("records as JSON")
}

/// One switch with its previous task resolved.
#[derive(Clone, Copy, Debug)]
struct Switch {
    ts: u64,
    prev: u64,
    state: i64,
    next: u64,
}

/// The switches per CPU in time order, each compact one's previous task
/// taken from the CPU's last switch (as Perfetto reads them).
fn switches(v: &Value) -> Vec<Switch> {
    let mut per_cpu: BTreeMap<u64, Vec<(u64, i64, i64, u64)>> = BTreeMap::new();
    for s in v["switches"].as_array().unwrap() {
        let s = s.as_array().unwrap();
        per_cpu.entry(u(&s[0])).or_default().push((
            u(&s[1]),
            s[2].as_i64().unwrap(),
            s[3].as_i64().unwrap(),
            u(&s[4]),
        ));
    }
    let mut out = Vec::new();
    for (cpu, mut list) in per_cpu {
        list.sort_by_key(|s| s.0);
        let mut on_cpu = None;
        for (ts, prev, state, next) in list {
            let prev = if prev >= 0 {
                prev as u64
            } else {
                on_cpu.unwrap_or_else(|| panic!("CPU {cpu}: a compact switch first at {ts}"))
            };
            on_cpu = Some(next);
            out.push(Switch {
                ts,
                prev,
                state,
                next,
            });
        }
    }
    out
}

/// The two wait distributions of each target thread, recomputed from the
/// decoded records with the rules of the report's key (README, "Timeline"):
/// a wakeup of a thread that is off a CPU starts a wakeup wait, a
/// preempted switch-out a preempted wait, the next switch-in ends it.
fn waits(sw: &[Switch], wakeups: &[(u64, u64)]) -> BTreeMap<u64, [Histogram<u64>; 2]> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Running,
        Woken(u64),
        Preempted(u64),
        Off,
    }
    // Switch-outs before wakeups before switch-ins at one instant never
    // happen to one thread; order by time only.
    let mut all: Vec<(u64, Option<Switch>, u64)> = sw.iter().map(|s| (s.ts, Some(*s), 0)).collect();
    all.extend(wakeups.iter().map(|&(ts, pid)| (ts, None, pid)));
    all.sort_by_key(|e| e.0);
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
    let mut st: BTreeMap<u64, St> = BTreeMap::new();
    let mut out: BTreeMap<u64, [Histogram<u64>; 2]> = BTreeMap::new();
    for (ts, s, woken) in all {
        match s {
            Some(s) => {
                if s.prev != 0 {
                    let next = if s.state == STATE_PREEMPTED {
                        St::Preempted(ts)
                    } else {
                        St::Off
                    };
                    st.insert(s.prev, next);
                }
                if s.next != 0 {
                    let h = out.entry(s.next).or_insert_with(|| [hist(), hist()]);
                    match st.get(&s.next) {
                        Some(St::Woken(t)) => h[0].saturating_record((ts - t).max(1)),
                        Some(St::Preempted(t)) => h[1].saturating_record((ts - t).max(1)),
                        _ => {}
                    }
                    st.insert(s.next, St::Running);
                }
            }
            None => {
                if matches!(st.get(&woken), None | Some(St::Off)) {
                    st.insert(woken, St::Woken(ts));
                }
            }
        }
    }
    out
}

/// `h`'s figures as the report's latency keys give them.
fn figures(h: &Histogram<u64>) -> Value {
    let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
    serde_json::json!({
        "count": h.len(),
        "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999),
        "max": (!h.is_empty()).then(|| h.max()),
    })
}

/// The report's figures without the encoded histogram.
fn reported(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("hdr_base64");
    v
}

/// 200 forced pins alternating CPUs 0 and 1, streamed to a Perfetto file and
/// decoded with the official schema: migrate records equal the report's
/// migrations and target switch-outs its switches (exact), every record the
/// kernel wrote is in the file, every target thread has a descriptor, and
/// the exact latency figures equal those recomputed from the records.
#[test]
fn perfetto_timeline_of_hop_matches_the_reports_counters() {
    require_root();
    const N: u64 = 200;
    let file = scratch("timeline.perfetto-trace");
    let w = Gated::start(&["hop", &N.to_string(), "2"]);
    let json = trace_gated_with_timeline(w, "120", &file);
    let bytes = std::fs::metadata(&file).expect("the timeline file").len();
    let v = official(&file);
    let _ = std::fs::remove_file(&file);

    let tl = &json["timeline"];
    assert_eq!(tl["format"], "perfetto", "{tl:#}");
    assert_eq!(u(&tl["lost_events"]), 0, "{tl:#}");
    assert_eq!(u(&tl["perfetto"]["bytes"]), bytes);
    let targets: BTreeSet<u64> = (json["threads"].as_array().unwrap().iter())
        .map(|t| u(&t["tid"]))
        .collect();
    let sw = switches(&v);
    let wakeups: Vec<(u64, u64)> = (v["wakeups"].as_array().unwrap().iter())
        .map(|w| (u(&w[0]), u(&w[1])))
        .collect();
    let migrations = v["migrations"].as_array().unwrap();
    // Every event drained is a record (the writer drops nothing).
    let records = (sw.len() + wakeups.len() + migrations.len()) as u64;
    assert_eq!(records, u(&tl["events"]), "{tl:#}");

    let p = &json["process"];
    assert_eq!(u(&p["migrations"]), N, "{p:#}");
    let mig = (migrations.iter())
        .filter(|m| targets.contains(&u(&m[1])))
        .count() as u64;
    assert_eq!(mig, N, "migrate records vs the migration count");
    // Each switch-out of a target thread is one the kernel side counted
    // (voluntary or not), and each is in the file with its thread.
    let switches = u(&p["voluntary_switches"]) + u(&p["involuntary_switches"]);
    let out = sw.iter().filter(|s| targets.contains(&s.prev)).count() as u64;
    let into = sw.iter().filter(|s| targets.contains(&s.next)).count() as u64;
    assert_eq!(
        out, switches,
        "switch-outs in the file vs the switches counted"
    );
    // A switch-out for every switch-in, but for threads running at the
    // window's start (one each at most). Fewer switch-ins than switch-outs
    // (7 of 276 in one run, none in the next): now and then the kernel
    // resumes a task with no sched_switch naming it (README, "A switch-in
    // the kernel does not report"); the writer then writes the next
    // switch-out in full, so its thread is still right.
    let edge = targets.len() as u64;
    assert!(into <= out + edge, "{into} in, {out} out");
    let preempted = sw.iter().filter(|s| s.state == STATE_PREEMPTED).count() as u64;
    assert_eq!(preempted, u(&p["involuntary_switches"]), "R+ switch-outs");
    let dead = sw.iter().filter(|s| s.state == STATE_DEAD).count() as u64;
    let woken = wakeups.iter().filter(|w| targets.contains(&w.1)).count() as u64;
    assert_eq!(woken, u(&tl["perfetto"]["sched_wakeup"]), "{tl:#}");
    // Every run-queue wait the kernel side timed began with a wakeup.
    let runq_waits = u(&p["runq_latency_ns"]["count"]);
    assert!(woken >= runq_waits, "{woken} wakeups, {runq_waits} waits");

    let descriptors: BTreeSet<u64> = v["tids"].as_array().unwrap().iter().map(u).collect();
    for tid in &targets {
        assert!(descriptors.contains(tid), "no descriptor for thread {tid}");
    }

    // The exact percentiles, per thread and for the process.
    let recomputed = waits(&sw, &wakeups);
    let lat = &tl["latency"];
    let mut process =
        [0, 1].map(|_| Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap());
    for t in lat["threads"].as_array().unwrap() {
        let h = &recomputed[&u(&t["tid"])];
        assert_eq!(reported(&t["wakeup_to_run_ns"]), figures(&h[0]), "{t:#}");
        assert_eq!(reported(&t["preempted_wait_ns"]), figures(&h[1]), "{t:#}");
        process[0].add(&h[0]).unwrap();
        process[1].add(&h[1]).unwrap();
    }
    assert_eq!(reported(&lat["wakeup_to_run_ns"]), figures(&process[0]));
    assert_eq!(reported(&lat["preempted_wait_ns"]), figures(&process[1]));
    assert!(!process[0].is_empty(), "no wakeup waits: {lat:#}");
    println!(
        "hop {N}: {bytes} bytes, {} events ({:.1} bytes/event), {out} switch-outs \
         ({preempted} preempted, {dead} dead) vs {switches} counted, {into} switch-ins, \
         {mig} migrations, {woken} wakeups vs {runq_waits} runq waits; wakeup p50/p99/max {}/{}/{} ns \
         over {} waits",
        u(&tl["events"]),
        bytes as f64 / u(&tl["events"]).max(1) as f64,
        lat["wakeup_to_run_ns"]["p50"],
        lat["wakeup_to_run_ns"]["p99"],
        lat["wakeup_to_run_ns"]["max"],
        process[0].len(),
    );
}

/// A hog pinned to CPU 1 preempts a target spinner pinned there: the file
/// gets a counter track named after the hog, and the counters rise exactly
/// once per preempted switch-out of a target to another process.
#[test]
fn a_preempting_neighbour_gets_its_own_counter_track() {
    require_root();
    let hog = Hog::start(1, 20_000);
    let file = scratch("neighbour.perfetto-trace");
    let w = workload();
    let run = trace_command(
        &["--interval", "0.5", "--timeline", file.to_str().unwrap()],
        &[
            w.to_str().unwrap(),
            "pinspin",
            "1",
            "800",
            &hog.pid().to_string(),
        ],
    );
    let hog_pid = u64::from(hog.pid());
    drop(hog);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = official(&file);
    let _ = std::fs::remove_file(&file);
    let j = &run.json;
    let tl = &j["timeline"];
    let targets: BTreeSet<u64> = (j["threads"].as_array().unwrap().iter())
        .map(|t| u(&t["tid"]))
        .collect();
    let counters = v["counters"].as_object().unwrap();
    assert_eq!(u(&tl["neighbour_tracks"]), counters.len() as u64, "{tl:#}");
    let hog_track = (counters.iter())
        .find(|(_, name)| {
            name.as_str()
                .unwrap()
                .starts_with(&format!("preempted by workload (pid {hog_pid})"))
        })
        .map(|(uuid, _)| uuid.clone())
        .unwrap_or_else(|| panic!("no track for the hog {hog_pid}: {counters:#?}"));
    // Per track in time order: each value is one step from the last.
    let mut per_track: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    for c in v["counter_values"].as_array().unwrap() {
        let uuid = c[1].as_str().unwrap().to_string();
        per_track
            .entry(uuid)
            .or_default()
            .push((u(&c[0]), c[2].as_i64().unwrap()));
    }
    let mut rises = 0;
    let mut hog_rises = 0;
    for (uuid, mut values) in per_track {
        values.sort_by_key(|v| v.0);
        let mut last = 0;
        for (ts, value) in values {
            assert!(
                (value - last).abs() == 1 && (0..=targets.len() as i64).contains(&value),
                "track {uuid} at {ts}: {last} -> {value}"
            );
            if value > last {
                rises += 1;
                hog_rises += u64::from(uuid == hog_track);
            }
            last = value;
        }
    }
    // A runnable task leaves its CPU only to another task (never to the
    // idle one), and the file writes other tasks as pid 0.
    let preempted_away = (switches(&v).iter())
        .filter(|s| targets.contains(&s.prev) && s.state == STATE_PREEMPTED && s.next == 0)
        .count() as u64;
    assert_eq!(
        rises, preempted_away,
        "counter rises vs R+ switch-outs to other tasks"
    );
    assert!(hog_rises > 0, "the hog never preempted the target");
    println!(
        "{} neighbour tracks, {rises} preemptions by neighbours ({hog_rises} by the hog)",
        counters.len()
    );
}

/// affin-trace's resident peak (VmHWM, kB) and CPU ticks (utime + stime),
/// or `None` once it has exited (a zombie has no memory lines).
fn peak_and_cpu(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the comm's closing parenthesis: utime and stime are the
    // 12th and 13th.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some((hwm, ticks))
}

/// Resident peak allowed (kB), the issue's bound. Measured: 33 MB after a
/// minute of this storm (18.1 million events, none lost), 31 MB of it
/// already there when tracing started (the maps, the ring mapped twice):
/// 3x margin. A window that held its events (40 bytes each, 300,000 a
/// second) would pass it in under 6 s.
const PEAK_LIMIT_KB: u64 = 100 * 1024;
/// Growth allowed over the window (kB): measured 1.9 MB; 10x margin, and
/// under 2 s of held events.
const GROWTH_LIMIT_KB: u64 = 20 * 1024;

/// A 60 s sched_yield storm (two threads on CPU 0, released at a gate once
/// the tracer is attached) streamed to a Perfetto file: affin-trace's
/// resident peak stays under the bound while millions of events go to the
/// file, and the loss is counted, not hidden.
#[test]
fn a_minute_of_yield_storm_streams_in_bounded_memory() {
    require_root();
    const SECS: u64 = 60;
    let file = scratch("storm.perfetto-trace");
    let mut w = Gated::start(&["storm", "2", &(SECS * 1000).to_string()]);
    let tracer = Tracer::start(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "300",
        "--interval",
        "1",
        "--timeline",
        file.to_str().unwrap(),
    ]);
    let pid = tracer.child.id();
    let (start_hwm, _) = peak_and_cpu(pid).expect("affin-trace's status");
    w.go();
    let t0 = Instant::now();
    let mut last = (start_hwm, 0);
    while let Some(now) = peak_and_cpu(pid) {
        last = now;
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = t0.elapsed().as_secs_f64();
    w.finish();
    let (code, json) = tracer.finish();
    assert_eq!(code, 0, "{json}");
    let bytes = std::fs::metadata(&file).expect("the timeline file").len();
    let _ = std::fs::remove_file(&file);
    let tl = &json["timeline"];
    let events = u(&tl["events"]);
    let lost = u(&tl["lost_events"]);
    assert_eq!(u(&tl["perfetto"]["bytes"]), bytes);
    let (hwm, ticks) = last;
    let cpu_s = ticks as f64
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
    println!(
        "storm {SECS} s: {events} events ({:.0}/s over {wall:.1} s), {lost} lost, {bytes} bytes \
         ({:.2} bytes/event), affin-trace VmHWM {hwm} kB (at start {start_hwm} kB), \
         {cpu_s:.1} s CPU ({:.0} events per CPU second)",
        events as f64 / wall,
        bytes as f64 / events.max(1) as f64,
        events as f64 / cpu_s.max(0.01),
    );
    // A storm: at least 20,000 events a second reached the file (measured
    // several times that on a shared 2-CPU machine).
    assert!(events >= 20_000 * SECS, "only {events} events: no storm");
    assert!(
        hwm < PEAK_LIMIT_KB,
        "affin-trace's resident peak {hwm} kB over {PEAK_LIMIT_KB} kB"
    );
    assert!(
        hwm - start_hwm < GROWTH_LIMIT_KB,
        "affin-trace grew {} kB over the window",
        hwm - start_hwm
    );
}

/// A gated yield storm of `ms` (two threads on CPU 0) and affin-trace
/// tracing it with a timeline to `file` keeping at most `max_events`
/// (Chrome JSON); the storm starts at `go()`.
fn storm_with_timeline(ms: u64, file: &std::path::Path, max_events: u64) -> (Gated, Tracer) {
    let w = Gated::start(&["storm", "2", &ms.to_string()]);
    let tracer = Tracer::start(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "60",
        "--timeline",
        file.to_str().unwrap(),
        "--timeline-max-events",
        &max_events.to_string(),
    ]);
    (w, tracer)
}

/// Issue 18 item 7: a second SIGINT after the one that ends the window
/// stops the timeline's writing. A yield storm fills a big capture; two
/// SIGINTs 50 ms apart: the Chrome JSON file (built and written after the
/// window, seconds for this many events) is not written, nor left
/// half-written or as a temporary file, the exit is 1 and the report still
/// comes. The Perfetto file, written as the window runs, is either complete
/// (it was finished before the second signal) or absent.
#[test]
fn a_second_signal_stops_the_timeline_writing_leaving_it_valid_or_absent() {
    require_root();
    for name in ["t.json", "t.perfetto-trace"] {
        let dir = scratch("second-signal");
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join(name);
        // Chrome JSON: keep them all, so the build takes seconds.
        let (mut w, tracer) = storm_with_timeline(3000, &file, 10_000_000);
        let pid = nix::unistd::Pid::from_raw(tracer.child.id() as i32);
        w.go();
        std::thread::sleep(Duration::from_millis(2500));
        let t = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let (code, json) = tracer.finish();
        let took = t.elapsed();
        drop(w);
        let events = u(&json["timeline"]["events"]);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        println!(
            "{name}: {events} events, exit {code} {took:.2?} after the first SIGINT, left {left:?}"
        );
        assert!(events > 300_000, "a small capture ({events} events)");
        if name.ends_with(".json") {
            assert_eq!(code, 1, "{json}");
            assert!(left.is_empty(), "left behind: {left:?}");
            // Building this file takes 6.5 s (measured): stopped, not built.
            assert!(took < Duration::from_secs(2), "{took:?}");
        } else if left.is_empty() {
            assert_eq!(code, 1, "{json}");
        } else {
            assert_eq!(code, 0, "{json}");
            let v = official(&file);
            let records = v["switches"].as_array().unwrap().len()
                + v["wakeups"].as_array().unwrap().len()
                + v["migrations"].as_array().unwrap().len();
            assert_eq!(records as u64, events, "a complete file");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Issue 18 item 7, for Chrome JSON (built when the window ends, so it
/// holds its events): past `--timeline-max-events` the events are counted,
/// not kept, and the file stops where they begin, with a marker. The same
/// storm with a cap 20 times smaller peaks lower: the cap is what bounds
/// the memory.
#[test]
fn a_chrome_timeline_holds_to_its_cap_and_says_where_it_stops() {
    require_root();
    let mut peaks = Vec::new();
    for cap in [20_000u64, 400_000] {
        let file = scratch(&format!("capped-{cap}.json"));
        let (mut w, tracer) = storm_with_timeline(4000, &file, cap);
        let pid = tracer.child.id();
        let (start_hwm, _) = peak_and_cpu(pid).expect("affin-trace's status");
        w.go();
        let mut hwm = start_hwm;
        while let Some((now, _)) = peak_and_cpu(pid) {
            hwm = now;
            std::thread::sleep(Duration::from_millis(100));
        }
        w.finish();
        let (code, json) = tracer.finish();
        assert_eq!(code, 0, "{json}");
        let trace: Value =
            serde_json::from_slice(&std::fs::read(&file).expect("the timeline file"))
                .expect("valid JSON");
        let _ = std::fs::remove_file(&file);
        let tl = &json["timeline"];
        let (kept, truncated) = (u(&tl["events"]), u(&tl["truncated_events"]));
        println!(
            "cap {cap}: kept {kept}, truncated {truncated}, lost {}, VmHWM {hwm} kB \
             (at start {start_hwm} kB)",
            u(&tl["lost_events"])
        );
        assert_eq!(kept, cap, "kept exactly the cap");
        assert!(truncated > 0, "the storm passed the cap");
        assert_eq!(u(&trace["otherData"]["truncated_events"]), truncated);
        let cut = u(&trace["otherData"]["truncated_at_ns"]);
        assert!(cut < u(&trace["otherData"]["duration_ns"]));
        let marks: Vec<&Value> = (trace["traceEvents"].as_array().unwrap().iter())
            .filter(|e| e["cat"] == "truncated")
            .collect();
        assert_eq!(marks.len(), 1, "one marker");
        assert_eq!(u(&marks[0]["args"]["truncated_events"]), truncated);
        // Nothing drawn past the cut.
        let cut_us = cut as f64 / 1e3;
        for e in trace["traceEvents"].as_array().unwrap() {
            if e["ph"] == "X" {
                let end = e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap();
                assert!(
                    end <= cut_us + 1e-3,
                    "drawn past the cut at {cut_us} us: {e}"
                );
            }
        }
        peaks.push(hwm - start_hwm);
    }
    assert!(
        peaks[0] * 2 < peaks[1],
        "the growth did not follow the cap: {peaks:?} kB"
    );
}
