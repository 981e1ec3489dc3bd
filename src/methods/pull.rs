//! `pull.config.get` (scope `pull_channel`) and `pull.application.config.get` (scope `pull`):
//! where and how Bitrix24's PullClient connects (issue 13; push-pull.md §1.2, §7.1).
//!
//! Both answer the same: the caller's private channel, which carries the `im` events. Bitrix24
//! gives an application its own channels without `im` events and refuses each method to the
//! other credential kind (`WRONG_AUTH_TYPE`); here both credential kinds may call both and get
//! the private channel (README "Compatibility"). `CACHE` and `REOPEN` are accepted and ignored.
//!
//! Result: `server` (version 3, the `/subws/` and `/sub/` URLs, `config_timestamp`),
//! `api.revision_web` 19, `channels.private` `{id, public_id, start, end, type}`,
//! `publicChannels` `{}`, `exp` (the channel's end, unix seconds) and `serverTime`. The URLs come
//! from `public_url`, else the address the server listens on; never from the `Host` header.

use crate::auth::channel;
use crate::auth::{Caller, CallerKind};
use crate::clock::rfc3339_local;
use crate::error::ApiError;
use crate::protocol::dispatch::MethodSpec;
use crate::protocol::envelope::Output;
use crate::state::AppState;
use crate::value::{Array, Value};

/// The protocol version advertised: framed text (§2.2); never 4 (protobuf).
pub const SERVER_VERSION: i64 = 3;
/// The PullClient's own revision (§1.4): any other value switches a webhook client off.
pub const REVISION_WEB: i64 = 19;

pub fn methods() -> Vec<MethodSpec> {
    vec![
        method!("pull.config.get", Some("pull_channel"), config_get),
        method!("pull.application.config.get", Some("pull"), config_get),
    ]
}

async fn config_get(state: &AppState, caller: &Caller, _: Array) -> Result<Output, ApiError> {
    let key = &state.keys.pull_channel;
    let now = state.clock.unix();
    let end = now.saturating_add(state.config.pull.channel_ttl_seconds.max(1));
    // Bound to the caller's credential: revoking it ends the channel (delivery::pull).
    let grant = match &caller.kind {
        CallerKind::Webhook { webhook_id } => channel::Grant::Webhook(*webhook_id),
        CallerKind::App { app_id, .. } => channel::Grant::App(*app_id),
        CallerKind::Session { id_hash } => channel::Grant::session(id_hash),
    };
    let id = channel::sign(key, caller.user_id, end, grant);
    let base = state.config.base_url(state.config.listen);
    let ws_base = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => base.clone(),
    };
    let hostname = base
        .split_once("://")
        .map(|(_, r)| r.split('/').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let ws = format!("{ws_base}/subws/");
    let poll = format!("{base}/sub/");
    let publish = format!("{base}/pub/");
    let server = Value::map([
        ("version", Value::Int(SERVER_VERSION)),
        ("server_enabled", Value::Bool(true)),
        ("mode", Value::from("personal")),
        ("hostname", Value::Str(hostname)),
        ("long_polling", Value::Str(poll.clone())),
        // Bitrix24's spelling, which the client reads (§1.2).
        ("long_pooling_secure", Value::Str(poll)),
        ("websocket_enabled", Value::Bool(true)),
        ("websocket", Value::Str(ws.clone())),
        ("websocket_secure", Value::Str(ws)),
        ("publish_enabled", Value::Bool(false)),
        ("publish", Value::Str(publish.clone())),
        ("publish_secure", Value::Str(publish)),
        // Must be present, or the client finds its config stale every minute (§1.2).
        ("config_timestamp", Value::Int(now)),
    ]);
    let private = Value::map([
        ("id", Value::Str(id)),
        ("public_id", Value::from("")),
        ("start", Value::Str(rfc3339_local(now as f64))),
        ("end", Value::Str(rfc3339_local(end as f64))),
        ("type", Value::from("private")),
    ]);
    Ok(Value::map([
        ("server", server),
        (
            "api",
            Value::map([
                ("revision_web", Value::Int(REVISION_WEB)),
                ("revision_mobile", Value::Int(3)),
            ]),
        ),
        ("channels", Value::map([("private", private)])),
        ("publicChannels", Value::map::<&str>([])),
        ("exp", Value::Int(end)),
        ("serverTime", Value::Str(rfc3339_local(state.clock.now()))),
    ])
    .into())
}
