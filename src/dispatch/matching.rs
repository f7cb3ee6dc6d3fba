//! The matching policy as data, and the bookkeeping of one trip's search.
//!
//! A search walks the radius steps. In each step it keeps up to a batch of live offers to distinct,
//! untried, available drivers within the step's radius; a step ends when it holds no live offer,
//! nobody untried is within reach, and at least one offer timeout has passed since it began. The
//! trip actor asks the index for candidates and the drivers for their answers; [`Search`] only
//! remembers who was offered what, so the rules can be tested without actors.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use uuid::Uuid;

/// How a trip offers itself (SPEC §6 rules 4 and 5): `broadcast` offers a batch at once,
/// `sequential` one driver at a time, `batched` first pairs the requests of a window with the
/// drivers in reach of them optimally ([`crate::dispatch::batch`]) and offers each trip its
/// driver, then goes on as `broadcast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchingMode {
    /// Offer a batch of drivers at once.
    #[default]
    Broadcast,
    /// Offer one driver at a time.
    Sequential,
    /// Pair the requests of a window jointly for their first offer (SPEC §6 rule 5).
    Batched,
}

/// Radius steps, batch size and offer life.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchingPolicy {
    /// Search radius per step, metres, increasing.
    pub radius_steps_m: Vec<f64>,
    /// Live offers per step in broadcast mode.
    pub batch_size: usize,
    /// Broadcast or sequential.
    pub mode: MatchingMode,
    /// Life of an offer, and the least time a step lasts, ms.
    pub offer_timeout_ms: i64,
}

impl MatchingPolicy {
    /// Live offers a trip keeps at once: the batch size, or 1 in sequential mode.
    #[must_use]
    pub fn batch(&self) -> usize {
        match self.mode {
            MatchingMode::Broadcast | MatchingMode::Batched => self.batch_size.max(1),
            MatchingMode::Sequential => 1,
        }
    }

    /// The radius of step `step`, if there is such a step.
    #[must_use]
    pub fn radius_m(&self, step: usize) -> Option<f64> {
        self.radius_steps_m.get(step).copied()
    }

    /// The widest radius.
    #[must_use]
    pub fn max_radius_m(&self) -> f64 {
        self.radius_steps_m.last().copied().unwrap_or(0.0)
    }
}

/// Who a searching trip offered, and what came of it.
#[derive(Debug, Default, Clone)]
pub struct Search {
    /// Current step.
    pub step: usize,
    /// When the current step began, epoch ms.
    pub step_started_ms: i64,
    /// Offered at least once in this search; never offered again.
    tried: FxHashSet<Uuid>,
    /// Delivered offers still open, and when each expires.
    live: FxHashMap<Uuid, i64>,
    /// Offers sent whose delivery is not confirmed yet.
    pending: FxHashSet<Uuid>,
    /// Drivers that turned out busy; skipped until they say they are free.
    busy: FxHashSet<Uuid>,
}

impl Search {
    /// A search starting its first step at `now_ms`.
    #[must_use]
    pub fn new(now_ms: i64) -> Self {
        Self {
            step_started_ms: now_ms,
            ..Self::default()
        }
    }

    /// A search resuming at step `step` (a trip read back after a restart).
    #[must_use]
    pub fn at_step(step: usize, now_ms: i64) -> Self {
        Self {
            step,
            ..Self::new(now_ms)
        }
    }

    /// How many more offers the trip may send now.
    #[must_use]
    pub fn room(&self, policy: &MatchingPolicy) -> usize {
        policy
            .batch()
            .saturating_sub(self.live.len() + self.pending.len())
    }

    /// Drivers a candidate query must skip.
    #[must_use]
    pub fn skip(&self) -> FxHashSet<Uuid> {
        self.tried.union(&self.busy).copied().collect()
    }

    /// Whether `driver` may be offered now (untried, not known busy).
    #[must_use]
    pub fn may_offer(&self, driver: Uuid) -> bool {
        !self.tried.contains(&driver) && !self.busy.contains(&driver)
    }

    /// Never offers `driver` in this search (it gave the trip up before).
    pub fn exclude(&mut self, driver: Uuid) {
        self.tried.insert(driver);
    }

    /// An offer to `driver` is on its way.
    pub fn sending(&mut self, driver: Uuid) {
        self.tried.insert(driver);
        self.pending.insert(driver);
    }

    /// The driver holds the offer until `expires_ms`. False if the offer was closed meanwhile
    /// (declined before its delivery was confirmed, or withdrawn).
    pub fn delivered(&mut self, driver: Uuid, expires_ms: i64) -> bool {
        let pending = self.pending.remove(&driver);
        if pending {
            self.live.insert(driver, expires_ms);
        }
        pending
    }

    /// When the delivered offer to `driver` expires, epoch ms.
    #[must_use]
    pub fn expiry(&self, driver: Uuid) -> Option<i64> {
        self.live.get(&driver).copied()
    }

    /// Whether `driver` holds a delivered offer.
    #[must_use]
    pub fn is_live(&self, driver: Uuid) -> bool {
        self.live.contains_key(&driver)
    }

    /// The driver could not take the offer (another offer or a trip): not tried, just busy.
    pub fn refused(&mut self, driver: Uuid) {
        self.pending.remove(&driver);
        self.tried.remove(&driver);
        self.busy.insert(driver);
    }

    /// The driver's offer ended (declined, expired, withdrawn). Returns whether it was open.
    pub fn closed(&mut self, driver: Uuid) -> bool {
        self.pending.remove(&driver) | self.live.remove(&driver).is_some()
    }

    /// Whether `driver` holds an open (or in-flight) offer.
    #[must_use]
    pub fn is_open(&self, driver: Uuid) -> bool {
        self.live.contains_key(&driver) || self.pending.contains(&driver)
    }

    /// The driver says it is free again: it may be offered if untried.
    pub fn freed(&mut self, driver: Uuid) {
        self.busy.remove(&driver);
    }

    /// Drivers holding open offers (delivered or in flight).
    pub fn open_offers(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.live.keys().chain(self.pending.iter()).copied()
    }

    /// Whether the step is over given that no untried driver is in reach: nothing open, and
    /// (`waited`) one offer timeout has passed since it began.
    #[must_use]
    pub fn step_over(&self, waited: bool) -> bool {
        waited && self.live.is_empty() && self.pending.is_empty()
    }

    /// Moves to the next step at `now_ms`; drivers tried so far stay tried.
    pub fn advance(&mut self, now_ms: i64) {
        self.step += 1;
        self.step_started_ms = now_ms;
        self.busy.clear();
    }

    /// Starts over from the first step (after the assigned driver cancelled).
    pub fn restart(&mut self, now_ms: i64) {
        *self = Self::new(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: MatchingMode) -> MatchingPolicy {
        MatchingPolicy {
            radius_steps_m: vec![2_000.0, 5_000.0],
            batch_size: 5,
            mode,
            offer_timeout_ms: 15_000,
        }
    }

    #[test]
    fn broadcast_keeps_a_batch_and_sequential_one() {
        let p = policy(MatchingMode::Broadcast);
        let mut s = Search::new(0);
        assert_eq!(s.room(&p), 5);
        let drivers: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for &d in &drivers {
            s.sending(d);
        }
        assert_eq!(s.room(&p), 0);
        s.delivered(drivers[0], 15_000);
        s.refused(drivers[1]);
        assert_eq!(s.room(&p), 1, "a busy driver frees its slot");
        assert!(!s.may_offer(drivers[1]), "busy drivers are skipped");
        s.freed(drivers[1]);
        assert!(s.may_offer(drivers[1]), "until they are free again");
        assert!(s.closed(drivers[0]));
        assert!(
            !s.may_offer(drivers[0]),
            "a declined driver is never offered again"
        );
        assert_eq!(policy(MatchingMode::Sequential).batch(), 1);
    }

    #[test]
    fn a_step_lasts_at_least_one_offer_timeout_and_until_no_offer_is_open() {
        let p = policy(MatchingMode::Broadcast);
        let mut s = Search::new(1_000);
        assert!(!s.step_over(false), "not before one offer timeout");
        assert!(s.step_over(true));
        let d = Uuid::now_v7();
        s.sending(d);
        assert!(!s.step_over(true), "an offer in flight keeps the step open");
        assert!(s.delivered(d, 35_000));
        assert!(!s.step_over(true));
        s.closed(d);
        assert!(!s.delivered(d, 35_000), "a closed offer is not revived");
        assert!(s.step_over(true));
        s.advance(20_000);
        assert_eq!(s.step, 1);
        assert_eq!(p.radius_m(s.step), Some(5_000.0));
        assert!(!s.may_offer(d), "tried drivers stay tried in wider steps");
        assert_eq!(p.radius_m(2), None);
    }
}
