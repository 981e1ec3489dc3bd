//! Secrets: generation, hashing for storage, and constant-time comparison.
//!
//! Webhook codes are random and high-entropy, so a single SHA-256 is a sound storage hash: there is
//! nothing to brute-force that a slow KDF would protect. The plain code exists only in the answer
//! that creates it.

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A new secret of `len` lowercase alphanumerics, the shape Bitrix24 uses for webhook codes.
pub fn generate(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A new secret of `len` lowercase hex digits, the shape of Bitrix24's current OAuth tokens.
pub fn generate_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The CSRF token of the browser session whose cookie is `cookie`: HMAC-SHA256 keyed by the
/// cookie, in hex. The database keeps only the cookie's SHA-256, from which this cannot be
/// computed, so no stored value lets a reader of the database forge a consent or a `sessid`.
pub fn session_csrf(cookie: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(cookie.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(b"imnotify session csrf v1");
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Compares a presented secret with a stored hash without leaking, through timing, how many
/// leading bytes matched.
pub fn verify(presented: &str, stored: &[u8]) -> bool {
    let h = hash(presented);
    h.ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_are_distinct_and_well_formed() {
        let a = generate(16);
        let b = generate(16);
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn session_csrf_is_stable_per_cookie_and_not_the_cookie_digest() {
        let a = session_csrf("cookie-a");
        assert_eq!(a, session_csrf("cookie-a"));
        assert_ne!(a, session_csrf("cookie-b"));
        assert_eq!(a.len(), 32);
        assert!(!hex::encode(hash("cookie-a")).contains(&a));
    }

    #[test]
    fn verify_accepts_only_the_same_secret() {
        let stored = hash("8g9l071eismy9q2l");
        assert!(verify("8g9l071eismy9q2l", &stored));
        assert!(!verify("8g9l071eismy9q2m", &stored));
        assert!(!verify("", &stored));
        assert!(!verify("8g9l071eismy9q2l", &stored[..31]));
    }
}
