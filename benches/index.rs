//! The in-memory index alone: nearest 5 within 2 km in a 30 × 30 km city, against a brute-force
//! scan of the same fleet, at 10 k / 100 k / 1 M drivers.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use h3o::Resolution;
use hexdispatch::geo::{IndexedDriver, LatLng, NearbyQuery, SpatialIndex};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

const CENTRE: (f64, f64) = (52.52, 13.405);
/// Half the city's side in degrees: 15 km of latitude, 15 km of longitude at 52.5°N.
const HALF_LAT: f64 = 15.0 / 111.2;
const HALF_LNG: f64 = 15.0 / (111.2 * 0.6088);

fn fleet(n: usize, rng: &mut StdRng) -> Vec<IndexedDriver> {
    (0..n)
        .map(|i| IndexedDriver {
            driver_id: Uuid::from_u128(i as u128 + 1),
            position: LatLng::new(
                CENTRE.0 + rng.random_range(-HALF_LAT..HALF_LAT),
                CENTRE.1 + rng.random_range(-HALF_LNG..HALF_LNG),
            )
            .expect("inside the city"),
            heading: None,
            vehicle: 0,
            available: true,
            seen_ms: 1,
        })
        .collect()
}

fn queries(rng: &mut StdRng) -> Vec<NearbyQuery> {
    (0..1_024)
        .map(|_| NearbyQuery {
            point: LatLng::new(
                CENTRE.0 + rng.random_range(-HALF_LAT..HALF_LAT) * 0.9,
                CENTRE.1 + rng.random_range(-HALF_LNG..HALF_LNG) * 0.9,
            )
            .expect("inside the city"),
            radius_m: 2_000.0,
            limit: 5,
            vehicle: None,
            fresh_since_ms: 0,
        })
        .collect()
}

fn brute_force(fleet: &[IndexedDriver], q: &NearbyQuery) -> Vec<(f64, Uuid)> {
    let mut best: Vec<(f64, Uuid)> = Vec::with_capacity(q.limit + 1);
    for d in fleet {
        let dist = d.position.distance_m(q.point);
        if dist <= q.radius_m && (best.len() < q.limit || dist < best[best.len() - 1].0) {
            let at = best.partition_point(|x| x.0 <= dist);
            best.insert(at, (dist, d.driver_id));
            best.truncate(q.limit);
        }
    }
    best
}

fn nearest_five_within_2km(c: &mut Criterion) {
    let mut group = c.benchmark_group("nearest_5_within_2km");
    let mut rng = StdRng::seed_from_u64(1);
    let queries = queries(&mut rng);
    for n in [10_000, 100_000, 1_000_000] {
        let drivers = fleet(n, &mut rng);
        let mut index = SpatialIndex::new(Resolution::Nine);
        for d in &drivers {
            index.upsert(*d);
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("h3_index", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(index.nearest(&queries[i]))
            });
        });
        if n <= 100_000 {
            let mut j = 0;
            group.bench_with_input(BenchmarkId::new("brute_force", n), &n, |b, _| {
                b.iter(|| {
                    j = (j + 1) % queries.len();
                    black_box(brute_force(&drivers, &queries[j]))
                });
            });
        }
    }
    group.finish();
}

fn nearest_five_within_5km(c: &mut Criterion) {
    let mut group = c.benchmark_group("nearest_5_within_5km");
    let mut rng = StdRng::seed_from_u64(2);
    let queries: Vec<NearbyQuery> = queries(&mut rng)
        .into_iter()
        .map(|q| NearbyQuery {
            radius_m: 5_000.0,
            ..q
        })
        .collect();
    let drivers = fleet(100_000, &mut rng);
    let mut index = SpatialIndex::new(Resolution::Nine);
    for d in &drivers {
        index.upsert(*d);
    }
    let mut i = 0;
    group.bench_function(BenchmarkId::new("h3_index", 100_000), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(index.nearest(&queries[i]))
        });
    });
    group.finish();
}

fn upsert(c: &mut Criterion) {
    let mut group = c.benchmark_group("index_upsert");
    let mut rng = StdRng::seed_from_u64(3);
    let drivers = fleet(100_000, &mut rng);
    let moves = fleet(100_000, &mut rng);
    let mut index = SpatialIndex::new(Resolution::Nine);
    for d in &drivers {
        index.upsert(*d);
    }
    let mut i = 0;
    group.bench_function(BenchmarkId::new("move_driver", 100_000), |b| {
        b.iter(|| {
            i = (i + 1) % drivers.len();
            let mut d = drivers[i];
            d.position = moves[i].position;
            black_box(index.upsert(d))
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    nearest_five_within_2km,
    nearest_five_within_5km,
    upsert
);
criterion_main!(benches);
