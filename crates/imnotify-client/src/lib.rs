//! A typed client for Bitrix24's notification methods (`im.notify.*`), for a real Bitrix24
//! portal or an [imnotify](https://github.com/) server, which speaks the same API.
//!
//! - methods: [`Client::system_add`], [`Client::personal_add`], [`Client::delete`],
//!   [`Client::get`], [`Client::read`], [`Client::read_all`], [`Client::counters`],
//!   [`Client::user_get`] and [`Client::batch`] (typed commands, per-command errors);
//! - auth by webhook URL or OAuth, with the access token refreshed on `expired_token` and a hook
//!   that sees every new pair ([`OAuth::on_refresh`]);
//! - a client-side rate limiter (Bitrix24's 2 requests/s, burst 50, by default), retries with
//!   exponential backoff and full jitter on `QUERY_LIMIT_EXCEEDED` (any call: the server refused
//!   before running it) and on connection failures (idempotent calls only), and a wait until
//!   `operating_reset_at` on `OPERATION_TIME_LIMIT` ([`RetryPolicy`]);
//! - [`Error::Api`] carries the typed [`ErrorCode`] (one variant per catalogue code), the HTTP
//!   status and the description;
//! - HTTPS over rustls; plain `http://` only to a loopback address unless
//!   [`ClientBuilder::allow_http`]; a timeout on every call.
//!
//! The calls block (ureq); from async code run them in `spawn_blocking`.
//!
//! ```no_run
//! use imnotify_client::{Client, Notify};
//!
//! let client = Client::from_webhook("https://example.bitrix24.com/rest/1/k2q8w0d7r1m5x9zt/")?;
//! let id = client.system_add(&Notify::new(1, "Deploy finished").tag("deploy").client_id("ci"))?;
//! println!("sent notification {id}");
//! # Ok::<(), imnotify_client::Error>(())
//! ```
//!
//! With the `testing` feature, `testing::Server` starts a real `imnotify serve` for a test.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

pub use imnotify_wire::attach;
pub use imnotify_wire::envelope::{Answer, BatchResult, ErrorBody, Success, Time};
pub use imnotify_wire::error::{ErrorCode, ErrorKind};

mod batch;
#[cfg(feature = "testing")]
pub mod testing;

pub use batch::{added_id, Command, Output};

/// What [`Client::batch`] returns: each command's name with its typed result or its error, in
/// the order given (commands a `halt` skipped are left out).
///
/// ```
/// use imnotify_client::{BatchOutputs, Output};
///
/// fn failed(outputs: &BatchOutputs) -> Vec<&str> {
///     outputs.iter().filter(|(_, r)| r.is_err()).map(|(name, _)| name.as_str()).collect()
/// }
/// assert!(failed(&Vec::new()).is_empty());
/// # let _: Option<Output> = None;
/// ```
pub type BatchOutputs = Vec<(String, Result<Output, Error>)>;

/// What a call can fail with.
///
/// ```
/// use imnotify_client::{Error, ErrorCode};
/// let e = Error::Api { code: ErrorCode::MessageEmpty, status: 400, description: "Message can't be empty".into() };
/// assert_eq!(e.to_string(), "MESSAGE_EMPTY (400): Message can't be empty");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error body.
    Api {
        /// The `error` member, typed.
        code: ErrorCode,
        /// The HTTP status.
        status: u16,
        /// The `error_description` member.
        description: String,
    },
    /// No answer: the connection failed, broke or timed out.
    Network(String),
    /// An answer that is not the REST envelope (a proxy's HTML page, say), with its status.
    Decode {
        /// The HTTP status.
        status: u16,
        /// What was wrong, and the start of the body.
        detail: String,
    },
    /// The client was set up wrongly (a bad URL, plain HTTP to a remote host).
    Config(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Api {
                code,
                status,
                description,
            } => write!(f, "{code} ({status}): {description}"),
            Error::Network(e) => write!(f, "network error: {e}"),
            Error::Decode { status, detail } => write!(f, "unexpected answer ({status}): {detail}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The typed code of an [`Error::Api`].
    ///
    /// ```
    /// # use imnotify_client::{Error, ErrorCode};
    /// assert_eq!(Error::Network("reset".into()).code(), None);
    /// ```
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    fn from_body(status: u16, body: ErrorBody) -> Error {
        Error::Api {
            code: ErrorCode::from_code(&body.error),
            status,
            description: body.error_description,
        }
    }
}

/// An access and refresh token pair, as the token endpoint answers it.
///
/// ```
/// let t = imnotify_client::Tokens { access_token: "a".into(), refresh_token: "r".into() };
/// assert_eq!(t.access_token, "a");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tokens {
    /// Sent with every call as `auth`.
    pub access_token: String,
    /// Exchanged for a new pair when the access token expires; single use.
    pub refresh_token: String,
}

type RefreshHook = Arc<dyn Fn(&Tokens) + Send + Sync>;

/// OAuth 2.0 credentials of a Bitrix24 application.
///
/// ```
/// use imnotify_client::{OAuth, Tokens};
/// let oauth = OAuth::new(
///     "https://example.bitrix24.com/rest/",
///     "https://oauth.bitrix.info/oauth/token/",
///     "local.abc", "secret",
///     Tokens { access_token: "a".into(), refresh_token: "r".into() },
/// ).on_refresh(|t| println!("store {}", t.refresh_token));
/// # let _ = oauth;
/// ```
#[derive(Clone)]
pub struct OAuth {
    client_endpoint: String,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    tokens: Tokens,
    on_refresh: Option<RefreshHook>,
}

impl OAuth {
    /// `client_endpoint` is the portal's REST root (`https://PORTAL/rest/`, the token answer's
    /// `client_endpoint`); `token_endpoint` the OAuth server's `/oauth/token/` URL.
    ///
    /// ```
    /// # use imnotify_client::{OAuth, Tokens};
    /// let o = OAuth::new("https://p/rest", "https://p/oauth/token/", "id", "s",
    ///     Tokens { access_token: "a".into(), refresh_token: "r".into() });
    /// # let _ = o;
    /// ```
    pub fn new(
        client_endpoint: &str,
        token_endpoint: &str,
        client_id: &str,
        client_secret: &str,
        tokens: Tokens,
    ) -> OAuth {
        OAuth {
            client_endpoint: with_slash(client_endpoint),
            token_endpoint: token_endpoint.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            tokens,
            on_refresh: None,
        }
    }

    /// Called with each new pair after a refresh, before the call is repeated; persist it here
    /// (the old refresh token no longer works).
    ///
    /// ```
    /// # use imnotify_client::{OAuth, Tokens};
    /// let o = OAuth::new("https://p/rest/", "https://p/oauth/token/", "id", "s",
    ///     Tokens { access_token: "a".into(), refresh_token: "r".into() })
    ///     .on_refresh(|t| std::fs::write("tokens", &t.refresh_token).unwrap());
    /// # let _ = o;
    /// ```
    pub fn on_refresh(mut self, hook: impl Fn(&Tokens) + Send + Sync + 'static) -> OAuth {
        self.on_refresh = Some(Arc::new(hook));
        self
    }
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

/// When and how often a call is repeated.
///
/// ```
/// use std::time::Duration;
/// let p = imnotify_client::RetryPolicy { max_retries: 2, base_delay: Duration::from_millis(10), ..Default::default() };
/// assert_eq!(p.max_delay, Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Repeats after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The first backoff's upper bound; each retry doubles it (full jitter: a random wait up to
    /// the bound).
    pub base_delay: Duration,
    /// The cap on one backoff.
    pub max_delay: Duration,
    /// The longest wait for `operating_reset_at` after `OPERATION_TIME_LIMIT`; beyond it the
    /// error is returned.
    pub max_operating_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_operating_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    ///
    /// ```
    /// assert_eq!(imnotify_client::RetryPolicy::none().max_retries, 0);
    /// ```
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            max_retries: 0,
            max_operating_wait: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        bound.mul_f64(rand::random::<f64>())
    }
}

enum AuthState {
    Webhook,
    OAuth(Mutex<OAuth>),
}

struct Inner {
    agent: ureq::Agent,
    base: String,
    auth: AuthState,
    limiter: Option<DefaultDirectRateLimiter>,
    retry: RetryPolicy,
    /// The last `time` block's (operating, operating_reset_at) per method.
    operating: Mutex<HashMap<String, (f64, i64)>>,
    /// Held while a refresh runs, so that clones sharing the pair refresh it once: a refresh
    /// token is single-use (§7.1), and a second exchange of the same one fails `invalid_grant`.
    refreshing: Mutex<()>,
}

/// A client; cheap to clone (one connection pool, limiter and token pair shared).
///
/// ```no_run
/// let client = imnotify_client::Client::from_webhook("https://portal.example/rest/1/code/")?;
/// let unread = client.counters()?.notify;
/// # Ok::<(), imnotify_client::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Sets a [`Client`] up.
///
/// ```
/// use std::time::Duration;
/// let client = imnotify_client::Client::builder()
///     .webhook("https://portal.example/rest/1/code/")
///     .timeout(Duration::from_secs(10))
///     .rate_limit(5, 10)
///     .build()?;
/// # let _ = client;
/// # Ok::<(), imnotify_client::Error>(())
/// ```
pub struct ClientBuilder {
    webhook: Option<String>,
    oauth: Option<OAuth>,
    timeout: Duration,
    rate: Option<(u32, u32)>,
    retry: RetryPolicy,
    allow_http: bool,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            webhook: None,
            oauth: None,
            timeout: Duration::from_secs(30),
            rate: Some((2, 50)),
            retry: RetryPolicy::default(),
            allow_http: false,
        }
    }
}

impl ClientBuilder {
    /// Authenticates by the webhook URL (`https://PORTAL/rest/USER/CODE/`).
    ///
    /// ```
    /// let b = imnotify_client::Client::builder().webhook("https://p.example/rest/1/code");
    /// # let _ = b;
    /// ```
    pub fn webhook(mut self, url: &str) -> ClientBuilder {
        self.webhook = Some(with_slash(url.trim()));
        self.oauth = None;
        self
    }

    /// Authenticates with OAuth tokens.
    ///
    /// ```
    /// # use imnotify_client::{Client, OAuth, Tokens};
    /// let b = Client::builder().oauth(OAuth::new("https://p/rest/", "https://p/oauth/token/",
    ///     "id", "secret", Tokens { access_token: "a".into(), refresh_token: "r".into() }));
    /// # let _ = b;
    /// ```
    pub fn oauth(mut self, oauth: OAuth) -> ClientBuilder {
        self.oauth = Some(oauth);
        self.webhook = None;
        self
    }

    /// The limit on each HTTP exchange, connecting included (default 30 s).
    ///
    /// ```
    /// let b = imnotify_client::Client::builder().timeout(std::time::Duration::from_secs(5));
    /// # let _ = b;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// The client-side leaky bucket: `per_second` requests on average, `burst` at once (default
    /// 2 and 50, Bitrix24's limits). Zero for either turns limiting off.
    ///
    /// ```
    /// let b = imnotify_client::Client::builder().rate_limit(0, 0); // off
    /// # let _ = b;
    /// ```
    pub fn rate_limit(mut self, per_second: u32, burst: u32) -> ClientBuilder {
        self.rate = (per_second > 0 && burst > 0).then_some((per_second, burst));
        self
    }

    /// The retry policy (default [`RetryPolicy::default`]).
    ///
    /// ```
    /// let b = imnotify_client::Client::builder().retry(imnotify_client::RetryPolicy::none());
    /// # let _ = b;
    /// ```
    pub fn retry(mut self, retry: RetryPolicy) -> ClientBuilder {
        self.retry = retry;
        self
    }

    /// Allows `http://` to hosts other than loopback (credentials then travel in clear text).
    ///
    /// ```
    /// let b = imnotify_client::Client::builder().allow_http(true);
    /// # let _ = b;
    /// ```
    pub fn allow_http(mut self, allow: bool) -> ClientBuilder {
        self.allow_http = allow;
        self
    }

    /// Checks the URLs and builds the client. [`Error::Config`] without credentials, for a
    /// webhook URL without its `/rest/USER/CODE/` path or with more after the code (a method
    /// name), for a URL that is not `https://` (or
    /// `http://` to loopback, or with [`Self::allow_http`]).
    ///
    /// ```
    /// let e = imnotify_client::Client::builder().webhook("http://portal.example/rest/1/c/").build();
    /// assert!(e.is_err());
    /// ```
    pub fn build(self) -> Result<Client, Error> {
        let (base, auth) = match (self.webhook, self.oauth) {
            // The calls go to `{webhook}{method}.json`; without the `/rest/USER/CODE/` path
            // they would reach some other page and fail in a confusing way.
            (Some(url), _) if !url.contains("/rest/") => {
                return Err(Error::Config(format!(
                    "{:?} is not a webhook URL (https://PORTAL/rest/USER/CODE/)",
                    redact(&url)
                )))
            }
            // `https://PORTAL/rest/1/CODE/im.notify.system.add` (the URL of one call, pasted
            // whole) would become `.../im.notify.system.add/im.notify.system.add.json` and
            // answer ERROR_METHOD_NOT_FOUND, which hides that the URL is the mistake.
            (Some(url), _) if webhook_tail(&url).is_some() => {
                return Err(Error::Config(format!(
                    "{:?} ends with {:?} after the code: a webhook URL ends at the code \
                     (https://PORTAL/rest/USER/CODE/), the client adds the method",
                    redact(&url),
                    webhook_tail(&url).unwrap_or_default()
                )))
            }
            (Some(url), _) => (url, AuthState::Webhook),
            (None, Some(o)) => {
                check_url(&o.token_endpoint, self.allow_http)?;
                (o.client_endpoint.clone(), AuthState::OAuth(Mutex::new(o)))
            }
            (None, None) => return Err(Error::Config("no webhook or OAuth credentials".into())),
        };
        check_url(&base, self.allow_http)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout))
            .user_agent(concat!("imnotify-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let limiter = self.rate.map(|(per_second, burst)| {
            RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)),
            )
        });
        Ok(Client {
            inner: Arc::new(Inner {
                agent,
                base,
                auth,
                limiter,
                retry: self.retry,
                operating: Mutex::new(HashMap::new()),
                refreshing: Mutex::new(()),
            }),
        })
    }
}

/// What a webhook URL has after `/rest/USER/CODE/`, if anything (such as a method name).
fn webhook_tail(url: &str) -> Option<String> {
    let (_, path) = url.split_once("/rest/")?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (segments.len() > 2).then(|| segments[2..].join("/"))
}

/// `https://`, or `http://` to a loopback host (or any host when allowed).
fn check_url(url: &str, allow_http: bool) -> Result<(), Error> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(Error::Config(format!(
            "{:?} is not an https:// URL",
            redact(url)
        )));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_http {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "plain http:// to {host} would send the credential in clear text; use https://"
        )))
    }
}

/// A URL without its webhook code, for messages.
fn redact(url: &str) -> String {
    match url.find("/rest/") {
        Some(i) => format!("{}/rest/…", &url[..i]),
        None => url.to_owned(),
    }
}

/// The parameters of `im.notify.system.add` and `im.notify.personal.add` (spec §2).
///
/// ```
/// use imnotify_client::{attach::{Attach, Block}, Notify};
/// let n = Notify::new(5, "Invoice [b]#12[/b] paid")
///     .message_out("Invoice #12 paid")
///     .tag("invoice-12")
///     .sub_tag("invoices")
///     .attach(Attach::new(vec![Block::message("Total: 100 EUR")?])?);
/// assert_eq!(n.user_id, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// `USER_ID`: the recipient.
    pub user_id: u64,
    /// `MESSAGE`: BB-code text.
    pub message: String,
    /// `MESSAGE_OUT`: the text for e-mail and push.
    pub message_out: Option<String>,
    /// `TAG`: a later notification with the same tag replaces this one. With a webhook the
    /// server keeps the tag only together with [`Notify::client_id`] (DECISIONS D3).
    pub tag: Option<String>,
    /// `SUB_TAG`: a second key for `im.notify.delete`.
    pub sub_tag: Option<String>,
    /// `ATTACH`.
    pub attach: Option<attach::Attach>,
    /// `CLIENT_ID`: the tag namespace of a webhook call; without it a webhook's `TAG` and
    /// `SUB_TAG` are ignored (DECISIONS D3). OAuth calls use the application's own.
    pub client_id: Option<String>,
}

impl Notify {
    /// A notification of `message` to user `user_id`.
    ///
    /// ```
    /// assert_eq!(imnotify_client::Notify::new(1, "hi").message, "hi");
    /// ```
    pub fn new(user_id: u64, message: &str) -> Notify {
        Notify {
            user_id,
            message: message.to_owned(),
            message_out: None,
            tag: None,
            sub_tag: None,
            attach: None,
            client_id: None,
        }
    }

    /// Sets `MESSAGE_OUT`.
    ///
    /// ```
    /// assert!(imnotify_client::Notify::new(1, "hi").message_out("hi").message_out.is_some());
    /// ```
    pub fn message_out(mut self, text: &str) -> Notify {
        self.message_out = Some(text.to_owned());
        self
    }

    /// Sets `TAG`. A kept tag also makes the call safe to repeat, since the same tag replaces
    /// (see [`Notify::replaces_on_repeat`]); with a webhook it is kept only with
    /// [`Notify::client_id`] (DECISIONS D3).
    ///
    /// ```
    /// assert!(imnotify_client::Notify::new(1, "hi").tag("t").tag.is_some());
    /// ```
    pub fn tag(mut self, tag: &str) -> Notify {
        self.tag = Some(tag.to_owned());
        self
    }

    /// Sets `SUB_TAG`.
    ///
    /// ```
    /// assert!(imnotify_client::Notify::new(1, "hi").sub_tag("s").sub_tag.is_some());
    /// ```
    pub fn sub_tag(mut self, sub_tag: &str) -> Notify {
        self.sub_tag = Some(sub_tag.to_owned());
        self
    }

    /// Sets `CLIENT_ID`, the tag namespace of a webhook call (DECISIONS D3): with it a webhook's
    /// `TAG` replaces and `im.notify.delete` by tag finds the notification.
    ///
    /// ```
    /// let n = imnotify_client::Notify::new(1, "hi").tag("deploy").client_id("ci");
    /// assert_eq!(n.client_id.as_deref(), Some("ci"));
    /// ```
    pub fn client_id(mut self, client_id: &str) -> Notify {
        self.client_id = Some(client_id.to_owned());
        self
    }

    /// Whether sending this twice leaves one notification: only when the server keeps the tag,
    /// which a later add with the same tag then replaces. The server ignores a tag that is empty
    /// by PHP rules (`""`, `"0"`), and a webhook's tag without a `CLIENT_ID` (DECISIONS D3);
    /// `oauth` says whether the call carries an OAuth token (whose application names the
    /// namespace). The client repeats an add after a broken connection only when this is true.
    ///
    /// ```
    /// use imnotify_client::Notify;
    /// assert!(!Notify::new(1, "hi").tag("t").replaces_on_repeat(false));
    /// assert!(Notify::new(1, "hi").tag("t").client_id("ci").replaces_on_repeat(false));
    /// assert!(Notify::new(1, "hi").tag("t").replaces_on_repeat(true));
    /// assert!(!Notify::new(1, "hi").tag("0").replaces_on_repeat(true));
    /// ```
    pub fn replaces_on_repeat(&self, oauth: bool) -> bool {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty() && s != "0");
        given(&self.tag) && (oauth || given(&self.client_id))
    }

    /// Sets `ATTACH`.
    ///
    /// ```
    /// use imnotify_client::{attach::{Attach, Block}, Notify};
    /// let n = Notify::new(1, "hi").attach(Attach::new(vec![Block::delimiter()]).unwrap());
    /// assert!(n.attach.is_some());
    /// ```
    pub fn attach(mut self, attach: attach::Attach) -> Notify {
        self.attach = Some(attach);
        self
    }

    /// The method parameters as JSON (`USER_ID`, `MESSAGE`, and the set options).
    ///
    /// ```
    /// let p = imnotify_client::Notify::new(3, "hi").tag("t").to_params();
    /// assert_eq!(p, serde_json::json!({"USER_ID": 3, "MESSAGE": "hi", "TAG": "t"}));
    /// ```
    pub fn to_params(&self) -> Value {
        let mut p = Map::new();
        p.insert("USER_ID".into(), json!(self.user_id));
        p.insert("MESSAGE".into(), json!(self.message));
        for (k, v) in [
            ("MESSAGE_OUT", &self.message_out),
            ("TAG", &self.tag),
            ("SUB_TAG", &self.sub_tag),
            ("CLIENT_ID", &self.client_id),
        ] {
            if let Some(v) = v {
                p.insert(k.into(), json!(v));
            }
        }
        if let Some(a) = &self.attach {
            p.insert(
                "ATTACH".into(),
                serde_json::to_value(a).unwrap_or(Value::Null),
            );
        }
        Value::Object(p)
    }
}

/// What `im.notify.delete` deletes (§4.3).
///
/// ```
/// let d = imnotify_client::Delete::Tag { tag: "deploy".into(), client_id: Some("ci".into()) };
/// # let _ = d;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delete {
    /// One of the caller's notifications, by id.
    Id(u64),
    /// Every notification with this tag in the client's namespace (a webhook names it with
    /// `client_id`; an OAuth app's is its own).
    Tag {
        /// `TAG`.
        tag: String,
        /// `CLIENT_ID`, needed with a webhook.
        client_id: Option<String>,
    },
    /// As `Tag`, by `SUB_TAG`.
    SubTag {
        /// `SUB_TAG`.
        sub_tag: String,
        /// `CLIENT_ID`, needed with a webhook.
        client_id: Option<String>,
    },
}

impl Delete {
    fn params(&self) -> Value {
        match self {
            Delete::Id(id) => json!({ "ID": id }),
            Delete::Tag { tag, client_id } => {
                json!({ "TAG": tag, "CLIENT_ID": client_id })
            }
            Delete::SubTag { sub_tag, client_id } => {
                json!({ "SUB_TAG": sub_tag, "CLIENT_ID": client_id })
            }
        }
    }
}

/// The parameters of `im.notify.get` (§4.2): the cursor and the page size.
///
/// ```
/// let q = imnotify_client::GetQuery { limit: Some(10), ..Default::default() };
/// # let _ = q;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetQuery {
    /// `LAST_ID` and `LAST_TYPE`: continue after this notification (from the previous page).
    pub after: Option<(u64, u8)>,
    /// `LIMIT`: at most 50.
    pub limit: Option<u32>,
}

/// One notification as `im.notify.get` lists it (§2.8); other members are in `extra`.
///
/// ```
/// let n: imnotify_client::Notification = serde_json::from_str(r#"{"id":"7","text":"hi","notify_read":"N"}"#).unwrap();
/// assert_eq!((n.id, n.read()), (7, false));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Notification {
    /// The id (sent as a number or a string).
    #[serde(deserialize_with = "int_or_string")]
    pub id: u64,
    /// The text.
    #[serde(default)]
    pub text: String,
    /// `Y` or `N`.
    #[serde(default)]
    pub notify_read: String,
    /// The tag (namespaced, as stored).
    #[serde(default)]
    pub notify_tag: Option<String>,
    /// The sub-tag.
    #[serde(default)]
    pub notify_sub_tag: Option<String>,
    /// Every other member.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Notification {
    /// Whether it has been read.
    ///
    /// ```
    /// let n: imnotify_client::Notification = serde_json::from_str(r#"{"id":1,"notify_read":"Y"}"#).unwrap();
    /// assert!(n.read());
    /// ```
    pub fn read(&self) -> bool {
        self.notify_read == "Y"
    }
}

/// The result of `im.notify.get`.
///
/// ```
/// let l: imnotify_client::NotificationList = serde_json::from_str(r#"{"notifications":[],"users":[]}"#).unwrap();
/// assert_eq!(l.total_count, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NotificationList {
    /// This page, newest first.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// All notifications of the user.
    #[serde(default)]
    pub total_count: i64,
    /// The unread ones.
    #[serde(default)]
    pub total_unread_count: i64,
    /// The caller's notification chat; absent when the user has none yet (§4.2).
    #[serde(default)]
    pub chat_id: Option<u64>,
    /// The authors' cards. A PHP array keyed by user id arrives as a JSON object; its values
    /// are taken then (P6).
    #[serde(default, deserialize_with = "list_or_map_values")]
    pub users: Vec<Value>,
}

fn list_or_map_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items,
        Value::Object(m) => m.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    })
}

/// The result of `im.counters.get` (§4.11): the unread notification count, and the rest as sent.
///
/// ```
/// let c: imnotify_client::Counters = serde_json::from_str(r#"{"TYPE":{"ALL":3,"NOTIFY":2}}"#).unwrap();
/// assert_eq!(c.notify, 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Counters {
    /// `TYPE.NOTIFY`.
    pub notify: i64,
    /// `TYPE.ALL`.
    pub all: i64,
    /// The whole result.
    pub raw: Value,
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        let n = |k: &str| raw["TYPE"][k].as_i64().unwrap_or(0);
        Ok(Counters {
            notify: n("NOTIFY"),
            all: n("ALL"),
            raw,
        })
    }
}

/// A user from `user.get` (the fields a notification sender needs; the rest in `extra`).
///
/// ```
/// let u: imnotify_client::UserInfo = serde_json::from_str(r#"{"ID":"5","ACTIVE":true,"NAME":"Ann"}"#).unwrap();
/// assert_eq!((u.id, u.active), (5, true));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserInfo {
    /// `ID` (a string on the wire).
    #[serde(rename = "ID", deserialize_with = "int_or_string")]
    pub id: u64,
    /// `ACTIVE`.
    #[serde(rename = "ACTIVE", default)]
    pub active: bool,
    /// `NAME`.
    #[serde(rename = "NAME", default)]
    pub name: Option<String>,
    /// `LAST_NAME`.
    #[serde(rename = "LAST_NAME", default)]
    pub last_name: Option<String>,
    /// `EMAIL`.
    #[serde(rename = "EMAIL", default)]
    pub email: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| D::Error::custom("not an id")),
        Value::String(s) => s.parse().map_err(D::Error::custom),
        _ => Err(D::Error::custom("not an id")),
    }
}

/// Whether a call may be sent again after a broken connection: the server may have run it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

impl Client {
    /// A client for a webhook URL with the defaults.
    ///
    /// ```
    /// let c = imnotify_client::Client::from_webhook("https://portal.example/rest/1/code/");
    /// assert!(c.is_ok());
    /// ```
    pub fn from_webhook(url: &str) -> Result<Client, Error> {
        Client::builder().webhook(url).build()
    }

    /// A builder with the defaults: 30 s timeout, 2 requests/s with a burst of 50, 4 retries.
    ///
    /// ```
    /// let b = imnotify_client::Client::builder();
    /// # let _ = b;
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The current token pair of an OAuth client (after any refresh), `None` for a webhook.
    ///
    /// ```
    /// let c = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// assert!(c.tokens().is_none());
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn tokens(&self) -> Option<Tokens> {
        match &self.inner.auth {
            AuthState::Webhook => None,
            AuthState::OAuth(o) => Some(lock(o).tokens.clone()),
        }
    }

    /// `im.notify.system.add`: a system notification; the new id. It is repeated after a broken
    /// connection only when a repeat replaces rather than duplicates
    /// ([`Notify::replaces_on_repeat`]).
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let id = client.system_add(&imnotify_client::Notify::new(1, "Backup done"))?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn system_add(&self, n: &Notify) -> Result<u64, Error> {
        self.add("im.notify.system.add", n)
    }

    /// `im.notify.personal.add`: a notification from the calling user; the new id.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let id = client.personal_add(&imnotify_client::Notify::new(2, "Please review"))?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn personal_add(&self, n: &Notify) -> Result<u64, Error> {
        self.add("im.notify.personal.add", n)
    }

    fn add(&self, method: &str, n: &Notify) -> Result<u64, Error> {
        let idem = if n.replaces_on_repeat(self.is_oauth()) {
            Idempotent::Yes
        } else {
            Idempotent::No
        };
        let v: Value = self.call(method, n.to_params(), idem)?;
        batch::added_id(v)
    }

    /// `im.notify.delete`: true when something was deleted (by id) or the tag was valid.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// client.delete(&imnotify_client::Delete::Id(42))?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn delete(&self, what: &Delete) -> Result<bool, Error> {
        self.call("im.notify.delete", what.params(), Idempotent::Yes)
    }

    /// `im.notify.get`: a page of the caller's notifications.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let page = client.get(&Default::default())?;
    /// for n in &page.notifications { println!("{} {}", n.id, n.text); }
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn get(&self, q: &GetQuery) -> Result<NotificationList, Error> {
        self.call("im.notify.get", batch::get_params(q), Idempotent::Yes)
    }

    /// `im.notify.read`: marks `id` read (or unread with `read == false`), and with
    /// `only_current == false` every newer one too.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// client.read(42, true, true)?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn read(&self, id: u64, read: bool, only_current: bool) -> Result<bool, Error> {
        self.call(
            "im.notify.read",
            batch::read_params(id, read, only_current),
            Idempotent::Yes,
        )
    }

    /// `im.notify.read.all`: marks every notification of the caller read.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// client.read_all()?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn read_all(&self) -> Result<bool, Error> {
        let v: Value = self.call("im.notify.read.all", json!({}), Idempotent::Yes)?;
        Ok(batch::truthy(&v))
    }

    /// `im.counters.get`: the caller's unread counters.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// println!("{} unread", client.counters()?.notify);
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn counters(&self) -> Result<Counters, Error> {
        self.call("im.counters.get", json!({}), Idempotent::Yes)
    }

    /// `user.get` with a filter (`{"ID": 5}`, `{"ACTIVE": true}`, or `{}` for the first page).
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let users = client.user_get(serde_json::json!({"ID": 1}))?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn user_get(&self, filter: Value) -> Result<Vec<UserInfo>, Error> {
        self.call("user.get", json!({ "FILTER": filter }), Idempotent::Yes)
    }

    /// `batch`: up to 50 commands in one request, each with its own result or error. With
    /// `halt`, the first failing command stops the rest. The outer call fails only if the batch
    /// itself does.
    ///
    /// ```no_run
    /// use imnotify_client::{Command, Notify};
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let out = client.batch(&[
    ///     ("a", Command::SystemAdd(Notify::new(1, "one"))),
    ///     ("b", Command::Counters),
    /// ], false)?;
    /// for (name, result) in out { println!("{name}: {result:?}"); }
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn batch(&self, commands: &[(&str, Command)], halt: bool) -> Result<BatchOutputs, Error> {
        let (params, idem) = batch::params(commands, halt, self.is_oauth());
        let result: BatchResult = self.call("batch", params, idem)?;
        Ok(batch::outputs(commands, result))
    }

    /// Calls any method with JSON parameters and decodes its `result`. Retried after a broken
    /// connection only when `idempotent`.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let me: serde_json::Value = client.call_raw("user.current", serde_json::json!({}), true)?;
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn call_raw<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        idempotent: bool,
    ) -> Result<T, Error> {
        self.call_full(method, params, idempotent).map(|s| s.result)
    }

    /// As [`Client::call_raw`], but the whole success body: `result`, `next`, `total` and the
    /// `time` block.
    ///
    /// ```no_run
    /// # let client = imnotify_client::Client::from_webhook("https://p.example/rest/1/c/")?;
    /// let answer = client.call_full::<u64>("im.notify.system.add",
    ///     imnotify_client::Notify::new(1, "hi").to_params(), false)?;
    /// println!("{} after {:?}", answer.result, answer.time.map(|t| t.duration));
    /// # Ok::<(), imnotify_client::Error>(())
    /// ```
    pub fn call_full<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        idempotent: bool,
    ) -> Result<Success<T>, Error> {
        let idem = if idempotent {
            Idempotent::Yes
        } else {
            Idempotent::No
        };
        self.call_answer(method, params, idem)
    }

    fn is_oauth(&self) -> bool {
        matches!(self.inner.auth, AuthState::OAuth(_))
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        idem: Idempotent,
    ) -> Result<T, Error> {
        self.call_answer(method, params, idem).map(|s| s.result)
    }

    fn call_answer<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        idem: Idempotent,
    ) -> Result<Success<T>, Error> {
        let retry = &self.inner.retry;
        let mut attempt = 0u32;
        let mut refreshed = false;
        loop {
            self.wait_for_operating(method);
            let token = self.access_token();
            let err = match self.once::<T>(method, &params, token.as_deref()) {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = match &err {
                Error::Api {
                    code: ErrorCode::ExpiredToken,
                    ..
                } if !refreshed && matches!(self.inner.auth, AuthState::OAuth(_)) => {
                    self.refresh(token.as_deref())?;
                    refreshed = true;
                    continue;
                }
                // A token that a concurrent refresh (by a clone) has just replaced: the server
                // may already call it invalid. Repeat with the new one.
                Error::Api {
                    code: ErrorCode::InvalidToken | ErrorCode::ExpiredToken,
                    ..
                } if token.is_some() && self.replaced_by_refresh(token.as_deref()) => continue,
                Error::Api {
                    code: ErrorCode::QueryLimitExceeded,
                    ..
                } => Some(retry.backoff(attempt)),
                Error::Api {
                    code: ErrorCode::OperationTimeLimit,
                    ..
                } => self.operating_wait(method),
                Error::Network(_) if idem == Idempotent::Yes => Some(retry.backoff(attempt)),
                _ => None,
            };
            match wait {
                Some(d) if attempt < retry.max_retries => {
                    std::thread::sleep(d);
                    attempt += 1;
                }
                _ => return Err(err),
            }
        }
    }

    /// After `OPERATION_TIME_LIMIT`: the wait until the method's window drops its oldest
    /// minute, if the last `time` block told us when and that is soon enough.
    fn operating_wait(&self, method: &str) -> Option<Duration> {
        let (_, reset_at) = *lock(&self.inner.operating).get(method)?;
        let wait = Duration::from_secs_f64((reset_at as f64 - unix_now()).max(0.0) + 0.5);
        (wait <= self.inner.retry.max_operating_wait).then_some(wait)
    }

    /// Before a call: a method whose last `operating` figure is at Bitrix24's limit (480 s of
    /// handler time in 10 minutes) waits for `operating_reset_at` rather than be blocked.
    fn wait_for_operating(&self, method: &str) {
        const OPERATING_LIMIT: f64 = 480.0;
        let known = lock(&self.inner.operating).get(method).copied();
        if let Some((operating, _)) = known {
            if operating >= OPERATING_LIMIT {
                if let Some(wait) = self.operating_wait(method) {
                    std::thread::sleep(wait);
                }
            }
        }
    }

    fn limit(&self) {
        if let Some(l) = &self.inner.limiter {
            while let Err(not_until) = l.check() {
                use governor::clock::{Clock as _, DefaultClock};
                std::thread::sleep(not_until.wait_time_from(DefaultClock::default().now()));
            }
        }
    }

    /// The OAuth access token calls carry now; `None` for a webhook.
    fn access_token(&self) -> Option<String> {
        match &self.inner.auth {
            AuthState::Webhook => None,
            AuthState::OAuth(o) => Some(lock(o).tokens.access_token.clone()),
        }
    }

    fn once<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &Value,
        token: Option<&str>,
    ) -> Result<Success<T>, Error> {
        let mut body = params.clone();
        if let (Some(token), Value::Object(m)) = (token, &mut body) {
            m.insert("auth".into(), json!(token));
        }
        let url = format!("{}{method}.json", self.inner.base);
        self.limit();
        let (status, text) = self.post_json(&url, &body)?;
        let answer: Answer<T> = serde_json::from_str(&text).map_err(|e| Error::Decode {
            status,
            detail: format!(
                "{e}; body starts {:?}",
                text.chars().take(200).collect::<String>()
            ),
        })?;
        match answer {
            Answer::Success(s) => {
                if let Some(t) = &s.time {
                    lock(&self.inner.operating)
                        .insert(method.to_owned(), (t.operating, t.operating_reset_at));
                }
                Ok(s)
            }
            Answer::Error(e) => Err(Error::from_body(status, e)),
        }
    }

    fn post_json(&self, url: &str, body: &Value) -> Result<(u16, String), Error> {
        let mut resp = self
            .inner
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(|e| Error::Network(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Network(e.to_string()))?;
        Ok((status, text))
    }

    /// Whether `token` is no longer the current access token, once any refresh under way (by
    /// this client or a clone) has finished. The server revokes the old token while the
    /// refreshing call still reads its answer, so a call refused in that window would
    /// otherwise still see the old token here and report `invalid_token`.
    fn replaced_by_refresh(&self, token: Option<&str>) -> bool {
        drop(lock(&self.inner.refreshing));
        self.access_token().as_deref() != token
    }

    /// Exchanges the refresh token for a new pair, stores it and tells the hook; `expired` is
    /// the access token the server refused. When another call (of this client or a clone) has
    /// replaced that token meanwhile, its pair is used instead of exchanging again.
    fn refresh(&self, expired: Option<&str>) -> Result<(), Error> {
        let AuthState::OAuth(o) = &self.inner.auth else {
            return Ok(());
        };
        let _one_at_a_time = lock(&self.inner.refreshing);
        if lock(o).tokens.access_token.as_str() != expired.unwrap_or_default() {
            return Ok(());
        }
        // A GET with the query, the form Bitrix24's OAuth documentation gives for
        // oauth.bitrix.info (imnotify's /oauth/token/ takes GET and POST alike).
        let url = {
            let o = lock(o);
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "refresh_token")
                .append_pair("client_id", &o.client_id)
                .append_pair("client_secret", &o.client_secret)
                .append_pair("refresh_token", &o.tokens.refresh_token)
                .finish();
            let sep = if o.token_endpoint.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{sep}{query}", o.token_endpoint)
        };
        self.limit();
        let mut resp = self
            .inner
            .agent
            .get(&url)
            .call()
            .map_err(|e| Error::Network(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Network(e.to_string()))?;
        if let Ok(e) = serde_json::from_str::<ErrorBody>(&text) {
            return Err(Error::from_body(status, e));
        }
        let tokens: Tokens = serde_json::from_str(&text).map_err(|e| Error::Decode {
            status,
            detail: format!("token answer: {e}"),
        })?;
        let hook = {
            let mut o = lock(o);
            o.tokens = tokens.clone();
            o.on_refresh.clone()
        };
        if let Some(hook) = hook {
            hook(&tokens);
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_url("http://127.0.0.1:8080/rest/1/x/", false).is_ok());
        assert!(check_url("http://[::1]:8080/rest/1/x/", false).is_ok());
        assert!(check_url("http://localhost/rest/1/x/", false).is_ok());
        assert!(check_url("http://portal.example/rest/1/x/", false).is_err());
        assert!(check_url("http://portal.example/rest/1/x/", true).is_ok());
        assert!(check_url("ftp://portal.example/", true).is_err());
    }

    #[test]
    fn notification_list_reads_php_arrays_and_the_chat() {
        let l: NotificationList = serde_json::from_str(
            r#"{"total_count":1,"total_unread_count":1,"chat_id":7,"notifications":[],
                "users":{"5":{"id":5,"name":"Ann"}}}"#,
        )
        .unwrap();
        assert_eq!((l.chat_id, l.users.len()), (Some(7), 1));
        assert_eq!(l.users[0]["name"], "Ann");
        let l: NotificationList =
            serde_json::from_str(r#"{"notifications":[],"users":[]}"#).unwrap();
        assert_eq!((l.chat_id, l.users.len()), (None, 0));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
            ..RetryPolicy::default()
        };
        for attempt in 0..40 {
            assert!(p.backoff(attempt) <= Duration::from_millis(250));
        }
        assert!(p.backoff(0) <= Duration::from_millis(100));
    }
}
