//! `batch` (§6.3, P10): runs each command through the same dispatcher as a direct call, with the
//! outer call's caller. The rate limit saw the batch once, as one HTTP request; the operating
//! limit charges each command, and not the wrapper.
//!
//! A run of add commands that refer to no earlier result is checked command by command and
//! then stored with one store call (issue 15, goal 4); see `Batch::check`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::notify;
use crate::auth::{self, Caller};
use crate::domain::notify::{Draft, Kind};
use crate::error::ApiError;
use crate::protocol::batch::{self, Command, Results};
use crate::protocol::dispatch::{self, Admitted, Executed, MethodSpec};
use crate::protocol::envelope::Output;
use crate::protocol::hook;
use crate::protocol::params::{self, DecodeLimits};
use crate::state::AppState;
use crate::store::{SharedCommit, StoreError, SHARED_COMMIT};
use crate::value::{Array, Key};

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
    let mut b = Batch {
        state,
        caller,
        halt: request.halt,
        results: Results::default(),
        budget: state.config.limits.batch_max_answer_bytes,
        shared: Arc::new(SharedCommit::default()),
        unsettled: false,
        run: Vec::new(),
        drafts: Vec::new(),
    };
    // An add may be checked before the writes of the adds ahead of it are done, unless a
    // failing write could stop the batch (`halt`) after a later command's check had used up a
    // counted injected fault (`toolkit::faults`): then each add waits for the one before.
    // Nor while the operating-time limit is on: a command's check must see the charge of the
    // command before it (the call that crosses the limit completes, the next is refused).
    let ahead = (!request.halt || !state.toolkit.faults.any()) && state.limits.operating.is_none();
    for (key, command) in request.commands {
        let Command::Call { method, query } = command else {
            if b.flush(false).await? {
                break;
            }
            if b.record(key, Err(ApiError::batch_length_exceeded()))? {
                break;
            }
            continue;
        };
        // Registered names are lower-case, so the real server's second try with the original
        // spelling could never find anything more here (§1.2).
        let spec = match lookup(state, &method.to_lowercase()) {
            Ok(spec) => spec,
            Err(e) => {
                if b.flush(false).await? || b.record(key, Err(e))? {
                    break;
                }
                continue;
            }
        };
        // PHP tests the query for truth before parsing it, so "0" is no parameters at all.
        let parsed = if query == "0" {
            Array::new()
        } else {
            params::parse_str(&query, &limits)
        };
        if ahead && !batch::refers(&parsed) {
            if let Some(kind) = notify::kind_of(spec.name, &parsed) {
                // A run is stored before its answers are charged to the budget, so it only
                // grows while every answer it could give still fits: otherwise adds would be
                // delivered under a batch that then fails whole (the one-by-one loop stops
                // storing at the first add whose answer does not fit).
                if (b.run.len() + 1).saturating_mul(ADD_ANSWER_BYTES) > b.budget
                    && b.flush(false).await?
                {
                    break;
                }
                let failed = b.check(spec, key, finish(parsed), kind).await;
                if failed && request.halt {
                    break;
                }
                continue;
            }
        }
        // Any other command waits for the run's writes: it may refer to their results, and
        // with `halt` one of them may have failed.
        if b.flush(notify::is_add(spec.name)).await? {
            break;
        }
        let outcome = b.call(spec, parsed).await?;
        if b.record(key, outcome)? {
            break;
        }
    }
    b.flush(false).await?;
    if b.unsettled {
        settle(state, &b.shared).await?;
    }
    Ok(b.results.into_value().into())
}

/// The most an add's answer charges the batch's budget: its id, an integer of at most 20
/// characters.
const ADD_ANSWER_BYTES: usize = 20;

/// One batch call in progress.
struct Batch<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    halt: bool,
    results: Results,
    /// What the batch may still produce: each command's result, and each reference to one, is
    /// charged here as it arises, and the batch stops once it is spent (issue 10).
    budget: usize,
    /// Adds answered before their commit (goal 4 of issue 15); settled before any other
    /// command and before the batch answers.
    shared: Arc<SharedCommit>,
    unsettled: bool,
    /// The run: add commands checked and not yet answered, in order, and the drafts of those
    /// that passed their checks.
    run: Vec<Pending<'a>>,
    drafts: Vec<(Draft, i64)>,
}

/// An add command of the run.
struct Pending<'a> {
    key: Key,
    spec: &'a MethodSpec,
    call: hook::CommandCall,
    step: Step,
}

enum Step {
    /// Answered before its handler (an injected fault, the scope, the operating limit), and so
    /// not charged.
    Refused(ApiError),
    /// Its handler's checks failed at `finished` (Unix seconds).
    Invalid {
        admitted: Admitted,
        finished: f64,
        error: ApiError,
    },
    /// Its draft is in the run's writes; `checked` is when its checks ended.
    Write { admitted: Admitted, checked: f64 },
}

impl<'a> Batch<'a> {
    /// An add command that refers to no earlier result: the steps of `hook::command` and
    /// `dispatch::execute` up to the handler's write (the journal's snapshot, faults, the scope,
    /// the operating limit, every check of the parameters), the write itself left for
    /// [`Batch::flush`]. `true` when the command failed.
    async fn check(&mut self, spec: &'a MethodSpec, key: Key, params: Array, kind: Kind) -> bool {
        let (state, caller) = (self.state, self.caller);
        let (call, fault) = hook::command_begin(state, spec, caller, &params).await;
        let step = match fault {
            Some(e) => Step::Refused(e),
            None => match dispatch::admit(state, spec, caller).await {
                Err(e) => Step::Refused(e),
                Ok(admitted) => match notify::check(state, caller, &params, kind) {
                    Ok(draft) => {
                        self.drafts.push(draft);
                        Step::Write {
                            admitted,
                            checked: state.clock.now(),
                        }
                    }
                    Err(error) => Step::Invalid {
                        admitted,
                        finished: state.clock.now(),
                        error,
                    },
                },
            },
        };
        let failed = !matches!(step, Step::Write { .. });
        self.run.push(Pending {
            key,
            spec,
            call,
            step,
        });
        failed
    }

    /// Stores the run's drafts with one store call (inside [`SHARED_COMMIT`]), then finishes
    /// each command of the run in order as `dispatch::execute` and `hook::command` would: the
    /// operating-time charge, the journal, the result maps. `Ok(true)` when `halt` stops the
    /// batch at one of them; the commands after it are dropped unanswered, as if never run.
    ///
    /// The run took its time once, so its commands are not each charged the whole interval:
    /// each gets its own checks plus an equal share of the store call, laid end to end from
    /// the first command's start, as if they had run one after another.
    ///
    /// `more`: the batch's next write follows at once (an add that refers to these results),
    /// so the store may keep its transaction open for it ([`SharedCommit::expect_more`]).
    async fn flush(&mut self, more: bool) -> Result<bool, ApiError> {
        if self.run.is_empty() {
            return Ok(false);
        }
        let state = self.state;
        let drafts = std::mem::take(&mut self.drafts);
        let writes = drafts.len();
        let mut stored = Vec::new().into_iter();
        let mut share = 0.0;
        if writes > 0 {
            let sent = state.clock.now();
            self.shared.expect_more(more);
            let store = state.store.add_notifications(drafts, self.halt);
            stored = SHARED_COMMIT
                .scope(self.shared.clone(), store)
                .await
                .into_iter();
            self.unsettled = true;
            crate::metrics::record_batch_run(writes);
            share = (state.clock.now() - sent).max(0.0) / writes as f64;
        }
        let mut offset = 0.0;
        for p in std::mem::take(&mut self.run) {
            let outcome = match p.step {
                Step::Refused(e) => Err(e),
                Step::Invalid {
                    admitted,
                    finished,
                    error,
                } => {
                    let started = admitted.started + offset;
                    let finished = finished + offset;
                    dispatch::conclude(state, p.spec, admitted, started, finished, Err(error)).await
                }
                Step::Write { admitted, checked } => {
                    // Only a store that stopped at an earlier failure answers fewer, and then
                    // `halt` ended the loop there.
                    let stored = stored.next().unwrap_or_else(|| {
                        Err(StoreError::Backend("the run's write was not made".into()))
                    });
                    let started = admitted.started + offset;
                    offset += share;
                    let finished = checked + offset;
                    let answer = notify::answer(stored);
                    dispatch::conclude(state, p.spec, admitted, started, finished, answer).await
                }
            };
            p.call.end(state, p.spec, self.caller, &outcome);
            if self.record(p.key, outcome)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A command outside a run: its references resolved, then `hook::command`. An add runs
    /// inside [`SHARED_COMMIT`]; any other command waits for the batch's writes to be durable
    /// first, so it sees them as a direct call after them would. `Err` fails the whole batch.
    async fn call(
        &mut self,
        spec: &MethodSpec,
        parsed: Array,
    ) -> Result<Result<Executed, ApiError>, ApiError> {
        let defer = notify::is_add(spec.name);
        if self.unsettled && !defer {
            settle(self.state, &self.shared).await?;
            self.unsettled = false;
        }
        let Some(resolved) = self.results.resolve_within(parsed, &mut self.budget) else {
            return Err(ApiError::batch_answer_too_large());
        };
        let params = finish(resolved);
        let command = hook::command(self.state, spec, self.caller, params);
        if defer {
            self.unsettled = true;
            Ok(SHARED_COMMIT.scope(self.shared.clone(), command).await)
        } else {
            Ok(command.await)
        }
    }

    /// Puts a command's outcome into the result maps. `Ok(true)` when `halt` stops the batch
    /// here; `Err` when the answer would pass the batch's budget, which fails the whole batch.
    fn record(&mut self, key: Key, outcome: Result<Executed, ApiError>) -> Result<bool, ApiError> {
        match outcome {
            Ok(done) => {
                let size = done.out.result.approx_json_len(self.budget);
                self.budget = self
                    .budget
                    .checked_sub(size)
                    .ok_or_else(ApiError::batch_answer_too_large)?;
                self.results.success(key, done);
                Ok(false)
            }
            Err(mut e) => {
                // Inside a batch the scope error carries no description (§6.3).
                if e.code == "insufficient_scope" {
                    e.description = "".into();
                }
                self.results.failure(key, &e);
                Ok(self.halt)
            }
        }
    }
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

/// The method a command names (lower-cased), or the command's own error.
fn lookup<'a>(state: &'a AppState, name: &str) -> Result<&'a MethodSpec, ApiError> {
    if batch::NOT_IN_BATCH.contains(&name) {
        return Err(ApiError::batch_method_not_allowed());
    }
    state
        .methods
        .lookup(name)
        .ok_or_else(ApiError::method_not_found)
}

/// A command's parameters as its handler gets them: its own `start` pages it, as a direct
/// call's does, and framework keys are gone.
fn finish(mut params: Array) -> Array {
    dispatch::carry_start(&mut params);
    auth::strip_framework_keys(&mut params);
    params
}
