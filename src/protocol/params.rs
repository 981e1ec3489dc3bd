//! Request-parameter decoding: PHP's form-variable rules (`parse_str`, `$_GET`, `$_POST`) and the
//! REST layer's raw-body fallback with its JSON branch (§1.4, decision P2).

use std::convert::Infallible;

use bytes::Bytes;

use crate::value::{php_trim, Array, Key, Value};

/// PHP's input limits. Excess input is dropped silently, as PHP does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// PHP `max_input_vars`.
    pub max_input_vars: usize,
    /// PHP `max_input_nesting_level`.
    pub max_nesting: usize,
}

impl DecodeLimits {
    pub fn from_config(limits: &crate::config::Limits) -> DecodeLimits {
        DecodeLimits {
            max_input_vars: limits.max_input_vars,
            max_nesting: limits.max_input_nesting,
        }
    }

    /// The node budget of a JSON body: values of any kind, containers included. Four per
    /// variable leaves room for the arrays that hold the variables (an ATTACH block is one map
    /// per value or two), and the nesting limit for one deep chain.
    pub fn max_json_nodes(&self) -> usize {
        self.max_input_vars
            .saturating_mul(4)
            .saturating_add(self.max_nesting)
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_input_vars: 1000,
            max_nesting: 64,
        }
    }
}

/// PHP `parse_str` over a query or form string: splits on `&`, url-decodes (`+` is a space, a bad
/// `%XX` stays literal, invalid UTF-8 is replaced), and builds bracket arrays.
pub fn parse_str(input: &str, limits: &DecodeLimits) -> Array {
    let mut out = Array::new();
    // Empty segments (`a=1&&b=2`) are skipped before counting, as PHP's tokenizer does; a segment
    // such as `=1` still counts even though its empty name is then dropped.
    for (count, (name, value)) in form_urlencoded::parse(input.as_bytes()).enumerate() {
        if count >= limits.max_input_vars {
            break;
        }
        register_variable(&mut out, &name, Value::Str(value.into_owned()), limits);
    }
    out
}

/// Adds one variable `name` = `value` under PHP's `php_register_variable_ex` rules.
pub fn register_variable(target: &mut Array, name: &str, value: Value, limits: &DecodeLimits) {
    // PHP reads the decoded name as a C string, so an embedded NUL ends it.
    let name = name.split('\0').next().unwrap_or_default();
    let name = name.trim_start_matches(' ');
    let (top, mut rest) = match name.split_once('[') {
        Some((top, rest)) => (top, Some(rest)),
        None => (name, None),
    };
    let mut top: String = top.chars().map(|c| underscore_if(c, &[' ', '.'])).collect();
    if top.is_empty() {
        return;
    }
    // `None` is an append (`[]`).
    let mut path: Vec<Option<&str>> = Vec::new();
    while let Some(r) = rest {
        if path.len() >= limits.max_nesting {
            // PHP discards the whole top-level variable, including parts earlier variables set.
            target.remove(&top);
            return;
        }
        let tail = if let Some(tail) = r.strip_prefix(' ').unwrap_or(r).strip_prefix(']') {
            // PHP skips one space before testing for `]`, so `[ ]` appends too.
            path.push(None);
            tail
        } else if let Some((index, tail)) = r.split_once(']') {
            path.push(Some(index));
            tail
        } else if path.is_empty() {
            // No array after all: PHP 8 keeps the rest of the name in a plain variable.
            top.push('_');
            top.extend(r.chars().map(|c| underscore_if(c, &[' ', '.', '['])));
            break;
        } else {
            break;
        };
        rest = tail.strip_prefix('[');
    }
    assign(target, Key::from(top), &path, value);
}

fn underscore_if(c: char, set: &[char]) -> char {
    if set.contains(&c) {
        '_'
    } else {
        c
    }
}

/// Stores `value` at `target[top][path...]`, turning scalars met on the way into arrays.
fn assign(target: &mut Array, top: Key, path: &[Option<&str>], value: Value) {
    let mut arr = target;
    let mut key = Some(top);
    for index in path {
        arr = match descend(arr, key) {
            Some(child) => child,
            None => return,
        };
        key = index.map(Key::from_php_str);
    }
    match key {
        Some(k) => arr.insert(k, value),
        None if next_slot_free(arr) => arr.push(value),
        None => {}
    }
}

/// `$arr[$key]` as an array (a scalar there is replaced in place); no key appends a new array.
fn descend(arr: &mut Array, key: Option<Key>) -> Option<&mut Array> {
    let key = match key {
        Some(k) => k,
        None => {
            if !next_slot_free(arr) {
                return None;
            }
            arr.push(Value::empty_array());
            // A push always adds a new entry, so it is the last one.
            arr.iter().last()?.0.clone()
        }
    };
    if !matches!(arr.get(&key), Some(Value::Arr(_))) {
        arr.insert(key.clone(), Value::empty_array());
    }
    match arr.get_mut(&key) {
        Some(Value::Arr(child)) => Some(child),
        _ => None,
    }
}

/// PHP refuses `$a[] = ...` once the next index is stuck at `i64::MAX` and taken (the variable is
/// dropped), whereas `Array::push` would overwrite that entry. Without removals (which never
/// happen below the top level here), that is exactly the case where the key `i64::MAX` exists.
fn next_slot_free(arr: &Array) -> bool {
    arr.get(&Key::Int(i64::MAX)).is_none()
}

/// The whole request's parameters: the query string, then (for POST only) the body laid over it
/// key by key at the top level (§1.4, P2).
pub async fn decode_request(
    is_post: bool,
    query: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
    limits: &DecodeLimits,
) -> Array {
    let mut params = query.map(|q| parse_str(q, limits)).unwrap_or_default();
    if is_post {
        let body_params = decode_body(content_type.unwrap_or_default(), body, limits).await;
        params.overlay(body_params);
    }
    params
}

enum FormKind {
    UrlEncoded,
    Multipart,
}

/// Which body PHP itself parses into `$_POST`: its SAPI lower-cases the Content-Type and cuts it at
/// the first `;`, `,` or space before comparing.
fn php_form_kind(content_type: &str) -> Option<FormKind> {
    let end = content_type
        .find([';', ',', ' '])
        .unwrap_or(content_type.len());
    match content_type[..end].to_ascii_lowercase().as_str() {
        "application/x-www-form-urlencoded" => Some(FormKind::UrlEncoded),
        "multipart/form-data" => Some(FormKind::Multipart),
        _ => None,
    }
}

async fn decode_body(content_type: &str, body: Bytes, limits: &DecodeLimits) -> Array {
    let form = match php_form_kind(content_type) {
        Some(FormKind::UrlEncoded) => parse_str(&String::from_utf8_lossy(&body), limits),
        // PHP leaves php://input empty for multipart requests, so there is no raw fallback.
        Some(FormKind::Multipart) => return parse_multipart(content_type, body, limits).await,
        None => Array::new(),
    };
    if form.is_empty() {
        decode_raw_body(content_type, &body, limits)
    } else {
        form
    }
}

/// Bitrix's own fallback when PHP produced no form fields (`CRestUtil::getRequestData`).
fn decode_raw_body(content_type: &str, body: &[u8], limits: &DecodeLimits) -> Array {
    let media_type = php_trim(content_type.split(';').next().unwrap_or_default());
    if media_type == "application/json" {
        // PHP's json_decode rejects invalid UTF-8, and every decode error means "no parameters".
        let Ok(text) = std::str::from_utf8(body) else {
            return Array::new();
        };
        let text = php_trim(text);
        if !json_within_budget(text.as_bytes(), limits) {
            tracing::info!(
                bytes = body.len(),
                "json body over the input budget: no parameters"
            );
            return Array::new();
        }
        return match Value::parse_json(text) {
            Ok(Value::Arr(a)) => a,
            _ => Array::new(),
        };
    }
    parse_str(php_trim(&String::from_utf8_lossy(body)), limits)
}

/// Whether a JSON text stays within the form decoder's limits, checked on the bytes before
/// anything is built (issue 10), so a body of 8 MB of `[],` costs one pass and no allocation:
///
/// - variables: leaf values (scalars and empty containers) at most `max_input_vars`. In valid
///   JSON whose top is a container, the leaves number exactly the commas plus one;
/// - nesting: containers at most `max_nesting + 1` deep (the top object is the parameter array
///   itself, so `{"a":{"b":1}}` is the form's `a[b]=1`, nesting 1);
/// - nodes: every value, containers included, at most [`DecodeLimits::max_json_nodes`].
///
/// Over any of them the body gives no parameters, as an undecodable body does (P2): PHP's
/// `json_decode` also answers nothing at all, not a prefix, past its depth. Cutting a JSON
/// document after its n-th leaf, as PHP cuts form variables, would hand a method half an
/// array. On invalid JSON the counts may be off, but such a body gives no parameters anyway.
pub fn json_within_budget(text: &[u8], limits: &DecodeLimits) -> bool {
    let max_depth = limits.max_nesting.saturating_add(1);
    let max_nodes = limits.max_json_nodes();
    // Every value but the top one follows either a comma or the bracket of a container that is
    // not empty, so the values number `commas + filled + 1`; both only grow as the scan goes.
    let (mut depth, mut commas, mut filled) = (0usize, 0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    // Just after `[` or `{`: whether that container gets a first value is not known yet.
    let mut opened = false;
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        if opened && !matches!(b, b']' | b'}') {
            filled += 1;
        }
        opened = false;
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
                opened = true;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => {
                commas += 1;
                if commas >= limits.max_input_vars {
                    return false;
                }
            }
            _ => {}
        }
        if commas + filled + 1 > max_nodes {
            return false;
        }
    }
    true
}

/// Non-file parts of a multipart body, in order. Any framing error makes the whole body empty.
async fn parse_multipart(content_type: &str, body: Bytes, limits: &DecodeLimits) -> Array {
    let Ok(boundary) = multer::parse_boundary(content_type) else {
        return Array::new();
    };
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut fields = Array::new();
    let mut count = 0usize;
    loop {
        let field = match parts.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return fields,
            Err(_) => return Array::new(),
        };
        // Uploads go to PHP's $_FILES, which the REST layer never reads; they are not counted.
        if field.file_name().is_some() {
            continue;
        }
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let Ok(data) = field.bytes().await else {
            return Array::new();
        };
        count += 1;
        if count <= limits.max_input_vars {
            let value = Value::Str(String::from_utf8_lossy(&data).into_owned());
            register_variable(&mut fields, &name, value, limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::runtime::Builder;

    fn lim(max_input_vars: usize, max_nesting: usize) -> DecodeLimits {
        DecodeLimits {
            max_input_vars,
            max_nesting,
        }
    }

    fn ps(s: &str) -> Array {
        parse_str(s, &DecodeLimits::default())
    }

    /// Leaves in order as `top[key]...=value`, integer keys marked `#`: unlike `Array`'s `==`,
    /// this sees the order and the key types.
    fn leaves(a: &Array) -> Vec<String> {
        fn walk(a: &Array, prefix: &str, out: &mut Vec<String>) {
            for (k, v) in a.iter() {
                let k = match k {
                    Key::Int(i) => format!("#{i}"),
                    Key::Str(s) => s.clone(),
                };
                let path = match prefix {
                    "" => k,
                    p => format!("{p}[{k}]"),
                };
                match v {
                    Value::Arr(child) => walk(child, &path, out),
                    Value::Str(s) => out.push(format!("{path}={s}")),
                    other => out.push(format!("{path}={other:?}")),
                }
            }
        }
        let mut out = Vec::new();
        walk(a, "", &mut out);
        out
    }

    fn dump(a: &Array) -> String {
        leaves(a).join("&")
    }

    fn decode_with(l: &DecodeLimits, is_post: bool, q: &str, ct: &str, body: &[u8]) -> Array {
        let fut = decode_request(is_post, Some(q), Some(ct), Bytes::copy_from_slice(body), l);
        Builder::new_current_thread().build().unwrap().block_on(fut)
    }

    /// A POST under the default limits, as `dump` shows it.
    fn post(q: &str, ct: &str, body: &[u8]) -> String {
        dump(&decode_with(&DecodeLimits::default(), true, q, ct, body))
    }

    const FORM: &str = "application/x-www-form-urlencoded";
    const JSON: &str = "application/json; charset=utf-8";
    const MULTIPART: &str = "multipart/form-data; boundary=XyZ";

    #[test]
    fn parse_str_follows_php() {
        let cases = [
            // Values: '+' and %XX decode, bad escapes stay, invalid UTF-8 is replaced.
            "a=1&b=x+y%20z&c=%zz%4&d&e=%FF => a=1&b=x y z&c=%zz%4&d=&e=\u{FFFD}",
            // Top-level names; bracket contents are left alone.
            "  f.x=1&a b=2&[x]=3&=4&%20%20=5&a]b=6&n%00ul=7&5=8 => f_x=1&a_b=2&a]b=6&n=7&#5=8",
            "c[d.e f]=9&e%5Bk%5D=1&s[ ]=u&s[ k]=w => c[d.e f]=9&e[k]=1&s[#0]=u&s[ k]=w",
            "a[b][c]=v&l[]=x&l[]=y&n[5]=p&n[]=q => a[b][c]=v&l[#0]=x&l[#1]=y&n[#5]=p&n[#6]=q",
            "z[05]=r&z[-1]=t&z[1.5]=u => z[05]=r&z[#-1]=t&z[1.5]=u",
            // Unmatched and trailing brackets.
            "a[b=1&c[d.e f[g=2&t[ =3&u[v]w[x=4 => a_b=1&c_d_e_f_g=2&t__=3&u[v]=4",
            "h[i][j=3&k[][l=4&m[n]x=5&o[p]]=6&q[r][=7 => h[i]=3&k[#0]=4&m[n]=5&o[p]=6&q[r]=7",
            // Later assignments replace in place.
            "x=0&a=1&a[b]=2&c[d]=3&c=4&e[f]=5&e[f][g]=6 => x=0&a[b]=2&c=4&e[f][g]=6",
            // Once the next index is stuck at i64::MAX and taken, PHP drops appends.
            "m[9223372036854775807]=x&m[]=y&m[][z]=w => m[#9223372036854775807]=x",
        ];
        for case in cases {
            let (input, expected) = case.split_once(" => ").unwrap();
            assert_eq!(dump(&ps(input)), expected, "{input}");
        }
    }

    #[test]
    fn limits_drop_input_silently() {
        assert_eq!(dump(&parse_str("a=1&&&b=2&c=3", &lim(2, 64))), "a=1&b=2");
        assert_eq!(dump(&parse_str("=0&a=1&b=2", &lim(2, 64))), "a=1");
        let deep = |n: usize| format!("a{}=v", "[x]".repeat(n));
        assert!(ps(&deep(64)).contains_key("a"));
        assert_eq!(dump(&ps(&format!("a[y]=1&b=2&{}", deep(65)))), "b=2");
        let a = parse_str("a[b]=1&c[d][e]=2&f[g=3", &lim(9, 1));
        assert_eq!(dump(&a), "a[b]=1&f_g=3");
    }

    #[test]
    fn query_and_body_merge() {
        let get = decode_with(&lim(9, 9), false, "auth=t&ID=1", FORM, b"ID=2");
        assert_eq!(dump(&get), "auth=t&ID=1");
        // Content-Type | body | parameters, with the query `auth=t&ID=1`.
        let cases = [
            "application/x-www-form-urlencoded|ID=2&x[]=3|auth=t&ID=2&x[#0]=3",
            "Application/X-WWW-Form-URLEncoded,x|ID=2|auth=t&ID=2",
            "application/json ;x| {\"A\":[true],\"ID\":5}\n|auth=t&ID=Int(5)&A[#0]=Bool(true)",
            "application/json|[1,\"2\",null]|auth=t&ID=1&#0=Int(1)&#1=2&#2=Null",
            // `curl -d` JSON without a JSON Content-Type is a form key.
            "Application/JSON|{\"ID\":5}|auth=t&ID=1&{\"ID\":5}=",
            "text/plain|  a=1\n|auth=t&ID=1&a=1",
            // PHP's own parse ends the name at the NUL; Bitrix's trimmed re-parse finds `a`.
            "application/x-www-form-urlencoded|\0a=1|auth=t&ID=1&a=1",
        ];
        for case in cases {
            let [ct, body, expected] = case.splitn(3, '|').collect::<Vec<_>>()[..] else {
                unreachable!()
            };
            assert_eq!(post("auth=t&ID=1", ct, body.as_bytes()), expected, "{case}");
        }
        let bad: [&[u8]; 6] = [b"{bad", b"5", b"\"x\"", b"null", b"", b"{\"a\":\"\xFF\"}"];
        for body in bad {
            assert_eq!(post("q=1", JSON, body), "q=1");
        }
    }

    #[test]
    fn json_budgets_refuse_the_whole_body() {
        let l = lim(3, 2);
        // Three leaves, depth 3 (nesting 2): within.
        let ok = br#"{"a":1,"b":{"c":[2]}}"#;
        assert_eq!(
            dump(&decode_with(&l, true, "", JSON, ok)),
            "a=Int(1)&b[c][#0]=Int(2)"
        );
        // Four leaves.
        assert_eq!(
            dump(&decode_with(&l, true, "q=1", JSON, br#"[1,2,3,4]"#)),
            "q=1"
        );
        // Depth 4.
        assert_eq!(
            dump(&decode_with(&l, true, "", JSON, br#"{"a":[[[1]]]}"#)),
            ""
        );
        // Commas and brackets inside strings do not count.
        let strings = br#"{"a":"[[[[,,,,]]]]","b":"\",[{"}"#;
        assert_eq!(decode_with(&l, true, "", JSON, strings).len(), 2);
        // The node budget: 3 × 4 + 2 = 14 values; single-child arrays count as values too.
        let chain = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let l = lim(3, 64);
        assert_eq!(l.max_json_nodes(), 76);
        assert!(json_within_budget(
            format!("[{},1]", chain(64)).as_bytes(),
            &l
        ));
        let two = format!("[{},{}]", chain(37), chain(37));
        assert!(!json_within_budget(two.as_bytes(), &l), "77 values");
        let two = format!("[{},{}]", chain(37), chain(36));
        assert!(json_within_budget(two.as_bytes(), &l), "76 values");
        let l = lim(3, 2);
        let flood = format!("[{}]", vec!["[]"; 100_000].join(","));
        assert!(!json_within_budget(
            flood.as_bytes(),
            &DecodeLimits::default()
        ));
        let wide = "[[1],[1],[1]]";
        assert!(json_within_budget(wide.as_bytes(), &l));
        assert!(!json_within_budget(wide.as_bytes(), &lim(3, 0)));
    }

    /// Needs serde_json's `preserve_order` feature; without it objects come back sorted by key,
    /// and the §1.5 "last spelling wins" rule then picks the wrong MESSAGE.
    #[test]
    fn json_body_keeps_document_order() {
        let a = post("", JSON, b"{\"message\":\"a\",\"MESSAGE\":\"b\",\"10\":3}");
        assert_eq!(a, "message=a&MESSAGE=b&#10=Int(3)");
    }

    fn multipart(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut body: String = parts
            .iter()
            .map(|(disp, content)| {
                format!("--XyZ\r\nContent-Disposition: form-data; {disp}\r\n\r\n{content}\r\n")
            })
            .collect();
        body.push_str("--XyZ--\r\n");
        body.into_bytes()
    }

    #[test]
    fn multipart_fields_skip_files() {
        let body = multipart(&[
            ("name=\"ID\"", "7"),
            ("name=\"f\"; filename=\"a.txt\"", "file"),
            ("name=\"e\"; filename=\"\"", ""),
            ("name=\"ATTACH[0][MESSAGE]\"", "hi"),
            ("name=\"a.b\"", "c"),
        ]);
        let expected = "ID=7&auth=t&ATTACH[#0][MESSAGE]=hi&a_b=c";
        assert_eq!(post("ID=1&auth=t", MULTIPART, &body), expected);
        let limited = decode_with(&lim(2, 64), true, "", MULTIPART, &body);
        assert_eq!(dump(&limited), "ID=7&ATTACH[#0][MESSAGE]=hi");
        assert_eq!(post("", "multipart/form-data", &body), "");
        // No raw-body fallback: PHP's php://input is empty for multipart.
        let only_file = multipart(&[("name=\"f\"; filename=\"x=1\"", "y=2")]);
        assert_eq!(post("", MULTIPART, &only_file), "");
        let cut = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1";
        assert_eq!(post("", MULTIPART, cut), "");
        assert_eq!(post("", MULTIPART, b"a=1"), "");
    }

    #[test]
    fn decode_request_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let limits = DecodeLimits::default();
        assert_send(decode_request(true, None, None, Bytes::new(), &limits));
    }

    /// PHP `urlencode`.
    fn urlencode(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// PHP `http_build_query`, with the given bracket spelling (PHP itself sends `%5B`/`%5D`).
    fn build_query(a: &Array, br: (&str, &str)) -> String {
        fn walk(name: String, v: &Value, br: (&str, &str), out: &mut Vec<String>) {
            match v {
                Value::Arr(child) => {
                    for (k, v) in child.iter() {
                        let key = urlencode(&k.as_string());
                        walk(format!("{name}{}{key}{}", br.0, br.1), v, br, out);
                    }
                }
                leaf => out.push(format!("{name}={}", urlencode(&leaf.to_php_string()))),
            }
        }
        let mut out = Vec::new();
        for (k, v) in a.iter() {
            walk(urlencode(&k.as_string()), v, br, &mut out);
        }
        out.join("&")
    }

    fn tree(
        leaf: impl Strategy<Value = Value> + 'static,
        top_key: impl Strategy<Value = Key> + 'static,
        key: impl Strategy<Value = Key> + Clone + 'static,
        min_len: usize,
    ) -> impl Strategy<Value = Array> {
        let value = leaf.prop_recursive(3, 24, 4, move |inner| {
            prop::collection::vec((key.clone(), inner), min_len..4)
                .prop_map(|pairs| Value::Arr(pairs.into_iter().collect()))
        });
        prop::collection::vec((top_key, value), 0..6).prop_map(|p| p.into_iter().collect())
    }

    /// Names that survive a form round trip: PHP rewrites ` `, `.` and `[` at the top level, and
    /// `]`, NUL, `""` and `" "` inside brackets; form encoding drops empty arrays.
    fn form_tree() -> impl Strategy<Value = Array> {
        let key = prop_oneof![
            any::<i64>().prop_map(Key::Int),
            "[a-z0-9 .\\[%&=+é_-]{1,5}"
                .prop_filter("a lone space appends", |k| k != " ")
                .prop_map(Key::from),
        ];
        let top_key = "[a-zA-Z0-9_\\-\\]%&=+é/]{1,6}".prop_map(Key::from);
        tree("(?s).{0,6}".prop_map(Value::Str), top_key, key, 1)
    }

    fn json_tree() -> impl Strategy<Value = Array> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // Halves survive serde_json's default float parsing exactly; a whole float is
            // written as `json_encode` writes it, without a fraction, and reads back as an
            // integer, as in PHP, so none is generated.
            any::<i32>().prop_map(|i| Value::Float(f64::from(i) + 0.5)),
            "\\PC{0,6}".prop_map(Value::Str),
        ];
        let key = prop_oneof![
            any::<i64>().prop_map(Key::Int),
            "\\PC{0,4}".prop_map(Key::from)
        ];
        tree(leaf, key.clone(), key, 0)
    }

    proptest! {
        #[test]
        fn parse_str_never_panics(
            input in "\\PC*",
            brackets in "[a\\[\\] .=&%5BD+\\x00]{0,40}",
            nesting in 0usize..4,
        ) {
            ps(&input);
            parse_str(&brackets, &lim(1000, nesting));
        }

        #[test]
        fn http_build_query_round_trips(
            tree in form_tree(),
            br in prop::sample::select(vec![("%5B", "%5D"), ("[", "]")]),
        ) {
            let decoded = ps(&build_query(&tree, br));
            prop_assert_eq!(leaves(&decoded), leaves(&tree));
            prop_assert_eq!(decoded, tree);
        }

        #[test]
        fn var_count_never_exceeds_limit(
            pairs in prop::collection::vec("[ab\\[\\]=]{0,6}", 0..30),
            max in 0usize..20,
        ) {
            let n = leaves(&parse_str(&pairs.join("&"), &lim(max, 3))).len();
            prop_assert!(n <= max && n <= pairs.len());
        }

        #[test]
        fn json_body_round_trips(tree in json_tree(), query in "[a-z]{1,3}=[0-9]{1,2}") {
            let body = Value::Arr(tree.clone()).to_php_json();
            let decoded = decode_with(&lim(1000, 64), true, &query, JSON, body.as_bytes());
            let mut expected = ps(&query);
            expected.overlay(tree);
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn decode_request_never_panics(
            body in prop::collection::vec(any::<u8>(), 0..64),
            ct in prop::sample::select(vec![
                "application/json", "application/x-www-form-urlencoded", "text/plain",
                "multipart/form-data; boundary=XyZ", "multipart/form-data", "",
            ]),
        ) {
            post("a[b]=1", ct, &body);
        }
    }
}
