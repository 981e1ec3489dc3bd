//! Checking a login form's password without letting the check be a weapon (issue 10 §1–2):
//!
//! - Argon2id (19 MiB, tens of milliseconds) runs on a fixed set of
//!   `limits.password_hash_concurrency` threads (`limits::HashPool`), never on an async worker;
//!   when every one is busy the answer is 429 at once instead of a queue.
//! - Failed logins are throttled per account (the login as typed, lower-cased) and per client
//!   IP with an exponential lock-out (`limits::LoginLimits`); a locked key answers 429 without
//!   hashing. On PostgreSQL the count is the cluster's (`Limiters::login_locked`, issue 14).
//! - An unknown login, and a user without a password, are checked against a dummy hash, so the
//!   time to answer does not tell them from a wrong password.

use std::net::IpAddr;
use std::time::Duration;

use crate::auth::{internal, password};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::User;

/// The outcome of one sign-in attempt.
pub enum Check {
    Accepted(User),
    Wrong,
    /// Too many failures for this account or address; try again after the wait.
    Throttled(Duration),
    /// Every password-check place is taken.
    Busy,
}

fn account_key(login: &str) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(login.trim().to_lowercase().as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

pub async fn check(
    state: &AppState,
    ip: Option<IpAddr>,
    login: &str,
    pw: String,
) -> Result<Check, ApiError> {
    let limits = &state.limits.login;
    let key = account_key(login);
    if let Some(wait) = state.limits.login_locked(&key, ip).await {
        return Ok(Check::Throttled(wait));
    }
    let Ok(permit) = limits.hashing.clone().try_acquire_owned() else {
        return Ok(Check::Busy);
    };
    let found = state.store.user_login(login).await.map_err(internal)?;
    let (user, hash) = match found {
        Some((user, Some(hash))) => (Some(user), hash),
        _ => (None, password::dummy_hash().to_owned()),
    };
    let matched = limits
        .pool
        .run(move || {
            let _permit = permit;
            password::verify(&pw, &hash)
        })
        .await
        .ok_or_else(|| {
            tracing::error!("the password threads are gone");
            ApiError::internal()
        })?;
    match user {
        Some(user) if matched => {
            state.limits.login_succeeded(&key).await;
            Ok(Check::Accepted(user))
        }
        _ => {
            state.limits.login_failed(key, ip).await;
            Ok(Check::Wrong)
        }
    }
}
