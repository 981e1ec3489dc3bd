//! The admin API of the test-server toolkit (issue 16), under `/admin/api/`: the request
//! journal, faults, the test clock, reset and captured mail. JSON in and out.
//!
//! Every route needs the admin token (`Authorization: Bearer TOKEN`) or the session cookie of
//! a signed-in admin user (with the session's CSRF token in `X-CSRF-Token` for anything but
//! GET); otherwise 401. These routes are not REST methods: they never appear under `/rest/` or
//! in `/openapi.json`, and they are not rate-limited, journaled or faulted.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value as Json};

use super::current_session;
use crate::auth::secret;
use crate::state::AppState;
use crate::toolkit::faults::FaultSpec;
use crate::toolkit::journal::{Entry, Filter};
use crate::toolkit::mail::CapturedMail;

/// The largest admin request body: a fault spec or a clock move is a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;
/// The most entries one `GET /admin/api/requests` returns.
pub const MAX_LIMIT: usize = 1000;
/// The furthest one clock move may go: ten years.
const MAX_ADVANCE_SECONDS: f64 = 10.0 * 365.0 * 86400.0;

/// The settings key of the generated admin token's SHA-256 (hex).
pub const TOKEN_SETTING: &str = "admin_token_sha256";

fn answer(status: StatusCode, body: Json) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn fail(status: StatusCode, code: &str, description: impl Into<String>) -> Response {
    answer(
        status,
        json!({"error": code, "error_description": description.into()}),
    )
}

fn unauthorized() -> Response {
    let mut resp = fail(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "The admin API needs the admin token (Authorization: Bearer TOKEN) or an admin's session",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"imnotify admin\""),
    );
    resp
}

/// Whether the request may use the admin API: the admin token, or an active admin user's
/// session (plus its CSRF token unless the method is safe).
pub async fn authorized(state: &AppState, method: &Method, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if let Some(token) = bearer {
        return state
            .toolkit
            .admin_token_hash()
            .is_some_and(|hash| secret::verify(token, &hash));
    }
    let Ok(Some((cookie, session))) = current_session(state, headers).await else {
        return false;
    };
    if !(method == Method::GET || method == Method::HEAD) {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !secret::verify(sent, &secret::hash(&secret::session_csrf(&cookie))) {
            return false;
        }
    }
    matches!(state.store.user(session.user_id).await, Ok(Some(u)) if u.active && u.is_admin)
}

/// `/admin/api/...`, every method and path: authorisation first, so an unknown path without
/// the token is 401 too, then the route.
///
/// Like the page's forms, the request first takes a place in the per-IP gate (429
/// `too_many_requests` with `Retry-After: 1` when refused), held while its body (at most
/// 64 KiB, within `limits.body_read_timeout_secs`) arrives.
pub async fn api(State(state): State<AppState>, req: Request) -> Response {
    let Ok(_ticket) = super::admit(&state, super::client_ip(&state, &req)) else {
        return super::retry_in_a_second(fail(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many requests from this address are in flight",
        ));
    };
    let (parts, body) = req.into_parts();
    if !authorized(&state, &parts.method, &parts.headers).await {
        return unauthorized();
    }
    let path = parts
        .uri
        .path()
        .strip_prefix("/admin/api")
        .unwrap_or_default()
        .trim_end_matches('/');
    let deadline =
        std::time::Duration::from_secs(state.config.limits.body_read_timeout_secs.max(1));
    let body: Bytes =
        match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return fail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    "at most 64 KiB",
                )
            }
            Err(_) => {
                return fail(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the body was not received in time",
                )
            }
        };
    let query = parts.uri.query().unwrap_or_default();
    let m = &parts.method;
    match path {
        "/requests" if m == Method::GET => requests(&state, query),
        "/requests" if m == Method::DELETE => {
            state.toolkit.journal.clear();
            answer(StatusCode::OK, json!({"cleared": true}))
        }
        "/faults" if m == Method::GET => answer(
            StatusCode::OK,
            json!({"faults": state.toolkit.faults.list()}),
        ),
        "/faults" if m == Method::POST => add_fault(&state, &body),
        "/faults" if m == Method::DELETE => {
            state.toolkit.faults.clear();
            answer(StatusCode::OK, json!({"cleared": true}))
        }
        "/clock" if m == Method::GET => clock(&state),
        "/clock" if m == Method::POST => advance(&state, &body),
        "/clock" if m == Method::DELETE => {
            state.clock.reset();
            clock(&state)
        }
        "/reset" if m == Method::POST => reset(&state, &body).await,
        "/mail" if m == Method::GET => mail(&state, query),
        "/mail" if m == Method::DELETE => {
            state.toolkit.mail.clear();
            answer(StatusCode::OK, json!({"cleared": true}))
        }
        _ => match path.strip_prefix("/faults/").map(str::parse::<u64>) {
            Some(Ok(id)) if m == Method::DELETE => {
                if state.toolkit.faults.remove(id) {
                    answer(StatusCode::OK, json!({"removed": id}))
                } else {
                    fail(StatusCode::NOT_FOUND, "not_found", format!("no fault {id}"))
                }
            }
            _ => fail(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such admin route; see README, \"Testing your integration\"",
            ),
        },
    }
}

/// A JSON object body, or why not. An empty body is `{}`.
fn object(body: &Bytes) -> Result<Json, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Json>(body) {
        Ok(v @ Json::Object(_)) => Ok(v),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn bad_request(msg: impl Into<String>) -> Response {
    fail(StatusCode::BAD_REQUEST, "invalid_request", msg)
}

fn rfc3339(unix: f64) -> String {
    let secs = unix.floor();
    let nanos = ((unix - secs) * 1e9) as u32;
    DateTime::from_timestamp(secs as i64, nanos.min(999_999_999))
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An entry as `GET /admin/api/requests` shows it.
pub fn entry_json(e: &Entry) -> Json {
    let c = &e.credential;
    let mut credential = json!({"kind": c.kind, "user_id": c.user_id});
    if c.kind == "webhook" {
        credential["webhook_id"] = json!(c.webhook_id);
    }
    if c.kind == "oauth" {
        credential["client_id"] = json!(c.client_id);
    }
    let mut v = json!({
        "id": e.id,
        "at": rfc3339(e.at),
        "method": e.method,
        "transport": e.transport,
        "credential": credential,
        "params": parsed(&e.params),
        "status": e.status,
        "error": e.error,
        "result": e.result.as_deref().map(parsed),
        "duration_ms": (e.duration_ms * 1000.0).round() / 1000.0,
        "fault_id": e.fault_id,
        "truncated": e.truncated,
    });
    if let Some(b) = e.batch_id {
        v["batch_id"] = json!(b);
    }
    v
}

/// The journal keeps JSON text; it was made by `serde_json`, so it parses.
fn parsed(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or(Json::Null)
}

fn requests(state: &AppState, query: &str) -> Response {
    let mut filter = Filter {
        limit: Some(MAX_LIMIT),
        ..Filter::default()
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if v.is_empty() {
            continue;
        }
        let bad = |what: &str| {
            fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("{k} must be {what}"),
            )
        };
        match &*k {
            "method" => filter.method = Some(v.to_lowercase()),
            "status" => match v.parse() {
                Ok(s) => filter.status = Some(s),
                Err(_) => return bad("an HTTP status"),
            },
            "since_id" => match v.parse() {
                Ok(s) => filter.since_id = Some(s),
                Err(_) => return bad("an entry id"),
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) => filter.limit = Some(n.min(MAX_LIMIT)),
                Err(_) => return bad("a number"),
            },
            _ => {}
        }
    }
    let entries: Vec<Json> = state
        .toolkit
        .journal
        .list(&filter)
        .iter()
        .map(entry_json)
        .collect();
    answer(StatusCode::OK, json!({"requests": entries}))
}

/// A captured mail as `GET /admin/api/mail` shows it: `id`, `at` (RFC 3339), `user_id`,
/// `notification_ids` (newest first), `headers` (name to value, in message order), `text` and
/// `html` (the two parts).
pub fn mail_json(m: &CapturedMail) -> Json {
    let headers: serde_json::Map<String, Json> = m
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "id": m.id,
        "at": rfc3339(m.at),
        "user_id": m.user_id,
        "notification_ids": m.notification_ids,
        "headers": headers,
        "text": m.text,
        "html": m.html,
    })
}

/// `GET /admin/api/mail?limit=`: `{"capture": bool, "mail": [...]}`, newest first, at most
/// `limit` (default and most: [`MAX_LIMIT`]).
fn mail(state: &AppState, query: &str) -> Response {
    let mut limit = MAX_LIMIT;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "limit" && !v.is_empty() {
            match v.parse::<usize>() {
                Ok(n) => limit = n.min(MAX_LIMIT),
                Err(_) => return bad_request("limit must be a number"),
            }
        }
    }
    let mail: Vec<Json> = state
        .toolkit
        .mail
        .list(limit)
        .iter()
        .map(mail_json)
        .collect();
    answer(
        StatusCode::OK,
        json!({"capture": state.config.email.capture, "mail": mail}),
    )
}

fn add_fault(state: &AppState, body: &Bytes) -> Response {
    let v = match object(body) {
        Ok(v) => v,
        Err(msg) => return bad_request(msg),
    };
    let spec: FaultSpec = match serde_json::from_value(v) {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    match state.toolkit.faults.add(spec) {
        Ok(view) => answer(StatusCode::CREATED, json!(view)),
        Err(msg) => fail(StatusCode::BAD_REQUEST, "invalid_request", msg),
    }
}

fn clock(state: &AppState) -> Response {
    let now = state.clock.now();
    answer(
        StatusCode::OK,
        json!({
            "now": rfc3339(now),
            "unix": now,
            "offset_seconds": state.clock.offset().as_secs_f64(),
        }),
    )
}

fn advance(state: &AppState, body: &Bytes) -> Response {
    let v = match object(body) {
        Ok(v) => v,
        Err(msg) => return bad_request(msg),
    };
    let Some(seconds) = v.get("advance_seconds").and_then(Json::as_f64) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give {\"advance_seconds\": N}",
        );
    };
    if !(seconds.is_finite() && (0.0..=MAX_ADVANCE_SECONDS).contains(&seconds)) {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "advance_seconds is between 0 and ten years: the clock only moves forward",
        );
    }
    state
        .clock
        .advance(std::time::Duration::from_secs_f64(seconds));
    clock(state)
}

async fn reset(state: &AppState, body: &Bytes) -> Response {
    let v = match object(body) {
        Ok(v) => v,
        Err(msg) => return bad_request(msg),
    };
    let keep_directory = match v.get("keep_directory") {
        None => true,
        Some(Json::Bool(b)) => *b,
        Some(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "keep_directory is true or false",
            )
        }
    };
    if let Err(e) = state.store.reset(keep_directory).await {
        tracing::error!(error = %e, "reset failed");
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the reset failed; see the server log",
        );
    }
    state.toolkit.mail.clear();
    state.toolkit.journal.clear();
    state.toolkit.faults.clear();
    state.limits.clear_operating().await;
    answer(
        StatusCode::OK,
        json!({"reset": true, "keep_directory": keep_directory}),
    )
}
