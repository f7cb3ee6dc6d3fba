//! Typed settings: built-in defaults, then `config.toml` (or `--config FILE`), then environment
//! variables `HEXDISPATCH__<SECTION>__<KEY>`, then CLI flags. Every key is documented in the shipped
//! `config.toml`; a unit test keeps the two equal.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::dispatch::{Currency, Discount, MatchingMode, Promotion, Tariff};

/// The development signing key used when none is configured; start-up warns loudly about it.
pub const DEV_JWT_SECRET: &str = "hexdispatch-dev-secret-do-not-use-in-production";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named config file does not exist.
    #[error("config file {0} does not exist")]
    Missing(String),
    /// A key has the wrong type, an unknown name, or a value the parser refused.
    #[error("invalid configuration: {0}")]
    Parse(Box<figment::Error>),
    /// A key parsed but its value is out of range.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `matching.radius_steps_m`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        // Not a `#[source]`: the message already carries figment's text, so printing the error
        // chain would repeat it.
        Self::Parse(e)
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// All settings of the engine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP listener.
    pub http: HttpSettings,
    /// Token signing.
    pub auth: AuthSettings,
    /// Durable store.
    pub database: DatabaseSettings,
    /// Event broker.
    pub amqp: AmqpSettings,
    /// Charging trips.
    pub payments: PaymentSettings,
    /// Rate limits and CORS.
    pub limits: LimitSettings,
    /// Driver position snapshot.
    pub redis: RedisSettings,
    /// H3 resolutions and cell actor placement.
    pub geo: GeoSettings,
    /// Driver position freshness.
    pub location: LocationSettings,
    /// Offer / expand-radius matching.
    pub matching: MatchingSettings,
    /// Trip lifecycle.
    pub trip: TripSettings,
    /// Fares and surge.
    pub pricing: PricingSettings,
    /// Operator views.
    pub ops: OpsSettings,
    /// WebSocket sessions.
    pub ws: WsSettings,
    /// Driver actors.
    pub driver: DriverSettings,
    /// Vehicle types.
    pub vehicles: VehicleSettings,
    /// Logging.
    pub log: LogSettings,
    /// Traces.
    pub telemetry: TelemetrySettings,
    /// Several instances sharing the map (SPEC §11).
    pub cluster: ClusterSettings,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Seconds a graceful stop waits for in-flight requests.
    pub shutdown_timeout_s: u64,
    /// Listen backlog: connections the kernel queues before the engine accepts them (a restart
    /// brings every driver back at once). The kernel caps it at `net.core.somaxconn`.
    pub backlog: u32,
}

impl HttpSettings {
    /// How long a graceful stop may take.
    #[must_use]
    pub const fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8080,
            workers: 0,
            shutdown_timeout_s: 10,
            backlog: 4_096,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 key signing access tokens.
    pub jwt_secret: SecretString,
    /// Lifetime of access tokens (login, refresh, and `hexdispatch token` without `--ttl-s`), seconds.
    pub token_ttl_s: u64,
    /// Lifetime of refresh tokens, seconds.
    pub refresh_ttl_s: u64,
    /// Failed logins in a row that lock an account.
    pub max_login_failures: u32,
    /// How long a locked account stays locked, seconds.
    pub lockout_s: u64,
    /// Argon2id memory cost, KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            token_ttl_s: 3_600,
            refresh_ttl_s: 30 * 24 * 3_600,
            max_login_failures: 5,
            lockout_s: 300,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Requests to `/api/auth/*` per minute from one IP address.
    pub auth_per_ip_per_minute: u32,
    /// Login attempts per minute for one account (whatever their outcome).
    pub logins_per_account_per_minute: u32,
    /// Trip requests per minute from one rider.
    pub trips_per_rider_per_minute: u32,
    /// Trip requests per minute from one IP address.
    pub trips_per_ip_per_minute: u32,
    /// Location frames per second one driver may send; more are dropped (and counted).
    pub locations_per_driver_per_s: u32,
    /// Origins allowed to call the API from a browser (CORS); empty allows none.
    pub cors_origins: Vec<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            auth_per_ip_per_minute: 60,
            logins_per_account_per_minute: 20,
            trips_per_rider_per_minute: 30,
            trips_per_ip_per_minute: 600,
            locations_per_driver_per_s: 10,
            cors_origins: Vec::new(),
        }
    }
}

impl AuthSettings {
    /// Whether the development key is in use.
    #[must_use]
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose_secret() == DEV_JWT_SECRET
    }
}

/// `[database]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` or `sqlite://…`; unset means the SQLite file `data/hexdispatch.db`.
    pub url: Option<String>,
    /// Writes queued for the database beyond which new trip requests are refused (503).
    pub max_pending: usize,
    /// How long `POST /api/trips` waits for its first event to be durable before answering 503.
    pub ack_timeout_s: f64,
    /// Least time between two stored position samples of one driver, seconds.
    pub location_sample_s: f64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_pending: 100_000,
            ack_timeout_s: 5.0,
            location_sample_s: 30.0,
        }
    }
}

/// `[amqp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://…`; unset means the in-process bus.
    pub url: Option<String>,
    /// Topic exchange domain events are published to. The payment queue, the dead-letter exchange
    /// and queue are named after it (`{exchange}.payments`, `{exchange}.dlx`,
    /// `{exchange}.payments.dead`).
    pub exchange: String,
    /// Unacknowledged deliveries the payment consumer holds at once.
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered.
    pub max_attempts: u32,
    /// Outbox rows published per round.
    pub publish_batch: usize,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: None,
            exchange: "hexdispatch.events".into(),
            prefetch: 16,
            max_attempts: 5,
            publish_batch: 500,
        }
    }
}

/// `[payments]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentSettings {
    /// The platform's commission on each fare, basis points (2000 = 20 %).
    pub commission_bps: u32,
    /// Seconds between reconciliation sweeps that settle completed trips no message settled.
    pub reconcile_interval_s: f64,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            commission_bps: 2_000,
            reconcile_interval_s: 30.0,
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://…`; unset means no position snapshot.
    pub url: Option<String>,
    /// Prefix of every key the engine writes.
    pub key_prefix: String,
    /// Lifetime of a driver's snapshot entry, seconds.
    pub ttl_s: u64,
    /// Least time between two snapshot writes of one driver's position, milliseconds (status
    /// changes are written at once).
    pub snapshot_interval_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "hexdispatch:".into(),
            ttl_s: 300,
            snapshot_interval_ms: 1_000,
        }
    }
}

/// `[geo]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoSettings {
    /// H3 resolution drivers are bucketed at (9 ≈ 0.1 km² cells).
    pub index_resolution: u8,
    /// H3 resolution of the shard one cell actor owns (6 ≈ 36 km²); coarser than the index.
    pub shard_resolution: u8,
    /// Arbiters (threads) the cell actors are spread over; 0 means one per core.
    pub cell_arbiters: usize,
}

impl Default for GeoSettings {
    fn default() -> Self {
        Self {
            index_resolution: 9,
            shard_resolution: 6,
            cell_arbiters: 0,
        }
    }
}

/// `[location]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocationSettings {
    /// A position older than this (seconds) is not served and its driver leaves the index.
    pub ttl_s: f64,
}

impl Default for LocationSettings {
    fn default() -> Self {
        Self { ttl_s: 300.0 }
    }
}

impl LocationSettings {
    /// The freshness window.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        Duration::from_secs_f64(self.ttl_s)
    }
}

/// `[matching]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchingSettings {
    /// `broadcast`, `sequential` or `batched`.
    pub mode: MatchingMode,
    /// `batched` mode: how long requests gather before they are paired, milliseconds.
    pub batch_window_ms: u64,
    /// Live offers a trip keeps per step.
    pub batch_size: usize,
    /// Search radius of each step, metres, increasing.
    #[serde(deserialize_with = "list_or_csv")]
    pub radius_steps_m: Vec<f64>,
    /// Life of an offer, seconds (fractions allowed).
    pub offer_timeout_s: f64,
    /// A driver with no open session is offered trips only this long after its last REST call,
    /// seconds.
    pub rest_reach_s: f64,
}

impl MatchingSettings {
    /// The policy the trip actors (and the simulator) follow.
    #[must_use]
    pub fn policy(&self) -> crate::dispatch::MatchingPolicy {
        crate::dispatch::MatchingPolicy {
            radius_steps_m: self.radius_steps_m.clone(),
            batch_size: self.batch_size,
            mode: self.mode,
            offer_timeout_ms: i64::try_from(
                Duration::from_secs_f64(self.offer_timeout_s).as_millis(),
            )
            .unwrap_or(i64::MAX),
        }
    }
}

impl Default for MatchingSettings {
    fn default() -> Self {
        Self {
            mode: MatchingMode::Broadcast,
            batch_window_ms: 2_000,
            batch_size: 5,
            radius_steps_m: vec![2_000.0, 5_000.0],
            offer_timeout_s: 15.0,
            rest_reach_s: 30.0,
        }
    }
}

/// `[trip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TripSettings {
    /// Geofence around the pickup that counts as arrived, metres.
    pub arrival_radius_m: f64,
    /// Free rider cancellation window after assignment, seconds.
    pub free_cancel_s: f64,
    /// Wrong start PINs a trip accepts before it refuses further attempts for a while.
    pub max_pin_attempts: u32,
    /// How long further PIN attempts are refused after too many wrong ones, seconds.
    pub pin_lockout_s: f64,
    /// Least time between two `driver_location` frames to a rider, milliseconds.
    pub rider_location_interval_ms: u64,
    /// How long a finished trip, its idempotency key and its place in the rider's history stay
    /// in memory after its last change, seconds (the store keeps them for good).
    pub retention_s: f64,
    /// A trip booked ahead (`pickup_at`) must be at least this far ahead, seconds.
    pub schedule_min_lead_s: f64,
    /// A trip booked ahead enters MATCHING this long before its pickup time, seconds.
    pub schedule_dispatch_lead_s: f64,
    /// A trip booked ahead whose pickup time passed more than this long ago when it comes to be
    /// dispatched (the engine was down) ends NO_DRIVER_FOUND instead, seconds.
    pub schedule_expiry_s: f64,
}

impl Default for TripSettings {
    fn default() -> Self {
        Self {
            arrival_radius_m: 100.0,
            free_cancel_s: 120.0,
            max_pin_attempts: 5,
            pin_lockout_s: 60.0,
            rider_location_interval_ms: 1_000,
            retention_s: 3_600.0,
            schedule_min_lead_s: 900.0,
            schedule_dispatch_lead_s: 600.0,
            schedule_expiry_s: 1_800.0,
        }
    }
}

/// `[pricing]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingSettings {
    /// H3 resolution of surge cells.
    pub surge_resolution: u8,
    /// Surge cap.
    pub max_surge: f64,
    /// Trip requests younger than this (seconds) count as demand for surge.
    pub surge_window_s: f64,
    /// ISO 4217 currency of the default tariffs.
    pub currency: String,
    /// Road distance over great-circle distance, for estimates.
    pub detour_factor: f64,
    /// Average speed for estimated durations and ETAs, km/h.
    pub average_speed_kmh: f64,
    /// Tariffs by vehicle type, outside any configured city. A trip may only ask for these types.
    pub tariffs: BTreeMap<String, Tariff>,
    /// Cities with their own currency and tariffs (the first whose circle holds the pickup wins).
    pub cities: Vec<CitySettings>,
    /// Promotion codes seeded into the store at start (operators add more over the API).
    pub promotions: Vec<PromotionSettings>,
    /// A final fare above this many times the estimate is capped there and flagged for review.
    pub max_fare_ratio: f64,
}

impl Default for PricingSettings {
    fn default() -> Self {
        let tariff = |base, per_km, per_min, min_fare, cancel_fee| Tariff {
            base,
            per_km,
            per_min,
            min_fare,
            cancel_fee,
        };
        Self {
            surge_resolution: 7,
            max_surge: 3.0,
            surge_window_s: 300.0,
            currency: "USD".into(),
            detour_factor: 1.3,
            average_speed_kmh: 30.0,
            tariffs: BTreeMap::from([
                ("economy".to_owned(), tariff(250, 120, 30, 700, 500)),
                ("comfort".to_owned(), tariff(400, 160, 40, 1_000, 700)),
                ("xl".to_owned(), tariff(500, 200, 45, 1_200, 800)),
            ]),
            cities: Vec::new(),
            promotions: Vec::new(),
            max_fare_ratio: 2.0,
        }
    }
}

/// `[[pricing.cities]]`: a market with its own prices.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitySettings {
    /// Name, for logs and receipts.
    pub name: String,
    /// Centre latitude, degrees.
    pub lat: f64,
    /// Centre longitude, degrees.
    pub lng: f64,
    /// Pickups within this many km of the centre use this city's tariffs.
    pub radius_km: f64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Tariffs by vehicle type.
    pub tariffs: BTreeMap<String, Tariff>,
}

/// `[[pricing.promotions]]`: one promotion code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionSettings {
    /// The code riders type (case-insensitive).
    pub code: String,
    /// Percent off (1–100); exactly one of `percent_off` and `amount_off`.
    pub percent_off: Option<u8>,
    /// Minor units off.
    pub amount_off: Option<i64>,
    /// First valid moment, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_from: time::OffsetDateTime,
    /// First moment it is no longer valid, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub valid_until: time::OffsetDateTime,
    /// Uses per rider.
    pub per_rider_limit: u32,
}

impl PromotionSettings {
    /// The promotion as the pricing code sees it.
    #[must_use]
    pub fn promotion(&self) -> Promotion {
        let ms = |t: time::OffsetDateTime| {
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
        };
        Promotion {
            code: self.code.to_ascii_uppercase(),
            discount: match (self.percent_off, self.amount_off) {
                (Some(pct), _) => Discount::Percent(pct),
                (None, amount) => Discount::Flat(amount.unwrap_or(0)),
            },
            valid_from_ms: ms(self.valid_from),
            valid_until_ms: ms(self.valid_until),
            per_rider_limit: self.per_rider_limit,
        }
    }
}

/// `[cluster]`: who this instance is among the instances sharing the map (SPEC §11).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This instance's id (in Kubernetes, the pod name); unset for a single instance.
    pub instance: Option<String>,
    /// Every instance as `id=base_url`, comma-separated, this one included.
    pub peers: Option<String>,
    /// H3 resolution of the regions instances own.
    pub region_resolution: u8,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            instance: None,
            peers: None,
            region_resolution: 3,
        }
    }
}

impl ClusterSettings {
    /// The peers as `(id, base_url)`, in the order given.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for an entry that is not `id=http(s)://…` or an id given twice.
    pub fn peer_list(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let Some(peers) = &self.peers else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for entry in peers.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, url)) = entry.split_once('=') else {
                return Err(invalid(
                    "cluster.peers",
                    format!("{entry:?} is not id=base_url"),
                ));
            };
            let (id, url) = (id.trim(), url.trim().trim_end_matches('/'));
            if id.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "cluster.peers",
                    format!("{entry:?} is not id=http://host:port"),
                ));
            }
            if out.iter().any(|(known, _)| known == id) {
                return Err(invalid("cluster.peers", format!("{id:?} is listed twice")));
            }
            out.push((id.to_owned(), url.to_owned()));
        }
        Ok(out)
    }
}

/// `[ops]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsSettings {
    /// Period of heatmap pushes on `/ws/ops`, milliseconds.
    pub heatmap_interval_ms: u64,
    /// Base map tiles for the `/ops` page, as `https://host/{z}/{x}/{y}.png`; unset, the page
    /// draws the cells on a plain background and fetches nothing from elsewhere.
    pub tile_url: Option<String>,
    /// Attribution shown under the tiles (tile servers require it).
    pub tile_attribution: String,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self {
            heatmap_interval_ms: 2_000,
            tile_url: None,
            tile_attribution: String::new(),
        }
    }
}

/// `[ws]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    /// Seconds between server pings.
    pub ping_interval_s: f64,
    /// A session silent this long (seconds) is dropped.
    pub idle_timeout_s: f64,
    /// Frames queued to one socket before it counts as too slow and is closed.
    pub outbound_queue: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self {
            ping_interval_s: 10.0,
            idle_timeout_s: 30.0,
            outbound_queue: 256,
        }
    }
}

/// `[driver]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverSettings {
    /// How long an offline driver's actor lingers with no session before it stops, seconds.
    pub idle_grace_s: f64,
    /// Location messages a driver actor may have queued; more are dropped and counted.
    pub mailbox: usize,
    /// How long nearby keeps listing a driver whose session dropped (or who was restored from the
    /// snapshot and has not come back), seconds; then it is hidden until it reconnects or calls
    /// REST again.
    pub reconnect_grace_s: f64,
}

impl Default for DriverSettings {
    fn default() -> Self {
        Self {
            idle_grace_s: 60.0,
            mailbox: 64,
            reconnect_grace_s: 60.0,
        }
    }
}

/// `[vehicles]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VehicleSettings {
    /// Type given to a driver whose token and profile name none.
    pub default_type: String,
}

impl Default for VehicleSettings {
    fn default() -> Self {
        Self {
            default_type: "economy".into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`: OpenTelemetry traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP/HTTP collector, e.g. `http://otel-collector:4318` (spans go to `/v1/traces` there,
    /// as JSON, over plain HTTP); unset or empty, no span leaves the process.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "hexdispatch".into(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Accepts a list either as a sequence or as one comma-separated string, so that
/// `HEXDISPATCH__MATCHING__RADIUS_STEPS_M=2000,5000` works.
fn list_or_csv<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<f64>),
        One(f64),
        Csv(String),
    }
    match Raw::deserialize(de)? {
        Raw::List(v) => Ok(v),
        Raw::One(x) => Ok(vec![x]),
        Raw::Csv(s) => s
            .split(',')
            .map(|part| {
                part.trim()
                    .parse::<f64>()
                    .map_err(|_| serde::de::Error::custom(format!("{part:?} is not a number")))
            })
            .collect(),
    }
}

impl Settings {
    /// Loads settings: defaults, then the file (`config.toml` in the working directory when
    /// `file` is `None` and it exists), then `HEXDISPATCH__…` environment variables; validates.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key that is unknown, mistyped or out of range.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::Missing(path.display().to_string()));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("config.toml").exists() => {
                figment = figment.merge(Toml::file_exact("config.toml"))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("HEXDISPATCH__").split("__"));
        let settings: Self = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses settings from TOML text alone (no environment), validated.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] as for [`Settings::load`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let settings: Self = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value's range, naming the first bad key.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] with the dotted key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_cluster()?;
        if self.http.host.parse::<std::net::IpAddr>().is_err() && self.http.host != "localhost" {
            return Err(invalid(
                "http.host",
                format!("{:?} is not an IP address", self.http.host),
            ));
        }
        if self.auth.jwt_secret.expose_secret().len() < 16 {
            return Err(invalid("auth.jwt_secret", "must be at least 16 bytes"));
        }
        if self.auth.token_ttl_s == 0 {
            return Err(invalid("auth.token_ttl_s", "must be positive"));
        }
        if self.auth.refresh_ttl_s == 0 {
            return Err(invalid("auth.refresh_ttl_s", "must be positive"));
        }
        if self.auth.max_login_failures == 0 {
            return Err(invalid("auth.max_login_failures", "must be positive"));
        }
        if argon2::Params::new(
            self.auth.argon2_memory_kib,
            self.auth.argon2_iterations,
            1,
            None,
        )
        .is_err()
        {
            return Err(invalid(
                "auth.argon2_memory_kib",
                "argon2 needs at least 8 KiB of memory and 1 iteration",
            ));
        }
        for (key, value) in [
            (
                "limits.auth_per_ip_per_minute",
                self.limits.auth_per_ip_per_minute,
            ),
            (
                "limits.trips_per_rider_per_minute",
                self.limits.trips_per_rider_per_minute,
            ),
            (
                "limits.trips_per_ip_per_minute",
                self.limits.trips_per_ip_per_minute,
            ),
            (
                "limits.locations_per_driver_per_s",
                self.limits.locations_per_driver_per_s,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            return Err(invalid(
                "database.url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
        }
        if self.amqp.exchange.is_empty() || self.amqp.exchange.len() > 200 {
            return Err(invalid("amqp.exchange", "must be 1–200 characters"));
        }
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be positive"));
        }
        if self.amqp.max_attempts == 0 {
            return Err(invalid("amqp.max_attempts", "must be positive"));
        }
        if self.amqp.publish_batch == 0 {
            return Err(invalid("amqp.publish_batch", "must be positive"));
        }
        positive(
            "payments.reconcile_interval_s",
            self.payments.reconcile_interval_s,
        )?;
        if self.payments.commission_bps > 10_000 {
            return Err(invalid(
                "payments.commission_bps",
                "must be within [0, 10000]",
            ));
        }
        if self.database.max_pending == 0 {
            return Err(invalid("database.max_pending", "must be positive"));
        }
        positive("database.ack_timeout_s", self.database.ack_timeout_s)?;
        positive(
            "database.location_sample_s",
            self.database.location_sample_s,
        )?;
        if self.redis.ttl_s == 0 {
            return Err(invalid("redis.ttl_s", "must be positive"));
        }
        if let Some(url) = &self.amqp.url
            && !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        {
            return Err(invalid("amqp.url", "must start with amqp:// or amqps://"));
        }
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis.url",
                "must start with redis:// or rediss://",
            ));
        }
        let grid = self.grid()?;
        if u8::from(grid.index_res()) - u8::from(grid.shard_res()) > 5 {
            return Err(invalid(
                "geo.shard_resolution",
                "must be within 5 resolutions of geo.index_resolution (a shard holds at most 7^5 index cells)",
            ));
        }
        positive("location.ttl_s", self.location.ttl_s)?;
        if self.matching.batch_size == 0 || self.matching.batch_size > 100 {
            return Err(invalid("matching.batch_size", "must be within [1, 100]"));
        }
        if self.matching.radius_steps_m.is_empty() {
            return Err(invalid(
                "matching.radius_steps_m",
                "needs at least one step",
            ));
        }
        let mut previous = 0.0;
        for &step in &self.matching.radius_steps_m {
            if !(step.is_finite() && step > previous && step <= 50_000.0) {
                return Err(invalid(
                    "matching.radius_steps_m",
                    "steps must increase strictly and lie within (0, 50000] metres",
                ));
            }
            previous = step;
        }
        positive("matching.offer_timeout_s", self.matching.offer_timeout_s)?;
        if !(1..=60_000).contains(&self.matching.batch_window_ms) {
            return Err(invalid(
                "matching.batch_window_ms",
                "must be within [1, 60000] milliseconds",
            ));
        }
        positive("matching.rest_reach_s", self.matching.rest_reach_s)?;
        positive("trip.retention_s", self.trip.retention_s)?;
        positive("driver.reconnect_grace_s", self.driver.reconnect_grace_s)?;
        positive("trip.arrival_radius_m", self.trip.arrival_radius_m)?;
        if !(self.trip.free_cancel_s.is_finite() && self.trip.free_cancel_s >= 0.0) {
            return Err(invalid("trip.free_cancel_s", "must be zero or positive"));
        }
        for (name, value) in [
            ("trip.schedule_min_lead_s", self.trip.schedule_min_lead_s),
            (
                "trip.schedule_dispatch_lead_s",
                self.trip.schedule_dispatch_lead_s,
            ),
            ("trip.schedule_expiry_s", self.trip.schedule_expiry_s),
        ] {
            if !(value.is_finite() && (0.0..=7.0 * 86_400.0).contains(&value)) {
                return Err(invalid(name, "must be within [0, 604800] seconds"));
            }
        }
        if !(self.pricing.max_fare_ratio.is_finite() && self.pricing.max_fare_ratio >= 1.0) {
            return Err(invalid("pricing.max_fare_ratio", "must be at least 1.0"));
        }
        if h3o::Resolution::try_from(self.pricing.surge_resolution).is_err() {
            return Err(invalid(
                "pricing.surge_resolution",
                "must be an H3 resolution 0–15",
            ));
        }
        if !(self.pricing.max_surge.is_finite() && self.pricing.max_surge >= 1.0) {
            return Err(invalid("pricing.max_surge", "must be at least 1.0"));
        }
        self.validate_pricing()?;
        if self.trip.max_pin_attempts == 0 {
            return Err(invalid("trip.max_pin_attempts", "must be positive"));
        }
        if !(self.trip.pin_lockout_s.is_finite() && self.trip.pin_lockout_s >= 0.0) {
            return Err(invalid("trip.pin_lockout_s", "must be zero or positive"));
        }
        if let Some(url) = self
            .telemetry
            .otlp_endpoint
            .as_deref()
            .filter(|u| !u.is_empty())
            && !url.starts_with("http://")
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// URL, e.g. http://otel-collector:4318 (the exporter speaks \
                 plain HTTP; reach a TLS collector through a local one)",
            ));
        }
        if let Some(url) = &self.ops.tile_url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            let placeholders_ok = ["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p));
            if !scheme_ok || !placeholders_ok || url.contains(['"', '<', '>', ' ']) {
                return Err(invalid(
                    "ops.tile_url",
                    "must be an http(s) URL with {z}, {x} and {y}",
                ));
            }
        }
        if self.ops.heatmap_interval_ms < 100 {
            return Err(invalid("ops.heatmap_interval_ms", "must be at least 100"));
        }
        positive("ws.ping_interval_s", self.ws.ping_interval_s)?;
        positive("ws.idle_timeout_s", self.ws.idle_timeout_s)?;
        if self.ws.idle_timeout_s <= self.ws.ping_interval_s {
            return Err(invalid(
                "ws.idle_timeout_s",
                "must be longer than ws.ping_interval_s",
            ));
        }
        if self.ws.outbound_queue == 0 {
            return Err(invalid("ws.outbound_queue", "must be positive"));
        }
        if !(self.driver.idle_grace_s.is_finite() && self.driver.idle_grace_s >= 0.0) {
            return Err(invalid("driver.idle_grace_s", "must be zero or positive"));
        }
        if self.driver.mailbox == 0 {
            return Err(invalid("driver.mailbox", "must be positive"));
        }
        crate::dispatch::VehicleType::parse(&self.vehicles.default_type)
            .map_err(|e| invalid("vehicles.default_type", e.to_string()))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if cluster.region_resolution > crate::geo::MAX_REGION_RESOLUTION {
            return Err(invalid(
                "cluster.region_resolution",
                format!(
                    "must be at most {} (a trip id carries its region)",
                    crate::geo::MAX_REGION_RESOLUTION
                ),
            ));
        }
        if cluster.region_resolution > self.geo.shard_resolution {
            return Err(invalid(
                "cluster.region_resolution",
                format!(
                    "{} is finer than geo.shard_resolution ({}): a shard must lie in one region",
                    cluster.region_resolution, self.geo.shard_resolution
                ),
            ));
        }
        let peers = cluster.peer_list()?;
        if peers.len() > 1 && cluster.instance.is_none() {
            return Err(invalid(
                "cluster.instance",
                "must be set (to one of cluster.peers) when several peers are configured",
            ));
        }
        if let Some(me) = &cluster.instance
            && !peers.is_empty()
            && !peers.iter().any(|(id, _)| id == me)
        {
            return Err(invalid(
                "cluster.instance",
                format!("{me:?} is not among cluster.peers"),
            ));
        }
        Ok(())
    }

    fn validate_pricing(&self) -> Result<(), ConfigError> {
        let p = &self.pricing;
        positive("pricing.surge_window_s", p.surge_window_s)?;
        positive("pricing.average_speed_kmh", p.average_speed_kmh)?;
        if !(p.detour_factor.is_finite() && p.detour_factor >= 1.0) {
            return Err(invalid("pricing.detour_factor", "must be at least 1.0"));
        }
        Currency::parse(&p.currency).map_err(|e| invalid("pricing.currency", e.to_string()))?;
        if p.tariffs.is_empty() {
            return Err(invalid(
                "pricing.tariffs",
                "needs at least one vehicle type",
            ));
        }
        let tariffs = p
            .tariffs
            .iter()
            .chain(p.cities.iter().flat_map(|c| &c.tariffs));
        for (vehicle, tariff) in tariffs {
            crate::dispatch::VehicleType::parse(vehicle)
                .map_err(|e| invalid("pricing.tariffs", e.to_string()))?;
            tariff.validate().map_err(|field| {
                invalid(
                    "pricing.tariffs",
                    format!("{vehicle}.{field} must not be negative"),
                )
            })?;
        }
        for city in &p.cities {
            Currency::parse(&city.currency)
                .map_err(|e| invalid("pricing.cities.currency", e.to_string()))?;
            crate::geo::LatLng::new(city.lat, city.lng)
                .map_err(|e| invalid("pricing.cities", format!("{}: {e}", city.name)))?;
            positive("pricing.cities.radius_km", city.radius_km)?;
        }
        for promo in &p.promotions {
            let ok = match (promo.percent_off, promo.amount_off) {
                (Some(pct), None) => (1..=100).contains(&pct),
                (None, Some(amount)) => amount > 0,
                _ => false,
            };
            if !ok {
                return Err(invalid(
                    "pricing.promotions",
                    format!(
                        "{}: give exactly one of percent_off (1–100) or amount_off (> 0)",
                        promo.code
                    ),
                ));
            }
            if promo.valid_until <= promo.valid_from {
                return Err(invalid(
                    "pricing.promotions",
                    format!("{}: valid_until must be after valid_from", promo.code),
                ));
            }
        }
        Ok(())
    }

    /// This instance's id: `cluster.instance`, else `local` (a single instance).
    #[must_use]
    pub fn instance_id(&self) -> &str {
        self.cluster.instance.as_deref().unwrap_or("local")
    }

    /// Who owns which region: `cluster.peers` at `cluster.region_resolution`; without peers,
    /// this instance alone (with no URL of its own: it answers with the address it was asked at).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `cluster.region_resolution` or `cluster.peers`.
    pub fn regions(&self) -> Result<crate::geo::Regions, ConfigError> {
        let res = h3o::Resolution::try_from(self.cluster.region_resolution)
            .map_err(|e| invalid("cluster.region_resolution", e.to_string()))?;
        let mut peers: Vec<crate::geo::Peer> = self
            .cluster
            .peer_list()?
            .into_iter()
            .map(|(id, url)| crate::geo::Peer { id, url })
            .collect();
        if peers.is_empty() {
            peers.push(crate::geo::Peer {
                id: self.instance_id().to_owned(),
                url: String::new(),
            });
        }
        Ok(crate::geo::Regions::new(res, peers))
    }

    /// The H3 grid the index uses.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming `geo.index_resolution` or `geo.shard_resolution`.
    pub fn grid(&self) -> Result<crate::geo::Grid, ConfigError> {
        let index = h3o::Resolution::try_from(self.geo.index_resolution)
            .map_err(|_| invalid("geo.index_resolution", "must be an H3 resolution 0–15"))?;
        let shard = h3o::Resolution::try_from(self.geo.shard_resolution)
            .map_err(|_| invalid("geo.shard_resolution", "must be an H3 resolution 0–15"))?;
        crate::geo::Grid::new(index, shard).map_err(|_| {
            invalid(
                "geo.shard_resolution",
                "must be coarser (smaller) than geo.index_resolution",
            )
        })
    }
}

fn positive(key: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be a positive number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_settings_are_checked() {
        let with = |instance: Option<&str>, peers: Option<&str>, res: u8| {
            let mut s = Settings::default();
            s.cluster.instance = instance.map(str::to_owned);
            s.cluster.peers = peers.map(str::to_owned);
            s.cluster.region_resolution = res;
            s.validate()
        };
        assert!(with(None, None, 3).is_ok(), "a single instance");
        assert!(
            with(
                Some("hexdispatch-0"),
                Some("hexdispatch-0=http://a:8080"),
                3
            )
            .is_ok()
        );
        let key = |r: Result<(), ConfigError>| match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        };
        assert_eq!(key(with(None, Some("a"), 3)), "cluster.peers");
        assert_eq!(key(with(None, Some("a=ftp://x"), 3)), "cluster.peers");
        assert_eq!(
            key(with(None, Some("a=http://x,a=http://y"), 3)),
            "cluster.peers"
        );
        assert_eq!(
            key(with(Some("b"), Some("a=http://x"), 3)),
            "cluster.instance"
        );
        assert!(with(Some("a"), Some("a=http://x,b=http://y,c=http://z"), 3).is_ok());
        assert_eq!(
            key(with(None, Some("a=http://x,b=http://y"), 3)),
            "cluster.instance",
            "several instances must each know which one they are"
        );
        assert_eq!(key(with(None, None, 7)), "cluster.region_resolution");
        let mut fine_shards = Settings::default();
        fine_shards.geo.shard_resolution = 8;
        fine_shards.cluster.region_resolution = 8;
        assert!(
            matches!(fine_shards.validate(), Err(ConfigError::Invalid { key, .. }) if key == "cluster.region_resolution"),
            "a trip id carries a region of resolution 7 at most"
        );
    }

    #[test]
    fn shipped_config_file_equals_the_built_in_defaults() {
        let shipped = Settings::from_toml(include_str!("../config.toml")).unwrap();
        let defaults = Settings::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
        assert_eq!(
            shipped.auth.jwt_secret.expose_secret(),
            defaults.auth.jwt_secret.expose_secret()
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[geo]\nshard_resolution = 9", "geo.shard_resolution"),
            ("[geo]\nindex_resolution = 16", "geo.index_resolution"),
            (
                "[matching]\nradius_steps_m = [5000, 2000]",
                "matching.radius_steps_m",
            ),
            (
                "[matching]\nradius_steps_m = [2000, 60000]",
                "matching.radius_steps_m",
            ),
            (
                "[matching]\noffer_timeout_s = 0",
                "matching.offer_timeout_s",
            ),
            ("[location]\nttl_s = -1", "location.ttl_s"),
            ("[auth]\njwt_secret = \"short\"", "auth.jwt_secret"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[ws]\nidle_timeout_s = 5", "ws.idle_timeout_s"),
            (
                "[vehicles]\ndefault_type = \"no spaces\"",
                "vehicles.default_type",
            ),
            ("[http]\nport = \"eighty\"", "port"),
            ("[http]\nnope = 1", "nope"),
            ("[matching]\nmode = \"random\"", "random"),
            (
                "[matching]\nbatch_window_ms = 0",
                "matching.batch_window_ms",
            ),
            (
                "[matching]\nbatch_window_ms = 60001",
                "matching.batch_window_ms",
            ),
        ];
        for (toml, key) in cases {
            let err = Settings::from_toml(toml).expect_err(toml).to_string();
            assert!(
                err.contains(key),
                "{toml:?} gave {err:?}, which does not name {key}"
            );
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail error type
    fn environment_overrides_the_file_and_lists_take_commas() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("config.toml", "[http]\nport = 9000\n[location]\nttl_s = 60")?;
            jail.set_env("HEXDISPATCH__HTTP__PORT", "9100");
            jail.set_env("HEXDISPATCH__MATCHING__RADIUS_STEPS_M", "2000,5000,8000");
            jail.set_env("HEXDISPATCH__MATCHING__OFFER_TIMEOUT_S", "0.5");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.http.port, 9100);
            assert_eq!(s.location.ttl_s, 60.0);
            assert_eq!(s.matching.radius_steps_m, vec![2_000.0, 5_000.0, 8_000.0]);
            assert_eq!(s.matching.offer_timeout_s, 0.5);
            jail.set_env("HEXDISPATCH__GEO__SHARD_RESOLUTION", "12");
            let err = Settings::load(None)
                .expect_err("shard finer than index")
                .to_string();
            assert!(err.contains("geo.shard_resolution"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let err =
            Settings::load(Some(Path::new("/nonexistent/hexdispatch.toml"))).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/hexdispatch.toml"));
    }

    #[test]
    fn radius_steps_accept_a_comma_separated_string() {
        let s = Settings::from_toml("[matching]\nradius_steps_m = \"1000, 3000,6000\"").unwrap();
        assert_eq!(s.matching.radius_steps_m, vec![1_000.0, 3_000.0, 6_000.0]);
    }
}
