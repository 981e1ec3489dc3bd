//! Adversarial tests of issue 10, sections 3 and 4: one integration must not act as another, and
//! the browser and HTTP surface. Each test runs one attack class against the real binary over
//! loopback and asserts what was promised holds; each fails on the code before the fix.

mod common;

use std::time::{Duration, Instant};

use common::{Options, Server};
use md5::{Digest, Md5};
use serde_json::{json, Value};

/// Every test here must finish well within a minute, loaded machine or not.
const BUDGET: Duration = Duration::from_secs(60);

fn cli_json(s: &Server, args: &[&str]) -> Value {
    let out = s.cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Registers an app and mints a token pair for `user`: (client_id, client_secret, tokens).
fn app_with_token(s: &Server, name: &str, user: i64) -> (String, String, Value) {
    let app = cli_json(
        s,
        &["app", "add", "--name", name, "--scope", "im", "--json"],
    );
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let secret = app["client_secret"].as_str().unwrap().to_owned();
    let uid = user.to_string();
    let tokens = cli_json(
        s,
        &[
            "app",
            "token",
            "--client-id",
            &client_id,
            "--user-id",
            &uid,
            "--json",
        ],
    );
    (client_id, secret, tokens)
}

fn md5_prefix(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))[..5].to_owned()
}

/// An app client id in the server's own shape and a webhook `CLIENT_ID` whose namespaces
/// collide: `md5(APP)[:5] == md5("custom" + HOOK)[:5]` (both `35576`). Finding such a pair is a
/// 20-bit search, about a million md5s: under 2 s in a release build, but too slow for a debug
/// test on a loaded machine, so it was found once (`x{i:x}` for i = 0, 1, ...) and the test
/// checks it.
const COLLIDING_APP_CLIENT_ID: &str = "local.0123456789abcd.12345678";
const COLLIDING_HOOK_CLIENT_ID: &str = "xe879e";

/// (id, text) of every notification of `user` whose stored tag is `tag`.
fn tagged(s: &Server, user: i64, tag: &str) -> Vec<(i64, String)> {
    s.query(
        "SELECT id, text FROM notifications WHERE user_id = ?1 AND tag = ?2 ORDER BY id",
        &[user.into(), tag.into()],
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].clone().unwrap(),
        )
    })
    .collect()
}

fn ok_result(r: &common::Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"].clone()
}

#[test]
fn a_webhook_cannot_replace_or_delete_an_apps_tagged_notifications() {
    let started = Instant::now();
    let s = Server::start();
    s.add_user(5, &[]);
    s.add_user(6, &[]);
    // The app gets the client id of the precomputed collision.
    let (generated, _, _) = app_with_token(&s, "App A", 1);
    let client_id = COLLIDING_APP_CLIENT_ID.to_owned();
    s.execute(
        "UPDATE apps SET client_id = ?1 WHERE client_id = ?2",
        &[(&client_id).into(), (&generated).into()],
    );
    let tokens = cli_json(
        &s,
        &[
            "app",
            "token",
            "--client-id",
            &client_id,
            "--user-id",
            "1",
            "--json",
        ],
    );
    let token = tokens["access_token"].as_str().unwrap();
    let app_add = |user: i64, msg: &str| {
        ok_result(&s.post_json(
            "/rest/im.notify.system.add",
            &json!({"auth": token, "USER_ID": user, "MESSAGE": msg, "TAG": "SESSION"}),
        ))
    };
    let real5 = app_add(5, "Your build finished").as_i64().unwrap();
    let real6 = app_add(6, "Your build finished").as_i64().unwrap();

    let collision = COLLIDING_HOOK_CLIENT_ID;
    let tag = format!("MP|{}|SESSION", md5_prefix(&client_id));
    assert_eq!(
        format!("MP|{}|SESSION", md5_prefix(&format!("custom{collision}"))),
        tag
    );

    // An ordinary im webhook (user 1's) with the colliding CLIENT_ID: its notification is
    // stored with the very same tag string, but does not replace the app's.
    let fake = ok_result(&s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 5, "MESSAGE": "App A: sign in again at https://evil.example",
                "TAG": "SESSION", "CLIENT_ID": collision}),
    ));
    let rows = tagged(&s, 5, &tag);
    assert!(
        rows.iter().any(|(id, _)| *id == real5),
        "the app's notification was replaced by the webhook's: {rows:?}"
    );
    assert!(
        rows.iter().any(|(id, _)| Some(*id) == fake.as_i64()),
        "{rows:?}"
    );

    // Nor can it delete the app's notifications by tag, for any recipient; it deletes its own.
    let deleted = s.post_json(
        &s.hook_url("im.notify.delete"),
        &json!({"TAG": "SESSION", "CLIENT_ID": collision}),
    );
    assert_eq!(ok_result(&deleted), json!(true));
    assert_eq!(
        tagged(&s, 5, &tag).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![real5]
    );
    assert_eq!(
        tagged(&s, 6, &tag).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![real6]
    );
    let by_sub = s.post_json(
        &s.hook_url("im.notify.delete"),
        &json!({"SUB_TAG": "SESSION", "CLIENT_ID": collision}),
    );
    assert_eq!(by_sub.status, 200, "{}", by_sub.body);

    // The app still replaces its own (D4), and the stored tag reads back as Bitrix24 shows it.
    let again = app_add(5, "Your build finished again").as_i64().unwrap();
    let rows = tagged(&s, 5, &tag);
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![again],
        "{rows:?}"
    );
    let listed = ok_result(&s.post_json(
        "/rest/im.notify.get",
        &json!({"auth": app_with_token(&s, "Reader", 5).2["access_token"]}),
    ));
    let notify_tags: Vec<&str> = listed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["notify_tag"].as_str())
        .collect();
    assert_eq!(notify_tags, vec![tag.as_str()]);
    // And deletes its own, for every recipient.
    ok_result(&s.post_json(
        "/rest/im.notify.delete",
        &json!({"auth": token, "TAG": "SESSION"}),
    ));
    assert!(tagged(&s, 5, &tag).is_empty());
    assert!(tagged(&s, 6, &tag).is_empty());
    assert!(started.elapsed() < BUDGET, "{:?}", started.elapsed());
}

#[test]
fn webhooks_of_different_owners_with_one_client_id_stay_apart() {
    let started = Instant::now();
    let s = Server::start();
    for u in [2, 3, 5] {
        s.add_user(u, &[]);
    }
    let hook2 = s.add_webhook(2, "im");
    let hook3 = s.add_webhook(3, "im");
    let add = |hook: &str, msg: &str| {
        ok_result(&s.post_json(
            &format!("{hook}im.notify.system.add"),
            &json!({"USER_ID": 5, "MESSAGE": msg, "TAG": "T", "CLIENT_ID": "SHARED"}),
        ))
        .as_i64()
        .unwrap()
    };
    let tag = format!("MP|{}|T", md5_prefix("customSHARED"));
    let two = add(&hook2, "from 2");
    let three = add(&hook3, "from 3");
    // Neither replaced the other.
    assert_eq!(
        tagged(&s, 5, &tag).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![two, three]
    );

    // User 3's webhook deletes its own tagged notifications only.
    ok_result(&s.post_json(
        &format!("{hook3}im.notify.delete"),
        &json!({"TAG": "T", "CLIENT_ID": "SHARED"}),
    ));
    assert_eq!(
        tagged(&s, 5, &tag).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![two]
    );

    // The same integration still replaces its own.
    let two_again = add(&hook2, "from 2, again");
    assert_eq!(
        tagged(&s, 5, &tag),
        vec![(two_again, "from 2, again".to_owned())]
    );
    assert!(started.elapsed() < BUDGET);
}

/// The hidden `next` field of a login page.
fn next_field(page: &str) -> String {
    let marker = "name=\"next\" value=\"";
    let at = page.find(marker).expect("next field") + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[test]
fn login_redirects_only_to_same_origin_paths() {
    let started = Instant::now();
    let s = Server::start();
    s.add_user(5, &["--password", "pw-5-secret"]);
    let hostile = [
        "/\t/evil.example",
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:evil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/ /evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
    ];
    for next in hostile {
        let enc: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let page = s.get(&format!("/login?next={enc}"));
        assert_eq!(page.status, 200);
        assert_eq!(next_field(&page.body), "/", "form for {next:?}");

        let (csrf, cookie) = s.login_token();
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("login", "5")
            .append_pair("password", "pw-5-secret")
            .append_pair("next", next)
            .append_pair("csrf", &csrf)
            .finish();
        let r = s.request(
            "POST",
            "/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &cookie),
            ],
            form.as_bytes(),
        );
        assert_eq!(r.status, 303, "{next:?}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some("/"),
            "after signing in with {next:?}"
        );
    }
    // A same-origin path still works.
    let (csrf, cookie) = s.login_token();
    let r = s.request(
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &cookie),
        ],
        format!("login=5&password=pw-5-secret&csrf={csrf}&next=%2Foauth%2Fauthorize%2F%3Fstate%3Da%2520b")
            .as_bytes(),
    );
    assert_eq!(r.header("location"), Some("/oauth/authorize/?state=a%20b"));
    assert!(started.elapsed() < BUDGET);
}

#[test]
fn login_needs_the_forms_token_and_a_same_origin_post() {
    let started = Instant::now();
    let s = Server::start();
    s.add_user(5, &["--password", "pw-5-secret"]);
    let signs_in = |r: &common::Response| {
        r.status == 303
            && r.header("set-cookie")
                .is_some_and(|c| c.starts_with("imnotify_session="))
    };
    let form = |csrf: &str| format!("login=5&password=pw-5-secret&next=%2F&csrf={csrf}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");

    // A cross-site form post has neither the cookie nor the token.
    let r = s.request(
        "POST",
        "/login",
        &[ct],
        b"login=5&password=pw-5-secret&next=%2F",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!signs_in(&r));
    // A token without its cookie, or a cookie with another token.
    let (csrf, cookie) = s.login_token();
    let r = s.request("POST", "/login", &[ct], form(&csrf).as_bytes());
    assert!(!signs_in(&r) && r.status == 403, "{}", r.body);
    let (other, _) = s.login_token();
    let r = s.request(
        "POST",
        "/login",
        &[ct, ("Cookie", &cookie)],
        form(&other).as_bytes(),
    );
    assert!(!signs_in(&r) && r.status == 403, "{}", r.body);
    // The right pair from a foreign or opaque origin.
    let evil_same_port = format!("http://evil.example:{}", s.addr.rsplit(':').next().unwrap());
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Origin", evil_same_port.as_str()),
        ("Referer", "http://evil.example/login"),
    ] {
        let r = s.request(
            "POST",
            "/login",
            &[ct, ("Cookie", &cookie), (name, value)],
            form(&csrf).as_bytes(),
        );
        assert!(
            !signs_in(&r) && r.status == 403,
            "{name}: {value}: {}",
            r.body
        );
    }
    // The right pair from this server signs in; so does a client that sends no Origin.
    let own = s.base.clone();
    let r = s.request(
        "POST",
        "/login",
        &[ct, ("Cookie", &cookie), ("Origin", &own)],
        form(&csrf).as_bytes(),
    );
    assert!(signs_in(&r), "{} {}", r.status, r.body);
    assert!(signs_in(&s.post_login("5", "pw-5-secret", &[])));
    assert!(started.elapsed() < BUDGET);
}

#[test]
fn the_host_header_never_reaches_an_emitted_url() {
    let started = Instant::now();
    let s = Server::start_with(Options {
        envs: vec![(
            "IMNOTIFY_ALLOWED_HOSTS".into(),
            "[\"notify.example.test\"]".into(),
        )],
        ..Default::default()
    });
    let (client_id, secret, tokens) = app_with_token(&s, "Tracker", 1);
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let mut refresh_with_host = |host: &str| {
        let body = format!(
            "grant_type=refresh_token&client_id={client_id}&client_secret={secret}&refresh_token={refresh}"
        );
        let req = format!(
            "POST /oauth/token/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = s.raw(req.as_bytes());
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        let v = r.json();
        refresh = v["refresh_token"].as_str().unwrap().to_owned();
        v
    };
    for host in [
        "evil.example/x?",
        "evil.example",
        "evil.example:80",
        "localhost:1@evil.example",
        "127.0.0.1:1",
    ] {
        let v = refresh_with_host(host);
        for field in ["domain", "client_endpoint", "server_endpoint"] {
            let url = v[field].as_str().unwrap();
            assert!(
                !url.contains("evil") && !url.contains(":1/") && !url.ends_with(":1"),
                "Host {host:?} reached {field}: {url}"
            );
            assert!(
                url.contains(&s.addr),
                "{field} falls back to the listen address: {url}"
            );
        }
    }
    // Names the server is configured to be reached by, and its own, are used.
    let v = refresh_with_host("notify.example.test");
    assert_eq!(v["domain"], "notify.example.test");
    let v = refresh_with_host(&format!("localhost:{}", s.addr.rsplit(':').next().unwrap()));
    assert!(v["client_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("http://localhost:"));
    assert!(started.elapsed() < BUDGET);
}

#[test]
fn a_client_request_id_cannot_forge_a_log_line() {
    let started = Instant::now();
    let s = Server::start_with(Options {
        envs: vec![("IMNOTIFY_LOG__FORMAT".into(), "text".into())],
        ..Default::default()
    });
    let forged = "x\" status=200 method=forged.admin user=1 \"";
    let r = s.request("GET", "/healthz", &[("X-Request-Id", forged)], b"");
    assert_eq!(r.status, 200);
    // The id the server answers with is its own.
    let id = r.header("x-request-id").unwrap();
    assert!(
        !id.contains("forged") && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let r = s.request(
        "POST",
        &s.hook_url("server.time"),
        &[("X-Request-Id", forged)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // A valid client id is kept, beside ours, in its own field.
    let r = s.request(
        "POST",
        &s.hook_url("server.time"),
        &[("X-Request-Id", "ci-42.A_b")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_ne!(r.header("x-request-id"), Some("ci-42.A_b"));
    std::thread::sleep(Duration::from_millis(300));
    let log = s.log();
    assert!(!log.contains("forged"), "client text in the log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("client_request_id") && l.contains("ci-42.A_b")),
        "{log}"
    );
    assert!(started.elapsed() < BUDGET);
}

#[test]
fn require_https_covers_every_credential() {
    let started = Instant::now();
    let s = Server::start_with(Options {
        args: vec!["--require-https".into(), "true".into()],
        envs: vec![("IMNOTIFY_TRUSTED_PROXIES".into(), "[\"127.0.0.1\"]".into())],
        ..Default::default()
    });
    s.add_user(5, &["--password", "pw-5-secret"]);
    let (client_id, secret, tokens) = app_with_token(&s, "Tracker", 1);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    // REST: a token as Bearer, `auth` and `access_token`; a session; a webhook.
    let bearer = format!("Bearer {access}");
    s.request(
        "POST",
        "/rest/server.time",
        &[("Authorization", &bearer)],
        b"",
    )
    .assert_error(400, "INVALID_REQUEST");
    for key in ["auth", "access_token"] {
        let r = s.post_json("/rest/server.time", &json!({ key: access }));
        r.assert_error(400, "INVALID_REQUEST");
        assert_eq!(r.json()["error_description"], "Https required.");
    }
    s.request(
        "POST",
        "/rest/server.time?sessid=abc",
        &[("Cookie", "imnotify_session=whatever")],
        b"",
    )
    .assert_error(400, "INVALID_REQUEST");
    s.post_json(&s.hook_url("server.time"), &json!({}))
        .assert_error(400, "INVALID_REQUEST");

    // The token endpoint: client secrets, refresh tokens and codes.
    let body = format!(
        "grant_type=refresh_token&client_id={client_id}&client_secret={secret}&refresh_token={refresh}"
    );
    let r = s.post_form("/oauth/token/", &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(r.json()["error_description"], "Https required.");
    let r = s.post_form(
        "/oauth/token/",
        &format!(
            "grant_type=authorization_code&client_id={client_id}&client_secret={secret}&code=x"
        ),
    );
    assert_eq!(r.json()["error"], "invalid_request", "{}", r.body);

    // The login page and the consent page (passwords, session cookies).
    let page = s.get("/login");
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("HTTPS"));
    let r = s.post_form("/login", "login=5&password=pw-5-secret&next=%2F");
    assert_eq!(r.status, 403);
    assert!(r
        .header("set-cookie")
        .is_none_or(|c| !c.starts_with("imnotify_session=")));
    let r = s.request(
        "GET",
        &format!("/oauth/authorize/?client_id={client_id}"),
        &[("Cookie", "imnotify_session=whatever")],
        b"",
    );
    assert_eq!(r.status, 403);

    // Behind a trusted proxy that says the client used HTTPS, each works.
    let https = ("X-Forwarded-Proto", "https");
    let r = s.request(
        "POST",
        "/rest/server.time",
        &[("Authorization", &bearer), https],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.request(
        "POST",
        "/oauth/token/",
        &[("Content-Type", "application/x-www-form-urlencoded"), https],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.request("GET", "/login", &[https], b"").status, 200);
    assert!(started.elapsed() < BUDGET);
}

#[test]
fn the_xml_transport_is_always_well_formed() {
    let started = Instant::now();
    let s = Server::start();
    let nasty = "before\u{FFFF}\u{FFFE}\u{1}\u{8}\u{1F}after & <tag> \"q\" 'a'\r\nline";
    let id = s.notify(json!({
        "USER_ID": 1,
        "MESSAGE": nasty,
        "ATTACH": [{"MESSAGE": nasty}, {"GRID": [{"NAME": "ª key", "VALUE": nasty}]}],
    }));

    let r = s.post_form(&s.hook_url("im.notify.get.xml"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = roxmltree::Document::parse(&r.body)
        .unwrap_or_else(|e| panic!("im.notify.get.xml is not XML: {e}\n{}", r.body));
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    assert!(
        texts.contains(&"beforeafter & <tag> \"q\" 'a'\r\nline"),
        "{texts:?}"
    );
    assert!(doc
        .descendants()
        .any(|n| n.has_tag_name("id") && n.text() == Some(&id.to_string())));

    // A batch whose keys are no XML names: each becomes <item key="...">.
    let keys = [
        "ª", "1abc", "a b", "x<y", "é", "-dash", ".dot", "xml:ns", "ok_key",
    ];
    let form: String = keys
        .iter()
        .fold(
            form_urlencoded::Serializer::new(String::new()),
            |mut f, k| {
                f.append_pair(&format!("cmd[{k}]"), "server.time");
                f
            },
        )
        .finish();
    let r = s.post_form(&s.hook_url("batch.xml"), &form);
    assert_eq!(r.status, 200, "{}", r.body);
    let doc = roxmltree::Document::parse(&r.body)
        .unwrap_or_else(|e| panic!("batch.xml is not XML: {e}\n{}", r.body));
    let result = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("result"))
        .unwrap()
        .children()
        .find(|n| n.has_tag_name("result"))
        .expect("result.result");
    let mut seen: Vec<String> = result
        .children()
        .filter(|n| n.is_element())
        .map(|n| match n.attribute("key") {
            Some(k) => k.to_owned(),
            None => n.tag_name().name().to_owned(),
        })
        .collect();
    seen.sort();
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);
    assert!(started.elapsed() < BUDGET);
}
