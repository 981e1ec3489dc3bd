//! Push&Pull channel ids: the bearer credential of `/subws/` and `/sub/` (issue 13;
//! push-pull.md §1.3).
//!
//! A signed channel id is `<id>.<sig>`: `id` is 32 lower-case hex digits and `sig` the 40 hex
//! digits of HMAC-SHA1(key, id), the form Bitrix24's push server checks. The key is one random
//! secret kept in the database (setting [`KEY_SETTING`]), so every instance signs and checks
//! alike.
//!
//! Deviation, recorded in README "Compatibility": Bitrix24 ids are 32 random hex digits looked
//! up in a table. Here the id carries what the server must know, so checking it needs no
//! lookup: `<10 hex grant><12 hex user id><10 hex end (unix seconds)>`. The client treats ids
//! as opaque, and the signature makes them unforgeable.
//!
//! The grant ([`Grant`]) names the credential the channel was handed out for, so that revoking
//! it ends the channel too (issue 15): `1` and the webhook id in 9 hex digits, `2` and the
//! OAuth application id, `3` and the first 9 hex digits of a browser session's id hash (so
//! signing out, or the session's end, ends it too); otherwise `0` and 9 random hex digits, and
//! the channel ends only with its user or its end. A channel signed before grants existed has
//! 10 random digits: one that begins with `1`, `2` or `3` reads as a grant that does not hold,
//! which closes it with 4010 and makes the client fetch a new config.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The setting that holds the signing key (64 hex digits), created on first use.
pub const KEY_SETTING: &str = "pull_channel_key";

/// A channel Bitrix24's way: 12 hours and 5 seconds (push-pull.md §1.3), the default of
/// `pull.channel_ttl_seconds`.
pub const DEFAULT_TTL_SECONDS: i64 = 43_205;

/// A checked channel: whose it is, until when (unix seconds) it is good, and the credential
/// it depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub user_id: i64,
    pub end: i64,
    pub grant: Grant,
}

/// The credential a channel was handed out for (`pull.config.get`'s caller): while the channel
/// lives, this must still hold as well as its user being active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Nothing but the user (a browser session, or an id too large for 9 hex digits).
    User,
    /// This webhook of the user must stay active.
    Webhook(i64),
    /// The user must keep an unrevoked token of this OAuth application, which stays enabled.
    App(i64),
    /// The user must keep a live session whose id hash begins with these 36 bits (9 hex
    /// digits): the browser session that asked, as [`Grant::session`] makes it.
    Session(i64),
}

/// The largest credential id a grant can carry (9 hex digits).
const GRANT_ID_MAX: i64 = 0xf_ffff_ffff;

impl Grant {
    /// The grant of the browser session whose id hash (SHA-256 of its cookie) is `id_hash`.
    /// 36 bits of a digest the database holds anyway: they tell nothing about the cookie.
    pub fn session(id_hash: &[u8; 32]) -> Grant {
        let top = u64::from_be_bytes(id_hash[..8].try_into().expect("8 bytes"));
        Grant::Session((top >> 28) as i64)
    }

    /// The id hashes a [`Grant::Session`] prefix stands for, lowest and highest.
    pub fn session_range(prefix: i64) -> ([u8; 32], [u8; 32]) {
        let top = ((prefix as u64) & 0xf_ffff_ffff) << 28;
        let mut lo = [0u8; 32];
        let mut hi = [0xffu8; 32];
        lo[..8].copy_from_slice(&top.to_be_bytes());
        hi[..8].copy_from_slice(&(top | 0x0fff_ffff).to_be_bytes());
        (lo, hi)
    }

    fn encode(self) -> String {
        match self {
            Grant::Webhook(id) if (0..=GRANT_ID_MAX).contains(&id) => format!("1{id:09x}"),
            Grant::App(id) if (0..=GRANT_ID_MAX).contains(&id) => format!("2{id:09x}"),
            Grant::Session(p) if (0..=GRANT_ID_MAX).contains(&p) => format!("3{p:09x}"),
            _ => format!("0{}", super::secret::generate_hex(9)),
        }
    }

    fn decode(hex: &str) -> Grant {
        let id = || i64::from_str_radix(&hex[1..], 16).unwrap_or(-1);
        match &hex[..1] {
            "1" => Grant::Webhook(id()),
            "2" => Grant::App(id()),
            "3" => Grant::Session(id()),
            _ => Grant::User,
        }
    }
}

/// Why a channel id was refused; every case closes the socket with 4010.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not of the form, or the signature does not match.
    Invalid,
    /// Well signed, but past its end.
    Expired,
}

fn mac(key: &str, id: &str) -> Hmac<Sha1> {
    let mut m = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    m.update(id.as_bytes());
    m
}

/// A new signed id for `user_id`, good until `end` (unix seconds), bound to `grant`.
pub fn sign(key: &str, user_id: i64, end: i64, grant: Grant) -> String {
    let id = format!(
        "{}{:012x}{:010x}",
        grant.encode(),
        user_id as u64 & 0xffff_ffff_ffff,
        end.max(0) as u64 & 0xff_ffff_ffff
    );
    let sig = hex::encode(mac(key, &id).finalize().into_bytes());
    format!("{id}.{sig}")
}

/// The unsigned part of a signed id (what a message's `channel` member shows).
pub fn public_part(signed: &str) -> &str {
    signed.split('.').next().unwrap_or_default()
}

/// Checks one signed id at unix time `now`: the signature in constant time, then the end.
pub fn verify(key: &str, signed: &str, now: i64) -> Result<Channel, Refused> {
    let (id, sig) = signed.split_once('.').ok_or(Refused::Invalid)?;
    let hex_ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok(id, 32) || !hex_ok(sig, 40) {
        return Err(Refused::Invalid);
    }
    let sig = hex::decode(sig).map_err(|_| Refused::Invalid)?;
    mac(key, id)
        .verify_slice(&sig)
        .map_err(|_| Refused::Invalid)?;
    let user_id = i64::from_str_radix(&id[10..22], 16).map_err(|_| Refused::Invalid)?;
    let end = i64::from_str_radix(&id[22..32], 16).map_err(|_| Refused::Invalid)?;
    if end <= now {
        return Err(Refused::Expired);
    }
    Ok(Channel {
        user_id,
        end,
        grant: Grant::decode(&id[..10]),
    })
}

/// Checks a `CHANNEL_ID` parameter (already URL-decoded): one or more signed ids joined by
/// `/`, every one checked (§1.3). All must name the same user; the first is returned.
pub fn verify_list(key: &str, list: &str, now: i64) -> Result<Channel, Refused> {
    let mut first: Option<Channel> = None;
    // A bound on the work one URL can ask for: the client sends at most two (private, shared).
    for part in list.split('/').take(4) {
        let c = verify(key, part, now)?;
        match first {
            Some(f) if f.user_id != c.user_id => return Err(Refused::Invalid),
            Some(_) => {}
            None => first = Some(c),
        }
    }
    if list.split('/').count() > 4 {
        return Err(Refused::Invalid);
    }
    first.ok_or(Refused::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_checks() {
        let key = "k".repeat(64);
        let s = sign(&key, 42, 1000, Grant::User);
        assert_eq!(s.len(), 32 + 1 + 40);
        assert_eq!(
            verify(&key, &s, 999),
            Ok(Channel {
                user_id: 42,
                end: 1000,
                grant: Grant::User,
            })
        );
        for grant in [Grant::Webhook(7), Grant::App(0xf_ffff_ffff)] {
            let s = sign(&key, 42, 1000, grant);
            assert_eq!(s.len(), 32 + 1 + 40);
            assert_eq!(verify(&key, &s, 999).map(|c| c.grant), Ok(grant));
            // The grant is signed: another webhook's id is a forgery.
            let forged = format!("1{:09x}{}", 8, &s[10..]);
            assert_eq!(verify(&key, &forged, 999), Err(Refused::Invalid));
        }
        // A session's grant is the top 36 bits of its id hash, and its range holds that hash.
        let mut hash = [0u8; 32];
        hash[..5].copy_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9a]);
        hash[31] = 0x55;
        let grant = Grant::session(&hash);
        assert_eq!(grant, Grant::Session(0x1_2345_6789));
        let s = sign(&key, 42, 1000, grant);
        assert!(s.starts_with("3123456789"), "{s}");
        assert_eq!(verify(&key, &s, 999).map(|c| c.grant), Ok(grant));
        let (lo, hi) = Grant::session_range(0x1_2345_6789);
        assert!(lo[..] <= hash[..] && hash[..] <= hi[..]);
        assert_eq!(&lo[..5], &[0x12, 0x34, 0x56, 0x78, 0x90]);
        assert_eq!(&hi[..5], &[0x12, 0x34, 0x56, 0x78, 0x9f]);
        // An id too large for the field binds to the user only, never to another credential.
        let s = sign(&key, 42, 1000, Grant::Webhook(1 << 40));
        assert_eq!(verify(&key, &s, 999).map(|c| c.grant), Ok(Grant::User));
        assert_eq!(verify(&key, &s, 1000), Err(Refused::Expired));
        assert_eq!(verify("other", &s, 999), Err(Refused::Invalid));
        // One changed digit of the signature, or of the id (a different user), is refused.
        let mut t = s.clone().into_bytes();
        let last = t.len() - 1;
        t[last] = if t[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            verify(&key, std::str::from_utf8(&t).unwrap(), 999),
            Err(Refused::Invalid)
        );
        let forged = format!("{}{:012x}{}", &s[..10], 43, &s[22..]);
        assert_eq!(verify(&key, &forged, 999), Err(Refused::Invalid));
        assert_eq!(
            verify_list(&key, &format!("{s}/{s}"), 999).map(|c| c.user_id),
            Ok(42)
        );
        assert_eq!(
            verify_list(&key, &format!("{s}/x"), 999),
            Err(Refused::Invalid)
        );
        assert_eq!(verify_list(&key, "", 999), Err(Refused::Invalid));
    }
}
