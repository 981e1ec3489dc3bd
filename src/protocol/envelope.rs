//! Answers: the success envelope with its `time` block (§5.1, §5.3, P5), the error envelope
//! (§5.4), and the JSON and XML transports (§1.9).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::dispatch::Executed;
use super::route::Transport;
use crate::error::ApiError;
pub use crate::state::Output;
use crate::value::{Array, Key, Value};
use imnotify_wire::envelope::{ErrorBody, Time};

/// The timing of one call, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub start: f64,
    pub finish: f64,
    /// Handler time only.
    pub processing: f64,
    /// Accumulated handler time of this (credential, method) in the operating window.
    pub operating: f64,
    pub operating_reset_at: i64,
}

/// Rounds to microseconds, the precision the real server reports.
fn micros(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Dates in Bitrix24's form; defined beside the clock so that the store's event log uses it too.
pub use crate::clock::rfc3339_local;

impl Timing {
    /// The time block of a call that started at `start` (the request's arrival for a direct
    /// call, the command's own start inside a batch) and is answered at `finish`.
    pub fn of(start: f64, finish: f64, done: &Executed) -> Timing {
        Timing {
            start,
            finish,
            processing: done.finished - done.started,
            operating: done.usage.operating,
            operating_reset_at: done.usage.reset_at_or(start),
        }
    }

    /// The wire crate's `time` block (the one shape the client reads too), rounded to
    /// microseconds.
    pub fn to_wire(&self) -> Time {
        Time {
            start: micros(self.start),
            finish: micros(self.finish),
            duration: micros(self.finish - self.start),
            processing: micros(self.processing),
            date_start: rfc3339_local(self.start),
            date_finish: rfc3339_local(self.finish),
            operating_reset_at: self.operating_reset_at,
            operating: micros(self.operating),
        }
    }

    /// The `time` object, members in the order the method page shows (`Time::MEMBERS`).
    pub fn to_value(&self) -> Value {
        let t = self.to_wire();
        let [start, finish, duration, processing, date_start, date_finish, reset_at, operating] =
            Time::MEMBERS;
        Value::map([
            (start, Value::Float(t.start)),
            (finish, Value::Float(t.finish)),
            (duration, Value::Float(t.duration)),
            (processing, Value::Float(t.processing)),
            (date_start, Value::Str(t.date_start)),
            (date_finish, Value::Str(t.date_finish)),
            (reset_at, Value::Int(t.operating_reset_at)),
            (operating, Value::Float(t.operating)),
        ])
    }
}

/// The success body: `result`, then `next` and `total` when present, then `time`.
pub fn success_value(out: Output, timing: &Timing) -> Value {
    let mut a = Array::new();
    a.insert("result", out.result);
    if let Some(n) = out.next {
        a.insert("next", Value::Int(n));
    }
    if let Some(t) = out.total {
        a.insert("total", Value::Int(t));
    }
    a.insert("time", timing.to_value());
    Value::Arr(a)
}

/// The error body, from the wire crate's `ErrorBody` (the shape the client reads).
pub fn error_value(e: &ApiError) -> Value {
    let ErrorBody {
        error,
        error_description,
    } = ErrorBody::from(e);
    Value::map([
        ("error", Value::Str(error)),
        ("error_description", Value::Str(error_description)),
    ])
}

/// Encodes `body` in the transport and attaches the headers every REST answer carries.
pub fn respond(transport: Transport, status: u16, body: &Value) -> Response {
    let (text, content_type) = match transport {
        Transport::Json => (body.to_bitrix_json(), "application/json; charset=utf-8"),
        Transport::Xml => (to_xml(body), "text/xml; charset=utf-8"),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        text,
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    add_rest_headers(h);
    resp
}

/// CORS and nosniff headers, sent on every REST answer as the real server does.
pub fn add_rest_headers(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("origin, content-type, accept"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// A response extension marking a 5xx that the server gives on purpose: a limit's refusal
/// (`QUERY_LIMIT_EXCEEDED`, `OVERLOAD_LIMIT`, the per-IP gate) or an injected fault. The
/// request log (`server`) writes these at WARN; any other 5xx is a failure, at ERROR.
#[derive(Debug, Clone, Copy)]
pub struct Refusal;

/// The error codes that are a limit's refusal rather than a failure (see [`Refusal`]).
const REFUSAL_CODES: &[&str] = &["QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"];

/// The error envelope of `e` with its HTTP status; a limit's refusal carries [`Refusal`].
pub fn error_response(transport: Transport, e: &ApiError) -> Response {
    let mut resp = respond(transport, e.status, &error_value(e));
    if REFUSAL_CODES.contains(&e.code) {
        resp.extensions_mut().insert(Refusal);
    }
    resp
}

/// The XML transport: a `<response>` root, one element per key, `<item>` for integer keys.
///
/// The document is always well-formed XML 1.0 (issue 10 §4), whatever the caller stored:
/// - a string key that is an ASCII XML name (`[A-Za-z_][A-Za-z0-9_.-]*`) is the element's name;
///   any other string key (`ª`, `1abc`, `a b`, empty) becomes `<item key="...">` with the key,
///   escaped, in an attribute, the way integer keys already are `<item>`. The mapping is
///   deterministic and loses nothing a well-formed document can carry;
/// - characters XML 1.0 cannot carry (controls other than tab, LF and CR; U+FFFE, U+FFFF) are
///   dropped from text and attribute values; CR is written as `&#13;` so parsers keep it.
pub fn to_xml(v: &Value) -> String {
    let mut out = String::from("<response>");
    // Text already written as JSON (`Value::Json`) is expanded to its tree here.
    if let Value::Arr(a) = v.tree() {
        write_xml_children(a, &mut out);
    } else {
        write_xml_scalar(v, &mut out);
    }
    out.push_str("</response>");
    out
}

fn write_xml_children(a: &Array, out: &mut String) {
    for (k, v) in a.iter() {
        let name = match k {
            Key::Str(s) if is_plain_xml_name(s) => {
                out.push('<');
                out.push_str(s);
                out.push('>');
                s.as_str()
            }
            Key::Str(s) => {
                out.push_str("<item key=\"");
                push_xml_text(s, out);
                out.push_str("\">");
                "item"
            }
            Key::Int(_) => {
                out.push_str("<item>");
                "item"
            }
        };
        match v.tree() {
            Value::Arr(inner) => write_xml_children(inner, out),
            scalar => write_xml_scalar(scalar, out),
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
}

/// A scalar as Bitrix24's XML transport writes it: `CDataXML::xmlspecialchars`, a
/// `str_replace`, turns it into PHP text first (so a float has PHP's 14 digits: `finish` is
/// `1760000000.1235`).
fn write_xml_scalar(v: &Value, out: &mut String) {
    let text = v.to_php_string();
    push_xml_text(&text, out);
}

/// Escapes text for element content or a double-quoted attribute, dropping what XML 1.0 cannot
/// carry at all (its `Char` production).
fn push_xml_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

/// A key that can be an element name as it is: ASCII letters, digits, `_`, `-` and `.`, not
/// starting with a digit, `-` or `.`.
fn is_plain_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            start: 1_760_000_000.25,
            finish: 1_760_000_000.5,
            processing: 0.1,
            operating: 0.0,
            operating_reset_at: 1_760_000_600,
        }
    }

    #[test]
    fn time_block_has_every_member_in_order() {
        let v = timing().to_value();
        let keys: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_string())
            .collect();
        assert_eq!(
            keys,
            [
                "start",
                "finish",
                "duration",
                "processing",
                "date_start",
                "date_finish",
                "operating_reset_at",
                "operating"
            ]
        );
        assert_eq!(v.get_path(&["duration".into()]), Some(&Value::Float(0.25)));
    }

    /// Floats in each transport as PHP writes them: `json_encode`'s shortest form without a
    /// zero fraction (`"operating":0`, as the real server answers), and in XML PHP's text of
    /// the float, 14 digits.
    #[test]
    fn time_floats_are_written_as_php_writes_them() {
        let t = Timing {
            finish: 1_760_000_000.123456,
            ..timing()
        };
        let json = t.to_value().to_bitrix_json();
        assert!(json.starts_with("{\"start\":1760000000.25,\"finish\":1760000000.123456,"));
        assert!(json.ends_with(",\"operating_reset_at\":1760000600,\"operating\":0}"));
        let xml = to_xml(&t.to_value());
        assert!(xml.contains("<finish>1760000000.1235</finish>"), "{xml}");
        assert!(xml.contains("<operating>0</operating>"), "{xml}");
        assert!(xml.contains("<start>1760000000.25</start>"), "{xml}");
    }

    #[test]
    fn success_puts_next_and_total_before_time() {
        let out = Output {
            result: Value::list([Value::Int(1)]),
            next: Some(50),
            total: Some(120),
        };
        let json = success_value(out, &timing()).to_bitrix_json();
        assert!(json.starts_with("{\"result\":[1],\"next\":50,\"total\":120,\"time\":{"));
    }

    #[test]
    fn xml_transport() {
        let v = Value::map([
            (
                "result",
                Value::list([Value::from("a<b"), Value::Bool(true)]),
            ),
            ("x", Value::Bool(false)),
        ]);
        assert_eq!(
            to_xml(&v),
            "<response><result><item>a&lt;b</item><item>1</item></result><x></x></response>"
        );
        let odd = Value::map([
            ("ª", Value::from("a\u{FFFF}b\u{1}c\rd")),
            ("1abc", Value::from(1)),
            ("a b", Value::from("\"")),
            ("ok_1.x-y", Value::from(2)),
        ]);
        assert_eq!(
            to_xml(&odd),
            "<response><item key=\"ª\">abc&#13;d</item><item key=\"1abc\">1</item>\
             <item key=\"a b\">&quot;</item><ok_1.x-y>2</ok_1.x-y></response>"
        );
    }

    #[test]
    fn json_text_answers_as_its_tree_in_both_transports() {
        let tree = Value::map([
            (
                "notifications",
                Value::list([Value::map([
                    ("id", Value::Int(7)),
                    ("text", Value::from("a<b & 'c' \"d\" e/f é\n\u{1}")),
                    ("w", Value::Float(120.5)),
                    ("ok", Value::Bool(true)),
                    ("n", Value::Null),
                    (
                        "params",
                        Value::map([("ATTACH", Value::list([Value::empty_array()]))]),
                    ),
                ])]),
            ),
            ("users", Value::empty_array()),
        ]);
        let Value::Arr(a) = &tree else { unreachable!() };
        let mut spliced = Array::new();
        for (k, v) in a.iter() {
            spliced.insert(k.clone(), Value::json(v.to_bitrix_json()));
        }
        let spliced = Value::Arr(spliced);
        assert_eq!(spliced.to_bitrix_json(), tree.to_bitrix_json());
        assert_eq!(to_xml(&spliced), to_xml(&tree));
        assert_eq!(
            to_xml(&Value::json("[1,\"x\"]".into())),
            to_xml(&Value::list([Value::Int(1), Value::from("x")]))
        );
    }
}
