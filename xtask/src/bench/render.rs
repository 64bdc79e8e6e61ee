//! BENCHMARKS.md from [`Results`]: one section per phase, the targets of
//! issue #6, the checks and the known gaps.

use super::criterion;
use super::parse::{TraceReport, median, min_max, quantile};
use super::pipe::{CFGS, Cfg};
use super::results::{Env, Results};
use super::startup::StartRun;
use super::threads::ThreadsRun;
use super::threads::{LARGE_THREADS, SMALL_PERIOD_MS, SMALL_THREADS};
use super::{
    CALIBRATION_LOOPS, Phase, RUN_TARGET_S, T_ADDED_RATIO, T_CPU_PCT, T_READ_MS, T_RSS_MIB,
    T_START_MS, T_SWITCH_NS,
};
use std::fmt::Write as _;
use std::time::Duration;

const PROGRAMS: [&str; 7] = [
    "btf_sched_switch",
    "btf_sched_migrate_task",
    "btf_sched_wakeup",
    "btf_sched_wakeup_new",
    "btf_sched_process_exit",
    "floor_sched_switch",
    "floor_clock_sched_switch",
];

/// `writeln!` into a String (which cannot fail).
macro_rules! md {
    ($w:expr, $($arg:tt)*) => {
        let _ = writeln!($w, $($arg)*);
    };
}

pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

/// "4.22x", or "n/a".
pub fn times(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2}x"))
}

fn median_kib(v: &[u64]) -> Option<u64> {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    (!f.is_empty()).then(|| median(&f) as u64)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Failed or skipped phase, as a line of the report.
fn phase_missing<T>(w: &mut String, x: &Option<Result<T, String>>) -> bool {
    match x {
        Some(Ok(_)) => false,
        Some(Err(e)) => {
            md!(w, "FAILED: {e}");
            true
        }
        None => {
            md!(w, "not run");
            true
        }
    }
}

pub fn render(env: &Env, r: &Results, took: Duration) -> String {
    let mut m = String::new();
    let w = &mut m;
    md!(w, "# Benchmarks\n");
    md!(
        w,
        "Written by `{}` (as root; the run took {:.0} s). Every figure below comes from that \
         run; rerun it to refresh this file.\n",
        env.command,
        took.as_secs_f64()
    );
    md!(w, "- Date: {}", env.date);
    md!(w, "- Kernel: {}", env.kernel);
    md!(w, "- CPUs: {} x {}", env.cpus, env.cpu_model);
    md!(
        w,
        "- affin-trace: {} (commit {})",
        env.tool_version,
        env.commit
    );
    md!(
        w,
        "- Tools: {}; {}; {}",
        env.perf,
        env.bpftrace,
        env.bpftool
    );
    let calib = r.calibration_us.map_or(String::new(), |us| {
        format!(
            "; loops calibrated to ~{RUN_TARGET_S} s per run from a {CALIBRATION_LOOPS}-loop \
             run at {us:.3} us/op"
        )
    });
    md!(
        w,
        "- Workload: `taskset -c 0 perf bench sched pipe -T -l {}` (two threads of one \
         process ping-pong over a pipe on CPU 0){calib}\n",
        r.loops
    );

    if r.phases.contains(&Phase::Pipe) {
        pipe_sections(w, r);
    } else {
        md!(w, "## 1-2. Pipe round trip, added cost per switch\n");
        md!(w, "Not run (`--only`).");
    }
    stats_section(w, r);
    startup_section(w, r);
    threads_section(w, r);
    scale_section(w, r);
    criterion_section(w, r);
    targets(w, r);
    md!(w, "\n## Checks\n");
    if r.checks.is_empty() {
        md!(
            w,
            "None: the phases that check their runs were not run (`--only`)."
        );
    }
    for (what, ok) in &r.checks {
        md!(w, "- {}: {what}", if *ok { "OK" } else { "FAILED" });
    }
    gaps(w, r);
    m
}

/// Sections 1 and 2: the pipe benchmark and the added cost per switch.
fn pipe_sections(w: &mut String, r: &Results) {
    md!(w, "## What each configuration means\n");
    md!(w, "- (a) nothing attached: the baseline.");
    md!(
        w,
        "- (b) `affin-trace bench-floor`: one EMPTY tp_btf program on sched_switch \
         (`floor_sched_switch`): the least any tp_btf tracer can cost."
    );
    md!(
        w,
        "- (c) `affin-trace --pid <sleep>`: all five programs attached, tracing a `sleep 1000` \
         the bench started; every event of the benchmark takes the in-kernel filter path \
         (not a target) and is not recorded."
    );
    md!(
        w,
        "- (d) `affin-trace --format json -- <workload>`: affin-trace starts the benchmark \
         and traces all its threads; every event of the benchmark is recorded."
    );
    md!(
        w,
        "- (e) `bpftrace -c <workload> -e <script>` (script in `xtask/src/bench/pipe.rs`): classic \
         tracepoints; sched_switch stores start times in a map keyed by tid and sums on-CPU \
         deltas per tid of the target process, sched_migrate_task counts per tid. It does \
         less than (d): no wakeups, no per-CPU split, no voluntary/involuntary split.\n"
    );
    md!(
        w,
        "The configurations are interleaved (a b c d e, {} rounds) so that drift hits all \
         alike. Each tracer is attached before perf starts (affin-trace `tracing at`, \
         bench-floor `floor attached`; bpftrace `-c` starts the command once its probes are \
         attached) and stopped with SIGINT after perf ends. `kernel.bpf_stats_enabled` is 0 \
         during these runs. Before each run the bench waits until no other process holds \
         affin-trace programs (another affin-trace, e.g. the root tests, would distort the \
         figures); a run at whose end another process holds some is redone (up to 3 tries; \
         see Checks).\n",
        r.rounds
    );

    // 1.
    md!(w, "## 1. Pipe round trip\n");
    md!(
        w,
        "| config | what | median us/op | min-max us/op | vs (a) | added ns/switch | \
         its IQR | added ns/switch, from medians |"
    );
    md!(w, "|---|---|---|---|---|---|---|---|");
    for cfg in CFGS {
        let v = &r.samples[cfg.index()];
        if v.is_empty() {
            let why = r.e_skipped.as_deref().filter(|_| cfg == Cfg::E);
            md!(
                w,
                "| {} | {} | skipped: {} | | | | | |",
                cfg.tag(),
                cfg.short(),
                why.unwrap_or("-")
            );
            continue;
        }
        let (lo, hi) = min_max(v);
        let ratio = r.med(Cfg::A).map(|a| median(v) / a);
        let (paired, iqr, from_medians) = if cfg == Cfg::A {
            ("-".into(), "-".into(), "-".into())
        } else {
            let p = r.paired(cfg);
            (
                opt(r.paired_added_ns(cfg), 1),
                format!("{:.1} to {:.1}", quantile(&p, 0.25), quantile(&p, 0.75)),
                opt(r.added_ns(cfg), 1),
            )
        };
        md!(
            w,
            "| {} | {} | {:.3} | {lo:.3}-{hi:.3} | {} | {paired} | {iqr} | {from_medians} |",
            cfg.tag(),
            cfg.short(),
            median(v),
            times(ratio)
        );
    }
    md!(
        w,
        "\n\"added ns/switch\" = (config - (a)) / context switches per round trip \
         (section 2), computed in each round against the (a) run of the same round, then \
         the median over rounds; \"its IQR\" is the interquartile range of those per-round \
         values. \"from medians\" = (median(config) - median(a)) / switches per round trip. \
         The per-round (paired) figure is the one used below: the speed of this machine \
         drifts by more than the effect of (b) (see the (a) samples), and pairing cancels \
         drift slower than a round.\n"
    );
    md!(w, "Samples (us/op, in run order):\n");
    for cfg in CFGS {
        let v = &r.samples[cfg.index()];
        if !v.is_empty() {
            let s: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
            md!(w, "- {}: {}", cfg.tag(), s.join(", "));
        }
    }
    if let Some(why) = &r.e_skipped {
        md!(w, "\n(e) was skipped: {why}.");
    }

    // 2.
    md!(w, "\n## 2. Added cost per context switch\n");
    let per_loop = |f: fn(&TraceReport) -> u64| -> Option<f64> {
        let v: Vec<f64> = r
            .d_reports
            .iter()
            .map(|d| f(d) as f64 / r.loops as f64)
            .collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let thr: Vec<String> = r.d_reports.iter().map(|d| d.threads.to_string()).collect();
    md!(
        w,
        "Context switches per round trip, from (d)'s reports (process voluntary + \
         involuntary switches / loops, median of {} runs): **{}** ({} voluntary + {} \
         involuntary); `perf stat -e context-switches` of one run: {}. Threads in (d)'s \
         reports: {}. Every round trip is 2 switches on the one CPU, but only part of them \
         are voluntary: the woken reader often preempts the writer before the writer blocks \
         (wakeup preemption), an involuntary switch.\n",
        r.d_reports.len(),
        opt(r.switches_per_op(), 3),
        opt(per_loop(|d| d.voluntary), 3),
        opt(per_loop(|d| d.involuntary), 3),
        opt(r.perf_stat_switches_per_op, 3),
        if thr.is_empty() {
            "n/a".into()
        } else {
            thr.join(", ")
        }
    );
    md!(
        w,
        "| comparison | ratio of added cost per switch | cautious | from medians | target |"
    );
    md!(w, "|---|---|---|---|---|");
    for (num, den, what, target) in [
        (Cfg::D, Cfg::B, "affin-trace tracing vs empty program", true),
        (Cfg::E, Cfg::D, "bpftrace vs affin-trace", false),
        (Cfg::C, Cfg::B, "filter path vs empty program", false),
    ] {
        let t = if target {
            format!("<= {T_ADDED_RATIO}x: {}", r.added_ratio_status())
        } else {
            "info".into()
        };
        md!(
            w,
            "| {} / {}: {what} | {} | {} | {} | {t} |",
            num.tag(),
            den.tag(),
            r.ratio_text(num, den),
            times(r.ratio_cautious(num, den)),
            times(r.ratio(num, den))
        );
    }
    md!(
        w,
        "\nRatios of the per-round (paired) added costs of section 1 (\"unbounded\" when \
         the denominator's is not above 0, i.e. lost in the noise, while the numerator's \
         is); \"cautious\" divides the numerator's by the denominator's upper quartile, \
         for when the denominator is small next to the noise; \"from medians\" uses the \
         medians-only figures (n/a where the denominator is not above 0). The (d)/(b) \
         target counts as not met when the ratio is unbounded."
    );
}

/// In-program time of all programs of a run per sched_switch event.
fn per_switch(r: &Results, cfg: Cfg, switch: &str) -> Option<f64> {
    let Some(Ok(s)) = &r.stats else { return None };
    let n = r.stat(cfg, switch)?.run_cnt? as f64;
    let total: u64 = s
        .progs
        .iter()
        .filter(|(c, _)| *c == cfg)
        .filter_map(|(_, p)| p.run_time_ns)
        .sum();
    (n > 0.0).then(|| total as f64 / n)
}

/// One figure of every warm start-up run.
fn warm(r: &Results, f: fn(&StartRun) -> f64) -> Vec<f64> {
    match &r.startup {
        Some(Ok(s)) => s.warm.iter().map(f).collect(),
        _ => Vec::new(),
    }
}

/// Section 3: bpf_stats.
fn stats_section(w: &mut String, r: &Results) {
    md!(w, "\n## 3. Per-program run time (bpf_stats)\n");
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    let switch_ns = r.ns_per_event(Cfg::D, "btf_sched_switch");
    if !phase_missing(w, &r.stats) {
        md!(
            w,
            "`kernel.bpf_stats_enabled=1` only during one extra run each of (b), (c) and (d), \
             then restored. run_time_ns / run_cnt from `bpftool prog show --json` for the \
             programs the tracer process holds (its fds in /proc/<pid>/fdinfo), read just \
             before the tracer stops ((d): the last of reads every 200 ms during the run). \
             Counts cover events on every CPU, not only the benchmark's.\n"
        );
        md!(w, "| run | program | run_cnt | run_time_ns | ns/event |");
        md!(w, "|---|---|---|---|---|");
        for cfg in [Cfg::B, Cfg::C, Cfg::D] {
            for name in PROGRAMS {
                if let Some(p) = r.stat(cfg, name) {
                    md!(
                        w,
                        "| {} | {} | {} | {} | {} |",
                        cfg.tag(),
                        p.name,
                        p.run_cnt.map_or("n/a".into(), |x| x.to_string()),
                        p.run_time_ns.map_or("n/a".into(), |x| x.to_string()),
                        opt(r.ns_per_event(cfg, name), 1)
                    );
                }
            }
        }
        md!(
            w,
            "\nTarget: btf_sched_switch <= {T_SWITCH_NS} ns/event during (d): {} ({} ns).",
            switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
            opt(switch_ns, 1)
        );
        md!(
            w,
            "The empty program reads {} ns/event, which is roughly what the measurement \
             itself (bpf_stats' clock reads) and the call cost; net of that, \
             btf_sched_switch does about {} ns of work per event in (d) and {} ns on the \
             filter path (c). All programs together run {} ns per sched_switch event in (d) \
             and {} ns in (c). The figures vary between runs of the bench on this machine \
             by some tens of percent.",
            opt(floor_ns, 1),
            opt(switch_ns.zip(floor_ns).map(|(a, b)| a - b), 1),
            opt(
                r.ns_per_event(Cfg::C, "btf_sched_switch")
                    .zip(floor_ns)
                    .map(|(a, b)| a - b),
                1
            ),
            opt(per_switch(r, Cfg::D, "btf_sched_switch"), 1),
            opt(per_switch(r, Cfg::C, "btf_sched_switch"), 1)
        );
        let clock_ns = clock_cost(r);
        let reads = clock_reads_per_switch(r);
        md!(
            w,
            "\nThe clock: in this run (b) also attached `floor_clock_sched_switch`, the empty \
             program plus one `bpf_ktime_get_ns()`: {} ns/event, so one clock read costs {} ns \
             here. btf_sched_switch reads the clock only where a wakeup-to-run wait ends (a \
             wait after a preemption comes from the kernel's `sched_info.run_delay`, no clock \
             read): in (d) that is {} per sched_switch event ({} wakeup waits / {} runs), \
             about {} ns of its {} ns. Timing wakeup waits from run_delay instead would drop \
             that, but the kernel's figure misses the wakeup-to-switch latency whenever the \
             scheduler skips its back-to-back clock update (not from this run: when \
             affin-trace was tried that way, its run-queue p50 on this workload read 1 ns \
             where the clock reads ~850 ns), so it is not used.",
            opt(r.ns_per_event(Cfg::B, "floor_clock_sched_switch"), 1),
            opt(clock_ns, 1),
            opt(reads, 2),
            r.stats_d_runq().map_or("n/a".into(), |x| x.to_string()),
            r.stat(Cfg::D, "btf_sched_switch")
                .and_then(|p| p.run_cnt)
                .map_or("n/a".into(), |x| x.to_string()),
            opt(clock_ns.zip(reads).map(|(c, n)| c * n), 1),
            opt(switch_ns, 1)
        );
        maps_table(w, r);
    }
}

/// Kernel memory of (c)'s maps, from bpftool.
fn maps_table(w: &mut String, r: &Results) {
    let Some(Ok(st)) = &r.stats else { return };
    if st.maps.is_empty() {
        return;
    }
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    md!(
        w,
        "\nKernel memory of the maps of (c)'s tracer (the default `--max-threads` 16384; \
         pid_max {pid_max}; possible CPUs {cpus}), from `bpftool map show` (bytes_memlock), \
         largest first. How each scales is in affinity-ebpf/src/main.rs (\"Map sizes\"): \
         SLOTS and TARGETS with pid_max, STATS, FREE_SLOTS and THREAD_CPU with \
         `--max-threads` (THREAD_CPU also with the CPUs, capped at 16 per thread), CURRENT \
         and CPU_TOPO with the CPUs.\n"
    );
    md!(w, "| map | type | max_entries | bytes |");
    md!(w, "|---|---|---|---|");
    for m in &st.maps {
        md!(
            w,
            "| {} | {} | {} | {} |",
            m.name,
            m.kind,
            m.max_entries,
            m.bytes
        );
    }
    let total: u64 = st.maps.iter().map(|m| m.bytes).sum();
    md!(
        w,
        "| all | | | {total} ({:.1} MiB) |",
        total as f64 / 1048576.0
    );
}

/// What one `bpf_ktime_get_ns()` costs: the clock floor over the empty one.
fn clock_cost(r: &Results) -> Option<f64> {
    let c = r.ns_per_event(Cfg::B, "floor_clock_sched_switch")?;
    Some(c - r.ns_per_event(Cfg::B, "floor_sched_switch")?)
}

/// Clock reads per btf_sched_switch run in (d)'s stats run: one per
/// wakeup-to-run wait that ended.
fn clock_reads_per_switch(r: &Results) -> Option<f64> {
    let runs = r.stat(Cfg::D, "btf_sched_switch")?.run_cnt? as f64;
    (runs > 0.0).then(|| r.stats_d_runq().unwrap_or(0) as f64 / runs)
}

/// Section 4: start-up.
fn startup_section(w: &mut String, r: &Results) {
    md!(w, "\n## 4. Start-up time\n");
    let (tr, off, att, ext) = (
        warm(r, |x| x.tracing_ms),
        warm(r, |x| x.offsets_ms),
        warm(r, |x| x.attached_ms),
        warm(r, |x| x.external_ms),
    );
    let start_rss = warm(r, |x| x.maxrss_kib as f64);
    if let Some(Ok(s)) = &r.startup {
        md!(
            w,
            "`affin-trace --verbose --pid <sleep> --duration 0.2 --interval 0.2`, once cold \
             (/run/affin-trace/btf-offsets deleted first) then {} times warm. The figures are \
             affin-trace's own `--verbose` times (from the start of its trace session), and \
             \"external\": from spawning the process to reading its `tracing at` line.\n",
            s.warm.len()
        );
        md!(
            w,
            "| run | offsets resolved | programs attached | tracing at | external | peak RSS |"
        );
        md!(w, "|---|---|---|---|---|---|");
        md!(
            w,
            "| cold | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            s.cold.offsets_ms,
            s.cold.attached_ms,
            s.cold.tracing_ms,
            s.cold.external_ms,
            mib(s.cold.maxrss_kib)
        );
        md!(
            w,
            "| warm, median | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            median(&off),
            median(&att),
            median(&tr),
            median(&ext),
            median(&start_rss) / 1024.0
        );
        md!(
            w,
            "| warm, max | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} MiB |",
            min_max(&off).1,
            min_max(&att).1,
            min_max(&tr).1,
            min_max(&ext).1,
            min_max(&start_rss).1 / 1024.0
        );
        let s_tr: Vec<String> = tr.iter().map(|x| format!("{x:.1}")).collect();
        md!(w, "\nWarm `tracing at` samples (ms): {}.", s_tr.join(", "));
        md!(
            w,
            "\nTarget: warm start-up <= {T_START_MS} ms in every run: {} (median {:.1} ms, \
             max {:.1} ms). Loading and attaching the programs (kernel BTF, verifier) takes \
             {:.1} ms of the median {:.1} ms (from `offsets resolved` to `programs \
             attached`). Cold, parsing the kernel BTF for the offsets adds {:.1} ms.",
            met(min_max(&tr).1 <= T_START_MS),
            median(&tr),
            min_max(&tr).1,
            median(&att) - median(&off),
            median(&tr),
            s.cold.offsets_ms - median(&off)
        );
    } else {
        phase_missing(w, &r.startup);
    }
}

/// Section 5: 1,000 threads.
fn threads_section(w: &mut String, r: &Results) {
    let start_rss = warm(r, |x| x.maxrss_kib as f64);
    md!(
        w,
        "\n## 5. Userspace cost while tracing {SMALL_THREADS} threads\n"
    );
    if let Some(Ok(t)) = &r.small {
        let pct = t.cpu_s / t.wall_s * 100.0;
        md!(
            w,
            "`cargo xtask bench-threads {n} <secs> {}` ({n} threads sleeping {} ms in a loop; \
             {} tasks in /proc) traced by `affin-trace --pid <it> --duration {} --format json` \
             with the default 1 s interval: {} threads seen, {} dropped events, start-up \
             {:.1} ms. CPU time and peak RSS are the tracer's own rusage (`wait4`).\n",
            t.period_ms,
            t.period_ms,
            t.helper_tasks,
            t.secs,
            t.report.threads,
            t.report.dropped,
            t.tracing_ms,
            n = t.n
        );
        md!(w, "| figure | measured | target |");
        md!(w, "|---|---|---|");
        md!(
            w,
            "| CPU, whole run (utime+stime / wall) | {pct:.2}% of one CPU ({:.3} s / {:.2} s) \
             | <= {T_CPU_PCT}%: {} |",
            t.cpu_s,
            t.wall_s,
            met(pct <= T_CPU_PCT)
        );
        md!(
            w,
            "| CPU used before `tracing at` (/proc/<pid>/stat) | {} s | info |",
            opt(t.startup_cpu_s, 2)
        );
        md!(
            w,
            "| CPU while tracing (after `tracing at`, /proc/<pid>/stat) | {}% | <= {T_CPU_PCT}%: {} |",
            opt(t.steady_pct, 2),
            met(t.steady_pct.is_some_and(|p| p <= T_CPU_PCT))
        );
        md!(
            w,
            "| peak RSS (ru_maxrss) | {:.1} MiB | <= {T_RSS_MIB} MB: {} |",
            mib(t.maxrss_kib),
            met(mib(t.maxrss_kib) <= T_RSS_MIB)
        );
        md!(
            w,
            "| VmHWM / VmRSS, last /proc/<pid>/status sample | {} / {} MiB | info |",
            opt(t.vmhwm_kib.map(mib), 1),
            opt(t.vmrss_kib.map(mib), 1)
        );
        read_rows(w, t, false);
        md!(
            w,
            "\nThe whole-run CPU figure includes start-up. Peak RSS for comparison (ru_maxrss, \
             medians): tracing one sleeping thread for 0.2 s (section 4) {} MiB; tracing the \
             unrelated sleep in (c) {} MiB; `bench-floor`, which loads one empty program and \
             no maps, {} MiB. All three peak while loading: aya's `EbpfLoader::new()` parses \
             the whole kernel BTF itself (aya 0.14 offers no way around it) and drops it when \
             affin-trace hands it a small BTF holding only the `btf_trace_*` typedefs at their \
             kernel ids (cached with the offsets), which is all a tp_btf attach needs.",
            opt(
                (!start_rss.is_empty()).then(|| median(&start_rss) / 1024.0),
                1
            ),
            opt(median_kib(&r.c_rss).map(mib), 1),
            opt(median_kib(&r.floor_rss).map(mib), 1)
        );
    } else {
        phase_missing(w, &r.small);
    }
}

/// Rows of the per-interval map read time (`AFFIN_TRACE_READ_TIMES`), wall
/// and CPU, with the 50 ms target (on the wall time) when `target`.
fn read_rows(w: &mut String, t: &ThreadsRun, target: bool) {
    let v = &t.read_ms;
    let status = if !target {
        "info".to_string()
    } else if v.is_empty() {
        format!("<= {T_READ_MS} ms: n/a")
    } else {
        format!("<= {T_READ_MS} ms: {}", met(min_max(v).1 <= T_READ_MS))
    };
    for (what, v, status) in [
        ("map read per interval, wall", &t.read_ms, status),
        (
            "map read per interval, CPU time of the reading thread",
            &t.read_cpu_ms,
            "info".to_string(),
        ),
    ] {
        let s: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
        md!(
            w,
            "| {what} (ms): median / max of {} | {} / {} ({}) | {status} |",
            v.len(),
            opt((!v.is_empty()).then(|| median(v)), 2),
            opt((!v.is_empty()).then(|| min_max(v).1), 2),
            if s.is_empty() {
                "none".into()
            } else {
                s.join(", ")
            }
        );
    }
}

/// Section 6: 10,000 threads.
fn scale_section(w: &mut String, r: &Results) {
    md!(w, "\n## 6. Scale: {LARGE_THREADS} threads\n");
    if let Some(Ok(t)) = &r.large {
        md!(
            w,
            "The same helper with {} threads sleeping {} ms in a loop ({} tasks in /proc), \
             traced for {} s. Limits: {}.\n",
            t.n,
            t.period_ms,
            t.helper_tasks,
            t.secs,
            t.limits
        );
        md!(w, "| figure | measured | target |");
        md!(w, "|---|---|---|");
        md!(
            w,
            "| dropped_events | {} | 0: {} |",
            t.report.dropped,
            met(t.report.dropped == 0)
        );
        md!(
            w,
            "| threads seen (process.threads) | {} | info |",
            t.report.threads
        );
        md!(
            w,
            "| start-up (`tracing at`) | {:.1} ms | info |",
            t.tracing_ms
        );
        md!(
            w,
            "| tracer CPU, whole run | {:.2}% of one CPU ({:.3} s / {:.2} s) | info |",
            t.cpu_s / t.wall_s * 100.0,
            t.cpu_s,
            t.wall_s
        );
        md!(
            w,
            "| tracer CPU while tracing | {}% | info |",
            opt(t.steady_pct, 2)
        );
        md!(
            w,
            "| tracer peak RSS | {:.1} MiB | info |",
            mib(t.maxrss_kib)
        );
        read_rows(w, t, true);
        md!(
            w,
            "\nThe threads sleep {} ms here, not {SMALL_PERIOD_MS} ms as in section 5: {} \
             threads at {SMALL_PERIOD_MS} ms would ask for {} wakeups/s, more than a small \
             machine serves (on 2 CPUs the helper did not even report ready within 60 s); at \
             {} ms they ask for {} wakeups/s, the rate of section 5. This tests the number of \
             threads, not the event rate.",
            t.period_ms,
            t.n,
            t.n as u64 * 1000 / SMALL_PERIOD_MS,
            t.period_ms,
            t.n as u64 * 1000 / t.period_ms
        );
    } else {
        phase_missing(w, &r.large);
    }
}

/// Section 7: the criterion benches.
fn criterion_section(w: &mut String, r: &Results) {
    md!(w, "\n## 7. Pure hot paths (criterion)\n");
    let Some(Ok(figures)) = &r.criterion else {
        phase_missing(w, &r.criterion);
        return;
    };
    md!(
        w,
        "`{}` (affinity-userspace/benches/; needs no root, and runs on its own the same \
         way): the code after the collector, on synthetic or recorded input, no kernel. \
         Per iteration, criterion's estimates.\n",
        criterion::COMMAND
    );
    md!(w, "| bench | median | mean (95% CI) | per element |");
    md!(w, "|---|---|---|---|");
    for f in figures {
        let per = f.elements.map_or("-".into(), |n| {
            format!(
                "{} ({n} elements)",
                criterion::duration(f.median_ns / n as f64)
            )
        });
        md!(
            w,
            "| {} | {} | {} ({} to {}) | {per} |",
            f.name,
            criterion::duration(f.median_ns),
            criterion::duration(f.mean_ns),
            criterion::duration(f.mean_ci_ns.0),
            criterion::duration(f.mean_ci_ns.1)
        );
    }
}

/// The targets of issue #6, where the cost is.
fn targets(w: &mut String, r: &Results) {
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    let switch_ns = r.ns_per_event(Cfg::D, "btf_sched_switch");
    let (tr, off, att) = (
        warm(r, |x| x.tracing_ms),
        warm(r, |x| x.offsets_ms),
        warm(r, |x| x.attached_ms),
    );
    let start_rss = warm(r, |x| x.maxrss_kib as f64);
    md!(w, "\n## Targets\n");
    md!(
        w,
        "| target | measured | status | where the cost is (this run) |"
    );
    md!(w, "|---|---|---|---|");
    md!(
        w,
        "| added cost per switch (d)/(b) <= {T_ADDED_RATIO}x | {} ({} vs {} ns/switch; \
         cautious {}; from medians {}) | {} | in-program time per sched_switch: {} ns for \
         all of (d)'s programs vs {} ns for the empty one (section 3) |",
        r.ratio_text(Cfg::D, Cfg::B),
        opt(r.paired_added_ns(Cfg::D), 1),
        opt(r.paired_added_ns(Cfg::B), 1),
        times(r.ratio_cautious(Cfg::D, Cfg::B)),
        times(r.ratio(Cfg::D, Cfg::B)),
        r.added_ratio_status(),
        opt(per_switch(r, Cfg::D, "btf_sched_switch"), 1),
        opt(floor_ns, 1)
    );
    md!(
        w,
        "| btf_sched_switch <= {T_SWITCH_NS} ns/event in (d) | {} ns | {} | empty program: \
         {} ns (measurement cost); clock reads: {} per event x {} ns (section 3); filter \
         path (c): {} ns |",
        opt(switch_ns, 1),
        switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
        opt(floor_ns, 1),
        opt(clock_reads_per_switch(r), 2),
        opt(clock_cost(r), 1),
        opt(r.ns_per_event(Cfg::C, "btf_sched_switch"), 1)
    );
    // (c) within noise of (b): the per-round (c) - (b) differences straddle 0.
    if let Some((m, lo, hi)) = r.round_diff(Cfg::C, Cfg::B) {
        md!(
            w,
            "| (c) within noise of (b) | per-round (c) - (b): median {m:.1} ns/switch, IQR \
             {lo:.1} to {hi:.1} | {} | filter path in-program: {} ns/event vs {} ns empty \
             (section 3) |",
            met(lo <= 0.0 && 0.0 <= hi),
            opt(r.ns_per_event(Cfg::C, "btf_sched_switch"), 1),
            opt(floor_ns, 1)
        );
    }
    // (d) below bpftrace: added cost per switch, paired.
    if let (Some(d), Some(e)) = (r.paired_added_ns(Cfg::D), r.paired_added_ns(Cfg::E)) {
        md!(
            w,
            "| (d) below bpftrace (e) | {d:.1} vs {e:.1} ns/switch ({}) | {} | bpftrace: \
             classic tracepoints and hash maps keyed by tid |",
            r.ratio_text(Cfg::E, Cfg::D),
            met(d < e)
        );
    }
    if let Some(Ok(s)) = &r.startup {
        md!(
            w,
            "| warm start-up <= {T_START_MS} ms | median {:.1} ms, max {:.1} ms (cold {:.1} \
             ms) | {} | program load + attach: {:.1} ms (median) |",
            median(&tr),
            min_max(&tr).1,
            s.cold.tracing_ms,
            met(min_max(&tr).1 <= T_START_MS),
            median(&att) - median(&off)
        );
    }
    if let Some(Ok(t)) = &r.small {
        let pct = t.cpu_s / t.wall_s * 100.0;
        md!(
            w,
            "| CPU <= {T_CPU_PCT}% tracing {} threads | {pct:.2}% whole run ({:.0} s), {}% \
             while tracing | {} | start-up: {} s of the {:.3} s |",
            t.n,
            t.wall_s,
            opt(t.steady_pct, 2),
            met(pct <= T_CPU_PCT && t.steady_pct.is_some_and(|p| p <= T_CPU_PCT)),
            opt(t.startup_cpu_s, 2),
            t.cpu_s,
        );
        md!(
            w,
            "| peak RSS <= {T_RSS_MIB} MB tracing {} threads | {:.1} MiB | {} | loading: \
             tracing one sleeping thread peaks at {} MiB, bench-floor (one empty program) at \
             {} MiB; RSS at the end {} MiB |",
            t.n,
            mib(t.maxrss_kib),
            met(mib(t.maxrss_kib) <= T_RSS_MIB),
            opt(
                (!start_rss.is_empty()).then(|| median(&start_rss) / 1024.0),
                1
            ),
            opt(median_kib(&r.floor_rss).map(mib), 1),
            opt(t.vmrss_kib.map(mib), 1)
        );
    }
    if let Some(Ok(t)) = &r.large {
        md!(
            w,
            "| 0 dropped events tracing {} threads | {} ({} threads seen) | {} | |",
            t.n,
            t.report.dropped,
            t.report.threads,
            met(t.report.dropped == 0)
        );
        let (v, c) = (&t.read_ms, &t.read_cpu_ms);
        md!(
            w,
            "| map read per interval <= {T_READ_MS} ms tracing {} threads | max {} ms (median \
             {} ms, {} intervals) | {} | CPU time of the read: median {} ms, max {} ms; the \
             rest of the wall time the CPUs ran others, here the helper's {} wakeups/s |",
            t.n,
            opt((!v.is_empty()).then(|| min_max(v).1), 2),
            opt((!v.is_empty()).then(|| median(v)), 2),
            v.len(),
            if v.is_empty() {
                "n/a"
            } else {
                met(min_max(v).1 <= T_READ_MS)
            },
            opt((!c.is_empty()).then(|| median(c)), 2),
            opt((!c.is_empty()).then(|| min_max(c).1), 2),
            t.n as u64 * 1000 / t.period_ms.max(1)
        );
    }
}

/// What the bench does not measure.
fn gaps(w: &mut String, _r: &Results) {
    md!(w, "\n## Gaps\n");
    md!(
        w,
        "- Per-interval map read time comes from the lines affin-trace prints on stderr when \
         `AFFIN_TRACE_READ_TIMES` is set (the collector times each read: maps and /proc); \
         `--verbose` prints only their median and max at the end, the JSON report none."
    );
    md!(
        w,
        "- bpf_stats figures come from separate runs with the stats on (they add clock reads \
         to every program run); the runs of section 1 have them off."
    );
}
