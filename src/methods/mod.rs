//! Method handlers, one module per family. Handlers are thin: they turn parameters into domain
//! values, call the domain and the store, and build the result.

pub mod discovery;
pub mod notify;

use crate::protocol::dispatch::MethodSpec;

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = discovery::methods();
    all.extend(notify::methods());
    all
}

/// Every scope some method needs, sorted: what `scope` with `full` lists, and what a browser
/// session (the user in person) holds.
pub fn known_scopes() -> Vec<String> {
    let mut scopes: Vec<String> = all()
        .iter()
        .filter_map(|m| m.scope)
        .map(str::to_owned)
        .collect();
    scopes.push("user".to_owned());
    scopes.sort();
    scopes.dedup();
    scopes
}
