//! The live-trip store: trips the engine knows, each trip's state (the fold of its events) and its event log, riders'
//! histories, and idempotency keys. Trip actors are the only writers of a trip; readers (`GET`
//! routes, `session` frames) read here without asking the actor.

use std::collections::{BTreeMap, BTreeSet};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use uuid::Uuid;

use crate::dispatch::{EventRecord, Trip, TripStatus};

/// When a time-ordered (v7) id was made, epoch ms; 0 for other ids.
fn created_ms(id: Uuid) -> i64 {
    id.get_timestamp().map_or(0, |t| {
        let (secs, nanos) = t.to_unix();
        i64::try_from(secs).unwrap_or(i64::MAX) * 1_000 + i64::from(nanos / 1_000_000)
    })
}

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

    /// Forgets finished trips whose last change is older than `retention_ms`, their place in
    /// their riders' histories, and idempotency keys of trips created before then that are not
    /// in memory any more. Returns the number of trips forgotten. The durable store keeps all of
    /// it; reads fall back to it.
    pub fn prune(&self, now_ms: i64, retention_ms: i64) -> usize {
        let horizon = now_ms.saturating_sub(retention_ms);
        let old: Vec<(Uuid, Uuid)> = self
            .trips
            .iter()
            .filter(|s| !s.trip.status.is_live() && s.trip.updated_ms <= horizon)
            .map(|s| (s.trip.trip_id, s.trip.rider_id))
            .collect();
        let mut forgotten = 0;
        for (trip_id, rider_id) in &old {
            let removed = self.trips.remove_if(trip_id, |_, s| {
                !s.trip.status.is_live() && s.trip.updated_ms <= horizon
            });
            if removed.is_none() {
                // Changed or read back meanwhile: it stays, with its place in the history.
                continue;
            }
            forgotten += 1;
            let emptied = self.by_rider.get_mut(rider_id).is_some_and(|mut ids| {
                ids.remove(trip_id);
                ids.is_empty()
            });
            if emptied {
                self.by_rider.remove_if(rider_id, |_, ids| ids.is_empty());
            }
        }
        self.keys.retain(|_, request| {
            self.trips.contains_key(&request.trip_id) || created_ms(request.trip_id) > horizon
        });
        forgotten
    }

    /// Idempotency keys held in memory.
    #[must_use]
    pub fn keys_len(&self) -> usize {
        self.keys.len()
    }

    /// Riders with a history in memory.
    #[must_use]
    pub fn riders_len(&self) -> usize {
        self.by_rider.len()
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
