//! The `/rest/...` URL grammar (P1) and the credential extraction that follows it: the path's
//! method, transport and webhook credentials, then the query's parameters and auth keys.
//! Input: `path ? query`.
#![no_main]

use imnotify::auth;
use imnotify::protocol::params::{parse_str, DecodeLimits};
use imnotify::protocol::route::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    if let Some(route) = parse(path) {
        // Method names are looked up lower-cased (§1.2).
        assert_eq!(route.method, route.method.to_ascii_lowercase());
        assert!(!route.method.is_empty());
    }
    let mut params = parse_str(query, &DecodeLimits::default());
    let headers = http::HeaderMap::new();
    let _ = auth::extract(&headers, &mut params);
});
