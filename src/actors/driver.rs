//! `DriverActor`: one per driver the engine is serving — online, connected, or lingering for a
//! grace period after its last session closed.
//!
//! It owns the driver's status, last position and session link, and it is the only writer of the
//! driver's index entry: on every position it upserts the entry into its shard's cell actor (with
//! `try_send`, counting drops, so a slow shard never grows a mailbox without bound), and when the
//! driver crosses into another shard it removes the entry from the old shard and inserts it into
//! the new one. Sessions (`/ws/driver`) and REST calls reach it through the registry; a
//! reconnecting driver attaches to the same actor, and a newer session replaces an older one.
//!
//! It is also where "at most one live offer and at most one trip per driver" holds: trip actors
//! offer through it ([`Offer`]), and it refuses while it holds another offer or a trip. Its
//! driver's accept goes through it to the trip actor and it keeps the offer slot until the trip
//! answers, so two trips can never both count it as theirs. Whenever the driver becomes available
//! again (came online, lost or declined an offer, finished a trip) it marks itself available in the
//! index and tells the matching trips within reach ([`MatchingBoard`](super::board)).
//!
//! It stops when no session is attached, it holds no offer and no trip, and the driver is offline
//! for `driver.idle_grace_s`, or online without a fresh position for `location.ttl_s`; it then
//! leaves the index and the registry and writes its last state to the directory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use h3o::CellIndex;
use metrics::{Counter, counter, gauge};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::cell::{CellActor, Count, Remove, SetAvailable, Upsert};
use super::core::Core;
use super::directory::DriverProfile;
use super::protocol::{
    self, DriverSnapshot, OfferEnd, OfferTerms, OfferView, Outbound, PositionView,
};
use super::trip::{Accepting, Declining, DriverFree, DriverMoved, TripActor};
use crate::clock::now_ms;
use crate::dispatch::Position;
use crate::dispatch::{DriverStatus, VehicleType};
use crate::dispatch::{Trip, TripStatus};
use crate::geo::{IndexedDriver, LatLng, VehicleId};
use crate::metrics::{DRIVER_ACTORS, LOCATION_UPDATES_DROPPED};

/// Offers the driver lost or declined, remembered so a late accept is told why it lost.
const RECENT_OFFERS: usize = 8;
/// The driver's own deadline for an offer runs this much past the trip's, so the trip's expiry
/// (which it announces) always comes first.
const OFFER_GRACE_MS: i64 = 2_000;

/// Tries of a remote accept whose answer does not come back.
const REMOTE_ACCEPT_ATTEMPTS: usize = 4;

/// WebSocket close code telling an older session that a newer one took over.
pub const CLOSE_REPLACED: u16 = 4000;

/// The channel from a driver actor to the socket currently attached to it.
#[derive(Debug, Clone)]
pub struct SessionLink {
    /// Unique per socket, so a late `Detach` from a replaced session is ignored.
    pub id: u64,
    /// Bounded queue of frames for the socket.
    pub tx: mpsc::Sender<Outbound>,
}

/// A position report, already validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocationUpdate {
    /// Where.
    pub point: LatLng,
    /// Degrees clockwise from north.
    pub heading: Option<f32>,
    /// Metres per second.
    pub speed_mps: Option<f32>,
    /// When the app took it, epoch ms.
    pub ts_ms: Option<i64>,
}

/// New position (fire and forget; queued with `try_send`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Location(pub LocationUpdate);

/// Go online or offline; answers with the new state.
#[derive(Message)]
#[rtype(result = "DriverSnapshot")]
pub struct SetStatus(pub DriverStatus);

/// A socket opened for this driver; answers with the state for its `session` frame.
#[derive(Message)]
#[rtype(result = "DriverSnapshot")]
pub struct Attach(pub SessionLink);

/// A socket closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    /// The id of the session that closed.
    pub session_id: u64,
}

/// The driver's current state.
#[derive(Message)]
#[rtype(result = "DriverSnapshot")]
pub struct GetSnapshot;

/// Start-up recovery: the driver was online at this position (from the Redis snapshot). The
/// position keeps its original receive time, so it goes stale when it would have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore(pub Position);

/// A trip offers itself to the driver.
#[derive(Message)]
#[rtype(result = "OfferReply")]
pub struct Offer {
    /// What is offered.
    pub terms: Arc<OfferTerms>,
    /// The trip, where the driver's answer goes.
    pub trip: TripLink,
    /// When the trip will withdraw the offer, epoch ms.
    pub expires_ms: i64,
}

/// Where a held offer's trip runs: here, or on another instance sharing the map (SPEC §11).
#[derive(Clone)]
pub enum TripLink {
    /// The trip's actor on this instance.
    Local(Addr<TripActor>),
    /// The instance running the trip; answers travel there over HTTP.
    Remote(crate::geo::Peer),
}

/// Takes on an offer another instance's driver actor held for this driver, which accepted it
/// there and is being handed here (the trip's instance): the accept that follows finds it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptOffer {
    /// What was offered.
    pub terms: Arc<OfferTerms>,
    /// The trip's actor here.
    pub trip: Addr<TripActor>,
    /// When it expires, epoch ms.
    pub expires_ms: i64,
    /// Where the driver is.
    pub position: Position,
}

/// This actor was started for a driver that turned out to stay elsewhere (a remote accept that
/// lost): it leaves quietly, writing nothing about the driver.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget;

/// Whether an offer reached the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum OfferReply {
    /// The driver holds it now.
    Delivered,
    /// The driver holds another offer or a trip, or is offline.
    Busy,
    /// The driver is free but the engine cannot reach it now: no open session and no REST call
    /// within `matching.rest_reach_s`. It announces itself when it comes back.
    Unreachable,
}

/// The cell actor of `shard` rebuilt its index: a driver placed there puts itself back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resettle {
    /// The rebuilt shard.
    pub shard: CellIndex,
}

/// The driver just called a REST route: it counts as reachable for `matching.rest_reach_s`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reached;

/// The trip withdrew its offer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Withdraw {
    /// The trip.
    pub trip_id: Uuid,
    /// Why.
    pub reason: OfferEnd,
}

/// The driver answers an offer.
#[derive(Message)]
#[rtype(result = "Result<Answer, AnswerError>")]
pub struct Respond {
    /// The trip offered.
    pub trip_id: Uuid,
    /// Accept (true) or decline.
    pub accept: bool,
    /// The HTTP request behind it, if any.
    pub request_id: Option<Arc<str>>,
    /// The sender's span (W3C `traceparent`), when traces are exported.
    pub traceparent: Option<String>,
}

/// What came of an answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The driver won the trip.
    Assigned(Box<Trip>),
    /// The driver won a trip another instance runs (SPEC §11): the trip as its driver sees it.
    /// The driver moves there next.
    AssignedThere(Box<serde_json::Value>),
    /// The offer is declined.
    Declined,
}

/// Why an answer went nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The offer ended before the accept landed.
    #[error("the offer is no longer open ({})", .0.as_str())]
    Gone(OfferEnd),
    /// The driver holds no offer for this trip.
    #[error("no offer for this trip is held by this driver")]
    NotOffered,
    /// The trip is already this driver's (a decline of an assigned trip is a cancel).
    #[error("this trip is already assigned to this driver; cancel it instead")]
    Assigned,
}

/// News from the driver's trip: a frame for its socket, and whether the trip is over for it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TripNotice {
    /// The trip.
    pub trip_id: Uuid,
    /// A frame for the socket.
    pub frame: Option<String>,
    /// The driver no longer serves this trip (completed, cancelled, given up).
    pub release: bool,
    /// Why the trip let the driver go, for an accept still on its way back.
    pub reason: Option<OfferEnd>,
}

/// An offer the driver holds.
struct HeldOffer {
    terms: Arc<OfferTerms>,
    trip_id: Uuid,
    trip: TripLink,
    expires_ms: i64,
    /// An accept is on its way to the trip: the slot stays taken until it answers.
    accepting: bool,
    /// While the accept was in flight the trip said it is over for this driver (a rider cancel
    /// that landed right after the assignment): the accept's answer must not bind the driver.
    released: Option<OfferEnd>,
}

/// One driver.
pub struct DriverActor {
    core: Core,
    driver_id: Uuid,
    vehicle_type: VehicleType,
    vehicle: VehicleId,
    status: DriverStatus,
    position: Option<Position>,
    /// The shard the driver's entry is in, so an update goes straight to its cell actor.
    placed: Option<(CellIndex, Addr<CellActor>)>,
    session: Option<SessionLink>,
    /// Pending check that stops the actor once it has no session and nothing left to serve.
    idle_check: Option<SpawnHandle>,
    /// The one offer it may hold.
    offer: Option<HeldOffer>,
    /// The one trip it may serve.
    trip: Option<(Uuid, Addr<TripActor>)>,
    /// Offers that ended lately and why, newest last.
    recent: VecDeque<(Uuid, OfferEnd)>,
    /// Whether the index entry says available, so changes are sent once.
    listed_available: bool,
    /// When the driver last called a REST route, epoch ms (0: never).
    last_rest_ms: i64,
    /// Out of reach longer than `driver.reconnect_grace_s`: not listed by nearby until it is back.
    hidden: bool,
    /// Pending end of the reconnect grace.
    grace_timer: Option<SpawnHandle>,
    /// `matching.rest_reach_s` in ms.
    rest_reach_ms: i64,
    /// When a position was last stored as a history sample / written to the snapshot, epoch ms.
    last_sample_ms: i64,
    last_snapshot_ms: i64,
    ttl_ms: i64,
    drops: Counter,
    /// Being handed to the instance owning the region it drove into (SPEC §11): not offered
    /// anything meanwhile.
    moving: bool,
    /// Handed to another instance, which keeps the driver's state from now on.
    handed_off: bool,
}

impl DriverActor {
    /// An actor for the driver described by `profile`, its vehicle type interned as `vehicle`.
    #[must_use]
    pub fn new(core: Core, profile: DriverProfile, vehicle: VehicleId) -> Self {
        let ttl_ms = i64::try_from(core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX);
        let rest_reach_ms = (core.settings.matching.rest_reach_s * 1_000.0) as i64;
        Self {
            core,
            driver_id: profile.driver_id,
            vehicle_type: profile.vehicle_type,
            vehicle,
            status: DriverStatus::Offline,
            position: profile.last_position,
            placed: None,
            session: None,
            idle_check: None,
            offer: None,
            trip: None,
            recent: VecDeque::with_capacity(RECENT_OFFERS),
            listed_available: false,
            last_rest_ms: 0,
            hidden: false,
            grace_timer: None,
            rest_reach_ms,
            last_sample_ms: 0,
            last_snapshot_ms: 0,
            ttl_ms,
            drops: counter!(LOCATION_UPDATES_DROPPED, "reason" => "cell_mailbox_full"),
            moving: false,
            handed_off: false,
        }
    }

    fn snapshot(&self) -> DriverSnapshot {
        let now = now_ms();
        DriverSnapshot {
            driver_id: self.driver_id,
            status: self.status,
            vehicle_type: self.vehicle_type.to_string(),
            available: self.is_available(now),
            connected: self.session.is_some(),
            last_position: self.position.map(PositionView::from),
            current_trip: self.trip.as_ref().map(|t| t.0),
            offer: self.offer.as_ref().map(|o| OfferView {
                trip_id: o.trip_id,
                expires_in_ms: (o.expires_ms - now).max(0),
            }),
        }
    }

    /// Online, no trip, and no offer (an offer whose trip never said it ended counts as gone
    /// once its own deadline has passed, unless an accept is in flight).
    fn is_available(&self, now: i64) -> bool {
        self.status == DriverStatus::Online
            && !self.moving
            && self.trip.is_none()
            && self
                .offer
                .as_ref()
                .is_none_or(|o| !o.accepting && now > o.expires_ms.saturating_add(OFFER_GRACE_MS))
    }

    /// The driver just became reachable (a session, a REST call): it is listed again.
    fn back_in_reach(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.grace_timer.take() {
            ctx.cancel_future(handle);
        }
        if std::mem::take(&mut self.hidden) {
            self.sync_availability();
        }
    }

    /// The driver went out of reach (its session dropped, or it was restored with none): nearby
    /// keeps listing it for `driver.reconnect_grace_s`, then hides it until it is back.
    fn start_grace(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.grace_timer.take() {
            ctx.cancel_future(handle);
        }
        let grace = Duration::from_secs_f64(self.core.settings.driver.reconnect_grace_s);
        self.grace_timer = Some(ctx.run_later(grace, |actor, _| {
            actor.grace_timer = None;
            if !actor.is_reachable(now_ms()) {
                actor.hidden = true;
                actor.sync_availability();
            }
        }));
    }

    /// Whether an offer can reach the driver now: an open session, or a recent REST call.
    fn is_reachable(&self, now: i64) -> bool {
        self.session.is_some() || now - self.last_rest_ms <= self.rest_reach_ms
    }

    /// Publishes `driver.online` / `driver.offline` through the outbox (SPEC §8).
    fn publish_status(&self, status: DriverStatus, reason: &str) {
        let Some(persistence) = self.core.persistence() else {
            return;
        };
        let at_ms = now_ms();
        let mut payload = serde_json::json!({
            "driver_id": self.driver_id,
            "status": status.as_str(),
            "vehicle_type": self.vehicle_type.as_str(),
            "reason": reason,
            "at_ms": at_ms,
        });
        if let Some(p) = self.position {
            payload["position"] = serde_json::json!({"lat": p.point.lat(), "lng": p.point.lng()});
        }
        let row = crate::persistence::OutboxRow {
            message_id: format!("driver:{}:{}", self.driver_id, Uuid::now_v7()),
            routing_key: format!("driver.{}", status.as_str()),
            payload: payload.to_string(),
            created_ms: at_ms,
        };
        if persistence
            .write(crate::persistence::Write::Message(row))
            .is_err()
        {
            tracing::warn!(driver_id = %self.driver_id, "driver event not queued: the writer has stopped");
        }
    }

    /// Tells the matching trips within reach, nearest first and one at a time, that the driver
    /// can take an offer, until one of them offers. (Telling them all at once would send every
    /// waiting trip an offer to make, all but one refused: quadratic when many trips wait and
    /// many drivers free up.)
    ///
    /// Then, if none of them took it, the trips of other instances whose regions are within the
    /// widest search radius (SPEC §11), one instance at a time.
    fn announce_free(&self) {
        let Some(position) = self.position else {
            return;
        };
        let trips = self.core.board.in_reach(position.point, self.vehicle);
        let peers = self
            .core
            .other_owners(position.point, self.core.policy.max_radius_m());
        if trips.is_empty() && peers.is_empty() {
            return;
        }
        let free = DriverFree {
            driver_id: self.driver_id,
            position: position.point,
            held_by: None,
        };
        let remote = super::peers::RemoteFree {
            driver_id: self.driver_id,
            lat: position.point.lat(),
            lng: position.point.lng(),
            vehicle_type: self.vehicle_type.to_string(),
            from: self.core.settings.instance_id().to_owned(),
        };
        let token = self.core.peer_token();
        actix_rt::spawn(async move {
            for (_, trip) in trips {
                if trip.send(free.clone()).await.unwrap_or(false) {
                    return;
                }
            }
            let Some(token) = token else {
                return;
            };
            for peer in peers {
                let answer: Result<Option<serde_json::Value>, String> =
                    super::peers::call(&peer, "/api/cluster/free", &token, &remote).await;
                if answer.is_ok_and(|a| a.is_some_and(|a| a["offered"] == true)) {
                    return;
                }
            }
        });
    }

    /// Why an offer of a trip whose actor is gone ended, from the trip's stored state.
    fn ended_reason(&self, trip_id: Uuid) -> OfferEnd {
        match self.core.trips.get(trip_id) {
            Some(t) if t.status == TripStatus::Cancelled => OfferEnd::RiderCancelled,
            Some(t) if t.driver_id.is_some_and(|d| d != self.driver_id) => OfferEnd::Taken,
            _ => OfferEnd::Expired,
        }
    }

    /// Sends the held offer again (a reconnecting driver), with the time it has left.
    fn resend_offer(&self) {
        let now = now_ms();
        if let Some(offer) = self
            .offer
            .as_ref()
            .filter(|o| !o.accepting && o.expires_ms > now)
        {
            let distance_m = self
                .position
                .map_or(0.0, |p| p.point.distance_m(offer.terms.pickup));
            self.send_frame(protocol::offer(
                &offer.terms,
                distance_m,
                offer.expires_ms - now,
            ));
        }
    }

    /// Writes the driver's state to the Redis snapshot (status changes at once, positions at most
    /// once per `redis.snapshot_interval_ms`).
    fn snapshot_state(&mut self, force: bool) {
        let (Some(snapshot), Some(position)) = (self.core.snapshot(), self.position) else {
            return;
        };
        let interval =
            i64::try_from(self.core.settings.redis.snapshot_interval_ms).unwrap_or(i64::MAX);
        if !force && position.received_ms - self.last_snapshot_ms < interval {
            return;
        }
        self.last_snapshot_ms = position.received_ms;
        snapshot.record(crate::persistence::SnapshotEntry {
            driver_id: self.driver_id,
            vehicle_type: self.vehicle_type.to_string(),
            status: self.status.as_str().to_owned(),
            lat: position.point.lat(),
            lng: position.point.lng(),
            heading: position.heading,
            speed_mps: position.speed_mps,
            ts_ms: position.ts_ms,
            received_ms: position.received_ms,
        });
    }

    /// Stores a history sample at most once per `database.location_sample_s`.
    fn sample_position(&mut self) {
        let (Some(persistence), Some(position)) = (self.core.persistence(), self.position) else {
            return;
        };
        let every = (self.core.settings.database.location_sample_s * 1_000.0) as i64;
        if position.received_ms - self.last_sample_ms < every {
            return;
        }
        self.last_sample_ms = position.received_ms;
        persistence.sample(crate::persistence::Write::Position(
            crate::persistence::PositionRow {
                driver_id: self.driver_id,
                ts_ms: position.ts_ms,
                lat: position.point.lat(),
                lng: position.point.lng(),
                heading: position.heading.map(f64::from),
                speed_mps: position.speed_mps.map(f64::from),
            },
        ));
    }

    /// The driver's profile as stored.
    fn profile_row(&self) -> crate::persistence::DriverRow {
        crate::persistence::DriverRow {
            driver_id: self.driver_id,
            vehicle_type: self.vehicle_type.to_string(),
            status: self.status.as_str().to_owned(),
            position: self
                .position
                .map(|p| (p.point.lat(), p.point.lng(), p.received_ms)),
            created_ms: self
                .core
                .directory
                .get(self.driver_id)
                .map_or_else(now_ms, |p| p.created_ms),
        }
    }

    fn send_frame(&self, frame: String) {
        if let Some(session) = &self.session {
            let _ = session.tx.try_send(Outbound::Text(frame));
        }
    }

    fn remember(&mut self, trip_id: Uuid, reason: OfferEnd) {
        if self.recent.len() == RECENT_OFFERS {
            self.recent.pop_front();
        }
        self.recent.push_back((trip_id, reason));
    }

    /// Brings the index entry's availability in line with the driver's state; on becoming
    /// available, tells the matching trips in reach.
    fn sync_availability(&mut self) {
        let now = now_ms();
        let available = self.is_available(now) && self.is_fresh(now) && !self.hidden;
        if available == self.listed_available {
            return;
        }
        self.listed_available = available;
        if let Some((_, addr)) = &self.placed {
            // Rare (once per offer or trip) and must not be lost, like a removal.
            addr.do_send(SetAvailable {
                driver_id: self.driver_id,
                available,
            });
        } else if available {
            self.place();
        }
        if available {
            self.announce_free();
        }
    }

    /// Declines the held offer on the driver's behalf (it went offline or away).
    fn drop_offer(&mut self) {
        if let Some(offer) = self.offer.take_if(|o| !o.accepting) {
            self.decline_to(&offer.trip, offer.trip_id);
            self.remember(offer.trip_id, OfferEnd::Declined);
        }
    }

    fn is_fresh(&self, now: i64) -> bool {
        self.position
            .is_some_and(|p| p.received_ms >= now.saturating_sub(self.ttl_ms))
    }

    /// Puts the driver's current position into the index (moving shards if needed).
    fn place(&mut self) {
        let Some(position) = self.position else {
            return;
        };
        let grid = self.core.shards.grid();
        let shard = grid.shard_of(grid.cell_of(position.point));
        let entry = IndexedDriver {
            driver_id: self.driver_id,
            position: position.point,
            heading: position.heading,
            vehicle: self.vehicle,
            available: self.is_available(now_ms()) && !self.hidden,
            seen_ms: position.received_ms,
        };
        self.listed_available = entry.available;
        match &self.placed {
            Some((current, addr)) if *current == shard => {
                if addr.try_send(Upsert(entry)).is_err() {
                    self.drops.increment(1);
                }
            }
            _ => {
                self.unplace();
                let addr = self.core.shards.shard(shard);
                if addr.try_send(Upsert(entry)).is_ok() {
                    self.placed = Some((shard, addr));
                } else {
                    // Not placed anywhere now; the next position tries again.
                    self.drops.increment(1);
                }
            }
        }
    }

    /// Removes the driver's entry. A removal must never be lost (a lost one would leave a ghost
    /// driver in the old shard), so it bypasses the mailbox capacity; it happens at most once per
    /// status change or shard crossing, and crossings are bounded by the driver's own mailbox.
    fn unplace(&mut self) {
        if let Some((_, addr)) = self.placed.take() {
            addr.do_send(Remove {
                driver_id: self.driver_id,
            });
        }
    }

    /// (Re)schedules the check that stops an actor nobody needs any more.
    fn review(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.idle_check.take() {
            ctx.cancel_future(handle);
        }
        if self.session.is_some() || self.trip.is_some() || self.offer.is_some() {
            return;
        }
        let grace = Duration::from_secs_f64(self.core.settings.driver.idle_grace_s);
        let wait = match (self.status, self.position) {
            (DriverStatus::Online, Some(p)) => {
                let stale_at = p.received_ms.saturating_add(self.ttl_ms);
                Duration::from_millis(u64::try_from(stale_at.saturating_sub(now_ms())).unwrap_or(0))
            }
            _ => grace,
        };
        self.idle_check = Some(ctx.run_later(wait, |actor, ctx| {
            actor.idle_check = None;
            if actor.session.is_some() || actor.trip.is_some() || actor.offer.is_some() {
                return;
            }
            if actor.status == DriverStatus::Online && actor.is_fresh(now_ms()) {
                actor.review(ctx);
            } else {
                ctx.stop();
            }
        }));
    }
}

impl Actor for DriverActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.core.settings.driver.mailbox);
        gauge!(DRIVER_ACTORS).increment(1.0);
        // A driver whose actor (re)starts while a trip holds it — after an engine restart —
        // serves that trip again.
        if let Some(trip_id) = self.core.trips.assignment(self.driver_id)
            && let Some(trip) = self.core.trip_actors.get(trip_id)
        {
            self.trip = Some((trip_id, trip));
        }
        if let Some(p) = self.core.persistence() {
            let _ = p.write(crate::persistence::Write::Driver(self.profile_row()));
        }
        self.review(ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.drop_offer();
        self.unplace();
        if let Some(p) = self.core.persistence().filter(|_| !self.handed_off) {
            let mut row = self.profile_row();
            row.status = DriverStatus::Offline.as_str().to_owned();
            let _ = p.write(crate::persistence::Write::Driver(row));
        }
        if self.status == DriverStatus::Online {
            self.core.online_changed(-1);
            // Its position went stale with no session: it is offline from now on. (Not when the
            // engine stops: the driver is still online, and comes back so after a restart.)
            if !self.core.is_stopping() {
                self.publish_status(DriverStatus::Offline, "stale");
            }
        }
        self.core.drivers.remove(self.driver_id, &ctx.address());
        self.core.directory.save(DriverProfile {
            driver_id: self.driver_id,
            vehicle_type: self.vehicle_type.clone(),
            created_ms: self
                .core
                .directory
                .get(self.driver_id)
                .map_or_else(now_ms, |p| p.created_ms),
            status: DriverStatus::Offline,
            last_position: self.position,
        });
        if let Some(session) = self.session.take() {
            let _ = session
                .tx
                .try_send(Outbound::Close(1001, "driver session ended".into()));
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        gauge!(DRIVER_ACTORS).decrement(1.0);
    }
}

impl Handler<Location> for DriverActor {
    type Result = ();

    fn handle(&mut self, Location(update): Location, ctx: &mut Self::Context) {
        let now = now_ms();
        self.position = Some(Position {
            point: update.point,
            heading: update.heading,
            speed_mps: update.speed_mps,
            ts_ms: update.ts_ms.unwrap_or(now),
            received_ms: now,
        });
        if self.status == DriverStatus::Online {
            let was_listed = self.listed_available;
            self.place();
            if !was_listed && self.listed_available {
                // First fresh position while online: announce the driver like any newly
                // available one.
                self.listed_available = false;
                self.sync_availability();
            }
        }
        self.sample_position();
        if self.status == DriverStatus::Online {
            self.snapshot_state(false);
        }
        if let (Some((_, trip)), Some(position)) = (&self.trip, self.position) {
            let _ = trip.try_send(DriverMoved {
                driver_id: self.driver_id,
                position,
            });
        }
        self.consider_move(ctx);
    }
}

impl DriverActor {
    /// SPEC §11: a driver whose position lies in another instance's region, with no trip or
    /// offer binding it here, is handed to that instance (which takes it on with its status);
    /// a socket is then told to reconnect there (`moved`, then close 4002), and a REST-only
    /// driver's next calls are forwarded there.
    fn consider_move(&mut self, ctx: &mut Context<Self>) {
        let Some(position) = self.position else {
            return;
        };
        if self.moving || self.handed_off || self.trip.is_some() || self.offer.is_some() {
            return;
        }
        let regions = &self.core.regions;
        let owner = regions.owner(regions.region_of(position.point));
        if owner.id == self.core.settings.instance_id() {
            return;
        }
        let Some(token) = self.core.peer_token() else {
            return;
        };
        let owner = owner.clone();
        let handoff = self.handoff(position);
        self.moving = true;
        self.sync_availability();
        let call = async move {
            let result = super::peers::hand_off(&owner, &token, &handoff).await;
            (owner, result)
        };
        ctx.spawn(call.into_actor(self).map(|(owner, result), actor, ctx| {
            match result {
                Ok(()) => actor.moved_to(&owner, ctx),
                Err(e) => {
                    // Stay here; the next position tries again.
                    tracing::warn!(driver_id = %actor.driver_id, peer = %owner.id, error = %e, "driver handoff failed");
                    actor.moving = false;
                    actor.sync_availability();
                }
            }
        }));
    }

    /// What another instance needs to take this driver on at `position`.
    fn handoff(&self, position: Position) -> super::peers::Handoff {
        super::peers::Handoff {
            driver_id: self.driver_id,
            vehicle_type: self.vehicle_type.to_string(),
            online: self.status == DriverStatus::Online,
            lat: position.point.lat(),
            lng: position.point.lng(),
            heading: position.heading,
            speed_mps: position.speed_mps,
            ts_ms: position.ts_ms,
            received_ms: position.received_ms,
        }
    }

    /// The owner took the driver on: it leaves this instance's index, and its socket is told
    /// where to go.
    fn moved_to(&mut self, owner: &crate::geo::Peer, ctx: &mut Context<Self>) {
        self.unplace();
        self.listed_available = false;
        if self.status == DriverStatus::Online {
            // Online over there now; here it is simply gone (no status event: it did not go
            // offline).
            self.status = DriverStatus::Offline;
            self.core.online_changed(-1);
        }
        if let Some(session) = &self.session {
            let frame = serde_json::json!({
                "type": "moved",
                "instance": owner.id,
                "url": super::peers::driver_socket_url(owner),
            });
            let _ = session.tx.try_send(Outbound::Text(frame.to_string()));
            let _ = session
                .tx
                .try_send(Outbound::Close(4002, format!("moved to {}", owner.id)));
        }
        // The socket drains what was queued and closes; nothing more goes to it from here.
        self.session = None;
        self.handed_off = true;
        tracing::info!(driver_id = %self.driver_id, peer = %owner.id, "driver moved to the owner of its region");
        self.moving = false;
        // The owner has the driver now: this actor leaves, so that only one instance answers
        // for it.
        ctx.stop();
    }
}

impl Handler<SetStatus> for DriverActor {
    type Result = ResponseFuture<DriverSnapshot>;

    /// Answers once the driver's shards have applied the change: reads of the index do not wait
    /// for writes in flight, and a rider asking right after a driver went online (or a nearby
    /// search right after one went offline) must see it.
    fn handle(&mut self, SetStatus(status): SetStatus, ctx: &mut Self::Context) -> Self::Result {
        let mut touched: Vec<Addr<CellActor>> = Vec::new();
        if status != self.status {
            touched.extend(self.placed.as_ref().map(|(_, addr)| addr.clone()));
            self.status = status;
            match status {
                DriverStatus::Online => {
                    self.core.online_changed(1);
                    if self.is_fresh(now_ms()) {
                        self.place();
                        self.listed_available = false;
                        self.sync_availability();
                    }
                }
                DriverStatus::Offline => {
                    self.core.online_changed(-1);
                    self.drop_offer();
                    self.unplace();
                    self.listed_available = false;
                }
            }
            self.snapshot_state(true);
            self.publish_status(status, "requested");
            tracing::info!(driver_id = %self.driver_id, status = status.as_str(), "driver status changed");
            self.review(ctx);
            if let Some((_, addr)) = &self.placed
                && !touched.contains(addr)
            {
                touched.push(addr.clone());
            }
        }
        let snapshot = self.snapshot();
        Box::pin(async move {
            for addr in touched {
                // A barrier: the shard answers after every earlier message, ours included.
                let _ = addr.send(Count).await;
            }
            snapshot
        })
    }
}

impl Handler<Attach> for DriverActor {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, Attach(link): Attach, ctx: &mut Self::Context) -> Self::Result {
        let now = now_ms();
        let was_reachable = self.is_reachable(now);
        if let Some(old) = self.session.replace(link) {
            let _ = old.tx.try_send(Outbound::Close(
                CLOSE_REPLACED,
                "replaced by a newer session".into(),
            ));
        }
        // Queued behind the `session` frame the socket writes first.
        self.resend_offer();
        if !was_reachable && self.listed_available {
            self.announce_free();
        }
        self.back_in_reach(ctx);
        self.review(ctx);
        MessageResult(self.snapshot())
    }
}

impl Handler<Detach> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Self::Context) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.id == msg.session_id)
        {
            self.session = None;
            self.start_grace(ctx);
            self.review(ctx);
        }
    }
}

impl Handler<Resettle> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: Resettle, _: &mut Self::Context) {
        if self
            .placed
            .as_ref()
            .is_some_and(|(shard, _)| *shard == msg.shard)
        {
            // The entry is gone with the old index: place it again, nothing to remove.
            self.placed = None;
            self.place();
        }
    }
}

impl Handler<Reached> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: Reached, ctx: &mut Self::Context) {
        let now = now_ms();
        let was_reachable = self.is_reachable(now);
        self.last_rest_ms = now;
        if !was_reachable && self.listed_available {
            self.announce_free();
        }
        self.back_in_reach(ctx);
    }
}

impl Handler<GetSnapshot> for DriverActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

impl Handler<Restore> for DriverActor {
    type Result = ();

    fn handle(&mut self, Restore(position): Restore, ctx: &mut Self::Context) {
        self.position = Some(position);
        if self.status != DriverStatus::Online {
            self.status = DriverStatus::Online;
            self.core.online_changed(1);
            self.publish_status(DriverStatus::Online, "restored");
        }
        self.place();
        self.listed_available = false;
        self.sync_availability();
        self.start_grace(ctx);
        self.review(ctx);
    }
}

impl Handler<Offer> for DriverActor {
    type Result = OfferReply;

    fn handle(&mut self, msg: Offer, ctx: &mut Self::Context) -> OfferReply {
        let now = now_ms();
        if !self.is_available(now) {
            return OfferReply::Busy;
        }
        if !self.is_reachable(now) {
            return OfferReply::Unreachable;
        }
        let distance_m = self
            .position
            .map_or(0.0, |p| p.point.distance_m(msg.terms.pickup));
        self.send_frame(protocol::offer(
            &msg.terms,
            distance_m,
            msg.expires_ms.saturating_sub(now),
        ));
        if matches!(msg.trip, TripLink::Remote(_)) {
            // A withdrawal from another instance may never come (or overtake the offer): the
            // offer ends here at its deadline whatever happens there.
            let (trip_id, wait) = (
                msg.terms.trip_id,
                Duration::from_millis(
                    u64::try_from(msg.expires_ms.saturating_sub(now) + OFFER_GRACE_MS).unwrap_or(0),
                ),
            );
            ctx.run_later(wait, move |actor, ctx| {
                if actor
                    .offer
                    .take_if(|o| o.trip_id == trip_id && !o.accepting)
                    .is_some()
                {
                    actor.remember(trip_id, OfferEnd::Expired);
                    actor.send_frame(
                        protocol::offer_cancelled(trip_id, OfferEnd::Expired).to_string(),
                    );
                    actor.sync_availability();
                    actor.review(ctx);
                }
            });
        }
        self.offer = Some(HeldOffer {
            trip_id: msg.terms.trip_id,
            terms: msg.terms,
            trip: msg.trip.clone(),
            expires_ms: msg.expires_ms,
            accepting: false,
            released: None,
        });
        self.sync_availability();
        self.review(ctx);
        OfferReply::Delivered
    }
}

impl Handler<AdoptOffer> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: AdoptOffer, _: &mut Self::Context) {
        // Only a free actor takes it: one holding another offer or a trip keeps that (the
        // accept that follows is then refused, or answered as a repeat for this very trip).
        if self.trip.is_none() && self.offer.is_none() {
            self.position = Some(msg.position);
            self.offer = Some(HeldOffer {
                trip_id: msg.terms.trip_id,
                terms: msg.terms,
                trip: TripLink::Local(msg.trip),
                expires_ms: msg.expires_ms,
                accepting: false,
                released: None,
            });
        }
    }
}

impl Handler<Forget> for DriverActor {
    type Result = ();

    fn handle(&mut self, _: Forget, ctx: &mut Self::Context) {
        if self.trip.is_none() && self.session.is_none() {
            self.offer = None;
            self.handed_off = true;
            ctx.stop();
        }
    }
}

impl DriverActor {
    /// Tells the trip of a held offer that the driver declines it, here or on its instance.
    fn decline_to(&self, trip: &TripLink, trip_id: Uuid) {
        match trip {
            TripLink::Local(addr) => addr.do_send(Declining {
                driver_id: self.driver_id,
            }),
            TripLink::Remote(peer) => {
                let Some(token) = self.core.peer_token() else {
                    return;
                };
                let (peer, body) = (
                    peer.clone(),
                    super::peers::RemoteDecline {
                        trip_id,
                        driver_id: self.driver_id,
                    },
                );
                actix_rt::spawn(async move {
                    let sent: Result<Option<serde_json::Value>, String> =
                        super::peers::call(&peer, "/api/cluster/declines", &token, &body).await;
                    if let Err(e) = sent {
                        // The trip's offer expires on its own.
                        tracing::warn!(peer = %peer.id, error = %e, "a decline did not reach the trip's instance");
                    }
                });
            }
        }
    }

    /// An accept of a trip another instance runs: the driver goes there with it (its state in
    /// the request), and that instance's trip decides as for its own drivers. Won, the driver
    /// leaves this instance (`moved`, close 4002) for the trip's.
    fn accept_there(
        &mut self,
        peer: crate::geo::Peer,
        terms: Arc<OfferTerms>,
        expires_ms: i64,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Answer, AnswerError>> {
        let trip_id = terms.trip_id;
        let (Some(token), Some(position)) = (self.core.peer_token(), self.position) else {
            // Nothing to send the accept with: decline, so the trip moves on at once.
            self.offer = None;
            self.decline_to(&TripLink::Remote(peer), trip_id);
            self.remember(trip_id, OfferEnd::Declined);
            self.sync_availability();
            self.review(ctx);
            return Box::pin(fut::ready(Err(AnswerError::Gone(OfferEnd::Expired))));
        };
        let body = super::peers::RemoteAccept {
            trip_id,
            terms: (*terms).clone(),
            expires_ms,
            driver: self.handoff(position),
        };
        let call = {
            let peer = peer.clone();
            async move {
                // An answer that did not come back leaves the outcome unknown: the trip may have
                // taken the driver. Ask again (a repeated accept is answered as the first); the
                // driver takes nothing else meanwhile.
                let mut delay = Duration::from_millis(250);
                let mut last = Err(String::new());
                for _ in 0..REMOTE_ACCEPT_ATTEMPTS {
                    last = super::peers::call::<_, super::peers::RemoteAcceptAnswer>(
                        &peer,
                        "/api/cluster/accepts",
                        &token,
                        &body,
                    )
                    .await;
                    if matches!(last, Ok(Some(_))) {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                last
            }
        };
        Box::pin(call.into_actor(self).map(move |answer, actor, ctx| {
            actor.offer = None;
            let result = match answer {
                Ok(Some(super::peers::RemoteAcceptAnswer::Won { trip })) => {
                    actor.moved_to(&peer, ctx);
                    Ok(Answer::AssignedThere(Box::new(trip)))
                }
                Ok(Some(super::peers::RemoteAcceptAnswer::Lost { reason })) => {
                    actor.remember(trip_id, reason);
                    Err(AnswerError::Gone(reason))
                }
                Ok(None) | Err(_) => {
                    // The trip's instance did not answer any attempt: it is down, and so are
                    // its trips until it returns (and resumes them without this driver).
                    tracing::warn!(driver_id = %actor.driver_id, %trip_id, peer = %peer.id, "a remote accept got no answer");
                    actor.remember(trip_id, OfferEnd::Expired);
                    Err(AnswerError::Gone(OfferEnd::Expired))
                }
            };
            actor.sync_availability();
            actor.review(ctx);
            result
        }))
    }
}

impl Handler<Withdraw> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: Withdraw, ctx: &mut Self::Context) {
        self.remember(msg.trip_id, msg.reason);
        // While an accept is in flight the trip's answer says how it ended.
        if self
            .offer
            .take_if(|o| o.trip_id == msg.trip_id && !o.accepting)
            .is_some()
        {
            self.send_frame(protocol::offer_cancelled(msg.trip_id, msg.reason).to_string());
            self.sync_availability();
            self.review(ctx);
        }
    }
}

impl Handler<Respond> for DriverActor {
    type Result = ResponseActFuture<Self, Result<Answer, AnswerError>>;

    fn handle(&mut self, msg: Respond, ctx: &mut Self::Context) -> Self::Result {
        let refuse = |e| -> Self::Result { Box::pin(fut::ready(Err(e))) };
        let held = self
            .offer
            .as_mut()
            .filter(|o| o.trip_id == msg.trip_id && !o.accepting);
        let Some(held) = held else {
            if self.trip.as_ref().is_some_and(|t| t.0 == msg.trip_id) {
                return refuse(AnswerError::Assigned);
            }
            let reason = self
                .recent
                .iter()
                .rev()
                .find(|(id, _)| *id == msg.trip_id)
                .map(|(_, reason)| *reason);
            return refuse(reason.map_or(AnswerError::NotOffered, AnswerError::Gone));
        };
        if !msg.accept {
            let trip = held.trip.clone();
            self.offer = None;
            self.decline_to(&trip, msg.trip_id);
            self.remember(msg.trip_id, OfferEnd::Declined);
            self.sync_availability();
            self.review(ctx);
            return Box::pin(fut::ready(Ok(Answer::Declined)));
        }
        held.accepting = true;
        let trip = match held.trip.clone() {
            TripLink::Local(trip) => trip,
            TripLink::Remote(peer) => {
                let (terms, expires_ms) = (Arc::clone(&held.terms), held.expires_ms);
                return self.accept_there(peer, terms, expires_ms, ctx);
            }
        };
        let request = trip.send(Accepting {
            driver_id: self.driver_id,
            driver: ctx.address(),
            position: self.position,
            request_id: msg.request_id.clone(),
            traceparent: msg.traceparent.clone(),
        });
        Box::pin(request.into_actor(self).map(move |answer, actor, ctx| {
            let released = actor.offer.take().and_then(|o| o.released);
            let result = match answer {
                Ok(Ok(_)) if released.is_some() => {
                    // Won, then the trip ended before this answer came back: the driver is free.
                    let reason = released.unwrap_or(OfferEnd::Expired);
                    actor.remember(msg.trip_id, reason);
                    Err(AnswerError::Gone(reason))
                }
                Ok(Ok(won)) => {
                    actor.trip = Some((msg.trip_id, trip));
                    Ok(Answer::Assigned(Box::new(won)))
                }
                Ok(Err(reason)) => {
                    actor.remember(msg.trip_id, reason);
                    Err(AnswerError::Gone(reason))
                }
                Err(_) => {
                    // The trip's actor stopped before it read the accept: say how the trip ended.
                    let reason = actor.ended_reason(msg.trip_id);
                    actor.remember(msg.trip_id, reason);
                    Err(AnswerError::Gone(reason))
                }
            };
            actor.sync_availability();
            actor.review(ctx);
            result
        }))
    }
}

impl Handler<TripNotice> for DriverActor {
    type Result = ();

    fn handle(&mut self, msg: TripNotice, ctx: &mut Self::Context) {
        if msg.release
            && let Some(offer) = self
                .offer
                .as_mut()
                .filter(|o| o.trip_id == msg.trip_id && o.accepting)
        {
            // The trip took this driver's accept and ended before the answer arrived here.
            offer.released = Some(msg.reason.unwrap_or(OfferEnd::Expired));
            return;
        }
        if self.trip.as_ref().is_none_or(|t| t.0 != msg.trip_id) {
            return;
        }
        if let Some(frame) = msg.frame {
            self.send_frame(frame);
        }
        if msg.release {
            self.trip = None;
            self.sync_availability();
            self.review(ctx);
        }
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
