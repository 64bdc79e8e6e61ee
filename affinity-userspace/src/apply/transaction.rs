//! Setting a CPU set on every thread of the targets, as one transaction.
//!
//! The previous mask of each thread is recorded (and handed to a persist
//! callback, which writes the revert state file) *before* that thread is
//! changed. Threads created while applying are picked up by rescanning
//! /proc/<pid>/task until a scan finds nothing new. A thread that vanishes
//! (ESRCH) is not a failure; any other error (EPERM, EINVAL: CPUs outside
//! the thread's cpuset) restores every thread already changed and returns
//! the error, so no target is left half-applied.
//!
//! The system calls sit behind [`Affinity`], so the transaction logic is
//! tested without root on a fake.

use std::collections::BTreeMap;

use nix::errno::Errno;
use thiserror::Error;

/// The kernel calls the transaction needs.
pub trait Affinity {
    /// Thread ids of `pid` now.
    fn threads(&self, pid: u32) -> Vec<u32>;
    /// The CPU mask of `tid`.
    fn get(&self, tid: u32) -> Result<Vec<u32>, Errno>;
    /// Sets the CPU mask of `tid`.
    fn set(&mut self, tid: u32, cpus: &[u32]) -> Result<(), Errno>;
}

/// sched_getaffinity / sched_setaffinity on the live system.
pub struct System;

impl Affinity for System {
    fn threads(&self, pid: u32) -> Vec<u32> {
        crate::host::procs::tids(&crate::host::Root::host(), pid)
    }

    fn get(&self, tid: u32) -> Result<Vec<u32>, Errno> {
        let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(tid as i32))?;
        Ok((0..nix::sched::CpuSet::count() as u32)
            .filter(|&c| set.is_set(c as usize).unwrap_or(false))
            .collect())
    }

    fn set(&mut self, tid: u32, cpus: &[u32]) -> Result<(), Errno> {
        let mut set = nix::sched::CpuSet::new();
        for &c in cpus {
            set.set(c as usize)?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid as i32), &set)
    }
}

/// Why an apply failed. Every thread already changed was restored.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// Nothing to apply.
    #[error("no CPUs to apply: the recommendation is empty")]
    Empty,
    /// A thread refused the mask.
    #[error(
        "setting CPUs {cpus} on thread {tid} of pid {pid} failed: {errno}{hint}; {restored} thread(s) already changed were restored, nothing is left applied"
    )]
    Refused {
        /// Process.
        pid: u32,
        /// Thread.
        tid: u32,
        /// The CPU list.
        cpus: String,
        /// The error.
        errno: Errno,
        /// How to read it.
        hint: &'static str,
        /// Threads restored.
        restored: usize,
    },
    /// The rollback itself failed for some threads.
    #[error(
        "setting CPUs on thread {tid} failed ({errno}) and restoring threads {unrestored:?} failed too: run `affin-trace revert --pid {pid}`"
    )]
    RollbackFailed {
        /// Process.
        pid: u32,
        /// Thread that failed first.
        tid: u32,
        /// Its error.
        errno: Errno,
        /// Threads still changed.
        unrestored: Vec<u32>,
    },
    /// Persisting the revert state failed before any change.
    #[error("{0}")]
    Persist(String),
}

/// A successful apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Each changed thread's previous mask, per pid.
    pub previous: BTreeMap<u32, BTreeMap<u32, Vec<u32>>>,
    /// Threads that vanished while applying.
    pub vanished: usize,
}

impl Applied {
    /// Number of threads changed.
    pub fn threads_changed(&self) -> usize {
        self.previous.values().map(BTreeMap::len).sum()
    }
}

/// Rescans at most this often; a process still spawning threads after that
/// keeps the mask through inheritance (new threads copy their creator's).
const MAX_SCANS: usize = 20;

fn hint(e: Errno) -> &'static str {
    match e {
        Errno::EINVAL => " (the CPUs are outside the thread's cpuset or offline)",
        Errno::EPERM => " (not permitted: needs CAP_SYS_NICE or the same user)",
        _ => "",
    }
}

/// Applies `cpus` to every thread of `pids`. `persist` is called with the
/// previous masks recorded so far before each batch of changes; if it fails,
/// nothing more is changed and everything is restored.
pub fn apply(
    sys: &mut dyn Affinity,
    pids: &[u32],
    cpus: &[u32],
    persist: &mut dyn FnMut(&Applied) -> Result<(), String>,
) -> Result<Applied, ApplyError> {
    if cpus.is_empty() {
        return Err(ApplyError::Empty);
    }
    let mut done = Applied::default();
    let mut changed: Vec<(u32, u32)> = Vec::new(); // (pid, tid) in order
    // Each thread is handled once, vanished ones included (a tid is not
    // reused while its old thread is still listed).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..MAX_SCANS {
        // Record the masks of every new thread first, persist, then change.
        let mut batch = Vec::new();
        for &pid in pids {
            for tid in sys.threads(pid) {
                if !seen.insert((pid, tid)) {
                    continue;
                }
                match sys.get(tid) {
                    Ok(mask) => {
                        done.previous.entry(pid).or_default().insert(tid, mask);
                        batch.push((pid, tid));
                    }
                    Err(Errno::ESRCH) => done.vanished += 1,
                    Err(errno) => {
                        return Err(rollback(sys, &done, &changed, pid, tid, errno, cpus));
                    }
                }
            }
        }
        if batch.is_empty() {
            return Ok(done);
        }
        if let Err(e) = persist(&done) {
            restore(sys, &done, &changed);
            return Err(ApplyError::Persist(e));
        }
        for (pid, tid) in batch {
            match sys.set(tid, cpus) {
                Ok(()) => changed.push((pid, tid)),
                Err(Errno::ESRCH) => {
                    done.vanished += 1;
                    if let Some(m) = done.previous.get_mut(&pid) {
                        m.remove(&tid);
                    }
                }
                Err(errno) => return Err(rollback(sys, &done, &changed, pid, tid, errno, cpus)),
            }
        }
    }
    Ok(done)
}

/// The number of threads of `pids` when every one of them already has
/// exactly `cpus` as its mask (an apply would change nothing), else `None`.
/// Threads that vanish while listed are skipped; no threads at all is
/// `None` (nothing shows the masks are equal).
pub fn already_set(sys: &dyn Affinity, pids: &[u32], cpus: &[u32]) -> Option<usize> {
    let mut want = cpus.to_vec();
    want.sort_unstable();
    want.dedup();
    let mut n = 0;
    for &pid in pids {
        for tid in sys.threads(pid) {
            match sys.get(tid) {
                Ok(mut mask) => {
                    mask.sort_unstable();
                    if mask != want {
                        return None;
                    }
                    n += 1;
                }
                Err(Errno::ESRCH) => {}
                Err(_) => return None,
            }
        }
    }
    (n > 0).then_some(n)
}

/// Restores changed threads; returns those that could not be restored
/// (vanished ones are fine).
fn restore(sys: &mut dyn Affinity, done: &Applied, changed: &[(u32, u32)]) -> Vec<u32> {
    let mut failed = Vec::new();
    for &(pid, tid) in changed.iter().rev() {
        if let Some(mask) = done.previous.get(&pid).and_then(|m| m.get(&tid)) {
            match sys.set(tid, mask) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(_) => failed.push(tid),
            }
        }
    }
    failed
}

fn rollback(
    sys: &mut dyn Affinity,
    done: &Applied,
    changed: &[(u32, u32)],
    pid: u32,
    tid: u32,
    errno: Errno,
    cpus: &[u32],
) -> ApplyError {
    let unrestored = restore(sys, done, changed);
    if unrestored.is_empty() {
        ApplyError::Refused {
            pid,
            tid,
            cpus: crate::model::cpulist::format(cpus),
            errno,
            hint: hint(errno),
            restored: changed.len(),
        }
    } else {
        ApplyError::RollbackFailed {
            pid,
            tid,
            errno,
            unrestored,
        }
    }
}

/// Restores the masks recorded for one process: each recorded thread gets
/// its own previous mask, every other live thread (created after the apply)
/// gets `process_mask`. Vanished threads are skipped. Returns the number of
/// threads set and the threads that refused.
///
/// Rescans like [`apply`]: one listing of /proc/<pid>/task can miss live
/// threads while others exit (the kernel lists tasks by position), and a
/// thread created by one not yet reverted still inherits the applied mask.
/// Seen with 1,000 threads each creating short-lived ones: a single scan
/// left 8 of ~2,000 threads with the applied CPUs.
pub fn revert(
    sys: &mut dyn Affinity,
    pid: u32,
    recorded: &BTreeMap<u32, Vec<u32>>,
    process_mask: &[u32],
) -> (usize, Vec<(u32, Errno)>) {
    let mut set = 0;
    let mut failed = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..MAX_SCANS {
        let mut new = false;
        for tid in sys.threads(pid) {
            if !seen.insert(tid) {
                continue;
            }
            new = true;
            let mask = recorded.get(&tid).map_or(process_mask, Vec::as_slice);
            match sys.set(tid, mask) {
                Ok(()) => set += 1,
                Err(Errno::ESRCH) => {}
                Err(e) => failed.push((tid, e)),
            }
        }
        if !new {
            break;
        }
    }
    (set, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake system: threads with masks, a script of new threads appearing
    /// per scan, and per-thread injected errors.
    #[derive(Default)]
    struct Fake {
        masks: BTreeMap<u32, Vec<u32>>,
        appear: Vec<Vec<u32>>,
        scans: std::cell::Cell<usize>,
        refuse: BTreeMap<u32, Errno>,
        sets: Vec<u32>,
    }

    impl Affinity for Fake {
        fn threads(&self, _pid: u32) -> Vec<u32> {
            let n = self.scans.get();
            self.scans.set(n + 1);
            let mut v: Vec<u32> = self.masks.keys().copied().collect();
            for extra in self.appear.iter().take(n + 1) {
                v.extend(extra);
            }
            v.sort_unstable();
            v.dedup();
            v
        }
        fn get(&self, tid: u32) -> Result<Vec<u32>, Errno> {
            Ok(self
                .masks
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| vec![0, 1, 2, 3]))
        }
        fn set(&mut self, tid: u32, cpus: &[u32]) -> Result<(), Errno> {
            if let Some(&e) = self.refuse.get(&tid) {
                return Err(e);
            }
            self.sets.push(tid);
            self.masks.insert(tid, cpus.to_vec());
            Ok(())
        }
    }

    fn fake() -> Fake {
        Fake {
            masks: BTreeMap::from([(10, vec![0, 1, 2, 3]), (11, vec![2]), (12, vec![0, 3])]),
            ..Fake::default()
        }
    }

    fn ok(_: &Applied) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn a_set_every_thread_already_has_is_a_no_op_and_changes_nothing() {
        let mut f = Fake {
            masks: BTreeMap::from([(10, vec![1, 0]), (11, vec![0, 1])]),
            ..Fake::default()
        };
        assert_eq!(already_set(&f, &[10], &[0, 1]), Some(2));
        assert_eq!(already_set(&f, &[10], &[1]), None);
        assert!(f.sets.is_empty(), "the check only reads");
        f.masks.insert(11, vec![1]);
        assert_eq!(already_set(&f, &[10], &[0, 1]), None, "one thread differs");
        let empty = Fake::default();
        assert_eq!(already_set(&empty, &[10], &[0]), None);
    }

    #[test]
    fn every_thread_gets_the_set_and_previous_masks_are_kept() {
        let mut f = fake();
        let a = apply(&mut f, &[10], &[1], &mut ok).unwrap();
        assert_eq!(a.threads_changed(), 3);
        assert!(f.masks.values().all(|m| m == &vec![1]));
        assert_eq!(a.previous[&10][&11], vec![2]);
        assert_eq!(a.previous[&10][&12], vec![0, 3]);
    }

    #[test]
    fn threads_created_while_applying_are_rescanned() {
        let mut f = fake();
        f.appear = vec![vec![], vec![20], vec![21]];
        let a = apply(&mut f, &[10], &[1], &mut ok).unwrap();
        assert_eq!(a.threads_changed(), 5);
        assert_eq!(f.masks[&21], vec![1]);
    }

    #[test]
    fn a_refusal_restores_every_changed_thread() {
        let mut f = fake();
        f.refuse.insert(12, Errno::EINVAL);
        let before = f.masks.clone();
        let e = apply(&mut f, &[10], &[1], &mut ok).unwrap_err();
        assert_eq!(f.masks, before, "left half-applied");
        let msg = e.to_string();
        assert!(msg.contains("thread 12") && msg.contains("cpuset"), "{msg}");
        assert!(msg.contains("restored"), "{msg}");
    }

    #[test]
    fn state_is_persisted_before_any_change() {
        let mut f = fake();
        let mut persisted_before_sets = false;
        let mut persist = |a: &Applied| {
            persisted_before_sets = a.threads_changed() == 3;
            Ok(())
        };
        apply(&mut f, &[10], &[1], &mut persist).unwrap();
        assert!(persisted_before_sets);
    }

    #[test]
    fn a_persist_failure_changes_nothing() {
        let mut f = fake();
        let before = f.masks.clone();
        let e = apply(&mut f, &[10], &[1], &mut |_: &Applied| {
            Err("disk full".into())
        });
        assert!(matches!(e, Err(ApplyError::Persist(_))));
        assert_eq!(f.masks, before);
        assert!(f.sets.is_empty());
    }

    #[test]
    fn a_vanished_thread_is_not_a_failure() {
        let mut f = fake();
        f.refuse.insert(11, Errno::ESRCH);
        let a = apply(&mut f, &[10], &[1], &mut ok).unwrap();
        assert_eq!(a.vanished, 1);
        assert_eq!(a.threads_changed(), 2);
    }

    #[test]
    fn revert_restores_exact_masks_and_gives_new_threads_the_process_mask() {
        let mut f = fake();
        let a = apply(&mut f, &[10], &[1], &mut ok).unwrap();
        f.masks.insert(30, vec![1]); // created after the apply
        let (n, failed) = revert(&mut f, 10, &a.previous[&10], &[0, 1, 2, 3]);
        assert!(failed.is_empty());
        assert_eq!(n, 4);
        assert_eq!(f.masks[&11], vec![2]);
        assert_eq!(f.masks[&12], vec![0, 3]);
        assert_eq!(f.masks[&30], vec![0, 1, 2, 3]);
    }

    #[test]
    fn revert_rescans_for_threads_a_listing_missed() {
        let mut f = fake();
        let a = apply(&mut f, &[10], &[1], &mut ok).unwrap();
        // Listed only from the second scan on (missed by the first
        // listing, or created meanwhile with the applied mask).
        let before_scans = f.scans.get();
        f.appear = vec![vec![]; before_scans + 1];
        f.appear.push(vec![40]);
        let (n, failed) = revert(&mut f, 10, &a.previous[&10], &[0, 1, 2, 3]);
        assert!(failed.is_empty());
        assert_eq!(f.masks[&40], vec![0, 1, 2, 3]);
        assert_eq!(n, 4);
        assert_eq!(
            f.scans.get() - before_scans,
            3,
            "stops at the first scan with nothing new"
        );
    }

    #[test]
    fn empty_set_is_refused() {
        assert!(matches!(
            apply(&mut fake(), &[10], &[], &mut ok),
            Err(ApplyError::Empty)
        ));
    }
}
