//! Command-line interface (clap derive). Parsing only: no side effects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{analyze::classify::Thresholds, analyze::config::Config, kernel::probe::AttachChoice};

/// Exit code for bad input (unknown pid, bad flag values): nothing was done.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a failure while running (load, attach, I/O).
pub const EXIT_FAILURE: i32 = 1;

/// affin-trace: per-thread scheduler facts from eBPF (real migrations, time on
/// each CPU, voluntary and involuntary switches, run-queue delay), turned
/// into a CPU-affinity recommendation.
#[derive(Debug, Parser)]
#[command(name = "affin-trace", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Subcommand; without one, trace the targets given by the options.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Tracing options.
    #[command(flatten)]
    pub trace: TraceArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a built-in workload (one steady CPU-bound thread, one sleeping
    /// thread, one thread forced to hop CPUs) and report it.
    Demo {
        /// Tracing options (the duration defaults to 5 s here).
        #[command(flatten)]
        trace: Box<TraceArgs>,
    },
    /// Restore the CPU masks a previous `--apply` recorded for a process.
    Revert {
        /// The process to restore.
        #[arg(short, long = "pid", value_name = "PID")]
        pid: u32,
    },
    /// Print the CPU topology (no root needed).
    Topology {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Attach only an empty sched_switch program until SIGINT/SIGTERM or
    /// SECS pass: the overhead floor for `cargo xtask bench`.
    #[command(hide = true)]
    BenchFloor {
        /// How long to stay attached, in seconds.
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
    },
    /// Print the man page or a shell's completion script, or write them all
    /// into a directory (for packagers; `cargo xtask docs` runs it).
    #[command(hide = true)]
    #[command(group(clap::ArgGroup::new("what").required(true).args(["man", "completions", "out"])))]
    Docs {
        /// Print the affin-trace(1) man page.
        #[arg(long)]
        man: bool,
        /// Print the completion script for SHELL.
        #[arg(long, value_enum, value_name = "SHELL")]
        completions: Option<clap_complete::Shell>,
        /// Write every man page and every shell's completions into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The demo's workload itself (run by `demo`).
    #[command(hide = true)]
    DemoWorker {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// Report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A readable table.
    Text,
    /// One JSON document (see README for the contract).
    Json,
}

/// Options of a trace run.
#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Process to trace (all its threads, including ones created during the
    /// run). Repeat or separate with commas for several.
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Where /proc, /sys and cgroupfs are read: the live system's `/`
    /// (not an option; the seam for tests that build arguments in code).
    #[arg(skip)]
    pub root: crate::host::Root,
    /// Thread to trace (its process is traced, the report shows this thread).
    #[arg(short, long = "tid", value_name = "TID", value_delimiter = ',')]
    pub tids: Vec<u32>,
    /// Trace every process with this exact name (as `pgrep -x`); repeatable.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Trace every process in this cgroup directory (its cgroup.procs).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// After tracing, set the recommended CPUs on every thread of the
    /// targets (one transaction; revert with `affin-trace revert --pid P`).
    /// Without it nothing is changed.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: apply these CPUs instead of the recommendation.
    #[arg(long, value_name = "LIST", value_parser = parse_cpus, requires = "apply")]
    pub cpus: Option<CpuList>,
    /// With --apply: do not ask (required when stdin is not a terminal).
    #[arg(short, long, requires = "apply")]
    pub yes: bool,
    /// With --apply: trace again for the same duration and compare; revert
    /// automatically if the targeted figure got worse beyond noise.
    #[arg(long, requires = "apply")]
    pub verify: bool,
    /// With --apply: allow changing pid 1 (init), refused otherwise.
    #[arg(long, requires = "apply")]
    pub force: bool,
    /// With --verify: keep the new CPUs even if they made things worse.
    #[arg(long, requires = "verify")]
    pub keep: bool,
    /// How long to trace, in seconds (Ctrl-C ends early and still reports).
    /// With a command, the run ends when the command exits.
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<f64>,
    /// How often the kernel maps are read, in seconds [default: 1, or the
    /// duration when that is shorter].
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub interval: Option<f64>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Which program type to attach: tp_btf (fastest), raw_tp, or auto
    /// (tp_btf, falling back to raw_tp).
    #[arg(long, value_enum, default_value_t = AttachChoice::Auto)]
    pub attach: AttachChoice,
    /// Capacity of the per-thread kernel map; threads beyond it are counted
    /// as dropped events and reported.
    #[arg(long, value_name = "N", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..=4_194_304))]
    pub max_threads: u32,
    /// Classification thresholds from a TOML file (a `[thresholds]` table;
    /// see README). Flags below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// avg_cpu above this (% of one CPU) is CPU-intensive [default: 80].
    #[arg(long, value_name = "PCT")]
    pub cpu_intensive_pct: Option<f64>,
    /// CPU-intensive with variance below this (%^2) is steady [default: 100].
    #[arg(long, value_name = "VAR")]
    pub steady_variance: Option<f64>,
    /// Migrations per second above this is migration-heavy [default: 5].
    #[arg(long, value_name = "PER_S")]
    pub migration_rate: Option<f64>,
    /// Share of migrations leaving the L3 above this is cache-sensitive
    /// [default: 0.3].
    #[arg(long, value_name = "RATIO")]
    pub cache_miss_ratio: Option<f64>,
    /// avg_cpu below this (% of one CPU) is I/O-bound [default: 20].
    #[arg(long, value_name = "PCT")]
    pub io_bound_pct: Option<f64>,
    /// Print start-up timings and attach details on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Show a live view while tracing: per-CPU busy bars, a row per thread,
    /// the class so far and any throttling, redrawn each interval (keys: q
    /// quit, c/m/r/t sort). Needs a terminal on stdout; the report follows.
    #[arg(long)]
    pub watch: bool,
    /// Also draw the trace as SVG into FILE: on-CPU time per thread and CPU,
    /// migrations per thread by distance, and the source x destination CPU
    /// migration matrix. Opened before tracing.
    #[arg(long = "plot", visible_alias = "svg", value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Also record every switch, migration and wakeup of the targets'
    /// threads and write them to FILE as a Chrome JSON trace (open it in
    /// https://ui.perfetto.dev): a track per CPU, a track per thread,
    /// migrations as arrows between CPUs. Events that do not fit in the
    /// ring buffer are counted and reported as lost. Opened before tracing.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// With --timeline: size of the kernel ring buffer the events wait in
    /// between reads (every 20 ms), a power of two from 4K to 1G, with an
    /// optional K, M or G suffix (x1024). An event takes 48 bytes in it.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_buffer_size,
          requires = "timeline")]
    pub timeline_buffer: u32,
    /// Command to start and trace from its first instruction; affin-trace
    /// exits with its exit status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

impl TraceArgs {
    /// The interval: as given, else 1 s capped at the duration.
    pub fn interval(&self) -> f64 {
        self.interval
            .unwrap_or_else(|| self.duration.map_or(1.0, |d| d.min(1.0)))
    }

    /// Thresholds: defaults, then the config file, then the flags.
    pub fn thresholds(&self) -> Result<Thresholds, String> {
        let mut t = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?.thresholds,
            None => Thresholds::default(),
        };
        let set = |dst: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut t.cpu_intensive_pct, self.cpu_intensive_pct);
        set(&mut t.steady_variance, self.steady_variance);
        set(&mut t.migration_rate, self.migration_rate);
        set(&mut t.cache_miss_ratio, self.cache_miss_ratio);
        set(&mut t.io_bound_pct, self.io_bound_pct);
        t.validate().map_err(|e| e.to_string())?;
        Ok(t)
    }
}

/// A CPU list given on the command line (one value, "0-3,8").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(pub Vec<u32>);

/// Parses a CPU list such as "0-3,8".
pub fn parse_cpus(s: &str) -> Result<CpuList, String> {
    let v = crate::model::cpulist::parse(s).map_err(|e| e.to_string())?;
    if v.is_empty() {
        return Err("the CPU list is empty".into());
    }
    Ok(CpuList(v))
}

/// Parses a ring buffer size: "8M", "64K", "1G", "4096"; a power of two
/// from 4 KiB to 1 GiB.
pub fn parse_buffer_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 8M, 512K)"))?;
    let bytes = n.saturating_mul(mult);
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "{s} must be a power of two from 4K to 1G (the kernel's ring buffer rule)"
        ));
    }
    Ok(bytes as u32)
}

/// Longest accepted duration or interval: a day.
pub const MAX_SECONDS: f64 = 86_400.0;

/// Parses a positive number of seconds ("30", "0.5"), at most a day.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds (e.g. 30 or 0.5)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{s} must be more than 0 seconds"));
    }
    if v > MAX_SECONDS {
        return Err(format!("{s} is more than a day ({MAX_SECONDS} s)"));
    }
    if v < 0.01 {
        return Err(format!("{s} is below the 0.01 s resolution"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("affin-trace").chain(args.iter().copied()))
    }

    #[test]
    fn several_pids_by_repeat_and_comma() {
        let c = parse(&["--pid", "1,2", "-p", "3"]).unwrap();
        assert_eq!(c.trace.pids, vec![1, 2, 3]);
    }

    #[test]
    fn command_after_double_dash() {
        let c = parse(&["--format", "json", "--", "sleep", "1"]).unwrap();
        assert_eq!(c.trace.command, vec!["sleep", "1"]);
        assert_eq!(c.trace.format, Format::Json);
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in ["0", "-1", "abc", "1e9", "NaN", "0.001"] {
            assert!(parse(&["--duration", bad, "--pid", "1"]).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&["-d", "2.5", "-p", "1"]).unwrap().trace.duration,
            Some(2.5)
        );
    }

    #[test]
    fn defaults() {
        let c = parse(&["--pid", "1"]).unwrap();
        assert_eq!(c.trace.interval(), 1.0);
        let short = parse(&["--pid", "1", "-d", "0.3"]).unwrap();
        assert_eq!(short.trace.interval(), 0.3);
        assert_eq!(c.trace.duration, None);
        assert_eq!(c.trace.attach, AttachChoice::Auto);
    }

    #[test]
    fn threshold_flags_override_defaults_and_are_validated() {
        let c = parse(&["-p", "1", "--migration-rate", "2.5"]).unwrap();
        let t = c.trace.thresholds().unwrap();
        assert_eq!(t.migration_rate, 2.5);
        assert_eq!(t.cpu_intensive_pct, 80.0);
        let bad = parse(&["-p", "1", "--cache-miss-ratio", "7"]).unwrap();
        assert!(bad.trace.thresholds().is_err());
    }

    #[test]
    fn a_missing_config_file_is_an_error_naming_it() {
        let c = parse(&["-p", "1", "--config", "/nonexistent/affin.toml"]).unwrap();
        let e = c.trace.thresholds().unwrap_err();
        assert!(e.contains("/nonexistent/affin.toml"), "{e}");
    }

    #[test]
    fn apply_options_need_apply() {
        assert!(parse(&["-p", "1", "--yes"]).is_err());
        assert!(parse(&["-p", "1", "--cpus", "1"]).is_err());
        assert!(parse(&["-p", "1", "--apply", "--keep"]).is_err());
        let c = parse(&[
            "-p", "1", "--apply", "--cpus", "0-2", "--verify", "--keep", "-y",
        ])
        .unwrap();
        assert_eq!(c.trace.cpus, Some(CpuList(vec![0, 1, 2])));
        assert!(c.trace.apply && c.trace.verify && c.trace.keep && c.trace.yes);
        assert!(parse(&["-p", "1", "--apply", "--cpus", "x"]).is_err());
    }

    #[test]
    fn plot_is_the_flag_and_svg_its_alias() {
        let c = parse(&["-p", "1", "--plot", "a.svg"]).unwrap();
        assert_eq!(c.trace.plot, Some(PathBuf::from("a.svg")));
        let c = parse(&["-p", "1", "--svg", "b.svg"]).unwrap();
        assert_eq!(c.trace.plot, Some(PathBuf::from("b.svg")));
    }

    #[test]
    fn timeline_buffer_is_a_power_of_two_and_needs_timeline() {
        assert_eq!(parse_buffer_size("8M"), Ok(8 << 20));
        assert_eq!(parse_buffer_size("4k"), Ok(4096));
        assert_eq!(parse_buffer_size("1G"), Ok(1 << 30));
        assert_eq!(parse_buffer_size("65536"), Ok(65536));
        for bad in ["3M", "2K", "2G", "0", "x", "", "-4K"] {
            assert!(parse_buffer_size(bad).is_err(), "{bad}");
        }
        let c = parse(&["-p", "1", "--timeline", "t.json"]).unwrap();
        assert_eq!(c.trace.timeline_buffer, 8 << 20);
        assert!(parse(&["-p", "1", "--timeline-buffer", "1M"]).is_err());
        let c = parse(&[
            "-p",
            "1",
            "--timeline",
            "t.json",
            "--timeline-buffer",
            "64K",
        ])
        .unwrap();
        assert_eq!(c.trace.timeline_buffer, 65536);
    }

    #[test]
    fn revert_takes_a_pid() {
        assert!(matches!(
            parse(&["revert", "--pid", "7"]).unwrap().command,
            Some(Command::Revert { pid: 7 })
        ));
    }

    #[test]
    fn subcommands_parse() {
        assert!(matches!(
            parse(&["demo"]).unwrap().command,
            Some(Command::Demo { .. })
        ));
        assert!(matches!(
            parse(&["topology", "--format", "json"]).unwrap().command,
            Some(Command::Topology {
                format: Format::Json
            })
        ));
    }
}
