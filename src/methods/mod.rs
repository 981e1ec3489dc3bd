//! Method handlers, one module per family. Handlers are thin: they turn parameters into domain
//! values, call the domain and the store, and build the result.

pub mod discovery;
pub mod notify;

use crate::protocol::dispatch::MethodSpec;

/// Set to `1` to register `test.panic`, a method whose handler panics. Test-only: it exists so
/// that the integration tests can show a panicking handler becomes a 500 envelope and the server
/// keeps serving. Never set it in production.
pub const TEST_PANIC_ENV: &str = "IMNOTIFY_TEST_PANIC_METHOD";

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = discovery::methods();
    all.extend(notify::methods());
    if std::env::var_os(TEST_PANIC_ENV).is_some_and(|v| v == "1") {
        all.push(MethodSpec {
            name: "test.panic",
            scope: None,
            handler: |_, _, _| Box::pin(async { panic!("test.panic was called") }),
        });
    }
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
