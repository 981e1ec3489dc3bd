//! The REST protocol over real HTTP: URL forms, parameter encodings, envelopes and transports.

mod common;

use common::Server;
use serde_json::json;

fn ok_id(r: &common::Response) -> i64 {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["result"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}", r.body))
}

#[test]
fn every_url_form_reaches_the_method() {
    let s = Server::start();
    let hook = s.hook.trim_end_matches('/').to_owned(); // /rest/1/CODE
    let (user, code) = {
        let mut it = hook.trim_start_matches("/rest/").split('/');
        (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
    };
    let body = json!({"USER_ID": 1, "MESSAGE": "hi"});
    for path in [
        format!("{hook}/im.notify.system.add"),
        format!("{hook}/im.notify.system.add/"),
        format!("{hook}/im.notify.system.add.json"),
        format!("{hook}/im.notify.system.add.json/"),
        format!("{hook}/IM.NOTIFY.SYSTEM.ADD"),
        format!("{hook}/Im.Notify.System.Add.JSON"),
        format!("/rest//{user}/{code}/im.notify.system.add"),
        // The webhook credentials may also travel as parameters (§1.1).
        format!("/rest/im.notify.system.add?aplogin={user}&ap={code}"),
        format!("/rest//im.notify.system.add?aplogin={user}&ap={code}"),
        format!("/rest/im.notify.system.add/?aplogin={user}&ap={code}"),
    ] {
        let r = s.post_json(&path, &body);
        assert!(ok_id(&r) > 0, "{path}");
    }
}

#[test]
fn unknown_method_is_404_before_auth() {
    let s = Server::start();
    for path in [
        "/rest/no.such.method",
        "/rest/1/wrongcode/no.such.method",
        "/rest/no.such.method.json",
        "/rest/api/im.notify.system.add",
        "/rest",
        "/rest/",
    ] {
        s.get(path).assert_error(404, "ERROR_METHOD_NOT_FOUND");
    }
    let xml = s.get("/rest/no.such.method.xml");
    assert_eq!(xml.status, 404);
    assert!(
        xml.body.contains("<error>ERROR_METHOD_NOT_FOUND</error>"),
        "{}",
        xml.body
    );
    // A known method without credentials is an auth error, not a 404.
    s.get("/rest/im.notify.system.add")
        .assert_error(401, "NO_AUTH_FOUND");
}

#[test]
fn success_envelope_has_the_full_time_block_and_headers() {
    let s = Server::start();
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "m"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("x-request-id").is_some());
    let j = r.json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["result", "time"]);
    let t = &j["time"];
    // Floats as PHP's json_encode writes them: a zero or whole one without a fraction
    // (`"operating":0`, as the real server answers), so any JSON number.
    for k in ["start", "finish", "duration", "processing", "operating"] {
        assert!(t[k].is_number(), "{k} is a number: {t}");
    }
    assert!(
        !r.body.contains(".0,") && !r.body.contains(".0}"),
        "{}",
        r.body
    );
    assert!(t["operating_reset_at"].is_i64());
    assert!(t["finish"].as_f64().unwrap() >= t["start"].as_f64().unwrap());
    for k in ["date_start", "date_finish"] {
        let d = t[k].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(d).is_ok(), "{k}: {d}");
    }
    // Key order as the method page shows it.
    let order = r.body.find("\"start\"").unwrap() < r.body.find("\"operating_reset_at\"").unwrap()
        && r.body.find("\"operating_reset_at\"").unwrap() < r.body.find("\"operating\":").unwrap();
    assert!(order, "{}", r.body);
}

#[test]
fn xml_transport() {
    let s = Server::start();
    let r = s.post_form(
        &s.hook_url("im.notify.system.add.xml"),
        "USER_ID=1&MESSAGE=hi",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/xml; charset=utf-8"));
    assert!(r.body.starts_with("<response><result>"), "{}", r.body);
    assert!(r.body.contains("<time><start>"), "{}", r.body);
    let e = s.post_form(&s.hook_url("im.notify.system.add.xml"), "MESSAGE=hi");
    assert_eq!(e.status, 400);
    assert!(
        e.body.contains("<error>USER_ID_EMPTY</error>"),
        "{}",
        e.body
    );
}

#[test]
fn parameters_from_every_encoding() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    // Query string only, by GET.
    ok_id(&s.get(&format!("{url}?USER_ID=1&MESSAGE=from%20query")));
    // Form body.
    ok_id(&s.post_form(&url, "USER_ID=1&MESSAGE=form+body"));
    // JSON body with a charset parameter.
    ok_id(&s.request(
        "POST",
        &url,
        &[("Content-Type", "application/json; charset=utf-8")],
        br#"{"USER_ID":1,"MESSAGE":"json"}"#,
    ));
    // Multipart.
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"USER_ID\"\r\n\r\n1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"MESSAGE\"\r\n\r\nmultipart\r\n--{boundary}--\r\n"
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    ok_id(&s.request("POST", &url, &[("Content-Type", &ct)], body.as_bytes()));
    // JSON body plus parameters in the query.
    ok_id(&s.request(
        "POST",
        &format!("{url}?USER_ID=1"),
        &[("Content-Type", "application/json")],
        br#"{"MESSAGE":"json+query"}"#,
    ));
    let texts: Vec<String> = s
        .query("SELECT text FROM notifications ORDER BY id", &[])
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["from query", "form body", "json", "multipart", "json+query"]
    );
}

#[test]
fn body_wins_over_query() {
    let s = Server::start();
    s.add_user(2, &[]);
    let url = s.hook_url("im.notify.system.add");
    let r = s.post_form(&format!("{url}?USER_ID=1&MESSAGE=q"), "USER_ID=2&MESSAGE=b");
    let id = ok_id(&r);
    let (uid, text): (i64, String) = s
        .query(
            "SELECT user_id, text FROM notifications WHERE id=?1",
            &[id.into()],
        )
        .into_iter()
        .next()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                r[1].clone().unwrap(),
            )
        })
        .unwrap();
    assert_eq!((uid, text.as_str()), (2, "b"));
}

#[test]
fn json_quirks_of_the_real_server() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    // curl -d '{...}' without a JSON content type: PHP reads it as a form key, so no USER_ID.
    s.request(
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        br#"{"USER_ID":1,"MESSAGE":"x"}"#,
    )
    .assert_error(400, "USER_ID_EMPTY");
    // The content type is compared case-sensitively.
    s.request(
        "POST",
        &url,
        &[("Content-Type", "Application/JSON")],
        br#"{"USER_ID":1,"MESSAGE":"x"}"#,
    )
    .assert_error(400, "USER_ID_EMPTY");
    // Malformed JSON is an empty body, not an error of its own.
    s.request(
        "POST",
        &url,
        &[("Content-Type", "application/json")],
        br#"{"USER_ID":1,"#,
    )
    .assert_error(400, "USER_ID_EMPTY");
    // A GET body is never read.
    s.request(
        "GET",
        &url,
        &[("Content-Type", "application/json")],
        br#"{"USER_ID":1,"MESSAGE":"x"}"#,
    )
    .assert_error(400, "USER_ID_EMPTY");
}

/// PHP's `json_decode` reads a number too large for a float as `INF` and keeps the body
/// (serde_json alone refuses the whole text, which dropped every parameter): the call is
/// answered for what the body says, and a float becomes PHP's text of it (14 digits).
#[test]
fn json_numbers_beyond_a_float_keep_the_body() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    let post = |body: &str| {
        s.request(
            "POST",
            &url,
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    // `intval(INF)` is 0.
    post(r#"{"USER_ID":1e400,"MESSAGE":"x"}"#).assert_error(400, "USER_ID_EMPTY");
    // A number is not a MESSAGE (D9), however large; the USER_ID beside it was read.
    post(r#"{"USER_ID":1,"MESSAGE":-1e999}"#).assert_error(400, "MESSAGE_EMPTY");
    let id = ok_id(&post(
        r#"{"USER_ID":1,"MESSAGE":"x","CLIENT_ID":"c","TAG":1e400,"SUB_TAG":0.30000000000000004}"#,
    ));
    let row = s.query(
        "SELECT tag, sub_tag FROM notifications WHERE id = ?1",
        &[id.into()],
    );
    let tags = &row[0];
    assert!(tags[0].as_deref().unwrap().ends_with("|INF"), "{tags:?}");
    assert!(tags[1].as_deref().unwrap().ends_with("|0.3"), "{tags:?}");
}

/// U+2028 and U+2029 reach a REST answer escaped, as PHP's `json_encode` writes them (Bitrix24
/// does not pass `JSON_UNESCAPED_LINE_TERMINATORS`); other non-ASCII text stays UTF-8.
#[test]
fn line_separators_are_escaped_in_answers() {
    let s = Server::start();
    let id = s.notify(json!({"USER_ID": 1, "MESSAGE": "a\u{2028}b\u{2029}c é"}));
    let r = s.post_json(&s.hook_url("im.notify.get"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("a\\u2028b\\u2029c é") && !r.body.contains('\u{2028}'),
        "{id}: {}",
        r.body
    );
}

#[test]
fn php_bracket_arrays_encoded_or_literal() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    for (body, expected) in [
        ("USER_ID=1&MESSAGE=m&ATTACH[0][MESSAGE]=literal", "literal"),
        (
            "USER_ID=1&MESSAGE=m&ATTACH%5B0%5D%5BMESSAGE%5D=encoded",
            "encoded",
        ),
        (
            "USER_ID=1&MESSAGE=m&ATTACH[BLOCKS][0][MESSAGE]=full&ATTACH[COLOR]=%23ff0000",
            "full",
        ),
    ] {
        let id = ok_id(&s.post_form(&url, body));
        let attach: String = s
            .query_value("SELECT attach FROM notifications WHERE id=?1", &[id.into()])
            .unwrap();
        let a: serde_json::Value = serde_json::from_str(&attach).unwrap();
        assert_eq!(a["BLOCKS"][0]["MESSAGE"], expected, "{attach}");
    }
    // A top-level key that starts with '[' is dropped, as PHP drops it.
    s.post_form(&url, "[USER_ID]=1&MESSAGE=m")
        .assert_error(400, "USER_ID_EMPTY");
}

#[test]
fn extra_client_parameters_are_ignored() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    ok_id(&s.post_form(
        &url,
        "USER_ID=1&MESSAGE=m&bx24_request_id=abc&start=0&state=xyz&bx24_label[a]=b",
    ));
    ok_id(&s.post_json(
        &url,
        &json!({"USER_ID": 1, "MESSAGE": "m", "start": -1, "bx24_sdk": "js"}),
    ));
}

#[test]
fn top_level_keys_are_case_insensitive() {
    let s = Server::start();
    let url = s.hook_url("im.notify.system.add");
    ok_id(&s.post_json(&url, &json!({"user_id": 1, "Message": "lower"})));
}

#[test]
fn cors_preflight_is_answered() {
    let s = Server::start();
    let r = s.request(
        "OPTIONS",
        &s.hook_url("im.notify.system.add"),
        &[("Origin", "http://x")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn healthz() {
    let s = Server::start();
    let r = s.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
}

#[test]
fn oversized_body_gets_an_error_envelope() {
    let s = Server::start_with(common::Options {
        args: vec![],
        envs: vec![("IMNOTIFY_LIMITS__MAX_BODY_BYTES".into(), "1024".into())],
        ..Default::default()
    });
    let big = format!("USER_ID=1&MESSAGE={}", "x".repeat(2048));
    s.post_form(&s.hook_url("im.notify.system.add"), &big)
        .assert_error(413, "ERROR_REQUEST_TOO_LARGE");
}
