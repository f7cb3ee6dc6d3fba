//! The HTTP and WebSocket edge (actix-web): the server's state ([`state`]: the core plus keys,
//! password hashing, limiters), routes per resource (`*_routes`, [`accounts`], [`locations`],
//! [`pricing_routes`], [`ops`], [`health`]), the caller extractor ([`caller`]), input parsing
//! ([`input`]), the error envelope with its `From` impls for domain errors ([`error`]), and the
//! socket sessions ([`ws`]). Handlers parse, authorise, then talk to the core's actors.

pub mod accounts;
pub mod asyncapi;
pub mod caller;
pub mod cluster;
pub mod driver_routes;
pub mod error;
pub mod health;
pub mod input;
pub mod limits;
pub mod locations;
pub mod openapi;
pub mod ops;
pub mod passwords;
pub mod payment_routes;
pub mod pricing_routes;
pub mod promotion_routes;
pub mod state;
pub mod tokens;
pub mod trip_routes;
pub mod ws;

pub use state::AppState;

use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use metrics::counter;

use error::ApiError;

/// One route: what it is, who may call it, and how it is mounted. The router and the OpenAPI
/// document (`GET /api/openapi.json`) are both made from [`ENDPOINTS`], so they cannot disagree.
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Path, with `{id}` parameters.
    pub path: &'static str,
    /// Who may call it (SPEC §4's "who" column); `anyone` needs no token.
    pub who: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The request body's type, as an OpenAPI schema.
    pub body: Option<openapi::Described>,
    /// The success answer's type, as an OpenAPI schema.
    pub answer: Option<openapi::Described>,
    mount: fn(actix_web::Resource) -> actix_web::Resource,
}

macro_rules! endpoint {
    ($method:ident, $path:literal, $who:literal, $summary:literal, $handler:path) => {
        endpoint!(@ $method, $path, $who, $summary, $handler, None, None)
    };
    ($method:ident, $path:literal, $who:literal, $summary:literal, $handler:path, answer = $a:ty) => {
        endpoint!(@ $method, $path, $who, $summary, $handler, None, Some(openapi::described::<$a>))
    };
    ($method:ident, $path:literal, $who:literal, $summary:literal, $handler:path, body = $b:ty) => {
        endpoint!(@ $method, $path, $who, $summary, $handler, Some(openapi::described::<$b>), None)
    };
    ($method:ident, $path:literal, $who:literal, $summary:literal, $handler:path, body = $b:ty, answer = $a:ty) => {
        endpoint!(@ $method, $path, $who, $summary, $handler,
                  Some(openapi::described::<$b>), Some(openapi::described::<$a>))
    };
    (@ $method:ident, $path:literal, $who:literal, $summary:literal, $handler:path, $body:expr, $answer:expr) => {
        Endpoint {
            method: stringify!($method),
            path: $path,
            who: $who,
            summary: $summary,
            body: $body,
            answer: $answer,
            mount: |r| r.route(web::$method().to($handler)),
        }
    };
}

/// Every route of the engine.
pub const ENDPOINTS: &[Endpoint] = &[
    endpoint!(
        get,
        "/health",
        "anyone",
        "Liveness.",
        health::health,
        answer = health::Health
    ),
    endpoint!(
        get,
        "/ready",
        "anyone",
        "Readiness: recovery done, dependencies up; 503 names what is down.",
        health::ready,
        answer = health::Readiness
    ),
    endpoint!(
        get,
        "/version",
        "anyone",
        "Name, version, git sha.",
        health::version,
        answer = health::VersionInfo
    ),
    endpoint!(
        get,
        "/api/cluster/owner",
        "anyone",
        "Which instance owns the region of lat, lng: {region, instance, url}.",
        cluster::owner,
        answer = cluster::Owner<'static>
    ),
    endpoint!(
        post,
        "/api/cluster/handoff",
        "operator",
        "Between instances: take on a driver that drove into one of this instance's regions (its position and whether it is online); 204.",
        cluster::handoff,
        body = crate::actors::peers::Handoff
    ),
    endpoint!(
        post,
        "/api/cluster/offers",
        "operator",
        "Between instances: a trip of another instance offers itself to a driver held here; delivered, busy or unreachable.",
        cluster::offers,
        body = crate::actors::peers::RemoteOffer,
        answer = crate::actors::peers::RemoteOfferReply
    ),
    endpoint!(
        post,
        "/api/cluster/withdrawals",
        "operator",
        "Between instances: a remote trip ended its offer to a driver held here; 204.",
        cluster::withdrawals,
        body = crate::actors::peers::RemoteWithdraw
    ),
    endpoint!(
        post,
        "/api/cluster/declines",
        "operator",
        "Between instances: a driver held elsewhere declined an offer of a trip run here; 204.",
        cluster::declines,
        body = crate::actors::peers::RemoteDecline
    ),
    endpoint!(
        post,
        "/api/cluster/accepts",
        "operator",
        "Between instances: a driver held elsewhere accepted an offer of a trip run here and comes here with it; {outcome, trip | reason}.",
        cluster::accepts,
        body = crate::actors::peers::RemoteAccept,
        answer = crate::actors::peers::RemoteAcceptAnswer
    ),
    endpoint!(
        post,
        "/api/cluster/free",
        "operator",
        "Between instances: a driver held elsewhere became free near this instance's regions; {offered}.",
        cluster::free,
        body = crate::actors::peers::RemoteFree,
        answer = cluster::Freed
    ),
    endpoint!(
        get,
        "/api/cluster/drivers/{id}",
        "operator",
        "Between instances: 204 if this instance holds the driver now, 404 if not.",
        cluster::holds_driver
    ),
    endpoint!(
        get,
        "/metrics",
        "anyone",
        "Prometheus metrics.",
        health::metrics
    ),
    endpoint!(
        get,
        "/api/openapi.json",
        "anyone",
        "This document.",
        openapi::document
    ),
    endpoint!(
        get,
        "/api/asyncapi.json",
        "anyone",
        "AsyncAPI 3 document of the WebSocket frames and the bus messages.",
        asyncapi::document
    ),
    endpoint!(
        post,
        "/api/auth/register",
        "anyone",
        "Register a rider or driver.",
        accounts::register,
        body = accounts::RegisterBody,
        answer = accounts::Registered
    ),
    endpoint!(
        post,
        "/api/auth/login",
        "anyone",
        "Log in: access and refresh tokens.",
        accounts::login,
        body = accounts::LoginBody,
        answer = accounts::TokenPair
    ),
    endpoint!(
        post,
        "/api/auth/refresh",
        "anyone",
        "Rotate a refresh token.",
        accounts::refresh,
        body = accounts::RefreshBody,
        answer = accounts::TokenPair
    ),
    endpoint!(
        post,
        "/api/auth/logout",
        "anyone holding a refresh token",
        "Revoke the refresh token's whole family (logout); 204.",
        accounts::logout,
        body = accounts::RefreshBody
    ),
    endpoint!(
        put,
        "/api/drivers/{id}/status",
        "that driver",
        "Go online or offline.",
        driver_routes::put_status,
        body = driver_routes::StatusBody,
        answer = crate::actors::protocol::DriverSnapshot
    ),
    endpoint!(
        put,
        "/api/drivers/{id}/location",
        "that driver",
        "Report a position (REST twin of the location frame).",
        driver_routes::put_location,
        body = driver_routes::LocationBody,
        answer = crate::actors::protocol::DriverSnapshot
    ),
    endpoint!(
        get,
        "/api/drivers/{id}",
        "that driver, operator",
        "Profile, status, last position, current trip and offer.",
        driver_routes::get_driver,
        answer = driver_routes::DriverView
    ),
    endpoint!(
        get,
        "/api/drivers/{id}/earnings",
        "that driver, operator",
        "Earnings within from/to.",
        payment_routes::earnings,
        answer = payment_routes::Earnings
    ),
    endpoint!(
        get,
        "/api/locations/nearby",
        "rider, operator",
        "Nearest online, available, fresh drivers.",
        locations::nearby,
        answer = locations::NearbyAnswer
    ),
    endpoint!(
        get,
        "/api/locations/drivers/{id}/history",
        "that driver, operator",
        "Sampled position history.",
        locations::history,
        answer = locations::History
    ),
    endpoint!(
        post,
        "/api/pricing/estimate",
        "rider, operator",
        "Fare estimate.",
        pricing_routes::estimate,
        body = pricing_routes::EstimateBody,
        answer = pricing_routes::Estimate
    ),
    endpoint!(
        get,
        "/api/pricing/surge",
        "rider, operator",
        "Surge multiplier at a point.",
        pricing_routes::surge,
        answer = pricing_routes::SurgeAnswer
    ),
    endpoint!(
        post,
        "/api/trips",
        "rider",
        "Request a trip (idempotency_key makes retries safe).",
        trip_routes::create,
        body = trip_routes::TripBody,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        get,
        "/api/trips/{id}",
        "its rider, its driver, operator",
        "The Trip object.",
        trip_routes::get,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        delete,
        "/api/trips/{id}",
        "its rider or its driver",
        "Cancel (rider) or give up (driver).",
        trip_routes::cancel,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        get,
        "/api/trips/{id}/events",
        "its rider, operator",
        "The trip's event log, oldest first.",
        trip_routes::events,
        answer = trip_routes::Events
    ),
    endpoint!(
        get,
        "/api/trips/{id}/receipt",
        "its rider, its driver, operator",
        "Final fare, breakdown, payment status.",
        payment_routes::receipt,
        answer = payment_routes::Receipt
    ),
    endpoint!(
        put,
        "/api/trips/{id}/accept",
        "the offered driver",
        "Accept an offer.",
        trip_routes::accept,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        put,
        "/api/trips/{id}/decline",
        "the offered driver",
        "Decline an offer.",
        trip_routes::decline,
        answer = trip_routes::Declined
    ),
    endpoint!(
        put,
        "/api/trips/{id}/arrived",
        "the assigned driver",
        "At the pickup.",
        trip_routes::arrived,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        put,
        "/api/trips/{id}/start",
        "the assigned driver",
        "Start with the rider's PIN.",
        trip_routes::start,
        body = trip_routes::StartBody,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        put,
        "/api/trips/{id}/complete",
        "the assigned driver",
        "Drop-off; prices the trip.",
        trip_routes::complete,
        answer = crate::actors::protocol::TripView
    ),
    endpoint!(
        get,
        "/api/riders/{id}/trips",
        "that rider, operator",
        "Trip history, newest first.",
        trip_routes::rider_history,
        answer = trip_routes::TripPage
    ),
    endpoint!(
        get,
        "/api/riders/{id}/wallet",
        "that rider, operator",
        "Wallet balance.",
        payment_routes::wallet,
        answer = payment_routes::Wallet
    ),
    endpoint!(
        get,
        "/api/riders/{id}/transactions",
        "that rider, operator",
        "The rider's ledger lines, newest first: {transactions: [{id, at, kind, amount, trip_id?}], next?}; ?limit=50&before=.",
        payment_routes::transactions,
        answer = payment_routes::Transactions
    ),
    endpoint!(
        post,
        "/api/riders/{id}/wallet/topup",
        "operator",
        "Credit a wallet (reference is idempotent).",
        payment_routes::top_up,
        body = payment_routes::TopUpBody,
        answer = payment_routes::ToppedUpView
    ),
    endpoint!(
        post,
        "/api/trips/{id}/rating",
        "its rider (rates the driver) or its driver (rates the rider), once each, from TRIP_COMPLETED on",
        "Rate the other side of a finished trip: {stars: 1..5, comment?} → 201; a second rating by the same side 409.",
        trip_routes::rate,
        body = trip_routes::RatingBody,
        answer = trip_routes::Rated
    ),
    endpoint!(
        post,
        "/api/trips/{id}/refund",
        "operator",
        "Refund a charged trip fully or partly through the ledger: {amount?: Money, reason, reference} → 201 {refunded, total_refunded, balance, applied}; the same reference twice refunds once; more than was charged 422.",
        payment_routes::refund,
        body = payment_routes::RefundBody,
        answer = payment_routes::RefundView
    ),
    endpoint!(
        post,
        "/api/ops/promotions",
        "operator",
        "Create a promotion: {code, kind: percent|flat, value, valid_from, valid_to, per_rider_limit} → 201; an existing code 409.",
        promotion_routes::create,
        body = promotion_routes::PromotionBody,
        answer = promotion_routes::PromotionView
    ),
    endpoint!(
        get,
        "/api/ops/promotions",
        "operator",
        "Every promotion with its uses, newest first.",
        promotion_routes::list,
        answer = promotion_routes::PromotionList
    ),
    endpoint!(
        delete,
        "/api/ops/promotions/{code}",
        "operator",
        "Disable a promotion (later uses are refused; its uses are kept).",
        promotion_routes::disable,
        answer = promotion_routes::PromotionView
    ),
    endpoint!(
        get,
        "/api/ops/heatmap",
        "operator",
        "Supply, demand and surge per H3 cell.",
        ops::get_heatmap,
        answer = ops::Heatmap
    ),
    endpoint!(
        get,
        "/ops",
        "anyone",
        "The live heatmap page (data needs an operator token).",
        ops::page
    ),
    endpoint!(
        get,
        "/ops/app.js",
        "anyone",
        "The page's script.",
        ops::script
    ),
    endpoint!(
        get,
        "/ops/app.css",
        "anyone",
        "The page's style.",
        ops::style
    ),
    endpoint!(
        get,
        "/ops/vendor/leaflet.js",
        "anyone",
        "Leaflet, served by the engine (no CDN).",
        ops::leaflet_script
    ),
    endpoint!(
        get,
        "/ops/vendor/leaflet.css",
        "anyone",
        "Leaflet's style.",
        ops::leaflet_style
    ),
    endpoint!(
        get,
        "/ws/driver",
        "driver",
        "Driver WebSocket (see docs/PROTOCOL.md).",
        ws::driver_socket::driver_socket
    ),
    endpoint!(
        get,
        "/ws/rider",
        "rider",
        "Rider WebSocket.",
        ws::rider_socket::rider_socket
    ),
    endpoint!(
        get,
        "/ws/ops",
        "operator",
        "Operator WebSocket: heatmap and stats.",
        ops::ops_socket
    ),
];

/// Mounts every route of [`ENDPOINTS`] on an app, one resource per path.
///
/// Fixed paths go first: the router tries resources in order, a fixed path is a string
/// comparison while a path with `{…}` segments is a pattern match, and a fixed path should win
/// over a pattern that would also match it.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&str> = Vec::new();
    for e in ENDPOINTS {
        if !paths.contains(&e.path) {
            paths.push(e.path);
        }
    }
    paths.sort_by_key(|p| p.contains('{'));
    for path in paths {
        let resource = ENDPOINTS
            .iter()
            .filter(|e| e.path == path)
            .fold(resource(path), |r, e| (e.mount)(r));
        cfg.service(resource);
    }
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

/// The id of the HTTP request being handled (see [`request_id`]); handlers pass it on to the
/// events the request causes, whose bus messages then carry it in `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub std::sync::Arc<str>);

impl actix_web::FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage as _;
        std::future::ready(Ok(req
            .extensions()
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self(uuid::Uuid::now_v7().to_string().into()))))
    }
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
    {
        use actix_web::HttpMessage as _;
        req.extensions_mut().insert(RequestId(id.as_str().into()));
    }
    // Probes and scrapes run every few seconds: their spans are debug, so they are neither
    // logged nor traced at the default levels.
    let span = if matches!(req.path(), "/health" | "/ready" | "/metrics") {
        tracing::debug_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.path()
        )
    } else {
        tracing::info_span!(
            "request",
            request_id = %id,
            method = %req.method(),
            path = %req.path()
        )
    };
    // A caller's W3C trace context makes this request a span of the caller's trace.
    let span = crate::telemetry::continuing(
        span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
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

/// Binds the listener the server will use, with `http.backlog` (port 0 picks a free port).
///
/// # Errors
///
/// The address cannot be resolved or bound.
pub fn bind(host: &str, port: u16, backlog: u32) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let address = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("no address for {host}"),
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Builds the HTTP server on an already bound listener.
///
/// # Errors
///
/// I/O errors from the listener.
pub fn server(data: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    let workers = match data.settings.http.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let timeout = data.settings.http.shutdown_timeout();
    let origins = data.settings.limits.cors_origins.clone();
    let instance = data.settings.instance_id().to_owned();
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
            .wrap(from_fn(cluster::forward))
            .wrap(from_fn(count_responses))
            .wrap(from_fn(request_id))
            .wrap(cors)
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add((cluster::INSTANCE_HEADER, instance.clone()))
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
    // No lingering once a response is done while the request's body is unfinished. The one
    // such body in normal use is a WebSocket's: after its close handshake the engine must close
    // the TCP connection at once (RFC 6455 §7.1.1), not read on for a second while a client
    // that waits for our FIN (as the RFC asks) is held. The cost: a client still uploading a
    // body the engine has already refused may see a reset instead of the error answer.
    .client_disconnect_timeout(std::time::Duration::ZERO)
    .disable_signals()
    .shutdown_timeout(timeout.as_secs())
    .listen(listener)?
    .run();
    Ok(server)
}
