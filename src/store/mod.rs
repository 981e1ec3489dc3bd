//! Storage: the `Store` trait that the server talks to, and its backends.
//!
//! The trait is the seam for a second backend (PostgreSQL). Every write that the server
//! acknowledges goes through `add_notification`, which returns only after the row is durable.

pub mod sqlite;

use async_trait::async_trait;

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
        rate: RateOverride,
    ) -> StoreResult<i64>;

    async fn user_count(&self) -> StoreResult<i64>;

    /// Waits until every queued write is committed; called on shutdown.
    async fn flush(&self);
}
