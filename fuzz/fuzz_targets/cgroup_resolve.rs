//! `cgroup::resolve(root, pid)` on a fuzzed tree (affinity_fuzz::Tree):
//! /proc/<pid>/cgroup, /proc/self/mountinfo and the cgroup files it reads
//! (cpu.max, cpu.cfs_quota_us, cpu.cfs_period_us, cgroup.controllers), then
//! `read_stat` (cpu.stat, cpu.stat.local, cpu.pressure) on the limit found.
#![no_main]

use affinity::host::cgroup;
use affinity_fuzz::{PID, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tree = Tree::new(data, "");
    let cg = match cgroup::resolve(&tree.root(), PID) {
        Ok(cg) => cg,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        !cg.levels.is_empty(),
        "the target's own level is always there"
    );
    if let Some(limit) = cg.limit() {
        // The limit is the tightest quota on the path.
        for l in &cg.levels {
            if let Some(q) = &l.quota {
                assert!(
                    !q.is_tighter_than(&limit.quota),
                    "a tighter level was skipped"
                );
            }
        }
        assert!(limit.quota.period_us > 0, "zero period");
        assert!(limit.quota_cores().is_finite());
        if let Err(e) = cgroup::read_stat(limit) {
            let _ = e.to_string();
        }
    }
});
