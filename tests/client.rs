//! The Rust client (`crates/imnotify-client`) against the real server binary, against recorded
//! answers of a real Bitrix24 portal served by a local stub, and `imnotify send` (issue 17).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imnotify_client::attach::{Attach, Block, GridItem};
use imnotify_client::testing::Server;
use imnotify_client::{
    Client, Command, Delete, Error, ErrorCode, GetQuery, Notify, OAuth, Output, RetryPolicy, Tokens,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_imnotify");

fn start() -> Server {
    Server::start().expect("starting imnotify serve")
}

fn cli(s: &Server, args: &[&str]) -> Value {
    let out = Process::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(s.data_dir())
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn admin(s: &Server, path: &str, body: Value) -> Value {
    let token = s.admin_token.as_deref().expect("an admin token");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("{}{path}", s.base))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    assert!(status == 200 || status == 201, "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

fn faults(s: &Server) -> Value {
    let token = s.admin_token.as_deref().unwrap();
    let mut r = ureq::get(&format!("{}/admin/api/faults", s.base))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// A client on a second webhook of user 1 with the scopes `im` and `user` (the first-start
/// webhook has `im` only, and `user.get` needs `user`).
fn client_with_user_scope(s: &Server) -> Client {
    let out = Process::new(BIN)
        .args([
            "webhook",
            "add",
            "--user-id",
            "1",
            "--scope",
            "im,user",
            "--data-dir",
        ])
        .arg(s.data_dir())
        .output()
        .unwrap();
    let url = String::from_utf8(out.stdout).unwrap();
    let path = &url.trim()[url.find("/rest/").expect("a webhook URL")..];
    Client::builder()
        .webhook(&format!("{}{path}", s.base))
        .rate_limit(0, 0)
        .build()
        .unwrap()
}

fn api_code(r: Result<impl std::fmt::Debug, Error>) -> (ErrorCode, u16) {
    match r {
        Err(Error::Api { code, status, .. }) => (code, status),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn every_method_by_webhook() {
    let s = start();
    cli(&s, &["user", "add", "--id", "2", "--name", "Bob"]);
    let c = client_with_user_scope(&s);

    let attach = Attach::new(vec![
        Block::message("Build failed").unwrap(),
        Block::grid(vec![GridItem::new(
            imnotify_client::attach::Display::Line,
            "Branch",
            "main",
        )
        .unwrap()])
        .unwrap(),
    ])
    .unwrap();
    let first = c
        .system_add(
            &Notify::new(1, "first")
                .message_out("first by mail")
                .tag("t1")
                .sub_tag("s1")
                .attach(attach.clone()),
        )
        .unwrap();
    let second = c.personal_add(&Notify::new(1, "second")).unwrap();
    assert!(second > first);
    // The recipient does not exist: result false, a typed error.
    assert_eq!(
        api_code(c.system_add(&Notify::new(99, "nobody"))).0,
        ErrorCode::UserNotExists
    );
    // A method error with its catalogue status and description.
    match c.system_add(&Notify::new(1, "  ")) {
        Err(Error::Api {
            code: ErrorCode::MessageEmpty,
            status: 400,
            description,
        }) => assert_eq!(description, "Message can't be empty"),
        other => panic!("{other:?}"),
    }

    let page = c.get(&GetQuery::default()).unwrap();
    let ids: Vec<u64> = page.notifications.iter().map(|n| n.id).collect();
    assert_eq!(ids, [second, first]);
    assert_eq!(page.total_unread_count, 2);
    let stored = &page.notifications[1];
    assert!(!stored.read());
    // The stored ATTACH reads back as the wire types: the blocks the builders made.
    let read_back: Attach =
        serde_json::from_value(stored.extra["params"]["ATTACH"][0].clone()).unwrap();
    assert_eq!(read_back.blocks, attach.blocks);
    let one = c
        .get(&GetQuery {
            limit: Some(1),
            ..GetQuery::default()
        })
        .unwrap();
    assert_eq!(one.notifications.len(), 1);

    assert_eq!(c.counters().unwrap().notify, 2);
    assert!(c.read(first, true, true).unwrap());
    assert_eq!(c.counters().unwrap().notify, 1);
    assert!(c.read(first, false, true).unwrap());
    assert_eq!(c.counters().unwrap().notify, 2);
    assert!(c.read_all().unwrap());
    assert_eq!(c.counters().unwrap().notify, 0);

    assert!(c.delete(&Delete::Id(second)).unwrap());
    assert!(!c.delete(&Delete::Id(second)).unwrap());
    // By tag needs the webhook's CLIENT_ID namespace; without it the server refuses.
    assert_eq!(
        api_code(c.delete(&Delete::Tag {
            tag: "t1".into(),
            client_id: None
        })),
        (ErrorCode::AccessDenied, 403)
    );
    let tagged = c
        .system_add(&Notify::new(2, "tagged").tag("deploy"))
        .unwrap();
    assert!(tagged > 0);
    assert!(c
        .delete(&Delete::SubTag {
            sub_tag: "nothing".into(),
            client_id: Some("ci".into())
        })
        .unwrap());

    let users = c.user_get(json!({"ID": 2})).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].id, users[0].name.as_deref()), (2, Some("Bob")));
    assert!(users[0].active);
    assert_eq!(c.user_get(json!({})).unwrap().len(), 2);
}

#[test]
fn batch_gives_each_command_its_typed_result_or_error() {
    let s = start();
    let c = client_with_user_scope(&s);
    let out = c
        .batch(
            &[
                ("add", Command::SystemAdd(Notify::new(1, "in a batch"))),
                ("empty", Command::SystemAdd(Notify::new(1, ""))),
                ("count", Command::Counters),
                ("list", Command::Get(GetQuery::default())),
                ("who", Command::UserGet(json!({"ID": 1}))),
                ("readall", Command::ReadAll),
            ],
            false,
        )
        .unwrap();
    let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["add", "empty", "count", "list", "who", "readall"]);
    let Ok(Output::Id(id)) = out[0].1 else {
        panic!("{:?}", out[0])
    };
    match &out[1].1 {
        Err(Error::Api {
            code: ErrorCode::MessageEmpty,
            status: 400,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[2].1, Ok(Output::Counters(c)) if c.notify == 1));
    assert!(matches!(&out[3].1, Ok(Output::List(l)) if l.notifications[0].id == id));
    assert!(matches!(&out[4].1, Ok(Output::Users(u)) if u[0].id == 1));
    assert!(matches!(&out[5].1, Ok(Output::Bool(true))));

    // With halt, the commands after the failure are not run and not reported.
    let halted = c
        .batch(
            &[
                ("bad", Command::SystemAdd(Notify::new(1, ""))),
                ("never", Command::SystemAdd(Notify::new(1, "never"))),
            ],
            true,
        )
        .unwrap();
    assert_eq!(halted.len(), 1);
    assert_eq!(c.counters().unwrap().notify, 0);
}

#[test]
fn oauth_refreshes_an_expired_token_and_hands_over_the_new_pair() {
    let s = start();
    let app = cli(
        &s,
        &["app", "add", "--name", "Client", "--scope", "im", "--json"],
    );
    let client_id = app["client_id"].as_str().unwrap();
    let client_secret = app["client_secret"].as_str().unwrap();
    let t = cli(
        &s,
        &[
            "app",
            "token",
            "--client-id",
            client_id,
            "--user-id",
            "1",
            "--json",
        ],
    );
    let first = Tokens {
        access_token: t["access_token"].as_str().unwrap().into(),
        refresh_token: t["refresh_token"].as_str().unwrap().into(),
    };
    let seen: Arc<Mutex<Vec<Tokens>>> = Arc::default();
    let hook = seen.clone();
    let c = Client::builder()
        .oauth(
            OAuth::new(
                &format!("{}/rest/", s.base),
                &format!("{}/oauth/token/", s.base),
                client_id,
                client_secret,
                first.clone(),
            )
            .on_refresh(move |t| hook.lock().unwrap().push(t.clone())),
        )
        .rate_limit(0, 0)
        .build()
        .unwrap();
    assert!(c.system_add(&Notify::new(1, "by oauth")).unwrap() > 0);
    assert!(seen.lock().unwrap().is_empty());

    // An hour and a second later the access token has expired; the refresh token has not.
    admin(&s, "/admin/api/clock", json!({"advance_seconds": 3601}));
    assert!(c.system_add(&Notify::new(1, "after expiry")).unwrap() > 0);
    let seen_count = || seen.lock().unwrap().len();
    let pairs = seen.lock().unwrap().clone();
    assert_eq!(pairs.len(), 1, "one refresh");
    assert_ne!(pairs[0], first);
    assert_eq!(c.tokens(), Some(pairs[0].clone()));
    assert_eq!(c.counters().unwrap().notify, 2);

    // Clones share the pair: when several calls meet the expiry at once, one refreshes and the
    // others use its pair (a second exchange of the single-use refresh token would fail). A
    // call refused while the refresh is still reading its answer (the server has revoked the
    // old token by then) waits for the new pair rather than report `invalid_token`; several
    // rounds of eight make that window likely to be hit.
    for round in 1..=5 {
        admin(&s, "/admin/api/clock", json!({"advance_seconds": 3601}));
        let together = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, together) = (c.clone(), together.clone());
                std::thread::spawn(move || {
                    together.wait();
                    c.counters().map(|n| n.notify)
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), 2, "round {round}");
        }
        assert_eq!(
            seen_count(),
            1 + round,
            "one more refresh for all eight calls"
        );
    }

    // A client still holding the old pair cannot refresh (the refresh token was used).
    let stale = Client::builder()
        .oauth(OAuth::new(
            &format!("{}/rest/", s.base),
            &format!("{}/oauth/token/", s.base),
            client_id,
            client_secret,
            first,
        ))
        .build()
        .unwrap();
    assert_eq!(
        api_code(stale.counters()).0.kind(),
        imnotify_client::ErrorKind::Auth
    );
}

#[test]
fn query_limit_exceeded_is_retried_and_then_reported() {
    let s = start();
    let c = s.client();
    admin(
        &s,
        "/admin/api/faults",
        json!({"method": "im.notify.system.add", "error": "QUERY_LIMIT_EXCEEDED", "times": 3}),
    );
    // Not idempotent (no tag), yet retried: the server refused before running it.
    let id = c
        .system_add(&Notify::new(1, "after three refusals"))
        .unwrap();
    assert!(id > 0);
    let f = faults(&s)["faults"][0].clone();
    assert_eq!(
        (f["hits"].as_u64(), f["remaining"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(c.counters().unwrap().notify, 1);

    admin(
        &s,
        "/admin/api/faults",
        json!({"method": "im.counters.get", "error": "QUERY_LIMIT_EXCEEDED", "times": 10}),
    );
    let quick = Client::builder()
        .webhook(&s.webhook)
        .rate_limit(0, 0)
        .retry(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    assert_eq!(
        api_code(quick.counters()),
        (ErrorCode::QueryLimitExceeded, 503)
    );
    let f = faults(&s)["faults"][1].clone();
    assert_eq!(f["hits"].as_u64(), Some(3), "one call and two retries");
}

/// A stub HTTP server: answers each request with the next canned (status, body) and records
/// the request line and body. `None` closes the connection without answering.
struct Stub {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
}

fn stub(answers: Vec<Option<(u16, String)>>) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut answers = answers.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            while let Some(request) = read_request(&mut conn) {
                log.lock().unwrap().push(request);
                let Some(answer) = answers.next() else { return };
                let Some((status, body)) = answer else {
                    break; // drop the connection unanswered
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                if conn.write_all(head.as_bytes()).is_err()
                    || conn.write_all(body.as_bytes()).is_err()
                {
                    break;
                }
            }
        }
    });
    Stub { base, seen }
}

fn read_request(conn: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut first = String::new();
    if reader.read_line(&mut first).ok()? == 0 {
        return None;
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(format!(
        "{}{}",
        first.trim_end(),
        String::from_utf8_lossy(&body)
    ))
}

fn stub_client(s: &Stub, retry: RetryPolicy) -> Client {
    Client::builder()
        .webhook(&format!("{}/rest/1/k2q8w0d7r1m5x9zt/", s.base))
        .rate_limit(0, 0)
        .retry(retry)
        .build()
        .unwrap()
}

fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    }
}

/// The method page's success answer (im.notify.system.add, "Response Handling").
const PORTAL_ADD: &str = r#"{
            "result": 12345,
            "time": {
                "start": 1760000000.0,
                "finish": 1760000000.1,
                "duration": 0.1,
                "processing": 0.04,
                "date_start": "2026-03-02T09:30:00+01:00",
                "date_finish": "2026-03-02T09:30:00+01:00",
                "operating_reset_at": 1760030000,
                "operating": 0
            }
        }"#;

#[test]
fn recorded_portal_answers_read_the_same_way() {
    let s = stub(vec![
        Some((200, PORTAL_ADD.into())),
        Some((
            400,
            r#"{"error":"USER_ID_EMPTY","error_description":"User ID can't be empty"}"#.into(),
        )),
        Some((
            403,
            r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the webhook token"}"#
                .into(),
        )),
        // A batch answer in the documented shape: PHP's empty maps as [], one failed command.
        Some((
            200,
            r#"{"result":{"result":{"a":12346,"c":{"TYPE":{"ALL":1,"NOTIFY":1,"CHAT":0},"CHAT":[],"DIALOG":[]}},
                "result_error":{"b":{"error":"MESSAGE_EMPTY","error_description":"Message can't be empty"}},
                "result_total":[],"result_next":[],
                "result_time":{"a":{"start":1760000000,"finish":1760000000.01,"duration":0.01,"processing":0.01,
                  "date_start":"2026-03-02T09:30:00+01:00","date_finish":"2026-03-02T09:30:00+01:00",
                  "operating_reset_at":1760000600,"operating":0}}},
              "time":{"start":1760000000,"finish":1760000000.02,"duration":0.02,"processing":0.02,
                "date_start":"2026-03-02T09:30:00+01:00","date_finish":"2026-03-02T09:30:00+01:00",
                "operating_reset_at":1760000600,"operating":0}}"#
                .into(),
        )),
        // read.all's documented object result on the newest portals.
        Some((200, r#"{"result":{"result":true,"newCounter":0},"time":{}}"#.into())),
        // A proxy's page: not the envelope.
        Some((502, "<html>Bad gateway</html>".into())),
    ]);
    let c = stub_client(&s, quick_retry());
    assert_eq!(c.system_add(&Notify::new(1, "hello")).unwrap(), 12345);
    match c.system_add(&Notify::new(0, "hello")) {
        Err(Error::Api {
            code: ErrorCode::UserIdEmpty,
            status: 400,
            description,
        }) => assert_eq!(description, "User ID can't be empty"),
        other => panic!("{other:?}"),
    }
    let (code, status) = api_code(c.counters());
    assert_eq!((code.clone(), status), (ErrorCode::InsufficientScope, 403));
    assert_eq!(code.kind(), imnotify_client::ErrorKind::Auth);
    let out = c
        .batch(
            &[
                ("a", Command::SystemAdd(Notify::new(1, "a"))),
                ("b", Command::SystemAdd(Notify::new(1, ""))),
                ("c", Command::Counters),
            ],
            false,
        )
        .unwrap();
    assert!(matches!(out[0].1, Ok(Output::Id(12346))));
    assert!(matches!(&out[1].1, Err(e) if e.code() == Some(&ErrorCode::MessageEmpty)));
    assert!(matches!(&out[2].1, Ok(Output::Counters(c)) if c.notify == 1));
    assert!(c.read_all().unwrap());
    assert!(matches!(
        c.counters(),
        Err(Error::Decode { status: 502, .. })
    ));

    let seen = s.seen.lock().unwrap();
    assert!(
        seen[0].starts_with("POST /rest/1/k2q8w0d7r1m5x9zt/im.notify.system.add.json"),
        "{}",
        seen[0]
    );
    let batch: Value = serde_json::from_str(&seen[3][seen[3].find('{').unwrap()..]).unwrap();
    assert_eq!(batch["cmd"]["b"], "im.notify.system.add?USER_ID=1&MESSAGE=");
}

#[test]
fn expired_token_answer_refreshes_by_the_documented_token_request() {
    // The portal says expired_token; the OAuth server answers the refresh with a new pair in
    // the documented shape; the call is repeated with the new token.
    let portal = stub(vec![
        Some((
            401,
            r#"{"error":"expired_token","error_description":"The access token provided has expired"}"#
                .into(),
        )),
        Some((200, PORTAL_ADD.into())),
    ]);
    let oauth = stub(vec![Some((
        200,
        r#"{"access_token":"s6p6eclrvim6da22ft9ch94ekreb52lv","expires":1760003600,"expires_in":3600,
            "scope":"app","domain":"oauth.bitrix.info","server_endpoint":"https://oauth.bitrix.info/rest/",
            "status":"L","client_endpoint":"https://example.bitrix24.com/rest/","member_id":"a223c6b3710f85df22e9377d6c4f7553",
            "user_id":1,"refresh_token":"4s386p3q0tr8dy89xvmt96234v3dljg8"}"#
            .into(),
    ))]);
    let seen: Arc<Mutex<Vec<Tokens>>> = Arc::default();
    let hook = seen.clone();
    let c = Client::builder()
        .oauth(
            OAuth::new(
                &format!("{}/rest", portal.base),
                &format!("{}/oauth/token/", oauth.base),
                "local.5f0d",
                "s3cr3t",
                Tokens {
                    access_token: "old-access".into(),
                    refresh_token: "old-refresh".into(),
                },
            )
            .on_refresh(move |t| hook.lock().unwrap().push(t.clone())),
        )
        .rate_limit(0, 0)
        .build()
        .unwrap();
    assert_eq!(c.system_add(&Notify::new(1, "hi")).unwrap(), 12345);
    let new = Tokens {
        access_token: "s6p6eclrvim6da22ft9ch94ekreb52lv".into(),
        refresh_token: "4s386p3q0tr8dy89xvmt96234v3dljg8".into(),
    };
    assert_eq!(*seen.lock().unwrap(), std::slice::from_ref(&new));
    let calls = portal.seen.lock().unwrap();
    assert!(calls[0].contains(r#""auth":"old-access""#), "{}", calls[0]);
    assert!(calls[1].contains(&format!(r#""auth":"{}""#, new.access_token)));
    let token_call = &oauth.seen.lock().unwrap()[0];
    assert!(
        token_call.starts_with("GET /oauth/token/?grant_type=refresh_token&client_id=local.5f0d&client_secret=s3cr3t&refresh_token=old-refresh "),
        "{token_call}"
    );
}

#[test]
fn broken_connections_are_retried_only_for_idempotent_calls() {
    let counters = r#"{"result":{"TYPE":{"ALL":0,"NOTIFY":4}},"time":{}}"#;
    let s = stub(vec![None, None, Some((200, counters.into()))]);
    let c = stub_client(&s, quick_retry());
    assert_eq!(c.counters().unwrap().notify, 4);
    assert_eq!(s.seen.lock().unwrap().len(), 3);

    // An add without a tag may have been stored before the connection broke: not repeated.
    let s = stub(vec![None, Some((200, PORTAL_ADD.into()))]);
    let c = stub_client(&s, quick_retry());
    assert!(matches!(
        c.system_add(&Notify::new(1, "once")),
        Err(Error::Network(_))
    ));
    assert_eq!(s.seen.lock().unwrap().len(), 1);
    // A webhook's TAG without CLIENT_ID is ignored by the server (D3): a repeat would
    // duplicate, so it is not repeated either.
    let s = stub(vec![None, Some((200, PORTAL_ADD.into()))]);
    let c = stub_client(&s, quick_retry());
    assert!(matches!(
        c.system_add(&Notify::new(1, "once").tag("t")),
        Err(Error::Network(_))
    ));
    assert_eq!(s.seen.lock().unwrap().len(), 1);
    // With the tag kept (CLIENT_ID names its namespace) a repeat replaces the first copy, so it
    // is retried.
    let s = stub(vec![None, Some((200, PORTAL_ADD.into()))]);
    let c = stub_client(&s, quick_retry());
    assert_eq!(
        c.system_add(&Notify::new(1, "once").tag("t").client_id("ci"))
            .unwrap(),
        12345
    );
    assert_eq!(s.seen.lock().unwrap().len(), 2);
}

#[test]
fn the_client_side_limiter_spaces_calls_beyond_the_burst() {
    let answer = r#"{"result":true,"time":{}}"#;
    let s = stub((0..5).map(|_| Some((200, answer.to_owned()))).collect());
    let c = Client::builder()
        .webhook(&format!("{}/rest/1/code/", s.base))
        .rate_limit(4, 2)
        .build()
        .unwrap();
    let began = Instant::now();
    for _ in 0..5 {
        assert!(c.read_all().unwrap());
    }
    // Two at once, then one every 0.25 s: at least 0.75 s (a lower bound: load only adds).
    assert!(
        began.elapsed() >= Duration::from_millis(700),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let e = Client::from_webhook("http://portal.example/rest/1/code/").err();
    assert!(matches!(e, Some(Error::Config(_))), "{e:?}");
    assert!(Client::from_webhook("https://portal.example/rest/1/code/").is_ok());
}

fn send(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Process::new(BIN);
    cmd.arg("send").args(args).env_remove("IMNOTIFY_WEBHOOK");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn send_prints_the_id_or_the_answer_and_exits_by_the_kind_of_failure() {
    let s = start();
    let hook = s.webhook.as_str();
    let (code, out, err) = send(&["--webhook", hook, "--user", "1", "--message", "hi"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    let id: u64 = out.parse().expect("the new id");

    let dir = tempfile::tempdir().unwrap();
    let attach = dir.path().join("attach.json");
    std::fs::write(&attach, r#"[{"MESSAGE":"from a file"},{"DELIMITER":{}}]"#).unwrap();
    let (code, out, _) = send(
        &[
            "--user",
            "1",
            "--message",
            "with [b]all[/b]",
            "--message-out",
            "with all",
            "--tag",
            "T",
            "--sub-tag",
            "S",
            "--client-id",
            "ci",
            "--attach",
            attach.to_str().unwrap(),
            "--json",
        ],
        &[("IMNOTIFY_WEBHOOK", hook)],
    );
    assert_eq!(code, 0, "{out}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["result"].as_u64(), Some(id + 1));
    assert!(answer["time"]["operating_reset_at"].is_i64(), "{answer}");
    let page = s.client().get(&GetQuery::default()).unwrap();
    let n = &page.notifications[0];
    assert_eq!(n.id, id + 1);
    // With --client-id a webhook's tag is kept (D3), namespaced.
    let tag = n.notify_tag.as_deref().unwrap_or_default();
    assert!(tag.starts_with("MP|") && tag.ends_with("|T"), "{tag:?}");
    assert_eq!(
        n.extra["params"]["ATTACH"][0]["BLOCKS"][0]["MESSAGE"],
        "from a file"
    );

    let expect = |args: &[&str], want: i32, code_text: &str| {
        let (code, out, err) = send(args, &[]);
        assert_eq!(code, want, "{args:?}: {out} {err}");
        assert!(err.contains(code_text), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    // 1: the server refused the call.
    expect(
        &["--webhook", hook, "--user", "1", "--message", " "],
        1,
        "MESSAGE_EMPTY (400)",
    );
    expect(
        &[
            "--webhook",
            hook,
            "--user",
            "1",
            "--message",
            "x",
            "--attach",
            attach
                .to_str()
                .unwrap()
                .replace("attach.json", "bad.json")
                .as_str(),
        ],
        2,
        "--attach",
    );
    std::fs::write(dir.path().join("invalid.json"), r#"[{"NOTHING":1}]"#).unwrap();
    expect(
        &[
            "--webhook",
            hook,
            "--user",
            "1",
            "--message",
            "x",
            "--attach",
            dir.path().join("invalid.json").to_str().unwrap(),
        ],
        1,
        "ATTACH_ERROR",
    );
    // The recipient does not exist: the server answers `false`, refused like a method error.
    expect(
        &["--webhook", hook, "--user", "999", "--message", "x"],
        1,
        "USER_NOT_EXISTS",
    );
    // 2: usage.
    let (code, _, err) = send(&["--user", "1", "--message", "x"], &[]);
    assert_eq!(code, 2, "no webhook");
    assert!(
        err.contains("--webhook") && err.contains("IMNOTIFY_WEBHOOK"),
        "the error names both the flag and the variable: {err}"
    );
    let (code, _, _) = send(&["--webhook", hook, "--user", "one", "--message", "x"], &[]);
    assert_eq!(code, 2, "a bad user id");
    expect(
        &[
            "--webhook",
            "http://portal.example/rest/1/x/",
            "--user",
            "1",
            "--message",
            "x",
        ],
        2,
        "https://",
    );
    // The server's address instead of its webhook: the path names no credential.
    expect(
        &["--webhook", &s.base, "--user", "1", "--message", "x"],
        2,
        "not a webhook URL",
    );
    // 3: the credential.
    let wrong = format!("{}/rest/1/wrongcodewrongcode/", s.base);
    expect(
        &["--webhook", &wrong, "--user", "1", "--message", "x"],
        3,
        "INVALID_CREDENTIALS (403)",
    );
    // 4: a limit (more refusals than the command retries).
    admin(
        &s,
        "/admin/api/faults",
        json!({"method": "im.notify.system.add", "error": "QUERY_LIMIT_EXCEEDED", "times": 10}),
    );
    expect(
        &["--webhook", hook, "--user", "1", "--message", "x"],
        4,
        "QUERY_LIMIT_EXCEEDED (503)",
    );
    // 5: nobody listens.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    expect(
        &[
            "--webhook",
            &format!("http://{closed}/rest/1/x/"),
            "--user",
            "1",
            "--message",
            "x",
        ],
        5,
        "network error",
    );
}

/// Two URL mistakes a newcomer makes with `send` are named as such: the URL of one call pasted
/// whole (the method after the code) is a usage error saying where a webhook URL ends, not the
/// server's ERROR_METHOD_NOT_FOUND; `https://` to a plain-HTTP server gets a hint after rustls's
/// "InvalidContentType". Nothing is sent either way.
#[test]
fn send_names_a_method_pasted_into_the_url_and_https_to_plain_http() {
    let s = start();
    let hook = s.webhook.as_str();
    for tail in [
        "im.notify.system.add",
        "im.notify.system.add.json/",
        "im.notify.get/x",
    ] {
        let (code, _, err) = send(
            &[
                "--webhook",
                &format!("{hook}{tail}"),
                "--user",
                "1",
                "--message",
                "x",
            ],
            &[],
        );
        let shown = tail.trim_end_matches('/');
        assert_eq!(code, 2, "{tail}: {err}");
        assert!(
            err.contains(&format!("ends with {shown:?} after the code")),
            "{tail}: {err}"
        );
        // The code itself is not printed.
        assert!(!err.contains(&hook[hook.len() - 10..]), "{err}");
    }
    let https = hook.replacen("http://", "https://", 1);
    let (code, _, err) = send(&["--webhook", &https, "--user", "1", "--message", "x"], &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("is the URL http://?"), "{err}");
    assert_eq!(
        s.client()
            .get(&GetQuery::default())
            .unwrap()
            .notifications
            .len(),
        0
    );
}

/// The crate-level example of imnotify-client is the one the README shows (issue 17).
#[test]
fn the_readme_shows_the_crate_level_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let lib = std::fs::read_to_string(format!("{root}/crates/imnotify-client/src/lib.rs")).unwrap();
    let block = |lines: Vec<String>, open: &str| -> Vec<String> {
        lines
            .iter()
            .skip_while(|l| l.trim() != open)
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .filter(|l| !l.starts_with("# "))
            .cloned()
            .collect()
    };
    let in_readme = block(readme.lines().map(str::to_owned).collect(), "```rust");
    let crate_doc: Vec<String> = lib
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| {
            l.trim_start_matches("//!")
                .trim_start_matches(' ')
                .to_owned()
        })
        .collect();
    let in_crate = block(crate_doc, "```no_run");
    assert!(in_readme.len() >= 3, "{in_readme:?}");
    assert_eq!(in_readme, in_crate);
}

/// `OPERATION_TIME_LIMIT`: the client waits for the `operating_reset_at` of the method's last
/// `time` block and repeats the call, or reports the error when that is too far away.
#[test]
fn operation_time_limit_waits_for_the_reset_the_time_block_announced() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = format!(
        r#"{{"result":{{"TYPE":{{"NOTIFY":1}}}},"time":{{"operating":479.5,"operating_reset_at":{}}}}}"#,
        now + 2
    );
    let blocked = r#"{"error":"OPERATION_TIME_LIMIT","error_description":"Method is blocked due to operation time limit."}"#;
    let s = stub(vec![
        Some((200, ok.clone())),
        Some((429, blocked.into())),
        Some((200, ok.clone())),
    ]);
    let c = stub_client(&s, quick_retry());
    assert_eq!(c.counters().unwrap().notify, 1);
    let began = Instant::now();
    assert_eq!(c.counters().unwrap().notify, 1);
    // Blocked, then a wait until two seconds after the first call (a lower bound).
    assert!(
        began.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(s.seen.lock().unwrap().len(), 3);

    let s = stub(vec![Some((200, ok)), Some((429, blocked.into()))]);
    let c = stub_client(
        &s,
        RetryPolicy {
            max_operating_wait: Duration::ZERO,
            ..quick_retry()
        },
    );
    c.counters().unwrap();
    assert_eq!(api_code(c.counters()), (ErrorCode::OperationTimeLimit, 429));
}
