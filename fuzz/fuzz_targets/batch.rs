//! The batch command parser (§6.3) and its references: `cmd`/`halt` from a form or JSON body,
//! each command split into method and query, the query decoded as PHP would, and every
//! `$result[..]`-style reference resolved against results built from the input itself.
#![no_main]

use imnotify::limits::operating::Usage;
use imnotify::protocol::batch::{parse, split_command, Command, Results};
use imnotify::protocol::dispatch::Executed;
use imnotify::protocol::envelope::Output;
use imnotify::protocol::params::{parse_str, DecodeLimits};
use imnotify::value::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let limits = DecodeLimits::default();
    let params = if selector % 2 == 0 {
        parse_str(&text, &limits)
    } else {
        match serde_json::from_slice::<serde_json::Value>(rest).map(Value::from_json) {
            Ok(Value::Arr(a)) => a,
            _ => return,
        }
    };
    let request = parse(&params);
    assert!(
        request
            .commands
            .iter()
            .filter(|(_, c)| matches!(c, Command::Call { .. }))
            .count()
            <= 50,
        "more than 50 commands would run"
    );
    let mut results = Results::default();
    for (i, (key, command)) in request.commands.into_iter().enumerate() {
        let Command::Call { method, query } = command else {
            continue;
        };
        // Splitting what the parser produced gives it back: no character is lost or moved.
        let joined = format!("{method}?{query}");
        assert_eq!(split_command(&joined), (method.as_str(), query.as_str()));
        let resolved = results.resolve(parse_str(&query, &limits));
        // Alternate successes and failures so later references find both kinds.
        if i % 2 == 0 {
            results.success(
                key,
                Executed {
                    out: Output::from(Value::Arr(resolved)),
                    started: 1_700_000_000.0,
                    finished: 1_700_000_000.5,
                    usage: Usage {
                        operating: 0.0,
                        reset_at: None,
                    },
                },
            );
        } else {
            results.failure(key, &imnotify::error::ApiError::user_id_empty());
        }
    }
    // The five maps must always serialise.
    let json = results.into_value().to_bitrix_json();
    serde_json::from_str::<serde_json::Value>(&json).expect("batch answer is JSON");
});
