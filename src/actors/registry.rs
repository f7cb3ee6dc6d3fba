//! Id → actor. A driver (or trip) has at most one actor; sessions, REST calls and other actors find
//! it here, and a stopping actor removes itself (only itself: a successor may already be registered).

use std::sync::Arc;

use actix::{Actor, Addr};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use uuid::Uuid;

use super::driver::DriverActor;
use super::trip::TripActor;

/// Live actors of one kind by id.
pub struct Registry<A: Actor> {
    actors: Arc<DashMap<Uuid, Addr<A>>>,
}

/// The live driver actors.
pub type DriverRegistry = Registry<DriverActor>;
/// The live trip actors (one per trip that is not finished).
pub type TripRegistry = Registry<TripActor>;

impl<A: Actor> Default for Registry<A> {
    fn default() -> Self {
        Self {
            actors: Arc::default(),
        }
    }
}

impl<A: Actor> Clone for Registry<A> {
    fn clone(&self) -> Self {
        Self {
            actors: Arc::clone(&self.actors),
        }
    }
}

impl<A: Actor> Registry<A> {
    /// The live actor for `id`.
    #[must_use]
    pub fn get(&self, id: Uuid) -> Option<Addr<A>> {
        self.actors
            .get(&id)
            .map(|a| a.clone())
            .filter(Addr::connected)
    }

    /// The actor for `id`, started by `start` when there is none (or the old one has stopped).
    pub fn get_or_start(&self, id: Uuid, start: impl FnOnce() -> Addr<A>) -> Addr<A> {
        match self.actors.entry(id) {
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

    /// Registers `addr` for `id`, replacing a stopped actor.
    pub fn insert(&self, id: Uuid, addr: Addr<A>) {
        self.actors.insert(id, addr);
    }

    /// Forgets the actor for `id` if it is still `addr`.
    pub fn remove(&self, id: Uuid, addr: &Addr<A>) {
        self.actors.remove_if(&id, |_, current| current == addr);
    }

    /// Every registered actor that still runs.
    #[must_use]
    pub fn all(&self) -> Vec<Addr<A>> {
        self.actors
            .iter()
            .map(|a| a.value().clone())
            .filter(Addr::connected)
            .collect()
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
