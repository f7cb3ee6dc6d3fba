//! Ratings in the store: each side of a trip rates the other once (the `(trip_id, side)` primary
//! key makes a second rating a conflict, on every instance sharing the store).

use sqlx::Row;
use uuid::Uuid;

use super::store::{Store, StoreError};

/// Who gave a rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatingSide {
    /// The trip's rider rated its driver.
    Rider,
    /// The trip's driver rated its rider.
    Driver,
}

impl RatingSide {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rider => "rider",
            Self::Driver => "driver",
        }
    }
}

/// One rating to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRating<'a> {
    /// The trip rated.
    pub trip_id: Uuid,
    /// Who rates.
    pub side: RatingSide,
    /// The rater's id.
    pub rater: Uuid,
    /// The rated party's id.
    pub ratee: Uuid,
    /// 1 to 5.
    pub stars: u8,
    /// Optional words.
    pub comment: Option<&'a str>,
    /// When, epoch ms.
    pub now_ms: i64,
}

/// Someone's ratings summed up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingSummary {
    /// Mean stars, two decimals (0 with no rating).
    pub average: f64,
    /// Ratings received.
    pub count: i64,
}

impl Store {
    /// Stores a rating; `false` when this side of the trip rated it before (nothing changed).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn rate(&self, rating: &NewRating<'_>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO ratings (trip_id, side, rater_id, ratee_id, stars, comment, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (trip_id, side) DO NOTHING",
        )
        .bind(rating.trip_id.to_string())
        .bind(rating.side.as_str())
        .bind(rating.rater.to_string())
        .bind(rating.ratee.to_string())
        .bind(i32::from(rating.stars))
        .bind(rating.comment.map(str::to_owned))
        .bind(rating.now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The ratings `user` received.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn rating_of(&self, user: Uuid) -> Result<RatingSummary, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(SUM(stars), 0) AS BIGINT) AS total \
             FROM ratings WHERE ratee_id = $1",
        )
        .bind(user.to_string())
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get("n")?;
        let total: i64 = row.try_get("total")?;
        #[allow(clippy::cast_precision_loss)]
        let average = if count == 0 {
            0.0
        } else {
            ((total as f64 / count as f64) * 100.0).round() / 100.0
        };
        Ok(RatingSummary { average, count })
    }

    /// The stars each side gave on `trip_id`: (the rider's, the driver's).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn trip_ratings(
        &self,
        trip_id: Uuid,
    ) -> Result<(Option<u8>, Option<u8>), StoreError> {
        let rows = sqlx::query("SELECT side, stars FROM ratings WHERE trip_id = $1")
            .bind(trip_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        let mut out = (None, None);
        for r in rows {
            let side: String = r.try_get("side")?;
            let stars = u8::try_from(r.try_get::<i32, _>("stars")?).ok();
            if side == "rider" {
                out.0 = stars;
            } else {
                out.1 = stars;
            }
        }
        Ok(out)
    }
}
