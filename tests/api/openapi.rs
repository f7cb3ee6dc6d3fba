//! `GET /api/openapi.json` against the running engine: every JSON route documents its request and
//! answer bodies as schemas (generated from the handlers' types), and the answers the engine really
//! gives, on a run through every route, validate against them.

use hexdispatch::dispatch::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Response, TestApp, spawn_app};
use crate::payments::{PICKUP, accepted_trip, completed_trip, status_becomes, top_up};

/// Every `$ref` in `value`.
pub fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The documented answer schema of `method path` for `status`, as a schema with the document's
/// components beside it.
fn answer_schema(doc: &Value, method: &str, path: &str, status: u16) -> Value {
    let schema = &doc["paths"][path][method]["responses"][status.to_string()]["content"]["application/json"]
        ["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} documents no {status} JSON answer"
    );
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    root
}

/// Validates a real answer against the document; the mismatches, if any.
fn check(doc: &Value, method: &str, path: &str, r: &Response) -> Vec<String> {
    let schema = answer_schema(doc, method, path, r.status);
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator
        .iter_errors(&r.body)
        .map(|e| format!("{method} {path} ({}): {e} at {}", r.status, e.instance_path))
        .collect()
}

#[actix_rt::test]
async fn every_json_route_documents_its_bodies() {
    let app = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.body;
    let mut undocumented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let not_json = path.starts_with("/ops")
                || path.starts_with("/ws/")
                || path == "/metrics"
                || path.ends_with(".json");
            if not_json {
                continue;
            }
            let ok = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .find(|k| k.starts_with('2'))
                .cloned()
                .unwrap();
            let has_answer =
                op["responses"][&ok]["content"]["application/json"]["schema"].is_object();
            if ok != "204" && !has_answer {
                undocumented.push(format!("{method} {path}: no answer schema"));
            }
            let takes_body = matches!(method.as_str(), "post" | "put")
                && !path.ends_with("/accept")
                && !path.ends_with("/decline")
                && !path.ends_with("/arrived")
                && !path.ends_with("/complete");
            if takes_body && !op["requestBody"]["content"]["application/json"]["schema"].is_object()
            {
                undocumented.push(format!("{method} {path}: no request schema"));
            }
        }
    }
    assert!(undocumented.is_empty(), "{}", undocumented.join("\n"));
    // The shared objects are the engine's types.
    for name in [
        "Trip",
        "Money",
        "LatLng",
        "FareBreakdown",
        "TripStatus",
        "Driver",
        "Receipt",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "no schema {name}"
        );
    }
}

#[actix_rt::test]
async fn the_answers_of_a_run_through_every_route_match_their_schemas() {
    let app = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.body;
    let mut failures = Vec::new();
    let mut seen = 0;
    let mut see = |method: &str, path: &str, r: Response, failures: &mut Vec<String>| -> Response {
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
        seen += 1;
        failures.extend(check(&doc, method, path, &r));
        r
    };
    let operator = app.token(Role::Operator, Uuid::now_v7());
    for path in ["/health", "/ready", "/version"] {
        see("get", path, app.get(path, None).await, &mut failures);
    }
    see(
        "get",
        "/api/cluster/owner",
        app.get("/api/cluster/owner?lat=1&lng=1", None).await,
        &mut failures,
    );

    // Accounts.
    let email = format!("{}@example.org", Uuid::now_v7().simple());
    let body = json!({"role": "driver", "name": "D", "email": email, "password": "long enough pw",
                      "vehicle": {"type": "economy", "plate": "B-1"}});
    see(
        "post",
        "/api/auth/register",
        app.post("/api/auth/register", None, &body.to_string())
            .await,
        &mut failures,
    );
    let login = see(
        "post",
        "/api/auth/login",
        app.post(
            "/api/auth/login",
            None,
            &json!({"email": email, "password": "long enough pw"}).to_string(),
        )
        .await,
        &mut failures,
    );
    let refresh = json!({"refresh_token": login.body["refresh_token"]}).to_string();
    see(
        "post",
        "/api/auth/refresh",
        app.post("/api/auth/refresh", None, &refresh).await,
        &mut failures,
    );

    // A completed, charged trip, with everything that reads it.
    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    see(
        "post",
        "/api/riders/{id}/wallet/topup",
        top_up(&app, rider, 100_000, "openapi").await,
        &mut failures,
    );
    let (trip_id, driver) = completed_trip(&app, &rider_token).await;
    status_becomes(&app, &rider_token, &trip_id, "PAYMENT_PROCESSED").await;
    let driver_token = app.driver_token(driver, "economy");
    let trip = format!("/api/trips/{trip_id}");
    see(
        "get",
        "/api/trips/{id}",
        app.get(&trip, Some(&rider_token)).await,
        &mut failures,
    );
    see(
        "get",
        "/api/trips/{id}/events",
        app.get(&format!("{trip}/events"), Some(&operator)).await,
        &mut failures,
    );
    see(
        "get",
        "/api/trips/{id}/receipt",
        app.get(&format!("{trip}/receipt"), Some(&driver_token))
            .await,
        &mut failures,
    );
    see(
        "post",
        "/api/trips/{id}/rating",
        app.post(
            &format!("{trip}/rating"),
            Some(&rider_token),
            &json!({"stars": 4, "comment": "ok"}).to_string(),
        )
        .await,
        &mut failures,
    );
    see(
        "post",
        "/api/trips/{id}/refund",
        app.post(&format!("{trip}/refund"), Some(&operator),
                 &json!({"reason": "r", "reference": "openapi", "amount": {"amount": 10, "currency": "USD"}}).to_string()).await,
        &mut failures,
    );
    see(
        "get",
        "/api/trips/{id}/receipt",
        app.get(&format!("{trip}/receipt"), Some(&rider_token))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/riders/{id}/trips",
        app.get(&format!("/api/riders/{rider}/trips"), Some(&rider_token))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/riders/{id}/wallet",
        app.get(&format!("/api/riders/{rider}/wallet"), Some(&rider_token))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/riders/{id}/transactions",
        app.get(
            &format!("/api/riders/{rider}/transactions?limit=2"),
            Some(&rider_token),
        )
        .await,
        &mut failures,
    );
    see(
        "get",
        "/api/drivers/{id}",
        app.get(&format!("/api/drivers/{driver}"), Some(&driver_token))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/drivers/{id}/earnings",
        app.get(&format!("/api/drivers/{driver}/earnings"), Some(&operator))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/locations/drivers/{id}/history",
        app.get(
            &format!("/api/locations/drivers/{driver}/history"),
            Some(&operator),
        )
        .await,
        &mut failures,
    );

    // The driver actions on a fresh trip, then its cancellation.
    let (second, _, second_driver) = accepted_trip(&app, &rider_token).await;
    let second = format!("/api/trips/{second}");
    see(
        "put",
        "/api/trips/{id}/arrived",
        app.put(&format!("{second}/arrived"), Some(&second_driver), "")
            .await,
        &mut failures,
    );
    see(
        "delete",
        "/api/trips/{id}",
        app.delete(&second, Some(&rider_token)).await,
        &mut failures,
    );

    // Drivers, locations, pricing.
    let lone = Uuid::now_v7();
    let lone_token = app.driver_token(lone, "economy");
    let at = json!({"lat": PICKUP.0, "lng": PICKUP.1}).to_string();
    see(
        "put",
        "/api/drivers/{id}/location",
        app.put(
            &format!("/api/drivers/{lone}/location"),
            Some(&lone_token),
            &at,
        )
        .await,
        &mut failures,
    );
    see(
        "put",
        "/api/drivers/{id}/status",
        app.put(
            &format!("/api/drivers/{lone}/status"),
            Some(&lone_token),
            &json!({"status": "online"}).to_string(),
        )
        .await,
        &mut failures,
    );
    see(
        "get",
        "/api/locations/nearby",
        app.get(
            &format!("/api/locations/nearby?lat={}&lng={}", PICKUP.0, PICKUP.1),
            Some(&rider_token),
        )
        .await,
        &mut failures,
    );
    let route = json!({"origin": {"lat": PICKUP.0, "lng": PICKUP.1}, "destination": {"lat": 48.87, "lng": 2.30}});
    see(
        "post",
        "/api/pricing/estimate",
        app.post(
            "/api/pricing/estimate",
            Some(&rider_token),
            &route.to_string(),
        )
        .await,
        &mut failures,
    );
    see(
        "get",
        "/api/pricing/surge",
        app.get("/api/pricing/surge?lat=48.85&lng=2.35", Some(&rider_token))
            .await,
        &mut failures,
    );
    let created = see(
        "post",
        "/api/trips",
        app.post("/api/trips", Some(&rider_token), &route.to_string())
            .await,
        &mut failures,
    );
    let offered = created.body["trip_id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let me = app
            .get(&format!("/api/drivers/{lone}"), Some(&lone_token))
            .await;
        if me.body["offer"]["trip_id"] == offered.as_str() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    see(
        "put",
        "/api/trips/{id}/decline",
        app.put(
            &format!("/api/trips/{offered}/decline"),
            Some(&lone_token),
            "",
        )
        .await,
        &mut failures,
    );

    // Operators.
    let promo = json!({"code": "SCHEMA", "kind": "flat", "value": 100, "valid_from": "2026-01-01T00:00:00Z",
                       "valid_to": "2030-01-01T00:00:00Z", "per_rider_limit": 2});
    see(
        "post",
        "/api/ops/promotions",
        app.post("/api/ops/promotions", Some(&operator), &promo.to_string())
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/ops/promotions",
        app.get("/api/ops/promotions", Some(&operator)).await,
        &mut failures,
    );
    see(
        "delete",
        "/api/ops/promotions/{code}",
        app.delete("/api/ops/promotions/SCHEMA", Some(&operator))
            .await,
        &mut failures,
    );
    see(
        "get",
        "/api/ops/heatmap",
        app.get("/api/ops/heatmap?res=7", Some(&operator)).await,
        &mut failures,
    );

    // Calls between instances (a single instance answers them too).
    let offer = crate::authz::cluster_offer(Uuid::now_v7(), Uuid::now_v7()).to_string();
    see(
        "post",
        "/api/cluster/offers",
        app.post("/api/cluster/offers", Some(&operator), &offer)
            .await,
        &mut failures,
    );
    let accept = crate::authz::cluster_accept(Uuid::now_v7(), Uuid::now_v7()).to_string();
    see(
        "post",
        "/api/cluster/accepts",
        app.post("/api/cluster/accepts", Some(&operator), &accept)
            .await,
        &mut failures,
    );
    let free = json!({"driver_id": Uuid::now_v7(), "lat": 48.85, "lng": 2.35, "vehicle_type": "economy", "from": "local"});
    see(
        "post",
        "/api/cluster/free",
        app.post("/api/cluster/free", Some(&operator), &free.to_string())
            .await,
        &mut failures,
    );

    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(seen >= 36, "{seen} answers checked");
}

#[actix_rt::test]
async fn an_answer_that_breaks_its_schema_is_caught() {
    let app: TestApp = spawn_app().await;
    let doc = app.get("/api/openapi.json", None).await.body;
    let fake = Response {
        status: 200,
        body: json!({"rider_id": Uuid::now_v7(), "balance": {"amount": "12", "currency": "USD"}}),
        headers: awc::http::header::HeaderMap::new(),
    };
    assert!(!check(&doc, "get", "/api/riders/{id}/wallet", &fake).is_empty());
}
