//! What the engine shows clients, in one place: the server → client WebSocket frames of SPEC §5
//! (rendered here so the driver, trip and session code agree on their shape; every frame is one
//! JSON object with a `type`), the views they and the REST bodies carry (the Trip object, a
//! driver's state), and [`Outbound`], what an actor asks a socket to do. Client → server frames are
//! parsed at the edge (`http::ws::inbound`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use super::directory::DriverProfile;
use crate::clock::rfc3339;
use crate::dispatch::{DriverStatus, FareBreakdown, Money, Position, Surge, Trip, TripStatus};
use crate::geo::LatLng;

/// What an actor asks a socket (driver or rider) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Send this text frame.
    Text(String),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

/// Why an offer ended (`offer_cancelled.reason`, `accept_rejected.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    if let Some(schedule) = trip.schedule.filter(|_| status == TripStatus::Scheduled) {
        frame["pickup_at"] = json!(crate::clock::rfc3339(schedule.pickup_at_ms));
        frame["dispatch_at"] = json!(crate::clock::rfc3339(schedule.dispatch_at_ms));
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

/// Who is looking at a trip: the PIN is shown to its rider only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    /// The trip's rider.
    Rider,
    /// A driver (offered or assigned).
    Driver,
    /// An operator.
    Operator,
}

/// The Trip object of SPEC §4.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Trip)]
pub struct TripView {
    /// The trip.
    pub trip_id: Uuid,
    /// Current status.
    pub status: TripStatus,
    /// Its rider.
    pub rider_id: Uuid,
    /// The assigned driver; null until assigned.
    pub driver_id: Option<Uuid>,
    /// Vehicle type.
    pub vehicle_type: String,
    /// Pickup.
    pub origin: LatLng,
    /// Drop-off.
    pub destination: LatLng,
    /// Quoted fare.
    pub fare_estimate: Money,
    /// How the estimate was made.
    pub estimate_breakdown: FareBreakdown,
    /// Final fare, once completed.
    pub fare: Option<Money>,
    /// How the final fare was made.
    pub fare_breakdown: Option<FareBreakdown>,
    /// Surge quoted (and charged).
    pub surge: Surge,
    /// Promotion code used.
    pub promo_code: Option<String>,
    /// Fee for a late rider cancellation.
    pub cancellation_fee: Option<Money>,
    /// The start PIN: to the rider only, once a driver is assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_pin: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// When each status was (last) entered, RFC 3339.
    pub status_times: BTreeMap<TripStatus, String>,
    /// A trip booked ahead: when the rider wants to be picked up, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_at: Option<String>,
    /// A trip booked ahead: when matching begins, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch_at: Option<String>,
}

impl TripView {
    /// `trip` as `viewer` may see it.
    #[must_use]
    pub fn of(trip: &Trip, viewer: Viewer) -> Self {
        Self {
            trip_id: trip.trip_id,
            status: trip.status,
            rider_id: trip.rider_id,
            driver_id: trip.driver_id,
            vehicle_type: trip.vehicle_type.clone(),
            origin: trip.origin,
            destination: trip.destination,
            fare_estimate: trip.quote.estimate.total,
            estimate_breakdown: trip.quote.estimate,
            fare: trip.fare.map(|f| f.total),
            fare_breakdown: trip.fare,
            surge: trip.quote.surge,
            promo_code: trip.promo_code.clone(),
            cancellation_fee: trip.cancellation_fee,
            start_pin: (viewer == Viewer::Rider && trip.status.has_driver())
                .then(|| trip.pin.clone()),
            created_at: rfc3339(trip.created_ms),
            updated_at: rfc3339(trip.updated_ms),
            status_times: trip
                .status_times
                .iter()
                .map(|(s, ms)| (*s, rfc3339(*ms)))
                .collect(),
            pickup_at: trip.schedule.map(|s| rfc3339(s.pickup_at_ms)),
            dispatch_at: trip.schedule.map(|s| rfc3339(s.dispatch_at_ms)),
        }
    }
}

/// A position as shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Position)]
pub struct PositionView {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lng: f64,
    /// Heading, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f32>,
    /// Speed, m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f32>,
    /// When the app took it, epoch ms.
    pub ts_ms: i64,
    /// When the engine received it, epoch ms.
    pub received_ms: i64,
}

impl From<Position> for PositionView {
    fn from(p: Position) -> Self {
        Self {
            lat: p.point.lat(),
            lng: p.point.lng(),
            heading: p.heading,
            speed_mps: p.speed_mps,
            ts_ms: p.ts_ms,
            received_ms: p.received_ms,
        }
    }
}

/// A driver's state as the engine knows it (`GET /api/drivers/{id}`, the `session` frame).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Driver)]
pub struct DriverSnapshot {
    /// The driver.
    pub driver_id: Uuid,
    /// `online` or `offline`.
    pub status: DriverStatus,
    /// Vehicle type.
    pub vehicle_type: String,
    /// Whether it can receive an offer now.
    pub available: bool,
    /// Whether a driver socket is attached.
    pub connected: bool,
    /// Last position.
    pub last_position: Option<PositionView>,
    /// The trip it is serving.
    pub current_trip: Option<Uuid>,
    /// The offer it holds.
    pub offer: Option<OfferView>,
}

/// An open offer as shown in the driver's state.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = HeldOffer)]
pub struct OfferView {
    /// The trip offered.
    pub trip_id: Uuid,
    /// Milliseconds left to answer.
    pub expires_in_ms: i64,
}

impl DriverSnapshot {
    /// The view of a driver with no live actor.
    #[must_use]
    pub fn from_profile(profile: &DriverProfile) -> Self {
        Self {
            driver_id: profile.driver_id,
            status: profile.status,
            vehicle_type: profile.vehicle_type.to_string(),
            available: false,
            connected: false,
            last_position: profile.last_position.map(PositionView::from),
            current_trip: None,
            offer: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'a str,
    message: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
}

/// `{"type":"error","code","message","ref"?}`.
#[must_use]
pub fn error_frame(code: &str, message: &str, reference: Option<&RawValue>) -> String {
    serde_json::to_string(&ErrorFrame {
        kind: "error",
        code,
        message,
        reference,
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct SessionFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    driver: &'a DriverSnapshot,
    trip: Option<&'a TripView>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a RawValue>,
}

/// `{"type":"session","driver_id","status","trip", …}`: the driver's state as the engine knows
/// it, with its active trip (the Trip object) or `null`.
#[must_use]
pub fn session_frame(
    driver: &DriverSnapshot,
    trip: Option<&TripView>,
    reference: Option<&RawValue>,
) -> String {
    serde_json::to_string(&SessionFrame {
        kind: "session",
        driver,
        trip,
        reference,
    })
    .unwrap_or_default()
}

/// `frame` with the client's `ref` added, as text.
#[must_use]
pub fn with_ref(mut frame: serde_json::Value, reference: Option<&RawValue>) -> String {
    if let Some(r) = reference
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(r.get())
    {
        frame["ref"] = value;
    }
    frame.to_string()
}

/// What `/ws/ops` counts (`stats`).
#[derive(Debug, Clone, Serialize)]
pub struct OpsStats {
    /// Drivers online now, with or without an open socket.
    pub drivers_online: u64,
    /// Driver actors running (online, connected, or lingering after a session).
    pub driver_actors: usize,
    /// Trips not finished.
    pub trips_live: usize,
    /// Trips in memory by status: the live ones and those finished within `trip.retention_s`.
    pub trips_by_status: BTreeMap<String, u64>,
    /// Riders with an open socket.
    pub riders_connected: usize,
    /// When counted, epoch ms.
    pub ts_ms: i64,
}

/// `stats` for `/ws/ops`.
#[must_use]
pub fn ops_stats(stats: &OpsStats) -> Value {
    let mut frame = json!(stats);
    frame["type"] = json!("stats");
    frame
}

/// `heatmap` for `/ws/ops`.
#[must_use]
pub fn heatmap(res: u8, cells: &impl Serialize, ts_ms: i64) -> Value {
    json!({"type": "heatmap", "res": res, "cells": cells, "ts_ms": ts_ms})
}

/// The rider socket's first frame: its live trips.
#[must_use]
pub fn rider_session(rider_id: Uuid, trips: &[TripView]) -> String {
    json!({"type": "session", "rider_id": rider_id, "trips": trips}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_frames_echo_the_ref_verbatim() {
        let reference = RawValue::from_string("[1,\"a\"]".into()).unwrap();
        let frame: serde_json::Value =
            serde_json::from_str(&error_frame("out_of_range", "lat …", Some(&reference))).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["code"], "out_of_range");
        assert_eq!(frame["ref"], serde_json::json!([1, "a"]));
    }
}
