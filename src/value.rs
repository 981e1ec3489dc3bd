//! A PHP-like value: the one data type that parameters, references and results share.
//!
//! Bitrix24 is written in PHP, and its wire behaviour follows PHP arrays: ordered maps whose keys are
//! integers or strings. Decoded parameters, `$result[...]` batch references and method results all
//! use this type, and the PHP coercions (`intval`, `empty()`, `trim`) live here so there is exactly
//! one copy of them.

use indexmap::IndexMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

/// A PHP array key. Strings that look like canonical decimal integers become integers, as in PHP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    /// Builds a key the way PHP does for `$a["..."]`: `"5"` is the integer 5, `"05"` stays a string.
    pub fn from_php_str(s: &str) -> Key {
        match canonical_int(s) {
            Some(i) => Key::Int(i),
            None => Key::Str(s.to_owned()),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Key::Int(i) => i.to_string(),
            Key::Str(s) => s.clone(),
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Key {
        Key::from_php_str(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        match canonical_int(&s) {
            Some(i) => Key::Int(i),
            None => Key::Str(s),
        }
    }
}

impl From<i64> for Key {
    fn from(i: i64) -> Key {
        Key::Int(i)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => f.write_str(s),
        }
    }
}

/// PHP's ZEND_HANDLE_NUMERIC_STR: an optional `-`, no leading zeros, fits in i64, not `-0`.
fn canonical_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if s == "-0" {
        return None;
    }
    s.parse::<i64>().ok()
}

/// How [`Array`] hashes its keys: foldhash, seeded at random per map. std's SipHash was 6 % of
/// the instructions of an `im.notify.system.add` (issue 15: about 55 keys hashed per call);
/// foldhash keeps a random seed, so keys chosen by a client cannot be aimed at one bucket
/// ahead of time, and the parameter count is bounded anyway (`limits`).
type KeyHasher = foldhash::fast::RandomState;

/// An ordered PHP array.
///
/// The entries sit behind an `Arc` and are copied on the first write (as PHP's own arrays are),
/// so a clone costs O(1) whatever the size. A batch's `$result[..]` reference therefore shares
/// the earlier command's answer instead of deep-copying it once per reference (issue 10).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Array {
    map: Arc<IndexMap<Key, Value, KeyHasher>>,
    next_index: i64,
}

impl Array {
    pub fn new() -> Array {
        Array::default()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `$a[$k] = $v`: an existing key keeps its position, as in PHP.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) {
        let key = key.into();
        if let Key::Int(i) = key {
            if i >= self.next_index {
                self.next_index = i.saturating_add(1);
            }
        }
        Arc::make_mut(&mut self.map).insert(key, value);
    }

    /// `$a[] = $v`.
    pub fn push(&mut self, value: Value) {
        let k = self.next_index;
        self.insert(Key::Int(k), value);
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &Key) -> Option<&mut Value> {
        Arc::make_mut(&mut self.map).get_mut(key)
    }

    /// Looks up a string key with PHP key semantics (`"0"` finds the integer key 0).
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.map.get(&Key::from_php_str(key))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get_str(key).is_some()
    }

    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let key = Key::from_php_str(key);
        if !self.map.contains_key(&key) {
            return None;
        }
        Arc::make_mut(&mut self.map).shift_remove(&key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.map.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.map.values()
    }

    /// PHP's list test (`array_is_list`): keys are exactly 0..n-1 in order.
    pub fn is_list(&self) -> bool {
        self.map
            .keys()
            .enumerate()
            .all(|(i, k)| *k == Key::Int(i as i64))
    }

    /// `array_change_key_case($a, CASE_UPPER)`: a later spelling of the same key overwrites the
    /// value but the first spelling's position is kept, as PHP's hash update does.
    pub fn upper_case_keys(&self) -> Array {
        let mut out = Array::new();
        for (k, v) in self.map.iter() {
            let key = match k {
                Key::Int(i) => Key::Int(*i),
                Key::Str(s) => Key::from_php_str(&s.to_uppercase()),
            };
            out.insert(key, v.clone());
        }
        out
    }

    /// Overlays `other` onto `self` key by key at the top level (the body-wins merge of §1.4).
    pub fn overlay(&mut self, other: Array) {
        let entries = Arc::try_unwrap(other.map).unwrap_or_else(|shared| (*shared).clone());
        for (k, v) in entries {
            self.insert(k, v);
        }
    }
}

impl FromIterator<(Key, Value)> for Array {
    fn from_iter<T: IntoIterator<Item = (Key, Value)>>(iter: T) -> Array {
        let mut a = Array::new();
        for (k, v) in iter {
            a.insert(k, v);
        }
        a
    }
}

impl FromIterator<Value> for Array {
    fn from_iter<T: IntoIterator<Item = Value>>(iter: T) -> Array {
        let mut a = Array::new();
        for v in iter {
            a.push(v);
        }
        a
    }
}

/// A PHP value as it travels through the REST layer.
#[derive(Debug, Clone, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Array),
    /// A value kept as its Bitrix24 JSON text (see [`RawJson`]).
    Json(Arc<RawJson>),
}

/// A value already encoded as Bitrix24 JSON (§1.9), for answers written straight to text
/// (issue 15 goal 3: `im.notify.get` writes its notifications without building a tree each).
///
/// The JSON encoder splices the text as it is; everything else (the XML transport, batch
/// references, PHP coercions, comparisons) reads the tree, parsed back from the text on first
/// use. Parsing Bitrix24 JSON back as `json_decode($s, true)` does gives the same tree the text
/// was written from, so both transports answer the same bytes as with the tree.
#[derive(Debug)]
pub struct RawJson {
    json: String,
    tree: OnceLock<Value>,
}

impl RawJson {
    /// `json` must be what [`Value::to_bitrix_json`] writes for some value; a text that does
    /// not parse reads as null.
    pub fn new(json: String) -> RawJson {
        RawJson {
            json,
            tree: OnceLock::new(),
        }
    }

    /// The encoded text.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The value the text encodes, parsed on the first call.
    pub fn value(&self) -> &Value {
        self.tree.get_or_init(|| {
            serde_json::from_str::<serde_json::Value>(&self.json)
                .map(Value::from_json)
                .unwrap_or(Value::Null)
        })
    }
}

/// Values compare as PHP arrays would: a [`Value::Json`] equals the tree its text encodes.
impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self.tree(), other.tree()) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Arr(a), Value::Arr(b)) => a == b,
            _ => false,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<Array> for Value {
    fn from(a: Array) -> Value {
        Value::Arr(a)
    }
}

impl Value {
    /// An empty PHP array.
    pub fn empty_array() -> Value {
        Value::Arr(Array::new())
    }

    /// Builds a map from string keys, keeping their order.
    pub fn map<K: Into<Key>>(pairs: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Arr(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn list(items: impl IntoIterator<Item = Value>) -> Value {
        Value::Arr(items.into_iter().collect())
    }

    /// Already-encoded JSON text as a value.
    pub fn json(text: String) -> Value {
        Value::Json(Arc::new(RawJson::new(text)))
    }

    /// The value itself, or for [`Value::Json`] the tree its text encodes.
    pub fn tree(&self) -> &Value {
        match self {
            Value::Json(r) => r.value(),
            v => v,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self.tree() {
            Value::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self.tree() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.tree(), Value::Null)
    }

    /// Walks `$v[k1][k2]...`, returning `None` at the first missing step.
    pub fn get_path(&self, path: &[Key]) -> Option<&Value> {
        let mut cur = self;
        for k in path {
            cur = cur.as_array()?.get(k)?;
        }
        Some(cur)
    }

    /// PHP `empty()`: null, false, 0, 0.0, `""`, `"0"` and `[]` are empty.
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Int(i) => *i == 0,
            Value::Float(f) => *f == 0.0,
            Value::Str(s) => s.is_empty() || s == "0",
            Value::Arr(a) => a.is_empty(),
            Value::Json(r) => r.value().is_empty(),
        }
    }

    /// PHP truthiness, the inverse of `empty()`.
    pub fn is_truthy(&self) -> bool {
        !self.is_empty()
    }

    /// PHP `intval`: leading whitespace and sign, then digits; `"12abc"` is 12, `"abc"` is 0,
    /// floats truncate toward zero, a non-empty array is 1.
    pub fn intval(&self) -> i64 {
        match self {
            Value::Null => 0,
            Value::Bool(b) => *b as i64,
            Value::Int(i) => *i,
            Value::Float(f) => float_to_int(*f),
            Value::Str(s) => str_intval(s),
            Value::Arr(a) => !a.is_empty() as i64,
            Value::Json(r) => r.value().intval(),
        }
    }

    /// PHP string conversion of a scalar (`strval`). Arrays become `"Array"`, as PHP prints them.
    pub fn to_php_string(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(true) => "1".to_owned(),
            Value::Bool(false) => String::new(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => php_float_string(*f),
            Value::Str(s) => s.clone(),
            Value::Arr(_) => "Array".to_owned(),
            Value::Json(r) => r.value().to_php_string(),
        }
    }

    /// Whether this value is a scalar PHP would accept where a string is expected.
    pub fn is_scalar(&self) -> bool {
        !matches!(self.tree(), Value::Arr(_) | Value::Null)
    }

    /// About how many bytes the JSON encoding of this value takes, before escaping: strings
    /// count their UTF-8 length plus quotes, keys likewise, numbers their width. It stops
    /// counting once `cap` is passed and then returns a value above `cap`, so measuring an
    /// attacker's array costs at most O(`cap`) steps. Budgets (batch answers, issue 10) use it.
    pub fn approx_json_len(&self, cap: usize) -> usize {
        fn walk(v: &Value, cap: usize, acc: &mut usize) {
            if *acc > cap {
                return;
            }
            match v {
                Value::Null | Value::Bool(_) => *acc += 5,
                Value::Int(_) | Value::Float(_) => *acc += 12,
                Value::Str(s) => *acc += s.len() + 2,
                Value::Json(r) => *acc += r.json().len(),
                Value::Arr(a) => {
                    *acc += 2;
                    for (k, v) in a.iter() {
                        *acc += match k {
                            Key::Int(_) => 8,
                            Key::Str(s) => s.len() + 3,
                        } + 1;
                        walk(v, cap, acc);
                        if *acc > cap {
                            return;
                        }
                    }
                }
            }
        }
        let mut acc = 0;
        walk(self, cap, &mut acc);
        acc
    }

    /// Counts this value's nodes (itself, every array entry at any depth), stopping once `cap`
    /// is passed: a cheap bound on how much work a normaliser would do with it.
    pub fn node_count(&self, cap: usize) -> usize {
        fn walk(v: &Value, cap: usize, acc: &mut usize) {
            *acc += 1;
            if let Value::Arr(a) = v.tree() {
                for v in a.values() {
                    if *acc > cap {
                        return;
                    }
                    walk(v, cap, acc);
                }
            }
        }
        let mut acc = 0;
        walk(self, cap, &mut acc);
        acc
    }

    /// Converts a `serde_json` value the way PHP's `json_decode($s, true)` would: objects become
    /// arrays with numeric-string keys turned into integers.
    pub fn from_json(j: serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => {
                Value::Arr(items.into_iter().map(Value::from_json).collect())
            }
            serde_json::Value::Object(obj) => Value::Arr(
                obj.into_iter()
                    .map(|(k, v)| (Key::from(k), Value::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Parses JSON text straight into a value as PHP's `json_decode($text, true)` does, with
    /// [`Value::from_json`]'s rules (numeric-string keys become integers; a later duplicate key
    /// replaces the value in the first one's place; integers beyond `i64` become floats) but
    /// without building a `serde_json::Value` first: that tree and its conversion were about
    /// 5 % of an `im.notify.system.add` (issue 15). serde_json's own limits (nesting depth 128)
    /// apply.
    ///
    /// A number too large for a float (`1e400`, a 400-digit integer) is `INF` (`-INF`) as in
    /// PHP, where serde_json refuses the whole text: such a text is parsed a second time with
    /// those numbers written as `0` and read back as infinities, so the first parse of every
    /// other text costs nothing extra.
    pub fn parse_json(text: &str) -> serde_json::Result<Value> {
        let err = match serde_json::from_str(text) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some((patched, infinite)) = overflowing_numbers(text) else {
            return Err(err);
        };
        let overflows = Overflows {
            infinite,
            seen: std::cell::Cell::new(0),
            used: std::cell::Cell::new(0),
        };
        let mut de = serde_json::Deserializer::from_str(&patched);
        let v = serde::de::DeserializeSeed::deserialize(Seed(Some(&overflows)), &mut de)?;
        de.end()?;
        Ok(v)
    }

    /// Serialises as Bitrix24's JSON encoder does (§1.9): the list/map rule, `\/`, the HTML
    /// characters `<>&'"` escaped as `\u00XX`, U+2028 and U+2029 as `\u2028` and `\u2029`,
    /// other non-ASCII text left as UTF-8, and floats as PHP's `json_encode` writes them.
    pub fn to_bitrix_json(&self) -> String {
        let mut out = String::with_capacity(64);
        write_json(self, &mut out, JsonStyle::Bitrix);
        out
    }

    /// Serialises as PHP `json_encode($v, JSON_UNESCAPED_UNICODE)`: `/` is `\/`, but quotes and
    /// HTML characters are written plainly. This is the form whose size ATTACH limits measure.
    pub fn to_php_json(&self) -> String {
        let mut out = String::with_capacity(64);
        write_json(self, &mut out, JsonStyle::Php);
        out
    }
}

fn float_to_int(f: f64) -> i64 {
    if f.is_finite() && f > i64::MIN as f64 && f < i64::MAX as f64 {
        f.trunc() as i64
    } else {
        0
    }
}

fn str_intval(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0B', '\x0C']);
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        i = 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_end = i;
    let mut is_float = false;
    if i < b.len() && b[i] == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        is_float = true;
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    if int_end == int_start && !is_float {
        return 0;
    }
    // PHP 8 reads a numeric prefix with its exponent, so "1e3" is 1000.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            is_float = true;
            i = j;
        }
    }
    if is_float {
        return float_to_int(t[..i].parse::<f64>().unwrap_or(0.0));
    }
    match t[..int_end].parse::<i64>() {
        Ok(v) => v,
        // Overflow saturates, as PHP's conversion does.
        Err(_) if b.first() == Some(&b'-') => i64::MIN,
        Err(_) => i64::MAX,
    }
}

/// PHP's `(string)$float` (also `strval`, `echo`, string concatenation, `str_replace` on a
/// float, `http_build_query`): `precision` = 14 significant digits, correctly rounded, trailing
/// zeros dropped, exponent notation with `E` from 10^15 up or below 10^-4 (`0.1 + 0.2` is
/// `"0.3"`, `1e15` is `"1.0E+15"`, `1e-5` is `"1.0E-5"`), and `INF`, `-INF`, `NAN`.
pub fn php_float_string(f: f64) -> String {
    php_gcvt(f, Some(14), 'E')
}

/// PHP's `zend_gcvt`: `value` to `digits` significant digits (`None`: the shortest form that
/// reads back as the same float, PHP's `serialize_precision = -1`, laid out as if 17 digits
/// were asked for). Fixed notation while the decimal exponent fits the digits asked for (and
/// the number is at least 10^-4); otherwise one digit, `.`, the rest (at least `0`), `exp`, a
/// sign and the exponent without padding.
fn php_gcvt(value: f64, digits: Option<usize>, exp: char) -> String {
    if value.is_nan() {
        return "NAN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "INF" } else { "-INF" }.to_owned();
    }
    let ndigit = digits.unwrap_or(17) as i32;
    // The digits without trailing zeros, and where the point goes: value = 0.DIGITS × 10^decpt.
    let sci = match digits {
        None => format!("{:e}", value.abs()),
        Some(n) => format!("{:.*e}", n.max(1) - 1, value.abs()),
    };
    let (mantissa, power) = sci.split_once('e').unwrap_or((&sci, "0"));
    let mut ds: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    while ds.len() > 1 && ds.ends_with('0') {
        ds.pop();
    }
    let decpt = if ds == "0" {
        1
    } else {
        power.parse::<i32>().unwrap_or(0) + 1
    };
    let mut out = String::with_capacity(24);
    if value.is_sign_negative() {
        out.push('-');
    }
    if decpt > ndigit || decpt < -3 {
        out.push_str(&ds[..1]);
        out.push('.');
        out.push_str(if ds.len() > 1 { &ds[1..] } else { "0" });
        out.push(exp);
        out.push(if decpt - 1 < 0 { '-' } else { '+' });
        let _ = write!(out, "{}", (decpt - 1).abs());
    } else if decpt <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', decpt.unsigned_abs() as usize));
        out.push_str(&ds);
    } else {
        let whole = decpt as usize;
        if ds.len() > whole {
            out.push_str(&ds[..whole]);
            out.push('.');
            out.push_str(&ds[whole..]);
        } else {
            out.push_str(&ds);
            out.extend(std::iter::repeat_n('0', whole - ds.len()));
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum JsonStyle {
    Bitrix,
    Php,
}

fn write_json(v: &Value, out: &mut String, style: JsonStyle) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_json_float(*f, out),
        Value::Str(s) => write_json_str(s, out, style),
        Value::Json(r) if style == JsonStyle::Bitrix => out.push_str(r.json()),
        Value::Json(r) => write_json(r.value(), out, style),
        Value::Arr(a) => {
            if a.is_list() {
                out.push('[');
                for (i, item) in a.values().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json(item, out, style);
                }
                out.push(']');
            } else {
                out.push('{');
                for (i, (k, item)) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    match k {
                        Key::Int(n) => {
                            let _ = write!(out, "\"{n}\"");
                        }
                        Key::Str(s) => write_json_str(s, out, style),
                    }
                    out.push(':');
                    write_json(item, out, style);
                }
                out.push('}');
            }
        }
    }
}

/// PHP's `json_encode` of a float (§1.9): `serialize_precision = -1`, the shortest form that
/// reads back as the same float, and without `JSON_PRESERVE_ZERO_FRACTION` (Bitrix24's
/// `Json::encode` does not pass it), so `1.0` is `1` and `0.0` is `0`, as the real server's
/// `"operating":0`; exponent notation (`1.0e+17`, `1.5e-5`) from 10^17 up and below 10^-4.
/// NaN and the infinities cannot be encoded and become 0 (PHP's partial output).
fn write_json_float(f: f64, out: &mut String) {
    if !f.is_finite() {
        out.push('0');
        return;
    }
    // From 10^-4 up to 10^17 PHP writes the shortest digits in fixed notation, which is what
    // Rust's `Display` writes too (the same shortest digits `php_gcvt` takes from `{:e}`): one
    // formatting call instead of a string to take apart. Every answer's `time` block has five
    // such floats; the long way was 3.5 % of an add's instructions (issue 15).
    if f == 0.0 || (1e-4..1e17).contains(&f.abs()) {
        let _ = write!(out, "{f}");
        return;
    }
    out.push_str(&php_gcvt(f, None, 'e'));
}

/// The bytes [`write_json_str`] may escape, in either style: control characters, `"`, `\\`,
/// `/`, `<`, `>`, `&`, `'`, and 0xE2, which starts U+2028 and U+2029.
const MAY_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    let mut i = 0;
    let others = *b"\"\\/<>&'\xE2";
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
};

fn write_json_str(s: &str, out: &mut String, style: JsonStyle) {
    out.push('"');
    // Runs of characters that need no escape are copied whole (a char-by-char push was a tenth
    // of an im.notify.get, issue 15 goal 3). The escaped characters are ASCII, and U+2028 and
    // U+2029 (UTF-8 `E2 80 A8`/`E2 80 A9`), which PHP's `json_encode` writes as `\u2028` and
    // `\u2029` unless given `JSON_UNESCAPED_LINE_TERMINATORS`: Bitrix24's `Json::encode`
    // passes `JSON_UNESCAPED_UNICODE` only, so every other non-ASCII character stays UTF-8.
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // A table lookup per byte until one that may need an escape in either style.
        while i < bytes.len() && !MAY_ESCAPE[usize::from(bytes[i])] {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let (escape, width): (&str, usize) = match b {
            b'"' if style == JsonStyle::Bitrix => ("\\u0022", 1),
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            b'/' => ("\\/", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0x08 => ("\\b", 1),
            0x0C => ("\\f", 1),
            b'<' if style == JsonStyle::Bitrix => ("\\u003C", 1),
            b'>' if style == JsonStyle::Bitrix => ("\\u003E", 1),
            b'&' if style == JsonStyle::Bitrix => ("\\u0026", 1),
            b'\'' if style == JsonStyle::Bitrix => ("\\u0027", 1),
            b if b < 0x20 => ("", 1),
            0xE2 if bytes.get(i + 1) == Some(&0x80) => match bytes.get(i + 2) {
                Some(0xA8) => ("\\u2028", 3),
                Some(0xA9) => ("\\u2029", 3),
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        i += width;
        run = i;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Writes `s` as a Bitrix24 JSON string (§1.9), quotes included, for text written straight
/// to JSON; the same bytes as [`Value::to_bitrix_json`] of `Value::Str(s)`.
pub fn push_bitrix_json_str(s: &str, out: &mut String) {
    write_json_str(s, out, JsonStyle::Bitrix);
}

/// Writes a parsed JSON document as Bitrix24 JSON: the same bytes as
/// `Value::from_json(j).to_bitrix_json()`, without building the [`Value`] (numeric-string keys
/// are written as they are, which is how their integer keys print; an object whose keys are
/// `"0"`..`"n-1"` in order, or an empty one, is a list).
pub fn push_bitrix_json_of(j: &serde_json::Value, out: &mut String) {
    match j {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => {
                let _ = write!(out, "{i}");
            }
            None => write_json_float(n.as_f64().unwrap_or(0.0), out),
        },
        serde_json::Value::String(s) => write_json_str(s, out, JsonStyle::Bitrix),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_bitrix_json_of(item, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(obj) => {
            let is_list = obj
                .keys()
                .enumerate()
                .all(|(i, k)| Key::from_php_str(k) == Key::Int(i as i64));
            out.push(if is_list { '[' } else { '{' });
            for (i, (k, item)) in obj.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !is_list {
                    write_json_str(k, out, JsonStyle::Bitrix);
                    out.push(':');
                }
                push_bitrix_json_of(item, out);
            }
            out.push(if is_list { ']' } else { '}' });
        }
    }
}

/// Appends `php`, JSON as [`Value::to_php_json`] writes it, as Bitrix24 JSON: the same bytes
/// as `push_bitrix_json_of(&serde_json::from_str(php)?)`, without building a tree. The two
/// styles differ only in how strings escape `"`, `<`, `>`, `&` and `'` (§1.9), so a valid
/// document in that canonical form is rewritten byte by byte. An ATTACH is stored in it, and
/// parsing it into a tree for every `im.notify.get` was over half of the call (issue 15
/// goal 3).
///
/// Returns `false`, appending nothing, when `php` is not valid JSON or holds anything that the
/// tree would write differently: whitespace, a `\u` escape other than a control character's,
/// an unescaped `/`, an integer outside `i64`, a float not written as `write_json_float`
/// writes it, `{}`, or an object whose first key is `"0"` (a list candidate). The caller then
/// takes the tree's path. Objects with a repeated key are not detected (the tree keeps the
/// last value): `to_php_json` never writes one.
pub fn push_bitrix_json_from_php(php: &str, out: &mut String) -> bool {
    if serde_json::from_str::<serde::de::IgnoredAny>(php).is_err() {
        return false;
    }
    let start = out.len();
    if transcode_php_json(php, out) {
        true
    } else {
        out.truncate(start);
        false
    }
}

/// [`push_bitrix_json_from_php`]'s rewrite of a document already known to be valid JSON.
fn transcode_php_json(php: &str, out: &mut String) -> bool {
    let b = php.as_bytes();
    let mut i = 0;
    // Bytes from `run` to `i` are copied as they are when the next rewrite or the end comes.
    let mut run = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                loop {
                    let escape = match b[i] {
                        b'"' => break,
                        b'\\' => match b[i + 1] {
                            b'"' => "\\u0022",
                            b'\\' | b'/' | b'n' | b'r' | b't' | b'b' | b'f' => {
                                i += 2;
                                continue;
                            }
                            // U+2028 and U+2029, which both styles escape so.
                            b'u' if matches!(&b[i + 2..i + 6], b"2028" | b"2029") => {
                                i += 6;
                                continue;
                            }
                            b'u' => {
                                // Only a control character without a short escape, in lower
                                // case hex, is written as `\u00xx` by both styles.
                                let hex = &b[i + 2..i + 6];
                                let code = u8::from_str_radix(&php[i + 2..i + 6], 16).ok();
                                let lower = hex.iter().all(|h| !h.is_ascii_uppercase());
                                match code {
                                    Some(c @ 0..0x20)
                                        if lower && !matches!(c, 0x08..=0x0A | 0x0C | 0x0D) =>
                                    {
                                        i += 6;
                                        continue;
                                    }
                                    _ => return false,
                                }
                            }
                            _ => return false,
                        },
                        b'/' => return false,
                        b'<' => "\\u003C",
                        b'>' => "\\u003E",
                        b'&' => "\\u0026",
                        b'\'' => "\\u0027",
                        // Raw U+2028/U+2029 (UTF-8 `E2 80 A8`/`A9`), as stored before
                        // `to_php_json` escaped them: the tree escapes them.
                        0xE2 if b[i + 1] == 0x80 && b[i + 2] == 0xA8 => "\\u2028",
                        0xE2 if b[i + 1] == 0x80 && b[i + 2] == 0xA9 => "\\u2029",
                        _ => {
                            i += 1;
                            continue;
                        }
                    };
                    out.push_str(&php[run..i]);
                    out.push_str(escape);
                    // `\"` is two bytes, a line separator three, the others one.
                    i += match b[i] {
                        b'\\' => 2,
                        0xE2 => 3,
                        _ => 1,
                    };
                    run = i;
                }
                i += 1;
            }
            b'{' => {
                if b[i + 1] == b'}' || b[i + 1..].starts_with(b"\"0\"") {
                    return false;
                }
                i += 1;
            }
            b'[' | b']' | b'}' | b',' | b':' => i += 1,
            b't' | b'f' | b'n' => {
                while i < b.len() && b[i].is_ascii_lowercase() {
                    i += 1;
                }
            }
            b'-' | b'0'..=b'9' => {
                let s = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let number = &php[s..i];
                if number.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
                    let mut canonical = String::new();
                    write_json_float(number.parse().unwrap_or(f64::NAN), &mut canonical);
                    if canonical != number {
                        return false;
                    }
                } else if number == "-0" || number.parse::<i64>().is_err() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    out.push_str(&php[run..]);
    true
}

/// PHP `trim()` with its default character set.
pub fn php_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0B'])
}

/// The JSON number tokens of `text` (outside strings) that overflow a float, replaced by `0`:
/// the patched text, and each such number's place among all the number tokens (in document
/// order, the order a parser reads them) with its value, `INF` or `-INF`. `None` when there is
/// none. A token that is not a JSON number is left alone, so a text that is not JSON stays so.
fn overflowing_numbers(text: &str) -> Option<(String, Vec<(usize, f64)>)> {
    let b = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut found = Vec::new();
    let (mut in_string, mut escaped) = (false, false);
    let mut ordinal = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if c != b'-' && !c.is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            i += 1;
        }
        let token = &text[start..i];
        if !is_json_number(token) {
            continue;
        }
        let at = ordinal;
        ordinal += 1;
        let Ok(f) = token.parse::<f64>() else {
            continue;
        };
        if f.is_infinite() {
            found.push((at, f));
            out.push_str(&text[copied..start]);
            out.push('0');
            copied = i;
        }
    }
    if found.is_empty() {
        return None;
    }
    out.push_str(&text[copied..]);
    Some((out, found))
}

/// RFC 8259's `number`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(t: &str) -> bool {
    let b = t.strip_prefix('-').unwrap_or(t).as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int = digits(0);
    if int == 0 || (int > 1 && b[0] == b'0') {
        return false;
    }
    let mut i = int;
    if b.get(i) == Some(&b'.') {
        let frac = digits(i + 1);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(i);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
}

/// The numbers [`Value::parse_json`]'s second parse reads as infinities: their places among
/// the text's numbers (ascending), a count of the numbers read so far, and how many of the
/// infinities were handed out, so each number costs one comparison.
struct Overflows {
    infinite: Vec<(usize, f64)>,
    seen: std::cell::Cell<usize>,
    used: std::cell::Cell<usize>,
}

impl Overflows {
    /// The value of the next number read: `read`, or the infinity its place was patched from.
    fn next(&self, read: Value) -> Value {
        let at = self.seen.get();
        self.seen.set(at + 1);
        match self.infinite.get(self.used.get()) {
            Some(&(place, f)) if place == at => {
                self.used.set(self.used.get() + 1);
                Value::Float(f)
            }
            _ => read,
        }
    }
}

/// JSON (or any self-describing format) into a [`Value`], as [`Value::from_json`] converts.
impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(Seed(None), d)
    }
}

/// [`Value`]'s deserialisation, with the numbers to read as infinities when there are any.
#[derive(Clone, Copy)]
struct Seed<'a>(Option<&'a Overflows>);

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor(self))
    }
}

struct ValueVisitor<'a>(Seed<'a>);

impl ValueVisitor<'_> {
    fn number(&self, v: Value) -> Value {
        match self.0 .0 {
            Some(o) => o.next(v),
            None => v,
        }
    }
}

impl<'de> serde::de::Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self.0, d)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(self.number(Value::Int(i)))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(self.number(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int)))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(self.number(Value::Float(f)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut a = Array::new();
        while let Some(v) = seq.next_element_seed(self.0)? {
            a.push(v);
        }
        Ok(Value::Arr(a))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut a = Array::new();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let v = map.next_value_seed(self.0)?;
            a.insert(Key::from(&*k), v);
        }
        Ok(Value::Arr(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree's bytes for a stored document, as `im.notify.get` wrote them before the rewrite.
    fn via_tree(php: &str) -> Option<String> {
        let j = serde_json::from_str::<serde_json::Value>(php).ok()?;
        let mut out = String::new();
        push_bitrix_json_of(&j, &mut out);
        Some(out)
    }

    fn rewritten(php: &str) -> Option<String> {
        let mut out = String::from("prefix");
        let ok = push_bitrix_json_from_php(php, &mut out);
        let rest = out.strip_prefix("prefix").unwrap().to_owned();
        if ok {
            Some(rest)
        } else {
            assert_eq!(rest, "", "a refusal appends nothing: {php}");
            None
        }
    }

    fn arb_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = || {
            proptest::string::string_regex(
                "[a-z0-9 \"\\\\/<>&'\n\t\r\u{1}\u{8}\u{c}\u{1f}\u{7f}é✓😀\u{2028}]{0,12}",
            )
            .unwrap()
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // Not -0.0: json_encode writes `-0`, which reads back as the integer 0 (in PHP
            // too), so its tree writes `0`.
            any::<f64>()
                .prop_filter("finite, not -0", |f| {
                    f.is_finite() && !(*f == 0.0 && f.is_sign_negative())
                })
                .prop_map(Value::Float),
            (-1000i32..1000).prop_map(|n| Value::Float(f64::from(n) / 8.0)),
            text().prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            let key = prop_oneof![
                text().prop_map(Key::from),
                (0i64..4).prop_map(Key::Int),
                Just(Key::from("05")),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::list),
                proptest::collection::vec((key, inner), 0..5).prop_map(|kv| {
                    let mut a = Array::new();
                    for (k, v) in kv {
                        a.insert(k, v);
                    }
                    Value::Arr(a)
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Every document `to_php_json` writes is rewritten to the tree's bytes, or left to it.
        #[test]
        fn php_json_is_rewritten_as_the_tree_writes_it(v in arb_value()) {
            let php = v.to_php_json();
            let want = via_tree(&php).unwrap();
            proptest::prop_assert_eq!(&want, &v.to_bitrix_json());
            match rewritten(&php) {
                Some(got) => proptest::prop_assert_eq!(got, want, "{}", php),
                // The one canonical form it leaves to the tree: `{"0":` may open a list.
                None => proptest::prop_assert!(php.contains("{\"0\":"), "{}", php),
            }
        }
    }

    #[test]
    fn documents_not_in_the_php_form_are_left_to_the_tree() {
        for php in [
            "not json",
            "",
            "[1,",
            "[1] x",
            "[ 1]",
            "{\"a\": 1}",
            "{}",
            "{\"0\":\"zero\",\"1\":\"one\"}",
            "[\"\\u00e9\"]",
            "[\"\\u001F\"]",
            "[\"\\u000a\"]",
            "[\"\\ud83d\\ude00\"]",
            "[\"a/b\"]",
            "[1e300]",
            "[1E+300]",
            "[1.50]",
            "[-0]",
            "[18446744073709551615]",
            "[-9223372036854775809]",
            "[1e400]",
        ] {
            assert_eq!(rewritten(php), None, "{php}");
        }
        // What the tree makes of the valid ones is what `im.notify.get` still answers.
        assert_eq!(
            via_tree("{\"0\":\"zero\",\"1\":\"one\"}").as_deref(),
            Some("[\"zero\",\"one\"]")
        );
    }

    #[test]
    fn the_rewrite_escapes_what_bitrix24_escapes() {
        let php = r#"[{"MESSAGE":"a \"q\" <b>&'x'<\/b> \\ \u001f é","K'<":[1,-2,0.5,1.0e+20,true,null]}]"#;
        assert_eq!(
            rewritten(php).as_deref(),
            Some(
                r#"[{"MESSAGE":"a \u0022q\u0022 \u003Cb\u003E\u0026\u0027x\u0027\u003C\/b\u003E \\ \u001f é","K\u0027\u003C":[1,-2,0.5,1.0e+20,true,null]}]"#
            )
        );
        assert_eq!(rewritten(php), via_tree(php));
        // U+2028/U+2029: escaped by `to_php_json` now, raw in documents stored before.
        for php in ["[\"a\\u2028b\\u2029\"]", "[\"a\u{2028}b\u{2029}\"]"] {
            assert_eq!(
                rewritten(php).as_deref(),
                Some("[\"a\\u2028b\\u2029\"]"),
                "{php}"
            );
            assert_eq!(rewritten(php), via_tree(php), "{php}");
        }
    }

    #[test]
    fn keys_follow_php_numeric_rule() {
        assert_eq!(Key::from("5"), Key::Int(5));
        assert_eq!(Key::from("-3"), Key::Int(-3));
        assert_eq!(Key::from("05"), Key::Str("05".into()));
        assert_eq!(Key::from("-0"), Key::Str("-0".into()));
        assert_eq!(Key::from("1.5"), Key::Str("1.5".into()));
        assert_eq!(Key::from(""), Key::Str("".into()));
    }

    #[test]
    fn intval_matches_php() {
        assert_eq!(Value::from("12abc").intval(), 12);
        assert_eq!(Value::from("abc").intval(), 0);
        assert_eq!(Value::from("  -7x").intval(), -7);
        assert_eq!(Value::from(3.9).intval(), 3);
        assert_eq!(Value::Bool(true).intval(), 1);
        assert_eq!(Value::list([Value::Int(0)]).intval(), 1);
        assert_eq!(Value::empty_array().intval(), 0);
        assert_eq!(Value::Null.intval(), 0);
        assert_eq!(Value::from("1e3").intval(), 1000);
        assert_eq!(Value::from("-2.7").intval(), -2);
        assert_eq!(Value::from("+4").intval(), 4);
    }

    #[test]
    fn empty_matches_php() {
        for v in [
            Value::Null,
            Value::from(""),
            Value::from("0"),
            Value::Int(0),
            Value::Bool(false),
            Value::empty_array(),
        ] {
            assert!(v.is_empty(), "{v:?}");
        }
        for v in [Value::from("false"), Value::from("no"), Value::from(" ")] {
            assert!(v.is_truthy(), "{v:?}");
        }
    }

    #[test]
    fn parse_json_builds_what_from_json_converts() {
        for text in [
            r#"{"USER_ID":1,"MESSAGE":"a\/b \u00e9 \"q\"","5":"five","05":"str","-0":0}"#,
            r#"{"a":1,"b":2,"a":3,"7":"x","3":"y"}"#,
            r#"[1,-2,1.0,1e3,-0,9223372036854775807,9223372036854775808,18446744073709551616]"#,
            r#"{"ATTACH":{"BLOCKS":[{"GRID":[{"NAME":"n","VALUE":null,"W":true}]}],"E":{},"L":[]}}"#,
            r#"{"k\u0031":1,"\u0032":2}"#,
            r#""plain""#,
            "0.1",
        ] {
            let direct = Value::parse_json(text).unwrap();
            let via_tree = Value::from_json(serde_json::from_str(text).unwrap());
            assert_eq!(direct, via_tree, "{text}");
            assert_eq!(direct.to_bitrix_json(), via_tree.to_bitrix_json(), "{text}");
        }
        for bad in ["{", "[1,]", r#"{"a" 1}"#, r"\u0000", ""] {
            assert!(Value::parse_json(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            Value::parse_json(&deep).is_err(),
            "serde_json's depth limit still applies"
        );
    }

    #[test]
    fn json_follows_list_map_rule() {
        assert_eq!(Value::empty_array().to_bitrix_json(), "[]");
        let list = Value::list([Value::Int(1), Value::Int(2)]);
        assert_eq!(list.to_bitrix_json(), "[1,2]");
        let mut sparse = Array::new();
        sparse.insert(1i64, Value::Int(1));
        assert_eq!(Value::Arr(sparse).to_bitrix_json(), "{\"1\":1}");
        let m = Value::map([("a", Value::from("<x>/&'\"é"))]);
        assert_eq!(
            m.to_bitrix_json(),
            "{\"a\":\"\\u003Cx\\u003E\\/\\u0026\\u0027\\u0022é\"}"
        );
        assert_eq!(m.to_php_json(), "{\"a\":\"<x>\\/&'\\\"é\"}");
    }

    proptest::proptest! {
        /// The fixed-notation shortcut of `write_json_float` writes what the general path
        /// (`php_gcvt`) writes, for any float: random bit patterns and the range edges.
        #[test]
        fn json_float_shortcut_matches_the_general_path(
            bits in proptest::num::u64::ANY,
            near in 1e-4f64..1e17,
        ) {
            for f in [f64::from_bits(bits), near, -near, near.next_down(), near.next_up()] {
                let mut fast = String::new();
                write_json_float(f, &mut fast);
                let slow = if f.is_finite() { php_gcvt(f, None, 'e') } else { "0".to_owned() };
                proptest::prop_assert_eq!(fast, slow, "{:e}", f);
            }
        }
    }

    #[test]
    fn json_float_shortcut_edges_match_the_general_path() {
        for f in [
            1e-4,
            1e-4f64.next_down(),
            1e17,
            1e17f64.next_down(),
            0.0,
            -0.0,
            9.999e16,
        ] {
            let mut fast = String::new();
            write_json_float(f, &mut fast);
            assert_eq!(fast, php_gcvt(f, None, 'e'), "{f:e}");
        }
    }

    /// `json_encode` of floats with `serialize_precision = -1` and without
    /// `JSON_PRESERVE_ZERO_FRACTION`, as Bitrix24's `Json::encode` calls it.
    #[test]
    fn json_floats_are_written_as_php_json_encode_writes_them() {
        for (f, php) in [
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "-0"),
            (10.0, "10"),
            (0.25, "0.25"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e15, "1000000000000000"),
            (1e16, "10000000000000000"),
            (39_528_480_211_503_568.0, "39528480211503570"),
            (1e17, "1.0e+17"),
            (123_456_789_012_345_678.0, "1.2345678901234568e+17"),
            (1e22, "1.0e+22"),
            (-2.5e300, "-2.5e+300"),
            (1.5e-5, "1.5e-5"),
            (1e-5, "1.0e-5"),
            (0.0001, "0.0001"),
            (0.00015, "0.00015"),
            (5e-324, "5.0e-324"),
            (1_760_000_000.123456, "1760000000.123456"),
            (f64::INFINITY, "0"),
            (f64::NAN, "0"),
        ] {
            assert_eq!(Value::Float(f).to_bitrix_json(), php, "{f:e}");
            assert_eq!(Value::Float(f).to_php_json(), php, "{f:e}");
        }
    }

    /// `(string)$float`: `precision = 14`.
    #[test]
    fn floats_become_strings_as_php_casts_them() {
        for (f, php) in [
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "-0"),
            (-3.0, "-3"),
            (0.1 + 0.2, "0.3"),
            (1.0 / 3.0, "0.33333333333333"),
            (2.0 / 3.0, "0.66666666666667"),
            (29_000.712_312_3, "29000.7123123"),
            (239_234_242.712_312_3, "239234242.71231"),
            (10_000_000_000_000.0, "10000000000000"),
            (99_999_999_999_999.0, "99999999999999"),
            (1e14, "1.0E+14"),
            (100_000_000_000_001.0, "1.0E+14"),
            (123_456_789_012_345.0, "1.2345678901234E+14"),
            (999_999_999_999_999.0, "1.0E+15"),
            (1e15, "1.0E+15"),
            (1e20, "1.0E+20"),
            (2.9e17, "2.9E+17"),
            (-1.5e300, "-1.5E+300"),
            (0.0001, "0.0001"),
            (0.00001, "1.0E-5"),
            (1.25e-7, "1.25E-7"),
            (1_760_000_000.123456, "1760000000.1235"),
            (f64::INFINITY, "INF"),
            (f64::NEG_INFINITY, "-INF"),
            (f64::NAN, "NAN"),
        ] {
            assert_eq!(Value::Float(f).to_php_string(), php, "{f:e}");
        }
    }

    /// PHP's `json_decode` reads a number too large for a float as `INF` (`-INF`): the body is
    /// kept, not refused whole.
    #[test]
    fn json_numbers_beyond_a_float_are_infinities() {
        let big = format!("1{}", "0".repeat(400));
        let text = format!(
            r#"{{"USER_ID":1e400,"n":[1,-1E+999,2.5,"1e400",{big}],"e":1e-400,"MESSAGE":"m"}}"#
        );
        let v = Value::parse_json(&text).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.get_str("USER_ID"), Some(&Value::Float(f64::INFINITY)));
        assert_eq!(a.get_str("USER_ID").unwrap().intval(), 0, "intval(INF)");
        assert_eq!(a.get_str("USER_ID").unwrap().to_php_string(), "INF");
        assert_eq!(
            a.get_str("n"),
            Some(&Value::list([
                Value::Int(1),
                Value::Float(f64::NEG_INFINITY),
                Value::Float(2.5),
                Value::from("1e400"),
                Value::Float(f64::INFINITY),
            ]))
        );
        assert_eq!(a.get_str("e"), Some(&Value::Float(0.0)));
        assert_eq!(a.get_str("MESSAGE"), Some(&Value::from("m")));
        // Still JSON's grammar: no number is patched into a text that is not JSON.
        for bad in [
            "[01e400]",
            "[1e400",
            "[1e400,]",
            "{\"a\":1e400 x}",
            "[1e400e5]",
            "[.1e400]",
        ] {
            assert!(Value::parse_json(bad).is_err(), "{bad}");
        }
        assert_eq!(overflowing_numbers(r#"{"a":"1e400","b":1e308}"#), None);
    }

    /// U+2028 and U+2029 are escaped as PHP's `json_encode` escapes them without
    /// `JSON_UNESCAPED_LINE_TERMINATORS`; their neighbours in UTF-8 (`E2 80 xx`) are not.
    #[test]
    fn line_separators_are_escaped() {
        let s = "a\u{2028}b\u{2029}\u{2027}\u{202A}\u{2020}é/";
        let want = "\"a\\u2028b\\u2029\u{2027}\u{202A}\u{2020}é\\/\"";
        assert_eq!(Value::from(s).to_bitrix_json(), want);
        assert_eq!(Value::from(s).to_php_json(), want);
        let mut out = String::new();
        push_bitrix_json_str("\u{2028}", &mut out);
        assert_eq!(out, "\"\\u2028\"");
        // Read back, the text is the same string.
        let back: String = serde_json::from_str(&Value::from(s).to_bitrix_json()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn upper_case_keys_keeps_last_value() {
        let mut a = Array::new();
        a.insert("message", Value::from("a"));
        a.insert("MESSAGE", Value::from("b"));
        let up = a.upper_case_keys();
        assert_eq!(up.len(), 1);
        assert_eq!(up.get_str("MESSAGE"), Some(&Value::from("b")));
    }
}
