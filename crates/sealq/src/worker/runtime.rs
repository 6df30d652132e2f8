//! One worker's state and one run of it: `run` starts the loops (fetch,
//! ack, heartbeat, maintenance; see the module docs of [`super`]) and shuts
//! them down in order.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::acks::ack_loop;
use super::fetch::fetch_loop;
use super::handler::ErasedHandler;
use super::heartbeat::heartbeat_loop;
use super::maintenance::maintenance_loop;
use super::prefetch::PrefetchBounds;
use super::presence::presence_loop;
use super::queue_metrics::queue_metrics_loop;
use super::{Config, WorkerReport, WorkerStats};
use crate::error::{Error, Result};
use crate::keyring_check::check_keyring;
use crate::keyring_check::stored::{RecordOptions, check_recorded_keys};
use crate::model::clock::SharedClock;
use crate::model::id::TaskId;
use crate::seal::keyring::Keyring;
use crate::store::broker::{Ack, Broker, Lease};
use crate::subject_keys::SubjectKeys;

/// Everything one worker keeps for its lifetime, shared by all its loops:
/// its broker, keys, handlers, configuration, counters and the leases it
/// holds.
pub(crate) struct WorkerState {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) clock: SharedClock,
    pub(crate) handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// The `handle_any` handler, for types without their own.
    pub(crate) fallback: Option<Arc<dyn ErasedHandler>>,
    pub(crate) config: Config,
    /// The prefetch bounds resolved from [`Config::prefetch`].
    pub(crate) prefetch: PrefetchBounds,
    pub(crate) stats: WorkerStats,
    /// Leases held by this worker (fetched, not yet acked), with the token
    /// that cancels the handler if the lease is lost.
    held_leases: Mutex<HashMap<TaskId, (Lease, CancellationToken)>>,
    /// The configured queues' names, in configuration order.
    pub(crate) queue_names: Vec<String>,
    /// Per-subject data keys, when the broker provides a key store.
    pub(crate) subject_keys: Option<Arc<SubjectKeys>>,
    /// With a rate limit on one of the queues: how long one token takes to
    /// come back (ms, 0 for none), so that a fetch the limit left empty
    /// waits that long rather than the whole maintenance interval.
    pub(crate) token_wait_ms: AtomicU64,
}

impl WorkerState {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        handlers: HashMap<String, Arc<dyn ErasedHandler>>,
        fallback: Option<Arc<dyn ErasedHandler>>,
        config: Config,
    ) -> Self {
        let prefetch = PrefetchBounds::resolve(
            config.prefetch,
            config.concurrency,
            broker.prefetch_per_slot(),
        );
        let queue_names = config.queues.iter().map(|(q, _)| q.clone()).collect();
        let subject_keys = config
            .subject_key_store
            .clone()
            .or_else(|| broker.subject_key_store())
            .map(|store| Arc::new(SubjectKeys::new(store, &keyring)));
        WorkerState {
            subject_keys,
            token_wait_ms: AtomicU64::new(0),
            broker,
            keyring,
            clock,
            handlers,
            fallback,
            config,
            prefetch,
            stats: WorkerStats::default(),
            held_leases: Mutex::new(HashMap::new()),
            queue_names,
        }
    }

    /// The leases held by this worker, locked.
    pub(crate) fn held_leases(
        &self,
    ) -> MutexGuard<'_, HashMap<TaskId, (Lease, CancellationToken)>> {
        // The map holds plain values; a panic while holding the lock cannot
        // leave it logically inconsistent, so a poisoned lock is still usable.
        self.held_leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one [`run`] shares between its fetch loop and its per-task tasks:
/// the two shutdown signals, the handler permits and the ack queue.
pub(crate) struct RunState {
    /// Stop fetching; tasks not yet started are given back.
    pub(crate) stop_fetching: CancellationToken,
    /// Cancel running handlers and give their tasks back (shutdown timeout
    /// passed). Each handler's token is a child of this one.
    pub(crate) hard_shutdown: CancellationToken,
    /// Handlers running at once: `concurrency` permits.
    pub(crate) run_permits: Arc<Semaphore>,
    /// Finished attempts for the acker, with their attempt numbers (for
    /// the audit log's `succeeded_batch` records).
    pub(crate) ack_queue: mpsc::UnboundedSender<(Ack, u32)>,
}

/// Run the worker until `shutdown` completes, then shut down gracefully.
pub(crate) async fn run(
    state: Arc<WorkerState>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport> {
    let cfg = &state.config;
    if cfg.check_keyring {
        refuse_a_wrong_keyring(&state).await?;
    }
    // A slot per task leased and not yet acked: running, or prefetched.
    let total_slots = cfg.concurrency + state.prefetch.max;
    let lease_slots = Arc::new(Semaphore::new(total_slots));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let stop_background = CancellationToken::new();
    let run = Arc::new(RunState {
        stop_fetching: CancellationToken::new(),
        hard_shutdown: CancellationToken::new(),
        run_permits: Arc::new(Semaphore::new(cfg.concurrency)),
        ack_queue: ack_tx,
    });
    // Poll the shutdown future once before saying "started": a signal
    // handler it installs (`shutdown_signal`) is then in place, so a
    // SIGTERM sent on seeing the start line stops the worker gracefully
    // instead of killing it.
    let mut shutdown = std::pin::pin!(shutdown);
    let stop_at_once = futures::poll!(shutdown.as_mut()).is_ready();
    // What this worker serves, in one line (`store`: the file, for an
    // embedded broker).
    let store = state.broker.store_path().map(|p| p.display().to_string());
    info!(
        worker = %cfg.id,
        broker = %state.broker.describe(),
        store = store.as_deref(),
        queues = %state.queue_names.join(","),
        concurrency = cfg.concurrency,
        "worker started"
    );

    let acker = tokio::spawn(ack_loop(state.clone(), ack_rx));
    let heartbeat = tokio::spawn(heartbeat_loop(state.clone(), stop_background.clone()));
    let maintenance = tokio::spawn(maintenance_loop(state.clone(), stop_background.clone()));
    let queue_metrics = tokio::spawn(queue_metrics_loop(state.clone(), stop_background.clone()));
    let presence = tokio::spawn(presence_loop(state.clone(), stop_background.clone()));
    let fetcher = tokio::spawn(fetch_loop(state.clone(), run.clone(), lease_slots.clone()));

    if !stop_at_once {
        shutdown.await;
    }
    info!(worker = %cfg.id, "shutting down: no new tasks; waiting for running handlers");
    run.stop_fetching.cancel();
    let _ = fetcher.await;

    // Every slot comes back once its task's ack is queued.
    let all = u32::try_from(total_slots).unwrap_or(u32::MAX);
    if tokio::time::timeout(cfg.shutdown_timeout, lease_slots.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            worker = %cfg.id,
            timeout_ms = cfg.shutdown_timeout.as_millis() as u64,
            "shutdown timeout: cancelling running handlers and returning their tasks"
        );
        run.hard_shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), lease_slots.acquire_many(all)).await;
    }
    // Dropping the last sender lets the acker drain and finish.
    drop(run);
    let _ = tokio::time::timeout(Duration::from_secs(30), acker).await;
    stop_background.cancel();
    let _ = heartbeat.await;
    let _ = maintenance.await;
    let _ = queue_metrics.await;
    let _ = presence.await;
    let report = state.stats.report();
    info!(worker = %cfg.id, ?report, "worker stopped");
    Ok(report)
}

/// Backoff for broker errors in loops: 50 ms doubling to 5 s.
pub(crate) fn error_backoff(failures: u32) -> Duration {
    Duration::from_millis((50u64 << failures.min(7)).min(5_000))
}

/// Fail closed: before anything is leased, a keyring that does not fit the
/// check values the broker recorded ([`crate::keyring_check::stored`]), or
/// that opens none of the tasks waiting in the worker's queues, stops the
/// worker with an error that names the keys ([`crate::keyring_check`]),
/// rather than letting it archive the backlog as tampered. Once accepted,
/// the keyring's check values are recorded.
///
/// A broker that cannot be read at start does not stop the worker (its
/// fetch loop waits for the broker as before): the check is skipped with a
/// warning.
async fn refuse_a_wrong_keyring(state: &WorkerState) -> Result<()> {
    let options = RecordOptions {
        accept_new_keyring: state.config.accept_new_keyring,
        record: true,
    };
    match check_recorded_keys(&*state.broker, &state.keyring, options).await {
        Ok(_) => {}
        Err(Error::Broker(e)) => {
            warn!(error = %e, "could not read the keyring check values the broker records; starting anyway");
        }
        Err(e) => {
            warn!(worker = %state.config.id, "{e}");
            return Err(e);
        }
    }
    let check = match check_keyring(&*state.broker, &state.keyring, Some(&state.queue_names)).await
    {
        Ok(check) => check,
        Err(e) => {
            warn!(error = %e, "could not sample waiting tasks to check the keyring; starting anyway");
            return Ok(());
        }
    };
    if check.is_wrong_keyring() && !state.config.accept_new_keyring {
        let message = check.refusal(&state.broker.describe(), &state.keyring);
        warn!(worker = %state.config.id, "{message}");
        return Err(Error::Keyring(message));
    }
    Ok(())
}
