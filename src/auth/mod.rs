//! Authentication: which credential a call carries (§1.7, P3) and who the caller is.

pub mod channel;
pub mod oauth;
pub mod password;
pub mod secret;

use axum::http::{header, HeaderMap};

use crate::domain::notify::Origin;
use crate::error::ApiError;
use crate::limits::RateOverride;
use crate::store::Store;
use crate::value::{Array, Value};

/// The credential a request presents, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth access token (`Authorization: Bearer`, `auth` or `access_token`).
    Token(String),
    /// Webhook user and code, from the path or the `aplogin`/`ap` parameters.
    Webhook {
        login: String,
        code: String,
    },
    /// A browser session's CSRF token (`sessid` or `X-Bitrix-Csrf-Token`), with the session
    /// cookie if the browser sent one.
    Session {
        csrf: String,
        cookie: Option<String>,
    },
    None,
}

impl Credential {
    /// A fixed-size fingerprint of the credential exactly as presented, checked or not: the
    /// rate limit's key, so that a wrong code is limited like a right one and the limiter never
    /// holds a secret.
    pub fn fingerprint(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match self {
            Credential::Token(t) => {
                h.update(b"token\0");
                h.update(t.as_bytes());
            }
            Credential::Webhook { login, code } => {
                h.update(b"webhook\0");
                h.update(login.as_bytes());
                h.update(b"\0");
                h.update(code.as_bytes());
            }
            // The cookie identifies the browser; the CSRF token is the same for all its calls.
            Credential::Session { csrf, cookie } => {
                h.update(b"session\0");
                h.update(cookie.as_deref().unwrap_or(csrf).as_bytes());
            }
            Credential::None => h.update(b"none"),
        }
        let digest = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The user the call acts as: the webhook owner or the token's user.
    pub user_id: i64,
    pub kind: CallerKind,
    pub scopes: Vec<String>,
    /// The credential's own request-rate limit, if it has one (P8).
    pub rate: RateOverride,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    Webhook {
        webhook_id: i64,
    },
    /// An OAuth application acting for `Caller::user_id`.
    App {
        app_id: i64,
        client_id: String,
        name: String,
    },
    /// The notification center's own pages, signed in as the user, with the session's id hash
    /// (SHA-256 of its cookie; a Push&Pull channel handed out to it ends with it).
    Session {
        id_hash: [u8; 32],
    },
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn insufficient_scope(&self) -> ApiError {
        match self.kind {
            CallerKind::App { .. } => ApiError::insufficient_scope_token(),
            _ => ApiError::insufficient_scope_webhook(),
        }
    }

    pub fn is_session(&self) -> bool {
        matches!(self.kind, CallerKind::Session { .. })
    }

    /// Whose operating-time account a call is charged to (§6.2: the auth type and the webhook's
    /// or application's id). `None` for callers the limiter never limits, browser sessions.
    /// The request-rate bucket's key once authenticated: who the caller is, not how the
    /// credential was spelled (`/rest/02/..`, `/rest/+2/..` and `/rest/2/..` are one webhook).
    /// A truncated SHA-256, like [`Credential::fingerprint`].
    pub fn rate_identity(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let text = match &self.kind {
            CallerKind::Webhook { webhook_id } => format!("webhook\0{webhook_id}"),
            CallerKind::App { app_id, .. } => format!("app\0{app_id}\0{}", self.user_id),
            CallerKind::Session { .. } => format!("session\0{}", self.user_id),
        };
        let digest = Sha256::digest(text.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    pub fn operating_identity(&self) -> Option<String> {
        match &self.kind {
            CallerKind::Webhook { webhook_id } => Some(format!("apauth:{webhook_id}")),
            CallerKind::App { client_id, .. } => Some(format!("oauth:{client_id}")),
            CallerKind::Session { .. } => None,
        }
    }

    /// The caller as the notify rules see it. A session has no client id, like a webhook.
    pub fn origin(&self) -> Origin {
        match &self.kind {
            CallerKind::App {
                client_id, name, ..
            } => Origin::App {
                client_id: client_id.clone(),
                name: name.clone(),
            },
            CallerKind::Webhook { .. } | CallerKind::Session { .. } => Origin::Webhook {
                owner: self.user_id,
            },
        }
    }
}

/// Removes the parameters the framework consumes; a batch command's own query may carry them too.
pub fn strip_framework_keys(params: &mut Array) {
    for k in FRAMEWORK_KEYS {
        params.remove(k);
    }
}

/// Parameters the framework consumes; methods never see them (§1.6).
const FRAMEWORK_KEYS: &[&str] = &[
    "auth",
    "access_token",
    "auth_connector",
    "aplogin",
    "ap",
    "sessid",
    "state",
    "start",
];

/// Finds the credential in the order the real server tries its providers, and removes every
/// framework parameter from `params`.
pub fn extract(headers: &HeaderMap, params: &mut Array) -> Credential {
    let scalar = |p: &Array, k: &str| match p.get_str(k) {
        Some(v @ (Value::Str(_) | Value::Int(_) | Value::Float(_))) => Some(v.to_php_string()),
        _ => None,
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let cred = if let Some(token) = bearer {
        Credential::Token(token)
    } else if let Some(token) = scalar(params, "auth").or_else(|| scalar(params, "access_token")) {
        Credential::Token(token)
    } else if let (Some(login), Some(code)) = (scalar(params, "aplogin"), scalar(params, "ap")) {
        Credential::Webhook { login, code }
    } else if let Some(csrf) = scalar(params, "sessid").or_else(|| {
        headers
            .get("x-bitrix-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }) {
        Credential::Session {
            csrf,
            cookie: session_cookie(headers),
        }
    } else {
        Credential::None
    };
    strip_framework_keys(params);
    cred
}

/// Name of the browser session cookie set by the login page.
pub const SESSION_COOKIE: &str = "imnotify_session";

/// The session cookie's value, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Every scope this server knows, sorted: the scopes a method may require (checked when the
/// registry is built), what `scope` with `full` lists, and what a browser session (the user in
/// person) holds.
pub const SCOPES: &[&str] = &["im", "pull", "pull_channel", "user"];

/// [`SCOPES`] as owned strings, the form a [`Caller`] holds.
pub fn known_scopes() -> Vec<String> {
    SCOPES.iter().map(|s| (*s).to_owned()).collect()
}

/// Checks a credential at Unix time `now`. `secure` says whether the call arrived over HTTPS
/// (directly or through a trusted proxy). With `require_https` on, every credential needs it
/// (P7 names webhooks; tokens and session cookies are as secret, issue 10 §4): refused with
/// `INVALID_REQUEST` before the credential is looked up.
pub async fn authenticate(
    store: &dyn Store,
    cred: Credential,
    secure: bool,
    require_https: bool,
    now: i64,
) -> Result<Caller, ApiError> {
    if require_https && !secure && cred != Credential::None {
        return Err(ApiError::https_required());
    }
    match cred {
        Credential::None => Err(ApiError::no_auth_found()),
        Credential::Token(token) => oauth::authenticate(store, &token, now).await,
        Credential::Session { csrf, cookie } => session(store, &csrf, cookie.as_deref(), now).await,
        Credential::Webhook { login, code } => webhook(store, &login, &code).await,
    }
}

/// Logs a storage failure and hides it behind INTERNAL_SERVER_ERROR.
pub(crate) fn internal(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "credential lookup failed");
    ApiError::internal()
}

async fn session(
    store: &dyn Store,
    csrf: &str,
    cookie: Option<&str>,
    now: i64,
) -> Result<Caller, ApiError> {
    let cookie = cookie.ok_or_else(ApiError::session_user_not_authorized)?;
    let id_hash = secret::hash(cookie);
    let session = store
        .session(id_hash, now)
        .await
        .map_err(internal)?
        .ok_or_else(ApiError::session_user_not_authorized)?;
    if !secret::verify(csrf, &secret::hash(&secret::session_csrf(cookie))) {
        return Err(ApiError::session_failed());
    }
    Ok(Caller {
        user_id: session.user_id,
        kind: CallerKind::Session { id_hash },
        // The pages act as the user in person, with every scope.
        scopes: known_scopes(),
        rate: RateOverride::default(),
    })
}

async fn webhook(store: &dyn Store, login: &str, code: &str) -> Result<Caller, ApiError> {
    // Only numeric logins exist here: users have no login names.
    let user_id: i64 = login
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(ApiError::invalid_credentials)?;
    let mut hooks = store.cached_webhooks_of(user_id).await.map_err(internal)?;
    let hook = match matching(&hooks, code) {
        Some(i) => hooks.swap_remove(i),
        None => {
            // The cache may predate a webhook added by an admin command: ask the database
            // before refusing.
            let mut fresh = store.webhooks_of(user_id).await.map_err(internal)?;
            let i = matching(&fresh, code).ok_or_else(ApiError::invalid_credentials)?;
            fresh.swap_remove(i)
        }
    };
    Ok(Caller {
        user_id: hook.user_id,
        kind: CallerKind::Webhook {
            webhook_id: hook.id,
        },
        scopes: hook.scopes,
        rate: hook.rate,
    })
}

/// The webhook whose code this is. Every candidate is checked so the time taken does not depend
/// on which one matched.
fn matching(hooks: &[crate::store::Webhook], code: &str) -> Option<usize> {
    let mut found = None;
    for (i, hook) in hooks.iter().enumerate() {
        if secret::verify(code, &hook.code_hash) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_order_and_stripping() {
        let mut p = Array::new();
        p.insert("auth", "tok".into());
        p.insert("aplogin", "1".into());
        p.insert("ap", "code".into());
        p.insert("start", "0".into());
        p.insert("USER_ID", "5".into());
        let mut h = HeaderMap::new();
        assert_eq!(extract(&h, &mut p.clone()), Credential::Token("tok".into()));
        h.insert(header::AUTHORIZATION, "bearer hdr".parse().unwrap());
        let mut q = p.clone();
        assert_eq!(extract(&h, &mut q), Credential::Token("hdr".into()));
        assert_eq!(q.len(), 1);
        assert!(q.contains_key("USER_ID"));

        let mut w = Array::new();
        w.insert("aplogin", "1".into());
        w.insert("ap", "code".into());
        assert_eq!(
            extract(&HeaderMap::new(), &mut w),
            Credential::Webhook {
                login: "1".into(),
                code: "code".into()
            }
        );
        let mut arr_auth = Array::new();
        arr_auth.insert("auth", Value::list([Value::from("x")]));
        assert_eq!(extract(&HeaderMap::new(), &mut arr_auth), Credential::None);
    }

    #[test]
    fn fingerprints_separate_credentials() {
        let w = |l: &str, c: &str| Credential::Webhook {
            login: l.into(),
            code: c.into(),
        };
        assert_eq!(w("1", "abc").fingerprint(), w("1", "abc").fingerprint());
        assert_ne!(w("1", "abc").fingerprint(), w("1", "abd").fingerprint());
        // The separator keeps ("1", "2abc") apart from ("12", "abc").
        assert_ne!(w("1", "2abc").fingerprint(), w("12", "abc").fingerprint());
        assert_ne!(
            Credential::Token("x".into()).fingerprint(),
            Credential::Session {
                csrf: "x".into(),
                cookie: None
            }
            .fingerprint()
        );
    }
}
