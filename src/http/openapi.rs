//! `GET /api/openapi.json`: an OpenAPI 3.0 document made from the route table
//! ([`ENDPOINTS`](super::ENDPOINTS)) the router itself is built from: every path and method, who
//! may call it, its path parameters, bearer authentication and the error envelope.

use actix_web::HttpResponse;
use serde_json::{Map, Value, json};

use super::ENDPOINTS;

/// The document.
#[must_use]
pub fn build() -> Value {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let params: Vec<Value> = e
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "id" {
                    json!({"type": "string", "format": "uuid"})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        let tag = e
            .path
            .trim_start_matches('/')
            .split('/')
            .find(|s| *s != "api")
            .unwrap_or("engine");
        let ok = match e.method {
            "post"
                if matches!(
                    e.path,
                    "/api/trips"
                        | "/api/auth/register"
                        | "/api/trips/{id}/rating"
                        | "/api/trips/{id}/refund"
                        | "/api/ops/promotions"
                ) =>
            {
                "201"
            }
            _ => "200",
        };
        let mut operation = json!({
            "summary": e.summary,
            "description": format!("Who: {}.", e.who),
            "tags": [tag],
            "parameters": params,
            "responses": {
                ok: {"description": "Success."},
                "default": {
                    "description": "An error, in the envelope of SPEC §2.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        });
        if e.who != "anyone" {
            operation["security"] = json!([{"bearer": []}]);
        }
        if matches!(e.method, "post" | "put") {
            operation["requestBody"] = json!({
                "required": e.path != "/api/trips/{id}/accept",
                "content": {"application/json": {"schema": {"type": "object"}}},
            });
        }
        let item = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        item[e.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hexdispatch",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Real-time ride-hailing dispatch engine. WebSocket messages are in docs/PROTOCOL.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
                "Money": {
                    "type": "object",
                    "required": ["amount", "currency"],
                    "properties": {"amount": {"type": "integer", "format": "int64", "description": "minor units"},
                                   "currency": {"type": "string", "minLength": 3, "maxLength": 3}},
                },
                "LatLng": {
                    "type": "object",
                    "required": ["lat", "lng"],
                    "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
                                   "lng": {"type": "number", "minimum": -180, "maximum": 180}},
                },
            },
        },
    })
}

/// `GET /api/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(build())
}
