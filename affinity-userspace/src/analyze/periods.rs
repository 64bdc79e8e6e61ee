//! The seed's picture from real periods: a few typical enforcement periods
//! of the limiting cgroup drawn as strips, quota used then throttled, with
//! the threads that ran at once. Pure: takes the [`BandwidthTrace`] the
//! kernel's throttle path recorded and the period length.
//!
//! "Typical" is the throttled periods whose quota ran out nearest the p50
//! exhaustion time, so the strip shows what most periods looked like; a
//! fixed number ([`TYPICAL`]) is kept whatever the window's length.

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::bandwidth::{BandwidthTrace, PeriodRecord};

/// Periods drawn.
pub const TYPICAL: usize = 3;
/// Cells per strip: a 100 ms period is 2 ms a cell.
pub const CELLS: usize = 50;
/// A cell in which the group ran (its quota being used).
pub const RAN: char = '#';
/// A cell in which the group was throttled.
pub const HELD: char = '.';
/// A cell after the group was unthrottled, before the period ended (it
/// could run again: local slices returned, or burst).
pub const AFTER: char = '-';

/// One typical period, for the strip, the timeline and the plot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypicalPeriod {
    /// When the period began (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// Period length (ms).
    pub period_ms: f64,
    /// The group ran this long before the quota ran out (ms).
    pub ran_ms: f64,
    /// Then it was held this long (ms, first throttle to last unthrottle).
    pub held_ms: f64,
    /// CPUs running a thread of the group when the quota ran out (an
    /// instant: when every CPU runs its slice out at once, another may be
    /// switching out just then).
    pub running_threads: u32,
    /// Threads that ran at once while the quota lasted: the quota over
    /// the time it lasted, rounded (what the strip's caption says).
    pub ran_at_once: u32,
    /// Threads of the group queued (running or runnable) then.
    pub queued_threads: u32,
    /// [`CELLS`] cells: [`RAN`], then [`HELD`], then [`AFTER`].
    pub strip: String,
}

/// The strip of one period: `ran_ns` of [`RAN`], `held_ns` of [`HELD`],
/// the rest [`AFTER`], in [`CELLS`] cells of `period_ns / CELLS` each
/// (cell boundaries rounded to the nearest; a held time is at least one
/// cell, so a throttled period never looks unthrottled).
pub fn strip(ran_ns: u64, held_ns: u64, period_ns: u64) -> String {
    if period_ns == 0 {
        return String::new();
    }
    let cells = |ns: u64| {
        ((u128::from(ns) * CELLS as u128 + u128::from(period_ns) / 2) / u128::from(period_ns))
            .min(CELLS as u128) as usize
    };
    // Cell boundaries, so the two parts round together (12.5 + 37.5 cells
    // are 13 + 37, not 13 + 38).
    let mut ran = cells(ran_ns);
    let mut held = cells(ran_ns.saturating_add(held_ns)) - ran;
    if held_ns > 0 && held == 0 {
        held = 1;
        ran = ran.min(CELLS - 1);
    }
    let mut s = String::with_capacity(CELLS);
    s.extend(std::iter::repeat_n(RAN, ran));
    s.extend(std::iter::repeat_n(HELD, held));
    s.extend(std::iter::repeat_n(AFTER, CELLS - ran - held));
    s
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The throttled period's figures as a [`TypicalPeriod`].
fn typical_of(p: &PeriodRecord, period_ns: u64, quota_ns: u64) -> TypicalPeriod {
    let ran = p.exhausted_after_ns.unwrap_or(0);
    let at_once = (quota_ns as f64 / ran.max(1) as f64).round().max(1.0) as u32;
    // Held from the quota running out to the refill: never past the
    // period's end in the strip (an unthrottle can land a little after).
    let held = p.throttled_wall_ns.min(period_ns.saturating_sub(ran));
    TypicalPeriod {
        start_ns: p.start_ns,
        period_ms: ms(period_ns),
        ran_ms: ms(ran),
        held_ms: ms(held),
        running_threads: p.running_at_exhaustion,
        ran_at_once: at_once,
        queued_threads: p.queued_at_exhaustion,
        strip: strip(ran, held, period_ns),
    }
}

/// Up to `n` throttled periods whose exhaustion is nearest the median,
/// in time order, taken first among those with the median count of
/// threads running when the quota ran out (a period where another task
/// held one of the CPUs at that moment is not typical). Periods without a
/// throttle are not typical of a throttled window (and have nothing to
/// draw).
/// `quota_ns` is the quota per period, for [`TypicalPeriod::ran_at_once`].
pub fn typical(bw: &BandwidthTrace, period_ns: u64, quota_ns: u64, n: usize) -> Vec<TypicalPeriod> {
    let mut throttled: Vec<&PeriodRecord> = bw
        .periods
        .iter()
        .filter(|p| p.exhausted_after_ns.is_some())
        .collect();
    if throttled.is_empty() || period_ns == 0 {
        return Vec::new();
    }
    let mut at: Vec<u64> = throttled
        .iter()
        .filter_map(|p| p.exhausted_after_ns)
        .collect();
    at.sort_unstable();
    let median = at[(at.len() - 1) / 2];
    let mut running: Vec<u32> = throttled.iter().map(|p| p.running_at_exhaustion).collect();
    running.sort_unstable();
    let usual = running[(running.len() - 1) / 2];
    throttled.sort_by_key(|p| {
        (
            p.running_at_exhaustion != usual,
            p.exhausted_after_ns.unwrap_or(0).abs_diff(median),
            p.start_ns,
        )
    });
    throttled.truncate(n);
    throttled.sort_by_key(|p| p.start_ns);
    (throttled.iter())
        .map(|p| typical_of(p, period_ns, quota_ns))
        .collect()
}

fn threads(n: u32) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

/// "4 threads ran 25 ms, then held 75 ms".
pub fn caption(p: &TypicalPeriod) -> String {
    format!(
        "{} ran {:.0} ms, then held {:.0} ms",
        threads(p.ran_at_once),
        p.ran_ms,
        p.held_ms
    )
}

/// The text report's strips: a heading and one line per period.
pub fn render_text(periods: &[TypicalPeriod]) -> String {
    let Some(first) = periods.first() else {
        return String::new();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  typical periods ({:.0} ms, {:.0} ms a cell; {RAN} quota used, {HELD} throttled):",
        first.period_ms,
        first.period_ms / CELLS as f64
    );
    for p in periods {
        let _ = writeln!(s, "    |{}| {}", p.strip, caption(p));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn period(start_ms: u64, at_ms: Option<u64>, held_ms: u64, running: u32) -> PeriodRecord {
        PeriodRecord {
            start_ns: start_ms * MS,
            exhausted_after_ns: at_ms.map(|a| a * MS),
            throttled_wall_ns: held_ms * MS,
            throttled_cpu_ns: 2 * held_ms * MS,
            throttles: 2,
            running_at_exhaustion: running,
            queued_at_exhaustion: running + 1,
        }
    }

    #[test]
    fn the_seeds_period_four_threads_25_ms_then_held_75() {
        let s = strip(25 * MS, 75 * MS, 100 * MS);
        assert_eq!(s.len(), CELLS);
        assert_eq!(s, format!("{}{}", "#".repeat(13), ".".repeat(37)));
        let bw = BandwidthTrace {
            periods: vec![period(0, Some(25), 75, 4)],
            ..BandwidthTrace::default()
        };
        let t = typical(&bw, 100 * MS, 100 * MS, TYPICAL);
        assert_eq!(caption(&t[0]), "4 threads ran 25 ms, then held 75 ms");
        let text = render_text(&t);
        assert_eq!(
            text,
            format!(
                "  typical periods (100 ms, 2 ms a cell; # quota used, . throttled):\n    \
                 |{s}| 4 threads ran 25 ms, then held 75 ms\n"
            )
        );
    }

    #[test]
    fn strip_cells_round_and_a_hold_is_never_lost() {
        assert_eq!(strip(50 * MS, 50 * MS, 100 * MS).matches('#').count(), 25);
        assert_eq!(strip(50 * MS, 50 * MS, 100 * MS).matches('.').count(), 25);
        // Held 0.5 ms of 100: still one cell; the rest after the unthrottle.
        let s = strip(60 * MS, MS / 2, 100 * MS);
        assert_eq!((s.matches('#').count(), s.matches('.').count()), (30, 1));
        assert_eq!(s.matches('-').count(), 19);
        // Never longer than the period.
        let s = strip(100 * MS, 30 * MS, 100 * MS);
        assert_eq!(s.len(), CELLS);
        assert_eq!((s.matches('#').count(), s.matches('.').count()), (49, 1));
        assert_eq!(strip(1, 1, 0), "");
    }

    #[test]
    fn typical_are_nearest_the_median_in_time_order_and_bounded() {
        // Exhaustion at 50 ms mostly; two outliers and an unthrottled one.
        let mut periods: Vec<PeriodRecord> = (0..20)
            .map(|i| period(i * 100, Some(49 + i % 3), 100 - 49 - i % 3, 2))
            .collect();
        periods[3].exhausted_after_ns = Some(5 * MS);
        periods[7].exhausted_after_ns = Some(95 * MS);
        periods[9].exhausted_after_ns = None;
        let bw = BandwidthTrace {
            periods,
            ..BandwidthTrace::default()
        };
        let t = typical(&bw, 100 * MS, 100 * MS, TYPICAL);
        assert_eq!(t.len(), TYPICAL);
        // The median is 50: periods 1, 4 and 10 ran out at exactly 50 ms.
        let starts: Vec<u64> = t.iter().map(|p| p.start_ns / MS).collect();
        assert_eq!(starts, vec![100, 400, 1000]);
        assert!(t.iter().all(|p| p.ran_ms == 50.0 && p.held_ms == 50.0));
        assert!(t.iter().all(|p| p.running_threads == 2));
        assert_eq!(
            typical(&bw, 100 * MS, 100 * MS, 100).len(),
            19,
            "unthrottled left out"
        );
        assert!(typical(&BandwidthTrace::default(), 100 * MS, 100 * MS, 3).is_empty());
        assert_eq!(render_text(&[]), "");
    }

    /// CI saw it: one of the three periods nearest the median exhaustion
    /// had 1 thread running (another task held the second CPU then) where
    /// the run's usual count was 2. Such a period is not typical.
    #[test]
    fn typical_have_the_usual_running_count() {
        let mut periods: Vec<PeriodRecord> = (0..9)
            .map(|i| period(i * 100, Some(40 + i), 50, 2))
            .collect();
        // Nearest the median exhaustion (44 ms), but with one running.
        periods[4].running_at_exhaustion = 1;
        let bw = BandwidthTrace {
            periods,
            ..BandwidthTrace::default()
        };
        let t = typical(&bw, 100 * MS, 100 * MS, TYPICAL);
        let starts: Vec<u64> = t.iter().map(|p| p.start_ns / MS).collect();
        assert_eq!(starts, vec![200, 300, 500]);
        assert!(t.iter().all(|p| p.running_threads == 2));
        // 100 ms of quota over 42-45 ms: 2 at once.
        assert!(t.iter().all(|p| p.ran_at_once == 2));
    }

    #[test]
    fn a_hold_past_the_period_end_is_cut_at_it() {
        let bw = BandwidthTrace {
            periods: vec![period(0, Some(40), 70, 1)],
            ..BandwidthTrace::default()
        };
        // A 40 ms quota, one thread: it lasted 40 ms.
        let t = typical(&bw, 100 * MS, 40 * MS, 1);
        assert_eq!(t[0].held_ms, 60.0);
        assert_eq!(t[0].ran_at_once, 1);
        assert_eq!(caption(&t[0]), "1 thread ran 40 ms, then held 60 ms");
    }
}
