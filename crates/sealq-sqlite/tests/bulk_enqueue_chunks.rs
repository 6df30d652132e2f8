//! Issue 22, "bulk enqueue of sealed tasks faster than any embedded peer's
//! batch API": a batch's tasks without a unique key, for uncapped queues,
//! are stored twenty at a time with multi-row statements, and schema
//! migration 6 leaves pending tasks out of `tasks_queue_state`. These tests
//! hold that path to the results and rows of storing the same tasks one at
//! a time (one enqueue call each, which stores row at a time), and the
//! migrated store to its stats and listings, on real SQLite files.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sealq::broker::{
    Ack, AckResult, Broker, DequeueRequest, EnqueueResult, ListQuery, NewTask, Outcome,
};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::{subject, task_at};
use sealq::{Clock, TaskId, TaskState};
use sealq_sqlite::{SqliteBroker, SqliteOptions};

fn open(path: &std::path::Path, clock: &Arc<ManualClock>) -> SqliteBroker {
    SqliteBroker::open_with(path, SqliteOptions::with_clock(clock.clone())).expect("open")
}

fn req(queue: &str, max: usize) -> DequeueRequest {
    DequeueRequest {
        queues: vec![queue.into()],
        max,
        lease: Duration::from_secs(300),
        worker: "t".into(),
    }
}

/// What a store holds before the batch: a completed id, a stored id, a
/// deleted id, a held unique key, and a capped queue with room for one.
struct Before {
    completed: NewTask,
    stored: NewTask,
    deleted: NewTask,
    holder: NewTask,
    capped: NewTask,
}

impl Before {
    fn new(now: i64) -> Self {
        let mut holder = task_at("q", now, now);
        holder.unique = Some(("k1".into(), 3_600_000));
        Self {
            completed: task_at("q", now, now),
            stored: task_at("q", now, now),
            deleted: task_at("q", now, now),
            holder,
            capped: task_at("capped", now, now),
        }
    }

    async fn apply(&self, b: &SqliteBroker) {
        b.set_max_depth("capped", Some(2)).await.unwrap();
        b.enqueue(vec![self.completed.clone()]).await.unwrap();
        let l = b.dequeue(&req("q", 1)).await.unwrap().remove(0);
        assert_eq!(l.record.id, self.completed.id);
        let acked = b
            .ack(vec![Ack {
                lease: l.lease,
                outcome: Outcome::Complete { result: None },
            }])
            .await
            .unwrap();
        assert_eq!(acked, [AckResult::Applied]);
        for t in [&self.stored, &self.deleted, &self.holder, &self.capped] {
            let r = b.enqueue(vec![t.clone()]).await.unwrap();
            assert_eq!(r, [EnqueueResult::Enqueued]);
        }
        assert_eq!(b.delete(&[self.deleted.id]).await.unwrap(), 1);
    }
}

/// The batch: a chunk of new tasks; a chunk holding the completed, stored
/// and deleted ids, a scheduled task, a subject's task and another queue's;
/// unique keys (held before, new, repeated); the capped queue past its
/// room; a chunk with an id of the first chunk; a chunk holding an id
/// twice; a tail shorter than a chunk.
///
/// Each chunk is `n` tasks long: 20 (the short runs' statements, two such
/// chunks in a row being shorter than one of 50), or 50 (the full chunk).
fn batch(before: &Before, now: i64, n: usize) -> Vec<NewTask> {
    let new = |queue: &str| task_at(queue, now, now);
    let mut out: Vec<NewTask> = (0..n).map(|_| new("q")).collect();
    let mut mixed: Vec<NewTask> = (0..n).map(|_| new("q")).collect();
    mixed[2] = before.completed.clone();
    mixed[5] = before.stored.clone();
    mixed[9] = before.deleted.clone();
    mixed[14].run_at_ms = now + 60_000;
    mixed[15].meta.subject_tag = Some(subject(7));
    mixed[16].queue = "other".into();
    out.extend(mixed);
    for key in ["k1", "k2", "k2"] {
        let mut t = new("q");
        t.unique = Some((key.into(), 3_600_000));
        out.push(t);
    }
    out.extend((0..4).map(|_| new("capped")));
    let mut late: Vec<NewTask> = (0..n).map(|_| new("q")).collect();
    late[3] = out[7].clone();
    out.extend(late);
    let mut twice: Vec<NewTask> = (0..n).map(|_| new("q")).collect();
    twice[11] = twice[4].clone();
    out.extend(twice);
    out.extend((0..5).map(|_| new("q")));
    out
}

/// The batch's results, position by position, as storing row at a time
/// gives them (chunks of `n` tasks, [`batch`]).
fn expected(batch: &[NewTask], before: &Before, k2: TaskId, n: usize) -> Vec<EnqueueResult> {
    use EnqueueResult::*;
    let mut out = vec![Enqueued; batch.len()];
    // The completed, stored and deleted ids; the id of the first chunk
    // again; the id twice in a chunk.
    for i in [n + 2, n + 5, n + 9, 2 * n + 10, 3 * n + 18] {
        out[i] = IdExists;
    }
    out[2 * n] = Duplicate {
        existing: before.holder.id,
    };
    out[2 * n + 2] = Duplicate { existing: k2 };
    for r in &mut out[2 * n + 4..2 * n + 7] {
        *r = QueueFull { max_depth: 2 };
    }
    out
}

/// Issue 22: a batch mixing new ids, completed, stored and deleted ids, an
/// id repeated in a chunk, unique keys and a capped queue gets, task by
/// task, the results and stored rows of enqueueing its tasks one at a time.
/// Its chunks are 20 tasks long: the statements of the short runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_chunk_mixing_ids_keys_and_caps_matches_row_at_a_time() {
    mixed_batch_matches_row_at_a_time(20).await;
}

/// The same with chunks of 50 tasks, the full chunk's statements (session 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_full_chunks_mixing_ids_keys_and_caps_match_row_at_a_time() {
    mixed_batch_matches_row_at_a_time(50).await;
}

async fn mixed_batch_matches_row_at_a_time(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let now = clock.now_ms();
    let before = Before::new(now);
    let tasks = batch(&before, now, n);
    assert_eq!(tasks.len(), 4 * n + 12);

    let bulk = open(&dir.path().join("bulk.db"), &clock);
    before.apply(&bulk).await;
    let got = bulk.enqueue(tasks.clone()).await.unwrap();

    let single = open(&dir.path().join("single.db"), &clock);
    before.apply(&single).await;
    let mut one_by_one = Vec::new();
    for t in &tasks {
        one_by_one.extend(single.enqueue(vec![t.clone()]).await.unwrap());
    }

    assert_eq!(got, expected(&tasks, &before, tasks[2 * n + 1].id, n));
    assert_eq!(got, one_by_one, "chunked and row at a time differ");
    for t in &tasks {
        let (a, b) = (
            bulk.get(t.id).await.unwrap(),
            single.get(t.id).await.unwrap(),
        );
        assert_eq!(a.is_some(), b.is_some(), "{}", t.id);
        let (Some(a), Some(b)) = (a, b) else {
            continue; // refused, or deleted before
        };
        assert_eq!(a.envelope, b.envelope, "{}", t.id);
        assert_eq!(
            (&a.queue, &a.kind, a.state, a.run_at_ms, &a.meta),
            (&b.queue, &b.kind, b.state, b.run_at_ms, &b.meta),
            "{}",
            t.id
        );
    }
    // Each stored task carries its own envelope (bodies matched to rows).
    for (t, r) in tasks.iter().zip(&got) {
        if *r == EnqueueResult::Enqueued {
            let rec = bulk.get(t.id).await.unwrap().unwrap();
            assert_eq!(rec.envelope, t.envelope, "{}", t.id);
            assert_eq!(rec.run_at_ms, t.run_at_ms);
            assert_eq!(rec.meta, t.meta);
        }
    }
    assert_eq!(bulk.stats().await.unwrap(), single.stats().await.unwrap());
    // Dequeue hands out the same tasks, with their envelopes, in the same order.
    let a = bulk.dequeue(&req("q", 400)).await.unwrap();
    let b = single.dequeue(&req("q", 400)).await.unwrap();
    let ids = |v: &[sealq::broker::LeasedTask]| -> Vec<(TaskId, Vec<u8>)> {
        v.iter()
            .map(|l| (l.record.id, l.record.envelope.clone()))
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(
        a.len(),
        2 + n + (n - 5) + 1 + (n - 1) + (n - 1) + 5,
        "stored before, ready now"
    );
}

/// Issue 22: near the end of the `seq` range the chunk path hands its
/// rows to SQLite one at a time (which then picks free values itself), and
/// every task is stored with its own body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_chunk_near_the_last_seq_stores_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = ManualClock::starting_now();
    let now = clock.now_ms();
    let b = open(&path, &clock);
    let first = task_at("q", now, now);
    b.enqueue(vec![first.clone()]).await.unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "UPDATE task_bodies SET seq = 9223372036854775800; \
         UPDATE tasks SET seq = 9223372036854775800;",
    )
    .unwrap();
    drop(raw);
    // Two full chunks, a short run's chunk and five rows.
    let tasks: Vec<NewTask> = (0..125).map(|_| task_at("q", now, now)).collect();
    let got = b.enqueue(tasks.clone()).await.unwrap();
    assert_eq!(got, vec![EnqueueResult::Enqueued; 125]);
    for t in tasks.iter().chain([&first]) {
        let rec = b.get(t.id).await.unwrap().expect("stored");
        assert_eq!(rec.envelope, t.envelope, "{}", t.id);
    }
}

/// Issue 22: a batch stored by the chunk path wakes a waiting worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_chunk_wakes_a_waiting_worker() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let now = clock.now_ms();
    let b = Arc::new(open(&dir.path().join("q.db"), &clock));
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            b.wait_for_work(&["w".into()], Duration::from_secs(30))
                .await
                .unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks: Vec<NewTask> = (0..40).map(|_| task_at("w", now, now)).collect();
    assert_eq!(
        b.enqueue(tasks).await.unwrap(),
        vec![EnqueueResult::Enqueued; 40]
    );
    let waited = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("woken before the wait's own 30 s bound")
        .unwrap();
    assert!(waited < Duration::from_secs(20), "{waited:?}");
}

/// Issue 22, bulk enqueue: a version 5 store (`tasks_queue_state` over
/// every task) migrates to the partial index that leaves pending tasks
/// out, and its stats and listings by state read the same after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_a_version_5_store_migrates_tasks_queue_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let clock = ManualClock::starting_now();
    let now = clock.now_ms();
    let (before, listed) = {
        let b = open(&path, &clock);
        let mut tasks: Vec<NewTask> = (0..6).map(|_| task_at("p", now, now)).collect();
        tasks[4].run_at_ms = now + 3_600_000;
        tasks.push(task_at("o", now, now));
        b.enqueue(tasks).await.unwrap();
        let leased = b.dequeue(&req("p", 2)).await.unwrap();
        let acked = b
            .ack(vec![Ack {
                lease: leased[0].lease,
                outcome: Outcome::Complete { result: None },
            }])
            .await
            .unwrap();
        assert_eq!(acked, [AckResult::Applied]);
        let stats = b.stats().await.unwrap();
        let p = stats.iter().find(|s| s.queue == "p").unwrap();
        assert_eq!(
            (p.pending, p.scheduled, p.active, p.completed),
            (3, 1, 1, 1),
            "{p:?}"
        );
        let mut listed = Vec::new();
        for state in [TaskState::Pending, TaskState::Scheduled, TaskState::Active] {
            let q = ListQuery {
                queue: Some("p".into()),
                state: Some(state),
                ..ListQuery::default()
            };
            listed.push(b.list(&q).await.unwrap().len());
        }
        assert_eq!(listed, [3, 1, 1]);
        (stats, listed)
    };
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP INDEX tasks_queue_state; \
         CREATE INDEX tasks_queue_state ON tasks (queue, state); \
         PRAGMA user_version = 5",
    )
    .unwrap();
    drop(raw);
    let b = open(&path, &clock);
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
    let raw = Connection::open(&path).unwrap();
    let sql: String = raw
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks_queue_state'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("WHERE state != 'pending'"), "{sql}");
    assert_eq!(b.stats().await.unwrap(), before);
    let mut again = Vec::new();
    for state in [TaskState::Pending, TaskState::Scheduled, TaskState::Active] {
        let q = ListQuery {
            queue: Some("p".into()),
            state: Some(state),
            ..ListQuery::default()
        };
        again.push(b.list(&q).await.unwrap().len());
    }
    assert_eq!(again, listed);
}

/// The `tasks` columns of every stored task but its `seq`, by id.
fn task_columns(path: &std::path::Path) -> Vec<Vec<rusqlite::types::Value>> {
    let raw = Connection::open(path).unwrap();
    let mut stmt = raw
        .prepare(
            "SELECT id, queue, kind, subject_tag, max_retries, retention_ms, state, attempts, \
             run_at, updated_at, b.envelope, b.meta FROM tasks JOIN task_bodies b USING (seq) \
             ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| (0..12).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Issue 22, session 9: a chunk binds the queue, kind, subject tag, retry
/// limit and retention once when its tasks share them, and per task when
/// they do not; either way every column and body is the one storing the
/// tasks one at a time writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_chunks_of_shared_and_own_values_store_each_tasks_columns() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let now = clock.now_ms();
    // A shared chunk (some scheduled later), a chunk where each of the
    // values differs somewhere, and a short run of shared values.
    let mut tasks: Vec<NewTask> = (0..50).map(|_| task_at("q", now, now)).collect();
    for t in tasks.iter_mut().step_by(7) {
        t.run_at_ms = now + 60_000;
    }
    let mut own: Vec<NewTask> = (0..50).map(|_| task_at("q", now, now)).collect();
    for (i, t) in own.iter_mut().enumerate() {
        match i % 5 {
            0 => t.queue = format!("q{}", i % 3),
            1 => t.kind = format!("kind.{i}"),
            2 => t.meta.subject_tag = Some(subject(i as u8)),
            3 => t.meta.max_retries = i as u32,
            _ => t.meta.retention_ms = 1_000 * i as u64,
        }
    }
    tasks.extend(own);
    tasks.extend((0..20).map(|_| task_at("r", now, now)));

    let bulk_path = dir.path().join("bulk.db");
    let bulk = open(&bulk_path, &clock);
    assert_eq!(
        bulk.enqueue(tasks.clone()).await.unwrap(),
        vec![EnqueueResult::Enqueued; 120]
    );
    let single_path = dir.path().join("single.db");
    let single = open(&single_path, &clock);
    for t in &tasks {
        single.enqueue(vec![t.clone()]).await.unwrap();
    }
    drop((bulk, single));
    let got = task_columns(&bulk_path);
    assert_eq!(got.len(), 120);
    assert_eq!(got, task_columns(&single_path));
}

/// Issue 22, session 9: when `task_bodies` does not end where `tasks` does
/// (a body deleted by hand, or one left over), the chunk gives each body
/// its task's `seq` itself, and every task is stored with its own body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_chunk_gives_bodies_their_seq_when_the_tables_end_apart() {
    for damage in [
        "DELETE FROM task_bodies WHERE seq = (SELECT max(seq) FROM task_bodies)",
        "INSERT INTO task_bodies (seq, envelope, meta) VALUES (100000, x'00', x'80')",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let clock = ManualClock::starting_now();
        let now = clock.now_ms();
        let b = open(&path, &clock);
        b.enqueue((0..3).map(|_| task_at("q", now, now)).collect())
            .await
            .unwrap();
        Connection::open(&path)
            .unwrap()
            .execute_batch(damage)
            .unwrap();
        let tasks: Vec<NewTask> = (0..70).map(|_| task_at("q", now, now)).collect();
        assert_eq!(
            b.enqueue(tasks.clone()).await.unwrap(),
            vec![EnqueueResult::Enqueued; 70],
            "{damage}"
        );
        for t in &tasks {
            let rec = b.get(t.id).await.unwrap().expect("stored");
            assert_eq!(rec.envelope, t.envelope, "{damage}: {}", t.id);
            assert_eq!(rec.meta, t.meta, "{damage}: {}", t.id);
        }
        let raw = Connection::open(&path).unwrap();
        let unmatched: i64 = raw
            .query_row(
                "SELECT count(*) FROM tasks t WHERE t.seq > 3 AND NOT EXISTS \
                 (SELECT 1 FROM task_bodies b WHERE b.seq = t.seq)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unmatched, 0, "{damage}");
    }
}
