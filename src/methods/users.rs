//! The user directory: `user.get`, `user.current` (scope `user`) and `im.user.get` (scope `im`),
//! which the method pages point to for finding a `USER_ID`.

use super::storage_failed;
use crate::auth::Caller;
use crate::domain::directory::{self, user_color};
use crate::error::ApiError;
use crate::protocol::dispatch::{start_offset, MethodSpec};
use crate::protocol::envelope::{rfc3339_local, Output};
use crate::state::AppState;
use crate::store::UserRecord;
use crate::value::{Array, Value};

pub fn methods() -> Vec<MethodSpec> {
    vec![
        method!("user.get", Some("user"), |s, _c, p| user_get(s, p)),
        method!("user.current", Some("user"), |s, c, _p| user_current(s, c)),
        method!("im.user.get", Some("im"), im_user_get),
    ]
}

/// A classic list method: 50 per page from `start`, `next` while more remain, and `total`. An
/// empty page carries neither `next` nor `total`: the real method answers a bare `[]`.
async fn user_get(state: &AppState, params: Array) -> Result<Output, ApiError> {
    let query = directory::user_query(&params, start_offset(&params));
    let offset = query.offset;
    let (users, total) = state
        .store
        .find_users(query)
        .await
        .map_err(storage_failed)?;
    if users.is_empty() {
        return Ok(Value::empty_array().into());
    }
    let shown = offset + users.len();
    Ok(Output {
        result: Value::list(users.iter().map(user_value)),
        next: ((shown as i64) < total).then_some(shown as i64),
        total: Some(total),
    })
}

async fn user_current(state: &AppState, caller: &Caller) -> Result<Output, ApiError> {
    let me = one_user(state, caller.user_id).await?.ok_or_else(|| {
        // An authenticated caller whose user row is gone: the store is inconsistent.
        tracing::error!(user_id = caller.user_id, "caller's user not found");
        ApiError::internal()
    })?;
    Ok(user_value(&me).into())
}

/// Without `ID`, the caller; with one, it must be a positive number of an existing user.
async fn im_user_get(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let p = params.upper_case_keys();
    // PHP's isset: a null ID is no ID.
    let id = match p.get_str("ID").filter(|v| !v.is_null()) {
        None => caller.user_id,
        Some(v) => Some(v.intval())
            .filter(|id| *id > 0)
            .ok_or_else(ApiError::user_id_empty_im)?,
    };
    let with_hr = matches!(p.get_str("AVATAR_HR"), Some(Value::Str(s)) if s == "Y");
    let user = one_user(state, id)
        .await?
        .ok_or_else(ApiError::user_not_exists)?;
    Ok(im_user_card(&user, with_hr).into())
}

async fn one_user(state: &AppState, id: i64) -> Result<Option<UserRecord>, ApiError> {
    Ok(state
        .store
        .users_by_id(vec![id])
        .await
        .map_err(storage_failed)?
        .pop())
}

/// A user as `user.get` and `user.current` show it: upper-case keys, the id as a string. Fields
/// this server has no data for carry their empty values.
fn user_value(r: &UserRecord) -> Value {
    let u = &r.user;
    Value::map([
        ("ID", Value::Str(u.id.to_string())),
        ("ACTIVE", Value::Bool(u.active)),
        ("NAME", Value::from(u.name.as_str())),
        ("LAST_NAME", Value::from(u.last_name.as_str())),
        ("SECOND_NAME", Value::from("")),
        ("EMAIL", Value::from(u.email.as_str())),
        (
            "DATE_REGISTER",
            Value::Str(rfc3339_local(r.created_at as f64)),
        ),
        ("TIME_ZONE", Value::from("")),
        ("IS_ONLINE", Value::from("N")),
        ("PERSONAL_GENDER", Value::from("")),
        ("PERSONAL_BIRTHDAY", Value::from("")),
        ("WORK_POSITION", Value::from("")),
        ("UF_DEPARTMENT", Value::empty_array()),
        ("USER_TYPE", Value::from("employee")),
    ])
}

/// A user as the messenger shows it (`im.user.get`, the `users` of the notification readers):
/// lower-case keys, `false` for the dates and phones it does not know.
pub fn im_user_card(r: &UserRecord, with_avatar_hr: bool) -> Value {
    let u = &r.user;
    let full_name = format!("{} {}", u.name, u.last_name).trim().to_owned();
    let mut card = Array::new();
    card.insert("id", Value::Int(u.id));
    card.insert("active", Value::Bool(u.active));
    card.insert("name", Value::Str(full_name));
    card.insert("first_name", Value::from(u.name.as_str()));
    card.insert("last_name", Value::from(u.last_name.as_str()));
    card.insert("work_position", Value::from(""));
    card.insert("color", Value::from(user_color(u.id)));
    card.insert("avatar", Value::from(""));
    if with_avatar_hr {
        card.insert("avatar_hr", Value::from(""));
    }
    card.insert("gender", Value::from(""));
    card.insert("birthday", Value::from(""));
    for flag in ["extranet", "network", "bot", "connector"] {
        card.insert(flag, Value::Bool(false));
    }
    card.insert("external_auth_id", Value::from("default"));
    card.insert("status", Value::from("online"));
    for unknown in [
        "idle",
        "last_activity_date",
        "mobile_last_date",
        "desktop_last_date",
        "absent",
    ] {
        card.insert(unknown, Value::Bool(false));
    }
    card.insert("departments", Value::empty_array());
    card.insert("phones", Value::Bool(false));
    card.insert("bot_data", Value::Null);
    card.insert("type", Value::from("user"));
    card.insert("website", Value::from(""));
    card.insert("email", Value::from(u.email.as_str()));
    Value::Arr(card)
}
