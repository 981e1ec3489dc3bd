//! The built-in Push&Pull server: `GET /subws/` (WebSocket) and `GET /sub/` (long poll), the
//! endpoints Bitrix24's PullClient reaches through `pull.config.get` (issue 13; push-pull.md).
//!
//! Another view of the event log (`store::event`, `store::hub`), as `delivery::sse` is:
//! - The credential is `CHANNEL_ID` (URL-decoded, `/`-joined signed ids, every one checked by
//!   `auth::channel`, with the key held in memory). On WebSocket a bad or expired one completes
//!   the upgrade and closes with 4010, so the client fetches a fresh config (§3.5); a long poll
//!   gets 400. A channel names its user and the credential it was handed out for
//!   ([`channel::Grant`]), so the user must still be active and that webhook still active,
//!   that OAuth application still enabled with an unrevoked token of the user, or that browser
//!   session not signed out or ended: checked at
//!   connect (every poll) and every [`RECHECK_EVERY`] on an open socket (closed with 4010), so
//!   a revocation ends a socket within 3 s (2 s, plus the webhook cache's 1 s); and, as on SSE
//!   streams, before live events whenever the store's auth epoch moved since the last check
//!   (`Alive`), so no event committed after a revocation goes out on a socket or a held poll
//!   (which gets 400 instead).
//! - A message id (`mid`) is the event id as 26 decimal digits: increasing over the whole log,
//!   so any instance can replay it. A client that sends `mid` gets every newer event of its user,
//!   oldest first, from the log, then live events (subscribed before the replay, deduplicated by
//!   id at the seam). Without `mid` it starts at the log's head.
//! - Framing per connection (§2.2, §3): `jsonRpc=true` gets JSON-RPC `incoming.message`
//!   objects (an array when several are ready); otherwise server version 3 text, each message
//!   `#!NGINXNMS!#{json}#!NGINXNME!#`, with `#`, U+2028 and U+2029 escaped in the JSON so no
//!   notification text can break the frame, and never an unframed text frame.
//! - Payloads (§6): `notifyAdd` in Bitrix24's pull shape ([`add_params`]); the other kinds as the
//!   log stores them (already §6.2/6.3 shapes).
//! - Liveness: a WebSocket protocol ping every `events.heartbeat_seconds`; a socket silent for
//!   three of those is closed. In JSON-RPC mode a text `ping` is answered `pong`, and `mack:` and
//!   `pong` are accepted. When the server shuts down (the hub closes) sockets close with 1001.
//! - A long poll is held up to [`POLL_HOLD`]: `200` with framed messages, else `304` with
//!   `Last-Message-Id` and the `Expires` the client checks; never `200` with an empty body. A
//!   first poll without `mid` gets `304` with the head at once (§3.3).
//! - Both go through the per-IP gate of REST calls; a refused channel counts as a failed
//!   authentication there, and a gated address gets 503 before any check.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::{json, Value as Json};

use crate::auth::channel::{self, Channel};
use crate::clock::rfc3339_local;
use crate::conn::ConnInfo;
use crate::state::AppState;
use crate::store::event::{Event, Kind};
use crate::store::hub::{Drain, StreamKind, Subscription, WRITE_BYTES};

/// Close code that makes the client fetch a new config (WRONG_CHANNEL_ID, §3.5).
pub const CLOSE_WRONG_CHANNEL: u16 = 4010;
/// Close code of a graceful shutdown: the client reconnects after 0.5 s plus jitter (§7.8).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code when the user or the server holds as many streams as allowed.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// How long a long poll is held without data (push server 1.0: 40 s, §3.3).
pub const POLL_HOLD: Duration = Duration::from_secs(40);
/// The `Expires` value that makes the client take `Last-Message-Id` (§3.3).
const POLL_EXPIRES: &str = "Thu, 01 Jan 1973 11:11:01 GMT";
/// The largest message a client may send on a socket (bytes).
const MAX_CLIENT_MESSAGE: usize = 4096;
/// How long a socket may stay on its expired channel after `channel_expire`.
const CHANNEL_GRACE: Duration = Duration::from_secs(30);
/// Events read from the log per query while replaying.
const REPLAY_PAGE: usize = 256;
/// How often an open socket checks that its user is still active (as SSE streams do).
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// The 26-digit message id of an event id: the event id in 23 digits, then `000`. A control
/// message sent after event N gets N's digits and a non-zero suffix, so it sorts after N and
/// before N+1, is no duplicate of N for the client, and resuming from it replays from N.
pub fn mid(event_id: i64) -> String {
    control_mid(event_id, 0)
}

fn control_mid(after_event: i64, seq: u16) -> String {
    format!("{:023}{:03}", after_event.max(0), seq.min(999))
}

/// The event id of a `mid` parameter (the last three digits dropped); `None` for anything but
/// 26 digits.
fn parse_mid(s: &str) -> Option<i64> {
    if s.len() != 26 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s[..23].parse::<i64>().ok()
}

/// What a `/subws/` or `/sub/` URL asks for.
struct Ask {
    channel_id: String,
    resume: Option<i64>,
    rpc: bool,
}

fn ask(req: &Request) -> Ask {
    let mut a = Ask {
        channel_id: String::new(),
        resume: None,
        rpc: false,
    };
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "CHANNEL_ID" => a.channel_id = v.into_owned(),
            "mid" => a.resume = parse_mid(&v),
            "jsonRpc" => a.rpc = v == "true",
            _ => {}
        }
    }
    a
}

/// Why a request gets no stream.
enum Refusal {
    /// The per-IP gate refused the address (too many failures or requests in flight).
    Gate,
    /// The channel is bad or expired (or the key is unreadable).
    Channel,
}

/// Checks a request's channel through the per-IP gate of REST calls (issue 10 §2): an address
/// whose failures filled its bucket is refused, and a refused channel counts as a failure.
async fn check_gated(
    state: &AppState,
    client_ip: Option<std::net::IpAddr>,
    channel_id: &str,
) -> Result<(Channel, String), Refusal> {
    let ticket = match (&state.limits.ip_gate, client_ip) {
        (Some(gate), Some(ip)) => match gate.admit(ip, state.clock.monotonic()) {
            Ok(t) => Some(t),
            Err(_) => return Err(Refusal::Gate),
        },
        _ => None,
    };
    let checked = check(state, channel_id).await;
    if let (None, Some(gate), Some(ip)) = (&checked, &state.limits.ip_gate, client_ip) {
        gate.failed(ip, state.clock.monotonic());
    }
    drop(ticket);
    checked.ok_or(Refusal::Channel)
}

/// The 503 of an address the per-IP gate refused: a limit's refusal, which the request log
/// writes at WARN, not as a failure (`protocol::envelope::Refusal`).
fn gate_refused() -> Response {
    let mut resp = StatusCode::SERVICE_UNAVAILABLE.into_response();
    resp.extensions_mut()
        .insert(crate::protocol::envelope::Refusal);
    resp
}

fn client_ip(state: &AppState, req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnInfo>()
        .map(|c| c.client_ip(req.headers(), &state.config.trusted_proxies))
}

async fn check(state: &AppState, channel_id: &str) -> Option<(Channel, String)> {
    // The key is in memory (`AppState::keys`): a channel check reads no storage before the
    // signature is known good.
    let key = &state.keys.pull_channel;
    // The signed id is a bearer secret: only the outcome is logged, never the id.
    match channel::verify_list(key, channel_id, state.clock.unix()) {
        Ok(c) if channel_alive(state, &c).await == Some(true) => Some((c, key.clone())),
        Ok(c) => {
            tracing::info!(
                user_id = c.user_id,
                "push&pull channel of an inactive user or a revoked credential refused"
            );
            None
        }
        Err(why) => {
            tracing::info!(?why, "push&pull channel refused");
            None
        }
    }
}

/// Whether the channel may still receive: an active user, and the credential it was handed
/// out for still good ([`channel::Grant`]). A signed channel would otherwise outlive anything
/// but its end, so this runs at connect and every [`RECHECK_EVERY`] on an open socket. `None`:
/// the store could not be read.
async fn channel_alive(state: &AppState, c: &Channel) -> Option<bool> {
    let alive = async {
        if !state.store.user(c.user_id).await?.is_some_and(|u| u.active) {
            return Ok(false);
        }
        match c.grant {
            channel::Grant::User => Ok(true),
            // As for a REST call: one the cache does not know yet (added by another process
            // within its 1 s) is looked for in the database before the channel is refused.
            channel::Grant::Webhook(id) => {
                let known = |hooks: Vec<crate::store::Webhook>| hooks.iter().any(|w| w.id == id);
                Ok(known(state.store.cached_webhooks_of(c.user_id).await?)
                    || known(state.store.webhooks_of(c.user_id).await?))
            }
            channel::Grant::App(app_id) => {
                state
                    .store
                    .app_grant_alive(app_id, c.user_id, state.clock.unix())
                    .await
            }
            // Signing out (or the session's end) ends the session's channels too.
            channel::Grant::Session(prefix) => {
                let (lo, hi) = channel::Grant::session_range(prefix);
                state
                    .store
                    .session_alive(c.user_id, lo, hi, state.clock.unix())
                    .await
            }
        }
    };
    match alive.await {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "reading the channel's user or credential failed");
            None
        }
    }
}

/// When a connection last found its channel alive, so that live events need a new check only
/// when something that could end it was committed since ([`crate::store::Store::auth_epoch`]
/// moved; on PostgreSQL, which has no epoch, always) or the check is [`RECHECK_EVERY`] old:
/// the rule of SSE streams, so no event committed after a revocation goes out on a held long
/// poll or an open socket either.
struct Alive {
    epoch: Option<u64>,
    checked: tokio::time::Instant,
}

impl Alive {
    /// After the connect check; `epoch` was read before it.
    fn new(epoch: Option<u64>) -> Alive {
        Alive {
            epoch,
            checked: tokio::time::Instant::now(),
        }
    }

    /// Whether events may go out now. `None`: the store could not be read.
    async fn before_events(&mut self, state: &AppState, c: &Channel) -> Option<bool> {
        let epoch = state.store.auth_epoch();
        if epoch.is_some() && epoch == self.epoch && self.checked.elapsed() < RECHECK_EVERY {
            return Some(true);
        }
        self.check(state, c).await
    }

    async fn check(&mut self, state: &AppState, c: &Channel) -> Option<bool> {
        // Read before checking: a change committed meanwhile makes the next events check again.
        let epoch = state.store.auth_epoch();
        let alive = channel_alive(state, c).await;
        if alive == Some(true) {
            self.epoch = epoch;
            self.checked = tokio::time::Instant::now();
        }
        alive
    }
}

/// `notifyAdd`'s params in Bitrix24's pull shape (§6.1), from the log's payload (the
/// `im.notify.get` shape plus `counter`).
pub fn add_params(n: &Json) -> Json {
    let tag = n["notify_tag"].as_str().unwrap_or_default();
    let author = n["author_id"].as_i64().unwrap_or(0);
    let notify_type = n["notify_type"].as_i64().unwrap_or(4);
    let params = match &n["params"] {
        Json::Object(m) if !m.is_empty() => Json::Object(m.clone()),
        _ => json!([]),
    };
    let mut p = json!({
        "id": n["id"],
        "type": notify_type,
        "date": n["date"],
        "silent": "N",
        "onlyFlash": false,
        "link": "",
        "text": n["text"],
        "tag": if tag.is_empty() { String::new() } else { hex::encode(Md5::digest(tag.as_bytes())) },
        "originalTag": if tag.is_empty() { Json::Null } else { json!(tag) },
        "original_tag": if tag.is_empty() { Json::Null } else { json!(tag) },
        "read": n["notify_read"],
        "settingName": n["setting_name"],
        "params": params,
        "counter": n["counter"],
        "users": [],
        "userId": if author > 0 { json!(author) } else { Json::Null },
        "userName": Json::Null,
        "userColor": Json::Null,
        "userAvatar": Json::Null,
        "userLink": Json::Null,
    });
    if notify_type == crate::domain::inbox::NOTIFY_TYPE_CONFIRM {
        let buttons = n["notify_buttons"]
            .as_str()
            .and_then(|b| serde_json::from_str::<Json>(b).ok())
            .unwrap_or_else(|| json!([]));
        p["buttons"] = buttons;
    } else {
        p["title"] = n["notify_title"].clone();
    }
    p
}

/// The `{module_id, command, params, extra}` body of one event.
fn body(state: &AppState, ev: &Event) -> Json {
    let stored: Json = serde_json::from_str(&ev.payload).unwrap_or_else(|_| json!({}));
    let params = match ev.kind {
        Kind::Add => add_params(&stored),
        _ => stored,
    };
    let now = state.clock.now();
    json!({
        "module_id": "im",
        "command": ev.kind.name(),
        "params": params,
        "extra": {
            "server_time": rfc3339_local(now),
            "server_time_unix": now,
            "server_name": server_name(state),
        },
    })
}

fn server_name(state: &AppState) -> String {
    let base = state.config.base_url(state.config.listen);
    base.split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// One frame's text for a batch of events (never empty: callers pass at least one).
fn frame(state: &AppState, channel_pub: &str, events: &[Event], rpc: bool) -> String {
    let items: Vec<(i64, String, Json)> = events
        .iter()
        .map(|ev| (ev.id, mid(ev.id), body(state, ev)))
        .collect();
    frame_bodies(channel_pub, &items, rpc)
}

/// One frame of `(id, mid, body)` messages in the connection's framing (§3.1, §3.2).
fn frame_bodies(channel_pub: &str, items: &[(i64, String, Json)], rpc: bool) -> String {
    if rpc {
        let msgs: Vec<Json> = items
            .iter()
            .map(|(_, mid, body)| {
                json!({"jsonrpc": "2.0", "method": "incoming.message", "params": {
                    "mid": mid, "body": body, "sender": {"type": 2}}})
            })
            .collect();
        return if msgs.len() == 1 {
            msgs[0].to_string()
        } else {
            Json::Array(msgs).to_string()
        };
    }
    let mut out = String::new();
    for (id, mid, body) in items {
        let msg = json!({"id": id, "mid": mid, "channel": channel_pub, "text": body});
        out.push_str("#!NGINXNMS!#");
        out.push_str(&escape_text(&msg.to_string()));
        out.push_str("#!NGINXNME!#");
    }
    out
}

/// `pull` / `channel_expire` with `action: reconnect` (§3.5): the client swaps in `new_signed`
/// and reconnects after 1 s without a REST call.
fn channel_expire_body(old_signed: &str, new_signed: &str, start: i64, end: i64) -> Json {
    json!({
        "module_id": "pull",
        "command": "channel_expire",
        "params": {
            "action": "reconnect",
            "channel": {"id": old_signed, "type": "private"},
            "new_channel": {"id": new_signed, "start": rfc3339_local(start as f64),
                "end": rfc3339_local(end as f64), "type": "private"},
        },
        "extra": {},
    })
}

/// Escapes what the client's frame regex cannot cross (§3.1 rules 1-2). `#` and the two line
/// separators occur only inside JSON strings, where `\uXXXX` means the same character.
pub fn escape_text(json: &str) -> String {
    json.replace('#', "\\u0023")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The position of one connection in its user's events.
struct Cursor {
    sub: Option<Subscription>,
    user_id: i64,
    last: i64,
    replay: bool,
    /// When live events last went out, until [`crate::store::hub::Hub::live_gap`] has passed
    /// since.
    flushed: Option<tokio::time::Instant>,
}

enum Next {
    Events(Vec<Event>),
    /// The hub closed: the server is shutting down.
    Closed,
    /// The log could not be read.
    Failed,
}

impl Cursor {
    async fn open(state: &AppState, user_id: i64, resume: Option<i64>) -> Option<(Cursor, i64)> {
        let sub = state.store.hub().subscribe(user_id)?;
        let head = state.store.event_head().await.ok()?;
        let last = resume.map_or(head, |r| r.min(head));
        Some((
            Cursor {
                sub: Some(sub),
                user_id,
                last,
                replay: resume.is_some_and(|r| r < head),
                flushed: None,
            },
            head,
        ))
    }

    /// The next batch of events newer than `last`, waiting for live ones if needed.
    async fn next(&mut self, state: &AppState) -> Next {
        loop {
            if self.replay {
                match state
                    .store
                    .events_after(self.user_id, self.last, REPLAY_PAGE)
                    .await
                {
                    Ok(page) => {
                        self.replay = page.len() == REPLAY_PAGE;
                        if let Some(ev) = page.last() {
                            self.last = ev.id;
                            return Next::Events(page);
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "replaying the event log failed");
                        return Next::Failed;
                    }
                }
            }
            let hub = state.store.hub();
            let Some(sub) = self.sub.as_mut() else {
                match hub.subscribe(self.user_id) {
                    Some(s) => {
                        self.sub = Some(s);
                        self.replay = true;
                        continue;
                    }
                    None => return Next::Closed,
                }
            };
            // As on SSE streams: under load, at most one frame per gap (`Hub::live_gap`).
            if let Some(at) = self.flushed {
                tokio::time::sleep_until(at + hub.live_gap()).await;
                self.flushed = None;
            }
            match sub.recv().await {
                Some(first) => {
                    // Everything queued, as SSE streams take it: a stream writes once per gap
                    // (up to `hub::MAX_LIVE_GAP`), so a fixed number per write would let a
                    // stream that keeps up on average fall behind until the hub drops it. The
                    // hub's byte bound still caps what is queued.
                    let mut ready = vec![first];
                    // At most `WRITE_BYTES` per frame; past that the next frame follows at
                    // once (a dropped subscriber's `None` comes with the next `recv`).
                    let more = sub.drain_into(&mut ready, WRITE_BYTES) == Drain::More;
                    let mut batch: Vec<Event> = ready
                        .iter()
                        .flat_map(|b| b.iter().map(|ev| (**ev).clone()))
                        .collect();
                    batch.retain(|ev| ev.id > self.last);
                    if let Some(ev) = batch.last() {
                        self.last = ev.id;
                        if !more {
                            self.flushed = Some(tokio::time::Instant::now());
                        }
                        return Next::Events(batch);
                    }
                }
                None => {
                    self.sub = None;
                    if hub.is_closed() {
                        return Next::Closed;
                    }
                }
            }
        }
    }
}

/// `GET /subws/`.
pub async fn subws(State(state): State<AppState>, ws: WebSocketUpgrade, req: Request) -> Response {
    let ask = ask(&req);
    let alive = Alive::new(state.store.auth_epoch());
    let channel = match check_gated(&state, client_ip(&state, &req), &ask.channel_id).await {
        Ok(c) => Some(c),
        Err(Refusal::Channel) => None,
        Err(Refusal::Gate) => return gate_refused(),
    };
    // The client only ever sends `ping`, `pong` and `mack:<mid>`: small buffers and a small
    // message limit keep an idle socket cheap and bound what one client can make us hold
    // (tungstenite's defaults are a 128 KiB read buffer and 64 MiB messages).
    ws.read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            match channel {
                None => close(socket, CLOSE_WRONG_CHANNEL, "WRONG_CHANNEL_ID").await,
                Some((c, key)) => serve_socket(socket, state, c, key, ask, alive).await,
            }
        })
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Wait briefly for the client's close frame, so the close handshake completes.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn serve_socket(
    mut socket: WebSocket,
    state: AppState,
    channel: Channel,
    key: String,
    ask: Ask,
    mut alive: Alive,
) {
    let channel_pub = channel::public_part(&ask.channel_id).to_owned();
    let hub = state.store.hub();
    let Some(_slot) = hub.admit(channel.user_id, StreamKind::Integration) else {
        return close(socket, CLOSE_TRY_AGAIN, "too many streams").await;
    };
    let Some((mut cursor, _)) = Cursor::open(&state, channel.user_id, ask.resume).await else {
        return close(socket, CLOSE_GOING_AWAY, "shutting down").await;
    };
    tracing::info!(
        user_id = channel.user_id,
        resume = ask.resume.is_some(),
        rpc = ask.rpc,
        "push&pull socket opened"
    );
    let beat = Duration::from_secs(state.config.events.heartbeat_seconds.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    let mut heard = tokio::time::Instant::now();
    // At the channel's end the client gets a fresh channel (channel_expire, §3.5); a client that
    // has not moved over a grace period later is closed with 4010, so it fetches a config.
    let until_end = |end: i64| Duration::from_secs((end - state.clock.unix()).max(0) as u64);
    let expiry = tokio::time::sleep(until_end(channel.end));
    tokio::pin!(expiry);
    let mut expired_sent = false;
    let mut control_seq: u16 = 0;
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_EVERY, RECHECK_EVERY);
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                // A read failure keeps the socket: only a known inactive user ends it.
                if alive.check(&state, &channel).await == Some(false) {
                    tracing::info!(
                        user_id = channel.user_id,
                        "push&pull socket closed: user inactive or credential revoked"
                    );
                    return close(socket, CLOSE_WRONG_CHANNEL, "WRONG_CHANNEL_ID").await;
                }
            }
            _ = &mut expiry => {
                if expired_sent {
                    return close(socket, CLOSE_WRONG_CHANNEL, "WRONG_CHANNEL_ID").await;
                }
                expired_sent = true;
                let now = state.clock.unix();
                let end = now.saturating_add(state.config.pull.channel_ttl_seconds.max(1));
                let new_signed = channel::sign(&key, channel.user_id, end, channel.grant);
                control_seq = control_seq.saturating_add(1);
                let body = channel_expire_body(&ask.channel_id, &new_signed, now, end);
                let item = (cursor.last, control_mid(cursor.last, control_seq), body);
                let text = frame_bodies(&channel_pub, &[item], ask.rpc);
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
                expiry.as_mut().reset(tokio::time::Instant::now() + CHANNEL_GRACE);
            }
            next = cursor.next(&state) => match next {
                Next::Events(evs) => {
                    match alive.before_events(&state, &channel).await {
                        Some(true) => {}
                        Some(false) => {
                            tracing::info!(
                                user_id = channel.user_id,
                                "push&pull socket closed: user inactive or credential revoked"
                            );
                            return close(socket, CLOSE_WRONG_CHANNEL, "WRONG_CHANNEL_ID").await;
                        }
                        // Unsure: nothing goes out; the client reconnects and resumes by mid.
                        None => return close(socket, 1011, "").await,
                    }
                    let text = frame(&state, &channel_pub, &evs, ask.rpc);
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Next::Closed => return close(socket, CLOSE_GOING_AWAY, "server shutdown").await,
                Next::Failed => return close(socket, 1011, "").await,
            },
            msg = socket.recv() => {
                heard = tokio::time::Instant::now();
                match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(t))) if ask.rpc && t.as_str() == "ping" => {
                        if socket.send(Message::Text("pong".into())).await.is_err() {
                            return;
                        }
                    }
                    // `mack:<mid>`, `pong` and protocol pongs: nothing to do (delivery is
                    // resumed by mid, not by acks).
                    Some(Ok(_)) => {}
                }
            }
            _ = ping.tick() => {
                if heard.elapsed() > beat * 3 {
                    tracing::info!(user_id = channel.user_id, "push&pull socket silent, closed");
                    return;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `GET /sub/`: one long poll.
pub async fn sub(State(state): State<AppState>, req: Request) -> Response {
    let ask = ask(&req);
    let mut alive = Alive::new(state.store.auth_epoch());
    let channel = match check_gated(&state, client_ip(&state, &req), &ask.channel_id).await {
        Ok((c, _)) => c,
        Err(Refusal::Channel) => {
            return (StatusCode::BAD_REQUEST, "WRONG_CHANNEL_ID").into_response()
        }
        Err(Refusal::Gate) => return gate_refused(),
    };
    let channel_pub = channel::public_part(&ask.channel_id).to_owned();
    let hub = state.store.hub();
    let Some(_slot) = hub.admit(channel.user_id, StreamKind::Integration) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let Some((mut cursor, head)) = Cursor::open(&state, channel.user_id, ask.resume).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if ask.resume.is_none() {
        // The first poll: a resume point at once, so the client is online without waiting.
        return not_modified(head);
    }
    let hold = POLL_HOLD.min(Duration::from_secs(
        state.config.events.heartbeat_seconds.max(1) * 3,
    ));
    let hold = hold.max(Duration::from_secs(1));
    match tokio::time::timeout(hold, cursor.next(&state)).await {
        // Held up to 40 s: the channel may have ended since the connect check.
        Ok(Next::Events(evs)) => match alive.before_events(&state, &channel).await {
            Some(true) => {
                let mut resp = frame(&state, &channel_pub, &evs, ask.rpc).into_response();
                cors(resp.headers_mut());
                resp
            }
            Some(false) => (StatusCode::BAD_REQUEST, "WRONG_CHANNEL_ID").into_response(),
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Ok(Next::Failed) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        // Shutdown or nothing new: the client polls again from where it was.
        Ok(Next::Closed) | Err(_) => not_modified(cursor.last),
    }
}

fn not_modified(last: i64) -> Response {
    let mut resp = StatusCode::NOT_MODIFIED.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mid(last)) {
        h.insert("last-message-id", v);
    }
    h.insert(header::EXPIRES, HeaderValue::from_static(POLL_EXPIRES));
    cors(h);
    resp
}

fn cors(h: &mut axum::http::HeaderMap) {
    // The channel id in the URL is the credential: any page holding it may read.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Last-Message-Id"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mids_are_26_digits_and_parse_back() {
        assert_eq!(mid(42), "00000000000000000000042000");
        assert_eq!(parse_mid(&mid(42)), Some(42));
        assert_eq!(parse_mid(&mid(0)), Some(0));
        assert!(control_mid(42, 1) > mid(42) && control_mid(42, 1) < mid(43));
        assert_eq!(parse_mid(&control_mid(42, 1)), Some(42));
        assert_eq!(parse_mid("12a"), None);
        assert_eq!(parse_mid(&"9".repeat(27)), None);
    }

    #[test]
    fn text_escape_keeps_markers_and_separators_out() {
        let j = json!({"text": "a#!NGINXNME!##!NGINXNMS!#1\u{2028}\u{2029}b"}).to_string();
        let e = escape_text(&j);
        assert!(!e.contains('#') && !e.contains('\u{2028}') && !e.contains('\u{2029}'));
        let back: Json = serde_json::from_str(&e).unwrap();
        assert_eq!(back["text"], "a#!NGINXNME!##!NGINXNMS!#1\u{2028}\u{2029}b");
    }

    #[test]
    fn add_params_have_the_pull_shape() {
        let stored = json!({"id": 5, "chat_id": 9, "author_id": 0, "date": "d", "notify_type": 4,
            "notify_tag": "T1", "notify_title": "", "setting_name": "im|default", "text": "hi",
            "notify_read": "N", "params": null, "counter": 3});
        let p = add_params(&stored);
        assert_eq!(p["id"], 5);
        assert_eq!(p["type"], 4);
        assert_eq!(p["counter"], 3);
        assert_eq!(p["text"], "hi");
        assert_eq!(p["tag"], hex::encode(Md5::digest(b"T1")));
        assert_eq!(p["originalTag"], "T1");
        assert_eq!(p["params"], json!([]));
        assert_eq!(p["userId"], Json::Null);
        assert_eq!(p["settingName"], "im|default");
    }
}
