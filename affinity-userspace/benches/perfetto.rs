//! The Perfetto timeline writer's throughput, no root: a synthetic 2-CPU
//! drain batch (20 ms at 100,000 events/s: 2,000 events, 70% switches, 20%
//! wakeups, 10% migrations) pushed through `Writer` into memory.
//! `cargo bench -p affinity-userspace --bench perfetto` prints events/s;
//! bytes/event is printed once before the runs.

use affinity::report::perfetto::{Ending, EventSink as _, Writer};
use affinity_common::{EV_MIGRATE, EV_SWITCH, EV_WAKEUP, EVF_PREEMPTED, TimelineEvent};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn batch(start: u64, n: u64) -> Vec<TimelineEvent> {
    (0..n)
        .map(|i| {
            let (kind, a, b, flags) = match i % 10 {
                0..=6 if i % 2 == 0 => (EV_SWITCH, 0, 1000 + (i % 8) as u32, 0),
                0..=6 => (
                    EV_SWITCH,
                    1000 + (i % 8) as u32,
                    0,
                    EVF_PREEMPTED * (i % 3 == 0) as u32,
                ),
                7 | 8 => (EV_WAKEUP, 1000 + (i % 8) as u32, 0, 0),
                _ => (EV_MIGRATE, 1000 + (i % 8) as u32, 1 - (i % 2) as u32, 0),
            };
            TimelineEvent {
                ts_ns: start + i * 10_000,
                kind,
                cpu: (i % 2) as u32,
                a,
                b,
                flags,
                peer: 0,
                sum_exec_ns: 0,
            }
        })
        .collect()
}

fn writer(c: &mut Criterion) {
    const N: u64 = 2_000;
    let events = batch(1_000_000, N);
    // Bytes per event over 500 batches (10 s at 100,000 events/s).
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    for k in 0..500 {
        w.push(&batch(k * N * 10_000, N));
    }
    let (n, _, _) = w.finish(&Ending::default()).expect("in memory");
    println!(
        "perfetto writer: {} events, {} bytes, {:.2} bytes/event",
        n.events,
        n.bytes,
        n.bytes as f64 / n.events as f64
    );
    let mut g = c.benchmark_group("perfetto");
    g.throughput(Throughput::Elements(N));
    g.bench_function("push 2000 events", |b| {
        let mut w = Writer::new(std::io::sink());
        b.iter(|| w.push(&events));
    });
    g.finish();
}

criterion_group!(benches, writer);
criterion_main!(benches);
