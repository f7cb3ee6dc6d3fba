//! Several engine processes sharing one PostgreSQL database, Redis and RabbitMQ (each when the
//! machine has it) as one map (SPEC §11): every
//! instance names the same owner for a point; a trip requested on any instance runs on the owner
//! of its pickup and is reachable through every instance; killing an instance leaves the others'
//! regions serving, and its trips are back when it returns under the same id.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use hexdispatch::geo::{LatLng, Peer, Regions};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::durability::Http;
use crate::helpers::{Socket, spawn_app};
use crate::services::{
    EngineProcess, amqp_url, drop_database, free_port, postgres_database, redis_url,
};

async fn driver_socket(url: &str, token: &str) -> Socket {
    let (_, framed) = awc::Client::new()
        .ws(url)
        .bearer_auth(token)
        .connect()
        .await
        .expect("websocket connects");
    Socket::from(framed)
}

const IDS: [&str; 3] = ["hx-a", "hx-b", "hx-c"];

struct Cluster {
    dir: std::path::PathBuf,
    database: String,
    /// Shared Redis (a key prefix of the test's own) and RabbitMQ (an exchange of its own).
    shared: Vec<(&'static str, String)>,
    ports: [u16; 3],
    engines: Vec<Option<EngineProcess>>,
}

impl Cluster {
    fn env(&self, i: usize) -> Vec<(&'static str, String)> {
        let peers = IDS
            .iter()
            .zip(self.ports)
            .map(|(id, port)| format!("{id}=http://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut env = vec![
            ("HEXDISPATCH__DATABASE__URL", self.database.clone()),
            ("HEXDISPATCH__CLUSTER__INSTANCE", IDS[i].to_owned()),
            ("HEXDISPATCH__CLUSTER__PEERS", peers),
        ];
        env.extend(self.shared.iter().cloned());
        env
    }

    async fn start(database: String) -> Self {
        let dir = std::env::temp_dir().join(format!("hexdispatch-cluster-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let tag = Uuid::now_v7().simple().to_string();
        let mut shared = Vec::new();
        if let Some(url) = redis_url().await {
            shared.push(("HEXDISPATCH__REDIS__URL", url));
            shared.push((
                "HEXDISPATCH__REDIS__KEY_PREFIX",
                format!("hx-cluster-{tag}:"),
            ));
        }
        if let Some(url) = amqp_url().await {
            shared.push(("HEXDISPATCH__AMQP__URL", url));
            shared.push(("HEXDISPATCH__AMQP__EXCHANGE", format!("hx-cluster-{tag}")));
        }
        let mut cluster = Self {
            dir,
            database,
            shared,
            ports: [free_port(), free_port(), free_port()],
            engines: Vec::new(),
        };
        for i in 0..3 {
            let engine =
                EngineProcess::start_on(&cluster.dir, &cluster.env(i), cluster.ports[i]).await;
            cluster.engines.push(Some(engine));
        }
        cluster
    }

    /// Deletes the queues and exchanges the engines declared for this test.
    async fn clean_broker(&self) {
        let env: std::collections::HashMap<_, _> = self.shared.iter().cloned().collect();
        let (Some(url), Some(exchange)) = (
            env.get("HEXDISPATCH__AMQP__URL"),
            env.get("HEXDISPATCH__AMQP__EXCHANGE"),
        ) else {
            return;
        };
        let Ok(connection) =
            lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
        else {
            return;
        };
        let Ok(channel) = connection.create_channel().await else {
            return;
        };
        for queue in [
            format!("{exchange}.payments"),
            format!("{exchange}.payments.dead"),
        ] {
            let _ = channel
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
        for name in [exchange.clone(), format!("{exchange}.dlx")] {
            let _ = channel
                .exchange_delete(
                    name.as_str().into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }

    fn http(&self, i: usize) -> Http {
        Http::new(&format!("http://127.0.0.1:{}", self.ports[i]))
    }

    fn index_of(id: &str) -> usize {
        IDS.iter().position(|i| *i == id).expect("a known instance")
    }
}

/// Points spread over Europe, one per res-3 region or so.
fn points() -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for lat in (40..56).step_by(3) {
        for lng in (-4..26).step_by(5) {
            out.push((f64::from(lat) + 0.25, f64::from(lng) + 0.25));
        }
    }
    out
}

/// A pickup and a driver position 600 m apart on either side of a boundary between regions of
/// two different instances: (pickup, its owner, driver position, its owner).
fn across_a_boundary(ports: [u16; 3]) -> ((f64, f64), usize, (f64, f64), usize) {
    let peers = IDS
        .iter()
        .zip(ports)
        .map(|(id, port)| Peer {
            id: (*id).to_owned(),
            url: format!("http://127.0.0.1:{port}"),
        })
        .collect();
    let regions = Regions::new(h3o::Resolution::Three, peers);
    let index = |r: h3o::CellIndex| Cluster::index_of(&regions.owner(r).id);
    for (lat, lng) in points() {
        let here = regions.region_of(LatLng::new(lat, lng).unwrap());
        for next in here.grid_disk::<Vec<_>>(1) {
            if index(next) == index(here) {
                continue;
            }
            let (a, b) = (h3o::LatLng::from(here), h3o::LatLng::from(next));
            let at = |t: f64| {
                LatLng::new(
                    a.lat() + (b.lat() - a.lat()) * t,
                    a.lng() + (b.lng() - a.lng()) * t,
                )
                .unwrap()
            };
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..40 {
                let mid = f64::midpoint(lo, hi);
                if regions.region_of(at(mid)) == here {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let step = 300.0 / at(0.0).distance_m(at(1.0));
            let (pickup, driver) = (at(lo - step), at(hi + step));
            if regions.region_of(pickup) == here && regions.region_of(driver) == next {
                return (
                    (pickup.lat(), pickup.lng()),
                    index(here),
                    (driver.lat(), driver.lng()),
                    index(next),
                );
            }
        }
    }
    panic!("no boundary between two instances found");
}

async fn owner(http: &Http, token: &str, (lat, lng): (f64, f64)) -> Value {
    let (status, body) = http
        .call(
            "GET",
            &format!("/api/cluster/owner?lat={lat}&lng={lng}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `hexdispatch_trips_active{status="MATCHING"}` of an instance.
async fn trips_matching(http: &Http) -> f64 {
    let text = http.metrics().await;
    text.lines()
        .find(|l| l.starts_with("hexdispatch_trips_active{status=\"MATCHING\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[actix_rt::test]
async fn three_instances_share_one_map() {
    let Some(database) = postgres_database().await else {
        return;
    };
    let mut cluster = Cluster::start(database.clone()).await;
    let operator = cluster.http(0).token(Role::Operator, Uuid::now_v7());

    // Every instance answers `owner` alike, and every instance owns some of the map.
    let mut owned_by: Vec<((f64, f64), usize)> = Vec::new();
    for p in points() {
        let first = owner(&cluster.http(0), &operator, p).await;
        for i in 1..3 {
            assert_eq!(owner(&cluster.http(i), &operator, p).await, first, "{p:?}");
        }
        let i = Cluster::index_of(first["instance"].as_str().unwrap());
        assert_eq!(
            first["url"],
            format!("http://127.0.0.1:{}", cluster.ports[i]).as_str()
        );
        owned_by.push((p, i));
    }
    for (i, id) in IDS.iter().enumerate() {
        assert!(owned_by.iter().any(|(_, o)| *o == i), "{id} owns nothing");
    }

    // A trip requested on an instance that does not own its pickup runs on the owner, and
    // every instance reaches it.
    let (pickup, b) = owned_by[0];
    let (a, c) = ((b + 1) % 3, (b + 2) % 3);
    let driver = Uuid::now_v7();
    let driver_token = cluster
        .http(b)
        .driver_at(driver, pickup.0 + 0.001, pickup.1)
        .await;
    let rider = cluster.http(a).token(Role::Rider, Uuid::now_v7());
    let (status, nearby, handled) = cluster
        .http(a)
        .call_handled(
            "GET",
            &format!("/api/locations/nearby?lat={}&lng={}", pickup.0, pickup.1),
            &rider,
            None,
        )
        .await;
    assert_eq!((status, handled.as_str()), (200, IDS[b]), "{nearby}");
    assert!(
        nearby.to_string().contains(&driver.to_string()),
        "the owner's driver is listed through another instance: {nearby}"
    );
    let (status, body, handled) = cluster
        .http(a)
        .call_handled(
            "POST",
            "/api/trips",
            &rider,
            Some(json!({
                "origin": {"lat": pickup.0, "lng": pickup.1},
                "destination": {"lat": pickup.0 + 0.02, "lng": pickup.1 + 0.02},
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        handled, IDS[b],
        "the owner of the pickup handled the request"
    );
    let trip_id = body["trip_id"].as_str().unwrap().to_owned();
    let offered = cluster.http(b).offer_of(driver, &driver_token).await;
    assert_eq!(offered, trip_id);
    let path = format!("/api/trips/{trip_id}");
    let (status, body, handled) = cluster
        .http(c)
        .call_handled("PUT", &format!("{path}/accept"), &driver_token, None)
        .await;
    assert_eq!((status, handled.as_str()), (200, IDS[b]), "{body}");
    let (status, seen, handled) = cluster
        .http(c)
        .call_handled("GET", &path, &rider, None)
        .await;
    assert_eq!((status, handled.as_str()), (200, IDS[b]), "{seen}");
    let pin = seen["start_pin"].as_str().unwrap().to_owned();
    let (status, body) = cluster
        .http(a)
        .call(
            "PUT",
            &format!("{path}/start"),
            &driver_token,
            Some(json!({"pin": pin})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .http(c)
        .call("PUT", &format!("{path}/complete"), &driver_token, None)
        .await;
    assert_eq!(status, 200, "{body}");
    for (i, id) in IDS.iter().enumerate() {
        let trip = cluster.http(i).trip(&rider, &trip_id).await;
        assert_eq!(trip["status"], "TRIP_COMPLETED", "through {id}");
    }

    // A nearby query reaches across a region boundary into another instance's drivers.
    let (near_pickup, x, across, y) = across_a_boundary(cluster.ports);
    let neighbour = Uuid::now_v7();
    let neighbour_token = cluster
        .http(y)
        .driver_at(neighbour, across.0, across.1)
        .await;
    for asked in 0..3 {
        let (status, nearby, handled) = cluster
            .http(asked)
            .call_handled(
                "GET",
                &format!(
                    "/api/locations/nearby?lat={}&lng={}&radius=2000",
                    near_pickup.0, near_pickup.1
                ),
                &rider,
                None,
            )
            .await;
        assert_eq!((status, handled.as_str()), (200, IDS[x]), "{nearby}");
        let listed = &nearby["drivers"][0];
        assert_eq!(
            listed["driver_id"],
            neighbour.to_string().as_str(),
            "{nearby}"
        );
        let d = listed["distance_m"].as_f64().unwrap();
        assert!((400.0..800.0).contains(&d), "{d}");
    }

    // A driver on a socket crossing into another instance's region is told to move there, and
    // is online there when it reconnects; it is listed once, at its new position.
    let mover = Uuid::now_v7();
    let mover_token = cluster.http(x).token(Role::Driver, mover);
    let ws = |i: usize| format!("ws://127.0.0.1:{}/ws/driver", cluster.ports[i]);
    let mut socket = driver_socket(&ws(x), &mover_token).await;
    socket.recv_type("session").await;
    socket
        .send(json!({"type": "location", "lat": near_pickup.0, "lng": near_pickup.1}))
        .await;
    socket
        .send(json!({"type": "status", "status": "online"}))
        .await;
    let online = socket.recv_type("session").await;
    assert_eq!(online["status"], "online", "{online}");
    socket
        .send(json!({"type": "location", "lat": across.0 + 0.0005, "lng": across.1}))
        .await;
    let moved = socket.recv_type("moved").await;
    assert_eq!(moved["instance"], IDS[y], "{moved}");
    assert_eq!(moved["url"], ws(y).as_str());
    assert_eq!(socket.expect_close().await, Some(4002));
    let mut socket = driver_socket(moved["url"].as_str().unwrap(), &mover_token).await;
    let session = socket.recv_type("session").await;
    assert_eq!(
        session["status"], "online",
        "its status came along: {session}"
    );
    let (status, listed) = cluster
        .http(x)
        .call(
            "GET",
            &format!(
                "/api/locations/nearby?lat={}&lng={}&radius=5000&limit=50",
                across.0, across.1
            ),
            &rider,
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let entries: Vec<&Value> = listed["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["driver_id"] == mover.to_string().as_str())
        .collect();
    assert_eq!(entries.len(), 1, "{listed}");
    assert!((entries[0]["lat"].as_f64().unwrap() - (across.0 + 0.0005)).abs() < 1e-6);
    socket.close().await;

    // A REST-only driver crossing the boundary is handed over too, and its calls reach it
    // through any instance.
    let walker = Uuid::now_v7();
    let walker_token = cluster
        .http(x)
        .driver_at(walker, near_pickup.0, near_pickup.1)
        .await;
    let (status, body) = cluster
        .http(x)
        .call(
            "PUT",
            &format!("/api/drivers/{walker}/location"),
            &walker_token,
            Some(json!({"lat": across.0 - 0.0005, "lng": across.1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut seen = Value::Null;
    for _ in 0..50 {
        let (status, me, handled) = cluster
            .http(x)
            .call_handled(
                "GET",
                &format!("/api/drivers/{walker}"),
                &walker_token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{me}");
        seen = me;
        if handled == IDS[y] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen["status"], "online", "{seen}");
    let (status, seen, handled) = cluster
        .http(3 - x - y)
        .call_handled(
            "GET",
            &format!("/api/drivers/{walker}"),
            &walker_token,
            None,
        )
        .await;
    assert_eq!((status, handled.as_str()), (200, IDS[y]), "{seen}");

    // An offer crosses the boundary: a trip run by x offers y's drivers, and the one accepting
    // on its own instance wins, then moves to the trip's instance.
    let z = 3 - x - y;
    let mut socket = driver_socket(&ws(y), &mover_token).await;
    let session = socket.recv_type("session").await;
    assert_eq!(session["status"], "online", "{session}");
    let trip_body = |p: (f64, f64)| {
        json!({"origin": {"lat": p.0, "lng": p.1},
               "destination": {"lat": p.0 - 0.02, "lng": p.1}})
    };
    let (status, body, handled) = cluster
        .http(z)
        .call_handled("POST", "/api/trips", &rider, Some(trip_body(near_pickup)))
        .await;
    assert_eq!((status, handled.as_str()), (201, IDS[x]), "{body}");
    let crossing = body["trip_id"].as_str().unwrap().to_owned();
    let offer = socket.recv_type("offer").await;
    assert_eq!(offer["trip_id"], crossing.as_str(), "{offer}");
    socket
        .send(json!({"type": "accept", "trip_id": crossing}))
        .await;
    let assigned = socket.recv_type("trip_assigned").await;
    assert_eq!(assigned["trip"]["trip_id"], crossing.as_str(), "{assigned}");
    let moved = socket.recv_type("moved").await;
    assert_eq!(
        moved["instance"], IDS[x],
        "a driver on a trip lives with the trip"
    );
    assert_eq!(socket.expect_close().await, Some(4002));
    let mut socket = driver_socket(moved["url"].as_str().unwrap(), &mover_token).await;
    let session = socket.recv_type("session").await;
    assert_eq!(session["trip"]["trip_id"], crossing.as_str(), "{session}");
    let seen = cluster.http(y).trip(&rider, &crossing).await;
    assert_eq!(seen["status"], "ACCEPTED", "{seen}");
    assert_eq!(seen["driver_id"], mover.to_string().as_str(), "{seen}");
    // The accept again, as after an answer lost on its way back: the same answer, no change.
    let operator = cluster.http(x).token(Role::Operator, Uuid::now_v7());
    let now = hexdispatch::clock::now_ms();
    let repeat = json!({
        "trip_id": crossing,
        "expires_ms": now + 10_000,
        "terms": {"trip_id": crossing, "pickup": seen["origin"], "dropoff": seen["destination"],
                  "fare_estimate": seen["fare_estimate"], "vehicle_type": seen["vehicle_type"]},
        "driver": {"driver_id": mover, "vehicle_type": "economy", "online": true,
                   "lat": across.0, "lng": across.1, "ts_ms": now, "received_ms": now},
    });
    let (status, answer) = cluster
        .http(x)
        .call("POST", "/api/cluster/accepts", &operator, Some(repeat))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "won", "{answer}");
    assert_eq!(answer["trip"]["trip_id"], crossing.as_str());
    socket.close().await;

    // Contention across the boundary: four trips on x's side reach for y's two REST drivers,
    // which accept whatever they are offered, through any instance: each driver wins one trip
    // and no trip gets two drivers.
    let mut contested = Vec::new();
    for i in 0..4_u32 {
        let p = (near_pickup.0 - 0.001 * f64::from(i), near_pickup.1);
        let (status, body) = cluster
            .http(i as usize % 3)
            .call("POST", "/api/trips", &rider, Some(trip_body(p)))
            .await;
        assert_eq!(status, 201, "{body}");
        contested.push(body["trip_id"].as_str().unwrap().to_owned());
    }
    let drivers = [
        (walker, walker_token.clone()),
        (neighbour, neighbour_token.clone()),
    ];
    let mut won: Vec<(Uuid, String)> = Vec::new();
    for round in 0..200_usize {
        for (driver, token) in &drivers {
            if won.iter().any(|(d, _)| d == driver) {
                continue;
            }
            let (_, me) = cluster
                .http(round % 3)
                .call("GET", &format!("/api/drivers/{driver}"), token, None)
                .await;
            if let Some(trip) = me["current_trip"].as_str() {
                won.push((*driver, trip.to_owned()));
                continue;
            }
            if let Some(trip) = me["offer"]["trip_id"].as_str() {
                let _ = cluster
                    .http((round + 1) % 3)
                    .call("PUT", &format!("/api/trips/{trip}/accept"), token, None)
                    .await;
            }
        }
        if won.len() == drivers.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(won.len(), 2, "each driver won a trip: {won:?}");
    assert_ne!(won[0].1, won[1].1, "two drivers, two trips");
    let mut assigned = 0;
    for trip in &contested {
        let t = cluster.http(z).trip(&rider, trip).await;
        match t["status"].as_str() {
            Some("ACCEPTED") => {
                assigned += 1;
                let driver = t["driver_id"].as_str().unwrap();
                assert!(
                    won.iter()
                        .any(|(d, w)| d.to_string() == driver && w == trip),
                    "{t}"
                );
            }
            Some("MATCHING") => {
                let (status, body) = cluster
                    .http(x)
                    .call("DELETE", &format!("/api/trips/{trip}"), &rider, None)
                    .await;
                assert_eq!(status, 200, "{body}");
            }
            other => panic!("unexpected status {other:?}: {t}"),
        }
    }
    assert_eq!(assigned, 2);

    // A trip waiting for a driver, then its owner is killed: the other instances go on serving
    // their own regions and say the trip's owner is unavailable; the owner comes back with it.
    let empty = owned_by
        .iter()
        .find(|(p, o)| *o == b && *p != pickup)
        .map(|(p, _)| *p)
        .expect("the owner has a second region");
    let (status, body) = cluster.http(a).request_trip(&rider, empty.0, empty.1).await;
    assert_eq!(status, 201, "{body}");
    let waiting = body["trip_id"].as_str().unwrap().to_owned();
    cluster.engines[b].take().expect("running").kill();
    let (status, body) = cluster
        .http(a)
        .call("GET", &format!("/api/trips/{waiting}"), &rider, None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "instance_unavailable");
    let elsewhere = owned_by
        .iter()
        .find(|(_, o)| *o == c)
        .map(|(p, _)| *p)
        .unwrap();
    let (status, body, handled) = cluster
        .http(a)
        .call_handled(
            "POST",
            "/api/trips",
            &rider,
            Some(json!({
                "origin": {"lat": elsewhere.0, "lng": elsewhere.1},
                "destination": {"lat": elsewhere.0 + 0.02, "lng": elsewhere.1},
            })),
        )
        .await;
    assert_eq!((status, handled.as_str()), (201, IDS[c]), "{body}");
    let restarted = EngineProcess::start_on(&cluster.dir, &cluster.env(b), cluster.ports[b]).await;
    cluster.engines[b] = Some(restarted);
    // Back on its owner alone: the restarted instance resumed its own waiting trip and not the
    // one waiting in another instance's region, and the trip matches again.
    assert_eq!(
        trips_matching(&cluster.http(b)).await,
        1.0,
        "only the trips of its own regions"
    );
    let late = Uuid::now_v7();
    let late_token = cluster
        .http(b)
        .driver_at(late, empty.0 + 0.001, empty.1)
        .await;
    assert_eq!(cluster.http(b).offer_of(late, &late_token).await, waiting);
    let trip = cluster.http(c).trip(&rider, &waiting).await;
    assert_eq!(trip["status"], "MATCHING", "{trip}");

    for engine in cluster.engines.iter_mut().filter_map(Option::take) {
        drop(engine);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop_database(&database).await;
    cluster.clean_broker().await;
    let _ = std::fs::remove_dir_all(&cluster.dir);
}

#[actix_rt::test]
async fn a_handoff_takes_a_driver_on_and_refuses_bad_input() {
    let app = spawn_app().await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let now = hexdispatch::clock::now_ms();
    let good = json!({"driver_id": driver, "vehicle_type": "economy", "online": true,
                      "lat": 48.85, "lng": 2.35, "ts_ms": now, "received_ms": now});
    let mut cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "malformed"),
        ("[]".into(), "not an object"),
    ];
    for (field, value) in [
        ("driver_id", json!("not-a-uuid")),
        ("lat", json!(95.0)),
        ("lng", json!("east")),
        ("online", json!(null)),
    ] {
        let mut body = good.clone();
        body[field] = value;
        cases.push((body.to_string(), field));
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("vehicle_type");
    cases.push((missing.to_string(), "vehicle_type missing"));
    for (body, what) in cases {
        let r = app
            .post("/api/cluster/handoff", Some(&operator), &body)
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{what}");
    }
    let r = app
        .post("/api/cluster/handoff", Some(&operator), &good.to_string())
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let me = app
        .get(&format!("/api/drivers/{driver}"), Some(&operator))
        .await;
    assert_eq!(me.body["status"], "online", "{}", me.body);
    let held = app
        .get(&format!("/api/cluster/drivers/{driver}"), Some(&operator))
        .await;
    assert_eq!(held.status, 204, "the instance holds the driver it took on");
    let elsewhere = app
        .get(
            &format!("/api/cluster/drivers/{}", Uuid::now_v7()),
            Some(&operator),
        )
        .await;
    assert_eq!(elsewhere.status, 404);
    assert_eq!(elsewhere.body["error"]["code"], "driver_not_here");
    let bad = app
        .get("/api/cluster/drivers/not-a-uuid", Some(&operator))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    app.handle.stop().await;
}

#[actix_rt::test]
async fn calls_between_instances_refuse_bad_input() {
    use crate::authz::{cluster_accept, cluster_offer};
    let app = spawn_app().await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let (driver, trip) = (Uuid::now_v7(), Uuid::now_v7());
    let mut stranger = cluster_offer(driver, trip);
    stranger["from"] = json!("nobody");
    let mut mismatch = cluster_accept(driver, trip);
    mismatch["terms"]["trip_id"] = json!(Uuid::now_v7());
    let mut far = cluster_accept(driver, trip);
    far["driver"]["lat"] = json!(91.0);
    let bad: Vec<(&str, String)> = vec![
        ("/api/cluster/offers", "{".into()),
        ("/api/cluster/offers", json!({"driver_id": driver}).to_string()),
        ("/api/cluster/offers", stranger.to_string()),
        ("/api/cluster/withdrawals", json!({"driver_id": driver, "trip_id": trip}).to_string()),
        (
            "/api/cluster/withdrawals",
            json!({"driver_id": driver, "trip_id": trip, "reason": "bored"}).to_string(),
        ),
        ("/api/cluster/declines", json!({"trip_id": "x", "driver_id": driver}).to_string()),
        ("/api/cluster/accepts", "[]".into()),
        ("/api/cluster/accepts", mismatch.to_string()),
        ("/api/cluster/accepts", far.to_string()),
        ("/api/cluster/free", json!({"driver_id": driver}).to_string()),
        (
            "/api/cluster/free",
            json!({"driver_id": driver, "lat": 1.0, "lng": 1.0, "vehicle_type": "", "from": "local"})
                .to_string(),
        ),
        (
            "/api/cluster/free",
            json!({"driver_id": driver, "lat": 1.0, "lng": 1.0, "vehicle_type": "economy", "from": "x"})
                .to_string(),
        ),
    ];
    for (path, body) in bad {
        let r = app.post(path, Some(&operator), &body).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{path}");
    }
    // Well-formed calls about drivers and trips this instance does not have change nothing.
    let r = app
        .post(
            "/api/cluster/offers",
            Some(&operator),
            &cluster_offer(driver, trip).to_string(),
        )
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!("unreachable")));
    let r = app
        .post(
            "/api/cluster/accepts",
            Some(&operator),
            &cluster_accept(driver, trip).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"outcome": "lost", "reason": "expired"}));
    let held = app
        .get(&format!("/api/cluster/drivers/{driver}"), Some(&operator))
        .await;
    assert_eq!(held.status, 404, "a lost accept leaves no driver behind");
    app.handle.stop().await;
}

#[actix_rt::test]
async fn an_offer_from_another_instance_ends_at_its_deadline_on_its_own() {
    let app = crate::helpers::spawn_app_with(|s| s.matching.offer_timeout_s = 0.3).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let (driver, mut socket) = app.online_driver((48.85, 2.35)).await;
    let trip = Uuid::now_v7();
    // From "local" (this instance's own id), so that nothing else answers for the trip.
    let offer = crate::authz::cluster_offer(driver, trip);
    let mut offer = offer;
    offer["expires_ms"] = json!(i64::MAX);
    let r = app
        .post("/api/cluster/offers", Some(&operator), &offer.to_string())
        .await;
    assert_eq!((r.status, r.body.clone()), (200, json!("delivered")));
    let shown = socket.recv_type("offer").await;
    assert!(
        shown["expires_in_ms"].as_i64().unwrap() <= 300,
        "a peer's deadline is kept within one offer timeout: {shown}"
    );
    let ended = socket
        .gets_within("offer_cancelled", Duration::from_secs(5))
        .await
        .expect("the offer ends without a withdrawal");
    assert_eq!(ended["reason"], "expired");
    assert_eq!(ended["trip_id"], trip.to_string().as_str());
    // Free again: the next offer reaches the driver.
    let again = app
        .post(
            "/api/cluster/offers",
            Some(&operator),
            &crate::authz::cluster_offer(driver, Uuid::now_v7()).to_string(),
        )
        .await;
    assert_eq!(again.body, json!("delivered"));
    app.handle.stop().await;
}
