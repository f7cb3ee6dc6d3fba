//! `CellActor`: owns the spatial index of one shard (an H3 cell at `geo.shard_resolution`).
//!
//! Driver actors send it `Upsert`, `Remove` and `SetAvailable` for their own entry only, so the
//! index never sees two writers for one driver, and the cell actor is its only writer. Readers
//! (nearby queries, matching, surge and heatmaps) read the index where they run, through the
//! shared [`IndexView`] under a read lock, without a hop to the cell's thread: a query costs
//! its own work and nothing else. Every `location.ttl_s / 4` the actor evicts drivers whose
//! position went stale (queries also filter by freshness, so eviction timing never leaks stale
//! positions). It lives on one of the cell arbiters for the life of the engine.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use actix::prelude::*;
use h3o::{CellIndex, Resolution};
use metrics::{Counter, counter};
use uuid::Uuid;

use super::supervision::guarded;
use crate::clock::now_ms;
use crate::geo::{IndexedDriver, SpatialIndex, Upserted};
use crate::metrics::{INDEX_EVICTIONS, INDEX_UPSERTS};

/// Messages a cell actor may have queued. Location upserts arrive with `try_send` and are
/// dropped (and counted) past this; control messages are always delivered.
pub const CELL_MAILBOX: usize = 65_536;

/// Insert or update one driver's entry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Upsert(pub IndexedDriver);

/// Remove one driver's entry (it went offline or moved to another shard).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remove {
    /// The driver.
    pub driver_id: Uuid,
}

/// Mark one driver available for offers, or not.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetAvailable {
    /// The driver.
    pub driver_id: Uuid,
    /// Whether it may receive an offer.
    pub available: bool,
}

/// How many drivers this shard holds. Also a barrier: it answers after every earlier message.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

/// Counters of this shard; like `Count`, it answers after every earlier message.
#[derive(Message)]
#[rtype(result = "CellStats")]
pub struct Stats;

/// What [`Stats`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellStats {
    /// Drivers held.
    pub drivers: usize,
    /// Upserts applied since the actor started.
    pub upserts: u64,
}

/// A shard's index as its readers see it: written only by its cell actor.
#[derive(Clone)]
pub struct IndexView(Arc<RwLock<SpatialIndex>>);

impl IndexView {
    /// An empty index at `res`.
    #[must_use]
    pub fn new(res: Resolution) -> Self {
        Self(Arc::new(RwLock::new(SpatialIndex::new(res))))
    }

    /// Reads the index. A writer that panicked left it as it was (the cell actor rebuilds it),
    /// so a poisoned lock is read all the same.
    pub fn read(&self) -> RwLockReadGuard<'_, SpatialIndex> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, SpatialIndex> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The index of one shard.
pub struct CellActor {
    shard: CellIndex,
    index: IndexView,
    index_res: Resolution,
    /// Asks the shard's drivers to place themselves again (after a rebuild).
    resettle: Option<Resettle>,
    /// Positions older than this are evicted.
    ttl_ms: i64,
    upserts: Counter,
    applied: u64,
}

/// Asks every driver placed in a shard to place itself again.
pub type Resettle = std::sync::Arc<dyn Fn(CellIndex) + Send + Sync>;

impl CellActor {
    /// A cell actor for `shard`, indexing at `index_res`, evicting positions older than `ttl`.
    #[must_use]
    pub fn new(shard: CellIndex, index_res: Resolution, ttl: Duration) -> Self {
        Self::over(IndexView::new(index_res), shard, index_res, ttl)
    }

    /// A cell actor writing `index`, which its readers already hold.
    #[must_use]
    pub fn over(index: IndexView, shard: CellIndex, index_res: Resolution, ttl: Duration) -> Self {
        Self {
            shard,
            index,
            index_res,
            resettle: None,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            upserts: counter!(INDEX_UPSERTS),
            applied: 0,
        }
    }

    /// Rebuilds from the drivers themselves after `resettle` asks them to place themselves again.
    #[must_use]
    pub fn with_resettle(mut self, resettle: Option<Resettle>) -> Self {
        self.resettle = resettle;
        self
    }

    /// A handler panicked: the index may be half-changed. Start it empty and have the shard's
    /// drivers place themselves again.
    fn rebuild(&mut self) {
        *self.index.write() = SpatialIndex::new(self.index_res);
        self.index.0.clear_poison();
        if let Some(resettle) = &self.resettle {
            resettle(self.shard);
        }
    }

    fn sweep_every(&self) -> Duration {
        Duration::from_millis(
            u64::try_from(self.ttl_ms / 4)
                .unwrap_or(1)
                .clamp(50, 30_000),
        )
    }
}

impl Actor for CellActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(CELL_MAILBOX);
        ctx.run_interval(self.sweep_every(), |actor, _| {
            let evicted = actor
                .index
                .write()
                .evict_stale(now_ms().saturating_sub(actor.ttl_ms));
            if !evicted.is_empty() {
                counter!(INDEX_EVICTIONS).increment(evicted.len() as u64);
                tracing::debug!(shard = %actor.shard, evicted = evicted.len(), "evicted stale drivers");
            }
        });
    }
}

impl Handler<Upsert> for CellActor {
    type Result = ();

    fn handle(&mut self, msg: Upsert, _: &mut Self::Context) {
        if guarded("cell", || {
            let _: Upserted = self.index.write().upsert(msg.0);
        })
        .is_none()
        {
            self.rebuild();
        }
        self.upserts.increment(1);
        self.applied += 1;
    }
}

impl Handler<Remove> for CellActor {
    type Result = ();

    fn handle(&mut self, msg: Remove, _: &mut Self::Context) {
        if guarded("cell", || self.index.write().remove(msg.driver_id)).is_none() {
            self.rebuild();
        }
    }
}

impl Handler<SetAvailable> for CellActor {
    type Result = ();

    fn handle(&mut self, msg: SetAvailable, _: &mut Self::Context) {
        if guarded("cell", || {
            self.index
                .write()
                .set_available(msg.driver_id, msg.available)
        })
        .is_none()
        {
            self.rebuild();
        }
    }
}

#[cfg(test)]
impl Handler<super::supervision::Crash> for CellActor {
    type Result = ();

    fn handle(&mut self, _: super::supervision::Crash, _: &mut Self::Context) {
        if guarded("cell", || panic!("injected")).is_none() {
            self.rebuild();
        }
    }
}

impl Handler<Count> for CellActor {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.index.read().len()
    }
}

impl Handler<Stats> for CellActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Self::Context) -> Self::Result {
        MessageResult(CellStats {
            drivers: self.index.read().len(),
            upserts: self.applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{LatLng, NearbyQuery};

    fn driver(n: u128, lat: f64, lng: f64, seen_ms: i64) -> IndexedDriver {
        IndexedDriver {
            driver_id: Uuid::from_u128(n),
            position: LatLng::new(lat, lng).unwrap(),
            heading: Some(90.0),
            vehicle: 0,
            available: true,
            seen_ms,
        }
    }

    #[actix::test]
    async fn applies_updates_in_order_and_answers_queries() {
        let p = LatLng::new(40.0, -3.7).unwrap();
        let shard = p.to_h3().to_cell(Resolution::Six);
        let index = IndexView::new(Resolution::Nine);
        let cell = CellActor::over(
            index.clone(),
            shard,
            Resolution::Nine,
            Duration::from_secs(60),
        )
        .start();
        let now = now_ms();
        cell.do_send(Upsert(driver(1, 40.0, -3.7, now)));
        cell.do_send(Upsert(driver(2, 40.001, -3.7, now)));
        cell.do_send(SetAvailable {
            driver_id: Uuid::from_u128(1),
            available: false,
        });
        let q = NearbyQuery {
            point: p,
            radius_m: 1_000.0,
            limit: 5,
            vehicle: None,
            fresh_since_ms: 0,
        };
        // Reads see what the actor has applied: wait for it, then read as the shard map does.
        assert_eq!(cell.send(Count).await.unwrap(), 2);
        let hits = index
            .read()
            .search(&q, None, &mut crate::geo::Scratch::default());
        assert_eq!(
            hits.iter().map(|h| h.driver.driver_id).collect::<Vec<_>>(),
            vec![Uuid::from_u128(2)]
        );
        cell.do_send(Remove {
            driver_id: Uuid::from_u128(2),
        });
        assert_eq!(cell.send(Count).await.unwrap(), 1);
    }

    #[actix::test]
    async fn stale_positions_are_evicted_by_the_sweep() {
        let shard = LatLng::new(40.0, -3.7)
            .unwrap()
            .to_h3()
            .to_cell(Resolution::Six);
        let cell = CellActor::new(shard, Resolution::Nine, Duration::from_millis(200)).start();
        cell.do_send(Upsert(driver(1, 40.0, -3.7, now_ms())));
        assert_eq!(cell.send(Count).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(cell.send(Count).await.unwrap(), 0);
    }
}
