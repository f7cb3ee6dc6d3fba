//! The shard map: which cell actor owns which shard, where each runs, and the fan-out of a nearby
//! query to every shard its circle can reach.
//!
//! Cell actors are created on first use and spread over the cell arbiters (one thread per core) by
//! a hash of the shard cell. The table of shards is read on every query and written only when a
//! shard is born, so it sits behind an `ArcSwap`: readers never lock. A query picks the shards
//! whose real reach (computed from the shard's own index cells) overlaps its circle, reads each
//! one's index on the caller's own thread (the cell actor is the only writer; see
//! [`IndexView`]) and merges their answers: no hop to another thread.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use h3o::CellIndex;
use metrics::{Gauge, Histogram, gauge, histogram};
use rustc_hash::FxHashMap;

use super::cell::{CellActor, IndexView, Resettle};
use super::supervision::guarded;
use uuid::Uuid;

use crate::geo::{
    Grid, IndexedDriver, LatLng, NearbyHit, NearbyQuery, Scratch, UnitVec, cell_centre,
    metres_to_chord,
};
use crate::metrics::{NEARBY_DURATION, SHARDS};

/// One live shard.
#[derive(Clone)]
pub struct Shard {
    /// The shard's H3 cell.
    pub cell: CellIndex,
    /// Its cell actor.
    pub addr: Addr<CellActor>,
    /// Its index, for reading.
    pub index: IndexView,
    centre: UnitVec,
    /// Chord from the shard's centre to the farthest point of any of its index cells.
    reach_chord: f64,
    /// The same, per part of the shard (see [`Grid::shard_parts`]): a finer second test.
    parts: Box<[(UnitVec, f64)]>,
}

impl Shard {
    /// Whether any driver of this shard can lie within `radius` (a chord) of `q`.
    fn reaches(&self, q: UnitVec, radius: f64) -> bool {
        q.chord(self.centre) - self.reach_chord <= radius
            && self
                .parts
                .iter()
                .any(|&(centre, reach)| q.chord(centre) - reach <= radius)
    }
}

#[derive(Default, Clone)]
struct ShardTable {
    by_cell: FxHashMap<CellIndex, usize>,
    shards: Vec<Shard>,
}

/// Routes index traffic to cell actors.
pub struct ShardMap {
    grid: Grid,
    arbiters: Vec<ArbiterHandle>,
    ttl: Duration,
    table: ArcSwap<ShardTable>,
    /// Serialises shard creation so two drivers entering a new shard start one actor, not two.
    births: Mutex<()>,
    /// How a rebuilt cell actor gets its drivers back.
    resettle: std::sync::OnceLock<Resettle>,
    /// Set once the engine stops its arbiters: a silent cell actor is then expected.
    stopping: std::sync::atomic::AtomicBool,
    latency: Histogram,
    shard_count: Gauge,
}

impl ShardMap {
    /// A map with no shard yet; cell actors will run on `arbiters` and evict positions older than
    /// `ttl`.
    #[must_use]
    pub fn new(grid: Grid, arbiters: Vec<ArbiterHandle>, ttl: Duration) -> Self {
        Self {
            grid,
            arbiters,
            ttl,
            table: ArcSwap::from_pointee(ShardTable::default()),
            births: Mutex::new(()),
            resettle: std::sync::OnceLock::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            latency: histogram!(NEARBY_DURATION),
            shard_count: gauge!(SHARDS),
        }
    }

    /// Sets how a cell actor that rebuilt itself asks its drivers to place themselves again (once,
    /// before the first shard is born).
    pub fn set_resettle(&self, resettle: Resettle) {
        let _ = self.resettle.set(resettle);
    }

    /// The grid shards are cut from.
    #[must_use]
    pub const fn grid(&self) -> &Grid {
        &self.grid
    }

    /// Every live shard.
    #[must_use]
    pub fn shards(&self) -> Vec<Shard> {
        self.table.load().shards.clone()
    }

    /// The cell actor owning `shard`, started on first use (and started again if it died).
    pub fn shard(&self, shard: CellIndex) -> Addr<CellActor> {
        if let Some(&i) = self.table.load().by_cell.get(&shard) {
            let addr = &self.table.load().shards[i].addr;
            if addr.connected() {
                return addr.clone();
            }
        }
        let _birth = self
            .births
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.table.load_full();
        let stopping = self.stopping.load(std::sync::atomic::Ordering::Acquire);
        let dead = match current.by_cell.get(&shard) {
            Some(&i) if current.shards[i].addr.connected() || stopping => {
                return current.shards[i].addr.clone();
            }
            Some(&i) => Some(i),
            None => None,
        };
        let (index_res, ttl) = (self.grid.index_res(), self.ttl);
        let resettle = self.resettle.get().cloned();
        let index = IndexView::new(index_res);
        let written = index.clone();
        let actor = move |_: &mut Context<CellActor>| {
            CellActor::over(written, shard, index_res, ttl).with_resettle(resettle)
        };
        let addr = if self.arbiters.is_empty() {
            CellActor::create(actor)
        } else {
            let spread = u64::from(shard).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let slot = usize::try_from(spread).unwrap_or(0) % self.arbiters.len();
            CellActor::start_in_arbiter(&self.arbiters[slot], actor)
        };
        let entry = Shard {
            cell: shard,
            addr: addr.clone(),
            index,
            centre: cell_centre(shard),
            reach_chord: metres_to_chord(self.grid.shard_reach_m(shard)),
            parts: self
                .grid
                .shard_parts(shard)
                .into_iter()
                .map(|(centre, reach_m)| (UnitVec::from(centre), metres_to_chord(reach_m)))
                .collect(),
        };
        let mut next = ShardTable::clone(&current);
        if let Some(i) = dead {
            // A cell actor that died is replaced; its drivers place themselves in the new one.
            next.shards[i] = entry;
            self.table.store(next.into());
            tracing::error!(%shard, "cell actor was gone; started a new one");
            if let Some(resettle) = self.resettle.get() {
                resettle(shard);
            }
            return addr;
        }
        next.by_cell.insert(shard, next.shards.len());
        next.shards.push(entry);
        self.shard_count.set(next.shards.len() as f64);
        self.table.store(next.into());
        tracing::debug!(%shard, "cell actor started");
        addr
    }

    /// The engine is stopping its cell actors: do not start them again.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Starts again every cell actor that is gone (a query found one not answering).
    pub fn revive(&self) {
        if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let dead: Vec<CellIndex> = self
            .table
            .load()
            .shards
            .iter()
            .filter(|s| !s.addr.connected())
            .map(|s| s.cell)
            .collect();
        for cell in dead {
            self.shard(cell);
        }
    }

    /// The cell actors whose drivers may lie within `query`'s circle.
    ///
    /// Scans the shard list: a city holds tens of shards, so a linear pass of one chord
    /// computation each costs less than walking H3 rings; an instance owns a bounded set of
    /// regions (see docs/DESIGN.md), which bounds the list.
    #[must_use]
    pub fn candidates(&self, query: &NearbyQuery) -> Vec<Addr<CellActor>> {
        let q = UnitVec::from(query.point);
        let radius = metres_to_chord(query.radius_m);
        self.table
            .load()
            .shards
            .iter()
            .filter(|s| s.reaches(q, radius))
            .map(|s| s.addr.clone())
            .collect()
    }

    /// The driver's entry as its shard holds it now, looked up where it was last seen; `None`
    /// if it left the index or moved to another shard since.
    #[must_use]
    pub fn current(&self, driver_id: Uuid, seen_at: LatLng) -> Option<IndexedDriver> {
        let shard = self.grid.shard_of(self.grid.cell_of(seen_at));
        let table = self.table.load();
        let &i = table.by_cell.get(&shard)?;
        table.shards[i].index.read().get(driver_id).copied()
    }

    /// Available drivers with a fresh position inside the H3 cell `area`, across the shards that
    /// hold part of it (shards that do not exist hold nobody and are not started).
    #[must_use]
    pub fn count_available(&self, area: CellIndex, fresh_since_ms: i64) -> u32 {
        let shard_res = self.grid.shard_res();
        let table = self.table.load();
        let count = |s: CellIndex| {
            table.by_cell.get(&s).map_or(0, |&i| {
                table.shards[i]
                    .index
                    .read()
                    .count_available(area, fresh_since_ms)
            })
        };
        if area.resolution() >= shard_res {
            area.parent(shard_res).map_or(0, count)
        } else {
            area.children(shard_res)
                .map(count)
                .fold(0_u32, u32::saturating_add)
        }
    }

    /// Available, fresh drivers per H3 cell at `res` across every shard.
    #[must_use]
    pub fn heat(&self, res: h3o::Resolution, fresh_since_ms: i64) -> FxHashMap<CellIndex, u32> {
        let mut total = FxHashMap::default();
        for shard in &self.table.load().shards {
            for (cell, n) in shard.index.read().available_by_cell(res, fresh_since_ms) {
                *total.entry(cell).or_insert(0u32) += n;
            }
        }
        total
    }

    /// Waits until every cell actor has applied every message sent to it before this call (a
    /// barrier: reads do not wait for writes in flight, so whoever needs a write it caused to be
    /// visible waits here).
    pub async fn settled(&self) {
        let addrs: Vec<Addr<CellActor>> = self.shards().into_iter().map(|s| s.addr).collect();
        futures_util::future::join_all(addrs.iter().map(|a| a.send(super::cell::Count))).await;
    }

    /// The nearest drivers matching `query` across every shard it reaches, nearest first.
    ///
    /// Reads each shard's index on the calling thread, with this thread's working space. A
    /// shard whose cell actor is gone is read as it was left and started again (its drivers then
    /// place themselves anew).
    #[must_use]
    pub fn nearby(&self, query: NearbyQuery) -> Vec<NearbyHit> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
        }
        let started = Instant::now();
        let q = UnitVec::from(query.point);
        let radius = metres_to_chord(query.radius_m);
        let origin = self.grid.cell_of(query.point);
        let table = self.table.load();
        let mut all: Vec<NearbyHit> = Vec::new();
        let (mut read, mut dead) = (0_usize, false);
        // Nearest shards first; once `limit` drivers are found, a shard that cannot hold anyone
        // nearer than the farthest of them is skipped, and the rest are searched within that
        // distance only. A query well inside one shard reads that shard alone.
        let mut reached: Vec<(f64, &Shard)> = table
            .shards
            .iter()
            .filter(|s| s.reaches(q, radius))
            .map(|s| (q.chord(s.centre) - s.reach_chord, s))
            .collect();
        reached.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut narrowed = query;
        SCRATCH.with_borrow_mut(|scratch| {
            for (_, shard) in reached {
                if read > 0 && !shard.reaches(q, metres_to_chord(narrowed.radius_m)) {
                    continue;
                }
                dead |= !shard.addr.connected();
                let inside = origin.parent(shard.cell.resolution()) == Some(shard.cell);
                let hits = guarded("cell", || {
                    shard
                        .index
                        .read()
                        .search(&narrowed, inside.then_some(origin), scratch)
                });
                all.extend(hits.unwrap_or_default());
                read += 1;
                if read > 1 {
                    all = merge(std::mem::take(&mut all), query.limit);
                }
                if all.len() >= query.limit
                    && let Some(farthest) = all.last()
                {
                    narrowed.radius_m = farthest.distance_m.min(query.radius_m);
                }
            }
        });
        drop(table);
        if dead {
            self.revive();
        }
        let hits = if read > 1 {
            merge(all, query.limit)
        } else {
            all
        };
        self.latency.record(started.elapsed().as_secs_f64());
        hits
    }
}

/// Merges per-shard answers: nearest first, one entry per driver (a driver crossing a shard
/// boundary can briefly sit in both), at most `limit`.
fn merge(mut all: Vec<NearbyHit>, limit: usize) -> Vec<NearbyHit> {
    all.sort_unstable_by(|a, b| a.distance_m.total_cmp(&b.distance_m));
    let mut kept: Vec<NearbyHit> = Vec::with_capacity(limit);
    for hit in all {
        if kept.len() == limit {
            break;
        }
        // `kept` holds at most `limit` (≤ 100) hits, so a linear check beats hashing.
        if !kept
            .iter()
            .any(|k| k.driver.driver_id == hit.driver.driver_id)
        {
            kept.push(hit);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::cell::{Count, Upsert};
    use crate::geo::{IndexedDriver, LatLng};
    use h3o::Resolution;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use uuid::Uuid;

    /// A fleet spread over many shards, queried through the cell actors, answers exactly what
    /// brute force does — including circles that straddle shard boundaries.
    #[actix::test]
    async fn sharded_nearby_equals_brute_force() {
        let grid = Grid::new(Resolution::Nine, Resolution::Six).unwrap();
        let arbiters = vec![Arbiter::new(), Arbiter::new()];
        let map = ShardMap::new(
            grid,
            arbiters.iter().map(Arbiter::handle).collect(),
            Duration::from_secs(600),
        );
        let mut rng = StdRng::seed_from_u64(9);
        let now = crate::clock::now_ms();
        let fleet: Vec<IndexedDriver> = (0..5_000)
            .map(|i| IndexedDriver {
                driver_id: Uuid::from_u128(i + 1),
                position: LatLng::new(
                    59.9 + rng.random_range(-0.15..0.15),
                    10.75 + rng.random_range(-0.3..0.3),
                )
                .unwrap(),
                heading: None,
                vehicle: 0,
                available: true,
                seen_ms: now,
            })
            .collect();
        for d in &fleet {
            map.shard(grid.shard_of(grid.cell_of(d.position)))
                .do_send(Upsert(*d));
        }
        let mut held = 0;
        for shard in map.shards() {
            held += shard.addr.send(Count).await.unwrap();
        }
        assert_eq!(held, fleet.len());
        assert!(map.shards().len() > 4, "the fleet spans several shards");
        for i in 0..200 {
            let q = NearbyQuery {
                point: LatLng::new(
                    59.9 + rng.random_range(-0.2..0.2),
                    10.75 + rng.random_range(-0.4..0.4),
                )
                .unwrap(),
                radius_m: rng.random_range(100.0..20_000.0),
                limit: rng.random_range(1..=20),
                vehicle: None,
                fresh_since_ms: 0,
            };
            let got = map.nearby(q);
            let mut want: Vec<(Uuid, f64)> = fleet
                .iter()
                .map(|d| (d.driver_id, d.position.distance_m(q.point)))
                .filter(|x| x.1 <= q.radius_m)
                .collect();
            want.sort_by(|a, b| a.1.total_cmp(&b.1));
            want.truncate(q.limit);
            let got: Vec<(Uuid, f64)> = got
                .iter()
                .map(|h| (h.driver.driver_id, h.distance_m))
                .collect();
            assert_eq!(got.len(), want.len(), "query {i}: {q:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.1 - w.1).abs() < 1e-6 && g.0 == w.0,
                    "query {i}: {g:?} vs {w:?}"
                );
            }
        }
        for a in arbiters {
            a.stop();
        }
    }

    #[test]
    fn merge_keeps_the_nearest_copy_of_each_driver() {
        let hit = |n: u128, d: f64| NearbyHit {
            driver: IndexedDriver {
                driver_id: Uuid::from_u128(n),
                position: LatLng::new(0.0, 0.0).unwrap(),
                heading: None,
                vehicle: 0,
                available: true,
                seen_ms: 0,
            },
            distance_m: d,
        };
        let merged = merge(vec![hit(1, 5.0), hit(2, 1.0), hit(1, 3.0), hit(3, 9.0)], 2);
        let got: Vec<(u128, f64)> = merged
            .iter()
            .map(|h| (h.driver.driver_id.as_u128(), h.distance_m))
            .collect();
        assert_eq!(got, vec![(2, 1.0), (1, 3.0)]);
    }
}
