//! The request journal: the last `journal.capacity` REST calls, newest last, in a bounded ring.
//!
//! Recording is cheap by construction: parameters and results are copied through
//! [`snapshot`], which stops after a byte budget (so an 8 MB request costs at most
//! `journal.entry_bytes` here), and credentials are masked on the way. Pushing is one short
//! lock on the ring.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{Map, Value as Json};

use crate::value::{Array, Value};

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
];

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
}

impl Journal {
    pub fn new(capacity: usize, entry_bytes: usize) -> Journal {
        Journal {
            capacity,
            entry_bytes,
            next_id: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
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

    /// Matching entries, newest (highest id) first. Only the entries returned are copied: the
    /// admin page polls with a small `limit`, and copying the whole ring (up to `capacity` ×
    /// twice `entry_bytes`) for each poll would cost far more than the answer.
    pub fn list(&self, filter: &Filter) -> Vec<Entry> {
        let ring = self.lock();
        let mut out: Vec<&Entry> = ring
            .iter()
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
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `params` as JSON text with credentials masked, cut off after about `budget` bytes of keys
/// and values. The second value says whether anything was cut. The cost is bounded by the
/// budget, not by the size of `params`, and the text is at most twice the budget (JSON
/// escaping can grow a string; past that the whole is replaced by a marker).
pub fn snapshot_params(params: &Array, budget: usize) -> (String, bool) {
    let mut left = budget;
    let mut cut = false;
    let json = array(params, &mut left, &mut cut);
    text(&json, budget, cut)
}

/// [`snapshot_params`] for any value (a method's result).
pub fn snapshot(value: &Value, budget: usize) -> (String, bool) {
    let mut left = budget;
    let mut cut = false;
    let json = walk(value, &mut left, &mut cut);
    text(&json, budget, cut)
}

fn text(json: &Json, budget: usize, cut: bool) -> (String, bool) {
    let t = json.to_string();
    if t.len() > budget.saturating_mul(2).max(64) {
        return (format!("\"{CUT}\""), true);
    }
    (t, cut)
}

/// What a cut-off container ends with.
pub const CUT: &str = "…";

fn walk(v: &Value, left: &mut usize, cut: &mut bool) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => {
            *left = left.saturating_sub(8);
            Json::from(*i)
        }
        Value::Float(f) => {
            *left = left.saturating_sub(8);
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        Value::Str(s) => Json::String(take(s, left, cut)),
        Value::Arr(a) => array(a, left, cut),
    }
}

fn array(a: &Array, left: &mut usize, cut: &mut bool) -> Json {
    if a.is_list() {
        let mut out = Vec::new();
        for v in a.values() {
            if *left == 0 {
                *cut = true;
                out.push(Json::String(CUT.to_owned()));
                break;
            }
            out.push(walk(v, left, cut));
        }
        Json::Array(out)
    } else {
        let mut out = Map::new();
        for (k, v) in a.iter() {
            if *left == 0 {
                *cut = true;
                out.insert(CUT.to_owned(), Json::Bool(true));
                break;
            }
            let key = take(&k.as_string(), left, cut);
            let value = if is_masked(&key) {
                Json::String(MASK.to_owned())
            } else {
                walk(v, left, cut)
            };
            out.insert(key, value);
        }
        Json::Object(out)
    }
}

fn is_masked(key: &str) -> bool {
    MASKED.iter().any(|m| m.eq_ignore_ascii_case(key))
}

/// At most `left` bytes of `s`, on a character boundary.
fn take(s: &str, left: &mut usize, cut: &mut bool) -> String {
    if s.len() <= *left {
        *left -= s.len();
        return s.to_owned();
    }
    *cut = true;
    let mut end = *left;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    *left = 0;
    format!("{}{CUT}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
