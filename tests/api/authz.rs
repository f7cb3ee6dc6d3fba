//! The authorization matrix: every route × rider / driver / operator × own / other resource, and
//! every authenticated route × missing / garbage / expired / wrong-secret token.

use hexdispatch::dispatch::Role;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, bad_tokens, spawn_app};
use crate::payments::completed_trip;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    /// The trip's rider (owner of R).
    Rider,
    /// Another rider.
    OtherRider,
    /// The trip's driver (owner of D).
    Driver,
    /// Another driver.
    OtherDriver,
    Operator,
}

const EVERYONE: [Who; 5] = [
    Who::Rider,
    Who::OtherRider,
    Who::Driver,
    Who::OtherDriver,
    Who::Operator,
];

struct Cast {
    rider: Uuid,
    driver: Uuid,
    tokens: Vec<(Who, String)>,
}

impl Cast {
    fn token(&self, who: Who) -> &str {
        &self.tokens.iter().find(|(w, _)| *w == who).unwrap().1
    }
}

async fn cast(app: &TestApp) -> (Cast, String) {
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let (trip_id, driver) = completed_trip(app, &rider_token).await;
    let tokens = vec![
        (Who::Rider, rider_token),
        (Who::OtherRider, app.token(Role::Rider, Uuid::now_v7())),
        (Who::Driver, app.driver_token(driver, "economy")),
        (
            Who::OtherDriver,
            app.driver_token(Uuid::now_v7(), "economy"),
        ),
        (Who::Operator, app.token(Role::Operator, Uuid::now_v7())),
    ];
    (
        Cast {
            rider,
            driver,
            tokens,
        },
        trip_id,
    )
}

/// (method, path, body, who may: expected status for them; everyone else 403)
type Row = (&'static str, String, Option<String>, Vec<(Who, u16)>);

#[actix_rt::test]
async fn every_route_allows_exactly_who_the_spec_says() {
    let app = spawn_app().await;
    let (c, trip) = cast(&app).await;
    let (r, d) = (c.rider, c.driver);
    let point = json!({"lat": 48.85, "lng": 2.35});
    let trip_body = json!({"origin": point, "destination": point}).to_string();
    let rows: Vec<Row> = vec![
        (
            "PUT",
            format!("/api/drivers/{d}/status"),
            Some(json!({"status": "online"}).to_string()),
            vec![(Who::Driver, 200)],
        ),
        (
            "PUT",
            format!("/api/drivers/{d}/location"),
            Some(point.to_string()),
            vec![(Who::Driver, 200)],
        ),
        (
            "GET",
            format!("/api/drivers/{d}"),
            None,
            vec![(Who::Driver, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/drivers/{d}/earnings"),
            None,
            vec![(Who::Driver, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/locations/drivers/{d}/history"),
            None,
            vec![(Who::Driver, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            "/api/locations/nearby?lat=48.85&lng=2.35".into(),
            None,
            vec![
                (Who::Rider, 200),
                (Who::OtherRider, 200),
                (Who::Operator, 200),
            ],
        ),
        (
            "GET",
            "/api/pricing/surge?lat=48.85&lng=2.35".into(),
            None,
            vec![
                (Who::Rider, 200),
                (Who::OtherRider, 200),
                (Who::Operator, 200),
            ],
        ),
        (
            "POST",
            "/api/pricing/estimate".into(),
            Some(trip_body.clone()),
            vec![
                (Who::Rider, 200),
                (Who::OtherRider, 200),
                (Who::Operator, 200),
            ],
        ),
        (
            "POST",
            "/api/trips".into(),
            Some(trip_body.clone()),
            vec![(Who::Rider, 201), (Who::OtherRider, 201)],
        ),
        (
            "GET",
            format!("/api/trips/{trip}"),
            None,
            vec![(Who::Rider, 200), (Who::Driver, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/trips/{trip}/events"),
            None,
            vec![(Who::Rider, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/trips/{trip}/receipt"),
            None,
            vec![(Who::Rider, 200), (Who::Driver, 200), (Who::Operator, 200)],
        ),
        // Each side rates the other once.
        (
            "POST",
            format!("/api/trips/{trip}/rating"),
            Some(json!({"stars": 4}).to_string()),
            vec![(Who::Rider, 201), (Who::Driver, 201)],
        ),
        // The rider had no funds: nothing was charged, so nothing can be refunded.
        (
            "POST",
            format!("/api/trips/{trip}/refund"),
            Some(json!({"reason": "matrix", "reference": "matrix-refund"}).to_string()),
            vec![(Who::Operator, 409)],
        ),
        // The trip is completed: its own rider and driver are allowed in and refused by state.
        (
            "DELETE",
            format!("/api/trips/{trip}"),
            None,
            vec![(Who::Rider, 409), (Who::Driver, 409)],
        ),
        (
            "PUT",
            format!("/api/trips/{trip}/arrived"),
            None,
            vec![(Who::Driver, 409)],
        ),
        (
            "PUT",
            format!("/api/trips/{trip}/complete"),
            None,
            vec![(Who::Driver, 409)],
        ),
        (
            "PUT",
            format!("/api/trips/{trip}/start"),
            Some(json!({"pin": "0000"}).to_string()),
            vec![(Who::Driver, 409)],
        ),
        // Offers: the assigned driver's accept is answered as a retry; nobody else was offered it.
        (
            "PUT",
            format!("/api/trips/{trip}/accept"),
            None,
            vec![(Who::Driver, 409)],
        ),
        (
            "GET",
            format!("/api/riders/{r}/trips"),
            None,
            vec![(Who::Rider, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/riders/{r}/wallet"),
            None,
            vec![(Who::Rider, 200), (Who::Operator, 200)],
        ),
        (
            "GET",
            format!("/api/riders/{r}/transactions"),
            None,
            vec![(Who::Rider, 200), (Who::Operator, 200)],
        ),
        (
            "POST",
            format!("/api/riders/{r}/wallet/topup"),
            Some(
                json!({"amount": {"amount": 100, "currency": "USD"}, "reference": "matrix"})
                    .to_string(),
            ),
            vec![(Who::Operator, 200)],
        ),
        (
            "POST",
            "/api/ops/promotions".into(),
            Some(
                json!({"code": "MATRIX", "kind": "percent", "value": 10,
                       "valid_from": "2026-01-01T00:00:00Z", "valid_to": "2030-01-01T00:00:00Z",
                       "per_rider_limit": 1})
                .to_string(),
            ),
            vec![(Who::Operator, 201)],
        ),
        (
            "GET",
            "/api/ops/promotions".into(),
            None,
            vec![(Who::Operator, 200)],
        ),
        (
            "DELETE",
            "/api/ops/promotions/MATRIX".into(),
            None,
            vec![(Who::Operator, 200)],
        ),
        (
            "POST",
            "/api/cluster/handoff".into(),
            Some(
                json!({"driver_id": Uuid::now_v7(), "vehicle_type": "economy", "online": true,
                       "lat": 48.85, "lng": 2.35, "ts_ms": 1, "received_ms": 1})
                .to_string(),
            ),
            vec![(Who::Operator, 204)],
        ),
        (
            "GET",
            format!("/api/cluster/drivers/{d}"),
            None,
            vec![(Who::Operator, 204)],
        ),
        (
            "POST",
            "/api/cluster/offers".into(),
            Some(cluster_offer(Uuid::now_v7(), Uuid::now_v7()).to_string()),
            vec![(Who::Operator, 200)],
        ),
        (
            "POST",
            "/api/cluster/withdrawals".into(),
            Some(json!({"driver_id": d, "trip_id": Uuid::now_v7(), "reason": "taken"}).to_string()),
            vec![(Who::Operator, 204)],
        ),
        (
            "POST",
            "/api/cluster/declines".into(),
            Some(json!({"driver_id": d, "trip_id": Uuid::now_v7()}).to_string()),
            vec![(Who::Operator, 204)],
        ),
        (
            "POST",
            "/api/cluster/accepts".into(),
            Some(cluster_accept(Uuid::now_v7(), Uuid::now_v7()).to_string()),
            vec![(Who::Operator, 200)],
        ),
        (
            "POST",
            "/api/cluster/free".into(),
            Some(
                json!({"driver_id": Uuid::now_v7(), "lat": 48.85, "lng": 2.35,
                       "vehicle_type": "economy", "from": "local"})
                .to_string(),
            ),
            vec![(Who::Operator, 200)],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, allowed) in &rows {
        for who in EVERYONE {
            let expected = allowed
                .iter()
                .find(|(w, _)| *w == who)
                .map_or(403, |(_, s)| *s);
            let res = app
                .request(method, path, Some(c.token(who)), body.clone())
                .await;
            if res.status != expected {
                failures.push(format!(
                    "{method} {path} as {who:?}: {} (expected {expected}) {}",
                    res.status, res.body
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[actix_rt::test]
async fn every_authenticated_route_refuses_missing_and_bad_tokens() {
    let app = spawn_app().await;
    let (c, trip) = cast(&app).await;
    let (r, d) = (c.rider, c.driver);
    let paths = [
        ("PUT", format!("/api/drivers/{d}/status")),
        ("PUT", format!("/api/drivers/{d}/location")),
        ("GET", format!("/api/drivers/{d}")),
        ("GET", format!("/api/drivers/{d}/earnings")),
        ("GET", format!("/api/locations/drivers/{d}/history")),
        ("GET", "/api/locations/nearby?lat=1&lng=1".into()),
        ("GET", "/api/pricing/surge?lat=1&lng=1".into()),
        ("POST", "/api/pricing/estimate".into()),
        ("POST", "/api/trips".into()),
        ("GET", format!("/api/trips/{trip}")),
        ("GET", format!("/api/trips/{trip}/events")),
        ("GET", format!("/api/trips/{trip}/receipt")),
        ("POST", format!("/api/trips/{trip}/rating")),
        ("POST", format!("/api/trips/{trip}/refund")),
        ("DELETE", format!("/api/trips/{trip}")),
        ("PUT", format!("/api/trips/{trip}/accept")),
        ("PUT", format!("/api/trips/{trip}/decline")),
        ("PUT", format!("/api/trips/{trip}/arrived")),
        ("PUT", format!("/api/trips/{trip}/start")),
        ("PUT", format!("/api/trips/{trip}/complete")),
        ("GET", format!("/api/riders/{r}/trips")),
        ("GET", format!("/api/riders/{r}/wallet")),
        ("GET", format!("/api/riders/{r}/transactions")),
        ("POST", format!("/api/riders/{r}/wallet/topup")),
        ("POST", "/api/ops/promotions".into()),
        ("GET", "/api/ops/promotions".into()),
        ("DELETE", "/api/ops/promotions/ANY".into()),
        ("POST", "/api/cluster/handoff".into()),
        ("GET", format!("/api/cluster/drivers/{d}")),
        ("POST", "/api/cluster/offers".into()),
        ("POST", "/api/cluster/withdrawals".into()),
        ("POST", "/api/cluster/declines".into()),
        ("POST", "/api/cluster/accepts".into()),
        ("POST", "/api/cluster/free".into()),
    ];
    for (what, token) in bad_tokens(r, Role::Operator) {
        for (method, path) in &paths {
            let res = app
                .request(method, path, token.as_deref(), Some("{}".into()))
                .await;
            assert_eq!(res.status, 401, "{what} on {method} {path}: {}", res.body);
            assert!(res.body["error"]["code"].is_string());
        }
    }
    // Unauthenticated routes stay open.
    for path in ["/health", "/ready", "/version", "/metrics"] {
        assert_eq!(app.get(path, None).await.status, 200, "{path}");
    }
}

/// A valid `POST /api/cluster/offers` body from the single instance ("local").
pub fn cluster_offer(driver: Uuid, trip: Uuid) -> serde_json::Value {
    json!({"driver_id": driver, "expires_ms": 1, "from": "local", "terms": terms(trip)})
}

/// A valid `POST /api/cluster/accepts` body.
pub fn cluster_accept(driver: Uuid, trip: Uuid) -> serde_json::Value {
    json!({"trip_id": trip, "expires_ms": 1, "terms": terms(trip),
           "driver": {"driver_id": driver, "vehicle_type": "economy", "online": true,
                      "lat": 48.85, "lng": 2.35, "ts_ms": 1, "received_ms": 1}})
}

fn terms(trip: Uuid) -> serde_json::Value {
    json!({"trip_id": trip, "pickup": {"lat": 48.85, "lng": 2.35},
           "dropoff": {"lat": 48.86, "lng": 2.36},
           "fare_estimate": {"amount": 1000, "currency": "EUR"}, "vehicle_type": "economy"})
}
