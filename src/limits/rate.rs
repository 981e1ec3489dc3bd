//! The request-rate limit (§6.1, P8).
//!
//! Bitrix24 describes a leaky bucket: each request adds one, the bucket drains at a fixed rate,
//! and a request that finds it full is refused. GCRA (governor) is the same algorithm stated as
//! a theoretical arrival time, with O(1) state per key and no background drain task.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::Quota;

/// Who a bucket belongs to: the client address and a fingerprint of the credential exactly as
/// presented, so that wrong and missing credentials are limited too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub ip: IpAddr,
    pub credential: [u8; 16],
}

/// A webhook's (or app's) own values; `None` takes the server's.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateOverride {
    /// 0 switches the rate limit off for this credential.
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
}

type Keyed<C> = governor::RateLimiter<
    RateKey,
    DashMapStateStore<RateKey>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Governor's quota, identified by its exact parameters so equal overrides share one limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct QuotaId {
    period_nanos: u64,
    burst: u32,
}

impl QuotaId {
    /// `None` means unlimited.
    fn new(per_second: f64, burst: u32) -> Option<QuotaId> {
        if !(per_second > 0.0 && per_second.is_finite()) || burst == 0 {
            return None;
        }
        let period_nanos = (1e9 / per_second).round().max(1.0) as u64;
        Some(QuotaId {
            period_nanos,
            burst,
        })
    }

    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(Duration::from_nanos(self.period_nanos))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

pub struct RateLimiter<C: Clock + Clone = crate::clock::Clock> {
    per_second: f64,
    burst: u32,
    default: Option<(QuotaId, Arc<Keyed<C>>)>,
    /// One keyed limiter per distinct override; there are as many as operators configured.
    overrides: Mutex<HashMap<QuotaId, Arc<Keyed<C>>>>,
    clock: C,
}

impl<C: Clock + Clone> RateLimiter<C> {
    pub fn with_clock(per_second: f64, burst: u32, clock: C) -> RateLimiter<C> {
        let default = QuotaId::new(per_second, burst).map(|id| {
            let keyed = Keyed::<C>::dashmap_with_clock(id.quota(), clock.clone());
            (id, Arc::new(keyed))
        });
        RateLimiter {
            per_second,
            burst,
            default,
            overrides: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// Counts one request against `key`'s bucket; `false` means QUERY_LIMIT_EXCEEDED.
    /// Whether one more request of `key` fits. The address is counted by
    /// [`address_key`](super::abuse::address_key) (an IPv6 client by its /64).
    pub fn check(&self, key: &RateKey, over: RateOverride) -> bool {
        let key = RateKey {
            ip: super::abuse::address_key(key.ip),
            ..*key
        };
        match self.limiter_for(over) {
            Some(l) => l.check_key(&key).is_ok(),
            None => true,
        }
    }

    /// The quota `over` resolves to, as (interval between requests in nanoseconds, burst);
    /// `None` when the credential is not limited. The shared limiter (`limits::shared`) keys
    /// and steps its buckets with exactly these values.
    pub fn quota_for(&self, over: RateOverride) -> Option<(u64, u32)> {
        let id = QuotaId::new(
            over.per_second.unwrap_or(self.per_second),
            over.burst.unwrap_or(self.burst),
        )?;
        Some((id.period_nanos, id.burst))
    }

    fn limiter_for(&self, over: RateOverride) -> Option<Arc<Keyed<C>>> {
        let id = QuotaId::new(
            over.per_second.unwrap_or(self.per_second),
            over.burst.unwrap_or(self.burst),
        )?;
        if let Some((default_id, l)) = &self.default {
            if *default_id == id {
                return Some(l.clone());
            }
        }
        let mut map = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        let l = map.entry(id).or_insert_with(|| {
            Arc::new(Keyed::<C>::dashmap_with_clock(
                id.quota(),
                self.clock.clone(),
            ))
        });
        Some(l.clone())
    }

    /// Forgets buckets that have drained completely: they are indistinguishable from new ones.
    pub fn sweep(&self) {
        if let Some((_, l)) = &self.default {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let map = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        for l in map.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Buckets currently held, for tests and diagnostics.
    pub fn tracked_keys(&self) -> usize {
        let map = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        self.default.as_ref().map_or(0, |(_, l)| l.len())
            + map.values().map(|l| l.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn key(n: u8) -> RateKey {
        RateKey {
            ip: IpAddr::from([127, 0, 0, 1]),
            credential: [n; 16],
        }
    }

    #[test]
    fn burst_then_drain_at_the_rate() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(2.0, 50, clock.clone());
        let ok = (0..80)
            .filter(|_| r.check(&key(1), RateOverride::default()))
            .count();
        assert_eq!(ok, 50);
        // Another credential from the same address has its own bucket.
        assert!(r.check(&key(2), RateOverride::default()));
        clock.advance(Duration::from_millis(499));
        assert!(!r.check(&key(1), RateOverride::default()));
        clock.advance(Duration::from_millis(1));
        assert!(r.check(&key(1), RateOverride::default()));
        assert!(!r.check(&key(1), RateOverride::default()));
        clock.advance(Duration::from_secs(1));
        assert!(r.check(&key(1), RateOverride::default()));
        assert!(r.check(&key(1), RateOverride::default()));
        assert!(!r.check(&key(1), RateOverride::default()));
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_slash_64() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(1.0, 3, clock);
        let from = |n: u16| RateKey {
            ip: IpAddr::from([0x2001, 0xdb8, 0, 1, n, n, n, n]),
            credential: [1; 16],
        };
        // Each request from a fresh address of one /64 draws on one bucket.
        let ok = (0..10)
            .filter(|n| r.check(&from(*n), RateOverride::default()))
            .count();
        assert_eq!(ok, 3);
        let next_net = RateKey {
            ip: IpAddr::from([0x2001, 0xdb8, 0, 2, 0, 0, 0, 1]),
            credential: [1; 16],
        };
        assert!(r.check(&next_net, RateOverride::default()));
    }

    #[test]
    fn overrides_and_unlimited() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(2.0, 50, clock.clone());
        let small = RateOverride {
            per_second: None,
            burst: Some(3),
        };
        let ok = (0..10).filter(|_| r.check(&key(1), small)).count();
        assert_eq!(ok, 3);
        let off = RateOverride {
            per_second: Some(0.0),
            burst: None,
        };
        assert!((0..1000).all(|_| r.check(&key(3), off)));
    }

    #[test]
    fn sweep_forgets_drained_buckets() {
        let clock = FakeRelativeClock::default();
        let r = RateLimiter::with_clock(2.0, 50, clock.clone());
        for n in 0..100 {
            r.check(&key(n), RateOverride::default());
        }
        assert_eq!(r.tracked_keys(), 100);
        r.sweep();
        assert_eq!(r.tracked_keys(), 100, "recent buckets are kept");
        clock.advance(Duration::from_secs(30));
        r.sweep();
        assert_eq!(r.tracked_keys(), 0);
    }
}
