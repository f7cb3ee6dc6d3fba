//! Server → client WebSocket frames (SPEC §5), rendered in one place so the driver, trip and
//! session code agree on their shape. Every frame is one JSON object with a `type`.

use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::dispatch::{Money, Trip, TripStatus};
use crate::geo::LatLng;
use crate::trips::{TripView, Viewer};

/// Why an offer ended (`offer_cancelled.reason`, `accept_rejected.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferEnd {
    /// Another driver accepted first.
    Taken,
    /// The rider cancelled the trip.
    RiderCancelled,
    /// The offer's time ran out (or the search ended).
    Expired,
    /// The driver declined it.
    Declined,
}

impl OfferEnd {
    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Taken => "taken",
            Self::RiderCancelled => "rider_cancelled",
            Self::Expired => "expired",
            Self::Declined => "declined",
        }
    }
}

/// What a driver is offered.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferTerms {
    /// The trip.
    pub trip_id: Uuid,
    /// Pickup.
    pub pickup: LatLng,
    /// Drop-off.
    pub dropoff: LatLng,
    /// Quoted fare.
    pub fare_estimate: Money,
    /// Vehicle type asked for.
    pub vehicle_type: String,
}

fn text(value: &Value) -> String {
    value.to_string()
}

/// `offer`.
#[must_use]
pub fn offer(terms: &OfferTerms, distance_to_pickup_m: f64, expires_in_ms: i64) -> String {
    text(&json!({
        "type": "offer",
        "trip_id": terms.trip_id,
        "pickup": terms.pickup,
        "dropoff": terms.dropoff,
        "fare_estimate": terms.fare_estimate,
        "vehicle_type": terms.vehicle_type,
        "distance_to_pickup_m": distance_to_pickup_m.round(),
        "expires_in_ms": expires_in_ms.max(0),
    }))
}

/// `offer_cancelled`.
#[must_use]
pub fn offer_cancelled(trip_id: Uuid, reason: OfferEnd) -> Value {
    json!({"type": "offer_cancelled", "trip_id": trip_id, "reason": reason})
}

/// `trip_assigned`, the driver's view of the trip it won.
#[must_use]
pub fn trip_assigned(trip: &Trip) -> Value {
    json!({"type": "trip_assigned", "trip": TripView::of(trip, Viewer::Driver)})
}

/// `accept_rejected`.
#[must_use]
pub fn accept_rejected(trip_id: Uuid, reason: OfferEnd) -> Value {
    json!({"type": "accept_rejected", "trip_id": trip_id, "reason": reason})
}

/// `trip_update` for the trip's driver.
#[must_use]
pub fn driver_trip_update(trip: &Trip, status: TripStatus) -> Value {
    let mut frame = json!({
        "type": "trip_update",
        "trip_id": trip.trip_id,
        "status": status,
        "trip": TripView::of(trip, Viewer::Driver),
    });
    if status == TripStatus::Cancelled {
        frame["reason"] = json!("rider_cancelled");
    }
    frame
}

/// `trip_update` for the driver who just gave a trip up: it no longer serves it.
#[must_use]
pub fn driver_released(trip_id: Uuid) -> Value {
    json!({
        "type": "trip_update",
        "trip_id": trip_id,
        "status": TripStatus::Matching,
        "released": true,
    })
}

/// The assigned driver as a rider sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DriverSummary {
    /// The driver.
    pub driver_id: Uuid,
    /// Vehicle type.
    pub vehicle_type: String,
    /// Last known position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<LatLng>,
}

/// `trip_update` for the rider.
#[must_use]
pub fn rider_trip_update(
    trip: &Trip,
    status: TripStatus,
    driver: Option<&DriverSummary>,
    eta_s: Option<u64>,
) -> String {
    let mut frame = json!({
        "type": "trip_update",
        "trip_id": trip.trip_id,
        "status": status,
    });
    if let Some(driver) = driver {
        frame["driver"] = json!(driver);
    }
    if let Some(eta) = eta_s {
        frame["eta_s"] = json!(eta);
    }
    if status.has_driver() && status.is_live() {
        frame["start_pin"] = json!(trip.pin);
    }
    if let Some(fare) = trip.fare.filter(|_| status == TripStatus::TripCompleted) {
        frame["fare"] = json!(fare.total);
    }
    if let Some(fee) = trip
        .cancellation_fee
        .filter(|_| status == TripStatus::Cancelled)
    {
        frame["cancellation_fee"] = json!(fee);
    }
    text(&frame)
}

/// `driver_location` for the rider.
#[must_use]
pub fn driver_location(trip_id: Uuid, point: LatLng, heading: Option<f32>) -> String {
    let mut frame = json!({
        "type": "driver_location",
        "trip_id": trip_id,
        "lat": point.lat(),
        "lng": point.lng(),
    });
    if let Some(h) = heading {
        frame["heading"] = json!(h);
    }
    text(&frame)
}
