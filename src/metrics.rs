//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! One process-wide registry: the REST handler and the SQLite writer thread record into it
//! without being handed a reference, and the writer runs outside any request.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The media type of `prometheus_client`'s text encoding.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label set of the per-call metrics. `method` is a registered method name or `unknown`, so
/// that a caller cannot grow the number of series by inventing method names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    status: u16,
}

/// The label `method` takes for a call whose method is not registered.
pub const UNKNOWN_METHOD: &str = "unknown";

struct Metrics {
    registry: Registry,
    requests: Family<CallLabels, Counter>,
    latency: Family<CallLabels, Histogram, fn() -> Histogram>,
    writer_queue_depth: Gauge,
    commit_batch: Histogram,
    group_reruns: Counter,
    /// Drafts per store call of a batch's run of adds (issue 15, goal 4).
    batch_run_writes: Histogram,
    delivery: Delivery,
}

/// Live delivery and e-mail (issue 12).
#[derive(Default)]
struct Delivery {
    streams: Gauge,
    subscribers_dropped: Counter,
    sse_frames_encoded: Counter,
    sse_events_sent: Counter,
    stream_credential_checks: Counter,
    mail_sent: Counter,
    mail_failed: Counter,
    mail_retried: Counter,
    mail_dead: Counter,
    outbox_depth: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3.3 s, doubling: a group commit with fsync sits in the low milliseconds.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("imnotify");
        let requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "rest_requests",
            "REST calls answered, by method and HTTP status",
            requests.clone(),
        );
        let latency: Family<CallLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "rest_request_duration_seconds",
            "Time from receiving a REST call to its answer, by method and HTTP status",
            latency.clone(),
        );
        let writer_queue_depth = Gauge::default();
        // Where acknowledged-to-be work waits before it is durable.
        registry.register(
            "storage_writer_queue_depth",
            "Writes waiting for the SQLite writer thread, sampled when /metrics is read",
            writer_queue_depth.clone(),
        );
        // 1 to 512 (the writer's group limit), doubling.
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "storage_commit_batch_size",
            "Writes committed together in one SQLite transaction",
            commit_batch.clone(),
        );
        let group_reruns = Counter::default();
        registry.register(
            "storage_group_reruns",
            "Groups of notification inserts rolled back after a failed insert and run again \
             with a savepoint per write",
            group_reruns.clone(),
        );
        // 1 to 64: a batch has at most 50 commands.
        let batch_run_writes = Histogram::new(exponential_buckets(1.0, 2.0, 7));
        registry.register(
            "batch_run_writes",
            "Adds of a batch stored together with one store call (a run of adds)",
            batch_run_writes.clone(),
        );
        let delivery = Delivery::default();
        registry.register(
            "event_streams",
            "Open event streams (SSE)",
            delivery.streams.clone(),
        );
        registry.register(
            "hub_subscribers_dropped",
            "Subscribers dropped for not keeping up; they resume from the event log",
            delivery.subscribers_dropped.clone(),
        );
        registry.register(
            "sse_frames_encoded",
            "Live events encoded as an SSE frame: once per event, shared by its streams",
            delivery.sse_frames_encoded.clone(),
        );
        registry.register(
            "sse_events_sent",
            "Live and replayed events sent on SSE streams, one per event and stream",
            delivery.sse_events_sent.clone(),
        );
        registry.register(
            "stream_credential_checks",
            "Credentials of open SSE streams authenticated again",
            delivery.stream_credential_checks.clone(),
        );
        registry.register(
            "mail_sent",
            "E-mails accepted by the SMTP server",
            delivery.mail_sent.clone(),
        );
        registry.register(
            "mail_failed",
            "E-mail send attempts that failed",
            delivery.mail_failed.clone(),
        );
        registry.register(
            "mail_retried",
            "Failed e-mails scheduled for another attempt",
            delivery.mail_retried.clone(),
        );
        registry.register(
            "mail_dead",
            "E-mails given up after email.max_attempts",
            delivery.mail_dead.clone(),
        );
        registry.register(
            "outbox_depth",
            "E-mails waiting in the outbox (pending), as the worker last counted",
            delivery.outbox_depth.clone(),
        );
        Metrics {
            delivery,
            registry,
            requests,
            latency,
            writer_queue_depth,
            commit_batch,
            group_reruns,
            batch_run_writes,
        }
    })
}

/// Records one answered REST call.
pub fn record_call(method: &'static str, status: u16, elapsed: Duration) {
    let m = metrics();
    let labels = CallLabels { method, status };
    m.requests.get_or_create(&labels).inc();
    m.latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
}

/// Records the size of one committed group.
pub fn record_commit_batch(writes: usize) {
    metrics().commit_batch.observe(writes as f64);
}

/// Records one store call of a batch's run of adds, `writes` drafts long (`methods::batch`).
pub fn record_batch_run(writes: usize) {
    metrics().batch_run_writes.observe(writes as f64);
}

/// Counts a group of inserts that had to run again with savepoints (`store::sqlite`).
pub fn record_group_rerun() {
    metrics().group_reruns.inc();
}

/// Groups of inserts run again so far (process-wide).
pub fn group_reruns() -> u64 {
    metrics().group_reruns.get()
}

/// The number of open event streams.
pub fn set_streams(n: usize) {
    metrics()
        .delivery
        .streams
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn record_subscriber_dropped() {
    metrics().delivery.subscribers_dropped.inc();
}

/// A live event's SSE frame was built (once per event, whatever the number of streams).
pub fn record_sse_frame_encoded() {
    metrics().delivery.sse_frames_encoded.inc();
}

/// An event went out on one SSE stream.
pub fn record_sse_event_sent() {
    metrics().delivery.sse_events_sent.inc();
}

/// An open SSE stream authenticated its credential again.
pub fn record_stream_credential_check() {
    metrics().delivery.stream_credential_checks.inc();
}

/// One mail's fate after an attempt: `sent`, or failed and then `retried` or `dead`.
pub fn record_mail(outcome: MailOutcome, mails: u64) {
    let d = &metrics().delivery;
    match outcome {
        MailOutcome::Sent => {
            d.mail_sent.inc_by(mails);
        }
        MailOutcome::Retried => {
            d.mail_failed.inc_by(mails);
            d.mail_retried.inc_by(mails);
        }
        MailOutcome::Dead => {
            d.mail_failed.inc_by(mails);
            d.mail_dead.inc_by(mails);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOutcome {
    Sent,
    Retried,
    Dead,
}

/// Pending outbox rows, as counted by the e-mail worker.
pub fn set_outbox_depth(n: i64) {
    metrics().delivery.outbox_depth.set(n);
}

/// The exposition text, with the writer queue depth sampled now.
pub fn render(writer_queue_depth: usize) -> String {
    let m = metrics();
    m.writer_queue_depth
        .set(i64::try_from(writer_queue_depth).unwrap_or(i64::MAX));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
    out
}
