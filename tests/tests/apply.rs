//! --apply, --verify and revert on real processes (issue: apply safely,
//! prove it helped, undo it). Root only; one at a time.

use std::{
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
};

use affinity_tests::cgroup::TestCgroup;
use affinity_tests::*;
use nix::{sched::CpuSet, unistd::Pid};

fn pin(tid: u32, cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).unwrap();
    }
    nix::sched::sched_setaffinity(Pid::from_raw(tid as i32), &set).unwrap();
}

/// A workload with `n` sleeping threads, started outside affin-trace.
fn idle(n: u32) -> std::process::Child {
    let mut c = Command::new(workload())
        .args(["idle", &n.to_string(), "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    // Let the threads start.
    for _ in 0..100 {
        if masks(c.id()).len() as u32 == n + 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    c
}

/// Traces `pid` for 0.5 s and applies CPU 1 to it, without a prompt.
fn apply_cpu_1(pid: u32) -> Run {
    run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.5",
        "--apply",
        "--cpus",
        "1",
        "--yes",
    ])
}

fn revert(pid: u32) -> std::process::Output {
    Command::new(affin_trace())
        .args(["revert", "--pid", &pid.to_string()])
        .output()
        .unwrap()
}

#[test]
fn apply_sets_every_thread_and_revert_restores_the_exact_masks() {
    require_root();
    let mut w = idle(4);
    let pid = w.id();
    // Distinct masks before, so "restored" means exactly these.
    let tids: Vec<u32> = masks(pid).into_keys().collect();
    pin(tids[1], &[0]);
    pin(tids[2], &[1]);
    let before = masks(pid);
    let run = apply_cpu_1(pid);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = masks(pid);
    assert!(after.values().all(|m| m == "1"), "{after:?}");
    let applied = &run.json["applied"];
    assert_eq!(applied["threads_changed"], 5, "{applied:#}");
    assert_eq!(applied["cpus"], serde_json::json!([1]));
    let state = applied["state_file"].as_str().unwrap();
    let meta = std::fs::symlink_metadata(state).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);

    // Another invocation restores from the state file.
    let out = revert(pid);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(masks(pid), before);
    assert!(!Path::new(state).exists(), "state file kept after revert");
    // Nothing left to revert now.
    let again = revert(pid);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to revert"));
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn a_thread_that_refuses_the_cpus_leaves_no_thread_changed() {
    require_root();
    let mut w = idle(4);
    let pid = w.id();
    // The last thread lives in a cpuset holding CPU 0 only: setting CPU 1 on
    // it fails with EINVAL after the threads before it were changed.
    let dir =
        Path::new("/sys/fs/cgroup/cpuset").join(format!("affin-only0-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cpuset.cpus"), "0").unwrap();
    std::fs::write(dir.join("cpuset.mems"), "0").unwrap();
    let last = *masks(pid).keys().last().unwrap();
    std::fs::write(dir.join("tasks"), last.to_string()).unwrap();
    let before = masks(pid);
    let run = run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        "1",
        "--yes",
    ]);
    let after = masks(pid);
    // Clean up the cpuset before asserting, so a failure leaves nothing
    // (moving the thread back resets its mask to the root cpuset's CPUs).
    let _ = std::fs::write("/sys/fs/cgroup/cpuset/tasks", last.to_string());
    let _ = std::fs::remove_dir(&dir);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("thread {last}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("restored"), "{}", run.stderr);
    assert_eq!(after, before, "left half-applied");
    assert!(run.json["applied"].is_null());
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn cpus_outside_the_allowed_set_change_nothing() {
    require_root();
    let mut w = idle(2);
    let pid = w.id();
    let before = masks(pid);
    let run = run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        "1000",
        "--yes",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not usable"), "{}", run.stderr);
    assert_eq!(masks(pid), before);
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn apply_without_a_terminal_needs_yes_and_changes_nothing() {
    require_root();
    let mut w = idle(2);
    let pid = w.id();
    let before = masks(pid);
    let run = run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        "1",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    assert_eq!(masks(pid), before);
    assert!(programs_left().is_empty());
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn verify_shows_migrations_drop_by_90_percent_for_a_migration_heavy_process() {
    require_root();
    let mut w = Command::new(workload())
        .args(["flip", "12000"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = w.id();
    let run = run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "2",
        "--apply",
        "--yes",
        "--verify",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = &run.json["verification"];
    assert_eq!(v["before"]["class"], "migration_heavy", "{v:#}");
    let before = v["before"]["migration_rate"].as_f64().unwrap();
    let after = v["after"]["migration_rate"].as_f64().unwrap();
    assert!(before > 100.0, "{v:#}");
    assert!(after <= 0.1 * before, "migrations/s {before} -> {after}");
    assert_eq!(v["kept"], true);
    assert_eq!(run.json["applied"]["active"], true);
    let cpus = run.json["applied"]["cpulist"].as_str().unwrap().to_string();
    assert!(masks(pid).values().all(|m| *m == cpus));
    assert!(revert(pid).status.success());
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn a_cgroup_target_is_applied_as_one_transaction() {
    require_root();
    let cg = TestCgroup::create_v1_cpu(
        &format!("affin-apply-{}", std::process::id()),
        200_000,
        100_000,
    )
    .expect("cgroup");
    let mut a = idle(2);
    let mut b = idle(3);
    cg.add(a.id()).unwrap();
    cg.add(b.id()).unwrap();
    let dir = cg.path().display().to_string();
    let run = run(&[
        "--cgroup",
        &dir,
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        "0",
        "--yes",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.json["applied"]["threads_changed"], 7,
        "{:#}",
        run.json["applied"]
    );
    for p in [a.id(), b.id()] {
        assert!(masks(p).values().all(|m| m == "0"), "{:?}", masks(p));
        assert!(revert(p).status.success());
        assert!(masks(p).values().all(|m| m == "0-1"), "{:?}", masks(p));
    }
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn threads_exiting_and_appearing_during_the_apply_do_not_break_it() {
    require_root();
    let mut w = Command::new(workload())
        .args(["churn", "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = w.id();
    let run = apply_cpu_1(pid);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.json["applied"]["threads_changed"].as_u64().unwrap() >= 5);
    // Threads created after the apply inherit the mask from their creator.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let now = masks(pid);
    assert!(now.values().all(|m| m == "1"), "{now:?}");
    assert!(revert(pid).status.success());
    let _ = w.kill();
    let _ = w.wait();
}

/// Thousands of threads churning while applied to: 1000 makers, each
/// creating a 50 ms thread after the last (~2000 live threads, ~20,000
/// creations and exits per second). The apply completes, every live thread
/// has the CPUs a moment later (those that predate it have exited, later
/// ones inherit), and revert puts the previous mask back on every thread.
#[test]
fn thousands_of_churning_threads_are_applied_and_reverted() {
    require_root();
    let mut w = Gated::start(&["churn", "30000", "1000", "50"]);
    let pid = w.pid();
    let before = masks(pid);
    assert!(before.len() > 1000, "{} threads", before.len());
    let original = before[&pid].clone();
    assert_ne!(original, "1");
    let run = apply_cpu_1(pid);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let changed = run.json["applied"]["threads_changed"].as_u64().unwrap();
    assert!(changed >= 1000, "threads_changed {changed}");
    // Longer than a child lives: every thread now started after the apply
    // or was changed by it.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let now = masks(pid);
    assert!(now.len() > 1000, "{} threads", now.len());
    let wrong: Vec<_> = now.iter().filter(|(_, m)| *m != "1").collect();
    assert!(
        wrong.is_empty(),
        "{} of {} threads without the CPUs: {wrong:?}",
        wrong.len(),
        now.len()
    );
    assert!(revert(pid).status.success());
    std::thread::sleep(std::time::Duration::from_millis(150));
    let after = masks(pid);
    let wrong: Vec<_> = after.iter().filter(|(_, m)| **m != original).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} threads not reverted: {wrong:?}",
        wrong.len(),
        after.len()
    );
    let _ = w.child.kill();
    let _ = w.child.wait();
}
