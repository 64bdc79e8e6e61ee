//! Workloads whose scheduler behaviour is known by construction, for the
//! root integration tests. Each prints what it knows (its tid, its own
//! schedstat) on stdout as `key value` lines.
//!
//! Modes:
//! - `hop N MS`: pin to CPU 0, print `ready`, wait for a line on stdin, then
//!   re-pin N times alternating CPU 1, 0, 1, ... spinning MS ms of thread
//!   CPU time after each pin: exactly N migrations.
//! - `split X Y`: pin to CPU 0 and spin X ms of thread CPU time, then pin to
//!   CPU 1 and spin Y ms; prints `tid` and `schedstat` (sum_exec_runtime).
//! - `sleep K`: sleep 1 ms K times.
//! - `late N MS`: print `ready`, wait for a line on stdin, then start N
//!   threads named `late-<i>` that each spin MS ms of CPU time.
//! - `spin MS`: spin MS ms of CPU time on whatever CPU.
//! - `wander N MS`: print `ready`, then N threads named `wander-<i>` run
//!   1 ms / sleep 1 ms for MS ms; `idle N MS`: the same, asleep 10 ms.
//! - `churn MS`: print `ready`, then 4 threads keep creating threads that
//!   live ~2 ms, for MS ms.
//! - `nap N PERIOD MS`: N threads named `nap-<i>` each sleep PERIOD ms in a
//!   loop for MS ms of wall time, doing nothing awake: many threads, few
//!   events (the agent's overhead bench).
//! - `spinners N MS [spread]`: print `ready`, wait for a line on stdin,
//!   then N threads named `spinner-<i>` spin for MS ms of wall time; with
//!   `spread`, thread i is pinned to the i-th allowed CPU (mod their
//!   count), so that every CPU runs one of them by construction (the
//!   scheduler may otherwise keep a throttled group's threads on one CPU
//!   for whole periods).
//! - `flip MS`: a `flipped` thread, 1/3 busy for MS ms of wall time, while
//!   the main thread moves it to the next CPU of its own allowed set every
//!   5 ms.
//! - `hog CPU MS`: pin to CPU, print `ready`, spin MS ms of wall time: a
//!   neighbour that holds one CPU.
//! - `pinspin CPU MS PID`: pin to CPU, spin MS ms of thread CPU time; prints
//!   `schedstat` (its sum_exec_runtime), `run_delay` (its run-queue wait,
//!   the kernel's sched_info) and `hog_ns`: how much CPU time process PID
//!   used while it spun (what a neighbour took).
//! - `spinstat MS`: spin MS ms of CPU time, then print `schedstat`.
//! - `yield N MS`: N threads named `yield-<i>`, all pinned to CPU 0, call
//!   sched_yield() for MS ms of wall time: a context switch between them
//!   every few microseconds, a storm of events; `storm N MS`: the same
//!   after `ready` and a line on stdin.
//! - `named HEX MS`: the main thread names itself with the raw bytes HEX
//!   (prctl PR_SET_NAME: any bytes, not only UTF-8), prints `ready`, then
//!   spins MS ms of wall time: a target with a hostile or non-UTF-8 name.

use std::{
    io::BufRead as _,
    time::{Duration, Instant},
};

use nix::{sched::CpuSet, unistd::Pid};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spins until this thread has used `ms` more milliseconds of CPU.
fn spin_cpu_ms(ms: u64) {
    let until = thread_cpu_ns() + ms * 1_000_000;
    while thread_cpu_ns() < until {
        std::hint::spin_loop();
    }
}

fn pin(tid: i32, cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu).expect("cpu number");
    nix::sched::sched_setaffinity(Pid::from_raw(tid), &set).expect("sched_setaffinity");
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    let own = nix::sched::sched_getaffinity(Pid::from_raw(0)).expect("getaffinity");
    (0..CpuSet::count())
        .filter(|&c| own.is_set(c).unwrap_or(false))
        .collect()
}

fn wait_for_go() {
    println!("ready");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
}

fn schedstat() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat format")
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        eprintln!(
            "usage: workload hop N MS | split X Y | sleep K | late N MS | spin MS | flip MS | yield N MS | storm N MS"
        );
        std::process::exit(2)
    })
}

/// N threads named `yield-<i>`, all pinned to CPU 0, calling sched_yield()
/// for MS ms of wall time.
fn yield_storm(n: u64, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    let hs: Vec<_> = (0..n)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("yield-{i}"))
                .spawn(move || {
                    pin(0, 0);
                    while Instant::now() < until {
                        std::thread::yield_now();
                    }
                })
                .expect("spawn")
        })
        .collect();
    for h in hs {
        h.join().expect("join");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tid = nix::unistd::gettid().as_raw();
    match args.first().map(String::as_str) {
        Some("hop") => {
            let (n, ms) = (arg(&args, 1), arg(&args, 2));
            pin(0, 0);
            wait_for_go();
            for i in 0..n {
                pin(0, if i % 2 == 0 { 1 } else { 0 });
                spin_cpu_ms(ms);
            }
        }
        Some("split") => {
            let (x, y) = (arg(&args, 1), arg(&args, 2));
            pin(0, 0);
            spin_cpu_ms(x);
            pin(0, 1);
            spin_cpu_ms(y);
            println!("tid {tid}");
            println!("schedstat {}", schedstat());
        }
        Some("sleep") => {
            for _ in 0..arg(&args, 1) {
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("tid {tid}");
        }
        Some("late") => {
            let (n, ms) = (arg(&args, 1), arg(&args, 2));
            wait_for_go();
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("late-{i}"))
                        .spawn(move || spin_cpu_ms(ms))
                        .expect("spawn")
                })
                .collect();
            for h in hs {
                h.join().expect("join");
            }
        }
        Some("spin") => spin_cpu_ms(arg(&args, 1)),
        Some("hog") => {
            pin(0, arg(&args, 1) as usize);
            println!("ready");
            let until = Instant::now() + Duration::from_millis(arg(&args, 2));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        Some("pinspin") => {
            let (cpu, ms, hog) = (arg(&args, 1), arg(&args, 2), arg(&args, 3));
            let hog_ns = || {
                let s = std::fs::read_to_string(format!("/proc/{hog}/schedstat")).expect("hog");
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("schedstat format")
            };
            pin(0, cpu as usize);
            let before = hog_ns();
            spin_cpu_ms(ms);
            let after = hog_ns();
            let own = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
            let mut f = own.split_whitespace();
            println!("tid {tid}");
            println!("schedstat {}", f.next().expect("sum_exec"));
            println!("run_delay {}", f.next().expect("run_delay"));
            println!("hog_ns {}", after - before);
        }
        Some("spinstat") => {
            spin_cpu_ms(arg(&args, 1));
            println!("pid {}", std::process::id());
            println!("schedstat {}", schedstat());
        }
        Some("churn") => {
            // churn MS [MAKERS [CHILD_MS]]: threads that live CHILD_MS (2)
            // each, created back to back by MAKERS (4) makers: any apply
            // races thread exits and creations. `ready` once every maker runs.
            let ms = arg(&args, 1);
            let makers_n = args.get(2).map_or(4, |_| arg(&args, 2));
            let child_ms = args.get(3).map_or(2, |_| arg(&args, 3));
            let until = Instant::now() + Duration::from_millis(ms);
            let started = std::sync::Arc::new(std::sync::Barrier::new(makers_n as usize + 1));
            let makers: Vec<_> = (0..makers_n)
                .map(|_| {
                    let started = started.clone();
                    std::thread::spawn(move || {
                        started.wait();
                        while Instant::now() < until {
                            let _ = std::thread::spawn(move || {
                                std::thread::sleep(Duration::from_millis(child_ms))
                            })
                            .join();
                        }
                    })
                })
                .collect();
            started.wait();
            println!("ready");
            for m in makers {
                m.join().expect("join");
            }
        }
        Some("wander") | Some("idle") => {
            // wander: threads 1 ms busy, 1 ms asleep (the scheduler moves
            // them between CPUs on wakeup); idle: threads asleep 10 ms.
            let (n, ms) = (arg(&args, 1), arg(&args, 2));
            let busy = args[0] == "wander";
            println!("ready");
            let until = Instant::now() + Duration::from_millis(ms);
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("{}-{i}", args[0]))
                        .spawn(move || {
                            while Instant::now() < until {
                                if busy {
                                    let t = Instant::now() + Duration::from_millis(1);
                                    while Instant::now() < t {
                                        std::hint::spin_loop();
                                    }
                                    std::thread::sleep(Duration::from_millis(1));
                                } else {
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                        })
                        .expect("spawn")
                })
                .collect();
            for h in hs {
                h.join().expect("join");
            }
        }
        Some("nap") => {
            let (n, period, ms) = (arg(&args, 1), arg(&args, 2), arg(&args, 3));
            let until = Instant::now() + Duration::from_millis(ms);
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("nap-{i}"))
                        .stack_size(64 << 10)
                        .spawn(move || {
                            while Instant::now() < until {
                                std::thread::sleep(Duration::from_millis(period));
                            }
                        })
                        .expect("spawn")
                })
                .collect();
            for h in hs {
                h.join().expect("join");
            }
        }
        Some("spinners") => {
            let (n, ms) = (arg(&args, 1), arg(&args, 2));
            let spread = args.get(3).is_some_and(|a| a == "spread");
            let cpus = allowed_cpus();
            wait_for_go();
            let until = Instant::now() + Duration::from_millis(ms);
            let hs: Vec<_> = (0..n)
                .map(|i| {
                    let cpu = spread.then(|| cpus[i as usize % cpus.len()]);
                    std::thread::Builder::new()
                        .name(format!("spinner-{i}"))
                        .spawn(move || {
                            if let Some(cpu) = cpu {
                                pin(0, cpu);
                            }
                            while Instant::now() < until {
                                std::hint::spin_loop();
                            }
                        })
                        .expect("spawn")
                })
                .collect();
            for h in hs {
                h.join().expect("join");
            }
        }
        Some("flip") => {
            let ms = arg(&args, 1);
            let (tx, rx) = std::sync::mpsc::channel();
            let until = Instant::now() + Duration::from_millis(ms);
            let h = std::thread::Builder::new()
                .name("flipped".into())
                .spawn(move || {
                    tx.send(nix::unistd::gettid().as_raw()).expect("send");
                    // ~1/3 busy: CPU use stays between the io_bound and
                    // cpu_intensive thresholds, so migrations decide.
                    while Instant::now() < until {
                        let busy = Instant::now() + Duration::from_millis(1);
                        while Instant::now() < busy {
                            std::hint::spin_loop();
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
                .expect("spawn");
            let victim = rx.recv().expect("recv");
            // Like a thread-pool balancer, it moves the victim among the
            // CPUs it is itself allowed: after an apply to one CPU, it can
            // no longer cause migrations.
            let mut i = 0;
            while Instant::now() < until {
                let cpus = allowed_cpus();
                let _ = std::panic::catch_unwind(|| pin(victim, cpus[i % cpus.len()]));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            h.join().expect("join");
        }
        Some("yield") => yield_storm(arg(&args, 1), arg(&args, 2)),
        Some("storm") => {
            let (n, ms) = (arg(&args, 1), arg(&args, 2));
            wait_for_go();
            yield_storm(n, ms);
        }
        Some("named") => {
            let hex = args.get(1).map(String::as_str).unwrap_or("");
            let mut name: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex name"))
                .collect();
            name.push(0);
            // SAFETY: PR_SET_NAME reads a NUL-terminated string (the kernel
            // keeps the first 15 bytes).
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
            let ms = arg(&args, 2);
            println!("ready");
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        _ => {
            arg(&args, 99);
        }
    }
}
