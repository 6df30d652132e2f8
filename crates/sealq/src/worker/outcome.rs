//! How an attempt ends in an [`Outcome`]: [`outcome_of`] maps how the handler
//! ended; [`refuse`], [`archive`] and [`fail`] (retry or archive) record an
//! attempt that did not succeed, with counters, metrics and a log line;
//! [`seal_or_drop`] seals results and error messages.

use std::any::Any;
use std::sync::atomic::Ordering;

use tracing::{debug, warn};

use super::attempt_log;

use super::handler::{Failure, HandlerResult, TaskContext};
use super::runtime::WorkerState;
use crate::error::IntegrityError;
use crate::metrics::record as metric;
use crate::model::record::TaskRecord;
use crate::model::state::ArchiveReason;
use crate::seal::envelope::{Aad, Purpose};
use crate::seal::opener::{KeyNeeded, key_needed};
use crate::store::broker::Outcome;

/// How a handler call that ran to its end ended.
pub(crate) enum HandlerEnd {
    /// It returned.
    Returned(HandlerResult),
    /// It panicked, with this payload.
    Panicked(Box<dyn Any + Send>),
    /// It ran past `min(timeout, deadline - start)`.
    TimedOut,
}

/// A handler call that ran to its end, with what [`outcome_of`] needs.
pub(crate) struct Finished {
    pub(crate) end: HandlerEnd,
    /// The handler's context: its result slot and cancellation token.
    pub(crate) ctx: TaskContext,
    /// The time limit the call ran under, ms.
    pub(crate) limit_ms: u64,
}

/// Map how the handler ended to the outcome acked:
/// - success: `Complete` (the task is done), with the result it set, sealed;
/// - a [`TaskError`](super::TaskError): what its [`Failure`] asks for
///   ([`fail`]: a retry at now + backoff, or archived);
/// - a panic: an ordinary failure ([`fail`] with `Failure::Retry`): retried
///   with backoff, archived `exhausted` once the retries are used up;
/// - a timeout: the handler is cancelled; past the deadline the task is
///   archived `deadline_exceeded` (a retry would be later still), else an
///   ordinary failure like a panic.
pub(crate) fn outcome_of(state: &WorkerState, record: &TaskRecord, finished: Finished) -> Outcome {
    let Finished { end, ctx, limit_ms } = finished;
    match end {
        HandlerEnd::Returned(Ok(())) => {
            state.stats.succeeded.fetch_add(1, Ordering::Relaxed);
            metric::succeeded(&record.queue, &record.kind);
            debug!("completed");
            let result = ctx
                .take_result()
                .and_then(|bytes| seal_or_drop(state, record, Purpose::Result, &bytes));
            Outcome::Complete { result }
        }
        HandlerEnd::Returned(Err(e)) => fail(
            state,
            record,
            e.failure.clone(),
            "handler_error",
            e.message(),
        ),
        HandlerEnd::Panicked(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // Logged by `fail` with detail `panic`; the message is sealed.
            fail(
                state,
                record,
                Failure::Retry,
                "panic",
                &format!("handler panicked: {msg}"),
            )
        }
        HandlerEnd::TimedOut => {
            ctx.cancellation().cancel();
            if record
                .meta
                .deadline_ms
                .is_some_and(|d| state.clock.now_ms() >= d)
            {
                return archive(
                    state,
                    record,
                    ArchiveReason::DeadlineExceeded,
                    "deadline exceeded",
                );
            }
            fail(
                state,
                record,
                Failure::Retry,
                "timeout",
                &format!("timed out after {limit_ms} ms"),
            )
        }
    }
}

/// An envelope that must not reach a handler: archive, count, log (no
/// payload; the integrity error, which names a check and never the bytes,
/// as the line's `detail`).
pub(crate) fn refuse(
    state: &WorkerState,
    record: &TaskRecord,
    error: IntegrityError,
    reason: ArchiveReason,
) -> Outcome {
    state
        .stats
        .integrity_failures
        .fetch_add(1, Ordering::Relaxed);
    let error = error.to_string();
    archive_with(state, record, reason, &error, Some(&error))
}

/// Archive the task for `reason`, with `message` sealed as its error: acked
/// as done, no attempt follows.
pub(crate) fn archive(
    state: &WorkerState,
    record: &TaskRecord,
    reason: ArchiveReason,
    message: &str,
) -> Outcome {
    archive_with(state, record, reason, message, None)
}

/// [`archive`], with a `detail` for the log line (never the handler's text).
fn archive_with(
    state: &WorkerState,
    record: &TaskRecord,
    reason: ArchiveReason,
    message: &str,
    detail: Option<&str>,
) -> Outcome {
    state.stats.archived.fetch_add(1, Ordering::Relaxed);
    metric::archived(&record.queue, &record.kind, reason.as_str());
    attempt_log::archived(record, &reason, detail);
    let error = seal_or_drop(state, record, Purpose::Error, message.as_bytes());
    Outcome::Archive { reason, error }
}

/// A failed attempt: retry it at now + the delay `failure` asks for (the
/// task's backoff by default), or archive it when `failure` says so or the
/// retries are used up. Audited as `failed`; `message` is sealed, and only
/// `cause` (`handler_error`, `panic`, `timeout` …) is logged.
pub(crate) fn fail(
    state: &WorkerState,
    record: &TaskRecord,
    failure: Failure,
    cause: &'static str,
    message: &str,
) -> Outcome {
    metric::failed(&record.queue, &record.kind);
    if let Some(a) = &state.config.audit {
        let len = crate::audit::hooks::sealed_len(&state.keyring, message);
        a.on_failed(&state.config.id, record, len);
    }
    let retry_in = match failure {
        Failure::Retry => Some(record.meta.backoff.next_delay_ms(record.attempts)),
        Failure::RetryIn(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Failure::SkipRetry => {
            return archive_with(
                state,
                record,
                ArchiveReason::SkipRetry,
                message,
                Some(cause),
            );
        }
        Failure::Cancel => {
            return archive_with(
                state,
                record,
                ArchiveReason::Cancelled,
                message,
                Some(cause),
            );
        }
        Failure::Archive(reason) => {
            return archive_with(state, record, reason, message, Some(cause));
        }
    };
    // `attempts` counts this attempt: with max_retries = 2 the task runs at most 3 times.
    if record.attempts > record.meta.max_retries {
        return archive_with(
            state,
            record,
            ArchiveReason::Exhausted,
            message,
            Some(cause),
        );
    }
    let delay = retry_in.unwrap_or(0);
    state.stats.retried.fetch_add(1, Ordering::Relaxed);
    metric::retried(&record.queue, &record.kind);
    attempt_log::retrying(record, cause, delay);
    let at_ms = state
        .clock
        .now_ms()
        .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    let error = seal_or_drop(state, record, Purpose::Error, message.as_bytes());
    Outcome::Retry { at_ms, error }
}

/// Seal a result or error for storage. Sealing only fails on a broken
/// keyring; the task's outcome must still be recorded, so the bytes are
/// dropped (never stored in the clear) and the failure logged.
pub(crate) fn seal_or_drop(
    state: &WorkerState,
    record: &TaskRecord,
    purpose: Purpose,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let aad = Aad::for_record(record, purpose);
    // Results and errors of a subject's task are sealed with its data key,
    // so erasure shreds them too. No key (erased meanwhile): drop them.
    let no_store = || crate::error::Error::Keyring("no subject key store".into());
    let sealed = match key_needed(&record.envelope, record.meta.subject_tag.as_ref()) {
        Ok(KeyNeeded::Keyring) => state.keyring.seal(&aad, bytes),
        Ok(KeyNeeded::Subject(tag)) => match &state.subject_keys {
            Some(keys) => match keys.cached_any_age(&tag) {
                Some(key) => key.seal(&aad, bytes),
                None => Err(crate::error::Error::Keyring(
                    "the subject's data key is gone".into(),
                )),
            },
            None => Err(no_store()),
        },
        Err(_) => Err(no_store()),
    };
    match sealed {
        Ok(sealed) => Some(sealed),
        Err(e) => {
            warn!(error = %e, ?purpose, "could not seal; dropping it rather than storing plaintext");
            None
        }
    }
}
