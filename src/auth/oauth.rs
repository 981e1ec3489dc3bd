//! OAuth 2.0 rules (§7.1, P11): token lifetimes, minting, the token answer, and checking an
//! access token on a REST call. The HTTP endpoints live in `crate::web::oauth`.

use rand::Rng;

use super::{internal, secret, Caller, CallerKind};
use crate::error::ApiError;
use crate::store::{NewTokens, Store};

pub const ACCESS_TTL: i64 = 3600;
pub const REFRESH_TTL: i64 = 180 * 24 * 3600;
/// How long an authorization code may wait before it is exchanged.
pub const CODE_TTL: i64 = 30;
const TOKEN_LEN: usize = 70;

/// What the portal says about itself in token answers and redirects.
#[derive(Debug, Clone)]
pub struct Portal {
    /// `http(s)://host[:port]`, without a trailing slash.
    pub base_url: String,
    /// `host[:port]`.
    pub domain: String,
    pub member_id: String,
}

impl Portal {
    pub fn new(base_url: &str, member_id: String) -> Portal {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let domain = base_url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&base_url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Portal {
            base_url,
            domain,
            member_id,
        }
    }

    pub fn rest_endpoint(&self) -> String {
        format!("{}/rest/", self.base_url)
    }
}

/// A fresh member id, the portal's stable identifier.
pub fn new_member_id() -> String {
    secret::generate_hex(32)
}

/// A client id in the shape of Bitrix24's local applications: `local.<14 hex>.<8 digits>`.
pub fn new_client_id() -> String {
    let digits: u32 = rand::rng().random_range(10_000_000..100_000_000);
    format!("local.{}.{digits}", secret::generate_hex(14))
}

pub fn new_client_secret() -> String {
    secret::generate(50)
}

/// Checks an application's redirect URI (`imnotify app add --redirect-uri`): empty (the consent
/// page then shows the code), or an absolute `http` or `https` URL with a host and no
/// whitespace, control characters or fragment. Every other scheme is refused: `javascript:` and
/// `data:` would run in the portal's origin when the browser follows the redirect, and custom
/// app schemes are not supported (an app that needs one can use a loopback `http` URL, as
/// RFC 8252 recommends for native apps).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Ok(());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the redirect URI contains whitespace or control characters".into());
    }
    let lower = uri.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| format!("the redirect URI must be an http:// or https:// URL: {uri}"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') || authority.contains('@') {
        return Err(format!(
            "the redirect URI needs a host (and no user info): {uri}"
        ));
    }
    if uri.contains('#') {
        return Err("the redirect URI must not have a fragment (RFC 6749 §3.1.2)".into());
    }
    Ok(())
}

/// Checks an application's scopes against those the method registry serves.
pub fn check_scopes(scopes: &[String], known: &[String]) -> Result<(), String> {
    let unknown: Vec<&str> = scopes
        .iter()
        .filter(|s| !known.contains(s))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "unknown scope {}; this server knows {}",
            unknown.join(", "),
            known.join(", ")
        ))
    }
}

/// A freshly minted pair: the plain tokens for the answer, their digests for the store.
pub struct Minted {
    pub access_token: String,
    pub refresh_token: String,
    pub stored: NewTokens,
}

pub fn mint(now: i64) -> Minted {
    let access_token = secret::generate_hex(TOKEN_LEN);
    let refresh_token = secret::generate_hex(TOKEN_LEN);
    Minted {
        stored: NewTokens {
            access_hash: secret::hash(&access_token),
            refresh_hash: secret::hash(&refresh_token),
            access_expires: now + ACCESS_TTL,
            refresh_expires: now + REFRESH_TTL,
        },
        access_token,
        refresh_token,
    }
}

/// The token endpoint's answer, with Bitrix24's fields. `status` is `L`: a local application.
pub fn token_answer(
    minted: &Minted,
    portal: &Portal,
    user_id: i64,
    scopes: &[String],
) -> serde_json::Value {
    serde_json::json!({
        "access_token": minted.access_token,
        "expires": minted.stored.access_expires,
        "expires_in": ACCESS_TTL,
        "scope": scopes.join(","),
        "domain": portal.domain,
        "server_endpoint": portal.rest_endpoint(),
        "status": "L",
        "client_endpoint": portal.rest_endpoint(),
        "member_id": portal.member_id,
        "user_id": user_id,
        "refresh_token": minted.refresh_token,
    })
}

/// Checks an access token presented on a REST call, in the order of §1.7.
pub async fn authenticate(store: &dyn Store, token: &str, now: i64) -> Result<Caller, ApiError> {
    // Looked up by digest: a timing difference could only tell an attacker about a SHA-256
    // value they cannot steer, never about the token itself.
    let grant = store
        .access_grant(secret::hash(token))
        .await
        .map_err(internal)?
        .ok_or_else(ApiError::invalid_token)?;
    if !grant.app.active {
        return Err(ApiError::application_not_found());
    }
    if grant.access_expires <= now {
        return Err(ApiError::expired_token());
    }
    if !grant.app.allows(grant.user_id) {
        return Err(ApiError::user_access_error());
    }
    let user = store
        .user(grant.user_id)
        .await
        .map_err(internal)?
        .filter(|u| u.active)
        .ok_or_else(ApiError::authorization_error)?;
    Ok(Caller {
        user_id: user.id,
        kind: CallerKind::App {
            app_id: grant.app.id,
            client_id: grant.app.client_id,
            name: grant.app.name,
        },
        scopes: grant.app.scopes,
        rate: grant.app.rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_domain_from_base_url() {
        let p = Portal::new("https://notify.example.com:8443/", "m".into());
        assert_eq!(p.domain, "notify.example.com:8443");
        assert_eq!(p.rest_endpoint(), "https://notify.example.com:8443/rest/");
    }

    #[test]
    fn client_ids_look_like_local_apps() {
        let id = new_client_id();
        let parts: Vec<&str> = id.split('.').collect();
        assert_eq!(parts[0], "local");
        assert_eq!(parts[1].len(), 14);
        assert_eq!(parts[2].len(), 8);
        assert_ne!(new_client_secret(), new_client_secret());
    }

    #[test]
    fn redirect_uris_are_http_or_https_only() {
        for ok in [
            "",
            "https://bot.example.com/oauth",
            "http://127.0.0.1:9000/cb?x=1",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "JavaScript://x/%0aalert(1)",
            "data:text/html,x",
            "myapp://cb",
            "https://",
            "https:///path",
            "https://user@evil.example/",
            "https://a.example/ x",
            "https://a.example/#frag",
            "//evil.example/",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_scopes_are_named() {
        let known = vec!["im".to_owned(), "user".to_owned()];
        assert!(check_scopes(&["im".into()], &known).is_ok());
        let e = check_scopes(&["im".into(), "crm".into()], &known).unwrap_err();
        assert!(e.contains("crm") && e.contains("im, user"), "{e}");
    }

    #[test]
    fn minted_pairs_expire_as_documented() {
        let m = mint(1000);
        assert_eq!(m.stored.access_expires, 1000 + 3600);
        assert_eq!(m.stored.refresh_expires, 1000 + 180 * 86400);
        assert_eq!(m.access_token.len(), 70);
        assert_eq!(m.stored.access_hash, secret::hash(&m.access_token));
    }
}
