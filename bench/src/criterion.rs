//! Phase 7: the criterion benches of the pure hot paths
//! (affinity-userspace/benches/: the timeline build, the analysis of the
//! recorded traces, and any other bench there), run with `cargo bench -p
//! affinity-userspace --benches` and read back from criterion's
//! `target/criterion/<group>/<bench>/new/estimates.json` so that
//! BENCHMARKS.md carries their figures from the same run.

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::SystemTime;
use xtask::util::{cargo, entries, workspace_root};

/// The command, as BENCHMARKS.md prints it.
pub const COMMAND: &str = "cargo bench -p affinity-userspace --benches";

/// One bench's figures (ns per iteration).
#[derive(Serialize, Deserialize)]
pub struct Figure {
    /// `group/bench`.
    pub name: String,
    pub median_ns: f64,
    pub mean_ns: f64,
    /// 95% confidence interval of the mean.
    pub mean_ci_ns: (f64, f64),
    /// Elements per iteration, where the bench declares a throughput.
    pub elements: Option<u64>,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

#[derive(Deserialize)]
struct Benchmark {
    #[serde(default)]
    throughput: Option<serde_json::Value>,
}

pub fn phase() -> Result<Vec<Figure>> {
    let started = SystemTime::now();
    println!("bench: criterion: {COMMAND}");
    let status = cargo()
        .args(["bench", "-p", "affinity-userspace", "--benches"])
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("{COMMAND} failed ({status}); see its output above");
    }
    let figures = read(&workspace_root().join("target/criterion"), started)?;
    if figures.is_empty() {
        bail!("{COMMAND} wrote no estimates under target/criterion");
    }
    Ok(figures)
}

/// The estimates written since `since` (older ones are earlier runs').
fn read(dir: &Path, since: SystemTime) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    for group in sorted(dir) {
        for bench in sorted(&group) {
            let file = bench.join("new/estimates.json");
            let fresh = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let text = std::fs::read_to_string(&file)?;
            let e: Estimates = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            let elements = std::fs::read_to_string(bench.join("new/benchmark.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Benchmark>(&t).ok())
                .and_then(|b| b.throughput?.get("Elements")?.as_u64());
            let name = |p: &Path| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            };
            out.push(Figure {
                name: format!("{}/{}", name(&group), name(&bench)),
                median_ns: e.median.point_estimate,
                mean_ns: e.mean.point_estimate,
                mean_ci_ns: (
                    e.mean.confidence_interval.lower_bound,
                    e.mean.confidence_interval.upper_bound,
                ),
                elements,
            });
        }
    }
    Ok(out)
}

/// Subdirectories, sorted (criterion's `report/` is not a group).
fn sorted(dir: &Path) -> Vec<std::path::PathBuf> {
    entries(dir, |p| p.is_dir() && !p.ends_with("report"))
}

/// "1.23 ms" from ns.
pub fn duration(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} us", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fixtures/criterion: one bench's estimates, and criterion's `report/`.
    #[test]
    fn reads_the_estimates_of_this_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/criterion");
        let f = read(&dir, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(f.len(), 1);
        let (name, elements) = (f[0].name.as_str(), f[0].elements);
        assert_eq!((name, elements), ("timeline/build", Some(1000)));
        let ci = (2.5e6 - 1.0, 2.5e6 + 1.0);
        assert_eq!((f[0].median_ns, f[0].mean_ci_ns), (2.4e6, ci));
        assert_eq!(duration(f[0].median_ns), "2.40 ms");
        // Estimates older than the run are another run's.
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(read(&dir, later).unwrap().is_empty());
    }
}
