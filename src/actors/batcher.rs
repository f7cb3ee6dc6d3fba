//! `Batcher` (`matching.mode = "batched"`, SPEC §6 rule 5): trips opened within one window of
//! `matching.batch_window_ms` enlist here with their 10 nearest drivers within their first radius
//! (read by the trip as it enlists, so the reads spread over the window). When the window closes
//! the batcher keeps the candidates that are still free, at their current distances, pairs trips
//! and drivers so the total pickup distance is least ([`crate::dispatch::batch::optimal_sparse`])
//! and tells each trip its driver, oldest trip first. The trip offers itself to that driver first
//! and goes on as in `broadcast` mode; a trip with no driver in reach goes on at once.
//!
//! A driver who came within reach during the window is not among the candidates of trips that
//! enlisted before; it is offered by the normal steps if a trip still needs it.

use std::time::Duration;

use actix::prelude::*;
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::core::Core;
use super::supervision::guarded;
use super::trip::{FirstOffer, TripActor};
use crate::clock::now_ms;
use crate::dispatch::batch::{self, DEFAULT_CAP};
use crate::geo::{LatLng, NearbyHit};

/// Candidates read per trip: enough for the pairing to have choices beyond each trip's nearest.
pub const CANDIDATES_PER_TRIP: usize = 10;

/// A trip waiting for its window to close.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enlist {
    /// The trip's actor.
    pub trip: Addr<TripActor>,
    /// When it was requested, epoch ms: a window closes its first request's window after.
    pub requested_ms: i64,
    /// Its pickup.
    pub origin: LatLng,
    /// Its first search radius, metres.
    pub radius_m: f64,
    /// Its nearest available drivers within that radius as it enlisted.
    pub candidates: Vec<NearbyHit>,
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
        // Each candidate still free and fresh, at its current pickup distance; a driver is a
        // column once however many trips have it among theirs.
        let mut column: FxHashMap<Uuid, Option<(usize, LatLng)>> = FxHashMap::default();
        let mut drivers: Vec<Uuid> = Vec::new();
        let rows: Vec<Vec<(usize, u32)>> = trips
            .iter()
            .map(|t| {
                t.candidates
                    .iter()
                    .filter_map(|hit| {
                        let id = hit.driver.driver_id;
                        let (d, at) = (*column.entry(id).or_insert_with(|| {
                            let now = self
                                .core
                                .shards
                                .current(id, hit.driver.position)
                                .filter(|e| e.available && e.seen_ms >= fresh_since_ms)?;
                            drivers.push(id);
                            Some((drivers.len() - 1, now.position))
                        }))?;
                        let metres = at.distance_m(t.origin);
                        (metres <= t.radius_m).then(|| (d, metres.round() as u32))
                    })
                    .collect()
            })
            .collect();
        let pairing = guarded("batcher", || {
            batch::optimal_sparse(&rows, drivers.len(), DEFAULT_CAP)
        })
        .unwrap_or_else(|| vec![None; trips.len()]);
        // In arrival order: the trips that have waited longest are offered first.
        for ((t, pick), row) in trips.iter().zip(pairing).zip(&rows) {
            let driver = pick.and_then(|d| {
                let &(_, metres) = row.iter().find(|(c, _)| *c == d)?;
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
            // The first request of a window opens it: its wait is the window, not the window
            // plus however long the trip took to enlist.
            let waited = u64::try_from(now_ms().saturating_sub(msg.requested_ms)).unwrap_or(0);
            let left = self.window.saturating_sub(Duration::from_millis(waited));
            ctx.run_later(left, |batcher, _| batcher.close_window());
        }
        self.waiting.push(msg);
    }
}
