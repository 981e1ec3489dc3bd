//! Structured logs on stderr, as text or JSON lines.
//!
//! Lines are formatted on the calling thread and written by a dedicated thread
//! (`tracing-appender`'s non-blocking writer): a synchronous `write(2)` to stderr per request
//! halved the server's throughput (issue 15). The writer is not lossy: when its queue of
//! [`LOG_QUEUE_LINES`] lines is full, callers wait, so a slow log reader slows the server down
//! rather than losing lines or growing memory without bound.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Lines that may wait for the log thread (a line is a few hundred bytes, so a few MB at most).
pub const LOG_QUEUE_LINES: usize = 16 * 1024;

/// Keeps the log thread alive; dropping it writes out the queued lines and stops the thread.
/// Hold it until the process ends.
#[must_use = "dropping the guard stops the log thread"]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

pub fn init(cfg: &LogConfig) -> LogGuard {
    let filter = EnvFilter::try_new(&cfg.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("imnotify-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let installed = if cfg.format == "json" {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines::new(SystemTime))
            .try_init()
    } else {
        builder.try_init()
    };
    // Another subscriber was already installed (tests call init more than once): this writer is
    // unused, and its thread may stop.
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}

/// JSON log lines, one object per event, the shape tracing-subscriber's own JSON format writes
/// with `with_span_list(false)`:
/// `{"timestamp":"…","level":"INFO","fields":{"message":"rest call",…},"target":"…",`
/// `"span":{"request_id":"…",…,"name":"request"}}`, `span` being the current span, if any.
///
/// Written straight into one string: tracing-subscriber's formatter collects the event's
/// fields through serde and parses the span's fields (already JSON text, see [`JsonFields`])
/// back into a tree on every line, which made the per-call line 6 % of a durable add
/// (issue 15). Here the span's text is spliced in as it is.
pub struct JsonLines<T> {
    timer: T,
}

impl<T: FormatTime> JsonLines<T> {
    pub fn new(timer: T) -> JsonLines<T> {
        JsonLines { timer }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use tracing_log::NormalizeEvent;
        // Records bridged from the `log` crate carry their own level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut line = String::with_capacity(320);
        let mut timestamp = String::with_capacity(32);
        self.timer.format_time(&mut Writer::new(&mut timestamp))?;
        line.push_str("{\"timestamp\":");
        push_json_str(&mut line, &timestamp);
        line.push_str(",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"fields\":{");
        event.record(&mut FieldsVisitor {
            out: &mut line,
            first: true,
        });
        line.push_str("},\"target\":");
        push_json_str(&mut line, meta.target());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                line.push_str(",\"span\":{");
                // JsonFields writes an object, `{…}`, or nothing for a span without fields.
                let inner = fields
                    .fields
                    .trim()
                    .strip_prefix('{')
                    .and_then(|f| f.strip_suffix('}'))
                    .unwrap_or_default();
                if !inner.is_empty() {
                    line.push_str(inner);
                    line.push(',');
                }
                line.push_str("\"name\":");
                push_json_str(&mut line, span.name());
                line.push('}');
            }
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// An event's fields as JSON members, in the order they were recorded.
struct FieldsVisitor<'a> {
    out: &'a mut String,
    first: bool,
}

impl FieldsVisitor<'_> {
    fn key(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        push_json_str(self.out, field.name());
        self.out.push(':');
    }
}

impl Visit for FieldsVisitor<'_> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's form: shortest round trip, and null for a non-finite number.
        match serde_json::Number::from_f64(value) {
            Some(n) => {
                let _ = write!(self.out, "{n}");
            }
            None => self.out.push_str("null"),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        push_json_str(self.out, &format!("{value:?}"));
    }
}

/// `s` as a JSON string with serde_json's escaping, as tracing-subscriber's lines have it.
fn push_json_str(out: &mut String, s: &str) {
    // serde_json writes valid UTF-8 into the buffer; a String's bytes stay UTF-8.
    let mut buf = std::mem::take(out).into_bytes();
    let _ = serde_json::to_writer(&mut buf, s);
    *out = String::from_utf8(buf).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A clock that always reads the same, so two formatters' lines can be compared whole.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str("2026-11-30T08:00:00.123456Z")
        }
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn emit() {
        let span = tracing::info_span!(
            "request",
            request_id = %"00000000000000a1",
            client_request_id = Some("ab\"c"),
            http_method = %"POST"
        );
        let _in = span.enter();
        tracing::info!(
            method = "im.notify.system.add",
            status = 200u16,
            "rest call"
        );
        tracing::warn!(
            len = 4097i64,
            ratio = 0.25,
            nan = f64::NAN,
            ok = true,
            text = "tab\t \u{1} \"q\" é \u{2028} </",
            debug = ?vec!["a", "b"],
            "url \"too\" long"
        );
        let _inner = tracing::info_span!("inner").entered();
        tracing::error!(code = -3i64, "no fields on the span");
        drop(_inner);
        drop(_in);
        tracing::info!("outside any span");
    }

    fn lines(make: impl FnOnce(Sink) -> Box<dyn Subscriber + Send + Sync>) -> String {
        let sink = Sink::default();
        tracing::subscriber::with_default(make(sink.clone()), emit);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_are_the_bytes_tracing_subscriber_writes() {
        let ours = lines(|sink| {
            Box::new(
                tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_writer(move || sink.clone())
                    .fmt_fields(JsonFields::new())
                    .event_format(JsonLines::new(Fixed))
                    .finish(),
            )
        });
        let theirs = lines(|sink| {
            Box::new(
                tracing_subscriber::fmt()
                    .with_ansi(false)
                    .with_writer(move || sink.clone())
                    .json()
                    .with_span_list(false)
                    .with_timer(Fixed)
                    .finish(),
            )
        });
        assert_eq!(ours.lines().count(), 4, "{ours}");
        for (a, b) in ours.lines().zip(theirs.lines()) {
            assert_eq!(a, b);
        }
        assert_eq!(ours, theirs);
    }
}
