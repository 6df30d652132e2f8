//! A task whose type no handler of this worker takes ([`no_handler`]):
//! retried with backoff until a worker that has one comes, archived
//! `unknown_type` only at its sealed expiry.
//!
//! Producers are often deployed before the workers that handle a new task
//! type; archiving such a task at once would lose it. So the rule is:
//!
//! - the task is given back to run again after the delay its own backoff
//!   gives for this attempt, but at least [`MIN_DELAY_MS`] (a zero backoff
//!   must not make workers without the handler lease it in a loop);
//! - its retry budget (`max_retries`) does not bound this waiting: a task
//!   with `max_retries = 0` waits too. What bounds it is the task's **sealed
//!   expiry** (`not_after`, by default at least 7 days after its start):
//!   when the next attempt would fall after it, the task is archived with
//!   reason `unknown_type` (its sealed error says so) rather than left to
//!   be refused `expired`. A task without a sealed expiry (an envelope of
//!   format version 1) falls back to its retry budget;
//! - each such lease counts as an attempt (the broker counts every lease),
//!   so a task that waited long has fewer of its retries left once a
//!   handler runs it; it always runs at least once;
//! - each one is counted in `sealq_unhandled_type_total{queue, task_type}`,
//!   and logged at WARN once per task type per [`WARN_EVERY`] in this
//!   process (type, queue and id; never the payload).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::outcome::{archive, seal_or_drop};
use super::runtime::WorkerState;
use crate::metrics::record as metric;
use crate::model::record::TaskRecord;
use crate::model::state::ArchiveReason;
use crate::seal::envelope::Purpose;
use crate::store::broker::Outcome;

/// The shortest wait before a task with no handler is leased again, ms.
pub(crate) const MIN_DELAY_MS: u64 = 1_000;

/// How often one task type's "no handler" warning is logged, at most.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(60);

/// How many task types the warning limiter remembers; past it, it forgets
/// them all (a few extra warnings rather than unbounded memory).
const REMEMBERED_TYPES: usize = 1_024;

/// The outcome of a task this worker has no handler for, leased at `now`:
/// a retry after the backoff (at least [`MIN_DELAY_MS`]), or archived
/// `unknown_type` when that retry would fall after the task's sealed
/// expiry (see the module docs).
pub(crate) fn no_handler(state: &WorkerState, record: &TaskRecord, now: i64) -> Outcome {
    metric::unhandled_type(&record.queue, &record.kind);
    warn_once_per_interval(record);
    let delay = record
        .meta
        .backoff
        .next_delay_ms(record.attempts)
        .max(MIN_DELAY_MS);
    let at_ms = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    let past_horizon = match record.meta.not_after_ms {
        Some(expiry) => at_ms > expiry,
        None => record.attempts > record.meta.max_retries,
    };
    let message = format!(
        "no handler for task type `{}` on the workers that leased it ({} attempt(s))",
        record.kind, record.attempts
    );
    if past_horizon {
        return archive(state, record, ArchiveReason::UnknownType, &message);
    }
    state.stats.retried.fetch_add(1, Ordering::Relaxed);
    metric::retried(&record.queue, &record.kind);
    info!(
        retry_in_ms = delay,
        "no handler for this task type; will retry"
    );
    let error = seal_or_drop(state, record, Purpose::Error, message.as_bytes());
    Outcome::Retry { at_ms, error }
}

/// Log the first task of a type without a handler, then at most once per
/// [`WARN_EVERY`] per type.
fn warn_once_per_interval(record: &TaskRecord) {
    static LAST: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    let mut last = LAST
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if last
        .get(&record.kind)
        .is_some_and(|t| now.duration_since(*t) < WARN_EVERY)
    {
        return;
    }
    if last.len() >= REMEMBERED_TYPES {
        last.clear();
    }
    last.insert(record.kind.clone(), now);
    warn!(
        task_type = %record.kind,
        queue = %record.queue,
        id = %record.id,
        "no handler registered for this task type: retrying with backoff until a worker \
         that handles it runs, archived `unknown_type` at the task's expiry \
         (logged once a minute per type)"
    );
}
