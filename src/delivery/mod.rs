//! Delivery: how a stored change reaches people (issue 12; DESIGN.md "Delivery").
//!
//! The event log itself is storage: its kinds and payloads are `store::event`, and the hub the
//! store feeds after each commit is `store::hub`. This module holds the channels that read it:
//! - [`sse`]: `GET /events`, the Server-Sent Events stream: replay from the log, then live.
//! - [`pull`]: the Push&Pull endpoints `/subws/` and `/sub/` for Bitrix24's PullClient.
//! - [`mail`]: composing the e-mail of D11-D14 and the signed one-click unsubscribe link.
//! - [`outbox`]: the e-mail worker that drains the outbox over SMTP, and the pruner of old
//!   events and outbox rows.

pub mod mail;
pub mod outbox;
pub mod pull;
pub mod sse;
