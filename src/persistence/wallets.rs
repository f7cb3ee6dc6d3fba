//! Money in the store: wallets, the double-entry ledger, charges, refunds and top-ups. Each
//! operation is one transaction; a charge (a fare, or a late cancellation's fee) is idempotent by
//! trip id (`payments` primary key), a refund by its reference (`refunds` primary key) and a
//! top-up by its reference (`topups` primary key), so redelivered messages and retried requests
//! move money once. A refund never exceeds what is left of its trip's charge.

use sqlx::Row;
use uuid::Uuid;

use super::store::{Store, StoreError};
use crate::dispatch::ledger::{Posting, refund, rider_account, top_up, trip_charge};
use crate::dispatch::{Currency, Money};

/// What a charge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged now.
    Charged,
    /// Charged before (a redelivery): nothing moved.
    AlreadyCharged,
    /// The rider's wallet holds less than the fare: nothing moved.
    InsufficientFunds {
        /// The balance, minor units.
        balance: i64,
    },
}

/// What a trip is charged for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeKind {
    /// The fare of a completed trip.
    Fare,
    /// The fee of a late rider cancellation.
    CancellationFee,
}

impl ChargeKind {
    /// The stored name: `fare` or `cancellation_fee`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fare => "fare",
            Self::CancellationFee => "cancellation_fee",
        }
    }

    /// The ledger transaction id of this charge of `trip_id`.
    fn txn_id(self, trip_id: Uuid) -> String {
        match self {
            Self::Fare => format!("trip:{trip_id}"),
            Self::CancellationFee => format!("fee:{trip_id}"),
        }
    }
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Refunded now (or, for a reference seen before on the same trip, earlier: nothing moved).
    Refunded {
        /// What this refund gave back.
        amount: Money,
        /// Everything refunded on the trip so far.
        total_refunded: Money,
        /// The rider's balance after it.
        balance: Money,
        /// Whether this call moved the money (false: the reference was used before).
        applied: bool,
    },
    /// The trip was never charged.
    NotCharged,
    /// More than is left of the charge was asked.
    TooMuch {
        /// What may still be refunded.
        refundable: Money,
    },
    /// The reference belongs to a refund of another trip.
    ReferenceTaken,
    /// The amount is in another currency than the charge.
    CurrencyMismatch {
        /// The charge's currency.
        charged: Currency,
    },
}

/// A charge as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// The fare charged.
    pub amount: Money,
    /// The platform's part.
    pub commission: i64,
    /// When, epoch ms.
    pub created_ms: i64,
    /// A fare or a cancellation fee.
    pub kind: ChargeKind,
    /// Refunded so far.
    pub refunded: i64,
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    /// Its idempotency reference.
    pub reference: String,
    /// What it gave back.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// When, epoch ms.
    pub created_ms: i64,
}

/// One ledger line of an account, as its owner's statement shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementLine {
    /// The line's ledger id: a cursor for the next page.
    pub id: i64,
    /// Credit (positive) or debit (negative) of the account.
    pub amount: Money,
    /// The trip it belongs to, if any.
    pub trip_id: Option<Uuid>,
    /// The top-up (or other) reference, if any.
    pub reference: Option<String>,
    /// The ledger transaction (`trip:…` a fare, `fee:…` a cancellation fee, `refund:…`,
    /// `topup:…`).
    pub txn_id: String,
    /// When, epoch ms.
    pub created_ms: i64,
}

/// One earning of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earning {
    /// The trip.
    pub trip_id: Uuid,
    /// What the driver earned (negative for a refund's reversal).
    pub amount: Money,
    /// When, epoch ms.
    pub created_ms: i64,
    /// The ledger transaction (`trip:…`, `fee:…`, `refund:…`).
    pub txn_id: String,
}

fn currency(raw: &str) -> Result<Currency, StoreError> {
    Currency::parse(raw).map_err(|e| StoreError::Corrupt(e.to_string()))
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn post(
    tx: &mut Tx<'_>,
    txn_id: &str,
    postings: &[Posting],
    currency: Currency,
    trip_id: Option<Uuid>,
    reference: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    for p in postings {
        sqlx::query(
            "INSERT INTO ledger (txn_id, account, amount, currency, trip_id, reference, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(txn_id)
        .bind(&p.account)
        .bind(p.amount)
        .bind(currency.as_str().to_owned())
        .bind(trip_id.map(|t| t.to_string()))
        .bind(reference.map(str::to_owned))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO wallets (owner_id, currency, balance, updated_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner_id) DO UPDATE SET balance = wallets.balance + excluded.balance, \
             updated_ms = excluded.updated_ms",
        )
        .bind(&p.account)
        .bind(currency.as_str().to_owned())
        .bind(p.amount)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn balance_in(
    conn: &mut sqlx::AnyConnection,
    account: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT balance, currency FROM wallets WHERE owner_id = $1")
        .bind(account)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| Ok((r.try_get("balance")?, r.try_get("currency")?)))
        .transpose()
}

/// A trip's charge, with what was refunded of it so far.
async fn payment_in(
    conn: &mut sqlx::AnyConnection,
    trip_id: Uuid,
) -> Result<Option<PaymentRow>, StoreError> {
    let row = sqlx::query(
        "SELECT amount, commission, currency, created_ms, kind, refunded FROM payments WHERE trip_id = $1",
    )
    .bind(trip_id.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(PaymentRow {
            amount: Money::new(
                r.try_get("amount")?,
                currency(&r.try_get::<String, _>("currency")?)?,
            ),
            commission: r.try_get("commission")?,
            created_ms: r.try_get("created_ms")?,
            kind: if r.try_get::<String, _>("kind")? == "cancellation_fee" {
                ChargeKind::CancellationFee
            } else {
                ChargeKind::Fare
            },
            refunded: r.try_get("refunded")?,
        })),
    }
}

/// The rider and driver of a charged trip.
async fn parties_in(
    conn: &mut sqlx::AnyConnection,
    trip_id: Uuid,
) -> Result<(Uuid, Uuid), StoreError> {
    let row = sqlx::query("SELECT rider_id, driver_id FROM payments WHERE trip_id = $1")
        .bind(trip_id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let id = |name: &str| -> Result<Uuid, StoreError> {
        let raw: String = row.try_get(name)?;
        Uuid::parse_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    Ok((id("rider_id")?, id("driver_id")?))
}

impl Store {
    /// Charges a completed trip's fare: rider debit, driver credit less commission, platform
    /// commission. Once per trip, whatever the number of calls.
    ///
    /// # Errors
    ///
    /// The database's error (nothing moved then).
    #[allow(clippy::too_many_arguments)]
    pub async fn charge_trip(
        &self,
        trip_id: Uuid,
        kind: ChargeKind,
        rider: Uuid,
        driver: Uuid,
        fare: Money,
        commission_bps: u32,
        now: i64,
    ) -> Result<ChargeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("SELECT 1 AS n FROM payments WHERE trip_id = $1")
            .bind(trip_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            return Ok(ChargeOutcome::AlreadyCharged);
        }
        let balance = balance_in(&mut tx, &rider_account(rider))
            .await?
            .map_or(0, |b| b.0);
        if balance < fare.amount {
            return Ok(ChargeOutcome::InsufficientFunds { balance });
        }
        let postings = trip_charge(rider, driver, fare, commission_bps);
        let inserted = sqlx::query(
            "INSERT INTO payments (trip_id, rider_id, driver_id, amount, commission, currency, created_ms, kind) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (trip_id) DO NOTHING",
        )
        .bind(trip_id.to_string())
        .bind(rider.to_string())
        .bind(driver.to_string())
        .bind(fare.amount)
        .bind(postings[2].amount)
        .bind(fare.currency.as_str().to_owned())
        .bind(now)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(ChargeOutcome::AlreadyCharged);
        }
        post(
            &mut tx,
            &kind.txn_id(trip_id),
            &postings,
            fare.currency,
            Some(trip_id),
            None,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(ChargeOutcome::Charged)
    }

    /// Refunds `amount` (everything left, when `None`) of `trip_id`'s charge, once per
    /// `reference`: the rider is credited, the driver's share and the platform's commission are
    /// reversed in proportion. The commission reversed is the commission of everything refunded
    /// so far less what earlier refunds reversed, so a full refund in parts reverses it exactly.
    ///
    /// # Errors
    ///
    /// The database's error (nothing moved then).
    pub async fn refund_trip(
        &self,
        trip_id: Uuid,
        amount: Option<Money>,
        reason: &str,
        reference: &str,
        now: i64,
    ) -> Result<RefundOutcome, StoreError> {
        if let Some(replay) = self.refund_replay(trip_id, reference).await? {
            return Ok(replay);
        }
        let mut tx = self.pool.begin().await?;
        let Some(charge) = payment_in(&mut tx, trip_id).await? else {
            return Ok(RefundOutcome::NotCharged);
        };
        let (rider, driver) = parties_in(&mut tx, trip_id).await?;
        let cur = charge.amount.currency;
        if let Some(asked) = amount
            && asked.currency != cur
        {
            return Ok(RefundOutcome::CurrencyMismatch { charged: cur });
        }
        let this = amount.map_or(charge.amount.amount - charge.refunded, |m| m.amount);
        // Reserve the amount where it is checked: a concurrent refund of the same trip waits for
        // this row, then sees what this one took.
        let reserved = sqlx::query(
            "UPDATE payments SET refunded = refunded + $1 \
             WHERE trip_id = $2 AND $1 > 0 AND amount - refunded >= $1",
        )
        .bind(this)
        .bind(trip_id.to_string())
        .execute(&mut *tx)
        .await?;
        if reserved.rows_affected() == 0 {
            let left = payment_in(&mut tx, trip_id)
                .await?
                .map_or(0, |c| c.amount.amount - c.refunded);
            return Ok(RefundOutcome::TooMuch {
                refundable: Money::new(left.max(0), cur),
            });
        }
        // Read after the reservation, so earlier refunds of this trip are all visible.
        let refunded_before: i64 = sqlx::query("SELECT refunded FROM payments WHERE trip_id = $1")
            .bind(trip_id.to_string())
            .fetch_one(&mut *tx)
            .await?
            .try_get::<i64, _>("refunded")?
            - this;
        let reversed_before: i64 = sqlx::query(
            "SELECT CAST(COALESCE(SUM(commission), 0) AS BIGINT) AS c FROM refunds WHERE trip_id = $1",
        )
        .bind(trip_id.to_string())
        .fetch_one(&mut *tx)
        .await?
        .try_get("c")?;
        let postings = refund(
            rider,
            driver,
            Money::new(charge.amount.amount, cur),
            charge.commission,
            refunded_before,
            reversed_before,
            this,
        );
        let commission = -postings[2].amount;
        let inserted = sqlx::query(
            "INSERT INTO refunds (reference, trip_id, amount, commission, currency, reason, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (reference) DO NOTHING",
        )
        .bind(reference)
        .bind(trip_id.to_string())
        .bind(this)
        .bind(commission)
        .bind(cur.as_str().to_owned())
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            // The same reference won a race with this call: undo the reservation, answer as it.
            drop(tx);
            return self
                .refund_replay(trip_id, reference)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("refund {reference} vanished")));
        }
        post(
            &mut tx,
            &format!("refund:{reference}"),
            &postings,
            cur,
            Some(trip_id),
            Some(reference),
            now,
        )
        .await?;
        let balance = balance_in(&mut tx, &rider_account(rider))
            .await?
            .map_or(0, |b| b.0);
        tx.commit().await?;
        Ok(RefundOutcome::Refunded {
            amount: Money::new(this, cur),
            total_refunded: Money::new(refunded_before + this, cur),
            balance: Money::new(balance, cur),
            applied: true,
        })
    }

    /// The answer to a refund whose `reference` was used before: as the first time for the same
    /// trip, `ReferenceTaken` for another; `None` for a new reference.
    async fn refund_replay(
        &self,
        trip_id: Uuid,
        reference: &str,
    ) -> Result<Option<RefundOutcome>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(row) = sqlx::query("SELECT trip_id, amount FROM refunds WHERE reference = $1")
            .bind(reference)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        if row.try_get::<String, _>("trip_id")? != trip_id.to_string() {
            return Ok(Some(RefundOutcome::ReferenceTaken));
        }
        let charge = payment_in(&mut conn, trip_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("refund {reference} of an uncharged trip"))
        })?;
        let cur = charge.amount.currency;
        let rider = parties_in(&mut conn, trip_id).await?.0;
        let balance = balance_in(&mut conn, &rider_account(rider))
            .await?
            .map_or(0, |b| b.0);
        Ok(Some(RefundOutcome::Refunded {
            amount: Money::new(row.try_get("amount")?, cur),
            total_refunded: Money::new(charge.refunded, cur),
            balance: Money::new(balance, cur),
            applied: false,
        }))
    }

    /// A trip's refunds, oldest first.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn refunds(&self, trip_id: Uuid) -> Result<Vec<RefundRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT reference, amount, currency, reason, created_ms FROM refunds \
             WHERE trip_id = $1 ORDER BY created_ms, reference",
        )
        .bind(trip_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RefundRow {
                    reference: r.try_get("reference")?,
                    amount: Money::new(
                        r.try_get("amount")?,
                        currency(&r.try_get::<String, _>("currency")?)?,
                    ),
                    reason: r.try_get("reason")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// Credits `amount` to `account`, once per `reference`. Returns the balance after, and
    /// whether this call applied it.
    ///
    /// # Errors
    ///
    /// The database's error, or a wallet in another currency.
    pub async fn top_up(
        &self,
        account: &str,
        amount: Money,
        reference: &str,
        now: i64,
    ) -> Result<(Money, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some((_, held)) = balance_in(&mut tx, account).await?
            && held != amount.currency.as_str()
        {
            return Err(StoreError::Corrupt(format!(
                "the wallet holds {held}, not {}",
                amount.currency
            )));
        }
        let inserted = sqlx::query(
            "INSERT INTO topups (reference, owner_id, amount, currency, created_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (reference) DO NOTHING",
        )
        .bind(reference)
        .bind(account)
        .bind(amount.amount)
        .bind(amount.currency.as_str().to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let applied = inserted.rows_affected() == 1;
        if applied {
            post(
                &mut tx,
                &format!("topup:{reference}"),
                &top_up(account, amount),
                amount.currency,
                None,
                Some(reference),
                now,
            )
            .await?;
        }
        let (balance, held) = balance_in(&mut tx, account)
            .await?
            .unwrap_or((0, amount.currency.as_str().to_owned()));
        tx.commit().await?;
        Ok((Money::new(balance, currency(&held)?), applied))
    }

    /// An account's balance, if it has a wallet.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn balance(&self, account: &str) -> Result<Option<Money>, StoreError> {
        let row = sqlx::query("SELECT balance, currency FROM wallets WHERE owner_id = $1")
            .bind(account)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(Money::new(
                r.try_get("balance")?,
                currency(&r.try_get::<String, _>("currency")?)?,
            ))),
        }
    }

    /// A trip's charge, if it was charged.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn payment(&self, trip_id: Uuid) -> Result<Option<PaymentRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        payment_in(&mut conn, trip_id).await
    }

    /// The ledger lines of `account`, newest first: at most `limit`, older than the line `before`
    /// when given.
    ///
    /// # Errors
    ///
    /// The database's error, or a stored line that cannot be read.
    pub async fn statement(
        &self,
        account: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StatementLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, txn_id, amount, currency, trip_id, reference, created_ms FROM ledger \
             WHERE account = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(account)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let trip: Option<String> = r.try_get("trip_id")?;
                Ok(StatementLine {
                    id: r.try_get("id")?,
                    amount: Money::new(
                        r.try_get("amount")?,
                        currency(&r.try_get::<String, _>("currency")?)?,
                    ),
                    trip_id: trip
                        .map(|t| {
                            Uuid::parse_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))
                        })
                        .transpose()?,
                    reference: r.try_get("reference")?,
                    txn_id: r.try_get("txn_id")?,
                    created_ms: r.try_get("created_ms")?,
                })
            })
            .collect()
    }

    /// A driver's earnings from trips within `[from_ms, to_ms]`, oldest first.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn earnings(
        &self,
        driver: Uuid,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Earning>, StoreError> {
        let rows = sqlx::query(
            "SELECT trip_id, amount, currency, created_ms, txn_id FROM ledger WHERE account = $1 \
             AND trip_id IS NOT NULL AND created_ms >= $2 AND created_ms <= $3 ORDER BY created_ms, id",
        )
        .bind(crate::dispatch::ledger::driver_account(driver))
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let trip: String = r.try_get("trip_id")?;
                Ok(Earning {
                    trip_id: Uuid::parse_str(&trip)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    amount: Money::new(
                        r.try_get("amount")?,
                        currency(&r.try_get::<String, _>("currency")?)?,
                    ),
                    created_ms: r.try_get("created_ms")?,
                    txn_id: r.try_get("txn_id")?,
                })
            })
            .collect()
    }

    /// A rider's trips whose payment failed (to retry after a top-up): fares (PAYMENT_FAILED) and
    /// cancellation fees not charged yet.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn failed_payments(&self, rider: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT trip_id FROM trips t WHERE rider_id = $1 AND (status = 'PAYMENT_FAILED' OR \
             (status = 'CANCELLED' AND EXISTS (SELECT 1 FROM trip_events e WHERE e.trip_id = t.trip_id \
             AND e.type = 'payment.fee_failed') AND NOT EXISTS \
             (SELECT 1 FROM payments p WHERE p.trip_id = t.trip_id))) ORDER BY trip_id",
        )
        .bind(rider.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("trip_id")?;
                Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The ledger's total per currency (zero when every transaction balances).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn ledger_totals(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT currency, CAST(SUM(amount) AS BIGINT) AS total FROM ledger GROUP BY currency",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("currency")?, r.try_get("total")?)))
            .collect()
    }
}
