//! `/login`, `/logout`, `/oauth/authorize/` and `/oauth/token/` (§7.1, P11).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{
    current_session, esc, page, portal, redirect, safe_next, AUTH_FORM_MAX_BYTES, SESSION_TTL,
};
use crate::auth::oauth::{self as rules, Portal};
use crate::auth::{internal, secret, SESSION_COOKIE};
use crate::config::Limits;
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::protocol::params::{parse_str, DecodeLimits};
use crate::state::AppState;
use crate::store::{App, Session};
use crate::value::{Array, Value};

pub(crate) type Form = (Method, HeaderMap, Option<ConnInfo>, Array);

/// Query and urlencoded body, body winning, with PHP's rules. The body is read by
/// [`super::read_body`]: at most `cap` bytes, within `limits.body_read_timeout_secs`; one that
/// is too large or too slow is refused with the REST layer's errors (413, 408) rather than read
/// as empty. Callers pass the per-IP gate ([`super::admit`]) first.
pub(crate) async fn form(req: Request, limits: &Limits, cap: usize) -> Result<Form, ApiError> {
    let (parts, body) = req.into_parts();
    let decode = DecodeLimits::default();
    let mut params = parse_str(parts.uri.query().unwrap_or_default(), &decode);
    if parts.method == Method::POST {
        let body = super::read_body(body, limits, cap).await?;
        params.overlay(parse_str(&String::from_utf8_lossy(&body), &decode));
    }
    let conn = parts.extensions.get::<ConnInfo>().copied();
    Ok((parts.method, parts.headers, conn, params))
}

fn text(p: &Array, key: &str) -> String {
    p.get_str(key)
        .filter(|v| v.is_scalar())
        .map(Value::to_php_string)
        .unwrap_or_default()
}

fn error_page(e: &ApiError) -> Response {
    tracing::warn!(code = e.code, "oauth page error");
    page(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        "Something went wrong",
        &format!("<p class=\"error\">{}</p>", esc(&e.description)),
    )
}

/// The login form's CSRF cookie (issue 10 §4): a random token, also a hidden field of the form.
/// `POST /login` needs both, equal (double submit), so another site cannot sign a browser into
/// the attacker's account: it can neither read the cookie nor, with `SameSite=Strict`, make the
/// browser send it on a cross-site post. The Origin check below is the second lock.
pub const LOGIN_CSRF_COOKIE: &str = "imnotify_login_csrf";

fn login_form(next: &str, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{error}<form method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"next\" value=\"{next}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>User id or e-mail <input name=\"login\" autocomplete=\"username\" required></label>\
<label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\">Sign in</button></form>",
        next = esc(next),
        csrf = esc(csrf)
    )
}

/// The login page with a fresh CSRF token, in the form and in its cookie.
fn login_page(status: StatusCode, next: &str, error: Option<&str>, secure: bool) -> Response {
    let csrf = secret::generate(32);
    let mut resp = page(status, "Sign in", &login_form(next, &csrf, error));
    let attrs = if secure { "; Secure" } else { "" };
    let set = format!(
        "{LOGIN_CSRF_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{attrs}"
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// A cookie's value by name.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A browser's `Origin` (or, without one, `Referer`) names this server, or is absent (a
/// non-browser client; the CSRF token still applies). `null` and foreign origins are refused.
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER));
    let Some(source) = source else {
        return true;
    };
    let Ok(source) = source.to_str() else {
        return false;
    };
    let Some((scheme, rest)) = source.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    crate::config::parse_host(authority)
        .is_some_and(|(host, port)| state.config.host_allowed(host, port, default_port))
}

/// Whether a credential may travel on this request: always over HTTPS, and over plain HTTP only
/// while `require_https` is off (P7, for every credential: issue 10 §4).
fn transport_ok(state: &AppState, headers: &HeaderMap, conn: Option<ConnInfo>) -> bool {
    !state.config.require_https()
        || conn.is_some_and(|c| c.is_secure(headers, &state.config.trusted_proxies))
}

fn https_required_page() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "HTTPS required",
        "<p class=\"error\">This server accepts passwords and sessions only over HTTPS. \
Open this page with an <code>https://</code> address.</p>",
    )
}

/// `GET /login` shows the form; `POST /login` signs in and sets the session cookie. The per-IP
/// gate comes first (429 page), then a body of at most [`AUTH_FORM_MAX_BYTES`].
pub async fn login(State(state): State<AppState>, req: Request) -> Response {
    let Ok(_ticket) = super::admit(&state, super::client_ip(&state, &req)) else {
        return super::gate_refused_page();
    };
    let (method, headers, conn, p) =
        match form(req, &state.config.limits, AUTH_FORM_MAX_BYTES).await {
            Ok(f) => f,
            Err(e) => return error_page(&e),
        };
    if !transport_ok(&state, &headers, conn) {
        return https_required_page();
    }
    let secure = conn.is_some_and(|c| c.is_secure(&headers, &state.config.trusted_proxies));
    let next = safe_next(&text(&p, "next")).to_owned();
    if method != Method::POST {
        return login_page(StatusCode::OK, &next, None, secure);
    }
    let form_csrf = text(&p, "csrf");
    let csrf_ok = cookie(&headers, LOGIN_CSRF_COOKIE)
        .is_some_and(|c| !form_csrf.is_empty() && secret::verify(&form_csrf, &secret::hash(&c)));
    if !csrf_ok || !same_origin(&state, &headers) {
        tracing::info!(
            csrf_ok,
            "login refused: cross-site or without the form's token"
        );
        return login_page(
            StatusCode::FORBIDDEN,
            &next,
            Some("The sign-in form expired or came from another site. Please try again."),
            secure,
        );
    }
    let login = text(&p, "login");
    let pw = text(&p, "password");
    let ip = conn.map(|c| c.client_ip(&headers, &state.config.trusted_proxies));
    let user = match super::signin::check(&state, ip, &login, pw).await {
        Ok(super::signin::Check::Accepted(user)) => user,
        Ok(super::signin::Check::Wrong) => {
            return login_page(
                StatusCode::UNAUTHORIZED,
                &next,
                Some("Wrong user or password."),
                secure,
            )
        }
        Ok(super::signin::Check::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            let msg = format!("Too many failed sign-in attempts. Try again in {secs} seconds.");
            return too_many(
                login_page(StatusCode::TOO_MANY_REQUESTS, &next, Some(&msg), secure),
                secs,
            );
        }
        Ok(super::signin::Check::Busy) => {
            let msg = "The server is busy checking other sign-ins. Try again in a moment.";
            return too_many(
                login_page(StatusCode::TOO_MANY_REQUESTS, &next, Some(msg), secure),
                1,
            );
        }
        Err(e) => return error_page(&e),
    };
    let cookie = secret::generate(43);
    let session = Session {
        user_id: user.id,
        expires_at: state.clock.unix() + SESSION_TTL,
    };
    if let Err(e) = state
        .store
        .add_session(secret::hash(&cookie), session)
        .await
    {
        return error_page(&internal(e));
    }
    let mut resp = redirect(&next);
    let attrs = if secure { "; Secure" } else { "" };
    let set = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_TTL}{attrs}"
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    // The login token has done its work.
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("imnotify_login_csrf=; Path=/login; Max-Age=0"),
    );
    resp
}

/// 429 with the sign-in form and `Retry-After` (issue 10 §2).
fn too_many(mut resp: Response, retry_after_secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// `POST /logout`: ends the session.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(cookie) = crate::auth::session_cookie(&headers) {
        if let Err(e) = state.store.delete_session(secret::hash(&cookie)).await {
            return error_page(&internal(e));
        }
    }
    let mut resp = redirect("/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("imnotify_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    resp
}

/// Finds the app a page or token request names.
async fn app(state: &AppState, client_id: &str) -> Result<Option<App>, ApiError> {
    if client_id.is_empty() {
        return Ok(None);
    }
    Ok(state
        .store
        .app_by_client_id(client_id)
        .await
        .map_err(internal)?
        .filter(|a| a.active))
}

/// `/oauth/authorize/`: GET shows the consent page to a signed-in user, POST records the
/// approval and redirects to the app with a 30-second code. The per-IP gate comes first (429
/// page), then a body of at most [`AUTH_FORM_MAX_BYTES`].
pub async fn authorize(State(state): State<AppState>, req: Request) -> Response {
    let Ok(_ticket) = super::admit(&state, super::client_ip(&state, &req)) else {
        return super::gate_refused_page();
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let (method, headers, conn, p) =
        match form(req, &state.config.limits, AUTH_FORM_MAX_BYTES).await {
            Ok(f) => f,
            Err(e) => return error_page(&e),
        };
    if !transport_ok(&state, &headers, conn) {
        return https_required_page();
    }
    let result = async {
        let Some((cookie, session)) = current_session(&state, &headers).await? else {
            let next: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
            return Ok(redirect(&format!("/login?next={next}")));
        };
        let client_id = text(&p, "client_id");
        let Some(app) = app(&state, &client_id).await? else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "<p class=\"error\">No active application has this client_id.</p>",
            ));
        };
        if !app.allows(session.user_id) {
            return Err(ApiError::user_access_error());
        }
        let state_param = text(&p, "state");
        if method != Method::POST {
            return Ok(consent_page(&app, &state_param, &session, &cookie));
        }
        // The form carries the session's CSRF token: another site cannot approve for the user.
        let csrf = secret::session_csrf(&cookie);
        if !secret::verify(&text(&p, "csrf"), &secret::hash(&csrf)) {
            return Err(ApiError::session_failed());
        }
        if text(&p, "approve").is_empty() {
            return Ok(page(
                StatusCode::OK,
                "Access denied",
                "<p>You did not allow the application.</p>",
            ));
        }
        state
            .store
            .install_app(app.id, session.user_id)
            .await
            .map_err(internal)?;
        let code = secret::generate_hex(32);
        state
            .store
            .add_code(
                secret::hash(&code),
                app.id,
                session.user_id,
                state.clock.unix() + rules::CODE_TTL,
            )
            .await
            .map_err(internal)?;
        let portal = portal(&state, &headers, conn).await?;
        Ok(approval_redirect(&app, &portal, &code, &state_param))
    }
    .await;
    result.unwrap_or_else(|e| error_page(&e))
}

fn consent_page(app: &App, state_param: &str, session: &Session, cookie: &str) -> Response {
    let scopes = app.scopes.join(", ");
    page(
        StatusCode::OK,
        "Allow access?",
        &format!(
            "<p><b>{name}</b> asks to act for you (user {user}) with the scopes: {scopes}.</p>\
<form method=\"post\" action=\"/oauth/authorize/\">\
<input type=\"hidden\" name=\"client_id\" value=\"{client}\">\
<input type=\"hidden\" name=\"state\" value=\"{st}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<button type=\"submit\" name=\"approve\" value=\"Y\">Allow</button>\
<button type=\"submit\" name=\"deny\" value=\"Y\">Deny</button></form>",
            name = esc(&app.name),
            user = session.user_id,
            scopes = esc(&scopes),
            client = esc(&app.client_id),
            st = esc(state_param),
            csrf = esc(&secret::session_csrf(cookie)),
        ),
    )
}

/// Sends the browser back to the app with what Bitrix24 sends: code, state, domain, member_id,
/// scope and server_domain. Without a registered redirect URI the code is shown instead.
fn approval_redirect(app: &App, portal: &Portal, code: &str, state_param: &str) -> Response {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("code", code)
        .append_pair("state", state_param)
        .append_pair("domain", &portal.domain)
        .append_pair("member_id", &portal.member_id)
        .append_pair("scope", &app.scopes.join(","))
        .append_pair("server_domain", &portal.domain)
        .finish();
    if rules::check_redirect_uri(&app.redirect_uri).is_err() {
        // Registered by a version that did not check: never send a browser there.
        return error_page(&ApiError::invalid_request());
    }
    if app.redirect_uri.is_empty() {
        return page(
            StatusCode::OK,
            "Application approved",
            &format!(
                "<p>Authorization code (valid 30 s): <code id=\"code\">{}</code></p>",
                esc(code)
            ),
        );
    }
    let sep = if app.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}{sep}{query}", app.redirect_uri)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn json_response(status: u16, body: serde_json::Value) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn oauth_error(e: &ApiError) -> Response {
    json_response(
        e.status,
        serde_json::json!({"error": e.code, "error_description": e.description}),
    )
}

/// `/oauth/token/`: the `authorization_code` and `refresh_token` grants, by GET or POST.
///
/// Before any body is read, the per-IP gate: a refused address gets 503
/// `temporarily_unavailable` with `Retry-After: 1` (RFC 6749 §5.2 has no code for this; §4.1.2.1's
/// is the one OAuth clients know). Then a body of at most [`AUTH_FORM_MAX_BYTES`]: a larger one
/// is 413, a slow one 408, both as RFC 6749 §5.2's `invalid_request`.
pub async fn token(State(state): State<AppState>, req: Request) -> Response {
    let Ok(_ticket) = super::admit(&state, super::client_ip(&state, &req)) else {
        return super::retry_in_a_second(json_response(
            503,
            serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": ApiError::query_limit_exceeded().description,
            }),
        ));
    };
    let (_, headers, conn, p) = match form(req, &state.config.limits, AUTH_FORM_MAX_BYTES).await {
        Ok(f) => f,
        // The REST layer's 413/408 with their descriptions, in the token endpoint's vocabulary.
        Err(e) => {
            return oauth_error(&ApiError {
                code: ApiError::invalid_request().code,
                ..e
            })
        }
    };
    if !transport_ok(&state, &headers, conn) {
        return oauth_error(&ApiError::oauth_https_required());
    }
    let result = async {
        let grant_type = text(&p, "grant_type");
        if grant_type.is_empty() {
            return Err(ApiError::invalid_request());
        }
        if grant_type != "authorization_code" && grant_type != "refresh_token" {
            return Err(ApiError::unsupported_grant_type());
        }
        let app = app(&state, &text(&p, "client_id"))
            .await?
            .ok_or_else(ApiError::invalid_client)?;
        if !secret::verify(&text(&p, "client_secret"), &app.secret_hash) {
            return Err(ApiError::invalid_client());
        }
        let now = state.clock.unix();
        let minted = rules::mint(now);
        let user_id = if grant_type == "authorization_code" {
            let code = text(&p, "code");
            if code.is_empty() {
                return Err(ApiError::invalid_request());
            }
            state
                .store
                .exchange_code(secret::hash(&code), app.id, now, minted.stored.clone())
                .await
                .map_err(internal)?
                .ok_or_else(ApiError::invalid_grant)?
        } else {
            let refresh = text(&p, "refresh_token");
            if refresh.is_empty() {
                return Err(ApiError::invalid_request());
            }
            state
                .store
                .rotate_refresh(app.id, secret::hash(&refresh), now, minted.stored.clone())
                .await
                .map_err(internal)?
                .ok_or_else(ApiError::invalid_grant)?
        };
        let portal = portal(&state, &headers, conn).await?;
        Ok(rules::token_answer(&minted, &portal, user_id, &app.scopes))
    }
    .await;
    match result {
        Ok(answer) => json_response(200, answer),
        Err(e) => oauth_error(&e),
    }
}

/// Mints a token pair for `user_id` without the browser flow, as an installation hands them over
/// (`imnotify app token`). The tokens' lifetimes start at `clock`'s now.
pub async fn install_and_mint(
    state_store: &dyn crate::store::Store,
    app: &App,
    user_id: i64,
    portal: &Portal,
    clock: &crate::clock::Clock,
) -> anyhow::Result<serde_json::Value> {
    state_store.install_app(app.id, user_id).await?;
    let minted = rules::mint(clock.unix());
    state_store
        .issue_tokens(app.id, user_id, minted.stored.clone())
        .await?;
    Ok(rules::token_answer(&minted, portal, user_id, &app.scopes))
}
