//! The ATTACH normaliser (§2.6) on whatever a client can send: a JSON value (decoded as the JSON
//! body would be), a bracket-form value, or a string that should hold JSON.
#![no_main]

use imnotify::domain::attach::{normalize, AttachError};
use imnotify::protocol::params::{parse_str, DecodeLimits};
use imnotify::value::{Key, Value};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let raw = match selector % 3 {
        0 => match serde_json::from_slice::<serde_json::Value>(rest) {
            Ok(j) => Value::from_json(j),
            Err(_) => return,
        },
        1 => {
            let form = parse_str(&text, &DecodeLimits::default());
            match form.get(&Key::from_php_str("ATTACH")) {
                Some(v) => v.clone(),
                None => return,
            }
        }
        _ => Value::Str(text.into_owned()),
    };
    let max_bytes = if selector & 0x80 == 0 { 30 * 1024 } else { 512 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    match normalize(&raw, 1_700_000_000, max_bytes, &mut rng) {
        Ok(Some(v)) => {
            // What is stored must be JSON that fits the limit.
            let json = v.to_php_json();
            assert!(json.len() <= max_bytes, "oversize attachment accepted");
            serde_json::from_str::<serde_json::Value>(&json).expect("stored ATTACH is JSON");
        }
        Ok(None) | Err(AttachError::Invalid) | Err(AttachError::Oversize) => {}
    }
});
