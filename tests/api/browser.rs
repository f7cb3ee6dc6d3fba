//! The `/ops` page in a real browser driven over WebDriver (Debian's chromium and chromedriver,
//! through fantoccini): it draws the cells on a Leaflet map, recolours them when the metric
//! changes, redraws them at another resolution, shows a clicked cell's drivers, replays a finished
//! trip along its driver's trail, and refuses a rider's token. With
//! `HEXDISPATCH_OPS_SCREENSHOT_DIR=<folder>` it also saves `ops-map.png` and `ops-replay.png`.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hexdispatch::actors::driver::{Location, LocationUpdate, SetStatus};
use hexdispatch::dispatch::{DriverStatus, Role};
use hexdispatch::geo::LatLng;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};
use crate::services::free_port;

fn required() -> bool {
    std::env::var_os("HEXDISPATCH_REQUIRE_SERVICES").is_some()
}

fn skip(why: &str) {
    assert!(!required(), "the browser tests are required here but {why}");
    if let Ok(mut stderr) = std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
        use std::io::Write as _;
        let _ = stderr.write_all(format!("SKIPPED: browser tests ({why})\n").as_bytes());
    }
}

/// A chromedriver of its own and a headless chromium session on it.
struct Browser {
    driver: tokio::process::Child,
    client: Client,
}

impl Browser {
    async fn start() -> Option<Self> {
        let chromedriver = std::env::var("HEXDISPATCH_TEST_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let chromium = std::env::var("HEXDISPATCH_TEST_CHROMIUM")
            .unwrap_or_else(|_| "/usr/bin/chromium".into());
        for path in [&chromedriver, &chromium] {
            if !std::path::Path::new(path).exists() {
                skip(&format!("{path} not found"));
                return None;
            }
        }
        let port = free_port();
        let driver = tokio::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=1400,900"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            let connected =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await;
            if let Ok(client) = connected {
                return Some(Self { driver, client });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on {url}");
    }

    async fn open(&self, app: &TestApp, token: &str) {
        // A fresh query string makes every visit a fresh page load, not a fragment change.
        let url = format!("{}/ops?visit={}#token={token}", app.address, Uuid::now_v7());
        self.client.goto(&url).await.expect("the page loads");
    }

    /// Evaluates `expression` in the page.
    async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .expect("the script runs")
    }

    /// Waits until `expression` is truthy in the page; returns its value.
    async fn until(&self, expression: &str, what: &str) -> Value {
        for _ in 0..150 {
            let v = self.eval(expression).await;
            let truthy = !(v.is_null()
                || v == json!(false)
                || v == json!(0)
                || v == json!("")
                || v == json!([]));
            if truthy {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = self
            .eval("document.getElementById('status').textContent")
            .await;
        panic!("{what}: `{expression}` never held (status: {status})");
    }

    async fn fill_of(&self, cell: &str) -> String {
        self.until(
            &format!("(document.querySelector('path.cell[data-cell=\"{cell}\"]') || {{}}).getAttribute && document.querySelector('path.cell[data-cell=\"{cell}\"]').getAttribute('fill')"),
            &format!("cell {cell} is drawn"),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("HEXDISPATCH_OPS_SCREENSHOT_DIR") {
            let png = self.client.screenshot().await.expect("a screenshot");
            std::fs::write(std::path::Path::new(&dir).join(name), png).expect("written");
        }
    }

    async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}

async fn put_driver(app: &TestApp, driver: Uuid, lat: f64, lng: f64) {
    let actor = app.core.driver(driver, None).unwrap();
    actor
        .send(Location(LocationUpdate {
            point: LatLng::new(lat, lng).unwrap(),
            heading: None,
            speed_mps: None,
            ts_ms: None,
        }))
        .await
        .unwrap();
    actor.send(SetStatus(DriverStatus::Online)).await.unwrap();
}

fn cell(lat: f64, lng: f64, res: h3o::Resolution) -> String {
    LatLng::new(lat, lng)
        .unwrap()
        .to_h3()
        .to_cell(res)
        .to_string()
}

/// Runs a trip near `pickup` to completion over REST with a driver that drives north in steps;
/// returns the trip id and the last position driven.
async fn driven_trip(app: &TestApp, pickup: (f64, f64)) -> (String, (f64, f64)) {
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let put_at = |lat: f64, lng: f64| {
        let token = token.clone();
        async move {
            let r = app
                .put(
                    &format!("/api/drivers/{driver}/location"),
                    Some(&token),
                    &json!({"lat": lat, "lng": lng}).to_string(),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    put_at(pickup.0, pickup.1).await;
    assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    let r = app
        .request_trip(&rider, pickup, (pickup.0 + 0.01, pickup.1))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let trip_id = r.body["trip_id"].as_str().unwrap().to_owned();
    let base = format!("/api/trips/{trip_id}");
    let accepted = crate::payments::accept_until_won(app, &base, &token).await;
    assert!(accepted, "the driver beside the pickup wins the trip");
    let pin = app.get(&base, Some(&rider)).await.body["start_pin"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = app
        .put(
            &format!("{base}/start"),
            Some(&token),
            &json!({"pin": pin}).to_string(),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let mut last = pickup;
    for step in 1..=8 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        last = (pickup.0 + f64::from(step) * 0.001, pickup.1);
        put_at(last.0, last.1).await;
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let done = app.put(&format!("{base}/complete"), Some(&token), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    (trip_id, last)
}

#[actix_rt::test]
async fn the_ops_map_recolours_redraws_shows_drivers_replays_trips_and_refuses_riders() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app_with(|s| {
        s.ops.heatmap_interval_ms = 300;
        s.database.location_sample_s = 0.001;
    })
    .await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let seven = h3o::Resolution::Seven;
    // Supply in A (four drivers) and B (two); demand in D (trips nobody is near).
    let (a, b, d) = ((52.52, 13.405), (52.45, 13.30), (52.60, 13.52));
    for i in 0..6 {
        let at = if i < 4 { a } else { b };
        put_driver(&app, Uuid::now_v7(), at.0, at.1).await;
    }
    for _ in 0..3 {
        let rider = app.token(Role::Rider, Uuid::now_v7());
        let r = app.request_trip(&rider, d, (d.0 + 0.01, d.1)).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let (cell_a, cell_d) = (cell(a.0, a.1, seven), cell(d.0, d.1, seven));

    browser.open(&app, &operator).await;
    browser
        .until(
            "document.getElementById('status').dataset.state === 'live'",
            "the map is live",
        )
        .await;
    browser
        .until(
            "Number(document.body.dataset.cells) >= 3",
            "A, B and D are drawn",
        )
        .await;
    browser
        .until(
            "document.getElementById('stat-online') && document.getElementById('stat-online').textContent === '6'",
            "the live counters name the six drivers online",
        )
        .await;
    assert!(
        browser
            .eval("!!document.querySelector('.leaflet-control-scale')")
            .await
            .as_bool()
            .unwrap(),
        "a scale bar is drawn"
    );
    assert_eq!(
        browser
            .eval("document.querySelectorAll('.leaflet-tile').length")
            .await,
        json!(0),
        "no tiles are fetched without ops.tile_url"
    );

    // Supply → demand: A (busiest in supply, no demand) pales; D (all demand) darkens.
    let (supply_a, supply_d) = (
        browser.fill_of(&cell_a).await,
        browser.fill_of(&cell_d).await,
    );
    let metric = browser.client.find(Locator::Css("#metric")).await.unwrap();
    metric.select_by_value("demand").await.unwrap();
    browser
        .until(
            "document.body.dataset.metric === 'demand'",
            "the metric switched",
        )
        .await;
    let (demand_a, demand_d) = (
        browser.fill_of(&cell_a).await,
        browser.fill_of(&cell_d).await,
    );
    assert_ne!(supply_a, demand_a, "A is recoloured");
    assert_ne!(supply_d, demand_d, "D is recoloured");
    browser.screenshot("ops-map.png").await;

    // Resolution 5: A's resolution-7 cell gives way to its parent.
    let res = browser.client.find(Locator::Css("#res")).await.unwrap();
    res.select_by_value("5").await.unwrap();
    let parent = cell(a.0, a.1, h3o::Resolution::Five);
    browser
        .until(
            &format!("!!document.querySelector('path.cell[data-cell=\"{parent}\"]') && !document.querySelector('path.cell[data-cell=\"{cell_a}\"]')"),
            "the map is redrawn at resolution 5",
        )
        .await;
    res.select_by_value("7").await.unwrap();
    browser.fill_of(&cell_a).await;

    // Clicking A lists its four drivers.
    let path = browser
        .client
        .find(Locator::Css(&format!("path.cell[data-cell=\"{cell_a}\"]")))
        .await
        .unwrap();
    path.click().await.unwrap();
    let listed = browser
        .until(
            "document.getElementById('cell-drivers') && document.getElementById('cell-drivers').textContent",
            "the clicked cell lists its drivers",
        )
        .await;
    assert_eq!(listed, json!("4 drivers"));
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#cell tr.cell-driver').length")
            .await,
        json!(4)
    );

    // Replay a finished trip: the marker starts at the pickup and ends where the driver stopped.
    let (trip_id, last) = driven_trip(&app, (a.0 + 0.002, a.1 + 0.002)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let input = browser.client.find(Locator::Css("#trip-id")).await.unwrap();
    input.send_keys(&trip_id).await.unwrap();
    browser
        .client
        .find(Locator::Css("#replay"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .until(
            "!!document.querySelector('path.trail') && !!document.getElementById('replay-time')",
            "the replay is drawn",
        )
        .await;
    let start_lat = browser
        .until(
            "document.querySelector('path.replay-marker').dataset.lat",
            "the marker is placed",
        )
        .await;
    let start_lat: f64 = start_lat.as_str().unwrap().parse().unwrap();
    browser
        .client
        .find(Locator::Css("#replay-play"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let end_lat = browser
        .until(
            &format!("Math.abs(Number(document.querySelector('path.replay-marker').dataset.lat) - {}) < 0.0002 && document.querySelector('path.replay-marker').dataset.lat", last.0),
            "the marker reaches the end of the trail",
        )
        .await;
    let end_lat: f64 = end_lat.as_str().unwrap().parse().unwrap();
    assert!(
        end_lat - start_lat > 0.005,
        "it moved north along the trail: {start_lat} → {end_lat}"
    );
    browser
        .until(
            "document.querySelectorAll('#trip tr.past').length > 0 && document.querySelectorAll('#trip tr.future').length === 0",
            "every event is behind the slider once the replay ends",
        )
        .await;
    assert!(
        browser
            .eval("[...document.querySelectorAll('#trip tr')].some(r => r.textContent.includes('trip.completed'))")
            .await
            .as_bool()
            .unwrap()
    );
    browser.screenshot("ops-replay.png").await;

    // A rider's token is refused and nothing is drawn.
    browser
        .open(&app, &app.token(Role::Rider, Uuid::now_v7()))
        .await;
    let refused = browser
        .until(
            "document.getElementById('status').dataset.state === 'error' && document.getElementById('status').textContent",
            "the rider is refused",
        )
        .await;
    assert!(refused.as_str().unwrap().contains("refused"), "{refused}");
    assert_eq!(
        browser
            .eval("document.querySelectorAll('path.cell').length")
            .await,
        json!(0)
    );
    browser.close().await;
}

/// The content security policy a page was served with.
fn csp_of(page: &crate::helpers::Response) -> String {
    page.headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[actix_rt::test]
async fn the_ops_page_takes_tiles_only_from_the_configured_server() {
    let app = spawn_app_with(|s| {
        s.ops.tile_url = Some("https://tiles.example.org/{z}/{x}/{y}.png".into());
        s.ops.tile_attribution = "© \"Example\" <maps>".into();
    })
    .await;
    let page = app.get("/ops", None).await;
    assert_eq!(page.status, 200);
    let csp = csp_of(&page);
    assert!(
        csp.contains("img-src 'self' data: https://tiles.example.org;"),
        "{csp}"
    );
    let html = page.body.as_str().unwrap_or_default();
    assert!(
        html.contains("data-tile-url=\"https://tiles.example.org/{z}/{x}/{y}.png\"")
            && html.contains("data-tile-attribution=\"© &quot;Example&quot; &lt;maps&gt;\""),
        "the tile settings reach the page, escaped"
    );
    let subdomains = spawn_app_with(|s| {
        s.ops.tile_url = Some("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png".into());
    })
    .await;
    let page = subdomains.get("/ops", None).await;
    let csp = csp_of(&page);
    assert!(
        csp.contains("img-src 'self' data: https://*.tile.openstreetmap.org;"),
        "a {{s}} subdomain becomes a wildcard: {csp}"
    );
    let plain = crate::helpers::spawn_app().await;
    let page = plain.get("/ops", None).await;
    let csp = csp_of(&page);
    assert!(csp.contains("img-src 'self' data:;"), "{csp}");
    for path in ["/ops/vendor/leaflet.js", "/ops/vendor/leaflet.css"] {
        let r = plain.get(path, None).await;
        assert_eq!(r.status, 200, "{path}");
    }
}
