//! Limits against floods and guessing (issue 10, sections 1 and 2), kept apart from Bitrix24's
//! own request-rate and operating-time limits:
//!
//! - [`IpGate`]: per client IP, checked before a REST body is read. It caps the requests one
//!   address has in flight, and it refuses an address whose failed authentications ran past a
//!   leaky bucket (whatever credentials they presented), so that an unauthenticated flood costs
//!   a header parse per request instead of a body read and a decode.
//! - [`Backoff`]: failed logins per key (account, client IP). A few are free; past them each
//!   further failure doubles the time the key is locked out, up to a ceiling.
//!
//! Times are `Clock::monotonic` readings (a `Duration` since the clock's start), passed in by
//! the caller, so tests can move them. Both are in memory, like the other limiters, and forget idle keys in [`IpGate::sweep`] /
//! [`Backoff::sweep`]. Both are bounded in size: past `MAX_KEYS` entries a new key is refused
//! (the gate) or the table is swept first (the backoff).
//!
//! Every per-address limit keys an address by [`address_key`]: IPv6 by its /64, because one
//! client (a home line, a VM) usually gets a whole /64 and can pick a fresh address for each
//! request; IPv4-mapped IPv6 as the IPv4 address it is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The key under which per-address limits count `ip`: an IPv4 address as is; an IPv6
/// address by its /64 prefix (the low 64 bits zeroed), since a single subscriber is normally
/// given a whole /64 (RFC 6177) and could otherwise rotate past every per-address limit; an
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket) as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !(u128::from(u64::MAX));
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Most client addresses either table tracks at once.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Default)]
struct IpEntry {
    in_flight: usize,
    /// GCRA's theoretical arrival time of the failure bucket; `None` when drained.
    failures_tat: Option<Duration>,
}

/// Why [`IpGate::admit`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address already has `max_in_flight` requests being served.
    InFlight,
    /// The address's failed authentications filled its bucket.
    Failures,
}

/// Per-client-IP limits applied before the body is read. See the module docs.
pub struct IpGate {
    max_in_flight: usize,
    /// Time one failure adds to the bucket (1 / per_second).
    period: Duration,
    /// How much the bucket holds (burst × period).
    capacity: Duration,
    entries: Arc<Mutex<HashMap<IpAddr, IpEntry>>>,
}

/// One admitted request; dropping it frees its in-flight place.
pub struct Ticket {
    ip: IpAddr,
    entries: Arc<Mutex<HashMap<IpAddr, IpEntry>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&self.ip) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

impl IpGate {
    /// `failures_per_second` ≤ 0 or `burst` 0 switches the failure bucket off; `max_in_flight`
    /// 0 switches the in-flight cap off.
    pub fn new(max_in_flight: usize, failures_per_second: f64, burst: u32) -> IpGate {
        let (period, capacity) =
            if failures_per_second > 0.0 && failures_per_second.is_finite() && burst > 0 {
                let period = Duration::from_secs_f64(1.0 / failures_per_second);
                (period, period * burst)
            } else {
                (Duration::ZERO, Duration::ZERO)
            };
        IpGate {
            max_in_flight,
            period,
            capacity,
            entries: Arc::default(),
        }
    }

    /// Admits one request from `ip`, or says why not. O(1), no allocation past the entry.
    pub fn admit(&self, ip: IpAddr, now: Duration) -> Result<Ticket, Refusal> {
        let ip = address_key(ip);
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&ip) {
            // Under a spread-out flood the table does not grow past its bound; known clients
            // carry on.
            return Err(Refusal::InFlight);
        }
        let e = map.entry(ip).or_default();
        if let Some(tat) = e.failures_tat {
            // A full bucket: the next failure would not fit.
            if !self.capacity.is_zero() && tat.saturating_sub(now) + self.period > self.capacity {
                return Err(Refusal::Failures);
            }
        }
        if self.max_in_flight > 0 && e.in_flight >= self.max_in_flight {
            return Err(Refusal::InFlight);
        }
        e.in_flight += 1;
        Ok(Ticket {
            ip,
            entries: self.entries.clone(),
        })
    }

    /// Charges one failed authentication to `ip`.
    pub fn failed(&self, ip: IpAddr, now: Duration) {
        if self.capacity.is_zero() {
            return;
        }
        let ip = address_key(ip);
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = map.get_mut(&ip) else {
            return;
        };
        let base = e.failures_tat.filter(|t| *t > now).unwrap_or(now);
        // Past the capacity the bucket stays full; it does not grow without bound.
        e.failures_tat = Some((base + self.period).min(now + self.capacity));
    }

    /// Forgets addresses with nothing in flight and a drained bucket.
    pub fn sweep(&self, now: Duration) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| e.in_flight > 0 || e.failures_tat.is_some_and(|t| t > now));
    }

    /// Addresses tracked, for tests.
    pub fn tracked(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[derive(Debug, Clone, Copy)]
struct BackoffEntry {
    failures: u32,
    locked_until: Option<Duration>,
    last: Duration,
}

/// Failed attempts per key with an exponential lock-out: `free` failures cost nothing; the
/// n-th failure past them locks the key for `base × 2^(n-1)`, at most `ceiling`. A success
/// clears the key. A key untouched for `ceiling` is forgotten.
pub struct Backoff<K> {
    free: u32,
    base: Duration,
    ceiling: Duration,
    entries: Mutex<HashMap<K, BackoffEntry>>,
}

impl<K: std::hash::Hash + Eq + Clone> Backoff<K> {
    pub fn new(free: u32, base: Duration, ceiling: Duration) -> Backoff<K> {
        Backoff {
            free,
            base,
            ceiling,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` while `key` is locked out.
    pub fn locked(&self, key: &K, now: Duration) -> Option<Duration> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let until = map.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failure; returns the lock-out it starts, if any.
    pub fn failed(&self, key: K, now: Duration) -> Option<Duration> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            let ceiling = self.ceiling;
            map.retain(|_, e| now.saturating_sub(e.last) < ceiling);
        }
        let e = map.entry(key).or_insert(BackoffEntry {
            failures: 0,
            locked_until: None,
            last: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        let over = e.failures.checked_sub(self.free).filter(|n| *n > 0)?;
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        let wait = self.base.saturating_mul(factor).min(self.ceiling);
        e.locked_until = Some(now + wait);
        Some(wait)
    }

    pub fn succeeded(&self, key: &K) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn sweep(&self, now: Duration) {
        let ceiling = self.ceiling;
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| now.saturating_sub(e.last) < ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn failures_fill_the_bucket_then_drain() {
        let g = IpGate::new(0, 2.0, 3);
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            drop(g.admit(ip(1), t0).unwrap());
            g.failed(ip(1), t0);
        }
        assert_eq!(g.admit(ip(1), t0).err(), Some(Refusal::Failures));
        // Another address is unaffected.
        assert!(g.admit(ip(2), t0).is_ok());
        // One failure's worth drains in 0.5 s.
        assert!(g.admit(ip(1), t0 + Duration::from_millis(600)).is_ok());
        g.sweep(t0 + Duration::from_secs(10));
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn in_flight_is_capped_per_address() {
        let g = IpGate::new(2, 0.0, 0);
        let t = Duration::from_secs(100);
        let a = g.admit(ip(1), t).unwrap();
        let _b = g.admit(ip(1), t).unwrap();
        assert_eq!(g.admit(ip(1), t).err(), Some(Refusal::InFlight));
        drop(a);
        assert!(g.admit(ip(1), t).is_ok());
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address_and_mapped_ipv4_is_ipv4() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let g = IpGate::new(1, 0.0, 0);
        let t = Duration::from_secs(100);
        let _held = g.admit(v6("2001:db8:1:2::1"), t).unwrap();
        // Another address of the same /64 is the same client.
        assert_eq!(
            g.admit(v6("2001:db8:1:2:ffff:1234:5678:9abc"), t).err(),
            Some(Refusal::InFlight)
        );
        // The next /64 is another.
        assert!(g.admit(v6("2001:db8:1:3::1"), t).is_ok());
        let _v4 = g.admit(ip(9), t).unwrap();
        assert_eq!(
            g.admit(v6("::ffff:127.0.0.9"), t).err(),
            Some(Refusal::InFlight)
        );
        assert_eq!(address_key(v6("::ffff:1.2.3.4")), v6("1.2.3.4"));
        assert_eq!(address_key(v6("2001:db8::5:6:7:8")), v6("2001:db8::"));
        assert_eq!(address_key(ip(3)), ip(3));

        // The failure bucket, too.
        let g = IpGate::new(0, 1.0, 2);
        for n in 1..=2u16 {
            let a = IpAddr::from([0x2001, 0xdb8, 0, 7, 0, 0, 0, n]);
            drop(g.admit(a, t).unwrap());
            g.failed(a, t);
        }
        assert_eq!(
            g.admit(v6("2001:db8:0:7::99"), t).err(),
            Some(Refusal::Failures)
        );
    }

    #[test]
    fn backoff_doubles_and_clears() {
        let b = Backoff::new(2, Duration::from_secs(1), Duration::from_secs(5));
        let t = Duration::from_secs(100);
        assert_eq!(b.failed("u", t), None);
        assert_eq!(b.failed("u", t), None);
        assert_eq!(b.locked(&"u", t), None);
        assert_eq!(b.failed("u", t), Some(Duration::from_secs(1)));
        assert_eq!(b.failed("u", t), Some(Duration::from_secs(2)));
        assert_eq!(b.failed("u", t), Some(Duration::from_secs(4)));
        assert_eq!(b.failed("u", t), Some(Duration::from_secs(5)));
        assert!(b.locked(&"u", t).is_some());
        assert_eq!(b.locked(&"u", t + Duration::from_secs(6)), None);
        b.succeeded(&"u");
        assert_eq!(b.failed("u", t), None);
    }
}
