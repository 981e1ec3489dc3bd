//! The limits of a cluster (issue 14): when several instances share one database, the
//! request-rate limit (P8) and the operating-time limit (P9) must hold for the cluster, not per
//! instance, or three instances would give a webhook three 50-request bursts.
//!
//! `limits` sits below `store`, so it cannot name a database. It states what it needs as
//! [`SharedBuckets`]; a backend that several instances share (PostgreSQL,
//! `store::pg_limits`) implements it, and `app` hands it to [`Limiters::share`] at start.
//! On SQLite (one instance by construction) nothing is shared and the in-memory limiters stay.
//!
//! Costs, per request: the rate limit is one statement (an atomic GCRA step, one round trip).
//! The operating-time limit reads the shared buckets of an account at most once per
//! [`OPERATING_CACHE`] per instance, and writes only for a call that is counted at all (handler
//! time above `min_counted_seconds`, 0.1 s by default): so another instance's charge is seen
//! at most that much later, a few extra calls at most in a window of 480 s.
//!
//! When the shared store fails (the database is down), each limiter falls back to its
//! in-memory twin, so the instance keeps limiting per instance instead of refusing or letting
//! everything through; the failure is logged.
//!
//! [`Limiters::share`]: super::Limiters::share

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::operating::Bucket;
use super::rate::RateKey;

/// The longest a request waits for the shared store before its instance's own limiter
/// decides: a database that does not answer must not hold every request up.
pub const SHARED_TIMEOUT: Duration = Duration::from_secs(2);

/// `f`, or an error after [`SHARED_TIMEOUT`].
pub async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    match tokio::time::timeout(SHARED_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {SHARED_TIMEOUT:?}")),
    }
}

/// How long an instance trusts what it last read of an operating account.
pub const OPERATING_CACHE: Duration = Duration::from_secs(1);

/// Buckets shared by every instance on one database. Errors are messages for the log: the
/// caller falls back to its in-memory limiter.
#[async_trait::async_trait]
pub trait SharedBuckets: Send + Sync + 'static {
    /// One step of GCRA (the leaky bucket of P8) for `key`, atomically across instances. All
    /// times are integer nanoseconds since the Unix epoch: the stored theoretical arrival time
    /// `tat` becomes `max(tat, now) + interval` when `max(tat, now) - now <= tolerance`, and the
    /// request is allowed; otherwise nothing changes and it is refused. A key never seen is an
    /// empty bucket. `tolerance` is `interval * (burst - 1)`, so a burst of 50 allows 50.
    async fn rate_step(
        &self,
        key: &[u8],
        now: i64,
        interval: i64,
        tolerance: i64,
    ) -> Result<bool, String>;

    /// The operating-time buckets of (identity, method), expired ones included (the caller
    /// filters with the same rule as in memory).
    async fn operating_read(&self, identity: &str, method: &str) -> Result<Vec<Bucket>, String>;

    /// Adds `seconds` to the bucket of `minute` (creating it with `created`), then returns all
    /// the account's buckets, the changed one included: one round trip.
    async fn operating_add(
        &self,
        identity: &str,
        method: &str,
        minute: i64,
        created: f64,
        seconds: f64,
    ) -> Result<Vec<Bucket>, String>;

    /// Deletes rate buckets that have drained (`tat < now_nanos`) and operating buckets created
    /// before `expired_before` (Unix seconds). Returns the rows deleted.
    async fn sweep(&self, now_nanos: i64, expired_before: f64) -> Result<u64, String>;

    /// Forgets every operating account (the toolkit's reset).
    async fn clear_operating(&self) -> Result<(), String>;

    /// The longest lock-out among the failed-login `keys` still running at `now`, in
    /// nanoseconds; `None` when none is locked. Times are nanoseconds since the Unix epoch.
    async fn login_locked(&self, keys: &[Vec<u8>], now: i64) -> Result<Option<i64>, String>;

    /// Records one failed login for `key` at `now`, atomically across instances, with the rule
    /// of [`super::Backoff`]: `rule.free` failures cost nothing, the n-th past them locks the
    /// key for `base × 2^(n-1)`, at most `ceiling`; a key untouched for `ceiling` starts over.
    async fn login_failed(&self, key: &[u8], now: i64, rule: LoginRule) -> Result<(), String>;

    /// A successful login clears `key`.
    async fn login_succeeded(&self, key: &[u8]) -> Result<(), String>;
}

/// The failed-login rule of [`SharedBuckets::login_failed`], times in nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct LoginRule {
    pub free: u32,
    pub base: i64,
    pub ceiling: i64,
}

/// The key of a failed-login row in the shared table: `a` and the account digest, or `i` and
/// the client address (16 bytes, IPv4 mapped), so the two kinds cannot collide.
pub fn login_key(account: Option<&[u8; 16]>, ip: Option<IpAddr>) -> Vec<u8> {
    match (account, ip) {
        (Some(a), _) => [b"a".as_slice(), a].concat(),
        (None, Some(ip)) => {
            let v6 = match super::abuse::address_key(ip) {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            [b"i".as_slice(), &v6.octets()].concat()
        }
        (None, None) => Vec::new(),
    }
}

/// The key of a rate bucket in the shared table: the in-memory limiter's key (client IP and
/// credential fingerprint) and the quota, as the in-memory side keeps one limiter per quota.
/// 16 bytes of address ([`address_key`](super::abuse::address_key), IPv4 mapped), 16 of fingerprint, 8 of interval, 4 of burst.
pub fn rate_key_bytes(key: &RateKey, interval_nanos: u64, burst: u32) -> [u8; 44] {
    let ip = match super::abuse::address_key(key.ip) {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut out = [0u8; 44];
    out[..16].copy_from_slice(&ip.octets());
    out[16..32].copy_from_slice(&key.credential);
    out[32..40].copy_from_slice(&interval_nanos.to_be_bytes());
    out[40..].copy_from_slice(&burst.to_be_bytes());
    out
}

type Account = (String, &'static str);

/// At most one log line per this interval about the shared store failing: during an outage
/// every request would otherwise log one.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A [`SharedBuckets`] and this instance's short-lived copy of the operating accounts.
pub struct Shared {
    pub(super) backend: Arc<dyn SharedBuckets>,
    /// When the last failure was logged (monotonic), and how many went unlogged since.
    warned: Mutex<(Option<Duration>, u64)>,
    /// (identity, method) → (when read, on the monotonic clock; the buckets).
    cache: Mutex<HashMap<Account, (Duration, Vec<Bucket>)>>,
}

impl Shared {
    pub fn new(backend: Arc<dyn SharedBuckets>) -> Shared {
        Shared {
            backend,
            warned: Mutex::new((None, 0)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Logs a failure of the shared store, at most once per [`WARN_EVERY`].
    pub(super) fn warn(&self, what: &str, error: &str, mono: Duration) {
        let mut w = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if w.0.is_some_and(|at| mono.saturating_sub(at) < WARN_EVERY) {
            w.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut w.1);
        w.0 = Some(mono);
        drop(w);
        tracing::warn!(
            error,
            suppressed,
            "shared {what} unavailable; the instance's own limiter decides"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Account, (Duration, Vec<Bucket>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cached(&self, account: &Account, mono: Duration) -> Option<Vec<Bucket>> {
        let cache = self.lock();
        let (read_at, buckets) = cache.get(account)?;
        (mono.saturating_sub(*read_at) < OPERATING_CACHE).then(|| buckets.clone())
    }

    pub(super) fn remember(&self, account: Account, mono: Duration, buckets: Vec<Bucket>) {
        self.lock().insert(account, (mono, buckets));
    }

    /// Drops cached accounts older than the cache time.
    pub(super) fn sweep_cache(&self, mono: Duration) {
        let mut cache = self.lock();
        cache.retain(|_, (read_at, _)| mono.saturating_sub(*read_at) < OPERATING_CACHE);
        cache.shrink_to_fit();
    }

    pub(super) fn clear_cache(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::config::Limits as LimitsConfig;
    use crate::limits::{Limiters, RateOverride};

    /// A database that accepted the connection and never answers.
    struct Silent;

    #[async_trait::async_trait]
    impl SharedBuckets for Silent {
        async fn rate_step(&self, _: &[u8], _: i64, _: i64, _: i64) -> Result<bool, String> {
            std::future::pending().await
        }
        async fn operating_read(&self, _: &str, _: &str) -> Result<Vec<Bucket>, String> {
            std::future::pending().await
        }
        async fn operating_add(
            &self,
            _: &str,
            _: &str,
            _: i64,
            _: f64,
            _: f64,
        ) -> Result<Vec<Bucket>, String> {
            std::future::pending().await
        }
        async fn sweep(&self, _: i64, _: f64) -> Result<u64, String> {
            std::future::pending().await
        }
        async fn clear_operating(&self) -> Result<(), String> {
            std::future::pending().await
        }
        async fn login_locked(&self, _: &[Vec<u8>], _: i64) -> Result<Option<i64>, String> {
            std::future::pending().await
        }
        async fn login_failed(&self, _: &[u8], _: i64, _: super::LoginRule) -> Result<(), String> {
            std::future::pending().await
        }
        async fn login_succeeded(&self, _: &[u8]) -> Result<(), String> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_silent_store_does_not_hold_requests_and_the_instance_decides() {
        let mut l = Limiters::from_config(&LimitsConfig::default(), &Clock::manual(1_800_000_000));
        l.share(Arc::new(Silent));
        let key = RateKey {
            ip: IpAddr::from([127, 0, 0, 1]),
            credential: [1; 16],
        };
        let one = RateOverride {
            per_second: None,
            burst: Some(1),
        };
        let started = std::time::Instant::now();
        assert!(l.check_rate(&key, one).await);
        assert!(
            !l.check_rate(&key, one).await,
            "the local bucket of 1 is full"
        );
        assert!(l
            .operating_admit("apauth:1", "m", 1_800_000_000.0)
            .await
            .is_some());
        let waited = started.elapsed();
        assert!(waited < SHARED_TIMEOUT * 4, "{waited:?}");
    }

    #[test]
    fn key_bytes_separate_address_credential_and_quota() {
        let k = RateKey {
            ip: IpAddr::from([127, 0, 0, 1]),
            credential: [7; 16],
        };
        let a = rate_key_bytes(&k, 500_000_000, 50);
        assert_ne!(a, rate_key_bytes(&k, 500_000_000, 49));
        assert_ne!(a, rate_key_bytes(&k, 250_000_000, 50));
        let v6 = RateKey {
            ip: "::ffff:127.0.0.1".parse().unwrap_or(k.ip),
            ..k
        };
        assert_eq!(
            a,
            rate_key_bytes(&v6, 500_000_000, 50),
            "one address, one bucket"
        );
        let net = |last: u16| RateKey {
            ip: IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]),
            ..k
        };
        assert_eq!(
            rate_key_bytes(&net(1), 500_000_000, 50),
            rate_key_bytes(&net(2), 500_000_000, 50),
            "one /64, one bucket"
        );
        let other = RateKey {
            credential: [8; 16],
            ..k
        };
        assert_ne!(a, rate_key_bytes(&other, 500_000_000, 50));
    }
}
