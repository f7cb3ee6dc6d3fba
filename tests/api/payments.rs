//! Money: charging completed trips once, failed payments retried after a top-up, receipts,
//! earnings, the ledger summing to zero, and the events on the in-process bus.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use hexdispatch::dispatch::{Currency, Money};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};

pub const PICKUP: (f64, f64) = (48.8566, 2.3522);

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

/// Runs a trip to TRIP_COMPLETED over REST with a fresh driver; returns (trip id, driver id).
pub async fn completed_trip(app: &TestApp, rider: &str) -> (String, Uuid) {
    let (trip_id, driver, token) = accepted_trip(app, rider).await;
    let base = format!("/api/trips/{trip_id}");
    let pin = s(&app.get(&base, Some(rider)).await.body["start_pin"]);
    let started = app
        .put(
            &format!("{base}/start"),
            Some(&token),
            &json!({"pin": pin}).to_string(),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let done = app.put(&format!("{base}/complete"), Some(&token), "").await;
    assert_eq!(done.status, 200, "{}", done.body);
    (trip_id, driver)
}

/// Accepts the trip at `base` (`/api/trips/{id}`) over REST as soon as its offer reaches the
/// driver; whether it won within 4 s.
pub async fn accept_until_won(app: &TestApp, base: &str, token: &str) -> bool {
    for _ in 0..200 {
        if app
            .put(&format!("{base}/accept"), Some(token), "")
            .await
            .status
            == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Requests a trip and has a fresh REST driver beside the pickup accept it; returns (trip id,
/// driver id, driver token).
pub async fn accepted_trip(app: &TestApp, rider: &str) -> (String, Uuid, String) {
    let driver = Uuid::now_v7();
    let token = app.driver_token(driver, "economy");
    let at = json!({"lat": PICKUP.0 + 0.001, "lng": PICKUP.1}).to_string();
    assert_eq!(
        app.put(
            &format!("/api/drivers/{driver}/location"),
            Some(&token),
            &at
        )
        .await
        .status,
        200
    );
    assert_eq!(app.set_status(driver, &token, "online").await.status, 200);
    let r = app.request_trip(rider, PICKUP, (48.87, 2.30)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let trip_id = s(&r.body["trip_id"]);
    let mut offered = false;
    for _ in 0..250 {
        let me = app
            .get(&format!("/api/drivers/{driver}"), Some(&token))
            .await;
        if me.body["offer"]["trip_id"] == trip_id.as_str() {
            offered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(offered, "the driver beside the pickup is offered the trip");
    let base = format!("/api/trips/{trip_id}");
    assert_eq!(
        app.put(&format!("{base}/accept"), Some(&token), "")
            .await
            .status,
        200
    );
    (trip_id, driver, token)
}

pub async fn status_becomes(app: &TestApp, token: &str, trip_id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let t = app.get(&format!("/api/trips/{trip_id}"), Some(token)).await;
        if t.body["status"] == status {
            return t.body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("trip {trip_id} never reached {status}");
}

pub async fn top_up(
    app: &TestApp,
    rider: Uuid,
    amount: i64,
    reference: &str,
) -> crate::helpers::Response {
    let operator = app.token(Role::Operator, Uuid::now_v7());
    app.post(
        &format!("/api/riders/{rider}/wallet/topup"),
        Some(&operator),
        &json!({"amount": {"amount": amount, "currency": "USD"}, "reference": reference})
            .to_string(),
    )
    .await
}

#[actix_rt::test]
async fn a_completed_trip_is_charged_once_and_split_in_the_ledger() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let r = top_up(&app, rider_id, 10_000, "card-1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["balance"],
        json!({"amount": 10_000, "currency": "USD"})
    );
    let again = top_up(&app, rider_id, 10_000, "card-1").await;
    assert_eq!(
        (
            again.body["balance"]["amount"].as_i64(),
            again.body["applied"].as_bool()
        ),
        (Some(10_000), Some(false)),
        "the same reference credits once"
    );

    let mut bus = app.core.bus.subscribe();
    let (trip_id, driver) = completed_trip(&app, &rider).await;
    let paid = status_becomes(&app, &rider, &trip_id, "PAYMENT_PROCESSED").await;
    let fare = paid["fare"]["amount"].as_i64().unwrap();
    assert_eq!(fare, 700, "a trip not driven costs the minimum fare");
    let wallet = app
        .get(&format!("/api/riders/{rider_id}/wallet"), Some(&rider))
        .await;
    assert_eq!(wallet.body["balance"]["amount"], 10_000 - fare);

    let receipt = app
        .get(&format!("/api/trips/{trip_id}/receipt"), Some(&rider))
        .await;
    assert_eq!(receipt.status, 200, "{}", receipt.body);
    assert_eq!(receipt.body["payment"]["status"], "captured");
    assert_eq!(receipt.body["fare"]["amount"], fare);
    assert!(
        receipt.body["payment"].get("commission").is_none(),
        "riders do not see the split"
    );
    let driver_token = app.driver_token(driver, "economy");
    let theirs = app
        .get(
            &format!("/api/trips/{trip_id}/receipt"),
            Some(&driver_token),
        )
        .await;
    assert_eq!(
        theirs.body["payment"]["commission"]["amount"], 140,
        "20 % of 700"
    );
    let earnings = app
        .get(
            &format!("/api/drivers/{driver}/earnings"),
            Some(&driver_token),
        )
        .await;
    assert_eq!(earnings.status, 200, "{}", earnings.body);
    assert_eq!(
        earnings.body["total"],
        json!({"amount": 560, "currency": "USD"})
    );
    assert_eq!(earnings.body["trips"][0]["trip_id"], trip_id.as_str());

    // Redelivered completions charge nothing more.
    let id: Uuid = trip_id.parse().unwrap();
    for _ in 0..3 {
        app.core.payments.settle(&app.core, id).await.unwrap();
    }
    let store = app.core.persistence().unwrap().store();
    assert_eq!(store.count("payments").await.unwrap(), 1);
    assert_eq!(
        store.count("ledger").await.unwrap(),
        2 + 3,
        "one top-up and one charge"
    );
    assert!(
        store
            .ledger_totals()
            .await
            .unwrap()
            .iter()
            .all(|(_, t)| *t == 0)
    );

    // The in-process bus carried every event of the trip, in order.
    let events = app
        .get(&format!("/api/trips/{trip_id}/events"), Some(&rider))
        .await;
    let expected: Vec<String> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["type"]))
        .collect();
    let mut seen = Vec::new();
    let mut notified = Vec::new();
    while seen.len() < expected.len() || notified.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("bus message")
            .unwrap();
        if !message.message_id.starts_with(&trip_id) {
            continue;
        }
        assert_eq!(message.headers["x-event-type"], message.routing_key);
        assert!(message.headers["traceparent"].starts_with("00-"));
        if message.routing_key.starts_with("notify.") {
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(
                body["user_id"],
                rider_id.to_string(),
                "notifications go to the rider"
            );
            notified.push(message.routing_key.clone());
        } else {
            seen.push(message.routing_key.clone());
        }
    }
    assert_eq!(seen, expected);
    // A push when the driver accepted (and on arrival), the receipt by e-mail on completion.
    for channel in ["notify.push", "notify.email"] {
        assert!(
            notified.iter().any(|n| n == channel),
            "{channel} in {notified:?}"
        );
    }
    assert_eq!(
        expected.last().map(String::as_str),
        Some("payment.captured")
    );
}

#[actix_rt::test]
async fn a_short_wallet_fails_the_payment_until_a_top_up_retries_it() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    top_up(&app, rider_id, 300, "small").await;
    let (trip_id, _) = completed_trip(&app, &rider).await;
    status_becomes(&app, &rider, &trip_id, "PAYMENT_FAILED").await;
    let receipt = app
        .get(&format!("/api/trips/{trip_id}/receipt"), Some(&rider))
        .await;
    assert_eq!(
        (
            receipt.body["payment"]["status"].as_str(),
            receipt.body["payment"]["reason"].as_str()
        ),
        (Some("failed"), Some("insufficient_funds"))
    );
    let r = top_up(&app, rider_id, 1_000, "more").await;
    assert_eq!(r.body["payments_retried"], 1, "{}", r.body);
    assert_eq!(r.body["balance"]["amount"], 300 + 1_000 - 700);
    status_becomes(&app, &rider, &trip_id, "PAYMENT_PROCESSED").await;
    let events = app
        .get(&format!("/api/trips/{trip_id}/events"), Some(&rider))
        .await;
    let kinds: Vec<String> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(&e["type"]))
        .collect();
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["payment.failed", "payment.captured"]
    );
}

/// One money operation of the property test.
#[derive(Debug, Clone)]
enum Op {
    TopUp {
        rider: usize,
        amount: i64,
        reference: u8,
    },
    Fare {
        trip: usize,
        rider: usize,
        driver: usize,
        amount: i64,
        bps: u32,
    },
    Fee {
        trip: usize,
        rider: usize,
        driver: usize,
        amount: i64,
        bps: u32,
    },
    Refund {
        trip: usize,
        amount: Option<i64>,
        reference: u8,
    },
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (0..4usize, 1..50_000i64, 0..12u8).prop_map(|(rider, amount, reference)| Op::TopUp {
            rider,
            amount,
            reference
        }),
        (
            0..12usize,
            0..4usize,
            0..3usize,
            0..30_000i64,
            0..=10_000u32
        )
            .prop_map(|(trip, rider, driver, amount, bps)| Op::Fare {
                trip,
                rider,
                driver,
                amount,
                bps
            }),
        (0..12usize, 0..4usize, 0..3usize, 0..1_000i64, 0..=10_000u32).prop_map(
            |(trip, rider, driver, amount, bps)| Op::Fee {
                trip,
                rider,
                driver,
                amount,
                bps
            }
        ),
        (0..12usize, proptest::option::of(1..40_000i64), 0..12u8).prop_map(
            |(trip, amount, reference)| Op::Refund {
                trip,
                amount,
                reference
            }
        ),
    ]
}

/// Runs `ops` against a fresh store and checks the ledger after each: it sums to zero, no
/// rider's, driver's or the platform's wallet is below zero, no trip is charged twice and no trip
/// refunded more than it was charged.
async fn run_money(ops: Vec<Op>) -> Result<(), String> {
    use hexdispatch::persistence::{ChargeKind, ChargeOutcome, RefundOutcome, Store};
    let file = std::env::temp_dir().join(format!("hexdispatch-money-{}.db", Uuid::now_v7()));
    let store = Store::connect(Some(&format!("sqlite://{}?mode=rwc", file.display())))
        .await
        .map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    let riders: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let drivers: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let trips: Vec<Uuid> = (0..12).map(|_| Uuid::now_v7()).collect();
    let usd = |amount| Money::new(amount, Currency::USD);
    let mut charged = std::collections::HashMap::<usize, i64>::new();
    let mut refunded = std::collections::HashMap::<usize, i64>::new();
    let mut refs = std::collections::HashMap::<u8, usize>::new();
    let mut result = Ok(());
    for (n, op) in ops.into_iter().enumerate() {
        let now = i64::try_from(n).unwrap_or(0);
        match op.clone() {
            Op::TopUp {
                rider,
                amount,
                reference,
            } => {
                store
                    .top_up(
                        &format!("rider:{}", riders[rider]),
                        usd(amount),
                        &format!("t{reference}-{rider}"),
                        now,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Op::Fare {
                trip,
                rider,
                driver,
                amount,
                bps,
            }
            | Op::Fee {
                trip,
                rider,
                driver,
                amount,
                bps,
            } => {
                let kind = if matches!(op, Op::Fare { .. }) {
                    ChargeKind::Fare
                } else {
                    ChargeKind::CancellationFee
                };
                let outcome = store
                    .charge_trip(
                        trips[trip],
                        kind,
                        riders[rider],
                        drivers[driver],
                        usd(amount),
                        bps,
                        now,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                match outcome {
                    ChargeOutcome::Charged if charged.contains_key(&trip) => {
                        return Err(format!("trip {trip} charged twice"));
                    }
                    ChargeOutcome::Charged => {
                        charged.insert(trip, amount);
                    }
                    ChargeOutcome::AlreadyCharged if !charged.contains_key(&trip) => {
                        return Err(format!("trip {trip} said charged but was not"));
                    }
                    _ => {}
                }
            }
            Op::Refund {
                trip,
                amount,
                reference,
            } => {
                let outcome = store
                    .refund_trip(
                        trips[trip],
                        amount.map(usd),
                        "test",
                        &format!("r{reference}"),
                        now,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                let left = charged.get(&trip).copied().unwrap_or(0)
                    - refunded.get(&trip).copied().unwrap_or(0);
                match outcome {
                    RefundOutcome::Refunded {
                        amount: got,
                        applied: true,
                        ..
                    } => {
                        if refs.insert(reference, trip).is_some() {
                            return Err(format!("reference r{reference} refunded twice"));
                        }
                        if got.amount > left || amount.is_some_and(|a| a != got.amount) {
                            return Err(format!("refund of {got:?} with {left} left"));
                        }
                        *refunded.entry(trip).or_default() += got.amount;
                    }
                    RefundOutcome::Refunded { applied: false, .. }
                        if refs.get(&reference) != Some(&trip) =>
                    {
                        return Err(format!("r{reference} replayed for another trip"));
                    }
                    RefundOutcome::NotCharged if charged.contains_key(&trip) => {
                        return Err(format!("trip {trip} is charged"));
                    }
                    RefundOutcome::TooMuch { refundable } if refundable.amount != left.max(0) => {
                        return Err(format!("refundable {refundable:?}, {left} left"));
                    }
                    RefundOutcome::ReferenceTaken
                        if refs.get(&reference).is_none_or(|t| *t == trip) =>
                    {
                        return Err(format!("r{reference} is not taken by another trip"));
                    }
                    _ => {}
                }
            }
        }
        let totals = store.ledger_totals().await.map_err(|e| e.to_string())?;
        if totals.iter().any(|(_, t)| *t != 0) {
            result = Err(format!("ledger off after op {n}: {totals:?}"));
            break;
        }
        let accounts = riders
            .iter()
            .map(|r| format!("rider:{r}"))
            .chain(drivers.iter().map(|d| format!("driver:{d}")))
            .chain(["platform".to_owned()]);
        for account in accounts {
            let balance = store.balance(&account).await.map_err(|e| e.to_string())?;
            if balance.is_some_and(|b| b.amount < 0) {
                result = Err(format!("{account} below zero after op {n}: {balance:?}"));
            }
        }
        if result.is_err() {
            break;
        }
    }
    drop(store);
    crate::helpers::remove_sqlite(&file);
    result
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any sequence of charges, cancellation fees, refunds (whole, partial, too large, repeated)
    /// and top-ups leaves the ledger at zero and no wallet negative.
    #[test]
    fn any_sequence_of_charges_fees_refunds_and_top_ups_keeps_the_ledger_whole(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(run_money(ops));
        proptest::prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

/// (method, path, token, body, expected status, what the case is)
type Case = (
    &'static str,
    String,
    String,
    Option<String>,
    u16,
    &'static str,
);

#[actix_rt::test]
async fn money_routes_refuse_bad_and_unauthorized_input() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    let driver = Uuid::now_v7();
    let driver_token = app.driver_token(driver, "economy");
    let wallet = format!("/api/riders/{rider_id}/wallet");
    let topup = format!("{wallet}/topup");
    let body = |v: Value| v.to_string();
    let cases: Vec<Case> = vec![
        (
            "GET",
            wallet.clone(),
            rider.clone(),
            None,
            200,
            "own wallet",
        ),
        (
            "GET",
            wallet.clone(),
            operator.clone(),
            None,
            200,
            "operator reads a wallet",
        ),
        (
            "GET",
            wallet.clone(),
            app.token(Role::Rider, Uuid::now_v7()),
            None,
            403,
            "another rider's wallet",
        ),
        (
            "GET",
            wallet.clone(),
            driver_token.clone(),
            None,
            403,
            "a driver reads a wallet",
        ),
        (
            "POST",
            topup.clone(),
            rider.clone(),
            Some(body(
                json!({"amount": {"amount": 100, "currency": "USD"}, "reference": "r"}),
            )),
            403,
            "a rider tops itself up",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(
                json!({"amount": {"amount": 0, "currency": "USD"}, "reference": "r"}),
            )),
            400,
            "zero amount",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(
                json!({"amount": {"amount": -5, "currency": "USD"}, "reference": "r"}),
            )),
            400,
            "negative amount",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(
                json!({"amount": {"amount": 1.5, "currency": "USD"}, "reference": "r"}),
            )),
            400,
            "fractional amount",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(
                json!({"amount": {"amount": 100, "currency": "DOLLARS"}, "reference": "r"}),
            )),
            400,
            "bad currency",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(json!({"amount": {"amount": 100}, "reference": "r"}))),
            400,
            "no currency",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some(body(json!({"amount": {"amount": 100, "currency": "USD"}}))),
            400,
            "no reference",
        ),
        (
            "POST",
            topup.clone(),
            operator.clone(),
            Some("[]".into()),
            400,
            "an array",
        ),
        (
            "POST",
            "/api/riders/nope/wallet/topup".into(),
            operator.clone(),
            Some(body(json!({}))),
            400,
            "bad rider id",
        ),
        (
            "GET",
            format!("/api/trips/{}/receipt", Uuid::now_v7()),
            rider.clone(),
            None,
            404,
            "receipt of an unknown trip",
        ),
        (
            "GET",
            "/api/trips/x/receipt".into(),
            rider.clone(),
            None,
            400,
            "receipt with a bad id",
        ),
        (
            "GET",
            format!("/api/drivers/{driver}/earnings"),
            driver_token.clone(),
            None,
            200,
            "own earnings",
        ),
        (
            "GET",
            format!("/api/drivers/{driver}/earnings"),
            operator.clone(),
            None,
            200,
            "operator reads earnings",
        ),
        (
            "GET",
            format!("/api/drivers/{driver}/earnings"),
            rider.clone(),
            None,
            403,
            "a rider reads earnings",
        ),
        (
            "GET",
            format!("/api/drivers/{driver}/earnings"),
            app.driver_token(Uuid::now_v7(), "economy"),
            None,
            403,
            "another driver's earnings",
        ),
        (
            "GET",
            format!("/api/drivers/{driver}/earnings?from=soon"),
            driver_token.clone(),
            None,
            400,
            "a bad from",
        ),
        (
            "GET",
            format!(
                "/api/drivers/{driver}/earnings?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z"
            ),
            driver_token.clone(),
            None,
            400,
            "from after to",
        ),
    ];
    for (method, path, token, body, status, what) in cases {
        let r = app.request(method, &path, Some(&token), body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
    }
    let r = app.get(&wallet, Some(&rider)).await;
    assert_eq!(
        r.body["balance"],
        json!({"amount": 0, "currency": "USD"}),
        "nothing was credited"
    );
    // Someone else's receipt.
    let (trip_id, _) = completed_trip(&app, &rider).await;
    let r = app
        .get(
            &format!("/api/trips/{trip_id}/receipt"),
            Some(&app.token(Role::Rider, Uuid::now_v7())),
        )
        .await;
    assert_eq!(r.status, 403);
    for token in [None, Some("garbage")] {
        assert_eq!(app.request("GET", &wallet, token, None).await.status, 401);
    }
}

#[actix_rt::test]
async fn events_caused_by_a_request_carry_its_request_id_on_the_bus() {
    let app = spawn_app().await;
    let mut bus = app.core.bus.subscribe();
    let rider = app.token(Role::Rider, Uuid::now_v7());
    let mut res = awc::Client::default()
        .post(format!("{}/api/trips", app.address))
        .bearer_auth(&rider)
        .insert_header(("X-Request-Id", "req-abc-123"))
        .send_json(&json!({"origin": {"lat": 10.0, "lng": 10.0}, "destination": {"lat": 10.1, "lng": 10.1}}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(res.headers().get("x-request-id").unwrap(), "req-abc-123");
    let body: Value = res.json().await.unwrap();
    let trip_id = s(&body["trip_id"]);
    // The rider cancels in a request of its own.
    let mut cancel = awc::Client::default()
        .delete(format!("{}/api/trips/{trip_id}", app.address))
        .bearer_auth(&rider)
        .insert_header(("X-Request-Id", "req-cancel-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 200, "{:?}", cancel.body().await);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(5), bus.recv())
            .await
            .expect("bus message")
            .unwrap();
        if message.message_id.starts_with(&trip_id) && !message.routing_key.starts_with("notify.") {
            seen.push((
                message.routing_key.clone(),
                message.headers.get("x-request-id").cloned(),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            ("trip.requested".to_owned(), Some("req-abc-123".to_owned())),
            ("trip.matching".to_owned(), Some("req-abc-123".to_owned())),
            ("trip.cancelled".to_owned(), Some("req-cancel-9".to_owned())),
        ]
    );
}

#[actix_rt::test]
async fn transactions_list_charges_and_top_ups_newest_first_in_pages() {
    let app = spawn_app().await;
    let rider_id = Uuid::now_v7();
    let rider = app.token(Role::Rider, rider_id);
    assert_eq!(top_up(&app, rider_id, 5_000, "tx-first").await.status, 200);
    let (trip_id, _) = completed_trip(&app, &rider).await;
    status_becomes(&app, &rider, &trip_id, "PAYMENT_PROCESSED").await;
    let path = format!("/api/riders/{rider_id}/transactions");

    let all = app.get(&path, Some(&rider)).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let lines = all.body["transactions"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{}", all.body);
    assert_eq!(lines[0]["kind"], "charge");
    assert_eq!(lines[0]["trip_id"], trip_id.as_str());
    assert!(lines[0]["amount"]["amount"].as_i64().unwrap() < 0);
    assert_eq!(lines[1]["kind"], "topup");
    assert_eq!(
        lines[1]["amount"],
        json!({"amount": 5_000, "currency": "USD"})
    );
    assert!(lines[1].get("trip_id").is_none());
    assert!(all.body.get("next").is_none(), "one page holds both");
    let balance = app
        .get(&format!("/api/riders/{rider_id}/wallet"), Some(&rider))
        .await;
    let total: i64 = lines
        .iter()
        .map(|l| l["amount"]["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(
        balance.body["balance"]["amount"], total,
        "the lines add up to the balance"
    );

    // One line a page, following `next`.
    let first = app.get(&format!("{path}?limit=1"), Some(&rider)).await;
    assert_eq!(first.body["transactions"][0]["kind"], "charge");
    let next = first.body["next"].as_str().unwrap().to_owned();
    let second = app
        .get(&format!("{path}?limit=1&before={next}"), Some(&rider))
        .await;
    assert_eq!(second.body["transactions"][0]["kind"], "topup");
    let last = second.body["next"].as_str().unwrap().to_owned();
    let empty = app
        .get(&format!("{path}?limit=1&before={last}"), Some(&rider))
        .await;
    assert_eq!(empty.body["transactions"], json!([]));
    assert!(empty.body.get("next").is_none());

    // Bad input and other callers.
    for query in [
        "limit=0",
        "limit=501",
        "limit=many",
        "before=abc",
        "before=-4",
        "before=0",
    ] {
        let r = app.get(&format!("{path}?{query}"), Some(&rider)).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{query}");
    }
    let malformed = app
        .get("/api/riders/not-a-rider/transactions", Some(&rider))
        .await;
    assert_eq!(malformed.status, 400);
    let other = app.token(Role::Rider, Uuid::now_v7());
    assert_eq!(app.get(&path, Some(&other)).await.status, 403);
    let driver = app.token(Role::Driver, Uuid::now_v7());
    assert_eq!(app.get(&path, Some(&driver)).await.status, 403);
    assert_eq!(app.get(&path, None).await.status, 401);
    let operator = app.token(Role::Operator, Uuid::now_v7());
    assert_eq!(app.get(&path, Some(&operator)).await.status, 200);
    app.handle.stop().await;
}
