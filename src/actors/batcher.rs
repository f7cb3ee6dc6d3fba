//! `Batcher` (`matching.mode = "batched"`, SPEC §6 rule 5): trips opened within one window of
//! `matching.batch_window_ms` enlist here; when the window closes it reads each trip's 10 nearest
//! drivers within its first radius, pairs trips and drivers so the total pickup distance is least
//! ([`crate::dispatch::batch::optimal`]) and tells each trip its driver. The trip offers itself
//! to that driver first and goes on as in `broadcast` mode; a trip with no driver in reach goes
//! on at once.

use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::core::Core;
use super::supervision::guarded;
use super::trip::{FirstOffer, TripActor};
use crate::clock::now_ms;
use crate::dispatch::batch::{self, DEFAULT_CAP};
use crate::geo::{LatLng, NearbyQuery, VehicleId};

/// Candidates read per trip: enough for the pairing to have choices beyond each trip's nearest.
const CANDIDATES_PER_TRIP: usize = 10;

/// A trip waiting for its window to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enlist {
    /// The trip's actor.
    pub trip: Addr<TripActor>,
    /// Its pickup.
    pub origin: LatLng,
    /// Its first search radius, metres.
    pub radius_m: f64,
    /// The vehicle type it wants.
    pub vehicle: VehicleId,
}

/// Gathers a window's trips and pairs them with drivers.
pub struct Batcher {
    core: Core,
    window: Duration,
    waiting: Vec<Enlist>,
}

impl Batcher {
    /// A batcher closing its windows after `matching.batch_window_ms`.
    #[must_use]
    pub fn new(core: Core) -> Self {
        let window = Duration::from_millis(core.settings.matching.batch_window_ms);
        Self {
            core,
            window,
            waiting: Vec::new(),
        }
    }

    fn close_window(&mut self) {
        let trips = std::mem::take(&mut self.waiting);
        let ttl_ms =
            i64::try_from(self.core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX);
        let fresh_since_ms = now_ms().saturating_sub(ttl_ms);
        // Each trip's nearest drivers within its first radius, with their pickup distances; a
        // driver is a column once however many trips have it among theirs.
        let mut column: FxHashMap<Uuid, usize> = FxHashMap::default();
        let mut drivers: Vec<Uuid> = Vec::new();
        let candidates: Vec<Vec<(usize, u32)>> = trips
            .iter()
            .map(|t| {
                self.core
                    .nearby(NearbyQuery {
                        point: t.origin,
                        radius_m: t.radius_m,
                        limit: CANDIDATES_PER_TRIP,
                        vehicle: Some(t.vehicle),
                        fresh_since_ms,
                    })
                    .into_iter()
                    .map(|hit| {
                        let id = hit.driver.driver_id;
                        let d = *column.entry(id).or_insert_with(|| {
                            drivers.push(id);
                            drivers.len() - 1
                        });
                        (d, hit.distance_m.round() as u32)
                    })
                    .collect()
            })
            .collect();
        let costs: Vec<Vec<Option<u32>>> = candidates
            .iter()
            .map(|row| {
                let mut costs = vec![None; drivers.len()];
                for &(d, metres) in row {
                    costs[d] = Some(metres);
                }
                costs
            })
            .collect();
        let pairing = guarded("batcher", || {
            batch::optimal(&costs, drivers.len(), DEFAULT_CAP)
        })
        .unwrap_or_else(|| vec![None; trips.len()]);
        for ((t, pick), row) in trips.iter().zip(pairing).zip(&costs) {
            let driver = pick.and_then(|d| {
                let metres = row.get(d).copied().flatten()?;
                Some((drivers[d], f64::from(metres)))
            });
            t.trip.do_send(FirstOffer { driver });
        }
    }
}

impl Actor for Batcher {
    type Context = Context<Self>;
}

impl Handler<Enlist> for Batcher {
    type Result = ();

    fn handle(&mut self, msg: Enlist, ctx: &mut Self::Context) {
        if self.waiting.is_empty() {
            // The first trip of a window opens it.
            ctx.run_later(self.window, |batcher, _| batcher.close_window());
        }
        self.waiting.push(msg);
    }
}
