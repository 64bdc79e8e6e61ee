//! Sleeping until something matters: the next interval, a target's exit, or
//! a signal. One poll(2) on pidfds and a signal self-pipe, so the window
//! ends within microseconds of the target's exit (a late end would add an
//! idle tail to the last interval and skew the CPU variance) and the tool
//! does not wake up between intervals for nothing.

use std::{
    os::{
        fd::{AsFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
    time::Duration,
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// The timeout passed.
    Timeout,
    /// SIGINT, SIGTERM or SIGHUP arrived.
    Signal,
    /// Every watched process has exited.
    AllExited,
    /// The extra input fd (a live view's terminal) is readable.
    Input,
}

/// Watches processes and termination signals.
pub struct Waiter {
    pidfds: Vec<OwnedFd>,
    signals: UnixStream,
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1; we own the fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Waiter {
    /// Registers the termination signals: from here on they end the wait
    /// instead of the process.
    pub fn new() -> std::io::Result<Waiter> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(Waiter {
            pidfds: Vec::new(),
            signals: read,
        })
    }

    /// Watches `pids` (those already gone are left out).
    pub fn watch(&mut self, pids: &[u32]) {
        self.pidfds
            .extend(pids.iter().filter_map(|&p| pidfd_open(p)));
    }

    /// Waits up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        self.wait_with(timeout, None)
    }

    /// Waits up to `timeout`, also for `input` to become readable.
    pub fn wait_with(&mut self, timeout: Duration, input: Option<BorrowedFd<'_>>) -> Wake {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let mut fds: Vec<PollFd> = std::iter::once(self.signals.as_fd())
            .chain(self.pidfds.iter().map(|f| f.as_fd()))
            .chain(input)
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let n = match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => n,
            // A signal without our pipe (e.g. SIGCHLD) interrupted: let the
            // caller re-check its clock.
            Err(_) => return Wake::Timeout,
        };
        if n == 0 {
            return Wake::Timeout;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if ready[0] {
            return Wake::Signal;
        }
        if input.is_some() && ready[ready.len() - 1] {
            return Wake::Input;
        }
        let mut i = 0;
        self.pidfds.retain(|_| {
            i += 1;
            !ready[i]
        });
        if self.pidfds.is_empty() {
            Wake::AllExited
        } else {
            Wake::Timeout
        }
    }

    /// True once every watched process has exited.
    pub fn all_exited(&self) -> bool {
        self.pidfds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_at_exit_not_at_timeout() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let mut w = Waiter::new().unwrap();
        w.watch(&[child.id()]);
        let t = std::time::Instant::now();
        assert_eq!(w.wait(Duration::from_secs(10)), Wake::AllExited);
        assert!(t.elapsed() < Duration::from_secs(2));
        child.wait().unwrap();
    }

    #[test]
    fn times_out_while_the_process_lives() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let mut w = Waiter::new().unwrap();
        w.watch(&[child.id()]);
        assert_eq!(w.wait(Duration::from_millis(50)), Wake::Timeout);
        assert!(!w.all_exited());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
