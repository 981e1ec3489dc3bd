//! Storage: the `Store` trait that the server talks to, and its backends.
//!
//! The trait is the seam for a second backend (PostgreSQL). Every write that the server
//! acknowledges goes through `add_notification`, which returns only after the row is durable.

pub mod event;
pub mod hub;
pub mod import;
pub mod pg_limits;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use self::event::Event;
use self::hub::Hub;
use crate::domain::directory::UserQuery;
use crate::domain::inbox::{Cursor, ReadRequest, SearchRequest, TagField};
use crate::domain::notify::Draft;
use crate::limits::RateOverride;

/// A user of the notification center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub last_name: String,
    pub email: String,
    pub active: bool,
    pub is_admin: bool,
}

/// A user with the facts only the directory shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user: User,
    /// Unix seconds: `DATE_REGISTER`.
    pub created_at: i64,
}

/// A stored notification, as the readers return it (§2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: i64,
    pub user_id: i64,
    pub author_id: i64,
    pub notify_type: i64,
    pub module: String,
    pub event: String,
    pub text: String,
    pub tag: Option<String>,
    pub sub_tag: Option<String>,
    /// The normalised ATTACH as PHP JSON.
    pub attach: Option<String>,
    /// The keyboard of a confirm-type notification, as JSON.
    pub buttons: Option<String>,
    pub read: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// A recipient's notification chat and its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyChat {
    pub chat_id: i64,
    pub total: i64,
    pub unread: i64,
}

/// A webhook as the authenticator needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: i64,
    pub user_id: i64,
    pub code_hash: Vec<u8>,
    pub scopes: Vec<String>,
    /// The webhook's own request-rate limit, if it has one.
    pub rate: RateOverride,
}

/// A registered OAuth application.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: i64,
    pub client_id: String,
    pub secret_hash: Vec<u8>,
    pub name: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    /// `None`: every user may use the app; otherwise only these.
    pub allowed_users: Option<Vec<i64>>,
    pub active: bool,
    /// The app's own request-rate limit (P8).
    pub rate: RateOverride,
}

impl App {
    pub fn allows(&self, user_id: i64) -> bool {
        self.allowed_users
            .as_ref()
            .is_none_or(|users| users.contains(&user_id))
    }
}

#[derive(Debug, Clone)]
pub struct NewApp {
    pub client_id: String,
    pub secret_hash: [u8; 32],
    pub name: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub allowed_users: Option<Vec<i64>>,
    pub rate: RateOverride,
}

/// A new token pair; the plain tokens stay with the caller.
#[derive(Debug, Clone)]
pub struct NewTokens {
    pub access_hash: [u8; 32],
    pub refresh_hash: [u8; 32],
    pub access_expires: i64,
    pub refresh_expires: i64,
}

/// What an access token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessGrant {
    pub app: App,
    pub user_id: i64,
    pub access_expires: i64,
}

/// A signed-in browser. Its CSRF token is not stored: `auth::session_csrf` derives it from the
/// session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    pub expires_at: i64,
}

/// A webhook as `imnotify webhook list` shows it: never its code, which exists only as a hash.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookInfo {
    pub id: i64,
    pub user_id: i64,
    pub scopes: Vec<String>,
    pub active: bool,
    /// Unix seconds.
    pub created_at: i64,
    pub rate: RateOverride,
}

/// A change to a user (`imnotify user update|deactivate|activate`); `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub is_admin: Option<bool>,
    pub active: Option<bool>,
    /// A new Argon2id PHC string.
    pub password_hash: Option<String>,
}

impl UserUpdate {
    /// A new password or a deactivation ends every session and OAuth token of the user.
    pub fn ends_credentials(&self) -> bool {
        self.password_hash.is_some() || self.active == Some(false)
    }
}

/// An outbox row whose time has come, with what the e-mail worker needs to decide and to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMail {
    pub outbox_id: i64,
    pub notification_id: i64,
    pub user_id: i64,
    /// The stored tag when the row was written (D12 groups by it).
    pub tag: Option<String>,
    /// The application's name (D14); `None` for webhooks.
    pub sender_name: Option<String>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// The notification, when it still exists and is unread (D10); `None` means do not mail.
    pub notification: Option<MailText>,
    /// The recipient, when still active with an address and e-mail on (D13).
    pub recipient: Option<Recipient>,
}

/// The texts of a notification to be mailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    /// As stored: MESSAGE with the D6 prefix and D7 normalisation.
    pub text: String,
    /// MESSAGE_OUT as stored (trimmed, with the D6 prefix), or empty.
    pub text_out: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub email: String,
    pub name: String,
}

/// What became of an outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailUpdate {
    /// Accepted by the SMTP server at this time.
    Sent { at: i64 },
    /// Not mailed: read, deleted, replaced or unsubscribed before it was due (D10, D13).
    Skipped { at: i64 },
    /// Failed; try again at `due_at`.
    Retry { due_at: i64, error: String },
    /// Failed for the last allowed time.
    Dead { at: i64, error: String },
}

/// An outbox row as `imnotify outbox list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub notification_id: i64,
    pub user_id: i64,
    pub tag: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub due_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub done_at: Option<i64>,
}

#[derive(Debug)]
pub enum StoreError {
    /// The write conflicts with existing data (a duplicate user id, an e-mail in use, ...).
    Conflict(String),
    /// The write names something that does not exist (an unknown user). The message says
    /// what, as the admin commands word it: "user 7 does not exist".
    NotFound(String),
    /// Anything else: the database failed or the writer is gone.
    Backend(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::NotFound(m) => f.write_str(m),
            StoreError::Backend(m) => write!(f, "storage error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

tokio::task_local! {
    /// Set by `batch` around its notification adds (goal 4 of issue 15): inside it a backend
    /// may answer `add_notification` before the commit, so the batch's adds share commits
    /// instead of paying one each. The caller must then acknowledge nothing before
    /// [`Store::commit_barrier`] has returned and [`SharedCommit::failed`] is `false`.
    pub static SHARED_COMMIT: Arc<SharedCommit>;
}

/// What the writes of one [`SHARED_COMMIT`] scope learn about their commits.
#[derive(Debug, Default)]
pub struct SharedCommit {
    failed: std::sync::atomic::AtomicBool,
    /// See [`SharedCommit::expect_more`].
    alone: std::sync::atomic::AtomicBool,
}

impl SharedCommit {
    /// Whether the scope's next write follows at once: a backend may then keep its transaction
    /// open for it (SQLite's writer does for [`Store::add_notifications`]); otherwise it should
    /// commit at once, which a caller that has more to do before [`Store::commit_barrier`]
    /// then need not wait for. Until told otherwise, more is expected.
    pub fn expect_more(&self, more: bool) {
        self.alone.store(!more, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn more_expected(&self) -> bool {
        !self.alone.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A commit covering one of the scope's writes failed: those writes are lost.
    pub fn record_failure(&self) {
        self.failed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// [`Store::add_notifications`] one draft after another through [`Store::add_notification`]:
/// the trait's default, and SQLite's way outside a batch.
pub(crate) async fn add_each<S: Store + ?Sized>(
    store: &S,
    drafts: Vec<(Draft, i64)>,
    stop_at_error: bool,
) -> Vec<StoreResult<Option<i64>>> {
    let mut results = Vec::with_capacity(drafts.len());
    for (draft, created_at) in drafts {
        let result = store.add_notification(draft, created_at).await;
        let failed = result.is_err();
        results.push(result);
        if failed && stop_at_error {
            break;
        }
    }
    results
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a notification, first deleting the recipient's earlier notifications with the same
    /// stored tag (D4), all in one transaction. Returns the new id once it is on disk, or `None`
    /// when the recipient does not exist or is inactive (D8).
    async fn add_notification(&self, draft: Draft, created_at: i64) -> StoreResult<Option<i64>>;

    /// Stores several notifications, in order, each as [`Store::add_notification`] would: one
    /// result per draft, and a draft that fails does so alone. With `stop_at_error`, nothing
    /// after the first failure is stored and the results end there (a `batch` with `halt`).
    /// A backend may run them as one write (SQLite: one job for its writer, issue 15 goal 4);
    /// inside [`SHARED_COMMIT`] it may answer before their commit. The default stores them one
    /// by one.
    async fn add_notifications(
        &self,
        drafts: Vec<(Draft, i64)>,
        stop_at_error: bool,
    ) -> Vec<StoreResult<Option<i64>>> {
        add_each(self, drafts, stop_at_error).await
    }

    /// Waits until every write made so far inside [`SHARED_COMMIT`] by this caller is durable.
    /// `Err` when the wait itself fails; a failed commit of one of those writes is reported by
    /// [`SharedCommit::failed`]. A backend that commits each write before it answers (the
    /// default) has nothing to wait for.
    async fn commit_barrier(&self) -> StoreResult<()> {
        Ok(())
    }

    /// The active webhooks of an active user.
    async fn webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>>;

    /// `webhooks_of`, possibly from a cache that may lag a change made by another process by a
    /// bounded time. Use it to accept a credential, and `webhooks_of` before refusing one: a
    /// webhook just added from the command line must work at once.
    async fn cached_webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>> {
        self.webhooks_of(user_id).await
    }

    async fn add_user(&self, user: User) -> StoreResult<()>;

    async fn user(&self, id: i64) -> StoreResult<Option<User>>;

    /// Creates a webhook and returns its id. The caller keeps the plain code.
    async fn add_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
        rate: RateOverride,
    ) -> StoreResult<i64>;

    async fn user_count(&self) -> StoreResult<i64>;

    /// The recipient's notification chat, or `None` before their first notification.
    async fn notify_chat(&self, user_id: i64) -> StoreResult<Option<NotifyChat>>;

    /// One page of im.notify.get: confirmations, then the others, each newest first (§4.2).
    async fn notification_page(
        &self,
        user_id: i64,
        cursor: Cursor,
        limit: usize,
    ) -> StoreResult<Vec<Notification>>;

    /// One of the recipient's notifications.
    async fn notification(&self, user_id: i64, id: i64) -> StoreResult<Option<Notification>>;

    /// A page of im.notify.history.search, and the number of matches when `first_page`.
    async fn search_notifications(
        &self,
        user_id: i64,
        query: SearchRequest,
    ) -> StoreResult<(Vec<Notification>, Option<i64>)>;

    /// Marks notifications of `user_id` read or unread (§4.4-4.6), the requests in order and
    /// all in one transaction.
    async fn mark_read(&self, user_id: i64, requests: Vec<ReadRequest>) -> StoreResult<()>;

    /// Deletes one of the recipient's notifications; `false` when there was none.
    async fn delete_own(&self, user_id: i64, id: i64) -> StoreResult<bool>;

    /// Deletes every notification of every recipient with this stored tag or sub-tag (D4) that
    /// came from `origin` (`domain::notify::tag_origin`; rows stored before origins were
    /// recorded match any origin).
    async fn delete_by_tag(
        &self,
        field: TagField,
        value: String,
        origin: String,
    ) -> StoreResult<u64>;

    /// Deletes the recipient's confirm-type notification once answered with `value`, and
    /// returns it; `None` when there is no such notification. Records `notifyDelete` and
    /// `notifyConfirm`.
    async fn confirm(
        &self,
        user_id: i64,
        id: i64,
        value: String,
    ) -> StoreResult<Option<Notification>>;

    /// Records the recipient's answer to a notification (`notifyAnswer`) and returns the
    /// notification; `None` when the recipient has no such notification.
    async fn answer(
        &self,
        user_id: i64,
        id: i64,
        text: String,
    ) -> StoreResult<Option<Notification>>;

    /// The hub that this store feeds with every committed event.
    fn hub(&self) -> Arc<Hub>;

    /// A number that changes after any committed write that could have ended a credential
    /// (a token, webhook, session, app or user changed), by this process or, for SQLite, by
    /// another one on the same database (an admin command): an open stream may skip
    /// authenticating again while it has not moved (issue 15 goal 5). It moves before the
    /// writer publishes any later event, so a stream checks before sending the first event
    /// committed after the change. `None`: the backend has no such signal (PostgreSQL, where
    /// another instance may revoke), and streams check before every event.
    fn auth_epoch(&self) -> Option<u64> {
        None
    }

    /// The rate and operating-time buckets this store shares with other instances on the same
    /// database (issue 14), or `None` for a store one instance owns (SQLite), whose limits stay
    /// in memory. `app` hands it to `Limiters::share` at start.
    fn shared_limits(&self) -> Option<Arc<dyn crate::limits::SharedBuckets>> {
        None
    }

    /// `user_id`'s events with ids above `after`, oldest first, at most `limit`.
    async fn events_after(&self, user_id: i64, after: i64, limit: usize)
        -> StoreResult<Vec<Event>>;

    /// The newest event id of the whole log (0 when empty).
    async fn event_head(&self) -> StoreResult<i64>;

    /// Deletes up to `chunk` of the oldest events created before `before` (Unix seconds);
    /// returns how many went.
    async fn prune_events(&self, before: i64, chunk: usize) -> StoreResult<usize>;

    /// Turns a user's e-mail on or off (D13); `false` when there is no such user.
    async fn set_email_notifications(&self, user_id: i64, on: bool) -> StoreResult<bool>;

    /// A user's e-mail setting (D13), for the center's settings panel; `None` without the user.
    async fn email_notifications(&self, user_id: i64) -> StoreResult<Option<bool>>;

    /// Outbox rows due at `now`, oldest first, at most `limit`.
    async fn due_mails(&self, now: i64, limit: usize) -> StoreResult<Vec<DueMail>>;

    /// Records the outcome of outbox rows, all in one transaction.
    async fn update_mails(&self, updates: Vec<(i64, MailUpdate)>) -> StoreResult<()>;

    /// Outbox rows, newest first, optionally of one state.
    async fn outbox_rows(&self, state: Option<String>, limit: usize)
        -> StoreResult<Vec<OutboxRow>>;

    /// Makes a row pending again with a fresh count of attempts, due at `now`; `false` when
    /// there is no such row.
    async fn retry_mail(&self, id: i64, now: i64) -> StoreResult<bool>;

    /// How many outbox rows are pending.
    async fn outbox_depth(&self) -> StoreResult<i64>;

    /// Deletes up to `chunk` rows sent or skipped before `before`; returns how many went.
    async fn prune_outbox(&self, before: i64, chunk: usize) -> StoreResult<usize>;

    /// The users with these ids, in id order.
    async fn users_by_id(&self, ids: Vec<i64>) -> StoreResult<Vec<UserRecord>>;

    /// A page of `user.get`, and the number of users that match the filter.
    async fn find_users(&self, query: UserQuery) -> StoreResult<(Vec<UserRecord>, i64)>;
    /// Finds an active user by numeric id or e-mail, with the password hash, for the login page.
    async fn user_login(&self, login: &str) -> StoreResult<Option<(User, Option<String>)>>;

    /// Sets the login password and ends the user's sessions and OAuth tokens, in one
    /// transaction: whoever knew the old password is signed out.
    async fn set_password(&self, user_id: i64, password_hash: String) -> StoreResult<()>;

    /// Changes a user; with a new password or a deactivation, also ends the user's sessions and
    /// revokes their OAuth tokens in the same transaction. `NotFound` for an unknown user.
    async fn update_user(&self, user_id: i64, update: UserUpdate) -> StoreResult<()>;

    /// Every webhook, or those of one user, in id order.
    async fn list_webhooks(&self, user_id: Option<i64>) -> StoreResult<Vec<WebhookInfo>>;

    /// Switches a webhook on or off; `false` when there is no webhook with this id. A running
    /// server refuses a revoked webhook within its cache's trust time (1 s).
    async fn set_webhook_active(&self, id: i64, active: bool) -> StoreResult<bool>;

    /// Every registered application, in id order.
    async fn list_apps(&self) -> StoreResult<Vec<App>>;

    /// Switches an application on or off; `false` when the client id is unknown. Its tokens are
    /// refused while it is off (`APPLICATION_NOT_FOUND`) and work again when it is back on.
    async fn set_app_active(&self, client_id: &str, active: bool) -> StoreResult<bool>;

    /// Revokes every OAuth token pair of the user and/or the application (at least one is
    /// given) and returns how many were live.
    async fn revoke_tokens(&self, user_id: Option<i64>, app_id: Option<i64>) -> StoreResult<u64>;

    async fn add_app(&self, app: NewApp) -> StoreResult<i64>;

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<App>>;

    /// Records that `user_id` approved the app; idempotent.
    async fn install_app(&self, app_id: i64, user_id: i64) -> StoreResult<()>;

    /// Issues a pair outside the code flow (`imnotify app token`).
    async fn issue_tokens(&self, app_id: i64, user_id: i64, tokens: NewTokens) -> StoreResult<()>;

    /// The grant behind an access token that has not been revoked (it may have expired).
    async fn access_grant(&self, access_hash: [u8; 32]) -> StoreResult<Option<AccessGrant>>;

    /// Whether `user_id` still holds an unrevoked token pair of the enabled application
    /// `app_id` whose refresh token is good at `now` (unix seconds): what keeps a Push&Pull
    /// channel handed out to that application alive (`auth::channel::Grant::App`).
    async fn app_grant_alive(&self, app_id: i64, user_id: i64, now: i64) -> StoreResult<bool>;

    /// Uses a refresh token once: revokes its pair and issues `tokens` for the same user, in one
    /// transaction. `None` when the token is unknown, used, expired or another app's, or when
    /// the user or the app is no longer active (the token is spent all the same).
    async fn rotate_refresh(
        &self,
        app_id: i64,
        refresh_hash: [u8; 32],
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>>;

    async fn add_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        user_id: i64,
        expires_at: i64,
    ) -> StoreResult<()>;

    /// Spends an authorization code of `app_id` and issues `tokens` for its user, in one
    /// transaction; returns the user. `None` when the code is unknown, expired, another app's,
    /// or its user is inactive. A code presented a second time also revokes every token that
    /// descends from it (RFC 6749 §4.1.2).
    async fn exchange_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        now: i64,
        tokens: NewTokens,
    ) -> StoreResult<Option<i64>>;

    async fn add_session(&self, id_hash: [u8; 32], session: Session) -> StoreResult<()>;

    async fn session(&self, id_hash: [u8; 32], now: i64) -> StoreResult<Option<Session>>;

    async fn delete_session(&self, id_hash: [u8; 32]) -> StoreResult<()>;

    /// Whether `user_id` still has a session good at `now` (unix seconds) whose id hash lies in
    /// `lo..=hi`: what keeps a Push&Pull channel handed out to a browser session alive
    /// (`auth::channel::Grant::Session`, which knows only a prefix of the hash). A range of the
    /// primary key, so one index probe.
    async fn session_alive(
        &self,
        user_id: i64,
        lo: [u8; 32],
        hi: [u8; 32],
        now: i64,
    ) -> StoreResult<bool>;

    /// A server-wide value, created with `init` on first use.
    async fn setting(&self, key: &str, init: String) -> StoreResult<String>;

    /// Retention (`retention.days`): removes up to `chunk` of the oldest notifications created
    /// before `before` (Unix seconds), in one short write, and returns how many. The caller
    /// repeats while a whole chunk went, so the writer is never held for long.
    async fn expire_notifications(&self, before: i64, chunk: usize) -> StoreResult<usize>;

    /// Forgets expired sessions, spent or expired authorization codes older than a day, and
    /// token pairs that can no longer be used.
    async fn forget_expired_credentials(&self, now: i64) -> StoreResult<()>;

    /// `Err` with a short reason when the last commit or the last checkpoint failed (for
    /// `/healthz`); the next one that succeeds clears it.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Waits until every queued write is committed; called on shutdown.
    async fn flush(&self);

    /// How many writes are queued for the backend's writer and not yet taken (for `/metrics`).
    fn writer_queue_depth(&self) -> usize {
        0
    }

    // The test-server toolkit (issue 16).

    /// Removes notifications (and their chats), events and the outbox; with
    /// `keep_directory = false` also users,
    /// webhooks, apps, installations, tokens, codes and sessions. Ids never go backwards.
    async fn reset(&self, keep_directory: bool) -> StoreResult<()>;

    /// Sets a server-wide value, replacing any.
    async fn put_setting(&self, key: &str, value: String) -> StoreResult<()>;

    /// Creates the user or updates its fields; `true` when anything changed.
    async fn upsert_user(&self, user: User) -> StoreResult<bool>;

    /// The webhook of `user_id` with this code hash, created or updated; (id, changed).
    async fn ensure_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
        rate: RateOverride,
    ) -> StoreResult<(i64, bool)>;

    /// The app with this client id, created or updated; (id, changed).
    async fn upsert_app(&self, app: NewApp) -> StoreResult<(i64, bool)>;
}
