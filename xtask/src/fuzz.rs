//! `cargo xtask fuzz [--seconds N] [--keep-going] [TARGET...]`: runs every
//! cargo-fuzz target in `fuzz/` (or the ones named) for N seconds each.
//!
//! Steps, each printed: setup (the eBPF toolchain, which the library's
//! build.rs needs), cargo-fuzz (installed with `cargo install cargo-fuzz
//! --locked` when missing), seeds, one build of all targets (`cargo +nightly
//! fuzz build -a`: release, debug assertions and overflow checks, ASan), then
//! per target: the built libFuzzer binary with `-max_total_time=N`, as
//! `cargo fuzz run` would start it, and a libFuzzer merge that keeps the
//! corpus minimal.
//!
//! Files, under `fuzz/`:
//! - `corpus/<target>/`: committed. `seed-*` files are real examples (this
//!   machine's /proc and /sys, tests/fixtures/) in the target's input format
//!   (fuzz/src/lib.rs); added when missing, never removed. Besides them, at
//!   most [`KEEP`] of the smallest inputs of the merged corpus.
//! - `corpus-extra/<target>/`: the rest of the merged corpus (git-ignored),
//!   read again by later runs so no coverage is lost locally.
//! - `artifacts/<target>/`: crash-, oom-, timeout- and slow-unit- inputs.
//! - `logs/<target>.log`: libFuzzer's output of the last run.
//! - `kernel.dict`: the libFuzzer dictionary every target runs with.
//!
//! The run fails (exit 1) when any target leaves a crash, oom or timeout.

use crate::setup;
use crate::util::{child_path, run_checked, which, workspace_root};
use anyhow::{Context as _, Result, bail};
use std::collections::BTreeSet;
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
/// Seeds larger than this are skipped (the epyc fixture is 176 KiB).
const SEED_MAX_BYTES: usize = 64 * 1024;

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
    runs: u64,
    cov: (u64, u64),
    new_units: u64,
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
    for t in &targets {
        let added = seed(t)?;
        println!("fuzz: {t}: {added} seeds added to fuzz/corpus/{t}/");
    }
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
        println!(
            "{:<15} {:>9} runs  cov {} -> {} (+{})  {} new units  corpus {} committed + {} extra  {} crashes{}",
            o.target,
            o.runs,
            o.cov.0,
            o.cov.1,
            o.cov.1.saturating_sub(o.cov.0),
            o.new_units,
            o.corpus.0,
            o.corpus.1,
            o.failures.len(),
            o.problem
                .as_ref()
                .map(|p| format!("  (FAILED: {p})"))
                .unwrap_or_default()
        );
        for a in &o.failures {
            println!(
                "    {}\n      reproduce: cargo +nightly fuzz run -a {} {}\n      minimize:  cargo +nightly fuzz tmin -a {} {}",
                a.display(),
                o.target,
                a.display(),
                o.target,
                a.display()
            );
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
        lib_args.extend(
            [
                "-fork=1",
                "-ignore_crashes=1",
                "-ignore_ooms=1",
                "-ignore_timeouts=1",
            ]
            .map(String::from),
        );
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
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let stats = Stats::parse(&text);
    let new: Vec<PathBuf> = files(&artifacts)
        .into_iter()
        .filter(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= start)
        })
        .collect();
    let (slow, failures): (Vec<PathBuf>, Vec<PathBuf>) = new.into_iter().partition(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("slow-unit-"))
    });
    let problem = (!status.success() && failures.is_empty())
        .then(|| format!("libFuzzer exited with {status}; see fuzz/logs/{t}.log"));
    let kept = merge(&bin, t, &corpus, &extra).unwrap_or_else(|e| {
        println!("fuzz: {t}: corpus not merged ({e:#}); left as it is");
        (count(&corpus), count(&extra))
    });
    Ok(Outcome {
        target: t.to_string(),
        runs: stats.runs,
        cov: (stats.cov_start, stats.cov_end),
        new_units: stats.new_units,
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
    Ok((count(corpus), count(extra)))
}

fn is_seed(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
}

/// Entries of `dir` that pass `keep`, sorted (none if it is unreadable).
fn entries(dir: &Path, keep: fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    v.sort();
    v
}

fn files(dir: &Path) -> Vec<PathBuf> {
    entries(dir, Path::is_file)
}

fn count(dir: &Path) -> usize {
    files(dir).len()
}

// ---- seeds ---------------------------------------------------------------

/// Writes the target's missing seeds; returns how many were added.
fn seed(t: &str) -> Result<usize> {
    let dir = fuzz_dir().join("corpus").join(t);
    fs::create_dir_all(&dir)?;
    let mut added = 0;
    for (name, data) in seeds(t) {
        let path = dir.join(format!("seed-{name}"));
        if data.len() <= SEED_MAX_BYTES && !path.exists() {
            fs::write(&path, data).with_context(|| format!("cannot write {}", path.display()))?;
            added += 1;
        }
    }
    Ok(added)
}

/// A file's bytes, or nothing (missing on this machine).
fn read(path: impl AsRef<Path>) -> Vec<(String, Vec<u8>)> {
    let path = path.as_ref();
    match fs::read(path) {
        Ok(d) => vec![(slug(&path.to_string_lossy()), d)],
        Err(_) => Vec::new(),
    }
}

/// A file-name-safe form of a path.
fn slug(s: &str) -> String {
    s.trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn literal(name: &str, text: &str) -> (String, Vec<u8>) {
    (name.to_string(), text.as_bytes().to_vec())
}

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures")
}

/// Subdirectories of a fixture directory, sorted.
fn cases(kind: &str) -> Vec<PathBuf> {
    entries(&fixtures().join(kind), Path::is_dir)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every file under `dir`, with its path relative to `dir`.
fn walk(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        // file_type() does not follow symlinks: no cycles.
        for e in fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let (p, Ok(ft)) = (e.path(), e.file_type()) else {
                continue;
            };
            if ft.is_dir() {
                go(base, &p, out);
            } else if !ft.is_file() {
                continue;
            } else if let (Ok(rel), Ok(d)) = (p.strip_prefix(base), fs::read(&p)) {
                out.push((rel.to_string_lossy().into_owned(), d));
            }
        }
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// Tree input (fuzz/src/lib.rs): `PATH NUL CONTENT NUL ...`; files holding
/// a NUL cannot be expressed and are left out.
fn tree(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, data) in files.iter().filter(|(_, d)| !d.contains(&0)) {
        out.extend_from_slice(path.as_bytes());
        out.push(0);
        out.extend_from_slice(data);
        out.push(0);
    }
    out
}

/// Stat-line input (fuzz/src/lib.rs, `StatLine`) from a real stat line,
/// optionally with another comm.
fn stat_input(line: &[u8], comm: Option<&[u8]>) -> Option<Vec<u8>> {
    let open = line.iter().position(|&b| b == b'(')?;
    let close = line.iter().rposition(|&b| b == b')')?;
    let real_comm = line.get(open + 1..close)?;
    let rest = String::from_utf8_lossy(line.get(close + 1..)?);
    let mut tokens = rest.split_whitespace();
    let state = tokens.next()?.chars().next()?;
    let pid: i64 = String::from_utf8_lossy(&line[..open]).trim().parse().ok()?;
    let mut out = comm.unwrap_or(real_comm).to_vec();
    out.push(0);
    out.push(
        b"RSDZTtXxKWPI"
            .iter()
            .position(|&s| char::from(s) == state)? as u8,
    );
    out.extend_from_slice(&(pid as u64).to_le_bytes());
    for tok in tokens {
        let v = tok
            .parse::<i64>()
            .map(|v| v as u64)
            .or_else(|_| tok.parse::<u64>())
            .ok()?;
        out.extend_from_slice(&v.to_le_bytes());
    }
    Some(out)
}

/// Files the cgroup code reads in each cgroup directory.
const CGROUP_FILES: &[&str] = &[
    "cgroup.controllers",
    "cpu.max",
    "cpu.cfs_quota_us",
    "cpu.cfs_period_us",
    "cpu.stat",
    "cpu.stat.local",
    "cpu.pressure",
    "cpuset.cpus.effective",
    "cpuset.effective_cpus",
];

/// This machine's cgroup view of this process, as a tree for pid 4242:
/// its /proc/self/cgroup and mountinfo, and the cgroup files on its path
/// in every cgroup mount.
fn machine_cgroup_tree() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let (Ok(cgroup), Ok(mountinfo)) = (
        fs::read_to_string("/proc/self/cgroup"),
        fs::read_to_string("/proc/self/mountinfo"),
    ) else {
        return files;
    };
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup"))
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    let mut seen = BTreeSet::new();
    for path in cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2)) {
        let mut dir = PathBuf::from(path.trim_start_matches('/'));
        loop {
            for m in &mounts {
                for f in CGROUP_FILES {
                    let p = Path::new(m).join(&dir).join(f);
                    if seen.insert(p.clone())
                        && let Ok(d) = fs::read(&p)
                    {
                        let rel = p.to_string_lossy().trim_start_matches('/').to_string();
                        files.push((rel, d));
                    }
                }
            }
            if !dir.pop() {
                break;
            }
        }
    }
    files.push(("proc/4242/cgroup".into(), cgroup.into_bytes()));
    files.push(("proc/self/mountinfo".into(), mountinfo.into_bytes()));
    if let Ok(s) = fs::read("/proc/self/status") {
        files.push(("proc/4242/status".into(), s));
    }
    files
}

/// Files of `dir` whose relative path starts with one of `prefixes`, with
/// `strip` removed from the front.
fn subtree(dir: &Path, prefixes: &[&str], strip: &str) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|(p, _)| prefixes.iter().any(|x| p.starts_with(x)))
        .map(|(p, d)| (p.trim_start_matches(strip).to_string(), d))
        .collect()
}

/// This machine's sysfs topology files, relative to /sys/devices/system.
fn machine_topology() -> Vec<(String, Vec<u8>)> {
    let base = Path::new("/sys/devices/system");
    let mut files = Vec::new();
    for f in [
        "cpu/online",
        "cpu/possible",
        "cpu/present",
        "cpu/isolated",
        "node/online",
    ] {
        if let Ok(d) = fs::read(base.join(f)) {
            files.push((f.to_string(), d));
        }
    }
    for (kind, list) in [("cpu", "cpu/online"), ("node", "node/online")] {
        let ids = fs::read_to_string(base.join(list)).unwrap_or_default();
        // Seeds only: "0-1" and "0" are what small machines show.
        let ids: Vec<u32> = ids
            .trim()
            .split(',')
            .flat_map(|r| match r.split_once('-') {
                Some((a, b)) => a.parse().unwrap_or(0)..=b.parse().unwrap_or(0),
                None => r.parse().unwrap_or(0)..=r.parse().unwrap_or(0),
            })
            .take(64)
            .collect();
        for id in ids {
            let mut rels: Vec<String> = if kind == "cpu" {
                [
                    "topology/physical_package_id",
                    "topology/die_id",
                    "topology/core_id",
                    "topology/thread_siblings_list",
                    "cpufreq/cpuinfo_max_freq",
                    "cpu_capacity",
                ]
                .map(|f| format!("cpu/cpu{id}/{f}"))
                .to_vec()
            } else {
                ["cpulist", "distance"]
                    .map(|f| format!("node/node{id}/{f}"))
                    .to_vec()
            };
            if kind == "cpu" {
                for i in 0..8 {
                    for f in ["level", "type", "shared_cpu_list", "size", "id"] {
                        rels.push(format!("cpu/cpu{id}/cache/index{i}/{f}"));
                    }
                }
            }
            for rel in rels {
                if let Ok(d) = fs::read(base.join(&rel)) {
                    files.push((rel, d));
                }
            }
        }
    }
    files
}

/// The seeds of one target: real files in its input format.
fn seeds(t: &str) -> Vec<(String, Vec<u8>)> {
    let mut s = Vec::new();
    match t {
        "cpulist" => {
            for f in [
                "/sys/devices/system/cpu/online",
                "/sys/devices/system/cpu/possible",
                "/sys/devices/system/cpu/present",
                "/sys/devices/system/cpu/isolated",
                "/sys/devices/system/node/node0/cpulist",
                "/sys/devices/system/cpu/cpu0/topology/thread_siblings_list",
                "/sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list",
            ] {
                s.extend(read(f));
            }
            for c in cases("sysfs") {
                let f = c.join("sys/devices/system/cpu/cpu1/cache/index2/shared_cpu_list");
                s.extend(read(&f).into_iter().map(|(_, d)| (name_of(&c), d)));
            }
            s.push(literal("issue", "0-3,8-11\n"));
            s.push(literal("stride", "0-1023:2/256"));
            s.push(literal("mixed", " 0,2-4 , 7-15:3/4,\n"));
        }
        "numa_maps" => {
            s.extend(read("/proc/self/numa_maps"));
            s.extend(read("/proc/1/numa_maps"));
            s.push(literal(
                "huge",
                "7f2a00000000 default file=/dev/hugepages/x huge dirty=3 N0=2 N1=1 kernelpagesize_kB=2048\n\
                 55d0c0a00000 interleave:0-1 heap anon=120 dirty=120 active=0 N0=60 N1=60 kernelpagesize_kB=4\n",
            ));
        }
        "config" => {
            for p in files(&fixtures().join("config")) {
                s.extend(read(&p).into_iter().map(|(_, d)| (name_of(&p), d)));
            }
        }
        "btf_cache" => {
            s.extend(read("/run/affin-trace/btf-offsets"));
            s.push(literal(
                "debian",
                "v2 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) 6094551\n\
                 2496 2500 320 44 3000 4096\n10306 10310 10302 10304 10316\n",
            ));
        }
        "btf" => {
            s.push(("tiny".into(), tiny_btf()));
        }
        "proc_stat" => {
            let self_stat = fs::read("/proc/self/stat").unwrap_or_default();
            for pid in ["self", "1", "2"] {
                if let Some(d) = fs::read(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|l| stat_input(&l, None))
                {
                    s.push((format!("proc-{pid}-stat"), d));
                }
            }
            // Hostile names a process can give itself (prctl PR_SET_NAME,
            // or its executable's name), and long workqueue names.
            let hostile: [(&str, &[u8]); 9] = [
                ("paren-space", b"a) (b"),
                ("fake-fields", b") S 1 2 3"),
                ("open-paren", b"("),
                ("close-paren", b")"),
                ("newline", b"x\ny)"),
                ("spaces", b"a b  c "),
                ("not-utf8", b"\xff\xfe)\xc3"),
                ("empty", b""),
                ("kworker", b"kworker/u8:3-events_unbound"),
            ];
            for (name, comm) in hostile {
                if let Some(d) = stat_input(&self_stat, Some(comm)) {
                    s.push((format!("comm-{name}"), d));
                }
            }
        }
        "proc_status" => {
            for pid in ["self", "1", "2"] {
                s.extend(read(format!("/proc/{pid}/status")));
            }
            for c in cases("sysfs") {
                let f = c.join("proc/4242/status");
                s.extend(read(&f).into_iter().map(|(_, d)| (name_of(&c), d)));
            }
            if let Ok(st) = fs::read_to_string("/proc/self/status") {
                for (name, comm) in [("paren", "a) (b"), ("colon", "x: y"), ("escaped", "a\\nb")] {
                    let text: String = st
                        .lines()
                        .map(|l| {
                            if l.starts_with("Name:") {
                                format!("Name:\t{comm}\n")
                            } else {
                                format!("{l}\n")
                            }
                        })
                        .collect();
                    s.push((format!("name-{name}"), text.into_bytes()));
                }
            }
        }
        "text_escape" => {
            // Names a hostile program can give itself.
            for (n, b) in [
                ("plain", &b"worker-1"[..]),
                ("newline", b"a\nFAKE line"),
                ("osc", b"\x1b]0;pwned\x07"),
                ("bidi", "\u{202e}gpj.exe".as_bytes()),
                ("c1", "\u{9b}2J".as_bytes()),
                ("latin1", b"caf\xe9"),
                ("backslash", b"a\\nb"),
            ] {
                s.push((n.into(), b.to_vec()));
            }
        }
        "proc_misc" => {
            s.extend(read("/proc/stat"));
            s.extend(read("/proc/meminfo"));
            s.extend(read("/proc/self/schedstat"));
        }
        "cgroup_resolve" => {
            for c in cases("cgroup") {
                s.push((name_of(&c), tree(&walk(&c))));
            }
            s.push(("machine".into(), tree(&machine_cgroup_tree())));
        }
        "cgroup_stat" => {
            let mut dirs = Vec::new();
            for c in cases("cgroup") {
                for (p, _) in walk(&c)
                    .into_iter()
                    .filter(|(p, _)| p.ends_with("cpu.stat"))
                {
                    let d = c.join(p);
                    dirs.push((name_of(&c), d.parent().map(Path::to_path_buf)));
                }
            }
            dirs.push((
                "machine-v1".into(),
                Some(PathBuf::from("/sys/fs/cgroup/cpu")),
            ));
            dirs.push((
                "machine-v2".into(),
                Some(PathBuf::from("/sys/fs/cgroup/unified")),
            ));
            dirs.push((
                "machine-v2-root".into(),
                Some(PathBuf::from("/sys/fs/cgroup")),
            ));
            for (i, (case, dir)) in dirs.into_iter().enumerate() {
                let Some(dir) = dir else { continue };
                let parts: Vec<Vec<u8>> = ["cpu.stat", "cpu.stat.local", "cpu.pressure"]
                    .iter()
                    .map(|f| fs::read(dir.join(f)).unwrap_or_default())
                    .collect();
                if parts[0].is_empty() {
                    continue;
                }
                let half = parts.join(&0u8);
                let mut d = half.clone();
                d.push(0);
                d.extend_from_slice(&half);
                s.push((format!("{case}-{i}"), d));
            }
        }
        "allowed_cpus" => {
            for c in cases("sysfs") {
                s.push((name_of(&c), tree(&subtree(&c, &["proc/", "sys/fs/"], ""))));
            }
            s.push(("machine".into(), tree(&machine_cgroup_tree())));
        }
        "topology" => {
            for c in cases("sysfs") {
                let files = subtree(&c, &["sys/devices/system/"], "sys/devices/system/");
                s.push((name_of(&c), tree(&files)));
            }
            s.push(("machine".into(), tree(&machine_topology())));
        }
        "state_file" => {
            s.push(literal(
                "apply",
                r#"{"pid":4242,"start_time":1000,"applied_cpus":[0,1],"process_mask":[0,1,2,3],"threads":{"4242":[0,1,2,3],"4243":[2]}}"#,
            ));
            s.push(literal(
                "big-cpu",
                r#"{"pid":4242,"start_time":1000,"applied_cpus":[5000],"process_mask":[4294967295],"threads":{"1":[]}}"#,
            ));
        }
        "trace_json" => {
            s.push(literal("two-threads", TRACE_SEED));
        }
        "trace_features" => {
            // Unstructured bytes, not a file: every u64 is 0 or 1, lengths small.
            s.push(("small".into(), [1u8, 0, 0, 0, 0, 0, 0, 0].repeat(128)));
        }
        _ => {}
    }
    s
}

/// A minimal raw BTF blob (include/uapi/linux/btf.h, Documentation/bpf/btf.rst)
/// holding what `btf::task_offsets_from` and `btf::tracepoint_type_ids` look
/// for: `struct task_struct { thread_info { cpu }; pid; tgid; se {
/// sum_exec_runtime }; comm[16] }` and `typedef void (*btf_trace_<tp>)(void *)`
/// for each traced tracepoint. The machine's vmlinux BTF (~5 MiB) is too big
/// to be a useful seed.
fn tiny_btf() -> Vec<u8> {
    const INT: u32 = 1;
    const PTR: u32 = 2;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const TYPEDEF: u32 = 8;
    const FUNC_PROTO: u32 = 13;
    let mut strings = vec![0u8];
    let mut name = |s: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    let recs: Vec<Vec<u32>> = vec![
        vec![name("int"), info(INT, 0), 4, (1 << 24) | 32], // 1
        vec![name("long long unsigned int"), info(INT, 0), 8, 64], // 2
        vec![name("char"), info(INT, 0), 1, (2 << 24) | 8], // 3
        vec![name("unsigned int"), info(INT, 0), 4, 32],    // 4
        // 5: struct sched_entity { u64 sum_exec_runtime; }
        vec![
            name("sched_entity"),
            info(STRUCT, 1),
            8,
            name("sum_exec_runtime"),
            2,
            0,
        ],
        // 6: struct thread_info { u32 cpu; }
        vec![name("thread_info"), info(STRUCT, 1), 4, name("cpu"), 4, 0],
        vec![0, info(ARRAY, 0), 0, 3, 1, 16], // 7: char[16]
        // 8: struct task_struct, member offsets in bits
        vec![
            name("task_struct"),
            info(STRUCT, 5),
            40,
            name("thread_info"),
            6,
            0,
            name("pid"),
            1,
            64,
            name("tgid"),
            1,
            96,
            name("se"),
            5,
            128,
            name("comm"),
            7,
            192,
        ],
        vec![0, info(FUNC_PROTO, 1), 0, 0, 10], // 9: void (void *)
        vec![0, info(PTR, 0), 0],               // 10: void *
        vec![0, info(PTR, 0), 9],               // 11: pointer to 9
        vec![name("btf_trace_sched_switch"), info(TYPEDEF, 0), 11],
        vec![name("btf_trace_sched_migrate_task"), info(TYPEDEF, 0), 11],
        vec![name("btf_trace_sched_wakeup"), info(TYPEDEF, 0), 11],
        vec![name("btf_trace_sched_wakeup_new"), info(TYPEDEF, 0), 11],
        vec![name("btf_trace_sched_process_exit"), info(TYPEDEF, 0), 11],
    ];
    let types: Vec<u8> = recs
        .iter()
        .flatten()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.extend_from_slice(&[1, 0]); // version, flags
    for w in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_le_bytes()); // hdr_len, type_off/len, str_off/len
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

/// A small recorded trace: two threads over three 1 s intervals.
const TRACE_SEED: &str = r#"{"pids":[4242],"tids":[],"duration_ns":3000000000,"interval_ns":1000000000,
"threads":[{"tid":4242,"tgid":4242,"comm":"main","cpu_time_ns":2400000000,"per_cpu_ns":{"0":1200000000,"1":1200000000},
"voluntary_switches":10,"involuntary_switches":300,"migrations":{"smt":3,"llc":2,"cross_llc":1,"cross_numa":0},
"runq":{"hist":[0,0,0,0,0,0,0,0,0,0,1,4,9,3,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"count":18,"total_ns":180000,"max_ns":40000},
"preempted_wait_ns":5000000,"exited":false,"cpu_ns_per_interval":[800000000,800000000,800000000]},
{"tid":4243,"tgid":4242,"comm":"io","cpu_time_ns":30000000,"per_cpu_ns":{"1":30000000},
"voluntary_switches":900,"involuntary_switches":2,"migrations":{"smt":0,"llc":40,"cross_llc":0,"cross_numa":0},
"runq":{"hist":[0,0,0,0,0,0,0,0,0,0,800,100],"count":900,"total_ns":1000000,"max_ns":3000},
"preempted_wait_ns":0,"exited":true,"cpu_ns_per_interval":[10000000,20000000]}],
"intervals":[{"wall_ns":1000000000,"cpu_ns":810000000,"migrations":20,"rss_bytes":104857600},
{"wall_ns":1000000000,"cpu_ns":820000000,"migrations":20,"rss_bytes":104857600},
{"wall_ns":1000000000,"cpu_ns":800000000,"migrations":6,"rss_bytes":110000000}],
"system_busy_ns":{"0":1500000000,"1":2000000000},"dropped_events":0,"exited_pids":[],"attach_mode":"tp_btf","nr_cpus":2,
"mem_total_bytes":8589934592}"#;
