//! The shared client and worker scenarios ([`sealq::testkit::scenarios`])
//! on a fresh database per scenario: the broker and a second broker on
//! the same database (another process). The audit scenarios use the
//! Postgres audit sink in that database.

mod support;

use std::sync::Arc;

use sealq::clock::SharedClock;
use sealq::testkit::Harness;
use sealq_postgres::{PostgresAuditSink, PostgresBroker, PostgresOptions};

// Every scenario, the erasure ones included (the broker's subject key
// store is `PostgresSubjectKeyStore`), audited to `PostgresAuditSink`.
sealq::scenario_tests!(async |clock: SharedClock| {
    let url = support::fresh_db().await;
    let broker = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock.clone()))
        .await
        .expect("connect");
    let peer = PostgresBroker::connect_with(&url, PostgresOptions::with_clock(clock))
        .await
        .expect("connect the peer");
    let sink = Arc::new(PostgresAuditSink::from_broker(&broker));
    Harness::new(broker).with_peer(peer).with_audit_sink(sink)
});
