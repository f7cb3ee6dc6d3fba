//! The fault suite: the engine as users break it. SIGTERM during a database outage loses no
//! queued write; races between a driver's accept and a rider's cancel never strand the driver;
//! a driver who gives up a trip recovered after `kill -9` is free again; drivers restored from the
//! Redis snapshot are offered trips only once they reconnect, and get them then; an offer held
//! across a reconnect is sent again; one unreadable trip does not stop the engine from starting.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use rand::Rng;
use serde_json::json;
use uuid::Uuid;

use crate::durability::Http;
use crate::helpers::spawn_app_with;
use crate::services::{EngineProcess, Proxy, drop_database, postgres_database, redis_url};

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hexdispatch-{name}-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[actix_rt::test]
async fn sigterm_during_a_database_outage_flushes_every_queued_write_before_exiting() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let (host_part, db) = url.rsplit_once('/').unwrap();
    let target = host_part
        .rsplit_once('@')
        .map_or("127.0.0.1:5432", |(_, h)| h)
        .to_owned();
    let proxy = Proxy::start(&target).await;
    let dir = scratch_dir("sigterm");
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let env = [
        ("HEXDISPATCH__DATABASE__URL", proxied),
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
        ("HEXDISPATCH__HTTP__SHUTDOWN_TIMEOUT_S", "20".to_string()),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let operator = http.token(Role::Operator, Uuid::now_v7());
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, trip) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, trip_id);
    http.drained().await;

    // The database goes away; the driver is told it won, so the engine must not forget it.
    proxy.cut();
    let (s, b) = http
        .call(
            "PUT",
            &format!("/api/trips/{trip_id}/accept"),
            &driver_token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "ACCEPTED");

    let restore = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        proxy.restore();
    };
    let (exited, ()) = tokio::join!(engine.terminate(Duration::from_secs(30)), restore);
    assert!(
        exited,
        "the engine exits by itself, successfully, after SIGTERM"
    );

    let env = [
        ("HEXDISPATCH__DATABASE__URL", url.clone()),
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let again = http.trip(&operator, &trip_id).await;
    assert_eq!(again["status"], "ACCEPTED", "{again}");
    assert_eq!(again["driver_id"], driver.to_string());
    drop(engine);
    drop_database(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_driver_who_gives_up_a_trip_recovered_after_kill_9_is_free_again() {
    let dir = scratch_dir("recovered-cancel");
    let env = [("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string())];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, trip) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, trip_id);
    let accept = format!("/api/trips/{trip_id}/accept");
    let (s, b) = http.call("PUT", &accept, &driver_token, None).await;
    assert_eq!(s, 200, "{b}");
    http.drained().await;
    engine.kill();

    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let me = format!("/api/drivers/{driver}");
    let (_, state) = http.call("GET", &me, &driver_token, None).await;
    assert_eq!(state["current_trip"], trip_id.as_str(), "{state}");
    let (s, b) = http
        .call(
            "DELETE",
            &format!("/api/trips/{trip_id}"),
            &driver_token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "MATCHING");
    let mut freed = false;
    for _ in 0..40 {
        let (_, state) = http.call("GET", &me, &driver_token, None).await;
        if state["current_trip"].is_null() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the driver who gave the trip up no longer serves it");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_driver_restored_from_the_snapshot_is_offered_once_it_reconnects() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let dir = scratch_dir("restored-offer");
    let env = [
        ("HEXDISPATCH__REDIS__URL", redis),
        (
            "HEXDISPATCH__REDIS__KEY_PREFIX",
            format!("hexdispatch-test-{}:", Uuid::now_v7()),
        ),
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, trip) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, trip_id);
    http.drained().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.kill();

    // After the restart the driver is back in the index (listed) but has no session: the
    // recovered trip must not spend its offer on it.
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let me = format!("/api/drivers/{driver}");
    let operator = http.token(Role::Operator, Uuid::now_v7());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, state) = http.call("GET", &me, &operator, None).await;
    assert_eq!(
        state["status"], "online",
        "restored from the snapshot: {state}"
    );
    assert!(
        state["offer"].is_null(),
        "no offer to an unreachable driver: {state}"
    );

    let client = awc::Client::default();
    let (_, framed) = client
        .ws(format!(
            "{}/ws/driver",
            engine.address.replace("http://", "ws://")
        ))
        .bearer_auth(&driver_token)
        .connect()
        .await
        .expect("websocket connects");
    let mut ws = crate::helpers::Socket::from(framed);
    let session = ws.recv_json().await;
    assert_eq!(session["type"], "session", "{session}");
    let offer = ws
        .gets_within("offer", Duration::from_secs(5))
        .await
        .expect("the reconnected driver is offered the recovered trip");
    assert_eq!(offer["trip_id"], trip_id.as_str());
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn an_offer_held_across_a_reconnect_is_sent_again_after_the_session_frame() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 30.0).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let (driver, mut ws) = app.online_driver((48.8566, 2.3522)).await;
    let r = app
        .request_trip(&rider, (48.8570, 2.3530), (48.87, 2.30))
        .await;
    assert_eq!(r.status, 201);
    let trip_id = r.body["trip_id"].as_str().unwrap().to_owned();
    let first = ws.recv_type("offer").await;
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    let session = ws.recv_json().await;
    assert_eq!(session["type"], "session", "{session}");
    let again = ws.recv_json().await;
    assert_eq!(again["type"], "offer", "{again}");
    assert_eq!(again["trip_id"], trip_id.as_str());
    assert!(
        again["expires_in_ms"].as_i64().unwrap() < first["expires_in_ms"].as_i64().unwrap(),
        "the offer keeps its deadline: {first} then {again}"
    );
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    let won = ws.recv_type("trip_assigned").await;
    assert_eq!(won["trip"]["driver_id"], driver.to_string());
    app.handle.stop().await;
}

#[actix_rt::test]
async fn an_accept_racing_a_rider_cancel_never_strands_the_driver() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 30.0).await;
    let (driver, mut ws) = app.online_driver((48.8566, 2.3522)).await;
    let driver_token = app.driver_token(driver, "economy");
    let mut rng = rand::rng();
    for round in 0..30 {
        let rider = app.token(Role::Rider, Uuid::now_v7());
        let r = app
            .request_trip(&rider, (48.8570, 2.3530), (48.87, 2.30))
            .await;
        assert_eq!(r.status, 201, "round {round}: {}", r.body);
        let trip_id = r.body["trip_id"].as_str().unwrap().to_owned();
        let offer = ws.recv_type("offer").await;
        assert_eq!(offer["trip_id"], trip_id.as_str(), "round {round}");
        let accept_delay = Duration::from_micros(rng.random_range(0..3_000));
        let cancel_delay = Duration::from_micros(rng.random_range(0..3_000));
        let accept = async {
            tokio::time::sleep(accept_delay).await;
            app.put(
                &format!("/api/trips/{trip_id}/accept"),
                Some(&driver_token),
                "",
            )
            .await
        };
        let cancel = async {
            tokio::time::sleep(cancel_delay).await;
            app.delete(&format!("/api/trips/{trip_id}"), Some(&rider))
                .await
        };
        let (accepted, cancelled) = tokio::join!(accept, cancel);
        assert_eq!(cancelled.status, 200, "round {round}: {}", cancelled.body);
        assert!(
            [200, 409].contains(&accepted.status),
            "round {round}: {}",
            accepted.body
        );
        // Whoever won, the trip is cancelled and the driver must be free for the next one.
        let mut free = false;
        for _ in 0..40 {
            let me = app
                .get(&format!("/api/drivers/{driver}"), Some(&driver_token))
                .await;
            if me.body["current_trip"].is_null() && me.body["available"] == true {
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            free,
            "round {round}: the driver is stranded on a cancelled trip"
        );
        while ws
            .gets_within_any(Duration::from_millis(20))
            .await
            .is_some()
        {}
    }
    app.handle.stop().await;
}

#[actix_rt::test]
async fn one_unreadable_trip_is_skipped_and_the_engine_starts() {
    let dir = scratch_dir("corrupt-trip");
    let env = [("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string())];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let operator = http.token(Role::Operator, Uuid::now_v7());
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let (_, broken) = http.request_trip(&rider, 10.0, 10.0).await;
    let (_, sound) = http.request_trip(&rider, 11.0, 11.0).await;
    let broken = broken["trip_id"].as_str().unwrap().to_owned();
    let sound = sound["trip_id"].as_str().unwrap().to_owned();
    http.drained().await;
    engine.kill();

    // Damage one trip's log in the store.
    let db = dir.join("data/hexdispatch.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap();
    sqlx::query("UPDATE trip_events SET data = '{not json' WHERE trip_id = $1")
        .bind(&broken)
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);

    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let trip = http.trip(&operator, &sound).await;
    assert_eq!(
        trip["status"], "MATCHING",
        "the sound trip was recovered: {trip}"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn finished_trips_leave_memory_after_the_retention_and_are_read_back_from_the_store() {
    let app = spawn_app_with(|s| s.trip.retention_s = 0.5).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = app
            .post(
                "/api/trips",
                Some(&rider),
                &json!({
                    "origin": {"lat": 10.0, "lng": 10.0 + f64::from(i) * 0.01},
                    "destination": {"lat": 10.1, "lng": 10.1},
                    "idempotency_key": format!("key-{i}"),
                })
                .to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["trip_id"].as_str().unwrap().to_owned();
        let cancelled = app.delete(&format!("/api/trips/{id}"), Some(&rider)).await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        ids.push(id);
    }
    assert_eq!(app.core.trips.len(), 20);
    let persistence = app.core.persistence().unwrap().clone();
    assert!(persistence.flush(Duration::from_secs(10)).await);
    let mut forgotten = false;
    for _ in 0..60 {
        if app.core.trips.is_empty()
            && app.core.trips.keys_len() == 0
            && app.core.trips.riders_len() == 0
        {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        forgotten,
        "trips {}, keys {}, riders {} still in memory",
        app.core.trips.len(),
        app.core.trips.keys_len(),
        app.core.trips.riders_len()
    );
    // Still there for whoever asks: the store answers.
    let again = app
        .get(&format!("/api/trips/{}", ids[3]), Some(&rider))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["status"], "CANCELLED");
    let history = app
        .get(
            &format!(
                "/api/riders/{}/trips?limit=100",
                again.body["rider_id"].as_str().unwrap()
            ),
            Some(&rider),
        )
        .await;
    assert_eq!(history.body["trips"].as_array().unwrap().len(), 20);
    let replay = app
        .post(
            "/api/trips",
            Some(&rider),
            &json!({
                "origin": {"lat": 10.0, "lng": 10.05},
                "destination": {"lat": 10.1, "lng": 10.1},
                "idempotency_key": "key-5",
            })
            .to_string(),
        )
        .await;
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(
        replay.body["trip_id"],
        ids[5].as_str(),
        "the key is still honoured"
    );
    app.handle.stop().await;
}

#[derive(Default)]
struct Fleet {
    /// Epoch (0 before the restart, 1 after) each driver last opened a session in.
    sessions: std::collections::HashMap<Uuid, usize>,
    /// The trip each driver was told it won.
    won: std::collections::HashMap<Uuid, String>,
    /// The trip each driver's `session` frame named after the restart.
    trip_back: std::collections::HashMap<Uuid, String>,
    epoch: usize,
}

/// A driver app: it sends its position and goes online after each `session` frame, accepts
/// offers if `accepts` (and never finishes a trip), and records the trips the engine told it it
/// won. With `reconnect` it comes back whenever its socket ends (every 100 ms while nothing
/// listens); without, it stops then.
async fn driver_app(
    address: String,
    token: String,
    driver: Uuid,
    at: (f64, f64),
    (accepts, reconnect): (bool, bool),
    fleet: std::rc::Rc<std::cell::RefCell<Fleet>>,
) {
    let client = awc::Client::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let Ok((_, framed)) = client
            .ws(format!("{}/ws/driver", address.replace("http://", "ws://")))
            .bearer_auth(&token)
            .connect()
            .await
        else {
            if !reconnect {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut ws = crate::helpers::Socket::from(framed);
        while let Some(frame) = ws.gets_within_any(Duration::from_secs(60)).await {
            match frame["type"].as_str() {
                Some("session") => {
                    {
                        let mut f = fleet.borrow_mut();
                        let epoch = f.epoch;
                        f.sessions.insert(driver, epoch);
                        if epoch == 1
                            && let Some(trip) = frame["trip"]["trip_id"].as_str()
                        {
                            f.trip_back.insert(driver, trip.to_owned());
                        }
                    }
                    ws.send(json!({"type": "location", "lat": at.0, "lng": at.1}))
                        .await;
                    ws.send(json!({"type": "status", "status": "online"})).await;
                }
                Some("offer") if accepts => {
                    ws.send(json!({"type": "accept", "trip_id": frame["trip_id"]}))
                        .await;
                }
                Some("trip_assigned") => {
                    let trip = frame["trip"]["trip_id"].as_str().unwrap_or_default();
                    fleet.borrow_mut().won.insert(driver, trip.to_owned());
                }
                _ => {}
            }
        }
        if !reconnect {
            return;
        }
    }
}

/// Checks, after a restart, what SPEC §6 and §8 promise: every acknowledged trip is there with
/// an unbroken event log; every trip a driver was told it won is still that driver's; no driver
/// holds two trips; every driver comes back either on the trip that names it or free.
async fn check_after_restart(
    engine: &EngineProcess,
    acknowledged: &[String],
    drivers: &[(Uuid, String)],
    won: &std::collections::HashMap<Uuid, String>,
    phase: &str,
) {
    let http = Http::new(&engine.address);
    let operator = http.token(Role::Operator, Uuid::now_v7());
    let mut held: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for id in acknowledged {
        let trip = http.trip(&operator, id).await;
        let events = http.events(&operator, id).await;
        let seqs: Vec<i64> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (1..=i64::try_from(seqs.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "{phase}: trip {id} has a gap in its log");
        assert!(seqs.len() >= 2, "{phase}: trip {id} lost its first events");
        if let Some(driver) = trip["driver_id"].as_str() {
            let previous = held.insert(driver.to_owned(), id.clone());
            assert!(
                previous.is_none(),
                "{phase}: driver {driver} holds {previous:?} and {id}"
            );
        }
    }
    for (driver, trip) in won {
        let stored = http.trip(&operator, trip).await;
        assert_eq!(
            stored["driver_id"],
            driver.to_string(),
            "{phase}: driver {driver} was told it won {trip}: {stored}"
        );
        assert!(
            ["ACCEPTED", "DRIVER_ARRIVING", "TRIP_STARTED"]
                .contains(&stored["status"].as_str().unwrap()),
            "{phase}: {stored}"
        );
    }
    for (driver, token) in drivers {
        let (_, me) = http
            .call("GET", &format!("/api/drivers/{driver}"), token, None)
            .await;
        match held.get(&driver.to_string()) {
            Some(trip) => assert_eq!(me["current_trip"], trip.as_str(), "{phase}: {me}"),
            None => assert!(
                me["current_trip"].is_null(),
                "{phase}: a busy driver with no trip: {me}"
            ),
        }
    }
}

#[actix_rt::test]
async fn under_load_sigterm_then_kill_9_then_restart_lose_nothing_acknowledged() {
    let dir = scratch_dir("fault-load");
    let env = [
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
        (
            "HEXDISPATCH__LIMITS__TRIPS_PER_RIDER_PER_MINUTE",
            "10000".to_string(),
        ),
    ];
    let mut acknowledged: Vec<String> = Vec::new();
    let mut drivers: Vec<(Uuid, String)> = Vec::new();
    let fleet = std::rc::Rc::new(std::cell::RefCell::new(Fleet::default()));
    for phase in ["sigterm", "kill -9"] {
        let engine = EngineProcess::start(&dir, &env).await;
        let http = Http::new(&engine.address);
        let rider = http.token(Role::Rider, Uuid::now_v7());
        // Fifteen drivers around the centre, streaming and accepting.
        for i in 0..15 {
            let driver = Uuid::now_v7();
            let token = http.token(Role::Driver, driver);
            let at = (
                48.85 + f64::from(i % 5) * 0.002,
                2.35 + f64::from(i / 5) * 0.002,
            );
            actix_rt::spawn(driver_app(
                engine.address.clone(),
                token.clone(),
                driver,
                at,
                (true, false),
                fleet.clone(),
            ));
            drivers.push((driver, token));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Riders request while drivers accept; the engine is stopped in the middle of it.
        for i in 0..30 {
            let (status, body) = http
                .request_trip(&rider, 48.851 + f64::from(i % 7) * 0.001, 2.351)
                .await;
            if status == 201 {
                acknowledged.push(body["trip_id"].as_str().unwrap().to_owned());
            }
            if i == 20 {
                if phase == "sigterm" {
                    let stopped = engine.terminate(Duration::from_secs(30)).await;
                    assert!(stopped, "the engine drains and exits on SIGTERM");
                } else {
                    engine.kill();
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let engine = EngineProcess::start(&dir, &env).await;
        let snapshot = fleet.borrow().won.clone();
        assert!(!snapshot.is_empty(), "{phase}: some drivers won trips");
        check_after_restart(&engine, &acknowledged, &drivers, &snapshot, phase).await;
        engine.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (≤ 2 s) until the drivers and trips agree: a live trip that names a driver is that
/// driver's current trip; a driver's current trip names it and is live; a driver with no trip
/// that is online is available again. Panics naming `what` otherwise.
async fn settle_consistent(
    app: &crate::helpers::TestApp,
    drivers: &[(Uuid, String)],
    trips: &[String],
    what: &str,
) {
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let mut last = String::new();
    for _ in 0..80 {
        let mut problems = Vec::new();
        let mut named: std::collections::HashMap<String, String> = std::collections::HashMap::new();
        for trip in trips {
            let t = app
                .get(&format!("/api/trips/{trip}"), Some(&operator))
                .await;
            let live = ["ACCEPTED", "DRIVER_ARRIVING", "TRIP_STARTED"]
                .contains(&t.body["status"].as_str().unwrap_or(""));
            if let (true, Some(d)) = (live, t.body["driver_id"].as_str())
                && let Some(other) = named.insert(d.to_owned(), trip.clone())
            {
                problems.push(format!("driver {d} holds {other} and {trip}"));
            }
        }
        for (driver, _) in drivers {
            let me = app
                .get(&format!("/api/drivers/{driver}"), Some(&operator))
                .await
                .body;
            let current = me["current_trip"].as_str().map(str::to_owned);
            let expected = named.get(&driver.to_string()).cloned();
            if current != expected {
                problems.push(format!(
                    "driver {driver} serves {current:?}, the trips say {expected:?}"
                ));
            }
            if current.is_none() && me["status"] == "online" && me["available"] != true {
                problems.push(format!(
                    "driver {driver} is online, free and not available: {me}"
                ));
            }
        }
        if problems.is_empty() {
            return;
        }
        last = problems.join("; ");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: {last}");
}

fn jitter(rng: &mut impl Rng, max_ms: u64) -> Duration {
    Duration::from_micros(rng.random_range(0..max_ms * 1_000))
}

#[actix_rt::test]
async fn races_around_offers_and_cancellations_never_strand_a_driver() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 0.4).await;
    let mut rng = rand::rng();
    let (driver, mut ws) = app.online_driver((48.8566, 2.3522)).await;
    let token = app.driver_token(driver, "economy");
    let drivers = vec![(driver, token.clone())];
    let mut trips = Vec::new();
    for round in 0..12 {
        let rider = app.token(Role::Rider, Uuid::now_v7());
        let r = app
            .request_trip(&rider, (48.8570, 2.3530), (48.87, 2.30))
            .await;
        assert_eq!(r.status, 201, "round {round}: {}", r.body);
        let trip_id = r.body["trip_id"].as_str().unwrap().to_owned();
        trips.push(trip_id.clone());
        let Some(offer) = ws.gets_within("offer", Duration::from_secs(3)).await else {
            panic!("round {round}: no offer")
        };
        assert_eq!(offer["trip_id"], trip_id.as_str());
        match round % 4 {
            // Accept against the offer's expiry (0.4 s).
            0 => {
                tokio::time::sleep(Duration::from_millis(340) + jitter(&mut rng, 120)).await;
                let _ = app
                    .put(&format!("/api/trips/{trip_id}/accept"), Some(&token), "")
                    .await;
            }
            // Accept against the driver going offline, then online again.
            1 => {
                let accept = async {
                    tokio::time::sleep(jitter(&mut rng.clone(), 4)).await;
                    app.put(&format!("/api/trips/{trip_id}/accept"), Some(&token), "")
                        .await
                };
                let offline = async {
                    tokio::time::sleep(jitter(&mut rand::rng(), 4)).await;
                    app.set_status(driver, &token, "offline").await
                };
                let _ = tokio::join!(accept, offline);
                app.set_status(driver, &token, "online").await;
            }
            // Reconnect during the offer, then accept on the new socket.
            2 => {
                ws.close().await;
                tokio::time::sleep(jitter(&mut rng, 30)).await;
                ws = app.driver_socket(&token).await;
                let _ = ws.recv_json().await;
                ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
            }
            // Accepted, then the driver and the rider cancel at once.
            _ => {
                let won = app
                    .put(&format!("/api/trips/{trip_id}/accept"), Some(&token), "")
                    .await;
                assert_eq!(won.status, 200, "round {round}: {}", won.body);
                let by_driver = async {
                    tokio::time::sleep(jitter(&mut rng.clone(), 4)).await;
                    app.delete(&format!("/api/trips/{trip_id}"), Some(&token))
                        .await
                };
                let by_rider = async {
                    tokio::time::sleep(jitter(&mut rand::rng(), 4)).await;
                    app.delete(&format!("/api/trips/{trip_id}"), Some(&rider))
                        .await
                };
                let _ = tokio::join!(by_driver, by_rider);
            }
        }
        settle_consistent(&app, &drivers, &trips, &format!("round {round}")).await;
        // Whatever is left of this trip is cancelled, so the next round starts clean.
        let _ = app
            .delete(&format!("/api/trips/{trip_id}"), Some(&rider))
            .await;
        settle_consistent(
            &app,
            &drivers,
            &trips,
            &format!("round {round}, cleaned up"),
        )
        .await;
        while ws
            .gets_within_any(Duration::from_millis(20))
            .await
            .is_some()
        {}
    }
    app.handle.stop().await;
}

/// An accepted trip on a REST-only driver of `engine`, arrived at the pickup: (trip id, PIN,
/// driver token, rider token).
async fn trip_at_pickup(http: &Http, driver: Uuid) -> (String, String, String, String) {
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, trip) = http.request_trip(&rider, 48.8567, 2.3523).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, trip_id);
    for action in ["accept", "arrived"] {
        let (s, b) = http
            .call(
                "PUT",
                &format!("/api/trips/{trip_id}/{action}"),
                &driver_token,
                None,
            )
            .await;
        assert_eq!(s, 200, "{action}: {b}");
    }
    let pin = http.trip(&rider, &trip_id).await["start_pin"]
        .as_str()
        .unwrap()
        .to_owned();
    (trip_id, pin, driver_token, rider)
}

#[actix_rt::test]
async fn a_pin_lock_survives_kill_9() {
    let dir = scratch_dir("pin-lock");
    let env = [
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
        ("HEXDISPATCH__TRIP__MAX_PIN_ATTEMPTS", "3".to_string()),
        ("HEXDISPATCH__TRIP__PIN_LOCKOUT_S", "600".to_string()),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let driver = Uuid::now_v7();
    let (trip_id, pin, driver_token, _) = trip_at_pickup(&http, driver).await;
    let wrong = if pin == "0000" { "1111" } else { "0000" };
    let start = format!("/api/trips/{trip_id}/start");
    for _ in 0..3 {
        let (s, b) = http
            .call("PUT", &start, &driver_token, Some(json!({"pin": wrong})))
            .await;
        assert_eq!(s, 422, "{b}");
    }
    let (s, b) = http
        .call("PUT", &start, &driver_token, Some(json!({"pin": pin})))
        .await;
    assert_eq!(s, 429, "locked after three wrong PINs: {b}");
    http.drained().await;
    engine.kill();

    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let (s, b) = http
        .call("PUT", &start, &driver_token, Some(json!({"pin": pin})))
        .await;
    assert_eq!(s, 429, "the lock outlives the restart: {b}");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_trip_resumed_after_kill_9_keeps_the_distance_already_driven() {
    let dir = scratch_dir("driven");
    let env = [
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
        (
            "HEXDISPATCH__DATABASE__LOCATION_SAMPLE_S",
            "0.05".to_string(),
        ),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let driver = Uuid::now_v7();
    let (trip_id, pin, driver_token, rider) = trip_at_pickup(&http, driver).await;
    let (s, b) = http
        .call(
            "PUT",
            &format!("/api/trips/{trip_id}/start"),
            &driver_token,
            Some(json!({"pin": pin})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // 200 m north in 20 m hops, 500 ms apart: 40 m/s, plausible.
    for i in 1..=10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, b) = http
            .call(
                "PUT",
                &format!("/api/drivers/{driver}/location"),
                &driver_token,
                Some(json!({"lat": 48.8567 + f64::from(i) * 0.00018, "lng": 2.3523})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    http.drained().await;
    engine.kill();

    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let (s, b) = http
        .call(
            "PUT",
            &format!("/api/trips/{trip_id}/complete"),
            &driver_token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let done = http.trip(&rider, &trip_id).await;
    let metres = done["fare_breakdown"]["distance_m"].as_u64().unwrap();
    assert!(
        (150..=260).contains(&metres),
        "the ~200 m driven before the restart are priced: {metres} m"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_restart_under_load_brings_every_driver_back_with_its_trip_and_listed() {
    let dir = scratch_dir("restart-load");
    let mut env = vec![
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
        (
            "HEXDISPATCH__LIMITS__TRIPS_PER_RIDER_PER_MINUTE",
            "10000".to_string(),
        ),
    ];
    if let Some(redis) = redis_url().await {
        env.push(("HEXDISPATCH__REDIS__URL", redis));
        env.push((
            "HEXDISPATCH__REDIS__KEY_PREFIX",
            format!("hexdispatch-test-{}:", Uuid::now_v7()),
        ));
    }
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let fleet = std::rc::Rc::new(std::cell::RefCell::new(Fleet::default()));
    let mut drivers = Vec::new();
    for i in 0..40 {
        let driver = Uuid::now_v7();
        let token = http.token(Role::Driver, driver);
        let at = (
            48.85 + f64::from(i % 8) * 0.003,
            2.35 + f64::from(i / 8) * 0.003,
        );
        actix_rt::spawn(driver_app(
            engine.address.clone(),
            token.clone(),
            driver,
            at,
            (i % 2 == 0, true),
            fleet.clone(),
        ));
        drivers.push((driver, token, at));
    }
    for _ in 0..100 {
        if fleet.borrow().sessions.len() == drivers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let (status, body) = http
            .request_trip(&rider, 48.851 + f64::from(i % 5) * 0.003, 2.351)
            .await;
        if status == 201 {
            acknowledged.push(body["trip_id"].as_str().unwrap().to_owned());
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    http.drained().await;
    let port = engine.port();
    engine.kill();

    fleet.borrow_mut().epoch = 1;
    let restarted = std::time::Instant::now();
    let engine = EngineProcess::start_on(&dir, &env, port).await;
    let mut back = false;
    for _ in 0..200 {
        if fleet.borrow().sessions.values().all(|&e| e == 1) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "every driver reconnected after the restart");
    eprintln!(
        "restart under load: {} drivers back {} ms after the restart began",
        drivers.len(),
        restarted.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let won = fleet.borrow().won.clone();
    assert!(!won.is_empty(), "some drivers won trips");
    for (driver, trip) in &won {
        assert_eq!(
            fleet.borrow().trip_back.get(driver),
            Some(trip),
            "driver {driver} got its trip back in its session frame"
        );
    }
    let plain: Vec<(Uuid, String)> = drivers.iter().map(|(d, t, _)| (*d, t.clone())).collect();
    check_after_restart(&engine, &acknowledged, &plain, &won, "restart under load").await;
    // Nearby lists every available driver where it is (one holding an offer or a trip is not
    // available).
    let http = Http::new(&engine.address);
    for (driver, _, at) in &drivers {
        if won.contains_key(driver) {
            continue;
        }
        let (s, body) = http
            .call(
                "GET",
                &format!(
                    "/api/locations/nearby?lat={}&lng={}&radius=50&limit=10",
                    at.0, at.1
                ),
                &rider,
                None,
            )
            .await;
        assert_eq!(s, 200, "{body}");
        let listed = body["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["driver_id"] == driver.to_string());
        let (_, me) = http
            .call("GET", &format!("/api/drivers/{driver}"), &rider, None)
            .await;
        assert!(
            listed || me["available"] != true,
            "available driver {driver} is listed at its position after the restart: {me}"
        );
        assert!(
            !listed || me["current_trip"].is_null(),
            "a driver on a trip is not listed: {me}"
        );
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
