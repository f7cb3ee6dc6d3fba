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
    let rider = app.token(hexdispatch::dispatch::Role::Rider, uuid::Uuid::now_v7());
    app.nearby(&rider, "lat=1&lng=1").await;
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    let text = r.body.as_str().expect("text body");
    for series in [
        "hexdispatch_location_updates_total",
        "hexdispatch_nearby_query_duration_seconds_bucket",
        "hexdispatch_drivers_online",
        "hexdispatch_http_responses_total",
        "hexdispatch_outbox_lag_seconds",
    ] {
        assert!(text.contains(series), "/metrics lacks {series}");
    }
    // What /ready sees, as gauges for alerting (process-wide: other engines of this test process
    // may be starting or stopping, so only the shape is checked here).
    for series in [
        "hexdispatch_ready ",
        "hexdispatch_dependency_up{dependency=\"database\"} ",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("/metrics lacks {series}"));
        let value = line.rsplit(' ').next().unwrap();
        assert!(value == "0" || value == "1", "{line}");
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

#[actix_rt::test]
async fn the_openapi_document_is_valid_and_covers_every_route() {
    let app = crate::helpers::spawn_app().await;
    let r = app.get("/api/openapi.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["openapi"], "3.1.0");
    // Every reference resolves inside the document.
    let mut refs = Vec::new();
    crate::openapi::refs(&r.body, &mut refs);
    assert!(refs.len() > 40, "{}", refs.len());
    for reference in &refs {
        assert!(
            reference
                .strip_prefix('#')
                .and_then(|p| r.body.pointer(p))
                .is_some(),
            "{reference} does not resolve"
        );
    }
    // SPEC §4's table, all of it.
    let spec = [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/version"),
        ("get", "/api/cluster/owner"),
        ("put", "/api/drivers/{id}/status"),
        ("put", "/api/drivers/{id}/location"),
        ("get", "/api/drivers/{id}"),
        ("get", "/api/locations/nearby"),
        ("get", "/api/locations/drivers/{id}/history"),
        ("post", "/api/pricing/estimate"),
        ("get", "/api/pricing/surge"),
        ("post", "/api/trips"),
        ("get", "/api/trips/{id}"),
        ("get", "/api/trips/{id}/events"),
        ("put", "/api/trips/{id}/accept"),
        ("put", "/api/trips/{id}/decline"),
        ("put", "/api/trips/{id}/arrived"),
        ("put", "/api/trips/{id}/start"),
        ("put", "/api/trips/{id}/complete"),
        ("delete", "/api/trips/{id}"),
        ("get", "/api/riders/{id}/trips"),
        ("get", "/api/riders/{id}/wallet"),
        ("post", "/api/riders/{id}/wallet/topup"),
        ("get", "/api/trips/{id}/receipt"),
        ("get", "/api/drivers/{id}/earnings"),
        ("get", "/api/ops/heatmap"),
        ("get", "/ops"),
        ("get", "/api/openapi.json"),
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("post", "/api/auth/refresh"),
        ("post", "/api/auth/logout"),
        ("post", "/api/trips/{id}/rating"),
        ("post", "/api/trips/{id}/refund"),
        ("get", "/api/riders/{id}/transactions"),
        ("post", "/api/ops/promotions"),
        ("get", "/api/ops/promotions"),
        ("delete", "/api/ops/promotions/{code}"),
    ];
    for (method, path) in spec {
        assert!(
            r.body["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // And every documented operation is served (no route-level 404 or 405).
    for (path, item) in r.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
            let res = app
                .request(&method.to_uppercase(), &concrete, None, Some("{}".into()))
                .await;
            assert!(
                res.status != 405 && res.body["error"]["code"] != "not_found",
                "{method} {path} is documented but not served: {} {}",
                res.status,
                res.body
            );
        }
    }
}

#[actix_rt::test]
async fn the_listener_uses_the_configured_backlog() {
    let app = crate::helpers::spawn_app_with(|s| s.http.backlog = 1_234).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let listed = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output();
    let Some(output) = listed.ok().filter(|o| o.status.success()) else {
        assert!(
            std::env::var_os("HEXDISPATCH_REQUIRE_SERVICES").is_none(),
            "`ss` (iproute2) is required here to read the listen backlog"
        );
        eprintln!("SKIPPED: the backlog test needs `ss` (iproute2)");
        app.handle.stop().await;
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    // LISTEN <accept queue> <backlog> <local address> <peer>
    let backlog: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlog, ["1234"], "ss says: {text}");
    app.handle.stop().await;
}

/// `hexdispatch healthcheck` (the container image's HEALTHCHECK): 0 against a running engine,
/// non-zero when nothing answers or the answer is not a success.
#[actix_rt::test]
async fn the_healthcheck_command_passes_only_against_a_healthy_engine() {
    let app = crate::helpers::spawn_app().await;
    let check = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hexdispatch"))
            .args(["healthcheck", "--url", &url])
            .env("HEXDISPATCH__LOG__LEVEL", "warn")
            .output()
            .unwrap()
    };
    let url = format!("{}/health", app.address);
    let healthy = actix_web::rt::task::spawn_blocking(move || check(url))
        .await
        .unwrap();
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let url = format!("{}/no-such-route", app.address);
    let missing = actix_web::rt::task::spawn_blocking(move || check(url))
        .await
        .unwrap();
    assert!(!missing.status.success(), "a 404 is not healthy");
    let url = format!("http://127.0.0.1:{}/health", crate::services::free_port());
    let down = actix_web::rt::task::spawn_blocking(move || check(url))
        .await
        .unwrap();
    assert!(!down.status.success(), "nothing listening is not healthy");
    assert!(String::from_utf8_lossy(&down.stderr).contains("/health"));
    app.handle.stop().await;
}

/// SPEC §11: `GET /api/cluster/owner` names the instance owning a point's region (a single
/// instance owns everything, reachable at the address it was asked at), and every response says
/// which instance handled it.
#[actix_rt::test]
async fn a_single_instance_owns_every_region_and_names_itself_on_every_answer() {
    let app = crate::helpers::spawn_app().await;
    let berlin = app
        .get("/api/cluster/owner?lat=52.52&lng=13.405", None)
        .await;
    assert_eq!(berlin.status, 200, "{}", berlin.body);
    assert_eq!(berlin.body["instance"], "local");
    assert_eq!(berlin.body["url"], app.address);
    let region = berlin.body["region"].as_str().unwrap();
    let cell: h3o::CellIndex = region.parse().expect("an H3 cell");
    assert_eq!(
        cell.resolution(),
        h3o::Resolution::Three,
        "cluster.region_resolution"
    );
    // Another continent: another region, the same owner.
    let lima = app
        .get("/api/cluster/owner?lat=-12.05&lng=-77.04", None)
        .await;
    assert_eq!(lima.body["instance"], "local");
    assert_ne!(lima.body["region"], berlin.body["region"]);
    // Bad input is refused clearly.
    for query in ["", "?lat=91&lng=0", "?lat=abc&lng=0", "?lat=1"] {
        let r = app.get(&format!("/api/cluster/owner{query}"), None).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{query}");
    }
    // The handling instance, on answers and errors alike.
    for path in [
        "/health",
        "/api/cluster/owner?lat=1&lng=1",
        "/api/no-such-route",
    ] {
        let r = app.get(path, None).await;
        assert_eq!(
            r.headers
                .get("hexdispatch-instance")
                .and_then(|v| v.to_str().ok()),
            Some("local"),
            "{path}"
        );
    }
    app.handle.stop().await;
}

#[actix_rt::test]
async fn the_configured_instance_id_names_the_owner_and_the_handler() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.cluster.instance = Some("hexdispatch-0".into());
        s.cluster.peers = Some("hexdispatch-0=http://hexdispatch-0.hexdispatch:8080".into());
    })
    .await;
    let r = app.get("/api/cluster/owner?lat=48.85&lng=2.35", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["instance"], "hexdispatch-0");
    assert_eq!(r.body["url"], "http://hexdispatch-0.hexdispatch:8080");
    let health = app.get("/health", None).await;
    assert_eq!(
        health
            .headers
            .get("hexdispatch-instance")
            .and_then(|v| v.to_str().ok()),
        Some("hexdispatch-0")
    );
    app.handle.stop().await;
}
