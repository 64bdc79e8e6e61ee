//! Did the applied CPU set help? Compares the figures of the trace before the
//! apply with a trace of the same length after it, on the one figure the
//! recommendation targeted for the class, against that figure's noise.
//!
//! The noise comes from the per-interval samples of both windows where the
//! figure has them (on-CPU % and migrations/s are read every interval):
//! twice the standard error of the difference of the two means (Welch's
//! form, so the windows may be unequally noisy), about a 95% band. A
//! difference inside it is "no measurable change", neither credited nor
//! blamed. Figures without per-interval samples (cross-LLC share, run-queue
//! p99) fall back to the fixed floors below, and the verdict says so. Pure.

use serde::Serialize;

use crate::{analyze::classify::Class, analyze::features::Features, model::Trace};

/// The figures shown before and after.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figures {
    /// Real migrations per second.
    pub migration_rate: f64,
    /// Share of migrations that left the last-level cache.
    pub cross_llc_share: f64,
    /// Wakeup-to-run p99 (ns).
    pub runq_p99_ns: Option<u64>,
    /// On-CPU, % of one CPU.
    pub on_cpu_pct: f64,
    /// Workload class.
    pub class: Class,
}

impl Figures {
    /// From a trace's process features and class.
    pub fn new(f: &Features, class: Class) -> Self {
        Self {
            migration_rate: f.migration_rate,
            cross_llc_share: f.cache_miss_ratio,
            runq_p99_ns: f.runq_p99_ns,
            on_cpu_pct: f.avg_cpu_usage,
            class,
        }
    }
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verification {
    /// Before the apply.
    pub before: Figures,
    /// After it.
    pub after: Figures,
    /// The figure the recommendation targeted.
    pub target: &'static str,
    /// It got worse beyond noise.
    pub worse: bool,
    /// The new set was kept (false: reverted automatically).
    pub kept: bool,
    /// One line saying what happened.
    pub verdict: String,
    /// "better", "worse" or "none" (no measurable change): the difference
    /// against the noise.
    pub change: Change,
    /// After minus before, in the figure's unit (null when either is
    /// missing).
    pub difference: Option<f64>,
    /// The band a difference must leave to count, in the figure's unit.
    pub noise: f64,
    /// How `noise` was found: "per_interval_samples" or "fixed_floor".
    pub noise_source: &'static str,
}

/// What the difference amounts to, against the noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Better beyond the noise.
    Better,
    /// Worse beyond the noise.
    Worse,
    /// Inside the noise (or not measurable).
    None,
}

/// A change counts only past both margins: relative (10%) and absolute
/// (per figure), so a figure near zero does not flip on one event.
const RELATIVE: f64 = 0.10;

/// Two standard errors: about 95% of differences between two windows of
/// the same workload fall inside.
const NOISE_SE: f64 = 2.0;

/// Which figure a class's recommendation aims at, and whether lower is
/// better, with its absolute noise floor.
fn target(class: Class) -> (&'static str, bool, f64) {
    match class {
        Class::MigrationHeavy => ("migration_rate", true, 1.0),
        Class::CacheSensitive => ("cross_llc_share", true, 0.05),
        Class::CpuIntensiveSteady | Class::CpuIntensiveBursty => ("on_cpu_pct", false, 5.0),
        Class::IoBound | Class::Balanced => ("runq_p99_ns", true, 50_000.0),
    }
}

/// The figure a class's verify looks at.
pub fn target_figure(class: Class) -> &'static str {
    target(class).0
}

fn value(f: &Figures, name: &str) -> Option<f64> {
    match name {
        "migration_rate" => Some(f.migration_rate),
        "cross_llc_share" => Some(f.cross_llc_share),
        "on_cpu_pct" => Some(f.on_cpu_pct),
        "runq_p99_ns" => f.runq_p99_ns.map(|v| v as f64),
        _ => None,
    }
}

/// Per-interval samples of figure `name` in `trace` (empty for figures the
/// collector does not read per interval). Intervals shorter than a tenth of
/// the nominal one (the cut-off tail of a window) are left out: their rates
/// swing on a handful of events.
pub fn samples(trace: &Trace, name: &str) -> Vec<f64> {
    let min_wall = trace.interval_ns / 10;
    let rate = |count: u64, wall: u64| count as f64 * 1e9 / wall as f64;
    match name {
        "on_cpu_pct" => crate::analyze::features::process_samples(trace)
            .iter()
            .filter(|s| s.wall_ns > 0 && s.wall_ns >= min_wall)
            .map(|s| s.pct())
            .collect(),
        "migration_rate" => trace
            .intervals
            .iter()
            .filter(|i| i.wall_ns > 0 && i.wall_ns >= min_wall)
            .map(|i| rate(i.migrations, i.wall_ns))
            .collect(),
        _ => Vec::new(),
    }
}

/// Mean and variance of the mean (sample variance / n); `None` under two
/// samples, where no spread can be seen.
fn mean_and_var_of_mean(x: &[f64]) -> Option<(f64, f64)> {
    if x.len() < 2 {
        return None;
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var / n))
}

/// The noise band of a difference between two windows, from their
/// per-interval samples: `NOISE_SE` standard errors of the difference of
/// the means. `None` when either window has fewer than two samples.
pub fn noise(before: &[f64], after: &[f64]) -> Option<f64> {
    let (_, vb) = mean_and_var_of_mean(before)?;
    let (_, va) = mean_and_var_of_mean(after)?;
    Some(NOISE_SE * (vb + va).sqrt())
}

/// Judges `after` against `before` for the class the apply was made for,
/// with the fixed noise floors only. `keep` (--keep) keeps the new set even
/// when it made things worse.
pub fn judge(class: Class, before: Figures, after: Figures, keep: bool) -> Verification {
    judge_with_samples(class, before, after, &[], &[], keep)
}

/// Judges `after` against `before`, the noise taken from the per-interval
/// samples of the targeted figure in each window when both have at least
/// two (see [`samples`]), else from the fixed floor.
pub fn judge_with_samples(
    class: Class,
    before: Figures,
    after: Figures,
    before_samples: &[f64],
    after_samples: &[f64],
    keep: bool,
) -> Verification {
    let (name, lower_is_better, floor) = target(class);
    let (b, a) = (value(&before, name), value(&after, name));
    let measured = noise(before_samples, after_samples);
    let (band, source) = match measured {
        Some(n) => (n, "per_interval_samples"),
        None => (floor, "fixed_floor"),
    };
    let change = match (b, a) {
        (Some(b), Some(a)) => {
            let gain = if lower_is_better { b - a } else { a - b };
            // Measured noise decides alone; the fixed floor also needs the
            // relative margin (its old rule), so one event near zero does
            // not count.
            let beyond = |d: f64| match measured {
                Some(n) => d > n,
                None => d > floor && d > RELATIVE * b.abs(),
            };
            if beyond(gain) {
                Change::Better
            } else if beyond(-gain) {
                Change::Worse
            } else {
                Change::None
            }
        }
        _ => Change::None,
    };
    let worse = change == Change::Worse;
    let kept = !worse || keep;
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let band_text = if source == "fixed_floor" {
        format!("±{band:.2}, a fixed floor: no per-interval samples of it")
    } else {
        format!("±{band:.2} from the intervals of both windows")
    };
    let verdict = format!(
        "{name} {} -> {} ({}): {}",
        fmt(b),
        fmt(a),
        if lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        },
        match (change, keep) {
            (Change::Better, _) => format!("better beyond noise ({band_text}), kept"),
            (Change::None, _) => format!(
                "no measurable change (inside noise {band_text}); the new CPUs stay applied"
            ),
            (Change::Worse, true) => {
                format!("worse beyond noise ({band_text}), kept because of --keep")
            }
            (Change::Worse, false) => format!("worse beyond noise ({band_text}), reverted"),
        }
    );
    Verification {
        before,
        after,
        target: name,
        worse,
        kept,
        verdict,
        change,
        difference: b.zip(a).map(|(b, a)| a - b),
        noise: band,
        noise_source: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(rate: f64, on_cpu: f64, p99: Option<u64>) -> Figures {
        Figures {
            migration_rate: rate,
            cross_llc_share: 0.0,
            runq_p99_ns: p99,
            on_cpu_pct: on_cpu,
            class: Class::MigrationHeavy,
        }
    }

    #[test]
    fn a_difference_inside_the_interval_noise_is_no_measurable_change() {
        // on-CPU % per interval swings by ~10 points in both windows; the
        // means differ by 3: inside two standard errors.
        let before = [90.0, 70.0, 85.0, 75.0, 80.0];
        let after = [83.0, 73.0, 88.0, 78.0, 93.0];
        let n = noise(&before, &after).unwrap();
        assert!(n > 3.0 && n < 20.0, "{n}");
        let v = judge_with_samples(
            Class::CpuIntensiveSteady,
            fig(0.0, 80.0, None),
            fig(0.0, 83.0, None),
            &before,
            &after,
            false,
        );
        assert_eq!(v.change, Change::None, "{v:?}");
        assert!(!v.worse && v.kept);
        assert!(v.verdict.contains("no measurable change"), "{}", v.verdict);
        assert_eq!(v.noise_source, "per_interval_samples");
        assert_eq!(v.difference, Some(3.0));
    }

    #[test]
    fn a_difference_beyond_the_interval_noise_counts_both_ways() {
        // Steady windows: tight samples, so a 4-point drop is beyond noise
        // although it is under the old 5-point floor.
        let before = [80.0, 80.5, 79.5, 80.0];
        let after = [76.0, 76.5, 75.5, 76.0];
        let v = judge_with_samples(
            Class::CpuIntensiveSteady,
            fig(0.0, 80.0, None),
            fig(0.0, 76.0, None),
            &before,
            &after,
            false,
        );
        assert_eq!(v.change, Change::Worse, "{v:?}");
        assert!(v.worse && !v.kept);
        assert!(v.verdict.contains("reverted"), "{}", v.verdict);
        let up = judge_with_samples(
            Class::CpuIntensiveSteady,
            fig(0.0, 76.0, None),
            fig(0.0, 80.0, None),
            &after,
            &before,
            false,
        );
        assert_eq!(up.change, Change::Better);
        assert!(up.verdict.contains("better beyond noise"), "{}", up.verdict);
    }

    #[test]
    fn without_samples_the_fixed_floor_is_used_and_named() {
        let v = judge_with_samples(
            Class::IoBound,
            fig(0.0, 1.0, Some(100_000)),
            fig(0.0, 1.0, Some(120_000)),
            &[1.0],
            &[],
            false,
        );
        assert_eq!(v.noise_source, "fixed_floor");
        assert_eq!(v.change, Change::None, "20 us is under the 50 us floor");
        assert!(v.verdict.contains("fixed floor"), "{}", v.verdict);
    }

    #[test]
    fn samples_come_from_the_intervals_without_the_cut_off_tail() {
        use crate::model::Interval;
        let trace = Trace {
            interval_ns: 1_000_000_000,
            intervals: vec![
                Interval {
                    wall_ns: 1_000_000_000,
                    cpu_ns: 500_000_000,
                    migrations: 10,
                    ..Default::default()
                },
                Interval {
                    wall_ns: 1_000_000_000,
                    cpu_ns: 700_000_000,
                    migrations: 30,
                    ..Default::default()
                },
                Interval {
                    wall_ns: 1_000_000,
                    cpu_ns: 1_000_000,
                    migrations: 5,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(samples(&trace, "on_cpu_pct"), vec![50.0, 70.0]);
        assert_eq!(samples(&trace, "migration_rate"), vec![10.0, 30.0]);
        assert!(samples(&trace, "runq_p99_ns").is_empty());
    }

    #[test]
    fn fewer_migrations_is_kept() {
        let v = judge(
            Class::MigrationHeavy,
            fig(260.0, 30.0, None),
            fig(0.0, 30.0, None),
            false,
        );
        assert!(!v.worse && v.kept, "{v:?}");
        assert!(
            v.verdict.starts_with("migration_rate 260.00 -> 0.00"),
            "{}",
            v.verdict
        );
    }

    #[test]
    fn more_migrations_beyond_noise_is_reverted_unless_keep() {
        let v = judge(
            Class::MigrationHeavy,
            fig(10.0, 30.0, None),
            fig(20.0, 30.0, None),
            false,
        );
        assert!(v.worse && !v.kept);
        let k = judge(
            Class::MigrationHeavy,
            fig(10.0, 30.0, None),
            fig(20.0, 30.0, None),
            true,
        );
        assert!(k.worse && k.kept);
    }

    #[test]
    fn small_changes_are_noise() {
        // +0.5/s is under the 1/s floor; +5% is under the 10% margin.
        assert!(
            !judge(
                Class::MigrationHeavy,
                fig(0.0, 0.0, None),
                fig(0.5, 0.0, None),
                false
            )
            .worse
        );
        assert!(
            !judge(
                Class::MigrationHeavy,
                fig(100.0, 0.0, None),
                fig(105.0, 0.0, None),
                false
            )
            .worse
        );
    }

    #[test]
    fn cpu_bound_classes_look_at_on_cpu_time() {
        let v = judge(
            Class::CpuIntensiveSteady,
            fig(0.0, 99.0, None),
            fig(0.0, 60.0, None),
            false,
        );
        assert_eq!(v.target, "on_cpu_pct");
        assert!(v.worse);
    }

    #[test]
    fn io_bound_looks_at_run_queue_p99_and_tolerates_missing_samples() {
        let v = judge(
            Class::IoBound,
            fig(0.0, 1.0, Some(10_000)),
            fig(0.0, 1.0, None),
            false,
        );
        assert_eq!(v.target, "runq_p99_ns");
        assert!(!v.worse);
        let w = judge(
            Class::IoBound,
            fig(0.0, 1.0, Some(10_000)),
            fig(0.0, 1.0, Some(900_000)),
            false,
        );
        assert!(w.worse);
    }
}
