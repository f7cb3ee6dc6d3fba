//! The matching board: trips that are matching, filed by the H3 cell (at the shard resolution) of
//! their pickup, so a driver who becomes available can find at once every trip whose current
//! search circle holds it.
//!
//! Trip actors post themselves when they start matching and take themselves off when they stop;
//! they update their radius when their search widens. Driver actors read it when they become
//! available (came online, lost or declined an offer, finished a trip).

use actix::Addr;
use dashmap::DashMap;
use h3o::{CellIndex, Resolution};
use uuid::Uuid;

use super::trip::TripActor;
use crate::geo::{LatLng, VehicleId, covering_cells};

/// One matching trip as the board shows it.
#[derive(Clone)]
pub struct Posting {
    /// The trip.
    pub trip_id: Uuid,
    /// Its pickup.
    pub origin: LatLng,
    /// Its current search radius.
    pub radius_m: f64,
    /// Vehicle type wanted.
    pub vehicle: VehicleId,
    /// Its actor.
    pub addr: Addr<TripActor>,
}

/// Matching trips by pickup cell.
pub struct MatchingBoard {
    res: Resolution,
    max_radius_m: f64,
    cells: DashMap<CellIndex, Vec<Posting>>,
}

impl MatchingBoard {
    /// A board filing pickups at `res`, for searches no wider than `max_radius_m`.
    #[must_use]
    pub fn new(res: Resolution, max_radius_m: f64) -> Self {
        Self {
            res,
            max_radius_m,
            cells: DashMap::new(),
        }
    }

    /// Posts a trip, or updates its posting.
    pub fn post(&self, posting: Posting) {
        let cell = posting.origin.to_h3().to_cell(self.res);
        let mut list = self.cells.entry(cell).or_default();
        match list.iter_mut().find(|p| p.trip_id == posting.trip_id) {
            Some(existing) => *existing = posting,
            None => list.push(posting),
        }
    }

    /// Takes a trip off the board.
    pub fn remove(&self, trip_id: Uuid, origin: LatLng) {
        let cell = origin.to_h3().to_cell(self.res);
        let emptied = self.cells.get_mut(&cell).is_some_and(|mut list| {
            list.retain(|p| p.trip_id != trip_id);
            list.is_empty()
        });
        if emptied {
            self.cells.remove_if(&cell, |_, list| list.is_empty());
        }
    }

    /// Matching trips for `vehicle` whose search circle holds `point`, nearest first.
    #[must_use]
    pub fn in_reach(&self, point: LatLng, vehicle: VehicleId) -> Vec<(f64, Addr<TripActor>)> {
        let mut found = Vec::new();
        if self.cells.is_empty() {
            return found;
        }
        for cell in covering_cells(point, self.max_radius_m, self.res) {
            if let Some(list) = self.cells.get(&cell) {
                for p in list.iter().filter(|p| p.vehicle == vehicle) {
                    let d = p.origin.distance_m(point);
                    if d <= p.radius_m {
                        found.push((d, p.addr.clone()));
                    }
                }
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        found
    }

    /// Trips on the board.
    #[must_use]
    pub fn len(&self) -> usize {
        self.cells.iter().map(|l| l.len()).sum()
    }

    /// Whether the board is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
