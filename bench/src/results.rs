//! What a bench run gathered ([`Results`]), derived figures (medians,
//! paired differences, ratios), and the environment it ran in.

use super::criterion::Figure;
use super::parse::{Prog, TraceReport, med, median, quantile};
use super::pipe::{Cfg, Stats};
use super::render::{met, times};
use super::serve::ServeRun;
use super::startup::Startup;
use super::threads::ThreadsRun;
use super::{Ctx, Phase, T_ADDED_RATIO};
use anyhow::{Context as _, Result};
use procfs::Current as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xtask::util::{which, workspace_root};

/// Where and with what the bench ran.
#[derive(Serialize, Deserialize)]
pub struct Env {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub tool_version: String,
    pub commit: String,
    pub perf: String,
    pub bpftrace: String,
    pub bpftool: String,
    pub command: String,
}

/// Everything measured, filled phase by phase.
#[derive(Default, Serialize, Deserialize)]
pub struct Results {
    /// The phases run (all, or those given to --only).
    pub phases: Vec<Phase>,
    pub loops: u64,
    pub rounds: usize,
    pub calibration_us: Option<f64>,
    pub perf_stat_switches_per_op: Option<f64>,
    pub samples: [Vec<f64>; 5],
    pub d_reports: Vec<TraceReport>,
    pub c_reports: Vec<TraceReport>,
    /// Runs redone because another affin-trace held programs after them,
    /// and the samples kept although it still did (after 3 tries).
    pub redone: usize,
    pub contaminated: Vec<String>,
    /// Peak RSS (KiB) of bench-floor and of affin-trace in (c), per run.
    pub floor_rss: Vec<u64>,
    pub c_rss: Vec<u64>,
    pub e_skipped: Option<String>,
    pub stats: Option<Result<Stats, String>>,
    pub startup: Option<Result<Startup, String>>,
    pub small: Option<Result<ThreadsRun, String>>,
    pub large: Option<Result<ThreadsRun, String>>,
    pub criterion: Option<Result<Vec<Figure>, String>>,
    /// Absent in runs saved before phase 8 existed.
    #[serde(default)]
    pub serve: Option<Result<ServeRun, String>>,
    pub checks: Vec<(String, bool)>,
}

impl Results {
    pub fn med(&self, cfg: Cfg) -> Option<f64> {
        med(&self.samples[cfg.index()])
    }

    /// Context switches per pipe round trip, as (d) counted them.
    pub fn switches_per_op(&self) -> Option<f64> {
        let per: Vec<f64> = self
            .d_reports
            .iter()
            .map(|r| (r.voluntary + r.involuntary) as f64 / self.loops as f64)
            .collect();
        med(&per)
    }

    /// Added ns per context switch of `cfg` over (a).
    pub fn added_ns(&self, cfg: Cfg) -> Option<f64> {
        Some((self.med(cfg)? - self.med(Cfg::A)?) * 1e3 / self.switches_per_op()?)
    }

    pub fn ratio(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let (n, d) = (self.added_ns(num)?, self.added_ns(den)?);
        (d > 0.0).then_some(n / d)
    }

    /// Per-round added ns per switch: (config - (a) of the same round) /
    /// switches per op.
    pub fn paired(&self, cfg: Cfg) -> Vec<f64> {
        let spo = self.switches_per_op().unwrap_or(f64::NAN);
        let (a, c) = (&self.samples[Cfg::A.index()], &self.samples[cfg.index()]);
        a.iter().zip(c).map(|(a, c)| (c - a) * 1e3 / spo).collect()
    }

    /// Added ns per switch: the median of the per-round differences with
    /// (a), which cancels drift between rounds.
    pub fn paired_added_ns(&self, cfg: Cfg) -> Option<f64> {
        med(&self.paired(cfg))
    }

    /// num's median / den's upper quartile (paired figures): a cautious
    /// ratio when den is small next to the noise.
    pub fn ratio_cautious(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let d = self.paired(den);
        if d.is_empty() {
            return None;
        }
        let (n, d) = (self.paired_added_ns(num)?, quantile(&d, 0.75));
        (n > 0.0 && d > 0.0).then_some(n / d)
    }

    /// The paired ratio as text: "unbounded" when num's added cost is above
    /// 0 and den's is not (den is lost in the noise).
    pub fn ratio_text(&self, num: Cfg, den: Cfg) -> String {
        match (
            self.paired_ratio(num, den),
            self.paired_added_ns(num),
            self.paired_added_ns(den),
        ) {
            (Some(x), _, _) => times(Some(x)),
            (None, Some(n), Some(d)) if n > 0.0 && d <= 0.0 => {
                format!("unbounded ({} <= 0)", den.tag())
            }
            _ => "n/a".into(),
        }
    }

    /// The (d)/(b) target: met, not met, or n/a.
    pub fn added_ratio_status(&self) -> &'static str {
        match (
            self.paired_ratio(Cfg::D, Cfg::B),
            self.paired_added_ns(Cfg::D),
        ) {
            (Some(x), _) => met(x <= T_ADDED_RATIO),
            (None, Some(d)) if d > 0.0 && self.paired_added_ns(Cfg::B).is_some() => met(false),
            _ => "n/a",
        }
    }

    /// Per-round difference of added ns per switch, `num` - `den` (both
    /// against the same round's (a)): its median and interquartile range.
    pub fn round_diff(&self, num: Cfg, den: Cfg) -> Option<(f64, f64, f64)> {
        let d: Vec<f64> = self
            .paired(num)
            .iter()
            .zip(self.paired(den))
            .map(|(n, d)| n - d)
            .collect();
        (!d.is_empty()).then(|| (median(&d), quantile(&d, 0.25), quantile(&d, 0.75)))
    }

    pub fn paired_ratio(&self, num: Cfg, den: Cfg) -> Option<f64> {
        let (n, d) = (self.paired_added_ns(num)?, self.paired_added_ns(den)?);
        (d > 0.0).then_some(n / d)
    }

    /// The phases whose error the report keeps: (name in messages, name in
    /// the template, the error).
    pub fn failures(&self) -> [(&'static str, &'static str, Option<&String>); 6] {
        [
            ("bpf_stats", "stats", err(&self.stats)),
            ("start-up", "startup", err(&self.startup)),
            ("1,000 threads", "small", err(&self.small)),
            ("10,000 threads", "large", err(&self.large)),
            ("criterion", "criterion", err(&self.criterion)),
            ("serve", "serve", err(&self.serve)),
        ]
    }

    pub fn stat(&self, cfg: Cfg, name: &str) -> Option<&Prog> {
        let s = ok(&self.stats)?;
        let (_, p) = s.progs.iter().find(|(c, p)| *c == cfg && p.name == name)?;
        Some(p)
    }

    /// Wakeup-to-run waits in (d)'s report of the bpf_stats run.
    pub fn stats_d_runq(&self) -> Option<u64> {
        Some(ok(&self.stats)?.d_report.as_ref()?.runq_waits)
    }

    pub fn ns_per_event(&self, cfg: Cfg, name: &str) -> Option<f64> {
        self.stat(cfg, name)?.ns_per_event()
    }
}

/// A phase's figures, when it ran and did not fail.
pub fn ok<T>(x: &Option<Result<T, String>>) -> Option<&T> {
    x.as_ref()?.as_ref().ok()
}

fn err<T>(x: &Option<Result<T, String>>) -> Option<&String> {
    x.as_ref()?.as_ref().err()
}

pub fn check(results: &mut Results, what: String, ok: bool) {
    println!("bench: check {}: {what}", if ok { "OK" } else { "FAILED" });
    results.checks.push((what, ok));
}

pub fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The stdout of `program args` when it exits 0.
fn stdout_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_line_of(program: &Path, args: &[&str]) -> String {
    let out = stdout_of(program, args);
    out.and_then(|o| Some(o.lines().next()?.to_string()))
        .unwrap_or_else(|| "?".into())
}

pub fn environment(ctx: &Ctx) -> Env {
    let root = workspace_root().display().to_string();
    let git = |args: &[&str]| {
        let args = [&["-C", root.as_str()], args].concat();
        Some(stdout_of(Path::new("git"), &args)?.trim().to_string())
    };
    let commit = match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{c} + uncommitted changes")
        }
        Some(c) => c,
        None => "?".into(),
    };
    let cpu_model = procfs::CpuInfo::current()
        .ok()
        .and_then(|c| c.model_name(0).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    Env {
        date: first_line_of(Path::new("date"), &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        tool_version: first_line_of(&ctx.bin, &["--version"]),
        commit,
        perf: first_line_of(&ctx.perf, &["--version"]),
        bpftrace: ctx
            .bpftrace
            .as_ref()
            .map_or_else(|| "absent".into(), |b| first_line_of(b, &["--version"])),
        bpftool: first_line_of(ctx.bpftool.argv.last().expect("bpftool"), &["version"]),
        command: format!("cargo xtask bench {}", args.join(" "))
            .trim_end()
            .to_string(),
    }
}

/// bpftrace, installed with apt-get when missing; Err(reason) when absent.
pub fn find_bpftrace() -> Result<PathBuf, String> {
    if let Some(b) = which("bpftrace") {
        return Ok(b);
    }
    println!("bench: bpftrace is missing: apt-get install bpftrace ...");
    xtask::setup::apt_install(&["bpftrace"]).map_err(|e| format!("{e:#}"))?;
    which("bpftrace").ok_or_else(|| "apt-get installed bpftrace but it is not on PATH".into())
}

pub fn tool(name: &str, package: &str) -> Result<PathBuf> {
    which(name).with_context(|| {
        format!("{name} is not installed: `apt-get install {package}` (or `cargo xtask setup`)")
    })
}

/// A run as saved next to its report, so that it can be rendered again.
#[derive(Serialize, Deserialize)]
pub struct Run {
    pub env: Env,
    pub took_s: f64,
    pub results: Results,
}
