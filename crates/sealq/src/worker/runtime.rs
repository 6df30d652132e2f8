//! The worker's loops: fetch, process, ack, heartbeat, maintenance.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::handler::{ErasedHandler, Failure, RawPayload, TaskContext};
use super::priority::fetch_order;
use super::{Config, WorkerReport, WorkerStats};
use crate::blob::ClaimAction;
use crate::error::{IntegrityError, Result};
use crate::model::audit_event::SucceededEntry;
use crate::model::clock::SharedClock;
use crate::model::record::TaskRecord;
use crate::model::state::ArchiveReason;
use crate::seal::data_key::is_subject_sealed;
use crate::seal::envelope::{Aad, Purpose};
use crate::seal::keyring::Keyring;
use crate::store::broker::{Ack, AckResult, Broker, DequeueRequest, Lease, LeasedTask, Outcome};
use crate::subject_keys::SubjectKeys;

/// State shared by all loops of one worker.
pub(crate) struct Shared {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) clock: SharedClock,
    pub(crate) handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    pub(crate) fallback: Option<Arc<dyn ErasedHandler>>,
    pub(crate) config: Config,
    pub(crate) stats: WorkerStats,
    /// Leases held by this worker (fetched, not yet acked), with the token
    /// that cancels the handler if the lease is lost.
    inflight: Mutex<HashMap<crate::model::id::TaskId, (Lease, CancellationToken)>>,
    queue_names: Vec<String>,
    /// Per-subject data keys, when the broker provides a key store.
    pub(crate) subject_keys: Option<Arc<SubjectKeys>>,
    /// With a rate limit on one of the queues: how long one token takes to
    /// come back (ms, 0 for none), so that a fetch the limit left empty
    /// waits that long rather than the whole maintenance interval.
    token_wait_ms: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        handlers: HashMap<String, Arc<dyn ErasedHandler>>,
        fallback: Option<Arc<dyn ErasedHandler>>,
        mut config: Config,
    ) -> Self {
        if config.prefetch == usize::MAX {
            config.prefetch_min = config.concurrency;
            config.prefetch_max = config
                .concurrency
                .saturating_mul(16)
                .min(PREFETCH_CAP)
                .max(config.concurrency);
        } else {
            config.prefetch_min = config.prefetch;
            config.prefetch_max = config.prefetch;
        }
        let queue_names = config.queues.iter().map(|(q, _)| q.clone()).collect();
        let subject_keys = broker
            .subject_key_store()
            .map(|store| Arc::new(SubjectKeys::new(store, &keyring)));
        Shared {
            subject_keys,
            token_wait_ms: std::sync::atomic::AtomicU64::new(0),
            broker,
            keyring,
            clock,
            handlers,
            fallback,
            config,
            stats: WorkerStats::default(),
            inflight: Mutex::new(HashMap::new()),
            queue_names,
        }
    }

    fn inflight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<crate::model::id::TaskId, (Lease, CancellationToken)>>
    {
        // The map holds plain values; a panic while holding the lock cannot
        // leave it logically inconsistent, so a poisoned lock is still usable.
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The per-run cancellation tokens and limits.
struct Run {
    /// Stop fetching; tasks not yet started are given back.
    stop: CancellationToken,
    /// Cancel running handlers and give their tasks back.
    hard: CancellationToken,
    /// Handlers running at once.
    running: Arc<Semaphore>,
    /// Finished attempts for the acker, with their attempt numbers (for
    /// the audit log's `succeeded_batch` records).
    acks: mpsc::UnboundedSender<(Ack, u32)>,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport> {
    let cfg = &shared.config;
    let total_slots = cfg.concurrency + cfg.prefetch_max;
    let slots = Arc::new(Semaphore::new(total_slots));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let background = CancellationToken::new();
    let run = Arc::new(Run {
        stop: CancellationToken::new(),
        hard: CancellationToken::new(),
        running: Arc::new(Semaphore::new(cfg.concurrency)),
        acks: ack_tx,
    });
    info!(
        worker = %cfg.id,
        broker = %shared.broker.describe(),
        queues = ?shared.queue_names,
        concurrency = cfg.concurrency,
        "worker started"
    );

    let acker = tokio::spawn(ack_loop(shared.clone(), ack_rx));
    let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), background.clone()));
    let maintenance = tokio::spawn(maintenance_loop(shared.clone(), background.clone()));
    let fetcher = tokio::spawn(fetch_loop(shared.clone(), run.clone(), slots.clone()));

    shutdown.await;
    info!(worker = %cfg.id, "shutting down: no new tasks; waiting for running handlers");
    run.stop.cancel();
    let _ = fetcher.await;

    // Every slot comes back once its task's ack is queued.
    let all = u32::try_from(total_slots).unwrap_or(u32::MAX);
    if tokio::time::timeout(cfg.shutdown_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            worker = %cfg.id,
            timeout_ms = cfg.shutdown_timeout.as_millis() as u64,
            "shutdown timeout: cancelling running handlers and returning their tasks"
        );
        run.hard.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), slots.acquire_many(all)).await;
    }
    // Dropping the last sender lets the acker drain and finish.
    drop(run);
    let _ = tokio::time::timeout(Duration::from_secs(30), acker).await;
    background.cancel();
    let _ = heartbeat.await;
    let _ = maintenance.await;
    let report = shared.stats.report();
    info!(worker = %cfg.id, ?report, "worker stopped");
    Ok(report)
}

/// The adaptive prefetch keeps about this much work leased ahead.
const PREFETCH_WINDOW: Duration = Duration::from_millis(100);
/// Upper bound of the adaptive prefetch.
const PREFETCH_CAP: usize = 4096;
/// How long fetching waits for a lagging audit log before it says so.
const AUDIT_STALL_WARNING: Duration = Duration::from_secs(5);
/// How often the fetch rate behind the adaptive prefetch is measured.
const RATE_EVERY: Duration = Duration::from_millis(250);

/// Slots held back from fetching so that the prefetch in use is what the
/// recent fetch rate calls for: `(concurrency + prefetch_max)` slots exist,
/// and the fetcher holds `prefetch_max - target` of them itself.
struct PrefetchReserve {
    slots: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    min: usize,
    max: usize,
    since: std::time::Instant,
    fetched_then: u64,
}

impl PrefetchReserve {
    fn new(slots: &Arc<Semaphore>, min: usize, max: usize, fetched: u64) -> Self {
        let held = u32::try_from(max - min)
            .ok()
            .filter(|&n| n > 0)
            .and_then(|n| slots.clone().try_acquire_many_owned(n).ok());
        PrefetchReserve {
            slots: slots.clone(),
            held,
            min,
            max,
            since: std::time::Instant::now(),
            fetched_then: fetched,
        }
    }

    fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Re-measure the fetch rate (at most every [`RATE_EVERY`]) and move
    /// slots in or out of the reserve towards `prefetch_max - target`.
    /// Never waits: slots in use join the reserve as they come back.
    fn adjust(&mut self, fetched: u64) {
        self.adjust_at(fetched, std::time::Instant::now());
    }

    fn adjust_at(&mut self, fetched: u64, now: std::time::Instant) {
        if self.min == self.max {
            return;
        }
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < RATE_EVERY {
            return;
        }
        let rate = fetched.saturating_sub(self.fetched_then) as f64 / elapsed.as_secs_f64();
        self.since = now;
        self.fetched_then = fetched;
        let target = ((rate * PREFETCH_WINDOW.as_secs_f64()) as usize).clamp(self.min, self.max);
        let want = self.max - target;
        let held = self.held();
        if held > want {
            if let Some(p) = self.held.as_mut() {
                // Splitting fewer permits than held always succeeds.
                drop(p.split(held - want));
            }
        } else if held < want {
            let free = self.slots.available_permits().min(want - held);
            if let Some(extra) = u32::try_from(free)
                .ok()
                .filter(|&n| n > 0)
                .and_then(|n| self.slots.clone().try_acquire_many_owned(n).ok())
            {
                match self.held.as_mut() {
                    Some(p) => p.merge(extra),
                    None => self.held = Some(extra),
                }
            }
        }
    }
}

/// Backoff for broker errors in loops: 50 ms doubling to 5 s.
fn error_backoff(failures: u32) -> Duration {
    Duration::from_millis((50u64 << failures.min(7)).min(5_000))
}

async fn fetch_loop(shared: Arc<Shared>, run: Arc<Run>, slots: Arc<Semaphore>) {
    let cfg = &shared.config;
    let mut failures = 0u32;
    let fetched = || shared.stats.fetched.load(Ordering::Relaxed);
    let mut reserve = PrefetchReserve::new(&slots, cfg.prefetch_min, cfg.prefetch_max, fetched());
    loop {
        reserve.adjust(fetched());
        // An audit log that cannot keep up slows fetching down rather than
        // holding ever more records in memory.
        if let Some(a) = &cfg.audit {
            let waited = tokio::select! {
                biased;
                _ = run.stop.cancelled() => return,
                r = tokio::time::timeout(AUDIT_STALL_WARNING, a.wait_for_room()) => r,
            };
            if waited.is_err() {
                warn!(
                    queued = a.queued(),
                    "the audit log has not caught up for 5 s (its sink is slow or failing); \
                     fetching waits for it"
                );
                tokio::select! {
                    biased;
                    _ = run.stop.cancelled() => return,
                    _ = a.wait_for_room() => {}
                }
            }
        }
        let mut permit: OwnedSemaphorePermit = tokio::select! {
            biased;
            _ = run.stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let more = slots.available_permits();
        if more > 0
            && let Ok(extra) = slots.clone().try_acquire_many_owned(more as u32)
        {
            permit.merge(extra);
        }
        let order = fetch_order(&cfg.queues, cfg.priority, rand::random::<f64>);
        let request = DequeueRequest {
            queues: order,
            max: permit.num_permits(),
            lease: cfg.lease,
            worker: cfg.id.clone(),
        };
        match shared.broker.dequeue(&request).await {
            Ok(tasks) if tasks.is_empty() => {
                failures = 0;
                drop(permit);
                // Nothing ready: sleep until the broker signals work (or the
                // maintenance interval passes, for scheduled tasks). Not a poll,
                // except under a rate limit: then no longer than a token takes.
                let wait = match shared.token_wait_ms.load(Ordering::Relaxed) {
                    0 => cfg.maintenance_interval,
                    ms => Duration::from_millis(ms).min(cfg.maintenance_interval),
                };
                tokio::select! {
                    _ = run.stop.cancelled() => return,
                    r = shared.broker.wait_for_work(&shared.queue_names, wait) => {
                        if let Err(e) = r {
                            warn!(error = %e, "waiting for work failed; retrying");
                            tokio::time::sleep(error_backoff(3)).await;
                        }
                    }
                }
            }
            Ok(tasks) => {
                failures = 0;
                shared
                    .stats
                    .fetched
                    .fetch_add(tasks.len() as u64, Ordering::Relaxed);
                if let Some(a) = &cfg.audit {
                    a.on_leased_batch(&cfg.id, &tasks);
                }
                for task in tasks {
                    // Invariant: the broker returns at most `max` tasks, and
                    // the permit holds `max`, so a split of 1 always succeeds.
                    let slot = match permit.split(1) {
                        Some(s) => s,
                        None => {
                            warn!(
                                "broker returned more tasks than requested; returning the excess"
                            );
                            let _ = run.acks.send((
                                Ack {
                                    lease: task.lease,
                                    outcome: Outcome::Requeue,
                                },
                                task.record.attempts,
                            ));
                            continue;
                        }
                    };
                    let cancel = run.hard.child_token();
                    shared
                        .inflight()
                        .insert(task.record.id, (task.lease, cancel.clone()));
                    tokio::spawn(process(shared.clone(), run.clone(), task, slot, cancel));
                }
            }
            Err(e) => {
                drop(permit);
                warn!(error = %e, "dequeue failed; retrying");
                failures += 1;
                tokio::select! {
                    _ = run.stop.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff(failures)) => {}
                }
            }
        }
    }
}

async fn process(
    shared: Arc<Shared>,
    run: Arc<Run>,
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
        attempt = record.attempts
    );
    let outcome = async {
        tokio::select! {
            biased;
            permit = run.running.clone().acquire_owned() => {
                let _permit = permit;
                execute(&shared, &run, &task, cancel).await
            }
            // Shut down before it started: give it back, this attempt does not count.
            _ = run.stop.cancelled() => Outcome::Requeue,
        }
    }
    .instrument(span)
    .await;
    // A success is audited with its acknowledgement batch (ack_loop).
    if let Some(a) = &shared.config.audit
        && !matches!(outcome, Outcome::Complete { .. })
    {
        a.on_outcome(&shared.config.id, record, &outcome);
    }
    if matches!(outcome, Outcome::Requeue) {
        shared.stats.requeued.fetch_add(1, Ordering::Relaxed);
    }
    shared.inflight().remove(&record.id);
    // The acker owns the receiving end until every sender is gone, so this
    // only fails if the acker died; the lease then expires and the task is
    // recovered for another attempt (at-least-once).
    let _ = run.acks.send((
        Ack {
            lease: task.lease,
            outcome,
        },
        record.attempts,
    ));
    drop(slot);
}

/// Run one leased task to an outcome. Never panics on task data.
async fn execute(
    shared: &Shared,
    run: &Run,
    task: &LeasedTask,
    cancel: CancellationToken,
) -> Outcome {
    let record = &task.record;
    let now = shared.clock.now_ms();

    // Refusals: nothing below reaches a handler.
    if task.replayed {
        return refuse(
            shared,
            record,
            IntegrityError::Replay,
            ArchiveReason::Replay,
        );
    }
    if record.meta.not_after_ms.is_some_and(|t| now > t) {
        return refuse(
            shared,
            record,
            IntegrityError::Expired,
            ArchiveReason::Expired,
        );
    }
    let aad = Aad::for_record(record, Purpose::Payload);
    // The subject's data key, when it sealed the envelope (it opens an
    // offloaded payload's blob too).
    let mut data_key = None;
    let opened = if is_subject_sealed(&record.envelope) {
        // Sealed with the subject's data key: fetch it (cached briefly).
        let (Some(tag), Some(keys)) = (&record.meta.subject_tag, &shared.subject_keys) else {
            let e = IntegrityError::UnknownKey(crate::seal::data_key::SUBJECT_KEY_ID.to_owned());
            return refuse(shared, record, e, ArchiveReason::Integrity);
        };
        match keys.for_open(tag).await {
            Ok(Some(key)) => {
                let opened = key.open(&aad, &record.envelope);
                data_key = Some(key);
                opened
            }
            // The key was destroyed: the subject was erased. Never retried.
            Ok(None) => {
                return archive(shared, record, ArchiveReason::Erased, "subject erased");
            }
            Err(e) => {
                warn!(error = %e, "cannot get the subject's data key; retrying the task later");
                return Outcome::Retry {
                    at_ms: now.saturating_add(1_000),
                    error: None,
                };
            }
        }
    } else {
        shared.keyring.open(&aad, &record.envelope)
    };
    let payload = match opened {
        Ok(p) => RawPayload(p),
        Err(e) => return refuse(shared, record, e, ArchiveReason::Integrity),
    };
    // Claim-check: an offloaded payload is fetched and opened here (crate::blob).
    let opener = match &data_key {
        Some(key) => crate::seal::opener::SealingKey::Subject(key),
        None => crate::seal::opener::SealingKey::Keyring(&shared.keyring),
    };
    let payload = match crate::blob::open_claimed(
        shared.config.blobs.as_deref(),
        opener,
        record,
        payload.bytes(),
    )
    .await
    {
        Ok(None) => payload,
        Ok(Some(full)) => RawPayload(full),
        Err(e) => {
            return match e.action() {
                ClaimAction::Refuse(e) => refuse(shared, record, e, ArchiveReason::Integrity),
                ClaimAction::Archive(reason, msg) => archive(shared, record, reason, msg),
                ClaimAction::Retry(msg) => fail(shared, record, Failure::Retry, &msg),
            };
        }
    };
    if record.meta.deadline_ms.is_some_and(|d| now >= d) {
        return archive(
            shared,
            record,
            ArchiveReason::DeadlineExceeded,
            "deadline passed before start",
        );
    }
    let Some(handler) = shared
        .handlers
        .get(&record.kind)
        .or(shared.fallback.as_ref())
        .cloned()
    else {
        warn!("no handler registered for this task type; archiving");
        return archive(
            shared,
            record,
            ArchiveReason::UnknownType,
            "no handler for this task type",
        );
    };

    let ctx = TaskContext {
        id: record.id,
        kind: Arc::from(record.kind.as_str()),
        queue: Arc::from(record.queue.as_str()),
        attempt: record.attempts,
        max_retries: record.meta.max_retries,
        created_at_ms: record.meta.created_at_ms,
        run_at_ms: record.run_at_ms,
        started_at_ms: now,
        deadline_ms: record.meta.deadline_ms,
        cancel: cancel.clone(),
        result: Arc::default(),
        resolvers: shared.config.resolvers.clone(),
    };
    let lateness_ms = (now - record.run_at_ms).max(0);
    metrics::histogram!("sealq_task_start_delay_seconds").record(lateness_ms as f64 / 1000.0);

    let mut limit_ms = record.meta.timeout_ms.unwrap_or(u64::MAX);
    if let Some(d) = record.meta.deadline_ms {
        limit_ms = limit_ms.min(u64::try_from(d - now).unwrap_or(0));
    }
    let limit = Duration::from_millis(limit_ms.min(365 * 24 * 3600 * 1000));
    if let Some(a) = &shared.config.audit {
        a.on_started(&shared.config.id, record);
    }
    let call = AssertUnwindSafe(handler.call(payload, ctx.clone())).catch_unwind();
    let started = std::time::Instant::now();
    let result = tokio::select! {
        // Hard shutdown first: the handler's own token is a child of `hard`,
        // so a handler that watches it returns at the same moment; the task
        // must still go back unfinished, not be counted as a failed attempt.
        biased;
        _ = run.hard.cancelled() => {
            cancel.cancel();
            info!("shutdown timeout reached while running; returning the task");
            return Outcome::Requeue;
        }
        r = tokio::time::timeout(limit, call) => r,
    };
    metrics::histogram!("sealq_task_duration_seconds").record(started.elapsed().as_secs_f64());

    match result {
        Ok(Ok(Ok(()))) => {
            shared.stats.succeeded.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("sealq_tasks_total", "outcome" => "completed").increment(1);
            debug!("completed");
            let result = ctx
                .take_result()
                .and_then(|bytes| seal_or_log(shared, record, Purpose::Result, &bytes));
            Outcome::Complete { result }
        }
        Ok(Ok(Err(e))) => fail(shared, record, e.failure.clone(), e.message()),
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            warn!("handler panicked; treating as a failure");
            fail(
                shared,
                record,
                Failure::Retry,
                &format!("handler panicked: {msg}"),
            )
        }
        Err(_elapsed) => {
            cancel.cancel();
            if record
                .meta
                .deadline_ms
                .is_some_and(|d| shared.clock.now_ms() >= d)
            {
                return archive(
                    shared,
                    record,
                    ArchiveReason::DeadlineExceeded,
                    "deadline exceeded",
                );
            }
            warn!(timeout_ms = limit_ms, "handler timed out");
            fail(
                shared,
                record,
                Failure::Retry,
                &format!("timed out after {limit_ms} ms"),
            )
        }
    }
}

/// An envelope that must not reach a handler: archive, count, log (no payload).
fn refuse(
    shared: &Shared,
    record: &TaskRecord,
    error: IntegrityError,
    reason: ArchiveReason,
) -> Outcome {
    shared
        .stats
        .integrity_failures
        .fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sealq_integrity_failures_total", "reason" => reason.as_str().to_owned())
        .increment(1);
    warn!(error = %error, reason = %reason, envelope_len = record.envelope.len(), "refusing task");
    archive(shared, record, reason, &error.to_string())
}

fn archive(shared: &Shared, record: &TaskRecord, reason: ArchiveReason, message: &str) -> Outcome {
    shared.stats.archived.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sealq_tasks_total", "outcome" => "archived").increment(1);
    info!(reason = %reason, "archived");
    let error = seal_or_log(shared, record, Purpose::Error, message.as_bytes());
    Outcome::Archive { reason, error }
}

fn fail(shared: &Shared, record: &TaskRecord, failure: Failure, message: &str) -> Outcome {
    if let Some(a) = &shared.config.audit {
        let len = crate::audit::hooks::sealed_len(&shared.keyring, message);
        a.on_failed(&shared.config.id, record, len);
    }
    let retry_in = match failure {
        Failure::Retry => Some(record.meta.backoff.next_delay_ms(record.attempts)),
        Failure::RetryIn(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        Failure::SkipRetry => return archive(shared, record, ArchiveReason::SkipRetry, message),
        Failure::Cancel => return archive(shared, record, ArchiveReason::Cancelled, message),
        Failure::Archive(reason) => return archive(shared, record, reason, message),
    };
    // `attempts` counts this attempt: with max_retries = 2 the task runs at most 3 times.
    if record.attempts > record.meta.max_retries {
        return archive(shared, record, ArchiveReason::Exhausted, message);
    }
    let delay = retry_in.unwrap_or(0);
    shared.stats.retried.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("sealq_tasks_total", "outcome" => "retry").increment(1);
    info!(retry_in_ms = delay, "failed; will retry");
    let at_ms = shared
        .clock
        .now_ms()
        .saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    let error = seal_or_log(shared, record, Purpose::Error, message.as_bytes());
    Outcome::Retry { at_ms, error }
}

/// Seal a result or error for storage. Sealing only fails on a broken
/// keyring; the task's outcome must still be recorded, so the bytes are
/// dropped (never stored in the clear) and the failure logged.
fn seal_or_log(
    shared: &Shared,
    record: &TaskRecord,
    purpose: Purpose,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    let aad = Aad::for_record(record, purpose);
    let sealed = if is_subject_sealed(&record.envelope) {
        // Results and errors of a subject's task are sealed with its data key,
        // so erasure shreds them too. No key (erased meanwhile): drop them.
        match (&record.meta.subject_tag, &shared.subject_keys) {
            (Some(tag), Some(keys)) => match keys.cached_any_age(tag) {
                Some(key) => key.seal(&aad, bytes),
                None => Err(crate::error::Error::Keyring(
                    "the subject's data key is gone".into(),
                )),
            },
            _ => Err(crate::error::Error::Keyring("no subject key store".into())),
        }
    } else {
        shared.keyring.seal(&aad, bytes)
    };
    match sealed {
        Ok(sealed) => Some(sealed),
        Err(e) => {
            warn!(error = %e, ?purpose, "could not seal; dropping it rather than storing plaintext");
            None
        }
    }
}

async fn ack_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(Ack, u32)>) {
    let max = shared.config.ack_batch;
    let mut finished = Vec::with_capacity(max);
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut finished, max).await > 0 {
        // One `succeeded_batch` record for the successes of this batch,
        // written whatever the broker then says (the handlers did succeed;
        // a lost lease is counted and warned about below).
        if let Some(a) = &shared.config.audit {
            let done = finished
                .iter()
                .filter_map(|(ack, attempt): &(Ack, u32)| match &ack.outcome {
                    Outcome::Complete { result } => Some(SucceededEntry {
                        task: ack.lease.task_id,
                        attempt: *attempt,
                        result_len: result.as_ref().map(|r| r.len() as u64),
                    }),
                    _ => None,
                })
                .collect();
            a.on_succeeded_batch(&shared.config.id, done);
        }
        batch.extend(finished.drain(..).map(|(ack, _)| ack));
        let mut failures = 0u32;
        loop {
            match shared.broker.ack(batch.clone()).await {
                Ok(results) => {
                    if let Some(store) = &shared.config.blobs {
                        crate::blob::delete_completed(store, &batch, &results);
                    }
                    let lost = results
                        .iter()
                        .filter(|r| **r == AckResult::LeaseLost)
                        .count();
                    if lost > 0 {
                        shared
                            .stats
                            .leases_lost
                            .fetch_add(lost as u64, Ordering::Relaxed);
                        warn!(
                            lost,
                            "acks refused: leases were lost (the tasks may run again elsewhere)"
                        );
                    }
                    break;
                }
                Err(e) if failures < 20 => {
                    failures += 1;
                    warn!(error = %e, attempt = failures, "ack failed; retrying");
                    tokio::time::sleep(error_backoff(failures)).await;
                }
                Err(e) => {
                    // Giving up is safe: the leases expire and the tasks are
                    // recovered for another attempt (at-least-once delivery).
                    warn!(error = %e, count = batch.len(), "ack failed repeatedly; leases will expire and the tasks run again");
                    break;
                }
            }
        }
        batch.clear();
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let leases: Vec<Lease> = shared.inflight().values().map(|(l, _)| *l).collect();
        if leases.is_empty() {
            continue;
        }
        match shared
            .broker
            .extend_leases(&leases, shared.config.lease)
            .await
        {
            Ok(held) => {
                let mut map = shared.inflight();
                for (lease, ok) in leases.iter().zip(held) {
                    if !ok && let Some((_, token)) = map.remove(&lease.task_id) {
                        warn!(id = %lease.task_id, "lease lost; cancelling the handler");
                        token.cancel();
                    }
                }
            }
            Err(e) => warn!(error = %e, "lease extension failed; will retry"),
        }
    }
}

/// Start a sweep of orphaned blobs unless one still runs; it stops at shutdown.
fn start_sweep(
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    running: &Arc<std::sync::atomic::AtomicBool>,
    min_age: Duration,
) {
    let Some(store) = shared.config.blobs.clone() else {
        return;
    };
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (shared, stop, running) = (shared.clone(), stop.clone(), running.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            r = crate::blob::sweep_orphans(&*shared.broker, &*store, min_age) => match r {
                Ok(0) => {}
                Ok(n) => {
                    shared.stats.blobs_swept.fetch_add(n, Ordering::Relaxed);
                    info!(tasks = n, "swept orphaned claim-check blobs");
                }
                Err(e) => warn!(error = %e, "sweeping orphaned blobs failed; will retry"),
            },
        }
        running.store(false, Ordering::Release);
    });
}

/// How long one token of the fastest-refilling limit among `limits` takes
/// to come back, ms (at least 10, at most a minute); 0 without any limit.
fn token_wait_ms(limits: &[Option<crate::store::broker::RateLimit>]) -> u64 {
    limits
        .iter()
        .flatten()
        .map(|l| (l.period_ms / l.limit.max(1)).clamp(10, 60_000))
        .min()
        .unwrap_or(0)
}

async fn maintenance_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = 0u64;
    let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        if let Some((every, min_age)) = shared.config.sweep
            && last_sweep.is_none_or(|t| t.elapsed() >= every)
        {
            last_sweep = Some(std::time::Instant::now());
            start_sweep(&shared, &stop, &sweeping, min_age);
        }
        // An erasure elsewhere bumps the epoch: drop cached subject keys.
        if let Some(keys) = &shared.subject_keys
            && let Err(e) = keys.refresh().await
        {
            warn!(error = %e, "checking the erasure epoch failed");
        }
        match shared.broker.forward_due().await {
            Ok(f) if f.moved > 0 => debug!(moved = f.moved, "forwarded due tasks"),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "forwarding due tasks failed"),
        }
        match shared.broker.recover_expired().await {
            Ok(r) if r.retried + r.archived > 0 => {
                info!(
                    retried = r.retried,
                    archived = r.archived,
                    "recovered expired leases"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "recovering expired leases failed"),
        }
        if tick.is_multiple_of(60)
            && let Err(e) = shared.broker.purge_completed().await
        {
            warn!(error = %e, "purging completed tasks failed");
        }
        // Rate limits change rarely: look every 10 intervals.
        if tick.is_multiple_of(10) {
            match shared.broker.rate_limits(&shared.queue_names).await {
                Ok(limits) => shared
                    .token_wait_ms
                    .store(token_wait_ms(&limits), Ordering::Relaxed),
                Err(e) => warn!(error = %e, "reading the queues' rate limits failed"),
            }
        }
        tick += 1;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.config.maintenance_interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rate_limit_shortens_the_idle_wait_to_one_token() {
        use crate::store::broker::RateLimit;
        let per = |n, ms| RateLimit::per(n, Duration::from_millis(ms));
        assert_eq!(token_wait_ms(&[None, None]), 0);
        // 5 per second: a token every 200 ms; the fastest limit wins.
        assert_eq!(token_wait_ms(&[per(5, 1_000), None, per(1, 1_000)]), 200);
        // Bounded: never a busy loop, never longer than a minute.
        assert_eq!(token_wait_ms(&[per(1_000_000, 1_000)]), 10);
        assert_eq!(token_wait_ms(&[per(1, 86_400_000)]), 60_000);
    }

    use super::*;
    use std::time::Instant;

    #[test]
    fn the_adaptive_prefetch_follows_the_fetch_rate_within_its_bounds() {
        // concurrency 4, prefetch 4..=64: 68 slots.
        let slots = Arc::new(Semaphore::new(4 + 64));
        let mut r = PrefetchReserve::new(&slots, 4, 64, 0);
        let t0 = r.since;
        assert_eq!(r.held(), 60, "starts at the minimum prefetch");
        assert_eq!(slots.available_permits(), 8);

        // Too soon to measure: nothing moves.
        r.adjust_at(1_000_000, t0 + Duration::from_millis(100));
        assert_eq!(r.held(), 60);

        // 2,000 tasks in 500 ms = 4,000/s: 100 ms of work is 400, above the
        // maximum: every slot is released.
        r.adjust_at(2_000, t0 + Duration::from_millis(500));
        assert_eq!(r.held(), 0);
        assert_eq!(slots.available_permits(), 68);

        // 200/s: 20 tasks ahead, so 44 of the 64 go back into the reserve.
        r.adjust_at(2_100, t0 + Duration::from_millis(1_000));
        assert_eq!(r.held(), 44);

        // Nothing fetched: back to the minimum prefetch.
        r.adjust_at(2_100, t0 + Duration::from_millis(1_500));
        assert_eq!(r.held(), 60);
        drop(r);
        assert_eq!(slots.available_permits(), 68, "dropping returns every slot");

        // With 50 slots in use, the reserve takes only what is free now, and
        // the rest as it comes back, never waiting.
        let in_use = slots.clone().try_acquire_many_owned(50).unwrap();
        let mut r = PrefetchReserve::new(&slots, 4, 64, 0);
        assert_eq!(r.held(), 0, "not enough free slots to hold back at start");
        let t0 = r.since;
        r.adjust_at(0, t0 + Duration::from_millis(300));
        assert_eq!(r.held(), 18, "the free ones");
        drop(in_use);
        r.adjust_at(0, t0 + Duration::from_millis(600));
        assert_eq!(r.held(), 60);
        assert_eq!(slots.available_permits(), 8);
    }

    #[test]
    fn a_fixed_prefetch_holds_nothing_back() {
        let slots = Arc::new(Semaphore::new(8 + 8));
        let mut r = PrefetchReserve::new(&slots, 8, 8, 0);
        let t0 = Instant::now();
        r.adjust_at(0, t0 + Duration::from_secs(5));
        r.adjust_at(1_000_000, t0 + Duration::from_secs(10));
        assert_eq!(r.held(), 0);
        assert_eq!(slots.available_permits(), 16);
    }
}
