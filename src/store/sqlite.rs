//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection and group-commits: it takes every write that
//! is queued, runs each inside its own savepoint of one transaction, commits once
//! (`synchronous=FULL`, so the WAL is fsynced), and only then answers the callers. Reads run on a
//! fixed set of reader threads with a connection each (`readers`), which WAL mode lets run
//! beside the writer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension,
    TransactionBehavior,
};
use tokio::sync::{mpsc, oneshot};

use super::event::{self, Event, Kind, MAX_IDS_PER_EVENT};
use super::hub::{Hub, HubLimits};
use super::{
    AccessGrant, App, DueMail, MailText, MailUpdate, NewApp, NewTokens, Notification, NotifyChat,
    OutboxRow, Recipient, Session, Store, StoreError, StoreResult, User, UserRecord, UserUpdate,
    Webhook, WebhookInfo,
};
use crate::clock::Clock;
use crate::domain::directory::{FilterOp, FilterValue, UserField, UserQuery, UserSort};
use crate::domain::inbox::{
    self, Cursor, ReadRequest, ReadScope, SearchRequest, TagField, NOTIFY_EVENT, NOTIFY_MODULE,
    NOTIFY_TYPE_CONFIRM,
};
use crate::domain::notify::Draft;
use crate::limits::RateOverride;

mod readers;
mod toolkit;

pub use readers::MAX_READERS;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_oauth.sql"),
    include_str!("../../migrations/0003_rate_limits.sql"),
    include_str!("../../migrations/0004_lifecycle.sql"),
    // 0005 belongs to another branch; the list is positional, so it goes before this one.
    include_str!("../../migrations/0006_tag_origin.sql"),
    include_str!("../../migrations/0007_data_at_rest.sql"),
    // 0008 was not needed; the list is positional.
    include_str!("../../migrations/0009_delivery.sql"),
];

/// The notification columns in the order `row_to_notification` reads them.
macro_rules! notification_columns {
    () => {
        "id, user_id, author_id, notify_type, module, event, text, tag, sub_tag, attach, buttons, \
         is_read, created_at"
    };
}

/// The statements of the notification readers and writers. They are public so that the
/// performance test can check their query plans against a large database: each must be served
/// by an index, never by a scan of the notifications table.
///
/// Every `LIMIT ?` (and `OFFSET ?`) here and below is written `LIMIT ? + 0`. SQLite plans with
/// the value bound to a bare `LIMIT ?`, so it marks the statement to be compiled again whenever
/// that parameter is bound: every execution of a cached statement re-parsed and re-planned it,
/// a tenth of an `im.notify.get`'s CPU (issue 15 profile; `sqlite3_stmt_status` REPREPARE
/// counted one per run). An expression is not planned with, and the plans stay the same.
pub mod sql {
    /// The counters of im.notify.get and im.counters.get: kept up to date by triggers.
    pub const CHAT: &str = "SELECT id, total, unread FROM notify_chats WHERE user_id = ?1";
    /// The confirmation stage of im.notify.get (`notify_type = 1` selects its partial index).
    pub const PAGE_CONFIRM: &str = concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE user_id = ?1 AND notify_type = 1 AND id < ?2 \
          ORDER BY id DESC LIMIT ?3 + 0"
    );
    /// The normal stage of im.notify.get.
    pub const PAGE_NORMAL: &str = concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE user_id = ?1 AND notify_type <> 1 AND id < ?2 \
          ORDER BY id DESC LIMIT ?3 + 0"
    );
    pub const ONE: &str = concat!(
        "SELECT ",
        notification_columns!(),
        " FROM notifications WHERE id = ?1 AND user_id = ?2"
    );
    pub const TAG_OF: &str =
        "SELECT tag, tag_origin FROM notifications WHERE id = ?1 AND user_id = ?2";
    // Each toggle returns the ids it changed: they become the notifyRead/notifyUnread event.
    pub const MARK_ONE: &str = "UPDATE notifications SET is_read = ?3 \
         WHERE id = ?1 AND user_id = ?2 AND notify_type <> 1 AND is_read <> ?3 RETURNING id";
    /// "This one and all newer", read: only unread rows, through their partial index.
    pub const READ_FROM: &str = "UPDATE notifications SET is_read = 1 \
         WHERE user_id = ?1 AND is_read = 0 AND id >= ?2 AND notify_type <> 1 RETURNING id";
    pub const UNREAD_FROM: &str = "UPDATE notifications SET is_read = 0 \
         WHERE user_id = ?1 AND id >= ?2 AND is_read = 1 AND notify_type <> 1 RETURNING id";
    /// Same-tag siblings are those of the same tag origin too (README "Tag origin").
    pub const MARK_TAG: &str = "UPDATE notifications SET is_read = ?3 \
         WHERE user_id = ?1 AND tag = ?2 AND tag_origin IS ?4 AND is_read <> ?3 AND notify_type <> 1 \
         RETURNING id";
    /// Tag replace on add (D4): the recipient's rows with this tag from this origin, or stored
    /// before origins were recorded (`legacy`, migration 0006). Returns what notifyDelete reports.
    pub const REPLACE_TAG: &str = "DELETE FROM notifications \
         WHERE user_id = ?1 AND tag = ?2 AND tag_origin IN (?3, 'legacy') RETURNING id, notify_type";
    pub const READ_ALL: &str = "UPDATE notifications SET is_read = 1 \
         WHERE user_id = ?1 AND is_read = 0 AND notify_type <> 1 RETURNING id";
    // Deletes return what notifyDelete reports: ids and their types (and recipients).
    pub const DELETE_OWN: &str =
        "DELETE FROM notifications WHERE id = ?1 AND user_id = ?2 RETURNING notify_type";
    /// Delete by TAG for every recipient, only the caller's origin's rows (and `legacy` ones).
    pub const DELETE_TAG: &str = "DELETE FROM notifications \
         WHERE tag = ?1 AND tag_origin IN (?2, 'legacy') RETURNING id, user_id, notify_type";
    pub const DELETE_SUB_TAG: &str = "DELETE FROM notifications \
         WHERE sub_tag = ?1 AND tag_origin IN (?2, 'legacy') RETURNING id, user_id, notify_type";
    pub const CONFIRM: &str =
        "DELETE FROM notifications WHERE id = ?1 AND user_id = ?2 AND notify_type = 1";
    /// The per-recipient cap, first pass: the recipient's oldest read notifications.
    pub const CAP_OLDEST_READ: &str = "SELECT id FROM notifications \
         WHERE user_id = ?1 AND is_read = 1 ORDER BY id LIMIT ?2 + 0";
    /// The second pass, when read ones are not enough: the oldest unread.
    pub const CAP_OLDEST_UNREAD: &str = "SELECT id FROM notifications \
         WHERE user_id = ?1 AND is_read = 0 ORDER BY id LIMIT ?2 + 0";
    /// Retention: the oldest notifications of all, by id (ids follow commit order, so creation
    /// time grows with them; a primary-key range, whatever the table's size).
    pub const OLDEST: &str = "SELECT id, created_at FROM notifications ORDER BY id LIMIT ?1 + 0";
    /// The one statement that removes notifications for the lifecycle (retention and the cap).
    pub const REMOVE: &str = "DELETE FROM notifications \
         WHERE id IN (SELECT value FROM json_each(?1)) RETURNING id, user_id, notify_type";
    /// A user's events after an id, oldest first: the replay of a resuming stream.
    pub const EVENTS_AFTER: &str = "SELECT id, kind, payload FROM events \
         WHERE user_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3 + 0";
    /// Retention: the oldest chunk, of which those older than the cut-off go. Bounded work
    /// even when nothing is old enough (no scan of the table).
    pub const PRUNE_EVENTS: &str = "DELETE FROM events \
         WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?2 + 0) AND created_at < ?1";
    /// The e-mail worker's work list: pending rows through their partial index, in due order.
    /// The index is named: without statistics the planner would take `outbox_by_state` and sort.
    pub const DUE_MAILS: &str = "SELECT o.id, o.notification_id, o.user_id, o.tag, o.sender_name, \
                o.attempts, n.id IS NOT NULL AND n.is_read = 0, n.text, n.text_out, n.created_at, \
                u.active = 1 AND u.email <> '' AND u.email_notifications = 1, u.email, u.name \
           FROM outbox o INDEXED BY outbox_due \
           LEFT JOIN notifications n ON n.id = o.notification_id \
           LEFT JOIN users u ON u.id = o.user_id \
          WHERE o.state = 'pending' AND o.due_at <= ?1 \
          ORDER BY o.due_at, o.id LIMIT ?2 + 0";
}

/// How many queued writes one transaction may take; bounds the latency of the first in line.
const MAX_GROUP: usize = 512;
/// How long the writer waits for more writes before committing a group, when the previous group
/// showed concurrent callers.
const GATHER_WAIT: Duration = Duration::from_micros(250);
/// After a held write (a batch's), how long the writer waits for the batch's next write before
/// it commits anyway: the time a batch needs to decode and check one command, with a margin for
/// a loaded machine.
const HOLD_WAIT: Duration = Duration::from_millis(2);
/// The longest a transaction is held open for held writes, and the most writes it takes, so a
/// long batch does not keep everyone else's writes from being committed.
const HOLD_MAX: Duration = Duration::from_millis(20);
const HOLD_MAX_WRITES: usize = 4 * MAX_GROUP;
/// How many writes may wait for the writer before callers are made to wait their turn.
const QUEUE_DEPTH: usize = 8192;
/// Admin commands write to the same file while the server runs; they wait rather than fail.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// The writer checkpoints by itself only past this many WAL pages (SQLite's default is 1000),
/// a backstop in case the checkpointer falls behind: a checkpoint on the writer thread makes
/// every caller in the group wait for it.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// Page cache of the writer connection in KiB (SQLite's default is 2 MB): enough for the
/// interior and right-edge pages of the notification indexes on a large database.
const WRITER_CACHE_KIB: i64 = 16 * 1024;

pub const DB_FILE: &str = "imnotify.sqlite3";
/// Held (flock) while a process checks and migrates the database, so two processes opening a
/// fresh data directory at once do not both initialise it.
const LOCK_FILE: &str = "imnotify.lock";
/// Held (flock) by every `serve` on the data directory, shared, for as long as it runs; and by
/// `migrate --from-sqlite`, exclusive, for the copy ([`ServeLock`]). A file of its own, because
/// admin commands take `LOCK_FILE` (`imnotify.lock`) exclusively while a server runs.
pub const SERVE_LOCK_FILE: &str = "imnotify.serve.lock";
/// The database and the files SQLite keeps beside it; all are 0600.
const DB_FILES: [&str; 3] = [DB_FILE, "imnotify.sqlite3-wal", "imnotify.sqlite3-shm"];
/// At most this many notifications over the per-recipient cap are removed by one insert, so
/// lowering the cap on a full database does not make one write slow; the rest go with the
/// recipient's next notifications.
const CAP_TRIM_MAX: i64 = 1000;

/// How long a cached webhook lookup is trusted. Writes made through this store invalidate the
/// cache at once; this bounds how long a change made by another process (an admin command on
/// the same data dir) can go unseen.
const WEBHOOK_CACHE_TTL: Duration = Duration::from_secs(1);
/// Past this many users the cache starts over rather than grow without bound.
const WEBHOOK_CACHE_MAX: usize = 10_000;

/// A write, run by the writer thread inside its own savepoint (a group made only of
/// notification inserts runs without, see [`AddJob`]). It returns whether it succeeded (a failed
/// write's savepoint is rolled back) and a completion that answers the caller once the group's
/// commit has decided whether the write stands.
struct Job {
    work: Work,
    /// The caller has its answer already, before the commit, and is about to send its next
    /// write (a `batch`, see [`super::SHARED_COMMIT`]): the writer keeps the transaction open
    /// for it a little, so the batch's writes share one commit.
    hold: bool,
    /// The write may change a credential (`Store::write`): the group's events must not go out
    /// before `auth_epoch` moves, or a stream checked just before could send an event committed
    /// after a revocation in the same group.
    changes_auth: bool,
}

/// What a job does: any write as a closure, or a notification insert as data.
enum Work {
    Run(Run),
    Add(Box<AddJob>),
}

/// `im.notify.system.add` and its kin, the bulk of all writes. Kept as data rather than a
/// closure so that the writer can run a group made only of these without a savepoint per insert
/// and, in the rare case that one fails, roll the group back and run it again with a savepoint
/// each ([`commit_group`]). The savepoints' statement journal (a copy of every page a write
/// changes that the group had changed before it) was about 12 % of the instructions of an add
/// (issue 15).
struct AddJob {
    draft: Draft,
    created_at: i64,
    cap: i64,
    mail_delay: Option<i64>,
    reply: oneshot::Sender<StoreResult<Option<i64>>>,
}

impl AddJob {
    fn insert(&self, conn: &Connection, events: &mut Events) -> rusqlite::Result<Option<i64>> {
        insert_notification(
            conn,
            events,
            &self.draft,
            self.created_at,
            self.cap,
            self.mail_delay,
        )
    }

    /// Answers the caller after the commit: its id, unless the commit failed.
    fn completion(self, result: StoreResult<Option<i64>>) -> Completion {
        Box::new(move |commit_error| {
            let outcome = match commit_error {
                None => result,
                Some(e) => Err(StoreError::Backend(e.to_owned())),
            };
            let _ = self.reply.send(outcome);
        })
    }
}

impl Work {
    /// Runs the work inside the caller's savepoint.
    fn run(self, conn: &Connection, events: &mut Events) -> (bool, Completion) {
        match self {
            Work::Run(run) => run(conn, events),
            Work::Add(add) => {
                let result = add.insert(conn, events).map_err(backend);
                (result.is_ok(), add.completion(result))
            }
        }
    }
}

type Run = Box<dyn FnOnce(&Connection, &mut Events) -> (bool, Completion) + Send>;
type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// The events the writes of a group recorded in their savepoints; the hub gets them once the
/// group commits.
pub struct Events {
    list: Vec<Arc<Event>>,
    /// The group's time (Unix seconds, from the application clock): the events' `created_at`.
    now: i64,
}

/// What the deployment chooses about delivery when it opens the store.
#[derive(Clone, Default)]
pub struct DeliveryOptions {
    /// `Some(email.delay_seconds)` when SMTP is configured: notifications to mailable
    /// recipients get an outbox row, due this many seconds after they were added (D10).
    /// `None`: e-mail is off and nothing is queued.
    pub mail_delay: Option<i64>,
    pub hub: HubLimits,
    /// The application clock; event times come from it.
    pub clock: Clock,
}

/// How a data directory is opened.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Run `PRAGMA quick_check` before serving. It reads every page, O(size of the database):
    /// 2 s for 270 MB (a million notifications) on a busy 2-core machine, so `serve` runs it
    /// and admin commands do not.
    pub quick_check: bool,
    /// `limits.max_notifications_per_user`; 0 means no cap.
    pub max_notifications_per_user: u64,
}

/// What `/healthz` reports about storage: the last commit and the last checkpoint.
#[derive(Default)]
struct Health {
    write_error: Mutex<Option<String>>,
    checkpoint_error: Mutex<Option<String>>,
}

impl Health {
    fn record(slot: &Mutex<Option<String>>, error: Option<String>) {
        *slot.lock().expect("health poisoned") = error;
    }
}

pub struct SqliteStore {
    writer: mpsc::Sender<Job>,
    health: Arc<Health>,
    /// 0: no cap.
    notification_cap: i64,
    /// A fixed set of reader threads, at most [`MAX_READERS`], so a burst of reads holds
    /// neither a thread nor a file descriptor per request (issues 10 and 15).
    readers: readers::Readers,
    /// Bumped after every committed write except notification inserts, the only writes that
    /// cannot change who may call. A cached lookup older than the current epoch is not used.
    auth_epoch: Arc<AtomicU64>,
    /// `webhooks_of` by user id: authenticating a webhook call otherwise costs a trip to the
    /// reader thread and a query on every request.
    webhook_cache: Mutex<HashMap<i64, CachedWebhooks>>,
    /// The checkpointer thread runs while this lives.
    _checkpointer: Arc<()>,
    hub: Arc<Hub>,
    mail_delay: Option<i64>,
}

struct CachedWebhooks {
    epoch: u64,
    read_at: Instant,
    hooks: Vec<Webhook>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, applies migrations, and starts the
    /// writer thread.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(
            data_dir,
            &OpenOptions::default(),
            DeliveryOptions::default(),
        )
    }

    /// `open`, failing fast with a message naming the file or directory when storage cannot be
    /// used: a data directory that is not writable, an empty database file where a database
    /// was expected, or (with `quick_check`) a damaged database. Creates the directory 0700 and
    /// the database files 0600, and tightens database files that are looser. `delivery` holds
    /// the deployment's delivery choices (e-mail delay, stream limits, the clock).
    pub fn open_with(
        data_dir: &Path,
        options: &OpenOptions,
        delivery: DeliveryOptions,
    ) -> StoreResult<SqliteStore> {
        prepare_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let conn = {
            let _lock = InitLock::take(data_dir)?;
            refuse_empty_file(&path)?;
            let mut conn = open_connection(&path, false).map_err(|e| {
                StoreError::Backend(format!("opening the database {}: {e}", path.display()))
            })?;
            migrate(&mut conn).map_err(|e| {
                StoreError::Backend(format!("migrating the database {}: {e}", path.display()))
            })?;
            conn
        };
        tighten_files(data_dir);
        if options.quick_check {
            quick_check(&conn, &path)?;
        }
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(backend)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(backend)?;
        // Every write runs in a savepoint of a shared transaction, so each page a write changes
        // that an earlier write of its group had changed goes to a statement journal first.
        // SQLite spills that journal to a temporary file past 64 KiB: about 35 pwrite calls per
        // add at 64 connections, a third of the server's CPU (issue 15 profile). In memory it is a
        // memcpy, and it never outlives the transaction, so durability does not change.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let health = Arc::new(Health::default());
        let writer_health = health.clone();
        let hub = Hub::new(delivery.hub);
        let writer_hub = hub.clone();
        let clock = delivery.clock.clone();
        let auth_epoch = Arc::new(AtomicU64::new(0));
        let writer_epoch = auth_epoch.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                // The writer's own timer, for its bounded wait for a batch's next write
                // (`wait_for_more`): a runtime that only keeps time, so the writer needs none
                // of its caller's. Without one, a batch's adds commit one by one.
                let timer = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .inspect_err(|e| tracing::error!(error = %e, "no timer for the writer"))
                    .ok();
                writer_loop(
                    conn,
                    rx,
                    writer_health,
                    writer_hub,
                    clock,
                    writer_epoch,
                    timer,
                )
            })
            .map_err(|e| StoreError::Backend(format!("starting writer: {e}")))?;
        let alive = Arc::new(());
        let checkpoint_conn = open_connection(&path, false).map_err(backend)?;
        let watch = Arc::downgrade(&alive);
        let checkpoint_health = health.clone();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, watch, checkpoint_health))
            .map_err(|e| StoreError::Backend(format!("starting checkpointer: {e}")))?;
        let readers = readers::Readers::start(&path, readers::default_threads(), open_connection)?;
        Ok(SqliteStore {
            writer: tx,
            health,
            notification_cap: i64::try_from(options.max_notifications_per_user).unwrap_or(i64::MAX),
            readers,
            auth_epoch,
            webhook_cache: Mutex::new(HashMap::new()),
            _checkpointer: alive,
            hub,
            mail_delay: delivery.mail_delay,
        })
    }

    /// Queues `f` for the writer and waits until its transaction is committed. Any write may
    /// touch users, webhooks or apps, so once it is committed the credential cache is void.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_job(move |c, _| f(c), true).await
    }

    /// `write` for jobs known not to change credentials (the notification lifecycle): the
    /// cache stays valid. The job may record events; they reach the hub after the commit.
    async fn write_keeping_auth<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Events) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_job(f, false).await
    }

    async fn write_job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Events) -> StoreResult<T> + Send + 'static,
        changes_auth: bool,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        let run = Box::new(move |conn: &Connection, events: &mut Events| {
            let result = f(conn, events);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                // The writer moved `auth_epoch` for this write's group before this runs, so a
                // caller that changed a credential never sees the old one accepted afterwards.
                let outcome = match commit_error {
                    None => result,
                    Some(e) => Err(StoreError::Backend(e.to_owned())),
                };
                // A caller that went away no longer needs the answer; the write itself stands.
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
        self.send_job(Job {
            work: Work::Run(run),
            hold: false,
            changes_auth,
        })
        .await?;
        rx.await
            .map_err(|_| StoreError::Backend("writer dropped the request".into()))?
    }

    /// A notification write whose answer comes before its commit; `shared` learns if that
    /// commit fails. The caller (a `batch`) must not acknowledge anything before
    /// [`Store::commit_barrier`] returns.
    async fn write_deferred<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Events) -> StoreResult<T> + Send + 'static,
        shared: Arc<super::SharedCommit>,
    ) -> StoreResult<T> {
        self.write_deferred_holding(f, shared, true).await
    }

    /// [`SqliteStore::write_deferred`]; `hold`: the writer keeps the transaction open a little
    /// for the caller's next write ([`Job::hold`]) rather than commit at once.
    async fn write_deferred_holding<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut Events) -> StoreResult<T> + Send + 'static,
        shared: Arc<super::SharedCommit>,
        hold: bool,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        let run = Box::new(move |conn: &Connection, events: &mut Events| {
            let result = f(conn, events);
            let ok = result.is_ok();
            let _ = reply.send(result);
            let completion: Completion = Box::new(move |commit_error| {
                if commit_error.is_some() {
                    shared.record_failure();
                }
            });
            (ok, completion)
        });
        self.send_job(Job {
            work: Work::Run(run),
            hold,
            changes_auth: false,
        })
        .await?;
        rx.await
            .map_err(|_| StoreError::Backend("writer dropped the request".into()))?
    }

    async fn send_job(&self, job: Job) -> StoreResult<()> {
        self.writer
            .send(job)
            .await
            .map_err(|_| StoreError::Backend("writer stopped".into()))
    }

    /// The query behind `webhooks_of`.
    async fn read_webhooks(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT w.id, w.user_id, w.code_hash, w.scopes, w.rate_per_second, w.rate_burst
                   FROM webhooks w JOIN users u ON u.id = w.user_id
                  WHERE w.user_id = ?1 AND w.active = 1 AND u.active = 1",
            )?;
            let rows = stmt.query_map([user_id], |r| {
                let scopes: String = r.get(3)?;
                Ok(Webhook {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    code_hash: r.get(2)?,
                    scopes: split_scopes(&scopes),
                    rate: RateOverride {
                        per_second: r.get(4)?,
                        burst: r
                            .get::<_, Option<i64>>(5)?
                            .map(|b| b.clamp(0, u32::MAX as i64) as u32),
                    },
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.readers.read(f).await
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Creates the data directory 0700 (the process umask is 077 too, see `main`), and proves it
/// writable by writing, syncing and removing a small file: a read-only or full file system
/// should stop the start with a message naming the directory, not fail the first request.
fn prepare_dir(dir: &Path) -> StoreResult<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let fail = |what: &str, e: std::io::Error| {
        StoreError::Backend(format!("data directory {}: {what}: {e}", dir.display()))
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| match std::fs::metadata(dir) {
            // "cannot create it: File exists" would read as a contradiction.
            Ok(m) if !m.is_dir() => StoreError::Backend(format!(
                "data directory {}: is a file, not a directory",
                dir.display()
            )),
            _ => fail("cannot create it", e),
        })?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| fail("cannot read it", e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        // Left as it is: the directory may be shared on purpose. The files in it are 0600.
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "the data directory is accessible to other users; 0700 is recommended"
        );
    }
    let probe = dir.join(format!(".imnotify-write-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| fail("is not writable", e))
}

/// Sets the database files to 0600 where they are looser (created by an older version, or
/// copied in with a wide umask), and says so.
fn tighten_files(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    for name in DB_FILES {
        let path = dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => tracing::warn!(
                    file = %path.display(),
                    was = format!("{mode:o}"),
                    "database file was readable by other users; set to 0600"
                ),
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "database file is readable by other users and could not be set to 0600"
                ),
            }
        }
    }
}

/// An existing database file of zero bytes is not a fresh start: it is a database that was
/// truncated or never written. Opening it would silently create a new, empty portal (new
/// member_id, new admin webhook) in its place. Checked under `InitLock`, so a file that another
/// process is initialising at this moment is never mistaken for one.
fn refuse_empty_file(path: &Path) -> StoreResult<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Backend(format!(
            "the database file {} exists but is empty (0 bytes); refusing to initialise a new \
             database over it. Restore it from a backup, or remove it to start afresh",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on the data directory's lock file, held while the database is checked
/// and migrated. Released on drop (closing the file releases the lock).
struct InitLock {
    _file: std::fs::File,
}

impl InitLock {
    fn take(dir: &Path) -> StoreResult<InitLock> {
        // A blocking lock waits rather than answering "would block".
        let file = flock(dir, LOCK_FILE, libc::LOCK_EX)?.ok_or_else(|| {
            StoreError::Backend(format!("locking {}: busy", dir.join(LOCK_FILE).display()))
        })?;
        Ok(InitLock { _file: file })
    }
}

/// Opens (creating it) `dir/name` and takes `flock(mode)` on it; the lock lives as long as the
/// returned file. `Ok(None)` when `mode` has `LOCK_NB` and another process holds a conflicting
/// lock.
fn flock(dir: &Path, name: &str, mode: libc::c_int) -> StoreResult<Option<std::fs::File>> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(StoreError::Backend(format!(
            "locking {}: {e}",
            path.display()
        )));
    }
    Ok(Some(file))
}

/// Who uses a data directory's database for longer than one admin command: the servers on it
/// (shared, several may run) or a copy into PostgreSQL (`migrate --from-sqlite`, exclusive).
/// The two exclude each other, so a migration cannot miss what a server acknowledges during
/// the copy (issue 14). Neither waits: the one that comes second is refused with a message.
/// Released when dropped, or when the process dies (the kernel drops the flock).
pub struct ServeLock {
    _file: std::fs::File,
}

impl ServeLock {
    /// The lock a server holds while it serves `dir`. Fails when a migration is copying it.
    pub fn serving(dir: &Path) -> StoreResult<ServeLock> {
        Self::take(dir, libc::LOCK_SH)?.ok_or_else(|| {
            StoreError::Backend(format!(
                "{} is being copied into PostgreSQL (imnotify migrate holds {}); serve it \
                 after the copy, with --database-url",
                dir.display(),
                dir.join(SERVE_LOCK_FILE).display()
            ))
        })
    }

    /// The lock `migrate --from-sqlite` holds while it copies `dir`. Fails when a server runs
    /// on it: what that server acknowledges during the copy would not be in PostgreSQL.
    pub fn migrating(dir: &Path) -> StoreResult<ServeLock> {
        Self::take(dir, libc::LOCK_EX)?.ok_or_else(|| {
            StoreError::Backend(format!(
                "a server is running on {} (it holds {}); stop it before migrating, so that \
                 nothing it acknowledges during the copy is left behind",
                dir.display(),
                dir.join(SERVE_LOCK_FILE).display()
            ))
        })
    }

    /// `Ok(None)` when another process holds the lock in a conflicting mode.
    fn take(dir: &Path, mode: libc::c_int) -> StoreResult<Option<ServeLock>> {
        Ok(
            flock(dir, SERVE_LOCK_FILE, mode | libc::LOCK_NB)?
                .map(|file| ServeLock { _file: file }),
        )
    }
}

/// `PRAGMA quick_check`: every page's structure, without the index-content cross-check of
/// `integrity_check`. A damaged database stops the start rather than failing requests later.
fn quick_check(conn: &Connection, path: &Path) -> StoreResult<()> {
    let started = Instant::now();
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(10)")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| {
            StoreError::Backend(format!("integrity check of {} failed: {e}", path.display()))
        })?;
    if problems.len() != 1 || problems[0] != "ok" {
        return Err(StoreError::Backend(format!(
            "integrity check (PRAGMA quick_check) of {} found damage: {}. Restore the \
             database from a backup",
            path.display(),
            problems.join("; ")
        )));
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database quick_check ok"
    );
    Ok(())
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the WAL is fsynced at every commit, so an acknowledged id survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
    }
    Ok(conn)
}

/// Moves checkpoints off the writer: with SQLite's default, the commit that crosses 1000 WAL
/// pages also copies them into the database file and fsyncs it, and every caller of that group
/// waits for it. A passive checkpoint here runs beside the writer and never blocks it; the WAL
/// stays fsynced at every commit, so durability is unchanged.
fn checkpoint_loop(conn: Connection, alive: std::sync::Weak<()>, health: Arc<Health>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_INTERVAL);
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(e) = &result {
            tracing::warn!(error = %e, "background checkpoint failed");
        }
        Health::record(
            &health.checkpoint_error,
            result.err().map(|e| format!("checkpoint failed: {e}")),
        );
    }
}

/// Applies the migrations past `user_version`, each in its own transaction. The version is read
/// inside that transaction (`BEGIN IMMEDIATE` takes the write lock first), so a second process
/// migrating the same file waits and then sees the first one's work instead of repeating it.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let Some(sql) = MIGRATIONS.get(version.max(0) as usize) else {
            return tx.commit();
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version.max(0) + 1)?;
        tx.commit()?;
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    health: Arc<Health>,
    hub: Arc<Hub>,
    clock: Clock,
    auth_epoch: Arc<AtomicU64>,
    timer: Option<tokio::runtime::Runtime>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    let mut last_group = 0;
    let mut outside = OutsideWrites::default();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        drain(&mut rx, &mut group);
        // A held write (a batch's) keeps the transaction open for what follows anyway; the
        // wait here would only delay it (a batch after a batch paid 0.3 ms).
        let holds = group.last().is_some_and(|job| job.hold);
        if last_group > 1 && group.len() < MAX_GROUP && !holds {
            // Under load, callers whose requests are being parsed right now would otherwise
            // miss this commit and pay for one of their own: a short wait gathers them, and
            // each commit saved is an fsync and two thread switches saved. A lone request
            // (the previous group had one write) is committed at once.
            std::thread::sleep(GATHER_WAIT);
            drain(&mut rx, &mut group);
        }
        last_group = group.len();
        commit_group(
            &mut conn,
            &mut rx,
            &mut group,
            &health,
            &hub,
            &clock,
            &mut outside,
            &auth_epoch,
            timer.as_ref(),
        );
    }
}

/// Notices commits by other connections to the database, i.e. by another process (an admin
/// command revoking a webhook or a token): SQLite's `data_version` changes after them, and
/// never after the writer's own commits. The server's other connections only read (readers)
/// or checkpoint, which may move it too: a spare re-check, never a missed one.
#[derive(Default)]
struct OutsideWrites {
    last: Option<i64>,
}

impl OutsideWrites {
    /// Whether another connection committed since the previous call (the first call: no).
    fn changed(&mut self, conn: &Connection) -> bool {
        let now = conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)));
        match (now, self.last) {
            (Ok(v), Some(last)) => {
                self.last = Some(v);
                v != last
            }
            (Ok(v), None) => {
                self.last = Some(v);
                false
            }
            // Unreadable: assume the worst.
            (Err(_), _) => true,
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<Job>, group: &mut Vec<Job>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

/// Waits up to [`HOLD_WAIT`] for writes to arrive; `false` if none did (or the store is gone).
/// The next write's arrival wakes the writer at once: it used to poll every 20 µs, which the
/// kernel's timer slack made 70 µs or more, and a batch's every add waited for the next poll
/// (goal 4 of issue 15). `timer` keeps the bound (1 ms resolution).
fn wait_for_more(
    rx: &mut mpsc::Receiver<Job>,
    group: &mut Vec<Job>,
    timer: Option<&tokio::runtime::Runtime>,
) -> bool {
    drain(rx, group);
    if !group.is_empty() {
        return true;
    }
    let Some(timer) = timer else {
        return false;
    };
    match timer.block_on(async { tokio::time::timeout(HOLD_WAIT, rx.recv()).await }) {
        Ok(Some(job)) => {
            group.push(job);
            drain(rx, group);
            true
        }
        // Nothing came in time, or the store is gone.
        Ok(None) | Err(_) => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn commit_group(
    conn: &mut Connection,
    rx: &mut mpsc::Receiver<Job>,
    group: &mut Vec<Job>,
    health: &Health,
    hub: &Hub,
    clock: &Clock,
    outside: &mut OutsideWrites,
    auth_epoch: &AtomicU64,
    timer: Option<&tokio::runtime::Runtime>,
) {
    let mut completions = Vec::with_capacity(group.len());
    let mut changes_auth = false;
    let mut events = Events {
        list: Vec::new(),
        now: clock.unix(),
    };
    let mut committed = None;
    if group.iter().all(|j| matches!(j.work, Work::Add(_))) {
        // Only inserts: no savepoints. An insert fails only on a database error, and then the
        // whole group is rolled back and run again below, each write in its own savepoint,
        // so one failing write still cannot take the others down with it.
        match inserts_at_once(conn, group, &mut events) {
            Ok(ids) => {
                for (job, id) in group.drain(..).zip(ids) {
                    if let Work::Add(add) = job.work {
                        completions.push(add.completion(Ok(id)));
                    }
                }
                committed = Some(Ok(()));
            }
            Err(e) => {
                tracing::warn!(error = %e, writes = group.len(), "group of inserts failed; running it again with a savepoint per write");
                crate::metrics::record_group_rerun();
                events.list.clear();
            }
        }
    }
    let committed = committed.unwrap_or_else(|| {
        (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let began = Instant::now();
            loop {
                let mut hold = false;
                for job in group.drain(..) {
                    hold = job.hold;
                    changes_auth |= job.changes_auth;
                    // A savepoint per write: one failing write must not take the others down
                    // with it. Its statements are cached: rusqlite's `Savepoint` parses two per
                    // write, 5 % of a batch's CPU (issue 15, goal 4 profile).
                    tx.prepare_cached("SAVEPOINT write")?.execute([])?;
                    let mark = events.list.len();
                    let (ok, completion) = job.work.run(&tx, &mut events);
                    completions.push(completion);
                    if !ok {
                        tx.prepare_cached("ROLLBACK TO write")?.execute([])?;
                        // Rolled back with the savepoint: they never happened.
                        events.list.truncate(mark);
                    }
                    tx.prepare_cached("RELEASE write")?.execute([])?;
                }
                // The last write was a batch's, answered before this commit: its next write is
                // probably on its way, and joining this transaction saves it an fsync (goal 4 of
                // issue 15). Bounded, so others' writes are not kept waiting for long.
                if !hold
                    || completions.len() >= HOLD_MAX_WRITES
                    || began.elapsed() >= HOLD_MAX
                    || !wait_for_more(rx, group, timer)
                {
                    break;
                }
            }
            tx.commit()
        })()
    });
    // After the commit and never before; before the callers hear back, so a client that sees
    // its REST answer finds the event already on its way. `publish` never blocks.
    if committed.is_ok() {
        // A credential changed by another process: streams and the webhook cache must look
        // again before this group's events go out (see `Store::auth_epoch`).
        // Likewise for a credential changed by a write of this group.
        let outside_changed = outside.changed(conn);
        if changes_auth || outside_changed {
            auth_epoch.fetch_add(1, Ordering::SeqCst);
        }
        hub.publish(&events.list);
    }
    crate::metrics::record_commit_batch(completions.len());
    let error = committed.err().map(|e| {
        tracing::error!(error = %e, writes = completions.len(), "group commit failed");
        e.to_string()
    });
    Health::record(
        &health.write_error,
        error.as_ref().map(|e| format!("write failed: {e}")),
    );
    // Jobs that never ran (BEGIN failed) were dropped with `group`, which drops their reply
    // senders: those callers see "writer dropped the request".
    group.clear();
    for completion in completions {
        completion(error.as_deref());
    }
}

/// Runs a group of inserts in one transaction without savepoints and commits it: every id, or
/// the first error, after which nothing of the group stands (the transaction is rolled back).
fn inserts_at_once(
    conn: &mut Connection,
    group: &[Job],
    events: &mut Events,
) -> rusqlite::Result<Vec<Option<i64>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids = Vec::with_capacity(group.len());
    for job in group {
        if let Work::Add(add) = &job.work {
            ids.push(add.insert(&tx, events)?);
        }
    }
    tx.commit()?;
    Ok(ids)
}

/// Appends an event to the log inside the current savepoint, and to the group's list for the
/// hub.
fn record(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    kind: Kind,
    payload: String,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (user_id, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![user_id, kind.name(), payload, events.now])?;
    events.list.push(Arc::new(Event {
        id: conn.last_insert_rowid(),
        user_id,
        kind,
        payload: payload.into(),
        sse: Default::default(),
    }));
    Ok(())
}

/// The recipient's notification chat id and unread counter as of now in this transaction.
fn chat_counter(conn: &Connection, user_id: i64) -> rusqlite::Result<(i64, i64)> {
    Ok(conn
        .prepare_cached(sql::CHAT)?
        .query_row([user_id], |r| Ok((r.get(0)?, r.get(2)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// `notifyDelete` events for one recipient's deleted `(id, notify_type)` pairs.
fn record_deletes(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    deleted: &[(i64, i64)],
) -> rusqlite::Result<()> {
    if deleted.is_empty() {
        return Ok(());
    }
    let (_, counter) = chat_counter(conn, user_id)?;
    for chunk in deleted.chunks(MAX_IDS_PER_EVENT) {
        record(
            conn,
            events,
            user_id,
            Kind::Delete,
            event::delete_payload(chunk, counter),
        )?;
    }
    Ok(())
}

/// Deletes by a statement returning `(id, user_id, notify_type)`, with a `notifyDelete` per
/// recipient.
fn delete_returning(
    conn: &Connection,
    events: &mut Events,
    stmt: &str,
    value: &str,
    origin: &str,
) -> rusqlite::Result<u64> {
    let rows: Vec<(i64, i64, i64)> = conn
        .prepare_cached(stmt)?
        .query_map(params![value, origin], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut by_user: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for (id, user, notify_type) in &rows {
        by_user.entry(*user).or_default().push((*id, *notify_type));
    }
    for (user, mut deleted) in by_user {
        deleted.sort_unstable();
        record_deletes(conn, events, user, &deleted)?;
    }
    Ok(rows.len() as u64)
}

fn confirm(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    id: i64,
    value: &str,
) -> rusqlite::Result<Option<Notification>> {
    let found = conn
        .prepare_cached(sql::ONE)?
        .query_row(params![id, user_id], row_to_notification)
        .optional()?
        .filter(|n| n.notify_type == NOTIFY_TYPE_CONFIRM);
    if let Some(n) = &found {
        conn.prepare_cached(sql::CONFIRM)?
            .execute(params![id, user_id])?;
        // As Bitrix24: the confirmation is deleted, then the choice is announced.
        record_deletes(conn, events, user_id, &[(id, n.notify_type)])?;
        let (chat_id, counter) = chat_counter(conn, user_id)?;
        let messages = inbox::confirm_messages(n.buttons.as_deref(), value);
        record(
            conn,
            events,
            user_id,
            Kind::Confirm,
            event::confirm_payload(id, chat_id, value, &messages, counter),
        )?;
    }
    Ok(found)
}

fn answer(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    id: i64,
    text: &str,
) -> rusqlite::Result<Option<Notification>> {
    let found = conn
        .prepare_cached(sql::ONE)?
        .query_row(params![id, user_id], row_to_notification)
        .optional()?;
    if found.is_some() {
        let (chat_id, counter) = chat_counter(conn, user_id)?;
        record(
            conn,
            events,
            user_id,
            Kind::Answer,
            event::answer_payload(id, chat_id, text, counter),
        )?;
    }
    Ok(found)
}

fn returned_ids(
    stmt: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<i64>> {
    stmt.query_map(p, |r| r.get(0))?.collect()
}

/// One read or unread toggle, only ever among the caller's notifications, never on
/// confirm-type ones (§4.4). As in the newest source, marking read works from any id (the
/// caller's rows from that id up), while marking unread needs the id to be one of the caller's.
/// Returns the ids whose state changed.
fn mark_read(conn: &Connection, user_id: i64, req: &ReadRequest) -> rusqlite::Result<Vec<i64>> {
    let (id, and_newer) = match req.scope {
        ReadScope::All => {
            return returned_ids(&mut conn.prepare_cached(sql::READ_ALL)?, [user_id]);
        }
        ReadScope::Only(id) => (id, false),
        ReadScope::AndNewer(id) => (id, true),
    };
    let tag: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached(sql::TAG_OF)?
        .query_row(params![id, user_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if tag.is_none() && !req.read {
        return Ok(Vec::new());
    }
    let read = req.read as i64;
    let mut changed = if !and_newer {
        returned_ids(
            &mut conn.prepare_cached(sql::MARK_ONE)?,
            params![id, user_id, read],
        )?
    } else if req.read {
        returned_ids(
            &mut conn.prepare_cached(sql::READ_FROM)?,
            params![user_id, id],
        )?
    } else {
        returned_ids(
            &mut conn.prepare_cached(sql::UNREAD_FROM)?,
            params![user_id, id],
        )?
    };
    // Notifications that share the tag are one event for the user: toggled together.
    if let Some((Some(tag), origin)) = tag {
        changed.extend(returned_ids(
            &mut conn.prepare_cached(sql::MARK_TAG)?,
            params![user_id, tag, read, origin],
        )?);
    }
    Ok(changed)
}

/// Runs read toggles in order and records one `notifyRead` / `notifyUnread` per direction with
/// the ids that changed.
fn mark_read_all(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    requests: &[ReadRequest],
) -> rusqlite::Result<()> {
    let mut read = Vec::new();
    let mut unread = Vec::new();
    for r in requests {
        let changed = mark_read(conn, user_id, r)?;
        // A later toggle of the same id in the other direction undoes the earlier one.
        let (into, from) = if r.read {
            (&mut read, &mut unread)
        } else {
            (&mut unread, &mut read)
        };
        from.retain(|i| !changed.contains(i));
        into.extend(changed);
    }
    if read.is_empty() && unread.is_empty() {
        return Ok(());
    }
    let (chat_id, counter) = chat_counter(conn, user_id)?;
    for (kind, mut ids) in [(Kind::Read, read), (Kind::Unread, unread)] {
        ids.sort_unstable();
        ids.dedup();
        for chunk in ids.chunks(MAX_IDS_PER_EVENT) {
            record(
                conn,
                events,
                user_id,
                kind,
                event::read_payload(chat_id, chunk, counter),
            )?;
        }
    }
    Ok(())
}

/// Removes notifications by id. Every lifecycle removal (retention, the per-recipient cap) goes
/// through here, so that whatever must follow a removal (the counters follow by trigger; the
/// delivery events will hook in here) happens in one place and in the same transaction.
fn remove_notifications(
    conn: &Connection,
    events: &mut Events,
    ids: &[i64],
) -> rusqlite::Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let removed: Vec<(i64, i64, i64)> = conn
        .prepare_cached(sql::REMOVE)?
        .query_map([id_list(ids)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // Live clients learn of these removals like of any delete (issue 12: every visible change).
    let mut by_user: std::collections::BTreeMap<i64, Vec<(i64, i64)>> = Default::default();
    for (id, user_id, notify_type) in &removed {
        by_user
            .entry(*user_id)
            .or_default()
            .push((*id, *notify_type));
    }
    for (user_id, deleted) in by_user {
        record_deletes(conn, events, user_id, &deleted)?;
    }
    Ok(removed.len())
}

/// Keeps the recipient within `cap` stored notifications (`limits.max_notifications_per_user`)
/// after an insert: the oldest read ones go first, then the oldest unread. At most
/// `CAP_TRIM_MAX` go per call. The total is the chat counter, a primary-key lookup.
fn enforce_cap(
    conn: &Connection,
    events: &mut Events,
    user_id: i64,
    cap: i64,
) -> rusqlite::Result<()> {
    if cap <= 0 {
        return Ok(());
    }
    let total: i64 = conn
        .prepare_cached(sql::CHAT)?
        .query_row([user_id], |r| r.get(1))
        .optional()?
        .unwrap_or(0);
    let excess = (total - cap).min(CAP_TRIM_MAX);
    if excess <= 0 {
        return Ok(());
    }
    let mut ids: Vec<i64> = conn
        .prepare_cached(sql::CAP_OLDEST_READ)?
        .query_map(params![user_id, excess], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let missing = excess - ids.len() as i64;
    if missing > 0 {
        let unread: Vec<i64> = conn
            .prepare_cached(sql::CAP_OLDEST_UNREAD)?
            .query_map(params![user_id, missing], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.extend(unread);
    }
    remove_notifications(conn, events, &ids).map(|_| ())
}

/// One chunk of retention: of the `chunk` oldest notifications, removes those created before
/// `before`, and returns how many went: `chunk` only when all of them were old, which is when
/// the next chunk may hold more. A young notification among the oldest ids (the clock went
/// backwards) holds the ones after it back until it expires too.
fn expire_chunk(
    conn: &Connection,
    events: &mut Events,
    before: i64,
    chunk: usize,
) -> rusqlite::Result<usize> {
    let oldest: Vec<(i64, i64)> = conn
        .prepare_cached(sql::OLDEST)?
        .query_map([chunk as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let expired: Vec<i64> = oldest
        .iter()
        .filter(|(_, created)| *created < before)
        .map(|(id, _)| *id)
        .collect();
    remove_notifications(conn, events, &expired)
}

fn insert_notification(
    conn: &Connection,
    events: &mut Events,
    d: &Draft,
    created_at: i64,
    cap: i64,
    mail_delay: Option<i64>,
) -> rusqlite::Result<Option<i64>> {
    let user: Option<(bool, bool)> = conn
        .prepare_cached(
            "SELECT active, email <> '' AND email_notifications = 1 FROM users WHERE id = ?1",
        )?
        .query_row([d.recipient], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((true, mailable)) = user else {
        return Ok(None);
    };
    if let Some(tag) = &d.tag {
        // A TAG replace is a delete and then an add, as Bitrix24 announces it.
        let replaced: Vec<(i64, i64)> = conn
            .prepare_cached(sql::REPLACE_TAG)?
            .query_map(params![d.recipient, tag, d.tag_origin], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        record_deletes(conn, events, d.recipient, &replaced)?;
    }
    conn.prepare_cached(
        "INSERT INTO notifications
            (user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach, created_at,
             tag_origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        d.recipient,
        d.author_id,
        d.notify_type,
        d.text,
        d.text_out,
        d.tag,
        d.sub_tag,
        d.attach,
        created_at,
        d.tag_origin
    ])?;
    let id = conn.last_insert_rowid();
    let (chat_id, counter) = chat_counter(conn, d.recipient)?;
    let added = Notification {
        id,
        user_id: d.recipient,
        author_id: d.author_id,
        notify_type: d.notify_type,
        module: NOTIFY_MODULE.to_owned(),
        event: NOTIFY_EVENT.to_owned(),
        text: d.text.clone(),
        tag: d.tag.clone(),
        sub_tag: d.sub_tag.clone(),
        attach: d.attach.clone(),
        buttons: None,
        read: false,
        created_at,
    };
    record(
        conn,
        events,
        d.recipient,
        Kind::Add,
        event::add_payload(&added, chat_id, counter),
    )?;
    if let Some(delay) = mail_delay.filter(|_| mailable && !d.skip_email) {
        conn.prepare_cached(
            "INSERT INTO outbox (notification_id, user_id, tag, sender_name, due_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            id,
            d.recipient,
            d.tag,
            d.sender_name,
            created_at.saturating_add(delay),
            created_at
        ])?;
    }
    enforce_cap(conn, events, d.recipient, cap)?;
    Ok(Some(id))
}

/// A batch's run of notifications ([`Store::add_notifications`]) inside the writer's
/// transaction, under one savepoint: the statement journal copies each page the run changes
/// once, not once per insert. An insert fails only on a database error; then the run is rolled
/// back and made again with a savepoint per insert, so the failing insert fails alone (and,
/// with `stop_at_error`, nothing after it is made). `Err` only when a savepoint statement
/// itself fails.
fn insert_run(
    conn: &Connection,
    events: &mut Events,
    drafts: &[(Draft, i64)],
    cap: i64,
    mail_delay: Option<i64>,
    stop_at_error: bool,
) -> rusqlite::Result<Vec<StoreResult<Option<i64>>>> {
    let mark = events.list.len();
    conn.prepare_cached("SAVEPOINT run")?.execute([])?;
    let all: rusqlite::Result<Vec<Option<i64>>> = drafts
        .iter()
        .map(|(d, created_at)| insert_notification(conn, events, d, *created_at, cap, mail_delay))
        .collect();
    if let Ok(ids) = all {
        conn.prepare_cached("RELEASE run")?.execute([])?;
        return Ok(ids.into_iter().map(Ok).collect());
    }
    conn.prepare_cached("ROLLBACK TO run")?.execute([])?;
    events.list.truncate(mark);
    crate::metrics::record_group_rerun();
    let mut results = Vec::with_capacity(drafts.len());
    for (d, created_at) in drafts {
        let mark = events.list.len();
        conn.prepare_cached("SAVEPOINT one")?.execute([])?;
        let result = insert_notification(conn, events, d, *created_at, cap, mail_delay);
        if result.is_err() {
            conn.prepare_cached("ROLLBACK TO one")?.execute([])?;
            events.list.truncate(mark);
        }
        conn.prepare_cached("RELEASE one")?.execute([])?;
        let failed = result.is_err();
        results.push(result.map_err(backend));
        if failed && stop_at_error {
            break;
        }
    }
    conn.prepare_cached("RELEASE run")?.execute([])?;
    Ok(results)
}

/// E-mail sign-in finds a user by address (case-insensitive), so two users may not share one:
/// a `Conflict` naming the other user when a user other than `user_id` has `email` already.
/// Checked on the writer, so no second write can slip in between check and write. An empty
/// address (no e-mail) is never a duplicate.
fn check_email_free(conn: &Connection, user_id: i64, email: &str) -> StoreResult<()> {
    if email.is_empty() {
        return Ok(());
    }
    let other: Option<i64> = conn
        .query_row(
            "SELECT id FROM users WHERE id <> ?1 AND email <> '' AND lower(email) = lower(?2)
              LIMIT 1",
            params![user_id, email],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend)?;
    match other {
        Some(other) => Err(StoreError::Conflict(format!(
            "e-mail {email} is already used by user {other}; e-mail sign-in needs it to be unique"
        ))),
        None => Ok(()),
    }
}

fn insert_user(conn: &Connection, u: &User) -> StoreResult<()> {
    check_email_free(conn, u.id, &u.email)?;
    conn.execute(
        "INSERT INTO users (id, name, last_name, email, active, is_admin, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, strftime('%s','now'))",
        params![u.id, u.name, u.last_name, u.email, u.active, u.is_admin],
    )
    .map(|_| ())
    .map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => {
            StoreError::Conflict(format!("user {} already exists", u.id))
        }
        _ => backend(e),
    })
}

fn insert_webhook(
    conn: &Connection,
    user_id: i64,
    code_hash: &[u8; 32],
    scopes: &str,
    rate: &RateOverride,
) -> StoreResult<i64> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM users WHERE id = ?1)",
            [user_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
    if !exists {
        return Err(StoreError::NotFound(format!(
            "user {user_id} does not exist"
        )));
    }
    conn.execute(
        "INSERT INTO webhooks (user_id, code_hash, scopes, rate_per_second, rate_burst, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, strftime('%s','now'))",
        params![user_id, &code_hash[..], scopes, rate.per_second, rate.burst],
    )
    .map_err(backend)?;
    Ok(conn.last_insert_rowid())
}

const APP_COLUMNS: &str =
    "a.id, a.client_id, a.secret_hash, a.name, a.scopes, a.redirect_uri, a.allowed_users, a.active,
     a.rate_per_second, a.rate_burst";
/// Column index of the first value after `APP_COLUMNS` in a query that selects more.
const APP_COLUMN_COUNT: usize = 10;

fn row_to_app(r: &rusqlite::Row<'_>) -> rusqlite::Result<App> {
    let scopes: String = r.get(4)?;
    let allowed: Option<String> = r.get(6)?;
    Ok(App {
        id: r.get(0)?,
        client_id: r.get(1)?,
        secret_hash: r.get(2)?,
        name: r.get(3)?,
        scopes: split_scopes(&scopes),
        redirect_uri: r.get(5)?,
        allowed_users: allowed
            .map(|a| a.split(',').filter_map(|u| u.trim().parse().ok()).collect()),
        active: r.get(7)?,
        rate: RateOverride {
            per_second: r.get(8)?,
            burst: r.get(9)?,
        },
    })
}

/// Inserts a token pair; `code_hash` names the authorization code it descends from, if any.
fn insert_tokens(
    conn: &Connection,
    app_id: i64,
    user_id: i64,
    t: &NewTokens,
    code_hash: Option<&[u8]>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO oauth_tokens
            (app_id, user_id, access_hash, refresh_hash, access_expires, refresh_expires,
             code_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, strftime('%s','now'))",
    )?
    .execute(params![
        app_id,
        user_id,
        &t.access_hash[..],
        &t.refresh_hash[..],
        t.access_expires,
        t.refresh_expires,
        code_hash
    ])?;
    Ok(())
}

/// Whether the user and the app are both active: tokens are minted only then.
fn may_mint(conn: &Connection, app_id: i64, user_id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM users u, apps a
                        WHERE u.id = ?1 AND u.active = 1 AND a.id = ?2 AND a.active = 1)",
    )?
    .query_row(params![user_id, app_id], |r| r.get(0))
}

/// Ends every session and revokes every OAuth token of a user: after a password change or a
/// deactivation, nothing issued before still works.
fn end_credentials(conn: &Connection, user_id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
        .execute([user_id])?;
    conn.prepare_cached("UPDATE oauth_tokens SET revoked = 1 WHERE user_id = ?1 AND revoked = 0")?
        .execute([user_id])?;
    Ok(())
}

fn row_to_notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        user_id: r.get(1)?,
        author_id: r.get(2)?,
        notify_type: r.get(3)?,
        module: r.get(4)?,
        event: r.get(5)?,
        text: r.get(6)?,
        tag: r.get(7)?,
        sub_tag: r.get(8)?,
        attach: r.get(9)?,
        buttons: r.get(10)?,
        read: r.get(11)?,
        created_at: r.get(12)?,
    })
}

fn page(
    c: &Connection,
    stmt: &str,
    user_id: i64,
    before: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Notification>> {
    c.prepare_cached(stmt)?
        .query_map(params![user_id, before, limit as i64], row_to_notification)?
        .collect()
}

const USER_COLUMNS: &str = "id, name, last_name, email, active, is_admin, created_at";

fn row_to_user_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user: row_to_user(r)?,
        created_at: r.get(6)?,
    })
}

/// An id list as one parameter, for `IN (SELECT value FROM json_each(?))`: a caller's list can
/// be longer than SQLite's limit on bound parameters.
fn id_list(ids: &[i64]) -> SqlValue {
    SqlValue::Text(format!(
        "[{}]",
        ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
    ))
}

/// The WHERE clause of a history search, without the cursor, and its arguments.
fn search_filter(user_id: i64, q: &SearchRequest) -> (String, Vec<SqlValue>) {
    let mut clause = String::from("user_id = ?");
    let mut args = vec![SqlValue::Integer(user_id)];
    if let Some(text) = &q.text {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        clause.push_str(" AND text LIKE ? ESCAPE '\\'");
        args.push(SqlValue::Text(format!("%{escaped}%")));
    }
    if !q.types.is_empty() {
        let alternatives: Vec<&str> = q
            .types
            .iter()
            .map(|(module, event)| {
                args.push(SqlValue::Text(module.clone()));
                match event {
                    Some(e) => {
                        args.push(SqlValue::Text(e.clone()));
                        "(module = ? AND event = ?)"
                    }
                    None => "module = ?",
                }
            })
            .collect();
        clause.push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    if let Some(from) = q.date_from {
        clause.push_str(" AND created_at >= ?");
        args.push(SqlValue::Integer(from));
    }
    if let Some(to) = q.date_to {
        clause.push_str(" AND created_at < ?");
        args.push(SqlValue::Integer(to));
    }
    if !q.authors.is_empty() {
        clause.push_str(" AND author_id IN (SELECT value FROM json_each(?))");
        args.push(id_list(&q.authors));
    }
    if let Some(tag) = &q.group_tag {
        clause.push_str(" AND tag = ?");
        args.push(SqlValue::Text(tag.clone()));
    }
    (clause, args)
}

/// The WHERE clause of `user.get` and its arguments. Column names come from the field enum,
/// never from the caller; every value is a bound argument.
fn user_filter(q: &UserQuery) -> (String, Vec<SqlValue>) {
    let mut clause = String::from("1");
    let mut args = Vec::new();
    for c in &q.filter.conditions {
        let (column, collate) = match c.field {
            UserField::Id => ("id", ""),
            UserField::Name => ("name", ""),
            UserField::LastName => ("last_name", ""),
            // E-mail addresses compare without regard to ASCII case.
            UserField::Email => ("email", " COLLATE NOCASE"),
            UserField::Active => ("active", ""),
        };
        let compare = |op: FilterOp| match op {
            FilterOp::Greater => Some(">"),
            FilterOp::GreaterOrEqual => Some(">="),
            FilterOp::Less => Some("<"),
            FilterOp::LessOrEqual => Some("<="),
            _ => None,
        };
        match (&c.value, c.op) {
            (FilterValue::Flag(active), op) => {
                let wanted = if op == FilterOp::NotEqual {
                    !active
                } else {
                    *active
                };
                clause.push_str(" AND active = ?");
                args.push(SqlValue::Integer(wanted as i64));
            }
            (FilterValue::Id(id), op) => {
                if let Some(cmp) = compare(op) {
                    clause.push_str(&format!(" AND id {cmp} ?"));
                    args.push(SqlValue::Integer(*id));
                }
            }
            (FilterValue::Ids(ids), op) => {
                let not = if op == FilterOp::NotEqual { "NOT " } else { "" };
                clause.push_str(&format!(" AND id {not}IN (SELECT value FROM json_each(?))"));
                args.push(id_list(ids));
            }
            (FilterValue::Texts(texts), op) => match op {
                FilterOp::Plain if texts.iter().any(|t| t.contains('%')) => {
                    // A caller's own wildcards: any of the patterns.
                    let any = vec![format!("{column} LIKE ?"); texts.len()].join(" OR ");
                    clause.push_str(&format!(" AND ({any})"));
                    args.extend(texts.iter().cloned().map(SqlValue::Text));
                }
                FilterOp::Plain | FilterOp::Equal | FilterOp::NotEqual => {
                    let not = if op == FilterOp::NotEqual { "NOT " } else { "" };
                    clause.push_str(&format!(
                        " AND {column}{collate} {not}IN (SELECT value FROM json_each(?))"
                    ));
                    args.push(SqlValue::Text(
                        serde_json::to_string(texts).unwrap_or_else(|_| "[]".into()),
                    ));
                }
                FilterOp::Contains | FilterOp::NotContains => {
                    let like =
                        vec![format!("{column} LIKE ? ESCAPE '\\'"); texts.len()].join(" OR ");
                    let not = if op == FilterOp::NotContains {
                        "NOT "
                    } else {
                        ""
                    };
                    clause.push_str(&format!(" AND {not}({like})"));
                    args.extend(texts.iter().map(|t| {
                        let escaped = t
                            .replace('\\', "\\\\")
                            .replace('%', "\\%")
                            .replace('_', "\\_");
                        SqlValue::Text(format!("%{escaped}%"))
                    }));
                }
                op => {
                    if let (Some(cmp), Some(t)) = (compare(op), texts.first()) {
                        clause.push_str(&format!(" AND {column}{collate} {cmp} ?"));
                        args.push(SqlValue::Text(t.clone()));
                    }
                }
            },
        }
    }
    (clause, args)
}

fn row_to_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        last_name: r.get(2)?,
        email: r.get(3)?,
        active: r.get(4)?,
        is_admin: r.get(5)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn add_notification(&self, draft: Draft, created_at: i64) -> StoreResult<Option<i64>> {
        let cap = self.notification_cap;
        let mail_delay = self.mail_delay;
        match super::SHARED_COMMIT.try_with(Arc::clone) {
            Ok(shared) => {
                let insert = move |c: &Connection, events: &mut Events| {
                    insert_notification(c, events, &draft, created_at, cap, mail_delay)
                        .map_err(backend)
                };
                self.write_deferred(insert, shared).await
            }
            Err(_) => {
                let (reply, rx) = oneshot::channel();
                self.send_job(Job {
                    work: Work::Add(Box::new(AddJob {
                        draft,
                        created_at,
                        cap,
                        mail_delay,
                        reply,
                    })),
                    hold: false,
                    changes_auth: false,
                })
                .await?;
                rx.await
                    .map_err(|_| StoreError::Backend("writer dropped the request".into()))?
            }
        }
    }

    async fn add_notifications(
        &self,
        drafts: Vec<(Draft, i64)>,
        stop_at_error: bool,
    ) -> Vec<StoreResult<Option<i64>>> {
        let Ok(shared) = super::SHARED_COMMIT.try_with(Arc::clone) else {
            // Answered after their commit: one by one, as the trait's default does.
            return super::add_each(self, drafts, stop_at_error).await;
        };
        // One job for the writer: one trip there and back, one wake-up of each thread, and
        // one savepoint for the run instead of one per insert (issue 15, goal 4).
        let count = drafts.len();
        let (cap, mail_delay) = (self.notification_cap, self.mail_delay);
        let run = move |c: &Connection, events: &mut Events| {
            insert_run(c, events, &drafts, cap, mail_delay, stop_at_error).map_err(backend)
        };
        // Held open only when the batch says its next write follows at once; otherwise the
        // commit goes ahead while the batch finishes the run's commands.
        let hold = shared.more_expected();
        match self.write_deferred_holding(run, shared, hold).await {
            Ok(results) => results,
            // The run never ran: each draft fails (the first only, with `stop_at_error`).
            Err(e) => {
                let message = e.to_string();
                let failures = if stop_at_error { 1 } else { count };
                (0..failures)
                    .map(|_| Err(StoreError::Backend(message.clone())))
                    .collect()
            }
        }
    }

    async fn commit_barrier(&self) -> StoreResult<()> {
        // The writer runs writes in order, so the commit that covers this empty write also
        // covers every write sent before it.
        self.write_keeping_auth(|_, _| Ok(())).await
    }

    async fn webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
        self.read_webhooks(user_id).await
    }

    async fn cached_webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
        // Read before the query: a write committed while the query runs makes this entry stale.
        let epoch = self.auth_epoch.load(Ordering::SeqCst);
        if let Some(hit) = self
            .webhook_cache
            .lock()
            .expect("webhook cache poisoned")
            .get(&user_id)
            .filter(|e| e.epoch == epoch && e.read_at.elapsed() < WEBHOOK_CACHE_TTL)
        {
            return Ok(hit.hooks.clone());
        }
        let read_at = Instant::now();
        let hooks = self.read_webhooks(user_id).await?;
        // Unknown users are not cached, so guessing user ids cannot fill the map.
        if !hooks.is_empty() {
            let mut cache = self.webhook_cache.lock().expect("webhook cache poisoned");
            if cache.len() >= WEBHOOK_CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                user_id,
                CachedWebhooks {
                    epoch,
                    read_at,
                    hooks: hooks.clone(),
                },
            );
        }
        Ok(hooks)
    }

    async fn add_user(&self, user: User) -> StoreResult<()> {
        self.write(move |c| insert_user(c, &user)).await
    }

    async fn user(&self, id: i64) -> StoreResult<Option<User>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, name, last_name, email, active, is_admin FROM users WHERE id = ?1",
            )?
            .query_row([id], row_to_user)
            .optional()
        })
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
        self.write(move |c| insert_webhook(c, user_id, &code_hash, &scopes, &rate))
            .await
    }

    async fn user_count(&self) -> StoreResult<i64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)))
            .await
    }

    async fn user_login(&self, login: &str) -> StoreResult<Option<(User, Option<String>)>> {
        let login = login.trim().to_owned();
        self.read(move |c| {
            let by_id: Option<i64> = login.parse().ok();
            c.prepare_cached(
                "SELECT id, name, last_name, email, active, is_admin, password_hash FROM users
                  WHERE active = 1 AND (id = ?1 OR (email <> '' AND lower(email) = lower(?2)))
                  ORDER BY id LIMIT 1",
            )?
            .query_row(params![by_id, login], |r| Ok((row_to_user(r)?, r.get(6)?)))
            .optional()
        })
        .await
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
        self.write(move |c| {
            if let Some(email) = &u.email {
                check_email_free(c, user_id, email)?;
            }
            let n = c
                .execute(
                    "UPDATE users SET name = coalesce(?2, name), last_name = coalesce(?3, last_name),
                            email = coalesce(?4, email), is_admin = coalesce(?5, is_admin),
                            active = coalesce(?6, active),
                            password_hash = coalesce(?7, password_hash)
                      WHERE id = ?1",
                    params![
                        user_id,
                        u.name,
                        u.last_name,
                        u.email,
                        u.is_admin,
                        u.active,
                        u.password_hash
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "user {user_id} does not exist"
                )));
            }
            if u.ends_credentials() {
                end_credentials(c, user_id).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn list_webhooks(&self, user_id: Option<i64>) -> StoreResult<Vec<WebhookInfo>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, user_id, scopes, active, created_at, rate_per_second, rate_burst
                   FROM webhooks WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id",
            )?
            .query_map([user_id], |r| {
                let scopes: String = r.get(2)?;
                Ok(WebhookInfo {
                    id: r.get(0)?,
                    user_id: r.get(1)?,
                    scopes: split_scopes(&scopes),
                    active: r.get(3)?,
                    created_at: r.get(4)?,
                    rate: RateOverride {
                        per_second: r.get(5)?,
                        burst: r.get(6)?,
                    },
                })
            })?
            .collect()
        })
        .await
    }

    async fn set_webhook_active(&self, id: i64, active: bool) -> StoreResult<bool> {
        self.write(move |c| {
            c.execute(
                "UPDATE webhooks SET active = ?2 WHERE id = ?1",
                params![id, active],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps a ORDER BY a.id"))?
                .query_map([], row_to_app)?
                .collect()
        })
        .await
    }

    async fn set_app_active(&self, client_id: &str, active: bool) -> StoreResult<bool> {
        let client_id = client_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE apps SET active = ?2 WHERE client_id = ?1",
                params![client_id, active],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn revoke_tokens(&self, user_id: Option<i64>, app_id: Option<i64>) -> StoreResult<u64> {
        if user_id.is_none() && app_id.is_none() {
            return Err(StoreError::Conflict(
                "name a user, an application or both".into(),
            ));
        }
        self.write(move |c| {
            c.execute(
                "UPDATE oauth_tokens SET revoked = 1
                  WHERE revoked = 0 AND (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR app_id = ?2)",
                params![user_id, app_id],
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn add_app(&self, app: NewApp) -> StoreResult<i64> {
        self.write(move |c| {
            let allowed = app.allowed_users.as_ref().map(|u| {
                u.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            });
            c.execute(
                "INSERT INTO apps (client_id, secret_hash, name, scopes, redirect_uri, allowed_users,
                                   rate_per_second, rate_burst, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, strftime('%s','now'))",
                params![
                    app.client_id,
                    &app.secret_hash[..],
                    app.name,
                    app.scopes.join(","),
                    app.redirect_uri,
                    allowed,
                    app.rate.per_second,
                    app.rate.burst
                ],
            )
            .map_err(backend)?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<App>> {
        let client_id = client_id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {APP_COLUMNS} FROM apps a WHERE a.client_id = ?1"
            ))?
            .query_row([client_id], row_to_app)
            .optional()
        })
        .await
    }

    async fn install_app(&self, app_id: i64, user_id: i64) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO app_installs (app_id, user_id, installed_at)
                 VALUES (?1, ?2, strftime('%s','now'))",
                params![app_id, user_id],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn issue_tokens(&self, app_id: i64, user_id: i64, tokens: NewTokens) -> StoreResult<()> {
        self.write(move |c| insert_tokens(c, app_id, user_id, &tokens, None).map_err(backend))
            .await
    }

    async fn access_grant(&self, access_hash: [u8; 32]) -> StoreResult<Option<AccessGrant>> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {APP_COLUMNS}, t.user_id, t.access_expires
                   FROM oauth_tokens t JOIN apps a ON a.id = t.app_id
                  WHERE t.access_hash = ?1 AND t.revoked = 0"
            ))?
            .query_row([&access_hash[..]], |r| {
                Ok(AccessGrant {
                    app: row_to_app(r)?,
                    user_id: r.get(APP_COLUMN_COUNT)?,
                    access_expires: r.get(APP_COLUMN_COUNT + 1)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn app_grant_alive(&self, app_id: i64, user_id: i64, now: i64) -> StoreResult<bool> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM oauth_tokens t JOIN apps a ON a.id = t.app_id
                  WHERE t.user_id = ?1 AND t.app_id = ?2 AND t.revoked = 0
                    AND t.refresh_expires > ?3 AND a.active = 1)",
            )?
            .query_row(params![user_id, app_id, now], |r| r.get(0))
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        app_id: i64,
        refresh_hash: [u8; 32],
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>> {
        self.write(move |c| {
            // The UPDATE both checks and spends the token, so two concurrent refreshes with the
            // same token cannot both succeed.
            let spent: Option<(i64, Option<Vec<u8>>)> = c
                .prepare_cached(
                    "UPDATE oauth_tokens SET revoked = 1
                      WHERE refresh_hash = ?1 AND app_id = ?2 AND revoked = 0 AND refresh_expires > ?3
                     RETURNING user_id, code_hash",
                )
                .and_then(|mut st| {
                    st.query_row(params![&refresh_hash[..], app_id, now], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()
                })
                .map_err(backend)?;
            let Some((user_id, code_hash)) = spent else {
                return Ok(None);
            };
            // A deactivated user or a disabled app gets nothing; the token stays spent.
            if !may_mint(c, app_id, user_id).map_err(backend)? {
                return Ok(None);
            }
            // The new pair keeps its lineage, so a replayed code still reaches it.
            insert_tokens(c, app_id, user_id, &tokens, code_hash.as_deref()).map_err(backend)?;
            Ok(Some(user_id))
        })
        .await
    }

    async fn add_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        user_id: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO oauth_codes (code_hash, app_id, user_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![&code_hash[..], app_id, user_id, expires_at],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn exchange_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>> {
        self.write(move |c| {
            let row: Option<(i64, i64, i64, bool)> = c
                .query_row(
                    "SELECT app_id, user_id, expires_at, spent FROM oauth_codes WHERE code_hash = ?1",
                    [&code_hash[..]],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()
                .map_err(backend)?;
            let Some((code_app, user_id, expires, spent)) = row else {
                return Ok(None);
            };
            if spent {
                // RFC 6749 §4.1.2: a code used twice may have been stolen; whatever it
                // produced, and every pair refreshed from that, is revoked.
                let n = c
                    .execute(
                        "UPDATE oauth_tokens SET revoked = 1 WHERE code_hash = ?1 AND revoked = 0",
                        [&code_hash[..]],
                    )
                    .map_err(backend)?;
                tracing::warn!(revoked = n, "authorization code presented again; its tokens are revoked");
                return Ok(None);
            }
            c.execute(
                "UPDATE oauth_codes SET spent = 1 WHERE code_hash = ?1",
                [&code_hash[..]],
            )
            .map_err(backend)?;
            if code_app != app_id || expires <= now || !may_mint(c, app_id, user_id).map_err(backend)? {
                return Ok(None);
            }
            insert_tokens(c, app_id, user_id, &tokens, Some(&code_hash[..])).map_err(backend)?;
            Ok(Some(user_id))
        })
        .await
    }

    async fn add_session(&self, id_hash: [u8; 32], session: Session) -> StoreResult<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&id_hash[..], session.user_id, session.expires_at],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn session(&self, id_hash: [u8; 32], now: i64) -> StoreResult<Option<Session>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT s.user_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
                  WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND u.active = 1",
            )?
            .query_row(params![&id_hash[..], now], |r| {
                Ok(Session {
                    user_id: r.get(0)?,
                    expires_at: r.get(1)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn session_alive(
        &self,
        user_id: i64,
        lo: [u8; 32],
        hi: [u8; 32],
        now: i64,
    ) -> StoreResult<bool> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sessions
                  WHERE id_hash >= ?1 AND id_hash <= ?2 AND user_id = ?3 AND expires_at > ?4)",
            )?
            .query_row(params![&lo[..], &hi[..], user_id, now], |r| r.get(0))
        })
        .await
    }

    async fn delete_session(&self, id_hash: [u8; 32]) -> StoreResult<()> {
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE id_hash = ?1", [&id_hash[..]])
                .map(|_| ())
                .map_err(backend)
        })
        .await
    }

    async fn setting(&self, key: &str, init: String) -> StoreResult<String> {
        let key = key.to_owned();
        self.write(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)",
                params![key, init],
            )
            .map_err(backend)?;
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .map_err(backend)
        })
        .await
    }

    async fn notify_chat(&self, user_id: i64) -> StoreResult<Option<NotifyChat>> {
        self.read(move |c| {
            c.prepare_cached(sql::CHAT)?
                .query_row([user_id], |r| {
                    Ok(NotifyChat {
                        chat_id: r.get(0)?,
                        total: r.get(1)?,
                        unread: r.get(2)?,
                    })
                })
                .optional()
        })
        .await
    }

    async fn notification_page(
        &self,
        user_id: i64,
        cursor: Cursor,
        limit: usize,
    ) -> StoreResult<Vec<Notification>> {
        self.read(move |c| {
            let mut out = Vec::with_capacity(limit);
            let normal_before = match cursor {
                Cursor::Start | Cursor::Confirm(_) => {
                    let before = match cursor {
                        Cursor::Confirm(id) => id,
                        _ => i64::MAX,
                    };
                    out = page(c, sql::PAGE_CONFIRM, user_id, before, limit)?;
                    i64::MAX
                }
                Cursor::Normal(id) => id,
            };
            if out.len() < limit {
                let rest = page(
                    c,
                    sql::PAGE_NORMAL,
                    user_id,
                    normal_before,
                    limit - out.len(),
                )?;
                out.extend(rest);
            }
            Ok(out)
        })
        .await
    }

    async fn notification(&self, user_id: i64, id: i64) -> StoreResult<Option<Notification>> {
        self.read(move |c| {
            c.prepare_cached(sql::ONE)?
                .query_row(params![id, user_id], row_to_notification)
                .optional()
        })
        .await
    }

    async fn search_notifications(
        &self,
        user_id: i64,
        query: SearchRequest,
    ) -> StoreResult<(Vec<Notification>, Option<i64>)> {
        self.read(move |c| {
            let (clause, args) = search_filter(user_id, &query);
            let total = if query.first_page() {
                let count = format!("SELECT COUNT(*) FROM notifications WHERE {clause}");
                Some(c.query_row(&count, params_from_iter(args.iter()), |r| r.get(0))?)
            } else {
                None
            };
            let mut page_args = args;
            page_args.push(SqlValue::Integer(query.before.unwrap_or(i64::MAX)));
            page_args.push(SqlValue::Integer(query.limit as i64));
            let select = format!(
                "SELECT {} FROM notifications WHERE {clause} AND id < ? ORDER BY id DESC LIMIT ? + 0",
                notification_columns!()
            );
            let rows = c
                .prepare(&select)?
                .query_map(params_from_iter(page_args.iter()), row_to_notification)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn mark_read(&self, user_id: i64, requests: Vec<ReadRequest>) -> StoreResult<()> {
        self.write_keeping_auth(move |c, events| {
            mark_read_all(c, events, user_id, &requests).map_err(backend)
        })
        .await
    }

    async fn delete_own(&self, user_id: i64, id: i64) -> StoreResult<bool> {
        self.write_keeping_auth(move |c, events| {
            (|| {
                let deleted: Option<i64> = c
                    .prepare_cached(sql::DELETE_OWN)?
                    .query_row(params![id, user_id], |r| r.get(0))
                    .optional()?;
                if let Some(notify_type) = deleted {
                    record_deletes(c, events, user_id, &[(id, notify_type)])?;
                }
                Ok(deleted.is_some())
            })()
            .map_err(backend)
        })
        .await
    }

    async fn delete_by_tag(
        &self,
        field: TagField,
        value: String,
        origin: String,
    ) -> StoreResult<u64> {
        let stmt = match field {
            TagField::Tag => sql::DELETE_TAG,
            TagField::SubTag => sql::DELETE_SUB_TAG,
        };
        self.write_keeping_auth(move |c, events| {
            delete_returning(c, events, stmt, &value, &origin).map_err(backend)
        })
        .await
    }

    async fn confirm(
        &self,
        user_id: i64,
        id: i64,
        value: String,
    ) -> StoreResult<Option<Notification>> {
        self.write_keeping_auth(move |c, events| {
            confirm(c, events, user_id, id, &value).map_err(backend)
        })
        .await
    }

    async fn answer(
        &self,
        user_id: i64,
        id: i64,
        text: String,
    ) -> StoreResult<Option<Notification>> {
        self.write_keeping_auth(move |c, events| {
            answer(c, events, user_id, id, &text).map_err(backend)
        })
        .await
    }

    fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    fn auth_epoch(&self) -> Option<u64> {
        Some(self.auth_epoch.load(Ordering::SeqCst))
    }

    async fn events_after(
        &self,
        user_id: i64,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Event>> {
        self.read(move |c| {
            c.prepare_cached(sql::EVENTS_AFTER)?
                .query_map(params![user_id, after, limit as i64], |r| {
                    let kind: String = r.get(1)?;
                    let payload: String = r.get(2)?;
                    Ok((r.get::<_, i64>(0)?, kind, payload))
                })?
                .filter_map(|row| match row {
                    // A kind this build does not know (written by a newer one) is skipped.
                    Ok((id, kind, payload)) => Kind::from_name(&kind).map(|kind| {
                        Ok(Event {
                            id,
                            user_id,
                            kind,
                            payload: payload.into(),
                            sse: Default::default(),
                        })
                    }),
                    Err(e) => Some(Err(e)),
                })
                .collect()
        })
        .await
    }

    async fn event_head(&self) -> StoreResult<i64> {
        self.read(|c| c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0)))
            .await
    }

    async fn prune_events(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        self.write_keeping_auth(move |c, _| {
            c.prepare_cached(sql::PRUNE_EVENTS)
                .and_then(|mut s| s.execute(params![before, chunk as i64]))
                .map_err(backend)
        })
        .await
    }

    async fn set_email_notifications(&self, user_id: i64, on: bool) -> StoreResult<bool> {
        self.write(move |c| {
            c.execute(
                "UPDATE users SET email_notifications = ?2 WHERE id = ?1",
                params![user_id, on],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn email_notifications(&self, user_id: i64) -> StoreResult<Option<bool>> {
        self.read(move |c| {
            c.prepare_cached("SELECT email_notifications FROM users WHERE id = ?1")?
                .query_row([user_id], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn due_mails(&self, now: i64, limit: usize) -> StoreResult<Vec<DueMail>> {
        self.read(move |c| {
            c.prepare_cached(sql::DUE_MAILS)?
                .query_map(params![now, limit as i64], |r| {
                    let live: Option<bool> = r.get(6)?;
                    let mailable: Option<bool> = r.get(10)?;
                    Ok(DueMail {
                        outbox_id: r.get(0)?,
                        notification_id: r.get(1)?,
                        user_id: r.get(2)?,
                        tag: r.get(3)?,
                        sender_name: r.get(4)?,
                        attempts: r.get(5)?,
                        notification: match live {
                            Some(true) => Some(MailText {
                                text: r.get(7)?,
                                text_out: r.get(8)?,
                                created_at: r.get(9)?,
                            }),
                            _ => None,
                        },
                        recipient: match mailable {
                            Some(true) => Some(Recipient {
                                email: r.get(11)?,
                                name: r.get(12)?,
                            }),
                            _ => None,
                        },
                    })
                })?
                .collect()
        })
        .await
    }

    async fn update_mails(&self, updates: Vec<(i64, MailUpdate)>) -> StoreResult<()> {
        self.write_keeping_auth(move |c, _| {
            (|| {
                let mut done = c.prepare_cached(
                    "UPDATE outbox SET state = ?2, done_at = ?3, last_error = ?4,
                            attempts = attempts + ?5 WHERE id = ?1",
                )?;
                let mut retry = c.prepare_cached(
                    "UPDATE outbox SET due_at = ?2, last_error = ?3, attempts = attempts + 1
                      WHERE id = ?1",
                )?;
                for (id, update) in &updates {
                    match update {
                        MailUpdate::Sent { at } => {
                            done.execute(params![id, "sent", at, None::<String>, 0])?
                        }
                        MailUpdate::Skipped { at } => {
                            done.execute(params![id, "skipped", at, None::<String>, 0])?
                        }
                        MailUpdate::Dead { at, error } => {
                            done.execute(params![id, "dead", at, error, 1])?
                        }
                        MailUpdate::Retry { due_at, error } => {
                            retry.execute(params![id, due_at, error])?
                        }
                    };
                }
                Ok(())
            })()
            .map_err(backend)
        })
        .await
    }

    async fn outbox_rows(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT id, notification_id, user_id, tag, state, attempts, due_at, last_error,
                        created_at, done_at
                   FROM outbox WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2 + 0",
            )?
            .query_map(params![state, limit as i64], |r| {
                Ok(OutboxRow {
                    id: r.get(0)?,
                    notification_id: r.get(1)?,
                    user_id: r.get(2)?,
                    tag: r.get(3)?,
                    state: r.get(4)?,
                    attempts: r.get(5)?,
                    due_at: r.get(6)?,
                    last_error: r.get(7)?,
                    created_at: r.get(8)?,
                    done_at: r.get(9)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn retry_mail(&self, id: i64, now: i64) -> StoreResult<bool> {
        self.write_keeping_auth(move |c, _| {
            c.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, due_at = ?2, last_error = NULL,
                        done_at = NULL WHERE id = ?1",
                params![id, now],
            )
            .map(|n| n > 0)
            .map_err(backend)
        })
        .await
    }

    async fn outbox_depth(&self) -> StoreResult<i64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn prune_outbox(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        self.write_keeping_auth(move |c, _| {
            c.execute(
                "DELETE FROM outbox WHERE id IN (
                     SELECT id FROM outbox WHERE state IN ('sent', 'skipped') AND done_at < ?1
                      ORDER BY id LIMIT ?2 + 0)",
                params![before, chunk as i64],
            )
            .map_err(backend)
        })
        .await
    }

    async fn users_by_id(&self, ids: Vec<i64>) -> StoreResult<Vec<UserRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.read(move |c| {
            let select = format!(
                "SELECT {USER_COLUMNS} FROM users \
                 WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
            );
            c.prepare_cached(&select)?
                .query_map([id_list(&ids)], row_to_user_record)?
                .collect()
        })
        .await
    }

    async fn find_users(&self, query: UserQuery) -> StoreResult<(Vec<UserRecord>, i64)> {
        self.read(move |c| {
            let (clause, args) = user_filter(&query);
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM users WHERE {clause}"),
                params_from_iter(args.iter()),
                |r| r.get(0),
            )?;
            let column = match query.sort {
                UserSort::Id => "id",
                UserSort::Name => "name",
                UserSort::LastName => "last_name",
                UserSort::Email => "email",
            };
            let direction = if query.descending { "DESC" } else { "ASC" };
            let select = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE {clause} \
                 ORDER BY {column} {direction}, id {direction} LIMIT ? + 0 OFFSET ? + 0"
            );
            let mut page_args = args;
            page_args.push(SqlValue::Integer(query.limit as i64));
            page_args.push(SqlValue::Integer(query.offset as i64));
            let rows = c
                .prepare(&select)?
                .query_map(params_from_iter(page_args.iter()), row_to_user_record)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total))
        })
        .await
    }

    async fn expire_notifications(&self, before: i64, chunk: usize) -> StoreResult<usize> {
        self.write_keeping_auth(move |c, events| {
            expire_chunk(c, events, before, chunk.max(1)).map_err(backend)
        })
        .await
    }

    async fn forget_expired_credentials(&self, now: i64) -> StoreResult<()> {
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])
                .map_err(backend)?;
            // Spent codes are kept a day past their expiry to recognise a replay.
            c.execute(
                "DELETE FROM oauth_codes WHERE expires_at <= ?1",
                [now - 86_400],
            )
            .map_err(backend)?;
            c.execute(
                "DELETE FROM oauth_tokens
                  WHERE refresh_expires <= ?1 OR (revoked = 1 AND access_expires <= ?1)",
                [now],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    fn health(&self) -> Result<(), String> {
        let write = self
            .health
            .write_error
            .lock()
            .expect("health poisoned")
            .clone();
        let checkpoint = self
            .health
            .checkpoint_error
            .lock()
            .expect("health poisoned")
            .clone();
        match write.or(checkpoint) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn flush(&self) {
        let _ = self.write(|_| Ok(())).await;
    }

    fn writer_queue_depth(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    async fn reset(&self, keep_directory: bool) -> StoreResult<()> {
        self.write(move |c| toolkit::reset(c, keep_directory)).await
    }

    async fn put_setting(&self, key: &str, value: String) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |c| toolkit::put_setting(c, &key, &value))
            .await
    }

    async fn upsert_user(&self, user: User) -> StoreResult<bool> {
        self.write(move |c| toolkit::upsert_user(c, &user)).await
    }

    async fn ensure_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
        rate: RateOverride,
    ) -> StoreResult<(i64, bool)> {
        let scopes = scopes.join(",");
        self.write(move |c| toolkit::ensure_webhook(c, user_id, &code_hash, &scopes, &rate))
            .await
    }

    async fn upsert_app(&self, app: NewApp) -> StoreResult<(i64, bool)> {
        self.write(move |c| toolkit::upsert_app(c, &app)).await
    }
}

pub fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(id: i64) -> User {
        User {
            id,
            name: "U".into(),
            last_name: String::new(),
            email: String::new(),
            active: true,
            is_admin: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhook_cache_sees_writes_through_the_store_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_user(admin(1)).await.unwrap();
        store
            .add_webhook(1, [1; 32], &["im".to_owned()], RateOverride::default())
            .await
            .unwrap();
        assert_eq!(store.cached_webhooks_of(1).await.unwrap().len(), 1);

        // A second webhook is visible to the very next cached lookup, well within the TTL.
        store
            .add_webhook(1, [2; 32], &["im".to_owned()], RateOverride::default())
            .await
            .unwrap();
        let hooks = store.cached_webhooks_of(1).await.unwrap();
        assert_eq!(hooks.len(), 2);

        // The path notification inserts take leaves the cached entry valid.
        let epoch = store.auth_epoch.load(Ordering::SeqCst);
        store.write_keeping_auth(|_, _| Ok(())).await.unwrap();
        assert_eq!(store.auth_epoch.load(Ordering::SeqCst), epoch);
        // Any other write voids it.
        store.flush().await;
        assert_eq!(store.auth_epoch.load(Ordering::SeqCst), epoch + 1);
        assert_eq!(store.cached_webhooks_of(1).await.unwrap(), hooks);
    }

    fn draft(recipient: i64, text: &str) -> Draft {
        Draft {
            recipient,
            author_id: 0,
            notify_type: 4,
            text: text.into(),
            text_out: String::new(),
            tag: None,
            sub_tag: None,
            tag_origin: None,
            attach: None,
            skip_email: false,
            sender_name: None,
        }
    }

    /// Inserts run without savepoints in groups of their own; a failing one makes the writer
    /// roll the group back and run it again with savepoints, so it fails alone.
    /// Makes the writer refuse every notification whose text is `boom`. A temporary trigger
    /// lives on the writer's own connection only.
    async fn refuse_boom(store: &SqliteStore) {
        store
            .write(|c| {
                c.execute_batch(
                    "CREATE TEMP TRIGGER boom BEFORE INSERT ON notifications \
                     WHEN NEW.text = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END",
                )
                .map_err(backend)
            })
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_insert_fails_alone_in_a_group_of_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        store.add_user(admin(1)).await.unwrap();
        refuse_boom(&store).await;
        let reruns_before = crate::metrics::group_reruns();
        let mut failed = 0;
        for round in 0..20 {
            // Held back by a slow write, so that the inserts queue up and form one group.
            let hold = tokio::spawn({
                let store = Arc::clone(&store);
                async move {
                    store
                        .write(|_| {
                            std::thread::sleep(Duration::from_millis(30));
                            Ok(())
                        })
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
            let adds = (0..8).map(|i| {
                let store = Arc::clone(&store);
                let text = if i == 3 {
                    "boom".to_owned()
                } else {
                    format!("r{round} n{i}")
                };
                tokio::spawn(async move { store.add_notification(draft(1, &text), 1).await })
            });
            let adds: Vec<_> = adds.collect();
            hold.await.unwrap().unwrap();
            for (i, add) in adds.into_iter().enumerate() {
                match add.await.unwrap() {
                    Ok(Some(_)) => assert_ne!(i, 3),
                    Err(e) => {
                        assert_eq!(i, 3, "{e}");
                        assert!(e.to_string().contains("boom"), "{e}");
                        failed += 1;
                    }
                    Ok(None) => panic!("user 1 exists"),
                }
            }
        }
        assert_eq!(failed, 20);
        let (stored, events): (i64, i64) = store
            .read(|c| {
                c.query_row(
                    "SELECT (SELECT count(*) FROM notifications), (SELECT count(*) FROM events)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
            .unwrap();
        assert_eq!(
            (stored, events),
            (140, 140),
            "every other insert and its event stand"
        );
        assert!(
            crate::metrics::group_reruns() > reruns_before,
            "no group of inserts was run again"
        );
    }

    /// A batch's run of adds is one job for the writer, answered before the commit, its
    /// inserts in order. A failing insert fails alone (the run is made again with a savepoint
    /// per insert), and with `stop_at_error` nothing after it is made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_of_adds_is_one_write_and_a_failing_insert_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_user(admin(1)).await.unwrap();
        refuse_boom(&store).await;
        let run = |texts: &[&str]| -> Vec<(Draft, i64)> {
            texts.iter().map(|t| (draft(1, t), 7)).collect()
        };
        let shared = Arc::new(super::super::SharedCommit::default());

        let all = super::super::SHARED_COMMIT
            .scope(
                shared.clone(),
                store.add_notifications(run(&["a", "b", "c"]), false),
            )
            .await;
        let ids: Vec<i64> = all.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

        let mixed = super::super::SHARED_COMMIT
            .scope(
                shared.clone(),
                store.add_notifications(run(&["d", "boom", "e"]), false),
            )
            .await;
        assert_eq!(mixed.len(), 3);
        assert!(matches!(mixed[0], Ok(Some(_))) && matches!(mixed[2], Ok(Some(_))));
        assert!(mixed[1].as_ref().unwrap_err().to_string().contains("boom"));

        let halted = super::super::SHARED_COMMIT
            .scope(
                shared.clone(),
                store.add_notifications(run(&["f", "boom", "g"]), true),
            )
            .await;
        assert_eq!(halted.len(), 2, "nothing after the failure");
        assert!(matches!(halted[0], Ok(Some(_))) && halted[1].is_err());

        store.commit_barrier().await.unwrap();
        assert!(!shared.failed());
        let texts: Vec<String> = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .prepare("SELECT text FROM notifications ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(texts, ["a", "b", "c", "d", "e", "f"]);
        let events: i64 = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 6, "a rolled-back insert leaves no event");
    }

    /// A write that fails inside a group takes back only its own changes: the writes before
    /// and after it in the same transaction (a batch's held writes) stand.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .write(|c| {
                c.execute_batch("CREATE TABLE t (x INTEGER)")
                    .map_err(backend)
            })
            .await
            .unwrap();
        let shared = Arc::new(super::super::SharedCommit::default());
        for x in [1, 2, 3] {
            let insert = move |c: &Connection, _: &mut Events| {
                c.execute("INSERT INTO t (x) VALUES (?1)", [x])
                    .map_err(backend)?;
                if x == 2 {
                    return Err(StoreError::Backend("refused".into()));
                }
                Ok(())
            };
            let outcome = store.write_deferred(insert, shared.clone()).await;
            assert_eq!(outcome.is_ok(), x != 2, "{x}");
        }
        store.commit_barrier().await.unwrap();
        assert!(!shared.failed());
        let rows: Vec<i64> = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, [1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_goes_in_chunks_and_stops_at_the_first_young_notification() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_user(admin(1)).await.unwrap();
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.busy_timeout(BUSY_TIMEOUT).unwrap();
        // Created at 10, 20, ... 60; the one at 30 was read.
        for t in [10, 20, 30, 40, 50, 60] {
            other
                .execute(
                    "INSERT INTO notifications (user_id, notify_type, text, is_read, created_at)
                     VALUES (1, 4, 'x', ?1 = 30, ?1)",
                    [t],
                )
                .unwrap();
        }
        // Before 35: a full chunk of two, then one more beside a young one, which ends the run.
        assert_eq!(store.expire_notifications(35, 2).await.unwrap(), 2);
        assert_eq!(store.expire_notifications(35, 2).await.unwrap(), 1);
        assert_eq!(store.expire_notifications(35, 2).await.unwrap(), 0);
        let chat = store.notify_chat(1).await.unwrap().unwrap();
        assert_eq!((chat.total, chat.unread), (3, 3), "the counters followed");
        assert_eq!(store.expire_notifications(1000, 100).await.unwrap(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhook_cache_notices_changes_from_other_connections_within_its_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_user(admin(1)).await.unwrap();
        store
            .add_webhook(1, [1; 32], &["im".to_owned()], RateOverride::default())
            .await
            .unwrap();
        assert_eq!(store.cached_webhooks_of(1).await.unwrap().len(), 1);

        // What an admin command in another process does: its own connection, its own commit.
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.busy_timeout(BUSY_TIMEOUT).unwrap();
        other
            .execute("UPDATE webhooks SET active = 0 WHERE user_id = 1", [])
            .unwrap();

        // The uncached lookup sees it at once; the cached one at the latest after the TTL.
        assert!(store.webhooks_of(1).await.unwrap().is_empty());
        tokio::time::sleep(WEBHOOK_CACHE_TTL + Duration::from_millis(50)).await;
        assert!(store.cached_webhooks_of(1).await.unwrap().is_empty());
    }

    /// Issue 15 goal 5: streams skip re-checking while `auth_epoch` stands, so another
    /// process's commit (an admin command's revocation) must move it no later than the next
    /// group the writer commits, before that group's events are published.
    #[tokio::test]
    async fn another_connections_commit_moves_the_auth_epoch_at_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.add_user(admin(1)).await.unwrap();
        store.write_keeping_auth(|_, _| Ok(())).await.unwrap();
        let epoch = store.auth_epoch().unwrap();
        // The writer's own lifecycle commits leave it.
        store.write_keeping_auth(|_, _| Ok(())).await.unwrap();
        assert_eq!(store.auth_epoch(), Some(epoch));

        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.busy_timeout(BUSY_TIMEOUT).unwrap();
        other
            .execute("UPDATE users SET active = 0 WHERE id = 1", [])
            .unwrap();
        let mut sub = store.hub().subscribe(1).unwrap();
        let store = Arc::new(store);
        let writer = store.clone();
        let write = tokio::spawn(async move {
            writer
                .write_keeping_auth(|c, events| {
                    record(c, events, 1, Kind::Read, "{}".into()).map_err(backend)
                })
                .await
        });
        // Moved by the time the event reaches a subscriber, before the writer answers.
        assert!(sub.recv().await.is_some());
        assert!(store.auth_epoch().unwrap() > epoch);
        write.await.unwrap().unwrap();
    }
}
