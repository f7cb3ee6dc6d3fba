//! Start-up recovery: every trip the durable store holds as live gets its actor back (MATCHING
//! trips match again from their step; assigned ones wait for their driver), completed trips that
//! were never settled are settled, and the drivers of the Redis snapshot go back into the index.

use actix::Actor;

use super::core::Core;
use super::driver::Restore;
use super::trip::TripActor;
use crate::clock::now_ms;
use crate::dispatch::{Position, VehicleType};
use crate::geo::LatLng;

impl Core {
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
                let Some((trip, events)) = p.store().trip(trip_id).await? else {
                    continue;
                };
                if !trip.status.is_live() {
                    continue;
                }
                let vehicle = self
                    .vehicles
                    .intern(&VehicleType::parse(&trip.vehicle_type)?)?;
                self.trips.insert(trip.clone(), events);
                let actor = TripActor::new(self.clone(), trip, vehicle).start();
                self.trip_actors.insert(trip_id, actor);
                trips += 1;
            }
        }
        if let Some(p) = self.persistence() {
            // Completed but not settled (the engine stopped in between): settle now, once.
            let unsettled = p.store().trips_with_status("TRIP_COMPLETED").await?;
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
                let Ok(actor) = self.driver(entry.driver_id, Some(&entry.vehicle_type)) else {
                    continue;
                };
                let Ok(point) = LatLng::new(entry.lat, entry.lng) else {
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
}
