//! Typed `batch` commands (§6.3): each command becomes `method?query` with PHP's bracket form
//! (`ATTACH[BLOCKS][0][MESSAGE]=...`), and each result is decoded by its command's type.

use serde_json::{json, Map, Value};

use crate::{
    BatchResult, Counters, Delete, Error, ErrorCode, GetQuery, Idempotent, NotificationList,
    Notify, UserInfo,
};

/// One command of a [`crate::Client::batch`].
///
/// ```
/// use imnotify_client::{Command, Delete, Notify};
/// let cmds = [
///     ("add", Command::SystemAdd(Notify::new(1, "hi"))),
///     ("del", Command::Delete(Delete::Id(3))),
/// ];
/// # let _ = cmds;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// `im.notify.system.add`; gives [`Output::Id`].
    SystemAdd(Notify),
    /// `im.notify.personal.add`; gives [`Output::Id`].
    PersonalAdd(Notify),
    /// `im.notify.delete`; gives [`Output::Bool`].
    Delete(Delete),
    /// `im.notify.get`; gives [`Output::List`].
    Get(GetQuery),
    /// `im.notify.read` (id, read, only_current); gives [`Output::Bool`].
    Read(u64, bool, bool),
    /// `im.notify.read.all`; gives [`Output::Bool`].
    ReadAll,
    /// `im.counters.get`; gives [`Output::Counters`].
    Counters,
    /// `user.get` with a filter; gives [`Output::Users`].
    UserGet(Value),
}

/// The result of one batch command, typed by its [`Command`].
///
/// ```
/// let o = imnotify_client::Output::Id(5);
/// assert!(matches!(o, imnotify_client::Output::Id(5)));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// A new notification's id.
    Id(u64),
    /// A yes/no result.
    Bool(bool),
    /// A page of notifications.
    List(NotificationList),
    /// The counters.
    Counters(Counters),
    /// Users.
    Users(Vec<UserInfo>),
}

impl Command {
    fn method(&self) -> &'static str {
        match self {
            Command::SystemAdd(_) => "im.notify.system.add",
            Command::PersonalAdd(_) => "im.notify.personal.add",
            Command::Delete(_) => "im.notify.delete",
            Command::Get(_) => "im.notify.get",
            Command::Read(..) => "im.notify.read",
            Command::ReadAll => "im.notify.read.all",
            Command::Counters => "im.counters.get",
            Command::UserGet(_) => "user.get",
        }
    }

    fn params(&self) -> Value {
        match self {
            Command::SystemAdd(n) | Command::PersonalAdd(n) => n.to_params(),
            Command::Delete(d) => d.params(),
            Command::Get(q) => get_params(q),
            Command::Read(id, read, only) => read_params(*id, *read, *only),
            Command::ReadAll | Command::Counters => json!({}),
            Command::UserGet(filter) => json!({ "FILTER": filter }),
        }
    }

    fn idempotent(&self, oauth: bool) -> bool {
        match self {
            Command::SystemAdd(n) | Command::PersonalAdd(n) => n.replaces_on_repeat(oauth),
            _ => true,
        }
    }

    fn decode(&self, v: Value) -> Result<Output, Error> {
        let bad = |e: serde_json::Error| Error::Decode {
            status: 200,
            detail: e.to_string(),
        };
        Ok(match self {
            Command::SystemAdd(_) | Command::PersonalAdd(_) => Output::Id(added_id(v)?),
            Command::Delete(_) | Command::Read(..) | Command::ReadAll => Output::Bool(truthy(&v)),
            Command::Get(_) => Output::List(serde_json::from_value(v).map_err(bad)?),
            Command::Counters => Output::Counters(serde_json::from_value(v).map_err(bad)?),
            Command::UserGet(_) => Output::Users(serde_json::from_value(v).map_err(bad)?),
        })
    }
}

/// An add method's `result`: the id, or `false` when the recipient does not exist or is
/// inactive, which becomes [`Error::Api`] with [`ErrorCode::UserNotExists`] and status 200.
///
/// ```
/// use imnotify_client::{added_id, ErrorCode};
/// assert_eq!(added_id(serde_json::json!(42)).unwrap(), 42);
/// assert_eq!(added_id(serde_json::json!(false)).unwrap_err().code(), Some(&ErrorCode::UserNotExists));
/// ```
pub fn added_id(v: Value) -> Result<u64, Error> {
    match &v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or(Error::Api {
        code: ErrorCode::UserNotExists,
        status: 200,
        description: format!("the server answered {v} instead of an id: no such active user"),
    })
}

/// `true`, or an object such as read.all's `{"result": true, "newCounter": 0}` on newer portals.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(m) => m.get("result").is_none_or(truthy),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => false,
    }
}

pub(crate) fn get_params(q: &GetQuery) -> Value {
    let mut p = Map::new();
    if let Some((id, ty)) = q.after {
        p.insert("LAST_ID".into(), json!(id));
        p.insert("LAST_TYPE".into(), json!(ty));
    }
    if let Some(l) = q.limit {
        p.insert("LIMIT".into(), json!(l));
    }
    Value::Object(p)
}

pub(crate) fn read_params(id: u64, read: bool, only_current: bool) -> Value {
    json!({
        "ID": id,
        "ACTION": if read { "Y" } else { "N" },
        "ONLY_CURRENT": if only_current { "Y" } else { "N" },
    })
}

/// The `batch` parameters, and whether the whole batch may be repeated.
pub(crate) fn params(commands: &[(&str, Command)], halt: bool, oauth: bool) -> (Value, Idempotent) {
    let mut cmd = Map::new();
    for (name, c) in commands {
        let mut q = form_urlencoded::Serializer::new(String::new());
        php_query("", &c.params(), &mut q);
        cmd.insert(
            (*name).to_owned(),
            json!(format!("{}?{}", c.method(), q.finish())),
        );
    }
    let idem = if commands.iter().all(|(_, c)| c.idempotent(oauth)) {
        Idempotent::Yes
    } else {
        Idempotent::No
    };
    (json!({ "halt": u8::from(halt), "cmd": cmd }), idem)
}

/// PHP's `http_build_query`: nested values as `key[sub]`, booleans as 1 and 0, null left out.
fn php_query(prefix: &str, v: &Value, out: &mut form_urlencoded::Serializer<'_, String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}[{k}]")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                php_query(&key(k), v, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                php_query(&key(&i.to_string()), v, out);
            }
        }
        Value::Null => {}
        Value::Bool(b) => {
            out.append_pair(prefix, if *b { "1" } else { "0" });
        }
        Value::Number(n) => {
            out.append_pair(prefix, &n.to_string());
        }
        Value::String(s) => {
            out.append_pair(prefix, s);
        }
    }
}

pub(crate) fn outputs(commands: &[(&str, Command)], mut r: BatchResult) -> crate::BatchOutputs {
    let mut out = Vec::new();
    for (name, c) in commands {
        let result = if let Some(e) = r.result_error.remove(*name) {
            {
                // Inside a batch an error has no HTTP status of its own: the catalogue's is given.
                let status = imnotify_wire::error::CATALOGUE
                    .iter()
                    .find(|(code, _, _)| *code == e.error)
                    .map_or(0, |(_, status, _)| *status);
                Err(Error::from_body(status, e))
            }
        } else if let Some(v) = r.result.remove(*name) {
            c.decode(v)
        } else {
            // With halt, the commands after a failure never ran.
            continue;
        };
        out.push(((*name).to_owned(), result));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_use_php_bracket_form() {
        let attach =
            crate::attach::Attach::new(vec![crate::attach::Block::message("a&b").unwrap()])
                .unwrap();
        let (p, idem) = params(
            &[(
                "x",
                Command::SystemAdd(Notify::new(5, "hi there").attach(attach)),
            )],
            true,
            false,
        );
        assert!(idem == Idempotent::No);
        assert_eq!(p["halt"], 1);
        assert_eq!(
            p["cmd"]["x"],
            "im.notify.system.add?USER_ID=5&MESSAGE=hi+there&ATTACH%5BBLOCKS%5D%5B0%5D%5BMESSAGE%5D=a%26b"
        );
    }

    #[test]
    fn a_webhook_batch_add_is_repeatable_only_with_a_kept_tag() {
        let tagged = |n: Notify| [("a", Command::SystemAdd(n))];
        let idem = |n: Notify, oauth| params(&tagged(n), false, oauth).1;
        // D3: a webhook's TAG without CLIENT_ID is ignored, so a repeat would duplicate.
        assert!(idem(Notify::new(1, "x").tag("t"), false) == Idempotent::No);
        assert!(idem(Notify::new(1, "x").tag("t").client_id("ci"), false) == Idempotent::Yes);
        assert!(idem(Notify::new(1, "x").tag("t"), true) == Idempotent::Yes);
    }
}
