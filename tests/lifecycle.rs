//! The notification lifecycle over real HTTP (§4): get, read, read.list, read.all, delete,
//! history.search, schema.get, answer, confirm and im.counters.get, every error with its status,
//! and the whole cycle of one notification.

mod common;

use common::{Response, Server};
use serde_json::{json, Value};

fn call(s: &Server, hook: &str, method: &str, body: Value) -> Response {
    s.post_json(&format!("{hook}{method}"), &body)
}

/// The `result` of a successful call.
fn ok(r: Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert!(j.get("time").is_some(), "{}", r.body);
    j["result"].clone()
}

fn send(s: &Server, body: Value) -> i64 {
    s.notify(body)
}

fn ids(list: &Value) -> Vec<i64> {
    list["notifications"]
        .as_array()
        .unwrap_or_else(|| panic!("no notifications in {list}"))
        .iter()
        .map(|n| n["id"].as_i64().unwrap())
        .collect()
}

fn get(s: &Server, hook: &str, body: Value) -> Value {
    ok(call(s, hook, "im.notify.get", body))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes a row REST cannot create (a confirm-type notification) into the server's database.
fn insert_confirm(s: &Server, user_id: i64, text: &str) -> i64 {
    s.query_value(
        "INSERT INTO notifications (user_id, author_id, notify_type, text, buttons, created_at)
         VALUES (?1, 0, 1, ?2, '[{\"TITLE\":\"Accept\",\"VALUE\":\"Y\"}]', ?3) RETURNING id",
        &[user_id.into(), text.into(), now().into()],
    )
    .unwrap()
}

fn insert_tagged(s: &Server, user_id: i64, tag: &str) -> i64 {
    s.query_value(
        "INSERT INTO notifications (user_id, notify_type, text, tag, created_at)
         VALUES (?1, 4, 'sibling', ?2, ?3) RETURNING id",
        &[user_id.into(), tag.into(), now().into()],
    )
    .unwrap()
}

fn exists(s: &Server, id: i64) -> bool {
    s.query_value::<i64>(
        "SELECT COUNT(*) FROM notifications WHERE id = ?1",
        &[id.into()],
    ) == Some(1)
}

fn unread_counter(s: &Server, hook: &str) -> i64 {
    ok(call(s, hook, "im.counters.get", json!({})))["TYPE"]["NOTIFY"]
        .as_i64()
        .unwrap()
}

fn is_rfc3339(d: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(d).is_ok() && d.len() == 25
}

#[test]
fn a_system_notification_goes_through_the_whole_cycle() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let tagged = |message: &str, tag: &str, sub_tag: &str| json!({"USER_ID": 5, "MESSAGE": message, "CLIENT_ID": "crm", "TAG": tag, "SUB_TAG": sub_tag});

    // Listed.
    let first = send(&s, tagged("Deal 42 won", "DEAL_42", "DEAL|42"));
    let page = get(&s, &anna, json!({}));
    assert_eq!(ids(&page), [first]);
    assert_eq!(page["total_count"], 1);
    assert_eq!(page["total_unread_count"], 1);
    let n = &page["notifications"][0];
    assert_eq!(n["text"], "Deal 42 won");
    assert_eq!(n["notify_read"], "N");
    let ns = &n["notify_tag"].as_str().unwrap()[..9];
    assert!(ns.starts_with("MP|") && ns.ends_with('|'), "{n}");
    assert_eq!(n["notify_tag"], format!("{ns}DEAL_42"));
    assert_eq!(n["notify_sub_tag"], format!("{ns}DEAL|42"));
    assert_eq!(n["chat_id"], page["chat_id"]);

    // Counted, then marked read.
    assert_eq!(unread_counter(&s, &anna), 1);
    assert_eq!(
        ok(call(&s, &anna, "im.notify.read", json!({"ID": first}))),
        true
    );
    let page = get(&s, &anna, json!({}));
    assert_eq!(page["notifications"][0]["notify_read"], "Y");
    assert_eq!(page["total_unread_count"], 0);
    assert_eq!(unread_counter(&s, &anna), 0);

    // Replaced by its TAG: the new one takes the old one's place, unread again.
    let second = send(&s, tagged("Deal 42 won (updated)", "DEAL_42", "DEAL|42"));
    assert!(second > first);
    let page = get(&s, &anna, json!({}));
    assert_eq!(ids(&page), [second]);
    assert_eq!(page["total_count"], 1);
    assert_eq!(page["total_unread_count"], 1);
    assert_eq!(unread_counter(&s, &anna), 1);

    // Deleted by TAG: the sender's webhook owner with the same CLIENT_ID reaches every
    // recipient (D4); a different CLIENT_ID is a different namespace and deletes nothing.
    assert_eq!(
        ok(call(
            &s,
            &s.hook,
            "im.notify.delete",
            json!({"CLIENT_ID": "other", "TAG": "DEAL_42"})
        )),
        true
    );
    assert!(exists(&s, second));
    assert_eq!(
        ok(call(
            &s,
            &s.hook,
            "im.notify.delete",
            json!({"CLIENT_ID": "crm", "TAG": "DEAL_42"})
        )),
        true
    );
    assert!(!exists(&s, second));
    let page = get(&s, &anna, json!({}));
    assert_eq!(page, json!({"notifications": [], "users": []}));
    assert_eq!(unread_counter(&s, &anna), 0);

    // Deleted by SUB_TAG: only the matching one goes. Another user's webhook with the same
    // CLIENT_ID is another origin (README "Tag origin") and deletes nothing.
    let a = send(&s, tagged("a", "T_A", "GROUP|1"));
    let b = send(&s, tagged("b", "T_B", "GROUP|2"));
    let by_sub_tag = json!({"CLIENT_ID": "crm", "SUB_TAG": "GROUP|1"});
    assert_eq!(
        ok(call(&s, &anna, "im.notify.delete", by_sub_tag.clone())),
        true
    );
    assert!(exists(&s, a));
    assert_eq!(ok(call(&s, &s.hook, "im.notify.delete", by_sub_tag)), true);
    let page = get(&s, &anna, json!({}));
    assert_eq!(ids(&page), [b]);
    assert!(!exists(&s, a));
    assert_eq!(page["total_count"], 1);
}

#[test]
fn get_returns_every_field_and_the_authors() {
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
    ]);
    assert!(out.status.success());
    let anna = s.add_webhook(5, "im");

    // No notification chat yet: only the two lists.
    assert_eq!(
        get(&s, &anna, json!({})),
        json!({"notifications": [], "users": []})
    );

    // A personal notification from user 1 to Anna: author is the caller, type 2.
    let personal = ok(call(
        &s,
        &s.hook,
        "im.notify.personal.add",
        json!({"USER_ID": 5, "MESSAGE": "Personal [b]note[/b]", "ATTACH": [{"MESSAGE": "attached"}]}),
    ))
    .as_i64()
    .unwrap();
    let system = send(&s, json!({"USER_ID": 5, "MESSAGE": "System"}));

    let page = get(&s, &anna, json!({}));
    let keys: Vec<&str> = page
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "total_count",
            "total_unread_count",
            "chat_id",
            "notifications",
            "users"
        ]
    );
    assert_eq!(ids(&page), [system, personal], "newest first");
    let chat_id = page["chat_id"].as_i64().unwrap();
    assert!(chat_id > 0);

    let n = &page["notifications"][1];
    let keys: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "chat_id",
            "author_id",
            "date",
            "notify_type",
            "notify_module",
            "notify_event",
            "notify_tag",
            "notify_sub_tag",
            "notify_title",
            "setting_name",
            "text",
            "notify_read",
            "params"
        ]
    );
    assert_eq!(n["chat_id"], chat_id);
    assert_eq!(n["author_id"], 1);
    assert_eq!(n["notify_type"], 2);
    assert_eq!(n["notify_module"], "rest");
    assert_eq!(n["notify_event"], "rest_notify");
    assert_eq!(n["setting_name"], "rest|rest_notify");
    assert_eq!(n["notify_tag"], "");
    assert_eq!(n["notify_title"], "");
    assert_eq!(n["text"], "Personal [b]note[/b]");
    assert!(is_rfc3339(n["date"].as_str().unwrap()), "{n}");
    let attach = &n["params"]["ATTACH"];
    assert_eq!(attach.as_array().unwrap().len(), 1, "{n}");
    assert_eq!(attach[0]["BLOCKS"], json!([{"MESSAGE": "attached"}]));

    let sys = &page["notifications"][0];
    assert_eq!(sys["author_id"], 0);
    assert_eq!(sys["notify_type"], 4);
    assert_eq!(sys["params"], Value::Null);

    // The author's card, once.
    let users = page["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["id"], 1);
    assert_eq!(users[0]["name"], "Admin");
    assert_eq!(users[0]["type"], "user");
    assert!(users[0]["color"].as_str().unwrap().starts_with('#'));

    // The raw answer keeps PHP's list rule: an empty params list is never `{}`.
    let raw = call(&s, &anna, "im.notify.get", json!({"LIMIT": 1}));
    assert!(raw.body.contains("\"params\":null"), "{}", raw.body);
}

#[test]
fn get_pages_with_the_last_id_cursor() {
    let s = Server::start();
    let sent: Vec<i64> = (0..57)
        .map(|i| send(&s, json!({"USER_ID": 1, "MESSAGE": format!("n{i}")})))
        .collect();
    let newest_first: Vec<i64> = sent.iter().rev().copied().collect();

    // LIMIT defaults to 50 and is clamped to 50.
    assert_eq!(ids(&get(&s, &s.hook, json!({}))), newest_first[..50]);
    assert_eq!(
        ids(&get(&s, &s.hook, json!({"LIMIT": 500}))),
        newest_first[..50]
    );
    assert_eq!(
        ids(&get(&s, &s.hook, json!({"LIMIT": 0}))),
        newest_first[..50]
    );

    // Walk the whole list three at a time.
    let mut seen: Vec<i64> = Vec::new();
    let mut cursor = json!({"LIMIT": 3});
    loop {
        let page = ids(&get(&s, &s.hook, cursor.clone()));
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        seen.extend(&page);
        cursor = json!({"LIMIT": 3, "LAST_ID": page.last().unwrap().to_string(), "LAST_TYPE": 3});
    }
    assert_eq!(seen, newest_first);
    // Totals are of the whole list, not of the page.
    let page = get(&s, &s.hook, json!({"LIMIT": 2}));
    assert_eq!(page["total_count"], 57);
    assert_eq!(page["total_unread_count"], 57);

    // Confirmations come first; LAST_TYPE=1 continues among them, then fills with the rest.
    let c1 = insert_confirm(&s, 1, "confirm 1");
    let c2 = insert_confirm(&s, 1, "confirm 2");
    let page = get(&s, &s.hook, json!({"LIMIT": 3}));
    assert_eq!(ids(&page), [c2, c1, newest_first[0]]);
    let confirm = &page["notifications"][0];
    assert_eq!(confirm["notify_type"], 1);
    assert_eq!(
        confirm["notify_buttons"],
        "[{\"TITLE\":\"Accept\",\"VALUE\":\"Y\"}]"
    );
    assert!(page["notifications"][2].get("notify_buttons").is_none());
    let page = get(
        &s,
        &s.hook,
        json!({"LIMIT": 3, "LAST_ID": c2, "LAST_TYPE": 1}),
    );
    assert_eq!(ids(&page), [c1, newest_first[0], newest_first[1]]);

    // The errors, with their statuses.
    call(&s, &s.hook, "im.notify.get", json!({"LAST_ID": 5}))
        .assert_error(400, "LAST_ID_AND_LAST_TYPE");
    call(&s, &s.hook, "im.notify.get", json!({"LAST_TYPE": 3}))
        .assert_error(400, "LAST_ID_AND_LAST_TYPE");
    let r = call(
        &s,
        &s.hook,
        "im.notify.get",
        json!({"LAST_ID": "12a", "LAST_TYPE": 3}),
    );
    r.assert_error(400, "LAST_ID_STRING");
    assert_eq!(
        r.json()["error_description"],
        "Last notification ID can't be string"
    );
    assert_eq!(
        call(&s, &s.hook, "im.notify.get", json!({"LAST_ID": 5})).json()["error_description"],
        "Parameters LAST_ID and LAST_TYPE should be used together."
    );
    // Form-encoded, lower-case keys.
    let r = s.post_form(&s.hook_url("im.notify.get"), "last_id=x&last_type=3");
    r.assert_error(400, "LAST_ID_STRING");
}

#[test]
fn read_toggles_this_one_and_newer_and_same_tag_siblings() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let n: Vec<i64> = (0..4)
        .map(|i| send(&s, json!({"USER_ID": 1, "MESSAGE": format!("n{i}")})))
        .collect();
    let annas = send(&s, json!({"USER_ID": 5, "MESSAGE": "not yours"}));
    let read_state = |ids: &[i64]| -> Vec<String> {
        let page = get(&s, &s.hook, json!({}));
        ids.iter()
            .map(|id| {
                page["notifications"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["id"] == *id)
                    .map(|x| x["notify_read"].as_str().unwrap().to_owned())
                    .unwrap()
            })
            .collect()
    };

    // ONLY_CURRENT=Y: just this one.
    let r = call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[1], "ONLY_CURRENT": "Y"}),
    );
    assert_eq!(ok(r), true);
    assert_eq!(read_state(&n), ["N", "Y", "N", "N"]);
    assert_eq!(unread_counter(&s, &s.hook), 3);

    // Without it: this one and every newer one.
    ok(call(&s, &s.hook, "im.notify.read", json!({"ID": n[2]})));
    assert_eq!(read_state(&n), ["N", "Y", "Y", "Y"]);
    assert_eq!(unread_counter(&s, &s.hook), 1);

    // ACTION other than "Y" marks unread, with the same scope rules.
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[1], "ACTION": "N"}),
    ));
    assert_eq!(read_state(&n), ["N", "N", "N", "N"]);
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[0], "ACTION": "Y", "ONLY_CURRENT": "Y"}),
    ));
    assert_eq!(read_state(&n), ["Y", "N", "N", "N"]);

    // Another user's notification is not touched, whatever the id; no ID does nothing.
    ok(call(&s, &s.hook, "im.notify.read", json!({"ID": annas})));
    assert_eq!(
        get(&s, &anna, json!({}))["notifications"][0]["notify_read"],
        "N"
    );
    assert_eq!(ok(call(&s, &s.hook, "im.notify.read", json!({}))), true);
    assert_eq!(read_state(&n), ["Y", "N", "N", "N"]);
    // Unread needs one of the caller's ids; read works from any id up, within the caller's own.
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": annas, "ACTION": "N"}),
    ));
    assert_eq!(
        get(&s, &anna, json!({}))["notifications"][0]["notify_read"],
        "N"
    );
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[3] + 10_000}),
    ));
    assert_eq!(read_state(&n), ["Y", "N", "N", "N"]);
    ok(call(&s, &s.hook, "im.notify.read", json!({"ID": n[2]})));
    assert_eq!(read_state(&n), ["Y", "N", "Y", "Y"]);
    // ID 0 (or anything intval makes 0) reads everything; as an unread it does nothing.
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": 0, "ACTION": "N"}),
    ));
    assert_eq!(read_state(&n), ["Y", "N", "Y", "Y"]);
    ok(call(&s, &s.hook, "im.notify.read", json!({"ID": "all"})));
    assert_eq!(read_state(&n), ["Y", "Y", "Y", "Y"]);
    assert_eq!(
        get(&s, &anna, json!({}))["notifications"][0]["notify_read"],
        "N",
        "only the caller's"
    );
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[1], "ACTION": "N"}),
    ));
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[0], "ACTION": "N", "ONLY_CURRENT": "Y"}),
    ));
    assert_eq!(read_state(&n), ["N", "N", "N", "N"]);
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": n[0], "ONLY_CURRENT": "Y"}),
    ));
    assert_eq!(read_state(&n), ["Y", "N", "N", "N"]);

    // Unread notifications sharing the tag are toggled together, even older ones.
    let older_sibling = insert_tagged(&s, 1, "MP|abcde|GROUP");
    let sibling = insert_tagged(&s, 1, "MP|abcde|GROUP");
    let other_tag = insert_tagged(&s, 1, "MP|abcde|OTHER");
    ok(call(
        &s,
        &s.hook,
        "im.notify.read",
        json!({"ID": sibling, "ONLY_CURRENT": "Y"}),
    ));
    assert_eq!(
        read_state(&[older_sibling, sibling, other_tag]),
        ["Y", "Y", "N"]
    );

    // Confirmations are never toggled, and stay in the counter read.all answers.
    let confirm = insert_confirm(&s, 1, "confirm");
    let answer = ok(call(&s, &s.hook, "im.notify.read.all", json!({})));
    assert_eq!(read_state(&[confirm]), ["N"]);
    assert_eq!(answer, json!({"result": true, "newCounter": 1}));
}

#[test]
fn read_list_and_read_all() {
    let s = Server::start();
    let n: Vec<i64> = (0..5)
        .map(|i| send(&s, json!({"USER_ID": 1, "MESSAGE": format!("n{i}")})))
        .collect();
    let states = || -> Vec<String> {
        let mut page = get(&s, &s.hook, json!({}))["notifications"]
            .as_array()
            .unwrap()
            .clone();
        page.reverse();
        page.iter()
            .map(|x| x["notify_read"].as_str().unwrap().to_owned())
            .collect()
    };

    // Each id by itself (not "and newer"), up to the first id that is not positive.
    let r = call(
        &s,
        &s.hook,
        "im.notify.read.list",
        json!({"IDS": [n[0], n[2], 0, n[4]]}),
    );
    assert_eq!(ok(r), true);
    assert_eq!(states(), ["Y", "N", "Y", "N", "N"]);
    // The bracket form and ACTION.
    let r = s.post_form(
        &s.hook_url("im.notify.read.list"),
        &format!("IDS[]={}&IDS[]={}&ACTION=N", n[0], n[2]),
    );
    assert_eq!(ok(r), true);
    assert_eq!(states(), ["N", "N", "N", "N", "N"]);

    for bad in [json!({}), json!({"IDS": "1,2"}), json!({"IDS": 3})] {
        let r = call(&s, &s.hook, "im.notify.read.list", bad);
        r.assert_error(400, "PARAMS_ERROR");
        assert_eq!(
            r.json()["error_description"],
            "No IDS param or it is not an array"
        );
    }

    // read.all: everything, answered with the documented object that the PHP SDK reads.
    assert_eq!(unread_counter(&s, &s.hook), 5);
    let r = call(&s, &s.hook, "im.notify.read.all", json!({}));
    assert_eq!(
        r.json()["result"],
        json!({"result": true, "newCounter": 0}),
        "{}",
        r.body
    );
    assert_eq!(states(), ["Y", "Y", "Y", "Y", "Y"]);
    assert_eq!(unread_counter(&s, &s.hook), 0);
    assert_eq!(get(&s, &s.hook, json!({}))["total_unread_count"], 0);
}

#[test]
fn delete_by_id_and_its_errors() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let mine = send(&s, json!({"USER_ID": 1, "MESSAGE": "mine"}));
    let hers = send(&s, json!({"USER_ID": 5, "MESSAGE": "hers"}));

    // Only the caller's own notification.
    let del = |hook: &str, body: Value| call(&s, hook, "im.notify.delete", body);
    assert_eq!(ok(del(&s.hook, json!({"ID": hers}))), false);
    assert!(exists(&s, hers));
    assert_eq!(ok(del(&anna, json!({"ID": hers}))), true);
    assert!(!exists(&s, hers));
    assert_eq!(ok(del(&anna, json!({"ID": hers}))), false);
    // ID present but empty: false, and the TAG beside it is not looked at.
    assert_eq!(
        ok(del(
            &s.hook,
            json!({"ID": "", "CLIENT_ID": "c", "TAG": "T"})
        )),
        false
    );
    assert!(exists(&s, mine));

    // A webhook without CLIENT_ID has no namespace: 403.
    let r = del(&s.hook, json!({"TAG": "T"}));
    r.assert_error(403, "ACCESS_DENIED");
    assert_eq!(
        r.json()["error_description"],
        "Access denied! Client ID not specified"
    );
    del(&s.hook, json!({})).assert_error(403, "ACCESS_DENIED");
    // A namespace but nothing to delete by.
    let r = del(&s.hook, json!({"CLIENT_ID": "c"}));
    r.assert_error(400, "PARAMS_ERROR");
    assert_eq!(r.json()["error_description"], "Incorrect params");
    del(
        &s.hook,
        json!({"CLIENT_ID": "c", "TAG": "0", "SUB_TAG": ""}),
    )
    .assert_error(400, "PARAMS_ERROR");
    // Deleting a tag nobody has is still `true`.
    assert_eq!(
        ok(del(&s.hook, json!({"CLIENT_ID": "c", "TAG": "NONE"}))),
        true
    );
    assert!(exists(&s, mine));
}

#[test]
fn history_search() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let invoice = send(&s, json!({"USER_ID": 1, "MESSAGE": "Invoice 7 paid"}));
    let other = send(&s, json!({"USER_ID": 1, "MESSAGE": "Deploy done"}));
    let from_anna = ok(call(
        &s,
        &anna,
        "im.notify.personal.add",
        json!({"USER_ID": 1, "MESSAGE": "invoice question"}),
    ))
    .as_i64()
    .unwrap();
    let search = |body: Value| ok(call(&s, &s.hook, "im.notify.history.search", body));

    // Case-insensitive text, newest first, with the authors.
    let r = search(json!({"SEARCH_TEXT": "INVOICE"}));
    assert_eq!(ids(&r), [from_anna, invoice]);
    assert_eq!(r["total_results"], 2);
    assert!(r["chat_id"].as_i64().unwrap() > 0);
    assert_eq!(r["users"][0]["id"], 5);
    assert_eq!(r["notifications"][0]["notify_type"], 2);
    // Paging: total_results only on the first page.
    let r = search(json!({"SEARCH_TEXT": "invoice", "LIMIT": 1}));
    assert_eq!(ids(&r), [from_anna]);
    let r = search(json!({"SEARCH_TEXT": "invoice", "LIMIT": 1, "LAST_ID": from_anna}));
    assert_eq!(ids(&r), [invoice]);
    assert!(r.get("total_results").is_none(), "{r}");

    // Filters without text.
    let r = search(json!({"SEARCH_TYPE": "rest|rest_notify"}));
    assert_eq!(ids(&r), [from_anna, other, invoice]);
    let r = search(json!({"SEARCH_TYPE": "tasks"}));
    assert_eq!(ids(&r), Vec::<i64>::new());
    let r = search(json!({"SEARCH_AUTHORS": [5]}));
    assert_eq!(ids(&r), [from_anna]);
    let today = chrono::Local::now()
        .format("%Y-%m-%dT12:00:00%:z")
        .to_string();
    let r = search(json!({"SEARCH_DATE": today}));
    assert_eq!(r["total_results"], 3);
    let r = search(json!({"SEARCH_DATE": "2001-01-01T00:00:00+00:00"}));
    assert_eq!(r["total_results"], 0);
    // `%` is a character to look for, not a wildcard.
    let r = search(json!({"SEARCH_TEXT": "%%%"}));
    assert_eq!(r["total_results"], 0);

    // Without a notification chat: an empty array, as the source answers.
    let nothing = ok(call(
        &s,
        &anna,
        "im.notify.history.search",
        json!({"SEARCH_TEXT": "invoice"}),
    ));
    assert_eq!(nothing, json!([]));

    // The errors.
    let r = call(
        &s,
        &s.hook,
        "im.notify.history.search",
        json!({"SEARCH_TEXT": " ab "}),
    );
    r.assert_error(400, "SEARCH_TEXT_ERROR");
    assert_eq!(
        r.json()["error_description"],
        "SEARCH_TEXT can't be less then 3 symbols"
    );
    call(&s, &s.hook, "im.notify.history.search", json!({})).assert_error(400, "SEARCH_TEXT_ERROR");
    call(
        &s,
        &s.hook,
        "im.notify.history.search",
        json!({"SEARCH_TEXT": "invoice", "LAST_ID": "x"}),
    )
    .assert_error(400, "LAST_ID_STRING");
}

#[test]
fn schema_and_counters() {
    let s = Server::start();
    let schema = ok(call(&s, &s.hook, "im.notify.schema.get", json!({})));
    assert_eq!(schema["rest"]["MODULE_ID"], "rest");
    assert_eq!(schema["rest"]["LIST"][0]["ID"], "rest|rest_notify");
    assert!(schema["rest"]["NAME"].is_string());

    let empty = ok(call(&s, &s.hook, "im.counters.get", json!({})));
    assert_eq!(
        empty,
        json!({
            "TYPE": {"ALL": 0, "NOTIFY": 0, "CHAT": 0, "LINES": 0, "DIALOG": 0, "MESSENGER": 0},
            "CHAT": [], "CHAT_MUTED": [], "CHAT_UNREAD": [], "LINES": [], "DIALOG": [],
            "DIALOG_UNREAD": []
        })
    );
    send(&s, json!({"USER_ID": 1, "MESSAGE": "one"}));
    send(&s, json!({"USER_ID": 1, "MESSAGE": "two"}));
    let c = ok(call(&s, &s.hook, "im.counters.get", json!({})));
    assert_eq!(c["TYPE"]["NOTIFY"], 2);
    assert_eq!(c["TYPE"]["ALL"], 2);
    let only = ok(call(
        &s,
        &s.hook,
        "im.counters.get",
        json!({"ONLY_COUNTER": "Y"}),
    ));
    assert_eq!(only["NOTIFY"], 2);
    assert!(only.get("TYPE").is_none());
    let camel = ok(call(&s, &s.hook, "im.counters.get", json!({"JSON": "Y"})));
    assert_eq!(camel["type"]["notify"], 2);
    assert_eq!(camel["chatMuted"], json!([]));
    // Those two are read case-sensitively.
    let lower = ok(call(&s, &s.hook, "im.counters.get", json!({"json": "Y"})));
    assert!(lower.get("TYPE").is_some());
}

#[test]
fn answer_and_confirm() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let mine = send(&s, json!({"USER_ID": 1, "MESSAGE": "question"}));
    let hers = send(&s, json!({"USER_ID": 5, "MESSAGE": "hers"}));

    let answer = |body: Value| call(&s, &s.hook, "im.notify.answer", body);
    let r = answer(json!({"ANSWER_TEXT": "yes"}));
    r.assert_error(400, "ID_ERROR");
    assert_eq!(
        r.json()["error_description"],
        "Notification ID can't be empty"
    );
    answer(json!({"NOTIFY_ID": "abc", "ANSWER_TEXT": "yes"})).assert_error(400, "ID_ERROR");
    let r = answer(json!({"NOTIFY_ID": mine, "ANSWER_TEXT": "0"}));
    r.assert_error(400, "ANSWER_TEXT_ERROR");
    assert_eq!(r.json()["error_description"], "ANSWER_TEXT can't be empty");
    assert_eq!(
        ok(answer(json!({"NOTIFY_ID": mine, "ANSWER_TEXT": "yes"}))),
        json!({"result_message": ["Your reply has been sent."]})
    );
    // Not empty by PHP's rules, but blank once trimmed: nothing is answered.
    assert_eq!(
        ok(answer(json!({"NOTIFY_ID": mine, "ANSWER_TEXT": "  "}))),
        json!({"result_message": false})
    );
    // ID wins over NOTIFY_ID; someone else's notification is not found.
    assert_eq!(
        ok(answer(
            json!({"NOTIFY_ID": mine, "ID": hers, "ANSWER_TEXT": "yes"})
        )),
        json!({"result_message": false})
    );

    let confirm = |hook: &str, body: Value| call(&s, hook, "im.notify.confirm", body);
    confirm(&s.hook, json!({"NOTIFY_VALUE": "Y"})).assert_error(400, "ID_ERROR");
    let r = confirm(&s.hook, json!({"ID": mine}));
    r.assert_error(400, "NOTIFY_VALUE_ERROR");
    assert_eq!(
        r.json()["error_description"],
        "Notification Value  can't be empty"
    );
    // A normal notification is not a confirmation.
    assert_eq!(
        ok(confirm(&s.hook, json!({"ID": mine, "NOTIFY_VALUE": "Y"}))),
        json!({"result_message": false})
    );
    assert!(exists(&s, mine));
    // A confirmation is answered once, by its recipient, and then it is gone.
    let c = insert_confirm(&s, 5, "Join the group?");
    assert_eq!(
        ok(confirm(&s.hook, json!({"ID": c, "NOTIFY_VALUE": "Y"}))),
        json!({"result_message": false})
    );
    assert_eq!(
        ok(confirm(&anna, json!({"NOTIFY_ID": c, "NOTIFY_VALUE": "Y"}))),
        json!({"result_message": ["Your selection: \"Accept\""]})
    );
    assert!(!exists(&s, c));
    assert_eq!(
        ok(confirm(&anna, json!({"NOTIFY_ID": c, "NOTIFY_VALUE": "Y"}))),
        json!({"result_message": false})
    );
    // A value no button has: answered and gone, with no message.
    let c = insert_confirm(&s, 5, "Join the other group?");
    assert_eq!(
        ok(confirm(&anna, json!({"ID": c, "NOTIFY_VALUE": "maybe"}))),
        json!({"result_message": []})
    );
    assert!(!exists(&s, c));
}

#[test]
fn lifecycle_methods_need_scope_im_and_credentials() {
    let s = Server::start();
    let user_only = s.add_webhook(1, "user");
    for method in [
        "im.notify.get",
        "im.notify.read",
        "im.notify.read.list",
        "im.notify.read.all",
        "im.notify.delete",
        "im.notify.history.search",
        "im.notify.schema.get",
        "im.notify.answer",
        "im.notify.confirm",
        "im.counters.get",
    ] {
        call(&s, &user_only, method, json!({})).assert_error(403, "insufficient_scope");
        s.post_json(&format!("/rest/{method}"), &json!({}))
            .assert_error(401, "NO_AUTH_FOUND");
    }
}

#[test]
fn im_notify_and_personal_add_read_back() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let add = |method: &str, body: Value| ok(call(&s, &anna, method, body)).as_i64().unwrap();

    let personal = add(
        "im.notify.personal.add",
        json!({"USER_ID": 1, "MESSAGE": "from Anna", "MESSAGE_OUT": "mail"}),
    );
    let generic = add("im.notify", json!({"to": 1, "message": "generic"}));
    let as_user = add(
        "im.notify",
        json!({"USER_ID": 1, "MESSAGE": "user", "TYPE": "USER"}),
    );
    let as_system = add(
        "im.notify",
        json!({"USER_ID": 1, "MESSAGE": "system", "TYPE": "SYSTEM"}),
    );
    // TYPE is compared case-sensitively: anything but SYSTEM is personal.
    let lower = add(
        "im.notify",
        json!({"USER_ID": 1, "MESSAGE": "lower", "TYPE": "system"}),
    );

    let page = get(&s, &s.hook, json!({}));
    let by_id = |id: i64| {
        page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap()
    };
    for (id, author, kind, text) in [
        (personal, 5, 2, "from Anna"),
        (generic, 5, 2, "generic"),
        (as_user, 5, 2, "user"),
        (as_system, 0, 4, "system"),
        (lower, 5, 2, "lower"),
    ] {
        let n = by_id(id);
        assert_eq!(
            (n["author_id"].as_i64(), n["notify_type"].as_i64()),
            (Some(author), Some(kind)),
            "{n}"
        );
        // No app-name prefix on webhook calls.
        assert_eq!(n["text"], text);
    }
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!(page["users"][0]["id"], 5);

    for method in ["im.notify.personal.add", "im.notify"] {
        call(&s, &anna, method, json!({"MESSAGE": "m"})).assert_error(400, "USER_ID_EMPTY");
        call(&s, &anna, method, json!({"USER_ID": 1})).assert_error(400, "MESSAGE_EMPTY");
    }
}

/// An OAuth application made with the admin command, and an access token for `user`.
fn app_token(s: &Server, name: &str, user: i64) -> (String, String) {
    let (client_id, _) = s.add_app(name, &["--redirect-uri", "https://app.example.test/cb"]);
    let token = s.app_token(&client_id, user)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    (client_id, token)
}

fn with_token(s: &Server, token: &str, method: &str, body: Value) -> Response {
    let mut b = body;
    b["auth"] = json!(token);
    s.post_json(&format!("/rest/{method}"), &b)
}

#[test]
fn an_application_deletes_by_tag_in_its_own_namespace() {
    let s = Server::start();
    s.add_user(5, &[]);
    let anna = s.add_webhook(5, "im");
    let (client_id, token) = app_token(&s, "Tracker", 1);
    let (_, other_app) = app_token(&s, "Other", 1);

    let sent = ok(with_token(
        &s,
        &token,
        "im.notify.system.add",
        json!({"USER_ID": 5, "MESSAGE": "Task 7 done", "TAG": "TASK_7", "SUB_TAG": "TASK|7"}),
    ))
    .as_i64()
    .unwrap();
    // Read back with the app's namespace and name prefix (D3, D6).
    let n = &get(&s, &anna, json!({}))["notifications"][0];
    assert_eq!(n["id"], sent);
    let ns = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(client_id.as_bytes()))[..5].to_owned()
    };
    assert_eq!(n["notify_tag"], format!("MP|{ns}|TASK_7"));
    assert_eq!(n["notify_sub_tag"], format!("MP|{ns}|TASK|7"));
    assert_eq!(n["text"], "Tracker\nTask 7 done");

    // No CLIENT_ID needed; another app's namespace does not reach it, and a webhook's
    // CLIENT_ID equal to the client id is "custom" + it, another namespace too.
    assert_eq!(
        ok(with_token(
            &s,
            &other_app,
            "im.notify.delete",
            json!({"TAG": "TASK_7"})
        )),
        true
    );
    assert_eq!(
        ok(call(
            &s,
            &s.hook,
            "im.notify.delete",
            json!({"CLIENT_ID": client_id, "TAG": "TASK_7"})
        )),
        true
    );
    assert!(exists(&s, sent));
    assert_eq!(
        ok(with_token(
            &s,
            &token,
            "im.notify.delete",
            json!({"SUB_TAG": "TASK|7"})
        )),
        true
    );
    assert!(!exists(&s, sent));
    with_token(&s, &token, "im.notify.delete", json!({})).assert_error(400, "PARAMS_ERROR");
}

#[test]
fn a_browser_session_reads_its_notifications_and_deletes_only_by_id() {
    let s = Server::start();
    s.add_user(5, &["--password", "pw"]);
    let (client_id, _) = app_token(&s, "Tracker", 5);
    let mine = send(&s, json!({"USER_ID": 5, "MESSAGE": "for the page"}));

    // Sign in, and take the CSRF token from the consent page (the session's sessid).
    let cookie = s.sign_in("5", "pw");
    let csrf = s.consent_csrf(&client_id, &cookie);
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let session = |method: &str, body: Value| {
        s.request(
            "POST",
            &format!("/rest/{method}?sessid={}", enc(&csrf)),
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    };

    assert_eq!(ids(&ok(session("im.notify.get", json!({})))), [mine]);
    // Without ID a session gets PARAMS_ERROR, before any client id is looked for.
    session("im.notify.delete", json!({"CLIENT_ID": "x", "TAG": "T"}))
        .assert_error(400, "PARAMS_ERROR");
    assert_eq!(ok(session("im.notify.delete", json!({"ID": mine}))), true);
    assert!(!exists(&s, mine));
}
