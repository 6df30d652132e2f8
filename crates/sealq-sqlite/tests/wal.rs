//! The WAL stays bounded under a sustained load of one-task commits: the
//! checkpointer copies frames back off the commit path, and the writer
//! lets the WAL restart once it holds 8000 frames (2000 when a lone caller
//! commits small transactions; see the `checkpoint` module). Without the restart every commit would append to the WAL for as
//! long as the load lasts.

use std::sync::Arc;

use sealq::broker::{Broker, EnqueueResult};
use sealq::testkit::fixtures::task_at;
use sealq::{Clock, SystemClock};
use sealq_sqlite::{SqliteBroker, SqliteOptions, Synchronous};

/// Frames the writer lets the WAL reach before it checkpoints itself.
const RESTART_PAGES: u64 = 8000;

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
/// so about 108,000 frames in all, 13 times RESTART_PAGES. A WAL that
/// never restarts ends that large; one that restarts stays near
/// `restart` frames. The bound allows the checkpointer to lag behind the
/// producers on a loaded machine (up to twice `restart` more) without
/// letting a WAL that never restarts pass.
async fn wal_stays_bounded(producers: usize, each: usize, restart: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    // NORMAL: the same checkpoints, without an fsync per commit (test speed).
    let broker = SqliteBroker::open_with(
        &path,
        SqliteOptions {
            synchronous: Synchronous::Normal,
            clock: Arc::new(SystemClock),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let wal = dir.path().join("wal.db-wal");
    let page = 4096 + 24; // a WAL frame: page plus frame header
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
