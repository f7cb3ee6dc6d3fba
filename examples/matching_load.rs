//! Trip request → first offer on a driver's socket queue, at a steady request rate with many
//! online drivers, in process (SPEC §9: p99 ≤ 10 ms at 500 requests/s with 20 k drivers).
//!
//! ```text
//! cargo run --release --example matching_load -- [drivers=20000] [requests_per_s=500] [seconds=10] [batch_window_ms]
//! ```
//!
//! With a fifth argument the engine runs `matching.mode = "batched"` with that window (SPEC §6
//! rule 5: p99 within the window plus 10 ms).
//!
//! Drivers are real driver actors, online at random points of a 30 × 30 km city, each with a
//! session link whose queue a task drains as a socket writer would. Each trip is requested through
//! `Core::request_trip`, the same call `POST /api/trips` makes (pricing with surge, store, trip
//! actor, index query, offers through the driver actors). The first driver offered a trip accepts
//! it, so the others are released as `taken`, as in a live market. Latency is measured from just
//! before the request call to the moment the first offer frame is taken off a driver's queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hexdispatch::Core;
use hexdispatch::actors::TripRequest;
use hexdispatch::actors::driver::{
    Attach, Location, LocationUpdate, Respond, SessionLink, SetStatus,
};
use hexdispatch::actors::protocol::Outbound;
use hexdispatch::config::Settings;
use hexdispatch::dispatch::DriverStatus;
use hexdispatch::geo::LatLng;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::sync::mpsc;
use uuid::Uuid;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let drivers = arg(1, 20_000);
    let rate = arg(2, 500);
    let seconds = arg(3, 10);
    let window_ms = arg(4, 0);
    actix::System::new().block_on(async move {
        let mut settings = Settings::default();
        settings.driver.idle_grace_s = 3_600.0;
        if window_ms > 0 {
            settings.matching.mode = hexdispatch::dispatch::MatchingMode::Batched;
            settings.matching.batch_window_ms = window_ms;
        }
        let core = Core::start(settings).expect("core starts");
        let (lat0, lng0, hl, hg) = (52.52, 13.405, 15.0 / 111.2, 15.0 / (111.2 * 0.6088));
        let mut rng = StdRng::seed_from_u64(9);
        let mut point = move || {
            LatLng::new(
                lat0 + rng.random_range(-hl..hl),
                lng0 + rng.random_range(-hg..hg),
            )
            .expect("valid")
        };

        let requested: Arc<DashMap<Uuid, Instant>> = Arc::new(DashMap::new());
        let first_offer: Arc<DashMap<Uuid, Duration>> = Arc::new(DashMap::new());
        for i in 0..drivers {
            let driver_id = Uuid::from_u128(u128::from(i) + 1);
            let actor = core.driver(driver_id, None).expect("driver");
            let (tx, mut rx) = mpsc::channel::<Outbound>(64);
            actor
                .send(Attach(SessionLink { id: i, tx }))
                .await
                .expect("attached");
            actor
                .send(Location(LocationUpdate {
                    point: point(),
                    heading: None,
                    speed_mps: None,
                    ts_ms: None,
                }))
                .await
                .expect("located");
            actor
                .send(SetStatus(DriverStatus::Online))
                .await
                .expect("online");
            let (requested, first_offer) = (Arc::clone(&requested), Arc::clone(&first_offer));
            actix_rt::spawn(async move {
                while let Some(Outbound::Text(frame)) = rx.recv().await {
                    let seen = Instant::now();
                    let Ok(value) = serde_json::from_str::<serde_json::Value>(&frame) else {
                        continue;
                    };
                    if value["type"] != "offer" {
                        continue;
                    }
                    let Some(trip_id) = value["trip_id"].as_str().and_then(|t| t.parse().ok())
                    else {
                        continue;
                    };
                    let Some(t0) = requested.get(&trip_id).map(|t| *t) else {
                        continue;
                    };
                    let mut first = false;
                    first_offer.entry(trip_id).or_insert_with(|| {
                        first = true;
                        seen - t0
                    });
                    if first {
                        let _ = actor
                            .send(Respond {
                                trip_id,
                                accept: true,
                                request_id: None,
                                traceparent: None,
                            })
                            .await;
                    }
                }
            });
        }
        println!("{drivers} drivers online; requesting {rate} trips/s for {seconds} s");

        let total = rate * seconds;
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for _ in 0..total {
            ticker.tick().await;
            let (core, requested) = (core.clone(), Arc::clone(&requested));
            let request = TripRequest {
                origin: point(),
                destination: point(),
                vehicle_type: None,
                promo_code: None,
                idempotency_key: None,
                request_id: None,
                pickup_at_ms: None,
            };
            actix_rt::spawn(async move {
                let t0 = Instant::now();
                // The engine picks the id: note the start time as soon as it is known (before the
                // trip actor first runs, which happens on this same thread after this task yields).
                if let Ok(hexdispatch::actors::Requested::Created(trip)) =
                    core.request_trip(Uuid::now_v7(), request).await
                {
                    requested.insert(trip.trip_id, t0);
                }
            });
        }
        let elapsed = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mut latencies: Vec<Duration> = first_offer.iter().map(|e| *e.value()).collect();
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{} trips requested in {:.2} s ({:.0}/s); {} got a first offer",
            requested.len(),
            elapsed.as_secs_f64(),
            requested.len() as f64 / elapsed.as_secs_f64(),
            latencies.len()
        );
        if !latencies.is_empty() {
            println!(
                "request → first offer: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                pct(0.5).as_secs_f64() * 1e3,
                pct(0.9).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
                latencies[latencies.len() - 1].as_secs_f64() * 1e3
            );
        }
        core.shutdown();
        actix::System::current().stop();
    });
}
