//! Advice that holds (issue 13, items 4, 5 and 7): one decision for a
//! multi-process target and a revert by name, a no-op apply that changes
//! nothing, a signal during an apply's window that changes nothing, input
//! refused before tracing. Root only; one at a time.

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use affinity_tests::cgroup::TestCgroup;
use affinity_tests::*;

/// `workload idle N 20000` started as `exe`, once its threads run.
fn idle_as(exe: &Path, n: u32) -> Child {
    let mut c = Command::new(exe)
        .args(["idle", &n.to_string(), "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    for _ in 0..100 {
        if masks(c.id()).len() as u32 == n + 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    c
}

/// The workload binary copied under a name no other process has, so
/// `--comm` finds exactly the processes the test starts.
fn unique_workload() -> (PathBuf, String) {
    let name = format!("adv{}", std::process::id() % 1_000_000);
    let dir = scratch("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(&name);
    std::fs::copy(workload(), &exe).unwrap();
    (exe, name)
}

/// State files the apply left for `pid`.
fn state_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir("/run/affin-trace")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pid}-")) && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn stop(children: &mut [&mut Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_two_process_target_gets_one_command_and_is_reverted_by_comm() {
    require_root();
    let (exe, name) = unique_workload();
    let mut a = idle_as(&exe, 1);
    let mut b = idle_as(&exe, 2);
    let (pa, pb) = (a.id(), b.id());
    let before = (masks(pa), masks(pb));
    assert!(
        before
            .0
            .values()
            .chain(before.1.values())
            .all(|m| m == "0-1")
    );

    // The advice: one command covering both processes.
    let dry = run(&["--comm", &name, "--duration", "0.3"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.json["target"]["pids"], serde_json::json!([pa, pb]));
    let cmd = dry.json["recommendation"]["command"].as_str().unwrap();
    let list = dry.json["recommendation"]["cpulist"].as_str().unwrap();
    assert_eq!(
        cmd,
        format!("for p in {pa} {pb}; do taskset -a -c -p {list} $p; done")
    );

    // The apply covers both, and revert --comm finds both.
    let applied = run(&[
        "--comm",
        &name,
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        "1",
        "--yes",
    ]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    assert_eq!(applied.json["applied"]["threads_changed"], 5);
    assert_eq!(
        applied.json["applied"]["state_files"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for p in [pa, pb] {
        assert!(masks(p).values().all(|m| m == "1"), "{:?}", masks(p));
    }
    let out = Command::new(affin_trace())
        .args(["revert", "--comm", &name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("2 thread(s) of pid {pa}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("3 thread(s) of pid {pb}")),
        "{stdout}"
    );
    assert_eq!((masks(pa), masks(pb)), before);
    assert!(state_files(pa).is_empty() && state_files(pb).is_empty());
    // Nothing is left to revert for that name.
    let again = Command::new(affin_trace())
        .args(["revert", "--comm", &name])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to revert"));
    stop(&mut [&mut a, &mut b]);
    let _ = std::fs::remove_file(&exe);
}

#[test]
fn a_recommendation_equal_to_every_threads_mask_changes_nothing() {
    require_root();
    // A cpuset holding CPU 1 only: the recommendation must be CPU 1 (it
    // never leaves the cpuset), which is every thread's mask already.
    let dir = Path::new("/sys/fs/cgroup/cpuset").join(format!("affin-noop-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cpuset.cpus"), "1").unwrap();
    std::fs::write(dir.join("cpuset.mems"), "0").unwrap();
    let (exe, _) = unique_workload();
    let mut w = idle_as(&exe, 3);
    let pid = w.id();
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    for tid in masks(pid).keys() {
        let _ = std::fs::write(dir.join("tasks"), tid.to_string());
    }
    let before = masks(pid);
    let run = run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--yes",
    ]);
    let after = masks(pid);
    let files = state_files(pid);
    // Out of the cpuset before asserting, so a failure leaves nothing.
    let _ = w.kill();
    let _ = w.wait();
    for _ in 0..50 {
        if std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(before.values().all(|m| m == "1"), "{before:?}");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json["recommendation"]["cpulist"], "1",
        "{:#}",
        run.json["recommendation"]
    );
    let n = &run.json["not_applied"];
    assert_eq!(n["reason"], "nothing_to_change", "{n:#}");
    assert_eq!(n["threads"], 4);
    assert!(n["message"].as_str().unwrap().contains("nothing to change"));
    assert!(run.json["applied"].is_null(), "{:#}", run.json["applied"]);
    assert_eq!(after, before);
    assert!(files.is_empty(), "a no-op wrote state: {files:?}");
    let _ = std::fs::remove_file(&exe);
}

#[test]
fn sigint_during_an_apply_window_changes_nothing_and_exits_130() {
    require_root();
    let (exe, _) = unique_workload();
    let mut w = idle_as(&exe, 2);
    let pid = w.id();
    let before = masks(pid);
    let t0 = Instant::now();
    let tracer = Tracer::start(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "20",
        "--apply",
        "--cpus",
        "1",
        "--yes",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, json) = tracer.finish();
    let took = t0.elapsed();
    let after = masks(pid);
    let files = state_files(pid);
    stop(&mut [&mut w]);
    assert_eq!(code, 130);
    assert!(
        took < Duration::from_secs(10),
        "the window did not end: {took:?}"
    );
    assert_eq!(after, before);
    assert!(files.is_empty(), "{files:?}");
    // The report of the window so far is there, and says why nothing changed.
    let d = json["duration_s"].as_f64().unwrap();
    assert!(d > 0.3 && d < 10.0, "duration {d}");
    assert_eq!(json["not_applied"]["reason"], "cancelled", "{json:#}");
    assert_eq!(json["not_applied"]["signal"], "SIGINT");
    assert!(json["applied"].is_null());
    assert!(programs_left().is_empty());
    let _ = std::fs::remove_file(&exe);
}

#[test]
fn bad_cpus_and_cgroup_forms_are_settled_before_tracing() {
    require_root();
    let me = std::process::id().to_string();
    // CPU 7 (or the first past the last online one) is not online here:
    // refused at once, not after the 5 s window.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let last: u32 = online
        .trim()
        .rsplit([',', '-'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bad = (last + 1).max(7).to_string();
    let t0 = Instant::now();
    let o = Command::new(affin_trace())
        .args([
            "--pid",
            &me,
            "--duration",
            "5",
            "--apply",
            "--cpus",
            &bad,
            "--yes",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(err.contains("not online"), "{err}");
    assert!(err.contains(&format!("online: {}", online.trim())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(programs_left().is_empty());

    // A cgroup given as the report prints it (relative to its mount).
    let cg = TestCgroup::create_v1_cpu(
        &format!("affin-rel-{}", std::process::id()),
        100_000,
        100_000,
    )
    .expect("cgroup");
    let (exe, _) = unique_workload();
    let mut w = idle_as(&exe, 1);
    cg.add(w.id()).unwrap();
    let rel = format!("/{}", cg.path().file_name().unwrap().to_str().unwrap());
    let r = run(&["--cgroup", &rel, "--duration", "0.3"]);
    stop(&mut [&mut w]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["target"]["pids"], serde_json::json!([w.id()]));
    let _ = std::fs::remove_file(&exe);
}
