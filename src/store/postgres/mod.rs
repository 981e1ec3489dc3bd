//! The PostgreSQL backend (issue 14), chosen with `--database-url postgres://…`.
//!
//! Several imnotify instances may share one database, so nothing that decides who may call or
//! what was stored is kept in process: every read goes to the database (no webhook cache), and
//! settings (member_id, the Push&Pull channel key, session secrets) live in `settings`.
//!
//! - **Durability.** Every write is one transaction on a pooled connection; its result is
//!   returned only after `COMMIT` (with `synchronous_commit` on, the WAL is flushed first).
//! - **TAG replace.** An add first takes its recipient's `notify_chats` row (`INSERT … ON
//!   CONFLICT DO UPDATE`, which locks it until COMMIT), so two adds for one recipient, on any
//!   connection of any instance, run one after the other: the second deletes the first's row
//!   and inserts a newer one, and at most one row per (recipient, stored tag) remains.
//! - **Event ids in commit order.** A transaction takes its event ids last, from the one-row
//!   `event_counter` (`UPDATE … RETURNING`). The row lock is held until COMMIT, so the next
//!   transaction to take ids waits until this one has committed and is visible: an event with a
//!   larger id is never visible before one with a smaller id, and a reader that resumes after
//!   id N (`Last-Event-ID`, Push&Pull `mid`) cannot skip an event that commits later with a
//!   smaller id. The lock covers only the event insert and the commit.
//! - **The hub.** The same transaction calls `pg_notify('imnotify_events')`, which PostgreSQL
//!   delivers only on COMMIT. Each instance keeps one LISTEN connection (`feed`); on a
//!   notification, every second as a safety net, and after reconnecting, it reads the events
//!   after the last id it published and publishes them into its local [`Hub`]. The writer never
//!   publishes itself: one path, so no duplicates.
//! - **Outbox.** `due_mails` claims due rows on a connection of its own: `FOR UPDATE SKIP
//!   LOCKED`, then a session advisory lock per row, held until the worker's next round. Two
//!   instances never take the same row, and the rows of an instance that dies are due again
//!   at once, as on SQLite (its connection ends and the locks with it).
//! - **Failure.** Pool waits and connects time out after [`POOL_TIMEOUT`]: a call fails with a
//!   `Backend` error (500, `INTERNAL_SERVER_ERROR`) rather than hang, `/healthz` reports the
//!   outage, and new connections are made once the database is back.
//! - No TLS to the database: connect over loopback or a unix socket (`host=/path`).

mod feed;
mod lifecycle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::event::{Event, Kind};
use super::hub::{Hub, HubLimits};
use super::{
    AccessGrant, App, DueMail, MailText, MailUpdate, NewApp, NewTokens, Notification, NotifyChat,
    OutboxRow, Recipient, Session, Store, StoreError, StoreResult, User, UserRecord, UserUpdate,
    Webhook, WebhookInfo,
};
use crate::clock::Clock;
use crate::domain::directory::UserQuery;
use crate::domain::inbox::{Cursor, ReadRequest, SearchRequest, TagField};
use crate::domain::notify::Draft;
use crate::limits::RateOverride;

/// The migrations in `migrations/postgres/`, applied in order; the list is positional (the
/// number applied is kept in `schema_version`).
const MIGRATIONS: &[&str] = &[include_str!("../../../migrations/postgres/0001_init.sql")];

/// Longest wait for a pooled connection, for a new connection, and for a connection's check:
/// with the database gone, a call fails after this rather than hang.
pub const POOL_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections per instance. PostgreSQL's default `max_connections` is 100; three instances
/// with their LISTEN connections stay well inside it.
const POOL_SIZE: usize = 16;
/// The first key of the advisory locks that claim outbox rows (the second is the row's id).
pub const MAIL_CLAIM_LOCK: i32 = 0x6f62_6f78; // "obox"

/// See the SQLite backend's constant of the same name.
const CAP_TRIM_MAX: i64 = 1000;
/// How often a transaction that lost a deadlock or a serialization check is tried again.
const RETRIES: usize = 3;
/// The NOTIFY channel of committed events.
pub const EVENTS_CHANNEL: &str = "imnotify_events";
/// The key of the advisory lock that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x696d_6e6f_7469_6679; // "imnotify"

/// What the deployment chooses; the same as SQLite's `DeliveryOptions` and `OpenOptions`.
pub struct PgOptions {
    pub mail_delay: Option<i64>,
    pub hub: HubLimits,
    pub clock: Clock,
    /// `limits.max_notifications_per_user`; 0 means no cap.
    pub max_notifications_per_user: u64,
}

pub struct PgStore {
    pool: Pool,
    hub: Arc<Hub>,
    health: Arc<Health>,
    notification_cap: i64,
    mail_delay: Option<i64>,
    clock: Clock,
    feeder: tokio::task::JoinHandle<()>,
    /// The outbox worker's own connection: its advisory locks are the claims (see
    /// `lifecycle::claim_mails`). Made on first use and again after it broke.
    claims: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    config: tokio_postgres::Config,
    /// The cluster's rate and operating buckets (`store::pg_limits`), on the same pool.
    limits: Arc<crate::store::pg_limits::PgLimits>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}

/// What `/healthz` reports: the last use of the pool and the LISTEN connection.
#[derive(Default)]
pub(crate) struct Health {
    pool: Mutex<Option<String>>,
    listen: Mutex<Option<String>>,
}

impl Health {
    fn set(slot: &Mutex<Option<String>>, error: Option<String>) {
        *slot.lock().expect("health poisoned") = error;
    }
}

/// A failed transaction: the database's error (perhaps worth a retry), or the store's own.
enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

type TxResult<T> = Result<T, Fail>;

/// The events a transaction records; they get their ids and go into the log just before the
/// commit (see the module comment).
pub(crate) struct Events {
    list: Vec<(i64, Kind, String)>,
    now: i64,
}

impl Events {
    fn record(&mut self, user_id: i64, kind: Kind, payload: String) {
        self.list.push((user_id, kind, payload));
    }
}

/// Runs `$body` (an expression using `$tx` and `$ev`) in a transaction, writes the events it
/// recorded, commits, and returns its value. A deadlock or serialization failure runs it
/// again, up to [`RETRIES`] times; `$body` must therefore only borrow its inputs.
macro_rules! transaction {
    ($self:ident, |$tx:ident, $ev:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = $self.client().await?;
            let result: TxResult<_> = async {
                let $tx = client.transaction().await?;
                #[allow(unused_mut)]
                let mut $ev = Events {
                    list: Vec::new(),
                    now: $self.clock.unix(),
                };
                let value = { $body };
                let value = value?;
                lifecycle::write_events(&$tx, &mut $ev).await?;
                $tx.commit().await?;
                Ok(value)
            }
            .await;
            match $self.outcome(result) {
                Err(Some(e)) if attempt <= RETRIES && retryable(&e) => continue,
                Err(Some(e)) => break Err($self.db_error(e)),
                Err(None) => unreachable!(),
                Ok(v) => break v,
            }
        }
    }};
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

impl PgStore {
    /// Connects to `url`, applies the migrations (one instance at a time, under an advisory
    /// lock) and starts the LISTEN task that feeds the hub.
    pub async fn open(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("database_url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("imnotify");
        }
        // `CREATE ... IF NOT EXISTS` at every start and admin command would otherwise log a
        // NOTICE per existing table through tokio_postgres; a URL's own `options` wins.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        config.keepalives(true);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("database pool: {e}")))?;
        {
            let mut client = pool
                .get()
                .await
                .map_err(|e| StoreError::Backend(format!("connecting to the database: {e}")))?;
            migrate(&mut client)
                .await
                .map_err(|e| StoreError::Backend(format!("migrating the database: {e}")))?;
        }
        let limits = crate::store::pg_limits::PgLimits::open(pool.clone())
            .await
            .map_err(|e| StoreError::Backend(format!("creating the limit tables: {e}")))?;
        let head: i64 = pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .query_one("SELECT last_id FROM event_counter", &[])
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .get(0);
        let hub = Hub::new(options.hub);
        let health = Arc::new(Health::default());
        let feeder = tokio::spawn(feed::run(config.clone(), hub.clone(), health.clone(), head));
        Ok(PgStore {
            pool,
            hub,
            health,
            notification_cap: i64::try_from(options.max_notifications_per_user).unwrap_or(i64::MAX),
            mail_delay: options.mail_delay,
            clock: options.clock,
            feeder,
            claims: tokio::sync::Mutex::new(None),
            config,
            limits,
        })
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        match self.pool.get().await {
            Ok(c) => Ok(c),
            Err(e) => {
                let message = format!("database unavailable: {e}");
                Health::set(&self.health.pool, Some(message.clone()));
                Err(StoreError::Backend(message))
            }
        }
    }

    /// Sorts a transaction's result: `Ok` with the value or the store's own error, or the
    /// database's error to retry or report. Records the database's state for `/healthz`.
    fn outcome<T>(
        &self,
        result: TxResult<T>,
    ) -> Result<StoreResult<T>, Option<tokio_postgres::Error>> {
        match result {
            Ok(v) => {
                Health::set(&self.health.pool, None);
                Ok(Ok(v))
            }
            Err(Fail::Store(e)) => Ok(Err(e)),
            Err(Fail::Db(e)) => Err(Some(e)),
        }
    }

    fn db_error(&self, e: tokio_postgres::Error) -> StoreError {
        if e.is_closed() || e.code().is_none() {
            Health::set(
                &self.health.pool,
                Some(format!("database unavailable: {e}")),
            );
        }
        StoreError::Backend(format!("database: {e}"))
    }

    /// One read on a pooled connection.
    async fn read<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<T>>
    where
        T: for<'r> FromRow<'r>,
    {
        let client = self.client().await?;
        let result = async {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, params).await
        }
        .await;
        match result {
            Ok(rows) => {
                Health::set(&self.health.pool, None);
                rows.iter()
                    .map(T::from_row)
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.db_error(e))
            }
            Err(e) => Err(self.db_error(e)),
        }
    }

    async fn read_opt<T>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<T>>
    where
        T: for<'r> FromRow<'r>,
    {
        Ok(self.read(sql, params).await?.into_iter().next())
    }

    /// One statement in its own transaction (autocommit); returns the rows it touched.
    async fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        transaction!(self, |tx, ev| {
            let stmt = tx.prepare_cached(sql).await?;
            TxResult::Ok(tx.execute(&stmt, params).await?)
        })
    }
}

/// Applies the migrations past `schema_version`, each in its own transaction, under an
/// advisory lock so that instances starting together do not both apply one.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .or_else(|e| {
            // Two instances creating it at once: one wins, the other sees it exists.
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
    loop {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let version: i64 = match tx
            .query_opt("SELECT version FROM schema_version", &[])
            .await?
        {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        let Some(sql) = MIGRATIONS.get(version.max(0) as usize) else {
            return tx.commit().await;
        };
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&(version.max(0) + 1)],
        )
        .await?;
        tx.commit().await?;
    }
}

/// A value made from a result row.
trait FromRow<'r>: Sized {
    fn from_row(r: &'r Row) -> Result<Self, tokio_postgres::Error>;
}

impl FromRow<'_> for i64 {
    fn from_row(r: &Row) -> Result<i64, tokio_postgres::Error> {
        r.try_get(0)
    }
}

impl FromRow<'_> for String {
    fn from_row(r: &Row) -> Result<String, tokio_postgres::Error> {
        r.try_get(0)
    }
}

impl FromRow<'_> for bool {
    fn from_row(r: &Row) -> Result<bool, tokio_postgres::Error> {
        r.try_get(0)
    }
}

impl FromRow<'_> for User {
    fn from_row(r: &Row) -> Result<User, tokio_postgres::Error> {
        Ok(User {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            last_name: r.try_get(2)?,
            email: r.try_get(3)?,
            active: r.try_get(4)?,
            is_admin: r.try_get(5)?,
        })
    }
}

impl FromRow<'_> for UserRecord {
    fn from_row(r: &Row) -> Result<UserRecord, tokio_postgres::Error> {
        Ok(UserRecord {
            user: User::from_row(r)?,
            created_at: r.try_get(6)?,
        })
    }
}

impl FromRow<'_> for Notification {
    fn from_row(r: &Row) -> Result<Notification, tokio_postgres::Error> {
        Ok(Notification {
            id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            author_id: r.try_get(2)?,
            notify_type: r.try_get(3)?,
            module: r.try_get(4)?,
            event: r.try_get(5)?,
            text: r.try_get(6)?,
            tag: r.try_get(7)?,
            sub_tag: r.try_get(8)?,
            attach: r.try_get(9)?,
            buttons: r.try_get(10)?,
            read: r.try_get(11)?,
            created_at: r.try_get(12)?,
        })
    }
}

fn rate_from(r: &Row, per_second: usize) -> Result<RateOverride, tokio_postgres::Error> {
    Ok(RateOverride {
        per_second: r.try_get(per_second)?,
        burst: r
            .try_get::<_, Option<i64>>(per_second + 1)?
            .map(|b| b.clamp(0, u32::MAX as i64) as u32),
    })
}

fn burst(rate: &RateOverride) -> Option<i64> {
    rate.burst.map(i64::from)
}

impl FromRow<'_> for App {
    fn from_row(r: &Row) -> Result<App, tokio_postgres::Error> {
        let scopes: String = r.try_get(4)?;
        let allowed: Option<String> = r.try_get(6)?;
        Ok(App {
            id: r.try_get(0)?,
            client_id: r.try_get(1)?,
            secret_hash: r.try_get(2)?,
            name: r.try_get(3)?,
            scopes: split_scopes(&scopes),
            redirect_uri: r.try_get(5)?,
            allowed_users: allowed
                .map(|a| a.split(',').filter_map(|u| u.trim().parse().ok()).collect()),
            active: r.try_get(7)?,
            rate: rate_from(r, 8)?,
        })
    }
}

impl FromRow<'_> for Webhook {
    fn from_row(r: &Row) -> Result<Webhook, tokio_postgres::Error> {
        let scopes: String = r.try_get(3)?;
        Ok(Webhook {
            id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            code_hash: r.try_get(2)?,
            scopes: split_scopes(&scopes),
            rate: rate_from(r, 4)?,
        })
    }
}

impl FromRow<'_> for WebhookInfo {
    fn from_row(r: &Row) -> Result<WebhookInfo, tokio_postgres::Error> {
        let scopes: String = r.try_get(2)?;
        Ok(WebhookInfo {
            id: r.try_get(0)?,
            user_id: r.try_get(1)?,
            scopes: split_scopes(&scopes),
            active: r.try_get(3)?,
            created_at: r.try_get(4)?,
            rate: rate_from(r, 5)?,
        })
    }
}

impl FromRow<'_> for OutboxRow {
    fn from_row(r: &Row) -> Result<OutboxRow, tokio_postgres::Error> {
        Ok(OutboxRow {
            id: r.try_get(0)?,
            notification_id: r.try_get(1)?,
            user_id: r.try_get(2)?,
            tag: r.try_get(3)?,
            state: r.try_get(4)?,
            attempts: r.try_get(5)?,
            due_at: r.try_get(6)?,
            last_error: r.try_get(7)?,
            created_at: r.try_get(8)?,
            done_at: r.try_get(9)?,
        })
    }
}

impl FromRow<'_> for NotifyChat {
    fn from_row(r: &Row) -> Result<NotifyChat, tokio_postgres::Error> {
        Ok(NotifyChat {
            chat_id: r.try_get(0)?,
            total: r.try_get(1)?,
            unread: r.try_get(2)?,
        })
    }
}

impl FromRow<'_> for Session {
    fn from_row(r: &Row) -> Result<Session, tokio_postgres::Error> {
        Ok(Session {
            user_id: r.try_get(0)?,
            expires_at: r.try_get(1)?,
        })
    }
}

impl FromRow<'_> for AccessGrant {
    fn from_row(r: &Row) -> Result<AccessGrant, tokio_postgres::Error> {
        Ok(AccessGrant {
            app: App::from_row(r)?,
            user_id: r.try_get(APP_COLUMN_COUNT)?,
            access_expires: r.try_get(APP_COLUMN_COUNT + 1)?,
        })
    }
}

/// An event read back from the log; `None` for a kind this build does not know.
struct LoggedEvent(Option<Event>);

impl FromRow<'_> for LoggedEvent {
    fn from_row(r: &Row) -> Result<LoggedEvent, tokio_postgres::Error> {
        let kind: String = r.try_get(2)?;
        let payload: String = r.try_get(3)?;
        Ok(LoggedEvent(Kind::from_name(&kind).map(|kind| Event {
            id: r.get(0),
            user_id: r.get(1),
            kind,
            payload: payload.into(),
            sse: Default::default(),
        })))
    }
}

impl FromRow<'_> for DueMail {
    fn from_row(r: &Row) -> Result<DueMail, tokio_postgres::Error> {
        let live: Option<bool> = r.try_get(6)?;
        let mailable: Option<bool> = r.try_get(10)?;
        Ok(DueMail {
            outbox_id: r.try_get(0)?,
            notification_id: r.try_get(1)?,
            user_id: r.try_get(2)?,
            tag: r.try_get(3)?,
            sender_name: r.try_get(4)?,
            attempts: r.try_get(5)?,
            notification: match live {
                Some(true) => Some(MailText {
                    text: r.try_get(7)?,
                    text_out: r.try_get(8)?,
                    created_at: r.try_get(9)?,
                }),
                _ => None,
            },
            recipient: match mailable {
                Some(true) => Some(Recipient {
                    email: r.try_get(11)?,
                    name: r.try_get(12)?,
                }),
                _ => None,
            },
        })
    }
}

pub use super::sqlite::split_scopes;

const USER_COLUMNS: &str = "id, name, last_name, email, active, is_admin, created_at";
const APP_COLUMNS: &str =
    "a.id, a.client_id, a.secret_hash, a.name, a.scopes, a.redirect_uri, a.allowed_users, a.active,
     a.rate_per_second, a.rate_burst";
const APP_COLUMN_COUNT: usize = 10;
/// The notification columns in the order `Notification::from_row` reads them.
const NOTIFICATION_COLUMNS: &str = "id, user_id, author_id, notify_type, module, event, text, \
     tag, sub_tag, attach, buttons, is_read, created_at";

fn now_unix_sql() -> &'static str {
    "extract(epoch from now())::bigint"
}

fn allowed_list(app: &NewApp) -> Option<String> {
    app.allowed_users
        .as_ref()
        .map(|u| u.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
}

#[async_trait]
impl Store for PgStore {
    async fn add_notification(&self, draft: Draft, created_at: i64) -> StoreResult<Option<i64>> {
        let (cap, mail_delay) = (self.notification_cap, self.mail_delay);
        transaction!(self, |tx, ev| {
            lifecycle::insert_notification(&tx, &mut ev, &draft, created_at, cap, mail_delay).await
        })
    }

    async fn webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
        self.read(
            "SELECT w.id, w.user_id, w.code_hash, w.scopes, w.rate_per_second, w.rate_burst
               FROM webhooks w JOIN users u ON u.id = w.user_id
              WHERE w.user_id = $1 AND w.active AND u.active ORDER BY w.id",
            &[&user_id],
        )
        .await
    }

    async fn add_user(&self, user: User) -> StoreResult<()> {
        transaction!(self, |tx, ev| lifecycle::insert_user(&tx, &user).await)
    }

    async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        self.read_opt(
            "SELECT id, name, last_name, email, active, is_admin FROM users WHERE id = $1",
            &[&id],
        )
        .await
    }

    async fn add_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
        rate: RateOverride,
    ) -> StoreResult<i64> {
        let scopes = scopes.join(",");
        transaction!(self, |tx, ev| {
            lifecycle::insert_webhook(&tx, user_id, &code_hash, &scopes, &rate).await
        })
    }

    async fn user_count(&self) -> StoreResult<i64> {
        Ok(self
            .read_opt("SELECT COUNT(*) FROM users", &[])
            .await?
            .unwrap_or(0))
    }

    async fn notify_chat(&self, user_id: i64) -> StoreResult<Option<NotifyChat>> {
        self.read_opt(lifecycle::sql::CHAT, &[&user_id]).await
    }

    async fn notification_page(
        &self,
        user_id: i64,
        cursor: Cursor,
        limit: usize,
    ) -> StoreResult<Vec<Notification>> {
        let mut out: Vec<Notification> = Vec::with_capacity(limit);
        let normal_before = match cursor {
            Cursor::Start | Cursor::Confirm(_) => {
                let before = match cursor {
                    Cursor::Confirm(id) => id,
                    _ => i64::MAX,
                };
                out = self
                    .read(
                        &lifecycle::sql::page(true),
                        &[&user_id, &before, &(limit as i64)],
                    )
                    .await?;
                i64::MAX
            }
            Cursor::Normal(id) => id,
        };
        if out.len() < limit {
            let rest: Vec<Notification> = self
                .read(
                    &lifecycle::sql::page(false),
                    &[&user_id, &normal_before, &((limit - out.len()) as i64)],
                )
                .await?;
            out.extend(rest);
        }
        Ok(out)
    }

    async fn notification(&self, user_id: i64, id: i64) -> StoreResult<Option<Notification>> {
        self.read_opt(&lifecycle::sql::one(), &[&id, &user_id])
            .await
    }

    async fn search_notifications(
        &self,
        user_id: i64,
        query: SearchRequest,
    ) -> StoreResult<(Vec<Notification>, Option<i64>)> {
        let (clause, args) = lifecycle::search_filter(user_id, &query);
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_sql()).collect();
        let total = if query.first_page() {
            let count = format!("SELECT COUNT(*) FROM notifications WHERE {clause}");
            Some(self.read_opt::<i64>(&count, &refs).await?.unwrap_or(0))
        } else {
            None
        };
        let before = query.before.unwrap_or(i64::MAX);
        let limit = query.limit as i64;
        let n = refs.len();
        let mut page_refs = refs;
        page_refs.push(&before);
        page_refs.push(&limit);
        let select = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE {clause} AND id < ${} \
             ORDER BY id DESC LIMIT ${}",
            n + 1,
            n + 2
        );
        let rows = self.read(&select, &page_refs).await?;
        Ok((rows, total))
    }

    async fn mark_read(&self, user_id: i64, requests: Vec<ReadRequest>) -> StoreResult<()> {
        transaction!(self, |tx, ev| {
            lifecycle::mark_read_all(&tx, &mut ev, user_id, &requests).await
        })
    }

    async fn delete_own(&self, user_id: i64, id: i64) -> StoreResult<bool> {
        transaction!(self, |tx, ev| {
            lifecycle::delete_own(&tx, &mut ev, user_id, id).await
        })
    }

    async fn delete_by_tag(
        &self,
        field: TagField,
        value: String,
        origin: String,
    ) -> StoreResult<u64> {
        transaction!(self, |tx, ev| {
            lifecycle::delete_by_tag(&tx, &mut ev, field, &value, &origin).await
        })
    }

    async fn confirm(
        &self,
        user_id: i64,
        id: i64,
        value: String,
    ) -> StoreResult<Option<Notification>> {
        transaction!(self, |tx, ev| {
            lifecycle::confirm(&tx, &mut ev, user_id, id, &value).await
        })
    }

    async fn answer(
        &self,
        user_id: i64,
        id: i64,
        text: String,
    ) -> StoreResult<Option<Notification>> {
        transaction!(self, |tx, ev| {
            lifecycle::answer(&tx, &mut ev, user_id, id, &text).await
        })
    }

    fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    fn shared_limits(&self) -> Option<Arc<dyn crate::limits::SharedBuckets>> {
        Some(self.limits.clone())
    }

    async fn events_after(
        &self,
        user_id: i64,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        let rows: Vec<LoggedEvent> = self
            .read(
                "SELECT id, user_id, kind, payload FROM events
                  WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&user_id, &after, &(limit as i64)],
            )
            .await?;
        Ok(rows.into_iter().filter_map(|e| e.0).collect())
    }

    async fn event_head(&self) -> StoreResult<i64> {
        // The counter, not MAX(id): an id taken is committed (the counter's row lock holds to
        // COMMIT), and it stays the head after the log is pruned or reset.
        Ok(self
            .read_opt("SELECT last_id FROM event_counter", &[])
            .await?
            .unwrap_or(0))
    }

    async fn prune_events(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        let n = self
            .exec(
                "DELETE FROM events
                  WHERE id IN (SELECT id FROM events ORDER BY id LIMIT $2) AND created_at < $1",
                &[&before, &(chunk as i64)],
            )
            .await?;
        Ok(n as usize)
    }

    async fn set_email_notifications(&self, user_id: i64, on: bool) -> StoreResult<bool> {
        Ok(self
            .exec(
                "UPDATE users SET email_notifications = $2 WHERE id = $1",
                &[&user_id, &on],
            )
            .await?
            > 0)
    }

    async fn email_notifications(&self, user_id: i64) -> StoreResult<Option<bool>> {
        self.read_opt(
            "SELECT email_notifications FROM users WHERE id = $1",
            &[&user_id],
        )
        .await
    }

    async fn due_mails(&self, now: i64, limit: usize) -> StoreResult<Vec<DueMail>> {
        let mut claims = self.claims.lock().await;
        if claims.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = self
                .config
                .connect(NoTls)
                .await
                .map_err(|e| self.db_error(e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the outbox claims connection ended");
                }
            });
            *claims = Some(client);
        }
        let client = claims.as_mut().expect("connected above");
        lifecycle::claim_mails(client, now, limit)
            .await
            .map_err(|e| self.db_error(e))
    }

    async fn update_mails(&self, updates: Vec<(i64, MailUpdate)>) -> StoreResult<()> {
        transaction!(self, |tx, ev| {
            lifecycle::update_mails(&tx, &updates).await
        })
    }

    async fn outbox_rows(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.read(
            "SELECT id, notification_id, user_id, tag, state, attempts, due_at, last_error,
                    created_at, done_at
               FROM outbox WHERE $1::text IS NULL OR state = $1 ORDER BY id DESC LIMIT $2",
            &[&state, &(limit as i64)],
        )
        .await
    }

    async fn retry_mail(&self, id: i64, now: i64) -> StoreResult<bool> {
        Ok(self
            .exec(
                "UPDATE outbox SET state = 'pending', attempts = 0, due_at = $2, last_error = NULL,
                        done_at = NULL WHERE id = $1",
                &[&id, &now],
            )
            .await?
            > 0)
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        Ok(self
            .read_opt("SELECT COUNT(*) FROM outbox WHERE state = 'pending'", &[])
            .await?
            .unwrap_or(0))
    }

    async fn prune_outbox(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        let n = self
            .exec(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox WHERE state IN ('sent', 'skipped') AND done_at < $1
                      ORDER BY id LIMIT $2)",
                &[&before, &(chunk as i64)],
            )
            .await?;
        Ok(n as usize)
    }

    async fn users_by_id(&self, ids: Vec<i64>) -> StoreResult<Vec<UserRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ANY($1) ORDER BY id"),
            &[&ids],
        )
        .await
    }

    async fn find_users(&self, query: UserQuery) -> StoreResult<(Vec<UserRecord>, i64)> {
        let (clause, args) = lifecycle::user_filter(&query);
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_sql()).collect();
        let total = self
            .read_opt::<i64>(&format!("SELECT COUNT(*) FROM users WHERE {clause}"), &refs)
            .await?
            .unwrap_or(0);
        let column = lifecycle::user_sort_column(&query);
        let direction = if query.descending { "DESC" } else { "ASC" };
        let limit = query.limit as i64;
        let offset = query.offset as i64;
        let n = refs.len();
        let mut page_refs = refs;
        page_refs.push(&limit);
        page_refs.push(&offset);
        let select = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {clause} \
             ORDER BY {column} {direction}, id {direction} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = self.read(&select, &page_refs).await?;
        Ok((rows, total))
    }

    async fn user_login(&self, login: &str) -> StoreResult<Option<(User, Option<String>)>> {
        let login = login.trim().to_owned();
        let by_id: Option<i64> = login.parse().ok();
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, last_name, email, active, is_admin, password_hash FROM users
                  WHERE active AND (id = $1 OR (email <> '' AND lower(email) = lower($2)))
                  ORDER BY id LIMIT 1",
                &[&by_id, &login],
            )
            .await
            .map_err(|e| self.db_error(e))?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some((
                User::from_row(&r).map_err(|e| self.db_error(e))?,
                r.try_get(6).map_err(|e| self.db_error(e))?,
            ))),
        }
    }

    async fn set_password(&self, user_id: i64, password_hash: String) -> StoreResult<()> {
        self.update_user(
            user_id,
            UserUpdate {
                password_hash: Some(password_hash),
                ..UserUpdate::default()
            },
        )
        .await
    }

    async fn update_user(&self, user_id: i64, u: UserUpdate) -> StoreResult<()> {
        transaction!(self, |tx, ev| lifecycle::update_user(&tx, user_id, &u)
            .await)
    }

    async fn list_webhooks(&self, user_id: Option<i64>) -> StoreResult<Vec<WebhookInfo>> {
        self.read(
            "SELECT id, user_id, scopes, active, created_at, rate_per_second, rate_burst
               FROM webhooks WHERE $1::bigint IS NULL OR user_id = $1 ORDER BY id",
            &[&user_id],
        )
        .await
    }

    async fn set_webhook_active(&self, id: i64, active: bool) -> StoreResult<bool> {
        Ok(self
            .exec(
                "UPDATE webhooks SET active = $2 WHERE id = $1",
                &[&id, &active],
            )
            .await?
            > 0)
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        self.read(
            &format!("SELECT {APP_COLUMNS} FROM apps a ORDER BY a.id"),
            &[],
        )
        .await
    }

    async fn set_app_active(&self, client_id: &str, active: bool) -> StoreResult<bool> {
        Ok(self
            .exec(
                "UPDATE apps SET active = $2 WHERE client_id = $1",
                &[&client_id, &active],
            )
            .await?
            > 0)
    }

    async fn revoke_tokens(&self, user_id: Option<i64>, app_id: Option<i64>) -> StoreResult<u64> {
        if user_id.is_none() && app_id.is_none() {
            return Err(StoreError::Conflict(
                "name a user, an application or both".into(),
            ));
        }
        self.exec(
            "UPDATE oauth_tokens SET revoked = TRUE
              WHERE NOT revoked AND ($1::bigint IS NULL OR user_id = $1)
                AND ($2::bigint IS NULL OR app_id = $2)",
            &[&user_id, &app_id],
        )
        .await
    }

    async fn add_app(&self, app: NewApp) -> StoreResult<i64> {
        transaction!(self, |tx, ev| lifecycle::insert_app(&tx, &app).await)
    }

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<App>> {
        self.read_opt(
            &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.client_id = $1"),
            &[&client_id],
        )
        .await
    }

    async fn install_app(&self, app_id: i64, user_id: i64) -> StoreResult<()> {
        self.exec(
            &format!(
                "INSERT INTO app_installs (app_id, user_id, installed_at)
                 VALUES ($1, $2, {}) ON CONFLICT DO NOTHING",
                now_unix_sql()
            ),
            &[&app_id, &user_id],
        )
        .await
        .map(|_| ())
    }

    async fn issue_tokens(&self, app_id: i64, user_id: i64, tokens: NewTokens) -> StoreResult<()> {
        transaction!(self, |tx, ev| {
            lifecycle::insert_tokens(&tx, app_id, user_id, &tokens, None).await
        })
    }

    async fn access_grant(&self, access_hash: [u8; 32]) -> StoreResult<Option<AccessGrant>> {
        self.read_opt(
            &format!(
                "SELECT {APP_COLUMNS}, t.user_id, t.access_expires
                   FROM oauth_tokens t JOIN apps a ON a.id = t.app_id
                  WHERE t.access_hash = $1 AND NOT t.revoked"
            ),
            &[&&access_hash[..]],
        )
        .await
    }

    async fn app_grant_alive(&self, app_id: i64, user_id: i64, now: i64) -> StoreResult<bool> {
        Ok(self
            .read_opt::<bool>(
                "SELECT EXISTS (SELECT 1 FROM oauth_tokens t JOIN apps a ON a.id = t.app_id
                  WHERE t.user_id = $1 AND t.app_id = $2 AND NOT t.revoked
                    AND t.refresh_expires > $3 AND a.active)",
                &[&user_id, &app_id, &now],
            )
            .await?
            .unwrap_or(false))
    }

    async fn rotate_refresh(
        &self,
        app_id: i64,
        refresh_hash: [u8; 32],
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>> {
        transaction!(self, |tx, ev| {
            lifecycle::rotate_refresh(&tx, app_id, &refresh_hash, now, &tokens).await
        })
    }

    async fn add_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        user_id: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.exec(
            "INSERT INTO oauth_codes (code_hash, app_id, user_id, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&&code_hash[..], &app_id, &user_id, &expires_at],
        )
        .await
        .map(|_| ())
    }

    async fn exchange_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>> {
        transaction!(self, |tx, ev| {
            lifecycle::exchange_code(&tx, &code_hash, app_id, now, &tokens).await
        })
    }

    async fn add_session(&self, id_hash: [u8; 32], session: Session) -> StoreResult<()> {
        self.exec(
            "INSERT INTO sessions (id_hash, user_id, expires_at) VALUES ($1, $2, $3)",
            &[&&id_hash[..], &session.user_id, &session.expires_at],
        )
        .await
        .map(|_| ())
    }

    async fn session(&self, id_hash: [u8; 32], now: i64) -> StoreResult<Option<Session>> {
        self.read_opt(
            "SELECT s.user_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
              WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.active",
            &[&&id_hash[..], &now],
        )
        .await
    }

    async fn session_alive(
        &self,
        user_id: i64,
        lo: [u8; 32],
        hi: [u8; 32],
        now: i64,
    ) -> StoreResult<bool> {
        Ok(self
            .read_opt::<bool>(
                "SELECT EXISTS (SELECT 1 FROM sessions
                  WHERE id_hash >= $1 AND id_hash <= $2 AND user_id = $3 AND expires_at > $4)",
                &[&&lo[..], &&hi[..], &user_id, &now],
            )
            .await?
            .unwrap_or(false))
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> StoreResult<()> {
        self.exec("DELETE FROM sessions WHERE id_hash = $1", &[&&id_hash[..]])
            .await
            .map(|_| ())
    }

    async fn setting(&self, key: &str, init: String) -> StoreResult<String> {
        // Race-free across instances: the first insert wins, everyone reads the winner's value.
        transaction!(self, |tx, ev| {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&key, &init],
            )
            .await?;
            TxResult::Ok(
                tx.query_one("SELECT value FROM settings WHERE key = $1", &[&key])
                    .await?
                    .try_get::<_, String>(0)?,
            )
        })
    }

    async fn expire_notifications(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        transaction!(self, |tx, ev| {
            lifecycle::expire_chunk(&tx, &mut ev, before, chunk.max(1)).await
        })
    }

    async fn forget_expired_credentials(&self, now: i64) -> StoreResult<()> {
        transaction!(self, |tx, ev| {
            tx.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now])
                .await?;
            // Spent codes are kept a day past their expiry to recognise a replay.
            tx.execute(
                "DELETE FROM oauth_codes WHERE expires_at <= $1",
                &[&(now - 86_400)],
            )
            .await?;
            tx.execute(
                "DELETE FROM oauth_tokens
                  WHERE refresh_expires <= $1 OR (revoked AND access_expires <= $1)",
                &[&now],
            )
            .await?;
            TxResult::Ok(())
        })
    }

    fn health(&self) -> Result<(), String> {
        let pool = self.health.pool.lock().expect("health poisoned").clone();
        let listen = self.health.listen.lock().expect("health poisoned").clone();
        match pool.or(listen) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn flush(&self) {
        // Every write has committed before its caller heard back; nothing is queued.
    }

    async fn reset(&self, keep_directory: bool) -> StoreResult<()> {
        transaction!(self, |tx, ev| lifecycle::reset(&tx, keep_directory).await)
    }

    async fn put_setting(&self, key: &str, value: String) -> StoreResult<()> {
        self.exec(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
        .await
        .map(|_| ())
    }

    async fn upsert_user(&self, user: User) -> StoreResult<bool> {
        transaction!(self, |tx, ev| lifecycle::upsert_user(&tx, &user).await)
    }

    async fn ensure_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
        rate: RateOverride,
    ) -> StoreResult<(i64, bool)> {
        let scopes = scopes.join(",");
        transaction!(self, |tx, ev| {
            lifecycle::ensure_webhook(&tx, user_id, &code_hash, &scopes, &rate).await
        })
    }

    async fn upsert_app(&self, app: NewApp) -> StoreResult<(i64, bool)> {
        transaction!(self, |tx, ev| lifecycle::upsert_app(&tx, &app).await)
    }
}
