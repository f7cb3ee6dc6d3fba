//! `/api/pricing…`: fare estimates and the surge multiplier at a point.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::Caller;
use super::error::ApiError;
use super::input::{Query, json_body};
use super::trip_routes::{PointBody, point, short_text};
use crate::clock::now_ms;
use crate::dispatch::Role;
use crate::dispatch::VehicleType;
use crate::http::AppState;

#[derive(Deserialize)]
struct EstimateBody {
    origin: Option<PointBody>,
    destination: Option<PointBody>,
    vehicle_type: Option<String>,
    promo_code: Option<String>,
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
    Ok(HttpResponse::Ok().json(json!({
        "fare": breakdown.total,
        "distance_m": breakdown.distance_m,
        "duration_s": breakdown.duration_s,
        "surge": surge.surge,
        "vehicle_type": vehicle_type.as_str(),
        "promo_code": promo_code.map(|c| c.to_ascii_uppercase()),
        "breakdown": breakdown,
    })))
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
    Ok(HttpResponse::Ok().json(json!({
        "multiplier": quote.surge,
        "cell": quote.cell.to_string(),
        "resolution": u8::from(core.market.surge_resolution()),
        "demand": quote.demand,
        "supply": quote.supply,
    })))
}
