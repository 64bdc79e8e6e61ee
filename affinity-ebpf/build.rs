//! Link flags for the BPF object (passed by rustc to bpf-linker, which does
//! the code generation).
//!
//! `--cpu-features=+alu32`: the programs take thread slots with an atomic
//! fetch-and-add and publish them with a compare-and-swap, which the BPF
//! instruction set has only with 32-bit subregisters (kernel >= 5.12 for the
//! atomics; affin-trace needs >= 5.18 anyway for sched_switch's
//! `prev_state` argument). `--cpu=v3` would be the usual way, but rustc
//! already passes `--cpu generic` and bpf-linker takes `--cpu` only once,
//! while aya-build owns RUSTFLAGS (`-C target-cpu`).
fn main() {
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
}
