//! The trip use cases, as [`Core`] methods: a rider requests a trip (priced once, with surge and
//! promotion, idempotent by key, answered once its first events are durable, then matched by a
//! new trip actor), and an assigned driver acts on its trip (the REST twins and the driver socket
//! both go through [`Core::drive`]).

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use metrics::counter;
use uuid::Uuid;

use super::core::Core;
use super::market::QuoteError;
use super::trip::{ActError, DriverAct, DriverAction, TripActor};
use super::trip_store::IdempotentRequest;
use crate::clock::now_ms;
use crate::dispatch::{
    Currency, InvalidVehicleType, Money, NewTrip, PromoError, Quote, Schedule, Tariff,
    TooManyVehicleTypes, Trip, TripStatus, VehicleType, pin_from,
};
use crate::geo::LatLng;
use crate::metrics::{TRIP_REQUESTS, TRIP_TRANSITIONS};
use crate::persistence::{Persistence, StoreError, TripWrite, Write};

/// A rider's trip request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TripRequest {
    /// Pickup.
    pub origin: LatLng,
    /// Drop-off.
    pub destination: LatLng,
    /// Vehicle type; the configured default when `None`.
    pub vehicle_type: Option<String>,
    /// Promotion code.
    pub promo_code: Option<String>,
    /// Client key making retries safe: the same key from the same rider gives the same trip.
    pub idempotency_key: Option<String>,
    /// The HTTP request it came in, carried to its events' bus messages.
    pub request_id: Option<Arc<str>>,
    /// Pickup time of a trip booked ahead, epoch ms (SPEC §6): it opens SCHEDULED.
    pub pickup_at_ms: Option<i64>,
}

/// Why a trip request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Malformed vehicle type.
    #[error(transparent)]
    Vehicle(#[from] InvalidVehicleType),
    /// Too many vehicle types.
    #[error(transparent)]
    TooMany(#[from] TooManyVehicleTypes),
    /// Not priceable (unknown vehicle type or unusable promotion).
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The idempotency key was used for a different request.
    #[error("this idempotency_key was already used for a different trip request")]
    KeyReused,
    /// The first request with this idempotency key is still being handled.
    #[error("a request with this idempotency_key is still being handled; retry shortly")]
    InProgress,
    /// Too many writes are waiting for the database.
    #[error("the database is behind; new trips are refused until it catches up")]
    Backlog,
    /// The trip's first event did not become durable in time (the trip is kept).
    #[error(
        "the trip could not be stored in time; it is kept and will be stored when the database \
         answers: retry with the same idempotency_key to see it"
    )]
    NotDurable,
    /// The durable store failed to answer a read.
    #[error("the trip store failed: {0}")]
    Store(#[from] StoreError),
    /// `pickup_at` is too soon, in the past or too far ahead.
    #[error("pickup_at {0}")]
    PickupTime(String),
}

/// The farthest ahead a trip may be booked: 7 days.
pub const MAX_SCHEDULE_AHEAD_MS: i64 = 7 * 86_400 * 1_000;

impl From<PromoError> for RequestError {
    fn from(e: PromoError) -> Self {
        Self::Quote(QuoteError::Promo(e))
    }
}

/// What a trip request did.
#[derive(Debug, Clone)]
pub enum Requested {
    /// A new trip.
    Created(Box<Trip>),
    /// The trip an earlier request with the same idempotency key created.
    Replayed(Box<Trip>),
}

/// Why a driver's action on a trip went nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// No such trip.
    #[error("no trip {0}")]
    NotFound(Uuid),
    /// The trip's actor stopped between the lookup and the message: the trip just ended.
    #[error("the trip has just ended ({})", .0.as_str())]
    Ended(TripStatus),
    /// The trip refused the action.
    #[error(transparent)]
    Act(#[from] ActError),
}

impl Core {
    /// Opens a trip for `rider_id` (or, for a repeated idempotency key, finds the one it opened)
    /// and starts its matching. The trip's first events are stored before this returns.
    ///
    /// # Errors
    ///
    /// [`RequestError`]: an unknown vehicle type, an unusable promotion, a reused key.
    pub async fn request_trip(
        &self,
        rider_id: Uuid,
        request: TripRequest,
    ) -> Result<Requested, RequestError> {
        let vehicle_type = match &request.vehicle_type {
            Some(raw) => VehicleType::parse(raw)?,
            None => self.default_vehicle.clone(),
        };
        let tariff = self.market.tariff(request.origin, vehicle_type.as_str())?;
        // The id carries the pickup's region, so any instance can tell who owns the trip.
        let trip_id = self.regions.trip_id(request.origin);
        if let Some(key) = &request.idempotency_key {
            let fingerprint = format!(
                "{:?}|{:?}|{}|{:?}|{:?}",
                request.origin,
                request.destination,
                vehicle_type.as_str(),
                request.promo_code.as_deref().map(str::to_ascii_uppercase),
                request.pickup_at_ms,
            );
            let claim = IdempotentRequest {
                trip_id,
                fingerprint: fingerprint.clone(),
            };
            if let Some(p) = self.persistence()
                && self.trips.claim_key(rider_id, key, claim.clone()).is_none()
            {
                // New to this process: the key may still be in the durable store.
                let stored = p
                    .store()
                    .idempotent(rider_id, key)
                    .await
                    .map_err(RequestError::Store);
                match stored {
                    Ok(None) => {}
                    Ok(Some((trip_id, stored_fingerprint))) => {
                        let prior = IdempotentRequest {
                            trip_id,
                            fingerprint: stored_fingerprint,
                        };
                        self.trips.bind_key(rider_id, key, prior.clone());
                        counter!(TRIP_REQUESTS, "outcome" => "replayed").increment(1);
                        if prior.fingerprint != fingerprint {
                            return Err(RequestError::KeyReused);
                        }
                        return self
                            .load_trip(trip_id)
                            .await?
                            .map(|t| Requested::Replayed(Box::new(t)))
                            .ok_or(RequestError::InProgress);
                    }
                    Err(e) => {
                        self.trips.release_key(rider_id, key);
                        return Err(e);
                    }
                }
            } else if let Some(prior) = self.trips.claim_key(rider_id, key, claim) {
                counter!(TRIP_REQUESTS, "outcome" => "replayed").increment(1);
                if prior.fingerprint != fingerprint {
                    return Err(RequestError::KeyReused);
                }
                return self
                    .trips
                    .get(prior.trip_id)
                    .map(|t| Requested::Replayed(Box::new(t)))
                    .ok_or(RequestError::InProgress);
            }
        }
        if self.persistence().is_some_and(Persistence::is_full) {
            if let Some(key) = &request.idempotency_key {
                self.trips.release_key(rider_id, key);
            }
            counter!(TRIP_REQUESTS, "outcome" => "refused").increment(1);
            return Err(RequestError::Backlog);
        }
        let opened = self
            .open_trip(trip_id, rider_id, &request, vehicle_type, tariff)
            .await;
        match &opened {
            Ok(_) | Err(RequestError::NotDurable) => {
                counter!(TRIP_REQUESTS, "outcome" => "created").increment(1);
            }
            Err(_) => {
                counter!(TRIP_REQUESTS, "outcome" => "refused").increment(1);
                if let Some(key) = &request.idempotency_key {
                    self.trips.release_key(rider_id, key);
                }
            }
        }
        opened.map(|t| Requested::Created(Box::new(t)))
    }

    /// Whether `rider` may use `code` now, and what it is worth (nothing is taken): from the
    /// store, or the configured book when the engine runs without one.
    ///
    /// # Errors
    ///
    /// [`RequestError`]: the code cannot be used, or the store failed.
    pub async fn check_promo(
        &self,
        code: &str,
        rider: Uuid,
        now: i64,
    ) -> Result<crate::dispatch::Discount, RequestError> {
        match self.persistence() {
            Some(p) => Ok(p.store().check_promotion(code, rider, now).await??),
            None => Ok(self.market.check_promo(code, rider, now)?),
        }
    }

    /// Takes one use of `code` for `rider`.
    async fn redeem_promo(
        &self,
        code: &str,
        rider: Uuid,
        now: i64,
    ) -> Result<crate::dispatch::Discount, RequestError> {
        match self.persistence() {
            Some(p) => Ok(p.store().redeem_promotion(code, rider, now).await??),
            None => Ok(self.market.redeem_promo(code, rider, now)?),
        }
    }

    /// Gives a use of `code` back to `rider` (its trip did not happen), behind.
    pub fn release_promo(&self, code: &str, rider: Uuid) {
        match self.persistence() {
            Some(p) => {
                let store = p.store().clone();
                let code = code.to_owned();
                actix_rt::spawn(async move {
                    if let Err(e) = store.release_promotion(&code, rider).await {
                        tracing::warn!(%code, %rider, error = %e, "a promotion use could not be given back");
                    }
                });
            }
            None => self.market.release_promo(code, rider),
        }
    }

    /// Whether a trip may be booked for `pickup_at_ms`: at least `trip.schedule_min_lead_s` and
    /// at most 7 days ahead of `now`.
    fn check_pickup_time(&self, pickup_at_ms: i64, now: i64) -> Result<(), RequestError> {
        let min_lead_ms = secs_to_ms(self.settings.trip.schedule_min_lead_s);
        if pickup_at_ms <= now {
            return Err(RequestError::PickupTime("is in the past".into()));
        }
        if pickup_at_ms < now.saturating_add(min_lead_ms) {
            return Err(RequestError::PickupTime(format!(
                "must be at least {} s ahead (trip.schedule_min_lead_s); book without pickup_at to \
                 ride now",
                min_lead_ms / 1_000
            )));
        }
        if pickup_at_ms > now.saturating_add(MAX_SCHEDULE_AHEAD_MS) {
            return Err(RequestError::PickupTime(
                "must be at most 7 days ahead".into(),
            ));
        }
        Ok(())
    }

    async fn open_trip(
        &self,
        trip_id: Uuid,
        rider_id: Uuid,
        request: &TripRequest,
        vehicle_type: VehicleType,
        (tariff, currency): (Tariff, Currency),
    ) -> Result<Trip, RequestError> {
        let now = now_ms();
        // Checked here, after the idempotency key: a retry of a booking whose lead has since
        // shrunk below the minimum still finds the trip it made.
        if let Some(pickup_at_ms) = request.pickup_at_ms {
            self.check_pickup_time(pickup_at_ms, now)?;
        }
        let vehicle = self.vehicles.intern(&vehicle_type)?;
        let schedule = request.pickup_at_ms.map(|pickup_at_ms| Schedule {
            pickup_at_ms,
            dispatch_at_ms: pickup_at_ms
                .saturating_sub(secs_to_ms(self.settings.trip.schedule_dispatch_lead_s))
                .max(now),
        });
        // A trip booked ahead is demand when it is dispatched, not now.
        if schedule.is_none() {
            self.market.record_demand(request.origin, now);
        }
        let surge = self.market.surge(&self.shards, request.origin, now);
        let discount = match &request.promo_code {
            Some(code) => Some(self.redeem_promo(code, rider_id, now).await?),
            None => None,
        };
        let estimate = self.market.estimate_with(
            &tariff,
            currency,
            request.origin,
            request.destination,
            surge.surge,
            discount,
        );
        let random = Uuid::new_v4().as_u128();
        let (trip, events) = Trip::open(
            NewTrip {
                trip_id,
                rider_id,
                vehicle_type: vehicle_type.to_string(),
                origin: request.origin,
                destination: request.destination,
                quote: Quote {
                    estimate,
                    surge: surge.surge,
                    discount,
                    cancel_fee: Money::new(tariff.cancel_fee, currency),
                },
                pin: pin_from(u16::try_from(random & 0xFFFF).unwrap_or(0)),
                promo_code: request.promo_code.as_deref().map(str::to_ascii_uppercase),
                first_radius_m: self.policy.radius_m(0).unwrap_or(0.0),
                schedule,
            },
            now,
        );
        self.trips.insert(trip.clone(), events.clone());
        for status in [TripStatus::Requested, trip.status] {
            counter!(TRIP_TRANSITIONS, "status" => status.as_str()).increment(1);
        }
        if trip.status == TripStatus::Scheduled {
            self.riders.send(
                rider_id,
                &super::protocol::rider_trip_update(&trip, trip.status, None, None),
            );
        }
        let durable = self.persistence().map(|p| {
            p.write_durable(Write::Trip(Box::new(TripWrite {
                trip: trip.clone(),
                records: events,
                idempotency: request.idempotency_key.clone().map(|key| {
                    (
                        key,
                        self.trips
                            .claimed(rider_id, request.idempotency_key.as_deref().unwrap_or(""))
                            .map(|c| c.fingerprint)
                            .unwrap_or_default(),
                    )
                }),
                request_id: request.request_id.clone(),
                traceparent: crate::telemetry::current_traceparent(),
            })))
        });
        // Matching starts at once; the answer waits for durability.
        let actor = TripActor::new(self.clone(), trip.clone(), vehicle).start();
        self.trip_actors.insert(trip_id, actor);
        tracing::info!(%trip_id, %rider_id, "trip requested");
        if let Some(durable) = durable {
            let limit = Duration::from_secs_f64(self.settings.database.ack_timeout_s);
            match durable {
                Ok(rx) => match tokio::time::timeout(limit, rx).await {
                    Ok(Ok(())) => {}
                    _ => return Err(RequestError::NotDurable),
                },
                Err(_) => return Err(RequestError::NotDurable),
            }
        }
        Ok(trip)
    }

    /// Runs an assigned driver's action on its trip, for the REST twins and the socket.
    ///
    /// # Errors
    ///
    /// [`DriveError`]: an unknown trip, not the trip's driver, a wrong state or PIN, a PIN lock.
    pub async fn drive(
        &self,
        driver_id: Uuid,
        trip_id: Uuid,
        action: DriverAction,
        via_socket: bool,
        request_id: Option<Arc<str>>,
    ) -> Result<Trip, DriveError> {
        let trip = self
            .trips
            .get(trip_id)
            .ok_or(DriveError::NotFound(trip_id))?;
        if trip.driver_id != Some(driver_id) {
            return Err(ActError::Trip(crate::dispatch::TripError::NotYourTrip).into());
        }
        let actor = self
            .trip_actors
            .get(trip_id)
            .ok_or(DriveError::Ended(trip.status))?;
        actor
            .send(DriverAct {
                driver_id,
                action,
                via_socket,
                request_id,
                traceparent: crate::telemetry::current_traceparent(),
            })
            .await
            .map_err(|_| DriveError::Ended(trip.status))?
            .map_err(DriveError::Act)
    }
}

/// Seconds of a setting as whole milliseconds.
fn secs_to_ms(seconds: f64) -> i64 {
    i64::try_from(Duration::from_secs_f64(seconds.max(0.0)).as_millis()).unwrap_or(i64::MAX)
}
