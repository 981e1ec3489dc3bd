//! Browser-facing endpoints: the notification center (`center`, with its texts in `i18n`), the
//! login page, the OAuth consent page and the token endpoint; and the test-server toolkit's
//! admin API (`admin`) and page (`admin_page`).

pub mod admin;
pub mod admin_page;
pub mod center;
pub mod i18n;
pub mod oauth;
pub mod signin;

use std::net::IpAddr;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::oauth::Portal;
use crate::auth::{internal, session_cookie};
use crate::auth::{oauth as rules, secret};
use crate::config::Limits;
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::limits::abuse::{Refusal, Ticket};
use crate::state::AppState;
use crate::store::Session;

/// How long a browser stays signed in.
pub const SESSION_TTL: i64 = 7 * 24 * 3600;

/// The most body bytes `/login`, `/oauth/authorize/` and `/oauth/token/` read (16 KiB). A
/// sign-in form (login, password, CSRF token, `next`) or a token request (client id and secret,
/// a code or refresh token) is a few hundred bytes; the rest is room for a long `next` or
/// `state`. These endpoints take unauthenticated bodies, so they must not be worth flooding:
/// past this a request is refused (413) after reading at most this much, far below
/// `limits.max_body_bytes`, which is sized for REST calls.
pub const AUTH_FORM_MAX_BYTES: usize = 16 * 1024;

/// The client address of a request: the peer, or `X-Forwarded-For` from a trusted proxy
/// (`conn::ConnInfo::client_ip`). `None` without connection facts (never in `serve`).
pub fn client_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnInfo>()
        .map(|c| c.client_ip(req.headers(), &state.config.trusted_proxies))
}

/// Takes a place among `ip`'s requests in flight in the per-IP gate of REST calls (issue 10
/// §1: `limits.max_in_flight_per_ip`, and the address's failed-authentication bucket), on the
/// headers alone, before any body is read. Keep the ticket until the request is answered: it
/// holds the place while a slow body arrives. `Ok(None)` when the gate is off (`--no-limits`)
/// or the address unknown.
pub fn admit(state: &AppState, ip: Option<IpAddr>) -> Result<Option<Ticket>, Refusal> {
    match (&state.limits.ip_gate, ip) {
        (Some(gate), Some(ip)) => gate.admit(ip, state.clock.monotonic()).map(Some),
        _ => Ok(None),
    }
}

/// The page for an address the per-IP gate refused: 429 with `Retry-After: 1`.
pub fn gate_refused_page() -> Response {
    retry_in_a_second(page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "<p class=\"error\">Too many requests from your address. Try again in a moment.</p>",
    ))
}

/// `resp` with `Retry-After: 1`: a refusal by the per-IP gate, which frees a place as soon as
/// one of the address's requests ends.
pub fn retry_in_a_second(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    // A limit's refusal, logged at WARN rather than as a failure.
    resp.extensions_mut()
        .insert(crate::protocol::envelope::Refusal);
    resp
}

/// Reads a request body of at most `cap` bytes (and never more than `limits.max_body_bytes`)
/// within `limits.body_read_timeout_secs` (hyper's header timeout does not cover a body sent a
/// byte at a time). Errors: `request_too_large` (413) past the cap, with at most `cap` bytes
/// read; `request_timeout` (408) past the deadline.
pub async fn read_body(body: Body, limits: &Limits, cap: usize) -> Result<Bytes, ApiError> {
    let deadline = std::time::Duration::from_secs(limits.body_read_timeout_secs.max(1));
    let cap = cap.min(limits.max_body_bytes);
    tokio::time::timeout(deadline, axum::body::to_bytes(body, cap))
        .await
        .map_err(|_| ApiError::request_timeout())?
        .map_err(|_| ApiError::request_too_large())
}

/// The portal as this request sees it: `public_url` when configured; otherwise the `Host` the
/// client used if it passes [`allowed_host`], else the listen address. The Host header is the
/// client's text: unchecked, it would put any URL into `domain` and `client_endpoint`.
pub async fn portal(
    state: &AppState,
    headers: &HeaderMap,
    conn: Option<ConnInfo>,
) -> Result<Portal, ApiError> {
    let base = match &state.config.public_url {
        Some(u) => u.clone(),
        None => {
            let secure = conn.is_some_and(|c| c.is_secure(headers, &state.config.trusted_proxies));
            let scheme = if secure { "https" } else { "http" };
            let host = allowed_host(state, headers, secure).unwrap_or_else(|| {
                let listen = state.config.listen;
                if listen.ip().is_unspecified() {
                    format!("127.0.0.1:{}", listen.port())
                } else {
                    listen.to_string()
                }
            });
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

/// The request's `Host`, when it is `host[:port]` by the strict grammar of
/// [`crate::config::parse_host`] and names this server ([`crate::config::Config::host_allowed`]).
pub fn allowed_host(state: &AppState, headers: &HeaderMap, secure: bool) -> Option<String> {
    let value = headers.get(header::HOST)?.to_str().ok()?;
    let (host, port) = crate::config::parse_host(value)?;
    let default_port = if secure { 443 } else { 80 };
    state
        .config
        .host_allowed(host, port, default_port)
        .then(|| value.to_owned())
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

/// The stylesheet of the sign-in and consent pages, served at `/assets/page.css` so that
/// their CSP needs no inline style.
pub const PAGE_CSS: &str = include_str!("../../assets/page.css");

/// The policy of the sign-in and consent pages: the center's, less `form-action`, because the
/// consent form's answer redirects to the application's own `redirect_uri`, which browsers
/// check against `form-action` too.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
object-src 'none'";

/// `GET /assets/page.css`.
pub async fn page_style() -> Response {
    center::asset(PAGE_CSS, "text/css; charset=utf-8")
}

/// A small HTML page (sign-in, consent, errors) with `body` as its content (already escaped),
/// sent with a CSP, `Referrer-Policy: same-origin`, `X-Frame-Options: DENY` and `no-store`.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · imnotify</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/page.css\">\
</head><body><h1>{t}</h1>{body}</body></html>",
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
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Only same-origin paths may follow a login, so the login page cannot be used as an open
/// redirect (issue 10 §4). `next` must be visible ASCII, start with exactly one `/` (not `//` or
/// `/\`, which browsers read as another host), and contain no `\`; and the same must hold once
/// it is percent-decoded, since a browser may decode `%09` or `%5C` before resolving. Anything
/// else gives `/`.
pub fn safe_next(next: &str) -> &str {
    fn path_ok(b: &[u8]) -> bool {
        b.first() == Some(&b'/')
            && !matches!(b.get(1), Some(b'/' | b'\\'))
            && !b.iter().any(|&c| c <= b' ' || c == 0x7f || c == b'\\')
    }
    // The query may carry encoded anything (an OAuth `state`); the path is what a browser
    // resolves against the origin.
    let path = next.split(['?', '#']).next().unwrap_or_default();
    if next.bytes().all(|c| c.is_ascii_graphic())
        && path_ok(next.as_bytes())
        && path_ok(&percent_encoding::percent_decode_str(path).collect::<Vec<u8>>())
    {
        next
    } else {
        "/"
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_must_be_a_same_origin_path() {
        for ok in [
            "/",
            "/oauth/authorize/?client_id=a&state=b%20c%2F%2Fd",
            "/a/b",
        ] {
            assert_eq!(safe_next(ok), ok);
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "\\evil.example",
            "https://evil.example",
            "/\t/evil.example",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/%5cevil.example",
            "/a%20b",
            " /x",
            "/x y",
            "/\u{7f}x",
            "/é",
            "javascript:alert(1)",
            "evil.example",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
