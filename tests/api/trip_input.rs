//! Bad, out-of-range and unauthorized input on every trip and pricing route and trip frame: a clear
//! error, and nothing changes.

use hexdispatch::dispatch::Role;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{Incoming, bad_tokens, spawn_app};

const TRIP: &str = r#"{"origin":{"lat":48.85,"lng":2.35},"destination":{"lat":48.86,"lng":2.36}}"#;

/// The valid trip body with `key` set to `value`.
fn with(key: &str, value: &str) -> String {
    let mut body: serde_json::Value = serde_json::from_str(TRIP).unwrap();
    body[key] = json!(value);
    body.to_string()
}

#[actix_rt::test]
async fn trip_requests_name_what_is_wrong() {
    let app = spawn_app().await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let big = format!(
        r#"{{"origin":{{"lat":1,"lng":1}},"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(String, u16, &str, &str)> = vec![
        ("".into(), 400, "invalid_json", "empty body"),
        ("{".into(), 400, "invalid_json", "truncated JSON"),
        ("[1,2]".into(), 400, "invalid_field", "an array"),
        (
            r#"{"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "missing_field",
            "no origin",
        ),
        (
            r#"{"origin":{"lat":1,"lng":1}}"#.into(),
            400,
            "missing_field",
            "no destination",
        ),
        (
            r#"{"origin":{"lng":1},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "missing_field",
            "no origin.lat",
        ),
        (
            r#"{"origin":{"lat":91,"lng":1},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "out_of_range",
            "lat 91",
        ),
        (
            r#"{"origin":{"lat":1,"lng":-181},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "out_of_range",
            "lng -181",
        ),
        (
            r#"{"origin":{"lat":"north","lng":1},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "invalid_field",
            "lat a string",
        ),
        (
            r#"{"origin":{"lat":NaN,"lng":1},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "invalid_json",
            "NaN",
        ),
        (
            r#"{"origin":{"lat":1e999,"lng":1},"destination":{"lat":1,"lng":1}}"#.into(),
            400,
            "invalid_json",
            "infinity",
        ),
        (
            with("vehicle_type", "space shuttle"),
            400,
            "invalid_field",
            "malformed vehicle type",
        ),
        (
            with("vehicle_type", "helicopter"),
            400,
            "invalid_field",
            "unknown vehicle type",
        ),
        (
            with("promo_code", "NOPE"),
            422,
            "promo_code_unknown",
            "unknown promotion",
        ),
        (
            with("idempotency_key", ""),
            400,
            "invalid_field",
            "empty idempotency key",
        ),
        (
            with("promo_code", &"P".repeat(65)),
            400,
            "invalid_field",
            "overlong promotion code",
        ),
        (big, 413, "payload_too_large", "body over 64 KiB"),
    ];
    for (body, status, code, what) in cases {
        let r = app.post("/api/trips", Some(&rider), &body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{what}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    assert!(app.core.trips.is_empty(), "no bad request created a trip");
}

/// (method, path, token, body, expected status, what the case is)
type Case<'a> = (&'a str, String, &'a str, Option<&'a str>, u16, &'a str);

#[actix_rt::test]
async fn trip_routes_refuse_missing_bad_and_wrong_role_tokens() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let created = app.post("/api/trips", Some(&rider), TRIP).await;
    assert_eq!(created.status, 201);
    let trip_id = created.body["trip_id"].as_str().unwrap().to_string();
    let driver = app.driver_token(Uuid::now_v7(), "economy");
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let stranger = app.token(Role::Rider, Uuid::now_v7());
    let t = |p: &str| format!("/api/trips/{trip_id}{p}");

    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/trips".into(),
            &driver,
            Some(TRIP),
            403,
            "a driver requests a trip",
        ),
        (
            "POST",
            "/api/trips".into(),
            &operator,
            Some(TRIP),
            403,
            "an operator requests a trip",
        ),
        (
            "GET",
            t(""),
            &stranger,
            None,
            403,
            "another rider reads the trip",
        ),
        (
            "GET",
            t(""),
            &driver,
            None,
            403,
            "a driver not on the trip reads it",
        ),
        ("GET", t(""), &operator, None, 200, "an operator reads it"),
        (
            "GET",
            t("/events"),
            &driver,
            None,
            403,
            "a driver reads the events",
        ),
        (
            "GET",
            t("/events"),
            &stranger,
            None,
            403,
            "another rider reads the events",
        ),
        (
            "GET",
            t("/events"),
            &operator,
            None,
            200,
            "an operator reads the events",
        ),
        ("DELETE", t(""), &operator, None, 403, "an operator cancels"),
        (
            "DELETE",
            t(""),
            &stranger,
            None,
            403,
            "another rider cancels",
        ),
        (
            "DELETE",
            t(""),
            &driver,
            None,
            403,
            "a driver not on the trip cancels",
        ),
        ("PUT", t("/accept"), &rider, None, 403, "a rider accepts"),
        (
            "PUT",
            t("/accept"),
            &driver,
            None,
            403,
            "a driver never offered accepts",
        ),
        (
            "PUT",
            t("/decline"),
            &driver,
            None,
            403,
            "a driver never offered declines",
        ),
        (
            "PUT",
            t("/arrived"),
            &driver,
            None,
            403,
            "a driver not on the trip arrives",
        ),
        (
            "PUT",
            t("/complete"),
            &operator,
            None,
            403,
            "an operator completes",
        ),
        (
            "PUT",
            t("/start"),
            &driver,
            Some(r#"{"pin":"1234"}"#),
            403,
            "a driver not on the trip starts",
        ),
        (
            "PUT",
            t("/start"),
            &driver,
            Some(r#"{"pin":1234}"#),
            400,
            "a PIN as a number",
        ),
        (
            "PUT",
            t("/start"),
            &driver,
            Some(r#"{"pin":"12a4"}"#),
            400,
            "a PIN with a letter",
        ),
        ("PUT", t("/start"), &driver, Some("{}"), 400, "no PIN"),
        (
            "GET",
            "/api/trips/not-a-uuid".into(),
            &rider,
            None,
            400,
            "a malformed id",
        ),
        (
            "GET",
            format!("/api/trips/{}", Uuid::now_v7()),
            &rider,
            None,
            404,
            "an unknown trip",
        ),
        (
            "PUT",
            format!("/api/trips/{}/accept", Uuid::now_v7()),
            &driver,
            None,
            404,
            "accepting an unknown trip",
        ),
        (
            "DELETE",
            format!("/api/trips/{}", Uuid::now_v7()),
            &rider,
            None,
            404,
            "cancelling an unknown trip",
        ),
        (
            "GET",
            format!("/api/riders/{rider_id}/trips"),
            &stranger,
            None,
            403,
            "another rider's history",
        ),
        (
            "GET",
            format!("/api/riders/{rider_id}/trips"),
            &driver,
            None,
            403,
            "a driver reads a rider's history",
        ),
        (
            "GET",
            format!("/api/riders/{rider_id}/trips?limit=0"),
            &rider,
            None,
            400,
            "limit 0",
        ),
        (
            "GET",
            format!("/api/riders/{rider_id}/trips?limit=101"),
            &rider,
            None,
            400,
            "limit 101",
        ),
        (
            "GET",
            format!("/api/riders/{rider_id}/trips?before=x"),
            &rider,
            None,
            400,
            "a malformed cursor",
        ),
        (
            "POST",
            "/api/pricing/estimate".into(),
            &driver,
            Some(TRIP),
            403,
            "a driver asks for an estimate",
        ),
        (
            "POST",
            "/api/pricing/estimate".into(),
            &rider,
            Some(r#"{"origin":{"lat":1,"lng":1}}"#),
            400,
            "an estimate without destination",
        ),
        (
            "GET",
            "/api/pricing/surge?lat=1".into(),
            &rider,
            None,
            400,
            "surge without lng",
        ),
        (
            "GET",
            "/api/pricing/surge?lat=100&lng=1".into(),
            &rider,
            None,
            400,
            "surge at lat 100",
        ),
        (
            "GET",
            "/api/pricing/surge?lat=1&lng=1".into(),
            &driver,
            None,
            403,
            "a driver asks for surge",
        ),
        ("PATCH", t(""), &rider, None, 405, "an unsupported method"),
    ];
    for (method, path, token, body, status, what) in cases {
        let r = app
            .request(method, &path, Some(token), body.map(str::to_string))
            .await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if status >= 400 {
            assert!(r.body["error"]["code"].is_string(), "{what}: {}", r.body);
        }
    }
    for (what, token) in bad_tokens(rider_id, Role::Rider) {
        for (method, path) in [
            ("POST", "/api/trips".to_string()),
            ("GET", t("")),
            ("DELETE", t("")),
            ("GET", t("/events")),
            ("PUT", t("/accept")),
            ("POST", "/api/pricing/estimate".into()),
        ] {
            let r = app
                .request(method, &path, token.as_deref(), Some(TRIP.into()))
                .await;
            assert_eq!(r.status, 401, "{what} on {method} {path}: {}", r.body);
        }
    }
    let still = app.get(&t(""), Some(&rider)).await;
    assert_eq!(
        still.body["status"], "MATCHING",
        "nothing above changed the trip"
    );
}

#[actix_rt::test]
async fn trip_frames_for_trips_that_are_not_the_drivers_are_refused() {
    let app = spawn_app().await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let trip_id = app.post("/api/trips", Some(&rider), TRIP).await.body["trip_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = app
        .driver_socket(&app.driver_token(Uuid::now_v7(), "economy"))
        .await;
    ws.recv_json().await;
    let cases = [
        (
            json!({"type": "accept", "trip_id": trip_id, "ref": 1}),
            "not_offered",
        ),
        (
            json!({"type": "decline", "trip_id": trip_id, "ref": 2}),
            "not_offered",
        ),
        (
            json!({"type": "arrived", "trip_id": trip_id, "ref": 3}),
            "not_your_trip",
        ),
        (
            json!({"type": "start", "trip_id": trip_id, "pin": "1234", "ref": 4}),
            "not_your_trip",
        ),
        (
            json!({"type": "complete", "trip_id": trip_id, "ref": 5}),
            "not_your_trip",
        ),
        (
            json!({"type": "cancel", "trip_id": trip_id, "ref": 6}),
            "not_your_trip",
        ),
    ];
    for (frame, code) in cases {
        ws.send(frame.clone()).await;
        let reply = ws.recv_json().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame}"
        );
        assert_eq!(reply["ref"], frame["ref"]);
    }
}

#[actix_rt::test]
async fn the_rider_socket_refuses_other_roles_and_answers_frames_with_errors() {
    let app = spawn_app().await;
    let driver = app.driver_token(Uuid::now_v7(), "economy");
    let mut ws = app.raw_rider_socket(&driver).await;
    assert_eq!(ws.expect_close().await, Some(1008));
    let mut ws = app.raw_rider_socket("garbage").await;
    assert_eq!(ws.expect_close().await, Some(1008));

    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut ws = app.rider_socket(&rider).await;
    ws.send(json!({"type": "cancel"})).await;
    let reply = ws.recv_json().await;
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("unsupported_frame"))
    );
    ws.send_text("x".repeat(20_000)).await;
    match ws.recv().await {
        Incoming::Close(code, _) => assert_eq!(code, Some(1009)),
        other => panic!("expected close 1009, got {other:?}"),
    }
}
