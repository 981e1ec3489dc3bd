//! The answer envelope of every REST call (spec §5): a success body with `result`, optional
//! `next` and `total`, and the `time` block; or an error body with `error` and
//! `error_description`. The batch result maps (§6.3) live here too.
//!
//! ```
//! use imnotify_wire::envelope::Answer;
//!
//! let ok: Answer<i64> = serde_json::from_str(r#"{"result":7,"time":{"start":1.5,"finish":1.75,
//!     "duration":0.25,"processing":0.01,"date_start":"2026-01-01T00:00:01+00:00",
//!     "date_finish":"2026-01-01T00:00:01+00:00","operating_reset_at":1700000600,"operating":0}}"#)
//!     .unwrap();
//! assert!(matches!(ok, Answer::Success(s) if s.result == 7));
//! let err: Answer<i64> =
//!     serde_json::from_str(r#"{"error":"MESSAGE_EMPTY","error_description":"Message can't be empty"}"#)
//!         .unwrap();
//! assert!(matches!(err, Answer::Error(e) if e.error == "MESSAGE_EMPTY"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The `time` block of a success answer, in Unix seconds (§5.3, P5). The member names in the
/// order the method page shows them are [`Time::MEMBERS`]. Older portals leave out
/// `operating` and `operating_reset_at`; they read as 0 then.
///
/// ```
/// let t: imnotify_wire::envelope::Time = serde_json::from_str(r#"{"start":1,"finish":2}"#).unwrap();
/// assert_eq!(t.duration, 0.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Time {
    /// When the call began.
    pub start: f64,
    /// When the answer was made.
    pub finish: f64,
    /// `finish - start`.
    pub duration: f64,
    /// The handler's own time.
    pub processing: f64,
    /// `start` as an ISO 8601 date with the portal's offset.
    pub date_start: String,
    /// `finish` likewise.
    pub date_finish: String,
    /// When the oldest minute of the operating window drops out, in Unix seconds.
    pub operating_reset_at: i64,
    /// Handler seconds this credential spent on this method in the last ten minutes (P9); the
    /// method is blocked with `OPERATION_TIME_LIMIT` above the server's limit (480 s on Bitrix24).
    pub operating: f64,
}

impl Time {
    /// The member names, in the order a server writes them.
    ///
    /// ```
    /// assert_eq!(imnotify_wire::envelope::Time::MEMBERS[0], "start");
    /// ```
    pub const MEMBERS: [&'static str; 8] = [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ];
}

/// A success body. `next` and `total` come with list methods.
///
/// ```
/// let s: imnotify_wire::envelope::Success<bool> =
///     serde_json::from_str(r#"{"result":true,"next":50,"total":120}"#).unwrap();
/// assert_eq!((s.result, s.next, s.total), (true, Some(50), Some(120)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success<T> {
    /// The method's result.
    pub result: T,
    /// The offset of the next page, for list methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
    /// The number of items in all pages, for list methods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// The timing; absent from some proxies' answers, so optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// An error body (§5.4).
///
/// ```
/// use imnotify_wire::{envelope::ErrorBody, error::ApiError};
/// let body = ErrorBody::from(&ApiError::user_id_empty());
/// assert_eq!(serde_json::to_string(&body).unwrap(),
///     r#"{"error":"USER_ID_EMPTY","error_description":"User ID can't be empty"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The code: see [`crate::error::ErrorCode`].
    pub error: String,
    /// The human-readable text. Some portal answers leave it out.
    #[serde(default)]
    pub error_description: String,
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> ErrorBody {
        ErrorBody {
            error: e.code.to_owned(),
            error_description: e.description.to_string(),
        }
    }
}

/// Either body. An object with an `error` member is an error, whatever else it holds.
///
/// ```
/// use imnotify_wire::envelope::Answer;
/// let a: Answer<serde_json::Value> = serde_json::from_str(r#"{"error":"x"}"#).unwrap();
/// assert!(matches!(a, Answer::Error(_)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// `{"result": ..., "time": ...}`
    Success(Success<T>),
    /// `{"error": ..., "error_description": ...}`
    Error(ErrorBody),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Answer<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let v = Map::<String, Value>::deserialize(d)?;
        if v.contains_key("error") {
            serde_json::from_value(Value::Object(v))
                .map(Answer::Error)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(Value::Object(v))
                .map(Answer::Success)
                .map_err(D::Error::custom)
        }
    }
}

/// The `result` of `batch` (§6.3): five maps keyed by the command names (or by position when
/// `cmd` was a list, which JSON then shows as a list: both read here as maps keyed by the text
/// of the key).
///
/// ```
/// use imnotify_wire::envelope::BatchResult;
/// let r: BatchResult = serde_json::from_str(r#"{"result":{"a":5},"result_error":{"b":
///     {"error":"MESSAGE_EMPTY","error_description":"Message can't be empty"}},
///     "result_total":[],"result_next":[],"result_time":[]}"#).unwrap();
/// assert_eq!(r.result["a"], 5);
/// assert_eq!(r.result_error["b"].error, "MESSAGE_EMPTY");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchResult {
    /// Each successful command's `result`.
    #[serde(deserialize_with = "map_or_list")]
    pub result: Map<String, Value>,
    /// Each failed command's error body.
    #[serde(deserialize_with = "errors_map_or_list")]
    pub result_error: indexed::Errors,
    /// `total` of list commands.
    #[serde(deserialize_with = "map_or_list")]
    pub result_total: Map<String, Value>,
    /// `next` of list commands.
    #[serde(deserialize_with = "map_or_list")]
    pub result_next: Map<String, Value>,
    /// Each command's `time` block.
    #[serde(deserialize_with = "map_or_list")]
    pub result_time: Map<String, Value>,
}

/// Helper types of [`BatchResult`].
pub mod indexed {
    /// The failed commands of a batch, by command name.
    ///
    /// ```
    /// let mut errors = imnotify_wire::envelope::indexed::Errors::new();
    /// errors.insert(
    ///     "second".into(),
    ///     imnotify_wire::envelope::ErrorBody {
    ///         error: "USER_ID_EMPTY".into(),
    ///         error_description: String::new(),
    ///     },
    /// );
    /// assert_eq!(errors["second"].error, "USER_ID_EMPTY");
    /// ```
    pub type Errors = std::collections::BTreeMap<String, super::ErrorBody>;
}

/// PHP's arrays: an empty map is written `[]`, and a list-keyed map as a JSON list.
fn map_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m,
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => Map::new(),
    })
}

fn errors_map_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<indexed::Errors, D::Error> {
    use serde::de::Error as _;
    map_or_list(d)?
        .into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_value(v).map_err(D::Error::custom)?)))
        .collect()
}
