//! imnotify behind Debian's nginx with the repository's `deploy/nginx.conf` (issue 14), the
//! addresses templated in. Skips with a printed reason when nginx is missing
//! (`scripts/nginx-deps.sh` installs it; the `cluster` stage of `scripts/test.sh` runs it).
//!
//! Here, one SQLite instance behind the configuration: REST, server-sent events and the
//! Push&Pull WebSocket pass through unbuffered, and `trusted_proxies` makes the rate limit see
//! each client's own address rather than nginx's. Under `IMNOTIFY_TEST_PG`, three instances on
//! one database: TAG replaces, cross-instance streams, the cluster-wide rate limit, an OAuth
//! refresh seen by all, `kill -9` of one instance; and, on a PostgreSQL cluster of its own, a
//! restart of PostgreSQL under load.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{connect_from, exchange, read_until, request_bytes, Options, Server};
use serde_json::json;

const NGINX: &str = "/usr/sbin/nginx";
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf");

/// nginx as a child process with its own prefix directory, stopped on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn nginx_available() -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    eprintln!("skipped: {NGINX} is missing (scripts/nginx-deps.sh installs Debian's nginx)");
    false
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `deploy/nginx.conf` with the listen port and the upstream servers replaced. Panics if the
/// file no longer has the lines this test replaces, so the test keeps checking the real file.
fn templated(listen: u16, upstreams: &[&str]) -> String {
    let conf = std::fs::read_to_string(CONFIG).expect("deploy/nginx.conf");
    let mut out = String::new();
    let mut servers_done = false;
    let mut listen_done = false;
    for line in conf.lines() {
        let t = line.trim_start();
        if t.starts_with("server 127.0.0.1:808") {
            if !servers_done {
                for u in upstreams {
                    out.push_str(&format!("    server {u} max_fails=1 fail_timeout=5s;\n"));
                }
                servers_done = true;
            }
            continue;
        }
        if t == "listen 8080;" {
            out.push_str(&format!("    listen 127.0.0.1:{listen};\n"));
            listen_done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        servers_done && listen_done,
        "deploy/nginx.conf changed shape"
    );
    out
}

impl Nginx {
    fn start(upstreams: &[&str]) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = dir.path();
        let port = free_port();
        std::fs::write(prefix.join("imnotify.conf"), templated(port, upstreams)).unwrap();
        for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(prefix.join("tmp").join(d)).unwrap();
        }
        let p = prefix.display();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {p}/access.log;\n\
               client_body_temp_path {p}/tmp/body;\n  proxy_temp_path {p}/tmp/proxy;\n\
               fastcgi_temp_path {p}/tmp/fastcgi;\n  uwsgi_temp_path {p}/tmp/uwsgi;\n\
               scgi_temp_path {p}/tmp/scgi;\n  include {p}/imnotify.conf;\n}}\n"
        );
        std::fs::write(prefix.join("nginx.conf"), main).unwrap();
        let mut cmd = Command::new(NGINX);
        cmd.arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(prefix.join("stderr.log")).unwrap(),
            ));
        // Never as root: the whole prefix belongs to an unprivileged user that runs nginx.
        if unsafe { libc::geteuid() } == 0 {
            use std::os::unix::process::CommandExt as _;
            chown_tree(prefix, 65534, 65534);
            cmd.uid(65534).gid(65534);
        }
        let child = cmd.spawn().expect("spawning nginx");
        let n = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(n.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn error_log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid, gid);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM is nginx's fast shutdown: the master stops its workers and exits.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with `Connection: close` from the loopback address `from` (so nginx sees
/// distinct clients) and a JSON body; the status and the body.
fn call(
    from: [u8; 4],
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut headers = headers.to_vec();
    headers.push(("Content-Type", "application/json"));
    let request = request_bytes(method, path, &to.to_string(), &headers, body.as_bytes());
    let r = exchange(connect_from(from, to), &request);
    (r.status, r.body)
}

fn notify(to: SocketAddr, hook: &str, message: &str) -> i64 {
    let (status, body) = call(
        [127, 0, 0, 1],
        to,
        "POST",
        &format!("{hook}im.notify.system.add"),
        &[],
        &json!({"USER_ID": 1, "MESSAGE": message}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {body}"))
}

fn server(envs: &[(&str, &str)], limits: bool) -> Server {
    Server::start_with(Options {
        envs: common::envs(envs),
        limits,
        ..Options::default()
    })
}

const TRUSTED: (&str, &str) = ("IMNOTIFY_TRUSTED_PROXIES", "[\"127.0.0.1\"]");

#[test]
fn server_sent_events_pass_through_unbuffered() {
    if !nginx_available() {
        return;
    }
    let s = server(&[TRUSTED], false);
    let n = Nginx::start(&[&s.addr]);
    let mut stream = connect_from([127, 0, 0, 1], n.addr());
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET {}events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        s.hook,
        n.addr()
    )
    .unwrap();
    let head = read_until(&mut stream, "\r\n\r\n", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no stream head; nginx: {}", n.error_log()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("text/event-stream"),
        "{head}"
    );
    for i in 0..3 {
        let message = format!("through nginx {i}");
        let sent = Instant::now();
        let id = notify(n.addr(), &s.hook, &message);
        let seen = read_until(&mut stream, &message, Duration::from_secs(5));
        let took = sent.elapsed();
        let seen = seen.unwrap_or_else(|| panic!("event {id} not delivered through nginx"));
        assert!(seen.contains("notifyAdd"), "{seen}");
        assert!(took < Duration::from_secs(1), "event {id} took {took:?}");
    }
}

#[test]
fn the_websocket_upgrades_through_nginx() {
    if !nginx_available() {
        return;
    }
    let s = server(&[TRUSTED], false);
    let n = Nginx::start(&[&s.addr]);
    let hook = s.add_webhook(1, "im,pull_channel");
    let (status, body) = call(
        [127, 0, 0, 1],
        n.addr(),
        "POST",
        &format!("{hook}pull.config.get"),
        &[],
        "{}",
    );
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let channel = config["result"]["channels"]["private"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let enc: String = form_urlencoded::byte_serialize(channel.as_bytes()).collect();
    let mut ws = connect_from([127, 0, 0, 1], n.addr());
    ws.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        ws,
        "GET /subws/?CHANNEL_ID={enc}&revision=19&jsonRpc=false HTTP/1.1\r\nHost: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        n.addr()
    )
    .unwrap();
    let head = read_until(&mut ws, "\r\n\r\n", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no upgrade answer; nginx: {}", n.error_log()));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "the accept key of RFC 6455 §1.3: {head}"
    );
    let sent = Instant::now();
    notify(n.addr(), &s.hook, "over the websocket");
    // Server frames are unmasked text; the payload is readable in the byte stream.
    let seen = read_until(&mut ws, "over the websocket", Duration::from_secs(5))
        .expect("the notification arrives on the WebSocket through nginx");
    assert!(
        seen.contains("notifyAdd") || seen.contains("notify"),
        "{seen}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn trusted_proxies_give_each_client_its_own_bucket() {
    if !nginx_available() {
        return;
    }
    let add = |s: &Server, n: &Nginx, from: [u8; 4], xff: Option<&str>| {
        let headers: Vec<(&str, &str)> = xff.map(|v| ("X-Forwarded-For", v)).into_iter().collect();
        call(
            from,
            n.addr(),
            "POST",
            &format!("{}im.notify.system.add", s.hook),
            &headers,
            r#"{"USER_ID":1,"MESSAGE":"m"}"#,
        )
        .0
    };
    let burst = ("IMNOTIFY_LIMITS__RATE__BURST", "2");
    let s = server(&[TRUSTED, burst], true);
    let n = Nginx::start(&[&s.addr]);
    assert_eq!(add(&s, &n, [127, 0, 0, 2], None), 200);
    // A client's own X-Forwarded-For does not buy it a fresh bucket.
    assert_eq!(add(&s, &n, [127, 0, 0, 2], Some("203.0.113.9")), 200);
    assert_eq!(add(&s, &n, [127, 0, 0, 2], Some("203.0.113.10")), 503);
    // Another client of the same webhook has its own bucket.
    assert_eq!(add(&s, &n, [127, 0, 0, 3], None), 200);

    // Without trusted_proxies every client is nginx's 127.0.0.1: one bucket for all.
    let s = server(&[burst], true);
    let n = Nginx::start(&[&s.addr]);
    assert_eq!(add(&s, &n, [127, 0, 0, 2], None), 200);
    assert_eq!(add(&s, &n, [127, 0, 0, 3], None), 200);
    assert_eq!(add(&s, &n, [127, 0, 0, 4], None), 503);
}

#[test]
fn a_dead_instance_is_skipped() {
    if !nginx_available() {
        return;
    }
    let s = server(&[TRUSTED], false);
    // The first upstream refuses connections: nginx moves on to the live one.
    let dead = format!("127.0.0.1:{}", free_port());
    let n = Nginx::start(&[&dead, &s.addr]);
    for i in 0..6 {
        notify(n.addr(), &s.hook, &format!("m{i}"));
    }
    assert_eq!(s.notification_count(), 6);
}

// ---- Three instances on one PostgreSQL database behind nginx (needs IMNOTIFY_TEST_PG) ----

/// Three servers on one fresh database, the first made it (and drops it at the end).
fn three(envs: &[(&str, &str)], limits: bool) -> Option<[Server; 3]> {
    if common::test_pg().is_none() {
        eprintln!("skipped: needs IMNOTIFY_TEST_PG (scripts/pg.sh start) for several instances");
        return None;
    }
    let envs = common::envs(envs);
    let a = Server::start_with(Options {
        envs: envs.clone(),
        limits,
        ..Options::default()
    });
    let next = || {
        let mut s = Server::start_with(Options {
            envs: envs.clone(),
            limits,
            shared_database: a.database_url.clone(),
            ..Options::default()
        });
        s.hook = a.hook.clone();
        s
    };
    let b = next();
    let c = next();
    Some([a, b, c])
}

#[test]
fn the_rate_limit_holds_for_the_cluster() {
    if !nginx_available() {
        return;
    }
    // A slow drain, so that the count hardly depends on how fast this machine sends.
    let slow = ("IMNOTIFY_LIMITS__RATE__PER_SECOND", "0.2");
    let Some(cluster) = three(&[TRUSTED, slow], true) else {
        return;
    };
    let n = Nginx::start(&[&cluster[0].addr, &cluster[1].addr, &cluster[2].addr]);
    let hook = cluster[0].hook.clone();
    // 150 calls from one client, spread round-robin over the three instances: one burst of 50
    // for the webhook (plus what drains at 0.2/s while they run), not 50 per instance.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..150 {
        let (status, _) = call(
            [127, 0, 0, 2],
            n.addr(),
            "POST",
            &format!("{hook}im.notify.system.add"),
            &[],
            r#"{"USER_ID":1,"MESSAGE":"m"}"#,
        );
        statuses.push(status);
    }
    let took = started.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + refused, 150, "{statuses:?}");
    let drained = (took * 0.2).ceil() as usize;
    eprintln!("cluster rate limit: {ok} of 150 allowed in {took:.1} s through 3 instances");
    assert!(
        (50..=(50 + drained).max(55)).contains(&ok),
        "{ok} allowed in {took:.1} s (burst 50, 0.2/s)"
    );
    // Every instance answered some of them (nginx spread the calls).
    for s in &cluster {
        assert!(s.log().contains("im.notify.system.add"), "an idle instance");
    }
}

#[test]
fn a_stream_on_one_instance_sees_adds_made_through_the_others() {
    let Some(cluster) = three(&[], false) else {
        return;
    };
    let [a, b, c] = &cluster;
    let mut stream = connect_from([127, 0, 0, 1], a.socket_addr());
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    write!(
        stream,
        "GET {}events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        a.hook, a.addr
    )
    .unwrap();
    let head = read_until(&mut stream, "\r\n\r\n", Duration::from_secs(10)).expect("stream head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut worst = Duration::ZERO;
    for (i, via) in [b, c, b, c].iter().enumerate() {
        let message = format!("cross-instance {i}");
        let sent = Instant::now();
        notify(via.socket_addr(), &a.hook, &message);
        let seen = read_until(&mut stream, &message, Duration::from_secs(5));
        let took = sent.elapsed();
        assert!(seen.is_some(), "{message} never reached the stream on A");
        worst = worst.max(took);
    }
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
}

#[test]
fn concurrent_tag_replaces_through_nginx_leave_one_per_tag() {
    if !nginx_available() {
        return;
    }
    let Some(cluster) = three(&[], false) else {
        return;
    };
    let n = Nginx::start(&[&cluster[0].addr, &cluster[1].addr, &cluster[2].addr]);
    let to = n.addr();
    let hook = cluster[0].hook.clone();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let hook = hook.clone();
            std::thread::spawn(move || {
                for i in 0..15 {
                    let tag = if i % 2 == 0 { "BUILD" } else { "DEPLOY" };
                    // Via a webhook a TAG takes effect with a CLIENT_ID (§2.4).
                    let body = json!({"USER_ID": 1, "MESSAGE": format!("{t}/{i}"), "TAG": tag, "CLIENT_ID": "ci"});
                    let (status, text) = call(
                        [127, 0, 0, 1],
                        to,
                        "POST",
                        &format!("{hook}im.notify.system.add"),
                        &[],
                        &body.to_string(),
                    );
                    assert_eq!(status, 200, "{text}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a sender");
    }
    let url = cluster[0].database_url.clone().expect("a database");
    let rows = common::pg_query(
        &url,
        "SELECT count(*)::text || ' rows, ' || count(DISTINCT tag)::text || ' tags' FROM notifications",
    );
    assert_eq!(
        rows,
        ["2 rows, 2 tags"],
        "one notification per (recipient, tag)"
    );
}

#[test]
fn kill_9_of_one_instance_loses_no_acknowledged_notification() {
    if !nginx_available() {
        return;
    }
    let Some(mut cluster) = three(&[], false) else {
        return;
    };
    let n = Nginx::start(&[&cluster[0].addr, &cluster[1].addr, &cluster[2].addr]);
    let to = n.addr();
    let hook = cluster[0].hook.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killed_at = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (hook, stop, killed_at) = (hook.clone(), stop.clone(), killed_at.clone());
            std::thread::spawn(move || {
                let (mut acked, mut failed, mut after_kill) = (Vec::new(), 0, 0);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let body = json!({"USER_ID": 1, "MESSAGE": format!("{t}/{i}")});
                    let (status, text) = call(
                        [127, 0, 0, 1],
                        to,
                        "POST",
                        &format!("{hook}im.notify.system.add"),
                        &[],
                        &body.to_string(),
                    );
                    if status == 200 {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        acked.push(v["result"].as_i64().expect("an id"));
                        if killed_at.lock().unwrap().is_some() {
                            after_kill += 1;
                        }
                    } else {
                        failed += 1;
                    }
                }
                (acked, failed, after_kill)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    cluster[1].kill9();
    *killed_at.lock().unwrap() = Some(Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, mut failed, mut after_kill) = (Vec::new(), 0, 0);
    for s in senders {
        let (a, f, k) = s.join().expect("a sender");
        acked.extend(a);
        failed += f;
        after_kill += k;
    }
    let url = cluster[0].database_url.clone().expect("a database");
    let stored: std::collections::BTreeSet<i64> =
        common::pg_query(&url, "SELECT id FROM notifications")
            .iter()
            .map(|s| s.parse().expect("an id"))
            .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    eprintln!(
        "kill -9 under load: {} acknowledged ({after_kill} after the kill), {failed} failed, {} lost",
        acked.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(after_kill > 10, "the others kept serving: {after_kill}");
}

#[test]
fn an_oauth_refresh_on_one_instance_spends_the_old_tokens_on_all() {
    let Some(cluster) = three(&[], false) else {
        return;
    };
    let [a, b, c] = &cluster;
    let (client_id, client_secret) = a.add_app(
        "Tracker",
        &["--redirect-uri", "https://app.example.test/callback"],
    );
    let tokens = a.app_token(&client_id, 1);
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let add = |s: &Server, token: &str| {
        s.post_json(
            "/rest/im.notify.system.add",
            &json!({"USER_ID": 1, "MESSAGE": "with a token", "auth": token}),
        )
    };
    for s in &cluster {
        let r = add(s, &access);
        assert_eq!(r.status, 200, "the first token on {}: {}", s.addr, r.body);
    }

    let refresh_req = format!(
        "grant_type=refresh_token&client_id={client_id}&client_secret={client_secret}&refresh_token={refresh}"
    );
    let r = a.get(&format!("/oauth/token/?{refresh_req}"));
    assert_eq!(r.status, 200, "refresh through A: {}", r.body);
    let fresh = r.json();
    let new_access = fresh["access_token"].as_str().expect("new access");
    assert_ne!(new_access, access);
    assert_ne!(fresh["refresh_token"].as_str(), Some(refresh.as_str()));

    // At once, with no wait for any cache to expire: the old access token is spent everywhere.
    add(b, &access).assert_error(401, "invalid_token");
    add(c, &access).assert_error(401, "invalid_token");
    for s in &cluster {
        let r = add(s, new_access);
        assert_eq!(r.status, 200, "the new token on {}: {}", s.addr, r.body);
    }
    // The old refresh token is spent on another instance too.
    c.post_form("/oauth/token/", &refresh_req)
        .assert_error(400, "invalid_grant");
    // The new one refreshes on yet another instance.
    let again = format!(
        "grant_type=refresh_token&client_id={client_id}&client_secret={client_secret}&refresh_token={}",
        fresh["refresh_token"].as_str().expect("new refresh")
    );
    let r = b.get(&format!("/oauth/token/?{again}"));
    assert_eq!(r.status, 200, "refresh through B: {}", r.body);
    add(a, new_access).assert_error(401, "invalid_token");
}

// ---- PostgreSQL restarted under load, on a PostgreSQL cluster of this test's own ----

/// A throwaway PostgreSQL cluster of `scripts/pg.sh` on its own port and directory, so that
/// restarting it does not disturb the shared one of the other tests; stopped (and its directory
/// removed) on drop.
struct OwnPostgres {
    dir: String,
    port: u16,
    url: String,
}

impl OwnPostgres {
    fn pg_sh(dir: &str, port: u16, args: &[&str]) -> std::process::Output {
        Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
            .args(args)
            .env("IMNOTIFY_PG_DIR", dir)
            .env("IMNOTIFY_PG_PORT", port.to_string())
            .output()
            .expect("running scripts/pg.sh")
    }

    fn start() -> OwnPostgres {
        let port = free_port();
        // Not under a tempdir: PostgreSQL's non-root owner must be able to reach it.
        let dir = format!("/tmp/imnotify-pg-restart-{}-{port}", std::process::id());
        let out = OwnPostgres::pg_sh(&dir, port, &["start"]);
        let pg = OwnPostgres {
            dir,
            port,
            url: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        };
        assert!(
            out.status.success(),
            "pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        OwnPostgres::pg_sh(&self.dir, self.port, &["stop"]);
    }
}

/// One call's outcome: when it started, how long it took, its status and body.
struct Outcome {
    started: Instant,
    took: Duration,
    status: u16,
    body: String,
}

#[test]
fn postgresql_restarted_under_load_loses_nothing_and_service_comes_back() {
    // scripts/cluster-test.sh installs PostgreSQL and sets IMNOTIFY_TEST_PG; this test starts
    // a cluster of its own with the same script.
    if common::test_pg().is_none() {
        eprintln!("skipped: needs PostgreSQL (scripts/cluster-test.sh starts it)");
        return;
    }
    let pg = OwnPostgres::start();
    // The first user, made before any instance starts, so no instance makes a first-start one.
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::BIN)
        .args(["user", "add", "--id", "1", "--name", "User", "--data-dir"])
        .arg(scratch.path())
        .env_remove("IMNOTIFY_DATA_DIR")
        .env("IMNOTIFY_DATABASE_URL", &pg.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let instance = || {
        Server::start_with(Options {
            shared_database: Some(pg.url.clone()),
            ..Options::default()
        })
    };
    let (a, b) = (instance(), instance());
    let hook = a.add_webhook(1, "im");
    let targets = [a.socket_addr(), b.socket_addr()];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..2)
        .map(|t| {
            let (hook, stop) = (hook.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let body = json!({"USER_ID": 1, "MESSAGE": format!("{t}/{i}")});
                    let started = Instant::now();
                    let (status, body) = call(
                        [127, 0, 0, 1],
                        targets[(t + i) % 2],
                        "POST",
                        &format!("{hook}im.notify.system.add"),
                        &[],
                        &body.to_string(),
                    );
                    outcomes.push(Outcome {
                        started,
                        took: started.elapsed(),
                        status,
                        body,
                    });
                    if status != 200 {
                        // While the database is down, no need to spin.
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                outcomes
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));

    // Down for 4 s (after a fast shutdown), then up again on the same data.
    let down_at = Instant::now();
    let mut restart = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/pg.sh"))
        .args(["restart", "4"])
        .env("IMNOTIFY_PG_DIR", &pg.dir)
        .env("IMNOTIFY_PG_PORT", pg.port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("pg.sh restart");
    let mut unhealthy = Vec::new();
    let restarted = loop {
        if let Some(status) = restart.try_wait().unwrap() {
            assert!(status.success(), "pg.sh restart failed");
            break Instant::now();
        }
        for to in targets {
            let (status, body) = call([127, 0, 0, 1], to, "GET", "/healthz", &[], "");
            if status == 503 {
                unhealthy.push(body);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Back by itself: every instance healthy and adding again, without being touched.
    let mut back_after = Duration::ZERO;
    for to in targets {
        loop {
            let (health, _) = call([127, 0, 0, 1], to, "GET", "/healthz", &[], "");
            let (status, _) = call(
                [127, 0, 0, 1],
                to,
                "POST",
                &format!("{hook}im.notify.system.add"),
                &[],
                r#"{"USER_ID":1,"MESSAGE":"after"}"#,
            );
            if health == 200 && status == 200 {
                break;
            }
            // 10 s is the aim; the margin is for this loaded machine.
            assert!(
                restarted.elapsed() < Duration::from_secs(20),
                "{to} not back: healthz {health}, add {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        back_after = back_after.max(restarted.elapsed());
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes: Vec<Outcome> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("a sender"))
        .collect();

    let acked: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.status == 200)
        .map(|o| {
            serde_json::from_str::<serde_json::Value>(&o.body).unwrap()["result"]
                .as_i64()
                .expect("an id")
        })
        .collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    let after = outcomes
        .iter()
        .filter(|o| o.status == 200 && o.started > restarted)
        .count();
    let stored: std::collections::BTreeSet<i64> =
        common::pg_query(&pg.url, "SELECT id FROM notifications")
            .iter()
            .map(|s| s.parse().expect("an id"))
            .collect();
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    eprintln!(
        "PostgreSQL restart under load: {} acknowledged ({after} after the restart), {} failed, \
         slowest call {slowest:?}, {} lost; service back {back_after:?} after PostgreSQL \
         (down {:?} in all)",
        acked.len(),
        failed.len(),
        lost.len(),
        restarted - down_at
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        !failed.is_empty(),
        "no call failed while PostgreSQL was down"
    );
    for o in &failed {
        let r = common::Response {
            status: o.status,
            headers: Vec::new(),
            body: o.body.clone(),
        };
        r.assert_error(500, "INTERNAL_SERVER_ERROR");
    }
    // The pool gives up after 3 s (store::postgres::POOL_TIMEOUT); the rest is margin for load.
    assert!(slowest < Duration::from_secs(8), "a call took {slowest:?}");
    assert!(!unhealthy.is_empty(), "/healthz never reported the outage");
    assert!(
        unhealthy.iter().all(|b| b.contains("\"error\"")),
        "{unhealthy:?}"
    );
    assert!(after > 0, "no add succeeded after the restart");
}
