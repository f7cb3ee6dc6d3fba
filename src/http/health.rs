//! Liveness, readiness, version and metrics.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::http::AppState;
use crate::metrics::{DEPENDENCY_UP, READY};

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `healthy`.
    status: &'static str,
    /// The engine's version.
    version: &'static str,
    /// Seconds since start.
    uptime_s: u64,
}

/// `GET /health`: the process is alive.
pub async fn health(core: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "healthy",
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: core.started.elapsed().as_secs(),
    })
}

/// `GET /ready` when ready (503 carries the same `checks` and an `error`).
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    status: &'static str,
    /// Each check: `engine`, and `database`, `broker`, `redis` when configured.
    #[schema(value_type = Object)]
    checks: serde_json::Map<String, serde_json::Value>,
}

/// `GET /version`.
#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    /// The crate's name.
    name: &'static str,
    /// Its version.
    version: &'static str,
    /// The commit built, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    git_sha: Option<&'static str>,
}

/// `GET /ready`: start-up (recovery) is done and configured dependencies answer; otherwise 503
/// naming what is down.
pub async fn ready(core: web::Data<AppState>) -> HttpResponse {
    let (checks, down) = readiness(&core);
    if down.is_empty() {
        HttpResponse::Ok().json(Readiness {
            status: "ready",
            checks,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not_ready",
            "checks": checks,
            "error": {
                "code": "not_ready",
                "message": format!("not ready: {} down", down.join(", ")),
            },
        }))
    }
}

/// What `/ready` reports: each check, and the names of those down. Also sets the
/// `hexdispatch_ready` and `hexdispatch_dependency_up` gauges, so alerts see what `/ready` sees.
pub fn readiness(
    core: &AppState,
) -> (
    serde_json::Map<String, serde_json::Value>,
    Vec<&'static str>,
) {
    let mut checks = serde_json::Map::new();
    let mut down = Vec::new();
    let engine = if core.is_ready() {
        "up"
    } else {
        down.push("engine");
        "starting or stopping"
    };
    checks.insert("engine".into(), json!(engine));
    if let Some(p) = core.persistence() {
        let up = p.is_healthy();
        if !up {
            down.push("database");
        }
        checks.insert(
            "database".into(),
            json!({
                "status": if up { "up" } else { "down" },
                "backend": p.store().backend().as_str(),
                "pending_writes": p.pending(),
            }),
        );
    }
    if core.settings.amqp.url.is_some() {
        let up = core
            .broker_healthy
            .load(std::sync::atomic::Ordering::Acquire);
        if !up {
            down.push("broker");
        }
        checks.insert("broker".into(), json!(if up { "up" } else { "down" }));
    }
    if let Some(s) = core.snapshot() {
        let up = s.is_healthy();
        if !up {
            down.push("redis");
        }
        checks.insert("redis".into(), json!(if up { "up" } else { "down" }));
    }
    for dependency in ["database", "broker", "redis"] {
        if checks.contains_key(dependency) {
            let up = if down.contains(&dependency) { 0.0 } else { 1.0 };
            metrics::gauge!(DEPENDENCY_UP, "dependency" => dependency).set(up);
        }
    }
    metrics::gauge!(READY).set(if down.is_empty() { 1.0 } else { 0.0 });
    (checks, down)
}

/// `GET /version`.
pub async fn version() -> HttpResponse {
    HttpResponse::Ok().json(VersionInfo {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        git_sha: option_env!("HEXDISPATCH_GIT_SHA"),
    })
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(core: web::Data<AppState>) -> HttpResponse {
    // Readiness as gauges, fresh for every scrape.
    let _ = readiness(&core);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(core.metrics.render())
}
