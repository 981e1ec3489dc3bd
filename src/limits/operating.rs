//! The operating-time limit (§6.2, P9), modelled on Bitrix24's load limiter: per (credential,
//! method), ten one-minute buckets of handler seconds. A bucket is indexed by the minute of the
//! call's start and lives 600 s from the first call that created it. Only calls whose handler
//! took longer than `min_counted` are counted. A call is refused when the live buckets add up to
//! strictly more than the limit; the call that crosses the limit itself still completes.
//!
//! Every function takes the time as an argument, so tests drive the clock.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buckets are one minute wide and ten of them make the window.
const BUCKET_SECONDS: f64 = 60.0;
const WINDOW_BUCKETS: i64 = 10;
/// A bucket expires this long after the call that created it.
pub const BUCKET_TTL: f64 = 600.0;

/// One minute of an account: handler seconds of calls that started in `minute` (Unix minutes),
/// alive until `created + 600`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub minute: i64,
    /// Unix seconds of the call that created the bucket.
    pub created: f64,
    pub seconds: f64,
}

impl Bucket {
    pub fn live(&self, now: f64) -> bool {
        let current = minute_of(now);
        self.minute > current - WINDOW_BUCKETS && now < self.created + BUCKET_TTL
    }
}

/// The bucket index of a Unix time in seconds.
pub fn minute_of(t: f64) -> i64 {
    (t / BUCKET_SECONDS).floor() as i64
}

/// What the `time` block reports for one (credential, method).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Handler seconds in the live buckets.
    pub operating: f64,
    /// When the oldest live bucket expires. `None` when there is none: the answer then shows
    /// its own start + 600, and a direct call's start is the request's, not the handler's.
    pub reset_at: Option<i64>,
}

impl Usage {
    /// The answer for calls the limiter does not track (sessions, the batch wrapper, a switched
    /// off limiter) or that left no bucket behind.
    pub const UNTRACKED: Usage = Usage {
        operating: 0.0,
        reset_at: None,
    };

    /// `operating_reset_at` for an answer whose call started at `start`.
    pub fn reset_at_or(&self, start: f64) -> i64 {
        self.reset_at
            .unwrap_or(start.floor() as i64 + BUCKET_TTL as i64)
    }
}

type Key = (String, &'static str);

pub struct OperatingLimiter {
    limit: f64,
    min_counted: f64,
    windows: Mutex<HashMap<Key, Vec<Bucket>>>,
}

impl OperatingLimiter {
    pub fn new(limit: f64, min_counted: f64) -> OperatingLimiter {
        OperatingLimiter {
            limit,
            min_counted,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Bucket>>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds above which an account is refused (P9).
    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// Handler seconds a call must exceed to be counted.
    pub fn min_counted(&self) -> f64 {
        self.min_counted
    }

    /// Whether a call of `method` by `identity` starting at `now` may run.
    pub fn allows(&self, identity: &str, method: &'static str, now: f64) -> bool {
        self.used(identity, method, now)
            .is_none_or(|used| used <= self.limit)
    }

    /// Handler seconds in the live buckets of (`identity`, `method`) at `now`; `None` when the
    /// account has no buckets (it is then allowed whatever the limit).
    pub fn used(&self, identity: &str, method: &'static str, now: f64) -> Option<f64> {
        let windows = self.lock();
        windows
            .get(&(identity.to_owned(), method))
            .map(|buckets| sum_live(buckets, now))
    }

    /// Adds a finished call's handler time, then reports the usage including it.
    pub fn record(
        &self,
        identity: &str,
        method: &'static str,
        start: f64,
        elapsed: f64,
        now: f64,
    ) -> Usage {
        let mut windows = self.lock();
        let key = (identity.to_owned(), method);
        if elapsed > self.min_counted {
            let buckets = windows.entry(key.clone()).or_default();
            buckets.retain(|b| b.live(now));
            let minute = minute_of(start);
            match buckets.iter_mut().find(|b| b.minute == minute) {
                Some(b) => b.seconds += elapsed,
                None => buckets.push(Bucket {
                    minute,
                    created: start,
                    seconds: elapsed,
                }),
            }
        }
        match windows.get(&key) {
            Some(buckets) => usage(buckets, now),
            None => Usage::UNTRACKED,
        }
    }

    /// Removes windows whose buckets have all expired.
    pub fn sweep(&self, now: f64) {
        let mut windows = self.lock();
        windows.retain(|_, buckets| {
            buckets.retain(|b| b.live(now));
            !buckets.is_empty()
        });
        windows.shrink_to_fit();
    }

    pub fn tracked_keys(&self) -> usize {
        self.lock().len()
    }

    /// Forgets every account (the admin reset).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Handler seconds in the live buckets.
pub fn sum_live(buckets: &[Bucket], now: f64) -> f64 {
    buckets
        .iter()
        .filter(|b| b.live(now))
        .map(|b| b.seconds)
        .sum()
}

/// What the `time` block reports for these buckets at `now`.
pub fn usage(buckets: &[Bucket], now: f64) -> Usage {
    let oldest = buckets
        .iter()
        .filter(|b| b.live(now))
        .map(|b| b.created)
        .min_by(f64::total_cmp);
    match oldest {
        Some(created) => Usage {
            operating: sum_live(buckets, now),
            reset_at: Some(created.floor() as i64 + BUCKET_TTL as i64),
        },
        None => Usage::UNTRACKED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: f64 = 1_800_000_000.0; // a minute boundary

    #[test]
    fn fast_calls_are_not_counted() {
        let l = OperatingLimiter::new(480.0, 0.1);
        let u = l.record("apauth:1", "m", T0 + 5.5, 0.1, T0 + 5.6);
        assert_eq!(u, Usage::UNTRACKED);
        assert_eq!(u.reset_at_or(T0 + 5.5), T0 as i64 + 605);
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn strictly_greater_blocks_and_the_crossing_call_completes() {
        let l = OperatingLimiter::new(10.0, 0.1);
        assert!(l.allows("a", "m", T0));
        let u = l.record("a", "m", T0, 6.0, T0 + 6.0);
        assert_eq!(u.operating, 6.0);
        assert_eq!(u.reset_at, Some(T0 as i64 + 600));
        assert!(l.allows("a", "m", T0 + 7.0));
        l.record("a", "m", T0 + 7.0, 4.0, T0 + 11.0);
        // Exactly at the limit: still allowed.
        assert!(l.allows("a", "m", T0 + 12.0));
        let u = l.record("a", "m", T0 + 70.0, 0.5, T0 + 70.5);
        assert_eq!(u.operating, 10.5);
        assert_eq!(
            u.reset_at,
            Some(T0 as i64 + 600),
            "the oldest bucket decides"
        );
        assert!(!l.allows("a", "m", T0 + 71.0));
        // Other methods and other credentials are separate.
        assert!(l.allows("a", "other", T0 + 71.0));
        assert!(l.allows("b", "m", T0 + 71.0));
        // The first bucket expires 600 s after it was created; the second one remains.
        assert!(!l.allows("a", "m", T0 + 599.9));
        assert!(l.allows("a", "m", T0 + 600.0));
        let u = l.record("a", "m", T0 + 600.0, 0.0, T0 + 600.0);
        assert_eq!(u.operating, 0.5);
        assert_eq!(u.reset_at, Some(T0 as i64 + 670));
    }

    #[test]
    fn sweep_forgets_expired_windows() {
        let l = OperatingLimiter::new(10.0, 0.0);
        l.record("a", "m", T0, 1.0, T0 + 1.0);
        l.record("b", "m", T0 + 300.0, 1.0, T0 + 301.0);
        l.sweep(T0 + 400.0);
        assert_eq!(l.tracked_keys(), 2);
        l.sweep(T0 + 650.0);
        assert_eq!(l.tracked_keys(), 1);
        l.sweep(T0 + 901.0);
        assert_eq!(l.tracked_keys(), 0);
    }
}
