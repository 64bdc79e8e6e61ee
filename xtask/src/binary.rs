//! `build`, `run` and `install`: the affin-trace binary itself.

use crate::setup;
use crate::util::{cargo, is_root, release_bin, run_checked, which};
use anyhow::{Context as _, Result};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::Command;

const INSTALL_DIR: &str = "/usr/local/bin";

/// Which build of affin-trace: the product, or with the test and bench
/// hooks (the `bench-hooks` feature: `bench-floor`, the floor programs,
/// the AFFIN_TRACE_* environment hooks).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// The product (`build`, `run`, `install`, `docs`).
    Off,
    /// For the root tests and the bench.
    On,
}

/// `cargo build -p affinity-userspace [--release]`, after setup.
pub fn build(release: bool) -> Result<()> {
    setup::run()?;
    cargo_build(release, Hooks::Off)
}

/// The build alone (setup already done).
pub fn cargo_build(release: bool, hooks: Hooks) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "affinity-userspace"]);
    if release {
        cmd.arg("--release");
    }
    if hooks == Hooks::On {
        cmd.args(["--features", "bench-hooks"]);
    }
    run_checked(
        &mut cmd,
        "cargo build -p affinity-userspace",
        "see the compiler output above; `cargo xtask setup` installs the eBPF toolchain",
    )
}

/// Release build, then `affin-trace ARGS` (default `demo`); exits with its code.
pub fn run(args: Vec<String>) -> Result<()> {
    setup::run()?;
    cargo_build(true, Hooks::Off)?;
    let args = if args.is_empty() {
        vec!["demo".to_string()]
    } else {
        args
    };
    let bin = release_bin();
    let mut cmd = match which("sudo").filter(|_| !is_root()) {
        Some(sudo) => {
            let mut cmd = Command::new(sudo);
            cmd.arg(&bin);
            cmd
        }
        None => Command::new(&bin),
    };
    cmd.args(&args);
    let status = cmd
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(1));
    std::process::exit(code);
}

/// Release build, copied to /usr/local/bin/affin-trace with mode 0755.
pub fn install() -> Result<()> {
    setup::run()?;
    cargo_build(true, Hooks::Off)?;
    let src = release_bin();
    let dest = Path::new(INSTALL_DIR).join("affin-trace");
    // Copy next to the target and rename, so a running affin-trace is replaced
    // atomically instead of failing with "text file busy".
    let tmp = Path::new(INSTALL_DIR).join(".affin-trace.xtask-tmp");
    let fix = "run as root: `sudo cargo xtask install`";
    std::fs::copy(&src, &tmp)
        .with_context(|| format!("copying {} to {}; {fix}", src.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 0755 {}; {fix}", tmp.display()))?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("moving {} to {}; {fix}", tmp.display(), dest.display()))?;
    println!("install: {} -> {}", src.display(), dest.display());
    println!(
        "install: {INSTALL_DIR} is on root's PATH (and in sudo's secure_path): \
         run `sudo affin-trace demo`"
    );
    Ok(())
}
