//! # sealq-redis: the Redis broker
//!
//! A [`Broker`] on Redis ≥ 7 (standalone, Sentinel or Cluster) whose every
//! state change is a Redis Function of one library (`lua/sealq.lua`, named
//! `sealq`), so runtime users need neither `EVAL` nor `SCRIPT` nor
//! `FUNCTION LOAD`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealq::BrokerError> {
//! use sealq_redis::RedisBroker;
//! // Once, as an admin user: load the functions library.
//! RedisBroker::connect_unchecked("redis://admin:pw@127.0.0.1:6379", Default::default())
//!     .await?
//!     .install()
//!     .await?;
//! // Producers and workers: refuses to start if the library is missing or another version.
//! let broker = RedisBroker::connect("redis://worker:pw@127.0.0.1:6379").await?;
//! # let _ = broker; Ok(()) }
//! ```
//!
//! ## How it works
//!
//! - **Keys.** `PREFIX:{queue}:…` (default prefix `sealq`): the braces are a
//!   Cluster hash tag, so every key of a queue lives in one slot and every
//!   function call touches one slot. The global index (id → queue), queue
//!   registry and paused registry live under `PREFIX:{~}:g:`. On a standalone
//!   or Sentinel-managed server the per-queue functions update them in the
//!   same call; on a Cluster the broker updates them with separate calls.
//!   `docs/redis.md` lists every key.
//! - **Round trips.** Enqueue: one `FCALL` per queue in one pipeline.
//!   Dequeue: one `FCALL` for all requested queues (one per queue on a
//!   Cluster). Ack: one `FCALL` per queue, pipelined. Lease extension: one per
//!   queue. Forwarding, recovery and purging: one `FCALL` per queue with a
//!   batch limit, pipelined, atomic per queue, so workers sharing them never
//!   do the same work twice.
//! - **Wake-ups, not polling.** Enqueue, retry-due, requeue, forward and
//!   resume push a token onto `PREFIX:{queue}:wake` (capped at one element);
//!   idle workers block on it with `BLPOP` on a dedicated connection. A
//!   worker that leaves ready work behind passes the token on.
//! - **Time** comes from the broker's [`sealq::Clock`]: every call passes
//!   `now` in milliseconds, Redis' own clock is never used.
//! - **Connections.** One multiplexed connection (`ConnectionManager`,
//!   reconnecting by itself), cloned per call; blocking pops use their own
//!   connections. Sentinel: after a connection failure or `READONLY` the
//!   broker asks the Sentinels for the master again.
//!
//! ## Semantics worth knowing
//!
//! - Unique keys are per queue (`PREFIX:{queue}:u:KEY`).
//! - Lease tokens are random per dequeue call; an ack or extension with the
//!   current token is accepted even past the lease's expiry until recovery
//!   takes the task back (as the embedded broker does).
//! - The ids of completed tasks (from completion) and of deleted or erased
//!   tasks (any state) are remembered for [`RedisOptions::replay_horizon`],
//!   and while the task is stored; a leased task whose id is remembered is
//!   flagged `replayed` whatever its state says (finding 2 of the security
//!   review; `docs/redis.md` section 3, `Q seen`).
//! - A task hash that does not decode (edited or injected by someone with
//!   write access) is archived with reason `integrity` at dequeue and never
//!   handed out.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod audit_sink;
mod blob_store;
mod calls;
mod codec;
mod conn;
mod dequeue;
mod enqueue;
mod erase_ids;
mod erasure;
mod error;
mod functions;
mod key_checks;
mod keys;
mod lease;
mod live_workers;
mod maintenance;
mod quarantine;
mod queue_settings;
mod registry;
mod spin_wait;
mod stats;
mod subject_keys;
mod url;
mod wake;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sealq::broker::{
    Ack, AckResult, Broker, BrokerResult, DequeueRequest, EnqueueResult, Forwarded, Lease,
    LeasedTask, ListQuery, NewTask, QueueStats, RateLimit, Recovered, SealedSwap, TaskRecord,
};
use sealq::clock::{SharedClock, system_clock};
use sealq::subject_keys::{ErasureCounts, SubjectKeyStore};
use sealq::{BrokerError, BrokerErrorKind, SubjectTag, TaskId};

pub use crate::audit_sink::{DEFAULT_AUDIT_MAXLEN, RedisAuditSink};
pub use crate::blob_store::RedisBlobStore;
pub use crate::conn::TlsFiles;
pub use crate::functions::{LIBRARY_NAME, LIBRARY_VERSION, library_source};
pub use crate::maintenance::Purged;
pub use crate::stats::CommandStats;
pub use crate::subject_keys::RedisSubjectKeyStore;
pub use crate::url::redact;

use crate::conn::{Blocking, Conn};

/// Default of [`RedisOptions::spin_wait`]: above a loopback round trip on
/// a VM (60-130 µs measured), below any real network's.
pub const DEFAULT_SPIN_WAIT: Duration = Duration::from_micros(200);

/// Default of [`RedisOptions::bulk_batch_limit`].
pub const DEFAULT_BULK_BATCH_LIMIT: usize = 256;

/// Options of a [`RedisBroker`].
#[derive(Clone)]
pub struct RedisOptions {
    /// Key prefix (default `sealq`). Several independent sealq deployments
    /// may share one Redis with different prefixes. No `{`, `}` or `:`.
    pub prefix: String,
    /// The broker's clock (default: the system clock).
    pub clock: SharedClock,
    /// Custom CA and client certificate for `rediss://` (the URL's `ca`,
    /// `cert` and `key` parameters fill these from files).
    pub tls: TlsFiles,
    /// How long one call may take before it fails as unavailable (default 30 s).
    pub response_timeout: Duration,
    /// How long a call that runs alone keeps its thread awake waiting for
    /// the reply before parking it (default [`DEFAULT_SPIN_WAIT`]; zero
    /// turns it off; the URL parameter `spin_us` sets it). On virtual
    /// machines, waking a parked thread's vCPU costs more than a loopback
    /// round trip: awaiting calls one after another runs about 1.3-1.6
    /// times faster with it (docs/benchmarks.md, "Spin-then-park"). It
    /// spends CPU only while the process has nothing else to run, and
    /// turns itself off where round trips are longer than this (a network
    /// between client and Redis) or where parked calls have lately come
    /// back sooner than spinning ones (a busy host). Calls that overlap
    /// never spin.
    pub spin_wait: Duration,
    /// How long the ids of completed and deleted tasks are remembered after
    /// they completed or were deleted (and always while the task is
    /// stored), to refuse replays (default 7 days). Keep it at least as long
    /// as your tasks' sealed expiry: past it a replayed task is refused
    /// anyway, so no forgotten id leaves a window where it could run.
    pub replay_horizon: Duration,
    /// Tasks moved per queue per function call by forwarding, recovery and purging (default 1000).
    pub maintenance_batch: usize,
    /// The most tasks one call of a bulk enqueue (`Client::enqueue_bulk`)
    /// sends, whatever its caller's batch size (default 256,
    /// [`DEFAULT_BULK_BATCH_LIMIT`]; see [`Broker::bulk_batch_limit`]).
    /// Redis runs one call at a time at about 8 µs per enqueued task, so a
    /// 1,000-task call holds it for ~8 ms while workers wait; calls of 256
    /// enqueue as fast on their own and leave workers sharing the server
    /// about 8 % more throughput (docs/benchmarks.md). `Client::enqueue_batch`
    /// stays one atomic call at any size.
    pub bulk_batch_limit: usize,
    /// Key prefix of the wrapped per-subject data keys (default
    /// `PREFIX-keys`). Same rules as `prefix`.
    pub subject_keys_prefix: Option<String>,
    /// A separate Redis for the subject keys (default: the broker's Redis).
    /// For erasure to shred backups, the keys must not be in the task
    /// store's backups: a Redis without persistence, outside the backup
    /// plan (see `docs/compliance.md`). TLS files of these options apply.
    pub subject_keys_url: Option<String>,
    /// Keep at most this many archived tasks per queue (default: no cap).
    /// Purging deletes the oldest beyond it, counting them (metric
    /// `sealq_archive_trimmed_total{queue}`, the queue's `trimmed` count in
    /// Redis, a log line): never silently.
    pub archive_max_count: Option<u64>,
    /// Delete archived tasks older than this (by archive time) when purging
    /// (default: no cap). Counted like `archive_max_count`.
    pub archive_max_age: Option<Duration>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: "sealq".into(),
            clock: system_clock(),
            tls: TlsFiles::default(),
            response_timeout: Duration::from_secs(30),
            spin_wait: DEFAULT_SPIN_WAIT,
            replay_horizon: Duration::from_secs(7 * 24 * 3600),
            maintenance_batch: 1000,
            bulk_batch_limit: DEFAULT_BULK_BATCH_LIMIT,
            subject_keys_prefix: None,
            subject_keys_url: None,
            archive_max_count: None,
            archive_max_age: None,
        }
    }
}

impl RedisOptions {
    /// Defaults with the given clock.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            clock,
            ..Self::default()
        }
    }

    /// Set the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("response_timeout", &self.response_timeout)
            .field("spin_wait", &self.spin_wait)
            .finish_non_exhaustive()
    }
}

/// The Redis broker. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    target: String,
    prefix: String,
    /// `PREFIX:{~}:g:`, the keys of the global registry (see [`keys`]).
    global_key_prefix: String,
    clock: SharedClock,
    opts: RedisOptions,
    /// Queue of each lease this process holds (ack and extend route by it).
    leases: Mutex<HashMap<TaskId, Arc<str>>>,
    /// Idle connections for blocking pops.
    blocking: Mutex<Vec<Blocking>>,
    /// Wrapped subject keys (connects on first use).
    subject_keys: Arc<RedisSubjectKeyStore>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("target", &self.inner.target)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn read_pem(path: &str, what: &str) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| {
        BrokerError::new(
            BrokerErrorKind::Config,
            format!("cannot read the TLS {what} `{path}` named in the broker URL: {e}"),
        )
    })
}

impl RedisBroker {
    /// Connect with default options and check the functions library version.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connect with `options` (URL parameters override them) and check that
    /// the loaded functions library is [`LIBRARY_VERSION`]; a missing or
    /// different library is a [`BrokerErrorKind::Config`] error telling to
    /// run `sealq redis install`.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, BrokerError> {
        let b = Self::connect_unchecked(url, options).await?;
        b.check_library().await?;
        Ok(b)
    }

    /// Connect without checking the functions library (for [`Self::install`]).
    pub async fn connect_unchecked(
        url: &str,
        mut options: RedisOptions,
    ) -> Result<Self, BrokerError> {
        let parsed = url::parse(url)?;
        if let Some(p) = &parsed.prefix {
            options.prefix = p.clone();
        }
        options.spin_wait = parsed.spin_wait(options.spin_wait);
        keys::validate_prefix(&options.prefix)?;
        if let Some(ca) = &parsed.ca {
            options.tls.ca_pem = Some(read_pem(ca, "CA certificate")?);
        }
        if let (Some(c), Some(k)) = (&parsed.cert, &parsed.key) {
            options.tls.client_cert_key_pem = Some((
                read_pem(c, "client certificate")?,
                read_pem(k, "client key")?,
            ));
        }
        let conn = Conn::open(
            &parsed,
            &options.tls,
            options.response_timeout,
            options.spin_wait,
        )
        .await?;
        let target = parsed.redacted.clone();
        // Prove the connection works (and the credentials) before returning.
        let pong: Result<String, _> = conn.query(&redis::cmd("PING")).await;
        if let Err(e) = pong {
            // A user without PING may still be fine; only connection and auth failures stop us.
            let mapped = error::map(&target, "connecting", e);
            if mapped.kind != BrokerErrorKind::PermissionDenied
                || mapped.message.contains("credentials")
            {
                return Err(mapped);
            }
        }
        tracing::debug!(target = %target, prefix = %options.prefix, "connected to Redis");
        let subject_keys = Arc::new(subject_keys::for_broker(&parsed, &options)?);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                global_key_prefix: keys::global_key_prefix(&options.prefix),
                prefix: options.prefix.clone(),
                target,
                clock: options.clock.clone(),
                opts: options,
                leases: Mutex::new(HashMap::new()),
                blocking: Mutex::new(Vec::new()),
                subject_keys,
            }),
        })
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// This broker's stores, bundled: the broker and its subject key store
    /// (same server and prefix). No audit sink: [`Self::stores_with_audit`]
    /// adds the audit streams.
    pub fn stores(&self) -> sealq::Stores {
        sealq::Stores::new(Arc::new(self.clone()))
            .with_subject_keys(self.inner.subject_keys.clone())
    }

    /// [`Self::stores`] with the audit log in this prefix's streams
    /// ([`RedisAuditSink::open`], which creates the checkpoint stream).
    pub async fn stores_with_audit(&self) -> Result<sealq::Stores, sealq::audit::AuditError> {
        let sink = RedisAuditSink::open(self).await?;
        Ok(self.stores().with_audit(Arc::new(sink)))
    }
}

// Each method runs in the file of its concern: enqueue.rs, dequeue.rs,
// lease.rs (ack, extend), maintenance.rs (forward, recover, purge),
// stats.rs, admin.rs (list, get, delete, re-seal, rerun),
// queue_settings.rs (pause, resume, limits, rate limits), wake.rs,
// erasure.rs. They share keys.rs (the key schema), calls.rs (FCALLs per
// queue, draining queues in batches) and registry.rs (the global index,
// queue registry and lease cache); functions.rs installs and checks the
// Lua library, conn.rs and spin_wait.rs hold the connections.
#[async_trait]
impl Broker for RedisBroker {
    async fn enqueue(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        self.enqueue_tasks(tasks).await
    }

    async fn dequeue(&self, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
        self.dequeue_tasks(req).await
    }

    async fn ack(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>> {
        self.ack_tasks(acks).await
    }

    async fn extend_leases(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<bool>> {
        self.extend_task_leases(leases, lease).await
    }

    async fn forward_due(&self) -> BrokerResult<Forwarded> {
        self.forward_due_tasks().await
    }

    async fn recover_expired(&self) -> BrokerResult<Recovered> {
        self.recover_expired_leases().await
    }

    async fn purge_completed(&self) -> BrokerResult<u64> {
        Ok(self.purge().await?.completed)
    }

    async fn stats(&self) -> BrokerResult<Vec<QueueStats>> {
        self.queue_stats().await
    }

    async fn list(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        self.list_tasks(query).await
    }

    async fn get(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        self.get_task(id).await
    }

    async fn delete(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        self.delete_tasks(ids).await
    }

    async fn swap_sealed(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        self.swap_sealed_parts(swaps).await
    }

    async fn rerun(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        self.rerun_tasks(ids).await
    }

    async fn pause(&self, queue: &str) -> BrokerResult<()> {
        self.set_paused(queue, true).await
    }

    async fn resume(&self, queue: &str) -> BrokerResult<()> {
        self.set_paused(queue, false).await
    }

    async fn set_max_depth(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()> {
        self.set_queue_max_depth(queue, max_depth).await
    }

    /// One `HMGET` of the queue flags per queue (pipelined).
    async fn rate_limits(&self, queues: &[String]) -> BrokerResult<Vec<Option<RateLimit>>> {
        self.read_rate_limits(queues).await
    }

    async fn set_rate_limit(&self, queue: &str, limit: Option<RateLimit>) -> BrokerResult<()> {
        self.set_queue_rate_limit(queue, limit).await
    }

    async fn wait_for_work(&self, queues: &[String], timeout: Duration) -> BrokerResult<()> {
        self.wait_for_wake_up(queues, timeout).await
    }

    fn describe(&self) -> String {
        format!("{} (prefix {})", self.inner.target, self.inner.prefix)
    }

    async fn check_version(&self) -> BrokerResult<()> {
        self.check_library().await
    }

    async fn register_worker(&self, worker: &sealq::LiveWorker, ttl: Duration) -> BrokerResult<()> {
        self.register_worker_impl(worker, ttl).await
    }

    async fn list_workers(&self) -> BrokerResult<Vec<sealq::LiveWorker>> {
        self.list_workers_impl().await
    }

    async fn deregister_worker(&self, run_id: &str) -> BrokerResult<()> {
        self.deregister_workers(&[run_id.to_owned()]).await
    }

    fn bulk_batch_limit(&self) -> Option<usize> {
        Some(self.inner.opts.bulk_batch_limit.max(1))
    }

    async fn erase_subject(&self, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
        self.erase_subject_impl(tag).await
    }

    async fn erase_tasks(&self, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
        self.erase_tasks_impl(ids).await
    }

    fn subject_key_store(&self) -> Option<Arc<dyn SubjectKeyStore>> {
        Some(self.inner.subject_keys.clone())
    }

    async fn key_checks(&self) -> BrokerResult<Option<Vec<sealq::model::key_check::KeyCheck>>> {
        self.read_key_checks().await.map(Some)
    }

    async fn record_key_checks(
        &self,
        checks: &[sealq::model::key_check::KeyCheck],
    ) -> BrokerResult<bool> {
        self.write_key_checks(checks).await.map(|()| true)
    }
}
