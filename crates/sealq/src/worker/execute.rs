//! One leased task, from its lease slot to its ack: [`process`] waits for a
//! run permit and queues the ack; [`execute`] takes the task through its
//! steps to an [`Outcome`].
//!
//! Every outcome is acknowledged, and says what the ack does:
//! `Complete` and `Archive` end the task (no attempt follows), `Retry`
//! schedules the next attempt (this one counts), `Requeue` gives the task
//! back unstarted or unfinished (this attempt does not count). The broker
//! refuses the ack of a lease already lost (the task may run elsewhere); an
//! ack that never arrives (the acker died or gave up) leaves the lease to
//! expire, and the broker recovers the task for another attempt
//! (at-least-once).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::handler::{ErasedHandler, Failure, RawPayload, TaskContext};
use super::handler_span::handler_span;
use super::outcome::{Finished, HandlerEnd, archive, fail, outcome_of, refuse};
use super::panic_hook::QuietPanics;
use super::runtime::{RunState, WorkerState};
use crate::blob::ClaimAction;
use crate::error::IntegrityError;
use crate::metrics::record as metric;
use crate::model::record::TaskRecord;
use crate::model::state::ArchiveReason;
use crate::model::trace_parent::TraceParent;
use crate::seal::data_key::DataKey;
use crate::seal::envelope::{Aad, Purpose};
use crate::seal::opener::SealingKey;
use crate::store::broker::{Ack, LeasedTask, Outcome};
use crate::subject_keys::{RecordKey, RecordKeyError, record_key};

/// What one step of [`execute`] returns: `Err` carries the outcome that
/// ends the attempt there (refused, archived, retried or given back), and
/// no later step runs.
type Step<T> = Result<T, Outcome>;

/// The life of one leased task: wait for one of `concurrency` run permits,
/// [`execute`], then release its lease slot and queue its ack.
pub(crate) async fn process(
    state: Arc<WorkerState>,
    run: Arc<RunState>,
    task: LeasedTask,
    slot: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let record = &task.record;
    let span = info_span!(
        "sealq.task",
        id = %record.id,
        kind = %record.kind,
        queue = %record.queue,
        attempt = record.attempts,
        trace_parent = tracing::field::Empty
    );
    let outcome = async {
        tokio::select! {
            biased;
            permit = run.run_permits.clone().acquire_owned() => {
                let _permit = permit;
                // Boxed once it may run: a task waiting for its permit
                // (prefetched) then holds a small future, not the space
                // every later step needs.
                Box::pin(execute(&state, &run, &task, cancel)).await
            }
            // Shut down before it started: give it back, this attempt does not count.
            _ = run.stop_fetching.cancelled() => Outcome::Requeue,
        }
    }
    .instrument(span)
    .await;
    // A success is audited with its acknowledgement batch (ack_loop).
    if let Some(a) = &state.config.audit
        && !matches!(outcome, Outcome::Complete { .. })
    {
        a.on_outcome(&state.config.id, record, &outcome);
    }
    if matches!(outcome, Outcome::Requeue) {
        state.stats.requeued.fetch_add(1, Ordering::Relaxed);
        metric::requeued(&record.queue, &record.kind);
    }
    state.held_leases().remove(&record.id);
    // The acker owns the receiving end until every sender is gone, so this
    // only fails if the acker died; the lease then expires and the task is
    // recovered for another attempt (at-least-once).
    let _ = run.ack_queue.send((
        Ack {
            lease: task.lease,
            outcome,
        },
        record.attempts,
    ));
    drop(slot);
}

/// Run one leased task to an outcome. Never panics on task data.
///
/// The steps, in order; each can end the attempt with its own outcome:
/// 1. [`refuse_replayed_or_expired`]: replays, expired tasks and impossible
///    attempt counters never run;
/// 2. [`open_envelope`]: with the keyring or the subject's data key, then
///    the claim-check blob; what does not open never reaches a handler.
///    A version-2 envelope binds the whole [`crate::model::task::TaskMeta`]
///    (identity and policy), so from here on the record's policy fields are
///    the producer's sealed values: a broker that edited one made this step
///    refuse the task (archived `integrity`);
/// 3. [`hold_until_sealed_start`]: leased before the producer's sealed
///    earliest start: given back, to run at that time;
/// 4. [`archive_if_past_deadline`]: too late to start;
/// 5. [`find_handler`]: the type's handler or the `handle_any` fallback
///    (neither: retried until a worker with one comes);
/// 6. [`run_handler`]: under the sealed timeout and deadline, catching
///    panics, racing the hard shutdown;
/// 7. [`outcome_of`]: what the handler's result means for the task.
async fn execute(
    state: &WorkerState,
    run: &RunState,
    task: &LeasedTask,
    cancel: CancellationToken,
) -> Outcome {
    // One clock reading for every check before the handler starts.
    let now = state.clock.now_ms();
    match execute_steps(state, run, task, cancel, now).await {
        Ok(outcome) | Err(outcome) => outcome,
    }
}

/// [`execute`]'s steps, stopping at the first that ends the attempt.
async fn execute_steps(
    state: &WorkerState,
    run: &RunState,
    task: &LeasedTask,
    cancel: CancellationToken,
    now: i64,
) -> Step<Outcome> {
    let record = &task.record;
    refuse_replayed_or_expired(state, task, now)?;
    let (payload, trace) = open_envelope(state, record, now).await?;
    hold_until_sealed_start(record, now)?;
    archive_if_past_deadline(state, record, now)?;
    let handler = find_handler(state, record, now)?;
    let call = HandlerCall {
        payload,
        trace,
        cancel,
        now,
    };
    let finished = run_handler(state, run, record, handler, call).await?;
    Ok(outcome_of(state, record, finished))
}

/// Refuse a task the broker flagged as replayed (archived `replay`) or one
/// past its not-after time (archived `expired`). Acked as archived, never
/// retried: running it again could only repeat the refusal, and running it
/// at all is what the flag and the expiry forbid.
///
/// The expiry is read before the envelope is opened (an expired payload is
/// never decrypted); in a version-2 envelope it is sealed, so a broker that
/// moved it later only makes the envelope fail to open, and one that moved
/// it earlier only gets the task refused, which it could do by deleting it.
///
/// Also refuses (archived `integrity`) a task whose attempt counter is
/// impossible: a leased task is in its attempt 1 or later, so `0` means the
/// broker's counter was set to zero or below (brokers clamp a negative
/// stored count to 0), and `u32::MAX` that it was set beyond any count a
/// broker can reach (they saturate to it). Run, such a task would retry
/// forever at "attempt 0" or skip its retries.
fn refuse_replayed_or_expired(state: &WorkerState, task: &LeasedTask, now: i64) -> Step<()> {
    let record = &task.record;
    if record.attempts == 0 || record.attempts == u32::MAX {
        warn!(
            attempts = record.attempts,
            "the broker's attempt counter is impossible for a leased task; refusing it"
        );
        return Err(refuse(
            state,
            record,
            IntegrityError::Tampered,
            ArchiveReason::Integrity,
        ));
    }
    if task.replayed {
        return Err(refuse(
            state,
            record,
            IntegrityError::Replay,
            ArchiveReason::Replay,
        ));
    }
    if record.meta.not_after_ms.is_some_and(|t| now > t) {
        return Err(refuse(
            state,
            record,
            IntegrityError::Expired,
            ArchiveReason::Expired,
        ));
    }
    Ok(())
}

/// Open the envelope, then fetch and open the claim-check blob if the
/// payload is a claim: the payload the handler sees, and the producer's
/// trace context when the envelope carries one (version 3; recorded on the
/// task's span as `trace_parent`).
async fn open_envelope(
    state: &WorkerState,
    record: &TaskRecord,
    now: i64,
) -> Step<(RawPayload, Option<TraceParent>)> {
    let (payload, data_key, trace) = open_sealed(state, record, now).await?;
    if let Some(t) = &trace {
        tracing::Span::current().record("trace_parent", t.as_str());
    }
    let payload = open_claim(state, record, payload, data_key.as_deref()).await?;
    Ok((payload, trace))
}

/// What [`run_handler`] hands the handler and runs it under.
struct HandlerCall {
    payload: RawPayload,
    trace: Option<TraceParent>,
    cancel: CancellationToken,
    now: i64,
}

/// How long a task sealed with a key the keyring lacks is held before it is
/// leased again.
pub(crate) const HOLD_UNKNOWN_KEY_MS: i64 = 30_000;

/// Hold a task whose envelope names a keyring key this worker's keyring
/// lacks: it may well open with the right keyring, so it is neither run nor
/// archived (see [`open_sealed`]).
fn hold_for_unknown_key(
    state: &WorkerState,
    record: &TaskRecord,
    key_id: &str,
    now: i64,
) -> Outcome {
    metric::held(&record.queue, &record.kind, "unknown_key");
    warn!(
        task = %record.id,
        key_id,
        worker_keys = ?state.keyring.key_ids().collect::<Vec<_>>(),
        "task sealed with a key this keyring does not hold: held, not run; deploy the keyring that holds it"
    );
    Outcome::Retry {
        at_ms: now.saturating_add(HOLD_UNKNOWN_KEY_MS),
        error: None,
    }
}

/// Open the envelope with the keyring, or with the subject's data key when
/// the subject sealed it; returns that key too (it opens the blob of an
/// offloaded payload).
///
/// - Sealed with a keyring key this keyring does not hold: held, not
///   archived (a wrong or outdated keyring must not destroy the backlog):
///   acked as a retry in [`HOLD_UNKNOWN_KEY_MS`] with no error stored,
///   counted in `sealq_tasks_held_total{reason="unknown_key"}` and logged
///   at WARN with the task id and the key id. Each hold is an attempt.
/// - Fails to open otherwise (tampered, truncated, moved, relabelled, or
///   subject-sealed without a subject key store): refused, acked as
///   archived `integrity`; no retry can make it authentic.
/// - The subject's key was destroyed (the subject was erased): acked as
///   archived `erased`, never retried; the payload is gone for good.
/// - The subject's data key is wrapped under a KEK this keyring does not
///   hold (a retired KEK epoch: an outdated keyring, or a key store
///   restored from before `sealq erase --finalize`): held like a task
///   sealed with an unknown key, the payload never opened.
/// - The key store cannot be read: acked as a retry in 1 s with no error
///   stored, not through [`fail`] (no backoff, no `retried` count): the
///   key may well be readable next time.
async fn open_sealed(
    state: &WorkerState,
    record: &TaskRecord,
    now: i64,
) -> Step<(RawPayload, Option<Arc<DataKey>>, Option<TraceParent>)> {
    let aad = Aad::for_record(record, Purpose::Payload);
    let data_key = match record_key(state.subject_keys.as_deref(), record).await {
        Ok(RecordKey::Keyring) => None,
        Ok(RecordKey::Subject(key)) => Some(key),
        // The key was destroyed: the subject was erased. Never retried.
        Ok(RecordKey::Erased) => {
            return Err(archive(
                state,
                record,
                ArchiveReason::Erased,
                "subject erased",
            ));
        }
        Err(RecordKeyError::Integrity(e)) => {
            return Err(refuse(state, record, e, ArchiveReason::Integrity));
        }
        Err(RecordKeyError::UnknownKek(kek)) => {
            return Err(hold_for_unknown_key(state, record, &kek, now));
        }
        Err(RecordKeyError::Unavailable(e)) => {
            warn!(error = %e, "cannot get the subject's data key; retrying the task later");
            return Err(Outcome::Retry {
                at_ms: now.saturating_add(1_000),
                error: None,
            });
        }
    };
    let opened = match &data_key {
        Some(key) => key.open_traced(&aad, &record.envelope),
        None => state.keyring.open_traced(&aad, &record.envelope),
    };
    match opened {
        Ok((p, trace)) => Ok((RawPayload(p), data_key, trace)),
        Err(IntegrityError::UnknownKey(key_id)) if data_key.is_none() => {
            Err(hold_for_unknown_key(state, record, &key_id, now))
        }
        Err(e) => Err(refuse(state, record, e, ArchiveReason::Integrity)),
    }
}

/// Claim-check (`crate::blob`): replace a claim by its blob, opened with
/// the key that opened the envelope; any other payload passes unchanged.
/// What the blob's failure asks for decides the ack: a blob that does not
/// open is refused (archived `integrity`: no retry makes it authentic), a
/// missing one archived (`blob_missing`: it will not come back), a blob
/// store that fails or is not configured is a failed attempt ([`fail`]:
/// retried with backoff, since the store may recover).
async fn open_claim(
    state: &WorkerState,
    record: &TaskRecord,
    payload: RawPayload,
    data_key: Option<&DataKey>,
) -> Step<RawPayload> {
    let opener = match data_key {
        Some(key) => SealingKey::Subject(key),
        None => SealingKey::Keyring(&state.keyring),
    };
    match crate::blob::open_claimed(
        state.config.blobs.as_deref(),
        opener,
        record,
        payload.bytes(),
    )
    .await
    {
        Ok(None) => Ok(payload),
        Ok(Some(full)) => Ok(RawPayload(full)),
        Err(e) => Err(match e.action() {
            ClaimAction::Refuse(e) => refuse(state, record, e, ArchiveReason::Integrity),
            ClaimAction::Archive(reason, msg) => archive(state, record, reason, msg),
            ClaimAction::Retry(msg) => {
                fail(state, record, Failure::Retry, "blob_unavailable", &msg)
            }
        }),
    }
}

/// How far before its sealed earliest start a task may still start, ms:
/// tolerates clock skew between the producer, the broker and this worker,
/// so an honest broker leasing at the scheduled time is not refused.
pub(crate) const START_SKEW_MS: i64 = 1_000;

/// A task leased before the earliest start its producer sealed
/// ([`crate::model::task::TaskMeta::not_before_ms`], e.g. a 1 h delay that a
/// broker made due at once) is not run: it is given back unstarted, to run
/// at the sealed time, acked as a retry at that time with no error stored.
/// Not through [`fail`]: nothing failed, so no backoff and no `retried`
/// count. The broker counts the lease as an attempt, which can cost the task
/// one retry, but only when the broker misbehaved (an honest one never
/// leases a task before its run time); `Requeue` would make the task due at
/// once again, and the broker would hand it straight back.
fn hold_until_sealed_start(record: &TaskRecord, now: i64) -> Step<()> {
    match record.meta.not_before_ms {
        Some(start) if now.saturating_add(START_SKEW_MS) < start => {
            metric::held(&record.queue, &record.kind, "before_start");
            warn!(
                not_before_ms = start,
                early_by_ms = start.saturating_sub(now),
                "task leased before its sealed earliest start; given back to run then"
            );
            Err(Outcome::Retry {
                at_ms: start,
                error: None,
            })
        }
        _ => Ok(()),
    }
}

/// A task whose deadline passed before it could start is acked as archived
/// `deadline_exceeded`, not retried: every later attempt would be later
/// still.
fn archive_if_past_deadline(state: &WorkerState, record: &TaskRecord, now: i64) -> Step<()> {
    if record.meta.deadline_ms.is_some_and(|d| now >= d) {
        return Err(archive(
            state,
            record,
            ArchiveReason::DeadlineExceeded,
            "deadline passed before start",
        ));
    }
    Ok(())
}

/// The handler registered for the task's type, else the `handle_any`
/// fallback. Neither: retried with backoff, since a worker that has one
/// may come (producers deploy first), and archived `unknown_type` only at
/// the task's sealed expiry ([`super::unhandled`]).
fn find_handler(
    state: &WorkerState,
    record: &TaskRecord,
    now: i64,
) -> Step<Arc<dyn ErasedHandler>> {
    match state
        .handlers
        .get(&record.kind)
        .or(state.fallback.as_ref())
        .cloned()
    {
        Some(handler) => Ok(handler),
        None => Err(super::unhandled::no_handler(state, record, now)),
    }
}

/// Call the handler under `min(timeout, deadline - now)`, inside
/// `catch_unwind` (and [`QuietPanics`]), racing the hard shutdown. Records the start delay and
/// duration metrics and the audit's `started` event.
///
/// Hard shutdown first: the task is acked as given back (`Requeue`), its
/// attempt not counted, since it did not fail: the worker stopped it. The
/// handler's own token is a child of the hard-shutdown token, so a handler
/// that watches it returns at the same moment; that return is ignored.
async fn run_handler(
    state: &WorkerState,
    run: &RunState,
    record: &TaskRecord,
    handler: Arc<dyn ErasedHandler>,
    call: HandlerCall,
) -> Step<Finished> {
    let HandlerCall {
        payload,
        trace,
        cancel,
        now,
    } = call;
    let mut ctx = task_context(state, record, cancel.clone(), now);
    ctx.trace_parent = trace;
    let since = |t: i64| Duration::from_millis(u64::try_from(now - t).unwrap_or(0));
    let first_attempt = record.attempts == 1;
    metric::started(
        &record.queue,
        &record.kind,
        since(record.run_at_ms),
        first_attempt.then(|| since(record.meta.created_at_ms)),
    );

    let limit_ms = time_limit_ms(record, now);
    let limit = Duration::from_millis(limit_ms.min(365 * 24 * 3600 * 1000));
    if let Some(a) = &state.config.audit {
        a.on_started(&state.config.id, record);
    }
    // Polls marked as the handler's: with quiet handler panics, the panic
    // hook prints nothing of a panic raised in them (its message is sealed
    // as the task's error by `outcome_of`, never printed).
    let span = handler_span(record, ctx.trace_parent.as_ref());
    let call = AssertUnwindSafe(QuietPanics::new(
        handler.call(payload, ctx.clone()).instrument(span),
        state.config.quiet_handler_panics,
    ))
    .catch_unwind();
    let started = Instant::now();
    let result = tokio::select! {
        biased;
        _ = run.hard_shutdown.cancelled() => {
            cancel.cancel();
            info!("shutdown timeout reached while running; returning the task");
            return Err(Outcome::Requeue);
        }
        r = tokio::time::timeout(limit, call) => r,
    };
    metric::handler_duration(&record.queue, &record.kind, started.elapsed());
    let end = match result {
        Ok(Ok(returned)) => HandlerEnd::Returned(returned),
        Ok(Err(panic)) => HandlerEnd::Panicked(panic),
        Err(_elapsed) => HandlerEnd::TimedOut,
    };
    Ok(Finished { end, ctx, limit_ms })
}

/// How long the handler may run, ms: `min(timeout, deadline - now)`, no
/// limit (`u64::MAX`, capped at a year by the caller) without either.
fn time_limit_ms(record: &TaskRecord, now: i64) -> u64 {
    let mut limit_ms = record.meta.timeout_ms.unwrap_or(u64::MAX);
    if let Some(d) = record.meta.deadline_ms {
        limit_ms = limit_ms.min(u64::try_from(d - now).unwrap_or(0));
    }
    limit_ms
}

/// What the handler sees of its task.
fn task_context(
    state: &WorkerState,
    record: &TaskRecord,
    cancel: CancellationToken,
    now: i64,
) -> TaskContext {
    TaskContext {
        id: record.id,
        kind: Arc::from(record.kind.as_str()),
        queue: Arc::from(record.queue.as_str()),
        attempt: record.attempts,
        max_retries: record.meta.max_retries,
        created_at_ms: record.meta.created_at_ms,
        run_at_ms: record.run_at_ms,
        started_at_ms: now,
        deadline_ms: record.meta.deadline_ms,
        cancel,
        result: Arc::default(),
        resolvers: state.config.resolvers.clone(),
        trace_parent: None,
    }
}
