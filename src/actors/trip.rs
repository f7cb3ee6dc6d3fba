//! `TripActor`: one per trip that is not finished (REQUESTED … TRIP_STARTED).
//!
//! It owns the trip's state and is its only writer: every change is a command run through the
//! pure state machine ([`crate::dispatch::decide`]), whose events are appended to the trip's log in
//! the store and then announced to the rider's sockets and the driver.
//!
//! While MATCHING it runs the search of SPEC §6: it asks the cell actors for the nearest available
//! drivers of its vehicle type within the current step's radius, skipping drivers already tried,
//! and offers each through its driver actor (which refuses if the driver holds another offer or a
//! trip: that is where "one offer, one trip per driver" is enforced). Offers expire after
//! `matching.offer_timeout_s`; a decline or an expiry frees a slot that is filled at once; a driver
//! who becomes available nearby finds the trip on the [`MatchingBoard`](super::board) and is
//! offered straight away. A step ends when nothing is open, nobody untried is in reach and one
//! offer timeout has passed; after the last step the trip ends in NO_DRIVER_FOUND. The first accept
//! wins; the other offers are withdrawn as `taken`.
//!
//! From ACCEPTED it follows its driver's positions (geofence arrival, the distance driven for the
//! final fare, `driver_location` to the rider at most once per `trip.rider_location_interval_ms`).
//! It stops when the trip is completed, cancelled or unmatched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use metrics::{counter, gauge, histogram};
use rustc_hash::FxHashMap;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::board::Posting;
use super::core::Core;
use super::driver::{DriverActor, Offer, OfferReply, TripNotice, Withdraw};
use super::protocol::{self, DriverSummary, OfferEnd, OfferTerms};
use super::supervision::guarded;
use crate::clock::now_ms;
use crate::dispatch::Position;
use crate::dispatch::{
    ArrivalSource, FareFlag, MatchingPolicy, OfferOutcome, Search, Trail, Trip, TripCommand,
    TripError, TripEvent, TripStatus, cap_fare, decide, price, to_u64,
};
use crate::geo::{NearbyQuery, VehicleId};
use crate::metrics::{
    FARES_CAPPED, OFFERS, TRIP_TIME_TO_ACCEPT, TRIP_TIME_TO_FIRST_OFFER, TRIP_TRANSITIONS,
    TRIPS_ACTIVE,
};

/// Messages a trip actor may have queued. Its driver's positions arrive with `try_send`, at the
/// driver's pace (one every few seconds), so this is slack for bursts, not a buffer for floods.
const TRIP_MAILBOX: usize = 1_024;

/// An available driver is near: offer it if the trip has room and has not tried it. Answers
/// whether an offer is on its way, so the driver asks the next trip only if not.
#[derive(Message, Clone)]
#[rtype(result = "bool")]
pub struct DriverFree {
    /// The driver.
    pub driver_id: Uuid,
    /// Where it is.
    pub position: crate::geo::LatLng,
    /// The instance holding the driver, when it is not this one (SPEC §11).
    pub held_by: Option<crate::geo::Peer>,
}

/// A driver accepts this trip's offer; the answer is the trip (won) or why not (lost).
#[derive(Message)]
#[rtype(result = "Result<Trip, OfferEnd>")]
pub struct Accepting {
    /// The driver.
    pub driver_id: Uuid,
    /// Its actor, which the trip notifies from now on.
    pub driver: Addr<DriverActor>,
    /// Its position, for the rider's ETA.
    pub position: Option<Position>,
    /// The HTTP request behind the accept, if any.
    pub request_id: Option<Arc<str>>,
    /// The sender's span (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
}

/// A driver declines this trip's offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Declining {
    /// The driver.
    pub driver_id: Uuid,
}

/// A position of the assigned driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DriverMoved {
    /// The driver.
    pub driver_id: Uuid,
    /// Its new position.
    pub position: Position,
}

/// What an assigned driver does to its trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverAction {
    /// At the pickup.
    Arrive,
    /// Rider on board, with the rider's PIN.
    Start(String),
    /// Rider dropped off.
    Complete,
    /// Give the trip up.
    Cancel,
}

/// Why a trip action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// The state machine refused it.
    #[error(transparent)]
    Trip(#[from] TripError),
    /// Too many wrong PINs; try again later.
    #[error("too many wrong PINs; try again in {retry_after_s} s")]
    PinLocked {
        /// Seconds until the next attempt is taken.
        retry_after_s: u64,
    },
    /// The trip failed while handling this and was rebuilt from its stored state; retry.
    #[error("the trip could not handle this just now; retry")]
    Failed,
}

/// An assigned driver acts on the trip.
#[derive(Message)]
#[rtype(result = "Result<Trip, ActError>")]
pub struct DriverAct {
    /// The driver.
    pub driver_id: Uuid,
    /// What it does.
    pub action: DriverAction,
    /// Whether it came over the driver's socket (the reply is then the driver's frame, so no
    /// separate `trip_update` is pushed to it).
    pub via_socket: bool,
    /// The HTTP request behind it, if any.
    pub request_id: Option<Arc<str>>,
    /// The sender's span (W3C `traceparent`), when traces are exported: the trip's handling
    /// continues that trace.
    pub traceparent: Option<String>,
}

/// The rider cancels.
#[derive(Message)]
#[rtype(result = "Result<Trip, ActError>")]
pub struct RiderCancel {
    /// The HTTP request behind it, if any.
    pub request_id: Option<Arc<str>>,
    /// The sender's span (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
}

/// The engine is stopping: stop now, leaving the trip as its events left it (it resumes from them
/// at the next start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Halt;

/// `batched` mode: the driver the window's pairing gives this trip (with its pickup distance,
/// metres), or none in reach. The trip offers itself to it first, then goes on as `broadcast`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FirstOffer {
    /// The driver and its distance to the pickup.
    pub driver: Option<(Uuid, f64)>,
}

/// One live trip.
pub struct TripActor {
    core: Core,
    trip: Trip,
    policy: Arc<MatchingPolicy>,
    /// Interned vehicle type, for index queries and the board.
    vehicle: VehicleId,
    /// The offer as drivers see it, shared by every offer of this trip.
    terms: Arc<OfferTerms>,
    search: Search,
    /// Set once the current step has lasted one offer timeout.
    step_waited: bool,
    step_timer: Option<SpawnHandle>,
    offer_timers: FxHashMap<Uuid, SpawnHandle>,
    /// The assigned driver's actor.
    driver: Option<Addr<DriverActor>>,
    /// The assigned driver's latest position.
    last_position: Option<Position>,
    /// The trail driven since TRIP_STARTED (plausible movement only).
    trail: Trail,
    last_rider_location_ms: i64,
    requested_at: Instant,
    first_offer_sent: bool,
    /// `batched` mode: waiting for the window's pairing before the first offer.
    awaiting_batch: bool,
    /// The HTTP request whose message is being handled, for the events it causes.
    request_id: Option<Arc<str>>,
    /// Fires once the latest committed events are in the store: an answer that tells a driver
    /// or rider what happened waits for it (up to `database.ack_timeout_s`).
    durable: Option<oneshot::Receiver<()>>,
    /// `database.ack_timeout_s`.
    ack_timeout: Duration,
    /// Drivers of other instances this search found, and the instance holding each (SPEC §11).
    remote: FxHashMap<Uuid, crate::geo::Peer>,
    /// A search of other instances' drivers is on its way.
    asking_peers: bool,
}

impl TripActor {
    /// An actor for a trip just opened (MATCHING).
    #[must_use]
    pub fn new(core: Core, trip: Trip, vehicle: VehicleId) -> Self {
        let terms = Arc::new(OfferTerms {
            trip_id: trip.trip_id,
            pickup: trip.origin,
            dropoff: trip.destination,
            fare_estimate: trip.quote.estimate.total,
            vehicle_type: trip.vehicle_type.clone(),
        });
        let core_ack_timeout_s = core.settings.database.ack_timeout_s;
        let mut search = Search::at_step(trip.step, now_ms());
        for &driver in &trip.excluded {
            search.exclude(driver);
        }
        Self {
            policy: Arc::clone(&core.policy),
            core,
            search,
            trip,
            vehicle,
            terms,
            step_waited: false,
            step_timer: None,
            offer_timers: FxHashMap::default(),
            driver: None,
            last_position: None,
            trail: Trail::default(),
            last_rider_location_ms: 0,
            requested_at: Instant::now(),
            first_offer_sent: false,
            awaiting_batch: false,
            request_id: None,
            durable: None,
            ack_timeout: Duration::from_secs_f64(core_ack_timeout_s),
            remote: FxHashMap::default(),
            asking_peers: false,
        }
    }

    /// A span for handling a message of this trip, a child of the sender's span when it sent one.
    fn span(&self, name: &'static str, parent: Option<&str>) -> tracing::Span {
        crate::telemetry::continuing(
            tracing::info_span!("trip", handling = name, trip_id = %self.trip.trip_id),
            parent,
        )
    }

    /// Runs `act` with the events it commits attributed to the HTTP request `request_id`.
    fn for_request<R>(
        &mut self,
        request_id: Option<Arc<str>>,
        act: impl FnOnce(&mut Self) -> R,
    ) -> R {
        self.request_id = request_id;
        let result = act(self);
        self.request_id = None;
        result
    }

    fn offer_timeout(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.policy.offer_timeout_ms).unwrap_or(0))
    }

    /// Runs a command through the state machine, stores and announces its events.
    fn commit(
        &mut self,
        ctx: &mut Context<Self>,
        command: &TripCommand,
        quiet_driver: bool,
    ) -> Result<(), TripError> {
        let now = now_ms();
        let events = decide(&self.trip, command, now)?;
        let records = self.trip.records(events, now);
        let mut changes = Vec::with_capacity(records.len());
        for record in &records {
            let before = self.trip.status;
            self.trip.apply(record);
            if self.trip.status != before {
                changes.push((before, self.trip.status, record.event.clone()));
            }
        }
        self.durable = self
            .core
            .save_trip_from(&self.trip, records, self.request_id.clone());
        for (before, after, event) in changes {
            self.announce(before, after, &event, quiet_driver);
        }
        if !self.trip.status.is_live() {
            self.finish(ctx);
        }
        Ok(())
    }

    /// Writes a note to the trip's log (an offer made or ended): stored behind, like every later
    /// event, so matching never waits for it.
    fn note(&mut self, event: TripEvent) {
        let records = self.trip.records(vec![event], now_ms());
        for record in &records {
            self.trip.apply(record);
        }
        let _ = self
            .core
            .save_trip_from(&self.trip, records, self.request_id.clone());
    }

    /// Tells the rider (and the driver, unless it caused the change over its socket) about a
    /// status change, and counts it.
    fn announce(
        &self,
        before: TripStatus,
        after: TripStatus,
        event: &TripEvent,
        quiet_driver: bool,
    ) {
        counter!(TRIP_TRANSITIONS, "status" => after.as_str()).increment(1);
        if before.is_live() {
            gauge!(TRIPS_ACTIVE, "status" => before.as_str()).decrement(1.0);
        }
        if after.is_live() {
            gauge!(TRIPS_ACTIVE, "status" => after.as_str()).increment(1.0);
        }
        let driver = self.trip.driver_id.map(|driver_id| DriverSummary {
            driver_id,
            vehicle_type: self.trip.vehicle_type.clone(),
            position: self.last_position.map(|p| p.point),
        });
        let eta_s = match (after, self.last_position) {
            (TripStatus::Accepted, Some(p)) => Some(
                self.core
                    .market
                    .model
                    .travel_time_s(p.point.distance_m(self.trip.origin)),
            ),
            _ => None,
        };
        let frame = protocol::rider_trip_update(
            &self.trip,
            after,
            driver.as_ref().filter(|_| after.has_driver()),
            eta_s,
        );
        self.core.riders.send(self.trip.rider_id, &frame);
        // The assigned driver hears of changes it did not cause; ACCEPTED reaches it as the
        // answer to its accept, and a driver cancel as the answer to its cancel.
        let to_driver = matches!(
            after,
            TripStatus::DriverArriving
                | TripStatus::TripStarted
                | TripStatus::TripCompleted
                | TripStatus::Cancelled
        ) && !matches!(event, TripEvent::DriverCancelled { .. });
        // After a restart the trip knows its driver's id but not yet its actor.
        // A driver actor that stopped and started again has a new address: find it by id.
        let addr = self.driver.clone().filter(Addr::connected).or_else(|| {
            self.trip
                .driver_id
                .and_then(|driver| self.core.drivers.get(driver))
        });
        if to_driver && let Some(addr) = addr {
            let release = !after.is_live();
            addr.do_send(TripNotice {
                trip_id: self.trip.trip_id,
                frame: (!quiet_driver)
                    .then(|| protocol::driver_trip_update(&self.trip, after).to_string()),
                release,
                reason: release.then(|| self.rejection()),
            });
        }
    }

    /// The trip is over for this actor: withdraw what is open, give back the promotion if the
    /// ride did not happen, and stop.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        let reason = match self.trip.status {
            TripStatus::Cancelled => OfferEnd::RiderCancelled,
            TripStatus::NoDriverFound => OfferEnd::Expired,
            _ => OfferEnd::Taken,
        };
        self.withdraw_all(reason, ctx);
        if matches!(
            self.trip.status,
            TripStatus::Cancelled | TripStatus::NoDriverFound
        ) && let Some(code) = &self.trip.promo_code
        {
            self.core.release_promo(code, self.trip.rider_id);
        }
        self.core.board.remove(self.trip.trip_id, self.trip.origin);
        ctx.stop();
    }

    fn withdraw_all(&mut self, reason: OfferEnd, ctx: &mut Context<Self>) {
        let open: Vec<Uuid> = self.search.open_offers().collect();
        for driver_id in open {
            self.search.closed(driver_id);
            self.withdraw(driver_id, reason, ctx);
        }
    }

    /// Drops the expiry timer of the offer to `driver_id`, so it cannot fire on a later offer.
    fn cancel_timer(&mut self, driver_id: Uuid, ctx: &mut Context<Self>) {
        if let Some(handle) = self.offer_timers.remove(&driver_id) {
            ctx.cancel_future(handle);
        }
    }

    fn withdraw(&mut self, driver_id: Uuid, reason: OfferEnd, ctx: &mut Context<Self>) {
        self.cancel_timer(driver_id, ctx);
        self.note(TripEvent::OfferEnded {
            driver_id,
            outcome: match reason {
                OfferEnd::Taken => OfferOutcome::Taken,
                OfferEnd::RiderCancelled => OfferOutcome::RiderCancelled,
                OfferEnd::Expired => OfferOutcome::Expired,
                OfferEnd::Declined => OfferOutcome::Declined,
            },
        });
        counter!(OFFERS, "outcome" => reason.as_str()).increment(1);
        self.send_withdraw(driver_id, reason);
    }

    /// Tells the driver (here, or on the instance holding it) that its offer ended.
    fn send_withdraw(&self, driver_id: Uuid, reason: OfferEnd) {
        let trip_id = self.trip.trip_id;
        if let Some(addr) = self.core.drivers.get(driver_id) {
            addr.do_send(Withdraw { trip_id, reason });
        } else if let (Some(peer), Some(token)) =
            (self.remote.get(&driver_id).cloned(), self.core.peer_token())
        {
            let body = super::peers::RemoteWithdraw {
                driver_id,
                trip_id,
                reason,
            };
            actix_rt::spawn(async move {
                let sent: Result<Option<serde_json::Value>, String> =
                    super::peers::call(&peer, "/api/cluster/withdrawals", &token, &body).await;
                if let Err(e) = sent {
                    tracing::warn!(%trip_id, peer = %peer.id, error = %e, "a withdrawal did not reach the driver's instance");
                }
            });
        }
    }

    fn post(&self, ctx: &Context<Self>) {
        self.core.board.post(Posting {
            trip_id: self.trip.trip_id,
            origin: self.trip.origin,
            radius_m: self.trip.radius_m,
            vehicle: self.vehicle,
            addr: ctx.address(),
        });
    }

    fn arm_step(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.step_timer.take() {
            ctx.cancel_future(handle);
        }
        self.step_waited = false;
        self.step_timer = Some(ctx.run_later(self.offer_timeout(), |actor, ctx| {
            actor.step_timer = None;
            actor.step_waited = true;
            actor.fill(ctx);
        }));
    }

    /// Offers the nearest untried available drivers until the batch is full; if nobody is in
    /// reach and the step is over, widens the search.
    fn fill(&mut self, ctx: &mut Context<Self>) {
        if self.trip.status != TripStatus::Matching || self.awaiting_batch {
            return;
        }
        let room = self.search.room(&self.policy);
        if room == 0 || self.asking_peers {
            return;
        }
        let peers = self.core.other_owners(self.trip.origin, self.trip.radius_m);
        if !peers.is_empty() && self.core.peer_token().is_some() {
            self.fill_across(peers, ctx);
            return;
        }
        let skip = self.search.skip();
        let query = NearbyQuery {
            point: self.trip.origin,
            radius_m: self.trip.radius_m,
            // Tried drivers may be among the nearest: ask for enough to fill the room anyway.
            limit: room + skip.len(),
            vehicle: Some(self.vehicle),
            fresh_since_ms: self.fresh_since_ms(),
        };
        let mut offered = 0;
        for hit in self.core.nearby(query) {
            if self.search.room(&self.policy) == 0 {
                break;
            }
            let id = hit.driver.driver_id;
            if self.search.may_offer(id) && self.offer(id, hit.distance_m, ctx) {
                offered += 1;
            }
        }
        if offered == 0 && self.search.step_over(self.step_waited) {
            self.advance(ctx);
        }
    }

    /// Positions received before this are stale.
    fn fresh_since_ms(&self) -> i64 {
        now_ms().saturating_sub(
            i64::try_from(self.core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX),
        )
    }

    /// `fill` for a circle reaching other instances' regions (SPEC §11): asks those instances
    /// for their nearest available drivers, then offers the nearest of theirs and ours, as rule 1
    /// does within one instance.
    fn fill_across(&mut self, peers: Vec<crate::geo::Peer>, ctx: &mut Context<Self>) {
        let Some(token) = self.core.peer_token() else {
            return;
        };
        self.asking_peers = true;
        let limit = self.search.room(&self.policy) + self.search.skip().len();
        let query = format!(
            "lat={}&lng={}&radius={}&limit={}&vehicle_type={}",
            self.trip.origin.lat(),
            self.trip.origin.lng(),
            self.trip.radius_m,
            limit.clamp(1, 100),
            self.trip.vehicle_type
        );
        let asks = peers.into_iter().map(move |peer| {
            let (token, query) = (token.clone(), query.clone());
            async move {
                match super::peers::nearby_there(&peer, &token, &query).await {
                    Ok(found) => found.into_iter().map(|(id, m)| (id, m, peer.clone())).collect(),
                    Err(e) => {
                        tracing::warn!(peer = %peer.id, error = %e, "a peer's drivers could not be read");
                        Vec::new()
                    }
                }
            }
        });
        let gather = futures_util::future::join_all(asks);
        ctx.spawn(
            gather
                .into_actor(self)
                .map(|answers: Vec<Vec<_>>, actor, ctx| {
                    actor.asking_peers = false;
                    if actor.trip.status != TripStatus::Matching || actor.awaiting_batch {
                        return;
                    }
                    let room = actor.search.room(&actor.policy);
                    let query = NearbyQuery {
                        point: actor.trip.origin,
                        radius_m: actor.trip.radius_m,
                        limit: room + actor.search.skip().len(),
                        vehicle: Some(actor.vehicle),
                        fresh_since_ms: actor.fresh_since_ms(),
                    };
                    let mut all: Vec<(f64, Uuid, Option<crate::geo::Peer>)> = actor
                        .core
                        .nearby(query)
                        .into_iter()
                        .map(|h| (h.distance_m, h.driver.driver_id, None))
                        .collect();
                    for (id, metres, peer) in answers.into_iter().flatten() {
                        if metres <= actor.trip.radius_m {
                            all.push((metres, id, Some(peer)));
                        }
                    }
                    all.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let mut offered = 0;
                    for (metres, id, peer) in all {
                        if actor.search.room(&actor.policy) == 0 {
                            break;
                        }
                        if !actor.search.may_offer(id) || actor.search.is_open(id) {
                            continue;
                        }
                        if let Some(peer) = peer {
                            actor.remote.insert(id, peer);
                        }
                        if actor.offer(id, metres, ctx) {
                            offered += 1;
                        }
                    }
                    if offered == 0 && actor.search.step_over(actor.step_waited) {
                        actor.advance(ctx);
                    }
                }),
        );
    }

    /// Sends one offer, to a driver here or on the instance holding it; false if the driver is
    /// nowhere to be reached.
    fn offer(&mut self, driver_id: Uuid, distance_m: f64, ctx: &mut Context<Self>) -> bool {
        let expires_ms = now_ms() + self.policy.offer_timeout_ms;
        let reply: std::pin::Pin<Box<dyn std::future::Future<Output = Result<OfferReply, ()>>>> =
            if let Some(addr) = self.core.drivers.get(driver_id) {
                let sent = addr.send(Offer {
                    terms: Arc::clone(&self.terms),
                    trip: super::driver::TripLink::Local(ctx.address()),
                    expires_ms,
                });
                Box::pin(async move { sent.await.map_err(|_| ()) })
            } else if let (Some(peer), Some(token)) =
                (self.remote.get(&driver_id).cloned(), self.core.peer_token())
            {
                let body = super::peers::RemoteOffer {
                    driver_id,
                    terms: (*self.terms).clone(),
                    expires_ms,
                    from: self.core.settings.instance_id().to_owned(),
                };
                Box::pin(async move {
                    use super::peers::RemoteOfferReply as R;
                    match super::peers::call::<_, R>(&peer, "/api/cluster/offers", &token, &body)
                        .await
                    {
                        Ok(Some(R::Delivered)) => Ok(OfferReply::Delivered),
                        Ok(Some(R::Busy)) => Ok(OfferReply::Busy),
                        Ok(Some(R::Unreachable)) => Ok(OfferReply::Unreachable),
                        Ok(None) | Err(_) => Err(()),
                    }
                })
            } else {
                return false;
            };
        self.search.sending(driver_id);
        let timeout = self.offer_timeout();
        reply
            .into_actor(self)
            .map(move |reply, actor, ctx| match reply {
                Ok(OfferReply::Delivered) => {
                    // It reached the driver, whatever happened to it since.
                    actor.note(TripEvent::OfferSent {
                        driver_id,
                        distance_m: to_u64(distance_m.round()),
                        expires_ms,
                    });
                    counter!(OFFERS, "outcome" => "sent").increment(1);
                    // Only a first offer made without waiting for a driver to appear or for
                    // a wider radius measures the dispatch path itself.
                    if !std::mem::replace(&mut actor.first_offer_sent, true)
                        && actor.search.step == 0
                        && !actor.step_waited
                    {
                        histogram!(TRIP_TIME_TO_FIRST_OFFER)
                            .record(actor.requested_at.elapsed().as_secs_f64());
                    }
                    if !actor.search.delivered(driver_id, expires_ms) {
                        // Closed while on its way (the trip was taken or ended): the driver holds it
                        // now, so withdraw it again, after the offer, where it cannot be overtaken.
                        let reason = actor.rejection();
                        actor.send_withdraw(driver_id, reason);
                    } else {
                        let timer = ctx.run_later(timeout, move |actor, ctx| {
                            actor.expire(driver_id, expires_ms, ctx);
                        });
                        actor.offer_timers.insert(driver_id, timer);
                    }
                }
                Ok(reply @ (OfferReply::Busy | OfferReply::Unreachable)) => {
                    if actor.search.is_open(driver_id) {
                        actor.search.refused(driver_id);
                        let (label, outcome) = if reply == OfferReply::Busy {
                            ("busy", OfferOutcome::Busy)
                        } else {
                            ("unreachable", OfferOutcome::Unreachable)
                        };
                        counter!(OFFERS, "outcome" => label).increment(1);
                        actor.note(TripEvent::OfferEnded { driver_id, outcome });
                    }
                    actor.fill(ctx);
                }
                Err(()) => {
                    if actor.search.is_open(driver_id) {
                        actor.search.refused(driver_id);
                        counter!(OFFERS, "outcome" => "busy").increment(1);
                    }
                    if actor.remote.contains_key(&driver_id) {
                        // The peer may have delivered it before its answer was lost: end it
                        // there.
                        actor.send_withdraw(driver_id, OfferEnd::Expired);
                    }
                    actor.fill(ctx);
                }
            })
            .spawn(ctx);
        true
    }

    /// The offer to `driver_id` that expires at `expires_ms` ran out (a later offer to the same
    /// driver has its own deadline and timer).
    fn expire(&mut self, driver_id: Uuid, expires_ms: i64, ctx: &mut Context<Self>) {
        if self.search.expiry(driver_id) == Some(expires_ms) {
            self.offer_timers.remove(&driver_id);
            self.search.closed(driver_id);
            self.withdraw(driver_id, OfferEnd::Expired, ctx);
            self.fill(ctx);
        }
    }

    fn advance(&mut self, ctx: &mut Context<Self>) {
        let next = self.search.step + 1;
        let result = match self.policy.radius_m(next) {
            Some(radius_m) => self
                .commit(
                    ctx,
                    &TripCommand::WidenSearch {
                        step: next,
                        radius_m,
                    },
                    false,
                )
                .map(|()| {
                    self.search.advance(now_ms());
                    self.post(ctx);
                    self.arm_step(ctx);
                    self.fill(ctx);
                }),
            None => self.commit(ctx, &TripCommand::GiveUp, false),
        };
        if let Err(e) = result {
            tracing::warn!(trip_id = %self.trip.trip_id, error = %e, "search could not advance");
        }
    }

    fn rejection(&self) -> OfferEnd {
        match self.trip.status {
            TripStatus::Cancelled => OfferEnd::RiderCancelled,
            TripStatus::Requested | TripStatus::Matching | TripStatus::NoDriverFound => {
                OfferEnd::Expired
            }
            _ => OfferEnd::Taken,
        }
    }

    fn final_fare(&self) -> crate::dispatch::FareBreakdown {
        let started = self.trip.started_ms.unwrap_or_else(now_ms);
        let seconds = u64::try_from((now_ms() - started) / 1_000).unwrap_or(0);
        match self
            .core
            .market
            .tariff(self.trip.origin, &self.trip.vehicle_type)
        {
            Ok((tariff, currency)) => price(
                &tariff,
                currency,
                to_u64(self.trail.driven_m().round()),
                seconds,
                self.trip.quote.surge,
                self.trip.quote.discount,
            ),
            // The tariff was removed from the configuration since the request: charge the quote.
            Err(_) => self.trip.quote.estimate,
        }
    }

    /// Records a position of the assigned driver; while the trip runs, it extends the trail
    /// (timed by the server's receive time, never the client's stamp).
    fn follow(&mut self, position: Position) {
        if self.trip.status == TripStatus::TripStarted {
            self.trail.push(position.point, position.received_ms);
        }
        self.last_position = Some(position);
    }

    /// A trip resumed after a restart that had already driven `driven_m`.
    #[must_use]
    pub fn with_driven_m(mut self, driven_m: f64) -> Self {
        self.trail = Trail::resumed(driven_m);
        self
    }

    /// Posts the trip on the board and makes its first offers (through the window's pairing in
    /// `batched` mode).
    fn begin_matching(&mut self, ctx: &mut Context<Self>) {
        self.post(ctx);
        self.arm_step(ctx);
        if let Some(batcher) = self.core.batcher()
            && self.trip.step == 0
            && !self.first_offer_sent
        {
            self.awaiting_batch = true;
            // Read here, on the trip's thread, as the requests arrive: the window's close
            // then only checks that these drivers are still free.
            let candidates = self.core.nearby(NearbyQuery {
                point: self.trip.origin,
                radius_m: self.trip.radius_m,
                limit: super::batcher::CANDIDATES_PER_TRIP,
                vehicle: Some(self.vehicle),
                fresh_since_ms: self.fresh_since_ms(),
            });
            batcher.do_send(super::batcher::Enlist {
                trip: ctx.address(),
                requested_ms: self
                    .trip
                    .status_times
                    .get(&TripStatus::Matching)
                    .copied()
                    .unwrap_or(self.trip.created_ms),
                origin: self.trip.origin,
                radius_m: self.trip.radius_m,
                candidates,
            });
        } else {
            self.fill(ctx);
        }
    }

    /// Booked ahead: waits for the dispatch time (at once if it passed while the engine was down).
    fn await_dispatch(&mut self, ctx: &mut Context<Self>) {
        let at = self.trip.schedule.map_or(0, |s| s.dispatch_at_ms);
        let wait_ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
        ctx.run_later(Duration::from_millis(wait_ms), |actor, ctx| {
            actor.dispatch(ctx);
        });
    }

    /// A SCHEDULED trip's dispatch time came: it enters MATCHING and counts as demand now. One
    /// whose pickup time passed more than `trip.schedule_expiry_s` ago (the engine was down) ends
    /// NO_DRIVER_FOUND instead: nobody waits for it any more.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let expiry_ms = i64::try_from(
            Duration::from_secs_f64(self.core.settings.trip.schedule_expiry_s).as_millis(),
        )
        .unwrap_or(i64::MAX);
        if self
            .trip
            .schedule
            .is_some_and(|s| now_ms().saturating_sub(s.pickup_at_ms) > expiry_ms)
        {
            tracing::warn!(trip_id = %self.trip.trip_id, "scheduled trip expired before it could be dispatched");
            if let Err(e) = self.commit(ctx, &TripCommand::GiveUp, false) {
                tracing::debug!(trip_id = %self.trip.trip_id, error = %e, "no expiry");
            }
            return;
        }
        let radius_m = self.policy.radius_m(0).unwrap_or(0.0);
        match self.commit(ctx, &TripCommand::Dispatch { radius_m }, false) {
            Ok(()) => {
                tracing::info!(trip_id = %self.trip.trip_id, "scheduled trip dispatched");
                self.core.market.record_demand(self.trip.origin, now_ms());
                self.requested_at = Instant::now();
                self.search = Search::at_step(0, now_ms());
                self.begin_matching(ctx);
            }
            // Cancelled meanwhile: nothing to do.
            Err(e) => tracing::debug!(trip_id = %self.trip.trip_id, error = %e, "no dispatch"),
        }
    }
}

impl Actor for TripActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(TRIP_MAILBOX);
        gauge!(TRIPS_ACTIVE, "status" => self.trip.status.as_str()).increment(1.0);
        match self.trip.status {
            TripStatus::Matching => self.begin_matching(ctx),
            TripStatus::Scheduled => self.await_dispatch(ctx),
            _ => {}
        }
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        if self.trip.status.is_live() {
            // Stopped from outside (engine shutdown): the trip stays as its events left it.
            gauge!(TRIPS_ACTIVE, "status" => self.trip.status.as_str()).decrement(1.0);
            self.withdraw_all(OfferEnd::Expired, ctx);
            self.core.board.remove(self.trip.trip_id, self.trip.origin);
        }
        self.core
            .trip_actors
            .remove(self.trip.trip_id, &ctx.address());
        Running::Stop
    }
}

impl TripActor {
    fn accepting(&mut self, msg: Accepting, ctx: &mut Context<Self>) -> Result<Trip, OfferEnd> {
        if self.trip.status != TripStatus::Matching || !self.search.is_open(msg.driver_id) {
            return Err(self.rejection());
        }
        self.search.closed(msg.driver_id);
        self.cancel_timer(msg.driver_id, ctx);
        self.driver = Some(msg.driver);
        self.last_position = msg.position;
        if let Err(e) = self.commit(
            ctx,
            &TripCommand::Assign {
                driver_id: msg.driver_id,
            },
            true,
        ) {
            tracing::warn!(trip_id = %self.trip.trip_id, error = %e, "accept refused");
            self.driver = None;
            return Err(OfferEnd::Expired);
        }
        counter!(OFFERS, "outcome" => "accepted").increment(1);
        self.note(TripEvent::OfferEnded {
            driver_id: msg.driver_id,
            outcome: OfferOutcome::Accepted,
        });
        histogram!(TRIP_TIME_TO_ACCEPT).record(self.requested_at.elapsed().as_secs_f64());
        self.withdraw_all(OfferEnd::Taken, ctx);
        if let Some(handle) = self.step_timer.take() {
            ctx.cancel_future(handle);
        }
        self.core.board.remove(self.trip.trip_id, self.trip.origin);
        Ok(self.trip.clone())
    }
}
impl TripActor {
    fn driver_act(&mut self, msg: DriverAct, ctx: &mut Context<Self>) -> Result<Trip, ActError> {
        let driver_id = msg.driver_id;
        let quiet = msg.via_socket;
        let result = match msg.action {
            DriverAction::Arrive => self
                .commit(
                    ctx,
                    &TripCommand::Arrive {
                        driver_id,
                        source: ArrivalSource::Driver,
                    },
                    quiet,
                )
                .map_err(ActError::from),
            DriverAction::Start(pin) => {
                let now = now_ms();
                let locked_until = self.trip.pin_locked_until_ms;
                if now < locked_until && self.trip.driver_id == Some(driver_id) {
                    let retry_after_s =
                        u64::try_from((locked_until - now + 999) / 1_000).unwrap_or(1);
                    return Err(ActError::PinLocked { retry_after_s });
                }
                match self.commit(ctx, &TripCommand::Start { driver_id, pin }, quiet) {
                    Err(TripError::InvalidPin) => {
                        // Counted in the trip's log, so a restart neither forgets the failures
                        // nor lifts a lock.
                        let failures = self.trip.pin_failures + 1;
                        let rejected = if failures >= self.core.settings.trip.max_pin_attempts {
                            let lock_ms = i64::try_from(
                                Duration::from_secs_f64(self.core.settings.trip.pin_lockout_s)
                                    .as_millis(),
                            )
                            .unwrap_or(i64::MAX);
                            TripEvent::PinRejected {
                                failures: 0,
                                locked_until_ms: Some(now.saturating_add(lock_ms)),
                            }
                        } else {
                            TripEvent::PinRejected {
                                failures,
                                locked_until_ms: None,
                            }
                        };
                        self.note(rejected);
                        Err(ActError::Trip(TripError::InvalidPin))
                    }
                    Err(e) => Err(e.into()),
                    Ok(()) => {
                        self.trail = Trail::default();
                        if let Some(p) = self.last_position {
                            self.trail.push(p.point, p.received_ms);
                        }
                        Ok(())
                    }
                }
            }
            DriverAction::Complete => {
                if self.trip.driver_id != Some(driver_id) {
                    Err(TripError::NotYourTrip.into())
                } else {
                    let ratio = self.core.settings.pricing.max_fare_ratio;
                    let (fare, computed) = cap_fare(
                        self.final_fare(),
                        &self.trip.quote.estimate,
                        ratio,
                        self.trip.quote.discount,
                    );
                    let flag = computed.map(|computed| FareFlag {
                        computed,
                        max_fare_ratio: ratio,
                    });
                    if flag.is_some() {
                        counter!(FARES_CAPPED).increment(1);
                        tracing::warn!(trip_id = %self.trip.trip_id, "final fare capped and flagged for review");
                    }
                    self.commit(
                        ctx,
                        &TripCommand::Complete {
                            driver_id,
                            fare,
                            flag,
                        },
                        quiet,
                    )
                    .map_err(ActError::from)
                }
            }
            DriverAction::Cancel => {
                let radius_m = self.policy.radius_m(0).unwrap_or(0.0);
                self.commit(
                    ctx,
                    &TripCommand::DriverCancel {
                        driver_id,
                        radius_m,
                    },
                    quiet,
                )
                .map_err(ActError::from)
                .map(|()| {
                    // A trip recovered after a restart knows its driver by id only.
                    let addr = self
                        .driver
                        .take()
                        .filter(Addr::connected)
                        .or_else(|| self.core.drivers.get(driver_id));
                    if let Some(addr) = addr {
                        addr.do_send(TripNotice {
                            trip_id: self.trip.trip_id,
                            frame: (!quiet)
                                .then(|| protocol::driver_released(self.trip.trip_id).to_string()),
                            release: true,
                            reason: Some(OfferEnd::Taken),
                        });
                    }
                    self.last_position = None;
                    self.search.restart(now_ms());
                    for &driver in &self.trip.excluded {
                        self.search.exclude(driver);
                    }
                    self.first_offer_sent = true;
                    self.post(ctx);
                    self.arm_step(ctx);
                    self.fill(ctx);
                })
            }
        };
        result.map(|()| self.trip.clone())
    }
}

impl TripActor {
    fn driver_free(&mut self, msg: DriverFree, ctx: &mut Context<Self>) -> bool {
        self.search.freed(msg.driver_id);
        if let Some(peer) = msg.held_by {
            self.remote.insert(msg.driver_id, peer);
        }
        // A trip waiting for its window takes its first driver from the pairing, not from
        // whoever frees up first.
        if self.trip.status != TripStatus::Matching
            || self.awaiting_batch
            || self.search.room(&self.policy) == 0
            || !self.search.may_offer(msg.driver_id)
        {
            return false;
        }
        msg.position.distance_m(self.trip.origin) <= self.trip.radius_m
            && self.offer(
                msg.driver_id,
                msg.position.distance_m(self.trip.origin),
                ctx,
            )
    }

    fn declining(&mut self, msg: Declining, ctx: &mut Context<Self>) {
        if self.search.closed(msg.driver_id) {
            self.cancel_timer(msg.driver_id, ctx);
            counter!(OFFERS, "outcome" => "declined").increment(1);
            self.note(TripEvent::OfferEnded {
                driver_id: msg.driver_id,
                outcome: OfferOutcome::Declined,
            });
            self.fill(ctx);
        }
    }

    fn driver_moved(&mut self, msg: DriverMoved, ctx: &mut Context<Self>) {
        if self.trip.driver_id != Some(msg.driver_id) {
            return;
        }
        self.follow(msg.position);
        let point = msg.position.point;
        if self.trip.status == TripStatus::Accepted
            && point.distance_m(self.trip.origin) <= self.core.settings.trip.arrival_radius_m
        {
            let _ = self.commit(
                ctx,
                &TripCommand::Arrive {
                    driver_id: msg.driver_id,
                    source: ArrivalSource::Geofence,
                },
                false,
            );
        }
        let now = now_ms();
        let interval =
            i64::try_from(self.core.settings.trip.rider_location_interval_ms).unwrap_or(i64::MAX);
        if self.trip.status.is_live() && now - self.last_rider_location_ms >= interval {
            self.last_rider_location_ms = now;
            self.core.riders.send(
                self.trip.rider_id,
                &protocol::driver_location(self.trip.trip_id, point, msg.position.heading),
            );
        }
    }

    fn rider_cancel(
        &mut self,
        msg: RiderCancel,
        ctx: &mut Context<Self>,
    ) -> Result<Trip, ActError> {
        let free_cancel_ms = i64::try_from(
            Duration::from_secs_f64(self.core.settings.trip.free_cancel_s).as_millis(),
        )
        .unwrap_or(i64::MAX);
        self.for_request(msg.request_id, |actor| {
            actor
                .commit(ctx, &TripCommand::RiderCancel { free_cancel_ms }, false)
                .map(|()| actor.trip.clone())
                .map_err(ActError::from)
        })
    }

    /// `answer`, given once what it reports is in the store (up to `database.ack_timeout_s`:
    /// during a database outage dispatch goes on and the events follow when it returns).
    fn when_durable<T: Send + 'static>(&mut self, answer: T) -> ResponseFuture<T> {
        let durable = self.durable.take();
        let limit = self.ack_timeout;
        Box::pin(async move {
            if let Some(committed) = durable {
                let _ = tokio::time::timeout(limit, committed).await;
            }
            answer
        })
    }

    /// A handler panicked: this actor's own state may be half-changed. Withdraw what it had
    /// open, drop its timers and start again from the trip as last stored (the store's truth).
    fn rebuild(&mut self, ctx: &mut Context<Self>) {
        let stored = self
            .core
            .trips
            .get(self.trip.trip_id)
            .unwrap_or_else(|| self.trip.clone());
        self.withdraw_all(OfferEnd::Expired, ctx);
        if let Some(handle) = self.step_timer.take() {
            ctx.cancel_future(handle);
        }
        for (_, handle) in self.offer_timers.drain() {
            ctx.cancel_future(handle);
        }
        let mut fresh = Self::new(self.core.clone(), stored, self.vehicle);
        fresh.driver = self.driver.take();
        fresh.trail = self.trail;
        fresh.last_position = self.last_position;
        fresh.first_offer_sent = true;
        *self = fresh;
        match self.trip.status {
            TripStatus::Matching => {
                self.post(ctx);
                self.arm_step(ctx);
                self.fill(ctx);
            }
            TripStatus::Scheduled => self.await_dispatch(ctx),
            status if !status.is_live() => self.finish(ctx),
            _ => {}
        }
    }
}

impl Handler<FirstOffer> for TripActor {
    type Result = ();

    fn handle(&mut self, msg: FirstOffer, ctx: &mut Self::Context) {
        if !std::mem::take(&mut self.awaiting_batch) || self.trip.status != TripStatus::Matching {
            return;
        }
        let offered = msg.driver.is_some_and(|(driver_id, distance_m)| {
            self.search.may_offer(driver_id) && self.offer(driver_id, distance_m, ctx)
        });
        if !offered {
            // Nobody in reach (or the driver is gone): on by rule 1 at once.
            self.fill(ctx);
        }
    }
}

impl Handler<Halt> for TripActor {
    type Result = ();

    fn handle(&mut self, _: Halt, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<DriverFree> for TripActor {
    type Result = bool;

    fn handle(&mut self, msg: DriverFree, ctx: &mut Self::Context) -> bool {
        guarded("trip", || self.driver_free(msg, ctx)).unwrap_or_else(|| {
            self.rebuild(ctx);
            false
        })
    }
}

impl Handler<Accepting> for TripActor {
    type Result = ResponseFuture<Result<Trip, OfferEnd>>;

    fn handle(&mut self, msg: Accepting, ctx: &mut Self::Context) -> Self::Result {
        let span = self.span("trip.accept", msg.traceparent.as_deref());
        let _entered = span.enter();
        self.durable = None;
        let request_id = msg.request_id.clone();
        let driver_id = msg.driver_id;
        let answer = guarded("trip", || {
            self.for_request(request_id, |actor| actor.accepting(msg, ctx))
        });
        let answer = answer.unwrap_or_else(|| {
            self.rebuild(ctx);
            // The store says whether the assignment was made before the failure.
            if self.trip.driver_id == Some(driver_id) && self.trip.status.is_live() {
                Ok(self.trip.clone())
            } else {
                Err(OfferEnd::Expired)
            }
        });
        self.when_durable(answer)
    }
}

impl Handler<Declining> for TripActor {
    type Result = ();

    fn handle(&mut self, msg: Declining, ctx: &mut Self::Context) {
        if guarded("trip", || self.declining(msg, ctx)).is_none() {
            self.rebuild(ctx);
        }
    }
}

impl Handler<DriverMoved> for TripActor {
    type Result = ();

    fn handle(&mut self, msg: DriverMoved, ctx: &mut Self::Context) {
        if guarded("trip", || self.driver_moved(msg, ctx)).is_none() {
            self.rebuild(ctx);
        }
    }
}

impl Handler<DriverAct> for TripActor {
    type Result = ResponseFuture<Result<Trip, ActError>>;

    fn handle(&mut self, msg: DriverAct, ctx: &mut Self::Context) -> Self::Result {
        let span = self.span("trip.driver_act", msg.traceparent.as_deref());
        let _entered = span.enter();
        self.durable = None;
        let request_id = msg.request_id.clone();
        let before = self.trip.status;
        let answer = guarded("trip", || {
            self.for_request(request_id, |actor| actor.driver_act(msg, ctx))
        });
        let answer = answer.unwrap_or_else(|| {
            self.rebuild(ctx);
            // Committed before the failure: say so rather than ask for a retry.
            if self.trip.status == before {
                Err(ActError::Failed)
            } else {
                Ok(self.trip.clone())
            }
        });
        self.when_durable(answer)
    }
}

impl Handler<RiderCancel> for TripActor {
    type Result = ResponseFuture<Result<Trip, ActError>>;

    fn handle(&mut self, msg: RiderCancel, ctx: &mut Self::Context) -> Self::Result {
        let span = self.span("trip.rider_cancel", msg.traceparent.as_deref());
        let _entered = span.enter();
        self.durable = None;
        let answer = guarded("trip", || self.rider_cancel(msg, ctx));
        let answer = answer.unwrap_or_else(|| {
            self.rebuild(ctx);
            if self.trip.status == TripStatus::Cancelled {
                Ok(self.trip.clone())
            } else {
                Err(ActError::Failed)
            }
        });
        self.when_durable(answer)
    }
}

#[cfg(test)]
impl Handler<super::supervision::Crash> for TripActor {
    type Result = ();

    fn handle(&mut self, _: super::supervision::Crash, ctx: &mut Self::Context) {
        if guarded("trip", || panic!("injected")).is_none() {
            self.rebuild(ctx);
        }
    }
}

#[cfg(test)]
#[path = "trip_tests.rs"]
mod tests;
