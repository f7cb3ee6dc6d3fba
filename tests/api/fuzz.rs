//! Hostile input through the real server, bounded: random and mutated JSON bodies on every route
//! that takes one, and random frames on a driver socket. Nothing may answer 5xx, every refusal uses
//! the error envelope, and the socket stays open.

use hexdispatch::dispatch::Role;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::spawn_app_with;

const CASES: usize = 120;

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random_range(-1e6..1e6)),
        4 => {
            json!(["NaN", "-0", "1e309", "", "🚕", "\u{0}", "' OR 1=1 --"][rng.random_range(0..7)])
        }
        5 => json!(
            (0..rng.random_range(0..50))
                .map(|_| rng.random::<char>())
                .collect::<String>()
        ),
        6 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "lat",
                "lng",
                "origin",
                "destination",
                "pin",
                "status",
                "amount",
                "email",
                "password",
                "role",
                "x",
            ];
            Value::Object(
                (0..rng.random_range(0..5))
                    .map(|_| {
                        (
                            keys[rng.random_range(0..keys.len())].to_owned(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// A valid body with one part broken, or noise.
fn mutate(rng: &mut StdRng, valid: &Value) -> String {
    match rng.random_range(0..5) {
        0 => random_value(rng, 0).to_string(),
        1 => (0..rng.random_range(0..200))
            .map(|_| rng.random::<u8>() as char)
            .collect(),
        2 => {
            let text = valid.to_string();
            let cut = rng.random_range(0..=text.len());
            text.get(..cut).unwrap_or("").to_owned()
        }
        _ => {
            let mut v = valid.clone();
            if let Some(object) = v.as_object_mut() {
                let keys: Vec<String> = object.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = &keys[rng.random_range(0..keys.len())];
                    if rng.random_bool(0.3) {
                        object.remove(key);
                    } else {
                        object.insert(key.clone(), random_value(rng, 1));
                    }
                }
            }
            v.to_string()
        }
    }
}

#[actix_rt::test]
async fn random_bodies_never_get_a_server_error() {
    let app = spawn_app_with(|s| {
        s.limits.auth_per_ip_per_minute = 100_000;
        s.limits.trips_per_rider_per_minute = 100_000;
        s.limits.trips_per_ip_per_minute = 100_000;
    })
    .await;
    let mut rng = StdRng::seed_from_u64(6);
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let driver_id = Uuid::now_v7();
    let driver = app.driver_token(driver_id, "economy");
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let point = json!({"lat": 48.85, "lng": 2.35});
    let trip = json!({"origin": point, "destination": point, "vehicle_type": "economy"});
    let routes: Vec<(&str, String, &str, Value)> = vec![
        ("POST", "/api/trips".into(), &rider, trip.clone()),
        ("POST", "/api/pricing/estimate".into(), &rider, trip.clone()),
        (
            "POST",
            "/api/auth/register".into(),
            "",
            json!({"role": "rider", "name": "a", "email": "a@b.co", "password": "12345678"}),
        ),
        (
            "POST",
            "/api/auth/login".into(),
            "",
            json!({"email": "a@b.co", "password": "12345678"}),
        ),
        (
            "POST",
            "/api/auth/refresh".into(),
            "",
            json!({"refresh_token": "x"}),
        ),
        (
            "PUT",
            format!("/api/drivers/{driver_id}/location"),
            &driver,
            json!({"lat": 1.0, "lng": 2.0, "heading": 3.0}),
        ),
        (
            "PUT",
            format!("/api/drivers/{driver_id}/status"),
            &driver,
            json!({"status": "online"}),
        ),
        (
            "PUT",
            format!("/api/trips/{}/start", Uuid::now_v7()),
            &driver,
            json!({"pin": "1234"}),
        ),
        (
            "POST",
            format!("/api/riders/{}/wallet/topup", Uuid::now_v7()),
            &operator,
            json!({"amount": {"amount": 100, "currency": "USD"}, "reference": "r"}),
        ),
    ];
    for (method, path, token, valid) in &routes {
        for case in 0..CASES {
            let body = mutate(&mut rng, valid);
            let token = (!token.is_empty()).then_some(*token);
            let r = app.request(method, path, token, Some(body.clone())).await;
            assert!(
                r.status < 500,
                "{method} {path} case {case} answered {}: {body:?} → {}",
                r.status,
                r.body
            );
            if r.status >= 400 {
                assert!(
                    r.body["error"]["code"].is_string(),
                    "{method} {path}: {body:?} → {}",
                    r.body
                );
            }
        }
    }
    assert_eq!(app.get("/health", None).await.status, 200, "still serving");
}

#[actix_rt::test]
async fn random_frames_never_close_a_driver_socket() {
    let app = spawn_app_with(|_| {}).await;
    let mut rng = StdRng::seed_from_u64(7);
    let mut ws = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    ws.recv_json().await;
    let valid = json!({"type": "location", "lat": 1.0, "lng": 2.0});
    for case in 0..CASES * 3 {
        let frame = mutate(&mut rng, &valid);
        ws.send_text(frame.clone()).await;
        ws.send(json!({"type": "status", "status": "offline", "ref": case}))
            .await;
        // Every bad frame gets an error frame; the status frame's answer shows the session is open.
        loop {
            let reply = ws.recv_json().await;
            if reply["ref"] == case && reply["type"] == "session" {
                break;
            }
            assert_eq!(reply["type"], "error", "case {case}: {frame:?} → {reply}");
        }
    }
}
