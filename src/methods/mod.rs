//! Method handlers, one module per family. Handlers are thin: they turn parameters into domain
//! values, call the domain and the store, and build the result.

/// A registry entry whose handler is an `async fn(&AppState, &Caller, Array) -> Result<Output,
/// ApiError>`; the closure boxes its future, which the dispatcher's fn-pointer type needs.
macro_rules! method {
    ($name:literal, $scope:expr, $f:expr) => {
        $crate::protocol::dispatch::MethodSpec {
            name: $name,
            scope: $scope,
            operating_limited: true,
            handler: |state, caller, params| {
                futures_util::FutureExt::boxed($f(state, caller, params))
            },
        }
    };
}

pub mod batch;
pub mod discovery;
pub mod inbox;
pub mod notify;
pub mod users;

use crate::protocol::dispatch::MethodSpec;

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = discovery::methods();
    all.extend(notify::methods());
    all.extend(inbox::methods());
    all.extend(users::methods());
    all.extend(batch::methods());
    all
}

/// A storage failure: logged with its cause, answered as a bare 500.
pub(crate) fn storage_failed(e: crate::store::StoreError) -> crate::error::ApiError {
    tracing::error!(error = %e, "storage failed");
    crate::error::ApiError::internal()
}

/// Every scope some method needs, sorted: what `scope` with `full` lists, and what a browser
/// session (the user in person) holds.
pub fn known_scopes() -> Vec<String> {
    let mut scopes: Vec<String> = all()
        .iter()
        .filter_map(|m| m.scope)
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes.dedup();
    scopes
}
