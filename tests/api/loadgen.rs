//! `hexdispatch loadgen` against an engine started here: a short run of each scenario, the
//! report's numbers, thresholds that pass and fail, the token file of `seed-drivers`.

use std::time::Duration;

use hexdispatch::config::Settings;
use hexdispatch::dispatch::Role;
use hexdispatch::tools::loadgen::{self, Options, Scenario, Threshold};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{SECRET, TestApp, spawn_app};

fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.auth.jwt_secret = SecretString::from(SECRET);
    settings
}

fn options(app: &TestApp, scenario: Scenario, thresholds: &[&str]) -> Options {
    Options {
        duration: Duration::from_millis(1_500),
        rate: 200,
        concurrency: 4,
        drivers: 20,
        interval: Duration::from_millis(100),
        city: (52.52, 13.405, 3.0),
        thresholds: thresholds.iter().map(|t| t.parse().unwrap()).collect(),
        ..Options::new(scenario, app.address.clone())
    }
}

async fn drivers_online(app: &TestApp, n: u32) {
    for i in 0..n {
        let driver = Uuid::now_v7();
        let token = app.driver_token(driver, "economy");
        let at = json!({"lat": 52.50 + f64::from(i % 10) * 0.004, "lng": 13.38 + f64::from(i / 10) * 0.006});
        let r = app
            .put(
                &format!("/api/drivers/{driver}/location"),
                Some(&token),
                &at.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    }
}

#[actix_rt::test]
async fn search_and_spike_runs_report_latencies_and_thresholds() {
    let app = spawn_app().await;
    drivers_online(&app, 50).await;
    for scenario in [Scenario::Search, Scenario::Spike, Scenario::Baseline] {
        let report = loadgen::run(
            &settings(),
            options(&app, scenario, &["errors<1", "p99_ms<0.000001"]),
        )
        .await
        .unwrap();
        assert!(
            report.errors.is_empty(),
            "{scenario:?}: {:?}",
            report.errors
        );
        assert!(report.completed > 100, "{scenario:?}: {report:?}");
        assert!(report.latency.p50_ms > 0.0 && report.latency.p99_ms >= report.latency.p50_ms);
        assert!(!report.timeline.is_empty());
        assert_eq!(report.thresholds.len(), 2);
        assert!(report.thresholds[0].1, "no errors: {:?}", report.thresholds);
        assert!(
            !report.thresholds[1].1,
            "an impossible p99 fails: {:?}",
            report.thresholds
        );
        assert!(!report.passed(), "a missed threshold fails the run");
        assert!(report.svg().starts_with("<svg"), "a chart");
    }
    app.handle.stop().await;
}

#[actix_rt::test]
async fn a_locations_run_streams_positions_from_driver_sockets() {
    let app = spawn_app().await;
    let mut opts = options(
        &app,
        Scenario::Locations,
        &["errors<1", "frame_to_index.errors<1"],
    );
    opts.interval = Duration::from_millis(150);
    opts.probe_rate = 10;
    // Client sockets from a second loopback address.
    opts.sources = vec!["127.0.0.2".parse().unwrap()];
    let report = loadgen::run(&settings(), opts).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // 20 drivers, a frame every 150 ms, for 1.5 s.
    assert!(report.completed >= 150, "{report:?}");
    assert!(report.passed(), "{:?}", report.thresholds);
    // The probe saw its driver in the index after each jump.
    let probe = &report.parts["frame_to_index"];
    assert!(probe.completed >= 5, "{probe:?}");
    assert!(probe.latency.p50_ms > 0.0);
    // The engine counted every frame the sockets wrote, and dropped none.
    let engine = report
        .engine
        .clone()
        .expect("the engine's /metrics answered");
    assert!(
        engine.location_updates >= report.completed + probe.completed,
        "{engine:?} vs {} frames + {} probes",
        report.completed,
        probe.completed
    );
    assert_eq!(engine.location_updates_dropped, 0, "{engine:?}");
    // The positions reached the index: nearby finds drivers in the city.
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let near = app
        .nearby(&rider, "lat=52.52&lng=13.405&radius=5000&limit=50")
        .await;
    assert!(
        !near.body["drivers"].as_array().unwrap().is_empty(),
        "{}",
        near.body
    );
    app.handle.stop().await;
}

#[actix_rt::test]
async fn client_sockets_leave_from_the_given_source_addresses() {
    let app = spawn_app().await;
    let mut opts = options(&app, Scenario::Locations, &[]);
    opts.drivers = 3;
    opts.probe_rate = 0;
    opts.duration = Duration::from_millis(300);
    // An address this machine does not have (TEST-NET-1): no socket can bind to it.
    opts.sources = vec!["192.0.2.1".parse().unwrap()];
    let report = loadgen::run(&settings(), opts).await.unwrap();
    assert_eq!(
        report.errors.get("connect"),
        Some(&3),
        "{:?}",
        report.errors
    );
    assert_eq!(report.completed, 0);
    app.handle.stop().await;
}

#[actix_rt::test]
async fn a_mixed_run_reports_searches_trips_frames_and_the_probe_as_parts() {
    let app = spawn_app().await;
    let mut opts = options(
        &app,
        Scenario::Mixed,
        &["errors<1", "trips.errors<1", "search.p99_ms<5000"],
    );
    opts.duration = Duration::from_secs(2);
    opts.drivers = 30;
    opts.interval = Duration::from_millis(200);
    opts.trip_rate = 4.0;
    opts.rate = 100;
    opts.probe_rate = 5;
    opts.online = 40;
    let report = loadgen::run(&settings(), opts).await.unwrap();
    assert_eq!(report.scenario, "mixed");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for part in ["search", "trips", "locations", "frame_to_index"] {
        assert!(
            report.parts.get(part).is_some_and(|p| p.completed > 0),
            "{part}: {:?}",
            report.parts.get(part)
        );
    }
    assert_eq!(
        report.completed, report.parts["search"].completed,
        "search is the main part"
    );
    assert!(
        report.parts["trips"].completed >= 5,
        "{:?}",
        report.parts["trips"]
    );
    assert!(report.passed(), "{:?}", report.thresholds);
    // The 40 drivers put online over REST are in the index.
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let near = app
        .nearby(&rider, "lat=52.52&lng=13.405&radius=10000&limit=100")
        .await;
    assert!(
        near.body["drivers"].as_array().unwrap().len() >= 40,
        "{}",
        near.body
    );
    // A threshold on a part the run does not have fails rather than passing unseen.
    let mut opts = options(&app, Scenario::Baseline, &["trips.p99_ms<1000"]);
    opts.duration = Duration::from_millis(200);
    let report = loadgen::run(&settings(), opts).await.unwrap();
    assert!(!report.passed(), "{:?}", report.thresholds);
    app.handle.stop().await;
}

#[actix_rt::test]
async fn bad_loadgen_input_is_refused_clearly() {
    assert_eq!("mixed".parse::<Scenario>(), Ok(Scenario::Mixed));
    assert!("nope".parse::<Scenario>().is_err());
    assert!(
        "nope.p99_ms<20".parse::<Threshold>().is_err(),
        "unknown part"
    );
    assert!("trips.p99_ms<20".parse::<Threshold>().is_ok());
    assert!("p99_ms=20".parse::<Threshold>().is_err());
    assert!("latency<20".parse::<Threshold>().is_err());
    assert!("p99_ms<abc".parse::<Threshold>().is_err());
    assert!(loadgen::read_tokens("not-a-uuid,token").is_err());
    let id = Uuid::now_v7();
    assert_eq!(
        loadgen::read_tokens(&format!("{id},tok\n")).unwrap(),
        vec![(id, "tok".to_owned())]
    );
    let mut https = Options {
        duration: Duration::from_millis(10),
        rate: 1,
        concurrency: 1,
        ..Options::new(Scenario::Search, "https://example.invalid")
    };
    assert!(
        loadgen::run(&settings(), https.clone()).await.is_err(),
        "http only"
    );
    // Nothing listens: every request is a connect error, counted, and the run still reports.
    https.url = format!("http://127.0.0.1:{}", crate::services::free_port());
    let report = loadgen::run(&settings(), https).await.unwrap();
    assert!(report.errors.contains_key("connect"), "{:?}", report.errors);
}

#[actix_rt::test]
async fn a_trips_run_takes_trips_from_request_to_completion_with_the_pin() {
    let app = spawn_app().await;
    let mut opts = options(&app, Scenario::Trips, &["errors<1"]);
    opts.trip_rate = 5.0;
    opts.drivers = 30;
    opts.duration = Duration::from_secs(2);
    let report = loadgen::run(&settings(), opts).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.completed >= 8, "{report:?}");
    assert!(report.passed());
    app.handle.stop().await;
}
