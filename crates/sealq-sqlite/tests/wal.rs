//! The WAL stays bounded under a sustained load of one-task commits: the
//! checkpointer copies frames back off the commit path, and the writer
//! lets the WAL restart once it holds 8000 frames of 4 KiB (2000 when a lone
//! caller commits small transactions; see the `checkpoint` module), the same
//! bytes in fewer, larger frames for larger pages (a new store has 8 KiB
//! pages). Without the restart every commit would append to the WAL for as
//! long as the load lasts.

use std::sync::Arc;

use sealq::broker::{Broker, EnqueueResult};
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, SystemClock};
use sealq_sqlite::{SqliteBroker, SqliteOptions, Synchronous};

/// A broker on `path` with `synchronous = NORMAL`: the same checkpoints and
/// WAL handling, without an fsync per commit (test speed).
fn open_normal(path: &std::path::Path) -> SqliteBroker {
    SqliteBroker::open_with(
        path,
        SqliteOptions {
            synchronous: Synchronous::Normal,
            clock: Arc::new(SystemClock),
            ..SqliteOptions::default()
        },
    )
    .unwrap()
}

/// Frames of 4 KiB the writer lets the WAL reach before it checkpoints
/// itself (fewer, larger frames for larger pages, the same bytes).
const RESTART_PAGES: u64 = 8000;

/// The page size of the database at `path`.
fn page_size(path: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    page.unsigned_abs()
}

/// A store at `path` whose database has pages of `page` bytes, as a
/// release before session 8 made every store (SQLite's default 4 KiB).
fn create_with_page_size(path: &std::path::Path, page: u32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA page_size = {page}"))
        .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_restarts_under_a_sustained_load() {
    wal_stays_bounded(2, 18_000, RESTART_PAGES).await;
}

/// A lone producer commits its own transactions (the writer thread is
/// idle), so the restart checkpoint is asked of the writer thread by the
/// producer: without that request the WAL would grow without bound. (Its
/// small commits ask for the restart at 2000 frames, not 8000; the bound
/// here stays at 8000's: on a loaded machine a restart waits for the
/// checkpointer's round, and fast NORMAL commits overshoot 2000 by
/// thousands of frames meanwhile. `checkpoint::tests` checks the policy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_enqueue_a_lone_producer_keeps_the_wal_bounded() {
    wal_stays_bounded(1, 36_000, RESTART_PAGES).await;
}

/// `producers` loops of `each` one-task calls: about 3 frames per commit,
/// so about 108,000 frames in all, 13 times RESTART_PAGES (`restart`, in
/// frames of 4 KiB; scaled to the store's page size). A WAL that
/// never restarts ends that large; one that restarts stays near
/// `restart` frames. The bound allows the checkpointer to lag behind the
/// producers on a loaded machine (up to twice `restart` more) without
/// letting a WAL that never restarts pass.
async fn wal_stays_bounded(producers: usize, each: usize, restart: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let broker = open_normal(&path);
    let wal = dir.path().join("wal.db-wal");
    let page_size = page_size(&path);
    let restart = restart * 4096 / page_size; // in frames of this page size
    let page = page_size + 24; // a WAL frame: page plus frame header
    let mut largest = 0;
    let loops: Vec<_> = (0..producers)
        .map(|_| {
            let b = broker.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    let now = SystemClock.now_ms();
                    let mut t = task_at("wal", now, now);
                    t.envelope.resize(1024, 7);
                    assert_eq!(b.enqueue(vec![t]).await.unwrap(), [EnqueueResult::Enqueued]);
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    let frames = largest / page;
    assert!(
        frames <= 3 * restart,
        "the WAL reached {frames} frames: it did not restart at {restart}"
    );
    assert_eq!(
        broker.stats().await.unwrap()[0].pending,
        (producers * each) as u64
    );
}

/// Issue 22 (8 producers): once the WAL holds 256 frames (of 4 KiB; 128 of
/// a new store's 8 KiB) in a process, the writer grows the WAL file with
/// zeros to a full pass of frames (9,000 frames of 4 KiB pages, the same
/// bytes of pages in 4,500 frames of 8 KiB), so later commits overwrite in
/// place instead of growing the file (`wal_size` module). A handful of
/// commits never grows it. A crash image taken after the growth (the
/// database and WAL files copied while the broker runs) opens whole: every
/// task stored, the zeros past the last frame ignored, `integrity_check` ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_producers_the_wal_file_is_grown_once_busy_and_a_crash_image_opens_whole() {
    grown_once_busy(None).await;
}

/// Issue 22 (bulk enqueue): a store made before new stores got 8 KiB pages
/// keeps its 4 KiB pages, and its WAL thresholds stay in its own frames:
/// it is grown to 9,000 frames of 4 KiB, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_a_4_kib_store_keeps_its_pages_and_its_wal_working_size() {
    grown_once_busy(Some(4096)).await;
}

/// The growth test on a new store (`page: None`) or on one made with pages
/// of `page` bytes.
async fn grown_once_busy(page: Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grow.db");
    let wal = dir.path().join("grow.db-wal");
    if let Some(page) = page {
        create_with_page_size(&path, page);
    }
    let broker = open_normal(&path);
    let page_bytes = page_size(&path);
    assert_eq!(page_bytes, page.map_or(8192, u64::from));
    let frames = 9000 * 4096 / page_bytes;
    let working = 32 + frames * (page_bytes + 24);
    let one = || {
        let now = SystemClock.now_ms();
        let mut t = task_at("grow", now, now);
        t.envelope.resize(1024, 7);
        t
    };
    for _ in 0..5 {
        broker.enqueue(vec![one()]).await.unwrap();
    }
    let small = std::fs::metadata(&wal).unwrap().len();
    assert!(
        small < 1 << 20,
        "a few commits do not grow the WAL: {small}"
    );

    let mut stored = 5u64;
    while std::fs::metadata(&wal).unwrap().len() < working && stored < 5_000 {
        let r = broker
            .enqueue((0..20).map(|_| one()).collect())
            .await
            .unwrap();
        assert!(r.iter().all(|r| *r == EnqueueResult::Enqueued));
        stored += 20;
    }
    let grown = std::fs::metadata(&wal).unwrap().len();
    // Its frames alone would reach that size after about 3,000 tasks (three
    // frames per one-task commit); grown ahead, it does after about 100.
    assert!(
        grown >= working && stored < 1_000,
        "the WAL file was not grown ahead: {grown} bytes after {stored} tasks"
    );
    assert!(
        grown < working + (1 << 20),
        "grown to its working size, not past it: {grown} bytes against {working}"
    );

    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&path, copy.path().join("grow.db")).unwrap();
    std::fs::copy(&wal, copy.path().join("grow.db-wal")).unwrap();
    drop(broker);
    let conn = rusqlite::Connection::open(copy.path().join("grow.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let reopened = SqliteBroker::open(copy.path().join("grow.db")).unwrap();
    assert_eq!(reopened.stats().await.unwrap()[0].pending, stored);
    drop(reopened);
    assert_eq!(page_size(&copy.path().join("grow.db")), page_bytes, "kept");
}

/// Issue 22 (bulk enqueue), session 10: a bulk enqueue's batches (large
/// commits) leave the WAL file at the size of its frames: it is not zeroed
/// ahead to its working size in the middle of the bulk enqueue. One-task
/// commits after them grow it once they run in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_large_commits_do_not_grow_the_wal_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bulk.db");
    let wal = dir.path().join("bulk.db-wal");
    let broker = open_normal(&path);
    let page_bytes = page_size(&path);
    let working = 32 + (9000 * 4096 / page_bytes) * (page_bytes + 24);
    let one = || {
        let now = SystemClock.now_ms();
        let mut t = task_at("bulk", now, now);
        t.envelope.resize(1024, 7);
        t
    };
    for _ in 0..3 {
        let r = broker
            .enqueue_bulk_batch((0..1000).map(|_| one()).collect())
            .await
            .unwrap();
        assert!(r.iter().all(|r| *r == EnqueueResult::Enqueued));
    }
    let after_bulk = std::fs::metadata(&wal).unwrap().len();
    let frames = (after_bulk - 32) / (page_bytes + 24);
    // 3,000 tasks of 1 KiB take about 4.5 MiB of pages: past the 1 MiB
    // (256 frames of 4 KiB) after which small commits grow the file.
    assert!(
        frames * page_bytes > 2 << 20,
        "the bulk enqueue wrote {frames} frames"
    );
    assert!(
        after_bulk < working / 2,
        "grown during the bulk enqueue: {after_bulk} bytes against {working}"
    );

    let mut calls = 0u64;
    while std::fs::metadata(&wal).unwrap().len() < working && calls < 200 {
        broker.enqueue(vec![one()]).await.unwrap();
        calls += 1;
    }
    assert!(
        (16..100).contains(&calls),
        "one-task commits grow the WAL file after 16 in a row: {calls} calls"
    );
    assert_eq!(broker.stats().await.unwrap()[0].pending, 3000 + calls);
}

/// Issue 22 (bulk enqueue), session 10: a long bulk enqueue on a new WAL
/// (large commits, no checkpoint asked before the restart size) still
/// restarts it: the WAL file stays near its working size, far below the
/// bytes of frames written, and every task is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_a_long_bulk_enqueue_restarts_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.db");
    let wal = dir.path().join("long.db-wal");
    let broker = open_normal(&path);
    let page_bytes = page_size(&path);
    let working = 32 + (9000 * 4096 / page_bytes) * (page_bytes + 24);
    let one = || {
        let now = SystemClock.now_ms();
        let mut t = task_at("long", now, now);
        t.envelope.resize(1024, 7);
        t
    };
    let mut largest = 0;
    for _ in 0..36 {
        let r = broker
            .enqueue_bulk_batch((0..1000).map(|_| one()).collect())
            .await
            .unwrap();
        assert!(r.iter().all(|r| *r == EnqueueResult::Enqueued));
        largest = largest.max(std::fs::metadata(&wal).unwrap().len());
    }
    // 36,000 tasks of 1 KiB write about 55 MiB of frames.
    assert!(
        largest < working + (8 << 20),
        "the WAL reached {largest} bytes (working size {working}): it did not restart"
    );
    assert_eq!(broker.stats().await.unwrap()[0].pending, 36_000);
}
