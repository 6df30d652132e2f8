//! The shared client and worker scenarios ([`sealq::testkit::scenarios`])
//! on a fresh SQLite file per scenario: the broker, a second broker on the
//! same file (another process), and the audit log in the same file.

use std::sync::Arc;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_sqlite::{SqliteAuditSink, SqliteBroker, SqliteOptions};

sealq::scenario_tests!(async |clock: SharedClock| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue.db");
    let open = |clock: SharedClock| {
        SqliteBroker::open_with(&path, SqliteOptions::with_clock(clock)).expect("open")
    };
    let broker = open(clock.clone());
    let peer = open(clock);
    let sink = Arc::new(SqliteAuditSink::open(&path).expect("audit sink"));
    Harness::new(broker)
        .with_peer(peer)
        .with_audit_sink(sink)
        .with_guard(dir)
});
