//! The sealq broker conformance suite, run on a fresh temp file per case,
//! and the blob store cases on a `SqliteBlobStore` in that file.

use std::sync::Arc;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_sqlite::{SqliteBlobStore, SqliteBroker, SqliteOptions};

sealq::conformance_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = SqliteBroker::open_with(
        dir.path().join("queue.db"),
        SqliteOptions::with_clock(clock),
    )
    .expect("open");
    Harness::new(broker).with_guard(dir)
});

sealq::live_worker_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = SqliteBroker::open_with(
        dir.path().join("queue.db"),
        SqliteOptions::with_clock(clock),
    )
    .expect("open");
    Harness::new(broker).with_guard(dir)
});

sealq::blob_store_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let broker = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock)).expect("open");
    let blobs = SqliteBlobStore::open(&path).expect("blob store");
    Harness::new(broker)
        .with_blob_store(Arc::new(blobs))
        .with_guard(dir)
});

// Finding 4: one task row that does not decode (here a REAL where the
// attempts count belongs, written by another connection as an edited file
// would hold it) must not stop a worker.
sealq::damage_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let broker = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock)).expect("open");
    Harness::new(broker)
        .with_damage(move |id, _queue| {
            let path = path.clone();
            Box::pin(async move {
                let conn = rusqlite::Connection::open(&path).expect("second connection");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                let n = conn
                    .execute(
                        "UPDATE tasks SET attempts = 1.5 WHERE id = ?1",
                        [id.as_bytes()],
                    )
                    .expect("damage");
                assert_eq!(n, 1);
            })
        })
        .with_guard(dir)
});

// Finding 2: a task whose id completed or was deleted never runs again,
// even after its row is edited back to pending or put back from a copy
// (made by another connection, as someone with write access to the file
// could).
sealq::replay_tests!(async |clock: SharedClock| {
    use sealq::testkit::cases::replay::Tamper;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let broker = SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock)).expect("open");
    Harness::new(broker)
        .with_tamper(move |op, id, _queue| {
            let path = path.clone();
            Box::pin(async move {
                let conn = rusqlite::Connection::open(&path).expect("second connection");
                conn.busy_timeout(std::time::Duration::from_secs(10))
                    .unwrap();
                let id = id.as_bytes();
                let sql: &[&str] = match op {
                    Tamper::FlipToPending => {
                        &["UPDATE tasks SET state = 'pending', run_at = 0 WHERE id = ?1"]
                    }
                    Tamper::Save => &[
                        "CREATE TABLE IF NOT EXISTS saved_tasks AS SELECT * FROM tasks WHERE 0",
                        "CREATE TABLE IF NOT EXISTS saved_bodies AS SELECT * FROM task_bodies WHERE 0",
                        "INSERT INTO saved_tasks SELECT * FROM tasks WHERE id = ?1",
                        "INSERT INTO saved_bodies SELECT * FROM task_bodies \
                         WHERE seq = (SELECT seq FROM tasks WHERE id = ?1)",
                    ],
                    Tamper::Restore => &[
                        "INSERT INTO tasks SELECT * FROM saved_tasks WHERE id = ?1",
                        "INSERT INTO task_bodies SELECT * FROM saved_bodies \
                         WHERE seq = (SELECT seq FROM saved_tasks WHERE id = ?1)",
                    ],
                    _ => unreachable!("no other edit exists yet"),
                };
                for s in sql {
                    let n = if s.contains("?1") {
                        conn.execute(s, [id])
                    } else {
                        conn.execute(s, [])
                    }
                    .expect("tamper");
                    assert!(n == 1 || s.starts_with("CREATE"), "{s}: {n} rows");
                }
            })
        })
        .with_guard(dir)
});
