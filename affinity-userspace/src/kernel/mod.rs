//! The kernel side as userspace sees it: offsets read from the running
//! kernel's BTF ([`btf`]), loading and attaching the programs of
//! `affinity-ebpf`, the mmapped per-thread slots and the batched map reads
//! ([`probe`]), and the programs' log of rare conditions ([`log`]). The only
//! code that calls `bpf()`.

pub mod bandwidth;
pub mod btf;
pub mod log;
pub mod probe;
