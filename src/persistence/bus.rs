//! The event bus: RabbitMQ (lapin) when `amqp.url` is set, an in-process broadcast otherwise, and
//! the outbox publisher that feeds it.
//!
//! The outbox rows are written in the same transaction as the events they announce (see the store);
//! the publisher reads unpublished rows in id order, publishes each to the topic exchange with a
//! publisher confirm, then marks them published. A broker that goes away is reconnected with
//! backoff (100 ms doubling to 5 s) and the rows wait in the outbox meanwhile: an event is published
//! at least once, and consumers deduplicate by message id (payments by trip id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use metrics::{counter, gauge};
use sqlx::Row;
use tokio::sync::{Notify, broadcast, watch};

use super::store::{Store, StoreError};
use crate::metrics::{OUTBOX_LAG, OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a publish and its confirm: a broker that blocks publishers (a resource alarm)
/// counts as down, so `/ready` and the alerts see it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the publisher looks at the outbox when nobody wakes it.
const POLL: Duration = Duration::from_millis(250);

/// One message on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct BusMessage {
    /// Unique per event (`{trip_id}:{seq}`): consumers deduplicate by it.
    pub message_id: String,
    /// Routing key: the event type (`trip.completed`, …).
    pub routing_key: String,
    /// JSON body.
    pub payload: Vec<u8>,
    /// Headers: `x-event-type`, `traceparent`, and `x-request-id` when an HTTP request caused it.
    pub headers: BTreeMap<String, String>,
}

/// W3C trace context for a trip's events: the trace id is the trip id, so every event of a trip
/// belongs to one trace.
#[must_use]
pub fn traceparent(trip_id: &str, seq: u64) -> String {
    let trace: String = trip_id.chars().filter(char::is_ascii_hexdigit).collect();
    let trace = format!("{trace:0>32}");
    format!("00-{}-{seq:016x}-01", &trace[trace.len() - 32..])
}

/// A connection to the broker with a confirming channel, made on demand.
pub struct Amqp {
    url: String,
    exchange: String,
    link: Option<(Connection, Channel)>,
}

impl Amqp {
    /// A publisher for `exchange` on the broker at `url` (not connected yet).
    #[must_use]
    pub fn new(url: &str, exchange: &str) -> Self {
        Self {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            link: None,
        }
    }

    /// Connects, opens a channel in confirm mode and declares the topic exchange.
    ///
    /// # Errors
    ///
    /// The broker's error.
    pub async fn connect(url: &str, exchange: &str) -> lapin::Result<(Connection, Channel)> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .exchange_declare(
                ShortString::from(exchange),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((connection, channel))
    }

    async fn channel(&mut self) -> lapin::Result<&Channel> {
        let alive = self
            .link
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !alive {
            self.link = Some(Self::connect(&self.url, &self.exchange).await?);
        }
        match &self.link {
            Some((_, channel)) => Ok(channel),
            None => unreachable!("connected just above"),
        }
    }

    /// Publishes a message persistently and waits for the broker's confirm.
    ///
    /// # Errors
    ///
    /// The broker's error, or a negative confirm; the link is dropped and remade on the next call.
    pub async fn publish(&mut self, message: &BusMessage) -> Result<(), String> {
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            let exchange = self.exchange.clone();
            let channel = self.channel().await.map_err(|e| e.to_string())?;
            let mut headers = FieldTable::default();
            for (k, v) in &message.headers {
                headers.insert(
                    ShortString::from(k.as_str()),
                    AMQPValue::LongString(v.as_str().into()),
                );
            }
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(message.message_id.as_str()))
                .with_type(ShortString::from(message.routing_key.as_str()))
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    ShortString::from(exchange.as_str()),
                    ShortString::from(message.routing_key.as_str()),
                    BasicPublishOptions::default(),
                    &message.payload,
                    properties,
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            if confirm.is_ack() {
                Ok(())
            } else {
                Err("the broker refused the message".to_owned())
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "the broker did not confirm within {PUBLISH_TIMEOUT:?} (blocked by a resource alarm?)"
            ))
        });
        if result.is_err() {
            self.link = None;
        }
        result
    }
}

/// Where the outbox goes.
pub enum Sink {
    /// RabbitMQ.
    Amqp(Box<Amqp>),
    /// In process.
    Local(broadcast::Sender<Arc<BusMessage>>),
}

impl Sink {
    async fn publish(&mut self, message: BusMessage) -> Result<(), String> {
        match self {
            Self::Amqp(amqp) => amqp.publish(&message).await,
            Self::Local(tx) => {
                // Nobody listening is not a failure: the in-process bus keeps nothing.
                let _ = tx.send(Arc::new(message));
                Ok(())
            }
        }
    }
}

/// Unpublished outbox rows, oldest first.
///
/// # Errors
///
/// The database's error.
pub async fn unpublished(
    store: &Store,
    limit: usize,
) -> Result<Vec<(i64, i64, BusMessage)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, created_ms, message_id, routing_key, payload, request_id, traceparent FROM outbox WHERE published_ms IS NULL \
         ORDER BY id LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(500))
    .fetch_all(&store.pool)
    .await?;
    rows.iter()
        .map(|r| {
            let message_id: String = r.try_get("message_id")?;
            let routing_key: String = r.try_get("routing_key")?;
            let (trip, seq) = message_id.split_once(':').unwrap_or((&message_id, "0"));
            // The trace of the span that wrote the event when traces are exported; otherwise
            // one made from the trip id, so a trip's messages still share a trace id.
            let trace = r
                .try_get::<Option<String>, _>("traceparent")?
                .unwrap_or_else(|| traceparent(trip, seq.parse().unwrap_or(0)));
            let mut headers = BTreeMap::from([
                ("x-event-type".to_owned(), routing_key.clone()),
                ("traceparent".to_owned(), trace),
            ]);
            if let Some(request_id) = r.try_get::<Option<String>, _>("request_id")? {
                headers.insert("x-request-id".to_owned(), request_id);
            }
            Ok((
                r.try_get("id")?,
                r.try_get("created_ms")?,
                BusMessage {
                    message_id,
                    routing_key,
                    payload: r.try_get::<String, _>("payload")?.into_bytes(),
                    headers,
                },
            ))
        })
        .collect()
}

async fn mark_published(store: &Store, ids: &[i64], now: i64) -> Result<(), StoreError> {
    for chunk in ids.chunks(1_000) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        // Ids are integers from the database itself, never client input.
        sqlx::query(&format!(
            "UPDATE outbox SET published_ms = $1 WHERE id IN ({})",
            list.join(", ")
        ))
        .bind(now)
        .execute(&store.pool)
        .await?;
    }
    Ok(())
}

/// Moves outbox rows to `sink` until `shutdown` turns true. `wake` is notified after each commit.
pub async fn run_outbox(
    store: Store,
    mut sink: Sink,
    batch: usize,
    wake: Arc<Notify>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let mut backoff = FIRST_BACKOFF;
    let mut relay_lock = RelayLock::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !relay_lock.held(&store).await {
            // Another instance sharing the database relays the outbox; wait for its turn.
            tokio::select! {
                () = tokio::time::sleep(RELAY_LOCK_RETRY) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let rows = match unpublished(&store, batch).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "outbox read failed");
                // The lock's connection may be the one that failed: take it again.
                relay_lock.release();
                Vec::new()
            }
        };
        // How long the oldest unpublished message has waited (0 once the outbox is drained).
        let oldest_ms = rows.first().map_or(0, |(_, created_ms, _)| {
            crate::clock::now_ms().saturating_sub(*created_ms).max(0)
        });
        #[allow(clippy::cast_precision_loss)]
        gauge!(OUTBOX_LAG).set(oldest_ms as f64 / 1_000.0);
        if rows.is_empty() {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut done = Vec::with_capacity(rows.len());
        let mut failed = false;
        for (id, _, mut message) in rows {
            // One span per publish, in the trace of the event; the message carries this span as
            // its consumers' parent.
            let span = crate::telemetry::continuing(
                tracing::info_span!(
                    "outbox.publish",
                    routing_key = %message.routing_key,
                    message_id = %message.message_id
                ),
                message.headers.get("traceparent").map(String::as_str),
            );
            if let Some(own) = span.in_scope(crate::telemetry::current_traceparent) {
                message.headers.insert("traceparent".to_owned(), own);
            }
            let published = {
                use tracing::Instrument as _;
                sink.publish(message).instrument(span).await
            };
            match published {
                Ok(()) => done.push(id),
                Err(e) => {
                    counter!(OUTBOX_PUBLISH_ERRORS).increment(1);
                    if healthy.swap(false, Ordering::AcqRel) {
                        tracing::error!(error = %e, "publishing to the broker failed; retrying with backoff");
                    }
                    failed = true;
                    break;
                }
            }
        }
        if !done.is_empty() {
            counter!(OUTBOX_PUBLISHED).increment(done.len() as u64);
            if let Err(e) = mark_published(&store, &done, crate::clock::now_ms()).await {
                // Published but not marked: they will be published again (at least once).
                tracing::warn!(error = %e, "could not mark outbox rows published");
            }
        }
        if failed {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            if !healthy.swap(true, Ordering::AcqRel) {
                tracing::info!("broker is back; outbox draining");
            }
            backoff = FIRST_BACKOFF;
        }
    }
}

/// First key of the PostgreSQL advisory lock the outbox relay holds; the second is the schema's
/// (so engines on separate schemas of one database each relay their own outbox).
const RELAY_LOCK_KEY: i32 = 0x6864_7370;

/// How often an instance not holding the relay lock tries for it.
const RELAY_LOCK_RETRY: Duration = Duration::from_secs(1);

/// One relay per database: instances sharing a PostgreSQL database (SPEC §11) share one
/// outbox, and two relays would publish its rows twice and interleave them. The relay holds a
/// session advisory lock on a connection of its own; PostgreSQL frees it when that session
/// ends, so an instance that dies hands the relay to another within a second. SQLite is one
/// instance's own file: no lock.
#[derive(Default)]
struct RelayLock {
    connection: Option<sqlx::pool::PoolConnection<sqlx::Any>>,
}

impl RelayLock {
    async fn held(&mut self, store: &Store) -> bool {
        if store.backend() == super::store::Backend::Sqlite || self.connection.is_some() {
            return true;
        }
        let Ok(mut connection) = store.pool.acquire().await else {
            return false;
        };
        let locked =
            sqlx::query("SELECT pg_try_advisory_lock($1, hashtext(current_schema())) AS locked")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *connection)
                .await
                .and_then(|row| row.try_get::<bool, _>("locked"));
        match locked {
            Ok(true) => {
                tracing::info!("this instance relays the outbox");
                self.connection = Some(connection);
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not take the outbox relay lock");
                false
            }
        }
    }

    /// Drops the lock's connection (closing the session, which frees the lock).
    fn release(&mut self) {
        if let Some(connection) = self.connection.take() {
            drop(connection.detach());
        }
    }
}

/// Unpublished outbox rows (tests, readiness).
///
/// # Errors
///
/// The database's error.
pub async fn backlog(store: &Store) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE published_ms IS NULL")
        .fetch_one(&store.pool)
        .await?;
    Ok(row.try_get("n")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_uses_the_trip_as_trace() {
        let t = traceparent("01a2008a-f2de-76ec-af28-5f773b373f68", 3);
        assert_eq!(t, "00-01a2008af2de76ecaf285f773b373f68-0000000000000003-01");
    }
}
