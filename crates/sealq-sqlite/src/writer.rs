//! The writer: one write connection, group commit, and a leading caller.
//!
//! One connection does every write. A writer thread owns the right to use it
//! for queued operations: every mutating call is sent to it over a channel
//! with a oneshot reply. The thread takes everything queued (up to
//! [`crate::SqliteOptions::max_group`] operations) and runs it in ONE
//! `BEGIN IMMEDIATE … COMMIT` transaction, then replies to all of them: one
//! fsync is shared by every operation in the group, so throughput grows with
//! concurrency instead of being capped at one commit per operation.
//!
//! **A caller that finds the writer idle leads** ([`Writer::call_leading`],
//! used by a one-call enqueue; a bulk enqueue's batches always queue, so
//! that the bulk enqueue's task seals its next batch meanwhile instead of
//! blocking on this one's commit): nothing queued, no group running and the last group had
//! a single operation (no concurrent callers lately). It then runs its own
//! operation in a transaction on its own thread (through
//! `tokio::task::block_in_place` on a multi-thread runtime, so the runtime's
//! other tasks move to another thread meanwhile) and returns once the commit
//! is durable. A lone producer therefore pays its commit and nothing else:
//! no wake-up of the writer thread, no wake-up of the caller by the reply,
//! each of which waits for a free core on a loaded machine (measured in
//! `docs/benchmarks.md`, "SQLite one-call enqueue"). Callers arriving while
//! it commits queue for the writer thread, which waits for the connection
//! and commits them as one group; once groups hold more than one operation,
//! callers stop leading and all share the writer's commits, until a group of
//! one shows the concurrency is gone. On a current-thread runtime (where
//! blocking would stall every task) callers always queue.
//!
//! Operations run back to back without savepoints (a savepoint copies every
//! page it touches, which cost more than the operations). If one fails, the
//! whole group is rolled back and every operation re-run in a transaction of
//! its own, so the failing one gets its error and the others still commit
//! (operations are re-runnable closures for this reason). No reply is sent,
//! and no leading call returns, before the commit: an acknowledged operation
//! is durable (as durable as [`crate::Synchronous`] makes it).
//!
//! Checkpoints never run in a caller's commit (see the `checkpoint`
//! module): once the WAL is due for its restart checkpoint, callers stop
//! leading, and the writer thread runs it after replying to its next group.
//!
//! The thread ends when the last [`Writer`] handle is dropped (its channel
//! closes); dropping the handle waits for the thread, so the file is closed
//! when the last broker handle is gone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use sealq::broker::BrokerResult;
use sealq::clock::SharedClock;
use sealq::{BrokerError, BrokerErrorKind};
use tokio::sync::oneshot;

use crate::checkpoint::WalState;
use crate::error::retry_busy;
use crate::wake::Wake;

/// What the writer knows besides its connection.
#[derive(Debug)]
pub(crate) struct WriterEnv {
    /// The database path, for error messages.
    pub(crate) path: PathBuf,
    /// The broker's clock.
    pub(crate) clock: SharedClock,
    /// How long to retry while another process holds the lock.
    pub(crate) busy: Duration,
    /// Most operations per transaction.
    pub(crate) max_group: usize,
    /// How long completed ids are remembered, ms.
    pub(crate) replay_horizon_ms: i64,
    /// Where to signal new work.
    pub(crate) wake: Arc<Wake>,
    /// The WAL size the checkpoint hook saw after the last commit.
    pub(crate) wal: Arc<WalState>,
}

#[cfg(test)]
impl WriterEnv {
    /// The environment a unit test's writer runs in: the system clock,
    /// groups of 64, no replay memory horizon.
    pub(crate) fn for_tests(path: PathBuf) -> Self {
        WriterEnv {
            path,
            clock: Arc::new(sealq::SystemClock),
            busy: Duration::from_millis(200),
            max_group: 64,
            replay_horizon_ms: 0,
            wake: Arc::new(Wake::default()),
            wal: Arc::new(WalState::default()),
        }
    }
}

/// What an operation sees while it runs inside the group's transaction.
pub(crate) struct OpCtx<'a> {
    /// The write connection, inside `BEGIN IMMEDIATE`.
    pub(crate) conn: &'a Connection,
    /// The clock's time when the operation started, Unix ms.
    pub(crate) now: i64,
    /// Set by the operation when it made work ready (waiters are woken after commit).
    pub(crate) wake: bool,
    /// The writer's settings.
    pub(crate) env: &'a WriterEnv,
    /// Tasks enqueued in this transaction so far, by this operation and the
    /// ones before it in the group: an enqueue adds its own, and sizes the
    /// page cache for them all (several bulk batches may share a commit).
    pub(crate) txn_tasks: usize,
}

/// An operation, type-erased.
trait Run {
    /// Run inside the transaction; `false` when it failed. May run twice: a
    /// group that fails is rolled back and each job re-run on its own.
    fn run(&mut self, ctx: &mut OpCtx<'_>) -> bool;
}

/// A queued operation.
trait Job: Run + Send {
    /// Reply once the transaction committed (`Ok`) or failed (`Err`).
    fn finish(self: Box<Self>, commit: Result<(), &BrokerError>);
}

/// A leading caller's operation: its result is read in place.
struct InlineJob<T, F> {
    op: F,
    result: Option<BrokerResult<T>>,
}

impl<T, F> Run for InlineJob<T, F>
where
    F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T>,
{
    fn run(&mut self, ctx: &mut OpCtx<'_>) -> bool {
        let result = (self.op)(ctx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }
}

/// An operation sent to the writer thread: run as an [`InlineJob`], its
/// result sent back once the group committed.
struct TypedJob<T, F> {
    job: InlineJob<T, F>,
    reply: oneshot::Sender<BrokerResult<T>>,
}

impl<T, F> Run for TypedJob<T, F>
where
    F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T>,
{
    fn run(&mut self, ctx: &mut OpCtx<'_>) -> bool {
        self.job.run(ctx)
    }
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T> + Send + 'static,
{
    fn finish(self: Box<Self>, commit: Result<(), &BrokerError>) {
        let TypedJob {
            job: InlineJob { op, result },
            reply: tx,
        } = *self;
        // The operation (and what it captured) goes before the reply: a
        // caller that shares its input with it (`Arc`) then holds the last
        // reference and frees it on its own thread, not on this one, which
        // every write of the store waits for (freeing a bulk enqueue's
        // envelopes, allocated by other threads, took this one's time).
        drop(op);
        let reply = match (commit, result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(copy_error(e)),
            (Ok(()), None) => Err(BrokerError::new(
                BrokerErrorKind::Other,
                "internal error: operation was not run",
            )),
        };
        let _ = tx.send(reply);
    }
}

fn copy_error(e: &BrokerError) -> BrokerError {
    BrokerError::new(e.kind, e.message.clone())
}

/// What the writer thread and leading callers share.
#[derive(Debug)]
struct Shared {
    /// The write connection. Held by the writer thread for a group (and
    /// while it gathers one), or by a leading caller for its transaction.
    conn: Mutex<Connection>,
    env: WriterEnv,
    /// Operations sent to the writer thread and not yet taken into a group.
    queued: AtomicUsize,
    /// Operations in the writer thread's last group: more than one means
    /// callers are concurrent, and then they leave every commit to the
    /// writer thread so that they share them.
    last_group: AtomicUsize,
    /// Groups the writer thread has run (what tests observe).
    groups: AtomicUsize,
}

impl Shared {
    /// The connection, waiting for a leading caller or the writer thread.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle to the writer.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    tx: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start the writer thread on `conn`.
    pub(crate) fn start(conn: Connection, env: WriterEnv) -> Result<Self, BrokerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            env,
            queued: AtomicUsize::new(0),
            last_group: AtomicUsize::new(0),
            groups: AtomicUsize::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("sealq-sqlite-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || writer_loop(&shared, &rx)
            })
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Other,
                    "cannot start the SQLite writer thread",
                )
                .with_source(e)
            })?;
        Ok(Self {
            shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Groups the writer thread has run so far.
    #[cfg(test)]
    pub(crate) fn groups_run(&self) -> usize {
        self.shared.groups.load(Ordering::Relaxed)
    }

    fn stopped(&self) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Unavailable,
            format!(
                "the SQLite writer thread for `{}` has stopped; reopen the broker",
                self.shared.env.path.display()
            ),
        )
    }

    /// Run `op` in the next group transaction and return its result once committed.
    pub(crate) async fn call<T, F>(&self, op: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            job: InlineJob { op, result: None },
            reply,
        });
        let tx = self.tx.as_ref().ok_or_else(|| self.stopped())?;
        // Counted before it is sent, so that a caller never sees the
        // writer idle while an operation is on its way to it.
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if tx.send(job).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(self.stopped());
        }
        rx.await.map_err(|_| self.stopped())?
    }

    /// Like [`Writer::call`], but a caller that finds the writer idle runs
    /// `op` in a transaction of its own on its own thread (see the module
    /// documentation); otherwise it queues like [`Writer::call`]. Either way
    /// the result comes once the commit is durable.
    pub(crate) async fn call_leading<T, F>(&self, op: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T> + Send + 'static,
    {
        match self.lead(op) {
            Ok(result) => result,
            Err(op) => self.call(op).await,
        }
    }

    /// Run `op` here if the writer is idle; `Err(op)` when it is not (or
    /// this thread must not block).
    fn lead<T, F>(&self, op: F) -> Result<BrokerResult<T>, F>
    where
        F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T>,
    {
        let shared = &*self.shared;
        let Some(block) = blocking_here() else {
            return Err(op);
        };
        // Once the WAL is due for work (its restart checkpoint, or growing
        // the file once), queue: the writer thread does it after the next
        // group (a checkpoint after every group until it succeeds), which a
        // leading caller would keep delaying.
        if self.tx.is_none()
            || shared.last_group.load(Ordering::Relaxed) > 1
            || shared.queued.load(Ordering::SeqCst) != 0
            || shared.env.wal.work_due()
        {
            return Err(op);
        }
        let conn = match shared.conn.try_lock() {
            Ok(conn) => conn,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(op),
        };
        let mut job = InlineJob { op, result: None };
        let outcome = block.run(|| {
            run_jobs(
                &conn,
                &shared.env,
                std::iter::once(&mut job as &mut dyn Run),
            )
        });
        drop(conn);
        shared.env.wal.note_commit(1);
        Ok(match outcome {
            Ok(wake) => {
                if wake {
                    shared.env.wake.signal();
                }
                job.result.unwrap_or_else(not_run)
            }
            Err(Abort::Op) => job.result.unwrap_or_else(not_run),
            Err(Abort::Db(e)) => Err(e),
        })
    }
}

/// How the calling thread may block for a transaction.
#[derive(Clone, Copy)]
enum Blocking {
    /// A worker of a multi-thread runtime (or its `block_on`): hand the
    /// runtime's other tasks to another thread while blocking.
    InPlace,
    /// Not inside a tokio runtime: blocking stalls nothing else.
    Direct,
}

impl Blocking {
    fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            Self::InPlace => tokio::task::block_in_place(f),
            Self::Direct => f(),
        }
    }
}

/// `None` on a current-thread runtime: blocking its only thread for a
/// commit would stall every other task, so such callers queue.
fn blocking_here() -> Option<Blocking> {
    match tokio::runtime::Handle::try_current() {
        Err(_) => Some(Blocking::Direct),
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Some(Blocking::InPlace)
        }
        Ok(_) => None,
    }
}

fn not_run<T>() -> BrokerResult<T> {
    Err(BrokerError::new(
        BrokerErrorKind::Other,
        "internal error: operation was not run",
    ))
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer_loop(shared: &Shared, rx: &Receiver<Box<dyn Job>>) {
    let env = &shared.env;
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(env.max_group);
    let mut done: Vec<Done> = Vec::with_capacity(env.max_group);
    // Size of the last group: that many callers were just answered, and
    // those that call again send their next operation within microseconds.
    let mut last = 1;
    // How long the last group took (transaction and commit).
    let mut took = Duration::ZERO;
    while let Ok(first) = rx.recv() {
        // Waits while a leading caller commits; what is sent meanwhile
        // joins this group.
        let conn = shared.lock();
        take(shared, &mut group, first);
        while group.len() < env.max_group {
            match rx.try_recv() {
                Ok(job) => take(shared, &mut group, job),
                Err(_) => break,
            }
        }
        // The group holds at least `first`.
        gather(
            shared,
            rx,
            &mut group,
            last.min(env.max_group),
            (took / 2).min(GATHER),
        );
        last = group.len();
        shared.last_group.store(last, Ordering::Relaxed);
        shared.groups.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let wake = run_group(&conn, env, &mut group, &mut done);
        took = started.elapsed();
        // Released before the replies, so that a caller that finds the
        // writer idle on its next call can lead at once.
        drop(conn);
        reply(env, &mut done, wake);
        env.wal.note_commit(last);
        if env.wal.work_due() {
            // Every caller of the group has its reply: a checkpoint here
            // delays only callers that come meanwhile, once per
            // RESTART_PAGES frames (LONE_RESTART_PAGES for a lone caller's
            // small commits), so the WAL can restart (see the `checkpoint`
            // module); so does growing the WAL file, once per process (the
            // `wal_size` module).
            env.wal.do_work(&shared.lock(), &env.path);
        }
    }
    // Channel closed: the last handle is gone. The connection closes with
    // the last reference to `Shared`.
}

/// Add what the writer thread was sent to `group`.
fn take(shared: &Shared, group: &mut Vec<Box<dyn Job>>, job: Box<dyn Job>) {
    shared.queued.fetch_sub(1, Ordering::SeqCst);
    group.push(job);
}

/// The longest the writer waits for the callers of its last group to send
/// their next operation (see [`gather`]); it also waits at most half as long
/// as its last group took, so fast commits (`synchronous=NORMAL`, no fsync)
/// wait only a few microseconds.
const GATHER: Duration = Duration::from_micros(150);

/// Group commit with concurrent callers: the callers answered after the
/// last commit call again at about the same time, but the first of them
/// would otherwise start a transaction alone and the others queue behind its
/// fsync, so groups alternate between one operation and the rest. While
/// the group is smaller than the last one, wait up to `wait` for more.
/// A lone caller (last group of one) never waits; when callers go away the
/// wait times out once and the next group is smaller.
fn gather(
    shared: &Shared,
    rx: &Receiver<Box<dyn Job>>,
    group: &mut Vec<Box<dyn Job>>,
    want: usize,
    wait: Duration,
) {
    if group.len() >= want {
        return;
    }
    let deadline = std::time::Instant::now() + wait;
    while group.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(job) => take(shared, group, job),
            Err(_) => break,
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// A job whose transaction ended, and the transaction-level error to reply
/// with instead of its own result (`None`: its own result, an error when the
/// job itself failed).
type Done = (Box<dyn Job>, Option<BrokerError>);

/// Run `group`, moving every job to `done` once its transaction ended;
/// `true` when a commit made work ready. The caller replies (see [`reply`])
/// after releasing the connection.
fn run_group(
    conn: &Connection,
    env: &WriterEnv,
    group: &mut Vec<Box<dyn Job>>,
    done: &mut Vec<Done>,
) -> bool {
    // Fast path: the whole group in one transaction, no savepoints (a
    // savepoint copies every page it touches into a sub-journal, which cost
    // more than the operations themselves). Operations fail only on SQLite
    // errors, rarely; then the group is rolled back and each job re-run in a
    // transaction of its own, so one failure never takes the others down.
    let single = group.len() == 1;
    match run_jobs(
        conn,
        env,
        group.iter_mut().map(|j| &mut **j as &mut dyn Run),
    ) {
        Ok(wake) => {
            done.extend(group.drain(..).map(|job| (job, None)));
            wake
        }
        Err(abort) if single => {
            done.extend(group.drain(..).map(|job| (job, abort.error())));
            false
        }
        Err(_) => {
            let mut any = false;
            for mut job in group.drain(..) {
                match run_jobs(conn, env, std::iter::once(&mut *job as &mut dyn Run)) {
                    Ok(wake) => {
                        any |= wake;
                        done.push((job, None));
                    }
                    Err(abort) => done.push((job, abort.error())),
                }
            }
            any
        }
    }
}

/// Reply to every job of `done`; then wake waiting workers if `wake`.
fn reply(env: &WriterEnv, done: &mut Vec<Done>, wake: bool) {
    for (job, error) in done.drain(..) {
        job.finish(error.as_ref().map_or(Ok(()), Err));
    }
    if wake {
        env.wake.signal();
    }
}

/// Why a transaction was rolled back.
enum Abort {
    /// An operation failed; the job holds its own error.
    Op,
    /// SQLite failed to begin or commit.
    Db(BrokerError),
}

impl Abort {
    /// The error to reply with instead of the job's own result.
    fn error(&self) -> Option<BrokerError> {
        match self {
            // Its own result is the error it reports.
            Self::Op => None,
            Self::Db(e) => Some(copy_error(e)),
        }
    }
}

/// Run `jobs` in one transaction: `Ok(wake)` after a commit; otherwise the
/// transaction is rolled back and the reason returned.
fn run_jobs<'a>(
    conn: &Connection,
    env: &WriterEnv,
    jobs: impl Iterator<Item = &'a mut dyn Run>,
) -> Result<bool, Abort> {
    let path = &env.path;
    if !conn.is_autocommit() {
        // A panic in an operation left its transaction open.
        let _ = exec(conn, "ROLLBACK");
    }
    retry_busy(path, "starting a write transaction", env.busy, || {
        exec(conn, "BEGIN IMMEDIATE")
    })
    .map_err(Abort::Db)?;
    let mut wake = false;
    let mut outcome = Ok(());
    let mut txn_tasks = 0;
    for job in jobs {
        let mut ctx = OpCtx {
            conn,
            now: env.clock.now_ms(),
            wake: false,
            env,
            txn_tasks,
        };
        let ok = job.run(&mut ctx);
        txn_tasks = ctx.txn_tasks;
        if ok {
            wake |= ctx.wake;
        } else {
            outcome = Err(Abort::Op);
            break;
        }
    }
    if outcome.is_ok() {
        outcome =
            retry_busy(path, "committing", env.busy, || exec(conn, "COMMIT")).map_err(Abort::Db);
    }
    match outcome {
        Ok(()) => Ok(wake),
        Err(abort) => {
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            if let Abort::Db(e) = &abort {
                tracing::warn!(path = %path.display(), error = %e, "SQLite transaction failed");
            }
            Err(abort)
        }
    }
}

#[cfg(test)]
mod tests;
