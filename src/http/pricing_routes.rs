//! `/api/pricing…`: fare estimates and the surge multiplier at a point.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::caller::Caller;
use super::error::ApiError;
use super::input::{Query, json_body};
use super::trip_routes::{PointBody, point, short_text};
use crate::clock::now_ms;
use crate::dispatch::Role;
use crate::dispatch::{FareBreakdown, Money, Surge, VehicleType};
use crate::http::AppState;

/// `POST /api/pricing/estimate`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct EstimateBody {
    /// Pickup.
    #[schema(required = true)]
    origin: Option<PointBody>,
    /// Drop-off.
    #[schema(required = true)]
    destination: Option<PointBody>,
    /// One of the tariffs' vehicle types (the default when absent).
    vehicle_type: Option<String>,
    /// A promotion to check (not used).
    promo_code: Option<String>,
}

/// A fare estimate.
#[derive(Serialize, ToSchema)]
pub(crate) struct Estimate {
    /// What the rider would pay.
    fare: Money,
    /// Estimated road distance, metres.
    distance_m: u64,
    /// Estimated duration, seconds.
    duration_s: u64,
    /// The surge a request would be quoted now.
    surge: Surge,
    /// The vehicle type priced.
    vehicle_type: String,
    /// The promotion checked, upper case.
    promo_code: Option<String>,
    /// How the fare was made.
    breakdown: FareBreakdown,
}

/// The surge at a point.
#[derive(Serialize, ToSchema)]
pub(crate) struct SurgeAnswer {
    /// The multiplier quoted now.
    multiplier: Surge,
    /// The surge cell (H3, hex).
    cell: String,
    /// Its resolution.
    resolution: u8,
    /// Recent requests in the cell.
    demand: u32,
    /// Available drivers in the cell.
    supply: u32,
}

/// `POST /api/pricing/estimate` `{origin, destination, vehicle_type?, promo_code?}` →
/// `{fare, distance_m, duration_s, surge, breakdown, vehicle_type}`. Surge is the one a request
/// from `origin` would be quoted now; a promotion is checked, not used.
pub async fn estimate(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Rider, Role::Operator])?;
    let body: EstimateBody = json_body(&req, payload).await?;
    let origin = point(body.origin, "origin")?;
    let destination = point(body.destination, "destination")?;
    let vehicle_type = match short_text(body.vehicle_type, "vehicle_type", 32)? {
        Some(raw) => VehicleType::parse(&raw)?,
        None => core.default_vehicle.clone(),
    };
    let promo_code = short_text(body.promo_code, "promo_code", 64)?;
    let now = now_ms();
    let (tariff, currency) = core.market.tariff(origin, vehicle_type.as_str())?;
    let discount = match &promo_code {
        Some(code) => Some(core.check_promo(code, caller.id(), now).await?),
        None => None,
    };
    let surge = core.market.surge(&core.shards, origin, now);
    let breakdown = core.market.estimate_with(
        &tariff,
        currency,
        origin,
        destination,
        surge.surge,
        discount,
    );
    Ok(HttpResponse::Ok().json(Estimate {
        fare: breakdown.total,
        distance_m: breakdown.distance_m,
        duration_s: breakdown.duration_s,
        surge: surge.surge,
        vehicle_type: vehicle_type.as_str().to_owned(),
        promo_code: promo_code.map(|c| c.to_ascii_uppercase()),
        breakdown,
    }))
}

/// `GET /api/pricing/surge?lat=&lng=` → `{multiplier, cell, demand, supply}`.
pub async fn surge(
    req: HttpRequest,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Rider, Role::Operator])?;
    let q = Query::parse(&req)?;
    let point = q.point()?;
    let quote = core.market.surge(&core.shards, point, now_ms());
    Ok(HttpResponse::Ok().json(SurgeAnswer {
        multiplier: quote.surge,
        cell: quote.cell.to_string(),
        resolution: u8::from(core.market.surge_resolution()),
        demand: quote.demand,
        supply: quote.supply,
    }))
}
