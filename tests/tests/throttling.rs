//! CPU-quota throttling found on real programs in a real cgroup (issue:
//! throttling diagnosis). Each test makes its own cgroup with a 0.5-CPU
//! quota; `TestCgroup` removes it on every path (Drop runs on panic too).
//! Root only; one at a time.

use std::process::{Command, Stdio};

use affinity_tests::cgroup::TestCgroup;
use affinity_tests::*;

const QUOTA_US: u64 = 50_000;
const PERIOD_US: u64 = 100_000;

fn cgroup(name: &str) -> TestCgroup {
    let name = format!("{name}-{}", std::process::id());
    TestCgroup::create_v1_cpu(&name, QUOTA_US, PERIOD_US).expect("create test cgroup")
}

/// Runs ffmpeg (libx264, `threads` = "0" for its default) gated in `cg`,
/// traced by pid from before its first frame; returns the report.
fn ffmpeg_in(cg: &TestCgroup, threads: &str) -> serde_json::Value {
    let script = format!(
        "read go; exec ffmpeg -nostdin -loglevel error -f lavfi -i testsrc=size=640x360:rate=25 \
         -frames:v 100 -c:v libx264 -threads {threads} -f null -"
    );
    let mut sh = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    cg.add(sh.id()).expect("add to cgroup");
    let pid = sh.id().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "120", "--interval", "0.5"]);
    {
        use std::io::Write as _;
        sh.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    assert!(sh.wait().unwrap().success(), "ffmpeg failed");
    let (code, json) = tracer.finish();
    assert_eq!(code, 0);
    json
}

#[test]
fn ffmpeg_with_default_threads_is_throttled_and_told_to_use_one() {
    require_root();
    assert!(
        have("ffmpeg"),
        "ffmpeg missing: cargo xtask setup installs it"
    );
    let cg = cgroup("affin-ffmpeg");
    let many = ffmpeg_in(&cg, "0");
    let t = &many["throttling"];
    assert_eq!(t["version"], "v1", "{t:#}");
    assert_eq!(t["quota_cores"], 0.5);
    assert_eq!(t["period_us"], PERIOD_US);
    assert!(t["nr_throttled"].as_u64().unwrap() > 0, "{t:#}");
    assert!(t["throttled_ratio"].as_f64().unwrap() > 0.5, "{t:#}");
    assert!(t["recommended_threads"].as_u64().unwrap() <= 1, "{t:#}");
    assert!(t["runnable_threads_p50"].as_u64().unwrap() >= 2, "{t:#}");
    let finding = t["finding"].as_str().unwrap();
    assert!(finding.contains("-threads 1"), "{finding}");
    assert!(
        t["cgroup"].as_str().unwrap().contains("affin-ffmpeg"),
        "{t:#}"
    );

    // One thread: still over a 0.5-CPU quota, so still throttled in most
    // periods, but less time is lost per second of wall time.
    let one = ffmpeg_in(&cg, "1");
    let lost = |j: &serde_json::Value| {
        j["throttling"]["throttled_ns"].as_f64().unwrap()
            / (j["duration_s"].as_f64().unwrap() * 1e9)
    };
    assert!(
        lost(&one) < lost(&many),
        "-threads 1 lost {:.2} s/s, default {:.2} s/s",
        lost(&one),
        lost(&many)
    );
}

#[test]
fn four_spinners_in_half_a_cpu_are_throttled() {
    require_root();
    let cg = cgroup("affin-spin");
    let mut w = Gated::start(&["spinners", "4", "1500"]);
    cg.add(w.pid()).expect("add to cgroup");
    let pid = w.pid().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "60", "--interval", "0.5"]);
    w.go();
    w.finish();
    let (code, json) = tracer.finish();
    assert_eq!(code, 0);
    let t = &json["throttling"];
    assert!(t["throttled_ratio"].as_f64().unwrap() > 0.8, "{t:#}");
    assert_eq!(t["recommended_threads"], 1);
    // 4 spinners for 1.5 s under 0.5 CPU: on-CPU time is bounded by the quota.
    let eff = json["process"]["effective_parallelism"].as_f64().unwrap();
    assert!(eff < 0.6, "quota 0.5 but parallelism {eff}");
    // Every spinner waited runnable while throttled, and each got a share.
    let threads = t["threads"].as_array().unwrap();
    let spinners: Vec<_> = threads
        .iter()
        .filter(|x| x["comm"].as_str().unwrap_or("").starts_with("spinner-"))
        .collect();
    assert_eq!(spinners.len(), 4, "{t:#}");
    for s in spinners {
        assert!(s["throttled_share_ns"].as_u64().unwrap_or(0) > 0, "{s:#}");
    }
}

#[test]
fn no_quota_means_a_quiet_report() {
    require_root();
    let w = workload();
    let run = trace_command(&[], &[w.to_str().unwrap(), "spin", "200"]);
    assert_eq!(run.code, 0);
    // This test process runs in the root cpu cgroup: no quota on the path.
    let t = &run.json["throttling"];
    assert_eq!(t["limited"], false, "{t:#}");
    let text = Command::new(affin_trace())
        .args(["--", w.to_str().unwrap(), "spin", "100"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(!out.to_lowercase().contains("throttl"), "{out}");
}

/// The test cgroup helper itself: created with the quota, resolved as the
/// limit in force for a process inside it, throttling a busy loop, and
/// removed by Drop even with the process still inside.
#[test]
fn test_cgroup_is_resolved_throttles_and_is_removed() {
    use std::time::Duration;

    use affinity::host::cgroup::{CpuStat, resolve};

    require_root();
    let cg = cgroup("affin-lifecycle");
    let dir = cg.path().to_path_buf();
    assert!(dir.is_dir());
    let mut child = Command::new(workload())
        .args(["spin", "5000"])
        .spawn()
        .expect("spawn");
    cg.add(child.id()).expect("add");
    let before = cg.stat().expect("stat");
    std::thread::sleep(Duration::from_millis(600));
    let after = cg.stat().expect("stat");
    let found = resolve(&affinity::host::Root::host(), child.id()).expect("resolve");
    let l = found.limit().expect("limit");
    assert_eq!(l.dir, dir);
    assert_eq!(l.quota_cores(), 0.5);
    let d = CpuStat::delta(&before, &after);
    assert!(d.nr_periods >= 3, "{d:?}");
    assert!(d.nr_throttled >= 1, "{d:?}");
    drop(cg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let _ = child.kill();
    let _ = child.wait();
}
