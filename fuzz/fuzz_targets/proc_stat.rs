//! /proc/<pid>/stat through `procfs::process::Stat` (what procs.rs uses for
//! comm, state, start time and flags), with hostile comm names: any bytes
//! but NUL, such as `a) (b`, `) S 1 2`, newlines or invalid UTF-8. The
//! kernel prints comm unescaped (`proc_task_name(m, task, false)` in
//! fs/proc/array.c), so the parser must find the *last* ')'. Every line is
//! kernel-shaped (see affinity_fuzz::StatLine) and must parse to exactly
//! the values printed.
#![no_main]

use affinity::host::procs::{comm_bytes, comm_str};
use affinity_fuzz::StatLine;
use libfuzzer_sys::fuzz_target;
use procfs::FromRead as _;

fuzz_target!(|data: &[u8]| {
    let l = StatLine::from_fuzz(data);
    let s = match procfs::process::Stat::from_read(&l.line[..]) {
        Ok(s) => s,
        Err(e) => panic!(
            "kernel-shaped stat line rejected: {e}\n{:?}",
            String::from_utf8_lossy(&l.line)
        ),
    };
    assert_eq!(s.comm, String::from_utf8_lossy(&l.comm), "comm");
    assert_eq!(s.pid, l.pid, "pid");
    assert_eq!(s.state, l.state, "state");
    assert_eq!(i128::from(s.ppid), l.fields[0], "ppid");
    assert_eq!(i128::from(s.flags), l.fields[5], "flags");
    assert_eq!(i128::from(s.starttime), l.fields[18], "starttime");
    assert_eq!(i128::from(s.rss), l.fields[20], "rss");
    assert_eq!(s.exit_code.map(i128::from), Some(l.fields[48]), "exit_code");
    // procs.rs keeps comm as the kernel's 16 NUL-padded bytes: a comm
    // that fits (TASK_COMM_LEN - 1 bytes of UTF-8) comes back unchanged.
    let back = comm_str(&comm_bytes(&s.comm));
    if std::str::from_utf8(&l.comm).is_ok() && l.comm.len() <= 15 {
        assert_eq!(back, s.comm, "comm_bytes/comm_str round trip");
    }
});
