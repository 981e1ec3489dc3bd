//! The notification lifecycle rules (§4.2–4.11): how the parameters of `im.notify.get`,
//! `.read*`, `.delete`, `.history.search`, `.answer` and `.confirm` are read and checked, turned
//! into typed requests for the store. Pure, like the rest of the domain.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone};

use crate::domain::notify::{cut_long_text, namespaced, tag_namespace, tag_origin, Origin};
use crate::error::ApiError;
use crate::value::{php_trim, Array, Value};

/// `IM_NOTIFY_CONFIRM`: a notification with buttons that waits for an answer.
pub const NOTIFY_TYPE_CONFIRM: i64 = 1;

/// Page size of the notification readers: the default and the ceiling (§4.2, §4.7).
pub const MAX_LIMIT: usize = 50;

/// The only notification kind this server produces: `module|event` of REST notifications.
pub const NOTIFY_MODULE: &str = "rest";
pub const NOTIFY_EVENT: &str = "rest_notify";

/// Where a page of im.notify.get starts. The list has two stages, confirmations then the rest,
/// each newest first; `LAST_TYPE` says which stage the previous page ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The first page: confirmations, then normal notifications to fill the page.
    Start,
    /// `LAST_TYPE=1`: confirmations older than the id, then normal ones from the newest.
    Confirm(i64),
    /// Any other `LAST_TYPE`: normal notifications older than the id.
    Normal(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub cursor: Cursor,
    pub limit: usize,
}

/// `im.notify.get` (§4.2): `LAST_ID` and `LAST_TYPE` come together, `LAST_ID` is all digits,
/// `LIMIT` defaults to and is clamped at 50.
pub fn page_request(params: &Array) -> Result<PageRequest, ApiError> {
    let p = params.upper_case_keys();
    let limit = limit_param(&p);
    let cursor = match (present(&p, "LAST_ID"), present(&p, "LAST_TYPE")) {
        (None, None) => Cursor::Start,
        (Some(_), None) | (None, Some(_)) => return Err(ApiError::last_id_and_last_type()),
        (Some(last_id), Some(last_type)) => {
            let id = digits(last_id).ok_or_else(ApiError::last_id_string)?;
            if last_type.intval() == NOTIFY_TYPE_CONFIRM {
                Cursor::Confirm(id)
            } else {
                Cursor::Normal(id)
            }
        }
    };
    Ok(PageRequest { cursor, limit })
}

/// `LIMIT`: PHP's intval; anything not positive means the default.
fn limit_param(p: &Array) -> usize {
    match p.get_str("LIMIT").map(Value::intval) {
        Some(n) if n > 0 => (n as usize).min(MAX_LIMIT),
        _ => MAX_LIMIT,
    }
}

/// A `LAST_ID` that passes the source's all-digits check, as a number. Integers arrive as such
/// from JSON bodies; a negative one is not all digits.
fn digits(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) if *i >= 0 => Some(*i),
        Value::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            // Longer than i64: still digits, and no id is that large.
            Some(s.parse().unwrap_or(i64::MAX))
        }
        _ => None,
    }
}

/// Which notifications a read or unread toggles (§4.4–4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadScope {
    /// This notification (and its unread same-tag siblings).
    Only(i64),
    /// This notification and every newer one of the caller's (and the first one's siblings).
    AndNewer(i64),
    /// Every unread notification of the caller's: read.all.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub scope: ReadScope,
    /// `true` marks read, `false` unread.
    pub read: bool,
}

/// `ACTION` is compared strictly with `"Y"`; absent means `"Y"`.
fn read_action(p: &Array) -> bool {
    match p.get_str("ACTION") {
        None => true,
        Some(v) => matches!(v, Value::Str(s) if s == "Y"),
    }
}

/// `im.notify.read` (§4.4). `None` when there is nothing to do: the method still answers
/// `true`. As in the source, an `ID` that is present reads like `intval`, and 0 means every
/// notification when marking read (so `ID=abc` reads them all); marking unread needs a real id.
pub fn read_request(params: &Array) -> Option<ReadRequest> {
    let p = params.upper_case_keys();
    let id = present(&p, "ID")?.intval();
    let read = read_action(&p);
    let only_current = matches!(p.get_str("ONLY_CURRENT"), Some(Value::Str(s)) if s == "Y");
    let scope = match id {
        0 if read => ReadScope::All,
        id if id <= 0 => return None,
        id if only_current => ReadScope::Only(id),
        id => ReadScope::AndNewer(id),
    };
    Some(ReadRequest { scope, read })
}

/// A parameter as PHP's `isset` sees it: present and not null.
fn present<'a>(p: &'a Array, key: &str) -> Option<&'a Value> {
    p.get_str(key).filter(|v| !v.is_null())
}

/// `im.notify.read.list` (§4.5): `IDS` must be an array; the ids are taken in order up to the
/// first that is not positive.
pub fn read_list_request(params: &Array) -> Result<(Vec<i64>, bool), ApiError> {
    let p = params.upper_case_keys();
    let Some(Value::Arr(ids)) = p.get_str("IDS") else {
        return Err(ApiError::params_error_ids());
    };
    let ids = ids
        .values()
        .map(Value::intval)
        .take_while(|id| *id > 0)
        .collect();
    Ok((ids, read_action(&p)))
}

/// Which stored tag column a delete matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagField {
    Tag,
    SubTag,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteRequest {
    /// One of the caller's own notifications.
    Own(i64),
    /// Every notification, of every recipient, whose stored tag (or sub-tag) is `value` and
    /// that came from `origin` ([`tag_origin`]): the namespace in the string is not enough.
    ByTag {
        field: TagField,
        value: String,
        origin: String,
    },
}

/// `im.notify.delete` (§4.3, D4), in the source's order: `ID` (present at all) wins; a browser
/// session (`session`) may delete only by id; then a client id is needed, the OAuth app's or,
/// for a webhook, `CLIENT_ID`; then `TAG`, then `SUB_TAG`.
pub fn delete_request(
    params: &Array,
    origin: &Origin,
    session: bool,
) -> Result<DeleteRequest, ApiError> {
    let p = params.upper_case_keys();
    if let Some(id) = p.get_str("ID") {
        return Ok(DeleteRequest::Own(id.intval()));
    }
    if session {
        return Err(ApiError::params_error());
    }
    let namespace = tag_namespace(origin, &p).ok_or_else(ApiError::access_denied_client_id)?;
    let by_tag = |field, value| DeleteRequest::ByTag {
        field,
        value,
        // Present whenever the namespace is (same CLIENT_ID rule).
        origin: tag_origin(origin, &p).unwrap_or_default(),
    };
    if let Some(tag) = namespaced(&namespace, p.get_str("TAG")) {
        return Ok(by_tag(TagField::Tag, tag));
    }
    if let Some(sub_tag) = namespaced(&namespace, p.get_str("SUB_TAG")) {
        return Ok(by_tag(TagField::SubTag, sub_tag));
    }
    Err(ApiError::params_error())
}

/// `im.notify.history.search` (§4.7), as the store runs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchRequest {
    /// Case-insensitive substring of the text.
    pub text: Option<String>,
    /// `(module, event)` pairs; an event of `None` matches the whole module. Empty: any type.
    pub types: Vec<(String, Option<String>)>,
    /// Unix seconds, `from` inclusive, `to` exclusive.
    pub date_from: Option<i64>,
    pub date_to: Option<i64>,
    pub authors: Vec<i64>,
    /// Exact stored tag.
    pub group_tag: Option<String>,
    /// Only ids below this one (the `LAST_ID` cursor).
    pub before: Option<i64>,
    pub limit: usize,
}

impl SearchRequest {
    /// `total_results` is reported on the first page only.
    pub fn first_page(&self) -> bool {
        self.before.is_none()
    }
}

/// Reads the search parameters. `local` is the server's offset, for dates given without one.
pub fn search_request(params: &Array, local: FixedOffset) -> Result<SearchRequest, ApiError> {
    let p = params.upper_case_keys();
    let text = match p.get_str("SEARCH_TEXT") {
        Some(v) if v.is_scalar() => php_trim(&v.to_php_string()).to_owned(),
        _ => String::new(),
    };

    let mut types = Vec::new();
    if let Some(t) = p.get_str("SEARCH_TYPE").filter(|v| v.is_truthy()) {
        types.push(split_type(&t.to_php_string()));
    }
    if let Some(Value::Arr(list)) = p.get_str("SEARCH_TYPES") {
        types.extend(
            list.values()
                .filter(|v| v.is_truthy() && v.is_scalar())
                .map(|v| split_type(&v.to_php_string())),
        );
    }
    let authors: Vec<i64> = match p.get_str("SEARCH_AUTHORS") {
        Some(Value::Arr(list)) => list
            .values()
            .map(Value::intval)
            .filter(|a| *a >= 0)
            .collect(),
        _ => Vec::new(),
    };
    let day = p
        .get_str("SEARCH_DATE")
        .filter(|v| v.is_truthy())
        .and_then(|v| parse_date(v, local));
    let range_from = p
        .get_str("SEARCH_DATE_FROM")
        .filter(|v| v.is_truthy())
        .and_then(|v| parse_date(v, local));
    let range_to = p
        .get_str("SEARCH_DATE_TO")
        .filter(|v| v.is_truthy())
        .and_then(|v| parse_date(v, local));
    let has_range = range_from.is_some() && range_to.is_some();

    // The newest documentation counts every filter; the older source only SEARCH_TYPE and
    // SEARCH_DATE. A filter-only search is what a client means, so every filter counts.
    let filtered = !types.is_empty() || day.is_some() || has_range || !authors.is_empty();
    if !filtered && text.chars().count() < 3 {
        return Err(ApiError::search_text_error());
    }

    let before = match present(&p, "LAST_ID") {
        None => None,
        Some(v) => Some(digits(v).ok_or_else(ApiError::last_id_string)?),
    };

    let (mut date_from, mut date_to) = (None, None);
    if let Some(d) = day {
        // The whole calendar day the date falls on, in the offset it was given in.
        let start = d
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists");
        let start = d.offset().from_local_datetime(&start).single().unwrap_or(d);
        date_from = Some(start.timestamp());
        date_to = Some((start + Duration::days(1)).timestamp());
    }
    if has_range {
        let (from, to) = (range_from.unwrap(), range_to.unwrap());
        date_from = Some(date_from.map_or(from.timestamp(), |f| f.max(from.timestamp())));
        // The end of the range is inclusive.
        let to = to.timestamp() + 1;
        date_to = Some(date_to.map_or(to, |t| t.min(to)));
    }

    Ok(SearchRequest {
        text: (!text.is_empty()).then_some(text),
        types,
        date_from,
        date_to,
        authors,
        group_tag: p
            .get_str("GROUP_TAG")
            .filter(|v| v.is_truthy() && v.is_scalar())
            .map(Value::to_php_string),
        before,
        limit: limit_param(&p),
    })
}

/// `MODULE` or `MODULE|EVENT`.
fn split_type(t: &str) -> (String, Option<String>) {
    match t.split_once('|') {
        Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
        None => (t.to_owned(), None),
    }
}

/// RFC 3339, or a bare `YYYY-MM-DD` taken in the server's offset.
fn parse_date(v: &Value, local: FixedOffset) -> Option<DateTime<FixedOffset>> {
    let s = v.as_str()?.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d);
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    local
        .from_local_datetime(&day.and_hms_opt(0, 0, 0)?)
        .single()
}

/// `NOTIFY_ID`, or `ID`, which wins: the id of `im.notify.answer` and `im.notify.confirm`.
fn notify_id(p: &Array) -> Result<i64, ApiError> {
    let id = p
        .get_str("ID")
        .or_else(|| p.get_str("NOTIFY_ID"))
        .map(Value::intval)
        .unwrap_or(0);
    if id <= 0 {
        return Err(ApiError::id_error());
    }
    Ok(id)
}

/// `im.notify.answer` (§4.9): the notification and the answer text.
pub fn answer_request(params: &Array) -> Result<(i64, String), ApiError> {
    let p = params.upper_case_keys();
    let id = notify_id(&p)?;
    match p.get_str("ANSWER_TEXT") {
        // Cut as MESSAGE is: the answer is kept in the event log and sent to every stream.
        Some(v) if v.is_truthy() => Ok((id, cut_long_text(php_trim(&v.to_php_string())))),
        _ => Err(ApiError::answer_text_error()),
    }
}

/// `im.notify.confirm` (§4.10): the notification and the value of the chosen button.
pub fn confirm_request(params: &Array) -> Result<(i64, String), ApiError> {
    let p = params.upper_case_keys();
    let id = notify_id(&p)?;
    match p.get_str("NOTIFY_VALUE") {
        Some(v) if v.is_truthy() => Ok((id, v.to_php_string())),
        _ => Err(ApiError::notify_value_error()),
    }
}

/// The default answer message of im.notify.answer when no module handler adds its own (the
/// source's English `IM_ANSWER_DONE`).
pub const ANSWER_SENT: &str = "Your reply has been sent.";

/// The messages of a confirmation answered with `value`, when no module adds its own: the
/// source's `IM_CONFIRM_CHOICE` for the button with that value, or none.
pub fn confirm_messages(buttons: Option<&str>, value: &str) -> Vec<String> {
    let buttons = buttons
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .map(Value::from_json);
    let Some(Value::Arr(buttons)) = buttons else {
        return Vec::new();
    };
    let chosen = buttons.values().filter_map(Value::as_array).find(|b| {
        b.get_str("VALUE")
            .is_some_and(|v| v.to_php_string() == value)
    });
    match chosen {
        Some(b) => {
            let title = b.get_str("TITLE").map(Value::to_php_string);
            vec![format!("Your selection: \"{}\"", title.unwrap_or_default())]
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, Value)]) -> Array {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    #[test]
    fn page_cursor_rules() {
        assert_eq!(
            page_request(&Array::new()).unwrap(),
            PageRequest {
                cursor: Cursor::Start,
                limit: 50
            }
        );
        let r = page_request(&params(&[
            ("last_id", "15".into()),
            ("LAST_TYPE", 1.into()),
            ("LIMIT", "500".into()),
        ]))
        .unwrap();
        assert_eq!((r.cursor, r.limit), (Cursor::Confirm(15), 50));
        let r = page_request(&params(&[
            ("LAST_ID", 15.into()),
            ("LAST_TYPE", "3".into()),
            ("LIMIT", 7.into()),
        ]))
        .unwrap();
        assert_eq!((r.cursor, r.limit), (Cursor::Normal(15), 7));
        let err = page_request(&params(&[("LAST_ID", 1.into())])).unwrap_err();
        assert_eq!(err.code, "LAST_ID_AND_LAST_TYPE");
        let err = page_request(&params(&[("LAST_TYPE", 3.into())])).unwrap_err();
        assert_eq!(err.code, "LAST_ID_AND_LAST_TYPE");
        for bad in [Value::from("1a"), Value::from(""), Value::Int(-1)] {
            let err =
                page_request(&params(&[("LAST_ID", bad), ("LAST_TYPE", 3.into())])).unwrap_err();
            assert_eq!(err.code, "LAST_ID_STRING");
        }
    }

    #[test]
    fn read_rules() {
        assert_eq!(read_request(&Array::new()), None);
        let r = read_request(&params(&[("id", "7".into())])).unwrap();
        assert_eq!(r.scope, ReadScope::AndNewer(7));
        assert!(r.read);
        let r = read_request(&params(&[
            ("ID", 7.into()),
            ("ONLY_CURRENT", "Y".into()),
            ("ACTION", "y".into()),
        ]))
        .unwrap();
        assert_eq!(r.scope, ReadScope::Only(7));
        assert!(!r.read, "ACTION is compared strictly with Y");
        let all = read_request(&params(&[
            ("ID", "abc".into()),
            ("ONLY_CURRENT", "Y".into()),
        ]));
        assert_eq!(all.unwrap().scope, ReadScope::All);
        let none = read_request(&params(&[("ID", 0.into()), ("ACTION", "N".into())]));
        assert_eq!(none, None);
        assert_eq!(read_request(&params(&[("ID", Value::Null)])), None);
        let (ids, read) = read_list_request(&params(&[(
            "IDS",
            Value::list([3.into(), "4".into(), 0.into(), 9.into()]),
        )]))
        .unwrap();
        assert_eq!(ids, [3, 4]);
        assert!(read);
        let err = read_list_request(&params(&[("IDS", "1,2".into())])).unwrap_err();
        assert_eq!(
            (err.code, err.description.as_ref()),
            ("PARAMS_ERROR", "No IDS param or it is not an array")
        );
    }

    #[test]
    fn delete_rules() {
        let w = Origin::Webhook { owner: 7 };
        let by = |field, value: &str, origin: &str| DeleteRequest::ByTag {
            field,
            value: value.into(),
            origin: origin.into(),
        };
        let hook_origin = tag_origin(&w, &params(&[("CLIENT_ID", "MY_APP".into())])).unwrap();
        assert!(hook_origin.starts_with("hook:7:"), "{hook_origin}");
        assert_eq!(
            delete_request(&params(&[("ID", "".into())]), &w, false).unwrap(),
            DeleteRequest::Own(0)
        );
        let err = delete_request(&params(&[("TAG", "T".into())]), &w, false).unwrap_err();
        assert_eq!((err.code, err.status), ("ACCESS_DENIED", 403));
        let with_client = params(&[("CLIENT_ID", "MY_APP".into()), ("TAG", "T".into())]);
        assert_eq!(
            delete_request(&with_client, &w, false).unwrap(),
            by(TagField::Tag, "MP|dc142|T", &hook_origin)
        );
        let sub = params(&[("CLIENT_ID", "MY_APP".into()), ("SUB_TAG", "S".into())]);
        assert_eq!(
            delete_request(&sub, &w, false).unwrap(),
            by(TagField::SubTag, "MP|dc142|S", &hook_origin)
        );
        let none = params(&[("CLIENT_ID", "MY_APP".into()), ("TAG", "0".into())]);
        assert_eq!(
            delete_request(&none, &w, false).unwrap_err().code,
            "PARAMS_ERROR"
        );
        let app = Origin::App {
            client_id: "app.573ad8a0346747.09223434".into(),
            name: "Tracker".into(),
        };
        assert_eq!(
            delete_request(&params(&[("TAG", "T1".into())]), &app, false).unwrap(),
            by(
                TagField::Tag,
                "MP|a4df9|T1",
                "app:app.573ad8a0346747.09223434"
            )
        );
        let err = delete_request(&with_client, &w, true).unwrap_err();
        assert_eq!((err.code, err.status), ("PARAMS_ERROR", 400));
        assert_eq!(
            delete_request(&params(&[("ID", 4.into())]), &w, true).unwrap(),
            DeleteRequest::Own(4)
        );
    }

    #[test]
    fn search_rules() {
        let utc = FixedOffset::east_opt(0).unwrap();
        let err = search_request(&params(&[("SEARCH_TEXT", " ab ".into())]), utc).unwrap_err();
        assert_eq!(err.code, "SEARCH_TEXT_ERROR");
        let ok = search_request(&params(&[("SEARCH_TYPE", "rest".into())]), utc).unwrap();
        assert_eq!(ok.types, [("rest".to_owned(), None)]);
        let day = search_request(
            &params(&[("SEARCH_DATE", "2026-03-03T16:52:29+01:00".into())]),
            utc,
        )
        .unwrap();
        let midnight = DateTime::parse_from_rfc3339("2026-03-03T00:00:00+01:00").unwrap();
        assert_eq!(day.date_from, Some(midnight.timestamp()));
        assert_eq!(day.date_to, Some(midnight.timestamp() + 86_400));
        let err = search_request(
            &params(&[("SEARCH_TEXT", "abc".into()), ("LAST_ID", "x".into())]),
            utc,
        )
        .unwrap_err();
        assert_eq!(err.code, "LAST_ID_STRING");
    }

    #[test]
    fn answer_and_confirm_rules() {
        let err = answer_request(&params(&[("ANSWER_TEXT", "hi".into())])).unwrap_err();
        assert_eq!(err.code, "ID_ERROR");
        let err =
            answer_request(&params(&[("ID", 3.into()), ("ANSWER_TEXT", "0".into())])).unwrap_err();
        assert_eq!(err.code, "ANSWER_TEXT_ERROR");
        let (id, _) = answer_request(&params(&[
            ("NOTIFY_ID", 3.into()),
            ("ID", 4.into()),
            ("ANSWER_TEXT", "ok".into()),
        ]))
        .unwrap();
        assert_eq!(id, 4, "ID wins over NOTIFY_ID");
        let err = confirm_request(&params(&[("NOTIFY_ID", 3.into())])).unwrap_err();
        assert_eq!(
            err.description.as_ref(),
            "Notification Value  can't be empty"
        );
    }
}
