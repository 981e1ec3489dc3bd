//! The two limits of §6: the request-rate limit (a leaky bucket per client IP and credential,
//! P8) and the operating-time limit (handler seconds per credential and method, P9).
//!
//! Both are in-memory on one instance. Like Bitrix24's, they forget their state when the
//! server restarts. Instances that share a database share these two limits through
//! [`shared::SharedBuckets`] (issue 14).

pub mod abuse;
pub mod operating;
pub mod rate;
pub mod shared;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Limits as LimitsConfig;

pub use self::abuse::{address_key, Backoff, IpGate};

pub use self::operating::{OperatingLimiter, Usage};
pub use self::rate::{RateKey, RateLimiter, RateOverride};
pub use self::shared::{Shared, SharedBuckets};

/// The limiters a server runs with; `None` where the configuration switched one off.
pub struct Limiters {
    pub rate: Option<RateLimiter>,
    pub operating: Option<OperatingLimiter>,
    /// Per client IP, before the body (issue 10); on with the rate limit.
    pub ip_gate: Option<IpGate>,
    /// Read for the abuse limits' times (`Clock::monotonic`).
    pub clock: Clock,
    /// Always on: login throttling and the password-hash bound are not Bitrix24 limits that
    /// `--no-limits` (for tests and benchmarks) should switch off.
    pub login: LoginLimits,
    /// The cluster's buckets when the store is shared by several instances; the rate and
    /// operating limits then go through it, with `rate` and `operating` as the fallback.
    pub shared: Option<Shared>,
}

/// Failed logins: a few free per account and per address, then an exponential lock-out.
pub const LOGIN_FREE_PER_ACCOUNT: u32 = 5;
pub const LOGIN_FREE_PER_IP: u32 = 20;
pub const LOGIN_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const LOGIN_BACKOFF_CEILING: Duration = Duration::from_secs(15 * 60);

pub struct LoginLimits {
    /// Keyed by a digest of the login as typed, lower-cased, so that unknown logins are
    /// throttled exactly like known ones and the table holds no login names.
    pub account: Backoff<[u8; 16]>,
    pub ip: Backoff<IpAddr>,
    /// Places for password checks running at once: one per thread of `pool`.
    pub hashing: Arc<tokio::sync::Semaphore>,
    /// The threads that run password checks. A fixed set rather than tokio's blocking pool, so
    /// the 19 MiB each check allocates is reused by the same few threads (and malloc arenas)
    /// instead of being left behind in whichever of up to 512 threads ran it.
    pub pool: HashPool,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// A fixed set of threads that run jobs from one queue.
pub struct HashPool {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<HashJob>>,
}

impl HashPool {
    pub fn new(threads: usize) -> HashPool {
        let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a password thread failed");
            }
        }
        HashPool {
            jobs: std::sync::Mutex::new(tx),
        }
    }

    /// Runs `f` on a pool thread and waits for it; `None` if the pool is gone.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: HashJob = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.lock().ok()?.send(job).ok()?;
        rx.await.ok()
    }
}

impl LoginLimits {
    pub fn new(concurrency: usize) -> LoginLimits {
        LoginLimits {
            account: Backoff::new(
                LOGIN_FREE_PER_ACCOUNT,
                LOGIN_BACKOFF_BASE,
                LOGIN_BACKOFF_CEILING,
            ),
            ip: Backoff::new(LOGIN_FREE_PER_IP, LOGIN_BACKOFF_BASE, LOGIN_BACKOFF_CEILING),
            hashing: Arc::new(tokio::sync::Semaphore::new(concurrency.max(1))),
            pool: HashPool::new(concurrency),
        }
    }
}

impl Limiters {
    /// The rate limiter reads `clock`, so advancing it drains the buckets.
    pub fn from_config(c: &LimitsConfig, clock: &Clock) -> Limiters {
        Limiters {
            rate: c
                .rate
                .enabled
                .then(|| RateLimiter::with_clock(c.rate.per_second, c.rate.burst, clock.clone())),
            operating: c.operating.enabled.then(|| {
                OperatingLimiter::new(c.operating.limit_seconds, c.operating.min_counted_seconds)
            }),
            ip_gate: c.rate.enabled.then(|| {
                IpGate::new(
                    c.max_in_flight_per_ip,
                    c.failed_auth_per_second,
                    c.failed_auth_burst,
                )
            }),
            login: LoginLimits::new(c.password_hash_concurrency),
            clock: clock.clone(),
            shared: None,
        }
    }

    pub fn disabled() -> Limiters {
        Limiters {
            rate: None,
            operating: None,
            ip_gate: None,
            login: LoginLimits::new(4),
            clock: Clock::system(),
            shared: None,
        }
    }

    /// Makes the rate and operating limits cluster-wide through `backend` (issue 14).
    pub fn share(&mut self, backend: Arc<dyn SharedBuckets>) {
        self.shared = Some(Shared::new(backend));
    }

    /// Counts one request against `key`'s bucket (P8); `false` means QUERY_LIMIT_EXCEEDED.
    /// With a shared store, one atomic statement for the whole cluster; if the store fails,
    /// this instance's own bucket decides.
    pub async fn check_rate(&self, key: &RateKey, over: RateOverride) -> bool {
        let Some(local) = &self.rate else {
            return true;
        };
        let (Some(shared), Some((interval, burst))) = (&self.shared, local.quota_for(over)) else {
            return local.check(key, over);
        };
        let now = (self.clock.now() * 1e9) as i64;
        let interval = i64::try_from(interval).unwrap_or(i64::MAX);
        let tolerance = interval.saturating_mul(i64::from(burst) - 1);
        let bytes = shared::rate_key_bytes(key, interval as u64, burst);
        match shared::bounded(shared.backend.rate_step(&bytes, now, interval, tolerance)).await {
            Ok(allowed) => allowed,
            Err(e) => {
                shared.warn("rate limit", &e, self.clock.monotonic());
                local.check(key, over)
            }
        }
    }

    /// Whether a call of `method` by the operating account `identity` starting at `now` may
    /// run (P9): `Some(used)`, the handler seconds the account has used (0 when it has no
    /// buckets or the limit is switched off), while they are at most the limit; `None` when the
    /// limit refuses the call.
    pub async fn operating_admit(
        &self,
        identity: &str,
        method: &'static str,
        now: f64,
    ) -> Option<f64> {
        match (
            &self.operating,
            self.operating_used(identity, method, now).await,
        ) {
            (Some(local), Some(used)) => (used <= local.limit()).then_some(used),
            _ => Some(0.0),
        }
    }

    /// The handler seconds the operating account `identity` has used on `method` at `now`: the
    /// sum [`Limiters::operating_admit`] compares with the limit (P9). `None` with the limit
    /// switched off, or when this instance alone decides and knows no bucket of the account
    /// (which is then allowed whatever the limit).
    pub async fn operating_used(
        &self,
        identity: &str,
        method: &'static str,
        now: f64,
    ) -> Option<f64> {
        let local = self.operating.as_ref()?;
        let Some(shared) = &self.shared else {
            return local.used(identity, method, now);
        };
        match self.shared_buckets(shared, identity, method).await {
            Some(buckets) => Some(operating::sum_live(&buckets, now)),
            None => local.used(identity, method, now),
        }
    }

    /// Charges a finished call's handler time to the account (if it is counted at all) and
    /// reports the account's usage including it.
    pub async fn operating_record(
        &self,
        identity: &str,
        method: &'static str,
        start: f64,
        elapsed: f64,
        now: f64,
    ) -> Usage {
        let Some(local) = &self.operating else {
            return Usage::UNTRACKED;
        };
        let Some(shared) = &self.shared else {
            return local.record(identity, method, start, elapsed, now);
        };
        if elapsed <= local.min_counted() {
            return match self.shared_buckets(shared, identity, method).await {
                Some(buckets) => operating::usage(&buckets, now),
                None => local.record(identity, method, start, elapsed, now),
            };
        }
        let minute = operating::minute_of(start);
        match shared::bounded(
            shared
                .backend
                .operating_add(identity, method, minute, start, elapsed),
        )
        .await
        {
            Ok(buckets) => {
                let usage = operating::usage(&buckets, now);
                shared.remember(
                    (identity.to_owned(), method),
                    self.clock.monotonic(),
                    buckets,
                );
                usage
            }
            Err(e) => {
                shared.warn("operating limit", &e, self.clock.monotonic());
                local.record(identity, method, start, elapsed, now)
            }
        }
    }

    /// The account's buckets from the cache or the shared store; `None` if the store failed.
    async fn shared_buckets(
        &self,
        shared: &Shared,
        identity: &str,
        method: &'static str,
    ) -> Option<Vec<operating::Bucket>> {
        let account = (identity.to_owned(), method);
        let mono = self.clock.monotonic();
        if let Some(b) = shared.cached(&account, mono) {
            return Some(b);
        }
        match shared::bounded(shared.backend.operating_read(identity, method)).await {
            Ok(buckets) => {
                shared.remember(account, mono, buckets.clone());
                Some(buckets)
            }
            Err(e) => {
                shared.warn("operating limit", &e, mono);
                None
            }
        }
    }

    /// Forgets every operating account, shared ones included (the toolkit's reset).
    pub async fn clear_operating(&self) {
        if let Some(o) = &self.operating {
            o.clear();
        }
        if let Some(shared) = &self.shared {
            shared.clear_cache();
            if let Err(e) = shared::bounded(shared.backend.clear_operating()).await {
                tracing::warn!(error = %e, "clearing the shared operating limit failed");
            }
        }
    }

    /// The failed-login lock-out of the account digest `account` and of the client address
    /// `ip`, the longer of the two (issue 10 §2). With a shared store it holds for the cluster
    /// (issue 14); if the store fails, this instance's own tables decide.
    pub async fn login_locked(&self, account: &[u8; 16], ip: Option<IpAddr>) -> Option<Duration> {
        let ip = ip.map(abuse::address_key);
        let mono = self.clock.monotonic();
        let local = || {
            [
                self.login.account.locked(account, mono),
                ip.and_then(|ip| self.login.ip.locked(&ip, mono)),
            ]
            .into_iter()
            .flatten()
            .max()
        };
        let Some(shared) = &self.shared else {
            return local();
        };
        let mut keys = vec![shared::login_key(Some(account), None)];
        keys.extend(ip.map(|ip| shared::login_key(None, Some(ip))));
        let now = (self.clock.now() * 1e9) as i64;
        match shared::bounded(shared.backend.login_locked(&keys, now)).await {
            Ok(wait) => wait.map(|n| Duration::from_nanos(n.max(0) as u64)),
            Err(e) => {
                shared.warn("login back-off", &e, mono);
                local()
            }
        }
    }

    /// Records a failed login for the account digest and the address. The instance's own
    /// tables always count it too: they decide when the shared store fails.
    pub async fn login_failed(&self, account: [u8; 16], ip: Option<IpAddr>) {
        let ip = ip.map(abuse::address_key);
        let mono = self.clock.monotonic();
        self.login.account.failed(account, mono);
        if let Some(ip) = ip {
            self.login.ip.failed(ip, mono);
        }
        let Some(shared) = &self.shared else {
            return;
        };
        let now = (self.clock.now() * 1e9) as i64;
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let rule = |free| shared::LoginRule {
            free,
            base: nanos(LOGIN_BACKOFF_BASE),
            ceiling: nanos(LOGIN_BACKOFF_CEILING),
        };
        let account_key = shared::login_key(Some(&account), None);
        let mut writes = vec![(account_key, rule(LOGIN_FREE_PER_ACCOUNT))];
        writes.extend(ip.map(|ip| (shared::login_key(None, Some(ip)), rule(LOGIN_FREE_PER_IP))));
        for (key, rule) in writes {
            if let Err(e) = shared::bounded(shared.backend.login_failed(&key, now, rule)).await {
                shared.warn("login back-off", &e, mono);
            }
        }
    }

    /// A successful login clears the account's failures, here and in the shared store.
    pub async fn login_succeeded(&self, account: &[u8; 16]) {
        self.login.account.succeeded(account);
        let Some(shared) = &self.shared else {
            return;
        };
        let key = shared::login_key(Some(account), None);
        if let Err(e) = shared::bounded(shared.backend.login_succeeded(&key)).await {
            shared.warn("login back-off", &e, self.clock.monotonic());
        }
    }

    /// Deletes drained rate buckets and expired operating buckets from the shared store; each
    /// instance runs it from its sweeper, which is harmless (a DELETE of nothing).
    pub async fn sweep_shared(&self, now: f64) {
        let Some(shared) = &self.shared else {
            return;
        };
        shared.sweep_cache(self.clock.monotonic());
        let expired_before = now - operating::BUCKET_TTL;
        if let Err(e) = shared
            .backend
            .sweep((now * 1e9) as i64, expired_before)
            .await
        {
            tracing::warn!(error = %e, "sweeping the shared limits failed");
        }
    }

    /// Drops state that no longer affects any answer, so memory stays bounded by recent traffic
    /// rather than by every client ever seen.
    pub fn sweep(&self, now: f64) {
        if let Some(r) = &self.rate {
            r.sweep();
        }
        if let Some(o) = &self.operating {
            o.sweep(now);
        }
        let instant = self.clock.monotonic();
        if let Some(g) = &self.ip_gate {
            g.sweep(instant);
        }
        self.login.account.sweep(instant);
        self.login.ip.sweep(instant);
    }
}
