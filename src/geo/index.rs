//! The in-memory spatial index of one shard: drivers bucketed by H3 cell, answering
//! "the k nearest matching drivers within r" exactly, by true great-circle distance.
//!
//! A query walks grid rings outward from the query's cell. Each bucket caches its cell's centre
//! and exact radius, so "could anything in this bucket beat the current k-th best?" is one chord
//! computation; drivers are ranked by squared chord (monotone in great-circle distance) and only
//! the k survivors get a haversine distance. The walk stops as soon as a whole ring lies beyond the
//! current bound. When the query point is far from the shard or the fleet is sparse, walking rings
//! would visit more empty cells than the shard has buckets; past that point the query switches to a
//! best-first pass over the remaining buckets, so one query never costs more than the shard's
//! own bucket count.

use h3o::{CellIndex, Resolution};
use rustc_hash::FxHashMap;
use uuid::Uuid;

use super::grid::{cell_centre, cell_radius_m, max_cell_radius_m};
use super::latlng::{LatLng, UnitVec, metres_to_chord};

/// Small integer naming a vehicle type; the mapping to names lives with the configuration.
pub type VehicleId = u16;

/// One driver as the index sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedDriver {
    /// The driver.
    pub driver_id: Uuid,
    /// Last known position.
    pub position: LatLng,
    /// Heading in degrees clockwise from north, when the app sent one.
    pub heading: Option<f32>,
    /// Vehicle type.
    pub vehicle: VehicleId,
    /// Whether the driver may receive an offer now (online, no live offer, no trip).
    pub available: bool,
    /// Server time the position was received, epoch milliseconds; drives freshness.
    pub seen_ms: i64,
}

/// What a nearest-drivers query asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyQuery {
    /// Centre of the search.
    pub point: LatLng,
    /// Search radius in metres.
    pub radius_m: f64,
    /// How many drivers at most.
    pub limit: usize,
    /// Only drivers of this vehicle type, when set.
    pub vehicle: Option<VehicleId>,
    /// Only positions received at or after this time (epoch ms); older ones are stale.
    pub fresh_since_ms: i64,
}

/// One driver in a query's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyHit {
    /// The driver as indexed.
    pub driver: IndexedDriver,
    /// Great-circle distance from the query point, metres.
    pub distance_m: f64,
}

struct Entry {
    driver: IndexedDriver,
    unit: UnitVec,
}

struct Bucket {
    cell: CellIndex,
    centre: UnitVec,
    /// Chord from the centre to the cell's farthest point: the bucket's pruning radius.
    radius_chord: f64,
    entries: Vec<Entry>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// The driver was not in this index before.
    Inserted,
    /// The driver was here and is updated (possibly in another bucket).
    Updated,
}

/// The spatial index of one shard (or of any set of cells: it does not care about shard bounds).
pub struct SpatialIndex {
    res: Resolution,
    buckets: Vec<Bucket>,
    by_cell: FxHashMap<CellIndex, u32>,
    /// Where each driver lives: (bucket, slot). Slots move on `swap_remove`, so this is kept in step.
    slots: FxHashMap<Uuid, (u32, u32)>,
    /// Chord bound on any cell's radius at `res`, used for cells that have no bucket.
    empty_cell_chord: f64,
    /// Scratch for the `&mut self` queries; readers sharing the index bring their own.
    scratch: Scratch,
}

/// Working space of a query, reused across queries (of any index) so a query allocates only its
/// answer. Readers that share an index behind a lock keep one each (e.g. one per thread).
#[derive(Default)]
pub struct Scratch {
    /// Number of the current query: a bucket marked with it was scanned by the ring walk.
    query_no: u64,
    marks: Vec<u64>,
    ring: Vec<CellIndex>,
    pending: Vec<(f64, u32)>,
    best: Vec<(f64, u32, u32)>,
}

impl SpatialIndex {
    /// An empty index bucketing drivers at `res`.
    #[must_use]
    pub fn new(res: Resolution) -> Self {
        Self {
            res,
            buckets: Vec::new(),
            by_cell: FxHashMap::default(),
            slots: FxHashMap::default(),
            empty_cell_chord: metres_to_chord(max_cell_radius_m(res)),
            scratch: Scratch::default(),
        }
    }

    /// Number of drivers held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the index holds no driver.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The driver's indexed record, if present.
    #[must_use]
    pub fn get(&self, driver_id: Uuid) -> Option<&IndexedDriver> {
        let &(b, s) = self.slots.get(&driver_id)?;
        Some(&self.buckets[b as usize].entries[s as usize].driver)
    }

    /// Inserts the driver or updates it in place, moving it between buckets when its cell changed.
    pub fn upsert(&mut self, driver: IndexedDriver) -> Upserted {
        let cell = driver.position.to_h3().to_cell(self.res);
        let entry = Entry {
            driver,
            unit: UnitVec::from(driver.position),
        };
        if let Some(&(b, s)) = self.slots.get(&driver.driver_id) {
            if self.buckets[b as usize].cell == cell {
                self.buckets[b as usize].entries[s as usize] = entry;
                return Upserted::Updated;
            }
            self.take(b, s);
            self.place(cell, entry);
            return Upserted::Updated;
        }
        self.place(cell, entry);
        Upserted::Inserted
    }

    /// Removes the driver; returns whether it was present.
    pub fn remove(&mut self, driver_id: Uuid) -> bool {
        match self.slots.get(&driver_id) {
            Some(&(b, s)) => {
                self.take(b, s);
                true
            }
            None => false,
        }
    }

    /// Marks the driver available or not; returns whether it was present.
    pub fn set_available(&mut self, driver_id: Uuid, available: bool) -> bool {
        match self.slots.get(&driver_id) {
            Some(&(b, s)) => {
                self.buckets[b as usize].entries[s as usize]
                    .driver
                    .available = available;
                true
            }
            None => false,
        }
    }

    /// Available drivers with a fresh position per H3 cell at `res` (no finer than the index
    /// resolution), for heatmaps.
    #[must_use]
    pub fn available_by_cell(
        &self,
        res: Resolution,
        fresh_since_ms: i64,
    ) -> FxHashMap<CellIndex, u32> {
        let mut counts = FxHashMap::default();
        for bucket in &self.buckets {
            let n = bucket
                .entries
                .iter()
                .filter(|e| e.driver.available && e.driver.seen_ms >= fresh_since_ms)
                .count();
            if n == 0 {
                continue;
            }
            if let Some(cell) = bucket.cell.parent(res) {
                *counts.entry(cell).or_insert(0) += u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        counts
    }

    /// Available drivers with a position received at or after `fresh_since_ms` inside the H3 cell
    /// `area` (any resolution). Walks only the buckets under `area`.
    #[must_use]
    pub fn count_available(&self, area: CellIndex, fresh_since_ms: i64) -> u32 {
        let counts = |bucket: &Bucket, inside: &dyn Fn(&Entry) -> bool| {
            bucket
                .entries
                .iter()
                .filter(|e| e.driver.available && e.driver.seen_ms >= fresh_since_ms && inside(e))
                .count()
        };
        let total = if area.resolution() <= self.res {
            area.children(self.res)
                .filter_map(|cell| self.by_cell.get(&cell))
                .map(|&b| counts(&self.buckets[b as usize], &|_| true))
                .sum()
        } else {
            let res = area.resolution();
            area.parent(self.res)
                .and_then(|cell| self.by_cell.get(&cell))
                .map_or(0, |&b| {
                    counts(&self.buckets[b as usize], &|e| {
                        e.driver.position.to_h3().to_cell(res) == area
                    })
                })
        };
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// Removes every driver whose position was received before `fresh_since_ms`; returns them.
    pub fn evict_stale(&mut self, fresh_since_ms: i64) -> Vec<Uuid> {
        let stale: Vec<Uuid> = self
            .buckets
            .iter()
            .flat_map(|b| &b.entries)
            .filter(|e| e.driver.seen_ms < fresh_since_ms)
            .map(|e| e.driver.driver_id)
            .collect();
        for id in &stale {
            self.remove(*id);
        }
        stale
    }

    /// The `limit` nearest drivers within `radius_m` of the point that pass the query's filters,
    /// nearest first. Exact: equal to a brute-force scan by great-circle distance.
    ///
    /// Walks rings outward from the query's cell; suits a query point inside (or near) the area
    /// this index covers.
    pub fn nearest(&mut self, query: &NearbyQuery) -> Vec<NearbyHit> {
        let origin = query.point.to_h3().to_cell(self.res);
        self.with_own_scratch(|index, scratch| index.search(query, Some(origin), scratch))
    }

    /// [`SpatialIndex::nearest`] for a caller that already knows the query point's cell at this
    /// index's resolution (`origin`), saving the conversion.
    pub fn nearest_from(&mut self, origin: CellIndex, query: &NearbyQuery) -> Vec<NearbyHit> {
        self.with_own_scratch(|index, scratch| index.search(query, Some(origin), scratch))
    }

    /// The same answer as [`SpatialIndex::nearest`], found by a best-first pass over the buckets
    /// alone; suits a query point far from this index's area, where rings would mostly be empty.
    pub fn nearest_best_first(&mut self, query: &NearbyQuery) -> Vec<NearbyHit> {
        self.with_own_scratch(|index, scratch| index.search(query, None, scratch))
    }

    /// The answer of [`SpatialIndex::nearest_from`] (with `origin`) or of
    /// [`SpatialIndex::nearest_best_first`] (without), for a reader holding only `&self` — any
    /// number of them at once — with working space of its own.
    #[must_use]
    pub fn search(
        &self,
        query: &NearbyQuery,
        origin: Option<CellIndex>,
        scratch: &mut Scratch,
    ) -> Vec<NearbyHit> {
        scratch.best.clear();
        if query.limit == 0 || self.slots.is_empty() {
            return Vec::new();
        }
        scratch.query_no += 1;
        if scratch.marks.len() < self.buckets.len() {
            scratch.marks.resize(self.buckets.len(), 0);
        }
        let q = UnitVec::from(query.point);
        let radius_chord = metres_to_chord(query.radius_m);
        let scan = Scan {
            q,
            query,
            radius_chord,
            radius2: radius_chord * radius_chord,
        };
        let finished = origin.is_some_and(|origin| self.walk_rings(origin, &scan, scratch));
        if !finished {
            self.best_first(&scan, scratch);
        }
        scratch
            .best
            .iter()
            .map(|&(_, b, s)| {
                let driver = self.buckets[b as usize].entries[s as usize].driver;
                NearbyHit {
                    driver,
                    distance_m: driver.position.distance_m(query.point),
                }
            })
            .collect()
    }

    fn with_own_scratch<T>(&mut self, f: impl FnOnce(&Self, &mut Scratch) -> T) -> T {
        let mut scratch = std::mem::take(&mut self.scratch);
        let answer = f(self, &mut scratch);
        self.scratch = scratch;
        answer
    }

    /// Scans rings of cells outward from the query's cell; returns whether the answer is complete.
    fn walk_rings(&self, origin: CellIndex, scan: &Scan<'_>, scratch: &mut Scratch) -> bool {
        let q = scan.q;
        let mut visited_cells = 0usize;
        for k in 0u32.. {
            // Past this many cells a pass over the remaining buckets is cheaper than more rings.
            if visited_cells > self.buckets.len() {
                return false;
            }
            scratch.ring.clear();
            scratch.ring.extend(origin.grid_ring::<Vec<_>>(k));
            if scratch.ring.is_empty() {
                return true;
            }
            visited_cells += scratch.ring.len();
            let mut ring_floor = f64::INFINITY;
            for i in 0..scratch.ring.len() {
                let cell = scratch.ring[i];
                match self.by_cell.get(&cell) {
                    Some(&b) => {
                        let bucket = &self.buckets[b as usize];
                        scratch.marks[b as usize] = scratch.query_no;
                        let floor = q.chord(bucket.centre) - bucket.radius_chord;
                        ring_floor = ring_floor.min(floor);
                        if floor <= scan.bound_chord(&scratch.best) {
                            scan.bucket(b, bucket, &mut scratch.best);
                        }
                    }
                    None => {
                        ring_floor =
                            ring_floor.min(q.chord(cell_centre(cell)) - self.empty_cell_chord);
                    }
                }
            }
            // Nothing beyond this ring can be closer than its nearest possible point.
            if ring_floor > scan.bound_chord(&scratch.best) {
                return true;
            }
        }
        false
    }

    /// Scans the buckets not visited yet, nearest possible point first, until none can improve.
    fn best_first(&self, scan: &Scan<'_>, scratch: &mut Scratch) {
        scratch.pending.clear();
        for (b, bucket) in self.buckets.iter().enumerate() {
            if scratch.marks[b] != scratch.query_no && !bucket.entries.is_empty() {
                let floor = scan.q.chord(bucket.centre) - bucket.radius_chord;
                if floor <= scan.radius_chord {
                    scratch.pending.push((floor, b as u32));
                }
            }
        }
        scratch.pending.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        for &(floor, b) in &scratch.pending {
            if floor > scan.bound_chord(&scratch.best) {
                break;
            }
            scan.bucket(b, &self.buckets[b as usize], &mut scratch.best);
        }
    }

    fn place(&mut self, cell: CellIndex, entry: Entry) {
        let b = match self.by_cell.get(&cell) {
            Some(&b) => b,
            None => {
                let b = u32::try_from(self.buckets.len()).unwrap_or(u32::MAX);
                self.buckets.push(Bucket {
                    cell,
                    centre: cell_centre(cell),
                    radius_chord: metres_to_chord(cell_radius_m(cell)),
                    entries: Vec::new(),
                });
                self.by_cell.insert(cell, b);
                b
            }
        };
        let bucket = &mut self.buckets[b as usize];
        let s = u32::try_from(bucket.entries.len()).unwrap_or(u32::MAX);
        self.slots.insert(entry.driver.driver_id, (b, s));
        bucket.entries.push(entry);
    }

    fn take(&mut self, b: u32, s: u32) {
        let bucket = &mut self.buckets[b as usize];
        let gone = bucket.entries.swap_remove(s as usize);
        self.slots.remove(&gone.driver.driver_id);
        if let Some(moved) = bucket.entries.get(s as usize) {
            self.slots.insert(moved.driver.driver_id, (b, s));
        }
    }
}

/// The per-query state of a scan: the query and its radius in chord terms.
struct Scan<'q> {
    q: UnitVec,
    query: &'q NearbyQuery,
    radius_chord: f64,
    radius2: f64,
}

impl Scan<'_> {
    /// The chord nothing farther than can enter the answer any more.
    fn bound_chord(&self, best: &[(f64, u32, u32)]) -> f64 {
        if best.len() >= self.query.limit {
            best.last().map_or(self.radius_chord, |w| w.0.sqrt())
        } else {
            self.radius_chord
        }
    }

    fn bucket(&self, b: u32, bucket: &Bucket, best: &mut Vec<(f64, u32, u32)>) {
        let limit = self.query.limit;
        for (s, entry) in bucket.entries.iter().enumerate() {
            let d = &entry.driver;
            if !d.available
                || d.seen_ms < self.query.fresh_since_ms
                || self.query.vehicle.is_some_and(|v| v != d.vehicle)
            {
                continue;
            }
            let d2 = self.q.chord2(entry.unit);
            if d2 > self.radius2 {
                continue;
            }
            if best.len() >= limit && best.last().is_some_and(|w| d2 >= w.0) {
                continue;
            }
            let at = best.partition_point(|x| x.0 <= d2);
            best.insert(at, (d2, b, s as u32));
            best.truncate(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn driver(n: u128, lat: f64, lng: f64) -> IndexedDriver {
        IndexedDriver {
            driver_id: Uuid::from_u128(n),
            position: LatLng::new(lat, lng).unwrap(),
            heading: None,
            vehicle: 0,
            available: true,
            seen_ms: 1_000,
        }
    }

    fn query(lat: f64, lng: f64, radius_m: f64, limit: usize) -> NearbyQuery {
        NearbyQuery {
            point: LatLng::new(lat, lng).unwrap(),
            radius_m,
            limit,
            vehicle: None,
            fresh_since_ms: 0,
        }
    }

    /// The reference answer: every driver scored by haversine, filtered, sorted.
    fn brute_force(fleet: &[IndexedDriver], q: &NearbyQuery) -> Vec<(Uuid, f64)> {
        let mut all: Vec<(Uuid, f64)> = fleet
            .iter()
            .filter(|d| d.available && d.seen_ms >= q.fresh_since_ms)
            .filter(|d| q.vehicle.is_none_or(|v| v == d.vehicle))
            .map(|d| (d.driver_id, d.position.distance_m(q.point)))
            .filter(|&(_, dist)| dist <= q.radius_m)
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        all.truncate(q.limit);
        all
    }

    fn assert_same(got: &[NearbyHit], want: &[(Uuid, f64)], context: &str) {
        assert_eq!(got.len(), want.len(), "{context}: answer sizes differ");
        for (i, (hit, (id, dist))) in got.iter().zip(want).enumerate() {
            assert!(
                (hit.distance_m - dist).abs() < 1e-6,
                "{context}: #{i} distance {} vs {dist}",
                hit.distance_m
            );
            // Equal distances may come in either order; distinct ones must name the same driver.
            let tie = want.iter().filter(|w| (w.1 - dist).abs() < 1e-6).count() > 1;
            assert!(
                tie || hit.driver.driver_id == *id,
                "{context}: #{i} is {} not {id}",
                hit.driver.driver_id
            );
        }
    }

    fn city_fleet(
        rng: &mut StdRng,
        n: usize,
        lat: f64,
        lng: f64,
        half_km: f64,
    ) -> Vec<IndexedDriver> {
        let dlat = half_km / 111.0;
        let dlng = half_km / (111.0 * lat.to_radians().cos());
        (0..n)
            .map(|i| {
                let mut d = driver(
                    i as u128 + 1,
                    lat + rng.random_range(-dlat..dlat),
                    lng + rng.random_range(-dlng..dlng),
                );
                d.vehicle = rng.random_range(0..3);
                d.available = rng.random_bool(0.9);
                d.seen_ms = rng.random_range(0..2_000);
                d
            })
            .collect()
    }

    #[test]
    fn upsert_moves_and_remove_forgets() {
        let mut index = SpatialIndex::new(Resolution::Nine);
        assert_eq!(index.upsert(driver(1, 48.85, 2.35)), Upserted::Inserted);
        assert_eq!(index.upsert(driver(2, 48.851, 2.351)), Upserted::Inserted);
        assert_eq!(index.upsert(driver(1, 48.90, 2.40)), Upserted::Updated);
        assert_eq!(index.len(), 2);
        let near = index.nearest(&query(48.85, 2.35, 1_000.0, 5));
        assert_eq!(near.len(), 1, "driver 1 moved away");
        assert_eq!(near[0].driver.driver_id, Uuid::from_u128(2));
        assert!(index.remove(Uuid::from_u128(2)));
        assert!(!index.remove(Uuid::from_u128(2)));
        assert!(index.nearest(&query(48.85, 2.35, 1_000.0, 5)).is_empty());
        assert_eq!(
            index.get(Uuid::from_u128(1)).map(|d| d.position.lat()),
            Some(48.90)
        );
    }

    #[test]
    fn unavailable_and_stale_drivers_are_not_served() {
        let mut index = SpatialIndex::new(Resolution::Nine);
        index.upsert(driver(1, 48.85, 2.35));
        index.upsert(IndexedDriver {
            seen_ms: 10,
            ..driver(2, 48.85, 2.35)
        });
        index.set_available(Uuid::from_u128(1), false);
        let q = NearbyQuery {
            fresh_since_ms: 500,
            ..query(48.85, 2.35, 100.0, 5)
        };
        assert!(index.nearest(&q).is_empty());
        assert_eq!(index.evict_stale(500), vec![Uuid::from_u128(2)]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn nearest_equals_brute_force_on_a_dense_city() {
        let mut rng = StdRng::seed_from_u64(42);
        let fleet = city_fleet(&mut rng, 10_000, 52.52, 13.40, 15.0);
        let mut index = SpatialIndex::new(Resolution::Nine);
        for d in &fleet {
            index.upsert(*d);
        }
        for i in 0..300 {
            let q = NearbyQuery {
                point: LatLng::new(
                    52.52 + rng.random_range(-0.2..0.2),
                    13.40 + rng.random_range(-0.3..0.3),
                )
                .unwrap(),
                radius_m: rng.random_range(100.0..50_000.0),
                limit: rng.random_range(1..=20),
                vehicle: rng.random_bool(0.3).then(|| rng.random_range(0..3)),
                fresh_since_ms: if rng.random_bool(0.3) { 1_000 } else { 0 },
            };
            assert_same(
                &index.nearest(&q),
                &brute_force(&fleet, &q),
                &format!("query {i}: {q:?}"),
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random fleets of 10 k drivers anywhere from the equator to the Arctic, random queries
        /// with radii 100 m – 50 km and k 1 – 20: the index answers exactly what brute force does.
        #[test]
        fn nearest_k_equals_brute_force_on_random_fleets(
            seed in any::<u64>(),
            lat in -80.0f64..80.0,
            lng in -179.0f64..179.0,
            half_km in 0.5f64..40.0,
            radius_m in 100.0f64..50_000.0,
            limit in 1usize..=20,
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let fleet = city_fleet(&mut rng, 10_000, lat, lng, half_km);
            let mut index = SpatialIndex::new(Resolution::Nine);
            for d in &fleet {
                index.upsert(*d);
            }
            for _ in 0..8 {
                let dlat = half_km * 1.5 / 111.0;
                let q = NearbyQuery {
                    point: LatLng::new(lat + rng.random_range(-dlat..dlat), lng + rng.random_range(-0.5..0.5)).unwrap(),
                    radius_m,
                    limit,
                    vehicle: rng.random_bool(0.3).then(|| rng.random_range(0..3)),
                    fresh_since_ms: 0,
                };
                let want = brute_force(&fleet, &q);
                assert_same(&index.nearest(&q), &want, &format!("rings: {q:?}"));
                assert_same(&index.nearest_best_first(&q), &want, &format!("best first: {q:?}"));
            }
        }
    }
}
