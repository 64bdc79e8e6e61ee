//! `affin-trace -- <command>`: start a command held at a gate, so tracing
//! covers it from its first instruction, as `perf stat` does.
//!
//! The child is forked and blocks reading a pipe before it calls execvp; the
//! parent marks the child's pid as a target, then opens the gate. The
//! thread-group id survives exec, so nothing the command runs is missed. A
//! second close-on-exec pipe carries an exec failure's errno back.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::wait::{WaitPidFlag, WaitStatus, waitpid},
    unistd::{ForkResult, Pid, fork, pipe2},
};

/// Why the command could not be run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Empty command line.
    #[error("no command given after --")]
    Empty,
    /// An argument holds a NUL byte.
    #[error("command argument {0:?} contains a NUL byte")]
    Nul(String),
    /// fork or pipe failed.
    #[error("cannot start the command: {0}")]
    Spawn(Errno),
    /// execvp failed in the child.
    #[error("cannot run {cmd:?}: {errno} (is it installed and on PATH?)")]
    Exec {
        /// argv[0].
        cmd: String,
        /// Why.
        errno: Errno,
    },
}

/// A forked child waiting at the gate.
pub struct GatedChild {
    pid: Pid,
    gate: Option<OwnedFd>,
    exec_err: Option<OwnedFd>,
    argv0: String,
    status: Option<i32>,
}

/// Forks `argv` held before exec.
pub fn spawn_gated(argv: &[String]) -> Result<GatedChild, CommandError> {
    spawn_gated_with_env(argv, &[])
}

/// [`spawn_gated`], with `env` set over our environment for the command
/// (`--verify-fix` runs it with `GOMAXPROCS=1` and the like).
pub fn spawn_gated_with_env(
    argv: &[String],
    env: &[(String, String)],
) -> Result<GatedChild, CommandError> {
    let argv0 = argv.first().ok_or(CommandError::Empty)?.clone();
    let cstr = |a: &str| CString::new(a).map_err(|_| CommandError::Nul(a.to_string()));
    let cargs = argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    // Built before the fork: the child may not allocate.
    let cenv = if env.is_empty() {
        None
    } else {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
            .collect();
        vars.extend(env.iter().cloned());
        Some(
            vars.iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let (gate_r, gate_w) = pipe2(OFlag::O_CLOEXEC).map_err(CommandError::Spawn)?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(CommandError::Spawn)?;
    // SAFETY: the child only calls async-signal-safe functions (read, write,
    // execvp, _exit) on memory prepared before the fork.
    match unsafe { fork() }.map_err(CommandError::Spawn)? {
        ForkResult::Child => {
            drop(gate_w);
            drop(err_r);
            let mut b = [0u8; 1];
            // SAFETY: plain read(2) into a local buffer.
            let n = unsafe { libc::read(gate_r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            if n != 1 {
                // The parent went away or gave up: never run untraced.
                unsafe { libc::_exit(125) };
            }
            let errno = match &cenv {
                Some(e) => nix::unistd::execvpe(&cargs[0], &cargs, e).unwrap_err(),
                None => nix::unistd::execvp(&cargs[0], &cargs).unwrap_err(),
            };
            let code = (errno as i32).to_ne_bytes();
            // SAFETY: write(2) of a local buffer, then _exit.
            unsafe {
                libc::write(err_w.as_raw_fd(), code.as_ptr().cast(), code.len());
                libc::_exit(127)
            }
        }
        ForkResult::Parent { child } => Ok(GatedChild {
            pid: child,
            gate: Some(gate_w),
            exec_err: Some(err_r),
            argv0,
            status: None,
        }),
    }
}

impl GatedChild {
    /// The child's pid (= its tgid after exec).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Opens the gate and waits until exec succeeded or failed.
    pub fn release(&mut self) -> Result<(), CommandError> {
        if let Some(gate) = self.gate.take() {
            let _ = nix::unistd::write(&gate, &[1u8]);
        }
        if let Some(err_r) = self.exec_err.take() {
            let mut buf = [0u8; 4];
            // EOF (0 bytes): the close-on-exec pipe closed, exec succeeded.
            if let Ok(4) = nix::unistd::read(&err_r, &mut buf) {
                let errno = Errno::from_raw(i32::from_ne_bytes(buf));
                let _ = self.wait();
                return Err(CommandError::Exec {
                    cmd: self.argv0.clone(),
                    errno,
                });
            }
        }
        Ok(())
    }

    /// The exit status as a shell reports it (128 + signal), once it exited.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(s) => shell_status(s),
                Err(_) => Some(127),
            };
        }
        self.status
    }

    /// Waits for the exit status.
    pub fn wait(&mut self) -> i32 {
        while self.status.is_none() {
            self.status = match waitpid(self.pid, None) {
                Ok(s) => shell_status(s),
                Err(Errno::EINTR) => None,
                Err(_) => Some(127),
            };
        }
        self.status.unwrap_or(127)
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // A child still at the gate exits on EOF (the gate closes with us);
        // a running one is left alone, like any command we did not start.
        if self.gate.is_some() {
            self.gate = None;
            let _ = self.wait();
        }
    }
}

fn shell_status(s: WaitStatus) -> Option<i32> {
    match s {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_passes_through() {
        let mut c = spawn_gated(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        c.release().unwrap();
        assert_eq!(c.wait(), 7);
    }

    #[test]
    fn the_child_waits_at_the_gate() {
        let mut c = spawn_gated(&["true".into()]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(c.try_wait(), None, "ran before the gate opened");
        c.release().unwrap();
        assert_eq!(c.wait(), 0);
    }

    #[test]
    fn a_missing_program_is_a_clear_error() {
        let mut c = spawn_gated(&["/nonexistent/affin-trace-test".into()]).unwrap();
        let err = c.release().unwrap_err().to_string();
        assert!(err.contains("cannot run"), "{err}");
        assert!(err.contains("ENOENT"), "{err}");
    }

    #[test]
    fn a_signal_maps_to_128_plus_signo() {
        let mut c = spawn_gated(&["sh".into(), "-c".into(), "kill -TERM $$".into()]).unwrap();
        c.release().unwrap();
        assert_eq!(c.wait(), 128 + 15);
    }

    #[test]
    fn empty_command_is_refused() {
        assert!(matches!(spawn_gated(&[]), Err(CommandError::Empty)));
    }
}
