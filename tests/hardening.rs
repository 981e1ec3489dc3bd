//! Hardening against faults and hostile clients: graceful drain on SIGTERM, panics in handlers,
//! oversized URLs and headers, slow clients, and the OpenAPI document.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Options, Server};

fn env(pairs: &[(&str, &str)]) -> Options {
    Options {
        envs: common::envs(pairs),
        ..Options::default()
    }
}

/// Reads whatever the server sends until it closes the connection or `limit` passes.
fn read_until_close(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), start.elapsed())
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let mut s = Server::start();
    // Several requests whose heads and half their bodies are sent before SIGTERM: the handlers
    // are running, waiting for the rest of the body.
    let mut streams = Vec::new();
    for i in 0..4 {
        let body = format!(r#"{{"USER_ID":1,"MESSAGE":"drain {i}"}}"#);
        let (first, second) = body.split_at(body.len() / 2);
        let mut t = TcpStream::connect(&s.addr).unwrap();
        write!(
            t,
            "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
            s.hook_url("im.notify.system.add"),
            body.len()
        )
        .unwrap();
        t.flush().unwrap();
        streams.push((t, second.to_owned()));
    }
    // The heads must have reached the handlers before the signal; a connection whose head is
    // still unread counts as idle and is closed, which is right but not what is tested here.
    // There is no server-side signal for that, so give it a generous second on a busy machine.
    std::thread::sleep(Duration::from_secs(1));
    let pid = s.child.as_ref().unwrap().id();
    let killer = std::thread::spawn(move || {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
    });
    assert!(killer.join().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::new();
    for (mut t, rest) in streams {
        t.write_all(rest.as_bytes()).unwrap();
        let (answer, _) = read_until_close(&mut t, Duration::from_secs(20));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        ids.push(j["result"].as_i64().expect("an id"));
    }
    let status = s.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "exit status {status}");
    for id in ids {
        let n: i64 = s
            .query_value(
                "SELECT COUNT(*) FROM notifications WHERE id = ?1",
                &[id.into()],
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged id {id} missing after SIGTERM");
    }
}

#[test]
fn sigterm_exits_promptly_with_idle_and_silent_connections_open() {
    let mut s = Server::start();
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let _ = idle.read(&mut buf).unwrap();
    // Nor may one that has not sent a byte yet (the default header timeout is 10 s).
    let _silent = TcpStream::connect(&s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let status = s.terminate();
    assert!(status.success());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let s = Server::start_with(env(&[("IMNOTIFY_TEST_PANIC_METHOD", "1")]));
    for _ in 0..3 {
        let r = s.post_json(&s.hook_url("test.panic"), &serde_json::json!({}));
        r.assert_error(500, "INTERNAL_SERVER_ERROR");
        assert!(!r.body.contains("test.panic was called"), "{}", r.body);
    }
    // Still serving, on new connections and real methods.
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &serde_json::json!({"USER_ID": 1, "MESSAGE": "after panic"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_panic_method_exists_only_when_asked_for() {
    let s = Server::start();
    s.post_json(&s.hook_url("test.panic"), &serde_json::json!({}))
        .assert_error(404, "ERROR_METHOD_NOT_FOUND");
}

#[test]
fn long_urls_get_an_envelope_error() {
    let s = Server::start_with(env(&[("IMNOTIFY_LIMITS__MAX_URL_BYTES", "256")]));
    let path = format!(
        "{}?USER_ID=1&MESSAGE={}",
        s.hook_url("im.notify.system.add"),
        "x".repeat(300)
    );
    s.get(&path).assert_error(414, "ERROR_REQUEST_TOO_LARGE");
    let ok = format!(
        "{}?USER_ID=1&MESSAGE=short",
        s.hook_url("im.notify.system.add")
    );
    assert_eq!(s.get(&ok).status, 200);
}

#[test]
fn oversized_heads_are_refused() {
    let s = Server::start_with(env(&[
        ("IMNOTIFY_LIMITS__MAX_HEADER_BYTES", "8192"),
        ("IMNOTIFY_LIMITS__MAX_HEADERS", "20"),
    ]));
    let big = "y".repeat(10_000);
    let r = s.request("GET", "/healthz", &[("X-Big", &big)], b"");
    assert_eq!(r.status, 431, "{}", r.body);
    let many: Vec<(String, String)> = (0..30).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = s.request("GET", "/healthz", &many, b"");
    assert_eq!(r.status, 431, "{}", r.body);
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn slow_heads_and_idle_connections_are_closed() {
    let s = Server::start_with(env(&[("IMNOTIFY_LIMITS__HEADER_READ_TIMEOUT_SECS", "1")]));
    // Slowloris: a head that never ends.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a").unwrap();
    let (_, took) = read_until_close(&mut slow, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "slow head kept open {took:?}"
    );
    // A kept-alive connection that sends nothing more.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (answer, took) = read_until_close(&mut idle, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "idle connection kept open {took:?}"
    );
    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(&s.addr).unwrap();
    let (_, took) = read_until_close(&mut silent, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "silent connection kept open {took:?}"
    );
}

#[test]
fn slow_bodies_get_408() {
    let s = Server::start_with(env(&[("IMNOTIFY_LIMITS__BODY_READ_TIMEOUT_SECS", "1")]));
    let mut t = TcpStream::connect(&s.addr).unwrap();
    write!(
        t,
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"USER_ID\":1,",
        s.hook_url("im.notify.system.add")
    )
    .unwrap();
    let (answer, took) = read_until_close(&mut t, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"REQUEST_TIMEOUT\""), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn openapi_describes_every_registered_method() {
    let s = Server::start();
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for spec in imnotify::app::registry().iter() {
        assert!(
            doc["paths"][format!("/rest/{}", spec.name)]["post"].is_object(),
            "{} undescribed",
            spec.name
        );
        assert!(
            doc["paths"][format!("/rest/{{user_id}}/{{webhook_code}}/{}", spec.name)]["get"]
                .is_object(),
            "{} webhook form undescribed",
            spec.name
        );
    }
}

#[test]
fn unsubscribe_links_are_behind_the_per_ip_gate_of_failed_authentications() {
    let s = Server::start_with(Options {
        limits: true,
        envs: vec![
            ("IMNOTIFY_LIMITS__FAILED_AUTH_BURST".into(), "5".into()),
            (
                "IMNOTIFY_LIMITS__FAILED_AUTH_PER_SECOND".into(),
                "0.01".into(),
            ),
        ],
        ..Options::default()
    });
    let fake = format!("/unsubscribe?u=1&s={}", "0".repeat(32));
    let statuses: Vec<u16> = (0..10).map(|_| s.get(&fake).status).collect();
    assert_eq!(statuses[0], 403, "{statuses:?}");
    assert_eq!(
        statuses[9], 503,
        "guessing links is not gated: {statuses:?}"
    );
    // It is the REST calls' gate: the address is refused there too.
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &serde_json::json!({"USER_ID": 1, "MESSAGE": "x"}),
    );
    assert_eq!(r.status, 503, "{}", r.body);
}
