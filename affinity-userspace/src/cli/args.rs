//! Command-line interface (clap derive). Parsing only: no side effects.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{analyze::classify::Thresholds, kernel::probe::AttachChoice};

/// Exit code for bad input (unknown pid, bad flag values): nothing was done.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for a failure while running (load, attach, I/O).
pub const EXIT_FAILURE: i32 = 1;

/// Shown at the end of `--help` (and in the man page).
pub const EXAMPLES: &str = "\
EXAMPLES:
  affin-trace --pid 1234                       trace 30 s, report, change nothing
  affin-trace --pid 1234 -d 10s -f json -o r.json
  affin-trace --comm nginx                     every process named nginx
  affin-trace --cgroup /mypod                  a cgroup, as the report prints it
  affin-trace --pod shop/encoder-0             a Kubernetes pod's containers on this node
  affin-trace serve                            the node agent: /metrics on 127.0.0.1:9464
  affin-trace -- stress-ng --cpu 2             a command, from its first instruction
  affin-trace --pid 1234 --apply --verify      apply the advice, check it, undo if worse
  affin-trace revert --comm nginx              put back what --apply changed
  affin-trace topology                         the machine's CPUs, caches and nodes";

/// affin-trace: per-thread scheduler facts from eBPF (real migrations, time on
/// each CPU, voluntary and involuntary switches, run-queue delay), turned
/// into a CPU-affinity recommendation.
#[derive(Debug, Parser)]
#[command(name = "affin-trace", version, about, long_about = None, after_help = EXAMPLES)]
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
    /// Restore the CPU masks a previous `--apply` recorded, for the
    /// processes named (pids, names, a cgroup) or for every record (--all).
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true)
        .args(["pid", "comm", "cgroup", "all"])))]
    Revert {
        /// Processes to restore; repeat or separate with commas. Each must
        /// have a record.
        #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',', value_parser = parse_pid)]
        pid: Vec<u32>,
        /// Every process with this exact name that has a record; repeatable.
        #[arg(long = "comm", value_name = "NAME")]
        comm: Vec<String>,
        /// Every process in this cgroup (directory, or /NAME as the report
        /// prints it) that has a record.
        #[arg(long, value_name = "PATH")]
        cgroup: Option<PathBuf>,
        /// Every process with a record.
        #[arg(long, conflicts_with_all = ["pid", "comm", "cgroup"])]
        all: bool,
    },
    /// Print the CPU topology (no root needed).
    Topology {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Attach only an empty sched_switch program until SIGINT/SIGTERM or
    /// SECS pass: the overhead floor for `cargo xtask bench` (only in
    /// builds with the `bench-hooks` feature).
    #[cfg(feature = "bench-hooks")]
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
    /// Run as a node agent: trace every cgroup with a CPU quota (or the
    /// --cgroup ones) continuously and serve /metrics (Prometheus),
    /// /findings (JSON) and /healthz. Changes no affinity; SIGTERM detaches
    /// everything and exits 0.
    Serve(ServeArgs),
    /// The demo's workload itself (run by `demo`).
    #[command(hide = true)]
    DemoWorker {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// Options of `affin-trace serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address and port to serve on. The default answers only on this
    /// host; a DaemonSet sets the pod's address.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub listen: std::net::SocketAddr,
    /// Seconds between reads of the kernel maps and cgroupfs (0.1 to 3600).
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = parse_serve_interval)]
    pub interval: f64,
    /// Trace these cgroups only (a directory in the cpu controller's
    /// hierarchy, or its path there as /NAME); repeatable. Default: every
    /// cgroup with a CPU quota of its own, found again at each interval.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Vec<PathBuf>,
    /// Most cgroups traced at once (bounds the series); the rest are
    /// counted in affin_trace_agent_cgroups_left_out.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_cgroups: u32,
    /// Where the container runtime keeps its OCI bundles (<DIR>/<id>/config.json);
    /// repeatable. Default: containerd's, cri-o's and docker's state directories.
    #[arg(long = "bundle-dir", value_name = "DIR")]
    pub bundle_dir: Vec<PathBuf>,
    /// Seconds of history the findings look at.
    #[arg(long, value_name = "SECS", default_value_t = 60.0, value_parser = parse_serve_interval)]
    pub window: f64,
    /// Program type.
    #[arg(long, value_enum, default_value_t = AttachChoice::Auto)]
    pub attach: AttachChoice,
    /// Per-thread map capacity.
    #[arg(long, value_name = "N", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_threads: u32,
}

fn parse_serve_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds (e.g. 5 or 0.5)"))?;
    if !(0.1..=3600.0).contains(&v) {
        return Err(format!("{v} s is out of range: use 0.1 to 3600 seconds"));
    }
    Ok(v)
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
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',', value_parser = parse_pid)]
    pub pids: Vec<u32>,
    /// Where /proc, /sys and cgroupfs are read: the live system's `/`
    /// (not an option; the seam for tests that build arguments in code).
    #[arg(skip)]
    pub root: crate::host::Root,
    /// Thread to trace (its process is traced, the report shows this thread).
    #[arg(short, long = "tid", value_name = "TID", value_delimiter = ',', value_parser = parse_tid)]
    pub tids: Vec<u32>,
    /// Trace every process with this exact name (as `pgrep -x`); repeatable.
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Trace every process in this cgroup directory (its cgroup.procs),
    /// and the processes that join it or that they start during the run.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Trace every container of this Kubernetes pod on this node (names
    /// from the container runtime's OCI bundles); repeatable.
    #[arg(long = "pod", value_name = "NAMESPACE/NAME")]
    pub pods: Vec<String>,
    /// Trace the processes of this container (its id, or a prefix that
    /// names one container); repeatable.
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// With --pid/--tid: also trace the processes the targets start during
    /// the run, from their first instruction (always on with a command,
    /// --cgroup and --comm).
    #[arg(long)]
    pub follow: bool,
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
    /// With -- COMMAND under a CPU quota: run the command again with the
    /// throttling fix applied (its thread-count variable or option), in
    /// the same cgroup, and report measured against predicted.
    #[arg(long)]
    pub verify_fix: bool,
    /// Variables set for the command over our environment (the rerun of
    /// --verify-fix).
    #[arg(skip)]
    pub command_env: Vec<(String, String)>,
    /// With --apply: allow changing pid 1 (init), refused otherwise.
    #[arg(long, requires = "apply")]
    pub force: bool,
    /// With --verify: keep the new CPUs even if they made things worse.
    #[arg(long, requires = "verify")]
    pub keep: bool,
    /// How long to trace: seconds (0.3) or with units (500ms, 10s, 1m);
    /// Ctrl-C ends early and still reports [default: 30s; with a command:
    /// until it exits].
    #[arg(short, long, value_name = "DURATION", value_parser = parse_seconds)]
    pub duration: Option<f64>,
    /// How often the kernel maps are read: seconds or with units
    /// [default: 1s, or the duration when that is shorter].
    #[arg(short, long, value_name = "DURATION", value_parser = parse_seconds)]
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
    /// Print start-up timings, attach details and the BPF programs' warnings
    /// on stderr.
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
    #[arg(long = "plot", visible_alias = "svg", value_name = "FILE.svg", value_parser = parse_svg_path)]
    pub plot: Option<PathBuf>,
    /// Also record every switch, migration and wakeup of the targets'
    /// threads and write them to FILE (open it in https://ui.perfetto.dev):
    /// a name ending in .json gets a Chrome JSON trace (a track per CPU, a
    /// track per thread, migrations as arrows between CPUs), any other name
    /// Perfetto's own protobuf trace, streamed as the events arrive (CPU
    /// scheduling tracks and thread states, as for a kernel capture).
    /// Events that do not fit in the ring buffer are counted and reported
    /// as lost. Opened before tracing.
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// With --timeline: the file's format, whatever its name.
    #[arg(long, value_name = "FORMAT", requires = "timeline")]
    pub timeline_format: Option<crate::report::perfetto::Format>,
    /// With --timeline: size of the kernel ring buffer the events wait in
    /// between reads (every 20 ms), a power of two from 4K to 1G, with an
    /// optional K, M or G suffix (x1024). An event takes 48 bytes in it.
    #[arg(long, value_name = "SIZE", default_value = "8M", value_parser = parse_buffer_size,
          requires = "timeline")]
    pub timeline_buffer: u32,
    /// With a Chrome JSON --timeline: the most events kept in memory for
    /// it (the file is built when the window ends). Later events are
    /// counted, not kept, and the file and the report say where it stops.
    /// A Perfetto file streams and has no such limit.
    #[arg(long, value_name = "N", default_value_t = crate::report::timeline::CHROME_MAX_EVENTS,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000), requires = "timeline")]
    pub timeline_max_events: u64,
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
            Some(path) => {
                crate::cli::load_config(path)
                    .map_err(|e| e.to_string())?
                    .thresholds
            }
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

/// Parses a process id; a name gets pointed at `--comm`.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    parse_id(s, "process", "--comm")
}

/// Parses a thread id; a name gets pointed at `--comm`.
pub fn parse_tid(s: &str) -> Result<u32, String> {
    parse_id(s, "thread", "--comm")
}

fn parse_id(s: &str, what: &str, by_name: &str) -> Result<u32, String> {
    let t = s.trim();
    match t.parse::<u32>() {
        Ok(v) => Ok(v),
        Err(_) if !t.is_empty() && !t.starts_with(|c: char| c.is_ascii_digit() || c == '-') => Err(
            format!("{t:?} is not a {what} id; to trace processes by name use {by_name} {t}"),
        ),
        Err(_) => Err(format!("{t:?} is not a {what} id (a positive number)")),
    }
}

/// `--plot` writes SVG, so the file must say so: a picture named .png
/// holding SVG opens nowhere.
pub fn parse_svg_path(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    // A device or FIFO (/dev/stdout, a pipe) has no name to fix: it is
    // written in place (cli::output), so only files are held to .svg.
    let special = std::fs::metadata(&p).is_ok_and(|m| !m.is_file() && !m.is_dir());
    match p.extension().and_then(|e| e.to_str()) {
        _ if special => Ok(p),
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(p),
        _ => Err(format!(
            "--plot writes SVG: name the file with .svg (e.g. {})",
            p.with_extension("svg").display()
        )),
    }
}

/// Flags that only mean something with another one, and what they do: a
/// missing partner gets a message naming both, not clap's bare list.
const NEEDS: &[(&str, &str, &str)] = &[
    ("--cpus", "--apply", "it names the CPUs to apply"),
    ("--yes", "--apply", "it answers the apply's question"),
    ("-y", "--apply", "it answers the apply's question"),
    ("--verify", "--apply", "it checks an apply"),
    ("--force", "--apply", "it allows applying to pid 1"),
    (
        "--keep",
        "--verify",
        "it keeps an apply that --verify found worse",
    ),
    (
        "--timeline-buffer",
        "--timeline",
        "it sizes the timeline's ring buffer",
    ),
];

/// The one-line message for a usage error: clap's first line, except for
/// a flag given without the flag it works with, which gets both named.
pub fn usage_message(e: &clap::Error, argv: &[String]) -> String {
    if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
        let missing: Vec<String> = match e.get(clap::error::ContextKind::InvalidArg) {
            Some(clap::error::ContextValue::Strings(v)) => v.clone(),
            Some(clap::error::ContextValue::String(v)) => vec![v.clone()],
            _ => Vec::new(),
        };
        for &(flag, partner, why) in NEEDS {
            let given = argv
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if given && missing.iter().any(|m| m.starts_with(partner)) {
                return format!("{flag} needs {partner} ({why}): add {partner}, or drop {flag}");
            }
        }
        if !missing.is_empty() {
            return format!("missing {}", missing.join(", "));
        }
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_string()
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

/// Parses a duration, at most a day: a bare number is seconds ("30",
/// "0.5"), anything else goes through humantime ("500ms", "10s", "1m",
/// "1h 30m").
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v: f64 = match t.parse::<f64>() {
        Ok(v) => v,
        // A number that does not parse as f64 may still be a duration with
        // units; humantime says what is wrong with it otherwise.
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| {
                format!("{s:?} is not a duration ({e}): give seconds (30, 0.5) or units (500ms, 10s, 1m)")
            })?
            .as_secs_f64(),
    };
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
    fn timeline_format_is_perfetto_or_chrome_and_needs_timeline() {
        use crate::report::perfetto::Format;
        let c = parse(&[
            "-p",
            "1",
            "--timeline",
            "t.json",
            "--timeline-format",
            "perfetto",
        ]);
        assert_eq!(c.unwrap().trace.timeline_format, Some(Format::Perfetto));
        let c = parse(&["-p", "1", "--timeline", "t", "--timeline-format", "chrome"]);
        assert_eq!(c.unwrap().trace.timeline_format, Some(Format::Chrome));
        assert!(parse(&["-p", "1", "--timeline", "t", "--timeline-format", "xml"]).is_err());
        assert!(parse(&["-p", "1", "--timeline-format", "chrome"]).is_err());
    }

    #[test]
    fn timeline_max_events_is_bounded_and_needs_timeline() {
        let c = parse(&["-p", "1", "--timeline", "t.json"]).unwrap();
        assert_eq!(
            c.trace.timeline_max_events,
            crate::report::timeline::CHROME_MAX_EVENTS
        );
        let with = |n: &str| {
            parse(&[
                "-p",
                "1",
                "--timeline",
                "t.json",
                "--timeline-max-events",
                n,
            ])
        };
        assert_eq!(with("10").unwrap().trace.timeline_max_events, 10);
        for bad in ["0", "-1", "x", "100000001"] {
            assert!(with(bad).is_err(), "{bad}");
        }
        assert!(parse(&["-p", "1", "--timeline-max-events", "10"]).is_err());
    }

    #[test]
    fn durations_take_units_and_a_bare_number_is_seconds() {
        for (given, secs) in [
            ("0.3", 0.3),
            ("30", 30.0),
            ("500ms", 0.5),
            ("10s", 10.0),
            ("1m", 60.0),
            ("1h", 3600.0),
        ] {
            assert_eq!(parse_seconds(given), Ok(secs), "{given}");
        }
        for bad in ["10x", "2d", "5ms", "ten"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        let e = parse_seconds("10x").unwrap_err();
        assert!(e.contains("500ms, 10s, 1m"), "{e}");
        assert_eq!(
            parse(&["-p", "1", "-d", "1m", "-i", "500ms"])
                .unwrap()
                .trace
                .interval(),
            0.5
        );
    }

    #[test]
    fn a_name_given_to_pid_points_at_comm() {
        let e = parse_pid("nginx").unwrap_err();
        assert!(e.contains("use --comm nginx"), "{e}");
        assert!(parse_pid("12x").unwrap_err().contains("not a process id"));
        assert_eq!(parse_pid("42"), Ok(42));
        let err = parse(&["--pid", "nginx"]).unwrap_err();
        let argv: Vec<String> = ["affin-trace", "--pid", "nginx"].map(String::from).to_vec();
        assert!(usage_message(&err, &argv).contains("--comm nginx"));
    }

    #[test]
    fn plot_needs_an_svg_name() {
        assert!(parse(&["-p", "1", "--plot", "x.png"]).is_err());
        let e = parse_svg_path("out/x.png").unwrap_err();
        assert!(e.contains("out/x.svg"), "{e}");
        assert!(parse_svg_path("noext").is_err());
        assert_eq!(parse_svg_path("A.SVG"), Ok(PathBuf::from("A.SVG")));
    }

    #[test]
    fn a_flag_without_its_partner_is_named_with_it() {
        for (args, want) in [
            (&["-p", "1", "--cpus", "1"][..], "--cpus needs --apply"),
            (&["-p", "1", "--yes"][..], "--yes needs --apply"),
            (&["-p", "1", "--verify"][..], "--verify needs --apply"),
            (
                &["-p", "1", "--apply", "--keep"][..],
                "--keep needs --verify",
            ),
            (
                &["-p", "1", "--timeline-buffer", "1M"][..],
                "--timeline-buffer needs --timeline",
            ),
        ] {
            let err = parse(args).unwrap_err();
            let argv: Vec<String> = std::iter::once("affin-trace")
                .chain(args.iter().copied())
                .map(String::from)
                .collect();
            let msg = usage_message(&err, &argv);
            assert!(msg.starts_with(want), "{args:?}: {msg}");
            assert!(msg.contains("add "), "{msg}");
        }
    }

    #[test]
    fn help_shows_defaults_and_examples() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("EXAMPLES:"), "{help}");
        assert!(help.contains("revert --comm nginx"), "{help}");
        assert!(help.contains("[default: 30s"), "{help}");
        assert!(help.contains("[default: text]"), "{help}");
    }

    #[test]
    fn revert_takes_a_pid() {
        assert!(matches!(
            parse(&["revert", "--pid", "7"]).unwrap().command,
            Some(Command::Revert { pid, .. }) if pid == [7]
        ));
    }

    #[test]
    fn revert_takes_lists_names_cgroups_or_all_and_needs_one() {
        let Some(Command::Revert {
            pid,
            comm,
            cgroup,
            all,
        }) = parse(&[
            "revert", "--pid", "7,8", "--comm", "spin", "--cgroup", "/pod",
        ])
        .unwrap()
        .command
        else {
            panic!("not a revert");
        };
        assert_eq!(pid, [7, 8]);
        assert_eq!(comm, ["spin"]);
        assert_eq!(cgroup, Some(PathBuf::from("/pod")));
        assert!(!all);
        assert!(matches!(
            parse(&["revert", "--all"]).unwrap().command,
            Some(Command::Revert { all: true, .. })
        ));
        assert!(parse(&["revert"]).is_err());
        assert!(parse(&["revert", "--all", "--pid", "1"]).is_err());
        assert!(parse(&["revert", "--pid", "nginx"]).is_err());
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
