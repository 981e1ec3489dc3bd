//! The HTTP(S) server: binding, TLS, the router, request ids, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{HeaderValue, Request};
use axum::routing::{any, get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::config::{Config, Limits};
pub use crate::conn::ConnInfo;
use crate::delivery;
use crate::error::ApiError;
use crate::protocol;
use crate::protocol::route::Transport;
use crate::state::AppState;
use crate::web;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
struct CountingRequestId(Arc<AtomicU64>);

impl MakeRequestId for CountingRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        HeaderValue::from_str(&format!("{n:016x}"))
            .ok()
            .map(RequestId::new)
    }
}

/// The `X-Request-Id` a client sent, kept only if it is `[A-Za-z0-9._-]{1,64}` (issue 10 §4).
/// The request's own id is always generated here; the client's travels beside it, in its own
/// log field, so a client cannot choose the id other lines are found by, nor write its own
/// text into a log line.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub String);

impl ClientRequestId {
    pub fn parse(value: &[u8]) -> Option<ClientRequestId> {
        let ok = (1..=64).contains(&value.len())
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| ClientRequestId(String::from_utf8_lossy(value).into_owned()))
    }
}

/// Moves a client's `X-Request-Id` out of the headers (into [`ClientRequestId`] when valid)
/// before the id layer, which then always generates one.
async fn take_client_request_id(
    mut req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(v) = req.headers_mut().remove("x-request-id") {
        if let Some(id) = ClientRequestId::parse(v.as_bytes()) {
            req.extensions_mut().insert(id);
        }
    }
    next.run(req).await
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/login", any(web::oauth::login))
        .route("/logout", post(web::oauth::logout))
        .route("/oauth/authorize", any(web::oauth::authorize))
        .route("/oauth/authorize/", any(web::oauth::authorize))
        .route("/oauth/token", any(web::oauth::token))
        .route("/oauth/token/", any(web::oauth::token))
        .route("/admin", get(|| async { web::redirect("/admin/") }))
        .route("/admin/", any(web::admin_page::page))
        .route("/admin/admin.css", get(web::admin_page::css))
        .route("/admin/admin.js", get(web::admin_page::js))
        .route("/admin/api", any(web::admin::api))
        .route("/admin/api/{*path}", any(web::admin::api))
        .route("/", get(web::center::index))
        .route("/center/item/{id}", get(web::center::item))
        .route("/center/action", post(web::center::action))
        .route("/center/lang", post(web::center::set_lang))
        .route("/center/email", post(web::center::set_email))
        .route("/assets/center.js", get(web::center::script))
        .route("/assets/center.css", get(web::center::style))
        .route("/assets/page.css", get(web::page_style))
        .route("/events", get(delivery::sse::events))
        .route("/subws/", get(delivery::pull::subws))
        .route("/subws", get(delivery::pull::subws))
        .route("/sub/", get(delivery::pull::sub))
        .route("/sub", get(delivery::pull::sub))
        .route(
            "/unsubscribe",
            get(delivery::mail::unsubscribe_page).post(delivery::mail::unsubscribe),
        )
        .route("/rest", any(protocol::rest_handler))
        .route("/rest/{*path}", any(rest))
        .fallback(protocol::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_url_length,
        ))
        .with_state(state)
        // Inside the trace layer, so that the span records the 500 it produces.
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            // The span names the request id but not the URI: paths carry webhook codes. The id
            // is ours (hex digits); the client's, validated, is a field of its own.
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    let client = req
                        .extensions()
                        .get::<ClientRequestId>()
                        .map(|c| c.0.as_str());
                    tracing::info_span!(
                        "request",
                        request_id = %id,
                        client_request_id = client,
                        http_method = %req.method()
                    )
                })
                // tower-http logs every 5xx at ERROR; a limit's or a fault's refusal is no failure.
                .on_failure(())
                .on_response(log_response),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(CountingRequestId::default()))
        .layer(axum::middleware::from_fn(take_client_request_id))
}

/// The trace layer's line for a finished response: a 5xx at ERROR, unless it is a deliberate
/// refusal ([`protocol::envelope::Refusal`]: a limit or an injected fault), which is at WARN;
/// anything else at DEBUG, as tower-http's default.
fn log_response<B>(resp: &axum::http::Response<B>, latency: Duration, _span: &tracing::Span) {
    let status = resp.status().as_u16();
    let latency_ms = latency.as_millis() as u64;
    if !resp.status().is_server_error() {
        tracing::debug!(status, latency_ms, "finished processing request");
    } else if resp
        .extensions()
        .get::<protocol::envelope::Refusal>()
        .is_some()
    {
        tracing::warn!(status, latency_ms, "request refused by a limit or a fault");
    } else {
        tracing::error!(status, latency_ms, "response failed");
    }
}

/// `/rest/...`: a webhook's event stream, `/rest/{user_id}/{code}/events` (a stream, not a
/// method), or a REST call.
async fn rest(
    State(state): State<AppState>,
    req: Request<axum::body::Body>,
) -> axum::response::Response {
    if req.method() == axum::http::Method::GET {
        if let Some(webhook) = delivery::sse::webhook_path(req.uri().path()) {
            return delivery::sse::open(state, req, Some(webhook)).await;
        }
    }
    protocol::rest_handler(State(state), req).await
}

/// Over-long URLs are refused before routing, with an envelope rather than hyper's bare 414, so
/// that a REST client sees an `error` code it can read.
async fn limit_url_length(
    State(state): State<AppState>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > state.config.limits.max_url_bytes {
        tracing::info!(len, "url too long");
        return protocol::envelope::error_response(Transport::Json, &ApiError::url_too_long());
    }
    next.run(req).await
}

/// A handler that panics answers 500 with the error envelope; the connection and the server
/// carry on. The panic message itself went to stderr through the panic hook; it is not echoed.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("handler panicked");
    protocol::envelope::error_response(Transport::Json, &ApiError::internal())
}

/// The HTTP layer's protections against oversized heads and slow clients (slowloris).
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        // hyper panics below 8192.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is dropped rather than held open.
        .keep_alive_interval(Duration::from_secs(limits.header_read_timeout_secs.max(1)))
        .keep_alive_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)));
    builder
}

async fn openapi(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        protocol::openapi::served(&state.methods).to_owned(),
    )
}

/// `{"status":"ok"}`, or 503 `{"status":"error","storage":"..."}` while the store's last
/// commit or checkpoint failed. It reads state the writer and checkpointer keep, so it costs
/// nothing and never waits for the database.
async fn healthz(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (status, body) = match state.store.health() {
        Ok(()) => (axum::http::StatusCode::OK, "{\"status\":\"ok\"}".to_owned()),
        Err(e) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "error", "storage": e}).to_string(),
        ),
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::render(state.store.writer_queue_depth()),
    )
}

/// File descriptors kept free for everything but client connections: the database (the
/// writer, the checkpointer, up to `MAX_READERS` readers and their WAL and shm files), the
/// listener, logs, and the blocking pool's files.
const FD_RESERVE: usize = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit where the system allows, and returns the
/// soft limit in force (`None` where it cannot be read).
pub fn raise_nofile_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim.rlim_cur = lim.rlim_max;
                }
            }
        }
        Some(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `limits.max_connections`, kept below the file-descriptor limit so that accepting a
/// connection never takes the descriptor the database or the next accept needs.
pub fn connection_cap(configured: usize, nofile: Option<usize>) -> usize {
    let cap = match nofile {
        Some(n) if n > 2 * FD_RESERVE => configured.min(n - FD_RESERVE),
        Some(n) => configured.min(n / 2),
        None => configured,
    };
    cap.max(1)
}

/// Open connections per peer address, counted under `limits::abuse::address_key` like every
/// other per-address limit (an IPv6 peer by its /64); a guard gives its place back when the
/// connection ends.
#[derive(Clone, Default)]
struct PerIp(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

struct PerIpGuard(PerIp, std::net::IpAddr);

impl PerIp {
    fn enter(&self, ip: std::net::IpAddr, max: usize) -> Option<PerIpGuard> {
        let ip = crate::limits::abuse::address_key(ip);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpGuard(self.clone(), ip))
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut map = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// A bound server, not yet serving. Binding happens in `bind` so that callers (and tests) learn
/// the real address when they ask for port 0.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    pub addr: SocketAddr,
}

pub async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    Ok(Bound {
        listener,
        tls,
        limits: config.limits.clone(),
        addr,
    })
}

/// Answers a plain-HTTP request that reached the HTTPS port (an `http://` URL for an
/// `https://` server) with `400 INVALID_REQUEST` "This port speaks HTTPS: use https://", in
/// plain HTTP, and closes. Without it, the client reads the TLS alert as HTTP and reports
/// "HTTP/0.9" or a parse failure that does not name the cause. The request head is read first
/// and what follows is drained after the answer, each bounded in bytes and time, so the close
/// does not reset the connection before the client has read the answer.
async fn plain_http_on_the_tls_port(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const BODY: &str =
        r#"{"error":"INVALID_REQUEST","error_description":"This port speaks HTTPS: use https://"}"#;
    const LIMIT: usize = 64 * 1024;
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    let read_head = async {
        while seen.len() < LIMIT && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head).await,
        Ok(true)
    ) {
        return;
    }
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut drained = 0;
    let drain = async {
        while drained < LIMIT {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

impl Bound {
    fn first_byte_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.header_read_timeout_secs.max(1))
    }

    /// Serves until `shutdown` turns true, then stops accepting and waits for in-flight
    /// requests to finish.
    pub async fn serve(self, app: Router, mut shutdown: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        let builder = connection_builder(&self.limits);
        let cap = connection_cap(self.limits.max_connections, raise_nofile_limit());
        tracing::info!(max_connections = cap, "connection cap");
        let slots = Arc::new(tokio::sync::Semaphore::new(cap));
        let per_ip = PerIp::default();
        loop {
            // At the cap the server stops accepting (the kernel's backlog holds the rest) instead
            // of running out of file descriptors, which would also fail the database's opens.
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                _ = shutdown.wait_for(|s| *s) => break,
            };
            let (stream, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.wait_for(|s| *s) => break,
            };
            let Some(ip_slot) = per_ip.enter(peer.ip(), self.limits.max_connections_per_ip) else {
                // One address holding many connections does not keep others out.
                drop(stream);
                continue;
            };
            let held = (slot, ip_slot);
            let _ = stream.set_nodelay(true);
            let info = ConnInfo {
                peer,
                tls: self.tls.is_some(),
            };
            let app = app.clone();
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info);
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            match &self.tls {
                None => {
                    let first_byte = self.first_byte_timeout();
                    let mut stopping = shutdown.clone();
                    tokio::spawn(async move {
                        let _held = held;
                        // hyper's header timeout starts only once the HTTP version is known,
                        // which takes a first byte: a client that never sends one is dropped here.
                        // Shutdown waits for every watcher, so it also ends this wait.
                        let mut probe = [0u8; 1];
                        tokio::select! {
                            r = tokio::time::timeout(first_byte, stream.peek(&mut probe)) => match r {
                                Ok(Ok(n)) if n > 0 => {}
                                _ => return,
                            },
                            _ = stopping.wait_for(|s| *s) => return,
                        }
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    });
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let _held = held;
                        // A TLS record starts with a byte below 0x20; an HTTP request with a
                        // method's letter: `http://` to this port gets a plain answer saying so.
                        // One deadline for the probe and the handshake together.
                        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
                        let mut probe = [0u8; 1];
                        match tokio::time::timeout_at(deadline, stream.peek(&mut probe)).await {
                            Ok(Ok(n)) if n > 0 => {}
                            _ => return,
                        }
                        if probe[0].is_ascii_alphabetic() {
                            plain_http_on_the_tls_port(stream).await;
                            return;
                        }
                        let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            _ => return,
                        };
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    });
                }
            }
        }
        drop(self.listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_stays_below_the_descriptor_limit() {
        assert_eq!(connection_cap(10_000, Some(1024)), 1024 - FD_RESERVE);
        assert_eq!(connection_cap(100, Some(1024)), 100);
        assert_eq!(connection_cap(10_000, Some(200)), 100);
        assert_eq!(connection_cap(10_000, None), 10_000);
        assert_eq!(connection_cap(0, Some(1024)), 1);
    }

    /// The per-address connection count keys IPv6 by its /64 and IPv4-mapped peers as IPv4,
    /// as the gate, the rate limiter and the login back-off do: one subscriber's /64 does
    /// not get a quota per address.
    #[test]
    fn connections_count_per_address_key() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let per_ip = PerIp::default();
        let first = per_ip.enter(ip("2001:db8:1:2::1"), 2).expect("first");
        let _second = per_ip.enter(ip("2001:db8:1:2:ffff::9"), 2).expect("second");
        assert!(per_ip.enter(ip("2001:db8:1:2::3"), 2).is_none(), "same /64");
        assert!(
            per_ip.enter(ip("2001:db8:1:3::1"), 2).is_some(),
            "another /64"
        );
        drop(first);
        assert!(
            per_ip.enter(ip("2001:db8:1:2::3"), 2).is_some(),
            "a place given back"
        );
        let _v4 = per_ip.enter(ip("192.0.2.7"), 1).expect("v4");
        assert!(
            per_ip.enter(ip("::ffff:192.0.2.7"), 1).is_none(),
            "mapped is the same"
        );
        assert!(per_ip.0.lock().unwrap().len() <= 3);
    }
}
