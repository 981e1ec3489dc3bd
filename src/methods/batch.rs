//! `batch` (§6.3, P10): runs each command through the same dispatcher as a direct call, with the
//! outer call's caller. The rate limit saw the batch once, as one HTTP request; the operating
//! limit charges each command, and not the wrapper.
//!
//! A run of add commands that refer to no earlier result is checked command by command and
//! then stored with one store call (issue 15, goal 4); see `Batch::check`. With the
//! operating-time limit on, a command joins the run only while the run's pending charges cannot
//! make the limit refuse it; see `Batch::admit_ahead`.

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
    // The operating-time limit is kept by `Batch::admit_ahead`.
    let ahead = !request.halt || !state.toolkit.faults.any();
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
                match b.check(spec, key, finish(parsed), kind).await? {
                    None => break,
                    Some(failed) if failed && request.halt => break,
                    Some(_) => continue,
                }
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
    /// Seconds of the store call that the commands of the run before this one, on its
    /// operating-time account, may still be charged without the limit refusing this one
    /// (see [`Batch::admit_ahead`]); infinite when it is not charged.
    room: f64,
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
    /// [`Batch::flush`]. `Some(true)` when the command failed; `None` when `halt` stopped the
    /// batch at a command of the run that had to be finished first.
    async fn check(
        &mut self,
        spec: &'a MethodSpec,
        key: Key,
        params: Array,
        kind: Kind,
    ) -> Result<Option<bool>, ApiError> {
        let (state, caller) = (self.state, self.caller);
        let (call, fault) = hook::command_begin(state, spec, caller, &params).await;
        let mut room = f64::INFINITY;
        let step = match fault {
            Some(e) => Step::Refused(e),
            None => match self.admit_ahead(spec).await? {
                None => return Ok(None),
                Some(Err(e)) => Step::Refused(e),
                Some(Ok((admitted, r))) => match notify::check(state, caller, &params, kind) {
                    Ok(draft) => {
                        room = r;
                        self.drafts.push(draft);
                        Step::Write {
                            admitted,
                            checked: state.clock.now(),
                        }
                    }
                    Err(error) => {
                        room = r;
                        Step::Invalid {
                            admitted,
                            finished: state.clock.now(),
                            error,
                        }
                    }
                },
            },
        };
        let failed = !matches!(step, Step::Write { .. });
        self.run.push(Pending {
            key,
            spec,
            call,
            step,
            room,
        });
        Ok(Some(failed))
    }

    /// `dispatch::admit` for a command of the run, with the operating-time limit (P9, §6.2)
    /// answered exactly as the one-by-one loop would answer it.
    ///
    /// One by one, a command is refused when its account's live handler seconds are strictly
    /// above the limit, and those include the charge of every earlier command of the batch on
    /// the same account (the call that crosses the limit completes, the next one is refused).
    /// In a run, the earlier commands are charged only when the run is finished
    /// ([`Batch::flush`]), so `admit` sees the account without them. A command is therefore
    /// admitted ahead only when those pending charges cannot reach the limit:
    ///
    /// - each earlier pending command of the account is charged its own checks (known now)
    ///   plus a share of the store call (not known until it is made);
    /// - so this command joins the run only when `used + checks + MARGIN <= limit`, where
    ///   `used` is what `admit` saw, `checks` the earlier pending commands' own check times,
    ///   and `MARGIN` covers the rounding of Unix-second floats in the charged intervals;
    ///   otherwise the run is finished first and the command admitted again, against the
    ///   account with every earlier charge in it, as the one-by-one loop admits it;
    /// - what is left, `limit - used - checks - MARGIN`, is the command's `room`: the store
    ///   seconds the earlier commands may be charged before it. [`store_shares`] gives each
    ///   write an equal share of the store call only when every command's room holds, and
    ///   otherwise charges the account's whole part of it to the account's last command of the
    ///   run, whose charge no admission in the run depended on. The run is never charged less
    ///   than it took; only the order of its charges inside the run moves.
    ///
    /// So every admission, every refusal, and every `operating` and `operating_reset_at` (the
    /// account's buckets after each command's charge, in the commands' order) is what the
    /// one-by-one loop gives when its commands take the times the run charges them. Charges
    /// at or under `min_counted_seconds` are not recorded at all, which only leaves more room.
    /// A command refused by the limit here is refused one by one too: later charges only add.
    /// (Concurrent calls of the same credential and method can land between a command's
    /// admission and the run's charges, as they can land inside a direct call's handler.)
    ///
    /// `Ok(None)`: `halt` stopped the batch while the run was finished.
    async fn admit_ahead(
        &mut self,
        spec: &'a MethodSpec,
    ) -> Result<Option<Result<(Admitted, f64), ApiError>>, ApiError> {
        let (state, caller) = (self.state, self.caller);
        let admitted = match dispatch::admit(state, spec, caller).await {
            Ok(a) => a,
            Err(e) => return Ok(Some(Err(e))),
        };
        let Some(limit) = state.limits.operating.as_ref().map(|o| o.limit()) else {
            return Ok(Some(Ok((admitted, f64::INFINITY))));
        };
        if !admitted.charged() {
            return Ok(Some(Ok((admitted, f64::INFINITY))));
        }
        let room = match self.pending_checks(spec.name) {
            None => (limit - admitted.used - CHARGE_MARGIN).max(0.0),
            Some(checks) => limit - admitted.used - checks - CHARGE_MARGIN,
        };
        if room >= 0.0 {
            return Ok(Some(Ok((admitted, room))));
        }
        if self.flush(false).await? {
            return Ok(None);
        }
        Ok(Some(dispatch::admit(state, spec, caller).await.map(|a| {
            let room = (limit - a.used - CHARGE_MARGIN).max(0.0);
            (a, room)
        })))
    }

    /// The own check times (seconds) of the run's commands charged to `method`'s account so
    /// far; `None` when the run has none.
    fn pending_checks(&self, method: &str) -> Option<f64> {
        let mut checks = None;
        for p in self.run.iter().filter(|p| p.spec.name == method) {
            let took = match &p.step {
                Step::Invalid {
                    admitted, finished, ..
                } if admitted.charged() => finished - admitted.started,
                Step::Write { admitted, checked } if admitted.charged() => {
                    checked - admitted.started
                }
                _ => continue,
            };
            *checks.get_or_insert(0.0) += took.max(0.0);
        }
        checks
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
        let mut took = 0.0;
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
            took = (state.clock.now() - sent).max(0.0);
        }
        let run = std::mem::take(&mut self.run);
        let slots: Vec<Slot> = run.iter().map(Pending::slot).collect();
        let shares = store_shares(&slots, took);
        let mut offset = 0.0;
        for (p, share) in run.into_iter().zip(shares) {
            let outcome = match p.step {
                Step::Refused(e) => Err(e),
                Step::Invalid {
                    admitted,
                    finished,
                    error,
                } => {
                    let started = admitted.started + offset;
                    offset += share;
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

/// Seconds kept free under the operating limit for the rounding of the charged intervals: each
/// is a difference of Unix-second floats (about 2.4e-7 s apart in 2026), and a batch has at
/// most 50 commands.
const CHARGE_MARGIN: f64 = 1e-4;

impl Pending<'_> {
    fn slot(&self) -> Slot {
        let (account, write) = match &self.step {
            Step::Refused(_) => (None, false),
            Step::Invalid { admitted, .. } => (admitted.charged().then_some(self.spec.name), false),
            Step::Write { admitted, .. } => (admitted.charged().then_some(self.spec.name), true),
        };
        Slot {
            account,
            write,
            room: self.room,
        }
    }
}

/// What [`store_shares`] needs of a command of the run.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The operating-time account (the method; the caller is the batch's) the command is
    /// charged to; `None` when it is not charged.
    account: Option<&'static str>,
    /// Its draft went to the store call.
    write: bool,
    /// See [`Pending::room`].
    room: f64,
}

/// The seconds of the run's store call (`took`) each command of the run is charged on top of
/// its own checks ([`Batch::admit_ahead`] gives the argument). Normally each write gets an
/// equal share. If on some account those shares would give the commands before one of its
/// commands more than that command's `room`, the account's whole part goes to its last
/// charged command of the run instead. The shares always add up to `took` when the run wrote.
fn store_shares(slots: &[Slot], took: f64) -> Vec<f64> {
    let writes = slots.iter().filter(|s| s.write).count();
    if writes == 0 {
        return vec![0.0; slots.len()];
    }
    let each = took / writes as f64;
    let mut shares: Vec<f64> = slots
        .iter()
        .map(|s| if s.write { each } else { 0.0 })
        .collect();
    let mut done: Vec<&str> = Vec::new();
    for account in slots.iter().filter_map(|s| s.account) {
        if done.contains(&account) {
            continue;
        }
        done.push(account);
        let mine: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].account == Some(account))
            .collect();
        let mut before = 0.0;
        let fits = mine.iter().all(|&i| {
            let ok = before <= slots[i].room;
            before += shares[i];
            ok
        });
        if !fits {
            let part: f64 = mine.iter().map(|&i| std::mem::take(&mut shares[i])).sum();
            if let Some(&last) = mine.last() {
                shares[last] = part;
            }
        }
    }
    shares
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(account: Option<&'static str>, write: bool, room: f64) -> Slot {
        Slot {
            account,
            write,
            room,
        }
    }

    #[test]
    fn writes_share_the_store_call_equally_while_every_room_holds() {
        let slots = [
            slot(Some("a"), true, 0.0),
            slot(Some("a"), false, 1.0),
            slot(None, false, f64::INFINITY),
            slot(Some("b"), true, 0.0),
            slot(Some("a"), true, 1.0),
        ];
        assert_eq!(store_shares(&slots, 0.9), [0.3, 0.0, 0.0, 0.3, 0.3]);
        assert_eq!(store_shares(&slots[1..3], 0.9), [0.0, 0.0], "no write");
    }

    #[test]
    fn an_account_whose_room_is_short_is_charged_at_its_last_command() {
        // Four writes of 0.75 s each: account a would be charged 1.5 s before its third
        // command, which has room for 0.5 s.
        let slots = [
            slot(Some("a"), true, 0.0),
            slot(Some("b"), true, 0.0),
            slot(Some("a"), true, 5.0),
            slot(Some("a"), false, 0.5),
            slot(Some("b"), true, 5.0),
        ];
        let shares = store_shares(&slots, 3.0);
        assert_eq!(shares, [0.0, 0.75, 0.0, 1.5, 0.75]);
        assert_eq!(
            shares.iter().sum::<f64>(),
            3.0,
            "the run is charged in full"
        );
    }
}
