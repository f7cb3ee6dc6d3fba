//! `/api/pricing…`: fare estimates and the surge multiplier at a point.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::auth::Identity;
use super::error::ApiError;
use super::input::{Query, json_body};
use super::trips::{PointBody, point, quote_error, short_text};
use crate::auth::Role;
use crate::clock::now_ms;
use crate::dispatch::VehicleType;
use crate::engine::Core;

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
    identity: Identity,
    core: web::Data<Core>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    identity.require(&[Role::Rider, Role::Operator])?;
    let body: EstimateBody = json_body(&req, payload).await?;
    let origin = point(body.origin, "origin")?;
    let destination = point(body.destination, "destination")?;
    let vehicle_type = match short_text(body.vehicle_type, "vehicle_type", 32)? {
        Some(raw) => VehicleType::parse(&raw)
            .map_err(|e| ApiError::bad_request("invalid_field", e.to_string()))?,
        None => core.default_vehicle.clone(),
    };
    let promo_code = short_text(body.promo_code, "promo_code", 64)?;
    let now = now_ms();
    core.market
        .tariff(origin, vehicle_type.as_str())
        .map_err(quote_error)?;
    let discount = match &promo_code {
        Some(code) => Some(
            core.market
                .check_promo(code, identity.id(), now)
                .map_err(|e| quote_error(e.into()))?,
        ),
        None => None,
    };
    let surge = core.market.surge(&core.shards, origin, now).await;
    let breakdown = core
        .market
        .estimate(
            origin,
            destination,
            vehicle_type.as_str(),
            surge.surge,
            discount,
        )
        .map_err(quote_error)?;
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
    identity: Identity,
    core: web::Data<Core>,
) -> Result<HttpResponse, ApiError> {
    identity.require(&[Role::Rider, Role::Operator])?;
    let q = Query::parse(&req)?;
    let point = q.point()?;
    let quote = core.market.surge(&core.shards, point, now_ms()).await;
    Ok(HttpResponse::Ok().json(json!({
        "multiplier": quote.surge,
        "cell": quote.cell.to_string(),
        "resolution": u8::from(core.market.surge_resolution()),
        "demand": quote.demand,
        "supply": quote.supply,
    })))
}
