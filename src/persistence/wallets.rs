//! Money in the store: wallets, the double-entry ledger, charges and top-ups. Each operation is
//! one transaction; a charge is idempotent by trip id (`payments` primary key) and a top-up by its
//! reference (`topups` primary key), so redelivered messages and retried requests move money once.

use sqlx::Row;
use uuid::Uuid;

use super::store::{Store, StoreError};
use crate::dispatch::ledger::{Posting, rider_account, top_up, trip_charge};
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

/// A charge as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRow {
    /// The fare charged.
    pub amount: Money,
    /// The platform's part.
    pub commission: i64,
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
    /// When, epoch ms.
    pub created_ms: i64,
}

/// One earning of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earning {
    /// The trip.
    pub trip_id: Uuid,
    /// What the driver earned.
    pub amount: Money,
    /// When, epoch ms.
    pub created_ms: i64,
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

async fn balance_in(tx: &mut Tx<'_>, account: &str) -> Result<Option<(i64, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT balance, currency FROM wallets WHERE owner_id = $1")
        .bind(account)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| Ok((r.try_get("balance")?, r.try_get("currency")?)))
        .transpose()
}

impl Store {
    /// Charges a completed trip's fare: rider debit, driver credit less commission, platform
    /// commission. Once per trip, whatever the number of calls.
    ///
    /// # Errors
    ///
    /// The database's error (nothing moved then).
    pub async fn charge_trip(
        &self,
        trip_id: Uuid,
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
            "INSERT INTO payments (trip_id, rider_id, driver_id, amount, commission, currency, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (trip_id) DO NOTHING",
        )
        .bind(trip_id.to_string())
        .bind(rider.to_string())
        .bind(driver.to_string())
        .bind(fare.amount)
        .bind(postings[2].amount)
        .bind(fare.currency.as_str().to_owned())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Ok(ChargeOutcome::AlreadyCharged);
        }
        post(
            &mut tx,
            &format!("trip:{trip_id}"),
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
        let row = sqlx::query(
            "SELECT amount, commission, currency, created_ms FROM payments WHERE trip_id = $1",
        )
        .bind(trip_id.to_string())
        .fetch_optional(&self.pool)
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
            })),
        }
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
            "SELECT id, amount, currency, trip_id, reference, created_ms FROM ledger \
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
            "SELECT trip_id, amount, currency, created_ms FROM ledger WHERE account = $1 \
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
                })
            })
            .collect()
    }

    /// A rider's trips whose payment failed (to retry after a top-up).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn failed_payments(&self, rider: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT trip_id FROM trips WHERE rider_id = $1 AND status = 'PAYMENT_FAILED' ORDER BY trip_id",
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
