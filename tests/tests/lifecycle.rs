//! Start, stop and failure paths of the real binary: exit codes, pass-through
//! of the traced command, and no BPF program left behind on any exit path.
//! Root only; one at a time.

use std::{process::Command, time::Duration};

use affinity_tests::*;

#[test]
fn command_mode_passes_output_and_exit_status_through() {
    require_root();
    let run = trace_command(&[], &["sh", "-c", "echo hello-from-child; exit 3"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.contains("hello-from-child"));
    assert_eq!(run.json["schema_version"], 1);
    assert_eq!(run.json["command_exit_status"], 3);
    let left = programs_left();
    assert!(left.is_empty(), "programs left: {left:?}");
}

#[test]
fn a_missing_pid_exits_2_with_no_such_process_and_loads_nothing() {
    require_root();
    let run = run(&["--pid", "4194311", "--duration", "1"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no such process"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.json.is_null());
}

#[test]
fn sigint_ends_the_window_early_reports_and_detaches() {
    require_root();
    let mut w = Gated::start(&["late", "1", "10"]);
    let pid = w.pid().to_string();
    let tracer = Tracer::start(&["--pid", &pid, "--duration", "60"]);
    assert!(
        !our_programs().is_empty(),
        "programs not visible while tracing"
    );
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, json) = tracer.finish();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(code, 0);
    assert!(json["duration_s"].as_f64().unwrap() < 10.0);
    let left = programs_left();
    assert!(left.is_empty(), "programs left: {left:?}");
    w.go();
    w.finish();
}

#[test]
fn sigkill_leaves_no_program_attached() {
    require_root();
    let mut w = Gated::start(&["late", "1", "10"]);
    let pid = w.pid().to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--duration", "60"]);
    assert!(!our_programs().is_empty());
    tracer.child.kill().unwrap();
    tracer.child.wait().unwrap();
    // The kernel releases links when the last fd closes (no pinning).
    let left = programs_left();
    assert!(left.is_empty(), "programs left after SIGKILL: {left:?}");
    w.go();
    w.finish();
}

#[test]
fn without_privileges_it_lists_what_is_missing_and_does_nothing() {
    require_root();
    let me = std::process::id().to_string();
    // setpriv (util-linux) drops to nobody with no capabilities.
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(affin_trace())
        .args(["--pid", &me, "--duration", "1"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert!(err.contains("sudo"), "{err}");
    assert!(programs_left().is_empty());
}

#[test]
fn demo_reports_its_three_threads() {
    require_root();
    let o = Command::new(affin_trace())
        .args(["demo", "--duration", "2", "--format", "json"])
        .output()
        .expect("demo");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let steady = thread(&json, "steady");
    assert!(steady["on_cpu_pct"].as_f64().unwrap() > 50.0, "{steady:#}");
    let sleeper = thread(&json, "sleeper");
    assert!(
        sleeper["voluntary_switches"].as_u64().unwrap() > 100,
        "{sleeper:#}"
    );
    let hopper = thread(&json, "hopper");
    assert!(hopper["migrations"].as_u64().unwrap() > 50, "{hopper:#}");
}

#[test]
fn sigterm_and_sighup_also_end_the_window_and_detach() {
    require_root();
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        let mut w = Gated::start(&["late", "1", "10"]);
        let pid = w.pid().to_string();
        let tracer = Tracer::start(&["--pid", &pid, "--duration", "60"]);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(tracer.child.id() as i32), sig).unwrap();
        let (code, json) = tracer.finish();
        assert_eq!(code, 0, "{sig}");
        assert!(json["duration_s"].as_f64().unwrap() < 10.0, "{sig}");
        let left = programs_left();
        assert!(left.is_empty(), "{sig}: programs left: {left:?}");
        w.go();
        w.finish();
    }
}

/// SIGINT at every moment of start-up (parsing, BTF, loading, attaching,
/// marking targets): whatever phase it hits, the process ends promptly and
/// no program stays attached.
#[test]
fn sigint_during_startup_leaves_nothing_attached() {
    require_root();
    let mut w = Gated::start(&["late", "1", "10"]);
    let pid = w.pid().to_string();
    for delay_ms in [0u64, 1, 2, 3, 5, 15, 30, 50, 80, 120] {
        let mut c = Command::new(affin_trace())
            .args(["--pid", &pid, "--duration", "30", "--format", "json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let started = std::time::Instant::now();
        let status = c.wait().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "hung after SIGINT at {delay_ms} ms"
        );
        // Killed by the signal before its handlers exist, or a clean report.
        assert!(
            status.code() == Some(0) || status.code().is_none(),
            "{delay_ms} ms: {status}"
        );
        let left = programs_left();
        assert!(left.is_empty(), "SIGINT at {delay_ms} ms left {left:?}");
    }
    w.go();
    w.finish();
}

/// Exactly CAP_BPF and CAP_PERFMON, as an unprivileged user: enough to trace.
#[test]
fn traces_with_only_cap_bpf_and_cap_perfmon_as_nobody() {
    require_root();
    let mut w = Gated::start(&["late", "2", "100"]);
    let pid = w.pid().to_string();
    let out = scratch("nobody.json");
    // The report goes to stdout: nobody may not create files here.
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=-all,+bpf,+perfmon",
            "--bounding-set=-all,+bpf,+perfmon",
        ])
        .arg(affin_trace())
        .args(["--pid", &pid, "--duration", "1", "--format", "json"])
        .output()
        .expect("setpriv");
    let _ = std::fs::remove_file(&out);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(json["target"]["pids"][0].as_u64(), pid.parse().ok());
    assert!(programs_left().is_empty());
    w.go();
    w.finish();
}

#[test]
fn pid_1_is_traced_but_not_applied_without_force() {
    require_root();
    let run = run(&[
        "--pid",
        "1",
        "--duration",
        "0.3",
        "--apply",
        "--yes",
        "--cpus",
        "0",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(
        run.json["target"]["pids"][0], 1,
        "the trace itself is reported"
    );
    assert!(run.json["applied"].is_null());
}

/// A setuid-root copy run by an unprivileged user refuses to do anything.
#[test]
fn a_setuid_copy_refuses_to_run() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let dir = scratch("suid");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("affin-trace");
    std::fs::copy(affin_trace(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let me = std::process::id().to_string();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["--pid", &me, "--duration", "1"])
        .output()
        .expect("setpriv");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("refusing to run setuid"), "{err}");
    assert!(programs_left().is_empty());
}
