//! The notification center: `GET /` for the signed-in user (issue 12 §3).
//!
//! Server-rendered HTML that works without script: every action is a form posting to
//! `/center/action` with the session's CSRF token, and "show older" is a link carrying the
//! `im.notify.get` cursor. `assets/center.js` adds the live parts on top: it follows
//! `GET /events` (server-sent events), fetches each new item as HTML from `/center/item/{id}`
//! (so there is one renderer, this one), and sends the same forms with `fetch`.
//!
//! Actions run through `protocol::dispatch::execute` with a session caller, so they are exactly
//! `im.notify.read`, `.read.all`, `.delete`, `.confirm` and `.answer`, with their rules.
//!
//! Safety: text goes through `domain::bbcode` (escaped, allow-listed), every ATTACH field is
//! escaped and its URLs checked; the page is served with a strict CSP (no inline script or
//! style), `X-Frame-Options: DENY` and `Referrer-Policy: same-origin`.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

use super::i18n::{Lang, Texts, LANG_COOKIE};
use super::{client_ip, current_session, esc, redirect};
use crate::auth::{internal, secret, Caller, CallerKind};
use crate::domain::bbcode::{self, safe_color, safe_href, safe_image, Node, Style};
use crate::domain::inbox::{Cursor, NOTIFY_TYPE_CONFIRM};
use crate::error::ApiError;
use crate::limits::rate::RateKey;
use crate::protocol::dispatch;
use crate::state::AppState;
use crate::store::{Notification, Session};
use crate::value::{Array, Value};

/// The page's script and style, embedded so the binary is the whole deployment.
pub const CENTER_JS: &str = include_str!("../../assets/center.js");
pub const CENTER_CSS: &str = include_str!("../../assets/center.css");

/// Items per page, as `im.notify.get`'s default.
const PAGE_SIZE: usize = 20;

/// The policy of every center response: nothing inline, nothing from elsewhere but images.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' http: https: data:; connect-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

fn secure_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure_headers(&mut resp);
    resp
}

/// A static asset embedded in the binary, with its type, a five-minute cache and the page's
/// security headers; every page's stylesheet and script is served through it.
pub(super) fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    secure_headers(&mut resp);
    resp
}

/// `GET /assets/center.js`.
pub async fn script() -> Response {
    asset(CENTER_JS, "text/javascript; charset=utf-8")
}

/// `GET /assets/center.css`.
pub async fn style() -> Response {
    asset(CENTER_CSS, "text/css; charset=utf-8")
}

fn lang_of(headers: &HeaderMap) -> Lang {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| *n == LANG_COOKIE)
        .map(|(_, v)| v.to_owned());
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Lang::negotiate(cookie.as_deref(), accept)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    html_response(status, format!("<p>{}</p>", esc(&e.description)))
}

/// Charges one page write to the request-rate limit (P8) of the session's user: the very
/// bucket, (client IP, `Caller::rate_identity`), that REST calls with this session fill, so the
/// page is no way around the limit. `false` when the bucket is full.
async fn within_rate(state: &AppState, ip: Option<std::net::IpAddr>, caller: &Caller) -> bool {
    // Through `Limiters::check_rate`, so on PostgreSQL the page shares the cluster's bucket too.
    match ip {
        Some(ip) => {
            let key = RateKey {
                ip,
                credential: caller.rate_identity(),
            };
            state.limits.check_rate(&key, caller.rate).await
        }
        None => true,
    }
}

/// The most bytes a notification center form may carry: an id, a CSRF token, a language or an
/// answer's text. Far below `limits.max_body_bytes`, which is sized for REST calls.
pub const FORM_MAX_BYTES: usize = 64 * 1024;

/// Why a page write was refused before its body was read.
enum Refused {
    /// No valid session cookie: the login redirect (or 401 for the script).
    NoSession,
    /// The answer to send as it is.
    Answer(Response),
}

impl Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NoSession => redirect("/login?next=/"),
            Refused::Answer(r) => r,
        }
    }
}

/// A page write's session, its CSRF token and its form fields. The cost is bounded before it
/// is paid (issue 10 §1): the per-IP gate of REST calls admits the request (and holds its place
/// while the body is read), the session cookie is checked on the headers alone, and only then is
/// a body of at most [`FORM_MAX_BYTES`] read and decoded. So a client without a session cannot
/// make the server buffer and parse 8 MB forms, and no address holds more bodies in flight than
/// `limits.max_in_flight_per_ip`.
async fn session_form(
    state: &AppState,
    req: Request,
    ip: Option<std::net::IpAddr>,
) -> Result<(Session, [u8; 32], String, Array), Refused> {
    let Ok(_ticket) = super::admit(state, ip) else {
        return Err(Refused::Answer(too_many(false)));
    };
    let (session, id_hash, session_csrf) = match current_session(state, req.headers()).await {
        Ok(Some((cookie, s))) => (s, secret::hash(&cookie), secret::session_csrf(&cookie)),
        Ok(None) => return Err(Refused::NoSession),
        Err(e) => return Err(Refused::Answer(error_response(&e))),
    };
    let (_, _, _, p) = super::oauth::form(req, &state.config.limits, FORM_MAX_BYTES)
        .await
        .map_err(|e| Refused::Answer(error_response(&e)))?;
    Ok((session, id_hash, session_csrf, p))
}

/// The answer to a page write over the rate limit: 429 with `Retry-After`, as JSON
/// (`{"ok": false, "error": "QUERY_LIMIT_EXCEEDED"}`) for the script, else a short page.
fn too_many(json: bool) -> Response {
    let resp = if json {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            serde_json::json!({"ok": false, "error": "QUERY_LIMIT_EXCEEDED"}).to_string(),
        )
            .into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    } else {
        html_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "<p>{}</p>",
                esc(&ApiError::query_limit_exceeded().description)
            ),
        )
    };
    super::retry_in_a_second(resp)
}

fn session_caller(session: &Session, id_hash: [u8; 32]) -> Caller {
    Caller {
        user_id: session.user_id,
        kind: CallerKind::Session { id_hash },
        scopes: crate::auth::known_scopes(),
        rate: Default::default(),
    }
}

/// The display names of users, for senders and `[user=N]`.
struct Names(HashMap<i64, String>);

impl Names {
    async fn load(state: &AppState, items: &[Notification]) -> Result<Names, ApiError> {
        let mut ids: Vec<i64> = Vec::new();
        for n in items {
            if n.author_id > 0 {
                ids.push(n.author_id);
            }
            mentions(&bbcode::parse(&n.text).0, &mut ids);
            if let Some(a) = n.attach.as_deref() {
                for s in attach_texts(a) {
                    mentions(&bbcode::parse(&s).0, &mut ids);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(500);
        let users = state.store.users_by_id(ids).await.map_err(internal)?;
        Ok(Names(
            users
                .into_iter()
                .map(|r| {
                    let u = r.user;
                    let name = format!("{} {}", u.name, u.last_name).trim().to_owned();
                    (u.id, name)
                })
                .collect(),
        ))
    }

    fn get(&self, id: i64) -> Option<String> {
        self.0.get(&id).cloned()
    }
}

fn mentions(nodes: &[Node], out: &mut Vec<i64>) {
    for n in nodes {
        match n {
            Node::Tag(bbcode::Tag::User(Some(id)), c) => {
                out.push(*id);
                mentions(c, out);
            }
            Node::Tag(_, c) | Node::Quote(c) => mentions(c, out),
            _ => {}
        }
    }
}

/// The BB-code texts inside an attachment: MESSAGE blocks and GRID values.
fn attach_texts(attach: &str) -> Vec<String> {
    let Ok(a) = serde_json::from_str::<Json>(attach) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for b in a["BLOCKS"].as_array().into_iter().flatten() {
        if let Some(m) = message_text(&b["MESSAGE"]) {
            out.push(m);
        }
        for g in b["GRID"].as_array().into_iter().flatten() {
            out.push(scalar(&g["VALUE"]));
        }
    }
    out
}

/// A JSON scalar as text ("" for anything else).
fn scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn message_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("TEXT").map(scalar),
        _ => None,
    }
}

/// The "show older" cursor of `GET /?last_id=N&last_type=T` (im.notify.get's LAST_ID/LAST_TYPE).
struct PageQuery {
    last_id: Option<i64>,
    last_type: Option<i64>,
}

impl PageQuery {
    fn parse(query: &str) -> PageQuery {
        let mut q = PageQuery {
            last_id: None,
            last_type: None,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "last_id" => q.last_id = v.parse().ok().filter(|n: &i64| *n >= 0),
                "last_type" => q.last_type = v.parse().ok(),
                _ => {}
            }
        }
        q
    }
}

/// `GET /`: the notification center, or a redirect to the login page.
pub async fn index(State(state): State<AppState>, req: Request) -> Response {
    let q = PageQuery::parse(req.uri().query().unwrap_or_default());
    let headers = req.headers();
    let (session, session_csrf) = match current_session(&state, headers).await {
        Ok(Some((cookie, s))) => (s, secret::session_csrf(&cookie)),
        Ok(None) => return redirect("/login?next=/"),
        Err(e) => return error_response(&e),
    };
    let lang = lang_of(headers);
    match render_index(&state, &session, &session_csrf, lang, &q).await {
        Ok(body) => html_response(StatusCode::OK, body),
        Err(e) => error_response(&e),
    }
}

async fn render_index(
    state: &AppState,
    session: &Session,
    session_csrf: &str,
    lang: Lang,
    q: &PageQuery,
) -> Result<String, ApiError> {
    let t = lang.texts();
    let user_id = session.user_id;
    let cursor = match (q.last_id, q.last_type) {
        (Some(id), Some(NOTIFY_TYPE_CONFIRM)) => Cursor::Confirm(id),
        (Some(id), Some(_)) => Cursor::Normal(id),
        _ => Cursor::Start,
    };
    let store = &state.store;
    let items = store
        .notification_page(user_id, cursor, PAGE_SIZE)
        .await
        .map_err(internal)?;
    let unread = store
        .notify_chat(user_id)
        .await
        .map_err(internal)?
        .map_or(0, |c| c.unread);
    let me = store.user(user_id).await.map_err(internal)?;
    let my_name = me
        .map(|u| format!("{} {}", u.name, u.last_name).trim().to_owned())
        .unwrap_or_default();
    let names = Names::load(state, &items).await?;
    let email_on = store
        .email_notifications(user_id)
        .await
        .map_err(internal)?
        .unwrap_or(false);
    let now = state.clock.unix();
    let csrf = esc(session_csrf);

    let mut list = String::new();
    for n in &items {
        list.push_str(&render_item(n, &names, t, session_csrf, now));
    }
    let more = match items.last() {
        Some(last) if items.len() == PAGE_SIZE => {
            let kind = if last.notify_type == NOTIFY_TYPE_CONFIRM {
                1
            } else {
                3
            };
            format!(
                "<a class=\"more\" id=\"more\" href=\"/?last_id={}&amp;last_type={kind}\">{}</a>",
                last.id,
                esc(t.more)
            )
        }
        _ => String::new(),
    };
    let empty_hidden = if items.is_empty() { "" } else { " hidden" };
    let mut langs = String::new();
    for l in Lang::ALL {
        let _ = write!(
            langs,
            "<option value=\"{}\"{}>{}</option>",
            l.code(),
            if l == lang { " selected" } else { "" },
            esc(l.texts().language_name)
        );
    }
    let title = if unread > 0 {
        format!("({unread}) {}", t.title)
    } else {
        t.title.to_owned()
    };
    Ok(format!(
        "<!doctype html><html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title}</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/assets/center.css\">\
<script src=\"/assets/center.js\" defer></script></head>\
<body data-csrf=\"{csrf}\" data-title=\"{base_title}\" data-t-new=\"{t_new}\" data-t-removed=\"{t_removed}\" \
data-t-done=\"{t_done}\" data-t-failed=\"{t_failed}\" data-t-live=\"{t_live}\" data-t-offline=\"{t_offline}\" \
data-t-desktop-on=\"{t_don}\" data-t-desktop-denied=\"{t_dden}\" data-t-desktop-unsupported=\"{t_dun}\" \
data-t-system=\"{t_system}\">\
<a class=\"skip\" href=\"#list\">{base_title}</a>\
<header class=\"top\"><div class=\"wrap\"><h1>{base_title} <span class=\"badge\" id=\"badge\" \
aria-label=\"{unread} {t_unread}\"{badge_hidden}>{unread}</span></h1>\
<span class=\"status\" id=\"status\" role=\"status\"></span>\
<span class=\"me\">{me}</span>\
<form method=\"post\" action=\"/logout\"><button class=\"link\" type=\"submit\">{sign_out}</button></form>\
</div></header>\
<main class=\"wrap\">\
<div class=\"toolbar\"><form class=\"act\" method=\"post\" action=\"/center/action\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"read_all\">\
<button type=\"submit\">{read_all}</button></form>\
<details class=\"settings\"><summary>{settings}</summary><div class=\"panel\">\
<form method=\"post\" action=\"/center/lang\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label>{language} <select name=\"lang\">{langs}</select></label> <button type=\"submit\">{apply}</button></form>\
<p><button type=\"button\" id=\"desktop\">{desktop_enable}</button> <span id=\"desktop-state\"></span></p>\
<form method=\"post\" action=\"/center/email\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"email\" value=\"{email_next}\">\
<p>{email_label}: <strong id=\"email-state\">{email_state}</strong> <button type=\"submit\" id=\"email-toggle\">{email_button}</button></p></form>\
</div></details></div>\
<div id=\"live\" class=\"sr-only\" aria-live=\"polite\"></div>\
<p id=\"empty\" class=\"empty\"{empty_hidden}>{empty}</p>\
<ol class=\"items\" id=\"list\" aria-label=\"{base_title}\">{list}</ol>{more}\
</main></body></html>",
        code = lang.code(),
        title = esc(&title),
        base_title = esc(t.title),
        t_new = esc(t.new_notification),
        t_removed = esc(t.removed),
        t_done = esc(t.done),
        t_failed = esc(t.failed),
        t_live = esc(t.live),
        t_offline = esc(t.offline),
        t_don = esc(t.desktop_on),
        t_dden = esc(t.desktop_denied),
        t_dun = esc(t.desktop_unsupported),
        t_system = esc(t.system_notification),
        t_unread = esc(t.unread),
        badge_hidden = if unread > 0 { "" } else { " hidden" },
        me = esc(&my_name),
        sign_out = esc(t.sign_out),
        read_all = esc(t.read_all),
        settings = esc(t.settings),
        language = esc(t.language),
        apply = esc(t.apply),
        desktop_enable = esc(t.desktop_enable),
        empty = esc(t.empty),
        email_label = esc(t.email_notifications),
        email_state = esc(if email_on { t.on } else { t.off }),
        email_next = if email_on { "off" } else { "on" },
        email_button = esc(if email_on { t.turn_off } else { t.turn_on }),
    ))
}

/// `GET /center/item/{id}`: one item as the list shows it, for the live script.
pub async fn item(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    let (session, session_csrf) = match current_session(&state, &headers).await {
        Ok(Some((cookie, s))) => (s, secret::session_csrf(&cookie)),
        Ok(None) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => return error_response(&e),
    };
    let n = match state.store.notification(session.user_id, id).await {
        Ok(Some(n)) => n,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return error_response(&internal(e)),
    };
    let names = match Names::load(&state, std::slice::from_ref(&n)).await {
        Ok(names) => names,
        Err(e) => return error_response(&e),
    };
    let t = lang_of(&headers).texts();
    html_response(
        StatusCode::OK,
        render_item(&n, &names, t, &session_csrf, state.clock.unix()),
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// One `<li>` of the list.
fn render_item(n: &Notification, names: &Names, t: &Texts, csrf: &str, now: i64) -> String {
    let lookup = |id: i64| names.get(id);
    let sender = if n.author_id > 0 {
        names
            .get(n.author_id)
            .unwrap_or_else(|| format!("#{}", n.author_id))
    } else {
        t.system.to_owned()
    };
    let when = chrono::DateTime::from_timestamp(n.created_at, 0).unwrap_or_default();
    let iso = when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let exact = when.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let text = bbcode::html(&n.text, &lookup, Style::Page);
    let plain = bbcode::plain(&n.text, &lookup);
    let attach = n
        .attach
        .as_deref()
        .map(|a| render_attach(a, &lookup, t))
        .unwrap_or_default();
    let confirm = n.notify_type == NOTIFY_TYPE_CONFIRM;
    let state_class = if confirm {
        "confirm"
    } else if n.read {
        "read"
    } else {
        "unread"
    };
    let id = n.id.to_string();
    let base = format!("{}{}", hidden("csrf", csrf), hidden("id", &id));
    let mut actions = String::new();
    if confirm {
        let buttons: Vec<Json> = n
            .buttons
            .as_deref()
            .and_then(|b| serde_json::from_str::<Json>(b).ok())
            .and_then(|b| match b {
                Json::Array(a) => Some(a),
                Json::Object(o) => Some(o.into_iter().map(|(_, v)| v).collect()),
                _ => None,
            })
            .unwrap_or_default();
        let _ = write!(
            actions,
            "<form class=\"act confirm-form\" method=\"post\" action=\"/center/action\">{base}{}",
            hidden("action", "confirm")
        );
        for b in buttons.iter().take(10) {
            let value = scalar(&b["VALUE"]);
            let title = scalar(&b["TITLE"]);
            let kind = match scalar(&b["TYPE"]).as_str() {
                "accept" => " primary",
                _ => "",
            };
            let _ = write!(
                actions,
                "<button type=\"submit\" class=\"btn{kind}\" name=\"value\" value=\"{}\">{}</button>",
                esc(&value),
                esc(if title.is_empty() { &value } else { &title })
            );
        }
        actions.push_str("</form>");
    } else {
        let (toggle, label) = if n.read {
            ("unread", t.mark_unread)
        } else {
            ("read", t.mark_read)
        };
        let _ = write!(
            actions,
            "<form class=\"act\" method=\"post\" action=\"/center/action\">{base}\
<button type=\"submit\" class=\"toggle\" name=\"action\" value=\"{toggle}\" data-read=\"{}\" data-unread=\"{}\">{}</button>\
<button type=\"submit\" name=\"action\" value=\"delete\">{}</button></form>\
<details class=\"reply\"><summary>{}</summary>\
<form class=\"act\" method=\"post\" action=\"/center/action\">{base}{}\
<label class=\"sr-only\" for=\"r-{id}\">{}</label><input id=\"r-{id}\" name=\"text\" required maxlength=\"2000\" autocomplete=\"off\">\
<button type=\"submit\">{}</button></form></details>",
            esc(t.mark_read),
            esc(t.mark_unread),
            esc(label),
            esc(t.delete),
            esc(t.reply),
            hidden("action", "answer"),
            esc(t.reply_label),
            esc(t.send),
        );
    }
    format!(
        "<li class=\"item {state_class}\" id=\"n-{id}\" data-id=\"{id}\" data-tag=\"{tag}\" data-plain=\"{plain}\" data-sender=\"{sender_attr}\">\
<article><header class=\"meta\"><span class=\"sender\">{sender}</span> \
<time datetime=\"{iso}\" title=\"{exact}\">{ago}</time></header>\
<div class=\"text\">{text}</div>{attach}<div class=\"actions\">{actions}</div></article></li>",
        tag = esc(n.tag.as_deref().unwrap_or("")),
        plain = esc(&plain),
        sender_attr = esc(&sender),
        sender = esc(&sender),
        exact = esc(&exact),
        ago = esc(&t.ago(now - n.created_at)),
    )
}

/// A link when the URL may be one, else the text alone.
fn link(url: &str, inner_html: &str) -> String {
    match safe_href(url) {
        Some(href) => format!(
            "<a href=\"{}\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">{inner_html}</a>",
            esc(href)
        ),
        None => inner_html.to_owned(),
    }
}

fn img(url: &str, class: &str, alt: &str, w: &Json, h: &Json) -> String {
    let Some(src) = safe_image(url) else {
        return String::new();
    };
    let dim = |v: &Json, name: &str| match v.as_i64().or_else(|| scalar(v).parse().ok()) {
        Some(n) if n > 0 => format!(" {name}=\"{}\"", n.min(4096)),
        _ => String::new(),
    };
    format!(
        "<img class=\"{class}\" src=\"{}\" alt=\"{}\"{}{} loading=\"lazy\" referrerpolicy=\"no-referrer\">",
        esc(src),
        esc(alt),
        dim(w, "width"),
        dim(h, "height")
    )
}

/// `data-color` for a validated colour, which the script turns into a stripe.
fn color_attr(v: &Json) -> String {
    match safe_color(&scalar(v)) {
        Some(c) => format!(" data-color=\"{}\"", esc(&c)),
        None => String::new(),
    }
}

/// One item or a list of items (the stored form wraps single items in a list).
fn items_of(v: &Json) -> Vec<&Json> {
    match v {
        Json::Array(a) => a.iter().collect(),
        Json::Object(_) => vec![v],
        _ => Vec::new(),
    }
}

fn human_size(bytes: i64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The ATTACH of §2.6 (its stored, normalised form), every block type, as HTML.
fn render_attach(json: &str, names: bbcode::Names<'_>, t: &Texts) -> String {
    let Ok(a) = serde_json::from_str::<Json>(json) else {
        return String::new();
    };
    let mut out = format!("<div class=\"attach\"{}>", color_attr(&a["COLOR"]));
    let desc = scalar(&a["DESCRIPTION"]);
    if !desc.is_empty() {
        let _ = write!(out, "<p class=\"at-desc\">{}</p>", esc(&desc));
    }
    for b in a["BLOCKS"].as_array().into_iter().flatten().take(200) {
        if let Some(m) = message_text(&b["MESSAGE"]) {
            let _ = write!(
                out,
                "<div class=\"at-message\">{}</div>",
                bbcode::html(&m, names, Style::Page)
            );
        }
        for u in items_of(&b["USER"]) {
            let name = esc(&scalar(&u["NAME"]));
            let avatar = img(
                &scalar(&u["AVATAR"]),
                "avatar",
                "",
                &Json::Null,
                &Json::Null,
            );
            let _ = write!(
                out,
                "<div class=\"at-user\">{avatar}{}</div>",
                link(&scalar(&u["LINK"]), &format!("<span>{name}</span>"))
            );
        }
        for (key, class) in [("LINK", "at-link"), ("RICH_LINK", "at-link rich")] {
            for l in items_of(&b[key]) {
                let name = scalar(&l["NAME"]);
                let url = scalar(&l["LINK"]);
                let shown = if name.is_empty() { url.clone() } else { name };
                let _ = write!(
                    out,
                    "<div class=\"{class}\"><p class=\"at-title\">{}</p>",
                    link(&url, &esc(&shown))
                );
                let desc = scalar(&l["DESC"]);
                if !desc.is_empty() {
                    let _ = write!(out, "<p class=\"at-text\">{}</p>", esc(&desc));
                }
                // HTML is shown as text, never as markup (issue 12 §3).
                let html = scalar(&l["HTML"]);
                if !html.is_empty() {
                    let _ = write!(out, "<pre class=\"at-html\">{}</pre>", esc(&html));
                }
                let size = &l["PREVIEW_SIZE"];
                let (w, h) = if size.is_object() {
                    (&size["WIDTH"], &size["HEIGHT"])
                } else {
                    (&l["WIDTH"], &l["HEIGHT"])
                };
                let preview = scalar(&l["PREVIEW"]);
                let preview = if preview.is_empty() {
                    scalar(&l["EXTRA_IMAGE"])
                } else {
                    preview
                };
                out.push_str(&img(&preview, "preview", "", w, h));
                out.push_str("</div>");
            }
        }
        for i in items_of(&b["IMAGE"]) {
            let name = scalar(&i["NAME"]);
            let url = scalar(&i["LINK"]);
            let preview = scalar(&i["PREVIEW"]);
            let shown = img(
                if preview.is_empty() { &url } else { &preview },
                "image",
                &name,
                &i["WIDTH"],
                &i["HEIGHT"],
            );
            let caption = if name.is_empty() {
                String::new()
            } else {
                format!("<figcaption>{}</figcaption>", esc(&name))
            };
            let _ = write!(
                out,
                "<figure class=\"at-image\">{}{caption}</figure>",
                link(&url, &shown)
            );
        }
        for f in items_of(&b["FILE"]) {
            let url = scalar(&f["LINK"]);
            let name = scalar(&f["NAME"]);
            let shown = if name.is_empty() {
                t.file.to_owned()
            } else {
                name
            };
            let size = f["SIZE"]
                .as_i64()
                .or_else(|| scalar(&f["SIZE"]).parse().ok())
                .filter(|s| *s > 0)
                .map(|s| format!(" <span class=\"at-size\">{}</span>", human_size(s)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<div class=\"at-file\">{}{size}</div>",
                link(&url, &esc(&shown))
            );
        }
        if let Some(grid) = b["GRID"].as_array() {
            out.push_str("<div class=\"at-grid\">");
            for g in grid.iter().take(200) {
                let display = scalar(&g["DISPLAY"]).to_ascii_lowercase();
                let display = match display.as_str() {
                    "line" | "row" | "table" => display,
                    _ => "block".to_owned(),
                };
                let name = esc(&scalar(&g["NAME"]));
                let value = bbcode::html(&scalar(&g["VALUE"]), names, Style::Page);
                let value = match scalar(&g["LINK"]) {
                    l if !l.is_empty() => link(&l, &value),
                    _ => value,
                };
                let _ = write!(
                    out,
                    "<div class=\"g g-{display}\"{}><span class=\"g-name\">{name}</span><span class=\"g-value\">{value}</span></div>",
                    color_attr(&g["COLOR"])
                );
            }
            out.push_str("</div>");
        }
        if b["DELIMITER"].is_object() {
            let d = &b["DELIMITER"];
            let size = d["SIZE"]
                .as_i64()
                .or_else(|| scalar(&d["SIZE"]).parse().ok())
                .filter(|s| *s > 0)
                .unwrap_or(200)
                .min(2000);
            let _ = write!(
                out,
                "<hr class=\"at-delim\" data-size=\"{size}\"{}>",
                color_attr(&d["COLOR"])
            );
        }
    }
    out.push_str("</div>");
    out
}

/// `POST /center/action`: one action of the page, as a form (answers with a redirect back) or
/// from the script (`Accept: application/json`, answers `{"ok", "result", "counter"}`).
pub async fn action(State(state): State<AppState>, req: Request) -> Response {
    let wants_json = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let ip = client_ip(&state, &req);
    let (session, id_hash, session_csrf, p) = match session_form(&state, req, ip).await {
        Ok(f) => f,
        Err(Refused::NoSession) if wants_json => return StatusCode::UNAUTHORIZED.into_response(),
        Err(refused) => return refused.into_response(),
    };
    let field = |k: &str| {
        p.get_str(k)
            .filter(|v| v.is_scalar())
            .map(Value::to_php_string)
            .unwrap_or_default()
    };
    if !secret::verify(&field("csrf"), &secret::hash(&session_csrf)) {
        return error_response(&ApiError::session_failed());
    }
    let id = field("id");
    let mut params = Array::new();
    let method = match field("action").as_str() {
        "read" | "unread" => {
            params.insert("ID", Value::Str(id.clone()));
            params.insert("ONLY_CURRENT", Value::from("Y"));
            let read = if field("action") == "read" { "Y" } else { "N" };
            params.insert("ACTION", Value::from(read));
            "im.notify.read"
        }
        "read_all" => "im.notify.read.all",
        "delete" => {
            params.insert("ID", Value::Str(id.clone()));
            "im.notify.delete"
        }
        "confirm" => {
            params.insert("NOTIFY_ID", Value::Str(id.clone()));
            params.insert("NOTIFY_VALUE", Value::Str(field("value")));
            "im.notify.confirm"
        }
        "answer" => {
            params.insert("NOTIFY_ID", Value::Str(id.clone()));
            params.insert("ANSWER_TEXT", Value::Str(field("text")));
            "im.notify.answer"
        }
        _ => return error_response(&ApiError::params_error()),
    };
    let Some(spec) = state.methods.lookup(method) else {
        return error_response(&ApiError::internal());
    };
    let caller = session_caller(&session, id_hash);
    if !within_rate(&state, ip, &caller).await {
        return too_many(wants_json);
    }
    let outcome = dispatch::execute(&state, spec, &caller, params).await;
    if !wants_json {
        return match outcome {
            Ok(_) => redirect(&format!("/#n-{}", id.parse::<i64>().unwrap_or(0))),
            Err(e) => error_response(&e),
        };
    }
    let counter = state
        .store
        .notify_chat(session.user_id)
        .await
        .ok()
        .flatten()
        .map_or(0, |c| c.unread);
    let body = match outcome {
        Ok(done) => serde_json::json!({
            "ok": true,
            "result": serde_json::from_str::<Json>(&done.out.result.to_php_json()).unwrap_or(Json::Null),
            "counter": counter,
        }),
        Err(e) => serde_json::json!({"ok": false, "error": e.code, "counter": counter}),
    };
    let mut resp = body.to_string().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A settings form of the signed-in user: the session, and a field reader (scalars only, as
/// strings). Without a session the answer is the login redirect; a missing or wrong CSRF token
/// is `session_failed`; past the session user's rate limit, 429 (as [`action`]).
async fn settings_form(
    state: &AppState,
    req: Request,
) -> Result<(Session, impl Fn(&str) -> String), Response> {
    let ip = client_ip(state, &req);
    let (session, id_hash, session_csrf, p) = session_form(state, req, ip)
        .await
        .map_err(Refused::into_response)?;
    let field = move |k: &str| {
        p.get_str(k)
            .filter(|v| v.is_scalar())
            .map(Value::to_php_string)
            .unwrap_or_default()
    };
    if !secret::verify(&field("csrf"), &secret::hash(&session_csrf)) {
        return Err(error_response(&ApiError::session_failed()));
    }
    if !within_rate(state, ip, &session_caller(&session, id_hash)).await {
        return Err(too_many(false));
    }
    Ok((session, field))
}

/// `POST /center/lang`: the language switch; keeps the choice in a cookie for a year.
pub async fn set_lang(State(state): State<AppState>, req: Request) -> Response {
    let (_, field) = match settings_form(&state, req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let lang = Lang::from_code(&field("lang")).unwrap_or(Lang::En);
    let mut resp = redirect("/");
    let cookie = format!(
        "{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000",
        lang.code()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /center/email`: the settings panel's e-mail switch (D13), `email=on|off`.
pub async fn set_email(State(state): State<AppState>, req: Request) -> Response {
    let (session, field) = match settings_form(&state, req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let on = match field("email").as_str() {
        "on" => true,
        "off" => false,
        _ => return error_response(&ApiError::params_error()),
    };
    match state
        .store
        .set_email_notifications(session.user_id, on)
        .await
    {
        Ok(_) => redirect("/"),
        Err(e) => error_response(&internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_fields_are_inert() {
        let x = "\"><script>alert(1)</script><img src=x onerror=alert(1)>";
        let attach = serde_json::json!({
            "ID": 1, "COLOR": "red;background:url(javascript:x)", "DESCRIPTION": x,
            "BLOCKS": [
                {"MESSAGE": x},
                {"USER": [{"NAME": x, "AVATAR": "javascript:alert(1)", "LINK": "javascript:alert(1)"}]},
                {"LINK": [{"NAME": x, "LINK": "javascript:alert(1)", "DESC": x, "HTML": "<b onclick=x>hi</b>", "PREVIEW": "data:text/html,x"}]},
                {"RICH_LINK": [{"NAME": x, "LINK": "vbscript:x", "DESC": x, "EXTRA_IMAGE": x}]},
                {"IMAGE": [{"NAME": x, "LINK": "javascript:x", "PREVIEW": x}]},
                {"FILE": [{"NAME": x, "LINK": "javascript:x", "SIZE": x}]},
                {"GRID": [{"DISPLAY": x, "NAME": x, "VALUE": x, "COLOR": x, "LINK": "javascript:x"}]},
                {"DELIMITER": {"SIZE": x, "COLOR": x}},
            ]
        });
        let out = render_attach(&attach.to_string(), &|_| None, &super::super::i18n::EN);
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.contains("<img src=x"), "{out}");
        assert!(!out.contains("javascript:"), "{out}");
        assert!(!out.contains("<b onclick"), "{out}");
        assert!(out.contains("&lt;b onclick=x&gt;hi&lt;/b&gt;"), "{out}");
        assert!(!out.contains("data-color=\"red"), "{out}");
    }
}
