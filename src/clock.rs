//! The process's one clock. Every time that is answered to a client, stored, or compared with a
//! stored time (token, code and session expiry, notification dates, the `time` block, the
//! operating-time and rate limits) is read from the [`Clock`] in the application state, so that
//! time can be moved in one place: by unit tests, and by the admin test clock.
//!
//! The rule (ARCHITECTURE.md, "One clock"): no module but this one reads the wall clock
//! (`SystemTime::now`, `Utc::now`, `Local::now`); `tests/architecture.rs` enforces it.
//! `std::time::Instant` may still be read elsewhere, but only to measure how long something took
//! on the real machine (request durations for metrics, the freshness of a cache, I/O timeouts),
//! never for a time a client sees or the server stores.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{FixedOffset, Local, Offset, TimeZone};

/// A cheap, cloneable handle on the process's time source. Clones share the source and the
/// offset, so advancing one advances them all.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    /// Added to every reading, nanoseconds; moved by [`Clock::advance`], cleared by
    /// [`Clock::reset`].
    offset_nanos: AtomicI64,
}

enum Source {
    /// Real time: the system clock for dates, a monotonic clock for intervals.
    System { started: Instant },
    /// A clock that stands still at the given Unix time (nanoseconds) until it is advanced.
    Manual { epoch_nanos: i64 },
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.source {
            Source::System { .. } => "system",
            Source::Manual { .. } => "manual",
        };
        f.debug_struct("Clock")
            .field("source", &kind)
            .field("offset_seconds", &self.offset().as_secs_f64())
            .finish()
    }
}

impl Clock {
    /// Real time, the default.
    pub fn system() -> Clock {
        Clock::with_source(Source::System {
            started: Instant::now(),
        })
    }

    /// A clock that reads `unix_seconds` until [`advance`](Clock::advance)d: for tests that
    /// need exact times.
    pub fn manual(unix_seconds: i64) -> Clock {
        Clock::with_source(Source::Manual {
            epoch_nanos: unix_seconds.saturating_mul(1_000_000_000),
        })
    }

    fn with_source(source: Source) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                source,
                offset_nanos: AtomicI64::new(0),
            }),
        }
    }

    fn offset_nanos(&self) -> i64 {
        self.inner.offset_nanos.load(Ordering::Relaxed)
    }

    /// Now, as Unix seconds with sub-second precision: the form of the `time` block (§5.1).
    pub fn now(&self) -> f64 {
        let base = match &self.inner.source {
            Source::System { .. } => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            Source::Manual { epoch_nanos } => *epoch_nanos,
        };
        base.saturating_add(self.offset_nanos()) as f64 / 1e9
    }

    /// Now, as whole Unix seconds: the unit of every stored expiry and date.
    pub fn unix(&self) -> i64 {
        self.now().floor() as i64
    }

    /// The server's UTC offset at this moment (the time zone of every date Bitrix24 emits).
    pub fn local_offset(&self) -> FixedOffset {
        Local
            .timestamp_opt(self.unix(), 0)
            .single()
            .map(|t| t.offset().fix())
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// Time since the clock was made, plus the offset: a monotonic reading for interval
    /// arithmetic (the rate limit). Moves with [`advance`](Clock::advance) like [`now`](Clock::now).
    pub fn monotonic(&self) -> Duration {
        let base = match &self.inner.source {
            Source::System { started } => started.elapsed().as_nanos() as i64,
            Source::Manual { .. } => 0,
        };
        Duration::from_nanos(base.saturating_add(self.offset_nanos()).max(0) as u64)
    }

    /// Moves the clock forward by `by` (for every clone).
    pub fn advance(&self, by: Duration) {
        let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        let _ = self
            .inner
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                Some(o.saturating_add(nanos))
            });
    }

    /// Drops every [`advance`](Clock::advance): back to real time (or the manual start).
    pub fn reset(&self) {
        self.inner.offset_nanos.store(0, Ordering::Relaxed);
    }

    /// How far the clock has been advanced.
    pub fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos().max(0) as u64)
    }
}

/// The rate limiter (governor) reads this clock too, so an advance drains its buckets.
impl governor::clock::Clock for Clock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.monotonic()
    }
}

/// RFC 3339 with the server's UTC offset, whole seconds: the form of every date Bitrix24 emits
/// (the `time` block, notification dates, user dates).
///
/// Every answer's `time` block formats two dates, nearly always of the current second, and
/// looking up the local offset and interpreting the format string cost about 2 % of an add
/// (issue 15): each thread remembers its last answer.
pub fn rfc3339_local(ts: f64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> =
            const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let secs = ts.floor() as i64;
    LAST.with_borrow_mut(|(last, text)| {
        if *last != secs {
            text.clear();
            push_rfc3339_local(secs as f64, text);
            *last = secs;
        }
        text.clone()
    })
}

/// [`rfc3339_local`] appended to `out` (nothing for a time the zone cannot show).
///
/// An `im.notify.get` of 20 notifications writes 20 dates, mostly of a few days. Each thread
/// remembers the last local day whose UTC offset held from its midnight to its last second:
/// within it a date is the day's `YYYY-MM-DDT` and offset around digits written by hand, with
/// no zone lookup and no `format` (whose pattern parse was a tenth of such a get, issue 15
/// goal 3). A day with an offset change (23 or 25 hours) is never remembered, so its dates
/// take the zone's path every time.
pub fn push_rfc3339_local(ts: f64, out: &mut String) {
    thread_local! {
        static DAY: std::cell::Cell<Option<Day>> = const { std::cell::Cell::new(None) };
    }
    DAY.with(|memo| {
        push_rfc3339(ts, out, memo, |secs| {
            Local
                .timestamp_opt(secs, 0)
                .single()
                .map(|t| t.offset().fix().local_minus_utc())
        })
    });
}

/// One local day of [`push_rfc3339_local`]'s memo: `[start, start + 86_400)` in Unix seconds.
#[derive(Clone, Copy)]
struct Day {
    start: i64,
    /// `YYYY-MM-DDT`.
    date: [u8; 11],
    /// `+HH:MM`.
    offset: [u8; 6],
}

/// Writes `n` as `width` decimal digits at `buf[at..]`.
fn put_digits(buf: &mut [u8], at: usize, mut n: u32, width: usize) {
    for slot in buf[at..at + width].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// [`push_rfc3339_local`] in the zone whose UTC offset (seconds east) at a Unix second is
/// `offset_at`, remembering a day in `memo`.
fn push_rfc3339(
    ts: f64,
    out: &mut String,
    memo: &std::cell::Cell<Option<Day>>,
    offset_at: impl Fn(i64) -> Option<i32>,
) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;

    let push_time = |day: &Day, secs: i64, out: &mut String| {
        let mut text = *b"0000-00-00T00:00:00+00:00";
        text[..11].copy_from_slice(&day.date);
        let s = (secs - day.start) as u32;
        put_digits(&mut text, 11, s / 3600, 2);
        put_digits(&mut text, 14, s / 60 % 60, 2);
        put_digits(&mut text, 17, s % 60, 2);
        text[19..].copy_from_slice(&day.offset);
        // ASCII by construction.
        out.push_str(std::str::from_utf8(&text).unwrap_or_default());
    };

    let secs = ts.floor() as i64;
    if let Some(day) = memo
        .get()
        .filter(|d| (d.start..d.start + 86_400).contains(&secs))
    {
        push_time(&day, secs, out);
        return;
    }
    let Some(t) = offset_at(secs)
        .and_then(FixedOffset::east_opt)
        .and_then(|zone| zone.timestamp_opt(secs, 0).single())
    else {
        return;
    };
    let offset = t.offset().local_minus_utc();
    if !(0..=9999).contains(&t.year()) || offset % 60 != 0 {
        let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%:z"));
        return;
    }
    let mut day = Day {
        start: secs - i64::from(t.num_seconds_from_midnight()),
        date: *b"0000-00-00T",
        offset: *b"+00:00",
    };
    put_digits(&mut day.date, 0, t.year() as u32, 4);
    put_digits(&mut day.date, 5, t.month(), 2);
    put_digits(&mut day.date, 8, t.day(), 2);
    if offset < 0 {
        day.offset[0] = b'-';
    }
    let minutes = offset.unsigned_abs() / 60;
    put_digits(&mut day.offset, 1, minutes / 60, 2);
    put_digits(&mut day.offset, 4, minutes % 60, 2);
    if offset_at(day.start) == Some(offset) && offset_at(day.start + 86_399) == Some(offset) {
        memo.set(Some(day));
    }
    push_time(&day, secs, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_chrono_formats_them() {
        for ts in [
            0.0,
            1.5,
            1_764_000_000.9,
            951_782_400.0,
            -86_400.0,
            4_102_444_799.0,
        ] {
            let secs = f64::floor(ts) as i64;
            let want = Local
                .timestamp_opt(secs, 0)
                .single()
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%:z").to_string())
                .unwrap_or_default();
            let mut got = String::new();
            push_rfc3339_local(ts, &mut got);
            assert_eq!(got, want, "{ts}");
        }
    }

    #[test]
    fn the_day_memo_never_spans_an_offset_change() {
        // A zone that moves from +01:00 to +02:00 at 01:00 UTC on 2026-03-29, and back to
        // +01:00 at 01:00 UTC on 2026-10-25, like central Europe; and -03:30 before 2000.
        let spring = 1_774_746_000;
        let autumn = 1_792_890_000;
        let offset_at = |secs: i64| {
            Some(if secs < 946_684_800 {
                -12_600
            } else if (spring..autumn).contains(&secs) {
                7_200
            } else {
                3_600
            })
        };
        let chrono_form = |secs: i64| {
            FixedOffset::east_opt(offset_at(secs).unwrap())
                .unwrap()
                .timestamp_opt(secs, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        };
        let memo = std::cell::Cell::new(None);
        let mut seconds = Vec::new();
        for edge in [spring, autumn, 946_684_800, 0] {
            // Before and after the edge in both orders, so that the memo holds a neighbour day.
            for step in [
                -90_000i64, -86_400, -3_601, -1, 0, 1, 3_599, 7_200, 86_399, 90_000,
            ] {
                seconds.push(edge + step);
            }
            for step in [90_000i64, 3_600, 1, 0, -1, -7_200, -86_401] {
                seconds.push(edge + step);
            }
        }
        for secs in seconds {
            let mut got = String::new();
            push_rfc3339(secs as f64 + 0.25, &mut got, &memo, offset_at);
            assert_eq!(got, chrono_form(secs), "{secs}");
        }
    }

    #[test]
    fn dates_are_the_same_with_the_per_thread_memo_as_without() {
        let direct = |secs: i64| {
            Local
                .timestamp_opt(secs, 0)
                .single()
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        };
        for secs in [
            1_700_000_000,
            1_700_000_000,
            1_700_000_001,
            0,
            1_700_000_000,
            86_399,
        ] {
            assert_eq!(rfc3339_local(secs as f64), direct(secs));
            assert_eq!(rfc3339_local(secs as f64 + 0.75), direct(secs));
        }
    }

    #[test]
    fn a_manual_clock_stands_still_until_advanced() {
        let c = Clock::manual(1_700_000_000);
        assert_eq!(c.unix(), 1_700_000_000);
        let shared = c.clone();
        shared.advance(Duration::from_millis(3_600_500));
        assert_eq!(c.unix(), 1_700_003_600);
        assert!((c.now() - 1_700_003_600.5).abs() < 1e-6);
        assert_eq!(c.monotonic(), Duration::from_millis(3_600_500));
        c.reset();
        assert_eq!(shared.unix(), 1_700_000_000);
    }

    #[test]
    fn the_system_clock_follows_real_time_plus_its_offset() {
        let c = Clock::system();
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((c.now() - real).abs() < 5.0);
        c.advance(Duration::from_secs(3601));
        assert!((c.now() - real - 3601.0).abs() < 5.0);
        assert!(c.monotonic() >= Duration::from_secs(3601));
        c.reset();
        assert!((c.now() - real).abs() < 5.0);
    }
}
