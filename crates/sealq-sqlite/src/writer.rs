//! The writer thread and group commit.
//!
//! One thread owns the only write connection. Every mutating operation is sent
//! to it over a channel with a oneshot reply. The thread takes everything
//! queued (up to [`crate::SqliteOptions::max_group`] operations) and runs it in
//! ONE `BEGIN IMMEDIATE … COMMIT` transaction, then replies to all of them: one
//! fsync is shared by every operation in the group, so throughput grows with
//! concurrency instead of being capped at one commit per operation.
//!
//! Operations run back to back without savepoints (a savepoint copies every
//! page it touches, which cost more than the operations). If one fails, the
//! whole group is rolled back and every operation re-run in a transaction of
//! its own, so the failing one gets its error and the others still commit
//! (operations are re-runnable closures for this reason). No reply is sent
//! before the commit: an acknowledged operation is durable (as
//! durable as [`crate::Synchronous`] makes it).
//!
//! The thread ends when the last [`Writer`] handle is dropped (its channel
//! closes); dropping the handle waits for the thread, so the file is closed
//! when the last broker handle is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
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

/// What the writer thread knows besides its connection.
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
}

/// A queued operation, type-erased.
trait Job: Send {
    /// Run inside the transaction; `false` when it failed. May run twice: a
    /// group that fails is rolled back and each job re-run on its own.
    fn run(&mut self, ctx: &mut OpCtx<'_>) -> bool;
    /// Reply once the transaction committed (`Ok`) or failed (`Err`).
    fn finish(self: Box<Self>, commit: Result<(), &BrokerError>);
}

struct TypedJob<T, F> {
    op: F,
    result: Option<BrokerResult<T>>,
    reply: oneshot::Sender<BrokerResult<T>>,
}

impl<T, F> Job for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T> + Send + 'static,
{
    fn run(&mut self, ctx: &mut OpCtx<'_>) -> bool {
        let result = (self.op)(ctx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), &BrokerError>) {
        let reply = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(copy_error(e)),
            (Ok(()), None) => Err(BrokerError::new(
                BrokerErrorKind::Other,
                "internal error: operation was not run",
            )),
        };
        let _ = self.reply.send(reply);
    }
}

fn copy_error(e: &BrokerError) -> BrokerError {
    BrokerError::new(e.kind, e.message.clone())
}

/// Handle to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Writer {
    /// Start the writer thread on `conn`.
    pub(crate) fn start(conn: Connection, env: WriterEnv) -> Result<Self, BrokerError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = env.path.clone();
        let thread = std::thread::Builder::new()
            .name("sealq-sqlite-writer".into())
            .spawn(move || writer_loop(conn, env, rx))
            .map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Other,
                    "cannot start the SQLite writer thread",
                )
                .with_source(e)
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            path,
        })
    }

    /// Run `op` in the next group transaction and return its result once committed.
    pub(crate) async fn call<T, F>(&self, op: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut OpCtx<'_>) -> BrokerResult<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob {
            op,
            result: None,
            reply,
        });
        let stopped = || {
            BrokerError::new(
                BrokerErrorKind::Unavailable,
                format!(
                    "the SQLite writer thread for `{}` has stopped; reopen the broker",
                    self.path.display()
                ),
            )
        };
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn writer_loop(conn: Connection, env: WriterEnv, rx: Receiver<Box<dyn Job>>) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(env.max_group);
    // Size of the last group: that many callers were just answered, and
    // those that call again send their next operation within microseconds.
    let mut last = 1;
    // How long the last group took (transaction and commit).
    let mut took = Duration::ZERO;
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < env.max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        gather(
            &rx,
            &mut group,
            last.min(env.max_group),
            (took / 2).min(GATHER),
        );
        last = group.len();
        let started = std::time::Instant::now();
        run_group(&conn, &env, &mut group);
        took = started.elapsed();
        // Every caller of the group has its reply: a checkpoint here delays
        // only the callers queued next, once per RESTART_PAGES frames, so
        // the WAL can restart (see the `checkpoint` module).
        env.wal.restart_if_large(&conn, &env.path);
    }
    // Channel closed: the last handle is gone. The connection closes here.
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
fn gather(rx: &Receiver<Box<dyn Job>>, group: &mut Vec<Box<dyn Job>>, want: usize, wait: Duration) {
    if group.len() >= want {
        return;
    }
    let deadline = std::time::Instant::now() + wait;
    while group.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_group(conn: &Connection, env: &WriterEnv, group: &mut Vec<Box<dyn Job>>) {
    // Fast path: the whole group in one transaction, no savepoints (a
    // savepoint copies every page it touches into a sub-journal, which cost
    // more than the operations themselves). Operations fail only on SQLite
    // errors, rarely; then the group is rolled back and each job re-run in a
    // transaction of its own, so one failure never takes the others down.
    let single = group.len() == 1;
    match run_jobs(conn, env, group.iter_mut()) {
        Ok(wake) => {
            for job in group.drain(..) {
                job.finish(Ok(()));
            }
            if wake {
                env.wake.signal();
            }
        }
        Err(abort) if single => {
            for job in group.drain(..) {
                finish_aborted(job, &abort);
            }
        }
        Err(_) => {
            for mut job in group.drain(..) {
                match run_jobs(conn, env, std::iter::once(&mut job)) {
                    Ok(wake) => {
                        job.finish(Ok(()));
                        if wake {
                            env.wake.signal();
                        }
                    }
                    Err(abort) => finish_aborted(job, &abort),
                }
            }
        }
    }
}

/// Why a transaction was rolled back.
enum Abort {
    /// An operation failed; the job holds its own error.
    Op,
    /// SQLite failed to begin or commit.
    Db(BrokerError),
}

/// Reply to a job whose transaction was rolled back.
fn finish_aborted(job: Box<dyn Job>, abort: &Abort) {
    match abort {
        // Its own result is the error it reports; `Ok` here means "no
        // transaction-level error to substitute".
        Abort::Op => job.finish(Ok(())),
        Abort::Db(e) => job.finish(Err(e)),
    }
}

/// Run `jobs` in one transaction: `Ok(wake)` after a commit; otherwise the
/// transaction is rolled back and the reason returned.
fn run_jobs<'a>(
    conn: &Connection,
    env: &WriterEnv,
    jobs: impl Iterator<Item = &'a mut Box<dyn Job>>,
) -> Result<bool, Abort> {
    let path = &env.path;
    retry_busy(path, "starting a write transaction", env.busy, || {
        exec(conn, "BEGIN IMMEDIATE")
    })
    .map_err(Abort::Db)?;
    let mut wake = false;
    let mut outcome = Ok(());
    for job in jobs {
        let mut ctx = OpCtx {
            conn,
            now: env.clock.now_ms(),
            wake: false,
            env,
        };
        if job.run(&mut ctx) {
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
