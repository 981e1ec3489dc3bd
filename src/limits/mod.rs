//! The two limits of §6: the request-rate limit (a leaky bucket per client IP and credential,
//! P8) and the operating-time limit (handler seconds per credential and method, P9).
//!
//! Both are in-memory. Like Bitrix24's, they forget their state when the server restarts.

pub mod operating;
pub mod rate;

use crate::clock::Clock;
use crate::config::Limits as LimitsConfig;

pub use self::operating::OperatingLimiter;
pub use self::rate::{RateLimiter, RateOverride};

/// The limiters a server runs with; `None` where the configuration switched one off.
pub struct Limiters {
    pub rate: Option<RateLimiter>,
    pub operating: Option<OperatingLimiter>,
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
        }
    }

    pub fn disabled() -> Limiters {
        Limiters {
            rate: None,
            operating: None,
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
    }
}
