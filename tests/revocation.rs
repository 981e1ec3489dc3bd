//! Data at rest and credential lifecycle (issue 10, section 5): private files, no stored CSRF
//! token, the revocation commands acting on a running server, and the OAuth rules for
//! deactivated users, disabled apps, replayed codes and what `app add` accepts.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use common::{Response, Server};
use serde_json::{json, Value};

struct App {
    client_id: String,
    client_secret: String,
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn add_app(s: &Server) -> App {
    let (client_id, client_secret) = s.add_app_scoped(
        "Bot",
        "im,user",
        &["--redirect-uri", "https://app.example.test/cb"],
    );
    App {
        client_id,
        client_secret,
    }
}

fn with_token(s: &Server, token: &Value, method: &str) -> Response {
    s.post_json(
        &format!("/rest/{method}"),
        &json!({"auth": token["access_token"], "USER_ID": token["user_id"], "MESSAGE": "m"}),
    )
}

fn refresh(s: &Server, app: &App, token: &Value) -> Response {
    s.post_form(
        "/oauth/token/",
        &format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
            app.client_id,
            app.client_secret,
            token["refresh_token"].as_str().unwrap()
        ),
    )
}

fn with_session(s: &Server, cookie: &str, csrf: &str) -> Response {
    s.request(
        "POST",
        "/rest/profile",
        &[("Cookie", cookie), ("X-Bitrix-Csrf-Token", csrf)],
        b"",
    )
}

/// Signs user `login` in, approves `app` and returns the authorization code.
fn authorization_code(s: &Server, app: &App, cookie: &str) -> String {
    let csrf = s.consent_csrf(&app.client_id, cookie);
    let approved = s.request(
        "POST",
        "/oauth/authorize/",
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("client_id={}&approve=Y&csrf={csrf}", app.client_id).as_bytes(),
    );
    assert_eq!(approved.status, 302, "{}", approved.body);
    let location = approved.header("location").unwrap();
    let query = location.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

fn exchange(s: &Server, app: &App, code: &str) -> Response {
    s.post_form(
        "/oauth/token/",
        &format!(
            "grant_type=authorization_code&client_id={}&client_secret={}&code={code}",
            app.client_id, app.client_secret
        ),
    )
}

/// Polls `f` until it returns true or `within` has passed; returns the time it took.
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn data_dir_and_database_files_are_private_and_loose_files_are_tightened() {
    if common::sqlite_only("checks the modes of the SQLite database files") {
        return;
    }
    let mut s = Server::start();
    s.notify(json!({"USER_ID": 1, "MESSAGE": "secret text"}));
    let dir = s.data_dir();
    assert_eq!(mode(&dir), 0o700, "data dir");
    for name in [
        "imnotify.sqlite3",
        "imnotify.sqlite3-wal",
        "imnotify.sqlite3-shm",
    ] {
        assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
    }
    // A database left readable by an older version is set to 0600 at the next start.
    s.terminate();
    let db = dir.join("imnotify.sqlite3");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.restart();
    assert_eq!(mode(&db), 0o600);
    assert!(s.log().contains("set to 0600"), "{}", s.log());
    // Admin commands create no database (only `serve` does): nothing to leave readable.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("d");
    let out = std::process::Command::new(common::BIN)
        .args(["user", "add", "--id", "2", "--name", "X", "--data-dir"])
        .arg(&data)
        .env_remove("IMNOTIFY_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!data.exists());
}

#[test]
fn the_session_csrf_token_is_not_stored() {
    if common::sqlite_only("scans the bytes of the SQLite file and its WAL") {
        return;
    }
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let app = add_app(&s);
    let cookie = s.sign_in("5", "pw");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    assert_eq!(with_session(&s, &cookie, &csrf).status, 200);
    // Nothing in the database (file and WAL) holds the token, in any column.
    s.db()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let mut bytes = std::fs::read(s.data_dir().join("imnotify.sqlite3")).unwrap();
    bytes.extend(std::fs::read(s.data_dir().join("imnotify.sqlite3-wal")).unwrap_or_default());
    let needle = csrf.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the CSRF token is stored in plain text"
    );
    // A token of another session does not pass for this one.
    let other = s.sign_in("5", "pw");
    let other_csrf = s.consent_csrf(&app.client_id, &other);
    assert_ne!(other_csrf, csrf);
    with_session(&s, &cookie, &other_csrf).assert_error(401, "session_failed");
}

#[test]
fn a_revoked_webhook_is_refused_by_the_running_server_within_a_second() {
    let s = Server::start();
    s.add_user(7, &[]);
    let hook = s.add_webhook(7, "im");
    let call = || {
        s.post_json(
            &format!("{hook}im.notify.system.add"),
            &json!({"USER_ID": 7, "MESSAGE": "m"}),
        )
    };
    assert_eq!(call().status, 200);
    let list: Value = serde_json::from_str(&ok(&s.cli(&[
        "webhook",
        "list",
        "--user-id",
        "7",
        "--json",
    ])))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["active"], true);
    assert!(list[0].get("code").is_none(), "codes are never listed");
    let id = list[0]["id"].to_string();

    ok(&s.cli(&["webhook", "revoke", "--id", &id]));
    // The cache trusts an entry for 1 s; allow for a loaded machine.
    let took = eventually(Duration::from_secs(3), || call().status == 403)
        .expect("the revoked webhook still works after 3 s");
    call().assert_error(403, "INVALID_CREDENTIALS");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let list: Value = serde_json::from_str(&ok(&s.cli(&["webhook", "list", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "user 1's and user 7's");
    assert_eq!(list[1]["active"], false);
    // Other webhooks are untouched.
    s.notify(json!({"USER_ID": 1, "MESSAGE": "still fine"}));
    let missing = s.cli(&["webhook", "revoke", "--id", "999"]);
    assert!(!missing.status.success());
}

#[test]
fn deactivating_a_user_ends_their_webhooks_sessions_and_tokens() {
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let hook = s.add_webhook(5, "im");
    let app = add_app(&s);
    let token = s.app_token(&app.client_id, 5);
    let cookie = s.sign_in("5", "pw");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    let hook_call = || {
        s.post_json(
            &format!("{hook}im.notify.system.add"),
            &json!({"USER_ID": 5, "MESSAGE": "m"}),
        )
    };
    assert_eq!(hook_call().status, 200);
    assert_eq!(with_token(&s, &token, "im.notify.system.add").status, 200);
    assert_eq!(with_session(&s, &cookie, &csrf).status, 200);

    ok(&s.cli(&["user", "deactivate", "--id", "5"]));
    with_session(&s, &cookie, &csrf).assert_error(401, "access_denied");
    with_token(&s, &token, "im.notify.system.add").assert_error(401, "invalid_token");
    refresh(&s, &app, &token).assert_error(400, "invalid_grant");
    eventually(Duration::from_secs(3), || hook_call().status == 403)
        .expect("the deactivated user's webhook still works after 3 s");
    hook_call().assert_error(403, "INVALID_CREDENTIALS");
    assert_eq!(s.post_login("5", "pw", &[]).status, 401);

    // Activated again: the webhook works, the old session and tokens stay ended.
    ok(&s.cli(&["user", "activate", "--id", "5"]));
    eventually(Duration::from_secs(3), || hook_call().status == 200)
        .expect("the webhook of the reactivated user is refused");
    with_token(&s, &token, "im.notify.system.add").assert_error(401, "invalid_token");
    with_session(&s, &cookie, &csrf).assert_error(401, "access_denied");
}

#[test]
fn a_password_change_ends_old_sessions_and_tokens_and_update_changes_fields() {
    let s = Server::start();
    s.add_user(5, &["--password", "old pw"]);
    let app = add_app(&s);
    let token = s.app_token(&app.client_id, 5);
    let cookie = s.sign_in("5", "old pw");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    assert_eq!(with_session(&s, &cookie, &csrf).status, 200);

    ok(&s.cli(&["user", "update", "--id", "5", "--password", "new pw"]));
    with_session(&s, &cookie, &csrf).assert_error(401, "access_denied");
    with_token(&s, &token, "im.notify.system.add").assert_error(401, "invalid_token");
    assert_eq!(s.post_login("5", "old pw", &[]).status, 401);
    let cookie = s.sign_in("5", "new pw");

    // `user password` does the same.
    ok(&s.cli(&["user", "password", "--id", "5", "--password", "third"]));
    let csrf = s.consent_csrf(&app.client_id, &s.sign_in("5", "third"));
    assert!(!csrf.is_empty());
    let page = s.request(
        "GET",
        &format!("/oauth/authorize/?client_id={}", app.client_id),
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(page.status, 303, "the session from before is over");

    // Other fields, and the admin flag both ways.
    ok(&s.cli(&[
        "user",
        "update",
        "--id",
        "5",
        "--name",
        "Zoe",
        "--email",
        "zoe@example.com",
        "--admin",
    ]));
    let who = s.query(
        "SELECT name, email, CAST(is_admin AS INTEGER) FROM users WHERE id = 5",
        &[],
    );
    assert_eq!(
        who,
        [[
            Some("Zoe".into()),
            Some("zoe@example.com".into()),
            Some("1".into())
        ]]
    );
    ok(&s.cli(&["user", "update", "--id", "5", "--no-admin"]));
    let admin: i64 = s
        .query_value(
            "SELECT CAST(is_admin AS INTEGER) FROM users WHERE id = 5",
            &[],
        )
        .unwrap();
    assert_eq!(admin, 0);
    // A name change alone leaves sessions alone.
    let cookie = s.sign_in("5", "third");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    ok(&s.cli(&["user", "update", "--id", "5", "--last-name", "Lee"]));
    assert_eq!(with_session(&s, &cookie, &csrf).status, 200);
    assert!(!s.cli(&["user", "update", "--id", "5"]).status.success());
    assert!(!s
        .cli(&["user", "update", "--id", "99", "--name", "x"])
        .status
        .success());
}

#[test]
fn token_revoke_and_app_disable_take_effect_at_once() {
    let s = Server::start();
    s.add_user(5, &[]);
    s.add_user(6, &[]);
    let app = add_app(&s);
    let t5 = s.app_token(&app.client_id, 5);
    let t6 = s.app_token(&app.client_id, 6);

    let out = ok(&s.cli(&["token", "revoke", "--user-id", "5"]));
    assert!(out.contains("Revoked 1"), "{out}");
    with_token(&s, &t5, "im.notify.system.add").assert_error(401, "invalid_token");
    refresh(&s, &app, &t5).assert_error(400, "invalid_grant");
    assert_eq!(with_token(&s, &t6, "im.notify.system.add").status, 200);
    assert!(!s.cli(&["token", "revoke"]).status.success());

    // Disabled: refused, refresh mints nothing; enabled again: the live token works.
    ok(&s.cli(&["app", "disable", "--client-id", &app.client_id]));
    with_token(&s, &t6, "im.notify.system.add").assert_error(401, "APPLICATION_NOT_FOUND");
    let list: Value = serde_json::from_str(&ok(&s.cli(&["app", "list", "--json"]))).unwrap();
    assert_eq!(list[0]["active"], false, "{list}");
    assert!(list[0].get("client_secret").is_none());
    ok(&s.cli(&["app", "enable", "--client-id", &app.client_id]));
    assert_eq!(with_token(&s, &t6, "im.notify.system.add").status, 200);

    let out = ok(&s.cli(&["token", "revoke", "--client-id", &app.client_id]));
    assert!(out.contains("Revoked 1"), "{out}");
    with_token(&s, &t6, "im.notify.system.add").assert_error(401, "invalid_token");
    assert!(!s
        .cli(&["app", "disable", "--client-id", "local.nope"])
        .status
        .success());
}

#[test]
fn a_refresh_for_a_deactivated_user_or_a_disabled_app_mints_no_tokens() {
    let s = Server::start();
    s.add_user(5, &[]);
    let app = add_app(&s);
    // Deactivated by any means (here behind the server's back, so that no revocation ran).
    let token = s.app_token(&app.client_id, 5);
    s.execute("UPDATE users SET active = FALSE WHERE id = 5", &[]);
    refresh(&s, &app, &token).assert_error(400, "invalid_grant");
    s.execute("UPDATE users SET active = TRUE WHERE id = 5", &[]);
    let token = s.app_token(&app.client_id, 5);
    s.execute("UPDATE apps SET active = FALSE", &[]);
    // The token endpoint does not know a disabled app at all.
    refresh(&s, &app, &token).assert_error(401, "invalid_client");
    let minted: i64 = s
        .query_value("SELECT COUNT(*) FROM oauth_tokens", &[])
        .unwrap();
    assert_eq!(minted, 2, "only the two pairs `app token` made");
}

#[test]
fn a_reused_authorization_code_revokes_the_tokens_it_produced() {
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let app = add_app(&s);
    let cookie = s.sign_in("5", "pw");
    let code = authorization_code(&s, &app, &cookie);
    let first = exchange(&s, &app, &code);
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    // Refreshed once: the new pair descends from the same code.
    let second = refresh(&s, &app, &first);
    assert_eq!(second.status, 200, "{}", second.body);
    let second = second.json();
    assert_eq!(with_token(&s, &second, "im.notify.system.add").status, 200);
    // An unrelated grant of the same user and app.
    let other_code = authorization_code(&s, &app, &cookie);
    let other = exchange(&s, &app, &other_code).json();

    exchange(&s, &app, &code).assert_error(400, "invalid_grant");
    with_token(&s, &second, "im.notify.system.add").assert_error(401, "invalid_token");
    refresh(&s, &app, &second).assert_error(400, "invalid_grant");
    assert_eq!(
        with_token(&s, &other, "im.notify.system.add").status,
        200,
        "tokens of another code stay valid"
    );
}

#[test]
fn app_add_refuses_other_schemes_and_unknown_scopes() {
    let s = Server::start();
    for (uri, scope) in [
        ("javascript:alert(document.cookie)", "im"),
        ("JAVASCRIPT://x/%0aalert(1)", "im"),
        ("data:text/html,<script>x</script>", "im"),
        ("ftp://files.example.com/", "im"),
        ("https://ok.example.com/cb", "im,crm"),
        ("https://ok.example.com/cb", "admin"),
    ] {
        let out = s.cli(&[
            "app",
            "add",
            "--name",
            "X",
            "--scope",
            scope,
            "--redirect-uri",
            uri,
        ]);
        assert!(!out.status.success(), "{uri} {scope} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--redirect-uri") || err.contains("--scope"),
            "{err}"
        );
    }
    let apps: i64 = s.query_value("SELECT COUNT(*) FROM apps", &[]).unwrap();
    assert_eq!(apps, 0);
    ok(&s.cli(&[
        "app",
        "add",
        "--name",
        "Local",
        "--scope",
        "im,user",
        "--redirect-uri",
        "http://127.0.0.1:9000/cb",
    ]));
}
