//! Start-up recovery: every trip the durable store holds as live gets its actor back (MATCHING
//! trips match again from their step; assigned ones wait for their driver), completed trips that
//! were never settled are settled, and the drivers of the Redis snapshot go back into the index.
//! With several instances sharing the store (SPEC §11), each takes back only the trips and
//! drivers of the regions it owns.

use actix::Actor;

use super::core::Core;
use super::driver::Restore;
use super::trip::TripActor;
use crate::clock::now_ms;
use crate::dispatch::{Position, TripStatus, VehicleType, plausible_distance_m};
use crate::geo::LatLng;
use crate::persistence::StoreError;

impl Core {
    /// Whether this instance owns the region of `point` (always, for a single instance).
    #[must_use]
    pub fn owns(&self, point: LatLng) -> bool {
        self.regions.owner(self.regions.region_of(point)).id == self.settings.instance_id()
    }

    /// The other instances owning regions within `radius_m` of `point` (none on a single
    /// instance).
    #[must_use]
    pub fn other_owners(&self, point: LatLng, radius_m: f64) -> Vec<crate::geo::Peer> {
        let me = self.settings.instance_id();
        let mut out: Vec<crate::geo::Peer> = Vec::new();
        if self.regions.peers().len() < 2 {
            return out;
        }
        for region in crate::geo::covering_cells(point, radius_m, self.regions.resolution()) {
            let owner = self.regions.owner(region);
            if owner.id != me && !out.iter().any(|p| p.id == owner.id) {
                out.push(owner.clone());
            }
        }
        out
    }

    /// Start-up recovery: resumes every trip the durable store holds as live (MATCHING ones match
    /// again from their step; assigned ones wait for their driver) and puts the drivers of the
    /// Redis snapshot back into the index. Returns (trips resumed, drivers restored).
    ///
    /// # Errors
    ///
    /// The store's or Redis's error.
    pub async fn recover(&self) -> anyhow::Result<(usize, usize)> {
        let mut trips = 0;
        if let Some(p) = self.persistence() {
            for trip_id in p.store().live_trip_ids().await? {
                let (trip, events) = match p.store().trip(trip_id).await {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    // One unreadable trip is no reason not to start: log it and go on.
                    Err(e @ StoreError::Corrupt(_)) => {
                        tracing::error!(%trip_id, error = %e, "skipping an unreadable trip");
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                // Several instances share the store: each resumes the trips of its regions.
                if !trip.status.is_live() || !self.owns(trip.origin) {
                    continue;
                }
                let vehicle = match VehicleType::parse(&trip.vehicle_type)
                    .map_err(anyhow::Error::from)
                    .and_then(|v| Ok(self.vehicles.intern(&v)?))
                {
                    Ok(vehicle) => vehicle,
                    Err(e) => {
                        tracing::error!(%trip_id, error = %e, "skipping a trip of an unusable vehicle type");
                        continue;
                    }
                };
                let driven_m = match (trip.status, trip.driver_id, trip.started_ms) {
                    (TripStatus::TripStarted, Some(driver), Some(started)) => {
                        self.driven_since(driver, started).await
                    }
                    _ => 0.0,
                };
                self.trips.insert(trip.clone(), events);
                let actor = TripActor::new(self.clone(), trip, vehicle)
                    .with_driven_m(driven_m)
                    .start();
                self.trip_actors.insert(trip_id, actor);
                trips += 1;
            }
        }
        if let Some(p) = self.persistence() {
            // Completed (or cancelled late) but not settled (the engine stopped in between):
            // settle now, once.
            let mut unsettled = p.store().trips_with_status("TRIP_COMPLETED").await?;
            unsettled.extend(p.store().unsettled_fees().await?);
            let core = self.clone();
            actix_rt::spawn(async move {
                for trip_id in unsettled {
                    if let Err(e) = core.payments.settle(&core, trip_id).await {
                        tracing::warn!(%trip_id, error = %e, "settling after restart failed");
                    }
                }
            });
        }
        let mut drivers = 0;
        if let Some(snapshot) = self.snapshot() {
            let fresh_since = now_ms().saturating_sub(
                i64::try_from(self.settings.location.ttl().as_millis()).unwrap_or(i64::MAX),
            );
            for entry in snapshot.load().await? {
                if entry.status != "online" || entry.received_ms < fresh_since {
                    continue;
                }
                let Ok(point) = LatLng::new(entry.lat, entry.lng) else {
                    continue;
                };
                if !self.owns(point) {
                    continue;
                }
                let Ok(actor) = self.driver(entry.driver_id, Some(&entry.vehicle_type)) else {
                    continue;
                };
                actor
                    .send(Restore(Position {
                        point,
                        heading: entry.heading,
                        speed_mps: entry.speed_mps,
                        ts_ms: entry.ts_ms,
                        received_ms: entry.received_ms,
                    }))
                    .await?;
                drivers += 1;
            }
        }
        Ok((trips, drivers))
    }

    /// The distance `driver` drove since `started_ms`, from its stored position samples (a trip
    /// resumed after a restart keeps counting from there). The samples are sparser than the live
    /// trail, so this errs short.
    async fn driven_since(&self, driver: uuid::Uuid, started_ms: i64) -> f64 {
        let Some(p) = self.persistence() else {
            return 0.0;
        };
        match p
            .store()
            .positions(driver, started_ms, now_ms(), 100_000)
            .await
        {
            Ok(rows) => plausible_distance_m(
                rows.iter()
                    .filter_map(|r| LatLng::new(r.lat, r.lng).ok().map(|p| (p, r.ts_ms))),
            ),
            Err(e) => {
                tracing::warn!(%driver, error = %e, "driven distance not recovered");
                0.0
            }
        }
    }
}
