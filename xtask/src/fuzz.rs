//! `cargo xtask fuzz [--seconds N] [--keep-going] [TARGET...]`: runs every
//! cargo-fuzz target in `fuzz/` (or the ones named) for N seconds each.
//!
//! Steps, each printed: setup (the eBPF toolchain, which the library's
//! build.rs needs), cargo-fuzz (installed with `cargo install cargo-fuzz
//! --locked` when missing), one build of all targets (`cargo +nightly
//! fuzz build -a`: release, debug assertions and overflow checks, ASan), then
//! per target: the built libFuzzer binary with `-max_total_time=N`, as
//! `cargo fuzz run` would start it, and a libFuzzer merge that keeps the
//! corpus minimal.
//!
//! Files, under `fuzz/`:
//! - `corpus/<target>/`: committed. `seed-*` files are real examples (a
//!   machine's /proc and /sys, tests/fixtures/) in the target's input format
//!   (fuzz/src/lib.rs), written once and kept as files: a merge never
//!   removes them, and a new target gets its seeds as new `seed-*` files.
//!   Besides them, at most [`KEEP`] of the smallest inputs of the merged
//!   corpus.
//! - `corpus-extra/<target>/`: the rest of the merged corpus (git-ignored),
//!   read again by later runs so no coverage is lost locally.
//! - `artifacts/<target>/`: crash-, oom-, timeout- and slow-unit- inputs.
//! - `logs/<target>.log`: libFuzzer's output of the last run.
//! - `kernel.dict`: the libFuzzer dictionary every target runs with.
//!
//! The run fails (exit 1) when any target leaves a crash, oom or timeout.

use crate::setup;
use crate::util::{child_path, entries, run_checked, which, words, workspace_root};
use anyhow::{Context as _, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// Committed corpus files per target, seeds included.
const KEEP: usize = 64;
/// Larger inputs stay out of the committed corpus.
const KEEP_MAX_BYTES: u64 = 64 * 1024;
/// One input running longer than this is reported as a timeout (s).
const TIMEOUT_SECS: u64 = 10;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of fuzzing per target (libFuzzer -max_total_time).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Keep fuzzing after a crash (libFuzzer fork mode with
    /// -ignore_crashes/-ignore_ooms/-ignore_timeouts), to find several.
    #[arg(long)]
    keep_going: bool,
    /// Targets to run (default: all of `cargo fuzz list`).
    targets: Vec<String>,
}

/// What one target's run produced.
struct Outcome {
    target: String,
    stats: Stats,
    corpus: (usize, usize),
    failures: Vec<PathBuf>,
    slow: Vec<PathBuf>,
    problem: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    setup::run()?;
    cargo_fuzz()?;
    let all = list()?;
    let targets = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(" "));
            }
        }
        args.targets.clone()
    };
    println!("fuzz: building all targets (cargo +nightly fuzz build -a)");
    run_checked(
        fuzz_cmd().args(["build", "-a"]),
        "cargo +nightly fuzz build",
        "see the compiler output above",
    )?;
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_target(t, &args)?);
    }
    println!();
    let mut failed = false;
    for o in &outcomes {
        let (t, (kept, extra), crashes) = (&o.target, o.corpus, o.failures.len());
        let Stats {
            runs,
            cov_start: c0,
            cov_end: c1,
            new_units: new,
        } = o.stats;
        let problem = (o.problem.as_ref()).map_or(String::new(), |p| format!("  (FAILED: {p})"));
        println!(
            "{t:<15} {runs:>9} runs  cov {c0} -> {c1} (+{})  {new} new units  corpus {kept} \
             committed + {extra} extra  {crashes} crashes{problem}",
            c1.saturating_sub(c0)
        );
        for a in o.failures.iter().map(|a| a.display()) {
            println!("    {a}\n      reproduce: cargo +nightly fuzz run -a {t} {a}");
            println!("      minimize:  cargo +nightly fuzz tmin -a {t} {a}");
        }
        for a in &o.slow {
            println!("    slow (not a failure): {}", a.display());
        }
        failed |= !o.failures.is_empty() || o.problem.is_some();
    }
    if failed {
        bail!("fuzzing found crashes (listed above); each becomes a regression test");
    }
    println!("fuzz: no crashes");
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// `cargo +nightly fuzz` from the workspace root (the rustup proxy picks
/// nightly, which cargo-fuzz needs for -Zsanitizer).
fn fuzz_cmd() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["+nightly", "fuzz"])
        .current_dir(workspace_root())
        .env("PATH", child_path())
        .stdin(Stdio::null());
    cmd
}

/// The built target: `cargo fuzz build` puts it in fuzz/target/<triple>/release/.
/// Running it directly (as `cargo fuzz run` does after a build) keeps every
/// target on the one build made at the start, even if sources change
/// meanwhile, and skips a cargo invocation per run and per merge.
fn binary(t: &str) -> Result<PathBuf> {
    fs::read_dir(fuzz_dir().join("target"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("release").join(t))
        .filter(|p| p.is_file())
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .with_context(|| format!("no fuzz/target/*/release/{t} after `cargo fuzz build`"))
}

/// A libFuzzer binary with the environment `cargo fuzz run` gives it.
fn libfuzzer(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(workspace_root())
        .env("ASAN_OPTIONS", "detect_odr_violation=0")
        .stdin(Stdio::null());
    cmd
}

/// Installs cargo-fuzz when it is not on PATH (or in ~/.cargo/bin).
fn cargo_fuzz() -> Result<()> {
    if which("cargo-fuzz").is_some() {
        println!("fuzz: cargo-fuzz: present");
        return Ok(());
    }
    println!("fuzz: cargo-fuzz: installing (cargo install cargo-fuzz --locked) ...");
    run_checked(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .env("PATH", child_path())
            .stdin(Stdio::null()),
        "cargo install cargo-fuzz",
        "check that crates.io is reachable",
    )?;
    println!("fuzz: cargo-fuzz: installed");
    Ok(())
}

/// Target names, from `cargo fuzz list`.
fn list() -> Result<Vec<String>> {
    let out = fuzz_cmd()
        .arg("list")
        .output()
        .context("could not run `cargo +nightly fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo +nightly fuzz list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Fuzzes one target, merges its corpus, and collects the new artifacts.
fn run_target(t: &str, args: &Args) -> Result<Outcome> {
    let dir = fuzz_dir();
    let corpus = dir.join("corpus").join(t);
    let extra = dir.join("corpus-extra").join(t);
    let artifacts = dir.join("artifacts").join(t);
    for d in [&corpus, &extra, &artifacts, &dir.join("logs")] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // libFuzzer names an artifact by its content's SHA-1, so a crash found
    // again rewrites an existing file: count files written since the start.
    let start = SystemTime::now();
    let log_path = dir.join("logs").join(format!("{t}.log"));
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut lib_args = vec![
        format!("-max_total_time={}", args.seconds),
        format!("-timeout={TIMEOUT_SECS}"),
        "-print_final_stats=1".to_string(),
        format!("-dict={}", dir.join("kernel.dict").display()),
    ];
    if args.keep_going {
        lib_args.extend(words(
            "-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1",
        ));
    }
    let bin = binary(t)?;
    println!(
        "fuzz: {t}: fuzz/target/.../release/{t} -artifact_prefix=fuzz/artifacts/{t}/ {} fuzz/corpus/{t} fuzz/corpus-extra/{t}  (log: fuzz/logs/{t}.log)",
        lib_args.join(" ")
    );
    let status = libfuzzer(&bin)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(&lib_args)
        .args([&corpus, &extra])
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("could not start {}", bin.display()))?;
    let stats = Stats::parse(&fs::read_to_string(&log_path).unwrap_or_default());
    let new: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= start)
        })
        .collect();
    let (slow, failures): (Vec<PathBuf>, Vec<PathBuf>) =
        new.into_iter().partition(|p| name_starts(p, "slow-unit-"));
    let problem = (!status.success() && failures.is_empty())
        .then(|| format!("libFuzzer exited with {status}; see fuzz/logs/{t}.log"));
    let kept = merge(&bin, t, &corpus, &extra).unwrap_or_else(|e| {
        println!("fuzz: {t}: corpus not merged ({e:#}); left as it is");
        (files(&corpus).len(), files(&extra).len())
    });
    Ok(Outcome {
        target: t.to_string(),
        stats,
        corpus: kept,
        failures,
        slow,
        problem,
    })
}

/// Figures from libFuzzer's output.
#[derive(Default)]
struct Stats {
    runs: u64,
    cov_start: u64,
    cov_end: u64,
    new_units: u64,
}

impl Stats {
    /// Reads the starting coverage (`#N INITED cov: C`, else the first
    /// `#N: cov: C` of fork mode), the last `#N ... cov: C` line and, when printed, `stat::number_of_executed_units` and
    /// `stat::new_units_added` (plain mode only).
    fn parse(log: &str) -> Stats {
        let mut s = Stats::default();
        let mut corp_start = None;
        let mut corp_end = 0;
        for line in log.lines() {
            let value = |key: &str| -> Option<u64> {
                let rest = line.split_once(key)?.1.trim_start();
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                rest[..end].parse().ok()
            };
            if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
                s.runs = n.trim().parse().unwrap_or(s.runs);
            } else if let Some(n) = line.strip_prefix("stat::new_units_added:") {
                s.new_units = n.trim().parse().unwrap_or(s.new_units);
            } else if line.starts_with('#')
                && let Some(cov) = value("cov:")
            {
                let runs = value("#").unwrap_or(0);
                let corp = value("corp:").unwrap_or(0);
                // Plain mode starts with "#N INITED"; fork mode has no such
                // line, its first "#N: cov:" follows the seed corpus run.
                if line.contains("INITED") || corp_start.is_none() {
                    s.cov_start = cov;
                    corp_start = Some(corp);
                }
                s.cov_end = cov;
                s.runs = s.runs.max(runs);
                corp_end = corp;
            }
        }
        if s.new_units == 0 {
            s.new_units = corp_end.saturating_sub(corp_start.unwrap_or(corp_end));
        }
        s
    }
}

/// Merges corpus + extra into a minimal set, keeps the seeds and the
/// smallest inputs (up to KEEP) in `corpus`, moves the rest to `extra`.
/// Returns (files in corpus, files in extra).
fn merge(bin: &Path, t: &str, corpus: &Path, extra: &Path) -> Result<(usize, usize)> {
    let out = fuzz_dir().join("corpus-merge").join(t);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    // A crashing input met while merging is written like any artifact
    // (libFuzzer's default is the current directory: the repo root).
    let artifacts = fuzz_dir().join("artifacts").join(t);
    let status = libfuzzer(bin)
        .arg("-merge=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .args([&out, corpus, extra])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("merge exited with {status}");
    }
    let seeds: Vec<Vec<u8>> = files(corpus)
        .into_iter()
        .filter(|p| is_seed(p))
        .filter_map(|p| fs::read(p).ok())
        .collect();
    let mut merged: Vec<(u64, PathBuf)> = files(&out)
        .into_iter()
        .filter(|p| fs::read(p).is_ok_and(|d| !seeds.contains(&d)))
        .map(|p| (fs::metadata(&p).map_or(u64::MAX, |m| m.len()), p))
        .collect();
    merged.sort();
    for p in files(corpus).into_iter().filter(|p| !is_seed(p)) {
        fs::remove_file(p)?;
    }
    for p in files(extra) {
        fs::remove_file(p)?;
    }
    let room = KEEP.saturating_sub(seeds.len());
    for (i, (size, p)) in merged.iter().enumerate() {
        let to = if i < room && *size <= KEEP_MAX_BYTES {
            corpus
        } else {
            extra
        };
        fs::rename(p, to.join(p.file_name().expect("file name")))?;
    }
    fs::remove_dir_all(&out)?;
    Ok((files(corpus).len(), files(extra).len()))
}

fn is_seed(p: &Path) -> bool {
    name_starts(p, "seed-")
}

fn name_starts(p: &Path, prefix: &str) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
}

/// The files in `dir`, sorted (none if it is unreadable).
fn files(dir: &Path) -> Vec<PathBuf> {
    entries(dir, Path::is_file)
}
