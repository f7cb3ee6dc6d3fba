//! `GET /api/asyncapi.json`: the AsyncAPI document holds together (every reference resolves,
//! every operation names messages of its channel), and the frames and bus messages the engine
//! really sends validate against it.

use std::time::Duration;

use hexdispatch::dispatch::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_with};

/// Follows a local `#/a/b` reference.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
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

/// Validates `instance` against the payload of message `name`; the failures, if any.
fn check(doc: &Value, name: &str, instance: &Value) -> Vec<String> {
    let mut schema = doc.clone();
    schema["$ref"] = json!(format!("#/components/messages/{name}/payload"));
    let validator = jsonschema::validator_for(&schema).expect("the document compiles as a schema");
    validator
        .iter_errors(instance)
        .map(|e| format!("{name}: {e} at {}", e.instance_path))
        .collect()
}

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/asyncapi.json", None).await;
    assert_eq!(r.status, 200);
    r.body
}

#[actix_rt::test]
async fn the_document_is_whole() {
    let app = crate::helpers::spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["asyncapi"], "3.0.0");
    let channels = doc["channels"].as_object().unwrap();
    for (name, address) in [
        ("driverSocket", "/ws/driver"),
        ("riderSocket", "/ws/rider"),
        ("opsSocket", "/ws/ops"),
        ("events", "hexdispatch.events"),
    ] {
        assert_eq!(channels[name]["address"], address, "{name}");
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{}", all.len());
    for r in &all {
        assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
    }
    for (name, op) in doc["operations"].as_object().unwrap() {
        let channel = op["channel"]["$ref"].as_str().unwrap();
        for m in op["messages"].as_array().unwrap() {
            let m = m["$ref"].as_str().unwrap();
            assert!(
                m.starts_with(&format!("{channel}/messages/")),
                "{name}: {m} is not of {channel}"
            );
        }
    }
    // Every frame type the driver protocol names is described.
    let described: Vec<&str> = doc["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|m| m["payload"]["properties"]["type"]["const"].as_str())
        .collect();
    for kind in [
        "status",
        "location",
        "accept",
        "decline",
        "arrived",
        "start",
        "complete",
        "cancel",
        "session",
        "offer",
        "offer_cancelled",
        "trip_assigned",
        "accept_rejected",
        "trip_update",
        "moved",
        "error",
        "driver_location",
        "heatmap",
        "stats",
    ] {
        assert!(described.contains(&kind), "no message of type {kind}");
    }
    // The Trip object comes from the engine's type.
    assert!(doc["components"]["schemas"]["Trip"]["properties"]["fare_estimate"].is_object());
}

#[actix_rt::test]
async fn frames_and_bus_messages_the_engine_sends_match_the_document() {
    let app = spawn_app_with(|s| s.ops.heatmap_interval_ms = 200).await;
    let doc = document(&app).await;
    let mut bus = app.core.bus.subscribe();
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    let mut see = |name: &str, frame: &Value, failures: &mut Vec<String>| {
        checked.push(name.to_owned());
        failures.extend(check(&doc, name, frame));
    };

    // Driver: session, a bad frame, an offer, the winning accept.
    let driver = Uuid::now_v7();
    let mut ws = app
        .driver_socket(&app.driver_token(driver, "economy"))
        .await;
    let session = ws.recv_json().await;
    see("driverSession", &session, &mut failures);
    ws.send(json!({"type": "location", "lat": 48.8566, "lng": 2.3522}))
        .await;
    ws.send(json!({"type": "status", "status": "online", "ref": 7}))
        .await;
    let online = ws.recv_json().await;
    see("driverSession", &online, &mut failures);
    ws.send(json!({"type": "teleport", "ref": "x"})).await;
    see("error", &ws.recv_type("error").await, &mut failures);

    let rider = Uuid::now_v7();
    let rider_token = app.token(Role::Rider, rider);
    let mut rider_ws = app.raw_rider_socket(&rider_token).await;
    see(
        "riderSession",
        &rider_ws.recv_type("session").await,
        &mut failures,
    );
    let r = app
        .request_trip(&rider_token, (48.8567, 2.3523), (48.87, 2.30))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let trip_id = r.body["trip_id"].as_str().unwrap().to_owned();
    see("offer", &ws.recv_type("offer").await, &mut failures);
    ws.send(json!({"type": "accept", "trip_id": trip_id})).await;
    see(
        "tripAssigned",
        &ws.recv_type("trip_assigned").await,
        &mut failures,
    );
    ws.send(json!({"type": "arrived", "trip_id": trip_id}))
        .await;
    see(
        "driverTripUpdate",
        &ws.recv_type("trip_update").await,
        &mut failures,
    );
    let update = rider_ws.recv_type("trip_update").await;
    see("riderTripUpdate", &update, &mut failures);
    ws.send(json!({"type": "location", "lat": 48.8568, "lng": 2.3524}))
        .await;
    if let Some(location) = rider_ws
        .gets_within("driver_location", Duration::from_secs(3))
        .await
    {
        see("driverLocationForRider", &location, &mut failures);
    }

    // Operators: heatmap and stats.
    let mut ops = app
        .socket_at(&format!(
            "/ws/ops?res=7&token={}",
            app.token(Role::Operator, Uuid::now_v7())
        ))
        .await;
    see("heatmap", &ops.recv_type("heatmap").await, &mut failures);
    see("stats", &ops.recv_type("stats").await, &mut failures);

    // The bus: the trip's events and the driver's status change.
    let mut trip_events = 0;
    let mut driver_events = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while trip_events < 3 || driver_events < 1 {
        let Ok(Ok(message)) = tokio::time::timeout_at(deadline, bus.recv()).await else {
            break;
        };
        let payload: Value = serde_json::from_slice(&message.payload).unwrap();
        let headers = serde_json::to_value(&message.headers).unwrap();
        let name = if message.routing_key.starts_with("driver.") {
            driver_events += 1;
            "driverStatusEvent"
        } else if message.routing_key.starts_with("trip.")
            || message.routing_key.starts_with("payment.")
        {
            trip_events += 1;
            "tripEvent"
        } else {
            continue;
        };
        see(name, &payload, &mut failures);
        let mut schema = doc.clone();
        schema["$ref"] = json!(format!("#/components/messages/{name}/headers"));
        let validator = jsonschema::validator_for(&schema).unwrap();
        failures.extend(
            validator
                .iter_errors(&headers)
                .map(|e| format!("{name} headers: {e}")),
        );
    }
    assert!(
        trip_events >= 3 && driver_events >= 1,
        "{trip_events} trip and {driver_events} driver messages seen"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for name in [
        "driverSession",
        "error",
        "riderSession",
        "offer",
        "tripAssigned",
        "driverTripUpdate",
        "riderTripUpdate",
        "heatmap",
        "stats",
        "tripEvent",
        "driverStatusEvent",
    ] {
        assert!(checked.iter().any(|c| c == name), "{name} was not checked");
    }
}

#[test]
fn a_frame_that_breaks_the_document_is_caught() {
    // The check itself can fail: an offer without its fare is refused.
    let doc = hexdispatch::http::asyncapi::build();
    let bad = json!({"type": "offer", "trip_id": Uuid::now_v7(), "pickup": {"lat": 1, "lng": 1},
                     "dropoff": {"lat": 1, "lng": 1}, "vehicle_type": "economy",
                     "distance_to_pickup_m": 10, "expires_in_ms": 100});
    assert!(!check(&doc, "offer", &bad).is_empty());
    let good = json!({"type": "offer", "trip_id": Uuid::now_v7(), "pickup": {"lat": 1, "lng": 1},
                      "dropoff": {"lat": 1, "lng": 1}, "vehicle_type": "economy",
                      "fare_estimate": {"amount": 100, "currency": "USD"},
                      "distance_to_pickup_m": 10, "expires_in_ms": 100});
    assert_eq!(check(&doc, "offer", &good), Vec::<String>::new());
    // The Trip object inside a frame is checked through its generated schema.
    let broken_trip =
        json!({"type": "trip_assigned", "trip": {"trip_id": Uuid::now_v7(), "status": "FLYING"}});
    let errors = check(&doc, "tripAssigned", &broken_trip);
    assert!(errors.len() >= 2, "{errors:?}");
}
