//! The event log's kinds and payloads: the one place that says what a change looks like to a
//! live channel (issue 12).
//!
//! Every change a user can see is stored as an event (table `events`, written in the same
//! transaction as the change) with one of these kinds and a JSON payload that always carries the
//! user's new unread `counter`. The names are Bitrix24's Push&Pull commands of module `im`
//! (push-pull.md §6), so the SSE stream sends them as they are and the Push&Pull endpoint maps
//! them one to one. Shapes:
//!
//! | kind | payload |
//! |---|---|
//! | `notifyAdd` | the notification as `im.notify.get` shows it (§2.8), plus `counter` |
//! | `notifyDelete` | `{"id": {"<id>": <notify_type>, ...}, "counter": N}` (§6.2) |
//! | `notifyRead`, `notifyUnread` | `{"chatId": C, "list": [ids], "counter": N}` (§6.3) |
//! | `notifyAnswer` | `{"id": I, "chatId": C, "answer": "text", "counter": N}` |
//! | `notifyConfirm` | `{"id": I, "chatId": C, "value": "Y", "confirmMessages": [..], "counter": N}` (§6.3) |
//!
//! A TAG replace is a `notifyDelete` of the replaced notifications followed by the `notifyAdd`,
//! as Bitrix24 sends them; a confirmation is a `notifyDelete` then a `notifyConfirm`.

use std::sync::Arc;

use super::Notification;
use crate::clock::push_rfc3339_local;
use crate::domain::inbox::NOTIFY_TYPE_CONFIRM;
use crate::value::{
    push_bitrix_json_from_php, push_bitrix_json_of, push_bitrix_json_str, Array, Key, Value,
};

/// At most this many ids go into one `notifyDelete`, `notifyRead` or `notifyUnread`: a read.all
/// over many unread notifications becomes several events, so no single event is unbounded.
pub const MAX_IDS_PER_EVENT: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Add,
    Delete,
    Read,
    Unread,
    Answer,
    Confirm,
}

impl Kind {
    /// The Push&Pull command name, also the SSE `event:` field and the `events.kind` column.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Add => "notifyAdd",
            Kind::Delete => "notifyDelete",
            Kind::Read => "notifyRead",
            Kind::Unread => "notifyUnread",
            Kind::Answer => "notifyAnswer",
            Kind::Confirm => "notifyConfirm",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "notifyAdd" => Kind::Add,
            "notifyDelete" => Kind::Delete,
            "notifyRead" => Kind::Read,
            "notifyUnread" => Kind::Unread,
            "notifyAnswer" => Kind::Answer,
            "notifyConfirm" => Kind::Confirm,
            _ => return None,
        })
    }
}

/// A committed event, as the hub fans it out and the log replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing over the whole log; the SSE `id:` and the resume point.
    pub id: i64,
    /// The recipient: only this user's streams see it.
    pub user_id: i64,
    pub kind: Kind,
    /// One JSON object without newlines, `counter` included: the SSE `data:` line as it is.
    pub payload: Arc<str>,
    /// This event's SSE frame, built by the first stream that sends it and shared by the
    /// others (issue 15 goal 5: the hub hands every subscriber the same `Arc<Event>`).
    pub sse: Encoded,
}

/// A lazily built encoding of an event for one kind of channel, shared by every subscriber
/// that receives the same `Arc<Event>`. Empty on events read back from the log. Carries no
/// meaning of its own: it compares equal to any other, so events compare by their fields.
#[derive(Debug, Clone, Default)]
pub struct Encoded(std::sync::OnceLock<bytes::Bytes>);

impl Encoded {
    /// The encoding, built by `make` on the first call only.
    pub fn get_or_init(&self, make: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.0.get_or_init(make).clone()
    }
}

impl PartialEq for Encoded {
    fn eq(&self, _: &Encoded) -> bool {
        true
    }
}

impl Eq for Encoded {}

/// A notification as the readers show it (§2.8), members in the documented order, written
/// straight to Bitrix24 JSON (§1.9). `chat_id` is the recipient's notification chat. Shared by
/// `im.notify.get`, `im.notify.history.search` and `notifyAdd`: no tree is built per
/// notification and the stored ATTACH is written from its parse (issue 15 goal 3); the bytes
/// are those of the tree the readers built before (tests below), and the XML transport
/// expands them through [`Value::Json`].
pub fn push_notification_json(n: &Notification, chat_id: i64, out: &mut String) {
    push_notification_members(n, chat_id, out);
    out.push('}');
}

/// The page's notifications, for the `notifications` member: a list of [`Value::Json`], one
/// per notification, so the request journal's budgeted snapshot copies the first ones whole
/// and stops without reading the rest.
pub fn notifications_value(page: &[Notification], chat_id: i64) -> Value {
    Value::list(page.iter().map(|n| {
        let mut out = String::with_capacity(512);
        push_notification_json(n, chat_id, &mut out);
        Value::json(out)
    }))
}

/// The object without its closing brace, so `notifyAdd` can append its `counter`.
fn push_notification_members(n: &Notification, chat_id: i64, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{{\"id\":{},\"chat_id\":{chat_id},\"author_id\":{},\"date\":\"",
        n.id, n.author_id
    );
    // Digits, `-`, `:`, `T` and `+` only: nothing to escape.
    push_rfc3339_local(n.created_at as f64, out);
    let _ = write!(
        out,
        "\",\"notify_type\":{},\"notify_module\":",
        n.notify_type
    );
    push_bitrix_json_str(&n.module, out);
    out.push_str(",\"notify_event\":");
    push_bitrix_json_str(&n.event, out);
    out.push_str(",\"notify_tag\":");
    push_bitrix_json_str(n.tag.as_deref().unwrap_or_default(), out);
    out.push_str(",\"notify_sub_tag\":");
    push_bitrix_json_str(n.sub_tag.as_deref().unwrap_or_default(), out);
    out.push_str(",\"notify_title\":\"\",\"setting_name\":");
    // `|` is never escaped, so the parts can be escaped one by one.
    push_bitrix_json_str(&n.module, out);
    out.pop(); // the closing quote
    out.push('|');
    let at = out.len();
    push_bitrix_json_str(&n.event, out);
    out.remove(at); // the opening quote
    out.push_str(",\"text\":");
    push_bitrix_json_str(&n.text, out);
    out.push_str(if n.read {
        ",\"notify_read\":\"Y\""
    } else {
        ",\"notify_read\":\"N\""
    });
    if n.notify_type == NOTIFY_TYPE_CONFIRM {
        out.push_str(",\"notify_buttons\":");
        push_bitrix_json_str(n.buttons.as_deref().unwrap_or_default(), out);
    }
    out.push_str(",\"params\":");
    // `params`: null, or an object whose `ATTACH` is the list of the notification's attachments.
    // The stored ATTACH is rewritten as it is when in `to_php_json`'s form, which every row
    // written here is; anything else goes through a tree.
    let Some(a) = n.attach.as_deref() else {
        out.push_str("null");
        return;
    };
    out.push_str("{\"ATTACH\":[");
    if !push_bitrix_json_from_php(a, out) {
        match serde_json::from_str::<serde_json::Value>(a) {
            Ok(a) => push_bitrix_json_of(&a, out),
            Err(_) => {
                out.truncate(out.len() - "{\"ATTACH\":[".len());
                out.push_str("null");
                return;
            }
        }
    }
    out.push_str("]}");
}

fn with_counter(v: Value, counter: i64) -> String {
    let mut v = match v {
        Value::Arr(a) => a,
        _ => Array::new(),
    };
    v.insert("counter", Value::Int(counter));
    Value::Arr(v).to_bitrix_json()
}

/// `notifyAdd`: the notification with the recipient's unread counter after the add.
pub fn add_payload(n: &Notification, chat_id: i64, counter: i64) -> String {
    let mut out = String::with_capacity(512);
    push_notification_members(n, chat_id, &mut out);
    let _ = std::fmt::Write::write_fmt(&mut out, format_args!(",\"counter\":{counter}}}"));
    out
}

/// `notifyDelete`: `(id, notify_type)` pairs; always a JSON object, even for one id.
pub fn delete_payload(ids: &[(i64, i64)], counter: i64) -> String {
    let mut map = Array::new();
    for (id, notify_type) in ids {
        // String keys keep it `{"12": 4}`: the list rule (P6) never applies to them.
        map.insert(Key::Str(id.to_string()), Value::Int(*notify_type));
    }
    let mut v = Array::new();
    v.insert("id", Value::Arr(map));
    with_counter(Value::Arr(v), counter)
}

/// `notifyRead` / `notifyUnread`: the ids whose state changed, ascending.
pub fn read_payload(chat_id: i64, ids: &[i64], counter: i64) -> String {
    let mut v = Array::new();
    v.insert("chatId", Value::Int(chat_id));
    v.insert("list", Value::list(ids.iter().map(|i| Value::Int(*i))));
    with_counter(Value::Arr(v), counter)
}

/// `notifyAnswer`: which notification was answered, and the answer's text.
pub fn answer_payload(id: i64, chat_id: i64, answer: &str, counter: i64) -> String {
    let mut v = Array::new();
    v.insert("id", Value::Int(id));
    v.insert("chatId", Value::Int(chat_id));
    v.insert("answer", Value::from(answer));
    with_counter(Value::Arr(v), counter)
}

/// `notifyConfirm`: which confirmation was answered, the chosen button value and the messages
/// `im.notify.confirm` answered.
pub fn confirm_payload(
    id: i64,
    chat_id: i64,
    value: &str,
    messages: &[String],
    counter: i64,
) -> String {
    let mut v = Array::new();
    v.insert("id", Value::Int(id));
    v.insert("chatId", Value::Int(chat_id));
    v.insert("value", Value::from(value));
    v.insert(
        "confirmMessages",
        Value::list(messages.iter().map(|m| Value::from(m.as_str()))),
    );
    with_counter(Value::Arr(v), counter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339_local;

    /// The tree the readers built before notifications were written straight to JSON: the
    /// reference the writer's bytes are held to.
    fn notification_tree(n: &Notification, chat_id: i64) -> Value {
        let mut v = Array::new();
        v.insert("id", Value::Int(n.id));
        v.insert("chat_id", Value::Int(chat_id));
        v.insert("author_id", Value::Int(n.author_id));
        v.insert("date", Value::Str(rfc3339_local(n.created_at as f64)));
        v.insert("notify_type", Value::Int(n.notify_type));
        v.insert("notify_module", Value::from(n.module.as_str()));
        v.insert("notify_event", Value::from(n.event.as_str()));
        v.insert("notify_tag", Value::Str(n.tag.clone().unwrap_or_default()));
        v.insert(
            "notify_sub_tag",
            Value::Str(n.sub_tag.clone().unwrap_or_default()),
        );
        v.insert("notify_title", Value::from(""));
        v.insert(
            "setting_name",
            Value::Str(format!("{}|{}", n.module, n.event)),
        );
        v.insert("text", Value::from(n.text.as_str()));
        v.insert("notify_read", Value::from(if n.read { "Y" } else { "N" }));
        if n.notify_type == NOTIFY_TYPE_CONFIRM {
            v.insert(
                "notify_buttons",
                Value::Str(n.buttons.clone().unwrap_or_default()),
            );
        }
        let attach = n
            .attach
            .as_deref()
            .and_then(|a| serde_json::from_str::<serde_json::Value>(a).ok())
            .map(Value::from_json);
        let params = match attach {
            Some(a) => Value::map([("ATTACH", Value::list([a]))]),
            None => Value::Null,
        };
        v.insert("params", params);
        Value::Arr(v)
    }

    fn samples() -> Vec<Notification> {
        let base = Notification {
            id: 12,
            user_id: 1,
            author_id: 3,
            notify_type: 4,
            module: "rest".into(),
            event: "rest_notify".into(),
            text: "Build #7 of [b]imnotify[/b] <done> & 'ok' \"q\" a/b\\c\n\t\u{1}\u{7f} é ✓ 😀"
                .into(),
            tag: Some("MP|app|DEPLOY_1".into()),
            sub_tag: Some("DEPLOY|1".into()),
            attach: None,
            buttons: None,
            read: false,
            created_at: 1_764_000_123,
        };
        let mut out = vec![base.clone()];
        out.push(Notification {
            id: 13,
            author_id: 0,
            text: "[url=https://example.com/a?b=1&c=2]link[/url] [color=#ff0000]red[/color]".into(),
            tag: None,
            sub_tag: None,
            read: true,
            attach: Some(
                r##"[{"MESSAGE":"API v2 is [b]ready<\/b>","COLOR":"#29619b"},{"LINK":{"NAME":"P \u00e9","LINK":"https:\/\/ci.example.com\/p\/1"}},{"DELIMITER":{"SIZE":200}},{"GRID":[{"NAME":"a'b","VALUE":"x\"y","WIDTH":120.5}]},{"0":"zero","1":"one"},{"1":"one","0":"zero"},{},[],{"05":1,"-3":2,"n":null,"t":true,"f":1e300,"big":18446744073709551615}]"##
                    .into(),
            ),
            ..base.clone()
        });
        out.push(Notification {
            id: 14,
            notify_type: NOTIFY_TYPE_CONFIRM,
            module: "mod/ule".into(),
            event: "ev<e>nt".into(),
            buttons: Some(r#"[{"TITLE":"Yes","VALUE":"Y","TYPE":"accept"}]"#.into()),
            attach: Some("{\"ATTACH\":\"not a list\"}".into()),
            ..base.clone()
        });
        out.push(Notification {
            id: 15,
            text: String::new(),
            attach: Some("not json".into()),
            created_at: 0,
            ..base
        });
        out
    }

    #[test]
    fn notifications_are_written_as_the_tree_encoded_them_in_json_and_xml() {
        let page = samples();
        let tree = Value::list(page.iter().map(|n| notification_tree(n, 77)));
        let written = notifications_value(&page, 77);
        assert_eq!(written.to_bitrix_json(), tree.to_bitrix_json());
        // The XML transport and batch references read this tree (protocol::envelope's tests
        // hold the XML of a `Value::Json` to that of its tree).
        assert_eq!(written.tree(), &tree);
        assert_eq!(notifications_value(&[], 77).to_bitrix_json(), "[]");
        for n in &page {
            let mut one = String::new();
            push_notification_json(n, 5, &mut one);
            assert_eq!(one, notification_tree(n, 5).to_bitrix_json());
        }
    }

    #[test]
    fn add_payload_is_the_notification_with_its_counter() {
        for n in samples() {
            assert_eq!(
                add_payload(&n, 9, 31),
                with_counter(notification_tree(&n, 9), 31)
            );
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in [
            Kind::Add,
            Kind::Delete,
            Kind::Read,
            Kind::Unread,
            Kind::Answer,
            Kind::Confirm,
        ] {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("notifyReadAll"), None);
    }

    #[test]
    fn delete_is_an_object_of_types_with_the_counter() {
        let p: serde_json::Value =
            serde_json::from_str(&delete_payload(&[(12, 4), (13, 2)], 3)).unwrap();
        assert_eq!(
            p,
            serde_json::json!({"id": {"12": 4, "13": 2}, "counter": 3})
        );
        let one: serde_json::Value = serde_json::from_str(&delete_payload(&[(0, 4)], 0)).unwrap();
        assert!(one["id"].is_object(), "{one}");
    }

    #[test]
    fn read_lists_ids_and_payloads_are_one_line() {
        let p = read_payload(7, &[1, 2], 0);
        assert!(!p.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"chatId": 7, "list": [1, 2], "counter": 0})
        );
        let a: serde_json::Value =
            serde_json::from_str(&answer_payload(5, 7, "line\nbreak", 1)).unwrap();
        assert_eq!(a["answer"], "line\nbreak");
    }
}
