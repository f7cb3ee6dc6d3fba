//! Nothing acknowledged is lost: trips survive `kill -9` (PostgreSQL and the SQLite default), a
//! database outage loses nothing once it returns, and the Redis snapshot answers nearby right after
//! a restart.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use hexdispatch::http::tokens::JwtKeys;
use secrecy::SecretString;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{SECRET, spawn_app_with};
use crate::services::{EngineProcess, Proxy, drop_database, postgres_database, redis_url};

/// Minimal HTTP client for an engine at `address`.
pub(crate) struct Http {
    address: String,
    client: awc::Client,
    keys: JwtKeys,
}

impl Http {
    pub(crate) fn new(address: &str) -> Self {
        Self {
            address: address.to_owned(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(10))
                .finish(),
            keys: JwtKeys::new(&SecretString::from(SECRET)),
        }
    }

    pub(crate) fn token(&self, role: Role, sub: Uuid) -> String {
        self.keys.issue(sub, role, None, 3_600).unwrap()
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, body, _) = self.call_handled(method, path, token, body).await;
        (status, body)
    }

    /// As [`Http::call`], with the instance that handled it (`Hexdispatch-Instance`).
    pub(crate) async fn call_handled(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let req = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(token);
        let mut res = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        }
        .expect("request sent");
        let bytes = res.body().limit(1 << 24).await.expect("body");
        let handled = res
            .headers()
            .get("hexdispatch-instance")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            res.status().as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            handled,
        )
    }

    pub(crate) async fn request_trip(&self, rider: &str, lat: f64, lng: f64) -> (u16, Value) {
        self.call(
            "POST",
            "/api/trips",
            rider,
            Some(json!({
                "origin": {"lat": lat, "lng": lng},
                "destination": {"lat": lat + 0.02, "lng": lng + 0.02},
            })),
        )
        .await
    }

    pub(crate) async fn trip(&self, token: &str, trip_id: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/api/trips/{trip_id}"), token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub(crate) async fn events(&self, token: &str, trip_id: &str) -> Value {
        let (status, body) = self
            .call("GET", &format!("/api/trips/{trip_id}/events"), token, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["events"].clone()
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let mut res = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("request sent");
        let bytes = res.body().limit(1 << 24).await.expect("body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A REST-only driver online at a point; returns its token.
    pub(crate) async fn driver_at(&self, driver: Uuid, lat: f64, lng: f64) -> String {
        let token = self.token(Role::Driver, driver);
        let (s, b) = self
            .call(
                "PUT",
                &format!("/api/drivers/{driver}/location"),
                &token,
                Some(json!({"lat": lat, "lng": lng})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = self
            .call(
                "PUT",
                &format!("/api/drivers/{driver}/status"),
                &token,
                Some(json!({"status": "online"})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        token
    }

    /// Waits for the driver to hold an offer and returns its trip id.
    pub(crate) async fn offer_of(&self, driver: Uuid, token: &str) -> String {
        for _ in 0..100 {
            let (_, body) = self
                .call("GET", &format!("/api/drivers/{driver}"), token, None)
                .await;
            if let Some(trip) = body["offer"]["trip_id"].as_str() {
                return trip.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("driver {driver} was never offered a trip");
    }

    /// Waits until every write reached the database.
    pub(crate) async fn drained(&self) {
        for _ in 0..200 {
            let (_, body) = self.call("GET", "/ready", "", None).await;
            if body["checks"]["database"]["pending_writes"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the write queue never drained");
    }
}

/// Runs the kill -9 scenario against `database_url`.
async fn trips_survive_kill_9(database_url: String) {
    let dir = std::env::temp_dir().join(format!("hexdispatch-kill-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let env = [
        ("HEXDISPATCH__DATABASE__URL", database_url),
        ("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "30".to_string()),
    ];
    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    let operator = http.token(Role::Operator, Uuid::now_v7());

    // One trip accepted by a driver, then many trips matching (nobody near them).
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = http.driver_at(driver, 48.8566, 2.3522).await;
    let (status, first) = http.request_trip(&rider, 48.8570, 2.3530).await;
    assert_eq!(status, 201, "{first}");
    let accepted = first["trip_id"].as_str().unwrap().to_owned();
    assert_eq!(http.offer_of(driver, &driver_token).await, accepted);
    let (s, b) = http
        .call(
            "PUT",
            &format!("/api/trips/{accepted}/accept"),
            &driver_token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let mut matching = Vec::new();
    for i in 0..20 {
        let (status, body) = http
            .request_trip(&rider, 40.0 + f64::from(i) * 0.1, -3.7)
            .await;
        assert_eq!(status, 201, "{body}");
        matching.push(body["trip_id"].as_str().unwrap().to_owned());
    }
    http.drained().await;
    let mut before = Vec::new();
    for id in std::iter::once(&accepted).chain(&matching) {
        before.push((
            http.trip(&operator, id).await,
            http.events(&operator, id).await,
        ));
    }
    // Acknowledged and then killed at once: its first events are durable.
    let (status, last) = http.request_trip(&rider, 45.0, 5.0).await;
    assert_eq!(status, 201);
    let last = last["trip_id"].as_str().unwrap().to_owned();
    engine.kill();

    let engine = EngineProcess::start(&dir, &env).await;
    let http = Http::new(&engine.address);
    for (trip, events) in &before {
        let id = trip["trip_id"].as_str().unwrap();
        let again = http.trip(&operator, id).await;
        assert_eq!(again["status"], trip["status"], "trip {id}");
        assert_eq!(again["driver_id"], trip["driver_id"], "trip {id}");
        assert_eq!(again["fare_estimate"], trip["fare_estimate"], "trip {id}");
        assert_eq!(&http.events(&operator, id).await, events, "events of {id}");
    }
    let survivor = http.trip(&operator, &last).await;
    assert_eq!(
        survivor["status"], "MATCHING",
        "an acknowledged trip survives kill -9"
    );

    // The assigned driver has its trip back; a MATCHING trip matches again.
    let (_, me) = http
        .call(
            "GET",
            &format!("/api/drivers/{driver}"),
            &driver_token,
            None,
        )
        .await;
    assert_eq!(me["current_trip"], accepted.as_str(), "{me}");
    let newcomer = Uuid::now_v7();
    let token = http.driver_at(newcomer, 40.0, -3.7).await;
    assert_eq!(
        http.offer_of(newcomer, &token).await,
        matching[0],
        "matching resumed"
    );
    let history = http
        .call(
            "GET",
            &format!("/api/riders/{}/trips?limit=100", sub_of(&rider)),
            &rider,
            None,
        )
        .await;
    assert_eq!(
        history.1["trips"].as_array().unwrap().len(),
        22,
        "the history reads the store"
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rider id a token was issued for.
fn sub_of(token: &str) -> Uuid {
    JwtKeys::new(&SecretString::from(SECRET))
        .verify(token)
        .unwrap()
        .sub
}

#[actix_rt::test]
async fn acknowledged_trips_survive_kill_9_on_postgres() {
    let Some(url) = postgres_database().await else {
        return;
    };
    trips_survive_kill_9(url.clone()).await;
    drop_database(&url).await;
}

#[actix_rt::test]
async fn acknowledged_trips_survive_kill_9_on_the_sqlite_default() {
    // No database.url: the engine uses data/hexdispatch.db under its working directory.
    let dir = std::env::temp_dir().join(format!("hexdispatch-sqlite-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let engine = EngineProcess::start(&dir, &[]).await;
    let http = Http::new(&engine.address);
    let rider = http.token(Role::Rider, Uuid::now_v7());
    let operator = http.token(Role::Operator, Uuid::now_v7());
    let mut ids = Vec::new();
    for i in 0..10 {
        let (status, body) = http.request_trip(&rider, 10.0 + f64::from(i), 10.0).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["trip_id"].as_str().unwrap().to_owned());
    }
    engine.kill();
    assert!(dir.join("data/hexdispatch.db").exists());
    let engine = EngineProcess::start(&dir, &[]).await;
    let http = Http::new(&engine.address);
    for id in &ids {
        let trip = http.trip(&operator, id).await;
        assert_eq!(trip["status"], "MATCHING", "{id}");
        let events = http.events(&operator, id).await;
        assert_eq!(events[0]["type"], "trip.requested");
    }
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn a_database_outage_loses_nothing_and_dispatch_goes_on() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let (host_part, db) = url.rsplit_once('/').unwrap();
    let target = host_part
        .rsplit_once('@')
        .map_or("127.0.0.1:5432", |(_, h)| h)
        .to_owned();
    let proxy = Proxy::start(&target).await;
    let proxied = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let app = spawn_app_with(|s| {
        s.database.url = Some(proxied.clone());
        s.database.ack_timeout_s = 1.0;
        s.matching.offer_timeout_s = 30.0;
    })
    .await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let (driver, mut ws) = app.online_driver((48.8566, 2.3522)).await;
    let r = app
        .request_trip(&rider, (48.8570, 2.3530), (48.87, 2.30))
        .await;
    assert_eq!(r.status, 201);
    let trip_id = r.body["trip_id"].as_str().unwrap().to_string();
    ws.recv_type("offer").await;

    proxy.cut();
    // Dispatch goes on: the driver accepts and arrives while the database is away.
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    ws.recv_type("trip_assigned").await;
    ws.send(json!({"type": "arrived", "trip_id": trip_id}))
        .await;
    assert_eq!(
        ws.recv_type("trip_update").await["status"],
        "DRIVER_ARRIVING"
    );
    // A new trip cannot be made durable: 503, but it is kept.
    let held = app.request_trip(&rider, (10.0, 10.0), (10.1, 10.1)).await;
    assert_eq!(held.status, 503, "{}", held.body);
    assert_eq!(held.body["error"]["code"], "database_unavailable");
    let mut down = false;
    for _ in 0..100 {
        let ready = app.get("/ready", None).await;
        if ready.status == 503 {
            assert_eq!(
                ready.body["checks"]["database"]["status"], "down",
                "{}",
                ready.body
            );
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "/ready names the database while it is away");

    proxy.restore();
    let persistence = app.core.persistence().unwrap().clone();
    assert!(
        persistence.flush(Duration::from_secs(20)).await,
        "the backlog drains"
    );
    assert_eq!(app.get("/ready", None).await.status, 200);
    // Everything the engine holds is in the database.
    let store = persistence.store();
    let stored = store.events(trip_id.parse().unwrap()).await.unwrap();
    let kinds: Vec<&str> = stored
        .iter()
        .map(|e| e.event.kind())
        .filter(|kind| !kind.starts_with("trip.offer_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "trip.requested",
            "trip.matching",
            "trip.accepted",
            "trip.driver_arriving"
        ]
    );
    // The trip refused with 503 was kept and stored once the database came back.
    let held_id = app
        .core
        .trips
        .rider_trips(sub_of(&rider), None, 10)
        .into_iter()
        .find(|t| t.trip_id.to_string() != trip_id)
        .expect("the held trip is kept")
        .trip_id;
    assert_eq!(store.events(held_id).await.unwrap().len(), 2);
    assert_eq!(
        store.count("trip_events").await.unwrap(),
        i64::try_from(stored.len()).unwrap() + 2,
        "nothing more, nothing less"
    );
    assert_eq!(
        stored.len(),
        6,
        "four lifecycle events, the offer and its acceptance: {kinds:?}"
    );
    let _ = driver;
    app.handle.stop().await;
    store.close().await;
    drop_database(&url).await;
}

#[actix_rt::test]
async fn nearby_answers_right_after_a_restart_from_the_redis_snapshot() {
    let Some(redis) = redis_url().await else {
        return;
    };
    let prefix = format!("hexdispatch-test-{}:", Uuid::now_v7());
    let tune = |s: &mut hexdispatch::config::Settings| {
        s.redis.url = Some(redis.clone());
        s.redis.key_prefix = prefix.clone();
    };
    let first = spawn_app_with(tune).await;
    let mut drivers = Vec::new();
    for i in 0..5 {
        let (driver, ws) = first
            .online_driver((52.52 + f64::from(i) * 0.001, 13.405))
            .await;
        drivers.push(driver.to_string());
        drop(ws);
    }
    // The snapshot is written behind: wait until all five are in Redis.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for _ in 0..100 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}driver:*"))
            .query_async(&mut con)
            .await
            .unwrap();
        if keys.len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.handle.stop().await;
    drop(first);

    let second = spawn_app_with(tune).await;
    let rider = second.token(Role::Rider, Uuid::now_v7());
    let r = second
        .nearby(&rider, "lat=52.52&lng=13.405&radius=2000&limit=10")
        .await;
    let mut found: Vec<String> = r.body["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    drivers.sort();
    assert_eq!(
        found, drivers,
        "restored before /ready, no app has reported again"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("{prefix}driver:{}", drivers[0]))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!((1..=300).contains(&ttl), "entries expire: TTL {ttl}");
}

#[actix_rt::test]
async fn sampled_positions_form_the_driver_history() {
    let app = spawn_app_with(|s| s.database.location_sample_s = 0.001).await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let t0 = hexdispatch::clock::now_ms() - 60_000;
    for i in 0..3 {
        let body = json!({"lat": 52.5 + f64::from(i) * 0.001, "lng": 13.4, "ts_ms": t0 + i64::from(i) * 1_000});
        let r = app
            .put(
                &format!("/api/drivers/{driver}/location"),
                Some(&token),
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        app.core
            .persistence()
            .unwrap()
            .flush(Duration::from_secs(5))
            .await
    );
    let path = format!("/api/locations/drivers/{driver}/history");
    let r = app.get(&path, Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let positions = r.body["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 3, "{}", r.body);
    assert_eq!(positions[0]["ts_ms"], t0);
    assert_eq!(positions[2]["lat"], 52.502);
    let window = app
        .get(
            &format!("{path}?from={}&to={}", t0 + 500, t0 + 1_500),
            Some(&token),
        )
        .await;
    assert_eq!(window.body["positions"].as_array().unwrap().len(), 1);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    assert_eq!(app.get(&path, Some(&operator)).await.status, 200);
    let cases = [
        (
            format!("{path}?from=yesterday"),
            token.clone(),
            400,
            "a bad time",
        ),
        (
            format!("{path}?from={}&to={}", t0 + 10, t0),
            token.clone(),
            400,
            "from after to",
        ),
        (format!("{path}?limit=0"), token.clone(), 400, "limit 0"),
        (
            path.clone(),
            app.token(Role::Rider, Uuid::now_v7()),
            403,
            "a rider",
        ),
        (
            path.clone(),
            app.driver_token(Uuid::now_v7(), "economy"),
            403,
            "another driver",
        ),
        (
            "/api/locations/drivers/x/history".to_string(),
            token.clone(),
            400,
            "a bad id",
        ),
    ];
    for (url, token, status, what) in cases {
        let r = app.get(&url, Some(&token)).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
    }
    assert_eq!(app.get(&path, None).await.status, 401);
}

#[actix_rt::test]
async fn migrate_applies_the_schema_and_is_idempotent() {
    let dir = std::env::temp_dir().join(format!("hexdispatch-migrate-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    for run in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
            .arg("migrate")
            .current_dir(&dir)
            .env("HEXDISPATCH__LOG__LEVEL", "warn")
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "migrations applied (sqlite)"
        );
    }
    let store = hexdispatch::persistence::Store::connect(Some(&format!(
        "sqlite://{}?mode=rw",
        dir.join("data/hexdispatch.db").display()
    )))
    .await
    .unwrap();
    for table in [
        "trips",
        "trip_events",
        "outbox",
        "drivers",
        "location_history",
    ] {
        assert_eq!(
            store.count(table).await.unwrap(),
            0,
            "{table} exists and is empty"
        );
    }
    store.close().await;
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .arg("migrate")
        .current_dir(&dir)
        .env(
            "HEXDISPATCH__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .output()
        .expect("the binary runs");
    assert!(
        !bad.status.success(),
        "an unreachable database fails the command"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("could not connect to the database"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn rows_with_and_without_optional_numbers_alternate_on_postgres() {
    use hexdispatch::persistence::{DriverRow, PositionRow, Store, Write};
    let Some(url) = postgres_database().await else {
        return;
    };
    let store = Store::connect(Some(&url)).await.unwrap();
    store.migrate().await.unwrap();
    let driver = Uuid::now_v7();
    // A NULL where a number goes, then a number there, batch after batch of the same shape on
    // the same connections: every one is written.
    for i in 0..24_i64 {
        let with = i % 2 == 1;
        let position = Write::Position(PositionRow {
            driver_id: driver,
            ts_ms: 1_000 + i,
            lat: 52.5,
            lng: 13.4,
            heading: with.then_some(90.0),
            speed_mps: with.then_some(8.5),
        });
        let profile = Write::Driver(DriverRow {
            driver_id: driver,
            vehicle_type: "economy".into(),
            status: "online".into(),
            position: with.then_some((52.5, 13.4, 1_000 + i)),
            created_ms: 1_000,
        });
        for batch in [vec![position], vec![profile]] {
            store
                .write_batch(&batch)
                .await
                .unwrap_or_else(|e| panic!("batch {i} ({with}): {e}"));
        }
    }
    let history = store.positions(driver, 0, i64::MAX, 100).await.unwrap();
    assert_eq!(history.len(), 24);
    assert!(history.iter().any(|p| p.heading.is_some()));
    assert!(history.iter().any(|p| p.heading.is_none()));
    drop(store);
    drop_database(&url).await;
}
