//! `im.notify`, `im.notify.system.add` and `im.notify.personal.add` (§2, §4.1).

use crate::auth::Caller;
use crate::domain::notify::{self, Draft, Kind, NotifyLimits};
use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::protocol::envelope::Output;
use crate::state::AppState;
use crate::store::StoreResult;
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

/// The kind of notification an add method stores, or `None` for any other method. `im.notify`
/// picks it from `TYPE`, compared case-sensitively; anything but `SYSTEM` is a personal
/// notification.
pub fn kind_of(method: &str, params: &Array) -> Option<Kind> {
    match method {
        "im.notify.system.add" => Some(Kind::System),
        "im.notify.personal.add" => Some(Kind::Personal),
        "im.notify" => Some(match params.upper_case_keys().get_str("TYPE") {
            Some(Value::Str(t)) if t == "SYSTEM" => Kind::System,
            _ => Kind::Personal,
        }),
        _ => None,
    }
}

/// Whether `method` (a registered name) is one of the add methods: [`check`], then one write.
pub fn is_add(method: &str) -> bool {
    matches!(
        method,
        "im.notify.system.add" | "im.notify.personal.add" | "im.notify"
    )
}

async fn generic_add(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let kind = kind_of("im.notify", &params).unwrap_or(Kind::Personal);
    add(state, caller, params, kind).await
}

async fn add(
    state: &AppState,
    caller: &Caller,
    params: Array,
    kind: Kind,
) -> Result<Output, ApiError> {
    let (draft, now) = check(state, caller, &params, kind)?;
    answer(state.store.add_notification(draft, now).await)
}

/// The first half of an add method's handler (the kind from [`kind_of`]): every check, and
/// the notification to store with its time (Unix seconds), without writing anything. `batch`
/// checks a run of adds this way and sends their drafts to the store together.
pub fn check(
    state: &AppState,
    caller: &Caller,
    params: &Array,
    kind: Kind,
) -> Result<(Draft, i64), ApiError> {
    if caller.is_session() {
        return Err(ApiError::wrong_auth_type());
    }
    let now = state.clock.unix();
    let limits = NotifyLimits {
        attach_max_bytes: state.config.limits.attach_max_bytes,
    };
    let draft = notify::build(
        params,
        kind,
        caller.user_id,
        &caller.origin(),
        now,
        limits,
        &mut rand::rng(),
    )?;
    Ok((draft, now))
}

/// The second half: the method's answer for what the store made of the draft.
pub fn answer(stored: StoreResult<Option<i64>>) -> Result<Output, ApiError> {
    match stored {
        Ok(Some(id)) => Ok(Value::Int(id).into()),
        // Unknown or inactive recipient: the method page's "may return false" (D8).
        Ok(None) => Ok(Value::Bool(false).into()),
        Err(e) => {
            tracing::error!(error = %e, "storing a notification failed");
            Err(ApiError::internal())
        }
    }
}
