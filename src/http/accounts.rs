//! `/api/auth/*`: registration, login and refresh-token rotation (SPEC §3). Passwords are argon2id
//! hashes, hashed on the blocking pool; refresh tokens are random, stored as SHA-256 hashes, in
//! families: each refresh uses its token up, and a used token presented again revokes its family.
//! Repeated failed logins lock the account (429 with `Retry-After`); each client IP is rate limited.

use std::net::IpAddr;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ApiError;
use super::input::{FieldError, json_body};
use crate::clock::now_ms;
use crate::dispatch::Role;
use crate::dispatch::VehicleType;
use crate::http::AppState;
use crate::http::limits::FAILED_LOGIN_DELAY;
use crate::http::passwords::{refresh_token, token_hash};
use crate::persistence::users::{NewUser, RefreshUse};

/// The client's address (the TCP peer: forwarded-for headers are not trusted).
fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip())
}

/// Applies the per-IP limit on `/api/auth/*`.
fn limit(core: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    core.limits
        .auth_by_ip
        .check(&client_ip(req))
        .map_err(|wait| {
            ApiError::too_many(
                "rate_limited",
                format!("too many requests; retry in {wait} s"),
                wait,
            )
        })
}

/// A driver's vehicle.
#[derive(Deserialize, ToSchema)]
pub(crate) struct VehicleBody {
    /// Vehicle type (one of the tariffs' types).
    #[serde(rename = "type")]
    #[schema(required = true)]
    kind: Option<String>,
    /// Plate.
    plate: Option<String>,
}

/// `POST /api/auth/register`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RegisterBody {
    /// `rider` or `driver`.
    #[schema(required = true, pattern = "^(rider|driver)$")]
    role: Option<String>,
    /// Display name.
    #[schema(required = true)]
    name: Option<String>,
    /// Login e-mail.
    #[schema(required = true)]
    email: Option<String>,
    /// At least 8 characters.
    #[schema(required = true)]
    password: Option<String>,
    /// Phone number.
    phone: Option<String>,
    /// Drivers: their vehicle.
    vehicle: Option<VehicleBody>,
}

/// The answer to a registration.
#[derive(Serialize, ToSchema)]
pub(crate) struct Registered {
    /// The new user's id.
    id: Uuid,
    /// Its role.
    role: Role,
}

/// An access token and a refresh token.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenPair {
    /// JWT for `Authorization: Bearer`.
    access_token: String,
    /// Single-use token for `POST /api/auth/refresh`.
    refresh_token: String,
    /// `Bearer`.
    token_type: &'static str,
    /// Seconds the access token lives.
    expires_in: u64,
}

fn text(value: Option<String>, field: &str, min: usize, max: usize) -> Result<String, FieldError> {
    let value = value.ok_or_else(|| FieldError::missing(field))?;
    let n = value.chars().count();
    if n < min || n > max {
        return Err(FieldError::invalid(
            field,
            format_args!("{min}–{max} characters"),
        ));
    }
    Ok(value)
}

fn email(value: Option<String>) -> Result<String, FieldError> {
    let value = text(value, "email", 3, 254)?.trim().to_ascii_lowercase();
    let valid = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !value.chars().any(char::is_whitespace);
    if valid {
        Ok(value)
    } else {
        Err(FieldError::invalid("email", "an e-mail address"))
    }
}

/// `POST /api/auth/register` `{role: "rider"|"driver", name, email, password, phone?, vehicle?:
/// {type, plate}}` → 201 `{id, role}`. Operators are created with `hexdispatch create-operator`.
pub async fn register(
    req: HttpRequest,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    limit(&core, &req)?;
    let body: RegisterBody = json_body(&req, payload).await?;
    let role = match body.role.as_deref() {
        Some("rider") => Role::Rider,
        Some("driver") => Role::Driver,
        Some(other) => {
            return Err(FieldError::invalid(
                "role",
                format_args!(
                    "\"rider\" or \"driver\" (operators are not self-registered), got {other:?}"
                ),
            )
            .into());
        }
        None => return Err(FieldError::missing("role").into()),
    };
    let name = text(body.name, "name", 1, 100)?;
    let email = email(body.email)?;
    let password = text(body.password, "password", 8, 128)?;
    let phone = match body.phone {
        None => None,
        Some(p) => Some(text(Some(p), "phone", 4, 32)?),
    };
    let vehicle = match (role, body.vehicle) {
        (Role::Driver, Some(v)) => {
            let kind = match v.kind {
                Some(k) => {
                    VehicleType::parse(&k).map_err(|e| FieldError::invalid("vehicle.type", e))?
                }
                None => core.default_vehicle.clone(),
            };
            let plate = match v.plate {
                None => None,
                Some(p) => Some(text(Some(p), "vehicle.plate", 1, 16)?),
            };
            Some((kind.to_string(), plate))
        }
        (Role::Driver, None) => Some((core.default_vehicle.to_string(), None)),
        (_, Some(_)) => {
            return Err(FieldError::invalid("vehicle", "absent for a rider").into());
        }
        (_, None) => None,
    };
    let passwords = core.passwords.clone();
    let password_hash = web::block(move || passwords.hash(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let store = core.persistence().ok_or_else(ApiError::no_store)?.store();
    let user_id = Uuid::now_v7();
    let user = NewUser {
        user_id,
        role,
        name,
        email,
        password_hash,
        phone,
        vehicle,
    };
    store.create_user(&user, now_ms()).await?;
    tracing::info!(%user_id, role = role.as_str(), "user registered");
    Ok(HttpResponse::Created().json(Registered { id: user_id, role }))
}

/// `POST /api/auth/login`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct LoginBody {
    /// Login e-mail.
    #[schema(required = true)]
    email: Option<String>,
    /// Password.
    #[schema(required = true)]
    password: Option<String>,
}

/// Issues an access token and a refresh token in `family`.
async fn token_pair(
    core: &AppState,
    user_id: Uuid,
    role: Role,
    vehicle_type: Option<String>,
    family: &str,
) -> Result<TokenPair, ApiError> {
    let ttl = core.settings.auth.token_ttl_s;
    let access = core
        .keys
        .issue(user_id, role, vehicle_type, ttl)
        .map_err(ApiError::internal)?;
    let (refresh, hash) = refresh_token();
    let now = now_ms();
    let expires = now.saturating_add(
        i64::try_from(core.settings.auth.refresh_ttl_s.saturating_mul(1_000)).unwrap_or(i64::MAX),
    );
    core.persistence()
        .ok_or_else(ApiError::no_store)?
        .store()
        .add_refresh_token(&hash, family, user_id, now, expires)
        .await?;
    Ok(TokenPair {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: ttl,
    })
}

/// `POST /api/auth/login` `{email, password}` → `{access_token, refresh_token, token_type,
/// expires_in}`; 401 on a wrong e-mail or password (the same answer for both); 429 with
/// `Retry-After` while the account is locked.
pub async fn login(
    req: HttpRequest,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    limit(&core, &req)?;
    let body: LoginBody = json_body(&req, payload).await?;
    let email = email(body.email)?;
    let password = text(body.password, "password", 1, 128)?;
    let now = now_ms();
    let locked = |wait: u64| {
        ApiError::too_many(
            "account_locked",
            format!("too many failed logins; try again in {wait} s"),
            wait,
        )
    };
    if let Some(wait) = core.limits.lockout.locked(&email, now) {
        return Err(locked(wait));
    }
    core.limits
        .logins_by_account
        .check(&email)
        .map_err(|wait| {
            ApiError::too_many(
                "rate_limited",
                format!("too many logins for this account; retry in {wait} s"),
                wait,
            )
        })?;
    let store = core.persistence().ok_or_else(ApiError::no_store)?.store();
    let user = store.user_by_email(&email).await?;
    let verified = match &user {
        Some(u) => {
            let (passwords, phc) = (core.passwords.clone(), u.password_hash.clone());
            web::block(move || passwords.verify(&password, &phc))
                .await
                .map_err(ApiError::internal)?
        }
        None => false,
    };
    let Some(user) = user.filter(|_| verified) else {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        if let Some(wait) = core.limits.lockout.failed(&email, now) {
            tracing::warn!("account locked after repeated failed logins");
            return Err(locked(wait));
        }
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the e-mail or the password is wrong",
        ));
    };
    core.limits.lockout.succeeded(&email);
    let family = Uuid::now_v7().to_string();
    let pair = token_pair(&core, user.user_id, user.role, user.vehicle_type, &family).await?;
    Ok(HttpResponse::Ok().json(pair))
}

/// `POST /api/auth/refresh` and `POST /api/auth/logout`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RefreshBody {
    /// A refresh token from login or an earlier refresh.
    #[schema(required = true)]
    refresh_token: Option<String>,
}

/// The refresh token a `{refresh_token}` body presents (after the auth rate limit), and the
/// store that knows it.
async fn presented_refresh_token<'a>(
    req: &HttpRequest,
    core: &'a AppState,
    payload: web::Payload,
) -> Result<(String, &'a crate::persistence::Store), ApiError> {
    limit(core, req)?;
    let body: RefreshBody = json_body(req, payload).await?;
    let token = text(body.refresh_token, "refresh_token", 1, 256)?;
    let store = core.persistence().ok_or_else(ApiError::no_store)?.store();
    Ok((token, store))
}

/// `POST /api/auth/logout` `{refresh_token}` → 204: every refresh token of that login (its
/// family) is revoked, used or not, so none can be rotated again. Access tokens already issued
/// stay valid until they expire (`auth.token_ttl_s`): they are checked by signature alone. An
/// unknown token is 401 `invalid_token`; logging out twice is 204 twice.
pub async fn logout(
    req: HttpRequest,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (token, store) = presented_refresh_token(&req, &core, payload).await?;
    if store
        .revoke_refresh_family(&token_hash(&token), now_ms())
        .await?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::unauthorized(
            "invalid_token",
            "the refresh token is unknown; nothing to log out",
        ))
    }
}

/// `POST /api/auth/refresh` `{refresh_token}` → a new pair; the presented token is used up. A
/// token presented a second time revokes its whole family (401 `refresh_token_reused`).
pub async fn refresh(
    req: HttpRequest,
    core: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (token, store) = presented_refresh_token(&req, &core, payload).await?;
    match store
        .use_refresh_token(&token_hash(&token), now_ms())
        .await?
    {
        RefreshUse::Fresh { user_id, family_id } => {
            let (role, vehicle_type) = store
                .user(user_id)
                .await?
                .ok_or_else(|| ApiError::unauthorized("invalid_token", "the account is gone"))?;
            let pair = token_pair(&core, user_id, role, vehicle_type, &family_id).await?;
            Ok(HttpResponse::Ok().json(pair))
        }
        RefreshUse::Reused => {
            tracing::warn!("a used refresh token was presented again; its family is revoked");
            Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was used before; every token of its login is now revoked: log in again",
            ))
        }
        RefreshUse::Invalid => Err(ApiError::unauthorized(
            "invalid_token",
            "the refresh token is unknown or expired; log in again",
        )),
    }
}
