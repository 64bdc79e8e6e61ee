//! The libc calls std does not expose (wait4 with rusage, kill, signal,
//! sysconf), and the flag SIGINT/SIGTERM set so that every phase stops
//! cleanly.

use anyhow::{Result, bail};
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, Ordering};

pub use libc::{SIGINT, rusage as Rusage, timeval as Timeval};

pub fn send(pid: u32, sig: c_int) {
    // SAFETY: kill(2) has no memory effects; a stale pid is harmless here
    // because callers only signal children they have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Blocks until `pid` (a child) exits; its raw status and rusage.
pub fn wait_rusage(pid: u32) -> std::io::Result<(c_int, Rusage)> {
    let mut status: c_int = 0;
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: Rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the call.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == pid as libc::pid_t {
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
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
