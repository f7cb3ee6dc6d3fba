//! The server's state, shared by every worker: the core (the running system the handlers talk to)
//! plus what only the HTTP edge needs — token keys, password hashing, limiters and lockout, and
//! the renderer of `/metrics`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::limits::Limits;
use super::passwords::Passwords;
use super::tokens::JwtKeys;
use crate::actors::Core;
use crate::config::ConfigError;

/// What every handler reaches. Reads through to the [`Core`] it wraps.
pub struct AppState {
    /// The running system.
    pub core: Core,
    /// Token signing and verification keys.
    pub keys: JwtKeys,
    /// Password hashing.
    pub passwords: Passwords,
    /// Rate limiters and login lockout.
    pub limits: Arc<Limits>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// The state for `core`, from its settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for unusable password-hashing parameters.
    pub fn new(core: Core, metrics: PrometheusHandle) -> Result<Self, ConfigError> {
        let settings = &core.settings;
        if settings.auth.uses_dev_secret() {
            tracing::warn!(
                "auth.jwt_secret is the built-in development key: anyone can mint tokens. \
                 Set HEXDISPATCH__AUTH__JWT_SECRET before exposing this engine."
            );
        }
        let passwords = Passwords::new(&settings.auth).map_err(|e| ConfigError::Invalid {
            key: "auth.argon2_memory_kib",
            reason: e.to_string(),
        })?;
        Ok(Self {
            keys: JwtKeys::new(&settings.auth.jwt_secret),
            passwords,
            limits: Limits::new(&settings.limits, &settings.auth),
            metrics,
            core,
        })
    }
}

impl AppState {
    /// Forgets what has outlived its retention: finished trips (`trip.retention_s`), idle
    /// rate-limiter buckets and lockout entries. Returns the number of trips forgotten.
    pub fn prune(&self, now_ms: i64) -> usize {
        self.limits.prune(now_ms);
        self.core.prune_history(now_ms)
    }

    /// How often [`AppState::prune`] should run: a tenth of the retention, between 1 s and 60 s.
    #[must_use]
    pub fn prune_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64((self.settings.trip.retention_s / 10.0).clamp(1.0, 60.0))
    }
}

impl std::ops::Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
