//! The durable store: PostgreSQL, or a SQLite file when no `database.url` is set, behind one sqlx
//! `AnyPool`. The schema (`migrations/postgres`, `migrations/sqlite`) keeps ids as text, times as
//! epoch ms and JSON as text, so every query here runs unchanged on both.
//!
//! Writes come in batches ([`Store::write_batch`]) in one transaction: trip events (append-only,
//! idempotent on `(trip_id, seq)`), their outbox rows, the trips projection (only ever moved
//! forward by version), driver profiles and sampled positions. A batch that is retried after an
//! unknown outcome changes nothing twice.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use uuid::Uuid;

use crate::dispatch::{EventRecord, Trip};

/// Where the embedded default keeps its data.
pub const DEFAULT_SQLITE_PATH: &str = "data/hexdispatch.db";

/// Most bind parameters one statement carries (PostgreSQL allows 65 535).
const MAX_PARAMS: usize = 30_000;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// The name shown in `/ready` and logs.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

/// A trip's new events and the state they lead to.
#[derive(Debug, Clone)]
pub struct TripWrite {
    /// The state after the events.
    pub trip: Trip,
    /// The events, in order.
    pub records: Vec<EventRecord>,
    /// The idempotency key and request fingerprint of the request that opened the trip.
    pub idempotency: Option<(String, String)>,
    /// The HTTP request that caused the events, carried into their bus messages.
    pub request_id: Option<std::sync::Arc<str>>,
    /// The span that wrote the events (W3C `traceparent`), when traces are exported: their bus
    /// messages continue that trace.
    pub traceparent: Option<String>,
}

/// A driver's profile as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverRow {
    /// The driver.
    pub driver_id: Uuid,
    /// Vehicle type.
    pub vehicle_type: String,
    /// `online` / `offline`.
    pub status: String,
    /// Last position, if any: lat, lng, received ms.
    pub position: Option<(f64, f64, i64)>,
    /// First seen, epoch ms.
    pub created_ms: i64,
}

/// One sampled position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionRow {
    /// The driver.
    pub driver_id: Uuid,
    /// When, epoch ms.
    pub ts_ms: i64,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
    /// Heading, degrees.
    pub heading: Option<f64>,
    /// Speed, m/s.
    pub speed_mps: Option<f64>,
}

/// One thing to write.
#[derive(Debug, Clone)]
pub enum Write {
    /// Trip events and projection.
    Trip(Box<TripWrite>),
    /// A driver profile.
    Driver(DriverRow),
    /// A sampled position.
    Position(PositionRow),
    /// A message for the bus that announces no trip event (a notification).
    Message(OutboxRow),
}

/// A message to publish through the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Unique: a second row with the same id is ignored.
    pub message_id: String,
    /// Routing key.
    pub routing_key: String,
    /// JSON body.
    pub payload: String,
    /// When, epoch ms.
    pub created_ms: i64,
}

/// The connection pool and its backend.
#[derive(Clone)]
pub struct Store {
    pub(super) pool: AnyPool,
    backend: Backend,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sqlx failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite file's folder could not be created.
    #[error("cannot create {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A stored row could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A `sqlite:` URL that creates its file (and the file's folder) when missing, as the default
/// path does: `mode=rwc` is added unless the URL names a mode; in-memory URLs are left alone.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path.starts_with(":memory:") || query.contains("mode=memory") {
        return Ok(url.to_owned());
    }
    if let Some(folder) = Path::new(path)
        .parent()
        .filter(|f| !f.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
            path: folder.display().to_string(),
            source,
        })?;
    }
    Ok(if query.split('&').any(|p| p.starts_with("mode=")) {
        url.to_owned()
    } else if query.is_empty() {
        format!("{url}?mode=rwc")
    } else {
        format!("{url}&mode=rwc")
    })
}

impl Store {
    /// Connects to `url`, or to the SQLite file [`DEFAULT_SQLITE_PATH`] when it is `None`. A SQLite
    /// file that does not exist yet is created, with its folder.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the database cannot be reached or the file created.
    pub async fn connect(url: Option<&str>) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = match url {
            Some(url) if url.starts_with("sqlite:") => sqlite_url(url)?,
            Some(url) => url.to_owned(),
            None => {
                let folder = Path::new(DEFAULT_SQLITE_PATH)
                    .parent()
                    .unwrap_or_else(|| Path::new("."));
                std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
                format!("sqlite://{DEFAULT_SQLITE_PATH}?mode=rwc")
            }
        };
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let pool = AnyPoolOptions::new()
            // SQLite has one writer at a time, and a transaction that starts reading and then writes
            // fails at once ("database is locked") when another one writes: one connection makes
            // every transaction wait its turn instead.
            .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL makes every commit durable
                        // before it is acknowledged.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Self { pool, backend })
    }

    /// The backend.
    #[must_use]
    pub const fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for tools and tests that read or write rows directly.
    #[must_use]
    pub const fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the migrations not applied yet.
    ///
    /// # Errors
    ///
    /// [`StoreError::Migrate`].
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Writes a batch in one transaction.
    ///
    /// # Errors
    ///
    /// The database's error; nothing of the batch is then written.
    pub async fn write_batch(&self, batch: &[Write]) -> Result<(), sqlx::Error> {
        let mut events: Vec<EventRow<'_>> = Vec::new();
        let mut latest: HashMap<Uuid, TripRowRef<'_>> = HashMap::new();
        let mut drivers: HashMap<Uuid, &DriverRow> = HashMap::new();
        let mut positions: Vec<&PositionRow> = Vec::new();
        let mut messages: Vec<&OutboxRow> = Vec::new();
        for write in batch {
            match write {
                Write::Trip(w) => {
                    events.extend(w.records.iter().map(|r| {
                        (
                            &w.trip,
                            r,
                            w.request_id.as_deref(),
                            w.traceparent.as_deref(),
                        )
                    }));
                    let entry = latest.entry(w.trip.trip_id).or_insert((&w.trip, None));
                    if w.trip.version >= entry.0.version {
                        entry.0 = &w.trip;
                    }
                    if w.idempotency.is_some() {
                        entry.1 = w.idempotency.as_ref();
                    }
                }
                Write::Driver(d) => {
                    drivers.insert(d.driver_id, d);
                }
                Write::Position(p) => positions.push(p),
                Write::Message(m) => messages.push(m),
            }
        }
        let mut tx = self.pool.begin().await?;
        for chunk in events.chunks(MAX_PARAMS / 6) {
            insert_events(&mut tx, chunk).await?;
            insert_outbox(&mut tx, chunk).await?;
        }
        let trips: Vec<_> = latest.into_values().collect();
        for chunk in trips.chunks(MAX_PARAMS / 14) {
            upsert_trips(&mut tx, chunk).await?;
        }
        let drivers: Vec<&DriverRow> = drivers.into_values().collect();
        for chunk in drivers.chunks(MAX_PARAMS / 8) {
            upsert_drivers(&mut tx, chunk).await?;
        }
        for chunk in positions.chunks(MAX_PARAMS / 6) {
            insert_positions(&mut tx, chunk).await?;
        }
        for chunk in messages.chunks(MAX_PARAMS / 4) {
            insert_messages(&mut tx, chunk).await?;
        }
        tx.commit().await
    }

    /// Ids of the trips that are not finished.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn live_trip_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT trip_id FROM trips WHERE status IN \
             ('SCHEDULED', 'REQUESTED', 'MATCHING', 'ACCEPTED', 'DRIVER_ARRIVING', 'TRIP_STARTED') \
             ORDER BY trip_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| uuid_of(r, "trip_id")).collect()
    }

    /// Cancelled trips whose late-cancellation fee is neither charged nor known to have failed
    /// (its settlement message was lost): the reconciliation settles them.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn unsettled_fees(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT trip_id FROM trips t WHERE status = 'CANCELLED' AND cancellation_fee IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.trip_id = t.trip_id) \
             AND NOT EXISTS (SELECT 1 FROM trip_events e WHERE e.trip_id = t.trip_id \
             AND e.type = 'payment.fee_failed') ORDER BY trip_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| uuid_of(r, "trip_id")).collect()
    }

    /// Ids of the trips in `status`.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn trips_with_status(&self, status: &str) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query("SELECT trip_id FROM trips WHERE status = $1 ORDER BY trip_id")
            .bind(status)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| uuid_of(r, "trip_id")).collect()
    }

    /// A trip's events, oldest first.
    ///
    /// # Errors
    ///
    /// The database's error, or an unreadable event.
    pub async fn events(&self, trip_id: Uuid) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, type, at_ms, data FROM trip_events WHERE trip_id = $1 ORDER BY seq",
        )
        .bind(trip_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq")?;
                let kind: String = r.try_get("type")?;
                let at_ms: i64 = r.try_get("at_ms")?;
                let data: String = r.try_get("data")?;
                let data: serde_json::Value = serde_json::from_str(&data).map_err(corrupt)?;
                serde_json::from_value(serde_json::json!({
                    "seq": seq, "at_ms": at_ms, "type": kind, "data": data,
                }))
                .map_err(corrupt)
            })
            .collect()
    }

    /// A trip rebuilt from its stored events.
    ///
    /// # Errors
    ///
    /// The database's error, or a log that is not a trip.
    pub async fn trip(
        &self,
        trip_id: Uuid,
    ) -> Result<Option<(Trip, Vec<EventRecord>)>, StoreError> {
        let events = self.events(trip_id).await?;
        if events.is_empty() {
            return Ok(None);
        }
        let trip = Trip::replay(trip_id, &events).map_err(corrupt)?;
        Ok(Some((trip, events)))
    }

    /// A rider's trip ids, newest first, older than `before`, at most `limit`.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn rider_trip_ids(
        &self,
        rider_id: Uuid,
        before: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(100);
        let rows =
            match before {
                Some(b) => {
                    sqlx::query(
                        "SELECT trip_id FROM trips WHERE rider_id = $1 AND trip_id < $2 \
                     ORDER BY trip_id DESC LIMIT $3",
                    )
                    .bind(rider_id.to_string())
                    .bind(b.to_string())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
                }
                None => sqlx::query(
                    "SELECT trip_id FROM trips WHERE rider_id = $1 ORDER BY trip_id DESC LIMIT $2",
                )
                .bind(rider_id.to_string())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter().map(|r| uuid_of(r, "trip_id")).collect()
    }

    /// The trip a rider's idempotency key opened, with the request's fingerprint.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn idempotent(
        &self,
        rider_id: Uuid,
        key: &str,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT trip_id, fingerprint FROM trips WHERE rider_id = $1 AND idempotency_key = $2",
        )
        .bind(rider_id.to_string())
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((
                uuid_of(&r, "trip_id")?,
                r.try_get::<Option<String>, _>("fingerprint")?
                    .unwrap_or_default(),
            ))),
        }
    }

    /// A driver's sampled positions within `[from_ms, to_ms]`, oldest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn positions(
        &self,
        driver_id: Uuid,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<PositionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT ts_ms, lat, lng, heading, speed_mps FROM location_history \
             WHERE driver_id = $1 AND ts_ms >= $2 AND ts_ms <= $3 ORDER BY ts_ms LIMIT $4",
        )
        .bind(driver_id.to_string())
        .bind(from_ms)
        .bind(to_ms)
        .bind(i64::try_from(limit).unwrap_or(1_000))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PositionRow {
                    driver_id,
                    ts_ms: r.try_get("ts_ms")?,
                    lat: r.try_get("lat")?,
                    lng: r.try_get("lng")?,
                    heading: r.try_get("heading")?,
                    speed_mps: r.try_get("speed_mps")?,
                })
            })
            .collect()
    }

    /// Counts rows of a table (tests and benchmarks).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn count(&self, table: &str) -> Result<i64, StoreError> {
        let known = [
            "trips",
            "trip_events",
            "outbox",
            "drivers",
            "location_history",
            "ledger",
            "payments",
            "topups",
        ];
        if !known.contains(&table) {
            return Err(StoreError::Corrupt(format!("no table {table}")));
        }
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn uuid_of(row: &AnyRow, column: &str) -> Result<Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(corrupt)
}

/// `($1, $2, …), ($k, …)` for `rows` rows of `width` columns.
fn placeholders(rows: usize, width: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * width + col + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// An event of a batch: its trip, itself, and the request that caused it.
/// An event with the request that caused it and the span that wrote it.
type EventRow<'a> = (&'a Trip, &'a EventRecord, Option<&'a str>, Option<&'a str>);

/// A trip's latest state in a batch, with the idempotency key of its opening request.
type TripRowRef<'a> = (&'a Trip, Option<&'a (String, String)>);

fn event_data(record: &EventRecord) -> (String, String) {
    let value = serde_json::to_value(&record.event).unwrap_or_default();
    let kind = record.event.kind().to_owned();
    let data = value.get("data").cloned().unwrap_or_default().to_string();
    (kind, data)
}

async fn insert_events(tx: &mut Tx<'_>, rows: &[EventRow<'_>]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO trip_events (trip_id, seq, type, at_ms, data) VALUES {} \
         ON CONFLICT (trip_id, seq) DO NOTHING",
        placeholders(rows.len(), 5)
    );
    let mut query = sqlx::query(&sql);
    for (trip, record, _, _) in rows {
        let (kind, data) = event_data(record);
        query = query
            .bind(trip.trip_id.to_string())
            .bind(i64::try_from(record.seq).unwrap_or(i64::MAX))
            .bind(kind)
            .bind(record.at_ms)
            .bind(data);
    }
    query.execute(&mut **tx).await.map(|_| ())
}

async fn insert_outbox(tx: &mut Tx<'_>, rows: &[EventRow<'_>]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO outbox (message_id, routing_key, payload, created_ms, request_id, traceparent) VALUES {} \
         ON CONFLICT (message_id) DO NOTHING",
        placeholders(rows.len(), 6)
    );
    let mut query = sqlx::query(&sql);
    for (trip, record, request_id, traceparent) in rows {
        let (kind, data) = event_data(record);
        let payload = serde_json::json!({
            "trip_id": trip.trip_id,
            "rider_id": trip.rider_id,
            "seq": record.seq,
            "type": kind,
            "at_ms": record.at_ms,
            "data": serde_json::from_str::<serde_json::Value>(&data).unwrap_or_default(),
        });
        query = query
            .bind(format!("{}:{}", trip.trip_id, record.seq))
            .bind(kind)
            .bind(payload.to_string())
            .bind(record.at_ms)
            .bind(request_id.map(str::to_owned))
            .bind(traceparent.map(str::to_owned));
    }
    query.execute(&mut **tx).await.map(|_| ())
}

async fn upsert_trips(tx: &mut Tx<'_>, rows: &[TripRowRef<'_>]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO trips (trip_id, rider_id, driver_id, status, vehicle_type, fare_estimate, \
         fare, currency, version, created_ms, updated_ms, idempotency_key, fingerprint, \
         cancellation_fee) VALUES {} \
         ON CONFLICT (trip_id) DO UPDATE SET driver_id = excluded.driver_id, \
         status = excluded.status, fare = excluded.fare, version = excluded.version, \
         updated_ms = excluded.updated_ms, cancellation_fee = excluded.cancellation_fee \
         WHERE trips.version < excluded.version",
        placeholders(rows.len(), 14)
    );
    let mut query = sqlx::query(&sql);
    for (trip, idempotency) in rows {
        query = query
            .bind(trip.trip_id.to_string())
            .bind(trip.rider_id.to_string())
            .bind(trip.driver_id.map(|d| d.to_string()))
            .bind(trip.status.as_str())
            .bind(trip.vehicle_type.clone())
            .bind(trip.quote.estimate.total.amount)
            .bind(trip.fare.map(|f| f.total.amount))
            .bind(trip.quote.estimate.total.currency.as_str().to_owned())
            .bind(i64::try_from(trip.version).unwrap_or(i64::MAX))
            .bind(trip.created_ms)
            .bind(trip.updated_ms)
            .bind(idempotency.map(|(k, _)| k.clone()))
            .bind(idempotency.map(|(_, f)| f.clone()))
            .bind(trip.cancellation_fee.map(|f| f.amount));
    }
    query.execute(&mut **tx).await.map(|_| ())
}

async fn upsert_drivers(tx: &mut Tx<'_>, rows: &[&DriverRow]) -> Result<(), sqlx::Error> {
    // Rows with and without a position go in separate statements: a NULL bound where a number
    // goes leaves PostgreSQL's prepared statement typed for text, and the next batch of the
    // same shape with a number in that place would then be refused.
    let (placed, unplaced): (Vec<&DriverRow>, Vec<&DriverRow>) =
        rows.iter().partition(|d| d.position.is_some());
    let now = crate::clock::now_ms();
    if !placed.is_empty() {
        let sql = format!(
            "INSERT INTO drivers (driver_id, vehicle_type, status, lat, lng, position_ms, \
             created_ms, updated_ms) VALUES {} \
             ON CONFLICT (driver_id) DO UPDATE SET vehicle_type = excluded.vehicle_type, \
             status = excluded.status, lat = excluded.lat, lng = excluded.lng, \
             position_ms = excluded.position_ms, updated_ms = excluded.updated_ms",
            placeholders(placed.len(), 8)
        );
        let mut query = sqlx::query(&sql);
        for d in placed {
            let (lat, lng, at_ms) = d.position.unwrap_or_default();
            query = query
                .bind(d.driver_id.to_string())
                .bind(d.vehicle_type.clone())
                .bind(d.status.clone())
                .bind(lat)
                .bind(lng)
                .bind(at_ms)
                .bind(d.created_ms)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    if !unplaced.is_empty() {
        let sql = format!(
            "INSERT INTO drivers (driver_id, vehicle_type, status, created_ms, updated_ms) \
             VALUES {} \
             ON CONFLICT (driver_id) DO UPDATE SET vehicle_type = excluded.vehicle_type, \
             status = excluded.status, updated_ms = excluded.updated_ms",
            placeholders(unplaced.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for d in unplaced {
            query = query
                .bind(d.driver_id.to_string())
                .bind(d.vehicle_type.clone())
                .bind(d.status.clone())
                .bind(d.created_ms)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_messages(tx: &mut Tx<'_>, rows: &[&OutboxRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO outbox (message_id, routing_key, payload, created_ms) VALUES {} \
         ON CONFLICT (message_id) DO NOTHING",
        placeholders(rows.len(), 4)
    );
    let mut query = sqlx::query(&sql);
    for m in rows {
        query = query
            .bind(m.message_id.clone())
            .bind(m.routing_key.clone())
            .bind(m.payload.clone())
            .bind(m.created_ms);
    }
    query.execute(&mut **tx).await.map(|_| ())
}

async fn insert_positions(tx: &mut Tx<'_>, rows: &[&PositionRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // Heading and speed are optional. sqlx's Any driver declares a NULL float as the other float
    // width than a present one, so a prepared statement that once saw a NULL refuses the next
    // number there: absent values go as NaN, turned into NULL by the statement.
    let values = placeholders(rows.len(), 6);
    let mut sql = String::with_capacity(values.len() + rows.len() * 40);
    for (i, row) in values.split("), (").enumerate() {
        let cols: Vec<&str> = row.trim_matches(['(', ')']).split(", ").collect();
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "({}, {}, {}, {}, NULLIF({}, 'NaN'), NULLIF({}, 'NaN'))",
            cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
        ));
    }
    let sql = format!(
        "INSERT INTO location_history (driver_id, ts_ms, lat, lng, heading, speed_mps) VALUES {sql} \
         ON CONFLICT (driver_id, ts_ms) DO NOTHING"
    );
    let mut query = sqlx::query(&sql);
    for p in rows {
        query = query
            .bind(p.driver_id.to_string())
            .bind(p.ts_ms)
            .bind(p.lat)
            .bind(p.lng)
            .bind(p.heading.unwrap_or(f64::NAN))
            .bind(p.speed_mps.unwrap_or(f64::NAN));
    }
    query.execute(&mut **tx).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
    }

    #[test]
    fn sqlite_urls_create_their_file_unless_they_name_a_mode() {
        assert_eq!(
            sqlite_url("sqlite::memory:").unwrap(),
            "sqlite::memory:",
            "in memory: untouched"
        );
        assert_eq!(
            sqlite_url("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro",
            "a named mode is kept"
        );
        assert_eq!(
            sqlite_url("sqlite://x.db?cache=shared").unwrap(),
            "sqlite://x.db?cache=shared&mode=rwc"
        );
    }

    #[actix_rt::test]
    async fn a_sqlite_url_to_a_new_file_in_a_new_folder_opens_and_migrates() {
        let dir = std::env::temp_dir().join(format!("hexdispatch-url-{}", Uuid::now_v7()));
        let file = dir.join("some/nested/file.db");
        let store = Store::connect(Some(&format!("sqlite://{}", file.display())))
            .await
            .expect("the file is created, not refused");
        store.migrate().await.unwrap();
        assert!(file.exists(), "{} was created", file.display());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
