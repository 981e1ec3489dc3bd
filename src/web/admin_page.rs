//! `/admin/`: the test-server toolkit's page for a signed-in admin user (issue 16): the request
//! journal (filterable by method and status, each call's parameters and answer; refreshed every
//! two seconds by `/admin/admin.js` when scripts run), the faults (add, remove), captured mail,
//! and the users, webhooks and apps.
//!
//! Built like the other pages: rendered on the server with every value escaped (`web::esc`), a
//! strict Content-Security-Policy (scripts and styles only from this origin, no inline code, no
//! framing), and the session's CSRF token on every form, checked before any change. The script
//! writes values with `textContent` only.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{current_session, esc, redirect};
use crate::auth::secret;
use crate::domain::directory::{UserFilter, UserQuery, UserSort};
use crate::protocol::params::{parse_str, DecodeLimits};
use crate::state::AppState;
use crate::toolkit::faults::FaultSpec;
use crate::toolkit::journal::Filter;
use crate::value::{Array, Value};

/// The page's policy: nothing inline, nothing from elsewhere, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Entries the page shows.
const PAGE_ENTRIES: usize = 100;
/// Captured mails the page shows.
const PAGE_MAILS: usize = 50;
/// The most body bytes a form of the page may carry (a fault spec, a CSRF token): the center's
/// cap.
const FORM_MAX_BYTES: usize = super::center::FORM_MAX_BYTES;
/// Users, webhooks and apps the page lists.
const DIRECTORY_ROWS: usize = 200;

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1b1b1b}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%;font-size:.85rem}\
th,td{border-bottom:1px solid #ddd;padding:.3rem .4rem;text-align:left;vertical-align:top}\
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:40rem}\
form.inline{display:inline}input,select{padding:.2rem}button{padding:.2rem .6rem}\
.error{color:#b00020}.muted{color:#666}";

/// Refreshes the journal table from the admin API every two seconds, with the filters in the
/// form. Values go in through textContent, never as HTML.
const JS: &str = r#"(function () {
  var body = document.getElementById('journal-body');
  var form = document.getElementById('journal-filter');
  if (!body || !form || !window.fetch) return;
  function cell(tr, text, pre) {
    var td = document.createElement('td');
    if (pre) { var p = document.createElement('pre'); p.textContent = text; td.appendChild(p); }
    else { td.textContent = text; }
    tr.appendChild(td);
  }
  function refresh() {
    var q = new URLSearchParams();
    var m = form.elements['method'].value, s = form.elements['status'].value;
    if (m) q.set('method', m);
    if (s) q.set('status', s);
    q.set('limit', '100');
    fetch('/admin/api/requests?' + q.toString(), {credentials: 'same-origin'})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) {
        if (!j) return;
        var rows = document.createDocumentFragment();
        j.requests.forEach(function (e) {
          var tr = document.createElement('tr');
          cell(tr, String(e.id)); cell(tr, e.at); cell(tr, e.method + (e.batch_id ? ' (batch ' + e.batch_id + ')' : ''));
          cell(tr, String(e.status)); cell(tr, e.error || '');
          var c = e.credential;
          cell(tr, c.kind + (c.user_id ? ' user ' + c.user_id : '') + (c.webhook_id ? ' webhook ' + c.webhook_id : '') + (c.client_id ? ' ' + c.client_id : ''));
          cell(tr, JSON.stringify(e.params), true); cell(tr, e.result === null ? '' : JSON.stringify(e.result), true);
          cell(tr, e.fault_id ? String(e.fault_id) : '');
          rows.appendChild(tr);
        });
        body.replaceChildren(rows);
      })
      .catch(function () {});
  }
  setInterval(refresh, 2000);
})();
"#;

/// The page's own headers: its CSP (stricter than the center's), no framing, no caching.
fn page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// `/admin/admin.css`, through the one way static assets are served (`center::asset`).
pub async fn css() -> Response {
    super::center::asset(CSS, "text/css; charset=utf-8")
}

/// `/admin/admin.js`
pub async fn js() -> Response {
    super::center::asset(JS, "text/javascript; charset=utf-8")
}

fn html(status: StatusCode, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Admin · imnotify</title>\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/admin/admin.css\"></head><body><h1>imnotify admin</h1>{body}\
<script src=\"/admin/admin.js\"></script></body></html>"
    );
    page_headers((status, doc).into_response())
}

/// The signed-in admin's session cookie, or the answer for anyone else: to the login page
/// without a session, 403 for a user who is not an admin.
async fn admin_session(state: &AppState, headers: &HeaderMap) -> Result<String, Response> {
    let Ok(Some((cookie, session))) = current_session(state, headers).await else {
        return Err(redirect("/login?next=/admin/"));
    };
    match state.store.user(session.user_id).await {
        Ok(Some(u)) if u.active && u.is_admin => Ok(cookie),
        _ => Err(html(
            StatusCode::FORBIDDEN,
            "<p class=\"error\">This page is for admin users.</p>",
        )),
    }
}

fn text(p: &Array, key: &str) -> String {
    p.get_str(key)
        .filter(|v| v.is_scalar())
        .map(Value::to_php_string)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `/admin/` (GET: the page; POST: a fault form or the mail clear, then a 303 back to the
/// page, or the page with the form's error and 400).
pub async fn page(State(state): State<AppState>, req: Request) -> Response {
    // As the center's forms (issue 10 §1): the per-IP gate, then the session on the headers,
    // then at most FORM_MAX_BYTES of body within the body deadline.
    let Ok(_ticket) = super::admit(&state, super::client_ip(&state, &req)) else {
        return super::retry_in_a_second(html(
            StatusCode::TOO_MANY_REQUESTS,
            "<p class=\"error\">Too many requests from your address. Try again in a moment.</p>",
        ));
    };
    let (parts, body) = req.into_parts();
    let cookie = match admin_session(&state, &parts.headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let limits = DecodeLimits::default();
    let query = parse_str(parts.uri.query().unwrap_or_default(), &limits);
    let mut notice = String::new();
    if parts.method == Method::POST {
        let bytes = match super::read_body(body, &state.config.limits, FORM_MAX_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                return html(
                    status,
                    &format!("<p class=\"error\">{}</p>", esc(&e.description)),
                );
            }
        };
        let form = parse_str(&String::from_utf8_lossy(&bytes), &limits);
        let expected = secret::hash(&secret::session_csrf(&cookie));
        if !secret::verify(&text(&form, "csrf"), &expected) {
            return html(
                StatusCode::FORBIDDEN,
                "<p class=\"error\">The form's CSRF token is wrong; reload the page.</p>",
            );
        }
        notice = apply_form(&state, &form);
        // Post/Redirect/Get: a reload of the page never repeats the form.
        if notice.is_empty() {
            return redirect("/admin/");
        }
    } else if parts.method != Method::GET && parts.method != Method::HEAD {
        return html(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let csrf = secret::session_csrf(&cookie);
    let mut out = String::new();
    if !notice.is_empty() {
        out.push_str(&format!("<p class=\"error\">{}</p>", esc(&notice)));
    }
    journal_section(&state, &query, &mut out);
    faults_section(&state, &csrf, &mut out);
    mail_section(&state, &csrf, &mut out);
    directory_section(&state, &mut out).await;
    let status = if notice.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    html(status, &out)
}

/// A fault form: `action=add` with the spec's fields, or `action=remove` with `id`. Returns
/// a message for the page when the form was wrong.
fn apply_form(state: &AppState, form: &Array) -> String {
    let num = |k: &str| text(form, k).parse::<u64>().ok();
    match text(form, "action").as_str() {
        "add" => {
            let error = Some(text(form, "error")).filter(|e| !e.is_empty());
            let spec = FaultSpec {
                method: text(form, "method"),
                error,
                delay_ms: num("delay_ms"),
                times: num("times"),
                probability: text(form, "probability").parse().ok(),
                seed: None,
                user_id: text(form, "user_id").parse().ok(),
                client_id: Some(text(form, "client_id")).filter(|c| !c.is_empty()),
            };
            state.toolkit.faults.add(spec).err().unwrap_or_default()
        }
        "remove" => match num("id") {
            Some(id) if state.toolkit.faults.remove(id) => String::new(),
            _ => "No such fault.".into(),
        },
        "clear_mail" => {
            state.toolkit.mail.clear();
            String::new()
        }
        _ => "Unknown action.".into(),
    }
}

fn journal_section(state: &AppState, query: &Array, out: &mut String) {
    let method = text(query, "method");
    let status = text(query, "status");
    let filter = Filter {
        method: Some(method.to_lowercase()).filter(|m| !m.is_empty()),
        status: status.parse().ok(),
        since_id: None,
        limit: Some(PAGE_ENTRIES),
    };
    out.push_str(&format!(
        "<h2>Request journal</h2><form id=\"journal-filter\" method=\"get\" action=\"/admin/\">\
<label>Method <input name=\"method\" value=\"{}\"></label> \
<label>Status <input name=\"status\" value=\"{}\" size=\"4\"></label> <button>Filter</button></form>\
<table><thead><tr><th>id</th><th>at</th><th>method</th><th>status</th><th>error</th>\
<th>credential</th><th>params</th><th>result</th><th>fault</th></tr></thead><tbody id=\"journal-body\">",
        esc(&method),
        esc(&status)
    ));
    for e in state.toolkit.journal.list(&filter) {
        let v = super::admin::entry_json(&e);
        let c = &e.credential;
        let mut who = c.kind.to_owned();
        if let Some(u) = c.user_id {
            who.push_str(&format!(" user {u}"));
        }
        if let Some(w) = c.webhook_id {
            who.push_str(&format!(" webhook {w}"));
        }
        if let Some(id) = &c.client_id {
            who.push_str(&format!(" {id}"));
        }
        let method = match e.batch_id {
            Some(b) => format!("{} (batch {b})", e.method),
            None => e.method.clone(),
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td><pre>{}</pre></td><td><pre>{}</pre></td><td>{}</td></tr>",
            e.id,
            esc(v["at"].as_str().unwrap_or_default()),
            esc(&method),
            e.status,
            esc(e.error.unwrap_or_default()),
            esc(&who),
            esc(&e.params),
            esc(e.result.as_deref().unwrap_or_default()),
            e.fault_id.map(|f| f.to_string()).unwrap_or_default(),
        ));
    }
    out.push_str("</tbody></table>");
}

fn faults_section(state: &AppState, csrf: &str, out: &mut String) {
    let csrf = esc(csrf);
    out.push_str(
        "<h2>Faults</h2><table><thead><tr><th>id</th><th>method</th><th>error</th>\
<th>delay ms</th><th>times</th><th>probability</th><th>user</th><th>client</th><th>hits</th>\
<th>remaining</th><th></th></tr></thead><tbody>",
    );
    let opt = |v: Option<String>| esc(&v.unwrap_or_default());
    for f in state.toolkit.faults.list() {
        let s = &f.spec;
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" action=\"/admin/\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"remove\">\
<input type=\"hidden\" name=\"id\" value=\"{}\"><button>Remove</button></form></td></tr>",
            f.id,
            esc(&s.method),
            opt(s.error.clone()),
            opt(s.delay_ms.map(|d| d.to_string())),
            opt(s.times.map(|d| d.to_string())),
            opt(s.probability.map(|d| d.to_string())),
            opt(s.user_id.map(|d| d.to_string())),
            opt(s.client_id.clone()),
            f.hits,
            opt(f.remaining.map(|d| d.to_string())),
            f.id,
        ));
    }
    out.push_str(&format!(
        "</tbody></table><form method=\"post\" action=\"/admin/\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"action\" value=\"add\">\
<label>Method <input name=\"method\" placeholder=\"im.notify.system.add or *\" required></label> \
<label>Error <input name=\"error\" placeholder=\"QUERY_LIMIT_EXCEEDED\"></label> \
<label>Delay ms <input name=\"delay_ms\" size=\"6\"></label> \
<label>Times <input name=\"times\" size=\"4\"></label> \
<label>Probability <input name=\"probability\" size=\"4\"></label> \
<label>User <input name=\"user_id\" size=\"4\"></label> \
<label>Client id <input name=\"client_id\"></label> <button>Add fault</button></form>"
    ));
}

/// The captured mails (`email.capture`), newest first: headers, the text part, and the HTML
/// part as escaped source (never rendered here: it is the mail's, not the page's, markup).
fn mail_section(state: &AppState, csrf: &str, out: &mut String) {
    out.push_str("<h2>Captured mail</h2>");
    if !state.config.email.capture {
        out.push_str(
            "<p class=\"muted\">Mail capture is off: set <code>email.capture = true</code> \
(<code>IMNOTIFY_EMAIL__CAPTURE=true</code>) to keep mails here instead of sending them.</p>",
        );
        return;
    }
    let mails = state.toolkit.mail.list(PAGE_MAILS);
    out.push_str(&format!(
        "<form method=\"post\" action=\"/admin/\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<input type=\"hidden\" name=\"action\" value=\"clear_mail\"><button>Clear captured mail</button></form>\
<table id=\"mail\"><thead><tr><th>id</th><th>at</th><th>to</th><th>subject</th><th>notifications</th>\
<th>message</th></tr></thead><tbody>",
        esc(csrf)
    ));
    for m in &mails {
        let v = super::admin::mail_json(m);
        let header = |name: &str| {
            m.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        let all_headers: String = m
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        let ids: Vec<String> = m.notification_ids.iter().map(i64::to_string).collect();
        out.push_str(&format!(
            "<tr class=\"mail\"><td>{}</td><td>{}</td><td>{}</td><td class=\"subject\">{}</td><td>{}</td>\
<td><details><summary>headers</summary><pre>{}</pre></details><pre class=\"text\">{}</pre>\
<details><summary>HTML part</summary><pre class=\"html\">{}</pre></details></td></tr>",
            m.id,
            esc(v["at"].as_str().unwrap_or_default()),
            esc(header("To")),
            esc(header("Subject")),
            esc(&ids.join(", ")),
            esc(&all_headers),
            esc(&m.text),
            esc(&m.html),
        ));
    }
    if mails.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"muted\">No mail yet.</td></tr>");
    }
    out.push_str("</tbody></table>");
}

async fn directory_section(state: &AppState, out: &mut String) {
    let query = UserQuery {
        filter: UserFilter::default(),
        sort: UserSort::Id,
        descending: false,
        offset: 0,
        limit: DIRECTORY_ROWS,
    };
    out.push_str("<h2>Users</h2><table><thead><tr><th>id</th><th>name</th><th>e-mail</th><th>active</th><th>admin</th></tr></thead><tbody>");
    if let Ok((users, _)) = state.store.find_users(query).await {
        for r in users {
            let u = r.user;
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                u.id,
                esc(&format!("{} {}", u.name, u.last_name)),
                esc(&u.email),
                u.active,
                u.is_admin
            ));
        }
    }
    out.push_str("</tbody></table><h2>Webhooks</h2><table><thead><tr><th>id</th><th>user</th><th>scope</th><th>active</th></tr></thead><tbody>");
    if let Ok(hooks) = state.store.list_webhooks(None).await {
        for w in hooks.into_iter().take(DIRECTORY_ROWS) {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                w.id,
                w.user_id,
                esc(&w.scopes.join(",")),
                w.active
            ));
        }
    }
    out.push_str("</tbody></table><h2>Apps</h2><table><thead><tr><th>client id</th><th>name</th><th>scope</th><th>redirect URI</th><th>active</th></tr></thead><tbody>");
    if let Ok(apps) = state.store.list_apps().await {
        for a in apps.into_iter().take(DIRECTORY_ROWS) {
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.client_id),
                esc(&a.name),
                esc(&a.scopes.join(",")),
                esc(&a.redirect_uri),
                a.active
            ));
        }
    }
    out.push_str("</tbody></table>");
}
