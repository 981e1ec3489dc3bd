//! `GET /events`: a user's events as Server-Sent Events.
//!
//! Credentials, as a REST call takes them where a browser's `EventSource` or a program can send
//! them:
//! - the session cookie of the login page;
//! - an OAuth access token: `Authorization: Bearer`, or `?auth=` / `?access_token=` (EventSource
//!   cannot set headers);
//! - a webhook: its URL with `events` in place of a method, `GET /rest/{user_id}/{code}/events`.
//!
//! Tokens and webhooks need the `im` scope. A bad credential gets the REST error envelope with
//! its status (`NO_AUTH_FOUND` 401, `invalid_token` 401, `expired_token` 401,
//! `INVALID_CREDENTIALS` 403, `insufficient_scope` 403), never a stream; too many streams get
//! `OVERLOAD_LIMIT` (503).
//!
//! The stream: a first frame with `retry:` and `id:` (the resume point, so an EventSource that
//! reconnects before any event still resumes from here), then one frame per event:
//! `id: N`, `event: notifyAdd|notifyDelete|...`, `data: {json with "counter"}` (payloads in
//! [`crate::store::event`]), and a `: ping` comment after `events.heartbeat_seconds` of silence.
//!
//! Order of work, so that nothing is missed and nothing repeats: subscribe to the hub before the
//! response headers go out; then, when the client resumes (`Last-Event-ID` or
//! `?last_event_id=`), replay its newer events from the log, oldest first; then go live, skipping
//! any live event whose id was already sent (the seam between replay and live). A subscriber the
//! hub dropped for being slow subscribes again and replays from its last sent id, so a slow
//! reader loses nothing either.
//!
//! A stream is only as good as its credential: it checks the credential again every
//! [`RECHECK_EVERY`], and before it sends a live event whenever the store's
//! [`Store::auth_epoch`] moved since its last check (a write that could end a credential was
//! committed, by this process or by an admin command on the same SQLite database; on
//! PostgreSQL, which has no such signal, before every live event); a replayed event unless the
//! last check is younger than [`RECHECK_FRESH`]. It ends when the credential no longer
//! authenticates (token revoked or expired, by the application clock; session ended; webhook
//! revoked, through the webhook cache, which trusts an entry for 1 s; user deactivated; `im`
//! scope gone). So a revocation ends open streams within 3 s, and no event committed after
//! a revocation is sent on them (ARCHITECTURE.md invariants); a token or session that merely
//! expires may see events for up to [`RECHECK_EVERY`] past its end.
//!
//! Cost (issue 15 goal 5): a live event's frame is encoded once ([`Event::sse`]) and the
//! same bytes go to every stream of its user; a stream receives a commit group's events as one
//! batch, writes everything queued as one body chunk, and under load writes at most once per
//! [`Hub::live_gap`] (10 ms with few streams, longer with many, so that all streams together
//! write about 1,000 times a second); while the epoch stands still, a stream's check before a
//! write is one atomic load.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{self, Stream};

use crate::auth::{self, Caller, CallerKind, Credential};
use crate::conn::ConnInfo;
use crate::error::ApiError;
use crate::limits::rate::RateKey;
use crate::protocol::dispatch::{self, Channel};
use crate::protocol::envelope;
use crate::protocol::route::Transport;
use crate::state::AppState;
use crate::store::event::Event;
use crate::store::hub::{Drain, Hub, Slot, StreamKind, Subscription, WRITE_BYTES};
use crate::store::Store;
use crate::value::{Array, Value};

/// Events read from the log per query while replaying.
const REPLAY_PAGE: usize = 256;
/// What an EventSource waits before reconnecting.
const RETRY: Duration = Duration::from_secs(2);
/// How often a stream checks its credential again, idle or not.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// While replaying from the log, a check this recent covers the next event too, so a page
/// costs one lookup, not one per event. A live event is always checked first.
pub const RECHECK_FRESH: Duration = Duration::from_millis(100);

/// `GET /events` (session cookie or OAuth token).
pub async fn events(State(state): State<AppState>, req: Request) -> Response {
    open(state, req, None).await
}

/// The webhook credentials of `/rest/{user_id}/{code}/events` (with or without a trailing `/`),
/// which the server routes here instead of to the REST handler.
pub fn webhook_path(path: &str) -> Option<(String, String)> {
    let route = crate::protocol::route::parse(path.strip_prefix("/rest")?)?;
    if route.method != "events" || route.transport != Transport::Json {
        return None;
    }
    route.webhook
}

/// Opens a stream for a request; `webhook` holds the credentials of a webhook path.
pub async fn open(state: AppState, req: Request, webhook: Option<(String, String)>) -> Response {
    let (parts, _) = req.into_parts();
    let mut params: Array = parts
        .uri
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.as_ref().into(), Value::Str(v.into_owned())))
                .collect()
        })
        .unwrap_or_default();
    let resume = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get_str("last_event_id").map(Value::to_php_string))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|id| *id >= 0);
    if let Some((login, code)) = webhook {
        params.insert("aplogin", Value::Str(login));
        params.insert("ap", Value::Str(code));
    }
    let cred = match auth::extract(&parts.headers, &mut params) {
        // EventSource sends cookies, not headers: a signed-in browser has only its cookie.
        Credential::None => match auth::session_cookie(&parts.headers) {
            Some(cookie) => Credential::Session {
                csrf: String::new(),
                cookie: Some(cookie),
            },
            None => Credential::None,
        },
        c => c,
    };
    let conn = parts.extensions.get::<ConnInfo>().copied();
    let trusted = &state.config.trusted_proxies;
    let client_ip = conn.map(|c| c.client_ip(&parts.headers, trusted));
    // The per-IP gate of REST calls (issue 10 §2): an address whose failed authentications
    // filled its bucket is refused here too, or `/rest/{user}/{code}/events` would be a free
    // oracle for webhook codes. The ticket is held while authenticating only, not for the
    // stream's life.
    let ticket = match (&state.limits.ip_gate, client_ip) {
        (Some(gate), Some(ip)) => match gate.admit(ip, state.clock.monotonic()) {
            Ok(t) => Some(t),
            Err(_) => return refuse(&ApiError::query_limit_exceeded()),
        },
        _ => None,
    };
    let presented = cred.fingerprint();
    let channel = Channel {
        secure: conn.is_some_and(|c| c.is_secure(&parts.headers, trusted)),
    };
    // Read before authenticating, so a change committed meanwhile makes the first live event
    // check again.
    let epoch = state.store.auth_epoch();
    let caller = authenticate(&state, cred.clone(), channel).await;
    if let (Err(_), Some(gate), Some(ip)) = (&caller, &state.limits.ip_gate, client_ip) {
        gate.failed(ip, state.clock.monotonic());
    }
    drop(ticket);
    // As for REST calls: the caller's canonical identity once known, however it was spelled.
    let rate_key = client_ip.map(|ip| RateKey {
        ip,
        credential: match &caller {
            Ok(c) => c.rate_identity(),
            Err(_) => presented,
        },
    });
    // Opening a stream is charged like one REST call, good credential or not.
    if let Some(key) = &rate_key {
        let over = caller.as_ref().map(|c| c.rate).unwrap_or_default();
        if !state.limits.check_rate(key, over).await {
            return refuse(&ApiError::query_limit_exceeded());
        }
    }
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return refuse(&e),
    };
    if !caller.is_session() && !caller.has_scope("im") {
        return refuse(&caller.insufficient_scope());
    }
    let hub = state.store.hub();
    // A session is the user's own browser; it keeps places no integration may take.
    let kind = if caller.is_session() {
        StreamKind::Browser
    } else {
        StreamKind::Integration
    };
    let Some(slot) = hub.admit(caller.user_id, kind) else {
        return refuse(&ApiError::overload_limit());
    };
    // Live before the headers go out: whatever commits from here on reaches this stream.
    let Some(sub) = hub.subscribe(caller.user_id) else {
        return refuse(&ApiError::overload_limit());
    };
    let head = match state.store.event_head().await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "reading the event log failed");
            return refuse(&ApiError::internal());
        }
    };
    // A resume point past the head (a log that started over) would hide every new event.
    let start = resume.map_or(head, |r| r.min(head));
    let feed = Feed {
        guard: Guard {
            state: state.clone(),
            cred,
            channel,
            user_id: caller.user_id,
            checked: Instant::now(),
            epoch,
        },
        store: state.store.clone(),
        hub,
        user_id: caller.user_id,
        sub: Some(sub),
        last: start,
        replay: resume.is_some(),
        backlog: VecDeque::new(),
        announce: true,
        heartbeat: Duration::from_secs(state.config.events.heartbeat_seconds.max(1)),
        quiet_since: Instant::now(),
        flushed: None,
        _slot: slot,
    };
    tracing::info!(
        user_id = caller.user_id,
        resume = resume.is_some(),
        "event stream opened"
    );
    let mut resp = Body::from_stream(feed.into_stream()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // nginx and similar proxies would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if !caller.is_session() {
        // Token and webhook streams carry their credential themselves: any page may read them.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    resp
}

async fn authenticate(
    state: &AppState,
    cred: Credential,
    channel: Channel,
) -> Result<Caller, ApiError> {
    match cred {
        // The cookie alone: a stream only reads, so there is no CSRF token to check.
        Credential::Session { csrf, cookie } if csrf.is_empty() => {
            let cookie = cookie.ok_or_else(ApiError::no_auth_found)?;
            let id_hash = auth::secret::hash(&cookie);
            let session = state
                .store
                .session(id_hash, state.clock.unix())
                .await
                .map_err(auth::internal)?
                .ok_or_else(ApiError::session_user_not_authorized)?;
            Ok(Caller {
                user_id: session.user_id,
                kind: CallerKind::Session { id_hash },
                scopes: auth::known_scopes(),
                rate: Default::default(),
            })
        }
        cred => dispatch::authenticate(state, cred, channel).await,
    }
}

fn refuse(e: &ApiError) -> Response {
    envelope::error_response(Transport::Json, e)
}

/// The credential a stream was opened with, checked again while the stream lives.
struct Guard {
    state: AppState,
    cred: Credential,
    channel: Channel,
    user_id: i64,
    /// When the credential last authenticated (a machine instant: the freshness of a check).
    checked: Instant,
    /// [`Store::auth_epoch`] as read just before that check.
    epoch: Option<u64>,
}

impl Guard {
    /// Whether the credential still authenticates as the stream's user with the `im` scope.
    /// Checks again unless the last check is fresher than [`RECHECK_FRESH`]. A storage failure
    /// counts as invalid: the client reconnects, authenticates anew and resumes.
    async fn valid(&mut self, force: bool) -> bool {
        if !force && self.checked.elapsed() < RECHECK_FRESH {
            return true;
        }
        self.check().await
    }

    /// Before a live event: checks again only when the store's auth epoch moved since the
    /// last check, or that check is [`RECHECK_EVERY`] old; otherwise nothing that could end
    /// the credential was committed since, and the check stands.
    async fn valid_live(&mut self) -> bool {
        let epoch = self.state.store.auth_epoch();
        if epoch.is_some() && epoch == self.epoch && self.checked.elapsed() < RECHECK_EVERY {
            return true;
        }
        self.check().await
    }

    async fn check(&mut self) -> bool {
        crate::metrics::record_stream_credential_check();
        // Read before authenticating: a change committed during the check moves it again,
        // so the next event checks once more.
        let epoch = self.state.store.auth_epoch();
        match authenticate(&self.state, self.cred.clone(), self.channel).await {
            Ok(c) if c.user_id == self.user_id && (c.is_session() || c.has_scope("im")) => {
                self.checked = Instant::now();
                self.epoch = epoch;
                true
            }
            other => {
                tracing::info!(
                    user_id = self.user_id,
                    reason = other.err().map(|e| e.to_string()).unwrap_or_default(),
                    "event stream ended: its credential no longer authenticates"
                );
                false
            }
        }
    }

    /// When an idle stream checks next.
    fn due(&self) -> Instant {
        self.checked + RECHECK_EVERY
    }
}

/// One stream's position: what it has sent, and where its next events come from.
struct Feed {
    guard: Guard,
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    user_id: i64,
    /// `None` after the hub dropped this stream; it subscribes again before replaying.
    sub: Option<Subscription>,
    /// The highest event id sent (or the resume point): nothing at or below it is sent again.
    last: i64,
    /// Events after `last` must be read from the log before going live.
    replay: bool,
    backlog: VecDeque<Event>,
    /// The first frame (`retry:` and `id:`) is still to be sent.
    announce: bool,
    /// Silence after which a `: ping` comment goes out (`events.heartbeat_seconds`).
    heartbeat: Duration,
    /// When the last frame went out.
    quiet_since: Instant,
    /// When the last live events went out, until the stream has waited [`Hub::live_gap`] since.
    flushed: Option<Instant>,
    _slot: Slot,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        stream::unfold(self, |mut feed| async move {
            let frame = feed.next().await?;
            feed.quiet_since = Instant::now();
            Some((Ok(frame), feed))
        })
    }

    /// The next frame, or `None` when the stream should end (shutdown, or the log is
    /// unreadable: the client reconnects and resumes).
    async fn next(&mut self) -> Option<Bytes> {
        if self.announce {
            self.announce = false;
            return Some(Bytes::from(format!(
                "retry: {}\nid: {}\n\n",
                RETRY.as_millis(),
                self.last
            )));
        }
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if ev.id <= self.last {
                    continue;
                }
                if !self.guard.valid(false).await {
                    return None;
                }
                self.last = ev.id;
                crate::metrics::record_sse_event_sent();
                return Some(encode(&ev));
            }
            if self.replay {
                match self
                    .store
                    .events_after(self.user_id, self.last, REPLAY_PAGE)
                    .await
                {
                    Ok(page) => {
                        self.replay = page.len() == REPLAY_PAGE;
                        self.backlog.extend(page);
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "replaying the event log failed");
                        return None;
                    }
                }
            }
            let Some(sub) = self.sub.as_mut() else {
                // Dropped for being slow: subscribe again first, then catch up from the log.
                self.sub = Some(self.hub.subscribe(self.user_id)?);
                self.replay = true;
                continue;
            };
            // Under load, a stream writes at most once per gap: what commits meanwhile
            // queues up and goes out in the next write. A stream that was quiet writes at once.
            if let Some(at) = self.flushed.take() {
                tokio::time::sleep_until(at + self.hub.live_gap()).await;
            }
            let due = self.guard.due();
            let ping = self.quiet_since + self.heartbeat;
            let received = tokio::select! {
                r = sub.recv() => r,
                () = tokio::time::sleep_until(due) => {
                    if !self.guard.valid(true).await {
                        return None;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(ping) => {
                    return Some(Bytes::from_static(b": ping\n\n"));
                }
            };
            match received {
                Some(batch) => {
                    // Whatever else is queued already goes out with it, in one write of at
                    // most `WRITE_BYTES`; past that, the next write follows as soon as the
                    // client takes this one, without waiting for the gap.
                    let mut ready = vec![batch];
                    let drain = sub.drain_into(&mut ready, WRITE_BYTES);
                    if drain == Drain::Dropped {
                        // Everything queued is in `ready`; the rest comes from the log.
                        self.sub = None;
                    }
                    if ready
                        .iter()
                        .flat_map(|b| b.iter())
                        .all(|ev| ev.id <= self.last)
                    {
                        continue;
                    }
                    // After taking them: an event committed after a revocation was published
                    // after the epoch moved, so this check covers every one of them.
                    if !self.guard.valid_live().await {
                        return None;
                    }
                    if drain != Drain::More {
                        self.flushed = Some(Instant::now());
                    }
                    return self.chunk(ready.iter().flat_map(|b| b.iter()));
                }
                None => {
                    self.sub = None;
                    if self.hub.is_closed() {
                        return None;
                    }
                }
            }
        }
    }
}

impl Feed {
    /// The frames of live events not sent yet, in one buffer. Each frame is encoded by the
    /// first of its user's streams to get here and shared by the rest.
    fn chunk<'a>(&mut self, events: impl Iterator<Item = &'a Arc<Event>>) -> Option<Bytes> {
        let frames: Vec<Bytes> = events
            .filter_map(|ev| {
                if ev.id <= self.last {
                    return None;
                }
                self.last = ev.id;
                crate::metrics::record_sse_event_sent();
                Some(ev.sse.get_or_init(|| {
                    crate::metrics::record_sse_frame_encoded();
                    encode(ev)
                }))
            })
            .collect();
        if let [one] = &frames[..] {
            return Some(one.clone());
        }
        if frames.is_empty() {
            return None;
        }
        let mut out = bytes::BytesMut::with_capacity(frames.iter().map(|f| f.len()).sum());
        for frame in &frames {
            out.extend_from_slice(frame);
        }
        Some(out.freeze())
    }
}

/// An event's SSE frame: `id:`, `event:`, one `data:` line per line of the payload (stored
/// payloads have no line breaks, but one must never end the frame early), and the blank line.
fn encode(ev: &Event) -> Bytes {
    use std::fmt::Write;
    let mut out = String::with_capacity(ev.payload.len() + 48);
    let _ = write!(out, "id: {}\nevent: {}\n", ev.id, ev.kind.name());
    for line in ev.payload.split(['\r', '\n']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::event::Kind;

    #[test]
    fn a_frame_is_one_event_and_a_line_break_cannot_end_it_early() {
        let ev = |payload: &str| Event {
            id: 7,
            user_id: 1,
            kind: Kind::Add,
            payload: payload.into(),
            sse: Default::default(),
        };
        assert_eq!(
            &encode(&ev(r#"{"counter":1}"#))[..],
            b"id: 7\nevent: notifyAdd\ndata: {\"counter\":1}\n\n"
        );
        assert_eq!(
            &encode(&ev("a\r\nevent: x\rb"))[..],
            b"id: 7\nevent: notifyAdd\ndata: a\ndata: \ndata: event: x\ndata: b\n\n"
        );
    }
}
