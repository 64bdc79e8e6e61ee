//! The other /proc files the tool reads: /proc/stat through procfs
//! (`KernelStats`, per-CPU busy time), /proc/meminfo through
//! `procs::parse_mem_total` (MemTotal) and
//! /proc/<pid>/task/<tid>/schedstat through procfs (`Schedstat`,
//! sum_exec_runtime). All three run on every input.
//!
//! procfs's own `Meminfo` parser is not used any more: this target found it
//! panicking on a field name ending in a multi-byte character and, with
//! overflow checks, on values whose unit multiplication overflows
//! (procfs-core 0.17 meminfo.rs); procs.rs now parses MemTotal itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procfs::{FromBufReadSI as _, FromRead as _};

fuzz_target!(|data: &[u8]| {
    let si = procfs::ExplicitSystemInfo {
        boot_time_secs: 1_700_000_000,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let _ = procfs::KernelStats::from_buf_read(data, &si);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = affinity::host::procs::parse_mem_total(text);
    }
    let _ = procfs::process::Schedstat::from_read(data);
});
