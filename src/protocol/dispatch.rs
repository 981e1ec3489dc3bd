//! The one dispatcher every call goes through: lookup in the registry of `AppState` (before
//! auth), authentication, scope check, operating-time limit, handler. Direct calls and every
//! command of a batch share `execute`; only the rate limit, which counts HTTP requests, is
//! outside it. The registry itself is assembled above this layer (`app`), so that `protocol`
//! never imports `methods`.

use super::envelope::Output;
use crate::auth::{self, Caller, Credential};
use crate::error::ApiError;
use crate::limits::operating::Usage;
use crate::state::AppState;
pub use crate::state::{Handler, MethodSpec};
use crate::value::{Array, Value};

/// Where the list offset `start` travels from the framework to a list method's handler.
///
/// The real server takes `start` out of the parameters and hands it to the handler as a separate
/// argument (§1.6). Here it stays in the parameter array, already `intval`-ed, under a key no
/// method reads as a parameter, so that the handler signature (and every handler, and `batch`,
/// which feeds each command's parameters through `execute`) stays as it is.
pub const START_KEY: &str = "@start";

/// Moves `start` to [`START_KEY`]. A caller-sent `@start` is dropped first, so the offset always
/// comes from `start`.
pub fn carry_start(params: &mut Array) {
    params.remove(START_KEY);
    if let Some(start) = params.remove("start") {
        params.insert(START_KEY, Value::Int(start.intval()));
    }
}

/// The offset a list method was called with; 0 when `start` was not given.
pub fn start_offset(params: &Array) -> i64 {
    params.get_str(START_KEY).map(Value::intval).unwrap_or(0)
}

/// Transport facts about the request that authentication needs.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// The request arrived over TLS, directly or through a trusted proxy.
    pub secure: bool,
}

/// A method's answer with the facts its `time` block needs.
#[derive(Debug, Clone)]
pub struct Executed {
    pub out: Output,
    /// Handler start and end, Unix seconds.
    pub started: f64,
    pub finished: f64,
    pub usage: Usage,
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
        state.clock.unix(),
    )
    .await
}

/// Runs a method for an authenticated caller: the scope check, the operating-time limit, then
/// the handler, whose time is charged to the (caller, method) account afterwards. Direct calls
/// and each command of a batch both come through here; `batch` runs a run of adds through
/// [`admit`] and [`conclude`] instead, with the handler split in two between them.
pub async fn execute(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
    params: Array,
) -> Result<Executed, ApiError> {
    let admitted = admit(state, spec, caller).await?;
    let outcome = (spec.handler)(state, caller, params).await;
    let finished = state.clock.now();
    let started = admitted.started;
    conclude(state, spec, admitted, started, finished, outcome).await
}

/// What [`admit`] found: the operating-time account the call is charged to, if any, and when
/// its handler started (Unix seconds).
#[derive(Debug)]
pub struct Admitted {
    account: Option<String>,
    pub started: f64,
    /// The handler seconds the account had used when the call was admitted (at most the limit;
    /// 0 when the call is not charged).
    pub used: f64,
}

impl Admitted {
    /// Whether the call is charged to an operating-time account.
    pub fn charged(&self) -> bool {
        self.account.is_some()
    }
}

/// [`execute`]'s steps before the handler: the scope check, then the operating-time limit.
pub async fn admit(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
) -> Result<Admitted, ApiError> {
    if let Some(scope) = spec.scope {
        if !caller.has_scope(scope) {
            return Err(caller.insufficient_scope());
        }
    }
    let account = match (&state.limits.operating, spec.operating_limited) {
        (Some(_), true) => caller.operating_identity(),
        _ => None,
    };
    let started = state.clock.now();
    let used = match &account {
        Some(id) => state
            .limits
            .operating_admit(id, spec.name, started)
            .await
            .ok_or_else(ApiError::operation_time_limit)?,
        None => 0.0,
    };
    Ok(Admitted {
        account,
        started,
        used,
    })
}

/// [`execute`]'s step after the handler: charges `finished - started` (Unix seconds) to the
/// account [`admit`] found and gives the handler's outcome its time facts. A batch's run of adds
/// passes each command's share of the run's time here rather than the wall-clock interval,
/// so that the run is charged what it took once, not once per command.
pub async fn conclude(
    state: &AppState,
    spec: &MethodSpec,
    admitted: Admitted,
    started: f64,
    finished: f64,
    outcome: Result<Output, ApiError>,
) -> Result<Executed, ApiError> {
    // A failed call used the server's time as much as a successful one.
    let usage = match &admitted.account {
        Some(id) => {
            state
                .limits
                .operating_record(id, spec.name, started, finished - started, finished)
                .await
        }
        None => Usage::UNTRACKED,
    };
    Ok(Executed {
        out: outcome?,
        started,
        finished,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_carried_as_an_integer() {
        let mut p = Array::new();
        p.insert("start", Value::from("100abc"));
        p.insert(START_KEY, Value::Int(7));
        carry_start(&mut p);
        assert_eq!(start_offset(&p), 100);
        assert!(!p.contains_key("start"));

        let mut forged = Array::new();
        forged.insert(START_KEY, Value::Int(7));
        carry_start(&mut forged);
        assert_eq!(start_offset(&forged), 0);
    }
}
