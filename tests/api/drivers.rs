use hexdispatch::dispatch::Role;
use uuid::Uuid;

use crate::helpers::{bad_tokens, spawn_app};

#[actix_rt::test]
async fn a_driver_goes_online_reports_a_position_and_reads_itself_back() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "comfort");
    let r = app.set_status(driver, &token, "online").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "online");
    assert_eq!(r.body["vehicle_type"], "comfort");

    let r = app
        .put(
            &format!("/api/drivers/{driver}/location"),
            Some(&token),
            r#"{"lat":48.8566,"lng":2.3522,"heading":180,"speed_mps":8.5,"ts_ms":1700000000000}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    let r = app
        .get(&format!("/api/drivers/{driver}"), Some(&token))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["driver_id"], driver.to_string());
    assert_eq!(r.body["status"], "online");
    assert_eq!(r.body["last_position"]["lat"], 48.8566);
    assert_eq!(r.body["last_position"]["heading"], 180.0);
    assert_eq!(r.body["last_position"]["ts_ms"], 1_700_000_000_000_i64);
    assert!(r.body["current_trip"].is_null());

    let operator = app.token(Role::Operator, Uuid::now_v7());
    let r = app
        .get(&format!("/api/drivers/{driver}"), Some(&operator))
        .await;
    assert_eq!(r.status, 200, "operators see every driver");

    let r = app.set_status(driver, &token, "offline").await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("offline"))
    );
}

#[actix_rt::test]
async fn driver_routes_refuse_bad_credentials_with_401() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    for (name, token) in bad_tokens(driver, Role::Driver) {
        for (method, path, body) in [
            (
                "PUT",
                format!("/api/drivers/{driver}/status"),
                Some(r#"{"status":"online"}"#),
            ),
            (
                "PUT",
                format!("/api/drivers/{driver}/location"),
                Some(r#"{"lat":1,"lng":1}"#),
            ),
            ("GET", format!("/api/drivers/{driver}"), None),
        ] {
            let r = app
                .request(method, &path, token.as_deref(), body.map(str::to_string))
                .await;
            assert_eq!(r.status, 401, "{method} {path} with {name}: {:?}", r.body);
            assert!(r.body["error"]["code"].is_string(), "{name}: envelope");
        }
    }
}

#[actix_rt::test]
async fn driver_routes_refuse_the_wrong_role_or_another_driver_with_403() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let other = app.token(Role::Driver, Uuid::now_v7());
    let cases = [
        ("rider sets status", "PUT", "status", Some(&rider)),
        ("operator sets status", "PUT", "status", Some(&operator)),
        ("other driver sets status", "PUT", "status", Some(&other)),
        ("rider sends location", "PUT", "location", Some(&rider)),
        (
            "operator sends location",
            "PUT",
            "location",
            Some(&operator),
        ),
        (
            "other driver sends location",
            "PUT",
            "location",
            Some(&other),
        ),
        ("rider reads driver", "GET", "", Some(&rider)),
        ("other driver reads driver", "GET", "", Some(&other)),
    ];
    for (name, method, tail, token) in cases {
        let (path, body) = match tail {
            "status" => (
                format!("/api/drivers/{driver}/status"),
                Some(r#"{"status":"online"}"#.to_string()),
            ),
            "location" => (
                format!("/api/drivers/{driver}/location"),
                Some(r#"{"lat":1,"lng":1}"#.to_string()),
            ),
            _ => (format!("/api/drivers/{driver}"), None),
        };
        let r = app
            .request(method, &path, token.map(String::as_str), body)
            .await;
        assert_eq!(r.status, 403, "{name}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "forbidden", "{name}");
    }
}

#[actix_rt::test]
async fn driver_routes_name_bad_input_precisely() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let status = format!("/api/drivers/{driver}/status");
    let location = format!("/api/drivers/{driver}/location");
    let huge = format!(r#"{{"status":"online","pad":"{}"}}"#, "x".repeat(70 * 1024));
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            &status,
            "{\"status\":".into(),
            400,
            "invalid_json",
        ),
        ("empty body", &status, String::new(), 400, "invalid_json"),
        ("missing status", &status, "{}".into(), 400, "missing_field"),
        (
            "array instead of object",
            &status,
            r#"["online"]"#.into(),
            400,
            "invalid_field",
        ),
        (
            "unknown status",
            &status,
            r#"{"status":"busy"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "status of wrong type",
            &status,
            r#"{"status":1}"#.into(),
            400,
            "invalid_field",
        ),
        ("body over 64 KiB", &status, huge, 413, "payload_too_large"),
        (
            "missing lat",
            &location,
            r#"{"lng":1}"#.into(),
            400,
            "missing_field",
        ),
        (
            "missing lng",
            &location,
            r#"{"lat":1}"#.into(),
            400,
            "missing_field",
        ),
        (
            "lat over 90",
            &location,
            r#"{"lat":90.5,"lng":1}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "lat under -90",
            &location,
            r#"{"lat":-91,"lng":1}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "lng over 180",
            &location,
            r#"{"lat":1,"lng":180.01}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "lng under -180",
            &location,
            r#"{"lat":1,"lng":-200}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "NaN literal",
            &location,
            r#"{"lat":NaN,"lng":1}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "overflowing number",
            &location,
            r#"{"lat":1e999,"lng":1}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "lat as string",
            &location,
            r#"{"lat":"north","lng":1}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "heading over 360",
            &location,
            r#"{"lat":1,"lng":1,"heading":361}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "negative speed",
            &location,
            r#"{"lat":1,"lng":1,"speed_mps":-1}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "negative ts_ms",
            &location,
            r#"{"lat":1,"lng":1,"ts_ms":-1}"#.into(),
            400,
            "out_of_range",
        ),
        (
            "ts_ms far in the future",
            &location,
            r#"{"lat":1,"lng":1,"ts_ms":99999999999999}"#.into(),
            400,
            "out_of_range",
        ),
    ];
    for (name, path, body, status_code, code) in cases {
        let r = app.put(path, Some(&token), &body).await;
        assert_eq!(r.status, status_code, "{name}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{name}: {:?}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: message"
        );
    }
    // Nothing above changed the driver.
    let r = app
        .get(&format!("/api/drivers/{driver}"), Some(&token))
        .await;
    assert_eq!(r.body["status"], "offline");
    assert!(r.body["last_position"].is_null());
}

#[actix_rt::test]
async fn driver_ids_in_paths_must_be_uuids_and_unknown_drivers_are_404() {
    let app = spawn_app().await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let r = app.get("/api/drivers/not-a-uuid", Some(&operator)).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_id"))
    );
    let r = app
        .get(&format!("/api/drivers/{}", Uuid::now_v7()), Some(&operator))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("driver_not_found"))
    );
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let r = app
        .put(
            "/api/drivers/42/status",
            Some(&token),
            r#"{"status":"online"}"#,
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (400, Some("invalid_id"))
    );
}

#[actix_rt::test]
async fn a_token_with_a_malformed_vehicle_type_is_refused_clearly() {
    let app = spawn_app().await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "has spaces");
    let r = app.set_status(driver, &token, "online").await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("vehicle_type")
    );
}

#[actix_rt::test]
async fn status_changes_are_published_as_driver_events() {
    let app = spawn_app().await;
    let mut bus = app.core.bus.subscribe();
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let at = serde_json::json!({"lat": 48.85, "lng": 2.35}).to_string();
    let r = app
        .put(
            &format!("/api/drivers/{driver}/location"),
            Some(&token),
            &at,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    assert_eq!(app.set_status(driver, &token, "offline").await.status, 200);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.len() < 2 {
        let message = tokio::time::timeout_at(deadline, bus.recv())
            .await
            .expect("driver events within 5 s")
            .expect("the bus is open");
        if !message.routing_key.starts_with("driver.") {
            continue;
        }
        let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body["driver_id"], driver.to_string(), "{body}");
        assert_eq!(body["position"]["lat"], 48.85, "{body}");
        seen.push((message.routing_key.clone(), body["status"].clone()));
    }
    assert_eq!(
        seen,
        [
            ("driver.online".to_owned(), serde_json::json!("online")),
            ("driver.offline".to_owned(), serde_json::json!("offline")),
        ]
    );
    app.handle.stop().await;
}
