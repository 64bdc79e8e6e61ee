//! Empty library target: lets affinity-userspace name this crate as a
//! build-dependency, so cargo rebuilds the BPF object when it changes.
#![no_std]
