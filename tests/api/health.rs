use crate::helpers::spawn_app;

#[actix_rt::test]
async fn health_reports_healthy_with_version_and_uptime() {
    let app = spawn_app().await;
    let r = app.get("/health", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "healthy");
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.body["uptime_s"].is_u64());
}

#[actix_rt::test]
async fn ready_answers_200_once_started_and_503_while_stopping() {
    let app = spawn_app().await;
    let r = app.get("/ready", None).await;
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ready")));
    app.core.shutdown();
    let r = app.get("/ready", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["status"], "not_ready");
}

#[actix_rt::test]
async fn version_names_the_crate() {
    let app = spawn_app().await;
    let r = app.get("/version", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "hexdispatch");
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
}

#[actix_rt::test]
async fn metrics_are_prometheus_text_with_the_engine_series() {
    let app = spawn_app().await;
    // Touch the paths that record series.
    let driver = uuid::Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    app.set_status(driver, &token, "online").await;
    app.put(
        &format!("/api/drivers/{driver}/location"),
        Some(&token),
        r#"{"lat":1,"lng":1}"#,
    )
    .await;
    let rider = app.token(hexdispatch::auth::Role::Rider, uuid::Uuid::now_v7());
    app.nearby(&rider, "lat=1&lng=1").await;
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    let text = r.body.as_str().expect("text body");
    for series in [
        "hexdispatch_location_updates_total",
        "hexdispatch_nearby_query_duration_seconds_bucket",
        "hexdispatch_drivers_online",
        "hexdispatch_http_responses_total",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}");
    }
}

#[actix_rt::test]
async fn unknown_routes_and_methods_get_the_error_envelope() {
    let app = spawn_app().await;
    let r = app.get("/no/such/route", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "not_found");
    let r = app
        .request("POST", "/api/locations/nearby", None, Some("{}".into()))
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"]["code"], "method_not_allowed");
    let r = app.get("/ws/driver", None).await;
    assert_eq!(r.status, 400, "a plain GET on a socket route is refused");
    assert!(r.body["error"]["code"].is_string());
}

#[actix_rt::test]
async fn every_response_carries_a_request_id() {
    let app = crate::helpers::spawn_app().await;
    let r = app.get("/health", None).await;
    let id = r
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a fresh id: {id}");
    let other = app.get("/nope", None).await;
    assert_ne!(
        other
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(id.as_str())
    );
}
