//! Push&Pull over HTTP (issue 13): `pull.config.get` (scopes, URLs not from `Host`, the signed
//! channel), and the long poll `/sub/` (first poll 304 with the head, 200 with framed messages,
//! held 304, bad channel 400, the key surviving a restart). The WebSocket side and the real
//! PullClient are in `tests/pull/run.sh`.

mod common;

use common::{Options, Server};
use serde_json::{json, Value};

fn config(s: &Server, hook: &str, method: &str, host: &str) -> Value {
    let r = s.request(
        "POST",
        &format!("{hook}{method}"),
        &[("Host", host), ("Content-Type", "application/json")],
        br#"{"CACHE":"N"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"].clone()
}

fn poll(s: &Server, channel: &str, mid: Option<&str>) -> common::Response {
    let enc: String = form_urlencoded::byte_serialize(channel.as_bytes()).collect();
    let mid = mid.map(|m| format!("&mid={m}")).unwrap_or_default();
    s.get(&format!("/sub/?CHANNEL_ID={enc}&revision=19{mid}"))
}

#[test]
fn config_needs_its_scope_and_names_the_server_not_the_host_header() {
    let s = Server::start();
    // The first-start webhook has only `im`.
    let r = s.post_json(&s.hook_url("pull.config.get"), &json!({}));
    r.assert_error(403, "insufficient_scope");
    let hook = s.add_webhook(1, "im,pull_channel");
    let c = config(&s, &hook, "pull.config.get", "evil.example");
    let ws = c["server"]["websocket"].as_str().unwrap();
    assert_eq!(ws, format!("ws://{}/subws/", s.addr), "{c}");
    assert_eq!(c["server"]["long_polling"], format!("{}/sub/", s.base));
    assert_eq!(c["server"]["version"], 3);
    assert!(c["server"]["config_timestamp"].is_i64());
    assert_eq!(c["api"]["revision_web"], 19);
    let id = c["channels"]["private"]["id"].as_str().unwrap();
    assert!(
        id.len() == 73 && id.as_bytes()[32] == b'.',
        "signed id {id}"
    );
    assert!(c["exp"].as_i64().unwrap() > 43_000 + chrono_now());
    // The application method needs `pull`, and gives a webhook the same private channel.
    let r = s.post_json(&format!("{hook}pull.application.config.get"), &json!({}));
    r.assert_error(403, "insufficient_scope");
    let both = s.add_webhook(1, "im,pull");
    let a = config(&s, &both, "pull.application.config.get", &s.addr);
    assert_eq!(a["channels"]["private"]["type"], "private");
    // The channel id never reaches the log.
    assert!(!s.log().contains(&id[..32]), "channel id logged");
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn long_poll_answers_304_with_the_head_then_framed_messages() {
    let s = Server::start_with(Options {
        // Holds last three heartbeats (capped at 40 s): 3 s here.
        envs: vec![("IMNOTIFY_EVENTS__HEARTBEAT_SECONDS".into(), "1".into())],
        ..Options::default()
    });
    let hook = s.add_webhook(1, "im,pull_channel");
    let c = config(&s, &hook, "pull.config.get", &s.addr);
    let channel = c["channels"]["private"]["id"].as_str().unwrap().to_owned();

    // A tampered signature: no messages.
    let mut bad = channel.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
    assert_eq!(
        poll(&s, std::str::from_utf8(&bad).unwrap(), None).status,
        400
    );

    let before = s.notify(json!({"USER_ID": 1, "MESSAGE": "before"}));
    // First poll without mid: at once, 304 with the head.
    let first = poll(&s, &channel, None);
    assert_eq!(first.status, 304);
    assert_eq!(
        first.header("expires"),
        Some("Thu, 01 Jan 1973 11:11:01 GMT")
    );
    let head = first.header("last-message-id").unwrap().to_owned();
    assert_eq!(head.len(), 26);

    // Nothing new: held, then 304 with the same mid, never 200 with an empty body.
    let t = std::time::Instant::now();
    let idle = poll(&s, &channel, Some(&head));
    assert_eq!(idle.status, 304, "{}", idle.body);
    assert!(t.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(idle.header("last-message-id"), Some(head.as_str()));

    let id = s.notify(json!({"USER_ID": 1, "MESSAGE": "a#!NGINXNME!#b\u{2028}"}));
    let got = poll(&s, &channel, Some(&head));
    assert_eq!(got.status, 200);
    let inner = got
        .body
        .strip_prefix("#!NGINXNMS!#")
        .and_then(|b| b.strip_suffix("#!NGINXNME!#"))
        .unwrap_or_else(|| panic!("one framed message: {}", got.body));
    assert!(
        !inner.contains('#') && !inner.contains('\u{2028}'),
        "{inner}"
    );
    let m: Value = serde_json::from_str(inner).unwrap();
    assert_eq!(m["text"]["module_id"], "im");
    assert_eq!(m["text"]["command"], "notifyAdd");
    assert_eq!(m["text"]["params"]["id"], id);
    assert_eq!(m["text"]["params"]["text"], "a#!NGINXNME!#b\u{2028}");
    assert_eq!(m["text"]["params"]["counter"], 2);
    let mid = m["mid"].as_str().unwrap().to_owned();
    assert!(mid > head);

    // Replay from mid 0 gives both, oldest first; the key survives a restart.
    let mut s = s;
    s.terminate();
    s.restart();
    let all = poll(&s, &channel, Some(&"0".repeat(26)));
    assert_eq!(all.status, 200, "{}", all.body);
    let ids: Vec<i64> = all
        .body
        .split("#!NGINXNME!#")
        .filter_map(|p| p.strip_prefix("#!NGINXNMS!#"))
        .map(|j| {
            serde_json::from_str::<Value>(j).unwrap()["text"]["params"]["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![before, id]);
}

/// Reads from a WebSocket until the server's close frame; returns its close code. Server
/// frames are unmasked: `0x88, len, code_hi, code_lo, reason...` (pings, `0x89`, are skipped).
fn ws_close_code(sock: &mut std::net::TcpStream, limit: std::time::Duration) -> Option<u16> {
    use std::io::Read;
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let until = std::time::Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::new();
    while std::time::Instant::now() < until {
        let mut chunk = [0u8; 1024];
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        // Walk the frames read so far.
        let mut at = 0;
        while at + 2 <= buf.len() {
            let (op, len) = (buf[at] & 0x0f, (buf[at + 1] & 0x7f) as usize);
            if at + 2 + len > buf.len() {
                break;
            }
            if op == 0x8 && len >= 2 {
                return Some(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
            }
            at += 2 + len;
        }
    }
    None
}

#[test]
fn a_deactivated_users_channel_is_refused_and_its_open_socket_closed() {
    let s = Server::start();
    s.add_user(2, &[]);
    let hook = s.add_webhook(2, "im,pull_channel");
    let c = config(&s, &hook, "pull.config.get", &s.addr);
    let channel = c["channels"]["private"]["id"].as_str().unwrap().to_owned();
    assert_eq!(poll(&s, &channel, None).status, 304);

    let mut sock = open_socket(&s, &channel);
    // Open and quiet while the user is active.
    assert_eq!(
        ws_close_code(&mut sock, std::time::Duration::from_millis(2500)),
        None
    );

    let out = s.cli(&["user", "deactivate", "--id", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The socket re-checks every 2 s: closed with 4010 (WRONG_CHANNEL_ID) well within 10 s,
    // long before the channel's 12 h end.
    assert_eq!(
        ws_close_code(&mut sock, std::time::Duration::from_secs(10)),
        Some(4010)
    );
    // A new poll with the same, still unexpired, channel is refused.
    assert_eq!(poll(&s, &channel, None).status, 400);
}

/// Opens `/subws/` on `channel` and returns the socket after the 101.
fn open_socket(s: &Server, channel: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let enc: String = form_urlencoded::byte_serialize(channel.as_bytes()).collect();
    let mut sock = std::net::TcpStream::connect(&s.addr).unwrap();
    write!(
        sock,
        "GET /subws/?CHANNEL_ID={enc}&revision=19 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        s.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        sock.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    sock
}

/// Issue 15: a channel is bound to the credential that asked for it. Revoking a webhook, or
/// every token of an application, ends its channels (open sockets within the 2 s re-check plus
/// the webhook cache's 1 s) while the user stays active; another credential's channel lives on.
#[test]
fn revoking_the_credential_ends_its_channels_but_not_the_others() {
    let s = Server::start();
    s.add_user(2, &[]);
    let hook = s.add_webhook(2, "im,pull_channel");
    let by_hook = config(&s, &hook, "pull.config.get", &s.addr)["channels"]["private"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let app: Value = serde_json::from_str(&s.cli_ok(&[
        "app",
        "add",
        "--name",
        "Chat",
        "--scope",
        "im,pull_channel",
        "--json",
    ]))
    .unwrap();
    let token: Value = serde_json::from_str(&s.cli_ok(&[
        "app",
        "token",
        "--client-id",
        app["client_id"].as_str().unwrap(),
        "--user-id",
        "2",
        "--json",
    ]))
    .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    let r = s.request(
        "POST",
        "/rest/pull.config.get",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ],
        br#"{"CACHE":"N"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let by_token = r.json()["result"]["channels"]["private"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(poll(&s, &by_hook, None).status, 304);
    assert_eq!(poll(&s, &by_token, None).status, 304);
    let mut sock = open_socket(&s, &by_hook);
    assert_eq!(
        ws_close_code(&mut sock, std::time::Duration::from_millis(2500)),
        None
    );

    let list: Value =
        serde_json::from_str(&s.cli_ok(&["webhook", "list", "--user-id", "2", "--json"])).unwrap();
    s.cli_ok(&["webhook", "revoke", "--id", &list[0]["id"].to_string()]);
    assert_eq!(
        ws_close_code(&mut sock, std::time::Duration::from_secs(10)),
        Some(4010)
    );
    assert_eq!(poll(&s, &by_hook, None).status, 400);
    // The user is active and the application's token good: its channel still works.
    assert_eq!(poll(&s, &by_token, None).status, 304);

    s.cli_ok(&["token", "revoke", "--user-id", "2"]);
    assert_eq!(poll(&s, &by_token, None).status, 400);
}

/// An address whose bad channels filled its failure bucket gets 503 from `/sub/` (the per-IP
/// gate of REST calls), and that refusal is logged at WARN like the REST limits' refusals,
/// not at ERROR like a failure.
#[test]
fn a_gated_address_is_refused_and_logged_as_a_warning_not_an_error() {
    let s = Server::start_with(Options {
        limits: true,
        envs: common::envs(&[
            ("IMNOTIFY_LIMITS__FAILED_AUTH_BURST", "3"),
            ("IMNOTIFY_LIMITS__FAILED_AUTH_PER_SECOND", "0.01"),
        ]),
        ..Options::default()
    });
    let bad = format!("{}.{}", "0".repeat(32), "0".repeat(40));
    let statuses: Vec<u16> = (0..6).map(|_| poll(&s, &bad, None).status).collect();
    assert_eq!(statuses[0], 400, "{statuses:?}");
    assert_eq!(statuses[5], 503, "{statuses:?}");
    let warned = |l: &str| l.contains("\"level\":\"WARN\"") && l.contains("\"status\":503");
    let log = s.log_with(warned);
    assert!(log.lines().any(warned), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}

/// A long poll over the user's stream cap gets 503, and that refusal of a limit is logged at
/// WARN, not at ERROR (atk7: a client polling in a loop at its cap wrote an ERROR line a poll).
#[test]
fn a_poll_over_the_stream_cap_is_logged_as_a_warning_not_an_error() {
    let s = Server::start_with(Options {
        envs: common::envs(&[("IMNOTIFY_EVENTS__MAX_STREAMS_PER_USER", "4")]),
        ..Options::default()
    });
    s.add_user(2, &[]);
    let hook = s.add_webhook(2, "im,pull_channel");
    let channel = config(&s, &hook, "pull.config.get", &s.addr)["channels"]["private"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Every place the user's webhook streams may take (the sockets past them are closed).
    let _held: Vec<_> = (0..4).map(|_| open_socket(&s, &channel)).collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(poll(&s, &channel, None).status, 503);
    let warned = |l: &str| l.contains("\"level\":\"WARN\"") && l.contains("\"status\":503");
    let log = s.log_with(warned);
    assert!(log.lines().any(warned), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}
