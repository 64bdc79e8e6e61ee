//! `btf::parse_cache` on any cache file text (/run/affin-trace/btf-offsets:
//! key line, task_struct offsets, tracepoint type ids), with its own first
//! line as the key (so the number lines are reached) and with another key.
#![no_main]

use affinity::kernel::btf::parse_cache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = text.lines().next().unwrap_or_default();
    if let Some(k) = parse_cache(text, key) {
        let off = k.offsets;
        assert_eq!(
            u64::from(off.tgid),
            u64::from(off.pid) + 4,
            "tgid follows pid"
        );
    }
    let _ = parse_cache(text, "v2 6.1.0 #1 SMP 123");
});
