//! Did the applied CPU set help? Compares the figures of the trace before the
//! apply with a trace of the same length after it, on the one figure the
//! recommendation targeted for the class, with a noise margin. Pure.

use serde::Serialize;

use crate::{analyze::classify::Class, analyze::features::Features};

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
}

/// A change counts only past both margins: relative (10%) and absolute
/// (per figure), so a figure near zero does not flip on one event.
const RELATIVE: f64 = 0.10;

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

fn value(f: &Figures, name: &str) -> Option<f64> {
    match name {
        "migration_rate" => Some(f.migration_rate),
        "cross_llc_share" => Some(f.cross_llc_share),
        "on_cpu_pct" => Some(f.on_cpu_pct),
        "runq_p99_ns" => f.runq_p99_ns.map(|v| v as f64),
        _ => None,
    }
}

/// Judges `after` against `before` for the class the apply was made for.
/// `keep` (--keep) keeps the new set even when it made things worse.
pub fn judge(class: Class, before: Figures, after: Figures, keep: bool) -> Verification {
    let (name, lower_is_better, floor) = target(class);
    let (b, a) = (value(&before, name), value(&after, name));
    let worse = match (b, a) {
        (Some(b), Some(a)) => {
            let delta = if lower_is_better { a - b } else { b - a };
            delta > floor && delta > RELATIVE * b.abs()
        }
        _ => false,
    };
    let kept = !worse || keep;
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let verdict = format!(
        "{name} {} -> {} ({}): {}",
        fmt(b),
        fmt(a),
        if lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        },
        match (worse, keep) {
            (false, _) => "kept",
            (true, true) => "worse beyond noise, kept because of --keep",
            (true, false) => "worse beyond noise, reverted",
        }
    );
    Verification {
        before,
        after,
        target: name,
        worse,
        kept,
        verdict,
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
