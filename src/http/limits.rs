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
    /// Failures in a row, locked until (epoch ms, 0: not locked), last failure (epoch ms).
    accounts: DashMap<String, (u32, i64, i64)>,
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
        let mut entry = self
            .accounts
            .entry(account.to_owned())
            .or_insert((0, 0, now_ms));
        if entry.1 <= now_ms && entry.1 != 0 {
            // The previous lock ran out: count afresh.
            *entry = (0, 0, now_ms);
        }
        entry.0 += 1;
        entry.2 = now_ms;
        if entry.0 >= self.max_failures {
            entry.1 = now_ms.saturating_add(self.lock_ms);
            entry.0 = 0;
            return Some(u64::try_from(self.lock_ms / 1_000).unwrap_or(1).max(1));
        }
        None
    }

    /// Forgets accounts with no lock in force and no failure for a lock's length.
    pub fn prune(&self, now_ms: i64) {
        self.accounts
            .retain(|_, e| e.1 > now_ms || e.2.saturating_add(self.lock_ms) > now_ms);
    }

    /// Accounts tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// Whether no account is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
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

    /// Forgets keys whose bucket is full again (they would be allowed a whole burst anyway).
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Keys tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
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

impl Limits {
    /// Sweeps every limiter and the lockout.
    pub fn prune(&self, now_ms: i64) {
        self.auth_by_ip.prune();
        self.logins_by_account.prune();
        self.trips_by_rider.prune();
        self.trips_by_ip.prune();
        self.lockout.prune(now_ms);
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
    fn the_lockout_forgets_quiet_accounts_and_keeps_locked_ones() {
        let l = Lockout::new(2, 60);
        l.failed("quiet", 0);
        l.failed("locked", 0);
        l.failed("locked", 1);
        l.prune(59_000);
        assert_eq!(l.len(), 2, "a failure within a lock's length is remembered");
        l.prune(60_000);
        assert_eq!(l.len(), 1, "a quiet account is forgotten");
        assert_eq!(
            l.locked("locked", 60_000),
            Some(1),
            "the lock stays in force"
        );
        l.prune(61_002);
        assert!(l.is_empty(), "and goes once it ran out");
    }

    #[test]
    fn idle_limiter_buckets_are_swept() {
        let limiter = Limiter::per_minute(600_000);
        for i in 0..100_u32 {
            limiter.check(&i).unwrap();
        }
        assert_eq!(limiter.len(), 100);
        std::thread::sleep(std::time::Duration::from_millis(20));
        limiter.prune();
        assert!(limiter.is_empty(), "{} buckets left", limiter.len());
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
