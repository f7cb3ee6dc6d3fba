//! Liveness, readiness, version and metrics.

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::engine::Core;

/// `GET /health`: the process is alive.
#[get("/health")]
pub async fn health(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": core.started.elapsed().as_secs(),
    }))
}

/// `GET /ready`: start-up (recovery) is done and configured dependencies answer.
#[get("/ready")]
pub async fn ready(core: web::Data<Core>) -> HttpResponse {
    if core.is_ready() {
        HttpResponse::Ok().json(json!({"status": "ready", "checks": {"engine": "up"}}))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not_ready",
            "checks": {"engine": "starting or stopping"},
            "error": {"code": "not_ready", "message": "the engine is starting or stopping"},
        }))
    }
}

/// `GET /version`.
#[get("/version")]
pub async fn version() -> HttpResponse {
    let mut body = json!({"name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION")});
    if let Some(sha) = option_env!("HEXDISPATCH_GIT_SHA") {
        body["git_sha"] = json!(sha);
    }
    HttpResponse::Ok().json(body)
}

/// `GET /metrics`: Prometheus text format.
#[get("/metrics")]
pub async fn metrics(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(core.metrics.render())
}
