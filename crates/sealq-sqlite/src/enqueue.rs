//! Enqueue: storing a batch of new tasks, run by the writer thread inside a
//! group transaction (see [`crate::writer`]).
//!
//! Each task gets one of four results, decided in batch order exactly as if
//! the tasks were stored one at a time: `IdExists` (its id is in the replay
//! memory, or already stored, or earlier in the batch), `Duplicate` (its
//! unique key is held by a live task), `QueueFull` (its queue is capped and
//! has no room left), else `Enqueued`.
//!
//! **Two paths, one result.** A task with a unique key, or for a capped
//! queue, takes the row-at-a-time path (a few statements per task: the
//! replay memory probe, the unique key holder, the insert, the body, the
//! key). Runs of [`CHUNK`] consecutive tasks without either (the common bulk
//! case; [`SMALL_CHUNK`] for what is left of a shorter run) take the chunk
//! path instead: one multi-row `INSERT … SELECT FROM
//! (VALUES …)` for the `tasks` rows, which skips in the same statement an id
//! in the replay memory (`NOT EXISTS` in `completed_ids`) or already stored
//! (`ON CONFLICT (id) DO NOTHING`), and one multi-row insert of the bodies.
//! Such tasks read nothing another task of the batch writes except ids, so
//! storing them a chunk at a time gives the results row-at-a-time storing
//! gives; the chunk path knows the `seq` SQLite gives each row (the largest
//! stored plus one) and so which rows went in (see [`chunk`]: its
//! statements keep no statement journal since session 9). A statement run costs SQLite about as much as the b-tree work of a row:
//! the chunk path takes a third off the writer's instructions per task
//! (`docs/benchmarks.md`, "SQLite bulk enqueue, writer cost (issue 22),
//! session 7").

use std::collections::HashMap;
mod chunk;

use std::sync::{Arc, LazyLock};

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};
use sealq::broker::{BrokerResult, EnqueueResult, NewTask};
use sealq::{BrokerError, BrokerErrorKind};

use crate::codec::{encode_meta, id_blob, id_from_row, ms_to_sql};
use crate::error::map_err;
use crate::schema::{READY_CONDITION, WRITER_CACHE_KIB};
use crate::writer::OpCtx;
use chunk::{CHUNK, SMALL_CHUNK};

/// One task's body.
const INSERT_BODY_SQL: &str = "INSERT INTO task_bodies (seq, envelope, meta) VALUES (?1, ?2, ?3)";

/// Encode each task's metadata for the `meta` column ([`enqueue`] takes
/// them): done by the caller, before the batch reaches the writer thread,
/// which every write of the store waits for.
pub(crate) fn encode_metas(tasks: &[NewTask]) -> BrokerResult<Vec<Vec<u8>>> {
    tasks
        .iter()
        .map(|t| {
            encode_meta(&t.meta).map_err(|e| {
                BrokerError::new(
                    BrokerErrorKind::Other,
                    format!("cannot encode the metadata of task {}: {e}", t.id),
                )
            })
        })
        .collect()
}

/// Whether an enqueue may run on its caller's thread
/// ([`crate::writer::Writer::call_leading`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lead {
    /// When the writer is idle: a one-call enqueue.
    IfIdle,
    /// Never: a bulk enqueue's batch, whose caller has more to do meanwhile.
    Never,
}

impl crate::SqliteBroker {
    /// Store a batch of new tasks in one write transaction (shared with
    /// other callers' operations when they are queued together).
    pub(crate) async fn store_tasks(
        &self,
        tasks: Vec<NewTask>,
        lead: Lead,
    ) -> BrokerResult<Vec<EnqueueResult>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        // Encoded here, on the caller's thread: the writer thread is shared.
        let metas = encode_metas(&tasks)?;
        // Shared with the operation, which the writer drops before it
        // replies: the batch is freed here, on the caller's thread.
        let batch = Arc::new((tasks, metas));
        let op_batch = Arc::clone(&batch);
        let op = move |ctx: &mut OpCtx<'_>| enqueue(ctx, &op_batch.0, &op_batch.1);
        let writer = &self.inner.writer;
        let results = match lead {
            Lead::IfIdle => writer.call_leading(op).await,
            Lead::Never => writer.call(op).await,
        };
        drop(batch);
        results
    }
}

/// A capped queue's cap and the room left in it ([`sealq::broker::Broker::set_max_depth`]).
type Room = Option<(u64, u64)>;

/// Store a batch; one result per task, in order. `metas` are the tasks'
/// encoded metadata ([`encode_metas`]), in the same order.
pub(crate) fn enqueue(
    ctx: &mut OpCtx<'_>,
    tasks: &[NewTask],
    metas: &[Vec<u8>],
) -> BrokerResult<Vec<EnqueueResult>> {
    let (conn, env) = (ctx.conn, ctx.env);
    let err = |e| map_err(&env.path, "enqueueing tasks", e);
    // Room left in capped queues, looked up once per queue of the batch
    // before any of it is stored: a task of another queue does not change
    // a queue's room, so this is the room the queue's first task would see.
    // `slot[i]` indexes task i's queue in `rooms`.
    let mut rooms: Vec<Room> = Vec::new();
    let mut slot = Vec::with_capacity(tasks.len());
    {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut last: Option<(&str, usize)> = None;
        for t in tasks {
            let at = match last {
                Some((q, at)) if q == t.queue => at,
                _ => match index.get(t.queue.as_str()) {
                    Some(&at) => at,
                    None => {
                        rooms.push(room(conn, &t.queue).map_err(err)?);
                        index.insert(&t.queue, rooms.len() - 1);
                        rooms.len() - 1
                    }
                },
            };
            last = Some((&t.queue, at));
            slot.push(at);
        }
    }
    // A large batch gets room in the page cache for every page it writes
    // until the commit ([`bulk_cache_kib`]), with those of the batches
    // before it in the same transaction.
    ctx.txn_tasks = ctx.txn_tasks.saturating_add(tasks.len());
    if let Some(kib) = bulk_cache_kib(ctx.txn_tasks) {
        raise_cache_kib(conn, kib).map_err(err)?;
    }
    let (results, ready) =
        store_all(conn, ctx.now, tasks, metas, &mut rooms, &slot).map_err(err)?;
    ctx.wake |= ready;
    Ok(results)
}

/// The writer's page cache in KiB for a batch of `tasks` tasks, when larger
/// than its own ([`WRITER_CACHE_KIB`]): 1.5 KiB a task (what a 1 KiB task
/// takes in pages across its body, row and index entries), up to
/// [`BULK_CACHE_MAX_KIB`]. With its own 512 KiB a batch of 1,000 tasks
/// spilled most of its pages to the WAL before the commit, and as the cache
/// then held nothing clean but the pages the batch kept reading (the replay
/// memory's, the indexes' upper levels), SQLite evicted those first and read
/// them back from the WAL: about a thousand reads of 8 KiB per 20,000
/// tasks (`docs/benchmarks.md`, "SQLite bulk writer at session 9"). The
/// cache is raised, never lowered again ([`raise_cache_kib`]): giving the
/// pages back after each batch freed and allocated them again batch after
/// batch, on the writer thread (`perf`). Workers, whose batches are small,
/// keep the small cache.
fn bulk_cache_kib(tasks: usize) -> Option<u32> {
    let kib = u32::try_from(tasks.saturating_mul(3) / 2)
        .unwrap_or(u32::MAX)
        .saturating_add(WRITER_CACHE_KIB)
        .min(BULK_CACHE_MAX_KIB);
    (kib > 2 * WRITER_CACHE_KIB).then_some(kib)
}

/// The largest page cache a batch raises the writer's to, in KiB.
const BULK_CACHE_MAX_KIB: u32 = 16 * 1024;

/// Raise the write connection's page cache to `kib` KiB, if smaller.
fn raise_cache_kib(conn: &Connection, kib: u32) -> rusqlite::Result<()> {
    let now: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    // Negative: KiB; positive: pages (never set so by sealq).
    if now < 0 && now.unsigned_abs() >= u64::from(kib) {
        return Ok(());
    }
    conn.pragma_update(None, "cache_size", -i64::from(kib))
}

/// Store a batch: each task's result, and whether a stored task is ready now.
fn store_all(
    conn: &Connection,
    now: i64,
    tasks: &[NewTask],
    metas: &[Vec<u8>],
    rooms: &mut [Room],
    slot: &[usize],
) -> rusqlite::Result<(Vec<EnqueueResult>, bool)> {
    let mut store = Store {
        conn,
        now,
        next_seq: None,
        ready: false,
        stmts: Default::default(),
    };
    let mut results = Vec::with_capacity(tasks.len());
    // Tasks `run..i` need neither a unique key check nor a queue's room:
    // they are stored in chunks once the run ends.
    let mut run = 0;
    for (i, t) in tasks.iter().enumerate() {
        let room = rooms[slot[i]].as_mut();
        if t.unique.is_none() && room.is_none() {
            continue;
        }
        store.run(&tasks[run..i], &metas[run..i], &mut results)?;
        run = i + 1;
        results.push(store.one(t, &metas[i], room)?);
    }
    store.run(&tasks[run..], &metas[run..], &mut results)?;
    Ok((results, store.ready))
}

/// How many tasks wait in a queue (pending, scheduled or retry): through
/// `tasks_ready`, whose condition it repeats.
pub(crate) static WAITING_SQL: LazyLock<String> =
    LazyLock::new(|| format!("SELECT count(*) FROM tasks WHERE queue = ?1 AND {READY_CONDITION}"));

/// A capped queue's cap and room left, `None` when it is not capped.
fn room(conn: &Connection, queue: &str) -> rusqlite::Result<Room> {
    let cap: Option<i64> = conn
        .prepare_cached("SELECT max_depth FROM queue_limits WHERE queue = ?1")?
        .query_row([queue], |r| r.get(0))
        .optional()?;
    let Some(cap) = cap else {
        return Ok(None);
    };
    let n: i64 = conn
        .prepare_cached(&WAITING_SQL)?
        .query_row([queue], |r| r.get(0))?;
    Ok(Some((
        cap.max(0) as u64,
        cap.saturating_sub(n).max(0) as u64,
    )))
}

/// The state a new task is stored in.
fn state_at(t: &NewTask, now: i64) -> &'static str {
    if t.run_at_ms <= now {
        "pending"
    } else {
        "scheduled"
    }
}

/// Statements of one enqueue call, prepared (taken from the connection's
/// cache) when first used.
#[derive(Default)]
struct Stmts<'c> {
    completed: Option<CachedStatement<'c>>,
    holder: Option<CachedStatement<'c>>,
    insert: Option<CachedStatement<'c>>,
    body: Option<CachedStatement<'c>>,
    take_key: Option<CachedStatement<'c>>,
    /// The chunk path's statements: [`CHUNK`] rows, [`SMALL_CHUNK`] rows.
    chunk: [chunk::ChunkStmts<'c>; 2],
}

/// The statement in `slot`, prepared from `sql` on first use.
fn stmt<'s, 'c>(
    slot: &'s mut Option<CachedStatement<'c>>,
    conn: &'c Connection,
    sql: &str,
) -> rusqlite::Result<&'s mut CachedStatement<'c>> {
    if slot.is_none() {
        *slot = Some(conn.prepare_cached(sql)?);
    }
    Ok(slot.as_mut().expect("prepared above"))
}

/// A batch being stored.
struct Store<'c> {
    conn: &'c Connection,
    now: i64,
    /// The `seq`s the chunk path's next rows get, when known. Forgotten
    /// when a row is stored row at a time.
    next_seq: Option<chunk::NextSeq>,
    /// Whether a stored task is ready to run now.
    ready: bool,
    stmts: Stmts<'c>,
}

impl Store<'_> {
    /// Store one task row at a time; `room` is its queue's room when the
    /// queue is capped.
    fn one(
        &mut self,
        t: &NewTask,
        meta: &[u8],
        room: Option<&mut (u64, u64)>,
    ) -> rusqlite::Result<EnqueueResult> {
        let (conn, now, s) = (self.conn, self.now, &mut self.stmts);
        let id = id_blob(&t.id);
        if stmt(
            &mut s.completed,
            conn,
            "SELECT 1 FROM completed_ids WHERE id = ?1",
        )?
        .exists([id])?
        {
            return Ok(EnqueueResult::IdExists);
        }
        if let Some((key, _)) = &t.unique {
            let existing = stmt(
                &mut s.holder,
                conn,
                "SELECT u.task_id FROM unique_keys u JOIN tasks t ON t.id = u.task_id \
                 WHERE u.key = ?1 AND u.expires_at > ?2 \
                   AND t.state NOT IN ('completed', 'archived')",
            )?
            .query_row(params![key, now], |r| id_from_row(r, 0))
            .optional()?;
            if let Some(existing) = existing {
                return Ok(EnqueueResult::Duplicate { existing });
            }
        }
        if let Some((max_depth, 0)) = room.as_deref() {
            return Ok(EnqueueResult::QueueFull {
                max_depth: *max_depth,
            });
        }
        let state = state_at(t, now);
        let inserted = stmt(
            &mut s.insert,
            conn,
            "INSERT INTO tasks (id, queue, kind, subject_tag, max_retries, \
                                retention_ms, state, attempts, run_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            id,
            t.queue,
            t.kind,
            t.meta.subject_tag.as_ref().map(|s| s.0),
            i64::from(t.meta.max_retries),
            ms_to_sql(t.meta.retention_ms),
            state,
            t.run_at_ms,
            now,
        ])?;
        if inserted == 0 {
            return Ok(EnqueueResult::IdExists);
        }
        self.next_seq = None;
        stmt(&mut s.body, conn, INSERT_BODY_SQL)?.execute(params![
            conn.last_insert_rowid(),
            t.envelope,
            meta
        ])?;
        if let Some((key, ttl_ms)) = &t.unique {
            let expires = now.saturating_add(ms_to_sql(*ttl_ms));
            stmt(
                &mut s.take_key,
                conn,
                "INSERT INTO unique_keys (key, task_id, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET task_id = excluded.task_id, \
                                                 expires_at = excluded.expires_at",
            )?
            .execute(params![key, id, expires])?;
        }
        if let Some((_, left)) = room {
            *left -= 1;
        }
        self.ready |= state == "pending";
        Ok(EnqueueResult::Enqueued)
    }

    /// Store a run of tasks without unique keys, for uncapped queues:
    /// [`CHUNK`] at a time, then [`SMALL_CHUNK`] at a time, the rest row at
    /// a time (each row there costs about three times a chunk's row). One
    /// full chunk fewer when that leaves fewer rows for the last part: 64
    /// tasks go as three short chunks and four rows, not as one full chunk
    /// and fourteen rows. Their results are appended to `out`.
    fn run(
        &mut self,
        tasks: &[NewTask],
        metas: &[Vec<u8>],
        out: &mut Vec<EnqueueResult>,
    ) -> rusqlite::Result<()> {
        let split = full_chunks(tasks.len()) * CHUNK;
        self.chunks_of(CHUNK, &tasks[..split], &metas[..split], out)?;
        self.rest(&tasks[split..], &metas[split..], out)
    }

    /// Store `tasks` (a multiple of `size` of them) `size` at a time.
    fn chunks_of(
        &mut self,
        size: usize,
        tasks: &[NewTask],
        metas: &[Vec<u8>],
        out: &mut Vec<EnqueueResult>,
    ) -> rusqlite::Result<()> {
        for (ts, ms) in tasks.chunks_exact(size).zip(metas.chunks_exact(size)) {
            self.chunk(ts, ms, out)?;
        }
        Ok(())
    }

    /// Store a run of tasks without unique keys, for uncapped queues:
    /// [`SMALL_CHUNK`] at a time, the rest row at a time; their results are
    /// appended to `out`.
    fn rest(
        &mut self,
        tasks: &[NewTask],
        metas: &[Vec<u8>],
        out: &mut Vec<EnqueueResult>,
    ) -> rusqlite::Result<()> {
        let chunked = tasks.len() / SMALL_CHUNK * SMALL_CHUNK;
        self.chunks_of(SMALL_CHUNK, &tasks[..chunked], &metas[..chunked], out)?;
        for (t, meta) in tasks[chunked..].iter().zip(&metas[chunked..]) {
            let r = self.one(t, meta, None)?;
            out.push(r);
        }
        Ok(())
    }
}

/// How many full chunks a run of `len` tasks is stored in (see
/// [`Store::run`]): one fewer than fit when that leaves fewer tasks to store
/// row at a time.
fn full_chunks(len: usize) -> usize {
    let rows_left = |rest: usize| rest % SMALL_CHUNK;
    let (full, rest) = (len / CHUNK, len % CHUNK);
    if full > 0 && rows_left(rest + CHUNK) < rows_left(rest) {
        full - 1
    } else {
        full
    }
}

/// Whether an id occurs twice among `tasks`.
fn has_repeated_id(tasks: &[NewTask]) -> bool {
    tasks
        .iter()
        .enumerate()
        .any(|(i, t)| tasks[i + 1..].iter().any(|u| u.id == t.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22 (bulk enqueue): a run is split into full chunks, short
    /// chunks and rows so that the fewest tasks go row at a time.
    #[test]
    fn bulk_enqueue_runs_split_into_full_and_short_chunks() {
        let split = |len: usize| {
            let full = full_chunks(len);
            let rest = len - full * CHUNK;
            (full, rest / SMALL_CHUNK, rest % SMALL_CHUNK)
        };
        assert_eq!(split(1000), (20, 0, 0));
        assert_eq!(split(64), (0, 3, 4), "not one full chunk and 14 rows");
        assert_eq!(split(60), (0, 3, 0));
        assert_eq!(split(70), (1, 1, 0));
        assert_eq!(split(105), (2, 0, 5));
        assert_eq!(split(125), (2, 1, 5));
        assert_eq!(split(49), (0, 2, 9));
        assert_eq!(split(3), (0, 0, 3));
        assert_eq!(split(0), (0, 0, 0));
    }

    /// Issue 22 (bulk enqueue), session 10: a bulk enqueue's batch is
    /// stored by the writer thread even when the writer is idle, where a
    /// one-call enqueue leads (stores on its caller's thread, no group of
    /// the writer thread): the bulk enqueue's task goes on sealing its next
    /// batch meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_enqueue_batches_are_stored_by_the_writer_thread() {
        use sealq::broker::Broker as _;

        let dir = tempfile::tempdir().unwrap();
        let broker = crate::SqliteBroker::open(dir.path().join("q.db")).unwrap();
        let writer = &broker.inner.writer;
        let task = || sealq::testkit::fixtures::task_at("q", 0, 0);
        let before = writer.groups_run();
        for _ in 0..3 {
            let r = broker.enqueue(vec![task()]).await.unwrap();
            assert_eq!(r, vec![EnqueueResult::Enqueued]);
        }
        assert_eq!(
            writer.groups_run(),
            before,
            "one-call enqueues on an idle writer lead"
        );
        for n in 1..=3 {
            let r = broker
                .enqueue_bulk_batch((0..100).map(|_| task()).collect())
                .await
                .unwrap();
            assert_eq!(r, vec![EnqueueResult::Enqueued; 100]);
            assert_eq!(writer.groups_run(), before + n, "batch {n}");
        }
        assert_eq!(broker.stats().await.unwrap()[0].pending, 303);
    }

    /// Issue 22, session 9: a large batch raises the writer's page cache to
    /// about 1.5 KiB a task, up to a bound; a worker's small batches keep
    /// the connection's own.
    #[test]
    fn bulk_enqueue_large_batches_get_room_in_the_page_cache() {
        assert_eq!(bulk_cache_kib(1), None);
        assert_eq!(bulk_cache_kib(64), None);
        assert_eq!(bulk_cache_kib(341), None);
        assert_eq!(bulk_cache_kib(342), Some(WRITER_CACHE_KIB + 513));
        assert_eq!(bulk_cache_kib(1000), Some(WRITER_CACHE_KIB + 1500));
        assert_eq!(bulk_cache_kib(100_000), Some(BULK_CACHE_MAX_KIB));
        assert_eq!(bulk_cache_kib(usize::MAX), Some(BULK_CACHE_MAX_KIB));
    }

    /// Issue 22, session 9: a large batch raises the writer's page cache,
    /// which stays raised (a smaller batch leaves it), and every task of
    /// the batches is stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_enqueue_large_batch_raises_the_cache_once() {
        use std::time::Duration;

        use crate::writer::{Writer, WriterEnv};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let conn = crate::schema::open_writer(
            &path,
            crate::Synchronous::Full,
            Duration::from_secs(5),
            crate::schema::NEW_DATABASE_PAGE_SIZE,
        )
        .unwrap();
        let w = Writer::start(conn, WriterEnv::for_tests(path)).unwrap();
        let mut caches = Vec::new();
        for n in [1000, 400, 20] {
            let tasks: Vec<NewTask> = (0..n)
                .map(|_| sealq::testkit::fixtures::task_at("q", 0, 0))
                .collect();
            let metas = encode_metas(&tasks).unwrap();
            let (results, cache) = w
                .call(move |ctx| {
                    let results = enqueue(ctx, &tasks, &metas)?;
                    let cache = ctx
                        .conn
                        .query_row("PRAGMA cache_size", [], |r| r.get::<_, i64>(0))
                        .unwrap();
                    Ok((results, cache))
                })
                .await
                .unwrap();
            assert_eq!(results, vec![EnqueueResult::Enqueued; n]);
            caches.push(cache);
        }
        let big = -i64::from(WRITER_CACHE_KIB + 1500);
        assert_eq!(caches, [big, big, big]);
        let stored: i64 = w
            .call(|ctx| {
                Ok(ctx
                    .conn
                    .query_row(
                        "SELECT count(*) FROM tasks JOIN task_bodies USING (seq)",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap())
            })
            .await
            .unwrap();
        assert_eq!(stored, 1420);
    }
}
