use std::time::Duration;

use hexdispatch::dispatch::Role;
use hexdispatch::geo::LatLng;
use uuid::Uuid;

use crate::helpers::{TestApp, bad_tokens, spawn_app, spawn_app_with};

async fn put_driver(app: &TestApp, vehicle: &str, lat: f64, lng: f64, online: bool) -> Uuid {
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, vehicle);
    if online {
        assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    }
    let body = format!(r#"{{"lat":{lat},"lng":{lng}}}"#);
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
    driver
}

fn ids(body: &serde_json::Value) -> Vec<String> {
    body["drivers"]
        .as_array()
        .expect("drivers array")
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap().to_string())
        .collect()
}

#[actix_rt::test]
async fn nearby_lists_online_drivers_nearest_first_with_distances() {
    let app = spawn_app().await;
    let near = put_driver(&app, "economy", 40.4170, -3.7040, true).await;
    let mid = put_driver(&app, "economy", 40.4200, -3.7040, true).await;
    let far = put_driver(&app, "xl", 40.4300, -3.7040, true).await;
    let offline = put_driver(&app, "economy", 40.4168, -3.7038, false).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());

    let r = app.nearby(&rider, "lat=40.4168&lng=-3.7038").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        ids(&r.body),
        vec![near.to_string(), mid.to_string(), far.to_string()]
    );
    assert!(
        !ids(&r.body).contains(&offline.to_string()),
        "offline drivers are not served"
    );
    let first = &r.body["drivers"][0];
    let expected = LatLng::new(40.4170, -3.7040)
        .unwrap()
        .distance_m(LatLng::new(40.4168, -3.7038).unwrap());
    assert!((first["distance_m"].as_f64().unwrap() - expected).abs() < 0.01);
    assert_eq!(first["vehicle_type"], "economy");
    assert_eq!(first["lat"], 40.4170);

    let r = app.nearby(&rider, "lat=40.4168&lng=-3.7038&limit=1").await;
    assert_eq!(ids(&r.body), vec![near.to_string()]);
    let r = app
        .nearby(&rider, "lat=40.4168&lng=-3.7038&vehicle_type=xl")
        .await;
    assert_eq!(ids(&r.body), vec![far.to_string()]);
    let r = app
        .nearby(&rider, "lat=40.4168&lng=-3.7038&vehicle_type=XL")
        .await;
    assert_eq!(
        ids(&r.body),
        vec![far.to_string()],
        "vehicle types fold case"
    );
    let r = app
        .nearby(&rider, "lat=40.4168&lng=-3.7038&vehicle_type=hovercraft")
        .await;
    assert_eq!(
        (r.status, ids(&r.body).len()),
        (200, 0),
        "a type nobody has matches nobody"
    );
    let r = app
        .nearby(&rider, "lat=40.4168&lng=-3.7038&radius=500")
        .await;
    assert_eq!(
        ids(&r.body),
        vec![near.to_string(), mid.to_string()],
        "radius bounds the answer"
    );

    let operator = app.token(Role::Operator, Uuid::now_v7());
    assert_eq!(
        app.nearby(&operator, "lat=40.4168&lng=-3.7038")
            .await
            .status,
        200
    );
}

#[actix_rt::test]
async fn a_driver_going_offline_leaves_the_answer() {
    let app = spawn_app().await;
    let driver = put_driver(&app, "economy", 35.68, 139.76, true).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    assert_eq!(
        ids(&app.nearby(&rider, "lat=35.68&lng=139.76").await.body),
        vec![driver.to_string()]
    );
    let token = app.driver_token(driver, "economy");
    app.set_status(driver, &token, "offline").await;
    assert!(ids(&app.nearby(&rider, "lat=35.68&lng=139.76").await.body).is_empty());
    app.set_status(driver, &token, "online").await;
    assert_eq!(
        ids(&app.nearby(&rider, "lat=35.68&lng=139.76").await.body),
        vec![driver.to_string()],
        "back online with its last, still fresh, position"
    );
}

#[actix_rt::test]
async fn stale_positions_are_neither_served_nor_kept_in_the_index() {
    let app = spawn_app_with(|s| s.location.ttl_s = 0.6).await;
    let driver = put_driver(&app, "economy", -33.87, 151.21, true).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    assert_eq!(
        ids(&app.nearby(&rider, "lat=-33.87&lng=151.21").await.body),
        vec![driver.to_string()]
    );
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(
        ids(&app.nearby(&rider, "lat=-33.87&lng=151.21").await.body).is_empty(),
        "stale: not served"
    );
    let mut held = 0;
    for shard in app.core.shards.shards() {
        held += shard
            .addr
            .send(hexdispatch::actors::cell::Count)
            .await
            .unwrap();
    }
    assert_eq!(held, 0, "stale: evicted from the index");
    // A fresh report brings it back.
    let token = app.driver_token(driver, "economy");
    app.put(
        &format!("/api/drivers/{driver}/location"),
        Some(&token),
        r#"{"lat":-33.87,"lng":151.21}"#,
    )
    .await;
    assert_eq!(
        ids(&app.nearby(&rider, "lat=-33.87&lng=151.21").await.body),
        vec![driver.to_string()]
    );
}

#[actix_rt::test]
async fn nearby_refuses_drivers_and_bad_credentials() {
    let app = spawn_app().await;
    let driver = app.token(Role::Driver, Uuid::now_v7());
    let r = app.nearby(&driver, "lat=1&lng=1").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    for (name, token) in bad_tokens(Uuid::now_v7(), Role::Rider) {
        let r = app
            .get("/api/locations/nearby?lat=1&lng=1", token.as_deref())
            .await;
        assert_eq!(r.status, 401, "{name}");
        assert!(r.body["error"]["code"].is_string(), "{name}");
    }
}

#[actix_rt::test]
async fn nearby_names_bad_input_precisely() {
    let app = spawn_app().await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let cases = [
        ("", "missing_field", "lat"),
        ("lng=1", "missing_field", "lat"),
        ("lat=1", "missing_field", "lng"),
        ("lat=abc&lng=1", "invalid_field", "lat"),
        ("lat=NaN&lng=1", "invalid_field", "lat"),
        ("lat=inf&lng=1", "invalid_field", "lat"),
        ("lat=1&lng=-Infinity", "invalid_field", "lng"),
        ("lat=90.1&lng=1", "out_of_range", "lat"),
        ("lat=-90.1&lng=1", "out_of_range", "lat"),
        ("lat=1&lng=180.1", "out_of_range", "lng"),
        ("lat=1&lng=-180.1", "out_of_range", "lng"),
        ("lat=1&lng=1&radius=0", "out_of_range", "radius"),
        ("lat=1&lng=1&radius=-5", "out_of_range", "radius"),
        ("lat=1&lng=1&radius=50001", "out_of_range", "radius"),
        ("lat=1&lng=1&radius=wide", "invalid_field", "radius"),
        ("lat=1&lng=1&limit=0", "out_of_range", "limit"),
        ("lat=1&lng=1&limit=101", "out_of_range", "limit"),
        ("lat=1&lng=1&limit=-3", "out_of_range", "limit"),
        ("lat=1&lng=1&limit=2.5", "invalid_field", "limit"),
        (
            "lat=1&lng=1&vehicle_type=semi;colon",
            "invalid_field",
            "vehicle_type",
        ),
    ];
    for (query, code, mentions) in cases {
        let r = app.nearby(&rider, query).await;
        assert_eq!(r.status, 400, "{query:?}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{query:?}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{query:?}: {message}");
    }
    for edge in [
        "lat=90&lng=180&radius=50000&limit=100",
        "lat=-90&lng=-180&radius=0.5&limit=1",
    ] {
        assert_eq!(
            app.nearby(&rider, edge).await.status,
            200,
            "{edge} is on the edge and valid"
        );
    }
}
