//! Bad input: one clear line with the fix, a documented non-zero exit, and
//! nothing loaded or changed (issue: hardening, item 1). Root only, because
//! the same binary would otherwise stop at the privilege check first.

use std::process::{Command, Stdio};

use affinity_tests::*;

/// Runs the binary with `args`; returns (exit code, stderr).
fn bad(args: &[&str]) -> (i32, String) {
    let o = Command::new(affin_trace())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_one_line(err: &str, needle: &str) {
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn pid_0_and_missing_pids_are_no_such_process() {
    require_root();
    for pid in ["0", "4194311"] {
        let (code, err) = bad(&["--pid", pid, "-d", "1"]);
        assert_eq!(code, 2);
        assert_one_line(&err, "no such process");
    }
    assert!(programs_left().is_empty());
}

#[test]
fn a_zombie_is_refused() {
    require_root();
    // A child that exited and is not reaped (we never wait for it yet).
    let mut child = Command::new("true").spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, err) = bad(&["--pid", &child.id().to_string(), "-d", "1"]);
    let _ = child.wait();
    assert_eq!(code, 2);
    assert_one_line(&err, "zombie");
}

#[test]
fn a_kernel_thread_is_traced_but_never_applied() {
    require_root();
    // pid 2 is kthreadd.
    let run = run(&["--pid", "2", "-d", "0.3", "--apply", "--yes", "--cpus", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("kernel thread"), "{}", run.stderr);
    assert!(run.json["applied"].is_null());
}

#[test]
fn durations_and_intervals_out_of_range_are_one_line_exit_2() {
    require_root();
    for args in [
        ["-p", "1", "-d", "0"],
        ["-p", "1", "-d", "-5"],
        ["-p", "1", "-d", "1e12"],
        ["-p", "1", "-i", "0"],
        ["-p", "1", "-i", "abc"],
    ] {
        let (code, err) = bad(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--help"), "{err}");
    }
    let (code, err) = bad(&["-p", "1", "-d", "1", "-i", "5"]);
    assert_eq!(code, 2);
    assert_one_line(&err, "make the interval shorter");
}

#[test]
fn an_unwritable_output_path_fails_before_tracing() {
    require_root();
    let (code, err) = bad(&["-p", "1", "-d", "5", "-o", "/nonexistent/dir/r.json"]);
    assert_eq!(code, 2);
    assert_one_line(&err, "choose a writable --output path");
    assert!(programs_left().is_empty());
}

#[test]
fn a_malformed_config_names_the_file_and_exits_2() {
    require_root();
    let cfg = scratch("bad.toml");
    std::fs::write(&cfg, "[thresholds]\nmigration_rate = \"fast\"\n").unwrap();
    let (code, err) = bad(&["-p", "1", "-d", "1", "--config", cfg.to_str().unwrap()]);
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(code, 2);
    assert_one_line(&err, "bad.toml");
    assert!(err.contains("migration_rate"), "{err}");
}

#[test]
fn an_unknown_cgroup_or_name_exits_2() {
    require_root();
    let (code, err) = bad(&["--cgroup", "/sys/fs/cgroup/cpu/no-such-group", "-d", "1"]);
    assert_eq!(code, 2);
    assert_one_line(&err, "not a cgroup directory");
    let (code, err) = bad(&["--comm", "no-such-process-name", "-d", "1"]);
    assert_eq!(code, 2);
    assert_one_line(&err, "no process named");
}

#[test]
fn a_target_that_exits_before_the_apply_changes_nothing() {
    require_root();
    let w = workload();
    let mut c = Command::new(&w).args(["spin", "300"]).spawn().unwrap();
    let pid = c.id().to_string();
    // The window outlasts the process: the report marks it exited and the
    // apply is refused.
    let run = run(&["--pid", &pid, "-d", "3", "--apply", "--yes", "--cpus", "0"]);
    let _ = c.wait();
    assert_eq!(
        run.json["target"]["exited_pids"][0].as_u64(),
        pid.parse().ok()
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("exited before the apply"),
        "{}",
        run.stderr
    );
}
