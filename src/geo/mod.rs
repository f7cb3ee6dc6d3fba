//! Pure geometry: validated coordinates, great-circle distances, H3 cells and the spatial index.
//!
//! Nothing here knows about actors, sockets or storage. Positions enter as [`LatLng`] (valid by
//! construction), are bucketed by their H3 cell at the index resolution, and bucket cells are
//! grouped into shards at the shard resolution; [`SpatialIndex`] answers nearest-k queries over one
//! shard and [`covering_cells`] names every cell a circle can touch.

mod grid;
mod index;
mod latlng;
mod regions;

pub use grid::{Grid, GridError, cell_centre, cell_radius_m, covering_cells, max_cell_radius_m};
pub use index::{
    IndexedDriver, NearbyHit, NearbyQuery, Scratch, SpatialIndex, Upserted, VehicleId,
};
pub use latlng::{
    EARTH_RADIUS_M, GeoError, LatLng, UnitVec, chord_to_metres, haversine_m, metres_to_chord,
};
pub use regions::{MAX_REGION_RESOLUTION, Peer, Regions};

/// The point `distance_m` away from `from` along the initial bearing `bearing_deg` (great circle).
///
/// # Example
///
/// ```
/// use hexdispatch::geo::{LatLng, destination};
///
/// let a = LatLng::new(0.0, 0.0)?;
/// let b = destination(a, 90.0, 1_000.0);
/// assert!((a.distance_m(b) - 1_000.0).abs() < 1e-6);
/// # Ok::<(), hexdispatch::geo::GeoError>(())
/// ```
#[must_use]
pub fn destination(from: LatLng, bearing_deg: f64, distance_m: f64) -> LatLng {
    let delta = distance_m / EARTH_RADIUS_M;
    let theta = bearing_deg.to_radians();
    let (phi1, lambda1) = (from.lat().to_radians(), from.lng().to_radians());
    let phi2 = (phi1.sin() * delta.cos() + phi1.cos() * delta.sin() * theta.cos()).asin();
    let lambda2 = lambda1
        + (theta.sin() * delta.sin() * phi1.cos()).atan2(delta.cos() - phi1.sin() * phi2.sin());
    let lng = (lambda2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
    let lat = phi2.to_degrees().clamp(-90.0, 90.0);
    // Both values are finite and clamped into range, so construction cannot fail; fall back to the
    // origin rather than panic if a future change breaks that.
    LatLng::new(lat, lng).unwrap_or(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3o::Resolution;
    use proptest::prelude::*;

    fn check_covering(
        centre: LatLng,
        radius_m: f64,
        res: Resolution,
        samples: &[(f64, f64)],
    ) -> Result<(), TestCaseError> {
        let cells = covering_cells(centre, radius_m, res);
        for &(bearing, fraction) in samples {
            let p = destination(centre, bearing, radius_m * fraction);
            let cell = p.to_h3().to_cell(res);
            prop_assert!(
                cells.contains(&cell),
                "{p:?} ({} m from {centre:?}) is in {cell}, not among {} covering cells",
                p.distance_m(centre),
                cells.len()
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any point inside the circle lies in one of the covering cells, anywhere on Earth.
        #[test]
        fn covering_cells_never_miss_a_point_inside_the_circle(
            lat in -89.0f64..89.0,
            lng in -180.0f64..180.0,
            radius_m in 1.0f64..3_000.0,
            samples in prop::collection::vec((0.0f64..360.0, 0.0f64..=1.0), 64),
        ) {
            let centre = LatLng::new(lat, lng).unwrap();
            check_covering(centre, radius_m, Resolution::Nine, &samples)?;
        }

        /// The same on circles centred on a shard vertex (so they straddle three shards), at high
        /// latitudes, with the largest radius the API accepts at the shard resolution.
        #[test]
        fn covering_cells_straddling_shards_and_at_high_latitude(
            lat in prop_oneof![60.0f64..85.0, -85.0f64..-60.0, -10.0f64..10.0],
            lng in -180.0f64..180.0,
            vertex in 0usize..6,
            radius_m in 50.0f64..50_000.0,
            samples in prop::collection::vec((0.0f64..360.0, 0.0f64..=1.0), 64),
        ) {
            let shard = LatLng::new(lat, lng).unwrap().to_h3().to_cell(Resolution::Six);
            let boundary = shard.boundary();
            let corner = LatLng::from(boundary[vertex % boundary.len()]);
            check_covering(corner, radius_m, Resolution::Six, &samples)?;
            check_covering(corner, radius_m.min(2_000.0), Resolution::Nine, &samples)?;
        }
    }

    #[test]
    fn covering_cells_include_pentagon_neighbourhoods() {
        for pentagon in Resolution::Nine.pentagons().take(3) {
            let centre = LatLng::from(h3o::LatLng::from(pentagon));
            let samples: Vec<(f64, f64)> =
                (0..360).step_by(5).map(|b| (f64::from(b), 0.999)).collect();
            check_covering(centre, 1_500.0, Resolution::Nine, &samples).unwrap();
        }
    }
}
