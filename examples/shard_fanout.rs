//! Prints how many shards a nearby query contacts on average, for a few radii and shard
//! resolutions, over the benchmark city (100 k drivers in 30 × 30 km).
use hexdispatch::Core;
use hexdispatch::actors::cell::{Count, Upsert};
use hexdispatch::config::Settings;
use hexdispatch::geo::{IndexedDriver, LatLng, NearbyQuery};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

fn main() {
    for shard_res in [5u8, 6, 7] {
        actix::System::new().block_on(async move {
            let mut settings = Settings::default();
            settings.geo.shard_resolution = shard_res;
            let core = Core::start(settings).expect("core");
            let grid = *core.shards.grid();
            let mut rng = StdRng::seed_from_u64(5);
            let (lat0, lng0, hl, hg) = (52.52, 13.405, 15.0 / 111.2, 15.0 / (111.2 * 0.6088));
            for i in 0..100_000u128 {
                let p = LatLng::new(
                    lat0 + rng.random_range(-hl..hl),
                    lng0 + rng.random_range(-hg..hg),
                )
                .expect("valid");
                let d = IndexedDriver {
                    driver_id: Uuid::from_u128(i + 1),
                    position: p,
                    heading: None,
                    vehicle: 0,
                    available: true,
                    seen_ms: 0,
                };
                core.shards
                    .shard(grid.shard_of(grid.cell_of(p)))
                    .do_send(Upsert(d));
            }
            for s in core.shards.shards() {
                s.addr.send(Count).await.expect("alive");
            }
            for radius_m in [2_000.0, 5_000.0] {
                let n = 10_000;
                let mut total = 0;
                for _ in 0..n {
                    let p = LatLng::new(
                        lat0 + rng.random_range(-hl..hl) * 0.9,
                        lng0 + rng.random_range(-hg..hg) * 0.9,
                    )
                    .expect("valid");
                    let q = NearbyQuery {
                        point: p,
                        radius_m,
                        limit: 5,
                        vehicle: None,
                        fresh_since_ms: 0,
                    };
                    total += core.shards.candidates(&q).len();
                }
                println!(
                    "shard_res {shard_res}: {} shards; radius {radius_m} m: {:.2} shards per query",
                    core.shards.shards().len(),
                    total as f64 / f64::from(n)
                );
            }
            core.shutdown();
        });
    }
}
