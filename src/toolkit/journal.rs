//! The request journal: the last `journal.capacity` REST calls, newest last, in a bounded ring.
//!
//! Recording is cheap by construction: parameters and results are copied through
//! [`snapshot`], which stops after a byte budget (so an 8 MB request costs at most
//! `journal.entry_bytes` here), and credentials are masked on the way. Pushing is one short
//! lock on the ring.
//!
//! Calls whose authentication failed go to a second, small ring ([`FAILED_AUTH_CAPACITY`]), so
//! an outsider sending bad credentials cannot evict the entries of real calls, and the admin
//! still sees the latest failures. Results are masked like parameters, and the channel ids of
//! `pull.*config.get` (bearer secrets for the Push&Pull endpoints) are masked too.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::value::{Array, RawJson, Value};

/// Parameter names whose values never reach the journal (compared case-insensitively, at any
/// depth): the framework's credentials, OAuth secrets and codes, passwords.
pub const MASKED: &[&str] = &[
    "auth",
    "access_token",
    "refresh_token",
    "client_secret",
    "code",
    "ap",
    "password",
    "sessid",
    "channel_id",
];

/// The most entries of calls whose authentication failed that the journal keeps (fewer when
/// `journal.capacity` is smaller). They have their own ring, so they never evict the entries of
/// authenticated calls.
pub const FAILED_AUTH_CAPACITY: usize = 20;

/// Object keys under which a result's `id` values are secrets: the Push&Pull channels of
/// `pull.config.get`, whose ids alone let a client read the channel.
const SECRET_ID_CONTAINERS: &[&str] = &["channels"];

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Who made a call, without any secret: `kind` is `webhook`, `oauth`, `session` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CredentialInfo {
    pub kind: &'static str,
    pub user_id: Option<i64>,
    pub webhook_id: Option<i64>,
    pub client_id: Option<String>,
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    /// Unix seconds, from the server's clock (so a test clock moves it).
    pub at: f64,
    pub method: String,
    /// `json`, `xml`, or `batch` for a batch's command.
    pub transport: &'static str,
    pub credential: CredentialInfo,
    /// Decoded parameters as JSON text, credentials masked, cut at the byte budget. Text rather
    /// than a tree, so an entry holds about the budget in memory, not a multiple of it.
    pub params: String,
    pub status: u16,
    pub error: Option<&'static str>,
    /// The result as JSON text, cut at the byte budget.
    pub result: Option<String>,
    pub duration_ms: f64,
    /// The enclosing batch call's entry id, for a batch's commands.
    pub batch_id: Option<u64>,
    /// The fault that answered (or delayed) this call.
    pub fault_id: Option<u64>,
    /// Whether params or result were cut at the byte budget.
    pub truncated: bool,
}

/// Which entries `GET /admin/api/requests` wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact method name.
    pub method: Option<String>,
    /// Exact HTTP status.
    pub status: Option<u16>,
    /// Only entries with a larger id.
    pub since_id: Option<u64>,
    pub limit: Option<usize>,
}

pub struct Journal {
    capacity: usize,
    entry_bytes: usize,
    /// Ids keep counting across [`Journal::clear`], so they never go backwards.
    next_id: AtomicU64,
    ring: Mutex<VecDeque<Entry>>,
    /// Calls whose authentication failed, apart from `ring` (see the module docs).
    failed_auth: Mutex<VecDeque<Entry>>,
}

impl Journal {
    pub fn new(capacity: usize, entry_bytes: usize) -> Journal {
        Journal {
            capacity,
            entry_bytes,
            next_id: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            failed_auth: Mutex::new(VecDeque::new()),
        }
    }

    /// `false` with `journal.capacity = 0`: then nothing is recorded or copied.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The byte budget of one entry's parameters (and, separately, of its result).
    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// A fresh entry id; ids increase in the order calls start.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds an entry, dropping the oldest past the capacity.
    pub fn push(&self, entry: Entry) {
        if !self.enabled() {
            return;
        }
        let mut ring = self.lock();
        if ring.len() >= self.capacity {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Adds the entry of a call whose authentication failed to its own small ring
    /// ([`FAILED_AUTH_CAPACITY`]), dropping the oldest such entry past it.
    pub fn push_failed_auth(&self, entry: Entry) {
        let cap = self.capacity.min(FAILED_AUTH_CAPACITY);
        if cap == 0 {
            return;
        }
        let mut ring = lock(&self.failed_auth);
        if ring.len() >= cap {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Matching entries, newest (highest id) first. Only the entries returned are copied: the
    /// admin page polls with a small `limit`, and copying the whole ring (up to `capacity` ×
    /// twice `entry_bytes`) for each poll would cost far more than the answer.
    pub fn list(&self, filter: &Filter) -> Vec<Entry> {
        let ring = self.lock();
        let failed = lock(&self.failed_auth);
        let mut out: Vec<&Entry> = ring
            .iter()
            .chain(failed.iter())
            .filter(|e| filter.method.as_deref().is_none_or(|m| e.method == m))
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .filter(|e| filter.since_id.is_none_or(|s| e.id > s))
            .collect();
        // Entries are pushed when calls end, so the ring is only nearly in id order.
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        if let Some(limit) = filter.limit {
            out.truncate(limit);
        }
        out.into_iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
        lock(&self.failed_auth).clear();
    }

    /// Entries held, both rings.
    pub fn len(&self) -> usize {
        self.lock().len() + lock(&self.failed_auth).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        lock(&self.ring)
    }
}

fn lock(ring: &Mutex<VecDeque<Entry>>) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
    ring.lock().unwrap_or_else(|e| e.into_inner())
}

/// `params` as JSON text with credentials masked, cut off after about `budget` bytes of keys
/// and values. The second value says whether anything was cut. The cost is bounded by the
/// budget, not by the size of `params`, and the text is at most twice the budget (JSON
/// escaping can grow a string; past that the whole is replaced by a marker).
///
/// The text is written as it is walked, without an intermediate JSON tree: with the tree, the
/// journal cost about a tenth of an `im.notify.get`'s CPU (issue 16 profile).
pub fn snapshot_params(params: &Array, budget: usize) -> (String, bool) {
    let mut w = Writer::new(budget);
    w.array(params);
    w.finish(budget)
}

/// [`snapshot_params`] for any value (a method's result). Besides the [`MASKED`] keys, the
/// `id` of anything under a `channels` key is masked: `pull.config.get`'s channel ids are
/// bearer secrets (whoever has one reads the channel), and the journal is shown to admins.
pub fn snapshot(value: &Value, budget: usize) -> (String, bool) {
    let mut w = Writer::new(budget);
    w.walk(value);
    w.finish(budget)
}

/// What a cut-off container ends with.
pub const CUT: &str = "…";

/// JSON text under a byte budget: `left` counts down by each string's length and 8 for each
/// number.
struct Writer {
    out: Vec<u8>,
    left: usize,
    cut: bool,
    /// Inside a [`SECRET_ID_CONTAINERS`] value, where `id` keys are masked.
    secret_ids: bool,
    /// Inside a `batch`'s `cmd`, whose strings are `method?query`: masked keys of the query
    /// are masked too.
    commands: bool,
}

impl Writer {
    fn new(budget: usize) -> Writer {
        Writer {
            out: Vec::with_capacity(budget.min(4096) + 64),
            left: budget,
            cut: false,
            secret_ids: false,
            commands: false,
        }
    }

    fn finish(self, budget: usize) -> (String, bool) {
        if self.out.len() > budget.saturating_mul(2).max(64) {
            return (format!("\"{CUT}\""), true);
        }
        // Only whole UTF-8 strings and ASCII were written.
        let text = String::from_utf8(self.out).unwrap_or_else(|_| format!("\"{CUT}\""));
        (text, self.cut)
    }

    /// Writes a JSON string or number; serde_json's escaping, so the text reads back as before.
    fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        // Writing a str or a number into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, v);
    }

    fn walk(&mut self, v: &Value) {
        match v {
            Value::Null => self.out.extend_from_slice(b"null"),
            Value::Bool(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => {
                self.left = self.left.saturating_sub(8);
                self.json(i);
            }
            Value::Float(f) => {
                self.left = self.left.saturating_sub(8);
                match serde_json::Number::from_f64(*f) {
                    Some(n) => self.json(&n),
                    None => self.out.extend_from_slice(b"null"),
                }
            }
            Value::Str(s) if self.commands => self.string(&mask_command(s)),
            Value::Str(s) => self.string(s),
            Value::Arr(a) => self.array(a),
            Value::Json(r) => self.json_text(r),
        }
    }

    fn array(&mut self, a: &Array) {
        if a.is_list() {
            self.out.push(b'[');
            for (i, v) in a.values().enumerate() {
                if i > 0 {
                    self.out.push(b',');
                }
                if self.left == 0 {
                    self.cut = true;
                    self.json(CUT);
                    break;
                }
                self.walk(v);
            }
            self.out.push(b']');
        } else {
            self.out.push(b'{');
            let mut last_key_cut = false;
            for (i, (k, v)) in a.iter().enumerate() {
                if self.left == 0 {
                    self.cut = true;
                    // A key cut to nothing already reads as the marker.
                    if !last_key_cut {
                        if i > 0 {
                            self.out.push(b',');
                        }
                        self.json(CUT);
                        self.out.extend_from_slice(b":true");
                    }
                    break;
                }
                if i > 0 {
                    self.out.push(b',');
                }
                let key = k.as_string();
                let before = self.cut;
                self.cut = false;
                self.string(&key);
                last_key_cut = self.cut;
                self.cut |= before;
                self.out.push(b':');
                if is_masked(&key) || (self.secret_ids && key.eq_ignore_ascii_case("id")) {
                    self.json(MASK);
                } else if SECRET_ID_CONTAINERS
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&key))
                {
                    let outer = std::mem::replace(&mut self.secret_ids, true);
                    self.walk(v);
                    self.secret_ids = outer;
                } else if key.eq_ignore_ascii_case("cmd") {
                    let outer = std::mem::replace(&mut self.commands, true);
                    self.walk(v);
                    self.commands = outer;
                } else {
                    self.walk(v);
                }
            }
            self.out.push(b'}');
        }
    }

    /// Text already written as JSON (`Value::Json`): copied as it is when it fits the budget
    /// and names no masked key (Bitrix24's escaping reads back as the same strings); the
    /// marker, ending the snapshot, when it does not fit; walked as its tree only when it names
    /// a masked key. A notification list is one such text per notification, so a snapshot of
    /// `im.notify.get` copies a few and parses none (parsing the one that crossed the budget,
    /// to cut it inside, was 6 % of such a call: issue 15).
    fn json_text(&mut self, r: &RawJson) {
        let text = r.json();
        if names_masked_key(text) {
            self.walk(r.value());
        } else if text.len() <= self.left {
            self.left -= text.len();
            self.out.extend_from_slice(text.as_bytes());
        } else {
            self.cut = true;
            self.left = 0;
            self.json(CUT);
        }
    }

    /// At most `left` bytes of `s`, on a character boundary, then the marker.
    fn string(&mut self, s: &str) {
        if s.len() <= self.left {
            self.left -= s.len();
            self.json(s);
            return;
        }
        self.cut = true;
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.left = 0;
        self.json(&format!("{}{CUT}", &s[..end]));
    }
}

/// Whether JSON text has a member whose name [`is_masked`]. Every member name ends in `":`,
/// and a masked name holds no quote or escape, so each `":` is looked back from to the quote
/// before it. Only ever a false alarm (a value holding `\":`), which costs a walk of the
/// tree, never a miss.
fn names_masked_key(text: &str) -> bool {
    // memmem and memrchr, not a test at every byte: the scan was a tenth of an
    // `im.notify.get` of 20 notifications (issue 15).
    let b = text.as_bytes();
    memchr::memmem::find_iter(b, b"\":").any(|close| {
        memchr::memrchr(b'"', &b[..close])
            .is_some_and(|open| std::str::from_utf8(&b[open + 1..close]).is_ok_and(is_masked))
    })
}

/// A batch command (`method?query`) with the values of masked parameters replaced by
/// [`MASK`]: `im.notify.get?auth=T` records as `im.notify.get?auth=***`. A parameter is
/// masked by its decoded name before any `[`, as the batch decodes it (`auth[x]` too).
fn mask_command(cmd: &str) -> std::borrow::Cow<'_, str> {
    let Some((method, query)) = cmd.split_once('?') else {
        return cmd.into();
    };
    let mut changed = false;
    let pieces: Vec<String> = query
        .split('&')
        .map(|piece| {
            let raw_name = piece.split_once('=').map_or(piece, |(n, _)| n);
            let name = form_urlencoded::parse(raw_name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            // PHP's decoder ends a name at a NUL byte, as `params::register_variable` does.
            let name = name.split('\0').next().unwrap_or_default();
            let base = name.split('[').next().unwrap_or_default();
            // The rest of PHP's mangling (`php_key`) happens to the base only.
            if is_masked(base.trim_start_matches(' ')) {
                changed = true;
                format!("{raw_name}={MASK}")
            } else {
                piece.to_owned()
            }
        })
        .collect();
    if changed {
        format!("{method}?{}", pieces.join("&")).into()
    } else {
        cmd.into()
    }
}

/// Whether the values of a parameter named `key` are masked: a [`MASKED`] name, or the name
/// PHP makes of one that a client spelled with a stray `[`, a `.` or a space after it. PHP's
/// `register_variable` turns those into `_`, and keeps the rest of the name, so `auth[=T`,
/// `auth.=T` and `auth x=T` all arrive as `auth_` or `auth_x` and carry the token the client
/// meant to send (the journal records what PHP would see, so it masks by those names too).
/// Names such as `access_token` are found already in whichever spelling PHP made them from
/// (`access.token`, `access token`, `access[token`). A longer parameter name that starts with
/// a masked name and `_` is masked as well: over-masking in the journal costs nothing.
fn is_masked(key: &str) -> bool {
    MASKED.iter().any(|m| {
        key.len() >= m.len()
            && key.is_char_boundary(m.len())
            && key[..m.len()].eq_ignore_ascii_case(m)
            && matches!(key.as_bytes().get(m.len()), None | Some(b'_' | b' ' | b'.'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn entry(id: u64, method: &str, status: u16) -> Entry {
        Entry {
            id,
            at: 0.0,
            method: method.into(),
            transport: "json",
            credential: CredentialInfo::default(),
            params: "null".into(),
            status,
            error: None,
            result: None,
            duration_ms: 0.0,
            batch_id: None,
            fault_id: None,
            truncated: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_filters() {
        let j = Journal::new(3, 100);
        for i in 1..=5 {
            j.push(entry(i, if i % 2 == 0 { "a" } else { "b" }, 200));
        }
        let all = j.list(&Filter::default());
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [5, 4, 3]);
        let f = Filter {
            method: Some("b".into()),
            ..Filter::default()
        };
        assert_eq!(j.list(&f).len(), 2);
        let f = Filter {
            since_id: Some(4),
            ..Filter::default()
        };
        assert_eq!(j.list(&f).len(), 1);
        j.clear();
        assert!(j.is_empty());
        assert!(j.next_id() >= 1);
        assert!(!Journal::new(0, 10).enabled());
    }

    #[test]
    fn failed_authentications_never_evict_authenticated_calls() {
        let j = Journal::new(5, 100);
        j.push(entry(1, "real", 200));
        for i in 2..200 {
            j.push_failed_auth(entry(i, "real", 401));
        }
        let all = j.list(&Filter::default());
        assert!(all.iter().any(|e| e.id == 1), "the real call was evicted");
        // The newest failures are shown, at most the smaller capacity.
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].id, 199);
        j.clear();
        assert!(j.is_empty());
        let big = Journal::new(1000, 100);
        for i in 0..1000 {
            big.push_failed_auth(entry(i, "x", 401));
        }
        assert_eq!(big.len(), FAILED_AUTH_CAPACITY);
    }

    #[test]
    fn channel_ids_and_tokens_in_results_are_masked() {
        let private = Value::map([
            ("id", Value::from("secretchannel")),
            ("type", Value::from("private")),
        ]);
        let result = Value::map([
            ("channels", Value::map([("private", private)])),
            ("access_token", Value::from("secrettoken")),
            ("id", Value::Int(42)),
        ]);
        let (j, _) = snapshot(&result, 1000);
        assert!(!j.contains("secret"), "{j}");
        let j: Json = serde_json::from_str(&j).unwrap();
        assert_eq!(j["channels"]["private"]["id"], MASK);
        assert_eq!(j["channels"]["private"]["type"], "private");
        // An `id` outside the channels is not a secret.
        assert_eq!(j["id"], 42);
    }

    #[test]
    fn credentials_are_masked_at_any_depth() {
        let mut inner = Array::new();
        inner.insert("Client_Secret", Value::from("s3cret"));
        inner.insert("keep", Value::from("x"));
        let mut p = Array::new();
        p.insert("code", Value::from("abc"));
        p.insert("nested", Value::Arr(inner));
        let (j, cut) = snapshot_params(&p, 1000);
        assert!(!cut);
        let j: Json = serde_json::from_str(&j).unwrap();
        assert_eq!(j["code"], MASK);
        assert_eq!(j["nested"]["Client_Secret"], MASK);
        assert_eq!(j["nested"]["keep"], "x");
        assert!(!j.to_string().contains("s3cret"));
    }

    #[test]
    fn the_text_is_the_json_of_the_value_and_cuts_stay_valid() {
        let mut inner = Array::new();
        inner.insert("q\"uote\\s\n", Value::from("tab\t é \u{1}"));
        inner.insert("ACCESS_TOKEN", Value::from("secret"));
        let list: Array = vec![
            Value::Int(-7),
            Value::from(1.5),
            Value::Null,
            Value::from(true),
        ]
        .into_iter()
        .collect();
        let mut p = Array::new();
        p.insert("A", Value::Arr(inner));
        p.insert("L", Value::Arr(list));
        let (j, cut) = snapshot_params(&p, 4096);
        assert!(!cut);
        let expected = serde_json::json!({
            "A": {"q\"uote\\s\n": "tab\t é \u{1}", "ACCESS_TOKEN": MASK},
            "L": [-7, 1.5, null, true],
        });
        assert_eq!(j, expected.to_string());
        // Every budget gives valid JSON, cut or not.
        for budget in 0..40 {
            let (j, cut) = snapshot_params(&p, budget);
            let parsed: Json = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{j}: {e}"));
            assert_eq!(cut, parsed != expected, "budget {budget}: {j}");
        }
    }

    #[test]
    fn a_huge_value_costs_only_the_budget() {
        let mut p = Array::new();
        p.insert("MESSAGE", Value::from("é".repeat(1_000_000)));
        for i in 0..10_000 {
            p.insert(format!("K{i}"), Value::Int(i));
        }
        let (j, cut) = snapshot_params(&p, 100);
        assert!(cut);
        let j: Json = serde_json::from_str(&j).unwrap();
        assert!(j.to_string().len() < 200, "{j}");
        assert!(j["MESSAGE"].as_str().unwrap().ends_with(CUT));
    }

    /// PHP turns a stray `[`, a `.` or a space after a parameter's name into `_`: `auth[=T`
    /// arrives as `auth_`, and its value is the token all the same.
    #[test]
    fn php_mangled_spellings_of_masked_names_are_masked() {
        let mut p = Array::new();
        for (key, secret) in [
            ("auth_", "S1"),
            ("AUTH_x", "S2"),
            ("access_token_", "S3"),
            ("client_secret_y", "S4"),
            ("ap_", "S5"),
        ] {
            p.insert(key, Value::from(secret));
        }
        for (key, kept) in [("author", "K1"), ("apx", "K2"), ("codex", "K3")] {
            p.insert(key, Value::from(kept));
        }
        let (j, _) = snapshot_params(&p, 4096);
        for secret in ["S1", "S2", "S3", "S4", "S5"] {
            assert!(!j.contains(secret), "{secret} in {j}");
        }
        for kept in ["K1", "K2", "K3"] {
            assert!(j.contains(kept), "{kept} masked in {j}");
        }
        // In a batch command, by the name PHP makes of it.
        let mut cmd = Array::new();
        cmd.insert(
            "g",
            Value::from(
                "im.notify.get?auth.=S6&auth%20x=S7& auth=S8&auth%5B=S9&auth%00x=S10&authx=K4",
            ),
        );
        let mut p = Array::new();
        p.insert("cmd", Value::Arr(cmd));
        let (j, _) = snapshot_params(&p, 4096);
        for secret in ["S6", "S7", "S8", "S9", "S10"] {
            assert!(!j.contains(secret), "{secret} in {j}");
        }
        assert!(j.contains("K4"), "{j}");
        // Text already written as JSON is walked, and masked, when it names such a key.
        let text = Value::json(Value::map([("auth_", Value::from("S10"))]).to_bitrix_json());
        let (j, _) = snapshot(&Value::list([text]), 4096);
        assert!(!j.contains("S10"), "{j}");
    }

    #[test]
    fn secrets_in_batch_commands_are_masked() {
        let mut cmd = Array::new();
        cmd.insert(
            "g",
            Value::from(
                "im.notify.get?LIMIT=1&auth=S1&ACCESS_TOKEN=S2&a%75th=S3&password[x]=S4&code",
            ),
        );
        cmd.insert("h", Value::from("im.notify.get?LIMIT=2"));
        cmd.insert("n", Value::from("user.current"));
        let mut p = Array::new();
        p.insert("halt", Value::Int(0));
        p.insert("cmd", Value::Arr(cmd));
        p.insert("note", Value::from("x?auth=kept: not a command"));
        let (j, _) = snapshot_params(&p, 4096);
        for secret in ["S1", "S2", "S3", "S4"] {
            assert!(!j.contains(secret), "{secret} in {j}");
        }
        let v: Json = serde_json::from_str(&j).unwrap();
        assert_eq!(
            v["cmd"]["g"],
            "im.notify.get?LIMIT=1&auth=***&ACCESS_TOKEN=***&a%75th=***&password[x]=***&code=***"
        );
        assert_eq!(v["cmd"]["h"], "im.notify.get?LIMIT=2");
        assert_eq!(v["cmd"]["n"], "user.current");
        assert_eq!(v["note"], "x?auth=kept: not a command");
    }

    #[test]
    fn masked_member_names_are_found_in_json_text_as_in_its_tree() {
        // The exact answer: some member name, at any depth, is masked.
        fn in_tree(j: &Json) -> bool {
            match j {
                Json::Object(m) => m.iter().any(|(k, v)| is_masked(k) || in_tree(v)),
                Json::Array(a) => a.iter().any(in_tree),
                _ => false,
            }
        }
        for text in [
            r#"{"id":1,"AUTH":"x"}"#,
            r#"{"id":1,"author":"x"}"#,
            r#"{"xauth":1}"#,
            r#"{"a":{"Channel_ID":"c"}}"#,
            r#"{"code":"","b":2}"#,
            r#"{"text":"\"auth\": no","n":[1,2]}"#,
            r#"{"text":"code_x","n":"auth"}"#,
            r#"{"":1,"ap":2}"#,
            r#"{"very_long_member_name_ap":1}"#,
            r#"{"auth_":"T"}"#,
            r#"{"auth x":"T","b":1}"#,
            r#"{"Refresh_Token_x":"T"}"#,
            r#"{"ap_":1,"apx":2}"#,
            r#"{"a\"":{"b":[{"c":{"password":1}}]}}"#,
            r#"[{"x":"\":"},{"ACCESS_TOKEN":null}]"#,
            r#"[1,"auth",{"k":"v"}]"#,
            "{}",
            "1",
        ] {
            let j: Json = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(names_masked_key(text), in_tree(&j), "{text}");
        }
    }

    #[test]
    fn json_text_is_copied_within_budget_and_masked_keys_still_masked() {
        let item = |i: i64| {
            Value::map([
                ("id", Value::Int(i)),
                ("author_id", Value::Int(3)),
                ("text", Value::from("a</b> & é")),
            ])
        };
        let tree = Value::list((0..20).map(item));
        let spliced = Value::list((0..20).map(|i| Value::json(item(i).to_bitrix_json())));
        // Within budget: the same data as the tree's snapshot.
        let (a, cut_a) = snapshot(&tree, 1 << 20);
        let (b, cut_b) = snapshot(&spliced, 1 << 20);
        assert!(!cut_a && !cut_b);
        let a: Json = serde_json::from_str(&a).unwrap();
        let b: Json = serde_json::from_str(&b).unwrap_or_else(|e| panic!("{b}: {e}"));
        assert_eq!(a, b);
        // Over budget: valid JSON, cut, and bounded.
        for budget in [0, 10, 100, 200] {
            let (j, cut) = snapshot(&spliced, budget);
            let parsed: Json = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{j}: {e}"));
            assert!(cut, "{budget}: {parsed}");
            assert!(j.len() <= 2 * budget + 64, "{budget}: {j}");
        }
        // A masked key inside the text is masked as in the tree.
        let secret = Value::json(
            Value::map([
                ("Access_Token", Value::from("s3cret")),
                ("authx", Value::Int(1)),
            ])
            .to_bitrix_json(),
        );
        let (j, _) = snapshot(&Value::list([secret]), 4096);
        assert!(!j.contains("s3cret"), "{j}");
        let j: Json = serde_json::from_str(&j).unwrap();
        assert_eq!(j[0]["Access_Token"], MASK);
        assert_eq!(j[0]["authx"], 1);
    }
}
