//! Delivery: how a stored change reaches people (issue 12; DESIGN.md "Delivery").
//!
//! - [`event`]: the event kinds and payloads, written to the `events` log by the store in the
//!   same transaction as each change.
//! - [`hub`]: the in-process fan-out of committed events, by user id.
//! - [`sse`]: `GET /events`, the Server-Sent Events stream: replay from the log, then live.
//! - [`mail`]: composing the e-mail of D11-D14 and the signed one-click unsubscribe link.
//! - [`outbox`]: the e-mail worker that drains the outbox over SMTP, and the pruner of old
//!   events and outbox rows.

pub mod event;
pub mod hub;
pub mod mail;
pub mod outbox;
pub mod sse;

/// The current Unix time for delivery's own bookkeeping (event times, due mails, retention).
/// The one place this module reads the clock.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}
