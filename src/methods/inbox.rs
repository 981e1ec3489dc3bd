//! The notification lifecycle (§4.2–4.11): `im.notify.get`, `.read`, `.read.list`, `.read.all`,
//! `.delete`, `.history.search`, `.schema.get`, `.answer`, `.confirm` and `im.counters.get`.

use super::{storage_failed, users::im_user_card};
use crate::auth::Caller;
use crate::domain::inbox::{
    self, DeleteRequest, ReadRequest, ReadScope, NOTIFY_EVENT, NOTIFY_MODULE,
};
use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::protocol::envelope::Output;
use crate::state::AppState;
use crate::store::event::notifications_value;
use crate::store::{Notification, NotifyChat};
use crate::value::{Array, Value};

pub fn methods() -> Vec<MethodSpec> {
    vec![
        method!("im.notify.get", Some("im"), get),
        method!("im.notify.read", Some("im"), read),
        method!("im.notify.read.list", Some("im"), read_list),
        method!("im.notify.read.all", Some("im"), read_all),
        method!("im.notify.delete", Some("im"), delete),
        method!("im.notify.history.search", Some("im"), history_search),
        method!("im.notify.schema.get", Some("im"), schema_get),
        method!("im.notify.answer", Some("im"), answer),
        method!("im.notify.confirm", Some("im"), confirm),
        method!("im.counters.get", Some("im"), counters_get),
    ]
}

async fn get(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let req = inbox::page_request(&params)?;
    let store = &state.store;
    let chat = store
        .notify_chat(caller.user_id)
        .await
        .map_err(storage_failed)?;
    let page = store
        .notification_page(caller.user_id, req.cursor, req.limit)
        .await
        .map_err(storage_failed)?;
    let mut result = Array::new();
    // Without a notification chat, or with an empty one, only the two lists (§4.2).
    if let Some(c) = chat.filter(|c| c.total > 0) {
        result.insert("total_count", Value::Int(c.total));
        result.insert("total_unread_count", Value::Int(c.unread));
        result.insert("chat_id", Value::Int(c.chat_id));
    }
    let (notifications, users) = listing(state, chat, &page).await?;
    result.insert("notifications", notifications);
    result.insert("users", users);
    Ok(Value::Arr(result).into())
}

/// The `notifications` and `users` members shared by get and history.search.
async fn listing(
    state: &AppState,
    chat: Option<NotifyChat>,
    page: &[Notification],
) -> Result<(Value, Value), ApiError> {
    let chat_id = chat.map_or(0, |c| c.chat_id);
    let notifications = notifications_value(page, chat_id);
    let mut authors: Vec<i64> = page
        .iter()
        .map(|n| n.author_id)
        .filter(|a| *a > 0)
        .collect();
    authors.sort_unstable();
    authors.dedup();
    let users = state
        .store
        .users_by_id(authors)
        .await
        .map_err(storage_failed)?;
    let users = Value::list(users.iter().map(|u| im_user_card(u, true)));
    Ok((notifications, users))
}

async fn read(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    if let Some(req) = inbox::read_request(&params) {
        state
            .store
            .mark_read(caller.user_id, vec![req])
            .await
            .map_err(storage_failed)?;
    }
    Ok(Value::Bool(true).into())
}

async fn read_list(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let (ids, read) = inbox::read_list_request(&params)?;
    let requests = ids
        .into_iter()
        .map(|id| ReadRequest {
            scope: ReadScope::Only(id),
            read,
        })
        .collect();
    state
        .store
        .mark_read(caller.user_id, requests)
        .await
        .map_err(storage_failed)?;
    Ok(Value::Bool(true).into())
}

/// The documented object `{"result": true, "newCounter": unread}` (§4.6, §9 #7), which the
/// official PHP SDK's `NotifyReadAllResult` reads (`result.result`, `result.newCounter`).
/// `newCounter` is the caller's unread count afterwards: confirmations stay unread.
async fn read_all(state: &AppState, caller: &Caller, _params: Array) -> Result<Output, ApiError> {
    let all = ReadRequest {
        scope: ReadScope::All,
        read: true,
    };
    state
        .store
        .mark_read(caller.user_id, vec![all])
        .await
        .map_err(storage_failed)?;
    let unread = state
        .store
        .notify_chat(caller.user_id)
        .await
        .map_err(storage_failed)?
        .map_or(0, |c| c.unread);
    Ok(Value::map([
        ("result", Value::Bool(true)),
        ("newCounter", Value::Int(unread)),
    ])
    .into())
}

async fn delete(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let request = inbox::delete_request(&params, &caller.origin(), caller.is_session())?;
    let deleted = match request {
        DeleteRequest::Own(id) if id <= 0 => false,
        DeleteRequest::Own(id) => state
            .store
            .delete_own(caller.user_id, id)
            .await
            .map_err(storage_failed)?,
        // True even when nothing matched, as in the source.
        DeleteRequest::ByTag {
            field,
            value,
            origin,
        } => {
            state
                .store
                .delete_by_tag(field, value, origin)
                .await
                .map_err(storage_failed)?;
            true
        }
    };
    Ok(Value::Bool(deleted).into())
}

async fn history_search(
    state: &AppState,
    caller: &Caller,
    params: Array,
) -> Result<Output, ApiError> {
    let local = state.clock.local_offset();
    let req = inbox::search_request(&params, local)?;
    let store = &state.store;
    let chat = store
        .notify_chat(caller.user_id)
        .await
        .map_err(storage_failed)?;
    // Without a notification chat the source answers an empty array.
    let Some(c) = chat else {
        return Ok(Value::empty_array().into());
    };
    let (page, total) = store
        .search_notifications(caller.user_id, req)
        .await
        .map_err(storage_failed)?;
    let mut result = Array::new();
    result.insert("chat_id", Value::Int(c.chat_id));
    if let Some(total) = total {
        result.insert("total_results", Value::Int(total));
    }
    let (notifications, users) = listing(state, chat, &page).await?;
    result.insert("notifications", notifications);
    result.insert("users", users);
    Ok(Value::Arr(result).into())
}

/// The one notification type this server has: REST notifications from apps and webhooks.
async fn schema_get(_: &AppState, _: &Caller, _params: Array) -> Result<Output, ApiError> {
    let rest = Value::map([
        ("NAME", Value::from("Applications and webhooks")),
        ("MODULE_ID", Value::from(NOTIFY_MODULE)),
        (
            "LIST",
            Value::list([Value::map([
                ("ID", Value::Str(format!("{NOTIFY_MODULE}|{NOTIFY_EVENT}"))),
                ("NAME", Value::from("Notifications from applications")),
            ])]),
        ),
    ]);
    Ok(Value::map([(NOTIFY_MODULE, rest)]).into())
}

/// No module here handles answers, so a found notification gets the default message. A text
/// that is blank once trimmed finds nothing, as in the source.
async fn answer(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let (id, text) = inbox::answer_request(&params)?;
    let found = if text.is_empty() {
        None
    } else {
        // Through the writer: the answer is an event (notifyAnswer) for the user's streams.
        state
            .store
            .answer(caller.user_id, id, text.to_string())
            .await
            .map_err(storage_failed)?
    };
    let message = match found {
        Some(_) => Value::list([Value::from(inbox::ANSWER_SENT)]),
        None => Value::Bool(false),
    };
    Ok(Value::map([("result_message", message)]).into())
}

/// A confirmation is answered by deleting it. No module handler adds messages, so the answer
/// names the chosen button; an unknown (or not confirm-type) notification is `false`.
async fn confirm(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let (id, value) = inbox::confirm_request(&params)?;
    let confirmed = state
        .store
        .confirm(caller.user_id, id, value.to_string())
        .await
        .map_err(storage_failed)?;
    let message = match confirmed {
        Some(n) => Value::list(
            inbox::confirm_messages(n.buttons.as_deref(), &value)
                .into_iter()
                .map(Value::Str),
        ),
        None => Value::Bool(false),
    };
    Ok(Value::map([("result_message", message)]).into())
}

/// Only notifications exist here, so every other counter is zero and every map empty.
/// `ONLY_COUNTER` and `JSON` are read case-sensitively, as in the source (§1.5).
async fn counters_get(
    state: &AppState,
    caller: &Caller,
    params: Array,
) -> Result<Output, ApiError> {
    let unread = state
        .store
        .notify_chat(caller.user_id)
        .await
        .map_err(storage_failed)?
        .map_or(0, |c| c.unread);
    let camel = matches!(params.get_str("JSON"), Some(Value::Str(s)) if s == "Y");
    let key = |upper: &'static str, camel_case: &'static str| {
        if camel {
            camel_case
        } else {
            upper
        }
    };
    let types = Value::map([
        (key("ALL", "all"), Value::Int(unread)),
        (key("NOTIFY", "notify"), Value::Int(unread)),
        (key("CHAT", "chat"), Value::Int(0)),
        (key("LINES", "lines"), Value::Int(0)),
        (key("DIALOG", "dialog"), Value::Int(0)),
        (key("MESSENGER", "messenger"), Value::Int(0)),
    ]);
    if params.get_str("ONLY_COUNTER").is_some_and(Value::is_truthy) {
        return Ok(types.into());
    }
    Ok(Value::map([
        (key("TYPE", "type"), types),
        (key("CHAT", "chat"), Value::empty_array()),
        (key("CHAT_MUTED", "chatMuted"), Value::empty_array()),
        (key("CHAT_UNREAD", "chatUnread"), Value::empty_array()),
        (key("LINES", "lines"), Value::empty_array()),
        (key("DIALOG", "dialog"), Value::empty_array()),
        (key("DIALOG_UNREAD", "dialogUnread"), Value::empty_array()),
    ])
    .into())
}
