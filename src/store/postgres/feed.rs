//! The LISTEN task: every committed event, written by any instance, reaches this instance's
//! [`Hub`] through here and through nothing else.
//!
//! One dedicated connection (outside the pool) listens on [`EVENTS_CHANNEL`]. On a
//! notification, every [`SAFETY_NET`] (a notification can be lost with its connection), and
//! right after (re)connecting, it reads the log after the last id it published, in id order,
//! and publishes that. Ids become visible in id order (see `store::postgres`), so reading
//! "after the last id" never skips an event that commits later. A lost connection is retried
//! with a growing pause, and `/healthz` reports the outage meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{FromRow, Health, LoggedEvent, EVENTS_CHANNEL};
use crate::store::hub::Hub;

/// How often the log is read without a notification.
pub const SAFETY_NET: Duration = Duration::from_secs(1);
/// Events read per query while catching up.
const PAGE: i64 = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs until aborted (when the store is dropped). `last` is the event id this instance
/// starts after: the log's head when the store opened.
pub(super) async fn run(
    config: tokio_postgres::Config,
    hub: Arc<Hub>,
    health: Arc<Health>,
    mut last: i64,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        let error = match listen(&config, &hub, &health, &mut last).await {
            Ok(()) => "the connection closed".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %error, "the database's event feed is down; reconnecting");
        Health::set(
            &health.listen,
            Some(format!("database unavailable: {error}")),
        );
        if started.elapsed() > BACKOFF_MAX {
            // The connection had been up for a while: start the pauses over.
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's life: connect, LISTEN, then catch up on every wake-up until the
/// connection fails.
async fn listen(
    config: &tokio_postgres::Config,
    hub: &Hub,
    health: &Health,
    last: &mut i64,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (wake, mut woken) = mpsc::channel::<()>(1);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    // Full means a wake-up is pending already; one read covers both.
                    let _ = wake.try_send(());
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
        // The stream ended: the connection closed.
        drop(wake);
        futures_util::future::pending::<tokio_postgres::Error>().await
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))
            .await?;
        let stmt = client
            .prepare(
                "SELECT id, user_id, kind, payload FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .await?;
        Health::set(&health.listen, None);
        loop {
            loop {
                let rows = client.query(&stmt, &[&*last, &PAGE]).await?;
                let mut events = Vec::with_capacity(rows.len());
                for row in &rows {
                    *last = row.get(0);
                    if let Some(event) = LoggedEvent::from_row(row)?.0 {
                        events.push(Arc::new(event));
                    }
                }
                hub.publish(&events);
                if (rows.len() as i64) < PAGE {
                    break;
                }
            }
            tokio::select! {
                w = woken.recv() => {
                    if w.is_none() {
                        // The driver is gone: so is the connection. The next query says why.
                        client.simple_query("SELECT 1").await?;
                        return Ok(());
                    }
                }
                _ = tokio::time::sleep(SAFETY_NET) => {}
            }
        }
    }
    .await;
    driver.abort();
    result
}
