//! Reading the tools' output (perf, affin-trace's `--verbose` lines and
//! JSON report, bpftool) and the small statistics the report uses.

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Names of affin-trace's programs start with one of these.
const OUR_PREFIXES: [&str; 3] = ["btf_sched_", "btf_cgroup_", "floor_"];

/// `perf bench sched pipe`: the number before "usecs/op".
pub fn parse_usecs_per_op(lines: &[String]) -> Option<f64> {
    lines.iter().find_map(|l| {
        let (num, _) = l.split_once("usecs/op")?;
        num.trim().parse().ok()
    })
}

/// affin-trace --verbose: "affin-trace: <what> at 12.3 ms" -> 12.3.
pub fn verbose_ms(lines: &[String], what: &str) -> Option<f64> {
    lines.iter().find_map(|l| {
        if !l.contains(what) {
            return None;
        }
        let (_, rest) = l.rsplit_once(" at ")?;
        rest.trim().strip_suffix("ms")?.trim().parse().ok()
    })
}

/// affin-trace with AFFIN_TRACE_READ_TIMES set: "affin-trace: interval 3
/// read in 0.712 ms, 0.530 ms of CPU (1001 threads)" -> (0.712, 0.530), for
/// each such line (CPU NaN where the line has none).
pub fn read_times(lines: &[String]) -> Vec<(f64, f64)> {
    lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" read in ")?;
            let (wall, rest) = rest.split_once(" ms")?;
            let cpu = rest
                .strip_prefix(", ")
                .and_then(|r| r.split_once(" ms of CPU"))
                .and_then(|(c, _)| c.trim().parse().ok())
                .unwrap_or(f64::NAN);
            Some((wall.trim().parse().ok()?, cpu))
        })
        .collect()
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// The median, `None` when `v` is empty.
pub fn med(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| median(v))
}

/// Linear-interpolated quantile (0..=1) of `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// What the bench reads from an affin-trace JSON report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceReport {
    pub pids: Vec<u64>,
    pub attach_mode: String,
    pub threads: u64,
    pub voluntary: u64,
    pub involuntary: u64,
    /// Wakeup-to-run waits measured (each took two clock reads).
    pub runq_waits: u64,
    pub dropped: u64,
}

pub fn read_report(path: &Path) -> Result<TraceReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading affin-trace's report {}", path.display()))?;
    let j: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let n = |p: &str| -> Result<u64> {
        j.pointer(p)
            .and_then(Value::as_u64)
            .with_context(|| format!("{} has no number at {p}", path.display()))
    };
    Ok(TraceReport {
        pids: (j.pointer("/target/pids").and_then(Value::as_array))
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
        attach_mode: j["attach_mode"].as_str().unwrap_or("?").to_string(),
        threads: n("/process/threads")?,
        voluntary: n("/process/voluntary_switches")?,
        involuntary: n("/process/involuntary_switches")?,
        runq_waits: n("/process/runq_latency_ns/count").unwrap_or(0),
        dropped: n("/dropped_events")?,
    })
}

/// One program as `bpftool prog show --json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Prog {
    pub id: u64,
    #[serde(default)]
    pub name: String,
    pub run_time_ns: Option<u64>,
    pub run_cnt: Option<u64>,
    /// The maps the program uses.
    #[serde(default)]
    pub map_ids: Vec<u64>,
    /// Size after the verifier's rewrites (8 bytes an instruction).
    pub bytes_xlated: Option<u64>,
    /// Machine code size.
    pub bytes_jited: Option<u64>,
    /// Instructions the verifier processed (not in bpftool 7.1's JSON:
    /// filled in by `programs::verified_insns`).
    #[serde(skip)]
    pub verified_insns: Option<u32>,
}

impl Prog {
    /// In-program time per run (ns), where bpf_stats counted runs.
    pub fn ns_per_event(&self) -> Option<f64> {
        let (t, n) = (self.run_time_ns?, self.run_cnt?);
        (n > 0).then(|| t as f64 / n as f64)
    }
}

/// One map as `bpftool map show --json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapInfo {
    pub id: u64,
    #[serde(default = "unknown")]
    pub name: String,
    #[serde(rename = "type", default = "unknown")]
    pub kind: String,
    #[serde(default)]
    pub max_entries: u64,
    /// Kernel memory charged for it.
    #[serde(rename = "bytes_memlock", default)]
    pub bytes: u64,
}

fn unknown() -> String {
    "?".into()
}

pub fn is_ours(name: &str) -> bool {
    OUR_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftool_programs() {
        let p: Vec<Prog> = serde_json::from_str(
            r#"[{"id":7,"type":"tracing","name":"btf_sched_switch","run_time_ns":900,"run_cnt":10,"map_ids":[3,4]},
                {"id":8,"name":"other"}]"#,
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].run_time_ns, Some(900));
        assert!(is_ours(&p[0].name) && !is_ours(&p[1].name));
        assert_eq!(p[1].run_cnt, None);
        assert_eq!(p[0].map_ids, vec![3, 4]);
        let m: Vec<MapInfo> = serde_json::from_str(
            r#"[{"id":3,"type":"array","name":"SLOTS","max_entries":16384,"bytes_memlock":135168}]"#,
        )
        .unwrap();
        assert_eq!(
            (m[0].id, m[0].bytes, m[0].name.as_str()),
            (3, 135168, "SLOTS")
        );
    }

    #[test]
    fn perf_and_verbose_lines() {
        let perf: Vec<String> = [
            "# Running 'sched/pipe' benchmark:",
            "     Total time: 0.747 [sec]",
            "       3.736105 usecs/op",
            "         267658 ops/sec",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(parse_usecs_per_op(&perf), Some(3.736105));
        let v: Vec<String> = [
            "affin-trace: offsets resolved at 0.5 ms",
            "affin-trace: programs attached (TpBtf) at 86.6 ms",
            "affin-trace: tracing at 89.0 ms",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(verbose_ms(&v, "programs attached"), Some(86.6));
        assert_eq!(verbose_ms(&v, "tracing at"), Some(89.0));
        let r: Vec<String> = [
            "affin-trace: interval 0 read in 0.749 ms, 0.5 ms of CPU (1001 threads)",
            "affin-trace: tracing at 89.0 ms",
            "affin-trace: interval 1 read in 12.5 ms, 9.25 ms of CPU (10001 threads)",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(read_times(&r), vec![(0.749, 0.5), (12.5, 9.25)]);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, 1.0, 3.0]), (1.0, 3.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.25), 2.0);
        assert_eq!(quantile(&[1.0, 2.0], 0.5), 1.5);
    }
}
