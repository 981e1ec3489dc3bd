//! im.notify.system.add over real HTTP: validation, storage, tags, ATTACH and durability.

mod common;

use common::{Options, Server};
use serde_json::{json, Value};

struct Row {
    user_id: i64,
    author_id: i64,
    notify_type: i64,
    text: String,
    text_out: String,
    tag: Option<String>,
    sub_tag: Option<String>,
    attach: Option<Value>,
}

fn row(s: &Server, id: i64) -> Option<Row> {
    let r = s
        .query(
            "SELECT user_id, author_id, notify_type, text, text_out, tag, sub_tag, attach FROM notifications WHERE id=?1",
            &[id.into()],
        )
        .into_iter()
        .next()?;
    let int = |i: usize| r[i].as_deref().unwrap().parse().unwrap();
    Some(Row {
        user_id: int(0),
        author_id: int(1),
        notify_type: int(2),
        text: r[3].clone().unwrap(),
        text_out: r[4].clone().unwrap(),
        tag: r[5].clone(),
        sub_tag: r[6].clone(),
        attach: r[7].as_deref().map(|a| serde_json::from_str(a).unwrap()),
    })
}

fn add(s: &Server, body: Value) -> common::Response {
    s.post_json(&s.hook_url("im.notify.system.add"), &body)
}

#[test]
fn the_method_pages_webhook_example_works() {
    let s = Server::start();
    s.add_user(5, &["--email", "u5@example.com"]);
    let r = add(
        &s,
        json!({"USER_ID":5,"MESSAGE":"System notification","MESSAGE_OUT":"System notification for email","TAG":"SYSTEM_EVENT_42","SUB_TAG":"SYSTEM_EVENT|42"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["result"].as_i64().unwrap();
    let n = row(&s, id).unwrap();
    assert_eq!(n.user_id, 5);
    assert_eq!(n.author_id, 0);
    assert_eq!(n.notify_type, 4);
    assert_eq!(n.text, "System notification");
    // D5: MESSAGE_OUT is kept for webhook calls.
    assert_eq!(n.text_out, "System notification for email");
    // D3: a webhook TAG without CLIENT_ID is ignored.
    assert_eq!(n.tag, None);
    assert_eq!(n.sub_tag, None);
}

#[test]
fn validation_errors() {
    let s = Server::start();
    add(&s, json!({"MESSAGE": "m"})).assert_error(400, "USER_ID_EMPTY");
    add(&s, json!({"USER_ID": 0, "MESSAGE": "m"})).assert_error(400, "USER_ID_EMPTY");
    add(&s, json!({"USER_ID": -4, "MESSAGE": "m"})).assert_error(400, "USER_ID_EMPTY");
    add(&s, json!({"USER_ID": "abc", "MESSAGE": "m"})).assert_error(400, "USER_ID_EMPTY");
    add(&s, json!({"USER_ID": 1})).assert_error(400, "MESSAGE_EMPTY");
    add(&s, json!({"USER_ID": 1, "MESSAGE": "  \n\t "})).assert_error(400, "MESSAGE_EMPTY");
    add(&s, json!({"USER_ID": 1, "MESSAGE": 42})).assert_error(400, "MESSAGE_EMPTY");
    add(&s, json!({"USER_ID": 1, "MESSAGE": ["a"]})).assert_error(400, "MESSAGE_EMPTY");
    // USER_ID is checked first.
    add(&s, json!({})).assert_error(400, "USER_ID_EMPTY");
    // Nothing was stored by any of these.
    let n = s.notification_count();
    assert_eq!(n, 0);
}

#[test]
fn coercions_and_text_normalisation() {
    let s = Server::start();
    s.add_user(12, &[]);
    let r = add(
        &s,
        json!({"USER_ID": "12abc", "MESSAGE": "  line1#BR#line2[br]line3[BR]  "}),
    );
    let n = row(&s, r.json()["result"].as_i64().unwrap()).unwrap();
    assert_eq!(n.user_id, 12);
    assert_eq!(n.text, "line1\nline2\nline3");
    // TO overrides USER_ID.
    let r = add(&s, json!({"USER_ID": 1, "TO": 12, "MESSAGE": "to"}));
    assert_eq!(
        row(&s, r.json()["result"].as_i64().unwrap())
            .unwrap()
            .user_id,
        12
    );
    // Long texts are cut to 20,000 characters plus " (...)".
    let long = "ж".repeat(25_000);
    let r = add(&s, json!({"USER_ID": 1, "MESSAGE": long}));
    let text = row(&s, r.json()["result"].as_i64().unwrap()).unwrap().text;
    assert_eq!(text.chars().count(), 20_006);
    assert!(text.ends_with(" (...)"));
}

#[test]
fn unknown_or_inactive_recipient_gives_false() {
    let s = Server::start();
    s.add_user(3, &["--inactive"]);
    for uid in [3, 404] {
        let r = add(&s, json!({"USER_ID": uid, "MESSAGE": "m"}));
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["result"], json!(false), "{j}");
        assert!(j["time"].is_object());
    }
    let n = s.notification_count();
    assert_eq!(n, 0);
}

#[test]
fn tag_replaces_per_recipient_within_the_namespace() {
    let s = Server::start();
    s.add_user(2, &[]);
    let tagged = |uid: i64, msg: &str, client: &str| {
        let r = add(
            &s,
            json!({"USER_ID": uid, "MESSAGE": msg, "TAG": "T1", "SUB_TAG": "S1", "CLIENT_ID": client}),
        );
        r.json()["result"].as_i64().unwrap()
    };
    let a1 = tagged(1, "a1", "MY_APP");
    let b1 = tagged(2, "b1", "MY_APP");
    let other_ns = tagged(1, "other", "OTHER");
    let a2 = tagged(1, "a2", "MY_APP");
    assert!(row(&s, a1).is_none(), "replaced by a2");
    assert!(row(&s, b1).is_some(), "another recipient is not touched");
    assert!(
        row(&s, other_ns).is_some(),
        "another namespace is not touched"
    );
    let n = row(&s, a2).unwrap();
    assert_eq!(n.tag.as_deref(), Some("MP|dc142|T1"));
    assert_eq!(n.sub_tag.as_deref(), Some("MP|dc142|S1"));
    assert!(a2 > a1, "ids are never reused");
    // SUB_TAG alone never replaces anything.
    let s1 = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "x", "SUB_TAG": "S1", "CLIENT_ID": "MY_APP"}),
    );
    let s2 = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "y", "SUB_TAG": "S1", "CLIENT_ID": "MY_APP"}),
    );
    assert!(row(&s, s1.json()["result"].as_i64().unwrap()).is_some());
    assert!(row(&s, s2.json()["result"].as_i64().unwrap()).is_some());
    // Empty-by-PHP tags are ignored.
    let z = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "z", "TAG": "0", "CLIENT_ID": "MY_APP"}),
    );
    assert_eq!(
        row(&s, z.json()["result"].as_i64().unwrap()).unwrap().tag,
        None
    );
}

#[test]
fn attach_as_object_and_as_json_string() {
    let s = Server::start();
    let blocks = json!([{"MESSAGE": "hello [b]world[/b]"}, {"DELIMITER": {"SIZE": 100, "COLOR": "#c6c6c6"}}]);
    let as_object = add(&s, json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": blocks}));
    let as_string = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": blocks.to_string()}),
    );
    let full = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": {"ID": 1, "COLOR": "#ff0000", "BLOCKS": blocks}}),
    );
    for r in [&as_object, &as_string, &full] {
        let n = row(&s, r.json()["result"].as_i64().unwrap()).unwrap();
        let a = n.attach.expect("stored attach");
        assert!(a["ID"].is_i64(), "{a}");
        assert_eq!(a["BLOCKS"][0]["MESSAGE"], "hello [b]world[/b]", "{a}");
        assert!(a["BLOCKS"][1]["DELIMITER"].is_object(), "{a}");
        assert!(a["COLOR"].is_string(), "{a}");
    }
    let a = row(&s, full.json()["result"].as_i64().unwrap())
        .unwrap()
        .attach
        .unwrap();
    assert_eq!(a["COLOR"], "#ff0000");
    assert_ne!(a["ID"], 1, "the caller's ID is replaced");
}

#[test]
fn attach_errors() {
    let s = Server::start();
    for bad in [
        json!("not json at all"),
        json!(12),
        json!([{"UNKNOWN": 1}]),
        json!([{"MESSAGE": "   "}]),
        json!({"BLOCKS": []}),
        json!("[{\"message\":\"lower-case keys are not blocks\"}]"),
    ] {
        add(&s, json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": bad}))
            .assert_error(400, "ATTACH_ERROR");
    }
    // Falsy ATTACH values are ignored.
    for falsy in [
        json!(""),
        json!("0"),
        json!(0),
        json!(false),
        json!(null),
        json!([]),
    ] {
        let r = add(&s, json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": falsy}));
        assert_eq!(r.status, 200, "{falsy}: {}", r.body);
        assert!(row(&s, r.json()["result"].as_i64().unwrap())
            .unwrap()
            .attach
            .is_none());
    }
    // Invalid blocks are skipped when a valid one remains.
    let r = add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": [{"NOPE": 1}, {"MESSAGE": "ok"}]}),
    );
    let a = row(&s, r.json()["result"].as_i64().unwrap())
        .unwrap()
        .attach
        .unwrap();
    assert_eq!(a["BLOCKS"].as_array().unwrap().len(), 1);
}

#[test]
fn attach_oversize_at_the_configured_limit() {
    let s = Server::start();
    let big = "x".repeat(31_000);
    add(
        &s,
        json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": [{"MESSAGE": big}]}),
    )
    .assert_error(400, "ATTACH_OVERSIZE");
    let fits = "x".repeat(29_000);
    assert_eq!(
        add(
            &s,
            json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": [{"MESSAGE": fits}]})
        )
        .status,
        200
    );

    let roomy = Server::start_with(Options {
        args: vec![],
        envs: vec![("IMNOTIFY_LIMITS__ATTACH_MAX_BYTES".into(), "60000".into())],
        ..Default::default()
    });
    assert_eq!(
        add(
            &roomy,
            json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": [{"MESSAGE": big}]})
        )
        .status,
        200
    );
}

#[test]
fn acknowledged_notifications_survive_restart_and_kill_9() {
    let mut s = Server::start();
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(s.notify(
            json!({"USER_ID": 1, "MESSAGE": format!("durable {i}"), "ATTACH": [{"MESSAGE": "a"}]}),
        ));
    }
    s.kill9();
    s.restart();
    for (i, id) in ids.iter().enumerate() {
        let n = row(&s, *id).unwrap_or_else(|| panic!("id {id} lost"));
        assert_eq!(n.text, format!("durable {i}"));
        assert!(n.attach.is_some());
    }
    // The server keeps working on the same data after the restart, with fresh ids.
    let next = s.notify(json!({"USER_ID": 1, "MESSAGE": "after"}));
    assert!(next > *ids.last().unwrap());
    let status = s.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    s.restart();
    assert_eq!(row(&s, next).unwrap().text, "after");
}

#[test]
fn concurrent_writes_are_all_acknowledged_and_stored() {
    let s = Server::start();
    let ids: Vec<i64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    (0..25)
                        .map(|i| s.notify(json!({"USER_ID": 1, "MESSAGE": format!("t{t} i{i}")})))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200, "ids are unique");
    let n = s.notification_count();
    assert_eq!(n, 200);
}

#[test]
fn every_attach_block_type_over_http() {
    let s = Server::start();
    let attach = json!({
        "COLOR": "#29619b",
        "DESCRIPTION": "  about this  ",
        "BLOCKS": [
            {"USER": {"NAME": "Ann\nLee", "USER_ID": 7, "AVATAR": "https://x.test/a.png"}},
            {"LINK": {"NAME": "Docs", "LINK": "https://docs.test/", "DESC": "d", "PREVIEW": "/p.png", "WIDTH": 100, "HEIGHT": 50}},
            {"RICH_LINK": {"NAME": "Rich", "LINK": "https://rich.test/", "DESC": "rd"}},
            {"MESSAGE": "text #BR# [b]bold[/b]"},
            {"GRID": [
                {"NAME": "Status", "VALUE": "done", "DISPLAY": "LINE", "WIDTH": 100},
                {"NAME": "", "VALUE": "", "DISPLAY": "BLOCK"},
                {"NAME": "Col", "VALUE": "v", "DISPLAY": "COLUMN"}
            ]},
            {"IMAGE": [{"LINK": "https://img.test/1.png", "NAME": "one", "WIDTH": 10, "HEIGHT": 20}, {"NAME": "no link"}]},
            {"FILE": {"LINK": "/files/report.pdf", "NAME": "report.pdf", "SIZE": 1024}},
            {"DELIMITER": {"SIZE": 0, "COLOR": "#c6c6c6"}},
            {"LINK": {"NAME": "bad link", "LINK": "ftp://nope"}}
        ]
    });
    let id = s.notify(json!({"USER_ID": 1, "MESSAGE": "m", "ATTACH": attach}));
    let a = row(&s, id).unwrap().attach.unwrap();
    let blocks = a["BLOCKS"].as_array().unwrap();
    let kinds: Vec<&str> = blocks
        .iter()
        .map(|b| b.as_object().unwrap().keys().next().unwrap().as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "USER",
            "LINK",
            "RICH_LINK",
            "MESSAGE",
            "GRID",
            "IMAGE",
            "FILE",
            "DELIMITER"
        ],
        "the invalid LINK is skipped: {a}"
    );
    assert_eq!(blocks[0]["USER"][0]["NAME"], "Ann Lee");
    assert_eq!(blocks[0]["USER"][0]["USER_ID"], 7);
    assert_eq!(blocks[1]["LINK"][0]["LINK"], "https://docs.test/");
    assert_eq!(blocks[3]["MESSAGE"], "text [BR] [b]bold[/b]");
    let grid = blocks[4]["GRID"].as_array().unwrap();
    assert_eq!(grid.len(), 2, "the blank BLOCK item is skipped: {a}");
    assert_eq!(grid[1]["DISPLAY"], "ROW", "COLUMN is an alias of ROW");
    assert_eq!(blocks[5]["IMAGE"].as_array().unwrap().len(), 1);
    assert_eq!(blocks[6]["FILE"][0]["SIZE"], 1024);
    assert_eq!(blocks[7]["DELIMITER"]["SIZE"], 200);
    assert_eq!(a["DESCRIPTION"], "about this");
    assert_eq!(a["COLOR"], "#29619b");
    let keys: Vec<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["ID", "BLOCKS", "DESCRIPTION", "COLOR"]);
}
