//! The test-server toolkit's one hook into the REST path: every call that reaches the
//! dispatcher, and every command of a batch, passes through here, where it may be faulted
//! (`toolkit::faults`) and is recorded in the journal (`toolkit::journal`).
//!
//! `rest_handler` calls [`direct`] in place of `dispatch::execute`, and `methods::batch` calls
//! [`command`] in place of it per command; nothing else in the REST path knows the toolkit.
//! With the journal off and no faults, the cost is two atomic loads.

use std::time::Instant;

use super::dispatch::{self, Executed, MethodSpec};
use super::route::Transport;
use crate::auth::{Caller, CallerKind, Credential};
use crate::error::ApiError;
use crate::state::AppState;
use crate::toolkit::journal::{snapshot, snapshot_params, CredentialInfo, Entry};
use crate::value::Array;

tokio::task_local! {
    /// The journal id of the batch call whose commands are running.
    static BATCH: u64;
}

/// The credential as presented, for the journal of a call whose authentication failed: its
/// kind and, for a webhook, the user id the path names. Never the code or token.
pub fn presented(cred: &Credential) -> CredentialInfo {
    match cred {
        Credential::Token(_) => CredentialInfo {
            kind: "oauth",
            ..CredentialInfo::default()
        },
        Credential::Webhook { login, .. } => CredentialInfo {
            kind: "webhook",
            user_id: login.parse().ok(),
            ..CredentialInfo::default()
        },
        Credential::Session { .. } => CredentialInfo {
            kind: "session",
            ..CredentialInfo::default()
        },
        Credential::None => CredentialInfo {
            kind: "none",
            ..CredentialInfo::default()
        },
    }
}

fn caller_info(caller: &Caller) -> CredentialInfo {
    let (kind, webhook_id, client_id) = match &caller.kind {
        CallerKind::Webhook { webhook_id } => ("webhook", Some(*webhook_id), None),
        CallerKind::App { client_id, .. } => ("oauth", None, Some(client_id.clone())),
        CallerKind::Session { .. } => ("session", None, None),
    };
    CredentialInfo {
        kind,
        user_id: Some(caller.user_id),
        webhook_id,
        client_id,
    }
}

fn client_id(caller: &Caller) -> Option<&str> {
    match &caller.kind {
        CallerKind::App { client_id, .. } => Some(client_id),
        _ => None,
    }
}

/// A direct REST call, after authentication (`authenticated`) and the rate limit: faults, then
/// `dispatch::execute`, then the journal. `started` is when the request arrived. The second
/// value says whether an injected fault answered (its error is no server failure).
pub async fn direct(
    state: &AppState,
    spec: &MethodSpec,
    transport: Transport,
    presented: CredentialInfo,
    authenticated: Result<Caller, ApiError>,
    params: Array,
    started: Instant,
) -> (Result<Executed, ApiError>, bool) {
    let journal = &state.toolkit.journal;
    let recording = journal.enabled().then(|| Recording::begin(state, &params));
    let authenticated_call = authenticated.is_ok();
    let (credential, outcome, fault_id) = match authenticated {
        Err(e) => (presented, Err(e), None),
        Ok(caller) => {
            // A batch's commands are recorded under the batch's id.
            let batch = recording
                .as_ref()
                .filter(|_| spec.name == "batch")
                .map(|r| r.id);
            let (outcome, fault) = guarded(state, spec, &caller, params, batch).await;
            (caller_info(&caller), outcome, fault)
        }
    };
    if let Some(r) = recording {
        let transport = match transport {
            Transport::Json => "json",
            Transport::Xml => "xml",
        };
        let entry = r.finish(
            state, spec, transport, credential, &outcome, fault_id, None, started,
        );
        if authenticated_call {
            journal.push(entry);
        } else {
            journal.push_failed_auth(entry);
        }
    }
    let faulted = fault_id.is_some() && outcome.is_err();
    (outcome, faulted)
}

/// One command of a batch, with the batch's caller: faults, `dispatch::execute`, the journal.
pub async fn command(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
    params: Array,
) -> Result<Executed, ApiError> {
    let (call, fault) = command_begin(state, spec, caller, &params).await;
    let outcome = match fault {
        Some(e) => Err(e),
        None => dispatch::execute(state, spec, caller, params).await,
    };
    call.end(state, spec, caller, &outcome);
    outcome
}

/// A batch command between [`command_begin`] and [`CommandCall::end`]: what the journal needs
/// of its start.
pub struct CommandCall {
    started: Instant,
    recording: Option<Recording>,
    fault_id: Option<u64>,
}

/// The first half of [`command`], for a command whose call `methods::batch` runs in parts (a
/// run of adds sent to the store together): the journal's snapshot of the parameters, then the
/// fault table. `Some` is an injected fault's error, which answers the command in place of
/// the call.
pub async fn command_begin(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
    params: &Array,
) -> (CommandCall, Option<ApiError>) {
    let started = Instant::now();
    let journal = &state.toolkit.journal;
    let recording = journal.enabled().then(|| Recording::begin(state, params));
    let (fault, fault_id) = fault(state, spec, caller).await;
    let call = CommandCall {
        started,
        recording,
        fault_id,
    };
    (call, fault)
}

impl CommandCall {
    /// The second half of [`command`]: records the command's outcome in the journal.
    pub fn end(
        self,
        state: &AppState,
        spec: &MethodSpec,
        caller: &Caller,
        outcome: &Result<Executed, ApiError>,
    ) {
        if let Some(r) = self.recording {
            let batch_id = BATCH.try_with(|id| *id).ok();
            let entry = r.finish(
                state,
                spec,
                "batch",
                caller_info(caller),
                outcome,
                self.fault_id,
                batch_id,
                self.started,
            );
            state.toolkit.journal.push(entry);
        }
    }
}

/// The fault that answers this call, if any (after its delay), and the id of the fault that
/// matched (one may only delay).
async fn fault(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
) -> (Option<ApiError>, Option<u64>) {
    let Some(hit) = state
        .toolkit
        .faults
        .check(spec.name, Some(caller.user_id), client_id(caller))
    else {
        return (None, None);
    };
    if !hit.delay.is_zero() {
        tokio::time::sleep(hit.delay).await;
    }
    (hit.error, Some(hit.fault_id))
}

/// Runs the call unless a fault answers it; the fault's id, if one matched.
async fn guarded(
    state: &AppState,
    spec: &MethodSpec,
    caller: &Caller,
    params: Array,
    batch: Option<u64>,
) -> (Result<Executed, ApiError>, Option<u64>) {
    let (fault, fault_id) = fault(state, spec, caller).await;
    if let Some(e) = fault {
        return (Err(e), fault_id);
    }
    let run = dispatch::execute(state, spec, caller, params);
    let outcome = match batch {
        Some(id) => BATCH.scope(id, run).await,
        None => run.await,
    };
    (outcome, fault_id)
}

/// What is known of a call before it runs.
struct Recording {
    id: u64,
    at: f64,
    params: String,
    cut: bool,
}

impl Recording {
    fn begin(state: &AppState, params: &Array) -> Recording {
        let journal = &state.toolkit.journal;
        let (params, cut) = snapshot_params(params, journal.entry_bytes());
        Recording {
            id: journal.next_id(),
            at: state.clock.now(),
            params,
            cut,
        }
    }

    /// The entry for the journal; the caller picks the ring.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        state: &AppState,
        spec: &MethodSpec,
        transport: &'static str,
        credential: CredentialInfo,
        outcome: &Result<Executed, ApiError>,
        fault_id: Option<u64>,
        batch_id: Option<u64>,
        started: Instant,
    ) -> Entry {
        let journal = &state.toolkit.journal;
        let (status, error, result, cut) = match outcome {
            Ok(done) => {
                let (result, cut) = snapshot(&done.out.result, journal.entry_bytes());
                (200, None, Some(result), cut)
            }
            Err(e) => (e.status, Some(e.code), None, false),
        };
        Entry {
            id: self.id,
            at: self.at,
            method: spec.name.to_owned(),
            transport,
            credential,
            params: self.params,
            status,
            error,
            result,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            batch_id,
            fault_id,
            truncated: self.cut || cut,
        }
    }
}
