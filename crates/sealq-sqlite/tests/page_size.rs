//! Issue 22 (bulk enqueue): a new store gets 8 KiB pages (half the WAL
//! frames, so half the system calls, per task of a bulk enqueue), or the
//! page size its options or URL name (`page_size`); a store made before
//! keeps its 4 KiB pages and works as before: tasks stored in bulk and one
//! at a time, leased, acked, listed, reopened, on real files.

use std::time::Duration;

use rusqlite::Connection;
use sealq::broker::{Ack, AckResult, Broker, DequeueRequest, EnqueueResult, Outcome};
use sealq::clock::ManualClock;
use sealq::testkit::fixtures::task_at;
use sealq::{BrokerErrorKind, Clock};
use sealq_sqlite::{SqliteBroker, SqliteOptions};

fn page_size(path: &std::path::Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

fn integrity(path: &std::path::Path) -> String {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Enqueue 2,500 tasks of 1 KiB in bulk (chunks of 500) and 5 one at a
/// time, lease and complete 300 of them; returns the pending and completed
/// counts.
async fn exercise(b: &SqliteBroker, clock: &ManualClock) -> (u64, u64) {
    let now = clock.now_ms();
    let task = || {
        let mut t = task_at("q", now, now);
        t.envelope.resize(1024, 7);
        t
    };
    for _ in 0..5 {
        let batch: Vec<_> = (0..500).map(|_| task()).collect();
        let r = b.enqueue(batch).await.unwrap();
        assert!(r.iter().all(|r| *r == EnqueueResult::Enqueued));
    }
    for _ in 0..5 {
        assert_eq!(
            b.enqueue(vec![task()]).await.unwrap(),
            [EnqueueResult::Enqueued]
        );
    }
    let leased = b
        .dequeue(&DequeueRequest {
            queues: vec!["q".into()],
            max: 300,
            lease: Duration::from_secs(300),
            worker: "t".into(),
        })
        .await
        .unwrap();
    assert_eq!(leased.len(), 300);
    assert!(leased.iter().all(|l| l.record.envelope.len() == 1024));
    let acks = leased
        .into_iter()
        .map(|l| Ack {
            lease: l.lease,
            outcome: Outcome::Complete { result: None },
        })
        .collect();
    let acked = b.ack(acks).await.unwrap();
    assert!(acked.iter().all(|a| *a == AckResult::Applied));
    let stats = b.stats().await.unwrap();
    (stats[0].pending, stats[0].completed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_a_new_store_gets_8_kib_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let b = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock.clone())).unwrap();
    assert_eq!(page_size(&path), 8192);
    assert_eq!(exercise(&b, &clock).await, (2_205, 300));
    drop(b);
    assert_eq!(integrity(&path), "ok");
    let b = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock.clone())).unwrap();
    assert_eq!(b.stats().await.unwrap()[0].pending, 2_205);
    assert_eq!(page_size(&path), 8192);
}

/// A store made with SQLite's default 4 KiB pages (every store before
/// session 8) is opened, migrated and written as before and keeps its
/// pages: the page size is set only on a new, empty file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_an_existing_4_kib_store_keeps_its_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; VACUUM;")
            .unwrap();
    }
    assert_eq!(page_size(&path), 4096);
    let clock = ManualClock::new(1_700_000_000_000);
    let b = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock.clone())).unwrap();
    assert_eq!(exercise(&b, &clock).await, (2_205, 300));
    drop(b);
    assert_eq!(page_size(&path), 4096, "an existing store keeps its pages");
    assert_eq!(integrity(&path), "ok");
    let b = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock.clone())).unwrap();
    assert_eq!(b.stats().await.unwrap()[0].pending, 2_205);
    assert_eq!(exercise(&b, &clock).await, (4_410, 600));
    drop(b);
    assert_eq!(page_size(&path), 4096);
}

/// A new store made with `page_size = 4096` (for one-call enqueues: a
/// one-task commit then writes 4 KiB frames) has 4 KiB pages and works;
/// reopening it with the default options keeps them. The URL names it the
/// same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_the_page_size_of_a_new_store_is_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.db");
    let clock = ManualClock::new(1_700_000_000_000);
    let opts = SqliteOptions {
        page_size: 4096,
        ..SqliteOptions::with_clock(clock.clone())
    };
    let b = SqliteBroker::open_with(&path, opts).unwrap();
    assert_eq!(page_size(&path), 4096);
    assert_eq!(exercise(&b, &clock).await, (2_205, 300));
    drop(b);
    let b = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock.clone())).unwrap();
    assert_eq!(exercise(&b, &clock).await, (4_410, 600));
    drop(b);
    assert_eq!(page_size(&path), 4096, "kept under the default options");
    assert_eq!(integrity(&path), "ok");

    let url = format!(
        "sqlite://{}?page_size=16384",
        dir.path().join("url.db").display()
    );
    let b = SqliteBroker::open_url(&url).unwrap();
    drop(b);
    assert_eq!(page_size(&dir.path().join("url.db")), 16384);
}

/// A page size SQLite would not take is refused with a message naming it,
/// and no database is created with another size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_an_invalid_page_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    let opts = SqliteOptions {
        page_size: 5000,
        ..SqliteOptions::default()
    };
    let e = SqliteBroker::open_with(&path, opts).unwrap_err();
    assert_eq!(e.kind, BrokerErrorKind::Config);
    assert!(e.message.contains("page size 5000"), "{}", e.message);
    let url = format!("sqlite://{}?page_size=1000", path.display());
    let e = SqliteBroker::open_url(&url).unwrap_err();
    assert_eq!(e.kind, BrokerErrorKind::Config);
    assert!(e.message.contains("page_size=1000"), "{}", e.message);
    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
    assert_eq!(len, 0, "nothing written to the file");
}
