//! E-mail for MESSAGE_OUT (DECISIONS D10-D14) against a real SMTP server process: aiosmtpd,
//! installed by scripts/smtp-deps.sh and run by tests/smtp/smtp_sink.py, which writes every mail
//! it accepts to a directory.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Options, Server};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The SMTP server process; killed on drop.
struct Sink {
    child: Child,
    dir: tempfile::TempDir,
}

impl Sink {
    fn start(port: u16, delay: f64) -> Sink {
        let deps = Command::new("bash")
            .arg(Path::new(ROOT).join("scripts/smtp-deps.sh"))
            .status()
            .expect("running scripts/smtp-deps.sh");
        assert!(deps.success(), "installing aiosmtpd failed");
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(Path::new(ROOT).join("tests/smtp/.deps/venv/bin/python"))
            .arg(Path::new(ROOT).join("tests/smtp/smtp_sink.py"))
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir.path())
            .args(["--delay", &delay.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the SMTP sink");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "SMTP sink did not start: {line}");
        Sink { child, dir }
    }

    fn mails(&self) -> Vec<Mail> {
        read_mails(self.dir.path())
    }

    /// Waits until at least `n` mails arrived.
    fn wait(&self, n: usize, within: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.mails();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} mails arrived within {within:?}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received mail: its headers (names lower-cased, folded lines joined) and the raw text.
#[derive(Debug, Clone)]
struct Mail {
    headers: HashMap<String, String>,
    raw: String,
}

impl Mail {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The notification id in the stable Message-ID `<imnotify.{id}.{server}@domain>`.
    fn notification_id(&self) -> i64 {
        let id = self.header("message-id");
        id.strip_prefix("<imnotify.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected Message-ID {id}"))
    }

    /// The decoded body of the part with this content type.
    fn part(&self, content_type: &str) -> String {
        let at = self
            .raw
            .find(&format!("Content-Type: {content_type}"))
            .unwrap_or_else(|| panic!("no {content_type} part in {}", self.raw));
        let boundary = self
            .header("content-type")
            .split("boundary=")
            .nth(1)
            .expect("a multipart boundary")
            .trim_matches('"')
            .to_owned();
        let part = &self.raw[at..];
        let (head, body) = part.split_once("\r\n\r\n").unwrap();
        let body = body.split(&format!("\r\n--{boundary}")).next().unwrap();
        if head.contains("quoted-printable") {
            qp_decode(body)
        } else {
            body.to_owned()
        }
    }
}

fn qp_decode(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mails(dir: &Path) -> Vec<Mail> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let raw = std::fs::read_to_string(p).unwrap();
            let head = raw.split("\r\n\r\n").next().unwrap_or_default();
            let mut headers = HashMap::new();
            let mut last: Option<String> = None;
            for line in head.split("\r\n") {
                if line.starts_with([' ', '\t']) {
                    if let Some(k) = &last {
                        headers
                            .entry(k.clone())
                            .and_modify(|v: &mut String| v.push_str(line.trim_start()));
                    }
                } else if let Some((k, v)) = line.split_once(':') {
                    let k = k.trim().to_ascii_lowercase();
                    headers.insert(k.clone(), v.trim().to_owned());
                    last = Some(k);
                }
            }
            Mail { headers, raw }
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server that mails through 127.0.0.1:`port`, with a `delay` in seconds and quick retries.
fn server(port: u16, delay: u32, extra: &[(&str, &str)]) -> Server {
    let mut envs: Vec<(String, String)> = [
        ("IMNOTIFY_SMTP__HOST", "127.0.0.1".to_owned()),
        ("IMNOTIFY_SMTP__PORT", port.to_string()),
        ("IMNOTIFY_SMTP__TLS", "none".to_owned()),
        (
            "IMNOTIFY_SMTP__FROM",
            "imnotify <noreply@example.org>".to_owned(),
        ),
        ("IMNOTIFY_EMAIL__DELAY_SECONDS", delay.to_string()),
        ("IMNOTIFY_EMAIL__RETRY_BASE_SECONDS", "1".to_owned()),
        ("IMNOTIFY_EMAIL__RETRY_MAX_SECONDS", "2".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    envs.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let s = Server::start_with(Options {
        envs,
        ..Default::default()
    });
    s.add_user(2, &["--email", "anna@example.org"]);
    s
}

fn notify(s: &Server, body: Value) -> i64 {
    s.notify(body)
}

fn metric(s: &Server, name: &str) -> f64 {
    s.get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn outbox(s: &Server, state: Option<&str>) -> Vec<Value> {
    let mut args = vec!["outbox", "list", "--json"];
    if let Some(st) = state {
        args.extend(["--state", st]);
    }
    let out = s.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

#[test]
fn a_mail_arrives_with_its_headers_and_both_parts_and_unsubscribe_works() {
    let port = free_port();
    let sink = Sink::start(port, 0.0);
    let s = server(port, 1, &[]);
    let id = notify(
        &s,
        json!({"USER_ID": 2, "MESSAGE": "Build [b]failed[/b] on [url=https://ci.example.org/1]CI[/url]"}),
    );
    let mails = sink.wait(1, Duration::from_secs(20));
    let m = &mails[0];
    assert_eq!(m.notification_id(), id);
    assert!(m.header("to").contains("anna@example.org"), "{m:?}");
    assert!(m.header("from").contains("noreply@example.org"), "{m:?}");
    assert_eq!(
        m.header("subject"),
        "System notification: Build failed on CI (https://ci.example.org/1)"
    );
    assert!(
        m.header("content-type")
            .starts_with("multipart/alternative"),
        "{m:?}"
    );
    let unsub = m.header("list-unsubscribe");
    assert!(
        unsub.starts_with(&format!("<{}/unsubscribe?u=2&s=", s.base)),
        "{unsub}"
    );
    assert_eq!(
        m.header("list-unsubscribe-post"),
        "List-Unsubscribe=One-Click"
    );
    let text = m.part("text/plain");
    assert!(
        text.contains("Build failed on CI (https://ci.example.org/1)"),
        "{text}"
    );
    assert!(!text.contains("[b]"), "{text}");
    let html = m.part("text/html");
    assert!(html.contains("failed</"), "{html}");
    assert!(html.contains("href=\"https://ci.example.org/1\""), "{html}");
    assert!(metric(&s, "imnotify_mail_sent_total") >= 1.0);
    assert_eq!(outbox(&s, Some("sent")).len(), 1);

    // RFC 8058: a POST to the link turns e-mail off; a forged link does nothing.
    let url = unsub
        .trim_matches(['<', '>'])
        .strip_prefix(&s.base)
        .unwrap()
        .to_owned();
    let forged = url.replace("u=2", "u=1");
    let r = s.request(
        "POST",
        &forged,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(r.status, 403);
    let r = s.request(
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    notify(&s, json!({"USER_ID": 2, "MESSAGE": "after unsubscribing"}));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.mails().len(), 1, "mailed after unsubscribing");
    assert_eq!(outbox(&s, None).len(), 1, "queued after unsubscribing");
}

#[test]
fn read_deleted_skipped_and_opted_out_notifications_are_not_mailed() {
    let port = free_port();
    let sink = Sink::start(port, 0.0);
    let s = server(port, 2, &[]);
    s.add_user(
        3,
        &["--email", "off@example.org", "--email-notifications", "off"],
    );
    s.add_user(4, &[]);
    let read = notify(&s, json!({"USER_ID": 2, "MESSAGE": "read in time"}));
    let deleted = notify(&s, json!({"USER_ID": 2, "MESSAGE": "deleted in time"}));
    notify(
        &s,
        json!({"USER_ID": 2, "MESSAGE": "skipped", "MESSAGE_OUT": "  #SKIP# "}),
    );
    notify(&s, json!({"USER_ID": 3, "MESSAGE": "e-mail off"}));
    notify(&s, json!({"USER_ID": 4, "MESSAGE": "no address"}));
    let out = notify(
        &s,
        json!({"USER_ID": 2, "MESSAGE": "in [b]app[/b]", "MESSAGE_OUT": "By mail <i>only</i>"}),
    );
    // The reads go through a webhook of user 2, the recipient.
    let hook2 = s.add_webhook(2, "im");
    let r = s.post_json(
        &format!("{hook2}im.notify.read"),
        &json!({"ID": read, "ONLY_CURRENT": "Y"}),
    );
    assert_eq!(r.status, 200);
    let r = s.post_json(&format!("{hook2}im.notify.delete"), &json!({"ID": deleted}));
    assert_eq!(r.status, 200);

    let mails = sink.wait(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    let mails_after = sink.mails();
    assert_eq!(mails_after.len(), 1, "{mails:?}");
    let m = &mails_after[0];
    assert_eq!(m.notification_id(), out);
    // MESSAGE_OUT wins, with HTML tags removed (D11).
    assert_eq!(m.header("subject"), "System notification: By mail only");
    let skipped = outbox(&s, Some("skipped"));
    assert_eq!(skipped.len(), 2, "{skipped:?}");
}

#[test]
fn same_tag_mails_are_one_mail() {
    let port = free_port();
    let sink = Sink::start(port, 0.0);
    let s = server(port, 2, &[]);
    // Three updates of one tag before the mail is due: a TAG replace leaves the newest, and one
    // mail goes out for it.
    for v in ["v1", "v2", "v3"] {
        notify(
            &s,
            json!({"USER_ID": 2, "MESSAGE": format!("Deploy {v}"), "TAG": "deploy", "CLIENT_ID": "ci"}),
        );
    }
    let mails = sink.wait(1, Duration::from_secs(20));
    assert!(
        mails[0].header("subject").ends_with("Deploy v3"),
        "{:?}",
        mails[0]
    );

    // D12 proper: two live notifications of one recipient sharing a stored tag (written here
    // by another producer, straight into the database) become one mail, newest first.
    let now = chrono::Utc::now().timestamp();
    for text in ["older of the group", "newer of the group"] {
        let id: i64 = s
            .query_value(
                "INSERT INTO notifications (user_id, notify_type, text, tag, created_at) VALUES (2, 4, ?1, 'MP|x|G', ?2) RETURNING id",
                &[text.into(), now.into()],
            )
            .unwrap();
        s.execute(
            "INSERT INTO outbox (notification_id, user_id, tag, due_at, created_at) VALUES (?1, 2, 'MP|x|G', ?2, ?2)",
            &[id.into(), now.into()],
        );
    }
    let mails = sink.wait(2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.mails().len(), 2);
    let text = mails[1].part("text/plain");
    let newer = text.find("newer of the group").expect("newer listed");
    let older = text
        .find("older of the group")
        .unwrap_or_else(|| panic!("older not listed: {text}\n{}", mails[1].raw));
    assert!(newer < older, "{text}");
    assert_eq!(outbox(&s, Some("sent")).len(), 3);
}

#[test]
fn with_smtp_down_mails_are_retried_and_all_arrive_once_it_is_back() {
    let port = free_port();
    let s = server(port, 1, &[]);
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            notify(
                &s,
                json!({"USER_ID": 2, "MESSAGE": format!("while down {i}")}),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&s, "imnotify_mail_retried_total") < 3.0 {
        assert!(Instant::now() < deadline, "no retries were scheduled");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(metric(&s, "imnotify_mail_failed_total") >= 3.0);
    assert!(outbox(&s, Some("pending"))
        .iter()
        .all(|r| r["attempts"].as_i64() >= Some(1)));
    let sink = Sink::start(port, 0.0);
    sink.wait(3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let mut got: Vec<i64> = sink.mails().iter().map(Mail::notification_id).collect();
    got.sort_unstable();
    assert_eq!(got, ids);
}

#[test]
fn dead_mails_are_listed_and_revived() {
    let port = free_port();
    let s = server(port, 0, &[("IMNOTIFY_EMAIL__MAX_ATTEMPTS", "1")]);
    let id = notify(&s, json!({"USER_ID": 2, "MESSAGE": "dies"}));
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let d = outbox(&s, Some("dead"));
        if !d.is_empty() {
            break d;
        }
        assert!(Instant::now() < deadline, "the row never died");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(dead[0]["notification_id"], id);
    assert!(dead[0]["last_error"]
        .as_str()
        .is_some_and(|e| !e.is_empty()));
    assert!(metric(&s, "imnotify_mail_dead_total") >= 1.0);
    let sink = Sink::start(port, 0.0);
    let row = dead[0]["id"].to_string();
    let out = s.cli(&["outbox", "retry", &row]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails = sink.wait(1, Duration::from_secs(20));
    assert_eq!(mails[0].notification_id(), id);
}

#[test]
fn kill_9_while_sending_still_delivers_every_mail_at_least_once() {
    let port = free_port();
    // Each mail takes the SMTP server 0.3 s, so the batch is still going when the kill comes.
    let sink = Sink::start(port, 0.3);
    let mut s = server(port, 1, &[]);
    let ids: Vec<i64> = (0..12)
        .map(|i| notify(&s, json!({"USER_ID": 2, "MESSAGE": format!("batch {i}")})))
        .collect();
    sink.wait(2, Duration::from_secs(20));
    s.kill9();
    let before_restart = sink.mails().len();
    assert!(
        before_restart < ids.len(),
        "sending had finished before the kill"
    );
    s.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got: Vec<i64> = sink.mails().iter().map(Mail::notification_id).collect();
        got.sort_unstable();
        got.dedup();
        if got == ids {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing mails: have {got:?}, want {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{} mails for {} notifications ({} before the kill)",
        sink.mails().len(),
        ids.len(),
        before_restart
    );
}
