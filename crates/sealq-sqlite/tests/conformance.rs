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
