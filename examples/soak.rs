//! Soak: trips run to completion for a while; memory and every in-memory map must stop growing
//! once the retention period has passed (SPEC §8).
//!
//! ```text
//! cargo run --release --example soak -- [seconds=120] [retention_s=20] [drivers=200]
//! ```
//!
//! The real engine (`Engine::start`: store in a scratch SQLite file, writer, outbox, payment
//! consumer, sweeper) with `drivers` driver actors attached to session queues, driven in process
//! through the same calls the HTTP and socket handlers make: `request_trip`, the driver's
//! accept, then arrive / start with the PIN / complete through `Core::drive`. Every 5 s it prints
//! the trips completed so far, the trips, idempotency keys and rider histories held in memory,
//! the driver actors, and the process's resident memory.

use std::time::{Duration, Instant};

use hexdispatch::Engine;
use hexdispatch::actors::driver::{
    Attach, Location, LocationUpdate, Respond, SessionLink, SetStatus,
};
use hexdispatch::actors::protocol::Outbound;
use hexdispatch::actors::trip::DriverAction;
use hexdispatch::actors::{Requested, TripRequest};
use hexdispatch::config::Settings;
use hexdispatch::dispatch::DriverStatus;
use hexdispatch::geo::LatLng;
use tokio::sync::mpsc;
use uuid::Uuid;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let seconds = arg(1, 120);
    let retention_s = arg(2, 20);
    let drivers = arg(3, 200);
    let dir = std::env::temp_dir().join(format!("hexdispatch-soak-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    actix::System::new().block_on(async move {
        let mut settings = Settings::default();
        settings.http.host = "127.0.0.1".into();
        settings.http.port = 0;
        settings.database.url = Some(format!("sqlite://{}/soak.db?mode=rwc", dir.display()));
        settings.trip.retention_s = retention_s as f64;
        settings.limits.trips_per_rider_per_minute = 1_000_000;
        let engine = Engine::start(settings).await.expect("engine starts");
        let core = engine.core().clone();
        let centre = (52.52, 13.405);
        let mut pool = Vec::new();
        for i in 0..drivers {
            let id = Uuid::now_v7();
            let addr = core.driver(id, None).expect("driver");
            let (tx, mut rx) = mpsc::channel::<Outbound>(256);
            addr.send(Attach(SessionLink { id: i, tx }))
                .await
                .expect("attach");
            actix_rt::spawn(async move { while rx.recv().await.is_some() {} });
            let lat = centre.0 + (i % 20) as f64 * 0.002;
            let lng = centre.1 + (i / 20) as f64 * 0.002;
            addr.send(Location(LocationUpdate {
                point: LatLng::new(lat, lng).expect("valid"),
                heading: None,
                speed_mps: None,
                ts_ms: None,
            }))
            .await
            .expect("location");
            addr.send(SetStatus(DriverStatus::Online))
                .await
                .expect("online");
            pool.push((id, addr));
        }
        println!("seconds,completed,trips_in_memory,keys,riders,driver_actors,rss_kib");
        let started = Instant::now();
        let mut report = Instant::now();
        let mut completed = 0u64;
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            n += 1;
            let rider = Uuid::now_v7();
            let (driver_id, addr) = &pool[usize::try_from(n % drivers).unwrap_or(0)];
            let here = core
                .directory
                .get(*driver_id)
                .and_then(|p| p.last_position)
                .map_or(centre, |p| (p.point.lat(), p.point.lng()));
            let _ = addr; // the driver nearest the pickup is offered it
            let Ok(Requested::Created(trip)) = core
                .request_trip(
                    rider,
                    TripRequest {
                        origin: LatLng::new(centre.0 + 0.0005, centre.1 + 0.0005).expect("valid"),
                        destination: LatLng::new(here.0 + 0.01, here.1 + 0.01).expect("valid"),
                        vehicle_type: None,
                        promo_code: None,
                        idempotency_key: Some(format!("soak-{n}")),
                        request_id: None,
                        pickup_at_ms: None,
                    },
                )
                .await
            else {
                continue;
            };
            // Whoever holds the offer accepts.
            let mut winner = None;
            for _ in 0..50 {
                for (id, addr) in &pool {
                    if let Ok(snapshot) = addr.send(hexdispatch::actors::driver::GetSnapshot).await
                        && snapshot
                            .offer
                            .as_ref()
                            .is_some_and(|o| o.trip_id == trip.trip_id)
                        && let Ok(Ok(_)) = addr
                            .send(Respond {
                                trip_id: trip.trip_id,
                                accept: true,
                                request_id: None,
                                traceparent: None,
                            })
                            .await
                    {
                        winner = Some(*id);
                        break;
                    }
                }
                if winner.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let Some(driver_id) = winner else {
                continue;
            };
            let mut ok = true;
            for action in [
                DriverAction::Arrive,
                DriverAction::Start(trip.pin.clone()),
                DriverAction::Complete,
            ] {
                ok &= core
                    .drive(driver_id, trip.trip_id, action, true, None)
                    .await
                    .is_ok();
            }
            completed += u64::from(ok);
            if report.elapsed() >= Duration::from_secs(5) {
                report = Instant::now();
                println!(
                    "{},{},{},{},{},{},{}",
                    started.elapsed().as_secs(),
                    completed,
                    core.trips.len(),
                    core.trips.keys_len(),
                    core.trips.riders_len(),
                    core.drivers.len(),
                    resident_kib()
                );
            }
        }
        engine.handle().stop().await;
    });
}
