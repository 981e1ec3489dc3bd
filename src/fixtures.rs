//! Fixtures (issue 16): `imnotify serve --fixtures FILE` creates or updates, at start, users,
//! webhooks with given codes, and apps with a given client id and secret, so that a CI
//! configuration can hold fixed credentials. Applying the same file twice changes nothing.
//! Codes and secrets are still stored only as SHA-256 digests.
//!
//! The file is TOML:
//!
//! ```toml
//! admin_token = "..."            # optional; admin.token in the configuration wins
//! [[users]]
//! id = 7
//! name = "Anna"                  # also last_name, email, password, admin, active
//! [[webhooks]]
//! user_id = 7
//! code = "fixedwebhookcode1"
//! scope = ["im", "user"]
//! [[apps]]
//! client_id = "local.ci"
//! client_secret = "..."
//! name = "CI app"
//! scope = ["im"]
//! redirect_uri = "https://ci.example/oauth"
//! ```
//!
//! A wrong file stops the start with a message that names its line. It is checked before the
//! first start makes user 1's webhook, so a wrong file does not use up its one-time code.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;
use toml::Spanned;

use crate::auth::{oauth, password, secret, SCOPES};
use crate::limits::RateOverride;
use crate::store::{NewApp, Store, User};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    admin_token: Option<Spanned<String>>,
    #[serde(default)]
    users: Vec<Spanned<FixtureUser>>,
    #[serde(default)]
    webhooks: Vec<Spanned<FixtureWebhook>>,
    #[serde(default)]
    apps: Vec<Spanned<FixtureApp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureUser {
    id: i64,
    name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureWebhook {
    user_id: i64,
    code: String,
    scope: Vec<String>,
    rate_per_second: Option<f64>,
    rate_burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureApp {
    client_id: String,
    client_secret: String,
    name: String,
    scope: Vec<String>,
    #[serde(default)]
    redirect_uri: String,
    allowed_users: Option<Vec<i64>>,
    rate_per_second: Option<f64>,
    rate_burst: Option<u32>,
}

/// What applying a file did, for the start-up log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Items created or changed.
    pub changed: usize,
    /// Items already as the file says.
    pub unchanged: usize,
    /// The file's admin token, if it has one.
    pub admin_token: Option<String>,
}

/// A webhook code given by an operator: 8 to 64 letters and digits, so it is safe in a URL
/// path and not trivially guessed.
pub fn check_code(code: &str) -> anyhow::Result<()> {
    if !(8..=64).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("a webhook code is 8 to 64 letters and digits");
    }
    Ok(())
}

/// A client id given by an operator: 1 to 128 of letters, digits, `.`, `_` and `-`.
pub fn check_client_id(id: &str) -> anyhow::Result<()> {
    if !(1..=128).contains(&id.len())
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        bail!("a client id is 1 to 128 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// A client secret given by an operator: 8 to 256 visible ASCII characters.
pub fn check_client_secret(s: &str) -> anyhow::Result<()> {
    if !(8..=256).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("a client secret is 8 to 256 visible ASCII characters");
    }
    Ok(())
}

/// Lower-cased, known scopes; at least one.
pub fn check_scopes(scopes: &[String]) -> anyhow::Result<Vec<String>> {
    let scopes: Vec<String> = scopes.iter().map(|s| s.trim().to_lowercase()).collect();
    if scopes.is_empty() {
        bail!("scope needs at least one scope, e.g. [\"im\"]");
    }
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        bail!("unknown scope {bad:?} (known: {})", SCOPES.join(", "));
    }
    Ok(scopes)
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// A fixtures file, read and checked but not applied yet: [`load`] finds every mistake that
/// does not depend on the database, so a start can refuse a wrong file before it spends
/// anything (the first start's one-time webhook code), and [`Fixtures::apply`] then writes.
pub struct Fixtures {
    /// Names the file in errors.
    path: String,
    text: String,
    file: File,
}

/// Reads a fixtures file and checks it ([`Fixtures`]). Errors name the file and line.
pub fn load(path: &Path) -> anyhow::Result<Fixtures> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the fixtures file {}", path.display()))?;
    let path = path.display().to_string();
    let file = parse(&text).map_err(|e| anyhow!("fixtures {path}:{e:#}"))?;
    Ok(Fixtures { path, text, file })
}

impl Fixtures {
    /// The checks that need the database, run before anything is written (so a wrong file
    /// changes nothing, not half of what it names) and, on a first start, before user 1's
    /// webhook is made (so a wrong file leaves its one-time code for the next start): every
    /// user a webhook belongs to or an app's `allowed_users` names exists, in the database or
    /// in the file. `fresh`: no user yet, so the start is about to make user 1.
    pub async fn check_users(&self, store: &dyn Store, fresh: bool) -> anyhow::Result<()> {
        let named =
            |id: i64| (fresh && id == 1) || self.file.users.iter().any(|u| u.get_ref().id == id);
        let mut wanted: Vec<(usize, i64, &str)> = Vec::new();
        for item in &self.file.webhooks {
            wanted.push((item.span().start, item.get_ref().user_id, ""));
        }
        for item in &self.file.apps {
            for &id in item.get_ref().allowed_users.iter().flatten() {
                wanted.push((item.span().start, id, " (allowed_users)"));
            }
        }
        for (at, id, what) in wanted {
            if named(id) || store.user(id).await?.is_some() {
                continue;
            }
            bail!(
                "fixtures {}:{}: user {id} does not exist{what}",
                self.path,
                line_of(&self.text, at)
            );
        }
        Ok(())
    }

    /// Creates or updates what the file names. Errors name the file and line.
    pub async fn apply(&self, store: &dyn Store) -> anyhow::Result<Applied> {
        apply_parsed(store, &self.text, &self.file)
            .await
            .map_err(|e| anyhow!("fixtures {}:{e:#}", self.path))
    }
}

/// The TOML and every check that needs no database. Errors start with the line.
fn parse(text: &str) -> anyhow::Result<File> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        anyhow!("{line}: {}", e.message())
    })?;
    let at = |span: std::ops::Range<usize>, e: anyhow::Error| {
        anyhow!("{}: {e:#}", line_of(text, span.start))
    };
    for item in &file.users {
        if item.get_ref().id <= 0 {
            return Err(at(item.span(), anyhow!("a user id is a positive integer")));
        }
    }
    for item in &file.webhooks {
        let w = item.get_ref();
        check_code(&w.code).map_err(|e| at(item.span(), e))?;
        check_scopes(&w.scope).map_err(|e| at(item.span(), e))?;
    }
    for item in &file.apps {
        let a = item.get_ref();
        check_client_id(&a.client_id).map_err(|e| at(item.span(), e))?;
        check_client_secret(&a.client_secret).map_err(|e| at(item.span(), e))?;
        check_scopes(&a.scope).map_err(|e| at(item.span(), e))?;
        oauth::check_redirect_uri(&a.redirect_uri)
            .map_err(|e| at(item.span(), anyhow!("redirect_uri: {e}")))?;
    }
    if let Some(token) = &file.admin_token {
        if token.get_ref().len() < 16 {
            return Err(at(
                token.span(),
                anyhow!("admin_token needs at least 16 characters"),
            ));
        }
    }
    Ok(file)
}

/// Writes a [`parse`]d file.
async fn apply_parsed(store: &dyn Store, text: &str, file: &File) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    let mut count = |changed: bool| {
        if changed {
            applied.changed += 1;
        } else {
            applied.unchanged += 1;
        }
    };
    for item in &file.users {
        let line = line_of(text, item.span().start);
        let u = item.get_ref();
        let at = |e: anyhow::Error| anyhow!("{line}: {e:#}");
        let user = User {
            id: u.id,
            name: u.name.clone(),
            last_name: u.last_name.clone(),
            email: u.email.clone(),
            active: u.active,
            is_admin: u.admin,
        };
        let mut changed = store.upsert_user(user).await.map_err(|e| at(e.into()))?;
        if let Some(pw) = &u.password {
            let current = store
                .user_login(&u.id.to_string())
                .await
                .map_err(|e| at(e.into()))?
                .and_then(|(_, hash)| hash);
            // Argon2 salts every hash: re-hash only when the password is not already it.
            if !current.is_some_and(|h| password::verify(pw, &h)) {
                let hash = password::hash(pw).map_err(at)?;
                store
                    .set_password(u.id, hash)
                    .await
                    .map_err(|e| at(e.into()))?;
                changed = true;
            }
        }
        count(changed);
    }
    for item in &file.webhooks {
        let line = line_of(text, item.span().start);
        let w = item.get_ref();
        let at = |e: anyhow::Error| anyhow!("{line}: {e:#}");
        let scopes = check_scopes(&w.scope).map_err(at)?;
        let rate = RateOverride {
            per_second: w.rate_per_second,
            burst: w.rate_burst,
        };
        let (_, changed) = store
            .ensure_webhook(w.user_id, secret::hash(&w.code), &scopes, rate)
            .await
            .map_err(|e| at(e.into()))?;
        count(changed);
    }
    for item in &file.apps {
        let line = line_of(text, item.span().start);
        let a = item.get_ref();
        let at = |e: anyhow::Error| anyhow!("{line}: {e:#}");
        let scopes = check_scopes(&a.scope).map_err(at)?;
        let (_, changed) = store
            .upsert_app(NewApp {
                client_id: a.client_id.clone(),
                secret_hash: secret::hash(&a.client_secret),
                name: a.name.clone(),
                scopes,
                redirect_uri: a.redirect_uri.clone(),
                allowed_users: a.allowed_users.clone(),
                rate: RateOverride {
                    per_second: a.rate_per_second,
                    burst: a.rate_burst,
                },
            })
            .await
            .map_err(|e| at(e.into()))?;
        count(changed);
    }
    applied.admin_token = file.admin_token.as_ref().map(|t| t.get_ref().clone());
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks() {
        assert!(check_code("fixedwebhookcode1").is_ok());
        assert!(check_code("short").is_err());
        assert!(check_code("has/slash/in/it/").is_err());
        assert!(check_client_id("local.ci").is_ok());
        assert!(check_client_id("bad id").is_err());
        assert!(check_client_secret("s").is_err());
        assert!(check_scopes(&["IM".into()]).unwrap() == ["im"]);
        assert!(check_scopes(&["crm".into()]).is_err());
        assert_eq!(line_of("a\nb\nc", 4), 3);
    }
}
