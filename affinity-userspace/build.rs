//! Builds the BPF object (`affinity-ebpf`) with the nightly toolchain and
//! bpf-linker; `cargo xtask setup` installs both.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let meta = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("affinity-ebpf");
    let root = meta.to_str().context("non-UTF-8 path")?;
    // The floor programs (bench only) are in the object only with our
    // `bench-hooks` feature.
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BENCH_HOOKS").is_some() {
        &["floor"]
    } else {
        &[]
    };
    aya_build::build_ebpf(
        [Package {
            name: "affinity-ebpf",
            root_dir: root,
            features,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
