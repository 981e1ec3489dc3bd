//! Structured logs on stderr, as text or JSON lines.
//!
//! Lines are formatted on the calling thread and written by a dedicated thread
//! (`tracing-appender`'s non-blocking writer): a synchronous `write(2)` to stderr per request
//! halved the server's throughput (issue 15). The writer is not lossy: when its queue of
//! [`LOG_QUEUE_LINES`] lines is full, callers wait, so a slow log reader slows the server down
//! rather than losing lines or growing memory without bound.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
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
        // The current span (the request's id) is enough: the default also repeats it in a
        // list of every span entered, serialising the same fields twice per line.
        builder.json().with_span_list(false).try_init()
    } else {
        builder.try_init()
    };
    // Another subscriber was already installed (tests call init more than once): this writer is
    // unused, and its thread may stop.
    LogGuard {
        _worker: installed.is_ok().then_some(guard),
    }
}
