//! BENCHMARKS.md from [`Results`]: the prose is xtask/templates/BENCHMARKS.md.in,
//! a list of `@@ name` blocks whose `{key}`s are filled here; this file
//! computes the figures and the tables' rows.
//!
//! A line holding only `{key}` takes the value's lines, or goes when the
//! value is empty. A phase that failed or was not run keeps its block's
//! heading (the first line) and says why.

use super::parse::{TraceReport, median, min_max, quantile};
use super::pipe::{CFGS, Cfg};
use super::results::{Env, Results};
use super::startup::StartRun;
use super::threads::{LARGE_THREADS, SMALL_PERIOD_MS, SMALL_THREADS, ThreadsRun};
use super::{
    CALIBRATION_LOOPS, Phase, RUN_TARGET_S, T_ADDED_RATIO, T_CPU_PCT, T_READ_MS, T_RSS_MIB,
    T_START_MS, T_SWITCH_NS, criterion,
};
use std::time::Duration;

const TEMPLATE: &str = include_str!("../../templates/BENCHMARKS.md.in");

/// The programs of the bpf_stats table, in its order.
const PROGRAMS: [&str; 7] = [
    "btf_sched_switch",
    "btf_sched_migrate_task",
    "btf_sched_wakeup",
    "btf_sched_wakeup_new",
    "btf_sched_process_exit",
    "floor_sched_switch",
    "floor_clock_sched_switch",
];

type Vars = Vec<(&'static str, String)>;

/// `key: value, ...` as template variables (values by `Display`).
macro_rules! vars {
    ($($k:ident: $v:expr),* $(,)?) => {
        Vec::from([$((stringify!($k), $v.to_string())),*])
    };
}

/// The values every block may use: the targets and the phases' sizes.
fn consts() -> Vars {
    vars! {
        run_target_s: RUN_TARGET_S,
        calibration_loops: CALIBRATION_LOOPS,
        t_added_ratio: T_ADDED_RATIO,
        t_switch_ns: T_SWITCH_NS,
        t_start_ms: T_START_MS,
        t_cpu_pct: T_CPU_PCT,
        t_rss_mib: T_RSS_MIB,
        t_read_ms: T_READ_MS,
        small_threads: SMALL_THREADS,
        large_threads: LARGE_THREADS,
        small_period_ms: SMALL_PERIOD_MS,
    }
}

/// The text of block `name`.
fn block(name: &str) -> &'static str {
    let head = format!("@@ {name}\n");
    let start = TEMPLATE
        .find(&head)
        .unwrap_or_else(|| panic!("BENCHMARKS.md.in has no block {name}"));
    let text = &TEMPLATE[start + head.len()..];
    &text[..text.find("\n@@ ").map_or(text.len(), |i| i + 1)]
}

/// Block `name` with its `{key}`s replaced from `vars`, then [`consts`].
fn fill(name: &str, vars: &[(&str, String)]) -> String {
    fill_text(name, block(name), vars)
}

fn fill_text(name: &str, text: &str, vars: &[(&str, String)]) -> String {
    let consts = consts();
    let value = |key: &str| {
        vars.iter()
            .chain(&consts)
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.trim_end_matches('\n'))
            .unwrap_or_else(|| panic!("BENCHMARKS.md.in, block {name}: no value for {{{key}}}"))
    };
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if let Some(key) = bare.strip_prefix('{').and_then(|k| k.strip_suffix('}'))
            && !key.contains(['{', '}'])
        {
            let v = value(key);
            if !v.is_empty() {
                out.push_str(v);
                out.push('\n');
            }
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find('{') {
            let end = rest[i..].find('}').map(|e| i + e).unwrap_or_else(|| {
                panic!("BENCHMARKS.md.in, block {name}: unclosed {{ in {line:?}")
            });
            out.push_str(&rest[..i]);
            out.push_str(value(&rest[i + 1..end]));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
    }
    out
}

/// A phase's block, or its heading and why the phase is missing.
fn section<T>(name: &str, x: &Option<Result<T, String>>, vars: impl FnOnce(&T) -> Vars) -> String {
    let why = match x {
        Some(Ok(v)) => return fill(name, &vars(v)),
        Some(Err(e)) => format!("FAILED: {e}"),
        None => "not run".into(),
    };
    let heading = block(name).lines().next().unwrap_or_default();
    format!("{}\n\n{why}\n", fill_text(name, heading, &[]).trim_end())
}

pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

/// `x` with `digits` decimals.
fn num(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
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

/// `v`, each with `digits` decimals, comma-separated.
fn list(v: &[f64], digits: usize) -> String {
    let s: Vec<String> = v.iter().map(|x| num(*x, digits)).collect();
    s.join(", ")
}

/// The median (`Some` when `v` is not empty).
fn med(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| median(v))
}

fn max(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| min_max(v).1)
}

pub fn render(env: &Env, r: &Results, took: Duration) -> String {
    let calibration = r.calibration_us.map_or(String::new(), |us| {
        fill("calibration", &vars! { calibration_us: num(us, 3) })
    });
    let head = vars! {
        command: env.command,
        took_s: num(took.as_secs_f64(), 0),
        date: env.date,
        kernel: env.kernel,
        cpus: env.cpus,
        cpu_model: env.cpu_model,
        tool_version: env.tool_version,
        commit: env.commit,
        perf: env.perf,
        bpftrace: env.bpftrace,
        bpftool: env.bpftool,
        loops: r.loops,
        calibration: calibration.trim_end(),
    };
    let checks: Vec<String> = r
        .checks
        .iter()
        .map(|(what, ok)| format!("- {}: {what}", if *ok { "OK" } else { "FAILED" }))
        .collect();
    let checks = if checks.is_empty() {
        fill("checks-none", &[])
    } else {
        checks.join("\n")
    };
    let sections = [
        fill("head", &head),
        if r.phases.contains(&Phase::Pipe) {
            fill("pipe", &pipe_vars(r))
        } else {
            fill("pipe-not-run", &[])
        },
        section("stats", &r.stats, |_| stats_vars(r)),
        section("startup", &r.startup, |_| startup_vars(r)),
        section("threads", &r.small, |t| threads_vars(r, t)),
        section("scale", &r.large, |t| threads_vars(r, t)),
        section("criterion", &r.criterion, |f| criterion_vars(f)),
        fill("targets", &targets_vars(r)),
        fill("checks", &vars! { rows: checks }),
        fill("gaps", &[]),
    ];
    sections.join("\n")
}

/// Sections 1 and 2: the pipe benchmark and the added cost per switch.
fn pipe_vars(r: &Results) -> Vars {
    let mut rows = Vec::new();
    let mut samples = Vec::new();
    for cfg in CFGS {
        let v = &r.samples[cfg.index()];
        if v.is_empty() {
            let why = r.e_skipped.as_deref().filter(|_| cfg == Cfg::E);
            rows.push(format!(
                "| {} | {} | skipped: {} | | | | | |",
                cfg.tag(),
                cfg.short(),
                why.unwrap_or("-")
            ));
            continue;
        }
        samples.push(format!("- {}: {}", cfg.tag(), list(v, 3)));
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
        rows.push(format!(
            "| {} | {} | {:.3} | {lo:.3}-{hi:.3} | {} | {paired} | {iqr} | {from_medians} |",
            cfg.tag(),
            cfg.short(),
            median(v),
            times(ratio)
        ));
    }
    let per_loop = |f: fn(&TraceReport) -> u64| {
        let v: Vec<f64> = r
            .d_reports
            .iter()
            .map(|d| f(d) as f64 / r.loops as f64)
            .collect();
        med(&v)
    };
    let threads: Vec<String> = r.d_reports.iter().map(|d| d.threads.to_string()).collect();
    let e_skipped = r
        .e_skipped
        .as_ref()
        .map_or(String::new(), |why| fill("e-skipped", &vars! { why: why }));
    vars! {
        rounds: r.rounds,
        rows: rows.join("\n"),
        samples: samples.join("\n"),
        e_skipped: e_skipped,
        d_runs: r.d_reports.len(),
        switches: opt(r.switches_per_op(), 3),
        voluntary: opt(per_loop(|d| d.voluntary), 3),
        involuntary: opt(per_loop(|d| d.involuntary), 3),
        perf_stat: opt(r.perf_stat_switches_per_op, 3),
        d_threads: if threads.is_empty() { "n/a".into() } else { threads.join(", ") },
        db_ratio: r.ratio_text(Cfg::D, Cfg::B),
        db_cautious: times(r.ratio_cautious(Cfg::D, Cfg::B)),
        db_medians: times(r.ratio(Cfg::D, Cfg::B)),
        db_status: r.added_ratio_status(),
        ed_ratio: r.ratio_text(Cfg::E, Cfg::D),
        ed_cautious: times(r.ratio_cautious(Cfg::E, Cfg::D)),
        ed_medians: times(r.ratio(Cfg::E, Cfg::D)),
        cb_ratio: r.ratio_text(Cfg::C, Cfg::B),
        cb_cautious: times(r.ratio_cautious(Cfg::C, Cfg::B)),
        cb_medians: times(r.ratio(Cfg::C, Cfg::B)),
    }
}

/// In-program time of all programs of a run per sched_switch event.
fn per_switch(r: &Results, cfg: Cfg) -> Option<f64> {
    let Some(Ok(s)) = &r.stats else { return None };
    let n = r.stat(cfg, "btf_sched_switch")?.run_cnt? as f64;
    let total: u64 = s
        .progs
        .iter()
        .filter(|(c, _)| *c == cfg)
        .filter_map(|(_, p)| p.run_time_ns)
        .sum();
    (n > 0.0).then(|| total as f64 / n)
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

/// The bpf_stats figures of section 3, also used by the targets.
fn switch_vars(r: &Results) -> Vars {
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    let switch_ns = r.ns_per_event(Cfg::D, "btf_sched_switch");
    let filter_ns = r.ns_per_event(Cfg::C, "btf_sched_switch");
    let net = |x: Option<f64>| opt(x.zip(floor_ns).map(|(a, b)| a - b), 1);
    let (clock_ns, reads) = (clock_cost(r), clock_reads_per_switch(r));
    let count = |x: Option<u64>| x.map_or("n/a".into(), |x| x.to_string());
    vars! {
        floor_ns: opt(floor_ns, 1),
        switch_ns: opt(switch_ns, 1),
        switch_status: switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
        filter_ns: opt(filter_ns, 1),
        switch_net_ns: net(switch_ns),
        filter_net_ns: net(filter_ns),
        d_per_switch: opt(per_switch(r, Cfg::D), 1),
        c_per_switch: opt(per_switch(r, Cfg::C), 1),
        floor_clock_ns: opt(r.ns_per_event(Cfg::B, "floor_clock_sched_switch"), 1),
        clock_ns: opt(clock_ns, 1),
        clock_reads: opt(reads, 2),
        runq_waits: count(r.stats_d_runq()),
        switch_runs: count(r.stat(Cfg::D, "btf_sched_switch").and_then(|p| p.run_cnt)),
        clock_total_ns: opt(clock_ns.zip(reads).map(|(c, n)| c * n), 1),
    }
}

/// Section 3: bpf_stats, with the kernel memory of (c)'s maps.
fn stats_vars(r: &Results) -> Vars {
    let mut rows = Vec::new();
    for cfg in [Cfg::B, Cfg::C, Cfg::D] {
        for name in PROGRAMS {
            if let Some(p) = r.stat(cfg, name) {
                rows.push(format!(
                    "| {} | {} | {} | {} | {} |",
                    cfg.tag(),
                    p.name,
                    p.run_cnt.map_or("n/a".into(), |x| x.to_string()),
                    p.run_time_ns.map_or("n/a".into(), |x| x.to_string()),
                    opt(r.ns_per_event(cfg, name), 1)
                ));
            }
        }
    }
    let maps = match &r.stats {
        Some(Ok(st)) if !st.maps.is_empty() => {
            let rows: Vec<String> = (st.maps.iter())
                .map(|m| {
                    format!(
                        "| {} | {} | {} | {} |",
                        m.name, m.kind, m.max_entries, m.bytes
                    )
                })
                .collect();
            let total: u64 = st.maps.iter().map(|m| m.bytes).sum();
            let read = |path| super::results::read_trim(path);
            fill(
                "maps",
                &vars! {
                    pid_max: read("/proc/sys/kernel/pid_max"),
                    possible_cpus: read("/sys/devices/system/cpu/possible"),
                    rows: rows.join("\n"),
                    total: total,
                    total_mib: num(total as f64 / 1048576.0, 1),
                },
            )
        }
        _ => String::new(),
    };
    let mut v = switch_vars(r);
    v.extend(vars! { rows: rows.join("\n"), maps: maps });
    v
}

/// One figure of every warm start-up run.
fn warm(r: &Results, f: fn(&StartRun) -> f64) -> Vec<f64> {
    match &r.startup {
        Some(Ok(s)) => s.warm.iter().map(f).collect(),
        _ => Vec::new(),
    }
}

/// Section 4: start-up (also its target's row).
fn startup_vars(r: &Results) -> Vars {
    let Some(Ok(s)) = &r.startup else {
        return Vars::new();
    };
    let (tr, off, att, ext) = (
        warm(r, |x| x.tracing_ms),
        warm(r, |x| x.offsets_ms),
        warm(r, |x| x.attached_ms),
        warm(r, |x| x.external_ms),
    );
    let rss = warm(r, |x| x.maxrss_kib as f64);
    let max_tracing = min_max(&tr).1;
    vars! {
        warm_runs: s.warm.len(),
        cold_offsets: num(s.cold.offsets_ms, 1),
        cold_attached: num(s.cold.attached_ms, 1),
        cold_tracing: num(s.cold.tracing_ms, 1),
        cold_external: num(s.cold.external_ms, 1),
        cold_rss: num(mib(s.cold.maxrss_kib), 1),
        med_offsets: num(median(&off), 1),
        med_attached: num(median(&att), 1),
        med_tracing: num(median(&tr), 1),
        med_external: num(median(&ext), 1),
        med_rss: num(median(&rss) / 1024.0, 1),
        max_offsets: num(min_max(&off).1, 1),
        max_attached: num(min_max(&att).1, 1),
        max_tracing: num(max_tracing, 1),
        max_external: num(min_max(&ext).1, 1),
        max_rss: num(min_max(&rss).1 / 1024.0, 1),
        samples: list(&tr, 1),
        status: met(max_tracing <= T_START_MS),
        load_ms: num(median(&att) - median(&off), 1),
        cold_btf_ms: num(s.cold.offsets_ms - median(&off), 1),
    }
}

/// Sections 5 and 6 (and their targets' rows): one traced helper run.
fn threads_vars(r: &Results, t: &ThreadsRun) -> Vars {
    let pct = t.cpu_s / t.wall_s * 100.0;
    let start_rss = warm(r, |x| x.maxrss_kib as f64);
    let (v, c) = (&t.read_ms, &t.read_cpu_ms);
    let large = t.n == LARGE_THREADS;
    let read_met = max(v).map_or("n/a", |m| met(m <= T_READ_MS));
    let or_none = |v: &[f64]| {
        if v.is_empty() {
            "none".into()
        } else {
            list(v, 2)
        }
    };
    let steady_ok = t.steady_pct.is_some_and(|p| p <= T_CPU_PCT);
    vars! {
        n: t.n,
        secs: t.secs,
        period_ms: t.period_ms,
        helper_tasks: t.helper_tasks,
        threads_seen: t.report.threads,
        dropped: t.report.dropped,
        dropped_status: met(t.report.dropped == 0),
        tracing_ms: num(t.tracing_ms, 1),
        limits: t.limits,
        cpu_pct: num(pct, 2),
        cpu_s: num(t.cpu_s, 3),
        wall_s: num(t.wall_s, 2),
        wall_s_round: num(t.wall_s, 0),
        cpu_status: met(pct <= T_CPU_PCT),
        both_status: met(pct <= T_CPU_PCT && steady_ok),
        startup_cpu_s: opt(t.startup_cpu_s, 2),
        steady_pct: opt(t.steady_pct, 2),
        steady_status: met(steady_ok),
        rss_mib: num(mib(t.maxrss_kib), 1),
        rss_status: met(mib(t.maxrss_kib) <= T_RSS_MIB),
        vmhwm_mib: opt(t.vmhwm_kib.map(mib), 1),
        vmrss_mib: opt(t.vmrss_kib.map(mib), 1),
        start_rss_mib: opt(med(&start_rss).map(|m| m / 1024.0), 1),
        c_rss_mib: opt(median_kib(&r.c_rss).map(mib), 1),
        floor_rss_mib: opt(median_kib(&r.floor_rss).map(mib), 1),
        read_n: v.len(),
        read_median: opt(med(v), 2),
        read_max: opt(max(v), 2),
        read_list: or_none(v),
        read_met: read_met,
        read_status: if large { format!("<= {T_READ_MS} ms: {read_met}") } else { "info".into() },
        cpu_read_n: c.len(),
        cpu_read_median: opt(med(c), 2),
        cpu_read_max: opt(max(c), 2),
        cpu_read_list: or_none(c),
        small_rate: t.n as u64 * 1000 / SMALL_PERIOD_MS,
        rate: t.n as u64 * 1000 / t.period_ms.max(1),
    }
}

/// Section 7: the criterion benches.
fn criterion_vars(figures: &[criterion::Figure]) -> Vars {
    let d = criterion::duration;
    let rows: Vec<String> = figures
        .iter()
        .map(|f| {
            let per = f.elements.map_or("-".into(), |n| {
                format!("{} ({n} elements)", d(f.median_ns / n as f64))
            });
            format!(
                "| {} | {} | {} ({} to {}) | {per} |",
                f.name,
                d(f.median_ns),
                d(f.mean_ns),
                d(f.mean_ci_ns.0),
                d(f.mean_ci_ns.1)
            )
        })
        .collect();
    vars! { command: criterion::COMMAND, rows: rows.join("\n") }
}

/// The targets of issue #6, where the cost is; a row per phase that ran.
fn targets_vars(r: &Results) -> Vars {
    let mut v = switch_vars(r);
    let row = |name: &str, vars: &Vars| {
        let mut all = vars.clone();
        all.extend(switch_vars(r));
        fill(name, &all)
    };
    let noise = r
        .round_diff(Cfg::C, Cfg::B)
        .map_or(String::new(), |(m, lo, hi)| {
            let status = met(lo <= 0.0 && 0.0 <= hi);
            row(
                "target-noise",
                &vars! { median: num(m, 1), lo: num(lo, 1), hi: num(hi, 1), status: status },
            )
        });
    let bpftrace = match (r.paired_added_ns(Cfg::D), r.paired_added_ns(Cfg::E)) {
        (Some(d), Some(e)) => row(
            "target-bpftrace",
            &vars! {
                d_ns: num(d, 1),
                e_ns: num(e, 1),
                ratio: r.ratio_text(Cfg::E, Cfg::D),
                status: met(d < e),
            },
        ),
        _ => String::new(),
    };
    let phase_row = |name, x: Option<Vars>| x.map_or(String::new(), |vars| row(name, &vars));
    let ok = |x: &Option<Result<ThreadsRun, String>>| match x {
        Some(Ok(t)) => Some(threads_vars(r, t)),
        _ => None,
    };
    let startup = matches!(r.startup, Some(Ok(_))).then(|| startup_vars(r));
    v.extend(vars! {
        db_ratio: r.ratio_text(Cfg::D, Cfg::B),
        d_ns: opt(r.paired_added_ns(Cfg::D), 1),
        b_ns: opt(r.paired_added_ns(Cfg::B), 1),
        db_cautious: times(r.ratio_cautious(Cfg::D, Cfg::B)),
        db_medians: times(r.ratio(Cfg::D, Cfg::B)),
        db_status: r.added_ratio_status(),
        noise: noise,
        bpftrace: bpftrace,
        startup: phase_row("target-startup", startup),
        threads: phase_row("target-threads", ok(&r.small)),
        scale: phase_row("target-scale", ok(&r.large)),
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::Run;

    #[test]
    fn a_saved_run_renders_every_section_and_a_missing_phase_its_heading() {
        let text = include_str!("../../fixtures/bench-run.json");
        let mut run: Run = serde_json::from_str(text).unwrap();
        let md = render(&run.env, &run.results, Duration::from_secs(143));
        let headings = md.lines().filter(|l| l.starts_with("## ")).count();
        assert_eq!(headings, 11, "{md}");
        assert!(!md.contains(['{', '}']), "{md}");
        assert!(md.contains("| (c) | btf_sched_switch | 420169 | 28487458 | 67.8 |"));
        run.results.startup = Some(Err("boom".into()));
        run.results.large = None;
        let md = render(&run.env, &run.results, Duration::from_secs(143));
        assert!(
            md.contains("\n## 4. Start-up time\n\nFAILED: boom\n\n## 5."),
            "{md}"
        );
        assert!(
            md.contains("\n## 6. Scale: 10000 threads\n\nnot run\n"),
            "{md}"
        );
        assert!(!md.contains("| warm start-up <="), "{md}");
    }
}
