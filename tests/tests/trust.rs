//! Trust under attack (issue 18): the revert record, files root writes,
//! pid namespaces, hostile thread names. Root only; one at a time.

use std::{
    io::BufRead as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Command, Stdio},
};

use affinity_tests::*;
use nix::{sched::CpuSet, unistd::Pid};

fn pin(tid: u32, cpus: &[usize]) {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).unwrap();
    }
    nix::sched::sched_setaffinity(Pid::from_raw(tid as i32), &set).unwrap();
}

/// A workload started outside affin-trace, past its `ready` line; killed on
/// drop.
struct Work(std::process::Child);

impl Work {
    fn start(args: &[&str]) -> Work {
        let mut c = Command::new(workload())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Work(c)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workload with `n` sleeping threads, all of them started.
fn idle(n: u32) -> Work {
    let w = Work::start(&["idle", &n.to_string(), "20000"]);
    for _ in 0..100 {
        if masks(w.pid()).len() as u32 == n + 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    w
}

fn apply(pid: u32, cpus: &str) -> Run {
    run(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        "0.3",
        "--apply",
        "--cpus",
        cpus,
        "--yes",
    ])
}

fn revert(pid: u32) -> std::process::Output {
    Command::new(affin_trace())
        .args(["revert", "--pid", &pid.to_string()])
        .output()
        .unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// 1. The revert record is kept from the first apply.
#[test]
fn a_second_apply_keeps_the_masks_from_before_the_first() {
    require_root();
    let w = idle(3);
    let pid = w.pid();
    let tids: Vec<u32> = masks(pid).into_keys().collect();
    pin(tids[1], &[0]);
    let before = masks(pid);
    let first = apply(pid, "1");
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(masks(pid).values().all(|m| m == "1"));
    let second = apply(pid, "0");
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(masks(pid).values().all(|m| m == "0"));
    let out = revert(pid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        masks(pid),
        before,
        "revert went back to the first apply's CPUs"
    );
}

/// `args` run as the unprivileged user nobody (setpriv), checked to succeed.
fn as_nobody(args: &[&str]) {
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "as nobody {args:?}: {}", stderr(&o));
}

/// A path in /tmp (sticky, world-writable), as README's examples use.
fn in_tmp(name: &str) -> String {
    format!("/tmp/affin-trust-{}-{name}", std::process::id())
}

/// affin-trace with `args` (no --output added), to completion.
fn affin(args: &[&str]) -> std::process::Output {
    Command::new(affin_trace())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

// 2. Root writes through symlinks planted by other users.
#[test]
fn outputs_never_follow_a_link_planted_by_another_user() {
    require_root();
    let w = Work::start(&["idle", "1", "20000"]);
    let pid = w.pid().to_string();
    let victim = scratch("victim");
    std::fs::write(&victim, "precious").unwrap();
    for flag in ["--output", "--plot", "--timeline"] {
        // .svg: --plot refuses other names before it looks at the path.
        let link = in_tmp(&format!("link{flag}.svg"));
        let _ = std::fs::remove_file(&link);
        as_nobody(&["ln", "-s", victim.to_str().unwrap(), &link]);
        let o = affin(&["-p", &pid, "-d", "0.3", flag, &link]);
        let _ = std::fs::remove_file(&link);
        assert_eq!(o.status.code(), Some(2), "{flag}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("symbolic link"),
            "{flag}: {}",
            stderr(&o)
        );
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "precious",
            "{flag}"
        );
    }
    let _ = std::fs::remove_file(&victim);
}

#[test]
fn another_users_file_in_tmp_is_not_replaced() {
    require_root();
    let w = Work::start(&["idle", "1", "20000"]);
    let planted = in_tmp("planted.json");
    let _ = std::fs::remove_file(&planted);
    as_nobody(&["sh", "-c", &format!("echo theirs > {planted}")]);
    let o = affin(&["-p", &w.pid().to_string(), "-d", "0.3", "-o", &planted]);
    let kept = std::fs::read_to_string(&planted).unwrap();
    let owner = std::fs::metadata(&planted).unwrap().uid();
    let _ = std::fs::remove_file(&planted);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("belongs to uid"), "{}", stderr(&o));
    assert_eq!((kept.as_str(), owner), ("theirs\n", 65534));
}

#[test]
fn bad_input_leaves_existing_outputs_as_they_were() {
    require_root();
    let (report, svg) = (scratch("old.json"), scratch("old.svg"));
    std::fs::write(&report, "old report").unwrap();
    std::fs::write(&svg, "old svg").unwrap();
    let o = affin(&[
        "-p",
        "999999999",
        "-d",
        "0.3",
        "-o",
        report.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "old report");
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), "old svg");
    // And no temporary file is left beside them.
    let dir = report.parent().unwrap();
    let tmp: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n.contains("old."))
        .collect();
    let _ = std::fs::remove_file(&report);
    let _ = std::fs::remove_file(&svg);
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn a_good_run_replaces_the_output_and_dev_stdout_is_written_in_place() {
    require_root();
    let w = Work::start(&["idle", "1", "20000"]);
    let pid = w.pid().to_string();
    let report = scratch("replaced.json");
    std::fs::write(&report, "old").unwrap();
    let o = affin(&[
        "-p",
        &pid,
        "-d",
        "0.3",
        "--format",
        "json",
        "-o",
        report.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(&report).unwrap();
    let _ = std::fs::remove_file(&report);
    assert!(text.starts_with('{'), "{text}");
    let o = affin(&[
        "-p",
        &pid,
        "-d",
        "0.3",
        "--format",
        "json",
        "-o",
        "/dev/stdout",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with('{'));
}

// 3. Inside a pid namespace the kernel's pids are not the caller's.
#[test]
fn inside_a_pid_namespace_it_refuses_and_names_the_namespace() {
    require_root();
    let o = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(affin_trace())
        .args(["-p", "1", "-d", "0.3", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("pid namespace pid:["), "{err}");
    assert!(err.contains("--pid=host"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(o.stdout.is_empty(), "a report was written");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

// 4. Hostile names are escaped in text and SVG, faithful in JSON.
#[test]
fn a_hostile_thread_name_cannot_forge_lines_or_drive_the_terminal() {
    require_root();
    let name = b"a\nFAKE\x1b]0;x\x07\xe2\x80\xae"; // 15 bytes, U+202E last
    let w = Work::start(&["named", &hex(name), "20000"]);
    let pid = w.pid().to_string();
    let o = affin(&["-p", &pid, "-d", "0.3", "--format", "text"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(!text.contains('\u{202e}'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FAKE")), "{text}");
    assert!(text.contains("a\\nFAKE\\x1b]0;x\\x07\\u{202e}"), "{text}");

    let svg = scratch("hostile.svg");
    let j = run(&["-p", &pid, "-d", "0.3", "--plot", svg.to_str().unwrap()]);
    assert_eq!(j.code, 0, "{}", j.stderr);
    let drawn = std::fs::read(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(
        !drawn.iter().any(|&b| b < 0x20 && !b"\n\r\t".contains(&b)),
        "control bytes in the SVG"
    );
    // JSON keeps the name as it is (valid UTF-8: no comm_bytes).
    let t = &j.json["threads"][0];
    assert_eq!(t["comm"], std::str::from_utf8(name).unwrap(), "{t:#}");
    assert!(t.get("comm_bytes").is_none(), "{t:#}");
}

// 5. A main thread whose name is not UTF-8 is traceable.
#[test]
fn a_process_whose_name_is_not_utf8_is_traced() {
    require_root();
    let w = Work::start(&["named", "ff41c0", "20000"]);
    let j = run(&["-p", &w.pid().to_string(), "-d", "0.3"]);
    assert_eq!(j.code, 0, "{}", j.stderr);
    let t = &j.json["threads"][0];
    assert_eq!(t["comm"], "\u{fffd}A\u{fffd}", "{t:#}");
    assert_eq!(t["comm_bytes"], "ff41c0", "{t:#}");
}

// 6. An output that cannot be written exits non-zero.
#[test]
fn plot_and_timeline_write_failures_exit_non_zero() {
    require_root();
    let w = Work::start(&["idle", "1", "20000"]);
    let pid = w.pid().to_string();
    for flag in ["--plot", "--timeline"] {
        let o = affin(&[
            "-p",
            &pid,
            "-d",
            "0.3",
            "--format",
            "json",
            flag,
            "/dev/full",
        ]);
        assert_eq!(o.status.code(), Some(1), "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("/dev/full"), "{flag}: {}", stderr(&o));
        // The report still follows.
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with('{'),
            "{flag}"
        );
    }
}

// 8. Inputs and outputs that would hang or grow without bound.
#[test]
fn config_and_output_that_would_hang_or_grow_are_refused() {
    require_root();
    let w = Work::start(&["idle", "1", "20000"]);
    let pid = w.pid().to_string();
    let fifo = scratch("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_s = fifo.to_str().unwrap();
    for (flag, path, want) in [
        ("--config", "/dev/zero", "not a regular file"),
        ("--config", fifo_s, "not a regular file"),
        ("--output", fifo_s, "no reader"),
    ] {
        let started = std::time::Instant::now();
        // timeout: a hang fails the test instead of stalling the suite.
        let o = Command::new("timeout")
            .args(["20"])
            .arg(affin_trace())
            .args(["-p", &pid, "-d", "0.3", flag, path])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{flag} {path}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{flag} {path}: {}", stderr(&o));
        assert!(started.elapsed().as_secs() < 5, "{flag} {path} was slow");
    }
    let _ = std::fs::remove_file(&fifo);
}

// 10. Runs remove the lock files they create.
#[test]
fn apply_and_revert_leave_no_lock_files() {
    require_root();
    let w = idle(1);
    let pid = w.pid();
    let lock = Path::new("/run/affin-trace").join(format!("{pid}.lock"));
    let a = apply(pid, "0");
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(!lock.exists(), "apply left {}", lock.display());
    let out = revert(pid);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!lock.exists(), "revert left {}", lock.display());
}

// 13. A --comm longer than the kernel's 15 bytes.
#[test]
fn a_long_comm_matches_its_process() {
    require_root();
    let long = scratch("long-named-workload");
    std::fs::copy(workload(), &long).unwrap();
    let name = long.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.len() > 15);
    let mut c = Command::new(&long)
        .args(["idle", "1", "20000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let j = run(&["--comm", &name, "-d", "0.3"]);
    let _ = c.kill();
    let _ = c.wait();
    let _ = std::fs::remove_file(&long);
    assert_eq!(j.code, 0, "{}", j.stderr);
    assert_eq!(
        j.json["target"]["pids"],
        serde_json::json!([c.id()]),
        "{:#}",
        j.json["target"]
    );
    // A long name that matches nothing says why, without echoing it all.
    let huge = "x".repeat(100_000);
    let o = affin(&["--comm", &huge, "-d", "0.3"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.len() < 1000 && err.contains("first 15 bytes"),
        "{} bytes",
        err.len()
    );
}

// 14. revert on a pid that names no process.
#[test]
fn revert_of_a_missing_pid_says_no_such_process() {
    require_root();
    let out = revert(999_999_999);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no such process: 999999999"), "{err}");
    assert!(!err.contains("exited before the apply"), "{err}");
}

// 11. The capability model of apply: root only, said plainly.
#[test]
fn apply_with_capabilities_only_says_it_needs_root() {
    require_root();
    let w = idle(1);
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon,+sys_nice",
            "--ambient-caps=-all,+bpf,+perfmon,+sys_nice",
            "--bounding-set=-all,+bpf,+perfmon,+sys_nice",
        ])
        .arg(affin_trace())
        .args([
            "--pid",
            &w.pid().to_string(),
            "-d",
            "0.3",
            "--apply",
            "--cpus",
            "0",
            "--yes",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("needs root") && err.contains("sudo"), "{err}");
    assert!(!err.contains("remove it"), "{err}");
}
