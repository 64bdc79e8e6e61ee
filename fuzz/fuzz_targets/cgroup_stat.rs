//! `cgroup::read_stat_at` on fuzzed cpu.stat, cpu.stat.local and
//! cpu.pressure (v1 and v2 keys), twice, then `CpuStat::delta` of the two
//! snapshots. Input: chunks (affinity_fuzz::chunks) in that order, first
//! the "before" directory, then the "after" one; a missing or empty chunk
//! is a missing file.
#![no_main]

use affinity::host::cgroup::{CpuStat, read_stat_at};
use affinity_fuzz::{chunks, write_opt};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 3] = ["cpu.stat", "cpu.stat.local", "cpu.pressure"];

fuzz_target!(|data: &[u8]| {
    let [a, b, c, d, e, f] = chunks::<6>(data);
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let (before, after) = (dir.path().join("before"), dir.path().join("after"));
    for (d, files) in [(&before, [a, b, c]), (&after, [d, e, f])] {
        std::fs::create_dir(d).unwrap();
        for (name, content) in FILES.iter().zip(files) {
            write_opt(d, name, content);
        }
    }
    let (Ok(s0), Ok(s1)) = (read_stat_at(&before), read_stat_at(&after)) else {
        return;
    };
    for (x, y) in [(&s0, &s1), (&s1, &s0)] {
        let delta = CpuStat::delta(x, y);
        if let Some(r) = delta.throttled_ratio() {
            assert!(r.is_finite() && r >= 0.0, "throttled ratio {r}");
        }
    }
});
