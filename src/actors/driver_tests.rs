//! Tests of the driver actor against a real core (cell actors, registries, trips).

use super::*;
use crate::actors::cell::Count;
use crate::actors::test_support::request_trip;
use crate::config::Settings;
use crate::geo::NearbyQuery;

fn update(lat: f64, lng: f64) -> Location {
    Location(LocationUpdate {
        point: LatLng::new(lat, lng).unwrap(),
        heading: None,
        speed_mps: None,
        ts_ms: None,
    })
}

async fn held(core: &Core) -> Vec<(CellIndex, usize)> {
    let mut out = Vec::new();
    for shard in core.shards.shards() {
        out.push((shard.cell, shard.addr.send(Count).await.unwrap()));
    }
    out
}

fn query(lat: f64, lng: f64) -> NearbyQuery {
    NearbyQuery {
        point: LatLng::new(lat, lng).unwrap(),
        radius_m: 1_000.0,
        limit: 5,
        vehicle: None,
        fresh_since_ms: 0,
    }
}

#[actix::test]
async fn a_driver_moves_itself_between_shards() {
    let core = Core::start(Settings::default()).unwrap();
    let driver = core.driver(Uuid::now_v7(), None).unwrap();
    driver.send(SetStatus(DriverStatus::Online)).await.unwrap();
    driver.send(update(48.85, 2.35)).await.unwrap();
    core.shards.settled().await;
    assert_eq!(core.nearby(query(48.85, 2.35)).len(), 1);
    // Lyon is hundreds of kilometres and many shards away from Paris.
    driver.send(update(45.76, 4.84)).await.unwrap();
    driver.send(GetSnapshot).await.unwrap();
    let counts = held(&core).await;
    assert_eq!(counts.len(), 2, "two shards were used");
    assert_eq!(
        counts.iter().map(|c| c.1).sum::<usize>(),
        1,
        "the driver is in exactly one shard: {counts:?}"
    );
    assert!(
        core.nearby(query(48.85, 2.35)).is_empty(),
        "gone from the old shard"
    );
    assert_eq!(
        core.nearby(query(45.76, 4.84)).len(),
        1,
        "found in the new shard"
    );
    driver.send(SetStatus(DriverStatus::Offline)).await.unwrap();
    driver.send(GetSnapshot).await.unwrap();
    assert_eq!(
        held(&core).await.iter().map(|c| c.1).sum::<usize>(),
        0,
        "offline leaves the index"
    );
    core.shutdown();
}

#[actix::test]
async fn an_idle_offline_driver_stops_and_keeps_its_profile() {
    let mut settings = Settings::default();
    settings.driver.idle_grace_s = 0.1;
    let core = Core::start(settings).unwrap();
    let id = Uuid::now_v7();
    let driver = core.driver(id, Some("xl")).unwrap();
    driver.send(update(10.0, 10.0)).await.unwrap();
    assert_eq!(core.drivers.len(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!driver.connected(), "the actor stopped");
    assert!(core.drivers.get(id).is_none(), "and left the registry");
    let profile = core.directory.get(id).unwrap();
    assert_eq!(profile.vehicle_type.as_str(), "xl");
    assert_eq!(profile.last_position.map(|p| p.point.lat()), Some(10.0));
    core.shutdown();
}

#[actix::test]
async fn an_attached_session_keeps_the_actor_alive_and_a_newer_one_replaces_it() {
    let mut settings = Settings::default();
    settings.driver.idle_grace_s = 0.1;
    let core = Core::start(settings).unwrap();
    let driver = core.driver(Uuid::now_v7(), None).unwrap();
    let (tx1, mut rx1) = mpsc::channel(4);
    driver
        .send(Attach(SessionLink { id: 1, tx: tx1 }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(driver.connected(), "a session keeps the driver");
    let (tx2, _rx2) = mpsc::channel(4);
    let snapshot = driver
        .send(Attach(SessionLink { id: 2, tx: tx2 }))
        .await
        .unwrap();
    assert!(snapshot.connected);
    assert_eq!(
        rx1.recv().await,
        Some(Outbound::Close(
            CLOSE_REPLACED,
            "replaced by a newer session".into()
        ))
    );
    // A late detach from the replaced session changes nothing.
    driver.send(Detach { session_id: 1 }).await.unwrap();
    assert!(driver.send(GetSnapshot).await.unwrap().connected);
    driver.send(Detach { session_id: 2 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !driver.connected(),
        "without a session an offline driver stops after the grace"
    );
    core.shutdown();
}

#[actix::test]
async fn a_driver_reached_only_over_rest_who_declines_stops_once_its_position_is_stale() {
    let mut settings = Settings::default();
    settings.location.ttl_s = 1.0;
    let core = Core::start(settings).unwrap();
    let id = Uuid::now_v7();
    let driver = core.driver(id, None).unwrap();
    driver.send(Reached).await.unwrap();
    driver.send(update(48.8570, 2.3530)).await.unwrap();
    driver.send(SetStatus(DriverStatus::Online)).await.unwrap();
    let trip = request_trip(&core, (48.8566, 2.3522), (48.87, 2.30)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held = driver.send(GetSnapshot).await.unwrap();
    assert_eq!(held.offer.map(|o| o.trip_id), Some(trip.trip_id));
    let answer = driver
        .send(Respond {
            trip_id: trip.trip_id,
            accept: false,
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap();
    assert!(matches!(answer, Ok(Answer::Declined)));
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(
        core.drivers.get(id).is_none(),
        "an actor with no session, no offer, no trip and a stale position stops"
    );
    core.shutdown();
}

#[actix::test]
async fn an_unreachable_driver_is_not_offered_until_it_attaches_a_session() {
    let core = Core::start(Settings::default()).unwrap();
    let id = Uuid::now_v7();
    let driver = core.driver(id, None).unwrap();
    // Online at a fresh position, as a driver restored from the snapshot: no session, no REST.
    driver
        .send(Restore(Position {
            point: LatLng::new(48.8570, 2.3530).unwrap(),
            heading: None,
            speed_mps: None,
            ts_ms: now_ms(),
            received_ms: now_ms(),
        }))
        .await
        .unwrap();
    let trip = request_trip(&core, (48.8566, 2.3522), (48.87, 2.30)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        driver.send(GetSnapshot).await.unwrap().offer.is_none(),
        "no offer spent on a driver nobody can reach"
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    driver
        .send(Attach(SessionLink { id: 7, tx }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Ok(Outbound::Text(frame)) = rx.try_recv() else {
        panic!("an offer once the driver is back")
    };
    assert!(frame.contains(r#""type":"offer""#), "{frame}");
    assert!(frame.contains(&trip.trip_id.to_string()), "{frame}");
    core.shutdown();
}

#[actix::test]
async fn a_cell_actor_that_panics_gets_its_drivers_back_and_answers_queries() {
    let core = Core::start(Settings::default()).unwrap();
    let mut drivers = Vec::new();
    for i in 0..5 {
        let driver = core.driver(Uuid::now_v7(), None).unwrap();
        driver.send(SetStatus(DriverStatus::Online)).await.unwrap();
        driver
            .send(update(48.85 + f64::from(i) * 0.001, 2.35))
            .await
            .unwrap();
        drivers.push(driver);
    }
    core.shards.settled().await;
    assert_eq!(core.nearby(query(48.85, 2.35)).len(), 5);
    let shard = core.shards.shards()[0].clone();
    shard
        .addr
        .send(crate::actors::supervision::Crash)
        .await
        .unwrap();
    assert!(shard.addr.connected(), "the same cell actor still answers");
    // The rebuilt cell starts empty and its drivers place themselves again.
    let mut found = 0;
    for _ in 0..40 {
        found = core.nearby(query(48.85, 2.35)).len();
        if found == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(found, 5, "every driver is back in the rebuilt shard");
    core.shutdown();
}

#[actix::test]
async fn an_accept_that_finds_its_trip_gone_says_how_the_trip_ended() {
    let core = Core::start(Settings::default()).unwrap();
    let trip = request_trip(&core, (10.0, 10.0), (10.1, 10.1)).await;
    let actor = core.trip_actors.get(trip.trip_id).unwrap();
    actor
        .send(crate::actors::trip::RiderCancel {
            request_id: None,
            traceparent: None,
        })
        .await
        .unwrap()
        .unwrap();
    let profile = core
        .directory
        .get_or_create(Uuid::now_v7(), core.default_vehicle.clone());
    let vehicle = core.vehicles.intern(&profile.vehicle_type).unwrap();
    let driver = DriverActor::new(core.clone(), profile, vehicle);
    assert_eq!(driver.ended_reason(trip.trip_id), OfferEnd::RiderCancelled);
    assert_eq!(driver.ended_reason(Uuid::now_v7()), OfferEnd::Expired);
    core.shutdown();
}
