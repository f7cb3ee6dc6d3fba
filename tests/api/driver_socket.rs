use std::time::Duration;

use futures_util::future::join_all;
use hexdispatch::dispatch::Role;
use hexdispatch::geo::LatLng;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Incoming, bad_tokens, spawn_app, spawn_app_with};

#[actix_rt::test]
async fn a_driver_socket_opens_with_a_session_frame_and_streams_into_nearby() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    let session = ws.recv_json().await;
    assert_eq!(session["type"], "session");
    assert_eq!(session["driver_id"], driver.to_string());
    assert_eq!(session["status"], "offline");
    assert!(session["trip"].is_null());

    ws.send(json!({"type": "status", "status": "online", "ref": "s1"}))
        .await;
    let reply = ws.recv_json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["status"].as_str()),
        (Some("session"), Some("online"))
    );
    assert_eq!(reply["ref"], "s1", "the reply echoes the ref");

    ws.send(json!({"type": "location", "lat": 51.5074, "lng": -0.1278, "heading": 45.0}))
        .await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut listed = false;
    for _ in 0..50 {
        let r = app
            .nearby(&rider, "lat=51.5074&lng=-0.1278&radius=100")
            .await;
        if r.body["drivers"][0]["driver_id"] == driver.to_string() {
            assert_eq!(r.body["drivers"][0]["heading"], 45.0);
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(listed, "the streamed position reaches the index");
}

#[actix_rt::test]
async fn bad_frames_get_error_frames_and_the_session_stays_open() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    ws.recv_json().await;
    let trip = Uuid::now_v7();
    let cases: Vec<(String, &str, Option<serde_json::Value>)> = vec![
        ("{not json".into(), "invalid_json", None),
        ("[1,2]".into(), "invalid_field", None),
        ("42".into(), "invalid_field", None),
        (
            json!({"ref": 1}).to_string(),
            "missing_field",
            Some(json!(1)),
        ),
        (
            json!({"type": "fly", "ref": "a"}).to_string(),
            "unknown_type",
            Some(json!("a")),
        ),
        (
            json!({"type": "status", "ref": [1]}).to_string(),
            "missing_field",
            Some(json!([1])),
        ),
        (
            json!({"type": "status", "status": "asleep", "ref": {"k": "v"}}).to_string(),
            "invalid_field",
            Some(json!({"k": "v"})),
        ),
        (
            json!({"type": "status", "status": 1}).to_string(),
            "invalid_field",
            None,
        ),
        (
            json!({"type": "location", "lng": 1, "ref": 2}).to_string(),
            "missing_field",
            Some(json!(2)),
        ),
        (
            json!({"type": "location", "lat": 1}).to_string(),
            "missing_field",
            None,
        ),
        (
            json!({"type": "location", "lat": 91, "lng": 1, "ref": 3}).to_string(),
            "out_of_range",
            Some(json!(3)),
        ),
        (
            json!({"type": "location", "lat": -91, "lng": 1}).to_string(),
            "out_of_range",
            None,
        ),
        (
            json!({"type": "location", "lat": 1, "lng": 181}).to_string(),
            "out_of_range",
            None,
        ),
        (
            json!({"type": "location", "lat": 1, "lng": -181}).to_string(),
            "out_of_range",
            None,
        ),
        (
            r#"{"type":"location","lat":NaN,"lng":1}"#.into(),
            "invalid_json",
            None,
        ),
        (
            json!({"type": "location", "lat": "x", "lng": 1, "ref": 4}).to_string(),
            "invalid_field",
            Some(json!(4)),
        ),
        (
            json!({"type": "location", "lat": 1, "lng": 1, "heading": -1}).to_string(),
            "out_of_range",
            None,
        ),
        (
            json!({"type": "location", "lat": 1, "lng": 1, "speed_mps": 1000}).to_string(),
            "out_of_range",
            None,
        ),
        (json!({"type": "accept"}).to_string(), "missing_field", None),
        (
            json!({"type": "decline", "trip_id": "abc"}).to_string(),
            "invalid_field",
            None,
        ),
        (
            json!({"type": "start", "trip_id": trip}).to_string(),
            "missing_field",
            None,
        ),
        (
            json!({"type": "start", "trip_id": trip, "pin": "12345"}).to_string(),
            "invalid_field",
            None,
        ),
        (
            json!({"type": "accept", "trip_id": trip, "ref": 5}).to_string(),
            "trip_not_found",
            Some(json!(5)),
        ),
        (
            json!({"type": "arrived", "trip_id": trip}).to_string(),
            "trip_not_found",
            None,
        ),
        (
            json!({"type": "start", "trip_id": trip, "pin": "1234"}).to_string(),
            "trip_not_found",
            None,
        ),
        (
            json!({"type": "complete", "trip_id": trip}).to_string(),
            "trip_not_found",
            None,
        ),
        (
            json!({"type": "cancel", "trip_id": trip}).to_string(),
            "trip_not_found",
            None,
        ),
    ];
    for (text, code, reference) in cases {
        ws.send_text(text.clone()).await;
        let reply = ws.recv_json().await;
        assert_eq!(reply["type"], "error", "{text}: {reply}");
        assert_eq!(reply["code"], code, "{text}: {reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert_eq!(reply.get("ref").cloned(), reference, "{text}: ref echo");
    }
    ws.send_binary(vec![1, 2, 3]).await;
    assert_eq!(ws.recv_json().await["code"], "unsupported_frame");
    // Still open and still the same driver, unchanged by the bad frames.
    ws.send(json!({"type": "status", "status": "online", "ref": "alive"}))
        .await;
    let reply = ws.recv_json().await;
    assert_eq!(
        (reply["ref"].as_str(), reply["status"].as_str()),
        (Some("alive"), Some("online"))
    );
    assert!(
        reply["last_position"].is_null(),
        "no bad location frame was applied"
    );
}

#[actix_rt::test]
async fn sockets_with_bad_credentials_or_the_wrong_role_close_with_1008() {
    let app = spawn_app().await;
    for (name, token) in bad_tokens(Uuid::now_v7(), Role::Driver) {
        let mut ws = app.driver_socket_query(token.as_deref()).await;
        assert_eq!(ws.expect_close().await, Some(1008), "{name}");
    }
    for role in [Role::Rider, Role::Operator] {
        let mut ws = app.driver_socket(&app.token(role, Uuid::now_v7())).await;
        assert_eq!(
            ws.expect_close().await,
            Some(1008),
            "{role:?} on /ws/driver"
        );
    }
}

#[actix_rt::test]
async fn the_token_query_parameter_works_for_browsers() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let mut ws = app
        .driver_socket_query(Some(&app.driver_token(driver, "economy")))
        .await;
    let session = ws.recv_json().await;
    assert_eq!(session["driver_id"], driver.to_string());
}

#[actix_rt::test]
async fn frames_over_16_kib_close_the_socket_with_1009() {
    let app = spawn_app().await;
    let mut ws = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    ws.recv_json().await;
    let big =
        json!({"type": "status", "status": "online", "pad": "x".repeat(17 * 1024)}).to_string();
    ws.send_text(big).await;
    assert_eq!(ws.expect_close().await, Some(1009));
}

#[actix_rt::test]
async fn a_frame_just_under_the_limit_is_accepted() {
    let app = spawn_app().await;
    let mut ws = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    ws.recv_json().await;
    let frame =
        json!({"type": "status", "status": "online", "ref": 1, "pad": "x".repeat(15 * 1024)})
            .to_string();
    assert!(frame.len() < 16 * 1024);
    ws.send_text(frame).await;
    assert_eq!(ws.recv_json().await["status"], "online");
}

#[actix_rt::test]
async fn a_reconnecting_driver_attaches_to_its_existing_actor() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let mut ws = app.driver_socket(&token).await;
    ws.recv_json().await;
    ws.send(json!({"type": "status", "status": "online"})).await;
    ws.recv_json().await;
    ws.send(json!({"type": "location", "lat": 41.39, "lng": 2.17}))
        .await;
    ws.send(json!({"type": "status", "status": "online", "ref": "sync"}))
        .await;
    assert_eq!(ws.recv_json().await["last_position"]["lat"], 41.39);
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut again = app.driver_socket(&token).await;
    let session = again.recv_json().await;
    assert_eq!(session["type"], "session");
    assert_eq!(
        session["status"], "online",
        "the engine kept the driver online"
    );
    assert_eq!(session["last_position"]["lat"], 41.39);
    assert_eq!(session["connected"], true);
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let r = app.nearby(&rider, "lat=41.39&lng=2.17").await;
    assert_eq!(r.body["drivers"][0]["driver_id"], driver.to_string());
    assert_eq!(
        app.core.drivers.len(),
        1,
        "one actor for the driver across sockets"
    );
}

#[actix_rt::test]
async fn a_newer_socket_replaces_an_older_one() {
    let app = spawn_app().await;
    let token = app.driver_token(Uuid::now_v7(), "economy");
    let mut first = app.driver_socket(&token).await;
    first.recv_json().await;
    let mut second = app.driver_socket(&token).await;
    second.recv_json().await;
    assert_eq!(first.expect_close().await, Some(4000));
    second
        .send(json!({"type": "status", "status": "online", "ref": 1}))
        .await;
    assert_eq!(second.recv_json().await["connected"], true);
}

#[actix_rt::test]
async fn the_server_pings_and_drops_a_silent_socket() {
    let app = spawn_app_with(|s| {
        s.ws.ping_interval_s = 0.1;
        s.ws.idle_timeout_s = 0.4;
    })
    .await;
    let token = app.driver_token(Uuid::now_v7(), "economy");
    let mut silent = app.driver_socket(&token).await;
    silent.recv_json().await;
    match silent.recv_within(Duration::from_secs(3), false).await {
        Incoming::Close(code, reason) => {
            assert_eq!((code, reason.as_str()), (Some(1000), "idle timeout"))
        }
        other => panic!("expected an idle close, got {other:?}"),
    }

    let mut lively = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    lively.recv_json().await;
    // Answering pings for three idle periods keeps the socket open.
    let until = tokio::time::Instant::now() + Duration::from_millis(1_200);
    while tokio::time::Instant::now() < until {
        if let Ok(frame) = tokio::time::timeout(
            Duration::from_millis(50),
            lively.recv_within(Duration::from_secs(2), true),
        )
        .await
        {
            panic!("unexpected frame on a healthy socket: {frame:?}");
        }
    }
    lively
        .send(json!({"type": "status", "status": "online", "ref": 1}))
        .await;
    assert_eq!(lively.recv_json().await["ref"], 1);
}

/// 200 drivers stream positions over real sockets; every nearby answer equals brute force.
#[actix_rt::test]
async fn two_hundred_socket_drivers_and_nearby_equals_brute_force() {
    let app = spawn_app().await;
    let mut rng = StdRng::seed_from_u64(2026);
    let (lat0, lng0) = (37.7749, -122.4194);
    let mut fleet = Vec::new();
    for i in 0..200 {
        let vehicle = if i % 4 == 0 { "xl" } else { "economy" };
        let point = LatLng::new(
            lat0 + rng.random_range(-0.05..0.05),
            lng0 + rng.random_range(-0.06..0.06),
        )
        .unwrap();
        fleet.push((Uuid::now_v7(), vehicle, point));
    }
    let tokens: Vec<String> = fleet
        .iter()
        .map(|(id, vehicle, _)| app.driver_token(*id, vehicle))
        .collect();
    let mut sockets = join_all(tokens.iter().map(|t| app.driver_socket(t))).await;
    for ((_, _, point), ws) in fleet.iter().zip(sockets.iter_mut()) {
        ws.recv_json().await;
        ws.send(json!({"type": "status", "status": "online"})).await;
        ws.recv_json().await;
        ws.send(json!({"type": "location", "lat": point.lat(), "lng": point.lng()}))
            .await;
    }
    // A status round trip per socket is a barrier: the actor handled the location before it.
    for ws in &mut sockets {
        ws.send(json!({"type": "status", "status": "online", "ref": "sync"}))
            .await;
        assert_eq!(ws.recv_json().await["ref"], "sync");
    }
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut checked_nonempty = 0;
    for i in 0..60 {
        let q = LatLng::new(
            lat0 + rng.random_range(-0.06..0.06),
            lng0 + rng.random_range(-0.07..0.07),
        )
        .unwrap();
        let radius: f64 = rng.random_range(100.0..10_000.0);
        let limit: usize = rng.random_range(1..=20);
        let vehicle = (i % 3 == 0).then_some("xl");
        let mut query = format!(
            "lat={}&lng={}&radius={radius}&limit={limit}",
            q.lat(),
            q.lng()
        );
        if let Some(v) = vehicle {
            query.push_str(&format!("&vehicle_type={v}"));
        }
        let r = app.nearby(&rider, &query).await;
        assert_eq!(r.status, 200);
        let got: Vec<(String, f64)> = r.body["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["driver_id"].as_str().unwrap().to_string(),
                    d["distance_m"].as_f64().unwrap(),
                )
            })
            .collect();
        let mut want: Vec<(String, f64)> = fleet
            .iter()
            .filter(|(_, v, _)| vehicle.is_none_or(|want| want == *v))
            .map(|(id, _, p)| (id.to_string(), p.distance_m(q)))
            .filter(|(_, d)| *d <= radius)
            .collect();
        want.sort_by(|a, b| a.1.total_cmp(&b.1));
        want.truncate(limit);
        assert_eq!(got.len(), want.len(), "query {query}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0, "query {query}");
            assert!((g.1 - w.1).abs() < 1e-6, "query {query}");
        }
        checked_nonempty += usize::from(!want.is_empty());
    }
    assert!(checked_nonempty > 30, "most queries had drivers to compare");
}

#[actix_rt::test]
async fn a_graceful_stop_closes_sockets_with_going_away() {
    let app = spawn_app().await;
    let mut ws = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    ws.recv_json().await;
    let handle = app.handle.clone();
    actix_rt::spawn(async move { handle.stop().await });
    assert_eq!(ws.expect_close().await, Some(1001));
}

/// The value of one series in `/metrics` text (0 when absent).
fn series(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn a_peer_that_vanishes_is_counted_as_gone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let before = app
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap_or("")
        .to_owned();
    let gone = |m: &str| {
        series(
            m,
            "hexdispatch_ws_disconnects_total",
            &["role=\"driver\"", "reason=\"gone\""],
        )
    };
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let upgrade = format!(
        "GET /ws/driver?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut buf = vec![0_u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The connection is reset, as when a phone loses its network: no close frame, no FIN.
    // A zero linger resets at once; it never blocks the thread on drop.
    #[allow(deprecated)]
    tcp.set_linger(Some(Duration::ZERO)).unwrap();
    drop(tcp);
    let mut counted = false;
    for _ in 0..40 {
        let now = app
            .get("/metrics", None)
            .await
            .body
            .as_str()
            .unwrap_or("")
            .to_owned();
        if gone(&now) > gone(&before) {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the vanished peer is counted as gone");
    app.handle.stop().await;
}

#[actix_rt::test]
async fn a_dropped_driver_stays_listed_for_the_grace_then_hides_until_it_is_back() {
    let app = spawn_app_with(|s| s.driver.reconnect_grace_s = 0.4).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let (driver, ws) = app.online_driver((48.8566, 2.3522)).await;
    let query = "lat=48.8566&lng=2.3522&radius=2000&limit=5";
    let listed = |body: &serde_json::Value| {
        body["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["driver_id"] == driver.to_string())
    };
    assert!(listed(&app.nearby(&rider, query).await.body));
    // The app loses its network.
    ws.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        listed(&app.nearby(&rider, query).await.body),
        "within the grace the driver is still on riders' maps"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !listed(&app.nearby(&rider, query).await.body),
        "past the grace a driver nobody can reach is hidden"
    );
    let me = app
        .get(
            &format!("/api/drivers/{driver}"),
            Some(&app.token(Role::Operator, Uuid::now_v7())),
        )
        .await;
    assert_eq!(
        me.body["status"], "online",
        "hidden, not offline: {}",
        me.body
    );
    // It comes back: listed again at once.
    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    assert_eq!(ws.recv_json().await["type"], "session");
    let mut back = false;
    for _ in 0..20 {
        if listed(&app.nearby(&rider, query).await.body) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "a driver that reconnects is listed again");
    app.handle.stop().await;
}

/// RFC 6455 §7.1.1: after the close handshake the server closes the TCP connection at once. A
/// client that waits for the server's FIN (as the RFC asks it to) is not held: the FIN arrives
/// well before the one second the HTTP layer would otherwise linger for.
#[actix_rt::test]
async fn the_server_closes_the_tcp_connection_at_once_after_the_close_handshake() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::io::AsyncReadExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let app = spawn_app().await;
    for initiator in ["client", "server"] {
        let driver = Uuid::now_v7();
        let mut request = format!("{}/ws/driver", app.ws_address)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", app.driver_token(driver, "economy"))
                .parse()
                .unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(app.ws_address.trim_start_matches("ws://"))
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
        let session = ws.next().await.unwrap().unwrap();
        assert!(session.to_text().unwrap().contains("\"session\""));
        let begun = std::time::Instant::now();
        if initiator == "client" {
            ws.send(Message::Close(None)).await.unwrap();
        } else {
            // A frame the server refuses by closing: a binary frame over the size limit.
            ws.send(Message::Binary(vec![0_u8; 2 << 20].into()))
                .await
                .unwrap();
        }
        // Read up to the server's close frame (the handshake's other half) …
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
        if initiator == "server" {
            let _ = ws.send(Message::Close(None)).await;
        }
        // … then wait, as the RFC's client does, for the server's FIN on the raw connection.
        let mut rest = Vec::new();
        let eof =
            tokio::time::timeout(Duration::from_secs(3), ws.get_mut().read_to_end(&mut rest)).await;
        assert!(
            eof.is_ok(),
            "{initiator}: the server never closed the TCP connection"
        );
        let held = begun.elapsed();
        assert!(
            held < Duration::from_millis(600),
            "{initiator}: the server held the TCP connection {held:?} after the close handshake"
        );
    }
    app.handle.stop().await;
}
