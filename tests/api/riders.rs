//! Riders and money (SPEC §4, §6, §7): ratings, refunds, charged cancellation fees, trips booked
//! ahead, promotions managed by operators, and the fare cap, through the real server.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::payments::{PICKUP, accepted_trip, completed_trip, status_becomes, top_up};

const DROPOFF: (f64, f64) = (48.87, 2.30);

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The trip's event types, oldest first.
async fn event_types(app: &TestApp, trip_id: &str) -> Vec<String> {
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let r = app
        .get(&format!("/api/trips/{trip_id}/events"), Some(&operator))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["type"]))
        .collect()
}

/// Waits until the trip's log holds an event of `kind`.
async fn has_event(app: &TestApp, trip_id: &str, kind: &str) -> bool {
    for _ in 0..150 {
        if event_types(app, trip_id).await.iter().any(|t| t == kind) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The kinds of the rider's ledger lines, newest first.
async fn transaction_kinds(app: &TestApp, rider: Uuid, token: &str) -> Vec<String> {
    let lines = app
        .get(&format!("/api/riders/{rider}/transactions"), Some(token))
        .await;
    assert_eq!(lines.status, 200, "{}", lines.body);
    lines.body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["kind"]))
        .collect()
}

/// A SQLite file of its own (removed with `remove_sqlite`) and its URL, for a test that restarts
/// the engine on the same database.
fn sqlite_file(tag: &str) -> (std::path::PathBuf, String) {
    let file = std::env::temp_dir().join(format!("{tag}-{}.db", Uuid::now_v7()));
    let url = format!("sqlite://{}?mode=rwc", file.display());
    (file, url)
}

async fn balance(app: &TestApp, rider: Uuid) -> i64 {
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let r = app
        .get(&format!("/api/riders/{rider}/wallet"), Some(&operator))
        .await;
    r.body["balance"]["amount"].as_i64().unwrap()
}

async fn ledger_is_whole(app: &TestApp) {
    let totals = app
        .core
        .persistence()
        .unwrap()
        .store()
        .ledger_totals()
        .await
        .unwrap();
    assert!(totals.iter().all(|(_, t)| *t == 0), "{totals:?}");
}

#[actix_rt::test]
async fn each_side_rates_a_finished_trip_once_and_the_driver_average_shows() {
    let app = spawn_app().await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let (trip_id, driver) = completed_trip(&app, &rider_token).await;
    let driver_token = app.driver_token(driver, "economy");
    let path = format!("/api/trips/{trip_id}/rating");

    // Bad input first: nothing is stored by it.
    for (body, code) in [
        (json!({"stars": 0}), "out_of_range"),
        (json!({"stars": 6}), "out_of_range"),
        (json!({"stars": -1}), "out_of_range"),
        (json!({"stars": "5"}), "invalid_field"),
        (json!({"stars": 4.5}), "invalid_field"),
        (json!({}), "missing_field"),
        (
            json!({"stars": 5, "comment": "x".repeat(501)}),
            "invalid_field",
        ),
    ] {
        let r = app.post(&path, Some(&rider_token), &body.to_string()).await;
        assert_eq!(r.status, 400, "{body} → {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{body} → {}", r.body);
    }
    for (token, who) in [
        (app.token(Role::Rider, Uuid::now_v7()), "another rider"),
        (
            app.driver_token(Uuid::now_v7(), "economy"),
            "another driver",
        ),
        (app.token(Role::Operator, Uuid::now_v7()), "an operator"),
    ] {
        let r = app
            .post(&path, Some(&token), &json!({"stars": 1}).to_string())
            .await;
        assert_eq!(r.status, 403, "{who} may not rate: {}", r.body);
    }
    let r = app
        .post(&path, None, &json!({"stars": 1}).to_string())
        .await;
    assert_eq!(r.status, 401);

    let r = app
        .post(
            &path,
            Some(&rider_token),
            &json!({"stars": 5, "comment": "smooth ride"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["by"], "rider");
    assert_eq!(r.body["rated_id"], driver.to_string());
    let again = app
        .post(&path, Some(&rider_token), &json!({"stars": 1}).to_string())
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "already_rated");
    let by_driver = app
        .post(&path, Some(&driver_token), &json!({"stars": 4}).to_string())
        .await;
    assert_eq!(by_driver.status, 201, "{}", by_driver.body);
    assert_eq!(by_driver.body["rated_id"], rider.to_string());

    let me = app
        .get(&format!("/api/drivers/{driver}"), Some(&driver_token))
        .await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["rating"]["count"], 1, "{}", me.body);
    assert_eq!(me.body["rating"]["average"], 5.0, "{}", me.body);

    // A second trip of another rider with another driver does not touch this driver's figures;
    // two ratings of one driver average out.
    let second_rider = app.token(Role::Rider, Uuid::now_v7());
    let (second, other_driver) = completed_trip(&app, &second_rider).await;
    let r = app
        .post(
            &format!("/api/trips/{second}/rating"),
            Some(&second_rider),
            &json!({"stars": 2}).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let mine = app
        .get(&format!("/api/drivers/{driver}"), Some(&operator))
        .await;
    assert_eq!(mine.body["rating"]["count"], 1, "{}", mine.body);
    let theirs = app
        .get(&format!("/api/drivers/{other_driver}"), Some(&operator))
        .await;
    assert_eq!(theirs.body["rating"]["average"], 2.0, "{}", theirs.body);
}

#[actix_rt::test]
async fn a_trip_is_rated_only_once_it_is_completed() {
    let app = spawn_app().await;
    let rider_token = app.token(Role::Rider, Uuid::now_v7());
    let (trip_id, _driver, driver_token) = accepted_trip(&app, &rider_token).await;
    let path = format!("/api/trips/{trip_id}/rating");
    for token in [&rider_token, &driver_token] {
        let r = app
            .post(&path, Some(token), &json!({"stars": 5}).to_string())
            .await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "trip_not_completed");
    }
    let unknown = app
        .post(
            &format!("/api/trips/{}/rating", Uuid::now_v7()),
            Some(&rider_token),
            &json!({"stars": 5}).to_string(),
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let garbage = app
        .post(
            "/api/trips/not-a-uuid/rating",
            Some(&rider_token),
            &json!({"stars": 5}).to_string(),
        )
        .await;
    assert_eq!(garbage.status, 400, "{}", garbage.body);
}

#[actix_rt::test]
async fn an_operator_refunds_a_charge_in_parts_once_per_reference_and_never_above_it() {
    let app = spawn_app().await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    assert_eq!(top_up(&app, rider, 100_000, "seed").await.status, 200);
    let (trip_id, driver) = completed_trip(&app, &rider_token).await;
    let paid = status_becomes(&app, &rider_token, &trip_id, "PAYMENT_PROCESSED").await;
    let fare = paid["fare"]["amount"].as_i64().unwrap();
    assert!(fare > 2, "{paid}");
    let after_charge = balance(&app, rider).await;
    assert_eq!(after_charge, 100_000 - fare);
    let path = format!("/api/trips/{trip_id}/refund");
    let refund = |amount: Option<i64>, reference: &str| {
        let mut body = json!({"reason": "detour", "reference": reference});
        if let Some(a) = amount {
            body["amount"] = json!({"amount": a, "currency": "USD"});
        }
        body.to_string()
    };

    let first = app
        .post(&path, Some(&operator), &refund(Some(1), "r-1"))
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["refunded"]["amount"], 1);
    assert_eq!(first.body["applied"], true);
    assert_eq!(first.body["balance"]["amount"], after_charge + 1);
    // The same reference again refunds nothing and answers alike.
    let replay = app
        .post(&path, Some(&operator), &refund(Some(1), "r-1"))
        .await;
    assert_eq!(replay.status, 201, "{}", replay.body);
    assert_eq!(replay.body["applied"], false);
    assert_eq!(balance(&app, rider).await, after_charge + 1);
    // More than is left: refused, nothing moves.
    let too_much = app
        .post(&path, Some(&operator), &refund(Some(fare), "r-2"))
        .await;
    assert_eq!(too_much.status, 422, "{}", too_much.body);
    assert_eq!(too_much.body["error"]["code"], "refund_exceeds_charge");
    // The rest, by leaving out the amount.
    let rest = app.post(&path, Some(&operator), &refund(None, "r-3")).await;
    assert_eq!(rest.status, 201, "{}", rest.body);
    assert_eq!(rest.body["refunded"]["amount"], fare - 1);
    assert_eq!(rest.body["total_refunded"]["amount"], fare);
    assert_eq!(balance(&app, rider).await, 100_000);
    let nothing_left = app.post(&path, Some(&operator), &refund(None, "r-4")).await;
    assert_eq!(nothing_left.status, 422, "{}", nothing_left.body);
    ledger_is_whole(&app).await;

    // The driver's share went back: its earnings for the trip sum to zero.
    let earnings = app
        .get(&format!("/api/drivers/{driver}/earnings"), Some(&operator))
        .await;
    assert_eq!(earnings.body["total"]["amount"], 0, "{}", earnings.body);
    let kinds: Vec<&str> = earnings.body["trips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["fare", "refund", "refund"], "{}", earnings.body);
    let receipt = app
        .get(&format!("/api/trips/{trip_id}/receipt"), Some(&rider_token))
        .await;
    assert_eq!(
        receipt.body["payment"]["status"], "refunded",
        "{}",
        receipt.body
    );
    assert_eq!(receipt.body["payment"]["refunded"]["amount"], fare);
    assert_eq!(
        receipt.body["payment"]["refunds"].as_array().unwrap().len(),
        2
    );
    let types = event_types(&app, &trip_id).await;
    assert_eq!(
        types.iter().filter(|t| *t == "payment.refunded").count(),
        2,
        "{types:?}"
    );
    assert_eq!(
        transaction_kinds(&app, rider, &rider_token).await,
        ["refund", "refund", "charge", "topup"]
    );
}

#[actix_rt::test]
async fn refunds_refuse_bad_input_riders_and_uncharged_trips() {
    let app = spawn_app().await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    // Completed without funds: PAYMENT_FAILED, nothing charged.
    let (trip_id, driver) = completed_trip(&app, &rider_token).await;
    status_becomes(&app, &rider_token, &trip_id, "PAYMENT_FAILED").await;
    let path = format!("/api/trips/{trip_id}/refund");
    let good = json!({"reason": "r", "reference": "ref"}).to_string();
    let not_charged = app.post(&path, Some(&operator), &good).await;
    assert_eq!(not_charged.status, 409, "{}", not_charged.body);
    assert_eq!(not_charged.body["error"]["code"], "not_charged");
    for (token, who) in [
        (rider_token.clone(), "its rider"),
        (app.driver_token(driver, "economy"), "its driver"),
    ] {
        let r = app.post(&path, Some(&token), &good).await;
        assert_eq!(r.status, 403, "{who}: {}", r.body);
    }
    assert_eq!(app.post(&path, None, &good).await.status, 401);
    let unknown = app
        .post(
            &format!("/api/trips/{}/refund", Uuid::now_v7()),
            Some(&operator),
            &good,
        )
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    for (body, status) in [
        (json!({"reference": "x"}), 400),
        (json!({"reason": "x"}), 400),
        (json!({"reason": "", "reference": "x"}), 400),
        (
            json!({"reason": "x", "reference": "x", "amount": {"amount": 0, "currency": "USD"}}),
            400,
        ),
        (
            json!({"reason": "x", "reference": "x", "amount": {"amount": -5, "currency": "USD"}}),
            400,
        ),
        (
            json!({"reason": "x", "reference": "x", "amount": {"amount": 5}}),
            400,
        ),
        (
            json!({"reason": "x", "reference": "x", "amount": {"amount": 5, "currency": "US"}}),
            400,
        ),
        (json!({"reason": "x", "reference": "x", "amount": "5"}), 400),
    ] {
        let r = app.post(&path, Some(&operator), &body.to_string()).await;
        assert_eq!(r.status, status, "{body} → {}", r.body);
    }
    let r = app.post(&path, Some(&operator), "{not json").await;
    assert_eq!(r.status, 400);

    // Paid now by a top-up; a refund in another currency is refused.
    assert_eq!(top_up(&app, rider, 100_000, "later").await.status, 200);
    status_becomes(&app, &rider_token, &trip_id, "PAYMENT_PROCESSED").await;
    let eur =
        json!({"reason": "x", "reference": "eur", "amount": {"amount": 1, "currency": "EUR"}});
    let r = app.post(&path, Some(&operator), &eur.to_string()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "currency_mismatch");
    ledger_is_whole(&app).await;
}

#[actix_rt::test]
async fn a_late_cancellation_fee_is_charged_once_and_retried_after_a_top_up() {
    let app = spawn_app_with(|s| s.trip.free_cancel_s = 0.0).await;
    // One rider with funds, one without.
    for funded in [true, false] {
        let rider = Uuid::now_v7();
        let rider_token = app.token(Role::Rider, rider);
        if funded {
            assert_eq!(
                top_up(&app, rider, 10_000, &format!("f-{rider}"))
                    .await
                    .status,
                200
            );
        }
        let (trip_id, _driver, _) = accepted_trip(&app, &rider_token).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cancelled = app
            .delete(&format!("/api/trips/{trip_id}"), Some(&rider_token))
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        let fee = cancelled.body["cancellation_fee"]["amount"]
            .as_i64()
            .unwrap();
        assert_eq!(fee, 500, "the economy tariff's fee: {}", cancelled.body);
        let receipt_path = format!("/api/trips/{trip_id}/receipt");
        if funded {
            assert!(has_event(&app, &trip_id, "payment.fee_captured").await);
            assert_eq!(balance(&app, rider).await, 10_000 - fee);
        } else {
            assert!(has_event(&app, &trip_id, "payment.fee_failed").await);
            let receipt = app.get(&receipt_path, Some(&rider_token)).await;
            assert_eq!(
                receipt.body["payment"]["status"], "failed",
                "{}",
                receipt.body
            );
            let topped = top_up(&app, rider, 2_000, &format!("t-{rider}")).await;
            assert_eq!(topped.body["payments_retried"], 1, "{}", topped.body);
            assert_eq!(topped.body["balance"]["amount"], 2_000 - fee);
            assert!(has_event(&app, &trip_id, "payment.fee_captured").await);
        }
        let receipt = app.get(&receipt_path, Some(&rider_token)).await;
        assert_eq!(
            receipt.body["payment"]["status"], "captured",
            "{}",
            receipt.body
        );
        assert_eq!(receipt.body["payment"]["kind"], "cancellation_fee");
        assert_eq!(receipt.body["payment"]["amount"]["amount"], fee);
        let lines = app
            .get(
                &format!("/api/riders/{rider}/transactions"),
                Some(&rider_token),
            )
            .await;
        assert_eq!(
            lines.body["transactions"][0]["kind"], "cancellation_fee",
            "{}",
            lines.body
        );
        assert_eq!(lines.body["transactions"][0]["trip_id"], trip_id.as_str());
        // A redelivered cancellation charges nothing more.
        let id = Uuid::parse_str(&trip_id).unwrap();
        app.core.payments.settle(&app.core, id).await.unwrap();
        assert_eq!(
            event_types(&app, &trip_id)
                .await
                .iter()
                .filter(|t| *t == "payment.fee_captured")
                .count(),
            1
        );
    }
    ledger_is_whole(&app).await;
}

#[actix_rt::test]
async fn a_free_cancellation_charges_nothing() {
    let app = spawn_app().await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    assert_eq!(top_up(&app, rider, 10_000, "free").await.status, 200);
    let (trip_id, _, _) = accepted_trip(&app, &rider_token).await;
    let cancelled = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert!(
        cancelled.body["cancellation_fee"].is_null(),
        "{}",
        cancelled.body
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(balance(&app, rider).await, 10_000);
    let receipt = app
        .get(&format!("/api/trips/{trip_id}/receipt"), Some(&rider_token))
        .await;
    assert_eq!(receipt.body["payment"]["status"], "not_applicable");
}

fn at(ms_from_now: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(ms_from_now);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn scheduled_body(pickup_at: &str) -> String {
    json!({
        "origin": {"lat": PICKUP.0, "lng": PICKUP.1},
        "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1},
        "pickup_at": pickup_at,
    })
    .to_string()
}

fn schedule_quickly(s: &mut hexdispatch::config::Settings) {
    s.trip.schedule_min_lead_s = 2.0;
    s.trip.schedule_dispatch_lead_s = 1.0;
}

#[actix_rt::test]
async fn a_trip_booked_ahead_waits_then_matches_on_time() {
    let app = spawn_app_with(schedule_quickly).await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let mut rider_ws = app.rider_socket(&rider_token).await;
    let (_driver, mut driver_ws) = app.online_driver((PICKUP.0 + 0.001, PICKUP.1)).await;
    let booked = app
        .post(
            "/api/trips",
            Some(&rider_token),
            &scheduled_body(&at(3_000)),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.body);
    assert_eq!(booked.body["status"], "SCHEDULED");
    assert!(booked.body["pickup_at"].is_string(), "{}", booked.body);
    let trip_id = s(&booked.body["trip_id"]);
    let update = rider_ws.recv_type("trip_update").await;
    assert_eq!(update["status"], "SCHEDULED", "{update}");
    assert_eq!(update["trip_id"], trip_id.as_str());
    // A socket opened meanwhile lists it in its session frame.
    let mut late_ws = app.raw_rider_socket(&rider_token).await;
    let session = late_ws.recv_type("session").await;
    assert!(
        session["trips"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trip_id"] == trip_id.as_str() && t["status"] == "SCHEDULED"),
        "{session}"
    );
    // Nobody is offered it before its dispatch time (pickup − 1 s).
    assert!(
        driver_ws
            .gets_within("offer", Duration::from_millis(1_200))
            .await
            .is_none(),
        "no offer before the dispatch time"
    );
    let offer = driver_ws
        .gets_within("offer", Duration::from_secs(5))
        .await
        .expect("an offer once dispatched");
    assert_eq!(offer["trip_id"], trip_id.as_str());
    let update = rider_ws.recv_type("trip_update").await;
    assert_eq!(update["status"], "MATCHING", "{update}");
    let history = app
        .get(&format!("/api/riders/{rider}/trips"), Some(&rider_token))
        .await;
    assert_eq!(
        history.body["trips"][0]["trip_id"],
        trip_id.as_str(),
        "{}",
        history.body
    );
    let types = event_types(&app, &trip_id).await;
    assert_eq!(
        types[..3],
        ["trip.requested", "trip.scheduled", "trip.matching"],
        "{types:?}"
    );
    // After dispatch the ordinary rules hold: once started, the rider cannot cancel.
    driver_ws
        .send(json!({"type": "accept", "trip_id": trip_id}))
        .await;
    driver_ws.recv_type("trip_assigned").await;
    let pin = s(&app
        .get(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await
        .body["start_pin"]);
    driver_ws
        .send(json!({"type": "start", "trip_id": trip_id, "pin": pin}))
        .await;
    status_becomes(&app, &rider_token, &trip_id, "TRIP_STARTED").await;
    let late = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await;
    assert_eq!(late.status, 409, "{}", late.body);
}

#[actix_rt::test]
async fn a_scheduled_trip_is_cancelled_free_and_bad_pickup_times_are_refused() {
    let app = spawn_app_with(|s| {
        s.trip.schedule_min_lead_s = 60.0;
        s.trip.free_cancel_s = 0.0;
    })
    .await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    assert_eq!(top_up(&app, rider, 10_000, "s").await.status, 200);
    for (pickup_at, status, code) in [
        (at(-60_000), 422, "invalid_pickup_at"),
        (at(30_000), 422, "invalid_pickup_at"),
        (at(8 * 86_400_000), 422, "invalid_pickup_at"),
        ("tomorrow at nine".to_owned(), 400, "invalid_field"),
        ("2026-13-01T00:00:00Z".to_owned(), 400, "invalid_field"),
    ] {
        let r = app
            .post(
                "/api/trips",
                Some(&rider_token),
                &scheduled_body(&pickup_at),
            )
            .await;
        assert_eq!(r.status, status, "{pickup_at} → {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{pickup_at} → {}", r.body);
    }
    let r = app
        .post(
            "/api/trips",
            Some(&rider_token),
            &json!({"origin": {"lat": PICKUP.0, "lng": PICKUP.1},
                    "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1}, "pickup_at": 12})
            .to_string(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let booked = app
        .post(
            "/api/trips",
            Some(&rider_token),
            &scheduled_body(&at(3_600_000)),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.body);
    let trip_id = s(&booked.body["trip_id"]);
    let cancelled = app
        .delete(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.body);
    assert_eq!(cancelled.body["status"], "CANCELLED");
    assert!(
        cancelled.body["cancellation_fee"].is_null(),
        "{}",
        cancelled.body
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(balance(&app, rider).await, 10_000, "free until dispatch");
}

/// Books a trip `pickup_in_ms` ahead on an engine tuned by `tune`, then stops that engine (a
/// restart follows on the same database); returns the rider's token and the trip id.
async fn book_then_stop(
    tune: impl FnOnce(&mut hexdispatch::config::Settings),
    pickup_in_ms: i64,
) -> (String, String) {
    let first = spawn_app_with(tune).await;
    let rider_token = first.token(Role::Rider, Uuid::now_v7());
    let booked = first
        .post(
            "/api/trips",
            Some(&rider_token),
            &scheduled_body(&at(pickup_in_ms)),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.body);
    let trip_id = s(&booked.body["trip_id"]);
    first.handle.stop().await;
    drop(first);
    (rider_token, trip_id)
}

#[actix_rt::test]
async fn a_scheduled_trip_survives_a_restart_and_is_dispatched_on_time_after_it() {
    let (file, url) = sqlite_file("hexdispatch-sched");
    let tune = |s: &mut hexdispatch::config::Settings| {
        schedule_quickly(s);
        s.database.url = Some(url.clone());
    };
    let (rider_token, trip_id) = book_then_stop(tune, 4_000).await;

    let second = spawn_app_with(tune).await;
    let still = second
        .get(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await;
    assert_eq!(still.body["status"], "SCHEDULED", "{}", still.body);
    let (_, mut driver_ws) = second.online_driver((PICKUP.0 + 0.001, PICKUP.1)).await;
    let offer = driver_ws
        .gets_within("offer", Duration::from_secs(6))
        .await
        .expect("dispatched after the restart");
    assert_eq!(offer["trip_id"], trip_id.as_str());
    let trip = second
        .get(&format!("/api/trips/{trip_id}"), Some(&rider_token))
        .await;
    let matching = s(&trip.body["status_times"]["MATCHING"]);
    let dispatch_at = s(&trip.body["dispatch_at"]);
    assert!(
        matching >= dispatch_at,
        "not before its time: {matching} vs {dispatch_at}"
    );
    drop(second);
    crate::helpers::remove_sqlite(&file);
}

fn promotion(code: &str, kind: &str, value: i64, limit: i64) -> String {
    json!({
        "code": code,
        "kind": kind,
        "value": value,
        "valid_from": at(-60_000),
        "valid_to": at(3_600_000),
        "per_rider_limit": limit,
    })
    .to_string()
}

#[actix_rt::test]
async fn operators_create_list_and_disable_promotions_whose_uses_survive_a_restart() {
    let (file, url) = sqlite_file("hexdispatch-promo");
    let tune = |s: &mut hexdispatch::config::Settings| s.database.url = Some(url.clone());
    let app = spawn_app_with(tune).await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let rider_token = app.token(Role::Rider, Uuid::now_v7());
    let created = app
        .post(
            "/api/ops/promotions",
            Some(&operator),
            &promotion("once", "percent", 50, 1),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["code"], "ONCE");
    let dup = app
        .post(
            "/api/ops/promotions",
            Some(&operator),
            &promotion("ONCE", "flat", 100, 1),
        )
        .await;
    assert_eq!(dup.status, 409, "{}", dup.body);
    let flat = app
        .post(
            "/api/ops/promotions",
            Some(&operator),
            &promotion("FLAT2", "flat", 200, 2),
        )
        .await;
    assert_eq!(flat.status, 201, "{}", flat.body);

    let trip = |code: &str| {
        json!({"origin": {"lat": PICKUP.0, "lng": PICKUP.1},
               "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1}, "promo_code": code})
        .to_string()
    };
    let estimate = app
        .post("/api/pricing/estimate", Some(&rider_token), &trip("once"))
        .await;
    assert_eq!(estimate.status, 200, "{}", estimate.body);
    let used = app
        .post("/api/trips", Some(&rider_token), &trip("once"))
        .await;
    assert_eq!(used.status, 201, "{}", used.body);
    let discount = used.body["estimate_breakdown"]["discount"]["amount"]
        .as_i64()
        .unwrap();
    assert!(discount > 0, "{}", used.body);
    let listed = app.get("/api/ops/promotions", Some(&operator)).await;
    let once = listed.body["promotions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == "ONCE")
        .cloned()
        .unwrap();
    assert_eq!(once["uses"], 1, "{once}");
    assert_eq!(once["kind"], "percent");
    app.handle.stop().await;
    drop(app);

    // The use is remembered across the restart.
    let app = spawn_app_with(tune).await;
    let again = app
        .post("/api/trips", Some(&rider_token), &trip("once"))
        .await;
    assert_eq!(again.status, 422, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "promo_code_used_up");
    let ok = app
        .post("/api/trips", Some(&rider_token), &trip("flat2"))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let disabled = app
        .delete("/api/ops/promotions/flat2", Some(&operator))
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(disabled.body["disabled"], true);
    let refused = app
        .post("/api/trips", Some(&rider_token), &trip("flat2"))
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "promo_code_disabled");
    let unknown = app
        .delete("/api/ops/promotions/NOPE", Some(&operator))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    drop(app);
    crate::helpers::remove_sqlite(&file);
}

#[actix_rt::test]
async fn promotion_routes_refuse_bad_input_and_non_operators() {
    let app = spawn_app().await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let good: Value = serde_json::from_str(&promotion("GOOD", "percent", 10, 1)).unwrap();
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body.to_string()
    };
    let without = |key: &str| {
        let mut body = good.clone();
        body.as_object_mut().unwrap().remove(key);
        body.to_string()
    };
    for (body, what) in [
        (with("kind", json!("bogus")), "unknown kind"),
        (with("value", json!(0)), "percent 0"),
        (with("value", json!(101)), "percent 101"),
        (
            with("kind", json!("flat")).replace("\"value\":10", "\"value\":-1"),
            "flat -1",
        ),
        (with("valid_to", json!(at(-120_000))), "window backwards"),
        (with("valid_from", json!("soon")), "bad time"),
        (with("per_rider_limit", json!(0)), "limit 0"),
        (with("per_rider_limit", json!(1_001)), "limit too large"),
        (with("code", json!("two words")), "code with a space"),
        (with("code", json!("")), "empty code"),
        (with("code", json!("X".repeat(33))), "code too long"),
        (with("value", json!("10")), "value as a string"),
        (without("code"), "no code"),
        (without("kind"), "no kind"),
        (without("value"), "no value"),
        (without("valid_from"), "no valid_from"),
        (without("valid_to"), "no valid_to"),
        (without("per_rider_limit"), "no limit"),
        ("[]".to_owned(), "an array"),
        ("{".to_owned(), "broken JSON"),
    ] {
        let r = app
            .post("/api/ops/promotions", Some(&operator), &body)
            .await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
    }
    let listed = app.get("/api/ops/promotions", Some(&operator)).await;
    assert_eq!(listed.body["promotions"], json!([]), "nothing was stored");
    for token in [
        app.token(Role::Rider, Uuid::now_v7()),
        app.driver_token(Uuid::now_v7(), "economy"),
    ] {
        assert_eq!(
            app.post("/api/ops/promotions", Some(&token), &good.to_string())
                .await
                .status,
            403
        );
        assert_eq!(
            app.get("/api/ops/promotions", Some(&token)).await.status,
            403
        );
        assert_eq!(
            app.delete("/api/ops/promotions/GOOD", Some(&token))
                .await
                .status,
            403
        );
    }
    assert_eq!(
        app.post("/api/ops/promotions", None, &good.to_string())
            .await
            .status,
        401
    );
    let bad_code = app
        .delete("/api/ops/promotions/bad%20code", Some(&operator))
        .await;
    assert_eq!(bad_code.status, 400, "{}", bad_code.body);
}

#[actix_rt::test]
async fn a_fare_above_the_cap_is_capped_and_flagged_for_review() {
    // A tariff whose minutes are dear: a ride that takes a few seconds longer than estimated
    // costs far more than its estimate.
    let app = spawn_app_with(|s| {
        if let Some(t) = s.pricing.tariffs.get_mut("economy") {
            t.per_min = 60_000;
        }
    })
    .await;
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let at_pickup = json!({"lat": PICKUP.0, "lng": PICKUP.1}).to_string();
    app.put(
        &format!("/api/drivers/{driver}/location"),
        Some(&token),
        &at_pickup,
    )
    .await;
    assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    // A drop-off a metre away: the estimate is the minimum fare.
    let r = app
        .request_trip(&rider_token, PICKUP, (PICKUP.0 + 0.00001, PICKUP.1))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let trip_id = s(&r.body["trip_id"]);
    let estimate = r.body["fare_estimate"]["amount"].as_i64().unwrap();
    let base = format!("/api/trips/{trip_id}");
    let accepted = crate::payments::accept_until_won(&app, &base, &token).await;
    assert!(accepted);
    let pin = s(&app.get(&base, Some(&rider_token)).await.body["start_pin"]);
    let started = app
        .put(
            &format!("{base}/start"),
            Some(&token),
            &json!({"pin": pin}).to_string(),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    tokio::time::sleep(Duration::from_millis(estimate_wait_ms(estimate))).await;
    let done = app.put(&format!("{base}/complete"), Some(&token), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let fare = done.body["fare"]["amount"].as_i64().unwrap();
    assert_eq!(
        fare,
        estimate * 2,
        "capped at 2 × the estimate: {}",
        done.body
    );
    assert!(
        done.body["fare_breakdown"]["fare_cap"]["amount"]
            .as_i64()
            .unwrap()
            < 0,
        "{}",
        done.body
    );
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let events = app.get(&format!("{base}/events"), Some(&operator)).await;
    let flagged = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "trip.fare_flagged")
        .cloned()
        .expect("the trip is flagged for review");
    assert!(
        flagged["data"]["computed"]["amount"].as_i64().unwrap() > fare,
        "{flagged}"
    );
    assert_eq!(flagged["data"]["charged"]["amount"], fare);
    let receipt = app
        .get(&format!("{base}/receipt"), Some(&rider_token))
        .await;
    assert_eq!(receipt.body["fare_capped"], true, "{}", receipt.body);
}

/// Long enough for the time part alone to pass twice the estimate (1 000 minor units a second).
fn estimate_wait_ms(estimate: i64) -> u64 {
    u64::try_from(estimate * 2 / 1_000 + 2).unwrap_or(3) * 1_000
}

#[actix_rt::test]
async fn ratings_refunds_fees_promotions_and_bookings_work_on_postgres() {
    let Some(url) = crate::services::postgres_database().await else {
        return;
    };
    let app = spawn_app_with(|s| {
        s.database.url = Some(url.clone());
        s.trip.free_cancel_s = 0.0;
        schedule_quickly(s);
    })
    .await;
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    assert_eq!(top_up(&app, rider, 100_000, "pg").await.status, 200);
    let created = app
        .post(
            "/api/ops/promotions",
            Some(&operator),
            &promotion("PG1", "flat", 100, 1),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let with_code = json!({"origin": {"lat": PICKUP.0, "lng": PICKUP.1},
                           "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1}, "promo_code": "pg1"})
    .to_string();
    let first = app.post("/api/trips", Some(&rider_token), &with_code).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = app.post("/api/trips", Some(&rider_token), &with_code).await;
    assert_eq!(
        second.body["error"]["code"], "promo_code_used_up",
        "{}",
        second.body
    );
    for trip in [&first] {
        let id = s(&trip.body["trip_id"]);
        app.delete(&format!("/api/trips/{id}"), Some(&rider_token))
            .await;
    }

    let (trip_id, _driver) = completed_trip(&app, &rider_token).await;
    status_becomes(&app, &rider_token, &trip_id, "PAYMENT_PROCESSED").await;
    let refund = app
        .post(
            &format!("/api/trips/{trip_id}/refund"),
            Some(&operator),
            &json!({"amount": {"amount": 100, "currency": "USD"}, "reason": "pg", "reference": "pg-r"})
                .to_string(),
        )
        .await;
    assert_eq!(refund.status, 201, "{}", refund.body);
    let rated = app
        .post(
            &format!("/api/trips/{trip_id}/rating"),
            Some(&rider_token),
            &json!({"stars": 3}).to_string(),
        )
        .await;
    assert_eq!(rated.status, 201, "{}", rated.body);

    let (late, _, _) = accepted_trip(&app, &rider_token).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.delete(&format!("/api/trips/{late}"), Some(&rider_token))
        .await;
    assert!(has_event(&app, &late, "payment.fee_captured").await);

    let booked = app
        .post(
            "/api/trips",
            Some(&rider_token),
            &scheduled_body(&at(60_000)),
        )
        .await;
    assert_eq!(booked.status, 201, "{}", booked.body);
    let booked_id = Uuid::parse_str(&s(&booked.body["trip_id"])).unwrap();
    let store = app.core.persistence().unwrap().store();
    let mut stored = false;
    for _ in 0..100 {
        if store.live_trip_ids().await.unwrap().contains(&booked_id) {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stored,
        "a booked trip is live in the store, so a restart resumes it"
    );
    assert_eq!(
        transaction_kinds(&app, rider, &rider_token).await,
        ["cancellation_fee", "refund", "charge", "topup"]
    );
    ledger_is_whole(&app).await;
    drop(app);
    crate::services::drop_database(&url).await;
}

#[actix_rt::test]
async fn a_booking_retried_with_its_key_finds_its_trip_after_the_lead_shrank() {
    let app = spawn_app_with(schedule_quickly).await;
    let rider_token = app.token(Role::Rider, Uuid::now_v7());
    let body = json!({
        "origin": {"lat": PICKUP.0, "lng": PICKUP.1},
        "destination": {"lat": DROPOFF.0, "lng": DROPOFF.1},
        "pickup_at": at(2_800),
        "idempotency_key": "book-once",
    })
    .to_string();
    let first = app.post("/api/trips", Some(&rider_token), &body).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // Now less than trip.schedule_min_lead_s (2 s) ahead: a new booking would be refused.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let retry = app.post("/api/trips", Some(&rider_token), &body).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.body["trip_id"], first.body["trip_id"]);
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
}

#[actix_rt::test]
async fn concurrent_refunds_of_one_trip_never_exceed_its_charge_on_postgres() {
    use hexdispatch::dispatch::{Currency, Money};
    use hexdispatch::persistence::{ChargeKind, RefundOutcome, Store};
    let Some(url) = crate::services::postgres_database().await else {
        return;
    };
    let store = Store::connect(Some(&url)).await.unwrap();
    store.migrate().await.unwrap();
    let usd = |a| Money::new(a, Currency::USD);
    for round in 0..10 {
        let (rider, driver, trip) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        store
            .top_up(
                &format!("rider:{rider}"),
                usd(10_000),
                &format!("seed-{round}"),
                1,
            )
            .await
            .unwrap();
        store
            .charge_trip(trip, ChargeKind::Fare, rider, driver, usd(1_000), 2_000, 2)
            .await
            .unwrap();
        // Two refunds of 600 with different references, and two of one reference, at once.
        let (ra, rb, rc) = (
            format!("a-{round}"),
            format!("b-{round}"),
            format!("c-{round}"),
        );
        let (a, b, c, d) = tokio::join!(
            store.refund_trip(trip, Some(usd(600)), "a", &ra, 3),
            store.refund_trip(trip, Some(usd(600)), "b", &rb, 3),
            store.refund_trip(trip, Some(usd(100)), "c", &rc, 3),
            store.refund_trip(trip, Some(usd(100)), "c", &rc, 3),
        );
        let applied: i64 = [&a, &b, &c, &d]
            .iter()
            .map(|o| match o.as_ref().unwrap() {
                RefundOutcome::Refunded {
                    amount,
                    applied: true,
                    ..
                } => amount.amount,
                _ => 0,
            })
            .sum();
        assert_eq!(applied, 700, "one 600 and one 100: {a:?} {b:?} {c:?} {d:?}");
        let six = [&a, &b]
            .iter()
            .filter(|o| matches!(o.as_ref().unwrap(), RefundOutcome::TooMuch { .. }))
            .count();
        assert_eq!(six, 1, "the second 600 finds 300 left");
    }
    let totals = store.ledger_totals().await.unwrap();
    assert!(totals.iter().all(|(_, t)| *t == 0), "{totals:?}");
    drop(store);
    crate::services::drop_database(&url).await;
}

#[actix_rt::test]
async fn a_late_fee_no_message_settled_is_found_for_the_sweep() {
    let app = spawn_app().await;
    let store = app.core.persistence().unwrap().store();
    let insert = |id: Uuid, fee: Option<i64>, status: &'static str| {
        sqlx::query(
            "INSERT INTO trips (trip_id, rider_id, driver_id, status, vehicle_type, fare_estimate, \
             currency, version, created_ms, updated_ms, cancellation_fee) \
             VALUES ($1, $2, $3, $4, 'economy', 1000, 'USD', 3, 1, 1, $5)",
        )
        .bind(id.to_string())
        .bind(Uuid::now_v7().to_string())
        .bind(Uuid::now_v7().to_string())
        .bind(status)
        .bind(fee)
    };
    let (lost, free, charged, failed, completed) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let mut conn = store.pool().acquire().await.unwrap();
    for (id, fee, status) in [
        (lost, Some(500), "CANCELLED"),
        (free, None, "CANCELLED"),
        (charged, Some(500), "CANCELLED"),
        (failed, Some(500), "CANCELLED"),
        (completed, Some(500), "TRIP_COMPLETED"),
    ] {
        insert(id, fee, status).execute(&mut *conn).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO payments (trip_id, rider_id, driver_id, amount, commission, currency, created_ms, kind) \
         VALUES ($1, 'r', 'd', 500, 100, 'USD', 1, 'cancellation_fee')",
    )
    .bind(charged.to_string())
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO trip_events (trip_id, seq, type, at_ms, data) \
         VALUES ($1, 4, 'payment.fee_failed', 1, '{}')",
    )
    .bind(failed.to_string())
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(store.unsettled_fees().await.unwrap(), vec![lost]);
}

#[actix_rt::test]
async fn a_booking_whose_pickup_passed_while_the_engine_was_down_ends_without_a_driver() {
    let (file, url) = sqlite_file("hexdispatch-expiry");
    let tune = |s: &mut hexdispatch::config::Settings| {
        schedule_quickly(s);
        s.trip.schedule_expiry_s = 1.0;
        s.database.url = Some(url.clone());
    };
    let (rider_token, trip_id) = book_then_stop(tune, 2_500).await;
    // Down past the pickup time and the expiry.
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let second = spawn_app_with(tune).await;
    let ended = status_becomes(&second, &rider_token, &trip_id, "NO_DRIVER_FOUND").await;
    assert!(
        ended["status_times"]["MATCHING"].is_null(),
        "never matched: {ended}"
    );
    drop(second);
    crate::helpers::remove_sqlite(&file);
}
