//! `cargo xtask bench` (issue #6): affin-trace's overhead, start-up time and
//! scale, measured on this machine and written to BENCHMARKS.md.
//!
//! Phases (all as root; about 3 minutes):
//! 1. `taskset -c 0 perf bench sched pipe -T -l LOOPS` under five
//!    configurations, interleaved (a b c d e a b c d e ..., 15 rounds by
//!    default), median and min-max of each: (a) nothing attached, (b)
//!    `affin-trace bench-floor` (an empty tp_btf program), (c) affin-trace
//!    tracing an unrelated `sleep`, (d) affin-trace tracing the benchmark
//!    itself, (e) an equivalent bpftrace script (skipped, with the reason,
//!    without bpftrace). LOOPS is calibrated so that one run takes ~1 s.
//! 2. Added cost per context switch, with switches per op measured by (d)'s
//!    report (and cross-checked with `perf stat -e context-switches`).
//! 3. Per-program run time from `kernel.bpf_stats_enabled`, in separate runs
//!    of (b), (c) and (d) so that the stats do not distort phase 1.
//! 4. Start-up: one cold run (offsets cache deleted), then 10 warm runs.
//! 5. affin-trace's own CPU time and peak RSS while tracing 1,000 threads
//!    (`wait4` rusage of the tracer).
//! 6. 10,000 threads for 5 s: dropped events and threads seen.
//!
//! Every path stops the processes it started, restores the sysctls it
//! changed, and the end checks that no affin-trace program stays loaded.
//! `bench-threads N SECS [PERIOD_MS]` (hidden) is the workload of 5 and 6.

use crate::binary;
use crate::util::{is_root, release_bin, which, workspace_root};
use anyhow::{Context as _, Result, anyhow, bail};
use std::ffi::c_int;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Interleaved rounds of the pipe benchmark (each runs every configuration).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(7..=100))]
    rounds: u32,
    /// Pipe round trips per perf run [default: calibrated to ~1 s per run].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1_000..))]
    loops: Option<u64>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
const THREADS_MAX: &str = "/proc/sys/kernel/threads-max";
const PID_MAX: &str = "/proc/sys/kernel/pid_max";
const OFFSETS_CACHE: &str = "/run/affin-trace/btf-offsets";
/// Names of affin-trace's programs start with one of these.
const OUR_PREFIXES: [&str; 2] = ["btf_sched_", "floor_"];
/// The programs whose bpf_stats are reported, in this order.
const PROGRAMS: [&str; 6] = [
    "btf_sched_switch",
    "btf_sched_migrate_task",
    "btf_sched_wakeup",
    "btf_sched_wakeup_new",
    "btf_sched_process_exit",
    "floor_sched_switch",
];
/// Wanted duration of one perf run.
const RUN_TARGET_S: f64 = 1.0;
const CALIBRATION_LOOPS: u64 = 100_000;
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const START_RUNS: usize = 10;
const SMALL_THREADS: usize = 1_000;
const SMALL_SECS: f64 = 10.0;
const LARGE_THREADS: usize = 10_000;
const LARGE_SECS: f64 = 5.0;
/// Sleep per loop of each helper thread: 10 ms for 1,000 threads (100k
/// wakeups/s); 10,000 threads at 10 ms would ask for 1M wakeups/s, which
/// a small machine cannot serve (tried on 2 CPUs: the helper never even
/// reported ready within 60 s), so they sleep 100 ms: the same 100k/s.
const SMALL_PERIOD_MS: u64 = 10;
const LARGE_PERIOD_MS: u64 = 100;

/// Targets of issue #6.
const T_ADDED_RATIO: f64 = 1.5;
const T_SWITCH_NS: f64 = 100.0;
const T_START_MS: f64 = 150.0;
const T_CPU_PCT: f64 = 1.0;
const T_RSS_MIB: f64 = 30.0;

/// The equivalent of (d) in bpftrace: on-CPU time per thread of the target
/// (start times keyed by tid, deltas summed for tids of the target process)
/// and migrations per thread. Threads are learned when they first switch
/// out, as bpftrace's sched_switch args carry no tgid for `next`.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sched:sched_switch
{
  if (pid == cpid) {
    @target[tid] = 1;
    $start = @start[tid];
    if ($start) {
      @oncpu_ns[tid] = sum(nsecs - $start);
      delete(@start[tid]);
    }
  }
  if (@target[args->next_pid]) {
    @start[args->next_pid] = nsecs;
  }
}
tracepoint:sched:sched_migrate_task
{
  if (@target[args->pid]) {
    @migrations[args->pid] = count();
  }
}
END { clear(@start); clear(@target); }
"#;

// ---------------------------------------------------------------------------
// libc calls std does not expose (std links libc; no extra crate needed).

mod sys {
    use std::ffi::{c_int, c_long};

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    const SC_CLK_TCK: c_int = 2;

    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    pub struct Timeval {
        pub tv_sec: c_long,
        pub tv_usec: c_long,
    }

    /// `struct rusage` (Linux, glibc/musl, LP64 and ILP32 without time64).
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    pub struct Rusage {
        pub ru_utime: Timeval,
        pub ru_stime: Timeval,
        /// Peak resident set size, KiB.
        pub ru_maxrss: c_long,
        pub rest: [c_long; 13],
    }

    unsafe extern "C" {
        fn kill(pid: c_int, sig: c_int) -> c_int;
        fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
        fn signal(sig: c_int, handler: usize) -> usize;
        fn sysconf(name: c_int) -> c_long;
    }

    pub fn send(pid: u32, sig: c_int) {
        // SAFETY: kill(2) has no memory effects; a stale pid is harmless here
        // because callers only signal children they have not reaped.
        unsafe {
            kill(pid as c_int, sig);
        }
    }

    /// Blocks until `pid` (a child) exits; its raw status and rusage.
    pub fn wait_rusage(pid: u32) -> std::io::Result<(c_int, Rusage)> {
        let mut status: c_int = 0;
        let mut ru = Rusage::default();
        loop {
            // SAFETY: both pointers are valid for writes for the call.
            let r = unsafe { wait4(pid as c_int, &mut status, 0, &mut ru) };
            if r == pid as c_int {
                return Ok((status, ru));
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Routes SIGINT and SIGTERM to `handler` (glibc `signal` = BSD
    /// semantics: the handler stays, slow calls restart).
    pub fn on_stop_signals(handler: extern "C" fn(c_int)) {
        for sig in [SIGINT, SIGTERM] {
            // SAFETY: the handler only stores to an atomic (async-signal-safe).
            unsafe {
                signal(sig, handler as usize);
            }
        }
    }

    pub fn clock_ticks() -> f64 {
        // SAFETY: sysconf has no memory effects.
        let t = unsafe { sysconf(SC_CLK_TCK) };
        if t > 0 { t as f64 } else { 100.0 }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Child processes: output collected line by line, stopped on every path.

struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
    started: Instant,
    reaped: bool,
}

fn spawn_reader(r: impl Read + Send + 'static, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send((is_err, line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl Proc {
    fn spawn<S: AsRef<std::ffi::OsStr>>(name: &str, program: &Path, args: &[S]) -> Result<Proc> {
        check_interrupted()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} ({})", program.display()))?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            spawn_reader(out, false, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            spawn_reader(err, true, tx);
        }
        Ok(Proc {
            name: name.to_string(),
            child,
            lines: rx,
            stdout: Vec::new(),
            stderr: Vec::new(),
            started,
            reaped: false,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn push(&mut self, (is_err, line): (bool, String)) {
        if is_err {
            self.stderr.push(line);
        } else {
            self.stdout.push(line);
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.push(l);
        }
    }

    /// After exit: collects the rest of the output (bounded: a grandchild
    /// may hold the pipes open).
    fn drain_to_eof(&mut self) {
        let end = Instant::now() + Duration::from_secs(2);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => self.push(l),
                Err(_) => break,
            }
        }
    }

    fn output_tail(&self) -> String {
        let all: Vec<&String> = self.stdout.iter().chain(&self.stderr).collect();
        let tail = &all[all.len().saturating_sub(8)..];
        tail.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Waits for a line containing `needle` (on stderr or stdout); returns
    /// it and when it arrived, counted from the spawn.
    fn wait_line(
        &mut self,
        on_stderr: bool,
        needle: &str,
        timeout: Duration,
    ) -> Result<(String, Duration)> {
        let end = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                bail!(
                    "{}: no {needle:?} within {timeout:?}; output: {}",
                    self.name,
                    self.output_tail()
                );
            };
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok((is_err, line)) => {
                    let at = self.started.elapsed();
                    let hit = is_err == on_stderr && line.contains(needle);
                    self.push((is_err, line.clone()));
                    if hit {
                        return Ok((line, at));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait(Duration::from_secs(5))?;
                    bail!(
                        "{} exited ({status}) before printing {needle:?}; output: {}",
                        self.name,
                        self.output_tail()
                    );
                }
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                self.drain_to_eof();
                return Ok(status);
            }
            check_interrupted()?;
            if Instant::now() >= end {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `timeout`) for the exit, then reaps with `wait4`: the
    /// exit status and the child's own rusage.
    fn wait_rusage(&mut self, timeout: Duration) -> Result<(ExitStatus, sys::Rusage)> {
        let end = Instant::now() + timeout;
        // A zombie keeps its /proc entry until reaped: poll for it, so that
        // the blocking wait4 below returns at once.
        while !matches!(proc_state(self.pid()), Some('Z') | None) {
            self.drain();
            check_interrupted()?;
            if Instant::now() >= end {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (raw, ru) =
            sys::wait_rusage(self.pid()).with_context(|| format!("wait4 on {}", self.name))?;
        self.reaped = true;
        self.drain_to_eof();
        Ok((ExitStatus::from_raw(raw), ru))
    }

    /// SIGINT, then the exit status and rusage.
    fn stop_rusage(&mut self) -> Result<(ExitStatus, sys::Rusage)> {
        sys::send(self.pid(), sys::SIGINT);
        self.wait_rusage(Duration::from_secs(20))
    }

    /// SIGINT (the tracers' normal stop), then waits for the exit.
    fn stop(&mut self) -> Result<ExitStatus> {
        if !self.reaped {
            sys::send(self.pid(), sys::SIGINT);
        }
        self.wait(Duration::from_secs(20))
    }

    fn ok(&self, status: ExitStatus) -> Result<()> {
        if !status.success() {
            bail!(
                "{} failed ({status}); output: {}",
                self.name,
                self.output_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        sys::send(self.pid(), sys::SIGINT);
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "bench: {} (pid {}) ignored SIGINT; killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Sysctls changed during the run, restored on every path.

struct Sysctl {
    path: &'static str,
    original: String,
    changed: bool,
}

impl Sysctl {
    fn new(path: &'static str) -> Result<Sysctl> {
        let original = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_string();
        Ok(Sysctl {
            path,
            original,
            changed: false,
        })
    }

    fn set(&mut self, value: &str) -> Result<()> {
        self.changed = true;
        std::fs::write(self.path, value)
            .with_context(|| format!("writing {value} to {}", self.path))
    }

    fn restore(&mut self) -> Result<()> {
        if self.changed {
            std::fs::write(self.path, &self.original)
                .with_context(|| format!("restoring {} to {}", self.path, self.original))?;
            self.changed = false;
        }
        Ok(())
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("bench: WARNING: {e:#}");
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// A small JSON reader (xtask depends on nothing but clap and anyhow).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            bail!("JSON: trailing characters at byte {}", p.i);
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |v, k| v.get(k))
    }

    fn num(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn arr(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Json> {
        self.ws();
        match self.s.get(self.i) {
            None => bail!("JSON: unexpected end"),
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.ws();
                    if !self.eat(":") {
                        bail!("JSON: expected ':' at byte {}", self.i);
                    }
                    let v = self.value()?;
                    m.push((k, v));
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("}") {
                        return Ok(Json::Obj(m));
                    }
                    bail!("JSON: expected ',' or '}}' at byte {}", self.i);
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    if self.eat(",") {
                        continue;
                    }
                    if self.eat("]") {
                        return Ok(Json::Arr(a));
                    }
                    bail!("JSON: expected ',' or ']' at byte {}", self.i);
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(_) => {
                let start = self.i;
                while matches!(
                    self.s.get(self.i),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| anyhow!("JSON: bad value at byte {start}"))
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .context("JSON: short \\u escape")?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h)?, 16).context("JSON: bad \\u escape")
    }

    fn string(&mut self) -> Result<String> {
        if !self.eat("\"") {
            bail!("JSON: expected a string at byte {}", self.i);
        }
        let mut out = Vec::new();
        loop {
            let &c = self.s.get(self.i).context("JSON: unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).context("JSON: string is not UTF-8"),
                b'\\' => {
                    let &e = self.s.get(self.i).context("JSON: unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) && self.eat("\\u") {
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + lo.wrapping_sub(0xDC00)
                            } else {
                                hi
                            };
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => bail!("JSON: bad escape at byte {}", self.i),
                    };
                    out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing of the tools' output.

/// `perf bench sched pipe`: the number before "usecs/op".
fn parse_usecs_per_op(lines: &[String]) -> Option<f64> {
    lines.iter().find_map(|l| {
        let (num, _) = l.split_once("usecs/op")?;
        num.trim().parse().ok()
    })
}

/// affin-trace --verbose: "affin-trace: <what> at 12.3 ms" -> 12.3.
fn verbose_ms(lines: &[String], what: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        if !l.contains(what) {
            return None;
        }
        let (_, rest) = l.rsplit_once(" at ")?;
        rest.trim().strip_suffix("ms")?.trim().parse().ok()
    })
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Linear-interpolated quantile (0..=1) of `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// What the bench reads from an affin-trace JSON report.
#[derive(Clone, Debug, Default)]
struct TraceReport {
    pids: Vec<u64>,
    attach_mode: String,
    threads: u64,
    voluntary: u64,
    involuntary: u64,
    dropped: u64,
}

fn read_report(path: &Path) -> Result<TraceReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading affin-trace's report {}", path.display()))?;
    let j = Json::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    let n = |p: &[&str]| -> Result<u64> {
        j.at(p)
            .and_then(Json::num)
            .map(|v| v as u64)
            .with_context(|| format!("{} has no number at {}", path.display(), p.join(".")))
    };
    Ok(TraceReport {
        pids: j
            .at(&["target", "pids"])
            .and_then(Json::arr)
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| v.num().map(|n| n as u64))
            .collect(),
        attach_mode: j
            .get("attach_mode")
            .and_then(Json::str)
            .unwrap_or("?")
            .to_string(),
        threads: n(&["process", "threads"])?,
        voluntary: n(&["process", "voluntary_switches"])?,
        involuntary: n(&["process", "involuntary_switches"])?,
        dropped: n(&["dropped_events"])?,
    })
}

/// One program as `bpftool prog show --json` lists it.
#[derive(Clone, Debug)]
struct Prog {
    id: u64,
    name: String,
    run_time_ns: Option<u64>,
    run_cnt: Option<u64>,
}

fn parse_progs(text: &str) -> Result<Vec<Prog>> {
    let j = Json::parse(text)?;
    let arr = j.arr().context("bpftool: expected a JSON array")?;
    Ok(arr
        .iter()
        .filter_map(|p| {
            Some(Prog {
                id: p.get("id")?.num()? as u64,
                name: p.get("name").and_then(Json::str).unwrap_or("").to_string(),
                run_time_ns: p.get("run_time_ns").and_then(Json::num).map(|v| v as u64),
                run_cnt: p.get("run_cnt").and_then(Json::num).map(|v| v as u64),
            })
        })
        .collect())
}

fn is_ours(name: &str) -> bool {
    OUR_PREFIXES.iter().any(|p| name.starts_with(p))
}

// ---------------------------------------------------------------------------
// The run.

/// bpftool, pinned away from CPU 0 (the benchmark's CPU) when possible.
#[derive(Clone)]
struct Bpftool {
    argv: Vec<PathBuf>,
}

impl Bpftool {
    fn progs(&self) -> Result<Vec<Prog>> {
        let out = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .args(["prog", "show", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("could not run bpftool")?;
        if !out.status.success() {
            bail!("bpftool prog show failed ({})", out.status);
        }
        parse_progs(&String::from_utf8_lossy(&out.stdout))
    }

    fn ours(&self) -> Result<Vec<Prog>> {
        Ok(self
            .progs()?
            .into_iter()
            .filter(|p| is_ours(&p.name))
            .collect())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cfg {
    A,
    B,
    C,
    D,
    E,
}

const CFGS: [Cfg; 5] = [Cfg::A, Cfg::B, Cfg::C, Cfg::D, Cfg::E];

impl Cfg {
    fn tag(self) -> &'static str {
        match self {
            Cfg::A => "(a)",
            Cfg::B => "(b)",
            Cfg::C => "(c)",
            Cfg::D => "(d)",
            Cfg::E => "(e)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Cfg::A => "nothing attached",
            Cfg::B => "empty tp_btf program (bench-floor)",
            Cfg::C => "affin-trace, unrelated pid",
            Cfg::D => "affin-trace tracing the bench",
            Cfg::E => "bpftrace tracing the bench",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct Ctx {
    bin: PathBuf,
    xtask: PathBuf,
    taskset: PathBuf,
    perf: PathBuf,
    bpftrace: Option<PathBuf>,
    bpftool: Bpftool,
    tmp: PathBuf,
    loops: u64,
    unrelated: u32,
}

impl Ctx {
    fn pipe_cmd(&self, loops: u64) -> Vec<String> {
        vec![
            self.taskset.display().to_string(),
            "-c".into(),
            "0".into(),
            self.perf.display().to_string(),
            "bench".into(),
            "sched".into(),
            "pipe".into(),
            "-T".into(),
            "-l".into(),
            loops.to_string(),
        ]
    }

    fn file(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }
}

/// One perf run with nothing else started: us/op.
fn run_perf(ctx: &Ctx, loops: u64) -> Result<f64> {
    let cmd = ctx.pipe_cmd(loops);
    let mut p = Proc::spawn("perf bench sched pipe", Path::new(&cmd[0]), &cmd[1..])?;
    let status = p.wait(RUN_TIMEOUT)?;
    p.ok(status)?;
    parse_usecs_per_op(&p.stdout)
        .with_context(|| format!("no usecs/op in perf's output: {}", p.output_tail()))
}

/// A result of one configuration run.
struct Sample {
    us: f64,
    report: Option<TraceReport>,
    progs: Vec<Prog>,
    /// The tracer's peak RSS (KiB), where it was stopped by the bench.
    maxrss_kib: Option<u64>,
    /// affin-trace programs of another process seen right after the run.
    foreign: Vec<String>,
}

/// Polls bpftool while a run goes on; keeps the last figures per program.
struct StatsPoller {
    stop: Arc<AtomicBool>,
    last: Arc<Mutex<Vec<Prog>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl StatsPoller {
    /// Polls the programs that process `pid` holds.
    fn start(bpftool: &Bpftool, pid: u32) -> StatsPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let last: Arc<Mutex<Vec<Prog>>> = Arc::default();
        let (s, l, b) = (stop.clone(), last.clone(), bpftool.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok(progs) = programs_of(&b, pid) {
                    let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
                    for p in progs {
                        l.retain(|q| q.id != p.id);
                        l.push(p);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        StatsPoller {
            stop,
            last,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Prog> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for StatsPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Runs one configuration once; with `stats`, also reads bpf_stats.
/// Who holds BPF programs open: (pid, prog id) for every program or link fd
/// of every process (from /proc/<pid>/fdinfo).
fn prog_holders() -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let is_bpf = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:bpf"));
            if !is_bpf {
                continue;
            }
            let info = p.path().join("fdinfo").join(fd.file_name());
            let id = std::fs::read_to_string(info).ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("prog_id:"))
                    .and_then(|v| v.trim().parse().ok())
            });
            if let Some(id) = id {
                out.push((pid, id));
            }
        }
    }
    out
}

/// affin-trace's programs (by name) held by a live process other than
/// `except`: another affin-trace running, which distorts the figures.
fn foreign_programs(bpftool: &Bpftool, except: Option<u32>) -> Result<Vec<String>> {
    let ours = bpftool.ours()?;
    if ours.is_empty() {
        return Ok(Vec::new());
    }
    let mut found: Vec<String> = prog_holders()
        .into_iter()
        .filter(|(pid, _)| Some(*pid) != except)
        .filter_map(|(pid, id)| {
            let p = ours.iter().find(|p| p.id == id)?;
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            Some(format!("{} (id {id}) held by pid {pid} `{cmd}`", p.name))
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

/// The programs `pid` holds, with their current bpf_stats.
fn programs_of(bpftool: &Bpftool, pid: u32) -> Result<Vec<Prog>> {
    let ids: Vec<u64> = prog_holders()
        .into_iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, id)| id)
        .collect();
    Ok(bpftool
        .ours()?
        .into_iter()
        .filter(|p| ids.contains(&p.id))
        .collect())
}

/// Waits (up to a minute) until no other process holds affin-trace
/// programs: another affin-trace running would distort the figures.
fn wait_no_foreign(bpftool: &Bpftool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(60);
    let mut said = false;
    loop {
        let foreign = foreign_programs(bpftool, None)?;
        if foreign.is_empty() {
            return Ok(());
        }
        check_interrupted()?;
        if Instant::now() >= end {
            bail!(
                "another affin-trace kept its programs loaded for a minute: {}; stop it (or \
                 its tests) and rerun",
                foreign.join("; ")
            );
        }
        if !said {
            println!(
                "bench: waiting for another affin-trace to finish: {}",
                foreign.join("; ")
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_cfg(ctx: &Ctx, cfg: Cfg, stats: bool) -> Result<Sample> {
    let bin = &ctx.bin;
    wait_no_foreign(&ctx.bpftool)?;
    let mut sample = Sample {
        us: 0.0,
        report: None,
        progs: Vec::new(),
        maxrss_kib: None,
        foreign: Vec::new(),
    };
    match cfg {
        Cfg::A => {
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
        }
        Cfg::B => {
            let mut t = Proc::spawn(
                "affin-trace bench-floor",
                bin,
                &["bench-floor", "--seconds", "600"],
            )?;
            t.wait_line(true, "floor attached", ATTACH_TIMEOUT)?;
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, Some(t.pid()))?;
            if stats {
                sample.progs = programs_of(&ctx.bpftool, t.pid())?;
            }
            let (status, ru) = t.stop_rusage()?;
            t.ok(status)?;
            sample.maxrss_kib = Some(ru.ru_maxrss.max(0) as u64);
        }
        Cfg::C => {
            let out = ctx.file("c.json");
            let pid = ctx.unrelated.to_string();
            let args = [
                "--verbose",
                "--pid",
                &pid,
                "--duration",
                "600",
                "--format",
                "json",
                "--output",
                &out.display().to_string(),
            ]
            .map(String::from);
            let mut t = Proc::spawn("affin-trace --pid <sleep>", bin, &args)?;
            t.wait_line(true, "tracing at", ATTACH_TIMEOUT)?;
            sample.us = run_perf(ctx, ctx.loops)?;
            sample.foreign = foreign_programs(&ctx.bpftool, Some(t.pid()))?;
            if stats {
                sample.progs = programs_of(&ctx.bpftool, t.pid())?;
            }
            let (status, ru) = t.stop_rusage()?;
            t.ok(status)?;
            sample.maxrss_kib = Some(ru.ru_maxrss.max(0) as u64);
            sample.report = Some(read_report(&out)?);
        }
        Cfg::D => {
            let out = ctx.file("d.json");
            let mut args: Vec<String> = [
                "--verbose",
                "--format",
                "json",
                "--output",
                &out.display().to_string(),
                "--",
            ]
            .map(String::from)
            .to_vec();
            args.extend(ctx.pipe_cmd(ctx.loops));
            let mut t = Proc::spawn("affin-trace -- perf bench", bin, &args)?;
            let poller = stats.then(|| StatsPoller::start(&ctx.bpftool, t.pid()));
            let status = t.wait(RUN_TIMEOUT)?;
            if let Some(p) = poller {
                sample.progs = p.finish();
            }
            // Ours are gone with the tracer: any held now are someone else's.
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
            t.ok(status)?;
            sample.us = parse_usecs_per_op(&t.stdout)
                .with_context(|| format!("no usecs/op in the output: {}", t.output_tail()))?;
            sample.report = Some(read_report(&out)?);
        }
        Cfg::E => {
            let bpftrace = ctx.bpftrace.as_ref().context("bpftrace is not available")?;
            let cmd = ctx.pipe_cmd(ctx.loops).join(" ");
            let args = ["-c", &cmd, "-e", BPFTRACE_SCRIPT];
            let mut t = Proc::spawn("bpftrace -c perf bench", bpftrace, &args)?;
            let status = t.wait(RUN_TIMEOUT)?;
            sample.foreign = foreign_programs(&ctx.bpftool, None)?;
            t.ok(status)?;
            if !t.stdout.iter().any(|l| l.starts_with("Attaching")) {
                bail!("bpftrace did not attach: {}", t.output_tail());
            }
            let threads = t
                .stdout
                .iter()
                .filter(|l| l.starts_with("@oncpu_ns["))
                .count();
            if threads < 2 {
                bail!(
                    "bpftrace saw {threads} threads of the bench (expected >= 2): {}",
                    t.output_tail()
                );
            }
            sample.us = parse_usecs_per_op(&t.stdout)
                .with_context(|| format!("no usecs/op in the output: {}", t.output_tail()))?;
        }
    }
    Ok(sample)
}

// ---------------------------------------------------------------------------
// Results.

struct Env {
    date: String,
    kernel: String,
    cpus: usize,
    cpu_model: String,
    tool_version: String,
    commit: String,
    perf: String,
    bpftrace: String,
    bpftool: String,
    command: String,
}

struct StartRun {
    maxrss_kib: u64,
    offsets_ms: f64,
    attached_ms: f64,
    tracing_ms: f64,
    external_ms: f64,
}

struct Startup {
    cold: StartRun,
    warm: Vec<StartRun>,
}

struct ThreadsRun {
    n: usize,
    secs: f64,
    period_ms: u64,
    helper_tasks: usize,
    tracing_ms: f64,
    wall_s: f64,
    cpu_s: f64,
    steady_pct: Option<f64>,
    maxrss_kib: u64,
    vmhwm_kib: Option<u64>,
    /// Last VmRSS sample before the exit.
    vmrss_kib: Option<u64>,
    /// CPU time used until `tracing at` (start-up), s.
    startup_cpu_s: Option<f64>,
    report: TraceReport,
    limits: String,
}

#[derive(Default)]
struct Results {
    loops: u64,
    rounds: usize,
    calibration_us: Option<f64>,
    perf_stat_switches_per_op: Option<f64>,
    samples: [Vec<f64>; 5],
    d_reports: Vec<TraceReport>,
    c_reports: Vec<TraceReport>,
    /// Runs redone because another affin-trace held programs after them,
    /// and the samples kept although it still did (after 3 tries).
    redone: usize,
    contaminated: Vec<String>,
    /// Peak RSS (KiB) of bench-floor and of affin-trace in (c), per run.
    floor_rss: Vec<u64>,
    c_rss: Vec<u64>,
    e_skipped: Option<String>,
    stats: Option<Result<Vec<(Cfg, Prog)>, String>>,
    startup: Option<Result<Startup, String>>,
    small: Option<Result<ThreadsRun, String>>,
    large: Option<Result<ThreadsRun, String>>,
    checks: Vec<(String, bool)>,
}

impl Results {
    fn med(&self, cfg: Cfg) -> Option<f64> {
        let v = &self.samples[cfg.index()];
        (!v.is_empty()).then(|| median(v))
    }

    /// Context switches per pipe round trip, as (d) counted them.
    fn switches_per_op(&self) -> Option<f64> {
        let per: Vec<f64> = self
            .d_reports
            .iter()
            .map(|r| (r.voluntary + r.involuntary) as f64 / self.loops as f64)
            .collect();
        (!per.is_empty()).then(|| median(&per))
    }

    /// Added ns per context switch of `cfg` over (a).
    fn added_ns(&self, cfg: Cfg) -> Option<f64> {
        Some((self.med(cfg)? - self.med(Cfg::A)?) * 1e3 / self.switches_per_op()?)
    }

    fn ratio(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let (n, d) = (self.added_ns(num)?, self.added_ns(den)?);
        (d > 0.0).then_some(n / d)
    }

    /// Per-round added ns per switch: (config - (a) of the same round) /
    /// switches per op.
    fn paired(&self, cfg: Cfg) -> Vec<f64> {
        let spo = self.switches_per_op().unwrap_or(f64::NAN);
        let (a, c) = (&self.samples[Cfg::A.index()], &self.samples[cfg.index()]);
        a.iter().zip(c).map(|(a, c)| (c - a) * 1e3 / spo).collect()
    }

    /// Added ns per switch: the median of the per-round differences with
    /// (a), which cancels drift between rounds.
    fn paired_added_ns(&self, cfg: Cfg) -> Option<f64> {
        let d = self.paired(cfg);
        (!d.is_empty()).then(|| median(&d))
    }

    /// num's median / den's upper quartile (paired figures): a cautious
    /// ratio when den is small next to the noise.
    fn ratio_cautious(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let d = self.paired(den);
        if d.is_empty() {
            return None;
        }
        let (n, d) = (self.paired_added_ns(num)?, quantile(&d, 0.75));
        (n > 0.0 && d > 0.0).then_some(n / d)
    }

    /// The paired ratio as text: "unbounded" when num's added cost is above
    /// 0 and den's is not (den is lost in the noise).
    fn ratio_text(&self, num: Cfg, den: Cfg) -> String {
        match (
            self.paired_ratio(num, den),
            self.paired_added_ns(num),
            self.paired_added_ns(den),
        ) {
            (Some(x), _, _) => times(Some(x)),
            (None, Some(n), Some(d)) if n > 0.0 && d <= 0.0 => {
                format!("unbounded ({} <= 0)", den.tag())
            }
            _ => "n/a".into(),
        }
    }

    /// The (d)/(b) target: met, not met, or n/a.
    fn added_ratio_status(&self) -> &'static str {
        match (
            self.paired_ratio(Cfg::D, Cfg::B),
            self.paired_added_ns(Cfg::D),
        ) {
            (Some(x), _) => met(x <= T_ADDED_RATIO),
            (None, Some(d)) if d > 0.0 && self.paired_added_ns(Cfg::B).is_some() => met(false),
            _ => "n/a",
        }
    }

    fn paired_ratio(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let (n, d) = (self.paired_added_ns(num)?, self.paired_added_ns(den)?);
        (d > 0.0).then_some(n / d)
    }

    fn stat(&self, cfg: Cfg, name: &str) -> Option<&Prog> {
        match &self.stats {
            Some(Ok(v)) => v
                .iter()
                .find(|(c, p)| *c == cfg && p.name == name)
                .map(|(_, p)| p),
            _ => None,
        }
    }

    fn ns_per_event(&self, cfg: Cfg, name: &str) -> Option<f64> {
        let p = self.stat(cfg, name)?;
        let (t, n) = (p.run_time_ns?, p.run_cnt?);
        (n > 0).then(|| t as f64 / n as f64)
    }
}

fn check(results: &mut Results, what: String, ok: bool) {
    println!("bench: check {}: {what}", if ok { "OK" } else { "FAILED" });
    results.checks.push((what, ok));
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn first_line_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn environment(ctx: &Ctx) -> Env {
    let root = workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{c} + uncommitted changes")
        }
        Some(c) => c,
        None => "?".into(),
    };
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mut command = String::from("cargo xtask");
    for a in std::env::args().skip(1) {
        command.push(' ');
        command.push_str(&a);
    }
    Env {
        date: first_line_of(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        tool_version: first_line_of(&ctx.bin, &["--version"]),
        commit,
        perf: first_line_of(&ctx.perf, &["--version"]),
        bpftrace: ctx
            .bpftrace
            .as_ref()
            .map_or_else(|| "absent".into(), |b| first_line_of(b, &["--version"])),
        bpftool: first_line_of(&ctx.bpftool.argv[ctx.bpftool.argv.len() - 1], &["version"]),
        command,
    }
}

/// bpftrace, installed with apt-get when missing; Err(reason) when absent.
fn find_bpftrace() -> Result<PathBuf, String> {
    if let Some(b) = which("bpftrace") {
        return Ok(b);
    }
    let Some(apt) = which("apt-get") else {
        return Err("bpftrace is not installed and there is no apt-get to install it".into());
    };
    println!("bench: bpftrace is missing: apt-get install -y bpftrace ...");
    let status = Command::new(apt)
        .args(["install", "-y", "bpftrace"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => which("bpftrace")
            .ok_or_else(|| "apt-get installed bpftrace but it is not on PATH".into()),
        Ok(s) => Err(format!("`apt-get install -y bpftrace` failed ({s})")),
        Err(e) => Err(format!("could not run apt-get: {e}")),
    }
}

fn tool(name: &str, package: &str) -> Result<PathBuf> {
    which(name).with_context(|| {
        format!("{name} is not installed: `apt-get install {package}` (or `cargo xtask setup`)")
    })
}

pub fn run(args: Args) -> Result<()> {
    if !is_root() {
        bail!("the benchmark loads eBPF programs and changes sysctls: run it as root");
    }
    sys::on_stop_signals(on_signal);
    binary::build(true)?;
    let bpftool = tool("bpftool", "bpftool")?;
    let result = bench(&args, &bpftool);
    // Programs are freed a moment after their last fd closes: allow that.
    let bpftool = Bpftool {
        argv: vec![bpftool],
    };
    if let Err(e) = leftover_check(&bpftool) {
        eprintln!("bench: ERROR: {e:#}");
        return Err(e);
    }
    result
}

/// Fails unless every btf_sched_*/floor_* program is gone, or held by a
/// live process that is not the bench's (all of the bench's are reaped by
/// now): such a one is another affin-trace, reported but not the bench's.
fn leftover_check(bpftool: &Bpftool) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = bpftool
            .ours()
            .context("could not check for leftover programs")?;
        let holders = prog_holders();
        let (foreign, orphan): (Vec<Prog>, Vec<Prog>) = left
            .into_iter()
            .partition(|p| holders.iter().any(|(_, id)| *id == p.id));
        if orphan.is_empty() {
            if foreign.is_empty() {
                println!("bench: no btf_sched_*/floor_* program left loaded");
            } else {
                println!(
                    "bench: WARNING: btf_sched_*/floor_* programs of another process are \
                     loaded (not the bench's): {}",
                    foreign_programs(bpftool, None)?.join("; ")
                );
            }
            return Ok(());
        }
        // Programs are freed a moment after their last fd closes.
        if Instant::now() >= end {
            let list: Vec<String> = orphan
                .iter()
                .map(|p| format!("{} (id {})", p.name, p.id))
                .collect();
            bail!(
                "BPF programs still loaded after the run and held by no process: {} \
                 (`bpftool prog list`; pinned or leaked)",
                list.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bench(args: &Args, bpftool_path: &Path) -> Result<()> {
    let t_start = Instant::now();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = tool("taskset", "util-linux")?;
    let perf = tool("perf", "linux-perf")?;
    let bpftool = Bpftool {
        argv: if ncpu > 1 {
            vec![
                taskset.clone(),
                "-c".into(),
                "1".into(),
                bpftool_path.into(),
            ]
        } else {
            vec![bpftool_path.into()]
        },
    };
    wait_no_foreign(&bpftool)?;
    let bpftrace = find_bpftrace();
    if let Err(why) = &bpftrace {
        println!("bench: skipping (e): {why}");
    }

    let tmp =
        TempDir(std::env::temp_dir().join(format!("affin-trace-bench.{}", std::process::id())));
    std::fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;
    // bpf_stats stay off while the overhead is measured, on only in phase 3.
    let mut stats_sysctl = Sysctl::new(BPF_STATS)?;
    if stats_sysctl.original != "0" {
        stats_sysctl.set("0")?;
    }
    let mut sleeper = Proc::spawn("sleep 1000", Path::new("sleep"), &["1000"])?;
    let mut ctx = Ctx {
        bin: release_bin(),
        xtask: std::env::current_exe().context("finding xtask's own executable")?,
        taskset,
        perf,
        bpftrace: bpftrace.as_ref().ok().cloned(),
        bpftool,
        tmp: tmp.0.clone(),
        loops: args.loops.unwrap_or(CALIBRATION_LOOPS),
        unrelated: sleeper.pid(),
    };
    let env = environment(&ctx);
    let mut r = Results {
        rounds: args.rounds as usize,
        e_skipped: bpftrace.err(),
        ..Results::default()
    };

    // Phase 1.
    if args.loops.is_none() {
        let us = run_perf(&ctx, CALIBRATION_LOOPS)?;
        let loops = (RUN_TARGET_S * 1e6 / us / 10_000.0).round().max(5.0) * 10_000.0;
        ctx.loops = (loops as u64).min(2_000_000);
        r.calibration_us = Some(us);
        println!(
            "bench: calibration: {us:.3} us/op at {CALIBRATION_LOOPS} loops -> {} loops per run",
            ctx.loops
        );
    }
    r.loops = ctx.loops;
    r.perf_stat_switches_per_op = perf_stat_switches(&ctx).ok();
    let mut cfgs: Vec<Cfg> = CFGS
        .into_iter()
        .filter(|c| *c != Cfg::E || ctx.bpftrace.is_some())
        .collect();
    for round in 1..=r.rounds {
        let mut line = format!("bench: round {round}/{}:", r.rounds);
        for cfg in cfgs.clone() {
            let mut attempt = 0;
            let run = loop {
                attempt += 1;
                match run_cfg(&ctx, cfg, false) {
                    // Another affin-trace appeared during the run: redo it.
                    Ok(s) if !s.foreign.is_empty() && attempt < 3 => {
                        println!(
                            "bench: {} redone: another affin-trace ran meanwhile: {}",
                            cfg.tag(),
                            s.foreign.join("; ")
                        );
                        r.redone += 1;
                    }
                    other => break other,
                }
            };
            let s = match run {
                Ok(s) => s,
                // bpftrace is only a comparison: when it fails, go on without it.
                Err(e) if cfg == Cfg::E && !INTERRUPTED.load(Ordering::SeqCst) => {
                    println!("bench: (e) failed, skipping it from now on: {e:#}");
                    r.e_skipped = Some(format!("bpftrace failed: {e:#}"));
                    r.samples[Cfg::E.index()].clear();
                    cfgs.retain(|c| *c != Cfg::E);
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("config {}", cfg.tag())),
            };
            r.samples[cfg.index()].push(s.us);
            if !s.foreign.is_empty() {
                r.contaminated
                    .push(format!("{}: {}", cfg.tag(), s.foreign.join("; ")));
            }
            match cfg {
                Cfg::B => r.floor_rss.extend(s.maxrss_kib),
                Cfg::C => {
                    r.c_reports.extend(s.report);
                    r.c_rss.extend(s.maxrss_kib);
                }
                Cfg::D => r.d_reports.extend(s.report),
                _ => {}
            }
            let _ = write!(line, " {} {:.3}", cfg.tag(), s.us);
        }
        println!("{line} us/op");
    }
    println!(
        "bench: phase 1 done in {:.0} s",
        t_start.elapsed().as_secs_f64()
    );
    phase1_checks(&mut r, ctx.unrelated);

    // Phase 3.
    let stats = (|| -> Result<Vec<(Cfg, Prog)>> {
        stats_sysctl.set("1")?;
        let mut all = Vec::new();
        for cfg in [Cfg::B, Cfg::C, Cfg::D] {
            let s = run_cfg(&ctx, cfg, true)
                .with_context(|| format!("{} with bpf_stats", cfg.tag()))?;
            if s.progs.is_empty() {
                bail!(
                    "{}: bpftool showed none of affin-trace's programs",
                    cfg.tag()
                );
            }
            all.extend(s.progs.into_iter().map(|p| (cfg, p)));
        }
        Ok(all)
    })();
    stats_sysctl.restore()?;
    r.stats = Some(phase_result("bpf_stats", stats)?);

    // Phase 4.
    r.startup = Some(phase_result("start-up", startup(&ctx))?);

    // Phases 5 and 6.
    r.small = Some(phase_result(
        "1,000 threads",
        threads_phase(&ctx, SMALL_THREADS, SMALL_SECS, SMALL_PERIOD_MS),
    )?);
    r.large = Some(phase_result(
        "10,000 threads",
        threads_phase(&ctx, LARGE_THREADS, LARGE_SECS, LARGE_PERIOD_MS),
    )?);

    // Stop everything started before writing anything.
    sleeper.stop()?;
    drop(sleeper);
    stats_sysctl.restore()?;

    let md = render(&env, &r, t_start.elapsed());
    println!("\n{md}");
    let path = workspace_root().join("BENCHMARKS.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "bench: wrote {} ({:.0} s in all)",
        path.display(),
        t_start.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = [
        ("bpf_stats", r.stats.as_ref().is_some_and(|x| x.is_err())),
        ("start-up", r.startup.as_ref().is_some_and(|x| x.is_err())),
        (
            "1,000 threads",
            r.small.as_ref().is_some_and(|x| x.is_err()),
        ),
        (
            "10,000 threads",
            r.large.as_ref().is_some_and(|x| x.is_err()),
        ),
    ]
    .into_iter()
    .filter_map(|(n, f)| f.then_some(n))
    .chain(r.checks.iter().filter(|c| !c.1).map(|c| c.0.as_str()))
    .collect();
    if !failed.is_empty() {
        bail!("some measurements failed: {}", failed.join("; "));
    }
    Ok(())
}

/// A phase's error is kept for the report, unless the run was interrupted.
fn phase_result<T>(name: &str, r: Result<T>) -> Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => {
            check_interrupted()?;
            eprintln!("bench: {name} FAILED: {e:#}");
            Ok(Err(format!("{e:#}")))
        }
    }
}

fn phase1_checks(r: &mut Results, unrelated: u32) {
    let n = r.contaminated.len();
    check(
        r,
        format!(
            "no other affin-trace held programs at the end of a kept run ({n} kept with one; \
             {} runs redone because of one)",
            r.redone
        ),
        n == 0,
    );
    let min_threads = r.d_reports.iter().map(|d| d.threads).min().unwrap_or(0);
    check(
        r,
        format!("(d) traced >= 2 threads of the bench in every run (fewest: {min_threads})"),
        min_threads >= 2,
    );
    if let Some(spo) = r.switches_per_op() {
        check(
            r,
            format!("(d) counted ~2 context switches per round trip (median {spo:.3})"),
            (1.8..=2.2).contains(&spo),
        );
    }
    let tp_btf = r.d_reports.iter().all(|d| d.attach_mode == "tp_btf");
    let modes: Vec<String> = r.d_reports.iter().map(|d| d.attach_mode.clone()).collect();
    check(
        r,
        format!("(d) attached with tp_btf ({})", modes.join(", ")),
        tp_btf && !modes.is_empty(),
    );
    let dropped: u64 = r.d_reports.iter().map(|d| d.dropped).sum();
    check(
        r,
        format!("(d) dropped no events (total {dropped})"),
        dropped == 0,
    );
    let c_ok = r
        .c_reports
        .iter()
        .all(|c| c.pids == [unrelated as u64] && c.threads <= 1);
    check(
        r,
        format!("(c) traced only the unrelated sleep (pid {unrelated})"),
        c_ok && !r.c_reports.is_empty(),
    );
}

/// `perf stat -e context-switches` of one bench run: switches per op.
fn perf_stat_switches(ctx: &Ctx) -> Result<f64> {
    let mut args: Vec<String> = ["stat", "-x", ",", "-e", "context-switches", "--"]
        .map(String::from)
        .to_vec();
    args.extend(ctx.pipe_cmd(ctx.loops));
    let mut p = Proc::spawn("perf stat", &ctx.perf, &args)?;
    let status = p.wait(RUN_TIMEOUT)?;
    p.ok(status)?;
    let n: f64 = p
        .stderr
        .iter()
        .find(|l| l.contains("context-switches"))
        .and_then(|l| l.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no context-switches count: {}", p.output_tail()))?;
    let spo = n / ctx.loops as f64;
    println!("bench: perf stat: {n} context switches, {spo:.3} per round trip");
    Ok(spo)
}

fn start_once(ctx: &Ctx) -> Result<StartRun> {
    let out = ctx.file("start.json");
    let pid = ctx.unrelated.to_string();
    let args = [
        "--verbose",
        "--pid",
        &pid,
        "--duration",
        "0.2",
        "--interval",
        "0.2",
        "--format",
        "json",
        "--output",
        &out.display().to_string(),
    ]
    .map(String::from);
    let mut t = Proc::spawn("affin-trace (start-up)", &ctx.bin, &args)?;
    let (_, external) = t.wait_line(true, "tracing at", ATTACH_TIMEOUT)?;
    // It ends by itself after 0.2 s.
    let (status, ru) = t.wait_rusage(RUN_TIMEOUT)?;
    t.ok(status)?;
    let get = |what: &str| {
        verbose_ms(&t.stderr, what).with_context(|| format!("no {what:?} in: {}", t.output_tail()))
    };
    Ok(StartRun {
        maxrss_kib: ru.ru_maxrss.max(0) as u64,
        offsets_ms: get("offsets resolved")?,
        attached_ms: get("programs attached")?,
        tracing_ms: get("tracing at")?,
        external_ms: external.as_secs_f64() * 1e3,
    })
}

fn startup(ctx: &Ctx) -> Result<Startup> {
    match std::fs::remove_file(OFFSETS_CACHE) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {OFFSETS_CACHE}")),
    }
    let cold = start_once(ctx)?;
    println!("bench: start-up cold: tracing at {:.1} ms", cold.tracing_ms);
    let mut warm = Vec::new();
    for _ in 0..START_RUNS {
        warm.push(start_once(ctx)?);
    }
    let v: Vec<f64> = warm.iter().map(|s| s.tracing_ms).collect();
    println!(
        "bench: start-up warm: median {:.1} ms, max {:.1} ms",
        median(&v),
        min_max(&v).1
    );
    Ok(Startup { cold, warm })
}

fn total_tasks() -> Option<u64> {
    // /proc/loadavg: "0.1 0.2 0.3 running/total lastpid"
    read_trim("/proc/loadavg")
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// The state letter of /proc/<pid>/stat (None: no such process).
fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}

fn proc_cpu_s(pid: u32, ticks: f64) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "comm)": state is field 3, utime 14, stime 15.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / ticks)
}

/// A "Vm...:  123 kB" field of /proc/<pid>/status.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Traces a helper process of `n` threads (each sleeping 10 ms in a loop)
/// for `secs` with the default interval; the tracer's CPU time and RSS.
fn threads_phase(ctx: &Ctx, n: usize, secs: f64, period_ms: u64) -> Result<ThreadsRun> {
    // Room for the helper's threads: raise the limits when short.
    let mut raised = Vec::new();
    let mut guards = Vec::new();
    let need = total_tasks().unwrap_or(0) + n as u64 + 1_000;
    for path in [THREADS_MAX, PID_MAX] {
        let mut s = Sysctl::new(path)?;
        let cur: u64 = s.original.parse().unwrap_or(u64::MAX);
        if cur < need {
            s.set(&need.to_string())?;
            raised.push(format!("{path} raised from {cur} to {need} for the run"));
        }
        guards.push(s);
    }
    let limits = if raised.is_empty() {
        format!(
            "no limit raised (threads-max {}, pid_max {}, {} tasks needed)",
            guards[0].original, guards[1].original, need
        )
    } else {
        raised.join("; ")
    };
    let secs_s = format!("{}", secs + 60.0);
    let mut helper = Proc::spawn(
        "bench-threads",
        &ctx.xtask,
        &[
            "bench-threads".to_string(),
            n.to_string(),
            secs_s,
            period_ms.to_string(),
        ],
    )?;
    helper.wait_line(false, "threads running", Duration::from_secs(120))?;
    let helper_tasks = std::fs::read_dir(format!("/proc/{}/task", helper.pid()))
        .map(|d| d.count())
        .unwrap_or(0);

    let out = ctx.file(&format!("threads-{n}.json"));
    let args = [
        "--verbose".to_string(),
        "--pid".into(),
        helper.pid().to_string(),
        "--duration".into(),
        secs.to_string(),
        "--format".into(),
        "json".into(),
        "--output".into(),
        out.display().to_string(),
    ];
    let ticks = sys::clock_ticks();
    let mut t = Proc::spawn(&format!("affin-trace --pid <{n} threads>"), &ctx.bin, &args)?;
    let pid = t.pid();
    let mut at_tracing: Option<(Instant, f64)> = None;
    let mut last: Option<(Instant, f64)> = None;
    let mut vmhwm = None;
    let mut vmrss = None;
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 120.0);
    loop {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("affin-trace did not finish {secs} s of tracing in time");
        }
        match t.lines.recv_timeout(Duration::from_millis(100)) {
            Ok((is_err, line)) => {
                if is_err && line.contains("tracing at") {
                    at_tracing = proc_cpu_s(pid, ticks).map(|c| (Instant::now(), c));
                }
                t.push((is_err, line));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if let Some(h) = status_kib(pid, "VmHWM:") {
            vmhwm = Some(h);
        }
        if let Some(h) = status_kib(pid, "VmRSS:") {
            vmrss = Some(h);
        }
        if let Some(c) = proc_cpu_s(pid, ticks) {
            last = Some((Instant::now(), c));
        }
    }
    let (status, ru) = t.wait_rusage(Duration::from_secs(60))?;
    let wall_s = t.started.elapsed().as_secs_f64();
    t.ok(status)?;
    helper.stop()?;
    let tv = |v: sys::Timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    let cpu_s = tv(ru.ru_utime) + tv(ru.ru_stime);
    let steady_pct = match (at_tracing, last) {
        (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
            Some((c1 - c0) / (t1 - t0).as_secs_f64() * 100.0)
        }
        _ => None,
    };
    let report = read_report(&out)?;
    let run = ThreadsRun {
        n,
        secs,
        period_ms,
        helper_tasks,
        tracing_ms: verbose_ms(&t.stderr, "tracing at").unwrap_or(f64::NAN),
        wall_s,
        cpu_s,
        steady_pct,
        maxrss_kib: ru.ru_maxrss.max(0) as u64,
        vmhwm_kib: vmhwm,
        vmrss_kib: vmrss,
        startup_cpu_s: at_tracing.map(|(_, c)| c),
        report,
        limits,
    };
    println!(
        "bench: {n} threads: {:.2}% of one CPU ({cpu_s:.3} s over {wall_s:.2} s), peak RSS \
         {:.1} MiB, {} threads seen, {} dropped events",
        cpu_s / wall_s * 100.0,
        run.maxrss_kib as f64 / 1024.0,
        run.report.threads,
        run.report.dropped
    );
    for mut g in guards {
        g.restore()?;
    }
    Ok(run)
}

/// `cargo xtask bench-threads N SECS [PERIOD_MS]`: N threads sleeping
/// PERIOD_MS (default 10) in a loop for SECS seconds (the workload of phases
/// 5 and 6). The threads start their loops together once all exist, with
/// staggered first sleeps, so that spawning is not slowed by the load.
pub fn threads_helper(n: usize, secs: f64, period_ms: u64) -> Result<()> {
    let period = Duration::from_millis(period_ms.max(1));
    let go = Arc::new(std::sync::Barrier::new(n + 1));
    for i in 0..n {
        let go = go.clone();
        let offset = period * (i % 16) as u32 / 16;
        std::thread::Builder::new()
            .name(format!("sleeper-{i}"))
            .stack_size(64 * 1024)
            .spawn(move || {
                go.wait();
                std::thread::sleep(offset);
                loop {
                    std::thread::sleep(period);
                }
            })
            .with_context(|| format!("starting thread {} of {n}", i + 1))?;
    }
    go.wait();
    println!("bench-threads: {n} threads running");
    std::thread::sleep(Duration::from_secs_f64(secs));
    std::process::exit(0);
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md

/// `writeln!` into a String (which cannot fail).
macro_rules! md {
    ($w:expr, $($arg:tt)*) => {
        let _ = writeln!($w, $($arg)*);
    };
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

/// "4.22x", or "n/a".
fn times(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2}x"))
}

fn median_kib(v: &[u64]) -> Option<u64> {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    (!f.is_empty()).then(|| median(&f) as u64)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Failed or skipped phase, as a line of the report.
fn phase_missing<T>(w: &mut String, x: &Option<Result<T, String>>) -> bool {
    match x {
        Some(Ok(_)) => false,
        Some(Err(e)) => {
            md!(w, "FAILED: {e}");
            true
        }
        None => {
            md!(w, "not run");
            true
        }
    }
}

fn render(env: &Env, r: &Results, took: Duration) -> String {
    let mut m = String::new();
    let w = &mut m;
    md!(w, "# Benchmarks\n");
    md!(
        w,
        "Written by `{}` (as root; the run took {:.0} s). Every figure below comes from that \
         run; rerun it to refresh this file.\n",
        env.command,
        took.as_secs_f64()
    );
    md!(w, "- Date: {}", env.date);
    md!(w, "- Kernel: {}", env.kernel);
    md!(w, "- CPUs: {} x {}", env.cpus, env.cpu_model);
    md!(
        w,
        "- affin-trace: {} (commit {})",
        env.tool_version,
        env.commit
    );
    md!(
        w,
        "- Tools: {}; {}; {}",
        env.perf,
        env.bpftrace,
        env.bpftool
    );
    let calib = r.calibration_us.map_or(String::new(), |us| {
        format!(
            "; loops calibrated to ~{RUN_TARGET_S} s per run from a {CALIBRATION_LOOPS}-loop \
             run at {us:.3} us/op"
        )
    });
    md!(
        w,
        "- Workload: `taskset -c 0 perf bench sched pipe -T -l {}` (two threads of one \
         process ping-pong over a pipe on CPU 0){calib}\n",
        r.loops
    );

    md!(w, "## What each configuration means\n");
    md!(w, "- (a) nothing attached: the baseline.");
    md!(
        w,
        "- (b) `affin-trace bench-floor`: one EMPTY tp_btf program on sched_switch \
         (`floor_sched_switch`): the least any tp_btf tracer can cost."
    );
    md!(
        w,
        "- (c) `affin-trace --pid <sleep>`: all five programs attached, tracing a `sleep 1000` \
         the bench started; every event of the benchmark takes the in-kernel filter path \
         (not a target) and is not recorded."
    );
    md!(
        w,
        "- (d) `affin-trace --format json -- <workload>`: affin-trace starts the benchmark \
         and traces all its threads; every event of the benchmark is recorded."
    );
    md!(
        w,
        "- (e) `bpftrace -c <workload> -e <script>` (script in `xtask/src/bench.rs`): classic \
         tracepoints; sched_switch stores start times in a map keyed by tid and sums on-CPU \
         deltas per tid of the target process, sched_migrate_task counts per tid. It does \
         less than (d): no wakeups, no per-CPU split, no voluntary/involuntary split.\n"
    );
    md!(
        w,
        "The configurations are interleaved (a b c d e, {} rounds) so that drift hits all \
         alike. Each tracer is attached before perf starts (affin-trace `tracing at`, \
         bench-floor `floor attached`; bpftrace `-c` starts the command once its probes are \
         attached) and stopped with SIGINT after perf ends. `kernel.bpf_stats_enabled` is 0 \
         during these runs. Before each run the bench waits until no other process holds \
         affin-trace programs (another affin-trace, e.g. the root tests, would distort the \
         figures); a run at whose end another process holds some is redone (up to 3 tries; \
         see Checks).\n",
        r.rounds
    );

    // 1.
    md!(w, "## 1. Pipe round trip\n");
    md!(
        w,
        "| config | what | median us/op | min-max us/op | vs (a) | added ns/switch | \
         its IQR | added ns/switch, from medians |"
    );
    md!(w, "|---|---|---|---|---|---|---|---|");
    for cfg in CFGS {
        let v = &r.samples[cfg.index()];
        if v.is_empty() {
            let why = r.e_skipped.as_deref().filter(|_| cfg == Cfg::E);
            md!(
                w,
                "| {} | {} | skipped: {} | | | | | |",
                cfg.tag(),
                cfg.short(),
                why.unwrap_or("-")
            );
            continue;
        }
        let (lo, hi) = min_max(v);
        let ratio = r.med(Cfg::A).map(|a| median(v) / a);
        let (paired, iqr, from_medians) = if cfg == Cfg::A {
            ("-".into(), "-".into(), "-".into())
        } else {
            let p = r.paired(cfg);
            (
                opt(r.paired_added_ns(cfg), 1),
                format!("{:.1} to {:.1}", quantile(&p, 0.25), quantile(&p, 0.75)),
                opt(r.added_ns(cfg), 1),
            )
        };
        md!(
            w,
            "| {} | {} | {:.3} | {lo:.3}-{hi:.3} | {} | {paired} | {iqr} | {from_medians} |",
            cfg.tag(),
            cfg.short(),
            median(v),
            times(ratio)
        );
    }
    md!(
        w,
        "\n\"added ns/switch\" = (config - (a)) / context switches per round trip \
         (section 2), computed in each round against the (a) run of the same round, then \
         the median over rounds; \"its IQR\" is the interquartile range of those per-round \
         values. \"from medians\" = (median(config) - median(a)) / switches per round trip. \
         The per-round (paired) figure is the one used below: the speed of this machine \
         drifts by more than the effect of (b) (see the (a) samples), and pairing cancels \
         drift slower than a round.\n"
    );
    md!(w, "Samples (us/op, in run order):\n");
    for cfg in CFGS {
        let v = &r.samples[cfg.index()];
        if !v.is_empty() {
            let s: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
            md!(w, "- {}: {}", cfg.tag(), s.join(", "));
        }
    }
    if let Some(why) = &r.e_skipped {
        md!(w, "\n(e) was skipped: {why}.");
    }

    // 2.
    md!(w, "\n## 2. Added cost per context switch\n");
    let per_loop = |f: fn(&TraceReport) -> u64| -> Option<f64> {
        let v: Vec<f64> = r
            .d_reports
            .iter()
            .map(|d| f(d) as f64 / r.loops as f64)
            .collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let thr: Vec<String> = r.d_reports.iter().map(|d| d.threads.to_string()).collect();
    md!(
        w,
        "Context switches per round trip, from (d)'s reports (process voluntary + \
         involuntary switches / loops, median of {} runs): **{}** ({} voluntary + {} \
         involuntary); `perf stat -e context-switches` of one run: {}. Threads in (d)'s \
         reports: {}. Every round trip is 2 switches on the one CPU, but only part of them \
         are voluntary: the woken reader often preempts the writer before the writer blocks \
         (wakeup preemption), an involuntary switch.\n",
        r.d_reports.len(),
        opt(r.switches_per_op(), 3),
        opt(per_loop(|d| d.voluntary), 3),
        opt(per_loop(|d| d.involuntary), 3),
        opt(r.perf_stat_switches_per_op, 3),
        if thr.is_empty() {
            "n/a".into()
        } else {
            thr.join(", ")
        }
    );
    md!(
        w,
        "| comparison | ratio of added cost per switch | cautious | from medians | target |"
    );
    md!(w, "|---|---|---|---|---|");
    for (num, den, what, target) in [
        (Cfg::D, Cfg::B, "affin-trace tracing vs empty program", true),
        (Cfg::E, Cfg::D, "bpftrace vs affin-trace", false),
        (Cfg::C, Cfg::B, "filter path vs empty program", false),
    ] {
        let t = if target {
            format!("<= {T_ADDED_RATIO}x: {}", r.added_ratio_status())
        } else {
            "info".into()
        };
        md!(
            w,
            "| {} / {}: {what} | {} | {} | {} | {t} |",
            num.tag(),
            den.tag(),
            r.ratio_text(num, den),
            times(r.ratio_cautious(num, den)),
            times(r.ratio(num, den))
        );
    }
    md!(
        w,
        "\nRatios of the per-round (paired) added costs of section 1 (\"unbounded\" when \
         the denominator's is not above 0, i.e. lost in the noise, while the numerator's \
         is); \"cautious\" divides the numerator's by the denominator's upper quartile, \
         for when the denominator is small next to the noise; \"from medians\" uses the \
         medians-only figures (n/a where the denominator is not above 0). The (d)/(b) \
         target counts as not met when the ratio is unbounded."
    );

    // 3.
    md!(w, "\n## 3. Per-program run time (bpf_stats)\n");
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    let switch_ns = r.ns_per_event(Cfg::D, "btf_sched_switch");
    // In-program time of all programs of a run per sched_switch event.
    let per_switch = |cfg: Cfg, switch: &str| -> Option<f64> {
        let Some(Ok(v)) = &r.stats else { return None };
        let n = r.stat(cfg, switch)?.run_cnt? as f64;
        let total: u64 = v
            .iter()
            .filter(|(c, _)| *c == cfg)
            .filter_map(|(_, p)| p.run_time_ns)
            .sum();
        (n > 0.0).then(|| total as f64 / n)
    };
    if !phase_missing(w, &r.stats) {
        md!(
            w,
            "`kernel.bpf_stats_enabled=1` only during one extra run each of (b), (c) and (d), \
             then restored. run_time_ns / run_cnt from `bpftool prog show --json` for the \
             programs the tracer process holds (its fds in /proc/<pid>/fdinfo), read just \
             before the tracer stops ((d): the last of reads every 200 ms during the run). \
             Counts cover events on every CPU, not only the benchmark's.\n"
        );
        md!(w, "| run | program | run_cnt | run_time_ns | ns/event |");
        md!(w, "|---|---|---|---|---|");
        for cfg in [Cfg::B, Cfg::C, Cfg::D] {
            for name in PROGRAMS {
                if let Some(p) = r.stat(cfg, name) {
                    md!(
                        w,
                        "| {} | {} | {} | {} | {} |",
                        cfg.tag(),
                        p.name,
                        p.run_cnt.map_or("n/a".into(), |x| x.to_string()),
                        p.run_time_ns.map_or("n/a".into(), |x| x.to_string()),
                        opt(r.ns_per_event(cfg, name), 1)
                    );
                }
            }
        }
        md!(
            w,
            "\nTarget: btf_sched_switch <= {T_SWITCH_NS} ns/event during (d): {} ({} ns).",
            switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
            opt(switch_ns, 1)
        );
        md!(
            w,
            "The empty program reads {} ns/event, which is roughly what the measurement \
             itself (bpf_stats' clock reads) and the call cost; net of that, \
             btf_sched_switch does about {} ns of work per event in (d) and {} ns on the \
             filter path (c). All programs together run {} ns per sched_switch event in (d) \
             and {} ns in (c). The figures vary between runs of the bench on this machine \
             by some tens of percent.",
            opt(floor_ns, 1),
            opt(switch_ns.zip(floor_ns).map(|(a, b)| a - b), 1),
            opt(
                r.ns_per_event(Cfg::C, "btf_sched_switch")
                    .zip(floor_ns)
                    .map(|(a, b)| a - b),
                1
            ),
            opt(per_switch(Cfg::D, "btf_sched_switch"), 1),
            opt(per_switch(Cfg::C, "btf_sched_switch"), 1)
        );
    }

    // 4.
    md!(w, "\n## 4. Start-up time\n");
    let warm = |f: fn(&StartRun) -> f64| -> Vec<f64> {
        match &r.startup {
            Some(Ok(s)) => s.warm.iter().map(f).collect(),
            _ => Vec::new(),
        }
    };
    let (tr, off, att, ext) = (
        warm(|x| x.tracing_ms),
        warm(|x| x.offsets_ms),
        warm(|x| x.attached_ms),
        warm(|x| x.external_ms),
    );
    let start_rss = warm(|x| x.maxrss_kib as f64);
    if let Some(Ok(s)) = &r.startup {
        md!(
            w,
            "`affin-trace --verbose --pid <sleep> --duration 0.2 --interval 0.2`, once cold \
             (/run/affin-trace/btf-offsets deleted first) then {} times warm. The figures are \
             affin-trace's own `--verbose` times (from the start of its trace session), and \
             \"external\": from spawning the process to reading its `tracing at` line.\n",
            s.warm.len()
        );
        md!(
            w,
            "| run | offsets resolved | programs attached | tracing at | external | peak RSS |"
        );
        md!(w, "|---|---|---|---|---|---|");
        md!(
            w,
            "| cold | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            s.cold.offsets_ms,
            s.cold.attached_ms,
            s.cold.tracing_ms,
            s.cold.external_ms,
            mib(s.cold.maxrss_kib)
        );
        md!(
            w,
            "| warm, median | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            median(&off),
            median(&att),
            median(&tr),
            median(&ext),
            median(&start_rss) / 1024.0
        );
        md!(
            w,
            "| warm, max | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            min_max(&off).1,
            min_max(&att).1,
            min_max(&tr).1,
            min_max(&ext).1,
            min_max(&start_rss).1 / 1024.0
        );
        let s_tr: Vec<String> = tr.iter().map(|x| format!("{x:.1}")).collect();
        md!(w, "\nWarm `tracing at` samples (ms): {}.", s_tr.join(", "));
        md!(
            w,
            "\nTarget: warm start-up <= {T_START_MS} ms in every run: {} (median {:.1} ms, \
             max {:.1} ms). Loading and attaching the programs (kernel BTF, verifier) takes \
             {:.1} ms of the median {:.1} ms (from `offsets resolved` to `programs \
             attached`). Cold, parsing the kernel BTF for the offsets adds {:.1} ms.",
            met(min_max(&tr).1 <= T_START_MS),
            median(&tr),
            min_max(&tr).1,
            median(&att) - median(&off),
            median(&tr),
            s.cold.offsets_ms - median(&off)
        );
    } else {
        phase_missing(w, &r.startup);
    }

    // 5.
    md!(
        w,
        "\n## 5. Userspace cost while tracing {SMALL_THREADS} threads\n"
    );
    if let Some(Ok(t)) = &r.small {
        let pct = t.cpu_s / t.wall_s * 100.0;
        md!(
            w,
            "`cargo xtask bench-threads {n} <secs> {}` ({n} threads sleeping {} ms in a loop; \
             {} tasks in /proc) traced by `affin-trace --pid <it> --duration {} --format json` \
             with the default 1 s interval: {} threads seen, {} dropped events, start-up \
             {:.1} ms. CPU time and peak RSS are the tracer's own rusage (`wait4`).\n",
            t.period_ms,
            t.period_ms,
            t.helper_tasks,
            t.secs,
            t.report.threads,
            t.report.dropped,
            t.tracing_ms,
            n = t.n
        );
        md!(w, "| figure | measured | target |");
        md!(w, "|---|---|---|");
        md!(
            w,
            "| CPU, whole run (utime+stime / wall) | {pct:.2}% of one CPU ({:.3} s / {:.2} s) \
             | <= {T_CPU_PCT}%: {} |",
            t.cpu_s,
            t.wall_s,
            met(pct <= T_CPU_PCT)
        );
        md!(
            w,
            "| CPU used before `tracing at` (/proc/<pid>/stat) | {} s | info |",
            opt(t.startup_cpu_s, 2)
        );
        md!(
            w,
            "| CPU while tracing (after `tracing at`, /proc/<pid>/stat) | {}% | info |",
            opt(t.steady_pct, 2)
        );
        md!(
            w,
            "| peak RSS (ru_maxrss) | {:.1} MiB | <= {T_RSS_MIB} MB: {} |",
            mib(t.maxrss_kib),
            met(mib(t.maxrss_kib) <= T_RSS_MIB)
        );
        md!(
            w,
            "| VmHWM / VmRSS, last /proc/<pid>/status sample | {} / {} MiB | info |",
            opt(t.vmhwm_kib.map(mib), 1),
            opt(t.vmrss_kib.map(mib), 1)
        );
        md!(
            w,
            "\nThe whole-run CPU figure includes start-up. Peak RSS for comparison (ru_maxrss, \
             medians): tracing one sleeping thread for 0.2 s (section 4) {} MiB; tracing the \
             unrelated sleep in (c) {} MiB; `bench-floor`, which loads one empty program and \
             no maps, {} MiB. Both load paths read the kernel BTF with aya \
             (`Btf::from_sys_fs`) before loading.",
            opt(
                (!start_rss.is_empty()).then(|| median(&start_rss) / 1024.0),
                1
            ),
            opt(median_kib(&r.c_rss).map(mib), 1),
            opt(median_kib(&r.floor_rss).map(mib), 1)
        );
    } else {
        phase_missing(w, &r.small);
    }

    // 6.
    md!(w, "\n## 6. Scale: {LARGE_THREADS} threads\n");
    if let Some(Ok(t)) = &r.large {
        md!(
            w,
            "The same helper with {} threads sleeping {} ms in a loop ({} tasks in /proc), \
             traced for {} s. Limits: {}.\n",
            t.n,
            t.period_ms,
            t.helper_tasks,
            t.secs,
            t.limits
        );
        md!(w, "| figure | measured | target |");
        md!(w, "|---|---|---|");
        md!(
            w,
            "| dropped_events | {} | 0: {} |",
            t.report.dropped,
            met(t.report.dropped == 0)
        );
        md!(
            w,
            "| threads seen (process.threads) | {} | info |",
            t.report.threads
        );
        md!(
            w,
            "| start-up (`tracing at`) | {:.1} ms | info |",
            t.tracing_ms
        );
        md!(
            w,
            "| tracer CPU, whole run | {:.2}% of one CPU ({:.3} s / {:.2} s) | info |",
            t.cpu_s / t.wall_s * 100.0,
            t.cpu_s,
            t.wall_s
        );
        md!(
            w,
            "| tracer CPU while tracing | {}% | info |",
            opt(t.steady_pct, 2)
        );
        md!(
            w,
            "| tracer peak RSS | {:.1} MiB | info |",
            mib(t.maxrss_kib)
        );
        md!(
            w,
            "\nThe threads sleep {} ms here, not {SMALL_PERIOD_MS} ms as in section 5: {} \
             threads at {SMALL_PERIOD_MS} ms would ask for {} wakeups/s, more than a small \
             machine serves (on 2 CPUs the helper did not even report ready within 60 s); at \
             {} ms they ask for {} wakeups/s, the rate of section 5. This tests the number of \
             threads, not the event rate. Per-interval map read time is not measured (see \
             Gaps).",
            t.period_ms,
            t.n,
            t.n as u64 * 1000 / SMALL_PERIOD_MS,
            t.period_ms,
            t.n as u64 * 1000 / t.period_ms
        );
    } else {
        phase_missing(w, &r.large);
    }

    // Summary.
    md!(w, "\n## Targets\n");
    md!(
        w,
        "| target | measured | status | where the cost is (this run) |"
    );
    md!(w, "|---|---|---|---|");
    md!(
        w,
        "| added cost per switch (d)/(b) <= {T_ADDED_RATIO}x | {} ({} vs {} ns/switch; \
         cautious {}; from medians {}) | {} | in-program time per sched_switch: {} ns for \
         all of (d)'s programs vs {} ns for the empty one (section 3) |",
        r.ratio_text(Cfg::D, Cfg::B),
        opt(r.paired_added_ns(Cfg::D), 1),
        opt(r.paired_added_ns(Cfg::B), 1),
        times(r.ratio_cautious(Cfg::D, Cfg::B)),
        times(r.ratio(Cfg::D, Cfg::B)),
        r.added_ratio_status(),
        opt(per_switch(Cfg::D, "btf_sched_switch"), 1),
        opt(floor_ns, 1)
    );
    md!(
        w,
        "| btf_sched_switch <= {T_SWITCH_NS} ns/event in (d) | {} ns | {} | empty program: \
         {} ns (measurement cost); filter path (c): {} ns |",
        opt(switch_ns, 1),
        switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
        opt(floor_ns, 1),
        opt(r.ns_per_event(Cfg::C, "btf_sched_switch"), 1)
    );
    if let Some(Ok(s)) = &r.startup {
        md!(
            w,
            "| warm start-up <= {T_START_MS} ms | median {:.1} ms, max {:.1} ms (cold {:.1} \
             ms) | {} | program load + attach: {:.1} ms (median) |",
            median(&tr),
            min_max(&tr).1,
            s.cold.tracing_ms,
            met(min_max(&tr).1 <= T_START_MS),
            median(&att) - median(&off)
        );
    }
    if let Some(Ok(t)) = &r.small {
        let pct = t.cpu_s / t.wall_s * 100.0;
        md!(
            w,
            "| CPU <= {T_CPU_PCT}% tracing {} threads | {pct:.2}% | {} | start-up: {} s of \
             the {:.3} s; while tracing: {}% |",
            t.n,
            met(pct <= T_CPU_PCT),
            opt(t.startup_cpu_s, 2),
            t.cpu_s,
            opt(t.steady_pct, 2)
        );
        md!(
            w,
            "| peak RSS <= {T_RSS_MIB} MB tracing {} threads | {:.1} MiB | {} | loading: \
             tracing one sleeping thread peaks at {} MiB, bench-floor (one empty program) at \
             {} MiB; RSS at the end {} MiB |",
            t.n,
            mib(t.maxrss_kib),
            met(mib(t.maxrss_kib) <= T_RSS_MIB),
            opt(
                (!start_rss.is_empty()).then(|| median(&start_rss) / 1024.0),
                1
            ),
            opt(median_kib(&r.floor_rss).map(mib), 1),
            opt(t.vmrss_kib.map(mib), 1)
        );
    }
    if let Some(Ok(t)) = &r.large {
        md!(
            w,
            "| 0 dropped events tracing {} threads | {} ({} threads seen) | {} | |",
            t.n,
            t.report.dropped,
            t.report.threads,
            met(t.report.dropped == 0)
        );
    }

    md!(w, "\n## Checks\n");
    for (what, ok) in &r.checks {
        md!(w, "- {}: {what}", if *ok { "OK" } else { "FAILED" });
    }

    md!(w, "\n## Gaps\n");
    md!(
        w,
        "- Per-interval map read time: the binary does not expose it yet, so it is not \
         measured here and no figure is given."
    );
    md!(
        w,
        "- bpf_stats figures come from separate runs with the stats on (they add clock reads \
         to every program run); the runs of section 1 have them off."
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_reads_nested_values() {
        let j =
            Json::parse(r#"{"a": [1, 2.5, -3e2], "b": {"c": "x\"y\u00e9"}, "t": true, "n": null}"#)
                .unwrap();
        assert_eq!(j.at(&["b", "c"]).and_then(Json::str), Some("x\"yé"));
        let a = j.get("a").and_then(Json::arr).unwrap();
        assert_eq!(a[2].num(), Some(-300.0));
        assert_eq!(j.get("t"), Some(&Json::Bool(true)));
        assert!(Json::parse("{\"a\": }").is_err());
        assert!(Json::parse("[1, 2] x").is_err());
    }

    #[test]
    fn bpftool_programs() {
        let p = parse_progs(
            r#"[{"id":7,"type":"tracing","name":"btf_sched_switch","run_time_ns":900,"run_cnt":10},
                {"id":8,"name":"other"}]"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].run_time_ns, Some(900));
        assert!(is_ours(&p[0].name) && !is_ours(&p[1].name));
        assert_eq!(p[1].run_cnt, None);
    }

    #[test]
    fn perf_and_verbose_lines() {
        let perf: Vec<String> = [
            "# Running 'sched/pipe' benchmark:",
            "     Total time: 0.747 [sec]",
            "       3.736105 usecs/op",
            "         267658 ops/sec",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(parse_usecs_per_op(&perf), Some(3.736105));
        let v: Vec<String> = [
            "affin-trace: offsets resolved at 0.5 ms",
            "affin-trace: programs attached (TpBtf) at 86.6 ms",
            "affin-trace: tracing at 89.0 ms",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(verbose_ms(&v, "programs attached"), Some(86.6));
        assert_eq!(verbose_ms(&v, "tracing at"), Some(89.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, 1.0, 3.0]), (1.0, 3.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.5), 1.5);
    }
}
