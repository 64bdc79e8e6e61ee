//! `cargo xtask setup`: installs, idempotently, what a fresh Debian bookworm
//! machine lacks to build and test. Every check is fast when all is present.

use crate::util::{cargo_bin_dir, child_path, is_root, run_checked};
use anyhow::{Context as _, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// llvm-22-dev, libpolly-22-dev, libzstd-dev build bpf-linker; linux-perf and
/// bpftool are test oracles; ffmpeg and golang-go (a Go program that sizes
/// itself by GOMAXPROCS) are test workloads; prometheus scrapes
/// `affin-trace serve` in its root test; python3-venv holds the manifests'
/// validator (see [`kubernetes_validate`]).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "linux-perf",
    "bpftool",
    "ffmpeg",
    "golang-go",
    "prometheus",
    "python3-venv",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> Result<()> {
    apt_packages()?;
    nightly()?;
    rust_src()?;
    bpf_linker()?;
    kubernetes_validate()?;
    Ok(())
}

/// Where `kubernetes-validate` (PyPI) lives: the deploy/ tests run it.
pub const K8S_VENV: &str = "target/venv-k8s";

/// `kubernetes-validate` in a venv under target/: validates the DaemonSet
/// and Service against the Kubernetes schemas it ships (offline).
fn kubernetes_validate() -> Result<()> {
    let step = "pip kubernetes-validate";
    let venv = crate::util::workspace_root().join(K8S_VENV);
    let bin = venv.join("bin/kubernetes-validate");
    if bin.is_file() {
        present(step);
        return Ok(());
    }
    installing(step);
    let fix = "needs python3-venv (apt step) and PyPI reachable";
    run_checked(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
        fix,
    )?;
    run_checked(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "kubernetes-validate==1.37.0",
        ]),
        "pip install kubernetes-validate",
        fix,
    )?;
    installed(step);
    Ok(())
}

fn present(step: &str) {
    println!("setup: {step}: present");
}

fn installing(step: &str) {
    println!("setup: {step}: installing ...");
}

fn installed(step: &str) {
    println!("setup: {step}: installed");
}

/// Output of a command that must exist; stdout only, stdin closed.
fn output(program: &str, args: &[&str], fix: &str) -> Result<std::process::Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{program}`; {fix}"))
}

/// Packages of `APT_PACKAGES` that dpkg does not report as installed.
fn missing_apt_packages() -> Result<Vec<&'static str>> {
    let mut args = vec!["-W", "-f=${Package} ${Status}\\n"];
    args.extend(APT_PACKAGES);
    // dpkg-query exits 1 when some package is unknown: read stdout anyway.
    let out = output("dpkg-query", &args, "this needs a Debian-based system")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !text.lines().any(|l| {
                l.strip_prefix(pkg)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .is_some_and(|status| status == "install ok installed")
            })
        })
        .collect())
}

fn apt_packages() -> Result<()> {
    let missing = missing_apt_packages()?;
    for pkg in APT_PACKAGES.iter().filter(|p| !missing.contains(p)) {
        present(&format!("apt {pkg}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let step = format!("apt {}", missing.join(" "));
    if !is_root() {
        bail!(
            "apt packages missing ({}): run as root: `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    installing(&step);
    let fix = "check the apt sources (llvm-22-dev comes from bookworm-security) and the network";
    run_checked(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        "apt-get update",
        fix,
    )?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
        &format!("apt-get install {}", missing.join(" ")),
        fix,
    )?;
    let still = missing_apt_packages()?;
    if !still.is_empty() {
        bail!(
            "apt-get install finished but {} still not installed; {fix}",
            still.join(" ")
        );
    }
    installed(&step);
    Ok(())
}

const RUSTUP_FIX: &str = "install rustup (https://rustup.rs) and put ~/.cargo/bin on PATH";

fn has_nightly() -> Result<bool> {
    let out = output("rustup", &["toolchain", "list"], RUSTUP_FIX)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("nightly")))
}

fn nightly() -> Result<()> {
    let step = "rust nightly toolchain";
    if has_nightly()? {
        present(step);
        return Ok(());
    }
    installing(step);
    run_checked(
        Command::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .stdin(Stdio::null()),
        "rustup toolchain install nightly",
        "no nightly toolchain could be fetched from here (the eBPF crate needs one for \
         -Z build-std); install one by other means, e.g. from a machine image that has it",
    )?;
    if !has_nightly()? {
        bail!("rustup reported success but lists no nightly toolchain");
    }
    installed(step);
    Ok(())
}

fn has_rust_src() -> Result<bool> {
    let out = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
        RUSTUP_FIX,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim().starts_with("rust-src")))
}

fn rust_src() -> Result<()> {
    let step = "rust-src (nightly)";
    if has_rust_src()? {
        present(step);
        return Ok(());
    }
    installing(step);
    run_checked(
        Command::new("rustup")
            .args(["component", "add", "rust-src", "--toolchain", "nightly"])
            .stdin(Stdio::null()),
        "rustup component add rust-src --toolchain nightly",
        "check network access to the rustup dist server",
    )?;
    if !has_rust_src()? {
        bail!("rustup reported success but nightly still lacks rust-src");
    }
    installed(step);
    Ok(())
}

/// The bpf-linker that prints the wanted version, on PATH or in ~/.cargo/bin.
fn find_bpf_linker() -> Option<PathBuf> {
    let candidates = std::iter::once(PathBuf::from("bpf-linker"))
        .chain(cargo_bin_dir().map(|d| d.join("bpf-linker")));
    candidates.into_iter().find(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .any(|w| w == BPF_LINKER_VERSION)
            })
    })
}

fn bpf_linker() -> Result<()> {
    let step = format!("bpf-linker {BPF_LINKER_VERSION} (llvm-22)");
    if find_bpf_linker().is_some() {
        present(&step);
        return Ok(());
    }
    installing(&step);
    // bpf-linker's build uses the first llvm-config on PATH, and
    // /usr/bin/llvm-config is LLVM 14: put LLVM 22 first.
    let mut path = std::ffi::OsString::from(format!("{LLVM_PREFIX}/bin:"));
    path.push(child_path());
    run_checked(
        Command::new("cargo")
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args(["--locked", "--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .stdin(Stdio::null()),
        "cargo install bpf-linker",
        "it needs llvm-22-dev, libpolly-22-dev and libzstd-dev (installed by the apt step) \
         and access to crates.io",
    )?;
    if find_bpf_linker().is_none() {
        bail!(
            "cargo install bpf-linker succeeded but no bpf-linker {BPF_LINKER_VERSION} \
             is on PATH or in ~/.cargo/bin"
        );
    }
    installed(&step);
    Ok(())
}
