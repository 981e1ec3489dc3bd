//! The e-mail worker that drains the outbox, and the pruner of old events and outbox rows.
//!
//! The worker wakes every second, takes the rows that are due (D10: `email.delay_seconds` after
//! the add, or a retry's time), and for each:
//! - skips it when its notification was read, deleted or replaced, or the recipient is no longer
//!   mailable (inactive, no address, e-mail off: D13);
//! - otherwise groups it with the same recipient's due rows of the same stored tag (D12), sends
//!   one mail per group through lettre over SMTP, and marks the rows sent only after the server
//!   accepted the mail. A crash in between sends that mail again on restart, with the same
//!   `Message-ID`: at least once, never lost.
//!
//! A failed send is retried after a capped exponential backoff with jitter; after
//! `email.max_attempts` failures the row is dead (`imnotify outbox retry ID` revives it). The REST
//! call that added the notification never waits for any of this.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rand::Rng;

use super::mail::{self, MailSettings};
use crate::clock::Clock;
use crate::config::{EmailConfig, EventsConfig, SmtpConfig, SmtpTls};
use crate::metrics::{self, MailOutcome};
use crate::store::{DueMail, MailUpdate, Store};
use crate::toolkit::mail::CapturedMail;
use crate::toolkit::Toolkit;

/// Due rows taken per round; a full round is followed by the next at once.
const BATCH: usize = 100;
/// How often the worker looks for due rows.
const POLL: Duration = Duration::from_secs(1);
/// A send that takes longer than this counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often old events and outbox rows are pruned, and how many rows one statement deletes.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_CHUNK: usize = 1000;

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Where composed mails go.
pub enum Sink {
    /// Sent over SMTP.
    Smtp(Transport),
    /// Kept in the toolkit's mail capture (`email.capture`).
    Capture(Arc<Toolkit>),
}

/// The SMTP transport of the configuration (`smtp.*`).
pub fn transport(smtp: &SmtpConfig) -> anyhow::Result<Transport> {
    let host = smtp.host.clone().unwrap_or_default();
    let builder = match smtp.tls {
        SmtpTls::None => Transport::builder_dangerous(host),
        SmtpTls::Starttls => Transport::starttls_relay(&host)?,
        SmtpTls::Tls => Transport::relay(&host)?,
    };
    let mut builder = builder
        .port(smtp.port())
        .timeout(Some(Duration::from_secs(30)));
    if let Some(user) = smtp.username.clone().filter(|u| !u.is_empty()) {
        builder = builder.credentials(Credentials::new(
            user,
            smtp.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// The wait before attempt `failures + 1`: `base * 2^failures` capped at `max`, of which a
/// random half is waited ("equal jitter"), so that mails failing together spread out.
pub fn backoff(failures: i64, base: u64, max: u64, rng: &mut impl Rng) -> u64 {
    let exp = u32::try_from(failures.clamp(0, 32)).unwrap_or(32);
    let full = base
        .max(1)
        .saturating_mul(1u64 << exp.min(40))
        .min(max.max(1));
    let half = full / 2;
    full - half + rng.random_range(0..=half)
}

/// Runs the worker until the task is dropped.
pub async fn run(
    store: Arc<dyn Store>,
    clock: Clock,
    sink: Sink,
    settings: MailSettings,
    config: EmailConfig,
) {
    loop {
        let full = match round(store.as_ref(), &clock, &sink, &settings, &config).await {
            Ok(n) => n == BATCH,
            Err(e) => {
                tracing::error!(error = %e, "e-mail worker round failed");
                false
            }
        };
        if let Ok(depth) = store.outbox_depth().await {
            metrics::set_outbox_depth(depth);
        }
        if !full {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// One pass over the due rows; returns how many were taken.
async fn round(
    store: &dyn Store,
    clock: &Clock,
    sink: &Sink,
    settings: &MailSettings,
    config: &EmailConfig,
) -> Result<usize, crate::store::StoreError> {
    let now = clock.unix();
    let due = store.due_mails(now, BATCH).await?;
    let taken = due.len();
    let mut skipped = Vec::new();
    let mut groups: BTreeMap<(i64, Option<String>, i64), Vec<&DueMail>> = BTreeMap::new();
    for row in &due {
        if row.notification.is_none() || row.recipient.is_none() {
            skipped.push((row.outbox_id, MailUpdate::Skipped { at: now }));
            continue;
        }
        // D12: one mail per (recipient, stored tag); untagged rows each their own.
        let key = match &row.tag {
            Some(tag) => (row.user_id, Some(tag.clone()), 0),
            None => (row.user_id, None, row.outbox_id),
        };
        groups.entry(key).or_default().push(row);
    }
    if !skipped.is_empty() {
        store.update_mails(skipped).await?;
    }
    for ((user_id, _, _), rows) in groups {
        let recipient = rows[0].recipient.clone().expect("filtered above");
        let outcome = match mail::compose(settings, &recipient, user_id, &rows, clock.now()) {
            Ok(composed) => match sink {
                Sink::Smtp(transport) => {
                    match tokio::time::timeout(SEND_TIMEOUT, transport.send(composed.message)).await
                    {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err((e.to_string(), e.is_permanent())),
                        Err(_) => Err(("timed out".to_owned(), false)),
                    }
                }
                Sink::Capture(toolkit) => {
                    toolkit
                        .mail
                        .push(captured(composed, user_id, &rows, clock.now()));
                    Ok(())
                }
            },
            // A message that cannot be built (a malformed address) never will be.
            Err(e) => Err((e, true)),
        };
        let now = clock.unix();
        let count = rows.len() as u64;
        let updates: Vec<(i64, MailUpdate)> = match outcome {
            Ok(()) => {
                metrics::record_mail(MailOutcome::Sent, count);
                rows.iter()
                    .map(|r| (r.outbox_id, MailUpdate::Sent { at: now }))
                    .collect()
            }
            Err((error, permanent)) => {
                tracing::warn!(user_id, error = %error, "sending an e-mail failed");
                let mut rng = rand::rng();
                rows.iter()
                    .map(|r| {
                        let failures = r.attempts + 1;
                        if permanent || failures >= config.max_attempts {
                            metrics::record_mail(MailOutcome::Dead, 1);
                            (
                                r.outbox_id,
                                MailUpdate::Dead {
                                    at: now,
                                    error: error.clone(),
                                },
                            )
                        } else {
                            metrics::record_mail(MailOutcome::Retried, 1);
                            let wait = backoff(
                                r.attempts,
                                config.retry_base_seconds,
                                config.retry_max_seconds,
                                &mut rng,
                            );
                            let due_at =
                                now.saturating_add(i64::try_from(wait).unwrap_or(i64::MAX));
                            (
                                r.outbox_id,
                                MailUpdate::Retry {
                                    due_at,
                                    error: error.clone(),
                                },
                            )
                        }
                    })
                    .collect()
            }
        };
        // Marked per group, right after its send: a crash re-sends at most this one mail.
        store.update_mails(updates).await?;
    }
    Ok(taken)
}

/// A composed mail as the capture keeps it: the headers of `mail::CAPTURED_HEADERS` and both
/// parts.
fn captured(c: mail::Composed, user_id: i64, rows: &[&DueMail], at: f64) -> CapturedMail {
    let h = c.message.headers();
    let headers = mail::CAPTURED_HEADERS
        .iter()
        .filter_map(|name| h.get_raw(name).map(|v| ((*name).to_owned(), v.to_owned())))
        .collect();
    let mut notification_ids: Vec<i64> = rows.iter().map(|r| r.notification_id).collect();
    notification_ids.sort_unstable_by(|a, b| b.cmp(a));
    CapturedMail {
        id: 0,
        at,
        user_id,
        notification_ids,
        headers,
        text: c.text,
        html: c.html,
    }
}

/// Deletes events older than `events.retention_hours` and finished outbox rows older than
/// `email.keep_hours`, a bounded chunk per statement so that the writer is never held long.
pub async fn prune(store: Arc<dyn Store>, clock: Clock, events: EventsConfig, email: EmailConfig) {
    // Not at start: the first minute is the server's own.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    loop {
        tick.tick().await;
        let now = clock.unix();
        let before = now.saturating_sub(events.retention_hours.max(0).saturating_mul(3600));
        loop {
            match store.prune_events(before, PRUNE_CHUNK).await {
                Ok(n) if n == PRUNE_CHUNK => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning events failed");
                    break;
                }
            }
        }
        let before = now.saturating_sub(email.keep_hours.max(0).saturating_mul(3600));
        loop {
            match store.prune_outbox(before, PRUNE_CHUNK).await {
                Ok(n) if n == PRUNE_CHUNK => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning the outbox failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 0..40 {
            let w = backoff(failures, 30, 3600, &mut rng);
            let full = (30u64 << failures.min(20)).min(3600);
            assert!(w >= full - full / 2 && w <= full, "{failures}: {w}");
        }
        assert_eq!(backoff(0, 0, 0, &mut rng), 1);
    }
}
