//! The built-in demo workload: three threads whose behaviour is known by
//! construction, so a newcomer sees every column of the report move.
//!
//! - `steady`: spins on one CPU the whole time (cpu-bound, few switches);
//! - `sleeper`: sleeps 1 ms in a loop (voluntary switches, ~0% CPU);
//! - `hopper`: spins 5 ms, then is re-pinned to the next CPU (a real
//!   migration each time, counted by sched_migrate_task).

use std::time::{Duration, Instant};

use nix::{sched::CpuSet, unistd::Pid};

/// Runs the workload for `seconds`, then returns.
pub fn run_worker(seconds: f64) {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let cpus: Vec<usize> = crate::model::cpulist::parse(
        &std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_else(|_| "0".into()),
    )
    .map(|v| v.into_iter().map(|c| c as usize).collect())
    .unwrap_or_else(|_| vec![0]);
    let threads = [
        std::thread::Builder::new()
            .name("steady".into())
            .spawn(move || spin_until(until)),
        std::thread::Builder::new()
            .name("sleeper".into())
            .spawn(move || {
                while Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }),
        std::thread::Builder::new()
            .name("hopper".into())
            .spawn(move || {
                let mut i = 0usize;
                while Instant::now() < until {
                    pin_self(cpus[i % cpus.len()]);
                    spin_until((Instant::now() + Duration::from_millis(5)).min(until));
                    i += 1;
                }
            }),
    ];
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
}

/// Busy-loops until `t`.
pub fn spin_until(t: Instant) {
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

/// Pins the calling thread to one CPU (errors ignored: the demo goes on).
pub fn pin_self(cpu: usize) {
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &set);
    }
}
