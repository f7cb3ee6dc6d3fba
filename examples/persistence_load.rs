//! Persistence budgets of SPEC §9, against a real PostgreSQL: trip events per second through the
//! persistence writer (group commit), and trip-request acknowledgement latency (the request
//! answers only once its first events are committed).
//!
//! ```text
//! cargo run --release --example persistence_load -- [postgres_admin_url] [trips=20000] [requests_per_s=500] [seconds=10]
//! ```
//!
//! Each run creates a database of its own on the server and drops it afterwards.

use std::time::{Duration, Instant};

use hexdispatch::Core;
use hexdispatch::actors::TripRequest;
use hexdispatch::config::Settings;
use hexdispatch::dispatch::{
    ArrivalSource, Currency, Money, NewTrip, Quote, Surge, Tariff, Trip, TripCommand, decide, price,
};
use hexdispatch::geo::LatLng;
use hexdispatch::persistence::{Persistence, Store, TripWrite, Write};
use sqlx::Connection;
use uuid::Uuid;

fn arg(n: usize) -> Option<String> {
    std::env::args().nth(n)
}

fn num(n: usize, default: u64) -> u64 {
    arg(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// One trip's life as the writes the engine makes: (open: 2 events), widen, accept, arrive,
/// start, complete — 7 writes, 8 events.
fn lifecycle(i: u64) -> Vec<Write> {
    let tariff = Tariff {
        base: 250,
        per_km: 120,
        per_min: 30,
        min_fare: 700,
        cancel_fee: 500,
    };
    let estimate = price(&tariff, Currency::USD, 5_000, 600, Surge::NONE, None);
    let origin = LatLng::new(52.5 + (i % 100) as f64 * 0.001, 13.4).expect("valid");
    let (mut trip, first) = Trip::open(
        NewTrip {
            trip_id: Uuid::now_v7(),
            rider_id: Uuid::now_v7(),
            vehicle_type: "economy".into(),
            origin,
            destination: origin,
            quote: Quote {
                estimate,
                surge: Surge::NONE,
                discount: None,
                cancel_fee: Money::new(500, Currency::USD),
            },
            pin: "1234".into(),
            promo_code: None,
            first_radius_m: 2_000.0,
            schedule: None,
        },
        1,
    );
    let mut writes = vec![Write::Trip(Box::new(TripWrite {
        trip: trip.clone(),
        records: first,
        idempotency: None,
        request_id: None,
        traceparent: None,
    }))];
    let driver_id = Uuid::now_v7();
    let commands = [
        TripCommand::WidenSearch {
            step: 1,
            radius_m: 5_000.0,
        },
        TripCommand::Assign { driver_id },
        TripCommand::Arrive {
            driver_id,
            source: ArrivalSource::Geofence,
        },
        TripCommand::Start {
            driver_id,
            pin: "1234".into(),
        },
        TripCommand::Complete {
            driver_id,
            fare: estimate,
            flag: None,
        },
    ];
    for (k, command) in commands.iter().enumerate() {
        let events = decide(&trip, command, 2 + k as i64).expect("valid lifecycle");
        let records = trip.records(events, 2 + k as i64);
        for r in &records {
            trip.apply(r);
        }
        writes.push(Write::Trip(Box::new(TripWrite {
            trip: trip.clone(),
            records,
            idempotency: None,
            request_id: None,
            traceparent: None,
        })));
    }
    writes
}

fn main() {
    let admin = arg(1).unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let trips = num(2, 20_000);
    let rate = num(3, 500);
    let seconds = num(4, 10);
    actix::System::new().block_on(async move {
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL answers");
        let name = format!("hx_bench_{}", Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("database created");
        let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b));

        // 1. Events per second through the writer.
        let store = Store::connect(Some(&url)).await.expect("store");
        store.migrate().await.expect("migrations");
        let persistence = Persistence::start(store.clone(), usize::MAX);
        let writes: Vec<Write> = (0..trips).flat_map(lifecycle).collect();
        let events: usize = writes
            .iter()
            .map(|w| match w {
                Write::Trip(t) => t.records.len(),
                _ => 0,
            })
            .sum();
        let started = Instant::now();
        for write in writes {
            persistence.write(write).expect("writer running");
        }
        assert!(persistence.flush(Duration::from_secs(600)).await, "drained");
        let elapsed = started.elapsed();
        let stored = store.count("trip_events").await.expect("count");
        println!(
            "{events} events ({trips} trips × 7 writes) committed in {:.2} s: {:.0} events/s; {stored} rows in trip_events",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );

        // 2. Trip-request acknowledgement latency at a steady rate.
        let mut settings = Settings::default();
        settings.database.url = Some(url.clone());
        let core = Core::start(settings).expect("core");
        core.attach_persistence(Persistence::start(store.clone(), 100_000));
        let total = rate * seconds;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..total {
            ticker.tick().await;
            let (core, tx) = (core.clone(), tx.clone());
            actix_rt::spawn(async move {
                let point = LatLng::new(52.5 + (i % 300) as f64 * 0.001, 13.4).expect("valid");
                let t0 = Instant::now();
                let ok = core
                    .request_trip(
                        Uuid::now_v7(),
                        TripRequest {
                            origin: point,
                            destination: point,
                            vehicle_type: None,
                            promo_code: None,
                            idempotency_key: None,
                            request_id: None,
                pickup_at_ms: None,
                        },
                    )
                    .await
                    .is_ok();
                let _ = tx.send((ok, t0.elapsed()));
            });
        }
        drop(tx);
        let mut latencies = Vec::new();
        let mut failed = 0;
        while let Some((ok, d)) = rx.recv().await {
            if ok {
                latencies.push(d);
            } else {
                failed += 1;
            }
        }
        latencies.sort();
        let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "{} trip requests at {rate}/s acknowledged ({failed} failed): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            pct(0.5).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies[latencies.len() - 1].as_secs_f64() * 1e3
        );
        core.shutdown();
        store.close().await;
        let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        actix::System::current().stop();
    });
}
