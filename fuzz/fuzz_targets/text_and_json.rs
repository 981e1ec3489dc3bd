//! Text normalisation (D7) and the value serialisers: there is no BB-code renderer in the code
//! yet, so this target covers what stands in its place on the way to storage and to the wire.
//! The first byte picks the branch.
#![no_main]

use imnotify::domain::notify::normalize_text;
use imnotify::protocol::envelope::to_xml;
use imnotify::value::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        let out = normalize_text(&text);
        // Cut texts keep 20,000 characters plus " (...)".
        assert!(out.chars().count() <= 20_006);
        return;
    }
    let Ok(j) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let v = Value::from_json(j);
    for json in [v.to_php_json(), v.to_bitrix_json()] {
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("serialised value is not JSON ({e}): {json}"));
    }
    let _ = to_xml(&v);
});
