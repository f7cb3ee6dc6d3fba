//! `GET /api/asyncapi.json`: an AsyncAPI 3.0 document of what the engine says and hears outside
//! HTTP: the frames of `/ws/driver`, `/ws/rider` and `/ws/ops` (docs/PROTOCOL.md) and the messages
//! it publishes to the RabbitMQ topic exchange (docs/EVENTS.md). The shared objects (the Trip
//! object, Money, coordinates, statuses) are the schemas generated from the engine's own types,
//! the same ones the OpenAPI document uses; the tests validate frames and messages the engine
//! really sends against this document.

use actix_web::HttpResponse;
use serde_json::{Map, Value, json};
use utoipa::{PartialSchema as _, ToSchema};

use crate::actors::protocol::TripView;
use crate::dispatch::TripStatus;

/// The component schemas generated from the engine's types, as JSON, keyed by name.
#[must_use]
pub fn type_schemas() -> Map<String, Value> {
    let mut schemas = Vec::new();
    TripView::schemas(&mut schemas);
    schemas.push((TripView::name().into_owned(), TripView::schema()));
    let mut out = Map::new();
    for (name, schema) in schemas {
        out.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
    }
    out
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// An object schema: `properties`, of which `required` must be present.
fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// A frame: `{"type": kind, …}` plus the client's `ref` echoed on replies.
fn frame(kind: &str, required: &[&str], mut properties: Value) -> Value {
    properties["type"] = json!({"const": kind});
    properties["ref"] = json!({"description": "the client's `ref`, echoed on a reply"});
    let mut all = vec!["type"];
    all.extend_from_slice(required);
    object(&all, properties)
}

fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn message(name: &str, summary: &str, payload: Value) -> (String, Value) {
    (
        name.to_owned(),
        json!({"name": name, "summary": summary, "contentType": "application/json", "payload": payload}),
    )
}

fn statuses() -> Vec<&'static str> {
    TripStatus::ALL.iter().map(|s| s.as_str()).collect()
}

/// The frames a driver sends.
fn driver_in() -> Vec<(String, Value)> {
    let trip = || json!({"trip_id": uuid()});
    vec![
        message(
            "driverStatus",
            "Go online or offline; answered with a session frame.",
            frame(
                "status",
                &["status"],
                json!({"status": {"enum": ["online", "offline"]}}),
            ),
        ),
        message(
            "driverLocation",
            "A position; no reply unless it is bad.",
            frame(
                "location",
                &["lat", "lng"],
                json!({
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lng": {"type": "number", "minimum": -180, "maximum": 180},
                    "heading": {"type": "number", "minimum": 0, "maximum": 360},
                    "speed_mps": {"type": "number", "minimum": 0, "maximum": 150},
                    "ts_ms": {"type": "integer", "minimum": 0},
                }),
            ),
        ),
        message(
            "driverAccept",
            "Accept the offer of a trip.",
            frame("accept", &["trip_id"], trip()),
        ),
        message(
            "driverDecline",
            "Decline an offer.",
            frame("decline", &["trip_id"], trip()),
        ),
        message(
            "driverArrived",
            "At the pickup.",
            frame("arrived", &["trip_id"], trip()),
        ),
        message(
            "driverStart",
            "Start with the rider's 4-digit PIN.",
            frame(
                "start",
                &["trip_id", "pin"],
                json!({"trip_id": uuid(), "pin": {"type": "string", "pattern": "^[0-9]{4}$"}}),
            ),
        ),
        message(
            "driverComplete",
            "Drop-off.",
            frame("complete", &["trip_id"], trip()),
        ),
        message(
            "driverCancel",
            "Give the trip up.",
            frame("cancel", &["trip_id"], trip()),
        ),
    ]
}

fn position() -> Value {
    json!({
        "type": ["object", "null"],
        "required": ["lat", "lng", "ts_ms", "received_ms"],
        "properties": {
            "lat": {"type": "number"}, "lng": {"type": "number"},
            "heading": {"type": "number"}, "speed_mps": {"type": "number"},
            "ts_ms": {"type": "integer"}, "received_ms": {"type": "integer"},
        },
    })
}

fn error_message() -> (String, Value) {
    message(
        "error",
        "A bad frame or a refused action; the session stays open (codes in docs/PROTOCOL.md).",
        frame(
            "error",
            &["code", "message"],
            json!({"code": {"type": "string"}, "message": {"type": "string"}}),
        ),
    )
}

/// The frames the engine sends a driver.
fn driver_out() -> Vec<(String, Value)> {
    let offer_end = json!({"enum": ["taken", "rider_cancelled", "expired", "declined"]});
    vec![
        message(
            "driverSession",
            "The driver's state, on connect and after a status change.",
            frame(
                "session",
                &[
                    "driver_id",
                    "status",
                    "vehicle_type",
                    "available",
                    "connected",
                ],
                json!({
                    "driver_id": uuid(),
                    "status": {"enum": ["online", "offline"]},
                    "vehicle_type": {"type": "string"},
                    "available": {"type": "boolean"},
                    "connected": {"type": "boolean"},
                    "last_position": position(),
                    "current_trip": {"type": ["string", "null"], "format": "uuid"},
                    "offer": {"type": ["object", "null"]},
                    "trip": {"oneOf": [schema_ref("Trip"), {"type": "null"}]},
                }),
            ),
        ),
        message(
            "offer",
            "A trip offers itself; at most one live offer per driver.",
            frame(
                "offer",
                &[
                    "trip_id",
                    "pickup",
                    "dropoff",
                    "fare_estimate",
                    "vehicle_type",
                    "distance_to_pickup_m",
                    "expires_in_ms",
                ],
                json!({
                    "trip_id": uuid(),
                    "pickup": schema_ref("LatLng"),
                    "dropoff": schema_ref("LatLng"),
                    "fare_estimate": schema_ref("Money"),
                    "vehicle_type": {"type": "string"},
                    "distance_to_pickup_m": {"type": "number", "minimum": 0},
                    "expires_in_ms": {"type": "integer", "minimum": 0},
                }),
            ),
        ),
        message(
            "offerCancelled",
            "The offer ended before an answer.",
            frame(
                "offer_cancelled",
                &["trip_id", "reason"],
                json!({"trip_id": uuid(), "reason": offer_end}),
            ),
        ),
        message(
            "tripAssigned",
            "Reply to a winning accept.",
            frame(
                "trip_assigned",
                &["trip"],
                json!({"trip": schema_ref("Trip")}),
            ),
        ),
        message(
            "acceptRejected",
            "Reply to an accept whose offer had ended.",
            frame(
                "accept_rejected",
                &["trip_id", "reason"],
                json!({"trip_id": uuid(), "reason": offer_end}),
            ),
        ),
        message(
            "driverTripUpdate",
            "A change of the driver's trip (its own action's reply, or one it did not cause).",
            frame(
                "trip_update",
                &["trip_id", "status"],
                json!({
                    "trip_id": uuid(),
                    "status": {"enum": statuses()},
                    "trip": schema_ref("Trip"),
                    "reason": {"const": "rider_cancelled"},
                    "released": {"const": true},
                }),
            ),
        ),
        message(
            "moved",
            "Several instances: reconnect to `url`; close 4002 follows.",
            frame(
                "moved",
                &["instance", "url"],
                json!({"instance": {"type": "string"}, "url": {"type": "string"}}),
            ),
        ),
        error_message(),
    ]
}

/// The frames the engine sends a rider.
fn rider_out() -> Vec<(String, Value)> {
    vec![
        message(
            "riderSession",
            "On connect: the rider's live trips, newest first.",
            frame(
                "session",
                &["rider_id", "trips"],
                json!({"rider_id": uuid(), "trips": {"type": "array", "items": schema_ref("Trip")}}),
            ),
        ),
        message(
            "riderTripUpdate",
            "Every status change of the rider's trips.",
            frame(
                "trip_update",
                &["trip_id", "status"],
                json!({
                    "trip_id": uuid(),
                    "status": {"enum": statuses()},
                    "driver": {
                        "type": "object",
                        "required": ["driver_id", "vehicle_type"],
                        "properties": {"driver_id": uuid(), "vehicle_type": {"type": "string"},
                                       "position": {"oneOf": [schema_ref("LatLng"), {"type": "null"}]}},
                    },
                    "eta_s": {"type": "integer", "minimum": 0},
                    "start_pin": {"type": "string", "pattern": "^[0-9]{4}$"},
                    "fare": schema_ref("Money"),
                    "cancellation_fee": schema_ref("Money"),
                    "pickup_at": {"type": "string", "format": "date-time"},
                    "dispatch_at": {"type": "string", "format": "date-time"},
                }),
            ),
        ),
        message(
            "driverLocationForRider",
            "The assigned driver's position, at most once per `trip.rider_location_interval_ms`.",
            frame(
                "driver_location",
                &["trip_id", "lat", "lng"],
                json!({"trip_id": uuid(), "lat": {"type": "number"}, "lng": {"type": "number"},
                       "heading": {"type": "number"}}),
            ),
        ),
        error_message(),
    ]
}

/// The frames the engine sends an operator.
fn ops_out() -> Vec<(String, Value)> {
    let pair = json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2});
    vec![
        message(
            "heatmap",
            "Supply, demand and surge per H3 cell, every `ops.heatmap_interval_ms`.",
            frame(
                "heatmap",
                &["res", "cells", "ts_ms"],
                json!({
                    "res": {"type": "integer", "minimum": 0, "maximum": 15},
                    "ts_ms": {"type": "integer"},
                    "cells": {"type": "array", "items": object(
                        &["cell", "supply", "demand", "surge", "centre", "radius_m", "boundary"],
                        json!({
                            "cell": {"type": "string"},
                            "supply": {"type": "integer", "minimum": 0},
                            "demand": {"type": "integer", "minimum": 0},
                            "surge": {"type": "number", "minimum": 1},
                            "centre": pair,
                            "radius_m": {"type": "number"},
                            "boundary": {"type": "array", "items": pair},
                        }),
                    )},
                }),
            ),
        ),
        message(
            "stats",
            "Live counters, with each heatmap.",
            frame(
                "stats",
                &[
                    "drivers_online",
                    "driver_actors",
                    "trips_live",
                    "trips_by_status",
                    "riders_connected",
                    "ts_ms",
                ],
                json!({
                    "drivers_online": {"type": "integer", "minimum": 0},
                    "driver_actors": {"type": "integer", "minimum": 0},
                    "trips_live": {"type": "integer", "minimum": 0},
                    "trips_by_status": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "riders_connected": {"type": "integer", "minimum": 0},
                    "ts_ms": {"type": "integer"},
                }),
            ),
        ),
    ]
}

/// The messages published to the topic exchange.
fn bus() -> Vec<(String, Value)> {
    let headers = object(
        &["x-event-type", "traceparent"],
        json!({
            "x-event-type": {"type": "string", "description": "the routing key"},
            "traceparent": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                            "description": "W3C trace context of the publish (docs/OPERATIONS.md, Traces)"},
            "x-request-id": {"type": "string", "description": "the HTTP request that caused it"},
        }),
    );
    let with_headers = |(name, mut m): (String, Value)| {
        m["headers"] = headers.clone();
        (name, m)
    };
    vec![
        with_headers(message(
            "tripEvent",
            "One event of a trip's log (`trip.*` and `payment.*` routing keys; the same events as \
             GET /api/trips/{id}/events). message_id = {trip_id}:{seq}.",
            object(
                &["trip_id", "rider_id", "seq", "type", "at_ms", "data"],
                json!({
                    "trip_id": uuid(),
                    "rider_id": uuid(),
                    "seq": {"type": "integer", "minimum": 1},
                    "type": {"type": "string", "pattern": "^(trip|payment)\\."},
                    "at_ms": {"type": "integer"},
                    "data": {"type": "object"},
                }),
            ),
        )),
        with_headers(message(
            "driverStatusEvent",
            "A driver went online or offline (`driver.online`, `driver.offline`).",
            object(
                &["driver_id", "status", "vehicle_type", "reason", "at_ms"],
                json!({
                    "driver_id": uuid(),
                    "status": {"enum": ["online", "offline"]},
                    "vehicle_type": {"type": "string"},
                    "reason": {"enum": ["requested", "stale", "restored"]},
                    "at_ms": {"type": "integer"},
                    "position": schema_ref("LatLng"),
                }),
            ),
        )),
        with_headers(message(
            "notification",
            "A rendered message for a delivery service (`notify.push`, `notify.sms`, `notify.email`).",
            object(
                &["user_id", "trip_id"],
                json!({
                    "user_id": uuid(), "trip_id": uuid(),
                    "title": {"type": "string"}, "body": {"type": "string"},
                    "text": {"type": "string", "maxLength": 160}, "subject": {"type": "string"},
                }),
            ),
        )),
    ]
}

/// The document.
#[must_use]
pub fn build() -> Value {
    let mut messages = Map::new();
    let mut channel_messages = |list: &[(String, Value)]| {
        let mut refs = Map::new();
        for (name, m) in list {
            messages.insert(name.clone(), m.clone());
            refs.insert(
                name.clone(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            );
        }
        Value::Object(refs)
    };
    let (din, dout, rout, oout, events) =
        (driver_in(), driver_out(), rider_out(), ops_out(), bus());
    let driver_all: Vec<(String, Value)> = din.iter().chain(dout.iter()).cloned().collect();
    let driver_channel = channel_messages(&driver_all);
    let rider_channel = channel_messages(&rout);
    let ops_channel = channel_messages(&oout);
    let events_channel = channel_messages(&events);
    let refs = |channel: &str, list: &[(String, Value)]| -> Value {
        list.iter()
            .map(|(name, _)| json!({"$ref": format!("#/channels/{channel}/messages/{name}")}))
            .collect()
    };
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "hexdispatch",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "WebSocket frames (docs/PROTOCOL.md) and bus messages (docs/EVENTS.md) of the hexdispatch dispatch engine. Frames are JSON text frames; a client may add `ref` and gets it back on the reply.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "engine": {"host": "localhost:8080", "protocol": "ws", "description": "the engine; sockets take the token as `Authorization: Bearer` or `?token=`"},
            "broker": {"host": "localhost:5672", "protocol": "amqp", "description": "RabbitMQ, topic exchange `amqp.exchange` (default hexdispatch.events)"},
        },
        "channels": {
            "driverSocket": {"address": "/ws/driver", "servers": [{"$ref": "#/servers/engine"}],
                             "description": "role driver", "messages": driver_channel},
            "riderSocket": {"address": "/ws/rider", "servers": [{"$ref": "#/servers/engine"}],
                            "description": "role rider; the rider sends nothing but pings", "messages": rider_channel},
            "opsSocket": {"address": "/ws/ops", "servers": [{"$ref": "#/servers/engine"}],
                          "description": "role operator; `?res=` chooses the heatmap resolution", "messages": ops_channel},
            "events": {"address": "hexdispatch.events", "servers": [{"$ref": "#/servers/broker"}],
                       "description": "topic exchange; the routing key is the event type", "messages": events_channel},
        },
        "operations": {
            "driverSends": {"action": "receive", "channel": {"$ref": "#/channels/driverSocket"}, "messages": refs("driverSocket", &din)},
            "engineSendsDriver": {"action": "send", "channel": {"$ref": "#/channels/driverSocket"}, "messages": refs("driverSocket", &dout)},
            "engineSendsRider": {"action": "send", "channel": {"$ref": "#/channels/riderSocket"}, "messages": refs("riderSocket", &rout)},
            "engineSendsOperator": {"action": "send", "channel": {"$ref": "#/channels/opsSocket"}, "messages": refs("opsSocket", &oout)},
            "enginePublishes": {"action": "send", "channel": {"$ref": "#/channels/events"}, "messages": refs("events", &events)},
        },
        "components": {"schemas": type_schemas(), "messages": messages},
    })
}

/// `GET /api/asyncapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(build())
}
