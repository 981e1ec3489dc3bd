//! The `ATTACH` parameter of `im.notify.*`: turning what the caller sent into the attachment object
//! that is stored and later returned in `params.ATTACH` (spec §2.6, decision D1).
//!
//! Pure: no I/O. The caller supplies the clock, the size limit and the random source, so the same
//! input always normalises the same way in tests.
//!
//! Invalid parts are dropped silently, as Bitrix24 does; only an attachment left with no block at
//! all is an error. Every rule below produces values that satisfy the rule again, so normalising a
//! stored attachment a second time gives the same blocks back (a property test checks this).

use crate::value::{php_trim, Array, Value};
// The text and link rules are the wire crate's, so the client's ATTACH builders make exactly
// what this normaliser keeps.
use imnotify_wire::attach::{is_hex_color, is_link, one_line, DEFAULT_DELIMITER_SIZE};

/// Why an `ATTACH` parameter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// `ATTACH_ERROR`: a truthy value that yields no valid block.
    Invalid,
    /// `ATTACH_OVERSIZE`: the normalised attachment is larger than the configured limit.
    Oversize,
}

impl AttachError {
    /// The `error` code Bitrix24 answers with.
    pub fn code(self) -> &'static str {
        match self {
            AttachError::Invalid => "ATTACH_ERROR",
            AttachError::Oversize => "ATTACH_OVERSIZE",
        }
    }

    /// The `error_description` Bitrix24 answers with.
    pub fn description(self) -> &'static str {
        match self {
            AttachError::Invalid => "Incorrect attach params",
            AttachError::Oversize => "You have exceeded the maximum allowable size of attach",
        }
    }
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for AttachError {}

pub use imnotify_wire::attach::{DEFAULT_MAX_BYTES, PALETTE};

/// The most values a raw ATTACH may hold before it is refused as oversize without being
/// normalised (issue 10): a quarter of `max_bytes`. Every kept block costs more than four
/// bytes of output per raw value in it, so an attachment that would fit is never refused here;
/// one made mostly of blocks that normalising would drop can be (a deviation: Bitrix24 pays for
/// normalising all of them first). 7,680 with the default 30 KB.
pub fn max_raw_nodes(max_bytes: usize) -> usize {
    (max_bytes / 4).max(64)
}

/// `[`, `{` and `,` outside JSON strings, counted up to just past `cap`: a bound on the values
/// a JSON text holds, read without parsing it.
fn structural_chars(s: &str, cap: usize) -> usize {
    let (mut n, mut in_string, mut escaped) = (0usize, false, false);
    for b in s.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b'[' | b'{' | b',') {
            n += 1;
            if n > cap {
                break;
            }
        }
    }
    n
}

/// Normalises a decoded `ATTACH` parameter (§2.6).
///
/// `raw` is the ATTACH parameter as decoded (a PHP array from JSON or bracket form, or a string
/// holding JSON).
///
/// * `Ok(None)`: `raw` is falsy by PHP `empty()` rules (missing, `""`, `"0"`, `0`, `false`, `null`,
///   `[]`) and is ignored silently.
/// * `Ok(Some(v))`: the normalised attachment `{ID, BLOCKS, [DESCRIPTION], COLOR}`, in that key
///   order.
/// * `Err(Invalid)`: `raw` is truthy but has no valid block, or is a string that does not parse
///   to a map or list.
/// * `Err(Oversize)`: the normalised attachment's `to_php_json` is longer than `max_bytes` bytes,
///   or, checked first and on the raw input, `raw` holds more than [`max_raw_nodes`] values
///   (for a JSON string: more than that many structural characters) - see there.
pub fn normalize(
    raw: &Value,
    now_unix: i64,
    max_bytes: usize,
    rng: &mut impl rand::Rng,
) -> Result<Option<Value>, AttachError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let max_nodes = max_raw_nodes(max_bytes);
    let too_big = match raw {
        Value::Str(s) => structural_chars(s, max_nodes) > max_nodes,
        other => other.node_count(max_nodes) > max_nodes,
    };
    if too_big {
        return Err(AttachError::Oversize);
    }
    let parsed;
    let input = match raw {
        Value::Arr(a) => a,
        // Only standard JSON: Bitrix's lenient JS-literal parser (single quotes, whitespace
        // stripping, literal `\n` conversion) is deliberately not reproduced. Object key order
        // is kept (serde_json's `preserve_order`), as PHP's decoder keeps it.
        Value::Str(s) => match Value::parse_json(s) {
            Ok(Value::Arr(a)) => {
                parsed = a;
                &parsed
            }
            _ => return Err(AttachError::Invalid),
        },
        _ => return Err(AttachError::Invalid),
    };

    // Full form is recognised by a non-null BLOCKS; COLOR and DESCRIPTION are only read then.
    // Anything else is the short form, whose values are the blocks (a bracket-form map such as
    // `ATTACH[1][...]` iterates like a list, as PHP's foreach does).
    let (blocks_in, color_in, description_in) = match present(input, "BLOCKS") {
        Some(blocks) => (
            blocks.as_array(),
            present(input, "COLOR"),
            present(input, "DESCRIPTION"),
        ),
        None => (Some(input), None, None),
    };

    let mut description = description_in
        .and_then(scalar_text)
        .map(|s| php_trim(&s).to_owned())
        .unwrap_or_default();
    let mut blocks = Vec::new();
    for block in blocks_in.into_iter().flat_map(Array::values) {
        if let Some(block) = block.as_array() {
            add_block(block, &mut blocks, &mut description);
        }
    }
    if blocks.is_empty() {
        return Err(AttachError::Invalid);
    }

    let mut out = Array::new();
    out.insert("ID", Value::Int(now_unix));
    out.insert("BLOCKS", Value::list(blocks));
    if !description.is_empty() {
        out.insert("DESCRIPTION", Value::Str(description));
    }
    out.insert("COLOR", Value::from(attachment_color(color_in, rng)));
    let out = Value::Arr(out);

    if out.to_php_json().len() > max_bytes {
        return Err(AttachError::Oversize);
    }
    Ok(Some(out))
}

/// The block keys in the order Bitrix24 tests them: the first present, non-null one decides.
const BLOCK_KINDS: [&str; 8] = [
    "USER",
    "LINK",
    "RICH_LINK",
    "MESSAGE",
    "GRID",
    "IMAGE",
    "FILE",
    "DELIMITER",
];

/// Appends the normalised form of one input block to `out` (zero or more blocks, since a list of
/// users becomes one block per user).
fn add_block(block: &Array, out: &mut Vec<Value>, description: &mut String) {
    let Some((kind, body)) = BLOCK_KINDS
        .iter()
        .find_map(|&k| present(block, k).map(|v| (k, v)))
    else {
        return;
    };
    let wrap = |item: Array| Value::map([(kind, Value::list([Value::Arr(item)]))]);
    match kind {
        // USER, LINK and RICH_LINK store each item as a block of its own, wrapped in a
        // one-element list, which is the shape clients read back.
        "USER" => out.extend(items(body).filter_map(user_item).map(wrap)),
        "LINK" => out.extend(items(body).filter_map(link_item).map(wrap)),
        "RICH_LINK" => out.extend(items(body).filter_map(rich_link_item).map(wrap)),
        "MESSAGE" => {
            if let Some((text, as_description)) = message(body) {
                if as_description {
                    description.clone_from(&text);
                }
                out.push(Value::map([("MESSAGE", Value::Str(text))]));
            }
        }
        "GRID" => {
            // Values are iterated whatever the keys, as PHP's foreach does: a single item map
            // yields its scalar fields, which are not items, so it produces nothing.
            let grid: Vec<Value> = body
                .as_array()
                .into_iter()
                .flat_map(Array::values)
                .filter_map(Value::as_array)
                .filter_map(grid_item)
                .map(Value::Arr)
                .collect();
            if !grid.is_empty() {
                out.push(Value::map([("GRID", Value::list(grid))]));
            }
        }
        // IMAGE and FILE differ from USER/LINK on purpose: the table says "each needs" of the
        // items, and the stored object shows `{"IMAGE":[…]}`, so all valid items of one input
        // block stay together in one block (a gallery, a file list) rather than being split.
        "IMAGE" | "FILE" => {
            let clean = if kind == "IMAGE" {
                image_item
            } else {
                file_item
            };
            let list: Vec<Value> = items(body).filter_map(clean).map(Value::Arr).collect();
            if !list.is_empty() {
                out.push(Value::map([(kind, Value::list(list))]));
            }
        }
        _ => out.push(Value::map([("DELIMITER", Value::Arr(delimiter(body)))])),
    }
}

/// "One map or list": a list's elements are the items, any other array is a single item, and a
/// scalar has no items.
fn items(body: &Value) -> Box<dyn Iterator<Item = &Array> + '_> {
    match body {
        Value::Arr(a) if a.is_list() => Box::new(a.values().filter_map(Value::as_array)),
        Value::Arr(a) => Box::new(std::iter::once(a)),
        _ => Box::new(std::iter::empty()),
    }
}

fn user_item(p: &Array) -> Option<Array> {
    let name = present(p, "NAME")
        .and_then(scalar_text)
        .map(|s| one_line(&s))?;
    if name.is_empty() {
        return None;
    }
    let mut out = Array::new();
    out.insert("NAME", Value::Str(name));
    // Inserted now to fix its position; a chat or bot target, or an explicit AVATAR_TYPE,
    // overwrites the value in place.
    out.insert("AVATAR_TYPE", Value::from("USER"));
    if let Some(id) = network_id(p) {
        out.insert("NETWORK_ID", Value::Str(id));
    } else if let Some(id) = positive(p, "USER_ID") {
        out.insert("USER_ID", Value::Int(id));
    } else if let Some(id) = positive(p, "CHAT_ID") {
        out.insert("CHAT_ID", Value::Int(id));
        out.insert("AVATAR_TYPE", Value::from("CHAT"));
    } else if let Some(id) = positive(p, "BOT_ID") {
        out.insert("BOT_ID", Value::Int(id));
        out.insert("AVATAR_TYPE", Value::from("BOT"));
    } else if let Some(link) = url(p, "LINK") {
        out.insert("LINK", Value::from(link));
    }
    if let Some(avatar) = url(p, "AVATAR") {
        out.insert("AVATAR", Value::from(avatar));
    }
    if let Some(t @ ("USER" | "CHAT" | "BOT")) = p.get_str("AVATAR_TYPE").and_then(Value::as_str) {
        out.insert("AVATAR_TYPE", Value::from(t));
    }
    Some(out)
}

/// The target shared by LINK and RICH_LINK: an entity (which then needs a NAME) or a URL.
fn link_target(p: &Array, out: &mut Array) -> Option<()> {
    let has_name = present(p, "NAME").and_then(scalar_text).is_some();
    if has_name {
        if let Some(id) = network_id(p) {
            out.insert("NETWORK_ID", Value::Str(id));
            return Some(());
        }
        for key in ["USER_ID", "CHAT_ID"] {
            if let Some(id) = positive(p, key) {
                out.insert(key, Value::Int(id));
                return Some(());
            }
        }
    }
    url(p, "LINK").map(|_| ())
}

/// What LINK and RICH_LINK items share: the target, the one-line NAME and a URL-like LINK.
fn link_head(p: &Array) -> Option<Array> {
    let mut out = Array::new();
    link_target(p, &mut out)?;
    if let Some(name) = present(p, "NAME").and_then(scalar_text) {
        out.insert("NAME", Value::Str(one_line(&name)));
    }
    // Bitrix copies LINK as given once an entity target exists; we keep it only when it is a
    // link the docs allow (§2.6.5: http(s) or portal-relative), so no `javascript:` survives.
    if let Some(link) = url(p, "LINK") {
        out.insert("LINK", Value::from(link));
    }
    Some(out)
}

fn link_item(p: &Array) -> Option<Array> {
    let mut out = link_head(p)?;
    for key in ["DESC", "HTML"] {
        if let Some(text) = present(p, key).and_then(scalar_text) {
            out.insert(key, Value::Str(text));
        }
    }
    if !out.contains_key("HTML") {
        if let Some(preview) = url(p, "PREVIEW") {
            out.insert("PREVIEW", Value::from(preview));
            for key in ["WIDTH", "HEIGHT"] {
                if let Some(n) = positive(p, key) {
                    out.insert(key, Value::Int(n));
                }
            }
        }
    }
    Some(out)
}

fn rich_link_item(p: &Array) -> Option<Array> {
    let mut out = link_head(p)?;
    for key in ["DESC", "HTML"] {
        if let Some(text) = present(p, key).and_then(scalar_text) {
            out.insert(key, Value::Str(one_line(&text)));
        }
    }
    if let Some(preview) = url(p, "PREVIEW") {
        out.insert("PREVIEW", Value::from(preview));
        let size = p.get_str("PREVIEW_SIZE").and_then(Value::as_array);
        let dim = |key| size.and_then(|s| s.get_str(key)).map_or(0, Value::intval);
        out.insert(
            "PREVIEW_SIZE",
            Value::map([
                ("HEIGHT", Value::Int(dim("HEIGHT"))),
                ("WIDTH", Value::Int(dim("WIDTH"))),
            ]),
        );
    } else if let Some(image) = url(p, "EXTRA_IMAGE") {
        out.insert("EXTRA_IMAGE", Value::from(image));
    }
    Some(out)
}

/// The MESSAGE block's text and whether it also becomes the attachment's DESCRIPTION.
fn message(body: &Value) -> Option<(String, bool)> {
    let (text, as_description) = match body {
        Value::Arr(m) => (
            present(m, "TEXT").and_then(scalar_text)?,
            m.get_str("AS_DESCRIPTION").and_then(Value::as_str) == Some("Y"),
        ),
        other => (scalar_text(other)?, false),
    };
    let text = php_trim(&text).replace("#BR#", "[BR]");
    (!text.is_empty()).then_some((text, as_description))
}

fn grid_item(g: &Array) -> Option<Array> {
    let display = g.get_str("DISPLAY").and_then(Value::as_str);
    let name = present(g, "NAME")
        .and_then(scalar_text)
        .map(|s| one_line(&s))
        .unwrap_or_default();
    let value = present(g, "VALUE")
        .and_then(scalar_text)
        .map(|s| php_trim(&s).replace("#BR#", "[BR]"))
        .unwrap_or_default();
    // The exemption looks at DISPLAY as sent, so a CARD (later LINE) still needs content, as in
    // Bitrix. Blankness is judged after cleaning so that a kept item stays kept when re-normalised.
    if display != Some("LINE") && name.is_empty() && value.is_empty() {
        return None;
    }
    let display = match display {
        Some(d @ ("BLOCK" | "LINE" | "ROW" | "TABLE")) => d,
        Some("COLUMN") => "ROW",
        Some("CARD") => "LINE",
        _ => "BLOCK",
    };
    let mut out = Array::new();
    out.insert("DISPLAY", Value::from(display));
    out.insert("NAME", Value::Str(name));
    out.insert("VALUE", Value::Str(value));
    if let Some(color) = hex_color(g, "COLOR") {
        out.insert("COLOR", Value::from(color));
    }
    for key in ["WIDTH", "HEIGHT", "USER_ID", "CHAT_ID"] {
        if let Some(n) = positive(g, key) {
            out.insert(key, Value::Int(n));
        }
    }
    if let Some(link) = url(g, "LINK") {
        out.insert("LINK", Value::from(link));
    }
    Some(out)
}

fn image_item(p: &Array) -> Option<Array> {
    let link = url(p, "LINK")?;
    let mut out = Array::new();
    // Image captions may span lines in Bitrix (only trimmed), unlike file names.
    if let Some(name) = present(p, "NAME").and_then(scalar_text) {
        let name = php_trim(&name);
        if !name.is_empty() {
            out.insert("NAME", Value::from(name));
        }
    }
    out.insert("LINK", Value::from(link));
    for key in ["WIDTH", "HEIGHT"] {
        if let Some(n) = positive(p, key) {
            out.insert(key, Value::Int(n));
        }
    }
    if let Some(preview) = url(p, "PREVIEW") {
        out.insert("PREVIEW", Value::from(preview));
    }
    Some(out)
}

fn file_item(p: &Array) -> Option<Array> {
    let link = url(p, "LINK")?;
    let mut out = Array::new();
    out.insert("LINK", Value::from(link));
    if let Some(name) = present(p, "NAME").and_then(scalar_text) {
        let name = one_line(&name);
        if !name.is_empty() {
            out.insert("NAME", Value::Str(name));
        }
    }
    if let Some(n) = positive(p, "SIZE") {
        out.insert("SIZE", Value::Int(n));
    }
    Some(out)
}

/// A delimiter always produces a block, even from a scalar like `"Y"`, as in Bitrix.
fn delimiter(body: &Value) -> Array {
    let params = body.as_array();
    let mut out = Array::new();
    let size = params
        .and_then(|p| positive(p, "SIZE"))
        .unwrap_or(DEFAULT_DELIMITER_SIZE);
    out.insert("SIZE", Value::Int(size));
    if let Some(color) = params.and_then(|p| hex_color(p, "COLOR")) {
        out.insert("COLOR", Value::from(color));
    }
    out
}

/// The attachment colour: `TRANSPARENT` is the one keyword, a hex colour is kept as given, and
/// anything else (including an absent COLOR) gets a palette colour, as the newest server does.
fn attachment_color(color: Option<&Value>, rng: &mut impl rand::Rng) -> String {
    match color.and_then(Value::as_str) {
        Some("TRANSPARENT") => "transparent".to_owned(),
        Some(c) if is_hex_color(c) => c.to_owned(),
        _ => PALETTE[rng.random_range(0..PALETTE.len())].to_owned(),
    }
}

fn hex_color<'a>(p: &'a Array, key: &str) -> Option<&'a str> {
    p.get_str(key)
        .and_then(Value::as_str)
        .filter(|c| is_hex_color(c))
}

/// PHP `isset($a[$key])`: present and not null.
fn present<'a>(a: &'a Array, key: &str) -> Option<&'a Value> {
    a.get_str(key).filter(|v| !v.is_null())
}

/// A scalar as PHP text. Arrays have none: PHP would fail on them where text is expected, and
/// we treat the field as absent instead.
fn scalar_text(v: &Value) -> Option<String> {
    v.is_scalar().then(|| v.to_php_string())
}

/// `intval($a[$key]) > 0`, with PHP's coercions (`"12px"` is 12).
fn positive(a: &Array, key: &str) -> Option<i64> {
    a.get_str(key).map(Value::intval).filter(|&n| n > 0)
}

/// A link Bitrix accepts: portal-relative or absolute http(s). Only strings qualify.
fn url<'a>(a: &'a Array, key: &str) -> Option<&'a str> {
    a.get_str(key)
        .and_then(Value::as_str)
        .filter(|s| is_link(s))
}

/// Bitrix's network id: the first character, then the integer value of the rest (`"X12"`,
/// `"X12abc"` → `"X12"`). An empty id is treated as absent: Bitrix would store `"0"`, which then
/// re-normalises to `"00"`, and such an id identifies nothing.
fn network_id(p: &Array) -> Option<String> {
    let raw = present(p, "NETWORK_ID").and_then(scalar_text)?;
    let mut chars = raw.chars();
    let first = chars.next()?;
    Some(format!("{first}{}", Value::from(chars.as_str()).intval()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Key;
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    const NOW: i64 = 1_760_000_000;

    fn j(s: &str) -> Value {
        Value::from_json(serde_json::from_str(s).expect("test JSON"))
    }

    fn norm(raw: &Value) -> Result<Option<Value>, AttachError> {
        normalize(raw, NOW, usize::MAX, &mut StdRng::seed_from_u64(7))
    }

    fn norm_ok(raw: &Value) -> Value {
        norm(raw).expect("valid attach").expect("truthy attach")
    }

    fn blocks(raw: &Value) -> Value {
        norm_ok(raw)
            .as_array()
            .and_then(|a| a.get_str("BLOCKS"))
            .cloned()
            .unwrap()
    }

    fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
        v.as_array().and_then(|a| a.get_str(key))
    }

    #[test]
    fn falsy_values_are_ignored() {
        for raw in [
            Value::Null,
            Value::from(""),
            Value::from("0"),
            Value::Int(0),
            Value::Float(0.0),
            Value::Bool(false),
            Value::empty_array(),
        ] {
            assert_eq!(norm(&raw), Ok(None), "{raw:?}");
        }
    }

    #[test]
    fn truthy_values_without_blocks_are_errors() {
        for raw in [
            Value::from(" "),
            Value::from("abc"),
            Value::from("[]"),
            Value::from("{}"),
            Value::from("null"),
            Value::from("5"),
            Value::from("\"text\""),
            Value::from("{'BLOCKS':[{'MESSAGE':'x'}]}"),
            Value::from("[{\"MESSAGE\":\"x\"}"),
            Value::Int(5),
            Value::Bool(true),
            Value::Float(1.5),
            j(r#"{"BLOCKS":[]}"#),
            j(r#"{"BLOCKS":"x"}"#),
            j(r#"{"BLOCKS":{"MESSAGE":"x"}}"#),
            j(r#"{"MESSAGE":"x"}"#),
            j(r#"[{"UNKNOWN":"x"}]"#),
            j(r#"[{"message":"x"}]"#),
            j(r#"["x", 1, null, true]"#),
            j(r#"[{"MESSAGE":"   "}, {"USER":{"NAME":""}}, {"GRID":[]}]"#),
        ] {
            assert_eq!(norm(&raw), Err(AttachError::Invalid), "{raw:?}");
        }
    }

    #[test]
    fn output_has_id_blocks_description_color_in_order() {
        let raw =
            j(r##"{"ID":5,"COLOR":"#ABC","DESCRIPTION":"  Hi  ","BLOCKS":[{"MESSAGE":"a"}]}"##);
        assert_eq!(
            norm_ok(&raw).to_php_json(),
            r##"{"ID":1760000000,"BLOCKS":[{"MESSAGE":"a"}],"DESCRIPTION":"Hi","COLOR":"#ABC"}"##
        );
    }

    #[test]
    fn short_and_full_form_give_the_same_blocks() {
        let list = r#"[{"MESSAGE":"a"},{"DELIMITER":{}},{"USER":{"NAME":"Ann","USER_ID":3}}]"#;
        let short = norm_ok(&j(list));
        let full = norm_ok(&j(&format!(r#"{{"BLOCKS":{list}}}"#)));
        assert_eq!(short, full);
        assert_eq!(field(&short, "DESCRIPTION"), None);
    }

    #[test]
    fn short_form_ignores_top_level_fields() {
        // Without BLOCKS the map's values are the blocks; COLOR and DESCRIPTION are not read.
        let out = norm_ok(&j(
            r##"{"COLOR":"#000","DESCRIPTION":"d","x":{"MESSAGE":"a"}}"##,
        ));
        assert_eq!(field(&out, "BLOCKS"), Some(&j(r#"[{"MESSAGE":"a"}]"#)));
        assert_eq!(field(&out, "DESCRIPTION"), None);
        let color = field(&out, "COLOR").and_then(Value::as_str).unwrap();
        assert!(PALETTE.contains(&color));
    }

    #[test]
    fn bracket_form_sparse_keys_are_iterated() {
        let mut a = Array::new();
        a.insert(3i64, j(r#"{"MESSAGE":"three"}"#));
        a.insert(1i64, j(r#"{"MESSAGE":"one"}"#));
        assert_eq!(
            blocks(&Value::Arr(a)),
            j(r#"[{"MESSAGE":"three"},{"MESSAGE":"one"}]"#)
        );
    }

    #[test]
    fn caller_id_is_ignored() {
        let out = norm_ok(&j(r#"{"ID":42,"BLOCKS":[{"MESSAGE":"a"}]}"#));
        assert_eq!(field(&out, "ID"), Some(&Value::Int(NOW)));
    }

    #[test]
    fn colors() {
        let color_of = |c: Value| {
            let mut raw = Array::new();
            raw.insert("BLOCKS", j(r#"[{"MESSAGE":"a"}]"#));
            raw.insert("COLOR", c);
            field(&norm_ok(&Value::Arr(raw)), "COLOR")
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        };
        assert_eq!(color_of("TRANSPARENT".into()), "transparent");
        assert_eq!(color_of("#abc".into()), "#abc");
        assert_eq!(color_of("#A1B2C3".into()), "#A1B2C3");
        for bad in [
            Value::from("transparent"),
            Value::from("#abcd"),
            Value::from("#ggg"),
            Value::from("red"),
            Value::from("#abc "),
            Value::from("CHAT"),
            Value::Int(123),
            Value::Null,
            j(r##"["#abc"]"##),
        ] {
            let c = color_of(bad.clone());
            assert!(PALETTE.contains(&c.as_str()), "{bad:?} -> {c}");
        }
        // Absent COLOR, short form: still a palette colour (newest-source behaviour).
        let c = norm_ok(&j(r#"[{"MESSAGE":"a"}]"#));
        assert!(PALETTE.contains(&field(&c, "COLOR").and_then(Value::as_str).unwrap()));
    }

    #[test]
    fn random_color_comes_from_the_rng() {
        let raw = j(r#"[{"MESSAGE":"a"}]"#);
        let seen: std::collections::HashSet<String> = (0..200)
            .map(|seed| {
                let out = normalize(&raw, NOW, usize::MAX, &mut StdRng::seed_from_u64(seed));
                field(&out.unwrap().unwrap(), "COLOR")
                    .and_then(Value::as_str)
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(seen.len() > 5, "{seen:?}");
        let again = |seed| normalize(&raw, NOW, usize::MAX, &mut StdRng::seed_from_u64(seed));
        assert_eq!(again(1), again(1));
    }

    #[test]
    fn palette_is_valid_hex() {
        assert!(PALETTE.len() >= 16);
        assert!(PALETTE.iter().all(|c| is_hex_color(c) && c.len() == 7));
    }

    #[test]
    fn message_blocks() {
        assert_eq!(
            blocks(&j(
                r#"[{"MESSAGE":"  a#BR#b\n "},{"MESSAGE":""},{"MESSAGE":"0"},{"MESSAGE":12},{"MESSAGE":true}]"#
            )),
            j(r#"[{"MESSAGE":"a[BR]b"},{"MESSAGE":"0"},{"MESSAGE":"12"},{"MESSAGE":"1"}]"#)
        );
        // Map form: TEXT is required, TEXT arrays and maps without TEXT are skipped.
        assert_eq!(
            blocks(&j(
                r#"[{"MESSAGE":{"TEXT":" t "}},{"MESSAGE":{"AS_DESCRIPTION":"Y"}},{"MESSAGE":{"TEXT":["x"]}},{"MESSAGE":{"TEXT":null}}]"#
            )),
            j(r#"[{"MESSAGE":"t"}]"#)
        );
        assert_eq!(
            norm(&j(r#"[{"MESSAGE":" \n\t"},{"MESSAGE":["a"]}]"#)),
            Err(AttachError::Invalid)
        );
    }

    #[test]
    fn description_sources() {
        let desc = |s: &str| field(&norm_ok(&j(s)), "DESCRIPTION").cloned();
        assert_eq!(
            desc(r#"{"DESCRIPTION":" top ","BLOCKS":[{"MESSAGE":"m"}]}"#),
            Some("top".into())
        );
        assert_eq!(
            desc(r#"{"DESCRIPTION":" ","BLOCKS":[{"MESSAGE":"m"}]}"#),
            None
        );
        assert_eq!(
            desc(r#"{"DESCRIPTION":["x"],"BLOCKS":[{"MESSAGE":"m"}]}"#),
            None
        );
        assert_eq!(
            desc(
                r#"{"DESCRIPTION":"top","BLOCKS":[{"MESSAGE":{"TEXT":"a#BR#b","AS_DESCRIPTION":"Y"}}]}"#
            ),
            Some("a[BR]b".into())
        );
        assert_eq!(
            desc(
                r#"[{"MESSAGE":{"TEXT":"first","AS_DESCRIPTION":"Y"}},{"MESSAGE":{"TEXT":"last","AS_DESCRIPTION":"Y"}}]"#
            ),
            Some("last".into())
        );
        assert_eq!(
            desc(r#"[{"MESSAGE":{"TEXT":"x","AS_DESCRIPTION":"y"}}]"#),
            None
        );
        assert_eq!(
            desc(r#"[{"MESSAGE":{"TEXT":"x","AS_DESCRIPTION":true}}]"#),
            None
        );
    }

    #[test]
    fn user_blocks() {
        let out = blocks(&j(r#"[
            {"USER":{"NAME":"Ann\nLee","USER_ID":"12abc","AVATAR":"https://a/x.png"}},
            {"USER":[{"NAME":"Chat","CHAT_ID":7},{"NAME":"Bot","BOT_ID":"9"},{"NAME":"Net","NETWORK_ID":"X00012z"}]},
            {"USER":{"NAME":"Web","LINK":"/company/","AVATAR":"javascript:x"}},
            {"USER":{"NAME":"Typed","CHAT_ID":3,"AVATAR_TYPE":"BOT"}},
            {"USER":{"NAME":"Plain","LINK":"ftp://x","AVATAR_TYPE":"user"}},
            {"USER":{"NAME":" \r\n "}},
            {"USER":{"USER_ID":5}},
            {"USER":{"NAME":["x"],"USER_ID":5}},
            {"USER":"Ann"},
            {"USER":["x",{"NAME":"0","USER_ID":0,"CHAT_ID":-1}]}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"USER":[{"NAME":"Ann Lee","AVATAR_TYPE":"USER","USER_ID":12,"AVATAR":"https://a/x.png"}]},
                {"USER":[{"NAME":"Chat","AVATAR_TYPE":"CHAT","CHAT_ID":7}]},
                {"USER":[{"NAME":"Bot","AVATAR_TYPE":"BOT","BOT_ID":9}]},
                {"USER":[{"NAME":"Net","AVATAR_TYPE":"USER","NETWORK_ID":"X12"}]},
                {"USER":[{"NAME":"Web","AVATAR_TYPE":"USER","LINK":"/company/"}]},
                {"USER":[{"NAME":"Typed","AVATAR_TYPE":"BOT","CHAT_ID":3}]},
                {"USER":[{"NAME":"Plain","AVATAR_TYPE":"USER"}]},
                {"USER":[{"NAME":"0","AVATAR_TYPE":"USER"}]}
            ]"#)
        );
    }

    #[test]
    fn user_target_priority() {
        let out = blocks(&j(
            r#"[{"USER":{"NAME":"A","BOT_ID":1,"CHAT_ID":2,"USER_ID":3,"NETWORK_ID":"N4","LINK":"/x"}},
                {"USER":{"NAME":"B","NETWORK_ID":"","USER_ID":3}}]"#,
        ));
        assert_eq!(
            out,
            j(
                r#"[{"USER":[{"NAME":"A","AVATAR_TYPE":"USER","NETWORK_ID":"N4"}]},
                  {"USER":[{"NAME":"B","AVATAR_TYPE":"USER","USER_ID":3}]}]"#
            )
        );
    }

    #[test]
    fn link_blocks() {
        let out = blocks(&j(r#"[
            {"LINK":{"NAME":" Site\n ","LINK":"https://x.test/a","DESC":" d ","PREVIEW":"/p.png","WIDTH":"100","HEIGHT":0}},
            {"LINK":[{"NAME":"Ann","USER_ID":5,"LINK":"javascript:alert(1)"},{"NAME":"C","CHAT_ID":"8"},{"NAME":"N","NETWORK_ID":"L7"}]},
            {"LINK":{"LINK":"/x","HTML":"<b>h</b>","PREVIEW":"/p.png","WIDTH":5}},
            {"LINK":{"USER_ID":5}},
            {"LINK":{"NAME":"x","LINK":"mailto:a@b"}},
            {"LINK":{"NAME":"x"}},
            {"LINK":"https://x.test"}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"LINK":[{"NAME":"Site","LINK":"https://x.test/a","DESC":" d ","PREVIEW":"/p.png","WIDTH":100}]},
                {"LINK":[{"USER_ID":5,"NAME":"Ann"}]},
                {"LINK":[{"CHAT_ID":8,"NAME":"C"}]},
                {"LINK":[{"NETWORK_ID":"L7","NAME":"N"}]},
                {"LINK":[{"LINK":"/x","HTML":"<b>h</b>"}]}
            ]"#)
        );
        assert_eq!(
            norm(&j(r#"[{"LINK":{"NAME":"x","LINK":"www.x.test"}}]"#)),
            Err(AttachError::Invalid)
        );
    }

    #[test]
    fn rich_link_blocks() {
        let out = blocks(&j(r#"[
            {"RICH_LINK":{"NAME":"T","LINK":"https://x.test","DESC":" a\nb ","HTML":" <i>\r\n</i>","PREVIEW":"/p","PREVIEW_SIZE":{"WIDTH":"640","HEIGHT":480},"EXTRA_IMAGE":"/e"}},
            {"RICH_LINK":[{"LINK":"/y","PREVIEW":"bad","EXTRA_IMAGE":"/e"},{"LINK":"/z","PREVIEW":"/p"}]},
            {"RICH_LINK":{"DESC":"no target"}}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"RICH_LINK":[{"NAME":"T","LINK":"https://x.test","DESC":"a b","HTML":"<i> </i>","PREVIEW":"/p","PREVIEW_SIZE":{"HEIGHT":480,"WIDTH":640}}]},
                {"RICH_LINK":[{"LINK":"/y","EXTRA_IMAGE":"/e"}]},
                {"RICH_LINK":[{"LINK":"/z","PREVIEW":"/p","PREVIEW_SIZE":{"HEIGHT":0,"WIDTH":0}}]}
            ]"#)
        );
    }

    #[test]
    fn grid_blocks() {
        let out = blocks(&j(r##"[{"GRID":[
            {"NAME":" Name\nX ","VALUE":" v#BR#w ","DISPLAY":"LINE","COLOR":"#fff","WIDTH":"250px","HEIGHT":-1,"USER_ID":"3","CHAT_ID":0,"LINK":"/l"},
            {"NAME":"n","DISPLAY":"COLUMN","COLOR":"white"},
            {"VALUE":"v","DISPLAY":"CARD"},
            {"VALUE":"v","DISPLAY":"weird"},
            {"NAME":"n","DISPLAY":"TABLE","LINK":"x"},
            {"DISPLAY":"LINE"},
            {"DISPLAY":"CARD"},
            {"NAME":" ","VALUE":"\n"},
            {"NAME":["a"],"VALUE":{"b":1}},
            "scalar"
        ]}]"##));
        assert_eq!(
            out,
            j(r##"[{"GRID":[
                {"DISPLAY":"LINE","NAME":"Name X","VALUE":"v[BR]w","COLOR":"#fff","WIDTH":250,"USER_ID":3,"LINK":"/l"},
                {"DISPLAY":"ROW","NAME":"n","VALUE":""},
                {"DISPLAY":"LINE","NAME":"","VALUE":"v"},
                {"DISPLAY":"BLOCK","NAME":"","VALUE":"v"},
                {"DISPLAY":"TABLE","NAME":"n","VALUE":""},
                {"DISPLAY":"LINE","NAME":"","VALUE":""}
            ]}]"##)
        );
        // A single map is iterated field by field and yields nothing; so does an all-blank list.
        for bad in [
            r#"[{"GRID":{"NAME":"n","VALUE":"v"}}]"#,
            r#"[{"GRID":[{"NAME":"","VALUE":""}]}]"#,
            r#"[{"GRID":"x"}]"#,
        ] {
            assert_eq!(norm(&j(bad)), Err(AttachError::Invalid), "{bad}");
        }
        // A map of item maps (bracket form with odd keys) is iterated like a list.
        assert_eq!(
            blocks(&j(r#"[{"GRID":{"a":{"NAME":"n"}}}]"#)),
            j(r#"[{"GRID":[{"DISPLAY":"BLOCK","NAME":"n","VALUE":""}]}]"#)
        );
    }

    #[test]
    fn image_blocks() {
        let out = blocks(&j(r#"[
            {"IMAGE":{"LINK":"/a.png","NAME":" a\nb ","WIDTH":"10","HEIGHT":"0","PREVIEW":"/s.png"}},
            {"IMAGE":[{"LINK":"https://x/1.png","NAME":" "},{"LINK":"x.png"},{"NAME":"no link"},{"LINK":"http://x/2.png","PREVIEW":"ftp://p"}]},
            {"IMAGE":[{"LINK":"bad"}]},
            {"IMAGE":"/a.png"}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"IMAGE":[{"NAME":"a\nb","LINK":"/a.png","WIDTH":10,"PREVIEW":"/s.png"}]},
                {"IMAGE":[{"LINK":"https://x/1.png"},{"LINK":"http://x/2.png"}]}
            ]"#)
        );
    }

    #[test]
    fn file_blocks() {
        let out = blocks(&j(r#"[
            {"FILE":{"LINK":"/f.pdf","NAME":" report\n2024 ","SIZE":"1024"}},
            {"FILE":[{"LINK":"https://x/a","NAME":"","SIZE":-3},{"LINK":"a"},{"LINK":"/b","SIZE":0}]},
            {"FILE":{"NAME":"x"}}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"FILE":[{"LINK":"/f.pdf","NAME":"report 2024","SIZE":1024}]},
                {"FILE":[{"LINK":"https://x/a"},{"LINK":"/b"}]}
            ]"#)
        );
        assert_eq!(
            norm(&j(r#"[{"FILE":[{"LINK":"f"}]}]"#)),
            Err(AttachError::Invalid)
        );
    }

    #[test]
    fn delimiter_blocks() {
        let out = blocks(&j(r##"[
            {"DELIMITER":{"SIZE":"300","COLOR":"#c6c6c6"}},
            {"DELIMITER":{"SIZE":-5,"COLOR":"gray"}},
            {"DELIMITER":"Y"},
            {"DELIMITER":false},
            {"DELIMITER":[]}
        ]"##));
        assert_eq!(
            out,
            j(r##"[
                {"DELIMITER":{"SIZE":300,"COLOR":"#c6c6c6"}},
                {"DELIMITER":{"SIZE":200}},
                {"DELIMITER":{"SIZE":200}},
                {"DELIMITER":{"SIZE":200}},
                {"DELIMITER":{"SIZE":200}}
            ]"##)
        );
        assert_eq!(
            norm(&j(r#"[{"DELIMITER":null}]"#)),
            Err(AttachError::Invalid)
        );
    }

    #[test]
    fn block_type_is_the_first_present_key() {
        let out = blocks(&j(r#"[
            {"MESSAGE":"m","USER":{"NAME":"u","USER_ID":1}},
            {"USER":null,"MESSAGE":"second"},
            {"USER":{"NAME":""},"MESSAGE":"not a fallback"},
            {"DELIMITER":{},"FILE":{"LINK":"/f"}}
        ]"#));
        assert_eq!(
            out,
            j(r#"[
                {"USER":[{"NAME":"u","AVATAR_TYPE":"USER","USER_ID":1}]},
                {"MESSAGE":"second"},
                {"FILE":[{"LINK":"/f"}]}
            ]"#)
        );
    }

    #[test]
    fn invalid_blocks_are_skipped_among_valid_ones() {
        let out = blocks(&j(
            r#"[{"MESSAGE":""},"text",5,null,{"IMAGE":{"LINK":"x"}},{"MESSAGE":"ok"},{"LINK":{}}]"#,
        ));
        assert_eq!(out, j(r#"[{"MESSAGE":"ok"}]"#));
    }

    #[test]
    fn html_blocks_are_not_accepted() {
        assert_eq!(
            norm(&j(r#"[{"HTML":"<b>x</b>"}]"#)),
            Err(AttachError::Invalid)
        );
    }

    #[test]
    fn json_string_input_equals_decoded_input() {
        let text = r##"{"COLOR":"#123456","BLOCKS":[{"MESSAGE":"a\/b"},{"GRID":[{"NAME":"n","VALUE":"é"}]}]}"##;
        assert_eq!(norm(&Value::from(text)), norm(&j(text)));
        let list = r#"[{"MESSAGE":"x"}]"#;
        assert_eq!(norm(&Value::from(list)), norm(&j(list)));
        // Literal `\n` sequences are real JSON escapes here, not Bitrix's post-parse conversion.
        assert_eq!(
            blocks(&Value::from(r#"[{"MESSAGE":"a\\nb"}]"#)),
            j(r#"[{"MESSAGE":"a\\nb"}]"#)
        );
    }

    /// `{"ID":1,"BLOCKS":[{"MESSAGE":"<text>"}],"COLOR":"#000000"}` is this many bytes plus the
    /// text's encoded length.
    const MESSAGE_OVERHEAD: usize =
        r##"{"ID":1,"BLOCKS":[{"MESSAGE":""}],"COLOR":"#000000"}"##.len();

    fn sized(text: &str, max: usize) -> Result<Option<Value>, AttachError> {
        let mut raw = Array::new();
        raw.insert(
            "BLOCKS",
            Value::list([Value::map([("MESSAGE", text.into())])]),
        );
        raw.insert("COLOR", "#000000".into());
        normalize(&Value::Arr(raw), 1, max, &mut StdRng::seed_from_u64(0))
    }

    #[test]
    fn oversize_boundary_is_inclusive() {
        let limit = DEFAULT_MAX_BYTES;
        let text = "x".repeat(limit - MESSAGE_OVERHEAD);
        let ok = sized(&text, limit).unwrap().unwrap();
        assert_eq!(
            ok.to_php_json(),
            format!(r##"{{"ID":1,"BLOCKS":[{{"MESSAGE":"{text}"}}],"COLOR":"#000000"}}"##)
        );
        assert_eq!(ok.to_php_json().len(), limit);
        assert_eq!(sized(&text, limit - 1), Err(AttachError::Oversize));
        let longer = "x".repeat(limit - MESSAGE_OVERHEAD + 1);
        assert_eq!(sized(&longer, limit), Err(AttachError::Oversize));
        assert!(sized(&longer, limit + 1).unwrap().is_some());
    }

    #[test]
    fn size_counts_encoded_bytes() {
        // "é" is two bytes; "/" is written as "\/" and '"' as "\"", two bytes each.
        let text = "é/\"";
        let max = MESSAGE_OVERHEAD + 6;
        assert!(sized(text, max).unwrap().is_some());
        assert_eq!(sized(text, max - 1), Err(AttachError::Oversize));
    }

    #[test]
    fn oversize_only_after_normalising() {
        // Dropped blocks and trimmed padding do not count towards the limit.
        let padding = " ".repeat(100_000);
        let raw = Value::list([
            Value::map([("MESSAGE", Value::from(format!("{padding}x{padding}")))]),
            Value::map([("IMAGE", Value::map([("LINK", Value::from(padding))]))]),
        ]);
        let out = normalize(&raw, 1, 100, &mut StdRng::seed_from_u64(0));
        assert!(out.unwrap().is_some());
    }

    #[test]
    fn oversize_on_the_raw_count_before_normalising() {
        let cap = max_raw_nodes(DEFAULT_MAX_BYTES);
        let block = || Value::map([("MESSAGE", Value::from("x"))]);
        let many = Value::list((0..cap).map(|_| block()));
        let out = normalize(&many, 1, DEFAULT_MAX_BYTES, &mut StdRng::seed_from_u64(0));
        assert_eq!(out, Err(AttachError::Oversize));
        let json = format!("[{}]", vec![r#"{"MESSAGE":"x"}"#; cap].join(","));
        let out = normalize(
            &Value::Str(json),
            1,
            DEFAULT_MAX_BYTES,
            &mut StdRng::seed_from_u64(0),
        );
        assert_eq!(out, Err(AttachError::Oversize));
        // Commas inside texts are not values.
        let commas = format!(r#"[{{"MESSAGE":"{}"}}]"#, ",".repeat(cap * 2));
        let out = normalize(
            &Value::Str(commas),
            1,
            1 << 20,
            &mut StdRng::seed_from_u64(0),
        );
        assert!(out.unwrap().is_some());
    }

    #[test]
    fn errors_render_bitrix_codes() {
        assert_eq!(AttachError::Invalid.code(), "ATTACH_ERROR");
        assert_eq!(AttachError::Oversize.code(), "ATTACH_OVERSIZE");
        assert_eq!(
            AttachError::Oversize.to_string(),
            "You have exceeded the maximum allowable size of attach"
        );
        assert_eq!(
            AttachError::Invalid.description(),
            "Incorrect attach params"
        );
    }

    #[test]
    fn one_line_replaces_each_break_with_a_space() {
        assert_eq!(one_line("a\r\nb\nc\rd\u{2028}e\x0Cf"), "a b c d e f");
        assert_eq!(one_line(" a\n\nb \x0C"), "a  b");
    }

    // ---- property tests ----

    /// Keys that the normaliser reads, so that random input hits real code paths.
    const FIELDS: &[&str] = &[
        "BLOCKS",
        "COLOR",
        "DESCRIPTION",
        "ID",
        "USER",
        "LINK",
        "RICH_LINK",
        "MESSAGE",
        "GRID",
        "IMAGE",
        "FILE",
        "DELIMITER",
        "HTML",
        "NAME",
        "VALUE",
        "TEXT",
        "AS_DESCRIPTION",
        "DISPLAY",
        "USER_ID",
        "CHAT_ID",
        "BOT_ID",
        "NETWORK_ID",
        "AVATAR",
        "AVATAR_TYPE",
        "DESC",
        "PREVIEW",
        "PREVIEW_SIZE",
        "EXTRA_IMAGE",
        "WIDTH",
        "HEIGHT",
        "SIZE",
    ];

    const STRINGS: &[&str] = &[
        "",
        "0",
        " ",
        "Y",
        "N",
        "x",
        "12abc",
        "-5",
        "LINE",
        "CARD",
        "COLUMN",
        "ROW",
        "TABLE",
        "BLOCK",
        "USER",
        "CHAT",
        "BOT",
        "TRANSPARENT",
        "#fff",
        "#A0B1C2",
        "#abcd",
        "/path",
        "http://x.test/a",
        "https://x.test/b",
        "javascript:x",
        "a#BR#b",
        "#B#BR#R#",
        " a\r\nb ",
        "\u{2028}",
        "\x0C x \x0B",
        "é/\"\\",
        "X12",
        "{\"MESSAGE\":\"json\"}",
    ];

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(STRINGS).prop_map(str::to_owned),
            1 => ".{0,12}",
            1 => "[ \\t\\r\\n\\x0B\\x0C\u{85}\u{2028}#BRa/:h]{0,10}",
        ]
    }

    fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..400).prop_map(Value::Int),
            any::<i64>().prop_map(Value::Int),
            // Short dyadic fractions only: NaN and infinities have no JSON form, and serde_json
            // (without `float_roundtrip`) may misread the last digit of long ones.
            (-8_000_000i32..8_000_000).prop_map(|n| Value::Float(f64::from(n) / 8.0)),
            arb_text().prop_map(Value::Str),
        ]
    }

    fn arb_key() -> impl Strategy<Value = Key> {
        prop_oneof![
            4 => prop::sample::select(FIELDS).prop_map(Key::from),
            1 => (0i64..4).prop_map(Key::Int),
            1 => "[a-z0-9]{0,3}".prop_map(Key::from),
        ]
    }

    /// Arbitrary nested PHP values, biased towards the keys and strings ATTACH uses.
    fn arb_value() -> impl Strategy<Value = Value> {
        arb_scalar().prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::list),
                prop::collection::vec((arb_key(), inner), 0..6)
                    .prop_map(|kv| Value::Arr(kv.into_iter().collect())),
            ]
        })
    }

    /// A field of a block item, usually with a value of the kind that field expects.
    fn arb_field(fields: &'static [&'static str]) -> BoxedStrategy<(Key, Value)> {
        prop::sample::select(fields)
            .prop_flat_map(|f| {
                let pick = |options: &'static [&'static str]| {
                    prop::sample::select(options).prop_map(Value::from).boxed()
                };
                let typed = match f {
                    "LINK" | "AVATAR" | "PREVIEW" | "EXTRA_IMAGE" => pick(&[
                        "/p",
                        "http://x.test/a",
                        "https://x.test/b",
                        "x.test",
                        "javascript:x",
                    ]),
                    "USER_ID" | "CHAT_ID" | "BOT_ID" | "WIDTH" | "HEIGHT" | "SIZE" => prop_oneof![
                        (-2i64..50).prop_map(Value::Int),
                        (-2i64..50).prop_map(|n| Value::Str(format!("{n}px"))),
                    ]
                    .boxed(),
                    "COLOR" => pick(&[
                        "#fff",
                        "#A0B1C2",
                        "TRANSPARENT",
                        "transparent",
                        "red",
                        "#abcd",
                    ]),
                    "DISPLAY" => pick(&["BLOCK", "LINE", "ROW", "TABLE", "COLUMN", "CARD", "line"]),
                    "AS_DESCRIPTION" => pick(&["Y", "N", "y"]),
                    "AVATAR_TYPE" => pick(&["USER", "CHAT", "BOT", "bot"]),
                    "NETWORK_ID" => pick(&["", "X", "X12", "L007z", "5", "-"]),
                    "PREVIEW_SIZE" => ((-2i64..900), (-2i64..900))
                        .prop_map(|(h, w)| {
                            Value::map([("HEIGHT", Value::Int(h)), ("WIDTH", w.into())])
                        })
                        .boxed(),
                    _ => arb_text().prop_map(Value::Str).boxed(),
                };
                (
                    Just(Key::from(f)),
                    prop_oneof![4 => typed, 1 => arb_scalar()],
                )
            })
            .boxed()
    }

    /// The fields each block kind reads, so that generated items are often valid.
    fn fields_of(kind: &str) -> &'static [&'static str] {
        match kind {
            "USER" => &[
                "NAME",
                "USER_ID",
                "CHAT_ID",
                "BOT_ID",
                "NETWORK_ID",
                "LINK",
                "AVATAR",
                "AVATAR_TYPE",
            ],
            "LINK" | "RICH_LINK" => &[
                "NAME",
                "LINK",
                "USER_ID",
                "CHAT_ID",
                "NETWORK_ID",
                "DESC",
                "HTML",
                "PREVIEW",
                "WIDTH",
                "HEIGHT",
                "PREVIEW_SIZE",
                "EXTRA_IMAGE",
            ],
            "MESSAGE" => &["TEXT", "AS_DESCRIPTION"],
            "GRID" => &[
                "NAME", "VALUE", "DISPLAY", "COLOR", "WIDTH", "HEIGHT", "USER_ID", "CHAT_ID",
                "LINK",
            ],
            "IMAGE" => &["LINK", "NAME", "WIDTH", "HEIGHT", "PREVIEW"],
            "FILE" => &["LINK", "NAME", "SIZE"],
            _ => &["SIZE", "COLOR"],
        }
    }

    /// Attachments shaped like real ones: blocks with a block key over item maps of known fields.
    fn arb_attach() -> impl Strategy<Value = Value> {
        let block = prop::sample::select(&BLOCK_KINDS[..]).prop_flat_map(|kind| {
            let field = prop_oneof![4 => arb_field(fields_of(kind)), 1 => arb_field(FIELDS)];
            let item = prop::collection::vec(field, 0..7)
                .prop_map(|kv| Value::Arr(kv.into_iter().collect()));
            let body = prop_oneof![
                3 => item.clone(),
                3 => prop::collection::vec(item, 0..4).prop_map(Value::list),
                1 => arb_scalar(),
            ];
            body.prop_map(move |b| Value::map([(kind, b)]))
        });
        let block_list = prop::collection::vec(block, 0..5).prop_map(Value::list);
        prop_oneof![
            block_list.clone(),
            (block_list, arb_scalar(), arb_scalar()).prop_map(|(b, color, desc)| {
                Value::map([
                    ("ID", Value::Int(3)),
                    ("BLOCKS", b),
                    ("COLOR", color),
                    ("DESCRIPTION", desc),
                ])
            }),
        ]
    }

    fn arb_input() -> impl Strategy<Value = Value> {
        prop_oneof![
            arb_value(),
            arb_attach(),
            arb_attach().prop_map(|v| Value::Str(v.to_php_json())),
        ]
    }

    /// serde_json (without `preserve_order`) returns object keys sorted; sorting the same way
    /// first makes the map and its JSON text describe the same PHP array.
    fn sort_keys(v: &Value) -> Value {
        match v {
            Value::Arr(a) => {
                let mut kv: Vec<(Key, Value)> =
                    a.iter().map(|(k, v)| (k.clone(), sort_keys(v))).collect();
                if !a.is_list() {
                    kv.sort_by_key(|(k, _)| k.as_string());
                }
                Value::Arr(kv.into_iter().collect())
            }
            other => other.clone(),
        }
    }

    fn color_is_valid(c: &str) -> bool {
        c == "transparent" || is_hex_color(c)
    }

    proptest! {
        // No regression files: failures are reported with their minimal input instead.
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn prop_output_invariants(raw in arb_input(), max in prop_oneof![0usize..400, Just(usize::MAX)], seed: u64) {
            let result = normalize(&raw, NOW, max, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(raw.is_empty(), matches!(result, Ok(None)));
            match result {
                Ok(Some(out)) => {
                    let a = out.as_array().unwrap();
                    prop_assert_eq!(a.get_str("ID"), Some(&Value::Int(NOW)));
                    let blocks = a.get_str("BLOCKS").and_then(Value::as_array).unwrap();
                    prop_assert!(!blocks.is_empty() && blocks.is_list());
                    let color = a.get_str("COLOR").and_then(Value::as_str).unwrap();
                    prop_assert!(color_is_valid(color), "{}", color);
                    if let Some(d) = a.get_str("DESCRIPTION") {
                        prop_assert!(!d.as_str().unwrap().is_empty());
                    }
                    let keys: Vec<String> = a.iter().map(|(k, _)| k.as_string()).collect();
                    prop_assert!(
                        keys == ["ID", "BLOCKS", "COLOR"] || keys == ["ID", "BLOCKS", "DESCRIPTION", "COLOR"],
                        "{:?}", keys
                    );
                    prop_assert!(out.to_php_json().len() <= max);
                }
                Ok(None) => {}
                Err(AttachError::Oversize) => {
                    let unlimited = normalize(&raw, NOW, usize::MAX, &mut StdRng::seed_from_u64(seed));
                    let out = unlimited.unwrap().unwrap();
                    prop_assert!(out.to_php_json().len() > max);
                }
                Err(AttachError::Invalid) => {
                    let unlimited = normalize(&raw, NOW, usize::MAX, &mut StdRng::seed_from_u64(seed));
                    prop_assert_eq!(unlimited, Err(AttachError::Invalid));
                }
            }
        }

        #[test]
        fn prop_normalising_twice_is_stable(raw in prop_oneof![3 => arb_attach(), 1 => arb_value()], seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            if let Ok(Some(first)) = normalize(&raw, NOW, usize::MAX, &mut rng) {
                let first_blocks = field(&first, "BLOCKS").unwrap();

                let again = normalize(&first, NOW + 1, usize::MAX, &mut rng).unwrap().unwrap();
                prop_assert_eq!(field(&again, "BLOCKS").unwrap(), first_blocks);
                prop_assert_eq!(field(&again, "DESCRIPTION"), field(&first, "DESCRIPTION"));
                let color = field(&first, "COLOR").and_then(Value::as_str).unwrap();
                if color != "transparent" {
                    prop_assert_eq!(field(&again, "COLOR").and_then(Value::as_str), Some(color));
                }

                let short = normalize(first_blocks, NOW, usize::MAX, &mut rng).unwrap().unwrap();
                prop_assert_eq!(field(&short, "BLOCKS").unwrap(), first_blocks);
            }
        }

        #[test]
        fn prop_json_string_matches_map(raw in prop_oneof![arb_attach(), arb_value()], max in prop_oneof![0usize..400, Just(usize::MAX)], seed: u64) {
            let raw = sort_keys(&raw);
            prop_assume!(matches!(&raw, Value::Arr(a) if !a.is_empty()));
            let text = Value::Str(raw.to_php_json());
            let from_map = normalize(&raw, NOW, max, &mut StdRng::seed_from_u64(seed));
            let from_text = normalize(&text, NOW, max, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(from_map, from_text);
        }
    }

    /// The client's builders (imnotify-wire) make only blocks this normaliser keeps as they
    /// are, and what it produces reads back as the wire types.
    #[test]
    fn wire_builders_make_what_the_normaliser_keeps() {
        use imnotify_wire::attach as w;
        use std::num::NonZeroU64;
        let url = |s: &str| w::Url::new(s).unwrap();
        let id = |n| NonZeroU64::new(n).unwrap();
        let built = w::Attach::new(vec![
            w::Block::user(
                w::User::new(" Ann\nLee ")
                    .unwrap()
                    .user_id(id(5))
                    .avatar(url("/a.png")),
            ),
            w::Block::user(w::User::new("Ops").unwrap().chat_id(id(9))),
            w::Block::user(w::User::new("CI").unwrap().bot_id(id(2))),
            w::Block::user(w::User::new("Web").unwrap().link(url("https://x.example"))),
            w::Block::link(
                w::Link::new(url("https://x.example/a"))
                    .name("A\r\nB")
                    .desc("about")
                    .preview(url("/p.png"), 100, 50),
            )
            .unwrap(),
            w::Block::rich_link(
                w::RichLink::new(url("/docs"))
                    .name("Docs")
                    .desc("x\ny")
                    .preview(url("/p"), 10, 20),
            ),
            w::Block::rich_link(w::RichLink::new(url("/e")).extra_image(url("/e.png"))),
            w::Block::message(" Total#BR#100 ").unwrap(),
            w::Block::grid(vec![
                w::GridItem::new(w::Display::Row, "Branch", "main")
                    .unwrap()
                    .color(w::HexColor::new("#f00").unwrap())
                    .width(id(120))
                    .link(url("/b")),
                w::GridItem::new(w::Display::Line, "", "").unwrap(),
            ])
            .unwrap(),
            w::Block::images(vec![w::Image::new(url("/i.png"))
                .name("Pic")
                .size(3, 4)
                .preview(url("/s.png"))])
            .unwrap(),
            w::Block::files(vec![w::File::new(url("/f.pdf")).name("f.pdf").size(1024)]).unwrap(),
            w::Block::Delimiter(
                w::Delimiter::default()
                    .size(id(30))
                    .color(w::HexColor::new("#ccc").unwrap()),
            ),
            w::Block::delimiter(),
        ])
        .unwrap()
        .description("Summary")
        .color(w::HexColor::new("#123abc").unwrap());

        let sent = serde_json::to_value(&built).unwrap();
        let stored = norm_ok(&Value::from_json(sent.clone()));
        let stored: serde_json::Value = serde_json::from_str(&stored.to_php_json()).unwrap();
        let mut expected = serde_json::json!({"ID": NOW});
        for (k, v) in sent.as_object().unwrap() {
            expected[k] = v.clone();
        }
        assert_eq!(stored, expected);
        let read: w::Attach = serde_json::from_value(stored).unwrap();
        assert_eq!(read.id, Some(NOW));
        assert_eq!(read.blocks, built.blocks);
    }
}
