//! Exact latency distributions of the timeline (`--timeline`): every
//! wakeup-to-run wait (woken, then switched in) and every preempted wait
//! (switched out runnable, then back in) of each target thread, from the
//! recorded events, into HdrHistogram (3 significant digits: a quantile is
//! exact to 0.1%, the max is exact). Pure: events in, figures out.
//!
//! A wakeup that finds the thread still on a CPU, or already waiting since
//! a preemption, starts no wait (as the kernel side counts run-queue
//! waits). The JSON gives p50/p90/p99/p99.9/max and count per thread and
//! for the process, and each histogram in HdrHistogram's standard
//! compressed encoding ("V2 deflate", base64), which HdrHistogram's log
//! readers load.

use std::collections::BTreeMap;

use affinity_common::{EV_SWITCH, EV_WAKEUP, EVF_DEAD, EVF_PREEMPTED, TimelineEvent};
use base64::Engine as _;
use hdrhistogram::{
    Histogram,
    serialization::{Serializer as _, V2DeflateSerializer},
};
use serde::Serialize;

/// Longest wait recorded (ns): an hour; longer ones saturate.
const MAX_NS: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds are constants that the crate accepts.
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds")
}

/// Why a thread is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Woken,
    Preempted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Runnable { since: u64, why: Wait },
    Off,
}

/// One thread's two distributions.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Wakeup to switch-in (ns).
    pub wakeup: Histogram<u64>,
    /// Preempted switch-out to switch-in (ns).
    pub preempted: Histogram<u64>,
}

impl Default for Pair {
    fn default() -> Pair {
        Pair {
            wakeup: histogram(),
            preempted: histogram(),
        }
    }
}

/// The waits of every target thread, fed events in time order per thread.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    state: BTreeMap<u32, State>,
    /// Per thread.
    pub threads: BTreeMap<u32, Pair>,
}

impl Latencies {
    /// Feeds one batch (sorted here by time: the ring interleaves CPUs).
    pub fn push(&mut self, events: &[TimelineEvent]) {
        let mut sorted: Vec<&TimelineEvent> = events.iter().collect();
        sorted.sort_by_key(|e| e.ts_ns);
        for e in sorted {
            self.event(e);
        }
    }

    fn event(&mut self, e: &TimelineEvent) {
        match e.kind {
            EV_SWITCH => {
                if e.a != 0 {
                    let next = if e.flags & EVF_PREEMPTED != 0 && e.flags & EVF_DEAD == 0 {
                        State::Runnable {
                            since: e.ts_ns,
                            why: Wait::Preempted,
                        }
                    } else {
                        State::Off
                    };
                    self.state.insert(e.a, next);
                }
                if e.b != 0 {
                    if let Some(State::Runnable { since, why }) = self.state.get(&e.b).copied() {
                        let pair = self.threads.entry(e.b).or_default();
                        let h = match why {
                            Wait::Woken => &mut pair.wakeup,
                            Wait::Preempted => &mut pair.preempted,
                        };
                        h.saturating_record(e.ts_ns.saturating_sub(since).max(1));
                    }
                    self.state.insert(e.b, State::Running);
                }
            }
            EV_WAKEUP => {
                if matches!(self.state.get(&e.a), None | Some(State::Off)) {
                    let st = State::Runnable {
                        since: e.ts_ns,
                        why: Wait::Woken,
                    };
                    self.state.insert(e.a, st);
                }
            }
            _ => {}
        }
    }

    /// The figures, threads named by `tgid_of` (tid -> process).
    pub fn report(&self, tgid_of: impl Fn(u32) -> Option<u32>) -> LatencyJson {
        let mut process = Pair::default();
        let mut threads = Vec::new();
        for (tid, p) in &self.threads {
            // Same bounds: adding cannot fail.
            let _ = process.wakeup.add(&p.wakeup);
            let _ = process.preempted.add(&p.preempted);
            threads.push(ThreadLatency {
                tid: *tid,
                tgid: tgid_of(*tid),
                wakeup_to_run_ns: Figures::of(&p.wakeup),
                preempted_wait_ns: Figures::of(&p.preempted),
            });
        }
        LatencyJson {
            wakeup_to_run_ns: Figures::of(&process.wakeup),
            preempted_wait_ns: Figures::of(&process.preempted),
            threads,
        }
    }
}

/// One distribution's figures (ns).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Figures {
    /// Waits recorded.
    pub count: u64,
    /// Median (`null` without waits).
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p99_9: Option<u64>,
    /// Longest.
    pub max: Option<u64>,
    /// The histogram, HdrHistogram V2 deflate, base64.
    pub hdr_base64: String,
}

impl Figures {
    /// The figures of `h`.
    pub fn of(h: &Histogram<u64>) -> Figures {
        let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        let mut bytes = Vec::new();
        // Into a Vec: only a histogram too large for the format fails.
        let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
        Figures {
            count: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            max: (!h.is_empty()).then(|| h.max()),
            hdr_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// One thread's figures.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ThreadLatency {
    /// Thread id.
    pub tid: u32,
    /// Its process, when known.
    pub tgid: Option<u32>,
    /// Wakeup to switch-in.
    pub wakeup_to_run_ns: Figures,
    /// Preempted switch-out to switch-in.
    pub preempted_wait_ns: Figures,
}

/// The JSON `timeline.latency` key.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LatencyJson {
    /// All target threads together.
    pub wakeup_to_run_ns: Figures,
    /// All target threads together.
    pub preempted_wait_ns: Figures,
    /// Per thread.
    pub threads: Vec<ThreadLatency>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    fn ev(ts: u64, kind: u32, a: u32, b: u32, flags: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: ts,
            kind,
            cpu: 0,
            a,
            b,
            flags,
            peer: 0,
            sum_exec_ns: 0,
        }
    }

    #[test]
    fn waits_are_woken_or_preempted_and_exact_to_the_histograms_precision() {
        let mut l = Latencies::default();
        let mut events = Vec::new();
        let mut t = 1_000_000;
        let mut woken = Vec::new();
        // 1,000 sleeps with waits of 1..1000 us, then 10 preemptions of 5 ms.
        for i in 1..=1000u64 {
            events.push(ev(t, EV_WAKEUP, 7, 0, 0));
            t += i * 1000;
            woken.push(i * 1000);
            events.push(ev(t, EV_SWITCH, 0, 7, 0));
            t += 10;
            events.push(ev(t, EV_SWITCH, 7, 0, 0));
            t += 10;
        }
        for _ in 0..10 {
            events.push(ev(t, EV_SWITCH, 0, 7, 0));
            t += 10;
            events.push(ev(t, EV_SWITCH, 7, 0, EVF_PREEMPTED));
            // Woken while runnable after a preemption: no new wait.
            events.push(ev(t + 1, EV_WAKEUP, 7, 0, 0));
            t += 5_000_000;
        }
        events.push(ev(t, EV_SWITCH, 0, 7, 0));
        // Two batches, the first out of order.
        let (a, b) = events.split_at(1500);
        let mut a = a.to_vec();
        a.reverse();
        l.push(&a);
        l.push(b);
        let j = l.report(|_| Some(7));
        let w = &j.wakeup_to_run_ns;
        assert_eq!(w.count, 1000);
        for (q, got) in [(0.5, w.p50), (0.9, w.p90), (0.99, w.p99), (0.999, w.p99_9)] {
            let exact = woken[((q * 1000.0) as usize).saturating_sub(1)];
            let got = got.unwrap();
            assert!(
                got.abs_diff(exact) * 1000 <= exact,
                "p{q}: {got} vs {exact}"
            );
        }
        assert!(w.max.unwrap().abs_diff(1_000_000) <= 1_000);
        let p = &j.preempted_wait_ns;
        assert_eq!(p.count, 10);
        assert!(p.p50.unwrap().abs_diff(5_000_000) <= 5_000);
        assert_eq!(j.threads.len(), 1);
        assert_eq!(j.threads[0].wakeup_to_run_ns, j.wakeup_to_run_ns);
        // The encoding loads back into the same histogram.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&w.hdr_base64)
            .unwrap();
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(h, l.threads[&7].wakeup);
        assert_eq!(h.value_at_quantile(0.99), w.p99.unwrap());
    }

    #[test]
    fn no_waits_give_null_figures() {
        let j = Latencies::default().report(|_| None);
        assert_eq!(j.wakeup_to_run_ns.count, 0);
        assert_eq!(j.wakeup_to_run_ns.p50, None);
        assert!(j.threads.is_empty());
    }
}
