//! The `/ops` page in a real headless browser (Debian's chromium): it draws hexagons where drivers
//! are, recolours when they move, and refuses a non-operator token. With
//! `HEXDISPATCH_OPS_SCREENSHOT=<file.png>` it also saves a screenshot with about 2 000 drivers.

use std::time::Duration;

use hexdispatch::actors::driver::{Location, LocationUpdate, SetStatus};
use hexdispatch::dispatch::DriverStatus;
use hexdispatch::dispatch::Role;
use hexdispatch::geo::LatLng;
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

fn chromium() -> Option<String> {
    let path =
        std::env::var("HEXDISPATCH_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("HEXDISPATCH_REQUIRE_SERVICES").is_none(),
        "chromium is required here but {path} does not exist"
    );
    if let Ok(mut stderr) = std::fs::OpenOptions::new().append(true).open("/dev/stderr") {
        use std::io::Write as _;
        let _ = stderr.write_all(format!("SKIPPED: browser tests ({path} not found)\n").as_bytes());
    }
    None
}

/// Loads the page for `token` and returns the DOM after its scripts ran (or a screenshot).
async fn render(browser: &str, app: &TestApp, token: &str, extra: &[String]) -> String {
    let url = format!("{}/ops#token={token}", app.address);
    let profile = std::env::temp_dir().join(format!("hexdispatch-chromium-{}", Uuid::now_v7()));
    let out = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .output()
        .await
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn dom(browser: &str, app: &TestApp, token: &str) -> String {
    render(browser, app, token, &["--dump-dom".to_owned()]).await
}

/// `data-cell` → `fill` of every polygon in a dumped DOM.
fn polygons(dom: &str) -> Vec<(String, String)> {
    dom.split("<polygon")
        .skip(1)
        .map(|p| {
            let attr = |name: &str| {
                p.split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_owned()
            };
            (attr("data-cell"), attr("fill"))
        })
        .collect()
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

fn cell(lat: f64, lng: f64) -> String {
    LatLng::new(lat, lng)
        .unwrap()
        .to_h3()
        .to_cell(h3o::Resolution::Seven)
        .to_string()
}

#[actix_rt::test]
async fn the_ops_page_draws_drivers_follows_them_and_refuses_non_operators() {
    let Some(browser) = chromium() else {
        return;
    };
    let app = spawn_app_with(|s| s.ops.heatmap_interval_ms = 200).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let drivers: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let (a, b) = ((52.52, 13.405), (52.45, 13.30));
    for (i, d) in drivers.iter().enumerate() {
        let at = if i < 4 { a } else { b };
        put_driver(&app, *d, at.0, at.1).await;
    }
    let first = dom(&browser, &app, &operator).await;
    let drawn = polygons(&first);
    assert!(
        first.contains("data-state=\"live\""),
        "the page is live: {}",
        &first[..first.len().min(2000)]
    );
    let cells: Vec<&str> = drawn.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(drawn.len(), 2, "one hexagon per occupied cell: {cells:?}");
    assert!(cells.contains(&cell(a.0, a.1).as_str()) && cells.contains(&cell(b.0, b.1).as_str()));
    let fill_a = drawn
        .iter()
        .find(|(c, _)| *c == cell(a.0, a.1))
        .unwrap()
        .1
        .clone();

    // Three of A's drivers move to C: A pales, C appears.
    let c = (52.60, 13.50);
    for d in &drivers[..3] {
        put_driver(&app, *d, c.0, c.1).await;
    }
    let second = polygons(&dom(&browser, &app, &operator).await);
    assert_eq!(second.len(), 3, "{second:?}");
    let fill_a2 = second
        .iter()
        .find(|(x, _)| *x == cell(a.0, a.1))
        .unwrap()
        .1
        .clone();
    assert_ne!(fill_a, fill_a2, "the cell was recoloured");
    assert!(second.iter().any(|(x, _)| *x == cell(c.0, c.1)));

    // A rider's token is refused, and nothing is drawn.
    let refused = dom(&browser, &app, &app.token(Role::Rider, Uuid::now_v7())).await;
    assert!(
        refused.contains("data-state=\"error\""),
        "{}",
        &refused[..refused.len().min(2000)]
    );
    assert!(refused.contains("refused"));
    assert!(polygons(&refused).is_empty());
}

#[actix_rt::test]
async fn a_screenshot_with_two_thousand_drivers() {
    let Ok(path) = std::env::var("HEXDISPATCH_OPS_SCREENSHOT") else {
        return;
    };
    let Some(browser) = chromium() else {
        return;
    };
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 60.0).await;
    let mut rng = StdRng::seed_from_u64(2_000);
    // Denser in the centre, like a city.
    for _ in 0..2_000 {
        let r = rng.random_range(0.0f64..1.0).powf(1.5) * 0.12;
        let t = rng.random_range(0.0..std::f64::consts::TAU);
        put_driver(
            &app,
            Uuid::now_v7(),
            52.52 + r * t.sin(),
            13.405 + r * 1.6 * t.cos(),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    render(&browser, &app, &operator, &[format!("--screenshot={path}")]).await;
    assert!(std::path::Path::new(&path).exists());
}
