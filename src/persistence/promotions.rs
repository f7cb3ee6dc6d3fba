//! Promotions in the store (SPEC §7): codes with their window, per-rider limit and whether an
//! operator disabled them, and each rider's uses. A use is taken in one statement that refuses
//! to go past the limit, so riders racing on several instances never exceed it; uses survive
//! restarts.

use sqlx::Row;
use uuid::Uuid;

use super::store::{Store, StoreError};
use crate::dispatch::{Discount, PromoError, Promotion};

/// A promotion as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPromotion {
    /// The code, its worth, window and limit.
    pub promotion: Promotion,
    /// When an operator disabled it, epoch ms.
    pub disabled_ms: Option<i64>,
    /// When it was created, epoch ms (0: seeded from the configuration before this was kept).
    pub created_ms: i64,
    /// Uses by all riders.
    pub uses: i64,
}

fn kind_value(discount: Discount) -> (&'static str, i64) {
    match discount {
        Discount::Percent(p) => ("percent", i64::from(p)),
        Discount::Flat(a) => ("flat", a),
    }
}

fn read(r: &sqlx::any::AnyRow) -> Result<StoredPromotion, StoreError> {
    let kind: String = r.try_get("kind")?;
    let value: i64 = r.try_get("value")?;
    let discount = match kind.as_str() {
        "percent" => {
            Discount::Percent(u8::try_from(value).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        }
        "flat" => Discount::Flat(value),
        other => return Err(StoreError::Corrupt(format!("promotion kind {other}"))),
    };
    Ok(StoredPromotion {
        promotion: Promotion {
            code: r.try_get("code")?,
            discount,
            valid_from_ms: r.try_get("valid_from_ms")?,
            valid_until_ms: r.try_get("valid_until_ms")?,
            per_rider_limit: u32::try_from(r.try_get::<i32, _>("per_rider_limit")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        },
        disabled_ms: r.try_get("disabled_ms")?,
        created_ms: r.try_get("created_ms")?,
        uses: r.try_get("uses")?,
    })
}

const SELECT: &str = "SELECT p.code, p.kind, p.value, p.valid_from_ms, p.valid_until_ms, \
     p.per_rider_limit, p.disabled_ms, p.created_ms, \
     (SELECT CAST(COALESCE(SUM(u.uses), 0) AS BIGINT) FROM promotion_uses u WHERE u.code = p.code) AS uses \
     FROM promotions p";

/// Whether `promo` may be used at `now_ms` (window and disabling; not the rider's uses).
fn usable(promo: &StoredPromotion, now_ms: i64) -> Result<Discount, PromoError> {
    if promo.disabled_ms.is_some() {
        return Err(PromoError::Disabled);
    }
    if now_ms < promo.promotion.valid_from_ms {
        return Err(PromoError::NotYetValid);
    }
    if now_ms >= promo.promotion.valid_until_ms {
        return Err(PromoError::Expired);
    }
    Ok(promo.promotion.discount)
}

impl Store {
    /// Stores `promotion`; `false` when its code exists already (nothing changed).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn create_promotion(
        &self,
        promotion: &Promotion,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (kind, value) = kind_value(promotion.discount);
        let done = sqlx::query(
            "INSERT INTO promotions (code, kind, value, valid_from_ms, valid_until_ms, per_rider_limit, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (code) DO NOTHING",
        )
        .bind(promotion.code.to_ascii_uppercase())
        .bind(kind)
        .bind(value)
        .bind(promotion.valid_from_ms)
        .bind(promotion.valid_until_ms)
        .bind(i32::try_from(promotion.per_rider_limit).unwrap_or(i32::MAX))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every promotion, newest first.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn promotions(&self) -> Result<Vec<StoredPromotion>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY p.created_ms DESC, p.code"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(read).collect()
    }

    /// One promotion.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn promotion(&self, code: &str) -> Result<Option<StoredPromotion>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE p.code = $1"))
            .bind(code.to_ascii_uppercase())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(read).transpose()
    }

    /// Disables `code` (from now on it is refused; its uses stay). `None` when there is no such
    /// code; a code disabled before keeps its first disabling time.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn disable_promotion(
        &self,
        code: &str,
        now_ms: i64,
    ) -> Result<Option<StoredPromotion>, StoreError> {
        sqlx::query(
            "UPDATE promotions SET disabled_ms = $1 WHERE code = $2 AND disabled_ms IS NULL",
        )
        .bind(now_ms)
        .bind(code.to_ascii_uppercase())
        .execute(&self.pool)
        .await?;
        self.promotion(code).await
    }

    /// `code` and what it is worth, if it exists and may be used at `now_ms` (window and
    /// disabling; not a rider's uses).
    async fn usable_promotion(
        &self,
        code: &str,
        now_ms: i64,
    ) -> Result<Result<(StoredPromotion, Discount), PromoError>, StoreError> {
        Ok(match self.promotion(code).await? {
            None => Err(PromoError::Unknown),
            Some(promo) => usable(&promo, now_ms).map(|d| (promo, d)),
        })
    }

    /// Whether `rider` may use `code` at `now_ms`, and what it is worth; nothing is taken.
    ///
    /// # Errors
    ///
    /// The database's error (outer), or why the code cannot be used (inner).
    pub async fn check_promotion(
        &self,
        code: &str,
        rider: Uuid,
        now_ms: i64,
    ) -> Result<Result<Discount, PromoError>, StoreError> {
        let (promo, discount) = match self.usable_promotion(code, now_ms).await? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let used: Option<i32> =
            sqlx::query("SELECT uses FROM promotion_uses WHERE code = $1 AND rider_id = $2")
                .bind(&promo.promotion.code)
                .bind(rider.to_string())
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("uses"))
                .transpose()?;
        if u32::try_from(used.unwrap_or(0)).unwrap_or(0) >= promo.promotion.per_rider_limit {
            return Ok(Err(PromoError::UsedUp));
        }
        Ok(Ok(discount))
    }

    /// Takes one use of `code` for `rider`, unless that would pass the limit.
    ///
    /// # Errors
    ///
    /// The database's error (outer), or why the code cannot be used (inner; nothing taken).
    pub async fn redeem_promotion(
        &self,
        code: &str,
        rider: Uuid,
        now_ms: i64,
    ) -> Result<Result<Discount, PromoError>, StoreError> {
        let (promo, discount) = match self.usable_promotion(code, now_ms).await? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if promo.promotion.per_rider_limit == 0 {
            return Ok(Err(PromoError::UsedUp));
        }
        // One statement: a first use inserts 1; later ones add 1 only below the limit.
        let taken = sqlx::query(
            "INSERT INTO promotion_uses (code, rider_id, uses) VALUES ($1, $2, 1) \
             ON CONFLICT (code, rider_id) DO UPDATE SET uses = promotion_uses.uses + 1 \
             WHERE promotion_uses.uses < $3",
        )
        .bind(&promo.promotion.code)
        .bind(rider.to_string())
        .bind(i32::try_from(promo.promotion.per_rider_limit).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        if taken.rows_affected() == 0 {
            return Ok(Err(PromoError::UsedUp));
        }
        Ok(Ok(discount))
    }

    /// Gives one use of `code` back to `rider` (its trip did not happen).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn release_promotion(&self, code: &str, rider: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE promotion_uses SET uses = uses - 1 WHERE code = $1 AND rider_id = $2 AND uses > 0",
        )
        .bind(code.to_ascii_uppercase())
        .bind(rider.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
