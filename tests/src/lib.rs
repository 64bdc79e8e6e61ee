//! Helpers for the root integration tests: run the real `affin-trace`
//! binary on workloads whose truth is known by construction, and read what
//! the kernel shows afterwards (bpftool).
//!
//! These tests load BPF programs: they need root and run one at a time
//! (`cargo xtask test` passes `--test-threads=1`). They never skip: without
//! root they fail and say so.

pub mod cgroup;

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Fails the test unless running as root.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root integration tests need root: run `sudo cargo xtask test`"
    );
}

/// The affin-trace binary under test: $AFFIN_TRACE_BIN (set by `cargo xtask
/// test`), else target/release, else target/debug.
pub fn affin_trace() -> PathBuf {
    if let Some(p) = std::env::var_os("AFFIN_TRACE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("affin-trace");
        if p.exists() {
            return p;
        }
    }
    panic!("affin-trace binary not found: run `cargo xtask test` (it builds it first)");
}

/// A unique scratch file path.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "affin-trace-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What one affin-trace run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Its stdout (the traced command's output passes through here).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The JSON report (`Value::Null` if none was written).
    pub json: Value,
}

/// Runs `affin-trace --format json --output <tmp> <args>` to completion.
pub fn run(args: &[&str]) -> Run {
    let out = scratch("report.json");
    let o = Command::new(affin_trace())
        .args(["--format", "json", "--output"])
        .arg(&out)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn affin-trace");
    finished(&o, &out)
}

/// The [`Run`] of a finished affin-trace whose `--output` was `out` (read,
/// then removed; `null` JSON when it wrote none).
pub fn finished(o: &std::process::Output, out: &std::path::Path) -> Run {
    let json = std::fs::read_to_string(out)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let _ = std::fs::remove_file(out);
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        json,
    }
}

/// Traces `cmd` from its first instruction: `affin-trace <extra> -- cmd`.
pub fn trace_command(extra: &[&str], cmd: &[&str]) -> Run {
    let mut args = extra.to_vec();
    args.push("--");
    args.extend_from_slice(cmd);
    run(&args)
}

/// The test workload binary (tests/src/bin/workload.rs).
pub fn workload() -> PathBuf {
    // Integration test binaries live in target/<profile>/deps; cargo builds
    // the package's bins next to them, one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("workload");
    assert!(p.exists(), "{} not built", p.display());
    p
}

/// The test workload's `hog`: a process spinning pinned to one CPU for a
/// while, started and ready (pinned) on return; killed when dropped.
pub struct Hog(Child);

impl Hog {
    /// `workload hog <cpu> <ms>`, once it says it is pinned.
    pub fn start(cpu: u32, ms: u64) -> Hog {
        use std::io::BufRead as _;
        let mut child = Command::new(workload())
            .args(["hog", &cpu.to_string(), &ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("hog");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("hog stdout"))
            .read_line(&mut line)
            .expect("hog ready");
        assert_eq!(line.trim(), "ready");
        Hog(child)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A workload started outside affin-trace, waiting at its `ready` line.
pub struct Gated {
    /// The process.
    pub child: Child,
    out: BufReader<ChildStdout>,
}

impl Gated {
    /// Starts `workload <args>` and waits for it to print `ready`.
    pub fn start(args: &[&str]) -> Gated {
        let mut child = Command::new(workload())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn workload");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read ready");
        assert_eq!(line.trim(), "ready", "workload did not get ready");
        Gated { child, out }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it go.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write go");
        stdin.flush().expect("flush");
    }

    /// Waits for it to exit; returns the rest of its stdout.
    pub fn finish(mut self) -> String {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let status = self.child.wait().expect("wait workload");
        assert!(status.success(), "workload failed: {status}");
        rest
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// affin-trace started in the background on `--pid`, after it reported
/// (with --verbose) that tracing started.
pub struct Tracer {
    /// The affin-trace process.
    pub child: Child,
    out: PathBuf,
}

/// Traces the gated workload `w` by pid (up to `duration` s, 0.5 s
/// intervals) with `--timeline file`, lets it run to its end, and returns
/// the JSON report (exit code 0 asserted); the file is the caller's.
pub fn trace_gated_with_timeline(mut w: Gated, duration: &str, file: &std::path::Path) -> Value {
    let tracer = Tracer::start(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        duration,
        "--interval",
        "0.5",
        "--timeline",
        file.to_str().unwrap(),
    ]);
    w.go();
    w.finish();
    let (code, json) = tracer.finish();
    assert_eq!(code, 0, "{json}");
    json
}

impl Tracer {
    /// Starts `affin-trace --verbose <args> --format json --output <tmp>` and
    /// waits until its programs are attached and the targets marked.
    pub fn start(args: &[&str]) -> Tracer {
        let out = scratch("report.json");
        let mut child = Command::new(affin_trace())
            .arg("--verbose")
            .args(args)
            .args(["--format", "json", "--output"])
            .arg(&out)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn affin-trace");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut line = String::new();
        loop {
            line.clear();
            let n = err.read_line(&mut line).expect("read stderr");
            assert!(n > 0, "affin-trace exited before tracing started");
            if line.contains("tracing at") {
                break;
            }
            assert!(Instant::now() < deadline, "affin-trace did not start");
        }
        // Keep draining stderr so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut sink);
        });
        Tracer { child, out }
    }

    /// Waits for it to end and returns its exit code and report.
    pub fn finish(mut self) -> (i32, Value) {
        let status = self.child.wait().expect("wait affin-trace");
        let json = std::fs::read_to_string(&self.out)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        let _ = std::fs::remove_file(&self.out);
        (status.code().unwrap_or(-1), json)
    }
}

/// Names of loaded BPF programs that belong to affin-trace (bpftool shows
/// names cut to 15 characters: btf_sched_switc...).
pub fn our_programs() -> Vec<String> {
    let o = Command::new("bpftool")
        .args(["prog", "list", "--json"])
        .output()
        .expect("bpftool (installed by cargo xtask setup)");
    assert!(
        o.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("bpftool json");
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["name"].as_str())
                .filter(|n| {
                    n.starts_with("btf_sched") || n.starts_with("raw_sched") || n.starts_with("bw_")
                })
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Our programs still loaded after waiting up to 5 s: the kernel frees a
/// program after its last fd closes, through RCU, so it can outlive the
/// process by a few milliseconds.
pub fn programs_left() -> Vec<String> {
    let mut left = our_programs();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = our_programs();
    }
    left
}

/// A JSON number, or a panic naming what was there instead.
pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Hypervisor steal since boot, over all CPUs (ns; /proc/stat's `cpu`
/// line, 8th value, in clock ticks). Read it before and after a run.
pub fn steal_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let ticks: u64 = stat
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .expect("steal in /proc/stat's cpu line");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .expect("CLK_TCK") as u64;
    ticks * 1_000_000_000 / hz
}

/// A `wait_split` adds up: running + runnable + throttled + sleeping is
/// not longer than the lifetime (1%), and `stolen_ns` is exactly the rest.
/// On a VM the running part (`sum_exec_runtime`) leaves out hypervisor
/// steal, so that rest may be at most 1% of the lifetime plus `steal`, the
/// machine's steal over the run (from [`steal_ns`] before and after), plus
/// one 10 ms tick per CPU of its rounding.
pub fn assert_split_adds_up(w: &Value, steal: u64) {
    let sum =
        u(&w["running_ns"]) + u(&w["runnable_ns"]) + u(&w["throttled_ns"]) + u(&w["sleeping_ns"]);
    let life = u(&w["lifetime_ns"]);
    let stolen = u(&w["stolen_ns"]);
    assert!(
        sum as f64 <= 1.01 * life as f64,
        "split {sum} vs lifetime {life}: {w:#}"
    );
    assert_eq!(stolen, life.saturating_sub(sum), "{w:#}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        stolen as f64 <= 0.01 * life as f64 + (steal + cpus * 10_000_000) as f64,
        "split {sum} vs lifetime {life}, {steal} ns of host steal: {w:#}"
    );
}

/// The report's `process.migration_pairs`, and the count of one pair in it
/// (0 when absent).
pub fn migration_pairs(json: &Value) -> (&Vec<Value>, impl Fn(u64, u64) -> u64 + '_) {
    let pairs = json["process"]["migration_pairs"]
        .as_array()
        .expect("process.migration_pairs");
    let pair = move |from: u64, to: u64| {
        pairs
            .iter()
            .find(|p| p["from"] == from && p["to"] == to)
            .map_or(0, |p| u(&p["count"]))
    };
    (pairs, pair)
}

/// The thread named `comm` in a report.
pub fn thread<'a>(json: &'a Value, comm: &str) -> &'a Value {
    json["threads"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["comm"] == comm))
        .unwrap_or_else(|| panic!("no thread {comm:?} in report: {json:#}"))
}

/// The thread with id `tid` in a report.
pub fn thread_by_tid(json: &Value, tid: u64) -> &Value {
    json["threads"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["tid"] == tid))
        .unwrap_or_else(|| panic!("no thread {tid} in report: {json:#}"))
}

/// `key value` lines printed by a workload.
pub fn printed(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("workload did not print {key:?}: {stdout}"))
}

/// Whether an external tool is installed.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Cpus_allowed_list of every thread of `pid`, by tid (status read as
/// bytes: a thread name need not be UTF-8).
pub fn masks(pid: u32) -> std::collections::BTreeMap<u32, String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read(e.path().join("status")).ok()?;
            let status = String::from_utf8_lossy(&status);
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_string();
            Some((tid, list))
        })
        .collect()
}
