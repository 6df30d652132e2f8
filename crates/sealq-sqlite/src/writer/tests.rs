//! The leading caller and the writer thread, on a bare table.

use super::*;

/// A writer on a fresh file, with a table `t (n)` to write to.
fn writer(dir: &tempfile::TempDir) -> Writer {
    let path = dir.path().join("w.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (n INTEGER)")
        .unwrap();
    Writer::start(conn, WriterEnv::for_tests(path)).unwrap()
}

/// Insert a row; return the name of the thread that ran the insert.
async fn insert_where(w: &Writer) -> String {
    w.call_leading(|ctx| {
        ctx.conn
            .execute("INSERT INTO t (n) VALUES (1)", [])
            .map_err(|e| BrokerError::new(BrokerErrorKind::Other, e.to_string()))?;
        Ok(std::thread::current().name().unwrap_or("").to_owned())
    })
    .await
    .unwrap()
}

async fn rows(w: &Writer) -> i64 {
    w.call(|ctx| {
        ctx.conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .map_err(|e| BrokerError::new(BrokerErrorKind::Other, e.to_string()))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_enqueue_a_lone_caller_commits_on_its_own_thread() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(&dir);
    for _ in 0..20 {
        assert_ne!(insert_where(&w).await, "sealq-sqlite-writer");
    }
    assert_eq!(rows(&w).await, 20);
}

#[tokio::test(flavor = "current_thread")]
async fn one_call_enqueue_on_a_current_thread_runtime_queues_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(&dir);
    assert_eq!(insert_where(&w).await, "sealq-sqlite-writer");
    assert_eq!(rows(&w).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_enqueue_concurrent_callers_share_the_writer_threads_commits() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(writer(&dir));
    // Queue work for the writer thread while the connection is held, as
    // a leading caller's commit would: the next group then holds
    // several operations, and callers stop leading.
    let held = w.shared.lock();
    let queued: Vec<_> = (0..4)
        .map(|_| {
            let w = Arc::clone(&w);
            tokio::spawn(async move { insert_where(&w).await })
        })
        .collect();
    while w.shared.queued.load(Ordering::SeqCst) < 4 {
        // The spawned callers run on the runtime's workers, not here.
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(held);
    for q in queued {
        assert_eq!(q.await.unwrap(), "sealq-sqlite-writer");
    }
    assert_eq!(w.shared.last_group.load(Ordering::Relaxed), 4);
    assert_eq!(
        insert_where(&w).await,
        "sealq-sqlite-writer",
        "after a group of several, a caller queues"
    );
    // That group held one operation: callers lead again.
    assert_ne!(insert_where(&w).await, "sealq-sqlite-writer");
    assert_eq!(rows(&w).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_enqueue_a_failing_leading_call_rolls_back_and_the_next_commits() {
    let dir = tempfile::tempdir().unwrap();
    let w = writer(&dir);
    let failed: BrokerResult<()> = w
        .call_leading(|ctx| {
            ctx.conn
                .execute("INSERT INTO t (n) VALUES (2)", [])
                .map_err(|e| BrokerError::new(BrokerErrorKind::Other, e.to_string()))?;
            Err(BrokerError::new(BrokerErrorKind::Other, "op failed"))
        })
        .await;
    assert_eq!(failed.unwrap_err().message, "op failed");
    insert_where(&w).await;
    assert_eq!(rows(&w).await, 1, "the failed call's row was rolled back");
}

/// Issue 22 (bulk enqueue), session 10: the operations of one group see
/// the tasks enqueued before them in the same transaction (an enqueue
/// sizes the page cache for them all: bulk batches of concurrent callers
/// share commits); the next transaction starts from none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_batches_of_one_group_count_their_tasks_together() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(writer(&dir));
    let add = |n: usize| {
        let w = Arc::clone(&w);
        tokio::spawn(async move {
            w.call(move |ctx| {
                ctx.txn_tasks += n;
                Ok(ctx.txn_tasks)
            })
            .await
            .unwrap()
        })
    };
    // Held as a leading caller's commit would: both calls join one group.
    let held = w.shared.lock();
    let first = add(10);
    while w.shared.queued.load(Ordering::SeqCst) < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let second = add(5);
    while w.shared.queued.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(held);
    assert_eq!(first.await.unwrap(), 10);
    assert_eq!(second.await.unwrap(), 15);
    assert_eq!(w.shared.last_group.load(Ordering::Relaxed), 2);
    assert_eq!(w.call(|ctx| Ok(ctx.txn_tasks)).await.unwrap(), 0);
}
