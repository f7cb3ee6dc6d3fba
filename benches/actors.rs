//! The index through the actors, as the engine runs it.
//!
//! - `nearby_through_shard_map`: nearest 5 within 2 km over 100 k drivers in a 30 × 30 km city,
//!   held by the cell actors and read through the shard map on the calling thread, from one
//!   thread and from two at once (throughput = queries/s).
//! - `location_updates_through_actors`: positions sent to 10 k online driver actors with
//!   `try_send`, each forwarded to its cell actor; timed until every cell actor has applied every
//!   update (throughput = updates/s).
//! - `actor_round_trip`: one cross-thread `send().await` to a cell actor, the unit cost the
//!   "one hop per query" rule is about.

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use hexdispatch::actors::cell::{Count, Stats, Upsert};
use hexdispatch::actors::driver::{DriverActor, Location, LocationUpdate, SetStatus};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::DriverStatus;
use hexdispatch::geo::{IndexedDriver, LatLng, NearbyQuery};
use hexdispatch::{Core, clock};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

const CENTRE: (f64, f64) = (52.52, 13.405);
const HALF_LAT: f64 = 15.0 / 111.2;
const HALF_LNG: f64 = 15.0 / (111.2 * 0.6088);

fn point(rng: &mut StdRng, scale: f64) -> LatLng {
    LatLng::new(
        CENTRE.0 + rng.random_range(-HALF_LAT..HALF_LAT) * scale,
        CENTRE.1 + rng.random_range(-HALF_LNG..HALF_LNG) * scale,
    )
    .expect("inside the city")
}

fn settings() -> Settings {
    let mut s = Settings::default();
    s.location.ttl_s = 3_600.0;
    s.driver.mailbox = 256;
    s
}

async fn total_upserts(core: &Core) -> u64 {
    let mut total = 0;
    for shard in core.shards.shards() {
        total += shard
            .addr
            .send(Stats)
            .await
            .expect("cell actor alive")
            .upserts;
    }
    total
}

fn nearby_through_cell_actors(c: &mut Criterion) {
    let system = System::new();
    let mut rng = StdRng::seed_from_u64(5);
    let core = system.block_on(async {
        let core = Core::start(settings()).expect("core starts");
        let grid = *core.shards.grid();
        let now = clock::now_ms();
        for i in 0..100_000u128 {
            let position = point(&mut rng, 1.0);
            let driver = IndexedDriver {
                driver_id: Uuid::from_u128(i + 1),
                position,
                heading: None,
                vehicle: 0,
                available: true,
                seen_ms: now,
            };
            core.shards
                .shard(grid.shard_of(grid.cell_of(position)))
                .do_send(Upsert(driver));
        }
        let mut held = 0;
        for shard in core.shards.shards() {
            held += shard.addr.send(Count).await.expect("cell actor alive");
        }
        assert_eq!(held, 100_000);
        core
    });
    let queries: Vec<NearbyQuery> = (0..4_096)
        .map(|_| NearbyQuery {
            point: point(&mut rng, 0.9),
            radius_m: 2_000.0,
            limit: 5,
            vehicle: None,
            fresh_since_ms: 0,
        })
        .collect();

    let mut group = c.benchmark_group("nearby_through_shard_map");
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        group.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                std::thread::scope(|scope| {
                    for t in 0..threads {
                        let (core, queries) = (&core, &queries);
                        let share = iters / threads + u64::from(t < iters % threads);
                        scope.spawn(move || {
                            for k in 0..share {
                                let q = queries[((t * 7_919 + k) % queries.len() as u64) as usize];
                                std::hint::black_box(core.nearby(q));
                            }
                        });
                    }
                });
                started.elapsed()
            });
        });
    }
    group.finish();

    let shard = core.shards.shards()[0].addr.clone();
    let mut group = c.benchmark_group("actor_round_trip");
    group.bench_function("cell_actor_count", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(shard.send(Count).await.expect("alive"));
                }
                started.elapsed()
            })
        });
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("cell_actor_count_64_in_flight", |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let started = Instant::now();
                let tasks = (0..64u64).map(|t| {
                    let shard = shard.clone();
                    let share = iters / 64 + u64::from(t < iters % 64);
                    async move {
                        for _ in 0..share {
                            std::hint::black_box(shard.send(Count).await.expect("alive"));
                        }
                    }
                });
                join_all(tasks).await;
                started.elapsed()
            })
        });
    });
    group.finish();
    core.shutdown();
}

fn location_updates_through_actors(c: &mut Criterion) {
    const DRIVERS: usize = 10_000;
    let system = System::new();
    let mut rng = StdRng::seed_from_u64(6);
    let bases: Vec<LatLng> = (0..DRIVERS).map(|_| point(&mut rng, 0.95)).collect();
    // Small moves around each driver's base, as a car reports every few seconds.
    let jitter: Vec<(f64, f64)> = (0..64)
        .map(|_| {
            (
                rng.random_range(-0.0005..0.0005),
                rng.random_range(-0.0008..0.0008),
            )
        })
        .collect();
    let (core, drivers) = system.block_on(async {
        let core = Core::start(settings()).expect("core starts");
        let mut drivers: Vec<Addr<DriverActor>> = Vec::with_capacity(DRIVERS);
        for base in &bases {
            let addr = core.driver(Uuid::now_v7(), None).expect("driver actor");
            addr.send(SetStatus(DriverStatus::Online))
                .await
                .expect("alive");
            addr.send(Location(LocationUpdate {
                point: *base,
                heading: None,
                speed_mps: None,
                ts_ms: None,
            }))
            .await
            .expect("alive");
            drivers.push(addr);
        }
        (core, drivers)
    });

    let mut group = c.benchmark_group("location_updates_through_actors");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("drivers", DRIVERS), |b| {
        b.iter_custom(|iters| {
            system.block_on(async {
                let before = total_upserts(&core).await;
                let started = Instant::now();
                for i in 0..iters as usize {
                    let d = i % DRIVERS;
                    let (dlat, dlng) = jitter[(i / DRIVERS + d) % jitter.len()];
                    let update = LocationUpdate {
                        point: LatLng::new(bases[d].lat() + dlat, bases[d].lng() + dlng)
                            .expect("valid"),
                        heading: Some(90.0),
                        speed_mps: Some(10.0),
                        ts_ms: None,
                    };
                    let mut message = Location(update);
                    loop {
                        match drivers[d].try_send(message) {
                            Ok(()) => break,
                            Err(SendError::Full(back)) => {
                                message = back;
                                tokio::task::yield_now().await;
                            }
                            Err(SendError::Closed(_)) => panic!("driver actor stopped"),
                        }
                    }
                }
                let target = before + iters;
                let deadline = Instant::now() + Duration::from_secs(30);
                while total_upserts(&core).await < target {
                    assert!(
                        Instant::now() < deadline,
                        "updates were dropped on the way to the index"
                    );
                    tokio::task::yield_now().await;
                }
                started.elapsed()
            })
        });
    });
    group.finish();
    core.shutdown();
}

criterion_group!(
    benches,
    nearby_through_cell_actors,
    location_updates_through_actors
);
criterion_main!(benches);
