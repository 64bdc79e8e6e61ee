//! `cargo xtask test`: unit tests (the purity check among them:
//! affinity-userspace/tests/purity.rs), a build of the fuzz targets, then
//! root integration tests against the release binary, then a summary parsed
//! from cargo test's result lines.

use crate::binary::{Hooks, cargo_build};
use crate::setup;
use crate::util::{cargo, is_root, release_bin, words};
use anyhow::{Context as _, Result};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// Only the unit tests (no root needed).
    #[arg(long, conflicts_with = "root")]
    unit: bool,
    /// Only the root integration tests (builds the release binary first).
    #[arg(long)]
    root: bool,
    /// Run only tests whose name contains this string (both phases); in the
    /// root phase, a root test file's name (`accuracy` for
    /// tests/tests/accuracy.rs) runs that whole file.
    filter: Option<String>,
}

/// Outcome of one phase: counts summed over its `test result:` lines.
#[derive(Default)]
struct Phase {
    name: &'static str,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Why the phase failed, beyond failed tests (exit status, no tests, ...).
    problem: Option<String>,
}

impl Phase {
    fn ok(&self) -> bool {
        self.failed == 0 && self.problem.is_none()
    }
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    let mut phases = Vec::new();
    if !args.root {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace"])
            .args(["--exclude", "affinity-tests", "--exclude", "affinity-ebpf"])
            .args(&args.filter);
        phases.push(run_phase("unit tests", cmd)?);
        if args.filter.is_none() {
            phases.push(fuzz_build()?);
        }
    }
    if !args.unit {
        phases.push(root_phase(args.filter.as_deref())?);
    }

    println!();
    for p in &phases {
        let ran = p.passed + p.failed + p.ignored > 0;
        let mut line = match (ran, &p.problem) {
            (false, None) => format!("{}: ok", p.name),
            _ => format!("{}: {} passed, {} failed", p.name, p.passed, p.failed),
        };
        if p.ignored > 0 {
            line += &format!(", {} ignored", p.ignored);
        }
        if let Some(problem) = &p.problem {
            line += &format!(" (FAILED: {problem})");
        }
        println!("{line}");
    }
    let passed: u64 = phases.iter().map(|p| p.passed).sum();
    let failed: u64 = phases.iter().map(|p| p.failed).sum();
    println!("xtask: {passed} passed, {failed} failed");
    if !phases.iter().all(Phase::ok) {
        std::process::exit(1);
    }
    Ok(())
}

/// Builds the fuzz targets (`cargo check`): the fuzz crate is outside the
/// workspace, so nothing else builds it, and a type its targets use can
/// change under them unseen until the next `cargo xtask fuzz`.
fn fuzz_build() -> Result<Phase> {
    let mut cmd = cargo();
    cmd.args(words(
        "check --manifest-path fuzz/Cargo.toml --bins --locked",
    ));
    run_phase("fuzz targets build", cmd)
}

/// Builds the release binary, then runs affinity-tests against it as root.
fn root_phase(filter: Option<&str>) -> Result<Phase> {
    let mut phase = Phase {
        name: "root tests",
        ..Phase::default()
    };
    if !is_root() {
        let msg = "root integration tests need root: run `sudo cargo xtask test`";
        eprintln!("xtask: {msg}");
        phase.problem = Some(msg.into());
        return Ok(phase);
    }
    if let Err(err) = cargo_build(true, Hooks::On) {
        eprintln!("xtask: {err:#}");
        phase.problem = Some("release build failed".into());
        return Ok(phase);
    }
    // Kernel state is machine-wide: a second `cargo xtask test` (another
    // checkout, a bench) waits here rather than counting our programs or
    // racing for our cgroups. The lock goes with the process.
    let _lock = machine_lock()?;
    let mut cmd = cargo();
    // --no-fail-fast: one failing test file must not hide the others' results.
    cmd.args(words("test --release --no-fail-fast -p affinity-tests"));
    // The library as the binary was built (one build, not two).
    cmd.args(["--features", "affinity-userspace/bench-hooks"]);
    // A file name selects the file; anything else filters test names.
    match filter {
        Some(f) if is_test_file(f) => cmd.args(["--test", f]),
        _ => cmd.args(filter),
    };
    // Kernel state (BPF programs, affinities) is shared: one test at a time.
    cmd.args(["--", "--test-threads=1"])
        .env("AFFIN_TRACE_BIN", release_bin());
    let mut phase = run_phase("root tests", cmd)?;
    if phase.problem.is_none() && phase.passed + phase.failed == 0 {
        phase.problem = Some("no root tests ran".into());
    }
    Ok(phase)
}

/// Takes /run/affin-trace-root-tests.lock (flock, exclusive, blocking);
/// the bench takes it too.
pub fn machine_lock() -> Result<std::fs::File> {
    let path = "/run/affin-trace-root-tests.lock";
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    // std's File::lock is flock(2), as the `flock` command takes it.
    if file.try_lock().is_err() {
        println!("xtask: another root test run holds {path}; waiting for it");
        file.lock().with_context(|| format!("flock {path}"))?;
    }
    Ok(file)
}

/// Whether `name` is a root test file, tests/tests/<name>.rs.
fn is_test_file(name: &str) -> bool {
    crate::util::workspace_root()
        .join("tests/tests")
        .join(format!("{name}.rs"))
        .is_file()
}

/// Runs a `cargo test` command, echoing its stdout line by line while
/// parsing the `test result:` lines.
fn run_phase(name: &'static str, mut cmd: Command) -> Result<Phase> {
    let shown: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
    println!("xtask: {name}: cargo {}", shown.join(" "));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{name}: could not start cargo test"))?;
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut phase = Phase {
        name,
        ..Phase::default()
    };
    let mut out = std::io::stdout();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("{name}: reading cargo test output"))?;
        if n == 0 {
            break;
        }
        // Ignore a closed terminal: the counts still matter for the exit code.
        let _ = out.write_all(&buf).and_then(|()| out.flush());
        if let Some((p, f, i)) = parse_result(&String::from_utf8_lossy(&buf)) {
            phase.passed += p;
            phase.failed += f;
            phase.ignored += i;
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("{name}: waiting for cargo test"))?;
    if !status.success() {
        phase.problem = Some(match status.code() {
            Some(code) => format!("cargo exited with code {code}"),
            None => format!("cargo was killed ({status})"),
        });
    }
    Ok(phase)
}

/// Parses `test result: ok. 3 passed; 0 failed; 1 ignored; ...` into
/// (passed, failed, ignored).
fn parse_result(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let (mut passed, mut failed, mut ignored) = (None, None, 0);
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => passed = Some(n),
            "failed" => failed = Some(n),
            "ignored" => ignored = n,
            _ => {}
        }
    }
    Some((passed?, failed?, ignored))
}

#[cfg(test)]
mod tests {
    use super::parse_result;

    #[test]
    fn parses_ok_and_failed_lines() {
        assert_eq!(
            parse_result(
                "test result: ok. 42 passed; 0 failed; 3 ignored; 0 measured; \
                 0 filtered out; finished in 0.01s\n"
            ),
            Some((42, 0, 3))
        );
        assert_eq!(
            parse_result("test result: FAILED. 8 passed; 1 failed; 0 ignored; 0 measured"),
            Some((8, 1, 0))
        );
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(parse_result("test foo ... ok"), None);
        assert_eq!(parse_result("running 3 tests"), None);
        assert_eq!(parse_result("test result: garbage"), None);
    }
}
