//! `GET /api/openapi.json`: an OpenAPI 3.1 document made from the route table
//! ([`ENDPOINTS`](super::ENDPOINTS)) the router itself is built from: every path and method, who
//! may call it, its path parameters, bearer authentication, the error envelope, and the request
//! and answer bodies as schemas generated from the very types the handlers read and write
//! (utoipa `ToSchema`).

use actix_web::HttpResponse;
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::Schema;

use super::ENDPOINTS;

/// Component schemas gathered while describing routes.
pub type Schemas = Vec<(String, RefOr<Schema>)>;

/// Describes a body type: registers its schema (and those it refers to) and returns a reference.
pub type Described = fn(&mut Schemas) -> Value;

/// [`Described`] for `T`.
pub fn described<T: utoipa::ToSchema>(out: &mut Schemas) -> Value {
    T::schemas(out);
    let name = T::name();
    out.push((name.to_string(), <T as utoipa::PartialSchema>::schema()));
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The status a route answers on success.
fn success(method: &str, path: &str) -> &'static str {
    match (method, path) {
        (
            "post",
            "/api/trips"
            | "/api/auth/register"
            | "/api/trips/{id}/rating"
            | "/api/trips/{id}/refund"
            | "/api/ops/promotions",
        ) => "201",
        (
            "post",
            "/api/auth/logout"
            | "/api/cluster/handoff"
            | "/api/cluster/withdrawals"
            | "/api/cluster/declines",
        )
        | ("get", "/api/cluster/drivers/{id}") => "204",
        _ => "200",
    }
}

/// The document.
#[must_use]
pub fn build() -> Value {
    let mut paths = Map::new();
    let mut schemas: Schemas = Vec::new();
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
        let ok = success(e.method, e.path);
        let mut answer = json!({"description": "Success."});
        if let Some(describe) = e.answer {
            answer["content"] = json!({"application/json": {"schema": describe(&mut schemas)}});
        } else if e.path == "/metrics" {
            answer["content"] = json!({"text/plain": {"schema": {"type": "string"}}});
        }
        let mut operation = json!({
            "summary": e.summary,
            "description": format!("Who: {}.", e.who),
            "tags": [tag],
            "parameters": params,
            "responses": {
                ok: answer,
                "default": {
                    "description": "An error, in the envelope of SPEC §2.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        });
        if e.who != "anyone" {
            operation["security"] = json!([{"bearer": []}]);
        }
        if let Some(describe) = e.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": describe(&mut schemas)}},
            });
        }
        let item = paths.entry(e.path.to_owned()).or_insert_with(|| json!({}));
        item[e.method] = operation;
    }
    let mut components = Map::new();
    for (name, schema) in schemas {
        components.insert(name, serde_json::to_value(schema).unwrap_or(Value::Null));
    }
    components.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }},
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hexdispatch",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Real-time ride-hailing dispatch engine. WebSocket frames and bus messages: GET /api/asyncapi.json and docs/PROTOCOL.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": components,
        },
    })
}

/// `GET /api/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(build())
}
