//! Input formats shared by the fuzz targets (`fuzz_targets/*.rs`).
//!
//! Most targets take one file's bytes. Three shapes need more:
//!
//! - **Tree** ([`Tree`]): several files under a root-path seam, for
//!   `cgroup::resolve`, `topology::allowed_cpus` and `Topology::read`. The
//!   input is records `PATH NUL CONTENT NUL ...` (kernel text never holds a
//!   NUL); each file is written under a fresh directory in /dev/shm. Paths
//!   are relative, `.`/`..` and empty components are dropped, so the fuzzer
//!   only writes inside that directory. The code under test may still *read*
//!   outside it when a fuzzed cgroup path climbs out with `..` (as real
//!   `/proc/<pid>/cgroup` lines do across cgroup namespaces): it only ever
//!   reads fixed cgroup file names there.
//! - **Chunks** ([`chunks`]): NUL-separated file bodies in a fixed order.
//! - **Stat line** ([`StatLine`]): `/proc/<pid>/stat` as the kernel prints
//!   it, with the fuzzer choosing the comm (any bytes but NUL, up to 64) and
//!   every number. The kernel writes everything but comm, so this is the
//!   input space a hostile process controls.
//!
//! `cargo xtask fuzz` writes its seeds in these formats (xtask/src/fuzz.rs).

use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// The pid every tree input describes (the fixtures under tests/ use it too).
pub const PID: u32 = 4242;

/// At most this many files per tree input.
const MAX_FILES: usize = 4096;
/// At most this many path components (sysfs paths have about 8).
const MAX_DEPTH: usize = 24;

/// A directory tree written from a tree input; removed on drop.
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// Writes the records of `data` under `<new dir>/<prefix>`.
    pub fn new(data: &[u8], prefix: &str) -> Tree {
        let dir = tempfile::Builder::new()
            .prefix("affin-fuzz-")
            .tempdir_in(scratch())
            .expect("a writable scratch directory (/dev/shm or $TMPDIR)");
        let base = dir.path().join(prefix);
        let mut it = data.split(|&b| b == 0);
        let mut files = 0;
        while let (Some(path), Some(content)) = (it.next(), it.next()) {
            if files == MAX_FILES {
                break;
            }
            if let Some(rel) = sanitize(path)
                && write(&base.join(rel), content)
            {
                files += 1;
            }
        }
        Tree { dir }
    }

    /// The root to hand to the code under test.
    pub fn root(&self) -> affinity::host::Root {
        affinity::host::Root::new(self.dir.path())
    }
}

/// Memory-backed when possible: every run writes and removes a tree.
fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A relative path with only normal components, or `None`.
fn sanitize(path: &[u8]) -> Option<PathBuf> {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b"." && *c != b"..")
        .collect();
    if parts.is_empty() || parts.len() > MAX_DEPTH || parts.iter().any(|c| c.len() > 255) {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|c| std::ffi::OsStr::from_bytes(c))
            .collect(),
    )
}

/// Writes one file, creating its parents; false when the tree already has
/// a file where a directory is needed, or a directory at `path`.
fn write(path: &Path, content: &[u8]) -> bool {
    if let Some(parent) = path.parent()
        && fs::create_dir_all(parent).is_err()
    {
        return false;
    }
    fs::write(path, content).is_ok()
}

/// Splits a chunks input: `None` for each slot the input does not reach.
pub fn chunks<const N: usize>(data: &[u8]) -> [Option<&[u8]>; N] {
    let mut out = [None; N];
    for (slot, chunk) in out.iter_mut().zip(data.split(|&b| b == 0)) {
        *slot = Some(chunk);
    }
    out
}

/// Writes `content` to `dir/name` when present and not empty: an empty
/// chunk stands for a missing file (a blank file is "\n").
pub fn write_opt(dir: &Path, name: &str, content: Option<&[u8]>) {
    if let Some(c) = content.filter(|c| !c.is_empty()) {
        let mut f = fs::File::create(dir.join(name)).expect("scratch file");
        f.write_all(c).expect("scratch write");
    }
}

/// How `do_task_stat()` (fs/proc/array.c) prints each number after the
/// state, mapped to the type procfs parses it into.
#[derive(Clone, Copy)]
enum Num {
    I32,
    U32,
    I64,
    U64,
}

/// Fields 4..=52 of /proc/<pid>/stat, after pid, comm and state (man 5 proc).
const FIELDS: [Num; 49] = {
    use Num::*;
    [
        I32, I32, I32, I32, I32, // ppid pgrp session tty_nr tpgid
        U32, // flags
        U64, U64, U64, U64, U64, U64, // minflt cminflt majflt cmajflt utime stime
        I64, I64, I64, I64, I64, I64, // cutime cstime priority nice num_threads itrealvalue
        U64, U64, U64, U64, // starttime vsize rss rsslim
        U64, U64, U64, U64, U64, // startcode endcode startstack kstkesp kstkeip
        U64, U64, U64, U64, U64, U64,
        U64, // signal blocked sigignore sigcatch wchan nswap cnswap
        I32, I32, U32, U32, U64, U64, I64, // exit_signal processor rt_priority policy
        // delayacct_blkio_ticks guest_time cguest_time
        U64, U64, U64, U64, U64, U64, U64, // start_data end_data start_brk arg_start
        // arg_end env_start env_end
        I32, // exit_code
    ]
};

/// A /proc/<pid>/stat line built from fuzz bytes, and what it says.
pub struct StatLine {
    /// The line, as the kernel prints it (ends with '\n').
    pub line: Vec<u8>,
    /// The comm between the parentheses.
    pub comm: Vec<u8>,
    /// Field 1.
    pub pid: i32,
    /// Field 3.
    pub state: char,
    /// Fields 4..=52 as printed, widened to i128.
    pub fields: Vec<i128>,
}

impl StatLine {
    /// Input: comm bytes, NUL, one state byte, then 8 little-endian bytes
    /// per number (missing bytes read as 0). No NUL: the whole input is comm.
    pub fn from_fuzz(data: &[u8]) -> StatLine {
        let (comm, rest) = match data.iter().position(|&b| b == 0) {
            Some(i) => (&data[..i], &data[i + 1..]),
            None => (data, &[][..]),
        };
        let comm = comm[..comm.len().min(64)].to_vec();
        let states = b"RSDZTtXxKWPI";
        let state =
            char::from(states[usize::from(rest.first().copied().unwrap_or(1)) % states.len()]);
        let mut words = rest.get(1..).unwrap_or_default().chunks(8).map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        });
        let pid = (words.next().unwrap_or(PID.into()) as i32).max(1);
        let fields: Vec<i128> = FIELDS
            .iter()
            .map(|kind| {
                let w = words.next().unwrap_or(0);
                match kind {
                    Num::I32 => i128::from(w as i32),
                    Num::U32 => i128::from(w as u32),
                    Num::I64 => i128::from(w as i64),
                    Num::U64 => i128::from(w),
                }
            })
            .collect();
        let mut line = format!("{pid} (").into_bytes();
        line.extend_from_slice(&comm);
        line.extend_from_slice(format!(") {state}").as_bytes());
        for f in &fields {
            line.extend_from_slice(format!(" {f}").as_bytes());
        }
        line.push(b'\n');
        StatLine {
            line,
            comm,
            pid,
            state,
            fields,
        }
    }
}

/// What both trace targets check on every feature set: each figure is a
/// finite, non-negative number (a NaN would silently pass or fail every
/// threshold test and print as `null` in JSON reports), and the demand
/// derived from it does not panic.
pub fn check_features(f: &affinity::analyze::features::Features) {
    for (name, v) in [
        ("avg_cpu_usage", f.avg_cpu_usage),
        ("max_cpu_usage", f.max_cpu_usage),
        ("cpu_variance", f.cpu_variance),
        ("avg_memory_usage", f.avg_memory_usage),
        ("migration_rate", f.migration_rate),
        ("cache_miss_ratio", f.cache_miss_ratio),
        ("effective_parallelism", f.effective_parallelism),
        ("voluntary_ratio", f.voluntary_ratio.unwrap_or(0.0)),
    ] {
        assert!(v.is_finite() && v >= 0.0, "{name} = {v}");
    }
    let _ = affinity::analyze::recommend::demand(f);
}
