//! The benchmark's yardstick: the least an HTTP server on this stack can do per request. It reads
//! the whole request body (as imnotify must) and answers a fixed JSON body of the size imnotify's
//! `im.notify.system.add` answer has, with no parsing, no storage and no fsync. `bench/run.sh`
//! runs it beside imnotify under the same core split and load, and reports imnotify's
//! throughput as a ratio of this one's.
//!
//! The response body type is axum's, which the crate already depends on; nothing of axum's
//! routing or extractors is used.
//!
//! Usage: `baseline ADDR BODY_BYTES` (it prints `listening on ADDR` once bound).

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(260);
    let body = fixed_body(size);

    let listener = TcpListener::bind(&addr).await.expect("binding");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    // Drain the body so the baseline pays the same read cost imnotify does.
                    let _ = axum::body::to_bytes(Body::new(req.into_body()), usize::MAX).await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json; charset=utf-8")
                            .body(Body::from(body))
                            .expect("static response"),
                    )
                }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `{"result":N,"pad":"xxx"}` padded to exactly `size` bytes, so both servers send as much.
fn fixed_body(size: usize) -> Bytes {
    let head = "{\"result\":1,\"pad\":\"";
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(pad)))
}
