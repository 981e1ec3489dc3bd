//! The user directory over real HTTP: user.get (filters, sort, `start`/`next`/`total` paging),
//! user.current and im.user.get.

mod common;

use common::{Response, Server};
use serde_json::{json, Value};

fn call(s: &Server, hook: &str, method: &str, body: Value) -> Response {
    s.post_json(&format!("{hook}{method}"), &body)
}

/// Adds users 2..=n+1 straight into the database: the CLI would take a process per user.
fn add_users(s: &Server, n: i64) {
    // One statement, one transaction; the values are the test's own, so written inline.
    let rows: Vec<String> = (2..n + 2)
        .map(|id| {
            let name = if id % 10 == 0 { "Ivan" } else { "Petr" };
            let active = if id % 7 != 0 { "TRUE" } else { "FALSE" };
            format!("({id}, '{name}', 'L{id:03}', 'user{id}@example.com', {active}, 1700000000)")
        })
        .collect();
    s.execute(
        &format!(
            "INSERT INTO users (id, name, last_name, email, active, created_at) VALUES {}",
            rows.join(", ")
        ),
        &[],
    );
}

fn user_ids(result: &Value) -> Vec<i64> {
    result
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {result}"))
        .iter()
        .map(|u| u["ID"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn user_get_pages_by_fifty() {
    let s = Server::start();
    add_users(&s, 60);
    let hook = s.add_webhook(1, "user");

    let r = call(&s, &hook, "user.get", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["result", "next", "total", "time"]);
    assert_eq!(user_ids(&j["result"]), (1..=50).collect::<Vec<_>>());
    assert_eq!(j["next"], 50);
    assert_eq!(j["total"], 61);

    // `start` from the body, the query string, or both (the body wins).
    let j = call(&s, &hook, "user.get", json!({"start": 50})).json();
    assert_eq!(user_ids(&j["result"]), (51..=61).collect::<Vec<_>>());
    assert!(j.get("next").is_none(), "last page has no next: {j}");
    assert_eq!(j["total"], 61);
    let j = s.get(&format!("{hook}user.get?start=50")).json();
    assert_eq!(user_ids(&j["result"]).len(), 11);
    let j = call(&s, &hook, "user.get?start=0", json!({"start": "50"})).json();
    assert_eq!(user_ids(&j["result"]).len(), 11);
    // Past the end: an empty page, which carries neither total nor next.
    let j = call(&s, &hook, "user.get", json!({"start": 500})).json();
    assert_eq!(j["result"], json!([]));
    assert!(j.get("total").is_none() && j.get("next").is_none(), "{j}");
    // `start` is the framework's: never a filter.
    let j = call(&s, &hook, "user.get", json!({"START": 50})).json();
    assert_eq!(
        user_ids(&j["result"]).len(),
        50,
        "upper-case START is not start"
    );
}

#[test]
fn user_get_filters_and_sort() {
    let s = Server::start();
    add_users(&s, 30);
    let hook = s.add_webhook(1, "user");
    let get = |body: Value| {
        let r = call(&s, &hook, "user.get", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };

    let j = get(json!({"ID": 7}));
    assert_eq!(user_ids(&j["result"]), [7]);
    assert_eq!(j["total"], 1);
    let j = get(json!({"filter": {"ID": [3, 5, 999]}}));
    assert_eq!(user_ids(&j["result"]), [3, 5]);
    let j = get(json!({"FILTER": {"EMAIL": "USER12@example.com"}}));
    assert_eq!(user_ids(&j["result"]), [12]);
    // ACTIVE: inactive users are listed unless filtered out.
    let j = get(json!({"filter": {"ACTIVE": "N"}}));
    assert_eq!(user_ids(&j["result"]), [7, 14, 21, 28]);
    let j = get(json!({"ACTIVE": true}));
    assert_eq!(j["total"], 31 - 4);
    // NAME: exact, or a LIKE pattern.
    let j = get(json!({"filter": {"NAME": "Ivan"}}));
    assert_eq!(user_ids(&j["result"]), [10, 20, 30]);
    let j = get(json!({"filter": {"NAME": "Iv%"}}));
    assert_eq!(user_ids(&j["result"]), [10, 20, 30]);
    let j = get(json!({"filter": {"%NAME": "va"}}));
    assert_eq!(user_ids(&j["result"]), [10, 20, 30]);
    let j = get(json!({"filter": {"NAME": "Iva"}}));
    assert_eq!(j["result"], json!([]));
    // Filters combine; form-encoded works too.
    let r = s.post_form(
        &format!("{hook}user.get"),
        "FILTER[NAME]=Ivan&FILTER[ACTIVE]=Y&SORT=ID&ORDER=desc",
    );
    assert_eq!(user_ids(&r.json()["result"]), [30, 20, 10]);
    let j = get(json!({"SORT": "LAST_NAME", "ORDER": "DESC", "filter": {"ID": [2, 3, 4]}}));
    assert_eq!(user_ids(&j["result"]), [4, 3, 2]);

    // The shape of one user.
    let u = &get(json!({"ID": 12}))["result"][0];
    assert_eq!(u["ID"], "12");
    assert_eq!(u["ACTIVE"], true);
    assert_eq!(u["NAME"], "Petr");
    assert_eq!(u["LAST_NAME"], "L012");
    assert_eq!(u["EMAIL"], "user12@example.com");
    assert_eq!(u["UF_DEPARTMENT"], json!([]));
    assert_eq!(u["USER_TYPE"], "employee");
    let registered = u["DATE_REGISTER"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(registered)
            .unwrap()
            .timestamp(),
        1_700_000_000
    );
}

/// Users with the given (id, name, last name, e-mail, active), straight into the database.
fn insert_users(s: &Server, users: &[(i64, &str, &str, &str, bool)]) {
    for (id, name, last_name, email, active) in users {
        s.execute(
            &format!(
                "INSERT INTO users (id, name, last_name, email, active, created_at)
                 VALUES (?1, ?2, ?3, ?4, {}, 1700000000)",
                if *active { "TRUE" } else { "FALSE" }
            ),
            &[
                (*id).into(),
                (*name).into(),
                (*last_name).into(),
                (*email).into(),
            ],
        );
    }
}

/// `FILTER[ACTIVE]` is read as PHP reads it: `N` and the falsy values select inactive users,
/// anything else active ones, so the form-encoded `false` some SDKs send for a JS `false`
/// selects the active users (b24jssdk#533).
#[test]
fn user_get_reads_active_with_php_truthiness() {
    let s = Server::start();
    add_users(&s, 9); // users 2..=10; 7 is the inactive one
    let hook = s.add_webhook(1, "user");
    let active: Vec<i64> = (1..=10).filter(|id| *id != 7).collect();
    for form in ["Y", "false", "true", "1", "n", "yes"] {
        let r = s.post_form(
            &format!("{hook}user.get"),
            &format!("FILTER[ACTIVE]={form}"),
        );
        assert_eq!(user_ids(&r.json()["result"]), active, "ACTIVE={form}");
    }
    for form in ["N", "0", ""] {
        let r = s.post_form(
            &format!("{hook}user.get"),
            &format!("FILTER[ACTIVE]={form}"),
        );
        assert_eq!(user_ids(&r.json()["result"]), [7], "ACTIVE={form}");
    }
    for (json, want) in [(json!(false), vec![7]), (json!(true), active.clone())] {
        let j = call(&s, &hook, "user.get", json!({"FILTER": {"ACTIVE": json}})).json();
        assert_eq!(user_ids(&j["result"]), want, "ACTIVE={json}");
    }
    // `!ACTIVE` negates the same reading.
    let r = s.post_form(&format!("{hook}user.get"), "FILTER[!ACTIVE]=false");
    assert_eq!(user_ids(&r.json()["result"]), [7]);
}

/// `SORT` and `ORDER` apply only together; one alone leaves ids ascending.
#[test]
fn user_get_sorts_only_with_sort_and_order() {
    let s = Server::start();
    insert_users(
        &s,
        &[
            (2, "Anna", "Zhukova", "a@example.com", true),
            (3, "Boris", "Abramov", "b@example.com", true),
            (4, "Vera", "Morozova", "v@example.com", true),
        ],
    );
    let hook = s.add_webhook(1, "user");
    let form =
        |body: &str| user_ids(&s.post_form(&format!("{hook}user.get"), body).json()["result"]);
    assert_eq!(form("ORDER=DESC"), [1, 2, 3, 4]);
    assert_eq!(form("SORT=LAST_NAME"), [1, 2, 3, 4]);
    assert_eq!(form("SORT=LAST_NAME&ORDER=ASC"), [1, 3, 4, 2]);
    assert_eq!(form("SORT=ID&ORDER=DESC"), [4, 3, 2, 1]);
}

/// An empty page is a bare list: no `total`, no `next`.
#[test]
fn user_get_empty_page_has_no_total() {
    let s = Server::start();
    let hook = s.add_webhook(1, "user");
    let r = s.post_form(&format!("{hook}user.get"), "FILTER[ID]=99999");
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["result", "time"], "{j}");
    assert_eq!(j["result"], json!([]));
    // A page with users still has its total.
    let j = s
        .post_form(&format!("{hook}user.get"), "FILTER[ID]=1")
        .json();
    assert_eq!(j["total"], 1);
}

/// The documented filter prefixes on the fields the directory stores.
#[test]
fn user_get_filter_prefixes() {
    let s = Server::start();
    insert_users(
        &s,
        &[
            (2, "Ivan", "Ivanov", "ivan@example.com", true),
            (3, "Petr", "Petrov", "petr@example.com", true),
            (4, "Olga", "Smirnova", "olga@example.org", false),
            (5, "Anna", "Lee", "anna_lee@example.org", true),
            (6, "Ovid", "Nason", "ovid@example.com", true),
        ],
    );
    let hook = s.add_webhook(1, "user");
    // Keys are form-encoded as an SDK sends them: `%` is %25, `=` is %3D.
    let form = |body: &str| {
        let r = s.post_form(&format!("{hook}user.get"), body);
        assert_eq!(r.status, 200, "{}", r.body);
        user_ids(&r.json()["result"])
    };
    // `%`: contains, without regard to ASCII case.
    assert_eq!(form("FILTER[%25LAST_NAME]=ov"), [2, 3, 4]);
    assert_eq!(form("FILTER[%25NAME]=ov"), [6]);
    assert_eq!(form("FILTER[%25EMAIL]=example.org"), [4, 5]);
    // Its own `%` and `_` are literal, not wildcards.
    assert_eq!(form("FILTER[%25EMAIL]=a_l"), [5]);
    assert_eq!(form("FILTER[%25LAST_NAME]=%25"), Vec::<i64>::new());
    // `!%`: does not contain.
    assert_eq!(form("FILTER[!%25LAST_NAME]=ov"), [1, 5, 6]);
    // `=` and `!`: equal, not equal; a list is any / none of its values.
    assert_eq!(form("FILTER[%3DLAST_NAME]=Petrov"), [3]);
    assert_eq!(form("FILTER[!ID]=1"), [2, 3, 4, 5, 6]);
    assert_eq!(form("FILTER[!ID][]=1&FILTER[!ID][]=2"), [3, 4, 5, 6]);
    assert_eq!(
        form("FILTER[%3DNAME][]=Anna&FILTER[%3DNAME][]=Olga"),
        [4, 5]
    );
    assert_eq!(
        form("FILTER[!EMAIL]=IVAN@example.com&FILTER[>ID]=1"),
        [3, 4, 5, 6]
    );
    // `>`, `<`, `>=`, `<=`: on ids, a range when combined.
    assert_eq!(form("FILTER[>ID]=4"), [5, 6]);
    assert_eq!(form("FILTER[>%3DID]=3&FILTER[<%3DID]=4"), [3, 4]);
    assert_eq!(form("FILTER[<ID]=3"), [1, 2]);
    // and on texts, in text order (user 1 has an empty last name).
    assert_eq!(form("FILTER[<LAST_NAME]=M"), [1, 2, 5]);
    // Prefixes work at the top level too, and combine with the plain keys.
    assert_eq!(form("%25LAST_NAME=ov&ACTIVE=Y"), [2, 3]);
    // Unknown fields, with or without a prefix, are still ignored.
    assert_eq!(form("FILTER[%25UF_DEPARTMENT]=1&FILTER[>ID]=5"), [6]);
    // The plain keys keep their meaning: NAME with a `%` is a pattern.
    assert_eq!(form("FILTER[NAME]=O%25"), [4, 6]);
}

/// `profile` has `TIME_ZONE_OFFSET`: the user's offset from the server (0 here, users have no
/// time zone) plus the server's from UTC, in seconds.
#[test]
fn profile_has_the_time_zone_offset() {
    // A POSIX zone string needs no tz database: UTC+5:30 all year.
    let s = Server::start_with(common::Options {
        envs: vec![("TZ".into(), "IST-5:30".into())],
        ..Default::default()
    });
    let r = s.post_json(&format!("{}profile", s.hook), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert_eq!(j["result"]["TIME_ZONE_OFFSET"], 19800, "{j}");
    assert_eq!(j["result"]["TIME_ZONE"], "");
    // The same offset as the server's dates.
    assert!(
        j["time"]["date_start"]
            .as_str()
            .unwrap()
            .ends_with("+05:30"),
        "{j}"
    );
}

#[test]
fn user_current_and_im_user_get() {
    let s = Server::start();
    let out = s.cli(&[
        "user",
        "add",
        "--id",
        "5",
        "--name",
        "Anna",
        "--last-name",
        "Smith",
        "--email",
        "anna@example.com",
    ]);
    assert!(out.status.success());
    s.add_user(6, &["--inactive"]);
    let both = s.add_webhook(5, "im,user");

    let r = call(&s, &both, "user.current", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let me = &r.json()["result"];
    assert_eq!(me["ID"], "5");
    assert_eq!(me["NAME"], "Anna");
    assert_eq!(me["LAST_NAME"], "Smith");
    assert_eq!(me["EMAIL"], "anna@example.com");

    // im.user.get: the caller by default.
    let r = call(&s, &both, "im.user.get", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let card = &r.json()["result"];
    assert_eq!(card["id"], 5);
    assert_eq!(card["name"], "Anna Smith");
    assert_eq!(card["first_name"], "Anna");
    assert_eq!(card["last_name"], "Smith");
    assert_eq!(card["email"], "anna@example.com");
    assert_eq!(card["bot"], false);
    assert_eq!(card["departments"], json!([]));
    assert!(card.get("avatar_hr").is_none());
    assert!(card["color"].as_str().unwrap().starts_with('#'));
    // Another user, with the high-resolution avatar member.
    let card = call(&s, &both, "im.user.get", json!({"ID": 6, "AVATAR_HR": "Y"})).json();
    assert_eq!(card["result"]["id"], 6);
    assert_eq!(card["result"]["active"], false);
    assert!(card["result"].get("avatar_hr").is_some());
    // Its errors.
    let r = call(&s, &both, "im.user.get", json!({"ID": 0}));
    r.assert_error(400, "ID_EMPTY");
    assert_eq!(r.json()["error_description"], "User ID can't be empty");
    call(&s, &both, "im.user.get", json!({"ID": "x"})).assert_error(400, "ID_EMPTY");
    let r = call(&s, &both, "im.user.get", json!({"ID": 999}));
    r.assert_error(400, "USER_NOT_EXISTS");
    assert_eq!(r.json()["error_description"], "User is not exists");
    // A null ID is no ID (PHP's isset).
    let r = call(&s, &both, "im.user.get", json!({"ID": null}));
    assert_eq!(r.json()["result"]["id"], 5, "{}", r.body);
}

#[test]
fn user_methods_need_scope_user() {
    let s = Server::start();
    // The first-start webhook has scope im only.
    for method in ["user.get", "user.current"] {
        let r = call(&s, &s.hook, method, json!({}));
        r.assert_error(403, "insufficient_scope");
        s.post_json(&format!("/rest/{method}"), &json!({}))
            .assert_error(401, "NO_AUTH_FOUND");
    }
    // im.user.get is in scope im.
    let r = call(&s, &s.hook, "im.user.get", json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let user_only = s.add_webhook(1, "user");
    call(&s, &user_only, "im.user.get", json!({})).assert_error(403, "insufficient_scope");
}

#[test]
fn a_long_id_filter_is_not_an_error() {
    let s = Server::start();
    add_users(&s, 3);
    let hook = s.add_webhook(1, "user");
    // Longer than SQLite's limit on bound parameters.
    let ids: Vec<i64> = (1..=40_000).collect();
    let r = call(&s, &hook, "user.get", json!({"filter": {"ID": ids}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["total"], 4);
}

#[test]
fn batch_commands_page_with_their_own_start() {
    let s = Server::start();
    add_users(&s, 60);
    let hook = s.add_webhook(1, "user,im");
    let r = s.post_json(
        &format!("{hook}batch"),
        &json!({"cmd": {
            "first": "user.get",
            "second": "user.get?start=50",
            "count": "im.counters.get"
        }}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let results = &j["result"]["result"];
    assert_eq!(user_ids(&results["first"]).len(), 50);
    assert_eq!(user_ids(&results["second"]), (51..=61).collect::<Vec<_>>());
    assert_eq!(j["result"]["result_next"]["first"], 50);
    assert!(j["result"]["result_next"].get("second").is_none(), "{j}");
    assert_eq!(j["result"]["result_total"]["second"], 61);
    assert_eq!(results["count"]["TYPE"]["NOTIFY"], 0);
}
