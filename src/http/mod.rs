//! The HTTP and WebSocket edge (actix-web): routes per resource, the auth extractor, input
//! parsing and the error envelope. Handlers parse, authorise, then talk to the core's actors.

pub mod accounts;
pub mod auth;
pub mod drivers;
pub mod error;
pub mod health;
pub mod input;
pub mod locations;
pub mod money;
pub mod ops;
pub mod pricing;
pub mod trips;
pub mod ws;

use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use metrics::counter;

use crate::engine::{Core, shutdown_timeout};
use error::ApiError;

/// Mounts every route on an app.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(health::version)
        .service(health::metrics)
        .service(resource("/api/auth/register").route(web::post().to(accounts::register)))
        .service(resource("/api/auth/login").route(web::post().to(accounts::login)))
        .service(resource("/api/auth/refresh").route(web::post().to(accounts::refresh)))
        .service(resource("/api/drivers/{id}/status").route(web::put().to(drivers::put_status)))
        .service(resource("/api/drivers/{id}/location").route(web::put().to(drivers::put_location)))
        .service(resource("/api/drivers/{id}").route(web::get().to(drivers::get_driver)))
        .service(resource("/api/locations/nearby").route(web::get().to(locations::nearby)))
        .service(
            resource("/api/locations/drivers/{id}/history")
                .route(web::get().to(locations::history)),
        )
        .service(resource("/api/pricing/estimate").route(web::post().to(pricing::estimate)))
        .service(resource("/api/pricing/surge").route(web::get().to(pricing::surge)))
        .service(resource("/api/trips").route(web::post().to(trips::create)))
        .service(
            resource("/api/trips/{id}")
                .route(web::get().to(trips::get))
                .route(web::delete().to(trips::cancel)),
        )
        .service(resource("/api/trips/{id}/events").route(web::get().to(trips::events)))
        .service(resource("/api/trips/{id}/accept").route(web::put().to(trips::accept)))
        .service(resource("/api/trips/{id}/decline").route(web::put().to(trips::decline)))
        .service(resource("/api/trips/{id}/arrived").route(web::put().to(trips::arrived)))
        .service(resource("/api/trips/{id}/start").route(web::put().to(trips::start)))
        .service(resource("/api/trips/{id}/complete").route(web::put().to(trips::complete)))
        .service(resource("/api/riders/{id}/trips").route(web::get().to(trips::rider_history)))
        .service(resource("/api/riders/{id}/wallet").route(web::get().to(money::wallet)))
        .service(resource("/api/riders/{id}/wallet/topup").route(web::post().to(money::top_up)))
        .service(resource("/api/trips/{id}/receipt").route(web::get().to(money::receipt)))
        .service(resource("/api/drivers/{id}/earnings").route(web::get().to(money::earnings)))
        .service(resource("/ws/driver").route(web::get().to(ws::driver::driver_socket)))
        .service(resource("/ws/rider").route(web::get().to(ws::rider::rider_socket)))
        .service(resource("/api/ops/heatmap").route(web::get().to(ops::get_heatmap)))
        .service(resource("/ws/ops").route(web::get().to(ops::ops_socket)))
        .service(resource("/ops").route(web::get().to(ops::page)))
        .service(resource("/ops/app.js").route(web::get().to(ops::script)))
        .service(resource("/ops/app.css").route(web::get().to(ops::style)));
}

/// A resource that answers other methods with 405 in the error envelope.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    ))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("not_found", "no such route"))
}

/// Gives every request an id (the client's `X-Request-Id` when it is a short token, else a new
/// UUID), runs it inside a `request` span carrying that id, and returns it in `X-Request-Id`.
async fn request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument as _;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path()
    );
    let mut response = next.call(req).instrument(span).await?;
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            value,
        );
    }
    Ok(response)
}

/// Counts responses by status class.
async fn count_responses(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!(crate::metrics::HTTP_RESPONSES, "status" => class).increment(1);
    Ok(response)
}

/// Builds the HTTP server on an already bound listener.
///
/// # Errors
///
/// I/O errors from the listener.
pub fn server(core: Core, listener: TcpListener) -> std::io::Result<Server> {
    let workers = match core.settings.http.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let timeout = shutdown_timeout(&core.settings);
    let origins = core.settings.limits.cors_origins.clone();
    let data = web::Data::new(core);
    let server = HttpServer::new(move || {
        let mut cors = actix_cors::Cors::default()
            .allowed_methods(["GET", "POST", "PUT", "DELETE"])
            .allowed_headers([
                actix_web::http::header::AUTHORIZATION,
                actix_web::http::header::CONTENT_TYPE,
            ])
            .max_age(600);
        for origin in &origins {
            cors = cors.allowed_origin(origin);
        }
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(count_responses))
            .wrap(from_fn(request_id))
            .wrap(cors)
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "no-referrer"))
                    .add(("Cache-Control", "no-store"))
                    .add((
                        "Content-Security-Policy",
                        "default-src 'self'; frame-ancestors 'none'",
                    )),
            )
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}
