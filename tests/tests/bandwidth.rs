//! CFS bandwidth from the kernel's own throttle events (issue 14), against
//! truth by construction on this 2-CPU machine: k >= 2 spinners in a quota
//! of q < 2 CPUs run the quota out q*P/2 into each period (two CPUs spend
//! q*P in q*P/2), and each is then held until the period ends, (1 - q/2)
//! of its life; one spinner in q < 1 runs q*P and is held (1 - q). The
//! tolerance on the exhaustion time is 10% or one 5 ms local slice
//! (sched_cfs_bandwidth_slice_us), whichever is larger: each CPU takes
//! runtime in slices, so CPUs run out up to a slice apart.
//! Each test makes its own cgroup; `TestCgroup` removes it on every path.
//! Root only; one at a time (`cargo xtask test --root bandwidth`).

use affinity_tests::cgroup::TestCgroup;
use affinity_tests::*;

const PERIOD_US: u64 = 100_000;
const SPIN_MS: u64 = 4_000;

/// Runs `k` spinners for SPIN_MS in a fresh cgroup with `quota_us` per
/// PERIOD_US, traced by pid; returns the report.
fn spinners_in_quota(name: &str, k: u32, quota_us: u64) -> serde_json::Value {
    spinners_in_quota_with(name, k, quota_us, &[])
}

/// [`spinners_in_quota`] with `extra` arguments for affin-trace.
fn spinners_in_quota_with(name: &str, k: u32, quota_us: u64, extra: &[&str]) -> serde_json::Value {
    let name = format!("{name}-{}", std::process::id());
    let cg = TestCgroup::create_v1_cpu(&name, quota_us, PERIOD_US).expect("create test cgroup");
    // The construction assumes the CPUs are free; other work on the machine
    // (builds) would make the quota run out later than q*P/2.
    cg.favour().expect("favour test cgroup");
    let mut w = Gated::start(&["spinners", &k.to_string(), &SPIN_MS.to_string()]);
    cg.add(w.pid()).expect("add to cgroup");
    let pid = w.pid().to_string();
    let mut args = vec![
        "--pid",
        pid.as_str(),
        "--duration",
        "60",
        "--interval",
        "0.5",
    ];
    args.extend_from_slice(extra);
    let tracer = Tracer::start(&args);
    let steal_before = steal_ns();
    w.go();
    w.finish();
    let steal = steal_ns().saturating_sub(steal_before);
    let (code, json) = tracer.finish();
    assert_eq!(code, 0);
    wait_split_adds_up(&json, steal);
    json
}

/// Item 2: each spinner's running + runnable + throttled + sleeping is its
/// lifetime within 1%, the rest (`stolen_ns`) at most the machine's steal
/// while they ran (`steal`), and the split's throttled time is the
/// measured one.
fn wait_split_adds_up(json: &serde_json::Value, steal: u64) {
    let held: std::collections::BTreeMap<u64, u64> = json["throttling"]["threads"]
        .as_array()
        .expect("throttling.threads")
        .iter()
        .map(|t| (u(&t["tid"]), u(&t["throttled_ns"])))
        .collect();
    let spinners = json["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(|t| t["comm"].as_str().unwrap_or("").starts_with("spinner-"));
    for t in spinners {
        let w = &t["wait_split"];
        assert_split_adds_up(w, steal);
        assert_eq!(
            Some(&u(&w["throttled_ns"])),
            held.get(&u(&t["tid"])),
            "{w:#}"
        );
    }
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Each spinner's measured throttled time as a share of its life.
fn held_shares(t: &serde_json::Value) -> Vec<f64> {
    t["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(|x| x["comm"].as_str().unwrap_or("").starts_with("spinner-"))
        .map(|x| u(&x["throttled_ns"]) as f64 / (SPIN_MS as f64 * 1e6))
        .collect()
}

/// Each spinner is held from the exhaustion to the period's end: its held
/// share is 1 - (exhausted at)/P, from the measured exhaustion (itself
/// checked against the construction by [`exhausted_within`]). Not from the
/// construction's q: whatever delays the exhaustion in wall time within
/// its tolerance (other work on the CPUs, or hypervisor steal: the quota
/// counts task time, which excludes steal) moves the held share with it;
/// runs read 0.447 and 0.454 for 0.5 with the exhaustion in bounds.
/// The exhaustion is the first CPU's; another CPU with local runtime left
/// runs on for up to one bandwidth slice (`sched_cfs_bandwidth_slice_us`,
/// 5 ms), and its threads' holds start that much later: 3 spinners in 1
/// CPU read 98.0-99.6 ms of throttled CPU time per period where both CPUs
/// throttled at the exhaustion would make 2 x 49.0-51.8. So the share may
/// fall short of 1 - at/P by up to one slice, beyond the tolerance.
fn held_as_exhausted(t: &serde_json::Value, shares: &[f64]) {
    let at = f(&t["periods"]["quota_exhausted_at_ms_p50"]);
    let expect = 1.0 - at * 1e3 / PERIOD_US as f64;
    let slice_us: f64 = std::fs::read_to_string("/proc/sys/kernel/sched_cfs_bandwidth_slice_us")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(5000.0);
    let lag = slice_us / PERIOD_US as f64;
    for s in shares {
        assert!(
            (expect - 0.05 - lag..=expect + 0.05).contains(s),
            "held {s:.3} of the window, {expect:.3} from the exhaustion at {at:.1} ms \
             (allowed: one slice, {lag:.3}, less): {shares:?}"
        );
    }
}

fn exhausted_within(t: &serde_json::Value, expect_ms: f64) {
    let p = &t["periods"];
    let at = f(&p["quota_exhausted_at_ms_p50"]);
    let tol = (expect_ms * 0.10).max(5.0);
    assert!(
        (at - expect_ms).abs() <= tol,
        "quota ran out at {at:.1} ms (p50), expected {expect_ms:.1} +- {tol:.1}: {p:#}"
    );
}

#[test]
fn three_spinners_in_one_cpu_run_out_at_half_period_and_are_held_half() {
    require_root();
    let (k, q) = (3, 1.0);
    let t = spinners_in_quota("affin-bw3", k, (q * PERIOD_US as f64) as u64)["throttling"].clone();
    let method = t["method"].as_str().unwrap();
    assert!(method.starts_with("kernel events ("), "{method}");
    let p = &t["periods"];
    assert!(u(&p["throttled_periods"]) >= 30, "{p:#}");
    exhausted_within(&t, q * PERIOD_US as f64 / 1e3 / 2.0);
    // All three queued in the group when the quota ran out (truth 3, by
    // construction: spinners never sleep). The count is taken at the first
    // held switch-out of a period; a spinner on the other CPU that its own
    // throttle work already took off the run queue, not yet switched out,
    // is no longer in `h_nr_queued` and is counted from `cfs_rq.curr` with
    // `se.on_rq` 0 (bpftrace showed that case in 3 of ~40 periods; before
    // it was counted, a run read queued 2 at p50).
    let queued = u(&p["queued_threads_at_exhaustion_p50"]);
    assert_eq!(queued, u64::from(k), "{p:#}");
    // Running: 2 when both CPUs run the group's threads then. Unpinned, the
    // scheduler may keep the group on one CPU for a period, and another
    // task (a kworker, rcu_preempt: seen with bpftrace) may hold the other
    // CPU for microseconds at that instant with the spinner queued there:
    // 1 is then the true count, so both are allowed.
    let running = u(&p["running_threads_at_exhaustion_p50"]);
    assert!((1..=2).contains(&running), "{p:#}");
    let shares = held_shares(&t);
    assert_eq!(shares.len(), k as usize, "{t:#}");
    held_as_exhausted(&t, &shares);
}

#[test]
fn two_spinners_in_half_a_cpu_run_out_at_a_quarter_period() {
    require_root();
    let (k, q) = (2, 0.5);
    let t = spinners_in_quota("affin-bw2", k, (q * PERIOD_US as f64) as u64)["throttling"].clone();
    exhausted_within(&t, q * PERIOD_US as f64 / 1e3 / 2.0);
    let shares = held_shares(&t);
    assert_eq!(shares.len(), k as usize, "{t:#}");
    held_as_exhausted(&t, &shares);
}

#[test]
fn one_spinner_in_half_a_cpu_is_held_half_the_time() {
    require_root();
    let q = 0.5;
    let t = spinners_in_quota("affin-bw1", 1, (q * PERIOD_US as f64) as u64)["throttling"].clone();
    exhausted_within(&t, q * PERIOD_US as f64 / 1e3);
    assert_eq!(t["periods"]["running_threads_at_exhaustion_p50"], 1);
    let shares = held_shares(&t);
    assert_eq!(shares.len(), 1);
    held_as_exhausted(&t, &shares);
}

/// Item 6: two spinners in one CPU run the quota out at P/2 each period:
/// the report's typical periods are strips of about half `#` then `.`,
/// two threads running at once, and the timeline has a quota-used and a
/// throttled slice per throttled period. Item 3: the cause is the quota.
#[test]
fn two_spinners_in_one_cpu_draw_the_strip_and_the_period_slices() {
    require_root();
    let (k, q) = (2, 1.0);
    let file = scratch("periods.json");
    let json = spinners_in_quota_with(
        "affin-bwstrip",
        k,
        (q * PERIOD_US as f64) as u64,
        &["--timeline", file.to_str().unwrap()],
    );
    let t = &json["throttling"];
    let expect_ms = q * PERIOD_US as f64 / 1e3 / 2.0;
    exhausted_within(t, expect_ms);
    assert_eq!(t["cause"], "quota", "{t:#}");
    let typical = t["periods"]["typical"].as_array().expect("periods.typical");
    assert_eq!(typical.len(), 3, "{t:#}");
    let tol = (expect_ms * 0.10).max(5.0);
    for p in typical {
        // The quota over the time it lasted: 2 at once, by construction.
        // The instant count at exhaustion can read 1 (both CPUs run their
        // slices out together and the other may be switching out then).
        assert_eq!(p["ran_at_once"], k, "{p:#}");
        assert!(
            (1..=u64::from(k)).contains(&u(&p["running_threads"])),
            "{p:#}"
        );
        let strip = p["strip"].as_str().expect("strip");
        assert_eq!(strip.chars().count(), 50, "{strip}");
        let ran_ms = strip.matches('#').count() as f64 * 2.0;
        let held_ms = strip.matches('.').count() as f64 * 2.0;
        assert!((ran_ms - expect_ms).abs() <= tol + 2.0, "{strip}: {p:#}");
        assert!(
            (held_ms - (PERIOD_US as f64 / 1e3 - expect_ms)).abs() <= tol + 2.0,
            "{strip}"
        );
        assert!(strip.starts_with('#') && strip.contains('.'), "{strip}");
    }
    let tl: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("timeline file"))
            .expect("JSON");
    let _ = std::fs::remove_file(&file);
    let slices: Vec<&serde_json::Value> = tl["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .iter()
        .filter(|e| e["cat"] == "quota_period")
        .collect();
    let periods = u(&tl["otherData"]["throttled_periods"]);
    assert!(periods >= 30, "{}", tl["otherData"]);
    assert_eq!(slices.len() as u64, 2 * periods);
    assert_eq!(periods, u(&t["periods"]["throttled_periods"]));
    // Quota used, then throttled, back to back.
    for pair in slices.chunks(2) {
        assert!(
            pair[0]["name"]
                .as_str()
                .unwrap()
                .starts_with("quota used: "),
            "{pair:?}"
        );
        assert!(
            pair[1]["name"].as_str().unwrap().starts_with("throttled "),
            "{pair:?}"
        );
        let end = f(&pair[0]["ts"]) + f(&pair[0]["dur"]);
        assert!((end - f(&pair[1]["ts"])).abs() < 0.01, "{pair:?}");
    }
}

/// Item 3 for real (v1 here): a parent with 0.5 CPU over a child with no
/// quota of its own; one spinner in the child. The report names the
/// parent's limit, reads the parent's burst back, and the spinner is held
/// about half its life.
#[test]
fn a_tighter_parent_is_the_limit_named_with_its_burst() {
    require_root();
    let name = format!("affin-bwpar-{}", std::process::id());
    let parent = TestCgroup::create_v1_cpu(&name, 50_000, PERIOD_US).expect("create parent");
    parent.favour().expect("favour parent");
    parent.set_burst(20_000).expect("set burst");
    let child = parent.child("kid", None).expect("create child");
    let mut w = Gated::start(&["spinners", "1", &SPIN_MS.to_string()]);
    child.add(w.pid()).expect("add to child");
    let pid = w.pid().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "60", "--interval", "0.5"]);
    w.go();
    w.finish();
    let (code, json) = tracer.finish();
    drop(child);
    drop(parent);
    assert_eq!(code, 0);
    let t = &json["throttling"];
    assert_eq!(t["cgroup"], format!("/{name}"), "{t:#}");
    assert_eq!(t["quota_cores"], 0.5, "{t:#}");
    assert_eq!(t["burst_us"], 20_000, "{t:#}");
    assert!(t["burst_used_us"].is_u64(), "{t:#}");
    assert!(t["nr_bursts"].is_u64(), "{t:#}");
    assert_eq!(t["cause"], "quota", "{t:#}");
    let shares = held_shares(t);
    assert_eq!(shares.len(), 1, "{t:#}");
    // A full run read 0.379 once (other runs here 0.45-0.55); its cause was
    // not found: the message carries the periods and the burst used.
    assert!(
        (shares[0] - 0.5).abs() <= 0.05,
        "held {:.3}: {t:#}",
        shares[0]
    );
}
