//! H3 cells: which index cell a point falls in, which shard a cell belongs to, how far a cell
//! reaches from its centre, and the set of cells covering a circle.

use h3o::{CellIndex, Resolution};

use super::latlng::{LatLng, UnitVec, metres_to_chord};

/// Safety factor between a resolution's average hexagon edge and the farthest any point of any of
/// its cells lies from that cell's centre. H3 cells vary in size by about 2× in area across the
/// globe, which puts the true circumradius within ~1.4× the average edge; the unit test
/// `global_cell_radius_bounds_every_sampled_cell` checks the bound on random cells.
const CELL_RADIUS_FACTOR: f64 = 2.0;

/// An upper bound, in metres, on the distance from any cell's centre to any point of that cell at
/// `res`. Over-estimating only costs a little pruning; under-estimating would lose drivers.
#[must_use]
pub fn max_cell_radius_m(res: Resolution) -> f64 {
    res.edge_length_m() * CELL_RADIUS_FACTOR
}

/// The farthest distance, in metres, from `cell`'s centre to any point of `cell`, from its real
/// boundary (the farthest point of a cell is one of its vertices; a small margin absorbs rounding).
#[must_use]
pub fn cell_radius_m(cell: CellIndex) -> f64 {
    let centre = h3o::LatLng::from(cell);
    let farthest = cell
        .boundary()
        .iter()
        .map(|vertex| centre.distance_m(*vertex))
        .fold(0.0_f64, f64::max);
    farthest * 1.001 + 0.01
}

/// The cell's centre as a unit vector.
#[must_use]
pub fn cell_centre(cell: CellIndex) -> UnitVec {
    UnitVec::from(h3o::LatLng::from(cell))
}

/// The two H3 resolutions the engine works at: index cells bucket drivers, shard cells group index
/// cells into the unit one cell actor owns.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    index_res: Resolution,
    shard_res: Resolution,
}

/// A grid whose shard resolution is not coarser than its index resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "geo.shard_resolution ({shard}) must be coarser (smaller) than geo.index_resolution ({index})"
)]
pub struct GridError {
    index: u8,
    shard: u8,
}

impl Grid {
    /// A grid indexing drivers at `index_res`, sharded at `shard_res`.
    ///
    /// # Errors
    ///
    /// [`GridError`] when `shard_res` is not coarser than `index_res`.
    pub fn new(index_res: Resolution, shard_res: Resolution) -> Result<Self, GridError> {
        if u8::from(shard_res) >= u8::from(index_res) {
            return Err(GridError {
                index: index_res.into(),
                shard: shard_res.into(),
            });
        }
        Ok(Self {
            index_res,
            shard_res,
        })
    }

    /// Resolution of the cells drivers are bucketed by.
    #[must_use]
    pub const fn index_res(&self) -> Resolution {
        self.index_res
    }

    /// Resolution of the cells that group buckets into shards.
    #[must_use]
    pub const fn shard_res(&self) -> Resolution {
        self.shard_res
    }

    /// The index cell holding `point`.
    #[must_use]
    pub fn cell_of(&self, point: LatLng) -> CellIndex {
        point.to_h3().to_cell(self.index_res)
    }

    /// The shard an index cell belongs to: its H3 parent at the shard resolution.
    #[must_use]
    pub fn shard_of(&self, cell: CellIndex) -> CellIndex {
        // `cell` is at the index resolution, which is finer than the shard resolution by
        // construction, so the parent always exists.
        cell.parent(self.shard_res).unwrap_or(cell)
    }

    /// How far, in metres, the index cells of `shard` reach from the shard's centre.
    ///
    /// H3 children are not strictly inside their parent's outline, so this walks the real
    /// children instead of trusting the parent's boundary. It runs once per shard.
    #[must_use]
    pub fn shard_reach_m(&self, shard: CellIndex) -> f64 {
        let centre = h3o::LatLng::from(shard);
        shard
            .children(self.index_res)
            .map(|child| centre.distance_m(h3o::LatLng::from(child)) + cell_radius_m(child))
            .fold(0.0_f64, f64::max)
    }
}

impl Grid {
    /// The shard split into parts (its descendants two resolutions finer, or at the index
    /// resolution if that is nearer), each with its centre and how far, in metres, the index cells
    /// under it reach from that centre. Lets a router skip a shard whose outline is near a circle
    /// but whose parts are not.
    #[must_use]
    pub fn shard_parts(&self, shard: CellIndex) -> Vec<(h3o::LatLng, f64)> {
        let part_res =
            Resolution::try_from((u8::from(self.shard_res) + 2).min(u8::from(self.index_res)))
                .unwrap_or(self.index_res);
        shard
            .children(part_res)
            .map(|part| {
                let centre = h3o::LatLng::from(part);
                let reach = part
                    .children(self.index_res)
                    .map(|cell| centre.distance_m(h3o::LatLng::from(cell)) + cell_radius_m(cell))
                    .fold(0.0_f64, f64::max);
                (centre, reach)
            })
            .collect()
    }
}

/// Every cell at `res` that may hold a point within `radius_m` of `centre`; never misses one.
///
/// Walks grid rings outward from the centre's cell. A cell is kept when the nearest any of its
/// points can be (distance to its centre minus the resolution's cell-radius bound) is within the
/// radius; the walk stops after a ring all of whose cells are out of reach. That stop is safe
/// because the great-circle path from the centre to any farther point crosses that ring, and grid
/// distance changes by at most one from a cell to its neighbour.
///
/// # Example
///
/// ```
/// use hexdispatch::geo::{LatLng, covering_cells};
/// use h3o::Resolution;
///
/// let centre = LatLng::new(40.7128, -74.0060)?;
/// let cells = covering_cells(centre, 500.0, Resolution::Nine);
/// assert!(cells.contains(&centre.to_h3().to_cell(Resolution::Nine)));
/// # Ok::<(), hexdispatch::geo::GeoError>(())
/// ```
#[must_use]
pub fn covering_cells(centre: LatLng, radius_m: f64, res: Resolution) -> Vec<CellIndex> {
    let q = UnitVec::from(centre);
    let reach = metres_to_chord(radius_m.max(0.0));
    let cell_bound = metres_to_chord(max_cell_radius_m(res));
    let origin = centre.to_h3().to_cell(res);
    let mut cells = Vec::new();
    let mut ring = Vec::new();
    for k in 0.. {
        ring.clear();
        ring.extend(origin.grid_ring::<Vec<_>>(k));
        let mut any_in_reach = false;
        for &cell in &ring {
            if q.chord(cell_centre(cell)) - cell_bound <= reach {
                cells.push(cell);
                any_in_reach = true;
            }
        }
        // A ring can be empty only when it wraps the whole globe.
        if !any_in_reach || ring.is_empty() {
            break;
        }
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn random_point(rng: &mut StdRng) -> LatLng {
        // Uniform on the sphere, so polar cells are sampled as often as their area deserves.
        let z: f64 = rng.random_range(-1.0..=1.0);
        let lng: f64 = rng.random_range(-180.0..180.0);
        LatLng::new(z.asin().to_degrees(), lng).unwrap()
    }

    #[test]
    fn global_cell_radius_bounds_every_sampled_cell() {
        let mut rng = StdRng::seed_from_u64(7);
        for res in [
            Resolution::Five,
            Resolution::Six,
            Resolution::Seven,
            Resolution::Nine,
        ] {
            let bound = max_cell_radius_m(res);
            let mut worst = 0.0_f64;
            for _ in 0..20_000 {
                let cell = random_point(&mut rng).to_h3().to_cell(res);
                worst = worst.max(cell_radius_m(cell));
            }
            for pentagon in res.pentagons() {
                worst = worst.max(cell_radius_m(pentagon));
            }
            assert!(
                worst < bound * 0.85,
                "res {res}: worst {worst} m vs bound {bound} m"
            );
        }
    }

    #[test]
    fn points_lie_within_their_cells_radius() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let p = random_point(&mut rng);
            let cell = p.to_h3().to_cell(Resolution::Nine);
            let d = p.to_h3().distance_m(h3o::LatLng::from(cell));
            assert!(
                d <= cell_radius_m(cell),
                "{p:?} is {d} m from its cell centre"
            );
        }
    }

    #[test]
    fn shard_resolution_must_be_coarser() {
        assert!(Grid::new(Resolution::Nine, Resolution::Nine).is_err());
        assert!(Grid::new(Resolution::Six, Resolution::Nine).is_err());
        assert!(Grid::new(Resolution::Nine, Resolution::Six).is_ok());
    }

    #[test]
    fn shard_reach_covers_every_child_point() {
        let grid = Grid::new(Resolution::Nine, Resolution::Six).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let p = random_point(&mut rng);
            let shard = grid.shard_of(grid.cell_of(p));
            let reach = grid.shard_reach_m(shard);
            let d = p.to_h3().distance_m(h3o::LatLng::from(shard));
            assert!(
                d <= reach,
                "{p:?}: {d} m from its shard centre, reach {reach} m"
            );
        }
    }
}
