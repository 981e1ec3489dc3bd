//! The e-mail of a notification (DECISIONS D11-D14), and the one-click unsubscribe link
//! (RFC 8058) with its endpoint.
//!
//! Composition is pure apart from lettre's builder: [`mail_text`] picks and cleans the text
//! (D11), [`subject`] makes the subject (D14), [`compose`] builds the `multipart/alternative`
//! message with a stable `Message-ID` and the `List-Unsubscribe` headers. The BB codes are
//! rendered by the one parser of the domain (`domain::bbcode`): plain text for the text part,
//! safe HTML (with inline styles, as mail clients need) for the HTML part.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::{Html, IntoResponse, Response};
use hmac::{Hmac, Mac};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use sha2::Sha256;

use crate::conn::ConnInfo;
use crate::domain::bbcode;
use crate::limits::abuse::Ticket;
use crate::state::AppState;
use crate::store::{DueMail, MailText, Recipient};
use crate::web::esc;

/// The subject's first part for a webhook's notification (D14).
pub const SYSTEM_SENDER: &str = "System notification";
/// Characters of the text in the subject (D14).
const SUBJECT_CHARS: usize = 50;
/// The `settings` key of the server secret that signs unsubscribe links and names mails.
pub const KEY_SETTING: &str = "mail_key";

/// What every mail of this server shares.
#[derive(Clone)]
pub struct MailSettings {
    pub from: Mailbox,
    /// `http(s)://host[:port]`, for the unsubscribe link.
    pub base_url: String,
    /// The server secret (hex) from the `settings` table.
    pub key: String,
}

/// The text of a notification's mail (D11): MESSAGE_OUT when set, else the stored MESSAGE (both
/// with the D6 prefix), with `#BR#` as a newline and HTML tags removed. BB codes are still in.
pub fn mail_text(n: &MailText) -> String {
    let raw = if n.text_out.is_empty() {
        &n.text
    } else {
        &n.text_out
    };
    strip_html(&raw.replace("#BR#", "\n"))
}

/// Removes HTML tags (`<` followed by a letter, `/` or `!`, up to the next `>`); a `<` that
/// starts no tag stays, so `a < b` survives.
pub fn strip_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let starts_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '/' || c == '!');
        match after.find('>') {
            Some(end) if starts_tag => rest = &after[end + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// D14: the app name or "System notification", ": ", and the first 50 characters of the plain
/// text on one line. The text's first line repeats an app's name (D6); the subject has it
/// already, so it is left out there.
pub fn subject(sender_name: Option<&str>, plain: &str) -> String {
    let body = sender_name
        .and_then(|n| plain.strip_prefix(n))
        .and_then(|r| r.strip_prefix('\n'))
        .unwrap_or(plain);
    let one_line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(SUBJECT_CHARS).collect();
    format!("{}: {cut}", sender_name.unwrap_or(SYSTEM_SENDER))
}

/// The plain and the HTML rendering of a mail's text.
pub fn render(text: &str) -> (String, String) {
    let doc = bbcode::parse(text);
    let names: bbcode::Names<'_> = &|_| None;
    (
        bbcode::to_text(&doc, names),
        bbcode::to_html(&doc, names, bbcode::Style::Email),
    )
}

fn hmac(key: &str, message: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(message.as_bytes());
    mac
}

/// The signature of `user_id`'s unsubscribe link: 128 bits of HMAC-SHA256, hex.
pub fn unsubscribe_signature(key: &str, user_id: i64) -> String {
    let tag = hmac(key, &format!("unsubscribe:{user_id}"))
        .finalize()
        .into_bytes();
    hex::encode(&tag[..16])
}

/// Checks a link's signature in constant time.
pub fn unsubscribe_valid(key: &str, user_id: i64, signature: &str) -> bool {
    let Ok(bytes) = hex::decode(signature) else {
        return false;
    };
    bytes.len() == 16
        && hmac(key, &format!("unsubscribe:{user_id}"))
            .verify_truncated_left(&bytes)
            .is_ok()
}

pub fn unsubscribe_url(settings: &MailSettings, user_id: i64) -> String {
    format!(
        "{}/unsubscribe?u={user_id}&s={}",
        settings.base_url,
        unsubscribe_signature(&settings.key, user_id)
    )
}

/// The `Message-ID` of the mail about `notification_id`: the same for every attempt, so a mail
/// sent twice (a crash between sending and marking it sent) is recognisably one (D14). The
/// server part keeps two servers mailing from one domain apart.
pub fn message_id(settings: &MailSettings, notification_id: i64) -> String {
    let server = hmac(&settings.key, "message-id").finalize().into_bytes();
    let domain = settings
        .from
        .email
        .domain()
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    format!(
        "<imnotify.{notification_id}.{}@{domain}>",
        hex::encode(&server[..4])
    )
}

/// A composed mail, with its two parts as text (for mail capture, which shows them).
pub struct Composed {
    pub message: Message,
    pub text: String,
    pub html: String,
}

/// The headers a captured mail shows, in this order (`toolkit::mail`).
pub const CAPTURED_HEADERS: &[&str] = &[
    "Date",
    "From",
    "To",
    "Subject",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
];

/// The mail for a group of due rows of one recipient (one row, or several that share a tag,
/// D12), listed newest first. `rows` must all carry a notification and the same recipient.
/// `now` (unix seconds, from the server's clock) is its `Date`, so a test clock moves it too.
pub fn compose(
    settings: &MailSettings,
    recipient: &Recipient,
    user_id: i64,
    rows: &[&DueMail],
    now: f64,
) -> Result<Composed, String> {
    let mut items: Vec<(&DueMail, &MailText)> = rows
        .iter()
        .filter_map(|r| r.notification.as_ref().map(|n| (*r, n)))
        .collect();
    items.sort_by_key(|(r, _)| std::cmp::Reverse(r.notification_id));
    let (newest, _) = *items.first().ok_or("nothing to mail")?;
    let sender = newest.sender_name.as_deref();
    let rendered: Vec<(String, String)> =
        items.iter().map(|(_, n)| render(&mail_text(n))).collect();
    let subject = subject(sender, &rendered[0].0);
    let url = unsubscribe_url(settings, user_id);

    let plain_items: Vec<&str> = rendered.iter().map(|(t, _)| t.as_str()).collect();
    let text = format!(
        "{}\n\n-- \nYou receive this because e-mail notifications are on for your account.\n\
         Turn them off: {url}\n",
        plain_items.join("\n\n---\n\n")
    );
    let html_items: String = rendered
        .iter()
        .map(|(_, h)| format!("<div style=\"margin:0 0 16px 0;white-space:pre-wrap\">{h}</div>"))
        .collect();
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;font-size:15px;line-height:1.4\">{html_items}\
         <hr><p style=\"font-size:12px;color:#666\">You receive this because e-mail \
         notifications are on for your account. <a href=\"{}\">Turn them off</a>.</p>\
         </body></html>",
        esc(&subject),
        esc(&url)
    );

    let to: Mailbox = format!("{} <{}>", quote_name(&recipient.name), recipient.email)
        .parse()
        .or_else(|_| recipient.email.parse())
        .map_err(|e| format!("recipient address: {e}"))?;
    Message::builder()
        .from(settings.from.clone())
        .to(to)
        .subject(subject)
        .date(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(now.max(0.0)))
        .message_id(Some(message_id(settings, newest.notification_id)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            format!("<{url}>"),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_owned(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        ))
        .map_err(|e| format!("building the message: {e}"))
        .map(|message| Composed {
            message,
            text,
            html,
        })
}

/// A display name as an RFC 5322 quoted string.
fn quote_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { ' ' } else { c })
        .collect();
    format!("\"{}\"", clean.trim())
}

/// The `u` (user id) and `s` (signature) of an unsubscribe link.
#[derive(Default)]
pub struct UnsubscribeQuery {
    u: Option<String>,
    s: Option<String>,
}

impl UnsubscribeQuery {
    fn of(uri: &Uri) -> UnsubscribeQuery {
        let mut q = UnsubscribeQuery::default();
        for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "u" => q.u = Some(v.into_owned()),
                "s" => q.s = Some(v.into_owned()),
                _ => {}
            }
        }
        q
    }
}

/// `GET /unsubscribe?u=&s=`: a page with a button, so that link scanners that follow every URL
/// in a mail do not unsubscribe anyone.
pub async fn unsubscribe_page(state: State<AppState>, req: Request) -> Response {
    let q = UnsubscribeQuery::of(req.uri());
    match gated(&state, &req, &q) {
        Ok((user_id, _ticket)) => Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
             <body><h1>E-mail notifications</h1><form method=\"post\" action=\"/unsubscribe?u={user_id}&amp;s={}\">\
             <button type=\"submit\">Stop e-mail notifications</button></form></body></html>",
            esc(q.s.as_deref().unwrap_or_default())
        ))
        .into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// `POST /unsubscribe?u=&s=`: RFC 8058's one-click unsubscribe. Turns the user's e-mail off.
/// The signed link is the credential; no cookie or CSRF token is involved (RFC 8058 §3).
pub async fn unsubscribe(state: State<AppState>, req: Request) -> Response {
    let q = UnsubscribeQuery::of(req.uri());
    // The ticket is held over the write: it counts toward the address's requests in flight.
    let (user_id, _ticket) = match gated(&state, &req, &q) {
        Ok(ok) => ok,
        Err(refused) => return refused.into_response(),
    };
    match state.store.set_email_notifications(user_id, false).await {
        Ok(_) => {
            tracing::info!(
                user_id,
                "e-mail notifications turned off by unsubscribe link"
            );
            Html(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribed</title>\
                 </head><body><h1>E-mail notifications are off</h1></body></html>",
            )
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "unsubscribe failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The link's check behind the per-IP gate of REST calls (issue 10 §2): a gated address gets
/// 503 before any check, and a bad link counts as a failed authentication of the address, so
/// guessing signatures is as slow as guessing webhook codes.
fn gated(
    state: &AppState,
    req: &Request,
    q: &UnsubscribeQuery,
) -> Result<(i64, Option<Ticket>), (StatusCode, &'static str)> {
    let ip = req
        .extensions()
        .get::<ConnInfo>()
        .map(|c| c.client_ip(req.headers(), &state.config.trusted_proxies));
    let gate = state.limits.ip_gate.as_ref().zip(ip);
    let ticket = match gate {
        Some((gate, ip)) => match gate.admit(ip, state.clock.monotonic()) {
            Ok(t) => Some(t),
            Err(_) => return Err((StatusCode::SERVICE_UNAVAILABLE, "try again later")),
        },
        None => None,
    };
    match checked(state, q) {
        Ok(user_id) => Ok((user_id, ticket)),
        Err(resp) => {
            if let Some((gate, ip)) = gate {
                gate.failed(ip, state.clock.monotonic());
            }
            Err(resp)
        }
    }
}

/// The link's user id, if its signature is right. The key is in memory (`AppState::keys`), so
/// a check reads and writes no storage.
fn checked(state: &AppState, q: &UnsubscribeQuery) -> Result<i64, (StatusCode, &'static str)> {
    let bad = || (StatusCode::FORBIDDEN, "invalid unsubscribe link");
    let user_id: i64 =
        q.u.as_deref()
            .and_then(|u| u.parse().ok())
            .filter(|u| *u > 0)
            .ok_or_else(bad)?;
    let signature = q.s.as_deref().unwrap_or_default();
    // Shape first: a malformed link costs no HMAC.
    if signature.len() != 32 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    if !unsubscribe_valid(&state.keys.mail, user_id, signature) {
        return Err(bad());
    }
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MailSettings {
        MailSettings {
            from: "imnotify <noreply@example.org>".parse().unwrap(),
            base_url: "https://n.example.org".into(),
            key: "k".repeat(64),
        }
    }

    #[test]
    fn text_prefers_message_out_and_strips_html() {
        let n = MailText {
            text: "App\n[b]Hi[/b]".into(),
            text_out: String::new(),
            created_at: 0,
        };
        assert_eq!(mail_text(&n), "App\n[b]Hi[/b]");
        let n = MailText {
            text_out: "App\nOut <b>bold</b>#BR#a < b".into(),
            ..n
        };
        assert_eq!(mail_text(&n), "App\nOut bold\na < b");
    }

    #[test]
    fn subject_is_sender_and_fifty_characters() {
        assert_eq!(
            subject(None, "Hello\nworld"),
            "System notification: Hello world"
        );
        let long = "x".repeat(80);
        let s = subject(Some("Tasks"), &format!("Tasks\n{long}"));
        assert_eq!(s, format!("Tasks: {}", "x".repeat(50)));
    }

    #[test]
    fn unsubscribe_links_are_signed_per_user() {
        let k = settings().key;
        let sig = unsubscribe_signature(&k, 5);
        assert!(unsubscribe_valid(&k, 5, &sig));
        assert!(!unsubscribe_valid(&k, 6, &sig));
        assert!(!unsubscribe_valid("other", 5, &sig));
        assert!(!unsubscribe_valid(&k, 5, "zz"));
    }

    #[test]
    fn composes_both_parts_and_the_headers() {
        let row = DueMail {
            outbox_id: 1,
            notification_id: 42,
            user_id: 5,
            tag: None,
            sender_name: None,
            attempts: 0,
            notification: Some(MailText {
                text: "Build [b]failed[/b] <script>x</script>".into(),
                text_out: String::new(),
                created_at: 0,
            }),
            recipient: None,
        };
        let to = Recipient {
            email: "u@example.org".into(),
            name: "U \"x\"".into(),
        };
        let m = compose(&settings(), &to, 5, &[&row], 1_700_000_000.0)
            .unwrap()
            .message;
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            raw.contains("Subject: System notification: Build failed x"),
            "{raw}"
        );
        assert!(raw.contains(&message_id(&settings(), 42)), "{raw}");
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(
            raw.contains("Date: Tue, 14 Nov 2023 22:13:20 +0000"),
            "{raw}"
        );
        assert!(!raw.contains("<script>"), "{raw}");
    }
}
