//! The timeline build (`report::timeline::build`) on a synthetic event list:
//! 16 threads of one process on the 20 CPUs of the `server-2s-smt` fixture
//! machine, 100,000 events (wakeups, switches with the task clock, a
//! migration every 16 switches), as a 1 s `--timeline` window of a busy
//! process drains them. Pure: no root, no kernel.
//!
//! `cargo bench -p affinity-userspace --bench timeline`

use affinity::host::Root;
use affinity::model::{ThreadTrace, Trace, topology::Topology};
use affinity::report::timeline::{self, Capture};
use affinity_common::{EV_MIGRATE, EV_SWITCH, EV_WAKEUP, EVF_PREEMPTED, TimelineEvent};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const T0: u64 = 1_000_000_000;
const THREADS: u32 = 16;
const CPUS: u32 = 20;
const EVENTS: usize = 100_000;

fn event(ts_ns: u64, kind: u32, cpu: u32, a: u32, b: u32, flags: u32, sum: u64) -> TimelineEvent {
    TimelineEvent {
        ts_ns,
        kind,
        cpu,
        a,
        b,
        flags,
        peer: 0,
        sum_exec_ns: sum,
    }
}

/// Round-robin: each step a thread is woken on a CPU, switched in (the
/// previous one there preempted every other time), and now and then moved.
fn capture() -> Capture {
    let mut events = Vec::with_capacity(EVENTS);
    let mut sum = vec![0u64; THREADS as usize];
    let mut on_cpu = vec![0u32; CPUS as usize];
    let mut step = 0u64;
    while events.len() < EVENTS {
        let ts = T0 + step * 10_000;
        let tid = 1000 + (step % u64::from(THREADS)) as u32;
        let cpu = ((step * 7) % u64::from(CPUS)) as u32;
        let prev = on_cpu[cpu as usize];
        events.push(event(ts, EV_WAKEUP, cpu, tid, 0, 0, 0));
        let i = (tid - 1000) as usize;
        sum[i] += 8_000;
        let flags = if step.is_multiple_of(2) {
            EVF_PREEMPTED
        } else {
            0
        };
        events.push(event(ts + 1_000, EV_SWITCH, cpu, prev, tid, flags, sum[i]));
        on_cpu[cpu as usize] = tid;
        if step.is_multiple_of(16) {
            let to = (cpu + 1) % CPUS;
            events.push(event(ts + 2_000, EV_MIGRATE, cpu, tid, to, 0, 0));
        }
        step += 1;
    }
    Capture {
        events,
        start_ns: T0,
        end_ns: T0 + step * 10_000,
        ring_buffer_bytes: 64 << 20,
        ..Capture::default()
    }
}

fn trace() -> Trace {
    Trace {
        pids: vec![1000],
        threads: (0..THREADS)
            .map(|i| ThreadTrace {
                tid: 1000 + i,
                tgid: 1000,
                comm: format!("worker-{i}"),
                ..ThreadTrace::default()
            })
            .collect(),
        ..Trace::default()
    }
}

fn bench(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let topo =
        Topology::read(&Root::new(root.join("sysfs/server-2s-smt"))).expect("fixture topology");
    let (cap, trace) = (capture(), trace());
    let mut g = c.benchmark_group("timeline");
    g.throughput(Throughput::Elements(cap.events.len() as u64));
    g.bench_function("build_100k_events", |b| {
        b.iter(|| timeline::build(&cap, &trace, &topo))
    });
    // Building and writing the file, as `--timeline` does.
    g.bench_function("build_and_write_100k_events", |b| {
        b.iter_batched(
            || Vec::with_capacity(16 << 20),
            |mut buf| {
                timeline::build(&cap, &trace, &topo)
                    .write(&mut buf)
                    .unwrap();
                buf
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
