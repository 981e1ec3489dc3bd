//! The in-process fan-out of committed events, by user id.
//!
//! The store's writer hands every committed group's events to [`Hub::publish`] after the commit
//! and never before. A group's events of one user go to each of that user's subscribers as one
//! [`Batch`] (shared, not copied), so the writer's cost after a commit is one map lookup per
//! user and one channel send per subscriber, however many events the group holds and however
//! slow any reader is (issue 15 goal 5). Publishing never waits: each subscriber may have at
//! most [`SUBSCRIBER_QUEUE_BYTES`] of events queued (counted per event, see [`queue_cost`]);
//! one that would go past it is dropped on the spot (its receiver sees the channel close after
//! the batches already queued), and it resumes from the event log.
//!
//! Streams are bounded per user and in total through [`Hub::admit`]: a channel (SSE,
//! Push&Pull) holds a [`Slot`] for as long as it serves one client, whether or not it is
//! subscribed at that moment. A quarter of a user's places ([`HubLimits::reserved_for_browser`])
//! is kept for the user's own browser sessions, so an integration holding every stream it may
//! (webhook or OAuth SSE, Push&Pull channels) cannot starve the notification center.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event::Event;

/// What a subscriber may have queued before it counts as slow and is dropped, in bytes as
/// [`queue_cost`] counts them. In bytes rather than events: the queue must hold what commits
/// during a stream's gap ([`Hub::live_gap`], up to [`MAX_LIVE_GAP`]) at a busy user's rate
/// (4 MiB is 100 ms of 30,000 typical 1 KiB events a second), and what a stalled client
/// pins stays bounded whatever the events' size (256 events, the bound before, could be
/// 256 answers of 64 KiB).
pub const SUBSCRIBER_QUEUE_BYTES: usize = 4 << 20;

/// What one queued event counts against [`SUBSCRIBER_QUEUE_BYTES`]: its payload and a fixed
/// share for the event, its place in the queue and its SSE frame's header.
pub fn queue_cost(ev: &Event) -> usize {
    ev.payload.len() + 128
}

/// The least time between two writes of live events on one stream (SSE, Push&Pull socket)
/// when few streams are open: a stream's cost is per write (a wake-up, a body chunk or frame,
/// a socket write with its copy and TCP work, the client's wake-up: about 35 µs of server CPU
/// on loopback), so under load each write carries every event committed in the gap (issue 15
/// goal 5), and an event waits at most the gap more. A stream that was quiet longer writes at
/// once. See [`Hub::live_gap`].
pub const LIVE_GAP: Duration = Duration::from_millis(10);

/// The longest gap between two writes of one stream, however many streams are open.
pub const MAX_LIVE_GAP: Duration = Duration::from_millis(250);

/// How long [`Hub::live_gap`] measures the streams' write rate before it follows it: as long as
/// the longest gap, so that even then each busy stream's writes are in every window.
pub const GAP_WINDOW: Duration = MAX_LIVE_GAP;

/// Writes a second that all streams together make under load, as long as the gap stays
/// within [`LIVE_GAP`]..[`MAX_LIVE_GAP`]: with more open streams each waits longer between
/// writes, so their writes cost a bounded share of the core (1,000 writes, some 3.5 %) and the
/// adds do not slow down with the number of listeners (issue 15 goal 5).
pub const LIVE_WRITES_PER_SECOND: u32 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Streams one user may hold at once.
    pub per_user: usize,
    /// Streams the whole process may hold at once.
    pub total: usize,
}

impl Default for HubLimits {
    fn default() -> HubLimits {
        HubLimits {
            per_user: 16,
            total: 10_000,
        }
    }
}

impl HubLimits {
    /// Places of each user that only browser-session streams may take: a quarter of
    /// `per_user` (4 of the default 16), none when a user may hold fewer than 2 streams.
    pub fn reserved_for_browser(&self) -> usize {
        if self.per_user < 2 {
            0
        } else {
            (self.per_user / 4).max(1)
        }
    }
}

/// Who a stream serves, for the per-user places ([`Hub::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The user's browser: SSE with a session cookie (the notification center).
    Browser,
    /// Anything else: a webhook's or OAuth app's SSE, a Push&Pull channel.
    Integration,
}

/// One commit group's events of one user, oldest first: what a subscriber receives at once.
pub type Batch = Arc<[Arc<Event>]>;

/// One subscriber as the hub sees it. The channel is unbounded; `queued` bounds it in events.
struct Sender {
    id: u64,
    tx: mpsc::UnboundedSender<(Batch, usize)>,
    /// [`queue_cost`] of the events sent and not yet received: raised by `publish` (under the
    /// hub's lock), lowered by the receiver.
    queued: Arc<AtomicUsize>,
}

/// A user's subscribers.
type Senders = Vec<Sender>;

pub struct Hub {
    subscribers: Mutex<HashMap<i64, Senders>>,
    slots: Mutex<SlotCounts>,
    /// Live writes of every stream since `gap.start` ([`Hub::note_live_write`]).
    live_writes: AtomicU64,
    /// [`Hub::live_gap`] now, in µs.
    gap_us: AtomicU64,
    /// When the current measuring window began; locked only to close it.
    gap: Mutex<Instant>,
    limits: HubLimits,
    next_id: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    /// Per user: (all streams, integration streams).
    by_user: HashMap<i64, (usize, usize)>,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<(Batch, usize)>,
    queued: Arc<AtomicUsize>,
    hub: Arc<Hub>,
    user_id: i64,
    id: u64,
}

impl Subscription {
    /// The next batch of live events; `None` once the hub dropped this subscriber (too slow;
    /// everything sent before was received) or closed. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Batch> {
        let (batch, cost) = self.rx.recv().await?;
        self.queued.fetch_sub(cost, Ordering::Relaxed);
        Some(batch)
    }

    /// Appends the batches queued now to `ready`, without waiting: what a stream writes at once
    /// after waking. Everything queued, not a fixed number of events, up to `budget` bytes (as
    /// [`queue_cost`] counts them): a stream writes at most once per [`LIVE_GAP`], so taking less
    /// than a gap's events per write would let a stream that keeps up with the rate fall behind
    /// by its own cadence until the hub drops it (issue 15 goal 5). The budget bounds one write
    /// instead: a stalled client's pending write holds at most about `budget`, beside a queue of
    /// at most [`SUBSCRIBER_QUEUE_BYTES`]. A stream told [`Drain::More`] writes again as soon as
    /// its client takes the write, without waiting for the gap.
    pub fn drain_into(&mut self, ready: &mut Vec<Batch>, budget: usize) -> Drain {
        let mut taken = 0;
        while taken < budget {
            match self.rx.try_recv() {
                Ok((batch, cost)) => {
                    self.queued.fetch_sub(cost, Ordering::Relaxed);
                    taken += cost;
                    ready.push(batch);
                }
                Err(mpsc::error::TryRecvError::Empty) => return Drain::All,
                Err(mpsc::error::TryRecvError::Disconnected) => return Drain::Dropped,
            }
        }
        Drain::More
    }
}

/// What [`Subscription::drain_into`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Everything queued is in `ready`.
    All,
    /// The budget was reached; more may be queued.
    More,
    /// The hub dropped this subscriber (too slow): everything it was sent is in `ready`, the
    /// rest is in the log.
    Dropped,
}

/// What one write of live events takes from a subscriber's queue at most, in [`queue_cost`]
/// bytes (see [`Subscription::drain_into`]): a stalled client then pins its queue and one
/// write of this size, not twice the queue.
pub const WRITE_BYTES: usize = 256 << 10;

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.user_id, self.id);
    }
}

/// One admitted stream; dropping it frees its place.
pub struct Slot {
    hub: Arc<Hub>,
    user_id: i64,
    kind: StreamKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.hub.slots.lock().expect("hub slots poisoned");
        slots.total -= 1;
        if let Some((all, integration)) = slots.by_user.get_mut(&self.user_id) {
            *all -= 1;
            if self.kind == StreamKind::Integration {
                *integration -= 1;
            }
            if *all == 0 {
                slots.by_user.remove(&self.user_id);
            }
        }
        crate::metrics::set_streams(slots.total);
    }
}

impl Hub {
    pub fn new(limits: HubLimits) -> Arc<Hub> {
        Arc::new(Hub {
            subscribers: Mutex::new(HashMap::new()),
            slots: Mutex::new(SlotCounts::default()),
            live_writes: AtomicU64::new(0),
            gap_us: AtomicU64::new(LIVE_GAP.as_micros() as u64),
            gap: Mutex::new(Instant::now()),
            limits,
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        })
    }

    /// A place for one more stream of `user_id`, or `None` when the user or the process is at
    /// its limit. Integration streams together get at most `per_user` less the browser's
    /// reserve ([`HubLimits::reserved_for_browser`]).
    pub fn admit(self: &Arc<Hub>, user_id: i64, kind: StreamKind) -> Option<Slot> {
        let mut slots = self.slots.lock().expect("hub slots poisoned");
        let (all, integration) = slots.by_user.get(&user_id).copied().unwrap_or((0, 0));
        let integration_cap = self.limits.per_user - self.limits.reserved_for_browser();
        if slots.total >= self.limits.total
            || all >= self.limits.per_user
            || (kind == StreamKind::Integration && integration >= integration_cap)
        {
            return None;
        }
        slots.total += 1;
        let mine = slots.by_user.entry(user_id).or_default();
        mine.0 += 1;
        if kind == StreamKind::Integration {
            mine.1 += 1;
        }
        crate::metrics::set_streams(slots.total);
        Some(Slot {
            hub: self.clone(),
            user_id,
            kind,
        })
    }

    /// The least time between two writes of live events on one stream now: [`LIVE_GAP`], or
    /// longer while the streams together write more than [`LIVE_WRITES_PER_SECOND`] times a
    /// second (100 streams that each have events all the time: 100 ms), at most
    /// [`MAX_LIVE_GAP`]. It follows the writes streams make ([`Hub::note_live_write`]), not
    /// the streams held open: idle streams, however many one client holds, do not slow anyone
    /// else's events. An event waits at most this long more than it would alone; a stream that
    /// was quiet for the gap writes at once.
    pub fn live_gap(&self) -> Duration {
        self.live_gap_at(Instant::now())
    }

    /// [`Hub::live_gap`] at `now`. Once per [`GAP_WINDOW`] the gap is scaled by the measured
    /// write rate over the target: with `n` streams that always have events, each writes once
    /// per gap `g`, so the rate is `n / g` and the next gap `g × (n / g) / target` is `n / target`
    /// whatever `g` was; with sparse events the rate is lower and the gap shrinks back.
    fn live_gap_at(&self, now: Instant) -> Duration {
        if let Ok(mut start) = self.gap.try_lock() {
            let elapsed = now.saturating_duration_since(*start);
            if elapsed >= GAP_WINDOW {
                let writes = self.live_writes.swap(0, Ordering::Relaxed);
                *start = now;
                let rate = writes as f64 / elapsed.as_secs_f64();
                let gap = Duration::from_micros(self.gap_us.load(Ordering::Relaxed))
                    .mul_f64(rate / f64::from(LIVE_WRITES_PER_SECOND))
                    .clamp(LIVE_GAP, MAX_LIVE_GAP);
                self.gap_us.store(gap.as_micros() as u64, Ordering::Relaxed);
            }
        }
        Duration::from_micros(self.gap_us.load(Ordering::Relaxed))
    }

    /// Counts one write of live events by a stream (an SSE body chunk, a Push&Pull frame), for
    /// [`Hub::live_gap`]. One relaxed atomic add.
    pub fn note_live_write(&self) {
        self.live_writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts receiving `user_id`'s events committed from now on. `None` once the hub is closed
    /// (the server is shutting down).
    pub fn subscribe(self: &Arc<Hub>, user_id: i64) -> Option<Subscription> {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.subscribers.lock().expect("hub poisoned");
            // Checked under the lock, so `close` cannot miss a subscriber added concurrently.
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            subs.entry(user_id).or_default().push(Sender {
                id,
                tx,
                queued: queued.clone(),
            });
        }
        Some(Subscription {
            rx,
            queued,
            hub: self.clone(),
            user_id,
            id,
        })
    }

    /// Fans a committed group's events out, one [`Batch`] per user with subscribers; never
    /// blocks. `events` are in commit (id) order, and so is each batch. Called by the store
    /// after the commit.
    pub fn publish(&self, events: &[Arc<Event>]) {
        if events.is_empty() {
            return;
        }
        let mut subs = self.subscribers.lock().expect("hub poisoned");
        if subs.is_empty() {
            return;
        }
        // The events of subscribed users, by user; the sort is stable, so each user's stay in
        // id order. A group has few users with open streams, usually one.
        let mut mine: Vec<&Arc<Event>> = events
            .iter()
            .filter(|ev| subs.contains_key(&ev.user_id))
            .collect();
        mine.sort_by_key(|ev| ev.user_id);
        for run in mine.chunk_by(|a, b| a.user_id == b.user_id) {
            let user_id = run[0].user_id;
            let batch: Batch = run.iter().map(|ev| Arc::clone(ev)).collect();
            let cost: usize = batch.iter().map(|ev| queue_cost(ev)).sum();
            let Some(list) = subs.get_mut(&user_id) else {
                continue;
            };
            list.retain(|s| {
                // Only `publish` raises `queued`, under the lock: the sum cannot pass the bound.
                if s.queued.load(Ordering::Relaxed) + cost > SUBSCRIBER_QUEUE_BYTES {
                    // Too slow: dropped here, it catches up from the log.
                    crate::metrics::record_subscriber_dropped();
                    return false;
                }
                s.queued.fetch_add(cost, Ordering::Relaxed);
                s.tx.send((batch.clone(), cost)).is_ok()
            });
            if list.is_empty() {
                subs.remove(&user_id);
            }
        }
    }

    /// Ends every subscription, and refuses new ones: streams finish so that shutdown can drain.
    pub fn close(&self) {
        let mut subs = self.subscribers.lock().expect("hub poisoned");
        self.closed.store(true, Ordering::SeqCst);
        subs.clear();
    }

    /// Streams holding a [`Slot`] now (SSE, WebSocket and long-poll streams of every user).
    /// Shutdown waits for this to reach 0 after [`Hub::close`], so upgraded sockets, which the
    /// HTTP server's graceful shutdown does not track, get to send their close frame.
    pub fn open_streams(&self) -> usize {
        self.slots.lock().expect("hub slots poisoned").total
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Current subscriptions of a user (for tests and diagnostics).
    pub fn subscriber_count(&self, user_id: i64) -> usize {
        self.subscribers
            .lock()
            .expect("hub poisoned")
            .get(&user_id)
            .map_or(0, Vec::len)
    }

    fn remove(&self, user_id: i64, id: u64) {
        let mut subs = self.subscribers.lock().expect("hub poisoned");
        if let Some(list) = subs.get_mut(&user_id) {
            list.retain(|s| s.id != id);
            if list.is_empty() {
                subs.remove(&user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event::Kind;

    /// What one test event costs in the queue: 256 of them fill it.
    const COST: usize = SUBSCRIBER_QUEUE_BYTES / 256;

    fn ev(id: i64, user_id: i64) -> Arc<Event> {
        sized(id, user_id, COST)
    }

    /// An event whose [`queue_cost`] is `cost`.
    fn sized(id: i64, user_id: i64, cost: usize) -> Arc<Event> {
        let mut e = Event {
            id,
            user_id,
            kind: Kind::Add,
            payload: "".into(),
            sse: Default::default(),
        };
        e.payload = "x".repeat(cost - queue_cost(&e)).into();
        Arc::new(e)
    }

    #[tokio::test]
    async fn fans_out_by_user_and_drops_the_slow() {
        let hub = Hub::new(HubLimits::default());
        let mut a = hub.subscribe(1).unwrap();
        let mut slow = hub.subscribe(1).unwrap();
        let mut other = hub.subscribe(2).unwrap();
        hub.publish(&[ev(1, 1), ev(2, 2)]);
        assert_eq!(a.recv().await.unwrap()[0].id, 1);
        assert_eq!(other.recv().await.unwrap()[0].id, 2);
        // `a` keeps reading; `slow` never does. Publishing never blocks, and `slow` is dropped.
        for i in 0..(256 + 10) {
            hub.publish(&[ev(10 + i, 1)]);
            assert_eq!(a.recv().await.unwrap()[0].id, 10 + i);
        }
        assert_eq!(hub.subscriber_count(1), 1);
        let mut seen = 0;
        while let Some(batch) = slow.recv().await {
            seen += batch.len();
        }
        // It got what fitted (the first event and a full queue), then the channel closed.
        assert_eq!(seen, 256);
        drop(a);
        assert_eq!(hub.subscriber_count(1), 0);
        hub.close();
        assert!(other.recv().await.is_none());
        assert!(hub.subscribe(3).is_none());
    }

    #[tokio::test]
    async fn a_group_is_one_batch_per_user_and_the_bound_holds() {
        let hub = Hub::new(HubLimits::default());
        let mut one = hub.subscribe(1).unwrap();
        let mut two = hub.subscribe(2).unwrap();
        hub.publish(&[ev(1, 1), ev(2, 2), ev(3, 1), ev(4, 1), ev(5, 2)]);
        let ids = |b: Batch| b.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(one.recv().await.unwrap()), [1, 3, 4]);
        assert_eq!(ids(two.recv().await.unwrap()), [2, 5]);
        let mut none = Vec::new();
        assert_eq!(one.drain_into(&mut none, usize::MAX), Drain::All);
        assert!(none.is_empty());
        // 200 events in one group, then 100 more: the queue would hold 300 events in two
        // batches, past the bound (256 of these), so the subscriber is dropped with the first
        // batch queued.
        let group = |from: i64, n: i64| (from..from + n).map(|i| ev(i, 1)).collect::<Vec<_>>();
        hub.publish(&group(10, 200));
        hub.publish(&group(210, 100));
        assert_eq!(hub.subscriber_count(1), 0);
        assert_eq!(one.recv().await.unwrap().len(), 200);
        assert!(one.recv().await.is_none());
        // A reader that keeps up is never dropped, however many events pass.
        let mut reader = hub.subscribe(1).unwrap();
        for k in 0..10 {
            hub.publish(&group(1000 + k * 200, 200));
            assert_eq!(reader.recv().await.unwrap().len(), 200);
        }
        assert_eq!(hub.subscriber_count(1), 1);
    }

    /// A stream wakes once per [`LIVE_GAP`] and writes what queued meanwhile: taking it all
    /// keeps it subscribed at any rate it keeps up with. Taking a fixed 64 events per wake (as
    /// streams did) left it behind by the rest of each gap's events until it was dropped.
    #[tokio::test]
    async fn a_stream_that_takes_all_that_queued_in_a_gap_is_never_dropped() {
        let hub = Hub::new(HubLimits::default());
        let mut sub = hub.subscribe(1).unwrap();
        let mut next = 1;
        for _gap in 0..20 {
            // A gap's worth: 25 commit groups of 8 events, 200 events, under the bound.
            for _group in 0..25 {
                let group: Vec<_> = (next..next + 8).map(|i| ev(i, 1)).collect();
                next += 8;
                hub.publish(&group);
            }
            // Past a write's budget the stream writes again at once, not after another gap.
            let mut ready = vec![sub.recv().await.unwrap()];
            let mut drain = Drain::More;
            while drain == Drain::More {
                drain = sub.drain_into(&mut ready, WRITE_BYTES);
            }
            assert_eq!(drain, Drain::All, "dropped");
            let ids: Vec<i64> = ready.iter().flat_map(|b| b.iter().map(|e| e.id)).collect();
            assert_eq!(ids, (next - 200..next).collect::<Vec<_>>());
        }
        assert_eq!(hub.subscriber_count(1), 1);
        // Once dropped, the drain still hands over everything that was queued, then says so.
        let mut slow = hub.subscribe(1).unwrap();
        hub.publish(&(0..200).map(|i| ev(next + i, 1)).collect::<Vec<_>>());
        hub.publish(&(200..400).map(|i| ev(next + i, 1)).collect::<Vec<_>>());
        let mut ready = vec![slow.recv().await.unwrap()];
        assert_eq!(slow.drain_into(&mut ready, usize::MAX), Drain::Dropped);
        assert_eq!(ready.iter().map(|b| b.len()).sum::<usize>(), 200);
    }

    /// The bound is in bytes: many small events may wait (a busy user's gap), few large ones.
    #[tokio::test]
    async fn the_bound_counts_bytes_not_events() {
        let hub = Hub::new(HubLimits::default());
        let mut small = hub.subscribe(1).unwrap();
        // 2,000 events of 1 KiB (2 MiB): eight times the 256 events a stream could hold before.
        for i in 0..2000 {
            hub.publish(&[sized(i, 1, 1024)]);
        }
        assert_eq!(hub.subscriber_count(1), 1);
        let mut ready = vec![small.recv().await.unwrap()];
        assert_eq!(small.drain_into(&mut ready, usize::MAX), Drain::All);
        assert_eq!(ready.len(), 2000);
        // 64 KiB events: 64 fill the queue, the 65th drops the subscriber.
        let mut large = hub.subscribe(2).unwrap();
        for i in 0..65 {
            hub.publish(&[sized(10_000 + i, 2, 64 << 10)]);
        }
        assert_eq!(hub.subscriber_count(2), 0);
        let mut seen = 0;
        while let Some(b) = large.recv().await {
            seen += b.len();
        }
        assert_eq!(seen, 64);
    }

    /// One write takes at most its budget; the rest stays queued, in order, for the next.
    #[tokio::test]
    async fn one_write_takes_at_most_its_budget() {
        let hub = Hub::new(HubLimits::default());
        let mut sub = hub.subscribe(1).unwrap();
        // 2 MiB of 1 KiB events: eight writes' worth.
        for i in 0..2000 {
            hub.publish(&[sized(i, 1, 1024)]);
        }
        let mut writes = 0;
        let mut ids = Vec::new();
        loop {
            let mut ready = vec![sub.recv().await.unwrap()];
            let drain = sub.drain_into(&mut ready, WRITE_BYTES);
            writes += 1;
            let bytes: usize = ready
                .iter()
                .flat_map(|b| b.iter())
                .map(|e| queue_cost(e))
                .sum();
            assert!(bytes <= WRITE_BYTES + 2 * (1024 + 128), "{bytes}");
            ids.extend(ready.iter().flat_map(|b| b.iter().map(|e| e.id)));
            if drain == Drain::All {
                break;
            }
            assert_eq!(drain, Drain::More);
        }
        assert_eq!(ids, (0..2000).collect::<Vec<_>>());
        assert!(writes >= 8, "{writes}");
        assert_eq!(hub.subscriber_count(1), 1);
    }

    /// `n` streams that always have events: each writes once per gap, for `windows` windows.
    fn busy(hub: &Hub, n: u64, t: &mut Instant, windows: u32) -> Duration {
        let end = *t + GAP_WINDOW * windows;
        while *t < end {
            let gap = hub.live_gap_at(*t);
            for _ in 0..n {
                hub.note_live_write();
            }
            *t += gap;
        }
        hub.live_gap_at(*t)
    }

    fn near(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= b / 5
    }

    #[test]
    fn the_gap_follows_the_streams_writes_within_its_bounds() {
        let hub = Hub::new(HubLimits {
            per_user: 1000,
            total: 1000,
        });
        let mut t = Instant::now();
        assert_eq!(hub.live_gap_at(t), LIVE_GAP);
        // Streams held open that write nothing (one client's idle streams) change nothing.
        let held: Vec<Slot> = (0..600)
            .map(|_| hub.admit(1, StreamKind::Integration).unwrap())
            .collect();
        t += GAP_WINDOW * 4;
        assert_eq!(hub.live_gap_at(t), LIVE_GAP);
        drop(held);
        // Five busy streams: 500 writes a second, under the target.
        assert_eq!(busy(&hub, 5, &mut t, 4), LIVE_GAP);
        // 100 busy streams writing every 100 ms: 1,000 writes a second together.
        let gap = busy(&hub, 100, &mut t, 6);
        assert!(near(gap, Duration::from_millis(100)), "{gap:?}");
        // 600: the longest gap.
        assert_eq!(busy(&hub, 600, &mut t, 6), MAX_LIVE_GAP);
        // 20, then none: back down.
        let gap = busy(&hub, 20, &mut t, 8);
        assert!(near(gap, Duration::from_millis(20)), "{gap:?}");
        t += GAP_WINDOW * 2;
        assert_eq!(hub.live_gap_at(t), LIVE_GAP);
    }

    #[test]
    fn admits_within_limits() {
        let hub = Hub::new(HubLimits {
            per_user: 2,
            total: 3,
        });
        let a = hub.admit(1, StreamKind::Browser).unwrap();
        let _b = hub.admit(1, StreamKind::Browser).unwrap();
        assert!(hub.admit(1, StreamKind::Browser).is_none());
        let _c = hub.admit(2, StreamKind::Browser).unwrap();
        assert!(hub.admit(3, StreamKind::Browser).is_none());
        drop(a);
        assert!(hub.admit(1, StreamKind::Browser).is_some());
    }

    #[test]
    fn integrations_leave_the_browser_its_reserve() {
        let limits = HubLimits {
            per_user: 16,
            total: 100,
        };
        assert_eq!(limits.reserved_for_browser(), 4);
        let hub = Hub::new(limits);
        let held: Vec<Slot> = (0..12)
            .map(|_| hub.admit(1, StreamKind::Integration).unwrap())
            .collect();
        assert!(hub.admit(1, StreamKind::Integration).is_none());
        // Another user's integrations are not affected.
        assert!(hub.admit(2, StreamKind::Integration).is_some());
        let browsers: Vec<Slot> = (0..4)
            .map(|_| hub.admit(1, StreamKind::Browser).unwrap())
            .collect();
        assert!(hub.admit(1, StreamKind::Browser).is_none());
        drop(browsers);
        // Browsers may also use the integrations' share when it is free.
        drop(held);
        let all: Vec<Slot> = (0..16)
            .map(|_| hub.admit(1, StreamKind::Browser).unwrap())
            .collect();
        assert_eq!(all.len(), 16);
        let one = HubLimits {
            per_user: 1,
            total: 10,
        };
        assert_eq!(one.reserved_for_browser(), 0);
        assert!(Hub::new(one).admit(1, StreamKind::Integration).is_some());
    }
}
