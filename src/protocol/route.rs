//! The URL grammar of `/rest/...` (§1.1, P1): which method, which transport, and whether the path
//! carries webhook credentials.

/// The answer encoding chosen by the method name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Json,
    Xml,
}

/// What the path says about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method name, lower-cased, without its transport suffix.
    pub method: String,
    pub transport: Transport,
    /// `(aplogin, ap)` from `/rest/{user}/{code}/{method}`.
    pub webhook: Option<(String, String)>,
}

/// Parses the part of the path after `/rest/`. Empty segments are skipped, because a real SDK
/// sends `/rest//method` and PHP's router collapses the doubled slash. `None` means the path does
/// not name a classic REST method (including REST 3.0's `/rest/api/...`), which the caller answers
/// with `ERROR_METHOD_NOT_FOUND`.
pub fn parse(rest_path: &str) -> Option<Route> {
    let segments: Vec<&str> = rest_path.split('/').filter(|s| !s.is_empty()).collect();
    let (webhook, raw_method) = match segments.as_slice() {
        [m] => (None, *m),
        [user, code, m] if !user.eq_ignore_ascii_case("api") => {
            (Some((user.to_string(), code.to_string())), *m)
        }
        _ => return None,
    };
    let lower = raw_method.to_ascii_lowercase();
    let (method, transport) = match lower.rsplit_once('.') {
        Some((m, "json")) => (m.to_owned(), Transport::Json),
        Some((m, "xml")) => (m.to_owned(), Transport::Xml),
        _ => (lower, Transport::Json),
    };
    if method.is_empty() {
        return None;
    }
    Some(Route {
        method,
        transport,
        webhook,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (String, Transport, Option<(String, String)>);

    fn m(p: &str) -> Option<Parts> {
        parse(p).map(|r| (r.method, r.transport, r.webhook))
    }

    #[test]
    fn url_forms() {
        let plain = Some(("im.notify.system.add".to_owned(), Transport::Json, None));
        assert_eq!(m("im.notify.system.add"), plain);
        assert_eq!(m("im.notify.system.add/"), plain);
        assert_eq!(m("IM.Notify.System.Add.JSON"), plain);
        assert_eq!(m("/im.notify.system.add"), plain);
        assert_eq!(
            m("im.notify.system.add.xml").map(|r| r.1),
            Some(Transport::Xml)
        );
        let hook = m("1/abc/im.notify.system.add.json/").unwrap();
        assert_eq!(hook.2, Some(("1".to_owned(), "abc".to_owned())));
        assert_eq!(hook.0, "im.notify.system.add");
        assert_eq!(m("api/im.notify.system.add"), None);
        assert_eq!(m("api/1/abc/im.notify.system.add"), None);
        assert_eq!(m(""), None);
        assert_eq!(m(".json"), None);
    }
}
