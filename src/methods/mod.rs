//! Method handlers, one module per family. Handlers are thin: they turn parameters into domain
//! values, call the domain and the store, and build the result.

pub mod batch;
pub mod notify;

use crate::protocol::dispatch::MethodSpec;

/// Every method this server answers.
pub fn all() -> Vec<MethodSpec> {
    let mut all = notify::methods();
    all.extend(batch::methods());
    all
}
