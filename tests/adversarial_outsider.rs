//! Attacks of an outsider on what changed last (the attack4 round): each test reproduces one
//! finding against the real binary over HTTP and holds the fix.

mod common;

use common::Server;
use serde_json::json;

/// MESSAGE_OUT was stored whole: one webhook call with an 8 MB body put 8 MB in the
/// notification row (and later in its e-mail), so 10,000 notifications per user could hold
/// 80 GB. It is cut like MESSAGE now (D7: over 20,006 characters, 20,000 and " (...)").
#[test]
fn a_huge_message_out_is_cut_like_message() {
    let s = Server::start();
    let huge = "o".repeat(7_000_000);
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "m", "MESSAGE_OUT": huge}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["result"].as_i64().unwrap();
    let stored: i64 = s
        .query_value(
            "SELECT length(text_out) FROM notifications WHERE id = ?1",
            &[id.into()],
        )
        .unwrap();
    assert_eq!(
        stored, 20_006,
        "MESSAGE_OUT stored with {stored} characters"
    );
    // A MESSAGE_OUT under the limit is kept as it is, #BR# included (the e-mail renders it).
    let r = s.post_json(
        &s.hook_url("im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "m", "MESSAGE_OUT": "a#BR#b"}),
    );
    let id = r.json()["result"].as_i64().unwrap();
    let kept: String = s
        .query_value(
            "SELECT text_out FROM notifications WHERE id = ?1",
            &[id.into()],
        )
        .unwrap();
    assert_eq!(kept, "a#BR#b");
}
