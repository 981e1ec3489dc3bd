//! Storage: the `Store` trait that the server talks to, and its backends.
//!
//! The trait is the seam for a second backend (PostgreSQL). Every write that the server
//! acknowledges goes through `add_notification`, which returns only after the row is durable.

pub mod sqlite;

use async_trait::async_trait;

use crate::domain::directory::UserQuery;
use crate::domain::inbox::{Cursor, ReadRequest, SearchRequest, TagField};
use crate::domain::notify::Draft;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub user_id: i64,
    pub code_hash: Vec<u8>,
    pub scopes: Vec<String>,
}

#[derive(Debug)]
pub enum StoreError {
    /// The write conflicts with existing data (a duplicate user id, an unknown user, ...).
    Conflict(String),
    /// Anything else: the database failed or the writer is gone.
    Backend(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(m) => write!(f, "conflict: {m}"),
            StoreError::Backend(m) => write!(f, "storage error: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a notification, first deleting the recipient's earlier notifications with the same
    /// stored tag (D4), all in one transaction. Returns the new id once it is on disk, or `None`
    /// when the recipient does not exist or is inactive (D8).
    async fn add_notification(&self, draft: Draft, created_at: i64) -> StoreResult<Option<i64>>;

    /// The active webhooks of an active user.
    async fn webhooks_of(&self, user_id: i64) -> StoreResult<Vec<Webhook>>;

    async fn add_user(&self, user: User) -> StoreResult<()>;

    async fn user(&self, id: i64) -> StoreResult<Option<User>>;

    /// Creates a webhook and returns its id. The caller keeps the plain code.
    async fn add_webhook(
        &self,
        user_id: i64,
        code_hash: [u8; 32],
        scopes: &[String],
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

    /// Deletes every notification of every recipient with this stored tag or sub-tag (D4).
    async fn delete_by_tag(&self, field: TagField, value: String) -> StoreResult<u64>;

    /// Deletes the recipient's confirm-type notification once answered, and returns it; `None`
    /// when there is no such notification.
    async fn confirm(&self, user_id: i64, id: i64) -> StoreResult<Option<Notification>>;

    /// The users with these ids, in id order.
    async fn users_by_id(&self, ids: Vec<i64>) -> StoreResult<Vec<UserRecord>>;

    /// A page of `user.get`, and the number of users that match the filter.
    async fn find_users(&self, query: UserQuery) -> StoreResult<(Vec<UserRecord>, i64)>;

    /// Waits until every queued write is committed; called on shutdown.
    async fn flush(&self);
}
