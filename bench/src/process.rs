//! Child processes (output collected line by line, stopped on every path),
//! sysctls changed during the run (restored on every path), the scratch
//! directory, and the flag SIGINT/SIGTERM set so that every phase stops
//! cleanly.

use anyhow::{Context as _, Result, bail};
use procfs::process::Process;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

pub use libc::rusage as Rusage;

static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// SIGINT and SIGTERM set the flag [`check_interrupted`] reads.
pub fn on_stop_signals() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register(sig, INTERRUPTED.clone()).context("signal handler")?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

fn sigint(pid: u32) {
    // SAFETY: kill(2) has no memory effects; callers only signal children
    // they have not reaped, so the pid is theirs.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
}

/// Blocks until `pid` (a child) exits; its raw status and rusage.
fn wait4(pid: u32) -> std::io::Result<(i32, Rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: Rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the call.
        if unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) } == pid as i32 {
            return Ok((status, ru));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Peak RSS of a reaped child, KiB.
pub fn maxrss_kib(ru: &Rusage) -> u64 {
    ru.ru_maxrss.max(0) as u64
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub lines: mpsc::Receiver<(bool, String)>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub started: Instant,
    reaped: bool,
}

fn spawn_reader(r: impl Read + Send + 'static, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while matches!(r.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            if tx.send((is_err, line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
}

impl Proc {
    /// Starts `program args` with `env` added, stdin closed, output read.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        program: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        check_interrupted()?;
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {name} ({})", program.display()))?;
        let (tx, rx) = mpsc::channel();
        spawn_reader(child.stdout.take().expect("piped"), false, tx.clone());
        spawn_reader(child.stderr.take().expect("piped"), true, tx);
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn push(&mut self, (is_err, line): (bool, String)) {
        if is_err {
            self.stderr.push(line);
        } else {
            self.stdout.push(line);
        }
    }

    /// Collects output until `end`, or none left now (without `end`).
    fn drain(&mut self, end: Option<Instant>) {
        loop {
            let line = match end {
                None => self.lines.try_recv().ok(),
                Some(end) => end
                    .checked_duration_since(Instant::now())
                    .and_then(|left| self.lines.recv_timeout(left).ok()),
            };
            match line {
                Some(l) => self.push(l),
                None => return,
            }
        }
    }

    pub fn output_tail(&self) -> String {
        let all: Vec<&str> = self
            .stdout
            .iter()
            .chain(&self.stderr)
            .map(|s| s.as_str())
            .collect();
        all[all.len().saturating_sub(8)..].join(" | ")
    }

    /// Waits for a line containing `needle` (on stderr or stdout); when it
    /// arrived, counted from the spawn.
    pub fn wait_line(
        &mut self,
        on_stderr: bool,
        needle: &str,
        timeout: Duration,
    ) -> Result<Duration> {
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
                    self.push((is_err, line));
                    if hit {
                        return Ok(at);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let (status, _) = self.wait(Duration::from_secs(5))?;
                    bail!(
                        "{} exited ({status}) before printing {needle:?}; output: {}",
                        self.name,
                        self.output_tail()
                    );
                }
            }
        }
    }

    /// Waits (up to `timeout`) for the exit, then reaps with `wait4`: the
    /// exit status and the child's own rusage.
    pub fn wait(&mut self, timeout: Duration) -> Result<(ExitStatus, Rusage)> {
        let end = Instant::now() + timeout;
        // A zombie keeps its /proc entry until reaped: poll for it, so that
        // the blocking wait4 below returns at once.
        while proc_state(self.pid()).is_some_and(|s| s != 'Z') {
            self.drain(None);
            check_interrupted()?;
            if Instant::now() >= end {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (raw, ru) = wait4(self.pid()).with_context(|| format!("wait4 on {}", self.name))?;
        self.reaped = true;
        // The rest of the output (bounded: a grandchild may hold the pipes).
        self.drain(Some(Instant::now() + Duration::from_secs(2)));
        Ok((ExitStatus::from_raw(raw), ru))
    }

    /// [`Proc::wait`], failing unless it exits 0.
    pub fn wait_ok(&mut self, timeout: Duration) -> Result<Rusage> {
        let (status, ru) = self.wait(timeout)?;
        if !status.success() {
            bail!(
                "{} failed ({status}); output: {}",
                self.name,
                self.output_tail()
            );
        }
        Ok(ru)
    }

    /// SIGINT (the tracers' normal stop), then [`Proc::wait_ok`].
    pub fn stop_ok(&mut self) -> Result<Rusage> {
        sigint(self.pid());
        self.wait_ok(Duration::from_secs(20))
    }

    /// SIGINT, then waits for the exit, whatever its status.
    pub fn stop(&mut self) -> Result<()> {
        if !self.reaped {
            sigint(self.pid());
            self.wait(Duration::from_secs(20))?;
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        sigint(self.pid());
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

/// The state letter of /proc/<pid>/stat (None: no such process).
fn proc_state(pid: u32) -> Option<char> {
    let stat = Process::new(pid as i32).ok()?.stat().ok()?;
    Some(stat.state)
}

/// CPU time (utime + stime) of a process so far, s.
pub fn cpu_s(pid: u32) -> procfs::ProcResult<f64> {
    let stat = Process::new(pid as i32)?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// A sysctl changed during the run, restored on every path.
pub struct Sysctl {
    path: &'static str,
    pub original: String,
    changed: bool,
}

impl Sysctl {
    pub fn new(path: &'static str) -> Result<Sysctl> {
        let original = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let original = original.trim().to_string();
        Ok(Sysctl {
            path,
            original,
            changed: false,
        })
    }

    pub fn set(&mut self, value: &str) -> Result<()> {
        self.changed = true;
        std::fs::write(self.path, value)
            .with_context(|| format!("writing {value} to {}", self.path))
    }

    pub fn restore(&mut self) -> Result<()> {
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

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
