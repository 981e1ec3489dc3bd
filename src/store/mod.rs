//! Storage: the `Store` trait that the server talks to, and its backends.
//!
//! The trait is the seam for a second backend (PostgreSQL). Every write that the server
//! acknowledges goes through `add_notification`, which returns only after the row is durable.

pub mod sqlite;

use async_trait::async_trait;

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

/// A webhook as the authenticator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub user_id: i64,
    pub code_hash: Vec<u8>,
    pub scopes: Vec<String>,
}

/// A registered OAuth application.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub app: App,
    pub user_id: i64,
    pub access_expires: i64,
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    pub csrf: String,
    pub expires_at: i64,
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
    ) -> StoreResult<i64>;

    async fn user_count(&self) -> StoreResult<i64>;

    /// Finds an active user by numeric id or e-mail, with the password hash, for the login page.
    async fn user_login(&self, login: &str) -> StoreResult<Option<(User, Option<String>)>>;

    async fn set_password(&self, user_id: i64, password_hash: String) -> StoreResult<()>;

    async fn add_app(&self, app: NewApp) -> StoreResult<i64>;

    async fn app_by_client_id(&self, client_id: &str) -> StoreResult<Option<App>>;

    /// Records that `user_id` approved the app; idempotent.
    async fn install_app(&self, app_id: i64, user_id: i64) -> StoreResult<()>;

    async fn issue_tokens(&self, app_id: i64, user_id: i64, tokens: NewTokens) -> StoreResult<()>;

    /// The grant behind an access token that has not been revoked (it may have expired).
    async fn access_grant(&self, access_hash: [u8; 32]) -> StoreResult<Option<AccessGrant>>;

    /// Uses a refresh token once: revokes its pair and issues `tokens` for the same user, in one
    /// transaction. `None` when the token is unknown, used, expired or another app's.
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

    /// Consumes an authorization code of `app_id`: returns its user if it was valid at `now`.
    async fn take_code(
        &self,
        code_hash: [u8; 32],
        app_id: i64,
        now: i64,
    ) -> StoreResult<Option<i64>>;

    async fn add_session(&self, id_hash: [u8; 32], session: Session) -> StoreResult<()>;

    async fn session(&self, id_hash: [u8; 32], now: i64) -> StoreResult<Option<Session>>;

    async fn delete_session(&self, id_hash: [u8; 32]) -> StoreResult<()>;

    /// A server-wide value, created with `init` on first use.
    async fn setting(&self, key: &str, init: String) -> StoreResult<String>;

    /// Waits until every queued write is committed; called on shutdown.
    async fn flush(&self);

    /// How many writes are queued for the backend's writer and not yet taken (for `/metrics`).
    fn writer_queue_depth(&self) -> usize {
        0
    }
}
