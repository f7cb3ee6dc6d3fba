//! `/api/drivers/{id}…`: a driver's status, position (REST twin of the WS frame) and profile.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::{Caller, parse_id};
use super::error::ApiError;
use super::input::{FieldError, json_body, location};
use crate::actors::Core;
use crate::actors::driver::{DriverActor, GetSnapshot, Location, Reached, SetStatus};
use crate::actors::protocol::DriverSnapshot;
use crate::dispatch::DriverStatus;
use crate::http::AppState;

/// `PUT /api/drivers/{id}/status`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct StatusBody {
    /// `online` or `offline`.
    #[schema(pattern = "^(online|offline)$")]
    status: String,
}

/// `PUT /api/drivers/{id}/location` (the REST twin of the socket's `location` frame).
#[derive(Deserialize, ToSchema)]
pub(crate) struct LocationBody {
    /// Latitude, degrees.
    #[schema(required = true, minimum = -90.0, maximum = 90.0)]
    lat: Option<f64>,
    /// Longitude, degrees.
    #[schema(required = true, minimum = -180.0, maximum = 180.0)]
    lng: Option<f64>,
    /// Degrees from north.
    #[schema(minimum = 0.0, maximum = 360.0)]
    heading: Option<f64>,
    /// Metres per second.
    #[schema(minimum = 0.0, maximum = 150.0)]
    speed_mps: Option<f64>,
    /// When the app took it, epoch ms.
    ts_ms: Option<i64>,
}

/// A driver's ratings.
#[derive(Serialize, ToSchema)]
pub(crate) struct RatingView {
    /// Mean stars, two decimals (0 with none).
    average: f64,
    /// Ratings received.
    count: i64,
}

/// `GET /api/drivers/{id}`: the driver's state and ratings.
#[derive(Serialize, ToSchema)]
pub(crate) struct DriverView {
    /// The state.
    #[serde(flatten)]
    driver: DriverSnapshot,
    /// Ratings received from riders (absent without a store).
    #[serde(skip_serializing_if = "Option::is_none")]
    rating: Option<RatingView>,
}

/// The calling driver's actor.
pub(crate) fn own_actor(
    core: &Core,
    caller: &Caller,
) -> Result<actix::Addr<DriverActor>, ApiError> {
    core.driver(caller.id(), caller.0.vehicle_type.as_deref())
        .map_err(ApiError::from)
}

/// The calling driver's actor, for a REST call: the call makes the driver reachable for offers
/// for `matching.rest_reach_s`.
pub(crate) fn rest_actor(
    core: &Core,
    caller: &Caller,
) -> Result<actix::Addr<DriverActor>, ApiError> {
    let actor = own_actor(core, caller)?;
    actor.do_send(Reached);
    Ok(actor)
}

/// The body of a request a driver makes about itself: the path's id must be the caller's.
async fn own_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    path: &str,
    caller: &Caller,
    payload: web::Payload,
) -> Result<T, ApiError> {
    caller.require_driver(parse_id(path, "driver id")?)?;
    json_body(req, payload).await
}

/// `PUT /api/drivers/{id}/status` `{status: "online"|"offline"}` → the driver's state.
pub async fn put_status(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: StatusBody = own_body(&req, &path, &caller, payload).await?;
    let status = DriverStatus::parse(&body.status).ok_or_else(|| {
        FieldError::invalid(
            "status",
            format_args!("\"online\" or \"offline\", got {:?}", body.status),
        )
    })?;
    let snapshot = rest_actor(&core, &caller)?
        .send(SetStatus(status))
        .await
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(snapshot))
}

/// `PUT /api/drivers/{id}/location` `{lat, lng, heading?, speed_mps?, ts_ms?}` → the driver's state.
pub async fn put_location(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: LocationBody = own_body(&req, &path, &caller, payload).await?;
    let update = location(body.lat, body.lng, body.heading, body.speed_mps, body.ts_ms)?;
    let actor = rest_actor(&core, &caller)?;
    // REST is the fallback path, not the stream: wait for the actor so the answer shows the update.
    actor
        .send(Location(update))
        .await
        .map_err(ApiError::internal)?;
    metrics::counter!(crate::metrics::LOCATION_UPDATES, "source" => "rest").increment(1);
    let snapshot = actor.send(GetSnapshot).await.map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok().json(snapshot))
}

/// `GET /api/drivers/{id}`: profile, status, last position, current trip.
pub async fn get_driver(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path, "driver id")?;
    caller.require_driver_or_operator(id)?;
    let snapshot = match core.drivers.get(id) {
        Some(actor) => {
            if caller.id() == id {
                actor.do_send(Reached);
            }
            actor.send(GetSnapshot).await.map_err(ApiError::internal)?
        }
        None => match core.directory.get(id) {
            Some(profile) => DriverSnapshot::from_profile(&profile),
            None if caller.id() == id => {
                // A driver asking about itself exists by virtue of its token.
                rest_actor(&core, &caller)?
                    .send(GetSnapshot)
                    .await
                    .map_err(ApiError::internal)?
            }
            None => {
                return Err(ApiError::not_found(
                    "driver_not_found",
                    format!("no driver {id} is known"),
                ));
            }
        },
    };
    let rating = match core.persistence() {
        Some(p) => {
            let r = p.store().rating_of(id).await?;
            Some(RatingView {
                average: r.average,
                count: r.count,
            })
        }
        None => None,
    };
    Ok(HttpResponse::Ok().json(DriverView {
        driver: snapshot,
        rating,
    }))
}
