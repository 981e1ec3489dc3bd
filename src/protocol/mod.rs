//! The REST protocol layer: URL grammar, parameter decoding, the dispatcher and the envelope.

pub mod batch;
pub mod dispatch;
pub mod envelope;
pub mod hook;
pub mod openapi;
pub mod params;
pub mod route;

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use self::dispatch::Channel;
use self::envelope::Timing;
use self::route::Transport;
use crate::auth;
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::limits::rate::RateKey;
use crate::metrics::{self, UNKNOWN_METHOD};
use crate::state::AppState;
use crate::value::Value;

/// `/rest/...`: every REST call, webhook or not, in either transport.
pub async fn rest_handler(State(state): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let start = state.clock.now();
    let (parts, body) = req.into_parts();
    let rest_path = parts.uri.path().strip_prefix("/rest").unwrap_or_default();

    let Some(route) = route::parse(rest_path) else {
        return finish(
            UNKNOWN_METHOD,
            UNKNOWN_METHOD,
            started,
            envelope::error_response(Transport::Json, &ApiError::method_not_found()),
        );
    };
    if parts.method == Method::OPTIONS {
        // A browser's CORS preflight: answer it instead of running the method without parameters.
        let mut resp = StatusCode::OK.into_response();
        envelope::add_rest_headers(resp.headers_mut());
        return resp;
    }
    // The method is looked up before any credential is checked (§1.2, P1).
    let Some(spec) = state.methods.lookup(&route.method) else {
        return finish(
            &route.method,
            UNKNOWN_METHOD,
            started,
            envelope::error_response(route.transport, &ApiError::method_not_found()),
        );
    };

    let limits = &state.config.limits;
    let conn = parts.extensions.get::<ConnInfo>().copied();
    let trusted = &state.config.trusted_proxies;
    let client_ip = conn.map(|c| c.client_ip(&parts.headers, trusted));
    // Before the body is paid for (issue 10): an address with too many requests in flight, or
    // whose failed authentications filled its bucket, is refused on its headers alone.
    let _ticket = match (&state.limits.ip_gate, client_ip) {
        (Some(gate), Some(ip)) => match gate.admit(ip, state.clock.monotonic()) {
            Ok(t) => Some(t),
            Err(_) => {
                return finish(
                    spec.name,
                    spec.name,
                    started,
                    envelope::error_response(route.transport, &ApiError::query_limit_exceeded()),
                )
            }
        },
        _ => None,
    };
    // A total deadline for the body: hyper's header timeout does not cover a client that
    // trickles the body a byte at a time.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(limits.body_read_timeout_secs.max(1)),
        axum::body::to_bytes(body, limits.max_body_bytes),
    );
    let body = match read.await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return finish(
                spec.name,
                spec.name,
                started,
                envelope::error_response(route.transport, &ApiError::request_too_large()),
            )
        }
        Err(_) => {
            return finish(
                spec.name,
                spec.name,
                started,
                envelope::error_response(route.transport, &ApiError::request_timeout()),
            )
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let decode_limits = params::DecodeLimits::from_config(limits);
    let mut params = params::decode_request(
        parts.method == Method::POST,
        parts.uri.query(),
        content_type,
        body,
        &decode_limits,
    )
    .await;
    // Path credentials win over same-named parameters (§1.1).
    if let Some((login, code)) = route.webhook {
        params.insert("aplogin", Value::Str(login));
        params.insert("ap", Value::Str(code));
    }
    dispatch::carry_start(&mut params);
    let cred = auth::extract(&parts.headers, &mut params);
    let journal_credential = hook::presented(&cred);
    let channel = Channel {
        secure: conn.is_some_and(|c| c.is_secure(&parts.headers, trusted)),
    };

    let presented = cred.fingerprint();
    let authenticated = dispatch::authenticate(&state, cred, channel).await;
    // The bucket is (client IP, who): for an authenticated caller its canonical identity (the
    // webhook, the app and user), however the credential was spelled; for a failure the
    // credential as presented, and the address's failure bucket is charged too.
    let rate_key = client_ip.map(|ip| RateKey {
        ip,
        credential: match &authenticated {
            Ok(caller) => caller.rate_identity(),
            Err(_) => presented,
        },
    });
    if let (Err(_), Some(gate), Some(ip)) = (&authenticated, &state.limits.ip_gate, client_ip) {
        gate.failed(ip, state.clock.monotonic());
    }
    // The bucket is charged whether or not the credential is good, with the credential's own
    // limit once it is known; a batch is one request here, however many commands it carries.
    if let Some(key) = &rate_key {
        let over = authenticated.as_ref().map(|c| c.rate).unwrap_or_default();
        if !state.limits.check_rate(key, over).await {
            return finish(
                spec.name,
                spec.name,
                started,
                envelope::error_response(route.transport, &ApiError::query_limit_exceeded()),
            );
        }
    }
    let (outcome, faulted) = hook::direct(
        &state,
        spec,
        route.transport,
        journal_credential,
        authenticated,
        params,
        started,
    )
    .await;
    let resp = match outcome {
        Ok(done) => {
            let timing = Timing::of(start, state.clock.now(), &done);
            envelope::respond(
                route.transport,
                200,
                &envelope::success_value(done.out, &timing),
            )
        }
        Err(e) => {
            let mut resp = envelope::error_response(route.transport, &e);
            if faulted {
                resp.extensions_mut().insert(envelope::Refusal);
            }
            resp
        }
    };
    finish(spec.name, spec.name, started, resp)
}

/// Logs the outcome by method name only: paths carry webhook codes and queries carry tokens.
/// `metric_method` is a registered name or `unknown`, never the caller's text.
/// The method name is the caller's text until it is found in the registry, so it is cut to
/// [`LOGGED_NAME_CHARS`]: a log line costs the same whatever the URL (issue 10).
fn finish(method: &str, metric_method: &'static str, started: Instant, resp: Response) -> Response {
    let status = resp.status().as_u16();
    metrics::record_call(metric_method, status, started.elapsed());
    let method = loggable(method);
    let method: &str = &method;
    tracing::info!(method, status, "rest call");
    resp
}

/// Longest caller-supplied name written to a log, in characters.
pub const LOGGED_NAME_CHARS: usize = 64;

/// `name` cut to [`LOGGED_NAME_CHARS`] characters, with `…` when it was longer. Every log of a
/// caller-supplied name goes through here.
pub fn loggable(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(LOGGED_NAME_CHARS) {
        None => std::borrow::Cow::Borrowed(name),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &name[..end])),
    }
}

/// Anything outside `/rest`, `/healthz` and the pages.
pub async fn not_found() -> Response {
    envelope::error_response(Transport::Json, &ApiError::method_not_found())
}
