//! `/metrics`: the counters that operators watch move with the calls that are made.

mod common;

use common::Server;
use serde_json::json;

/// The value of the sample whose name and labels are exactly `series`, or 0 when the series
/// does not exist yet (a label set appears on its first use).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn scrape(s: &Server) -> String {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    r.body
}

const ADD_OK: &str = r#"imnotify_rest_requests_total{method="im.notify.system.add",status="200"}"#;
const ADD_BAD: &str = r#"imnotify_rest_requests_total{method="im.notify.system.add",status="400"}"#;
const UNKNOWN: &str = r#"imnotify_rest_requests_total{method="unknown",status="404"}"#;
const ADD_OK_LATENCY: &str =
    r#"imnotify_rest_request_duration_seconds_count{method="im.notify.system.add",status="200"}"#;
const BATCH_COUNT: &str = "imnotify_storage_commit_batch_size_count";
const BATCH_SUM: &str = "imnotify_storage_commit_batch_size_sum";

/// Scrapes once the writer has been idle for a while: the start-up's own writes (the first
/// retention round, which also clears expired sessions and codes) must not count as the test's.
fn settled_scrape(s: &Server) -> String {
    let mut last = scrape(s);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = scrape(s);
        if sample(&now, BATCH_COUNT) == sample(&last, BATCH_COUNT) {
            return now;
        }
        last = now;
    }
    panic!("the writer never settled after start: {last}");
}

#[test]
fn counters_move_with_calls() {
    let s = Server::start();
    let before = settled_scrape(&s);

    for i in 0..3 {
        s.notify(json!({"USER_ID": 1, "MESSAGE": format!("metrics {i}")}));
    }
    s.post_json(&s.hook_url("im.notify.system.add"), &json!({"USER_ID": 1}))
        .assert_error(400, "MESSAGE_EMPTY");
    s.get(&s.hook_url("no.such.method"))
        .assert_error(404, "ERROR_METHOD_NOT_FOUND");

    let after = scrape(&s);
    assert_eq!(sample(&after, ADD_OK) - sample(&before, ADD_OK), 3.0);
    assert_eq!(sample(&after, ADD_BAD) - sample(&before, ADD_BAD), 1.0);
    assert_eq!(sample(&after, UNKNOWN) - sample(&before, UNKNOWN), 1.0);
    assert_eq!(
        sample(&after, ADD_OK_LATENCY) - sample(&before, ADD_OK_LATENCY),
        3.0
    );
    // The rest is about SQLite's writer thread and its group commits; PostgreSQL commits
    // each write on its own connection and has no writer to measure.
    if common::test_pg().is_some() {
        return;
    }
    // Three stored notifications went through the writer, in one to three groups.
    let groups = sample(&after, BATCH_COUNT) - sample(&before, BATCH_COUNT);
    let writes = sample(&after, BATCH_SUM) - sample(&before, BATCH_SUM);
    assert!((1.0..=3.0).contains(&groups), "{after}");
    assert!(writes >= 3.0, "{after}");
    // Nothing is waiting for the writer once every call has been answered.
    assert_eq!(sample(&after, "imnotify_storage_writer_queue_depth"), 0.0);
    assert!(after.contains("# TYPE imnotify_storage_writer_queue_depth gauge"));
}

#[test]
fn unknown_method_names_do_not_become_labels() {
    let s = Server::start();
    s.get(&s.hook_url("made.up.name"))
        .assert_error(404, "ERROR_METHOD_NOT_FOUND");
    let text = scrape(&s);
    assert!(!text.contains("made.up.name"), "{text}");
    assert_eq!(sample(&text, UNKNOWN), 1.0);
}

/// Goal 4 of issue 15: a batch's adds share one write and one commit instead of paying an
/// fsync each, and the batch still answers only once they are durable (the ids it returns are
/// in the database), and a later command that is not an add sees the earlier adds.
#[test]
fn a_batch_of_adds_shares_commits() {
    if common::sqlite_only("a batch's adds share the SQLite writer's commits") {
        return;
    }
    let s = Server::start();
    let before = settled_scrape(&s);
    let mut cmds: Vec<String> = (0..49)
        .map(|i| format!("im.notify.system.add?USER_ID=1&MESSAGE=shared%20{i}"))
        .collect();
    cmds.push("im.notify.get".into());
    let r = s.post_json(&format!("{}batch", s.hook), &json!({ "cmd": cmds }));
    assert_eq!(r.status, 200, "{}", r.body);
    let after = scrape(&s);
    let j = r.json();
    let results = j["result"]["result"].as_array().unwrap();
    assert_eq!(results.len(), 50, "{}", r.body);
    for id in &results[..49] {
        let id = id.as_i64().unwrap();
        let stored: i64 = s
            .db()
            .query_row(
                "SELECT count(*) FROM notifications WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 1, "id {id} was answered but is not stored");
    }
    // The read after the adds saw them all.
    assert_eq!(
        results[49]["notifications"].as_array().map(Vec::len),
        Some(49),
        "{}",
        r.body
    );
    // One commit per add was the oldest way (49 groups), one write per add the next (49
    // writes sharing a few commits). Now the 49 adds are checked one by one and sent to the
    // writer as one write, committed at once; the barrier before the read is a second group
    // that has nothing to write, or joins the first.
    let groups = sample(&after, BATCH_COUNT) - sample(&before, BATCH_COUNT);
    let writes = sample(&after, BATCH_SUM) - sample(&before, BATCH_SUM);
    assert!(
        (2.0..=4.0).contains(&writes),
        "{writes} writes for one batch: {after}"
    );
    assert!(groups <= 2.0, "{groups} commits for one batch: {after}");
}
