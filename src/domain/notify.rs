//! The notify domain: turning decoded `im.notify.*.add` parameters into a notification to store.
//! Pure: no HTTP, no SQL, no clock (the caller passes `now`).

use md5::{Digest, Md5};

use crate::domain::attach::{self, AttachError};
use crate::error::ApiError;
use crate::value::{php_trim, Array, Value};

/// `IM_NOTIFY_SYSTEM`: no author, shown as a system message.
pub const NOTIFY_TYPE_SYSTEM: i64 = 4;
/// `IM_NOTIFY_FROM`: a personal notification from the calling user.
pub const NOTIFY_TYPE_PERSONAL: i64 = 2;

/// MESSAGE_OUT that means "no e-mail for this one" (D11).
pub const EMAIL_SKIP: &str = "#SKIP#";

/// Texts longer than this many characters are cut (§2.4, D7).
const TEXT_CUT_THRESHOLD: usize = 20_006;
const TEXT_KEEP: usize = 20_000;

/// Who is sending, as far as the notify rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An incoming webhook (or a browser session) acting as user `owner`: no OAuth client id,
    /// so tags need `CLIENT_ID` (D3), and the owner is part of the tag origin.
    Webhook { owner: i64 },
    /// An OAuth application: its client id namespaces tags and its name prefixes system texts (D6).
    App { client_id: String, name: String },
}

/// Which add method was called; `im.notify` picks one from its `TYPE` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    System,
    Personal,
}

/// Limits that the deployment may tune.
#[derive(Debug, Clone, Copy)]
pub struct NotifyLimits {
    pub attach_max_bytes: usize,
}

/// A validated notification, ready for the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub recipient: i64,
    pub author_id: i64,
    pub notify_type: i64,
    pub text: String,
    pub text_out: String,
    pub tag: Option<String>,
    pub sub_tag: Option<String>,
    /// Who may replace or delete this notification by tag ([`tag_origin`]); set when `tag` or
    /// `sub_tag` is.
    pub tag_origin: Option<String>,
    /// The normalised attachment, serialised as PHP JSON.
    pub attach: Option<String>,
    /// MESSAGE_OUT was `#SKIP#` after trimming: never e-mail this notification (D11).
    pub skip_email: bool,
    /// The calling application's name, for the e-mail subject (D14); `None` for webhooks.
    pub sender_name: Option<String>,
}

/// Builds a notification from `im.notify.system.add` / `im.notify.personal.add` parameters,
/// checking them in the order of §2.3 so that the first failing rule decides the error.
pub fn build(
    params: &Array,
    kind: Kind,
    author_id: i64,
    origin: &Origin,
    now_unix: i64,
    limits: NotifyLimits,
    rng: &mut impl rand::Rng,
) -> Result<Draft, ApiError> {
    let params = params.upper_case_keys();

    // `TO` is an undocumented alias that overrides USER_ID.
    let recipient = params
        .get_str("TO")
        .or_else(|| params.get_str("USER_ID"))
        .map(Value::intval)
        .unwrap_or(0);
    if recipient <= 0 {
        return Err(ApiError::user_id_empty());
    }

    let message = string_param(&params, "MESSAGE");
    if message.is_empty() {
        return Err(ApiError::message_empty());
    }
    let message_out = string_param(&params, "MESSAGE_OUT");
    let skip_email = message_out == EMAIL_SKIP;

    let (author_id, notify_type) = match kind {
        Kind::System => (0, NOTIFY_TYPE_SYSTEM),
        Kind::Personal => (author_id, NOTIFY_TYPE_PERSONAL),
    };

    let (text, text_out) = match (kind, origin) {
        (Kind::System, Origin::App { name, .. }) => {
            let out = if message_out.is_empty() {
                String::new()
            } else {
                format!("{name}\n{message_out}")
            };
            (format!("{name}#BR#{message}"), out)
        }
        _ => (message.to_owned(), message_out.to_owned()),
    };
    // Cut like MESSAGE (D7), or one call could store and mail a whole body's worth of text.
    let text_out = cut_long_text(&text_out);

    let namespace = tag_namespace(origin, &params);
    let tag = namespace
        .as_deref()
        .and_then(|ns| namespaced(ns, params.get_str("TAG")));
    let sub_tag = namespace
        .as_deref()
        .and_then(|ns| namespaced(ns, params.get_str("SUB_TAG")));
    let tag_origin = if tag.is_some() || sub_tag.is_some() {
        tag_origin(origin, &params)
    } else {
        None
    };

    let attach = match params.get_str("ATTACH") {
        None => None,
        Some(raw) => match attach::normalize(raw, now_unix, limits.attach_max_bytes, rng) {
            Ok(a) => a.map(|v| v.to_php_json()),
            Err(AttachError::Invalid) => return Err(ApiError::attach_error()),
            Err(AttachError::Oversize) => return Err(ApiError::attach_oversize()),
        },
    };

    Ok(Draft {
        recipient,
        author_id,
        notify_type,
        text: normalize_text(&text),
        text_out,
        tag,
        sub_tag,
        tag_origin,
        attach,
        skip_email,
        sender_name: match origin {
            Origin::App { name, .. } => Some(name.clone()),
            Origin::Webhook { .. } => None,
        },
    })
}

/// A string parameter, trimmed; anything that is not a string counts as empty (§2.3 step 6).
fn string_param<'a>(params: &'a Array, key: &str) -> &'a str {
    match params.get_str(key) {
        Some(Value::Str(s)) => php_trim(s),
        _ => "",
    }
}

/// The 5-hex-digit namespace key of D3, or `None` when tags are ignored for this call.
pub fn tag_namespace(origin: &Origin, params: &Array) -> Option<String> {
    let key = match origin {
        Origin::App { client_id, .. } => client_id.clone(),
        Origin::Webhook { .. } => format!("custom{}", webhook_client_id(params)?),
    };
    let digest = Md5::digest(key.as_bytes());
    Some(hex::encode(digest)[..5].to_owned())
}

/// A webhook's `CLIENT_ID` as PHP reads it, or `None` when it is missing, empty or an array.
fn webhook_client_id(params: &Array) -> Option<String> {
    let client_id = params.get_str("CLIENT_ID")?;
    if client_id.is_empty() || !client_id.is_scalar() {
        return None;
    }
    Some(client_id.to_php_string())
}

/// Who really sent a tagged notification, the key that decides tag replace (D4) and
/// delete-by-tag (README, "Tag origin"). The stored `MP|md5[:5]|TAG` string stays as Bitrix24
/// shows it, but its 20-bit namespace is no boundary: a webhook picks `CLIENT_ID` freely and
/// finds a colliding one in about a million md5s. So the origin is held apart:
/// - an OAuth app: `app:{client_id}` (client ids are unique and never reused);
/// - a webhook (or session) of user `owner`: `hook:{owner}:{h}`, `h` the first 32 hex digits of
///   SHA-256 of `CLIENT_ID`, so two users who pick the same `CLIENT_ID` stay apart and the
///   column stays short whatever the caller sends.
///
/// `None` exactly when [`tag_namespace`] is `None` (tags are ignored).
pub fn tag_origin(origin: &Origin, params: &Array) -> Option<String> {
    match origin {
        Origin::App { client_id, .. } => Some(format!("app:{client_id}")),
        Origin::Webhook { owner } => {
            use sha2::{Digest as _, Sha256};
            let digest = Sha256::digest(webhook_client_id(params)?.as_bytes());
            Some(format!("hook:{owner}:{}", &hex::encode(digest)[..32]))
        }
    }
}

/// The most characters a stored tag (`MP|{ns}|{TAG}`) or sub-tag keeps: the messenger's
/// `NOTIFY_TAG` and `NOTIFY_SUB_TAG` columns are `varchar(255)`, which cut a longer value.
/// Without the cut one call stored a whole body's worth of tag (8 MB), and each such
/// notification was sent again in every `im.notify.get` page and event.
pub const TAG_MAX_CHARS: usize = 255;

/// `MP|{ns}|{TAG}` cut at [`TAG_MAX_CHARS`] characters, or `None` when the value is empty by
/// PHP rules. Adds, TAG replace and delete by tag all go through it, so a tag longer than the
/// cut still finds its own notifications.
pub fn namespaced(namespace: &str, value: Option<&Value>) -> Option<String> {
    let value = value?;
    if value.is_empty() || !value.is_scalar() {
        return None;
    }
    let mut tag = format!("MP|{namespace}|{}", value.to_php_string());
    if let Some((cut, _)) = tag.char_indices().nth(TAG_MAX_CHARS) {
        tag.truncate(cut);
    }
    Some(tag)
}

/// The messenger's storage normalisation (D7): line-break markers become newlines, the text is
/// trimmed, and very long texts are cut with a visible marker.
pub fn normalize_text(text: &str) -> String {
    let replaced = text
        .replace("#BR#", "\n")
        .replace("[BR]", "\n")
        .replace("[br]", "\n");
    cut_long_text(php_trim(&replaced))
}

/// A text longer than the messenger keeps, cut with a visible marker (D7); shorter ones as they
/// are. Every caller-supplied text that is stored or sent as an event goes through it.
pub fn cut_long_text(trimmed: &str) -> String {
    if trimmed.chars().count() > TEXT_CUT_THRESHOLD {
        let mut cut: String = trimmed.chars().take(TEXT_KEEP).collect();
        cut.push_str(" (...)");
        cut
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const LIMITS: NotifyLimits = NotifyLimits {
        attach_max_bytes: 30_720,
    };

    fn params(pairs: &[(&str, Value)]) -> Array {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect()
    }

    fn build_with(p: &Array, origin: &Origin) -> Result<Draft, ApiError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        build(p, Kind::System, 7, origin, 1_700_000_000, LIMITS, &mut rng)
    }

    #[test]
    fn coerces_user_id_like_intval() {
        let ok = build_with(
            &params(&[("user_id", "12abc".into()), ("message", "hi".into())]),
            &Origin::Webhook { owner: 7 },
        )
        .unwrap();
        assert_eq!(ok.recipient, 12);
        for bad in [
            Value::from("abc"),
            Value::Int(0),
            Value::Int(-3),
            Value::Null,
        ] {
            let err = build_with(
                &params(&[("USER_ID", bad), ("MESSAGE", "x".into())]),
                &Origin::Webhook { owner: 7 },
            )
            .unwrap_err();
            assert_eq!(err.code, "USER_ID_EMPTY");
        }
        let to = build_with(
            &params(&[
                ("USER_ID", 1.into()),
                ("TO", 9.into()),
                ("MESSAGE", "x".into()),
            ]),
            &Origin::Webhook { owner: 7 },
        )
        .unwrap();
        assert_eq!(to.recipient, 9);
    }

    #[test]
    fn message_must_be_a_non_blank_string() {
        for m in [Value::from("  \n "), Value::Int(5), Value::empty_array()] {
            let err = build_with(
                &params(&[("USER_ID", 1.into()), ("MESSAGE", m)]),
                &Origin::Webhook { owner: 7 },
            )
            .unwrap_err();
            assert_eq!(err.code, "MESSAGE_EMPTY");
        }
    }

    #[test]
    fn system_texts_from_apps_carry_the_app_name() {
        let app = Origin::App {
            client_id: "app.573ad8a0346747.09223434".into(),
            name: "Tracker".into(),
        };
        let d = build_with(
            &params(&[
                ("USER_ID", 1.into()),
                ("MESSAGE", " Hello ".into()),
                ("MESSAGE_OUT", "Mail".into()),
                ("TAG", "T1".into()),
            ]),
            &app,
        )
        .unwrap();
        assert_eq!(d.text, "Tracker\nHello");
        assert_eq!(d.text_out, "Tracker\nMail");
        assert_eq!(d.tag.as_deref(), Some("MP|a4df9|T1"));
        assert_eq!(d.author_id, 0);
        assert_eq!(d.notify_type, NOTIFY_TYPE_SYSTEM);
    }

    #[test]
    fn webhook_tags_need_client_id() {
        let p = params(&[
            ("USER_ID", 1.into()),
            ("MESSAGE", "x".into()),
            ("TAG", "T".into()),
            ("SUB_TAG", "S".into()),
        ]);
        let d = build_with(&p, &Origin::Webhook { owner: 7 }).unwrap();
        assert_eq!((d.tag, d.sub_tag), (None, None));

        let mut with_client = p.clone();
        with_client.insert("CLIENT_ID", "MY_APP".into());
        let d = build_with(&with_client, &Origin::Webhook { owner: 7 }).unwrap();
        assert_eq!(d.tag.as_deref(), Some("MP|dc142|T"));
        assert_eq!(d.sub_tag.as_deref(), Some("MP|dc142|S"));

        let mut zero = with_client.clone();
        zero.insert("TAG", "0".into());
        assert_eq!(
            build_with(&zero, &Origin::Webhook { owner: 7 })
                .unwrap()
                .tag,
            None
        );
    }

    #[test]
    fn text_normalisation() {
        assert_eq!(normalize_text(" a#BR#b[br]c[BR] "), "a\nb\nc");
        let long = "é".repeat(20_007);
        let cut = normalize_text(&long);
        assert_eq!(cut.chars().count(), 20_006);
        assert!(cut.ends_with(" (...)"));
        let edge = "x".repeat(20_006);
        assert_eq!(normalize_text(&edge), edge);
    }

    #[test]
    fn attach_errors_come_after_message_checks() {
        let err = build_with(
            &params(&[("USER_ID", 1.into()), ("ATTACH", "junk".into())]),
            &Origin::Webhook { owner: 7 },
        )
        .unwrap_err();
        assert_eq!(err.code, "MESSAGE_EMPTY");
        let err = build_with(
            &params(&[
                ("USER_ID", 1.into()),
                ("MESSAGE", "m".into()),
                ("ATTACH", "junk".into()),
            ]),
            &Origin::Webhook { owner: 7 },
        )
        .unwrap_err();
        assert_eq!(err.code, "ATTACH_ERROR");
    }
}
