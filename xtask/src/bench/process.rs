//! Child processes (output collected line by line, stopped on every path),
//! sysctls changed during the run (restored on every path) and the scratch
//! directory.

use super::sys::{self, check_interrupted};
use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub lines: mpsc::Receiver<(bool, String)>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub started: Instant,
    pub reaped: bool,
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
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        program: &Path,
        args: &[S],
    ) -> Result<Proc> {
        Self::spawn_env(name, program, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables.
    pub fn spawn_env<S: AsRef<std::ffi::OsStr>>(
        name: &str,
        program: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        check_interrupted()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
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

    pub fn drain(&mut self) {
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

    pub fn output_tail(&self) -> String {
        let all: Vec<&String> = self.stdout.iter().chain(&self.stderr).collect();
        let tail = &all[all.len().saturating_sub(8)..];
        tail.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Waits for a line containing `needle` (on stderr or stdout); returns
    /// it and when it arrived, counted from the spawn.
    pub fn wait_line(
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

    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
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
    pub fn wait_rusage(&mut self, timeout: Duration) -> Result<(ExitStatus, sys::Rusage)> {
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
    pub fn stop_rusage(&mut self) -> Result<(ExitStatus, sys::Rusage)> {
        sys::send(self.pid(), sys::SIGINT);
        self.wait_rusage(Duration::from_secs(20))
    }

    /// SIGINT (the tracers' normal stop), then waits for the exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if !self.reaped {
            sys::send(self.pid(), sys::SIGINT);
        }
        self.wait(Duration::from_secs(20))
    }

    pub fn ok(&self, status: ExitStatus) -> Result<()> {
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

// Sysctls changed during the run, restored on every path.

pub struct Sysctl {
    path: &'static str,
    pub original: String,
    changed: bool,
}

impl Sysctl {
    pub fn new(path: &'static str) -> Result<Sysctl> {
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

/// The state letter of /proc/<pid>/stat (None: no such process).
pub fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?.1.trim_start().chars().next()
}
