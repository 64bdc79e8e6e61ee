//! Ctrl-C, SIGTERM or SIGHUP before an apply starts cancels it.
//!
//! The session's own handlers end the trace window on these signals and it
//! still reports (README, "Ending the window"). With `--apply` that report
//! rests on a truncated window, so the apply must not follow: this records
//! which signal came, from before the window opens until the apply starts,
//! and wakes the y/N question so a Ctrl-C there cancels too. Handlers added
//! with signal-hook run alongside the session's (they chain), so neither
//! replaces the other.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    os::{fd::AsFd as _, unix::net::UnixStream},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use signal_hook::SigId;

use crate::collect::wake;

/// Records the first termination signal; unregisters on drop.
pub struct Cancel {
    signal: Arc<AtomicUsize>,
    wake: UnixStream,
    ids: Vec<SigId>,
}

impl Cancel {
    /// Starts listening.
    pub fn new() -> std::io::Result<Cancel> {
        let signal = Arc::new(AtomicUsize::new(0));
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let mut ids = Vec::new();
        for sig in wake::TERMINATION {
            // The first signal wins: a SIGHUP after a Ctrl-C still exits 130.
            let flag = Arc::clone(&signal);
            // SAFETY: the action only does an atomic compare-exchange,
            // which is async-signal-safe.
            ids.push(unsafe {
                signal_hook::low_level::register(sig, move || {
                    let _ =
                        flag.compare_exchange(0, sig as usize, Ordering::SeqCst, Ordering::SeqCst);
                })
            }?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                write.try_clone()?,
            )?);
        }
        Ok(Cancel {
            signal,
            wake: read,
            ids,
        })
    }

    /// The signal that came, if any.
    pub fn signal(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// Asks `question` on the terminal. `Ok(true)` for yes, `Ok(false)` for
    /// anything else, `Err(signal)` when a termination signal came first.
    pub fn ask(&self, question: &str) -> Result<bool, i32> {
        if let Some(s) = self.signal() {
            return Err(s);
        }
        eprint!("{question} [y/N] ");
        let _ = std::io::stderr().flush();
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            // read_line would sit through a Ctrl-C (the handlers restart
            // the read): wait for the line or the signal, whichever first.
            loop {
                let mut fds = [
                    PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::NONE);
                if let Some(s) = self.signal() {
                    eprintln!();
                    return Err(s);
                }
                if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                    break;
                }
            }
        }
        let mut line = String::new();
        let _ = stdin.lock().read_line(&mut line);
        if let Some(s) = self.signal() {
            return Err(s);
        }
        Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Tells when a termination signal comes after the one that ended the
/// window (or any after a window that ran to its end), so that it stops
/// the timeline's writing: without it, the tokio handlers the window
/// installed keep catching the signals and the tool would sit through them
/// until a long write ends. Counts through [`wake::count_signals`], which
/// also lets the window see a signal that came before its own handlers.
#[derive(Clone)]
pub struct SecondSignal {
    /// Signals seen when the window ended (`usize::MAX` until then).
    at_end: Arc<AtomicUsize>,
}

impl SecondSignal {
    /// Starts counting.
    pub fn new() -> std::io::Result<SecondSignal> {
        wake::count_signals()?;
        Ok(SecondSignal {
            at_end: Arc::new(AtomicUsize::new(usize::MAX)),
        })
    }

    /// The window is over: from now on any further signal stops.
    pub fn window_over(&self) {
        self.at_end.store(wake::signals_seen(), Ordering::SeqCst);
    }

    /// True once a second signal came, or one after the window was over.
    pub fn stopped(&self) -> bool {
        stops(wake::signals_seen(), self.at_end.load(Ordering::SeqCst))
    }
}

/// `n` signals so far, `at_end` of them when the window ended: the first
/// ends the window, the next one stops.
fn stops(n: usize, at_end: usize) -> bool {
    n >= 2 || n > at_end
}

/// The signal's name, for messages ("SIGINT").
pub fn name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The exit status after a signal cancelled an apply: 128 + its number, as
/// a shell reports a process the signal killed.
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_signal_stops_and_after_the_window_the_first() {
        const OPEN: usize = usize::MAX;
        assert!(!stops(0, OPEN));
        assert!(!stops(1, OPEN), "the first signal only ends the window");
        assert!(stops(2, OPEN));
        assert!(!stops(1, 1), "the one that ended the window");
        assert!(stops(2, 1));
        assert!(!stops(0, 0));
        assert!(stops(1, 0), "after a window that ran to its end");
        // Real signals are counted (other tests raise SIGHUP too: at least).
        let _keep = Cancel::new().unwrap();
        let s = SecondSignal::new().unwrap();
        for _ in 0..2 {
            nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        }
        assert!(s.clone().stopped());
    }

    #[test]
    fn exit_codes_and_names_follow_the_shell() {
        assert_eq!(exit_code(libc::SIGINT), 130);
        assert_eq!(exit_code(libc::SIGTERM), 143);
        assert_eq!(exit_code(libc::SIGHUP), 129);
        assert_eq!(name(libc::SIGINT), "SIGINT");
    }

    #[test]
    fn a_signal_is_recorded_and_the_first_one_wins() {
        let c = Cancel::new().unwrap();
        assert_eq!(c.signal(), None);
        // SIGHUP to ourselves: the session's handlers are not installed in
        // this test, ours are, so the process lives on.
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        assert_eq!(c.signal(), Some(libc::SIGHUP));
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        assert_eq!(c.signal(), Some(libc::SIGHUP));
        assert_eq!(c.ask("go?"), Err(libc::SIGHUP));
    }
}
