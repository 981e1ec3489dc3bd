//! `batch` (§6.3, P10): runs each command through the same dispatcher as a direct call, with the
//! outer call's caller. The rate limit saw the batch once, as one HTTP request; the operating
//! limit charges each command, and not the wrapper.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::protocol::batch::{self, Command, Results};
use crate::protocol::dispatch::{self, Executed, MethodSpec};
use crate::protocol::envelope::Output;
use crate::protocol::hook;
use crate::protocol::params::{self, DecodeLimits};
use crate::state::AppState;
use crate::store::{SharedCommit, SHARED_COMMIT};
use crate::value::Array;

/// The commands whose writes may share commits inside a batch (they store a notification and
/// nothing else). Any other command first waits until the batch's earlier writes are durable,
/// so it sees them as a direct call after them would.
const SHARES_COMMIT: [&str; 3] = [
    "im.notify.system.add",
    "im.notify.personal.add",
    "im.notify",
];

pub fn methods() -> Vec<MethodSpec> {
    vec![MethodSpec {
        name: "batch",
        scope: None,
        operating_limited: false,
        handler: run,
    }]
}

fn run<'a>(
    state: &'a AppState,
    caller: &'a Caller,
    params: Array,
) -> BoxFuture<'a, Result<Output, ApiError>> {
    run_batch(state, caller, params).boxed()
}

async fn run_batch(state: &AppState, caller: &Caller, params: Array) -> Result<Output, ApiError> {
    let request = batch::parse(&params);
    let limits = DecodeLimits::from_config(&state.config.limits);
    let mut results = Results::default();
    // What the batch may still produce: each command's result, and each reference to one, is
    // charged here as it arises, and the batch stops once it is spent (issue 10).
    let mut budget = state.config.limits.batch_max_answer_bytes;
    // Adds answered before their commit (goal 4 of issue 15); settled before any other command
    // and before the batch answers.
    let shared = Arc::new(SharedCommit::default());
    let mut unsettled = false;
    for (key, command) in request.commands {
        let outcome = match command {
            Command::TooMany => Err(ApiError::batch_length_exceeded()),
            Command::Call { method, query } => {
                let defer = SHARES_COMMIT.contains(&method.to_lowercase().as_str());
                if unsettled && !defer {
                    settle(state, &shared).await?;
                    unsettled = false;
                }
                let command = run_command(
                    state,
                    caller,
                    &method,
                    &query,
                    &results,
                    &limits,
                    &mut budget,
                );
                if defer {
                    unsettled = true;
                    SHARED_COMMIT.scope(shared.clone(), command).await?
                } else {
                    command.await?
                }
            }
        };
        match outcome {
            Ok(done) => {
                let size = done.out.result.approx_json_len(budget);
                budget = budget
                    .checked_sub(size)
                    .ok_or_else(ApiError::batch_answer_too_large)?;
                results.success(key, done)
            }
            Err(e) => {
                results.failure(key, &e);
                if request.halt {
                    break;
                }
            }
        }
    }
    if unsettled {
        settle(state, &shared).await?;
    }
    Ok(results.into_value().into())
}

/// Waits until the batch's deferred writes are durable; INTERNAL_SERVER_ERROR for the whole
/// batch when their commit failed, since ids already in `results` would then be lost.
async fn settle(state: &AppState, shared: &SharedCommit) -> Result<(), ApiError> {
    if let Err(e) = state.store.commit_barrier().await {
        tracing::error!(error = %e, "waiting for a batch's writes failed");
        return Err(ApiError::internal());
    }
    if shared.failed() {
        tracing::error!("the commit of a batch's writes failed");
        return Err(ApiError::internal());
    }
    Ok(())
}

async fn run_command(
    state: &AppState,
    caller: &Caller,
    method: &str,
    query: &str,
    results: &Results,
    limits: &DecodeLimits,
    budget: &mut usize,
) -> Result<Result<Executed, ApiError>, ApiError> {
    let (spec, command_params) = match prepare(state, method, query, results, limits, budget) {
        None => return Err(ApiError::batch_answer_too_large()),
        Some(Err(e)) => return Ok(Err(e)),
        Some(Ok(p)) => p,
    };
    Ok(hook::command(state, spec, caller, command_params)
        .await
        .map_err(|mut e| {
            // Inside a batch the scope error carries no description (§6.3).
            if e.code == "insufficient_scope" {
                e.description = "".into();
            }
            e
        }))
}

type Prepared<'a> = Result<(&'a dispatch::MethodSpec, Array), ApiError>;

/// The command's method and resolved parameters, or the command's own error; the outer `None`
/// means the references passed the batch's budget, which fails the whole batch.
fn prepare<'a>(
    state: &'a AppState,
    method: &str,
    query: &str,
    results: &Results,
    limits: &DecodeLimits,
    budget: &mut usize,
) -> Option<Prepared<'a>> {
    // Registered names are lower-case, so the real server's second try with the original
    // spelling could never find anything more here (§1.2).
    let name = method.to_lowercase();
    if batch::NOT_IN_BATCH.contains(&name.as_str()) {
        return Some(Err(ApiError::batch_method_not_allowed()));
    }
    let Some(spec) = state.methods.lookup(&name) else {
        return Some(Err(ApiError::method_not_found()));
    };
    // PHP tests the query for truth before parsing it, so "0" is no parameters at all.
    let parsed = if query == "0" {
        Array::new()
    } else {
        params::parse_str(query, limits)
    };
    let mut command_params = results.resolve_within(parsed, budget)?;
    // A command's own `start` pages it, as a direct call's does.
    dispatch::carry_start(&mut command_params);
    auth::strip_framework_keys(&mut command_params);
    Some(Ok((spec, command_params)))
}
