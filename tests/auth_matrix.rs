//! The auth matrix: every credential kind against every registered method, with the expected
//! code and status per cell; tag namespaces of different apps; and, over the whole run, that no
//! secret used reached the server's log.

mod common;

use common::{Response, Server};
use imnotify::state::MethodSpec;
use serde_json::{json, Value};

fn add_app(s: &Server, name: &str, scope: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["--redirect-uri", "https://app.example.test/cb"];
    args.extend_from_slice(extra);
    s.add_app_scoped(name, scope, &args)
}

/// An access token and a refresh token of `client_id` for `user`.
fn token(s: &Server, client_id: &str, user: i64) -> (String, String) {
    let v = s.app_token(client_id, user);
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    )
}

fn code_of(hook: &str) -> String {
    hook.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// How a cell's request carries its credential.
enum Cred {
    None,
    Path(String),
    Bearer(String),
    Param(String),
    Session { cookie: String, csrf: String },
}

/// What a cell must answer.
#[derive(Debug)]
enum Expect {
    Error(u16, &'static str),
    /// Past authentication and the scope check: 200, or the method's own 4xx that is not an
    /// auth error (e.g. USER_ID_EMPTY for an add without parameters).
    Authorised,
}

const AUTH_CODES: &[&str] = &[
    "NO_AUTH_FOUND",
    "INVALID_CREDENTIALS",
    "insufficient_scope",
    "invalid_token",
    "expired_token",
    "user_access_error",
    "WRONG_AUTH_TYPE",
    "access_denied",
    "session_failed",
];

fn call(s: &Server, method: &str, cred: &Cred) -> Response {
    let json = [("Content-Type", "application/json")];
    match cred {
        Cred::None => s.request("POST", &format!("/rest/{method}"), &json, b"{}"),
        Cred::Path(hook) => s.request("POST", &format!("{hook}{method}"), &json, b"{}"),
        Cred::Bearer(t) => {
            let auth = format!("Bearer {t}");
            s.request(
                "POST",
                &format!("/rest/{method}"),
                &[json[0], ("Authorization", &auth)],
                b"{}",
            )
        }
        Cred::Param(t) => s.post_json(&format!("/rest/{method}"), &json!({ "auth": t })),
        Cred::Session { cookie, csrf } => s.request(
            "POST",
            &format!("/rest/{method}"),
            &[json[0], ("Cookie", cookie), ("X-Bitrix-Csrf-Token", csrf)],
            b"{}",
        ),
    }
}

fn check(r: &Response, expect: &Expect, cell: &str) {
    match expect {
        Expect::Error(status, code) => {
            assert_eq!(r.status, *status, "{cell}: {}", r.body);
            assert_eq!(r.json()["error"], *code, "{cell}: {}", r.body);
        }
        Expect::Authorised => {
            assert!(r.status == 200 || r.status == 400, "{cell}: {}", r.body);
            let code = r.json()["error"].as_str().unwrap_or("").to_owned();
            assert!(!AUTH_CODES.contains(&code.as_str()), "{cell}: {}", r.body);
        }
    }
}

#[test]
fn every_credential_kind_against_every_method() {
    let s = Server::start();
    s.add_user(2, &["--password", "pw-of-user-2"]);
    s.add_user(3, &["--inactive"]);
    let user_hook = s.add_webhook(1, "user");
    let code1 = code_of(&s.hook);
    let inactive_hook = s.add_webhook(3, "im");
    let (im_app, im_secret) = add_app(&s, "Im App", "im", &[]);
    let (user_app, user_secret) = add_app(&s, "User App", "user", &[]);
    let (only2_app, only2_secret) = add_app(&s, "Only Two", "im", &["--allowed-users", "1,2"]);
    let (good, good_refresh) = token(&s, &im_app, 1);
    let (narrow, narrow_refresh) = token(&s, &user_app, 1);
    let (not_allowed, not_allowed_refresh) = token(&s, &only2_app, 1);
    // The administrator narrows the app to user 2 after user 1 installed it.
    s.execute(
        "UPDATE apps SET allowed_users = '2' WHERE client_id = ?1",
        &[(&only2_app).into()],
    );
    let (expired, expired_refresh) = token(&s, &im_app, 2);
    s.execute(
        "UPDATE oauth_tokens SET access_expires = 1 WHERE user_id = 2",
        &[],
    );

    // A browser session of user 2 and its CSRF token, from the consent page.
    let cookie = s.sign_in("2", "pw-of-user-2");
    let csrf = s.consent_csrf(&im_app, &cookie);

    // What a good credential holding only `held` gets: past the scope check when the method is
    // global or in that scope, insufficient_scope otherwise.
    let scoped = |m: &MethodSpec, held: &str, authorised: Expect| match m.scope {
        Some(scope) if scope != held => Expect::Error(403, "insufficient_scope"),
        _ => authorised,
    };
    let mut cells = 0;
    let registry = imnotify::app::registry();
    let methods: Vec<&MethodSpec> = registry.iter().collect();
    assert!(methods.iter().any(|m| m.scope.is_some()));
    assert!(methods.iter().any(|m| m.scope.is_none()));
    for m in methods {
        // A browser session may read and manage its own notifications, but not add them
        // (WRONG_AUTH_TYPE, §2.3); app.info needs an application or a webhook.
        let session_expect = match m.name {
            "im.notify" | "im.notify.system.add" | "im.notify.personal.add" => {
                Expect::Error(403, "WRONG_AUTH_TYPE")
            }
            "app.info" => Expect::Error(403, "ACCESS_DENIED"),
            _ => Expect::Authorised,
        };
        let row: Vec<(&str, Cred, Expect)> = vec![
            ("none", Cred::None, Expect::Error(401, "NO_AUTH_FOUND")),
            (
                "bad webhook code",
                Cred::Path("/rest/1/wrongcode00000000/".into()),
                Expect::Error(403, "INVALID_CREDENTIALS"),
            ),
            (
                "webhook of another user",
                Cred::Path(format!("/rest/2/{code1}/")),
                Expect::Error(403, "INVALID_CREDENTIALS"),
            ),
            (
                "webhook of an inactive user",
                Cred::Path(inactive_hook.clone()),
                Expect::Error(403, "INVALID_CREDENTIALS"),
            ),
            (
                "webhook with only scope user",
                Cred::Path(user_hook.clone()),
                scoped(m, "user", Expect::Authorised),
            ),
            (
                "good webhook",
                Cred::Path(s.hook.clone()),
                // A webhook has no client id: delete by tag needs CLIENT_ID, which this call
                // lacks (§4.3).
                scoped(
                    m,
                    "im",
                    if m.name == "im.notify.delete" {
                        Expect::Error(403, "ACCESS_DENIED")
                    } else {
                        Expect::Authorised
                    },
                ),
            ),
            (
                "bad token",
                Cred::Bearer("not-a-token".into()),
                Expect::Error(401, "invalid_token"),
            ),
            (
                "expired token",
                Cred::Param(expired.clone()),
                Expect::Error(401, "expired_token"),
            ),
            (
                "token with only scope user",
                Cred::Bearer(narrow.clone()),
                scoped(m, "user", Expect::Authorised),
            ),
            (
                "token of an app restricted to other users",
                Cred::Param(not_allowed.clone()),
                Expect::Error(403, "user_access_error"),
            ),
            (
                "refresh token used as an access token",
                Cred::Bearer(good_refresh.clone()),
                Expect::Error(401, "invalid_token"),
            ),
            (
                "good token",
                Cred::Bearer(good.clone()),
                scoped(m, "im", Expect::Authorised),
            ),
            (
                "browser session",
                Cred::Session {
                    cookie: cookie.clone(),
                    csrf: csrf.clone(),
                },
                session_expect,
            ),
        ];
        for (kind, cred, expect) in row {
            let r = call(&s, m.name, &cred);
            check(&r, &expect, &format!("{} with {kind}", m.name));
            cells += 1;
        }
    }
    assert!(cells >= 13 * 2);

    // Another app's namespace: the same TAG from a second app, or from a webhook that names the
    // first app's client id as its CLIENT_ID, never replaces the first app's notification.
    let (other_app, other_secret) = add_app(&s, "Other", "im", &[]);
    let (other, other_refresh) = token(&s, &other_app, 1);
    let add = |cred: &Cred, extra: Value| {
        let mut body = json!({"USER_ID": 1, "MESSAGE": "ns", "TAG": "SAME"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = match cred {
            Cred::Bearer(t) => s.request(
                "POST",
                "/rest/im.notify.system.add",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &format!("Bearer {t}")),
                ],
                body.to_string().as_bytes(),
            ),
            _ => s.post_json(&s.hook_url("im.notify.system.add"), &body),
        };
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["result"].as_i64().unwrap()
    };
    let first = add(&Cred::Bearer(good.clone()), json!({}));
    add(&Cred::Bearer(other.clone()), json!({}));
    add(&Cred::Path(s.hook.clone()), json!({"CLIENT_ID": im_app}));
    let n: i64 = s
        .query_value(
            "SELECT COUNT(*) FROM notifications WHERE id = ?1",
            &[first.into()],
        )
        .unwrap();
    assert_eq!(
        n, 1,
        "another namespace replaced the first app's notification"
    );
    // Within the app's own namespace the replace does happen, so the check above can fail.
    add(&Cred::Bearer(good.clone()), json!({}));
    let n: i64 = s
        .query_value(
            "SELECT COUNT(*) FROM notifications WHERE id = ?1",
            &[first.into()],
        )
        .unwrap();
    assert_eq!(n, 0);

    // A refresh and a failed token request, so that the log has seen those secrets too.
    let refreshed = s.post_form(
        "/oauth/token/",
        &format!(
            "grant_type=refresh_token&client_id={im_app}&client_secret={im_secret}&refresh_token={good_refresh}"
        ),
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let new_access = refreshed.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    s.post_form(
        "/oauth/token/",
        &format!("grant_type=refresh_token&client_id={im_app}&client_secret=wrong-secret-zzz&refresh_token={good_refresh}"),
    );

    // No secret of this run is in the log.
    let log = s.log();
    assert!(log.contains("rest call"), "the log has entries: {log}");
    let session_id = cookie.split_once('=').unwrap().1.to_owned();
    let user_code = code_of(&user_hook);
    let inactive_code = code_of(&inactive_hook);
    for (what, secret) in [
        ("webhook code", code1.as_str()),
        ("webhook code", user_code.as_str()),
        ("webhook code", inactive_code.as_str()),
        ("client secret", im_secret.as_str()),
        ("client secret", user_secret.as_str()),
        ("client secret", only2_secret.as_str()),
        ("client secret", other_secret.as_str()),
        ("client secret", "wrong-secret-zzz"),
        ("access token", good.as_str()),
        ("access token", narrow.as_str()),
        ("access token", not_allowed.as_str()),
        ("access token", expired.as_str()),
        ("access token", other.as_str()),
        ("access token", new_access.as_str()),
        ("access token", "not-a-token"),
        ("refresh token", good_refresh.as_str()),
        ("refresh token", narrow_refresh.as_str()),
        ("refresh token", not_allowed_refresh.as_str()),
        ("refresh token", expired_refresh.as_str()),
        ("refresh token", other_refresh.as_str()),
        ("password", "pw-of-user-2"),
        ("session id", session_id.as_str()),
        ("csrf token", csrf.as_str()),
    ] {
        assert!(secret.len() >= 8, "{what} too short to grep for: {secret}");
        assert!(!log.contains(secret), "{what} {secret} is in the log");
    }
}
