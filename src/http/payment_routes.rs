//! Wallets, receipts and earnings (SPEC §4, §7). Money is `{amount, currency}` in minor units.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::caller::{Caller, parse_id};
use super::error::ApiError;
use super::input::{FieldError, Query, json_body};
use super::trip_routes::short_text;
use crate::actors::Core;
use crate::actors::protocol::{TripView, Viewer};
use crate::clock::rfc3339;
use crate::dispatch::Role;
use crate::dispatch::ledger::rider_account;
use crate::dispatch::{Currency, Money, TripStatus};
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
    Ok(HttpResponse::Ok().json(json!({"rider_id": rider, "balance": balance})))
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
    let transactions: Vec<_> = lines
        .iter()
        .map(|l| {
            let kind = line_kind(&l.txn_id);
            let mut line = json!({
                "id": l.id.to_string(),
                "at": rfc3339(l.created_ms),
                "kind": kind,
                "amount": l.amount,
            });
            if let Some(trip) = l.trip_id {
                line["trip_id"] = json!(trip);
            }
            if let Some(reference) = &l.reference {
                line["reference"] = json!(reference);
            }
            line
        })
        .collect();
    let mut body = json!({"rider_id": rider, "transactions": transactions});
    if let Some(next) = next {
        body["next"] = json!(next);
    }
    Ok(HttpResponse::Ok().json(body))
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

#[derive(Deserialize)]
struct MoneyBody {
    amount: Option<i64>,
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

#[derive(Deserialize)]
struct TopUpBody {
    amount: Option<MoneyBody>,
    reference: Option<String>,
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
    Ok(HttpResponse::Ok().json(json!({
        "rider_id": rider,
        "balance": done.balance,
        "applied": done.applied,
        "payments_retried": done.payments_retried,
    })))
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
    let mut payment = json!({"status": status});
    if fee_due || trip.fare.is_some() {
        payment["kind"] = json!(if fee_due { "cancellation_fee" } else { "fare" });
    }
    if let Some(c) = &charge {
        payment["amount"] = json!(c.amount);
        payment["captured_at"] = json!(rfc3339(c.created_ms));
        payment["refunded"] = json!(Money::new(c.refunded, c.amount.currency));
        let refunds: Vec<serde_json::Value> = store
            .refunds(trip_id)
            .await?
            .iter()
            .map(|r| {
                json!({"amount": r.amount, "reason": r.reason, "reference": r.reference,
                       "at": rfc3339(r.created_ms)})
            })
            .collect();
        payment["refunds"] = json!(refunds);
        if viewer != Viewer::Rider {
            payment["commission"] = json!(Money::new(c.commission, c.amount.currency));
            payment["driver_earnings"] = json!(Money::new(
                c.amount.amount - c.commission,
                c.amount.currency
            ));
        }
    }
    if status == "failed" {
        payment["reason"] = json!("insufficient_funds");
    }
    // A capped fare carries its cap in the breakdown; `trip.fare_flagged` is in the events.
    let flagged = trip.fare.is_some_and(|f| f.fare_cap.is_some());
    let view = TripView::of(&trip, viewer);
    Ok(HttpResponse::Ok().json(json!({
        "trip_id": trip_id,
        "status": trip.status,
        "rider_id": trip.rider_id,
        "driver_id": trip.driver_id,
        "fare": view.fare,
        "breakdown": view.fare_breakdown,
        "fare_estimate": view.fare_estimate,
        "surge": view.surge,
        "discount": trip.fare.map(|f| f.discount),
        "promo_code": trip.promo_code,
        "cancellation_fee": trip.cancellation_fee,
        "fare_capped": flagged,
        "payment": payment,
        "completed_at": trip.status_times.get(&TripStatus::TripCompleted).map(|t| rfc3339(*t)),
    })))
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
    let trips: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| json!({"trip_id": r.trip_id, "amount": r.amount, "at": rfc3339(r.created_ms)}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "driver_id": driver,
        "from": rfc3339(from_ms),
        "to": rfc3339(to_ms),
        "total": Money::new(total, currency),
        "trips": trips,
    })))
}

#[derive(Deserialize)]
struct RefundBody {
    amount: Option<MoneyBody>,
    reason: Option<String>,
    reference: Option<String>,
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
        } => Ok(HttpResponse::Created().json(json!({
            "trip_id": trip_id,
            "reference": reference,
            "refunded": amount,
            "total_refunded": total_refunded,
            "balance": balance,
            "applied": applied,
        }))),
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
