//! Method handlers, one module per family. Handlers are thin: they turn parameters into domain
//! values, call the domain and the store, and build the result.

pub mod inbox;
pub mod notify;
pub mod users;

use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::store::StoreError;

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = notify::methods();
    all.extend(inbox::methods());
    all.extend(users::methods());
    all
}

/// A storage failure: logged with its cause, answered as a bare 500.
pub(crate) fn storage_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "storage failed");
    ApiError::internal()
}
