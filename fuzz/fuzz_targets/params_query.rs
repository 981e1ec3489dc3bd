//! PHP `parse_str` over arbitrary query/form strings: bracket arrays, `%XX`, nesting and count
//! limits. The limits are small here so that the cut-off paths are reached often.
#![no_main]

use imnotify::protocol::params::{parse_str, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let small = DecodeLimits {
        max_input_vars: 16,
        max_nesting: 4,
    };
    let a = parse_str(&input, &small);
    assert!(a.len() <= 16);
    let _ = parse_str(&input, &DecodeLimits::default());
});
