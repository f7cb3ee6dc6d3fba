//! `GET /api/locations/nearby`: the nearest online, available, fresh drivers; and a driver's
//! sampled position history.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::caller::{Caller, parse_id};
use super::error::ApiError;
use super::input::{FieldError, MAX_LIMIT, MAX_RADIUS_M, Query};
use crate::clock::now_ms;
use crate::dispatch::Role;
use crate::geo::NearbyQuery;
use crate::http::AppState;

/// One driver near a point.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct NearbyDriver {
    /// The driver.
    driver_id: Uuid,
    /// Latitude, degrees.
    lat: f64,
    /// Longitude, degrees.
    lng: f64,
    /// Great-circle distance from the point asked, metres.
    distance_m: f64,
    /// Vehicle type.
    vehicle_type: String,
    /// Degrees from north, when the app sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heading: Option<f32>,
}

/// `GET /api/locations/nearby`.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct NearbyAnswer {
    /// Nearest first.
    drivers: Vec<NearbyDriver>,
}

/// One sampled position.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryPosition {
    /// Latitude, degrees.
    lat: f64,
    /// Longitude, degrees.
    lng: f64,
    /// Degrees from north.
    heading: Option<f64>,
    /// Metres per second.
    speed_mps: Option<f64>,
    /// When, epoch ms.
    ts_ms: i64,
    /// When, RFC 3339.
    at: String,
}

/// `GET /api/locations/drivers/{id}/history`.
#[derive(Serialize, ToSchema)]
pub(crate) struct History {
    /// The driver.
    driver_id: Uuid,
    /// Oldest first.
    positions: Vec<HistoryPosition>,
}

/// `GET /api/locations/nearby?lat=&lng=&radius=2000&limit=5&vehicle_type=`. With several
/// instances, the instances owning other regions within the radius answer too, and the nearest
/// of all are returned.
pub async fn nearby(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Rider, Role::Operator])?;
    let q = Query::parse(&req)?;
    let point = q.point()?;
    let radius_m = q.f64("radius")?.unwrap_or(2_000.0);
    if !(radius_m > 0.0 && radius_m <= MAX_RADIUS_M) {
        return Err(FieldError::out_of_range(format!(
            "radius must be within (0, {MAX_RADIUS_M}] metres, got {radius_m}"
        ))
        .into());
    }
    let limit = q.usize("limit")?.unwrap_or(5);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(
            FieldError::out_of_range(format!("limit must be within [1, {MAX_LIMIT}]")).into(),
        );
    }
    let vehicle = match q.vehicle_type("vehicle_type")? {
        None => None,
        Some(v) => match core.vehicles.lookup(&v) {
            Some(id) => Some(id),
            // No driver has ever had this type: nobody can match.
            None => {
                return Ok(HttpResponse::Ok().json(NearbyAnswer {
                    drivers: Vec::new(),
                }));
            }
        },
    };
    let ttl_ms = i64::try_from(core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX);
    let query = NearbyQuery {
        point,
        radius_m,
        limit,
        vehicle,
        fresh_since_ms: now_ms().saturating_sub(ttl_ms),
    };
    let hits = core.nearby(query);
    let drivers = hits
        .into_iter()
        .map(|h| NearbyDriver {
            driver_id: h.driver.driver_id,
            lat: h.driver.position.lat(),
            lng: h.driver.position.lng(),
            distance_m: h.distance_m,
            vehicle_type: core
                .vehicles
                .name(h.driver.vehicle)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            heading: h.driver.heading,
        })
        .collect();
    let drivers = across_regions(&req, &core, point, radius_m, limit, drivers).await;
    Ok(HttpResponse::Ok().json(NearbyAnswer { drivers }))
}

/// The nearest `limit` of `local` and of what the other instances owning regions within the
/// circle answer (SPEC §11); `local` alone on a single instance or for a peer's query.
async fn across_regions(
    req: &HttpRequest,
    core: &AppState,
    point: crate::geo::LatLng,
    radius_m: f64,
    limit: usize,
    mut drivers: Vec<NearbyDriver>,
) -> Vec<NearbyDriver> {
    if req
        .headers()
        .contains_key(super::cluster::LOCAL_ONLY_HEADER)
    {
        return drivers;
    }
    let peers = core.other_owners(point, radius_m);
    if peers.is_empty() {
        return drivers;
    }
    let me = core.settings.instance_id();
    for answer in super::cluster::ask_peers(req, &peers, me).await {
        if let Ok(theirs) = serde_json::from_value::<NearbyAnswer>(answer) {
            drivers.extend(theirs.drivers);
        }
    }
    drivers.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
    // A driver moving between instances may briefly be listed by both.
    let mut seen = std::collections::HashSet::new();
    drivers.retain(|d| seen.insert(d.driver_id));
    drivers.truncate(limit);
    drivers
}

/// Most positions one history answer holds.
const MAX_HISTORY: usize = 10_000;

/// `GET /api/locations/drivers/{id}/history?from=&to=&limit=`: the driver's sampled positions
/// (one per `database.location_sample_s`), oldest first. `from`/`to` are RFC 3339 or epoch ms;
/// the default window is the last 24 hours; `limit` defaults to 1 000 (at most 10 000).
pub async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let driver_id = parse_id(&path, "driver id")?;
    caller.require_driver_or_operator(driver_id)?;
    let q = Query::parse(&req)?;
    let (from_ms, to_ms) = q.time_window(24 * 3_600 * 1_000)?;
    let limit = q.usize("limit")?.unwrap_or(1_000);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(
            FieldError::out_of_range(format!("limit must be within [1, {MAX_HISTORY}]")).into(),
        );
    }
    let Some(persistence) = core.persistence() else {
        return Ok(HttpResponse::Ok().json(History {
            driver_id,
            positions: Vec::new(),
        }));
    };
    let rows = persistence
        .store()
        .positions(driver_id, from_ms, to_ms, limit)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    let positions = rows
        .iter()
        .map(|p| HistoryPosition {
            lat: p.lat,
            lng: p.lng,
            heading: p.heading,
            speed_mps: p.speed_mps,
            ts_ms: p.ts_ms,
            at: crate::clock::rfc3339(p.ts_ms),
        })
        .collect();
    Ok(HttpResponse::Ok().json(History {
        driver_id,
        positions,
    }))
}
