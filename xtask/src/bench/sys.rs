//! libc calls std does not expose (std links libc; no extra crate needed),
//! and the flag SIGINT/SIGTERM set so that every phase stops cleanly.

use anyhow::{Result, bail};
use std::ffi::{c_int, c_long};
use std::sync::atomic::{AtomicBool, Ordering};

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
