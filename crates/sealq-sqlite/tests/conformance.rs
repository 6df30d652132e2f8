//! The sealq broker conformance suite, run on a fresh temp file per case.

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_sqlite::{SqliteBroker, SqliteOptions};

sealq::conformance_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = SqliteBroker::open_with(
        dir.path().join("queue.db"),
        SqliteOptions::with_clock(clock),
    )
    .expect("open");
    Harness::new(broker).with_guard(dir)
});
