//! Raw BTF (/sys/kernel/btf/vmlinux) through `btf::task_offsets_from` (the
//! btfparse crate) and `btf::tracepoint_type_ids` (our own walk of the type
//! records): any bytes, any header offsets and lengths, any kind and vlen.
#![no_main]

use affinity::kernel::btf::{task_offsets_from, tracepoint_type_ids};
use affinity::kernel::probe::TRACEPOINTS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(off) = task_offsets_from(data) {
        assert_eq!(
            u64::from(off.tgid),
            u64::from(off.pid) + 4,
            "tgid follows pid"
        );
    }
    if let Ok(ids) = tracepoint_type_ids(data, &TRACEPOINTS) {
        // Type ids count records of 12 bytes or more.
        assert!(ids.iter().all(|&id| (id as usize) <= data.len() / 12));
    }
});
