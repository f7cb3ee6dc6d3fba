//! Limits at the edge: account lockout after repeated failed logins, rate limiters keyed by IP
//! address or user, and the per-driver location frame budget.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

use crate::config::{AuthSettings, LimitSettings};

/// Failed logins per account, and locks.
pub struct Lockout {
    max_failures: u32,
    lock_ms: i64,
    accounts: DashMap<String, (u32, i64)>,
}

impl Lockout {
    /// Locks after `max_failures` failures in a row, for `lock_s`.
    #[must_use]
    pub fn new(max_failures: u32, lock_s: u64) -> Self {
        Self {
            max_failures,
            lock_ms: i64::try_from(lock_s.saturating_mul(1_000)).unwrap_or(i64::MAX),
            accounts: DashMap::new(),
        }
    }

    /// Seconds until `account` may try again, if it is locked at `now_ms`.
    #[must_use]
    pub fn locked(&self, account: &str, now_ms: i64) -> Option<u64> {
        self.accounts.get(account).and_then(|entry| {
            let until = entry.1;
            (until > now_ms).then(|| u64::try_from((until - now_ms + 999) / 1_000).unwrap_or(1))
        })
    }

    /// Records a failure; returns the lock's length in seconds if this one locked the account.
    pub fn failed(&self, account: &str, now_ms: i64) -> Option<u64> {
        let mut entry = self.accounts.entry(account.to_owned()).or_insert((0, 0));
        if entry.1 <= now_ms && entry.1 != 0 {
            // The previous lock ran out: count afresh.
            *entry = (0, 0);
        }
        entry.0 += 1;
        if entry.0 >= self.max_failures {
            entry.1 = now_ms.saturating_add(self.lock_ms);
            entry.0 = 0;
            return Some(u64::try_from(self.lock_ms / 1_000).unwrap_or(1).max(1));
        }
        None
    }

    /// A successful login clears the account's failures.
    pub fn succeeded(&self, account: &str) {
        self.accounts.remove(account);
    }
}

/// A per-key limiter (a token bucket per key).
pub struct Limiter<K: std::hash::Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// `per_minute` requests a minute per key, in bursts of up to that many.
    #[must_use]
    pub fn per_minute(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: RateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// `Ok` if `key` may go now, else the seconds to wait.
    ///
    /// # Errors
    ///
    /// The wait, in whole seconds (at least 1).
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.inner.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs().max(1)
        })
    }
}

/// The engine's limiters.
pub struct Limits {
    /// `/api/auth/*` by client IP.
    pub auth_by_ip: Limiter<IpAddr>,
    /// `/api/auth/login` by account (e-mail).
    pub logins_by_account: Limiter<String>,
    /// `POST /api/trips` by rider.
    pub trips_by_rider: Limiter<Uuid>,
    /// `POST /api/trips` by client IP.
    pub trips_by_ip: Limiter<IpAddr>,
    /// Failed logins per account.
    pub lockout: Lockout,
}

impl Limits {
    /// Limiters from settings.
    #[must_use]
    pub fn new(limits: &LimitSettings, auth: &AuthSettings) -> Arc<Self> {
        Arc::new(Self {
            auth_by_ip: Limiter::per_minute(limits.auth_per_ip_per_minute),
            logins_by_account: Limiter::per_minute(limits.logins_per_account_per_minute),
            trips_by_rider: Limiter::per_minute(limits.trips_per_rider_per_minute),
            trips_by_ip: Limiter::per_minute(limits.trips_per_ip_per_minute),
            lockout: Lockout::new(auth.max_login_failures, auth.lockout_s),
        })
    }
}

/// A token bucket for one driver's location frames: `per_s` a second, bursts of `per_s`.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    per_s: f64,
    tokens: f64,
    last: std::time::Instant,
}

impl FrameBudget {
    /// `per_s` frames a second.
    #[must_use]
    pub fn new(per_s: u32) -> Self {
        Self {
            per_s: f64::from(per_s),
            tokens: f64::from(per_s),
            last: std::time::Instant::now(),
        }
    }

    /// Whether one more frame fits now.
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_s;
        self.tokens = (self.tokens + refill).min(self.per_s);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Time a login failure costs before answering, so guessing is slow even below the lockout.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_locks_after_the_limit_and_expires() {
        let l = Lockout::new(3, 60);
        assert_eq!(l.failed("a", 0), None);
        assert_eq!(l.failed("a", 1), None);
        assert_eq!(l.failed("a", 2), Some(60));
        assert_eq!(l.locked("a", 3), Some(60));
        assert_eq!(l.locked("b", 3), None, "accounts are separate");
        assert_eq!(l.locked("a", 60_002), None, "the lock runs out");
        assert_eq!(l.failed("a", 60_003), None, "and counting starts again");
        l.succeeded("a");
        assert_eq!(l.failed("a", 60_004), None);
    }

    #[test]
    fn a_frame_budget_allows_its_rate() {
        let mut b = FrameBudget::new(5);
        let allowed = (0..20).filter(|_| b.take()).count();
        assert_eq!(
            allowed, 5,
            "a burst of the rate, then nothing until it refills"
        );
    }
}
