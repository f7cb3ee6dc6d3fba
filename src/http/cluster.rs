//! Several instances (SPEC §11): `GET /api/cluster/owner` (which instance owns a point's region)
//! and the middleware that hands a request to the instance owning what it is about.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError as _, web};
use serde::Serialize;
use uuid::Uuid;

use super::error::ApiError;
use super::input::Query;
use crate::geo::{LatLng, Peer};
use crate::http::AppState;

/// The header naming the instance that handled a request.
pub const INSTANCE_HEADER: &str = "Hexdispatch-Instance";

#[derive(Serialize)]
struct Owner<'a> {
    /// The region (an H3 cell at `cluster.region_resolution`), as hex.
    region: String,
    instance: &'a str,
    url: String,
}

/// `GET /api/cluster/owner?lat=&lng=` → `{region, instance, url}`. A single instance owns every
/// region; its URL is the address it was asked at.
pub async fn owner(req: HttpRequest, core: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let point = Query::parse(&req)?.point()?;
    let region = core.regions.region_of(point);
    let peer = core.regions.owner(region);
    let url = if peer.url.is_empty() {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    } else {
        peer.url.clone()
    };
    Ok(HttpResponse::Ok().json(Owner {
        region: region.to_string(),
        instance: &peer.id,
        url,
    }))
}

/// The mark on a request one instance hands to another; a marked request is never forwarded
/// again (docs/adr/0002).
pub const FORWARDED_HEADER: &str = "Hexdispatch-Forwarded-By";

/// The mark on a query one instance asks another to answer from its own drivers alone (a
/// nearby query reaching across region boundaries); such a query is neither forwarded nor
/// spread further.
pub const LOCAL_ONLY_HEADER: &str = "Hexdispatch-Local-Only";

/// Request headers a forwarded request keeps.
const KEPT_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "accept",
];

/// Largest body forwarded (the engine's JSON bodies are far smaller).
const MAX_FORWARDED_BODY: usize = 256 * 1024;

thread_local! {
    /// One client (and connection pool to the peers) per worker thread.
    static PEERS: awc::Client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .connector(awc::Connector::new().timeout(std::time::Duration::from_secs(2)))
        .finish();
}

/// The peer whose driver actor holds `driver` now, if any (a driver lives on the instance
/// owning its region; one that drove across was handed over).
async fn holder_of(state: &AppState, driver: Uuid) -> Option<Peer> {
    let token = state.peer_token()?;
    let me = state.settings.instance_id();
    let asks = state
        .regions
        .peers()
        .iter()
        .filter(|p| p.id != me)
        .map(|peer| {
            let call = crate::actors::peers::with_client(|c| {
                c.get(format!("{}/api/cluster/drivers/{driver}", peer.url))
                    .bearer_auth(&token)
                    .insert_header((LOCAL_ONLY_HEADER, "1"))
            });
            async move {
                call.send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| peer.clone())
            }
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .next()
}

/// `GET /api/cluster/drivers/{id}` (operator; the instances ask each other): 204 if this
/// instance holds the driver's actor now, 404 if not.
pub async fn holds_driver(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let driver = super::caller::parse_id(&path, "driver id")?;
    if core.drivers.get(driver).is_some() {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::new(
            actix_web::http::StatusCode::NOT_FOUND,
            "driver_not_here",
            "this instance does not hold the driver",
        ))
    }
}

/// Hands a request about another instance's region to that instance (SPEC §11): `POST
/// /api/trips` and `POST /api/pricing/estimate` by the region of their `origin`, `GET
/// /api/locations/nearby` and `GET /api/pricing/surge` by the region of their point,
/// `/api/trips/{id}…` by the region the trip id carries. Everything else, a request whose point
/// cannot be read (the handler here names what is wrong), and everything on a single instance,
/// is handled here. `/api/drivers/{id}…` goes to the instance holding the driver's actor when
/// that is not this one.
pub async fn forward(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    if state.regions.peers().len() < 2
        || req.headers().contains_key(FORWARDED_HEADER)
        || req.headers().contains_key(LOCAL_ONLY_HEADER)
    {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let me = state.settings.instance_id().to_owned();
    let path = req.path().to_owned();
    let mut body = None;
    let point_owner = |p: LatLng| state.regions.owner(state.regions.region_of(p)).clone();
    let owner = if let Some(rest) = path.strip_prefix("/api/drivers/") {
        match Uuid::parse_str(rest.split('/').next().unwrap_or_default()) {
            Ok(driver) if state.drivers.get(driver).is_none() => holder_of(&state, driver).await,
            _ => None,
        }
    } else if let Some(rest) = path.strip_prefix("/api/trips/") {
        let id = rest.split('/').next().unwrap_or_default();
        Uuid::parse_str(id)
            .ok()
            .and_then(|id| state.regions.region_of_trip(id))
            .map(|region| state.regions.owner(region).clone())
    } else if req.method() == Method::POST
        && matches!(path.as_str(), "/api/trips" | "/api/pricing/estimate")
    {
        let bytes = read_body(&mut req).await?;
        let origin = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                let o = v.get("origin")?;
                LatLng::new(o.get("lat")?.as_f64()?, o.get("lng")?.as_f64()?).ok()
            });
        req.set_payload(actix_web::dev::Payload::from(bytes.clone()));
        body = Some(bytes);
        origin.map(point_owner)
    } else if req.method() == Method::GET
        && matches!(
            path.as_str(),
            "/api/locations/nearby" | "/api/pricing/surge"
        )
    {
        query_point(req.query_string()).map(point_owner)
    } else {
        None
    };
    let Some(owner) = owner.filter(|p| p.id != me) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let body = match body {
        Some(b) => b,
        None => read_body(&mut req).await?,
    };
    let response = match relay(&req, &owner, &me, body).await {
        Ok(r) => r,
        Err(reason) => {
            tracing::warn!(peer = %owner.id, error = %reason, "forwarding to the owner failed");
            ApiError::unavailable(
                "instance_unavailable",
                format!(
                    "the instance owning this region ({}) did not answer",
                    owner.id
                ),
            )
            .error_response()
        }
    };
    Ok(req.into_response(response).map_into_right_body())
}

fn query_point(query: &str) -> Option<LatLng> {
    let pairs = web::Query::<std::collections::HashMap<String, String>>::from_query(query).ok()?;
    let number = |key: &str| pairs.get(key)?.parse::<f64>().ok();
    LatLng::new(number("lat")?, number("lng")?).ok()
}

async fn read_body(req: &mut ServiceRequest) -> Result<Bytes, actix_web::Error> {
    let mut payload = req.take_payload();
    let mut out = web::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk?;
        if out.len() + chunk.len() > MAX_FORWARDED_BODY {
            return Err(ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            )
            .into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Replays the request to `owner` and turns its answer into ours.
async fn relay(
    req: &ServiceRequest,
    owner: &Peer,
    me: &str,
    body: Bytes,
) -> Result<HttpResponse, String> {
    let url = match req.uri().query() {
        Some(q) => format!("{}{}?{q}", owner.url, req.path()),
        None => format!("{}{}", owner.url, req.path()),
    };
    let mut outgoing = PEERS.with(|c| c.request(req.method().clone(), &url));
    for name in KEPT_HEADERS {
        if let Some(value) = req.headers().get(name) {
            outgoing = outgoing.insert_header((name, value.clone()));
        }
    }
    if !req.headers().contains_key("x-request-id")
        && let Some(id) = req.extensions().get::<super::RequestId>()
    {
        outgoing = outgoing.insert_header(("x-request-id", id.0.as_ref()));
    }
    outgoing = outgoing.insert_header((FORWARDED_HEADER, me));
    let mut answer = outgoing.send_body(body).await.map_err(|e| e.to_string())?;
    let bytes = answer
        .body()
        .limit(MAX_FORWARDED_BODY * 32)
        .await
        .map_err(|e| e.to_string())?;
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            response.append_header((name.clone(), value.clone()));
        }
    }
    Ok(response.body(bytes))
}

/// The other instances owning regions within `radius_m` of `point`.
#[must_use]
pub fn other_owners(state: &AppState, point: LatLng, radius_m: f64) -> Vec<Peer> {
    let me = state.settings.instance_id();
    let mut out: Vec<Peer> = Vec::new();
    if state.regions.peers().len() < 2 {
        return out;
    }
    for region in crate::geo::covering_cells(point, radius_m, state.regions.resolution()) {
        let owner = state.regions.owner(region);
        if owner.id != me && !out.iter().any(|p| p.id == owner.id) {
            out.push(owner.clone());
        }
    }
    out
}

/// Asks each of `peers` the same GET (path and query) from its own drivers alone, with the
/// caller's credentials; returns the answers that came, as JSON. A peer that does not answer is
/// logged and left out (the caller answers from the rest).
pub async fn ask_peers(req: &HttpRequest, peers: &[Peer], me: &str) -> Vec<serde_json::Value> {
    let path = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    let calls = peers.iter().map(|peer| {
        let mut call = PEERS.with(|c| c.get(format!("{}{path}", peer.url)));
        for name in KEPT_HEADERS {
            if let Some(value) = req.headers().get(name) {
                call = call.insert_header((name, value.clone()));
            }
        }
        let call = call
            .insert_header((FORWARDED_HEADER, me))
            .insert_header((LOCAL_ONLY_HEADER, "1"));
        async move {
            let answer = async {
                let mut res = call.send().await.map_err(|e| e.to_string())?;
                if !res.status().is_success() {
                    return Err(format!("answered {}", res.status()));
                }
                res.json::<serde_json::Value>()
                    .limit(MAX_FORWARDED_BODY * 32)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            answer
                .map_err(|e| tracing::warn!(peer = %peer.id, error = %e, "a peer did not answer"))
                .ok()
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `POST /api/cluster/handoff` (operator; the instances call it with a token of their own): a
/// peer hands over a driver that drove into one of this instance's regions (SPEC §11). The
/// driver's actor here takes its position and, if it was online, comes online at once; its app
/// reconnects here next. 204.
pub async fn handoff(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let handoff: crate::actors::peers::Handoff = super::input::parse_json(&body)?;
    let point = LatLng::new(handoff.lat, handoff.lng)
        .map_err(|e| ApiError::from(super::input::FieldError::out_of_range(e.to_string())))?;
    let actor = core
        .driver(handoff.driver_id, Some(&handoff.vehicle_type))
        .map_err(ApiError::from)?;
    if handoff.online {
        actor
            .send(crate::actors::driver::Restore(crate::dispatch::Position {
                point,
                heading: handoff.heading,
                speed_mps: handoff.speed_mps,
                ts_ms: handoff.ts_ms,
                received_ms: handoff.received_ms,
            }))
            .await
            .map_err(|_| {
                ApiError::unavailable("driver_unavailable", "the driver's actor stopped")
            })?;
    }
    Ok(HttpResponse::NoContent().finish())
}
