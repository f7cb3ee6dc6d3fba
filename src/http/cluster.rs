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

/// `GET /api/cluster/owner`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Owner<'a> {
    /// The region (an H3 cell at `cluster.region_resolution`), as hex.
    region: String,
    /// The owning instance's id.
    instance: &'a str,
    /// Its base URL.
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
pub const LOCAL_ONLY_HEADER: &str = crate::actors::peers::LOCAL_ONLY_HEADER;

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

/// For `PUT /api/trips/{id}/accept|decline` by a driver: where the driver's actor is — `Some(None)`
/// for here (handled here even if the trip runs elsewhere: the driver holds the offer),
/// `Some(Some(peer))` for a peer, `None` when it is not such a call or nobody holds the driver
/// (the trip's owner answers).
async fn answer_holder(state: &AppState, req: &ServiceRequest, path: &str) -> Option<Option<Peer>> {
    if req.method() != Method::PUT
        || !path.starts_with("/api/trips/")
        || !(path.ends_with("/accept") || path.ends_with("/decline"))
    {
        return None;
    }
    let token = super::caller::bearer_token(req.request(), false)?;
    let claims = state.keys.verify(&token).ok()?;
    if claims.role != crate::dispatch::Role::Driver {
        return None;
    }
    if state.drivers.get(claims.sub).is_some() {
        return Some(None);
    }
    holder_of(state, claims.sub).await.map(Some)
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
    } else if let Some(holder) = answer_holder(&state, &req, &path).await {
        // A driver's answer to an offer goes where the driver holds it.
        holder
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
    let mut outgoing = crate::actors::peers::with_client(|c| c.request(req.method().clone(), &url));
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

/// Asks each of `peers` the same GET (path and query) from its own drivers alone, with the
/// caller's credentials; returns the answers that came, as JSON. A peer that does not answer is
/// logged and left out (the caller answers from the rest).
pub async fn ask_peers(req: &HttpRequest, peers: &[Peer], me: &str) -> Vec<serde_json::Value> {
    let path = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    let calls = peers.iter().map(|peer| {
        let mut call = crate::actors::peers::with_client(|c| c.get(format!("{}{path}", peer.url)));
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

/// An offer deadline from a peer, kept within one offer timeout from now (clocks differ, and a
/// peer's number must not make an offer live forever or overflow).
fn clamp_expiry(core: &AppState, expires_ms: i64) -> i64 {
    let now = crate::clock::now_ms();
    expires_ms.clamp(now, now.saturating_add(core.policy.offer_timeout_ms))
}

fn peer_of(core: &AppState, id: &str) -> Result<Peer, ApiError> {
    core.regions
        .peers()
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| {
            ApiError::from(super::input::FieldError::out_of_range(format!(
                "{id:?} is not among cluster.peers"
            )))
        })
}

/// `POST /api/cluster/offers` (operator; between instances): a trip of the instance `from`
/// offers itself to a driver this instance holds. `{"reply": "delivered"|"busy"|"unreachable"}`.
pub async fn offers(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    use crate::actors::peers::{RemoteOffer, RemoteOfferReply};
    caller.require(&[crate::dispatch::Role::Operator])?;
    let offer: RemoteOffer = super::input::parse_json(&body)?;
    let from = peer_of(&core, &offer.from)?;
    let expires_ms = clamp_expiry(&core, offer.expires_ms);
    let reply = match core.drivers.get(offer.driver_id) {
        None => RemoteOfferReply::Unreachable,
        Some(driver) => match driver
            .send(crate::actors::driver::Offer {
                terms: std::sync::Arc::new(offer.terms),
                trip: crate::actors::driver::TripLink::Remote(from),
                expires_ms,
            })
            .await
        {
            Ok(crate::actors::driver::OfferReply::Delivered) => RemoteOfferReply::Delivered,
            Ok(crate::actors::driver::OfferReply::Busy) | Err(_) => RemoteOfferReply::Busy,
            Ok(crate::actors::driver::OfferReply::Unreachable) => RemoteOfferReply::Unreachable,
        },
    };
    Ok(HttpResponse::Ok().json(reply))
}

/// `POST /api/cluster/withdrawals` (operator; between instances): a remote trip ended its offer
/// to a driver this instance holds. 204.
pub async fn withdrawals(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let w: crate::actors::peers::RemoteWithdraw = super::input::parse_json(&body)?;
    if let Some(driver) = core.drivers.get(w.driver_id) {
        driver.do_send(crate::actors::driver::Withdraw {
            trip_id: w.trip_id,
            reason: w.reason,
        });
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/cluster/declines` (operator; between instances): a driver of another instance
/// declined an offer of a trip this instance runs. 204.
pub async fn declines(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let d: crate::actors::peers::RemoteDecline = super::input::parse_json(&body)?;
    if let Some(trip) = core.trip_actors.get(d.trip_id) {
        trip.do_send(crate::actors::trip::Declining {
            driver_id: d.driver_id,
        });
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/cluster/accepts` (operator; between instances): a driver of another instance
/// accepted an offer of a trip this instance runs. The driver comes here with its state (a
/// driver on a trip lives on the trip's instance); the trip decides as for its own drivers.
/// `{"outcome": "won", "trip"}` or `{"outcome": "lost", "reason"}`.
pub async fn accepts(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let a: crate::actors::peers::RemoteAccept = super::input::parse_json(&body)?;
    let point = LatLng::new(a.driver.lat, a.driver.lng)
        .map_err(|e| ApiError::from(super::input::FieldError::out_of_range(e.to_string())))?;
    if a.terms.trip_id != a.trip_id {
        return Err(
            super::input::FieldError::out_of_range("terms.trip_id differs from trip_id").into(),
        );
    }
    crate::dispatch::VehicleType::parse(&a.driver.vehicle_type).map_err(ApiError::from)?;
    // Decided in a task of its own: once the trip may take the driver, the decision runs to its
    // end (and its bookkeeping with it) even if the caller hangs up; the caller asks again and
    // gets the same answer.
    let core = core.into_inner();
    let decided = actix_rt::spawn(async move { accept_here(&core, a, point).await });
    let answer = decided.await.map_err(|_| {
        ApiError::unavailable("driver_unavailable", "the accept could not be decided")
    })??;
    Ok(HttpResponse::Ok().json(answer))
}

async fn accept_here(
    core: &AppState,
    a: crate::actors::peers::RemoteAccept,
    point: LatLng,
) -> Result<crate::actors::peers::RemoteAcceptAnswer, ApiError> {
    use crate::actors::driver::{AdoptOffer, Answer, AnswerError, Forget, Respond, SetStatus};
    use crate::actors::peers::RemoteAcceptAnswer;
    use crate::actors::protocol::{OfferEnd, TripView, Viewer};
    let won = |trip: &crate::dispatch::Trip| RemoteAcceptAnswer::Won {
        trip: serde_json::to_value(TripView::of(trip, Viewer::Driver)).unwrap_or_default(),
    };
    let Some(trip) = core.trip_actors.get(a.trip_id) else {
        return Ok(RemoteAcceptAnswer::Lost {
            reason: OfferEnd::Expired,
        });
    };
    let fresh = core.drivers.get(a.driver.driver_id).is_none();
    let driver = core
        .driver(a.driver.driver_id, Some(&a.driver.vehicle_type))
        .map_err(ApiError::from)?;
    let unavailable = |_| ApiError::unavailable("driver_unavailable", "the driver's actor stopped");
    driver
        .send(AdoptOffer {
            terms: std::sync::Arc::new(a.terms),
            trip,
            expires_ms: clamp_expiry(core, a.expires_ms),
            position: crate::dispatch::Position {
                point,
                heading: a.driver.heading,
                speed_mps: a.driver.speed_mps,
                ts_ms: a.driver.ts_ms,
                received_ms: a.driver.received_ms,
            },
        })
        .await
        .map_err(unavailable)?;
    let answer = driver
        .send(Respond {
            trip_id: a.trip_id,
            accept: true,
            request_id: None,
            traceparent: crate::telemetry::current_traceparent(),
        })
        .await
        .map_err(unavailable)?;
    match answer {
        Ok(Answer::Assigned(trip)) => {
            if a.driver.online {
                let _ = driver
                    .send(SetStatus(crate::dispatch::DriverStatus::Online))
                    .await;
            }
            Ok(won(&trip))
        }
        // A repeat of an accept that won (its answer was lost on the way back).
        Err(AnswerError::Assigned) => match core.trips.get(a.trip_id) {
            Some(trip) if trip.driver_id == Some(a.driver.driver_id) => Ok(won(&trip)),
            _ => Ok(RemoteAcceptAnswer::Lost {
                reason: OfferEnd::Taken,
            }),
        },
        other => {
            if fresh {
                driver.do_send(Forget);
            }
            Ok(RemoteAcceptAnswer::Lost {
                reason: match other {
                    Err(AnswerError::Gone(reason)) => reason,
                    _ => OfferEnd::Expired,
                },
            })
        }
    }
}

/// `POST /api/cluster/free` (operator; between instances): a driver the instance `from` holds
/// became free near this instance's regions; the waiting trips in reach are told, nearest
/// first, until one offers. `{"offered": bool}`.
pub async fn free(
    caller: super::caller::Caller,
    core: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[crate::dispatch::Role::Operator])?;
    let f: crate::actors::peers::RemoteFree = super::input::parse_json(&body)?;
    let from = peer_of(&core, &f.from)?;
    let point = LatLng::new(f.lat, f.lng)
        .map_err(|e| ApiError::from(super::input::FieldError::out_of_range(e.to_string())))?;
    let mut offered = false;
    let vehicle = crate::dispatch::VehicleType::parse(&f.vehicle_type).map_err(ApiError::from)?;
    if let Some(vehicle) = core.vehicles.lookup(&vehicle) {
        for (_, trip) in core.board.in_reach(point, vehicle) {
            let free = crate::actors::trip::DriverFree {
                driver_id: f.driver_id,
                position: point,
                held_by: Some(from.clone()),
            };
            if trip.send(free).await.unwrap_or(false) {
                offered = true;
                break;
            }
        }
    }
    Ok(HttpResponse::Ok().json(Freed { offered }))
}

/// `POST /api/cluster/free`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Freed {
    /// Whether a waiting trip here offered itself to the driver.
    offered: bool,
}
