//! `batch` over real HTTP (§6.3, P10): command forms and encodings, halt, the 50-command limit,
//! refused methods, references, the five result maps, and per-command scope checks.

mod common;

use common::{Options, Server};
use serde_json::{json, Value};

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn batch_json(s: &Server, hook: &str, body: Value) -> Value {
    let r = s.post_json(&format!("{hook}batch"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    assert!(j["time"].is_object(), "{}", r.body);
    j["result"].clone()
}

fn text_of(s: &Server, id: i64) -> String {
    s.query_value("SELECT text FROM notifications WHERE id=?1", &[id.into()])
        .unwrap()
}

#[test]
fn map_of_commands_with_result_references() {
    let s = Server::start();
    let r = batch_json(
        &s,
        &s.hook,
        json!({"halt": 0, "cmd": {
            "first": "im.notify.system.add?USER_ID=1&MESSAGE=hello%20world",
            "second": "im.notify.system.add?USER_ID=1&MESSAGE=after%20$result[first]",
        }}),
    );
    let first = r["result"]["first"].as_i64().unwrap();
    let second = r["result"]["second"].as_i64().unwrap();
    assert_eq!(text_of(&s, first), "hello world");
    assert_eq!(text_of(&s, second), format!("after {first}"));
    assert_eq!(r["result_error"], json!([]));
    assert_eq!(r["result_total"], json!([]));
    assert_eq!(r["result_next"], json!([]));
    for key in ["first", "second"] {
        let t = &r["result_time"][key];
        for field in [
            "start",
            "finish",
            "duration",
            "processing",
            "date_start",
            "date_finish",
            "operating_reset_at",
            "operating",
        ] {
            assert!(!t[field].is_null(), "{key}.{field} missing: {t}");
        }
    }
}

#[test]
fn list_of_commands_gives_lists() {
    let s = Server::start();
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": [
            "im.notify.system.add?USER_ID=1&MESSAGE=a",
            "IM.NOTIFY.SYSTEM.ADD?USER_ID=1&MESSAGE=b",
        ]}),
    );
    assert_eq!(r["result"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["result_time"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["result_error"], json!([]));

    // A failure in the middle makes the maps sparse, so they become objects.
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": [
            "im.notify.system.add?USER_ID=1&MESSAGE=a",
            "im.notify.system.add?USER_ID=0&MESSAGE=b",
            "im.notify.system.add?USER_ID=1&MESSAGE=c",
        ]}),
    );
    assert!(r["result"].is_object(), "{r}");
    assert!(
        r["result"]["0"].is_i64() && r["result"]["2"].is_i64(),
        "{r}"
    );
    assert_eq!(
        r["result_error"],
        json!({"1": {"error": "USER_ID_EMPTY", "error_description": "User ID can't be empty"}})
    );
    assert!(r["result_time"].get("1").is_none(), "{r}");
}

#[test]
fn form_get_and_double_encoded_commands() {
    let s = Server::start();
    // What CRest and @2bad/bitrix send: http_build_query of the command's parameters, then the
    // whole command URL-encoded once more as a form value.
    let cmd = format!(
        "im.notify.system.add?USER_ID=1&MESSAGE={}",
        enc("50% off & more + [b]x[/b]")
    );
    let body = format!("halt=0&cmd%5Bone%5D={}", enc(&cmd));
    let r = s.post_form(&s.hook_url("batch"), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["result"]["result"]["one"].as_i64().unwrap();
    assert_eq!(text_of(&s, id), "50% off & more + [b]x[/b]");

    let r = s.get(&format!(
        "{}?cmd[g]={}",
        s.hook_url("batch.json"),
        enc(&cmd)
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.json()["result"]["result"]["g"].as_i64().unwrap();
    assert_eq!(text_of(&s, id), "50% off & more + [b]x[/b]");

    // JSON carries the command string as is; its query is encoded once, by the client.
    let r = batch_json(&s, &s.hook, json!({"cmd": {"j": cmd}}));
    let id = r["result"]["j"].as_i64().unwrap();
    assert_eq!(text_of(&s, id), "50% off & more + [b]x[/b]");
}

#[test]
fn halt_follows_php_truthiness() {
    let s = Server::start();
    let cmds = json!({
        "bad": "im.notify.system.add?MESSAGE=no%20user",
        "good": "im.notify.system.add?USER_ID=1&MESSAGE=ok",
    });
    for (halt, stops) in [
        (json!(0), false),
        (json!("0"), false),
        (json!(""), false),
        (json!(false), false),
        (json!(1), true),
        (json!(true), true),
        (json!("false"), true),
    ] {
        let r = batch_json(&s, &s.hook, json!({"halt": halt, "cmd": cmds}));
        assert_eq!(r["result_error"]["bad"]["error"], "USER_ID_EMPTY", "{r}");
        assert_eq!(r["result"].get("good").is_none(), stops, "halt={halt}: {r}");
    }
    // Without halt at all: carry on.
    let r = batch_json(&s, &s.hook, json!({"cmd": cmds}));
    assert!(r["result"]["good"].is_i64(), "{r}");
}

#[test]
fn at_most_fifty_commands_run() {
    let s = Server::start();
    let cmds: Vec<String> = (0..53)
        .map(|i| format!("im.notify.system.add?USER_ID=1&MESSAGE=n{i}"))
        .collect();
    let r = batch_json(&s, &s.hook, json!({"cmd": cmds}));
    assert_eq!(r["result"].as_array().unwrap().len(), 50, "{r}");
    let errors = r["result_error"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["50", "51", "52"], "{r}");
    assert_eq!(
        errors["52"],
        json!({"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"})
    );
    let stored: i64 = s.notification_count();
    assert_eq!(stored, 50);
}

#[test]
fn refused_and_unknown_methods() {
    let s = Server::start();
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": {
            "nested": "batch?cmd[x]=im.notify.system.add",
            "nested_upper": "BATCH",
            "download": "download?token=x",
            "unknown": "no.such.method?x=1",
            "ok": "im.notify.system.add?USER_ID=1&MESSAGE=fine",
        }}),
    );
    let not_allowed = json!({"error": "ERROR_BATCH_METHOD_NOT_ALLOWED", "error_description": "Method is not allowed for batch usage"});
    assert_eq!(r["result_error"]["nested"], not_allowed);
    assert_eq!(r["result_error"]["nested_upper"], not_allowed);
    assert_eq!(r["result_error"]["download"], not_allowed);
    assert_eq!(
        r["result_error"]["unknown"],
        json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
    );
    assert!(r["result"]["ok"].is_i64(), "{r}");
}

#[test]
fn references_of_every_kind() {
    let s = Server::start();
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": {
            "a": "im.notify.system.add?USER_ID=1&MESSAGE=first",
            "bad": "im.notify.system.add?USER_ID=1",
            // The whole value keeps its type: an error array as MESSAGE is not a string.
            "arr": "im.notify.system.add?USER_ID=1&MESSAGE=$error[bad]",
            "err": "im.notify.system.add?USER_ID=1&MESSAGE=$error[bad][error]",
            "time": "im.notify.system.add?USER_ID=1&MESSAGE=took%20$time[a][duration]%20s",
            // Embedded, an array is not substituted.
            "embedded_arr": "im.notify.system.add?USER_ID=1&MESSAGE=x%20$time[a]%20y",
            "user_from_result": "im.notify.system.add?USER_ID=$result[a]&MESSAGE=z",
            "next_missing": "im.notify.system.add?USER_ID=1&MESSAGE=n:%20$next[a]",
        }}),
    );
    assert_eq!(r["result_error"]["bad"]["error"], "MESSAGE_EMPTY", "{r}");
    assert_eq!(r["result_error"]["arr"]["error"], "MESSAGE_EMPTY", "{r}");
    let err_id = r["result"]["err"].as_i64().unwrap();
    assert_eq!(text_of(&s, err_id), "MESSAGE_EMPTY");
    let time_text = text_of(&s, r["result"]["time"].as_i64().unwrap());
    let duration = r["result_time"]["a"]["duration"].as_f64().unwrap();
    let shown: f64 = time_text
        .strip_prefix("took ")
        .and_then(|t| t.strip_suffix(" s"))
        .unwrap_or_else(|| panic!("{time_text}"))
        .parse()
        .unwrap();
    assert!((shown - duration).abs() < 1e-6, "{time_text} vs {duration}");
    assert_eq!(
        text_of(&s, r["result"]["embedded_arr"].as_i64().unwrap()),
        "x $time[a] y"
    );
    // $result[a] (the first id of a fresh server, 1) used as the recipient.
    let a = r["result"]["a"].as_i64().unwrap();
    let id = r["result"]["user_from_result"].as_i64().unwrap();
    let user: i64 = s
        .query_value(
            "SELECT user_id FROM notifications WHERE id=?1",
            &[id.into()],
        )
        .unwrap();
    assert_eq!(user, a);
    // $next[a] does not exist, so the lookup stops at $next itself, an (empty) array.
    assert_eq!(
        text_of(&s, r["result"]["next_missing"].as_i64().unwrap()),
        "n: $next[a]"
    );
}

#[test]
fn each_command_has_its_own_scope_check() {
    let s = Server::start();
    let user_only = s.add_webhook(1, "user");
    // batch itself is in the global scope, so any webhook may call it.
    let r = batch_json(
        &s,
        &user_only,
        json!({"cmd": {"n": "im.notify.system.add?USER_ID=1&MESSAGE=x"}}),
    );
    assert_eq!(
        r["result_error"]["n"],
        json!({"error": "insufficient_scope", "error_description": ""})
    );
    assert_eq!(r["result"], json!([]));
    // The same call directly is refused with the full description and 403.
    s.post_json(
        &format!("{user_only}im.notify.system.add"),
        &json!({"USER_ID": 1, "MESSAGE": "x"}),
    )
    .assert_error(403, "insufficient_scope");
}

#[test]
fn the_batch_call_itself_is_authenticated() {
    let s = Server::start();
    s.post_json(
        "/rest/1/wrongcode/batch",
        &json!({"cmd": {"a": "im.notify.system.add?USER_ID=1&MESSAGE=x"}}),
    )
    .assert_error(403, "INVALID_CREDENTIALS");
    // No cmd at all: five empty maps.
    let r = batch_json(&s, &s.hook, json!({}));
    assert_eq!(
        r,
        json!({"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []})
    );
    // Credentials inside a command's query are ignored: the outer caller runs every command.
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": {"a": "im.notify.system.add?USER_ID=1&MESSAGE=x&auth=bogus&aplogin=9&ap=zz"}}),
    );
    assert!(r["result"]["a"].is_i64(), "{r}");
}

#[test]
fn xml_transport_carries_the_five_maps() {
    let s = Server::start();
    let r = s.post_form(
        &s.hook_url("batch.xml"),
        &format!(
            "cmd[a]={}&cmd[b]=nope",
            enc("im.notify.system.add?USER_ID=1&MESSAGE=x")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with("<response><result><result><a>1</a></result><result_error><b><error>ERROR_METHOD_NOT_FOUND</error>"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(
            "<result_total></result_total><result_next></result_next><result_time><a><start>"
        ),
        "{}",
        r.body
    );
}

/// A run of adds that refer to no earlier result is checked command by command and stored with
/// one store call (issue 15, goal 4). Inside it the adds keep their order: ids rise with the
/// commands, a later TAG replaces an earlier one, and a failing check fails alone.
#[test]
fn a_run_of_adds_keeps_its_order() {
    let s = Server::start();
    let tagged =
        |m: &str| format!("im.notify.system.add?USER_ID=1&MESSAGE={m}&TAG=T&CLIENT_ID=run");
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": {
            "a": tagged("first"),
            "plain": "im.notify.system.add?USER_ID=1&MESSAGE=plain",
            "bad": "im.notify.system.add?USER_ID=1",
            "b": tagged("second"),
            "nobody": "im.notify.system.add?USER_ID=999&MESSAGE=lost",
            "p": "im.notify.personal.add?USER_ID=1&MESSAGE=personal",
            "g": "im.notify?TYPE=SYSTEM&USER_ID=1&MESSAGE=generic",
        }}),
    );
    let id = |k: &str| {
        r["result"][k]
            .as_i64()
            .unwrap_or_else(|| panic!("{k}: {r}"))
    };
    let ids = [id("a"), id("plain"), id("b"), id("p"), id("g")];
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(r["result"]["nobody"], json!(false), "{r}");
    assert_eq!(r["result_error"]["bad"]["error"], "MESSAGE_EMPTY", "{r}");
    // The second tagged add replaced the first: the run's writes were made in order.
    let rows: i64 = s
        .query_value(
            "SELECT count(*) FROM notifications WHERE id = ?1",
            &[id("a").into()],
        )
        .unwrap();
    assert_eq!(rows, 0, "{r}");
    assert_eq!(text_of(&s, id("b")), "second");
    assert_eq!(s.notification_count(), 4);
    let types: Vec<i64> = ["p", "g"]
        .iter()
        .map(|k| {
            s.query_value(
                "SELECT notify_type FROM notifications WHERE id = ?1",
                &[id(k).into()],
            )
            .unwrap()
        })
        .collect();
    assert_eq!(types, [2, 4], "personal, then system through im.notify");
    // The maps keep the commands' order.
    let keys: Vec<_> = r["result"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["a", "plain", "b", "nobody", "p", "g"], "{r}");
}

/// With `halt`, a failing check inside a run stops the batch there: the adds before it are
/// stored and answered, none after it is made.
#[test]
fn halt_inside_a_run_of_adds() {
    let s = Server::start();
    let r = batch_json(
        &s,
        &s.hook,
        json!({"halt": 1, "cmd": [
            "im.notify.system.add?USER_ID=1&MESSAGE=one",
            "im.notify.system.add?USER_ID=1&MESSAGE=two",
            "im.notify.system.add?USER_ID=0&MESSAGE=three",
            "im.notify.system.add?USER_ID=1&MESSAGE=four",
        ]}),
    );
    assert_eq!(r["result"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(r["result_error"]["2"]["error"], "USER_ID_EMPTY", "{r}");
    assert!(r["result_error"].get("3").is_none(), "{r}");
    assert_eq!(r["result_time"].as_array().map(Vec::len), Some(2), "{r}");
    assert_eq!(s.notification_count(), 2);
}

/// A write that fails in the store (here a trigger refuses one text) fails alone inside its
/// run, as it would on its own: the adds around it stand. With `halt` the batch stops at it,
/// and nothing after it is stored.
#[test]
fn a_failing_write_inside_a_run_fails_alone() {
    let s = Server::start();
    if common::test_pg().is_some() {
        s.execute(
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.text = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER boom BEFORE INSERT ON notifications \
             FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
            &[],
        );
    } else {
        s.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON notifications WHEN NEW.text = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
            &[],
        );
    }
    let add = |m: &str| format!("im.notify.system.add?USER_ID=1&MESSAGE={m}");
    let r = batch_json(
        &s,
        &s.hook,
        json!({"cmd": {"a": add("a"), "boom": add("boom"), "c": add("c")}}),
    );
    assert_eq!(
        r["result_error"],
        json!({"boom": {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}}),
        "{r}"
    );
    for k in ["a", "c"] {
        let id = r["result"][k]
            .as_i64()
            .unwrap_or_else(|| panic!("{k}: {r}"));
        assert_eq!(text_of(&s, id), k);
    }
    assert_eq!(s.notification_count(), 2);

    let r = batch_json(
        &s,
        &s.hook,
        json!({"halt": 1, "cmd": {"d": add("d"), "boom": add("boom"), "e": add("e"), "f": add("f")}}),
    );
    assert_eq!(
        r["result_error"]["boom"]["error"], "INTERNAL_SERVER_ERROR",
        "{r}"
    );
    assert!(r["result"]["d"].is_i64(), "{r}");
    assert!(
        r["result"].get("e").is_none() && r["result"].get("f").is_none(),
        "{r}"
    );
    assert_eq!(
        r["result_error"].as_object().map(|e| e.len()),
        Some(1),
        "{r}"
    );
    assert_eq!(s.notification_count(), 3, "d stored, nothing after boom");
}

/// Each command's `time` block covers its own part of the batch: the blocks follow one another
/// without overlapping, and together they take no longer than the batch itself, so the
/// operating-time limit charges a run of adds what it took once, not once per command.
#[test]
fn command_times_follow_one_another() {
    let s = Server::start();
    let cmds: Vec<String> = (0..20)
        .map(|i| format!("im.notify.system.add?USER_ID=1&MESSAGE=t{i}"))
        .chain(["im.counters.get".to_owned()])
        .chain((0..5).map(|i| format!("im.notify.system.add?USER_ID=1&MESSAGE=u{i}")))
        .collect();
    let r = s.post_json(&format!("{}batch", s.hook), &json!({ "cmd": cmds }));
    assert_eq!(r.status, 200, "{}", r.body);
    let j = r.json();
    let times = j["result"]["result_time"].as_array().unwrap();
    assert_eq!(times.len(), 26, "{j}");
    let f = |t: &Value, k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k}: {t}"));
    let mut total = 0.0;
    for (i, t) in times.iter().enumerate() {
        assert!(f(t, "start") <= f(t, "finish"), "{i}: {t}");
        assert!(
            (f(t, "duration") - f(t, "processing")).abs() < 2e-6,
            "{i}: {t}"
        );
        if let Some(next) = times.get(i + 1) {
            assert!(
                f(t, "finish") <= f(next, "start") + 1e-6,
                "{i}: {t} then {next}"
            );
        }
        total += f(t, "processing");
    }
    let outer = &j["time"];
    assert!(f(&times[0], "start") >= f(outer, "start") - 1e-6, "{j}");
    assert!(f(&times[25], "finish") <= f(outer, "finish") + 1e-6, "{j}");
    assert!(total <= f(outer, "duration") + 1e-5, "{total} vs {outer}");
}

/// A batch whose answers would pass `limits.batch_max_answer_bytes` fails whole, and stores no
/// more adds than the one-by-one loop did: the adds whose ids fit, and the one that did not.
/// A run of adds stored before its answers were charged would deliver every add of the batch
/// under that error.
#[test]
fn adds_past_the_answer_budget_are_not_stored_under_the_error() {
    let s = Server::start_with(Options {
        envs: vec![("IMNOTIFY_LIMITS__BATCH_MAX_ANSWER_BYTES".into(), "5".into())],
        ..Options::default()
    });
    let before = s.notification_count();
    let cmds: Vec<String> = (0..30)
        .map(|i| format!("im.notify.system.add?USER_ID=1&MESSAGE=b{i}"))
        .collect();
    let r = s.post_json(&format!("{}batch", s.hook), &json!({ "cmd": cmds }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "ERROR_BATCH_ANSWER_TOO_LARGE",
        "{}",
        r.body
    );
    // Ids of one digit: five fit in five bytes, the sixth does not.
    let stored = s.notification_count() - before;
    assert!(stored <= 6, "{stored} notifications stored under the error");
}
