//! Fares worked out by hand, surge from demand over supply, promotions.

use hexdispatch::config::{PromotionSettings, Settings};
use hexdispatch::dispatch::Role;
use hexdispatch::geo::{LatLng, destination};
use serde_json::json;
use time::macros::datetime;
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

const ORIGIN: (f64, f64) = (40.4168, -3.7038);

fn ten_km_east() -> (f64, f64) {
    let p = destination(LatLng::new(ORIGIN.0, ORIGIN.1).unwrap(), 90.0, 10_000.0);
    (p.lat(), p.lng())
}

fn promotions(s: &mut Settings) {
    s.pricing.promotions = vec![
        PromotionSettings {
            code: "TENOFF".into(),
            percent_off: Some(10),
            amount_off: None,
            valid_from: datetime!(2020-01-01 0:00 UTC),
            valid_until: datetime!(2100-01-01 0:00 UTC),
            per_rider_limit: 1,
        },
        PromotionSettings {
            code: "FIVE".into(),
            percent_off: None,
            amount_off: Some(500),
            valid_from: datetime!(2020-01-01 0:00 UTC),
            valid_until: datetime!(2100-01-01 0:00 UTC),
            per_rider_limit: 5,
        },
        PromotionSettings {
            code: "OLD".into(),
            percent_off: Some(50),
            amount_off: None,
            valid_from: datetime!(2020-01-01 0:00 UTC),
            valid_until: datetime!(2021-01-01 0:00 UTC),
            per_rider_limit: 5,
        },
    ];
}

async fn estimate(app: &TestApp, token: &str, body: serde_json::Value) -> crate::helpers::Response {
    app.post("/api/pricing/estimate", Some(token), &body.to_string())
        .await
}

fn trip_body(promo: Option<&str>) -> serde_json::Value {
    let to = ten_km_east();
    let mut body = json!({
        "origin": {"lat": ORIGIN.0, "lng": ORIGIN.1},
        "destination": {"lat": to.0, "lng": to.1},
    });
    if let Some(code) = promo {
        body["promo_code"] = json!(code);
    }
    body
}

#[actix_rt::test]
async fn estimates_match_fares_worked_out_by_hand() {
    let app = spawn_app_with(promotions).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    // 10 km great circle × 1.3 detour = 13 000 m; at 30 km/h that is 1 560 s = 26 min.
    // economy: 250 + 120 × 13 + 30 × 26 = 250 + 1560 + 780 = 2590.
    // comfort: 400 + 160 × 13 + 40 × 26 = 400 + 2080 + 1040 = 3520.
    // xl:      500 + 200 × 13 + 45 × 26 = 500 + 2600 + 1170 = 4270.
    let cases = [
        (None, None, 2_590, "economy by default"),
        (Some("comfort"), None, 3_520, "comfort"),
        (Some("XL"), None, 4_270, "xl, case-folded"),
        (None, Some("tenoff"), 2_331, "10 % off 2590 is 259"),
        (None, Some("FIVE"), 2_090, "500 flat off"),
    ];
    for (vehicle, promo, total, what) in cases {
        let mut body = trip_body(promo);
        if let Some(v) = vehicle {
            body["vehicle_type"] = json!(v);
        }
        let r = estimate(&app, &rider, body).await;
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        assert_eq!(
            r.body["fare"],
            json!({"amount": total, "currency": "USD"}),
            "{what}"
        );
        assert_eq!(r.body["distance_m"], 13_000, "{what}");
        assert_eq!(r.body["duration_s"], 1_560, "{what}");
        assert_eq!(r.body["surge"], 1.0, "{what}");
        assert_eq!(r.body["breakdown"]["total"]["amount"], total, "{what}");
    }
    // Checking a promotion does not use it up.
    let again = estimate(&app, &rider, trip_body(Some("TENOFF"))).await;
    assert_eq!(again.body["fare"]["amount"], 2_331);
}

#[actix_rt::test]
async fn promotions_are_refused_when_unknown_expired_or_used_up_and_given_back_on_cancel() {
    let app = spawn_app_with(promotions).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    for (code, error) in [
        ("NOPE", "promo_code_unknown"),
        ("OLD", "promo_code_expired"),
    ] {
        let r = estimate(&app, &rider, trip_body(Some(code))).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (422, Some(error)),
            "{code}"
        );
    }
    let first = app
        .post(
            "/api/trips",
            Some(&rider),
            &trip_body(Some("TENOFF")).to_string(),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["fare_estimate"]["amount"], 2_331);
    assert_eq!(first.body["promo_code"], "TENOFF");
    let second = app
        .post(
            "/api/trips",
            Some(&rider),
            &trip_body(Some("TENOFF")).to_string(),
        )
        .await;
    assert_eq!(
        (second.status, second.body["error"]["code"].as_str()),
        (422, Some("promo_code_used_up"))
    );
    let trip_id = first.body["trip_id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/api/trips/{trip_id}"), Some(&rider))
            .await
            .status,
        200
    );
    let third = app
        .post(
            "/api/trips",
            Some(&rider),
            &trip_body(Some("TENOFF")).to_string(),
        )
        .await;
    assert_eq!(
        third.status, 201,
        "a cancelled trip gives its use back: {}",
        third.body
    );
}

#[actix_rt::test]
async fn surge_follows_demand_over_supply_and_the_quoted_surge_is_kept() {
    let app = spawn_app_with(|s| s.matching.offer_timeout_s = 30.0).await;
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut quoted = Vec::new();
    for _ in 0..4 {
        let r = app
            .post("/api/trips", Some(&rider), &trip_body(None).to_string())
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        quoted.push((
            r.body["surge"].as_f64().unwrap(),
            r.body["fare_estimate"]["amount"].as_i64().unwrap(),
        ));
    }
    // No driver: demand 1, 2, 3, 4 over supply max(0, 1); capped at 3.0.
    assert_eq!(
        quoted,
        [(1.0, 2_590), (2.0, 5_180), (3.0, 7_770), (3.0, 7_770)],
        "surge multiplies the fare before the minimum"
    );
    let q = format!("/api/pricing/surge?lat={}&lng={}", ORIGIN.0, ORIGIN.1);
    let r = app.get(&q, Some(&rider)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["multiplier"].as_f64(), r.body["demand"].as_u64()),
        (Some(3.0), Some(4))
    );
    assert_eq!(r.body["resolution"], 7);
    let cell = LatLng::new(ORIGIN.0, ORIGIN.1)
        .unwrap()
        .to_h3()
        .to_cell(h3o::Resolution::Seven);
    assert_eq!(r.body["cell"], cell.to_string());

    // Two available drivers in the cell (of a type these trips do not want): 4 / 2 = 2.0.
    for _ in 0..2 {
        let driver = Uuid::now_v7();
        let token = app.driver_token(driver, "xl");
        app.put(
            &format!("/api/drivers/{driver}/location"),
            Some(&token),
            &json!({"lat": ORIGIN.0, "lng": ORIGIN.1}).to_string(),
        )
        .await;
        assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    }
    let r = app.get(&q, Some(&rider)).await;
    assert_eq!(
        (r.body["multiplier"].as_f64(), r.body["supply"].as_u64()),
        (Some(2.0), Some(2)),
        "{}",
        r.body
    );
    let est = estimate(&app, &rider, trip_body(None)).await;
    assert_eq!(
        (
            est.body["surge"].as_f64(),
            est.body["fare"]["amount"].as_i64()
        ),
        (Some(2.0), Some(5_180))
    );
}
