//! The transactions of the PostgreSQL backend: the same steps as the SQLite backend's, in
//! PostgreSQL's SQL, each run inside the transaction `PgStore` opens.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

use super::{
    allowed_list, burst, now_unix_sql, Events, FromRow, TxResult, CAP_TRIM_MAX, EVENTS_CHANNEL,
    MAIL_CLAIM_LOCK,
};
use crate::domain::directory::{FilterOp, FilterValue, UserField, UserQuery, UserSort};
use crate::domain::inbox::{
    self, ReadRequest, ReadScope, SearchRequest, TagField, NOTIFY_EVENT, NOTIFY_MODULE,
    NOTIFY_TYPE_CONFIRM,
};
use crate::domain::notify::Draft;
use crate::limits::RateOverride;
use crate::store::event::{self, Kind, MAX_IDS_PER_EVENT};
use crate::store::{
    DueMail, MailUpdate, NewApp, NewTokens, Notification, StoreError, User, UserUpdate,
};

pub(super) mod sql {
    use super::super::NOTIFICATION_COLUMNS;

    pub const CHAT: &str = "SELECT id, total, unread FROM notify_chats WHERE user_id = $1";
    /// A page stage of im.notify.get: confirmations (`notify_type = 1`) or the others, each
    /// through its partial index.
    pub fn page(confirm: bool) -> String {
        let stage = if confirm { "= 1" } else { "<> 1" };
        format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
              WHERE user_id = $1 AND notify_type {stage} AND id < $2 ORDER BY id DESC LIMIT $3"
        )
    }
    pub fn one() -> String {
        format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2")
    }
    pub const TAG_OF: &str =
        "SELECT tag, tag_origin FROM notifications WHERE id = $1 AND user_id = $2";
    pub const MARK_ONE: &str = "UPDATE notifications SET is_read = $3 \
         WHERE id = $1 AND user_id = $2 AND notify_type <> 1 AND is_read <> $3 RETURNING id";
    pub const READ_FROM: &str = "UPDATE notifications SET is_read = TRUE \
         WHERE user_id = $1 AND NOT is_read AND id >= $2 AND notify_type <> 1 RETURNING id";
    pub const UNREAD_FROM: &str = "UPDATE notifications SET is_read = FALSE \
         WHERE user_id = $1 AND id >= $2 AND is_read AND notify_type <> 1 RETURNING id";
    pub const MARK_TAG: &str = "UPDATE notifications SET is_read = $3 \
         WHERE user_id = $1 AND tag = $2 AND tag_origin IS NOT DISTINCT FROM $4 \
           AND is_read <> $3 AND notify_type <> 1 RETURNING id";
    pub const REPLACE_TAG: &str = "DELETE FROM notifications \
         WHERE user_id = $1 AND tag = $2 AND tag_origin IN ($3, 'legacy') \
         RETURNING id, notify_type";
    pub const READ_ALL: &str = "UPDATE notifications SET is_read = TRUE \
         WHERE user_id = $1 AND NOT is_read AND notify_type <> 1 RETURNING id";
    pub const DELETE_OWN: &str =
        "DELETE FROM notifications WHERE id = $1 AND user_id = $2 RETURNING notify_type";
    pub const DELETE_TAG: &str = "DELETE FROM notifications \
         WHERE tag = $1 AND tag_origin IN ($2, 'legacy') RETURNING id, user_id, notify_type";
    pub const DELETE_SUB_TAG: &str = "DELETE FROM notifications \
         WHERE sub_tag = $1 AND tag_origin IN ($2, 'legacy') RETURNING id, user_id, notify_type";
    pub const CONFIRM: &str =
        "DELETE FROM notifications WHERE id = $1 AND user_id = $2 AND notify_type = 1";
    pub const CAP_OLDEST_READ: &str = "SELECT id FROM notifications \
         WHERE user_id = $1 AND is_read ORDER BY id LIMIT $2";
    pub const CAP_OLDEST_UNREAD: &str = "SELECT id FROM notifications \
         WHERE user_id = $1 AND NOT is_read ORDER BY id LIMIT $2";
    pub const OLDEST: &str = "SELECT id, created_at FROM notifications ORDER BY id LIMIT $1";
    pub const REMOVE: &str = "DELETE FROM notifications WHERE id = ANY($1) \
         RETURNING id, user_id, notify_type";
}

async fn rows(
    tx: &Transaction<'_>,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, Error> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.query(&stmt, p).await
}

async fn exec(tx: &Transaction<'_>, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
    let stmt = tx.prepare_cached(sql).await?;
    tx.execute(&stmt, p).await
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.get(0)).collect()
}

/// Gives the transaction's events their ids and writes them, and queues the NOTIFY that
/// PostgreSQL delivers at COMMIT. Called last before the commit: the counter row it locks is
/// what orders the commits of event writers (see the module comment of `store::postgres`).
pub(super) async fn write_events(tx: &Transaction<'_>, ev: &mut Events) -> Result<(), Error> {
    if ev.list.is_empty() {
        return Ok(());
    }
    let n = ev.list.len() as i64;
    let users: Vec<i64> = ev.list.iter().map(|e| e.0).collect();
    let kinds: Vec<&str> = ev.list.iter().map(|e| e.1.name()).collect();
    let payloads: Vec<&str> = ev.list.iter().map(|e| e.2.as_str()).collect();
    // One statement, so the counter's lock is held for this round trip and the commit only.
    exec(
        tx,
        "WITH counter AS (
             UPDATE event_counter SET last_id = last_id + $1 RETURNING last_id),
         logged AS (
             INSERT INTO events (id, user_id, kind, payload, created_at)
             SELECT counter.last_id - $1 + e.ord, e.user_id, e.kind, e.payload, $5
               FROM counter,
                    unnest($2::bigint[], $3::text[], $4::text[])
                        WITH ORDINALITY AS e(user_id, kind, payload, ord)
             RETURNING 1)
         SELECT pg_notify($6, '') FROM counter",
        &[&n, &users, &kinds, &payloads, &ev.now, &EVENTS_CHANNEL],
    )
    .await?;
    Ok(())
}

/// The recipient's notification chat id and unread counter as of now in this transaction.
async fn chat_counter(tx: &Transaction<'_>, user_id: i64) -> Result<(i64, i64), Error> {
    Ok(rows(tx, sql::CHAT, &[&user_id])
        .await?
        .first()
        .map(|r| (r.get(0), r.get(2)))
        .unwrap_or((0, 0)))
}

async fn record_deletes(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    deleted: &[(i64, i64)],
) -> Result<(), Error> {
    if deleted.is_empty() {
        return Ok(());
    }
    let (_, counter) = chat_counter(tx, user_id).await?;
    for chunk in deleted.chunks(MAX_IDS_PER_EVENT) {
        ev.record(user_id, Kind::Delete, event::delete_payload(chunk, counter));
    }
    Ok(())
}

/// `notifyDelete` per recipient for rows `(id, user_id, notify_type)`.
async fn record_removed(
    tx: &Transaction<'_>,
    ev: &mut Events,
    removed: &[Row],
) -> Result<(), Error> {
    let mut by_user: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for r in removed {
        by_user
            .entry(r.get(1))
            .or_default()
            .push((r.get(0), r.get(2)));
    }
    for (user, mut deleted) in by_user {
        deleted.sort_unstable();
        record_deletes(tx, ev, user, &deleted).await?;
    }
    Ok(())
}

pub(super) async fn insert_notification(
    tx: &Transaction<'_>,
    ev: &mut Events,
    d: &Draft,
    created_at: i64,
    cap: i64,
    mail_delay: Option<i64>,
) -> TxResult<Option<i64>> {
    // The recipient's lock, held to COMMIT and taken in the statement that checks them: adds
    // for one recipient run one after another on every connection of every instance, so the
    // replace below sees the previous add's row.
    let user = rows(
        tx,
        "WITH recipient AS (
             SELECT active, email <> '' AND email_notifications AS mailable
               FROM users WHERE id = $1),
         locked AS (
             INSERT INTO notify_chats (user_id) SELECT $1 FROM recipient WHERE active
             ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING id)
         SELECT active, mailable FROM recipient",
        &[&d.recipient],
    )
    .await?;
    let Some((true, mailable)) = user.first().map(|r| (r.get(0), r.get::<_, bool>(1))) else {
        return Ok(None);
    };
    if let Some(tag) = &d.tag {
        // A TAG replace is a delete and then an add, as Bitrix24 announces it.
        let replaced: Vec<(i64, i64)> =
            rows(tx, sql::REPLACE_TAG, &[&d.recipient, tag, &d.tag_origin])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        record_deletes(tx, ev, d.recipient, &replaced).await?;
    }
    let id: i64 = rows(
        tx,
        "INSERT INTO notifications
            (user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach, created_at,
             tag_origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        &[
            &d.recipient,
            &d.author_id,
            &d.notify_type,
            &d.text,
            &d.text_out,
            &d.tag,
            &d.sub_tag,
            &d.attach,
            &created_at,
            &d.tag_origin,
        ],
    )
    .await?[0]
        .get(0);
    let (chat_id, counter) = chat_counter(tx, d.recipient).await?;
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
    ev.record(
        d.recipient,
        Kind::Add,
        event::add_payload(&added, chat_id, counter),
    );
    if let Some(delay) = mail_delay.filter(|_| mailable && !d.skip_email) {
        exec(
            tx,
            "INSERT INTO outbox (notification_id, user_id, tag, sender_name, due_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &d.recipient,
                &d.tag,
                &d.sender_name,
                &created_at.saturating_add(delay),
                &created_at,
            ],
        )
        .await?;
    }
    enforce_cap(tx, ev, d.recipient, cap).await?;
    Ok(Some(id))
}

async fn remove_notifications(
    tx: &Transaction<'_>,
    ev: &mut Events,
    ids: &[i64],
) -> Result<usize, Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let removed = rows(tx, sql::REMOVE, &[&ids]).await?;
    record_removed(tx, ev, &removed).await?;
    Ok(removed.len())
}

async fn enforce_cap(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    cap: i64,
) -> Result<(), Error> {
    if cap <= 0 {
        return Ok(());
    }
    let total: i64 = rows(tx, sql::CHAT, &[&user_id])
        .await?
        .first()
        .map(|r| r.get(1))
        .unwrap_or(0);
    let excess = (total - cap).min(CAP_TRIM_MAX);
    if excess <= 0 {
        return Ok(());
    }
    let mut list = ids(&rows(tx, sql::CAP_OLDEST_READ, &[&user_id, &excess]).await?);
    let missing = excess - list.len() as i64;
    if missing > 0 {
        list.extend(ids(&rows(
            tx,
            sql::CAP_OLDEST_UNREAD,
            &[&user_id, &missing],
        )
        .await?));
    }
    remove_notifications(tx, ev, &list).await.map(|_| ())
}

pub(super) async fn expire_chunk(
    tx: &Transaction<'_>,
    ev: &mut Events,
    before: i64,
    chunk: usize,
) -> TxResult<usize> {
    let oldest = rows(tx, sql::OLDEST, &[&(chunk as i64)]).await?;
    let expired: Vec<i64> = oldest
        .iter()
        .filter(|r| r.get::<_, i64>(1) < before)
        .map(|r| r.get(0))
        .collect();
    Ok(remove_notifications(tx, ev, &expired).await?)
}

pub(super) async fn delete_own(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    id: i64,
) -> TxResult<bool> {
    let deleted = rows(tx, sql::DELETE_OWN, &[&id, &user_id]).await?;
    if let Some(r) = deleted.first() {
        record_deletes(tx, ev, user_id, &[(id, r.get(0))]).await?;
    }
    Ok(!deleted.is_empty())
}

pub(super) async fn delete_by_tag(
    tx: &Transaction<'_>,
    ev: &mut Events,
    field: TagField,
    value: &str,
    origin: &str,
) -> TxResult<u64> {
    let stmt = match field {
        TagField::Tag => sql::DELETE_TAG,
        TagField::SubTag => sql::DELETE_SUB_TAG,
    };
    let removed = rows(tx, stmt, &[&value, &origin]).await?;
    record_removed(tx, ev, &removed).await?;
    Ok(removed.len() as u64)
}

/// Notification `id` of `user_id` inside the transaction, or `None`.
async fn notification(
    tx: &Transaction<'_>,
    user_id: i64,
    id: i64,
) -> TxResult<Option<Notification>> {
    rows(tx, &sql::one(), &[&id, &user_id])
        .await?
        .first()
        .map(Notification::from_row)
        .transpose()
        .map_err(Into::into)
}

pub(super) async fn confirm(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    id: i64,
    value: &str,
) -> TxResult<Option<Notification>> {
    let found = notification(tx, user_id, id)
        .await?
        .filter(|n| n.notify_type == NOTIFY_TYPE_CONFIRM);
    if let Some(n) = &found {
        exec(tx, sql::CONFIRM, &[&id, &user_id]).await?;
        record_deletes(tx, ev, user_id, &[(id, n.notify_type)]).await?;
        let (chat_id, counter) = chat_counter(tx, user_id).await?;
        let messages = inbox::confirm_messages(n.buttons.as_deref(), value);
        ev.record(
            user_id,
            Kind::Confirm,
            event::confirm_payload(id, chat_id, value, &messages, counter),
        );
    }
    Ok(found)
}

pub(super) async fn answer(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    id: i64,
    text: &str,
) -> TxResult<Option<Notification>> {
    let found = notification(tx, user_id, id).await?;
    if found.is_some() {
        let (chat_id, counter) = chat_counter(tx, user_id).await?;
        ev.record(
            user_id,
            Kind::Answer,
            event::answer_payload(id, chat_id, text, counter),
        );
    }
    Ok(found)
}

/// One toggle; the same rules as the SQLite backend's `mark_read`.
async fn mark_read(
    tx: &Transaction<'_>,
    user_id: i64,
    req: &ReadRequest,
) -> Result<Vec<i64>, Error> {
    let (id, and_newer) = match req.scope {
        ReadScope::All => return Ok(ids(&rows(tx, sql::READ_ALL, &[&user_id]).await?)),
        ReadScope::Only(id) => (id, false),
        ReadScope::AndNewer(id) => (id, true),
    };
    let tag: Option<(Option<String>, Option<String>)> = rows(tx, sql::TAG_OF, &[&id, &user_id])
        .await?
        .first()
        .map(|r| (r.get(0), r.get(1)));
    if tag.is_none() && !req.read {
        return Ok(Vec::new());
    }
    let read = req.read;
    let mut changed = if !and_newer {
        ids(&rows(tx, sql::MARK_ONE, &[&id, &user_id, &read]).await?)
    } else if read {
        ids(&rows(tx, sql::READ_FROM, &[&user_id, &id]).await?)
    } else {
        ids(&rows(tx, sql::UNREAD_FROM, &[&user_id, &id]).await?)
    };
    if let Some((Some(tag), origin)) = tag {
        changed.extend(ids(&rows(
            tx,
            sql::MARK_TAG,
            &[&user_id, &tag, &read, &origin],
        )
        .await?));
    }
    Ok(changed)
}

pub(super) async fn mark_read_all(
    tx: &Transaction<'_>,
    ev: &mut Events,
    user_id: i64,
    requests: &[ReadRequest],
) -> TxResult<()> {
    let mut read = Vec::new();
    let mut unread = Vec::new();
    for r in requests {
        let changed = mark_read(tx, user_id, r).await?;
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
    let (chat_id, counter) = chat_counter(tx, user_id).await?;
    for (kind, mut list) in [(Kind::Read, read), (Kind::Unread, unread)] {
        list.sort_unstable();
        list.dedup();
        for chunk in list.chunks(MAX_IDS_PER_EVENT) {
            ev.record(user_id, kind, event::read_payload(chat_id, chunk, counter));
        }
    }
    Ok(())
}

/// Claims up to `limit` due outbox rows on the instance's claims connection: the rows are
/// locked with `SKIP LOCKED` while an advisory lock per row is taken, and the advisory locks
/// (session locks) outlive the transaction: no other instance takes these rows until this one
/// starts its next round (`pg_advisory_unlock_all`) or dies with its connection, when they
/// are due again at once.
pub(super) async fn claim_mails(
    client: &mut tokio_postgres::Client,
    now: i64,
    limit: usize,
) -> Result<Vec<DueMail>, Error> {
    client
        .execute("SELECT pg_advisory_unlock_all()", &[])
        .await?;
    let tx = client.transaction().await?;
    let claimed = tx
        .query(
            "WITH due AS MATERIALIZED (
                 SELECT id, due_at FROM outbox WHERE state = 'pending' AND due_at <= $1
                  ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED),
             mine AS (
                 SELECT id, due_at FROM due
                  WHERE pg_try_advisory_lock($3, (id % 2147483647)::int))
             SELECT o.id, o.notification_id, o.user_id, o.tag, o.sender_name, o.attempts,
                    n.id IS NOT NULL AND NOT n.is_read, n.text, n.text_out, n.created_at,
                    u.active AND u.email <> '' AND u.email_notifications, u.email, u.name
               FROM mine JOIN outbox o ON o.id = mine.id
               LEFT JOIN notifications n ON n.id = o.notification_id
               LEFT JOIN users u ON u.id = o.user_id
              ORDER BY mine.due_at, mine.id",
            &[&now, &(limit as i64), &MAIL_CLAIM_LOCK],
        )
        .await?;
    tx.commit().await?;
    claimed.iter().map(DueMail::from_row).collect()
}

pub(super) async fn update_mails(
    tx: &Transaction<'_>,
    updates: &[(i64, MailUpdate)],
) -> TxResult<()> {
    const DONE: &str = "UPDATE outbox SET state = $2, done_at = $3, last_error = $4,
                               attempts = attempts + $5 WHERE id = $1";
    const RETRY: &str = "UPDATE outbox SET due_at = $2, last_error = $3, attempts = attempts + 1
                          WHERE id = $1";
    let none: Option<String> = None;
    for (id, update) in updates {
        match update {
            MailUpdate::Sent { at } => exec(tx, DONE, &[id, &"sent", at, &none, &0i64]).await?,
            MailUpdate::Skipped { at } => {
                exec(tx, DONE, &[id, &"skipped", at, &none, &0i64]).await?
            }
            MailUpdate::Dead { at, error } => {
                exec(tx, DONE, &[id, &"dead", at, &Some(error), &1i64]).await?
            }
            MailUpdate::Retry { due_at, error } => exec(tx, RETRY, &[id, due_at, error]).await?,
        };
    }
    Ok(())
}

async fn check_email_free(tx: &Transaction<'_>, user_id: i64, email: &str) -> TxResult<()> {
    if email.is_empty() {
        return Ok(());
    }
    let other = rows(
        tx,
        "SELECT id FROM users WHERE id <> $1 AND email <> '' AND lower(email) = lower($2) LIMIT 1",
        &[&user_id, &email],
    )
    .await?;
    match other.first() {
        Some(r) => Err(StoreError::Conflict(format!(
            "e-mail {email} is already used by user {}; e-mail sign-in needs it to be unique",
            r.get::<_, i64>(0)
        ))
        .into()),
        None => Ok(()),
    }
}

/// Serialises the e-mail uniqueness check with every other writer of user e-mails, so two
/// instances cannot both see an address free and both take it.
async fn lock_users(tx: &Transaction<'_>) -> Result<(), Error> {
    exec(
        tx,
        "SELECT pg_advisory_xact_lock($1)",
        &[&0x7573_6572_735f_656di64],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_user(tx: &Transaction<'_>, u: &User) -> TxResult<()> {
    lock_users(tx).await?;
    check_email_free(tx, u.id, &u.email).await?;
    let n = exec(
        tx,
        &format!(
            "INSERT INTO users (id, name, last_name, email, active, is_admin, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, {}) ON CONFLICT (id) DO NOTHING",
            now_unix_sql()
        ),
        &[
            &u.id,
            &u.name,
            &u.last_name,
            &u.email,
            &u.active,
            &u.is_admin,
        ],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("user {} already exists", u.id)).into());
    }
    Ok(())
}

pub(super) async fn update_user(
    tx: &Transaction<'_>,
    user_id: i64,
    u: &UserUpdate,
) -> TxResult<()> {
    if let Some(email) = &u.email {
        lock_users(tx).await?;
        check_email_free(tx, user_id, email).await?;
    }
    let n = exec(
        tx,
        "UPDATE users SET name = coalesce($2, name), last_name = coalesce($3, last_name),
                email = coalesce($4, email), is_admin = coalesce($5, is_admin),
                active = coalesce($6, active), password_hash = coalesce($7, password_hash)
          WHERE id = $1",
        &[
            &user_id,
            &u.name,
            &u.last_name,
            &u.email,
            &u.is_admin,
            &u.active,
            &u.password_hash,
        ],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("user {user_id} does not exist")).into());
    }
    if u.ends_credentials() {
        exec(tx, "DELETE FROM sessions WHERE user_id = $1", &[&user_id]).await?;
        exec(
            tx,
            "UPDATE oauth_tokens SET revoked = TRUE WHERE user_id = $1 AND NOT revoked",
            &[&user_id],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn insert_webhook(
    tx: &Transaction<'_>,
    user_id: i64,
    code_hash: &[u8; 32],
    scopes: &str,
    rate: &RateOverride,
) -> TxResult<i64> {
    let exists = !rows(tx, "SELECT 1 FROM users WHERE id = $1", &[&user_id])
        .await?
        .is_empty();
    if !exists {
        return Err(StoreError::NotFound(format!("user {user_id} does not exist")).into());
    }
    Ok(rows(
        tx,
        &format!(
            "INSERT INTO webhooks (user_id, code_hash, scopes, rate_per_second, rate_burst, created_at)
             VALUES ($1, $2, $3, $4, $5, {}) RETURNING id",
            now_unix_sql()
        ),
        &[&user_id, &&code_hash[..], &scopes, &rate.per_second, &burst(rate)],
    )
    .await?[0]
        .get(0))
}

pub(super) async fn insert_app(tx: &Transaction<'_>, app: &NewApp) -> TxResult<i64> {
    let inserted = rows(
        tx,
        &format!(
            "INSERT INTO apps (client_id, secret_hash, name, scopes, redirect_uri, allowed_users,
                               rate_per_second, rate_burst, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {})
             ON CONFLICT (client_id) DO NOTHING RETURNING id",
            now_unix_sql()
        ),
        &[
            &app.client_id,
            &&app.secret_hash[..],
            &app.name,
            &app.scopes.join(","),
            &app.redirect_uri,
            &allowed_list(app),
            &app.rate.per_second,
            &burst(&app.rate),
        ],
    )
    .await?;
    match inserted.first() {
        Some(r) => Ok(r.get(0)),
        None => Err(StoreError::Backend(format!(
            "UNIQUE constraint failed: apps.client_id ({})",
            app.client_id
        ))
        .into()),
    }
}

pub(super) async fn insert_tokens(
    tx: &Transaction<'_>,
    app_id: i64,
    user_id: i64,
    t: &NewTokens,
    code_hash: Option<&[u8]>,
) -> TxResult<()> {
    exec(
        tx,
        &format!(
            "INSERT INTO oauth_tokens
                (app_id, user_id, access_hash, refresh_hash, access_expires, refresh_expires,
                 code_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, {})",
            now_unix_sql()
        ),
        &[
            &app_id,
            &user_id,
            &&t.access_hash[..],
            &&t.refresh_hash[..],
            &t.access_expires,
            &t.refresh_expires,
            &code_hash,
        ],
    )
    .await?;
    Ok(())
}

async fn may_mint(tx: &Transaction<'_>, app_id: i64, user_id: i64) -> Result<bool, Error> {
    Ok(!rows(
        tx,
        "SELECT 1 FROM users u, apps a WHERE u.id = $1 AND u.active AND a.id = $2 AND a.active",
        &[&user_id, &app_id],
    )
    .await?
    .is_empty())
}

pub(super) async fn rotate_refresh(
    tx: &Transaction<'_>,
    app_id: i64,
    refresh_hash: &[u8; 32],
    now: i64,
    tokens: &NewTokens,
) -> TxResult<Option<i64>> {
    // The UPDATE both checks and spends the token; a concurrent refresh with the same token
    // waits for this row and then finds it revoked.
    let spent = rows(
        tx,
        "UPDATE oauth_tokens SET revoked = TRUE
          WHERE refresh_hash = $1 AND app_id = $2 AND NOT revoked AND refresh_expires > $3
         RETURNING user_id, code_hash",
        &[&&refresh_hash[..], &app_id, &now],
    )
    .await?;
    let Some((user_id, code_hash)) = spent
        .first()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, Option<Vec<u8>>>(1)))
    else {
        return Ok(None);
    };
    if !may_mint(tx, app_id, user_id).await? {
        return Ok(None);
    }
    insert_tokens(tx, app_id, user_id, tokens, code_hash.as_deref()).await?;
    Ok(Some(user_id))
}

pub(super) async fn exchange_code(
    tx: &Transaction<'_>,
    code_hash: &[u8; 32],
    app_id: i64,
    now: i64,
    tokens: &NewTokens,
) -> TxResult<Option<i64>> {
    // FOR UPDATE: two exchanges of one code on two instances take turns.
    let row = rows(
        tx,
        "SELECT app_id, user_id, expires_at, spent FROM oauth_codes WHERE code_hash = $1 FOR UPDATE",
        &[&&code_hash[..]],
    )
    .await?;
    let Some((code_app, user_id, expires, spent)) = row.first().map(|r| {
        (
            r.get::<_, i64>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(2),
            r.get::<_, bool>(3),
        )
    }) else {
        return Ok(None);
    };
    if spent {
        // RFC 6749 §4.1.2: whatever the code produced, and every refresh of it, is revoked.
        let n = exec(
            tx,
            "UPDATE oauth_tokens SET revoked = TRUE WHERE code_hash = $1 AND NOT revoked",
            &[&&code_hash[..]],
        )
        .await?;
        tracing::warn!(
            revoked = n,
            "authorization code presented again; its tokens are revoked"
        );
        return Ok(None);
    }
    exec(
        tx,
        "UPDATE oauth_codes SET spent = TRUE WHERE code_hash = $1",
        &[&&code_hash[..]],
    )
    .await?;
    if code_app != app_id || expires <= now || !may_mint(tx, app_id, user_id).await? {
        return Ok(None);
    }
    insert_tokens(tx, app_id, user_id, tokens, Some(&code_hash[..])).await?;
    Ok(Some(user_id))
}

/// Empties what `Store::reset` names. DELETE, not TRUNCATE … RESTART IDENTITY: the sequences
/// and the event counter keep counting, so ids never go backwards.
pub(super) async fn reset(tx: &Transaction<'_>, keep_directory: bool) -> TxResult<()> {
    let mut sql = String::from(
        "DELETE FROM notifications; DELETE FROM notify_chats; DELETE FROM events;
         DELETE FROM outbox;",
    );
    if !keep_directory {
        sql.push_str(
            "DELETE FROM oauth_tokens; DELETE FROM oauth_codes; DELETE FROM sessions;
             DELETE FROM app_installs; DELETE FROM apps; DELETE FROM webhooks; DELETE FROM users;",
        );
    }
    tx.batch_execute(&sql).await?;
    Ok(())
}

pub(super) async fn upsert_user(tx: &Transaction<'_>, u: &User) -> TxResult<bool> {
    let current = rows(
        tx,
        "SELECT name, last_name, email, active, is_admin FROM users WHERE id = $1 FOR UPDATE",
        &[&u.id],
    )
    .await?;
    let Some(r) = current.first() else {
        insert_user(tx, u).await?;
        return Ok(true);
    };
    let row: (String, String, String, bool, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    if row
        == (
            u.name.clone(),
            u.last_name.clone(),
            u.email.clone(),
            u.active,
            u.is_admin,
        )
    {
        return Ok(false);
    }
    exec(
        tx,
        "UPDATE users SET name = $2, last_name = $3, email = $4, active = $5, is_admin = $6
          WHERE id = $1",
        &[
            &u.id,
            &u.name,
            &u.last_name,
            &u.email,
            &u.active,
            &u.is_admin,
        ],
    )
    .await?;
    Ok(true)
}

pub(super) async fn ensure_webhook(
    tx: &Transaction<'_>,
    user_id: i64,
    code_hash: &[u8; 32],
    scopes: &str,
    rate: &RateOverride,
) -> TxResult<(i64, bool)> {
    let found = rows(
        tx,
        "SELECT id FROM webhooks WHERE user_id = $1 AND code_hash = $2",
        &[&user_id, &&code_hash[..]],
    )
    .await?;
    let Some(id) = found.first().map(|r| r.get::<_, i64>(0)) else {
        return Ok((
            insert_webhook(tx, user_id, code_hash, scopes, rate).await?,
            true,
        ));
    };
    let n = exec(
        tx,
        "UPDATE webhooks SET scopes = $2, rate_per_second = $3, rate_burst = $4, active = TRUE
          WHERE id = $1 AND NOT (scopes = $2 AND rate_per_second IS NOT DISTINCT FROM $3
                                 AND rate_burst IS NOT DISTINCT FROM $4 AND active)",
        &[&id, &scopes, &rate.per_second, &burst(rate)],
    )
    .await?;
    Ok((id, n > 0))
}

pub(super) async fn upsert_app(tx: &Transaction<'_>, app: &NewApp) -> TxResult<(i64, bool)> {
    let found = rows(
        tx,
        "SELECT id FROM apps WHERE client_id = $1",
        &[&app.client_id],
    )
    .await?;
    let Some(id) = found.first().map(|r| r.get::<_, i64>(0)) else {
        return Ok((insert_app(tx, app).await?, true));
    };
    let n = exec(
        tx,
        "UPDATE apps SET secret_hash = $2, name = $3, scopes = $4, redirect_uri = $5,
                         allowed_users = $6, rate_per_second = $7, rate_burst = $8, active = TRUE
          WHERE id = $1 AND NOT (secret_hash = $2 AND name = $3 AND scopes = $4
                                 AND redirect_uri = $5
                                 AND allowed_users IS NOT DISTINCT FROM $6
                                 AND rate_per_second IS NOT DISTINCT FROM $7
                                 AND rate_burst IS NOT DISTINCT FROM $8 AND active)",
        &[
            &id,
            &&app.secret_hash[..],
            &app.name,
            &app.scopes.join(","),
            &app.redirect_uri,
            &allowed_list(app),
            &app.rate.per_second,
            &burst(&app.rate),
        ],
    )
    .await?;
    Ok((id, n > 0))
}

/// A bound argument of a statement built at run time.
pub(super) enum Arg {
    Int(i64),
    Text(String),
    Bool(bool),
    Ints(Vec<i64>),
    Texts(Vec<String>),
}

impl Arg {
    pub(super) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Arg::Int(v) => v,
            Arg::Text(v) => v,
            Arg::Bool(v) => v,
            Arg::Ints(v) => v,
            Arg::Texts(v) => v,
        }
    }
}

/// Builds a WHERE clause with numbered placeholders.
struct Clause {
    sql: String,
    args: Vec<Arg>,
}

impl Clause {
    /// Appends `arg` and returns its placeholder.
    fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }
}

fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The WHERE clause of a history search, without the cursor. SQLite's LIKE ignores ASCII case;
/// ILIKE does the same here.
pub(super) fn search_filter(user_id: i64, q: &SearchRequest) -> (String, Vec<Arg>) {
    let mut c = Clause {
        sql: String::new(),
        args: Vec::new(),
    };
    let p = c.bind(Arg::Int(user_id));
    c.sql = format!("user_id = {p}");
    if let Some(text) = &q.text {
        let p = c.bind(Arg::Text(like_pattern(text)));
        c.sql.push_str(&format!(" AND text ILIKE {p} ESCAPE '\\'"));
    }
    if !q.types.is_empty() {
        let mut alternatives = Vec::new();
        for (module, event) in &q.types {
            let m = c.bind(Arg::Text(module.clone()));
            match event {
                Some(e) => {
                    let e = c.bind(Arg::Text(e.clone()));
                    alternatives.push(format!("(module = {m} AND event = {e})"));
                }
                None => alternatives.push(format!("module = {m}")),
            }
        }
        c.sql
            .push_str(&format!(" AND ({})", alternatives.join(" OR ")));
    }
    if let Some(from) = q.date_from {
        let p = c.bind(Arg::Int(from));
        c.sql.push_str(&format!(" AND created_at >= {p}"));
    }
    if let Some(to) = q.date_to {
        let p = c.bind(Arg::Int(to));
        c.sql.push_str(&format!(" AND created_at < {p}"));
    }
    if !q.authors.is_empty() {
        let p = c.bind(Arg::Ints(q.authors.clone()));
        c.sql.push_str(&format!(" AND author_id = ANY({p})"));
    }
    if let Some(tag) = &q.group_tag {
        let p = c.bind(Arg::Text(tag.clone()));
        c.sql.push_str(&format!(" AND tag = {p}"));
    }
    (c.sql, c.args)
}

/// The WHERE clause of `user.get`; the same rules as the SQLite backend's `user_filter`.
/// Column names come from the field enum, never from the caller.
pub(super) fn user_filter(q: &UserQuery) -> (String, Vec<Arg>) {
    let mut c = Clause {
        sql: String::from("TRUE"),
        args: Vec::new(),
    };
    for cond in &q.filter.conditions {
        // E-mail addresses compare without regard to case (SQLite: COLLATE NOCASE).
        let (column, nocase) = match cond.field {
            UserField::Id => ("id", false),
            UserField::Name => ("name", false),
            UserField::LastName => ("last_name", false),
            UserField::Email => ("email", true),
            UserField::Active => ("active", false),
        };
        let folded = if nocase {
            format!("lower({column})")
        } else {
            column.to_owned()
        };
        let fold = |t: &str| {
            if nocase {
                t.to_lowercase()
            } else {
                t.to_owned()
            }
        };
        let compare = |op: FilterOp| match op {
            FilterOp::Greater => Some(">"),
            FilterOp::GreaterOrEqual => Some(">="),
            FilterOp::Less => Some("<"),
            FilterOp::LessOrEqual => Some("<="),
            _ => None,
        };
        match (&cond.value, cond.op) {
            (FilterValue::Flag(active), op) => {
                let wanted = if op == FilterOp::NotEqual {
                    !active
                } else {
                    *active
                };
                let p = c.bind(Arg::Bool(wanted));
                c.sql.push_str(&format!(" AND active = {p}"));
            }
            (FilterValue::Id(id), op) => {
                if let Some(cmp) = compare(op) {
                    let p = c.bind(Arg::Int(*id));
                    c.sql.push_str(&format!(" AND id {cmp} {p}"));
                }
            }
            (FilterValue::Ids(list), op) => {
                let p = c.bind(Arg::Ints(list.clone()));
                if op == FilterOp::NotEqual {
                    c.sql.push_str(&format!(" AND NOT (id = ANY({p}))"));
                } else {
                    c.sql.push_str(&format!(" AND id = ANY({p})"));
                }
            }
            (FilterValue::Texts(texts), op) => match op {
                FilterOp::Plain if texts.iter().any(|t| t.contains('%')) => {
                    let any: Vec<String> = texts
                        .iter()
                        .map(|t| {
                            let p = c.bind(Arg::Text(t.clone()));
                            format!("{column} ILIKE {p}")
                        })
                        .collect();
                    c.sql.push_str(&format!(" AND ({})", any.join(" OR ")));
                }
                FilterOp::Plain | FilterOp::Equal | FilterOp::NotEqual => {
                    let p = c.bind(Arg::Texts(texts.iter().map(|t| fold(t)).collect()));
                    if op == FilterOp::NotEqual {
                        c.sql.push_str(&format!(" AND NOT ({folded} = ANY({p}))"));
                    } else {
                        c.sql.push_str(&format!(" AND {folded} = ANY({p})"));
                    }
                }
                FilterOp::Contains | FilterOp::NotContains => {
                    let like: Vec<String> = texts
                        .iter()
                        .map(|t| {
                            let p = c.bind(Arg::Text(like_pattern(t)));
                            format!("{column} ILIKE {p} ESCAPE '\\'")
                        })
                        .collect();
                    let not = if op == FilterOp::NotContains {
                        "NOT "
                    } else {
                        ""
                    };
                    c.sql
                        .push_str(&format!(" AND {not}({})", like.join(" OR ")));
                }
                op => {
                    if let (Some(cmp), Some(t)) = (compare(op), texts.first()) {
                        let p = c.bind(Arg::Text(fold(t)));
                        c.sql
                            .push_str(&format!(" AND {folded} COLLATE \"C\" {cmp} {p}"));
                    }
                }
            },
        }
    }
    (c.sql, c.args)
}

/// The ORDER BY column of `user.get`; texts in byte order, as SQLite sorts them.
pub(super) fn user_sort_column(q: &UserQuery) -> &'static str {
    match q.sort {
        UserSort::Id => "id",
        UserSort::Name => "name COLLATE \"C\"",
        UserSort::LastName => "last_name COLLATE \"C\"",
        UserSort::Email => "email COLLATE \"C\"",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_binding_order() {
        let q = SearchRequest {
            text: Some("50%".into()),
            group_tag: Some("T".into()),
            ..SearchRequest::default()
        };
        let (sql, args) = search_filter(7, &q);
        assert_eq!(
            sql,
            "user_id = $1 AND text ILIKE $2 ESCAPE '\\' AND tag = $3"
        );
        assert_eq!(args.len(), 3);
        assert!(matches!(&args[1], Arg::Text(t) if t == "%50\\%%"));
    }
}
