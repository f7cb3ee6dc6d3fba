//! Registration, login, refresh rotation with reuse detection, lockout, rate limits, CORS and
//! security headers, the location frame limit, and secrets kept out of the logs.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Response, TestApp, spawn_app, spawn_app_with};

async fn register(app: &TestApp, body: Value) -> Response {
    app.post("/api/auth/register", None, &body.to_string())
        .await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Response {
    app.post(
        "/api/auth/login",
        None,
        &json!({"email": email, "password": password}).to_string(),
    )
    .await
}

async fn refresh(app: &TestApp, token: &Value) -> Response {
    app.post(
        "/api/auth/refresh",
        None,
        &json!({"refresh_token": token}).to_string(),
    )
    .await
}

fn rider(email: &str) -> Value {
    json!({"role": "rider", "name": "Ada", "email": email, "password": "correct horse"})
}

#[actix_rt::test]
async fn a_rider_registers_logs_in_and_rotates_refresh_tokens_and_reuse_revokes_the_family() {
    let app = spawn_app().await;
    let r = register(&app, rider("Ada@Example.com")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["role"], "rider");
    let id = r.body["id"].as_str().unwrap().to_owned();

    let first = login(&app, "ada@example.com", "correct horse").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["token_type"], "Bearer");
    assert_eq!(first.body["expires_in"], 3_600);
    let access = first.body["access_token"].as_str().unwrap().to_owned();
    let history = app
        .get(&format!("/api/riders/{id}/trips"), Some(&access))
        .await;
    assert_eq!(
        history.status, 200,
        "the access token is the rider's: {}",
        history.body
    );

    let second = refresh(&app, &first.body["refresh_token"]).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_ne!(second.body["refresh_token"], first.body["refresh_token"]);
    let fresh = second.body["access_token"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/api/riders/{id}/trips"), Some(fresh))
            .await
            .status,
        200
    );

    // The first token again: theft. The whole family dies, including the newest token.
    let reused = refresh(&app, &first.body["refresh_token"]).await;
    assert_eq!(
        (reused.status, reused.body["error"]["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let after = refresh(&app, &second.body["refresh_token"]).await;
    assert_eq!(after.status, 401, "the family is revoked: {}", after.body);
    // A new login starts a new family.
    let again = login(&app, "ada@example.com", "correct horse").await;
    assert_eq!(
        refresh(&app, &again.body["refresh_token"]).await.status,
        200
    );
    let bogus = refresh(&app, &json!("f".repeat(64))).await;
    assert_eq!(
        (bogus.status, bogus.body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
}

#[actix_rt::test]
async fn a_registered_driver_logs_in_with_its_vehicle() {
    let app = spawn_app().await;
    let r = register(
        &app,
        json!({"role": "driver", "name": "Bo", "email": "bo@example.com", "password": "12345678",
               "phone": "+4912345678", "vehicle": {"type": "XL", "plate": "B-HX 42"}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let token = login(&app, "bo@example.com", "12345678").await.body["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app.get(&format!("/api/drivers/{id}"), Some(&token)).await;
    assert_eq!(
        (me.status, me.body["vehicle_type"].as_str()),
        (200, Some("xl")),
        "{}",
        me.body
    );
}

#[actix_rt::test]
async fn registration_refuses_bad_input_and_taken_emails() {
    let app = spawn_app().await;
    assert_eq!(register(&app, rider("taken@example.com")).await.status, 201);
    let cases = [
        (
            rider("taken@example.com"),
            409,
            "email_taken",
            "a registered e-mail",
        ),
        (
            rider("TAKEN@example.com"),
            409,
            "email_taken",
            "e-mails are case-insensitive",
        ),
        (
            json!({"role": "operator", "name": "x", "email": "o@example.com", "password": "12345678"}),
            400,
            "invalid_field",
            "operators do not self-register",
        ),
        (
            json!({"role": "admin", "name": "x", "email": "o@example.com", "password": "12345678"}),
            400,
            "invalid_field",
            "unknown role",
        ),
        (
            json!({"name": "x", "email": "o@example.com", "password": "12345678"}),
            400,
            "missing_field",
            "no role",
        ),
        (
            json!({"role": "rider", "email": "o@example.com", "password": "12345678"}),
            400,
            "missing_field",
            "no name",
        ),
        (
            json!({"role": "rider", "name": "x", "email": "not-an-email", "password": "12345678"}),
            400,
            "invalid_field",
            "bad e-mail",
        ),
        (
            json!({"role": "rider", "name": "x", "email": "o@example.com", "password": "short"}),
            400,
            "invalid_field",
            "short password",
        ),
        (
            json!({"role": "rider", "name": "x", "email": "o@example.com", "password": "p".repeat(129)}),
            400,
            "invalid_field",
            "long password",
        ),
        (
            json!({"role": "rider", "name": "", "email": "o@example.com", "password": "12345678"}),
            400,
            "invalid_field",
            "empty name",
        ),
        (
            json!({"role": "rider", "name": "x", "email": "o@example.com", "password": "12345678", "vehicle": {"type": "xl"}}),
            400,
            "invalid_field",
            "a rider with a vehicle",
        ),
        (
            json!({"role": "driver", "name": "x", "email": "d@example.com", "password": "12345678", "vehicle": {"type": "a b"}}),
            400,
            "invalid_field",
            "bad vehicle type",
        ),
        (
            json!({"role": "rider", "name": 5, "email": "o@example.com", "password": "12345678"}),
            400,
            "invalid_field",
            "name not a string",
        ),
        (json!([1]), 400, "invalid_field", "an array"),
    ];
    for (body, status, code, what) in cases {
        let r = register(&app, body).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {}",
            r.body
        );
    }
    let bad = app.post("/api/auth/login", None, "{\"email\": 5}").await;
    assert_eq!(bad.status, 400);
    let wrong = login(&app, "nobody@example.com", "whatever1").await;
    assert_eq!(
        (wrong.status, wrong.body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
}

#[actix_rt::test]
async fn repeated_failures_lock_the_account_for_a_while() {
    let app = spawn_app_with(|s| {
        s.auth.max_login_failures = 3;
        s.auth.lockout_s = 1;
    })
    .await;
    register(&app, rider("lock@example.com")).await;
    for attempt in 0..2 {
        let r = login(&app, "lock@example.com", "wrong password").await;
        assert_eq!(r.status, 401, "attempt {attempt}");
    }
    let locked = login(&app, "lock@example.com", "wrong password").await;
    assert_eq!(
        (locked.status, locked.body["error"]["code"].as_str()),
        (429, Some("account_locked"))
    );
    assert_eq!(
        locked
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let still = login(&app, "lock@example.com", "correct horse").await;
    assert_eq!(
        still.status, 429,
        "even the right password waits out the lock"
    );
    assert_eq!(
        login(&app, "other@example.com", "x1234567").await.status,
        401,
        "other accounts are not locked"
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        login(&app, "lock@example.com", "correct horse")
            .await
            .status,
        200,
        "the lock expires"
    );
}

#[actix_rt::test]
async fn auth_and_trip_requests_are_rate_limited() {
    let app = spawn_app_with(|s| {
        s.limits.auth_per_ip_per_minute = 3;
        s.limits.trips_per_rider_per_minute = 2;
    })
    .await;
    for i in 0..3 {
        let r = login(&app, "x@example.com", "whatever1").await;
        assert_eq!(r.status, 401, "request {i} is within the limit");
    }
    let limited = login(&app, "x@example.com", "whatever1").await;
    assert_eq!(
        (limited.status, limited.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(limited.headers.contains_key("retry-after"));

    let rider = app.token(Role::Rider, Uuid::now_v7());
    for _ in 0..2 {
        assert_eq!(
            app.request_trip(&rider, (10.0, 10.0), (10.1, 10.1))
                .await
                .status,
            201
        );
    }
    let third = app.request_trip(&rider, (10.0, 10.0), (10.1, 10.1)).await;
    assert_eq!(third.status, 429, "{}", third.body);
    let other = app.token(Role::Rider, Uuid::now_v7());
    assert_eq!(
        app.request_trip(&other, (10.0, 10.0), (10.1, 10.1))
            .await
            .status,
        201,
        "per rider"
    );
}

#[actix_rt::test]
async fn logins_are_rate_limited_per_account() {
    let app = spawn_app_with(|s| {
        s.limits.logins_per_account_per_minute = 2;
        s.auth.max_login_failures = 100;
    })
    .await;
    register(&app, rider("busy@example.com")).await;
    for _ in 0..2 {
        assert_eq!(
            login(&app, "busy@example.com", "correct horse")
                .await
                .status,
            200
        );
    }
    let third = login(&app, "busy@example.com", "correct horse").await;
    assert_eq!(
        (third.status, third.body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(
        login(&app, "calm@example.com", "whatever1").await.status,
        401,
        "per account"
    );
}

#[actix_rt::test]
async fn responses_carry_security_headers_and_cors_follows_the_config() {
    let app =
        spawn_app_with(|s| s.limits.cors_origins = vec!["https://ops.example.com".into()]).await;
    let r = app.get("/health", None).await;
    for (header, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(
            r.headers.get(header).and_then(|v| v.to_str().ok()),
            Some(value),
            "{header}"
        );
    }
    let client = awc::Client::default();
    let preflight = |origin: &'static str| {
        client
            .request(
                awc::http::Method::OPTIONS,
                format!("{}/api/trips", app.address),
            )
            .insert_header(("Origin", origin))
            .insert_header(("Access-Control-Request-Method", "POST"))
            .send()
    };
    let allowed = preflight("https://ops.example.com").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://ops.example.com")
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[actix_rt::test]
async fn location_frames_above_the_drivers_rate_are_dropped() {
    let app = spawn_app_with(|s| s.limits.locations_per_driver_per_s = 2).await;
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let mut ws = app.driver_socket(&token).await;
    ws.recv_json().await;
    for i in 0..10 {
        ws.send(json!({"type": "location", "lat": 10.0 + f64::from(i) * 0.001, "lng": 10.0}))
            .await;
    }
    ws.send(json!({"type": "status", "status": "offline", "ref": "sync"}))
        .await;
    let state = ws.recv_json().await;
    assert_eq!(state["ref"], "sync");
    let lat = state["last_position"]["lat"].as_f64().unwrap();
    assert!(
        lat < 10.0035,
        "frames beyond the budget never reached the driver: {lat}"
    );
    let metrics = app.get("/metrics", None).await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("reason=\"rate_limited\"")
    );
}

#[actix_rt::test]
async fn no_password_token_or_secret_reaches_the_logs() {
    let dir = std::env::temp_dir().join(format!("hexdispatch-logs-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("engine.log");
    let engine = crate::services::EngineProcess::start_logging(
        &dir,
        &[
            ("HEXDISPATCH__LOG__LEVEL", "trace".to_owned()),
            ("HEXDISPATCH__AUTH__ARGON2_MEMORY_KIB", "1024".to_owned()),
            ("HEXDISPATCH__AUTH__ARGON2_ITERATIONS", "1".to_owned()),
        ],
        &log,
    )
    .await;
    let client = awc::Client::default();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", engine.address))
            .send_json(&body)
    };
    let password = "s3cret-Pa55word";
    post(
        "/api/auth/register",
        json!({"role": "rider", "name": "Log", "email": "log@example.com", "password": password}),
    )
    .await
    .unwrap();
    let mut res = post(
        "/api/auth/login",
        json!({"email": "log@example.com", "password": password}),
    )
    .await
    .unwrap();
    let pair: Value = res.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh_token = pair["refresh_token"].as_str().unwrap().to_owned();
    post("/api/auth/refresh", json!({"refresh_token": refresh_token}))
        .await
        .unwrap();
    post("/api/auth/refresh", json!({"refresh_token": refresh_token}))
        .await
        .unwrap();
    post(
        "/api/auth/login",
        json!({"email": "log@example.com", "password": "wrong-guess-1"}),
    )
    .await
    .unwrap();
    client
        .get(format!(
            "{}/api/riders/{}/trips",
            engine.address,
            Uuid::now_v7()
        ))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    engine.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("user registered"), "the log was captured");
    for secret in [
        password,
        "wrong-guess-1",
        &access,
        &refresh_token,
        crate::helpers::SECRET,
    ] {
        assert!(!text.contains(secret), "a secret leaked into the log");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix_rt::test]
async fn create_operator_makes_an_account_that_logs_in_as_operator() {
    let dir = std::env::temp_dir().join(format!("hexdispatch-operator-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .args([
            "create-operator",
            "--email",
            "Ops@Example.com",
            "--name",
            "Ops",
        ])
        .current_dir(&dir)
        .env("HEXDISPATCH_OPERATOR_PASSWORD", "operator-pass-1")
        .env("HEXDISPATCH__AUTH__ARGON2_MEMORY_KIB", "1024")
        .env("HEXDISPATCH__AUTH__ARGON2_ITERATIONS", "1")
        .env("HEXDISPATCH__AUTH__JWT_SECRET", crate::helpers::SECRET)
        .env("HEXDISPATCH__LOG__LEVEL", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .args(["create-operator", "--email", "x@example.com"])
        .current_dir(&dir)
        .env("HEXDISPATCH_OPERATOR_PASSWORD", "short")
        .output()
        .unwrap();
    assert!(!short.status.success(), "a short password is refused");

    // Seed drivers into the same data folder, then serve it and log in.
    let seeded = std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
        .args(["seed-drivers", "--count", "50", "--vehicle-type", "xl"])
        .current_dir(&dir)
        .env("HEXDISPATCH__AUTH__JWT_SECRET", crate::helpers::SECRET)
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    let lines = String::from_utf8_lossy(&seeded.stdout)
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), 50);
    let (driver, token) = lines[0].split_once(',').unwrap();

    let engine = crate::services::EngineProcess::start(&dir, &[]).await;
    let client = awc::Client::default();
    let mut res = client
        .post(format!("{}/api/auth/login", engine.address))
        .send_json(&json!({"email": "ops@example.com", "password": "operator-pass-1"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let pair: Value = res.json().await.unwrap();
    let access = pair["access_token"].as_str().unwrap();
    let keys = hexdispatch::http::tokens::JwtKeys::new(&secrecy::SecretString::from(
        crate::helpers::SECRET,
    ));
    let claims = keys.verify(access).unwrap();
    assert_eq!((claims.sub, claims.role), (id, Role::Operator));
    let seen = client
        .get(format!("{}/api/drivers/{driver}", engine.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status().as_u16(), 200, "a seeded driver's token works");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn logout(app: &TestApp, token: &Value) -> Response {
    app.post(
        "/api/auth/logout",
        None,
        &json!({"refresh_token": token}).to_string(),
    )
    .await
}

#[actix_rt::test]
async fn logout_revokes_every_refresh_token_of_the_login_and_refuses_bad_input() {
    let app = spawn_app().await;
    assert_eq!(register(&app, rider("lou@example.com")).await.status, 201);
    let first = login(&app, "lou@example.com", "correct horse").await;
    let second = refresh(&app, &first.body["refresh_token"]).await;
    assert_eq!(second.status, 200, "{}", second.body);
    // Another login of the same account is a family of its own and survives.
    let elsewhere = login(&app, "lou@example.com", "correct horse").await;

    let out = logout(&app, &second.body["refresh_token"]).await;
    assert_eq!(out.status, 204, "{}", out.body);
    let after = refresh(&app, &second.body["refresh_token"]).await;
    assert_eq!(after.status, 401, "logged out: {}", after.body);
    assert_eq!(
        logout(&app, &second.body["refresh_token"]).await.status,
        204,
        "logging out twice is fine"
    );
    assert_eq!(
        logout(&app, &first.body["refresh_token"]).await.status,
        204,
        "an older token of the same login logs it out too"
    );
    let other = refresh(&app, &elsewhere.body["refresh_token"]).await;
    assert_eq!(other.status, 200, "the other login goes on: {}", other.body);

    let unknown = logout(&app, &json!("f".repeat(64))).await;
    assert_eq!(
        (unknown.status, unknown.body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    for (body, why) in [
        ("{".to_owned(), "malformed JSON"),
        ("{}".to_owned(), "no refresh_token"),
        (json!({"refresh_token": ""}).to_string(), "empty"),
        (json!({"refresh_token": 7}).to_string(), "not a string"),
        (
            json!({"refresh_token": "x".repeat(300)}).to_string(),
            "too long",
        ),
    ] {
        let r = app.post("/api/auth/logout", None, &body).await;
        assert_eq!(r.status, 400, "{why}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{why}");
    }
}
