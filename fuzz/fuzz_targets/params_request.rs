//! The whole request decoder: query string plus a urlencoded, multipart, JSON or unknown body.
//! The first byte picks the Content-Type; the rest is `query \n body`.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use imnotify::protocol::params::{decode_request, DecodeLimits};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=XyZ",
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "multipart/form-data",
    "MULTIPART/FORM-DATA;boundary=\"XyZ\"",
    "",
];

/// The decoder awaits only in-memory streams, so it never waits on I/O: polling until ready
/// with a no-op waker is a complete executor for it.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("decode_request did not finish on an in-memory body");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let is_post = selector & 0x80 == 0;
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let query = String::from_utf8_lossy(query);
    let limits = DecodeLimits {
        max_input_vars: 32,
        max_nesting: 6,
    };
    let _ = block_on(decode_request(
        is_post,
        Some(&query),
        Some(content_type),
        Bytes::copy_from_slice(body),
        &limits,
    ));
});
