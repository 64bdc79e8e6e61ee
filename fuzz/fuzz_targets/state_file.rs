//! `state::load` on any revert state file (a private 0600 file, as `--apply`
//! writes it), then `apply::revert` of what it holds on a fake system that
//! builds the same `CpuSet` as the real one (CPUs past CpuSet::count() are
//! EINVAL there, not a panic).
#![no_main]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::OnceLock;

use affinity::apply::{Affinity, revert};
use affinity::apply::state;
use libfuzzer_sys::fuzz_target;
use nix::errno::Errno;

const PID: u32 = 4242;
const START: u64 = 1000;

/// Live threads: the recorded ones plus one created after the apply.
struct Fake<'a>(&'a BTreeMap<u32, Vec<u32>>);

impl Affinity for Fake<'_> {
    fn threads(&self, _pid: u32) -> Vec<u32> {
        self.0.keys().copied().chain([u32::MAX]).collect()
    }
    fn get(&self, _tid: u32) -> Result<Vec<u32>, Errno> {
        Ok(vec![0])
    }
    fn set(&mut self, _tid: u32, cpus: &[u32]) -> Result<(), Errno> {
        let mut set = nix::sched::CpuSet::new();
        for &c in cpus {
            set.set(c as usize)?;
        }
        Ok(())
    }
}

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let path = state::path(dir(), PID, START);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(data).unwrap();
    drop(f);
    match state::load(dir(), PID, START) {
        Ok(st) => {
            assert_eq!((st.pid, st.start_time), (PID, START));
            let parsed: state::ApplyState = serde_json::from_slice(data).expect("load accepted it");
            assert_eq!(parsed, st);
            let _ = revert(&mut Fake(&st.threads), PID, &st.threads, &st.process_mask);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
