//! `Collector::sample` at 10,000 threads, on a fake map source (no root,
//! no kernel): the per-interval cost of turning the maps into a trace, the
//! pure half of what `cargo xtask bench` measures end to end. Each thread
//! ran on two CPUs, a few are on a CPU now (their running slice is read),
//! and the counters grow between intervals as they would.
//!
//! `cargo bench -p affinity-userspace --bench collector`

use std::hint::black_box;

use affinity::collect::collector::{Collector, Source, WindowInfo};
use affinity_common::{CpuPair, ThreadCpuKey, ThreadStats};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const THREADS: u32 = 10_000;

/// Recorded-like maps: 10,000 threads of one process.
struct Fake {
    threads: Vec<(u32, ThreadStats)>,
    cpu: Vec<(ThreadCpuKey, u64)>,
    pairs: Vec<(CpuPair, u64)>,
}

impl Fake {
    fn new() -> Fake {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"worker");
        let threads = (0..THREADS)
            .map(|i| {
                let tid = 1000 + i;
                (
                    tid,
                    ThreadStats {
                        tid,
                        tgid: 1000,
                        comm,
                        cpu_time_ns: 1_000_000 + u64::from(i),
                        voluntary: 10,
                        involuntary: 2,
                        // Every 500th thread is on CPU 1 now.
                        running_on: u32::from(i % 500 == 0) * 2,
                        ..ThreadStats::default()
                    },
                )
            })
            .collect();
        // Unordered, as a hash map returns them.
        let cpu = (0..THREADS)
            .rev()
            .flat_map(|i| [0, 1].map(|cpu| (ThreadCpuKey { tid: 1000 + i, cpu }, 500_000)))
            .collect();
        Fake {
            threads,
            cpu,
            pairs: vec![
                (CpuPair { from: 0, to: 1 }, 40),
                (CpuPair { from: 1, to: 0 }, 38),
            ],
        }
    }

    /// The next interval: every thread ran 1 ms more.
    fn advance(&mut self) {
        for (_, st) in &mut self.threads {
            st.cpu_time_ns += 1_000_000;
        }
        for (_, ns) in &mut self.cpu {
            *ns += 500_000;
        }
    }
}

impl Source for Fake {
    fn threads(&mut self, out: &mut Vec<(u32, ThreadStats)>) {
        out.clear();
        out.extend_from_slice(&self.threads);
    }
    fn thread_cpu(&mut self, out: &mut Vec<(ThreadCpuKey, u64)>) {
        out.clear();
        out.extend_from_slice(&self.cpu);
    }
    fn forget(&mut self, _tid: u32, _cpus: &[u32]) {}
    fn migration_pairs(&mut self, out: &mut Vec<(CpuPair, u64)>) {
        out.clear();
        out.extend_from_slice(&self.pairs);
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn running_sum_exec(&self, _tgid: u32, _tid: u32) -> Option<u64> {
        Some(250_000)
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("collector_sample_10k_threads");
    // Small samples: the machine is shared, and a read is ~ms long.
    g.sample_size(20);
    // The first read: every thread is new.
    g.bench_function("first_interval", |b| {
        b.iter_batched(
            || (Fake::new(), Collector::new(WindowInfo::default())),
            |(mut src, mut col)| {
                col.sample(&mut src, 1_000_000_000, 0);
                black_box(col)
            },
            BatchSize::LargeInput,
        )
    });
    // A steady interval: every thread known, its counters grown. (A
    // fresh warmed-up collector per run: one that kept sampling would
    // grow every thread's per-interval series without end.)
    g.bench_function("steady_interval", |b| {
        b.iter_batched(
            || {
                let mut src = Fake::new();
                let mut col = Collector::new(WindowInfo::default());
                col.sample(&mut src, 1_000_000_000, 0);
                src.advance();
                (src, col)
            },
            |(mut src, mut col)| {
                col.sample(&mut src, 1_000_000_000, 0);
                black_box(col)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
