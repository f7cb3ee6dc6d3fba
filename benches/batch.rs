//! Batched assignment (SPEC §6 rule 5): the Kuhn–Munkres solve of one window, 50, 200 and 500
//! riders against as many free drivers, uniform in a 10 × 10 km area, pairs within 5 km; beside
//! it the first-come nearest-first pairing of the same window. 500 riders exceed the default cap
//! (300 solved jointly, the rest greedily); `uncapped/500` solves all 500 jointly.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hexdispatch::dispatch::batch::{DEFAULT_CAP, greedy, optimal};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn window(riders: usize, drivers: usize, seed: u64) -> Vec<Vec<Option<u32>>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut point = || {
        (
            rng.random_range(0.0..10_000.0),
            rng.random_range(0.0..10_000.0),
        )
    };
    let r: Vec<(f64, f64)> = (0..riders).map(|_| point()).collect();
    let d: Vec<(f64, f64)> = (0..drivers).map(|_| point()).collect();
    r.iter()
        .map(|a| {
            d.iter()
                .map(|b| {
                    let m = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
                    (m <= 5_000.0).then_some(m as u32)
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_assignment");
    for n in [50_usize, 200, 500] {
        let costs = window(n, n, n as u64);
        group.bench_function(BenchmarkId::new("optimal", n), |b| {
            b.iter(|| optimal(std::hint::black_box(&costs), n, DEFAULT_CAP));
        });
        group.bench_function(BenchmarkId::new("greedy", n), |b| {
            b.iter(|| greedy(std::hint::black_box(&costs), n));
        });
    }
    let costs = window(500, 500, 500);
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("uncapped", 500), |b| {
        b.iter(|| optimal(std::hint::black_box(&costs), 500, usize::MAX));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
