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
//! It stops when no session is attached and the driver is offline for `driver.idle_grace_s`, or
//! online without a fresh position for `location.ttl_s`; it then leaves the index and the registry
//! and writes its last state to the directory.

use std::time::Duration;

use actix::prelude::*;
use h3o::CellIndex;
use metrics::{Counter, counter, gauge};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::cell::{CellActor, Remove, Upsert};
use crate::clock::now_ms;
use crate::directory::{DriverProfile, Position};
use crate::dispatch::{DriverStatus, VehicleType};
use crate::engine::Core;
use crate::geo::{IndexedDriver, LatLng, VehicleId};
use crate::metrics::{DRIVER_ACTORS, DRIVERS_ONLINE, LOCATION_UPDATES_DROPPED};

/// WebSocket close code telling an older session that a newer one took over.
pub const CLOSE_REPLACED: u16 = 4000;

/// What a driver actor asks its session to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Send this text frame.
    Text(String),
    /// Close the socket with this code and reason.
    Close(u16, String),
}

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

/// A position as shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PositionView {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lng: f64,
    /// Heading, degrees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f32>,
    /// Speed, m/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f32>,
    /// When the app took it, epoch ms.
    pub ts_ms: i64,
    /// When the engine received it, epoch ms.
    pub received_ms: i64,
}

impl From<Position> for PositionView {
    fn from(p: Position) -> Self {
        Self {
            lat: p.point.lat(),
            lng: p.point.lng(),
            heading: p.heading,
            speed_mps: p.speed_mps,
            ts_ms: p.ts_ms,
            received_ms: p.received_ms,
        }
    }
}

/// A driver's state as the engine knows it (`GET /api/drivers/{id}`, the `session` frame).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriverSnapshot {
    /// The driver.
    pub driver_id: Uuid,
    /// `online` or `offline`.
    pub status: DriverStatus,
    /// Vehicle type.
    pub vehicle_type: String,
    /// Whether it can receive an offer now.
    pub available: bool,
    /// Whether a driver socket is attached.
    pub connected: bool,
    /// Last position.
    pub last_position: Option<PositionView>,
    /// The trip it is serving; trips arrive with the matching engine.
    pub current_trip: Option<Uuid>,
}

impl DriverSnapshot {
    /// The view of a driver with no live actor.
    #[must_use]
    pub fn from_profile(profile: &DriverProfile) -> Self {
        Self {
            driver_id: profile.driver_id,
            status: profile.status,
            vehicle_type: profile.vehicle_type.to_string(),
            available: false,
            connected: false,
            last_position: profile.last_position.map(PositionView::from),
            current_trip: None,
        }
    }
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
    ttl_ms: i64,
    drops: Counter,
}

impl DriverActor {
    /// An actor for the driver described by `profile`, its vehicle type interned as `vehicle`.
    #[must_use]
    pub fn new(core: Core, profile: DriverProfile, vehicle: VehicleId) -> Self {
        let ttl_ms = i64::try_from(core.settings.location.ttl().as_millis()).unwrap_or(i64::MAX);
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
            ttl_ms,
            drops: counter!(LOCATION_UPDATES_DROPPED, "reason" => "cell_mailbox_full"),
        }
    }

    fn snapshot(&self) -> DriverSnapshot {
        DriverSnapshot {
            driver_id: self.driver_id,
            status: self.status,
            vehicle_type: self.vehicle_type.to_string(),
            available: self.status == DriverStatus::Online,
            connected: self.session.is_some(),
            last_position: self.position.map(PositionView::from),
            current_trip: None,
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
            available: true,
            seen_ms: position.received_ms,
        };
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
        if self.session.is_some() {
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
            if actor.session.is_some() {
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
        self.review(ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.unplace();
        if self.status == DriverStatus::Online {
            gauge!(DRIVERS_ONLINE).decrement(1.0);
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

    fn handle(&mut self, Location(update): Location, _: &mut Self::Context) {
        let now = now_ms();
        self.position = Some(Position {
            point: update.point,
            heading: update.heading,
            speed_mps: update.speed_mps,
            ts_ms: update.ts_ms.unwrap_or(now),
            received_ms: now,
        });
        if self.status == DriverStatus::Online {
            self.place();
        }
    }
}

impl Handler<SetStatus> for DriverActor {
    type Result = MessageResult<SetStatus>;

    fn handle(&mut self, SetStatus(status): SetStatus, ctx: &mut Self::Context) -> Self::Result {
        if status != self.status {
            self.status = status;
            match status {
                DriverStatus::Online => {
                    gauge!(DRIVERS_ONLINE).increment(1.0);
                    if self.is_fresh(now_ms()) {
                        self.place();
                    }
                }
                DriverStatus::Offline => {
                    gauge!(DRIVERS_ONLINE).decrement(1.0);
                    self.unplace();
                }
            }
            tracing::info!(driver_id = %self.driver_id, status = status.as_str(), "driver status changed");
            self.review(ctx);
        }
        MessageResult(self.snapshot())
    }
}

impl Handler<Attach> for DriverActor {
    type Result = MessageResult<Attach>;

    fn handle(&mut self, Attach(link): Attach, ctx: &mut Self::Context) -> Self::Result {
        if let Some(old) = self.session.replace(link) {
            let _ = old.tx.try_send(Outbound::Close(
                CLOSE_REPLACED,
                "replaced by a newer session".into(),
            ));
        }
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
            self.review(ctx);
        }
    }
}

impl Handler<GetSnapshot> for DriverActor {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::cell::Count;
    use crate::config::Settings;
    use crate::geo::NearbyQuery;

    fn update(lat: f64, lng: f64) -> Location {
        Location(LocationUpdate {
            point: LatLng::new(lat, lng).unwrap(),
            heading: None,
            speed_mps: None,
            ts_ms: None,
        })
    }

    async fn held(core: &Core) -> Vec<(CellIndex, usize)> {
        let mut out = Vec::new();
        for shard in core.shards.shards() {
            out.push((shard.cell, shard.addr.send(Count).await.unwrap()));
        }
        out
    }

    fn query(lat: f64, lng: f64) -> NearbyQuery {
        NearbyQuery {
            point: LatLng::new(lat, lng).unwrap(),
            radius_m: 1_000.0,
            limit: 5,
            vehicle: None,
            fresh_since_ms: 0,
        }
    }

    #[actix::test]
    async fn a_driver_moves_itself_between_shards() {
        let core = Core::start(Settings::default()).unwrap();
        let driver = core.driver(Uuid::now_v7(), None).unwrap();
        driver.send(SetStatus(DriverStatus::Online)).await.unwrap();
        driver.send(update(48.85, 2.35)).await.unwrap();
        assert_eq!(core.nearby(query(48.85, 2.35)).await.unwrap().len(), 1);
        // Lyon is hundreds of kilometres and many shards away from Paris.
        driver.send(update(45.76, 4.84)).await.unwrap();
        driver.send(GetSnapshot).await.unwrap();
        let counts = held(&core).await;
        assert_eq!(counts.len(), 2, "two shards were used");
        assert_eq!(
            counts.iter().map(|c| c.1).sum::<usize>(),
            1,
            "the driver is in exactly one shard: {counts:?}"
        );
        assert!(
            core.nearby(query(48.85, 2.35)).await.unwrap().is_empty(),
            "gone from the old shard"
        );
        assert_eq!(
            core.nearby(query(45.76, 4.84)).await.unwrap().len(),
            1,
            "found in the new shard"
        );
        driver.send(SetStatus(DriverStatus::Offline)).await.unwrap();
        driver.send(GetSnapshot).await.unwrap();
        assert_eq!(
            held(&core).await.iter().map(|c| c.1).sum::<usize>(),
            0,
            "offline leaves the index"
        );
        core.shutdown();
    }

    #[actix::test]
    async fn an_idle_offline_driver_stops_and_keeps_its_profile() {
        let mut settings = Settings::default();
        settings.driver.idle_grace_s = 0.1;
        let core = Core::start(settings).unwrap();
        let id = Uuid::now_v7();
        let driver = core.driver(id, Some("xl")).unwrap();
        driver.send(update(10.0, 10.0)).await.unwrap();
        assert_eq!(core.drivers.len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!driver.connected(), "the actor stopped");
        assert!(core.drivers.get(id).is_none(), "and left the registry");
        let profile = core.directory.get(id).unwrap();
        assert_eq!(profile.vehicle_type.as_str(), "xl");
        assert_eq!(profile.last_position.map(|p| p.point.lat()), Some(10.0));
        core.shutdown();
    }

    #[actix::test]
    async fn an_attached_session_keeps_the_actor_alive_and_a_newer_one_replaces_it() {
        let mut settings = Settings::default();
        settings.driver.idle_grace_s = 0.1;
        let core = Core::start(settings).unwrap();
        let driver = core.driver(Uuid::now_v7(), None).unwrap();
        let (tx1, mut rx1) = mpsc::channel(4);
        driver
            .send(Attach(SessionLink { id: 1, tx: tx1 }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(driver.connected(), "a session keeps the driver");
        let (tx2, _rx2) = mpsc::channel(4);
        let snapshot = driver
            .send(Attach(SessionLink { id: 2, tx: tx2 }))
            .await
            .unwrap();
        assert!(snapshot.connected);
        assert_eq!(
            rx1.recv().await,
            Some(Outbound::Close(
                CLOSE_REPLACED,
                "replaced by a newer session".into()
            ))
        );
        // A late detach from the replaced session changes nothing.
        driver.send(Detach { session_id: 1 }).await.unwrap();
        assert!(driver.send(GetSnapshot).await.unwrap().connected);
        driver.send(Detach { session_id: 2 }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !driver.connected(),
            "without a session an offline driver stops after the grace"
        );
        core.shutdown();
    }
}
