//! Behaviour specific to the SQLite broker: several instances (as several
//! processes would) on one file, damaged files, persistence, options, busy
//! locks, group-commit isolation, and replay detection.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, EnqueueResult, NewTask, Outcome};
use sealq::clock::{ManualClock, SharedClock};
use sealq::testkit::fixtures::task_at;
use sealq::{BrokerErrorKind, SystemClock, TaskState};
use sealq_sqlite::{SqliteBroker, SqliteOptions, Synchronous};

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

fn now() -> i64 {
    use sealq::Clock;
    SystemClock.now_ms()
}

fn task(queue: &str) -> NewTask {
    task_at(queue, now(), now())
}

fn open(path: &std::path::Path) -> SqliteBroker {
    SqliteBroker::open_with(path, SqliteOptions::with_clock(clock())).expect("open")
}

fn req(queue: &str, max: usize) -> DequeueRequest {
    DequeueRequest {
        queues: vec![queue.into()],
        max,
        lease: Duration::from_secs(300),
        worker: "t".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_flag_set_when_completed_id_is_pending_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let mc = ManualClock::starting_now();
    let broker = SqliteBroker::open_with(&path, SqliteOptions::with_clock(mc.clone())).unwrap();
    let t = task_at("r", mc_now(&mc), mc_now(&mc));
    let id = t.id;
    broker.enqueue(vec![t]).await.unwrap();
    let l = broker.dequeue(&req("r", 1)).await.unwrap().remove(0);
    assert!(!l.replayed);
    let res = broker
        .ack(vec![Ack {
            lease: l.lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .unwrap();
    assert_eq!(res, vec![AckResult::Applied]);

    // Someone with write access to the file flips the task back to pending.
    let raw = Connection::open(&path).unwrap();
    let n = raw
        .execute(
            "UPDATE tasks SET state = 'pending' WHERE id = ?1",
            [id.as_bytes()],
        )
        .unwrap();
    assert_eq!(n, 1);
    let again = broker.dequeue(&req("r", 1)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].record.id, id);
    assert!(again[0].replayed, "a completed id came back: replayed");
}

/// Finding 2: a completed task retained longer than the replay horizon
/// stays remembered while its row is stored, so flipping it back to pending
/// after the horizon (and a purge run) does not make it run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_2_a_completed_task_retained_past_the_replay_horizon_never_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let mc = ManualClock::starting_now();
    let mut opts = SqliteOptions::with_clock(mc.clone());
    opts.replay_horizon = Duration::from_secs(1);
    let broker = SqliteBroker::open_with(&path, opts).unwrap();
    let mut t = task_at("h", mc_now(&mc), mc_now(&mc));
    t.meta.retention_ms = 3_600_000;
    let id = t.id;
    broker.enqueue(vec![t]).await.unwrap();
    let l = broker.dequeue(&req("h", 1)).await.unwrap().remove(0);
    let res = broker
        .ack(vec![Ack {
            lease: l.lease,
            outcome: Outcome::Complete { result: None },
        }])
        .await
        .unwrap();
    assert_eq!(res, vec![AckResult::Applied]);
    mc.advance_ms(60_000);
    assert_eq!(broker.purge_completed().await.unwrap(), 0, "still retained");

    let raw = Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE tasks SET state = 'pending' WHERE id = ?1",
        [id.as_bytes()],
    )
    .unwrap();
    let again = broker.dequeue(&req("h", 1)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        again[0].replayed,
        "remembered while retained, past the horizon"
    );
}

fn mc_now(mc: &ManualClock) -> i64 {
    use sealq::Clock;
    mc.now_ms()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_instance_wakes_on_enqueue_by_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let producer = open(&path);
    let worker = open(&path);
    let waiter = {
        let worker = worker.clone();
        tokio::spawn(async move {
            worker
                .wait_for_work(&["x".into()], Duration::from_secs(120))
                .await
        })
    };
    // Let the waiter start; the wake-up permit of the worker's own opening
    // (if any) is consumed by then.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let producing = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                producer.enqueue(vec![task("x")]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let woke = tokio::time::timeout(Duration::from_secs(15), waiter).await;
    producing.abort();
    woke.expect("the other instance's waiter did not wake within 15 s")
        .unwrap()
        .unwrap();
    assert!(!worker.dequeue(&req("x", 1)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_instances_never_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let a = open(&path);
    let b = open(&path);
    const PER_PRODUCER: usize = 400;
    let mut handles = Vec::new();
    for (i, broker) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        handles.push(tokio::spawn(async move {
            for _ in 0..PER_PRODUCER / 4 {
                let batch: Vec<NewTask> = (0..4).map(|_| task("c")).collect();
                let res = broker.enqueue(batch).await.expect("enqueue never fails");
                assert!(res.iter().all(|r| *r == EnqueueResult::Enqueued));
            }
            i
        }));
    }
    let mut consumers = Vec::new();
    for broker in [a.clone(), b.clone(), a.clone(), b.clone()] {
        consumers.push(tokio::spawn(async move {
            let mut taken = Vec::new();
            let mut idle = 0;
            while idle < 20 {
                let got = broker
                    .dequeue(&req("c", 8))
                    .await
                    .expect("dequeue never fails");
                if got.is_empty() {
                    idle += 1;
                    broker
                        .wait_for_work(&["c".into()], Duration::from_millis(50))
                        .await
                        .unwrap();
                    continue;
                }
                idle = 0;
                let acks = got
                    .iter()
                    .map(|l| Ack {
                        lease: l.lease,
                        outcome: Outcome::Complete { result: None },
                    })
                    .collect();
                let res = broker.ack(acks).await.expect("ack never fails");
                assert!(res.iter().all(|r| *r == AckResult::Applied));
                taken.extend(got.into_iter().map(|l| l.record.id));
            }
            taken
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut all = std::collections::HashSet::new();
    for c in consumers {
        for id in c.await.unwrap() {
            assert!(all.insert(id), "delivered twice");
        }
    }
    // Whatever the consumers left (they stop after idling) is still pending.
    let stats = a.stats().await.unwrap();
    let s = &stats[0];
    assert_eq!(s.completed as usize, all.len());
    assert_eq!(s.completed + s.pending, (PER_PRODUCER * 4) as u64);
    assert_eq!(s.active, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_file_is_corrupt_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let err = SqliteBroker::open(&path).unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Corrupt);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the error names the path: {err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "file unchanged");

    // A file that starts like SQLite but is damaged behind the header.
    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend_from_slice(&bytes);
    std::fs::write(&path, &fake).unwrap();
    let err = SqliteBroker::open(&path).unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
    assert_eq!(std::fs::read(&path).unwrap(), fake, "file unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
        .unwrap();
    drop(raw);
    let err = SqliteBroker::open(&path).unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Corrupt);
    assert!(err.message.contains("not a sealq store"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    drop(open(&path));
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("PRAGMA user_version = 999").unwrap();
    drop(raw);
    let err = SqliteBroker::open(&path).unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Config);
    assert!(err.message.contains("upgrade sealq"), "{err}");
}

/// The schema version a store file says it has.
fn user_version(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Migration 3 (the keyring's check values) on a version-2 store: its
/// tasks stay, and check values can be recorded and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_store_migrates_to_key_checks_and_keeps_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let t = task("p");
    let id = t.id;
    {
        let b = open(&path);
        b.enqueue(vec![t]).await.unwrap();
    }
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("DROP TABLE key_checks; DROP TABLE live_workers; PRAGMA user_version = 2")
        .unwrap();
    drop(raw);
    let b = open(&path);
    assert!(b.get(id).await.unwrap().is_some(), "the task survived");
    assert_eq!(b.key_checks().await.unwrap(), Some(Vec::new()));
    let check = sealq::model::key_check::KeyCheck {
        key_id: "k-1".into(),
        value: [9; 16],
    };
    assert!(
        b.record_key_checks(std::slice::from_ref(&check))
            .await
            .unwrap()
    );
    assert_eq!(b.key_checks().await.unwrap(), Some(vec![check]));
    assert_eq!(user_version(&path), 7);
}

/// Migration 4 (the registry of live workers, issue 21) on a version-3
/// store: its tasks stay, and workers can be registered and listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workers_a_version_3_store_migrates_and_keeps_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let t = task("p");
    let id = t.id;
    {
        let b = open(&path);
        b.enqueue(vec![t]).await.unwrap();
    }
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("DROP TABLE live_workers; PRAGMA user_version = 3")
        .unwrap();
    drop(raw);
    let b = open(&path);
    assert!(b.get(id).await.unwrap().is_some(), "the task survived");
    assert!(b.list_workers().await.unwrap().is_empty());
    let w = sealq::LiveWorker {
        run_id: "r-1".into(),
        id: "h:1".into(),
        host: "h".into(),
        pid: 1,
        queues: vec!["p".into()],
        concurrency: 2,
        started_at_ms: 5,
        last_heartbeat_ms: 5,
        in_flight: 0,
    };
    b.register_worker(&w, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let listed = b.list_workers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, "r-1");
    assert_eq!(user_version(&path), 7);
}

/// Migration 5 (issue 22, bulk enqueue: `tasks_ready`'s condition as
/// comparisons) on a version-4 store: the index is rebuilt and the tasks
/// waiting in it are dequeued as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_a_version_4_store_migrates_tasks_ready() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let t = task("p");
    let id = t.id;
    {
        let b = open(&path);
        b.enqueue(vec![t]).await.unwrap();
    }
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "DROP INDEX tasks_ready; \
         CREATE INDEX tasks_ready ON tasks (queue, run_at, id) \
             WHERE state IN ('pending', 'scheduled', 'retry'); \
         PRAGMA user_version = 4",
    )
    .unwrap();
    drop(raw);
    let b = open(&path);
    let raw = Connection::open(&path).unwrap();
    let (v, sql): (i64, String) = raw
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), sql \
             FROM sqlite_master WHERE name = 'tasks_ready'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(v, 7);
    assert!(
        sql.contains("state = 'pending' OR state = 'scheduled' OR state = 'retry'"),
        "{sql}"
    );
    let leased = b.dequeue(&req("p", 10)).await.unwrap();
    assert_eq!(leased.iter().map(|l| l.record.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let t = task("p");
    let id = t.id;
    let envelope = t.envelope.clone();
    let done = task("p");
    let done_id = done.id;
    {
        let b = open(&path);
        b.enqueue(vec![done]).await.unwrap();
        let l = b.dequeue(&req("p", 1)).await.unwrap().remove(0);
        b.ack(vec![Ack {
            lease: l.lease,
            outcome: Outcome::Complete {
                result: Some(b"r".to_vec()),
            },
        }])
        .await
        .unwrap();
        b.enqueue(vec![t]).await.unwrap();
        b.pause("paused-q").await.unwrap();
    }
    let b = open(&path);
    let r = b.get(id).await.unwrap().expect("kept");
    assert_eq!(r.state, TaskState::Pending);
    assert_eq!(r.envelope, envelope);
    let d = b.get(done_id).await.unwrap().expect("kept");
    assert_eq!(d.result.as_deref(), Some(&b"r"[..]));
    let stats = b.stats().await.unwrap();
    assert!(stats.iter().any(|s| s.queue == "paused-q" && s.paused));
    let mut again = task("p");
    again.id = done_id;
    assert_eq!(
        b.enqueue(vec![again]).await.unwrap(),
        vec![EnqueueResult::IdExists]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_option_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let full = open(&dir.path().join("full.db"));
    assert_eq!(full.synchronous().await.unwrap(), Synchronous::Full);
    let normal = SqliteBroker::open_with(
        dir.path().join("normal.db"),
        SqliteOptions {
            synchronous: Synchronous::Normal,
            ..SqliteOptions::with_clock(clock())
        },
    )
    .unwrap();
    assert_eq!(normal.synchronous().await.unwrap(), Synchronous::Normal);

    let url = format!(
        "sqlite://{}?synchronous=normal",
        dir.path().join("url.db").display()
    );
    let b = SqliteBroker::open_url(&url).unwrap();
    assert_eq!(b.synchronous().await.unwrap(), Synchronous::Normal);
    assert_eq!(b.describe(), format!("sqlite://{}", b.path().display()));
    let url = format!("sqlite:{}", dir.path().join("url2.db").display());
    let b = SqliteBroker::open_url(&url).unwrap();
    assert_eq!(b.synchronous().await.unwrap(), Synchronous::Full);
    let err = SqliteBroker::open_url("sqlite:x.db?synchronous=off").unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_out_a_lock_held_by_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let b = open(&path);
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    let enq = {
        let b = b.clone();
        tokio::spawn(async move { b.enqueue(vec![task("l")]).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!enq.is_finished(), "must wait for the lock");
    raw.execute_batch("COMMIT").unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), enq)
        .await
        .expect("enqueue finishes once the lock is released")
        .unwrap()
        .expect("no `database is locked` error");
    assert_eq!(res, vec![EnqueueResult::Enqueued]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_bound_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let b = SqliteBroker::open_with(
        &path,
        SqliteOptions {
            busy_timeout: Duration::from_millis(300),
            ..SqliteOptions::with_clock(clock())
        },
    )
    .unwrap();
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = b.enqueue(vec![task("l")]).await.unwrap_err();
    assert_eq!(err.kind, BrokerErrorKind::Unavailable);
    assert!(err.message.contains("locked"), "{err}");
    raw.execute_batch("ROLLBACK").unwrap();
    // Usable again afterwards.
    assert_eq!(
        b.enqueue(vec![task("l")]).await.unwrap(),
        vec![EnqueueResult::Enqueued]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_does_not_poison_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let b = open(&path);
    let raw = Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON tasks WHEN NEW.queue = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .unwrap();
    drop(raw);
    let mut calls = Vec::new();
    for i in 0..64 {
        let b = b.clone();
        calls.push(tokio::spawn(async move {
            let q = if i % 8 == 3 { "boom" } else { "fine" };
            (q, b.enqueue(vec![task("fine"), task(q)]).await)
        }));
    }
    let mut failed = 0;
    for c in calls {
        let (q, res) = c.await.unwrap();
        if q == "boom" {
            res.expect_err("the trigger aborts this call");
            failed += 1;
        } else {
            assert_eq!(res.unwrap(), vec![EnqueueResult::Enqueued; 2]);
        }
    }
    assert_eq!(failed, 8);
    let stats = b.stats().await.unwrap();
    assert_eq!(stats.len(), 1, "nothing of the failed calls was stored");
    assert_eq!(stats[0].pending, 56 * 2);
}

/// Issue 22 (worker memory): a worker's adaptive prefetch on this broker
/// stops at 4 tasks per handler slot, not the worker's default 16: a lease
/// is a local transaction, and each task leased ahead holds its sealed
/// payload in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_memory_the_adaptive_prefetch_ceiling_is_four_per_slot() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir.path().join("q.db"));
    assert_eq!(broker.prefetch_per_slot(), Some(4));
}
