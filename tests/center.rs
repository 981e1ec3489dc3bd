//! The notification center page over plain HTTP (the browser tests in tests/browser drive it in
//! chromium): sign-in redirect, headers, isolation between users, CSRF, the cursor, languages.

mod common;

use common::{csrf_from, Server};

const PW: &str = "center-test-password";

fn signed_in(s: &Server) -> String {
    let out = s.cli(&["user", "password", "--id", "1", "--password", PW]);
    assert!(out.status.success());
    s.sign_in("1", PW)
}

fn page(s: &Server, cookie: &str, path: &str, extra: &[(&str, &str)]) -> common::Response {
    let mut h = vec![("Cookie", cookie)];
    h.extend_from_slice(extra);
    s.request("GET", path, &h, b"")
}

#[test]
fn without_a_session_the_center_redirects_to_the_login_page() {
    let s = Server::start();
    let r = s.get("/");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=/"));
    let r = s.get("/center/item/1");
    assert_eq!(r.status, 401);
    // The sign-in and consent pages carry the same strict headers as the center, with no
    // inline style for the CSP to allow and an icon that needs no request.
    let path = "/login?next=/";
    let r = s.get(path);
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("style-src 'self'") && csp.contains("script-src 'self'"),
        "{path}: {csp:?}"
    );
    assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{path}");
    assert!(!r.body.contains("<style"), "{path}");
    assert!(r.body.contains("rel=\"icon\""), "{path}: {}", r.body);
    let css = s.get("/assets/page.css");
    assert_eq!(css.status, 200);
    assert!(css.body.contains(".error"));
}

#[test]
fn the_center_lists_own_notifications_with_strict_headers() {
    let s = Server::start();
    let cookie = signed_in(&s);
    let id = s.notify(
        serde_json::json!({"USER_ID": 1, "MESSAGE": "Hello [b]there[/b] <script>x</script>"}),
    );
    let r = page(&s, &cookie, "/", &[]);
    assert_eq!(r.status, 200);
    let csp = r.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert!(r.header("referrer-policy").is_some());
    assert!(r.body.contains(&format!("id=\"n-{id}\"")), "{}", r.body);
    assert!(r
        .body
        .contains("Hello <strong>there</strong> &lt;script&gt;x&lt;/script&gt;"));
    assert!(r.body.contains("<title>(1) Notifications</title>"));
    // No inline script or style anywhere in the page.
    assert!(
        !r.body.contains("<script>") && !r.body.contains("<style") && !r.body.contains(" style=")
    );
}

#[test]
fn another_users_notification_is_neither_listed_nor_fetchable() {
    let s = Server::start();
    s.add_user(2, &[]);
    let cookie = signed_in(&s);
    let theirs = s.notify(serde_json::json!({"USER_ID": 2, "MESSAGE": "private to user 2"}));
    let r = page(&s, &cookie, "/", &[]);
    assert!(!r.body.contains("private to user 2"));
    let r = page(&s, &cookie, &format!("/center/item/{theirs}"), &[]);
    assert_eq!(r.status, 404);
    // Nor can an action reach it.
    let csrf = csrf_from(&page(&s, &cookie, "/", &[]).body);
    let body = format!("csrf={csrf}&action=delete&id={theirs}");
    let r = s.request(
        "POST",
        "/center/action",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.json()["result"], false, "{}", r.body);
    let n: i64 = s
        .query_value(
            "SELECT COUNT(*) FROM notifications WHERE id = ?1",
            &[theirs.into()],
        )
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn actions_need_the_csrf_token_and_run_the_lifecycle_methods() {
    let s = Server::start();
    let cookie = signed_in(&s);
    let id = s.notify(serde_json::json!({"USER_ID": 1, "MESSAGE": "read me"}));
    let post = |body: String| {
        s.request(
            "POST",
            "/center/action",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Accept", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let is_read = || -> i64 {
        s.query_value(
            "SELECT CAST(is_read AS INTEGER) FROM notifications WHERE id = ?1",
            &[id.into()],
        )
        .unwrap()
    };
    let r = post(format!("csrf=wrong&action=read&id={id}"));
    assert_eq!(r.status, 401);
    assert_eq!(is_read(), 0);
    let csrf = csrf_from(&page(&s, &cookie, "/", &[]).body);
    let r = post(format!("csrf={csrf}&action=read&id={id}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["counter"], 0);
    assert_eq!(is_read(), 1);
    let r = post(format!("csrf={csrf}&action=unread&id={id}"));
    assert_eq!(r.json()["counter"], 1);
    // Without Accept: JSON it is a form post that comes back to the page.
    let r = s.request(
        "POST",
        "/center/action",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("csrf={csrf}&action=read_all").as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert_eq!(is_read(), 1);
}

#[test]
fn older_notifications_follow_the_cursor_link() {
    let s = Server::start();
    let cookie = signed_in(&s);
    let ids: Vec<i64> = (0..25)
        .map(|i| s.notify(serde_json::json!({"USER_ID": 1, "MESSAGE": format!("n{i}")})))
        .collect();
    let first = page(&s, &cookie, "/", &[]).body;
    assert!(first.contains(&format!("id=\"n-{}\"", ids[24])));
    assert!(!first.contains(&format!("id=\"n-{}\"", ids[4])));
    let marker = "id=\"more\" href=\"";
    let at = first.find(marker).expect("a more link") + marker.len();
    let href = first[at..].split('"').next().unwrap().replace("&amp;", "&");
    let second = page(&s, &cookie, &href, &[]).body;
    assert!(second.contains(&format!("id=\"n-{}\"", ids[4])));
    assert!(second.contains(&format!("id=\"n-{}\"", ids[0])));
    assert!(!second.contains(&format!("id=\"n-{}\"", ids[5])));
}

#[test]
fn the_language_follows_accept_language_and_the_switch() {
    let s = Server::start();
    let cookie = signed_in(&s);
    let r = page(
        &s,
        &cookie,
        "/",
        &[("Accept-Language", "ru-RU,ru;q=0.9,en;q=0.5")],
    );
    assert!(r.body.contains("<html lang=\"ru\">"));
    assert!(r.body.contains("Уведомления"));
    let both = format!("{cookie}; imnotify_lang=en");
    let r = page(&s, &both, "/", &[("Accept-Language", "ru")]);
    assert!(r.body.contains("<html lang=\"en\">"));
}

#[test]
fn the_settings_panel_switches_e_mail_off_and_on() {
    let s = Server::start();
    let cookie = signed_in(&s);
    let setting = || -> i64 {
        s.query_value(
            "SELECT CAST(email_notifications AS INTEGER) FROM users WHERE id = 1",
            &[],
        )
        .unwrap()
    };
    let before = setting();
    let body = page(&s, &cookie, "/", &[]).body;
    let csrf = csrf_from(&body);
    let next = if before == 1 { "off" } else { "on" };
    assert!(
        body.contains(&format!("name=\"email\" value=\"{next}\"")),
        "{body}"
    );
    let post = |csrf: &str, value: &str| {
        s.request(
            "POST",
            "/center/email",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            format!("csrf={csrf}&email={value}").as_bytes(),
        )
    };
    assert_eq!(post("forged", next).status, 401);
    assert_eq!(setting(), before);
    assert_eq!(post(&csrf, next).status, 303);
    assert_eq!(setting(), 1 - before);
    let body = page(&s, &cookie, "/", &[]).body;
    assert!(body.contains(&format!(
        "name=\"email\" value=\"{}\"",
        if next == "off" { "on" } else { "off" }
    )));
}

#[test]
fn page_writes_are_charged_to_the_session_users_rate_limit() {
    let s = Server::start_with(common::Options {
        limits: true,
        envs: vec![
            ("IMNOTIFY_LIMITS__RATE__BURST".into(), "5".into()),
            ("IMNOTIFY_LIMITS__RATE__PER_SECOND".into(), "0.5".into()),
        ],
        ..Default::default()
    });
    let cookie = signed_in(&s);
    let csrf = csrf_from(&page(&s, &cookie, "/", &[]).body);
    let post = |path: &str, body: String, json: bool| {
        let mut h = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        if json {
            h.push(("Accept", "application/json"));
        }
        s.request("POST", path, &h, body.as_bytes())
    };
    // The script's form: the bucket holds 5, then 429 with the REST error code.
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            post(
                "/center/action",
                format!("csrf={csrf}&action=read_all"),
                true,
            )
            .status
        })
        .collect();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert_eq!(
        statuses[7], 429,
        "page writes are not limited: {statuses:?}"
    );
    let r = post(
        "/center/action",
        format!("csrf={csrf}&action=read_all"),
        true,
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "QUERY_LIMIT_EXCEEDED");
    assert!(r.header("retry-after").is_some());
    // The page forms share the bucket.
    let r = post(
        "/center/action",
        format!("csrf={csrf}&action=read_all"),
        false,
    );
    assert_eq!(r.status, 429, "{}", r.body);
    let r = post("/center/lang", format!("csrf={csrf}&lang=ru"), false);
    assert_eq!(r.status, 429, "{}", r.body);
    let r = post("/center/email", format!("csrf={csrf}&email=off"), false);
    assert_eq!(r.status, 429, "{}", r.body);
    // And so do REST calls made with the same session.
    let r = s.request(
        "POST",
        "/rest/im.notify.read.all.json",
        &[
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        format!("sessid={csrf}").as_bytes(),
    );
    assert_eq!(r.status, 503, "{}", r.body);
}
