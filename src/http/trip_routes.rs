//! `/api/trips…`: riders request, follow and cancel trips; drivers answer offers and drive trips
//! (the REST twins of the socket frames); operators read everything and change nothing.
//!
//! Every trip action goes to the trip's actor (or, for offers, the driver's actor), which decides
//! under its own lock-free serial order; these handlers only authenticate, parse and map answers.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::RequestId;
use super::caller::{Caller, parse_id};
use super::driver_routes::rest_actor;
use super::error::ApiError;
use super::input::{FieldError, Query, json_body};
use super::state::AppState;
use crate::actors::driver::{Answer, AnswerError, Respond};
use crate::actors::protocol::{TripView, Viewer};
use crate::actors::trip::{DriverAct, DriverAction, RiderCancel};
use crate::actors::{Core, DriveError, Requested, TripRequest};
use crate::clock::rfc3339;
use crate::dispatch::{Role, Trip, TripError, TripStatus};
use crate::geo::LatLng;
use crate::persistence::{NewRating, RatingSide};

/// `{lat, lng}` as sent; checked by [`point`].
#[derive(Deserialize, ToSchema)]
#[schema(as = Point)]
pub(crate) struct PointBody {
    /// Latitude, degrees.
    #[schema(required = true, minimum = -90.0, maximum = 90.0)]
    lat: Option<f64>,
    /// Longitude, degrees.
    #[schema(required = true, minimum = -180.0, maximum = 180.0)]
    lng: Option<f64>,
}

/// A required point field, with errors naming `name.lat` / `name.lng`.
pub(crate) fn point(body: Option<PointBody>, name: &str) -> Result<LatLng, FieldError> {
    let body = body.ok_or_else(|| FieldError::missing(name))?;
    let lat = body
        .lat
        .ok_or_else(|| FieldError::missing(&format!("{name}.lat")))?;
    let lng = body
        .lng
        .ok_or_else(|| FieldError::missing(&format!("{name}.lng")))?;
    LatLng::new(lat, lng).map_err(|e| FieldError::out_of_range(format!("{name}: {e}")))
}

/// An optional short text field: trimmed, non-empty, at most `max` characters.
pub(crate) fn short_text(
    value: Option<String>,
    name: &str,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() || v.chars().count() > max => Err(FieldError::invalid(
            name,
            format_args!("a non-empty string of at most {max} characters"),
        )),
        Some(v) => Ok(Some(v.trim().to_owned())),
    }
}

/// `POST /api/trips`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TripBody {
    /// Pickup.
    #[schema(required = true)]
    origin: Option<PointBody>,
    /// Drop-off.
    #[schema(required = true)]
    destination: Option<PointBody>,
    /// One of the tariffs' vehicle types (the default when absent).
    vehicle_type: Option<String>,
    /// A promotion code.
    promo_code: Option<String>,
    /// The same key from the same rider gives the same trip.
    idempotency_key: Option<String>,
    /// Book ahead: RFC 3339, `trip.schedule_min_lead_s` to 7 days from now.
    #[schema(format = DateTime)]
    pickup_at: Option<String>,
}

/// An RFC 3339 time as epoch ms.
pub(crate) fn rfc3339_ms(raw: &str, field: &'static str) -> Result<i64, FieldError> {
    crate::clock::parse_rfc3339_ms(raw.trim())
        .ok_or_else(|| FieldError::invalid(field, "an RFC 3339 time, e.g. 2026-12-01T08:30:00Z"))
}

/// Maps a refused offer answer from `driver` about `trip_id`.
pub(crate) fn answer_error(
    core: &Core,
    e: AnswerError,
    trip_id: Uuid,
    driver: Uuid,
    accept: bool,
) -> ApiError {
    let trip = core.trips.get(trip_id);
    match e {
        AnswerError::Gone(reason) if accept => ApiError::conflict(
            "accept_rejected",
            format!("the offer is no longer open: {}", reason.as_str()),
        ),
        AnswerError::Gone(reason) => ApiError::conflict(
            "offer_closed",
            format!("the offer is no longer open: {}", reason.as_str()),
        ),
        AnswerError::Assigned => ApiError::conflict("already_assigned", e.to_string()),
        // The driver's own trip, already over: refused by state, not by ownership.
        AnswerError::NotOffered if trip.as_ref().is_some_and(|t| t.driver_id == Some(driver)) => {
            ApiError::conflict(
                "accept_rejected",
                format!(
                    "trip {trip_id} is {} and takes no more answers",
                    trip.as_ref().map_or("over", |t| t.status.as_str())
                ),
            )
        }
        AnswerError::NotOffered if trip.is_some() => ApiError::forbidden_as(
            "not_offered",
            format!("trip {trip_id} is not offered to this driver"),
        ),
        AnswerError::NotOffered => trip_not_found(trip_id),
    }
}

fn trip_not_found(trip_id: Uuid) -> ApiError {
    ApiError::not_found("trip_not_found", format!("no trip {trip_id}"))
}

/// The trip, if the caller may see it, and how.
async fn visible(core: &Core, caller: &Caller, trip_id: Uuid) -> Result<(Trip, Viewer), ApiError> {
    let trip = core
        .load_trip(trip_id)
        .await?
        .ok_or_else(|| trip_not_found(trip_id))?;
    let viewer = caller.trip_viewer(&trip)?;
    Ok((trip, viewer))
}

/// `POST /api/trips` `{origin, destination, vehicle_type?, promo_code?, idempotency_key?,
/// pickup_at?}` → 201 with the Trip object (its `trip_id`, `status`, `fare_estimate`, …). With
/// `pickup_at` (RFC 3339, `trip.schedule_min_lead_s` to 7 days ahead) the trip is booked ahead:
/// status SCHEDULED, priced now, matched from `trip.schedule_dispatch_lead_s` before pickup.
pub async fn create(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Rider])?;
    let ip = req
        .peer_addr()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    core.limits
        .trips_by_rider
        .check(&caller.id())
        .and_then(|()| core.limits.trips_by_ip.check(&ip))
        .map_err(|wait| {
            ApiError::too_many(
                "rate_limited",
                format!("too many trip requests; retry in {wait} s"),
                wait,
            )
        })?;
    let body: TripBody = json_body(&req, payload).await?;
    let request = TripRequest {
        origin: point(body.origin, "origin")?,
        destination: point(body.destination, "destination")?,
        vehicle_type: short_text(body.vehicle_type, "vehicle_type", 32)?,
        promo_code: short_text(body.promo_code, "promo_code", 64)?,
        idempotency_key: short_text(body.idempotency_key, "idempotency_key", 255)?,
        request_id: Some(rid.0),
        pickup_at_ms: body
            .pickup_at
            .as_deref()
            .map(|raw| rfc3339_ms(raw, "pickup_at"))
            .transpose()?,
    };
    let answer = core.request_trip(caller.id(), request).await?;
    let (trip, replayed) = match answer {
        Requested::Created(t) => (t, false),
        Requested::Replayed(t) => (t, true),
    };
    Ok(HttpResponse::Created()
        .insert_header((
            "Idempotent-Replayed",
            if replayed { "true" } else { "false" },
        ))
        .json(TripView::of(&trip, Viewer::Rider)))
}

/// `GET /api/trips/{id}`: the Trip object, for its rider, its driver or an operator.
pub async fn get(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    let (trip, viewer) = visible(&core, &caller, trip_id).await?;
    Ok(HttpResponse::Ok().json(TripView::of(&trip, viewer)))
}

/// `GET /api/trips/{id}/events`: `{events: [{seq, type, at, at_ms, data}]}`, oldest first, for its
/// rider or an operator.
pub async fn events(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    caller.require(&[Role::Rider, Role::Operator])?;
    visible(&core, &caller, trip_id).await?;
    let events = core.load_events(trip_id).await?.unwrap_or_default();
    let rendered = events
        .iter()
        .map(|record| {
            let value = serde_json::to_value(record).unwrap_or_else(|_| json!({}));
            EventView {
                seq: record.seq,
                kind: record.event.kind(),
                at: rfc3339(record.at_ms),
                at_ms: record.at_ms,
                data: value.get("data").cloned().unwrap_or_else(|| json!({})),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(Events { events: rendered }))
}

/// One event of a trip's log.
#[derive(Serialize, ToSchema)]
pub(crate) struct EventView {
    /// 1, 2, 3, … within the trip.
    seq: u64,
    /// The event type (`trip.accepted`, …; docs/EVENTS.md).
    #[serde(rename = "type")]
    kind: &'static str,
    /// When, RFC 3339.
    at: String,
    /// When, epoch ms.
    at_ms: i64,
    /// The event's fields.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// `GET /api/trips/{id}/events`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Events {
    /// Oldest first.
    events: Vec<EventView>,
}

/// `PUT /api/trips/{id}/decline`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Declined {
    /// The trip declined.
    trip_id: Uuid,
    /// `declined`.
    status: &'static str,
}

/// A page of a rider's trips.
#[derive(Serialize, ToSchema)]
pub(crate) struct TripPage {
    /// Newest first.
    trips: Vec<TripView>,
    /// The `before` of the next page; null on the last.
    next_before: Option<Uuid>,
}

/// `DELETE /api/trips/{id}`: its rider cancels (a fee once the free window after assignment has
/// passed; 409 from TRIP_STARTED on), or its driver gives it up (ACCEPTED, DRIVER_ARRIVING only;
/// the trip matches again without it).
pub async fn cancel(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    caller.require(&[Role::Rider, Role::Driver])?;
    let (trip, viewer) = visible(&core, &caller, trip_id).await?;
    let Some(actor) = core.trip_actors.get(trip_id) else {
        return Err(TripError::InvalidTransition {
            status: trip.status,
            action: "cancel",
        }
        .into());
    };
    let answer = if viewer == Viewer::Rider {
        actor
            .send(RiderCancel {
                request_id: Some(rid.0),
                traceparent: crate::telemetry::current_traceparent(),
            })
            .await
    } else {
        actor
            .send(DriverAct {
                driver_id: caller.id(),
                action: DriverAction::Cancel,
                via_socket: false,
                request_id: Some(rid.0),
                traceparent: crate::telemetry::current_traceparent(),
            })
            .await
    };
    let trip = answer.map_err(|_| DriveError::Ended(trip.status))??;
    Ok(HttpResponse::Ok().json(TripView::of(&trip, viewer)))
}

/// `PUT /api/trips/{id}/accept`: the offered driver takes the trip → the Trip object; 409
/// `accept_rejected` if the offer was taken, withdrawn or expired.
pub async fn accept(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    answer(&path, &caller, &core, true, rid).await
}

/// `PUT /api/trips/{id}/decline`: the offered driver turns the offer down.
pub async fn decline(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    answer(&path, &caller, &core, false, rid).await
}

async fn answer(
    path: &str,
    caller: &Caller,
    core: &Core,
    accept: bool,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(path, "trip id")?;
    caller.require(&[Role::Driver])?;
    let actor = rest_actor(core, caller)?;
    let answer = actor
        .send(Respond {
            trip_id,
            accept,
            request_id: Some(rid.0),
            traceparent: crate::telemetry::current_traceparent(),
        })
        .await
        .map_err(ApiError::internal)?;
    match answer {
        Ok(Answer::Assigned(trip)) => {
            Ok(HttpResponse::Ok().json(TripView::of(&trip, Viewer::Driver)))
        }
        Ok(Answer::AssignedThere(trip)) => Ok(HttpResponse::Ok().json(trip)),
        Ok(Answer::Declined) => Ok(HttpResponse::Ok().json(Declined {
            trip_id,
            status: "declined",
        })),
        // Accepting a trip already won is a retry: answer as the first time.
        Err(AnswerError::Assigned) if accept => {
            let trip = core
                .trips
                .get(trip_id)
                .ok_or_else(|| trip_not_found(trip_id))?;
            Ok(HttpResponse::Ok().json(TripView::of(&trip, Viewer::Driver)))
        }
        Err(e) => Err(answer_error(core, e, trip_id, caller.id(), accept)),
    }
}

/// `PUT /api/trips/{id}/start`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct StartBody {
    /// The rider's 4-digit trip PIN, as a string.
    #[schema(required = true, value_type = String, pattern = "^[0-9]{4}$")]
    pin: Option<serde_json::Value>,
}

/// Validates a start PIN: four digits, as a string.
///
/// # Errors
///
/// `missing_field` / `invalid_field` naming `pin`.
pub fn parse_pin(raw: Option<&str>) -> Result<String, FieldError> {
    let pin = raw.ok_or_else(|| FieldError::missing("pin"))?;
    if pin.len() == 4 && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(pin.to_owned())
    } else {
        Err(FieldError::invalid(
            "pin",
            "a string of 4 digits, e.g. \"0427\"",
        ))
    }
}

/// `PUT /api/trips/{id}/arrived`.
pub async fn arrived(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    driver_action(&path, &caller, &core, DriverAction::Arrive, rid).await
}

/// `PUT /api/trips/{id}/start` `{pin}`.
pub async fn start(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    caller.require(&[Role::Driver])?;
    let body: StartBody = json_body(&req, payload).await?;
    let pin = match body.pin {
        None | Some(serde_json::Value::Null) => parse_pin(None)?,
        Some(serde_json::Value::String(s)) => parse_pin(Some(&s))?,
        Some(_) => parse_pin(Some(""))?,
    };
    let trip = core
        .drive(
            caller.id(),
            trip_id,
            DriverAction::Start(pin),
            false,
            Some(rid.0),
        )
        .await?;
    Ok(HttpResponse::Ok().json(TripView::of(&trip, Viewer::Driver)))
}

/// `PUT /api/trips/{id}/complete`.
pub async fn complete(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    driver_action(&path, &caller, &core, DriverAction::Complete, rid).await
}

async fn driver_action(
    path: &str,
    caller: &Caller,
    core: &Core,
    action: DriverAction,
    rid: RequestId,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(path, "trip id")?;
    caller.require(&[Role::Driver])?;
    let trip = core
        .drive(caller.id(), trip_id, action, false, Some(rid.0))
        .await?;
    Ok(HttpResponse::Ok().json(TripView::of(&trip, Viewer::Driver)))
}

/// Most trips one history page holds.
const MAX_PAGE: usize = 100;

/// `GET /api/riders/{id}/trips?limit=20&before=<trip_id>`: the rider's trips, newest first;
/// `next_before` pages on.
pub async fn rider_history(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rider_id = parse_id(&path, "rider id")?;
    caller.require_rider_or_operator(rider_id)?;
    let q = Query::parse(&req)?;
    let limit = q.usize("limit")?.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            FieldError::out_of_range(format!("limit must be within [1, {MAX_PAGE}]")).into(),
        );
    }
    let before = match q.string("before") {
        None | Some("") => None,
        Some(raw) => Some(
            Uuid::parse_str(raw).map_err(|_| FieldError::invalid("before", "a trip id (UUID)"))?,
        ),
    };
    let trips = core.rider_trips(rider_id, before, limit).await?;
    let next_before = (trips.len() == limit)
        .then(|| trips.last().map(|t| t.trip_id))
        .flatten();
    let viewer = if caller.role() == Role::Rider {
        Viewer::Rider
    } else {
        Viewer::Operator
    };
    let trips: Vec<TripView> = trips.iter().map(|t| TripView::of(t, viewer)).collect();
    Ok(HttpResponse::Ok().json(TripPage { trips, next_before }))
}

/// `POST /api/trips/{id}/rating`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RatingBody {
    /// 1 to 5.
    #[schema(required = true, minimum = 1, maximum = 5)]
    stars: Option<i64>,
    /// At most 500 characters.
    comment: Option<String>,
}

/// A rating as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct Rated {
    /// The trip rated.
    trip_id: Uuid,
    /// Who rated: `rider` or `driver`.
    by: &'static str,
    /// Who was rated.
    rated_id: Uuid,
    /// 1 to 5.
    stars: u8,
    /// The comment, if any.
    comment: Option<String>,
}

/// `POST /api/trips/{id}/rating` `{stars: 1..5, comment?}` → 201: its rider rates the driver, its
/// driver rates the rider, once each, from TRIP_COMPLETED on. A second rating by the same side
/// is 409 `already_rated`; before completion 409 `trip_not_completed`.
pub async fn rate(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    caller.require(&[Role::Rider, Role::Driver])?;
    let body: RatingBody = json_body(&req, payload).await?;
    let stars = body.stars.ok_or_else(|| FieldError::missing("stars"))?;
    let stars = u8::try_from(stars)
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| FieldError::out_of_range("stars must be within [1, 5]"))?;
    let comment = short_text(body.comment, "comment", 500)?;
    let (trip, viewer) = visible(&core, &caller, trip_id).await?;
    let (side, ratee) = match (viewer, trip.driver_id) {
        (Viewer::Rider, Some(driver)) => (RatingSide::Rider, driver),
        (Viewer::Driver, Some(_)) => (RatingSide::Driver, trip.rider_id),
        _ => {
            return Err(ApiError::conflict(
                "trip_not_completed",
                format!("trip {trip_id} had no ride to rate"),
            ));
        }
    };
    if !matches!(
        trip.status,
        TripStatus::TripCompleted | TripStatus::PaymentProcessed | TripStatus::PaymentFailed
    ) {
        return Err(ApiError::conflict(
            "trip_not_completed",
            format!(
                "a trip is rated from TRIP_COMPLETED on; this one is {}",
                trip.status.as_str()
            ),
        ));
    }
    let store = core.persistence().ok_or_else(ApiError::no_store)?.store();
    let stored = store
        .rate(&NewRating {
            trip_id,
            side,
            rater: caller.id(),
            ratee,
            stars,
            comment: comment.as_deref(),
            now_ms: crate::clock::now_ms(),
        })
        .await?;
    if !stored {
        return Err(ApiError::conflict(
            "already_rated",
            format!("the {} of this trip rated it already", side.as_str()),
        ));
    }
    Ok(HttpResponse::Created().json(Rated {
        trip_id,
        by: side.as_str(),
        rated_id: ratee,
        stars,
        comment,
    }))
}
