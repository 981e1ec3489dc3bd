//! Browser-facing endpoints: the login page, the OAuth consent page and the token endpoint;
//! and the admin API of the test-server toolkit (`admin`).

pub mod admin;
pub mod oauth;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::oauth::Portal;
use crate::auth::{internal, session_cookie};
use crate::auth::{oauth as rules, secret};
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Session;

/// How long a browser stays signed in.
pub const SESSION_TTL: i64 = 7 * 24 * 3600;

/// The portal as this request sees it: `public_url` when configured, else the Host the client
/// used, so that redirects and endpoints point back where the client came from.
pub async fn portal(
    state: &AppState,
    headers: &HeaderMap,
    conn: Option<ConnInfo>,
) -> Result<Portal, ApiError> {
    let base = match &state.config.public_url {
        Some(u) => u.clone(),
        None => {
            let scheme =
                if conn.is_some_and(|c| c.is_secure(headers, &state.config.trusted_proxies)) {
                    "https"
                } else {
                    "http"
                };
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
                .map(str::to_owned)
                .unwrap_or_else(|| state.config.listen.to_string());
            format!("{scheme}://{host}")
        }
    };
    let member_id = state
        .store
        .setting("member_id", rules::new_member_id())
        .await
        .map_err(internal)?;
    Ok(Portal::new(&base, member_id))
}

/// The signed-in session of this browser, if any.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(String, Session)>, ApiError> {
    let Some(cookie) = session_cookie(headers) else {
        return Ok(None);
    };
    let session = state
        .store
        .session(secret::hash(&cookie), state.clock.unix())
        .await
        .map_err(internal)?;
    Ok(session.map(|s| (cookie, s)))
}

/// Minimal HTML escaping for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · imnotify</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}\
label{{display:block;margin:.6rem 0}}input{{width:100%;padding:.4rem}}button{{padding:.5rem 1rem;margin-right:.5rem}}\
.error{{color:#b00020}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The consent page must not be framed by another site (clickjacking).
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Only same-site paths may follow a login, so the login page cannot be used as an open redirect.
pub fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}
