//! `cargo xtask setup`: installs, idempotently, what a fresh Debian bookworm
//! machine lacks to build and test. Every check is fast when all is present.

use crate::util::{cargo_bin_dir, child_path, is_root, run_checked};
use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// llvm-22-dev, libpolly-22-dev, libzstd-dev build bpf-linker; linux-perf and
/// bpftool are test oracles; ffmpeg, golang-go (a Go program that sizes
/// itself by GOMAXPROCS) and stress-ng (worker processes) are test
/// workloads; prometheus scrapes
/// `affin-trace serve` in its root test; python3-venv holds the manifests'
/// validator (see [`K8S_VENV`]) and the Perfetto schema (see
/// [`PERFETTO_VENV`]).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "linux-perf",
    "bpftool",
    "ffmpeg",
    "golang-go",
    "stress-ng",
    "prometheus",
    "python3-venv",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const RUSTUP_FIX: &str = "install rustup (https://rustup.rs) and put ~/.cargo/bin on PATH";

pub fn run() -> Result<()> {
    let missing = missing_apt_packages(APT_PACKAGES)?;
    for pkg in APT_PACKAGES.iter().filter(|p| !missing.contains(p)) {
        println!("setup: apt {pkg}: present");
    }
    if !missing.is_empty() {
        let name = format!("apt {}", missing.join(" "));
        let have = || Ok(missing_apt_packages(&missing)?.is_empty());
        step(&name, have, || apt_install(&missing))?;
    }
    let nightly = || {
        stdout_has("rustup", &["toolchain", "list"], |l| {
            l.starts_with("nightly")
        })
    };
    step("rust nightly toolchain", nightly, || {
        run_checked(
            &mut rustup(&["toolchain", "install", "nightly", "--profile", "minimal"]),
            "rustup toolchain install nightly",
            "no nightly toolchain could be fetched from here (the eBPF crate needs one for \
             -Z build-std); install one by other means, e.g. from a machine image that has it",
        )
    })?;
    let rust_src = || {
        let args = ["component", "list", "--toolchain", "nightly", "--installed"];
        stdout_has("rustup", &args, |l| l.trim().starts_with("rust-src"))
    };
    step("rust-src (nightly)", rust_src, || {
        run_checked(
            &mut rustup(&["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly",
            "check network access to the rustup dist server",
        )
    })?;
    let linker = || Ok(find_bpf_linker().is_some());
    step(
        &format!("bpf-linker {BPF_LINKER_VERSION} (llvm-22)"),
        linker,
        install_bpf_linker,
    )?;
    let venv = crate::util::workspace_root().join(K8S_VENV);
    let have = || Ok(venv.join("bin/kubernetes-validate").is_file());
    let install = || pip_venv(&venv, K8S_PYPI);
    step("pip kubernetes-validate", have, install)?;
    let venv = Path::new(PERFETTO_VENV);
    let have = || Ok(venv.join("bin/python").is_file() && perfetto_schema_loads(venv));
    let install = || pip_venv(venv, PERFETTO_PYPI);
    step(&format!("pip {PERFETTO_PYPI}"), have, install)
}

/// `python3 -m venv VENV`, then its pip installs `spec` (`name==version`).
fn pip_venv(venv: &Path, spec: &str) -> Result<()> {
    let fix = "needs python3-venv (apt step) and PyPI reachable";
    let mut venv_cmd = Command::new("python3");
    venv_cmd.args(["-m", "venv"]).arg(venv);
    run_checked(&mut venv_cmd, "python3 -m venv", fix)?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", spec]);
    let name = spec.split("==").next().unwrap_or(spec);
    run_checked(&mut pip, &format!("pip install {name}"), fix)
}

/// The venv with PyPI's `perfetto` package, whose compiled
/// `perfetto_trace_pb2` is the official schema the root tests decode
/// `--timeline` files with (tests/tests/perfetto.rs), offline.
pub const PERFETTO_VENV: &str = "/opt/affin-trace-venv";
const PERFETTO_PYPI: &str = "perfetto==0.59.1";

/// Whether the venv's python imports the compiled schema.
fn perfetto_schema_loads(venv: &Path) -> bool {
    Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where `kubernetes-validate` (PyPI) lives: the deploy/ tests run it to
/// validate the DaemonSet and Service against the Kubernetes schemas it
/// ships (offline).
pub const K8S_VENV: &str = "target/venv-k8s";
const K8S_PYPI: &str = "kubernetes-validate==1.37.0";

/// Says `present` when `have` holds; else installs, then checks again.
fn step(
    name: &str,
    have: impl Fn() -> Result<bool>,
    install: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if have()? {
        println!("setup: {name}: present");
        return Ok(());
    }
    println!("setup: {name}: installing ...");
    install()?;
    if !have()? {
        bail!("{name}: the install reported success, but it is still missing");
    }
    println!("setup: {name}: installed");
    Ok(())
}

fn rustup(args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Whether a line of `program args`'s stdout passes `pred`.
fn stdout_has(program: &str, args: &[&str], pred: fn(&str) -> bool) -> Result<bool> {
    let out = output(program, args, RUSTUP_FIX)?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(pred))
}

/// Output of a command that must exist; stdout only, stdin closed.
fn output(program: &str, args: &[&str], fix: &str) -> Result<std::process::Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{program}`; {fix}"))
}

/// Packages of `pkgs` that dpkg does not report as installed.
fn missing_apt_packages<'a>(pkgs: &[&'a str]) -> Result<Vec<&'a str>> {
    let mut args = vec!["-W", "-f=${Package} ${Status}\\n"];
    args.extend(pkgs);
    // dpkg-query exits 1 when some package is unknown: read stdout anyway.
    let out = output("dpkg-query", &args, "this needs a Debian-based system")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed = |pkg: &str| {
        text.lines().any(|l| {
            l.strip_prefix(pkg).and_then(|r| r.strip_prefix(' ')) == Some("install ok installed")
        })
    };
    Ok(pkgs.iter().copied().filter(|p| !installed(p)).collect())
}

/// `apt-get update`, then `apt-get install` of `pkgs` (as root).
pub fn apt_install(pkgs: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "apt packages missing ({}): run as root: `sudo cargo xtask setup`",
            pkgs.join(" ")
        );
    }
    let fix = "check the apt sources (llvm-22-dev comes from bookworm-security) and the network";
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    };
    run_checked(&mut apt(&["update"]), "apt-get update", fix)?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(pkgs);
    run_checked(
        &mut install,
        &format!("apt-get install {}", pkgs.join(" ")),
        fix,
    )
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

fn install_bpf_linker() -> Result<()> {
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
    )
}
