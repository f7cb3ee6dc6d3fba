//! Trips the engine knows: each trip's state (the fold of its events) and its event log, riders'
//! histories, and idempotency keys. Trip actors are the only writers of a trip; readers (`GET`
//! routes, `session` frames) read here without asking the actor.

use std::collections::{BTreeMap, BTreeSet};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::Serialize;
use uuid::Uuid;

use crate::clock::rfc3339;
use crate::dispatch::{EventRecord, FareBreakdown, Money, Surge, Trip, TripStatus};
use crate::geo::LatLng;

struct Stored {
    trip: Trip,
    events: Vec<EventRecord>,
}

/// What an idempotency key was first used for.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentRequest {
    /// The trip it created.
    pub trip_id: Uuid,
    /// The request's content, to tell a retry from a different request reusing the key.
    pub fingerprint: String,
}

/// In-memory trip store.
#[derive(Default)]
pub struct TripStore {
    trips: DashMap<Uuid, Stored>,
    /// Trip ids per rider; v7 ids sort by creation time.
    by_rider: DashMap<Uuid, BTreeSet<Uuid>>,
    keys: DashMap<(Uuid, String), IdempotentRequest>,
    /// Driver → the live trip it serves.
    assignments: DashMap<Uuid, Uuid>,
}

impl TripStore {
    /// Claims `key` for `rider`: `None` if it was free (and is now bound to `request`), else what
    /// it was first used for.
    pub fn claim_key(
        &self,
        rider: Uuid,
        key: &str,
        request: IdempotentRequest,
    ) -> Option<IdempotentRequest> {
        match self.keys.entry((rider, key.to_owned())) {
            Entry::Occupied(e) => Some(e.get().clone()),
            Entry::Vacant(e) => {
                e.insert(request);
                None
            }
        }
    }

    /// Binds `key` to `request` whatever it was bound to (a key found in the durable store).
    pub fn bind_key(&self, rider: Uuid, key: &str, request: IdempotentRequest) {
        self.keys.insert((rider, key.to_owned()), request);
    }

    /// What `key` is bound to.
    #[must_use]
    pub fn claimed(&self, rider: Uuid, key: &str) -> Option<IdempotentRequest> {
        self.keys.get(&(rider, key.to_owned())).map(|r| r.clone())
    }

    /// Frees a key whose request failed before creating its trip.
    pub fn release_key(&self, rider: Uuid, key: &str) {
        self.keys.remove(&(rider, key.to_owned()));
    }

    /// Stores a trip and its events (a new trip, or one read back from the durable store).
    pub fn insert(&self, trip: Trip, events: Vec<EventRecord>) {
        self.by_rider
            .entry(trip.rider_id)
            .or_default()
            .insert(trip.trip_id);
        self.assign(&trip);
        self.trips.insert(trip.trip_id, Stored { trip, events });
    }

    /// Appends events to a trip and replaces its state.
    pub fn append(&self, trip: &Trip, records: &[EventRecord]) {
        if let Some(mut stored) = self.trips.get_mut(&trip.trip_id) {
            if let Some(previous) = stored.trip.driver_id
                && trip.driver_id != Some(previous)
            {
                self.assignments
                    .remove_if(&previous, |_, t| *t == trip.trip_id);
            }
            stored.events.extend_from_slice(records);
            stored.trip = trip.clone();
        }
        self.assign(trip);
    }

    fn assign(&self, trip: &Trip) {
        if let Some(driver) = trip.driver_id {
            if trip.status.is_live() {
                self.assignments.insert(driver, trip.trip_id);
            } else {
                self.assignments
                    .remove_if(&driver, |_, t| *t == trip.trip_id);
            }
        }
    }

    /// The live trip `driver` serves, if any.
    #[must_use]
    pub fn assignment(&self, driver: Uuid) -> Option<Uuid> {
        self.assignments.get(&driver).map(|t| *t)
    }

    /// A trip's current state.
    #[must_use]
    pub fn get(&self, trip_id: Uuid) -> Option<Trip> {
        self.trips.get(&trip_id).map(|s| s.trip.clone())
    }

    /// A trip's events, oldest first.
    #[must_use]
    pub fn events(&self, trip_id: Uuid) -> Option<Vec<EventRecord>> {
        self.trips.get(&trip_id).map(|s| s.events.clone())
    }

    /// A rider's trips, newest first, older than `before` when given, at most `limit`.
    #[must_use]
    pub fn rider_trips(&self, rider: Uuid, before: Option<Uuid>, limit: usize) -> Vec<Trip> {
        let Some(ids) = self.by_rider.get(&rider) else {
            return Vec::new();
        };
        let ids: Vec<Uuid> = match before {
            Some(b) => ids.range(..b).rev().take(limit).copied().collect(),
            None => ids.iter().rev().take(limit).copied().collect(),
        };
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Trips by status, for the stats.
    #[must_use]
    pub fn count_by_status(&self) -> BTreeMap<TripStatus, u64> {
        let mut counts = BTreeMap::new();
        for stored in &self.trips {
            *counts.entry(stored.trip.status).or_default() += 1;
        }
        counts
    }

    /// Trips stored.
    #[must_use]
    pub fn len(&self) -> usize {
        self.trips.len()
    }

    /// Whether no trip is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.trips.is_empty()
    }
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
#[derive(Debug, Clone, Serialize)]
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
        }
    }
}
