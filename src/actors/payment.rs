//! Charging trips. Completions and rider cancellations arrive on the bus (`trip.completed`,
//! `trip.cancelled`: from RabbitMQ through its own durable queue, or from the in-process bus); each
//! is settled by the [`PaymentDesk`] one at a time (a late cancellation's fee is charged like a
//! fare and noted as `payment.fee_captured` or `payment.fee_failed`; operators' refunds go
//! through the same desk):
//! the rider's wallet is debited, the driver credited less the platform's commission, all in one
//! ledger transaction keyed by the trip id (so a redelivered completion charges nothing twice), and
//! the trip gets `payment.captured` (PAYMENT_PROCESSED) or `payment.failed` (PAYMENT_FAILED, on
//! insufficient funds: retried when the rider's wallet is topped up).
//!
//! The RabbitMQ consumer uses manual acks and a prefetch limit. A message that cannot be read is
//! dead-lettered at once; one whose settlement fails (the database is away) is retried with
//! exponential backoff, republished with an attempt count, and dead-lettered after
//! `amqp.max_attempts`. The dead-letter exchange `{exchange}.dlx` routes to
//! `{exchange}.payments.dead`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::ExchangeKind;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use metrics::counter;
use serde::Deserialize;
use tokio::sync::{Mutex, broadcast, watch};
use tracing::Instrument as _;
use uuid::Uuid;

use super::core::Core;
use crate::clock::now_ms;
use crate::dispatch::{Money, TripCommand, TripEvent, TripStatus, decide};
use crate::metrics::{PAYMENTS, PAYMENTS_DEAD_LETTERED, REFUNDS};
use crate::persistence::bus::{Amqp, BusMessage};
use crate::persistence::{ChargeKind, ChargeOutcome, RefundOutcome, StoreError};

/// What settling a trip did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Charged (now or before) and recorded.
    Paid,
    /// The wallet was short; the trip is PAYMENT_FAILED.
    Failed,
    /// Nothing to do: the trip is not completed (or not known).
    Skipped,
}

/// Why a settlement could not run; worth retrying.
#[derive(Debug, thiserror::Error)]
#[error("payment could not be settled: {0}")]
pub struct SettleError(String);

impl From<StoreError> for SettleError {
    fn from(e: StoreError) -> Self {
        Self(e.to_string())
    }
}

/// Tops wallets up. The engine's own implementation is the in-house wallet (the ledger);
/// an external payment gateway would implement the same.
pub trait PaymentGateway {
    /// Credits `amount` to `account` once per `reference`; the balance after, and whether this
    /// call applied it.
    fn credit(
        &self,
        account: &str,
        amount: Money,
        reference: &str,
    ) -> impl std::future::Future<Output = Result<(Money, bool), StoreError>> + Send;
}

/// The in-house wallet: top-ups are ledger transactions in the engine's own store.
pub struct InHouseWallet<'a>(pub &'a crate::persistence::Store);

impl PaymentGateway for InHouseWallet<'_> {
    async fn credit(
        &self,
        account: &str,
        amount: Money,
        reference: &str,
    ) -> Result<(Money, bool), StoreError> {
        self.0.top_up(account, amount, reference, now_ms()).await
    }
}

/// Why a top-up went nowhere.
#[derive(Debug, thiserror::Error)]
pub enum TopUpError {
    /// No durable store is attached.
    #[error("no store is attached")]
    NoStore,
    /// The wallet holds another currency.
    #[error("{0}")]
    CurrencyMismatch(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Retrying the rider's failed payments failed.
    #[error(transparent)]
    Settle(#[from] SettleError),
}

/// What a top-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToppedUp {
    /// The wallet's balance after it (and after any payment it settled).
    pub balance: Money,
    /// Whether this call credited the wallet (false: the reference was used before).
    pub applied: bool,
    /// Failed payments of the rider settled right after.
    pub payments_retried: usize,
}

/// Settles trips, one at a time, and tops wallets up.
pub struct PaymentDesk {
    /// Serialises settlements, so two deliveries of one completion never append events at once.
    turn: Mutex<()>,
}

impl Default for PaymentDesk {
    fn default() -> Self {
        Self {
            turn: Mutex::new(()),
        }
    }
}

impl PaymentDesk {
    /// Credits `amount` to `rider`'s wallet once per `reference` (through the in-house wallet),
    /// then retries the rider's failed payments.
    ///
    /// # Errors
    ///
    /// [`TopUpError`]: no store, a currency other than the wallet's, a store failure.
    pub async fn top_up(
        &self,
        core: &Core,
        rider: Uuid,
        amount: Money,
        reference: &str,
    ) -> Result<ToppedUp, TopUpError> {
        let store = core.persistence().ok_or(TopUpError::NoStore)?.store();
        let account = crate::dispatch::ledger::rider_account(rider);
        let (balance, applied) = InHouseWallet(store)
            .credit(&account, amount, reference)
            .await
            .map_err(|e| match e {
                StoreError::Corrupt(m) => TopUpError::CurrencyMismatch(m),
                other => TopUpError::Store(other),
            })?;
        let payments_retried = if applied {
            self.retry_failed(core, rider).await?
        } else {
            0
        };
        let balance = if payments_retried > 0 {
            store
                .balance(&account)
                .await
                .map_err(TopUpError::Store)?
                .unwrap_or(balance)
        } else {
            balance
        };
        Ok(ToppedUp {
            balance,
            applied,
            payments_retried,
        })
    }

    /// Settles `trip_id`: charges a completed trip's fare, or a late cancellation's fee, once,
    /// and records the outcome on the trip.
    ///
    /// # Errors
    ///
    /// [`SettleError`] when the store fails (retry later).
    pub async fn settle(&self, core: &Core, trip_id: Uuid) -> Result<Settlement, SettleError> {
        let _turn = self.turn.lock().await;
        let Some(persistence) = core.persistence() else {
            return Ok(Settlement::Skipped);
        };
        let Some(trip) = core
            .load_trip(trip_id)
            .await
            .map_err(|e| SettleError(e.to_string()))?
        else {
            return Ok(Settlement::Skipped);
        };
        let (kind, amount) = match (trip.status, trip.fare, trip.cancellation_fee) {
            (
                TripStatus::TripCompleted
                | TripStatus::PaymentFailed
                | TripStatus::PaymentProcessed,
                Some(fare),
                _,
            ) => (ChargeKind::Fare, fare.total),
            (TripStatus::Cancelled, _, Some(fee)) => (ChargeKind::CancellationFee, fee),
            _ => return Ok(Settlement::Skipped),
        };
        let Some(driver) = trip.driver_id else {
            return Ok(Settlement::Skipped);
        };
        let outcome = persistence
            .store()
            .charge_trip(
                trip_id,
                kind,
                trip.rider_id,
                driver,
                amount,
                core.settings.payments.commission_bps,
                now_ms(),
            )
            .await?;
        let label = match outcome {
            ChargeOutcome::Charged => "charged",
            ChargeOutcome::AlreadyCharged => "already_charged",
            ChargeOutcome::InsufficientFunds { .. } => "insufficient_funds",
        };
        counter!(PAYMENTS, "outcome" => label, "kind" => kind.as_str()).increment(1);
        let paid = !matches!(outcome, ChargeOutcome::InsufficientFunds { .. });
        match kind {
            ChargeKind::Fare => {
                let command = if paid {
                    TripCommand::RecordPayment { amount }
                } else {
                    TripCommand::RecordPaymentFailure {
                        reason: "insufficient_funds".into(),
                    }
                };
                // Already recorded (a redelivery, or a failure recorded before): nothing to append.
                if let Ok(events) = decide(&trip, &command, now_ms()) {
                    record(core, trip, events, true).await;
                }
            }
            ChargeKind::CancellationFee => {
                // Noted once each: a redelivery or a second failure appends nothing.
                let event = match (paid, trip.fee_captured, trip.fee_failed) {
                    (true, false, _) => Some(TripEvent::FeeCaptured { amount }),
                    (false, false, false) => Some(TripEvent::FeeFailed {
                        reason: "insufficient_funds".into(),
                    }),
                    _ => None,
                };
                if let Some(event) = event {
                    record(core, trip, vec![event], false).await;
                }
            }
        }
        Ok(if paid {
            Settlement::Paid
        } else {
            Settlement::Failed
        })
    }

    /// Refunds (part of) `trip_id`'s charge once per `reference` and notes it on the trip
    /// (`payment.refunded`). Serialised with settlements, so the trip's log stays in order.
    ///
    /// # Errors
    ///
    /// [`SettleError`] when the store fails.
    pub async fn refund(
        &self,
        core: &Core,
        trip_id: Uuid,
        amount: Option<Money>,
        reason: &str,
        reference: &str,
    ) -> Result<RefundOutcome, SettleError> {
        let _turn = self.turn.lock().await;
        let Some(persistence) = core.persistence() else {
            return Ok(RefundOutcome::NotCharged);
        };
        let outcome = persistence
            .store()
            .refund_trip(trip_id, amount, reason, reference, now_ms())
            .await?;
        if let RefundOutcome::Refunded {
            amount,
            total_refunded,
            applied,
            ..
        } = &outcome
        {
            if *applied {
                counter!(REFUNDS).increment(1);
            }
            // The money moved: note it in the trip's log, now or on a retry of the same reference
            // if noting it failed the first time. A failure here fails nothing that was done.
            let noted = async {
                let trip = core.load_trip(trip_id).await?;
                let events = core.load_events(trip_id).await?.unwrap_or_default();
                Ok::<_, StoreError>((trip, events))
            }
            .await;
            match noted {
                Ok((Some(trip), events)) => {
                    let logged = events.iter().any(|r| {
                        matches!(&r.event, TripEvent::Refunded { reference: logged, .. } if logged == reference)
                    });
                    if !logged {
                        let event = TripEvent::Refunded {
                            amount: *amount,
                            total_refunded: *total_refunded,
                            reference: reference.to_owned(),
                            reason: reason.to_owned(),
                        };
                        record(core, trip, vec![event], false).await;
                    }
                }
                Ok((None, _)) => {}
                Err(e) => {
                    tracing::warn!(%trip_id, %reference, error = %e, "a refund could not be noted in the trip's log yet; a retry of its reference notes it");
                }
            }
        }
        Ok(outcome)
    }

    /// Retries the rider's failed payments (after a top-up).
    ///
    /// # Errors
    ///
    /// [`SettleError`] when the store fails.
    pub async fn retry_failed(&self, core: &Core, rider: Uuid) -> Result<usize, SettleError> {
        let Some(persistence) = core.persistence() else {
            return Ok(0);
        };
        let mut paid = 0;
        for trip_id in persistence.store().failed_payments(rider).await? {
            if self.settle(core, trip_id).await? == Settlement::Paid {
                paid += 1;
            }
        }
        Ok(paid)
    }
}

/// Appends `events` to `trip`, stores them (waiting up to `database.ack_timeout_s`, so what a
/// settlement recorded is in the store when it returns) and, for a change of status, tells the
/// rider.
async fn record(
    core: &Core,
    mut trip: crate::dispatch::Trip,
    events: Vec<TripEvent>,
    tell_rider: bool,
) {
    let records = trip.records(events, now_ms());
    for record in &records {
        trip.apply(record);
    }
    if let Some(durable) = core.save_trip_from(&trip, records, None) {
        let limit = Duration::from_secs_f64(core.settings.database.ack_timeout_s);
        let _ = tokio::time::timeout(limit, durable).await;
    }
    if tell_rider {
        core.riders.send(
            trip.rider_id,
            &crate::actors::protocol::rider_trip_update(&trip, trip.status, None, None),
        );
    }
}

/// Settles, every `payments.reconcile_interval_s`, the completed trips no completion message has
/// settled and the late cancellations whose fee no message settled (a message lost with a broker,
/// a consumer that was away): the queue is the fast path, this is the guarantee.
pub async fn reconcile(core: Core, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs_f64(core.settings.payments.reconcile_interval_s);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let Some(persistence) = core.persistence() else {
            return;
        };
        let store = persistence.store();
        let (Ok(mut unsettled), Ok(fees)) = (
            store.trips_with_status("TRIP_COMPLETED").await,
            store.unsettled_fees().await,
        ) else {
            continue;
        };
        unsettled.extend(fees);
        for trip_id in unsettled {
            // Completed just now: leave it to its message.
            let fresh = core.trips.get(trip_id).is_some_and(|t| {
                now_ms() - t.updated_ms < i64::try_from(every.as_millis()).unwrap_or(i64::MAX)
            });
            if fresh {
                continue;
            }
            if let Err(e) = core.payments.settle(&core, trip_id).await {
                tracing::warn!(%trip_id, error = %e, "reconciliation could not settle the trip");
            }
        }
    }
}

/// The events a settlement follows: a completion (the fare) and a rider cancellation (a late
/// one's fee; a free one settles nothing).
const SETTLED_BY: [&str; 2] = ["trip.completed", "trip.cancelled"];

#[derive(Deserialize)]
struct Completion {
    trip_id: Uuid,
}

/// Reads a `trip.completed` payload.
fn completion(payload: &[u8]) -> Option<Uuid> {
    serde_json::from_slice::<Completion>(payload)
        .ok()
        .map(|c| c.trip_id)
}

/// Settles completions from the in-process bus until it closes.
pub async fn consume_local(core: Core, mut rx: broadcast::Receiver<Arc<BusMessage>>) {
    loop {
        let message = match rx.recv().await {
            Ok(m) => m,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "payment consumer lagged behind the in-process bus"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !SETTLED_BY.contains(&message.routing_key.as_str()) {
            continue;
        }
        let Some(trip_id) = completion(&message.payload) else {
            counter!(PAYMENTS_DEAD_LETTERED, "reason" => "malformed").increment(1);
            tracing::warn!(message_id = %message.message_id, "unreadable trip.completed message dropped");
            continue;
        };
        let span = settle_span(
            trip_id,
            message.headers.get("traceparent").map(String::as_str),
        );
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = core
            .payments
            .settle(&core, trip_id)
            .instrument(span.clone())
            .await
        {
            tracing::warn!(%trip_id, error = %e, "payment failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The span of one settlement: a child of the bus message's `traceparent`, so the payment is part
/// of the trace of the request that completed or cancelled the trip.
fn settle_span(trip_id: Uuid, parent: Option<&str>) -> tracing::Span {
    crate::telemetry::continuing(tracing::info_span!("payment.settle", %trip_id), parent)
}

/// Queue and exchange names derived from the events exchange.
#[must_use]
pub fn topology(exchange: &str) -> (String, String, String) {
    (
        format!("{exchange}.payments"),
        format!("{exchange}.dlx"),
        format!("{exchange}.payments.dead"),
    )
}

async fn declare(channel: &lapin::Channel, exchange: &str, prefetch: u16) -> lapin::Result<()> {
    let (queue, dlx, dead) = topology(exchange);
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(dead.as_str().into(), durable_queue, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            dead.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dlx.as_str().into()),
    );
    channel
        .queue_declare(queue.as_str().into(), durable_queue, args)
        .await?;
    for key in SETTLED_BY {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
}

fn attempts(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-attempts"))
        .and_then(|v| match v {
            AMQPValue::LongUInt(n) => Some(*n),
            AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// Handles one delivery; errors are the broker's (the caller reconnects).
async fn handle(
    core: &Core,
    channel: &lapin::Channel,
    exchange: &str,
    delivery: Delivery,
) -> lapin::Result<()> {
    let Some(trip_id) = completion(&delivery.data) else {
        counter!(PAYMENTS_DEAD_LETTERED, "reason" => "malformed").increment(1);
        tracing::warn!("unreadable trip.completed message dead-lettered");
        return delivery
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(drop);
    };
    let attempt = attempts(&delivery) + 1;
    tracing::debug!(%trip_id, attempt, redelivered = delivery.redelivered, "settling a completion");
    let parent = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("traceparent"))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        });
    let span = settle_span(trip_id, parent.as_deref());
    match core.payments.settle(core, trip_id).instrument(span).await {
        Ok(_) => delivery.ack(BasicAckOptions::default()).await.map(drop),
        Err(e) if attempt >= core.settings.amqp.max_attempts => {
            counter!(PAYMENTS_DEAD_LETTERED, "reason" => "attempts").increment(1);
            tracing::error!(%trip_id, error = %e, attempt, "payment dead-lettered after its last attempt");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map(drop)
        }
        Err(e) => {
            let backoff = Duration::from_millis(100 * 2u64.saturating_pow(attempt.min(10)));
            tracing::warn!(%trip_id, error = %e, attempt, "payment failed; retrying after {backoff:?}");
            tokio::time::sleep(backoff).await;
            let mut headers = delivery.properties.headers().clone().unwrap_or_default();
            headers.insert("x-attempts".into(), AMQPValue::LongUInt(attempt));
            let properties = delivery.properties.clone().with_headers(headers);
            // Straight back to the payment queue (default exchange), not through the topic
            // exchange, so other subscribers do not see the retry.
            let (queue, _, _) = topology(exchange);
            channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(queue.as_str()),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await?
                .await?;
            delivery.ack(BasicAckOptions::default()).await.map(drop)
        }
    }
}

/// Consumes `{exchange}.payments` until `shutdown`, reconnecting with backoff.
pub async fn consume_amqp(core: Core, url: String, mut shutdown: watch::Receiver<bool>) {
    let exchange = core.settings.amqp.exchange.clone();
    let (queue, _, _) = topology(&exchange);
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let session = async {
            let (connection, channel) = Amqp::connect(&url, &exchange).await?;
            declare(&channel, &exchange, core.settings.amqp.prefetch).await?;
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "hexdispatch-payments".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            tracing::info!(%queue, "payment consumer running");
            while let Some(delivery) = consumer.next().await {
                handle(&core, &channel, &exchange, delivery?).await?;
            }
            drop(connection);
            Ok::<(), lapin::Error>(())
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "payment consumer lost the broker; reconnecting");
                }
            }
            _ = shutdown.changed() => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
