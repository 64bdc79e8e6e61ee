//! What a trace window waits on, as tokio sources for its one
//! current-thread event loop ([`crate::collect::window`]): termination
//! signals, the targets' exits (pidfds), and readable fds (the ring
//! buffers, the live view's terminal).
//!
//! A pidfd is readable once its process has exited, and epoll reports it
//! at once, so the window ends within microseconds of the target's exit (a
//! late end would add an idle tail to the last interval and skew the CPU
//! variance), and the tool does not wake up between intervals for nothing.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd},
    sync::{
        Once,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::unix::AsyncFd,
    runtime::Runtime,
    signal::unix::{Signal, SignalKind, signal},
};

/// The one runtime of a window: current-thread, so the handlers run on the
/// thread that owns the [`crate::kernel::probe::Probe`], with no locks; IO
/// for the fds and time for the interval.
pub fn runtime() -> io::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
}

/// The termination signals: SIGINT, SIGTERM, SIGHUP.
pub const TERMINATION: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Termination signals counted since [`count_signals`] first ran.
static SEEN: AtomicUsize = AtomicUsize::new(0);
static COUNTING: Once = Once::new();

/// From now on, counts every termination signal and keeps the process
/// alive through them (the handler replaces the default action, which is
/// to die). Called by a flow before anything that a signal must not cut
/// short without a report; idempotent. A signal that comes between this and
/// [`Signals::new`] is not lost: the window sees it and ends at once.
pub fn count_signals() -> io::Result<()> {
    let mut result = Ok(());
    COUNTING.call_once(|| {
        for sig in TERMINATION {
            // SAFETY: the action only does an atomic add, which is
            // async-signal-safe.
            let r = unsafe {
                signal_hook::low_level::register(sig, || {
                    SEEN.fetch_add(1, Ordering::SeqCst);
                })
            };
            if let Err(e) = r {
                result = Err(e);
                return;
            }
        }
    });
    result
}

/// How many termination signals came since [`count_signals`] (0 when it
/// never ran).
pub fn signals_seen() -> usize {
    SEEN.load(Ordering::SeqCst)
}

/// SIGINT, SIGTERM and SIGHUP: from [`Signals::new`] on, they end the
/// window instead of the process (Ctrl-C, kill, a closed terminal), so the
/// report and the programs' detachment still happen. Made inside the
/// runtime's context (`Runtime::enter`).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    /// A signal [`count_signals`] caught before these handlers existed.
    early: bool,
}

impl Signals {
    /// Registers the handlers. A signal that arrives before the loop
    /// first waits is kept, and ends the window at once; so does one that
    /// came earlier, while [`count_signals`] was already counting.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            early: signals_seen() > 0,
        })
    }

    /// Waits for any of the three.
    pub async fn recv(&mut self) {
        if std::mem::take(&mut self.early) {
            return;
        }
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1; we own the fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The targets' exits. Processes already gone when watched are left out.
pub struct Exits {
    pidfds: Vec<AsyncFd<OwnedFd>>,
}

impl Exits {
    /// Watches `pids` (inside the runtime's context).
    pub fn watch(pids: &[u32]) -> Exits {
        Exits {
            pidfds: pids
                .iter()
                .filter_map(|&p| pidfd_open(p))
                .filter_map(|fd| register(fd).ok())
                .collect(),
        }
    }

    /// True once every watched process has exited.
    pub fn all_exited(&self) -> bool {
        self.pidfds.is_empty()
    }

    /// Waits until every watched process has exited. Cancel-safe: a
    /// process seen gone is dropped from the set, and a pidfd stays
    /// readable, so waiting again resumes where this left off.
    pub async fn all(&mut self) {
        while let Some(fd) = self.pidfds.last() {
            let _ = fd.readable().await;
            self.pidfds.pop();
        }
    }
}

/// A readable-fd source on a duplicate of `fd` (the original stays with
/// its owner, which reads it: a ring buffer, the terminal).
pub fn readable(fd: BorrowedFd<'_>) -> io::Result<AsyncFd<OwnedFd>> {
    register(fd.try_clone_to_owned()?)
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd` and nothing else closes or replaces
    // it while registered (it is closed when the AsyncFd drops, after
    // deregistering).
    Ok(unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? })
}

/// Waits until `fd` is readable, then marks it drained: the caller reads
/// everything there is before it waits again (epoll is edge-triggered
/// under tokio; a new arrival during the read is not lost, tokio keeps it).
pub async fn wait_readable<T: AsRawFd>(fd: &AsyncFd<T>) {
    if let Ok(mut guard) = fd.readable().await {
        guard.clear_ready();
    }
}

/// A sleep that a termination signal cuts short (the benchmark floor:
/// attached until told to stop). The handlers are in place from
/// [`Sleeper::new`] on.
pub struct Sleeper {
    rt: Runtime,
    signals: Signals,
}

impl Sleeper {
    /// Registers the handlers.
    pub fn new() -> io::Result<Sleeper> {
        let rt = runtime()?;
        let signals = {
            let _in = rt.enter();
            Signals::new()?
        };
        Ok(Sleeper { rt, signals })
    }

    /// Sleeps for `d` or until a signal.
    pub fn sleep(mut self, d: Duration) {
        let signals = &mut self.signals;
        self.rt.block_on(async {
            tokio::select! {
                () = signals.recv() => {}
                () = tokio::time::sleep(d) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn wakes_at_exit_not_at_timeout() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let rt = runtime().unwrap();
        let t = Instant::now();
        let exited = rt.block_on(async {
            let mut exits = Exits::watch(&[child.id()]);
            tokio::select! {
                () = exits.all() => exits.all_exited(),
                () = tokio::time::sleep(Duration::from_secs(10)) => false,
            }
        });
        assert!(exited);
        assert!(t.elapsed() < Duration::from_secs(2));
        child.wait().unwrap();
    }

    #[test]
    fn times_out_while_the_process_lives() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let rt = runtime().unwrap();
        let timed_out = rt.block_on(async {
            let mut exits = Exits::watch(&[child.id()]);
            let r = tokio::select! {
                () = exits.all() => false,
                () = tokio::time::sleep(Duration::from_millis(50)) => true,
            };
            r && !exits.all_exited()
        });
        assert!(timed_out);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// A signal between the flow's start and the window's own handlers
    /// (loading, attaching) ends the window at once instead of being
    /// swallowed: CI once saw the window run its whole 30 s after one.
    #[test]
    fn a_signal_before_the_window_handlers_ends_the_window_at_once() {
        count_signals().unwrap();
        count_signals().unwrap();
        let before = signals_seen();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(signals_seen() > before);
        let rt = runtime().unwrap();
        let ended = rt.block_on(async {
            let mut signals = Signals::new().unwrap();
            tokio::select! {
                () = signals.recv() => true,
                () = tokio::time::sleep(Duration::from_secs(5)) => false,
            }
        });
        assert!(ended, "the early signal was lost");
    }
}
