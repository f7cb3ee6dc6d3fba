//! The operators' heatmap over HTTP and `/ws/ops`.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use hexdispatch::geo::LatLng;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

fn cell(lat: f64, lng: f64, res: u8) -> String {
    LatLng::new(lat, lng)
        .unwrap()
        .to_h3()
        .to_cell(h3o::Resolution::try_from(res).unwrap())
        .to_string()
}

async fn place(app: &TestApp, driver: Uuid, lat: f64, lng: f64) {
    let token = app.driver_token(driver, "economy");
    let body = json!({"lat": lat, "lng": lng}).to_string();
    assert_eq!(
        app.put(
            &format!("/api/drivers/{driver}/location"),
            Some(&token),
            &body
        )
        .await
        .status,
        200
    );
    assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
}

fn find<'a>(cells: &'a Value, id: &str) -> Option<&'a Value> {
    cells.as_array().unwrap().iter().find(|c| c["cell"] == id)
}

#[actix_rt::test]
async fn the_heatmap_counts_supply_and_demand_per_cell() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 30.0).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let (paris, lyon) = ((48.8566, 2.3522), (45.7640, 4.8357));
    for _ in 0..3 {
        place(&app, Uuid::now_v7(), paris.0, paris.1).await;
    }
    place(&app, Uuid::now_v7(), lyon.0, lyon.1).await;
    // Two requests from Lyon, where one driver waits: it gets an offer and is no longer available.
    let rider = app.token(Role::Rider, Uuid::now_v7());
    for _ in 0..2 {
        app.request_trip(&rider, lyon, (45.77, 4.86)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = app
        .get("/api/ops/heatmap?res=7&metric=supply", Some(&operator))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["res"], 7);
    let cells = &r.body["cells"];
    let p = find(cells, &cell(paris.0, paris.1, 7)).expect("Paris is on the map");
    assert_eq!(
        (
            p["supply"].as_u64(),
            p["demand"].as_u64(),
            p["surge"].as_f64()
        ),
        (Some(3), Some(0), Some(1.0))
    );
    let l = find(cells, &cell(lyon.0, lyon.1, 7)).expect("Lyon is on the map");
    assert_eq!(
        (l["supply"].as_u64(), l["demand"].as_u64()),
        (Some(0), Some(2)),
        "{l}"
    );
    assert_eq!(l["surge"], 2.0, "two requests over no available driver");
    assert_eq!(cells[0]["cell"], p["cell"], "ordered by supply");
    let by_demand = app
        .get("/api/ops/heatmap?res=5&metric=demand", Some(&operator))
        .await;
    // Demand is kept per surge cell (res 7); coarser maps add it up by H3 parent.
    let lyon7 = LatLng::new(lyon.0, lyon.1)
        .unwrap()
        .to_h3()
        .to_cell(h3o::Resolution::Seven);
    let parent = lyon7.parent(h3o::Resolution::Five).unwrap().to_string();
    assert_eq!(by_demand.body["cells"][0]["cell"], parent.as_str());

    let cases = [
        (
            "/api/ops/heatmap?res=9",
            operator.clone(),
            400,
            "finer than the demand cells",
        ),
        (
            "/api/ops/heatmap?res=3",
            operator.clone(),
            400,
            "too coarse",
        ),
        (
            "/api/ops/heatmap?res=x",
            operator.clone(),
            400,
            "not a number",
        ),
        (
            "/api/ops/heatmap?metric=heat",
            operator.clone(),
            400,
            "unknown metric",
        ),
        ("/api/ops/heatmap", rider.clone(), 403, "a rider"),
        (
            "/api/ops/heatmap",
            app.driver_token(Uuid::now_v7(), "economy"),
            403,
            "a driver",
        ),
    ];
    for (path, token, status, what) in cases {
        let r = app.get(path, Some(&token)).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
    }
    assert_eq!(app.get("/api/ops/heatmap", None).await.status, 401);
}

#[actix_rt::test]
async fn the_ops_socket_pushes_heatmaps_that_follow_the_drivers() {
    let app = spawn_app_with(|s| s.ops.heatmap_interval_ms = 100).await;
    let driver = Uuid::now_v7();
    place(&app, driver, 52.52, 13.405).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let (_, framed) = awc::Client::default()
        .ws(format!("{}/ws/ops?res=7&token={operator}", app.ws_address))
        .connect()
        .await
        .unwrap();
    let mut ws = crate::helpers::Socket::from(framed);
    let first = ws.recv_type("heatmap").await;
    assert!(
        find(&first["cells"], &cell(52.52, 13.405, 7)).is_some(),
        "{first}"
    );
    let stats = ws.recv_type("stats").await;
    assert_eq!(
        stats["drivers_online"], 1,
        "one driver online, no socket: {stats}"
    );
    assert!(stats["driver_actors"].as_u64().unwrap() >= 1, "{stats}");
    // The driver drives 20 km away: a later heatmap shows it there and not here.
    place(&app, driver, 52.70, 13.405).await;
    let mut moved = false;
    for _ in 0..20 {
        let frame = ws.recv_type("heatmap").await;
        if find(&frame["cells"], &cell(52.70, 13.405, 7)).is_some()
            && find(&frame["cells"], &cell(52.52, 13.405, 7)).is_none()
        {
            moved = true;
            break;
        }
    }
    assert!(moved, "the heatmap followed the driver");
    // It goes offline: the count follows.
    let token = app.driver_token(driver, "economy");
    assert_eq!(app.set_status(driver, &token, "offline").await.status, 200);
    let mut counted = false;
    for _ in 0..20 {
        if ws.recv_type("stats").await["drivers_online"] == 0 {
            counted = true;
            break;
        }
    }
    assert!(counted, "drivers_online counts the driver out");

    let (_, framed) = awc::Client::default()
        .ws(format!(
            "{}/ws/ops?token={}",
            app.ws_address,
            app.token(Role::Rider, Uuid::now_v7())
        ))
        .connect()
        .await
        .unwrap();
    let mut refused = crate::helpers::Socket::from(framed);
    assert_eq!(refused.expect_close().await, Some(1008), "operators only");
}
