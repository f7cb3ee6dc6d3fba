//! Driver id → driver actor. A driver has at most one actor; sessions and REST calls find it here,
//! and a stopping actor removes itself (only itself: a successor may already be registered).

use std::sync::Arc;

use actix::Addr;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use uuid::Uuid;

use super::driver::DriverActor;

/// The live driver actors.
#[derive(Clone, Default)]
pub struct DriverRegistry {
    actors: Arc<DashMap<Uuid, Addr<DriverActor>>>,
}

impl DriverRegistry {
    /// The driver's live actor.
    #[must_use]
    pub fn get(&self, driver_id: Uuid) -> Option<Addr<DriverActor>> {
        self.actors
            .get(&driver_id)
            .map(|a| a.clone())
            .filter(Addr::connected)
    }

    /// The driver's actor, started by `start` when there is none (or the old one has stopped).
    pub fn get_or_start(
        &self,
        driver_id: Uuid,
        start: impl FnOnce() -> Addr<DriverActor>,
    ) -> Addr<DriverActor> {
        match self.actors.entry(driver_id) {
            Entry::Occupied(mut e) => {
                if e.get().connected() {
                    e.get().clone()
                } else {
                    let addr = start();
                    e.insert(addr.clone());
                    addr
                }
            }
            Entry::Vacant(e) => e.insert(start()).clone(),
        }
    }

    /// Forgets the driver's actor if it is still `addr`.
    pub fn remove(&self, driver_id: Uuid, addr: &Addr<DriverActor>) {
        self.actors
            .remove_if(&driver_id, |_, current| current == addr);
    }

    /// Live actors.
    #[must_use]
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// Whether no actor is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}
