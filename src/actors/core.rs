//! [`Core`]: the handles the running system shares — the settings, the cell actors (shard map),
//! driver and trip registries, the live-trip store, the matching board, rider sockets, the market,
//! the durable store's writer, the bus and the notification actor. Actors and the trip use cases
//! reach each other through it; it holds nothing of HTTP (keys, password hashing, limiters and the
//! metrics renderer are the server's state, `http::state`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use actix::{Actor, Addr, Arbiter};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::board::MatchingBoard;
use super::directory::DriverDirectory;
use super::driver::DriverActor;
use super::market::Market;
use super::notification::{NotificationActor, TripEventNotice};
use super::payment::PaymentDesk;
use super::registry::{DriverRegistry, TripRegistry};
use super::riders::RiderHub;
use super::shards::ShardMap;
use super::trip_store::TripStore;
use crate::config::{ConfigError, Settings};
use crate::dispatch::{
    EventRecord, InvalidVehicleType, MatchingPolicy, TooManyVehicleTypes, Trip, VehicleType,
    VehicleTypes,
};
use crate::geo::{NearbyHit, NearbyQuery};
use crate::persistence::bus::BusMessage;
use crate::persistence::{Persistence, Snapshot, StoreError, TripWrite, Write};

/// Why a driver actor could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum DriverLookupError {
    /// The token names a malformed vehicle type.
    #[error(transparent)]
    Vehicle(#[from] InvalidVehicleType),
    /// The engine tracks too many vehicle types already.
    #[error(transparent)]
    TooMany(#[from] TooManyVehicleTypes),
}

/// The handles every actor and use case reaches. Cheap to clone.
#[derive(Clone)]
pub struct Core(Arc<CoreInner>);

/// Mints a short-lived operator token for calls between instances.
pub type PeerToken = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// What [`Core`] holds.
pub struct CoreInner {
    /// The settings the engine started with.
    pub settings: Settings,
    /// Cell actors by shard.
    pub shards: ShardMap,
    /// Driver actors by driver id.
    pub drivers: DriverRegistry,
    /// Driver profiles.
    pub directory: DriverDirectory,
    /// Vehicle type names ↔ index ids.
    pub vehicles: VehicleTypes,
    /// Trip states and event logs.
    pub trips: TripStore,
    /// Trip actors by trip id.
    pub trip_actors: TripRegistry,
    /// Matching trips by pickup cell.
    pub board: MatchingBoard,
    /// Rider sockets.
    pub riders: RiderHub,
    /// Tariffs, surge, promotions.
    pub market: Market,
    /// Radius steps, batch size, offer life.
    pub policy: Arc<MatchingPolicy>,
    /// The durable store's writer, once attached (the engine always has one; bare cores in unit
    /// tests and benchmarks do not).
    persistence: OnceLock<Persistence>,
    /// The Redis snapshot, when `redis.url` is set.
    snapshot: OnceLock<Snapshot>,
    /// Settles completed trips.
    pub payments: PaymentDesk,
    /// The in-process bus: every published event when `amqp.url` is unset.
    pub bus: broadcast::Sender<Arc<BusMessage>>,
    /// Whether the last publish to the broker succeeded.
    pub broker_healthy: Arc<AtomicBool>,
    /// Turns trip events into push, SMS and e-mail messages, once started.
    notifications: OnceLock<Addr<NotificationActor>>,
    /// Pairs the trips of a window with drivers (`matching.mode = "batched"` only).
    batcher: OnceLock<Addr<super::batcher::Batcher>>,
    /// Mints the operator token this instance calls its peers with (set by the engine, which
    /// holds the signing key).
    peer_token: OnceLock<PeerToken>,
    /// Vehicle type of drivers whose token names none.
    pub default_vehicle: VehicleType,
    /// Which instance owns which region (SPEC §11).
    pub regions: crate::geo::Regions,
    /// When the engine started.
    pub started: Instant,
    /// Drivers online now (whether or not their socket is open).
    online: std::sync::atomic::AtomicI64,
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    arbiters: Mutex<Vec<Arbiter>>,
}

impl std::ops::Deref for Core {
    type Target = CoreInner;

    fn deref(&self) -> &CoreInner {
        &self.0
    }
}

impl Core {
    /// Starts the cell arbiters and the shared state. Must run inside an actix system.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if the settings are invalid.
    pub fn start(settings: Settings) -> Result<Self, ConfigError> {
        settings.validate()?;
        let grid = settings.grid()?;
        let regions = settings.regions()?;
        let threads = match settings.geo.cell_arbiters {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        };
        let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
        let shards = ShardMap::new(
            grid,
            arbiters.iter().map(Arbiter::handle).collect(),
            settings.location.ttl(),
        );
        let default_vehicle = VehicleType::parse(&settings.vehicles.default_type).map_err(|e| {
            ConfigError::Invalid {
                key: "vehicles.default_type",
                reason: e.to_string(),
            }
        })?;
        let (shutdown, _) = watch::channel(false);
        let market = Market::new(&settings)?;
        let policy = Arc::new(settings.matching.policy());
        let drivers = DriverRegistry::default();
        let registry = drivers.clone();
        shards.set_resettle(Arc::new(move |shard| {
            for driver in registry.all() {
                driver.do_send(super::driver::Resettle { shard });
            }
        }));
        let core = Self(Arc::new(CoreInner {
            trips: TripStore::default(),
            trip_actors: TripRegistry::default(),
            board: MatchingBoard::new(grid.shard_res(), policy.max_radius_m()),
            riders: RiderHub::default(),
            market,
            policy,
            persistence: OnceLock::new(),
            snapshot: OnceLock::new(),
            payments: PaymentDesk::default(),
            bus: broadcast::channel(4_096).0,
            broker_healthy: Arc::new(AtomicBool::new(true)),
            notifications: OnceLock::new(),
            batcher: OnceLock::new(),
            peer_token: OnceLock::new(),
            settings,
            shards,
            drivers,
            directory: DriverDirectory::default(),
            vehicles: VehicleTypes::default(),
            default_vehicle,
            regions,
            started: Instant::now(),
            online: std::sync::atomic::AtomicI64::new(0),
            ready: AtomicBool::new(false),
            shutdown,
            arbiters: Mutex::new(arbiters),
        }));
        if core.settings.matching.mode == crate::dispatch::MatchingMode::Batched {
            let _ = core
                .batcher
                .set(super::batcher::Batcher::new(core.clone()).start());
        }
        // Nothing to recover yet: the engine is ready as soon as its actors run.
        core.ready.store(true, Ordering::Release);
        Ok(core)
    }

    /// Attaches the durable store's writer (once).
    pub fn attach_persistence(&self, persistence: Persistence) {
        let _ = self.persistence.set(persistence);
    }

    /// Sets how calls to peers are authenticated (once).
    pub fn attach_peer_token(&self, mint: PeerToken) {
        let _ = self.peer_token.set(mint);
    }

    /// A fresh token for a call to a peer, if the engine set a way to mint one.
    #[must_use]
    pub fn peer_token(&self) -> Option<String> {
        self.peer_token.get().and_then(|mint| mint())
    }

    /// Attaches the Redis snapshot (once).
    pub fn attach_snapshot(&self, snapshot: Snapshot) {
        let _ = self.snapshot.set(snapshot);
    }

    /// The durable store's writer.
    #[must_use]
    pub fn persistence(&self) -> Option<&Persistence> {
        self.persistence.get()
    }

    /// The Redis snapshot.
    #[must_use]
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.get()
    }

    /// Marks start-up done (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the engine has begun to stop.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether start-up has finished.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// A receiver that turns `true` when the engine begins to shut down.
    #[must_use]
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The driver's actor, started (and its profile created) on first use. A vehicle type in the
    /// driver's token is used when the driver has no profile yet.
    ///
    /// # Errors
    ///
    /// [`DriverLookupError`] for a malformed vehicle type or too many distinct ones.
    pub fn driver(
        &self,
        driver_id: Uuid,
        claimed_vehicle: Option<&str>,
    ) -> Result<Addr<DriverActor>, DriverLookupError> {
        if let Some(addr) = self.drivers.get(driver_id) {
            return Ok(addr);
        }
        let vehicle_type = match claimed_vehicle {
            Some(raw) => VehicleType::parse(raw)?,
            None => self.default_vehicle.clone(),
        };
        let profile = self.directory.get_or_create(driver_id, vehicle_type);
        let vehicle = self.vehicles.intern(&profile.vehicle_type)?;
        Ok(self.drivers.get_or_start(driver_id, || {
            DriverActor::new(self.clone(), profile, vehicle).start()
        }))
    }

    /// The nearest matching drivers, nearest first, read from the shards' indexes on the
    /// calling thread.
    #[must_use]
    pub fn nearby(&self, query: NearbyQuery) -> Vec<NearbyHit> {
        self.shards.nearby(query)
    }

    /// The batcher, in `batched` mode.
    #[must_use]
    pub fn batcher(&self) -> Option<&Addr<super::batcher::Batcher>> {
        self.batcher.get()
    }

    /// Starts the notification actor (once), which turns trip events into messages for riders and
    /// drivers.
    pub fn start_notifications(&self) {
        let _ = self
            .notifications
            .set(NotificationActor::new(self.clone()).start());
    }

    /// Records a trip's new events: in memory at once, in the durable store behind, and tells the
    /// notification actor.
    pub fn save_trip(&self, trip: &Trip, records: Vec<EventRecord>) {
        let _ = self.save_trip_from(trip, records, None);
    }

    /// As [`Core::save_trip`], for events caused by the HTTP request `request_id`; the receiver
    /// fires once these events (and so every earlier one) are committed.
    pub fn save_trip_from(
        &self,
        trip: &Trip,
        records: Vec<EventRecord>,
        request_id: Option<Arc<str>>,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.trips.append(trip, &records);
        if let Some(notifications) = self.notifications.get() {
            // Notes (offers, refused PINs) concern nobody who is not looking at the app.
            for record in records.iter().filter(|r| !r.event.is_note()) {
                notifications.do_send(TripEventNotice {
                    trip_id: trip.trip_id,
                    rider_id: trip.rider_id,
                    driver_id: trip.driver_id,
                    seq: record.seq,
                    kind: record.event.kind(),
                    fare: trip.fare.map(|f| f.total),
                });
            }
        }
        let p = self.persistence()?;
        let queued = p.write_durable(Write::Trip(Box::new(TripWrite {
            trip: trip.clone(),
            records,
            idempotency: None,
            request_id,
            traceparent: crate::telemetry::current_traceparent(),
        })));
        if queued.is_err() {
            tracing::error!(trip_id = %trip.trip_id, "trip events not queued: the writer has stopped");
        }
        queued.ok()
    }

    /// A trip: from memory, or read back from the durable store (and then kept in memory).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn load_trip(&self, trip_id: Uuid) -> Result<Option<Trip>, StoreError> {
        if let Some(trip) = self.trips.get(trip_id) {
            return Ok(Some(trip));
        }
        let Some(p) = self.persistence() else {
            return Ok(None);
        };
        match p.store().trip(trip_id).await {
            Ok(Some((trip, events))) => {
                if self.trips.get(trip_id).is_none() {
                    self.trips.insert(trip.clone(), events);
                }
                Ok(Some(trip))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A trip's events, oldest first (memory, else the durable store).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn load_events(&self, trip_id: Uuid) -> Result<Option<Vec<EventRecord>>, StoreError> {
        if self.load_trip(trip_id).await?.is_none() {
            return Ok(None);
        }
        Ok(self.trips.events(trip_id))
    }

    /// A rider's trips, newest first, older than `before`, at most `limit`: the durable store's
    /// list merged with trips not written yet.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails.
    pub async fn rider_trips(
        &self,
        rider_id: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Trip>, StoreError> {
        let mut ids: Vec<Uuid> = self
            .trips
            .rider_trips(rider_id, before, limit)
            .iter()
            .map(|t| t.trip_id)
            .collect();
        if let Some(p) = self.persistence() {
            let stored = p.store().rider_trip_ids(rider_id, before, limit).await?;
            ids.extend(stored);
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids.truncate(limit);
        let mut trips = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(trip) = self.load_trip(id).await? {
                trips.push(trip);
            }
        }
        Ok(trips)
    }

    /// Forgets finished trips older than `trip.retention_s` (the store keeps them). Returns the
    /// number forgotten.
    pub fn prune_history(&self, now_ms: i64) -> usize {
        let retention_ms = (self.settings.trip.retention_s * 1_000.0) as i64;
        self.trips.prune(now_ms, retention_ms)
    }

    /// A driver went online (`+1`) or offline (`-1`).
    pub fn online_changed(&self, by: i64) {
        self.online.fetch_add(by, Ordering::AcqRel);
        metrics::gauge!(crate::metrics::DRIVERS_ONLINE).increment(by as f64);
    }

    /// Drivers online now.
    #[must_use]
    pub fn drivers_online(&self) -> u64 {
        u64::try_from(self.online.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Tells sessions and background tasks that the engine is stopping.
    pub fn signal_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Stops every trip actor (the drain before the last flush): no timer may commit an event
    /// after the store has been flushed.
    pub async fn halt_trips(&self) {
        for actor in self.trip_actors.all() {
            let _ = actor.send(super::trip::Halt).await;
        }
    }

    /// Tells sessions to close and stops the cell arbiters.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        self.shards.stopping();
        let arbiters = std::mem::take(
            &mut *self
                .arbiters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for arbiter in arbiters {
            arbiter.stop();
        }
    }
}
