//! The live view's terminal handling, the one file of `report/` that
//! touches the system (the purity check exempts it): raw mode, the
//! alternate screen, keys through crossterm, the hang-up poll, and the
//! [`Observer`] glue that hands each [`Snapshot`] to the pure
//! [`WatchState`] and asks `host` for "CPU now" of the visible rows.
//!
//! The terminal is restored on every exit path: the quit keys, a signal,
//! the targets' exit or a closed terminal (the session ends the window and
//! drops the [`Watch`]), an error from the session (the same drop), and a
//! panic (a panic hook, chained before the previous one so its message
//! lands on the normal screen). Only SIGKILL, or a SIGTERM in the few
//! milliseconds before the session installs its signal handlers, leaves
//! the terminal raw (`reset` fixes it).

use std::{
    fs::File,
    io::{IsTerminal as _, Stdout},
    mem::ManuallyDrop,
    os::fd::{AsFd as _, BorrowedFd},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    crossterm::{
        cursor::{Hide, Show},
        event::{self, Event},
        execute,
        terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
    },
};
use thiserror::Error;

use super::{KeyAction, WatchState, draw_to};
use crate::{
    analyze::classify::Thresholds,
    collect::session::{Observer, Snapshot},
    host::{Root, procs::task_now},
};

/// Why the live view cannot start.
#[derive(Debug, Error)]
pub enum WatchError {
    /// Stdout is a pipe or a file.
    #[error(
        "--watch needs a terminal, but stdout is not one: drop --watch, or keep stdout on the terminal and send the report to a file with --output FILE"
    )]
    NotATerminal,
    /// No controlling terminal to read keys from.
    #[error("--watch cannot open the terminal /dev/tty to read keys: {0}; run it from a terminal")]
    NoTty(std::io::Error),
    /// Raw mode or the alternate screen could not be set.
    #[error("--watch cannot set up the terminal: {0}; run without --watch")]
    Terminal(std::io::Error),
}

/// The live view on the real terminal.
pub struct Watch {
    state: WatchState,
    /// Dropped by hand: see `Drop for Watch`.
    terminal: ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
    /// The terminal, opened for reading: the session polls it for keys.
    /// crossterm reads the same terminal (stdin, or its own /dev/tty).
    tty: File,
}

/// The terminal is in raw mode on the alternate screen. Global because the
/// panic hook must see it.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Refuses a stdout that is not a terminal (the pure half of
/// [`Watch::new`]'s check, so tests need no terminal).
pub fn check_stdout(is_terminal: bool) -> Result<(), WatchError> {
    if is_terminal {
        Ok(())
    } else {
        Err(WatchError::NotATerminal)
    }
}

impl Watch {
    /// Takes over the terminal (raw mode, alternate screen, hidden cursor)
    /// and draws the empty view; `thresholds` classify the trace so far.
    pub fn new(thresholds: Thresholds) -> Result<Watch, WatchError> {
        check_stdout(std::io::stdout().is_terminal())?;
        let tty = File::open("/dev/tty").map_err(WatchError::NoTty)?;
        install_panic_hook();
        enter().map_err(|e| {
            restore();
            WatchError::Terminal(e)
        })?;
        let mut terminal = match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(WatchError::Terminal(e));
            }
        };
        let _ = terminal.clear();
        let mut w = Watch {
            state: WatchState::new(thresholds),
            terminal: ManuallyDrop::new(terminal),
            tty,
        };
        w.draw();
        Ok(w)
    }

    /// Rows that can be on screen: /proc is read for these only.
    fn visible_rows(&self) -> usize {
        self.terminal.size().map_or(100, |s| usize::from(s.height))
    }

    fn refresh_now(&mut self) {
        let n = self.visible_rows();
        self.state
            .fill_now(n, |tgid, tid| task_now(&Root::host(), tgid, tid));
    }

    /// Draws the view; false when the terminal is gone (hung up).
    fn draw(&mut self) -> bool {
        draw_to(&mut self.terminal, &self.state).is_ok()
    }
}

impl Observer for Watch {
    fn input_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.tty.as_fd())
    }

    fn on_input(&mut self) -> bool {
        // A closed terminal (its window or ssh session gone) polls readable
        // forever, and crossterm 0.29's reader spins on its end-of-file
        // (`read` returning 0 is neither data nor WouldBlock): end the
        // window before asking crossterm.
        if hung_up(self.tty.as_fd()) {
            return false;
        }
        // Everything that arrived, without blocking: the session's poll
        // said the terminal is readable.
        loop {
            match event::poll(Duration::ZERO) {
                Ok(true) => {}
                Ok(false) => break,
                // An unreadable terminal would wake the session's poll
                // forever: end the window instead.
                Err(_) => return false,
            }
            match event::read() {
                Ok(Event::Key(key)) => match self.state.handle_key(key) {
                    KeyAction::Quit => return false,
                    KeyAction::Resorted => self.refresh_now(),
                    KeyAction::Repaint => {
                        let _ = self.terminal.clear();
                    }
                    KeyAction::Ignored => {}
                },
                Ok(_) => {} // resize, mouse, focus: the redraw below fits
                Err(_) => return false,
            }
        }
        self.draw()
    }

    fn on_interval(&mut self, snap: &Snapshot<'_>) -> bool {
        if self.state.intervals == 0 {
            // Start-up lines on stderr (--verbose timings, "continuing
            // without ...") landed on the screen since the first frame; a
            // full repaint removes them. Later ones need Ctrl-L.
            let _ = self.terminal.clear();
        }
        self.state.update(snap);
        self.refresh_now();
        self.draw()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // ratatui's Terminal shows a hidden cursor when dropped and, if it
        // cannot, says so with eprintln!, which panics when stderr is the
        // same closed terminal: the report would be lost. So it is dropped
        // only once the cursor is shown; otherwise its buffers (a few KB,
        // once) are left behind on purpose.
        let shown = self.terminal.show_cursor().is_ok();
        restore();
        if shown {
            // SAFETY: dropped exactly once, here; never used again.
            unsafe { ManuallyDrop::drop(&mut self.terminal) };
        }
    }
}

/// The terminal behind `fd` has hung up (POLLHUP: the pty's other side
/// closed, or a vhangup; n_tty_poll and tty_poll in drivers/tty).
fn hung_up(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL)
        }),
        Err(_) => false,
    }
}

fn enter() -> std::io::Result<()> {
    enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(std::io::stdout(), EnterAlternateScreen, Hide)
}

/// Leaves raw mode and the alternate screen, once: called from `Drop`, the
/// panic hook and failed set-ups. Errors are ignored: a hung-up terminal
/// cannot be restored, and there is nobody to tell.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(std::io::stdout(), Show, LeaveAlternateScreen);
        let _ = disable_raw_mode();
    }
}

/// Restores the terminal before the previous hook prints the panic. Set
/// once per process; a no-op while no view is active.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt as _;

    use super::*;

    #[test]
    fn refuses_a_stdout_that_is_not_a_terminal_in_one_line() {
        assert!(check_stdout(true).is_ok());
        let e = check_stdout(false).unwrap_err().to_string();
        assert!(e.starts_with("--watch needs a terminal"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn a_terminal_whose_other_side_closed_has_hung_up() {
        use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
        // SAFETY: posix_openpt returns a new fd or -1; we own it.
        let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) };
        assert!(raw >= 0, "posix_openpt");
        let master = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut buf = [0 as libc::c_char; 64];
        // SAFETY: calls on the fd we own; ptsname_r writes a NUL-terminated
        // name into `buf` of the length given.
        let name = unsafe {
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), buf.as_mut_ptr(), buf.len()),
                0
            );
            std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .expect("open the pty");
        assert!(!hung_up(slave.as_fd()), "both sides open");
        drop(master);
        assert!(hung_up(slave.as_fd()), "the other side closed");
    }

    #[test]
    fn restore_without_a_view_does_nothing() {
        // Not active: must not touch the (test runner's) terminal.
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }
}
