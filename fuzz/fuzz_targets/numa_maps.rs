//! `recommend::parse_numa_maps` on any /proc/<pid>/numa_maps text: huge
//! page sizes and page counts must not overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // session.rs reads the file with read_to_string: UTF-8 only.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = affinity::analyze::recommend::parse_numa_maps(text);
});
