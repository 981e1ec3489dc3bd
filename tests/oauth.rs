//! OAuth applications end to end over HTTP: the code flow, tokens, refresh, the errors, app tag
//! namespaces, session auth and the discovery methods.

mod common;

use common::{Response, Server};
use serde_json::{json, Value};

struct App {
    client_id: String,
    client_secret: String,
}

fn add_app(s: &Server, name: &str, scope: &str, extra: &[&str]) -> App {
    let mut args = vec!["--redirect-uri", "https://app.example.test/callback?x=1"];
    args.extend_from_slice(extra);
    let (client_id, client_secret) = s.add_app_scoped(name, scope, &args);
    assert!(client_id.starts_with("local."), "{client_id}");
    App {
        client_id,
        client_secret,
    }
}

fn call(s: &Server, method: &str, token: &str, body: Value) -> Response {
    let mut b = body;
    b["auth"] = json!(token);
    s.post_json(&format!("/rest/{method}"), &b)
}

fn query_param(url: &str, key: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_pairs(q)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn token_request(s: &Server, body: &str) -> Response {
    s.post_form("/oauth/token/", body)
}

#[test]
fn full_code_flow_with_refresh_rotation() {
    let s = Server::start();
    s.add_user(5, &["--password", "s3cret pass"]);
    let app = add_app(&s, "Tracker", "im", &[]);

    // Not signed in: sent to the login page, which comes back to the authorize URL.
    let authorize = format!("/oauth/authorize/?client_id={}&state=xyz", app.client_id);
    let r = s.get(&authorize);
    assert_eq!(r.status, 303);
    let login_url = r.header("location").unwrap().to_owned();
    assert!(login_url.starts_with("/login?next="), "{login_url}");
    assert_eq!(query_param(&login_url, "next").unwrap(), authorize);
    assert_eq!(s.get(&login_url).status, 200);

    // A wrong password is refused.
    assert_eq!(s.post_login("5", "nope", &[]).status, 401);
    let cookie = s.sign_in("5", "s3cret pass");

    // The consent page, then approval.
    let page = s.request("GET", &authorize, &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Tracker"));
    let csrf = common::csrf_from(&page.body);
    // Without the CSRF token the approval is refused.
    let forged = s.request(
        "POST",
        "/oauth/authorize/",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("client_id={}&state=xyz&approve=Y&csrf=wrong", app.client_id).as_bytes(),
    );
    assert_eq!(forged.status, 401);
    let approved = s.request(
        "POST",
        "/oauth/authorize/",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!(
            "client_id={}&state=xyz&approve=Y&csrf={}",
            app.client_id,
            enc(&csrf)
        )
        .as_bytes(),
    );
    assert_eq!(approved.status, 302, "{}", approved.body);
    let location = approved.header("location").unwrap().to_owned();
    assert!(
        location.starts_with("https://app.example.test/callback?x=1&code="),
        "{location}"
    );
    for key in [
        "code",
        "state",
        "domain",
        "member_id",
        "scope",
        "server_domain",
    ] {
        assert!(query_param(&location, key).is_some(), "{key} in {location}");
    }
    assert_eq!(query_param(&location, "state").unwrap(), "xyz");
    assert_eq!(query_param(&location, "scope").unwrap(), "im");
    assert_eq!(query_param(&location, "domain").unwrap(), s.addr);
    let code = query_param(&location, "code").unwrap();

    // Wrong secret, then the real exchange; a code works once.
    token_request(
        &s,
        &format!(
            "grant_type=authorization_code&client_id={}&client_secret=bad&code={code}",
            app.client_id
        ),
    )
    .assert_error(401, "invalid_client");
    let exchange = format!(
        "grant_type=authorization_code&client_id={}&client_secret={}&code={code}",
        app.client_id, app.client_secret
    );
    let t = token_request(&s, &exchange);
    assert_eq!(t.status, 200, "{}", t.body);
    let t = t.json();
    for key in [
        "access_token",
        "refresh_token",
        "expires",
        "expires_in",
        "scope",
        "domain",
        "server_endpoint",
        "client_endpoint",
        "member_id",
        "user_id",
        "status",
    ] {
        assert!(!t[key].is_null(), "{key} in {t}");
    }
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["user_id"], 5);
    assert_eq!(t["client_endpoint"], format!("{}/rest/", s.base));

    // Call with the token, in the body and as a Bearer header.
    let access = t["access_token"].as_str().unwrap().to_owned();
    let r = call(
        &s,
        "im.notify.system.add",
        &access,
        json!({"USER_ID": 5, "MESSAGE": "hello", "TAG": "T"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer = s.request(
        "POST",
        "/rest/im.notify.system.add.json",
        &[
            ("Authorization", &format!("Bearer {access}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"USER_ID":5,"MESSAGE":"bearer"}"#,
    );
    assert_eq!(bearer.status, 200, "{}", bearer.body);

    // Refresh: new pair; the old refresh token and old access token are spent.
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let refresh_req = format!(
        "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={refresh}",
        app.client_id, app.client_secret
    );
    let r2 = s.get(&format!("/oauth/token/?{refresh_req}"));
    assert_eq!(r2.status, 200, "{}", r2.body);
    let t2 = r2.json();
    assert_ne!(t2["access_token"], t["access_token"]);
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    let new_access = t2["access_token"].as_str().unwrap();
    assert_eq!(
        call(
            &s,
            "im.notify.system.add",
            new_access,
            json!({"USER_ID": 5, "MESSAGE": "again"})
        )
        .status,
        200
    );
    token_request(&s, &refresh_req).assert_error(400, "invalid_grant");
    call(
        &s,
        "im.notify.system.add",
        &access,
        json!({"USER_ID": 5, "MESSAGE": "x"}),
    )
    .assert_error(401, "invalid_token");

    // A code works once; presented again it also revokes what it produced (RFC 6749 §4.1.2),
    // the refreshed pair included (tests/revocation.rs has the full case).
    token_request(&s, &exchange).assert_error(400, "invalid_grant");
    call(
        &s,
        "im.notify.system.add",
        new_access,
        json!({"USER_ID": 5, "MESSAGE": "x"}),
    )
    .assert_error(401, "invalid_token");
}

#[test]
fn app_calls_carry_the_app_name_and_namespace() {
    let s = Server::start();
    let a = add_app(&s, "Alpha", "im", &[]);
    let b = add_app(&s, "Beta", "im", &[]);
    let ta = s.app_token(&a.client_id, 1);
    let tb = s.app_token(&b.client_id, 1);
    assert_eq!(ta["expires_in"], 3600);
    let send = |t: &Value, msg: &str| {
        let r = call(
            &s,
            "im.notify.system.add",
            t["access_token"].as_str().unwrap(),
            json!({"USER_ID": 1, "MESSAGE": msg, "MESSAGE_OUT": "out", "TAG": "SAME", "SUB_TAG": "S"}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["result"].as_i64().unwrap()
    };
    let a1 = send(&ta, "first");
    let b1 = send(&tb, "from beta");
    let a2 = send(&ta, "second");
    let rows: Vec<(i64, String, String, String)> = s
        .query(
            "SELECT id, text, text_out, tag FROM notifications ORDER BY id",
            &[],
        )
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                r[1].clone().unwrap(),
                r[2].clone().unwrap(),
                r[3].clone().unwrap(),
            )
        })
        .collect();
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        [b1, a2],
        "Alpha's TAG replaced only Alpha's notification (a1={a1})"
    );
    let md5_prefix = |client: &str| {
        use md5::Digest;
        hex::encode(md5::Md5::digest(client.as_bytes()))[..5].to_owned()
    };
    assert_eq!(rows[0].3, format!("MP|{}|SAME", md5_prefix(&b.client_id)));
    assert_eq!(rows[1].1, "Alpha\nsecond");
    assert_eq!(rows[1].2, "Alpha\nout");
    assert_eq!(rows[1].3, format!("MP|{}|SAME", md5_prefix(&a.client_id)));
}

#[test]
fn token_errors() {
    let s = Server::start();
    s.add_user(2, &[]);
    let im = add_app(&s, "Im", "im", &[]);
    let user_only = add_app(&s, "Users", "user", &[]);
    let restricted = add_app(&s, "Restricted", "im", &["--allowed-users", "1,2"]);
    let token_of_2 = s.app_token(&restricted.client_id, 2)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The administrator narrows the app to user 1 after user 2 installed it; a new token for
    // user 2 is refused up front.
    s.execute(
        "UPDATE apps SET allowed_users = '1' WHERE client_id = ?1",
        &[(&restricted.client_id).into()],
    );
    let refused = s.cli(&[
        "app",
        "token",
        "--client-id",
        &restricted.client_id,
        "--user-id",
        "2",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("restricted"));
    let t = s.app_token(&im.client_id, 1);
    let access = t["access_token"].as_str().unwrap();
    let body = json!({"USER_ID": 1, "MESSAGE": "m"});

    call(&s, "im.notify.system.add", "unknown-token", body.clone())
        .assert_error(401, "invalid_token");
    let r = call(
        &s,
        "im.notify.system.add",
        s.app_token(&user_only.client_id, 1)["access_token"]
            .as_str()
            .unwrap(),
        body.clone(),
    );
    r.assert_error(403, "insufficient_scope");
    assert!(r.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("access token"));
    call(&s, "im.notify.system.add", &token_of_2, body.clone())
        .assert_error(403, "user_access_error");
    assert_eq!(
        call(
            &s,
            "im.notify.system.add",
            s.app_token(&restricted.client_id, 1)["access_token"]
                .as_str()
                .unwrap(),
            body.clone()
        )
        .status,
        200
    );

    // Expire the token in the database: the next call says so.
    s.execute("UPDATE oauth_tokens SET access_expires = 1 WHERE app_id = (SELECT id FROM apps WHERE name = 'Im')", &[]);
    call(&s, "im.notify.system.add", access, body.clone()).assert_error(401, "expired_token");

    // Token endpoint errors.
    token_request(&s, "client_id=x").assert_error(400, "invalid_request");
    token_request(&s, "grant_type=password&client_id=x")
        .assert_error(400, "unsupported_grant_type");
    token_request(
        &s,
        "grant_type=refresh_token&client_id=nope&client_secret=x&refresh_token=y",
    )
    .assert_error(401, "invalid_client");
    // Another app's refresh token is not accepted.
    let other_refresh = s.app_token(&user_only.client_id, 1)["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    token_request(
        &s,
        &format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={other_refresh}",
            im.client_id, im.client_secret
        ),
    )
    .assert_error(400, "invalid_grant");
}

#[test]
fn expired_authorization_code_is_refused() {
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let app = add_app(&s, "A", "im", &[]);
    let cookie = s.sign_in("5", "pw");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    let approved = s.request(
        "POST",
        "/oauth/authorize/",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("client_id={}&approve=Y&csrf={}", app.client_id, enc(&csrf)).as_bytes(),
    );
    let code = query_param(approved.header("location").unwrap(), "code").unwrap();
    // Age the code past its 30 seconds.
    s.execute("UPDATE oauth_codes SET expires_at = expires_at - 31", &[]);
    token_request(
        &s,
        &format!(
            "grant_type=authorization_code&client_id={}&client_secret={}&code={code}",
            app.client_id, app.client_secret
        ),
    )
    .assert_error(400, "invalid_grant");
}

#[test]
fn session_auth_is_recognised_and_refused_for_adding() {
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let app = add_app(&s, "A", "im", &[]);
    let cookie = s.sign_in("5", "pw");
    let csrf = s.consent_csrf(&app.client_id, &cookie);
    let body = br#"{"USER_ID":5,"MESSAGE":"m"}"#;
    let with = |headers: &[(&str, &str)], path: &str| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        s.request("POST", path, &h, body)
    };
    with(
        &[("Cookie", &cookie)],
        &format!("/rest/im.notify.system.add?sessid={}", enc(&csrf)),
    )
    .assert_error(403, "WRONG_AUTH_TYPE");
    with(
        &[("Cookie", &cookie), ("X-Bitrix-Csrf-Token", &csrf)],
        "/rest/im.notify.personal.add",
    )
    .assert_error(403, "WRONG_AUTH_TYPE");
    with(
        &[("Cookie", &cookie)],
        "/rest/im.notify.system.add?sessid=wrong",
    )
    .assert_error(401, "session_failed");
    with(
        &[],
        &format!("/rest/im.notify.system.add?sessid={}", enc(&csrf)),
    )
    .assert_error(401, "access_denied");
    // A session may call the discovery methods; app.info needs an application.
    let profile = with(
        &[("Cookie", &cookie), ("X-Bitrix-Csrf-Token", &csrf)],
        "/rest/profile",
    );
    assert_eq!(profile.json()["result"]["ID"], "5");
    with(
        &[("Cookie", &cookie), ("X-Bitrix-Csrf-Token", &csrf)],
        "/rest/app.info",
    )
    .assert_error(403, "ACCESS_DENIED");
    // After logout the session is gone.
    s.request("POST", "/logout", &[("Cookie", &cookie)], b"");
    with(
        &[("Cookie", &cookie)],
        &format!("/rest/profile?sessid={}", enc(&csrf)),
    )
    .assert_error(401, "access_denied");
}

#[test]
fn discovery_methods() {
    let s = Server::start();
    let app = add_app(&s, "Disc", "im", &[]);
    let token = s.app_token(&app.client_id, 1)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let time = call(&s, "server.time", &token, json!({})).json();
    assert!(
        chrono::DateTime::parse_from_rfc3339(time["result"].as_str().unwrap()).is_ok(),
        "{time}"
    );

    let profile = call(&s, "profile", &token, json!({})).json();
    assert_eq!(profile["result"]["ID"], "1");
    assert_eq!(profile["result"]["ADMIN"], true);
    assert_eq!(profile["result"]["NAME"], "Admin");

    assert_eq!(
        call(&s, "scope", &token, json!({})).json()["result"],
        json!(["im"])
    );
    let full = call(&s, "scope", &token, json!({"full": true})).json();
    assert!(full["result"].as_array().unwrap().contains(&json!("user")));

    let methods = call(&s, "methods", &token, json!({})).json();
    let names = methods["result"].as_array().unwrap();
    assert!(names.contains(&json!("im.notify.system.add")));
    assert!(names.contains(&json!("server.time")));
    let only_im = call(&s, "methods", &token, json!({"scope": "im"})).json();
    assert!(!only_im["result"]
        .as_array()
        .unwrap()
        .contains(&json!("server.time")));

    let mg = call(
        &s,
        "method.get",
        &token,
        json!({"name": "IM.NOTIFY.SYSTEM.ADD"}),
    )
    .json();
    assert_eq!(
        mg["result"],
        json!({"isExisting": true, "isAvailable": true})
    );
    let missing = call(&s, "method.get", &token, json!({"name": "no.such"})).json();
    assert_eq!(
        missing["result"],
        json!({"isExisting": false, "isAvailable": false})
    );

    let info = call(&s, "app.info", &token, json!({})).json();
    assert_eq!(info["result"]["CODE"], app.client_id.as_str());
    assert_eq!(info["result"]["INSTALLED"], true);
    assert_eq!(info["result"]["STATUS"], "L");

    // The webhook shape of app.info.
    let hook = s.post_json(&s.hook_url("app.info"), &json!({})).json();
    assert_eq!(hook["result"]["SCOPE"], json!(["im"]));
    assert!(hook["result"]["LICENSE"].is_string());
}

#[test]
fn oversized_token_and_login_bodies_are_refused() {
    let s = Server::start_with(common::Options {
        envs: vec![("IMNOTIFY_LIMITS__MAX_BODY_BYTES".into(), "1024".into())],
        ..Default::default()
    });
    let big = format!("grant_type=refresh_token&padding={}", "x".repeat(4096));
    // RFC 6749 §5.2's vocabulary, with the REST layer's status.
    token_request(&s, &big).assert_error(413, "invalid_request");
    assert_eq!(s.post_form("/login", &big).status, 413);
}
