//! `batch` (§6.3, P10): the parts that are pure rules. The command list and `halt`, the split of
//! a command string into method and query, the `$result[..]` family of references, and the five
//! result maps. The handler that runs the commands through the dispatcher is `methods::batch`.

use super::dispatch::Executed;
use super::envelope::Timing;
use crate::error::ApiError;
use crate::value::{Array, Key, Value};

/// `CRestUtil::BATCH_MAX_LENGTH`.
pub const MAX_COMMANDS: usize = 50;

/// Methods a batch refuses to run (ERROR_BATCH_METHOD_NOT_ALLOWED). `download` and `upload` do
/// not exist here, but the real server names them before looking them up, so they get this error
/// rather than ERROR_METHOD_NOT_FOUND.
pub const NOT_IN_BATCH: &[&str] = &["batch", "download", "upload"];

/// The reference variables, in `$arResult`'s key order.
const VARIABLES: [&str; 5] = ["result", "next", "total", "time", "error"];

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `method?query`, split as PHP's `parse_url` does.
    Call { method: String, query: String },
    /// Past the 50th command: not run, reported as ERROR_BATCH_LENGTH_EXCEEDED.
    TooMany,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub halt: bool,
    pub commands: Vec<(Key, Command)>,
}

/// Reads `cmd` and `halt` (top-level keys in any case). `cmd` may be a map or a list; anything
/// that is not an array gives no commands, and a command that is not a string is skipped
/// silently, though it still counts toward the 50.
pub fn parse(params: &Array) -> Request {
    let params = params.upper_case_keys();
    // PHP's (bool) cast: "false" and "no" are true, as non-empty strings.
    let halt = params.get_str("HALT").is_some_and(Value::is_truthy);
    let mut commands = Vec::new();
    if let Some(Value::Arr(cmd)) = params.get_str("CMD") {
        for (i, (key, v)) in cmd.iter().enumerate() {
            if i >= MAX_COMMANDS {
                commands.push((key.clone(), Command::TooMany));
            } else if let Value::Str(s) = v {
                let (method, query) = split_command(s);
                commands.push((
                    key.clone(),
                    Command::Call {
                        method: method.to_owned(),
                        query: query.to_owned(),
                    },
                ));
            }
        }
    }
    Request { halt, commands }
}

/// `parse_url($cmd)`'s path and query: a fragment (`#...`) is cut first, then the first `?`
/// separates the method from its query. Clients URL-encode the query, so a literal `#` only
/// appears in hand-written commands, where PHP drops the rest too.
pub fn split_command(cmd: &str) -> (&str, &str) {
    let cmd = cmd.split_once('#').map_or(cmd, |(before, _)| before);
    cmd.split_once('?').unwrap_or((cmd, ""))
}

/// What the commands run so far produced: `$arResult` of the real server, keyed by variable name
/// (result, next, total, time, error), then by command key.
#[derive(Debug, Clone, PartialEq)]
pub struct Results {
    vars: Array,
}

impl Default for Results {
    fn default() -> Results {
        let mut vars = Array::new();
        for name in VARIABLES {
            vars.insert(name, Value::empty_array());
        }
        Results { vars }
    }
}

impl Results {
    fn var(&mut self, name: &str) -> &mut Array {
        match self.vars.get_mut(&Key::from(name)) {
            Some(Value::Arr(a)) => a,
            _ => unreachable!("every variable is created as an array in default()"),
        }
    }

    pub fn success(&mut self, key: Key, done: Executed) {
        let time = Timing::of(done.started, done.finished, &done).to_value();
        self.var("result").insert(key.clone(), done.out.result);
        if let Some(n) = done.out.next {
            self.var("next").insert(key.clone(), Value::Int(n));
        }
        if let Some(t) = done.out.total {
            self.var("total").insert(key.clone(), Value::Int(t));
        }
        self.var("time").insert(key, time);
    }

    pub fn failure(&mut self, key: Key, e: &ApiError) {
        self.var("error").insert(
            key,
            Value::map([
                ("error", Value::from(e.code)),
                ("error_description", Value::Str(e.description.to_string())),
            ]),
        );
    }

    /// Replaces references in every value of a command's parameters, at any depth
    /// (`processBatchStructure`). Keys are left alone. No budget: see [`Results::resolve_within`].
    pub fn resolve(&self, params: Array) -> Array {
        let mut budget = usize::MAX;
        self.resolve_within(params, &mut budget).unwrap_or_default()
    }

    /// [`Results::resolve`], charging each reference the size of what it stands for
    /// ([`Value::approx_json_len`]) against `budget`, the bytes the batch may still produce.
    /// `None` once a reference would pass it: a 2.5 KB batch naming one large result a hundred
    /// times is refused before the copies or the work on them are paid for (issue 10). Arrays
    /// are shared, not copied ([`Array`] is copy-on-write); strings are copied, within budget.
    pub fn resolve_within(&self, params: Array, budget: &mut usize) -> Option<Array> {
        params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Arr(inner) => Value::Arr(self.resolve_within(inner.clone(), budget)?),
                    Value::Str(s) => self.substitute_within(s, budget)?,
                    other => other.clone(),
                };
                Some((k.clone(), v))
            })
            .collect()
    }

    /// One parameter value (`processBatchElement`). A reference is `$` and a variable name (in
    /// any case), then every character up to the next whitespace; the `[...]` groups in that run
    /// are the path. A reference that is the whole value is replaced by the target, whatever its
    /// type. Inside a longer string, the run is replaced only by a string or a number.
    pub fn substitute(&self, value: &str) -> Value {
        let mut budget = usize::MAX;
        self.substitute_within(value, &mut budget)
            .unwrap_or_default()
    }

    fn substitute_within(&self, value: &str, budget: &mut usize) -> Option<Value> {
        let mut current = value.to_owned();
        for reference in find_references(value) {
            let Some(path) = reference.path() else {
                continue;
            };
            let target = self.lookup(reference.variable, &path);
            let cost = target.map_or(0, |t| t.approx_json_len(*budget));
            *budget = budget.checked_sub(cost)?;
            if reference.text == current {
                return Some(target.cloned().unwrap_or(Value::Null));
            }
            if let Some(t @ (Value::Str(_) | Value::Int(_) | Value::Float(_))) = target {
                current = current.replace(reference.text, &t.to_php_string());
            }
        }
        Some(Value::Str(current))
    }

    /// Descends while each step exists and is not null (PHP `isset`), stopping at the last level
    /// found. The variable name is matched case-insensitively by the pattern but looked up as
    /// written, so `$RESULT[...]` finds nothing, as on the real server.
    fn lookup(&self, variable: &str, path: &[&str]) -> Option<&Value> {
        let mut cur = self.vars.get(&Key::Str(variable.to_owned()))?;
        for step in path {
            match cur.as_array().and_then(|a| a.get_str(step)) {
                Some(next) if !next.is_null() => cur = next,
                _ => break,
            }
        }
        // A result written straight to JSON is substituted as the tree it encodes.
        Some(cur.tree())
    }

    /// The method's answer: five maps, each following the PHP list/map rule.
    pub fn into_value(mut self) -> Value {
        let mut take = |name: &str| std::mem::take(self.var(name));
        let result = take("result");
        let error = take("error");
        let total = take("total");
        let next = take("next");
        let time = take("time");
        Value::map([
            ("result", Value::Arr(result)),
            ("result_error", Value::Arr(error)),
            ("result_total", Value::Arr(total)),
            ("result_next", Value::Arr(next)),
            ("result_time", Value::Arr(time)),
        ])
    }
}

/// Whether any value of `params`, at any depth, holds a reference that [`Results::resolve`]
/// would look at: a command without one does not depend on what the commands before it
/// produced, so `methods::batch` may check it before their writes are done.
pub fn refers(params: &Array) -> bool {
    params.iter().any(|(_, v)| match v {
        Value::Arr(inner) => refers(inner),
        Value::Str(s) => s.contains('$') && !find_references(s).is_empty(),
        _ => false,
    })
}

/// One match of `/\$(result|next|total|time|error)([^\s]*)/i`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reference<'a> {
    /// The whole match, `$` included.
    text: &'a str,
    variable: &'a str,
    rest: &'a str,
}

impl<'a> Reference<'a> {
    /// The `[...]` groups of the run (`/\[([^\]]+)\]/`); `None` when there are none, and then the
    /// text stays as it is.
    fn path(&self) -> Option<Vec<&'a str>> {
        let mut steps = Vec::new();
        let mut rest = self.rest;
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            match after.find(']') {
                Some(0) => rest = after,
                Some(close) => {
                    steps.push(&after[..close]);
                    rest = &after[close + 1..];
                }
                None => break,
            }
        }
        (!steps.is_empty()).then_some(steps)
    }
}

/// PCRE's `\s` without the `u` flag: ASCII whitespace, vertical tab included.
fn is_pcre_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn find_references(s: &str) -> Vec<Reference<'_>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let name_start = i + 1;
        let found = VARIABLES.iter().find(|name| {
            bytes
                .get(name_start..name_start + name.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(name.as_bytes()))
        });
        let Some(name) = found else {
            i += 1;
            continue;
        };
        let rest_start = name_start + name.len();
        let end = bytes[rest_start..]
            .iter()
            .position(|b| is_pcre_space(*b))
            .map_or(bytes.len(), |p| rest_start + p);
        // Every boundary here is next to an ASCII byte, so slicing stays on char boundaries.
        out.push(Reference {
            text: &s[i..end],
            variable: &s[name_start..rest_start],
            rest: &s[rest_start..end],
        });
        i = end.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::operating::Usage;
    use crate::protocol::envelope::Output;
    use proptest::prelude::*;

    fn done(result: Value, next: Option<i64>, total: Option<i64>) -> Executed {
        Executed {
            out: Output {
                result,
                next,
                total,
            },
            started: 1_800_000_000.5,
            finished: 1_800_000_000.75,
            usage: Usage::UNTRACKED,
        }
    }

    fn results() -> Results {
        let mut r = Results::default();
        r.success(
            Key::from("user"),
            done(
                Value::map([
                    ("ID", Value::Int(7)),
                    ("NAME", Value::from("Anna")),
                    ("TAGS", Value::list([Value::from("a"), Value::from("b")])),
                    ("EMPTY", Value::Null),
                ]),
                Some(50),
                Some(120),
            ),
        );
        r.success(Key::Int(0), done(Value::Int(42), None, None));
        r.failure(Key::from("bad"), &ApiError::user_id_empty());
        r
    }

    #[test]
    fn command_list_halt_and_length() {
        let mut cmd = Array::new();
        for i in 0..52 {
            cmd.push(Value::Str(format!("m{i}?x={i}")));
        }
        cmd.insert(7, Value::Int(5));
        let mut p = Array::new();
        p.insert("Cmd", Value::Arr(cmd));
        p.insert("HALT", Value::from("false"));
        let req = parse(&p);
        assert!(req.halt, "a non-empty string is true in PHP");
        assert_eq!(req.commands.len(), 51, "the non-string command is skipped");
        assert_eq!(
            req.commands[0].1,
            Command::Call {
                method: "m0".into(),
                query: "x=0".into()
            }
        );
        assert_eq!(req.commands[49].1, Command::TooMany);
        assert_eq!(req.commands[49].0, Key::Int(50));

        for (v, halt) in [("0", false), ("", false), ("1", true), ("true", true)] {
            let mut p = Array::new();
            p.insert("halt", Value::from(v));
            assert_eq!(parse(&p).halt, halt, "{v:?}");
        }
        let mut p = Array::new();
        p.insert("cmd", Value::from("not an array"));
        assert!(parse(&p).commands.is_empty());
    }

    #[test]
    fn split_like_parse_url() {
        assert_eq!(split_command("im.notify?A=1&B=2"), ("im.notify", "A=1&B=2"));
        assert_eq!(split_command("im.notify"), ("im.notify", ""));
        assert_eq!(split_command("m?a=1?b"), ("m", "a=1?b"));
        assert_eq!(split_command("m?MESSAGE=#BR#x"), ("m", "MESSAGE="));
    }

    #[test]
    fn whole_value_references_keep_their_type() {
        let r = results();
        assert_eq!(r.substitute("$result[user][ID]"), Value::Int(7));
        assert_eq!(
            r.substitute("$result[user][TAGS]"),
            Value::list([Value::from("a"), Value::from("b")])
        );
        assert_eq!(r.substitute("$result[0]"), Value::Int(42));
        assert_eq!(r.substitute("$next[user]"), Value::Int(50));
        assert_eq!(r.substitute("$total[user]"), Value::Int(120));
        assert_eq!(r.substitute("$time[user][duration]"), Value::Float(0.25));
        assert_eq!(
            r.substitute("$error[bad][error]"),
            Value::from("USER_ID_EMPTY")
        );
        // A missing step stops at the last level found.
        assert_eq!(r.substitute("$result[0][nope]"), Value::Int(42));
        assert_eq!(
            r.substitute("$result[user][EMPTY]"),
            r.substitute("$result[user]")
        );
        // No path: left alone. An upper-case variable matches but finds nothing.
        assert_eq!(r.substitute("$result"), Value::from("$result"));
        assert_eq!(r.substitute("$RESULT[0]"), Value::Null);
    }

    #[test]
    fn embedded_references_only_take_strings_and_numbers() {
        let r = results();
        assert_eq!(
            r.substitute("user $result[user][ID] is $result[user][NAME]"),
            Value::from("user 7 is Anna")
        );
        // The run goes to the next whitespace, so a trailing comma is part of it and replaced.
        assert_eq!(r.substitute("id $result[0], ok"), Value::from("id 42 ok"));
        assert_eq!(
            r.substitute("tags $result[user][TAGS]"),
            Value::from("tags $result[user][TAGS]")
        );
        // Numbers use PHP's string form; the "s" after the path belongs to the run.
        assert_eq!(
            r.substitute("took $time[0][duration]s"),
            Value::from("took 0.25")
        );
    }

    #[test]
    fn resolve_walks_nested_parameters() {
        let r = results();
        let mut inner = Array::new();
        inner.insert("USER", Value::from("$result[user][ID]"));
        let mut p = Array::new();
        p.insert("FIELDS", Value::Arr(inner));
        p.insert("N", Value::from("$result[0]"));
        let out = r.resolve(p);
        assert_eq!(
            out.get_str("FIELDS").unwrap().get_path(&["USER".into()]),
            Some(&Value::Int(7))
        );
        assert_eq!(out.get_str("N"), Some(&Value::Int(42)));
    }

    #[test]
    fn five_maps_follow_the_list_rule() {
        let mut r = Results::default();
        r.success(Key::Int(0), done(Value::Int(1), None, None));
        r.success(Key::Int(1), done(Value::Int(2), None, None));
        let json = r.into_value().to_bitrix_json();
        assert!(
            json.starts_with("{\"result\":[1,2],\"result_error\":[],\"result_total\":[],\"result_next\":[],\"result_time\":[{"),
            "{json}"
        );
        let mut r = Results::default();
        r.failure(Key::Int(0), &ApiError::method_not_found());
        r.success(Key::Int(1), done(Value::Int(2), None, None));
        let json = r.into_value().to_bitrix_json();
        assert!(
            json.starts_with(
                "{\"result\":{\"1\":2},\"result_error\":[{\"error\":\"ERROR_METHOD_NOT_FOUND\""
            ),
            "{json}"
        );
    }

    #[test]
    fn refers_finds_references_at_any_depth() {
        let params = |pairs: &[(&str, Value)]| {
            let mut a = Array::new();
            for (k, v) in pairs {
                a.insert(*k, v.clone());
            }
            a
        };
        let plain = params(&[
            ("USER_ID", Value::Int(1)),
            ("MESSAGE", Value::from("costs $5, not $ 6 or $resul")),
        ]);
        assert!(!refers(&plain), "no variable name after the $");
        for text in ["$result[a]", "id $error[b][error] x", "$Time[a]", "$next"] {
            assert!(refers(&params(&[("MESSAGE", Value::from(text))])), "{text}");
        }
        let mut inner = Array::new();
        inner.insert("X", Value::from("$total[a]"));
        assert!(refers(&params(&[("ATTACH", Value::Arr(inner))])));
        // Keys are not looked at, as `resolve` leaves them alone.
        assert!(!refers(&params(&[("$result[a]", Value::Int(1))])));
    }

    proptest! {
        #[test]
        fn never_panics(cmds in proptest::collection::vec(".*", 0..60), value in ".*", halt in ".*") {
            let mut p = Array::new();
            p.insert("cmd", Value::list(cmds.into_iter().map(Value::Str)));
            p.insert("halt", Value::Str(halt));
            let req = parse(&p);
            let r = results();
            for (_, c) in req.commands {
                if let Command::Call { query, .. } = c {
                    let params = crate::protocol::params::parse_str(&query, &Default::default());
                    let _ = r.resolve(params);
                }
            }
            let _ = r.substitute(&value);
        }

        #[test]
        fn references_in_arbitrary_text(prefix in "[^$]*", suffix in "[ \t].*") {
            let r = results();
            let s = format!("{prefix}$result[0]{suffix}");
            let expected = format!("{prefix}42{suffix}");
            prop_assert_eq!(r.substitute(&s), Value::Str(expected));
        }
    }
}
