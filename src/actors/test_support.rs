//! What the actor tests share: a trip requested the way `POST /api/trips` requests it.

use uuid::Uuid;

use super::core::Core;
use super::{Requested, TripRequest};
use crate::dispatch::Trip;
use crate::geo::LatLng;

/// A trip requested by a new rider from `origin` to `destination` (lat, lng).
pub async fn request_trip(core: &Core, origin: (f64, f64), destination: (f64, f64)) -> Trip {
    let Requested::Created(trip) = core
        .request_trip(
            Uuid::now_v7(),
            TripRequest {
                origin: LatLng::new(origin.0, origin.1).unwrap(),
                destination: LatLng::new(destination.0, destination.1).unwrap(),
                vehicle_type: None,
                promo_code: None,
                idempotency_key: None,
                request_id: None,
                pickup_at_ms: None,
            },
        )
        .await
        .unwrap()
    else {
        panic!("a new trip")
    };
    *trip
}
