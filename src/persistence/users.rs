//! Users and refresh tokens in the store.

use sqlx::Row;
use uuid::Uuid;

use super::store::{Store, StoreError};
use crate::dispatch::Role;

/// A user as login needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user.
    pub user_id: Uuid,
    /// Its role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// A driver's vehicle type.
    pub vehicle_type: Option<String>,
}

/// A new user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The user.
    pub user_id: Uuid,
    /// Its role.
    pub role: Role,
    /// Display name.
    pub name: String,
    /// Login, lower case.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Phone number.
    pub phone: Option<String>,
    /// A driver's vehicle: type and plate.
    pub vehicle: Option<(String, Option<String>)>,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid: now used up. The user and family to issue the next token in.
    Fresh {
        /// The user.
        user_id: Uuid,
        /// Its family.
        family_id: String,
    },
    /// Used or revoked before: the family is now revoked.
    Reused,
    /// Unknown or expired.
    Invalid,
}

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    /// The e-mail is registered already.
    #[error("this e-mail is registered already")]
    EmailTaken,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn role_of(raw: &str) -> Result<Role, StoreError> {
    match raw {
        "rider" => Ok(Role::Rider),
        "driver" => Ok(Role::Driver),
        "operator" => Ok(Role::Operator),
        other => Err(StoreError::Corrupt(format!("unknown role {other}"))),
    }
}

impl Store {
    /// Creates a user (and, for a driver, its vehicle).
    ///
    /// # Errors
    ///
    /// [`CreateUserError::EmailTaken`] for a registered e-mail.
    pub async fn create_user(&self, user: &NewUser, now: i64) -> Result<(), CreateUserError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let inserted = sqlx::query(
            "INSERT INTO users (user_id, role, name, email, password_hash, phone, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user.user_id.to_string())
        .bind(user.role.as_str())
        .bind(&user.name)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.phone.clone())
        .bind(now)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            let taken = e
                .as_database_error()
                .is_some_and(|d| d.is_unique_violation());
            return Err(if taken {
                CreateUserError::EmailTaken
            } else {
                CreateUserError::Store(e.into())
            });
        }
        if let Some((vehicle_type, plate)) = &user.vehicle {
            sqlx::query(
                "INSERT INTO drivers (driver_id, vehicle_type, status, created_ms, updated_ms) \
                 VALUES ($1, $2, 'offline', $3, $3) ON CONFLICT (driver_id) DO NOTHING",
            )
            .bind(user.user_id.to_string())
            .bind(vehicle_type)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            sqlx::query(
                "INSERT INTO vehicles (driver_id, vehicle_type, plate) VALUES ($1, $2, $3)",
            )
            .bind(user.user_id.to_string())
            .bind(vehicle_type)
            .bind(plate.clone())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// The user with this (lower-case) e-mail.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(
            "SELECT u.user_id, u.role, u.password_hash, v.vehicle_type FROM users u \
             LEFT JOIN vehicles v ON v.driver_id = u.user_id WHERE u.email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let id: String = r.try_get("user_id")?;
        Ok(Some(UserRow {
            user_id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            role: role_of(&r.try_get::<String, _>("role")?)?,
            password_hash: r.try_get("password_hash")?,
            vehicle_type: r.try_get("vehicle_type")?,
        }))
    }

    /// A user's role and a driver's vehicle type.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn user(&self, user_id: Uuid) -> Result<Option<(Role, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT u.role, v.vehicle_type FROM users u \
             LEFT JOIN vehicles v ON v.driver_id = u.user_id WHERE u.user_id = $1",
        )
        .bind(user_id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                role_of(&r.try_get::<String, _>("role")?)?,
                r.try_get("vehicle_type")?,
            ))
        })
        .transpose()
    }

    /// Stores a refresh token's hash.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn add_refresh_token(
        &self,
        token_hash: &str,
        family_id: &str,
        user_id: Uuid,
        now: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(user_id.to_string())
        .bind(now)
        .bind(expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revokes the whole family of a refresh token (logout): every token of that login is dead
    /// from now on. False if the token is unknown.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let Some(row) = sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(false);
        };
        let family_id: String = row.try_get("family_id")?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_ms = $1 WHERE family_id = $2 AND revoked_ms IS NULL",
        )
        .bind(now)
        .bind(&family_id)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// Uses a refresh token up. A token used (or revoked) before revokes its whole family.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn use_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<RefreshUse, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT family_id, user_id, expires_ms, used_ms, revoked_ms FROM refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let family_id: String = r.try_get("family_id")?;
        let used: Option<i64> = r.try_get("used_ms")?;
        let revoked: Option<i64> = r.try_get("revoked_ms")?;
        if used.is_some() || revoked.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_ms = $1 WHERE family_id = $2 AND revoked_ms IS NULL",
            )
            .bind(now)
            .bind(&family_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshUse::Reused);
        }
        if r.try_get::<i64, _>("expires_ms")? <= now {
            return Ok(RefreshUse::Invalid);
        }
        let taken = sqlx::query(
            "UPDATE refresh_tokens SET used_ms = $1 WHERE token_hash = $2 AND used_ms IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Ok(RefreshUse::Reused);
        }
        tx.commit().await?;
        let user: String = r.try_get("user_id")?;
        Ok(RefreshUse::Fresh {
            user_id: Uuid::parse_str(&user).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            family_id,
        })
    }

    /// Creates driver profiles in bulk (benchmarks): no password, a vehicle type each.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn create_drivers(
        &self,
        drivers: &[(Uuid, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        for chunk in drivers.chunks(1_000) {
            let mut tx = self.pool.begin().await?;
            for (id, vehicle_type) in chunk {
                sqlx::query(
                    "INSERT INTO drivers (driver_id, vehicle_type, status, created_ms, updated_ms) \
                     VALUES ($1, $2, 'offline', $3, $3) ON CONFLICT (driver_id) DO NOTHING",
                )
                .bind(id.to_string())
                .bind(vehicle_type)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}
