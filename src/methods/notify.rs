//! `im.notify`, `im.notify.system.add` and `im.notify.personal.add` (§2, §4.1).

use crate::auth::Caller;
use crate::domain::notify::{self, Kind, NotifyLimits};
use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::protocol::envelope::Output;
use crate::state::AppState;
use crate::value::{Array, Value};

pub fn methods() -> Vec<MethodSpec> {
    vec![
        method!("im.notify.system.add", Some("im"), |s, c, p| add(
            s,
            c,
            p,
            Kind::System
        )),
        method!("im.notify.personal.add", Some("im"), |s, c, p| add(
            s,
            c,
            p,
            Kind::Personal
        )),
        method!("im.notify", Some("im"), generic_add),
    ]
}

/// `im.notify` picks the kind from `TYPE`, compared case-sensitively; anything but `SYSTEM` is a
/// personal notification.
async fn generic_add(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let kind = match params.upper_case_keys().get_str("TYPE") {
        Some(Value::Str(t)) if t == "SYSTEM" => Kind::System,
        _ => Kind::Personal,
    };
    add(state, caller, params, kind).await
}

async fn add(
    state: &AppState,
    caller: &Caller,
    params: Array,
    kind: Kind,
) -> Result<Output, ApiError> {
    if caller.is_session() {
        return Err(ApiError::wrong_auth_type());
    }
    let now = state.clock.unix();
    let limits = NotifyLimits {
        attach_max_bytes: state.config.limits.attach_max_bytes,
    };
    let draft = notify::build(
        &params,
        kind,
        caller.user_id,
        &caller.origin(),
        now,
        limits,
        &mut rand::rng(),
    )?;
    match state.store.add_notification(draft, now).await {
        Ok(Some(id)) => Ok(Value::Int(id).into()),
        // Unknown or inactive recipient: the method page's "may return false" (D8).
        Ok(None) => Ok(Value::Bool(false).into()),
        Err(e) => {
            tracing::error!(error = %e, "storing a notification failed");
            Err(ApiError::internal())
        }
    }
}
