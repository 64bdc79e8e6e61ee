//! The preempting neighbours of the timeline: from the switches, which
//! other process took the CPU from each target thread it preempted, and how
//! many target threads each such neighbour holds back at every moment.
//! Both timeline writers draw one counter track per neighbour from it.
//!
//! A target thread is held back by neighbour `N` from the switch in which
//! `N` (a process that is not a target) took its CPU while it was still
//! runnable, until the thread is next switched in (on any CPU) or exits.
//! Waits after a wakeup are not charged here (the switch that ends them
//! names only the last task to leave the CPU, not those that ran while the
//! thread waited); the report's `contention.neighbours` charges those too.

use std::collections::HashMap;

use affinity_common::{EV_SWITCH, EVF_DEAD, EVF_PREEMPTED, TimelineEvent};

/// Neighbours given a track of their own; the rest share one.
pub const MAX_NEIGHBOUR_TRACKS: usize = 32;
/// The shared track's key, for neighbours past [`MAX_NEIGHBOUR_TRACKS`].
pub const OTHER_NEIGHBOURS: u32 = u32::MAX;

/// A neighbour's count of held-back target threads changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// When (CLOCK_MONOTONIC ns).
    pub at: u64,
    /// The neighbour's tgid, or [`OTHER_NEIGHBOURS`].
    pub neighbour: u32,
    /// Target threads it holds back from then on.
    pub held: u32,
    /// True when this is the neighbour's first change: its track begins.
    pub first: bool,
}

/// Who holds each preempted target thread back.
#[derive(Debug, Default)]
pub struct HeldBack {
    /// Target tid -> the track key of the neighbour that preempted it.
    by: HashMap<u32, u32>,
    /// Track key -> target threads held back now.
    held: HashMap<u32, u32>,
}

impl HeldBack {
    /// Follows one timeline event; appends the changes it makes to `out`.
    pub fn event(&mut self, e: &TimelineEvent, out: &mut Vec<Change>) {
        if e.kind != EV_SWITCH {
            return;
        }
        if e.b != 0 {
            self.release(e.b, e.ts_ns, out);
        }
        if e.a == 0 {
            return;
        }
        // A thread switched out was running: whatever held it is over
        // (its switch-in can be one the kernel did not report).
        self.release(e.a, e.ts_ns, out);
        let preempted = e.flags & EVF_PREEMPTED != 0 && e.flags & EVF_DEAD == 0;
        if preempted && e.b == 0 && e.peer != 0 {
            let key = self.key(e.peer);
            let first = !self.held.contains_key(&key);
            let n = self.held.entry(key).or_default();
            *n += 1;
            let held = *n;
            self.by.insert(e.a, key);
            out.push(Change {
                at: e.ts_ns,
                neighbour: key,
                held,
                first,
            });
        }
    }

    /// Neighbours seen so far (track keys).
    pub fn neighbours(&self) -> impl Iterator<Item = u32> + '_ {
        self.held.keys().copied()
    }

    fn key(&self, tgid: u32) -> u32 {
        let known = self.held.contains_key(&tgid);
        if known || self.held.len() < MAX_NEIGHBOUR_TRACKS {
            tgid
        } else {
            OTHER_NEIGHBOURS
        }
    }

    fn release(&mut self, tid: u32, at: u64, out: &mut Vec<Change>) {
        let Some(key) = self.by.remove(&tid) else {
            return;
        };
        let n = self.held.entry(key).or_default();
        *n = n.saturating_sub(1);
        out.push(Change {
            at,
            neighbour: key,
            held: *n,
            first: false,
        });
    }
}

/// The name of a neighbour's track, `comm` its name where known.
pub fn track_name(neighbour: u32, comm: Option<&str>) -> String {
    match (neighbour, comm) {
        (OTHER_NEIGHBOURS, _) => "preempted by other processes: target threads held back".into(),
        (pid, Some(c)) => format!("preempted by {c} (pid {pid}): target threads held back"),
        (pid, None) => format!("preempted by pid {pid}: target threads held back"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(ts: u64, out: u32, inn: u32, flags: u32, peer: u32) -> TimelineEvent {
        TimelineEvent {
            ts_ns: ts,
            kind: EV_SWITCH,
            cpu: 0,
            a: out,
            b: inn,
            flags,
            peer,
            sum_exec_ns: 0,
        }
    }

    fn run(events: &[TimelineEvent]) -> Vec<Change> {
        let mut h = HeldBack::default();
        let mut out = Vec::new();
        for e in events {
            h.event(e, &mut out);
        }
        out
    }

    #[test]
    fn a_preemption_holds_the_thread_until_it_runs_again() {
        let out = run(&[
            switch(10, 7, 0, EVF_PREEMPTED, 900),
            switch(15, 8, 0, EVF_PREEMPTED, 900),
            switch(20, 0, 7, 0, 900),
            switch(30, 0, 8, 0, 900),
        ]);
        let seen: Vec<(u64, u32, u32, bool)> = out
            .iter()
            .map(|c| (c.at, c.neighbour, c.held, c.first))
            .collect();
        assert_eq!(
            seen,
            [
                (10, 900, 1, true),
                (15, 900, 2, false),
                (20, 900, 1, false),
                (30, 900, 0, false)
            ]
        );
    }

    #[test]
    fn sleeps_idle_targets_and_exits_hold_nothing() {
        // A voluntary switch, a preemption by the idle task (peer 0), one
        // by another target, and a preempted exit.
        let out = run(&[
            switch(10, 7, 0, 0, 900),
            switch(11, 7, 0, EVF_PREEMPTED, 0),
            switch(12, 7, 8, EVF_PREEMPTED, 0),
            switch(13, 7, 0, EVF_PREEMPTED | EVF_DEAD, 900),
        ]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn an_exit_or_a_missed_switch_in_releases_the_thread() {
        let out = run(&[
            switch(10, 7, 0, EVF_PREEMPTED, 900),
            // 7 runs again with no switch-in seen, then leaves for good.
            switch(20, 7, 0, EVF_DEAD, 0),
        ]);
        assert_eq!(out.last().map(|c| (c.at, c.held)), Some((20, 0)));
    }

    #[test]
    fn neighbours_past_the_cap_share_one_track() {
        let n = MAX_NEIGHBOUR_TRACKS as u32 + 3;
        let events: Vec<TimelineEvent> = (0..n)
            .map(|i| switch(u64::from(i), 100 + i, 0, EVF_PREEMPTED, 1000 + i))
            .collect();
        let out = run(&events);
        let mut keys: Vec<u32> = out.iter().map(|c| c.neighbour).collect();
        keys.dedup();
        assert_eq!(keys.len(), MAX_NEIGHBOUR_TRACKS + 1);
        assert_eq!(
            out.iter()
                .filter(|c| c.neighbour == OTHER_NEIGHBOURS)
                .count(),
            3
        );
        let last = out.last().expect("changes");
        assert_eq!(
            (last.neighbour, last.held, last.first),
            (OTHER_NEIGHBOURS, 3, false)
        );
    }
}
