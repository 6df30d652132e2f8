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
