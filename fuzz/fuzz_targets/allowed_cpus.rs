//! `topology::allowed_cpus(root, pid)` on a fuzzed tree
//! (affinity_fuzz::Tree): /proc/<pid>/status (`Cpus_allowed_list`),
//! /proc/<pid>/cgroup and the cpuset files it walks up to
//! (v1 cpuset.effective_cpus, v2 cpuset.cpus.effective). The allowed set
//! is within both the affinity and the cpuset.
#![no_main]

use affinity::host::topology::allowed_cpus;
use affinity_fuzz::{PID, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tree = Tree::new(data, "");
    match allowed_cpus(&tree.root(), PID) {
        Ok(a) => {
            assert!(
                a.cpus.iter().all(|c| a.affinity.contains(c)),
                "outside affinity"
            );
            if let Some(set) = &a.cpuset {
                assert!(a.cpus.iter().all(|c| set.contains(c)), "outside cpuset");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
