//! The method registry and the one dispatcher every call goes through: lookup (before auth),
//! authentication, scope check, handler.

use std::sync::OnceLock;

use futures_util::future::BoxFuture;
use indexmap::IndexMap;

use super::envelope::Output;
use crate::auth::{self, Caller, Credential};
use crate::error::ApiError;
use crate::methods;
use crate::state::AppState;
use crate::value::Array;

pub type Handler =
    for<'a> fn(&'a AppState, &'a Caller, Array) -> BoxFuture<'a, Result<Output, ApiError>>;

pub struct MethodSpec {
    pub name: &'static str,
    /// `None` for the global scope, which every credential may call.
    pub scope: Option<&'static str>,
    pub handler: Handler,
}

fn registry() -> &'static IndexMap<&'static str, MethodSpec> {
    static REGISTRY: OnceLock<IndexMap<&'static str, MethodSpec>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        methods::all()
            .into_iter()
            .map(|spec| (spec.name, spec))
            .collect()
    })
}

/// Every registered method, in registration order.
pub fn all_methods() -> impl Iterator<Item = &'static MethodSpec> {
    registry().values()
}

/// Method names are registered lower-case, and lookups are made with the lower-cased name (§1.2).
pub fn lookup(method: &str) -> Option<&'static MethodSpec> {
    registry().get(method)
}

/// Transport facts about the request that authentication needs.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// The request arrived over TLS, directly or through a trusted proxy.
    pub secure: bool,
}

/// Authenticates and runs one call of a known method.
pub async fn call(
    state: &AppState,
    spec: &MethodSpec,
    cred: Credential,
    channel: Channel,
    params: Array,
) -> Result<Output, ApiError> {
    let caller = authenticate(state, cred, channel).await?;
    execute(state, spec, &caller, params).await
}

pub async fn authenticate(
    state: &AppState,
    cred: Credential,
    channel: Channel,
) -> Result<Caller, ApiError> {
    auth::authenticate(
        state.store.as_ref(),
        cred,
        channel.secure,
        state.config.require_https(),
        chrono::Utc::now().timestamp(),
    )
    .await
}

/// Runs a method for an authenticated caller: the scope check, then the handler. Direct calls
/// and (later) each command of a batch both come through here.
pub async fn execute(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
    params: Array,
) -> Result<Output, ApiError> {
    if let Some(scope) = spec.scope {
        if !caller.has_scope(scope) {
            return Err(caller.insufficient_scope());
        }
    }
    (spec.handler)(state, caller, params).await
}
