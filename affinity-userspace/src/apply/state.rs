//! The revert record: every thread's CPU mask before an apply, kept in
//! `/run/affin-trace/<pid>-<start time>.json` so `affin-trace revert --pid P`
//! restores it exactly, from another invocation too.
//!
//! The file is keyed by pid *and* process start time (field 22 of
//! /proc/<pid>/stat), so a recycled pid never receives another process's
//! masks. Writes are atomic (temp file + rename), mode 0600, in a directory
//! owned by us and writable by nobody else, never through a symlink: a local
//! user cannot redirect root's writes. A lock file beside it serialises two
//! instances working on the same target.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default directory (tmpfs: masks do not survive a reboot, and neither do
/// the threads they belong to).
pub const STATE_DIR: &str = "/run/affin-trace";

/// What an apply changed and how to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyState {
    /// Process id.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// The CPUs applied.
    pub applied_cpus: Vec<u32>,
    /// Mask of the main thread before the apply: what threads created after
    /// the apply get on revert.
    pub process_mask: Vec<u32>,
    /// Each changed thread's mask before the apply.
    pub threads: BTreeMap<u32, Vec<u32>>,
    /// /proc/sys/kernel/random/boot_id when written ([`save`] fills it in):
    /// /run is not tmpfs everywhere, and a record from before a reboot
    /// names processes that are gone, whose pid and start time a new
    /// process can match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// Largest state file read: a record of 10,000 threads with 1,024-CPU masks
/// fits; anything bigger is not ours.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// This boot's id (None where the kernel does not say).
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A state-file failure.
#[derive(Debug, Error)]
pub enum StateError {
    /// The directory is unsafe (not ours, writable by others, a symlink).
    #[error(
        "{0} is not a directory owned by this user and closed to others: refusing to keep revert state there (remove it, it is recreated)"
    )]
    UnsafeDir(PathBuf),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Malformed file.
    #[error("{path} is not a valid affin-trace state file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No record for the process.
    #[error(
        "no applied affinity recorded for pid {0} (nothing to revert: affin-trace --apply was not run on this process since boot)"
    )]
    Missing(u32),
    /// Another instance holds the lock.
    #[error(
        "another affin-trace is applying or reverting on pid {0}; wait for it to finish and retry"
    )]
    Busy(u32),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The state directory, created 0700 if missing and checked.
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    let _ = std::fs::DirBuilder::new().mode(0o700).create(dir);
    match std::fs::symlink_metadata(dir) {
        Ok(m)
            if m.is_dir()
                && m.uid() == nix::unistd::geteuid().as_raw()
                && m.mode() & 0o022 == 0 =>
        {
            Ok(())
        }
        _ => Err(StateError::UnsafeDir(dir.to_path_buf())),
    }
}

/// Path of the state file of `pid` started at `start_time`.
pub fn path(dir: &Path, pid: u32, start_time: u64) -> PathBuf {
    dir.join(format!("{pid}-{start_time}.json"))
}

/// Writes `state` atomically.
pub fn save(dir: &Path, state: &ApplyState) -> Result<PathBuf, StateError> {
    ensure_dir(dir)?;
    let file = path(dir, state.pid, state.start_time);
    let tmp = dir.join(format!(".{}-{}.tmp", state.pid, std::process::id()));
    let state = ApplyState {
        boot_id: state.boot_id.clone().or_else(boot_id),
        ..state.clone()
    };
    let text = serde_json::to_string_pretty(&state).map_err(|e| StateError::Corrupt {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(&tmp))?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))
        .and_then(|()| std::fs::rename(&tmp, &file).map_err(io(&file)));
    if written.is_err() {
        // A full directory must not keep a half-written temporary file.
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| file)
}

/// Writes `state`, keeping what an earlier record of the same process holds:
/// that record has the masks from before affin-trace first touched the
/// process, so its threads and process mask win and only threads it does
/// not hold yet are added. A second `--apply` (or a retry after an apply
/// killed half-way) would otherwise make the first apply's CPUs, or a
/// half-applied mask, what `revert` restores.
pub fn save_merged(dir: &Path, state: &ApplyState) -> Result<PathBuf, StateError> {
    match load(dir, state.pid, state.start_time) {
        Ok(old) => save(dir, &merge(old, state)),
        Err(StateError::Missing(_)) => save(dir, state),
        Err(e) => Err(e),
    }
}

/// `old` (the earlier record) with the threads of `new` it lacks, and the
/// CPUs applied last. A new thread whose mask is exactly the CPUs applied
/// before inherited them from its creator: it is left out, so revert gives
/// it the process's original mask rather than those CPUs.
pub fn merge(old: ApplyState, new: &ApplyState) -> ApplyState {
    let mut threads = old.threads;
    for (&tid, mask) in &new.threads {
        if *mask != old.applied_cpus {
            threads.entry(tid).or_insert_with(|| mask.clone());
        }
    }
    ApplyState {
        applied_cpus: new.applied_cpus.clone(),
        threads,
        ..old
    }
}

/// Reads the state of `pid` started at `start_time`.
pub fn load(dir: &Path, pid: u32, start_time: u64) -> Result<ApplyState, StateError> {
    let file = path(dir, pid, start_time);
    // O_NONBLOCK: a FIFO put in the file's place opens at once (and is
    // refused below) instead of blocking with the lock held.
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&file)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::Missing(pid));
        }
        Err(e) => return Err(io(&file)(e)),
    };
    let meta = f.metadata().map_err(io(&file))?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o077 != 0
    {
        return Err(StateError::Corrupt {
            path: file,
            reason: "not a private regular file owned by this user".into(),
        });
    }
    if meta.len() > MAX_STATE_BYTES {
        return Err(StateError::Corrupt {
            path: file,
            reason: format!(
                "{} bytes, more than a revert record holds ({MAX_STATE_BYTES})",
                meta.len()
            ),
        });
    }
    // One read into memory: serde_json on an unbuffered file reads a byte
    // per system call (56 MB took 43 s).
    let mut text = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_STATE_BYTES + 1), &mut text)
        .map_err(io(&file))?;
    let state: ApplyState = serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    if state.pid != pid || state.start_time != start_time {
        return Err(StateError::Corrupt {
            path: file,
            reason: "it names another process".into(),
        });
    }
    if let (Some(then), Some(now)) = (&state.boot_id, boot_id())
        && *then != now
    {
        return Err(StateError::Corrupt {
            path: file,
            reason: format!(
                "it was written before the last reboot (boot id {then}, now {now}): the process it names is gone; remove the file"
            ),
        });
    }
    Ok(state)
}

/// Deletes the state of `pid` after a successful revert.
pub fn remove(dir: &Path, pid: u32, start_time: u64) -> Result<(), StateError> {
    let file = path(dir, pid, start_time);
    std::fs::remove_file(&file).map_err(io(&file))
}

/// An exclusive lock on a target, released on drop (or when the process
/// dies, as flock locks are). Drop removes the lock file, so runs do not
/// leave one per target behind.
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlinked while still locked: whoever opened this inode meanwhile
        // sees, once it gets the lock, that the path no longer names it
        // (checked in [`lock`]) and retries on a fresh file.
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.file;
    }
}

/// Takes the lock of `pid` without waiting.
pub fn lock(dir: &Path, pid: u32) -> Result<Lock, StateError> {
    ensure_dir(dir)?;
    let file = dir.join(format!("{pid}.lock"));
    for _ in 0..10 {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&file)
            .map_err(io(&file))?;
        // SAFETY: flock(2) on an fd we own.
        if unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        } != 0
        {
            return Err(StateError::Busy(pid));
        }
        let held = f.metadata().map_err(io(&file))?;
        match std::fs::symlink_metadata(&file) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() && held.is_file() => {
                return Ok(Lock {
                    file: f,
                    path: file,
                });
            }
            // The holder removed it between our open and our flock.
            _ => continue,
        }
    }
    Err(StateError::Busy(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ApplyState {
        ApplyState {
            pid: 42,
            start_time: 777,
            applied_cpus: vec![1],
            process_mask: vec![0, 1],
            threads: BTreeMap::from([(42, vec![0, 1]), (43, vec![0])]),
            boot_id: None,
        }
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("state");
        let file = save(&d, &state()).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        // The file also records this boot.
        let expected = ApplyState {
            boot_id: boot_id(),
            ..state()
        };
        assert_eq!(load(&d, 42, 777).unwrap(), expected);
    }

    #[test]
    fn a_reused_pid_finds_no_state() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &state()).unwrap();
        assert!(matches!(
            load(dir.path(), 42, 778),
            Err(StateError::Missing(42))
        ));
    }

    #[test]
    fn a_symlinked_state_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "{}").unwrap();
        std::os::unix::fs::symlink(&target, path(dir.path(), 42, 777)).unwrap();
        assert!(load(dir.path(), 42, 777).is_err());
    }

    #[test]
    fn a_group_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("open");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(matches!(save(&d, &state()), Err(StateError::UnsafeDir(_))));
    }

    #[test]
    fn a_state_file_from_another_boot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = save(dir.path(), &state()).unwrap();
        let mut st = load(dir.path(), 42, 777).unwrap();
        assert_eq!(st.boot_id, boot_id(), "save records this boot");
        st.boot_id = Some("00000000-0000-0000-0000-000000000000".into());
        std::fs::remove_file(&file).unwrap();
        save(dir.path(), &st).unwrap();
        let e = load(dir.path(), 42, 777).unwrap_err().to_string();
        assert!(e.contains("before the last reboot"), "{e}");
    }

    #[test]
    fn a_fifo_or_an_oversized_state_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), 42, 777);
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load(dir.path(), 42, 777).unwrap_err().to_string();
        assert!(e.contains("not a private regular file"), "{e}");
        std::fs::remove_file(&file).unwrap();
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(MAX_STATE_BYTES + 1).unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let e = load(dir.path(), 42, 777).unwrap_err().to_string();
        assert!(e.contains("more than a revert record holds"), "{e}");
    }

    #[test]
    fn nothing_is_left_behind_by_a_lock_or_a_failed_save() {
        let dir = tempfile::tempdir().unwrap();
        drop(lock(dir.path(), 42).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A save whose rename fails (a directory in the file's place).
        std::fs::create_dir(path(dir.path(), 42, 777)).unwrap();
        std::fs::write(path(dir.path(), 42, 777).join("x"), "").unwrap();
        assert!(save(dir.path(), &state()).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_second_lock_on_the_same_pid_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), 42).unwrap();
        assert!(matches!(lock(dir.path(), 42), Err(StateError::Busy(42))));
        drop(first);
        assert!(lock(dir.path(), 42).is_ok());
    }

    #[test]
    fn a_second_save_keeps_the_masks_from_before_the_first_apply() {
        let dir = tempfile::tempdir().unwrap();
        save_merged(dir.path(), &state()).unwrap();
        // The second apply sees the first apply's CPU 1 everywhere, a
        // thread created since that inherited it (44) and one that set its
        // own mask (45).
        let second = ApplyState {
            applied_cpus: vec![0],
            process_mask: vec![1],
            threads: BTreeMap::from([
                (42, vec![1]),
                (43, vec![1]),
                (44, vec![1]),
                (45, vec![2, 3]),
            ]),
            ..state()
        };
        save_merged(dir.path(), &second).unwrap();
        let kept = load(dir.path(), 42, 777).unwrap();
        assert_eq!(kept.process_mask, vec![0, 1]);
        assert_eq!(kept.applied_cpus, vec![0]);
        assert_eq!(
            kept.threads,
            BTreeMap::from([(42, vec![0, 1]), (43, vec![0]), (45, vec![2, 3])])
        );
    }

    #[test]
    fn garbage_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path(), 42, 777);
        std::fs::write(&file, "not json").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let e = load(dir.path(), 42, 777).unwrap_err().to_string();
        assert!(e.contains("not a valid affin-trace state file"), "{e}");
    }
}
