//! The running engine: [`Core`] is the set of shared actors and stores every handler and actor
//! reaches; [`Engine`] is the core plus its HTTP/WebSocket server. `main`, the integration tests
//! and the benchmarks all start exactly this.

use std::net::TcpListener;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use actix_web::dev::{Server, ServerHandle};
use anyhow::Context as _;
use metrics::counter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use uuid::Uuid;

use crate::actors::board::MatchingBoard;
use crate::actors::driver::DriverActor;
use crate::actors::registry::{DriverRegistry, TripRegistry};
use crate::actors::riders::RiderHub;
use crate::actors::shards::ShardMap;
use crate::actors::trip::TripActor;
use crate::auth::JwtKeys;
use crate::clock::now_ms;
use crate::config::{ConfigError, Settings};
use crate::directory::DriverDirectory;
use crate::dispatch::EventRecord;
use crate::dispatch::{
    InvalidVehicleType, MatchingPolicy, Money, NewTrip, PromoError, Quote, TooManyVehicleTypes,
    Trip, VehicleType, VehicleTypes, pin_from,
};
use crate::geo::{LatLng, NearbyHit, NearbyQuery};
use crate::market::{Market, QuoteError};
use crate::metrics::{TRIP_REQUESTS, TRIP_TRANSITIONS};
use crate::persistence::bus::{Amqp, Sink, run_outbox};
use crate::persistence::{Persistence, Snapshot, Store, TripWrite, Write};
use crate::trips::{IdempotentRequest, TripStore};

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

/// A rider's trip request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TripRequest {
    /// Pickup.
    pub origin: LatLng,
    /// Drop-off.
    pub destination: LatLng,
    /// Vehicle type; the configured default when `None`.
    pub vehicle_type: Option<String>,
    /// Promotion code.
    pub promo_code: Option<String>,
    /// Client key making retries safe: the same key from the same rider gives the same trip.
    pub idempotency_key: Option<String>,
    /// The HTTP request it came in, carried to its events' bus messages.
    pub request_id: Option<Arc<str>>,
}

/// Why a trip request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Malformed vehicle type.
    #[error(transparent)]
    Vehicle(#[from] InvalidVehicleType),
    /// Too many vehicle types.
    #[error(transparent)]
    TooMany(#[from] TooManyVehicleTypes),
    /// Not priceable (unknown vehicle type or unusable promotion).
    #[error(transparent)]
    Quote(#[from] QuoteError),
    /// The idempotency key was used for a different request.
    #[error("this idempotency_key was already used for a different trip request")]
    KeyReused,
    /// The first request with this idempotency key is still being handled.
    #[error("a request with this idempotency_key is still being handled; retry shortly")]
    InProgress,
    /// Too many writes are waiting for the database.
    #[error("the database is behind; new trips are refused until it catches up")]
    Backlog,
    /// The trip's first event did not become durable in time (the trip is kept).
    #[error(
        "the trip could not be stored in time; it is kept and will be stored when the database \
         answers: retry with the same idempotency_key to see it"
    )]
    NotDurable,
    /// The durable store failed to answer a read.
    #[error("the trip store failed: {0}")]
    Store(String),
}

impl From<PromoError> for RequestError {
    fn from(e: PromoError) -> Self {
        Self::Quote(QuoteError::Promo(e))
    }
}

/// What a trip request did.
#[derive(Debug, Clone)]
pub enum Requested {
    /// A new trip.
    Created(Box<Trip>),
    /// The trip an earlier request with the same idempotency key created.
    Replayed(Box<Trip>),
}

/// Shared state of a running engine. Cheap to clone.
#[derive(Clone)]
pub struct Core(Arc<CoreInner>);

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
    /// Token keys.
    pub keys: JwtKeys,
    /// Password hashing.
    pub passwords: crate::identity::Passwords,
    /// Rate limiters and login lockout.
    pub limits: Arc<crate::identity::Limits>,
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
    pub payments: crate::payments::PaymentDesk,
    /// The in-process bus: every published event when `amqp.url` is unset.
    pub bus: tokio::sync::broadcast::Sender<Arc<crate::persistence::bus::BusMessage>>,
    /// Whether the last publish to the broker succeeded.
    pub broker_healthy: Arc<AtomicBool>,
    /// Turns trip events into push, SMS and e-mail messages, once started.
    notifications: OnceLock<Addr<crate::actors::notification::NotificationActor>>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Vehicle type of drivers whose token names none.
    pub default_vehicle: VehicleType,
    /// When the engine started.
    pub started: Instant,
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    arbiters: Mutex<Vec<Arbiter>>,
}

impl Deref for Core {
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
        if settings.auth.uses_dev_secret() {
            tracing::warn!(
                "auth.jwt_secret is the built-in development key: anyone can mint tokens. \
                 Set HEXDISPATCH__AUTH__JWT_SECRET before exposing this engine."
            );
        }
        let (shutdown, _) = watch::channel(false);
        let market = Market::new(&settings)?;
        let policy = Arc::new(MatchingPolicy {
            radius_steps_m: settings.matching.radius_steps_m.clone(),
            batch_size: settings.matching.batch_size,
            mode: settings.matching.mode,
            offer_timeout_ms: i64::try_from(
                Duration::from_secs_f64(settings.matching.offer_timeout_s).as_millis(),
            )
            .unwrap_or(i64::MAX),
        });
        let core = Self(Arc::new(CoreInner {
            keys: JwtKeys::new(&settings.auth.jwt_secret),
            passwords: crate::identity::Passwords::new(&settings.auth).map_err(|e| {
                ConfigError::Invalid {
                    key: "auth.argon2_memory_kib",
                    reason: e.to_string(),
                }
            })?,
            limits: crate::identity::Limits::new(&settings.limits, &settings.auth),
            trips: TripStore::default(),
            trip_actors: TripRegistry::default(),
            board: MatchingBoard::new(grid.shard_res(), policy.max_radius_m()),
            riders: RiderHub::default(),
            market,
            policy,
            persistence: OnceLock::new(),
            snapshot: OnceLock::new(),
            payments: crate::payments::PaymentDesk::default(),
            bus: tokio::sync::broadcast::channel(4_096).0,
            broker_healthy: Arc::new(AtomicBool::new(true)),
            notifications: OnceLock::new(),
            settings,
            shards,
            drivers: DriverRegistry::default(),
            directory: DriverDirectory::default(),
            vehicles: VehicleTypes::default(),
            metrics: crate::metrics::install(),
            default_vehicle,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            shutdown,
            arbiters: Mutex::new(arbiters),
        }));
        // Nothing to recover yet: the engine is ready as soon as its actors run.
        core.ready.store(true, Ordering::Release);
        Ok(core)
    }

    /// Attaches the durable store's writer (once).
    pub fn attach_persistence(&self, persistence: Persistence) {
        let _ = self.persistence.set(persistence);
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

    /// Records a trip's new events: in memory at once, in the durable store behind, and tells the
    /// notification actor.
    pub fn save_trip(&self, trip: &Trip, records: Vec<EventRecord>) {
        self.save_trip_from(trip, records, None);
    }

    /// As [`Core::save_trip`], for events caused by the HTTP request `request_id`.
    pub fn save_trip_from(
        &self,
        trip: &Trip,
        records: Vec<EventRecord>,
        request_id: Option<Arc<str>>,
    ) {
        self.trips.append(trip, &records);
        if let Some(notifications) = self.notifications.get() {
            for record in &records {
                notifications.do_send(crate::actors::notification::TripEventNotice {
                    trip_id: trip.trip_id,
                    rider_id: trip.rider_id,
                    driver_id: trip.driver_id,
                    seq: record.seq,
                    kind: record.event.kind(),
                    fare: trip.fare.map(|f| f.total),
                });
            }
        }
        if let Some(p) = self.persistence()
            && p.write(Write::Trip(Box::new(TripWrite {
                trip: trip.clone(),
                records,
                idempotency: None,
                request_id,
            })))
            .is_err()
        {
            tracing::error!(trip_id = %trip.trip_id, "trip events not queued: the writer has stopped");
        }
    }

    /// A trip: from memory, or read back from the durable store (and then kept in memory).
    ///
    /// # Errors
    ///
    /// [`RequestError::Store`] when the store fails.
    pub async fn load_trip(&self, trip_id: Uuid) -> Result<Option<Trip>, RequestError> {
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
            Err(e) => Err(RequestError::Store(e.to_string())),
        }
    }

    /// A trip's events, oldest first (memory, else the durable store).
    ///
    /// # Errors
    ///
    /// [`RequestError::Store`] when the store fails.
    pub async fn load_events(
        &self,
        trip_id: Uuid,
    ) -> Result<Option<Vec<EventRecord>>, RequestError> {
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
    /// [`RequestError::Store`] when the store fails.
    pub async fn rider_trips(
        &self,
        rider_id: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Trip>, RequestError> {
        let mut ids: Vec<Uuid> = self
            .trips
            .rider_trips(rider_id, before, limit)
            .iter()
            .map(|t| t.trip_id)
            .collect();
        if let Some(p) = self.persistence() {
            let stored = p
                .store()
                .rider_trip_ids(rider_id, before, limit)
                .await
                .map_err(|e| RequestError::Store(e.to_string()))?;
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

    /// Start-up recovery: resumes every trip the durable store holds as live (MATCHING ones match
    /// again from their step; assigned ones wait for their driver) and puts the drivers of the
    /// Redis snapshot back into the index. Returns (trips resumed, drivers restored).
    ///
    /// # Errors
    ///
    /// The store's or Redis's error.
    pub async fn recover(&self) -> anyhow::Result<(usize, usize)> {
        let mut trips = 0;
        if let Some(p) = self.persistence() {
            for trip_id in p.store().live_trip_ids().await? {
                let Some((trip, events)) = p.store().trip(trip_id).await? else {
                    continue;
                };
                if !trip.status.is_live() {
                    continue;
                }
                let vehicle = self
                    .vehicles
                    .intern(&VehicleType::parse(&trip.vehicle_type)?)?;
                self.trips.insert(trip.clone(), events);
                let actor = TripActor::new(self.clone(), trip, vehicle).start();
                self.trip_actors.insert(trip_id, actor);
                trips += 1;
            }
        }
        if let Some(p) = self.persistence() {
            // Completed but not settled (the engine stopped in between): settle now, once.
            let unsettled = p.store().trips_with_status("TRIP_COMPLETED").await?;
            let core = self.clone();
            actix_rt::spawn(async move {
                for trip_id in unsettled {
                    if let Err(e) = core.payments.settle(&core, trip_id).await {
                        tracing::warn!(%trip_id, error = %e, "settling after restart failed");
                    }
                }
            });
        }
        let mut drivers = 0;
        if let Some(snapshot) = self.snapshot() {
            let fresh_since = now_ms().saturating_sub(
                i64::try_from(self.settings.location.ttl().as_millis()).unwrap_or(i64::MAX),
            );
            for entry in snapshot.load().await? {
                if entry.status != "online" || entry.received_ms < fresh_since {
                    continue;
                }
                let Ok(actor) = self.driver(entry.driver_id, Some(&entry.vehicle_type)) else {
                    continue;
                };
                let Ok(point) = LatLng::new(entry.lat, entry.lng) else {
                    continue;
                };
                actor
                    .send(crate::actors::driver::Restore(crate::directory::Position {
                        point,
                        heading: entry.heading,
                        speed_mps: entry.speed_mps,
                        ts_ms: entry.ts_ms,
                        received_ms: entry.received_ms,
                    }))
                    .await?;
                drivers += 1;
            }
        }
        Ok((trips, drivers))
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

    /// The nearest matching drivers, nearest first, through the cell actors.
    ///
    /// # Errors
    ///
    /// [`actix::MailboxError`] if a cell actor is gone (only during shutdown).
    pub async fn nearby(&self, query: NearbyQuery) -> Result<Vec<NearbyHit>, actix::MailboxError> {
        self.shards.nearby(query).await
    }

    /// Opens a trip for `rider_id` (or, for a repeated idempotency key, finds the one it opened)
    /// and starts its matching. The trip's first events are stored before this returns.
    ///
    /// # Errors
    ///
    /// [`RequestError`]: an unknown vehicle type, an unusable promotion, a reused key.
    pub async fn request_trip(
        &self,
        rider_id: Uuid,
        request: TripRequest,
    ) -> Result<Requested, RequestError> {
        let vehicle_type = match &request.vehicle_type {
            Some(raw) => VehicleType::parse(raw)?,
            None => self.default_vehicle.clone(),
        };
        self.market.tariff(request.origin, vehicle_type.as_str())?;
        let trip_id = Uuid::now_v7();
        if let Some(key) = &request.idempotency_key {
            let fingerprint = format!(
                "{:?}|{:?}|{}|{:?}",
                request.origin,
                request.destination,
                vehicle_type.as_str(),
                request.promo_code.as_deref().map(str::to_ascii_uppercase)
            );
            let claim = IdempotentRequest {
                trip_id,
                fingerprint: fingerprint.clone(),
            };
            if let Some(p) = self.persistence()
                && self.trips.claim_key(rider_id, key, claim.clone()).is_none()
            {
                // New to this process: the key may still be in the durable store.
                let stored = p
                    .store()
                    .idempotent(rider_id, key)
                    .await
                    .map_err(|e| RequestError::Store(e.to_string()));
                match stored {
                    Ok(None) => {}
                    Ok(Some((trip_id, stored_fingerprint))) => {
                        let prior = IdempotentRequest {
                            trip_id,
                            fingerprint: stored_fingerprint,
                        };
                        self.trips.bind_key(rider_id, key, prior.clone());
                        counter!(TRIP_REQUESTS, "outcome" => "replayed").increment(1);
                        if prior.fingerprint != fingerprint {
                            return Err(RequestError::KeyReused);
                        }
                        return self
                            .load_trip(trip_id)
                            .await?
                            .map(|t| Requested::Replayed(Box::new(t)))
                            .ok_or(RequestError::InProgress);
                    }
                    Err(e) => {
                        self.trips.release_key(rider_id, key);
                        return Err(e);
                    }
                }
            } else if let Some(prior) = self.trips.claim_key(rider_id, key, claim) {
                counter!(TRIP_REQUESTS, "outcome" => "replayed").increment(1);
                if prior.fingerprint != fingerprint {
                    return Err(RequestError::KeyReused);
                }
                return self
                    .trips
                    .get(prior.trip_id)
                    .map(|t| Requested::Replayed(Box::new(t)))
                    .ok_or(RequestError::InProgress);
            }
        }
        if self.persistence().is_some_and(Persistence::is_full) {
            if let Some(key) = &request.idempotency_key {
                self.trips.release_key(rider_id, key);
            }
            counter!(TRIP_REQUESTS, "outcome" => "refused").increment(1);
            return Err(RequestError::Backlog);
        }
        let opened = self
            .open_trip(trip_id, rider_id, &request, vehicle_type)
            .await;
        match &opened {
            Ok(_) | Err(RequestError::NotDurable) => {
                counter!(TRIP_REQUESTS, "outcome" => "created").increment(1);
            }
            Err(_) => {
                counter!(TRIP_REQUESTS, "outcome" => "refused").increment(1);
                if let Some(key) = &request.idempotency_key {
                    self.trips.release_key(rider_id, key);
                }
            }
        }
        opened.map(|t| Requested::Created(Box::new(t)))
    }

    async fn open_trip(
        &self,
        trip_id: Uuid,
        rider_id: Uuid,
        request: &TripRequest,
        vehicle_type: VehicleType,
    ) -> Result<Trip, RequestError> {
        let now = now_ms();
        let (tariff, currency) = self.market.tariff(request.origin, vehicle_type.as_str())?;
        let vehicle = self.vehicles.intern(&vehicle_type)?;
        self.market.record_demand(request.origin, now);
        let surge = self.market.surge(&self.shards, request.origin, now).await;
        let discount = match &request.promo_code {
            Some(code) => Some(self.market.redeem_promo(code, rider_id, now)?),
            None => None,
        };
        let estimate = self.market.estimate(
            request.origin,
            request.destination,
            vehicle_type.as_str(),
            surge.surge,
            discount,
        )?;
        let random = Uuid::new_v4().as_u128();
        let (trip, events) = Trip::open(
            NewTrip {
                trip_id,
                rider_id,
                vehicle_type: vehicle_type.to_string(),
                origin: request.origin,
                destination: request.destination,
                quote: Quote {
                    estimate,
                    surge: surge.surge,
                    discount,
                    cancel_fee: Money::new(tariff.cancel_fee, currency),
                },
                pin: pin_from(u16::try_from(random & 0xFFFF).unwrap_or(0)),
                promo_code: request.promo_code.as_deref().map(str::to_ascii_uppercase),
                first_radius_m: self.policy.radius_m(0).unwrap_or(0.0),
            },
            now,
        );
        self.trips.insert(trip.clone(), events.clone());
        for status in ["REQUESTED", "MATCHING"] {
            counter!(TRIP_TRANSITIONS, "status" => status).increment(1);
        }
        let durable = self.persistence().map(|p| {
            p.write_durable(Write::Trip(Box::new(TripWrite {
                trip: trip.clone(),
                records: events,
                idempotency: request.idempotency_key.clone().map(|key| {
                    (
                        key,
                        self.trips
                            .claimed(rider_id, request.idempotency_key.as_deref().unwrap_or(""))
                            .map(|c| c.fingerprint)
                            .unwrap_or_default(),
                    )
                }),
                request_id: request.request_id.clone(),
            })))
        });
        // Matching starts at once; the answer waits for durability.
        let actor = TripActor::new(self.clone(), trip.clone(), vehicle).start();
        self.trip_actors.insert(trip_id, actor);
        tracing::info!(%trip_id, %rider_id, "trip requested");
        if let Some(durable) = durable {
            let limit = Duration::from_secs_f64(self.settings.database.ack_timeout_s);
            match durable {
                Ok(rx) => match tokio::time::timeout(limit, rx).await {
                    Ok(Ok(())) => {}
                    _ => return Err(RequestError::NotDurable),
                },
                Err(_) => return Err(RequestError::NotDurable),
            }
        }
        Ok(trip)
    }

    /// Tells sessions to close and stops the cell arbiters.
    pub fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
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

/// The core plus its HTTP server, bound and ready to run.
pub struct Engine {
    core: Core,
    server: Server,
    port: u16,
}

/// Stops a running engine from elsewhere.
#[derive(Clone)]
pub struct EngineHandle {
    core: Core,
    server: ServerHandle,
}

impl EngineHandle {
    /// Graceful stop: sessions get a close frame, the server stops accepting and drains, queued
    /// writes are flushed to the database (up to `http.shutdown_timeout_s`), then the actors stop.
    pub async fn stop(&self) {
        let _ = self.core.shutdown.send(true);
        self.server.stop(true).await;
        if let Some(p) = self.core.persistence()
            && !p.flush(shutdown_timeout(&self.core.settings)).await
        {
            tracing::error!(
                pending = p.pending(),
                "stopping with writes the database did not take"
            );
        }
        self.core.shutdown();
    }
}

impl Engine {
    /// Binds the listener (port 0 picks a free one), starts the core, opens the durable store
    /// (running its migrations) and the Redis snapshot when configured, starts the server, then
    /// recovers live trips and snapshot drivers; `/ready` answers 200 only after that. Must run
    /// inside an actix system.
    ///
    /// # Errors
    ///
    /// Invalid settings, a port that cannot be bound, a database or Redis that cannot be reached,
    /// or a recovery that fails.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))?;
        let port = listener.local_addr()?.port();
        let core = Core::start(settings)?;
        core.set_ready(false);
        let store = Store::connect(core.settings.database.url.as_deref())
            .await
            .context("cannot open the database (database.url)")?;
        store
            .migrate()
            .await
            .context("database migrations failed")?;
        tracing::info!(backend = store.backend().as_str(), "database ready");
        let persistence = Persistence::start(store.clone(), core.settings.database.max_pending);
        let committed = persistence.committed();
        core.attach_persistence(persistence);
        let sink = match &core.settings.amqp.url {
            Some(url) => {
                actix_rt::spawn(crate::payments::consume_amqp(
                    core.clone(),
                    url.clone(),
                    core.shutdown_signal(),
                ));
                Sink::Amqp(Box::new(Amqp::new(url, &core.settings.amqp.exchange)))
            }
            None => {
                actix_rt::spawn(crate::payments::consume_local(
                    core.clone(),
                    core.bus.subscribe(),
                ));
                Sink::Local(core.bus.clone())
            }
        };
        let _ = core
            .notifications
            .set(crate::actors::notification::NotificationActor::new(core.clone()).start());
        actix_rt::spawn(crate::payments::reconcile(
            core.clone(),
            core.shutdown_signal(),
        ));
        actix_rt::spawn(run_outbox(
            store,
            sink,
            core.settings.amqp.publish_batch,
            committed,
            Arc::clone(&core.broker_healthy),
            core.shutdown_signal(),
        ));
        if let Some(url) = &core.settings.redis.url {
            let redis = &core.settings.redis;
            let snapshot = Snapshot::connect(url, &redis.key_prefix, redis.ttl_s)
                .await
                .context("cannot reach Redis (redis.url)")?;
            core.attach_snapshot(snapshot);
        }
        let server = crate::http::server(core.clone(), listener)?;
        tracing::info!(port, "hexdispatch listening");
        let (trips, drivers) = core.recover().await.context("recovery failed")?;
        tracing::info!(trips, drivers, "recovery done; ready");
        core.set_ready(true);
        Ok(Self { core, server, port })
    }

    /// The bound port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// The shared core.
    #[must_use]
    pub const fn core(&self) -> &Core {
        &self.core
    }

    /// A handle to stop the engine.
    #[must_use]
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            core: self.core.clone(),
            server: self.server.handle(),
        }
    }

    /// Runs until [`EngineHandle::stop`] is called.
    ///
    /// # Errors
    ///
    /// I/O errors from the server.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let core = self.core.clone();
        let result = self.server.await;
        core.shutdown();
        result
    }

    /// Runs until SIGINT or SIGTERM, then stops gracefully (see [`EngineHandle::stop`]).
    ///
    /// # Errors
    ///
    /// I/O errors from the server or the signal handlers.
    pub async fn run_until_signalled(self) -> std::io::Result<()> {
        let handle = self.handle();
        let signals = async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; stopping gracefully");
            handle.stop().await;
        };
        actix_rt::spawn(signals);
        self.run_until_stopped().await
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Server-side timeouts, derived from settings.
#[must_use]
pub fn shutdown_timeout(settings: &Settings) -> Duration {
    Duration::from_secs(settings.http.shutdown_timeout_s)
}
