//! Configuration: built-in defaults, then an optional TOML file, then `IMNOTIFY_*` environment
//! variables, then command-line flags; each layer overrides the one before.
//!
//! Every key, with its environment variable, is listed in `config.example.toml` and in
//! `imnotify serve --help`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Serialize};

/// Parses a `listen` value (`--listen`, `IMNOTIFY_LISTEN`, the file's `listen`): an IP address
/// and a port, such as `127.0.0.1:8080` or `[::]:8080`. The error names the value and says
/// what to write instead, since the usual mistakes (`localhost:8080`, a bare port) get only
/// "invalid socket address syntax" from the standard parser.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address and port: write 127.0.0.1:8080 (this machine only), \
             0.0.0.0:8080 (every IPv4 interface) or [::]:8080; a host name such as localhost \
             is not accepted"
        )
    })
}

fn deserialize_listen<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct Listen;
    impl serde::de::Visitor<'_> for Listen {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an IP address and port such as 127.0.0.1:8080")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            parse_listen(v).map_err(E::custom)
        }
        // `IMNOTIFY_LISTEN=8080` arrives as a number: the same advice as for any bad value.
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SocketAddr, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SocketAddr, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(Listen)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port.
    #[serde(deserialize_with = "deserialize_listen")]
    pub listen: SocketAddr,
    /// Where the SQLite database lives.
    pub data_dir: PathBuf,
    /// `postgres://user@host:port/db` (or `host=/run/postgresql`): use PostgreSQL instead of
    /// the SQLite database in `data_dir` (issue 14). No TLS: loopback or a unix socket.
    pub database_url: Option<String>,
    /// The base URL printed in webhook URLs, when the server sits behind a proxy or a DNS name.
    pub public_url: Option<String>,
    /// Refuse webhook calls over plain HTTP (P7). Unset means: on unless listening on loopback.
    pub require_https: Option<bool>,
    /// Peers whose `X-Forwarded-Proto` and `X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Names the server may be reached by, `host` (any port) or `host:port`, besides the listen
    /// address and `localhost`/`127.0.0.1`/`[::1]` on the listen port. Without `public_url`, a
    /// `Host` header outside this list is not used in any URL the server emits (issue 10 §4).
    pub allowed_hosts: Vec<String>,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub retention: RetentionConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub events: EventsConfig,
    pub pull: PullConfig,
    pub smtp: SmtpConfig,
    pub email: EmailConfig,
    pub admin: AdminConfig,
    pub journal: JournalConfig,
}

/// The admin API under `/admin/api/` (the test-server toolkit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin token (`Authorization: Bearer TOKEN`). Unset: the first start creates one,
    /// prints it once and stores only its SHA-256.
    pub token: Option<String>,
}

/// The request journal: the last REST calls, in memory, for `/admin/api/requests`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// How many calls are kept (a batch's commands count one each); 0 switches recording off.
    pub capacity: usize,
    /// Bytes of parameters, and of result, kept per entry; the rest is cut off.
    pub entry_bytes: usize,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            capacity: 1000,
            entry_bytes: 4096,
        }
    }
}

/// The event log and the live streams (issue 12).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Hours an event stays in the log for resuming streams (at least 24 is recommended).
    pub retention_hours: i64,
    /// Open streams one user may hold; more get OVERLOAD_LIMIT (503). A quarter of them only
    /// browser sessions may take (`store::hub::HubLimits::reserved_for_browser`).
    pub max_streams_per_user: usize,
    /// Open streams the server holds in all; more get OVERLOAD_LIMIT (503).
    pub max_streams: usize,
    /// Seconds between the comment lines that keep an idle stream open through proxies.
    pub heartbeat_seconds: u64,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            retention_hours: 24,
            max_streams_per_user: 16,
            max_streams: 10_000,
            heartbeat_seconds: 15,
        }
    }
}

/// The built-in Push&Pull server (issue 13; push-pull.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// Seconds a channel handed out by `pull.config.get` stays good (Bitrix24: 43205, §1.3).
    pub channel_ttl_seconds: i64,
}

impl Default for PullConfig {
    fn default() -> PullConfig {
        PullConfig {
            channel_ttl_seconds: 43_205,
        }
    }
}

/// How the server hands e-mail to a mail server. Without `host`, e-mail is off.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: Option<String>,
    /// Default: 465 for `tls`, 587 for `starttls`, 25 for `none`.
    pub port: Option<u16>,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, e.g. `imnotify <noreply@example.com>`; required with `host`.
    pub from: Option<String>,
}

// The password never reaches a log through `{:?}`.
impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

impl Config {
    /// Whether notifications are queued for e-mail at all: with SMTP, or with mail capture.
    pub fn mail_enabled(&self) -> bool {
        self.smtp.enabled() || self.email.capture
    }
}

impl SmtpConfig {
    pub fn enabled(&self) -> bool {
        self.host.as_deref().is_some_and(|h| !h.is_empty())
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::Tls => 465,
            SmtpTls::Starttls => 587,
            SmtpTls::None => 25,
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a local relay).
    None,
    /// Plain, then STARTTLS, which is required.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

/// E-mail for MESSAGE_OUT (DECISIONS D10-D14).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// A notification's mail is due this many seconds after it was added (D10).
    pub delay_seconds: i64,
    /// After this many failed attempts a mail is dead.
    pub max_attempts: i64,
    /// The first retry waits about this long; each next one twice as long, with jitter.
    pub retry_base_seconds: u64,
    /// No retry waits longer than this.
    pub retry_max_seconds: u64,
    /// Hours sent and skipped outbox rows are kept for `imnotify outbox list`.
    pub keep_hours: i64,
    /// Keep mails in memory for `GET /admin/api/mail` instead of sending them (issue 16, the
    /// test-server toolkit). Works without `smtp.host`; the due-time rules are the same.
    pub capture: bool,
    /// Captured mails kept; past this the oldest is dropped.
    pub capture_capacity: usize,
}

impl Default for EmailConfig {
    fn default() -> EmailConfig {
        EmailConfig {
            delay_seconds: 600,
            max_attempts: 10,
            retry_base_seconds: 30,
            retry_max_seconds: 3600,
            keep_hours: 168,
            capture: false,
            capture_capacity: 1000,
        }
    }
}

/// How long notifications are kept. Bitrix24's im module removes notifications older than 60
/// days with an agent that runs every two hours (`Bitrix\Im\Notify::cleanNotifyAgent`); these
/// are its values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Notifications older than this many days are removed; 0 keeps them for ever.
    pub days: u32,
    /// Seconds between two runs of the retention task (the first runs at start).
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            days: 60,
            interval_secs: 7200,
        }
    }
}

/// Checks of the data directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Run `PRAGMA quick_check` when `serve` starts. It reads the whole database (2 s for 270 MB,
    /// a million notifications, on a busy 2-core machine); switch it off for very large
    /// databases on slow disks.
    pub quick_check: bool,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig { quick_check: true }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`, the server speaks HTTPS itself.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// ATTACH_OVERSIZE threshold: bytes of the normalised attachment's JSON (D1).
    pub attach_max_bytes: usize,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// PHP's max_input_vars: form variables past this many are dropped.
    pub max_input_vars: usize,
    /// PHP's max_input_nesting_level for bracket arrays.
    pub max_input_nesting: usize,
    /// Largest request head (request line plus headers). HTTP/1 requests over it get 431 from
    /// the HTTP layer itself; hyper cannot go below 8192.
    pub max_header_bytes: usize,
    /// Most header fields in one request (HTTP/1: 431 above it).
    pub max_headers: usize,
    /// Longest path plus query string; longer gets ERROR_REQUEST_TOO_LARGE (414).
    pub max_url_bytes: usize,
    /// Seconds a client has to send a whole request head. The same clock runs while a kept-alive
    /// connection waits for its next request, so it is also the idle timeout (slowloris).
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request body; slower gets REQUEST_TIMEOUT (408).
    pub body_read_timeout_secs: u64,
    /// Most notifications stored per recipient; past it, each new one removes the oldest read
    /// ones, then the oldest unread. 0: no cap.
    pub max_notifications_per_user: u64,
    /// Most bytes (about: the JSON encoding before escaping) one `batch` may produce, its
    /// commands' results together; past it the batch answers ERROR_BATCH_ANSWER_TOO_LARGE.
    pub batch_max_answer_bytes: usize,
    /// Most open client connections; the server waits to accept more. Clamped at start below
    /// the file-descriptor limit (RLIMIT_NOFILE, raised to its hard limit where allowed).
    pub max_connections: usize,
    /// Most open connections from one client IP; more are closed at once. 0: no cap.
    pub max_connections_per_ip: usize,
    /// With the rate limit on: most REST requests one client IP may have in flight; more get
    /// QUERY_LIMIT_EXCEEDED before their body is read. 0: no cap.
    pub max_in_flight_per_ip: usize,
    /// With the rate limit on: failed authentications per client IP, whatever credential they
    /// carry, as a leaky bucket; a full bucket refuses the address's REST requests with
    /// QUERY_LIMIT_EXCEEDED before their body is read.
    pub failed_auth_per_second: f64,
    pub failed_auth_burst: u32,
    /// Password checks (Argon2id, 19 MiB each) running at once; past it `/login` answers 429.
    pub password_hash_concurrency: usize,
    pub rate: RateConfig,
    pub operating: OperatingConfig,
}

/// The request-rate limit (P8): a leaky bucket per (client IP, credential).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    pub enabled: bool,
    /// How fast the bucket drains, in requests per second.
    pub per_second: f64,
    /// How many requests the bucket holds before QUERY_LIMIT_EXCEEDED.
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> RateConfig {
        // Bitrix24's standard plans (§6.1); Enterprise is 5/s with a burst of 250.
        RateConfig {
            enabled: true,
            per_second: 2.0,
            burst: 50,
        }
    }
}

/// The operating-time limit (P9): handler seconds per (credential, method) over ten minutes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OperatingConfig {
    pub enabled: bool,
    /// OPERATION_TIME_LIMIT once the last ten minutes' handler time is strictly above this.
    pub limit_seconds: f64,
    /// Calls whose handler time is at most this are not counted.
    pub min_counted_seconds: f64,
}

impl Default for OperatingConfig {
    fn default() -> OperatingConfig {
        OperatingConfig {
            enabled: true,
            limit_seconds: 480.0,
            min_counted_seconds: 0.1,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            attach_max_bytes: 30 * 1024,
            max_body_bytes: 8 * 1024 * 1024,
            max_input_vars: 1000,
            max_input_nesting: 64,
            rate: RateConfig::default(),
            operating: OperatingConfig::default(),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_url_bytes: 8 * 1024,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            max_notifications_per_user: 10_000,
            batch_max_answer_bytes: 16 * 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_ip: 512,
            max_in_flight_per_ip: 64,
            failed_auth_per_second: 1.0,
            failed_auth_burst: 100,
            password_hash_concurrency: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `imnotify=debug`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            public_url: None,
            require_https: None,
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            tls: TlsConfig::default(),
            limits: Limits::default(),
            retention: RetentionConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            journal: JournalConfig::default(),
            events: EventsConfig::default(),
            pull: PullConfig::default(),
            smtp: SmtpConfig::default(),
            email: EmailConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub require_https: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--no-limits`: switches off the rate and the operating limit together.
    pub no_limits: bool,
}

impl Config {
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // A named file that is missing is an error, not a silent fallback to defaults.
            if !path.exists() {
                return Err(Box::new(figment::Error::from(format!(
                    "config file {} does not exist",
                    path.display()
                ))));
            }
            fig = fig.merge(Toml::file(path));
        }
        // Only variables that name a config key reach the config; the others (IMNOTIFY_PASSWORD,
        // misspellings) are left to [`unknown_env_vars`], which only warns, so that a file's
        // unknown keys can be refused without refusing the environment's.
        let known = known_keys();
        fig = fig.merge(
            Env::prefixed("IMNOTIFY_")
                .split("__")
                .filter(move |k| known.contains(&k.as_str().to_ascii_lowercase())),
        );
        let o = overrides;
        if let Some(v) = o.listen {
            fig = fig.merge(Serialized::default("listen", v));
        }
        if let Some(v) = &o.data_dir {
            fig = fig.merge(Serialized::default("data_dir", v));
        }
        if let Some(v) = &o.database_url {
            fig = fig.merge(Serialized::default("database_url", v));
        }
        if let Some(v) = &o.public_url {
            fig = fig.merge(Serialized::default("public_url", v));
        }
        if let Some(v) = o.require_https {
            fig = fig.merge(Serialized::default("require_https", v));
        }
        if let Some(v) = &o.tls_cert {
            fig = fig.merge(Serialized::default("tls.cert", v));
        }
        if let Some(v) = &o.tls_key {
            fig = fig.merge(Serialized::default("tls.key", v));
        }
        if o.no_limits {
            fig = fig
                .merge(Serialized::default("limits.rate.enabled", false))
                .merge(Serialized::default("limits.operating.enabled", false));
        }
        let config: Config = fig.extract().map_err(Box::new)?;
        if config.limits.rate.enabled
            && !(config.limits.rate.per_second > 0.0 && config.limits.rate.burst > 0)
        {
            return Err(Box::new(figment::Error::from(
                "limits.rate.per_second and limits.rate.burst must be positive (or set limits.rate.enabled = false)".to_owned(),
            )));
        }
        if config.smtp.enabled() && config.smtp.from.as_deref().unwrap_or("").is_empty() {
            return Err(Box::new(figment::Error::from(
                "smtp.from is required when smtp.host is set".to_owned(),
            )));
        }
        if config.email.delay_seconds < 0 || config.email.max_attempts < 1 {
            return Err(Box::new(figment::Error::from(
                "email.delay_seconds must be at least 0 and email.max_attempts at least 1"
                    .to_owned(),
            )));
        }
        if config.tls.cert.is_some() != config.tls.key.is_some() {
            return Err(Box::new(figment::Error::from(
                "tls.cert and tls.key must be given together".to_owned(),
            )));
        }
        Ok(config)
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.cert.is_some() && self.tls.key.is_some()
    }

    /// P7: on by default whenever the server is reachable from other machines.
    pub fn require_https(&self) -> bool {
        self.require_https
            .unwrap_or_else(|| !self.listen.ip().is_loopback())
    }

    /// Whether a `Host` header, parsed by [`parse_host`], names this server: the listen
    /// address or a loopback name on the listen port, `public_url`'s host, or an entry of
    /// `allowed_hosts` (an entry without a port allows any). `default_port` is the scheme's,
    /// for a Host without a port. `listen` must be the bound address (port 0 resolved).
    pub fn host_allowed(&self, host: &str, port: Option<u16>, default_port: u16) -> bool {
        let port = port.unwrap_or(default_port);
        let listen_ip = match self.listen.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let own = [listen_ip.as_str(), "localhost", "127.0.0.1", "[::1]"];
        if port == self.listen.port() && own.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return true;
        }
        let public = self
            .public_url
            .as_deref()
            .and_then(|u| u.split_once("://"))
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default());
        public
            .into_iter()
            .chain(self.allowed_hosts.iter().map(String::as_str))
            .filter_map(parse_host)
            .any(|(h, p)| h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port))
    }

    /// The base URL for printed links, given the address actually bound.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        self.listen_url(bound)
    }

    /// The URL of the socket itself (`http(s)://ip:port`, an unspecified address shown as
    /// 127.0.0.1), whatever `public_url` says.
    pub fn listen_url(&self, bound: SocketAddr) -> String {
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        let host = if bound.ip().is_unspecified() {
            SocketAddr::new(IpAddr::from([127, 0, 0, 1]), bound.port())
        } else {
            bound
        };
        format!("{scheme}://{host}")
    }
}

/// Every config key as a dotted lowercase path (`limits.rate.burst`), tables left out: the
/// leaves of [`Config::default`] serialized, so a new field is a known key without a list to keep.
pub fn known_keys() -> std::collections::BTreeSet<String> {
    fn walk(
        prefix: &str,
        dict: &figment::value::Dict,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        for (k, v) in dict {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                figment::value::Value::Dict(_, d) => walk(&key, d, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    if let Ok(data) = Figment::from(Serialized::defaults(Config::default())).data() {
        for dict in data.values() {
            walk("", dict, &mut out);
        }
    }
    // `Option` fields that are `None` by default serialize to nothing; name them here.
    for k in [
        "public_url",
        "require_https",
        "tls.cert",
        "tls.key",
        "smtp.host",
        "smtp.port",
        "smtp.username",
        "smtp.password",
        "smtp.from",
    ] {
        out.insert(k.to_owned());
    }
    out
}

/// `IMNOTIFY_*` variables read by the program itself rather than as config keys.
pub const OTHER_ENV_VARS: &[&str] = &[
    "IMNOTIFY_CONFIG",
    "IMNOTIFY_PASSWORD",
    "IMNOTIFY_CLIENT_SECRET",
    "IMNOTIFY_WEBHOOK_CODE",
    "IMNOTIFY_WEBHOOK",
    "IMNOTIFY_URL",
    "IMNOTIFY_TEST_PG",
    "IMNOTIFY_TEST_PANIC_METHOD",
    "IMNOTIFY_BIN",
];

/// Names of `IMNOTIFY_*` environment variables in `vars` that are neither a config key (see
/// [`known_keys`]; `__` separates levels) nor in [`OTHER_ENV_VARS`]: most likely misspelled.
/// They are ignored; the server logs each as a warning at start.
pub fn unknown_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let known = known_keys();
    vars.into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            let Some(rest) = name.strip_prefix("IMNOTIFY_") else {
                return false;
            };
            !OTHER_ENV_VARS.contains(&name.as_str())
                && !known.contains(&rest.to_ascii_lowercase().replace("__", "."))
        })
        .collect()
}

/// A `Host` header value by a strict grammar: `name[:port]`, `ipv4[:port]` or `[ipv6][:port]`,
/// where a name is dot-separated labels of ASCII letters, digits and `-` (1-63 each, 253 in
/// all) and a port is 1-5 digits, 1-65535. Returns the host as written (brackets kept for IPv6)
/// and the port; `None` for anything else (paths, `@`, spaces, `?`, several colons).
pub fn parse_host(value: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        value[1..end].parse::<std::net::Ipv6Addr>().ok()?;
        let rest = &value[end + 1..];
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':')?),
        };
        (&value[..=end], port)
    } else {
        match value.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p > 0)?)
        }
        Some(_) => return None,
    };
    let name_ok = host.starts_with('[')
        || (host.len() <= 253
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }));
    name_ok.then_some((host, port))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_grammar() {
        use super::parse_host;
        assert_eq!(parse_host("example.com"), Some(("example.com", None)));
        assert_eq!(parse_host("a-b.c:8080"), Some(("a-b.c", Some(8080))));
        assert_eq!(parse_host("127.0.0.1:1"), Some(("127.0.0.1", Some(1))));
        assert_eq!(parse_host("[::1]:443"), Some(("[::1]", Some(443))));
        for bad in [
            "",
            "evil.example/x?",
            "evil.example:80/x",
            "a b",
            "user@evil.example",
            "evil.example:",
            "evil.example:0",
            "evil.example:65536",
            "evil.example:1:2",
            "[::1",
            "[zz]:1",
            "a..b",
            "évil.example",
            "evil.example#",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    use super::*;

    #[test]
    #[allow(clippy::result_large_err)]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\n[limits]\nattach_max_bytes = 60000\n",
            )?;
            jail.set_env("IMNOTIFY_DATA_DIR", "/from/env");
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default()).unwrap();
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
            assert_eq!(c.limits.attach_max_bytes, 60000);
            let o = Overrides {
                data_dir: Some("/from/cli".into()),
                ..Default::default()
            };
            let c = Config::load(Some(Path::new("c.toml")), &o).unwrap();
            assert_eq!(c.data_dir, PathBuf::from("/from/cli"));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn example_file_documents_the_defaults() {
        figment::Jail::expect_with(|_| {
            let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
            let c = Config::load(Some(&example), &Overrides::default()).unwrap();
            assert_eq!(c, Config::default());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn no_limits_switches_off_both() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMNOTIFY_LIMITS__OPERATING__LIMIT_SECONDS", "2.5");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert!(c.limits.rate.enabled && c.limits.operating.enabled);
            assert_eq!(c.limits.operating.limit_seconds, 2.5);
            let o = Overrides {
                no_limits: true,
                ..Default::default()
            };
            let c = Config::load(None, &o).unwrap();
            assert!(!c.limits.rate.enabled && !c.limits.operating.enabled);
            jail.set_env("IMNOTIFY_LIMITS__RATE__BURST", "0");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn unknown_file_keys_are_refused_env_only_warned() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[limits]\nmax_conections = 5\n")?;
            let e = Config::load(Some(Path::new("c.toml")), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("max_conections"), "{e}");
            jail.create_file("d.toml", "listn = \"127.0.0.1:1\"\n")?;
            let e = Config::load(Some(Path::new("d.toml")), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains("listn"), "{e}");
            jail.set_env("IMNOTIFY_LIMITS__MAX_CONECTIONS", "5");
            jail.set_env("IMNOTIFY_PASSWORD", "secret");
            jail.set_env("IMNOTIFY_LIMITS__MAX_CONNECTIONS", "7");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.limits.max_connections, 7);
            Ok(())
        });
        let vars = [
            "IMNOTIFY_LIMITS__MAX_CONECTIONS",
            "IMNOTIFY_PASSWORD",
            "IMNOTIFY_CONFIG",
            "IMNOTIFY_URL",
            "IMNOTIFY_WEBHOOK",
            "IMNOTIFY_SMTP__HOST",
            "IMNOTIFY_ALLOWED_HOSTS",
            "IMNOTIFY_LISTN",
            "PATH",
        ]
        .map(|n| (n.to_owned(), String::new()));
        assert_eq!(
            unknown_env_vars(vars),
            ["IMNOTIFY_LIMITS__MAX_CONECTIONS", "IMNOTIFY_LISTN"]
        );
    }

    #[test]
    fn https_is_required_off_loopback() {
        let mut c = Config::default();
        assert!(!c.require_https());
        c.listen = "0.0.0.0:8080".parse().unwrap();
        assert!(c.require_https());
        c.require_https = Some(false);
        assert!(!c.require_https());
    }
}
