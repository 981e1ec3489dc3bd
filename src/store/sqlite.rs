//! The embedded SQLite backend.
//!
//! One writer thread owns the only write connection and group-commits: it takes every write that
//! is queued, runs each inside its own savepoint of one transaction, commits once
//! (`synchronous=FULL`, so the WAL is fsynced), and only then answers the callers. Reads use a
//! small pool of separate connections, which WAL mode lets run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, StoreResult, User, Webhook};
use crate::domain::notify::Draft;
use crate::limits::RateOverride;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0003_webhook_rate_limits.sql"),
];

/// How many queued writes one transaction may take; bounds the latency of the first in line.
const MAX_GROUP: usize = 512;
/// How many writes may wait for the writer before callers are made to wait their turn.
const QUEUE_DEPTH: usize = 8192;
/// Admin commands write to the same file while the server runs; they wait rather than fail.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub const DB_FILE: &str = "imnotify.sqlite3";

enum WriteOp {
    AddNotification {
        draft: Draft,
        created_at: i64,
        reply: oneshot::Sender<StoreResult<Option<i64>>>,
    },
    AddUser {
        user: User,
        reply: oneshot::Sender<StoreResult<()>>,
    },
    AddWebhook {
        user_id: i64,
        code_hash: [u8; 32],
        scopes: String,
        rate: RateOverride,
        reply: oneshot::Sender<StoreResult<i64>>,
    },
    Flush {
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

pub struct SqliteStore {
    writer: mpsc::Sender<WriteOp>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database in `data_dir`, applies migrations, and starts the
    /// writer thread.
    pub fn open(data_dir: &Path) -> StoreResult<SqliteStore> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_connection(&path, false).map_err(backend)?;
        migrate(&mut conn).map_err(backend)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Backend(format!("starting writer: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Mutex::new(Vec::new()),
            path,
        })
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> WriteOp,
    ) -> StoreResult<T> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Backend("writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("writer dropped the request".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreResult<T> {
        let conn = match self.readers.lock().expect("reader pool poisoned").pop() {
            Some(c) => c,
            None => open_connection(&self.path, true).map_err(backend)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task: {e}")))?;
        self.readers
            .lock()
            .expect("reader pool poisoned")
            .push(conn);
        result.map_err(backend)
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
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

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteOp>) {
    let mut group: Vec<WriteOp> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, &mut group);
    }
}

/// The outcome of one write, held until the group's commit decides whether it stands.
enum Outcome {
    Notification(StoreResult<Option<i64>>),
    Unit(StoreResult<()>),
    Id(StoreResult<i64>),
}

fn commit_group(conn: &mut Connection, group: &mut Vec<WriteOp>) {
    let mut outcomes = Vec::with_capacity(group.len());
    let committed = (|| -> rusqlite::Result<()> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in group.iter() {
            // A savepoint per write: one failing write must not take the others down with it.
            let sp = tx.savepoint()?;
            let outcome = apply(&sp, op);
            if outcome_ok(&outcome) {
                sp.commit()?;
            }
            outcomes.push(outcome);
        }
        tx.commit()
    })();
    match committed {
        Ok(()) => {
            for (op, outcome) in group.drain(..).zip(outcomes) {
                reply(op, outcome);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = group.len(), "group commit failed");
            for op in group.drain(..) {
                let err = || StoreError::Backend(e.to_string());
                let outcome = match &op {
                    WriteOp::AddNotification { .. } => Outcome::Notification(Err(err())),
                    WriteOp::AddWebhook { .. } => Outcome::Id(Err(err())),
                    WriteOp::AddUser { .. } | WriteOp::Flush { .. } => Outcome::Unit(Err(err())),
                };
                reply(op, outcome);
            }
        }
    }
}

fn outcome_ok(o: &Outcome) -> bool {
    match o {
        Outcome::Notification(r) => r.is_ok(),
        Outcome::Unit(r) => r.is_ok(),
        Outcome::Id(r) => r.is_ok(),
    }
}

fn reply(op: WriteOp, outcome: Outcome) {
    // A caller that went away (its request was cancelled) no longer needs the answer; the write
    // itself stands.
    match (op, outcome) {
        (WriteOp::AddNotification { reply, .. }, Outcome::Notification(r)) => {
            let _ = reply.send(r);
        }
        (WriteOp::AddUser { reply, .. }, Outcome::Unit(r))
        | (WriteOp::Flush { reply }, Outcome::Unit(r)) => {
            let _ = reply.send(r);
        }
        (WriteOp::AddWebhook { reply, .. }, Outcome::Id(r)) => {
            let _ = reply.send(r);
        }
        _ => unreachable!("outcome kind always matches its write"),
    }
}

fn apply(conn: &Connection, op: &WriteOp) -> Outcome {
    match op {
        WriteOp::AddNotification {
            draft, created_at, ..
        } => Outcome::Notification(insert_notification(conn, draft, *created_at).map_err(backend)),
        WriteOp::AddUser { user, .. } => Outcome::Unit(insert_user(conn, user)),
        WriteOp::AddWebhook {
            user_id,
            code_hash,
            scopes,
            rate,
            ..
        } => Outcome::Id(insert_webhook(conn, *user_id, code_hash, scopes, rate)),
        WriteOp::Flush { .. } => Outcome::Unit(Ok(())),
    }
}

fn insert_notification(
    conn: &Connection,
    d: &Draft,
    created_at: i64,
) -> rusqlite::Result<Option<i64>> {
    let active: Option<bool> = conn
        .prepare_cached("SELECT active FROM users WHERE id = ?1")?
        .query_row([d.recipient], |r| r.get(0))
        .optional()?;
    if active != Some(true) {
        return Ok(None);
    }
    if let Some(tag) = &d.tag {
        conn.prepare_cached("DELETE FROM notifications WHERE user_id = ?1 AND tag = ?2")?
            .execute(params![d.recipient, tag])?;
    }
    conn.prepare_cached(
        "INSERT INTO notifications
            (user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
        created_at
    ])?;
    Ok(Some(conn.last_insert_rowid()))
}

fn insert_user(conn: &Connection, u: &User) -> StoreResult<()> {
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
        return Err(StoreError::Conflict(format!(
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
        self.write(|reply| WriteOp::AddNotification {
            draft,
            created_at,
            reply,
        })
        .await
    }

    async fn webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
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

    async fn add_user(&self, user: User) -> StoreResult<()> {
        self.write(|reply| WriteOp::AddUser { user, reply }).await
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
        self.write(|reply| WriteOp::AddWebhook {
            user_id,
            code_hash,
            scopes,
            rate,
            reply,
        })
        .await
    }

    async fn user_count(&self) -> StoreResult<i64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)))
            .await
    }

    async fn flush(&self) {
        let _ = self.write(|reply| WriteOp::Flush { reply }).await;
    }
}

pub fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
