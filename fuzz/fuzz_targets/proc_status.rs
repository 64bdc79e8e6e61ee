//! /proc/<pid>/status through `procfs::process::Status` (tgid, and
//! `Cpus_allowed_list` for topology::allowed_cpus) and
//! `preflight::parse_cap_eff`, on any text: hostile names included (the
//! kernel escapes `\n` and `\\` in `Name:` but not ':' or spaces).
#![no_main]

use libfuzzer_sys::fuzz_target;
use procfs::FromRead as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = procfs::process::Status::from_read(data) {
        // Count the allowed CPUs without expanding the ranges, which may be
        // as wide as u32 allows.
        let _n: u64 = status
            .cpus_allowed_list
            .iter()
            .flatten()
            .map(|&(a, b)| u64::from(b.saturating_sub(a)) + 1)
            .fold(0, u64::saturating_add);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = affinity::host::preflight::parse_cap_eff(text);
    }
});
