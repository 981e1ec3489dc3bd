//! The test-server toolkit (issue 16) against the real binary: the admin API's token, the
//! request journal, faults, the test clock, reset and fixtures.

mod common;

use common::{Options, Response, Server};
use serde_json::{json, Value};

const TOKEN: &str = "toolkit-test-admin-token-0123456789";

fn start() -> Server {
    Server::start_with(Options {
        envs: vec![("IMNOTIFY_ADMIN__TOKEN".into(), TOKEN.into())],
        ..Options::default()
    })
}

fn admin(s: &Server, method: &str, path: &str, body: Option<Value>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    s.request(
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

fn admin_ok(s: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = admin(s, method, path, body);
    assert!(
        r.status == 200 || r.status == 201,
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

fn journal(s: &Server, query: &str) -> Vec<Value> {
    admin_ok(s, "GET", &format!("/admin/api/requests{query}"), None)["requests"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every admin route, with a body where it takes one.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/api/requests"),
    ("DELETE", "/admin/api/requests"),
    ("GET", "/admin/api/faults"),
    ("POST", "/admin/api/faults"),
    ("DELETE", "/admin/api/faults"),
    ("DELETE", "/admin/api/faults/1"),
    ("GET", "/admin/api/clock"),
    ("POST", "/admin/api/clock"),
    ("DELETE", "/admin/api/clock"),
    ("POST", "/admin/api/reset"),
    ("GET", "/admin/api/mail"),
    ("DELETE", "/admin/api/mail"),
    ("GET", "/admin/api/no-such-route"),
    ("GET", "/admin/api"),
];

#[test]
fn every_admin_route_refuses_a_missing_or_wrong_token() {
    let s = start();
    s.add_user(5, &["--password", "pw-of-five"]);
    let cookie = s.sign_in("5", "pw-of-five");
    s.notify(json!({"USER_ID": 1, "MESSAGE": "before"}));
    for (method, path) in ROUTES {
        let body = br#"{"advance_seconds": 100000, "method": "*", "error": "INTERNAL_SERVER_ERROR", "keep_directory": false}"#;
        for headers in [
            vec![],
            vec![("Authorization", "Bearer wrong-token")],
            vec![("Authorization", "Basic dG9rZW46")],
            vec![("Authorization", "Bearer ")],
            // A signed-in user who is not an admin.
            vec![("Cookie", cookie.as_str())],
        ] {
            let r = s.request(method, path, &headers, body);
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.body);
            assert_eq!(r.json()["error"], "unauthorized");
            assert!(r.header("www-authenticate").is_some());
        }
    }
    // Nothing happened: the clock did not move, nothing was reset, no fault exists.
    let clock = admin_ok(&s, "GET", "/admin/api/clock", None);
    assert_eq!(clock["offset_seconds"], 0.0);
    assert_eq!(s.notification_count(), 1);
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/faults", None)["faults"],
        json!([])
    );
    // With the token, an unknown admin route is a JSON 404, not the REST envelope.
    let r = admin(&s, "GET", "/admin/api/no-such-route", None);
    assert_eq!(r.status, 404, "{}", r.body);

    // The admin API is not a REST method: not under /rest/, not in the OpenAPI document.
    let doc = s.get("/openapi.json").body;
    assert!(
        !doc.contains("admin"),
        "admin routes leaked into /openapi.json"
    );
    let r = s.request(
        "GET",
        "/rest/admin/api/requests",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "ERROR_METHOD_NOT_FOUND");
}

#[test]
fn the_first_start_prints_an_admin_token_and_keeps_only_its_hash() {
    let mut s = Server::start();
    let token = s
        .admin_token
        .clone()
        .expect("an admin token line on first start");
    assert!(token.len() >= 32, "{token}");
    let auth = format!("Bearer {token}");
    let r = s.request("GET", "/admin/api/clock", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let stored: String = s
        .query_value::<String>(
            "SELECT value FROM settings WHERE key = 'admin_token_sha256'",
            &[],
        )
        .unwrap();
    assert_ne!(stored, token);
    assert_eq!(stored.len(), 64);
    // A restart keeps the same token and does not print it again.
    s.terminate();
    s.restart();
    let r = s.request("GET", "/admin/api/clock", &[("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn an_admin_session_may_use_the_api_with_its_csrf_token() {
    let s = start();
    s.add_user(9, &["--admin", "--password", "pw-of-nine"]);
    let cookie = s.sign_in("9", "pw-of-nine");
    let r = s.request("GET", "/admin/api/faults", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    // A change needs the session's CSRF token as well: a cross-site form cannot send it.
    let body = br#"{"advance_seconds": 10}"#;
    let r = s.request("POST", "/admin/api/clock", &[("Cookie", &cookie)], body);
    assert_eq!(r.status, 401, "{}", r.body);
    // The session's CSRF token, as the consent page shows it.
    let (client_id, _) = s.add_app("Clocked", &[]);
    let csrf = s.consent_csrf(&client_id, &cookie);
    let r = s.request(
        "POST",
        "/admin/api/clock",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_journal_shows_a_webhook_call_with_its_params_and_never_the_code() {
    let s = start();
    let code = s
        .hook
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(code.len(), 16);
    let id = s.notify(json!({"USER_ID": 1, "MESSAGE": "journal me", "TAG": "J1", "ap": "x"}));
    // The same call with the code as a parameter too (aplogin/ap form).
    let r = s.post_form(
        "/rest/im.notify.system.add",
        &format!("aplogin=1&ap={code}&USER_ID=1&MESSAGE=second&password=hunter2"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A failing call: wrong code.
    let r = s.post_json(
        "/rest/1/wrongcodewrongco/im.notify.system.add",
        &json!({"USER_ID": 1, "MESSAGE": "x"}),
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let raw = admin(
        &s,
        "GET",
        "/admin/api/requests?method=im.notify.system.add",
        None,
    );
    assert_eq!(raw.status, 200);
    assert!(
        !raw.body.contains(&code),
        "the webhook code leaked: {}",
        raw.body
    );
    assert!(
        !raw.body.contains("hunter2"),
        "a password leaked: {}",
        raw.body
    );
    let entries = raw.json()["requests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3, "{entries:?}");
    // Newest first.
    let (failed, second, first) = (&entries[0], &entries[1], &entries[2]);
    assert!(first["id"].as_u64() < second["id"].as_u64());
    assert_eq!(first["method"], "im.notify.system.add");
    assert_eq!(first["transport"], "json");
    assert_eq!(first["params"]["MESSAGE"], "journal me");
    assert_eq!(first["params"]["TAG"], "J1");
    assert_eq!(first["params"]["USER_ID"], 1);
    assert_eq!(first["status"], 200);
    assert_eq!(first["error"], Value::Null);
    assert_eq!(first["result"], id);
    assert_eq!(first["credential"]["kind"], "webhook");
    assert_eq!(first["credential"]["user_id"], 1);
    assert!(first["credential"]["webhook_id"].as_i64().unwrap() >= 1);
    assert!(first["at"].as_str().unwrap().ends_with('Z'));
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(second["params"]["password"], "***");
    assert_eq!(failed["status"], 403);
    assert_eq!(failed["error"], "INVALID_CREDENTIALS");
    assert_eq!(failed["credential"]["kind"], "webhook");
    assert_eq!(failed["result"], Value::Null);

    // Filters: status, since_id, limit.
    assert_eq!(journal(&s, "?status=403").len(), 1);
    let since = first["id"].as_u64().unwrap();
    assert_eq!(journal(&s, &format!("?since_id={since}")).len(), 2);
    assert_eq!(journal(&s, "?limit=1").len(), 1);

    // A batch is recorded with each of its commands, which name it.
    let r = s.post_json(
        &s.hook_url("batch"),
        &json!({"cmd": {"a": "im.notify.system.add?USER_ID=1&MESSAGE=in%20batch", "b": "im.counters.get"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let all = journal(&s, "");
    let batch = all.iter().find(|e| e["method"] == "batch").unwrap();
    let commands: Vec<_> = all
        .iter()
        .filter(|e| e["batch_id"] == batch["id"])
        .collect();
    assert_eq!(commands.len(), 2, "{all:?}");
    assert!(commands.iter().all(|e| e["transport"] == "batch"));
    let add = commands
        .iter()
        .find(|e| e["method"] == "im.notify.system.add")
        .unwrap();
    assert_eq!(add["params"]["MESSAGE"], "in batch");

    // DELETE clears it.
    admin_ok(&s, "DELETE", "/admin/api/requests", None);
    assert!(journal(&s, "").iter().all(|e| e["method"] != "batch"));
}

#[test]
fn the_journal_is_bounded_in_entries_and_in_bytes() {
    let s = Server::start_with(Options {
        envs: vec![
            ("IMNOTIFY_ADMIN__TOKEN".into(), TOKEN.into()),
            ("IMNOTIFY_JOURNAL__CAPACITY".into(), "3".into()),
            ("IMNOTIFY_JOURNAL__ENTRY_BYTES".into(), "256".into()),
        ],
        ..Options::default()
    });
    let big = "x".repeat(200_000);
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": big}),
    );
    assert_eq!(r.status, 200);
    for i in 0..4 {
        s.notify(json!({"USER_ID": 1, "MESSAGE": format!("m{i}")}));
    }
    let raw = admin(&s, "GET", "/admin/api/requests", None);
    let entries = raw.json()["requests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["params"]["MESSAGE"], "m3");

    admin_ok(&s, "DELETE", "/admin/api/requests", None);
    s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": big}),
    );
    let raw = admin(&s, "GET", "/admin/api/requests", None);
    assert!(raw.body.len() < 2048, "{} bytes", raw.body.len());
    assert_eq!(raw.json()["requests"][0]["truncated"], true);

    let off = Server::start_with(Options {
        envs: vec![
            ("IMNOTIFY_ADMIN__TOKEN".into(), TOKEN.into()),
            ("IMNOTIFY_JOURNAL__CAPACITY".into(), "0".into()),
        ],
        ..Options::default()
    });
    off.notify(json!({"USER_ID": 1, "MESSAGE": "not recorded"}));
    assert!(journal(&off, "").is_empty());
}

#[test]
fn a_fault_answers_n_times_as_the_real_server_would_then_the_call_succeeds() {
    let s = start();
    let f = admin_ok(
        &s,
        "POST",
        "/admin/api/faults",
        Some(
            json!({"method": "im.notify.system.add", "error": "QUERY_LIMIT_EXCEEDED", "times": 3}),
        ),
    );
    let fault_id = f["id"].as_u64().unwrap();
    for _ in 0..3 {
        let r = s.post_json(
            &s.hook_url("im.notify.system.add"),
            &json!({"USER_ID": 1, "MESSAGE": "faulted"}),
        );
        r.assert_error(503, "QUERY_LIMIT_EXCEEDED");
    }
    assert_eq!(s.notification_count(), 0);
    // Another method is untouched meanwhile.
    let r = s.get(&s.hook_url("im.counters.get"));
    assert_eq!(r.status, 200, "{}", r.body);
    s.notify(json!({"USER_ID": 1, "MESSAGE": "fourth time lucky"}));

    let faults = admin_ok(&s, "GET", "/admin/api/faults", None)["faults"].clone();
    assert_eq!(faults[0]["hits"], 3);
    assert_eq!(faults[0]["remaining"], 0);
    let marked: Vec<_> = journal(&s, "?method=im.notify.system.add")
        .into_iter()
        .filter(|e| e["fault_id"] == fault_id)
        .collect();
    assert_eq!(marked.len(), 3);
    assert!(marked
        .iter()
        .all(|e| e["error"] == "QUERY_LIMIT_EXCEEDED" && e["status"] == 503));

    // An XML call gets the XML envelope of the error; a delay answers late.
    admin_ok(&s, "DELETE", &format!("/admin/api/faults/{fault_id}"), None);
    let r = admin(&s, "DELETE", &format!("/admin/api/faults/{fault_id}"), None);
    assert_eq!(r.status, 404);
    admin_ok(
        &s,
        "POST",
        "/admin/api/faults",
        Some(
            json!({"method": "im.counters.get", "error": "OPERATION_TIME_LIMIT", "delay_ms": 300, "times": 1}),
        ),
    );
    let t = std::time::Instant::now();
    let r = s.get(&s.hook_url("im.counters.get.xml"));
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(r.status, 429);
    assert!(
        r.body.contains("<error>OPERATION_TIME_LIMIT</error>"),
        "{}",
        r.body
    );

    // A code outside the catalogue is refused.
    let r = admin(
        &s,
        "POST",
        "/admin/api/faults",
        Some(json!({"method": "*", "error": "MADE_UP"})),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn inside_a_batch_a_faulted_command_fails_alone() {
    let s = start();
    admin_ok(
        &s,
        "POST",
        "/admin/api/faults",
        Some(json!({"method": "im.notify.system.add", "error": "INTERNAL_SERVER_ERROR"})),
    );
    let r = s.post_json(
        &s.hook_url("batch"),
        &json!({"cmd": {
            "a": "im.notify.system.add?USER_ID=1&MESSAGE=x",
            "b": "im.counters.get",
        }}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let result = &r.json()["result"];
    assert_eq!(
        result["result_error"]["a"]["error"], "INTERNAL_SERVER_ERROR",
        "{result}"
    );
    assert!(result["result_error"].get("b").is_none(), "{result}");
    assert!(result["result"]["b"].is_object(), "{result}");
    assert_eq!(s.notification_count(), 0);
}

/// A batch's run of adds (checked one by one, stored together: issue 15 goal 4) is journaled
/// command by command, in the commands' order and under the batch's id, and a fault answers
/// one command of the run alone. With `halt`, the faulted command stops the batch.
#[test]
fn a_run_of_adds_is_journaled_and_faulted_command_by_command() {
    let s = start();
    let fault = |times: u64| {
        admin_ok(
            &s,
            "POST",
            "/admin/api/faults",
            Some(json!({"method": "im.notify.system.add", "error": "INTERNAL_SERVER_ERROR", "times": times})),
        )["id"]
            .as_u64()
            .unwrap()
    };
    let fault_id = fault(1);
    let r = s.post_json(
        &s.hook_url("batch"),
        &json!({"cmd": {
            "a": "im.notify.system.add?USER_ID=1&MESSAGE=faulted",
            "b": "im.notify.system.add?USER_ID=1&MESSAGE=stored",
            "c": "im.notify.system.add?USER_ID=1",
            "d": "im.notify.system.add?USER_ID=1&MESSAGE=also%20stored",
        }}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let result = &j["result"];
    assert_eq!(
        result["result_error"]["a"]["error"], "INTERNAL_SERVER_ERROR",
        "{result}"
    );
    assert_eq!(
        result["result_error"]["c"]["error"], "MESSAGE_EMPTY",
        "{result}"
    );
    assert!(
        result["result"]["b"].is_i64() && result["result"]["d"].is_i64(),
        "{result}"
    );
    assert_eq!(s.notification_count(), 2);

    let all = journal(&s, "");
    let batch = all.iter().find(|e| e["method"] == "batch").unwrap();
    let mut commands: Vec<_> = all
        .iter()
        .filter(|e| e["batch_id"] == batch["id"])
        .collect();
    commands.sort_by_key(|e| e["id"].as_u64());
    let seen: Vec<_> = commands
        .iter()
        .map(|e| (e["params"]["MESSAGE"].clone(), e["status"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("faulted"), json!(500)),
            (json!("stored"), json!(200)),
            (Value::Null, json!(400)),
            (json!("also stored"), json!(200)),
        ],
        "{commands:?}"
    );
    assert_eq!(commands[0]["fault_id"], fault_id);
    assert!(
        commands[1..].iter().all(|e| e["fault_id"].is_null()),
        "{commands:?}"
    );
    assert_eq!(commands[1]["result"], result["result"]["b"]);
    assert_eq!(commands[2]["error"], "MESSAGE_EMPTY");

    fault(1);
    let r = s.post_json(
        &s.hook_url("batch"),
        &json!({"halt": 1, "cmd": [
            "im.notify.system.add?USER_ID=1&MESSAGE=x",
            "im.notify.system.add?USER_ID=1&MESSAGE=y",
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let result = &r.json()["result"];
    assert_eq!(
        result["result_error"][0]["error"], "INTERNAL_SERVER_ERROR",
        "{result}"
    );
    assert_eq!(result["result"], json!([]), "{result}");
    assert_eq!(s.notification_count(), 2);
}

#[test]
fn advancing_the_clock_expires_the_access_token_and_the_refresh_token_still_works() {
    let s = start();
    let (client_id, client_secret) = s.add_app("Clocked", &[]);
    let t = s.app_token(&client_id, 1);
    let access = t["access_token"].as_str().unwrap();
    let refresh = t["refresh_token"].as_str().unwrap();
    let call = |token: &str| {
        s.post_json(
            &format!("/rest/im.notify.system.add?auth={token}"),
            &json!({"USER_ID": 1, "MESSAGE": "clock"}),
        )
    };
    assert_eq!(call(access).status, 200);
    let before = admin_ok(&s, "GET", "/admin/api/clock", None)["unix"]
        .as_f64()
        .unwrap();

    let moved = admin_ok(
        &s,
        "POST",
        "/admin/api/clock",
        Some(json!({"advance_seconds": 3601})),
    );
    assert!(moved["offset_seconds"].as_f64().unwrap() >= 3601.0);
    assert!(moved["unix"].as_f64().unwrap() - before >= 3601.0);
    call(access).assert_error(401, "expired_token");
    // The time block follows the clock too.
    let r = s.get(&s.hook_url("server.time"));
    let server_time = r.json()["time"]["start"].as_f64().unwrap();
    assert!(server_time - before >= 3601.0, "{}", r.body);

    let r = s.get(&format!(
        "/oauth/token/?grant_type=refresh_token&client_id={client_id}&client_secret={client_secret}&refresh_token={refresh}"
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(call(&fresh).status, 200);

    // DELETE goes back to real time, where the new token is valid too.
    let back = admin_ok(&s, "DELETE", "/admin/api/clock", None);
    assert_eq!(back["offset_seconds"], 0.0);
    assert_eq!(call(&fresh).status, 200);
    let r = admin(
        &s,
        "POST",
        "/admin/api/clock",
        Some(json!({"advance_seconds": -5})),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn reset_keeps_the_directory_and_empties_the_rest_and_ids_go_on() {
    let s = start();
    s.add_user(5, &[]);
    let hook5 = s.add_webhook(5, "im");
    let first = s.notify(json!({"USER_ID": 5, "MESSAGE": "one"}));
    let second = s.notify(json!({"USER_ID": 1, "MESSAGE": "two"}));
    admin_ok(
        &s,
        "POST",
        "/admin/api/faults",
        Some(json!({"method": "user.get", "error": "INTERNAL_SERVER_ERROR"})),
    );
    let count = |sql: &str| -> i64 { s.query_value(sql, &[]).unwrap() };
    assert!(count("SELECT COUNT(*) FROM events") > 0);
    let r = admin_ok(&s, "POST", "/admin/api/reset", None);
    assert_eq!(r["keep_directory"], true);
    assert_eq!(s.notification_count(), 0);
    assert_eq!(count("SELECT COUNT(*) FROM events"), 0);
    assert_eq!(count("SELECT COUNT(*) FROM outbox"), 0);
    assert!(journal(&s, "").is_empty());
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/faults", None)["faults"],
        json!([])
    );
    // The directory stays: both webhooks still work, and ids carry on past the old ones.
    let r = s.post_json(
        &format!("{hook5}im.notify.system.add"),
        &json!({"USER_ID": 5, "MESSAGE": "after"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let after = r.json()["result"].as_i64().unwrap();
    assert!(after > first.max(second), "{after} after {first}, {second}");
    let counters = s.get(&format!("{hook5}im.counters.get")).json();
    assert_eq!(counters["result"]["TYPE"]["NOTIFY"], 1, "{counters}");
    let chat = s.get(&format!("{hook5}im.notify.get")).json();
    assert_eq!(chat["result"]["total_count"], 1, "{chat}");

    // Without the directory: users, webhooks and apps go too.
    let r = admin_ok(
        &s,
        "POST",
        "/admin/api/reset",
        Some(json!({"keep_directory": false})),
    );
    assert_eq!(r["keep_directory"], false);
    let users: i64 = s
        .query_value::<i64>("SELECT COUNT(*) FROM users", &[])
        .unwrap();
    assert_eq!(users, 0);
    let r = s.post_json(
        &format!("{hook5}im.notify.system.add"),
        &json!({"USER_ID": 5, "MESSAGE": "gone"}),
    );
    r.assert_error(403, "INVALID_CREDENTIALS");
    // And a user made again gets notification ids that still go on.
    s.add_user(5, &[]);
    let hook = s.add_webhook(5, "im");
    let r = s.post_json(
        &format!("{hook}im.notify.system.add"),
        &json!({"USER_ID": 5, "MESSAGE": "reborn"}),
    );
    assert!(r.json()["result"].as_i64().unwrap() > after, "{}", r.body);
}

const FIXTURES: &str = r#"# CI fixtures
admin_token = "fixture-admin-token-0123456789"

[[users]]
id = 7
name = "Anna"
email = "anna@example.test"
password = "anna-password"
admin = true

[[webhooks]]
user_id = 7
code = "fixedwebhookcode1"
scope = ["im", "user"]

[[apps]]
client_id = "local.ci"
client_secret = "fixed-client-secret-1"
name = "CI app"
scope = ["im"]
redirect_uri = "https://ci.example/oauth"
"#;

/// The rows fixtures write, as text, to compare before and after.
fn directory_dump(s: &Server) -> String {
    let mut out = String::new();
    // Hashes as stored bytes: `query` shows blobs (SQLite) and bytea (PostgreSQL) as hex.
    for sql in [
        "SELECT id, name, last_name, email, CAST(active AS INTEGER), CAST(is_admin AS INTEGER), created_at, password_hash FROM users ORDER BY id",
        "SELECT id, user_id, code_hash, scopes, CAST(active AS INTEGER), created_at, rate_per_second, rate_burst FROM webhooks ORDER BY id",
        "SELECT id, client_id, secret_hash, name, scopes, redirect_uri, allowed_users, CAST(active AS INTEGER), created_at FROM apps ORDER BY id",
        "SELECT key, value FROM settings ORDER BY key",
    ] {
        for row in s.query(sql, &[]) {
            out.push_str(&format!("{row:?}"));
            out.push('\n');
        }
    }
    out
}

#[test]
fn fixtures_give_working_fixed_credentials_and_applying_twice_changes_nothing() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("fixtures.toml");
    std::fs::write(&path, FIXTURES).unwrap();
    let mut s = Server::start_with(Options {
        args: vec!["--fixtures".into(), path.display().to_string()],
        ..Options::default()
    });
    // The fixed webhook works at once.
    let r = s.post_json(
        "/rest/7/fixedwebhookcode1/im.notify.system.add",
        &json!({"USER_ID": 7, "MESSAGE": "from CI"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.get("/rest/7/fixedwebhookcode1/user.current");
    assert_eq!(r.json()["result"]["NAME"], "Anna", "{}", r.body);
    // The fixed admin token, and no token printed: the file gave one.
    assert_eq!(s.admin_token, None);
    let r = s.request(
        "GET",
        "/admin/api/requests",
        &[("Authorization", "Bearer fixture-admin-token-0123456789")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The fixed app: its secret is the one in the file.
    let t = s.app_token("local.ci", 7);
    let r = s.get(&format!(
        "/oauth/token/?grant_type=refresh_token&client_id=local.ci&client_secret=fixed-client-secret-1&refresh_token={}",
        t["refresh_token"].as_str().unwrap()
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    // The password signs in.
    s.sign_in("7", "anna-password");
    // Plain codes and secrets are nowhere in the database.
    let dump = directory_dump(&s);
    for plain in [
        "fixedwebhookcode1",
        "fixed-client-secret-1",
        "fixture-admin-token",
        "anna-password",
    ] {
        assert!(!dump.contains(plain), "{plain} stored in plain text");
    }

    // Applying the same file again (a restart) changes nothing.
    s.terminate();
    s.restart();
    assert_eq!(directory_dump(&s), dump);
    let r = s.post_json(
        "/rest/7/fixedwebhookcode1/im.notify.system.add",
        &json!({"USER_ID": 7, "MESSAGE": "again"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_wrong_fixtures_file_stops_the_start_and_names_the_line() {
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("data");
    for (text, line, needle) in [
        ("[[users]]\nid = 7\nname = \"A\"\n\n[[webhooks]]\nuser_id = 99\ncode = \"fixedwebhookcode1\"\nscope = [\"im\"]\n", 5, "user 99 does not exist"),
        ("[[users]]\nid = 7\nname = \"A\"\ncolour = \"red\"\n", 4, "unknown field"),
        ("[[webhooks]]\nuser_id = 1\ncode = \"short\"\nscope = [\"im\"]\n", 1, "8 to 64"),
        ("[[apps]]\nclient_id = \"local.ci\"\nclient_secret = \"fixed-client-secret-1\"\nname = \"x\"\nscope = [\"crm\"]\n", 1, "unknown scope"),
        ("[[users]]\nid = \"seven\"\nname = \"A\"\n", 2, "invalid type"),
    ] {
        let path = files.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--fixtures"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&data)
            .env_remove("IMNOTIFY_DATA_DIR")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains(&format!("bad.toml:{line}:")) && err.contains(needle),
            "expected line {line} and {needle:?} in: {err}"
        );
    }
}

#[test]
fn the_cli_takes_fixed_codes_and_client_credentials_and_repeats_safely() {
    let s = start();
    for _ in 0..2 {
        let v = s.cli_json(&[
            "webhook",
            "add",
            "--user-id",
            "1",
            "--code",
            "cicode12345678",
            "--scope",
            "im",
            "--json",
        ]);
        assert_eq!(v["code"], "cicode12345678");
        let app = s.add_app(
            "CI",
            &[
                "--client-id",
                "local.fixed",
                "--client-secret",
                "fixed-secret-99",
            ],
        );
        assert_eq!(app, ("local.fixed".into(), "fixed-secret-99".into()));
    }
    let count = |sql: &str| -> i64 { s.query_value(sql, &[]).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM webhooks"),
        2,
        "the first-start one and ours"
    );
    assert_eq!(count("SELECT COUNT(*) FROM apps"), 1);
    let r = s.post_json(
        "/rest/1/cicode12345678/im.notify.system.add",
        &json!({"USER_ID": 1, "MESSAGE": "fixed"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bad = s.cli(&[
        "webhook",
        "add",
        "--user-id",
        "1",
        "--code",
        "no/slash",
        "--scope",
        "im",
    ]);
    assert!(!bad.status.success());
    let half = s.cli(&[
        "app",
        "add",
        "--name",
        "x",
        "--scope",
        "im",
        "--client-id",
        "local.y",
    ]);
    assert!(!half.status.success(), "--client-id needs --client-secret");
}

/// Runs an admin API command of the CLI against `s`, with `token`.
fn remote(s: &Server, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::BIN)
        .args(args)
        .args(["--url", &s.base, "--token", token])
        .env_remove("IMNOTIFY_ADMIN__TOKEN")
        .output()
        .unwrap()
}

fn remote_json(s: &Server, args: &[&str]) -> Value {
    let out = remote(s, TOKEN, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_cli_forms_of_the_admin_api_call_the_running_server() {
    let s = start();
    let f = remote_json(
        &s,
        &[
            "fault",
            "add",
            "--method",
            "im.notify.system.add",
            "--error",
            "expired_token",
            "--times",
            "1",
        ],
    );
    assert_eq!(f["remaining"], 1);
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "cli"}),
    );
    r.assert_error(401, "expired_token");
    s.notify(json!({"USER_ID": 1, "MESSAGE": "cli"}));
    let listed = remote_json(&s, &["fault", "list"]);
    assert_eq!(listed["faults"][0]["hits"], 1);

    let j = remote_json(
        &s,
        &[
            "requests",
            "list",
            "--method",
            "im.notify.system.add",
            "--status",
            "401",
        ],
    );
    let entries = j["requests"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{j}");
    assert_eq!(entries[0]["fault_id"], f["id"]);

    let c = remote_json(&s, &["clock", "advance", "--seconds", "90"]);
    assert!(c["offset_seconds"].as_f64().unwrap() >= 90.0);
    let c = remote_json(&s, &["clock", "reset"]);
    assert_eq!(c["offset_seconds"], 0.0);

    remote_json(&s, &["reset"]);
    assert_eq!(s.notification_count(), 0);
    assert_eq!(remote_json(&s, &["fault", "list"])["faults"], json!([]));
    remote_json(&s, &["requests", "clear"]);

    // A wrong token: the command fails and says why.
    let out = remote(&s, "not-the-token", &["requests", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn the_admin_page_is_for_admins_escapes_what_it_shows_and_checks_csrf() {
    let s = start();
    s.add_user(5, &["--password", "pw-of-five"]);
    s.add_user(9, &["--admin", "--password", "pw-of-nine"]);
    let r = s.get("/admin/");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=/admin/"));
    let user = s.sign_in("5", "pw-of-five");
    let r = s.request("GET", "/admin/", &[("Cookie", &user)], b"");
    assert_eq!(r.status, 403, "{}", r.body);

    s.notify(
        json!({"USER_ID": 1, "MESSAGE": "<script>alert(1)</script>", "TAG": "\"><img src=x>"}),
    );
    let admin_cookie = s.sign_in("9", "pw-of-nine");
    let r = s.request("GET", "/admin/", &[("Cookie", &admin_cookie)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    // An empty icon of its own, allowed by the policy: otherwise the browser asks for
    // /favicon.ico and logs the 404 in the console of every admin page load.
    assert!(
        r.body.contains("<link rel=\"icon\" href=\"data:,\">"),
        "{}",
        r.body
    );
    assert!(csp.contains("img-src 'self' data:"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(!r.body.contains("<script>alert"), "unescaped: {}", r.body);
    assert!(!r.body.contains("<img src=x>"), "unescaped: {}", r.body);
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(r.body.contains("im.notify.system.add"));
    // The one script is the file, never inline.
    assert_eq!(r.body.matches("<script").count(), 1);
    assert!(r.body.contains("<script src=\"/admin/admin.js\"></script>"));
    for (path, ty) in [
        ("/admin/admin.js", "text/javascript"),
        ("/admin/admin.css", "text/css"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with(ty));
    }

    // A fault form without the session's CSRF token changes nothing.
    let form = "action=add&method=user.get&error=INTERNAL_SERVER_ERROR";
    let r = s.post_form_as("/admin/", &admin_cookie, &format!("{form}&csrf=forged"));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/faults", None)["faults"],
        json!([])
    );
    let csrf = common::csrf_from(
        &s.request("GET", "/admin/", &[("Cookie", &admin_cookie)], b"")
            .body,
    );
    let r = s.post_form_as("/admin/", &admin_cookie, &format!("{form}&csrf={csrf}"));
    // Post/Redirect/Get: back to the page, which shows the new fault.
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/admin/"));
    let faults = admin_ok(&s, "GET", "/admin/api/faults", None)["faults"].clone();
    assert_eq!(faults[0]["method"], "user.get");
    let page = s.request("GET", "/admin/", &[("Cookie", &admin_cookie)], b"");
    assert!(page.body.contains("user.get"));
    let id = faults[0]["id"].as_u64().unwrap();
    let r = s.post_form_as(
        "/admin/",
        &admin_cookie,
        &format!("action=remove&id={id}&csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/faults", None)["faults"],
        json!([])
    );
}

/// A server that captures mail (no SMTP configured), with user 2 to mail to and `extra`
/// settings (by default the e-mail delay is 600 s).
fn start_capturing(extra: &[(&str, &str)]) -> Server {
    let mut envs = common::envs(&[
        ("IMNOTIFY_ADMIN__TOKEN", TOKEN),
        ("IMNOTIFY_EMAIL__CAPTURE", "true"),
    ]);
    envs.extend(common::envs(extra));
    let s = Server::start_with(Options {
        envs,
        ..Options::default()
    });
    s.add_user(2, &["--email", "anna@example.org"]);
    s
}

/// Polls the captured mail until `n` are there (the worker looks every second).
fn wait_for_mail(s: &Server, n: usize) -> Vec<Value> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = admin_ok(s, "GET", "/admin/api/mail", None);
        let mail = v["mail"].as_array().unwrap().clone();
        if mail.len() >= n || std::time::Instant::now() > until {
            return mail;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn advancing_the_clock_past_the_email_delay_captures_the_unread_notification_only() {
    let s = start_capturing(&[]);
    let unread = s.notify(json!({"USER_ID": 2, "MESSAGE": "Build [b]failed[/b]"}));
    let read = s.notify(json!({"USER_ID": 2, "MESSAGE": "read in time"}));
    let hook2 = s.add_webhook(2, "im");
    let r = s.post_json(
        &format!("{hook2}im.notify.read"),
        &json!({"ID": read, "ONLY_CURRENT": "Y"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Not due yet: the worker has had time to look, and keeps nothing.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let v = admin_ok(&s, "GET", "/admin/api/mail", None);
    assert_eq!(v["capture"], true);
    assert_eq!(v["mail"], json!([]), "{v}");

    admin_ok(
        &s,
        "POST",
        "/admin/api/clock",
        Some(json!({"advance_seconds": 601})),
    );
    let mail = wait_for_mail(&s, 1);
    assert_eq!(mail.len(), 1, "{mail:?}");
    let m = &mail[0];
    assert_eq!(m["user_id"], 2);
    assert_eq!(m["notification_ids"], json!([unread]));
    let h = &m["headers"];
    assert!(
        h["To"].as_str().unwrap().contains("anna@example.org"),
        "{m}"
    );
    assert!(h["From"].as_str().unwrap().contains('@'), "{m}");
    assert_eq!(h["Subject"], "System notification: Build failed");
    assert!(h["Message-ID"]
        .as_str()
        .unwrap()
        .contains(&format!("imnotify.{unread}.")));
    assert!(h["List-Unsubscribe"]
        .as_str()
        .unwrap()
        .contains("/unsubscribe?u=2&s="));
    assert!(m["text"].as_str().unwrap().contains("Build failed"), "{m}");
    assert!(
        m["html"]
            .as_str()
            .unwrap()
            .contains("<strong>failed</strong>"),
        "{m}"
    );
    // Kept counts as sent: the worker does not keep it again, and the outbox says sent.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let v = admin_ok(&s, "GET", "/admin/api/mail", None);
    assert_eq!(v["mail"].as_array().unwrap().len(), 1, "{v}");
    let out = s.cli(&["outbox", "list", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state_of = |id: i64| {
        rows.iter()
            .find(|r| r["notification_id"] == id)
            .map(|r| r["state"].clone())
    };
    assert_eq!(state_of(unread), Some(json!("sent")), "{rows:?}");
    assert_eq!(state_of(read), Some(json!("skipped")), "{rows:?}");

    // The CLI form shows the same mail and clears it.
    let listed = remote_json(&s, &["mail", "list"]);
    assert_eq!(listed["mail"][0]["id"], m["id"]);
    assert_eq!(listed["mail"][0]["headers"]["Subject"], h["Subject"]);
    remote_json(&s, &["mail", "clear"]);
    assert_eq!(remote_json(&s, &["mail", "list"])["mail"], json!([]));

    // Reset empties the capture too.
    s.notify(json!({"USER_ID": 2, "MESSAGE": "again"}));
    admin_ok(
        &s,
        "POST",
        "/admin/api/clock",
        Some(json!({"advance_seconds": 601})),
    );
    assert_eq!(wait_for_mail(&s, 1).len(), 1);
    admin_ok(&s, "POST", "/admin/api/reset", None);
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/mail", None)["mail"],
        json!([])
    );
}

#[test]
fn captured_mail_is_bounded_oldest_dropped() {
    let s = start_capturing(&[
        ("IMNOTIFY_EMAIL__CAPTURE_CAPACITY", "2"),
        ("IMNOTIFY_EMAIL__DELAY_SECONDS", "0"),
    ]);
    let ids: Vec<i64> = (0..3)
        .map(|i| s.notify(json!({"USER_ID": 2, "MESSAGE": format!("n{i}")})))
        .collect();
    // All three are handled (the outbox says sent), but only the newest two are kept.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = s.cli(&["outbox", "list", "--json", "--state", "sent"]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if rows.len() == 3 || std::time::Instant::now() > until {
            assert_eq!(rows.len(), 3, "{rows:?}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mail = admin_ok(&s, "GET", "/admin/api/mail", None)["mail"].clone();
    let kept: Vec<Value> = mail
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["notification_ids"][0].clone())
        .collect();
    assert_eq!(kept, [json!(ids[2]), json!(ids[1])], "{mail}");
}

#[test]
fn the_admin_page_shows_captured_mail_escaped_and_clears_it() {
    let s = start_capturing(&[]);
    s.add_user(9, &["--admin", "--password", "pw-of-nine"]);
    let id =
        s.notify(json!({"USER_ID": 2, "MESSAGE": "Deploy <script>alert(1)</script> [b]done[/b]"}));
    admin_ok(
        &s,
        "POST",
        "/admin/api/clock",
        Some(json!({"advance_seconds": 601})),
    );
    assert_eq!(wait_for_mail(&s, 1).len(), 1);
    let cookie = s.sign_in("9", "pw-of-nine");
    let r = s.request("GET", "/admin/", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 200);
    let section = &r.body[r.body.find("<h2>Captured mail</h2>").expect("mail section")..];
    assert!(section.contains("anna@example.org"), "{section}");
    assert!(section.contains(&format!("<td>{id}</td>")), "{section}");
    assert!(section.contains("System notification: Deploy"), "{section}");
    // The HTML part is shown as escaped source, never as markup of the page.
    assert!(
        section.contains("&lt;strong&gt;done&lt;/strong&gt;"),
        "{section}"
    );
    assert!(!r.body.contains("<script>alert"), "{}", r.body);
    assert_eq!(r.body.matches("<script").count(), 1);

    let csrf = common::csrf_from(&r.body);
    let r = s.post_form_as(
        "/admin/",
        &cookie,
        &format!("action=clear_mail&csrf={csrf}"),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let r = s.request("GET", "/admin/", &[("Cookie", &cookie)], b"");
    assert!(r.body.contains("No mail yet."));
    assert_eq!(
        admin_ok(&s, "GET", "/admin/api/mail", None)["mail"],
        json!([])
    );
}

/// A file naming a user that exists neither in the database nor in the file, as a webhook's
/// owner or in an app's `allowed_users`, stops a later start before anything is written: the
/// file's own users are not half-applied.
#[test]
fn a_fixtures_file_naming_an_unknown_user_writes_nothing() {
    let mut s = Server::start();
    s.terminate();
    let files = tempfile::tempdir().unwrap();
    let users = "[[users]]\nid = 7\nname = \"Anna\"\n\n";
    let webhook = "[[webhooks]]\nuser_id = 99\ncode = \"fixedwebhookcode1\"\nscope = [\"im\"]\n";
    let app = "[[apps]]\nclient_id = \"local.ci\"\nclient_secret = \"fixed-client-secret-1\"\n\
               name = \"CI\"\nscope = [\"im\"]\nallowed_users = [7, 1, 98]\n";
    for (text, line, needle) in [
        (format!("{users}{webhook}"), 5, "user 99 does not exist"),
        (
            format!("{users}{app}"),
            5,
            "user 98 does not exist (allowed_users)",
        ),
    ] {
        let path = files.path().join("unknown.toml");
        std::fs::write(&path, &text).unwrap();
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--fixtures"])
            .arg(&path)
            .arg("--data-dir")
            .arg(s.data_dir())
            .env_remove("IMNOTIFY_DATA_DIR")
            .env_remove("IMNOTIFY_DATABASE_URL");
        if let Some(url) = &s.database_url {
            cmd.env("IMNOTIFY_DATABASE_URL", url);
        }
        // A start that takes the file serves on: stop it and fail, rather than hang.
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the start took the file: {text}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{text}");
        assert!(
            err.contains(&format!("unknown.toml:{line}:")) && err.contains(needle),
            "expected line {line} and {needle:?} in: {err}"
        );
        let count = |sql: &str| -> i64 { s.query_value(sql, &[]).unwrap() };
        assert_eq!(
            count("SELECT COUNT(*) FROM users WHERE id = 7"),
            0,
            "{text}"
        );
        assert_eq!(count("SELECT COUNT(*) FROM apps"), 0, "{text}");
    }
}

#[test]
fn a_wrong_fixtures_file_leaves_the_first_webhook_for_the_next_start() {
    let files = tempfile::tempdir().unwrap();
    let data = files.path().join("data");
    let bad = files.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[webhooks]]\nuser_id = 99\ncode = \"fixedwebhookcode1\"\nscope = [\"im\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--fixtures"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("IMNOTIFY_DATA_DIR")
        .env_remove("IMNOTIFY_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:1:") && err.contains("user 99 does not exist"),
        "{err}"
    );
    // The next start is still the first: it makes user 1's webhook and shows its code.
    let banner = common::first_start_banner(&data);
    assert!(
        banner
            .iter()
            .any(|l| l.starts_with("Webhook: ") && l.contains("/rest/1/")),
        "no webhook banner on the start after a failed one: {banner:?}"
    );
}

#[test]
fn failed_authentications_do_not_evict_real_calls_from_the_journal() {
    let s = Server::start_with(Options {
        envs: vec![
            ("IMNOTIFY_ADMIN__TOKEN".into(), TOKEN.into()),
            ("IMNOTIFY_JOURNAL__CAPACITY".into(), "30".into()),
        ],
        ..Options::default()
    });
    s.notify(json!({"USER_ID": 1, "MESSAGE": "a real call"}));
    // More bad credentials than the journal holds (and fewer than the per-IP failure burst).
    let mut refused = 0;
    for i in 0..60 {
        let r = s.post_json(
            &format!("/rest/1/wrongcode{i:08}/im.notify.system.add"),
            &json!({"USER_ID": 1, "MESSAGE": "outsider"}),
        );
        assert!(
            r.status == 401 || r.status == 403,
            "{} {}",
            r.status,
            r.body
        );
        refused = r.status;
    }
    let all = journal(&s, "");
    assert!(
        all.iter().any(|e| e["params"]["MESSAGE"] == "a real call"),
        "the real call was evicted: {all:?}"
    );
    // The latest failures are still shown, a bounded number of them.
    let failed = journal(&s, &format!("?status={refused}"));
    assert!(!failed.is_empty() && failed.len() <= 20, "{}", failed.len());
}

#[test]
fn the_journal_masks_push_and_pull_channel_ids() {
    let s = start();
    let hook = s.add_webhook(1, "im,pull_channel");
    let r = s.post_json(&format!("{hook}pull.config.get"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["result"]["channels"]["private"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries = journal(&s, "?method=pull.config.get");
    assert_eq!(entries.len(), 1);
    let text = entries[0].to_string();
    assert!(
        !text.contains(&id[..32]),
        "channel id in the journal: {text}"
    );
    assert_eq!(entries[0]["result"]["channels"]["private"]["id"], "***");
    assert_eq!(
        entries[0]["result"]["channels"]["private"]["type"],
        "private"
    );
}

#[test]
fn an_injected_fault_is_logged_as_a_warning_not_an_error() {
    let s = start();
    admin_ok(
        &s,
        "POST",
        "/admin/api/faults",
        Some(
            json!({"method": "im.notify.system.add", "error": "INTERNAL_SERVER_ERROR", "times": 1}),
        ),
    );
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "faulted"}),
    );
    r.assert_error(500, "INTERNAL_SERVER_ERROR");
    let warned = |l: &str| l.contains("\"level\":\"WARN\"") && l.contains("refused");
    let log = s.log_with(warned);
    assert!(log.lines().any(warned), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}
