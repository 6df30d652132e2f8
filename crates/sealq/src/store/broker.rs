//! The [`Broker`] trait: the one seam between sealq's runtime and storage.
//!
//! Every backend (embedded SQLite, Redis, Postgres) implements this trait and
//! passes the same conformance suite (`sealq::testkit`, feature `testkit`).
//! The client, the worker runtime, the audit log and erasure sit above it and
//! never know which backend is below.
//!
//! Rules every implementation follows:
//! - **Batches, one round trip each.** `enqueue`, `dequeue`, `ack` and
//!   `extend_leases` take many items and must cost one round trip (one
//!   transaction, one script call, one pipeline) per call, not per item.
//! - **Leases with expiry.** `dequeue` moves tasks to `Active` with a lease that
//!   expires; only the holder of the current lease token may ack or extend it.
//!   A stale ack (lease expired and re-leased) reports [`AckResult::LeaseLost`]
//!   and changes nothing.
//! - **Opaque envelopes.** The broker stores sealed bytes and never interprets
//!   them; the clear metadata it sees is [`TaskMeta`](crate::model::task::TaskMeta).
//! - **Replay memory.** The id of a task that completed, or that was deleted
//!   or erased in any state, is remembered for the replay horizon (and as
//!   long as a completed task's record is kept): `enqueue` refuses it
//!   ([`EnqueueResult::IdExists`]) and `dequeue` flags a task with such an
//!   id [`LeasedTask::replayed`], whatever its stored state says.
//! - **The broker's clock.** Times are Unix milliseconds from the broker's
//!   [`Clock`](crate::model::clock::Clock), so tests can drive time.
//! - **No backend types** in any signature; failures are [`BrokerError`].

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{BrokerError, BrokerErrorKind};
use crate::model::counts::ErasureCounts;
use crate::model::id::{SubjectTag, TaskId};
use crate::model::key_check::KeyCheck;
use crate::model::state::{ArchiveReason, TaskState};
use crate::store::subject_keys::SubjectKeyStore;

// The stored-task and count types live in `model`; their paths here are kept.
pub use crate::model::counts::{QueueStats, RateLimit};
pub use crate::model::live_worker::LiveWorker;
pub use crate::model::record::{NewTask, TaskRecord};

/// Result of broker operations.
pub type BrokerResult<T> = std::result::Result<T, BrokerError>;

/// What happened to one task of an enqueue batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueResult {
    /// Stored.
    Enqueued,
    /// A live task already holds the unique key.
    Duplicate {
        /// The task holding the key.
        existing: TaskId,
    },
    /// A task with the same id exists or completed before (replay).
    IdExists,
    /// The queue already holds its maximum of waiting tasks
    /// ([`Broker::set_max_depth`]): not stored.
    QueueFull {
        /// The queue's cap: scheduled, pending and retry tasks together.
        max_depth: u64,
    },
    /// The broker could not store this task in this call (Redis did not
    /// keep its bytes between writing them and the enqueue function, twice:
    /// evicted under `maxmemory`, or a stray key of that id). Nothing of it
    /// was kept, its id is free, and the other tasks of the call stand as
    /// their own results say: sending it again is safe.
    NotStored {
        /// What happened and what to do, naming the task and never its
        /// bytes.
        reason: String,
    },
}

/// Proof of holding a task: the id plus the token issued by `dequeue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The leased task.
    pub task_id: TaskId,
    /// Token of this lease: with the task id it names one lease, and a later
    /// lease of the same task gets another token. (A backend may give the
    /// tasks of one `dequeue` call the same token.)
    pub token: u64,
    /// When the lease expires unless extended, Unix ms.
    pub expires_at_ms: i64,
}

/// A task handed to a worker.
#[derive(Debug, Clone)]
pub struct LeasedTask {
    /// The task (state `Active`, `attempts` already incremented).
    pub record: TaskRecord,
    /// The lease to ack or extend with.
    pub lease: Lease,
    /// The broker remembers this id as completed, deleted or erased before
    /// (the task came back: replay). The worker archives it with reason
    /// `replay` unopened.
    pub replayed: bool,
}

/// A request for work.
#[derive(Debug, Clone)]
pub struct DequeueRequest {
    /// Queues in the order to take from: the first non-empty, unpaused queue
    /// is drained first, then the next, until `max` tasks are taken.
    pub queues: Vec<String>,
    /// At most this many tasks.
    pub max: usize,
    /// Lease length.
    pub lease: Duration,
    /// Who takes them (for inspection).
    pub worker: String,
}

/// The final word of a worker on one leased task.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Succeeded; keep the optional sealed result for the retention period.
    Complete {
        /// Sealed result.
        result: Option<Vec<u8>>,
    },
    /// Failed; run again at the given time.
    Retry {
        /// Next run, Unix ms.
        at_ms: i64,
        /// Sealed error message.
        error: Option<Vec<u8>>,
    },
    /// Dead-letter it.
    Archive {
        /// Why.
        reason: ArchiveReason,
        /// Sealed error message.
        error: Option<Vec<u8>>,
    },
    /// Give it back unstarted (shutdown): back to `Pending`, this attempt not counted.
    Requeue,
}

/// One acknowledgement.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The lease being released.
    pub lease: Lease,
    /// What to do with the task.
    pub outcome: Outcome,
}

/// What happened to one ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckResult {
    /// Applied.
    Applied,
    /// The lease was no longer held (expired and recovered, or the task was
    /// deleted); nothing was changed.
    LeaseLost,
}

/// Which sealed bytes of a stored task a [`SealedSwap`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedPart {
    /// The payload envelope ([`TaskRecord::envelope`]).
    Payload,
    /// The sealed result ([`TaskRecord::result`]).
    Result,
    /// The sealed error of the last failed attempt ([`TaskRecord::last_error`]).
    Error,
}

impl SealedPart {
    /// `payload`, `result` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            SealedPart::Payload => "payload",
            SealedPart::Result => "result",
            SealedPart::Error => "error",
        }
    }
}

/// Replace one part of a stored task's sealed bytes, but only if it still
/// holds exactly `expected` (compare-and-swap): re-sealing under a new key
/// never overwrites a task that changed since it was read. `Debug` shows
/// sizes only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSwap {
    /// The task.
    pub task_id: TaskId,
    /// Its queue (as read).
    pub queue: String,
    /// Which sealed bytes.
    pub part: SealedPart,
    /// The bytes the part must hold now.
    pub expected: Vec<u8>,
    /// The bytes it holds after the swap.
    pub replacement: Vec<u8>,
}

impl std::fmt::Debug for SealedSwap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSwap")
            .field("task_id", &self.task_id)
            .field("queue", &self.queue)
            .field("part", &self.part)
            .field("expected_len", &self.expected.len())
            .field("replacement_len", &self.replacement.len())
            .finish()
    }
}

/// A listing query.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<TaskState>,
    /// Only this subject.
    pub subject: Option<SubjectTag>,
    /// Ids greater than this (pagination).
    pub after: Option<TaskId>,
    /// At most this many (0 means 100).
    pub limit: usize,
}

/// Result of lease recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Expired leases put back for another attempt.
    pub retried: u64,
    /// Expired leases whose retries were exhausted, archived.
    pub archived: u64,
}

/// Result of forwarding due tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Scheduled/retry tasks moved to pending.
    pub moved: u64,
    /// The earliest run time still in the future, if any (lets workers sleep exactly).
    pub next_due_ms: Option<i64>,
}

/// Storage for sealed tasks. See the module documentation for the rules.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug + 'static {
    /// Store a batch of tasks in one round trip; one result per task, in order.
    async fn enqueue(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>>;

    /// Lease up to `max` ready tasks from the queues in the order given.
    /// Due scheduled/retry tasks are eligible even before `forward_due` ran.
    async fn dequeue(&self, req: &DequeueRequest) -> BrokerResult<Vec<LeasedTask>>;

    /// Apply a batch of acknowledgements in one round trip; one result per ack.
    async fn ack(&self, acks: Vec<Ack>) -> BrokerResult<Vec<AckResult>>;

    /// Extend held leases by `lease` from now; `false` for leases no longer held.
    async fn extend_leases(&self, leases: &[Lease], lease: Duration) -> BrokerResult<Vec<bool>>;

    /// Move due scheduled and retry tasks to pending.
    async fn forward_due(&self) -> BrokerResult<Forwarded>;

    /// Return tasks whose lease expired: to retry when attempts remain, else archived (`exhausted`).
    async fn recover_expired(&self) -> BrokerResult<Recovered>;

    /// Delete completed tasks past their retention; returns how many.
    async fn purge_completed(&self) -> BrokerResult<u64>;

    /// Per-queue counts (every queue that has tasks or is paused). Every
    /// count is exact, which may cost a read of every task the broker
    /// holds, completed (retained) ones included: for sampled gauges use
    /// [`Broker::queue_depths`].
    async fn stats(&self) -> BrokerResult<Vec<QueueStats>>;

    /// Per-queue counts for sampled gauges (the worker's queue metrics,
    /// every `queue_metrics_interval`): like [`Broker::stats`], except that
    /// a broker may report the `completed` count as an ESTIMATE (and leave
    /// out a queue whose only tasks are completed ones) where an exact
    /// count would read every retained task. The other states are exact.
    /// The default is [`Broker::stats`]; Postgres overrides it (exact up to
    /// 10,000 completed tasks, estimated from the planner's statistics
    /// above: `docs/postgres.md`).
    async fn queue_depths(&self) -> BrokerResult<Vec<QueueStats>> {
        self.stats().await
    }

    /// List tasks, ordered by id.
    async fn list(&self, query: &ListQuery) -> BrokerResult<Vec<TaskRecord>>;

    /// A sample of at most `limit` tasks waiting in `queue` (pending,
    /// scheduled or retry), for the keyring check at worker start
    /// (`keyring_check`): which tasks is the broker's choice, the cheapest
    /// it has, and nothing about them is changed. The default lists each
    /// waiting state by id ([`Broker::list`]), up to a third of `limit`
    /// (rounded up) of each; a broker whose by-id list is costly on a large
    /// backlog overrides it (Postgres takes the first ones in claim order).
    async fn sample_waiting(&self, queue: &str, limit: usize) -> BrokerResult<Vec<TaskRecord>> {
        sample_waiting_by_state(self, queue, limit).await
    }

    /// One task by id.
    async fn get(&self, id: TaskId) -> BrokerResult<Option<TaskRecord>>;

    /// Delete tasks in any state; returns how many existed.
    async fn delete(&self, ids: &[TaskId]) -> BrokerResult<u64>;

    /// Move archived tasks back to pending with their attempts reset; returns how many moved.
    async fn rerun(&self, ids: &[TaskId]) -> BrokerResult<u64>;

    /// Stop dequeue from taking tasks of `queue`.
    async fn pause(&self, queue: &str) -> BrokerResult<()>;

    /// Undo [`Broker::pause`].
    async fn resume(&self, queue: &str) -> BrokerResult<()>;

    /// Cap `queue` at `max_depth` waiting tasks (scheduled, pending and
    /// retry together; active, completed and archived ones do not count),
    /// or remove its cap with `None`. While a queue holds that many,
    /// [`Broker::enqueue`] stores no more tasks in it
    /// ([`EnqueueResult::QueueFull`]): back-pressure on producers, enforced
    /// by the broker for every producer at once. Tasks already stored are
    /// never dropped; retries of leased tasks are not refused.
    async fn set_max_depth(&self, queue: &str, max_depth: Option<u64>) -> BrokerResult<()>;

    /// Limit how fast tasks of `queue` are leased, across every worker
    /// ([`RateLimit`]), or remove its limit with `None`. [`Broker::dequeue`]
    /// then takes from it at most as many tasks as the bucket holds tokens;
    /// the rest wait. Setting a limit starts with a full bucket.
    async fn set_rate_limit(&self, queue: &str, limit: Option<RateLimit>) -> BrokerResult<()>;

    /// The rate limits of `queues`, in order (`None`: no limit). Workers ask
    /// now and then, to wait no longer than a token takes to come back when
    /// a limit left them with nothing. The default reads [`Broker::stats`];
    /// backends answer from their limits alone.
    async fn rate_limits(&self, queues: &[String]) -> BrokerResult<Vec<Option<RateLimit>>> {
        let stats = self.stats().await?;
        Ok(queues
            .iter()
            .map(|q| {
                stats
                    .iter()
                    .find(|s| &s.queue == q)
                    .and_then(|s| s.rate_limit)
            })
            .collect())
    }

    /// Wait until work may be available in one of `queues` (a task enqueued,
    /// retried or requeued, by this process or another) or `timeout` passes.
    /// A hint only: callers dequeue afterwards and may find nothing. Must not
    /// poll the store in a busy loop.
    async fn wait_for_work(&self, queues: &[String], timeout: Duration) -> BrokerResult<()>;

    /// A short, secret-free description for logs (`sqlite:///path`, `redis://host:port`).
    fn describe(&self) -> String;

    /// Check that what is stored is the version this build needs: the
    /// schema of a database, the functions library loaded into Redis.
    /// Readiness probes call it ([`crate::health`]); `Err` says what to run
    /// to fix it. The default has nothing to check.
    async fn check_version(&self) -> BrokerResult<()> {
        Ok(())
    }

    /// The file this backend keeps its tasks in on this machine, if it
    /// keeps them in one (SQLite's database file, absolute): a worker names
    /// it in its start line, so one started in the wrong directory says
    /// which store it serves. Default `None` (a server).
    fn store_path(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// The most tasks a bulk enqueue ([`crate::Client::enqueue_bulk`])
    /// should send in one call, whatever batch size its caller asked for
    /// (`None`: no limit). A backend that runs one call at a time sets it so
    /// that one call never holds the store long enough to stall the
    /// workers sharing it. Atomic batches ([`Broker::enqueue`] itself) are
    /// never split.
    fn bulk_batch_limit(&self) -> Option<usize> {
        None
    }

    /// How many batches a bulk enqueue ([`crate::Client::enqueue_bulk`])
    /// keeps sent and not yet answered (at least one). Two keep a server
    /// busy (the next call is queued behind the one it runs); a backend
    /// that stores queued batches together in one commit sets more, so
    /// that each commit (and its fsync) takes several. Default 2.
    fn bulk_in_flight(&self) -> usize {
        2
    }

    /// Store one batch of a bulk enqueue ([`crate::Client::enqueue_bulk`]):
    /// as [`Broker::enqueue`] (one result per task, in order, the batch
    /// applied atomically and durable before the call returns), for a
    /// caller that has its next batch to seal meanwhile. A backend that
    /// would run a lone caller's write on the caller's own thread hands it
    /// to a thread of its own instead, so that the caller's task goes on
    /// preparing the next batch (SQLite: its writer thread, never a
    /// leading caller). The default calls [`Broker::enqueue`].
    async fn enqueue_bulk_batch(&self, tasks: Vec<NewTask>) -> BrokerResult<Vec<EnqueueResult>> {
        self.enqueue(tasks).await
    }

    /// The ceiling of a worker's adaptive prefetch, in tasks per handler
    /// slot (`None`: the worker's own, 16 per slot and 4,096 at most). A
    /// backend whose lease is a local call sets a lower one: a few
    /// milliseconds of work ahead cover its round trip, and every task
    /// leased ahead holds its sealed payload in the worker's memory. A
    /// fixed prefetch (`WorkerBuilder::prefetch`) ignores it.
    fn prefetch_per_slot(&self) -> Option<usize> {
        None
    }

    /// Erase a data subject's tasks (right to erasure), in one transaction
    /// where the backend allows: tasks with this subject tag in every state
    /// except `active` are deleted with their results and unique keys;
    /// `active` ones are archived with reason `erased`, their envelope wiped
    /// and their lease revoked, so the running worker's ack changes nothing
    /// and the task is never retried. Erasing an unknown subject returns zero
    /// counts; running it twice is harmless.
    ///
    /// This trusts the clear subject tag, which whoever can write the
    /// broker can put on or take off any task: the client's erasure
    /// (`Client::erase_subject`) no longer calls it, it checks each task's
    /// envelope and calls [`Broker::erase_tasks`] (finding 6 of the
    /// security review).
    ///
    /// The default refuses: a backend that cannot erase must say so rather
    /// than pretend.
    async fn erase_subject(&self, tag: &SubjectTag) -> BrokerResult<ErasureCounts> {
        let _ = tag;
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!("{} does not support erasing subjects yet", self.describe()),
        ))
    }

    /// Erase exactly these tasks, as [`Broker::erase_subject`] erases a
    /// subject's (the client's erasure calls it with the tasks it checked
    /// belong to the subject: their envelope authenticates with the
    /// subject's key and tag, which the broker cannot forge): tasks in
    /// every state but `active` are deleted with their results and unique
    /// keys and their ids remembered; `active` ones are archived `erased`,
    /// envelope wiped and lease revoked. Ids not stored are skipped. Returns
    /// how many were erased, by the state each was in.
    ///
    /// The default refuses: a backend that cannot erase must say so rather
    /// than pretend.
    async fn erase_tasks(&self, ids: &[TaskId]) -> BrokerResult<ErasureCounts> {
        let _ = ids;
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!(
                "{} does not support erasing tasks by id yet",
                self.describe()
            ),
        ))
    }

    /// Apply compare-and-swaps of sealed bytes (key rotation: `sealq keys
    /// reseal`), in one transaction or atomic call per queue where the
    /// backend allows. Per swap, in order: `true` if applied, `false` if the
    /// task is gone, moved to another queue, or that part no longer holds
    /// `expected` (nothing is written then). Nothing else of the task
    /// changes: state, lease, attempts and times stay as they are.
    ///
    /// The default refuses: a backend that cannot swap must say so rather
    /// than pretend.
    async fn swap_sealed(&self, swaps: &[SealedSwap]) -> BrokerResult<Vec<bool>> {
        let _ = swaps;
        Err(BrokerError::new(
            BrokerErrorKind::Config,
            format!("{} does not support re-sealing yet", self.describe()),
        ))
    }

    /// The check values of sealing keys recorded here
    /// ([`Broker::record_key_checks`]), in key id order: what a process
    /// starting with a keyring compares its own with
    /// (`keyring_check::stored`), so a keyring that holds none of the
    /// deployment's keys is refused even when no task is waiting. Never a
    /// key: a check value cannot be used to derive one.
    ///
    /// `Ok(None)`: this backend does not keep check values (the default);
    /// keyrings are then checked against the waiting tasks only. An entry
    /// that does not decode is left out (and logged by the backend).
    async fn key_checks(&self) -> BrokerResult<Option<Vec<KeyCheck>>> {
        Ok(None)
    }

    /// Record check values, put-if-absent per key id: a key id already
    /// recorded keeps the value first recorded for it (a different key with
    /// the same id must not replace it). Cheap, but meant to be called once
    /// per process (first enqueue of a client, start of a worker), not per
    /// task. Returns whether the backend keeps them: `false` (the default)
    /// when it does not, and nothing is stored.
    async fn record_key_checks(&self, checks: &[KeyCheck]) -> BrokerResult<bool> {
        let _ = checks;
        Ok(false)
    }

    /// Register a worker run as live, or refresh its registration (a
    /// worker calls it at start and at every heartbeat): insert or replace
    /// the entry keyed by [`LiveWorker::run_id`], with its
    /// `last_heartbeat_ms` set to the broker's now (whatever was sent) and
    /// its registration expiring `ttl` later. A worker whose entry expired
    /// and was deleted is simply registered again.
    ///
    /// The default refuses with [`BrokerErrorKind::Unsupported`]: the
    /// worker then keeps no registration, and `sealq workers` says so.
    async fn register_worker(&self, worker: &LiveWorker, ttl: Duration) -> BrokerResult<()> {
        let _ = (worker, ttl);
        Err(no_worker_registry(self.describe()))
    }

    /// The live workers: every registration not yet expired (its last
    /// heartbeat + its ttl is after now), ordered by start time then run
    /// id. The expired ones are deleted, so the registry does not grow
    /// with every crash. An entry that does not decode is left out and
    /// logged.
    ///
    /// The default refuses with [`BrokerErrorKind::Unsupported`].
    async fn list_workers(&self) -> BrokerResult<Vec<LiveWorker>> {
        Err(no_worker_registry(self.describe()))
    }

    /// Forget a worker run (a worker stopping gracefully); an unknown run
    /// is harmless.
    ///
    /// The default refuses with [`BrokerErrorKind::Unsupported`].
    async fn deregister_worker(&self, run_id: &str) -> BrokerResult<()> {
        let _ = run_id;
        Err(no_worker_registry(self.describe()))
    }

    /// Where this deployment keeps wrapped per-subject data keys, if the
    /// backend provides a store. It must live apart from the task data so
    /// that destroying a key shreds every copy of the subject's tasks.
    fn subject_key_store(&self) -> Option<std::sync::Arc<dyn SubjectKeyStore>> {
        None
    }
}

/// The default worker-registry methods' refusal.
fn no_worker_registry(broker: String) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Unsupported,
        format!("{broker} keeps no registry of live workers yet"),
    )
}

/// [`Broker::sample_waiting`]'s default: each waiting state listed by id
/// ([`Broker::list`]), up to a third of `limit` (rounded up) of each, at
/// most `limit` in all. Public for brokers that override the method and
/// fall back to it.
pub async fn sample_waiting_by_state<B: Broker + ?Sized>(
    broker: &B,
    queue: &str,
    limit: usize,
) -> BrokerResult<Vec<TaskRecord>> {
    let per_state = limit.div_ceil(3);
    let mut out = Vec::new();
    for state in [TaskState::Pending, TaskState::Scheduled, TaskState::Retry] {
        if per_state == 0 || out.len() >= limit {
            break;
        }
        let query = ListQuery {
            queue: Some(queue.to_owned()),
            state: Some(state),
            limit: per_state,
            ..ListQuery::default()
        };
        out.extend(broker.list(&query).await?);
    }
    out.truncate(limit);
    Ok(out)
}
