//! `GET /api/locations/nearby`: the nearest online, available, fresh drivers.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use uuid::Uuid;

use super::auth::Identity;
use super::error::ApiError;
use super::input::{FieldError, MAX_LIMIT, MAX_RADIUS_M, Query};
use crate::auth::Role;
use crate::clock::now_ms;
use crate::engine::Core;
use crate::geo::NearbyQuery;

#[derive(Serialize)]
struct NearbyDriver {
    driver_id: Uuid,
    lat: f64,
    lng: f64,
    distance_m: f64,
    vehicle_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<f32>,
}

#[derive(Serialize)]
struct NearbyAnswer {
    drivers: Vec<NearbyDriver>,
}

/// `GET /api/locations/nearby?lat=&lng=&radius=2000&limit=5&vehicle_type=`.
pub async fn nearby(
    req: HttpRequest,
    identity: Identity,
    core: web::Data<Core>,
) -> Result<HttpResponse, ApiError> {
    identity.require(&[Role::Rider, Role::Operator])?;
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
    let hits = core
        .nearby(query)
        .await
        .map_err(|_| ApiError::unavailable("shutting_down", "the engine is shutting down"))?;
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
    Ok(HttpResponse::Ok().json(NearbyAnswer { drivers }))
}
