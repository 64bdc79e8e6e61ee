//! The predicted effect of a fix: the recorded per-thread CPU demand
//! replayed through a model of CFS bandwidth (Documentation/scheduler/
//! sched-bwc.rst). Pure.
//!
//! The model, per enforcement period P: the group gets q ns of runtime;
//! its threads with work left run at once on up to C CPUs (more threads
//! than CPUs share them equally); when the group has used q the rest of
//! the period is throttled, and the next period refills it. It is fluid:
//! the kernel hands runtime to CPUs in 5 ms slices, so real CPUs run out
//! up to a slice apart, and threads that sleep on each other are taken as
//! runnable until their work is done. That is why the wall time is
//! calibrated: the model's wall for the fix, times the measured wall over
//! the model's wall for the recorded run ([`Scenario`] keeps both). A fix
//! of one thread is not calibrated: that thread waits on no other, and the
//! model is exact for one runnable thread (q of CPU per period); the
//! recorded run's stalls on each other would only be carried over to it.
//! (Measured: ffmpeg at default threads ran 3% to 7% longer than the model,
//! its `-threads 1` rerun as the model says, less the work it saved.)

use serde::Serialize;

/// Periods simulated at most (a 1 ms quota for hours of work): beyond it
/// the model gives up rather than loop.
const MAX_PERIODS: u64 = 10_000_000;

/// What the model gives for one set of threads and quota.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sim {
    /// Until all the work is done (ns).
    pub wall_ns: f64,
    /// Of which the group was throttled (ns).
    pub throttled_ns: f64,
}

impl Sim {
    /// Throttled time over wall time (0..=1).
    pub fn throttled_share(&self) -> f64 {
        if self.wall_ns > 0.0 {
            self.throttled_ns / self.wall_ns
        } else {
            0.0
        }
    }
}

/// Replays `demand` (CPU ns per thread) through `quota_ns` per `period_ns`
/// on `cpus` CPUs; `None` for a quota of nothing or work that would take
/// more than [`MAX_PERIODS`].
pub fn simulate(demand: &[f64], quota_ns: f64, period_ns: f64, cpus: u32) -> Option<Sim> {
    if quota_ns <= 0.0 || period_ns <= 0.0 || cpus == 0 {
        return None;
    }
    // Below a nanosecond counts as done (f64 rounding over many steps).
    const EPS: f64 = 1e-3;
    let c = f64::from(cpus);
    let mut left: Vec<f64> = demand.iter().copied().filter(|&d| d > EPS).collect();
    let (mut t, mut throttled) = (0.0, 0.0);
    for _ in 0..MAX_PERIODS {
        let (mut pt, mut budget) = (0.0, quota_ns);
        while pt < period_ns && !left.is_empty() {
            let k = left.len() as f64;
            let each = (c / k).min(1.0);
            let all = k.min(c);
            let smallest = left.iter().copied().fold(f64::INFINITY, f64::min);
            let dt = (smallest / each).min(budget / all).min(period_ns - pt);
            for d in &mut left {
                *d -= each * dt;
            }
            left.retain(|&d| d > EPS);
            budget -= all * dt;
            pt += dt;
            if budget <= EPS && !left.is_empty() && pt < period_ns - EPS {
                throttled += period_ns - pt;
                pt = period_ns;
            }
        }
        if left.is_empty() {
            return Some(Sim {
                wall_ns: t + pt,
                throttled_ns: throttled,
            });
        }
        t += period_ns;
    }
    None
}

/// One predicted (or recorded) configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Threads doing the work.
    pub threads: u32,
    /// The quota, in CPUs.
    pub quota_cores: f64,
    /// Share of the wall time the group is throttled (0..=1), from the
    /// model.
    pub throttled_time_share: f64,
    /// Wall time of the same work (s): the model's, calibrated by the
    /// recorded run (see the module doc).
    pub wall_s: f64,
}

/// The fix's rerun, measured (`--verify-fix`), against the prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verified {
    /// What was run ("GOMAXPROCS=1 ./spin 250").
    pub command: String,
    /// Its exit status.
    pub exit_status: Option<i32>,
    /// Threads of it running at once when the quota ran out (p50; busy
    /// threads where the kernel events did not run).
    pub threads: u32,
    /// Measured share of its wall time the group was throttled, from the
    /// kernel's throttle events; `None` where they did not run.
    pub throttled_time_share: Option<f64>,
    /// Its measured wall time (s).
    pub wall_s: f64,
    /// (predicted - measured) / measured wall time.
    pub wall_error: f64,
    /// Predicted - measured throttled share (absolute).
    pub throttled_time_share_error: Option<f64>,
}

/// The predicted effect of the fix and of the raised limit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// How it is computed.
    pub model: String,
    /// The recommended thread count (the fix's value).
    pub threads: u32,
    /// Predicted throttled share of the wall time with it.
    pub throttled_time_share: f64,
    /// Predicted wall time of the same work with it (s).
    pub wall_s: f64,
    /// The recorded threads under the suggested limit.
    pub limit: Scenario,
    /// The recorded run as the model replays it, uncalibrated: how far the
    /// model is from this run.
    pub recorded: Recorded,
    /// The rerun with the fix, with `--verify-fix`.
    pub verified: Option<Verified>,
}

/// The recorded run: the model's figures next to the measured ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recorded {
    /// Threads with CPU time in the window.
    pub threads: u32,
    /// The model's throttled share.
    pub model_throttled_time_share: f64,
    /// The model's wall time (s).
    pub model_wall_s: f64,
    /// Measured throttled share (kernel events), where they ran.
    pub throttled_time_share: Option<f64>,
    /// Measured wall time (s).
    pub wall_s: f64,
}

/// What the prediction needs from a throttled run.
#[derive(Clone, Debug, PartialEq)]
pub struct Input<'a> {
    /// CPU time of each thread of the window (ns).
    pub cpu_ns: &'a [u64],
    /// Quota and period (us).
    pub quota_us: u64,
    /// Period (us).
    pub period_us: u64,
    /// CPUs the group may use.
    pub cpus: u32,
    /// Measured wall time of the window (ns).
    pub wall_ns: u64,
    /// Measured throttled wall time (ns), from the kernel events.
    pub throttled_wall_ns: Option<u64>,
    /// The fix's thread count.
    pub threads: u32,
    /// The suggested limit (CPUs).
    pub limit_cores: u32,
}

/// The model's description, for the JSON.
pub const MODEL: &str = "fluid CFS bandwidth: per period the group's runnable threads run on up to \
     the CPUs it may use until the quota is spent, then wait for the refill; the recorded CPU time \
     is the work (spread evenly over the fix's threads); wall time scaled by measured/modelled wall \
     of the recorded run, except for a fix of one thread (it waits on no other)";

/// The prediction for `input`, `None` without work or a usable quota.
pub fn predict(input: &Input) -> Option<Prediction> {
    let demand: Vec<f64> = input
        .cpu_ns
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64)
        .collect();
    let work: f64 = demand.iter().sum();
    if work <= 0.0 || input.wall_ns == 0 || input.period_us == 0 {
        return None;
    }
    let period = input.period_us as f64 * 1e3;
    let quota = input.quota_us as f64 * 1e3;
    let recorded = simulate(&demand, quota, period, input.cpus)?;
    let scale = input.wall_ns as f64 / recorded.wall_ns;
    let n = input.threads.max(1);
    let fix_scale = if n == 1 { 1.0 } else { scale };
    let fix = simulate(
        &vec![work / f64::from(n); n as usize],
        quota,
        period,
        input.cpus,
    )?;
    let limit_quota = f64::from(input.limit_cores) * period;
    let limit = simulate(&demand, limit_quota, period, input.cpus)?;
    let wall = |ns: u64| ns as f64 / 1e9;
    Some(Prediction {
        model: MODEL.to_string(),
        threads: n,
        throttled_time_share: fix.throttled_share(),
        wall_s: fix.wall_ns * fix_scale / 1e9,
        limit: Scenario {
            threads: demand.len() as u32,
            quota_cores: f64::from(input.limit_cores),
            throttled_time_share: limit.throttled_share(),
            wall_s: limit.wall_ns * scale / 1e9,
        },
        recorded: Recorded {
            threads: demand.len() as u32,
            model_throttled_time_share: recorded.throttled_share(),
            model_wall_s: recorded.wall_ns / 1e9,
            throttled_time_share: input
                .throttled_wall_ns
                .map(|t| t as f64 / input.wall_ns as f64),
            wall_s: wall(input.wall_ns),
        },
        verified: None,
    })
}

impl Prediction {
    /// Sets the rerun's measured figures and the errors against them.
    pub fn verify(
        &mut self,
        command: String,
        exit_status: Option<i32>,
        threads: u32,
        wall_ns: u64,
        throttled_wall_ns: Option<u64>,
    ) {
        let wall_s = wall_ns as f64 / 1e9;
        let share = throttled_wall_ns
            .filter(|_| wall_ns > 0)
            .map(|t| t as f64 / wall_ns as f64);
        self.verified = Some(Verified {
            command,
            exit_status,
            threads,
            throttled_time_share: share,
            wall_s,
            wall_error: if wall_s > 0.0 {
                (self.wall_s - wall_s) / wall_s
            } else {
                0.0
            },
            throttled_time_share_error: share.map(|m| self.throttled_time_share - m),
        });
    }

    /// Two or three lines for the text report.
    pub fn render_text(&self) -> String {
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let mut s = format!(
            "  predicted: with {} thread{}: throttled {} of the time, {:.2} s wall; at the \
             suggested limit of {} CPU{}: throttled {}, {:.2} s (recorded: {} threads, {:.2} s, \
             model {:.2} s)\n",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            pct(self.throttled_time_share),
            self.wall_s,
            self.limit.quota_cores,
            if self.limit.quota_cores == 1.0 {
                ""
            } else {
                "s"
            },
            pct(self.limit.throttled_time_share),
            self.limit.wall_s,
            self.recorded.threads,
            self.recorded.wall_s,
            self.recorded.model_wall_s,
        );
        if let Some(v) = &self.verified {
            let share = v
                .throttled_time_share
                .map(|m| {
                    format!(
                        "throttled {} (predicted {}), ",
                        pct(m),
                        pct(self.throttled_time_share)
                    )
                })
                .unwrap_or_default();
            s.push_str(&format!(
                "  verified: `{}` ran {} thread{} at once: {share}{:.2} s wall (predicted {:.2} s, \
                 error {:+.0}%)\n",
                v.command,
                v.threads,
                if v.threads == 1 { "" } else { "s" },
                v.wall_s,
                self.wall_s,
                v.wall_error * 100.0
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;
    const S: f64 = 1e9;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn four_spinners_in_one_cpu_on_four_cpus_are_throttled_three_quarters() {
        // 1 s each: 25 ms per period each, so 40 periods, the last ending
        // as the quota runs out; throttled 75 ms in each of the first 39.
        let s = simulate(&[S; 4], 100.0 * MS, 100.0 * MS, 4).unwrap();
        assert!(close(s.wall_ns, 3_925.0 * MS, 1.0), "{s:?}");
        assert!(close(s.throttled_ns, 39.0 * 75.0 * MS, 1.0), "{s:?}");
        // Over a long run the share is 75% of each period.
        let long = simulate(&[100.0 * S; 4], 100.0 * MS, 100.0 * MS, 4).unwrap();
        assert!(close(long.throttled_share(), 0.75, 1e-3), "{long:?}");
    }

    #[test]
    fn on_two_cpus_four_spinners_run_out_at_half_the_period() {
        let s = simulate(&[100.0 * S; 4], 100.0 * MS, 100.0 * MS, 2).unwrap();
        assert!(close(s.throttled_share(), 0.5, 1e-3), "{s:?}");
        // Quota-bound: 400 s of work at 1 CPU.
        assert!(close(s.wall_ns, 400.0 * S - 50.0 * MS, 1.0), "{s:?}");
    }

    #[test]
    fn one_thread_in_one_cpu_is_never_throttled() {
        let s = simulate(&[S], 100.0 * MS, 100.0 * MS, 2).unwrap();
        assert_eq!(s.throttled_ns, 0.0);
        assert!(close(s.wall_ns, S, 1.0));
        // In half a CPU it runs 50 ms of each 100 ms.
        let h = simulate(&[S], 50.0 * MS, 100.0 * MS, 2).unwrap();
        assert!(close(h.wall_ns, 1_950.0 * MS, 1.0), "{h:?}");
        assert!(close(h.throttled_ns, 19.0 * 50.0 * MS, 1.0), "{h:?}");
    }

    #[test]
    fn a_thread_that_finishes_leaves_the_cpus_to_the_rest() {
        // 2 CPUs, no binding quota (2 CPUs): 100 ms and 300 ms run side by
        // side, the long one alone after 100 ms.
        let s = simulate(&[100.0 * MS, 300.0 * MS], 200.0 * MS, 100.0 * MS, 2).unwrap();
        assert!(close(s.wall_ns, 300.0 * MS, 1.0), "{s:?}");
        assert_eq!(s.throttled_ns, 0.0);
        // Three threads on two CPUs share them: 3 x 200 ms take 300 ms.
        let t = simulate(&[200.0 * MS; 3], 200.0 * MS, 100.0 * MS, 2).unwrap();
        assert!(close(t.wall_ns, 300.0 * MS, 1.0), "{t:?}");
    }

    #[test]
    fn nothing_to_do_or_no_quota() {
        assert_eq!(
            simulate(&[], 50.0 * MS, 100.0 * MS, 2).map(|s| s.wall_ns),
            Some(0.0)
        );
        assert_eq!(simulate(&[S], 0.0, 100.0 * MS, 2), None);
        assert_eq!(simulate(&[S], 50.0 * MS, 100.0 * MS, 0), None);
    }

    fn two_go_spinners() -> Input<'static> {
        // Go's two spinners at 1 s each in half a CPU, sysmon's 1 ms,
        // measured 4.2 s and throttled 3.1 s of it.
        Input {
            cpu_ns: &[1_000_000_000, 1_000_000_000, 1_000_000],
            quota_us: 50_000,
            period_us: 100_000,
            cpus: 2,
            wall_ns: 4_200_000_000,
            throttled_wall_ns: Some(3_100_000_000),
            threads: 1,
            limit_cores: 2,
        }
    }

    #[test]
    fn prediction_for_the_fix_and_the_limit() {
        let p = predict(&two_go_spinners()).unwrap();
        assert_eq!(p.threads, 1);
        // One thread in half a CPU: throttled half of each period.
        assert!(close(p.throttled_time_share, 0.5, 0.02), "{p:?}");
        // The same 2.001 s of work at half a CPU either way (40 periods
        // and a bit): the fix keeps the model's wall time, and one thread
        // is not calibrated by the recorded run's 4.2 s.
        assert!(close(p.recorded.model_wall_s, 4.0005, 1e-6), "{p:?}");
        assert!(close(p.wall_s, 4.001, 1e-6), "{p:?}");
        // Two threads are: they may wait on each other as the recorded did
        // (the same two spinners' model wall, so the measured 4.2 s).
        let p2 = predict(&Input {
            threads: 2,
            ..two_go_spinners()
        })
        .unwrap();
        assert!(close(p2.wall_s, 4.2, 1e-6), "{p2:?}");
        // Two spinners in two CPUs: never throttled, 1 s of model wall.
        assert_eq!(p.limit.throttled_time_share, 0.0);
        assert!(close(p.limit.wall_s, 1.0005 * 4.2 / 4.0005, 1e-6), "{p:?}");
        assert_eq!(p.recorded.throttled_time_share, Some(3.1 / 4.2));
        assert_eq!(p.recorded.threads, 3);
        assert!(p.verified.is_none());
    }

    #[test]
    fn verify_sets_measured_figures_and_errors() {
        let mut p = predict(&two_go_spinners()).unwrap();
        let predicted = p.wall_s;
        p.verify(
            "GOMAXPROCS=1 spin".into(),
            Some(0),
            1,
            (predicted * 1.25 * 1e9) as u64,
            Some((predicted * 1.25 * 0.5e9) as u64),
        );
        let v = p.verified.as_ref().unwrap();
        assert!(close(v.wall_error, -0.2, 1e-6), "{v:?}");
        assert!(close(v.throttled_time_share.unwrap(), 0.5, 1e-6));
        let json = serde_json::to_value(&p).unwrap();
        for k in [
            "threads",
            "throttled_time_share",
            "wall_s",
            "limit",
            "recorded",
        ] {
            assert!(json.get(k).is_some(), "missing {k}");
        }
        for k in ["wall_s", "wall_error", "throttled_time_share", "command"] {
            assert!(json["verified"].get(k).is_some(), "missing verified.{k}");
        }
        let text = p.render_text();
        assert!(text.contains("predicted: with 1 thread:"), "{text}");
        assert!(text.contains("verified: `GOMAXPROCS=1 spin`"), "{text}");
        assert!(text.contains("error -20%"), "{text}");
    }

    #[test]
    fn no_work_no_prediction() {
        let mut i = two_go_spinners();
        i.cpu_ns = &[0, 0];
        assert!(predict(&i).is_none());
    }
}
