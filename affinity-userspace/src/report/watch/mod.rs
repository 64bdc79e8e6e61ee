//! `--watch`: a live terminal view of a running window, redrawn after each
//! interval's map read. A [`Observer`]: the session calls it after
//! each interval and whenever the terminal has input.
//!
//! - [`state`]: plain figures per interval from each [`Snapshot`] (pure);
//! - [`view`]: draws them with ratatui (pure; tested on `TestBackend`);
//! - here: the terminal (raw mode, alternate screen, keys through
//!   crossterm) and the one kernel-touching read, "CPU now" and the current
//!   name per thread (`/proc/<tgid>/task/<tid>/stat`: field 39, `processor`,
//!   and field 2, `comm`).
//!
//! The terminal is restored on every exit path: the quit keys, a signal,
//! the targets' exit or a closed terminal (the session ends the window and
//! drops the [`Watch`]), an error from the session (the same drop), and a
//! panic (a panic hook, chained before the previous one so its message
//! lands on the normal screen). Only SIGKILL, or a SIGTERM in the few
//! milliseconds before the session installs its signal handlers, leaves
//! the terminal raw (`reset` fixes it).

pub mod state;
pub mod view;

use std::{
    fs::File,
    io::{IsTerminal as _, Stdout},
    mem::ManuallyDrop,
    os::fd::{AsFd as _, BorrowedFd},
    path::Path,
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use procfs::process::Process;
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

pub use self::{
    state::{KeyAction, SortKey, TaskNow, WatchState},
    view::{draw_to, render},
};
use crate::{
    analyze::classify::Thresholds,
    collect::session::{Observer, Snapshot},
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
            .fill_now(n, |tgid, tid| task_now(Path::new("/proc"), tgid, tid));
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

/// The CPU thread `tid` of process `tgid` last ran on and its name, from
/// `<proc_root>/<tgid>/task/<tid>/stat` fields 39 and 2 (proc(5):
/// `processor`, `comm`); `None` when the thread is gone. The procfs crate
/// parses the line, so a name holding spaces or ')' does not shift the
/// fields.
pub fn task_now(proc_root: &Path, tgid: u32, tid: u32) -> Option<TaskNow> {
    let process = Process::new_with_root(proc_root.join(tgid.to_string())).ok()?;
    let stat = process
        .task_from_tid(i32::try_from(tid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some(TaskNow {
        cpu: stat.processor.and_then(|p| u32::try_from(p).ok())?,
        comm: stat.comm,
    })
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

    /// A stat line as Linux 6.x writes it (52 fields), for a thread whose
    /// name holds a space and a ')', last run on CPU 3.
    fn stat_line(tid: u32) -> String {
        let mut f: Vec<String> = vec![tid.to_string(), "(we) ird)".into(), "R".into()];
        // Fields 4..=52; 39 (processor) is index 38.
        f.extend((4..=52).map(|i| if i == 39 { "3".into() } else { "0".into() }));
        f.join(" ") + "\n"
    }

    #[test]
    fn task_now_reads_cpu_and_name_from_the_task_stat() {
        let dir = tempfile::tempdir().expect("tempdir");
        let task = dir.path().join("4242/task/4243");
        std::fs::create_dir_all(&task).expect("mkdir");
        std::fs::write(task.join("stat"), stat_line(4243)).expect("write");
        let now = task_now(dir.path(), 4242, 4243).expect("read");
        assert_eq!(now.cpu, 3);
        assert_eq!(now.comm, "we) ird");
        assert_eq!(task_now(dir.path(), 4242, 4244), None, "an exited thread");
        assert_eq!(task_now(dir.path(), 4241, 4243), None, "an exited process");
    }

    #[test]
    fn task_now_of_a_live_thread_is_an_online_cpu_and_its_name() {
        let now = std::thread::Builder::new()
            .name("watch-probe".into())
            .spawn(|| {
                let tid = nix::unistd::gettid().as_raw() as u32;
                task_now(Path::new("/proc"), std::process::id(), tid)
            })
            .expect("spawn")
            .join()
            .expect("join")
            .expect("its stat");
        assert_eq!(now.comm, "watch-probe");
        let online = crate::model::cpulist::parse(
            &std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online"),
        )
        .expect("cpu list");
        assert!(online.contains(&now.cpu), "{} not in {online:?}", now.cpu);
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
