//! Administration from the command line: apply migrations, create an operator account, bulk-create
//! drivers with tokens for benchmarks, and mint a token. Each opens the configured store itself
//! (running migrations first) and returns what the command prints.

use anyhow::Context;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::config::Settings;
use crate::dispatch::{Role, VehicleType};
use crate::http::passwords::Passwords;
use crate::http::tokens::JwtKeys;
use crate::persistence::Store;
use crate::persistence::users::NewUser;

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(settings.database.url.as_deref())
        .await
        .context("could not connect to the database")?;
    store.migrate().await.context("migrations failed")?;
    Ok(store)
}

/// Applies the migrations; returns the backend's name.
///
/// # Errors
///
/// The database cannot be reached or a migration fails.
pub async fn migrate(settings: &Settings) -> anyhow::Result<&'static str> {
    Ok(open_store(settings).await?.backend().as_str())
}

/// Creates an operator account with `password`; returns its id.
///
/// # Errors
///
/// A password outside 8–128 characters, an e-mail without `@`, a store failure (a taken e-mail
/// included).
pub async fn create_operator(
    settings: &Settings,
    email: &str,
    name: String,
    password: &str,
) -> anyhow::Result<Uuid> {
    anyhow::ensure!(
        (8..=128).contains(&password.chars().count()),
        "the password must be 8–128 characters"
    );
    let email = email.trim().to_ascii_lowercase();
    anyhow::ensure!(email.contains('@'), "--email must be an e-mail address");
    let passwords = Passwords::new(&settings.auth).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = passwords
        .hash(password)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = open_store(settings).await?;
    let id = Uuid::now_v7();
    store
        .create_user(
            &NewUser {
                user_id: id,
                role: Role::Operator,
                name,
                email,
                password_hash: hash,
                phone: None,
                vehicle: None,
            },
            now_ms(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(id)
}

/// Creates `count` drivers of `vehicle_type` (the default type when `None`) without passwords and
/// returns one `driver_id,token` line each, tokens living `ttl_s` (default `auth.token_ttl_s`).
///
/// # Errors
///
/// A malformed vehicle type, a token that cannot be signed, a store failure.
pub async fn seed_drivers(
    settings: &Settings,
    count: u32,
    vehicle_type: Option<&str>,
    ttl_s: Option<u64>,
) -> anyhow::Result<String> {
    let vehicle =
        VehicleType::parse(vehicle_type.unwrap_or(&settings.vehicles.default_type))?.to_string();
    let keys = JwtKeys::new(&settings.auth.jwt_secret);
    let ttl = ttl_s.unwrap_or(settings.auth.token_ttl_s);
    let drivers: Vec<(Uuid, String)> = (0..count)
        .map(|_| (Uuid::now_v7(), vehicle.clone()))
        .collect();
    let mut lines = String::with_capacity(drivers.len() * 400);
    for (id, v) in &drivers {
        let token = keys.issue(*id, Role::Driver, Some(v.clone()), ttl)?;
        lines.push_str(&format!("{id},{token}\n"));
    }
    open_store(settings)
        .await?
        .create_drivers(&drivers, now_ms())
        .await
        .context("could not store the drivers")?;
    Ok(lines)
}

/// A signed access token for `sub` as `role`, living `ttl_s` (default `auth.token_ttl_s`).
///
/// # Errors
///
/// A malformed vehicle type, or a token that cannot be signed.
pub fn token(
    settings: &Settings,
    role: Role,
    sub: Uuid,
    vehicle_type: Option<&str>,
    ttl_s: Option<u64>,
) -> anyhow::Result<String> {
    let vehicle_type = vehicle_type
        .map(|v| VehicleType::parse(v).map(|v| v.to_string()))
        .transpose()?;
    let keys = JwtKeys::new(&settings.auth.jwt_secret);
    Ok(keys.issue(
        sub,
        role,
        vehicle_type,
        ttl_s.unwrap_or(settings.auth.token_ttl_s),
    )?)
}
