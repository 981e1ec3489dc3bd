//! Authentication over real HTTP: webhooks, their errors, the HTTPS rule and built-in TLS.

mod common;

use common::{Options, Server};
use serde_json::json;

fn body() -> serde_json::Value {
    json!({"USER_ID": 1, "MESSAGE": "auth test"})
}

#[test]
fn no_credentials_is_no_auth_found() {
    let s = Server::start();
    s.post_json("/rest/im.notify.system.add", &body())
        .assert_error(401, "NO_AUTH_FOUND");
    s.post_json("/rest/im.notify.system.add.json", &body())
        .assert_error(401, "NO_AUTH_FOUND");
    // Only one half of the webhook pair is not a credential either.
    s.post_json("/rest/im.notify.system.add?aplogin=1", &body())
        .assert_error(401, "NO_AUTH_FOUND");
}

#[test]
fn bad_webhooks_are_invalid_credentials() {
    let s = Server::start();
    s.add_user(2, &["--inactive"]);
    let inactive_hook = s.add_webhook(2, "im");
    let code = s
        .hook
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    for path in [
        "/rest/1/wrongcode00000000/im.notify.system.add".to_owned(),
        format!("/rest/999/{code}/im.notify.system.add"),
        format!("/rest/abc/{code}/im.notify.system.add"),
        format!("/rest/0/{code}/im.notify.system.add"),
        format!("{inactive_hook}im.notify.system.add"),
        // Right code, wrong owner.
        format!("/rest/2/{code}/im.notify.system.add"),
    ] {
        s.post_json(&path, &body())
            .assert_error(403, "INVALID_CREDENTIALS");
    }
}

#[test]
fn webhook_without_the_scope_is_insufficient_scope() {
    let s = Server::start();
    let hook = s.add_webhook(1, "user");
    s.post_json(&format!("{hook}im.notify.system.add"), &body())
        .assert_error(403, "insufficient_scope");
    let both = s.add_webhook(1, "user,im");
    assert_eq!(
        s.post_json(&format!("{both}im.notify.system.add"), &body())
            .status,
        200
    );
}

#[test]
fn oauth_tokens_are_unknown_until_apps_exist() {
    let s = Server::start();
    s.post_json("/rest/im.notify.system.add?auth=deadbeef", &body())
        .assert_error(401, "invalid_token");
    s.request(
        "POST",
        "/rest/im.notify.system.add",
        &[
            ("Authorization", "Bearer deadbeef"),
            ("Content-Type", "application/json"),
        ],
        body().to_string().as_bytes(),
    )
    .assert_error(401, "invalid_token");
}

#[test]
fn plain_http_webhook_is_refused_when_https_is_required() {
    let s = Server::start_with(Options {
        args: vec!["--require-https".into(), "true".into()],
        envs: vec![],
        ..Default::default()
    });
    s.post_json(&s.hook_url("im.notify.system.add"), &body())
        .assert_error(400, "INVALID_REQUEST");
    // The HTTPS rule comes before the credential check.
    s.post_json("/rest/1/nonsense/im.notify.system.add", &body())
        .assert_error(400, "INVALID_REQUEST");
    // An untrusted peer cannot claim HTTPS.
    s.request(
        "POST",
        &s.hook_url("im.notify.system.add"),
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Proto", "https"),
        ],
        body().to_string().as_bytes(),
    )
    .assert_error(400, "INVALID_REQUEST");
}

#[test]
fn trusted_proxy_may_vouch_for_https() {
    let s = Server::start_with(Options {
        args: vec!["--require-https".into(), "true".into()],
        envs: vec![("IMNOTIFY_TRUSTED_PROXIES".into(), "[\"127.0.0.1\"]".into())],
        ..Default::default()
    });
    let r = s.request(
        "POST",
        &s.hook_url("im.notify.system.add"),
        &[
            ("Content-Type", "application/json"),
            ("X-Forwarded-Proto", "https"),
        ],
        body().to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.post_json(&s.hook_url("im.notify.system.add"), &body())
        .assert_error(400, "INVALID_REQUEST");
}

/// A server with built-in TLS (a fresh self-signed certificate for `localhost` and
/// `127.0.0.1`, in a directory that must outlive the server) and `args` besides.
fn tls_server(
    args: &[&str],
) -> (
    Server,
    rcgen::CertifiedKey<rcgen::KeyPair>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend([
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]);
    let s = Server::start_with(Options {
        args: all,
        envs: vec![],
        ..Default::default()
    });
    (s, ck, dir)
}

#[test]
fn built_in_tls_serves_webhooks_when_https_is_required() {
    let (s, ck, _dir) = tls_server(&["--require-https", "true"]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let root = ureq::tls::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    root,
                ])))
                .build(),
        )
        .build()
        .new_agent();
    let port = s.addr.rsplit(':').next().unwrap();
    let url = format!(
        "https://localhost:{port}{}",
        s.hook_url("im.notify.system.add")
    );
    let mut resp = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .send(body().to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let j: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert!(j["result"].as_i64().unwrap() > 0, "{j}");
}

/// `http://` to the HTTPS port (a newcomer's likely mistake once `tls.cert` is set) gets a
/// plain-HTTP 400 `INVALID_REQUEST` naming the fix, even with a body, instead of TLS bytes
/// that clients report as "HTTP/0.9" or a parse failure (TLS on it: the test above).
#[test]
fn plain_http_to_the_tls_port_is_told_to_use_https() {
    use std::io::{Read as _, Write as _};
    let (s, _ck, _dir) = tls_server(&[]);
    assert!(s.base.starts_with("https://"), "{}", s.base);
    let addr = s.base.trim_start_matches("https://").trim_end_matches('/');
    let form = "USER_ID=1&MESSAGE=over+plain+http";
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "POST {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{form}",
        s.hook_url("im.notify.system.add"),
        form.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let (_, json) = answer.split_once("\r\n\r\n").unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["error"], "INVALID_REQUEST", "{answer}");
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("https://"),
        "{answer}"
    );
}

#[test]
fn webhook_codes_are_stored_hashed_and_never_logged() {
    if common::sqlite_only("scans the bytes of the SQLite file and its WAL") {
        return;
    }
    let s = Server::start();
    let code = s
        .hook
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let extra = s.add_webhook(1, "im");
    let extra_code = extra
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.post_json(&s.hook_url("im.notify.system.add"), &body())
            .status,
        200
    );
    s.post_json(&format!("{extra}im.notify.system.add"), &body());
    s.post_json("/rest/im.notify.system.add?auth=secret-token-xyz", &body());
    drop(s.db()); // the file is complete
    let db_bytes = std::fs::read(s.data_dir().join("imnotify.sqlite3")).unwrap();
    let wal = std::fs::read(s.data_dir().join("imnotify.sqlite3-wal")).unwrap_or_default();
    for secret in [&code, &extra_code] {
        let hay = [&db_bytes[..], &wal[..]].concat();
        assert!(
            !hay.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "webhook code found in the database files"
        );
    }
    let log = s.log();
    assert!(
        log.contains("im.notify.system.add"),
        "log has entries: {log}"
    );
    for secret in [code.as_str(), extra_code.as_str(), "secret-token-xyz"] {
        assert!(!log.contains(secret), "secret {secret} in the log");
    }
}
