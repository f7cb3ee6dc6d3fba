//! Trips end to end over real sockets: matching, the lifecycle, cancellations, the race of many
//! trips for few drivers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use hexdispatch::dispatch::Role;
use hexdispatch::dispatch::{Currency, Surge, Tariff, price};
use hexdispatch::geo::{LatLng, destination};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Socket, TestApp, spawn_app, spawn_app_with};

/// Pickup in central Paris.
const PICKUP: (f64, f64) = (48.8566, 2.3522);
const DROPOFF: (f64, f64) = (48.8738, 2.2950);

/// The point `metres` east of the pickup.
fn east(metres: f64) -> (f64, f64) {
    let p = destination(LatLng::new(PICKUP.0, PICKUP.1).unwrap(), 90.0, metres);
    (p.lat(), p.lng())
}

fn id(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

async fn trip(app: &TestApp, token: &str, trip_id: &str) -> Value {
    let r = app.get(&format!("/api/trips/{trip_id}"), Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The trip's lifecycle events, oldest first: notes that change no state (offers, see
/// `offers_and_their_outcomes_are_in_the_trip_log`; refused PINs) are left out.
async fn event_types(app: &TestApp, token: &str, trip_id: &str) -> Vec<String> {
    let r = app
        .get(&format!("/api/trips/{trip_id}/events"), Some(token))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| id(&e["type"]))
        .filter(|kind| !kind.starts_with("trip.offer_") && kind != "trip.pin_rejected")
        .collect()
}

/// Waits until the trip's status is `status` (polling the API).
async fn until_status(app: &TestApp, token: &str, trip_id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let t = trip(app, token, trip_id).await;
        if t["status"] == status {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("trip {trip_id} never reached {status}");
}

async fn offered(ws: &mut Socket, trip_id: &str) -> Value {
    let offer = ws.recv_type("offer").await;
    assert_eq!(offer["trip_id"], trip_id, "{offer}");
    offer
}

/// Requests a trip and has `driver` accept it over its socket; returns the trip id.
async fn assigned_trip(app: &TestApp, rider: &str, ws: &mut Socket) -> String {
    let r = app.request_trip(rider, PICKUP, DROPOFF).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let trip_id = id(&r.body["trip_id"]);
    offered(ws, &trip_id).await;
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    let won = ws.recv_type("trip_assigned").await;
    assert_eq!(won["trip"]["trip_id"], trip_id.as_str());
    trip_id
}

#[actix_rt::test]
async fn a_trip_runs_from_request_to_completion_over_real_sockets() {
    let app = spawn_app_with(|s| {
        s.trip.rider_location_interval_ms = 0;
        // The trail below is replayed in one burst, faster than a phone would send it.
        s.limits.locations_per_driver_per_s = 1_000;
    })
    .await;
    let (driver, mut dws) = app.online_driver(east(800.0)).await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let mut rws = app.rider_socket(&rider).await;

    let r = app.request_trip(&rider, PICKUP, DROPOFF).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "MATCHING");
    assert_eq!(r.body["fare_estimate"]["currency"], "USD");
    assert!(r.body["fare_estimate"]["amount"].as_i64().unwrap() >= 700);
    assert!(
        r.body.get("start_pin").is_none(),
        "no PIN before a driver is assigned"
    );
    let trip_id = id(&r.body["trip_id"]);

    let offer = offered(&mut dws, &trip_id).await;
    assert_eq!(offer["pickup"]["lat"], PICKUP.0);
    assert_eq!(offer["dropoff"]["lng"], DROPOFF.1);
    assert_eq!(offer["fare_estimate"], r.body["fare_estimate"]);
    let to_pickup = offer["distance_to_pickup_m"].as_f64().unwrap();
    assert!((to_pickup - 800.0).abs() < 2.0, "{to_pickup}");
    assert!(offer["expires_in_ms"].as_i64().unwrap() > 14_000);

    dws.send(json!({"type": "accept", "trip_id": trip_id, "ref": 7}))
        .await;
    let won = dws.recv_json().await;
    assert_eq!(won["type"], "trip_assigned", "{won}");
    assert_eq!(won["ref"], 7);
    assert_eq!(won["trip"]["driver_id"], driver.to_string());
    assert!(
        won["trip"].get("start_pin").is_none(),
        "the PIN is the rider's"
    );

    let update = rws.recv_type("trip_update").await;
    assert_eq!(update["status"], "ACCEPTED");
    assert_eq!(update["driver"]["driver_id"], driver.to_string());
    assert!(update["eta_s"].as_u64().unwrap() > 0);
    let seen = trip(&app, &rider, &trip_id).await;
    assert_eq!(seen["status"], "ACCEPTED");
    let pin = id(&seen["start_pin"]);
    assert_eq!(pin.len(), 4);
    let as_driver = trip(&app, &app.driver_token(driver, "economy"), &trip_id).await;
    assert!(as_driver.get("start_pin").is_none());

    // Driving to the pickup: positions reach the rider; inside 100 m the geofence says arriving.
    dws.send(json!({"type": "location", "lat": east(400.0).0, "lng": east(400.0).1}))
        .await;
    let at = rws.recv_type("driver_location").await;
    assert_eq!(at["trip_id"], trip_id.as_str());
    dws.send(json!({"type": "location", "lat": east(50.0).0, "lng": east(50.0).1}))
        .await;
    let arriving = rws.recv_type("trip_update").await;
    assert_eq!(arriving["status"], "DRIVER_ARRIVING");
    let told = dws.recv_type("trip_update").await;
    assert_eq!(told["status"], "DRIVER_ARRIVING");

    // A wrong PIN is refused and changes nothing; the right one starts the ride.
    let wrong = if pin == "0000" { "1111" } else { "0000" };
    dws.send(json!({"type": "start", "trip_id": trip_id, "pin": wrong, "ref": "w"}))
        .await;
    let refused = dws.recv_json().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_pin"))
    );
    assert_eq!(
        trip(&app, &rider, &trip_id).await["status"],
        "DRIVER_ARRIVING"
    );
    dws.send(json!({"type": "start", "trip_id": trip_id, "pin": pin, "ref": "s"}))
        .await;
    let started = dws.recv_json().await;
    assert_eq!(
        (started["status"].as_str(), started["ref"].as_str()),
        (Some("TRIP_STARTED"), Some("s"))
    );
    assert_eq!(rws.recv_type("trip_update").await["status"], "TRIP_STARTED");

    // Drive to the pickup (50 m, a second later), then 100 m west in 10 m hops, 200 ms apart
    // (50 m/s by the server's clock: plausible); the trail starts at the last position before
    // the start. The app's own stamps claim 30 s a hop
    // and do not matter: movement is judged by when the server received it.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let t0 = hexdispatch::clock::now_ms() + 1_000;
    let mut driven = 0.0;
    let mut last = LatLng::new(east(50.0).0, east(50.0).1).unwrap();
    for i in 0..=10 {
        let p = destination(
            LatLng::new(PICKUP.0, PICKUP.1).unwrap(),
            270.0,
            10.0 * f64::from(i),
        );
        driven += last.distance_m(p);
        last = p;
        dws.send(json!({"type": "location", "lat": p.lat(), "lng": p.lng(), "ts_ms": t0 + i64::from(i) * 30_000}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dws.send(json!({"type": "complete", "trip_id": trip_id, "ref": "c"}))
        .await;
    let done = dws.recv_type("trip_update").await;
    assert_eq!(done["status"], "TRIP_COMPLETED", "{done}");
    assert_eq!(
        rws.recv_type("trip_update").await["status"],
        "TRIP_COMPLETED"
    );

    let finished = trip(&app, &rider, &trip_id).await;
    let breakdown = &finished["fare_breakdown"];
    let metres = breakdown["distance_m"].as_u64().unwrap();
    assert!(
        (metres as f64 - driven).abs() <= 1.0,
        "fare distance {metres} m is the trail, {driven} m"
    );
    let seconds = breakdown["duration_s"].as_u64().unwrap();
    let economy = Tariff {
        base: 250,
        per_km: 120,
        per_min: 30,
        min_fare: 700,
        cancel_fee: 500,
    };
    let expected = price(&economy, Currency::USD, metres, seconds, Surge::NONE, None);
    assert_eq!(finished["fare"]["amount"], expected.total.amount);
    let times = finished["status_times"].as_object().unwrap();
    for status in [
        "REQUESTED",
        "MATCHING",
        "ACCEPTED",
        "DRIVER_ARRIVING",
        "TRIP_STARTED",
        "TRIP_COMPLETED",
    ] {
        assert!(times.contains_key(status), "{status} in {times:?}");
    }

    // The lifecycle, then the payment (this rider has no wallet: it fails, see tests/api/payments).
    let kinds = event_types(&app, &rider, &trip_id).await;
    assert_eq!(
        kinds[..6],
        [
            "trip.requested",
            "trip.matching",
            "trip.accepted",
            "trip.driver_arriving",
            "trip.started",
            "trip.completed"
        ]
    );
    assert!(
        kinds.len() == 6 || kinds[6] == "payment.failed",
        "{kinds:?}"
    );
    let metrics = app.get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_string();
    for series in [
        "hexdispatch_offers_total{outcome=\"accepted\"}",
        "hexdispatch_trip_transitions_total{status=\"TRIP_COMPLETED\"}",
        "hexdispatch_trip_time_to_first_offer_seconds_bucket",
        "hexdispatch_trip_time_to_accept_seconds_bucket",
        "hexdispatch_trips_active{status=\"MATCHING\"}",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}");
    }
    // Free again: the driver shows up in nearby.
    let snapshot = app
        .get(
            &format!("/api/drivers/{driver}"),
            Some(&app.driver_token(driver, "economy")),
        )
        .await;
    assert!(snapshot.body["current_trip"].is_null(), "{}", snapshot.body);
    assert_eq!(snapshot.body["available"], true);
}

#[actix_rt::test]
async fn when_every_nearby_driver_declines_the_search_widens_to_the_next_radius() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 0.5).await;
    let (_, mut near_a) = app.online_driver(east(500.0)).await;
    let (_, mut near_b) = app.online_driver(east(1_500.0)).await;
    let (far, mut far_ws) = app.online_driver(east(3_500.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let r = app.request_trip(&rider, PICKUP, DROPOFF).await;
    let trip_id = id(&r.body["trip_id"]);

    for ws in [&mut near_a, &mut near_b] {
        offered(ws, &trip_id).await;
        ws.send(json!({"type": "decline", "trip_id": trip_id, "ref": 1}))
            .await;
        let ack = ws.recv_json().await;
        assert_eq!(
            (ack["type"].as_str(), ack["reason"].as_str()),
            (Some("offer_cancelled"), Some("declined"))
        );
    }
    // The driver 3.5 km away is offered only once the 2 km step is over.
    let offer = far_ws.recv_type("offer").await;
    assert_eq!(offer["trip_id"], trip_id.as_str());
    far_ws
        .send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    let won = far_ws.recv_type("trip_assigned").await;
    assert_eq!(won["trip"]["driver_id"], far.to_string());
    let kinds = event_types(&app, &rider, &trip_id).await;
    assert_eq!(
        kinds,
        [
            "trip.requested",
            "trip.matching",
            "trip.search_widened",
            "trip.accepted"
        ]
    );
    // The decliners were not offered again.
    assert!(
        near_a
            .gets_within("offer", Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[actix_rt::test]
async fn silent_drivers_let_offers_expire_and_the_trip_ends_with_no_driver_found() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 0.3).await;
    let (_, mut silent) = app.online_driver(east(300.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut rws = app.rider_socket(&rider).await;
    let r = app.request_trip(&rider, PICKUP, DROPOFF).await;
    let trip_id = id(&r.body["trip_id"]);
    offered(&mut silent, &trip_id).await;
    let gone = silent.recv_type("offer_cancelled").await;
    assert_eq!(gone["reason"], "expired");
    let end = rws.recv_type("trip_update").await;
    assert_eq!(
        (end["trip_id"].as_str(), end["status"].as_str()),
        (Some(trip_id.as_str()), Some("NO_DRIVER_FOUND"))
    );
    assert_eq!(
        event_types(&app, &rider, &trip_id).await,
        [
            "trip.requested",
            "trip.matching",
            "trip.search_widened",
            "trip.no_driver_found"
        ]
    );
    // A late accept is rejected.
    silent
        .send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    let late = silent.recv_json().await;
    assert_eq!(
        (late["type"].as_str(), late["reason"].as_str()),
        (Some("accept_rejected"), Some("expired"))
    );
}

#[actix_rt::test]
async fn the_first_accept_wins_and_the_others_are_told_taken_or_rejected() {
    let app = spawn_app().await;
    let mut drivers = Vec::new();
    for i in 0..3 {
        drivers.push(app.online_driver(east(300.0 + 200.0 * f64::from(i))).await);
    }
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let r = app.request_trip(&rider, PICKUP, DROPOFF).await;
    let trip_id = id(&r.body["trip_id"]);
    for (_, ws) in &mut drivers {
        offered(ws, &trip_id).await;
    }
    let winner = drivers[0].0;
    let ws = &mut drivers[0].1;
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    assert_eq!(ws.recv_json().await["type"], "trip_assigned");
    for (_, ws) in &mut drivers[1..] {
        let gone = ws.recv_json().await;
        assert_eq!(
            (gone["type"].as_str(), gone["reason"].as_str()),
            (Some("offer_cancelled"), Some("taken"))
        );
        ws.send(json!({"type": "accept", "trip_id": trip_id, "ref": "late"}))
            .await;
        let late = ws.recv_json().await;
        assert_eq!(
            (
                late["type"].as_str(),
                late["reason"].as_str(),
                late["ref"].as_str()
            ),
            (Some("accept_rejected"), Some("taken"), Some("late"))
        );
    }
    assert_eq!(
        trip(&app, &rider, &trip_id).await["driver_id"],
        winner.to_string()
    );
    let rest = app
        .put(
            &format!("/api/trips/{trip_id}/accept"),
            Some(&app.driver_token(drivers[1].0, "economy")),
            "",
        )
        .await;
    assert_eq!(rest.status, 409, "{}", rest.body);
    assert_eq!(rest.body["error"]["code"], "accept_rejected");
}

#[actix_rt::test]
async fn sequential_mode_offers_one_driver_at_a_time() {
    let app = spawn_app_with(|s| {
        s.matching.mode = hexdispatch::dispatch::MatchingMode::Sequential;
        s.matching.offer_timeout_s = 5.0;
    })
    .await;
    let (_, mut first) = app.online_driver(east(300.0)).await;
    let (_, mut second) = app.online_driver(east(600.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    offered(&mut first, &trip_id).await;
    assert!(
        second
            .gets_within("offer", Duration::from_millis(300))
            .await
            .is_none(),
        "only the nearest driver is offered"
    );
    first
        .send(json!({"type": "decline", "trip_id": trip_id}))
        .await;
    offered(&mut second, &trip_id).await;
}

#[actix_rt::test]
async fn a_driver_coming_online_near_a_matching_trip_is_offered_at_once() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 10.0).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, mut late) = app.online_driver(east(900.0)).await;
    let offer = late
        .gets_within("offer", Duration::from_secs(2))
        .await
        .expect("the newcomer is offered without waiting for the step to end");
    assert_eq!(offer["trip_id"], trip_id.as_str());
    late.send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    late.recv_type("trip_assigned").await;

    // Online first, position second: the first position announces it.
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    let driver = Uuid::now_v7();
    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    ws.recv_json().await;
    ws.send(json!({"type": "status", "status": "online"})).await;
    ws.recv_json().await;
    let p = east(600.0);
    ws.send(json!({"type": "location", "lat": p.0, "lng": p.1}))
        .await;
    let offer = ws
        .gets_within("offer", Duration::from_secs(2))
        .await
        .expect("a driver whose first position lands near a matching trip is offered");
    assert_eq!(offer["trip_id"], trip_id.as_str());
}

#[actix_rt::test]
async fn a_driver_cancel_sends_the_trip_back_to_matching_without_that_driver() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 5.0).await;
    let (first, mut first_ws) = app.online_driver(east(300.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = assigned_trip(&app, &rider, &mut first_ws).await;
    let (second, mut second_ws) = app.online_driver(east(700.0)).await;

    first_ws
        .send(json!({"type": "cancel", "trip_id": trip_id, "ref": "bye"}))
        .await;
    let released = first_ws.recv_json().await;
    assert_eq!(released["released"], true, "{released}");
    assert_eq!(released["ref"], "bye");
    let t = until_status(&app, &rider, &trip_id, "MATCHING").await;
    assert!(t["driver_id"].is_null());

    offered(&mut second_ws, &trip_id).await;
    assert!(
        first_ws
            .gets_within("offer", Duration::from_millis(300))
            .await
            .is_none(),
        "the driver who gave the trip up is not offered it again"
    );
    second_ws
        .send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    second_ws.recv_type("trip_assigned").await;
    assert_eq!(
        trip(&app, &rider, &trip_id).await["driver_id"],
        second.to_string()
    );
    let kinds = event_types(&app, &rider, &trip_id).await;
    assert_eq!(
        kinds,
        [
            "trip.requested",
            "trip.matching",
            "trip.accepted",
            "trip.driver_cancelled",
            "trip.matching",
            "trip.accepted"
        ]
    );
    let _ = first;
}

#[actix_rt::test]
async fn cancellation_is_allowed_and_refused_by_state_for_riders_and_drivers() {
    let app = spawn_app_with(|s| {
        s.matching.offer_timeout_s = 5.0;
        s.trip.free_cancel_s = 0.3;
    })
    .await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let operator = app.token(Role::Operator, Uuid::now_v7());

    // MATCHING: the rider cancels for free; offered drivers are told.
    let (_, mut offered_ws) = app.online_driver(east(400.0)).await;
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    offered(&mut offered_ws, &trip_id).await;
    let path = format!("/api/trips/{trip_id}");
    let by_operator = app.delete(&path, Some(&operator)).await;
    assert_eq!(by_operator.status, 403, "operators change nothing");
    let by_other = app
        .delete(&path, Some(&app.token(Role::Rider, Uuid::now_v7())))
        .await;
    assert_eq!(by_other.status, 403, "another rider");
    let r = app.delete(&path, Some(&rider)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "CANCELLED");
    assert!(r.body["cancellation_fee"].is_null());
    let told = offered_ws.recv_type("offer_cancelled").await;
    assert_eq!(told["reason"], "rider_cancelled");
    let again = app.delete(&path, Some(&rider)).await;
    assert_eq!(
        (again.status, again.body["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );

    // ACCEPTED within the free window: free; the driver is told and free again.
    let trip_id = assigned_trip(&app, &rider, &mut offered_ws).await;
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider))
        .await;
    assert_eq!(
        (r.status, r.body["cancellation_fee"].is_null()),
        (200, true),
        "{}",
        r.body
    );
    let told = offered_ws.recv_type("trip_update").await;
    assert_eq!(
        (told["status"].as_str(), told["reason"].as_str()),
        (Some("CANCELLED"), Some("rider_cancelled"))
    );

    // DRIVER_ARRIVING after the free window: the fee.
    let trip_id = assigned_trip(&app, &rider, &mut offered_ws).await;
    let r = app
        .put(
            &format!("/api/trips/{trip_id}/arrived"),
            Some(&app.driver_token(Uuid::nil(), "economy")),
            "",
        )
        .await;
    assert_eq!(r.status, 403, "not this driver's trip: {}", r.body);
    offered_ws
        .send(json!({"type": "arrived", "trip_id": trip_id}))
        .await;
    assert_eq!(
        offered_ws.recv_type("trip_update").await["status"],
        "DRIVER_ARRIVING"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["cancellation_fee"]["amount"], 500);
    offered_ws.recv_type("trip_update").await;

    // TRIP_STARTED: neither may cancel.
    let trip_id = assigned_trip(&app, &rider, &mut offered_ws).await;
    let pin = id(&trip(&app, &rider, &trip_id).await["start_pin"]);
    offered_ws
        .send(json!({"type": "start", "trip_id": trip_id, "pin": pin}))
        .await;
    assert_eq!(
        offered_ws.recv_type("trip_update").await["status"],
        "TRIP_STARTED"
    );
    let path = format!("/api/trips/{trip_id}");
    let r = app.delete(&path, Some(&rider)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );
    offered_ws
        .send(json!({"type": "cancel", "trip_id": trip_id, "ref": "x"}))
        .await;
    let refused = offered_ws.recv_json().await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_transition"))
    );
    // TRIP_COMPLETED: still not.
    offered_ws
        .send(json!({"type": "complete", "trip_id": trip_id}))
        .await;
    assert_eq!(
        offered_ws.recv_type("trip_update").await["status"],
        "TRIP_COMPLETED"
    );
    let r = app.delete(&path, Some(&rider)).await;
    assert_eq!(r.status, 409, "{}", r.body);
}

#[actix_rt::test]
async fn a_driver_may_cancel_only_an_assigned_trip_and_only_before_the_ride() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 5.0).await;
    let (driver, mut ws) = app.online_driver(east(300.0)).await;
    let token = app.driver_token(driver, "economy");
    let rider = app.token(Role::Rider, Uuid::now_v7());
    // Offered but not assigned: not its trip.
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    offered(&mut ws, &trip_id).await;
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&token))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Assigned: REST cancel returns it to matching.
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    ws.recv_type("trip_assigned").await;
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&token))
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("MATCHING")),
        "{}",
        r.body
    );
    let released = ws.recv_type("trip_update").await;
    assert_eq!(released["released"], true);
    // Gone from the trip: a second cancel is refused as not its trip.
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&token))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider))
        .await;
    assert_eq!(r.status, 200, "the rider ends the first trip: {}", r.body);

    // DRIVER_ARRIVING: the driver may still give the trip up.
    let other = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = assigned_trip(&app, &other, &mut ws).await;
    ws.send(json!({"type": "arrived", "trip_id": trip_id}))
        .await;
    assert_eq!(
        ws.recv_type("trip_update").await["status"],
        "DRIVER_ARRIVING"
    );
    let r = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&token))
        .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("MATCHING")),
        "{}",
        r.body
    );
}

#[actix_rt::test]
async fn riders_get_driver_positions_at_most_once_a_second() {
    let app = spawn_app().await;
    let (_, mut dws) = app.online_driver(east(1_500.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut rws = app.rider_socket(&rider).await;
    let trip_id = assigned_trip(&app, &rider, &mut dws).await;
    for i in 0..5 {
        let p = east(1_400.0 - 20.0 * f64::from(i));
        dws.send(json!({"type": "location", "lat": p.0, "lng": p.1}))
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    let mut positions = 0;
    while let Some(frame) = rws
        .gets_within_any(deadline.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        if frame["type"] == "driver_location" {
            assert_eq!(frame["trip_id"], trip_id.as_str());
            positions += 1;
        }
    }
    assert_eq!(
        positions, 1,
        "five positions within a second reach the rider once"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let p = east(1_200.0);
    dws.send(json!({"type": "location", "lat": p.0, "lng": p.1}))
        .await;
    let next = rws
        .gets_within("driver_location", Duration::from_secs(2))
        .await;
    assert_eq!(
        next.map(|f| f["lat"].clone()),
        Some(json!(p.0)),
        "a second later the next one passes"
    );
}

#[actix_rt::test]
async fn a_reconnecting_driver_gets_its_active_trip_in_the_session_frame() {
    let app = spawn_app().await;
    let (driver, mut ws) = app.online_driver(east(300.0)).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = assigned_trip(&app, &rider, &mut ws).await;
    ws.close().await;
    let mut again = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    let session = again.recv_json().await;
    assert_eq!(session["type"], "session");
    assert_eq!(session["current_trip"], trip_id.as_str());
    assert_eq!(session["trip"]["trip_id"], trip_id.as_str());
    assert_eq!(session["trip"]["status"], "ACCEPTED");
}

#[actix_rt::test]
async fn rest_twins_drive_a_trip_without_a_socket() {
    let app = spawn_app().await;
    let (driver, mut ws) = app.online_driver(east(300.0)).await;
    let token = app.driver_token(driver, "economy");
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = id(&app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"]);
    offered(&mut ws, &trip_id).await;
    let base = format!("/api/trips/{trip_id}");
    let r = app.put(&format!("{base}/accept"), Some(&token), "").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("ACCEPTED")),
        "{}",
        r.body
    );
    let again = app.put(&format!("{base}/accept"), Some(&token), "").await;
    assert_eq!(
        again.status, 200,
        "a repeated accept answers like the first"
    );
    let r = app.put(&format!("{base}/arrived"), Some(&token), "").await;
    assert_eq!(r.body["status"], "DRIVER_ARRIVING");
    assert_eq!(
        ws.recv_type("trip_update").await["status"],
        "DRIVER_ARRIVING",
        "the socket hears REST actions"
    );
    let pin = id(&trip(&app, &rider, &trip_id).await["start_pin"]);
    let r = app
        .put(
            &format!("{base}/start"),
            Some(&token),
            &json!({"pin": pin}).to_string(),
        )
        .await;
    assert_eq!(r.body["status"], "TRIP_STARTED", "{}", r.body);
    let r = app.put(&format!("{base}/complete"), Some(&token), "").await;
    assert_eq!(r.body["status"], "TRIP_COMPLETED", "{}", r.body);
    assert_eq!(
        r.body["fare"]["amount"], 700,
        "no distance driven: the minimum fare"
    );
    let r = app.put(&format!("{base}/complete"), Some(&token), "").await;
    assert_eq!(r.status, 409, "{}", r.body);
}

#[actix_rt::test]
async fn repeated_wrong_pins_are_rate_limited() {
    let app = spawn_app_with(|s| {
        s.trip.max_pin_attempts = 3;
        s.trip.pin_lockout_s = 30.0;
    })
    .await;
    let (driver, mut ws) = app.online_driver(east(300.0)).await;
    let token = app.driver_token(driver, "economy");
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = assigned_trip(&app, &rider, &mut ws).await;
    let pin = id(&trip(&app, &rider, &trip_id).await["start_pin"]);
    let wrong = if pin == "0000" { "1111" } else { "0000" };
    let path = format!("/api/trips/{trip_id}/start");
    for attempt in 0..3 {
        let r = app
            .put(&path, Some(&token), &json!({"pin": wrong}).to_string())
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some("invalid_pin")),
            "attempt {attempt}"
        );
    }
    let r = app
        .put(&path, Some(&token), &json!({"pin": pin}).to_string())
        .await;
    assert_eq!(r.status, 429, "locked even with the right PIN: {}", r.body);
    assert_eq!(r.body["error"]["code"], "too_many_pin_attempts");
    assert_eq!(trip(&app, &rider, &trip_id).await["status"], "ACCEPTED");
}

#[actix_rt::test]
async fn a_hundred_trips_racing_for_twenty_eager_drivers_never_double_assign() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 3.0).await;
    let mut drivers = Vec::new();
    for i in 0..20 {
        let bearing = f64::from(i) * 18.0;
        let p = destination(
            LatLng::new(PICKUP.0, PICKUP.1).unwrap(),
            bearing,
            200.0 + 40.0 * f64::from(i),
        );
        drivers.push(app.online_driver((p.lat(), p.lng())).await);
    }
    // Every driver accepts every offer the moment it arrives and records what it won.
    let tasks: Vec<_> = drivers
        .into_iter()
        .map(|(driver, mut ws)| {
            actix_rt::spawn(async move {
                let mut won = Vec::new();
                while let Some(frame) = ws.gets_within_any(Duration::from_secs(2)).await {
                    match frame["type"].as_str() {
                        Some("offer") => {
                            ws.send(json!({"type": "accept", "trip_id": frame["trip_id"]}))
                                .await
                        }
                        Some("trip_assigned") => won.push(id(&frame["trip"]["trip_id"])),
                        _ => {}
                    }
                }
                (driver, won)
            })
        })
        .collect();
    let riders: Vec<String> = (0..100)
        .map(|_| app.token(Role::Rider, Uuid::now_v7()))
        .collect();
    let requests = join_all(riders.iter().map(|r| app.request_trip(r, PICKUP, DROPOFF))).await;
    assert!(requests.iter().all(|r| r.status == 201));
    let results = join_all(tasks).await;

    let mut trips_by_driver: HashMap<Uuid, Vec<String>> = HashMap::new();
    for result in results {
        let (driver, won) = result.unwrap();
        assert!(won.len() <= 1, "driver {driver} won {won:?}");
        trips_by_driver.insert(driver, won);
    }
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let mut seen_drivers = HashSet::new();
    let mut assigned = 0;
    for r in &requests {
        let t = trip(&app, &operator, &id(&r.body["trip_id"])).await;
        if let Some(d) = t["driver_id"].as_str() {
            assigned += 1;
            assert!(
                seen_drivers.insert(d.to_string()),
                "driver {d} holds two trips"
            );
            let driver: Uuid = d.parse().unwrap();
            assert_eq!(
                trips_by_driver[&driver],
                [id(&t["trip_id"])],
                "the engine and the driver agree"
            );
        }
    }
    assert_eq!(assigned, 20, "every driver ended up with exactly one trip");
}

#[actix_rt::test]
async fn the_same_idempotency_key_gives_the_same_trip() {
    let app = spawn_app().await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let body = json!({
        "origin": {"lat": PICKUP.0, "lng": PICKUP.1},
        "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1},
        "idempotency_key": "k-1",
    });
    let first = app
        .post("/api/trips", Some(&rider), &body.to_string())
        .await;
    let second = app
        .post("/api/trips", Some(&rider), &body.to_string())
        .await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body["trip_id"], second.body["trip_id"]);
    let other_rider = app.token(Role::Rider, Uuid::now_v7());
    let theirs = app
        .post("/api/trips", Some(&other_rider), &body.to_string())
        .await;
    assert_ne!(
        theirs.body["trip_id"], first.body["trip_id"],
        "keys are per rider"
    );
    let mut changed = body.clone();
    changed["destination"]["lat"] = json!(48.9);
    let reused = app
        .post("/api/trips", Some(&rider), &changed.to_string())
        .await;
    assert_eq!(
        (reused.status, reused.body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let history = app
        .get(&format!("/api/riders/{}/trips", Uuid::nil()), Some(&rider))
        .await;
    assert_eq!(history.status, 403);
}

#[actix_rt::test]
async fn rider_history_is_newest_first_and_paginated() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id(
            &app.request_trip(&rider, PICKUP, DROPOFF).await.body["trip_id"],
        ));
    }
    ids.reverse();
    let page = app
        .get(
            &format!("/api/riders/{rider_id}/trips?limit=3"),
            Some(&rider),
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let first: Vec<String> = page.body["trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| id(&t["trip_id"]))
        .collect();
    assert_eq!(first, ids[..3]);
    let next = id(&page.body["next_before"]);
    let page = app
        .get(
            &format!("/api/riders/{rider_id}/trips?limit=3&before={next}"),
            Some(&rider),
        )
        .await;
    let rest: Vec<String> = page.body["trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| id(&t["trip_id"]))
        .collect();
    assert_eq!(rest, ids[3..]);
    assert!(page.body["next_before"].is_null());
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let seen = app
        .get(&format!("/api/riders/{rider_id}/trips"), Some(&operator))
        .await;
    assert_eq!(seen.body["trips"].as_array().unwrap().len(), 5);
}

#[actix_rt::test]
async fn offers_and_their_outcomes_are_in_the_trip_log() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 30.0).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let (near, mut near_ws) = app.online_driver(east(100.0)).await;
    let (far, mut far_ws) = app.online_driver(east(400.0)).await;
    let r = app.request_trip(&rider, PICKUP, DROPOFF).await;
    assert_eq!(r.status, 201);
    let trip_id = id(&r.body["trip_id"]);
    near_ws.recv_type("offer").await;
    far_ws.recv_type("offer").await;
    near_ws
        .send(json!({"type": "decline", "trip_id": trip_id}))
        .await;
    near_ws.recv_json().await;
    far_ws
        .send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    far_ws.recv_type("trip_assigned").await;

    let mut offers = Vec::new();
    for _ in 0..40 {
        let r = app
            .get(&format!("/api/trips/{trip_id}/events"), Some(&operator))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        offers = r.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("trip.offer_"))
            .cloned()
            .collect::<Vec<_>>();
        if offers.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sent: Vec<String> = offers
        .iter()
        .filter(|e| e["type"] == "trip.offer_sent")
        .map(|e| id(&e["data"]["driver_id"]))
        .collect();
    assert_eq!(sent.len(), 2, "{offers:?}");
    assert!(sent.contains(&near.to_string()) && sent.contains(&far.to_string()));
    for e in offers.iter().filter(|e| e["type"] == "trip.offer_sent") {
        assert!(e["data"]["distance_m"].as_u64().unwrap() > 0, "{e}");
        assert!(e["data"]["expires_ms"].as_i64().unwrap() > 0, "{e}");
    }
    let ended: Vec<(String, String)> = offers
        .iter()
        .filter(|e| e["type"] == "trip.offer_ended")
        .map(|e| (id(&e["data"]["driver_id"]), id(&e["data"]["outcome"])))
        .collect();
    assert_eq!(
        ended,
        [
            (near.to_string(), "declined".to_owned()),
            (far.to_string(), "accepted".to_owned()),
        ]
    );
    // The notes change nothing: the trip is ACCEPTED by the far driver.
    let t = trip(&app, &rider, &trip_id).await;
    assert_eq!(t["status"], "ACCEPTED");
    assert_eq!(t["driver_id"], far.to_string());
    app.handle.stop().await;
}

/// SPEC §6 rule 5, the line of issue 15: riders A at 0 m and B at 1 000 m, driver 1 at 400 m and
/// driver 2 at −700 m. Nearest first, A (asking first) would take driver 1 and leave B with
/// driver 2 (400 + 1 700 m); in `batched` mode the window pairs driver 1 with B and driver 2 with
/// A (600 + 700 m), and that is each driver's first offer.
#[actix_rt::test]
async fn in_batched_mode_a_window_pairs_riders_and_drivers_for_the_least_total_pickup() {
    let app = spawn_app_with(|s| {
        s.matching.mode = hexdispatch::dispatch::MatchingMode::Batched;
        s.matching.batch_window_ms = 400;
    })
    .await;
    let (lat, lng) = (52.52, 13.405);
    let east = |m: f64| lng + m / (111_320.0 * f64::to_radians(lat).cos());
    let (_, mut driver_1) = app.online_driver((lat, east(400.0))).await;
    let (_, mut driver_2) = app.online_driver((lat, east(-700.0))).await;
    let rider_a = app.token(Role::Rider, Uuid::now_v7());
    let rider_b = app.token(Role::Rider, Uuid::now_v7());
    let a = app
        .request_trip(&rider_a, (lat, east(0.0)), (lat + 0.02, lng))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let b = app
        .request_trip(&rider_b, (lat, east(1_000.0)), (lat + 0.02, lng))
        .await;
    assert_eq!(b.status, 201, "{}", b.body);
    let first_1 = driver_1
        .gets_within("offer", Duration::from_secs(3))
        .await
        .expect("driver 1 gets an offer");
    let first_2 = driver_2
        .gets_within("offer", Duration::from_secs(3))
        .await
        .expect("driver 2 gets an offer");
    assert_eq!(first_1["trip_id"], b.body["trip_id"], "driver 1 serves B");
    assert_eq!(first_2["trip_id"], a.body["trip_id"], "driver 2 serves A");
    app.handle.stop().await;
}

#[actix_rt::test]
async fn a_driver_freed_during_a_window_does_not_jump_the_pairing() {
    // One offer at a time, so whoever is offered first holds the trip.
    let app = spawn_app_with(|s| {
        s.matching.mode = hexdispatch::dispatch::MatchingMode::Batched;
        s.matching.batch_window_ms = 1_500;
        s.matching.batch_size = 1;
    })
    .await;
    let (lat, lng) = (52.52, 13.405);
    let east = |m: f64| lng + m / (111_320.0 * f64::to_radians(lat).cos());
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip = app
        .request_trip(&rider, (lat, east(0.0)), (lat + 0.02, lng))
        .await;
    assert_eq!(trip.status, 201, "{}", trip.body);
    // Within the window: a far driver comes online first, then a near one.
    let (_, mut far) = app.online_driver((lat, east(1_500.0))).await;
    let (_, mut near) = app.online_driver((lat, east(200.0))).await;
    let offer = near
        .gets_within("offer", Duration::from_secs(5))
        .await
        .expect("the nearest driver is offered the trip when the window closes");
    assert_eq!(offer["trip_id"], trip.body["trip_id"]);
    assert!(
        far.gets_within("offer", Duration::from_millis(300))
            .await
            .is_none(),
        "the driver that came online first was not offered the trip ahead of the window"
    );
    app.handle.stop().await;
}
