//! Global-scope methods that tell a client about the server and itself (§7.4): `server.time`,
//! `profile`, `scope`, `methods`, `method.get` and `app.info`.

use crate::auth::{internal, Caller, CallerKind};
use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::protocol::envelope::{rfc3339_local, Output};
use crate::state::AppState;
use crate::value::{Array, Value};

/// What `app.info` reports as the licence: there is no plan here.
const LICENSE: &str = "en_selfhosted";

pub fn methods() -> Vec<MethodSpec> {
    vec![
        method!("server.time", None, server_time),
        method!("profile", None, profile),
        method!("scope", None, scope),
        method!("methods", None, methods_list),
        method!("method.get", None, method_get),
        method!("app.info", None, app_info),
    ]
}

type Answer = Result<Output, ApiError>;

async fn server_time(state: &AppState, _: &Caller, _: Array) -> Answer {
    Ok(Value::Str(rfc3339_local(state.clock.now())).into())
}

async fn profile(state: &AppState, caller: &Caller, _: Array) -> Answer {
    let user = state.store.user(caller.user_id).await.map_err(internal)?;
    let Some(user) = user.filter(|u| u.active) else {
        // An inactive user gets an empty object, which PHP writes as [].
        return Ok(Value::empty_array().into());
    };
    Ok(Value::map([
        // The HTTP answer carries the id as a string, as PHP's database layer returns it.
        ("ID", Value::Str(user.id.to_string())),
        ("ADMIN", Value::Bool(user.is_admin)),
        ("NAME", Value::Str(user.name)),
        ("LAST_NAME", Value::Str(user.last_name)),
        ("PERSONAL_GENDER", Value::from("")),
        ("TIME_ZONE", Value::from("")),
        // The user's offset from the server (0: users have no time zone here) plus the
        // server's own from UTC, in seconds, as the current getProfile source adds them.
        (
            "TIME_ZONE_OFFSET",
            Value::Int(state.clock.local_offset().local_minus_utc().into()),
        ),
    ])
    .into())
}

async fn scope(_: &AppState, caller: &Caller, params: Array) -> Answer {
    let params = params.upper_case_keys();
    let full = params.get_str("FULL").is_some_and(Value::is_truthy);
    let scopes = if full {
        crate::auth::known_scopes()
    } else {
        caller.scopes.clone()
    };
    Ok(Value::list(scopes.into_iter().map(Value::Str)).into())
}

/// `methods`: the names the caller may call, or every name with `full`; `scope` narrows to one
/// scope.
async fn methods_list(state: &AppState, caller: &Caller, params: Array) -> Answer {
    let params = params.upper_case_keys();
    let full = params.get_str("FULL").is_some_and(Value::is_truthy);
    let only = params
        .get_str("SCOPE")
        .filter(|v| v.is_truthy())
        .map(Value::to_php_string);
    let names = state
        .methods
        .iter()
        .filter(|m| match &only {
            Some(s) => m.scope == Some(s.as_str()),
            None => full || m.scope.is_none_or(|s| caller.has_scope(s)),
        })
        .map(|m| Value::from(m.name));
    Ok(Value::list(names).into())
}

/// `method.get` reads its `name` parameter case-sensitively (§1.5).
async fn method_get(state: &AppState, caller: &Caller, params: Array) -> Answer {
    let name = params
        .get_str("name")
        .map(|v| v.to_php_string().to_ascii_lowercase())
        .unwrap_or_default();
    let spec = state.methods.lookup(&name);
    Ok(Value::map([
        ("isExisting", Value::Bool(spec.is_some())),
        (
            "isAvailable",
            Value::Bool(spec.is_some_and(|m| m.scope.is_none_or(|s| caller.has_scope(s)))),
        ),
    ])
    .into())
}

async fn app_info(state: &AppState, caller: &Caller, _: Array) -> Answer {
    match &caller.kind {
        CallerKind::App {
            app_id, client_id, ..
        } => {
            // Only the installing user holds a token, so the app is installed for this caller.
            let _ = state;
            Ok(Value::map([
                ("ID", Value::Int(*app_id)),
                ("CODE", Value::Str(client_id.clone())),
                ("VERSION", Value::Int(1)),
                ("STATUS", Value::from("L")),
                ("INSTALLED", Value::Bool(true)),
                ("PAYMENT_EXPIRED", Value::from("N")),
                ("DAYS", Value::Null),
                ("LANGUAGE_ID", Value::from("en")),
                ("LICENSE", Value::from(LICENSE)),
            ])
            .into())
        }
        CallerKind::Webhook { .. } => Ok(Value::map([
            (
                "SCOPE",
                Value::list(caller.scopes.iter().cloned().map(Value::Str)),
            ),
            ("LICENSE", Value::from(LICENSE)),
        ])
        .into()),
        CallerKind::Session { .. } => Err(ApiError::app_context_required()),
    }
}
