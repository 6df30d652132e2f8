//! # sealq-sqlite: the embedded broker
//!
//! sealq's default [`Broker`]: one SQLite file, no server. Several processes
//! (producers and workers) may share the file.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sealq::BrokerError> {
//! use sealq_sqlite::SqliteBroker;
//! let broker = SqliteBroker::open("queue.db")?;
//! // or: SqliteBroker::open_url("sqlite://queue.db?synchronous=normal")?;
//! # let _ = broker; Ok(()) }
//! ```
//!
//! ## How it works
//!
//! - **Storage.** SQLite (bundled, never the system library) in WAL mode with
//!   `synchronous=FULL` by default: an acknowledged write survives a power cut.
//!   [`Synchronous::Normal`] trades the last commits on power loss for speed.
//!   The schema is described in the `schema` module; migrations are keyed by
//!   `PRAGMA user_version` and run at open. A file that is not SQLite is
//!   refused as [`sealq::BrokerErrorKind::Corrupt`] and left untouched; a
//!   schema newer than this build as [`sealq::BrokerErrorKind::Config`].
//! - **Group commit.** One writer thread owns the write connection. Every
//!   mutating call (enqueue, dequeue, ack, extend, forward, recover, purge,
//!   delete, rerun, pause, resume) is queued to it; it runs everything queued
//!   in one `BEGIN IMMEDIATE … COMMIT` transaction and then replies; if one
//!   call fails, the group is rolled back and each call re-run alone, so one
//!   failing call does not undo the others. Many concurrent callers share one fsync.
//!   An enqueue that finds the writer idle (nothing queued, no group running,
//!   no concurrent callers lately, the WAL not due for its restart) *leads* instead: it commits on its own
//!   thread (`tokio::task::block_in_place` on a multi-thread runtime; on a
//!   current-thread runtime it always queues), so a lone producer pays its
//!   commit and no thread hand-offs. Callers arriving meanwhile queue and
//!   share the writer thread's next commit.
//! - **Checkpoints off the commit path.** With `synchronous=FULL` a one-call
//!   enqueue costs one fsync (of the WAL, in its commit). SQLite's automatic
//!   checkpoint is replaced: a checkpointer thread copies the WAL back into
//!   the database (`PASSIVE`, on its own connection) once per 1000 WAL
//!   frames and after a second without a request, so its two fsyncs never
//!   sit in a caller's commit. Once the WAL holds 8000 frames the writer
//!   thread copies the few frames left between two groups so the WAL can
//!   restart (otherwise a sustained load would grow it without bound).
//! - **Reads** (`get`, `list`, `stats`) use separate read connections and do
//!   not queue behind writes.
//! - **Several processes.** SQLite's file lock serialises writers across
//!   processes. A writer that finds the lock taken waits and retries with
//!   backoff for [`SqliteOptions::busy_timeout`] (30 s by default) before
//!   failing as [`sealq::BrokerErrorKind::Unavailable`]; `database is locked`
//!   never surfaces before that.
//! - **Wake-ups, not polling.** After a commit that made work ready (a
//!   pending task enqueued, a retry or requeue, a rerun, a resume, forwarded
//!   tasks) the writer signals a `tokio::sync::Notify` that
//!   [`Broker::wait_for_work`] waits on. For work written by *other* processes,
//!   a watcher thread checks `PRAGMA data_version` (a counter in shared memory;
//!   no table is read) every [`SqliteOptions::watch_interval`] (50 ms) and
//!   signals when it changed. Wake-ups are hints: a woken worker dequeues and
//!   may find nothing. Scheduled tasks do not wake anyone when they become
//!   due; workers sleep until [`sealq::broker::Forwarded::next_due_ms`].
//! - **Time** comes from the injected [`sealq::Clock`] ([`SqliteOptions::clock`]).
//! - **Lifetime.** [`SqliteBroker`] is a cheap handle (`Clone`, an `Arc`).
//!   When the last handle is dropped, the writer finishes what was queued, its
//!   thread and the watcher thread stop, and the file is closed before `drop`
//!   returns.
//!
//! ## Performance
//!
//! Per task the broker does a few cached-statement executions, except that
//! an enqueue stores runs of tasks without a unique key (for uncapped
//! queues) fifty (or twenty) at a time in two multi-row statements (see the
//! `enqueue` module); a batch is one transaction; envelopes live in their
//! own table so state changes rewrite small rows. A new database gets 8 KiB
//! pages, half the WAL frames (and the file system writes) per task of
//! SQLite's default 4 KiB; an existing one keeps its page size (see
//! `schema::NEW_DATABASE_PAGE_SIZE`). Measure with
//! `cargo run --release -p sealq-sqlite --example throughput [full|normal] [tasks] [batch] [envelope-bytes]`
//! (enqueue a batch, dequeue it, ack it, repeated). On the 2-core development
//! machine, shared with other builds, that gave 9–12k tasks/s end to end with
//! `synchronous=FULL` (256-byte envelopes, batches of 500) and 14–22k with
//! `normal`; the fsync per commit dominates with `FULL`, so larger batches or
//! more concurrent callers (group commit) raise it.
//!
//! ## Semantics worth knowing
//!
//! - Dequeue takes, queue by queue in the order asked, tasks that are pending
//!   or scheduled/retry and due, by `run_at` then id. Paused queues are skipped.
//! - An ack or extension with the current lease token is accepted even after
//!   the lease's expiry, as long as no lease recovery has taken the task back.
//! - Lease recovery puts a task whose lease expired back as `retry`, due at
//!   once, while `attempts <= max_retries`; otherwise archives it `exhausted`.
//! - The replay memory (finding 2 of the security review) takes a task's id
//!   when it completes, and when it is deleted or erased in any state; it
//!   keeps it for [`SqliteOptions::replay_horizon`] after that, and always
//!   while the task's row is still stored (pruned by `purge_completed`). A
//!   remembered id is refused at enqueue, and a leased task whose id is
//!   remembered is flagged `replayed` whatever its stored state says (a
//!   completed task flipped back to pending, a deleted row put back): the
//!   worker archives it `replay` without running it. A `Complete` ack on a
//!   remembered id applies, and is counted in
//!   `sealq_replayed_successes_total`.
//! - A unique key is held while its task is neither completed nor archived
//!   nor deleted, and its TTL has not passed.
//! - **A task row that does not decode** (edited or damaged: a REAL where an
//!   integer belongs, TEXT where a BLOB belongs, metadata that does not
//!   decode, an id that is not 16 bytes) never stops a call. Dequeue,
//!   forwarding and lease recovery *quarantine* it: archived with reason
//!   `integrity`, lease released, the wrong-typed state columns reset,
//!   envelope and metadata kept as they are; the call goes on with the other
//!   tasks (dequeue takes another in its place). Each is counted in
//!   `sealq_quarantined_total{backend="sqlite",op}` and logged at WARN with
//!   its id (its row number when the id is what is damaged), never its
//!   bytes. Reads cannot write: `list` leaves the row out (and fills the page
//!   from the rows after it), `stats` leaves out tasks whose queue or state
//!   is not a name, both logging at WARN (`sealq_malformed_tasks_skipped_total`);
//!   `get` of that very task fails as [`sealq::BrokerErrorKind::Corrupt`]
//!   naming it. Erasure, purging and re-sealing do not decode rows and are
//!   not affected. Such a row comes from an edited file, never from sealq:
//!   inspect it, then delete it by id.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit_sink;
mod blob_store;
mod checkpoint;
mod codec;
mod enqueue;
mod erase_ids;
mod error;
mod key_checks;
mod live_workers;
mod ops;
mod options;
mod quarantine;
mod read;
mod replay;
mod schema;
mod subject_key_store;
mod url;
mod wake;
mod wal_size;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealq::broker::{
    Ack, AckResult, Broker, BrokerResult, DequeueRequest, EnqueueResult, Forwarded, Lease,
    LeasedTask, ListQuery, NewTask, QueueStats, Recovered, SealedSwap, TaskRecord,
};
use sealq::{BrokerError, BrokerErrorKind, TaskId};

pub use crate::audit_sink::SqliteAuditSink;
pub use crate::blob_store::SqliteBlobStore;
pub use crate::options::{SqliteOptions, Synchronous};
use crate::read::Reader;
pub use crate::subject_key_store::SqliteSubjectKeyStore;
use crate::wake::{Wake, Watcher};
use crate::writer::{Writer, WriterEnv};

/// The embedded SQLite broker. Cheap to clone: clones share one writer
/// thread, one read pool and one watcher.
#[derive(Debug, Clone)]
pub struct SqliteBroker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Field order is drop order: the writer finishes queued work first.
    writer: Writer,
    _watcher: Watcher,
    reader: Arc<Reader>,
    wake: Arc<Wake>,
    path: PathBuf,
    subject_keys: Arc<SqliteSubjectKeyStore>,
}

impl SqliteBroker {
    /// Open (creating if needed) the store at `path` with default options:
    /// `synchronous=FULL`, the system clock. A new database (and its `-wal`
    /// and `-shm` files) gets mode 0600 on Unix, whatever the umask.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BrokerError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Open the store at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, BrokerError> {
        let path = path.as_ref().to_path_buf();
        create_private_file(&path);
        let mut conn = schema::open_writer(
            &path,
            options.synchronous,
            options.busy_timeout,
            options.page_size,
        )?;
        let wal = checkpoint::install(&mut conn, &path)?;
        let wake = Arc::new(Wake::default());
        let watcher = Watcher::start(path.clone(), options.watch_interval, Arc::clone(&wake))?;
        let writer = Writer::start(
            conn,
            WriterEnv {
                path: path.clone(),
                clock: options.clock.clone(),
                busy: options.busy_timeout,
                max_group: options.max_group.max(1),
                replay_horizon_ms: i64::try_from(options.replay_horizon.as_millis())
                    .unwrap_or(i64::MAX),
                wake: Arc::clone(&wake),
                wal,
            },
        )?;
        let keys_path = options.subject_keys.clone().unwrap_or_else(|| {
            let mut p = path.clone().into_os_string();
            p.push(".subject-keys");
            PathBuf::from(p)
        });
        let subject_keys = Arc::new(SqliteSubjectKeyStore::open(&keys_path)?);
        let reader = Arc::new(Reader::new(
            path.clone(),
            options.read_connections,
            options.busy_timeout,
        ));
        tracing::debug!(path = %path.display(), synchronous = options.synchronous.as_pragma(), "opened SQLite broker");
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                _watcher: watcher,
                reader,
                wake,
                path,
                subject_keys,
            }),
        })
    }

    /// Open from a URL: `sqlite:///abs/path.db`, `sqlite://rel.db` or
    /// `sqlite:rel.db`, with optional `?synchronous=full|normal`,
    /// `busy_timeout_ms=N`, `watch_interval_ms=N`.
    pub fn open_url(url: &str) -> Result<Self, BrokerError> {
        Self::open_url_with(url, SqliteOptions::default())
    }

    /// Open from a URL; options in the URL override those in `options`.
    pub fn open_url_with(url: &str, options: SqliteOptions) -> Result<Self, BrokerError> {
        let (path, options) = url::parse(url, options)?;
        Self::open_with(path, options)
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This broker's stores, bundled: the broker and its subject key store
    /// (the file beside the database). No audit sink: [`Self::stores_with_audit`]
    /// adds the one in the database, and `sealq_connect` chooses among the
    /// places a log can live.
    pub fn stores(&self) -> sealq::Stores {
        sealq::Stores::new(Arc::new(self.clone()))
            .with_subject_keys(self.inner.subject_keys.clone())
    }

    /// [`Self::stores`] with the audit log in this database
    /// ([`SqliteAuditSink`], creating its tables if needed).
    pub fn stores_with_audit(&self) -> Result<sealq::Stores, sealq::audit::AuditError> {
        let sink = SqliteAuditSink::open(&self.inner.path)?;
        Ok(self.stores().with_audit(Arc::new(sink)))
    }

    /// The `synchronous` mode in force on the write connection, read back
    /// from SQLite (for diagnostics and tests).
    pub async fn synchronous(&self) -> Result<Synchronous, BrokerError> {
        self.inner
            .writer
            .call(|ctx| {
                let path = &ctx.env.path;
                let v: i64 = ctx
                    .conn
                    .query_row("PRAGMA synchronous", [], |r| r.get(0))
                    .map_err(|e| error::map_err(path, "reading PRAGMA synchronous", e))?;
                match v {
                    1 => Ok(Synchronous::Normal),
                    2 => Ok(Synchronous::Full),
                    other => Err(BrokerError::new(
                        sealq::BrokerErrorKind::Config,
                        format!(
                            "unexpected PRAGMA synchronous = {other} on `{}`",
                            path.display()
                        ),
                    )),
                }
            })
            .await
    }
}

/// Create `path` empty with mode 0600 when it does not exist yet, before
/// SQLite opens it. SQLite would create a missing database with mode 0644
/// less the umask (readable by every local user: the store holds sealed
/// tasks, subject tags and wrapped data keys); it creates the `-wal` and
/// `-shm` files with the database file's mode, so they follow. An empty file
/// is a new database to SQLite. An existing file keeps its mode. A failure
/// here is left for SQLite's open to report in its own words.
pub(crate) fn create_private_file(path: &Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // `create_new` never follows a symlink at `path` nor touches a file
    // that is there.
    let _ = options.open(path);
}

/// The adaptive prefetch's ceiling per handler slot on this broker
/// ([`Broker::prefetch_per_slot`]).
const PREFETCH_PER_SLOT: usize = 4;

fn lease_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Batches a bulk enqueue keeps sent and not yet answered on this broker
/// ([`Broker::bulk_in_flight`]).
const BULK_IN_FLIGHT: usize = 4;

#[async_trait]
impl Broker for SqliteBroker {
    async fn enqueue(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        self.store_tasks(tasks, enqueue::Lead::IfIdle).await
    }

    /// Four: while the writer commits one group, the bulk enqueue seals
    /// and queues the next batches, which the writer then takes together
    /// into one transaction (one fsync for several batches).
    fn bulk_in_flight(&self) -> usize {
        BULK_IN_FLIGHT
    }

    /// A bulk enqueue's batch never leads: its caller's task seals the next
    /// batch while the writer thread stores this one (see the `writer`
    /// module).
    async fn enqueue_bulk_batch(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        self.store_tasks(tasks, enqueue::Lead::Never).await
    }

    async fn dequeue(&self, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok(Vec::new());
        }
        let req = req.clone();
        self.inner
            .writer
            .call(move |ctx| ops::dequeue(ctx, &req))
            .await
    }

    async fn ack(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        self.inner
            .writer
            .call(move |ctx| ops::ack(ctx, &acks))
            .await
    }

    async fn extend_leases(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = leases.to_vec();
        let ms = lease_ms(lease);
        self.inner
            .writer
            .call(move |ctx| ops::extend(ctx, &leases, ms))
            .await
    }

    async fn forward_due(&self) -> BrokerResult<Forwarded> {
        self.inner.writer.call(ops::forward_due).await
    }

    async fn recover_expired(&self) -> BrokerResult<Recovered> {
        self.inner.writer.call(ops::recover_expired).await
    }

    async fn purge_completed(&self) -> BrokerResult<u64> {
        self.inner.writer.call(ops::purge_completed).await
    }

    async fn stats(&self) -> BrokerResult<Vec<QueueStats>> {
        self.inner.reader.stats().await
    }

    async fn rate_limits(
        &self,
        queues: &[String],
    ) -> BrokerResult<Vec<Option<sealq::broker::RateLimit>>> {
        self.inner.reader.rate_limits(queues.to_vec()).await
    }

    async fn list(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>> {
        self.inner.reader.list(query.clone()).await
    }

    async fn get(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>> {
        self.inner.reader.get(id).await
    }

    async fn delete(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        self.inner
            .writer
            .call(move |ctx| ops::delete(ctx, &ids))
            .await
    }

    async fn register_worker(&self, worker: &sealq::LiveWorker, ttl: Duration) -> BrokerResult<()> {
        let worker = worker.clone();
        self.inner
            .writer
            .call(move |ctx| live_workers::register(ctx, &worker, ttl))
            .await
    }

    async fn list_workers(&self) -> BrokerResult<Vec<sealq::LiveWorker>> {
        self.inner.writer.call(live_workers::list).await
    }

    async fn deregister_worker(&self, run_id: &str) -> BrokerResult<()> {
        let run_id = run_id.to_owned();
        self.inner
            .writer
            .call(move |ctx| live_workers::deregister(ctx, &run_id))
            .await
    }

    async fn key_checks(&self) -> BrokerResult<Option<Vec<sealq::model::key_check::KeyCheck>>> {
        self.inner.writer.call(key_checks::read).await.map(Some)
    }

    async fn record_key_checks(
        &self,
        checks: &[sealq::model::key_check::KeyCheck],
    ) -> BrokerResult<bool> {
        if !checks.is_empty() {
            let checks = checks.to_vec();
            self.inner
                .writer
                .call(move |ctx| key_checks::record(ctx, &checks))
                .await?;
        }
        Ok(true)
    }

    async fn swap_sealed(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        if swaps.is_empty() {
            return Ok(Vec::new());
        }
        let swaps = swaps.to_vec();
        self.inner
            .writer
            .call(move |ctx| ops::swap_sealed(ctx, &swaps))
            .await
    }

    async fn rerun(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        self.inner
            .writer
            .call(move |ctx| ops::rerun(ctx, &ids))
            .await
    }

    async fn pause(&self, queue: &str) -> BrokerResult<()> {
        let queue = queue.to_owned();
        self.inner
            .writer
            .call(move |ctx| ops::set_paused(ctx, &queue, true))
            .await
    }

    async fn resume(&self, queue: &str) -> BrokerResult<()> {
        let queue = queue.to_owned();
        self.inner
            .writer
            .call(move |ctx| ops::set_paused(ctx, &queue, false))
            .await
    }

    async fn set_max_depth(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()> {
        let queue = queue.to_owned();
        self.inner
            .writer
            .call(move |ctx| ops::set_max_depth(ctx, &queue, max_depth))
            .await
    }

    async fn set_rate_limit(
        &self,
        queue: &str,
        limit: Option<sealq::broker::RateLimit>,
    ) -> BrokerResult<()> {
        let queue = queue.to_owned();
        self.inner
            .writer
            .call(move |ctx| ops::set_rate_limit(ctx, &queue, limit))
            .await
    }

    async fn wait_for_work(&self, _queues: &[String], timeout: Duration) -> BrokerResult<()> {
        // One signal for all queues: a hint, callers dequeue afterwards.
        self.inner.wake.wait(timeout).await;
        Ok(())
    }

    async fn erase_subject(
        &self,
        tag: &sealq::SubjectTag,
    ) -> BrokerResult<sealq::subject_keys::ErasureCounts> {
        let tag = *tag;
        self.inner
            .writer
            .call(move |ctx| ops::erase_subject(ctx, &tag))
            .await
    }

    async fn erase_tasks(
        &self,
        ids: &[TaskId],
    ) -> BrokerResult<sealq::subject_keys::ErasureCounts> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let ids = ids.to_vec();
        self.inner
            .writer
            .call(move |ctx| erase_ids::erase_tasks(ctx, &ids))
            .await
    }

    fn subject_key_store(&self) -> Option<Arc<dyn sealq::subject_keys::SubjectKeyStore>> {
        Some(self.inner.subject_keys.clone())
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.inner.path.display())
    }

    async fn check_version(&self) -> BrokerResult<()> {
        let version = self.inner.reader.schema_version().await?;
        if version == schema::SCHEMA_VERSION {
            return Ok(());
        }
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "`{}` has schema version {version}, this sealq needs {}: run the sealq that \
                 matches the store (a newer one migrates it when it opens it)",
                self.inner.path.display(),
                schema::SCHEMA_VERSION
            ),
        ))
    }

    fn store_path(&self) -> Option<PathBuf> {
        Some(std::fs::canonicalize(&self.inner.path).unwrap_or_else(|_| self.inner.path.clone()))
    }

    /// A lease is one local transaction, so a worker needs little work
    /// ahead; the worker's default ceiling (16 tasks per slot) held about
    /// 3 MiB of sealed tasks at concurrency 64 for no measured gain in rate
    /// (docs/benchmarks.md, "SQLite worker memory and quiet-machine ratios").
    fn prefetch_per_slot(&self) -> Option<usize> {
        Some(PREFETCH_PER_SLOT)
    }
}
