//! Attacks on the page forms and the test-server toolkit (the second adversarial pass): each
//! test measures what the attack costs the server (peak RSS from /proc, the time to answer) and
//! fails on the code before its fix.
//!
//! Attackers connect from 127.0.0.2, as they would from another host.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::{csrf_from, Options, Response, Server};

fn pid(s: &Server) -> u32 {
    s.child.as_ref().expect("running").id()
}

/// The server's peak resident set so far (VmHWM), in KiB.
fn peak_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid(s))).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends one request from 127.0.0.2 and reads the answer. A server that answers before reading
/// the whole body may close the connection under the sender: the write error is ignored.
fn send_from_elsewhere(addr: &str, request: &[u8]) -> Response {
    use socket2::{Domain, Socket, Type};
    let target: SocketAddr = addr.parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local = SocketAddr::from(([127, 0, 0, 2], 0));
    socket.bind(&local.into()).unwrap();
    socket.connect(&target.into()).unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    Response::parse(&buf)
}

fn form_request(path: &str, cookie: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The notification center's forms (`/center/action`, `/center/lang`, `/center/email`) were read
/// and decoded up to `limits.max_body_bytes` (8 MB) before the session was looked at, and
/// outside the per-IP gate: 16 cookieless 6 MB posts at once cost the server over 100 MB.
/// Now the session is checked on the headers and the form is capped at 64 KiB.
#[test]
fn center_forms_check_the_session_before_the_body() {
    let s = Server::start_with(Options {
        limits: true,
        ..Options::default()
    });
    let before = peak_kib(&s);
    let mut body = b"action=read_all&text=".to_vec();
    body.resize(6 << 20, b'a');
    let body = std::sync::Arc::new(body);
    let workers: Vec<_> = ["/center/action", "/center/lang", "/center/email"]
        .iter()
        .cycle()
        .take(16)
        .map(|path| {
            let addr = s.addr.clone();
            let body = body.clone();
            thread::spawn(move || send_from_elsewhere(&addr, &form_request(path, None, &body)))
        })
        .collect();
    for w in workers {
        let r = w.join().unwrap();
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/login?next=/"));
    }
    let grew = peak_kib(&s).saturating_sub(before) / 1024;
    eprintln!("peak RSS grew by {grew} MiB");
    assert!(
        grew < 40,
        "16 cookieless 6 MB forms grew the peak RSS by {grew} MiB"
    );

    // A signed-in user's form is capped far below the REST body limit.
    let out = s.cli(&[
        "user",
        "password",
        "--id",
        "1",
        "--password",
        "forms-test-pw",
    ]);
    assert!(out.status.success());
    let cookie = s.sign_in("1", "forms-test-pw");
    let page = s.request("GET", "/", &[("Cookie", &cookie)], b"");
    let csrf = csrf_from(&page.body);
    let mut big = format!("csrf={csrf}&action=read_all&text=").into_bytes();
    big.resize(200 * 1024, b'a');
    let r = send_from_elsewhere(
        &s.addr,
        &form_request("/center/action", Some(&cookie), &big),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    // And an ordinary one still works.
    let small = format!("csrf={csrf}&action=read_all");
    let r = send_from_elsewhere(
        &s.addr,
        &form_request("/center/action", Some(&cookie), small.as_bytes()),
    );
    assert_eq!(r.status, 303, "{}", r.body);
}
