//! Wallets, receipts and earnings (SPEC §4, §7). Money is `{amount, currency}` in minor units.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::caller::{Caller, parse_id};
use super::error::ApiError;
use super::input::{FieldError, Query, json_body};
use super::trip_routes::short_text;
use crate::actors::Core;
use crate::actors::protocol::{TripView, Viewer};
use crate::clock::rfc3339;
use crate::dispatch::Role;
use crate::dispatch::ledger::rider_account;
use crate::dispatch::{Currency, FareBreakdown, Money, Surge, TripStatus};
use crate::http::AppState;
use crate::persistence::{Persistence, RefundOutcome};

/// Largest single top-up, minor units.
const MAX_TOPUP: i64 = 100_000_000;

fn persistence(core: &Core) -> Result<&Persistence, ApiError> {
    core.persistence().ok_or_else(ApiError::no_store)
}

fn default_currency(core: &Core) -> Currency {
    Currency::parse(&core.settings.pricing.currency).unwrap_or(Currency::USD)
}

/// `GET /api/riders/{id}/wallet` → `{rider_id, balance: Money}` (that rider, operator).
pub async fn wallet(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rider = parse_id(&path, "rider id")?;
    caller.require_rider_or_operator(rider)?;
    let balance = persistence(&core)?
        .store()
        .balance(&rider_account(rider))
        .await?
        .unwrap_or_else(|| Money::zero(default_currency(&core)));
    Ok(HttpResponse::Ok().json(Wallet {
        rider_id: rider,
        balance,
    }))
}

/// Most lines one `transactions` page holds.
const MAX_TRANSACTIONS: usize = 500;

/// `GET /api/riders/{id}/transactions?limit=50&before=` (that rider, operator): the rider's
/// ledger lines, newest first. `kind` is `charge` (a trip's fare), `cancellation_fee` (a late
/// cancellation), `refund` (an operator's refund of either, with its `reference`) or `topup`
/// (with its `reference`). Each line's `id` is the cursor for `before`, and `next` the one for
/// the next page (absent on the last).
pub async fn transactions(
    req: actix_web::HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rider = parse_id(&path, "rider id")?;
    caller.require_rider_or_operator(rider)?;
    let q = crate::http::input::Query::parse(&req)?;
    let limit = q.usize("limit")?.unwrap_or(50);
    if !(1..=MAX_TRANSACTIONS).contains(&limit) {
        return Err(crate::http::input::FieldError::out_of_range(format!(
            "limit must be within [1, {MAX_TRANSACTIONS}]"
        ))
        .into());
    }
    let before = match q.string("before") {
        None => None,
        Some(raw) => Some(raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
            crate::http::input::FieldError::invalid("before", "a cursor from an earlier page")
        })?),
    };
    let lines = persistence(&core)?
        .store()
        .statement(&rider_account(rider), before, limit)
        .await?;
    let next = (lines.len() == limit)
        .then(|| lines.last().map(|l| l.id.to_string()))
        .flatten();
    let transactions = lines
        .iter()
        .map(|l| TransactionLine {
            id: l.id.to_string(),
            at: rfc3339(l.created_ms),
            kind: line_kind(&l.txn_id),
            amount: l.amount,
            trip_id: l.trip_id,
            reference: l.reference.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Transactions {
        rider_id: rider,
        transactions,
        next,
    }))
}

/// `GET /api/riders/{id}/wallet`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Wallet {
    /// The rider.
    rider_id: Uuid,
    /// What the wallet holds.
    balance: Money,
}

/// One ledger line of a rider.
#[derive(Serialize, ToSchema)]
pub(crate) struct TransactionLine {
    /// Cursor for `before`.
    id: String,
    /// When, RFC 3339.
    at: String,
    /// `charge`, `cancellation_fee`, `refund` or `topup`.
    #[schema(pattern = "^(charge|cancellation_fee|refund|topup)$")]
    kind: &'static str,
    /// Credit (positive) or debit (negative) of the wallet.
    amount: Money,
    /// The trip it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    trip_id: Option<Uuid>,
    /// The top-up's or refund's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

/// `GET /api/riders/{id}/transactions`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Transactions {
    /// The rider.
    rider_id: Uuid,
    /// Newest first.
    transactions: Vec<TransactionLine>,
    /// The `before` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// What a ledger transaction was, from its id (see `persistence::wallets`).
fn line_kind(txn_id: &str) -> &'static str {
    match txn_id.split_once(':').map(|(prefix, _)| prefix) {
        Some("fee") => "cancellation_fee",
        Some("refund") => "refund",
        Some("topup") => "topup",
        _ => "charge",
    }
}

/// Money in a request: `{amount, currency}`.
#[derive(Deserialize, ToSchema)]
#[schema(as = MoneyInput)]
pub(crate) struct MoneyBody {
    /// Minor units, at least 1.
    #[schema(required = true, minimum = 1)]
    amount: Option<i64>,
    /// ISO 4217 code.
    #[schema(required = true, pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
}

/// A `Money` of a request body: `amount` within [1, `MAX_TOPUP`] minor units, an ISO currency.
fn money(body: MoneyBody) -> Result<Money, FieldError> {
    let minor = body
        .amount
        .ok_or_else(|| FieldError::missing("amount.amount"))?;
    if !(1..=MAX_TOPUP).contains(&minor) {
        return Err(FieldError::out_of_range(format!(
            "amount.amount must be within [1, {MAX_TOPUP}] minor units"
        )));
    }
    let currency = Currency::parse(
        &body
            .currency
            .ok_or_else(|| FieldError::missing("amount.currency"))?,
    )
    .map_err(|e| FieldError::invalid("amount.currency", e))?;
    Ok(Money::new(minor, currency))
}

/// `POST /api/riders/{id}/wallet/topup`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TopUpBody {
    /// What to credit.
    #[schema(required = true)]
    amount: Option<MoneyBody>,
    /// Idempotency reference: the same one twice credits once.
    #[schema(required = true)]
    reference: Option<String>,
}

/// What a top-up did.
#[derive(Serialize, ToSchema)]
pub(crate) struct ToppedUpView {
    /// The rider.
    rider_id: Uuid,
    /// The balance after it (and after the payments it settled).
    balance: Money,
    /// False when the reference was used before (nothing credited).
    applied: bool,
    /// Failed payments settled right after.
    payments_retried: usize,
}

/// `POST /api/riders/{id}/wallet/topup` `{amount: Money, reference}` → `{balance: Money}`
/// (operators). The same reference twice credits once. Failed payments of the rider are retried
/// right after.
pub async fn top_up(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let rider = parse_id(&path, "rider id")?;
    caller.require(&[Role::Operator])?;
    let body: TopUpBody = json_body(&req, payload).await?;
    let amount = money(body.amount.ok_or_else(|| FieldError::missing("amount"))?)?;
    let reference = short_text(body.reference, "reference", 128)?
        .ok_or_else(|| FieldError::missing("reference"))?;
    let done = core
        .payments
        .top_up(&core, rider, amount, &reference)
        .await?;
    Ok(HttpResponse::Ok().json(ToppedUpView {
        rider_id: rider,
        balance: done.balance,
        applied: done.applied,
        payments_retried: done.payments_retried,
    }))
}

/// `GET /api/trips/{id}/receipt`: fare, breakdown, surge, discount and payment status (its rider,
/// its driver, operators).
pub async fn receipt(
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    let trip = core
        .load_trip(trip_id)
        .await?
        .ok_or_else(|| ApiError::not_found("trip_not_found", format!("no trip {trip_id}")))?;
    let viewer = caller.trip_viewer(&trip)?;
    let store = persistence(&core)?.store();
    let charge = store.payment(trip_id).await?;
    let fee_due = trip.status == TripStatus::Cancelled && trip.cancellation_fee.is_some();
    let status = match (trip.status, &charge) {
        (_, Some(c)) if c.refunded >= c.amount.amount && c.amount.amount > 0 => "refunded",
        (_, Some(c)) if c.refunded > 0 => "partially_refunded",
        (_, Some(_)) => "captured",
        (TripStatus::PaymentFailed, None) => "failed",
        (TripStatus::Cancelled, None) if fee_due && trip.fee_failed => "failed",
        (TripStatus::TripCompleted, None) => "pending",
        (TripStatus::Cancelled, None) if fee_due => "pending",
        _ => "not_applicable",
    };
    let mut payment = PaymentView {
        status,
        kind: (fee_due || trip.fare.is_some()).then_some(if fee_due {
            "cancellation_fee"
        } else {
            "fare"
        }),
        reason: (status == "failed").then_some("insufficient_funds"),
        ..PaymentView::default()
    };
    if let Some(c) = &charge {
        payment.amount = Some(c.amount);
        payment.captured_at = Some(rfc3339(c.created_ms));
        payment.refunded = Some(Money::new(c.refunded, c.amount.currency));
        payment.refunds = Some(
            store
                .refunds(trip_id)
                .await?
                .into_iter()
                .map(|r| RefundLine {
                    amount: r.amount,
                    reason: r.reason,
                    reference: r.reference,
                    at: rfc3339(r.created_ms),
                })
                .collect(),
        );
        if viewer != Viewer::Rider {
            payment.commission = Some(Money::new(c.commission, c.amount.currency));
            payment.driver_earnings = Some(Money::new(
                c.amount.amount - c.commission,
                c.amount.currency,
            ));
        }
    }
    // A capped fare carries its cap in the breakdown; `trip.fare_flagged` is in the events.
    let flagged = trip.fare.is_some_and(|f| f.fare_cap.is_some());
    let view = TripView::of(&trip, viewer);
    Ok(HttpResponse::Ok().json(Receipt {
        trip_id,
        status: trip.status,
        rider_id: trip.rider_id,
        driver_id: trip.driver_id,
        fare: view.fare,
        breakdown: view.fare_breakdown,
        fare_estimate: view.fare_estimate,
        surge: view.surge,
        discount: trip.fare.map(|f| f.discount),
        promo_code: trip.promo_code.clone(),
        cancellation_fee: trip.cancellation_fee,
        fare_capped: flagged,
        payment,
        completed_at: trip
            .status_times
            .get(&TripStatus::TripCompleted)
            .map(|t| rfc3339(*t)),
    }))
}

/// A refund as a receipt lists it.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundLine {
    /// What it gave back.
    amount: Money,
    /// Why.
    reason: String,
    /// Its idempotency reference.
    reference: String,
    /// When, RFC 3339.
    at: String,
}

/// A receipt's payment.
#[derive(Serialize, ToSchema, Default)]
pub(crate) struct PaymentView {
    /// `captured`, `partially_refunded`, `refunded`, `failed`, `pending` or `not_applicable`.
    status: &'static str,
    /// `fare` or `cancellation_fee`.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// What was charged.
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Money>,
    /// When, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    captured_at: Option<String>,
    /// Refunded so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    refunded: Option<Money>,
    /// Each refund.
    #[serde(skip_serializing_if = "Option::is_none")]
    refunds: Option<Vec<RefundLine>>,
    /// The platform's part (driver and operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    commission: Option<Money>,
    /// The driver's part (driver and operators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    driver_earnings: Option<Money>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// `GET /api/trips/{id}/receipt`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Receipt {
    /// The trip.
    trip_id: Uuid,
    /// Its status.
    status: TripStatus,
    /// Its rider.
    rider_id: Uuid,
    /// Its driver.
    driver_id: Option<Uuid>,
    /// The final fare.
    fare: Option<Money>,
    /// How it was made.
    breakdown: Option<FareBreakdown>,
    /// The quote.
    fare_estimate: Money,
    /// The surge quoted and charged.
    surge: Surge,
    /// What the promotion took off.
    discount: Option<Money>,
    /// The promotion used.
    promo_code: Option<String>,
    /// A late cancellation's fee.
    cancellation_fee: Option<Money>,
    /// Whether the fare was capped at `pricing.max_fare_ratio` × the estimate.
    fare_capped: bool,
    /// The charge.
    payment: PaymentView,
    /// When it was completed, RFC 3339.
    completed_at: Option<String>,
}

/// `GET /api/drivers/{id}/earnings?from=&to=` → `{driver_id, total: Money, trips: [{trip_id,
/// amount, at}]}` (that driver, operators). The default window is the last 30 days.
pub async fn earnings(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let driver = parse_id(&path, "driver id")?;
    caller.require_driver_or_operator(driver)?;
    let q = Query::parse(&req)?;
    let (from_ms, to_ms) = q.time_window(30 * 24 * 3_600 * 1_000)?;
    let rows = persistence(&core)?
        .store()
        .earnings(driver, from_ms, to_ms)
        .await?;
    let currency = rows
        .first()
        .map_or_else(|| default_currency(&core), |r| r.amount.currency);
    let total: i64 = rows
        .iter()
        .filter(|r| r.amount.currency == currency)
        .map(|r| r.amount.amount)
        .sum();
    let trips = rows
        .iter()
        .map(|r| EarningLine {
            trip_id: r.trip_id,
            kind: match line_kind(&r.txn_id) {
                "charge" => "fare",
                other => other,
            },
            amount: r.amount,
            at: rfc3339(r.created_ms),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Earnings {
        driver_id: driver,
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        total: Money::new(total, currency),
        trips,
    }))
}

/// One earning (a refund's reversal is negative).
#[derive(Serialize, ToSchema)]
pub(crate) struct EarningLine {
    /// The trip.
    trip_id: Uuid,
    /// `fare`, `cancellation_fee`, or `refund` (the reversal of the driver's share).
    #[schema(pattern = "^(fare|cancellation_fee|refund)$")]
    kind: &'static str,
    /// The driver's part.
    amount: Money,
    /// When, RFC 3339.
    at: String,
}

/// `GET /api/drivers/{id}/earnings`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Earnings {
    /// The driver.
    driver_id: Uuid,
    /// Window start, RFC 3339.
    from: String,
    /// Window end, RFC 3339.
    to: String,
    /// Sum of the lines.
    total: Money,
    /// Oldest first.
    trips: Vec<EarningLine>,
}

/// `POST /api/trips/{id}/refund`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RefundBody {
    /// How much; everything left of the charge when absent.
    amount: Option<MoneyBody>,
    /// Why (at most 500 characters).
    #[schema(required = true)]
    reason: Option<String>,
    /// Idempotency reference: the same one twice refunds once.
    #[schema(required = true)]
    reference: Option<String>,
}

/// What a refund did.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundView {
    /// The trip.
    trip_id: Uuid,
    /// The refund's reference.
    reference: String,
    /// What this refund gave back.
    refunded: Money,
    /// Everything refunded on the trip so far.
    total_refunded: Money,
    /// The rider's balance after it.
    balance: Money,
    /// False when the reference was used before (nothing moved).
    applied: bool,
}

/// `POST /api/trips/{id}/refund` `{amount?: Money, reason, reference}` → 201 `{refunded: Money,
/// total_refunded: Money, balance: Money, applied}` (operators): refunds the whole charge (no
/// amount) or part of it through the ledger. The same reference again refunds nothing and
/// answers as the first time (`applied: false`); more than is left of the charge is 422
/// `refund_exceeds_charge`; a trip never charged is 409 `not_charged`.
pub async fn refund(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let trip_id = parse_id(&path, "trip id")?;
    caller.require(&[Role::Operator])?;
    let body: RefundBody = json_body(&req, payload).await?;
    let amount = body.amount.map(money).transpose()?;
    let reason =
        short_text(body.reason, "reason", 500)?.ok_or_else(|| FieldError::missing("reason"))?;
    let reference = short_text(body.reference, "reference", 128)?
        .ok_or_else(|| FieldError::missing("reference"))?;
    if core.load_trip(trip_id).await?.is_none() {
        return Err(ApiError::not_found(
            "trip_not_found",
            format!("no trip {trip_id}"),
        ));
    }
    persistence(&core)?;
    let outcome = core
        .payments
        .refund(&core, trip_id, amount, &reason, &reference)
        .await
        .map_err(|e| ApiError::unavailable("database_unavailable", e.to_string()))?;
    match outcome {
        RefundOutcome::Refunded {
            amount,
            total_refunded,
            balance,
            applied,
        } => Ok(HttpResponse::Created().json(RefundView {
            trip_id,
            reference,
            refunded: amount,
            total_refunded,
            balance,
            applied,
        })),
        RefundOutcome::NotCharged => Err(ApiError::conflict(
            "not_charged",
            format!("trip {trip_id} has no charge to refund"),
        )),
        RefundOutcome::TooMuch { refundable } => Err(ApiError::unprocessable(
            "refund_exceeds_charge",
            format!(
                "at most {} minor units ({}) of this trip's charge are left to refund",
                refundable.amount, refundable.currency
            ),
        )),
        RefundOutcome::ReferenceTaken => Err(ApiError::conflict(
            "reference_reused",
            "this reference was used for a refund of another trip",
        )),
        RefundOutcome::CurrencyMismatch { charged } => Err(ApiError::unprocessable(
            "currency_mismatch",
            format!("the trip was charged in {charged}"),
        )),
    }
}
