//! The consumer side: lease tasks, open them, run handlers, acknowledge.
//!
//! A [`Worker`] runs four cooperating loops over one [`crate::Broker`]:
//! - **fetch**: asks for up to `concurrency + prefetch - outstanding` tasks per
//!   round trip, in the queue order given by [`Priority`]; when nothing is
//!   ready it waits on the broker's wake-up, never polls. The prefetch adapts
//!   to the task rate unless fixed ([`WorkerBuilder::prefetch`]);
//! - **process**: one tokio task per leased task; opens the envelope (tasks that
//!   fail to open never reach a handler), enforces timeout and deadline, catches
//!   panics, seals the result or error;
//! - **ack**: batches outcomes into one broker call;
//! - **heartbeat + maintenance**: extends the leases of running tasks in one
//!   call, forwards due scheduled/retry tasks, recovers expired leases, purges
//!   completed tasks past retention.
//!
//! Delivery is at-least-once: a handler can run again after a crash or a lost
//! lease; the task id is the idempotency key.
//!
//! Where each part lives: `runtime.rs` (the worker's state, one run and its
//! shutdown), `fetch.rs` and `prefetch.rs` (fetching), `execute.rs` (one
//! task's steps from lease to outcome), `outcome.rs` (archive, refuse, fail,
//! seal), `attempt_log.rs` (the WARN line of a failed or archived
//! attempt), `panic_hook.rs` (keeping handler panics off stderr), `acks.rs`,
//! `heartbeat.rs`, `presence.rs` (the registry of live workers),
//! `maintenance.rs`, `handler_span.rs` (the span a handler runs in), `handler.rs` (what
//! handlers receive and return), `priority.rs` (queue order), `stats.rs`
//! (counters), `queue_metrics.rs` (sampled queue depths), `unhandled.rs` (a
//! task type no handler takes: retried until its expiry).

mod acks;
mod attempt_log;
mod execute;
mod fetch;
mod handler;
mod handler_span;
mod heartbeat;
mod maintenance;
mod outcome;
mod panic_hook;
mod prefetch;
mod presence;
mod priority;
mod queue_metrics;
mod resolve;
mod runtime;
mod stats;
mod unhandled;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use handler::{Failure, HandlerResult, RawPayload, TaskContext, TaskError};
pub use priority::Priority;
pub use stats::{WorkerReport, WorkerStats};

use crate::error::{Error, Result};
use crate::model::clock::{SharedClock, system_clock};
use crate::model::options::validate_queue_name;
use crate::model::task::Task;
use crate::seal::keyring::Keyring;
use crate::store::Stores;
use crate::store::broker::Broker;
use crate::store::subject_keys::SubjectKeyStore;
use handler::{ErasedHandler, RawHandler, TypedHandler};
use maintenance::BlobSweep;
use prefetch::Prefetch;

/// Configuration shared by the worker's loops.
pub(crate) struct Config {
    pub(crate) id: String,
    pub(crate) queues: Vec<(String, u32)>,
    pub(crate) priority: Priority,
    pub(crate) concurrency: usize,
    /// Fixed or adaptive; its bounds are resolved in `WorkerState::new`.
    pub(crate) prefetch: Prefetch,
    pub(crate) lease: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) maintenance_interval: Duration,
    pub(crate) ack_batch: usize,
    /// Resolvers handed to every [`TaskContext`].
    pub(crate) resolvers: Arc<crate::reference::Resolvers>,
    /// Where offloaded payloads are fetched from (claim-check).
    pub(crate) blobs: Option<Arc<dyn crate::store::blob::BlobStore>>,
    /// Sweep orphaned blobs: how often, and the youngest task age swept.
    pub(crate) sweep: Option<BlobSweep>,
    /// Where lifecycle events are recorded, if anywhere.
    pub(crate) audit: Option<crate::audit::Auditor>,
    /// Where subject data keys live, when given apart from the broker
    /// (default: `Broker::subject_key_store`).
    pub(crate) subject_key_store: Option<Arc<dyn SubjectKeyStore>>,
    /// Refuse to start when the keyring opens none of the waiting tasks.
    pub(crate) check_keyring: bool,
    /// Accept a keyring the broker's recorded check values do not know.
    pub(crate) accept_new_keyring: bool,
    /// Keep handler panics' messages off stderr (`panic_hook`).
    pub(crate) quiet_handler_panics: bool,
    /// How often queue depths are sampled for metrics (zero: never).
    pub(crate) queue_metrics_interval: Duration,
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    broker: Arc<dyn Broker>,
    keyring: Arc<Keyring>,
    clock: SharedClock,
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    fallback: Option<Arc<dyn ErasedHandler>>,
    config: Config,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.config.queues)
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// Queues to take from, with weights (default: `default` with weight 1).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        self.config.queues = queues.into_iter().map(|(q, w)| (q.into(), w)).collect();
        self
    }

    /// How queue weights are applied (default [`Priority::Weighted`]).
    pub fn priority(mut self, priority: Priority) -> Self {
        self.config.priority = priority;
        self
    }

    /// Handlers running at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// Tasks leased ahead of free handler slots, fixed.
    ///
    /// By default the prefetch adapts: at least `concurrency` tasks, and more
    /// when tasks are short, as many as the worker starts in about 100 ms at
    /// its recent rate, up to 16 × `concurrency` (at most 4,096; a broker
    /// can ask for a lower ceiling, [`crate::store::broker::Broker::prefetch_per_slot`]:
    /// the SQLite broker's is 4 × `concurrency`). A deep
    /// prefetch lets one broker call lease many tasks when each round trip
    /// waits behind other clients' calls; bounding it by time keeps a
    /// worker with long tasks from holding leases on work others could do.
    /// Prefetched tasks hold a lease (extended by heartbeats) while they
    /// wait, so keep a fixed prefetch small for long tasks, and for strict
    /// priorities: tasks already leased run before higher-priority ones
    /// that arrive meanwhile (up to ~100 ms of work with the default).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = if n == usize::MAX {
            // `usize::MAX` has always meant the adaptive default (it was
            // the default's stored value); kept so that no caller's
            // behaviour changes.
            Prefetch::Adaptive
        } else {
            Prefetch::Fixed(n)
        };
        self
    }

    /// Lease length (default 30 s); extended every third of it while running.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// How long shutdown waits for running handlers before cancelling them
    /// and returning their tasks (default 30 s).
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.config.shutdown_timeout = t;
        self
    }

    /// How often to forward due tasks and recover expired leases (default 1 s).
    pub fn maintenance_interval(mut self, t: Duration) -> Self {
        self.config.maintenance_interval = t.max(Duration::from_millis(10));
        self
    }

    /// The worker id (default `HOSTNAME:PID`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.config.id = id.into();
        self
    }

    /// The clock (tests).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Whether the worker checks, before it leases anything, that its
    /// keyring opens the tasks waiting in its queues (default `true`):
    /// with a wrong keyring it then refuses to start
    /// ([`Error::Keyring`](crate::error::Error::Keyring), naming the keys the
    /// tasks need) instead of reading the backlog as tampered
    /// ([`crate::keyring_check`]).
    ///
    /// The same check compares the keyring with the check values the
    /// broker recorded ([`crate::keyring_check::stored`]), so a keyring
    /// that holds none of the deployment's keys is refused even when no
    /// task waits, and records the keyring's own values.
    pub fn check_keyring(mut self, check: bool) -> Self {
        self.config.check_keyring = check;
        self
    }

    /// Start although the keyring holds none of the keys the broker
    /// recorded, or the waiting tasks name (default `false`): a deliberate
    /// new deployment on an old broker (tasks the old keyring sealed are
    /// held, never archived). A key id the broker knows with another secret is refused all
    /// the same ([`crate::keyring_check::stored`]).
    pub fn accept_new_keyring(mut self, accept: bool) -> Self {
        self.config.accept_new_keyring = accept;
        self
    }

    /// Keep the message of a handler's panic off stderr (default `false`).
    ///
    /// A panic in a handler is a failed attempt: retried with backoff, and
    /// its message, which may hold payload data, is sealed as the task's
    /// error like a returned [`TaskError`]'s. But Rust's default panic hook
    /// prints that message to stderr first, unsealed. With `true`, building
    /// the worker installs a panic hook (once per process, however many
    /// workers ask) that prints nothing for a panic raised while this
    /// worker polls a handler's future, and passes every other panic to
    /// the hook that was set before it (by default, the one that prints
    /// it). The worker still logs the failure at WARN (`task failed`, with
    /// detail `panic`, its id, type and queue; never the message).
    ///
    /// Off by default because the panic hook belongs to the whole process:
    /// a library should not replace it unasked. Ask for it in any worker
    /// whose handlers may panic with payload data (the `sealq worker` CLI
    /// does). Set your own hook before building the worker, not after: a
    /// hook set later replaces this one. Panics in threads or tokio tasks a
    /// handler spawns are not the handler's poll, and are printed.
    pub fn quiet_handler_panics(mut self, quiet: bool) -> Self {
        self.config.quiet_handler_panics = quiet;
        self
    }

    /// How often the worker samples [`Broker::stats`] into the
    /// `sealq_queue_depth`, `sealq_queue_paused` and `sealq_audit_backlog`
    /// gauges (default 15 s; [`Duration::ZERO`] turns sampling off). One
    /// broker call per interval, whatever the task rate. See
    /// [`crate::metrics`].
    pub fn queue_metrics_interval(mut self, every: Duration) -> Self {
        self.config.queue_metrics_interval = every;
        self
    }

    /// Write an audit record for every lease, start, success, failure,
    /// retry, archive (refusals included: `integrity`, `expired`, `replay`)
    /// and give-back. Default: none.
    pub fn audit(mut self, auditor: crate::audit::Auditor) -> Self {
        self.config.audit = Some(auditor);
        self
    }

    /// Register the resolver handlers use to fetch the `T` a
    /// [`Ref<T>`](crate::Ref) points to ([`TaskContext::resolve`]), with its
    /// timeout and optional cache. See [`crate::reference`].
    pub fn resolver<T, R>(mut self, resolver: R, options: crate::reference::ResolverOptions) -> Self
    where
        T: Send + Sync + 'static,
        R: crate::reference::Resolver<T>,
    {
        Arc::make_mut(&mut self.config.resolvers).register::<T, R>(resolver, options);
        self
    }

    /// The blob store offloaded payloads are fetched from (see
    /// [`crate::blob`]): their handlers see the original payload, and a
    /// task's blob is deleted once its completion is acknowledged.
    pub fn blob_store(mut self, store: Arc<dyn crate::store::blob::BlobStore>) -> Self {
        self.config.blobs = Some(store);
        self
    }

    /// Also delete, every `every`, the blobs of tasks that no longer exist
    /// (purged after their retention, deleted, erased), with
    /// [`crate::blob::sweep_orphans`]: blobs of tasks younger than `min_age`
    /// (by their UUID v7 id) are left alone, since a producer stores a blob
    /// just before it enqueues its task; use a minute or more. Needs
    /// [`blob_store`](Self::blob_store). Off by default: one sweeper
    /// (one worker per blob store) is enough, and a sweep reads the whole
    /// store. It runs beside the worker's other loops, one at a time, and
    /// stops at shutdown; [`WorkerStats::blobs_swept`] counts its deletions.
    pub fn sweep_blobs(mut self, every: Duration, min_age: Duration) -> Self {
        self.config.sweep = Some(BlobSweep {
            every: every.max(Duration::from_millis(10)),
            min_age,
        });
        self
    }

    /// Register the handler for task type `T`.
    pub fn handle<T, F, Fut>(mut self, f: F) -> Self
    where
        T: Task,
        F: Fn(T, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        let h = TypedHandler::<T, F> {
            f,
            _t: std::marker::PhantomData,
        };
        self.handlers.insert(T::KIND.to_owned(), Arc::new(h));
        self
    }

    /// Register a handler for type name `kind` receiving the raw payload.
    pub fn handle_raw<F, Fut>(mut self, kind: impl Into<String>, f: F) -> Self
    where
        F: Fn(RawPayload, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.handlers
            .insert(kind.into(), Arc::new(RawHandler { f }));
        self
    }

    /// Register a handler for every type without its own handler. Without
    /// one, a task of a type with no handler is retried with backoff (a
    /// worker that has one may come) and archived `unknown_type` at its
    /// sealed expiry (README, "Task types with no handler").
    pub fn handle_any<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(RawPayload, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.fallback = Some(Arc::new(RawHandler { f }));
        self
    }

    /// Check the configuration and build the worker.
    pub fn build(self) -> Result<Worker> {
        if self.config.queues.is_empty() {
            return Err(Error::Config("a worker needs at least one queue".into()));
        }
        for (q, _) in &self.config.queues {
            validate_queue_name(q)?;
        }
        if self.handlers.is_empty() && self.fallback.is_none() {
            return Err(Error::Config(
                "a worker needs at least one handler (handle, handle_raw or handle_any)".into(),
            ));
        }
        self.keyring
            .require_sealing_keys("run a worker (it opens payloads)")?;
        if self.config.quiet_handler_panics {
            panic_hook::install();
        }
        Ok(Worker {
            state: Arc::new(runtime::WorkerState::new(
                self.broker,
                self.keyring,
                self.clock,
                self.handlers,
                self.fallback,
                self.config,
            )),
        })
    }
}

/// Processes tasks. Build with [`Worker::builder`], then [`Worker::run`]
/// (until SIGINT/SIGTERM), [`Worker::run_until`] or [`Worker::spawn`].
///
/// ```no_run
/// # async fn f(broker: std::sync::Arc<dyn sealq::Broker>) -> sealq::Result<()> {
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image_id: u64 }
/// impl sealq::Task for Resize { const KIND: &'static str = "image.resize"; }
///
/// let worker = sealq::Worker::builder(broker, sealq::Keyring::from_env()?)
///     .queues([("default", 1)])
///     .concurrency(32)
///     .handle(|task: Resize, ctx: sealq::TaskContext| async move {
///         println!("resizing {} (attempt {})", task.image_id, ctx.attempt());
///         Ok(())
///     })
///     .build()?;
/// worker.run().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    state: Arc<runtime::WorkerState>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.state.config.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Start building a worker over `broker` opening with `keyring`.
    pub fn builder(broker: Arc<dyn Broker>, keyring: impl Into<Arc<Keyring>>) -> WorkerBuilder {
        let concurrency = 16;
        WorkerBuilder {
            broker,
            keyring: keyring.into(),
            clock: system_clock(),
            handlers: HashMap::new(),
            fallback: None,
            config: Config {
                id: crate::model::id::default_process_id(),
                queues: vec![(crate::model::options::DEFAULT_QUEUE.to_owned(), 1)],
                priority: Priority::Weighted,
                concurrency,
                prefetch: Prefetch::Adaptive,
                lease: Duration::from_secs(30),
                shutdown_timeout: Duration::from_secs(30),
                maintenance_interval: Duration::from_secs(1),
                ack_batch: 1024,
                resolvers: Arc::default(),
                blobs: None,
                sweep: None,
                audit: None,
                subject_key_store: None,
                check_keyring: true,
                accept_new_keyring: false,
                quiet_handler_panics: false,
                queue_metrics_interval: Duration::from_secs(15),
            },
        }
    }

    /// Start building a worker over a backend's whole [`Stores`]: its
    /// broker, its subject key store and, when it has one, its blob store.
    /// The audit log stays explicit ([`WorkerBuilder::audit`]).
    pub fn from_stores(stores: &Stores, keyring: impl Into<Arc<Keyring>>) -> WorkerBuilder {
        let mut builder = Worker::builder(stores.broker.clone(), keyring);
        builder.config.subject_key_store = stores.subject_keys.clone();
        if let Some(blobs) = &stores.blobs {
            builder = builder.blob_store(blobs.clone());
        }
        builder
    }

    /// Live counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.state.stats
    }

    /// The resolvers registered with [`WorkerBuilder::resolver`], for their
    /// [`stats`](crate::Resolvers::stats).
    pub fn resolvers(&self) -> &crate::reference::Resolvers {
        &self.state.config.resolvers
    }

    /// Run until SIGINT or SIGTERM, then shut down gracefully.
    pub async fn run(&self) -> Result<WorkerReport> {
        self.run_until(shutdown_signal()).await
    }

    /// Run until `shutdown` completes, then shut down gracefully: stop
    /// fetching, give back prefetched tasks, wait up to the shutdown timeout
    /// for running handlers, cancel and give back the rest, flush acks.
    pub async fn run_until(
        &self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport> {
        runtime::run(self.state.clone(), shutdown).await
    }

    /// Run in the background; the handle stops it.
    pub fn spawn(&self) -> WorkerHandle {
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let state = self.state.clone();
        let join = tokio::spawn(async move { runtime::run(state, s.cancelled_owned()).await });
        WorkerHandle {
            stop,
            join,
            worker: self.clone(),
        }
    }
}

/// A worker running in the background.
#[derive(Debug)]
pub struct WorkerHandle {
    stop: tokio_util::sync::CancellationToken,
    join: tokio::task::JoinHandle<Result<WorkerReport>>,
    worker: Worker,
}

impl WorkerHandle {
    /// Live counters.
    pub fn stats(&self) -> &WorkerStats {
        self.worker.stats()
    }

    /// Shut down gracefully and wait for it.
    pub async fn shutdown(self) -> Result<WorkerReport> {
        self.stop.cancel();
        self.join.await.map_err(|_| Error::Shutdown)?
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
