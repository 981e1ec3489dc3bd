//! What every request handler shares: the application state, and the method contract (a
//! registry entry, its handler's type and what the handler returns). `methods` fills the
//! registry, `app` assembles it, and `protocol` runs it without knowing any handler, so that
//! `protocol` never imports `methods` (ARCHITECTURE.md, "Layering").

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use indexmap::IndexMap;

use crate::auth::{self, Caller};
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::limits::Limiters;
use crate::store::Store;
use crate::toolkit::Toolkit;
use crate::value::{Array, Value};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub limits: Arc<Limiters>,
    /// The one clock (see `clock`): every time a handler answers or stores comes from here.
    pub clock: Clock,
    /// Every method this server answers.
    pub methods: Arc<Registry>,
    /// The test-server toolkit: request journal, faults, admin token (`toolkit`).
    pub toolkit: Arc<Toolkit>,
    /// Server secrets read once at start, so no request reads (or writes) them.
    pub keys: Arc<Keys>,
}

/// The server's signing keys (64 hex digits each), from the `settings` table: created by the
/// first start, the same for every instance on one database.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// Signs unsubscribe links and names mails (`delivery::mail::KEY_SETTING`).
    pub mail: String,
    /// Signs Push&Pull channel ids (`auth::channel::KEY_SETTING`).
    pub pull_channel: String,
}

/// What a method handler returns: `result`, plus `next`/`total` for list methods (§5.1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    pub result: Value,
    pub next: Option<i64>,
    pub total: Option<i64>,
}

impl From<Value> for Output {
    fn from(result: Value) -> Output {
        Output {
            result,
            next: None,
            total: None,
        }
    }
}

pub type Handler =
    for<'a> fn(&'a AppState, &'a Caller, Array) -> BoxFuture<'a, Result<Output, ApiError>>;

/// One registered method.
pub struct MethodSpec {
    /// Lower-case: lookups are made with the lower-cased name (§1.2).
    pub name: &'static str,
    /// `None` for the global scope, which every credential may call. Otherwise one of
    /// [`auth::SCOPES`].
    pub scope: Option<&'static str>,
    /// Whether calls are charged to the operating-time limit. Only the batch wrapper is exempt:
    /// its commands are charged one by one (§6.2).
    pub operating_limited: bool,
    pub handler: Handler,
}

/// The method registry: name → [`MethodSpec`], in registration order.
pub struct Registry {
    by_name: IndexMap<&'static str, MethodSpec>,
    /// The OpenAPI document of these methods, built by `protocol::openapi` on first use.
    openapi: OnceLock<String>,
}

impl Registry {
    /// Panics when a method names a scope that `auth` does not know: a programming error that
    /// any start of the server shows, rather than a method no credential could ever call.
    pub fn new(specs: impl IntoIterator<Item = MethodSpec>) -> Registry {
        let by_name: IndexMap<_, _> = specs.into_iter().map(|s| (s.name, s)).collect();
        for spec in by_name.values() {
            if let Some(scope) = spec.scope {
                assert!(
                    auth::SCOPES.contains(&scope),
                    "{} needs the scope {scope}, which auth::SCOPES does not list",
                    spec.name
                );
            }
        }
        Registry {
            by_name,
            openapi: OnceLock::new(),
        }
    }

    /// `method` must already be lower-case.
    pub fn lookup(&self, method: &str) -> Option<&MethodSpec> {
        self.by_name.get(method)
    }

    /// Every registered method, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &MethodSpec> {
        self.by_name.values()
    }

    /// Where `protocol::openapi` keeps the document it built from this registry.
    pub fn openapi_cache(&self) -> &OnceLock<String> {
        &self.openapi
    }
}
