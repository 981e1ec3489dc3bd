//! Fault injection: calls that match a fault answer with an error of the catalogue (as the real
//! server would, status and envelope included) and/or late.
//!
//! The table is consulted on every REST call and batch command, so an empty table costs one
//! atomic load; only when faults exist is the lock taken.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, CATALOGUE};

/// The longest delay a fault may add: long enough for any client timeout test.
pub const MAX_DELAY_MS: u64 = 120_000;
/// Most faults at once; a test suite needs a handful.
pub const MAX_FAULTS: usize = 1000;
/// The longest `method` or `client_id` a fault may name, in bytes. Method names are a few
/// dozen bytes and client ids (`local.…`) shorter still; without a cap, [`MAX_FAULTS`] specs of
/// 64 KiB each held 128 MB, copied again by every listing and every admin page view.
pub const MAX_NAME_BYTES: usize = 255;

/// What `POST /admin/api/faults` takes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// A method name (case-insensitive), or `*` for every method.
    pub method: String,
    /// An error code of the catalogue (`QUERY_LIMIT_EXCEEDED`, `expired_token`, ...).
    #[serde(default)]
    pub error: Option<String>,
    /// Answer this many milliseconds late (before the error, or before the real answer).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// The fault ends after this many matches.
    #[serde(default)]
    pub times: Option<u64>,
    /// The chance, 0 to 1, that a matching call is faulted.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Seeds `probability`'s random numbers, for runs that repeat exactly.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Only calls acting as this user.
    #[serde(default)]
    pub user_id: Option<i64>,
    /// Only calls of this OAuth application.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// A fault as listed: its spec, id and how often it fired.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultView {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    pub hits: u64,
    /// Matches left before the fault ends; `null` without `times`.
    pub remaining: Option<u64>,
}

/// What a faulted call must do.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub fault_id: u64,
    pub delay: Duration,
    pub error: Option<ApiError>,
}

struct Fault {
    view: FaultView,
    method: String,
    error: Option<ApiError>,
    rng: StdRng,
}

#[derive(Default)]
pub struct Faults {
    /// How many faults exist: the fast path for the common case of none.
    count: AtomicUsize,
    next_id: AtomicU64,
    table: Mutex<Vec<Fault>>,
}

/// The catalogue entry of `code` (the first, where a code has several descriptions).
pub fn catalogued(code: &str) -> Option<ApiError> {
    CATALOGUE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(c, status, desc)| ApiError {
            code: c,
            description: (*desc).into(),
            status: *status,
        })
}

impl Faults {
    /// Whether any fault is in the table, spent ones included (one atomic load).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    /// Adds a fault; the message says what is wrong with the spec.
    pub fn add(&self, mut spec: FaultSpec) -> Result<FaultView, String> {
        spec.method = spec.method.trim().to_lowercase();
        if spec.method.is_empty() {
            return Err("method is required (a method name, or * for all)".into());
        }
        let error = match &spec.error {
            Some(code) => Some(
                catalogued(code)
                    .ok_or_else(|| format!("error {code:?} is not in the error catalogue"))?,
            ),
            None => None,
        };
        if spec.method.len() > MAX_NAME_BYTES
            || spec
                .client_id
                .as_ref()
                .is_some_and(|c| c.len() > MAX_NAME_BYTES)
        {
            return Err(format!(
                "method and client_id are at most {MAX_NAME_BYTES} bytes"
            ));
        }
        if error.is_none() && spec.delay_ms.is_none() {
            return Err("give error, delay_ms, or both".into());
        }
        if spec.delay_ms.is_some_and(|d| d > MAX_DELAY_MS) {
            return Err(format!("delay_ms is at most {MAX_DELAY_MS}"));
        }
        if spec.times == Some(0) {
            return Err("times must be at least 1".into());
        }
        if spec
            .probability
            .is_some_and(|p| !(p.is_finite() && (0.0..=1.0).contains(&p)))
        {
            return Err("probability is between 0 and 1".into());
        }
        let mut table = self.lock();
        if table.len() >= MAX_FAULTS {
            // Spent faults are kept for their hit counts, but not at the price of a new one.
            table.retain(|f| f.view.remaining != Some(0));
        }
        if table.len() >= MAX_FAULTS {
            return Err(format!("at most {MAX_FAULTS} faults"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let rng = match spec.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let view = FaultView {
            id,
            remaining: spec.times,
            spec: spec.clone(),
            hits: 0,
        };
        table.push(Fault {
            view: view.clone(),
            method: spec.method,
            error,
            rng,
        });
        self.count.store(table.len(), Ordering::Release);
        Ok(view)
    }

    /// The first fault that matches a call of `method` by `user_id` (and the app `client_id`),
    /// counted as a hit. `method` is the registered, lower-case name.
    pub fn check(
        &self,
        method: &str,
        user_id: Option<i64>,
        client_id: Option<&str>,
    ) -> Option<Hit> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut table = self.lock();
        for f in table.iter_mut() {
            let spec = &f.view.spec;
            if f.view.remaining == Some(0)
                || !(f.method == "*" || f.method == method)
                || spec.user_id.is_some_and(|u| Some(u) != user_id)
                || spec
                    .client_id
                    .as_deref()
                    .is_some_and(|c| Some(c) != client_id)
            {
                continue;
            }
            if let Some(p) = spec.probability {
                if f.rng.random::<f64>() >= p {
                    continue;
                }
            }
            f.view.hits += 1;
            if let Some(r) = &mut f.view.remaining {
                *r -= 1;
            }
            return Some(Hit {
                fault_id: f.view.id,
                delay: Duration::from_millis(spec.delay_ms.unwrap_or(0)),
                error: f.error.clone(),
            });
        }
        None
    }

    /// Every fault, spent ones included, oldest first.
    pub fn list(&self) -> Vec<FaultView> {
        self.lock().iter().map(|f| f.view.clone()).collect()
    }

    /// Removes one fault; `false` when there is none with that id.
    pub fn remove(&self, id: u64) -> bool {
        let mut table = self.lock();
        let before = table.len();
        table.retain(|f| f.view.id != id);
        self.count.store(table.len(), Ordering::Release);
        table.len() != before
    }

    /// Removes every fault. Ids keep counting.
    pub fn clear(&self) {
        let mut table = self.lock();
        table.clear();
        self.count.store(0, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Fault>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str) -> FaultSpec {
        FaultSpec {
            method: method.into(),
            error: Some("QUERY_LIMIT_EXCEEDED".into()),
            delay_ms: None,
            times: None,
            probability: None,
            seed: None,
            user_id: None,
            client_id: None,
        }
    }

    #[test]
    fn times_ends_a_fault_and_filters_apply() {
        let f = Faults::default();
        assert!(f.check("x", None, None).is_none());
        let mut s = spec("IM.Notify.System.Add");
        s.times = Some(2);
        s.user_id = Some(5);
        let v = f.add(s).unwrap();
        assert!(f.check("im.notify.system.add", Some(4), None).is_none());
        let hit = f.check("im.notify.system.add", Some(5), None).unwrap();
        assert_eq!(hit.fault_id, v.id);
        assert_eq!(hit.error.unwrap().status, 503);
        assert!(f.check("im.notify.system.add", Some(5), None).is_some());
        assert!(f.check("im.notify.system.add", Some(5), None).is_none());
        assert_eq!(f.list()[0].hits, 2);
        assert!(f.remove(v.id));
        assert!(!f.remove(v.id));
    }

    #[test]
    fn a_seed_repeats_the_same_choices() {
        let run = || {
            let f = Faults::default();
            let mut s = spec("*");
            s.probability = Some(0.5);
            s.seed = Some(42);
            f.add(s).unwrap();
            (0..64)
                .map(|_| f.check("a", None, None).is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.contains(&true) && a.contains(&false));
    }

    #[test]
    fn bad_specs_are_refused() {
        let f = Faults::default();
        let mut s = spec("a");
        s.error = Some("NO_SUCH_CODE".into());
        assert!(f.add(s).is_err());
        let mut s = spec("a");
        s.error = None;
        assert!(f.add(s).is_err());
        let mut s = spec("a");
        s.probability = Some(1.5);
        assert!(f.add(s).is_err());
        assert_eq!(catalogued("expired_token").unwrap().status, 401);
        let mut s = spec(&"m".repeat(MAX_NAME_BYTES + 1));
        assert!(f.add(s.clone()).is_err());
        s.method = "m".repeat(MAX_NAME_BYTES);
        assert!(f.add(s.clone()).is_ok());
        s.client_id = Some("c".repeat(MAX_NAME_BYTES + 1));
        assert!(f.add(s).is_err());
    }
}
