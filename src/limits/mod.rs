//! The two limits of §6: the request-rate limit (a leaky bucket per client IP and credential,
//! P8) and the operating-time limit (handler seconds per credential and method, P9).
//!
//! Both are in-memory. Like Bitrix24's, they forget their state when the server restarts.

pub mod abuse;
pub mod operating;
pub mod rate;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Limits as LimitsConfig;

pub use self::abuse::{Backoff, IpGate};

pub use self::operating::OperatingLimiter;
pub use self::rate::{RateLimiter, RateOverride};

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
        }
    }

    pub fn disabled() -> Limiters {
        Limiters {
            rate: None,
            operating: None,
            ip_gate: None,
            login: LoginLimits::new(4),
            clock: Clock::system(),
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
