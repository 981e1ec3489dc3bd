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
pub mod pull;
pub mod users;

use crate::protocol::dispatch::MethodSpec;

/// Set to `1` to register `test.panic`, a method whose handler panics. Test-only: it exists so
/// that the integration tests can show a panicking handler becomes a 500 envelope and the server
/// keeps serving. Never set it in production.
pub const TEST_PANIC_ENV: &str = "IMNOTIFY_TEST_PANIC_METHOD";

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = discovery::methods();
    all.extend(notify::methods());
    all.extend(inbox::methods());
    all.extend(users::methods());
    all.extend(pull::methods());
    all.extend(batch::methods());
    if std::env::var_os(TEST_PANIC_ENV).is_some_and(|v| v == "1") {
        all.push(MethodSpec {
            name: "test.panic",
            scope: None,
            operating_limited: false,
            handler: |_, _, _| Box::pin(async { panic!("test.panic was called") }),
        });
    }
    all
}

/// A storage failure: logged with its cause, answered as a bare 500.
pub(crate) fn storage_failed(e: crate::store::StoreError) -> crate::error::ApiError {
    tracing::error!(error = %e, "storage failed");
    crate::error::ApiError::internal()
}
