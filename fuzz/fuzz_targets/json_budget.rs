//! The JSON body budget (issue 10): `protocol::params::json_within_budget`, a byte scan that
//! decides before anything is built. On valid JSON its verdict must equal counting the parsed
//! tree; on anything, the decoder must never hand back more than the budget allows. The first
//! two bytes choose `max_input_vars` (1..=64) and `max_nesting` (0..=7).
#![no_main]

use imnotify::protocol::params::{json_within_budget, DecodeLimits};
use libfuzzer_sys::fuzz_target;

/// (leaves, nodes, depth) of a parsed value, counted as the budget defines them: a leaf is a
/// scalar or an empty container, every value is a node, depth counts containers.
fn measure(v: &serde_json::Value) -> (usize, usize, usize) {
    let children: Vec<&serde_json::Value> = match v {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(o) => o.values().collect(),
        _ => return (1, 1, 0),
    };
    if children.is_empty() {
        return (1, 1, 1);
    }
    let (mut leaves, mut nodes, mut depth) = (0, 1, 0);
    for c in children {
        let (l, n, d) = measure(c);
        leaves += l;
        nodes += n;
        depth = depth.max(d);
    }
    (leaves, nodes, depth + 1)
}

fuzz_target!(|data: &[u8]| {
    let [vars, nesting, text @ ..] = data else {
        return;
    };
    let limits = DecodeLimits {
        max_input_vars: usize::from(*vars % 64) + 1,
        max_nesting: usize::from(*nesting % 8),
    };
    let verdict = json_within_budget(text, &limits);
    // Only containers at the top: that is what a JSON body must be to give parameters.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    if !(value.is_array() || value.is_object()) {
        return;
    }
    let (leaves, nodes, depth) = measure(&value);
    let within = leaves <= limits.max_input_vars
        && depth <= limits.max_nesting + 1
        && nodes <= limits.max_json_nodes();
    assert_eq!(
        verdict, within,
        "scan said {verdict}, the tree has {leaves} leaves, {nodes} nodes, depth {depth}"
    );
});
