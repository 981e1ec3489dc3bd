//! Passwords for the login page, hashed with Argon2id: unlike generated codes they are chosen by
//! people and may be guessable, so they need a slow, salted hash.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| anyhow::anyhow!("encoding the salt: {e}"))?;
    let hashed = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"));
    give_back();
    hashed
}

/// A hash of a random password, made once: unknown logins and users without a password are
/// checked against it, so that they take as long as a wrong password (issue 10 §2). Its first
/// use pays for making it; `app::serve` makes it at start.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        hash(&format!("{random:?}")).unwrap_or_default()
    })
}

/// Verification is constant-time inside the argon2 crate.
pub fn verify(password: &str, stored: &str) -> bool {
    let matched = PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    give_back();
    matched
}

/// Argon2id's 19 MiB block was just freed on this thread. The server's allocator (mimalloc,
/// `src/main.rs`) returns freed memory to the system only when the freeing thread allocates
/// again, and a password thread may then sleep for hours: without this, one login kept 19 MiB
/// per password thread resident (idle RSS 34.6 MB instead of 15.2 MB after the start's dummy
/// hash; issue 15 goal 6). Where mimalloc is not the global allocator (the library's own tests)
/// it has nothing to collect.
fn give_back() {
    // SAFETY: mi_collect only walks and releases this thread's free mimalloc memory.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let h = super::hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify("correct horse", &h));
        assert!(!super::verify("wrong horse", &h));
        assert!(!super::verify("correct horse", "not a hash"));
    }
}
