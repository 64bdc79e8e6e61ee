//! BENCHMARKS.md from [`Results`], through the minijinja template
//! bench/templates/BENCHMARKS.md.j2, which holds the prose and the tables:
//! the template reads the run as saved, and this file adds the figures
//! derived from it (medians, ratios, targets met).

use super::parse::{Prog, TraceReport, med, median, min_max, quantile};
use super::pipe::{CFGS, Cfg};
use super::results::{Env, Results, ok, read_trim};
use super::serve::{SERVE_CGROUPS, SERVE_THREADS_PER, ServeRun};
use super::startup::StartRun;
use super::threads::{LARGE_THREADS, SMALL_PERIOD_MS, SMALL_THREADS, ThreadsRun};
use super::{
    CALIBRATION_LOOPS, Phase, RUN_TARGET_S, T_ADDED_RATIO, T_CPU_PCT, T_NEIGHBOUR_RISE_PCT,
    T_READ_MS, T_RSS_MIB, T_SERVE_CPU_PCT, T_SERVE_GROWTH_PCT, T_SERVE_RSS_MB, T_START_MS,
    T_SWITCH_NS, criterion,
};
use minijinja::{Environment, UndefinedBehavior, Value, context};
use std::time::Duration;

const TEMPLATE: &str = include_str!("../templates/BENCHMARKS.md.j2");

/// The programs of the bpf_stats table, in its order.
const PROGRAMS: [&str; 8] = [
    "btf_sched_switch",
    "btf_sched_migrate_task",
    "btf_sched_wakeup",
    "btf_sched_wakeup_new",
    "btf_sched_process_exit",
    "floor_sched_switch",
    "floor_clock_sched_switch",
    "floor_lookup_sched_switch",
];

pub fn render(env: &Env, r: &Results, took: Duration) -> String {
    let mut jinja = Environment::new();
    jinja.set_trim_blocks(true);
    jinja.set_lstrip_blocks(true);
    jinja.set_keep_trailing_newline(true);
    // A name the template uses and this file does not give fails the render
    // test rather than printing nothing.
    jinja.set_undefined_behavior(UndefinedBehavior::Strict);
    jinja.add_filter("f", |v: Value, digits: usize| opt(number(&v), digits));
    jinja.add_filter("x", |v: Value| times(number(&v)));
    jinja.add_filter("dur", |ns: f64| criterion::duration(ns));
    let ctx = context! {
        env,
        r,
        took_s => took.as_secs_f64(),
        c => context! {
            run_target_s => RUN_TARGET_S.to_string(),
            calibration_loops => CALIBRATION_LOOPS,
            t_added_ratio => T_ADDED_RATIO.to_string(),
            t_switch_ns => T_SWITCH_NS.to_string(),
            t_neighbour_rise_pct => T_NEIGHBOUR_RISE_PCT.to_string(),
            t_start_ms => T_START_MS.to_string(),
            t_cpu_pct => T_CPU_PCT.to_string(),
            t_rss_mib => T_RSS_MIB.to_string(),
            t_read_ms => T_READ_MS.to_string(),
            small_threads => SMALL_THREADS,
            large_threads => LARGE_THREADS,
            small_period_ms => SMALL_PERIOD_MS,
            t_serve_cpu_pct => T_SERVE_CPU_PCT.to_string(),
            t_serve_rss_mb => T_SERVE_RSS_MB.to_string(),
            t_serve_growth_pct => T_SERVE_GROWTH_PCT.to_string(),
            serve_cgroups => SERVE_CGROUPS,
            serve_threads => SERVE_CGROUPS * SERVE_THREADS_PER,
        },
        pipe => r.phases.contains(&Phase::Pipe).then(|| pipe(r)),
        ratios => ratios(r),
        bpf => bpf(r),
        stats => ok(&r.stats).map(|_| stats(r)),
        startup => ok(&r.startup).map(startup),
        small => ok(&r.small).map(threads),
        large => ok(&r.large).map(threads),
        rss => rss(r),
        criterion => ok(&r.criterion).map(|f| context! { command => criterion::COMMAND, figures => f }),
        serve => ok(&r.serve).map(|s| serve(r, s)),
        missing => Value::from_iter(r.failures().map(|(_, key, e)| {
            (key, e.map_or("not run".into(), |e| format!("FAILED: {e}")))
        })),
    };
    let rendered = jinja.render_str(TEMPLATE, ctx);
    rendered.unwrap_or_else(|e| panic!("BENCHMARKS.md.j2: {e:#}"))
}

/// A finite number, from a template value (none, undefined: `None`).
fn number(v: &Value) -> Option<f64> {
    f64::try_from(v.clone()).ok().filter(|x| x.is_finite())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

/// "4.22x", or "n/a".
pub fn times(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2}x"))
}

fn max(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| min_max(v).1)
}

fn median_kib(v: &[u64]) -> Option<f64> {
    let f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    med(&f).map(|m| (m as u64) as f64)
}

/// Sections 1 and 2: a row per configuration.
fn pipe(r: &Results) -> Value {
    let rows = CFGS.map(|cfg| {
        let v = &r.samples[cfg.index()];
        let why = r.e_skipped.as_deref().filter(|_| cfg == Cfg::E);
        let (lo, hi) = min_max(v);
        let p = r.paired(cfg);
        let a = cfg == Cfg::A;
        context! {
            tag => cfg.tag(),
            short => cfg.short(),
            samples => v,
            why => why.unwrap_or("-"),
            median => med(v),
            lo,
            hi,
            vs_a => r.med(Cfg::A).zip(med(v)).map(|(a, m)| m / a),
            paired => if a { "-".into() } else { opt(r.paired_added_ns(cfg), 1) },
            iqr => if a { "-".into() } else {
                format!("{:.1} to {:.1}", quantile(&p, 0.25), quantile(&p, 0.75))
            },
            from_medians => if a { "-".into() } else { opt(r.added_ns(cfg), 1) },
        }
    });
    let per_loop = |f: fn(&TraceReport) -> u64| {
        let v: Vec<f64> = (r.d_reports.iter())
            .map(|d| f(d) as f64 / r.loops as f64)
            .collect();
        med(&v)
    };
    context! {
        rows,
        switches => r.switches_per_op(),
        voluntary => per_loop(|d| d.voluntary),
        involuntary => per_loop(|d| d.involuntary),
    }
}

/// Ratios of added cost per switch, and the targets on them.
fn ratios(r: &Results) -> Value {
    let ratio = |num, den| {
        context! {
            paired => r.ratio_text(num, den),
            cautious => r.ratio_cautious(num, den),
            medians => r.ratio(num, den),
        }
    };
    let (d, e) = (r.paired_added_ns(Cfg::D), r.paired_added_ns(Cfg::E));
    let noise = r.round_diff(Cfg::C, Cfg::B).map(|(median, lo, hi)| {
        context! { median, lo, hi, status => met(lo <= 0.0 && 0.0 <= hi) }
    });
    context! {
        db => ratio(Cfg::D, Cfg::B),
        ed => ratio(Cfg::E, Cfg::D),
        cb => ratio(Cfg::C, Cfg::B),
        db_status => r.added_ratio_status(),
        d_ns => d,
        b_ns => r.paired_added_ns(Cfg::B),
        e_ns => e,
        noise,
        bpftrace_status => d.zip(e).map(|(d, e)| met(d < e)),
    }
}

/// In-program time of all affin-trace's programs of a run per
/// sched_switch event (not the floor programs (d) also runs).
fn per_switch(r: &Results, cfg: Cfg) -> Option<f64> {
    let s = ok(&r.stats)?;
    let n = r.stat(cfg, "btf_sched_switch")?.run_cnt? as f64;
    let total: u64 = (s.progs.iter())
        .filter(|(c, p)| *c == cfg && !p.name.starts_with("floor_"))
        .filter_map(|(_, p)| p.run_time_ns)
        .sum();
    (n > 0.0).then(|| total as f64 / n)
}

/// The bpf_stats figures (section 3 and the targets).
fn bpf(r: &Results) -> Value {
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    let switch_ns = r.ns_per_event(Cfg::D, "btf_sched_switch");
    let filter_ns = r.ns_per_event(Cfg::C, "btf_sched_switch");
    let floor_clock_ns = r.ns_per_event(Cfg::B, "floor_clock_sched_switch");
    // What one bpf_ktime_get_ns() costs: the clock floor over the empty one.
    let clock_ns = floor_clock_ns.zip(floor_ns).map(|(c, f)| c - f);
    let switch_runs = r.stat(Cfg::D, "btf_sched_switch").and_then(|p| p.run_cnt);
    // Clock reads per btf_sched_switch run in (d): one per wakeup wait ended.
    let clock_reads = switch_runs
        .filter(|n| *n > 0)
        .map(|n| r.stats_d_runq().unwrap_or(0) as f64 / n as f64);
    let count = |x: Option<u64>| x.map_or("n/a".into(), |x| x.to_string());
    // Issue 17's targets, as ratios to the empty program of the same run.
    let ratio = |x: Option<f64>, target: f64| {
        let x = x.zip(floor_ns).map(|(a, b)| a / b);
        context! { x, target, status => x.map_or("n/a", |x| met(x <= target)) }
    };
    let floor_ratios = vec![
        ("btf_sched_switch in (d)", ratio(switch_ns, 2.0)),
        (
            "all programs per sched_switch event in (d)",
            ratio(per_switch(r, Cfg::D), 3.0),
        ),
        (
            "btf_sched_switch on the filter path (c)",
            ratio(filter_ns, 1.3),
        ),
    ];
    // The ladders in (d) and (c): each floor program one step more of
    // btf_sched_switch's work, on the same events.
    let ladder = |cfg: Cfg, switch_ns: Option<f64>, reads: Option<f64>| {
        let step = |name| r.ns_per_event(cfg, name);
        let (floor, clock, lookup) = (
            step("floor_sched_switch"),
            step("floor_clock_sched_switch"),
            step("floor_lookup_sched_switch"),
        );
        let read_ns = clock.zip(floor).map(|(c, f)| c - f);
        // Its own clock reads: one read's cost times the reads per event;
        // the rest of its logic is the accounting.
        let reads_ns = read_ns.zip(reads).map(|(c, n)| c * n);
        let logic_ns = switch_ns.zip(lookup).map(|(a, b)| a - b);
        context! {
            floor_ns => floor,
            clock_ns => read_ns,
            lookup_ns => lookup.zip(floor).map(|(a, b)| a - b),
            logic_ns,
            reads_ns,
            accounting_ns => logic_ns.zip(reads_ns).map(|(l, c)| l - c),
            switch_vs_floor => switch_ns.zip(floor).map(|(a, b)| a / b),
            lookup_vs_floor => lookup.zip(floor).map(|(a, b)| a / b),
        }
    };
    // All programs per sched_switch event in (d), by program: each one's
    // ns per run times its runs per sched_switch run.
    let parts: Vec<Value> = PROGRAMS
        .iter()
        .filter(|n| !n.starts_with("floor_"))
        .filter_map(|name| {
            let p = r.stat(Cfg::D, name)?;
            let runs = p.run_cnt? as f64 / switch_runs.filter(|n| *n > 0)? as f64;
            let ns = r.ns_per_event(Cfg::D, name)?;
            Some(context! { name, ns, runs, per_switch => ns * runs })
        })
        .collect();
    // The agent on the same benchmark: its programs, the same ratios.
    let agent = ok(&r.stats).map_or(&[][..], |s| &s.agent);
    let agent_switch = agent.iter().find(|p| p.name == "btf_sched_switch");
    let agent_switch_ns = agent_switch.and_then(Prog::ns_per_event);
    let agent_total: u64 = agent.iter().filter_map(|p| p.run_time_ns).sum();
    let agent_per_switch = agent_switch
        .and_then(|p| p.run_cnt)
        .filter(|n| *n > 0)
        .map(|n| agent_total as f64 / n as f64);
    let agent_rows: Vec<Value> = PROGRAMS
        .iter()
        .filter_map(|name| agent.iter().find(|p| p.name == *name))
        .map(|p| {
            let ns = p.ns_per_event();
            context! {
                name => p.name,
                run_cnt => p.run_cnt,
                ns,
                vs_empty => ns.zip(floor_ns).map(|(a, b)| a / b),
                one_shot_ns => r.ns_per_event(Cfg::D, &p.name),
            }
        })
        .collect();
    let agent_ratios = vec![
        ("btf_sched_switch of the agent", ratio(agent_switch_ns, 2.0)),
        (
            "all the agent's programs per sched_switch event",
            ratio(agent_per_switch, 3.0),
        ),
    ];
    context! {
        neighbours_d => neighbour_cost(r, Cfg::D),
        neighbours_c => neighbour_cost(r, Cfg::C),
        agent_rows,
        agent_ratios,
        ladder => ladder(Cfg::D, switch_ns, clock_reads),
        filter_ladder => ladder(Cfg::C, filter_ns, None),
        parts,
        floor_ratios,
        floor_ns,
        switch_ns,
        filter_ns,
        floor_clock_ns,
        clock_ns,
        clock_reads,
        switch_status => switch_ns.map_or("n/a", |x| met(x <= T_SWITCH_NS)),
        switch_net_ns => switch_ns.zip(floor_ns).map(|(a, b)| a - b),
        filter_net_ns => filter_ns.zip(floor_ns).map(|(a, b)| a - b),
        d_per_switch => per_switch(r, Cfg::D),
        c_per_switch => per_switch(r, Cfg::C),
        runq_waits => count(r.stats_d_runq()),
        switch_runs => count(switch_runs),
        clock_total_ns => clock_ns.zip(clock_reads).map(|(c, n)| c * n),
    }
}

/// What the neighbour accounting adds to btf_sched_switch per event in
/// `cfg`'s runs: medians with it and without, and the median of the
/// interleaved pairs' rises (on / off - 1), in percent.
fn neighbour_cost(r: &Results, cfg: Cfg) -> Value {
    let runs = ok(&r.stats).map_or(&[][..], |s| &s.neighbours);
    let ns = |on: bool| -> Vec<f64> {
        (runs.iter())
            .filter(|(c, o, _)| *c == cfg && *o == on)
            .filter_map(|(_, _, p)| p.ns_per_event())
            .collect()
    };
    let (with, without) = (ns(true), ns(false));
    let rises: Vec<f64> = (with.iter().zip(&without))
        .map(|(a, b)| (a / b - 1.0) * 100.0)
        .collect();
    let rise_pct = med(&rises);
    let (lo, hi) = if rises.is_empty() {
        (None, None)
    } else {
        let (lo, hi) = min_max(&rises);
        (Some(lo), Some(hi))
    };
    context! {
        pairs => rises.len(),
        with_ns => med(&with),
        without_ns => med(&without),
        rise_pct,
        lo,
        hi,
        status => rise_pct.map_or("n/a", |x| met(x <= T_NEIGHBOUR_RISE_PCT)),
    }
}

/// Section 3's tables: each run's programs, (c)'s maps.
fn stats(r: &Results) -> Value {
    let mut rows = Vec::new();
    let floor_ns = r.ns_per_event(Cfg::B, "floor_sched_switch");
    for cfg in [Cfg::B, Cfg::C, Cfg::D] {
        for name in PROGRAMS {
            if let Some(p) = r.stat(cfg, name) {
                let n = |x: Option<u64>| x.map_or("n/a".into(), |x| x.to_string());
                let ns = r.ns_per_event(cfg, name);
                rows.push(context! {
                    tag => cfg.tag(),
                    name => p.name,
                    run_cnt => n(p.run_cnt),
                    run_time_ns => n(p.run_time_ns),
                    ns,
                    vs_empty => ns.zip(floor_ns).map(|(a, b)| a / b),
                    verified => n(p.verified_insns.map(u64::from)),
                    xlated => n(p.bytes_xlated.map(|b| b / 8)),
                    jited => n(p.bytes_jited),
                });
            }
        }
    }
    let maps = ok(&r.stats).map_or(&[][..], |s| &s.maps);
    context! {
        rows,
        maps,
        maps_bytes => maps.iter().map(|m| m.bytes).sum::<u64>(),
        pid_max => read_trim("/proc/sys/kernel/pid_max"),
        possible_cpus => read_trim("/sys/devices/system/cpu/possible"),
    }
}

/// One figure of every warm start-up run.
fn warm(r: &Results, f: fn(&StartRun) -> f64) -> Vec<f64> {
    ok(&r.startup).map_or(Vec::new(), |s| s.warm.iter().map(f).collect())
}

/// Section 4: the median and max of the warm runs, the target.
fn startup(s: &super::startup::Startup) -> Value {
    let of = |f: fn(&StartRun) -> f64| s.warm.iter().map(f).collect::<Vec<f64>>();
    let (tr, off, att, ext) = (
        of(|x| x.tracing_ms),
        of(|x| x.offsets_ms),
        of(|x| x.attached_ms),
        of(|x| x.external_ms),
    );
    let rss = of(|x| x.maxrss_kib as f64);
    let stat = |f: fn(&[f64]) -> f64| {
        context! {
            tracing_ms => f(&tr),
            offsets_ms => f(&off),
            attached_ms => f(&att),
            external_ms => f(&ext),
            maxrss_kib => f(&rss),
        }
    };
    context! {
        median => stat(median),
        max => stat(|v| min_max(v).1),
        status => met(min_max(&tr).1 <= T_START_MS),
        load_ms => median(&att) - median(&off),
    }
}

/// Peak RSS for comparison (sections 5 and the targets), MiB.
fn rss(r: &Results) -> Value {
    let start = med(&warm(r, |x| x.maxrss_kib as f64));
    context! {
        start_mib => start.map(|m| m / 1024.0),
        c_mib => median_kib(&r.c_rss).map(|k| k / 1024.0),
        floor_mib => median_kib(&r.floor_rss).map(|k| k / 1024.0),
    }
}

/// Sections 5 and 6 (and their targets): one traced helper run.
fn threads(t: &ThreadsRun) -> Value {
    let pct = t.cpu_s / t.wall_s * 100.0;
    let rss_mib = t.maxrss_kib as f64 / 1024.0;
    let steady_ok = t.steady_pct.is_some_and(|p| p <= T_CPU_PCT);
    let reads = |v: &[f64]| context! { median => med(v), max => max(v) };
    context! {
        secs => t.secs.to_string(),
        cpu_pct => pct,
        cpu_status => met(pct <= T_CPU_PCT),
        steady_status => met(steady_ok),
        both_status => met(pct <= T_CPU_PCT && steady_ok),
        rss_mib,
        rss_status => met(rss_mib <= T_RSS_MIB),
        vmhwm_mib => t.vmhwm_kib.map(|k| k as f64 / 1024.0),
        vmrss_mib => t.vmrss_kib.map(|k| k as f64 / 1024.0),
        dropped_status => met(t.report.dropped == 0),
        reads => reads(&t.read_ms),
        cpu_reads => reads(&t.read_cpu_ms),
        read_status => max(&t.read_ms).map_or("n/a", |m| met(m <= T_READ_MS)),
        small_rate => t.n as u64 * 1000 / SMALL_PERIOD_MS,
        rate => t.n as u64 * 1000 / t.period_ms.max(1),
        ..Value::from_serialize(t)
    }
}

/// Section 8 (and its targets): the agent's soak.
fn serve(r: &Results, s: &ServeRun) -> Value {
    let cpu_pct = s.cpu_s / s.secs * 100.0;
    let mib = |k: u64| k as f64 / 1024.0;
    let growth_pct =
        (s.rss_end_kib as f64 - s.rss_start_kib as f64) / s.rss_start_kib.max(1) as f64 * 100.0;
    let progs: Vec<Value> = (s.progs.iter())
        .map(|p| {
            let ns = p
                .run_time_ns
                .zip(p.run_cnt)
                .filter(|x| x.1 > 0)
                .map(|(t, n)| t as f64 / n as f64);
            context! {
                name => p.name,
                run_cnt => p.run_cnt.map_or("n/a".into(), |x| x.to_string()),
                ns,
                one_shot_ns => r.ns_per_event(Cfg::D, &p.name),
            }
        })
        .collect();
    context! {
        minutes => s.secs / 60.0,
        cpu_pct,
        cpu_status => met(cpu_pct <= T_SERVE_CPU_PCT),
        rss_start_mib => mib(s.rss_start_kib),
        rss_end_mib => mib(s.rss_end_kib),
        hwm_mib => mib(s.hwm_kib),
        rss_status => met(mib(s.hwm_kib) <= T_SERVE_RSS_MB),
        growth_pct,
        growth_status => met(growth_pct <= T_SERVE_GROWTH_PCT),
        scrape => context! { median => med(&s.scrape_ms), max => max(&s.scrape_ms) },
        progs,
        errors => if s.errors.is_empty() { "none".to_string() } else { s.errors.join("; ") },
        ..Value::from_serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Run;

    #[test]
    fn a_saved_run_renders_every_section_and_a_missing_phase_its_heading() {
        let text = include_str!("../fixtures/bench-run.json");
        let mut run: Run = serde_json::from_str(text).unwrap();
        let md = render(&run.env, &run.results, Duration::from_secs(143));
        let headings = md.lines().filter(|l| l.starts_with("## ")).count();
        assert_eq!(headings, 12, "{md}");
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
