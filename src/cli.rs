//! The command line: `serve` and the admin commands. Admin commands open the same SQLite file
//! (or PostgreSQL database, with `--database-url`) as a running server; the database's locking
//! makes that safe.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

pub mod remote;
pub mod send;

use crate::app;
use crate::auth::{oauth, password, secret};
use crate::config::{Config, Overrides};
use crate::fixtures;
use crate::limits::RateOverride;
use crate::store::sqlite::split_scopes;
use crate::store::{NewApp, User, UserUpdate};

const CONFIG_HELP: &str = "\
Configuration is read from built-in defaults, then the TOML file given with --config
(or IMNOTIFY_CONFIG), then IMNOTIFY_* environment variables, then these flags.
Keys (environment variable in brackets; nested keys use a double underscore):
  listen                   [IMNOTIFY_LISTEN]                    default 127.0.0.1:8080
  data_dir                 [IMNOTIFY_DATA_DIR]                  default ./data
  database_url             [IMNOTIFY_DATABASE_URL]              postgres://user@host:port/db: PostgreSQL instead of SQLite
  public_url               [IMNOTIFY_PUBLIC_URL]                base URL printed in webhook URLs
  require_https            [IMNOTIFY_REQUIRE_HTTPS]             default: on unless listening on loopback; covers every credential
  trusted_proxies          [IMNOTIFY_TRUSTED_PROXIES]           e.g. [\"127.0.0.1\"]; their X-Forwarded-Proto/-For is believed
  allowed_hosts            [IMNOTIFY_ALLOWED_HOSTS]             e.g. [\"notify.example.com\"]; Host values used in URLs
  tls.cert, tls.key        [IMNOTIFY_TLS__CERT, IMNOTIFY_TLS__KEY]  PEM files; serve HTTPS
  limits.attach_max_bytes  [IMNOTIFY_LIMITS__ATTACH_MAX_BYTES]  default 30720 (ATTACH_OVERSIZE above)
  limits.max_body_bytes    [IMNOTIFY_LIMITS__MAX_BODY_BYTES]    default 8388608
  limits.max_input_vars    [IMNOTIFY_LIMITS__MAX_INPUT_VARS]    default 1000 (PHP max_input_vars)
  limits.max_input_nesting [IMNOTIFY_LIMITS__MAX_INPUT_NESTING] default 64
  limits.rate.enabled      [IMNOTIFY_LIMITS__RATE__ENABLED]     default true (QUERY_LIMIT_EXCEEDED, 503)
  limits.rate.per_second   [IMNOTIFY_LIMITS__RATE__PER_SECOND]  default 2 (leaky-bucket drain)
  limits.rate.burst        [IMNOTIFY_LIMITS__RATE__BURST]       default 50
  limits.operating.enabled [IMNOTIFY_LIMITS__OPERATING__ENABLED] default true (OPERATION_TIME_LIMIT, 429)
  limits.operating.limit_seconds       [IMNOTIFY_LIMITS__OPERATING__LIMIT_SECONDS]       default 480
  limits.operating.min_counted_seconds [IMNOTIFY_LIMITS__OPERATING__MIN_COUNTED_SECONDS] default 0.1
  limits.max_header_bytes  [IMNOTIFY_LIMITS__MAX_HEADER_BYTES]  default 65536 (431 above)
  limits.max_headers       [IMNOTIFY_LIMITS__MAX_HEADERS]       default 100 (431 above)
  limits.max_url_bytes     [IMNOTIFY_LIMITS__MAX_URL_BYTES]     default 8192 (414 above)
  limits.header_read_timeout_secs [IMNOTIFY_LIMITS__HEADER_READ_TIMEOUT_SECS] default 10; also the idle timeout
  limits.body_read_timeout_secs   [IMNOTIFY_LIMITS__BODY_READ_TIMEOUT_SECS]   default 30 (408 above)
  limits.max_notifications_per_user [IMNOTIFY_LIMITS__MAX_NOTIFICATIONS_PER_USER] default 10000; oldest read go first; 0: no cap
  limits.batch_max_answer_bytes [IMNOTIFY_LIMITS__BATCH_MAX_ANSWER_BYTES] default 16777216 (ERROR_BATCH_ANSWER_TOO_LARGE above)
  limits.max_connections   [IMNOTIFY_LIMITS__MAX_CONNECTIONS]   default 10000; lowered to RLIMIT_NOFILE less 128
  limits.max_connections_per_ip [IMNOTIFY_LIMITS__MAX_CONNECTIONS_PER_IP] default 512; 0: no cap
  limits.max_in_flight_per_ip   [IMNOTIFY_LIMITS__MAX_IN_FLIGHT_PER_IP]   default 64 (QUERY_LIMIT_EXCEEDED above); 0: no cap
  limits.failed_auth_per_second [IMNOTIFY_LIMITS__FAILED_AUTH_PER_SECOND] default 1.0 (leaky-bucket drain)
  limits.failed_auth_burst [IMNOTIFY_LIMITS__FAILED_AUTH_BURST] default 100 failed authentications per client IP
  limits.password_hash_concurrency [IMNOTIFY_LIMITS__PASSWORD_HASH_CONCURRENCY] default 4 /login checks at once (429 above)
  retention.days           [IMNOTIFY_RETENTION__DAYS]           default 60; older notifications are removed; 0: keep
  retention.interval_secs  [IMNOTIFY_RETENTION__INTERVAL_SECS]  default 7200 (first run at start)
  storage.quick_check      [IMNOTIFY_STORAGE__QUICK_CHECK]      default true: check the database at start
  admin.token              [IMNOTIFY_ADMIN__TOKEN]              the admin API's token; unset: made and printed at first start
  journal.capacity         [IMNOTIFY_JOURNAL__CAPACITY]         default 1000 calls kept in memory; 0 is off
  journal.entry_bytes      [IMNOTIFY_JOURNAL__ENTRY_BYTES]      default 4096 (parameters and result, each)
  events.retention_hours   [IMNOTIFY_EVENTS__RETENTION_HOURS]   default 24; GET /events resumes within it
  events.max_streams_per_user [IMNOTIFY_EVENTS__MAX_STREAMS_PER_USER] default 16 (OVERLOAD_LIMIT above)
  events.max_streams       [IMNOTIFY_EVENTS__MAX_STREAMS]       default 10000
  events.heartbeat_seconds [IMNOTIFY_EVENTS__HEARTBEAT_SECONDS] default 15
  pull.channel_ttl_seconds [IMNOTIFY_PULL__CHANNEL_TTL_SECONDS] default 43205: Push&Pull channel lifetime
  smtp.host                [IMNOTIFY_SMTP__HOST]                e-mail for MESSAGE_OUT is off without it
  smtp.port                [IMNOTIFY_SMTP__PORT]                default 465 (tls), 587 (starttls), 25 (none)
  smtp.tls                 [IMNOTIFY_SMTP__TLS]                 none, starttls (default) or tls
  smtp.username, smtp.password [IMNOTIFY_SMTP__USERNAME, IMNOTIFY_SMTP__PASSWORD]
  smtp.from                [IMNOTIFY_SMTP__FROM]                sender mailbox; required with smtp.host
  email.delay_seconds      [IMNOTIFY_EMAIL__DELAY_SECONDS]      default 600: mailed if still unread then
  email.max_attempts       [IMNOTIFY_EMAIL__MAX_ATTEMPTS]       default 10, then the mail is dead
  email.retry_base_seconds [IMNOTIFY_EMAIL__RETRY_BASE_SECONDS] default 30 (doubling, with jitter)
  email.retry_max_seconds  [IMNOTIFY_EMAIL__RETRY_MAX_SECONDS]  default 3600
  email.keep_hours         [IMNOTIFY_EMAIL__KEEP_HOURS]         default 168: sent rows stay listed
  email.capture            [IMNOTIFY_EMAIL__CAPTURE]            keep mails for /admin/api/mail, not sent
  email.capture_capacity   [IMNOTIFY_EMAIL__CAPTURE_CAPACITY]   default 1000 captured mails
  log.format               [IMNOTIFY_LOG__FORMAT]               text or json
  log.filter               [IMNOTIFY_LOG__FILTER]               default info";

#[derive(Parser, Debug)]
#[command(name = "imnotify", version, about = "A notification server that speaks the Bitrix24 REST API (im.notify.*)", after_help = CONFIG_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Data directory holding the SQLite database [env: IMNOTIFY_DATA_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL instead of SQLite: postgres://user@host:port/db, no TLS
    /// [env: IMNOTIFY_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// TOML configuration file
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "IMNOTIFY_CONFIG",
        hide_env_values = true
    )]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server
    #[command(after_help = CONFIG_HELP)]
    Serve(ServeArgs),
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Manage incoming webhooks
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Manage OAuth applications
    #[command(subcommand)]
    App(AppCommand),
    /// Revoke OAuth tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show and revive the e-mails of the outbox
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The running server's request journal (admin API)
    #[command(subcommand)]
    Requests(remote::RequestsCommand),
    /// The running server's injected faults (admin API)
    #[command(subcommand)]
    Fault(remote::FaultCommand),
    /// The running server's test clock (admin API)
    #[command(subcommand)]
    Clock(remote::ClockCommand),
    /// Empty the running server's notifications, journal and faults (admin API)
    Reset(remote::ResetArgs),
    /// The running server's captured mails (admin API; with email.capture)
    #[command(subcommand)]
    Mail(remote::MailCommand),
    /// Send a notification to a Bitrix24 portal or an imnotify server by webhook (the Rust client)
    Send(send::SendArgs),
    /// Copy a SQLite data directory into an empty PostgreSQL database (--database-url)
    Migrate(MigrateArgs),
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The SQLite data directory to copy (stop its server first)
    #[arg(long, value_name = "DATA_DIR")]
    pub from_sqlite: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// List outbox rows, newest first
    List(OutboxListArgs),
    /// Make a row pending again, with a fresh count of attempts, due now
    Retry(OutboxRetryArgs),
}

#[derive(Args, Debug)]
pub struct OutboxListArgs {
    /// Only rows in this state
    #[arg(long, value_parser = ["pending", "sent", "skipped", "dead"])]
    pub state: Option<String>,
    /// At most this many rows
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print one JSON array instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Revoke every access and refresh token of a user, of an application, or of both together
    Revoke(TokenRevokeArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("whose").required(true).multiple(true).args(["user_id", "client_id"])))]
pub struct TokenRevokeArgs {
    /// The user whose tokens go
    #[arg(long)]
    pub user_id: Option<i64>,
    /// The application whose tokens go
    #[arg(long)]
    pub client_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct ClientIdArgs {
    #[arg(long)]
    pub client_id: String,
}

#[derive(Args, Debug)]
pub struct JsonArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    #[arg(long)]
    pub id: i64,
}

#[derive(Args, Debug)]
pub struct OutboxRetryArgs {
    /// The outbox row's id (from outbox list)
    pub id: i64,
}

/// `on` or `off`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Register an OAuth application and print its client_id and client_secret (shown once)
    Add(AppAddArgs),
    /// Install an application for a user and print a token pair, as an installation hands it over
    Token(AppTokenArgs),
    /// List the registered applications (never their secrets)
    List(JsonArgs),
    /// Switch an application off: its tokens and code exchanges are refused until it is enabled
    Disable(ClientIdArgs),
    /// Switch a disabled application back on
    Enable(ClientIdArgs),
}

#[derive(Args, Debug)]
pub struct AppAddArgs {
    /// Display name; system notifications from the app start with it
    #[arg(long)]
    pub name: String,
    /// Use this client id instead of a random one; adding it again updates that app
    #[arg(long, value_name = "ID", requires = "client_secret")]
    pub client_id: Option<String>,
    /// The client secret to go with --client-id (8 to 256 visible characters)
    #[arg(
        long,
        value_name = "SECRET",
        requires = "client_id",
        env = "IMNOTIFY_CLIENT_SECRET",
        hide_env_values = true
    )]
    pub client_secret: Option<String>,
    /// Comma-separated scopes, e.g. im or im,user
    #[arg(long, value_name = "SCOPES")]
    pub scope: String,
    /// Where /oauth/authorize/ sends the browser with the code: an http:// or https:// URL
    #[arg(long, value_name = "URL", default_value = "")]
    pub redirect_uri: String,
    /// Restrict the app to these user ids (comma-separated); others get user_access_error
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub allowed_users: Option<Vec<i64>>,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// A credential's own request-rate limit (P8), for webhooks and applications.
#[derive(Args, Debug)]
pub struct RateArgs {
    /// This credential's request-rate drain, requests per second; 0 switches its rate limit off
    /// [default: limits.rate.per_second]
    #[arg(long, value_name = "N")]
    pub rate_per_second: Option<f64>,
    /// This credential's burst: requests its bucket holds [default: limits.rate.burst]
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
}

impl RateArgs {
    fn parse(&self) -> anyhow::Result<RateOverride> {
        if self
            .rate_per_second
            .is_some_and(|r| !(r >= 0.0 && r.is_finite()))
        {
            bail!("--rate-per-second must be 0 (no limit) or a positive number");
        }
        if self.rate_burst == Some(0) {
            bail!("--rate-burst must be at least 1");
        }
        Ok(RateOverride {
            per_second: self.rate_per_second,
            burst: self.rate_burst,
        })
    }
}

#[derive(Args, Debug)]
pub struct AppTokenArgs {
    #[arg(long)]
    pub client_id: String,
    #[arg(long)]
    pub user_id: i64,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [env: IMNOTIFY_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR", value_parser = crate::config::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS [env: IMNOTIFY_TLS__CERT]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS [env: IMNOTIFY_TLS__KEY]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse credentials (webhook codes, tokens, secrets, passwords, sessions) over plain HTTP [env: IMNOTIFY_REQUIRE_HTTPS]
    /// [default: true unless listening on loopback]
    #[arg(long, value_name = "BOOL")]
    pub require_https: Option<bool>,
    /// Base URL used in printed webhook URLs [env: IMNOTIFY_PUBLIC_URL]
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Switch off the rate limit and the operating-time limit (for benchmarks and load tests)
    #[arg(long)]
    pub no_limits: bool,
    /// TOML file of users, webhooks (with fixed codes) and apps (with fixed client ids and
    /// secrets) to create or update at start; see README, "Testing your integration"
    #[arg(long, value_name = "FILE")]
    pub fixtures: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user who can receive notifications
    Add(UserAddArgs),
    /// Set the password a user signs in with on the login page; ends the user's sessions and
    /// OAuth tokens
    Password(UserPasswordArgs),
    /// Change a user; a new password ends the user's sessions and OAuth tokens
    Update(UserUpdateArgs),
    /// Deactivate a user: notifications to it return false, and its webhooks, sessions and
    /// OAuth tokens stop working
    Deactivate(IdArgs),
    /// Activate a deactivated user again (its webhooks work again; sessions and tokens do not)
    Activate(IdArgs),
    /// Turn a user's e-mail for MESSAGE_OUT on or off (D13)
    EmailNotifications(UserEmailArgs),
}

#[derive(Args, Debug)]
pub struct UserEmailArgs {
    #[arg(long)]
    pub id: i64,
    #[arg(value_enum)]
    pub state: OnOff,
}

#[derive(Args, Debug)]
pub struct UserUpdateArgs {
    /// The user's id
    #[arg(long)]
    pub id: i64,
    /// New first name (NAME in user.get)
    #[arg(long)]
    pub name: Option<String>,
    /// New last name (LAST_NAME)
    #[arg(long)]
    pub last_name: Option<String>,
    /// New e-mail address: the login page's login and where MESSAGE_OUT is mailed
    #[arg(long)]
    pub email: Option<String>,
    /// Make the user a portal administrator
    #[arg(long, overrides_with = "no_admin")]
    pub admin: bool,
    /// Take the administrator role away
    #[arg(long, overrides_with = "admin")]
    pub no_admin: bool,
    /// New password for the login page
    #[arg(long)]
    pub password: Option<String>,
    /// Turn the user's e-mail for MESSAGE_OUT on or off (D13)
    #[arg(long, value_enum)]
    pub email_notifications: Option<OnOff>,
}

#[derive(Args, Debug)]
pub struct UserPasswordArgs {
    /// The user's id
    #[arg(long)]
    pub id: i64,
    /// The new password (stored as an Argon2 hash)
    #[arg(long, env = "IMNOTIFY_PASSWORD", hide_env_values = true)]
    pub password: String,
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// User id (the USER_ID callers send)
    #[arg(long)]
    pub id: i64,
    /// First name (NAME in user.get)
    #[arg(long)]
    pub name: String,
    /// Last name (LAST_NAME)
    #[arg(long, default_value = "")]
    pub last_name: String,
    /// E-mail address: a login for the login page, and where MESSAGE_OUT is mailed
    #[arg(long, default_value = "")]
    pub email: String,
    /// Create the user inactive: notifications to it return false
    #[arg(long)]
    pub inactive: bool,
    /// Make the user a portal administrator
    #[arg(long)]
    pub admin: bool,
    /// E-mail for MESSAGE_OUT to this user's address (D13)
    #[arg(long, value_enum, default_value = "on")]
    pub email_notifications: OnOff,
    /// Password for the login page (stored as an Argon2 hash)
    #[arg(long, env = "IMNOTIFY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum WebhookCommand {
    /// Create an incoming webhook and print its URL (the code is shown only once)
    Add(WebhookAddArgs),
    /// List webhooks (never their codes)
    List(WebhookListArgs),
    /// Revoke a webhook: a running server refuses it within a second
    Revoke(IdArgs),
}

#[derive(Args, Debug)]
pub struct WebhookListArgs {
    /// Only this user's webhooks
    #[arg(long)]
    pub user_id: Option<i64>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct WebhookAddArgs {
    /// The user the webhook acts as
    #[arg(long)]
    pub user_id: i64,
    /// Use this code (8 to 64 letters and digits) instead of a random one; adding the same
    /// code again updates that webhook, so CI scripts can run this every time
    #[arg(
        long,
        value_name = "CODE",
        env = "IMNOTIFY_WEBHOOK_CODE",
        hide_env_values = true
    )]
    pub code: Option<String>,
    /// Comma-separated scopes, e.g. im or im,user
    #[arg(long, value_name = "SCOPES")]
    pub scope: String,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Deactivates (ending sessions and tokens in the same transaction) or reactivates a user.
async fn set_user_active(
    store: &dyn crate::store::Store,
    id: i64,
    active: bool,
) -> anyhow::Result<()> {
    store
        .update_user(
            id,
            UserUpdate {
                active: Some(active),
                ..UserUpdate::default()
            },
        )
        .await
        .with_context(|| format!("updating user {id}"))
}

pub fn load_config(global: &GlobalArgs, mut overrides: Overrides) -> anyhow::Result<Config> {
    overrides.data_dir = global.data_dir.clone();
    overrides.database_url = global.database_url.clone();
    Config::load(global.config.as_deref(), &overrides)
        .map_err(|e| anyhow::anyhow!("configuration: {}", describe_config_error(*e)))
}

/// figment's own wording names a file's key with its profile, `"default.limits.rate.burst"`,
/// a profile the operator never wrote; this names the key as it is written in the file (the
/// variable's name for the environment) and the source, one line per error.
fn describe_config_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let mut line = e.kind.to_string();
            if !e.path.is_empty() {
                let key = e.path.join(".");
                match &e.metadata {
                    Some(m) if m.name.contains("environment") => line.push_str(&format!(
                        " for IMNOTIFY_{}",
                        key.replace('.', "__").to_ascii_uppercase()
                    )),
                    _ => line.push_str(&format!(" for key {key}")),
                }
            }
            if let Some(m) = &e.metadata {
                match &m.source {
                    Some(source) => line.push_str(&format!(" in {source}")),
                    None if !m.name.contains("environment") => {
                        line.push_str(&format!(" in {}", m.name))
                    }
                    None => {}
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Admin commands (and `migrate --from-sqlite`) work on an existing SQLite database: a data
/// directory without one is most likely a mistyped `--data-dir`, and creating an empty
/// database there would hide the mistake behind "user 1 does not exist". Only `serve` creates
/// a database. The error names the directory and how to make one.
///
/// A database this user may not reach (the data directory is 0700, "Data at rest") is not
/// reported as missing: the usual cause is running the command as another user than the
/// server, and "start the server once" would send the operator the wrong way.
fn require_database(dir: &std::path::Path) -> anyhow::Result<()> {
    let db = dir.join(crate::store::sqlite::DB_FILE);
    match std::fs::metadata(&db) {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot reach the database {db}: {e}: the data directory is private to the user the \
             server runs as (mode 0700); run this command as that user",
            db = db.display()
        ),
        Err(_) => {}
    }
    bail!(
        "no imnotify database in {dir}: point --data-dir (or IMNOTIFY_DATA_DIR, or data_dir in \
         the configuration file) at the server's data directory, or create a database there by \
         starting the server once: imnotify serve --data-dir {dir}",
        dir = dir.display()
    )
}

pub async fn run_admin(config: Config, command: Command) -> anyhow::Result<()> {
    // The admin API's forms talk to the running server, not to the data directory.
    let command = match command {
        Command::Requests(c) => return remote::run(config, remote::requests(c)).await,
        Command::Fault(c) => return remote::run(config, remote::fault(c)).await,
        Command::Clock(c) => return remote::run(config, remote::clock(c)).await,
        Command::Reset(a) => return remote::run(config, remote::reset(a)).await,
        Command::Mail(c) => return remote::run(config, remote::mail(c)).await,
        other => other,
    };
    if let Command::Migrate(a) = &command {
        let Some(url) = config.database_url.clone() else {
            bail!("migrate copies into PostgreSQL: give --database-url (or IMNOTIFY_DATABASE_URL)");
        };
        require_database(&a.from_sqlite)?;
        // Held for the whole copy: no server may run on the data dir meanwhile, or what it
        // acknowledged after the copy began would be left behind (issue 14).
        let _lock = crate::store::sqlite::ServeLock::migrating(&a.from_sqlite)?;
        // Opening the store creates the schema; the copy then runs on its own connection.
        drop(app::open_store(&config, false).await?);
        let db = a.from_sqlite.join(crate::store::sqlite::DB_FILE);
        let report = crate::store::import::sqlite_to_postgres(&db, &url).await?;
        for (table, rows) in report {
            println!("{table}\t{rows}");
        }
        return Ok(());
    }
    if config.database_url.is_none() {
        require_database(&config.data_dir)?;
    }
    let store = app::open_store(&config, false).await?;
    match command {
        Command::Serve(_) => unreachable!("serve is handled by main"),
        Command::Send(_) => unreachable!("send is handled by main"),
        Command::Requests(_)
        | Command::Fault(_)
        | Command::Clock(_)
        | Command::Reset(_)
        | Command::Mail(_)
        | Command::Migrate(_) => {
            unreachable!("admin API commands and migrate are handled above")
        }
        Command::User(UserCommand::Add(a)) => {
            if a.id <= 0 {
                bail!("--id must be a positive integer");
            }
            // Hash first, so a bad password cannot leave a half-made user behind.
            let password_hash = a.password.as_deref().map(password::hash).transpose()?;
            let user = User {
                id: a.id,
                name: a.name,
                last_name: a.last_name,
                email: a.email,
                active: !a.inactive,
                is_admin: a.admin,
            };
            store
                .add_user(user.clone())
                .await
                .context("adding the user")?;
            if let Some(hash) = password_hash {
                store.set_password(user.id, hash).await?;
            }
            if a.email_notifications == OnOff::Off {
                store.set_email_notifications(user.id, false).await?;
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": user.id, "name": user.name, "last_name": user.last_name,
                        "email": user.email, "active": user.active, "admin": user.is_admin,
                    })
                );
            } else {
                println!("Added user {} ({})", user.id, user.name);
            }
        }
        Command::User(UserCommand::EmailNotifications(a)) => {
            let on = a.state == OnOff::On;
            if !store.set_email_notifications(a.id, on).await? {
                bail!("user {} does not exist", a.id);
            }
            println!(
                "E-mail notifications {} for user {}",
                if on { "on" } else { "off" },
                a.id
            );
        }
        Command::Outbox(OutboxCommand::List(a)) => {
            let rows = store.outbox_rows(a.state.clone(), a.limit).await?;
            if a.json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("id\tnotification\tuser\tstate\tattempts\tdue_at\tlast_error");
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.id,
                        r.notification_id,
                        r.user_id,
                        r.state,
                        r.attempts,
                        r.due_at,
                        r.last_error.unwrap_or_default()
                    );
                }
            }
        }
        Command::Outbox(OutboxCommand::Retry(a)) => {
            if !store
                .retry_mail(a.id, crate::clock::Clock::system().unix())
                .await?
            {
                bail!("no outbox row {}", a.id);
            }
            println!("Outbox row {} is pending again", a.id);
        }
        Command::User(UserCommand::Password(a)) => {
            store
                .set_password(a.id, password::hash(&a.password)?)
                .await
                .context("setting the password")?;
            println!(
                "Password set for user {}; their sessions and OAuth tokens are ended",
                a.id
            );
        }
        Command::User(UserCommand::Update(a)) => {
            let update = UserUpdate {
                name: a.name,
                last_name: a.last_name,
                email: a.email,
                is_admin: (a.admin || a.no_admin).then_some(a.admin),
                active: None,
                password_hash: a.password.as_deref().map(password::hash).transpose()?,
            };
            if update == UserUpdate::default() && a.email_notifications.is_none() {
                bail!("nothing to change: give --name, --last-name, --email, --admin, --no-admin, --password or --email-notifications");
            }
            let ends = update.ends_credentials();
            if update != UserUpdate::default() {
                store
                    .update_user(a.id, update)
                    .await
                    .context("updating the user")?;
            }
            if let Some(state) = a.email_notifications {
                if !store
                    .set_email_notifications(a.id, state == OnOff::On)
                    .await?
                {
                    bail!("user {} does not exist", a.id);
                }
            }
            println!("Updated user {}", a.id);
            if ends {
                println!("Their sessions and OAuth tokens are ended.");
            }
        }
        Command::User(UserCommand::Deactivate(a)) => {
            set_user_active(store.as_ref(), a.id, false).await?;
            println!(
                "Deactivated user {}: webhooks refused, sessions and OAuth tokens ended",
                a.id
            );
        }
        Command::User(UserCommand::Activate(a)) => {
            set_user_active(store.as_ref(), a.id, true).await?;
            println!("Activated user {}", a.id);
        }
        Command::Webhook(WebhookCommand::List(a)) => {
            let hooks = store.list_webhooks(a.user_id).await?;
            if a.json {
                let list: Vec<_> = hooks
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "id": h.id, "user_id": h.user_id, "scope": h.scopes,
                            "active": h.active, "created_at": h.created_at,
                            "rate_per_second": h.rate.per_second, "rate_burst": h.rate.burst,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for h in &hooks {
                    println!(
                        "{}\tuser {}\t{}\t{}",
                        h.id,
                        h.user_id,
                        h.scopes.join(","),
                        if h.active { "active" } else { "revoked" }
                    );
                }
            }
        }
        Command::Webhook(WebhookCommand::Revoke(a)) => {
            if !store.set_webhook_active(a.id, false).await? {
                bail!("webhook {} does not exist", a.id);
            }
            println!("Revoked webhook {}", a.id);
        }
        Command::App(AppCommand::List(a)) => {
            let apps = store.list_apps().await?;
            if a.json {
                let list: Vec<_> = apps
                    .iter()
                    .map(|app| {
                        serde_json::json!({
                            "id": app.id, "client_id": app.client_id, "name": app.name,
                            "scope": app.scopes, "redirect_uri": app.redirect_uri,
                            "allowed_users": app.allowed_users, "active": app.active,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for app in &apps {
                    println!(
                        "{}\t{}\t{}\t{}",
                        app.client_id,
                        app.name,
                        app.scopes.join(","),
                        if app.active { "active" } else { "disabled" }
                    );
                }
            }
        }
        Command::App(AppCommand::Disable(a)) => {
            if !store.set_app_active(&a.client_id, false).await? {
                bail!("no application {}", a.client_id);
            }
            println!("Disabled application {}", a.client_id);
        }
        Command::App(AppCommand::Enable(a)) => {
            if !store.set_app_active(&a.client_id, true).await? {
                bail!("no application {}", a.client_id);
            }
            println!("Enabled application {}", a.client_id);
        }
        Command::Token(TokenCommand::Revoke(a)) => {
            let app_id = match &a.client_id {
                Some(client_id) => Some(
                    store
                        .app_by_client_id(client_id)
                        .await?
                        .with_context(|| format!("no application {client_id}"))?
                        .id,
                ),
                None => None,
            };
            let n = store.revoke_tokens(a.user_id, app_id).await?;
            println!("Revoked {n} token pair(s)");
        }
        Command::App(AppCommand::Add(a)) => {
            let scopes = split_scopes(&a.scope.to_lowercase());
            if scopes.is_empty() {
                bail!("--scope needs at least one scope, e.g. im");
            }
            oauth::check_scopes(&scopes, &crate::auth::known_scopes())
                .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            oauth::check_redirect_uri(&a.redirect_uri)
                .map_err(|e| anyhow::anyhow!("--redirect-uri: {e}"))?;
            let rate = a.rate.parse()?;
            // As the fixtures check it: a typo in the list would otherwise lock out the user
            // meant, with nothing said until their first call fails with user_access_error.
            for &id in a.allowed_users.iter().flatten() {
                if store.user(id).await?.is_none() {
                    bail!("--allowed-users: user {id} does not exist");
                }
            }
            let fixed = a.client_id.is_some();
            let client_id = a.client_id.unwrap_or_else(oauth::new_client_id);
            let client_secret = a.client_secret.unwrap_or_else(oauth::new_client_secret);
            let app = NewApp {
                client_id: client_id.clone(),
                secret_hash: secret::hash(&client_secret),
                name: a.name.clone(),
                scopes: scopes.clone(),
                redirect_uri: a.redirect_uri.clone(),
                allowed_users: a.allowed_users.clone(),
                rate,
            };
            if fixed {
                fixtures::check_client_id(&client_id)?;
                fixtures::check_client_secret(&client_secret)?;
                store.upsert_app(app).await.map(|_| ())
            } else {
                store.add_app(app).await.map(|_| ())
            }
            .context("adding the application")?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "client_id": client_id, "client_secret": client_secret, "name": a.name,
                        "scope": scopes, "redirect_uri": a.redirect_uri,
                    })
                );
            } else {
                println!("client_id:     {client_id}\nclient_secret: {client_secret}");
            }
        }
        Command::App(AppCommand::Token(a)) => {
            let app = store
                .app_by_client_id(&a.client_id)
                .await?
                .filter(|app| app.active)
                .with_context(|| format!("no active application {}", a.client_id))?;
            if store.user(a.user_id).await?.filter(|u| u.active).is_none() {
                bail!("user {} does not exist or is inactive", a.user_id);
            }
            if !app.allows(a.user_id) {
                bail!(
                    "application {} is restricted to other users (--allowed-users)",
                    a.client_id
                );
            }
            let member_id = store.setting("member_id", oauth::new_member_id()).await?;
            let portal = oauth::Portal::new(&config.base_url(config.listen), member_id);
            let answer = crate::web::oauth::install_and_mint(
                store.as_ref(),
                &app,
                a.user_id,
                &portal,
                &crate::clock::Clock::system(),
            )
            .await?;
            if a.json {
                println!("{answer}");
            } else {
                println!(
                    "access_token:  {}\nrefresh_token: {}\nexpires_in:    {}",
                    answer["access_token"].as_str().unwrap_or_default(),
                    answer["refresh_token"].as_str().unwrap_or_default(),
                    answer["expires_in"]
                );
            }
        }
        Command::Webhook(WebhookCommand::Add(a)) => {
            let scopes = split_scopes(&a.scope.to_lowercase());
            if scopes.is_empty() {
                bail!("--scope needs at least one scope, e.g. im");
            }
            // As for apps and fixtures: a typo (`im,usr`) would otherwise make a webhook that
            // later fails with insufficient_scope, far from its cause.
            oauth::check_scopes(&scopes, &crate::auth::known_scopes())
                .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            let rate = a.rate.parse()?;
            let code = match a.code {
                Some(code) => {
                    fixtures::check_code(&code)?;
                    store
                        .ensure_webhook(a.user_id, secret::hash(&code), &scopes, rate)
                        .await
                        .context("adding the webhook")?;
                    code
                }
                None => app::create_webhook(store.as_ref(), a.user_id, &scopes, rate)
                    .await
                    .context("adding the webhook")?,
            };
            let url = format!(
                "{}/rest/{}/{}/",
                config.base_url(config.listen),
                a.user_id,
                code
            );
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "user_id": a.user_id, "code": code, "url": url, "scope": scopes,
                        // null: the server's limits.rate values apply.
                        "rate_per_second": rate.per_second, "rate_burst": rate.burst,
                    })
                );
            } else {
                println!("{url}");
            }
        }
    }
    store.flush().await;
    Ok(())
}
