//! Workload classification: [`Features`] in, one of the seed's six classes
//! out, with the reasons that decided it.
//!
//! The tests run in the seed's order and with its defaults:
//! 1. `avg_cpu > 80`: `variance < 100` → cpu_intensive_steady, else
//!    cpu_intensive_bursty;
//! 2. `migration_rate > 5`/s → migration_heavy;
//! 3. `cache_miss_ratio > 0.3` → cache_sensitive (the ratio is the share of
//!    migrations leaving the LLC, see [`crate::analyze::features::CACHE_MISS_SOURCE`]);
//! 4. `avg_cpu < 20` → io_bound;
//! 5. otherwise balanced.
//!
//! Comparisons are strict, as in the seed: 80.0 is not above 80, a variance
//! of exactly 100 is not below 100 (bursty). Every verdict lists each test
//! it went through, the failed ones included.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::analyze::features::{Features, TraceFeatures};

/// The six workload classes, in the order the tests are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Busy and steady: dedicated physical cores.
    CpuIntensiveSteady,
    /// Busy with swings: cores with their SMT siblings.
    CpuIntensiveBursty,
    /// Moves between CPUs often: keep it inside one LLC.
    MigrationHeavy,
    /// Migrations mostly leave the LLC: keep it inside one LLC.
    CacheSensitive,
    /// Mostly waiting: few (efficiency) CPUs.
    IoBound,
    /// None of the above: one NUMA node.
    Balanced,
}

impl Class {
    /// All classes in test order.
    pub const ALL: [Class; 6] = [
        Class::CpuIntensiveSteady,
        Class::CpuIntensiveBursty,
        Class::MigrationHeavy,
        Class::CacheSensitive,
        Class::IoBound,
        Class::Balanced,
    ];

    /// The seed's name ("cpu_intensive_steady", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::CpuIntensiveSteady => "cpu_intensive_steady",
            Class::CpuIntensiveBursty => "cpu_intensive_bursty",
            Class::MigrationHeavy => "migration_heavy",
            Class::CacheSensitive => "cache_sensitive",
            Class::IoBound => "io_bound",
            Class::Balanced => "balanced",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classification thresholds (the seed's defaults). Loaded from the
/// `[thresholds]` table of the config file; the CLI overrides fields.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// avg_cpu above this (% of one CPU) is CPU-intensive.
    pub cpu_intensive_pct: f64,
    /// CPU-intensive with variance below this (%^2) is steady.
    pub steady_variance: f64,
    /// Migrations per second above this is migration-heavy.
    pub migration_rate: f64,
    /// cache_miss_ratio above this (0..=1) is cache-sensitive.
    pub cache_miss_ratio: f64,
    /// avg_cpu below this (% of one CPU) is I/O-bound.
    pub io_bound_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            cpu_intensive_pct: 80.0,
            steady_variance: 100.0,
            migration_rate: 5.0,
            cache_miss_ratio: 0.3,
            io_bound_pct: 20.0,
        }
    }
}

/// A threshold outside its meaningful range.
#[derive(Clone, Debug, PartialEq, Error)]
#[error("threshold {key} = {value} is invalid: {expected}")]
pub struct ThresholdError {
    /// Field name, as in the config file.
    pub key: &'static str,
    /// The value given.
    pub value: f64,
    /// What it must be.
    pub expected: &'static str,
}

impl Thresholds {
    /// Checks every field: finite, not negative; the ratio at most 1.
    pub fn validate(&self) -> Result<(), ThresholdError> {
        let fields = [
            ("cpu_intensive_pct", self.cpu_intensive_pct),
            ("steady_variance", self.steady_variance),
            ("migration_rate", self.migration_rate),
            ("cache_miss_ratio", self.cache_miss_ratio),
            ("io_bound_pct", self.io_bound_pct),
        ];
        for (key, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(ThresholdError {
                    key,
                    value,
                    expected: "must be a finite number >= 0",
                });
            }
        }
        if self.cache_miss_ratio > 1.0 {
            return Err(ThresholdError {
                key: "cache_miss_ratio",
                value: self.cache_miss_ratio,
                expected: "must be between 0 and 1 (a share of migrations)",
            });
        }
        Ok(())
    }
}

/// A verdict and the tests that led to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The class.
    pub class: Class,
    /// Each test tried, in order, with the value and threshold
    /// ("avg_cpu 3.1% <= 80", ..., "avg_cpu 3.1% < 20").
    pub reasons: Vec<String>,
    /// Each test of `reasons`, in the same order, with its margin to the
    /// threshold.
    #[serde(default)]
    pub margins: Vec<Margin>,
    /// Set when a test that decided the class lies within
    /// [`BORDERLINE`] of its threshold: the class could flip on the next
    /// window, to the runner-up.
    #[serde(default)]
    pub borderline: Option<Borderline>,
}

/// Relative distance to a threshold under which a verdict is borderline.
pub const BORDERLINE: f64 = 0.05;

/// One test's distance to its threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    /// The figure ("avg_cpu", "variance", "migration_rate", ...).
    pub test: String,
    /// Its value.
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// The test held (`>` for above-tests, `<` for below-tests).
    pub held: bool,
    /// value - threshold, in the figure's unit.
    pub margin: f64,
    /// |margin| / threshold (null for a zero threshold).
    pub relative: Option<f64>,
}

/// A verdict close to flipping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Borderline {
    /// The test nearest its threshold.
    pub test: String,
    /// Its relative margin (0.001 = 0.1%).
    pub relative: f64,
    /// The class the verdict would be if that test went the other way.
    pub runner_up: Class,
}

impl Borderline {
    /// "borderline: migration_rate is 0.1% from its threshold; runner-up
    /// balanced".
    pub fn summary(&self) -> String {
        format!(
            "borderline: {} is {:.1}% from its threshold (within {:.0}%); runner-up {}",
            self.test,
            self.relative * 100.0,
            BORDERLINE * 100.0,
            self.runner_up
        )
    }
}

impl Classification {
    /// The reasons on one line, separated by "; ".
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }
}

/// One thread's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadClassification {
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// Its verdict.
    pub classification: Classification,
}

/// Verdicts for the process and each thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceClassification {
    /// The seed's key: the class of the target as a whole (the same as
    /// `process.class`).
    pub workload_type: Class,
    /// The target as a whole.
    pub process: Classification,
    /// Each selected thread.
    pub threads: Vec<ThreadClassification>,
}

/// Classifies the process and each thread.
pub fn classify_trace(f: &TraceFeatures, t: &Thresholds) -> TraceClassification {
    let process = classify(&f.process, t);
    TraceClassification {
        workload_type: process.class,
        process,
        threads: f
            .threads
            .iter()
            .map(|th| ThreadClassification {
                tid: th.tid,
                comm: th.comm.clone(),
                classification: classify(&th.features, t),
            })
            .collect(),
    }
}

/// Classifies one set of features, in the seed's order of tests.
pub fn classify(f: &Features, t: &Thresholds) -> Classification {
    let mut test = Reasons::default();
    let class = decide(f, t, &mut test);
    let borderline = borderline(f, t, &test);
    Classification {
        class,
        reasons: test.reasons,
        margins: test.margins,
        borderline,
    }
}

/// The seed's chain of tests; `test` records each one tried (and may flip
/// one, to find the runner-up).
fn decide(f: &Features, t: &Thresholds, test: &mut Reasons) -> Class {
    let cpu = cpu_figure(f);
    if test.above(cpu, t.cpu_intensive_pct) {
        let var = Figure::new("variance", f.cpu_variance, "", 1);
        if test.below(var, t.steady_variance) {
            Class::CpuIntensiveSteady
        } else {
            Class::CpuIntensiveBursty
        }
    } else if test.above(
        Figure::new("migration_rate", f.migration_rate, "/s", 1),
        t.migration_rate,
    ) {
        Class::MigrationHeavy
    } else if test.above(
        Figure::new("cache_miss_ratio", f.cache_miss_ratio, "", 2),
        t.cache_miss_ratio,
    ) {
        Class::CacheSensitive
    } else if test.below(cpu, t.io_bound_pct) && test.sleeps(f) {
        Class::IoBound
    } else {
        Class::Balanced
    }
}

/// The test tried nearest its threshold, when within [`BORDERLINE`], with
/// the class the chain gives when that one test goes the other way.
fn borderline(f: &Features, t: &Thresholds, tried: &Reasons) -> Option<Borderline> {
    let (i, m, rel) = tried
        .margins
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.relative.map(|r| (i, m, r)))
        .filter(|&(_, _, r)| r <= BORDERLINE)
        .min_by(|a, b| a.2.total_cmp(&b.2))?;
    let mut flipped = Reasons {
        flip: Some(i),
        ..Reasons::default()
    };
    let runner_up = decide(f, t, &mut flipped);
    Some(Borderline {
        test: m.test.clone(),
        relative: rel,
        runner_up,
    })
}

/// Demand above usage by more than this (points of % of one CPU, or this
/// share of usage, whichever is more) decides instead of usage: below it,
/// the difference is the ordinary wakeup latency of any thread.
const DEMAND_MARGIN_PCT: f64 = 5.0;
/// The relative part of [`DEMAND_MARGIN_PCT`].
const DEMAND_MARGIN_SHARE: f64 = 0.10;

/// The CPU figure the class is decided on: demand (running + runnable)
/// where usage understates it, so that a thread other processes kept off
/// the CPU reads as what it asked for, not what it got (a starved spinner
/// is CPU-intensive, not I/O-bound).
fn cpu_figure(f: &Features) -> Figure {
    let margin = DEMAND_MARGIN_PCT.max(f.avg_cpu_usage * DEMAND_MARGIN_SHARE);
    if f.avg_cpu_demand > f.avg_cpu_usage + margin {
        Figure::new("avg_cpu_demand", f.avg_cpu_demand, "%", 1)
    } else {
        Figure::new("avg_cpu", f.avg_cpu_usage, "%", 1)
    }
}

/// Share of the off-CPU time spent asleep (voluntarily) that an I/O-bound
/// verdict needs: waiting for a CPU is not waiting for I/O.
const IO_SLEEP_SHARE: f64 = 0.5;

/// A feature as printed in a reason: name, value, unit, decimals.
#[derive(Clone, Copy)]
struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    decimals: usize,
}

impl Figure {
    fn new(name: &'static str, value: f64, unit: &'static str, decimals: usize) -> Self {
        Self {
            name,
            value,
            unit,
            decimals,
        }
    }

    /// "avg_cpu 97.2% > 80": the figure, the operator that held, the threshold.
    fn reason(&self, threshold: f64, op: &str) -> String {
        let v = fmt_near(self.value, threshold, self.decimals);
        format!("{} {v}{} {op} {threshold}", self.name, self.unit)
    }
}

/// The tests tried so far, each with its reason and margin. `flip` turns
/// the outcome of the test with that index around (the runner-up's path).
#[derive(Default)]
struct Reasons {
    reasons: Vec<String>,
    margins: Vec<Margin>,
    flip: Option<usize>,
}

impl Reasons {
    /// `value > threshold`, recorded.
    fn above(&mut self, f: Figure, threshold: f64) -> bool {
        let held = self.record(f, threshold, f.value > threshold);
        self.reasons
            .push(f.reason(threshold, if held { ">" } else { "<=" }));
        held
    }

    /// Whether the off-CPU time is mostly sleep, recorded; true without a
    /// wait split (traces recorded before it), as before.
    fn sleeps(&mut self, f: &Features) -> bool {
        let off = f.sleep_ns.saturating_add(f.runnable_ns);
        if f.lifetime_ns == 0 || off == 0 {
            return true;
        }
        let share = f.sleep_ns as f64 / off as f64;
        let held = share >= IO_SLEEP_SHARE;
        self.reasons.push(format!(
            "off-CPU asleep {:.0}% {} {:.0}%",
            share * 100.0,
            if held { ">=" } else { "<" },
            IO_SLEEP_SHARE * 100.0
        ));
        held
    }

    /// `value < threshold`, recorded.
    fn below(&mut self, f: Figure, threshold: f64) -> bool {
        let held = self.record(f, threshold, f.value < threshold);
        self.reasons
            .push(f.reason(threshold, if held { "<" } else { ">=" }));
        held
    }

    fn record(&mut self, f: Figure, threshold: f64, held: bool) -> bool {
        let margin = f.value - threshold;
        self.margins.push(Margin {
            test: f.name.to_string(),
            value: f.value,
            threshold,
            held,
            margin,
            relative: (threshold != 0.0).then(|| (margin / threshold).abs()),
        });
        held != (self.flip == Some(self.margins.len() - 1))
    }
}

/// Formats `value` with `decimals` digits, or with more when that rounding
/// would print it as the threshold itself (80.04 shows as "80.04", not
/// "80.0 > 80").
fn fmt_near(value: f64, threshold: f64, decimals: usize) -> String {
    let mut d = decimals;
    loop {
        let s = format!("{value:.d$}");
        let looks_equal = s.parse::<f64>().ok() == Some(threshold) && value != threshold;
        if !looks_equal || d >= 9 {
            return s;
        }
        d += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that got `usage`% of a CPU and waited runnable for
    /// `runnable`% and slept `sleep`% of a 10 s window.
    fn split(usage: f64, runnable: f64, sleep: f64) -> Features {
        let ns = |pct: f64| (pct * 1e8) as u64;
        let demand = ns(usage) + ns(runnable);
        Features {
            avg_cpu_usage: usage,
            cpu_variance: 1.0,
            cpu_time_ns: ns(usage),
            runnable_ns: ns(runnable),
            sleep_ns: ns(sleep),
            lifetime_ns: ns(usage) + ns(runnable) + ns(sleep),
            cpu_demand_ns: demand,
            avg_cpu_demand: demand as f64 / 1e8,
            demand_parallelism: demand as f64 / 1e10,
            window_ns: 10_000_000_000,
            ..Features::default()
        }
    }

    #[test]
    fn a_starved_spinner_is_cpu_intensive_on_demand() {
        // Issue 13: 9% on CPU, 91% waiting runnable behind other processes.
        let c = classify(&split(9.0, 91.0, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::CpuIntensiveSteady, "{c:?}");
        assert!(
            c.reasons[0].starts_with("avg_cpu_demand 100.0% > 80"),
            "{c:?}"
        );
    }

    #[test]
    fn waiting_for_a_cpu_is_not_io() {
        // Low demand but the off-CPU time is mostly runnable: not io_bound.
        let c = classify(&split(2.0, 12.0, 5.0), &Thresholds::default());
        assert_eq!(c.class, Class::Balanced, "{c:?}");
        assert!(c.summary().contains("off-CPU asleep 29% < 50%"), "{c:?}");
        let c = classify(&split(2.0, 1.0, 97.0), &Thresholds::default());
        assert_eq!(c.class, Class::IoBound, "{c:?}");
        assert!(c.summary().contains("avg_cpu 2.0% < 20"), "{c:?}");
    }

    #[test]
    fn ordinary_wakeup_latency_leaves_the_usage_figure() {
        let c = classify(&split(50.0, 3.0, 47.0), &Thresholds::default());
        assert!(c.reasons[0].starts_with("avg_cpu 50.0%"), "{c:?}");
    }

    fn feat(cpu: f64, var: f64, rate: f64, miss: f64) -> Features {
        Features {
            avg_cpu_usage: cpu,
            cpu_variance: var,
            migration_rate: rate,
            cache_miss_ratio: miss,
            ..Default::default()
        }
    }

    fn class(cpu: f64, var: f64, rate: f64, miss: f64) -> Class {
        classify(&feat(cpu, var, rate, miss), &Thresholds::default()).class
    }

    #[test]
    fn table_covers_every_class_and_each_boundary() {
        use Class::*;
        // (avg_cpu, variance, migration_rate, cache_miss_ratio) -> class
        let table = [
            // cpu_intensive: strictly above 80.
            ((97.2, 12.0, 0.0, 0.0), CpuIntensiveSteady),
            ((80.000001, 0.0, 0.0, 0.0), CpuIntensiveSteady),
            ((97.2, 99.999, 0.0, 0.0), CpuIntensiveSteady),
            ((97.2, 100.0, 0.0, 0.0), CpuIntensiveBursty),
            ((97.2, 500.0, 0.0, 0.0), CpuIntensiveBursty),
            // Busy wins over migrations and cache misses (test order).
            ((150.0, 10.0, 50.0, 0.9), CpuIntensiveSteady),
            // 80.0 is NOT > 80: falls through to the next tests.
            ((80.0, 0.0, 0.0, 0.0), Balanced),
            ((80.0, 0.0, 5.000001, 0.0), MigrationHeavy),
            ((50.0, 0.0, 5.0, 0.0), Balanced),
            ((50.0, 0.0, 6.0, 0.9), MigrationHeavy),
            ((50.0, 0.0, 5.0, 0.300001), CacheSensitive),
            ((50.0, 0.0, 5.0, 0.3), Balanced),
            // Migrations and misses win over low CPU (test order).
            ((3.0, 0.0, 0.0, 0.5), CacheSensitive),
            ((3.0, 0.0, 10.0, 0.0), MigrationHeavy),
            // io_bound: strictly below 20.
            ((3.1, 0.0, 0.0, 0.0), IoBound),
            ((19.999, 0.0, 0.0, 0.0), IoBound),
            ((20.0, 0.0, 0.0, 0.0), Balanced),
            ((0.0, 0.0, 0.0, 0.0), IoBound),
        ];
        for ((cpu, var, rate, miss), want) in table {
            assert_eq!(
                class(cpu, var, rate, miss),
                want,
                "{cpu} {var} {rate} {miss}"
            );
        }
        let mut seen: Vec<Class> = table.iter().map(|r| r.1).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, Class::ALL.to_vec());
    }

    #[test]
    fn reasons_name_the_deciding_tests() {
        let c = classify(&feat(97.2, 12.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.reasons, ["avg_cpu 97.2% > 80", "variance 12.0 < 100"]);
        let c = classify(&feat(97.2, 100.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.reasons[1], "variance 100.0 >= 100");
    }

    #[test]
    fn reasons_list_the_failed_earlier_tests() {
        let c = classify(&feat(3.1, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::IoBound);
        assert_eq!(
            c.summary(),
            "avg_cpu 3.1% <= 80; migration_rate 0.0/s <= 5; cache_miss_ratio 0.00 <= 0.3; \
             avg_cpu 3.1% < 20"
        );
        let b = classify(&feat(20.0, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(b.reasons.last().unwrap(), "avg_cpu 20.0% >= 20");
    }

    #[test]
    fn values_near_a_threshold_get_more_digits() {
        let c = classify(&feat(80.04, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.reasons[0], "avg_cpu 80.04% > 80");
        let c = classify(&feat(80.0, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.reasons[0], "avg_cpu 80.0% <= 80");
        let c = classify(&feat(50.0, 0.0, 0.0, 0.3001), &Thresholds::default());
        assert_eq!(c.reasons[2], "cache_miss_ratio 0.3001 > 0.3");
    }

    #[test]
    fn custom_thresholds_move_the_boundaries() {
        let t = Thresholds {
            cpu_intensive_pct: 50.0,
            io_bound_pct: 5.0,
            ..Default::default()
        };
        assert_eq!(
            classify(&feat(60.0, 0.0, 0.0, 0.0), &t).class,
            Class::CpuIntensiveSteady
        );
        assert_eq!(
            classify(&feat(10.0, 0.0, 0.0, 0.0), &t).class,
            Class::Balanced
        );
        assert_eq!(
            classify(&feat(60.0, 0.0, 0.0, 0.0), &t).reasons[0],
            "avg_cpu 60.0% > 50"
        );
    }

    #[test]
    fn classifies_the_process_and_each_thread_from_a_trace() {
        use crate::analyze::features::{extract, testutil::*};
        let spinner = mk_thread(1, &[100.0, 100.0, 100.0], &[0]);
        let sleeper = mk_thread(2, &[1.0, 2.0, 3.0], &[1]);
        let tc = classify_trace(
            &extract(&mk_trace(vec![spinner, sleeper]), 0),
            &Thresholds::default(),
        );
        assert_eq!(tc.process.class, Class::CpuIntensiveSteady);
        assert_eq!(tc.workload_type, Class::CpuIntensiveSteady);
        assert_eq!(
            tc.threads[0].classification.class,
            Class::CpuIntensiveSteady
        );
        assert_eq!(tc.threads[1].tid, 2);
        assert_eq!(tc.threads[1].classification.class, Class::IoBound);
    }

    #[test]
    fn exact_threshold_data_from_a_trace_is_not_above_it() {
        use crate::analyze::features::{extract, testutil::*};
        // Exactly 80% every second, and a 90/110 bursty pair with variance 100.
        let at = mk_trace(vec![mk_thread(1, &[80.0, 80.0], &[0])]);
        let c = classify(&extract(&at, 0).process, &Thresholds::default());
        assert_eq!(c.class, Class::Balanced, "{:?}", c.reasons);
        let edge = mk_trace(vec![mk_thread(1, &[90.0, 110.0], &[0, 1])]);
        let c = classify(&extract(&edge, 0).process, &Thresholds::default());
        assert_eq!(c.class, Class::CpuIntensiveBursty, "{:?}", c.reasons);
    }

    #[test]
    fn a_verdict_within_5_percent_of_a_threshold_is_borderline_with_its_runner_up() {
        // The nginx case: 4.997 migrations/s against 5.
        let c = classify(&feat(50.0, 0.0, 4.997, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::Balanced);
        let b = c.borderline.as_ref().expect("borderline");
        assert_eq!(b.test, "migration_rate");
        assert_eq!(b.runner_up, Class::MigrationHeavy);
        assert!((b.relative - 0.0006).abs() < 1e-9, "{}", b.relative);
        assert!(
            b.summary().contains("runner-up migration_heavy"),
            "{}",
            b.summary()
        );
        // Just above: the runner-up goes the other way.
        let c = classify(&feat(50.0, 0.0, 5.1, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::MigrationHeavy);
        assert_eq!(c.borderline.unwrap().runner_up, Class::Balanced);
        // avg_cpu 82% is 2.5% from 80: steady, runner-up what the rest says.
        let c = classify(&feat(82.0, 10.0, 20.0, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::CpuIntensiveSteady);
        assert_eq!(c.borderline.unwrap().runner_up, Class::MigrationHeavy);
        // The nearest of several near tests decides; io_bound edge too.
        let c = classify(&feat(19.5, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.class, Class::IoBound);
        assert_eq!(c.borderline.unwrap().runner_up, Class::Balanced);
    }

    #[test]
    fn a_verdict_far_from_every_threshold_is_not_borderline_and_margins_match_reasons() {
        let c = classify(&feat(3.1, 0.0, 0.0, 0.0), &Thresholds::default());
        assert_eq!(c.borderline, None);
        assert_eq!(c.margins.len(), c.reasons.len());
        assert_eq!(c.margins[0].test, "avg_cpu");
        assert!((c.margins[0].margin - (3.1 - 80.0)).abs() < 1e-9);
        assert!(!c.margins[0].held);
        assert!(c.margins[3].held, "avg_cpu < 20 held");
        // 6% away is not borderline.
        let c = classify(&feat(50.0, 0.0, 4.7, 0.0), &Thresholds::default());
        assert_eq!(c.borderline, None);
    }

    #[test]
    fn names_and_serde_use_the_seed_spelling() {
        assert_eq!(
            Class::CpuIntensiveSteady.to_string(),
            "cpu_intensive_steady"
        );
        assert_eq!(serde_json::to_value(Class::IoBound).unwrap(), "io_bound");
        for c in Class::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = Thresholds {
            cache_miss_ratio: 1.5,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.key, "cache_miss_ratio");
        assert!(e.to_string().contains("between 0 and 1"), "{e}");
        let neg = Thresholds {
            migration_rate: -1.0,
            ..Default::default()
        };
        assert_eq!(neg.validate().unwrap_err().key, "migration_rate");
        let nan = Thresholds {
            io_bound_pct: f64::NAN,
            ..Default::default()
        };
        assert!(nan.validate().is_err());
    }
}
